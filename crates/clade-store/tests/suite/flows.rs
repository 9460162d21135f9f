//! Stored flows on both backends: a save makes a version only when the text changed, every
//! version stays readable, each tenant sees only its own, saves and deletions are audited
//! (never the text), and a deleted tenant takes its flows with it.

use clade_core::AuditKind;
use clade_store::{Error, StoredFlows};

use super::harness::backends;

const V1: &str = "name: daily\ntasks: []\n";
const V2: &str = "name: daily\ntasks: [] # changed\n";

#[tokio::test]
async fn a_flow_keeps_every_version_and_each_tenant_its_own() {
    for h in backends().await {
        let acme = h.store.tenants().create("acme").await.unwrap();
        let rival = h.store.tenants().create("rival").await.unwrap();
        let flows = StoredFlows::of(&h.store, acme.id);

        let first = flows.save("daily", V1).await.unwrap();
        assert_eq!((first.flow.version, first.created), (1, true), "{}", h.name);
        let same = flows.save("daily", V1).await.unwrap();
        assert_eq!((same.flow.version, same.created), (1, false), "{}: unchanged", h.name);
        let second = flows.save("daily", V2).await.unwrap();
        assert_eq!((second.flow.version, second.created), (2, true), "{}", h.name);
        flows.save("weekly", V1).await.unwrap();

        assert_eq!(flows.get("daily", None).await.unwrap().source, V2, "{}", h.name);
        assert_eq!(flows.get("daily", Some(1)).await.unwrap().source, V1, "{}", h.name);
        let missing = flows.get("daily", Some(3)).await.unwrap_err();
        assert!(matches!(missing, Error::FlowNotFound(ref what) if what == "daily version 3"));
        let listed: Vec<_> =
            flows.list().await.unwrap().into_iter().map(|f| (f.name, f.version)).collect();
        assert_eq!(listed, [("daily".to_owned(), 2), ("weekly".to_owned(), 1)], "{}", h.name);
        let versions: Vec<_> =
            flows.versions("daily").await.unwrap().iter().map(|f| f.version).collect();
        assert_eq!(versions, [2, 1], "{}", h.name);

        // Another tenant sees none of them, and its own flow of the same name is apart.
        let theirs = StoredFlows::of(&h.store, rival.id);
        assert!(theirs.list().await.unwrap().is_empty(), "{}", h.name);
        assert!(matches!(theirs.get("daily", None).await, Err(Error::FlowNotFound(_))));
        assert!(matches!(theirs.delete("daily").await, Err(Error::FlowNotFound(_))));
        assert_eq!(theirs.save("daily", V2).await.unwrap().flow.version, 1, "{}", h.name);
        assert_eq!(flows.get("daily", None).await.unwrap().version, 2, "{}", h.name);

        assert_eq!(flows.delete("daily").await.unwrap(), 2, "{}", h.name);
        assert!(matches!(flows.get("daily", Some(1)).await, Err(Error::FlowNotFound(_))));
        let filter = clade_store::AuditFilter { limit: 1000, ..Default::default() };
        let audit = h.store.access(acme.id).audit_records(&filter).await.unwrap();
        let of = |kind: AuditKind| audit.iter().filter(|r| r.kind == kind.as_str()).count();
        assert_eq!((of(AuditKind::FlowSaved), of(AuditKind::FlowDeleted)), (3, 1), "{}", h.name);
        assert!(audit.iter().all(|r| !r.detail.contains("tasks")), "{}: no text", h.name);

        assert_eq!(flows.list().await.unwrap().len(), 1, "{}: weekly stays", h.name);
        h.store.tenants().delete("acme").await.unwrap();
        assert!(flows.list().await.unwrap().is_empty(), "{}: gone with its tenant", h.name);
    }
}
