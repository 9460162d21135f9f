//! A finished turn as OpenTelemetry spans, following the GenAI semantic conventions: one
//! `invoke_agent` span for the turn, a `chat` span per model call and an `execute_tool` span
//! per tool call under it. The turn's trace id is its own id and every span id is derived from
//! the turn and the step, so exporting a turn twice (delivery is at least once) sends the same
//! spans, which a backend can tell apart from new ones.
//!
//! What people wrote and what models and tools answered is left out unless the operator opts
//! in ([`Content::Included`]): by default spans carry names, ids, token counts, costs and times.

use clade_core::{StepKey, Timestamp, TurnStatus};
use clade_protocol::TurnStep;
use clade_store::TurnRecord;
use sha2::{Digest, Sha256};

use crate::wire::{KeyValue, Link, Span, SpanKind, Status, StatusCode};

/// Whether spans carry what was said (answers, tool arguments and results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Omitted,
    Included,
}

/// Whose turn it is, by name (the record has ids only).
#[derive(Debug, Clone)]
pub struct Owner {
    pub tenant: String,
    pub agent: String,
}

/// The longest text put on a span (a tool's result can be megabytes).
const MAX_TEXT: usize = 8 * 1024;

/// The turn's spans: the turn's first, then its model and tool calls in the order they ran.
/// A step that does not read (written by another version) is left out, not guessed at.
pub fn turn_spans(record: &TurnRecord, owner: &Owner, content: Content) -> Vec<Span> {
    let turn = &record.turn;
    let trace_id = turn.id.as_bytes().to_vec();
    let root = span_id(turn.id.as_bytes(), "turn");
    let ended =
        turn.finished_at.or_else(|| record.step_times.last().copied()).unwrap_or(turn.started_at);
    let mut spans = vec![Span {
        trace_id: trace_id.clone(),
        span_id: root.clone(),
        name: format!("invoke_agent {}", owner.agent),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: nanos(turn.started_at),
        end_time_unix_nano: nanos(ended),
        attributes: turn_attributes(record, owner),
        status: Some(turn_status(record)),
        ..Span::default()
    }];
    let mut previous = turn.started_at;
    // Tool calls started and not yet answered, by their step key's call.
    let mut open: Vec<(String, Span)> = Vec::new();
    // The calls the latest model answer asked for, which name a call refused before it started.
    let mut asked: Vec<clade_protocol::ModelToolCall> = Vec::new();
    for (entry, at) in record.steps.iter().zip(&record.step_times) {
        let Ok(step) = clade_runtime::step_view(entry) else { continue };
        let id = span_id(turn.id.as_bytes(), &entry.step.to_string());
        let child = |name: String, kind: SpanKind, start: Timestamp| Span {
            trace_id: trace_id.clone(),
            span_id: id.clone(),
            parent_span_id: root.clone(),
            name,
            kind: kind as i32,
            start_time_unix_nano: nanos(start),
            end_time_unix_nano: nanos(*at),
            ..Span::default()
        };
        match step {
            TurnStep::ModelResponse { ref tool_calls, .. } => {
                let mut span = child(String::new(), SpanKind::Client, previous);
                model_call(&mut span, &step, content);
                spans.push(span);
                asked.clone_from(tool_calls);
            }
            TurnStep::ToolStarted { ref name, .. } => {
                let mut span = child(format!("execute_tool {name}"), SpanKind::Internal, *at);
                tool_started(&mut span, &step, content);
                open.push((call_of(entry.step), span));
            }
            TurnStep::ToolResult { content: ref result, is_error, index, .. } => {
                let call = call_of(entry.step);
                let mut span = match open.iter().position(|(c, _)| *c == call) {
                    Some(i) => open.remove(i).1,
                    // Refused before it started: the span covers the refusal.
                    None => {
                        let asked = usize::try_from(index).ok().and_then(|i| asked.get(i));
                        let name = asked.map_or("", |c| c.name.as_str());
                        let mut span =
                            child(format!("execute_tool {name}"), SpanKind::Internal, previous);
                        span.attributes = vec![
                            KeyValue::string("gen_ai.operation.name", "execute_tool"),
                            KeyValue::string("gen_ai.tool.name", name),
                            KeyValue::string(
                                "gen_ai.tool.call.id",
                                asked.map_or("", |c| c.id.as_str()),
                            ),
                            KeyValue::string("gen_ai.tool.type", "function"),
                        ];
                        span
                    }
                };
                span.end_time_unix_nano = nanos(*at);
                tool_result(&mut span, result, is_error, content);
                spans.push(span);
            }
            TurnStep::Resumed { .. } => {}
        }
        previous = *at;
    }
    // Started and never answered (the turn failed or stopped there): they end with the turn.
    for (_, mut span) in open {
        span.end_time_unix_nano = nanos(ended);
        spans.push(span);
    }
    spans
}

/// The turn's spans ([`turn_spans`]) with its turn span linked to the turns that caused it:
/// the sender's turn of each agent message it answers, and the parent's turn of a branch or
/// worker session. Spans of another trace, as links, never mix traces.
pub async fn trace_of(
    store: &clade_store::Store,
    record: &TurnRecord,
    owner: &Owner,
    content: Content,
) -> Result<Vec<Span>, clade_store::Error> {
    let turn = &record.turn;
    let mut links = Vec::new();
    for message in store.messages(turn.tenant_id).of_turn(turn.id).await? {
        let Some(from) = message.from_turn else { continue };
        links.push(link_to(
            from,
            &[
                KeyValue::string("clade.link", "message"),
                KeyValue::string("clade.message.kind", message.kind.as_str()),
                KeyValue::string("clade.message.from", message.from_handle),
            ],
        ));
    }
    if let Some(fork) = store.forks(turn.tenant_id).get(turn.session_id).await?
        && let Some(parent) = fork.parent_turn
    {
        links.push(link_to(parent, &[KeyValue::string("clade.link", fork.kind.as_str())]));
    }
    let mut spans = turn_spans(record, owner, content);
    if let Some(root) = spans.first_mut() {
        root.links = links;
    }
    Ok(spans)
}

/// A link to another turn's own span.
fn link_to(turn: clade_core::TurnId, attributes: &[KeyValue]) -> Link {
    Link {
        trace_id: turn.as_bytes().to_vec(),
        span_id: span_id(turn.as_bytes(), "turn"),
        attributes: attributes.to_vec(),
    }
}

fn turn_attributes(record: &TurnRecord, owner: &Owner) -> Vec<KeyValue> {
    let turn = &record.turn;
    let mut attributes = vec![
        KeyValue::string("gen_ai.operation.name", "invoke_agent"),
        KeyValue::string("gen_ai.agent.id", turn.agent_id.to_string()),
        KeyValue::string("gen_ai.agent.name", owner.agent.clone()),
        KeyValue::string("gen_ai.conversation.id", turn.session_id.to_string()),
        KeyValue::int("gen_ai.usage.input_tokens", record.usage.input_tokens),
        KeyValue::int("gen_ai.usage.output_tokens", record.usage.output_tokens),
        KeyValue::string("clade.tenant.id", turn.tenant_id.to_string()),
        KeyValue::string("clade.tenant.name", owner.tenant.clone()),
        KeyValue::string("clade.turn.id", turn.id.to_string()),
        KeyValue::string("clade.turn.status", turn.status.as_str()),
        KeyValue::int("clade.model_calls", record.usage.model_calls),
        KeyValue::int("clade.cost_micros", record.usage.cost_micros),
    ];
    if let Some(model) = &turn.model {
        attributes.push(KeyValue::string("gen_ai.response.model", model.clone()));
    }
    if turn.status == TurnStatus::Failed {
        attributes.push(KeyValue::string("error.type", "turn_failed"));
    }
    attributes
}

fn turn_status(record: &TurnRecord) -> Status {
    match record.turn.status {
        TurnStatus::Failed => Status {
            message: clip(record.turn.error.as_deref().unwrap_or("the turn failed")),
            code: StatusCode::Error as i32,
        },
        _ => Status { message: String::new(), code: StatusCode::Unset as i32 },
    }
}

fn model_call(span: &mut Span, step: &TurnStep, content: Content) {
    let TurnStep::ModelResponse {
        model,
        text,
        tool_calls,
        input_tokens,
        output_tokens,
        cost_micros,
        route,
        messages,
        request_sha256,
        tools,
        ..
    } = step
    else {
        return;
    };
    span.name = format!("chat {model}");
    let finish = if tool_calls.is_empty() { "stop" } else { "tool_calls" };
    span.attributes = vec![
        KeyValue::string("gen_ai.operation.name", "chat"),
        KeyValue::string("gen_ai.request.model", model.clone()),
        KeyValue::string("gen_ai.response.model", model.clone()),
        KeyValue::int("gen_ai.usage.input_tokens", *input_tokens),
        KeyValue::int("gen_ai.usage.output_tokens", *output_tokens),
        KeyValue::strings("gen_ai.response.finish_reasons", [finish.to_owned()]),
        KeyValue::int("clade.cost_micros", *cost_micros),
        KeyValue::strings("clade.model.route", route.iter().cloned()),
        KeyValue::int("clade.request.messages", *messages),
        KeyValue::string("clade.request.sha256", request_sha256.clone()),
        KeyValue::strings("clade.request.tools", tools.iter().cloned()),
    ];
    if content == Content::Included {
        let mut parts = Vec::new();
        if !text.is_empty() {
            parts.push(serde_json::json!({ "type": "text", "content": clip(text) }));
        }
        for call in tool_calls {
            parts.push(serde_json::json!({
                "type": "tool_call", "id": call.id, "name": call.name,
                "arguments": clip(&call.arguments),
            }));
        }
        let message =
            serde_json::json!([{ "role": "assistant", "parts": parts, "finish_reason": finish }]);
        span.attributes.push(KeyValue::string("gen_ai.output.messages", message.to_string()));
    }
}

fn tool_started(span: &mut Span, step: &TurnStep, content: Content) {
    let TurnStep::ToolStarted { name, call, arguments, effect, key, .. } = step else { return };
    span.attributes = vec![
        KeyValue::string("gen_ai.operation.name", "execute_tool"),
        KeyValue::string("gen_ai.tool.name", name.clone()),
        KeyValue::string("gen_ai.tool.call.id", call.clone()),
        KeyValue::string("gen_ai.tool.type", "function"),
        KeyValue::string("clade.tool.effect", effect.clone()),
        KeyValue::string("clade.tool.key", key.clone()),
    ];
    if content == Content::Included {
        let text = match arguments {
            serde_json::Value::String(raw) => raw.clone(),
            other => other.to_string(),
        };
        span.attributes.push(KeyValue::string("gen_ai.tool.call.arguments", clip(&text)));
    }
}

fn tool_result(span: &mut Span, result: &str, is_error: bool, content: Content) {
    if content == Content::Included {
        span.attributes.push(KeyValue::string("gen_ai.tool.call.result", clip(result)));
    }
    if is_error {
        span.attributes.push(KeyValue::string("error.type", "tool_error"));
        span.status = Some(Status {
            message: if content == Content::Included { clip(result) } else { String::new() },
            code: StatusCode::Error as i32,
        });
    }
}

/// A tool step's call (`{iteration}/{index}`), shared by its start and its result.
fn call_of(step: StepKey) -> String {
    step.call().unwrap_or_else(|| step.to_string())
}

/// Eight bytes of SHA-256 over the turn and a name: stable, and never all zero (an invalid id).
fn span_id(turn: &[u8; 16], name: &str) -> Vec<u8> {
    let digest = Sha256::new().chain_update(turn).chain_update(name.as_bytes()).finalize();
    let mut id = digest[..8].to_vec();
    if id.iter().all(|b| *b == 0) {
        id[7] = 1;
    }
    id
}

fn nanos(at: Timestamp) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(0).saturating_mul(1_000_000)
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code.

    use clade_core::{AgentId, SessionId, TenantId, TurnId};
    use clade_store::{JournalEntry, TurnRow, TurnUsage};

    use super::*;

    /// A failed turn whose model asked for a tool that was refused before it started.
    fn failed_turn() -> TurnRecord {
        let at = |ms: i64| Timestamp::from_millis(1_800_000_000_000 + ms);
        let model = serde_json::json!({
            "model": "m", "text": "", "input_tokens": 12, "output_tokens": 3, "cost_micros": 7,
            "route": ["m: ok"], "tool_calls": [{ "id": "c1", "name": "nope.tool", "arguments": "{}" }],
        });
        let result = serde_json::json!({ "content": "no tool nope.tool", "is_error": true });
        TurnRecord {
            turn: TurnRow {
                id: TurnId::from_bytes([7; 16]),
                session_id: SessionId::from_bytes([2; 16]),
                tenant_id: TenantId::from_bytes([3; 16]),
                agent_id: AgentId::from_bytes([4; 16]),
                status: TurnStatus::Failed,
                reply: None,
                error: Some("the model is unreachable".into()),
                model: Some("m".into()),
                config_revision: 1,
                started_at: at(0),
                finished_at: Some(at(50)),
            },
            events: Vec::new(),
            usage: TurnUsage { model_calls: 1, input_tokens: 12, output_tokens: 3, cost_micros: 7 },
            steps: vec![
                JournalEntry { step: StepKey::Model { iteration: 0 }, data: model.to_string() },
                JournalEntry {
                    step: StepKey::ToolResult { iteration: 0, index: 0 },
                    data: result.to_string(),
                },
            ],
            step_times: vec![at(20), at(21)],
        }
    }

    fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a crate::wire::Any> {
        span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
    }

    #[test]
    fn a_failed_turn_and_a_refused_tool_are_errors_under_the_turns_span() {
        let owner = Owner { tenant: "acme".into(), agent: "ada".into() };
        let spans = turn_spans(&failed_turn(), &owner, Content::Omitted);
        let [turn, chat, tool] = spans.as_slice() else { panic!("{spans:?}") };
        assert_eq!(turn.trace_id, [7; 16].to_vec());
        assert_eq!(turn.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(turn.status.as_ref().unwrap().message, "the model is unreachable");
        assert_eq!(
            (chat.start_time_unix_nano, chat.end_time_unix_nano),
            (nanos(failed_turn().turn.started_at), nanos(failed_turn().step_times[0]))
        );
        assert_eq!(tool.name, "execute_tool nope.tool");
        assert_eq!(
            attribute(tool, "gen_ai.tool.call.id"),
            Some(&crate::wire::Any::String("c1".into()))
        );
        assert_eq!(tool.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert!(tool.status.as_ref().unwrap().message.is_empty(), "the result is content");
        assert_eq!(attribute(tool, "gen_ai.tool.call.result"), None);
        for child in [chat, tool] {
            assert_eq!((&child.trace_id, &child.parent_span_id), (&turn.trace_id, &turn.span_id));
            assert_eq!(child.span_id.len(), 8);
            assert_ne!(child.span_id, turn.span_id);
        }
        // The same turn gives the same spans: a second delivery is recognisably the same.
        assert_eq!(spans, turn_spans(&failed_turn(), &owner, Content::Omitted));
        let with = turn_spans(&failed_turn(), &owner, Content::Included);
        let result = attribute(&with[2], "gen_ai.tool.call.result");
        assert_eq!(result, Some(&crate::wire::Any::String("no tool nope.tool".into())));
    }

    #[test]
    fn long_text_is_clipped_on_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT);
        let clipped = clip(&text);
        assert!(clipped.len() <= MAX_TEXT + "…".len(), "{}", clipped.len());
        assert!(clipped.ends_with('…'));
    }
}
