//! The isolation matrix: every `/v1` route against every kind of caller. Generated from the
//! gateway's scope table, which must name exactly the routes `/openapi.json` documents, so a
//! new route without a row fails here.

use clade_core::Scope;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::support::{Env, token};

async fn call(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut request = client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{url}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    // A route that hangs names itself, rather than timing the whole test out.
    let response = request
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    // Streams (SSE) answer with headers at once; their body is not waited for.
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("text/event-stream"));
    if is_stream {
        return (status, Value::Null);
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_every_principal() {
    let env = Env::new();
    // The owner may grant its agents any tool (its grants below are within the ceiling).
    super::support::write(
        &env.data_dir().join("clade.yaml"),
        "tenants:\n  acme:\n    ceiling: { tools: [\"*\"] }\n",
    );
    // Only the owner has an agent `ada`; the rival has agents of its own.
    for (tenant, agent) in [("acme", "ada"), ("rival", "bo"), ("gone", "ada")] {
        env.run(&["tenants", "create", tenant]).ok();
        env.run(&["--tenant", tenant, "agents", "create", agent]).ok();
    }
    // A token of the owner's own tenant, with every scope but admin, limited to its agent `cy`.
    env.run(&["--tenant", "acme", "agents", "create", "cy"]).ok();
    let limited = env
        .run(&[
            "--tenant",
            "acme",
            "tokens",
            "create",
            "--name",
            "cy-bot",
            "--only-agent",
            "cy",
            "--scope",
            "operate",
            "--scope",
            "read",
            "--scope",
            "send",
            "--scope",
            "approve",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let listed = env.run(&["--tenant", "acme", "tokens", "list", "--json"]).ok().stdout;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let bot = listed.as_array().unwrap().iter().find(|t| t["name"] == "cy-bot").unwrap();
    assert_eq!(bot["agents"], json!(["cy"]), "{listed}");
    // Admin is the whole tenant's: a limited token cannot have it.
    env.run(&["--tenant", "acme", "tokens", "create", "--only-agent", "cy", "--scope", "admin"])
        .fails_with("admin scope");
    let scoped: Vec<(Scope, String)> = Scope::ALL
        .into_iter()
        .map(|scope| (scope, token(&env, "acme", &[scope.as_str()]).0))
        .collect();
    let (revoked, revoked_id) = token(&env, "acme", &["admin", "approve"]);
    env.run(&["--tenant", "acme", "tokens", "revoke", &revoked_id]).ok();
    let (rival, _) = token(&env, "rival", &["admin", "approve"]);
    let (gone, _) = token(&env, "gone", &["admin", "approve"]);
    let (owner, _) = token(&env, "acme", &["admin", "approve"]);
    let server = env.serve(&[]);
    let url = server.url.clone();

    // The owner's resources, which the rival must not reach.
    let event = json!({ "agent": "ada", "text": "hi", "source": { "platform": "http", "channel": "c", "actor": "me" }, "wait": true });
    let (status, body) = call(&url, "POST", "/v1/events", Some(&owner), Some(&event)).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    let turn = body["turn_id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &url,
        "POST",
        "/v1/grants",
        Some(&owner),
        Some(&json!({ "agent": "ada", "tool": "fs.read" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let grant = body["id"].as_str().unwrap().to_owned();
    // A job of `ada` named like the tool the table's `{name}` stands for.
    let job = json!({ "name": "echo", "schedule": "0 0 1 1 *", "prompt": "new year" });
    let (status, body) = call(&url, "POST", "/v1/agents/ada/jobs", Some(&owner), Some(&job)).await;
    assert_eq!(status, 201, "{body}");
    env.run(&["tenants", "delete", "gone", "--yes"]).ok();

    // The table names exactly the documented routes.
    let (_, document) = call(&url, "GET", "/openapi.json", None, None).await;
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/v1") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let mut table: Vec<(String, String)> = clade_gateway::scopes::routes()
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    documented.sort();
    table.sort();
    assert_eq!(
        documented, table,
        "every documented /v1 route needs a row in clade_gateway::scopes::routes()"
    );

    // Destructive routes last, so the others still find what they read.
    let mut routes = clade_gateway::scopes::routes();
    routes.sort_by_key(|(method, _, _)| *method == "DELETE");
    let mut cells = 0;
    let mut unexpected = Vec::new();
    for (n, (method, template, needed)) in routes.iter().enumerate() {
        let id = if template.contains("/sessions/") {
            session.clone()
        } else if template.contains("/grants/") {
            grant.clone()
        } else {
            "01a20a00-0000-7000-8000-000000000000".to_owned()
        };
        let path = template
            .replace("{handle}", "ada")
            .replace("{id}", &id)
            .replace("{name}", "echo")
            .replace("{turn}", &turn)
            .replace("{revision}", "1")
            .replace("{key}", "tone");
        let body = match (*method, *template) {
            ("POST", "/v1/events") => Some(
                json!({ "agent": "ada", "text": format!("cell {n}"), "source": { "platform": "http", "channel": "c", "actor": "me" } }),
            ),
            ("POST", "/v1/chat/completions") => Some(
                json!({ "model": "ada", "messages": [{ "role": "user", "content": format!("cell {n}") }] }),
            ),
            ("POST", "/v1/mcp" | "/v1/agents/{handle}/mcp") => Some(json!({
                "jsonrpc": "2.0", "id": n, "method": "tools/call",
                "params": { "name": "ada", "arguments": { "message": format!("cell {n}") } }
            })),
            ("POST", "/v1/agents") => Some(json!({ "handle": format!("made-{n}") })),
            ("POST", "/v1/agents/{handle}/prompt") => Some(json!({ "text": format!("cell {n}") })),
            ("POST", "/v1/grants") => Some(json!({ "agent": "ada", "tool": "fs.list" })),
            ("POST", "/v1/approvals/{id}") => Some(json!({ "decision": "deny" })),
            ("POST", "/v1/debug/stops/{id}") => Some(json!({ "action": "continue" })),
            ("POST", "/v1/agents/{handle}/jobs") => {
                Some(json!({ "name": format!("cell-{n}"), "schedule": "@daily", "prompt": "tick" }))
            }
            ("PATCH", "/v1/agents/{handle}/jobs/{name}") => Some(json!({ "enabled": true })),
            ("POST", "/v1/config") => Some(json!({ "yaml": "sessions:\n  max_queued: 50\n" })),
            ("PUT", "/v1/agents/{handle}/settings/{key}") => Some(json!({ "value": "dry" })),
            ("POST", "/v1/leases") => Some(json!({ "peer": "hooks", "ttl_secs": 60 })),
            ("POST", "/v1/agents/{handle}/memories" | "/v1/sessions/{id}/memories") => {
                Some(json!({ "content": format!("cell {n}") }))
            }
            ("POST", "/v1/sessions/{id}/memories/batch") => {
                Some(json!({ "items": [{ "content": format!("cell {n}"), "turn": turn }] }))
            }
            ("POST", "/v1/sessions/{id}/turns/{turn}/mine") => Some(json!({})),
            ("POST", "/v1/flows/{name}/runs") => Some(json!({})),
            ("POST", "/v1/agents/{handle}/memories/search") => Some(json!({ "query": "cell" })),
            ("POST", "/v1/agents/{handle}/memories/{id}/links") => {
                Some(json!({ "to": "01a20a00-0000-7000-8000-000000000001", "kind": "related_to" }))
            }
            ("POST", "/v1/sessions/{id}/forks") => {
                Some(json!({ "kind": "worker", "task": format!("/reply cell {n}") }))
            }
            ("POST", "/v1/agents/{handle}/pause" | "/v1/sessions/{id}/pause") => {
                Some(json!({ "reason": format!("cell {n}") }))
            }
            ("PATCH", _) => Some(json!({ "queue_mode": "queue" })),
            ("POST", _) => Some(json!({ "arguments": {} })),
            _ => None,
        };
        let private = template.contains('{');
        let mut check = |who: &str, status: u16, code: &Value, ok: bool| {
            cells += 1;
            if !ok {
                unexpected.push(format!("{method} {template} as {who}: {status} {code}"));
            }
        };
        // Callers that are nobody: no token, a revoked one, a deleted tenant's.
        for (who, token, code) in [
            ("no token", None, "missing_token"),
            ("revoked", Some(revoked.as_str()), "invalid_token"),
            ("deleted tenant", Some(gone.as_str()), "invalid_token"),
        ] {
            let (status, answer) = call(&url, method, &path, token, body.as_ref()).await;
            check(
                who,
                status,
                &answer["error"]["code"],
                status == 401 && answer["error"]["code"] == code,
            );
        }
        // Another tenant: what the owner owns is not found, and no listing shows it.
        let (status, answer) = call(&url, method, &path, Some(&rival), body.as_ref()).await;
        // (An error may repeat the id the caller sent; a success must not show the owner's.)
        let shown = answer.to_string();
        let leaks = status < 300 && (shown.contains(&session) || shown.contains(&grant));
        let ok = !leaks && if private { status == 404 } else { status != 401 && status != 403 };
        check("other tenant", status, &answer["error"]["code"], ok);
        // The owner's token limited to `cy`: what belongs to `ada` is not found, and no
        // listing shows it; what only admin may do stays forbidden.
        let (status, answer) = call(&url, method, &path, Some(&limited), body.as_ref()).await;
        let shown = answer.to_string();
        let leaks = status < 300
            && (shown.contains(&session) || shown.contains(&grant) || shown.contains("\"ada\""));
        let ok =
            if Scope::allows(&[Scope::Operate, Scope::Read, Scope::Send, Scope::Approve], needed) {
                !leaks
                    && if private
                        || (*template == "/v1/events" && *method == "POST")
                        || *template == "/v1/chat/completions"
                    {
                        status == 404
                    } else {
                        status != 401 && status != 403
                    }
            } else {
                status == 403 && answer["error"]["code"] == "forbidden"
            };
        check("limited to another agent", status, &answer["error"]["code"], ok);
        // The owner, with each scope alone.
        for (scope, token) in &scoped {
            let allowed = Scope::allows(&[*scope], needed);
            let (status, answer) = call(&url, method, &path, Some(token), body.as_ref()).await;
            let ok = if allowed {
                status != 401 && status != 403
            } else {
                status == 403 && answer["error"]["code"] == "forbidden"
            };
            check(&format!("owner ({scope})"), status, &answer["error"]["code"], ok);
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} of {cells} cells unexpected:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert_eq!(cells, routes.len() * (3 + 2 + Scope::ALL.len()));

    // Over WebSocket too: the limited token subscribes to its own agent, and `ada` and her
    // session are not found.
    let ws = format!("{}/v1/ws", url.replace("http://", "ws://"));
    let mut request = ws.as_str().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {limited}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for (subscribe, expected) in [
        (json!({ "type": "subscribe", "agent": "ada" }), "agent_not_found"),
        (json!({ "type": "subscribe", "session": session }), "session_not_found"),
        (json!({ "type": "subscribe", "agent": "cy" }), "subscribed"),
    ] {
        socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
        let reply = loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(text) = frame {
                break serde_json::from_str::<Value>(&text).unwrap();
            }
        };
        let got = if reply["type"] == "error" { &reply["code"] } else { &reply["type"] };
        assert_eq!(got, expected, "{subscribe} -> {reply}");
    }
}
