//! Step-through debugging through the real binary: breakpoints pause turns before tool and
//! model calls and on errors, a paused turn survives a kill, and a person continues, steps,
//! skips or edits, from the CLI and the API, within their own tenant only.

use std::path::Path;

use serde_json::{Value, json};

use super::support::{Env, Server, eventually, token, write};

fn event(text: &str) -> Value {
    json!({ "agent": "ada", "text": text, "source": { "platform": "http", "channel": "debug", "actor": "pat" } })
}

/// The first waiting stop, once one is.
async fn waiting_stop(server: &Server) -> Value {
    let stop = eventually(async || {
        let (_, page) = server.send("GET", "/v1/debug/stops", None, None).await;
        page["items"].as_array().and_then(|items| items.first()).cloned()
    });
    stop.await.expect("no turn paused at a breakpoint")
}

/// The reply of the session's newest turn once it has settled.
async fn settled_reply(server: &Server, session: &str, turns: usize) -> Value {
    let all = server
        .turns_until(session, |all| {
            all.len() >= turns && all.iter().all(|t| t["status"] != "running")
        })
        .await;
    all.last().cloned().unwrap_or(Value::Null)
}

fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Removes every breakpoint, from the CLI.
async fn unbreak_all(env: &Env, server: &Server) {
    let (_, listed) = server.send("GET", "/v1/breakpoints", None, None).await;
    for b in listed["items"].as_array().unwrap() {
        env.run(&["debug", "unbreak", b["id"].as_str().unwrap(), "--server", &server.url]).ok();
    }
}

async fn tell(server: &Server, stop: &str, body: Value) -> (u16, Value) {
    server.send("POST", &format!("/v1/debug/stops/{stop}"), None, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakpoints_pause_turns_durably_until_a_person_steps_them() {
    let env = Env::new();
    let ledger = env.tmp.path().join("ledger.txt");
    write(
        &env.data_dir().join("clade.yaml"),
        &format!("testing:\n  ledger_file: {}\n", ledger.display()),
    );
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "rival"]).ok();
    env.run(&["--tenant", "rival", "agents", "create", "bob"]).ok();
    let (rival, _) = token(&env, "rival", &["read", "admin"]);
    let server = env.serve(&[]);
    let url = server.url.clone();

    // Bad input: each a clear error, nothing set.
    let bad = [
        (json!({ "agent": "nobody", "at": "tool" }), 404),
        (json!({ "agent": "ada", "at": "sometimes" }), 400),
        (json!({ "agent": "ada", "at": "model", "tool": "ledger.append" }), 400),
        (json!({ "agent": "ada", "at": "tool", "session": "not-a-session" }), 404),
    ];
    for (body, status) in bad {
        let (got, answer) = server.send("POST", "/v1/breakpoints", None, Some(body.clone())).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    env.run(&["debug", "break", "ada", "--at", "sometimes", "--server", &url])
        .fails_with("use model, tool or error");

    // A breakpoint before one tool, from the CLI.
    let out = env
        .run(&[
            "debug",
            "break",
            "ada",
            "--at",
            "tool",
            "--tool",
            "ledger.append",
            "--server",
            &url,
        ])
        .ok();
    assert!(out.stdout.contains("before each call of ledger.append"), "{}", out.stdout);
    let (_, listed) = server.send("GET", "/v1/breakpoints", None, None).await;
    let breakpoint = listed["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["items"][0]["agent"], "ada");

    // Another tenant sees none of it, and cannot set one on ada.
    let (_, theirs) = server.send("GET", "/v1/breakpoints", Some(&rival), None).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let body = json!({ "agent": "ada", "at": "model" });
    let (status, _) = server.send("POST", "/v1/breakpoints", Some(&rival), Some(body)).await;
    assert_eq!(status, 404, "a tenant set a breakpoint on another tenant's agent");
    let path = format!("/v1/breakpoints/{breakpoint}");
    let (status, _) = server.send("DELETE", &path, Some(&rival), None).await;
    assert_eq!(status, 404, "a tenant removed another tenant's breakpoint");

    // The turn pauses before the call: nothing ran, the pending call is shown.
    let (status, accepted) = server
        .send(
            "POST",
            "/v1/events",
            None,
            Some(event("/tool ledger.append {\"note\":\"original\"}")),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let session = accepted["session_id"].as_str().unwrap().to_owned();
    let stop = waiting_stop(&server).await;
    let id = stop["id"].as_str().unwrap().to_owned();
    assert_eq!((stop["place"].as_str(), stop["at"].as_str()), (Some("tool/0/0"), Some("tool")));
    assert_eq!(stop["detail"]["call"]["name"], "ledger.append", "{stop}");
    assert_eq!(stop["detail"]["call"]["arguments"], json!({ "note": "original" }), "{stop}");
    assert_eq!(stop["waiting"], true);
    assert!(ledger_lines(&ledger).is_empty(), "the paused call ran");
    let shown = env.run(&["debug", "show", &id, "--server", &url]).ok().stdout;
    assert!(shown.contains("call ledger.append") && shown.contains("\"original\""), "{shown}");

    // Another tenant can neither see the stop nor tell it anything.
    let (_, theirs) = server.send("GET", "/v1/debug/stops", Some(&rival), None).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let (status, _) =
        server.send("GET", &format!("/v1/debug/stops/{id}"), Some(&rival), None).await;
    assert_eq!(status, 404);
    let continued = json!({ "action": "continue" });
    let (status, _) =
        server.send("POST", &format!("/v1/debug/stops/{id}"), Some(&rival), Some(continued)).await;
    assert_eq!(status, 404, "a tenant let another tenant's turn go on");

    // Killed while paused: the turn comes back to the same stop, still waiting.
    server.kill9();
    let server = env.serve(&[]);
    let url = server.url.clone();
    let again = waiting_stop(&server).await;
    assert_eq!(again["id"], stop["id"], "the resumed turn paused anew: {again}");
    assert!(ledger_lines(&ledger).is_empty(), "the paused call ran across the restart");

    // Orders that do not fit the stop are refused, and change nothing.
    for body in [
        json!({ "action": "edit", "arguments": ["note"] }),
        json!({ "action": "skip" }),
        json!({ "action": "continue", "result": "x" }),
        json!({ "action": "rewind" }),
    ] {
        let (status, answer) = tell(&server, &id, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
    }

    // Edited from the CLI: the call runs with the new arguments only, audited with both.
    let out = env
        .run(&["debug", "edit", &id, "--arguments", "{\"note\":\"edited\"}", "--server", &url])
        .ok();
    assert!(out.stdout.contains("edit stop"), "{}", out.stdout);
    let done = settled_reply(&server, &session, 1).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(ledger_lines(&ledger).len(), 1);
    assert!(ledger_lines(&ledger)[0].contains("edited"), "{:?}", ledger_lines(&ledger));
    let (_, audit) = server.send("GET", "/v1/audit?agent=ada", None, None).await;
    let resumed: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "debug.resumed")
        .collect();
    assert_eq!(resumed.len(), 1, "{audit}");
    assert_eq!(resumed[0]["detail"]["arguments_before"], json!({ "note": "original" }));
    assert_eq!(resumed[0]["detail"]["data"], json!({ "note": "edited" }));
    let (status, answer) = tell(&server, &id, json!({ "action": "continue" })).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("stop_not_waiting")));

    // Before each model call, then step: the next call pauses too, though no breakpoint names
    // it; skipped, the tool never runs and the model is told what the person gave.
    env.run(&["debug", "unbreak", &breakpoint, "--server", &url]).ok();
    env.run(&["debug", "break", "ada", "--at", "model", "--server", &url]).ok();
    server
        .send("POST", "/v1/events", None, Some(event("/tool ledger.append {\"note\":\"second\"}")))
        .await;
    let before_model = waiting_stop(&server).await;
    assert_eq!(before_model["place"], "model/0", "{before_model}");
    let context = before_model["detail"]["messages"].as_array().unwrap();
    assert!(context.iter().any(|m| m["text"].as_str().is_some_and(|t| t.contains("\"second\""))));
    assert!(before_model["detail"]["tools"].as_array().is_some_and(|t| !t.is_empty()));
    let step = before_model["id"].as_str().unwrap();
    env.run(&["debug", "step", step, "--server", &url]).ok();
    let before_tool = waiting_stop(&server).await;
    assert_eq!(before_tool["place"], "tool/0/0", "stepping paused before the tool: {before_tool}");
    let skip = before_tool["id"].as_str().unwrap();
    env.run(&["debug", "skip", skip, "--result", "given by a person", "--server", &url]).ok();
    let before_answer = waiting_stop(&server).await;
    assert_eq!(before_answer["place"], "model/1", "{before_answer}");
    tell(&server, before_answer["id"].as_str().unwrap(), json!({ "action": "continue" })).await;
    let done = settled_reply(&server, &session, 2).await;
    assert_eq!(done["reply"], "tool results: ledger.append -> given by a person", "{done}");
    assert_eq!(ledger_lines(&ledger).len(), 1, "the skipped call ran");

    // On an error: the failed call's error is shown, and a result given for it stands.
    unbreak_all(&env, &server).await;
    env.run(&["debug", "break", "ada", "--at", "error", "--server", &url]).ok();
    server.send("POST", "/v1/events", None, Some(event("/tool no.such.tool {}"))).await;
    let failed = waiting_stop(&server).await;
    assert_eq!(failed["place"], "error/tool/0/0", "{failed}");
    assert!(
        failed["detail"]["error"].as_str().is_some_and(|e| e.contains("no.such.tool")),
        "{failed}"
    );
    let body = json!({ "action": "skip", "result": "pretend it worked" });
    tell(&server, failed["id"].as_str().unwrap(), body).await;
    let done = settled_reply(&server, &session, 3).await;
    assert_eq!(done["reply"], "tool results: no.such.tool -> pretend it worked", "{done}");

    // A paused turn that is cancelled waits no more, and cannot be told.
    server.send("POST", "/v1/events", None, Some(event("/tool no.such.tool {}"))).await;
    let cancelled = waiting_stop(&server).await;
    env.run(&["sessions", "cancel", &session, "--server", &url]).ok();
    let cancelled_id = cancelled["id"].as_str().unwrap();
    let gone = eventually(async || {
        let (_, stop) =
            server.send("GET", &format!("/v1/debug/stops/{cancelled_id}"), None, None).await;
        (stop["waiting"] == false).then_some(stop)
    });
    assert!(gone.await.is_some(), "a cancelled turn's stop still waits");
    let (status, _) = tell(&server, cancelled_id, json!({ "action": "continue" })).await;
    assert_eq!(status, 409);
    let out = env.run(&["debug", "stops", "--all", "--server", &url]).ok().stdout;
    assert!(out.contains("turn ended") && out.contains("edit"), "{out}");

    // Paused before its first model call, a turn is not on disk yet (it commits with that
    // call's answer): killed there, it starts anew after the restart and pauses at the same
    // place, one stop waiting, not two; cancelled there, it waits no more.
    unbreak_all(&env, &server).await;
    env.run(&["debug", "break", "ada", "--at", "model", "--server", &url]).ok();
    server.send("POST", "/v1/events", None, Some(event("/reply once more"))).await;
    let first = waiting_stop(&server).await;
    assert_eq!(first["place"], "model/0", "{first}");
    server.kill9();
    let server = env.serve(&[]);
    let url = server.url.clone();
    let anew = eventually(async || {
        let (_, page) = server.send("GET", "/v1/debug/stops", None, None).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        items.iter().any(|s| s["id"] != first["id"]).then_some(items)
    });
    let waiting = anew.await.expect("the turn did not pause again after the restart");
    assert_eq!(waiting.len(), 1, "the stop of the turn that never reached the disk: {waiting:?}");
    assert_eq!(waiting[0]["place"], "model/0");
    env.run(&["sessions", "cancel", &session, "--server", &url]).ok();
    let none = eventually(async || {
        let (_, page) = server.send("GET", "/v1/debug/stops", None, None).await;
        (page["items"] == json!([])).then_some(())
    });
    assert!(none.await.is_some(), "a turn cancelled before its first model call still waits");

    // The agent's breakpoints go with it.
    let (status, _) = server.send("DELETE", "/v1/agents/ada", None, None).await;
    assert_eq!(status, 204);
    let (_, listed) = server.send("GET", "/v1/breakpoints", None, None).await;
    assert_eq!(listed["items"], json!([]), "{listed}");
    let body = json!({ "agent": "ada", "at": "tool" });
    let (status, _) = server.send("POST", "/v1/breakpoints", None, Some(body)).await;
    assert_eq!(status, 404, "a breakpoint was set on a deleted agent");
}
