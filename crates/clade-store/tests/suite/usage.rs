use clade_core::{AgentConfig, Handle, Tenant, Timestamp};
use clade_store::{BudgetCounter, BudgetSettlement, Error, NewAgent, UsageRecord};

use super::harness::backends;

fn counter(amount: u64, limit: u64) -> BudgetCounter {
    BudgetCounter {
        scope: "tenant:t".into(),
        period: "d2026-11-22".into(),
        unit: "tokens".into(),
        amount,
        limit,
        label: "tenant t: 100 tokens per day".into(),
    }
}

#[tokio::test]
async fn usage_is_recorded_and_summed_per_agent_and_model() {
    for h in backends().await {
        let tenant = h.store.tenant(Tenant::DEFAULT_NAME).await.unwrap();
        let spec = NewAgent {
            handle: Handle::parse("ada").unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let ada = h.agents.create(tenant.id, spec).await.unwrap();
        let record = |agent, model: &str, cost| UsageRecord {
            tenant: tenant.id,
            agent,
            turn: None,
            model: model.into(),
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 2,
            cache_write_tokens: 0,
            cost_micros: cost,
        };
        h.store.record_usage(record(Some(ada.id), "fast", 100)).await.unwrap();
        h.store.record_usage(record(Some(ada.id), "fast", 50)).await.unwrap();
        h.store.record_usage(record(None, "smart", 7)).await.unwrap();
        let all = h.store.usage(tenant.id, None, Timestamp::from_millis(0)).await.unwrap();
        assert_eq!(all.len(), 2, "{}: {all:?}", h.name);
        let ada_fast = all.iter().find(|u| u.agent.as_deref() == Some("ada")).unwrap();
        assert_eq!(
            (ada_fast.calls, ada_fast.input_tokens, ada_fast.cost_micros),
            (2, 20, 150),
            "{}",
            h.name
        );
        let only_ada =
            h.store.usage(tenant.id, Some(ada.id), Timestamp::from_millis(0)).await.unwrap();
        assert_eq!(only_ada.len(), 1, "{}", h.name);
        let future =
            h.store.usage(tenant.id, None, Timestamp::from_millis(i64::MAX / 2)).await.unwrap();
        assert!(future.is_empty(), "{}", h.name);
        // Other tenants see none of it.
        let other = h.store.create_tenant("other").await.unwrap();
        assert!(h.store.usage(other.id, None, Timestamp::from_millis(0)).await.unwrap().is_empty());
        // Deleting the agent deletes its usage.
        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert_eq!(
            h.store.usage(tenant.id, None, Timestamp::from_millis(0)).await.unwrap().len(),
            1,
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn budget_reservations_are_atomic_and_never_overspend() {
    for h in backends().await {
        h.store.reserve_budget(vec![counter(60, 100)]).await.unwrap();
        let err = h.store.reserve_budget(vec![counter(60, 100)]).await.unwrap_err();
        assert!(
            matches!(err, Error::BudgetExceeded(ref m) if m.contains("100 tokens per day")),
            "{}: {err}",
            h.name
        );
        assert_eq!(
            h.store.budget_counter("tenant:t", "d2026-11-22", "tokens").await.unwrap(),
            (0, 60)
        );

        // All-or-nothing across counters: the second refuses, the first is not left raised.
        let mut other = counter(10, 1000);
        other.scope = "agent:a".into();
        let err = h.store.reserve_budget(vec![other.clone(), counter(50, 100)]).await.unwrap_err();
        assert!(matches!(err, Error::BudgetExceeded(_)), "{err}");
        assert_eq!(
            h.store.budget_counter("agent:a", "d2026-11-22", "tokens").await.unwrap(),
            (0, 0),
            "{}",
            h.name
        );

        // Settling returns the reservation and books the real spend.
        let settle = BudgetSettlement {
            scope: "tenant:t".into(),
            period: "d2026-11-22".into(),
            unit: "tokens".into(),
            reserved: 60,
            spent: 25,
        };
        h.store.settle_budget(vec![settle]).await.unwrap();
        assert_eq!(
            h.store.budget_counter("tenant:t", "d2026-11-22", "tokens").await.unwrap(),
            (25, 0),
            "{}",
            h.name
        );

        // Many concurrent reservations: exactly as many as fit succeed.
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let store = h.store.clone();
            tasks.push(tokio::spawn(
                async move { store.reserve_budget(vec![counter(10, 100)]).await },
            ));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 7, "{}: 25 spent + 7 x 10 reserved fits under 100", h.name);
        let (spent, reserved) =
            h.store.budget_counter("tenant:t", "d2026-11-22", "tokens").await.unwrap();
        assert!(spent + reserved <= 100, "{}", h.name);
    }
}
