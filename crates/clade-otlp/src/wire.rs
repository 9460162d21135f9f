//! OTLP's trace messages, as `opentelemetry/proto/collector/trace/v1/trace_service.proto` and
//! `opentelemetry/proto/trace/v1/trace.proto` (with `common` and `resource`) declare them: the
//! fields Clade writes, with their numbers, so the protobuf encoding is theirs. [`to_json`] is
//! the OTLP/JSON form of the same request (the protobuf JSON mapping, with OTLP's exceptions:
//! hex trace and span ids, enums as integers).

use serde_json::{Map, Value, json};

/// `ExportTraceServiceRequest`: what one export sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ExportTraceServiceResponse`: what a collector answers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

/// `ExportTracePartialSuccess`: spans a collector took only in part.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(enumeration = "SpanKind", tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "13")]
    pub links: Vec<Link>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// A span another trace's span is linked from (a turn caused by another agent's turn).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Link {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanKind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(enumeration = "StatusCode", tag = "3")]
    pub code: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StatusCode {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Any", tags = "1, 2, 3, 4, 5")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Any {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(message, tag = "5")]
    Array(ArrayValue),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

impl KeyValue {
    pub fn string(key: &str, value: impl Into<String>) -> Self {
        Self::of(key, Any::String(value.into()))
    }

    pub fn int(key: &str, value: u64) -> Self {
        Self::of(key, Any::Int(i64::try_from(value).unwrap_or(i64::MAX)))
    }

    pub fn bool(key: &str, value: bool) -> Self {
        Self::of(key, Any::Bool(value))
    }

    pub fn strings(key: &str, values: impl IntoIterator<Item = String>) -> Self {
        let values = values.into_iter().map(|v| AnyValue { value: Some(Any::String(v)) });
        Self::of(key, Any::Array(ArrayValue { values: values.collect() }))
    }

    fn of(key: &str, value: Any) -> Self {
        Self { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
    }
}

/// The OTLP/JSON form of `request`, as OTLP's file exporter writes it (one per line).
pub fn to_json(request: &ExportTraceServiceRequest) -> Value {
    json!({ "resourceSpans": request.resource_spans.iter().map(resource_spans).collect::<Vec<_>>() })
}

fn resource_spans(rs: &ResourceSpans) -> Value {
    let mut out = Map::new();
    if let Some(resource) = &rs.resource {
        out.insert("resource".into(), json!({ "attributes": attributes(&resource.attributes) }));
    }
    let scopes = rs.scope_spans.iter().map(|ss| {
        let mut scope = Map::new();
        if let Some(s) = &ss.scope {
            scope.insert("scope".into(), json!({ "name": s.name, "version": s.version }));
        }
        scope.insert("spans".into(), ss.spans.iter().map(span).collect());
        Value::Object(scope)
    });
    out.insert("scopeSpans".into(), scopes.collect());
    Value::Object(out)
}

fn span(span: &Span) -> Value {
    let mut out = Map::new();
    out.insert("traceId".into(), hex::encode(&span.trace_id).into());
    out.insert("spanId".into(), hex::encode(&span.span_id).into());
    if !span.parent_span_id.is_empty() {
        out.insert("parentSpanId".into(), hex::encode(&span.parent_span_id).into());
    }
    out.insert("name".into(), span.name.clone().into());
    out.insert("kind".into(), span.kind.into());
    // 64-bit integers as decimal strings, as the protobuf JSON mapping writes them.
    out.insert("startTimeUnixNano".into(), span.start_time_unix_nano.to_string().into());
    out.insert("endTimeUnixNano".into(), span.end_time_unix_nano.to_string().into());
    out.insert("attributes".into(), attributes(&span.attributes));
    if !span.links.is_empty() {
        let links = span.links.iter().map(|link| {
            json!({
                "traceId": hex::encode(&link.trace_id),
                "spanId": hex::encode(&link.span_id),
                "attributes": attributes(&link.attributes),
            })
        });
        out.insert("links".into(), links.collect());
    }
    if let Some(status) = &span.status {
        let mut s = Map::new();
        if !status.message.is_empty() {
            s.insert("message".into(), status.message.clone().into());
        }
        s.insert("code".into(), status.code.into());
        out.insert("status".into(), Value::Object(s));
    }
    Value::Object(out)
}

fn attributes(attributes: &[KeyValue]) -> Value {
    attributes
        .iter()
        .map(|kv| json!({ "key": kv.key, "value": kv.value.as_ref().map_or(json!({}), any) }))
        .collect()
}

fn any(value: &AnyValue) -> Value {
    match &value.value {
        Some(Any::String(s)) => json!({ "stringValue": s }),
        Some(Any::Bool(b)) => json!({ "boolValue": b }),
        Some(Any::Int(i)) => json!({ "intValue": i.to_string() }),
        Some(Any::Double(d)) => json!({ "doubleValue": d }),
        Some(Any::Array(a)) => {
            json!({ "arrayValue": { "values": a.values.iter().map(any).collect::<Vec<_>>() } })
        }
        None => json!({}),
    }
}

/// Reads back what [`to_json`] writes (and any OTLP/JSON with the fields it knows): the spans'
/// names and attributes, for tools that read an export (`clade usage estimate FILE`).
pub fn spans_of_json(value: &Value) -> Vec<JsonSpan> {
    let mut out = Vec::new();
    let empty = Vec::new();
    let list =
        |v: &Value, key: &str| v.get(key).and_then(Value::as_array).unwrap_or(&empty).clone();
    for rs in list(value, "resourceSpans") {
        for ss in list(&rs, "scopeSpans") {
            for span in list(&ss, "spans") {
                let name = span.get("name").and_then(Value::as_str).unwrap_or_default();
                let mut attributes = Map::new();
                for kv in list(&span, "attributes") {
                    let (Some(key), Some(value)) =
                        (kv.get("key").and_then(Value::as_str), kv.get("value"))
                    else {
                        continue;
                    };
                    if let Some(plain) = plain(value) {
                        attributes.insert(key.to_owned(), plain);
                    }
                }
                out.push(JsonSpan { name: name.to_owned(), attributes });
            }
        }
    }
    out
}

/// A span read from OTLP/JSON: its name, and its attributes as plain JSON values.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSpan {
    pub name: String,
    pub attributes: Map<String, Value>,
}

impl JsonSpan {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// An integer attribute, written as a number or as a decimal string.
    pub fn uint(&self, key: &str) -> Option<u64> {
        match self.attributes.get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

fn plain(value: &Value) -> Option<Value> {
    if let Some(s) = value.get("stringValue") {
        return Some(s.clone());
    }
    if let Some(b) = value.get("boolValue") {
        return Some(b.clone());
    }
    if let Some(i) = value.get("intValue") {
        return Some(i.clone());
    }
    if let Some(d) = value.get("doubleValue") {
        return Some(d.clone());
    }
    let values = value.get("arrayValue")?.get("values")?.as_array()?;
    Some(values.iter().filter_map(plain).collect())
}
