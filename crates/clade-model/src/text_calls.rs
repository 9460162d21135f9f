//! Tool calls for a model that only writes text (the local chat model), in the format the
//! Hermes function-calling data set made common (Qwen, SmolLM2 and others were trained on it):
//! the system turn lists the tools as JSON Schema inside `<tools>`, the model calls one by
//! writing `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, and each result comes back
//! in a user turn inside `<tool_response>`.
//!
//! [`CallSplitter`] reads the model's text as it streams: what comes before the first
//! `<tool_call>` is shown as it is written (holding back only a tail that may begin the tag),
//! and the calls are read once the answer ends. A call whose name cannot be read is shown as
//! the text it was, never dropped; one whose arguments are not JSON keeps them raw, so the
//! engine can tell the model what was wrong.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::{ToolCall, ToolSpec};

const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// What the system turn says of `tools`, after its own instructions.
pub fn tools_prompt(tools: &[ToolSpec]) -> String {
    let mut listed = String::new();
    for tool in tools {
        let signature = serde_json::json!({
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.input_schema,
            }
        });
        listed.push_str(&signature.to_string());
        listed.push('\n');
    }
    format!(
        "# Tools\n\nYou may call one or more functions to help with the user's request. Their signatures are within <tools></tools>:\n<tools>\n{listed}</tools>\n\nTo call a function, write a JSON object with its name and arguments within <tool_call></tool_call>:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>"
    )
}

/// How an earlier answer's calls are shown to the model: as it would have written them.
pub fn calls_text(text: &str, calls: &[ToolCall]) -> String {
    let mut out = text.to_owned();
    for call in calls {
        let arguments: serde_json::Value = serde_json::from_str(&call.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
        let written = serde_json::json!({ "name": call.name, "arguments": arguments });
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{CALL_OPEN}\n{written}\n{CALL_CLOSE}"));
    }
    out
}

/// How a tool's result is shown to the model.
pub fn response_text(content: &str, is_error: bool) -> String {
    let content = if is_error { format!("error: {content}") } else { content.to_owned() };
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// Splits streamed text into what is shown and the calls made.
#[derive(Debug, Default)]
pub struct CallSplitter {
    text: String,
    /// Bytes of `text` already shown.
    shown: usize,
    /// Where the first call tag begins, once written.
    calls_at: Option<usize>,
}

impl CallSplitter {
    /// Takes the next piece of the answer; the text to show now (possibly empty).
    pub fn push(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        if self.calls_at.is_some() {
            return String::new();
        }
        let rest = &self.text[self.shown..];
        let upto = match rest.find(CALL_OPEN) {
            Some(at) => {
                self.calls_at = Some(self.shown + at);
                self.shown + at
            }
            // A tail that may be the tag's beginning waits for the next piece.
            None => self.text.len() - held_back(rest),
        };
        let show = self.text[self.shown..upto].to_owned();
        self.shown = upto;
        show
    }

    /// The answer has ended: the text still to show, and the calls it made.
    pub fn finish(self) -> (String, Vec<ToolCall>) {
        let Some(at) = self.calls_at else {
            return (self.text[self.shown..].to_owned(), Vec::new());
        };
        let mut calls = Vec::new();
        for block in self.text[at..].split(CALL_OPEN).skip(1) {
            let body = block.split(CALL_CLOSE).next().unwrap_or_default().trim();
            match read_call(body) {
                Some(call) => calls.push(call),
                // Not a call after all: the model's words stay its words.
                None => return (self.text[self.shown..].to_owned(), Vec::new()),
            }
        }
        (String::new(), calls)
    }
}

/// How many bytes at the end of `text` may begin a call tag.
fn held_back(text: &str) -> usize {
    (1..CALL_OPEN.len())
        .rev()
        .find(|&n| text.len() >= n && text.ends_with(&CALL_OPEN[..n]))
        .unwrap_or(0)
}

/// A call's name and arguments from the JSON the model wrote, if it names a function.
fn read_call(body: &str) -> Option<ToolCall> {
    // A model may leave the object unterminated or add words after it: the name is read from
    // the JSON when it parses, else from its `"name"` field alone.
    let value: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let name = match &value {
        Some(value) => value.get("name")?.as_str()?.to_owned(),
        None => name_in(body)?,
    };
    if name.is_empty() {
        return None;
    }
    let arguments = match value.as_ref().and_then(|v| v.get("arguments")) {
        // Some models write the arguments as a string holding JSON.
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(arguments) => arguments.to_string(),
        None if value.is_some() => "{}".to_owned(),
        // Unreadable: kept raw, so the engine tells the model its arguments are not JSON.
        None => body.to_owned(),
    };
    Some(ToolCall { id: call_id(body), name, arguments })
}

/// The value of a `"name": "…"` field in text that is not whole JSON.
fn name_in(body: &str) -> Option<String> {
    let after = &body[body.find("\"name\"")? + "\"name\"".len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let name = &after[..after.find('"')?];
    name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)).then(|| name.to_owned())
}

/// A call id unique within the process, and unlike another process's calls of other text
/// (the engine pairs each result with its call by id; a provider a fallback reaches later may
/// refuse a history that repeats one).
fn call_id(body: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("call_{:x}_{:08x}", NEXT.fetch_add(1, Ordering::Relaxed), hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&str]) -> (String, Vec<ToolCall>) {
        let mut splitter = CallSplitter::default();
        let mut shown = String::new();
        for piece in pieces {
            shown.push_str(&splitter.push(piece));
        }
        let (rest, calls) = splitter.finish();
        shown.push_str(&rest);
        (shown, calls)
    }

    /// Every way of cutting `text` into two or three pieces gives the same result as whole.
    fn same_however_cut(text: &str) -> (String, Vec<(String, String)>) {
        let names =
            |calls: Vec<ToolCall>| calls.into_iter().map(|c| (c.name, c.arguments)).collect();
        let (whole, calls) = split(&[text]);
        let whole = (whole, names(calls));
        let cuts: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        for &a in &cuts {
            for &b in cuts.iter().filter(|&&b| b >= a) {
                let (shown, calls) = split(&[&text[..a], &text[a..b], &text[b..]]);
                assert_eq!((shown, names(calls)), whole, "cut at {a} and {b}");
            }
        }
        whole
    }

    #[test]
    fn text_without_calls_streams_whole() {
        let (shown, calls) = same_however_cut("The answer is 4 < 5, and <tool is a word. Ünïcode!");
        assert_eq!(shown, "The answer is 4 < 5, and <tool is a word. Ünïcode!");
        assert!(calls.is_empty());
    }

    #[test]
    fn a_call_is_read_and_its_tag_never_shown() {
        let text = "Let me look.\n<tool_call>\n{\"name\": \"files.read\", \"arguments\": {\"path\": \"a.txt\"}}\n</tool_call>";
        let (shown, calls) = same_however_cut(text);
        assert_eq!(shown, "Let me look.\n");
        assert_eq!(calls, vec![("files.read".to_owned(), r#"{"path":"a.txt"}"#.to_owned())]);
        // Nothing of the tag streams before the answer ends, however it is cut.
        let mut splitter = CallSplitter::default();
        let mut streamed = String::new();
        for c in text.chars() {
            streamed.push_str(&splitter.push(&c.to_string()));
        }
        assert_eq!(streamed, "Let me look.\n");
    }

    #[test]
    fn several_calls_string_arguments_and_a_missing_close_tag() {
        let text = "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>\n<tool_call>{\"name\": \"b\"}";
        let (shown, calls) = same_however_cut(text);
        assert_eq!(shown, "");
        assert_eq!(
            calls,
            vec![("a".to_owned(), r#"{"x": 1}"#.to_owned()), ("b".to_owned(), "{}".to_owned())]
        );
    }

    #[test]
    fn bad_arguments_stay_raw_and_a_nameless_call_stays_text() {
        let (shown, calls) = same_however_cut(
            "<tool_call>{\"name\": \"clock.now\", \"arguments\": {oops}</tool_call>",
        );
        assert_eq!(shown, "");
        assert_eq!(calls[0].0, "clock.now");
        assert!(serde_json::from_str::<serde_json::Value>(&calls[0].1).is_err());
        let text = "Sure. <tool_call>{\"arguments\": {}}</tool_call>";
        let (shown, calls) = same_however_cut(text);
        assert_eq!(shown, text);
        assert!(calls.is_empty());
    }

    #[test]
    fn ids_differ_and_past_calls_read_back_as_written() {
        let (_, first) = split(&["<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>"]);
        let (_, second) = split(&["<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>"]);
        assert_ne!(first[0].id, second[0].id);
        let shown = calls_text("", &first);
        let (_, again) = split(&[&shown]);
        assert_eq!((again[0].name.as_str(), again[0].arguments.as_str()), ("a", "{}"));
        let listed = tools_prompt(&[ToolSpec {
            name: "clock.now".into(),
            description: "The time".into(),
            input_schema: serde_json::json!({"type": "object"}),
        }]);
        assert!(listed.contains("\"name\":\"clock.now\"") && listed.contains("<tools>"));
    }
}
