//! A session's actor: its mailbox (wake-ups and freshly committed events), strict order, one
//! turn at a time, the turn's deadline and cancel, the panic boundary, and leaving memory when
//! idle. What a turn does is the [executor](super::executor)'s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_config::QueueMode;
use clade_core::{Agent, AgentId, Clock, SessionId, Tenant, Timestamp, TurnStatus};
use clade_store::{EventRow, OutboxEvent, OutboxRow, SessionRow, TurnOutcome};
use futures::FutureExt as _;
use tokio::sync::{Notify, mpsc};

use super::context::Kept;
use super::executor::TurnError;
use super::{Inner, Wake};

/// One session's actor: runs its open events turn by turn, in arrival order, and leaves
/// memory after being idle.
pub(super) async fn actor(
    inner: Arc<Inner>,
    session_id: SessionId,
    mut wake: mpsc::UnboundedReceiver<Wake>,
) {
    // Session, tenant and agent are read once per stay in memory: an agent's changed settings
    // apply from its next activation (after `idle_secs` without messages).
    let mut context: Option<Arc<TurnContext>> = None;
    let mut inbox = Inbox::default();
    let mut kept = Kept::default();
    // When the actor last worked: idleness counts from the end of its last turn (the time read
    // before its outcome was written), not from whenever the loop gets round to waiting, so a
    // clock that moves meanwhile (a busy node, a test's manual clock) does not push the exit
    // later.
    let mut active_at = inner.store.clock().now();
    // Turns in a row whose outcome could not be recorded.
    let mut unsettled: u32 = 0;
    loop {
        if !inbox.has_work() {
            let clock = inner.store.clock();
            let idle = Duration::from_secs(inner.settings().sessions.idle_secs.max(1));
            // A deadline, not a duration from "now": a clock that moves while this reads it
            // (another thread, a test's manual clock) must not push the exit later.
            let woken = tokio::select! {
                woken = wake.recv() => woken,
                () = clock.sleep_until(active_at.plus(idle)) => None,
            };
            match woken {
                Some(woken) => inbox.take(woken),
                None => {
                    // Leave only if no wake-up raced in: `wake` holds the same lock.
                    let mut actors = inner.actors.lock().unwrap_or_else(|e| e.into_inner());
                    if wake.is_empty() {
                        actors.remove(&session_id);
                        crate::telemetry::session_evicted();
                        return;
                    }
                }
            }
        }
        while let Ok(woken) = wake.try_recv() {
            inbox.take(woken);
        }
        let changes = inner.session_changes.load(std::sync::atomic::Ordering::SeqCst);
        let ctx = match &context {
            // New settings that leave the sessions' own alone: the same context under them,
            // with nothing read again (a reload under load costs the sessions no reads).
            Some(ctx)
                if ctx.changes == changes
                    && ctx.settings.generation() != inner.settings().generation() =>
            {
                let renewed = TurnContext { settings: inner.settings(), ..TurnContext::clone(ctx) };
                context.insert(Arc::new(renewed)).clone()
            }
            Some(ctx) if ctx.changes == changes => ctx.clone(),
            _ => match Box::pin(TurnContext::load(&inner, session_id, changes)).await {
                Ok(ctx) => {
                    // Settings changed (a queue mode, say): what was kept under the old ones
                    // is read again.
                    kept.history = None;
                    context.insert(Arc::new(ctx)).clone()
                }
                Err(err) => {
                    tracing::error!(session = %session_id, error = %err, "cannot load the session; retrying");
                    inner.store.clock().sleep(Duration::from_secs(1)).await;
                    inbox.read_store = true;
                    continue;
                }
            },
        };
        // Paused by an operator: the events stay stored and waiting; lifting the pause wakes
        // this session again.
        if inner.is_paused(ctx.agent.id, session_id) {
            inbox.events.clear();
            inbox.read_store = false;
            continue;
        }
        // Its shard is on its way to another node (a cluster's drain or rebalance): the events
        // stay stored, and the next holder runs them as it takes the shard.
        if !inner.bus.runs_here(session_id) {
            inbox.events.clear();
            inbox.read_store = false;
            continue;
        }
        let coalesce = ctx.queue_mode == QueueMode::Coalesce;
        // Steering joins events into the running turn behind the inbox's back: such a session
        // always asks the store.
        if ctx.queue_mode == QueueMode::Steer {
            inbox.read_store = true;
        }
        // `store_has_more`: the store showed more open events than this turn takes (what the
        // inbox still holds needs no read).
        let (events, store_has_more) = match inbox.next(coalesce) {
            Some(events) => (events, false),
            None => match Box::pin(inner.visible.open_events(session_id, coalesce)).await {
                Ok(open) => (open.events, open.more),
                Err(err) => {
                    tracing::error!(session = %session_id, error = %err, "cannot read the session's events; retrying");
                    inner.store.clock().sleep(Duration::from_secs(1)).await;
                    inbox.read_store = true;
                    continue;
                }
            },
        };
        if events.is_empty() {
            // The store has nothing open: whatever the inbox held when it was asked (each
            // committed before it was handed over) has run.
            inbox.read_store = false;
            inbox.events.clear();
            continue;
        }
        active_at = inner.store.clock().now();
        let forked = ctx.profile.forked();
        let tenant_id = ctx.tenant.id;
        let cancel = Arc::new(Notify::new());
        inner.cancels.lock().unwrap_or_else(|e| e.into_inner()).insert(session_id, cancel.clone());
        // The panic boundary: a bug in one turn fails that turn only. Run in the actor's own
        // task (a task per turn cost a spawn and a wake-up each), boxed so that an idle actor
        // holds only its own small state.
        let turn = Box::pin(run_events(
            inner.clone(),
            ctx,
            events.clone(),
            cancel,
            std::mem::take(&mut kept),
        ));
        let settled = match std::panic::AssertUnwindSafe(turn).catch_unwind().await {
            Ok((settled, still)) => {
                kept = still;
                active_at = kept.ended_at.take().unwrap_or(active_at);
                settled
            }
            Err(panic) => {
                let error = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                tracing::error!(session = %session_id, error = %error, "turn panicked");
                Box::pin(fail_events(
                    &inner,
                    session_id,
                    &events,
                    "internal error while running the turn",
                ))
                .await
            }
        };
        inner.cancels.lock().unwrap_or_else(|e| e.into_inner()).remove(&session_id);
        inbox.ran(&events);
        // A branch or worker with nothing left to run reports to the session that started it.
        if forked && settled {
            inner.settle_fork(tenant_id, session_id).await;
        }
        // Another node took the lease of this session's shard: this node's writes for it are
        // refused from now on, and its events are the new holder's to run. A single node that
        // lost its lease of every shard takes no more events at all.
        let leases = inner.store.shard_leases();
        if !settled && matches!(leases.holds(session_id).await, Ok(false)) {
            tracing::error!(session = %session_id, "this node lost its lease; the session is left to its new holder");
            if leases.fence().is_some() {
                inner.lease_lost.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            inner.actors.lock().unwrap_or_else(|e| e.into_inner()).remove(&session_id);
            return;
        }
        // Events whose outcome could not be recorded are still open: read again, at once the
        // first time, then backing off while it keeps failing (a store that refuses every
        // write would otherwise cost a model call per spin).
        if settled {
            unsettled = 0;
        } else {
            unsettled += 1;
            if unsettled > 1 {
                inner.store.clock().sleep(UNSETTLED.after(unsettled - 1)).await;
            }
        }
        inbox.read_store = store_has_more || !settled;
    }
}

/// The waits before running again a turn whose outcome could not be recorded twice in a row:
/// 100 ms, doubling with each further failure, up to 5 s.
const UNSETTLED: clade_core::Backoff =
    clade_core::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// The events an actor was handed as they committed, and whether it must ask the store.
///
/// The store is the truth; the inbox only saves reading back an event the actor was just
/// handed. It is trusted only when it holds the session's very next event (its `seq` one past
/// the last event a turn took), since events are numbered densely in commit order and handed
/// over in that order; anything else (an actor new in memory, a missed or failed write, a
/// resumed turn, steering) reads the store. Should it still be wrong, starting the turn fails
/// (the store takes only pending events) and the actor reads the store.
#[derive(Default)]
struct Inbox {
    events: std::collections::VecDeque<EventRow>,
    /// The highest `seq` a turn of this actor took.
    taken: Option<i64>,
    /// The store may hold open events the inbox does not: read it before the next turn.
    read_store: bool,
}

impl Inbox {
    fn has_work(&self) -> bool {
        self.read_store || !self.events.is_empty()
    }

    fn take(&mut self, wake: Wake) {
        match wake {
            Wake::Work => self.read_store = true,
            Wake::Event(event) => {
                if self.taken.is_none_or(|taken| event.seq > taken) {
                    self.events.push_back(*event);
                }
            }
        }
    }

    /// The next turn's events from the inbox, unless the store must be asked.
    fn next(&mut self, all: bool) -> Option<Vec<EventRow>> {
        let next_seq = self.taken? + 1;
        if self.read_store || self.events.front()?.seq != next_seq {
            return None;
        }
        let mut events = Vec::new();
        while let Some(event) = self.events.front()
            && event.seq == next_seq + events.len() as i64
            && (all || events.is_empty())
        {
            events.extend(self.events.pop_front());
        }
        Some(events)
    }

    /// A turn took `events`: the inbox drops them and anything older.
    fn ran(&mut self, events: &[EventRow]) {
        if let Some(last) = events.iter().map(|e| e.seq).max() {
            self.taken = Some(self.taken.map_or(last, |taken| taken.max(last)));
        }
        let taken = self.taken;
        self.events.retain(|e| taken.is_none_or(|taken| e.seq > taken));
    }
}

/// Records `events` as failed with `reason`; whether that was recorded.
async fn fail_events(
    inner: &Inner,
    session_id: SessionId,
    events: &[EventRow],
    reason: &str,
) -> bool {
    let Ok(session) = inner.visible.session_any_tenant(session_id).await else { return false };
    let ids = events.iter().map(|e| e.id).collect();
    let Ok((turn, rows)) = inner.store.turns().start(&session, ids, 0, Vec::new()).await else {
        return false;
    };
    publish(inner, session.agent_id, &rows);
    let outcome = TurnOutcome {
        status: TurnStatus::Failed,
        reply: None,
        error: Some(reason.into()),
        model: None,
    };
    let failed = clade_protocol::LifecycleEvent::turn_ended(clade_protocol::TurnEnded {
        turn: turn.id.to_string(),
        status: TurnStatus::Failed.into(),
        reply: None,
        error: Some(reason.into()),
        model: None,
        files: Vec::new(),
    });
    match inner.store.turns().finish(&turn, outcome, vec![OutboxEvent::from(&failed)]).await {
        Ok(rows) => {
            publish(inner, turn.agent_id, &rows);
            true
        }
        Err(_) => false,
    }
}

pub(super) fn publish(inner: &Inner, agent: AgentId, rows: &[OutboxRow]) {
    inner.bus.hub().publish_committed(agent, rows);
    if !rows.is_empty() {
        inner.outbox_written();
    }
}

/// What a session's turns need to know about where they run.
#[derive(Clone)]
pub(super) struct TurnContext {
    pub(super) session: SessionRow,
    pub(super) tenant: Tenant,
    pub(super) agent: Agent,
    /// The session's queue mode: its own, else its agent's (`sessions.agents`), else the
    /// deployment's.
    pub(super) queue_mode: QueueMode,
    /// The engine's settings when this was loaded: the turns of this context run by them.
    pub(super) settings: Arc<super::Settings>,
    /// The engine's count of settings changes this was loaded at.
    changes: u64,
    /// What its turns run as: a conversation's, a branch's or a worker's (by the session's
    /// origin).
    pub(super) profile: &'static dyn super::profile::Profile,
}

impl TurnContext {
    /// The kind its model calls run as.
    pub(super) fn kind(&self) -> clade_core::ProcessKind {
        self.profile.kind()
    }

    /// How far a turn of this session may go: its profile's, with the settings loaded.
    pub(super) fn limits(&self) -> super::profile::Limits {
        self.profile.limits(&self.settings.sessions)
    }

    /// A branch's or worker's share of the spending (see [`super::profile::Profile`]).
    pub(super) fn token_share(&self) -> Option<(u64, &'static str)> {
        self.profile.token_share(&self.settings.sessions)
    }
}

impl TurnContext {
    async fn load(
        inner: &Inner,
        session_id: SessionId,
        changes: u64,
    ) -> Result<Self, clade_store::Error> {
        let store = &inner.visible;
        let session = store.session_any_tenant(session_id).await?;
        let tenant = store.tenants().by_id(session.tenant_id).await?;
        let agent = store.agents(session.tenant_id).by_id(session.agent_id).await?;
        Ok(Self { changes, ..Self::of(inner, tenant, agent, session) })
    }

    /// The context of `agent`'s turns in `session` under the engine's settings now.
    pub(super) fn of(inner: &Inner, tenant: Tenant, agent: Agent, session: SessionRow) -> Self {
        let settings = inner.settings();
        let queue_mode =
            session.queue_mode.as_deref().and_then(QueueMode::parse).unwrap_or_else(|| {
                settings.sessions.queue_mode_for(tenant.name.as_str(), agent.handle.as_str())
            });
        let profile = super::profile::of(&session.source.platform);
        let changes = inner.session_changes.load(std::sync::atomic::Ordering::SeqCst);
        Self { session, tenant, agent, queue_mode, settings, changes, profile }
    }
}

/// The time from `from` to `to`, zero if `to` is not later.
fn until(to: Timestamp, from: Timestamp) -> Duration {
    Duration::from_millis(to.as_millis().saturating_sub(from.as_millis()).max(0).unsigned_abs())
}

/// Runs a turn until it ends, is cancelled, or has run `timeout` not counting its pauses.
async fn run_until_deadline(
    run: impl std::future::Future<Output = Result<(), TurnError>>,
    cancelled: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    pause: &Pause,
    started: Timestamp,
    (timeout, setting): (Duration, &str),
) -> Result<(), TurnError> {
    tokio::pin!(run);
    loop {
        let tick = match pause.deadline(started, timeout) {
            Some(deadline) => pause.clock.sleep(until(deadline, pause.clock.now())),
            // Paused: look again in a second (the pause ends when the approval comes).
            None => pause.clock.sleep(Duration::from_secs(1)),
        };
        tokio::select! {
            result = &mut run => return result,
            () = cancelled.as_mut() => return Err(TurnError::Cancelled),
            () = tick => {
                let now = pause.clock.now();
                if pause.deadline(started, timeout).is_some_and(|deadline| deadline <= now) {
                    return Err(TurnError::TimedOut {
                        secs: timeout.as_secs(),
                        setting: setting.to_owned(),
                    });
                }
            }
        }
    }
}

tokio::task_local! {
    /// The running turn's [`Pause`], for the tool step that waits for an approval.
    pub(super) static TURN_PAUSE: Arc<Pause>;
}

/// Time a turn spends waiting for operators' approvals, which its timeout does not count: a
/// turn waiting on a person is paused, not slow.
pub(super) struct Pause {
    clock: Arc<dyn Clock>,
    state: Mutex<PauseState>,
}

#[derive(Default)]
struct PauseState {
    /// Waits in progress, and since when the first of them began.
    waiting: u32,
    since: Option<Timestamp>,
    /// Time paused by waits that have ended.
    total: Duration,
}

impl Pause {
    /// Pauses the turn's clock until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> PauseGuard {
        if let Ok(mut state) = self.state.lock() {
            if state.waiting == 0 {
                state.since = Some(self.clock.now());
            }
            state.waiting += 1;
        }
        PauseGuard(self.clone())
    }

    /// When a turn started at `started` times out; `None` while it is paused.
    fn deadline(&self, started: Timestamp, timeout: Duration) -> Option<Timestamp> {
        let state = self.state.lock().ok()?;
        (state.waiting == 0).then(|| started.plus(timeout + state.total))
    }
}

pub(super) struct PauseGuard(Arc<Pause>);

impl Drop for PauseGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.waiting = state.waiting.saturating_sub(1);
            if state.waiting == 0
                && let Some(since) = state.since.take()
            {
                state.total += until(self.0.clock.now(), since);
            }
        }
    }
}

/// Runs the turn of `events`; returns whether its outcome was recorded, and what the actor
/// keeps for the next turn.
async fn run_events(
    inner: Arc<Inner>,
    ctx: Arc<TurnContext>,
    events: Vec<EventRow>,
    cancel: Arc<Notify>,
    mut kept: Kept,
) -> (bool, Kept) {
    let session_id = ctx.session.id;
    // The tenant's quota of running turns: wait for a slot before the turn's clock starts.
    let _slot = match inner.turn_slots(&ctx.settings, &ctx.tenant) {
        Some(slots) => slots.acquire_owned().await.ok(),
        None => None,
    };
    let super::profile::Limits { timeout, timeout_setting: setting, .. } = ctx.limits();
    // The turn's clock stops while it waits for an operator's approval (see `Pause`).
    let clock = inner.store.clock().clone();
    let started = clock.now();
    let pause = Arc::new(Pause { clock, state: Mutex::default() });
    let cancelled = cancel.notified();
    tokio::pin!(cancelled);
    let run =
        TURN_PAUSE.scope(pause.clone(), super::turn::run_turn(&inner, &ctx, &events, &mut kept));
    let result = run_until_deadline(run, &mut cancelled, &pause, started, (timeout, setting)).await;
    if std::mem::take(&mut kept.compact) {
        super::compaction::start(&inner, &ctx);
    }
    match result {
        Ok(()) => (true, kept),
        Err(TurnError::Store(clade_store::Error::Fenced { held, current })) => {
            // The lease of the session's shard was not this node's when the turn wrote: taken
            // by another node (this one cut off a while), perhaps given back since. Failing the
            // events would then be the one write that lands; they stay open instead, for
            // whoever holds the shard now, this node included, which resumes the turn from its
            // journal.
            tracing::warn!(session = %session_id, held, current, "the turn lost its lease part-way; its events stay open for the shard's holder");
            kept.history = None;
            (false, kept)
        }
        Err(reason) => {
            let reason = reason.to_string();
            tracing::warn!(session = %session_id, reason = %reason, "turn failed");
            // A turn stopped part-way may have recorded its outcome without updating the
            // cache: the next turn reads the history from the store.
            kept.history = None;
            (Box::pin(fail_events(&inner, session_id, &events, &reason)).await, kept)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clade_core::{EventId, TenantId};

    fn event(seq: i64) -> EventRow {
        let now = clade_core::Timestamp::from_millis(1_000);
        EventRow {
            id: EventId::generate(now),
            tenant_id: TenantId::generate(now),
            session_id: SessionId::generate(now),
            seq,
            idempotency_key: format!("k{seq}"),
            text: format!("message {seq}"),
            status: clade_core::EventStatus::Pending,
            turn_id: None,
            created_at: now,
        }
    }

    fn seqs(events: &[EventRow]) -> Vec<i64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_new_actor_reads_the_store_before_trusting_its_inbox() {
        let mut inbox = Inbox::default();
        inbox.take(Wake::Event(Box::new(event(7))));
        assert!(inbox.has_work());
        assert!(inbox.next(false).is_none(), "nothing says 7 is the session's next event");
        // The store's answer ran: from now on the inbox knows where the session stands.
        inbox.ran(&[event(6)]);
        let events = inbox.next(false).expect("7 follows 6");
        assert_eq!(seqs(&events), vec![7]);
    }

    #[test]
    fn the_inbox_runs_only_the_next_event_in_order() {
        let mut inbox = Inbox::default();
        inbox.ran(&[event(0)]);
        inbox.take(Wake::Event(Box::new(event(2))));
        assert!(inbox.next(false).is_none(), "1 is missing: the store must be asked");
        let mut inbox = Inbox::default();
        inbox.ran(&[event(0)]);
        for seq in 1..=3 {
            inbox.take(Wake::Event(Box::new(event(seq))));
        }
        let events = inbox.next(false).unwrap();
        assert_eq!(seqs(&events), vec![1]);
        inbox.ran(&events);
        assert!(inbox.has_work(), "2 and 3 wait in the inbox");
        let events = inbox.next(true).unwrap();
        assert_eq!(seqs(&events), vec![2, 3], "coalesce takes the run");
        inbox.ran(&events);
        assert!(!inbox.has_work());
    }

    #[test]
    fn what_a_turn_took_never_comes_back_from_the_inbox() {
        let mut inbox = Inbox::default();
        inbox.take(Wake::Event(Box::new(event(4))));
        inbox.take(Wake::Event(Box::new(event(5))));
        // A store read ran 4 and 5 in one turn.
        inbox.ran(&[event(4), event(5)]);
        assert!(!inbox.has_work());
        inbox.take(Wake::Event(Box::new(event(5))));
        assert!(!inbox.has_work(), "a late hand-over of an event already run");
        inbox.take(Wake::Work);
        inbox.take(Wake::Event(Box::new(event(6))));
        assert!(inbox.next(false).is_none(), "a wake-up for work asks the store first");
        inbox.read_store = false;
        assert_eq!(seqs(&inbox.next(false).unwrap()), vec![6]);
    }
}
