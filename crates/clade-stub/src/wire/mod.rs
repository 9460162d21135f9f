//! Provider wire formats as the stub reads and writes them, plus what both share: deciding the
//! answer and the failure a request asked for.

pub(crate) mod anthropic;
pub(crate) mod embeddings;
pub(crate) mod openai;

use std::time::Duration;

use axum::http::HeaderMap;
use clade_model::script;
use clade_model::{Message, ToolCall};

use crate::Shared;
use crate::behaviour::Behaviour;

/// What the stub will answer.
pub(crate) struct Plan {
    pub(crate) deltas: Vec<String>,
    pub(crate) text: String,
    pub(crate) calls: Vec<ToolCall>,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
}

impl Plan {
    pub(crate) fn new(messages: &[Message], behaviour: &Behaviour) -> Self {
        let reply = script::reply(messages);
        let (text, mut calls) = match &behaviour.fixed {
            Some(fixed) => (fixed.clone(), Vec::new()),
            None => (reply.text, reply.tool_calls),
        };
        if behaviour.unknown_tool {
            calls = vec![ToolCall {
                id: "call_unknown_0".into(),
                name: "no_such_tool".into(),
                arguments: "{}".into(),
            }];
        }
        if behaviour.invalid_tool_json {
            if calls.is_empty() {
                calls.push(ToolCall {
                    id: "call_badjson_0".into(),
                    name: "echo".into(),
                    arguments: String::new(),
                });
            }
            for call in &mut calls {
                call.arguments = "{\"text\": unquoted".into();
            }
        }
        let output = script::tokens(&text)
            + calls.iter().map(|c| script::tokens(&c.arguments) + 4).sum::<u64>();
        Self {
            deltas: split_words(&text),
            text,
            calls,
            input_tokens: reply.usage.input_tokens,
            output_tokens: output.max(1),
        }
    }
}

/// Word-sized pieces that join back to `text`.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut =
            rest.char_indices().skip(1).find(|(_, c)| *c == ' ').map_or(rest.len(), |(i, _)| i);
        out.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    out
}

/// Splits tool-call arguments into a few pieces, as providers stream them.
pub(crate) fn split_arguments(args: &str) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
    chars.chunks(8).map(|c| c.iter().collect()).collect()
}

/// The failure this request must get, if any: (status, retry-after seconds). Its directives
/// first, then the server's [`crate::SeededFaults`] drawn for its `body`.
pub(crate) fn failure(
    shared: &Shared,
    behaviour: &Behaviour,
    key: &str,
    body: &[u8],
) -> Option<(u16, Option<f64>)> {
    directed_failure(shared, behaviour, key).or_else(|| seeded_failure(shared, body))
}

fn seeded_failure(shared: &Shared, body: &[u8]) -> Option<(u16, Option<f64>)> {
    let faults = shared.options.faults?;
    // FNV-1a: stable across runs and builds, unlike the standard library's hasher's seeds.
    let fnv = |bytes: &[u8], start: u64| {
        bytes.iter().fold(start, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
    };
    let body_hash = fnv(body, 0xcbf2_9ce4_8422_2325);
    let nth = {
        let Ok(mut seen) = shared.bodies_seen.lock() else { return None };
        let n = seen.entry(body_hash).or_insert(0);
        *n += 1;
        *n
    };
    let draw = mix(faults.seed ^ mix(body_hash ^ mix(u64::from(nth))));
    (draw % 1000 < u64::from(faults.per_mille)).then_some((faults.status, None))
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn directed_failure(
    shared: &Shared,
    behaviour: &Behaviour,
    key: &str,
) -> Option<(u16, Option<f64>)> {
    let (status, times) = behaviour.status?;
    let fail = match times {
        None => true,
        Some(times) => {
            let Ok(mut failures) = shared.failures.lock() else { return None };
            let served = failures.entry(key.to_owned()).or_insert(0);
            if *served < times {
                *served += 1;
                true
            } else {
                false
            }
        }
    };
    fail.then_some((status, behaviour.retry_after))
}

pub(crate) async fn wait_latency(behaviour: &Behaviour) {
    if let Some(latency) = behaviour.pick_latency() {
        #[allow(clippy::disallowed_methods)] // A fake provider's real latency.
        tokio::time::sleep(latency).await;
    }
}

pub(crate) fn stub_header(headers: &HeaderMap) -> Option<String> {
    headers.get("x-stub").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[allow(clippy::disallowed_methods)] // `created` fields are cosmetic; nothing depends on them.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn retry_after_header(seconds: Option<f64>) -> Option<String> {
    seconds.map(|s| format!("{}", Duration::from_secs_f64(s.max(0.0)).as_secs_f64()))
}
