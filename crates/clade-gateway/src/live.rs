//! Live events for a subscriber that must never miss a lifecycle event: the session's SSE
//! stream and the WebSocket's subscriptions share this.
//!
//! The hub's channels are small and drop the oldest events for a subscriber that falls
//! behind. Text deltas are then gone, but lifecycle events are in the outbox, so a lagging
//! subscriber re-reads those it missed from there, in order and once.

use std::collections::VecDeque;

use clade_core::EventKind;
use clade_protocol::LifecycleEvent;
use clade_runtime::{LiveEvent, Subscription};
use tokio::sync::broadcast;

/// What a lagging stream (SSE or WebSocket) needs to catch up from the outbox.
#[derive(Clone)]
pub(crate) struct Lagged {
    store: clade_store::Store,
    tenant: clade_core::TenantId,
    scope: Scope,
}

/// What a stream follows: one session, or every session of an agent.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope {
    Session(clade_core::SessionId),
    Agent(clade_core::AgentId),
}

/// Lifecycle events re-read in one go, at most: a longer catch-up reads on in further pages.
/// A page is held in memory until its subscriber takes it, so it stays small.
#[cfg(not(test))]
const CATCH_UP_ROWS: u32 = 64;
#[cfg(test)]
const CATCH_UP_ROWS: u32 = 3;

impl Lagged {
    pub(crate) fn new(
        store: &clade_store::Store,
        tenant: clade_core::TenantId,
        scope: Scope,
    ) -> Self {
        Self { store: store.clone(), tenant, scope }
    }

    /// The lifecycle events after outbox position `after` (none if they cannot be read; the
    /// failure is logged).
    pub(crate) async fn outbox_after(&self, after: i64) -> Vec<clade_store::OutboxRow> {
        let (store, tenant) = (&self.store, self.tenant);
        let rows = match self.scope {
            Scope::Session(id) => store.sessions(tenant).outbox(id, after, CATCH_UP_ROWS).await,
            Scope::Agent(id) => store.sessions(tenant).agent_outbox(id, after, CATCH_UP_ROWS).await,
        };
        rows.unwrap_or_else(|err| {
            tracing::warn!(scope = ?self.scope, error = %err, "cannot re-read missed events");
            Vec::new()
        })
    }
}

/// A hub subscription that catches up from the outbox when it lags.
pub(crate) struct CatchingUp {
    receiver: Subscription,
    lagged: Lagged,
    /// The outbox position of the last lifecycle event passed on: live ones up to it are
    /// duplicates, and a catch-up starts after it.
    last: i64,
    missed: VecDeque<LiveEvent>,
    /// Whether the outbox may hold events after `last` that the receiver will not bring.
    behind: bool,
    /// Turns whose `turn.started` was passed on live, before it committed (so that streaming
    /// clients see it before the text): its committed copy is not passed on again.
    announced: VecDeque<String>,
}

/// Live-only `turn.started` announcements remembered (one per turn in flight per subscription).
const ANNOUNCED: usize = 64;

impl CatchingUp {
    /// Follows `receiver` from outbox position `after`, where the outbox ended when the
    /// subscription started.
    pub(crate) fn new(receiver: Subscription, lagged: Lagged, after: i64) -> Self {
        Self {
            receiver,
            lagged,
            last: after,
            missed: VecDeque::new(),
            behind: false,
            announced: VecDeque::new(),
        }
    }

    /// Replays the outbox after `after` (the last event a client already has), page by page
    /// however long it is, then follows `receiver`. Subscribe before calling, so nothing
    /// committed meanwhile falls between the replay and the live events.
    pub(crate) fn replaying(receiver: Subscription, lagged: Lagged, after: i64) -> Self {
        Self { behind: true, ..Self::new(receiver, lagged, after) }
    }

    /// The next event to pass on; `None` once the channel has closed. Dropped while it
    /// re-reads the outbox, the events being re-read are lost: await it to the end.
    pub(crate) async fn next(&mut self) -> Option<LiveEvent> {
        loop {
            if let Some(event) = self.missed.pop_front() {
                return Some(self.passed(event));
            }
            if self.behind {
                let rows = self.lagged.outbox_after(self.last).await;
                // A full page may have more behind it: read on once it has been passed on.
                self.behind = rows.len() >= CATCH_UP_ROWS as usize;
                self.missed.extend(rows.iter().filter_map(|row| LiveEvent::of_row(row, true)));
                continue;
            }
            match self.receiver.recv().await {
                Ok(LiveEvent { id: Some(id), .. }) if id <= self.last => continue,
                Ok(event) if self.already_announced(&event) => {
                    self.last = event.id.unwrap_or(self.last).max(self.last);
                    continue;
                }
                Ok(event) => return Some(self.passed(event)),
                Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Whether `event` is the committed `turn.started` of a turn announced live before; the
    /// live announcement is remembered here.
    fn already_announced(&mut self, event: &LiveEvent) -> bool {
        let LifecycleEvent::TurnStarted(started) = &*event.event else { return false };
        let turn = &started.turn;
        if event.id.is_none() {
            if self.announced.len() >= ANNOUNCED {
                self.announced.pop_front();
            }
            self.announced.push_back(turn.clone());
            return false;
        }
        match self.announced.iter().position(|t| t == turn) {
            Some(at) => {
                self.announced.remove(at);
                true
            }
            None => false,
        }
    }

    fn passed(&mut self, event: LiveEvent) -> LiveEvent {
        self.last = event.id.unwrap_or(self.last).max(self.last);
        event
    }
}

/// Moves one subscription's events into a stream's queue until either side goes away: the
/// stream's owner reads that queue beside its other duties (re-checking its token), which a
/// [`CatchingUp`] cannot be interrupted for. A subscription that falls behind re-reads the
/// lifecycle events it missed from the outbox, so it loses only text deltas.
pub(crate) async fn forward(mut events: CatchingUp, tx: tokio::sync::mpsc::Sender<LiveEvent>) {
    loop {
        let event = tokio::select! {
            // Nobody reads any more: what `next` was re-reading is nobody's loss.
            () = tx.closed() => return,
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// What a long-lived stream passes on.
pub(crate) enum Followed {
    Event(LiveEvent),
    /// The stream's token was revoked, its tenant deleted, or what it reaches narrowed: the
    /// stream ends here.
    Revoked,
}

/// Which events a stream passes on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Only {
    /// These kinds alone; every kind when empty.
    pub(crate) kinds: Vec<EventKind>,
    /// Whether text deltas and tool progress (live only, never replayed) are passed on.
    pub(crate) live_only: bool,
}

impl Only {
    /// Everything, deltas included.
    pub(crate) fn everything() -> Self {
        Self { kinds: Vec::new(), live_only: true }
    }

    fn passes(&self, kind: EventKind) -> bool {
        (self.live_only || !kind.is_live_only())
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// After this outbox position: what was committed since is replayed first.
    After(i64),
    /// What happens from now on.
    Now,
}

/// A stream's events as its caller may see them: `scope`'s lifecycle events from `start`,
/// replayed from the outbox and then live, never missing one (a lagging subscriber re-reads
/// the outbox), filtered by `only`; it ends with [`Followed::Revoked`] once the caller's token
/// stops reaching what it reached. `guard` is held for as long as the stream is.
/// The SSE streams and the AgentHub's `Trace` are this.
pub(crate) async fn follow(
    state: &crate::AppState,
    caller: crate::auth::Caller,
    scope: Scope,
    start: Start,
    only: Only,
    guard: Option<Box<dyn Send + Sync>>,
) -> Result<impl futures::Stream<Item = Followed> + Send + use<>, crate::ApiError> {
    let crate::auth::Caller(tenant, credential, reach) = caller;
    let slot = state.limits.open_stream(&tenant, &credential)?;
    // Where the outbox ends is read before subscribing, and replayed after: what commits
    // between the two is neither missed nor passed on twice.
    let after = match start {
        Start::After(position) => position,
        Start::Now => state.store.outbox_head().await?,
    };
    let receiver = match scope {
        Scope::Session(id) => state.engine.hub().subscribe(id),
        Scope::Agent(id) => state.engine.hub().subscribe_agent(id),
    };
    let lagged = Lagged::new(&state.store, tenant.id, scope);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(forward(CatchingUp::replaying(receiver, lagged, after), tx));
    let recheck =
        clade_core::Interval::new(state.store.clock().clone(), crate::auth::RECHECK_EVERY);
    let watch = Watch {
        rx,
        recheck,
        store: state.store.clone(),
        tenant,
        credential,
        reach,
        only,
        _guard: guard,
        _slot: slot,
    };
    Ok(futures::stream::unfold(Some(watch), |watch| async {
        let mut watch = watch?;
        loop {
            tokio::select! {
                event = watch.rx.recv() => {
                    let event = event?;
                    if watch.only.passes(event.kind()) {
                        return Some((Followed::Event(event), Some(watch)));
                    }
                }
                _ = watch.recheck.tick() => {
                    if !watch.credential.still_valid(&watch.store, &watch.tenant, &watch.reach).await {
                        return Some((Followed::Revoked, None));
                    }
                }
            }
        }
    }))
}

/// What an open stream watches: its events, and whether its token still holds.
struct Watch {
    rx: tokio::sync::mpsc::Receiver<LiveEvent>,
    recheck: clade_core::Interval,
    store: clade_store::Store,
    tenant: clade_core::Tenant,
    credential: crate::auth::Credential,
    reach: crate::auth::Reach,
    only: Only,
    /// Held for as long as the stream is (a leased operator's chat lease, say).
    _guard: Option<Box<dyn Send + Sync>>,
    /// The stream's place in its tenant's and token's counts.
    _slot: crate::quotas::StreamSlot,
}

/// A followed stream as Server-Sent Events: each event named by its kind, with its stream id
/// (none for one not stored: a delta, or a turn's start announced before it commits), and an
/// `error` event when the token stops holding. With `sessions` (a stream of many sessions),
/// each event's data is `{"session": <id>, "data": <its data>}`.
pub(crate) fn sse(
    events: impl futures::Stream<Item = Followed> + Send + 'static,
    ids: crate::stream_ids::StreamIds,
    tenant: clade_core::TenantId,
    sessions: bool,
) -> axum::response::sse::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt as _;
    let events = events.map(move |followed| {
        Ok(match followed {
            Followed::Event(event) => {
                let data = match sessions {
                    true => serde_json::json!({ "session": event.session.to_string(), "data": event.data() }),
                    false => event.data(),
                };
                let mut sse = Event::default().event(event.kind().as_str()).data(data.to_string());
                if let Some(id) = event.id {
                    sse = sse.id(ids.encode(tenant, id).to_string());
                }
                sse
            }
            Followed::Revoked => {
                let body = serde_json::json!(crate::api::ErrorBody {
                    code: crate::error::Code::InvalidToken.as_str().to_owned(),
                    message: "the stream's token was revoked or its tenant deleted".to_owned(),
                });
                Event::default().event("error").data(body.to_string())
            }
        })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
}

/// The outbox position a stream resumes after, from the `Last-Event-ID` header or the `after`
/// query (the header wins; both are checked): 0 for the start, none when neither is given.
pub(crate) fn resume_point(
    ids: &crate::stream_ids::StreamIds,
    tenant: clade_core::TenantId,
    header: Option<&axum::http::HeaderValue>,
    query: Option<&str>,
) -> Result<Option<i64>, crate::ApiError> {
    let parse = |v: &str| {
        v.trim().parse::<u64>().map_err(|_| {
            crate::ApiError::new(
                crate::error::Code::InvalidRequest,
                "Last-Event-ID (or after) must be the id of an event this stream sent, or 0",
            )
        })
    };
    let from_query = query.map(parse).transpose()?;
    let from_header = header.and_then(|v| v.to_str().ok()).map(parse).transpose()?;
    Ok(from_header.or(from_query).map(|id| stream_position(ids, tenant, id)))
}

/// The outbox position a stream id stands for (0 is the start).
pub(crate) fn stream_position(
    ids: &crate::stream_ids::StreamIds,
    tenant: clade_core::TenantId,
    id: u64,
) -> i64 {
    if id == 0 { 0 } else { ids.decode(tenant, id) }
}

#[cfg(test)]
mod tests {

    use clade_core::{AgentConfig, Handle, Tenant};
    use clade_store::{Location, NewAgent, NewEvent, OutboxEvent, Source, Store, StoreOptions};

    use clade_protocol::{Spelled, TurnEnded};

    use super::*;

    /// An event of `kind` with data that fits it (for the kinds these tests write).
    fn example(kind: EventKind) -> LifecycleEvent {
        let turn = "t".to_owned();
        match kind {
            EventKind::TurnStarted => {
                clade_protocol::TurnStarted { turn, agent: "ada".into(), events: Vec::new() }.into()
            }
            EventKind::TurnResumed => clade_protocol::TurnResumed { turn, resumes: 1 }.into(),
            EventKind::TextDelta => clade_protocol::TextDelta { turn, text: "x".into() }.into(),
            EventKind::ToolCalled => clade_protocol::ToolCalled {
                call: "c".into(),
                name: "echo".into(),
                arguments: serde_json::Value::Null,
                effect: "pure".into(),
                key: "k".into(),
            }
            .into(),
            EventKind::ToolResult => clade_protocol::ToolReturned {
                call: "c".into(),
                name: "echo".into(),
                content: String::new(),
                is_error: false,
            }
            .into(),
            _ => LifecycleEvent::turn_ended(TurnEnded {
                turn,
                status: Spelled(clade_core::TurnStatus::Completed),
                reply: None,
                error: None,
                model: None,
                files: Vec::new(),
            }),
        }
    }

    fn outboxed(kind: EventKind) -> OutboxEvent {
        OutboxEvent::from(&example(kind))
    }

    /// A new session of `agent` with one pending event.
    async fn session_with_event(
        store: &Store,
        tenant: &Tenant,
        agent: &clade_core::Agent,
    ) -> (clade_store::SessionRow, clade_core::EventId) {
        let accepted = store
            .turns()
            .accept(NewEvent {
                tenant: tenant.id,
                agent: agent.handle.to_string(),
                source: Source { platform: "t".into(), channel: "c".into(), actor: "a".into() },
                text: "hi".into(),
                idempotency_key: None,
                payload_hash: "h".into(),
                max_open_per_session: 10,
            })
            .await
            .unwrap();
        (store.sessions(tenant.id).get(accepted.session_id).await.unwrap(), accepted.event_id)
    }

    /// A store in `dir` with agents of these handles in the default tenant.
    async fn store_with_agents(
        dir: &std::path::Path,
        handles: &[&str],
    ) -> (Store, Tenant, Vec<clade_core::Agent>) {
        let location = Location::Sqlite(dir.join("clade.db"));
        let options = StoreOptions {
            migrations: clade_store::Migrations::Apply,
            ..StoreOptions::new(location, clade_store::Durability::Normal)
        };
        let store = Store::open(options).await.unwrap();
        let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let new = handles.iter().map(|handle| NewAgent {
            handle: Handle::parse(handle).unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        });
        let agents = store.agents(tenant.id).create_many(new.collect()).await.unwrap();
        (store, tenant, agents)
    }

    /// A subscriber that falls behind gets the lifecycle events it missed from the outbox, in
    /// order and once, and loses only deltas: a session's subscriber, and an agent's, which
    /// gets none of another agent's events.
    #[tokio::test]
    async fn a_lagging_subscription_catches_up_from_the_outbox() {
        for by_agent in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (store, tenant, agents) = store_with_agents(dir.path(), &["ada", "bob"]).await;
            let head = store.outbox_head().await.unwrap();
            let mut sessions = Vec::new();
            for agent in &agents {
                sessions.push(session_with_event(&store, &tenant, agent).await);
            }
            let (live, _) = broadcast::channel(2);
            let receiver = Subscription::detached(&live);
            let ada = sessions[0].0.id;
            let lagged = match by_agent {
                true => Lagged::new(&store, tenant.id, Scope::Agent(agents[0].id)),
                false => Lagged::new(&store, tenant.id, Scope::Session(ada)),
            };
            // Committed (bob's too), then ada's published with more deltas than the channel
            // holds: the subscriber lags before it sees any of it.
            for (n, (session, event)) in sessions.iter().enumerate() {
                let kinds = if n == 0 {
                    vec![EventKind::TurnStarted, EventKind::ToolCalled]
                } else {
                    vec![EventKind::TurnStarted]
                };
                let outbox = kinds.into_iter().map(outboxed).collect();
                let (_, rows) =
                    store.turns().start(session, vec![*event], 0, outbox).await.unwrap();
                for row in rows.iter().filter(|_| n == 0) {
                    live.send(LiveEvent::of_row(row, true).unwrap()).unwrap();
                }
            }
            for _ in 0..5 {
                let event = std::sync::Arc::new(example(EventKind::TextDelta));
                live.send(LiveEvent { tenant: tenant.id, session: ada, id: None, event }).unwrap();
            }
            let mut events = CatchingUp::new(receiver, lagged, head);
            let mut seen = Vec::new();
            while let Ok(Some(event)) =
                tokio::time::timeout(std::time::Duration::from_millis(500), events.next()).await
            {
                assert_eq!(event.session, ada, "another session's event reached the subscriber");
                seen.push(event.kind());
            }
            let by = if by_agent { "agent" } else { "session" };
            assert_eq!(
                seen,
                [
                    EventKind::TurnStarted,
                    EventKind::ToolCalled,
                    EventKind::TextDelta,
                    EventKind::TextDelta
                ],
                "by {by}"
            );
        }
    }

    /// A stream that replays from an old position reads the outbox page by page, however long
    /// the gap (pages of 3 here), then goes live without repeating what it replayed.
    #[tokio::test]
    async fn a_replay_longer_than_a_page_reads_on_and_then_goes_live() {
        let dir = tempfile::tempdir().unwrap();
        let (store, tenant, mut agents) = store_with_agents(dir.path(), &["ada"]).await;
        let agent = agents.remove(0);
        let head = store.outbox_head().await.unwrap();
        let (session, event) = session_with_event(&store, &tenant, &agent).await;
        let kinds = [
            EventKind::TurnStarted,
            EventKind::ToolCalled,
            EventKind::ToolResult,
            EventKind::TurnResumed,
            EventKind::ToolCalled,
            EventKind::ToolResult,
            EventKind::TurnFinished,
            EventKind::TurnStarted,
        ];
        let outbox = kinds.iter().map(|&kind| outboxed(kind)).collect();
        let (_, rows) = store.turns().start(&session, vec![event], 0, outbox).await.unwrap();
        let (live, _) = broadcast::channel(16);
        let receiver = Subscription::detached(&live);
        // Published live too (as the engine does): the replay must not pass these on twice.
        for row in &rows {
            live.send(LiveEvent::of_row(row, true).unwrap()).unwrap();
        }
        let event = std::sync::Arc::new(example(EventKind::TextDelta));
        live.send(LiveEvent { tenant: tenant.id, session: session.id, id: None, event }).unwrap();
        // A client that already has the first event replays from there.
        let lagged = Lagged::new(&store, tenant.id, Scope::Session(session.id));
        let mut events = CatchingUp::replaying(receiver, lagged, rows[0].id);
        let mut seen = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(std::time::Duration::from_millis(300), events.next()).await
        {
            seen.push(event.kind());
        }
        let mut expected: Vec<EventKind> = kinds[1..].to_vec();
        expected.push(EventKind::TextDelta);
        assert_eq!(seen, expected);
        assert!(head < rows[0].id);
    }
}
