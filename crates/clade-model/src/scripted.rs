//! The offline provider: [`crate::script`]'s deterministic replies, streamed word by word.
//! It is the default when no model is configured, so `clade serve` works with no key and no
//! network; it says so in its name and never pretends to be a language model.

use futures::future::BoxFuture;
use futures::stream;

use crate::error::Error;
use crate::provider::Provider;
use crate::script;
use crate::types::{EventStream, ModelRequest, StopReason, StreamEvent};

/// The name replies' metadata carries, so users can see they are not talking to a model.
pub const SCRIPTED_NAME: &str = "scripted";

#[derive(Debug, Default, Clone, Copy)]
pub struct Scripted;

impl Provider for Scripted {
    fn name(&self) -> &str {
        SCRIPTED_NAME
    }

    fn stream<'a>(
        &'a self,
        _model: &'a str,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<EventStream, Error>> {
        Box::pin(async move {
            let reply = script::reply(&request.messages);
            let mut events = Vec::new();
            // Word-sized deltas keeping their spaces, so the pieces join back to the text.
            let mut rest = reply.text.as_str();
            while !rest.is_empty() {
                let cut = rest
                    .char_indices()
                    .skip(1)
                    .find(|(_, c)| *c == ' ')
                    .map_or(rest.len(), |(i, _)| i);
                events.push(StreamEvent::TextDelta(rest[..cut].to_owned()));
                rest = &rest[cut..];
            }
            let stop =
                if reply.tool_calls.is_empty() { StopReason::EndTurn } else { StopReason::ToolUse };
            for (index, call) in reply.tool_calls.into_iter().enumerate() {
                events.push(StreamEvent::ToolCallStart { index, id: call.id, name: call.name });
                events.push(StreamEvent::ToolCallDelta { index, arguments: call.arguments });
            }
            events.push(StreamEvent::Usage(reply.usage));
            events.push(StreamEvent::Stop(stop));
            Ok(Box::pin(stream::iter(events.into_iter().map(Ok))) as EventStream)
        })
    }
}
