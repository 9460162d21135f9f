//! The AgentHub over gRPC (`proto/clade/hub/v1/hub.proto`): `Spawn`, `SendMessage` and
//! `Trace` on a port of their own, with TLS when configured. Each call is the code of the HTTP
//! route it stands for (`agents::create_agent`, `runs::start_fork`, `events::envelope_of`,
//! `agents::trace`), checked against that route's scopes, so the two transports cannot drift
//! apart; only the framing differs. Errors are the same [`ApiError`]s, as gRPC statuses with the
//! gateway's code in the `clade-error-code` trailer.
//!
//! The message types and the service trait (`pb.rs`) are generated from the `.proto` by
//! `cargo xtask codegen` and committed, so building needs no `protoc`.

#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs)]
mod pb;

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use pb::agent_hub_server::{AgentHub, AgentHubServer};
use pb::{spawn_reply, spawn_request};
use tonic::{Request, Response, Status};

use crate::api::{CreateAgentParams, EventParams, ForkKind, SourceParams, StartForkParams};
use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::live::{Followed, Only, Start};
use crate::{AppState, agents, events, runs};

/// How the gRPC server runs.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// The certificate chain and private key, PEM, to serve TLS with; none: plain HTTP/2.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// The largest request message, in bytes (`server.max_body_bytes`).
    pub max_message_bytes: usize,
    /// The HTTP server's: at most this many connections at once (one more is closed at
    /// once), each closed unless its HTTP/2 preface arrives within the header timeout.
    pub limits: crate::server::ConnectionLimits,
}

/// Why the gRPC server could not run.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("the gRPC server's TLS certificate or key cannot be used: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("the gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// `Ok` if `cert` and `key` (PEM) make a TLS identity the server can serve with: checked
/// before a gateway starts anything else, so a bad file stops its start at once.
pub fn check_grpc_tls(cert: &[u8], key: &[u8]) -> Result<(), GrpcError> {
    let identity = tonic::transport::Identity::from_pem(cert, key);
    let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    tonic::transport::Server::builder().tls_config(tls).map(drop).map_err(GrpcError::Tls)
}

/// Serves the AgentHub on `listener` until `shutdown` resolves, then lets calls in flight end.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: AppState,
    options: GrpcOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let service = AgentHubServer::new(Hub { state })
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(usize::MAX);
    let mut server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(256))
        .concurrency_limit_per_connection(256);
    if let Some((cert, key)) = options.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        server = server.tls_config(tls).map_err(GrpcError::Tls)?;
    }
    let incoming = guarded(listener, options.limits);
    server
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(GrpcError::Serve)
}

struct Hub {
    state: AppState,
}

impl Hub {
    /// The caller of a gRPC call, if its token allows the route `method path`, which the call
    /// stands for.
    async fn caller(
        &self,
        (metadata, extensions): (&tonic::metadata::MetadataMap, &tonic::Extensions),
        method: &str,
        path: &str,
        call: &str,
    ) -> Result<Caller, Status> {
        let headers = metadata.clone().into_headers();
        let needed = crate::scopes::required(method, path);
        let what = format!("{call} (as {method} {path})");
        let caller =
            crate::auth::bearer_caller(&self.state, headers.get("authorization"), needed, &what)
                .await
                .map_err(status_of)?;
        // Its connection keeps its place when strangers fill the listener's.
        if let Some(connection) = extensions.get::<ConnectInfo>() {
            let limits = &self.state.limits;
            limits.trust_connection(&connection.trust, &caller.0, &caller.1).map_err(status_of)?;
        }
        Ok(caller)
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<pb::TraceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AgentHub for Hub {
    async fn spawn(
        &self,
        request: Request<pb::SpawnRequest>,
    ) -> Result<Response<pb::SpawnReply>, Status> {
        let (metadata, extensions, spawn) = request.into_parts();
        let what = match spawn.what {
            Some(spawn_request::What::Agent(agent)) => {
                let caller =
                    self.caller((&metadata, &extensions), "POST", "/v1/agents", "Spawn").await?;
                let params = CreateAgentParams {
                    handle: agent.handle,
                    name: agent.name,
                    template: agent.template,
                    task: agent.task,
                };
                let created =
                    agents::create_agent(&self.state, &caller, params).await.map_err(status_of)?;
                spawn_reply::What::Agent(pb::SpawnedAgent {
                    agent_id: created.id,
                    handle: created.handle,
                    template: created.template,
                    task: created.task.map(|task| pb::Accepted {
                        event_id: task.event_id,
                        session_id: task.session_id,
                        duplicate: false,
                    }),
                    tools: created
                        .tools
                        .into_iter()
                        .map(|tool| pb::TemplateTool {
                            effect: tool.effect,
                            tool: tool.tool,
                            resource: tool.resource,
                            left_out: tool.left_out,
                        })
                        .collect(),
                })
            }
            Some(spawn_request::What::Run(run)) => {
                let caller = self
                    .caller((&metadata, &extensions), "POST", "/v1/sessions/{id}/forks", "Spawn")
                    .await?;
                let kind = match pb::RunKind::try_from(run.kind) {
                    Ok(pb::RunKind::Branch) => clade_core::ExecutionKind::Branch,
                    Ok(pb::RunKind::Worker) => clade_core::ExecutionKind::Worker,
                    _ => return Err(invalid("run.kind: RUN_KIND_BRANCH or RUN_KIND_WORKER")),
                };
                let tools = (!run.tools.is_empty()).then_some(run.tools);
                let params = StartForkParams { kind: ForkKind(kind), task: run.task, tools };
                let (started, duplicate) = runs::start_fork(
                    &self.state,
                    &caller,
                    &run.session_id,
                    params,
                    run.idempotency_key,
                )
                .await
                .map_err(status_of)?;
                spawn_reply::What::Run(pb::SpawnedRun {
                    execution_id: started.id,
                    session_id: started.fork.map(|fork| fork.id).unwrap_or_default(),
                    kind: kind.as_str().to_owned(),
                    duplicate,
                })
            }
            None => return Err(invalid("say what to spawn: `agent` or `run`")),
        };
        Ok(Response::new(pb::SpawnReply { what: Some(what) }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageReply>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let caller =
            self.caller((&metadata, &extensions), "POST", "/v1/events", "SendMessage").await?;
        let params = EventParams {
            agent: message.agent,
            text: message.text,
            source: message.source.map(|source| SourceParams {
                platform: source.platform,
                channel: source.channel,
                actor: source.actor,
            }),
            session: message.session_id,
            idempotency_key: message.idempotency_key,
            wait: false,
        };
        let envelope =
            events::envelope_of(&self.state, &caller, params, None).await.map_err(status_of)?;
        let accepted = self.state.engine.submit(envelope).await.map_err(ApiError::from);
        let accepted = accepted.map_err(status_of)?;
        Ok(Response::new(pb::SendMessageReply {
            accepted: Some(pb::Accepted {
                event_id: accepted.event_id.to_string(),
                session_id: accepted.session_id.to_string(),
                duplicate: accepted.duplicate,
            }),
        }))
    }

    type TraceStream = Events;

    async fn trace(&self, request: Request<pb::TraceRequest>) -> Result<Response<Events>, Status> {
        let (metadata, extensions, trace) = request.into_parts();
        let caller = self
            .caller((&metadata, &extensions), "GET", "/v1/agents/{handle}/events", "Trace")
            .await?;
        let mut kinds = Vec::with_capacity(trace.kinds.len());
        for kind in &trace.kinds {
            let known = clade_core::EventKind::parse(kind).ok_or_else(|| {
                let all: Vec<&str> =
                    clade_core::EventKind::ALL.iter().map(|k| k.as_str()).collect();
                invalid(&format!(
                    "kinds: {kind:?} is not an event kind; the kinds are {}",
                    all.join(", ")
                ))
            })?;
            kinds.push(known);
        }
        let only =
            Only { live_only: trace.deltas || kinds.iter().any(|k| k.is_live_only()), kinds };
        let (ids, tenant) = (self.state.stream_ids.clone(), caller.0.id);
        let start = match trace.after {
            Some(id) => Start::After(crate::live::stream_position(&ids, tenant, id)),
            None => Start::Now,
        };
        let followed = agents::trace(
            &self.state,
            caller,
            &trace.agent,
            trace.session_id.as_deref(),
            start,
            only,
        )
        .await
        .map_err(status_of)?;
        let events = followed.map(move |followed| match followed {
            Followed::Event(event) => Ok(pb::TraceEvent {
                id: event.id.map_or(0, |id| ids.encode(tenant, id)),
                session_id: event.session.to_string(),
                kind: event.kind().as_str().to_owned(),
                data_json: event.data().to_string(),
            }),
            Followed::Revoked => Err(status_of(ApiError::new(
                Code::InvalidToken,
                "the trace's token was revoked or its tenant deleted",
            ))),
        });
        Ok(Response::new(Box::pin(events)))
    }
}

fn invalid(message: &str) -> Status {
    status_of(ApiError::new(Code::InvalidRequest, message))
}

/// An API error as a gRPC status: the status code nearest its HTTP status, its message, and
/// the gateway's own code in the `clade-error-code` trailer (`retry-after` too, in seconds,
/// for a limit that lifts by itself).
fn status_of(err: ApiError) -> Status {
    use tonic::Code as Grpc;
    let code = match err.code {
        Code::HandleTaken | Code::JobExists => Grpc::AlreadyExists,
        Code::IdempotencyConflict | Code::ApprovalDecided | Code::JobDeclared => {
            Grpc::FailedPrecondition
        }
        Code::TurnRunning => Grpc::DeadlineExceeded,
        other => match other.status().as_u16() {
            400 | 413 | 415 | 422 => Grpc::InvalidArgument,
            401 => Grpc::Unauthenticated,
            403 => Grpc::PermissionDenied,
            404 => Grpc::NotFound,
            405 => Grpc::Unimplemented,
            409 => Grpc::Aborted,
            429 => Grpc::ResourceExhausted,
            502 | 503 => Grpc::Unavailable,
            _ => Grpc::Internal,
        },
    };
    if err.code.status().is_server_error() {
        tracing::error!(code = err.code.as_str(), message = %err.message, "gRPC call failed");
    }
    let mut status = Status::new(code, err.message);
    let trailers = status.metadata_mut();
    trailers
        .insert("clade-error-code", tonic::metadata::MetadataValue::from_static(err.code.as_str()));
    if let Some(wait) = err.retry_after {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        trailers.insert("retry-after", tonic::metadata::MetadataValue::from(seconds));
    }
    status
}

/// The listener's connections, each holding one of `limits.max_connections` places while it
/// is open, given out as the HTTP server gives its own ([`crate::server::Places`]): at the cap
/// the oldest connection that sent nothing, else the oldest whose calls never passed the token
/// check, else the oldest of the tenant holding the most places makes room. One whose first
/// bytes do not arrive in time is closed, so silent sockets cannot hold the places.
fn guarded(
    listener: tokio::net::TcpListener,
    limits: crate::server::ConnectionLimits,
) -> impl futures::Stream<Item = std::io::Result<Guarded>> {
    let places = crate::server::Places::default();
    futures::stream::unfold((listener, places), move |(listener, places)| async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "the gRPC server cannot accept a connection");
                    #[allow(clippy::disallowed_methods)] // Pacing real I/O, not domain time.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            #[allow(clippy::disallowed_methods)] // How long a socket has been silent: real I/O.
            let Some(place) =
                places.admit(limits.max_connections, tokio::time::Instant::now(), peer.ip())
            else {
                tracing::debug!(%peer, "gRPC connection refused: at the connection limit");
                continue;
            };
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY on a connection");
            }
            #[allow(clippy::disallowed_methods)] // A socket's deadline, not domain time.
            let first = Box::pin(tokio::time::sleep(limits.header_timeout));
            let evicted = Box::pin(place.evicted());
            let guarded = Guarded { tcp, place, evicted, first: Some(first), read: 0 };
            return Some((Ok(guarded), (listener, places)));
        }
    })
}

/// The bytes a connection must send before the header timeout: HTTP/2's client preface is
/// 24, a TLS ClientHello more.
const FIRST_BYTES: usize = 24;

/// A connection of the gRPC server, holding its place until it closes.
struct Guarded {
    tcp: tokio::net::TcpStream,
    place: crate::server::Place,
    /// Resolves when a newcomer took the place: reads fail and the connection closes.
    evicted: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
    /// Until its first bytes have arrived: past it, reads fail and the connection closes.
    first: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    read: usize,
}

/// What a call knows of its connection: the token check marks it authenticated through it.
#[derive(Clone)]
struct ConnectInfo {
    trust: crate::server::ConnectionTrust,
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectInfo { trust: self.place.trust() }
    }
}

impl tokio::io::AsyncRead for Guarded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed to make room for another connection",
            )));
        }
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.read += buf.filled().len() - before;
                if this.read >= FIRST_BYTES && this.first.is_some() {
                    this.first = None;
                    this.place.requested();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(first) = this.first.as_mut()
                    && first.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request before the header timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for Guarded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
