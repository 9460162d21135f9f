//! Sending a finished turn's spans to an OTLP collector. The exporter is an outbox
//! subscriber of the gateway's own ([`Exporter::subscriber`]): it is handed each
//! `turn.finished` and `turn.failed` row after the turn committed, reads the turn's record and
//! sends its spans, so spans survive a crash (the cursor is durable), are retried with the
//! outbox's back-off while the collector is down, and are dead-lettered after the configured
//! attempts. On a cluster, whichever node delivers the outbox exports every node's turns.
//!
//! Two transports, as the OTLP specification names them: `http/protobuf` (a POST to
//! `{endpoint}/v1/traces`) and `grpc` (the `TraceService/Export` unary call, HTTP/2, over
//! cleartext `http://` or TLS `https://`). Both retry what the specification says is
//! retryable (HTTP 429, 502, 503, 504; gRPC `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and the like)
//! and give up on the rest at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use clade_core::{EventKind, TenantId, TurnId};
use clade_runtime::outbox::{Refused, Signing, Sink, Subscriber};
use clade_store::{OutboxRow, Store};
use futures::future::BoxFuture;
use prost::Message;

use crate::spans::{Content, Owner, trace_of};
use crate::wire::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, InstrumentationScope, Resource,
    ResourceSpans, ScopeSpans, Span,
};

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`: protobuf bodies POSTed to `{endpoint}/v1/traces`.
    Http,
    /// `grpc`: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
    Grpc,
}

/// What the exporter is told by the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// The collector: `http://127.0.0.1:4318` (http) or `http://127.0.0.1:4317` (grpc).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every export (a vendor's API key, say), values already read.
    pub headers: Vec<(String, String)>,
    pub content: Content,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The resource's `service.instance.id`: this node's name.
    pub instance: String,
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// A configuration the exporter cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{endpoint:?} is not an http:// or https:// URL")]
    Endpoint { endpoint: String },
    #[error("{name:?} is not a header name: {source}")]
    HeaderName {
        name: String,
        #[source]
        source: reqwest::header::InvalidHeaderName,
    },
    #[error("header {name:?} cannot be sent: its value holds characters a header cannot")]
    HeaderValue { name: String },
    #[error("the HTTP client cannot be built: {0}")]
    Client(#[from] reqwest::Error),
}

/// The subscriber's name, which is also its delivery cursor's.
pub const SUBSCRIBER: &str = "otlp";

/// The OTLP exporter.
pub struct Exporter {
    store: Store,
    options: Options,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    client: reqwest::Client,
    resource: Resource,
    /// Names of tenants and agents by id, read once each.
    names: Mutex<HashMap<(TenantId, clade_core::AgentId), Owner>>,
}

/// The most tenant/agent names remembered before the memory starts afresh.
const REMEMBERED: usize = 10_000;

impl Exporter {
    pub fn new(store: Store, options: Options) -> Result<Self, Error> {
        let bad = || Error::Endpoint { endpoint: options.endpoint.clone() };
        let base = reqwest::Url::parse(&options.endpoint).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad());
        }
        let path = match options.protocol {
            Protocol::Http => "v1/traces",
            Protocol::Grpc => "opentelemetry.proto.collector.trace.v1.TraceService/Export",
        };
        let url = if base.path().trim_end_matches('/').ends_with(path) {
            base
        } else {
            let mut joined = base.clone();
            joined.set_path(&format!("{}/{path}", base.path().trim_end_matches('/')));
            joined
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &options.headers {
            let key = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|source| Error::HeaderName { name: name.clone(), source })?;
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| Error::HeaderValue { name: name.clone() })?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        let mut client = reqwest::Client::builder().timeout(options.timeout);
        // gRPC is HTTP/2; over cleartext there is no TLS handshake to agree on it.
        if options.protocol == Protocol::Grpc && url.scheme() == "http" {
            client = client.http2_prior_knowledge();
        }
        let resource = crate::resource(&options.service_name, &options.instance);
        Ok(Self {
            store,
            url,
            headers,
            client: client.build()?,
            resource,
            options,
            names: Mutex::default(),
        })
    }

    /// The outbox subscriber that feeds this exporter every tenant's finished turns.
    pub fn subscriber(self) -> Subscriber {
        Subscriber {
            name: SUBSCRIBER.into(),
            url: self.url.to_string(),
            events: vec![
                EventKind::TurnFinished.as_str().to_owned(),
                EventKind::TurnFailed.as_str().to_owned(),
            ],
            agents: vec!["*".into()],
            max_attempts: self.options.max_attempts,
            timeout: self.options.timeout,
            signing: Signing::Sink(Arc::new(self)),
        }
    }

    /// The spans of one turn, in a request of their own.
    pub fn request(&self, spans: Vec<Span>) -> ExportTraceServiceRequest {
        request(self.resource.clone(), spans)
    }

    async fn export(&self, row: &OutboxRow) -> Result<(), Refused> {
        let (Some(session), Some(turn)) = (row.session_id, row.turn_id) else { return Ok(()) };
        let record = match self.store.sessions(row.tenant_id).turn_record(session, turn).await {
            Ok(record) => record,
            // Swept by retention, or its tenant deleted: nothing left to trace.
            Err(clade_store::Error::TurnNotFound(_) | clade_store::Error::SessionNotFound(_)) => {
                return Ok(());
            }
            Err(err) => return Err(Refused::transient(format!("the turn cannot be read: {err}"))),
        };
        let Some(owner) = self.owner(row.tenant_id, record.turn.agent_id).await? else {
            return Ok(());
        };
        let spans =
            trace_of(&self.store, &record, &owner, self.options.content).await.map_err(|err| {
                Refused::transient(format!("the turn's causes cannot be read: {err}"))
            })?;
        let body = self.request(spans).encode_to_vec();
        match self.options.protocol {
            Protocol::Http => self.post_http(body, turn).await,
            Protocol::Grpc => self.post_grpc(body, turn).await,
        }
    }

    async fn owner(
        &self,
        tenant: TenantId,
        agent: clade_core::AgentId,
    ) -> Result<Option<Owner>, Refused> {
        if let Some(known) = self.lock().get(&(tenant, agent)) {
            return Ok(Some(known.clone()));
        }
        let unreadable = |err: clade_store::Error| Refused::transient(format!("{err}"));
        let tenant_name = match self.store.tenants().by_id(tenant).await {
            Ok(found) => found.name.as_str().to_owned(),
            Err(clade_store::Error::TenantNotFound(_)) => return Ok(None),
            Err(err) => return Err(unreadable(err)),
        };
        let handle = match self.store.agents(tenant).by_id(agent).await {
            Ok(found) => found.handle.as_str().to_owned(),
            // A deleted agent's turns are still traced, by id.
            Err(clade_store::Error::AgentNotFound(_)) => agent.to_string(),
            Err(err) => return Err(unreadable(err)),
        };
        let owner = Owner { tenant: tenant_name, agent: handle };
        let mut names = self.lock();
        if names.len() >= REMEMBERED {
            names.clear();
        }
        names.insert((tenant, agent), owner.clone());
        Ok(Some(owner))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, clade_core::AgentId), Owner>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn post_http(&self, body: Vec<u8>, turn: TurnId) -> Result<(), Refused> {
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|err| Refused::transient(format!("the collector cannot be reached: {err}")))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let answer = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            partial(&answer, turn);
            return Ok(());
        }
        let reason = format!("the collector answered HTTP {}", status.as_u16());
        Err(match status.as_u16() {
            429 | 502 | 503 | 504 => Refused { retry_after, ..Refused::transient(reason) },
            _ => Refused::permanent(reason),
        })
    }

    async fn post_grpc(&self, message: Vec<u8>, turn: TurnId) -> Result<(), Refused> {
        // A gRPC message: not compressed (0), its length (4 bytes, big-endian), the message.
        let mut body = BytesMut::with_capacity(message.len() + 5);
        body.put_u8(0);
        body.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        body.put_slice(&message);
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/grpc")
            .header(reqwest::header::TE, "trailers")
            .body(body.freeze())
            .send()
            .await
            .map_err(|err| Refused::transient(format!("the collector cannot be reached: {err}")))?;
        let status = response.status();
        let response = http::Response::from(response);
        let (parts, body) = response.into_parts();
        let collected = http_body_util::BodyExt::collect(body).await.map_err(|err| {
            Refused::transient(format!("the collector's answer broke off: {err}"))
        })?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let answer = collected.to_bytes();
        if !status.is_success() {
            return Err(Refused::transient(format!(
                "the collector answered HTTP {} to a gRPC call",
                status.as_u16()
            )));
        }
        // A failing call may answer with headers only ("trailers-only").
        let code = trailers
            .get("grpc-status")
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        match code {
            Some(0) => {
                partial(answer.get(5..).unwrap_or_default(), turn);
                Ok(())
            }
            Some(code) => {
                let message = trailers
                    .get("grpc-message")
                    .or_else(|| parts.headers.get("grpc-message"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let reason = format!("the collector answered gRPC status {code} {message}");
                // The codes the OTLP specification says to retry.
                Err(if matches!(code, 1 | 4 | 8 | 10 | 11 | 14 | 15) {
                    Refused::transient(reason)
                } else {
                    Refused::permanent(reason)
                })
            }
            None => Err(Refused::transient("the collector's answer carried no gRPC status")),
        }
    }
}

impl Sink for Exporter {
    fn deliver<'a>(&'a self, row: &'a OutboxRow) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(async move {
            if !matches!(row.kind, EventKind::TurnFinished | EventKind::TurnFailed) {
                return Ok(());
            }
            self.export(row).await
        })
    }
}

/// One request: `spans` of one resource, under Clade's instrumentation scope.
pub fn request(resource: Resource, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "clade".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Says so when the collector kept only part of the spans (the rest cannot be sent again).
fn partial(answer: &[u8], turn: TurnId) {
    let Ok(response) = ExportTraceServiceResponse::decode(Bytes::copy_from_slice(answer)) else {
        return;
    };
    if let Some(partial) = response.partial_success.filter(|p| p.rejected_spans > 0) {
        tracing::warn!(
            turn = %turn,
            rejected = partial.rejected_spans,
            reason = %partial.error_message,
            "the trace collector rejected some of a turn's spans"
        );
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}
