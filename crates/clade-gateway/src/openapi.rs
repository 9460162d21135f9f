//! The OpenAPI 3.1 document, generated from the route table ([`crate::routes::OPERATIONS`]) and
//! the wire types' JSON Schemas (`clade-protocol`). `docs/openapi.json` is a committed copy that
//! a test keeps current.

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::error::Code;
use crate::routes::{OPERATIONS, Operation};

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

fn error_response(generator: &mut SchemaGenerator, description: &str) -> Value {
    let schema = generator.subschema_for::<clade_protocol::ErrorResponse>();
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// A query type's fields as query parameters: each property, required if the type requires it,
/// its description lifted to the parameter, and `null` dropped (an absent parameter is how a
/// query says "none").
fn query_parameters(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return Vec::new() };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property.as_object_mut().and_then(|p| p.remove("description"));
            without_null(&mut property);
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

/// `Option<T>`'s schema as `T`'s: `type: [T, "null"]` loses its `null`, `anyOf: [T, null]`
/// becomes `T`, and a `null` default goes.
fn without_null(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else { return };
    if object.get("default").is_some_and(Value::is_null) {
        object.remove("default");
    }
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
        }
    }
    let any_of = object.get("anyOf").and_then(Value::as_array).map(|alternatives| {
        alternatives.iter().filter(|a| a.get("type") != Some(&json!("null"))).cloned().collect()
    });
    if let Some(mut alternatives) = any_of.filter(|a: &Vec<Value>| a.len() == 1) {
        object.remove("anyOf");
        if let Some(Value::Object(only)) = alternatives.pop() {
            object.extend(only);
        }
    }
}

/// Where an answer's values lead (an OpenAPI link): a reader sees how the resources connect,
/// and a fuzzer (schemathesis's stateful phase) chains the calls, reaching what a made-up id
/// never would.
struct Link {
    /// The operation, and the statuses whose answers carry the values.
    from: (&'static str, &'static str),
    statuses: &'static [&'static str],
    name: &'static str,
    to: (&'static str, &'static str),
    /// The target's parameters, each a runtime expression (`$response.body#/id`).
    parameters: &'static [(&'static str, &'static str)],
}

const AGENT: &[(&str, &str)] = &[("handle", "$response.body#/handle")];
const SESSION: &[(&str, &str)] = &[("id", "$response.body#/session_id")];
const ID: &[(&str, &str)] = &[("id", "$response.body#/id")];

const LINKS: &[Link] = &[
    Link {
        from: ("POST", "/v1/agents"),
        statuses: &["201"],
        name: "agent",
        to: ("GET", "/v1/agents/{handle}"),
        parameters: AGENT,
    },
    Link {
        from: ("POST", "/v1/agents"),
        statuses: &["201"],
        name: "tools",
        to: ("GET", "/v1/agents/{handle}/tools"),
        parameters: AGENT,
    },
    Link {
        from: ("POST", "/v1/events"),
        statuses: &["200", "202"],
        name: "session",
        to: ("GET", "/v1/sessions/{id}"),
        parameters: SESSION,
    },
    Link {
        from: ("POST", "/v1/events"),
        statuses: &["200", "202"],
        name: "turns",
        to: ("GET", "/v1/sessions/{id}/turns"),
        parameters: SESSION,
    },
    Link {
        from: ("POST", "/v1/events"),
        statuses: &["200"],
        name: "steps",
        to: ("GET", "/v1/sessions/{id}/turns/{turn}/steps"),
        parameters: &[("id", "$response.body#/session_id"), ("turn", "$response.body#/turn_id")],
    },
    Link {
        from: ("POST", "/v1/events"),
        statuses: &["200", "202"],
        name: "cancel",
        to: ("POST", "/v1/sessions/{id}/cancel"),
        parameters: SESSION,
    },
    Link {
        from: ("POST", "/v1/agents/{handle}/jobs"),
        statuses: &["201"],
        name: "job",
        to: ("GET", "/v1/agents/{handle}/jobs/{name}"),
        parameters: &[("handle", "$request.path.handle"), ("name", "$response.body#/name")],
    },
    Link {
        from: ("POST", "/v1/agents/{handle}/memories"),
        statuses: &["200", "201"],
        name: "memory",
        to: ("GET", "/v1/agents/{handle}/memories/{id}"),
        parameters: &[("handle", "$request.path.handle"), ("id", "$response.body#/memory/id")],
    },
    Link {
        from: ("POST", "/v1/agents/{handle}/memories"),
        statuses: &["200", "201"],
        name: "forget",
        to: ("DELETE", "/v1/agents/{handle}/memories/{id}"),
        parameters: &[("handle", "$request.path.handle"), ("id", "$response.body#/memory/id")],
    },
    Link {
        from: ("PUT", "/v1/agents/{handle}/settings/{key}"),
        statuses: &["200"],
        name: "unset",
        to: ("DELETE", "/v1/agents/{handle}/settings/{key}"),
        parameters: &[("handle", "$request.path.handle"), ("key", "$request.path.key")],
    },
    Link {
        from: ("POST", "/v1/grants"),
        statuses: &["201"],
        name: "revoke",
        to: ("DELETE", "/v1/grants/{id}"),
        parameters: ID,
    },
    Link {
        from: ("POST", "/v1/leases"),
        statuses: &["201"],
        name: "revoke",
        to: ("DELETE", "/v1/leases/{id}"),
        parameters: ID,
    },
    Link {
        from: ("POST", "/v1/sessions/{id}/forks"),
        statuses: &["200", "201"],
        name: "run",
        to: ("GET", "/v1/runs/{id}"),
        parameters: ID,
    },
    Link {
        from: ("POST", "/v1/sessions/{id}/forks"),
        statuses: &["200", "201"],
        name: "cancel",
        to: ("POST", "/v1/runs/{id}/cancel"),
        parameters: ID,
    },
];

/// An operation's `operationId`: its method and path, as an identifier.
fn operation_id(method: &str, path: &str) -> String {
    let words = path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    std::iter::once(method.to_ascii_lowercase().as_str()).chain(words).collect::<Vec<_>>().join("_")
}

/// Puts each of [`LINKS`] on the answers it starts from.
fn add_links(paths: &mut Map<String, Value>) {
    for link in LINKS {
        let (method, path) = link.from;
        let parameters: Map<String, Value> = link
            .parameters
            .iter()
            .map(|(name, value)| ((*name).to_owned(), json!(value)))
            .collect();
        let target = json!({
            "operationId": operation_id(link.to.0, link.to.1),
            "parameters": parameters,
        });
        for status in link.statuses {
            if let Some(response) = paths
                .get_mut(path)
                .and_then(|item| item.get_mut(method.to_ascii_lowercase()))
                .and_then(|operation| operation["responses"].get_mut(*status))
            {
                response["links"][link.name] = target.clone();
            }
        }
    }
}

/// One operation's object.
fn operation(generator: &mut SchemaGenerator, op: &Operation) -> Value {
    let mut operation = json!({
        "operationId": operation_id(op.method, op.path),
        "summary": op.summary,
    });
    if let Some(description) = op.description {
        operation["description"] = json!(description);
    }
    let mut parameters: Vec<Value> = op
        .params
        .iter()
        .map(|param| {
            let mut parameter = json!({
                "name": param.name,
                "in": param.location,
                "required": param.required,
                "schema": (param.schema)(generator),
            });
            if let Some(description) = param.description {
                parameter["description"] = json!(description);
            }
            parameter
        })
        .collect();
    if let Some(query) = op.query {
        parameters.extend(query_parameters(
            &serde_json::to_value((query)(generator)).unwrap_or_default(),
        ));
    }
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = op.body {
        operation["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": (body)(generator) } },
        });
    }
    let mut responses = Map::new();
    for reply in op.responses {
        let mut response = json!({ "description": reply.description });
        // A reply may be JSON, another media type (a stream), or either (as a request asks).
        let mut content = serde_json::Map::new();
        if let Some(body) = reply.body {
            content.insert("application/json".into(), json!({ "schema": (body)(generator) }));
        }
        if let Some(media) = reply.media {
            content.insert(media.into(), json!({}));
        }
        if !content.is_empty() {
            response["content"] = Value::Object(content);
        }
        responses.insert(reply.status.to_owned(), response);
    }
    operation["responses"] = Value::Object(responses);
    if op.scopes.is_empty() {
        operation["security"] = json!([]);
        return operation;
    }
    // The scopes that may call it (the check `auth.rs` makes), the 403 a token without them
    // gets, and what every /v1 route may answer.
    let scopes: Vec<&str> = op.scopes.iter().map(|s| s.as_str()).collect();
    operation["x-clade-scopes"] = json!(scopes);
    operation["responses"]["403"] = error_response(
        generator,
        &format!("the token's scopes do not allow this route (it needs {})", scopes.join(" or ")),
    );
    for (status, description) in common_responses(&operation) {
        if operation["responses"].get(status).is_none() {
            operation["responses"][status] = error_response(generator, description);
        }
    }
    operation
}

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths.entry(op.path).or_insert_with(|| json!({}));
        item[op.method.to_ascii_lowercase()] = operation(&mut generator, op);
    }
    add_links(&mut paths);
    // What streams and webhooks carry, which no request or response body names.
    let webhook = generator.subschema_for::<clade_protocol::WebhookEvent>();
    generator.subschema_for::<clade_protocol::LifecycleEvent>();
    generator.subschema_for::<clade_protocol::ClientFrame>();
    generator.subschema_for::<clade_protocol::ServerFrame>();
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Clade gateway API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Every /v1 call needs `Authorization: Bearer <token>` (tokens are per tenant). \
                 Errors have the body `{{\"error\": {{\"code\", \"message\"}}}}` with code one of: {}.",
                codes.join(", ")
            )
        },
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ { "bearer": [] } ],
        "paths": paths,
        "webhooks": {
            "lifecycle": { "post": {
                "summary": "A lifecycle event, posted to each subscriber in clade.yaml (`subscribers`), in order per session, at least once",
                "description": "Signed in `X-Clade-Signature`: `sha256=<hex>`, HMAC-SHA256 of the body under the subscriber's secret. A receiver drops repeats by `id`.",
                "requestBody": { "required": true, "content": { "application/json": { "schema": webhook } } },
                "responses": { "2XX": { "description": "delivered; anything else is retried with back-off, then dead-lettered" } }
            } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every link starts from an answer the document has and leads to an operation it has,
    /// naming only parameters that operation takes: a link that points nowhere fails here,
    /// not in a fuzzer's run.
    #[test]
    fn every_link_leads_from_a_documented_answer_to_a_documented_operation() {
        let document = document();
        let find = |(method, path): (&str, &str)| {
            document["paths"][path][method.to_ascii_lowercase()].clone()
        };
        for link in LINKS {
            let from = find(link.from);
            for status in link.statuses {
                assert!(
                    from["responses"][status]["links"][link.name].is_object(),
                    "{:?} answers no {status} with link {}",
                    link.from,
                    link.name
                );
            }
            let to = find(link.to);
            assert!(to.is_object(), "{:?} is not an operation", link.to);
            let takes: Vec<&str> = to["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for (name, _) in link.parameters {
                assert!(takes.contains(name), "{:?} takes no parameter {name}", link.to);
            }
        }
    }
}
