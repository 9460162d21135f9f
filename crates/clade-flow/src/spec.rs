//! The flow file's types, as written: what `*.flow.yaml` may say, with the place of every
//! value that a check may have to point at. [`crate::check`] turns a [`FlowSpec`] into a
//! [`crate::Flow`] or a list of problems.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// A value and where it was written: line and column from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub line: u64,
    pub column: u64,
}

impl<T> At<T> {
    /// The place of this value, for a problem found in it.
    pub fn place(&self) -> Place {
        Place { line: self.line, column: self.column }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let at = spanned.referenced;
        Ok(Self { value: spanned.value, line: at.line(), column: at.column() })
    }
}

impl<T: JsonSchema> JsonSchema for At<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A place in a flow file: line and column from 1 (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Place {
    pub line: u64,
    pub column: u64,
}

/// A flow: the agents it works with, the inputs it takes, its tasks and the order they run in.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Clade flow file (*.flow.yaml)")]
pub struct FlowSpec {
    /// The flow's name: 1-63 of a-z, 0-9 and '-', starting with a letter or digit.
    pub name: At<String>,
    /// What the flow does, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Values a run takes, by name (`{{ inputs.NAME }}` in templates).
    #[serde(default)]
    pub inputs: BTreeMap<String, At<InputSpec>>,
    /// The agents tasks name, by the name tasks use: an agent of the tenant (`handle`) or one
    /// made for each run from a persona template (`template`).
    pub agents: BTreeMap<String, At<AgentSpec>>,
    /// Values a run sees as `{{ env.NAME }}`: written here, or a secret of the tenant by name
    /// (a secret's value is never written in the file, and never put in a prompt).
    #[serde(default)]
    pub env: BTreeMap<String, At<EnvSpec>>,
    /// What agents are asked to do. Without `run`, they run one after another, in this order.
    pub tasks: Vec<At<TaskSpec>>,
    /// The order tasks run in: a list of steps, each a task or a block of steps.
    #[serde(default)]
    pub run: Option<Vec<At<StepSpec>>>,
    /// Most seconds a whole run may take; past it, the run fails. Default: 3600.
    #[serde(default)]
    pub timeout_secs: Option<At<u64>>,
    /// What a whole run may spend on its tasks' model calls; no limit when absent.
    #[serde(default)]
    pub budget: Option<At<BudgetSpec>>,
}

/// A run's spending limit: before each question, what the run's tasks have spent so far is
/// compared with it, and a task that would ask past it fails instead.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Most tokens, in and out, of all the run's model calls.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u64>,
    /// Most cost in US dollars, by the price table of each model (`models.NAME.price`).
    #[serde(default)]
    #[schemars(range(min = 0.000001))]
    pub max_cost_usd: Option<f64>,
}

/// The type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    List,
    Object,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::List => "list",
            Self::Object => "object",
        }
    }

    /// The type's name after an article: "a string", "an integer".
    pub fn named(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::Boolean => "a boolean",
            Self::List => "a list",
            Self::Object => "an object",
        }
    }

    /// Whether `value` is of this type.
    pub fn admits(self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match self {
            Self::String => value.is_string(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::List => value.is_array(),
            Self::Object => matches!(value, Value::Object(_)),
        }
    }
}

/// One input of a flow.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Its type; a value given at run time must be of it.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// The value when a run gives none; without it, a run must give one.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// What it means, for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// An agent a flow's tasks name: exactly one of `handle` and `template`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// An agent of the run's tenant, by handle (never another tenant's).
    #[serde(default)]
    pub handle: Option<At<String>>,
    /// A persona template (default, assistant, researcher, coder, reviewer, operator, or one
    /// of the data dir's): an agent is made from it for each run, within the tenant's limits.
    #[serde(default)]
    pub template: Option<At<String>>,
}

/// A value of a flow's `env`: exactly one of `value` and `secret`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// The value itself.
    #[serde(default)]
    pub value: Option<String>,
    /// The name of a secret of the tenant; its value is resolved when a run starts.
    #[serde(default)]
    pub secret: Option<At<String>>,
}

/// A task: an agent asked a prompt, its answer the task's output.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The task's name (a-z, 0-9 and '_', starting with a letter): `{{ tasks.ID.output }}`.
    pub id: At<String>,
    /// Which of the flow's `agents` does it.
    pub agent: At<String>,
    /// What the agent is asked: a template over `inputs`, `env`, earlier `tasks` and, in a
    /// loop, `item` and `iteration`.
    pub prompt: At<String>,
    /// A JSON Schema the answer must satisfy: the answer is read as JSON and checked; when it
    /// does not satisfy it, the agent is told what failed and asked again (`output_retries`
    /// times), and the output is the parsed value.
    #[serde(default)]
    pub output_schema: Option<At<serde_json::Value>>,
    /// How many times an answer that fails `output_schema` is sent back. Default: 2.
    #[serde(default)]
    pub output_retries: Option<At<u32>>,
    /// Most seconds the task may take, each attempt. Default: 600.
    #[serde(default)]
    pub timeout_secs: Option<At<u64>>,
    /// How many times a task whose turn failed is tried in all. Default: 1.
    #[serde(default)]
    pub max_attempts: Option<At<u32>>,
    /// What the task may spend each time it runs (each iteration, in a loop), retries and
    /// schema corrections included; no limit but the run's when absent.
    #[serde(default)]
    pub budget: Option<At<BudgetSpec>>,
}

/// One step of a flow's `run`: exactly one of `task`, `sequential`, `parallel`, `condition`,
/// `loop` and `approval`, with an optional `id`, `timeout_secs` and `on_error`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = exactly_one_kind)]
pub struct StepSpec {
    /// Runs the task of this id.
    #[serde(default)]
    pub task: Option<At<String>>,
    /// Runs these steps one after another.
    #[serde(default)]
    pub sequential: Option<Vec<At<StepSpec>>>,
    /// Runs these steps at the same time.
    #[serde(default)]
    pub parallel: Option<ParallelSpec>,
    /// Runs `then` or `else` as an expression says.
    #[serde(default)]
    pub condition: Option<ConditionSpec>,
    /// Runs steps again, while or until an expression says, or for each item of a list.
    #[serde(default, rename = "loop")]
    pub repeat: Option<LoopSpec>,
    /// Waits for a person to approve or deny; a denial fails the step.
    #[serde(default)]
    pub approval: Option<ApprovalSpec>,
    /// The step's name, for `on_error: {goto: ID}` and progress (a task step is named by its
    /// task).
    #[serde(default)]
    pub id: Option<At<String>>,
    /// Most seconds the step may take; past it, the step fails.
    #[serde(default)]
    pub timeout_secs: Option<At<u64>>,
    /// What a failure of this step does: `fail` the run (the default), `continue` with the
    /// next step, or `goto` a later step of the same list.
    #[serde(default)]
    pub on_error: Option<At<OnErrorSpec>>,
}

/// The kinds a step may be, as `StepSpec`'s keys spell them.
pub const STEP_KINDS: [&str; 6] =
    ["task", "sequential", "parallel", "condition", "loop", "approval"];

fn exactly_one_kind(schema: &mut Schema) {
    let one_of: Vec<serde_json::Value> =
        STEP_KINDS.iter().map(|kind| serde_json::json!({ "required": [kind] })).collect();
    schema.insert("oneOf".into(), serde_json::Value::Array(one_of));
}

/// Steps run at the same time, and when the block is done.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParallelSpec {
    /// `all` (the default): every branch must finish; `any`: the first to finish ends the
    /// block; a number n: the first n to finish do. Branches still running are cancelled.
    #[serde(default)]
    pub join: Option<At<JoinSpec>>,
    /// The branches, each a step.
    pub steps: Vec<At<StepSpec>>,
}

/// When a parallel block is done.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum JoinSpec {
    /// `all` or `any`.
    Word(String),
    /// This many branches.
    Count(u32),
}

/// A choice between two lists of steps.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// An expression over `inputs`, `env` and earlier `tasks`, e.g.
    /// `tasks.review.output.approved and inputs.publish`.
    #[serde(rename = "if")]
    pub when: At<String>,
    /// What runs when it is true.
    pub then: Vec<At<StepSpec>>,
    /// What runs when it is false (nothing by default).
    #[serde(default, rename = "else")]
    pub otherwise: Vec<At<StepSpec>>,
}

/// Steps run again: exactly one of `while`, `until` and `for_each`, and always a bound.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoopSpec {
    /// Checked before each iteration, over what ran before the loop and its earlier
    /// iterations; the loop ends when it is false.
    #[serde(default, rename = "while")]
    pub while_: Option<At<String>>,
    /// Checked after each iteration, over what the iteration did too; the loop ends when it is
    /// true.
    #[serde(default)]
    pub until: Option<At<String>>,
    /// An expression giving a list; the steps run once per item, as `{{ item }}`.
    #[serde(default)]
    pub for_each: Option<At<String>>,
    /// The most iterations; the loop fails past it (a `for_each` over a longer list fails
    /// before it starts; `while` and `until` stop with an error). Required: no loop is
    /// unbounded.
    pub max_iterations: At<u32>,
    /// The steps of one iteration.
    pub steps: Vec<At<StepSpec>>,
}

/// A human gate: the run waits, durably, until someone approves or denies.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// What the approver is asked: a template like a task's prompt.
    pub message: At<String>,
}

/// What a step's failure does.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OnErrorSpec {
    /// `fail` or `continue`.
    Word(String),
    /// Go on with a later step of the same list.
    Goto {
        /// The step's `id` or task.
        goto: String,
    },
}
