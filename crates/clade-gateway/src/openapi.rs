//! The OpenAPI 3.1 document for the API as it exists, built from the wire types' JSON Schemas.
//! `docs/openapi.json` is a committed copy that a test keeps current.

use schemars::JsonSchema;
use serde_json::{Value, json};

use crate::api::{
    AgentListResponse, AgentResponse, CreateAgentParams, ErrorResponse, UsageResponse,
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

fn json_content(name: &str) -> Value {
    json!({ "application/json": { "schema": reference(name) } })
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": json_content("ErrorResponse") })
}

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut schemas = serde_json::Map::new();
    schemas.insert("AgentResponse".into(), schema::<AgentResponse>());
    schemas.insert("AgentListResponse".into(), schema::<AgentListResponse>());
    schemas.insert("CreateAgentParams".into(), schema::<CreateAgentParams>());
    schemas.insert("ErrorResponse".into(), schema::<ErrorResponse>());
    schemas.insert("UsageResponse".into(), schema::<UsageResponse>());
    for (name, value) in defs::<AgentListResponse>()
        .into_iter()
        .chain(defs::<ErrorResponse>())
        .chain(defs::<UsageResponse>())
    {
        schemas.entry(name).or_insert(value);
    }
    let handle_param = json!({
        "name": "handle", "in": "path", "required": true,
        "schema": { "type": "string", "pattern": "^[a-z0-9_-]{1,64}$" }
    });
    let session_param = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } });
    let codes: Vec<Value> = Code::ALL.iter().map(|c| json!(c.as_str())).collect();
    json!({
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
                "summary": "Readiness: the store answers", "security": [],
                "responses": { "200": { "description": "ready" }, "503": { "description": "store unavailable" } }
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
                        { "name": "cursor", "in": "query", "schema": { "type": "string" } }
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
                        "413": error_response("body too large"),
                        "415": error_response("body is not JSON"),
                        "422": error_response("unknown template")
                    }
                }
            },
            "/v1/events": {
                "post": {
                    "summary": "Send an event to an agent; answered once it is durably stored",
                    "parameters": [ { "name": "Idempotency-Key", "in": "header", "schema": { "type": "string" } } ],
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
                        "429": error_response("the session's queue is full; see Retry-After")
                    }
                }
            },
            "/v1/sessions": {
                "get": {
                    "summary": "The caller's sessions, most recently active first",
                    "parameters": [
                        { "name": "agent", "in": "query", "schema": { "type": "string" } },
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
            }},
            "/v1/sessions/{id}/turns": { "get": {
                "summary": "A session's full turns, oldest first",
                "parameters": [ session_param.clone() ],
                "responses": { "200": { "description": "turns", "content": json_content("TurnListResponse") }, "404": error_response("no such session") }
            }},
            "/v1/sessions/{id}/events": { "get": {
                "summary": "Server-Sent Events: lifecycle events (resumable with Last-Event-ID or ?after=) and live text deltas",
                "parameters": [ session_param.clone(), { "name": "Last-Event-ID", "in": "header", "schema": { "type": "integer" } }, { "name": "after", "in": "query", "schema": { "type": "integer" } } ],
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
                "responses": { "101": { "description": "switching protocols" }, "401": error_response("missing or invalid token") }
            }},
            "/v1/usage": {
                "get": {
                    "summary": "Model usage and cost of the caller's tenant, per agent and model",
                    "parameters": [
                        { "name": "agent", "in": "query", "schema": { "type": "string" } },
                        { "name": "since", "in": "query", "schema": { "type": "integer", "description": "Unix milliseconds; default 30 days ago" } }
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
                    "parameters": [ handle_param ],
                    "responses": {
                        "204": { "description": "deleted" },
                        "401": error_response("missing or invalid token"),
                        "404": error_response("no such agent in the caller's tenant")
                    }
                }
            }
        }
    })
}
