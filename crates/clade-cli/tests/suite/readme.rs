//! The README's command blocks, run as written by bash against the real binary: what a
//! newcomer types first must work first.
//!
//! `clade` is the binary under test (the README's `alias clade='cargo run …'` stands for it),
//! `HOME` is the test's own, so `~/.clade` is the data dir the README assumes, and a gateway
//! serves that data dir (on a port of its own, put where the README says `localhost:7420`,
//! since other tests probe that one). A placeholder such as
//! `<token-id>` becomes what a reader would paste there. Blocks that need another machine or
//! a platform's account run in the tests of their own area (see [`NOT_RUN_HERE`]).

use super::support::{Env, write};

/// The README's ```sh blocks, in order.
fn blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The blocks this test does not run, by their first command, and where they are run instead.
const NOT_RUN_HERE: &[(&str, &str)] = &[
    ("# 1. Run the gateway", "the two commands themselves: `.ci/run` runs the second"),
    ("clade tools list --agent ada", "suite::tools (approvals name ids only a run knows)"),
    ("clade debug break ada", "suite::debugging (a stop's id only a run knows)"),
    ("export CLADE_TOOL_HOST_TOKEN", "suite::tool_hosts (a scheduler process of its own)"),
    ("export CLADE_SUBSCRIBER_TOKEN", "suite::subscribers (a subscriber process and a lease)"),
    (
        "clade flow check examples",
        "suite::flows (every example, with models answering the JSON it asks for)",
    ),
    ("clade remote listen", "suite::remote (a second machine)"),
    ("CLADE_PAIR_TOKEN=", "suite::remote (a second machine)"),
    (
        "cargo run --release --bin clade -- --data-dir /tmp/bench",
        "a million agents: `clade bench agents`",
    ),
];

/// Where the README's gateway listens; the test's listens on a port of its own (other tests
/// probe this one), put in the lines' place.
const README_GATEWAY: &str = "localhost:7420";

/// The tour's blocks of agents, tenants and tokens, the raw API, messages to an agent and
/// schedules run in order in one bash session, each line as written; what they did is then
/// read back. Every block the README has is either run here or named in [`NOT_RUN_HERE`].
#[test]
fn the_readme_tour_runs_as_written() {
    let blocks = blocks();
    let mut run = Vec::new();
    for block in &blocks {
        let first = block.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        if !NOT_RUN_HERE.iter().any(|(start, _)| first.trim_start().starts_with(start)) {
            run.push(block.clone());
        }
    }
    assert_eq!(run.len(), 4, "a README block is neither run nor said where it is: {run:#?}");

    let env = Env::new();
    let home = env.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // ~/.clade is the test's data dir.
    std::os::unix::fs::symlink(env.data_dir(), home.join(".clade")).unwrap();
    write(&home.join("old-gateway/my-agent/SOUL.md"), "You are calm and brief.");
    let server = env.serve(&[]);
    let address = server.url.trim_start_matches("http://").to_owned();

    let clade = assert_cmd::cargo::cargo_bin("clade");
    let mut script = format!(
        "set -euo pipefail\nclade() {{ {:?} \"$@\"; }}\nstream() {{ timeout 2 \"$@\" || [ $? -eq 124 ]; }}\n",
        clade.display().to_string()
    );
    for block in &run {
        for line in block.lines() {
            // The README's alias is what `clade` above stands for.
            if line.trim_start().starts_with("alias clade=") {
                continue;
            }
            let line = line
                .replace(
                    "<token-id>",
                    "$(clade --tenant acme tokens list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1][\"id\"])')",
                )
                .replace(README_GATEWAY, &address)
                .replace("<session_id>", "$SESSION")
                .replace("<turn_id>", "$TURN")
                // A stream never ends by itself: a reader stops it after a while.
                .replace("curl -N ", "stream curl -N ");
            script.push_str(&line);
            script.push('\n');
            // After the event the tour sends over HTTP, a reader knows its session and turn:
            // sent again with its idempotency key, it answers the same ones.
            if line.contains("\"idempotency_key\":\"k1\"") {
                script.push_str(
                    &"echo\nread -r SESSION TURN < <(curl -s -H \"Authorization: Bearer $TOKEN\" \
                     -H 'content-type: application/json' ADDRESS/v1/events -d \
                     '{\"agent\":\"ada\",\"text\":\"hi\",\"source\":{\"platform\":\"http\",\"channel\":\"c1\",\"actor\":\"me\"},\"idempotency_key\":\"k1\",\"wait\":true}' \
                     | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[\"session_id\"], d[\"turn_id\"])')\n"
                        .replace("ADDRESS", &address),
                );
            }
        }
    }
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("HOME", &home)
        .env_remove("CLADE_DATA_DIR")
        .env_remove("CLADE_TOKEN")
        .env_remove("CLADE_AGENT")
        .env_remove("CLADE_TENANT")
        .env("OPENAI_API_KEY", "sk-from-the-readme")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tail = &stdout[stdout.len().saturating_sub(3000)..];
    assert!(out.status.success(), "the README's tour failed:\n…{tail}\n{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");

    // What the blocks did, read back.
    assert!(stdout.contains("\"status\":\"ok\""), "healthz: {stdout}");
    assert!(stdout.contains("\"handle\":\"bob\""), "bob was not made over the API: {stdout}");
    assert!(stdout.contains("echo: hello"), "event send: {stdout}");
    let tokens = env.run(&["--tenant", "acme", "tokens", "list", "--json"]).ok().json();
    let names: Vec<&str> =
        tokens.as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    for name in ["deploy", "bot", "ada-bot", "ci"] {
        assert!(names.contains(&name), "{name} missing: {tokens}");
    }
    assert!(
        tokens.as_array().unwrap().iter().any(|t| !t["revoked_at"].is_null()),
        "no token revoked: {tokens}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jobs = runtime.block_on(server.get_json("/v1/agents/ada/jobs"));
    let enabled = |name: &str| {
        jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .map(|j| j["enabled"].clone())
    };
    assert_eq!(enabled("standup"), Some(serde_json::json!(false)), "{jobs}");
    assert_eq!(enabled("pulse"), Some(serde_json::json!(true)), "{jobs}");
    drop(server);
}
