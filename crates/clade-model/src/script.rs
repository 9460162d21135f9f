//! The scripted model: deterministic replies decided from the request alone, so any client,
//! any process and any retry gets identical output. It is not a language model.
//!
//! Rules, applied to the conversation's last message:
//!
//! - A user message with lines `/tool <name> [<json arguments>]` asks for those tool calls
//!   (arguments default to `{}`; they are passed through verbatim, even when not valid JSON).
//!   Call ids are `call_<n>_<hash>`, stable for the same request.
//! - A user message `/reply <text>` answers exactly `<text>`.
//! - Any other user message is echoed: `echo: <text>`.
//! - Tool results (the messages after the assistant's tool calls) are summarised:
//!   `tool results: <name> -> <content>; ...`.
//!
//! Usage is counted as one token per 4 bytes (rounded up), like the providers' rough rule.

use crate::types::{Message, ToolCall, Usage};

/// What the scripted model answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedReply {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

pub fn tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Decides the reply to `messages`.
pub fn reply(messages: &[Message]) -> ScriptedReply {
    let input: u64 = messages
        .iter()
        .map(|m| match m {
            Message::System { text } | Message::User { text } => tokens(text),
            Message::Assistant { text, tool_calls } => {
                tokens(text)
                    + tool_calls.iter().map(|c| tokens(&c.name) + tokens(&c.arguments)).sum::<u64>()
            }
            Message::Tool { content, .. } => tokens(content),
        })
        .sum::<u64>()
        .max(1);
    let (text, tool_calls) = match messages.last() {
        Some(Message::User { text }) => from_user(text, input),
        Some(Message::Tool { .. }) => (summarise_results(messages), Vec::new()),
        Some(Message::Assistant { text, .. }) => (format!("echo: {text}"), Vec::new()),
        Some(Message::System { .. }) | None => ("echo: ".to_owned(), Vec::new()),
    };
    let output = tokens(&text)
        + tool_calls.iter().map(|c| tokens(&c.name) + tokens(&c.arguments)).sum::<u64>();
    ScriptedReply {
        text,
        tool_calls,
        usage: Usage { input_tokens: input, output_tokens: output.max(1), ..Usage::default() },
    }
}

fn from_user(text: &str, salt: u64) -> (String, Vec<ToolCall>) {
    let calls: Vec<ToolCall> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("/tool "))
        .enumerate()
        .map(|(n, rest)| {
            let rest = rest.trim();
            let (name, args) = match rest.split_once(char::is_whitespace) {
                Some((name, args)) => (name, args.trim()),
                None => (rest, "{}"),
            };
            ToolCall {
                id: format!("call_{n}_{:08x}", fnv(text) ^ salt as u32),
                name: name.to_owned(),
                arguments: args.to_owned(),
            }
        })
        .collect();
    if !calls.is_empty() {
        return (String::new(), calls);
    }
    match text.trim_start().strip_prefix("/reply ") {
        Some(reply) => (reply.to_owned(), Vec::new()),
        None => (format!("echo: {text}"), Vec::new()),
    }
}

fn summarise_results(messages: &[Message]) -> String {
    let results: Vec<(&str, &str)> = messages
        .iter()
        .rev()
        .take_while(|m| matches!(m, Message::Tool { .. }))
        .filter_map(|m| match m {
            Message::Tool { call_id, content, .. } => Some((call_id.as_str(), content.as_str())),
            _ => None,
        })
        .collect();
    let name_of = |id: &str| {
        messages
            .iter()
            .find_map(|m| match m {
                Message::Assistant { tool_calls, .. } => {
                    tool_calls.iter().find(|c| c.id == id).map(|c| c.name.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| id.to_owned())
    };
    let parts: Vec<String> =
        results.iter().rev().map(|(id, content)| format!("{} -> {content}", name_of(id))).collect();
    format!("tool results: {}", parts.join("; "))
}

/// FNV-1a: a stable hash (std's hasher is randomised per process).
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_replies_and_calls_tools() {
        assert_eq!(reply(&[Message::user("hi")]).text, "echo: hi");
        assert_eq!(reply(&[Message::user("/reply exactly this")]).text, "exactly this");
        let r = reply(&[Message::user("/tool time.now\n/tool echo {\"text\":\"x\"}")]);
        assert_eq!(r.text, "");
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[0].name, "time.now");
        assert_eq!(r.tool_calls[0].arguments, "{}");
        assert_eq!(r.tool_calls[1].arguments, "{\"text\":\"x\"}");
        // Deterministic: the same request gives the same ids.
        assert_eq!(r, reply(&[Message::user("/tool time.now\n/tool echo {\"text\":\"x\"}")]));
    }

    #[test]
    fn summarises_tool_results() {
        let call = ToolCall { id: "c1".into(), name: "time.now".into(), arguments: "{}".into() };
        let messages = vec![
            Message::user("/tool time.now"),
            Message::Assistant { text: String::new(), tool_calls: vec![call] },
            Message::Tool { call_id: "c1".into(), content: "12:00".into(), is_error: false },
        ];
        assert_eq!(reply(&messages).text, "tool results: time.now -> 12:00");
    }
}
