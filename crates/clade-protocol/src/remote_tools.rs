//! The remote tool protocol, version 1 (`docs/specs/remote-tools.md`): how a gateway lists and
//! calls the tools of a host that is not an MCP server.
//!
//! A host serves three routes under its base URL: `GET manifest` ([`Manifest`]), `GET health`
//! ([`Health`]) and `POST calls` ([`CallRequest`], answered by a stream of [`CallFrame`]s, one
//! JSON object a line). A request the host refuses before a call starts is answered with a 4xx
//! status and an [`ErrorBody`]. Readers ignore fields they do not know, so a host may add some.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A paired gateway's public key, on each request it signs.
pub const PEER_HEADER: &str = "clade-peer";
/// When a paired gateway signed a request (Unix milliseconds).
pub const PEER_TIME_HEADER: &str = "clade-peer-time";
/// A paired gateway's signature of a request.
pub const PEER_SIGNATURE_HEADER: &str = "clade-peer-signature";
/// A challenge a gateway sends with `GET manifest`, for the host to sign.
pub const CHALLENGE_HEADER: &str = "clade-peer-challenge";
/// A host's signature of the challenge, on its answer.
pub const HOST_SIGNATURE_HEADER: &str = "clade-host-signature";

/// What a host's manifest says in `protocol`.
pub const PROTOCOL: &str = "clade.remote-tools/1";
/// The request header that names the protocol version a gateway speaks.
pub const VERSION_HEADER: &str = "clade-remote-tools";
/// The version this crate describes, as the header carries it.
pub const VERSION: &str = "1";
/// The media type of a call's answer: one [`CallFrame`] a line.
pub const FRAMES_CONTENT_TYPE: &str = "application/x-ndjson";

/// What a host offers: `GET {base}/manifest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    /// [`PROTOCOL`]; a gateway refuses a host that says anything else.
    pub protocol: String,
    pub host: HostInfo,
    /// The longest a call's answer stays silent: a host sends a `heartbeat` frame at least
    /// this often while a call runs, and a gateway gives up on a call silent for three times
    /// as long.
    pub heartbeat_secs: u32,
    pub tools: Vec<ToolDescriptor>,
}

/// Who the host is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostInfo {
    pub name: String,
    pub version: String,
}

/// One tool of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolDescriptor {
    /// 1-64 of `a-z`, `0-9`, `.`, `_` and `-`, starting with a letter; agents see the tool by
    /// this name.
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments object.
    pub input_schema: Value,
    /// What repeating a call does (crash recovery re-runs only `pure` and `idempotent` calls).
    pub effect: Effect,
    /// Whether the tool touches the machine it runs on (files, processes, network): a gateway
    /// denies such tools unless a policy rule allows them.
    #[serde(default)]
    pub touches_host: bool,
    /// The top-level string argument that policy rules' resource patterns match (a job's name,
    /// a path), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_argument: Option<String>,
}

/// A tool's side-effect class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// No side effect.
    Pure,
    /// Its effects are keyed by the call's `idempotency_key`.
    Idempotent,
    /// Must not run twice.
    AtMostOnce,
}

/// `POST {base}/pair`: a gateway asks to pair, with the host's bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairRequest {
    /// The gateway's public key (Ed25519, base64url of its 32 bytes).
    pub gateway_key: String,
    /// The name the gateway gives the host.
    pub name: String,
    /// 32 random bytes (base64url) for the host to sign.
    pub challenge: String,
}

/// The host's answer: its key, its signature of the gateway's challenge and key, and a
/// challenge of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairResponse {
    pub host_key: String,
    pub signature: String,
    pub challenge: String,
}

/// `POST {base}/pair/confirm`: the gateway's signature of the host's challenge and key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairConfirm {
    pub gateway_key: String,
    pub signature: String,
}

/// `GET {base}/health`: the host is up and speaks the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub protocol: String,
    /// How many tools the manifest lists now.
    pub tools: u32,
}

/// `POST {base}/calls`: run one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallRequest {
    /// The gateway's id of the call (for logs).
    pub call_id: String,
    /// The same for every attempt of one call: a host runs a key once and answers its repeats
    /// with the first outcome.
    pub idempotency_key: String,
    pub tool: String,
    /// An object, as the tool's `input_schema` describes.
    pub arguments: Value,
    /// Who calls, as the gateway vouches for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// How long the gateway waits for the outcome.
    pub timeout_ms: u64,
}

/// The tenant, agent and session a call runs for (ids as the gateway's API writes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Caller {
    pub tenant: String,
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// One line of a call's answer. The last is `result` or `error`; nothing follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallFrame {
    /// The call is running: what it does now, and how far along it is (0 to 1) if known.
    Progress {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fraction: Option<f64>,
    },
    /// The call is still running (sent at least every `heartbeat_secs`).
    Heartbeat {},
    /// The tool's output, as text for the model.
    Result { content: String },
    /// The call failed.
    Error(CallError),
}

/// A typed failure: of the tool (`tool_failed`, whose message is for the model) or of the
/// request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallError {
    pub code: ErrorCode,
    pub message: String,
    /// Whether the same request may succeed later.
    #[serde(default)]
    pub retryable: bool,
}

/// Why a request or call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not a request of this protocol (400).
    BadRequest,
    /// The gateway speaks another version (400).
    UnsupportedVersion,
    /// No or the wrong credentials (401).
    Unauthorized,
    /// The manifest has no tool of that name (404).
    UnknownTool,
    /// The idempotency key was used for another tool or other arguments (409).
    IdempotencyConflict,
    /// The arguments are not what the tool takes (422, or a frame).
    InvalidArguments,
    /// The tool ran and failed; the message is for the model.
    ToolFailed,
    /// The host cannot run calls now (503, or a frame).
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status a host answers with when it refuses a request with this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnsupportedVersion => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::UnknownTool => 404,
            ErrorCode::IdempotencyConflict => 409,
            ErrorCode::InvalidArguments => 422,
            ErrorCode::ToolFailed => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// The body of a refused request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: CallError,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = serde_json::to_value(self.code).ok();
        let code = code.as_ref().and_then(Value::as_str).unwrap_or("error");
        write!(f, "{code}: {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_as_written() {
        let frames = [
            CallFrame::Progress { message: "half".into(), fraction: Some(0.5) },
            CallFrame::Heartbeat {},
            CallFrame::Result { content: "finished".into() },
            CallFrame::Error(CallError {
                code: ErrorCode::ToolFailed,
                message: "no".into(),
                retryable: false,
            }),
        ];
        for frame in frames {
            let line = serde_json::to_string(&frame).unwrap_or_default();
            assert!(!line.contains('\n'));
            let back: CallFrame = serde_json::from_str(&line).unwrap_or(CallFrame::Heartbeat {});
            assert_eq!(back, frame, "{line}");
        }
        let heartbeat = serde_json::to_string(&CallFrame::Heartbeat {}).unwrap_or_default();
        assert_eq!(heartbeat, r#"{"type":"heartbeat"}"#);
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_frames_refused() {
        let frame: Result<CallFrame, _> =
            serde_json::from_str(r#"{"type":"result","content":"x","extra":1}"#);
        assert!(frame.is_ok());
        let frame: Result<CallFrame, _> = serde_json::from_str(r#"{"type":"mystery"}"#);
        assert!(frame.is_err());
    }
}
