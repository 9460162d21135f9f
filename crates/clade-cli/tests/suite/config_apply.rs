//! Live configuration through the real binary: `clade config apply` runs one flow (parse,
//! check, write, record) and a serving gateway takes the new revision without a restart;
//! a bad file changes nothing and says which step failed; history, diff and revert.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::{Env, Server, write};

/// What the agent's `echo` tool call answers now, as the turn's reply summarises it.
async fn echo_reply(server: &Server, n: usize) -> String {
    let event = json!({ "agent": "ada", "text": format!("/tool echo {{\"text\":\"hi {n}\"}}"),
        "wait": true, "source": { "platform": "http", "channel": "c", "actor": format!("a{n}") } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(event)).await;
    assert_eq!(status, 200, "{answer}");
    answer["reply"]["text"].as_str().unwrap_or_default().to_owned()
}

/// Asks until the echo tool's answer satisfies `done` (the reload takes up to a second).
async fn until_echo(server: &Server, done: impl Fn(&str) -> bool) -> String {
    for n in 0..100 {
        let reply = echo_reply(server, n).await;
        if done(&reply) {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway never took the new configuration");
}

#[tokio::test]
async fn an_applied_configuration_is_taken_live_and_a_bad_one_changes_nothing() {
    let env = Env::new();
    let yaml = env.data_dir().join("clade.yaml");
    write(&yaml, "sessions:\n  max_queued: 50\n");
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let allowed = echo_reply(&server, 1000).await;
    assert!(allowed.contains("hi 1000") && !allowed.contains("denied"), "{allowed}");

    // Deny the tool: the running gateway takes it without a restart.
    let deny = env.data_dir().join("deny.yaml");
    write(
        &deny,
        "sessions:\n  max_queued: 50\ntools:\n  policy:\n    - { effect: deny, tool: echo }\n",
    );
    let out = env.run(&["config", "apply", deny.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("applied revision 1"), "{}", out.stdout);
    assert!(out.stdout.contains("+  policy:"), "the diff is missing: {}", out.stdout);
    assert_eq!(std::fs::read_to_string(&yaml).unwrap(), std::fs::read_to_string(&deny).unwrap());
    let denied = until_echo(&server, |reply| reply.contains("denied")).await;
    assert!(!denied.contains("hi "), "{denied}");

    // Bad files: each names its step, and nothing changes (file, revisions, gateway).
    let bad = env.data_dir().join("bad.yaml");
    for (text, says) in [
        ("sessions:\n  max_queud: 5\n", "the parse step failed"),
        ("heartbeats:\n  ada: { prompt: \"  \" }\n", "the check step failed"),
        ("heartbeats:\n  ada: { schedule: \"0 0 30 2 *\", prompt: \"x\" }\n", "never fires"),
    ] {
        write(&bad, text);
        env.run(&["config", "apply", bad.to_str().unwrap()]).fails_with(says);
    }
    assert_eq!(std::fs::read_to_string(&yaml).unwrap(), std::fs::read_to_string(&deny).unwrap());
    let same = env.run(&["config", "apply", deny.to_str().unwrap()]).ok().stdout;
    assert!(same.contains("nothing applied"), "{same}");

    // Allow it again, then revert to revision 1: denied once more.
    let open = env.data_dir().join("open.yaml");
    write(&open, "sessions:\n  max_queued: 50\n");
    env.run(&["config", "apply", open.to_str().unwrap()]).ok();
    until_echo(&server, |reply| reply.contains("hi ")).await;
    let out = env.run(&["config", "revert", "1"]).ok();
    assert!(out.stdout.contains("applied revision 3"), "{}", out.stdout);
    until_echo(&server, |reply| reply.contains("denied")).await;
    env.run(&["config", "revert", "9"]).fails_with("no configuration revision 9");

    let history: Value = env.run(&["config", "history", "--json"]).ok().json();
    let revisions: Vec<i64> =
        history.as_array().unwrap().iter().map(|r| r["revision"].as_i64().unwrap()).collect();
    assert_eq!(revisions, [3, 2, 1], "{history}");
    assert_eq!(history[0]["reverts"], 1);
    assert_eq!(history[0]["applied_by"], "operator (cli)");
    let diff = env.run(&["config", "diff", "2"]).ok().stdout;
    assert!(diff.contains("-  policy:") && diff.contains("revision 2"), "{diff}");
    // Each revision is in the operator's audit log.
    let audit = server.get_json("/v1/audit?limit=1000").await;
    let applied =
        audit["items"].as_array().unwrap().iter().filter(|r| r["kind"] == "config.applied");
    assert_eq!(applied.count(), 3, "{audit}");
}
