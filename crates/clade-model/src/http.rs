//! What both HTTP adapters share: sending, classifying error responses, turning a body into a
//! stream of SSE events with an idle timeout.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use serde_json::Value;

use crate::error::{Error, parse_retry_after};
use crate::sse::{SseEvent, SseParser};
use crate::types::{EventStream, StreamEvent};

/// Largest error body read (error bodies are short; a huge one is not worth holding).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest non-streaming response body.
pub(crate) const MAX_BODY: usize = 32 * 1024 * 1024;

/// Sends `request`; a non-2xx answer becomes a classified [`Error`].
pub(crate) async fn send(
    provider: &str,
    request: reqwest::RequestBuilder,
    classify_body: fn(&str, u16, &str) -> Option<Error>,
) -> Result<reqwest::Response, Error> {
    let response = request.send().await.map_err(|e| transport(provider, &e))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let retry_after = parse_retry_after(response.headers());
    let body = read_capped(response, MAX_ERROR_BODY).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    if let Some(err) = classify_body(provider, status, &body) {
        return Err(err);
    }
    let message = error_message(&body);
    let provider = provider.to_owned();
    Err(match status {
        429 => Error::RateLimited { provider, retry_after },
        529 => Error::Overloaded { provider, retry_after },
        401 | 403 => Error::Auth { provider, message },
        400..=499 => {
            Error::InvalidRequest { provider, message: format!("HTTP {status}: {message}") }
        }
        _ => Error::Server { provider, status, message },
    })
}

/// The `error.message` of a JSON error body, else the body itself (shortened).
pub(crate) fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

pub(crate) fn transport(provider: &str, err: &reqwest::Error) -> Error {
    if err.is_timeout() {
        Error::Timeout { provider: provider.to_owned(), timeout: Duration::ZERO }
    } else {
        Error::Transport { provider: provider.to_owned(), message: err.to_string() }
    }
}

/// Reads at most `limit` bytes of the body; more is an error.
pub(crate) async fn read_capped(
    response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if body.len() + chunk.len() > limit {
            return Err(format!("response body larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The response body as SSE events, followed by one `None` when the body ends, so adapters can
/// tell a complete stream from a truncated one. A gap longer than `idle` between chunks is a
/// timeout.
pub(crate) fn sse_events(
    provider: String,
    response: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<Option<SseEvent>, Error>> + Send {
    struct State<S> {
        body: S,
        parser: SseParser,
        ready: std::collections::VecDeque<SseEvent>,
        ended: bool,
    }
    let state = State {
        body: response.bytes_stream(),
        parser: SseParser::default(),
        ready: Default::default(),
        ended: false,
    };
    futures::stream::unfold(Some(state), move |state| {
        let provider = provider.clone();
        async move {
            let mut state = state?;
            loop {
                if let Some(event) = state.ready.pop_front() {
                    return Some((Ok(Some(event)), Some(state)));
                }
                if state.ended {
                    return None;
                }
                match tokio::time::timeout(idle, state.body.next()).await {
                    Err(_) => return Some((Err(Error::Timeout { provider, timeout: idle }), None)),
                    Ok(None) => {
                        state.ended = true;
                        return Some((Ok(None), Some(state)));
                    }
                    Ok(Some(Err(err))) => return Some((Err(transport(&provider, &err)), None)),
                    Ok(Some(Ok(chunk))) => {
                        let mut out = Vec::new();
                        if let Err(err) = state.parser.push(&chunk, &mut out) {
                            return Some((Err(err), None));
                        }
                        state.ready.extend(out);
                    }
                }
            }
        }
    })
}

/// Turns one provider's stream of SSE events into [`StreamEvent`]s.
pub(crate) trait Decoder: Send + 'static {
    /// What a complete stream ends with, for the truncation error (e.g. `[DONE]`).
    const END: &'static str;
    fn on_event(&mut self, data: &str) -> Result<Vec<StreamEvent>, Error>;
    /// Whether the end marker was seen (later events are ignored).
    fn done(&self) -> bool;
}

/// The response as events: a complete JSON body parsed by `complete`, or an event stream fed
/// through `decoder`. A stream that ends before the decoder saw its end marker is malformed.
pub(crate) async fn response_events<D: Decoder>(
    provider: &str,
    response: reqwest::Response,
    streaming: bool,
    idle: Duration,
    complete: impl FnOnce(&Value) -> Result<Vec<StreamEvent>, Error>,
    mut decoder: D,
) -> Result<EventStream, Error> {
    if !streaming {
        let bytes = read_capped(response, MAX_BODY)
            .await
            .map_err(|message| Error::Transport { provider: provider.to_owned(), message })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::MalformedResponse(format!("response is not JSON: {e}")))?;
        let events = complete(&value)?;
        return Ok(Box::pin(stream::iter(events.into_iter().map(Ok))));
    }
    let events = sse_events(provider.to_owned(), response, idle).flat_map(move |item| {
        let out: Vec<Result<StreamEvent, Error>> = match item {
            Err(err) => vec![Err(err)],
            Ok(Some(_)) if decoder.done() => Vec::new(),
            Ok(Some(event)) => match decoder.on_event(&event.data) {
                Ok(events) => events.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            },
            Ok(None) if decoder.done() => Vec::new(),
            Ok(None) => vec![Err(Error::MalformedResponse(format!(
                "stream ended before {}: the response was cut off",
                D::END
            )))],
        };
        stream::iter(out)
    });
    Ok(Box::pin(events))
}
