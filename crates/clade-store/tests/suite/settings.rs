//! Agents' settings on both backends: stored, replaced and removed with audit records that
//! name the key and never the value; bad keys, oversized values and the per-agent cap refused
//! with nothing written; another tenant's agent id stores nothing; a deleted agent's settings
//! go with it.

use clade_core::AuditKind;
use clade_store::settings::MAX_SETTINGS_PER_AGENT;
use serde_json::json;

use super::harness::{backends, tenant_and_agent};

#[tokio::test]
async fn settings_are_stored_per_agent_audited_and_bounded() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let store = h.store.acting_as("test operator");
        store.settings(tenant.id).set(ada.id, "tone", json!("dry")).await.unwrap();
        let row =
            store.settings(tenant.id).set(ada.id, "tone", json!({ "level": 3 })).await.unwrap();
        assert_eq!(row.updated_by, "test operator");
        store.settings(tenant.id).set(ada.id, "api.key", json!("sk-secret-value")).await.unwrap();
        let listed = store.settings(tenant.id).list(ada.id).await.unwrap();
        let keys: Vec<(&str, &serde_json::Value)> =
            listed.iter().map(|r| (r.key.as_str(), &r.value)).collect();
        assert_eq!(
            keys,
            [("api.key", &json!("sk-secret-value")), ("tone", &json!({ "level": 3 }))]
        );
        assert!(store.settings(tenant.id).list(bo.id).await.unwrap().is_empty(), "{}", h.name);

        // Bad input changes nothing.
        for key in ["", "Tone", "1st", "a b", &"k".repeat(65)] {
            let err = store.settings(tenant.id).set(ada.id, key, json!(1)).await.unwrap_err();
            assert!(err.to_string().contains("keys use"), "{key:?}: {err}");
        }
        let err = store
            .settings(tenant.id)
            .set(ada.id, "big", json!("x".repeat(5000)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("over 4096"), "{err}");
        // Another tenant's agent, named by id: nothing stored.
        let rival = store.tenants().create("rival").await.unwrap();
        let err = store.settings(rival.id).set(ada.id, "tone", json!(1)).await.unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        assert!(store.settings(rival.id).list(ada.id).await.unwrap().is_empty());
        // The cap counts new keys, not replacements.
        for i in 0..MAX_SETTINGS_PER_AGENT {
            store.settings(tenant.id).set(bo.id, &format!("k{i}"), json!(i)).await.unwrap();
        }
        let err = store.settings(tenant.id).set(bo.id, "one-more", json!(1)).await.unwrap_err();
        assert!(err.to_string().contains("at most 100"), "{err}");
        store.settings(tenant.id).set(bo.id, "k0", json!("replaced")).await.unwrap();

        store.settings(tenant.id).unset(ada.id, "tone").await.unwrap();
        let err = store.settings(tenant.id).unset(ada.id, "tone").await.unwrap_err();
        assert!(err.to_string().contains("not stored"), "{err}");
        assert_eq!(store.settings(tenant.id).list(ada.id).await.unwrap().len(), 1);

        // Audited: the key and the change, never the value.
        let filter = clade_store::access::AuditFilter {
            agent: Some(ada.id),
            limit: 1000,
            ..Default::default()
        };
        let audit = store.access(tenant.id).audit_records(&filter).await.unwrap();
        let changes: Vec<_> =
            audit.iter().filter(|r| r.kind == AuditKind::SettingChanged.as_str()).collect();
        assert_eq!(changes.len(), 4, "{}", h.name);
        assert!(audit.iter().all(|r| !r.detail.contains("sk-secret-value")));

        // Deleting the agent deletes its settings.
        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert!(store.settings(tenant.id).list(ada.id).await.unwrap().is_empty());
    }
}
