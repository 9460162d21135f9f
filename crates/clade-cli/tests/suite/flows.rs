//! Flows through the binary: `clade flow check`, every example of `examples/flows/` run with
//! `clade flow run` against a gateway whose agents answer through `clade-stub`, a run killed
//! with SIGKILL mid-way that ends after a restart with no task asked twice, stored flows run
//! pinned to a version and retried, and one tenant's token against another's flows and runs.

use std::path::Path;

use serde_json::{Value, json};

use super::support::{Env, Server, polled, token, write};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/flows")
        .join(name)
        .display()
        .to_string()
}

/// A gateway whose reviewer and extractor answer the JSON their flows ask for (through the
/// stub), and whose other agents echo (the offline model); every agent the examples name
/// exists.
fn crew(stub: &clade_stub::Stub) -> (Env, Server) {
    let env = Env::new();
    let verdict = r#"{"approved":true,"notes":"clear_and_sourced","changes":"none"}"#;
    let record = r#"{"name":"Ada_Lovelace","born":1815,"city":"London"}"#;
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "models:\n  verdict: {{ provider: openai, base_url: \"{url}/v1\", model: 'stub+fixed={verdict}' }}\n  record: {{ provider: openai, base_url: \"{url}/v1\", model: 'stub+fixed={record}' }}\nrouting:\n  default: [scripted]\n  agents:\n    reviewer: {{ channel: [verdict] }}\n    extractor: {{ channel: [record] }}\n",
            url = stub.url()
        ),
    );
    for agent in [
        "researcher",
        "writer",
        "reviewer",
        "extractor",
        "analyst",
        "publisher",
        "manager",
        "coder",
        "integrator",
    ] {
        env.run(&["agents", "create", agent]).ok();
    }
    let server = env.serve(&[]);
    (env, server)
}

/// A gateway whose default tenant has the agent `writer`, beside a tenant `acme` (its admin
/// token is returned) that has none.
fn writer_beside_acme() -> (Env, String, Server) {
    let env = Env::new();
    env.run(&["agents", "create", "writer"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    let (acme, _) = token(&env, "acme", &["admin"]);
    let server = env.serve(&[]);
    (env, acme, server)
}

/// A token of the default tenant that reaches only its agent `writer`.
fn writer_only_token(env: &Env) -> String {
    let made = env.run(&["tokens", "create", "--name", "one", "--only-agent", "writer"]).ok();
    made.stdout.trim().to_owned()
}

fn task<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("no task {id} in {run}"))
}

#[test]
fn check_names_every_problem_at_its_place() {
    let env = Env::new();
    let ok = env.run(&["flow", "check", &example("devops.flow.yaml")]).ok();
    assert!(
        ok.stdout.contains("run in this order: plan, code, review, integrate, report"),
        "{}",
        ok.stdout
    );
    let bad = env.tmp.path().join("bad.flow.yaml");
    write(
        &bad,
        "name: bad\nagents:\n  a:\n    handle: ada\ntasks:\n  - id: one\n    agent: b\n    prompt: \"{{ tasks.two.output }}\"\n  - id: two\n    agent: a\n    prompt: hi\n",
    );
    let out = env.run(&["flow", "check", &bad.display().to_string()]);
    assert_ne!(out.code, 0);
    let shown = bad.display().to_string();
    assert!(
        out.stderr.contains(&format!("{shown}:7:12: task one: unknown agent \"b\"")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{shown}:8:13: task one: prompt: reads tasks.two's output before it exists"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("has 2 problems"), "{}", out.stderr);
    env.run(&["flow", "check", "/nonexistent.flow.yaml"])
        .fails_with("cannot read flow file /nonexistent.flow.yaml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_to_its_end() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let (env, server) = crew(&stub);

    let research = env
        .run(&[
            "flow",
            "run",
            &example("research.flow.yaml"),
            "--input",
            "topic=tea",
            "--watch",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(research["status"], "completed", "{research}");
    assert_eq!(
        task(&research, "review")["output"],
        json!({"approved": true, "notes": "clear and sourced", "changes": "none"})
    );
    let draft = task(&research, "draft")["output"].as_str().unwrap().to_owned();
    assert!(
        draft.contains("Sources: echo: List the three best primary sources on tea."),
        "{draft}"
    );

    let etl = env.run(&["flow", "run", &example("etl.flow.yaml"), "--watch", "--json"]).ok().json();
    assert_eq!(etl["status"], "completed", "{etl}");
    assert_eq!(task(&etl, "extract")["outputs"].as_array().unwrap().len(), 3, "{etl}");
    let summary = task(&etl, "summary")["output"].as_str().unwrap().to_owned();
    assert!(summary.contains(r#""city": "London""#), "{summary}");

    let devops = env
        .run(&[
            "flow",
            "run",
            &example("devops.flow.yaml"),
            "--input",
            "change=add a /healthz route",
            "--watch",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(devops["status"], "completed", "{devops}");
    assert_eq!(task(&devops, "code")["outputs"].as_array().unwrap().len(), 1, "approved at once");
    let report = task(&devops, "report")["output"].as_str().unwrap().to_owned();
    assert!(report.contains("the review (none)"), "{report}");

    // The approval gate: the run waits until the operator approves.
    let started = env.run(&["flow", "run", &example("approval.flow.yaml"), "--json"]).ok().json();
    let id = started["id"].as_str().unwrap().to_owned();
    let approval = pending_approval(&server).await;
    assert_eq!(approval["tool"], "flow.approval");
    let shown = env.run(&["flow", "runs", "show", &id, "--json"]).ok().json();
    assert_eq!(task(&shown, "publish")["status"], "pending", "{shown}");
    env.run(&["approvals", "approve", approval["id"].as_str().unwrap()]).ok();
    let ended = ended(&server, &id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert!(
        task(&ended, "publish")["output"].as_str().unwrap().contains("Publish this announcement")
    );

    let list = env.run(&["flow", "runs", "list", "--json"]).ok().json();
    assert_eq!(list["runs"].as_array().unwrap().len(), 4, "{list}");
}

async fn pending_approval(server: &Server) -> Value {
    let list = polled(
        async || server.get_json("/v1/approvals?status=pending").await,
        |list| list["items"].as_array().is_some_and(|items| !items.is_empty()),
    )
    .await;
    list["items"].get(0).cloned().unwrap_or_else(|| panic!("no approval was asked for: {list}"))
}

async fn ended(server: &Server, id: &str) -> Value {
    let run = polled(
        async || server.get_json(&format!("/v1/flows/runs/{id}")).await,
        |run| matches!(run["status"].as_str(), Some("completed" | "failed" | "cancelled")),
    )
    .await;
    assert!(run["finished_at"].is_i64(), "flow run {id} did not end: {run}");
    run
}

/// How many turns each of the tenant's sessions ran, in all (every page of sessions; no
/// session is active while this reads, so none moves between pages).
async fn turns(server: &Server) -> usize {
    let mut count = 0;
    let mut path = "/v1/sessions?limit=200".to_owned();
    loop {
        let page = server.get_json(&path).await;
        for session in page["items"].as_array().cloned().unwrap_or_default() {
            let id = session["id"].as_str().unwrap();
            count += server.all_turns(id).await.len();
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/sessions?limit=200&cursor={cursor}"),
            None => return count,
        }
    }
}

/// A data dir with the agents `writer` (the offline model) and `slowpoke` (`model`, a stub
/// model), and the stub.
async fn writer_and_slowpoke(model: &str) -> (clade_stub::Stub, Env) {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let env = Env::new();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "models:\n  slow: {{ provider: openai, base_url: \"{url}/v1\", model: '{model}' }}\nrouting:\n  default: [scripted]\n  agents:\n    slowpoke: {{ channel: [slow] }}\n",
            url = stub.url()
        ),
    );
    env.run(&["agents", "create", "writer"]).ok();
    env.run(&["agents", "create", "slowpoke"]).ok();
    (stub, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_midway_ends_after_a_restart_without_asking_a_task_twice() {
    let (stub, env) = writer_and_slowpoke("stub+latency=1500ms+fixed=slowly").await;
    let flow = env.tmp.path().join("crash.flow.yaml");
    write(
        &flow,
        "name: crash\nagents:\n  w:\n    handle: writer\n  s:\n    handle: slowpoke\ntasks:\n  - id: first\n    agent: w\n    prompt: one\n  - id: slow\n    agent: s\n    prompt: take your time\n  - id: last\n    agent: w\n    prompt: \"after {{ tasks.slow.output }}\"\n",
    );
    let server = env.serve(&[]);
    let started = env.run(&["flow", "run", &flow.display().to_string(), "--json"]).ok().json();
    let id = started["id"].as_str().unwrap().to_owned();
    // Killed while the slow task's turn waits on its model, which the run shows as running.
    super::support::model_called(&stub, 1).await;
    let shown = server.get_json(&format!("/v1/flows/runs/{id}")).await;
    let statuses = ["first", "slow", "last"].map(|t| task(&shown, t)["status"].clone());
    assert_eq!(statuses, [json!("completed"), json!("running"), json!("pending")], "{shown}");
    server.kill9();
    let server = env.serve(&[]);
    let run = ended(&server, &id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(task(&run, "last")["output"], "echo: after slowly");
    assert_eq!(turns(&server).await, 3, "a task was asked twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_neither_sees_nor_drives_a_run() {
    let (env, acme, server) = writer_beside_acme();
    let flow = "name: t\nagents:\n  w:\n    handle: writer\ntasks:\n  - id: a\n    agent: w\n    prompt: hi\n";
    let (status, run) =
        server.send("POST", "/v1/flows/runs", None, Some(json!({ "flow": flow }))).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap();
    // acme names the default tenant's writer: no such agent in acme.
    let (status, refused) =
        server.send("POST", "/v1/flows/runs", Some(&acme), Some(json!({ "flow": flow }))).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (404, Some("agent_not_found")),
        "{refused}"
    );
    for (method, path) in [
        ("GET", format!("/v1/flows/runs/{id}")),
        ("POST", format!("/v1/flows/runs/{id}/cancel")),
        ("POST", format!("/v1/flows/runs/{id}/pause")),
    ] {
        let (status, body) = server.send(method, &path, Some(&acme), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("run_not_found")),
            "{method} {path}: {body}"
        );
    }
    let (_, list) = server.send("GET", "/v1/flows/runs", Some(&acme), None).await;
    assert_eq!(list["runs"], json!([]));
    // A token limited to some agents drives no flow.
    let limited = writer_only_token(&env);
    let (status, body) =
        server.send("POST", "/v1/flows/runs", Some(&limited), Some(json!({ "flow": flow }))).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) =
        server.send("GET", &format!("/v1/flows/runs/{id}"), Some(&limited), None).await;
    assert_eq!(status, 404);
    // A bad flow or input is refused with its place, and nothing starts.
    let (status, body) = server
        .send("POST", "/v1/flows/runs", None, Some(json!({ "flow": "name: t\ntasks: []\n" })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_flow")), "{body}");
    let (status, checked) = server
        .send(
            "POST",
            "/v1/flows/check",
            None,
            Some(json!({ "flow": "name: t\nagents: {}\ntasks: []\n" })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(checked["ok"], false);
    assert!(
        checked["problems"][0]["message"].as_str().unwrap().contains("declares none"),
        "{checked}"
    );
    let long = json!({ "flow": "", "file": "f".repeat(257) });
    let (status, body) = server.send("POST", "/v1/flows/check", None, Some(long)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (_, list) = server.send("GET", "/v1/flows/runs", None, None).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
}

/// Random SIGKILLs while 200 runs are under way (a fan-out, a loop, tasks reading others'
/// outputs, a slow model): every run ends with the outputs an uncrashed run gives, and no
/// task's turn ran twice. The seed of the kills is printed (`CLADE_CRASH_SEED` replays it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_during_many_runs_change_no_output_and_repeat_no_task() {
    use rand::SeedableRng as _;
    const RUNS: usize = 200;
    const KILLS: usize = 5;
    let seed = super::crash::crash_seed();
    println!("flow crash test seed: {seed} (replay its kills with CLADE_CRASH_SEED={seed})");
    let mut plan = rand::rngs::StdRng::seed_from_u64(seed);
    let (_stub, env) = writer_and_slowpoke("stub+latency=300-1500ms+fixed=slow").await;
    let flow = "name: crashes\ninputs:\n  n: { type: integer }\nagents:\n  w: { handle: writer }\n  s: { handle: slowpoke }\ntasks:\n  - { id: a, agent: w, prompt: \"one {{ inputs.n }}\" }\n  - { id: b, agent: s, prompt: two }\n  - { id: c, agent: w, prompt: \"three {{ tasks.a.output }}\" }\n  - { id: d, agent: s, prompt: \"round {{ item }}\" }\n  - { id: e, agent: w, prompt: \"end {{ tasks.d.outputs | length }} {{ tasks.b.output }}\" }\nrun:\n  - task: a\n  - parallel:\n      steps: [{ task: b }, { task: c }]\n  - loop:\n      for_each: \"[1, 2]\"\n      max_iterations: 2\n      steps: [{ task: d }]\n  - task: e\n";
    let mut server = env.serve(&[]);
    let mut ids = Vec::new();
    for n in 0..RUNS {
        let body = json!({ "flow": flow, "inputs": { "n": n } });
        let (status, run) = server.send("POST", "/v1/flows/runs", None, Some(body)).await;
        assert_eq!(status, 201, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    let mut killed_under_way = Vec::new();
    for _ in 0..KILLS {
        super::crash::before_next_kill(&mut plan, 100..600).await;
        let list = server.get_json(&format!("/v1/flows/runs?limit={RUNS}")).await;
        let open = list["runs"].as_array().unwrap().iter().filter(|r| r["status"] == "running");
        killed_under_way.push(open.count());
        server.kill9();
        server = env.serve(&[]);
    }
    println!("runs under way at each kill: {killed_under_way:?}");
    assert!(
        killed_under_way.iter().all(|open| *open > 0),
        "a kill hit no run: {killed_under_way:?}"
    );
    for (n, id) in ids.iter().enumerate() {
        let run = ended(&server, id).await;
        assert_eq!(run["status"], "completed", "run {n}: {run}");
        let expected = [
            ("a", json!(format!("echo: one {n}"))),
            ("b", json!("slow")),
            ("c", json!(format!("echo: three echo: one {n}"))),
            ("d", json!("slow")),
            ("e", json!("echo: end 2 slow")),
        ];
        for (task_id, output) in expected {
            assert_eq!(task(&run, task_id)["output"], output, "run {n} task {task_id}: {run}");
        }
        assert_eq!(task(&run, "d")["outputs"], json!(["slow", "slow"]), "run {n}");
    }
    // Six questions a run, each one turn.
    assert_eq!(turns(&server).await, RUNS * 6, "a task was asked twice (seed {seed})");
}

const PINNED_V1: &str = "name: pinned\ninputs:\n  who: { type: string, default: world }\nagents:\n  w: { handle: writer }\ntasks:\n  - id: greet\n    agent: w\n    prompt: \"hello {{ inputs.who }}\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_flow_runs_pinned_to_its_version_and_is_retried() {
    let env = Env::new();
    env.run(&["agents", "create", "writer"]).ok();
    let server = env.serve(&[]);
    let file = env.tmp.path().join("pinned.flow.yaml");
    let path = file.display().to_string();
    write(&file, PINNED_V1);
    let saved = env.run(&["flow", "save", &path]).ok();
    assert!(saved.stdout.contains("saved flow pinned version 1"), "{}", saved.stdout);
    let again = env.run(&["flow", "save", &path]).ok();
    assert!(again.stdout.contains("flow pinned unchanged: version 1"), "{}", again.stdout);
    write(&file, &PINNED_V1.replace("hello", "goodbye"));
    env.run(&["flow", "save", &path]).ok();

    let list = env.run(&["flow", "list", "--json"]).ok().json();
    assert_eq!(list["flows"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (list["flows"][0]["version"].as_i64(), &list["flows"][0]["tasks"]),
        (Some(2), &json!(["greet"]))
    );
    let shown = env.run(&["flow", "show", "pinned@1"]).ok();
    assert_eq!(shown.stdout, PINNED_V1);
    let versions = env.run(&["flow", "show", "pinned", "--versions", "--json"]).ok().json();
    let numbers: Vec<i64> = versions["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);

    let old = env
        .run(&["flow", "run", "pinned@1", "--input", "who=ada", "--watch", "--json"])
        .ok()
        .json();
    assert_eq!(
        (old["version"].as_i64(), &task(&old, "greet")["output"]),
        (Some(1), &json!("echo: hello ada"))
    );
    let new = env.run(&["flow", "run", "pinned", "--watch", "--json"]).ok().json();
    assert_eq!(task(&new, "greet")["output"], "echo: goodbye world", "{new}");
    let of_flow = env.run(&["flow", "runs", "list", "--flow", "pinned", "--json"]).ok().json();
    assert_eq!(of_flow["runs"].as_array().unwrap().len(), 2, "{of_flow}");

    // A retry runs the same text and inputs again, even after the flow changed or went.
    env.run(&["flow", "delete", "pinned"]).fails_with("--yes");
    env.run(&["flow", "delete", "pinned", "--yes"]).ok();
    let id = old["id"].as_str().unwrap();
    let retried = env.run(&["flow", "runs", "retry", id, "--watch", "--json"]).ok().json();
    assert_eq!(retried["retry_of"], id, "{retried}");
    assert_eq!(
        (retried["version"].as_i64(), &task(&retried, "greet")["output"]),
        (Some(1), &json!("echo: hello ada"))
    );
    env.run(&["flow", "run", "pinned"]).fails_with("neither a flow file here nor a stored flow");
    let (status, body) = server.send("GET", "/v1/flows/pinned?version=1", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("flow_not_found")), "{body}");

    // A run under way is not retried; a reserved name is not stored.
    let gate = "name: gate\nagents:\n  w: { handle: writer }\ntasks:\n  - { id: a, agent: w, prompt: hi }\nrun:\n  - approval: { message: go? }\n  - task: a\n";
    let (_, waiting) =
        server.send("POST", "/v1/flows/runs", None, Some(json!({ "flow": gate }))).await;
    let waiting = waiting["id"].as_str().unwrap();
    let (status, body) =
        server.send("POST", &format!("/v1/flows/runs/{waiting}/retry"), None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_under_way")), "{body}");
    let reserved = json!({ "flow": PINNED_V1.replace("name: pinned", "name: runs") });
    let (status, body) = server.send("POST", "/v1/flows", None, Some(reserved)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_flow")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_neither_reads_nor_runs_a_stored_flow() {
    let (env, acme, server) = writer_beside_acme();
    let (status, saved) =
        server.send("POST", "/v1/flows", None, Some(json!({ "flow": PINNED_V1 }))).await;
    assert_eq!((status, saved["version"].as_i64()), (201, Some(1)), "{saved}");
    let (_, list) = server.send("GET", "/v1/flows", Some(&acme), None).await;
    assert_eq!(list["flows"], json!([]));
    for (method, path) in [
        ("GET", "/v1/flows/pinned"),
        ("GET", "/v1/flows/pinned/versions"),
        ("POST", "/v1/flows/pinned/runs"),
        ("DELETE", "/v1/flows/pinned"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let (status, body) = server.send(method, path, Some(&acme), body).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("flow_not_found")),
            "{method} {path}: {body}"
        );
    }
    // acme's own flow of the same name is its own, and the default tenant's is unchanged.
    let theirs = json!({ "flow": PINNED_V1.replace("hello", "hi") });
    let (status, body) = server.send("POST", "/v1/flows", Some(&acme), Some(theirs)).await;
    assert_eq!((status, body["version"].as_i64()), (201, Some(1)), "{body}");
    let (_, ours) = server.send("GET", "/v1/flows/pinned", None, None).await;
    assert_eq!(ours["source"], PINNED_V1);
    // A token limited to some agents neither stores nor reads flows.
    let limited = writer_only_token(&env);
    let (status, _) =
        server.send("POST", "/v1/flows", Some(&limited), Some(json!({ "flow": PINNED_V1 }))).await;
    assert_eq!(status, 403);
    let (_, list) = server.send("GET", "/v1/flows", Some(&limited), None).await;
    assert_eq!(list["flows"], json!([]));
    for (method, path) in [
        ("GET", "/v1/flows/pinned"),
        ("POST", "/v1/flows/pinned/runs"),
        ("DELETE", "/v1/flows/pinned"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let (status, body) = server.send(method, path, Some(&limited), body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _) = server.send("GET", "/v1/flows/nothing/runs", None, None).await;
    assert_eq!(status, 404, "a flow neither stored nor run");
    let (status, body) = server.send("GET", "/v1/flows/Not%20A%20Name", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
}

/// Calls `tool` as agent `agent` (through the operator's route, the same policy path as a
/// turn's call): its text, and whether it failed.
async fn call_tool(
    server: &Server,
    token: Option<&str>,
    agent: &str,
    tool: &str,
    args: Value,
) -> (String, bool) {
    let path = format!("/v1/agents/{agent}/tools/{tool}/call");
    let (status, answer) =
        server.send("POST", &path, token, Some(json!({ "arguments": args }))).await;
    assert_eq!(status, 200, "{answer}");
    (answer["content"].as_str().unwrap_or_default().to_owned(), answer["is_error"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_starts_a_stored_flow_only_when_granted_and_only_its_tenants() {
    let env = Env::new();
    env.run(&["agents", "create", "writer"]).ok();
    env.run(&["agents", "create", "boss"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "mole"]).ok();
    let (acme, _) = token(&env, "acme", &["admin"]);
    let server = env.serve(&[]);
    let (status, _) =
        server.send("POST", "/v1/flows", None, Some(json!({ "flow": PINNED_V1 }))).await;
    assert_eq!(status, 201);
    let args = json!({ "flow": "pinned", "inputs": { "who": "boss" } });

    let (denied, failed) = call_tool(&server, None, "boss", "flow.start", args.clone()).await;
    assert!(failed && denied.contains("denied"), "{denied}");
    assert_eq!(server.get_json("/v1/flows/runs").await["runs"], json!([]), "nothing started");

    env.run(&["--agent", "boss", "grants", "add", "--tool", "flow.*"]).ok();
    let (started, failed) = call_tool(&server, None, "boss", "flow.start", args).await;
    assert!(!failed, "{started}");
    let started: Value = serde_json::from_str(&started).unwrap();
    assert_eq!((started["flow"].as_str(), started["version"].as_i64()), (Some("pinned"), Some(1)));
    let id = started["run"].as_str().unwrap().to_owned();
    assert_eq!(ended(&server, &id).await["status"], "completed");
    let (status, failed) =
        call_tool(&server, None, "boss", "flow.status", json!({ "run": id })).await;
    assert!(!failed, "{status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["tasks"]["greet"]["output"], "echo: hello boss", "{status}");

    // Another tenant's agent, granted too, reaches neither the flow nor the run.
    env.run(&["--tenant", "acme", "--agent", "mole", "grants", "add", "--tool", "flow.*"]).ok();
    let (refused, failed) =
        call_tool(&server, Some(&acme), "mole", "flow.start", json!({ "flow": "pinned" })).await;
    assert!(failed && refused.contains("no stored flow pinned"), "{refused}");
    let (refused, failed) =
        call_tool(&server, Some(&acme), "mole", "flow.status", json!({ "run": id })).await;
    assert!(failed && refused.contains("no flow run"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stops_asking_once_its_budget_is_spent_and_shows_what_it_spent() {
    let (_stub, env) = writer_and_slowpoke("stub+fixed=fine").await;
    let server = env.serve(&[]);
    let flow = "name: thrifty\nbudget: { max_tokens: 1 }\nagents:\n  s: { handle: slowpoke }\ntasks:\n  - { id: first, agent: s, prompt: one }\n  - { id: second, agent: s, prompt: two }\n";
    let (status, run) =
        server.send("POST", "/v1/flows/runs", None, Some(json!({ "flow": flow }))).await;
    assert_eq!(status, 201, "{run}");
    let run = ended(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(task(&run, "first")["status"], "completed", "{run}");
    let second = task(&run, "second");
    assert_eq!(
        (second["status"].as_str(), second["attempts"].as_u64()),
        (Some("failed"), Some(0)),
        "{run}"
    );
    assert!(second["error"].as_str().unwrap().contains("the run's budget is spent"), "{run}");
    let usage = &run["usage"];
    assert_eq!(usage["model_calls"], 1, "{run}");
    assert!(usage["input_tokens"].as_u64().unwrap() > 0, "{run}");
    // A task's own budget bounds its questions (here, the schema corrections it would send).
    let picky = "name: picky\nagents:\n  s: { handle: slowpoke }\ntasks:\n  - id: only\n    agent: s\n    prompt: one\n    output_schema: { type: object }\n    output_retries: 5\n    budget: { max_tokens: 1 }\n";
    let (_, run) =
        server.send("POST", "/v1/flows/runs", None, Some(json!({ "flow": picky }))).await;
    let run = ended(&server, run["id"].as_str().unwrap()).await;
    let only = task(&run, "only");
    assert_eq!(
        (only["status"].as_str(), only["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{run}"
    );
    assert!(only["error"].as_str().unwrap().contains("its budget is spent"), "{run}");
    // A budget that names no limit is refused where it is.
    let bad = json!({ "flow": flow.replace("{ max_tokens: 1 }", "{}") });
    let (status, body) = server.send("POST", "/v1/flows/runs", None, Some(bad)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_flow")), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(":2:9: budget: set max_tokens"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_preset_is_its_roles_and_a_stored_flow_that_runs() {
    let env = Env::new();
    let made = env.run(&["teams", "create", "dev", "--name", "acme"]).ok().stdout;
    assert!(made.contains("clade flow run acme --input change="), "{made}");
    let _server = env.serve(&[]);
    let run = env
        .run(&[
            "flow",
            "run",
            "acme",
            "--input",
            "change=add a /healthz route",
            "--watch",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!((run["status"].as_str(), run["version"].as_i64()), (Some("completed"), Some(1)));
    let order: Vec<&str> =
        run["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(order, ["plan", "code", "review", "report"]);
    let code = task(&run, "code")["output"].as_str().unwrap().to_owned();
    assert!(code.contains("Implement this plan: echo: Plan this change"), "{code}");
    // A team whose flow's name is taken, or reserved, is not made at all.
    env.run(&["teams", "create", "ops", "--name", "runs"]).fails_with("reserved");
    env.run(&["teams", "create", "ops", "--name", "acme"]).fails_with("exists already");
    let agents = env.run(&["agents", "list", "--json"]).ok().json();
    let count =
        agents.as_array().map_or_else(|| agents["items"].as_array().unwrap().len(), Vec::len);
    assert_eq!(count, 3, "{agents}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_target_is_a_flow_starts_one_run_a_fire_and_limited_tokens_make_none() {
    let (env, acme, server) = writer_beside_acme();
    let (status, _) =
        server.send("POST", "/v1/flows", None, Some(json!({ "flow": PINNED_V1 }))).await;
    assert_eq!(status, 201);
    let job = |target: &str, prompt: &str| json!({ "name": "nightly", "schedule": "* * * * * *", "target": target, "prompt": prompt });

    // Refused, naming what is wrong, with nothing kept: a flow that is not stored, inputs that
    // are not a JSON object, a token limited to one agent (it finds no flow, as on the flows'
    // routes), another tenant's token.
    let limited = writer_only_token(&env);
    for (token, body, status, code) in [
        (None, job("flow:missing", "{}"), 404, "flow_not_found"),
        (None, job("flow:pinned@9", "{}"), 404, "flow_not_found"),
        (None, job("flow:pinned", "say hello"), 422, "invalid_job"),
        (None, job("flow:Not A Name", "{}"), 422, "invalid_job"),
        (Some(limited.as_str()), job("flow:pinned", "{}"), 404, "flow_not_found"),
        (Some(acme.as_str()), job("flow:pinned", "{}"), 404, "agent_not_found"),
    ] {
        let (got, answer) =
            server.send("POST", "/v1/agents/writer/jobs", token, Some(body.clone())).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    assert_eq!(server.get_json("/v1/agents/writer/jobs").await["items"], json!([]));

    // Each fire starts a run of the stored flow with the job's inputs; the job's runs name it.
    let (status, created) = server
        .send("POST", "/v1/agents/writer/jobs", None, Some(job("flow:pinned", r#"{"who":"cron"}"#)))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["target"], "flow:pinned");
    let runs = polled(
        async || server.get_json("/v1/agents/writer/jobs/nightly/runs").await,
        |runs| {
            runs["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|run| run["flow_run_status"] == "completed"))
        },
    )
    .await;
    let (status, _) = server
        .send("PATCH", "/v1/agents/writer/jobs/nightly", None, Some(json!({ "enabled": false })))
        .await;
    assert_eq!(status, 200);
    let fired = runs["items"].as_array().unwrap();
    let done = fired.iter().find(|run| run["flow_run_status"] == "completed").unwrap();
    assert_eq!((done["delivered"].as_bool(), done.get("event_id")), (Some(true), None), "{done}");
    let id = done["flow_run_id"].as_str().unwrap();
    let run = ended(&server, id).await;
    assert_eq!((run["flow"].as_str(), run["version"].as_i64()), (Some("pinned"), Some(1)), "{run}");
    assert_eq!(task(&run, "greet")["output"], "echo: hello cron", "{run}");

    // One run per fire: every run the flow has is one a fire names, none twice.
    let all = server.get_json("/v1/agents/writer/jobs/nightly/runs?limit=1000").await;
    let named: Vec<&str> =
        all["items"].as_array().unwrap().iter().filter_map(|r| r["flow_run_id"].as_str()).collect();
    let flow_runs = server.get_json("/v1/flows/pinned/runs").await;
    let started: Vec<&str> =
        flow_runs["runs"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    let mut unique = named.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), named.len(), "a fire named a run twice: {all}");
    assert!(started.iter().all(|id| named.contains(id)), "{started:?} against {named:?}");

    // Another tenant reaches neither the run nor the job.
    let (status, _) = server.send("GET", &format!("/v1/flows/runs/{id}"), Some(&acme), None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_schedules_a_stored_flow_with_typed_inputs_and_names_bad_ones() {
    let env = Env::new();
    env.run(&["agents", "create", "writer"]).ok();
    let _server = env.serve(&[]);
    let file = env.tmp.path().join("pinned.flow.yaml");
    write(&file, PINNED_V1);
    let cron = |extra: &[&str]| {
        let mut args = vec!["--agent", "writer", "cron", "create", "nightly", "0 2 * * *"];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    cron(&["--target", "flow:pinned"]).fails_with("no stored flow pinned: save it first");
    env.run(&["flow", "save", &file.display().to_string()]).ok();
    cron(&["--target", "flow:pinned", "--input", "whom=x"])
        .fails_with("flow pinned has no input \"whom\"");
    cron(&["hello", "--target", "flow:pinned"]).fails_with("not a prompt");
    cron(&["--input", "who=x"]).fails_with("--input is for a flow target");
    cron(&["--target", "flow:pinned", "--input", "who=night"]).ok();
    let listed = env.run(&["cron", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["target"], "flow:pinned", "{listed}");
    assert_eq!(listed[0]["prompt"], r#"{"who":"night"}"#, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_makes_its_template_agents_within_the_tenants_quota_and_deletes_them() {
    let env = Env::new();
    env.run(&["agents", "create", "writer"]).ok();
    write(&env.data_dir().join("clade.yaml"), "tenants:\n  \"*\":\n    quotas: { agents: 2 }\n");
    let (operator, _) = token(&env, "default", &["operate", "read"]);
    let server = env.serve(&[]);
    let one = "name: made\nagents:\n  w: { handle: writer }\n  check: { template: reviewer }\ntasks:\n  - id: draft\n    agent: w\n    prompt: /reply draft\n  - id: review\n    agent: check\n    prompt: \"/reply checked {{ tasks.draft.output }}\"\n";
    let run = |flow: String| {
        let body = json!({ "flow": flow, "file": "made.flow.yaml" });
        let server = &server;
        async move { server.send("POST", "/v1/flows/runs", None, Some(body)).await }
    };

    // A token that may operate agents but not make them starts no flow that makes one, inline,
    // stored or scheduled.
    let body = json!({ "flow": one, "file": "made.flow.yaml" });
    let (status, refused) =
        server.send("POST", "/v1/flows/runs", Some(&operator), Some(body)).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("makes agents"), "{refused}");
    let (status, _) = server.send("POST", "/v1/flows", None, Some(json!({ "flow": one }))).await;
    assert_eq!(status, 201);
    let (status, refused) = server
        .send("POST", "/v1/flows/made/runs", Some(&operator), Some(json!({ "inputs": {} })))
        .await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("makes agents"), "{refused}");
    let job = json!({ "name": "nightly", "schedule": "0 2 * * *", "target": "flow:made",
        "prompt": "{}" });
    let (status, refused) =
        server.send("POST", "/v1/agents/writer/jobs", Some(&operator), Some(job)).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("makes agents"), "{refused}");
    assert_eq!(server.get_json("/v1/flows/runs").await["runs"], json!([]));

    // The writer and one made agent are the two the quota allows: the run makes it, asks it,
    // and deletes it once ended.
    let (status, started) = run(one.to_owned()).await;
    assert_eq!(status, 201, "{started}");
    let done = ended(&server, started["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(task(&done, "review")["output"], "checked draft", "{done}");
    assert_eq!(
        done["usage"]["model_calls"], 2,
        "the made agent's turn counts, though it is gone: {done}"
    );
    let listed = server.get_json("/v1/agents").await;
    let handles: Vec<&str> =
        listed["items"].as_array().unwrap().iter().filter_map(|a| a["handle"].as_str()).collect();
    assert_eq!(handles, ["writer"], "the made agent is gone: {listed}");

    // Two would be three agents: the run is refused naming the quota, and nothing is left.
    let two = one.replace(
        "  check: { template: reviewer }\n",
        "  check: { template: reviewer }\n  spare: { template: default }\n",
    ) + "  - id: spare\n    agent: spare\n    prompt: /reply spare\n";
    let (status, refused) = run(two).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("invalid_flow")),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("tenants.\"*\".quotas.agents"), "{message}");
    let listed = server.get_json("/v1/agents").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    let runs = server.get_json("/v1/flows/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
}
