//! A turn's journal as the API shows it: one typed view per kind of step, not the engine's
//! internal encoding (which may change with the engine).

use clade_core::StepKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One step of a turn's journal, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TurnStep {
    /// A model call and its answer.
    ModelResponse {
        /// The step's key: `model/{iteration}`.
        step: String,
        /// The turn's model calls are numbered from 0.
        iteration: u32,
        /// The model that answered.
        model: String,
        text: String,
        /// The tool calls it asked for.
        tool_calls: Vec<ModelToolCall>,
        /// Including cached and cache-write tokens.
        input_tokens: u64,
        output_tokens: u64,
        /// Millionths of a US dollar.
        cost_micros: u64,
        /// The models tried, in order, with what happened to each (fallbacks, retries).
        route: Vec<String>,
        /// Messages in the request.
        messages: u64,
        /// SHA-256 of the request as sent; its content is the session's events, the earlier
        /// steps and the config revision.
        request_sha256: String,
        /// The tools the request offered.
        tools: Vec<String>,
    },
    /// A tool call passed policy and started.
    ToolStarted {
        /// `tool/{iteration}/{index}/start`.
        step: String,
        iteration: u32,
        /// The call's place among its model answer's calls, from 0.
        index: u32,
        /// The model's id for the call.
        call: String,
        name: String,
        /// The arguments as the model wrote them (a string when they were not valid JSON).
        arguments: Value,
        /// `pure`, `idempotent` or `at_most_once`.
        effect: String,
        /// The call's idempotency key, the same on every attempt.
        key: String,
    },
    /// What a tool call gave back to the model.
    ToolResult {
        /// `tool/{iteration}/{index}/result`.
        step: String,
        iteration: u32,
        index: u32,
        content: String,
        is_error: bool,
    },
    /// The turn was resumed after it yielded.
    Resumed {
        /// `resume/{n}`.
        step: String,
        /// Resumes are numbered from 0.
        n: u32,
    },
}

impl TurnStep {
    /// Its kind, as the vocabulary names it.
    pub fn kind(&self) -> StepKind {
        match self {
            TurnStep::ModelResponse { .. } => StepKind::ModelResponse,
            TurnStep::ToolStarted { .. } => StepKind::ToolStarted,
            TurnStep::ToolResult { .. } => StepKind::ToolResult,
            TurnStep::Resumed { .. } => StepKind::Resumed,
        }
    }
}

/// A tool call a model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelToolCall {
    pub id: String,
    pub name: String,
    /// The arguments' text as the model wrote it, valid JSON or not.
    pub arguments: String,
}

/// One page of a turn's steps, in the order they were written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnStepPage {
    pub items: Vec<TurnStep>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_steps_tag_is_the_vocabularys_spelling() {
        let steps = [
            TurnStep::ModelResponse {
                step: String::new(),
                iteration: 0,
                model: String::new(),
                text: String::new(),
                tool_calls: Vec::new(),
                input_tokens: 0,
                output_tokens: 0,
                cost_micros: 0,
                route: Vec::new(),
                messages: 0,
                request_sha256: String::new(),
                tools: Vec::new(),
            },
            TurnStep::ToolStarted {
                step: String::new(),
                iteration: 0,
                index: 0,
                call: String::new(),
                name: String::new(),
                arguments: Value::Null,
                effect: String::new(),
                key: String::new(),
            },
            TurnStep::ToolResult {
                step: String::new(),
                iteration: 0,
                index: 0,
                content: String::new(),
                is_error: false,
            },
            TurnStep::Resumed { step: String::new(), n: 0 },
        ];
        let kinds: Vec<StepKind> = steps.iter().map(TurnStep::kind).collect();
        assert_eq!(kinds, StepKind::ALL);
        for step in steps {
            let json = serde_json::to_value(&step).unwrap();
            assert_eq!(json["kind"], step.kind().as_str());
            assert_eq!(serde_json::from_value::<TurnStep>(json).unwrap(), step);
        }
    }
}
