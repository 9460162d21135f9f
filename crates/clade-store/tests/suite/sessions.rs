//! Listing sessions a page at a time, on both backends: the pages join into the whole list, in
//! its order (ties broken by id), and never reach another tenant's or another agent's.

use clade_store::SessionCursor;

use super::harness::{accept, backends, tenant_and_agent};

#[tokio::test]
async fn pages_of_sessions_join_into_the_whole_list() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bob) = tenant_and_agent(&h.store, &h.agents, "bob").await;
        for n in 0..7 {
            accept(&h.store, &tenant, &ada, &format!("c{n}")).await;
        }
        accept(&h.store, &tenant, &bob, "b").await;
        let rival = h.store.tenants().create("rival").await.unwrap();
        let whole = h.store.sessions(tenant.id).list(Some(ada.id), 100).await.unwrap();
        assert_eq!(whole.len(), 7, "{}", h.name);
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page =
                h.store.sessions(tenant.id).list_before(Some(ada.id), cursor, 2).await.unwrap();
            assert!(page.len() <= 2, "{}", h.name);
            let Some(last) = page.last() else { break };
            // Through its text, as a client sends it back.
            cursor = SessionCursor::parse(&SessionCursor::after(last).encode());
            assert!(cursor.is_some(), "{}", h.name);
            paged.extend(page);
        }
        let ids = |rows: &[clade_store::SessionRow]| rows.iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(&paged), ids(&whole), "{}: pages in the whole list's order", h.name);
        // Without an agent: ada's and bob's, and none of rival's (which has none to show).
        let all = h.store.sessions(tenant.id).list_before(None, None, 100).await.unwrap();
        assert_eq!(all.len(), 8, "{}", h.name);
        let rivals = h.store.sessions(rival.id).list_before(None, None, 100).await.unwrap();
        assert!(rivals.is_empty(), "{}", h.name);
        let after_all = SessionCursor::after(all.last().unwrap());
        let none =
            h.store.sessions(tenant.id).list_before(None, Some(after_all), 100).await.unwrap();
        assert!(none.is_empty(), "{}", h.name);
    }
    for garbage in [
        "",
        "12",
        "x.00",
        "1.zz",
        "1.00ff",
        "99999999999999999999.00000000000000000000000000000000",
    ] {
        assert_eq!(SessionCursor::parse(garbage), None, "{garbage:?}");
    }
}
