//! Parsing `clade.yaml`: defaults, every field, and errors that name file, line and field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::path::Path;

use clade_config::{Config, Durability, LogFormat};

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("clade.yaml")).map_err(|e| e.to_string())
}

#[test]
fn empty_file_means_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.listen, "127.0.0.1:7420");
    assert_eq!(config.store.durability, Durability::Full);
}

#[test]
fn every_section_parses() {
    let config = parse(
        "server:\n  listen: 0.0.0.0:9000\n  max_body_bytes: 4096\nstore:\n  url: postgres://x@h/db\n  durability: normal\nlog:\n  format: json\n  filter: debug\n",
    )
    .unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:9000");
    assert_eq!(config.server.max_body_bytes, 4096);
    assert_eq!(config.store.url.as_deref(), Some("postgres://x@h/db"));
    assert_eq!(config.store.durability, Durability::Normal);
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn unknown_key_is_an_error_with_file_line_and_field() {
    let err = parse("server:\n  listen: 127.0.0.1:1\n  lisen: oops\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:3:"), "{err}");
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn wrong_type_names_line() {
    let err = parse("server:\n  max_body_bytes: lots\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:2:"), "{err}");
}

#[test]
fn bad_enum_value_is_an_error() {
    let err = parse("store:\n  durability: sometimes\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:2:"), "{err}");
    assert!(err.contains("sometimes") || err.contains("durability"), "{err}");
}

#[test]
fn syntax_error_names_line() {
    let err = parse("server:\n  listen: [unclosed\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:"), "{err}");
}

#[test]
fn missing_file_names_path() {
    let err = Config::load(Path::new("/nonexistent/clade.yaml")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/clade.yaml"), "{err}");
}

#[test]
fn committed_schema_matches_the_types() {
    let generated = serde_json::to_string_pretty(&Config::json_schema()).unwrap() + "\n";
    clade_test_support::assert_committed("docs/clade.schema.json", &generated);
}

#[test]
fn models_routing_and_budgets_parse_and_are_checked() {
    let text = "models:\n  fast:\n    provider: openai\n    model: gpt-4o-mini\n    api_key_env: OPENAI_API_KEY\n    price: { input_per_mtok: 0.15, output_per_mtok: 0.6 }\n  local:\n    provider: openai\n    base_url: http://127.0.0.1:11434/v1\nrouting:\n  default: [fast, local]\n  worker: [local]\n  agents:\n    ada: { default: [local] }\nbudgets:\n  tenants:\n    default: { usd_per_day: 5 }\n  agents:\n    ada: { tokens_per_month: 1000000 }\n";
    let config = parse(text).unwrap();
    config.check(Path::new("clade.yaml")).unwrap();
    assert_eq!(config.routing.default, ["fast", "local"]);
    assert_eq!(config.routing.kinds.worker, ["local"]);
    assert_eq!(config.budgets.tenants["default"].usd_per_day, Some(5.0));

    let check =
        |text: &str| parse(text).unwrap().check(Path::new("clade.yaml")).unwrap_err().to_string();
    let err = check("routing:\n  default: [missing]\n");
    assert!(err.contains("routing.default") && err.contains("missing"), "{err}");
    let err = check("models:\n  m:\n    provider: anthropic\n");
    assert!(err.contains("models.m") && err.contains("api_key_env"), "{err}");
    let err =
        check("models:\n  m:\n    provider: openai\n    api_key_env: A\n    api_key_secret: B\n");
    assert!(err.contains("only one"), "{err}");
    let err = check("models:\n  m:\n    provider: scripted\n    price: { input_per_mtok: -1 }\n");
    assert!(err.contains("models.m.price"), "{err}");
    // A key in plain config is not even a field.
    let err = parse("models:\n  m:\n    provider: openai\n    api_key: sk-123\n").unwrap_err();
    assert!(err.contains("api_key"), "{err}");
}

#[test]
fn unknown_keys_in_routing_are_errors() {
    let err = parse("routing:\n  defualt: [x]\n").unwrap_err();
    assert!(err.contains("defualt"), "{err}");
    let err = parse("routing:\n  agents:\n    ada:\n      wroker: [x]\n").unwrap_err();
    assert!(err.contains("wroker"), "{err}");
}

#[test]
fn tools_and_mcp_sections_are_checked() {
    let ok = parse(
        "tools:\n  sandbox: none\n  limits: { timeout_secs: 5 }\n  policy:\n    - { effect: ask, tool: shell.exec, resource: \"git *\", constraints: { network: true, env: [TOKEN] } }\nmcp:\n  gh:\n    command: [server]\n    agents: [ada]\n",
    )
    .unwrap();
    ok.check(Path::new("clade.yaml")).unwrap();
    assert_eq!(ok.tools.policy[0].constraints.env, vec!["TOKEN".to_owned()]);
    let check =
        |text: &str| parse(text).unwrap().check(Path::new("clade.yaml")).unwrap_err().to_string();
    assert!(check("tools:\n  limits: { processes: 0 }\n").contains("tools.limits.processes"));
    assert!(
        check("tools:\n  policy:\n    - { effect: allow, tool: \"\" }\n")
            .contains("tools.policy[0]")
    );
    assert!(check("mcp:\n  Bad.Name:\n    command: [x]\n").contains("mcp.Bad.Name"));
    assert!(
        check("mcp:\n  both:\n    command: [x]\n    url: http://h/mcp\n").contains("exactly one")
    );
    assert!(check("mcp:\n  neither: {}\n").contains("exactly one"));
    assert!(!ok.mcp["gh"].network, "a stdio MCP server has no network unless configured");
    let err = parse("mcp:\n  gh:\n    command: [x]\n    network: sometimes\n").unwrap_err();
    assert!(err.contains("4:14") && err.contains("boolean"), "{err}");
    assert!(parse("tools:\n  sandbox: firejail\n").is_err());
    assert!(parse("tools:\n  policy:\n    - { effect: maybe, tool: x }\n").is_err());
}

/// Checks a configuration with one webhook subscriber that also says `field`.
fn check_subscriber(field: &str) -> Result<(), String> {
    let text = format!(
        "subscribers:\n  - name: s\n    url: http://127.0.0.1:1/\n    secret_env: S\n    {field}\n"
    );
    parse(&text).unwrap().check(Path::new("clade.yaml")).map_err(|e| e.to_string())
}

/// A webhook filter naming an event that never reaches webhooks (a typo, or a live-only delta)
/// would deliver nothing, silently: it is refused, with the names that work.
#[test]
fn subscriber_events_must_be_events_webhooks_receive() {
    let check = |events: &str| check_subscriber(&format!("events: {events}"));
    check("[turn.finished, tool.called]").unwrap();
    for bad in ["turn.finish", "text.delta", "Turn.Finished"] {
        let err = check(&format!("[{bad}]")).unwrap_err();
        assert!(err.contains("subscribers[0].events") && err.contains(bad), "{err}");
        assert!(err.contains("turn.finished"), "names the events that work: {err}");
    }
}

/// Agent patterns: a reference names one agent of one tenant, `tenant/*` a tenant's agents,
/// `*` everyone's; a bare handle is the default tenant's agent and no other tenant's.
#[test]
fn agent_patterns_cover_what_they_name() {
    use clade_config::agent_pattern_covers as covers;
    assert!(covers("ada", "default", "ada") && !covers("ada", "acme", "ada"));
    assert!(covers("acme/ada", "acme", "ada") && !covers("acme/ada", "default", "ada"));
    assert!(covers("acme/*", "acme", "bob") && !covers("acme/*", "default", "bob"));
    assert!(covers("*", "acme", "bob") && covers("*", "default", "ada"));
    assert!(!covers("acme/ada", "acme", "bob"));
    let map: std::collections::BTreeMap<String, u8> =
        [("ada".to_owned(), 1), ("acme/ada".to_owned(), 2)].into_iter().collect();
    assert_eq!(clade_config::for_agent(&map, "default", "ada"), Some(&1));
    assert_eq!(clade_config::for_agent(&map, "acme", "ada"), Some(&2));
    assert_eq!(clade_config::for_agent(&map, "globex", "ada"), None);
}

#[test]
fn subscriber_tenants_are_tenant_names_or_every_tenant() {
    let check = |tenants: &str| check_subscriber(&format!("tenants: {tenants}"));
    check("[acme, default]").unwrap();
    check("[\"*\"]").unwrap();
    let err = check("[Acme]").unwrap_err();
    assert!(err.contains("subscribers[0].tenants") && err.contains("Acme"), "{err}");
    let default =
        parse("subscribers:\n  - { name: s, url: \"http://x/\", secret_env: S }\n").unwrap();
    assert_eq!(default.subscribers[0].tenants, ["default"], "the default tenant only");
}

/// Inbound hooks: a tenant's own, named plainly, with an agent handle, a secret variable and a
/// JSON pointer; anything else is refused naming the field.
#[test]
fn tenant_hooks_are_checked() {
    let check = |tenant: &str, name: &str, hook: &str| {
        let text = format!("tenants:\n  {tenant}:\n    hooks:\n      {name}: {{ {hook} }}\n");
        parse(&text).and_then(|c| c.check(Path::new("clade.yaml")).map_err(|e| e.to_string()))
    };
    let config = parse(
        "tenants:\n  acme:\n    hooks:\n      gh: { agent: ada, secret_env: GH, scheme: clade, mode: wait, session: /repo }\n",
    )
    .unwrap();
    config.check(Path::new("clade.yaml")).unwrap();
    let hook = &config.tenants["acme"].hooks["gh"];
    assert_eq!(
        (hook.scheme, hook.mode, hook.session.as_deref()),
        (clade_config::HookScheme::Clade, clade_config::HookMode::Wait, Some("/repo"))
    );
    check("acme", "gh", "agent: ada, secret_env: GH").unwrap();
    for (tenant, name, hook, says) in [
        ("'*'", "gh", "agent: ada, secret_env: GH", "tenants.*.hooks.gh"),
        ("acme", "Big", "agent: ada, secret_env: GH", "a hook's name"),
        ("acme", "gh", "agent: Not A Handle, secret_env: GH", "hooks.gh.agent"),
        ("acme", "gh", "agent: ada, secret_env: ' '", "hooks.gh.secret_env"),
        ("acme", "gh", "agent: ada, secret_env: GH, session: repo", "JSON pointer"),
        (
            "acme",
            "gh",
            "agent: ada, secret_env: GH, scheme: hmac",
            "expected one of standard, clade",
        ),
        ("acme", "gh", "agent: ada", "secret_env"),
    ] {
        let err = check(tenant, name, hook).unwrap_err();
        assert!(err.contains(says), "{hook}: {err}");
    }
}

/// Slack apps: a token variable, and the one each mode needs.
#[test]
fn slack_apps_are_checked() {
    let check = |app: &str| {
        let text = format!("channels:\n  slack:\n    team: {{ {app} }}\n");
        parse(&text).and_then(|c| c.check(Path::new("clade.yaml")).map_err(|e| e.to_string()))
    };
    check("token_env: T, app_token_env: A").unwrap();
    check("token_env: T, mode: events, signing_secret_env: S").unwrap();
    for (app, says) in [
        ("token_env: T", "app_token_env"),
        ("token_env: T, mode: events", "signing_secret_env"),
        ("token_env: ' ', app_token_env: A", "team.token_env"),
        ("token_env: T, app_token_env: A, api_url: slack.example", "api_url"),
        ("token_env: T, app_token_env: A, max_attempts: 0", "max_attempts"),
        ("token_env: T, mode: rtm", "expected one of socket, events"),
    ] {
        let err = check(app).unwrap_err();
        assert!(err.contains(says), "{app}: {err}");
    }
    let discord = |bot: &str| {
        let text = format!("channels:\n  discord:\n    guild: {{ {bot} }}\n");
        parse(&text).and_then(|c| c.check(Path::new("clade.yaml")).map_err(|e| e.to_string()))
    };
    discord("token_env: T").unwrap();
    discord("token_env: T, mode: relay, relay_secret_env: R").unwrap();
    for (bot, says) in [
        ("token_env: T, mode: relay", "relay_secret_env"),
        ("token_env: T, mode: relay, relay_secret_env: ' '", "relay_secret_env"),
        ("token_env: T, mode: webhook", "expected one of gateway, relay"),
        ("token_env: ' '", "guild.token_env"),
        ("token_env: T, api_url: discord.example", "api_url"),
        ("token_env: T, max_attempts: 0", "max_attempts"),
        ("token_env: T, intents: 1", "unknown field"),
    ] {
        let err = discord(bot).unwrap_err();
        assert!(err.contains(says), "{bot}: {err}");
    }
}

/// Telegram bots: named plainly, a token variable, http(s) URLs, Telegram's long-poll range,
/// and a secret for webhook mode; anything else is refused naming the field.
#[test]
fn telegram_bots_are_checked() {
    let check = |name: &str, bot: &str| {
        let text = format!("channels:\n  telegram:\n    {name}: {{ {bot} }}\n");
        parse(&text).and_then(|c| c.check(Path::new("clade.yaml")).map_err(|e| e.to_string()))
    };
    let config = parse(
        "channels:\n  telegram:\n    desk: { token_env: T, mode: webhook, webhook_secret_env: S, public_url: https://x.example }\n",
    )
    .unwrap();
    config.check(Path::new("clade.yaml")).unwrap();
    let desk = &config.channels.telegram["desk"];
    assert_eq!(desk.mode, clade_config::TelegramMode::Webhook);
    assert_eq!((desk.poll_timeout_secs, desk.stream, desk.max_attempts), (25, true, 8));
    check("desk", "token_env: T").unwrap();
    for (name, bot, says) in [
        ("Desk", "token_env: T", "a name is"),
        ("desk", "token_env: ' '", "desk.token_env"),
        ("desk", "token_env: T, api_url: ftp://x", "desk.api_url"),
        ("desk", "token_env: T, poll_timeout_secs: 0", "poll_timeout_secs"),
        ("desk", "token_env: T, poll_timeout_secs: 51", "poll_timeout_secs"),
        ("desk", "token_env: T, max_attempts: 0", "max_attempts"),
        ("desk", "token_env: T, mode: webhook", "webhook_secret_env"),
        ("desk", "token_env: T, public_url: https://x.example", "only webhook mode"),
        ("desk", "token_env: T, mode: push", "expected one of polling, webhook"),
        ("desk", "mode: polling", "token_env"),
    ] {
        let err = check(name, bot).unwrap_err();
        assert!(err.contains(says), "{bot}: {err}");
    }
}

#[test]
fn memory_and_compaction_settings_are_checked() {
    // A local model is a folder under the data dir's models/, named plainly.
    let check =
        |text: &str| parse(text).unwrap().check(Path::new("clade.yaml")).map_err(|e| e.to_string());
    let ok = parse("memory:\n  embeddings: \"local:all-minilm-l6-v2\"\n  ingest: off\n").unwrap();
    ok.check(Path::new("clade.yaml")).unwrap();
    assert_eq!(ok.memory.embeddings.as_deref(), Some("local:all-minilm-l6-v2"));
    assert_eq!(ok.memory.ingest, clade_config::MemoryIngest::Off);
    for bad in ["local:../etc", "local:", "local:.hidden", "local:a/b"] {
        let err = check(&format!("memory:\n  embeddings: \"{bad}\"\n")).unwrap_err();
        assert!(err.contains("memory.embeddings") && err.contains("local model"), "{bad}: {err}");
    }
    let err = parse("memory:\n  ingest: sometimes\n").unwrap_err();
    assert!(err.contains("sometimes") || err.contains("ingest"), "{err}");
    // The thresholds must rise: keep < at < emergency <= 100.
    for bad in [
        "{ at_percent: 96, emergency_percent: 95 }",
        "{ keep_percent: 0 }",
        "{ keep_percent: 80, at_percent: 80 }",
        "{ emergency_percent: 101 }",
    ] {
        let err = check(&format!("sessions:\n  compaction: {bad}\n")).unwrap_err();
        assert!(err.contains("sessions.compaction"), "{bad}: {err}");
    }
    let err = check("models:\n  m: { provider: openai, base_url: \"http://127.0.0.1:1/v1\", context_window: 100 }\n").unwrap_err();
    assert!(err.contains("models.m.context_window"), "{err}");
}

#[test]
fn the_memory_item_limit_is_checked() {
    let check =
        |text: &str| parse(text).unwrap().check(Path::new("clade.yaml")).map_err(|e| e.to_string());
    assert_eq!(parse("").unwrap().memory.max_items_per_agent, 100_000);
    check("memory:\n  max_items_per_agent: 5\n").unwrap();
    for bad in ["0", "10000001"] {
        let err = check(&format!("memory:\n  max_items_per_agent: {bad}\n")).unwrap_err();
        assert!(err.contains("memory.max_items_per_agent"), "{bad}: {err}");
    }
}

#[test]
fn the_cortex_and_the_forks_shares_are_checked() {
    let check =
        |text: &str| parse(text).unwrap().check(Path::new("clade.yaml")).map_err(|e| e.to_string());
    let defaults = parse("").unwrap();
    assert_eq!(defaults.memory.upkeep.consolidate_at, 0, "consolidation costs calls: opt in");
    assert_eq!(defaults.sessions.worker_limits().max_tokens, 2_000_000);
    check("memory:\n  ingest: model\n  upkeep: { half_life_days: 0, prune_below: 0, consolidate_at: 20 }\n")
        .unwrap();
    for (bad, field) in [
        ("memory:\n  upkeep: { prune_below: 1 }\n", "memory.upkeep.prune_below"),
        ("memory:\n  upkeep: { half_life_days: -1 }\n", "memory.upkeep.half_life_days"),
        ("memory:\n  upkeep: { purge_after_days: 40000 }\n", "memory.upkeep.purge_after_days"),
        ("memory:\n  upkeep: { settle_secs: 90000 }\n", "memory.upkeep.settle_secs"),
        ("memory:\n  upkeep: { consolidate_at: 10001 }\n", "memory.upkeep.consolidate_at"),
        ("sessions:\n  workers: { max_tokens: 999 }\n", "sessions.workers.max_tokens"),
        ("sessions:\n  branches: { max_tokens: 100000001 }\n", "sessions.branches.max_tokens"),
    ] {
        let err = check(bad).unwrap_err();
        assert!(err.contains(field), "{bad}: {err}");
    }
}

#[test]
fn persona_variables_are_checked() {
    let check =
        |text: &str| parse(text).unwrap().check(Path::new("clade.yaml")).map_err(|e| e.to_string());
    check("tenants:\n  \"*\":\n    variables: { company: Acme, support_2: x }\n").unwrap();
    for (bad, says) in [
        ("{ Company: x }", "1-64 of a-z"),
        ("{ agent: x }", "built in"),
        ("{ \"\": x }", "1-64 of a-z"),
    ] {
        let err = check(&format!("tenants:\n  default:\n    variables: {bad}\n")).unwrap_err();
        assert!(err.contains("tenants.default.variables") && err.contains(says), "{bad}: {err}");
    }
    let long = "x".repeat(5000);
    let err =
        check(&format!("tenants:\n  default:\n    variables: {{ big: {long} }}\n")).unwrap_err();
    assert!(err.contains("4,096"), "{err}");
}

#[test]
fn a_local_model_needs_no_key() {
    let config =
        parse("models:\n  small:\n    provider: local\n    model: smollm2-135m-instruct\n")
            .unwrap();
    config.check(Path::new("clade.yaml")).unwrap();
    assert_eq!(config.models["small"].provider, clade_config::ProviderKind::Local);
    let err = parse("models:\n  small:\n    provider: llama\n").unwrap_err().to_string();
    assert!(err.contains("local"), "{err}");
}

#[test]
fn a_local_models_concurrency_is_checked() {
    let local = |n: &str| {
        parse(&format!("models:\n  small:\n    provider: local\n    concurrency: {n}\n")).unwrap()
    };
    let config = local("2");
    config.check(Path::new("clade.yaml")).unwrap();
    assert_eq!(config.models["small"].concurrency, Some(2));
    for bad in ["0", "17"] {
        let err = local(bad).check(Path::new("clade.yaml")).unwrap_err().to_string();
        assert!(err.contains("models.small.concurrency") && err.contains("1 to 16"), "{err}");
    }
    let remote = parse(
        "models:\n  big:\n    provider: openai\n    api_key_env: OPENAI_API_KEY\n    concurrency: 2\n",
    )
    .unwrap();
    let err = remote.check(Path::new("clade.yaml")).unwrap_err().to_string();
    assert!(err.contains("models.big.concurrency") && err.contains("provider: local"), "{err}");
}

#[test]
fn the_cluster_section_is_checked() {
    let check =
        |text: &str| parse(text).unwrap().check(Path::new("clade.yaml")).map_err(|e| e.to_string());
    let ok = parse("cluster:\n  node: node-1.eu\n").unwrap();
    ok.check(Path::new("clade.yaml")).unwrap();
    let cluster = ok.cluster.unwrap();
    assert_eq!((cluster.shards, cluster.lease_ttl_secs), (256, 5));
    assert_eq!(cluster.nats_url, "nats://127.0.0.1:4222");
    assert_eq!(cluster.node_name(None).unwrap(), "node-1.eu");
    assert_eq!(cluster.node_name(Some("pod-3".into())).unwrap(), "pod-3", "CLADE_NODE first");
    let nameless = clade_config::ClusterConfig::default();
    assert!(nameless.node_name(None).unwrap_err().to_string().contains("CLADE_NODE"));
    let err = nameless.node_name(Some("Pod 3".into())).unwrap_err().to_string();
    assert!(err.contains("not a node name"), "{err}");
    for (bad, field) in [
        ("{ name: \"a.b\" }", "cluster.name"),
        ("{ name: \"\" }", "cluster.name"),
        ("{ node: \"Upper\" }", "cluster.node"),
        ("{ nats_url: \"http://127.0.0.1:4222\" }", "cluster.nats_url"),
        ("{ nats_url: \"127.0.0.1:4222\" }", "cluster.nats_url"),
        ("{ shards: 0 }", "cluster.shards"),
        ("{ shards: 65537 }", "cluster.shards"),
        ("{ lease_ttl_secs: 0 }", "cluster.lease_ttl_secs"),
        ("{ lease_ttl_secs: 301 }", "cluster.lease_ttl_secs"),
        ("{ nats_password_env: \"A=B\" }", "cluster.nats_password_env"),
    ] {
        let err = check(&format!("cluster: {bad}\n")).unwrap_err();
        assert!(err.contains(field), "{bad}: {err}");
    }
    assert!(parse("cluster:\n  nodes: 3\n").unwrap_err().contains("nodes"));
    // The assignment: even by default, bin_pack by choice, anything else refused by name.
    assert_eq!(cluster.assignment, clade_config::ShardAssignment::Even);
    let packed = parse("cluster:\n  assignment: bin_pack\n").unwrap().cluster.unwrap();
    assert_eq!(packed.assignment, clade_config::ShardAssignment::BinPack);
    let err = parse("cluster:\n  assignment: round_robin\n").unwrap_err();
    assert!(err.contains("round_robin") && err.contains("bin_pack"), "{err}");
}

/// `server.traces`: an endpoint that is no http(s) URL, a header name that cannot be one, and
/// numbers out of range are each refused naming the field; a good one parses with its defaults.
#[test]
fn traces_settings_are_checked() {
    let check = |traces: &str| {
        let text = format!("server:\n  traces:\n{traces}");
        parse(&text)?.check(Path::new("clade.yaml")).map_err(|e| e.to_string())
    };
    check("    endpoint: http://127.0.0.1:4318\n").unwrap();
    let config =
        parse("server:\n  traces:\n    endpoint: https://otel.example:4317\n    protocol: grpc\n")
            .unwrap();
    let traces = config.server.traces.unwrap();
    assert_eq!((traces.protocol, traces.content), (clade_config::OtlpProtocol::Grpc, false));
    assert_eq!((traces.service_name.as_str(), traces.timeout_secs), ("clade", 10));
    for (bad, field) in [
        ("    endpoint: 127.0.0.1:4318\n", "server.traces.endpoint"),
        ("    endpoint: 'http:// spaced'\n", "server.traces.endpoint"),
        ("    endpoint: http://h\n    timeout_secs: 0\n", "server.traces.timeout_secs"),
        ("    endpoint: http://h\n    max_attempts: 1000\n", "server.traces.max_attempts"),
        ("    endpoint: http://h\n    service_name: ' '\n", "server.traces.service_name"),
        (
            "    endpoint: http://h\n    headers_env:\n      'bad name': V\n",
            "server.traces.headers_env",
        ),
        (
            "    endpoint: http://h\n    headers_env:\n      x-key: ''\n",
            "server.traces.headers_env.x-key",
        ),
    ] {
        let err = check(bad).unwrap_err();
        assert!(err.contains(field), "{bad:?}: {err}");
    }
    let err = check("    endpoint: http://h\n    protocol: thrift\n").unwrap_err();
    assert!(err.contains("thrift"), "{err}");
}
