//! Agents' memory items on both backends: saved, listed, found by full text and by vector only
//! within the agent and scopes asked for, whatever near-duplicates other tenants, agents and
//! isolation keys hold; linked within an agent; changed and forgotten with audit records that
//! never hold the content; bad input refused with nothing written; gone with their agent.

use clade_core::{AgentId, AuditKind, LinkKind, MemoryKind};
use clade_store::{MemoryFilter, MemoryUpdate, NewMemory, Provenance};

use super::harness::{backends, tenant_and_agent};

fn item(agent: AgentId, scope: &str, kind: MemoryKind, content: &str) -> NewMemory {
    NewMemory {
        agent,
        scope: scope.into(),
        kind,
        content: content.into(),
        importance: 0.5,
        confidence: 0.9,
        provenance: Provenance { by: "test".into(), ..Provenance::default() },
        untrusted: false,
        embedding: None,
    }
}

fn scoped(key: Option<&str>) -> MemoryFilter {
    MemoryFilter { scope: key.map(str::to_owned), ..MemoryFilter::default() }
}

/// Another tenant with an agent of the same handle, `ada`.
async fn rival_ada(h: &super::harness::Harness) -> (clade_core::Tenant, clade_core::Agent) {
    let rival = h.store.tenants().create("rival").await.unwrap();
    let new = clade_store::NewAgent {
        handle: clade_core::Handle::parse("ada").unwrap(),
        display_name: None,
        config: clade_core::AgentConfig::default(),
    };
    let agent = h.agents.create(rival.id, new).await.unwrap();
    (rival, agent)
}

#[tokio::test]
async fn memories_stay_in_their_agent_and_scope() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let (rival, rival_agent) = rival_ada(&h).await;
        let ours = h.store.tenant_scope(tenant.id);
        let theirs = h.store.tenant_scope(rival.id);
        let fact = "the launch code word is marmalade";
        let saved = ours.memories().save(item(ada.id, "", MemoryKind::Fact, fact)).await.unwrap();
        let alice = ours
            .memories()
            .save(item(
                ada.id,
                "telegram:alice",
                MemoryKind::Preference,
                "alice likes marmalade toast",
            ))
            .await
            .unwrap();
        // Near-duplicates everywhere else.
        ours.memories()
            .save(item(
                ada.id,
                "telegram:bob",
                MemoryKind::Fact,
                "the launch code word is marmalade too",
            ))
            .await
            .unwrap();
        ours.memories()
            .save(item(bo.id, "", MemoryKind::Fact, "the launch code word is marmalade, bo says"))
            .await
            .unwrap();
        theirs
            .memories()
            .save(item(
                rival_agent.id,
                "",
                MemoryKind::Fact,
                "the launch code word is marmalade, rival",
            ))
            .await
            .unwrap();

        let found = |filter: MemoryFilter| {
            let ours = ours.clone();
            async move {
                let hits = ours
                    .memories()
                    .search_text(ada.id, &filter, "what is the code word? Marmalade", 50, 50)
                    .await
                    .unwrap();
                hits.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
            }
        };
        assert_eq!(found(scoped(None)).await, [saved.id], "{}", h.name);
        let both = found(scoped(Some("telegram:alice"))).await;
        assert_eq!(both.len(), 2, "{}: {both:?}", h.name);
        assert!(both.contains(&saved.id) && both.contains(&alice.id));
        let only_alice = MemoryFilter { exclude_global: true, ..scoped(Some("telegram:alice")) };
        assert_eq!(found(only_alice).await, [alice.id]);
        let facts =
            MemoryFilter { kinds: vec![MemoryKind::Fact], ..scoped(Some("telegram:alice")) };
        assert_eq!(found(facts).await, [saved.id]);
        // The rival tenant, asking with our agent's id, finds nothing and reads nothing.
        let hits = theirs
            .memories()
            .search_text(ada.id, &scoped(None), "marmalade", 50, 50)
            .await
            .unwrap();
        assert!(hits.is_empty(), "{}", h.name);
        assert!(theirs.memories().get(ada.id, saved.id).await.is_err());
        assert!(theirs.memories().forget(ada.id, saved.id).await.is_err());
        assert!(theirs.memories().list(ada.id, &scoped(None), None, 100).await.unwrap().is_empty());
        // Query syntax is text, not syntax.
        for query in ["\"", "NEAR(", "*", "owner : x", "a | b & !c", ""] {
            let hits =
                ours.memories().search_text(ada.id, &scoped(None), query, 50, 50).await.unwrap();
            assert!(hits.is_empty(), "{}: {query:?}", h.name);
        }

        // Listing pages newest first.
        let listed =
            ours.memories().list(ada.id, &scoped(Some("telegram:alice")), None, 1).await.unwrap();
        assert_eq!(listed.len(), 1);
        let rest = ours
            .memories()
            .list(
                ada.id,
                &scoped(Some("telegram:alice")),
                Some((listed[0].updated_at, listed[0].id)),
                10,
            )
            .await
            .unwrap();
        assert_eq!(listed.len() + rest.len(), 2);
        assert_eq!(ours.memories().count(ada.id).await.unwrap(), 3);

        // Links stay within the agent, and within one isolation key or the global scope.
        let other = ours
            .memories()
            .save(item(ada.id, "", MemoryKind::Decision, "use marmalade as code word"))
            .await
            .unwrap();
        ours.memories().link(ada.id, other.id, saved.id, LinkKind::CausedBy, 0.8).await.unwrap();
        ours.memories().link(ada.id, alice.id, saved.id, LinkKind::RelatedTo, 0.5).await.unwrap();
        let bob_item = ours
            .memories()
            .list(
                ada.id,
                &MemoryFilter { exclude_global: true, ..scoped(Some("telegram:bob")) },
                None,
                10,
            )
            .await
            .unwrap();
        let err = ours
            .memories()
            .link(ada.id, bob_item[0].id, alice.id, LinkKind::RelatedTo, 0.5)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("different isolation scopes"), "{err}");
        let err = theirs
            .memories()
            .link(ada.id, other.id, saved.id, LinkKind::Updates, 0.5)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(
            ours.memories().link(ada.id, saved.id, saved.id, LinkKind::Updates, 0.5).await.is_err()
        );
        assert!(
            ours.memories().link(ada.id, other.id, saved.id, LinkKind::Updates, 1.5).await.is_err()
        );
        let links = ours.memories().links(ada.id, &[saved.id]).await.unwrap();
        assert_eq!(links.len(), 2, "{}", h.name);

        // Changes: the content is searchable as changed; the audit names the id only.
        let updated = ours
            .memories()
            .update(
                ada.id,
                saved.id,
                MemoryUpdate {
                    content: Some("the code word is now quince".into()),
                    ..MemoryUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.content, "the code word is now quince");
        assert_eq!(
            ours.memories().search_text(ada.id, &scoped(None), "quince", 5, 5).await.unwrap().len(),
            1
        );
        assert!(
            ours.memories()
                .search_text(ada.id, &scoped(None), "launch", 5, 5)
                .await
                .unwrap()
                .is_empty()
        );
        ours.memories().forget(ada.id, saved.id).await.unwrap();
        assert!(ours.memories().links(ada.id, &[saved.id]).await.unwrap().is_empty());
        assert!(
            ours.memories()
                .search_text(ada.id, &scoped(None), "quince", 5, 5)
                .await
                .unwrap()
                .is_empty()
        );
        let audit = ours
            .access()
            .audit_records(&clade_store::AuditFilter {
                limit: 1000,
                ..clade_store::AuditFilter::default()
            })
            .await
            .unwrap();
        let changes: Vec<_> =
            audit.iter().filter(|r| r.kind == AuditKind::MemoryChanged.as_str()).collect();
        assert!(changes.len() >= 8, "{}", changes.len());
        assert!(
            changes.iter().all(|r| !r.detail.contains("marmalade") && !r.detail.contains("quince"))
        );

        // Bad input writes nothing.
        let before = ours.memories().count(ada.id).await.unwrap();
        for (content, expected) in
            [("  ", "empty"), (&"x".repeat(5000)[..], "over 4096"), ("nul\0", "control")]
        {
            let err = ours
                .memories()
                .save(item(ada.id, "", MemoryKind::Fact, content))
                .await
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let mut bad = item(ada.id, "", MemoryKind::Fact, "fine");
        bad.importance = 2.0;
        assert!(
            ours.memories().save(bad).await.unwrap_err().to_string().contains("between 0 and 1")
        );
        let err = ours
            .memories()
            .save(item(rival_agent.id, "", MemoryKind::Fact, "x"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        assert_eq!(ours.memories().count(ada.id).await.unwrap(), before);

        // Vectors: only the model asked for, only the scope asked for.
        let mut with_vector = item(ada.id, "", MemoryKind::Fact, "vectors");
        with_vector.embedding = Some((vec![0.6, 0.8], "m1".into()));
        ours.memories().save(with_vector).await.unwrap();
        let mut elsewhere = item(ada.id, "k", MemoryKind::Fact, "vectors elsewhere");
        elsewhere.embedding = Some((vec![0.6, 0.8], "m1".into()));
        ours.memories().save(elsewhere).await.unwrap();
        let vectors = ours.memories().vectors(ada.id, &scoped(None), "m1").await.unwrap();
        assert_eq!(vectors.len(), 1);
        assert_eq!(vectors[0].vector, [0.6, 0.8]);
        assert_eq!(
            ours.memories().scope_version(ada.id, "").await.unwrap(),
            Some(vectors[0].updated_at)
        );
        assert_eq!(ours.memories().scope_version(ada.id, "nobody").await.unwrap(), None);
        assert!(ours.memories().vectors(ada.id, &scoped(None), "m2").await.unwrap().is_empty());
        assert_eq!(ours.memories().to_embed(ada.id, "m1", 100).await.unwrap().len(), 3);

        // A deleted agent's memories and links go with it; the other agent's stay.
        h.store.agents(tenant.id).delete("ada").await.unwrap();
        assert_eq!(ours.memories().count(ada.id).await.unwrap(), 0);
        assert!(ours.memories().links(ada.id, &[other.id]).await.unwrap().is_empty());
        assert_eq!(ours.memories().count(bo.id).await.unwrap(), 1);
    }
}

/// An agent holds at most as many items as it is allowed, counted in the saving transaction:
/// past it a new item is refused and nothing is written; another agent is not affected, and
/// forgetting one makes room.
#[tokio::test]
async fn an_agent_holds_no_more_items_than_allowed() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let ours = h.store.tenant_scope(tenant.id);
        let first = ours.memories().save_within(item(ada.id, "", MemoryKind::Fact, "one"), 2).await;
        let first = first.unwrap();
        ours.memories()
            .save_within(item(ada.id, "alice", MemoryKind::Fact, "two"), 2)
            .await
            .unwrap();
        let refused =
            ours.memories().save_within(item(ada.id, "", MemoryKind::Fact, "three"), 2).await;
        assert!(
            matches!(refused, Err(clade_store::Error::MemoryFull { held: 2 })),
            "{}: {refused:?}",
            h.name
        );
        let all = MemoryFilter { scope: Some("alice".into()), ..MemoryFilter::default() };
        assert_eq!(
            ours.memories().list(ada.id, &all, None, 10).await.unwrap().len(),
            2,
            "{}",
            h.name
        );
        ours.memories()
            .save_within(item(bo.id, "", MemoryKind::Fact, "bo's own"), 2)
            .await
            .unwrap();
        ours.memories().forget(ada.id, first.id).await.unwrap();
        ours.memories().save_within(item(ada.id, "", MemoryKind::Fact, "three"), 2).await.unwrap();
    }
}

/// A word in more than a thousand of the agent's items only scores beside a rarer one, yet the
/// results stay what the whole match gives: the rare word's items first, and the common word's
/// items filling whatever they leave, only ever the agent's own.
#[tokio::test]
async fn a_common_word_beside_a_rare_one_still_fills_the_results() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let ours = h.store.tenant_scope(tenant.id);
        let saves = (0..1050).map(|n| {
            ours.memories().save(item(
                ada.id,
                "",
                MemoryKind::Fact,
                &format!("ada filed report {n}"),
            ))
        });
        for saved in futures::future::join_all(saves).await {
            saved.unwrap();
        }
        let mut zebras = Vec::new();
        for n in 0..3 {
            let content = format!("ada rode the zebra {n}");
            zebras.push(
                ours.memories()
                    .save(item(ada.id, "", MemoryKind::Fact, &content))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let foreign = ours
            .memories()
            .save(item(bo.id, "", MemoryKind::Fact, "ada rode the zebra home"))
            .await
            .unwrap();
        // Another tenant holding the rare word often must not change what counts as rare
        // here, nor show up.
        let (rival, rival_agent) = rival_ada(&h).await;
        let theirs = h.store.tenant_scope(rival.id);
        let saves = (0..1050).map(|n| {
            theirs.memories().save(item(
                rival_agent.id,
                "",
                MemoryKind::Fact,
                &format!("zebra {n}"),
            ))
        });
        let mut rival_ids = Vec::new();
        for saved in futures::future::join_all(saves).await {
            rival_ids.push(saved.unwrap().id);
        }

        let hits = ours
            .memories()
            .search_text(ada.id, &scoped(None), "Ada's zebra", 10, 10)
            .await
            .unwrap();
        assert_eq!(hits.len(), 10, "{}: the common word fills the rest: {hits:?}", h.name);
        let mut first: Vec<_> = hits[..3].iter().map(|(id, _)| *id).collect();
        first.sort();
        zebras.sort();
        assert_eq!(first, zebras, "{}", h.name);
        let hits =
            ours.memories().search_text(ada.id, &scoped(None), "Ada's zebra", 2, 2).await.unwrap();
        assert_eq!(hits.len(), 2, "{}", h.name);
        assert!(hits.iter().all(|(id, _)| zebras.contains(id)), "{}: {hits:?}", h.name);
        // A caller needing fewer than it asks for gets the rare word's items alone.
        let hits =
            ours.memories().search_text(ada.id, &scoped(None), "Ada's zebra", 50, 3).await.unwrap();
        if h.name == "sqlite" {
            assert_eq!(hits.len(), 3, "{}: {hits:?}", h.name);
        }
        assert!(hits.iter().take(3).all(|(id, _)| zebras.contains(id)), "{}", h.name);
        assert!(hits.iter().all(|(id, _)| !rival_ids.contains(id)), "{}", h.name);
        // A word nothing holds does not narrow the match to nothing.
        let hits = ours
            .memories()
            .search_text(ada.id, &scoped(None), "ada unicorn", 10, 10)
            .await
            .unwrap();
        assert_eq!(hits.len(), 10, "{}", h.name);
        assert!(hits.iter().all(|(id, _)| *id != foreign.id), "{}", h.name);
    }
}

#[tokio::test]
async fn the_full_text_index_merges_into_one_segment_step_by_step_and_finds_the_same() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let ours = h.store.tenant_scope(tenant.id);
        // One write at a time: each adds a segment to SQLite's index.
        for n in 0..200 {
            // Words of its own, so the index spans many pages and the merge many steps.
            let own: Vec<String> = (0..30).map(|k| format!("w{n}x{k}")).collect();
            let content =
                format!("ada filed report {n} about the walrus {} {}", n % 7, own.join(" "));
            ours.memories().save(item(ada.id, "", MemoryKind::Fact, &content)).await.unwrap();
        }
        let everywhere = scoped(None);
        let search = || ours.memories().search_text(ada.id, &everywhere, "walrus 3", 10, 10);
        let before = search().await.unwrap();
        let segments = h.store.memory_upkeep().index_segments().await.unwrap();
        if h.name == "postgres" {
            // One index structure, nothing to merge.
            assert_eq!(segments, 1);
            assert!(!h.store.memory_upkeep().merge_index(8, true).await.unwrap());
            continue;
        }
        assert!(segments > 1, "{segments} segments after 200 writes");
        // Writes between the steps add segments; the merge begun goes on and ends.
        let (mut steps, mut written) = (0, 0);
        while h.store.memory_upkeep().merge_index(1, steps == 0).await.unwrap() {
            steps += 1;
            if written < 3 {
                let content =
                    format!("a note written mid-merge {}", ["one", "two", "six"][written]);
                ours.memories().save(item(ada.id, "", MemoryKind::Fact, &content)).await.unwrap();
                written += 1;
            }
            assert!(steps < 100_000, "the merge never ends");
        }
        assert_eq!(written, 3, "the merge ended before the writes between its steps");
        let after = h.store.memory_upkeep().index_segments().await.unwrap();
        assert!(after <= 4, "{segments} segments, then {after}");
        // The same items (their scores move with the items written meanwhile).
        let ids = |hits: Vec<(clade_core::MemoryId, f64)>| -> Vec<_> {
            hits.into_iter().map(|(id, _)| id).collect()
        };
        assert_eq!(
            ids(search().await.unwrap()),
            ids(before.clone()),
            "the merge changed what a search finds"
        );
        // The notes written meanwhile are found.
        let mid =
            ours.memories().search_text(ada.id, &everywhere, "mid-merge", 10, 10).await.unwrap();
        assert!(!mid.is_empty(), "{}", h.name);
        // Gathered again, the index ends in one segment.
        while h.store.memory_upkeep().merge_index(8, false).await.unwrap() {}
        while h.store.memory_upkeep().merge_index(8, true).await.unwrap() {}
        assert_eq!(h.store.memory_upkeep().index_segments().await.unwrap(), 1);
        // Merged, a step has nothing to do.
        assert!(!h.store.memory_upkeep().merge_index(8, false).await.unwrap());
    }
}
