//! Messages between agents on both backends: delivered as the receiver's event with their
//! lifecycle events in one transaction, found again by their key, refused to itself, across
//! tenants and along an ask that would wait on itself (nothing written), listed for both
//! agents and gone with either.

use clade_core::{AgentConfig, AgentId, EventKind, Handle, MessageKind, TenantId};
use clade_store::{NewAgent, NewMessage};

use super::harness::{accept, backends, tenant_and_agent};

fn message(tenant: TenantId, from: AgentId, to: &str, key: &str, kind: MessageKind) -> NewMessage {
    NewMessage {
        tenant,
        kind,
        from,
        from_session: None,
        from_turn: None,
        to: to.to_owned(),
        topic: None,
        text: format!("hello {to}"),
        idempotency_key: key.to_owned(),
        payload_hash: format!("{to}:{key}"),
        depth: 1,
        chain: Vec::new(),
        max_open_per_session: 100,
    }
}

#[tokio::test]
async fn messages_are_delivered_once_within_their_tenant_and_listed_on_both_sides() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let rival = h.store.tenants().create("rival").await.unwrap();
        let spec = NewAgent {
            handle: Handle::parse("bo").unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let rival_bo = h.agents.create(rival.id, spec).await.unwrap();
        let desk = accept(&h.store, &tenant, &ada, "desk").await.session_id;

        let mut first = message(tenant.id, ada.id, "bo", "k1", MessageKind::Send);
        first.from_session = Some(desk);
        let sent = h.store.send_message(first.clone()).await.unwrap();
        assert!(!sent.accepted.duplicate, "{}", h.name);
        assert_eq!(sent.message.to_agent, bo.id, "{}: another tenant's bo", h.name);
        assert_eq!(sent.message.from_handle, "ada", "{}", h.name);
        let kinds: Vec<(EventKind, Option<_>)> =
            sent.announced.iter().map(|r| (r.kind, r.session_id)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::AgentMessageSent, Some(desk)),
                (EventKind::AgentMessageReceived, Some(sent.message.to_session))
            ],
            "{}",
            h.name
        );
        let session = h.store.sessions(tenant.id).get(sent.message.to_session).await.unwrap();
        assert_eq!(
            (session.agent_id, &session.source.platform, session.source.actor.as_str()),
            (bo.id, &clade_core::Origin::Agent, "ada"),
            "{}",
            h.name
        );
        // The same key again: the first message, nothing new written or announced.
        let again = h.store.send_message(first).await.unwrap();
        assert!(again.accepted.duplicate && again.announced.is_empty(), "{}", h.name);
        assert_eq!(again.message.id, sent.message.id, "{}", h.name);

        // An ask stores its pair after the asks it waits on; one along a pair already waiting
        // is refused with nothing written.
        let mut ask = message(tenant.id, ada.id, "bo", "k2", MessageKind::Ask);
        ask.chain = vec!["bo>ada".into()];
        let asked = h.store.send_message(ask.clone()).await.unwrap();
        assert_eq!(asked.message.chain, ["bo>ada", "ada>bo"], "{}", h.name);
        ask.idempotency_key = "k3".into();
        ask.chain = asked.message.chain.clone();
        let err = h.store.send_message(ask).await.unwrap_err();
        assert!(err.to_string().contains("would wait forever"), "{}: {err}", h.name);
        // Nothing waits on a send: it keeps no chain.
        let mut send = message(tenant.id, ada.id, "bo", "k4", MessageKind::Send);
        send.chain = vec!["bo>ada".into()];
        assert!(h.store.send_message(send).await.unwrap().message.chain.is_empty());

        // Refused: to itself, to no one, from another tenant's agent.
        for (bad, expected) in [
            (message(tenant.id, ada.id, "ada", "k5", MessageKind::Send), "itself"),
            (message(tenant.id, ada.id, "nobody", "k6", MessageKind::Send), "nobody"),
            (message(tenant.id, rival_bo.id, "ada", "k7", MessageKind::Send), "not found"),
        ] {
            let err = h.store.send_message(bad).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{}: {err}", h.name);
        }

        let ours = h.store.tenant_scope(tenant.id);
        let listed = ours.messages().of_agent(bo.id, None, 10).await.unwrap();
        assert_eq!(listed.len(), 3, "{}", h.name);
        assert_eq!(listed[2].id, sent.message.id, "{}: newest first", h.name);
        assert_eq!(listed[2].text.as_deref(), Some("hello bo"), "{}", h.name);
        let page = ours.messages().of_agent(bo.id, Some(listed[0].id), 1).await.unwrap();
        assert_eq!(page[0].id, listed[1].id, "{}", h.name);
        assert_eq!(ours.messages().of_agent(ada.id, None, 10).await.unwrap().len(), 3);
        let theirs = h.store.tenant_scope(rival.id);
        assert!(theirs.messages().of_agent(rival_bo.id, None, 10).await.unwrap().is_empty());
        assert!(
            theirs.messages().of_agent(bo.id, None, 10).await.unwrap().is_empty(),
            "{}",
            h.name
        );

        // Gone with either agent.
        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert!(ours.messages().of_agent(bo.id, None, 10).await.unwrap().is_empty(), "{}", h.name);
    }
}

#[tokio::test]
async fn subscriptions_are_per_agent_per_tenant_bounded_and_checked() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let rival = h.store.tenants().create("rival").await.unwrap();
        h.store.messages(tenant.id).subscribe(ada.id, "news").await.unwrap();
        h.store.messages(tenant.id).subscribe(ada.id, "news").await.unwrap();
        h.store.messages(tenant.id).subscribe(bo.id, "news").await.unwrap();
        let subscribers = h.store.messages(tenant.id).subscribers("news").await.unwrap();
        let handles: Vec<&str> = subscribers.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(handles, ["ada", "bo"], "{}", h.name);
        assert!(
            h.store.messages(rival.id).subscribers("news").await.unwrap().is_empty(),
            "{}",
            h.name
        );
        let err = h.store.messages(rival.id).subscribe(ada.id, "news").await.unwrap_err();
        assert!(matches!(err, clade_store::Error::AgentNotFound(_)), "{}: {err}", h.name);
        for bad in ["", "News", "a b", &"x".repeat(65)] {
            let err = h.store.messages(tenant.id).subscribe(ada.id, bad).await.unwrap_err();
            assert!(err.to_string().contains("1 to 64"), "{}: {err}", h.name);
        }
        for n in 1..clade_store::messages::MAX_SUBSCRIPTIONS {
            h.store.messages(tenant.id).subscribe(ada.id, &format!("t{n}")).await.unwrap();
        }
        let full = h.store.messages(tenant.id).subscribe(ada.id, "one-more").await.unwrap_err();
        assert!(full.to_string().contains("at most"), "{}: {full}", h.name);
        assert!(
            h.store.messages(tenant.id).unsubscribe(bo.id, "news").await.unwrap(),
            "{}",
            h.name
        );
        assert!(
            !h.store.messages(tenant.id).unsubscribe(bo.id, "news").await.unwrap(),
            "{}",
            h.name
        );
        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert!(
            h.store.messages(tenant.id).subscribers("news").await.unwrap().is_empty(),
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn children_are_bounded_in_depth_and_number() {
    use clade_store::lineage::{MAX_CHILDREN, MAX_DEPTH};
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let mut parent = ada.id;
        for depth in 1..=MAX_DEPTH {
            assert_eq!(h.store.lineage(tenant.id).next_child_depth(parent).await.unwrap(), depth);
            let child = AgentId::generate(h.store.now());
            h.store.lineage(tenant.id).record_child(parent, child, depth).await.unwrap();
            assert_eq!(h.store.lineage(tenant.id).parent_of(child).await.unwrap(), Some(parent));
            parent = child;
        }
        let deep = h.store.lineage(tenant.id).next_child_depth(parent).await.unwrap_err();
        assert!(deep.to_string().contains("past depth"), "{}: {deep}", h.name);
        for _ in 1..MAX_CHILDREN {
            let child = AgentId::generate(h.store.now());
            h.store.lineage(tenant.id).record_child(ada.id, child, 1).await.unwrap();
        }
        let many = h.store.lineage(tenant.id).next_child_depth(ada.id).await.unwrap_err();
        assert!(many.to_string().contains("the most one may make"), "{}: {many}", h.name);
        let rival = h.store.tenants().create("rival").await.unwrap();
        assert_eq!(
            h.store.lineage(rival.id).next_child_depth(ada.id).await.unwrap(),
            1,
            "{}",
            h.name
        );
        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert_eq!(
            h.store.lineage(tenant.id).next_child_depth(ada.id).await.unwrap(),
            1,
            "{}",
            h.name
        );
    }
}
