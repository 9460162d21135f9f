//! What the runtime does when time passes, on a [`ManualClock`] the test moves: nothing here
//! waits for the time it tests. (Real time is waited only to show that nothing happened early.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod support;

use std::sync::Arc;
use std::time::Duration;

use clade_core::{ApprovalStatus, ManualClock, Tenant, Timestamp};
use clade_runtime::{CallOrigin, ToolRunner};
use clade_store::{Agents, DataDir, Store};
use support::eventually;

const START: Timestamp = Timestamp::from_millis(1_795_338_294_000);

/// A store on a manual clock with the agent `ada`.
async fn open(dir: &std::path::Path) -> (Arc<ManualClock>, Store, DataDir, Tenant) {
    let clock = Arc::new(ManualClock::new(START));
    let (store, data) = support::sqlite_store_on(dir, clock.clone()).await;
    let tenant = support::create_ada(&store, &data).await;
    (clock, store, data, tenant)
}

/// An approval nobody answers expires when the clock passes its timeout, not before, and the
/// call is denied; nothing waited the hour it was given.
#[tokio::test]
async fn an_unanswered_approval_expires_when_the_clock_passes_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, store, data, tenant) = open(dir.path()).await;
    let config: clade_config::ToolsConfig = serde_json::from_value(serde_json::json!({
        "approval_timeout_secs": 3600,
        "policy": [{ "effect": "ask", "tool": "noop" }],
    }))
    .unwrap();
    let mut registry = clade_tools::Registry::new();
    registry.register(Arc::new(support::TestTool::answering("noop")));
    let agents = Agents::new(store.clone(), data.clone());
    let runner = Arc::new(ToolRunner::new(registry, store.clone(), agents, None, &config));
    let agent = store.agents(tenant.id).get("ada").await.unwrap();

    let call = {
        let (runner, agent, origin) = (runner.clone(), agent.clone(), CallOrigin::operator(START));
        tokio::spawn(async move {
            let tool = runner.tool_set().registry().get("noop").unwrap().clone();
            let args = serde_json::json!({});
            let refused = runner.authorize(&agent, tool.as_ref(), &args, &origin).await;
            refused.err().map(|e| e.to_string())
        })
    };
    let pending = async || {
        store
            .access(tenant.id)
            .approvals(None, Some(ApprovalStatus::Pending), 10)
            .await
            .unwrap()
            .len()
            == 1
    };
    eventually("the approval request", pending).await;

    clock.advance(Duration::from_secs(3599));
    // More than a poll of real time.
    support::holds_for(
        "the approval expired before its time",
        Duration::from_millis(800),
        async || !call.is_finished() && pending().await,
    )
    .await;

    clock.advance(Duration::from_secs(1));
    let refused = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert!(refused.unwrap_or_default().contains("not given before its timeout"));
    let expired =
        store.access(tenant.id).approvals(None, Some(ApprovalStatus::Expired), 10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].decided_at, Some(START.plus(Duration::from_secs(3600))));
}

/// A webhook subscriber that keeps failing is retried on the clock's schedule (100 ms doubling
/// per attempt), not before, and dead-lettered after its last attempt: the whole schedule runs
/// by moving a manual clock, with no wait for the back-off itself.
#[tokio::test]
async fn webhook_retries_back_off_on_the_clock_and_dead_letter_after_the_last() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (clock, store, _data, tenant) = open(dir.path()).await;
    // A receiver that answers every delivery 500 and notes when (on the manual clock) it came.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<Timestamp>::new()));
    let (seen, receiver_clock) = (arrivals.clone(), clock.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the body its Content-Length announces.
            loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_lowercase();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
            }
            seen.lock().unwrap().push(clade_core::Clock::now(receiver_clock.as_ref()));
            let _ = socket
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let ended = clade_protocol::LifecycleEvent::turn_ended(clade_protocol::TurnEnded {
        turn: "t".into(),
        status: clade_protocol::Spelled(clade_core::TurnStatus::Completed),
        reply: Some("done".into()),
        error: None,
        model: None,
        files: Vec::new(),
    });
    let event = clade_store::OutboxEvent::from(&ended);
    store
        .transact(tenant.id, move |work| {
            let event = event.clone();
            Box::pin(async move { work.announce(None, &[event]).await })
        })
        .await
        .unwrap();
    let signal = Arc::new(tokio::sync::Notify::new());
    let _dispatchers = clade_runtime::outbox::spawn(
        store.clone(),
        vec![clade_runtime::outbox::Subscriber {
            name: "hook".into(),
            url,
            signing: clade_runtime::outbox::Signing::Secret(b"s".to_vec()),
            events: Vec::new(),
            agents: vec!["*".into()],
            max_attempts: 4,
            timeout: Duration::from_secs(5),
        }],
        signal,
    );
    let arrived = || arrivals.lock().unwrap().len();
    eventually("the first delivery", async || arrived() == 1).await;
    // Attempt n failed: the next waits 100 ms × 2^n on the clock.
    for (attempt, backoff_ms) in [(1, 200), (2, 400), (3, 800)] {
        clock.advance(Duration::from_millis(backoff_ms - 1));
        let early = format!("retry {attempt} came before its back-off");
        support::holds_for(&early, Duration::from_millis(300), async || arrived() == attempt).await;
        clock.advance(Duration::from_millis(1));
        eventually(&format!("retry {attempt}"), async || arrived() == attempt + 1).await;
    }
    let times = arrivals.lock().unwrap().clone();
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1].as_millis() - w[0].as_millis()).collect();
    assert_eq!(gaps, vec![200, 400, 800], "{times:?}");
    // The fourth failure was the last attempt: dead-lettered, and nothing more is sent.
    eventually("the dead letter", async || {
        store
            .system()
            .dead_letters()
            .await
            .unwrap()
            .iter()
            .any(|d| d.subscriber == "hook" && d.attempts == 4)
    })
    .await;
    clock.advance(Duration::from_secs(3600));
    let again = "delivered again after dead-lettering";
    support::holds_for(again, Duration::from_millis(300), async || arrived() == 4).await;
}

/// Budgets count per UTC day and month of the clock: a day's limit reached just before
/// midnight frees at midnight, a month's holds across days until the month turns.
#[tokio::test]
async fn budget_periods_turn_with_the_clock() {
    use clade_model::{Budget, Error, Spend};
    let dir = tempfile::tempdir().unwrap();
    // 2026-11-29T23:59:59.500Z.
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_795_996_799_500)));
    let (store, data) = support::sqlite_store_on(dir.path(), clock.clone()).await;
    let tenant = support::create_ada(&store, &data).await;
    let ada = store.agents(tenant.id).get("ada").await.unwrap();
    let budgets: clade_config::BudgetsConfig = serde_json::from_value(serde_json::json!({
        "agents": { "ada": { "tokens_per_day": 100, "tokens_per_month": 150 } }
    }))
    .unwrap();
    let budget = clade_runtime::StoreBudget::for_caller(
        store.clone(),
        clock.clone(),
        &budgets,
        &tenant,
        Some((ada.id, "ada")),
    )
    .unwrap();
    let tokens = |n| Spend { tokens: n, cost_micros: 0 };
    let spend = async |n| {
        let reservation = budget.reserve(tokens(n)).await?;
        budget.settle(reservation, tokens(n)).await;
        Ok::<(), Error>(())
    };
    let refusal = |outcome: Result<(), Error>| match outcome {
        Err(Error::BudgetExceeded(message)) => message,
        other => panic!("not refused by the budget: {other:?}"),
    };
    spend(100).await.unwrap();
    assert!(refusal(spend(1).await).contains("tokens per day"));
    // Still the same day 499 ms later; a new one at midnight, in the same month.
    clock.advance(Duration::from_millis(499));
    assert!(refusal(spend(1).await).contains("tokens per day"));
    clock.advance(Duration::from_millis(1));
    assert!(refusal(spend(100).await).contains("tokens per month"), "the month's 150 hold");
    spend(50).await.unwrap();
    assert!(refusal(spend(1).await).contains("tokens per"));
    // November 30 passes; on December 1 both counters start over.
    clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert!(refusal(spend(1).await).contains("tokens per"), "December came a second early");
    clock.advance(Duration::from_secs(1));
    spend(100).await.unwrap();
}
