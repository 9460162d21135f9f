//! Scheduled jobs through the real binary: created over the API, the CLI and an agent's own
//! `cron.*` tools, fired by the gateway's scheduler on the system clock into the sessions their
//! targets name, with their runs' outcomes recorded; bad jobs refused naming the problem, and
//! one tenant's token reaching no other tenant's jobs.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::{Env, Server, eventually, holds_for, token};

/// Polls `path` (with the server's token) until `done` holds of its answer, for up to 30 s.
async fn until(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let got_there = eventually(async || {
        let answer = server.get_json(path).await;
        done(&answer).then_some(answer)
    });
    match got_there.await {
        Some(answer) => answer,
        None => panic!("{path} never got there: {}", server.get_json(path).await),
    }
}

fn completed(runs: &Value) -> bool {
    runs["items"].as_array().is_some_and(|items| {
        items.iter().any(|run| run["turn_status"] == "completed" && run["delivered"] == true)
    })
}

#[tokio::test]
async fn a_job_fires_into_its_session_and_records_its_runs() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let job = json!({ "name": "pulse", "schedule": "* * * * * *", "prompt": "/reply pulse",
        "target": "session:heartbeat" });
    let (status, created) = server.send("POST", "/v1/agents/ada/jobs", None, Some(job)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["target"], "session:heartbeat");
    assert_eq!(
        (created["zone"].as_str(), created["misfire"].as_str()),
        (Some("UTC"), Some("run_once"))
    );
    assert!(created["next_at"].as_i64().is_some(), "{created}");

    // The scheduler fires it within a second or two, and the agent answers in its session.
    let runs = until(&server, "/v1/agents/ada/jobs/pulse/runs", completed).await;
    let run = runs["items"].as_array().unwrap().iter().find(|r| r["turn_status"] == "completed");
    let run = run.unwrap();
    let event = run["event_id"].as_str().unwrap();
    let sessions = server.get_json("/v1/sessions").await;
    let session = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["platform"] == "cron" && s["channel"] == "heartbeat")
        .unwrap_or_else(|| panic!("no heartbeat session: {sessions}"))
        .clone();
    let id = session["id"].as_str().unwrap();
    let turns = server.all_turns(id).await;
    let turn = turns.iter().find(|t| t["id"] == run["turn_id"]).unwrap();
    assert_eq!(turn["reply"], "pulse", "{turn}");
    assert!(turn["events"].as_array().unwrap().iter().any(|e| e["id"] == event), "{turn}");

    // Disabled, it fires no more: a fire that raced the change committed before the answer.
    let (status, disabled) = server
        .send("PATCH", "/v1/agents/ada/jobs/pulse", None, Some(json!({ "enabled": false })))
        .await;
    assert_eq!((status, &disabled["enabled"]), (200, &json!(false)), "{disabled}");
    let runs = async || {
        let page = server.get_json("/v1/agents/ada/jobs/pulse/runs?limit=1000").await;
        page["items"].as_array().unwrap().len()
    };
    let before = runs().await;
    holds_for(Duration::from_millis(2_500), "a disabled job fired", runs, |n| *n == before).await;

    // Each change is in the audit log.
    let audit = server.get_json("/v1/audit?limit=1000").await;
    let kinds: Vec<&str> =
        audit["items"].as_array().unwrap().iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"job.created") && kinds.contains(&"job.disabled"), "{kinds:?}");

    let (status, _) = server.send("DELETE", "/v1/agents/ada/jobs/pulse", None, None).await;
    assert_eq!(status, 204);
    let (status, gone) = server.send("GET", "/v1/agents/ada/jobs/pulse", None, None).await;
    assert_eq!((status, gone["error"]["code"].as_str()), (404, Some("job_not_found")), "{gone}");
    let listed = server.get_json("/v1/agents/ada/jobs").await;
    assert_eq!(listed["items"], json!([]), "{listed}");
}

#[tokio::test]
async fn bad_jobs_are_refused_naming_the_problem_and_tenants_reach_only_their_own() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    let (acme, _) = token(&env, "acme", &["admin"]);
    let server = env.serve(&[]);
    let job = |name: &str, schedule: &str, extra: Value| {
        let mut body = json!({ "name": name, "schedule": schedule, "prompt": "hello" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let missing_session = "01900000-0000-7000-8000-000000000000";
    for (body, status, code, says) in [
        (job("a", "61 * * * *", json!({})), 422, "invalid_job", "minute field"),
        (job("a", "0 0 30 2 *", json!({})), 422, "invalid_job", "never fires"),
        (job("a", "@every 0s", json!({})), 422, "invalid_job", "@every"),
        (
            job("a", "* * * * *", json!({ "zone": "Mars/Olympus" })),
            422,
            "invalid_job",
            "unknown time zone",
        ),
        (job("a", "* * * * *", json!({ "misfire": "sometimes" })), 422, "invalid_job", "misfire"),
        (job("a", "* * * * *", json!({ "target": "channel:x" })), 422, "invalid_job", "target"),
        (
            job("a", "* * * * *", json!({ "target": format!("origin:{missing_session}") })),
            422,
            "invalid_job",
            missing_session,
        ),
        (job("Bad Name", "* * * * *", json!({})), 400, "invalid_request", "name"),
        (job("a", "* * * * *", json!({ "prompt": "   " })), 422, "invalid_job", "prompt"),
    ] {
        let (got, answer) =
            server.send("POST", "/v1/agents/ada/jobs", None, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    // Nothing of the refused ones was kept.
    assert_eq!(server.get_json("/v1/agents/ada/jobs").await["items"], json!([]));

    let daily = job("daily", "0 9 * * MON-FRI", json!({ "zone": "Europe/Berlin" }));
    let (status, _) = server.send("POST", "/v1/agents/ada/jobs", None, Some(daily.clone())).await;
    assert_eq!(status, 201);
    let (status, again) =
        server.send("POST", "/v1/agents/ada/jobs", None, Some(daily.clone())).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("job_exists")), "{again}");

    // Another tenant's token: its own `ada` has no such job, and the default tenant's is out
    // of reach whichever way it asks.
    let acme = Some(acme.as_str());
    assert_eq!(server.send("GET", "/v1/agents/ada/jobs", acme, None).await.0, 404);
    let (status, _) =
        server.send("POST", "/v1/agents", acme, Some(json!({ "handle": "ada" }))).await;
    assert_eq!(status, 201);
    assert_eq!(server.send("GET", "/v1/agents/ada/jobs", acme, None).await.1["items"], json!([]));
    for (method, path, body) in [
        ("GET", "/v1/agents/ada/jobs/daily", None),
        ("GET", "/v1/agents/ada/jobs/daily/runs", None),
        ("PATCH", "/v1/agents/ada/jobs/daily", Some(json!({ "enabled": false }))),
        ("DELETE", "/v1/agents/ada/jobs/daily", None),
    ] {
        let (status, answer) = server.send(method, path, acme, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (404, Some("job_not_found")),
            "{method} {path}"
        );
    }
    // An origin target in another tenant's session is no session of this agent.
    let event = json!({ "agent": "ada", "text": "hi", "wait": true,
        "source": { "platform": "http", "channel": "c", "actor": "me" } });
    let (_, answer) = server.send("POST", "/v1/events", None, Some(event)).await;
    let theirs = answer["session_id"].as_str().unwrap();
    let stolen = job("stolen", "* * * * *", json!({ "target": format!("origin:{theirs}") }));
    let (status, answer) = server.send("POST", "/v1/agents/ada/jobs", acme, Some(stolen)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_job")), "{answer}");
    let job = server.get_json("/v1/agents/ada/jobs/daily").await;
    assert_eq!(job["enabled"], true, "{job}");
}

/// A tenant's jobs keep to its quotas: its tokens and its agents cannot schedule tighter than
/// `cron_min_interval_secs` (a minute by default) or more than `cron_jobs_per_agent` jobs an
/// agent; the operator's own jobs are not bound.
#[tokio::test]
async fn tenant_jobs_keep_to_the_minimum_interval_and_the_job_cap() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "wile"]).ok();
    let (acme, _) = token(&env, "acme", &["admin"]);
    super::support::write(
        &env.data_dir().join("clade.yaml"),
        "tenants:\n  acme:\n    quotas: { cron_min_interval_secs: 3600, cron_jobs_per_agent: 1 }\n",
    );
    let server = env.serve(&[]);
    let job = |name: &str, schedule: &str| json!({ "name": name, "schedule": schedule, "prompt": "hello" });

    // The tenant's token: half-hourly is too often for acme; hourly is allowed, once.
    let (status, refused) = server
        .send("POST", "/v1/agents/wile/jobs", Some(&acme), Some(job("a", "*/30 * * * *")))
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("invalid_job")),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1800 s apart")
            && message.contains("tenants.acme.quotas.cron_min_interval_secs"),
        "{message}"
    );
    let (status, made) =
        server.send("POST", "/v1/agents/wile/jobs", Some(&acme), Some(job("a", "@hourly"))).await;
    assert_eq!(status, 201, "{made}");
    let (status, refused) =
        server.send("POST", "/v1/agents/wile/jobs", Some(&acme), Some(job("b", "@daily"))).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("cron_jobs_per_agent"),
        "{refused}"
    );

    // An agent of the default tenant, with no quotas set: at least a minute apart.
    let say = |text: &str| {
        json!({ "agent": "ada", "text": text, "wait": true,
            "source": { "platform": "http", "channel": "dm", "actor": "grace" } })
    };
    let every_second =
        r#"/tool cron.create {"name":"spin","schedule":"* * * * * *","prompt":"/reply spin"}"#;
    let (status, answer) = server.send("POST", "/v1/events", None, Some(say(every_second))).await;
    assert_eq!(status, 200, "{answer}");
    let reply = answer["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("1 s apart") && reply.contains("at least 60 s"), "{reply}");
    let minutely =
        r#"/tool cron.create {"name":"tick","schedule":"* * * * *","prompt":"/reply tick"}"#;
    let (_, answer) = server.send("POST", "/v1/events", None, Some(say(minutely))).await;
    let reply = answer["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("\"tick\"") && !reply.contains("error"), "{reply}");
    let names: Vec<String> = server.get_json("/v1/agents/ada/jobs").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["tick"]);

    // The operator is not bound.
    let (status, made) =
        server.send("POST", "/v1/agents/ada/jobs", None, Some(job("pulse", "* * * * * *"))).await;
    assert_eq!(status, 201, "{made}");
}

/// The operator sets one agent apart (`tenants.<name>.agents.<handle>.quotas`): its own
/// minimum interval and job cap replace its tenant's, looser or tighter, for its tenant's
/// tokens and for the agent itself; the tenant's other agents keep the tenant's; and a
/// configuration naming an agent badly is refused.
#[tokio::test]
async fn one_agent_keeps_to_limits_of_its_own() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    for agent in ["feed", "quiet", "wile"] {
        env.run(&["--tenant", "acme", "agents", "create", agent]).ok();
    }
    let (acme, _) = token(&env, "acme", &["admin"]);
    let config = env.data_dir().join("clade.yaml");
    // A handle is never shared across tenants, and "*" has no agents.
    for (bad, named) in [
        (
            "tenants:\n  \"*\":\n    agents: { feed: { quotas: { cron_jobs: 1 } } }\n",
            "not to \"*\"",
        ),
        (
            "tenants:\n  acme:\n    agents: { Feed!: { quotas: { cron_jobs: 1 } } }\n",
            "not an agent handle",
        ),
        ("tenants:\n  acme:\n    agents: { feed: { quotas: { cron_every: 1 } } }\n", "cron_every"),
    ] {
        super::support::write(&config, bad);
        env.run(&["config", "validate", config.to_str().unwrap()]).fails_with(named);
    }
    super::support::write(
        &config,
        "tenants:\n  default:\n    agents: { ada: { quotas: { cron_min_interval_secs: 10 } } }\n  acme:\n    quotas: { cron_min_interval_secs: 3600, cron_jobs_per_agent: 1 }\n    agents:\n      feed: { quotas: { cron_min_interval_secs: 300, cron_jobs: 2 } }\n      quiet: { quotas: { cron_jobs: 0 } }\n",
    );
    let server = env.serve(&[]);
    let job = |name: &str, schedule: &str| json!({ "name": name, "schedule": schedule, "prompt": "hello" });
    let create = |agent: &str, body: Value| {
        let path = format!("/v1/agents/{agent}/jobs");
        let server = &server;
        let acme = acme.clone();
        async move { server.send("POST", &path, Some(&acme), Some(body)).await }
    };

    // feed may fire every five minutes, which its tenant refuses, but not every minute.
    let (status, made) = create("feed", job("a", "*/5 * * * *")).await;
    assert_eq!(status, 201, "{made}");
    let (status, refused) = create("feed", job("b", "* * * * *")).await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("60 s apart")
            && message.contains("at least 300 s")
            && message.contains("tenants.acme.agents.feed.quotas.cron_min_interval_secs"),
        "{message}"
    );
    // Two jobs, past its tenant's one; not three.
    let (status, made) = create("feed", job("b", "@daily")).await;
    assert_eq!(status, 201, "{made}");
    let (status, refused) = create("feed", job("c", "@daily")).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (429, Some("quota_exceeded")));
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("may have 2")
            && message.contains("tenants.acme.agents.feed.quotas.cron_jobs"),
        "{message}"
    );
    // quiet may have none at all.
    let (status, refused) = create("quiet", job("a", "@daily")).await;
    assert_eq!(status, 429, "{refused}");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("agents.quiet.quotas.cron_jobs"),
        "{refused}"
    );
    // wile has nothing of its own: its tenant's hour holds.
    let (status, refused) = create("wile", job("a", "*/5 * * * *")).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenants.acme.quotas.cron_min_interval_secs"),
        "{refused}"
    );

    // The agent itself, through its cron tool: ada may schedule every ten seconds, not five.
    let say = |text: &str| {
        json!({ "agent": "ada", "text": text, "wait": true,
            "source": { "platform": "http", "channel": "dm", "actor": "grace" } })
    };
    let every = |secs: u32| {
        format!(
            r#"/tool cron.create {{"name":"every{secs}","schedule":"*/{secs} * * * * *","prompt":"/reply hi"}}"#
        )
    };
    let (_, answer) = server.send("POST", "/v1/events", None, Some(say(&every(5)))).await;
    let reply = answer["reply"]["text"].as_str().unwrap();
    assert!(
        reply.contains("at least 10 s") && reply.contains("tenants.default.agents.ada.quotas"),
        "{reply}"
    );
    let (_, answer) = server.send("POST", "/v1/events", None, Some(say(&every(10)))).await;
    let reply = answer["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("\"every10\"") && !reply.contains("error"), "{reply}");
}

#[test]
fn the_cli_manages_jobs_and_names_bad_ones() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&[
        "--agent",
        "ada",
        "cron",
        "create",
        "nightly",
        "0 3 * * *",
        "tidy up",
        "--zone",
        "Europe/Berlin",
    ])
    .ok();
    let listed = env.run(&["cron", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["name"], "nightly", "{listed}");
    assert_eq!(listed[0]["zone"], "Europe/Berlin", "{listed}");
    env.run(&["--agent", "ada", "cron", "create", "nightly", "0 3 * * *", "again"])
        .fails_with("already has a job named \"nightly\"");
    env.run(&["--agent", "ada", "cron", "create", "broken", "0 0 31 4 *", "x"])
        .fails_with("never fires");
    env.run(&[
        "--agent",
        "ada",
        "cron",
        "create",
        "lost",
        "@daily",
        "x",
        "--zone",
        "Atlantis/Deep",
    ])
    .fails_with("unknown time zone");
    env.run(&["--agent", "ada", "cron", "disable", "nightly"]).ok();
    let listed = env.run(&["cron", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["enabled"], false, "{listed}");
    env.run(&["--agent", "ada", "cron", "enable", "nightly"]).ok();
    let runs = env.run(&["--agent", "ada", "cron", "runs", "nightly", "--json"]).ok().json();
    assert_eq!(runs, json!([]));
    env.run(&["--agent", "ada", "cron", "remove", "nightly"]).ok();
    env.run(&["--agent", "ada", "cron", "remove", "nightly"]).fails_with("has no job \"nightly\"");
    assert_eq!(env.run(&["cron", "list", "--json"]).ok().json(), json!([]));
}

/// A job whose turns keep failing (its model refuses every call) is disabled by the scheduler
/// after `scheduler.max_failures` failed runs in a row: the job says why, and a webhook
/// subscriber is told with a `job.disabled` event.
#[tokio::test]
async fn a_job_whose_turns_keep_failing_is_disabled_and_subscribers_are_told() {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let hook = {
        let bodies = bodies.clone();
        super::support::serve_hook(move |body: axum::body::Bytes| {
            if let Ok(value) = serde_json::from_slice(&body) {
                bodies.lock().unwrap().push(value);
            }
            async { axum::http::StatusCode::OK }
        })
        .await
    };
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let mut env = Env::new();
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    env.vars.push(("HOOK_SECRET".into(), "s3cret".into()));
    super::support::write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "models:\n  refusing:\n    provider: openai\n    model: stub+status=401\n    base_url: {}/v1\n    api_key_env: STUB_KEY\n\
             scheduler:\n  max_failures: 2\n\
             subscribers:\n  - name: hook\n    url: {hook}\n    secret_env: HOOK_SECRET\n",
            stub.url()
        ),
    );
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let job = json!({ "name": "doomed", "schedule": "* * * * * *", "prompt": "hello" });
    let (status, created) = server.send("POST", "/v1/agents/ada/jobs", None, Some(job)).await;
    assert_eq!(status, 201, "{created}");
    let job = until(&server, "/v1/agents/ada/jobs/doomed", |job| job["enabled"] == false).await;
    let reason = job["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("last 2 runs failed") && reason.contains("failed"), "{reason}");
    let runs = server.get_json("/v1/agents/ada/jobs/doomed/runs").await;
    let failed = runs["items"].as_array().unwrap().iter().filter(|r| r["turn_status"] == "failed");
    assert!(failed.count() >= 2, "{runs}");
    super::support::until(&bodies, |bodies| bodies.iter().any(|b| b["type"] == "job.disabled"))
        .await;
    let bodies = bodies.lock().unwrap().clone();
    let told =
        bodies.iter().find(|b| b["type"] == "job.disabled").expect("no job.disabled webhook");
    assert_eq!(told["data"]["name"], "doomed", "{told}");
    assert_eq!(told["data"]["job_id"], created["id"], "{told}");
}

/// A heartbeat declared in clade.yaml beats with its own prompt from the gateway's start, into
/// the agent's `heartbeat` session; a bad one is refused by `clade config validate` and by
/// `clade serve`, naming it.
#[tokio::test]
async fn a_declared_heartbeat_beats_and_a_bad_one_is_refused() {
    let env = Env::new();
    let yaml = env.data_dir().join("clade.yaml");
    super::support::write(
        &yaml,
        "heartbeats:\n  ada: { schedule: \"61 * * * *\", prompt: \"x\" }\n",
    );
    env.run(&["config", "validate"]).fails_with("heartbeats.ada: minute field");
    super::support::write(
        &yaml,
        "heartbeats:\n  ada: { schedule: \"* * * * * *\", prompt: \"/reply beat\" }\n",
    );
    env.run(&["config", "validate"]).ok();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let beat = eventually(async || {
        let sessions = server.get_json("/v1/sessions").await;
        let heartbeat = sessions["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["platform"] == "cron" && s["channel"] == "heartbeat")?;
        let turns = server.all_turns(heartbeat["id"].as_str().unwrap()).await;
        turns.into_iter().find(|t| t["status"] == "completed")
    });
    let beat = beat.await.expect("the heartbeat never beat");
    assert_eq!(beat["reply"], "beat", "{beat}");
    // The listing shows it; the API cannot remove it (its name is the file's).
    let jobs = server.get_json("/v1/agents/ada/jobs").await;
    assert_eq!(jobs["items"][0]["name"], "_heartbeat", "{jobs}");
    let (status, refused) =
        server.send("DELETE", "/v1/agents/ada/jobs/_heartbeat", None, None).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("job_declared")),
        "{refused}"
    );
    let runs = server.get_json("/v1/agents/ada/jobs/_heartbeat/runs").await;
    assert!(!runs["items"].as_array().unwrap().is_empty(), "{runs}");
    drop(server);

    super::support::write(&yaml, "heartbeats:\n  ada: { zone: Nowhere/Else, prompt: \"x\" }\n");
    let out = env.command().args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("heartbeats.ada: unknown time zone"),
        "{stderr}"
    );
}

/// `clade retention sweep` deletes what each tenant's policy says (here: sessions idle for
/// more than 0 days) and nothing of a tenant without one; a bad sweep schedule is refused.
#[tokio::test]
async fn retention_sweeps_delete_only_what_a_policy_names() {
    let env = Env::new();
    let yaml = env.data_dir().join("clade.yaml");
    super::support::write(&yaml, "scheduler:\n  retention_schedule: \"0 3 * *\"\n");
    env.run(&["config", "validate"]).fails_with("scheduler.retention_schedule");
    super::support::write(&yaml, "");
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let event = json!({ "agent": "ada", "text": "hello", "wait": true,
        "source": { "platform": "http", "channel": "c", "actor": "me" } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(event)).await;
    assert_eq!(status, 200, "{answer}");
    drop(server);
    let out = env.run(&["retention", "sweep"]).ok();
    assert!(out.stdout.contains("nothing swept"), "{}", out.stdout);
    assert_eq!(env.run(&["sessions", "list", "--json"]).ok().json().as_array().unwrap().len(), 1);

    super::support::write(&yaml, "tenants:\n  \"*\":\n    retention: { sessions_days: 0 }\n");
    let swept = env.run(&["retention", "sweep", "--json"]).ok().json();
    assert_eq!(swept[0]["tenant"], "default", "{swept}");
    assert_eq!(
        (swept[0]["sessions"].as_u64(), swept[0]["turns"].as_u64()),
        (Some(1), Some(1)),
        "{swept}"
    );
    assert_eq!(env.run(&["sessions", "list", "--json"]).ok().json(), json!([]));
}

/// `scheduler.*` is taken without a restart: a gateway whose scheduler is off fires nothing,
/// starts firing (and offers the cron tools) once a revision turns it on, and stops again when
/// one turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_follows_the_configuration_without_a_restart() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let file = |name: &str, enabled: bool| {
        let path = env.data_dir().join(name);
        std::fs::write(&path, format!("scheduler:\n  enabled: {enabled}\n")).unwrap();
        path
    };
    let off = file("off.yaml", false);
    std::fs::copy(&off, env.data_dir().join("clade.yaml")).unwrap();
    let server = env.serve(&[]);
    let job = json!({ "name": "pulse", "schedule": "* * * * * *", "prompt": "/reply pulse",
        "target": "session:heartbeat" });
    let (status, created) = server.send("POST", "/v1/agents/ada/jobs", None, Some(job)).await;
    assert_eq!(status, 201, "{created}");
    let runs = || async {
        let runs = server.get_json("/v1/agents/ada/jobs/pulse/runs?limit=1000").await;
        runs["items"].as_array().unwrap().len()
    };
    let offered = || async {
        let tools = server.get_json("/v1/agents/ada/tools").await;
        tools["items"].as_array().unwrap().iter().any(|t| t["name"] == "cron.list")
    };
    let fired = "a job fired from a gateway whose scheduler is off";
    holds_for(Duration::from_millis(1_500), fired, async || runs().await, |n| *n == 0).await;
    assert!(!offered().await);

    let on = file("on.yaml", true);
    env.run(&["config", "apply", on.to_str().unwrap()]).ok();
    env.run(&["gateway", "reload"]).ok();
    until(&server, "/v1/agents/ada/jobs/pulse/runs", completed).await;
    assert!(offered().await, "the cron tools come with the scheduler");

    env.run(&["config", "apply", off.to_str().unwrap()]).ok();
    env.run(&["gateway", "reload"]).ok();
    // The scheduler stopped before the reload answered: nothing fires after.
    let before = runs().await;
    let fired = "a job fired after the scheduler was turned off";
    holds_for(Duration::from_millis(2_500), fired, async || runs().await, |n| *n == before).await;
    assert!(!offered().await);
}
