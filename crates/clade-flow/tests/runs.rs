//! Flow runs on a real engine and SQLite store, with the offline scripted model (`/reply X`
//! answers X): every block kind, output schemas, approvals, cancel and pause, a run stopped
//! mid-way and driven again (no task asked twice), and starts refused with nothing made.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::collections::BTreeMap;
use std::time::Duration;

use clade_core::{ApprovalStatus, ExecutionStatus, Tenant};
use clade_flow::run::{Results, Runner, StartRun, TaskStatus};
use clade_store::{DataDir, Durability, Location, Store, StoreOptions};
use clade_test_support::wait::polled;
use serde_json::json;

struct Node {
    _dir: tempfile::TempDir,
    store: Store,
    data: DataDir,
    engine: clade_runtime::Engine,
    tenant: Tenant,
}

async fn node(agents: &[&str]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        ..StoreOptions::new(Location::Sqlite(data.sqlite_path()), Durability::Normal)
    };
    let store = Store::open(options).await.unwrap();
    let engine = engine(&store, &data).await;
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
    for handle in agents {
        create(&store, &data, &tenant, handle).await;
    }
    Node { _dir: dir, store, data, engine, tenant }
}

async fn create(store: &Store, data: &DataDir, tenant: &Tenant, handle: &str) {
    let new = clade_store::NewAgent {
        handle: clade_core::Handle::parse(handle).unwrap(),
        display_name: None,
        config: clade_core::AgentConfig::default(),
    };
    clade_store::Agents::new(store.clone(), data.clone()).create(tenant.id, new).await.unwrap();
}

async fn engine(store: &Store, data: &DataDir) -> clade_runtime::Engine {
    clade_runtime::Bare::new(store, data).start().await.unwrap()
}

fn start(source: &str, inputs: serde_json::Value) -> StartRun {
    let inputs: BTreeMap<String, serde_json::Value> = serde_json::from_value(inputs).unwrap();
    StartRun {
        source: source.to_owned(),
        file: "t.flow.yaml".into(),
        inputs,
        ..StartRun::default()
    }
}

async fn finished(
    runner: &Runner,
    node: &Node,
    id: clade_core::ExecutionId,
) -> (ExecutionStatus, Results, Option<String>) {
    let row = runner.wait(node.tenant.id, id, Duration::from_secs(60)).await.unwrap();
    assert!(row.status.is_final(), "the run did not end: {row:?}");
    let results = runner.results(&row).unwrap();
    (row.status, results, row.error)
}

/// How many turns the tenant's agents ran, in all.
async fn turns(node: &Node) -> usize {
    let sessions = node.store.sessions(node.tenant.id);
    let mut count = 0;
    for session in sessions.list(None, 1000).await.unwrap() {
        count += sessions.turn_records(session.id, None, 1000).await.unwrap().len();
    }
    count
}

const EVERY_BLOCK: &str = r#"
name: every-block
inputs:
  items:
    type: list
    default: ["a", "b", "c"]
  publish:
    type: boolean
    default: true
agents:
  w:
    handle: writer
  r:
    handle: reviewer
tasks:
  - id: left
    agent: w
    prompt: /reply left side
  - id: right
    agent: r
    prompt: /reply right side
  - id: each
    agent: w
    prompt: "/reply {\"item\": \"{{ item }}\", \"n\": {{ iteration }}}"
    output_schema:
      type: object
      required: [item, n]
  - id: draft
    agent: w
    prompt: "/reply draft {{ iteration }} after {{ tasks.left.output }} and {{ tasks.right.output }}"
  - id: review
    agent: r
    prompt: "/reply {\"approved\": {{ 'true' if iteration >= 1 else 'false' }}}"
    output_schema:
      type: object
      required: [approved]
      properties:
        approved: { type: boolean }
  - id: shipped
    agent: w
    prompt: "/reply shipped {{ tasks.draft.output }} with {{ tasks.each.outputs | length }} items"
  - id: held
    agent: w
    prompt: /reply held
run:
  - parallel:
      steps:
        - task: left
        - task: right
  - loop:
      for_each: inputs.items
      max_iterations: 10
      steps:
        - task: each
  - loop:
      until: tasks.review.output.approved
      max_iterations: 5
      steps:
        - task: draft
        - task: review
  - condition:
      if: inputs.publish and tasks.review.output.approved
      then:
        - task: shipped
      else:
        - task: held
"#;

#[tokio::test]
async fn every_block_runs_and_each_task_is_asked_once() {
    let node = node(&["writer", "reviewer"]).await;
    let runner = Runner::new(node.engine.clone());
    let row = runner.start(&node.tenant, start(EVERY_BLOCK, json!({}))).await.unwrap();
    let (status, results, error) = finished(&runner, &node, row.id).await;
    assert_eq!(status, ExecutionStatus::Completed, "{error:?} {results:#?}");
    assert_eq!(results["left"].output, json!("left side"));
    assert_eq!(results["right"].output, json!("right side"));
    assert_eq!(
        results["each"].outputs,
        vec![
            json!({"item": "a", "n": 0}),
            json!({"item": "b", "n": 1}),
            json!({"item": "c", "n": 2}),
        ]
    );
    // The reviewer approved in the second round.
    assert_eq!(results["review"].output, json!({"approved": true}));
    assert_eq!(results["draft"].output, json!("draft 1 after left side and right side"));
    assert_eq!(results["draft"].outputs.len(), 2);
    assert_eq!(
        results["shipped"].output,
        json!("shipped draft 1 after left side and right side with 3 items")
    );
    assert_eq!(results["held"].status, TaskStatus::Skipped);
    // 2 + 3 + 2×2 + 1 questions, each one turn.
    assert_eq!(turns(&node).await, 10);
}

#[tokio::test]
async fn an_answer_failing_the_schema_is_sent_back_a_bounded_number_of_times() {
    let node = node(&["writer"]).await;
    let runner = Runner::new(node.engine.clone());
    let flow = "name: t\nagents:\n  w:\n    handle: writer\ntasks:\n  - id: n\n    agent: w\n    prompt: /reply not json\n    output_schema: {type: integer}\n    output_retries: 2\n";
    let row = runner.start(&node.tenant, start(flow, json!({}))).await.unwrap();
    let (status, results, error) = finished(&runner, &node, row.id).await;
    assert_eq!(status, ExecutionStatus::Failed);
    let error = error.unwrap();
    assert!(error.contains("task n failed after 3 question(s): the answer is not JSON"), "{error}");
    assert_eq!(results["n"].status, TaskStatus::Failed);
    assert_eq!(results["n"].attempts, 3);
    assert_eq!(turns(&node).await, 3);
}

#[tokio::test]
async fn on_error_continue_and_goto_go_on_past_a_failure() {
    let node = node(&["writer"]).await;
    let runner = Runner::new(node.engine.clone());
    let flow = r#"
name: t
agents:
  w:
    handle: writer
tasks:
  - id: bad
    agent: w
    prompt: /reply nope
    output_schema: {type: integer}
    output_retries: 0
  - id: skipped
    agent: w
    prompt: /reply never
  - id: last
    agent: w
    prompt: "/reply last after {{ tasks.bad.status }} and {{ tasks.skipped.status }}"
run:
  - task: bad
    on_error:
      goto: last
  - task: skipped
  - task: last
"#;
    let row = runner.start(&node.tenant, start(flow, json!({}))).await.unwrap();
    let (status, results, error) = finished(&runner, &node, row.id).await;
    assert_eq!(status, ExecutionStatus::Completed, "{error:?}");
    assert_eq!(results["skipped"].status, TaskStatus::Skipped);
    assert_eq!(results["last"].output, json!("last after failed and skipped"));
}

#[tokio::test]
async fn a_loop_that_never_ends_stops_at_its_bound() {
    let node = node(&["writer"]).await;
    let runner = Runner::new(node.engine.clone());
    let flow = "name: t\nagents:\n  w:\n    handle: writer\ntasks:\n  - id: again\n    agent: w\n    prompt: /reply no\nrun:\n  - loop:\n      until: tasks.again.output == 'yes'\n      max_iterations: 3\n      steps:\n        - task: again\n";
    let row = runner.start(&node.tenant, start(flow, json!({}))).await.unwrap();
    let (status, results, error) = finished(&runner, &node, row.id).await;
    assert_eq!(status, ExecutionStatus::Failed);
    assert!(error.unwrap().contains("still asks for more after max_iterations (3)"));
    assert_eq!(results["again"].outputs.len(), 3);
}

#[tokio::test]
async fn a_run_stopped_midway_resumes_without_asking_any_task_twice() {
    let node = node(&["writer"]).await;
    let flow = r#"
name: t
agents:
  w:
    handle: writer
tasks:
  - id: one
    agent: w
    prompt: /reply one
  - id: gate
    agent: w
    prompt: /reply gate
  - id: two
    agent: w
    prompt: "/reply two after {{ tasks.one.output }}"
run:
  - task: one
  - task: gate
  - approval:
      message: "go on after {{ tasks.gate.output }}?"
  - task: two
"#;
    let first = Runner::new(node.engine.clone());
    let row = first.start(&node.tenant, start(flow, json!({}))).await.unwrap();
    // The run waits at its approval: stop its driver there, as a crash would.
    let access = node.store.access(node.tenant.id);
    let pending = polled(
        async || access.approvals(None, Some(ApprovalStatus::Pending), 10).await.unwrap(),
        |pending| !pending.is_empty(),
    )
    .await;
    let approval = pending.into_iter().next().expect("no approval was asked for");
    assert_eq!(approval.tool, "flow.approval");
    assert_eq!(approval.reason, "go on after gate?");
    first.stop_all();
    let asked_before = turns(&node).await;
    assert_eq!(asked_before, 2);

    // Another runner (a restarted gateway) drives it again; the approval it finds is the same.
    let second = Runner::new(node.engine.clone());
    assert_eq!(second.resume_open().await.unwrap(), 1);
    let decision = clade_store::ApprovalDecision {
        status: ApprovalStatus::Approved,
        decided_by: "test".into(),
        note: None,
        grant: None,
        audits: Vec::new(),
    };
    access.decide_approval(approval.id, decision).await.unwrap();
    let (status, results, error) = finished(&second, &node, row.id).await;
    assert_eq!(status, ExecutionStatus::Completed, "{error:?}");
    assert_eq!(results["two"].output, json!("two after one"));
    assert_eq!(turns(&node).await, 3, "a task was asked twice");
    let pending = access.approvals(None, None, 10).await.unwrap();
    assert_eq!(pending.len(), 1, "the approval was asked twice");
}

#[tokio::test]
async fn a_denied_approval_fails_the_run_and_cancel_stops_one() {
    let node = node(&["writer"]).await;
    let runner = Runner::new(node.engine.clone());
    let flow = "name: t\nagents:\n  w:\n    handle: writer\ntasks:\n  - id: after\n    agent: w\n    prompt: /reply x\nrun:\n  - approval:\n      message: ok?\n  - task: after\n";
    let denied = runner.start(&node.tenant, start(flow, json!({}))).await.unwrap();
    let cancelled = runner.start(&node.tenant, start(flow, json!({}))).await.unwrap();
    let access = node.store.access(node.tenant.id);
    let pending = polled(
        async || access.approvals(None, Some(ApprovalStatus::Pending), 10).await.unwrap(),
        |pending| pending.len() == 2,
    )
    .await;
    let ours = pending.iter().find(|a| a.arguments.contains(&denied.id.to_string())).unwrap();
    let decision = clade_store::ApprovalDecision {
        status: ApprovalStatus::Denied,
        decided_by: "test".into(),
        note: Some("not today".into()),
        grant: None,
        audits: Vec::new(),
    };
    access.decide_approval(ours.id, decision).await.unwrap();
    let (status, results, error) = finished(&runner, &node, denied.id).await;
    assert_eq!(status, ExecutionStatus::Failed);
    assert!(error.unwrap().contains("was denied: not today"));
    assert_eq!(results["after"].status, TaskStatus::Pending);

    let row = runner.cancel(node.tenant.id, cancelled.id).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Cancelled);
    let err = runner.cancel(node.tenant.id, cancelled.id).await.unwrap_err().to_string();
    assert!(err.contains("has ended (cancelled): nothing to cancel"), "{err}");
    assert_eq!(turns(&node).await, 0);
}

#[tokio::test]
async fn a_start_that_cannot_run_makes_nothing() {
    let node = node(&["writer"]).await;
    let runner = Runner::new(node.engine.clone());
    let flow = "name: t\ninputs:\n  n:\n    type: integer\nagents:\n  w:\n    handle: writer\ntasks:\n  - id: a\n    agent: w\n    prompt: /reply {{ inputs.n }}\n";
    let err = runner.start(&node.tenant, start(flow, json!({"n": "three"}))).await.unwrap_err();
    assert!(err.to_string().contains("input \"n\" must be an integer, not \"three\""), "{err}");
    let missing = flow.replace("handle: writer", "handle: ghost");
    let err = runner.start(&node.tenant, start(&missing, json!({"n": 3}))).await.unwrap_err();
    assert!(err.to_string().contains("no agent \"ghost\" in this tenant"), "{err}");
    let broken = flow.replace("/reply {{ inputs.n }}", "{{ inputs.m }}");
    let err = runner.start(&node.tenant, start(&broken, json!({"n": 3}))).await.unwrap_err();
    assert!(err.to_string().contains("t.flow.yaml:11:13"), "{err}");
    assert!(node.store.executions(node.tenant.id).list(10).await.unwrap().is_empty());

    // Another tenant's agent of the same handle is not this tenant's.
    let other = node.store.tenants().create("acme").await.unwrap();
    create(&node.store, &node.data, &other, "spy").await;
    let spying = flow.replace("handle: writer", "handle: spy");
    let err = runner.start(&node.tenant, start(&spying, json!({"n": 3}))).await.unwrap_err();
    assert!(err.to_string().contains("no agent \"spy\" in this tenant"), "{err}");
}

/// A job of `agent` whose target is `target`, with `inputs`, due from the start of time.
async fn new_job(
    node: &Node,
    agent: &str,
    name: &str,
    target: &str,
    inputs: &str,
) -> clade_store::NewJob {
    let agent = node.store.agents(node.tenant.id).get(agent).await.unwrap();
    clade_store::NewJob {
        id: clade_core::ExecutionId::generate(node.store.now()),
        tenant: node.tenant.id,
        agent: agent.id,
        name: name.into(),
        schedule: "@every 1h".into(),
        zone: "UTC".into(),
        misfire: "run_once".into(),
        target: clade_store::JobTarget::parse(target).unwrap(),
        jitter_secs: 0,
        prompt: inputs.into(),
        settled_at: clade_core::Timestamp::from_millis(0),
        next_at: Some(clade_core::Timestamp::from_millis(1_000)),
    }
}

async fn flow_job(
    node: &Node,
    agent: &str,
    name: &str,
    target: &str,
    inputs: &str,
) -> clade_store::JobRow {
    node.store.create_job(new_job(node, agent, name, target, inputs).await).await.unwrap()
}

/// `job`'s one fire, a second after its settled time.
fn one_fire(job: &clade_store::JobRow) -> clade_store::Settlement {
    let at = clade_core::Timestamp::from_millis(job.settled_at.as_millis() + 1_000);
    clade_store::Settlement {
        from: job.settled_at,
        fires: vec![at],
        skipped: 0,
        settled_at: at,
        next_at: None,
        max_queued: 100,
    }
}

/// Settles `job`'s fire ([`one_fire`]): what it delivered.
async fn fire(node: &Node, job: &clade_store::JobRow) -> Option<Vec<clade_store::FireDelivery>> {
    let settlement = one_fire(job);
    let settled = node.store.jobs(node.tenant.id).settle(job.id, settlement).await.unwrap();
    settled.map(|runs| runs.into_iter().map(|(_, delivered)| delivered).collect())
}

#[tokio::test]
async fn a_fire_of_a_flow_job_starts_its_run_once_and_a_restart_drives_it() {
    let node = node(&["writer"]).await;
    let runner = Runner::new(node.engine.clone());
    let flow = "name: nightly\ninputs:\n  who: { type: string }\n  times: { type: integer, default: 2 }\nagents:\n  w: { handle: writer }\ntasks:\n  - id: greet\n    agent: w\n    prompt: \"/reply hello {{ inputs.who }} x{{ inputs.times }}\"\n";
    runner.save(node.tenant.id, flow, "nightly.flow.yaml").await.unwrap();
    let job = flow_job(&node, "writer", "nightly", "flow:nightly", r#"{"who": "cron"}"#).await;

    // The fire records its run, running, in its own transaction; settling the same time
    // again (a second scheduler, a restart that looked again) starts nothing more.
    let delivered = fire(&node, &job).await.unwrap();
    let [clade_store::FireDelivery::Flow(id)] = delivered.as_slice() else {
        panic!("a flow job's fire starts a run: {delivered:?}")
    };
    assert_eq!(fire(&node, &job).await, None, "the same fire settled twice");
    let row = runner.get(node.tenant.id, *id).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Running);

    // Nothing drove it yet (the gateway stopped right after the fire): the next start does,
    // with the job's inputs checked against the flow's (the default filled in).
    assert_eq!(Runner::new(node.engine.clone()).resume_open().await.unwrap(), 1);
    let (status, results, error) = finished(&runner, &node, *id).await;
    assert_eq!(status, ExecutionStatus::Completed, "{error:?}");
    assert_eq!(results["greet"].output, json!("hello cron x2"));
    let runs = node.store.jobs(node.tenant.id).runs(job.id, None, 10).await.unwrap();
    assert_eq!(
        runs[0].outcome,
        clade_store::RunOutcome::Flow { run: *id, status: Some(ExecutionStatus::Completed) }
    );
    assert_eq!(turns(&node).await, 1, "the task was asked once");
}

#[tokio::test]
async fn a_flow_job_that_cannot_run_says_why_in_its_runs() {
    let node = node(&["writer"]).await;
    let runner = Runner::new(node.engine.clone());
    let flow = "name: typed\ninputs:\n  n: { type: integer }\nagents:\n  w: { handle: writer }\ntasks:\n  - id: a\n    agent: w\n    prompt: /reply {{ inputs.n }}\n";
    runner.save(node.tenant.id, flow, "typed.flow.yaml").await.unwrap();

    // Inputs the flow does not take: the run ends failed, saying why, asking no one.
    let job = flow_job(&node, "writer", "wrong", "flow:typed", r#"{"n": "three"}"#).await;
    let delivered = fire(&node, &job).await.unwrap();
    let [clade_store::FireDelivery::Flow(id)] = delivered.as_slice() else {
        panic!("no run started: {delivered:?}")
    };
    runner.take_up(node.tenant.id, *id).await.unwrap();
    let (status, _, error) = finished(&runner, &node, *id).await;
    assert_eq!(status, ExecutionStatus::Failed);
    let error = error.unwrap();
    assert!(error.contains("cannot start") && error.contains("must be an integer"), "{error}");
    let runs = node.store.jobs(node.tenant.id).runs(job.id, None, 10).await.unwrap();
    assert!(runs[0].outcome.is_failure(), "{runs:?}");
    assert_eq!(turns(&node).await, 0);

    // A job naming a flow that is not stored is refused when made; a flow deleted since is a
    // refused fire, with no run.
    let ghost = new_job(&node, "writer", "ghost", "flow:ghost", "{}").await;
    let refused = node.store.create_job(ghost).await.unwrap_err();
    assert!(matches!(refused, clade_store::Error::FlowNotFound(_)), "{refused}");
    let job = flow_job(&node, "writer", "later", "flow:typed", r#"{"n": 1}"#).await;
    clade_store::StoredFlows::of(&node.store, node.tenant.id).delete("typed").await.unwrap();
    let settled =
        node.store.jobs(node.tenant.id).settle_many(vec![(job.id, one_fire(&job))]).await.unwrap();
    assert!(
        matches!(&settled[0], Ok(clade_store::Settled::Refused { why, .. }) if why.contains("typed")),
        "{settled:?}"
    );
    let executions = node.store.executions(node.tenant.id).list(100).await.unwrap();
    let flows = executions.iter().filter(|e| e.kind == clade_core::ExecutionKind::Flow).count();
    assert_eq!(flows, 1, "only the first job's fire started a run");
}

const MADE: &str = "name: made\nagents:\n  w: { handle: writer }\n  check: { template: reviewer }\ntasks:\n  - id: draft\n    agent: w\n    prompt: /reply draft\n  - id: review\n    agent: check\n    prompt: \"/reply checked {{ tasks.draft.output }}\"\n";

#[tokio::test]
async fn an_agent_made_from_a_template_answers_for_its_run_and_goes_when_it_ends() {
    let node = node(&["writer"]).await;
    let agents = clade_store::Agents::new(node.store.clone(), node.data.clone());
    let runner = Runner::with_agents(node.engine.clone(), agents);
    let id = clade_core::ExecutionId::generate(node.store.now());
    let row = runner
        .start(&node.tenant, StartRun { id: Some(id), ..start(MADE, json!({})) })
        .await
        .unwrap();
    let handle = clade_flow::made::handle_of(id, "check");
    assert!(handle.starts_with("run-") && handle.ends_with("-check"), "{handle}");
    let (status, results, error) = finished(&runner, &node, row.id).await;
    assert_eq!(status, ExecutionStatus::Completed, "{error:?}");
    assert_eq!(results["review"].output, json!("checked draft"));
    assert_eq!(results["review"].turns.len(), 1, "{results:?}");
    // The writer's turn stays; the made agent's session went with it.
    assert_eq!(turns(&node).await, 1);
    // Gone with the run; the tenant's own agent stays.
    let gone = node.store.agents(node.tenant.id).get(&handle).await;
    assert!(matches!(gone, Err(clade_store::Error::AgentNotFound(_))), "{gone:?}");
    assert!(node.store.agents(node.tenant.id).get("writer").await.is_ok());

    // A start repeated with the run's id finds the run, and makes no agent again.
    let again = runner
        .start(&node.tenant, StartRun { id: Some(id), ..start(MADE, json!({})) })
        .await
        .unwrap();
    assert_eq!(again.id, id);
    assert!(node.store.agents(node.tenant.id).get(&handle).await.is_err());
}

#[tokio::test]
async fn a_flow_whose_agent_cannot_be_made_starts_nothing_and_makes_nothing() {
    let node = node(&["writer"]).await;
    let agents = clade_store::Agents::new(node.store.clone(), node.data.clone());
    let runner = Runner::with_agents(node.engine.clone(), agents);
    let unknown = MADE.replace("template: reviewer", "template: nosuch");
    let err = runner.start(&node.tenant, start(&unknown, json!({}))).await.unwrap_err();
    assert!(
        err.to_string().contains("agents.check: no agent can be made from template \"nosuch\""),
        "{err}"
    );
    // A runner that makes no agents refuses such a flow outright.
    let bare = Runner::new(node.engine.clone());
    let err = bare.start(&node.tenant, start(MADE, json!({}))).await.unwrap_err();
    assert!(err.to_string().contains("makes no agents"), "{err}");
    assert!(node.store.executions(node.tenant.id).list(10).await.unwrap().is_empty());
    let listed = node.store.agents(node.tenant.id).list(None, 100).await.unwrap();
    assert_eq!(listed.len(), 1, "only writer: {listed:?}");
}
