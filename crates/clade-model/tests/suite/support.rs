use std::sync::Arc;
use std::time::Duration;

use clade_model::anthropic::Anthropic;
use clade_model::openai::OpenAi;
use clade_model::{Error, HttpOptions, Message, ModelRequest, ModelResponse, Provider, ToolSpec};
use clade_stub::{Stub, StubOptions};

pub async fn stub() -> Stub {
    Stub::start("127.0.0.1:0", StubOptions::default()).await.unwrap()
}

pub fn options(base: String, stream: bool) -> HttpOptions {
    let mut options = HttpOptions::new(base).with_key("sk-test-key");
    options.stream = stream;
    options.idle_timeout = Duration::from_secs(5);
    options
}

pub fn openai(stub: &Stub, stream: bool) -> Arc<dyn Provider> {
    openai_over(stub, stream, reqwest::Client::new())
}

pub fn anthropic(stub: &Stub, stream: bool) -> Arc<dyn Provider> {
    anthropic_over(stub, stream, reqwest::Client::new())
}

fn openai_over(stub: &Stub, stream: bool, client: reqwest::Client) -> Arc<dyn Provider> {
    Arc::new(OpenAi::new("openai", client, options(format!("{}/v1", stub.url()), stream)))
}

fn anthropic_over(stub: &Stub, stream: bool, client: reqwest::Client) -> Arc<dyn Provider> {
    Arc::new(Anthropic::new("anthropic", client, options(stub.url().to_owned(), stream)))
}

/// A client that speaks HTTP/2 from the first byte (a model's `http2: true`): it fails against
/// a server that does not.
fn http2_only() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

/// Every adapter in every mode, over HTTP/1.1 and HTTP/2, with a label for assertion messages.
pub fn all(stub: &Stub) -> Vec<(&'static str, Arc<dyn Provider>)> {
    vec![
        ("openai/stream", openai(stub, true)),
        ("openai/complete", openai(stub, false)),
        ("anthropic/stream", anthropic(stub, true)),
        ("anthropic/complete", anthropic(stub, false)),
        ("openai/stream/http2", openai_over(stub, true, http2_only())),
        ("openai/complete/http2", openai_over(stub, false, http2_only())),
        ("anthropic/stream/http2", anthropic_over(stub, true, http2_only())),
        ("anthropic/complete/http2", anthropic_over(stub, false, http2_only())),
    ]
}

pub async fn call(
    provider: &dyn Provider,
    model: &str,
    request: &ModelRequest,
) -> Result<ModelResponse, Error> {
    ModelResponse::collect(provider.stream(model, request).await?).await
}

pub fn user(text: &str) -> ModelRequest {
    ModelRequest { messages: vec![Message::user(text)], ..ModelRequest::default() }
}

pub fn time_tool() -> ToolSpec {
    ToolSpec {
        name: "time.now".into(),
        description: "Current time".into(),
        input_schema: serde_json::json!({ "type": "object", "properties": { "tz": { "type": "string" } } }),
    }
}
