//! Sessions' working memory on both backends: each write a version with the turn that wrote
//! it, a repeat adding nothing, a cleared name gone from what the session holds, old versions
//! pruned, the cap on names and values, bad names refused with nothing written, another
//! tenant reaching nothing, and the values gone with their agent.

use clade_core::TurnId;
use clade_store::working::{MAX_WORKING_NAMES, WORKING_VERSIONS_KEPT};

use super::harness::{accept, backends, tenant_and_agent};

#[tokio::test]
async fn working_memory_keeps_versions_within_its_limits_and_its_session() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let session = accept(&h.store, &tenant, &ada, "c1").await.session_id;
        let other = accept(&h.store, &tenant, &ada, "c2").await.session_id;
        let ours = h.store.tenant_scope(tenant.id);
        let turn = TurnId::generate(h.store.now());
        let first = ours.working().write(session, "plan", Some("1. book".into()), Some(turn)).await;
        let first = first.unwrap();
        assert_eq!((first.version, first.turn), (1, Some(turn)), "{}", h.name);
        // The same value again adds no version: a retried tool call changes nothing.
        let again = ours.working().write(session, "plan", Some("1. book".into()), None).await;
        assert_eq!(again.unwrap(), first, "{}", h.name);
        let second = ours.working().write(session, "plan", Some("2. pack".into()), None).await;
        assert_eq!(second.unwrap().version, 2, "{}", h.name);
        ours.working().write(session, "step", Some("3".into()), None).await.unwrap();
        let now = ours.working().list(session).await.unwrap();
        let held: Vec<(&str, Option<&str>)> =
            now.iter().map(|e| (e.name.as_str(), e.value.as_deref())).collect();
        assert_eq!(held, [("plan", Some("2. pack")), ("step", Some("3"))], "{}", h.name);
        assert!(ours.working().list(other).await.unwrap().is_empty(), "{}", h.name);

        // Cleared: gone from what it holds, kept in its history.
        let cleared = ours.working().write(session, "step", None, None).await.unwrap();
        assert_eq!((cleared.version, cleared.value), (2, None), "{}", h.name);
        let nothing = ours.working().write(session, "never", None, None).await.unwrap();
        assert_eq!(nothing.version, 0, "{}", h.name);
        assert_eq!(ours.working().list(session).await.unwrap().len(), 1, "{}", h.name);
        let history = ours.working().history(session, "step").await.unwrap();
        assert_eq!(history.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 1], "{}", h.name);

        // Only the newest versions stay.
        for n in 0..40 {
            ours.working().write(session, "counter", Some(n.to_string()), None).await.unwrap();
        }
        let history = ours.working().history(session, "counter").await.unwrap();
        assert_eq!(history.len() as i64, WORKING_VERSIONS_KEPT, "{}", h.name);
        assert_eq!(history[0].value.as_deref(), Some("39"), "{}", h.name);

        // Limits, each refused with nothing written.
        for (name, value, expected) in [
            ("", "x".to_owned(), "1 to 64"),
            ("a b", "x".to_owned(), "letters, digits"),
            ("plan", "x".repeat(2049), "2048 bytes"),
            ("plan", "bell\u{7}".to_owned(), "control characters"),
        ] {
            let err = ours.working().write(session, name, Some(value), None).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{}: {err}", h.name);
        }
        assert_eq!(
            ours.working().list(session).await.unwrap()[1].value.as_deref(),
            Some("2. pack")
        );
        for n in 0..(MAX_WORKING_NAMES - 2) {
            ours.working().write(session, &format!("n{n}"), Some("v".into()), None).await.unwrap();
        }
        let full = ours.working().write(session, "one-more", Some("v".into()), None).await;
        assert!(full.unwrap_err().to_string().contains("clear one"), "{}", h.name);
        // Changing a name it holds is still fine when full.
        ours.working().write(session, "plan", Some("3. go".into()), None).await.unwrap();

        // Another tenant reaches nothing of it.
        let rival = h.store.tenants().create("rival").await.unwrap();
        let theirs = h.store.tenant_scope(rival.id);
        assert!(theirs.working().list(session).await.unwrap().is_empty(), "{}", h.name);
        assert!(theirs.working().history(session, "plan").await.unwrap().is_empty(), "{}", h.name);
        let err = theirs.working().write(session, "plan", Some("mine".into()), None).await;
        assert!(matches!(err, Err(clade_store::Error::SessionNotFound(_))), "{}", h.name);
        let plan = ours.working().list(session).await.unwrap();
        assert!(plan.iter().any(|e| e.value.as_deref() == Some("3. go")), "{}", h.name);

        // Gone with the agent.
        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert!(ours.working().list(session).await.unwrap().is_empty(), "{}", h.name);
    }
}
