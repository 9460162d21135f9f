use clade_core::Timestamp;
use clade_store::{BudgetCounter, BudgetSettlement, Error, UsageBy, UsageRecord};

use super::harness::{accept, backends, new_turn, tenant_and_agent};

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
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
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
        let all = h
            .store
            .usage(tenant.id)
            .summary(None, Timestamp::from_millis(0), UsageBy::Total)
            .await
            .unwrap();
        assert_eq!(all.len(), 2, "{}: {all:?}", h.name);
        let ada_fast = all.iter().find(|u| u.agent.as_deref() == Some("ada")).unwrap();
        assert_eq!(
            (ada_fast.calls, ada_fast.input_tokens, ada_fast.cost_micros),
            (2, 20, 150),
            "{}",
            h.name
        );
        let only_ada = h
            .store
            .usage(tenant.id)
            .summary(Some(ada.id), Timestamp::from_millis(0), UsageBy::Total)
            .await
            .unwrap();
        assert_eq!(only_ada.len(), 1, "{}", h.name);
        let future = h
            .store
            .usage(tenant.id)
            .summary(None, Timestamp::from_millis(i64::MAX / 2), UsageBy::Total)
            .await
            .unwrap();
        assert!(future.is_empty(), "{}", h.name);
        // Other tenants see none of it.
        let other = h.store.tenants().create("other").await.unwrap();
        assert!(
            h.store
                .usage(other.id)
                .summary(None, Timestamp::from_millis(0), UsageBy::Total)
                .await
                .unwrap()
                .is_empty()
        );
        // Deleting the agent deletes its usage.
        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert_eq!(
            h.store
                .usage(tenant.id)
                .summary(None, Timestamp::from_millis(0), UsageBy::Total)
                .await
                .unwrap()
                .len(),
            1,
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn budget_reservations_are_atomic_and_never_overspend() {
    for h in backends().await {
        h.store.budgets().reserve(vec![counter(60, 100)]).await.unwrap();
        let err = h.store.budgets().reserve(vec![counter(60, 100)]).await.unwrap_err();
        assert!(
            matches!(err, Error::BudgetExceeded(ref m) if m.contains("100 tokens per day")),
            "{}: {err}",
            h.name
        );
        assert_eq!(
            h.store.budgets().counter("tenant:t", "d2026-11-22", "tokens").await.unwrap(),
            (0, 60)
        );

        // All-or-nothing across counters: the second refuses, the first is not left raised.
        let mut other = counter(10, 1000);
        other.scope = "agent:a".into();
        let err =
            h.store.budgets().reserve(vec![other.clone(), counter(50, 100)]).await.unwrap_err();
        assert!(matches!(err, Error::BudgetExceeded(_)), "{err}");
        assert_eq!(
            h.store.budgets().counter("agent:a", "d2026-11-22", "tokens").await.unwrap(),
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
        h.store.budgets().settle(vec![settle]).await.unwrap();
        assert_eq!(
            h.store.budgets().counter("tenant:t", "d2026-11-22", "tokens").await.unwrap(),
            (25, 0),
            "{}",
            h.name
        );

        // Many concurrent reservations: exactly as many as fit succeed.
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let store = h.store.clone();
            tasks.push(tokio::spawn(async move {
                store.budgets().reserve(vec![counter(10, 100)]).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 7, "{}: 25 spent + 7 x 10 reserved fits under 100", h.name);
        let (spent, reserved) =
            h.store.budgets().counter("tenant:t", "d2026-11-22", "tokens").await.unwrap();
        assert!(spent + reserved <= 100, "{}", h.name);
    }
}

/// A turn carries the usage of its model calls, summed as they are recorded: the first with
/// the turn's start, the next with a later journal step.
#[tokio::test]
async fn a_turn_sums_the_usage_of_its_model_calls() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let accepted = accept(&h.store, &tenant, &ada, "c").await;
        let turn = new_turn(&h.store, &accepted, &tenant, &ada);
        let usage = |input, cached, output, cost| UsageRecord {
            tenant: tenant.id,
            agent: Some(ada.id),
            turn: Some(turn.id),
            model: "fast".into(),
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
            cache_write_tokens: 1,
            cost_micros: cost,
        };
        let step = |iteration| clade_store::JournalEntry {
            step: clade_core::StepKey::Model { iteration },
            data: "{}".into(),
        };
        h.store
            .turns()
            .begin(
                &turn,
                vec![accepted.event_id],
                Vec::new(),
                Some((step(0), Some(usage(10, 4, 3, 7)))),
                None,
            )
            .await
            .unwrap();
        h.store
            .turns()
            .append_journal(&turn, step(1), Vec::new(), Some(usage(20, 0, 5, 11)), None)
            .await
            .unwrap();
        // A step journaled again (a resumed turn) is not counted twice.
        h.store
            .turns()
            .append_journal(&turn, step(1), Vec::new(), Some(usage(20, 0, 5, 11)), None)
            .await
            .unwrap();

        let turns = h
            .store
            .sessions(tenant.id)
            .turn_records(accepted.session_id, None, 1000)
            .await
            .unwrap();
        assert_eq!(turns.len(), 1, "{}", h.name);
        let spent = turns[0].usage;
        assert_eq!(spent.model_calls, 2, "{}", h.name);
        assert_eq!(
            spent.input_tokens,
            10 + 4 + 1 + 20 + 1,
            "{}: input counts cached and cache writes",
            h.name
        );
        assert_eq!(spent.output_tokens, 8, "{}", h.name);
        assert_eq!(spent.cost_micros, 18, "{}", h.name);
    }
}

/// A journal step and its audit record commit together: a record that cannot be written
/// leaves no step (the engine then does not run the call the step starts).
#[tokio::test]
async fn a_journal_step_and_its_audit_record_commit_together() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let accepted = accept(&h.store, &tenant, &ada, "c").await;
        let turn = new_turn(&h.store, &accepted, &tenant, &ada);
        h.store
            .turns()
            .begin(&turn, vec![accepted.event_id], Vec::new(), None, None)
            .await
            .unwrap();
        let start = clade_core::StepKey::ToolStart { iteration: 0, index: 0 };
        let step = || clade_store::JournalEntry { step: start, data: "{}".into() };
        let audit = |tenant_id| clade_store::AuditEntry {
            tenant: tenant_id,
            agent: Some(ada.id),
            kind: clade_core::AuditKind::ToolDecision,
            tool: Some("shell.exec".into()),
            decision: Some("allow".into()),
            detail: "{}".into(),
        };
        // A record for a tenant that does not exist cannot be written.
        let nobody = clade_core::TenantId::generate(h.store.now());
        let failed = h
            .store
            .turns()
            .append_journal(&turn, step(), Vec::new(), None, Some(audit(nobody)))
            .await;
        assert!(failed.is_err(), "{}", h.name);
        assert!(
            h.store.system().journal(turn.id).await.unwrap().iter().all(|e| e.step != start),
            "{}",
            h.name
        );
        // A good one commits with its step.
        h.store
            .turns()
            .append_journal(&turn, step(), Vec::new(), None, Some(audit(tenant.id)))
            .await
            .unwrap();
        assert!(
            h.store.system().journal(turn.id).await.unwrap().iter().any(|e| e.step == start),
            "{}",
            h.name
        );
        let records = h
            .store
            .access(tenant.id)
            .audit_records(&clade_store::AuditFilter { limit: 1000, ..Default::default() })
            .await
            .unwrap();
        assert!(records.iter().any(|r| r.kind == "tool.decision"), "{}", h.name);
    }
}

/// A session's turns come a page at a time, each with its own events and journal steps, and
/// never with another session's, though the two sessions' turns interleave in time.
#[tokio::test]
async fn turn_records_page_through_one_sessions_turns() {
    use clade_core::StepKey;
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let mut ours = Vec::new();
        let mut session = None;
        for channel in ["c", "other", "c", "other", "c", "c", "c"] {
            let accepted = accept(&h.store, &tenant, &ada, channel).await;
            let turn = new_turn(&h.store, &accepted, &tenant, &ada);
            let step = |iteration| clade_store::JournalEntry {
                step: StepKey::Model { iteration },
                data: format!("{{\"turn\":\"{}\"}}", turn.id),
            };
            h.store
                .turns()
                .begin(&turn, vec![accepted.event_id], Vec::new(), Some((step(0), None)), None)
                .await
                .unwrap();
            h.store.turns().append_journal(&turn, step(1), Vec::new(), None, None).await.unwrap();
            if channel == "c" {
                ours.push((turn.id, accepted.event_id));
                session = Some(accepted.session_id);
            }
        }
        let session = session.unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = h.store.sessions(tenant.id).turn_records(session, after, 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2, "{}", h.name);
            for record in &page {
                assert_eq!(record.turn.session_id, session, "{}", h.name);
                let events: Vec<_> = record.events.iter().map(|e| e.id).collect();
                let steps: Vec<_> = record.steps.iter().map(|s| s.step.to_string()).collect();
                assert_eq!(steps, ["model/0", "model/1"], "{}", h.name);
                let own = format!("{{\"turn\":\"{}\"}}", record.turn.id);
                assert!(
                    record.steps.iter().all(|s| s.data == own),
                    "{}: a step of another turn",
                    h.name
                );
                seen.push((record.turn.id, events));
            }
            after = page.last().map(|r| r.turn.id);
        }
        let expected: Vec<_> = ours.iter().map(|(turn, event)| (*turn, vec![*event])).collect();
        assert_eq!(seen, expected, "{}", h.name);
    }
}

/// A handle bound to one tenant reads its own turns and journals, and nothing of another
/// tenant's, though it is handed that tenant's session and turn ids; nor a turn through the
/// wrong session.
#[tokio::test]
async fn a_tenant_scope_reads_only_its_own_tenants_turns() {
    use clade_core::StepKey;
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let rival = h.store.tenants().create("rival").await.unwrap();
        let accepted = accept(&h.store, &tenant, &ada, "c").await;
        let turn = new_turn(&h.store, &accepted, &tenant, &ada);
        let step =
            clade_store::JournalEntry { step: StepKey::Model { iteration: 0 }, data: "{}".into() };
        h.store
            .turns()
            .begin(&turn, vec![accepted.event_id], Vec::new(), Some((step, None)), None)
            .await
            .unwrap();
        let other = accept(&h.store, &tenant, &ada, "other").await;
        let (session, id) = (accepted.session_id, turn.id);

        let own = h.store.tenant_scope(tenant.id);
        assert_eq!(own.turn(session, id).await.unwrap().id, id, "{}", h.name);
        assert_eq!(own.journal(session, id).await.unwrap().len(), 1, "{}", h.name);
        assert_eq!(
            own.sessions().turn_records(session, None, 10).await.unwrap().len(),
            1,
            "{}",
            h.name
        );
        let wrong_session = own.turn(other.session_id, id).await.unwrap_err();
        assert!(matches!(wrong_session, clade_store::Error::TurnNotFound(_)), "{}", h.name);

        let theirs = h.store.tenant_scope(rival.id);
        for err in [
            theirs.turn(session, id).await.unwrap_err(),
            theirs.journal(session, id).await.unwrap_err(),
            theirs.sessions().get(session).await.unwrap_err(),
        ] {
            assert!(err.is_not_found(), "{}: {err}", h.name);
        }
        assert!(
            theirs.sessions().turn_records(session, None, 10).await.unwrap().is_empty(),
            "{}",
            h.name
        );
    }
}

/// What a tenant's conversations occupy is counted per tenant: its events (and what they
/// cause) add to its own count, never to another tenant's.
#[tokio::test]
async fn stored_bytes_are_counted_per_tenant() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let other = h.store.tenants().create("other").await.unwrap();
        let before = h.store.usage(tenant.id).stored_bytes().await.unwrap();
        for channel in ["a", "b", "c"] {
            accept(&h.store, &tenant, &ada, channel).await;
        }
        let after = h.store.usage(tenant.id).stored_bytes().await.unwrap();
        // Three texts of five bytes, plus the lifecycle events their acceptance wrote.
        assert!(after >= before + 15, "{}: {before} then {after}", h.name);
        assert_eq!(h.store.usage(other.id).stored_bytes().await.unwrap(), 0, "{}", h.name);
    }
}

/// Usage reads by day (UTC) and by session: a session's report sums the model calls of its own
/// turns, not another session's of the same agent, and reads as empty to another tenant.
#[tokio::test]
async fn usage_reads_by_day_and_by_session_within_the_tenant() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let mut sessions = Vec::new();
        for (channel, input) in [("c", 100), ("other", 7)] {
            let accepted = accept(&h.store, &tenant, &ada, channel).await;
            let turn = new_turn(&h.store, &accepted, &tenant, &ada);
            let usage = UsageRecord {
                tenant: tenant.id,
                agent: Some(ada.id),
                turn: Some(turn.id),
                model: "fast".into(),
                input_tokens: input,
                output_tokens: 10,
                cached_tokens: 3,
                cache_write_tokens: 0,
                cost_micros: 42,
            };
            let step = clade_store::JournalEntry {
                step: clade_core::StepKey::Model { iteration: 0 },
                data: "{}".into(),
            };
            h.store
                .turns()
                .begin(&turn, vec![accepted.event_id], Vec::new(), Some((step, Some(usage))), None)
                .await
                .unwrap();
            sessions.push(accepted.session_id);
        }
        let today = h.store.now().date();
        let daily = h
            .store
            .usage(tenant.id)
            .summary(None, Timestamp::from_millis(0), UsageBy::Day)
            .await
            .unwrap();
        assert_eq!(daily.len(), 1, "{}: {daily:?}", h.name);
        assert_eq!(daily[0].day.as_deref(), Some(today.as_str()), "{}", h.name);
        assert_eq!((daily[0].calls, daily[0].input_tokens), (2, 107), "{}", h.name);
        let plain = h
            .store
            .usage(tenant.id)
            .summary(None, Timestamp::from_millis(0), UsageBy::Total)
            .await
            .unwrap();
        assert_eq!(plain[0].day, None, "{}", h.name);
        // By hour: the hour the calls were made in (or the one before, had one just turned).
        let hourly = h
            .store
            .usage(tenant.id)
            .summary(None, Timestamp::from_millis(0), UsageBy::Hour)
            .await
            .unwrap();
        let hour =
            u8::try_from(h.store.now().as_millis().rem_euclid(86_400_000) / 3_600_000).unwrap();
        assert_eq!(hourly.iter().map(|u| u.calls).sum::<u64>(), 2, "{}: {hourly:?}", h.name);
        assert!(
            hourly.iter().all(|u| u.day.as_deref() == Some(today.as_str())
                && u.hour.is_some_and(|at| at == hour || at + 1 == hour)),
            "{}: {hourly:?} (now hour {hour})",
            h.name
        );
        assert_eq!(daily[0].hour, None, "{}", h.name);

        let one = h.store.usage(tenant.id).of_session(sessions[0]).await.unwrap();
        assert_eq!(one.len(), 1, "{}: {one:?}", h.name);
        assert_eq!(
            (one[0].agent.as_deref(), one[0].model.as_str(), one[0].calls),
            (Some("ada"), "fast", 1),
            "{}",
            h.name
        );
        assert_eq!((one[0].input_tokens, one[0].cached_tokens), (100, 3), "{}", h.name);
        let rival = h.store.tenants().create("rival").await.unwrap();
        assert!(
            h.store.usage(rival.id).of_session(sessions[0]).await.unwrap().is_empty(),
            "{}: another tenant read the session's usage",
            h.name
        );
    }
}
