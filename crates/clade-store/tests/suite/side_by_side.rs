//! Two handles on one store write side by side, as the nodes of a cluster do on PostgreSQL:
//! what must happen once (a session made, a position handed out, an idempotency key honoured,
//! a link of the audit chain) still happens once, and nothing fails for having raced.

use std::collections::BTreeSet;

use clade_core::{AuditKind, Tenant};
use clade_store::access::AuditEntry;
use clade_store::turns::{NewEvent, Source};
use clade_store::{Accepted, Store};

use super::harness::{backends, tenant_and_agent};

const EACH: usize = 12;

fn event(tenant: &Tenant, agent: &str, key: Option<String>) -> NewEvent {
    NewEvent {
        tenant: tenant.id,
        agent: agent.to_owned(),
        source: Source { platform: "test".into(), channel: "shared".into(), actor: "a".into() },
        text: "hello".into(),
        idempotency_key: key,
        payload_hash: "h".into(),
        max_open_per_session: 1_000,
    }
}

/// Accepts `EACH` events on each of two handles at once; each accepted, or the test fails
/// naming `backend`.
async fn accept_on_both(
    backend: &str,
    stores: [&Store; 2],
    make: impl Fn(usize) -> NewEvent,
) -> Vec<Accepted> {
    let mut tasks = Vec::new();
    for i in 0..EACH * 2 {
        let (store, event) = (stores[i % 2].clone(), make(i));
        tasks.push(tokio::spawn(async move { store.turns().accept(event).await }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        let result = task.await.unwrap();
        accepted.push(result.unwrap_or_else(|e| panic!("{backend}: an accept failed: {e}")));
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_make_a_new_session_once_and_number_each_event_once() {
    for h in backends().await {
        let other = h.reopen().await.unwrap();
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let handle = agent.handle.to_string();
        let accepted =
            accept_on_both(h.name, [&h.store, &other], |_| event(&tenant, &handle, None)).await;
        let sessions: BTreeSet<_> = accepted.iter().map(|a| a.session_id).collect();
        assert_eq!(sessions.len(), 1, "{}: one conversation became {sessions:?}", h.name);
        let session = accepted[0].session_id;
        let stored = h.store.system().pending_events(session).await.unwrap();
        let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..(EACH * 2) as i64).collect::<Vec<_>>(), "{}: positions", h.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_to_two_writers_at_once_is_one_event() {
    for h in backends().await {
        let other = h.reopen().await.unwrap();
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let handle = agent.handle.to_string();
        let key = |i: usize| Some(format!("retry-{}", i % 3));
        let accepted =
            accept_on_both(h.name, [&h.store, &other], |i| event(&tenant, &handle, key(i))).await;
        let events: BTreeSet<_> = accepted.iter().map(|a| a.event_id).collect();
        assert_eq!(events.len(), 3, "{}: three keys made {} events", h.name, events.len());
        let fresh = accepted.iter().filter(|a| !a.duplicate).count();
        assert_eq!(fresh, 3, "{}: {fresh} accepts were not told they were duplicates", h.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_appending_to_one_audit_chain_keep_it_whole() {
    for h in backends().await {
        let other = h.reopen().await.unwrap();
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap().id;
        let mut tasks = Vec::new();
        for i in 0..EACH * 2 {
            let store = if i % 2 == 0 { h.store.clone() } else { other.clone() };
            let entry = AuditEntry {
                tenant,
                agent: None,
                kind: AuditKind::ToolDecision,
                tool: Some(format!("tool-{i}")),
                decision: Some("allow".into()),
                detail: "{}".into(),
            };
            tasks.push(tokio::spawn(async move { store.audit(entry).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap_or_else(|e| panic!("{}: an append failed: {e}", h.name));
        }
        let verified = h.store.access(tenant).verify_audit().await.unwrap();
        assert_eq!(verified.broken, None, "{}", h.name);
        assert!(verified.records >= (EACH * 2) as u64, "{}: {} records", h.name, verified.records);
    }
}
