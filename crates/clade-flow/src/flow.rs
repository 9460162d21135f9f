//! A checked flow: what [`crate::check()`] makes of a [`crate::FlowSpec`] once every rule holds.
//! The runner takes only this, so it never meets a reference to a task that does not exist,
//! an unbounded loop or an expression that does not parse.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::InputType;

/// The longest a run may take when its file does not say.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest one attempt of a task may take when its file does not say.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(600);
/// How many times an answer failing its output schema is sent back when the file does not say.
pub const DEFAULT_OUTPUT_RETRIES: u32 = 2;

/// A flow whose every rule holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub name: String,
    pub description: Option<String>,
    pub inputs: BTreeMap<String, Input>,
    pub agents: BTreeMap<String, AgentSource>,
    pub env: BTreeMap<String, EnvValue>,
    pub tasks: BTreeMap<String, Task>,
    pub run: Vec<Step>,
    pub timeout: Duration,
    pub budget: Option<Budget>,
}

/// What a whole run may spend on its tasks' model calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub max_tokens: Option<u64>,
    /// In millionths of a US dollar, as usage is counted.
    pub max_cost_micros: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub kind: InputType,
    pub default: Option<serde_json::Value>,
}

/// Where a flow's agent comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSource {
    /// An agent of the run's tenant.
    Handle(String),
    /// Made for each run from this persona template.
    Template(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Value(String),
    Secret(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    /// A key of [`Flow::agents`].
    pub agent: String,
    pub prompt: String,
    pub output_schema: Option<serde_json::Value>,
    pub output_retries: u32,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub budget: Option<Budget>,
}

/// One step of a run: its name (written, or made from its place, so that a resumed run finds
/// the same names), what it is, and what its failure does.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    pub timeout: Option<Duration>,
    pub on_error: OnError,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// The task of this id.
    Task(String),
    Sequential(Vec<Step>),
    Parallel {
        join: Join,
        steps: Vec<Step>,
    },
    Condition {
        when: String,
        then: Vec<Step>,
        otherwise: Vec<Step>,
    },
    Loop {
        mode: LoopMode,
        max_iterations: u32,
        steps: Vec<Step>,
    },
    Approval {
        message: String,
    },
}

/// When a parallel block is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    All,
    Any,
    Count(u32),
}

impl Join {
    /// How many of `branches` must finish.
    pub fn needed(self, branches: usize) -> usize {
        match self {
            Self::All => branches,
            Self::Any => branches.min(1),
            Self::Count(n) => (n as usize).min(branches),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopMode {
    While(String),
    Until(String),
    ForEach(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnError {
    #[default]
    Fail,
    Continue,
    /// The id of a later step of the same list.
    Goto(String),
}

impl Flow {
    /// Every task step's task, in the order of the file.
    pub fn task_order(&self) -> Vec<&str> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a str>) {
            for step in steps {
                match &step.kind {
                    StepKind::Task(id) => out.push(id),
                    StepKind::Sequential(steps)
                    | StepKind::Parallel { steps, .. }
                    | StepKind::Loop { steps, .. } => walk(steps, out),
                    StepKind::Condition { then, otherwise, .. } => {
                        walk(then, out);
                        walk(otherwise, out);
                    }
                    StepKind::Approval { .. } => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.run, &mut out);
        out
    }

    /// The inputs a run gets: `given` checked against their declared types, with defaults for
    /// the rest. Every problem is named.
    pub fn inputs_of(
        &self,
        given: &BTreeMap<String, serde_json::Value>,
    ) -> Result<BTreeMap<String, serde_json::Value>, Vec<String>> {
        let mut problems = Vec::new();
        let mut inputs = BTreeMap::new();
        for name in given.keys().filter(|name| !self.inputs.contains_key(*name)) {
            let known: Vec<&str> = self.inputs.keys().map(String::as_str).collect();
            problems.push(format!(
                "input {name:?} is not one of the flow's inputs ({})",
                if known.is_empty() { "it takes none".to_owned() } else { known.join(", ") }
            ));
        }
        for (name, input) in &self.inputs {
            match given.get(name).or(input.default.as_ref()) {
                Some(value) if input.kind.admits(value) => {
                    inputs.insert(name.clone(), value.clone());
                }
                Some(value) => problems
                    .push(format!("input {name:?} must be {}, not {value}", input.kind.named())),
                None => problems.push(format!(
                    "input {name:?} ({}) has no default: give it, e.g. --input {name}=…",
                    input.kind.as_str()
                )),
            }
        }
        if problems.is_empty() { Ok(inputs) } else { Err(problems) }
    }
}

/// A `--input` value that is not of its input's type.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{text:?} is not {}: {source}", .kind.named())]
    NotJson { text: String, kind: InputType, source: serde_json::Error },
    #[error("{text:?} is not {}", .kind.named())]
    WrongType { text: String, kind: InputType },
}

/// Reads a `--input name=value` value as the input's type says: JSON for a number, boolean,
/// list or object, the text as it is for a string.
pub fn input_value(kind: InputType, text: &str) -> Result<serde_json::Value, InputError> {
    if kind == InputType::String {
        return Ok(serde_json::Value::String(text.to_owned()));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|source| InputError::NotJson { text: text.to_owned(), kind, source })?;
    if kind.admits(&value) {
        Ok(value)
    } else {
        Err(InputError::WrongType { text: text.to_owned(), kind })
    }
}
