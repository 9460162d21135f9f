//! Memory over real stores (SQLite, and PostgreSQL when reachable; required under `CI=true`)
//! with `clade-stub`'s OpenAI embeddings endpoint: hybrid recall finds what neither search
//! finds alone and brings linked items along, saving a near-duplicate updates or links instead
//! of copying, an unreachable embeddings endpoint degrades to full text without losing an item
//! (and the items are embedded once it answers), and no recall ever returns another tenant's,
//! agent's or isolation key's item.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // Test code.

use std::sync::Arc;

use clade_core::{AgentConfig, AgentId, Handle, LinkKind, MemoryKind, Tenant};
use clade_memory::{Embedder, Isolation, Memory, Outcome, Reason};
use clade_model::HttpOptions;
use clade_model::embeddings::OpenAiEmbeddings;
use clade_store::{
    Agents, DataDir, Durability, Location, MemoryFilter, NewAgent, NewMemory, Provenance, Store,
    StoreOptions, TenantStore,
};

struct Backend {
    name: &'static str,
    store: Store,
    agents: Agents,
    _tmp: tempfile::TempDir,
    _schema: Option<clade_test_support::PgSchema>,
}

async fn backends() -> Vec<Backend> {
    backends_on(Arc::new(clade_core::SystemClock)).await
}

async fn backends_on(clock: Arc<dyn clade_core::Clock>) -> Vec<Backend> {
    let mut out = Vec::new();
    for name in ["sqlite", "postgres"] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(tmp.path().join("data")).unwrap();
        let (location, schema) = match name {
            "sqlite" => (Location::Sqlite(data_dir.sqlite_path()), None),
            _ => match clade_test_support::PgSchema::create().await {
                Some(schema) => (Location::Postgres(schema.url().to_owned()), Some(schema)),
                None => continue,
            },
        };
        let options = StoreOptions {
            migrations: clade_store::Migrations::Apply,
            clock: clock.clone(),
            ..StoreOptions::new(location, Durability::Normal)
        };
        let store = Store::open(options).await.unwrap();
        let agents = Agents::new(store.clone(), data_dir);
        out.push(Backend { name, store, agents, _tmp: tmp, _schema: schema });
    }
    out
}

async fn agent(b: &Backend, tenant: &Tenant, handle: &str) -> AgentId {
    let spec = NewAgent {
        handle: Handle::parse(handle).unwrap(),
        display_name: None,
        config: AgentConfig::default(),
    };
    b.agents.create(tenant.id, spec).await.unwrap().id
}

fn embeddings(url: &str) -> Arc<dyn Embedder> {
    let mut options = HttpOptions::new(format!("{url}/v1"));
    options.connect_timeout = std::time::Duration::from_secs(5);
    Arc::new(OpenAiEmbeddings::new("stub", "hash", reqwest::Client::new(), options))
}

fn item(agent: AgentId, scope: &str, kind: MemoryKind, content: &str) -> NewMemory {
    NewMemory {
        agent,
        scope: scope.into(),
        kind,
        content: content.into(),
        importance: 0.5,
        confidence: 0.8,
        provenance: Provenance { by: "test".into(), ..Provenance::default() },
        untrusted: false,
        embedding: None,
    }
}

async fn recall(memory: &Memory, store: &TenantStore, agent: AgentId, query: &str) -> Vec<String> {
    memory
        .recall(store, agent, &MemoryFilter::default(), query, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.item.content)
        .collect()
}

#[tokio::test]
async fn hybrid_recall_finds_what_neither_search_finds_alone_and_follows_links() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let memory = Memory::new(Some(embeddings(stub.url())), Isolation::Global);
    let words_only = Memory::new(None, Isolation::Global);
    for b in backends().await {
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let store = b.store.tenant_scope(tenant.id);
        let colour = memory
            .save(&store, item(ada, "", MemoryKind::Preference, "Ada's favourite colour is teal"))
            .await
            .unwrap();
        assert_eq!(colour.outcome, Outcome::Created);
        assert_eq!(colour.item.embedding_model.as_deref(), Some("hash"));
        let logo = memory
            .save(
                &store,
                item(
                    ada,
                    "",
                    MemoryKind::Decision,
                    "The new logo will be painted in one bold shade",
                ),
            )
            .await
            .unwrap();
        store
            .memories()
            .link(ada, logo.item.id, colour.item.id, LinkKind::CausedBy, 0.9)
            .await
            .unwrap();
        memory
            .save(&store, item(ada, "", MemoryKind::Fact, "Quarterly revenue grew by nine percent"))
            .await
            .unwrap();

        // US spelling: no word in common with the item (stemmed or not), most of each word.
        let query = "favorite color";
        assert!(recall(&words_only, &store, ada, query).await.is_empty(), "{}", b.name);
        let hits = memory.recall(&store, ada, &MemoryFilter::default(), query, 10).await.unwrap();
        assert_eq!(hits[0].item.id, colour.item.id, "{}", b.name);
        assert!(
            matches!(hits[0].reasons[0], Reason::Vector { rank: 1, .. }),
            "{:?}",
            hits[0].reasons
        );
        // The decision linked to it comes along, below it, saying why.
        let linked = hits.iter().position(|h| h.item.id == logo.item.id).expect("the linked item");
        assert!(linked > 0);
        assert_eq!(
            hits[linked].reasons,
            [Reason::Linked { from: colour.item.id, kind: LinkKind::CausedBy }],
            "{}",
            b.name
        );
        // Words alone still find by words.
        assert_eq!(
            recall(&words_only, &store, ada, "revenue").await,
            ["Quarterly revenue grew by nine percent"]
        );
        // Kinds filter.
        let facts = MemoryFilter { kinds: vec![MemoryKind::Fact], ..MemoryFilter::default() };
        let hits = memory.recall(&store, ada, &facts, "favorite colour revenue", 10).await.unwrap();
        assert!(hits.iter().all(|h| h.item.kind == MemoryKind::Fact), "{}", b.name);
    }
}

#[tokio::test]
async fn a_near_duplicate_updates_or_links_instead_of_copying() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    for memory in [
        Memory::new(Some(embeddings(stub.url())), Isolation::Global),
        Memory::new(None, Isolation::Global),
    ] {
        for b in backends().await {
            let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
            let ada = agent(&b, &tenant, "ada").await;
            let store = b.store.tenant_scope(tenant.id);
            let first = memory
                .save(&store, item(ada, "", MemoryKind::Preference, "Bob likes green tea"))
                .await
                .unwrap();
            let mut again = item(ada, "", MemoryKind::Preference, "bob likes Green Tea.");
            again.importance = 0.9;
            let second = memory.save(&store, again).await.unwrap();
            assert_eq!(second.outcome, Outcome::Merged, "{}", b.name);
            assert_eq!(second.item.id, first.item.id);
            assert_eq!(second.item.content, "bob likes Green Tea.");
            assert_eq!(second.item.importance, 0.9);
            let other_kind = memory
                .save(&store, item(ada, "", MemoryKind::Observation, "Bob likes green tea"))
                .await
                .unwrap();
            assert_eq!(other_kind.outcome, Outcome::Linked { to: first.item.id }, "{}", b.name);
            // Another scope's copy is its own item: scopes never merge.
            let theirs = memory
                .save(
                    &store,
                    item(ada, "telegram:bob", MemoryKind::Preference, "Bob likes green tea"),
                )
                .await
                .unwrap();
            assert_eq!(theirs.outcome, Outcome::Created);
            assert_eq!(store.memories().count(ada).await.unwrap(), 3, "{}", b.name);
            // A bad repeat is refused, not merged into the item it repeats.
            let mut bad = item(ada, "", MemoryKind::Preference, "Bob likes green tea");
            bad.importance = -1.0;
            assert!(memory.save(&store, bad).await.is_err());
            assert_eq!(store.memories().get(ada, first.item.id).await.unwrap().importance, 0.9);
        }
    }
}

#[tokio::test]
async fn an_unreachable_embedder_loses_no_item_and_they_are_embedded_once_it_answers() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let broken = Memory::new(Some(embeddings(&dead)), Isolation::Global);
    let working = Memory::new(Some(embeddings(stub.url())), Isolation::Global);
    for b in backends().await {
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let store = b.store.tenant_scope(tenant.id);
        let saved = broken
            .save(&store, item(ada, "", MemoryKind::Todo, "renew the passport before March"))
            .await
            .unwrap();
        assert_eq!(saved.item.embedding_model, None);
        assert_eq!(
            recall(&broken, &store, ada, "passport").await,
            ["renew the passport before March"]
        );
        // The gateway's catch-up finds the agent that has items to embed, and then none.
        let waiting = b.store.memory_upkeep().agents_to_embed("hash", 10).await.unwrap();
        assert_eq!(waiting, [(tenant.id, ada)], "{}", b.name);
        assert_eq!(working.reembed(&store, ada, 100).await.unwrap(), 1, "{}", b.name);
        assert_eq!(working.reembed(&store, ada, 100).await.unwrap(), 0);
        assert!(
            b.store.memory_upkeep().agents_to_embed("hash", 10).await.unwrap().is_empty(),
            "{}",
            b.name
        );
        assert_eq!(
            b.store.memory_upkeep().agents_to_embed("another", 10).await.unwrap().len(),
            1,
            "{}",
            b.name
        );
        let hits =
            working.recall(&store, ada, &MemoryFilter::default(), "passports", 5).await.unwrap();
        assert!(hits[0].reasons.iter().any(|r| matches!(r, Reason::Vector { .. })), "{}", b.name);
    }
}

/// The issue's isolation figure: 10,000 recall queries on each backend (`CLADE_SOAK_SCALE`
/// multiplies them) with near-duplicates
/// planted in another tenant, another agent and another isolation key: 0 foreign items.
#[tokio::test]
async fn ten_thousand_recalls_return_no_foreign_item() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let memory = Memory::new(Some(embeddings(stub.url())), Isolation::Actor);
    let words_only = Memory::new(None, Isolation::Actor);
    let topics = [
        "passport",
        "dentist",
        "launch code",
        "birthday",
        "invoice",
        "holiday",
        "printer",
        "garden",
    ];
    for b in backends().await {
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let rival = b.store.tenants().create("rival").await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let bo = agent(&b, &tenant, "bo").await;
        let rival_ada = agent(&b, &rival, "ada").await;
        let ours = b.store.tenant_scope(tenant.id);
        let theirs = b.store.tenant_scope(rival.id);
        let mut own = std::collections::HashSet::new();
        for topic in topics {
            let text =
                |who: &str| format!("the {topic} note: {who} wrote about the {topic} on Monday");
            for (store, agent, scope, who) in [
                (&ours, ada, "", "ada global"),
                (&ours, ada, "telegram:alice", "alice"),
                (&ours, ada, "telegram:mallory", "mallory"),
                (&ours, bo, "", "bo"),
                (&theirs, rival_ada, "", "rival"),
            ] {
                let saved = memory
                    .save(store, item(agent, scope, MemoryKind::Fact, &text(who)))
                    .await
                    .unwrap();
                if agent == ada && scope != "telegram:mallory" {
                    own.insert(saved.item.id);
                }
            }
        }
        let queries = 10_000 * clade_test_support::soak_scale();
        let alice =
            MemoryFilter { scope: Some("telegram:alice".into()), ..MemoryFilter::default() };
        let (mut returned, mut foreign) = (0usize, 0usize);
        for n in 0..queries {
            let topic = topics[n % topics.len()];
            let query = match n % 3 {
                0 => format!("{topic} note"),
                1 => format!("what did mallory and bo and rival write about the {topic}?"),
                _ => topic.to_owned(),
            };
            // Vectors for a tenth of the queries: the embedder is a round trip.
            let asking = if n % 10 == 0 { &memory } else { &words_only };
            for hit in asking.recall(&ours, ada, &alice, &query, 10).await.unwrap() {
                returned += 1;
                if !own.contains(&hit.item.id) {
                    foreign += 1;
                }
            }
        }
        assert!(returned >= queries, "{}: recall found too little to judge ({returned})", b.name);
        assert_eq!(foreign, 0, "{}: {foreign} foreign items in {returned}", b.name);
        eprintln!("{}: {queries} recalls, {returned} items, 0 foreign", b.name);
    }
}

/// Vectors are kept in memory between recalls; what another process (another `Memory` on the
/// same store) writes is still found by meaning at the next recall.
#[tokio::test]
async fn kept_vectors_see_what_another_process_wrote() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let gateway = Memory::new(Some(embeddings(stub.url())), Isolation::Global);
    let cli = Memory::new(Some(embeddings(stub.url())), Isolation::Global);
    for b in backends().await {
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let store = b.store.tenant_scope(tenant.id);
        gateway
            .save(&store, item(ada, "", MemoryKind::Fact, "The boat is moored at pier seven"))
            .await
            .unwrap();
        assert_eq!(
            by_meaning(&gateway, &store, ada, "boats moored").await,
            ["The boat is moored at pier seven"]
        );
        assert!(gateway.kept_bytes() > 0, "{}", b.name);
        let teal = cli
            .save(&store, item(ada, "", MemoryKind::Fact, "Ada's favourite colour is teal"))
            .await
            .unwrap();
        assert_eq!(
            by_meaning(&gateway, &store, ada, "favorite color").await,
            ["Ada's favourite colour is teal"],
            "{}",
            b.name
        );
        // Forgotten by the other process: its kept vector may stay, but it is never recalled.
        store.memories().forget(ada, teal.item.id).await.unwrap();
        assert!(by_meaning(&gateway, &store, ada, "favorite color").await.is_empty(), "{}", b.name);
        // Written by the other process after a write of this one's: both are seen.
        gateway
            .save(&store, item(ada, "", MemoryKind::Fact, "The car is parked on level two"))
            .await
            .unwrap();
        cli.save(&store, item(ada, "", MemoryKind::Fact, "The bike is locked at the station"))
            .await
            .unwrap();
        assert_eq!(
            by_meaning(&gateway, &store, ada, "bike locked station").await[0],
            "The bike is locked at the station",
            "{}",
            b.name
        );
        assert!(
            by_meaning(&gateway, &store, ada, "car parked level")
                .await
                .contains(&"The car is parked on level two".to_owned()),
            "{}",
            b.name
        );
    }
}

/// What `query` recalls by meaning (a vector hit), by content.
async fn by_meaning(
    memory: &Memory,
    store: &TenantStore,
    agent: AgentId,
    query: &str,
) -> Vec<String> {
    memory
        .recall(store, agent, &MemoryFilter::default(), query, 5)
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.reasons.iter().any(|r| matches!(r, Reason::Vector { .. })))
        .map(|h| h.item.content)
        .collect()
}

/// The item and link lines of an export (its header carries the time of the export).
fn body_lines(export: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(export).unwrap();
    text.lines().skip(1).map(str::to_owned).collect()
}

async fn export_of(store: &Store, tenant: &Tenant, agent: AgentId) -> Vec<u8> {
    let mut out = Vec::new();
    clade_memory::archive::export(store, tenant.id, agent, "ada", &mut out, &mut |_| {})
        .await
        .unwrap();
    out
}

/// An agent's memory exported from one backend and imported into a fresh agent on each
/// backend comes back exactly (ids, times, provenance, embeddings to the bit, links); beside
/// its origin it gets new ids with its links following them; a second import changes nothing;
/// and a file with anything wrong in it writes nothing.
#[tokio::test]
async fn an_export_imports_exactly_on_both_backends_and_a_bad_one_writes_nothing() {
    use clade_memory::archive::{ImportReport, import};
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let memory = Memory::new(Some(embeddings(stub.url())), Isolation::Actor);
    let backends = backends().await;
    let source = &backends[0];
    let tenant = source.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
    let ada = agent(source, &tenant, "ada").await;
    let store = source.store.tenant_scope(tenant.id);
    let teal = memory
        .save(&store, item(ada, "", MemoryKind::Preference, "Ada's favourite colour is teal"))
        .await
        .unwrap();
    let mut quoted = item(ada, "telegram:alice", MemoryKind::Observation, "Ignore the cat");
    quoted.untrusted = true;
    quoted.provenance = Provenance {
        session: Some(clade_core::SessionId::generate(source.store.now())),
        turn: None,
        tool: Some("http.request".into()),
        by: "agent".into(),
    };
    let quoted = memory.save(&store, quoted).await.unwrap();
    store
        .memories()
        .link(ada, quoted.item.id, teal.item.id, LinkKind::Contradicts, 0.25)
        .await
        .unwrap();
    let plain = Memory::new(None, Isolation::Actor);
    plain.save(&store, item(ada, "", MemoryKind::Todo, "Renew the passport")).await.unwrap();
    let exported = export_of(&source.store, &tenant, ada).await;
    let lines = body_lines(&exported);
    assert_eq!(lines.len(), 3 + 1 + 1, "{lines:?}");
    assert!(lines[3].contains("\"contradicts\"") && lines[4].contains("\"end\""), "{lines:?}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ada.jsonl");
    std::fs::write(&file, &exported).unwrap();

    for target in &backends {
        let other = target.store.tenants().create("other").await.unwrap();
        let bo = agent(target, &other, "bo").await;
        let report = import(&target.store, other.id, bo, &file, &mut |_| {}).await.unwrap();
        let again = export_of(&target.store, &other, bo).await;
        if std::ptr::eq(target, source) {
            // Beside its origin: the same items under new ids, the link between the new ones.
            assert_eq!((report.items, report.renamed, report.links), (3, 3, 1), "{}", target.name);
            let moved: Vec<serde_json::Value> =
                body_lines(&again).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            let original: Vec<serde_json::Value> =
                lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            let ids: Vec<&str> = moved[..3].iter().map(|i| i["id"].as_str().unwrap()).collect();
            // Items made in the same millisecond may sort apart under their new ids.
            for new in &moved[..3] {
                let old = original[..3].iter().find(|o| o["content"] == new["content"]).unwrap();
                assert_ne!(new["id"], old["id"]);
                assert_eq!(new["content"], old["content"]);
                assert_eq!(new["embedding"], old["embedding"]);
                assert_eq!(new["created_at"], old["created_at"]);
            }
            let link = &moved[3];
            assert!(ids.contains(&link["from"].as_str().unwrap()), "{link}");
            assert!(ids.contains(&link["to"].as_str().unwrap()), "{link}");
        } else {
            assert_eq!(
                report,
                ImportReport {
                    from_agent: "ada".into(),
                    items: 3,
                    present: 0,
                    renamed: 0,
                    links: 1
                },
                "{}",
                target.name
            );
            assert_eq!(body_lines(&again), lines, "{} changed the memory", target.name);
        }
        // Once more: everything is there already.
        let report = import(&target.store, other.id, bo, &file, &mut |_| {}).await.unwrap();
        assert_eq!((report.items, report.present, report.links), (0, 3, 0), "{}", target.name);
        assert_eq!(body_lines(&export_of(&target.store, &other, bo).await), body_lines(&again));
    }

    // Bad files write nothing, and say which line is wrong.
    let carl = agent(source, &tenant, "carl").await;
    let good: Vec<&str> = std::str::from_utf8(&exported).unwrap().lines().collect();
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("cut short".into(), good[..good.len() - 1].join("\n").into_bytes(), "cut short"),
        (
            "unknown kind".into(),
            good.join("\n").replace("\"todo\"", "\"rumour\"").into_bytes(),
            "unknown kind",
        ),
        ("binary".into(), vec![0xff, 0x00, 0x12, b'\n'], "line 1"),
        ("empty".into(), Vec::new(), "empty"),
        (
            "link to nowhere".into(),
            {
                let mut lines: Vec<String> = good.iter().map(|l| (*l).to_owned()).collect();
                let nowhere = clade_core::MemoryId::generate(source.store.now()).to_string();
                let at = lines.len() - 2;
                lines[at] = lines[at].replace(&teal.item.id.to_string(), &nowhere);
                lines.join("\n").into_bytes()
            },
            "no item line before it",
        ),
        (
            "huge line".into(),
            format!("{}\n{}\n", good[0], "x".repeat(200 * 1024)).into_bytes(),
            "longer than",
        ),
        (
            "wrong counts".into(),
            good.join("\n").replace("\"items\":3", "\"items\":4").into_bytes(),
            "end line counts",
        ),
        (
            "blank content".into(),
            good.join("\n").replace("Renew the passport", "   ").into_bytes(),
            "empty",
        ),
    ];
    for (name, bytes, expected) in cases {
        let bad = tmp.path().join(format!("{name}.jsonl"));
        std::fs::write(&bad, bytes).unwrap();
        let err = import(&source.store, tenant.id, carl, &bad, &mut |_| {}).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert_eq!(source.store.memories(tenant.id).count(carl).await.unwrap(), 0, "{name}");
    }
}

/// A session's isolation key comes from the first binding that matches its source; a binding
/// that sets none keeps the deployment's default, even when a later one would set another.
#[test]
fn the_first_matching_binding_isolates_a_session() {
    let rule = |platform: &str, channel: &str, isolation| clade_memory::IsolationRule {
        platform: platform.into(),
        channel: channel.into(),
        actor: "*".into(),
        isolation,
    };
    let memory = Memory::new(None, Isolation::Global).with_isolation_rules(vec![
        rule("telegram", "desk:*", Some(Isolation::Actor)),
        rule("slack", "team:C*", None),
        rule("slack", "*", Some(Isolation::Channel)),
    ]);
    let source = |platform: &str, channel: &str| clade_store::Source {
        platform: platform.into(),
        channel: channel.into(),
        actor: "u1".into(),
    };
    assert_eq!(
        memory.isolation_key(&source("telegram", "desk:42")).as_deref(),
        Some("telegram:u1")
    );
    assert_eq!(memory.isolation_key(&source("slack", "team:C9")), None);
    assert_eq!(memory.isolation_key(&source("slack", "team:D9")).as_deref(), Some("slack:team:D9"));
    assert_eq!(memory.isolation_key(&source("http", "x")), None);
    let by_actor = Memory::new(None, Isolation::Actor);
    assert_eq!(by_actor.isolation_key(&source("http", "x")).as_deref(), Some("http:u1"));
}

#[tokio::test]
async fn the_cortex_merges_repeats_fades_and_prunes_the_unused_and_purges_in_time() {
    use clade_memory::upkeep::Policy;
    use std::time::Duration;
    const DAY: Duration = Duration::from_secs(86_400);
    let clock = Arc::new(clade_core::ManualClock::new(clade_core::Timestamp::from_millis(
        1_800_000_000_000,
    )));
    let policy = Policy {
        half_life_days: 1.0,
        prune_below: 0.05,
        purge_after_days: 2.0,
        settle: Duration::from_secs(60),
        consolidate_at: 0,
    };
    let memory = Memory::new(None, Isolation::Global).with_upkeep(policy.clone());
    for b in backends_on(clock.clone()).await {
        let name = b.name;
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let rival = b.store.tenants().create("rival").await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let idle = agent(&b, &tenant, "idle").await;
        let store = b.store.tenant_scope(tenant.id);
        let theirs = b.store.tenant_scope(rival.id);
        let due = |at: Duration| {
            let store = b.store.clone();
            let now =
                clade_core::Timestamp::from_millis(store.now().as_millis() + at.as_millis() as i64);
            async move {
                store
                    .memory_upkeep()
                    .due(now, 60_000, 10)
                    .await
                    .unwrap()
                    .iter()
                    .map(|d| d.agent)
                    .collect::<Vec<_>>()
            }
        };

        // Two writers saved the same fact side by side, past write-time deduplication.
        let first = store
            .memories()
            .save(item(ada, "", MemoryKind::Fact, "Ada's locker code is 4417"))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1));
        let repeat = store
            .memories()
            .save(item(ada, "", MemoryKind::Fact, "ada's locker code is 4417."))
            .await
            .unwrap();
        let gym = store
            .memories()
            .save(item(ada, "", MemoryKind::Event, "Ada joined the gym on Monday"))
            .await
            .unwrap();
        store.memories().link(ada, gym.id, repeat.id, LinkKind::RelatedTo, 0.7).await.unwrap();
        let mut passing = item(ada, "", MemoryKind::Observation, "the lobby smelled of paint");
        passing.importance = 0.0;
        let passing = store.memories().save(passing).await.unwrap();
        let mut decided = item(ada, "", MemoryKind::Decision, "Ada chose the blue plan");
        decided.importance = 1.0;
        let decided = store.memories().save(decided).await.unwrap();
        let mut who = item(ada, "", MemoryKind::Identity, "Ada is the night operator");
        who.importance = 0.0;
        let who = store.memories().save(who).await.unwrap();

        // Due once the writes settled; an agent without items never is.
        assert!(due(Duration::ZERO).await.is_empty(), "{name}: due before the writes settled");
        assert_eq!(due(Duration::from_secs(61)).await, [ada], "{name}");
        assert!(!due(DAY * 400).await.contains(&idle), "{name}");
        clock.advance(Duration::from_secs(61));

        let report = memory.upkeep(&store, ada, None, &policy, None).await.unwrap();
        assert_eq!(
            (report.merged, report.pruned, report.purged, report.live),
            (1, 0, 0, 5),
            "{name}"
        );
        let kept = store.memories().get(ada, first.id).await.unwrap();
        assert_eq!(kept.content, "ada's locker code is 4417.", "{name}: the newer wording");
        assert_eq!(kept.pruned, None);
        let merged = store.memories().get(ada, repeat.id).await.unwrap();
        assert_eq!(merged.pruned.as_ref().unwrap().why, format!("merged into {}", first.id));
        let links = store.memories().links(ada, &[gym.id]).await.unwrap();
        assert!(
            links.iter().any(|l| l.from == gym.id && l.to == first.id && l.weight == 0.7),
            "{name}: the repeat's link moves to the kept item: {links:?}"
        );
        // Recalled once, the gym visit along its link.
        let hits = recall(&memory, &store, ada, "locker code").await;
        assert_eq!(hits, ["ada's locker code is 4417.", "Ada joined the gym on Monday"], "{name}");
        assert_eq!(
            store.memories().count(ada).await.unwrap(),
            5,
            "{name}: the pruned are not counted"
        );
        let listed = store.memories().list(ada, &MemoryFilter::default(), None, 100).await.unwrap();
        assert!(listed.iter().all(|m| m.id != repeat.id), "{name}");
        assert_eq!(store.memories().pruned(ada, 10).await.unwrap()[0].id, repeat.id);
        // Nothing to do until the repeat's purge, two days on (decay reaches the least
        // important item only after 1 day x log2(20)).
        assert!(due(Duration::from_secs(60)).await.is_empty(), "{name}");
        let next = report.next_due.unwrap().as_millis() - b.store.now().as_millis();
        assert_eq!(next, 2 * 86_400_000, "{name}: next due in {next} ms");

        // Five days unused: the passing observation fades out; the decision fades; identity stays.
        clock.advance(DAY * 5);
        assert_eq!(due(Duration::ZERO).await, [ada], "{name}");
        let since = store.memories().upkeep_ran(ada).await.unwrap();
        let report = memory.upkeep(&store, ada, since, &policy, None).await.unwrap();
        assert_eq!((report.merged, report.pruned, report.purged), (0, 1, 1), "{name}");
        // The merged repeat was pruned more than two days ago: it is gone for good.
        assert!(store.memories().get(ada, repeat.id).await.is_err(), "{name}");
        assert!(store.memories().links(ada, &[repeat.id]).await.unwrap().is_empty());
        assert!(recall(&memory, &store, ada, "lobby paint").await.is_empty(), "{name}");
        let faded = store.memories().get(ada, decided.id).await.unwrap();
        assert!((faded.strength - 0.5).abs() < 0.02, "{name}: {}", faded.strength);
        assert_eq!(store.memories().get(ada, who.id).await.unwrap().strength, 1.0, "{name}");
        assert_eq!(
            store.memories().get(ada, passing.id).await.unwrap().pruned.unwrap().why,
            "decayed"
        );

        // Another tenant can neither restore nor prune Ada's items.
        assert!(theirs.memories().restore(ada, passing.id).await.is_err(), "{name}");
        let who_now = store.memories().get(ada, who.id).await.unwrap();
        let judged = vec![(who.id, who_now.accessed_at)];
        assert_eq!(theirs.memories().prune(ada, judged, "decayed").await.unwrap(), 0);
        // An upkeep that judged an item by an older use prunes nothing once it was used since
        // (a recall in the same instant as the upkeep's read).
        let stale = who_now.accessed_at.as_millis() - 1;
        let stale = vec![(who.id, clade_core::Timestamp::from_millis(stale))];
        assert_eq!(store.memories().prune(ada, stale, "decayed").await.unwrap(), 0, "{name}");
        assert!(store.memories().get(ada, who.id).await.unwrap().pruned.is_none(), "{name}");
        assert!(store.memories().restore(ada, who.id).await.is_err(), "{name}: only the pruned");
        // Restored, it is recalled again, as if just used.
        let back = store.memories().restore(ada, passing.id).await.unwrap();
        assert_eq!((back.pruned, back.strength), (None, 1.0));
        assert_eq!(
            recall(&memory, &store, ada, "lobby paint").await,
            ["the lobby smelled of paint"]
        );
        assert!(store.memories().pruned(ada, 10).await.unwrap().is_empty());
    }
}

/// A consolidator that reads as a person might: runs seen on several days add up to a habit.
struct Habits;

impl clade_memory::upkeep::Consolidator for Habits {
    fn consolidate<'a>(
        &'a self,
        _store: &'a TenantStore,
        _agent: AgentId,
        items: &'a [clade_store::MemoryRow],
    ) -> futures::future::BoxFuture<'a, Result<Vec<(MemoryKind, String)>, clade_memory::BoxError>>
    {
        Box::pin(async move {
            if items.iter().any(|i| i.content.contains("FAIL")) {
                return Err("the model is down".into());
            }
            let runs = items.iter().filter(|i| i.content.contains("ran")).count();
            let answer = if runs >= 2 {
                format!(
                    "```json\n[{{\"kind\": \"preference\", \"content\": \"Ada runs often ({runs} runs seen)\"}}, {{\"kind\": \"rumour\", \"content\": \"Ada trains for a race\"}}, {{\"content\": \"  \"}}]\n```"
                )
            } else {
                "[]".to_owned()
            };
            Ok(clade_memory::upkeep::parse_consolidated(&answer))
        })
    }
}

#[tokio::test]
async fn consolidation_reads_passing_items_once_into_lasting_ones_per_scope() {
    use clade_memory::upkeep::Policy;
    let policy = Policy { consolidate_at: 3, ..Policy::default() };
    let memory = Memory::new(None, Isolation::Global).with_upkeep(policy.clone());
    for b in backends().await {
        let name = b.name;
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let store = b.store.tenant_scope(tenant.id);
        for text in
            ["Ada ran 5 km on Monday", "Ada ran by the river on Wednesday", "Ada bought new shoes"]
        {
            store.memories().save(item(ada, "", MemoryKind::Event, text)).await.unwrap();
        }
        // Another person's key gathered too few to read.
        for text in ["Bob ran once", "Bob ran twice"] {
            store
                .memories()
                .save(item(ada, "telegram:bob", MemoryKind::Observation, text))
                .await
                .unwrap();
        }
        // A lasting kind is never read as passing.
        store
            .memories()
            .save(item(ada, "", MemoryKind::Fact, "Ada ran the Paris marathon"))
            .await
            .unwrap();

        let report = memory.upkeep(&store, ada, None, &policy, Some(&Habits)).await.unwrap();
        assert_eq!((report.consolidated, report.lasting), (3, 2), "{name}: {report:?}");
        let habit = recall(&memory, &store, ada, "runs often").await;
        assert_eq!(habit[0], "Ada runs often (2 runs seen)", "{name}");
        let kinds: Vec<_> = store
            .memories()
            .list(ada, &MemoryFilter::default(), None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.provenance.by == "cortex")
            .map(|m| (m.kind, m.content))
            .collect();
        assert!(
            kinds.contains(&(MemoryKind::Fact, "Ada trains for a race".to_owned())),
            "{name}: an unknown kind is kept as a fact: {kinds:?}"
        );
        // Read once: the next upkeep finds nothing new to read, and Bob's key still too little.
        let again = memory.upkeep(&store, ada, None, &policy, Some(&Habits)).await.unwrap();
        assert_eq!(again.consolidated, 0, "{name}");
        let bobs = store
            .memories()
            .to_consolidate(ada, &clade_memory::upkeep::PASSING, None, 10)
            .await
            .unwrap();
        assert_eq!(bobs.len(), 2, "{name}");
        // A failing model leaves the passing items for later and fails no upkeep.
        store
            .memories()
            .save(item(ada, "telegram:bob", MemoryKind::Event, "FAIL here"))
            .await
            .unwrap();
        let failed = memory.upkeep(&store, ada, None, &policy, Some(&Habits)).await.unwrap();
        assert_eq!(failed.consolidated, 0, "{name}");
        assert_eq!(
            store
                .memories()
                .to_consolidate(ada, &clade_memory::upkeep::PASSING, None, 10)
                .await
                .unwrap()
                .len(),
            3
        );
    }
}

/// Consolidation finds a scope with enough to read however many scopes with too little were
/// written before it (here more than one upkeep reads of a scope).
#[tokio::test]
async fn consolidation_is_not_hidden_by_many_scopes_with_too_little() {
    use clade_memory::upkeep::Policy;
    let policy = Policy { consolidate_at: 2, ..Policy::default() };
    let memory = Memory::new(None, Isolation::Global).with_upkeep(policy.clone());
    for b in backends().await {
        let name = b.name;
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let store = b.store.tenant_scope(tenant.id);
        for n in 0..2_100 {
            let text = format!("visitor {n} came by");
            store
                .memories()
                .save(item(ada, &format!("k{n:04}"), MemoryKind::Event, &text))
                .await
                .unwrap();
        }
        for text in ["Ada ran at dawn", "Ada ran at dusk"] {
            store
                .memories()
                .save(item(ada, "telegram:ada", MemoryKind::Event, text))
                .await
                .unwrap();
        }
        let report = memory.upkeep(&store, ada, None, &policy, Some(&Habits)).await.unwrap();
        assert_eq!((report.consolidated, report.lasting), (2, 2), "{name}: {report:?}");
        let habit: Vec<_> = store
            .memories()
            .list(
                ada,
                &MemoryFilter { scope: Some("telegram:ada".into()), ..MemoryFilter::default() },
                None,
                100,
            )
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.provenance.by == "cortex" && m.content.contains("runs often"))
            .map(|m| m.content)
            .collect();
        assert_eq!(habit, ["Ada runs often (2 runs seen)"], "{name}");
    }
}

#[tokio::test]
async fn saving_many_embeds_them_a_batch_at_a_time_saves_in_order_and_a_bad_one_fails_alone() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let memory = Memory::new(Some(embeddings(stub.url())), Isolation::Global);
    for b in backends().await {
        let tenant = b.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let ada = agent(&b, &tenant, "ada").await;
        let store = b.store.tenant_scope(tenant.id);
        let asked_before = stub.captured().len();
        let count = clade_memory::EMBED_AHEAD * 2 + 5;
        let mut items: Vec<NewMemory> = (0..count)
            .map(|n| item(ada, "", MemoryKind::Fact, &format!("note {n} about the {n}th crate")))
            .collect();
        // The last repeats the first: saved in order, it merges into it.
        items.push(item(ada, "", MemoryKind::Fact, "Note 0 about the 0th crate."));
        let saved: Vec<_> =
            memory.save_all(&store, items).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(saved.len(), count + 1, "{}", b.name);
        assert_eq!(saved[count].outcome, Outcome::Merged, "{}", b.name);
        assert_eq!(saved[count].item.id, saved[0].item.id);
        assert!(saved[..count].iter().all(|s| s.outcome == Outcome::Created));
        assert!(saved.iter().all(|s| s.item.embedding_model.is_some()), "{}", b.name);
        // Three batches of texts, not one request an item.
        let asked: Vec<usize> = stub.captured()[asked_before..]
            .iter()
            .filter(|c| c.path.ends_with("/embeddings"))
            .map(|c| c.body["input"].as_array().map_or(1, Vec::len))
            .collect();
        assert_eq!(asked, [32, 32, 6], "{}", b.name);
        assert_eq!(store.memories().count(ada).await.unwrap(), count as i64);
        // A bad item fails alone: those before and after it are saved.
        let mut bad = item(ada, "", MemoryKind::Fact, "a bad one");
        bad.importance = -1.0;
        let before = item(ada, "", MemoryKind::Fact, "saved before the bad one");
        let after = item(ada, "", MemoryKind::Fact, "saved after the bad one too");
        let outcomes = memory.save_all(&store, vec![before, bad, after]).await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{}", b.name);
        let err = outcomes[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("importance"), "{err}");
        assert_eq!(store.memories().count(ada).await.unwrap(), count as i64 + 2, "{}", b.name);
    }
}
