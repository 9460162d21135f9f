//! Model set-up per agent against clade-stub: quick start, credentials from the environment
//! and from encrypted secrets, OAuth refresh persisted, routes per agent, budgets and usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::collections::HashMap;
mod support;

use std::sync::Arc;

use clade_config::Config;
use clade_core::{Agent, AgentConfig, Clock, Handle, SecretName, SystemClock, Tenant, Timestamp};
use clade_model::{Error, Message, ModelRequest};
use clade_runtime::{EnvHints, Models, ProcessKind};
use clade_store::{Agents, NewAgent, Secrets, Store};
use clade_stub::{Stub, StubOptions};

struct Setup {
    store: Store,
    secrets: Secrets,
    tenant: Tenant,
    agent: Agent,
    stub: Stub,
    _tmp: tempfile::TempDir,
}

async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (store, data) = support::sqlite_store(&tmp.path().join("data")).await;
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
    let agents = Agents::new(store.clone(), data.clone());
    let agent = agents
        .create(
            tenant.id,
            NewAgent {
                handle: Handle::parse("ada").unwrap(),
                display_name: None,
                config: AgentConfig::default(),
            },
        )
        .await
        .unwrap();
    let secrets = Secrets::new(store.clone(), data.master_key_path(), None);
    let stub = Stub::start("127.0.0.1:0", StubOptions::default()).await.unwrap();
    Setup { store, secrets, tenant, agent, stub, _tmp: tmp }
}

fn config(yaml: &str) -> Config {
    let config = Config::parse(yaml, std::path::Path::new("clade.yaml")).unwrap();
    config.check(std::path::Path::new("clade.yaml")).unwrap();
    config
}

fn env(pairs: &[(&str, &str)]) -> EnvHints {
    EnvHints {
        vars: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
    }
}

fn models(s: &Setup, config: &Config, env: EnvHints) -> Models {
    Models::new(config, env, s.store.clone(), s.secrets.clone(), Arc::new(SystemClock))
}

/// Models with `sub`, an Anthropic model on OAuth whose tokens, kept in the agent's secret
/// CLAUDE_OAUTH (returned), have expired.
async fn expired_oauth(s: &Setup) -> (Models, SecretName) {
    let yaml = format!(
        "models:\n  sub:\n    provider: anthropic\n    model: stub+oauth\n    base_url: {url}\n    oauth:\n      token_url: {url}/oauth/token\n      client_id: clade\n      secret: CLAUDE_OAUTH\n",
        url = s.stub.url()
    );
    let name = SecretName::parse("CLAUDE_OAUTH").unwrap();
    let expired =
        serde_json::json!({ "access_token": "old", "refresh_token": "refresh-x", "expires_at": 0 });
    s.secrets.set(&s.agent, &name, expired.to_string().as_bytes()).await.unwrap();
    (models(s, &config(&yaml), EnvHints::default()), name)
}

fn hello() -> ModelRequest {
    ModelRequest { messages: vec![Message::user("hello")], ..ModelRequest::default() }
}

#[tokio::test]
async fn without_configuration_the_scripted_provider_answers_and_says_so() {
    let s = setup().await;
    let m = models(&s, &Config::default(), EnvHints::default());
    assert!(m.offline_only());
    assert!(m.describe().contains("not a language model"), "{}", m.describe());
    let outcome = m
        .call(&s.tenant, Some(&s.agent), ProcessKind::Channel, &hello(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.model, "scripted");
    assert_eq!(outcome.response.text, "echo: hello");
}

#[tokio::test]
async fn quick_start_from_the_environment() {
    let s = setup().await;
    let base = format!("{}/v1", s.stub.url());
    let m = models(
        &s,
        &Config::default(),
        env(&[
            ("OPENAI_API_KEY", "sk-env"),
            ("OPENAI_BASE_URL", &base),
            ("CLADE_MODEL", "gpt-test"),
        ]),
    );
    assert!(!m.offline_only());
    assert!(m.describe().contains("gpt-test"), "{}", m.describe());
    let outcome =
        m.call(&s.tenant, None, ProcessKind::Channel, &hello(), &mut |_| {}).await.unwrap();
    assert_eq!(outcome.model, "default");
    let captured = s.stub.captured().pop().unwrap();
    assert_eq!(captured.headers["authorization"], "Bearer sk-env");
    assert_eq!(captured.body["model"], "gpt-test");

    let anthropic_base = s.stub.url().to_owned();
    let m = models(
        &s,
        &Config::default(),
        env(&[("ANTHROPIC_API_KEY", "sk-ant"), ("ANTHROPIC_BASE_URL", &anthropic_base)]),
    );
    m.call(&s.tenant, None, ProcessKind::Channel, &hello(), &mut |_| {}).await.unwrap();
    let captured = s.stub.captured().pop().unwrap();
    assert_eq!(captured.path, "/v1/messages");
    assert_eq!(captured.headers["x-api-key"], "sk-ant");
}

#[tokio::test]
async fn keys_come_from_agent_secrets_and_missing_ones_fall_back() {
    let s = setup().await;
    let yaml = format!(
        "models:\n  main:\n    provider: anthropic\n    base_url: {}\n    api_key_secret: ANTHROPIC_KEY\nrouting:\n  default: [main, scripted]\n",
        s.stub.url()
    );
    let m = models(&s, &config(&yaml), EnvHints::default());
    // No secret yet: the call falls back, and the journal of decisions says why.
    let outcome = m
        .call(&s.tenant, Some(&s.agent), ProcessKind::Channel, &hello(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.model, "scripted");
    assert!(
        outcome
            .events
            .iter()
            .any(|e| matches!(e, clade_model::RouteEvent::Failed { class: "credentials", .. })),
        "{:?}",
        outcome.events
    );
    s.secrets
        .set(&s.agent, &SecretName::parse("ANTHROPIC_KEY").unwrap(), b"sk-from-secret")
        .await
        .unwrap();
    let outcome = m
        .call(&s.tenant, Some(&s.agent), ProcessKind::Channel, &hello(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.model, "main");
    assert_eq!(s.stub.captured().pop().unwrap().headers["x-api-key"], "sk-from-secret");
}

#[tokio::test]
async fn oauth_tokens_refresh_and_are_stored_encrypted() {
    let s = setup().await;
    let (m, name) = expired_oauth(&s).await;
    let outcome = m
        .call(&s.tenant, Some(&s.agent), ProcessKind::Channel, &hello(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.model, "sub");
    let auth = &s.stub.captured().pop().unwrap().headers["authorization"];
    assert!(auth.starts_with("Bearer stub-access-"), "{auth}");
    let stored: serde_json::Value =
        serde_json::from_slice(&s.secrets.get(&s.agent, &name).await.unwrap()).unwrap();
    assert_eq!(format!("Bearer {}", stored["access_token"].as_str().unwrap()), *auth);
    assert!(stored["expires_at"].as_i64().unwrap() > SystemClock.now().as_millis());
}

#[tokio::test]
async fn routes_follow_process_kind_and_agent_and_template_overrides() {
    let s = setup().await;
    let yaml = "models:\n  a:\n    provider: scripted\n  b:\n    provider: scripted\n  c:\n    provider: scripted\nrouting:\n  default: [a]\n  worker: [b]\n  agents:\n    ada:\n      compactor: [c]\n    acme/bob:\n      default: [b]\n";
    let m = models(&s, &config(yaml), EnvHints::default());
    assert_eq!(m.chain(ProcessKind::Channel, None), ["a"]);
    assert_eq!(m.chain(ProcessKind::Worker, None), ["b"]);
    assert_eq!(m.chain(ProcessKind::Worker, Some(routed("default", "ada", "default"))), ["b"]);
    assert_eq!(m.chain(ProcessKind::Compactor, Some(routed("default", "ada", "default"))), ["c"]);
    assert_eq!(m.chain(ProcessKind::Compactor, Some(routed("default", "bob", "default"))), ["a"]);
    // An agent reference names one tenant's agent: a bare handle is the default tenant's, and
    // `acme/bob` is not the default tenant's bob.
    assert_eq!(m.chain(ProcessKind::Compactor, Some(routed("acme", "ada", "default"))), ["a"]);
    assert_eq!(m.chain(ProcessKind::Channel, Some(routed("acme", "bob", "default"))), ["b"]);

    // A template's chains come after the agent's own and before the deployment's.
    let yaml = "models:\n  a:\n    provider: scripted\n  b:\n    provider: scripted\n  c:\n    provider: scripted\nrouting:\n  default: [a]\n  worker: [b]\n  templates:\n    coder:\n      default: [c]\n    reviewer:\n      compactor: [b]\n  agents:\n    ada:\n      default: [a]\n";
    let m = models(&s, &config(yaml), EnvHints::default());
    assert_eq!(m.chain(ProcessKind::Worker, Some(routed("default", "cy", "coder"))), ["c"]);
    assert_eq!(m.chain(ProcessKind::Channel, Some(routed("default", "ada", "coder"))), ["a"]);
    assert_eq!(m.chain(ProcessKind::Compactor, Some(routed("default", "rex", "reviewer"))), ["b"]);
    assert_eq!(m.chain(ProcessKind::Channel, Some(routed("default", "rex", "reviewer"))), ["a"]);
    assert_eq!(m.chain(ProcessKind::Worker, Some(routed("default", "rex", "reviewer"))), ["b"]);
}

fn routed<'a>(
    tenant: &'a str,
    handle: &'a str,
    template: &'a str,
) -> clade_runtime::models::Routed<'a> {
    clade_runtime::models::Routed { tenant, handle, template }
}

/// A child agent (made by ada) spends out of ada's budget: with no budget of its own, its calls
/// are refused once ada's is used up, naming ada; an agent nobody made, with no budget either,
/// is never refused.
#[tokio::test]
async fn a_child_agent_spends_out_of_its_parents_budget() {
    let s = setup().await;
    let yaml = format!(
        "models:\n  paid:\n    provider: openai\n    model: stub+latency=5\n    base_url: {}/v1\n    api_key_env: KEY\n    max_tokens: 100\n    price: {{ input_per_mtok: 10, output_per_mtok: 30 }}\nbudgets:\n  agents:\n    ada: {{ tokens_per_day: 150 }}\n",
        s.stub.url()
    );
    let m = models(&s, &config(&yaml), env(&[("KEY", "k")]));
    let data = clade_store::DataDir::open(s._tmp.path().join("data")).unwrap();
    let agents = Agents::new(s.store.clone(), data);
    let made = |handle: &str| NewAgent {
        handle: Handle::parse(handle).unwrap(),
        display_name: None,
        config: AgentConfig::default(),
    };
    let kid = agents.create(s.tenant.id, made("ada-kid")).await.unwrap();
    let solo = agents.create(s.tenant.id, made("solo")).await.unwrap();
    s.store.lineage(s.tenant.id).record_child(s.agent.id, kid.id, 1).await.unwrap();
    assert_eq!(
        s.store.lineage(s.tenant.id).ancestors_of(kid.id).await.unwrap(),
        [(s.agent.id, "ada".to_owned())]
    );
    let mut request = hello();
    request.params.max_tokens = 100;
    // Each call reserves 101 tokens and spends far fewer: the child's calls add up in ada's
    // counter until the next reservation no longer fits under her 150.
    let mut refused = None;
    for _ in 0..40 {
        match m.call(&s.tenant, Some(&kid), ProcessKind::Channel, &request, &mut |_| {}).await {
            Ok(_) => {}
            Err(err) => {
                refused = Some(err.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("the child spent past its parent's budget");
    assert!(refused.contains("agent default/ada (which made ada-kid)"), "{refused}");
    // ada itself has nothing left either: the child's spending was hers.
    let err = m.call(&s.tenant, Some(&s.agent), ProcessKind::Channel, &request, &mut |_| {}).await;
    assert!(matches!(err, Err(e) if matches!(e.error, Error::BudgetExceeded(_))));
    for _ in 0..40 {
        m.call(&s.tenant, Some(&solo), ProcessKind::Channel, &request, &mut |_| {}).await.unwrap();
    }
}

#[tokio::test]
async fn budgets_hold_under_concurrent_calls_and_usage_is_recorded() {
    let s = setup().await;
    let yaml = format!(
        "models:\n  paid:\n    provider: openai\n    model: stub+latency=20\n    base_url: {}/v1\n    api_key_env: KEY\n    max_tokens: 100\n    price: {{ input_per_mtok: 10, output_per_mtok: 30 }}\nbudgets:\n  agents:\n    ada: {{ usd_per_day: 0.01 }}\n",
        s.stub.url()
    );
    let m = Arc::new(models(&s, &config(&yaml), env(&[("KEY", "k")])));
    let mut request = hello();
    request.params.max_tokens = 100;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (m, tenant, agent, request) =
            (m.clone(), s.tenant.clone(), s.agent.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            m.call(&tenant, Some(&agent), ProcessKind::Channel, &request, &mut |_| {}).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(err) => {
                assert!(matches!(err.error, Error::BudgetExceeded(_)), "{err}");
                assert!(
                    err.to_string().contains("agent default/ada")
                        && err.to_string().contains("USD per day"),
                    "{err}"
                );
            }
        }
    }
    // Each call reserves 1 + 100 tokens at most: 10 + 3000 micro-USD, so 3 fit under 10,000.
    assert_eq!(ok, 3, "reservations admit exactly what fits");
    let usage = s
        .store
        .usage(s.tenant.id)
        .summary(Some(s.agent.id), Timestamp::from_millis(0), clade_store::UsageBy::Total)
        .await
        .unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].calls, 3);
    assert!(usage[0].cost_micros > 0 && usage[0].cost_micros <= 10_000, "{:?}", usage[0]);
    assert_eq!(s.stub.captured().len(), 3, "refused calls never reached the provider");
}

/// A rate limit's cooldown outlives the call that met it: the next call (another turn) does
/// not hit the limited model again, while the fallback answers both.
#[tokio::test]
async fn a_rate_limited_model_is_called_once_by_two_calls() {
    let s = setup().await;
    let yaml = format!(
        "models:\n  limited:\n    provider: openai\n    model: stub+status=429+retry-after=30\n    base_url: {}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [limited, scripted]\n",
        s.stub.url()
    );
    let m = models(&s, &config(&yaml), env(&[("STUB_KEY", "sk-stub")]));
    for _ in 0..2 {
        let outcome = m
            .call(&s.tenant, Some(&s.agent), ProcessKind::Channel, &hello(), &mut |_| {})
            .await
            .unwrap();
        assert_eq!(outcome.model, "scripted");
    }
    assert_eq!(s.stub.captured().len(), 1, "the cooling model was called again");
}

/// Concurrent calls with an expired OAuth token refresh it once (providers that rotate refresh
/// tokens refuse the second refresh).
#[tokio::test]
async fn concurrent_calls_refresh_an_oauth_token_once() {
    let s = setup().await;
    let (m, _) = expired_oauth(&s).await;
    let calls = (0..4).map(|_| {
        let (m, tenant, agent) = (m.clone(), s.tenant.clone(), s.agent.clone());
        tokio::spawn(async move {
            m.call(&tenant, Some(&agent), ProcessKind::Channel, &hello(), &mut |_| {}).await
        })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap().unwrap().model, "sub");
    }
    // Each refresh hands out a new access token: one refresh, one token for all four calls.
    let tokens: std::collections::BTreeSet<String> =
        s.stub.captured().iter().map(|c| c.headers["authorization"].clone()).collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
}

#[tokio::test]
async fn a_new_revision_keeps_the_routers_only_while_the_models_are_the_same() {
    let s = setup().await;
    let yaml = |model: &str, budget: &str| {
        format!(
            "models:\n  main:\n    provider: openai\n    model: {model}\n    base_url: {url}/v1\n    api_key_env: KEY\n{budget}",
            url = s.stub.url()
        )
    };
    let keys = env(&[("KEY", "sk-1")]);
    let first = models(&s, &config(&yaml("gpt-a", "")), keys.clone());
    first.call(&s.tenant, None, ProcessKind::Channel, &hello(), &mut |_| {}).await.unwrap();

    // Only a budget changed: the same router, cooldowns and connections with it.
    let budgets = "budgets:\n  tenants:\n    default: { usd_per_day: 5 }\n";
    let second = first.succeed(&config(&yaml("gpt-a", budgets)), keys.clone());
    assert!(Arc::ptr_eq(&first.router_for(None), &second.router_for(None)));

    // Another model, or another key: a router of its own, which calls the new model.
    let third = second.succeed(&config(&yaml("gpt-b", budgets)), keys.clone());
    assert!(!Arc::ptr_eq(&second.router_for(None), &third.router_for(None)));
    third.call(&s.tenant, None, ProcessKind::Channel, &hello(), &mut |_| {}).await.unwrap();
    assert_eq!(s.stub.captured().pop().unwrap().body["model"], "gpt-b");
    let fourth = third.succeed(&config(&yaml("gpt-b", budgets)), env(&[("KEY", "sk-2")]));
    assert!(!Arc::ptr_eq(&third.router_for(None), &fourth.router_for(None)));
    fourth.call(&s.tenant, None, ProcessKind::Channel, &hello(), &mut |_| {}).await.unwrap();
    assert_eq!(s.stub.captured().pop().unwrap().headers["authorization"], "Bearer sk-2");
}
