//! Crash durability (RELIABILITY.md A1, A2, B1, B2, PR tier): the real `clade serve` is killed
//! with SIGKILL at random moments while many sessions send events whose turns call an
//! at-most-once and an idempotent ledger tool; a webhook subscriber receives the outbox.
//! Afterwards: every acknowledged event has exactly one completed turn, no at-most-once call
//! ran twice, per-session order held, every turn's event reached the subscriber, and repeated
//! idempotency keys got the original answer.
//!
//! The run is recorded as a [`History`] (saved under the target dir) and judged by
//! `clade_test_support::history::check`, the same checker as `cargo xtask check-history`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use clade_test_support::history::{self, Delivery, Fault, History, Op, OpKind, Turn};

use super::support::{Env, polled_within, serve_hook, write};

// PR tier of RELIABILITY.md A1: 50 kills (42 at random moments, 8 at failpoints), > 2,000 turns.
// A soak (`CLADE_SOAK_SCALE`) multiplies the events per session and the random kills.
const SESSIONS: usize = 32;
const EVENTS: usize = 64;
const KILLS: usize = 42;

/// Events per session and random kills at this run's soak scale.
fn sized() -> (usize, usize) {
    let scale = clade_test_support::soak_scale();
    (EVENTS * scale, KILLS * scale)
}
/// Each is armed twice, at a random hit count, when the build has failpoints.
const FAILPOINTS: [&str; 4] = [
    "after_commit_before_ack",
    "after_journal_intent",
    "after_tool_effect_before_result",
    "mid_outbox_publish",
];
pub(super) const SECRET: &str = "crash-test-secret";

#[derive(Default)]
pub(super) struct Deliveries {
    /// In arrival order.
    pub(super) log: Vec<Delivery>,
    pub(super) bad_signatures: usize,
    served: usize,
}

/// The client-side record of the run: every request and every fault window.
pub(super) struct Recorder {
    pub(super) start: tokio::time::Instant,
    pub(super) ops: Mutex<Vec<Op>>,
    pub(super) faults: Mutex<Vec<Fault>>,
}

impl Recorder {
    pub(super) fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(super) fn fault(&self, kind: &str, start_ms: u64) {
        let end_ms = self.ms();
        self.faults.lock().unwrap().push(Fault { kind: kind.into(), start_ms, end_ms });
    }
}

/// Which envelope a request carries.
#[derive(Clone, Copy)]
pub(super) struct Envelope {
    pub(super) session: usize,
    pub(super) position: usize,
    pub(super) kind: OpKind,
}

pub(super) async fn receiver(state: Arc<Mutex<Deliveries>>) -> String {
    serve_hook(move |headers: HeaderMap, body: Bytes| {
        let state = state.clone();
        async move {
            let mut d = state.lock().unwrap_or_else(|e| e.into_inner());
            d.served += 1;
            // A flaky subscriber: every 100th request fails and must be retried (each
            // failure costs the subscriber's queue a back-off, so keep them countable).
            if d.served.is_multiple_of(100) {
                return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            let signature =
                headers.get("x-clade-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if signature != clade_runtime::outbox::signature(SECRET.as_bytes(), &body) {
                d.bad_signatures += 1;
            }
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            d.log.push(Delivery {
                key,
                kind: value["type"].as_str().unwrap_or_default().to_owned(),
                session: value["session"].as_str().unwrap_or_default().to_owned(),
                seq: value["seq"].as_i64().unwrap_or(0),
                turn: value["data"]["turn"].as_str().unwrap_or_default().to_owned(),
            });
            axum::http::StatusCode::OK
        }
    })
    .await
}

fn text_for(s: usize, j: usize) -> String {
    match j % 4 {
        0 => format!("hello s{s} e{j}"),
        1 => format!("/tool ledger.append {{\"note\":\"s{s}e{j}\"}}"),
        2 => format!("/tool ledger.append_idempotent {{\"note\":\"s{s}e{j}\"}}"),
        _ => format!(
            "/tool ledger.append {{\"note\":\"a-s{s}e{j}\"}}\n/tool ledger.append_idempotent {{\"note\":\"b-s{s}e{j}\"}}"
        ),
    }
}

fn body_for(s: usize, j: usize) -> Value {
    json!({
        "agent": "crash",
        "text": text_for(s, j),
        "source": { "platform": "test", "channel": format!("c{s}"), "actor": "driver" },
        "idempotency_key": format!("s{s}-e{j}"),
    })
}

/// Where a driver sends: the URL and token of the server for session `s`'s attempt `n`.
pub(super) type Pick = Arc<dyn Fn(usize, usize) -> (String, String) + Send + Sync>;

/// One driver per session: its events in order, each acknowledged before the next is sent,
/// every third also sent at once by a second client (B1), which starts one server further.
pub(super) fn drive(
    sessions: usize,
    events: usize,
    client: &reqwest::Client,
    recorder: &Arc<Recorder>,
    pick: &Pick,
) -> Vec<tokio::task::JoinHandle<()>> {
    let driver = |s: usize| {
        let (client, recorder, pick) = (client.clone(), recorder.clone(), pick.clone());
        tokio::spawn(async move {
            for j in 0..events {
                let first = Envelope { session: s, position: j, kind: OpKind::First };
                let twin = (j % 3 == 0).then(|| {
                    let (client, recorder, pick) = (client.clone(), recorder.clone(), pick.clone());
                    let twin = Envelope { kind: OpKind::Twin, ..first };
                    tokio::spawn(async move {
                        send_to(&client, &|n| pick(s, n + 1), &recorder, twin).await
                    })
                });
                send_to(&client, &|n| pick(s, n), &recorder, first).await;
                if let Some(twin) = twin {
                    twin.await.unwrap();
                }
            }
        })
    };
    (0..sessions).map(driver).collect()
}

/// Sends every event once more after the crashes: all must deduplicate.
pub(super) async fn resend_all(
    sessions: usize,
    events: usize,
    client: &reqwest::Client,
    recorder: &Recorder,
    pick: &Pick,
) {
    for s in 0..sessions {
        for j in 0..events {
            let resend = Envelope { session: s, position: j, kind: OpKind::Resend };
            send_to(client, &|n| pick(s, n), recorder, resend).await;
        }
    }
}

/// Waits as long as the fault plan says (a number of ms from `range`) before the next kill.
pub(super) async fn before_next_kill(plan: &mut rand::rngs::StdRng, range: std::ops::Range<u64>) {
    let pause = plan.random_range(range);
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

/// Sends until acknowledged by the server `pick` names for each attempt (0, 1, …; it may be
/// down), recording every attempt; returns the raw 202 body.
pub(super) async fn send_to(
    client: &reqwest::Client,
    pick: &(dyn Fn(usize) -> (String, String) + Sync),
    recorder: &Recorder,
    envelope: Envelope,
) -> String {
    let body = body_for(envelope.session, envelope.position);
    for attempt in 0.. {
        let (base, token) = pick(attempt);
        let start_ms = recorder.ms();
        let sent = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(token)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let (status, text) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                (Some(status), response.text().await.ok())
            }
            Err(_) => (None, None),
        };
        recorder.ops.lock().unwrap().push(Op {
            key: format!("s{}-e{}", envelope.session, envelope.position),
            session: envelope.session,
            position: envelope.position,
            kind: envelope.kind,
            start_ms,
            end_ms: recorder.ms(),
            status,
            body: text.clone(),
        });
        if status == Some(202)
            && let Some(text) = text
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("attempts are endless")
}

/// The seed of the fault plan (which failpoint hit kills, how long between random kills):
/// `CLADE_CRASH_SEED` when set, else a fresh one. It is printed, so a failing run's plan can
/// be replayed; the threads' timing is the machine's, so a replay reproduces the plan, not
/// every interleaving.
pub(super) fn crash_seed() -> u64 {
    match std::env::var("CLADE_CRASH_SEED") {
        Ok(seed) => seed.trim().parse().unwrap_or_else(|_| {
            panic!("CLADE_CRASH_SEED={seed:?} is not a number: give the seed a run printed")
        }),
        Err(_) => rand::rng().random(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_loses_nothing_and_repeats_nothing() {
    let (events, kills) = sized();
    // Waits grow with the work: a soak's turns take longer to finish and deliver.
    let patience = |secs: u64| Duration::from_secs(secs * (events / EVENTS) as u64);
    let seed = crash_seed();
    println!("crash test seed: {seed} (replay its fault plan with CLADE_CRASH_SEED={seed})");
    let mut plan = rand::rngs::StdRng::seed_from_u64(seed);
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let hook = receiver(deliveries.clone()).await;
    let mut env = Env::new();
    env.vars.push(("HOOK_SECRET".into(), SECRET.into()));
    let ledger = env.tmp.path().join("ledger.txt");
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "testing:\n  ledger_file: {}\nsubscribers:\n  - name: hook\n    url: {hook}\n    secret_env: HOOK_SECRET\n    max_attempts: 100000\nsessions:\n  idle_secs: 2\n",
            ledger.display()
        ),
    );
    env.run(&["agents", "create", "crash"]).ok();
    let env = Arc::new(env);
    let first = env.serve(&[]);
    let url = Arc::new(RwLock::new((first.url.clone(), first.token.clone())));
    let client = reqwest::Client::new();

    // Drivers: one per session, events in order, each acknowledged before the next is sent.
    let recorder = Arc::new(Recorder {
        start: tokio::time::Instant::now(),
        ops: Mutex::default(),
        faults: Mutex::default(),
    });
    let to_the_server: Pick = {
        let url = url.clone();
        Arc::new(move |_, _| url.read().unwrap().clone())
    };
    let drivers = drive(SESSIONS, events, &client, &recorder, &to_the_server);

    // The killer: death at armed failpoints while the load is heaviest, then SIGKILL at random
    // moments, restarting each time.
    let mut server = first;
    let mut failpoint_hits = 0;
    if clade_runtime::failpoints::ENABLED {
        for name in FAILPOINTS.iter().chain(FAILPOINTS.iter()) {
            let start_ms = recorder.ms();
            server.kill9();
            let spec = format!("{name}={}", plan.random_range(1..4));
            let env2 = env.clone();
            let armed = tokio::task::spawn_blocking(move || {
                env2.try_serve_with(&[], &[("CLADE_FAILPOINTS", &spec)])
            })
            .await
            .unwrap();
            let Some(mut armed) = armed else {
                // It died at the failpoint while starting (e.g. resuming deliveries).
                failpoint_hits += 1;
                let env3 = env.clone();
                server = tokio::task::spawn_blocking(move || env3.serve(&[])).await.unwrap();
                *url.write().unwrap() = (server.url.clone(), server.token.clone());
                recorder.fault(name, start_ms);
                continue;
            };
            *url.write().unwrap() = (armed.url.clone(), armed.token.clone());
            let died = tokio::task::spawn_blocking(move || {
                let died = armed.exits_within(Duration::from_secs(4));
                (died, armed)
            })
            .await
            .unwrap();
            failpoint_hits += usize::from(died.0);
            server = died.1;
            // The armed server ran until its failpoint fired (or 4 s); the next one starts in
            // the next iteration, so the window closes when that one answers.
            recorder.fault(name, start_ms);
        }
        let start_ms = recorder.ms();
        server.kill9();
        let env = env.clone();
        server = tokio::task::spawn_blocking(move || env.serve(&[])).await.unwrap();
        *url.write().unwrap() = (server.url.clone(), server.token.clone());
        recorder.fault("kill9", start_ms);
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI must build with --features clade-cli/failpoints so the crash test can aim at failpoints"
        );
    } else {
        eprintln!(
            "WARNING: failpoints not compiled in (--features clade-cli/failpoints): random kills only"
        );
    }
    for _ in 0..kills {
        before_next_kill(&mut plan, 50..400).await;
        let start_ms = recorder.ms();
        server.kill9();
        let env = env.clone();
        server = tokio::task::spawn_blocking(move || env.serve(&[])).await.unwrap();
        *url.write().unwrap() = (server.url.clone(), server.token.clone());
        recorder.fault("kill9", start_ms);
    }
    for driver in drivers {
        driver.await.unwrap();
    }
    resend_all(SESSIONS, events, &client, &recorder, &to_the_server).await;

    println!("crash test: {kills} random kills + {failpoint_hits} failpoint deaths");
    let judged = Judged { sessions: SESSIONS, events, seed, patience: patience(1) };
    judged.judge(&server, &client, &recorder, &deliveries, &ledger, "crash").await;
    // A2: the store survived every kill: serving again ran the integrity check.
    let log = server.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// What a crash run is judged on.
pub(super) struct Judged {
    pub(super) sessions: usize,
    pub(super) events: usize,
    pub(super) seed: u64,
    /// How much longer than at the smallest size waits may take.
    pub(super) patience: Duration,
}

impl Judged {
    /// Waits until every acknowledged event's turn has ended and reached the subscriber,
    /// saves the history as `<name>-history.json` and checks it: nothing lost, nothing twice,
    /// order kept, at-most-once effects at most once.
    #[allow(clippy::print_stdout)] // The report, and where the history is kept for a re-check.
    pub(super) async fn judge(
        &self,
        server: &super::support::Server,
        client: &reqwest::Client,
        recorder: &Recorder,
        deliveries: &Mutex<Deliveries>,
        ledger: &std::path::Path,
        name: &str,
    ) {
        let Judged { sessions: session_count, events, seed, patience } = *self;
        let patience = |secs: u64| patience * u32::try_from(secs).unwrap();
        // Wait until every acknowledged event's turn has ended.
        let sessions: HashSet<String> = recorder
            .ops
            .lock()
            .unwrap()
            .iter()
            .filter(|op| op.status == Some(202))
            .filter_map(|op| serde_json::from_str::<Value>(op.body.as_deref()?).ok())
            .map(|body| body["session_id"].as_str().unwrap().to_owned())
            .collect();
        let all_turns = async || {
            let mut all = Vec::new();
            for session in &sessions {
                for turn in &server.all_turns(session).await {
                    all.push(Turn {
                        session: session.clone(),
                        id: turn["id"].as_str().unwrap().to_owned(),
                        status: turn["status"].as_str().unwrap().to_owned(),
                        reply: turn["reply"].as_str().map(str::to_owned),
                        events: turn["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e["id"].as_str().unwrap().to_owned())
                            .collect(),
                    });
                }
            }
            all
        };
        let all_finished = |all: &Vec<Turn>| {
            let finished: usize =
                all.iter().filter(|t| t.status != "running").map(|t| t.events.len()).sum();
            finished >= session_count * events
        };
        let every = Duration::from_millis(200);
        let turns = polled_within(patience(90), every, all_turns, all_finished).await;

        // B2: the same key with another payload is refused and starts nothing.
        let conflict_status = client
            .post(format!("{}/v1/events", server.url))
            .bearer_auth(&server.token)
            .json(&json!({ "agent": "crash", "text": "something else", "source": { "platform": "test", "channel": "c0", "actor": "driver" }, "idempotency_key": "s0-e0" }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();

        // C (partial): wait until every finished turn reached the subscriber.
        let missing = async || history::undelivered(&turns, &deliveries.lock().unwrap().log);
        polled_within(patience(120), every, missing, |&missing: &usize| missing == 0).await;

        let record = {
            let d = deliveries.lock().unwrap();
            History {
                ops: recorder.ops.lock().unwrap().clone(),
                faults: recorder.faults.lock().unwrap().clone(),
                turns,
                deliveries: d.log.clone(),
                bad_signatures: d.bad_signatures,
                ledger: std::fs::read_to_string(ledger).unwrap_or_default(),
                conflict_status,
            }
        };
        let saved =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-history.json"));
        record.save(&saved).unwrap();
        let report = history::check(&record);
        println!(
            "{name} test: {report}\nhistory: {} (re-check with `cargo xtask check-history {}`)",
            saved.display(),
            saved.display()
        );
        assert_eq!(report.violations(), Vec::<String>::new(), "seed {seed}");
        assert_eq!(report.acknowledged, session_count * events);
        // Every completed turn made its tool calls: each idempotent call under one key however
        // often it ran, each at-most-once call at most once, and one that may not have run was
        // reported to the model as interrupted.
        let calls_of = |residues: [usize; 2]| {
            session_count * (0..events).filter(|j| residues.contains(&(j % 4))).count()
        };
        assert_eq!(report.idempotent_keys, calls_of([2, 3]), "idempotent calls, one key each");
        let at_most_once = calls_of([1, 3]);
        assert!(
            report.at_most_once_effects <= at_most_once,
            "{} effects of {at_most_once} calls",
            report.at_most_once_effects
        );
        // (A record a kill cut short inside its key is an effect too, just not countable by key.)
        assert!(
            report.at_most_once_effects + report.interrupted + report.torn_records >= at_most_once,
            "{} at-most-once effects + {} interrupted + {} cut short < {at_most_once} calls",
            report.at_most_once_effects,
            report.interrupted,
            report.torn_records
        );
    }
}
