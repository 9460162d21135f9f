use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{Jitter, ManualClock, Timestamp};
use clade_model::{
    Budget, Error, ModelEntry, Price, Provider, Reservation, RouteEvent, Router, RouterOptions,
    Scripted, Spend,
};
use futures::future::BoxFuture;

use super::support::{anthropic, openai, stub, user};

fn entry(provider: Arc<dyn Provider>, model: &str) -> ModelEntry {
    ModelEntry {
        provider,
        model: model.into(),
        price: Price { input: 1.0, output: 2.0, ..Price::default() },
    }
}

fn fast_options() -> RouterOptions {
    RouterOptions {
        max_retries: 2,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(200),
        cooldown: Duration::from_secs(60),
    }
}

fn chain(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn falls_back_to_the_next_model_and_records_why() {
    let stub = stub().await;
    let models = HashMap::from([
        ("broken".to_owned(), entry(openai(&stub, true), "stub+status=500")),
        ("healthy".to_owned(), entry(anthropic(&stub, true), "stub")),
    ]);
    let router = Router::new(models, fast_options());
    let outcome =
        router.call(&chain(&["broken", "healthy"]), &user("hi"), None, &mut |_| {}).await.unwrap();
    assert_eq!(outcome.model, "healthy");
    assert_eq!(outcome.response.text, "echo: hi");
    assert!(
        outcome
            .events
            .contains(&RouteEvent::Fallback { from: "broken".into(), to: "healthy".into() }),
        "{:?}",
        outcome.events
    );
    let failures = outcome
        .events
        .iter()
        .filter(|e| matches!(e, RouteEvent::Failed { class: "server_error", .. }))
        .count();
    assert_eq!(failures, 1, "500 is not retried on the same model: {:?}", outcome.events);
    assert!(outcome.cost_micros > 0);
}

#[tokio::test]
async fn retries_rate_limits_honouring_retry_after() {
    let stub = stub().await;
    let models = HashMap::from([(
        "m".to_owned(),
        entry(openai(&stub, true), "stub+status=429x2+retry-after=0.02"),
    )]);
    let router = Router::new(models, fast_options());
    let outcome = router.call(&chain(&["m"]), &user("hi"), None, &mut |_| {}).await.unwrap();
    assert_eq!(outcome.model, "m");
    let retries: Vec<_> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            RouteEvent::Retry { after_ms, .. } => Some(*after_ms),
            _ => None,
        })
        .collect();
    assert_eq!(retries, vec![20, 20], "{:?}", outcome.events);
}

#[tokio::test]
async fn a_rate_limited_model_cools_down() {
    let stub = stub().await;
    let models = HashMap::from([
        ("limited".to_owned(), entry(openai(&stub, true), "stub+status=429+retry-after=30")),
        ("backup".to_owned(), entry(Arc::new(Scripted), "scripted")),
    ]);
    let router = Router::new(models, fast_options());
    let route = chain(&["limited", "backup"]);
    let first = router.call(&route, &user("hi"), None, &mut |_| {}).await.unwrap();
    assert_eq!(first.model, "backup");
    let hits = stub.captured().len();
    assert_eq!(hits, 1, "a 30 s Retry-After is not waited out");
    let second = router.call(&route, &user("again"), None, &mut |_| {}).await.unwrap();
    assert_eq!(second.model, "backup");
    assert_eq!(stub.captured().len(), hits, "the cooling model is not called");
    assert!(
        second
            .events
            .iter()
            .any(|e| matches!(e, RouteEvent::CoolingDown { model, .. } if model == "limited")),
        "{:?}",
        second.events
    );
}

/// A cooldown ends when the router's clock passes it, and not before: the limited model is
/// tried again then. Nothing waits the 30 s.
#[tokio::test]
async fn a_cooldown_ends_when_the_clock_passes_it() {
    let stub = stub().await;
    let models = HashMap::from([
        ("limited".to_owned(), entry(openai(&stub, true), "stub+status=429+retry-after=30")),
        ("backup".to_owned(), entry(Arc::new(Scripted), "scripted")),
    ]);
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_795_338_294_000)));
    let router = Router::new(models, fast_options()).on_clock(clock.clone());
    let route = chain(&["limited", "backup"]);
    router.call(&route, &user("hi"), None, &mut |_| {}).await.unwrap();
    assert_eq!(stub.captured().len(), 1);

    clock.advance(Duration::from_millis(29_999));
    router.call(&route, &user("still cooling"), None, &mut |_| {}).await.unwrap();
    assert_eq!(stub.captured().len(), 1, "called before its cooldown ended");

    clock.advance(Duration::from_millis(1));
    let third = router.call(&route, &user("again"), None, &mut |_| {}).await.unwrap();
    assert_eq!(stub.captured().len(), 2, "not tried again once its cooldown ended");
    assert_eq!(third.model, "backup", "it is still rate limited");
}

#[tokio::test]
async fn request_errors_do_not_fall_back_and_partial_output_is_not_repeated() {
    let stub = stub().await;
    let models = HashMap::from([
        ("invalid".to_owned(), entry(openai(&stub, true), "stub+context-too-long")),
        ("cut".to_owned(), entry(openai(&stub, true), "stub+truncate")),
        ("backup".to_owned(), entry(Arc::new(Scripted), "scripted")),
    ]);
    let router = Router::new(models, fast_options());
    let err = router
        .call(&chain(&["invalid", "backup"]), &user("hi"), None, &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err.error, Error::ContextTooLong { .. }), "{err}");
    // The truncated stream had already shown text: falling back would show a second answer.
    let mut shown = 0;
    let err = router
        .call(
            &chain(&["cut", "backup"]),
            &user("/reply many words in this answer here"),
            None,
            &mut |_| shown += 1,
        )
        .await
        .unwrap_err();
    assert!(matches!(err.error, Error::MalformedResponse(_)), "{err}");
    assert!(shown > 0);
    let err = router.call(&chain(&["nope"]), &user("hi"), None, &mut |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("not configured"), "{err}");
}

/// An in-memory budget with atomic reservations, as the contract requires.
struct Ledger {
    limit: u64,
    state: Mutex<(u64, u64)>, // (spent, reserved)
}

impl Budget for Ledger {
    fn reserve(&self, estimate: Spend) -> BoxFuture<'_, Result<Reservation, Error>> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            if state.0 + state.1 + estimate.cost_micros > self.limit {
                return Err(Error::BudgetExceeded("daily budget exhausted".into()));
            }
            state.1 += estimate.cost_micros;
            Ok(Reservation { id: "r".into(), reserved: estimate })
        })
    }

    fn settle(&self, reservation: Reservation, actual: Spend) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            state.1 -= reservation.reserved.cost_micros;
            state.0 += actual.cost_micros;
        })
    }
}

#[tokio::test]
async fn budgets_refuse_before_calling_and_never_overspend() {
    let stub = stub().await;
    let models = HashMap::from([("m".to_owned(), entry(openai(&stub, true), "stub+latency=20"))]);
    let router = Arc::new(Router::new(models, fast_options()));
    let mut request = user("hi");
    request.params.max_tokens = 100;
    let estimate = clade_model::router::estimate(router.model("m").unwrap(), &request).cost_micros;
    // Room for exactly three worst-case calls.
    let ledger = Arc::new(Ledger { limit: estimate * 3, state: Mutex::new((0, 0)) });
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (router, ledger, request) = (router.clone(), ledger.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            router
                .call(
                    &["m".to_owned()],
                    &request,
                    Some(ledger.as_ref() as &dyn Budget),
                    &mut |_| {},
                )
                .await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(err) => {
                assert!(matches!(err.error, Error::BudgetExceeded(_)), "{err}");
                refused += 1;
            }
        }
    }
    assert!(ok >= 3, "the first calls fit: {ok}");
    assert_eq!(ok + refused, 12);
    let (spent, reserved) = *ledger.state.lock().unwrap();
    assert_eq!(reserved, 0, "all reservations settled");
    assert!(spent <= estimate * 3, "overspent: {spent} > {}", estimate * 3);
    // Refused calls never reached the model.
    assert_eq!(stub.captured().len(), ok);
}

/// Back-off jitter comes from the router's seeded source: two routers with one seed retry on
/// the same schedule, another seed spreads differently, and every wait lies within the
/// jittered window (half to all of the exponential step).
#[tokio::test]
async fn retries_back_off_on_the_schedule_their_seed_gives() {
    let stub = stub().await;
    let options = RouterOptions {
        max_retries: 3,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(80),
        cooldown: Duration::from_secs(60),
    };
    let waits = async |seed: u64| {
        let models = HashMap::from([
            ("flaky".to_owned(), entry(openai(&stub, true), "stub+status=503")),
            ("backup".to_owned(), entry(Arc::new(Scripted), "scripted")),
        ]);
        let router =
            Router::new(models, options.clone()).with_jitter(Arc::new(Jitter::seeded(seed)));
        let mut waits = Vec::new();
        for n in 0..4 {
            let outcome = router
                .call(&chain(&["flaky", "backup"]), &user(&format!("hi {n}")), None, &mut |_| {})
                .await
                .unwrap();
            waits.extend(outcome.events.iter().filter_map(|e| match e {
                RouteEvent::Retry { after_ms, .. } => Some(*after_ms),
                _ => None,
            }));
        }
        waits
    };
    let first = waits(42).await;
    assert_eq!(first.len(), 12, "3 retries per call: {first:?}");
    for (i, wait) in first.iter().enumerate() {
        let step = 10u64 << (i % 3);
        assert!((step / 2..=step).contains(wait), "retry {i} waited {wait} ms, step {step}");
    }
    assert_eq!(waits(42).await, first, "one seed, two schedules");
    let mut differ = false;
    for seed in [7, 8, 9] {
        differ |= waits(seed).await != first;
    }
    assert!(differ, "three other seeds all gave the same schedule");
}
