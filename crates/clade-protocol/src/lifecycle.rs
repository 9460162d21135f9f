//! Lifecycle events, as every channel carries them: an SSE stream (`event:` is the kind, `data:`
//! the event's data), a WebSocket frame (`kind` and `data`), and a webhook's body
//! ([`WebhookEvent`]: `type` and `data` beside the envelope).
//!
//! [`LifecycleEvent`] is tagged by `type`; its data is one struct per kind. The runtime and the
//! store write the outbox through these types, so what a client reads is what this crate says.

use std::borrow::Cow;

use clade_core::{ApprovalStatus, EventKind, MessageKind, TurnStatus};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{ErrorBody, Spelled};

/// `turn.started`: a turn took the session's waiting events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnStarted {
    pub turn: String,
    /// The agent's handle.
    pub agent: String,
    /// The events the turn answers, in session order.
    pub events: Vec<String>,
}

/// `turn.finished`, `turn.failed` or `turn.yielded`: how a turn ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnEnded {
    pub turn: String,
    pub status: Spelled<TurnStatus>,
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The model that gave the last answer.
    #[serde(default)]
    pub model: Option<String>,
    /// Files of the agent's workspace the reply carries (`reply.attach`), in the order they
    /// were attached; a chat channel sends them after the reply's text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ReplyFile>,
}

/// A workspace file a reply carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplyFile {
    /// Relative to the agent's workspace.
    pub path: String,
    /// Its size when it was attached.
    pub bytes: u64,
    /// A line shown with it, where the platform can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// `turn.resumed`: a yielded turn runs on from its journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnResumed {
    pub turn: String,
    /// How many times the turn has been resumed, this one included.
    pub resumes: u64,
}

/// `text.delta` (live only, never in the outbox): part of a model's answer as it streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TextDelta {
    pub turn: String,
    pub text: String,
}

/// `tool.progress` (live only, never in the outbox): how a running tool call is getting on, as
/// a remote tool host reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolProgress {
    pub turn: String,
    /// The model's id for the call.
    pub call: String,
    pub name: String,
    pub message: String,
    /// How far along, from 0 to 1, when the host says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
}

/// `tool.called`: a model's tool call passed policy and is about to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCalled {
    /// The model's id for the call.
    pub call: String,
    pub name: String,
    /// The arguments as the model wrote them (a string when they were not valid JSON).
    pub arguments: Value,
    /// `pure`, `idempotent` or `at_most_once`: what a crash recovery may repeat.
    pub effect: String,
    /// The call's idempotency key, the same on every attempt.
    pub key: String,
}

/// `tool.result`: what a tool call gave back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolReturned {
    pub call: String,
    pub name: String,
    pub content: String,
    pub is_error: bool,
}

/// `approval.requested`: a tool call waits for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRequested {
    pub approval: String,
    /// The model's id for the call that asks, as in its `tool.called`; absent for an
    /// operator's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    pub tool: String,
    /// What policy patterns match: a path, host or command line.
    pub resource: String,
    /// The exact arguments that run if approved.
    pub arguments: Value,
    /// SHA-256 of tool and arguments; the executed call must match it.
    pub arguments_hash: String,
    /// Why it was asked.
    pub reason: String,
    /// Unix milliseconds; unanswered by then, it expires (a denial).
    pub expires_at: i64,
}

/// `approval.decided`: an operator, a timeout or the turn's end decided an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalDecided {
    pub approval: String,
    pub status: Spelled<ApprovalStatus>,
}

/// `job.disabled`: the scheduler disabled an agent's job, saying why; it fires no more until
/// enabled again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobDisabled {
    pub job_id: String,
    pub agent_id: String,
    pub name: String,
    pub reason: String,
}

/// `config.applied`: a configuration was applied to the deployment (told to the operator's
/// tenant, the default one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigApplied {
    pub revision: i64,
    pub sha256: String,
    pub applied_by: String,
    /// The revision it went back to, for a revert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverts: Option<i64>,
}

/// `agent.message.sent` (in the sender's session) and `agent.message.received` (in the
/// receiver's): one agent messaged another of its tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentMessage {
    /// The message's id; an `ask`'s answer is correlated by it.
    pub message: String,
    pub kind: Spelled<MessageKind>,
    /// The sender's handle.
    pub from: String,
    /// The receiver's handle.
    pub to: String,
    /// The receiver's event that holds the message.
    pub event: String,
    /// The receiver's session: its conversation with the sender.
    pub session: String,
    /// How many messages between agents led to this one, itself included.
    pub depth: u32,
}

/// `executions.paused` and `executions.resumed`: an operator paused an agent (every session of
/// it) or one session, or lifted the pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PauseChanged {
    pub agent_id: String,
    /// The paused session; absent for the whole agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `execution.started`, `execution.progress` and `execution.ended`: a branch or a worker of a
/// session, announced in that session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionChanged {
    /// The execution: one run of the branch or worker.
    pub execution: String,
    /// `branch` or `worker`.
    pub kind: Spelled<clade_core::ExecutionKind>,
    /// The branch's or worker's own session: its id, which `agent.cancel` and follow-ups name.
    pub fork: String,
    /// Where it stands now.
    pub status: Spelled<clade_core::ExecutionStatus>,
    /// Its task, when it starts; its latest status line, as it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Messages the session received after it started and before it ended (on its end): a
    /// conclusion reached meanwhile may be stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_since: Option<u64>,
}

/// Declares [`LifecycleEvent`] with one variant per kind and its data type, and the code that
/// maps between the two: the kind's spelling comes from `clade-core` alone.
macro_rules! lifecycle_events {
    (@from From $variant:ident $data:ty) => {
        impl From<$data> for LifecycleEvent {
            fn from(data: $data) -> Self {
                Self::$variant(data)
            }
        }
    };
    ($($variant:ident($data:ty) $([$from:ident])?,)+) => {
        $($(lifecycle_events!(@from $from $variant $data);)?)+

        /// A lifecycle event: its kind (`type`) and its data.
        #[derive(Debug, Clone, PartialEq)]
        pub enum LifecycleEvent {
            $($variant($data),)+
        }

        impl LifecycleEvent {
            /// Its kind.
            pub fn kind(&self) -> EventKind {
                match self {
                    $(Self::$variant(_) => EventKind::$variant,)+
                }
            }

            /// Its data as JSON.
            pub fn data(&self) -> Value {
                match self {
                    $(Self::$variant(data) => serde_json::to_value(data).unwrap_or(Value::Null),)+
                }
            }

            /// Its data as JSON text, as the outbox stores it.
            pub fn data_text(&self) -> String {
                match self {
                    $(Self::$variant(data) => serde_json::to_string(data).unwrap_or_default(),)+
                }
            }

            /// The event of `kind` whose data is `data`; an error names what does not fit.
            pub fn from_parts(kind: EventKind, data: Value) -> Result<Self, serde_json::Error> {
                Ok(match kind {
                    $(EventKind::$variant => Self::$variant(serde_json::from_value(data)?),)+
                })
            }

            /// The schema of each kind's data, by kind.
            fn data_schemas(generator: &mut SchemaGenerator) -> Vec<(EventKind, Schema)> {
                vec![$((EventKind::$variant, generator.subschema_for::<$data>()),)+]
            }
        }

    };
}

// `[From]`: the event is made `From` its data, which belongs to that kind alone ([`TurnEnded`]
// belongs to three: see [`LifecycleEvent::turn_ended`]).
lifecycle_events! {
    TurnStarted(TurnStarted) [From],
    TurnFinished(TurnEnded),
    TurnFailed(TurnEnded),
    TurnYielded(TurnEnded),
    TurnResumed(TurnResumed) [From],
    TextDelta(TextDelta) [From],
    ToolCalled(ToolCalled) [From],
    ToolProgress(ToolProgress) [From],
    ToolResult(ToolReturned) [From],
    ApprovalRequested(ApprovalRequested) [From],
    ApprovalDecided(ApprovalDecided) [From],
    JobDisabled(JobDisabled) [From],
    ConfigApplied(ConfigApplied) [From],
    AgentMessageSent(AgentMessage),
    AgentMessageReceived(AgentMessage),
    ExecutionsPaused(PauseChanged),
    ExecutionsResumed(PauseChanged),
    ExecutionStarted(ExecutionChanged),
    ExecutionProgress(ExecutionChanged),
    ExecutionEnded(ExecutionChanged),
    DebugStopped(crate::DebugStopChanged),
    DebugResumed(crate::DebugStopChanged),
}

impl LifecycleEvent {
    /// How a turn ended, as the event of its status (`Running` is no ending and reads as a
    /// failure).
    pub fn turn_ended(data: TurnEnded) -> Self {
        match data.status.0 {
            TurnStatus::Completed => Self::TurnFinished(data),
            TurnStatus::Yielded => Self::TurnYielded(data),
            TurnStatus::Failed | TurnStatus::Running => Self::TurnFailed(data),
        }
    }
}

/// `{"type": <kind>, "data": {...}}`.
impl Serialize for LifecycleEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", self.kind().as_str())?;
        map.serialize_entry("data", &self.data())?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for LifecycleEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Tagged {
            #[serde(rename = "type")]
            kind: Spelled<EventKind>,
            data: Value,
        }
        let Tagged { kind, data } = Tagged::deserialize(deserializer)?;
        Self::from_parts(kind.0, data).map_err(|e| {
            D::Error::custom(format!("the data of a {} event does not fit: {e}", kind.0.as_str()))
        })
    }
}

impl JsonSchema for LifecycleEvent {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("LifecycleEvent")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let variants: Vec<Schema> = Self::data_schemas(generator)
            .into_iter()
            .map(|(kind, data)| {
                json_schema!({
                    "type": "object",
                    "properties": { "type": { "const": kind.as_str() }, "data": data },
                    "required": ["type", "data"]
                })
            })
            .collect();
        json_schema!({ "oneOf": variants })
    }
}

/// The body a webhook subscriber receives for one lifecycle event, signed in its
/// `X-Clade-Signature` header (`sha256=<hex>`, HMAC-SHA256 of the body under the subscriber's
/// secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookEvent {
    /// The event's own id: a receiver drops a repeat by it (delivery is at least once).
    pub id: String,
    /// Its position in the outbox: increases with each event, in commit order.
    pub seq: i64,
    pub tenant: String,
    pub session: Option<String>,
    pub turn: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// `type` and `data`.
    #[serde(flatten)]
    pub event: LifecycleEvent,
}

/// A message a WebSocket client sends: subscribe to one session, or to all of an agent's; or
/// send an event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        /// An agent's handle.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    /// An event, as `POST /v1/events` takes its body (the token needs the `send` scope).
    /// Answered by an `accepted` frame once it is durably stored (with `wait`, once its turn
    /// has ended, with the reply), or an `error` frame; both carry the frame's `ref`.
    Event {
        /// The client's name for this frame, repeated in its answer (answers to frames sent
        /// together may come in another order).
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = 256))]
        reference: Option<String>,
        event: crate::EventParams,
    },
}

/// A message the server sends on a WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The subscription stands; events follow.
    Subscribed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    /// A lifecycle event (with its stream id, which `Last-Event-ID` takes) or a text delta
    /// (no id).
    Event {
        session: String,
        id: Option<u64>,
        kind: Spelled<EventKind>,
        /// The kind's data, as in [`LifecycleEvent`].
        data: Value,
    },
    /// An event frame's answer, as `POST /v1/events` answers: the event is stored.
    Accepted {
        /// The event frame's `ref`.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(flatten)]
        event: crate::EventResponse,
    },
    /// What went wrong with a frame (`ref` names an event frame); the connection stays open.
    Error {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(flatten)]
        error: ErrorBody,
    },
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthResponse {
    /// Always `ok`: the process answers.
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReadinessResponse {
    /// `ready`, `degraded` (the sandbox is broken: chat works, host-touching tools are
    /// refused) or `unavailable` (the store does not answer; status 503).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The sandbox's self-check; absent when tools run without one, and for any caller but
    /// the operator (an admin token of the default tenant).
    pub sandbox: Option<SandboxReport>,
    /// Each chat channel's connection: a `failing` one makes the status `degraded`. Shown
    /// only to the operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelReadiness>,
}

/// A chat channel's connection, as `/readyz` reports it (the operator's `GET /v1/channels`
/// has its counters and last error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelReadiness {
    pub platform: String,
    pub name: String,
    /// `starting`, `connected` or `failing`.
    pub state: String,
}

/// The outcome of the sandbox's self-check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxReport {
    /// `off`, `checking`, `ready` or `broken`.
    pub status: String,
    /// Why it is broken.
    pub reason: Option<String>,
}

/// Answer to `POST /v1/sessions/{id}/resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResumeResponse {
    /// Events of yielded turns put back to running.
    pub resumed_events: u64,
    /// Whether a pause of the session was lifted.
    #[serde(default)]
    pub unpaused: bool,
}

/// Answer to `POST /v1/sessions/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CancelResponse {
    /// Whether a turn was running to cancel.
    pub cancelled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_variant_and_its_tag_is_the_vocabularys_spelling() {
        let mut generator = SchemaGenerator::default();
        let kinds: Vec<EventKind> =
            LifecycleEvent::data_schemas(&mut generator).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, EventKind::ALL);
        let event = LifecycleEvent::TurnResumed(TurnResumed { turn: "t".into(), resumes: 2 });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], EventKind::TurnResumed.as_str());
        assert_eq!(serde_json::from_value::<LifecycleEvent>(json).unwrap(), event);
    }

    #[test]
    fn data_of_another_kind_is_refused_by_name() {
        let json =
            serde_json::json!({ "type": EventKind::ToolCalled.as_str(), "data": { "turn": "t" } });
        let err = serde_json::from_value::<LifecycleEvent>(json).unwrap_err().to_string();
        assert!(err.contains(EventKind::ToolCalled.as_str()) && err.contains("call"), "{err}");
        let json = serde_json::json!({ "type": "turn.exploded", "data": {} });
        let err = serde_json::from_value::<LifecycleEvent>(json).unwrap_err().to_string();
        assert!(err.contains("turn.exploded") && err.contains("is not one of"), "{err}");
    }
}
