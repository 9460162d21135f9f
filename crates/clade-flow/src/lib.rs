//! Declared multi-agent workflows: a flow file (`*.flow.yaml`) says which agents do which
//! tasks, in which order, in parallel, under which condition and how many times.
//!
//! Owns the flow language ([`spec`]: the file's types and its JSON Schema; [`check()`]: the
//! rules beyond types, each problem at its file:line:column; [`expr`]: templates and
//! expressions in a sandboxed language), the checked [`Flow`], and the runner ([`run`]): a
//! run is a durable execution of kind `flow` whose steps are journaled, so a run stopped at
//! any point resumes where it stopped and no task's turn runs twice.
//!
//! Agents start runs of stored flows with the `flow.start` tool ([`tools`]).
//!
//! Depends on the runtime (the engine that runs each task's turn, durable executions) and
//! the store; it must not depend on the gateway or the CLI, which start runs.

use std::path::{Path, PathBuf};

pub mod budget;
pub mod check;
pub mod expr;
pub mod flow;
pub mod made;
pub mod run;
pub mod spec;
pub mod stored;
pub mod tools;

pub use check::{Problem, check};
pub use flow::{
    AgentSource, Budget, EnvValue, Flow, Join, LoopMode, OnError, Step, StepKind, Task,
};
pub use spec::{AgentSpec, EnvSpec, FlowSpec, InputSpec, InputType, Place};
pub use stored::{RESERVED_NAMES, StartStored};

/// The largest flow file read.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// The deepest YAML nesting read (blocks nest about three levels each).
const MAX_YAML_DEPTH: usize = 64;

/// A flow file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read flow file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: the file is {bytes} bytes; a flow file holds at most {MAX_FILE_BYTES}")]
    TooLarge { path: PathBuf, bytes: usize },
    #[error("{}", render_problems(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.place.line, p.place.column, p.message))
        .collect();
    lines.join("\n")
}

impl Error {
    /// Every problem found, with its place (one for a file that could not be read).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Invalid { problems, .. } => problems.clone(),
            other => vec![Problem { place: Place::default(), message: other.to_string() }],
        }
    }
}

/// Parses and checks a flow's text; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Flow, Error> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Error::TooLarge { path: path.to_owned(), bytes: text.len() });
    }
    let spec = parse_spec(text)
        .map_err(|problem| Error::Invalid { path: path.to_owned(), problems: vec![problem] })?;
    check(spec).map_err(|problems| Error::Invalid { path: path.to_owned(), problems })
}

/// Reads, parses and checks the flow file at `path`.
pub fn load(path: &Path) -> Result<Flow, Error> {
    let len = std::fs::metadata(path)
        .map_err(|source| Error::Read { path: path.to_owned(), source })?
        .len();
    if len > MAX_FILE_BYTES as u64 {
        return Err(Error::TooLarge { path: path.to_owned(), bytes: len as usize });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Read { path: path.to_owned(), source })?;
    parse(&text, path)
}

fn parse_spec(text: &str) -> Result<FlowSpec, Problem> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_YAML_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // YAML 1.2's booleans only: `n`, `no`, `on` stay strings (a schema's `required: [n]`).
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<FlowSpec>(text, options).map_err(|err| {
        // The rendered message carries a snippet over several lines; the first names the
        // problem.
        let rendered = err.to_string();
        let first = rendered.lines().next().unwrap_or("invalid YAML").trim();
        // The place is given apart; keep the words.
        let first = first.strip_prefix("error: ").unwrap_or(first);
        let message = match first.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
            Some((_, words)) => words.to_owned(),
            None => first.to_owned(),
        };
        let place = err
            .location()
            .map(|at| Place { line: at.line(), column: at.column() })
            .unwrap_or_default();
        Problem { place, message }
    })
}

/// The JSON Schema of a flow file, generated from [`FlowSpec`] (committed as
/// `docs/flow.schema.json`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(FlowSpec)).unwrap_or_default()
}
