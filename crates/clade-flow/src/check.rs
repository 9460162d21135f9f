//! The rules a flow file must follow beyond its types, each problem named at its place:
//! unknown agents, tasks and inputs; ids that repeat; tasks that never run or run twice; a
//! template or expression that does not parse, reads a name it may not, or reads a task's
//! output before that task has run; a `goto` that goes back (a cycle); a loop without a
//! bound; blocks nested too deep; an output schema that is not one, or that no answer can
//! satisfy. [`check`] reports every problem it finds, not only the first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::expr::{self, ExprError};
use crate::flow::{
    AgentSource, DEFAULT_OUTPUT_RETRIES, DEFAULT_RUN_TIMEOUT, DEFAULT_TASK_TIMEOUT, EnvValue, Flow,
    Input, Join, LoopMode, OnError, Step, StepKind, Task,
};
use crate::spec::{
    At, FlowSpec, JoinSpec, LoopSpec, OnErrorSpec, ParallelSpec, Place, STEP_KINDS, StepSpec,
    TaskSpec,
};

/// The deepest a block may be nested in others.
pub const MAX_DEPTH: usize = 16;
/// The most iterations a loop may declare.
pub const MAX_ITERATIONS: u32 = 10_000;
/// The most tasks one flow may declare.
pub const MAX_TASKS: usize = 1_000;

/// One thing wrong with a flow file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub place: Place,
    pub message: String,
}

/// Checks `spec`; every problem found, in the order of the file.
pub fn check(spec: FlowSpec) -> Result<Flow, Vec<Problem>> {
    let mut checker = Checker::default();
    let flow = checker.flow(spec);
    let mut problems = checker.problems;
    problems.sort_by_key(|problem| problem.place);
    problems.dedup();
    match flow {
        Some(flow) if problems.is_empty() => Ok(flow),
        _ => Err(problems),
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    /// Declared tasks, with where each was declared.
    tasks: BTreeMap<String, Place>,
    inputs: BTreeSet<String>,
    env_values: BTreeSet<String>,
    env_secrets: BTreeSet<String>,
    /// How many times `run` names each task, and where first.
    ran: BTreeMap<String, (usize, Place)>,
    /// Names given to steps, to make ones for steps without.
    step_ids: BTreeSet<String>,
}

/// What a template may read at one place of a run.
#[derive(Clone, Default)]
struct Scope {
    /// Tasks that have run (or been skipped) before this place.
    done: BTreeSet<String>,
    /// Inside a loop: `item` and `iteration` exist.
    in_loop: bool,
    /// Tasks of the loops around this place: read before they run in an iteration, they hold
    /// what the iteration before did (nothing, `pending`, in the first).
    carried: BTreeSet<String>,
}

impl Checker {
    fn problem(&mut self, place: Place, message: impl Into<String>) {
        self.problems.push(Problem { place, message: message.into() });
    }

    fn flow(&mut self, spec: FlowSpec) -> Option<Flow> {
        let FlowSpec { name, description, inputs, agents, env, tasks, run, timeout_secs, budget } =
            spec;
        if let Err(e) = clade_core::Handle::parse(&name.value) {
            self.problem(name.place(), format!("name: {e}"));
        }
        let inputs = self.inputs(inputs);
        let agents = self.agents(agents);
        let env = self.env(env);
        let tasks = self.tasks(tasks, &agents);
        let run = match run {
            Some(steps) if steps.is_empty() => {
                self.problem(name.place(), "run: lists no steps; name at least one task");
                Vec::new()
            }
            Some(steps) => self.steps(steps, &mut Scope::default(), &tasks, 0, "run"),
            // Every task, one after another, in the order declared.
            None => self.default_run(&tasks),
        };
        for (id, place) in self.tasks.clone() {
            match self.ran.get(&id) {
                None => self.problem(place, format!("task {id} never runs: add it to run")),
                Some((times, at)) if *times > 1 => self.problem(
                    *at,
                    format!("task {id} is named {times} times in run; a task runs from one place (repeat it with a loop)"),
                ),
                Some(_) => {}
            }
        }
        let timeout =
            timeout_secs.map_or(DEFAULT_RUN_TIMEOUT, |t| self.seconds(&t, "timeout_secs"));
        let budget = budget.and_then(|b| self.budget(b, "budget"));
        Some(Flow {
            name: name.value,
            description,
            inputs,
            agents,
            env,
            tasks: tasks.into_iter().map(|(id, (task, _))| (id, task)).collect(),
            run,
            timeout,
            budget,
        })
    }

    fn budget(
        &mut self,
        spec: At<crate::spec::BudgetSpec>,
        field: &str,
    ) -> Option<crate::flow::Budget> {
        let place = spec.place();
        let crate::spec::BudgetSpec { max_tokens, max_cost_usd } = spec.value;
        if max_tokens.is_none() && max_cost_usd.is_none() {
            self.problem(place, format!("{field}: set max_tokens, max_cost_usd or both"));
            return None;
        }
        if max_tokens == Some(0) {
            self.problem(place, format!("{field}.max_tokens: must be at least 1"));
        }
        let max_cost_micros = match max_cost_usd {
            Some(usd) if usd.is_finite() && usd > 0.0 && usd < 1e9 => {
                Some((usd * 1e6).round() as u64)
            }
            Some(usd) => {
                self.problem(
                    place,
                    format!("{field}.max_cost_usd: a positive amount below a billion, not {usd}"),
                );
                None
            }
            None => None,
        };
        Some(crate::flow::Budget { max_tokens, max_cost_micros })
    }

    fn seconds(&mut self, value: &At<u64>, field: &str) -> Duration {
        if value.value == 0 {
            self.problem(value.place(), format!("{field}: must be at least 1"));
        }
        Duration::from_secs(value.value)
    }

    fn inputs(
        &mut self,
        inputs: BTreeMap<String, At<crate::InputSpec>>,
    ) -> BTreeMap<String, Input> {
        let mut checked = BTreeMap::new();
        for (name, input) in inputs {
            if !is_identifier(&name) {
                self.problem(
                    input.place(),
                    format!(
                        "inputs.{name}: an input's name is a-z, 0-9 and '_', starting with a letter"
                    ),
                );
            }
            if let Some(default) = &input.value.default
                && !input.value.kind.admits(default)
            {
                self.problem(
                    input.place(),
                    format!(
                        "inputs.{name}: its default {default} is not {}",
                        input.value.kind.named()
                    ),
                );
            }
            self.inputs.insert(name.clone());
            checked.insert(name, Input { kind: input.value.kind, default: input.value.default });
        }
        checked
    }

    fn agents(
        &mut self,
        agents: BTreeMap<String, At<crate::AgentSpec>>,
    ) -> BTreeMap<String, AgentSource> {
        let mut checked = BTreeMap::new();
        for (name, agent) in agents {
            let place = agent.place();
            let source = match (agent.value.handle, agent.value.template) {
                (Some(handle), None) => {
                    if handle.value.contains('/') {
                        self.problem(handle.place(), format!("agents.{name}.handle: a flow runs in one tenant; name its agent by handle alone, not {:?}", handle.value));
                    } else if let Err(e) = clade_core::Handle::parse(&handle.value) {
                        self.problem(handle.place(), format!("agents.{name}.handle: {e}"));
                    }
                    AgentSource::Handle(handle.value)
                }
                (None, Some(template)) => {
                    if let Err(e) = clade_core::TemplateName::parse(&template.value) {
                        self.problem(template.place(), format!("agents.{name}.template: {e}"));
                    }
                    // Its agent's handle is `run-<8 hex>-<name>`, at most 64 characters.
                    if !is_identifier(&name) || name.len() > MAX_MADE_AGENT_NAME {
                        self.problem(place, format!("agents.{name}: an agent made for each run is named a-z, 0-9 and '_', starting with a letter, at most {MAX_MADE_AGENT_NAME} characters (its handle is run-<id>-{name})"));
                    }
                    AgentSource::Template(template.value)
                }
                _ => {
                    self.problem(place, format!("agents.{name}: give exactly one of handle (an agent of the tenant) and template (one made for each run)"));
                    continue;
                }
            };
            checked.insert(name, source);
        }
        checked
    }

    fn env(&mut self, env: BTreeMap<String, At<crate::EnvSpec>>) -> BTreeMap<String, EnvValue> {
        let mut checked = BTreeMap::new();
        for (name, entry) in env {
            let place = entry.place();
            let valid = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                self.problem(
                    place,
                    format!("env.{name}: an env name is A-Z, 0-9 and '_', starting with a letter"),
                );
            }
            let value = match (entry.value.value, entry.value.secret) {
                (Some(value), None) => {
                    self.env_values.insert(name.clone());
                    EnvValue::Value(value)
                }
                (None, Some(secret)) => {
                    if let Err(e) = clade_core::SecretName::parse(&secret.value) {
                        self.problem(secret.place(), format!("env.{name}.secret: {e}"));
                    }
                    self.env_secrets.insert(name.clone());
                    EnvValue::Secret(secret.value)
                }
                _ => {
                    self.problem(place, format!("env.{name}: give exactly one of value and secret (a secret's name, never its value)"));
                    continue;
                }
            };
            checked.insert(name, value);
        }
        checked
    }

    fn tasks(
        &mut self,
        tasks: Vec<At<TaskSpec>>,
        agents: &BTreeMap<String, AgentSource>,
    ) -> BTreeMap<String, (Task, At<String>)> {
        if tasks.is_empty() {
            self.problem(
                Place { line: 1, column: 1 },
                "tasks: the flow declares none; a flow asks at least one agent something",
            );
        }
        if tasks.len() > MAX_TASKS {
            self.problem(
                tasks[MAX_TASKS].place(),
                format!("tasks: more than {MAX_TASKS}; split the flow"),
            );
        }
        let mut checked = BTreeMap::new();
        for task in tasks {
            let place = task.place();
            let spec = task.value;
            let id = spec.id.value.clone();
            if !is_identifier(&id) {
                self.problem(spec.id.place(), format!("tasks: id {id:?}: a task's id is a-z, 0-9 and '_', starting with a letter (templates read it as tasks.{id}.output)"));
            }
            if let Some(first) = self.tasks.get(&id) {
                self.problem(
                    spec.id.place(),
                    format!("tasks: id {id} is declared twice (first at line {})", first.line),
                );
                continue;
            }
            self.tasks.insert(id.clone(), place);
            if !agents.contains_key(&spec.agent.value) {
                let known: Vec<&str> = agents.keys().map(String::as_str).collect();
                self.problem(
                    spec.agent.place(),
                    format!(
                        "task {id}: unknown agent {:?}; the flow's agents are: {}",
                        spec.agent.value,
                        if known.is_empty() {
                            "none (declare it under agents)".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            let task = self.task(&id, spec);
            checked.insert(id, task);
        }
        checked
    }

    fn task(&mut self, id: &str, spec: TaskSpec) -> (Task, At<String>) {
        let TaskSpec {
            id: _,
            agent,
            prompt,
            output_schema,
            output_retries,
            timeout_secs,
            max_attempts,
            budget,
        } = spec;
        let budget = budget.and_then(|b| self.budget(b, &format!("task {id}: budget")));
        if let Some(schema) = &output_schema {
            self.output_schema(id, schema);
        }
        let timeout = timeout_secs.map_or(DEFAULT_TASK_TIMEOUT, |t| {
            self.seconds(&t, &format!("task {id}: timeout_secs"))
        });
        let max_attempts = match max_attempts {
            Some(n) if n.value == 0 || n.value > 10 => {
                self.problem(n.place(), format!("task {id}: max_attempts must be 1 to 10"));
                1
            }
            Some(n) => n.value,
            None => 1,
        };
        let output_retries = match output_retries {
            Some(n) if n.value > 10 => {
                self.problem(n.place(), format!("task {id}: output_retries must be 0 to 10"));
                0
            }
            Some(n) => n.value,
            None => DEFAULT_OUTPUT_RETRIES,
        };
        let task = Task {
            id: id.to_owned(),
            agent: agent.value,
            prompt: prompt.value.clone(),
            output_schema: output_schema.map(|schema| schema.value),
            output_retries,
            timeout,
            max_attempts,
            budget,
        };
        (task, prompt)
    }

    fn output_schema(&mut self, id: &str, schema: &At<serde_json::Value>) {
        if let Err(e) = jsonschema::validator_for(&schema.value) {
            self.problem(
                schema.place(),
                format!("task {id}: output_schema is not a valid JSON Schema: {e}"),
            );
            return;
        }
        if let Some(why) = unsatisfiable(&schema.value) {
            self.problem(
                schema.place(),
                format!("task {id}: output_schema can never be satisfied: {why}"),
            );
        }
    }

    fn default_run(&mut self, tasks: &BTreeMap<String, (Task, At<String>)>) -> Vec<Step> {
        // In the order declared, which the map lost: by place.
        let mut order: Vec<(&String, Place)> =
            self.tasks.iter().map(|(id, place)| (id, *place)).collect();
        order.sort_by_key(|(_, place)| *place);
        let specs: Vec<At<StepSpec>> = order
            .into_iter()
            .filter(|(id, _)| tasks.contains_key(*id))
            .map(|(id, place)| At {
                value: StepSpec {
                    task: Some(At { value: id.clone(), line: place.line, column: place.column }),
                    ..StepSpec::empty()
                },
                line: place.line,
                column: place.column,
            })
            .collect();
        self.steps(specs, &mut Scope::default(), tasks, 0, "run")
    }

    /// Checks one list of steps, run in order: each sees what the ones before it did.
    fn steps(
        &mut self,
        specs: Vec<At<StepSpec>>,
        scope: &mut Scope,
        tasks: &BTreeMap<String, (Task, At<String>)>,
        depth: usize,
        path: &str,
    ) -> Vec<Step> {
        // A goto's target: a later step of this list, by its id or its task.
        let names: Vec<Option<String>> = specs
            .iter()
            .map(|s| s.value.id.as_ref().or(s.value.task.as_ref()).map(|n| n.value.clone()))
            .collect();
        let mut steps = Vec::new();
        for (index, spec) in specs.into_iter().enumerate() {
            let place = spec.place();
            if let Some(At { value: OnErrorSpec::Goto { goto }, line, column }) =
                &spec.value.on_error
            {
                let at = Place { line: *line, column: *column };
                match names.iter().position(|name| name.as_deref() == Some(goto.as_str())) {
                    Some(target) if target > index => {}
                    Some(_) => self.problem(at, format!("on_error: goto {goto} goes back to an earlier step, which makes a cycle; a flow only jumps forward (repeat steps with a loop)")),
                    None => self.problem(at, format!("on_error: goto {goto}: no later step of this list has that id or task")),
                }
            }
            if let Some(step) =
                self.step(spec.value, place, scope, tasks, depth, &format!("{path}.{index}"))
            {
                steps.push(step);
            }
        }
        steps
    }

    fn step(
        &mut self,
        spec: StepSpec,
        place: Place,
        scope: &mut Scope,
        tasks: &BTreeMap<String, (Task, At<String>)>,
        depth: usize,
        path: &str,
    ) -> Option<Step> {
        if depth > MAX_DEPTH {
            self.problem(
                place,
                format!("blocks are nested more than {MAX_DEPTH} deep; split the flow"),
            );
            return None;
        }
        let kinds = spec.kinds();
        if kinds.len() != 1 {
            let found = if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") };
            self.problem(
                place,
                format!("a step is exactly one of {}; this one has {found}", STEP_KINDS.join(", ")),
            );
            return None;
        }
        let id = self.step_id(&spec, path);
        let timeout = spec.timeout_secs.as_ref().map(|t| self.seconds(t, "timeout_secs"));
        let on_error = match spec.on_error.as_ref().map(|e| (&e.value, e.place())) {
            None => OnError::Fail,
            Some((OnErrorSpec::Word(word), at)) => match word.as_str() {
                "fail" => OnError::Fail,
                "continue" => OnError::Continue,
                other => {
                    self.problem(
                        at,
                        format!("on_error: {other:?} is not fail, continue or {{goto: ID}}"),
                    );
                    OnError::Fail
                }
            },
            Some((OnErrorSpec::Goto { goto }, _)) => OnError::Goto(goto.clone()),
        };
        let kind = self.kind(spec, place, scope, tasks, depth, path)?;
        Some(Step { id, kind, timeout, on_error })
    }

    fn step_id(&mut self, spec: &StepSpec, path: &str) -> String {
        let id = match (&spec.id, &spec.task) {
            (Some(id), _) => {
                if !is_identifier(&id.value) {
                    self.problem(
                        id.place(),
                        format!(
                            "id {:?}: a step's id is a-z, 0-9 and '_', starting with a letter",
                            id.value
                        ),
                    );
                }
                id.value.clone()
            }
            (None, Some(task)) => task.value.clone(),
            (None, None) => path.to_owned(),
        };
        if !self.step_ids.insert(id.clone())
            && let Some(at) = &spec.id
        {
            self.problem(at.place(), format!("id {}: another step has it", at.value));
        }
        id
    }

    fn kind(
        &mut self,
        spec: StepSpec,
        place: Place,
        scope: &mut Scope,
        tasks: &BTreeMap<String, (Task, At<String>)>,
        depth: usize,
        path: &str,
    ) -> Option<StepKind> {
        let StepSpec { task, sequential, parallel, condition, repeat, approval, .. } = spec;
        if let Some(task) = task {
            return self.task_step(task, scope, tasks);
        }
        if let Some(steps) = sequential {
            return Some(StepKind::Sequential(self.steps(steps, scope, tasks, depth + 1, path)));
        }
        if let Some(parallel) = parallel {
            return self.parallel(parallel, place, scope, tasks, depth, path);
        }
        if let Some(condition) = condition {
            self.expression(&condition.when, scope, "if");
            let mut then_scope = scope.clone();
            let then = self.steps(
                condition.then,
                &mut then_scope,
                tasks,
                depth + 1,
                &format!("{path}.then"),
            );
            let mut else_scope = scope.clone();
            let otherwise = self.steps(
                condition.otherwise,
                &mut else_scope,
                tasks,
                depth + 1,
                &format!("{path}.else"),
            );
            // After the block, a task of either branch has run or been skipped.
            scope.done.extend(then_scope.done);
            scope.done.extend(else_scope.done);
            return Some(StepKind::Condition { when: condition.when.value, then, otherwise });
        }
        if let Some(repeat) = repeat {
            return self.repeat(repeat, place, scope, tasks, depth, path);
        }
        if let Some(approval) = approval {
            self.template(&approval.message, scope, "message");
            return Some(StepKind::Approval { message: approval.message.value });
        }
        None
    }

    fn task_step(
        &mut self,
        task: At<String>,
        scope: &mut Scope,
        tasks: &BTreeMap<String, (Task, At<String>)>,
    ) -> Option<StepKind> {
        let place = task.place();
        let id = task.value;
        let Some((_, prompt)) = tasks.get(&id) else {
            if !self.tasks.contains_key(&id) {
                self.problem(place, format!("task {id:?} is not declared under tasks"));
            }
            return None;
        };
        let entry = self.ran.entry(id.clone()).or_insert((0, place));
        entry.0 += 1;
        self.template(prompt, scope, &format!("task {id}: prompt"));
        scope.done.insert(id.clone());
        Some(StepKind::Task(id))
    }

    fn parallel(
        &mut self,
        parallel: ParallelSpec,
        place: Place,
        scope: &mut Scope,
        tasks: &BTreeMap<String, (Task, At<String>)>,
        depth: usize,
        path: &str,
    ) -> Option<StepKind> {
        let branches = parallel.steps.len();
        if branches == 0 {
            self.problem(place, "parallel: lists no steps");
        }
        let join = match parallel.join.as_ref().map(|j| (&j.value, j.place())) {
            None => Join::All,
            Some((JoinSpec::Word(word), at)) => match word.as_str() {
                "all" => Join::All,
                "any" => Join::Any,
                other => {
                    self.problem(
                        at,
                        format!("join: {other:?} is not all, any or a number of branches"),
                    );
                    Join::All
                }
            },
            Some((JoinSpec::Count(n), at)) => {
                if *n == 0 || *n as usize > branches {
                    self.problem(
                        at,
                        format!("join: {n} branches of {branches}; give 1 to {branches}"),
                    );
                }
                Join::Count(*n)
            }
        };
        let mut after = scope.done.clone();
        let mut steps = Vec::new();
        for (index, branch) in parallel.steps.into_iter().enumerate() {
            // Branches run at the same time: none sees another's output.
            let mut branch_scope = scope.clone();
            let branch_place = branch.place();
            if let Some(At { value: OnErrorSpec::Goto { .. }, line, column }) =
                &branch.value.on_error
            {
                self.problem(
                    Place { line: *line, column: *column },
                    "on_error: a parallel branch has no next step to go to; use continue or fail",
                );
            }
            if let Some(step) = self.step(
                branch.value,
                branch_place,
                &mut branch_scope,
                tasks,
                depth + 1,
                &format!("{path}.{index}"),
            ) {
                steps.push(step);
            }
            after.extend(branch_scope.done);
        }
        scope.done = after;
        Some(StepKind::Parallel { join, steps })
    }

    fn repeat(
        &mut self,
        repeat: LoopSpec,
        place: Place,
        scope: &mut Scope,
        tasks: &BTreeMap<String, (Task, At<String>)>,
        depth: usize,
        path: &str,
    ) -> Option<StepKind> {
        let LoopSpec { while_, until, for_each, max_iterations, steps } = repeat;
        if max_iterations.value == 0 || max_iterations.value > MAX_ITERATIONS {
            self.problem(
                max_iterations.place(),
                format!("loop: max_iterations must be 1 to {MAX_ITERATIONS}"),
            );
        }
        if steps.is_empty() {
            self.problem(place, "loop: lists no steps");
        }
        let before = scope.clone();
        let mut body = Scope { in_loop: true, ..scope.clone() };
        body.carried.extend(spec_tasks(&steps));
        let steps = self.steps(steps, &mut body, tasks, depth + 1, path);
        let mode = match (while_, until, for_each) {
            (Some(test), None, None) => {
                // Before each iteration, the body's tasks have run in earlier ones, or not yet.
                let mut first = Scope { in_loop: true, ..before };
                first.carried.clone_from(&body.carried);
                self.expression(&test, &first, "while");
                LoopMode::While(test.value)
            }
            (None, Some(test), None) => {
                self.expression(&test, &body, "until");
                LoopMode::Until(test.value)
            }
            (None, None, Some(list)) => {
                self.expression(&list, &before, "for_each");
                LoopMode::ForEach(list.value)
            }
            _ => {
                self.problem(place, "loop: give exactly one of while, until and for_each");
                return None;
            }
        };
        scope.done.extend(body.done);
        Some(StepKind::Loop { mode, max_iterations: max_iterations.value, steps })
    }

    fn template(&mut self, text: &At<String>, scope: &Scope, field: &str) {
        match expr::template_names(&text.value) {
            Ok(names) => self.names(names, text, scope, field),
            Err(e) => self.expr_problem(text, field, &e),
        }
    }

    fn expression(&mut self, text: &At<String>, scope: &Scope, field: &str) {
        match expr::expression_names(&text.value) {
            Ok(names) => self.names(names, text, scope, field),
            Err(e) => self.expr_problem(text, field, &e),
        }
    }

    fn expr_problem(&mut self, text: &At<String>, field: &str, e: &ExprError) {
        // The language counts lines within the text; a block scalar's text starts a line down.
        let place = match e.line {
            Some(line) if line > 1 => Place { line: text.line + line as u64 - 1, column: 1 },
            _ => text.place(),
        };
        self.problem(place, format!("{field}: does not parse: {e}"));
    }

    /// Checks each name a template reads against what exists at its place.
    fn names(&mut self, names: BTreeSet<String>, text: &At<String>, scope: &Scope, field: &str) {
        for name in names {
            let mut parts = name.split('.');
            let head = parts.next().unwrap_or_default();
            let second = parts.next();
            let message = match (head, second) {
                ("inputs", Some(input)) if self.inputs.contains(input) => None,
                ("inputs", Some(input)) => {
                    Some(format!("reads inputs.{input}, which the flow does not declare"))
                }
                ("env", Some(var)) if self.env_values.contains(var) => None,
                ("env", Some(var)) if self.env_secrets.contains(var) => Some(format!(
                    "reads env.{var}, a secret: a secret's value is never put in a prompt or expression"
                )),
                ("env", Some(var)) => {
                    Some(format!("reads env.{var}, which the flow does not declare"))
                }
                ("tasks", Some(task)) => self.task_read(task, parts.next(), scope),
                ("inputs" | "env" | "tasks", None) => {
                    Some(format!("reads {head} as a whole; name one entry, as {head}.NAME"))
                }
                ("item" | "iteration", _) if scope.in_loop => None,
                ("item" | "iteration", _) => {
                    Some(format!("reads {head}, which exists only inside a loop"))
                }
                (function, _) if expr::is_function(function) => None,
                (other, _) => {
                    Some(format!("reads {other:?}, which is not one of {}", expr::NAMES.join(", ")))
                }
            };
            if let Some(message) = message {
                self.problem(text.place(), format!("{field}: {message}"));
            }
        }
    }

    fn task_read(&self, task: &str, field: Option<&str>, scope: &Scope) -> Option<String> {
        if let Some(field) = field
            && !TASK_FIELDS.contains(&field)
        {
            return Some(format!(
                "reads tasks.{task}.{field}; a task has {}",
                TASK_FIELDS.join(", ")
            ));
        }
        if scope.done.contains(task) || scope.carried.contains(task) {
            return None;
        }
        Some(match self.tasks.get(task) {
            None => format!("reads tasks.{task}, which is not declared"),
            Some(_) => format!(
                "reads tasks.{task}'s output before it exists: {task} does not run before this point (move it earlier, or read it after its block)"
            ),
        })
    }
}

impl StepSpec {
    fn empty() -> Self {
        Self {
            task: None,
            sequential: None,
            parallel: None,
            condition: None,
            repeat: None,
            approval: None,
            id: None,
            timeout_secs: None,
            on_error: None,
        }
    }

    /// The kinds this step says it is (exactly one, when valid).
    fn kinds(&self) -> Vec<&'static str> {
        let present = [
            self.task.is_some(),
            self.sequential.is_some(),
            self.parallel.is_some(),
            self.condition.is_some(),
            self.repeat.is_some(),
            self.approval.is_some(),
        ];
        STEP_KINDS.iter().zip(present).filter(|(_, on)| *on).map(|(kind, _)| *kind).collect()
    }
}

/// What a template may read of a task: `tasks.ID.FIELD`.
pub const TASK_FIELDS: [&str; 5] = ["status", "output", "outputs", "error", "attempts"];

/// The tasks `steps` name, at any depth.
fn spec_tasks(steps: &[At<StepSpec>]) -> Vec<String> {
    let mut found = Vec::new();
    for step in steps {
        let step = &step.value;
        found.extend(step.task.iter().map(|t| t.value.clone()));
        let nested = [
            step.sequential.as_deref(),
            step.parallel.as_ref().map(|p| p.steps.as_slice()),
            step.condition.as_ref().map(|c| c.then.as_slice()),
            step.condition.as_ref().map(|c| c.otherwise.as_slice()),
            step.repeat.as_ref().map(|l| l.steps.as_slice()),
        ];
        for steps in nested.into_iter().flatten() {
            found.extend(spec_tasks(steps));
        }
    }
    found
}

/// An identifier templates can read as an attribute: a-z, 0-9 and '_', from a letter, ≤ 63.
/// The longest name of an agent made for each run: its handle adds 13 characters.
const MAX_MADE_AGENT_NAME: usize = 51;

fn is_identifier(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Why no value can satisfy `schema`, for the plain cases: `false`, `not: {}`, an empty
/// `enum`, `minimum` above `maximum`, `minLength` above `maxLength`, a property required and
/// `false`.
fn unsatisfiable(schema: &serde_json::Value) -> Option<String> {
    let object = match schema {
        serde_json::Value::Bool(false) => return Some("it is `false`".into()),
        serde_json::Value::Object(object) => object,
        _ => return None,
    };
    if object
        .get("not")
        .is_some_and(|not| not == &serde_json::json!({}) || not == &serde_json::Value::Bool(true))
    {
        return Some("`not` excludes every value".into());
    }
    if object.get("enum").and_then(|e| e.as_array()).is_some_and(Vec::is_empty) {
        return Some("its `enum` is empty".into());
    }
    let number = |key: &str| object.get(key).and_then(serde_json::Value::as_f64);
    if let (Some(min), Some(max)) = (number("minimum"), number("maximum"))
        && min > max
    {
        return Some(format!("minimum {min} is above maximum {max}"));
    }
    if let (Some(min), Some(max)) = (number("minLength"), number("maxLength"))
        && min > max
    {
        return Some(format!("minLength {min} is above maxLength {max}"));
    }
    let required = object.get("required").and_then(|r| r.as_array());
    let properties = object.get("properties").and_then(|p| p.as_object());
    if let (Some(required), Some(properties)) = (required, properties) {
        for name in required.iter().filter_map(|n| n.as_str()) {
            if let Some(property) = properties.get(name)
                && let Some(why) = unsatisfiable(property)
            {
                return Some(format!("required property {name:?}: {why}"));
            }
        }
    }
    None
}
