//! The history of a crash run and the checker of RELIABILITY.md's contract over it.
//!
//! A load driver records every request it sent (with client timestamps and the answer), every
//! fault it injected, the turns the server reports at the end, every webhook delivery and the
//! ledger tool's log; [`check`] verifies the contract on that record alone, so a run can be
//! saved (`History::save`) and re-checked later with `cargo xtask check-history <file>`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Below this share of successful requests outside fault windows a run proves nothing
/// (the "trivial pass" guard of Restate's Jepsen suite).
pub const MIN_FAULT_FREE_SUCCESS: f64 = 0.95;

/// Everything a crash run observed, from the client's side.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// Every request sent to `POST /v1/events`, in the order they were started.
    pub ops: Vec<Op>,
    /// Every fault injected: from the kill until the restarted server answered.
    pub faults: Vec<Fault>,
    /// Each session's turns as `GET /v1/sessions/{id}/turns` reported them at the end.
    pub turns: Vec<Turn>,
    /// Webhook deliveries in arrival order (redeliveries included).
    pub deliveries: Vec<Delivery>,
    /// Deliveries whose HMAC signature did not verify.
    pub bad_signatures: usize,
    /// The ledger tool's log: one `<tool> <key> …` line per effect.
    pub ledger: String,
    /// The status of a request reusing a key with another payload (must be 409).
    pub conflict_status: u16,
}

/// One request of the load driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    /// The idempotency key (one logical envelope).
    pub key: String,
    /// The driver's session and the envelope's position in it (order is checked on this).
    pub session: usize,
    pub position: usize,
    /// `first` (the driver's own send), `twin` (a concurrent duplicate) or `resend` (after
    /// the run, to check deduplication).
    pub kind: OpKind,
    pub start_ms: u64,
    pub end_ms: u64,
    /// HTTP status, or `None` when the request failed (connection refused, timeout).
    pub status: Option<u16>,
    /// The response body of an accepted request.
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    First,
    Twin,
    Resend,
}

/// A fault window: the server was killed at `start_ms` and answered again at `end_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// `kill9`, `partition-postgres`, `partition-nats` or the failpoint's name.
    pub kind: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// A turn as the API reported it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Turn {
    pub session: String,
    pub id: String,
    pub status: String,
    pub reply: Option<String>,
    /// The ids of the events the turn answered, in order.
    pub events: Vec<String>,
}

/// One webhook delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub key: String,
    pub kind: String,
    pub session: String,
    pub seq: i64,
    pub turn: String,
}

impl History {
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a crash-run history: {e}", path.display()))
    }
}

/// What the checker counted; [`Report::violations`] says what breaks the contract.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub faults: usize,
    pub acknowledged: usize,
    pub turns: usize,
    /// Acknowledged events with no turn.
    pub lost: usize,
    /// Events answered by more than one turn.
    pub processed_twice: usize,
    pub order_violations: usize,
    pub not_completed: usize,
    /// Repeats of a key (twins and resends) that were accepted.
    pub repeats: usize,
    /// Repeats whose answer differed from the original acknowledgement.
    pub different_answers: usize,
    pub conflict_status: u16,
    pub at_most_once_effects: usize,
    pub at_most_once_twice: usize,
    pub interrupted: usize,
    pub idempotent_keys: usize,
    pub idempotent_repeats: usize,
    /// Ledger records a kill cut short inside their key (see `ledger_records`).
    pub torn_records: usize,
    pub deliveries: usize,
    pub distinct_deliveries: usize,
    /// Finished turns whose `turn.finished` never reached the subscriber.
    pub undelivered: usize,
    pub delivery_order_violations: usize,
    pub bad_signatures: usize,
    /// Deliveries without an idempotency key (a receiver could not drop their repeats).
    pub keyless_deliveries: usize,
    /// Keys seen on deliveries of two different events (a receiver would drop one of them).
    pub shared_keys: usize,
    /// Requests sent outside every fault window, and how many of them succeeded.
    pub fault_free_requests: usize,
    pub fault_free_successes: usize,
}

impl Report {
    /// Each broken promise, named; empty when the run kept the contract.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut expect_zero = |n: usize, what: &str| {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        };
        expect_zero(self.lost, "acknowledged events without a turn");
        expect_zero(self.processed_twice, "events processed twice");
        expect_zero(self.order_violations, "per-session order violations");
        expect_zero(self.not_completed, "turns that did not complete");
        expect_zero(self.different_answers, "repeated keys answered differently");
        expect_zero(self.at_most_once_twice, "at-most-once effects that ran twice");
        expect_zero(self.undelivered, "finished turns never delivered to the subscriber");
        expect_zero(self.delivery_order_violations, "deliveries out of order within a session");
        expect_zero(self.bad_signatures, "deliveries with a bad signature");
        expect_zero(self.keyless_deliveries, "deliveries without an idempotency key");
        expect_zero(self.shared_keys, "idempotency keys shared by two events");
        if self.conflict_status != 409 {
            out.push(format!(
                "a reused key with a new payload got HTTP {} instead of 409",
                self.conflict_status
            ));
        }
        if self.acknowledged == 0 {
            out.push("no event was acknowledged: the run tested nothing".into());
        }
        let share = self.fault_free_share();
        if share < MIN_FAULT_FREE_SUCCESS {
            out.push(format!(
                "only {:.1} % of {} requests outside fault windows succeeded (at least {:.0} % \
                 needed for the run to count)",
                share * 100.0,
                self.fault_free_requests,
                MIN_FAULT_FREE_SUCCESS * 100.0
            ));
        }
        out
    }

    fn fault_free_share(&self) -> f64 {
        if self.fault_free_requests == 0 {
            return 0.0;
        }
        self.fault_free_successes as f64 / self.fault_free_requests as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} faults, {} acknowledged events, {} turns, {} lost, {} processed twice, {} order \
             violations, {} not completed; {} repeated keys, {} different answers, \
             duplicate-with-new-payload -> HTTP {}; ledger: {} at-most-once effects, {} ran \
             twice, {} reported interrupted, {} idempotent keys ({} repeats dropped by key), {} \
             records cut short by a kill; \
             webhook: {} deliveries ({} distinct), {} finished turns undelivered, {} order \
             violations, {} bad signatures, {} without a key, {} keys shared by two events; \
             {} of {} requests outside fault windows succeeded ({:.1} %)",
            self.faults,
            self.acknowledged,
            self.turns,
            self.lost,
            self.processed_twice,
            self.order_violations,
            self.not_completed,
            self.repeats,
            self.different_answers,
            self.conflict_status,
            self.at_most_once_effects,
            self.at_most_once_twice,
            self.interrupted,
            self.idempotent_keys,
            self.idempotent_repeats,
            self.torn_records,
            self.deliveries,
            self.distinct_deliveries,
            self.undelivered,
            self.delivery_order_violations,
            self.bad_signatures,
            self.keyless_deliveries,
            self.shared_keys,
            self.fault_free_successes,
            self.fault_free_requests,
            self.fault_free_share() * 100.0,
        )
    }
}

fn accepted(op: &Op) -> Option<&str> {
    (op.status == Some(202)).then_some(op.body.as_deref()).flatten()
}

fn event_id(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["event_id"].as_str().map(str::to_owned)
}

/// The ledger's records. Each is one `write` of `<tool> <key> <call id> <pid> <note>\n`, but a
/// `kill -9` can cut a write short (the kernel stops copying at a page boundary when a fatal
/// signal is pending), and the next record then follows on the same line. Every record starts
/// with the tool's name, so records are split there rather than at line ends.
fn ledger_records(ledger: &str) -> impl Iterator<Item = &str> {
    let starts: Vec<usize> = ledger.match_indices("ledger.append").map(|(at, _)| at).collect();
    let ends: Vec<usize> = starts.iter().skip(1).copied().chain([ledger.len()]).collect();
    starts.into_iter().zip(ends).map(move |(start, end)| ledger[start..end].trim_end())
}

/// Finished turns whose `turn.finished` event is not among `deliveries`.
pub fn undelivered(turns: &[Turn], deliveries: &[Delivery]) -> usize {
    let delivered: HashSet<&str> =
        deliveries.iter().filter(|d| d.kind == "turn.finished").map(|d| d.turn.as_str()).collect();
    turns.iter().filter(|t| t.status != "running" && !delivered.contains(t.id.as_str())).count()
}

/// Checks the contract of RELIABILITY.md (A1, B1, B2, C's delivery part) over a history.
pub fn check(history: &History) -> Report {
    let mut report = Report {
        faults: history.faults.len(),
        conflict_status: history.conflict_status,
        bad_signatures: history.bad_signatures,
        ..Report::default()
    };

    // The acknowledgement of each key: the first accepted answer, from any request.
    let mut ack: HashMap<&str, &Op> = HashMap::new();
    for op in &history.ops {
        if accepted(op).is_some() {
            ack.entry(op.key.as_str()).or_insert(op);
        }
    }
    report.acknowledged = ack.len();
    for op in &history.ops {
        let Some(body) = accepted(op) else { continue };
        if ack.get(op.key.as_str()).is_some_and(|first| !std::ptr::eq(*first, op)) {
            report.repeats += 1;
            if accepted(ack[op.key.as_str()]) != Some(body) {
                report.different_answers += 1;
            }
        }
    }
    let position_of: HashMap<String, (usize, usize)> = ack
        .values()
        .filter_map(|op| Some((event_id(accepted(op)?)?, (op.session, op.position))))
        .collect();

    // A1: one completed turn per acknowledged event, turns in acceptance order per session.
    let mut turns_of: HashMap<&str, usize> = HashMap::new();
    let mut last_position: HashMap<&str, usize> = HashMap::new();
    for turn in &history.turns {
        report.turns += 1;
        if turn.status != "completed" {
            report.not_completed += 1;
        }
        if turn.reply.as_deref().is_some_and(|r| r.contains("interrupted")) {
            report.interrupted += 1;
        }
        for event in &turn.events {
            *turns_of.entry(event.as_str()).or_default() += 1;
            if let Some(&(_, position)) = position_of.get(event) {
                if last_position.get(turn.session.as_str()).is_some_and(|&last| last >= position) {
                    report.order_violations += 1;
                }
                last_position.insert(turn.session.as_str(), position);
            }
        }
    }
    report.lost = position_of.keys().filter(|id| !turns_of.contains_key(id.as_str())).count();
    report.processed_twice = turns_of.values().filter(|&&n| n > 1).count();

    // Ledger: at-most-once effects at most once per call; idempotent ones deduplicated by key.
    let mut at_most_once: HashMap<&str, usize> = HashMap::new();
    let mut idempotent: HashMap<&str, usize> = HashMap::new();
    for record in ledger_records(&history.ledger) {
        let mut parts = record.split(' ');
        let (tool, key) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        // The key is whole only if the record went on past it.
        if parts.next().is_none() {
            report.torn_records += 1;
            continue;
        }
        let map = if tool == "ledger.append" { &mut at_most_once } else { &mut idempotent };
        *map.entry(key).or_default() += 1;
    }
    report.at_most_once_effects = at_most_once.len();
    report.at_most_once_twice = at_most_once.values().filter(|&&n| n > 1).count();
    report.idempotent_keys = idempotent.len();
    report.idempotent_repeats = idempotent.values().map(|n| n - 1).sum();

    // C: every finished turn reached the subscriber, in order per session (redeliveries,
    // which the receiver drops by key, aside).
    report.deliveries = history.deliveries.len();
    report.undelivered = undelivered(&history.turns, &history.deliveries);
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<&str, i64> = HashMap::new();
    // What each key was first delivered for: a repeat must be the same event.
    let mut event_of: HashMap<&str, (&str, i64)> = HashMap::new();
    for d in &history.deliveries {
        if d.key.is_empty() {
            report.keyless_deliveries += 1;
            continue;
        }
        let first = *event_of.entry(d.key.as_str()).or_insert((d.session.as_str(), d.seq));
        if first != (d.session.as_str(), d.seq) {
            report.shared_keys += 1;
        }
        if !seen.insert(d.key.as_str()) {
            continue;
        }
        if last_seq.get(d.session.as_str()).is_some_and(|&last| last >= d.seq) {
            report.delivery_order_violations += 1;
        }
        last_seq.insert(d.session.as_str(), d.seq);
    }
    report.distinct_deliveries = seen.len();

    // The trivial-pass guard: requests that overlapped no fault window must mostly succeed.
    for op in history.ops.iter().filter(|op| op.kind != OpKind::Resend) {
        let in_fault =
            history.faults.iter().any(|f| op.start_ms <= f.end_ms && f.start_ms <= op.end_ms);
        if !in_fault {
            report.fault_free_requests += 1;
            report.fault_free_successes += usize::from(op.status == Some(202));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(session: usize, position: usize, kind: OpKind, at: u64, body: Option<&str>) -> Op {
        Op {
            key: format!("s{session}-e{position}"),
            session,
            position,
            kind,
            start_ms: at,
            end_ms: at + 1,
            status: body.map(|_| 202),
            body: body.map(str::to_owned),
        }
    }

    fn ack(event: &str) -> String {
        format!(r#"{{"event_id":"{event}","session_id":"S"}}"#)
    }

    fn turn(id: &str, events: &[&str]) -> Turn {
        Turn {
            session: "S".into(),
            id: id.into(),
            status: "completed".into(),
            reply: Some("ok".into()),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    fn delivery(turn: &str, seq: i64) -> Delivery {
        Delivery {
            key: format!("k{seq}"),
            kind: "turn.finished".into(),
            session: "S".into(),
            seq,
            turn: turn.into(),
        }
    }

    /// Two events, each answered once, in order, delivered, one ledger effect each.
    fn clean() -> History {
        History {
            ops: vec![
                op(0, 0, OpKind::First, 10, Some(&ack("E0"))),
                op(0, 0, OpKind::Twin, 11, Some(&ack("E0"))),
                op(0, 1, OpKind::First, 20, Some(&ack("E1"))),
            ],
            faults: vec![Fault { kind: "kill9".into(), start_ms: 100, end_ms: 200 }],
            turns: vec![turn("T0", &["E0"]), turn("T1", &["E1"])],
            deliveries: vec![delivery("T0", 1), delivery("T1", 2)],
            bad_signatures: 0,
            ledger:
                "ledger.append a 1\nledger.append_idempotent b 1\nledger.append_idempotent b 2\n"
                    .into(),
            conflict_status: 409,
        }
    }

    #[test]
    fn a_clean_run_passes_and_is_counted() {
        let report = check(&clean());
        assert_eq!(report.violations(), Vec::<String>::new());
        assert_eq!((report.acknowledged, report.turns, report.repeats), (2, 2, 1));
        assert_eq!((report.idempotent_keys, report.idempotent_repeats), (1, 1));
    }

    #[test]
    fn each_broken_promise_is_named() {
        let mut lost = clean();
        lost.turns.pop();
        assert!(check(&lost).violations().iter().any(|v| v.contains("without a turn")));

        let mut twice = clean();
        twice.turns.push(turn("T2", &["E1"]));
        assert_eq!(check(&twice).processed_twice, 1);

        let mut reordered = clean();
        reordered.turns.reverse();
        assert_eq!(check(&reordered).order_violations, 1);

        let mut changed = clean();
        changed.ops[1].body = Some(ack("OTHER"));
        assert_eq!(check(&changed).different_answers, 1);

        let mut effect_twice = clean();
        effect_twice.ledger.push_str("ledger.append a 2\n");
        assert_eq!(check(&effect_twice).at_most_once_twice, 1);

        let mut undelivered = clean();
        undelivered.deliveries.pop();
        assert_eq!(check(&undelivered).undelivered, 1);

        let mut out_of_order = clean();
        out_of_order.deliveries.reverse();
        assert_eq!(check(&out_of_order).delivery_order_violations, 1);

        // A record cut short by a kill, with the next one run on after it: both are read.
        let mut torn = clean();
        torn.ledger = "ledger.append a 1\nledger.append_idempotent b 1\nledger.append 0123456789abcdef0123456789abcdef call_0_98d9aledger.append_idempotent fedcba9876543210fedcba9876543210 call_0 1 n\nledger.append 0123\n".into();
        let report = check(&torn);
        assert_eq!((report.at_most_once_effects, report.idempotent_keys), (2, 2));
        assert_eq!(report.torn_records, 1, "the record cut inside its key");

        let mut keyless = clean();
        keyless.deliveries[0].key.clear();
        assert_eq!(check(&keyless).keyless_deliveries, 1);

        let mut shared = clean();
        shared.deliveries[1].key = shared.deliveries[0].key.clone();
        assert_eq!(check(&shared).shared_keys, 1);

        let mut accepted_conflict = clean();
        accepted_conflict.conflict_status = 202;
        assert!(!check(&accepted_conflict).violations().is_empty());
    }

    #[test]
    fn a_run_that_mostly_failed_outside_faults_proves_nothing() {
        let mut history = clean();
        for at in 0..40 {
            history.ops.push(Op {
                status: None,
                body: None,
                ..op(0, 1, OpKind::First, 300 + at, None)
            });
        }
        // Failures inside a fault window do not count against the run.
        history.ops.push(Op { status: None, body: None, ..op(0, 1, OpKind::First, 150, None) });
        let report = check(&history);
        assert_eq!(report.fault_free_requests, 43);
        assert!(report.violations().iter().any(|v| v.contains("outside fault windows")));
    }

    #[test]
    fn a_saved_history_loads_back_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("clade-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.json");
        clean().save(&path).unwrap();
        assert_eq!(check(&History::load(&path).unwrap()), check(&clean()));
        std::fs::write(&path, "not json").unwrap();
        assert!(History::load(&path).unwrap_err().contains("not a crash-run history"));
        assert!(History::load(&dir.join("missing.json")).unwrap_err().contains("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
