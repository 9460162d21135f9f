//! OpenAPI tools: an OpenAPI 3 document's operations as tools, `openapi.<api>.<operation>`.
//! Each tool's arguments are the operation's parameters (path, query, header) by name, and
//! `body` for a JSON request body, with the schemas the document gives (local `$ref`s
//! resolved). A call builds the request and sends it through the SSRF guard ([`crate::net`]),
//! like `http.request`: loopback and private addresses need a grant with `private_network`.
//!
//! The tools touch the host (the network), so policy denies them unless a rule allows them;
//! their resource is the API's host, as `http.request`'s is. Safe methods are `Pure`, `PUT` and
//! `DELETE` `Idempotent`, the others `AtMostOnce`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::{CallContext, EffectClass, Error, Listing, Tool, ToolResult};

/// The longest response body returned to the model.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How deep `$ref`s are followed (a recursive schema stops there, as "any value").
const MAX_REF_DEPTH: usize = 16;
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// One configured API.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    /// `[a-z0-9_-]+`: the middle of its tools' names.
    pub name: String,
    /// The OpenAPI 3 document (JSON or YAML text).
    pub document: String,
    /// Where the requests go; default: the document's first `servers` URL.
    pub base_url: Option<String>,
    /// The agents that get its tools ([`clade_config::agent_pattern_covers`]).
    pub agents: Vec<String>,
    /// Headers every request carries (credentials).
    pub headers: Vec<(String, String)>,
    /// Only these operation ids, if given.
    pub operations: Option<Vec<String>>,
    pub timeout: Duration,
}

/// Why a document gave no tools.
#[derive(Debug, thiserror::Error)]
#[error("openapi.{api}: {message}")]
pub struct OpenApiError {
    pub api: String,
    pub message: String,
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Path,
    Query,
    Header,
}

#[derive(Debug, Clone)]
struct Parameter {
    name: String,
    place: Place,
}

/// The API an operation belongs to: what every one of its calls shares.
#[derive(Debug)]
struct Api {
    base: url::Url,
    agents: Arc<[String]>,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

/// One operation as a tool.
pub struct Operation {
    api: Arc<Api>,
    listing: Listing,
    method: String,
    path: String,
    parameters: Vec<Parameter>,
    has_body: bool,
}

/// The tools of `spec`'s document.
pub fn tools(spec: &ApiSpec) -> Result<Vec<Arc<dyn Tool>>, OpenApiError> {
    let fail = |message: String| OpenApiError { api: spec.name.clone(), message };
    let document: Value = if spec.document.trim_start().starts_with('{') {
        serde_json::from_str(&spec.document)
            .map_err(|e| fail(format!("the document is not JSON: {e}")))?
    } else {
        serde_saphyr::from_str(&spec.document)
            .map_err(|e| fail(format!("the document is neither JSON nor YAML: {e}")))?
    };
    let version = document.get("openapi").and_then(Value::as_str).unwrap_or_default();
    if !version.starts_with("3.") {
        return Err(fail(format!(
            "not an OpenAPI 3 document (its `openapi` field is {:?}; Swagger 2 documents need converting)",
            document.get("openapi").or(document.get("swagger")).unwrap_or(&Value::Null)
        )));
    }
    let base_text = match &spec.base_url {
        Some(url) => url.clone(),
        None => document
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| fail("the document names no server: give base_url".into()))?,
    };
    let base = url::Url::parse(&base_text).map_err(|e| {
        fail(format!("the base URL {base_text:?} is not an absolute URL ({e}): give base_url"))
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(fail(format!("the base URL {base_text:?} is not http or https")));
    }
    let api = Arc::new(Api {
        base,
        agents: spec.agents.clone().into(),
        headers: spec.headers.clone(),
        timeout: spec.timeout,
    });
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .ok_or_else(|| fail("the document has no paths".into()))?;
    let mut tools: BTreeMap<String, Arc<dyn Tool>> = BTreeMap::new();
    for (path, item) in paths {
        let item = resolve(item, &document, 0);
        let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            let operation = resolve(operation, &document, 0);
            let id = operation
                .get("operationId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{method}_{path}"));
            if let Some(only) = &spec.operations
                && !only.contains(&id)
            {
                continue;
            }
            let name = tool_name(&spec.name, &id);
            let tool =
                operation_tool(&api, &document, name.clone(), method, path, &shared, &operation)
                    .map_err(|message| {
                        fail(format!("{} {path} ({id}): {message}", method.to_uppercase()))
                    })?;
            if tools.insert(name.clone(), Arc::new(tool)).is_some() {
                return Err(fail(format!(
                    "two operations make the tool name {name}: give them distinct operationIds"
                )));
            }
        }
    }
    if let Some(only) = &spec.operations {
        for id in only {
            if !tools.contains_key(&tool_name(&spec.name, id)) {
                return Err(fail(format!(
                    "operations names {id:?}, which the document does not have"
                )));
            }
        }
    }
    if tools.is_empty() {
        return Err(fail("the document has no operations".into()));
    }
    Ok(tools.into_values().collect())
}

/// `openapi.<api>.<id>` with the id in the tools' alphabet, at most 64 characters.
fn tool_name(api: &str, id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("openapi.{api}.{}", id.trim_matches('_'));
    name.truncate(64);
    name
}

fn operation_tool(
    api: &Arc<Api>,
    document: &Value,
    name: String,
    method: &str,
    path: &str,
    shared: &Value,
    operation: &Value,
) -> Result<Operation, String> {
    let mut declared: Vec<Value> = Vec::new();
    for list in [shared, operation.get("parameters").unwrap_or(&Value::Null)] {
        for parameter in list.as_array().into_iter().flatten() {
            let parameter = resolve(parameter, document, 0);
            // An operation's parameter replaces the path item's of the same name and place.
            declared.retain(|p| !(p["name"] == parameter["name"] && p["in"] == parameter["in"]));
            declared.push(parameter);
        }
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut parameters = Vec::new();
    for parameter in declared {
        let name = parameter["name"].as_str().ok_or("a parameter has no name")?.to_owned();
        let place = match parameter["in"].as_str() {
            Some("path") => Place::Path,
            Some("query") => Place::Query,
            Some("header") => Place::Header,
            Some("cookie") => {
                return Err(format!("parameter {name} is a cookie, which Clade does not send"));
            }
            other => return Err(format!("parameter {name} is in {other:?}")),
        };
        if name == "body" || properties.contains_key(&name) {
            return Err(format!("two parameters (or one and the body) are named {name}"));
        }
        let mut schema =
            parameter.get("schema").map(|s| resolve(s, document, 0)).unwrap_or(json!({}));
        if let (Some(text), Some(object)) =
            (parameter["description"].as_str(), schema.as_object_mut())
        {
            object.entry("description").or_insert_with(|| Value::String(text.to_owned()));
        }
        if place == Place::Path || parameter["required"] == true {
            required.push(Value::String(name.clone()));
        }
        properties.insert(name.clone(), schema);
        parameters.push(Parameter { name, place });
    }
    for parameter in parameters.iter().filter(|p| p.place == Place::Path) {
        if !path.contains(&format!("{{{}}}", parameter.name)) {
            return Err(format!("path parameter {} is not in the path", parameter.name));
        }
    }
    let body = operation.get("requestBody").map(|b| resolve(b, document, 0));
    let body_schema = body.as_ref().and_then(|b| b.pointer("/content/application~1json/schema"));
    if let Some(schema) = body_schema {
        properties.insert("body".into(), resolve(schema, document, 0));
        if body.as_ref().is_some_and(|b| b["required"] == true) {
            required.push(Value::String("body".into()));
        }
    } else if body.is_some() {
        return Err("its request body is not application/json, which Clade does not send".into());
    }
    let summary = operation["summary"].as_str().unwrap_or_default();
    let details = operation["description"].as_str().unwrap_or_default();
    let mut description = format!("{} {path}. {summary} {details}", method.to_uppercase());
    description = description.trim().to_owned();
    if description.len() > 1024 {
        let mut cut = 1024;
        while !description.is_char_boundary(cut) {
            cut -= 1;
        }
        description.truncate(cut);
    }
    Ok(Operation {
        api: api.clone(),
        listing: Listing {
            name,
            description,
            schema: json!({ "type": "object", "properties": properties, "required": required }),
            agents: api.agents.clone(),
        },
        method: method.to_uppercase(),
        path: path.to_owned(),
        parameters,
        has_body: body_schema.is_some(),
    })
}

/// `value` with its local `$ref`s replaced by what they point at, to `MAX_REF_DEPTH`.
fn resolve(value: &Value, document: &Value, depth: usize) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                if depth >= MAX_REF_DEPTH {
                    return json!({});
                }
                return match reference.strip_prefix('#').and_then(|p| document.pointer(p)) {
                    Some(target) => resolve(target, document, depth + 1),
                    // A reference to another file, or a dangling one: any value.
                    None => json!({}),
                };
            }
            Value::Object(
                map.iter().map(|(k, v)| (k.clone(), resolve(v, document, depth))).collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve(v, document, depth)).collect())
        }
        other => other.clone(),
    }
}

/// A parameter's value as text in a URL or header.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Operation {
    /// The request the arguments make: the URL (path filled in, query added) and headers.
    fn request(&self, args: &Value) -> Result<crate::net::Request, Error> {
        let invalid =
            |reason: String| Error::InvalidArguments { tool: self.listing.name.clone(), reason };
        let args = args.as_object().ok_or_else(|| invalid("not an object".to_owned()))?;
        let known: Vec<&str> = self
            .parameters
            .iter()
            .map(|p| p.name.as_str())
            .chain(self.has_body.then_some("body"))
            .collect();
        if let Some(unknown) = args.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(invalid(format!("unknown argument {unknown:?}; it takes {known:?}")));
        }
        let mut path = self.path.clone();
        let mut query = Vec::new();
        let mut headers = self.api.headers.clone();
        for parameter in &self.parameters {
            let Some(value) = args.get(&parameter.name).filter(|v| !v.is_null()) else {
                if parameter.place == Place::Path {
                    return Err(invalid(format!("{} is required", parameter.name)));
                }
                continue;
            };
            match parameter.place {
                Place::Path => {
                    let encoded: String = percent_encoding::utf8_percent_encode(
                        &text_of(value),
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .collect();
                    path = path.replace(&format!("{{{}}}", parameter.name), &encoded);
                }
                Place::Query => match value {
                    Value::Array(items) => {
                        query.extend(
                            items.iter().map(|item| (parameter.name.clone(), text_of(item))),
                        );
                    }
                    other => query.push((parameter.name.clone(), text_of(other))),
                },
                Place::Header => {
                    let text = text_of(value);
                    if text.contains(['\r', '\n']) {
                        return Err(invalid(format!("header {} has a line break", parameter.name)));
                    }
                    headers.push((parameter.name.clone(), text));
                }
            }
        }
        let mut url = self.api.base.clone();
        let joined = format!("{}{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let body = match args.get("body") {
            Some(body) if self.has_body => {
                headers.push(("content-type".into(), "application/json".into()));
                Some(body.to_string())
            }
            _ => None,
        };
        Ok(crate::net::Request {
            method: self.method.clone(),
            url: url.to_string(),
            headers,
            body,
            max_bytes: MAX_RESPONSE_BYTES,
            timeout: self.api.timeout,
            allow_private: false,
        })
    }
}

impl Tool for Operation {
    crate::listed!();
    fn effect(&self) -> EffectClass {
        match self.method.as_str() {
            "GET" | "HEAD" | "OPTIONS" => EffectClass::Pure,
            "PUT" | "DELETE" => EffectClass::Idempotent,
            _ => EffectClass::AtMostOnce,
        }
    }
    fn touches_host(&self) -> bool {
        true
    }
    fn resource(&self, args: &Value) -> Result<String, crate::Error> {
        self.request(args)?;
        Ok(self.api.base.host_str().unwrap_or_default().to_owned())
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let mut request = self.request(&args)?;
            request.allow_private = ctx.granted.private_network;
            Ok(crate::net::send(request).await?.for_the_model())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETS: &str = r##"
openapi: 3.0.3
info: { title: Pets, version: "1" }
servers: [{ url: "https://pets.example/api/v1" }]
paths:
  /pets:
    get:
      operationId: listPets
      summary: List pets
      parameters:
        - { name: limit, in: query, schema: { type: integer } }
        - { name: tag, in: query, schema: { type: array, items: { type: string } } }
    post:
      operationId: createPet
      requestBody:
        required: true
        content: { application/json: { schema: { $ref: "#/components/schemas/Pet" } } }
  /pets/{petId}:
    parameters:
      - { name: petId, in: path, required: true, schema: { type: string } }
    get:
      operationId: showPetById
      parameters:
        - { $ref: "#/components/parameters/Trace" }
    delete:
      operationId: deletePet
components:
  parameters:
    Trace: { name: X-Trace, in: header, schema: { type: string } }
  schemas:
    Pet:
      type: object
      required: [name]
      properties:
        name: { type: string }
        parent: { $ref: "#/components/schemas/Pet" }
"##;

    fn spec(document: &str) -> ApiSpec {
        ApiSpec {
            name: "pets".into(),
            document: document.into(),
            base_url: None,
            agents: vec!["*".into()],
            headers: vec![("authorization".into(), "Bearer k".into())],
            operations: None,
            timeout: Duration::from_secs(5),
        }
    }

    fn find(tools: &[Arc<dyn Tool>], name: &str) -> Arc<dyn Tool> {
        tools.iter().find(|t| t.name() == name).cloned().unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn operations_become_tools_with_their_schemas_and_effects() {
        let tools = tools(&spec(PETS)).unwrap_or_default();
        let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "openapi.pets.createpet",
                "openapi.pets.deletepet",
                "openapi.pets.listpets",
                "openapi.pets.showpetbyid"
            ]
        );
        let create = find(&tools, "openapi.pets.createpet");
        assert_eq!(create.effect(), EffectClass::AtMostOnce);
        assert!(create.touches_host());
        let schema = create.input_schema();
        assert_eq!(schema["required"], json!(["body"]));
        assert_eq!(schema["properties"]["body"]["required"], json!(["name"]));
        // The recursive schema is cut off, not followed for ever.
        assert!(
            schema["properties"]["body"]["properties"]["parent"]["properties"]["parent"]
                .is_object()
        );
        assert_eq!(find(&tools, "openapi.pets.deletepet").effect(), EffectClass::Idempotent);
        let show = find(&tools, "openapi.pets.showpetbyid");
        assert_eq!(show.effect(), EffectClass::Pure);
        assert_eq!(show.input_schema()["required"], json!(["petId"]));
        assert!(show.input_schema()["properties"]["X-Trace"].is_object());
    }

    #[test]
    fn arguments_fill_the_path_query_and_headers() {
        let tools = tools(&spec(PETS)).unwrap_or_default();
        let show = find(&tools, "openapi.pets.showpetbyid");
        assert_eq!(show.resource(&json!({ "petId": "a b/c" })), Ok("pets.example".into()));
        let err = show.resource(&json!({})).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArguments { reason, .. } if reason == "petId is required"),
            "{err}"
        );
        let err = show.resource(&json!({ "petId": "1", "evil": 1 })).unwrap_err().to_string();
        assert!(err.contains("unknown argument \"evil\""), "{err}");
    }

    #[test]
    fn requests_are_built_from_the_arguments() {
        let spec = spec(PETS);
        let document: Value = serde_saphyr::from_str(PETS).unwrap_or_default();
        let api = Arc::new(Api {
            base: url::Url::parse("https://pets.example/api/v1").unwrap_or_else(|_| unreachable!()),
            agents: Arc::from(Vec::new()),
            headers: spec.headers.clone(),
            timeout: spec.timeout,
        });
        let item = document.pointer("/paths/~1pets~1{petId}").cloned().unwrap_or_default();
        let show = operation_tool(
            &api,
            &document,
            "t".into(),
            "get",
            "/pets/{petId}",
            &item["parameters"],
            &item["get"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let request = show
            .request(&json!({ "petId": "a b/c", "X-Trace": "t1" }))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.url, "https://pets.example/api/v1/pets/a%20b%2Fc");
        assert!(request.headers.contains(&("X-Trace".into(), "t1".into())));
        assert!(request.headers.contains(&("authorization".into(), "Bearer k".into())));
        assert!(show.request(&json!({ "petId": "1", "X-Trace": "a\r\nHost: evil" })).is_err());
        let item = document.pointer("/paths/~1pets").cloned().unwrap_or_default();
        let list =
            operation_tool(&api, &document, "l".into(), "get", "/pets", &Value::Null, &item["get"])
                .unwrap_or_else(|e| panic!("{e}"));
        let request = list
            .request(&json!({ "limit": 5, "tag": ["a", "b&c"] }))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.url, "https://pets.example/api/v1/pets?limit=5&tag=a&tag=b%26c");
        let create = operation_tool(
            &api,
            &document,
            "c".into(),
            "post",
            "/pets",
            &Value::Null,
            &item["post"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let request =
            create.request(&json!({ "body": { "name": "Rex" } })).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.body.as_deref(), Some(r#"{"name":"Rex"}"#));
        assert_eq!(request.method, "POST");
    }

    #[test]
    fn bad_documents_are_refused_naming_the_problem() {
        for (document, needle) in [
            ("swagger: '2.0'\npaths: {}", "not an OpenAPI 3 document"),
            ("{ not json", "not JSON"),
            ("openapi: 3.0.0\npaths: {}", "names no server"),
            ("openapi: 3.0.0\nservers: [{url: /v1}]\npaths: {}", "not an absolute URL"),
            ("openapi: 3.0.0\nservers: [{url: 'ftp://x'}]\npaths: {}", "not http or https"),
            ("openapi: 3.0.0\nservers: [{url: 'http://x'}]\npaths: {}", "no operations"),
            (
                "openapi: 3.0.0\nservers: [{url: 'http://x'}]\npaths:\n  /a:\n    get:\n      parameters: [{name: s, in: cookie}]",
                "cookie",
            ),
            (
                "openapi: 3.0.0\nservers: [{url: 'http://x'}]\npaths:\n  /a:\n    get: { operationId: x }\n  /b:\n    get: { operationId: X }",
                "distinct operationIds",
            ),
        ] {
            let error = tools(&spec(document)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                error.starts_with("openapi.pets: ") && error.contains(needle),
                "{document}: {error}"
            );
        }
        let mut only = spec(PETS);
        only.operations = Some(vec!["listPets".into(), "nope".into()]);
        let error = tools(&only).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("\"nope\""), "{error}");
        only.operations = Some(vec!["listPets".into()]);
        assert_eq!(tools(&only).map(|t| t.len()).unwrap_or_default(), 1);
    }
}
