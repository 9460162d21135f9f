//! The REST resources' bodies and queries (snake_case JSON, timestamps as integer
//! milliseconds).

use clade_core::{Agent, ApprovalStatus, AuditKind, TurnStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Spelled;

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct AgentResponse {
    /// Time-ordered UUIDv7.
    pub id: String,
    /// Unique per tenant: 1-64 lowercase letters, digits, `-` or `_`.
    pub handle: String,
    /// Shown to people; defaults to the handle.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The persona template the workspace is seeded from.
    pub template: String,
    /// The first message a creation with `task` sent, once stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<EventResponse>,
    /// A creation's answer: the default tools its template brought, granted or left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<TemplateToolResponse>,
}

/// A default tool of a new agent's template: a grant made with the agent, or one left out.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TemplateToolResponse {
    /// `allow` or `ask` (a person approves each call).
    pub effect: String,
    /// Tool pattern, such as `fs.*`.
    pub tool: String,
    /// Resource pattern (`*`: any).
    pub resource: String,
    /// Why it was not granted (beyond what the tenant may grant); absent when granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_out: Option<String>,
}

impl From<&Agent> for AgentResponse {
    fn from(agent: &Agent) -> Self {
        Self {
            id: agent.id.to_string(),
            handle: agent.handle.to_string(),
            name: agent.display_name.clone(),
            created_at: agent.created_at.as_millis(),
            template: agent.config.template.to_string(),
            task: None,
            tools: Vec::new(),
        }
    }
}

/// Body of `POST /v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentParams {
    #[schemars(pattern(clade_core::HANDLE_PATTERN))]
    pub handle: String,
    /// Display name (up to 200 characters, one line, not blank); defaults to the handle.
    #[serde(default)]
    #[schemars(extend("allOf" = [
        { "pattern": clade_core::DISPLAY_NAME_PATTERN },
        { "pattern": clade_core::NOT_BLANK_PATTERN }
    ]))]
    pub name: Option<String>,
    /// Persona template; defaults to `default`.
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN))]
    pub template: Option<String>,
    /// A first message, sent to the agent once it exists (from platform `hub`, channel
    /// `spawn`, actor `operator`): the answer's `task` names its event and session.
    #[serde(default)]
    #[schemars(length(min = 1, max = 65536), pattern(clade_core::NOT_BLANK_PATTERN))]
    pub task: Option<String>,
}

/// One page of agents.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct AgentListResponse {
    pub items: Vec<AgentResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The largest page a list gives.
pub const MAX_PAGE: u32 = 1000;
/// A list's page when its query names no `limit`.
pub const DEFAULT_PAGE: u32 = 100;

/// Query of `GET /v1/agents`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentsQuery {
    /// Page size.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page: the handle the next page starts after.
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/sessions/{id}/turns`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnsQuery {
    /// Page size.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page: the turn the next page starts after.
    #[serde(default)]
    #[schemars(extend("format" = "uuid"))]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/sessions/{id}/turns/{turn}/steps`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepsQuery {
    /// Page size.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page: the number of the last step it gave (steps are
    /// numbered from 1 in the order they were written, and a journal only grows at its end).
    #[serde(default)]
    #[schemars(range(min = 0, max = u64::MAX))]
    pub cursor: Option<u64>,
}

/// Every error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code; see docs/errors.md.
    pub code: String,
    /// What is wrong and what to do, for people.
    pub message: String,
}

/// Query of `GET /v1/usage`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this agent's calls (by handle).
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub agent: Option<String>,
    /// Unix milliseconds; default 30 days ago.
    #[serde(default)]
    #[schemars(range(min = i64::MIN, max = i64::MAX))]
    pub since: Option<i64>,
    /// Also per day (UTC): each item then names its `day`.
    #[serde(default)]
    pub by_day: bool,
    /// Also per hour (UTC): each item then names its `day` and `hour` (wins over `by_day`).
    #[serde(default)]
    pub by_hour: bool,
    /// Every tenant's usage, each item naming its `tenant` (with `agent`: each tenant's agent
    /// of that handle): the operator's token only (an admin token of the default tenant); to
    /// any other, the route is not found.
    #[serde(default)]
    pub all_tenants: bool,
}

/// Model usage summed per agent and model (and day, with `by_day`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct UsageResponse {
    pub since: i64,
    pub items: Vec<UsageItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct UsageItem {
    /// The tenant's name, in a report of every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The day (UTC, `YYYY-MM-DD`), in a report by day or by hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// The hour of that day (UTC, 0 to 23), in a report by hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 23))]
    pub hour: Option<u8>,
    /// Agent handle; absent for calls made for the tenant itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The configured model name.
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    /// Cost in millionths of a US dollar, from the configured prices.
    pub cost_micros: u64,
}

/// Where an event came from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceParams {
    /// e.g. `telegram`, `slack`, `http`, `cli`.
    #[schemars(pattern(clade_core::LABEL_PATTERN))]
    pub platform: String,
    /// A chat, room or thread id within the platform.
    #[schemars(pattern(clade_core::LABEL_PATTERN))]
    pub channel: String,
    /// Who sent it.
    #[schemars(pattern(clade_core::LABEL_PATTERN))]
    pub actor: String,
}

/// Body of `POST /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    { "required": ["source"], "properties": { "source": { "type": "object" } } },
    { "required": ["session"], "properties": { "session": { "type": "string" } } },
]))]
pub struct EventParams {
    /// Agent handle; when absent, the bindings in clade.yaml pick one from the source.
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN))]
    pub agent: Option<String>,
    /// Up to 65,536 characters, not all whitespace.
    #[schemars(length(min = 1, max = 65536), pattern(clade_core::NOT_BLANK_PATTERN))]
    pub text: String,
    /// Where it comes from; the session's own when `session` is given, else required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceParams>,
    /// Into this existing session (its id): the event goes to the session's agent, from its
    /// source. `agent` and `source`, if given too, must be the session's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub session: Option<String>,
    /// Repeating a key returns the original answer and never starts a second turn. The
    /// `Idempotency-Key` header works too.
    #[serde(default)]
    #[schemars(pattern(clade_core::LABEL_PATTERN))]
    pub idempotency_key: Option<String>,
    /// Answer only when the turn has finished (up to 120 s), with its reply.
    #[serde(default)]
    pub wait: bool,
}

/// Answer to `POST /v1/events`: 202 when stored, 200 with the reply when `wait` was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventResponse {
    pub event_id: String,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// How the turn ended (with `wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Spelled<TurnStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the agent or the session is paused: the event waits, stored, and its turn
    /// runs once the pause is lifted (a `wait` does not wait for it). Says how to lift it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplyBody {
    pub text: String,
    /// The model that answered (`scripted` means the offline provider, not a language model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionResponse {
    pub id: String,
    pub agent_id: String,
    pub platform: String,
    pub channel: String,
    pub actor: String,
    /// Where output without an explicit target goes.
    pub last_active_channel: String,
    /// The session's own queue mode, when one was set; otherwise its agent's applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_mode: Option<QueueMode>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `PATCH /v1/sessions/{id}`: the session's own settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionUpdate {
    /// `queue`, `coalesce` or `steer`; null or absent to follow the agent's mode
    /// (`sessions.agents.<handle>.queue_mode`, else `sessions.queue_mode`).
    #[serde(default)]
    pub queue_mode: Option<QueueMode>,
}

/// Messages arriving during a turn: `queue` runs them as the next turns, `coalesce` runs a
/// burst as one turn, `steer` injects them into the running turn between tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    Queue,
    Coalesce,
    Steer,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionListResponse {
    pub items: Vec<SessionResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    /// Only this agent's sessions (by handle).
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub agent: Option<String>,
    /// How many.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page. A session active again while pages are read
    /// moves to the front, so it may be missed or shown twice.
    #[serde(default)]
    #[schemars(pattern(r"^[0-9]{1,18}\.[0-9a-f]{32}$"))]
    pub cursor: Option<String>,
}

/// One turn, with the events it answered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnResponse {
    pub id: String,
    pub status: Spelled<TurnStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The agent-config revision the turn ran with: a hash of its persona files, model chain
    /// and tools; it changes whenever any of them does.
    pub config_revision: String,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    pub events: Vec<TurnEvent>,
    pub usage: TurnUsageBody,
    /// How many steps the turn's journal holds: its model calls, tool calls and resumes.
    /// `GET /v1/sessions/{id}/turns/{turn}/steps` lists them, a page at a time.
    pub step_count: u64,
}

/// What a turn's model calls consumed (tokens as reported by the provider, cost from the
/// configured prices).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnUsageBody {
    pub model_calls: u64,
    /// Including cached and cache-write tokens.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Millionths of a US dollar.
    pub cost_micros: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnEvent {
    pub id: String,
    pub seq: i64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnListResponse {
    pub items: Vec<TurnResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What compaction made of a session's older turns: a summary of every turn through
/// `through_turn`. The turns stay listed under `/turns`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SummaryResponse {
    /// The last turn it covers.
    pub through_turn: String,
    pub text: String,
    /// Turns folded into it, earlier summaries' included.
    pub turns: u32,
    /// The model that wrote it; absent when it was written without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Memory items saved from the turns it folded.
    pub memories: u32,
    /// Unix milliseconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SummaryListResponse {
    /// Newest first; the first is what the session's turns see.
    pub items: Vec<SummaryResponse>,
}

/// A value in a session's working memory: the agent's scratchpad, shown in its turns' context.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkingEntryResponse {
    pub name: String,
    pub value: String,
    /// 1 for the name's first write, one more for each after it.
    pub version: u32,
    /// The turn whose tool call wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// Unix milliseconds.
    pub written_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkingListResponse {
    /// The values held now, by name.
    pub items: Vec<WorkingEntryResponse>,
}

/// A tool an agent can call.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ToolInfo {
    /// Namespaced name, such as `fs.read`.
    pub name: String,
    pub description: String,
    /// `pure`, `idempotent` or `at_most_once`: what a crash recovery may repeat.
    pub effect: String,
    /// Touches files, processes or the network: denied unless a policy rule allows it.
    pub touches_host: bool,
    /// JSON Schema of the arguments.
    pub input_schema: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ToolListResponse {
    pub items: Vec<ToolInfo>,
}

/// Body of `POST /v1/agents/{handle}/prompt`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptPreviewParams {
    /// The message whose turn is previewed: up to 65,536 characters, not all whitespace.
    #[schemars(length(min = 1, max = 65536), pattern(clade_core::NOT_BLANK_PATTERN))]
    pub text: String,
    /// A session of the agent's, to preview the message as its next one (its history and
    /// working memory included); absent: the first message of a new session.
    #[serde(default)]
    pub session: Option<String>,
}

/// What the agent's model would be sent for a message, composed as its turn would compose
/// it; nothing is called or written.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PromptPreviewResponse {
    pub agent: String,
    /// The models the turn would try, in order.
    pub route: Vec<String>,
    /// The first model's provider and the model it asks for; absent when the route's first
    /// model is not configured.
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// The composed messages: `role` (`system`, `user`, `assistant`, `tool`) and `content`.
    pub messages: Vec<PromptMessage>,
    /// The names of the tools the call offers.
    pub tools: Vec<String>,
    /// What the first model's provider would send: the request body, or the prompt text of a
    /// model in process; absent when it cannot say.
    #[serde(default)]
    pub body: Option<String>,
    /// Bytes of `body`, else of the messages and tool schemas.
    pub bytes: u64,
    /// The request's tokens, estimated from its text.
    pub estimated_tokens: u64,
    /// Whether that fits what the model's window leaves a prompt and its tools; a provider
    /// refuses a prompt that does not, and the turn fails.
    pub fits: bool,
    /// The first model's context window, what a prompt may fill of it, and the tokens of tool
    /// schemas one call may offer.
    pub context_window: u32,
    pub prompt_room: u32,
    pub tool_tokens: u32,
}

/// One message of a previewed prompt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PromptMessage {
    pub role: String,
    pub content: String,
}

/// Body of `POST /v1/agents/{handle}/tools/{name}/call`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallParams {
    /// The tool's arguments; `{}` when absent.
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The end of one tool call: what the model would have received.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ToolCallResponse {
    pub content: String,
    pub is_error: bool,
    /// `allow` (ran) or `deny` (refused by policy, an operator or a timeout).
    pub decision: String,
}

/// A tool call waiting for (or decided by) an operator.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ApprovalResponse {
    pub id: String,
    /// Agent handle.
    pub agent: String,
    pub tool: String,
    /// What policy patterns match: a path, host or command line.
    pub resource: String,
    /// The exact arguments that run if approved.
    pub arguments: serde_json::Value,
    /// SHA-256 of tool and arguments; the executed call must match it.
    pub arguments_hash: String,
    /// Why it was asked.
    pub reason: String,
    pub status: Spelled<ApprovalStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalListResponse {
    pub items: Vec<ApprovalResponse>,
}

/// Query of `GET /v1/approvals`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// Only approvals of this status (default `pending`), or `all`.
    #[serde(default)]
    #[schemars(with = "Option<ApprovalFilter>")]
    pub status: Option<String>,
    /// How many, newest first.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
}

/// An approval list's `status` filter: a status, or `all` (its schema; the handler reads the
/// text and names the choices when it is none of them).
pub struct ApprovalFilter;

impl JsonSchema for ApprovalFilter {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("ApprovalFilter")
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let words: Vec<&str> =
            ApprovalStatus::ALL.iter().map(|s| s.as_str()).chain([APPROVALS_ALL]).collect();
        schemars::json_schema!({
            "type": "string",
            "enum": words,
            "default": ApprovalStatus::Pending.as_str(),
        })
    }
}

/// The approval list's filter for every status.
pub const APPROVALS_ALL: &str = "all";

/// Body of `POST /v1/approvals/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApprovalParams {
    /// `approve`, `deny`, or `approve_always` (also allows this tool on this resource for the
    /// agent from now on).
    #[schemars(extend("enum" = ["approve", "approve_always", "deny"]))]
    pub decision: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// A policy rule held by one agent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct GrantResponse {
    pub id: String,
    pub agent: String,
    /// `allow`, `ask` or `deny`.
    pub effect: String,
    /// Tool name pattern (`*` = any characters).
    pub tool: String,
    /// Resource pattern.
    pub resource: String,
    pub constraints: serde_json::Value,
    /// The grant this one was delegated from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub granted_by: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GrantListResponse {
    pub items: Vec<GrantResponse>,
}

/// Query of `GET /v1/grants`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    /// Only this agent's grants (by handle).
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub agent: Option<String>,
}

/// Body of `POST /v1/grants`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrantParams {
    /// Agent handle (the principal).
    #[schemars(pattern(clade_core::HANDLE_PATTERN))]
    pub agent: String,
    /// `allow` (default), `ask` or `deny`.
    #[serde(default)]
    #[schemars(extend("enum" = ["allow", "ask", "deny", null]))]
    pub effect: Option<String>,
    #[schemars(length(min = 1))]
    pub tool: String,
    /// Default `*`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub resource: Option<String>,
    /// What an allowed call may do beyond the sandbox's defaults.
    #[serde(default)]
    pub constraints: Option<GrantConstraints>,
    /// Delegate from this grant: the new one may only narrow it.
    #[serde(default)]
    #[schemars(extend("format" = "uuid"))]
    pub parent: Option<String>,
    /// Seconds until it expires, at most a hundred years.
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 0, max = MAX_GRANT_SECS))]
    pub expires_in_secs: Option<u64>,
}

/// What an allowed call may do beyond the sandbox's defaults (`tools.policy`'s `constraints`
/// in clade.yaml, the same fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantConstraints {
    /// `shell.exec`: the command may reach the network, through Clade's egress proxy, which
    /// refuses loopback, private, link-local and metadata addresses.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network: bool,
    /// `http.request` and a networked `shell.exec`: loopback, private, link-local and shared
    /// addresses may be reached too (cloud metadata never).
    #[serde(default, skip_serializing_if = "is_false")]
    pub private_network: bool,
    /// A networked `shell.exec`: only these destinations, as `host` or `host:port` patterns
    /// (`*.github.com`, `127.0.0.1:8080`); empty means any the address rules allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `shell.exec`: agent secrets passed as environment variables of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct AuditRecord {
    pub seq: i64,
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub kind: Spelled<AuditKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditResponse {
    pub items: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// Answer to `GET /v1/audit?verify=true`: whether the tenant's chain holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditVerifyResponse {
    /// Records checked.
    pub records: u64,
    pub ok: bool,
    /// The first record that does not chain.
    pub broken_at: Option<i64>,
    /// Why it does not.
    pub reason: Option<String>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this agent's records (by handle).
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub agent: Option<String>,
    /// Only this tool's records.
    #[serde(default)]
    pub tool: Option<String>,
    /// Unix milliseconds.
    #[serde(default)]
    #[schemars(range(min = i64::MIN, max = i64::MAX))]
    pub since: Option<i64>,
    /// Unix milliseconds.
    #[serde(default)]
    #[schemars(range(min = i64::MIN, max = i64::MAX))]
    pub until: Option<i64>,
    /// Records after this sequence number (the previous page's `next_after`).
    #[serde(default)]
    #[schemars(range(min = i64::MIN, max = i64::MAX))]
    pub after: Option<i64>,
    /// How many.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// Also verify the whole chain.
    #[serde(default)]
    pub verify: Option<bool>,
}

/// Query of `GET /v1/sessions/{id}/events`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct StreamQuery {
    /// As `Last-Event-ID`: the id of an event this stream sent (0: from the start).
    #[serde(default)]
    #[schemars(with = "Option<u64>", range(min = 0, max = u64::MAX))]
    pub after: Option<String>,
}

/// Query of `GET /v1/agents/{handle}/events`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentStreamQuery {
    /// As `Last-Event-ID`: the id of an event this stream sent (0: from the start). Absent,
    /// the stream starts with what happens next.
    #[serde(default)]
    #[schemars(with = "Option<u64>", range(min = 0, max = u64::MAX))]
    pub after: Option<String>,
    /// Only this session's events (one of the agent's).
    #[serde(default)]
    #[schemars(extend("format" = "uuid"))]
    pub session: Option<String>,
    /// Only events of this type (`turn.finished`, `agent.message.received`, ...).
    #[serde(default, rename = "type")]
    pub kind: Option<crate::Spelled<clade_core::EventKind>>,
    /// Also the model's text as it is written (`text.delta`) and tools' progress, which are
    /// passed on live and never replayed.
    #[serde(default)]
    pub deltas: bool,
}

/// The longest a grant may be made for: a hundred years, in seconds.
pub const MAX_GRANT_SECS: u64 = 100 * 365 * 24 * 3600;

/// An optional whole number as JSON Schema's `integer` has it: `60` or `60.0`, never `60.5`.
fn whole_number<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(input)? else { return Ok(None) };
    if let Some(whole) = number.as_u64() {
        return Ok(Some(whole));
    }
    match number.as_f64() {
        Some(float) if float.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&float) => {
            Ok(Some(float as u64))
        }
        _ => Err(serde::de::Error::custom(format!("{number} is not a whole number of 0 or more"))),
    }
}

/// A whole number as JSON Schema's `integer` has it, which must be there.
fn required_whole_number<'de, D: serde::Deserializer<'de>>(input: D) -> Result<u64, D::Error> {
    whole_number(input)?.ok_or_else(|| serde::de::Error::custom("a whole number is needed"))
}

/// A job name: lowercase letters and digits, then also `_`, `.` and `-`.
pub const JOB_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_.-]{0,63}$";
/// The shape of a schedule: an alias or `@every …`, or a cron expression of 5 or 6 fields.
/// (What each field may hold is checked by the server: `invalid_job`.)
pub const SCHEDULE_PATTERN: &str = r"^\s*(@\S+(\s+\S+)*|\S+(\s+\S+){4,5})\s*$";
/// Text with no control character but line breaks and tabs.
pub const NO_CONTROL_PATTERN: &str = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$";

/// Body of `POST /v1/agents/{handle}/jobs`: a job the agent runs on a schedule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobParams {
    /// One job per name per agent.
    #[schemars(pattern(JOB_NAME_PATTERN))]
    pub name: String,
    /// A cron expression (5 fields, or 6 with seconds first; names such as `MON` and `JAN`),
    /// an alias (`@hourly`, `@daily`, …) or `@every 10m`.
    #[schemars(length(min = 1, max = 256), pattern(SCHEDULE_PATTERN))]
    pub schedule: String,
    /// An IANA time zone the schedule is read in (`Europe/Berlin`); UTC when absent.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub zone: Option<String>,
    /// What becomes of scheduled times missed while nothing could fire them (the gateway was
    /// down, the job disabled): `skip`, `run_once` (the default) or `catch_up:<n>`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 32))]
    pub misfire: Option<String>,
    /// Where each fire goes: `new` (a session per fire), `session:<name>` (one named session;
    /// the default is the job's own name), `origin:<session id>` (the channel that session of
    /// the agent was last active on) or `flow:<name>[@<version>]` (a run of a stored flow; a
    /// token limited to some agents cannot name one).
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    pub target: Option<String>,
    /// Up to this many seconds added to each scheduled time (the same for the same time on
    /// every node), so that many jobs of one schedule do not fire in the same instant.
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 0, max = 3600))]
    pub jitter_secs: Option<u64>,
    /// What the agent is told at every fire; for a `flow:` target, the run's inputs as a
    /// JSON object (`{}` for none).
    #[schemars(length(min = 1, max = 16384))]
    pub prompt: String,
}

/// Body of `PATCH /v1/agents/{handle}/jobs/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateJobParams {
    /// A disabled job never fires; enabled again, the times it missed follow its misfire
    /// policy, and its count of failures in a row starts afresh.
    pub enabled: bool,
}

/// A scheduled job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobResponse {
    pub id: String,
    /// The agent's handle.
    pub agent: String,
    pub name: String,
    pub schedule: String,
    pub zone: String,
    pub misfire: String,
    pub target: String,
    pub jitter_secs: u32,
    pub prompt: String,
    pub enabled: bool,
    /// Why the scheduler disabled it (its schedule could not be read, its runs kept failing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When it fires next (Unix milliseconds), if it ever does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<i64>,
    /// The last scheduled time settled, fired or skipped.
    pub settled_at: i64,
    /// Scheduled times skipped under the misfire policy.
    pub skipped: u64,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobListResponse {
    pub items: Vec<JobResponse>,
}

/// Query of `GET /v1/agents/{handle}/jobs/{name}/runs`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct JobRunsQuery {
    /// How many of the latest runs.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
}

/// One time a job fired, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobRunResponse {
    pub scheduled_at: i64,
    pub fired_at: i64,
    /// Whether it delivered its envelope or started its flow run; when not, `error` says why.
    pub delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event it delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The turn that took it, once one has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_status: Option<Spelled<TurnStatus>>,
    /// The flow run it started (a job whose target is a flow), at `GET /v1/flows/runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_run_id: Option<String>,
    /// Where that run stands (absent once the run is deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_run_status: Option<Spelled<clade_core::ExecutionStatus>>,
}

/// The latest runs first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobRunListResponse {
    pub items: Vec<JobRunResponse>,
}

/// Body of `POST /v1/config`: the deployment's whole configuration, as clade.yaml's text.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfigParams {
    #[schemars(length(max = 1048576))]
    pub yaml: String,
    /// Call the new configuration's channel model once before writing it; a model that does
    /// not answer stops the apply (`invalid_config`, naming the smoke test).
    #[serde(default)]
    pub smoke: bool,
}

/// What applying a configuration did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApplyConfigResponse {
    /// False when the text is the one in force already.
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<ConfigRevisionResponse>,
    /// Changed sections a serving gateway takes only at its next start.
    pub at_restart: Vec<String>,
}

/// One applied configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfigRevisionResponse {
    pub revision: i64,
    pub sha256: String,
    pub applied_by: String,
    pub applied_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverts: Option<i64>,
    /// From the revision before.
    pub diff: String,
    pub yaml: String,
}

/// A node of the cluster, as its live leases in the store show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNodeResponse {
    /// Its name (`cluster.node`), its leases' holder.
    pub node: String,
    /// The shards it holds, in order.
    pub shards: Vec<i64>,
    /// The once-per-cluster work it runs: `outbox`, `scheduler`, `retention`,
    /// `memory_upkeep`, `channel_listeners`.
    pub duties: Vec<String>,
    /// How soon its first lease expires unless renewed, in ms; absent for a gateway running
    /// alone, whose lease never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<i64>,
    /// The turns a minute its shards ran lately (decayed over a minute), as it announces it;
    /// absent where no running node heard it (`clade node list` without a gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// The version of Clade it runs, as it announces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How long ago it last announced itself, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_ms_ago: Option<i64>,
    /// `gateway` (serves the API) or `worker` (`clade node join`: runs sessions only), as it
    /// announces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What a worker node paired with a cluster's gateway (`clade node join --hub`) is given to
/// join: the configuration the cluster runs and where its store is. Credentials stay out: the
/// store's password and NATS's come from the worker's own environment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterJoinResponse {
    /// The name the worker was paired as: its leases' holder.
    pub node: String,
    /// The cluster's clade.yaml, as the gateway runs it (its newest revision).
    pub config: String,
    /// The shared PostgreSQL store's URL, without its password.
    pub store: String,
}

/// The nodes holding leases, in name order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNodeListResponse {
    pub items: Vec<ClusterNodeResponse>,
}

/// The newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfigRevisionListResponse {
    pub items: Vec<ConfigRevisionResponse>,
}

/// One of an agent's settings, as the agent reads it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SettingResponse {
    pub key: String,
    /// What the agent reads: the environment variable's value, else the stored one, else the
    /// declared default (null if none).
    pub value: serde_json::Value,
    /// `environment`, `stored` or `default`.
    pub source: String,
    /// What it is for, as `clade.yaml` declares it.
    pub description: String,
    /// Whether the agent may change it with its tools.
    pub agent_writable: bool,
    /// The value stored for the agent, whether or not it is what is read.
    pub stored: Option<serde_json::Value>,
    pub updated_at: Option<i64>,
    pub updated_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SettingListResponse {
    pub items: Vec<SettingResponse>,
}

/// `PUT /v1/agents/{handle}/settings/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSettingParams {
    /// Any JSON value, at most 4 KiB as JSON.
    pub value: serde_json::Value,
}

/// `POST /v1/leases`: lease the tenant's events, one agent's, or one session's, to a paired
/// subscriber for a while; or let an operator paired `leased` act on them for a while.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = { "required": ["agent", "session"] }))]
pub struct CreateLeaseParams {
    /// The paired component's name (the operator pairs it with `clade pair subscriber`, or
    /// `clade pair cli --leased`).
    pub peer: String,
    /// What kind of component `peer` is.
    #[serde(default)]
    pub kind: LeaseeKind,
    /// Only this agent's events (its handle).
    #[serde(default)]
    #[schemars(pattern(clade_core::HANDLE_PATTERN))]
    pub agent: Option<String>,
    /// Only this session's events (its id).
    #[serde(default)]
    #[schemars(extend("format" = "uuid"))]
    pub session: Option<String>,
    /// How long the lease runs: 1 s to 30 days.
    #[serde(deserialize_with = "required_whole_number")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub ttl_secs: u64,
}

/// The kinds of paired component a lease goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LeaseeKind {
    /// Sent the scope's events (`clade pair subscriber`).
    #[default]
    Subscriber,
    /// May read, send to and follow the scope with its key (`clade pair cli --leased`).
    Operator,
}

impl LeaseeKind {
    /// As the store names the kind of a paired component.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseeKind::Subscriber => "subscriber",
            LeaseeKind::Operator => "operator",
        }
    }
}

/// A lease to a paired component.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LeaseResponse {
    pub id: String,
    /// The paired component's name.
    pub peer: String,
    /// `subscriber` or `operator`.
    pub kind: String,
    /// `tenant`, `agent` or `session`.
    pub scope: String,
    /// The agent's handle, for an agent's lease.
    pub agent: Option<String>,
    /// The session's id, for a session's lease.
    pub session: Option<String>,
    /// Unix milliseconds.
    pub granted_at: i64,
    pub expires_at: i64,
    pub granted_by: String,
    /// Whether it is in force now.
    pub live: bool,
    pub ended_at: Option<i64>,
    /// `revoked`, `expired`, `session deleted`, `agent deleted`, `unpaired`, or
    /// `disconnected: …` (the subscriber stopped answering).
    pub ended_why: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LeaseListResponse {
    pub items: Vec<LeaseResponse>,
}

/// An isolation key: no control characters (at most 256 of them).
pub const MEMORY_SCOPE_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";

/// Who or what wrote a memory item.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemoryProvenance {
    /// The session it was saved in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The turn it was saved in or mined from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
    /// The tool whose output it came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Who stored it: an operator's token, the agent's tools, `compaction`, `ingestion`.
    pub by: String,
}

/// One item of an agent's long-term memory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemoryResponse {
    pub id: String,
    pub kind: Spelled<clade_core::MemoryKind>,
    pub content: String,
    /// The isolation key it is kept under; empty for the agent's global memory.
    pub scope: String,
    pub importance: f64,
    pub confidence: f64,
    /// Whether it came from content nobody vouches for (a tool's output, a web page): shown
    /// to the agent as quoted data.
    pub untrusted: bool,
    /// Decay: 1 when written or used, falling as it goes unused.
    pub strength: f64,
    pub provenance: MemoryProvenance,
    /// The embeddings model its vector was made with; absent when it has none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub accessed_at: i64,
    /// When upkeep pruned it (out of recall and listings; restorable until purged); absent
    /// for a live item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_at: Option<i64>,
    /// Why it was pruned: `decayed`, or `merged into <id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_why: Option<String>,
}

/// What `POST /v1/agents/{handle}/memories/upkeep` did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemoryUpkeepResponse {
    /// Repeats merged into the items they repeat.
    pub merged: u64,
    /// Items whose strength fell since the last upkeep.
    pub faded: u64,
    /// Items pruned for having faded past `memory.upkeep.prune_below`.
    pub pruned: u64,
    /// Items pruned long ago, deleted for good.
    pub purged: u64,
    /// Passing items (observations, events) read into lasting ones by the `cortex` route.
    pub consolidated: u64,
    /// Lasting items that consolidation saved.
    pub lasting: u64,
    /// Live items left.
    pub live: u64,
    /// When the next upkeep is due, in milliseconds since the epoch; absent: after the next
    /// write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemoryListResponse {
    pub items: Vec<MemoryResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/events`: the tenant's lifecycle events, oldest first.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventHistoryQuery {
    /// Only the events of this agent's sessions (its handle).
    #[serde(default)]
    pub agent: Option<String>,
    /// Only the events of this session.
    #[serde(default)]
    pub session: Option<String>,
    /// Only events of this type (`turn.finished`, `agent.message.received`, ...).
    #[serde(default, rename = "type")]
    pub kind: Option<crate::Spelled<clade_core::EventKind>>,
    /// Only events created at or after this time (Unix milliseconds).
    #[serde(default)]
    pub since: Option<i64>,
    /// How many.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (an event's `seq`).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub cursor: Option<i64>,
}

/// `GET /v1/events`: a page of lifecycle events, each as a webhook subscriber receives it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventHistoryResponse {
    pub items: Vec<crate::WebhookEvent>,
    /// Pass as `cursor` for the events after this page; absent when there were no more yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// `POST /v1/agents/{handle}/pause` and `POST /v1/sessions/{id}/pause`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseParams {
    /// Why, for whoever looks at its status.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub reason: Option<String>,
}

/// A pause in force: no new turn starts where it holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PauseResponse {
    /// The paused session; absent when the whole agent is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub paused_at: i64,
}

/// Answer to `POST /v1/agents/{handle}/resume`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UnpauseResponse {
    /// Whether there was a pause to lift.
    pub unpaused: bool,
}

/// A session of an agent with work in flight or a pause.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionActivityResponse {
    pub session: String,
    pub platform: String,
    pub channel: String,
    pub actor: String,
    /// `running` (a turn runs), `waiting` (events wait for a turn) or `paused`.
    pub state: String,
    /// Events received and not yet answered.
    pub open_events: u64,
    /// The turn running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
    /// How long that turn has run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_age_ms: Option<i64>,
    /// Steps its journal holds (model calls, tool calls, resumes).
    pub turn_steps: u64,
}

/// `GET /v1/agents/{handle}/status`: what an agent runs now.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentStatusResponse {
    pub agent: String,
    /// The agent's own pause (every session), when paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseResponse>,
    /// Its sessions with work in flight or a pause of their own, most recently active first
    /// (at most 100).
    pub sessions: Vec<SessionActivityResponse>,
}

/// A message one agent of a tenant sent another (`agent.send`, `agent.ask`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentMessageResponse {
    pub id: String,
    pub kind: Spelled<clade_core::MessageKind>,
    /// The sender's handle (empty once it is deleted).
    pub from: String,
    /// The receiver's handle.
    pub to: String,
    /// The session and turn it was sent from; absent when sent outside a turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_turn: Option<String>,
    /// The receiver's session with the sender, and the event the message is in it.
    pub to_session: String,
    pub event: String,
    /// Absent once retention deleted its event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// How many messages between agents led to it, itself included.
    pub depth: u32,
    /// Unix milliseconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentMessageListResponse {
    /// Newest first.
    pub items: Vec<AgentMessageResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/agents/{handle}/messages`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMessagesQuery {
    /// How many.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/agents/{handle}/runs`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// How many, newest first.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// Only runs of this kind (turns are listed only this way).
    #[serde(default)]
    pub kind: Option<Spelled<clade_core::ExecutionKind>>,
    /// Only runs that have not ended.
    #[serde(default)]
    pub open: Option<bool>,
}

/// A durable execution: a turn, a branch's or worker's run, a scheduled fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunResponse {
    pub id: String,
    pub kind: Spelled<clade_core::ExecutionKind>,
    pub status: Spelled<clade_core::ExecutionStatus>,
    pub agent_id: String,
    /// The session it belongs to (for a branch or worker: the session that started it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// For a branch's or worker's run: the branch or worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<ForkResponse>,
}

/// A branch or worker: a session of its own that reports to the session that started it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForkResponse {
    /// Its own session's id: the branch's or worker's id.
    pub id: String,
    pub parent_session: String,
    pub task: String,
    /// The tools a worker may use; empty: all of its agent's.
    pub tools: Vec<String>,
    /// Its current run.
    pub execution: String,
    /// A worker's latest status line, and when it was set (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunListResponse {
    pub items: Vec<RunResponse>,
}

/// `branch` or `worker`: the runs a session starts of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkKind(pub clade_core::ExecutionKind);

impl ForkKind {
    const KINDS: [clade_core::ExecutionKind; 2] =
        [clade_core::ExecutionKind::Branch, clade_core::ExecutionKind::Worker];
}

impl<'de> Deserialize<'de> for ForkKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::KINDS.into_iter().find(|k| k.as_str() == text).map(ForkKind).ok_or_else(|| {
            let kinds: Vec<&str> = Self::KINDS.iter().map(|k| k.as_str()).collect();
            serde::de::Error::custom(format!("{text:?} is not one of {}", kinds.join(", ")))
        })
    }
}

impl JsonSchema for ForkKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("ForkKind")
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let kinds: Vec<&str> = Self::KINDS.iter().map(|k| k.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": kinds })
    }
}

/// Body of `POST /v1/sessions/{id}/forks`: starts a branch or a worker of the session.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartForkParams {
    pub kind: ForkKind,
    /// Its task: some text that is not only spaces.
    #[schemars(length(min = 1, max = 8192), pattern(clade_core::NOT_BLANK_PATTERN))]
    pub task: String,
    /// A worker's tools, by name (all of its agent's when absent).
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

/// Query of `GET /v1/agents/{handle}/memories`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoriesQuery {
    /// The isolation key whose items to list; absent for the agent's global memory.
    #[serde(default)]
    #[schemars(length(max = 256), pattern(MEMORY_SCOPE_PATTERN))]
    pub scope: Option<String>,
    /// Only items of this kind.
    #[serde(default)]
    pub kind: Option<Spelled<clade_core::MemoryKind>>,
    /// How many.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    #[schemars(pattern(r"^[0-9]{1,18}\.[0-9a-f]{32}$"))]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/agents/{handle}/memories/pruned`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrunedMemoriesQuery {
    /// How many, the latest pruned first.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
}

/// `POST /v1/agents/{handle}/memories`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemoryParams {
    /// What to remember: text, at most 4 KiB, no control characters but line breaks and tabs.
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("allOf" = [
        { "pattern": clade_core::NOT_BLANK_PATTERN },
        { "pattern": NO_CONTROL_PATTERN }
    ]))]
    pub content: String,
    /// Default `fact`.
    #[serde(default)]
    pub kind: Option<Spelled<clade_core::MemoryKind>>,
    /// The isolation key to keep it under; absent for the agent's global memory.
    #[serde(default)]
    #[schemars(length(max = 256), pattern(MEMORY_SCOPE_PATTERN))]
    pub scope: Option<String>,
    /// 0 to 1, default 0.5.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub importance: Option<f64>,
    /// 0 to 1, default 0.8.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: Option<f64>,
    /// The tool whose output it came from: the item is then kept as unverified.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub source_tool: Option<String>,
}

/// `POST /v1/sessions/{id}/memories`: an item learnt from one of the session's turns (by a
/// miner running as its own process). The agent, the isolation key and the provenance come
/// from the session, never from the caller.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionMemoryParams {
    /// What to remember: text, at most 4 KiB, no control characters but line breaks and tabs.
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("allOf" = [
        { "pattern": clade_core::NOT_BLANK_PATTERN },
        { "pattern": NO_CONTROL_PATTERN }
    ]))]
    pub content: String,
    /// The session's turn it was learnt from (recorded as its provenance).
    #[serde(default)]
    pub turn: Option<String>,
    /// Default `fact`.
    #[serde(default)]
    pub kind: Option<Spelled<clade_core::MemoryKind>>,
    /// 0 to 1, default 0.5.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub importance: Option<f64>,
    /// 0 to 1, default 0.6 (mined, not stated to the operator).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: Option<f64>,
    /// The tool whose output it came from: the item is then kept as unverified.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub source_tool: Option<String>,
}

/// The most items one `POST /v1/sessions/{id}/memories/batch` saves.
pub const MAX_MEMORY_BATCH: usize = 100;

/// `POST /v1/sessions/{id}/memories/batch`: items learnt from the session, saved in order in
/// one request (their texts embedded together).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionMemoriesParams {
    /// 1 to 100 items, each as `POST /v1/sessions/{id}/memories` takes one. Each is checked
    /// on its own: one that breaks a rule of that route (its content, importance, confidence)
    /// is answered in its place (422), and holds up no other; so the items' schema states
    /// their fields, not those rules.
    #[schemars(length(min = 1, max = MAX_MEMORY_BATCH), schema_with = "batch_items")]
    pub items: Vec<SessionMemoryParams>,
}

/// The schema of a batch's items: [`SessionMemoryParams`]' fields, without the value rules
/// each item is checked against in its own answer.
fn batch_items(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut item = SessionMemoryParams::json_schema(generator);
    if let Some(fields) = item.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for name in ["content", "importance", "confidence"] {
            if let Some(field) = fields.get_mut(name).and_then(|f| f.as_object_mut()) {
                for rule in ["minimum", "maximum", "minLength", "maxLength", "allOf"] {
                    field.remove(rule);
                }
            }
        }
    }
    schemars::json_schema!({ "type": "array", "items": item })
}

/// What saving one item of a batch did: `saved` for a status under 300, `error` otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SavedMemoryResult {
    /// As the single-item route would answer it: 201 `created` or `linked`, 200 `merged`,
    /// 422 refused (`invalid_memory`, `memory_full`); or, rarely, what that route answers
    /// when the store fails or the agent is deleted meanwhile (404, 5xx: worth a retry).
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SavedMemoryResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// What saving a batch did, item by item in the order sent. An item refused holds up no
/// other.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SavedMemoriesResponse {
    pub results: Vec<SavedMemoryResult>,
}

/// How a turn is mined for memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MinerKind {
    /// The `cortex` model route, asked what is worth remembering (charged to the agent).
    Model,
    /// The sentences people state about themselves, their plans, decisions, numbers and
    /// dates, without a model.
    Heuristic,
}

/// `POST /v1/sessions/{id}/turns/{turn}/mine`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MineTurnParams {
    /// Default `model`.
    #[serde(default)]
    pub miner: Option<MinerKind>,
}

/// One item a turn holds worth remembering, not yet saved.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MinedMemory {
    pub kind: Spelled<clade_core::MemoryKind>,
    pub content: String,
    /// 0 to 1.
    pub importance: f64,
}

/// What a turn holds worth remembering. Each item, with the turn's id as its `turn`, is what
/// `POST /v1/sessions/{id}/memories/batch` takes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MinedTurnResponse {
    pub items: Vec<MinedMemory>,
    /// The miner that found them: `heuristic` when `model` was asked and the model failed
    /// (unreachable, over budget, an answer that is not a list of items).
    pub miner: MinerKind,
}

/// What saving an item did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SavedMemoryResponse {
    pub memory: MemoryResponse,
    /// `created`; `merged` (it repeated an item of the same kind, which now holds this
    /// wording: `memory` is that item); or `linked` (it repeated an item of another kind, and
    /// was stored linked to it, `linked_to`).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_to: Option<String>,
}

/// `POST /v1/agents/{handle}/memories/search`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchMemoriesParams {
    /// What to look for, in words.
    #[schemars(length(max = 4096))]
    pub query: String,
    /// The isolation key searched beside the agent's global memory (as a conversation under
    /// that key recalls); absent for the global memory alone.
    #[serde(default)]
    #[schemars(length(max = 256), pattern(MEMORY_SCOPE_PATTERN))]
    pub scope: Option<String>,
    /// Only these kinds.
    #[serde(default)]
    pub kinds: Vec<Spelled<clade_core::MemoryKind>>,
    /// Only items updated at or after this time (Unix milliseconds).
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 0, max = 9_007_199_254_740_991u64))]
    pub since: Option<u64>,
    /// How many, default 10.
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u64>,
}

/// One item a search found, with why.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecalledMemory {
    pub memory: MemoryResponse,
    /// Higher is better; comparable within one search only.
    pub score: f64,
    /// Why it matched: its words, its meaning, or a link to a better hit.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemorySearchResponse {
    pub items: Vec<RecalledMemory>,
    /// `hybrid` (full text, vectors and links), or `full_text` when no embeddings model is
    /// configured.
    pub mode: String,
}

/// `POST /v1/agents/{handle}/memories/{id}/links`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkMemoryParams {
    /// The other item's id.
    #[schemars(length(max = 64))]
    pub to: String,
    pub kind: Spelled<clade_core::LinkKind>,
    /// 0 to 1, default 1.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemoryLinkResponse {
    pub from: String,
    pub to: String,
    pub kind: Spelled<clade_core::LinkKind>,
    pub weight: f64,
    pub created_at: i64,
}

/// One chat channel's health (`GET /v1/channels`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelStatus {
    /// `telegram`.
    pub platform: String,
    /// The bot's name in `clade.yaml`.
    pub name: String,
    /// `polling` or `webhook`.
    pub mode: String,
    /// `starting` (not yet heard from the platform), `connected` (its last exchange went
    /// through) or `failing` (retried with back-off; `last_error` says why).
    pub state: String,
    /// When the platform last answered (Unix milliseconds).
    #[serde(default)]
    pub last_ok_at: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Messages taken as events since the gateway started (redeliveries not counted).
    pub received: u64,
    /// Replies sent to the platform since the gateway started.
    pub sent: u64,
    /// Messages no binding routed to an agent.
    pub unrouted: u64,
    /// Updates that could not be read.
    pub malformed: u64,
}

/// `GET /v1/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelListResponse {
    pub items: Vec<ChannelStatus>,
}

/// Body of `POST /v1/flows/check` and `POST /v1/flows`: a flow file's text (`*.flow.yaml`,
/// see `docs/flow.schema.json`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowCheckParams {
    /// The flow file's text, at most 1 MiB.
    pub flow: String,
    /// The file's name, for the problems' places (`flow.yaml` when absent).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub file: Option<String>,
}

/// One problem of a flow file, at its place (line and column from 1; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowProblem {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Answer of `POST /v1/flows/check`: every problem found, or the flow's tasks in run order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowCheckResponse {
    /// Whether the flow has no problem.
    pub ok: bool,
    pub problems: Vec<FlowProblem>,
    /// The flow's name, when it checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its tasks in the order the file runs them, when it checks.
    pub tasks: Vec<String>,
}

/// Body of `POST /v1/flows/runs`: a flow to run and its inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartFlowRunParams {
    /// The flow file's text, at most 1 MiB; the run is pinned to it.
    pub flow: String,
    /// The file's name, for errors (`flow.yaml` when absent).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub file: Option<String>,
    /// The flow's inputs by name, each of its declared type; those not given take their
    /// defaults.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The highest version number a request may name (a flow keeps at most 1,000 versions).
pub const MAX_FLOW_VERSION: u64 = 1_000_000;

/// A stored flow's version (`POST /v1/flows`, `GET /v1/flows[/{name}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowResponse {
    /// The flow file's `name`.
    pub name: String,
    /// 1, 2, …: each save of a changed text makes the next.
    pub version: i64,
    /// The text's SHA-256, hex.
    pub sha256: String,
    /// Who saved it (the token's name).
    pub saved_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Its tasks in run order.
    pub tasks: Vec<String>,
    /// The flow file's text (`GET /v1/flows/{name}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Answer of `GET /v1/flows` (each flow's newest version) and `GET /v1/flows/{name}/versions`
/// (every version, newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowListResponse {
    pub flows: Vec<FlowResponse>,
}

/// Query of `GET /v1/flows/{name}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowVersionQuery {
    /// The version to show; the newest when absent.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_FLOW_VERSION))]
    pub version: Option<u64>,
}

/// Body of `POST /v1/flows/{name}/runs`: which version to run, and its inputs.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartStoredFlowRunParams {
    /// The version to run, pinned for the whole run; the newest when absent.
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1, max = MAX_FLOW_VERSION))]
    pub version: Option<u64>,
    /// The flow's inputs by name, each of its declared type; those not given take their
    /// defaults.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Query of `GET /v1/flows/runs`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowRunsQuery {
    /// How many, newest first.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    pub limit: Option<u32>,
}

/// What one task of a flow run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowTaskResponse {
    pub status: Spelled<clade_core::FlowTaskStatus>,
    /// Its answer: text, or the JSON value its output schema checked (`null` until then).
    pub output: serde_json::Value,
    /// Every iteration's output, for a task in a loop.
    pub outputs: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Questions asked, retries included.
    pub attempts: u32,
    /// The turns that answered, oldest first.
    pub turns: Vec<String>,
}

/// A flow run: where it stands and what each task did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowRunResponse {
    pub id: String,
    /// The flow's name.
    pub flow: String,
    /// The stored flow's version the run is pinned to (absent for a flow given inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The run this one runs again (`POST /v1/flows/runs/{id}/retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// The scheduled job whose fire started it (a job whose target is `flow:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_by: Option<FlowRunScheduledBy>,
    pub status: Spelled<clade_core::ExecutionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub inputs: std::collections::BTreeMap<String, serde_json::Value>,
    /// Each task by id, in the file's run order.
    pub tasks: Vec<FlowTaskEntry>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// What its tasks' model calls spent so far (`GET /v1/flows/runs/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<FlowUsage>,
}

/// The job fire that started a flow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FlowRunScheduledBy {
    pub job_id: String,
    /// The job's name (`GET /v1/agents/{handle}/jobs/{name}`).
    pub job: String,
    /// The scheduled time that fired, Unix milliseconds.
    pub scheduled_at: i64,
}

/// What a flow run's model calls spent, every task's turns summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowUsage {
    pub model_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// By the price table of each model; 0 for models without prices.
    pub cost_usd: f64,
}

/// One task of a flow run, with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowTaskEntry {
    pub id: String,
    #[serde(flatten)]
    pub result: FlowTaskResponse,
}

/// Answer of `GET /v1/flows/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowRunListResponse {
    pub runs: Vec<FlowRunResponse>,
}

/// `GET /v1/agents/{handle}/lineage`: the agents that made this one, and those it made.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LineageResponse {
    pub agent: String,
    /// Handles of the agents that made it, nearest first (its parent, then its parent's...).
    pub ancestors: Vec<String>,
    /// The agents it made, each with those it made in turn.
    pub children: Vec<LineageNode>,
}

/// An agent in a lineage tree, with the agents it made.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LineageNode {
    pub handle: String,
    pub children: Vec<LineageNode>,
}
