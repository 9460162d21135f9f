//! The OpenAPI 3.1 document for the API as it exists, built from the wire types' JSON Schemas.
//! `docs/openapi.json` is a committed copy that a test keeps current.

use schemars::JsonSchema;
use serde_json::{Value, json};

use crate::api::{
    AgentListResponse, AgentResponse, ApprovalListResponse, ApprovalResponse, AuditResponse,
    AuditVerifyResponse, CreateAgentParams, CreateGrantParams, DecideApprovalParams, ErrorResponse,
    EventParams, EventResponse, GrantListResponse, GrantResponse, SessionListResponse,
    SessionResponse, SessionUpdate, ToolCallParams, ToolCallResponse, ToolListResponse,
    TurnListResponse, UsageResponse,
};
use crate::error::Code;

fn schema<T: JsonSchema>() -> Value {
    let mut value = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    // Nested definitions move to components; references are rewritten to point there.
    if let Some(object) = value.as_object_mut() {
        object.remove("$schema");
        object.remove("$defs");
    }
    rewrite_refs(&mut value);
    value
}

fn defs<T: JsonSchema>() -> Vec<(String, Value)> {
    let value = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    value
        .get("$defs")
        .and_then(Value::as_object)
        .map(|defs| {
            defs.iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    rewrite_refs(&mut v);
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                *r = r.replace("#/$defs/", "#/components/schemas/");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The approval list's `status` filter: every status, or `all`.
fn approval_statuses() -> Value {
    let statuses = clade_core::ApprovalStatus::ALL.iter().map(|s| s.as_str());
    Value::from(statuses.chain(["all"]).collect::<Vec<_>>())
}

fn json_content(name: &str) -> Value {
    json!({ "application/json": { "schema": reference(name) } })
}

/// A signed 64-bit integer: what the server reads such a parameter into.
fn int64() -> Value {
    json!({ "type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX })
}

/// An unsigned 64-bit integer: a stream's event ids.
fn uint64() -> Value {
    json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX })
}

/// An agent's or tenant's handle, as `clade_core::Handle` accepts it.
fn handle_schema() -> Value {
    json!({ "type": "string", "pattern": clade_core::HANDLE_PATTERN, "maxLength": 64 })
}

/// The statuses any /v1 operation may answer besides its own: what the authentication layer,
/// the extractors and the store answer whatever the route. Added where a route does not
/// already say more.
fn common_responses(operation: &Value) -> Vec<(&'static str, &'static str)> {
    let has_params = operation["parameters"].as_array().is_some_and(|p| !p.is_empty());
    let has_body = operation.get("requestBody").is_some();
    let mut common = vec![
        ("401", "missing or invalid token"),
        ("500", "an internal error (details are in the server's log)"),
        ("503", "the store is unavailable; retry later"),
    ];
    if has_params || has_body {
        common.push(("400", "an invalid parameter or body; the message names it"));
    }
    if has_body {
        common.push(("413", "body too large"));
        common.push(("415", "body is not JSON"));
    }
    let path_or_agent = operation["parameters"]
        .as_array()
        .is_some_and(|params| params.iter().any(|p| p["in"] == "path" || p["name"] == "agent"));
    if path_or_agent {
        common.push((
            "404",
            "no such resource in the caller's tenant (or not one the token reaches)",
        ));
    }
    common
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": json_content("ErrorResponse") })
}

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut schemas = serde_json::Map::new();
    fn add<T: JsonSchema>(schemas: &mut serde_json::Map<String, Value>, name: &str) {
        schemas.insert(name.into(), schema::<T>());
        for (def, value) in defs::<T>() {
            schemas.entry(def).or_insert(value);
        }
    }
    add::<AgentResponse>(&mut schemas, "AgentResponse");
    add::<AgentListResponse>(&mut schemas, "AgentListResponse");
    add::<CreateAgentParams>(&mut schemas, "CreateAgentParams");
    add::<ErrorResponse>(&mut schemas, "ErrorResponse");
    add::<UsageResponse>(&mut schemas, "UsageResponse");
    add::<EventParams>(&mut schemas, "EventParams");
    add::<EventResponse>(&mut schemas, "EventResponse");
    add::<SessionResponse>(&mut schemas, "SessionResponse");
    add::<SessionUpdate>(&mut schemas, "SessionUpdate");
    add::<SessionListResponse>(&mut schemas, "SessionListResponse");
    add::<TurnListResponse>(&mut schemas, "TurnListResponse");
    add::<ToolListResponse>(&mut schemas, "ToolListResponse");
    add::<ToolCallParams>(&mut schemas, "ToolCallParams");
    add::<ToolCallResponse>(&mut schemas, "ToolCallResponse");
    add::<ApprovalResponse>(&mut schemas, "ApprovalResponse");
    add::<ApprovalListResponse>(&mut schemas, "ApprovalListResponse");
    add::<DecideApprovalParams>(&mut schemas, "DecideApprovalParams");
    add::<GrantResponse>(&mut schemas, "GrantResponse");
    add::<GrantListResponse>(&mut schemas, "GrantListResponse");
    add::<CreateGrantParams>(&mut schemas, "CreateGrantParams");
    add::<AuditResponse>(&mut schemas, "AuditResponse");
    add::<AuditVerifyResponse>(&mut schemas, "AuditVerifyResponse");
    let handle_param = json!({
        "name": "handle", "in": "path", "required": true,
        "schema": handle_schema()
    });
    let session_param = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } });
    let codes: Vec<Value> = Code::ALL.iter().map(|c| json!(c.as_str())).collect();
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Clade gateway API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Every /v1 call needs `Authorization: Bearer <token>` (tokens are per tenant). \
                 Errors have the body `{{\"error\": {{\"code\", \"message\"}}}}` with code one of: {}.",
                codes.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
            )
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/healthz": { "get": {
                "summary": "Liveness: the process is up", "security": [],
                "responses": { "200": { "description": "alive" } }
            }},
            "/readyz": { "get": {
                "summary": "Readiness: the store answers. `sandbox` reports the sandbox's self-check (off, checking, ready, or broken with its reason); a broken sandbox makes the status `degraded`: chat works, host-touching tools are refused", "security": [],
                "responses": { "200": { "description": "ready or degraded" }, "503": { "description": "store unavailable" } }
            }},
            "/openapi.json": { "get": {
                "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1 document" } }
            }},
            "/v1/agents": {
                "get": {
                    "summary": "List the caller's agents, ordered by handle",
                    "parameters": [
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                        { "name": "cursor", "in": "query", "description": "the `next_cursor` of the previous page: the handle the next page starts after", "schema": handle_schema() }
                    ],
                    "responses": {
                        "200": { "description": "one page", "content": json_content("AgentListResponse") },
                        "400": error_response("invalid query"),
                        "401": error_response("missing or invalid token")
                    }
                },
                "post": {
                    "summary": "Create an agent",
                    "requestBody": { "required": true, "content": json_content("CreateAgentParams") },
                    "responses": {
                        "201": { "description": "created", "content": json_content("AgentResponse") },
                        "400": error_response("invalid body or handle"),
                        "401": error_response("missing or invalid token"),
                        "409": error_response("handle already taken in this tenant"),
                        "429": error_response("the tenant has as many agents as its quota allows (`quota_exceeded`)"),
                        "413": error_response("body too large"),
                        "415": error_response("body is not JSON"),
                        "422": error_response("unknown template")
                    }
                }
            },
            "/v1/events": {
                "post": {
                    "summary": "Send an event to an agent; answered once it is durably stored",
                    "description": "The `Idempotency-Key` header may carry the key instead of the body's `idempotency_key` (printable ASCII, 1-256 characters); sent both ways, the two must be equal.",
                    "requestBody": { "required": true, "content": json_content("EventParams") },
                    "responses": {
                        "200": { "description": "with wait: the finished turn", "content": json_content("EventResponse") },
                        "202": { "description": "stored; the turn runs", "content": json_content("EventResponse") },
                        "400": error_response("invalid body"),
                        "401": error_response("missing or invalid token"),
                        "404": error_response("no such agent"),
                        "409": error_response("idempotency key reused with another payload"),
                        "413": error_response("body too large"),
                        "422": error_response("no agent named and no binding matches"),
                        "429": error_response("the session's queue is full, or the tenant sends events faster than its quota (`rate_limited`; see Retry-After), or the store holds as many bytes for the tenant as its `stored_bytes` quota allows (`quota_exceeded`)")
                    }
                }
            },
            "/v1/sessions": {
                "get": {
                    "summary": "The caller's sessions, most recently active first",
                    "parameters": [
                        { "name": "agent", "in": "query", "schema": handle_schema() },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }
                    ],
                    "responses": {
                        "200": { "description": "sessions", "content": json_content("SessionListResponse") },
                        "401": error_response("missing or invalid token")
                    }
                }
            },
            "/v1/sessions/{id}": { "get": {
                "summary": "A session",
                "parameters": [ session_param.clone() ],
                "responses": { "200": { "description": "the session", "content": json_content("SessionResponse") }, "404": error_response("no such session") }
            }, "patch": {
                "summary": "Set the session's own settings (its queue mode)",
                "parameters": [ session_param.clone() ],
                "requestBody": { "required": true, "content": json_content("SessionUpdate") },
                "responses": { "200": { "description": "the session", "content": json_content("SessionResponse") }, "400": error_response("malformed body or unknown queue mode"), "404": error_response("no such session") }
            }},
            "/v1/sessions/{id}/turns": { "get": {
                "summary": "A session's turns, oldest first, a page at a time, each with its events, usage and journal steps",
                "parameters": [
                    session_param.clone(),
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                    { "name": "cursor", "in": "query", "description": "the `next_cursor` of the previous page: the turn the next page starts after", "schema": { "type": "string", "format": "uuid" } }
                ],
                "responses": { "200": { "description": "one page", "content": json_content("TurnListResponse") }, "400": error_response("invalid query or cursor"), "404": error_response("no such session") }
            }},
            "/v1/sessions/{id}/events": { "get": {
                "summary": "Server-Sent Events: lifecycle events (resumable with Last-Event-ID or ?after=) and live text deltas",
                "parameters": [ session_param.clone(), { "name": "Last-Event-ID", "in": "header", "schema": uint64() }, { "name": "after", "in": "query", "description": "as Last-Event-ID", "schema": uint64() } ],
                "responses": { "200": { "description": "text/event-stream" }, "404": error_response("no such session") }
            }},
            "/v1/sessions/{id}/resume": { "post": {
                "summary": "Run a yielded turn again",
                "parameters": [ session_param.clone() ],
                "responses": { "200": { "description": "{resumed_events}" }, "404": error_response("no such session") }
            }},
            "/v1/sessions/{id}/cancel": { "post": {
                "summary": "Cancel the running turn",
                "parameters": [ session_param ],
                "responses": { "200": { "description": "{cancelled}" }, "404": error_response("no such session") }
            }},
            "/v1/ws": { "get": {
                "summary": "WebSocket of live events: send {\"type\":\"subscribe\",\"session\":id} or {\"type\":\"subscribe\",\"agent\":handle}",
                "parameters": [
                    { "name": "Connection", "in": "header", "required": true, "schema": { "type": "string", "enum": ["Upgrade"] } },
                    { "name": "Upgrade", "in": "header", "required": true, "schema": { "type": "string", "enum": ["websocket"] } },
                    { "name": "Sec-WebSocket-Version", "in": "header", "required": true, "schema": { "type": "string", "enum": ["13"] } },
                    { "name": "Sec-WebSocket-Key", "in": "header", "required": true, "schema": { "type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$" } }
                ],
                "responses": { "101": { "description": "switching protocols" }, "400": error_response("not a WebSocket upgrade request"), "401": error_response("missing or invalid token") }
            }},
            "/v1/usage": {
                "get": {
                    "summary": "Model usage and cost of the caller's tenant, per agent and model",
                    "parameters": [
                        { "name": "agent", "in": "query", "schema": handle_schema() },
                        { "name": "since", "in": "query", "description": "Unix milliseconds; default 30 days ago", "schema": int64() }
                    ],
                    "responses": {
                        "200": { "description": "usage", "content": json_content("UsageResponse") },
                        "400": error_response("invalid query"),
                        "401": error_response("missing or invalid token"),
                        "404": error_response("no such agent in the caller's tenant")
                    }
                }
            },
            "/v1/agents/{handle}": {
                "get": {
                    "summary": "Show an agent",
                    "parameters": [ handle_param.clone() ],
                    "responses": {
                        "200": { "description": "the agent", "content": json_content("AgentResponse") },
                        "401": error_response("missing or invalid token"),
                        "404": error_response("no such agent in the caller's tenant")
                    }
                },
                "delete": {
                    "summary": "Delete an agent with its sessions, secrets and workspace",
                    "parameters": [ handle_param.clone() ],
                    "responses": {
                        "204": { "description": "deleted" },
                        "401": error_response("missing or invalid token"),
                        "404": error_response("no such agent in the caller's tenant")
                    }
                }
            }
        }
    });
    if let (Some(paths), Value::Object(more)) =
        (document["paths"].as_object_mut(), permission_paths(&handle_param))
    {
        paths.extend(more);
    }
    // Every /v1 operation: the scopes that may call it (from the one table the gateway
    // enforces) and the 403 a token without them gets.
    if let Some(paths) = document["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut().filter(|(path, _)| path.starts_with("/v1")) {
            let Some(operations) = item.as_object_mut() else { continue };
            for (method, operation) in operations.iter_mut() {
                let scopes = crate::scopes::required(&method.to_ascii_uppercase(), path)
                    .map(|scopes| scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                    .unwrap_or_default();
                operation["x-clade-scopes"] = json!(scopes);
                operation["responses"]["403"] = error_response(&format!(
                    "the token's scopes do not allow this route (it needs {})",
                    scopes.join(" or ")
                ));
                for (status, description) in common_responses(operation) {
                    if operation["responses"].get(status).is_none() {
                        operation["responses"][status] = error_response(description);
                    }
                }
            }
        }
    }
    document
}

/// Tools, approvals, grants and the audit log.
fn permission_paths(handle_param: &Value) -> Value {
    let id_param = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } });
    let name_param =
        json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    json!({
        "/v1/agents/{handle}/tools": { "get": {
            "summary": "The tools an agent can call, with their argument schemas",
            "parameters": [ handle_param ],
            "responses": { "200": { "description": "tools", "content": json_content("ToolListResponse") }, "404": error_response("no such agent") }
        }},
        "/v1/agents/{handle}/tools/{name}/call": { "post": {
            "summary": "Run one tool call through the path a model's call takes: policy, approval (waits while asked), sandbox, audit",
            "parameters": [ handle_param, name_param ],
            "requestBody": { "required": true, "content": json_content("ToolCallParams") },
            "responses": {
                "200": { "description": "the call's result (is_error when refused or failed)", "content": json_content("ToolCallResponse") },
                "400": error_response("invalid body"),
                "404": error_response("no such agent or tool")
            }
        }},
        "/v1/approvals": { "get": {
            "summary": "Tool calls waiting for an operator (or decided ones, by status), newest first",
            "parameters": [
                { "name": "status", "in": "query", "schema": { "type": "string", "enum": approval_statuses(), "default": clade_core::ApprovalStatus::Pending.as_str() } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }
            ],
            "responses": { "200": { "description": "approvals", "content": json_content("ApprovalListResponse") }, "400": error_response("invalid query") }
        }},
        "/v1/approvals/{id}": { "post": {
            "summary": "Approve, deny, or approve always (adds an audited allow grant for this tool and resource)",
            "parameters": [ id_param.clone() ],
            "requestBody": { "required": true, "content": json_content("DecideApprovalParams") },
            "responses": {
                "200": { "description": "the decided approval", "content": json_content("ApprovalResponse") },
                "400": error_response("invalid decision"),
                "404": error_response("no such approval"),
                "409": error_response("already decided")
            }
        }},
        "/v1/grants": {
            "get": {
                "summary": "Grants (policy rules per agent), revoked ones included",
                "parameters": [ { "name": "agent", "in": "query", "schema": handle_schema() } ],
                "responses": { "200": { "description": "grants", "content": json_content("GrantListResponse") }, "404": error_response("no such agent") }
            },
            "post": {
                "summary": "Add a grant; with `parent`, a delegation that may only narrow its parent",
                "requestBody": { "required": true, "content": json_content("CreateGrantParams") },
                "responses": {
                    "201": { "description": "created", "content": json_content("GrantResponse") },
                    "400": error_response("invalid grant, or wider than its parent"),
                    "404": error_response("no such agent or parent grant")
                }
            }
        },
        "/v1/grants/{id}": { "delete": {
            "summary": "Revoke a grant (and with it every grant delegated from it), from the next call on",
            "parameters": [ id_param ],
            "responses": { "204": { "description": "revoked" }, "404": error_response("no such live grant") }
        }},
        "/v1/audit": { "get": {
            "summary": "The tenant's hash-chained audit log of tool calls, decisions, approvals and grant changes; `verify=true` checks the chain",
            "parameters": [
                { "name": "agent", "in": "query", "schema": handle_schema() },
                { "name": "tool", "in": "query", "schema": { "type": "string" } },
                { "name": "since", "in": "query", "schema": int64() },
                { "name": "until", "in": "query", "schema": int64() },
                { "name": "after", "in": "query", "schema": int64() },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                { "name": "verify", "in": "query", "schema": { "type": "boolean" } }
            ],
            "responses": { "200": {
                "description": "a page of records, or with verify=true whether the chain holds",
                "content": { "application/json": { "schema": { "oneOf": [reference("AuditResponse"), reference("AuditVerifyResponse")] } } }
            } }
        }}
    })
}
