//! The conformance test of the remote tool protocol: checks any host, ours or not, against
//! what `docs/specs/remote-tools.md` says a host MUST do. `clade tool-host check` runs it.
//!
//! Without a sample call, only refusals are exercised (nothing runs on the host). With one
//! (a tool and arguments that are safe to run twice), the call is made, repeated with the same
//! idempotency key (the same outcome must come back) and made again with the key and other
//! arguments (which must be refused as a conflict).

use std::time::Duration;

use clade_protocol::remote_tools::{
    CallFrame, CallRequest, Caller, ErrorBody, ErrorCode, FRAMES_CONTENT_TYPE, Health, Manifest,
    PROTOCOL, VERSION_HEADER,
};
use serde_json::Value;

use super::{CallFailure, Client, ClientError};

/// What to check a host with.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub token: Option<String>,
    /// A call safe to make twice: the tool and its arguments.
    pub sample: Option<(String, Value)>,
    /// The caller the sample call names.
    pub caller: Option<Caller>,
    pub timeout: Duration,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    /// What the protocol asks, in a line.
    pub what: &'static str,
    pub outcome: Result<(), ClientError>,
}

/// Runs every check against `target`, in order; a check whose premise failed (no manifest)
/// is reported as failed too, never skipped silently.
pub async fn run(target: &Target) -> Vec<Check> {
    let mut checks = Vec::new();
    let client = match Client::new(&target.url, target.token.clone()) {
        Ok(client) => client,
        Err(message) => {
            checks.push(Check {
                name: "url",
                what: "the host's URL is an http(s) URL",
                outcome: Err(message),
            });
            return checks;
        }
    };
    let manifest = client.manifest(target.timeout).await;
    checks.push(Check {
        name: "manifest",
        what: "GET manifest answers a manifest of this protocol with valid tools",
        outcome: manifest.as_ref().map(|_| ()).map_err(Clone::clone),
    });
    let manifest = manifest.ok();
    checks.push(Check {
        name: "health",
        what: "GET health answers ok, the protocol, and the manifest's tool count",
        outcome: health(&client, manifest.as_ref(), target.timeout).await,
    });
    let first_tool = manifest.as_ref().and_then(|m| m.tools.first()).map(|t| t.name.clone());
    let request = |tool: &str, arguments: Value, key: &str| CallRequest {
        call_id: format!("conformance-{key}"),
        idempotency_key: format!("conformance-{key}-{}", unique()),
        tool: tool.to_owned(),
        arguments,
        caller: target.caller.clone(),
        timeout_ms: u64::try_from(target.timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let some_tool = first_tool.clone().unwrap_or_else(|| "echo".into());
    checks.push(Check {
        name: "version",
        what: "a call naming another protocol version is refused 400 unsupported_version",
        outcome: refused_raw(
            &client,
            Some("999"),
            target.token.as_deref(),
            serde_json::to_vec(&request(&some_tool, Value::Object(Default::default()), "version"))
                .unwrap_or_default(),
            ErrorCode::UnsupportedVersion,
            target.timeout,
        )
        .await,
    });
    if target.token.is_some() {
        checks.push(Check {
            name: "auth",
            what: "a call with no token or a wrong one is refused 401 unauthorized",
            outcome: async {
                let body = serde_json::to_vec(&request(
                    &some_tool,
                    Value::Object(Default::default()),
                    "auth",
                ))
                .unwrap_or_default();
                refused_raw(
                    &client,
                    None,
                    None,
                    body.clone(),
                    ErrorCode::Unauthorized,
                    target.timeout,
                )
                .await?;
                refused_raw(
                    &client,
                    None,
                    Some("not-the-token"),
                    body,
                    ErrorCode::Unauthorized,
                    target.timeout,
                )
                .await
            }
            .await,
        });
    }
    checks.push(Check {
        name: "bad_request",
        what: "a body that is not a call request is refused 400 bad_request",
        outcome: refused_raw(
            &client,
            None,
            target.token.as_deref(),
            b"{\"not\": \"a call\"".to_vec(),
            ErrorCode::BadRequest,
            target.timeout,
        )
        .await,
    });
    checks.push(Check {
        name: "unknown_tool",
        what: "a call of a tool the manifest does not list is refused 404 unknown_tool",
        outcome: refused(
            &client,
            &request(
                &format!("no-such-tool-{}", unique()),
                Value::Object(Default::default()),
                "unknown",
            ),
            ErrorCode::UnknownTool,
            target.timeout,
        )
        .await,
    });
    checks.push(Check {
        name: "invalid_arguments",
        what: "arguments that are not an object are refused 422 invalid_arguments",
        outcome: match &first_tool {
            None => Err(ClientError::Protocol("the manifest lists no tool to call".into())),
            Some(tool) => {
                refused(
                    &client,
                    &request(tool, Value::String("not an object".into()), "arguments"),
                    ErrorCode::InvalidArguments,
                    target.timeout,
                )
                .await
            }
        },
    });
    if let Some((tool, arguments)) = &target.sample {
        let first = request(tool, arguments.clone(), "sample");
        let outcome = call_outcome(&client, &first, target.timeout, manifest.as_ref()).await;
        checks.push(Check {
            name: "call",
            what: "a call answers application/x-ndjson frames ending in a result or an error",
            outcome: outcome.as_ref().map(|_| ()).map_err(Clone::clone),
        });
        let replay = call_outcome(&client, &first, target.timeout, manifest.as_ref()).await;
        checks.push(Check {
            name: "replay",
            what: "the same idempotency key again answers the first outcome",
            outcome: match (&outcome, replay) {
                (Ok(a), Ok(b)) if *a == b => Ok(()),
                (Ok(a), Ok(b)) => Err(ClientError::Protocol(format!(
                    "the first call ended {a:?}, its repeat {b:?}"
                ))),
                (Err(_), _) => Err(ClientError::Protocol("the first call failed".into())),
                (_, Err(e)) => Err(e),
            },
        });
        let mut other = first.clone();
        other.arguments = match arguments {
            Value::Object(map) => {
                let mut map = map.clone();
                map.insert("conformance_other_arguments".into(), Value::Bool(true));
                Value::Object(map)
            }
            _ => Value::Object(Default::default()),
        };
        checks.push(Check {
            name: "conflict",
            what: "the same idempotency key with other arguments is refused 409 idempotency_conflict",
            outcome: refused(&client, &other, ErrorCode::IdempotencyConflict, target.timeout).await,
        });
    }
    checks
}

async fn health(
    client: &Client,
    manifest: Option<&Manifest>,
    timeout: Duration,
) -> Result<(), ClientError> {
    let send = client.request(reqwest::Method::GET, "health")?.send();
    let response = tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| ClientError::Unreachable(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| ClientError::Unreachable(format!("cannot reach it: {e}")))?;
    let status = response.status();
    let body = super::read_capped(response, super::MAX_BODY_BYTES).await?;
    if !status.is_success() {
        return Err(ClientError::Protocol(format!("answered {status}: {}", super::snippet(&body))));
    }
    let health: Health = serde_json::from_slice(&body).map_err(|e| {
        ClientError::Protocol(format!("not a health answer ({e}): {}", super::snippet(&body)))
    })?;
    if health.status != "ok" || health.protocol != PROTOCOL {
        return Err(ClientError::Protocol(format!(
            "status {:?}, protocol {:?}",
            health.status, health.protocol
        )));
    }
    if let Some(manifest) = manifest
        && usize::try_from(health.tools).ok() != Some(manifest.tools.len())
    {
        return Err(ClientError::Protocol(format!(
            "says {} tools where the manifest lists {}",
            health.tools,
            manifest.tools.len()
        )));
    }
    Ok(())
}

/// Expects the call request to be refused with `code` and its status.
async fn refused(
    client: &Client,
    request: &CallRequest,
    code: ErrorCode,
    timeout: Duration,
) -> Result<(), ClientError> {
    match client.call(request, timeout).await {
        Ok(mut frames) => match frames.outcome(timeout).await {
            Ok(Err(error)) if error.code == code => Err(ClientError::Protocol(format!(
                "answered 200 with an error frame ({error}); a refusal before the call starts is a {} status",
                code.status()
            ))),
            other => Err(ClientError::Protocol(format!(
                "answered 200 where {} {code:?} was due: {other:?}",
                code.status()
            ))),
        },
        Err(CallFailure::Refused { status, error })
            if error.code == code && status == code.status() =>
        {
            Ok(())
        }
        Err(other) => {
            Err(ClientError::Protocol(format!("expected {} {code:?}; {other}", code.status())))
        }
    }
}

/// Sends `body` as a call with the given version header and token, expecting a refusal.
async fn refused_raw(
    client: &Client,
    version: Option<&str>,
    token: Option<&str>,
    body: Vec<u8>,
    code: ErrorCode,
    timeout: Duration,
) -> Result<(), ClientError> {
    let mut request = client
        .http
        .post(client.route("calls")?)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(VERSION_HEADER, version.unwrap_or(clade_protocol::remote_tools::VERSION))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = tokio::time::timeout(timeout, request.send())
        .await
        .map_err(|_| ClientError::Unreachable(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| ClientError::Unreachable(format!("cannot reach it: {e}")))?;
    let status = response.status().as_u16();
    let body = super::read_capped(response, super::MAX_BODY_BYTES).await?;
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(refused) if refused.error.code == code && status == code.status() => Ok(()),
        Ok(refused) => Err(ClientError::Protocol(format!(
            "expected {} {code:?}; answered {status} {}",
            code.status(),
            refused.error
        ))),
        Err(_) => Err(ClientError::Protocol(format!(
            "expected {} {code:?}; answered {status} without an error body: {}",
            code.status(),
            super::snippet(&body)
        ))),
    }
}

/// Makes a call and reads its frames to the end: the final frame, as JSON text to compare.
async fn call_outcome(
    client: &Client,
    request: &CallRequest,
    timeout: Duration,
    manifest: Option<&Manifest>,
) -> Result<String, ClientError> {
    let idle = manifest.map_or(timeout, |m| Duration::from_secs(u64::from(m.heartbeat_secs) * 3));
    let mut frames = client.call(request, timeout).await.map_err(|failure| match failure {
        CallFailure::Transport(error) => error,
        other => ClientError::Protocol(other.to_string()),
    })?;
    let content_type = frames.content_type().unwrap_or_default();
    if !content_type.starts_with(FRAMES_CONTENT_TYPE) {
        return Err(ClientError::Protocol(format!(
            "content type {content_type:?}, not {FRAMES_CONTENT_TYPE}"
        )));
    }
    let mut last = None;
    while let Some(frame) = frames.next(idle).await? {
        if last.is_some() {
            return Err(ClientError::Protocol(format!("sent a frame after its last: {frame:?}")));
        }
        match frame {
            CallFrame::Progress { .. } | CallFrame::Heartbeat {} => {}
            final_frame => last = Some(final_frame),
        }
    }
    let last = last.ok_or_else(|| {
        ClientError::Protocol("ended its answer without a result or an error frame".into())
    })?;
    serde_json::to_string(&last)
        .map_err(|e| ClientError::Protocol(format!("its last frame is not JSON: {e}")))
}

/// A value no earlier run used: idempotency keys and names must not collide with a past run's.
fn unique() -> String {
    // Not a secret: only distinct between runs.
    #[allow(clippy::disallowed_methods)]
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}
