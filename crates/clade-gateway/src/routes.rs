//! Every route, declared once: its method and path, its handler, the scopes that may call it,
//! and what it takes and answers. The router ([`crate::router`]), the scope check
//! (`auth.rs`, through [`crate::scopes`]) and the OpenAPI document ([`crate::openapi`]) are all
//! read from [`OPERATIONS`], so a route cannot be served without being documented, documented
//! without being served, or called without a scope check.
//!
//! An operation's query parameters come from its query type's schema (the type its handler
//! extracts), its bodies from the request and response types (`clade-protocol`); only path and
//! header parameters and the prose are written here.

use axum::routing::{MethodRouter, delete, get, patch, post, put};
use clade_core::Scope::{self, Admin, Approve, Operate, Read, Send};
use clade_protocol as api;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::{
    AppState, agents, channels, cluster, config, console, control, debugging, events, flows, hooks,
    jobs, leases, mcp, memories, messages, openai, prompt, runs, sessions, settings, tools, usage,
    ws,
};

/// A schema built by the document's one generator: a `$ref` to a component for a named type.
pub(crate) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One method on one path.
pub struct Operation {
    /// `GET`, `POST`, …
    pub method: &'static str,
    /// As routed, with `{…}` parameters.
    pub path: &'static str,
    /// Any one of these lets a token call it; empty for the public routes (no token).
    pub scopes: &'static [Scope],
    pub summary: &'static str,
    pub description: Option<&'static str>,
    /// Path and header parameters.
    pub(crate) params: &'static [Param],
    /// The query type its handler extracts: one parameter per field.
    pub(crate) query: Option<SchemaFn>,
    /// The body type its handler extracts.
    pub(crate) body: Option<SchemaFn>,
    /// What it answers, besides the statuses every /v1 route may answer (added by
    /// `openapi.rs`).
    pub(crate) responses: &'static [Reply],
    pub(crate) handler: fn() -> MethodRouter<AppState>,
}

/// A path or header parameter.
pub(crate) struct Param {
    pub name: &'static str,
    pub location: &'static str,
    pub required: bool,
    pub description: Option<&'static str>,
    pub schema: SchemaFn,
}

/// One documented answer.
pub(crate) struct Reply {
    pub status: &'static str,
    pub description: &'static str,
    pub body: Option<SchemaFn>,
    /// A body that is not JSON (`text/event-stream`).
    pub media: Option<&'static str>,
}

fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The schema of a query type itself, whose fields become parameters.
fn fields<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

const fn ok(status: &'static str, description: &'static str, body: SchemaFn) -> Reply {
    Reply { status, description, body: Some(body), media: None }
}

const fn empty(status: &'static str, description: &'static str) -> Reply {
    Reply { status, description, body: None, media: None }
}

/// An error of the OpenAI-compatible routes, in OpenAI's shape.
const fn openai_error(status: &'static str, description: &'static str) -> Reply {
    Reply { status, description, body: Some(of::<api::openai::OpenAiErrorResponse>), media: None }
}

const fn error(status: &'static str, description: &'static str) -> Reply {
    Reply { status, description, body: Some(of::<api::ErrorResponse>), media: None }
}

/// What saving a memory item answers, by whichever route.
const MEMORY_CREATED: Reply = ok(
    "201",
    "stored (`created`, or `linked` to a near-duplicate of another kind)",
    of::<api::SavedMemoryResponse>,
);
const MEMORY_MERGED: Reply = ok(
    "200",
    "it repeated an item of the same kind, which now holds this wording (`merged`)",
    of::<api::SavedMemoryResponse>,
);

fn handle_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": clade_core::HANDLE_PATTERN, "maxLength": 64 })
}

/// A stored flow's name: a handle, but not a word of `/v1/flows/…`'s own.
fn flow_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": clade_core::HANDLE_PATTERN,
        "maxLength": 64,
        "not": { "enum": clade_flow::RESERVED_NAMES },
    })
}

fn uuid_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "uuid" })
}

fn text_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string" })
}

fn stream_id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 0, "maximum": u64::MAX })
}

fn words(words: &'static [&'static str]) -> Schema {
    json_schema!({ "type": "string", "enum": words })
}

fn audit_answer(generator: &mut SchemaGenerator) -> Schema {
    let page = generator.subschema_for::<api::AuditResponse>();
    let verified = generator.subschema_for::<api::AuditVerifyResponse>();
    json_schema!({ "oneOf": [page, verified] })
}

const fn path(name: &'static str, schema: SchemaFn) -> Param {
    Param { name, location: "path", required: true, description: None, schema }
}

const HANDLE: Param = path("handle", handle_schema);
const SESSION: Param = path("id", uuid_schema);
const ID: Param = path("id", uuid_schema);
const TOOL: Param = path("name", text_schema);
const TURN: Param = path("turn", uuid_schema);
const JOB: Param = path("name", job_name_schema);
const REVISION: Param = path("revision", revision_schema);
const SETTING: Param = path("key", setting_key_schema);
const MEMORY: Param = path("id", uuid_schema);
const FLOW: Param = path("name", flow_name_schema);
/// A Server-Sent Events stream's answer.
const SSE_STREAM: Reply = Reply {
    status: "200",
    description: "the stream",
    body: None,
    media: Some("text/event-stream"),
};

/// Where a stream resumes (Server-Sent Events' own header).
const LAST_EVENT_ID: Param = Param {
    name: "Last-Event-ID",
    location: "header",
    required: false,
    description: Some("the id of the last event this stream sent; 0 from the start"),
    schema: stream_id_schema,
};

fn setting_key_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": clade_core::SETTING_KEY_PATTERN })
}

fn revision_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 1, "maximum": i64::MAX })
}

/// A job's name as a path names it: a job's own, or (`_heartbeat`) one `clade.yaml` declares.
fn job_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^_?[a-z0-9][a-z0-9_.-]{0,63}$" })
}

/// The console sign-in's CSRF token, which every change of a console's sign-in carries.
const CONSOLE_CSRF: Param = Param {
    name: "X-Clade-Csrf",
    location: "header",
    required: true,
    description: Some("the sign-in's `csrf`"),
    schema: text_schema,
};

/// The WebSocket handshake's headers (RFC 6455), so a client generated from the document
/// sends a real upgrade.
const WS_HEADERS: &[Param] = &[
    Param {
        name: "Connection",
        location: "header",
        required: true,
        description: None,
        schema: |_| words(&["Upgrade"]),
    },
    Param {
        name: "Upgrade",
        location: "header",
        required: true,
        description: None,
        schema: |_| words(&["websocket"]),
    },
    Param {
        name: "Sec-WebSocket-Version",
        location: "header",
        required: true,
        description: None,
        schema: |_| words(&["13"]),
    },
    Param {
        name: "Sec-WebSocket-Key",
        location: "header",
        required: true,
        description: None,
        schema: |_| json_schema!({ "type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$" }),
    },
];

/// An operation with nothing but its route and prose; the table fills in the rest.
const fn op(
    method: &'static str,
    path: &'static str,
    scopes: &'static [Scope],
    summary: &'static str,
    handler: fn() -> MethodRouter<AppState>,
) -> Operation {
    Operation {
        method,
        path,
        scopes,
        summary,
        description: None,
        params: &[],
        query: None,
        body: None,
        responses: &[],
        handler,
    }
}

/// What the MCP routes answer.
const MCP_REPLIES: &[Reply] = &[
    Reply {
        status: "200",
        description: "the JSON-RPC response (a `result` or an `error`); a `tools/call` with a progress token, from a client that accepts `text/event-stream`, is answered as a stream: `notifications/progress` with the answer's text as it is written, then the response",
        body: Some(of::<api::mcp::McpResponse>),
        media: Some("text/event-stream"),
    },
    empty("202", "a notification, taken"),
    mcp_error(
        "400",
        "not one JSON-RPC 2.0 request or notification, or an MCP-Protocol-Version this server does not speak",
    ),
    mcp_error("404", "no agent of that handle that the token reaches"),
    error("413", "body too large"),
];

const MCP_DESCRIPTION: &str = "Each agent is a tool named by its handle: `tools/call` sends its `message` to the agent in the conversation `session` names (`send` scope) and answers with the reply, as text and as `structuredContent` (`reply`, `session_id`, `turn_id`). Sessions are resources, `clade://sessions/<id>`, read as Markdown transcripts (`read` scope). MCP revisions 2024-11-05 to 2025-11-25; no MCP session is kept (every request carries its token), so there is no `Mcp-Session-Id` and `GET` answers 405. `clade mcp serve` bridges this route to stdio.";

/// A JSON-RPC error of the MCP routes.
const fn mcp_error(status: &'static str, description: &'static str) -> Reply {
    Reply { status, description, body: Some(of::<api::mcp::McpResponse>), media: None }
}

/// Every route the gateway serves.
pub static OPERATIONS: &[Operation] = &[
    Operation {
        responses: &[empty("200", "alive")],
        ..op("GET", "/healthz", &[], "Liveness: the process is up", || get(crate::healthz))
    },
    Operation {
        responses: &[
            ok("200", "ready or degraded", of::<api::ReadinessResponse>),
            ok("503", "store unavailable", of::<api::ReadinessResponse>),
        ],
        ..op(
            "GET",
            "/readyz",
            &[],
            "Readiness: the store answers. `sandbox` reports the sandbox's self-check (off, checking, ready, or broken with its reason); a broken sandbox makes the status `degraded`: chat works, host-touching tools are refused",
            || get(crate::readyz),
        )
    },
    Operation {
        responses: &[Reply {
            status: "200",
            description: "the console's page",
            body: None,
            media: Some("text/html"),
        }],
        ..op(
            "GET",
            "/console",
            &[],
            "The web console: sign in with a token, then see and steer what it reaches, through these same routes",
            || get(console::page),
        )
    },
    Operation {
        responses: &[Reply {
            status: "200",
            description: "the console's script",
            body: None,
            media: Some("text/javascript"),
        }],
        ..op("GET", "/console/assets/console.js", &[], "The console's script", || {
            get(console::script)
        })
    },
    Operation {
        responses: &[Reply {
            status: "200",
            description: "the console's style",
            body: None,
            media: Some("text/css"),
        }],
        ..op("GET", "/console/assets/console.css", &[], "The console's style", || {
            get(console::style)
        })
    },
    Operation {
        body: Some(of::<api::console::ConsoleSignIn>),
        responses: &[
            ok(
                "200",
                "signed in: the `clade_console` cookie (`HttpOnly`, `SameSite=Strict`) names the sign-in",
                of::<api::console::ConsoleSessionResponse>,
            ),
            error("400", "not a sign-in body"),
            error("401", "not a token of this gateway"),
            error("403", "a token that cannot read, or a request from another origin"),
            error("429", "the gateway holds as many console sign-ins as it takes (10,000)"),
            error("413", "body too large"),
            error("415", "body is not JSON"),
            error("503", "the store is unavailable; retry later"),
        ],
        ..op(
            "POST",
            "/console/session",
            &[],
            "Sign in to the console with a token, which stays on the gateway; the cookie then stands for it on the `/v1` routes (same origin only), and a request that changes something must carry the answer's `csrf` as the `X-Clade-Csrf` header",
            || post(console::sign_in),
        )
    },
    Operation {
        responses: &[
            ok("200", "signed in", of::<api::console::ConsoleSessionResponse>),
            error("401", "not signed in, or the sign-in ended or its token was revoked"),
            error("403", "a request from another origin"),
            error("503", "the store is unavailable; retry later"),
        ],
        ..op("GET", "/console/session", &[], "The console's sign-in in force", || {
            get(console::current)
        })
    },
    Operation {
        params: &[CONSOLE_CSRF],
        responses: &[
            empty("204", "signed out: the cookie is cleared"),
            error("401", "not signed in"),
            error("403", "no or a wrong CSRF token, or a request from another origin"),
        ],
        ..op("DELETE", "/console/session", &[], "Sign out of the console", || {
            delete(console::sign_out)
        })
    },
    Operation {
        params: &[CONSOLE_CSRF],
        body: Some(of::<api::console::ConsoleViewTenant>),
        responses: &[
            ok(
                "200",
                "the sign-in, looking into the tenant",
                of::<api::console::ConsoleSessionResponse>,
            ),
            error("400", "not a body naming a tenant, or no tenant of that name"),
            error("401", "not signed in"),
            error("403", "no or a wrong CSRF token, or a request from another origin"),
            error("404", "not the operator's sign-in"),
            error("413", "body too large"),
            error("415", "body is not JSON"),
            error("503", "the store is unavailable; retry later"),
        ],
        ..op(
            "PUT",
            "/console/session/tenant",
            &[],
            "The operator's console looks into a tenant: every `/v1` request of the sign-in then acts in it, with the operator's scopes (`null`: back to its own)",
            || put(console::view_tenant),
        )
    },
    Operation {
        responses: &[
            ok("200", "every tenant, by name", of::<api::console::ConsoleTenantsResponse>),
            error("401", "not signed in"),
            error("403", "a request from another origin"),
            error("404", "not the operator's sign-in"),
            error("503", "the store is unavailable; retry later"),
        ],
        ..op("GET", "/console/tenants", &[], "The tenants, for the operator's console", || {
            get(console::tenants)
        })
    },
    Operation {
        params: &[
            path("bot", text_schema),
            Param {
                name: "X-Telegram-Bot-Api-Secret-Token",
                location: "header",
                required: false,
                description: Some(
                    "the secret in the bot's `webhook_secret_env`, as Telegram sends it",
                ),
                schema: text_schema,
            },
        ],
        description: Some(
            "Where Telegram posts a bot's updates in webhook mode (`channels.telegram.<bot>.mode: webhook`). A message becomes an event of the agent the bindings pick for platform `telegram`, channel `<bot>:<chat id>`, actor the sender's user id; its chat and message ids are the idempotency key, so a redelivered update runs no second turn. The reply is sent by the bot from the outbox. Updates that can never be taken (edits, bots' messages, unreadable ones, no binding) are answered 200 so that Telegram does not send them again. A listener of its own paired for the bot (`clade pair listener`) signs its requests with its key (`clade-peer`, `clade-peer-time` and `clade-peer-signature`, as paired components sign) instead of sending the secret.",
        ),
        responses: &[
            empty("200", "taken, or skipped for good"),
            error(
                "401",
                "no bot of that name in webhook mode, or a wrong secret token (`invalid_signature`: alike)",
            ),
            error("503", "the update could not be stored now: Telegram sends it again"),
        ],
        ..op(
            "POST",
            "/channels/telegram/{bot}",
            &[],
            "Telegram webhook: a bot's update becomes an event of the agent its bindings pick",
            || post(channels::telegram),
        )
    },
    Operation {
        params: &[
            path("app", text_schema),
            Param {
                name: "X-Slack-Request-Timestamp",
                location: "header",
                required: false,
                description: Some("Unix seconds when Slack signed the request"),
                schema: text_schema,
            },
            Param {
                name: "X-Slack-Signature",
                location: "header",
                required: false,
                description: Some(
                    "`v0=` and the hex HMAC-SHA256 of `v0:<timestamp>:<body>` under the app's signing secret",
                ),
                schema: text_schema,
            },
        ],
        description: Some(
            "Where Slack's Events API posts an app's events (`channels.slack.<app>.mode: events`). A direct message or a mention of the app becomes an event of the agent the bindings pick for platform `slack`, channel `<app>:<channel id>` (`/<thread ts>` in a thread), actor the user id; its channel and `ts` are the idempotency key, so Slack's retries run no second turn. A `url_verification` request is answered with its challenge. Requests must be signed within 5 minutes, with the signing secret or by the listener paired for the app (`clade pair listener`).",
        ),
        responses: &[
            empty("200", "taken, skipped for good, or the URL check's challenge"),
            error(
                "401",
                "not signed by the app's signing secret within 5 minutes, or no app of that name in events mode (`invalid_signature`: alike)",
            ),
            error("503", "the event could not be stored now: Slack sends it again"),
        ],
        ..op(
            "POST",
            "/channels/slack/{app}",
            &[],
            "Slack Events API: a signed event becomes an event of the agent its bindings pick",
            || post(channels::slack),
        )
    },
    Operation {
        params: &[
            path("bot", text_schema),
            Param {
                name: "X-Clade-Relay-Secret",
                location: "header",
                required: false,
                description: Some("the secret in the bot's `relay_secret_env`"),
                schema: text_schema,
            },
        ],
        description: Some(
            "Where a Discord bot's listener of its own (`clade channels listen <bot>`, the bot in `channels.discord.<bot>.mode: relay`) posts what its gateway socket receives: `{\"user\": <the bot's user id>, \"d\": <a MESSAGE_CREATE's data>}`, which becomes an event of the agent the bindings pick for platform `discord`, channel `<bot>:<channel id>`, its channel and message ids the idempotency key, so a message relayed twice runs no second turn; or `{\"ready\": <the bot's user id>}` after a new session, which fetches what was sent meanwhile from the REST API. The listener proves itself with the relay secret, or signs with the key it was paired with (`clade pair listener`). The reply is sent by the gateway from the outbox.",
        ),
        responses: &[
            empty("200", "taken, or skipped for good"),
            error("400", "a body that is not JSON"),
            error(
                "401",
                "no bot of that name in relay mode, or a wrong secret (`invalid_signature`: alike)",
            ),
            error("503", "the message could not be stored now: send it again"),
        ],
        ..op(
            "POST",
            "/channels/discord/{bot}",
            &[],
            "Discord relay: a message a bot's listener of its own received becomes an event of the agent its bindings pick",
            || post(channels::discord),
        )
    },
    Operation {
        responses: &[
            ok("200", "every channel", of::<api::ChannelListResponse>),
            error("404", "the caller is not the operator"),
        ],
        ..op(
            "GET",
            "/v1/channels",
            &[Admin],
            "Chat channels' health: state, last answer and error, messages received and replies sent (the operator's)",
            || get(channels::list),
        )
    },
    Operation {
        responses: &[empty("200", "OpenAPI 3.1 document")],
        ..op("GET", "/openapi.json", &[], "This document", || get(crate::openapi_json))
    },
    Operation {
        params: &[
            path("tenant", text_schema),
            path("name", text_schema),
            Param {
                name: "webhook-id",
                location: "header",
                required: false,
                description: Some("Standard Webhooks: the message's id, its idempotency key"),
                schema: text_schema,
            },
            Param {
                name: "webhook-timestamp",
                location: "header",
                required: false,
                description: Some("Standard Webhooks: Unix seconds when it was signed"),
                schema: text_schema,
            },
            Param {
                name: "webhook-signature",
                location: "header",
                required: false,
                description: Some("Standard Webhooks: `v1,<base64>` signatures, space-separated"),
                schema: text_schema,
            },
            Param {
                name: "X-Clade-Signature",
                location: "header",
                required: false,
                description: Some("scheme `clade`: `sha256=<hex>` of the body"),
                schema: text_schema,
            },
        ],
        description: Some(
            "A hook declared in `clade.yaml` (`tenants.<tenant>.hooks.<name>`) takes the request's body (text or JSON, up to 64 KiB of text) as an event of its agent, from platform `hook`, actor the hook's name, in the session its `session` pointer names (else one per hook). No token: the signature under the hook's secret authenticates it (scheme `standard`: Standard Webhooks, whose `webhook-id` is the idempotency key and whose timestamp must be within 5 minutes; scheme `clade`: `X-Clade-Signature`, whose signature covers the body alone, so the body's digest is the key: a repeated body is a repeat). A redelivery is answered as the first and runs no second turn. Mode `async` answers 202 once stored, `wait` 200 with the reply.",
        ),
        responses: &[
            ok("200", "mode `wait`: the turn ended", of::<api::EventResponse>),
            ok("202", "stored (mode `async`, or `wait` still running)", of::<api::EventResponse>),
            error("400", "the body is empty or not UTF-8, or its id is too long"),
            error(
                "401",
                "the signature does not verify, or there is no such hook (`invalid_signature`: alike, so a stranger learns neither)",
            ),
            error("413", "body too large"),
            error("429", "the tenant's rate limit or quota"),
        ],
        ..op(
            "POST",
            "/hooks/{tenant}/{name}",
            &[],
            "Inbound webhook: a signed request to a tenant's hook becomes an event of its agent",
            || post(hooks::receive),
        )
    },
    Operation {
        query: Some(fields::<api::AgentsQuery>),
        responses: &[ok("200", "one page", of::<api::AgentListResponse>)],
        ..op("GET", "/v1/agents", &[Read], "List the caller's agents, ordered by handle", || {
            get(agents::list)
        })
    },
    Operation {
        body: Some(of::<api::CreateAgentParams>),
        responses: &[
            ok("201", "created", of::<api::AgentResponse>),
            error("400", "invalid body or handle"),
            error("409", "handle already taken in this tenant"),
            error("404", "no such persona template (`template_not_found`)"),
            error("429", "the tenant has as many agents as its quota allows (`quota_exceeded`)"),
        ],
        ..op(
            "POST",
            "/v1/agents",
            &[Admin],
            "Create an agent; with `task`, send it that as its first message (the AgentHub's Spawn)",
            || post(agents::create),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok("200", "the agent", of::<api::AgentResponse>),
            error("404", "no such agent in the caller's tenant"),
        ],
        ..op("GET", "/v1/agents/{handle}", &[Read], "Show an agent", || get(agents::show))
    },
    Operation {
        params: &[HANDLE],
        responses: &[empty("204", "deleted"), error("404", "no such agent in the caller's tenant")],
        ..op(
            "DELETE",
            "/v1/agents/{handle}",
            &[Admin],
            "Delete an agent with its sessions, secrets and workspace",
            || delete(agents::delete),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok("200", "tools", of::<api::ToolListResponse>),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/tools",
            &[Read],
            "The tools an agent can call, with their argument schemas",
            || get(tools::list),
        )
    },
    Operation {
        params: &[HANDLE],
        body: Some(of::<api::PromptPreviewParams>),
        responses: &[
            ok("200", "what the model would be sent", of::<api::PromptPreviewResponse>),
            error("400", "invalid body, or blank text"),
            error("404", "no such agent, or no such session of the agent's"),
            error(
                "422",
                "the turn would end before calling a model, as when even the smallest prompt does not fit the model's context (`prompt_unsent`, saying why)",
            ),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/prompt",
            &[Read],
            "Preview what the agent's model would be sent for a message: the composed messages, the tools offered, the provider's request body and its size; nothing is called or written",
            || post(prompt::preview),
        )
    },
    Operation {
        params: &[HANDLE, TOOL],
        body: Some(of::<api::ToolCallParams>),
        responses: &[
            ok(
                "200",
                "the call's result (is_error when refused or failed)",
                of::<api::ToolCallResponse>,
            ),
            error("400", "invalid body"),
            error("404", "no such agent or tool"),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/tools/{name}/call",
            &[Operate],
            "Run one tool call through the path a model's call takes: policy, approval (waits while asked), sandbox, audit",
            || post(tools::call),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok("200", "the agent's jobs, by name", of::<api::JobListResponse>),
            error("404", "no such agent"),
        ],
        ..op("GET", "/v1/agents/{handle}/jobs", &[Read], "An agent's scheduled jobs", || {
            get(jobs::list)
        })
    },
    Operation {
        params: &[HANDLE],
        body: Some(of::<api::CreateJobParams>),
        responses: &[
            ok("201", "created", of::<api::JobResponse>),
            error("400", "invalid body"),
            error("404", "no such agent"),
            error("409", "the agent has a job of that name"),
            error(
                "422",
                "the schedule, time zone, misfire policy, target or prompt cannot be used, or the schedule fires more often than the tenant's `cron_min_interval_secs` allows (`invalid_job`, naming which and why)",
            ),
            error("429", "the agent has as many jobs as its tenant's `cron_jobs_per_agent` allows"),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/jobs",
            &[Operate],
            "Schedule a job: at each scheduled time the agent is sent the prompt, in the job's target session",
            || post(jobs::create),
        )
    },
    Operation {
        params: &[HANDLE, JOB],
        responses: &[
            ok("200", "the job", of::<api::JobResponse>),
            error("404", "no such agent or job"),
        ],
        ..op("GET", "/v1/agents/{handle}/jobs/{name}", &[Read], "Show a job", || get(jobs::show))
    },
    Operation {
        params: &[HANDLE, JOB],
        body: Some(of::<api::UpdateJobParams>),
        responses: &[
            ok("200", "the job", of::<api::JobResponse>),
            error("400", "invalid body"),
            error("404", "no such agent or job"),
            error("409", "the job is one clade.yaml declares (`job_declared`): change it there"),
        ],
        ..op(
            "PATCH",
            "/v1/agents/{handle}/jobs/{name}",
            &[Operate],
            "Enable or disable a job (audited)",
            || patch(jobs::update),
        )
    },
    Operation {
        params: &[HANDLE, JOB],
        responses: &[
            empty("204", "removed"),
            error("404", "no such agent or job"),
            error("409", "the job is one clade.yaml declares (`job_declared`): change it there"),
        ],
        ..op(
            "DELETE",
            "/v1/agents/{handle}/jobs/{name}",
            &[Operate],
            "Remove a job and the record of its runs (audited)",
            || delete(jobs::delete),
        )
    },
    Operation {
        params: &[HANDLE, JOB],
        query: Some(fields::<api::JobRunsQuery>),
        responses: &[
            ok("200", "the latest runs first", of::<api::JobRunListResponse>),
            error("400", "invalid query"),
            error("404", "no such agent or job"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/jobs/{name}/runs",
            &[Read],
            "A job's runs: when each fired, whether its envelope was delivered (or why not), and its turn's outcome",
            || get(jobs::runs),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok(
                "200",
                "every declared setting and every stored one, by key",
                of::<api::SettingListResponse>,
            ),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/settings",
            &[Read],
            "An agent's settings as it reads them: the environment's value, else its stored one, else the default",
            || get(settings::list),
        )
    },
    Operation {
        params: &[HANDLE, SETTING],
        body: Some(of::<api::SetSettingParams>),
        responses: &[
            ok("200", "the setting as the agent now reads it", of::<api::SettingResponse>),
            error("400", "invalid body or key"),
            error(
                "403",
                "the operator locked the setting (`agent_writable: false`) and the token is a tenant's",
            ),
            error("404", "no such agent"),
            error(
                "422",
                "the value is over 4 KiB, or the agent has 100 settings stored (`invalid_setting`)",
            ),
        ],
        ..op(
            "PUT",
            "/v1/agents/{handle}/settings/{key}",
            &[Operate],
            "Store an agent's value of a setting (audited with the key, never the value)",
            || put(settings::set),
        )
    },
    Operation {
        params: &[HANDLE, SETTING],
        responses: &[
            empty("204", "removed"),
            error("400", "invalid key"),
            error(
                "403",
                "the operator locked the setting (`agent_writable: false`) and the token is a tenant's",
            ),
            error("404", "no such agent, or no value stored (`setting_not_found`)"),
        ],
        ..op(
            "DELETE",
            "/v1/agents/{handle}/settings/{key}",
            &[Operate],
            "Remove an agent's stored value of a setting (audited)",
            || delete(settings::unset),
        )
    },
    Operation {
        params: &[HANDLE],
        body: Some(of::<api::PauseParams>),
        responses: &[
            ok("200", "paused (or already paused)", of::<api::PauseResponse>),
            error("400", "invalid body"),
            error("404", "no such agent"),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/pause",
            &[Operate],
            "Pause an agent: its running turns finish, no new turn starts, events wait, stored (durable across restarts; audited)",
            || post(control::pause_agent),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok("200", "whether there was a pause to lift", of::<api::UnpauseResponse>),
            error("404", "no such agent"),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/resume",
            &[Operate],
            "Lift an agent's pause: the events that waited run (audited)",
            || post(control::resume_agent),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok(
                "200",
                "its pause and its sessions with work in flight",
                of::<api::AgentStatusResponse>,
            ),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/status",
            &[Read],
            "What an agent runs now: its pause, and its sessions with turns running or events waiting (state, step count, age)",
            || get(control::status),
        )
    },
    Operation {
        params: &[HANDLE, LAST_EVENT_ID],
        query: Some(fields::<api::AgentStreamQuery>),
        responses: &[
            SSE_STREAM,
            error("400", "invalid query"),
            error("404", "no such agent, or no such session of it"),
            error(
                "429",
                "the tenant or the token holds as many streams open as its quotas allow (`streams`, `streams_per_token`); `Retry-After` says when to retry",
            ),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/events",
            &[Read],
            "Server-Sent Events of everything an agent does (the AgentHub's Trace): its sessions' lifecycle events, each event's data `{\"session\": <id>, \"data\": <the event's fields>}`, replayed after Last-Event-ID (or ?after=) and then live, or from now when neither is given; with deltas=true, the model's text as it is written",
            || get(agents::stream),
        )
    },
    Operation {
        params: &[HANDLE],
        query: Some(fields::<api::RunsQuery>),
        responses: &[
            ok("200", "newest first", of::<api::RunListResponse>),
            error("400", "invalid query"),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/runs",
            &[Read],
            "An agent's runs (durable executions): branches' and workers' runs and scheduled fires, or turns with `kind=turn`; `open=true` for those under way",
            || get(runs::list),
        )
    },
    Operation {
        params: &[ID],
        responses: &[
            ok("200", "the run, with its branch or worker", of::<api::RunResponse>),
            error("400", "not a run id"),
            error("404", "no such run"),
        ],
        ..op("GET", "/v1/runs/{id}", &[Read], "One run: its kind, state, input and outcome", || {
            get(runs::show)
        })
    },
    Operation {
        params: &[ID],
        responses: &[
            ok("200", "cancelled (or ended already)", of::<api::RunResponse>),
            error("400", "not a run id"),
            error("404", "no such run"),
            error(
                "409",
                "a run of a kind cancelled elsewhere, such as a turn (`run_not_cancellable`, saying where)",
            ),
        ],
        ..op(
            "POST",
            "/v1/runs/{id}/cancel",
            &[Operate],
            "Cancel a branch's or worker's run: it stops, and nothing it concludes is delivered",
            || post(runs::cancel),
        )
    },
    Operation {
        body: Some(of::<api::FlowCheckParams>),
        responses: &[
            ok(
                "200",
                "checked: `ok`, or every problem at its line and column",
                of::<api::FlowCheckResponse>,
            ),
            error("400", "invalid body"),
        ],
        ..op(
            "POST",
            "/v1/flows/check",
            &[Read],
            "Check a flow file (`*.flow.yaml`, schema `docs/flow.schema.json`) without running it: every problem, at its place",
            || post(flows::check),
        )
    },
    Operation {
        body: Some(of::<api::FlowCheckParams>),
        responses: &[
            ok("201", "saved as the flow's next version", of::<api::FlowResponse>),
            ok("200", "unchanged: the newest version has the same text", of::<api::FlowResponse>),
            error("400", "invalid body"),
            error(
                "403",
                "the token reaches only some of the tenant's agents: a flow needs one that reaches all",
            ),
            error(
                "422",
                "the flow does not check (every problem, `file:line:column: message`), or is named `runs` or `check` (`invalid_flow`); nothing was saved",
            ),
            error(
                "429",
                "the tenant stores 500 flows, or the flow 1,000 versions (`quota_exceeded`)",
            ),
        ],
        description: Some(
            "Stores a flow file under the name it declares, as its next version (1, 2, …). A run started from a stored flow (`POST /v1/flows/{name}/runs`) is pinned to one version: saving or deleting the flow later does not change it.",
        ),
        ..op("POST", "/v1/flows", &[Operate], "Store a flow (versioned)", || post(flows::save))
    },
    Operation {
        responses: &[ok(
            "200",
            "each stored flow at its newest version, by name (none for a token limited to some agents)",
            of::<api::FlowListResponse>,
        )],
        ..op("GET", "/v1/flows", &[Read], "The tenant's stored flows", || get(flows::list_flows))
    },
    Operation {
        params: &[FLOW],
        query: Some(fields::<api::FlowVersionQuery>),
        responses: &[
            ok("200", "the version, with its text", of::<api::FlowResponse>),
            error("405", "the name is `runs` or `check`, whose paths are other routes'"),
            error("400", "not a flow's name, or an invalid query"),
            error("404", "no such stored flow, or not at that version (`flow_not_found`)"),
        ],
        ..op(
            "GET",
            "/v1/flows/{name}",
            &[Read],
            "A stored flow's text: its newest version, or `version`",
            || get(flows::show_flow),
        )
    },
    Operation {
        params: &[FLOW],
        responses: &[
            empty("204", "deleted, every version; runs keep the text they started with"),
            error("405", "the name is `runs` or `check`, whose paths are other routes'"),
            error("400", "not a flow's name"),
            error(
                "404",
                "no such stored flow, or a token limited to some agents, which sees none (`flow_not_found`)",
            ),
        ],
        ..op("DELETE", "/v1/flows/{name}", &[Operate], "Delete a stored flow", || {
            delete(flows::delete_flow)
        })
    },
    Operation {
        params: &[FLOW],
        responses: &[
            ok(
                "200",
                "every version, newest first (without their text)",
                of::<api::FlowListResponse>,
            ),
            error("405", "the name is `runs` or `check`, whose paths are other routes'"),
            error("400", "not a flow's name"),
            error("404", "no such stored flow (`flow_not_found`)"),
        ],
        ..op("GET", "/v1/flows/{name}/versions", &[Read], "A stored flow's versions", || {
            get(flows::versions)
        })
    },
    Operation {
        params: &[FLOW],
        body: Some(of::<api::StartStoredFlowRunParams>),
        responses: &[
            ok(
                "201",
                "started, pinned to the version (`version` in the answer)",
                of::<api::FlowRunResponse>,
            ),
            error("405", "the name is `runs` or `check`, whose paths are other routes'"),
            error("400", "not a flow's name, or an invalid body"),
            error(
                "404",
                "no such stored flow or version, or a token limited to some agents, which sees none (`flow_not_found`), or an agent it names does not exist (`agent_not_found`)",
            ),
            error(
                "422",
                "an input is missing or of the wrong type (`invalid_flow`); nothing was started",
            ),
            error(
                "429",
                "the tenant has 1,000 flow runs under way in this gateway (`quota_exceeded`); nothing was started",
            ),
        ],
        ..op("POST", "/v1/flows/{name}/runs", &[Operate], "Start a run of a stored flow", || {
            post(flows::start_stored)
        })
    },
    Operation {
        params: &[FLOW],
        query: Some(fields::<api::FlowRunsQuery>),
        responses: &[
            ok(
                "200",
                "the flow's runs, newest first, among the tenant's 1,000 newest runs",
                of::<api::FlowRunListResponse>,
            ),
            error("405", "the name is `runs` or `check`, whose paths are other routes'"),
            error("405", "the name is `runs` or `check`, whose paths are other routes'"),
            error("400", "not a flow's name, or an invalid query"),
            error(
                "404",
                "the tenant neither stores nor ran a flow of that name, or a token limited to some agents (`flow_not_found`)",
            ),
        ],
        ..op("GET", "/v1/flows/{name}/runs", &[Read], "A stored flow's runs", || {
            get(flows::list_of_flow)
        })
    },
    Operation {
        query: Some(fields::<api::FlowRunsQuery>),
        responses: &[
            ok(
                "200",
                "the tenant's flow runs, newest first (none for a token limited to some agents)",
                of::<api::FlowRunListResponse>,
            ),
            error("400", "invalid query"),
        ],
        ..op("GET", "/v1/flows/runs", &[Read], "The tenant's flow runs", || get(flows::list))
    },
    Operation {
        body: Some(of::<api::StartFlowRunParams>),
        responses: &[
            ok(
                "201",
                "started: it runs in the gateway, which resumes it after a restart",
                of::<api::FlowRunResponse>,
            ),
            error("400", "invalid body"),
            error(
                "403",
                "the token reaches only some of the tenant's agents: a flow needs one that reaches all",
            ),
            error(
                "404",
                "an agent the flow names by handle does not exist in the tenant (`agent_not_found`)",
            ),
            error(
                "422",
                "the flow does not check (every problem, `file:line:column: message`), or an input is missing or of the wrong type (`invalid_flow`); nothing was started",
            ),
            error(
                "429",
                "the tenant has 1,000 flow runs under way in this gateway (`quota_exceeded`); nothing was started",
            ),
        ],
        description: Some(
            "Starts a run of the flow in the body, pinned to that text. Each task asks its agent in the run's own session with it (platform `flow`, channel `flow:<run id>`), so an agent keeps the run's conversation across a loop; a task's answer is its output (or the JSON its `output_schema` checked). The run is a durable execution of kind `flow`, each step one of kind `flow_step`: after a crash or a restart it resumes where it stopped, and no task is asked twice. An `approval` step waits for `POST /v1/approvals/{id}/approve` (tool `flow.approval`).",
        ),
        ..op("POST", "/v1/flows/runs", &[Operate], "Start a flow run", || post(flows::start))
    },
    Operation {
        params: &[ID],
        responses: &[
            ok(
                "200",
                "the run: its state and each task's status and output",
                of::<api::FlowRunResponse>,
            ),
            error("400", "not a run id"),
            error("404", "no such flow run"),
        ],
        ..op("GET", "/v1/flows/runs/{id}", &[Read], "One flow run", || get(flows::show))
    },
    Operation {
        params: &[ID],
        responses: &[
            ok("200", "cancelled: it stops where it stands", of::<api::FlowRunResponse>),
            error("400", "not a run id"),
            error("404", "no such flow run"),
            error("409", "the run has ended (`run_ended`)"),
        ],
        ..op("POST", "/v1/flows/runs/{id}/cancel", &[Operate], "Cancel a flow run", || {
            post(flows::cancel)
        })
    },
    Operation {
        params: &[ID],
        responses: &[
            ok(
                "200",
                "paused: it stops after its current step, until resumed",
                of::<api::FlowRunResponse>,
            ),
            error("400", "not a run id"),
            error("404", "no such flow run"),
            error("409", "the run has ended (`run_ended`)"),
        ],
        ..op("POST", "/v1/flows/runs/{id}/pause", &[Operate], "Pause a flow run", || {
            post(flows::pause)
        })
    },
    Operation {
        params: &[ID],
        responses: &[
            ok("200", "running again, from where it stopped", of::<api::FlowRunResponse>),
            error("400", "not a run id"),
            error("404", "no such flow run"),
            error("409", "the run has ended (`run_ended`)"),
        ],
        ..op("POST", "/v1/flows/runs/{id}/resume", &[Operate], "Resume a paused flow run", || {
            post(flows::resume)
        })
    },
    Operation {
        params: &[ID],
        responses: &[
            ok(
                "201",
                "a new run of the same text and inputs (`retry_of` names the first)",
                of::<api::FlowRunResponse>,
            ),
            error("400", "not a run id"),
            error("404", "no such flow run, or an agent it names is gone"),
            error(
                "409",
                "the run is under way (`run_under_way`): wait for it to end, or cancel it",
            ),
        ],
        ..op("POST", "/v1/flows/runs/{id}/retry", &[Operate], "Run an ended flow run again", || {
            post(flows::retry)
        })
    },
    Operation {
        params: &[HANDLE],
        query: Some(fields::<api::AgentMessagesQuery>),
        responses: &[
            ok("200", "one page, newest first", of::<api::AgentMessageListResponse>),
            error("400", "invalid query"),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/messages",
            &[Read],
            "The messages an agent sent to or received from the other agents of its tenant (agent.send, agent.ask)",
            || get(messages::list),
        )
    },
    Operation {
        params: &[HANDLE],
        query: Some(fields::<api::MemoriesQuery>),
        responses: &[
            ok("200", "one page, most recently updated first", of::<api::MemoryListResponse>),
            error("400", "invalid query"),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/memories",
            &[Read],
            "An agent's memory items under one isolation key (the global memory by default)",
            || get(memories::list),
        )
    },
    Operation {
        params: &[HANDLE],
        body: Some(of::<api::CreateMemoryParams>),
        responses: &[
            MEMORY_CREATED,
            MEMORY_MERGED,
            error("400", "invalid body"),
            error("404", "no such agent"),
            error(
                "422",
                "content that is not text or over 4 KiB (`invalid_memory`), or memory is off (`memory_off`)",
            ),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/memories",
            &[Operate],
            "Add an item to an agent's memory (a near-duplicate updates or links the item it repeats; audited without the content)",
            || post(memories::create),
        )
    },
    Operation {
        params: &[HANDLE],
        body: Some(of::<api::SearchMemoriesParams>),
        responses: &[
            ok(
                "200",
                "the best items first, each with why it matched",
                of::<api::MemorySearchResponse>,
            ),
            error("400", "invalid body"),
            error("404", "no such agent"),
            error("422", "memory is off (`memory_off`)"),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/memories/search",
            &[Read],
            "Search an agent's memory as it recalls: full text, meaning and links",
            || post(memories::search),
        )
    },
    Operation {
        params: &[HANDLE, MEMORY],
        responses: &[
            ok("200", "the item", of::<api::MemoryResponse>),
            error("404", "no such agent or item (`memory_not_found`)"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/memories/{id}",
            &[Read],
            "One item of an agent's memory",
            || get(memories::show),
        )
    },
    Operation {
        params: &[HANDLE, MEMORY],
        responses: &[
            empty("204", "forgotten, with its links"),
            error("404", "no such agent or item (`memory_not_found`)"),
        ],
        ..op(
            "DELETE",
            "/v1/agents/{handle}/memories/{id}",
            &[Operate],
            "Forget an item of an agent's memory for good (audited)",
            || delete(memories::forget),
        )
    },
    Operation {
        params: &[HANDLE, MEMORY],
        body: Some(of::<api::LinkMemoryParams>),
        responses: &[
            ok("201", "linked", of::<api::MemoryLinkResponse>),
            error("400", "invalid body"),
            error("404", "no such agent or item (`memory_not_found`)"),
            error(
                "422",
                "an item linked to itself, items under two isolation keys, or 100 links already (`invalid_memory`)",
            ),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/memories/{id}/links",
            &[Operate],
            "Link two items of an agent's memory (recalling one brings the other)",
            || post(memories::link),
        )
    },
    Operation {
        params: &[HANDLE],
        query: Some(fields::<api::PrunedMemoriesQuery>),
        responses: &[
            ok("200", "the latest pruned first, one page", of::<api::MemoryListResponse>),
            error("400", "invalid query"),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/memories/pruned",
            &[Read],
            "The items of an agent's memory the cortex pruned (faded, or merged into another), restorable until purged",
            || get(memories::pruned),
        )
    },
    Operation {
        params: &[HANDLE, MEMORY],
        responses: &[
            ok(
                "200",
                "restored, as if just used; an item that is not pruned is answered as it is",
                of::<api::MemoryResponse>,
            ),
            error("404", "no such agent or item (`memory_not_found`)"),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/memories/{id}/restore",
            &[Operate],
            "Bring back an item the cortex pruned (faded or merged), until it is purged (audited)",
            || post(memories::restore),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok("200", "what the upkeep did", of::<api::MemoryUpkeepResponse>),
            error("404", "no such agent"),
            error("422", "memory is off (`memory_off`)"),
        ],
        ..op(
            "POST",
            "/v1/agents/{handle}/memories/upkeep",
            &[Operate],
            "Keep an agent's memory now, as the cortex does in the background: merge repeats, fade unused items, prune the faded, purge the long-pruned (audited)",
            || post(memories::upkeep),
        )
    },
    Operation {
        responses: &[
            ok(
                "200",
                "the nodes holding leases, in name order",
                of::<api::ClusterNodeListResponse>,
            ),
            error("404", "the caller is not the operator (an admin token of the default tenant)"),
        ],
        ..op(
            "GET",
            "/v1/cluster/nodes",
            &[Admin],
            "The cluster's nodes: each one's shards, once-per-cluster work and lease expiry, from the store (the operator's only; a gateway alone is one node whose lease never expires)",
            || get(cluster::nodes),
        )
    },
    Operation {
        params: &[path("node", text_schema)],
        description: Some(
            "Where a worker node waiting on another machine (`clade node join --hub`), once paired as `<node>` (`clade pair node`), asks what it needs to join the cluster: the configuration the cluster runs (its newest revision) and the store's URL without its password; the worker's own environment gives the credentials. The request is signed with the node's key (`clade-peer`, `clade-peer-time` and `clade-peer-signature`, as paired components sign) and may send `clade-challenge`, which the answer signs with the gateway's key. No token is taken.",
        ),
        responses: &[
            ok("200", "what the node needs to join", of::<api::ClusterJoinResponse>),
            error(
                "401",
                "not signed by a worker node paired under that name (`invalid_signature`; every reason alike)",
            ),
            error("409", "this gateway runs alone, not as a cluster's node (`not_a_cluster`)"),
        ],
        ..op(
            "GET",
            "/cluster/join/{node}",
            &[],
            "A paired worker node's settings: the cluster's configuration and store",
            || get(cluster::join),
        )
    },
    Operation {
        responses: &[
            ok("200", "the revisions, newest first", of::<api::ConfigRevisionListResponse>),
            error("404", "the caller is not the operator (an admin token of the default tenant)"),
        ],
        ..op(
            "GET",
            "/v1/config/revisions",
            &[Admin],
            "The deployment's configuration revisions (the operator's only)",
            || get(config::list),
        )
    },
    Operation {
        params: &[REVISION],
        responses: &[
            ok("200", "the revision, with its text and diff", of::<api::ConfigRevisionResponse>),
            error("404", "no such revision, or the caller is not the operator"),
        ],
        ..op(
            "GET",
            "/v1/config/revisions/{revision}",
            &[Admin],
            "Show a configuration revision",
            || get(config::show),
        )
    },
    Operation {
        body: Some(of::<api::ApplyConfigParams>),
        responses: &[
            ok("200", "applied (or unchanged)", of::<api::ApplyConfigResponse>),
            error("400", "invalid body"),
            error("404", "the caller is not the operator"),
            error(
                "422",
                "the configuration does not parse or check (`invalid_config`, naming the step and why); nothing changed",
            ),
        ],
        ..op(
            "POST",
            "/v1/config",
            &[Admin],
            "Apply a configuration: parse, check, write, record a revision; the gateway takes it within a second (sessions, bindings, tools, tenants, heartbeats; other sections at its next start)",
            || post(config::apply),
        )
    },
    Operation {
        params: &[REVISION],
        responses: &[
            ok("200", "applied (or unchanged)", of::<api::ApplyConfigResponse>),
            error("404", "no such revision, or the caller is not the operator"),
            error("422", "the revision no longer checks (`invalid_config`); nothing changed"),
        ],
        ..op(
            "POST",
            "/v1/config/revisions/{revision}/revert",
            &[Admin],
            "Apply an earlier revision's configuration again, as a new revision",
            || post(config::revert),
        )
    },
    Operation {
        query: Some(fields::<api::ApprovalsQuery>),
        responses: &[
            ok("200", "approvals", of::<api::ApprovalListResponse>),
            error("400", "invalid query"),
        ],
        ..op(
            "GET",
            "/v1/approvals",
            &[Read, Approve],
            "Tool calls waiting for an operator (or decided ones, by status), newest first",
            || get(tools::approvals),
        )
    },
    Operation {
        params: &[ID],
        body: Some(of::<api::DecideApprovalParams>),
        responses: &[
            ok("200", "the decided approval", of::<api::ApprovalResponse>),
            error("400", "invalid decision"),
            error("404", "no such approval"),
            error("409", "already decided"),
        ],
        ..op(
            "POST",
            "/v1/approvals/{id}",
            &[Approve],
            "Approve, deny, or approve always (adds an audited allow grant for this tool and resource)",
            || post(tools::decide),
        )
    },
    Operation {
        params: &[HANDLE],
        responses: &[
            ok("200", "the agent's lineage", of::<api::LineageResponse>),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/agents/{handle}/lineage",
            &[Read],
            "The agents that made this one (nearest first) and the tree of agents it made (`agent.spawn`), each with those it made",
            || get(control::lineage),
        )
    },
    Operation {
        query: Some(fields::<api::BreakpointsQuery>),
        responses: &[
            ok("200", "breakpoints", of::<api::BreakpointListResponse>),
            error("400", "invalid query"),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/breakpoints",
            &[Read],
            "The tenant's breakpoints (of one agent with `agent`), oldest first",
            || get(debugging::breakpoints),
        )
    },
    Operation {
        body: Some(of::<api::CreateBreakpointParams>),
        responses: &[
            ok("201", "set", of::<api::BreakpointResponse>),
            error("400", "invalid breakpoint, or a session of another agent"),
            error("404", "no such agent or session"),
            error("429", "the tenant holds 100 breakpoints already"),
        ],
        ..op(
            "POST",
            "/v1/breakpoints",
            &[Admin],
            "Pause an agent's turns (or one session's) before each model call, before a tool call (every tool, or `tool`), or on an error, until a person tells each stop what to do (`POST /v1/debug/stops/{id}`). A paused turn survives a restart; its waiting time is not counted against its timeout",
            || post(debugging::set_breakpoint),
        )
    },
    Operation {
        params: &[ID],
        responses: &[
            empty("204", "removed"),
            error("400", "invalid id"),
            error("404", "no such breakpoint"),
        ],
        ..op(
            "DELETE",
            "/v1/breakpoints/{id}",
            &[Admin],
            "Remove a breakpoint; turns paused at it stay paused until told",
            || delete(debugging::remove_breakpoint),
        )
    },
    Operation {
        query: Some(fields::<api::StopsQuery>),
        responses: &[
            ok("200", "stops, newest first", of::<api::StopListResponse>),
            error("400", "invalid query"),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/debug/stops",
            &[Read],
            "Turns paused at breakpoints (`status=all`: told ones too), with what each holds there: the composed context before a model call, the pending call before a tool call, the error",
            || get(debugging::stops),
        )
    },
    Operation {
        params: &[ID],
        responses: &[ok("200", "the stop", of::<api::StopResponse>), error("404", "no such stop")],
        ..op("GET", "/v1/debug/stops/{id}", &[Read], "One stop", || get(debugging::stop))
    },
    Operation {
        params: &[ID],
        body: Some(of::<api::ResumeStopParams>),
        responses: &[
            ok("200", "told: the turn goes on", of::<api::StopResponse>),
            error(
                "400",
                "an action that does not fit the stop (edit anything but a tool call, skip without a result)",
            ),
            error("404", "no such stop"),
            error("409", "already told, or its turn ended"),
        ],
        ..op(
            "POST",
            "/v1/debug/stops/{id}",
            &[Admin],
            "Tell a paused turn what to do: `continue`, `step` (pause again before the next call), `skip` with a `result` that stands for the call's, or `edit` a tool call's `arguments` (audited with those before and after; policy checks the new ones)",
            || post(debugging::decide),
        )
    },
    Operation {
        query: Some(fields::<api::GrantsQuery>),
        responses: &[
            ok("200", "grants", of::<api::GrantListResponse>),
            error("404", "no such agent"),
        ],
        ..op(
            "GET",
            "/v1/grants",
            &[Read],
            "Grants (policy rules per agent), revoked ones included",
            || get(tools::grants),
        )
    },
    Operation {
        body: Some(of::<api::CreateGrantParams>),
        responses: &[
            ok("201", "created", of::<api::GrantResponse>),
            error("400", "invalid grant, or wider than its parent"),
            error("404", "no such agent or parent grant"),
        ],
        ..op(
            "POST",
            "/v1/grants",
            &[Admin],
            "Add a grant; with `parent`, a delegation that may only narrow its parent",
            || post(tools::add_grant),
        )
    },
    Operation {
        params: &[ID],
        responses: &[empty("204", "revoked"), error("404", "no such live grant")],
        ..op(
            "DELETE",
            "/v1/grants/{id}",
            &[Admin],
            "Revoke a grant (and with it every grant delegated from it), from the next call on",
            || delete(tools::revoke_grant),
        )
    },
    Operation {
        responses: &[ok(
            "200",
            "the tenant's leases, newest first, live and ended (a token limited to some agents sees theirs)",
            of::<api::LeaseListResponse>,
        )],
        ..op("GET", "/v1/leases", &[Read], "Leases to paired subscribers", || get(leases::list))
    },
    Operation {
        body: Some(of::<api::CreateLeaseParams>),
        responses: &[
            ok("201", "granted", of::<api::LeaseResponse>),
            error("400", "invalid body"),
            error("403", "asked by an operator paired `leased`, which may not grant leases"),
            error(
                "404",
                "no such agent or session, or no paired component of that name and kind may take these events (`peer_not_found`)",
            ),
            error(
                "422",
                "a ttl out of range, or both an agent and a session (rules the schema states too), or the whole tenant asked for by a token limited to some agents (`invalid_lease`)",
            ),
            error("429", "the tenant holds 100 live leases (`quota_exceeded`)"),
        ],
        ..op(
            "POST",
            "/v1/leases",
            &[Operate],
            "Lease the tenant's events (or one agent's, or one session's) to a paired subscriber until the lease expires, is revoked, its session or agent is deleted, or the subscriber stops answering",
            || post(leases::create),
        )
    },
    Operation {
        params: &[ID],
        responses: &[
            ok("200", "the lease, ended", of::<api::LeaseResponse>),
            error("400", "not a lease id"),
            error("404", "no such lease"),
        ],
        ..op("DELETE", "/v1/leases/{id}", &[Operate], "End a lease now (audited)", || {
            delete(leases::revoke)
        })
    },
    Operation {
        query: Some(fields::<api::AuditQuery>),
        responses: &[ok(
            "200",
            "a page of records, or with verify=true whether the chain holds",
            audit_answer,
        )],
        ..op(
            "GET",
            "/v1/audit",
            &[Admin],
            "The tenant's hash-chained audit log of tool calls, decisions, approvals and grant changes; `verify=true` checks the chain",
            || get(tools::audit),
        )
    },
    Operation {
        query: Some(fields::<api::UsageQuery>),
        responses: &[
            ok("200", "usage", of::<api::UsageResponse>),
            error("400", "invalid query"),
            error("404", "no such agent in the caller's tenant"),
        ],
        ..op(
            "GET",
            "/v1/usage",
            &[Read],
            "Model usage and cost of the caller's tenant, per agent and model",
            || get(usage::get),
        )
    },
    Operation {
        description: Some(
            "The `Idempotency-Key` header may carry the key instead of the body's `idempotency_key` (printable ASCII, 1-256 characters); sent both ways, the two must be equal.",
        ),
        body: Some(of::<api::EventParams>),
        responses: &[
            ok("200", "with wait: the finished turn", of::<api::EventResponse>),
            ok("202", "stored; the turn runs", of::<api::EventResponse>),
            error("400", "invalid body"),
            error(
                "404",
                "no such agent, or no such session; or no agent named and no binding or default agent in clade.yaml matches the source (`no_agent`)",
            ),
            error("409", "idempotency key reused with another payload"),
            error(
                "429",
                "the session's queue is full, or the tenant sends events faster than its quota (`rate_limited`; see Retry-After), or the store holds as many bytes for the tenant as its `stored_bytes` quota allows (`quota_exceeded`)",
            ),
        ],
        ..op(
            "POST",
            "/v1/events",
            &[Send],
            "Send an event to an agent; answered once it is durably stored",
            || post(events::post),
        )
    },
    Operation {
        query: Some(fields::<api::EventHistoryQuery>),
        responses: &[
            ok(
                "200",
                "a page of lifecycle events, oldest first, each as a webhook subscriber receives it",
                of::<api::EventHistoryResponse>,
            ),
            error("400", "invalid query"),
            error("404", "no such agent or session"),
        ],
        ..op(
            "GET",
            "/v1/events",
            &[Read],
            "The history of the tenant's lifecycle events (turns, tool calls, approvals, agents' messages...), by agent, session, type and time, a page at a time",
            || get(events::history),
        )
    },
    Operation {
        description: Some(
            "OpenAI's Chat Completions API, so any OpenAI client reaches an agent unchanged: `model` is the agent's handle (or `tenant/handle` for the operator), and the gateway keeps the conversation. The last message, the user's, is sent to the agent, in the session the `X-Session-Id` header or the `user` field names (else the one the conversation's opening messages name). The agent's tools run on the server. With `stream`, the answer comes as `chat.completion.chunk` server-sent events ending with `data: [DONE]`; a turn that fails ends the stream with an `error` object. Errors come in OpenAI's shape. An `Idempotency-Key` header makes a retried request start no second turn.",
        ),
        params: &[Param {
            name: "X-Session-Id",
            location: "header",
            required: false,
            description: Some(
                "Names the conversation (1-256 printable characters): the same value continues the same session.",
            ),
            schema: text_schema,
        }],
        body: Some(of::<api::openai::ChatCompletionRequest>),
        responses: &[
            Reply {
                status: "200",
                description: "the agent's answer; with `stream`, `text/event-stream` of chunks",
                body: Some(of::<api::openai::ChatCompletion>),
                media: Some("text/event-stream"),
            },
            openai_error("400", "an invalid body: the message and `param` name what is wrong"),
            openai_error("404", "no agent of that name that the token reaches (`model_not_found`)"),
            openai_error("409", "idempotency key reused with another message"),
            openai_error("413", "body too large"),
            openai_error("415", "body is not JSON"),
            openai_error(
                "429",
                "the session's queue is full, or the tenant's quota is spent (see Retry-After)",
            ),
            openai_error("502", "the agent's turn failed (`turn_failed`); the message says why"),
            openai_error("503", "the store is unavailable; retry later"),
            openai_error(
                "504",
                "the agent is still answering after 120 s (`turn_running`): the answer lands in the session",
            ),
        ],
        ..op(
            "POST",
            "/v1/chat/completions",
            &[Send],
            "OpenAI-compatible chat with an agent",
            || post(openai::chat),
        )
    },
    Operation {
        body: Some(of::<api::mcp::McpMessage>),
        responses: MCP_REPLIES,
        description: Some(MCP_DESCRIPTION),
        ..op(
            "POST",
            "/v1/mcp",
            &[Read, Send],
            "MCP server (streamable HTTP): the agents the token reaches, as tools, and their sessions, as resources",
            || post(mcp::serve),
        )
    },
    Operation {
        params: &[HANDLE],
        body: Some(of::<api::mcp::McpMessage>),
        responses: MCP_REPLIES,
        description: Some(MCP_DESCRIPTION),
        ..op(
            "POST",
            "/v1/agents/{handle}/mcp",
            &[Read, Send],
            "MCP server (streamable HTTP) for one agent: it as a tool, its sessions as resources",
            || post(mcp::serve_agent),
        )
    },
    Operation {
        responses: &[ok(
            "200",
            "the agents the token reaches, as models",
            of::<api::openai::ModelList>,
        )],
        ..op(
            "GET",
            "/v1/models",
            &[Read],
            "The agents the token reaches, as OpenAI models (up to 1,000)",
            || get(openai::models),
        )
    },
    Operation {
        query: Some(fields::<api::SessionsQuery>),
        responses: &[ok("200", "sessions", of::<api::SessionListResponse>)],
        ..op(
            "GET",
            "/v1/sessions",
            &[Read],
            "The caller's sessions, most recently active first",
            || get(sessions::list),
        )
    },
    Operation {
        params: &[SESSION],
        responses: &[
            ok("200", "the session", of::<api::SessionResponse>),
            error("404", "no such session"),
        ],
        ..op("GET", "/v1/sessions/{id}", &[Read], "A session", || get(sessions::show))
    },
    Operation {
        params: &[SESSION],
        body: Some(of::<api::SessionUpdate>),
        responses: &[
            ok("200", "the session", of::<api::SessionResponse>),
            error("400", "malformed body or unknown queue mode"),
            error("404", "no such session"),
        ],
        ..op(
            "PATCH",
            "/v1/sessions/{id}",
            &[Operate],
            "Set the session's own settings (its queue mode)",
            || patch(sessions::update),
        )
    },
    Operation {
        params: &[SESSION],
        query: Some(fields::<api::TurnsQuery>),
        responses: &[
            ok("200", "one page", of::<api::TurnListResponse>),
            error("400", "invalid query or cursor"),
            error("404", "no such session"),
        ],
        ..op(
            "GET",
            "/v1/sessions/{id}/turns",
            &[Read],
            "A session's turns, oldest first, a page at a time, each with its events, usage and how many journal steps it has",
            || get(sessions::turns),
        )
    },
    Operation {
        params: &[SESSION],
        responses: &[
            ok("200", "the summaries", of::<api::SummaryListResponse>),
            error("404", "no such session"),
        ],
        ..op(
            "GET",
            "/v1/sessions/{id}/summaries",
            &[Read],
            "What compaction made of the session's older turns, newest first (at most 100); the turns themselves stay under /turns",
            || get(sessions::summaries),
        )
    },
    Operation {
        params: &[SESSION],
        responses: &[
            ok("200", "the values", of::<api::WorkingListResponse>),
            error("404", "no such session"),
        ],
        ..op(
            "GET",
            "/v1/sessions/{id}/working",
            &[Read],
            "The session's working memory: the values its agent keeps in its scratchpad (scratchpad.set), shown in each turn's context",
            || get(sessions::working),
        )
    },
    Operation {
        params: &[SESSION, TURN],
        responses: &[
            ok("200", "the turn, with its events, usage and step count", of::<api::TurnResponse>),
            error("404", "no such session, or no such turn in it"),
        ],
        ..op(
            "GET",
            "/v1/sessions/{id}/turns/{turn}",
            &[Read],
            "One turn of a session, as the list gives it: what a feed of `turn.finished` events reads the turn's messages from",
            || get(sessions::turn),
        )
    },
    Operation {
        params: &[SESSION],
        body: Some(of::<api::SessionMemoryParams>),
        responses: &[
            MEMORY_CREATED,
            MEMORY_MERGED,
            error("400", "invalid body"),
            error("404", "no such session, or no such turn in it"),
            error(
                "422",
                "content that is not text or over 4 KiB (`invalid_memory`), memory is off (`memory_off`), or the agent holds memory.max_items_per_agent items (`memory_full`)",
            ),
        ],
        ..op(
            "POST",
            "/v1/sessions/{id}/memories",
            &[Operate],
            "Add an item learnt from the session (what a miner running as its own process saves): the session decides the agent, the isolation key and the provenance (a near-duplicate updates or links the item it repeats; audited without the content)",
            || post(memories::create_in_session),
        )
    },
    Operation {
        params: &[SESSION],
        body: Some(of::<api::SessionMemoriesParams>),
        responses: &[
            ok(
                "200",
                "each item's outcome in the order sent, with the status `POST /v1/sessions/{id}/memories` would answer it with (201, 200, or 422 for one refused, which holds up no other; 404 or 5xx when the agent was deleted or the store failed meanwhile)",
                of::<api::SavedMemoriesResponse>,
            ),
            error("400", "invalid body, or not 1 to 100 items"),
            error("404", "no such session, or an item's turn is not one of its"),
            error("422", "memory is off (`memory_off`)"),
        ],
        ..op(
            "POST",
            "/v1/sessions/{id}/memories/batch",
            &[Operate],
            "Add up to 100 items learnt from the session in one request, as `POST /v1/sessions/{id}/memories` adds one: saved in order, their texts embedded together",
            || post(memories::create_many_in_session),
        )
    },
    Operation {
        params: &[SESSION, TURN],
        body: Some(of::<api::MineTurnParams>),
        responses: &[
            ok(
                "200",
                "what the turn holds worth remembering, not saved, and the miner that found it",
                of::<api::MinedTurnResponse>,
            ),
            error("400", "invalid body"),
            error("404", "no such session, or no such turn in it"),
            error("422", "memory is off (`memory_off`)"),
        ],
        ..op(
            "POST",
            "/v1/sessions/{id}/turns/{turn}/mine",
            &[Operate],
            "Mine one of the session's turns (what people wrote in it, as it stands) for memories as the gateway's own ingestion does: with the `cortex` model route (charged to the agent, within its budgets; the heuristic when it fails) or the heuristic. Nothing is saved: a miner running as its own process saves the items with `POST /v1/sessions/{id}/memories/batch`",
            || post(memories::mine_turn),
        )
    },
    Operation {
        params: &[SESSION, TURN],
        query: Some(fields::<api::StepsQuery>),
        responses: &[
            ok("200", "one page", of::<api::TurnStepPage>),
            error("400", "invalid query or cursor"),
            error("404", "no such session, or no such turn in it"),
        ],
        ..op(
            "GET",
            "/v1/sessions/{id}/turns/{turn}/steps",
            &[Read],
            "A turn's journal, a page at a time, in the order it was written: every model call (with a fingerprint of its request), tool call and resume",
            || get(sessions::steps),
        )
    },
    Operation {
        description: Some(
            "Each event's `event:` is its kind and its `data:` the kind's data (`LifecycleEvent` in the components); `text.delta` events are live only and carry no id, and a turn's `turn.started` is sent live, without an id, as the turn begins (the stored one, with its id, commits with the turn, and a stream resumed from before it replays that one). A stream whose token is revoked ends with an `error` event (`ErrorBody`).",
        ),
        params: &[SESSION, LAST_EVENT_ID],
        query: Some(fields::<api::StreamQuery>),
        responses: &[
            SSE_STREAM,
            error("404", "no such session"),
            error(
                "429",
                "the tenant or the token holds as many streams open as its quotas allow (`streams`, `streams_per_token`); `Retry-After` says when to retry",
            ),
        ],
        ..op(
            "GET",
            "/v1/sessions/{id}/events",
            &[Read],
            "Server-Sent Events: lifecycle events (resumable with Last-Event-ID or ?after=) and live text deltas",
            || get(sessions::stream),
        )
    },
    Operation {
        params: &[SESSION],
        responses: &[
            ok("200", "how many events run again", of::<api::ResumeResponse>),
            error("404", "no such session"),
        ],
        ..op(
            "POST",
            "/v1/sessions/{id}/resume",
            &[Operate],
            "Run a yielded turn again, and lift the session's pause",
            || post(sessions::resume),
        )
    },
    Operation {
        params: &[SESSION],
        responses: &[
            ok("200", "whether a turn was running", of::<api::CancelResponse>),
            error("404", "no such session"),
        ],
        ..op("POST", "/v1/sessions/{id}/cancel", &[Operate], "Cancel the running turn", || {
            post(sessions::cancel)
        })
    },
    Operation {
        params: &[SESSION],
        body: Some(of::<api::StartForkParams>),
        responses: &[
            ok("201", "started", of::<api::RunResponse>),
            ok("200", "started before under this Idempotency-Key", of::<api::RunResponse>),
            error("400", "invalid body"),
            error(
                "422",
                "a tool the worker cannot be given, or the session's limit of running branches or workers reached",
            ),
            error("404", "no such session"),
        ],
        ..op(
            "POST",
            "/v1/sessions/{id}/forks",
            &[Send],
            "Start a branch (a fork of the session's context) or a worker (a fresh context with a task and tools) of a session; its outcome arrives in the session as a message",
            || post(runs::start),
        )
    },
    Operation {
        params: &[SESSION],
        body: Some(of::<api::PauseParams>),
        responses: &[
            ok("200", "paused (or already paused)", of::<api::PauseResponse>),
            error("400", "invalid body"),
            error("404", "no such session"),
        ],
        ..op(
            "POST",
            "/v1/sessions/{id}/pause",
            &[Operate],
            "Pause a session: its running turn finishes, no new turn starts, events wait (`/resume` lifts it; audited)",
            || post(control::pause_session),
        )
    },
    Operation {
        description: Some(
            "Client messages are `ClientFrame`s, server messages `ServerFrame`s (both in the components): subscribe to a session or to all of an agent's sessions, then receive their events; send events (`{\"type\":\"event\",\"ref\":…,\"event\":{…}}`, the body `POST /v1/events` takes; the token needs the `send` scope), each answered by an `accepted` frame once stored (with `wait`, once its turn ended) or an `error` frame, both naming its `ref`. At most 16 event frames of a connection await their answers at once: past that, no frame is read until one is answered.",
        ),
        params: WS_HEADERS,
        responses: &[
            empty("101", "switching protocols"),
            error("400", "not a WebSocket upgrade request"),
            error(
                "429",
                "the tenant or the token holds as many streams open as its quotas allow (`streams`, `streams_per_token`); `Retry-After` says when to retry",
            ),
        ],
        ..op("GET", "/v1/ws", &[Read], "WebSocket of live events", || get(ws::upgrade))
    },
];
