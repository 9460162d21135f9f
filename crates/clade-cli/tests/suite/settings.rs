//! Agents' settings through the real binary: an agent reads the environment over its stored
//! value over the default and changes its own with its tools (not what the operator keeps);
//! the API and the CLI read and write them; bad keys and values are refused naming the
//! problem; another tenant reaches none of them.

use serde_json::{Value, json};

use super::support::{Env, token, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_resolve_environment_stored_default_and_agents_change_only_their_own() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "evil"]).ok();
    env.run(&["--tenant", "evil", "agents", "create", "ada"]).ok();
    let (evil, _) = token(&env, "evil", &["admin"]);
    write(
        &env.data_dir().join("clade.yaml"),
        "settings:\n  tone: { description: How to write, default: plain }\n  region: { default: eu, env: TEST_REGION, agent_writable: false }\n",
    );
    let server = env.serve_with(&[], &[("TEST_REGION", "\"us\"")]);
    let say = |text: &str| {
        json!({ "agent": "ada", "text": text, "wait": true,
            "source": { "platform": "http", "channel": "dm", "actor": "grace" } })
    };
    let tool = |text: &'static str| {
        let server = &server;
        let body = say(text);
        async move {
            let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
            assert_eq!(status, 200, "{answer}");
            answer["reply"]["text"].as_str().unwrap_or_default().to_owned()
        }
    };
    let read = tool("/tool settings.get").await;
    assert!(read.contains(r#"\"key\":\"tone\""#) || read.contains("tone"), "{read}");
    let all = server.get_json("/v1/agents/ada/settings").await;
    let find = |all: &Value, key: &str| {
        all["items"].as_array().unwrap().iter().find(|s| s["key"] == key).cloned().unwrap()
    };
    assert_eq!(find(&all, "tone")["value"], "plain");
    assert_eq!(find(&all, "tone")["source"], "default");
    assert_eq!(find(&all, "region")["value"], "us");
    assert_eq!(find(&all, "region")["source"], "environment");

    // The agent stores its own value; the operator's key is not its to change.
    let set = tool(r#"/tool settings.set {"key":"tone","value":"dry"}"#).await;
    assert!(set.contains("stored tone"), "{set}");
    let refused = tool(r#"/tool settings.set {"key":"region","value":"ap"}"#).await;
    assert!(refused.contains("operator only"), "{refused}");
    let all = server.get_json("/v1/agents/ada/settings").await;
    assert_eq!(
        (find(&all, "tone")["value"].clone(), find(&all, "tone")["source"].clone()),
        (json!("dry"), json!("stored"))
    );
    assert_eq!(find(&all, "region")["stored"], Value::Null);
    let one = tool(r#"/tool settings.get {"key":"tone"}"#).await;
    assert!(one.contains("dry") && one.contains("stored"), "{one}");

    // The API stores what the environment still overrides, and says where the value comes from.
    let (status, region) = server
        .send("PUT", "/v1/agents/ada/settings/region", None, Some(json!({ "value": "ap" })))
        .await;
    assert_eq!(status, 200, "{region}");
    assert_eq!((region["value"].clone(), region["stored"].clone()), (json!("us"), json!("ap")));
    for (key, body, status, code) in [
        ("Bad Key", json!({ "value": 1 }), 400, "invalid_request"),
        ("big", json!({ "value": "x".repeat(5000) }), 422, "invalid_setting"),
    ] {
        let (got, answer) =
            server.send("PUT", &format!("/v1/agents/ada/settings/{key}"), None, Some(body)).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{answer}");
    }
    let (status, _) = server.send("DELETE", "/v1/agents/ada/settings/region", None, None).await;
    assert_eq!(status, 204);
    let (status, gone) = server.send("DELETE", "/v1/agents/ada/settings/region", None, None).await;
    assert_eq!(
        (status, gone["error"]["code"].as_str()),
        (404, Some("setting_not_found")),
        "{gone}"
    );

    // Another tenant's ada is another agent: it sees none of this one's values.
    let (status, theirs) = server.send("GET", "/v1/agents/ada/settings", Some(&evil), None).await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(find(&theirs, "tone")["value"], "plain", "{theirs}");
    assert!(theirs["items"].as_array().unwrap().iter().all(|s| s["stored"].is_null()), "{theirs}");
    // The operator's lock binds the tenant's admin as it binds its agents; its open keys stay
    // the tenant's to set.
    for (method, body) in [("PUT", Some(json!({ "value": "ap" }))), ("DELETE", None)] {
        let (status, locked) =
            server.send(method, "/v1/agents/ada/settings/region", Some(&evil), body).await;
        assert_eq!(
            (status, locked["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{locked}"
        );
        assert!(
            locked["error"]["message"].as_str().unwrap().contains("agent_writable"),
            "{locked}"
        );
    }
    let (status, open) = server
        .send("PUT", "/v1/agents/ada/settings/tone", Some(&evil), Some(json!({ "value": "wry" })))
        .await;
    assert_eq!(status, 200, "{open}");
    let (status, _) =
        server.send("DELETE", "/v1/agents/ada/settings/tone", Some(&evil), None).await;
    assert_eq!(status, 204);

    // The CLI, beside the gateway.
    env.run(&["--agent", "ada", "settings", "set", "tone", "warm"]).ok();
    let listed = env.run(&["--agent", "ada", "settings", "list", "--json"]).ok().json();
    let tone = listed.as_array().unwrap().iter().find(|s| s["key"] == "tone").unwrap().clone();
    assert_eq!(tone["value"], "warm");
    env.run(&["--agent", "ada", "settings", "unset", "tone"]).ok();
    env.run(&["--agent", "ada", "settings", "unset", "tone"]).fails_with("no stored value");
    env.run(&["--agent", "ada", "settings", "set", "No Good", "1"]).fails_with("keys use");
    let audit = server.get_json("/v1/audit?limit=500").await;
    let changes = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "setting.changed")
        .count();
    assert_eq!(changes, 5, "{audit}"); // The operator's tenant only: evil's are its own.
}
