//! The flow language through its public API: the examples check, and every bad input is
//! refused with its place and what to do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clade_flow::{Flow, StepKind};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flows")
}

fn parse(text: &str) -> Result<Flow, String> {
    clade_flow::parse(text, Path::new("t.flow.yaml")).map_err(|e| e.to_string())
}

/// The problems of `text`, each as `line:column: message`.
fn problems(text: &str) -> Vec<String> {
    match clade_flow::parse(text, Path::new("t.flow.yaml")) {
        Ok(_) => panic!("the flow was accepted:\n{text}"),
        Err(err) => err
            .problems()
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.place.line, p.place.column, p.message))
            .collect(),
    }
}

fn assert_problem(text: &str, at: &str, words: &str) {
    let found = problems(text);
    assert!(
        found.iter().any(|p| p.starts_with(at) && p.contains(words)),
        "expected a problem at {at} saying {words:?}, found {found:#?}"
    );
}

const HEAD: &str = "name: t\nagents:\n  a:\n    handle: ada\n";

#[test]
fn every_example_checks_and_keeps_its_order() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".flow.yaml") {
            continue;
        }
        let flow = clade_flow::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!flow.tasks.is_empty(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "examples/flows holds {seen} flows");
    let research = clade_flow::load(&examples().join("research.flow.yaml")).unwrap();
    assert_eq!(research.task_order(), ["sources", "timeline", "open_questions", "draft", "review"]);
    assert!(matches!(research.run[0].kind, StepKind::Parallel { .. }));
}

#[test]
fn without_run_tasks_go_in_the_order_written() {
    let flow = parse(&format!(
        "{HEAD}tasks:\n  - id: zeta\n    agent: a\n    prompt: one\n  - id: alpha\n    agent: a\n    prompt: two {{{{ tasks.zeta.output }}}}\n"
    ))
    .unwrap();
    assert_eq!(flow.task_order(), ["zeta", "alpha"]);
}

#[test]
fn an_unknown_agent_is_named_with_the_known_ones() {
    let text = "name: t\nagents:\n  writer:\n    handle: ada\ntasks:\n  - id: x\n    agent: wirter\n    prompt: hi\n";
    assert_problem(text, "7:12", "unknown agent \"wirter\"; the flow's agents are: writer");
}

#[test]
fn another_tenants_agent_cannot_be_named() {
    let text = "name: t\nagents:\n  a:\n    handle: acme/ada\ntasks:\n  - id: x\n    agent: a\n    prompt: hi\n";
    assert_problem(text, "4:13", "a flow runs in one tenant");
}

#[test]
fn a_goto_back_is_a_cycle() {
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\n  - id: two\n    agent: a\n    prompt: hi\nrun:\n  - task: one\n  - task: two\n    on_error:\n      goto: one\n"
    );
    assert_problem(&text, "16:7", "goes back to an earlier step, which makes a cycle");
}

#[test]
fn a_loop_without_a_bound_is_refused_where_it_is() {
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\nrun:\n  - loop:\n      until: true\n      steps:\n        - task: one\n"
    );
    assert_problem(&text, "12:7", "missing field `max_iterations`");
    let zero = text.replace("      steps:", "      max_iterations: 0\n      steps:");
    assert_problem(&zero, "12:23", "max_iterations must be 1 to 10000");
}

#[test]
fn reading_a_task_before_it_runs_is_refused() {
    // Later in the list.
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: see {{{{ tasks.two.output }}}}\n  - id: two\n    agent: a\n    prompt: hi\n"
    );
    assert_problem(&text, "8:13", "reads tasks.two's output before it exists");
    // A sibling branch of the same parallel block.
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\n  - id: two\n    agent: a\n    prompt: \"{{{{ tasks.one.output }}}}\"\nrun:\n  - parallel:\n      steps:\n        - task: one\n        - task: two\n"
    );
    assert_problem(&text, "11:13", "reads tasks.one's output before it exists");
    // Not a task at all.
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: \"{{{{ tasks.nope.output }}}}\"\n"
    );
    assert_problem(&text, "8:13", "reads tasks.nope, which is not declared");
}

#[test]
fn a_loop_reads_its_own_tasks_from_the_iteration_before() {
    let text = format!(
        "{HEAD}tasks:\n  - id: draft\n    agent: a\n    prompt: \"{{% if iteration > 0 %}}{{{{ tasks.review.output }}}}{{% endif %}}\"\n  - id: review\n    agent: a\n    prompt: \"{{{{ tasks.draft.output }}}}\"\nrun:\n  - loop:\n      until: tasks.review.output == 'ok'\n      max_iterations: 3\n      steps:\n        - task: draft\n        - task: review\n"
    );
    parse(&text).unwrap();
}

#[test]
fn an_expression_that_does_not_parse_is_placed() {
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\nrun:\n  - condition:\n      if: inputs.x ==\n      then:\n        - task: one\n"
    );
    assert_problem(&text, "11:11", "if: does not parse: syntax error");
}

#[test]
fn an_expression_cannot_reach_outside_its_inputs() {
    for reach in ["config", "os.environ", "__builtins__", "cycler", "lipsum"] {
        let text =
            format!("{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: \"{{{{ {reach} }}}}\"\n");
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.contains("which is not one of inputs, env, tasks")),
            "{reach}: {found:#?}"
        );
    }
    // What the language has of its own reaches nothing either.
    for inside in
        ["{{ range.__globals__ }}", "{{ range.__class__.__mro__ }}", "{{ namespace.__init__ }}"]
    {
        let rendered = clade_flow::expr::render(inside, &serde_json::json!({}));
        assert!(rendered.is_err(), "{inside} rendered {rendered:?}");
    }
    // No loader: a template never reads another file.
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: \"{{% include '/etc/passwd' %}}\"\n"
    );
    assert_problem(&text, "8:13", "does not parse");
    // A secret's value is never put in a prompt.
    let text = format!(
        "{HEAD}env:\n  KEY:\n    secret: api_key\ntasks:\n  - id: one\n    agent: a\n    prompt: \"{{{{ env.KEY }}}}\"\n"
    );
    assert_problem(&text, "11:13", "a secret's value is never put in a prompt");
}

#[test]
fn a_schema_no_answer_can_satisfy_is_refused() {
    for schema in ["false", "{not: {}}", "{enum: []}", "{type: integer, minimum: 5, maximum: 1}"] {
        let text = format!(
            "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\n    output_schema: {schema}\n"
        );
        assert_problem(&text, "9:20", "output_schema can never be satisfied");
    }
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\n    output_schema: {{type: 12}}\n"
    );
    assert_problem(&text, "9:20", "output_schema is not a valid JSON Schema");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "name: Bad Name\nagents:\n  a:\n    template: ../x\ntasks:\n  - id: one\n    agent: b\n    prompt: \"{{ inputs.nope }}\"\n  - id: one\n    agent: a\n    prompt: hi\n  - id: lonely\n    agent: a\n    prompt: hi\nrun:\n  - task: one\n  - task: one\n";
    let found = problems(text);
    for expected in [
        "1:7: name:",
        "4:15: agents.a.template:",
        "7:12: task one: unknown agent",
        "8:13: task one: prompt: reads inputs.nope",
        "9:9: tasks: id one is declared twice",
        "12:5: task lonely never runs",
        "16:11: task one is named 2 times in run",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "no {expected:?} in {found:#?}");
    }
}

#[test]
fn a_step_is_exactly_one_kind() {
    let text = format!(
        "{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\nrun:\n  - task: one\n    approval:\n      message: ok?\n  - timeout_secs: 5\n"
    );
    assert_problem(&text, "10:5", "this one has task, approval");
    assert_problem(&text, "13:5", "this one has none");
}

#[test]
fn deep_nesting_and_huge_files_are_refused_without_trouble() {
    let mut run = String::from("run:\n");
    let mut indent = String::from("  ");
    for _ in 0..40 {
        run.push_str(&format!("{indent}- sequential:\n"));
        indent.push_str("    ");
    }
    run.push_str(&format!("{indent}- task: one\n"));
    let text = format!("{HEAD}tasks:\n  - id: one\n    agent: a\n    prompt: hi\n{run}");
    let found = problems(&text);
    assert!(found.iter().any(|p| p.contains("nested") || p.contains("depth")), "{found:#?}");

    let huge = format!("{HEAD}description: \"{}\"\ntasks: []\n", "x".repeat(10 * 1024 * 1024));
    let err = parse(&huge).unwrap_err();
    assert!(err.contains("a flow file holds at most 1048576"), "{err}");
}

#[test]
fn yaml_errors_and_unknown_keys_are_placed() {
    assert_problem(&format!("{HEAD}tasks:\n  - id: one\n    agnet: a\n"), "7:5", "unknown field");
    assert_problem("name: [\n", "1:", "");
    let err = clade_flow::load(Path::new("/nonexistent/x.flow.yaml")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/x.flow.yaml"), "{err}");
}

#[test]
fn inputs_are_typed_with_defaults() {
    let text = format!(
        "{HEAD}inputs:\n  topic:\n    type: string\n  rounds:\n    type: integer\n    default: 3\ntasks:\n  - id: one\n    agent: a\n    prompt: \"{{{{ inputs.topic }}}} {{{{ inputs.rounds }}}}\"\n"
    );
    let flow = parse(&text).unwrap();
    let given = BTreeMap::from([("topic".to_owned(), serde_json::json!("tea"))]);
    let inputs = flow.inputs_of(&given).unwrap();
    assert_eq!(inputs["rounds"], serde_json::json!(3));
    let wrong = BTreeMap::from([("topic".to_owned(), serde_json::json!(5))]);
    let problems = flow.inputs_of(&wrong).unwrap_err();
    assert!(problems[0].contains("input \"topic\" must be a string, not 5"), "{problems:?}");
    let missing = flow.inputs_of(&BTreeMap::new()).unwrap_err();
    assert!(missing[0].contains("has no default: give it"), "{missing:?}");
    let unknown = BTreeMap::from([("topc".to_owned(), serde_json::json!("x"))]);
    assert!(flow.inputs_of(&unknown).unwrap_err()[0].contains("not one of the flow's inputs"));
    let not_json = clade_flow::flow::input_value(clade_flow::InputType::Integer, "x").unwrap_err();
    assert_eq!(not_json.to_string(), "\"x\" is not an integer: expected value at line 1 column 1");
    let wrong = clade_flow::flow::input_value(clade_flow::InputType::List, "3").unwrap_err();
    assert_eq!(wrong.to_string(), "\"3\" is not a list");
    let bad_default = format!(
        "{HEAD}inputs:\n  n:\n    type: integer\n    default: many\ntasks:\n  - id: one\n    agent: a\n    prompt: hi\n"
    );
    assert_problem(&bad_default, "7:5", "its default \"many\" is not an integer");
}

#[test]
fn committed_schema_matches_the_types() {
    let generated = serde_json::to_string_pretty(&clade_flow::json_schema()).unwrap() + "\n";
    clade_test_support::assert_committed("docs/flow.schema.json", &generated);
}

#[test]
fn every_example_satisfies_the_published_schema() {
    let schema = clade_flow::json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
    // And it refuses what the types refuse: a step of two kinds, a loop with no bound.
    let two_kinds = serde_json::json!({"name": "t", "agents": {}, "tasks": [], "run": [{"task": "a", "approval": {"message": "m"}}]});
    assert!(!validator.is_valid(&two_kinds));
    let unbounded = serde_json::json!({"name": "t", "agents": {}, "tasks": [], "run": [{"loop": {"until": "x", "steps": []}}]});
    assert!(!validator.is_valid(&unbounded));
}

#[test]
fn an_agent_made_for_each_run_has_a_name_its_handle_can_carry() {
    let long = "x".repeat(52);
    for name in ["Checker", "two-words", long.as_str()] {
        let text = format!(
            "name: t\nagents:\n  {name}: {{ template: reviewer }}\ntasks:\n  - id: one\n    agent: {name}\n    prompt: hi\n"
        );
        let at = format!("3:{}", name.len() + 5);
        assert_problem(&text, &at, "an agent made for each run is named a-z, 0-9 and '_'");
    }
    let fine = "name: t\nagents:\n  checker_2: { template: reviewer }\ntasks:\n  - id: one\n    agent: checker_2\n    prompt: hi\n";
    assert!(parse(fine).is_ok(), "{:?}", parse(fine).err());
}
