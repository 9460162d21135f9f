//! A Server-Sent Events parser (the WHATWG event-stream format both providers stream in).

use crate::error::Error;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (OpenAI sends none; Anthropic names every event).
    pub event: Option<String>,
    pub data: String,
    /// The last `id:` field seen so far (what a reconnecting client sends as
    /// `Last-Event-ID`), if any.
    pub id: Option<String>,
}

/// Longest line accepted; a stream that never sends a newline is malformed, not a memory sink.
const MAX_LINE: usize = 8 * 1024 * 1024;

/// Incremental parser: feed it chunks as they arrive, get complete events out.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The last event id: it outlives the event that set it, as the format says.
    id: Option<String>,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), Error> {
        for &byte in chunk {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8(line).map_err(|_| {
                    Error::MalformedResponse("event stream is not valid UTF-8".into())
                })?;
                self.line_done(&line, out);
            } else {
                if self.line.len() >= MAX_LINE {
                    return Err(Error::MalformedResponse(
                        "event stream line longer than 8 MiB".into(),
                    ));
                }
                self.line.push(byte);
            }
        }
        Ok(())
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent { event: self.event.take(), data, id: self.id.clone() });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return; // A comment (keep-alive).
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            // An id with a NUL is ignored, as the format says.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // id, retry and unknown fields do not matter here.
        }
    }

    /// Whether a partial event is pending (a stream that ends here was cut off).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.data.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&str]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk.as_bytes(), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn parses_events_split_anywhere() {
        let text = "event: ping\ndata: {}\n\n: comment\ndata: a\ndata: b\r\n\r\ndata:[DONE]\n\n";
        let whole = parse(&[text]);
        assert_eq!(
            whole,
            vec![
                SseEvent { event: Some("ping".into()), data: "{}".into(), id: None },
                SseEvent { event: None, data: "a\nb".into(), id: None },
                SseEvent { event: None, data: "[DONE]".into(), id: None },
            ]
        );
        // Every split point gives the same events.
        for i in 0..text.len() {
            assert_eq!(parse(&[&text[..i], &text[i..]]), whole, "split at {i}");
        }
    }

    #[test]
    fn rejects_invalid_utf8() {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        assert!(parser.push(b"data: \xff\n\n", &mut out).is_err());
    }
}
