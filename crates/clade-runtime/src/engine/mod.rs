//! The turn engine: events in, one actor per active session running turns in strict order,
//! every step journaled, lifecycle events through the outbox, and resumption after a crash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_config::{Binding, QueueMode, SessionsConfig};
use clade_core::{
    Agent, AgentId, EventId, EventKind, SessionId, StepKey, Tenant, TenantId, TurnId, TurnStatus,
};
use clade_model::{Message, ModelRequest, StreamEvent, ToolCall, ToolSpec};
use clade_store::{
    Accepted, Agents, EventRow, JournalEntry, NewEvent, OutboxEvent, OutboxRow, SessionRow, Source,
    Store, TurnOutcome, TurnRow,
};
use clade_tools::EffectClass;
use futures::FutureExt as _;

use crate::tools::{CallOrigin, ToolRunner};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};

use crate::hub::{Hub, LiveEvent, Subscription};

mod context;
use crate::models::Models;
use clade_core::ProcessKind;
use context::{Checked, Kept, Layers, Persona, compose, read_persona, remember};

/// Failures of the engine's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] clade_store::Error),
    #[error(
        "no agent for this event: name one with `agent`, or add a binding or a `default_agent` to clade.yaml"
    )]
    NoAgent,
}

/// An inbound message as the API receives it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub tenant: Tenant,
    /// Agent handle; when absent, bindings decide.
    pub agent: Option<String>,
    pub text: String,
    pub source: Source,
    pub idempotency_key: Option<String>,
}

/// How the turn of an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub turn_id: TurnId,
    /// Not `Running`.
    pub status: TurnStatus,
    pub reply: Option<String>,
    pub error: Option<String>,
    /// The model that gave the last answer.
    pub model: Option<String>,
}

impl Finished {
    fn of(turn: TurnRow) -> Self {
        let TurnRow { id, status, reply, error, model, .. } = turn;
        Self { turn_id: id, status, reply, error, model }
    }

    /// From the lifecycle event that ended the turn (see [`outcome_of`]).
    fn from_live(data: &Value) -> Option<Self> {
        let text = |key: &str| data[key].as_str().map(str::to_owned);
        Some(Self {
            turn_id: data["turn"].as_str()?.parse().ok()?,
            status: data["status"].as_str().and_then(TurnStatus::parse)?,
            reply: text("reply"),
            error: text("error"),
            model: text("model"),
        })
    }
}

/// Everything the engine needs, set up once per process.
pub struct EngineOptions {
    pub sessions: SessionsConfig,
    pub bindings: Vec<Binding>,
    /// The agent of an event that names none and matches no binding.
    pub default_agent: Option<String>,
    /// Every tool call goes through it: policy, approval, sandbox, audit.
    pub tools: Arc<ToolRunner>,
    /// Per-tenant settings: `quotas.concurrent_turns` bounds a tenant's running turns.
    pub tenants: std::collections::BTreeMap<String, clade_config::TenantConfig>,
}

struct Inner {
    store: Store,
    /// The same store for the actors' own reads, which need not wait until what they read is
    /// durable: a turn's outcome commits after the events it read, so it cannot be durable
    /// before them, and nothing else leaves the process before then (see
    /// [`Store::visible_reads`]).
    visible: Store,
    agents: Agents,
    models: Models,
    hub: Hub,
    options: EngineOptions,
    actors: Mutex<HashMap<SessionId, mpsc::UnboundedSender<Wake>>>,
    /// Where actors run: wake-ups also come from the store's writer thread.
    runtime: tokio::runtime::Handle,
    cancels: Mutex<HashMap<SessionId, Arc<Notify>>>,
    /// Woken when the outbox grows, so dispatchers need not poll fast.
    outbox: Arc<Notify>,
    /// Each agent's persona files as last read (see [`read_persona`]), while an active session
    /// of the agent holds them.
    personas: Mutex<HashMap<AgentId, (std::sync::Weak<Persona>, Checked)>>,
    /// Bumped whenever a session's settings change: actors then reload their session.
    settings: std::sync::atomic::AtomicU64,
    /// Turns a tenant may run at once, for tenants with a `concurrent_turns` quota.
    turn_slots: Mutex<HashMap<TenantId, Arc<tokio::sync::Semaphore>>>,
}

/// What wakes a session's actor. The queue holds at most one `Event` per open event of the
/// session, which `sessions.max_queued` bounds, so it needs no bound of its own.
#[derive(Debug)]
enum Wake {
    /// Something changed in the store (a resumed turn, a restart): read it.
    Work,
    /// This event was just committed, sent in commit order from the store's writer; the actor
    /// can run it without reading it back. Boxed, so the queue's blocks stay small.
    Event(Box<EventRow>),
}

/// A cheap-to-clone handle to the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What a model step produced, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModelStep {
    model: String,
    text: String,
    tool_calls: Vec<ToolCall>,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    route: Vec<String>,
    /// Messages in the request.
    #[serde(default)]
    messages: usize,
    /// The request as sent: a SHA-256 of its JSON form (see [`fingerprint`]), and the tools it
    /// offered. Its content
    /// is what the journal, the session's events and the config revision already hold, so
    /// only its fingerprint is kept, not a copy of the whole context per step.
    #[serde(default)]
    request_sha256: String,
    #[serde(default)]
    tools: Vec<String>,
}

/// A tool result, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ToolStep {
    content: String,
    is_error: bool,
}

pub(crate) fn payload_hash(agent: &str, source: &Source, text: &str) -> String {
    let digest = Sha256::new()
        .chain_update(agent.as_bytes())
        .chain_update([0])
        .chain_update(source.platform.as_bytes())
        .chain_update([0])
        .chain_update(source.channel.as_bytes())
        .chain_update([0])
        .chain_update(source.actor.as_bytes())
        .chain_update([0])
        .chain_update(text.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

impl Engine {
    /// Starts the engine and resumes every session that has unfinished events.
    pub async fn start(
        store: Store,
        agents: Agents,
        models: Models,
        options: EngineOptions,
    ) -> Result<Self, Error> {
        let inner = Arc::new(Inner {
            visible: store.visible_reads(),
            store,
            agents,
            models,
            hub: Hub::default(),
            options,
            actors: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            cancels: Mutex::new(HashMap::new()),
            settings: std::sync::atomic::AtomicU64::new(0),
            outbox: Arc::new(Notify::new()),
            personas: Mutex::default(),
            turn_slots: Mutex::default(),
        });
        let engine = Self { inner };
        engine.inner.options.tools.attach_hub(engine.inner.hub.clone());
        let open = engine.inner.store.sessions_with_open_events().await?;
        if !open.is_empty() {
            tracing::info!(sessions = open.len(), "resuming sessions with unfinished turns");
        }
        for session in open {
            engine.inner.wake(session, Wake::Work);
        }
        Ok(engine)
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The tool path every call takes (policy, approval, sandbox, audit).
    pub fn tools(&self) -> &Arc<ToolRunner> {
        &self.inner.options.tools
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Notified whenever lifecycle events were committed.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.inner.outbox.clone()
    }

    /// Picks the agent of an envelope: its own, else the one its tenant's bindings or the
    /// default agent give ([`crate::routing`]). The store checks that the agent exists as it
    /// stores the event.
    fn route(&self, envelope: &Envelope) -> Result<String, Error> {
        if let Some(handle) = &envelope.agent {
            return Ok(handle.clone());
        }
        let options = &self.inner.options;
        let tenant = envelope.tenant.name.as_str();
        crate::routing::route(
            &options.bindings,
            options.default_agent.as_deref(),
            tenant,
            &envelope.source,
        )
        .ok_or(Error::NoAgent)
    }

    /// Stores the envelope durably and schedules its session. Returns once stored.
    ///
    /// The session's actor is woken as soon as the event is committed, while the commit is
    /// still being made durable: the turn's first read and model call overlap that fsync, and
    /// its own commit, which comes after the event's, is what its reply waits for.
    pub async fn submit(&self, envelope: Envelope) -> Result<Accepted, Error> {
        Ok(self.submit_watched(envelope, false).await?.0)
    }

    /// [`Engine::submit`], and a watch on the event's turn: [`TurnWatch::ended`] waits for it
    /// to end. The watch listens to the session from before its actor is woken, so it misses
    /// no ending and need not ask the store until one comes.
    pub async fn submit_and_watch(
        &self,
        envelope: Envelope,
    ) -> Result<(Accepted, TurnWatch), Error> {
        let tenant = envelope.tenant.id;
        let (accepted, live) = self.submit_watched(envelope, true).await?;
        let watch = TurnWatch {
            engine: self.clone(),
            tenant,
            event: accepted.event_id,
            session: accepted.session_id,
            live,
        };
        Ok((accepted, watch))
    }

    /// Submits; with `watch`, also subscribes to the session's live events before its actor is
    /// woken (not for a duplicate, which wakes nothing).
    async fn submit_watched(
        &self,
        envelope: Envelope,
        watch: bool,
    ) -> Result<(Accepted, Option<Subscription>), Error> {
        let agent = self.route(&envelope)?;
        let (tell, told) = tokio::sync::oneshot::channel::<Option<Subscription>>();
        let inner = self.inner.clone();
        // On the writer's thread as the event commits, so wake-ups reach an actor in the
        // order its session's events were stored.
        let on_visible = move |accepted: &Accepted, event: Option<&EventRow>| {
            let Some(event) = event else { return };
            let live = watch.then(|| inner.hub.subscribe(accepted.session_id));
            inner.wake(accepted.session_id, Wake::Event(Box::new(event.clone())));
            let _ = tell.send(live);
        };
        let accepted = self
            .inner
            .store
            .accept_event_announced(
                NewEvent {
                    tenant: envelope.tenant.id,
                    payload_hash: payload_hash(&agent, &envelope.source, &envelope.text),
                    agent,
                    source: envelope.source,
                    text: envelope.text,
                    idempotency_key: envelope.idempotency_key,
                    max_open_per_session: self.inner.options.sessions.max_queued,
                },
                on_visible,
            )
            .await?;
        crate::failpoints::hit("after_commit_before_ack");
        // The announcement comes before the result of the same write.
        let live = match told.await {
            Ok(live) => live,
            Err(_) if accepted.duplicate => None,
            Err(_) => {
                let live = watch.then(|| self.inner.hub.subscribe(accepted.session_id));
                self.inner.wake(accepted.session_id, Wake::Work);
                live
            }
        };
        Ok((accepted, live))
    }

    /// Waits until the event's turn has ended (or `timeout`), then returns the turn.
    pub async fn wait(
        &self,
        tenant: TenantId,
        event: EventId,
        session: SessionId,
        timeout: Duration,
    ) -> Result<Option<Finished>, Error> {
        let live = self.inner.hub.subscribe(session);
        // The turn may have ended before this subscription: the store says so, and that the
        // event exists at all.
        self.inner.store.event(tenant, event).await?;
        self.wait_live(tenant, event, live, timeout, true).await
    }

    /// Waits on `live`, a subscription to the event's session, for the event's turn to end;
    /// asks the store at once if `check_first`, then whenever a turn it cannot place ends.
    ///
    /// A new turn announces the events it takes (`turn.started`, live before it commits); when
    /// that turn's end comes, it is the answer, with no read: lifecycle events are published
    /// only once committed and durable. Any other turn's end (one the event joined while it
    /// ran, one recorded for it after a failure) or missed events send it to the store.
    async fn wait_live(
        &self,
        tenant: TenantId,
        event: EventId,
        mut live: Subscription,
        timeout: Duration,
        check_first: bool,
    ) -> Result<Option<Finished>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let event_text = event.to_string();
        let mut ours: Option<String> = None;
        let mut check = check_first;
        loop {
            if check && let Some(turn) = self.inner.store.ended_turn_of(tenant, event).await? {
                return Ok(Some(Finished::of(turn)));
            }
            check = true;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            // Only the end of a turn can change the answer: re-check the store then (or when
            // events were missed, or every second), not on every delta.
            let turn_ended = async {
                loop {
                    let Ok(live) = live.recv().await else { return None };
                    if live.kind == EventKind::TurnStarted {
                        let takes_ours = live.data["events"]
                            .as_array()
                            .is_some_and(|ids| ids.iter().any(|id| id == event_text.as_str()));
                        if takes_ours && let Some(turn) = live.data["turn"].as_str() {
                            ours = Some(turn.to_owned());
                        }
                    } else if live.kind.ends_turn() {
                        let is_ours =
                            ours.is_some() && live.data["turn"].as_str() == ours.as_deref();
                        return if is_ours { Finished::from_live(&live.data) } else { None };
                    }
                }
            };
            if let Ok(Some(finished)) =
                tokio::time::timeout(remaining.min(Duration::from_secs(1)), turn_ended).await
            {
                return Ok(Some(finished));
            }
        }
    }

    /// Resumes a session's yielded turns where they stopped (see [`Store::resume_session`]);
    /// returns how many events they hold.
    pub async fn resume(&self, tenant: TenantId, session: SessionId) -> Result<u64, Error> {
        let row = self.inner.store.session(tenant, session).await?;
        let (n, rows) = self.inner.store.resume_session(tenant, session).await?;
        publish(&self.inner, row.agent_id, &rows);
        self.inner.wake(session, Wake::Work);
        Ok(n)
    }

    /// Sets a session's own queue mode (`None`: follow its agent's, else the deployment's). Its
    /// actor, if in memory, takes it up before its next turn.
    pub async fn set_queue_mode(
        &self,
        tenant: TenantId,
        session: SessionId,
        mode: Option<QueueMode>,
    ) -> Result<SessionRow, Error> {
        let name = mode.map(|mode| mode.as_str().to_owned());
        let row = self.inner.store.set_session_queue_mode(tenant, session, name).await?;
        self.inner.settings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(row)
    }

    /// Cancels the session's running turn, if any.
    pub async fn cancel(&self, tenant: TenantId, session: SessionId) -> Result<bool, Error> {
        self.inner.store.session(tenant, session).await?;
        let cancels = self.inner.cancels.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match cancels.get(&session) {
            Some(notify) => {
                notify.notify_one();
                true
            }
            None => false,
        })
    }

    /// Number of sessions with an actor in memory.
    pub fn active_sessions(&self) -> usize {
        self.inner.actors.lock().map(|a| a.len()).unwrap_or(0)
    }
}

impl Inner {
    /// The semaphore of the tenant's running turns, if its quota bounds them.
    fn turn_slots(&self, tenant: &Tenant) -> Option<Arc<tokio::sync::Semaphore>> {
        let limit = clade_config::Config::quotas_of(&self.options.tenants, tenant.name.as_str())
            .and_then(|q| q.concurrent_turns)?;
        let permits = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let mut slots = self.turn_slots.lock().ok()?;
        Some(
            slots
                .entry(tenant.id)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(permits)))
                .clone(),
        )
    }

    /// Hands `wake` to the session's actor, starting one if none is in memory.
    fn wake(self: &Arc<Self>, session: SessionId, wake: Wake) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        let wake = match actors.get(&session) {
            // A closed queue means the actor is exiting: a new one takes over.
            Some(tx) => match tx.send(wake) {
                Ok(()) => return,
                Err(mpsc::error::SendError(wake)) => wake,
            },
            None => wake,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(wake);
        actors.insert(session, tx);
        self.runtime.spawn(actor(self.clone(), session, rx));
    }
}

/// Waits for the turn of an event submitted with [`Engine::submit_and_watch`].
pub struct TurnWatch {
    engine: Engine,
    tenant: TenantId,
    event: EventId,
    session: SessionId,
    /// Subscribed before the actor was woken; `None` for a repeated idempotency key, whose
    /// turn may be long over.
    live: Option<Subscription>,
}

impl TurnWatch {
    /// The event's turn once it has ended, or `None` after `timeout`.
    pub async fn ended(self, timeout: Duration) -> Result<Option<Finished>, Error> {
        let Self { engine, tenant, event, session, live } = self;
        match live {
            Some(live) => engine.wait_live(tenant, event, live, timeout, false).await,
            None => engine.wait(tenant, event, session, timeout).await,
        }
    }
}

/// One session's actor: runs its open events turn by turn, in arrival order, and leaves
/// memory after being idle.
async fn actor(inner: Arc<Inner>, session_id: SessionId, mut wake: mpsc::UnboundedReceiver<Wake>) {
    let idle = Duration::from_secs(inner.options.sessions.idle_secs.max(1));
    // Session, tenant and agent are read once per stay in memory: an agent's changed settings
    // apply from its next activation (after `idle_secs` without messages).
    let mut context: Option<Arc<TurnContext>> = None;
    let mut inbox = Inbox::default();
    let mut kept = Kept::default();
    loop {
        if !inbox.has_work() {
            match tokio::time::timeout(idle, wake.recv()).await {
                Ok(Some(woken)) => inbox.take(woken),
                _ => {
                    // Leave only if no wake-up raced in: `wake` holds the same lock.
                    let mut actors = inner.actors.lock().unwrap_or_else(|e| e.into_inner());
                    if wake.is_empty() {
                        actors.remove(&session_id);
                        return;
                    }
                }
            }
        }
        while let Ok(woken) = wake.try_recv() {
            inbox.take(woken);
        }
        let settings = inner.settings.load(std::sync::atomic::Ordering::SeqCst);
        let ctx = match &context {
            Some(ctx) if ctx.settings == settings => ctx.clone(),
            _ => match Box::pin(TurnContext::load(&inner, session_id, settings)).await {
                Ok(ctx) => {
                    // Settings changed (a queue mode, say): what was kept under the old ones
                    // is read again.
                    kept.history = None;
                    context.insert(Arc::new(ctx)).clone()
                }
                Err(err) => {
                    tracing::error!(session = %session_id, error = %err, "cannot load the session; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    inbox.read_store = true;
                    continue;
                }
            },
        };
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
                    tokio::time::sleep(Duration::from_secs(1)).await;
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
        // Events whose outcome could not be recorded are still open: read again.
        inbox.read_store = store_has_more || !settled;
    }
}

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
    let Ok((turn, rows)) = inner.store.start_turn(&session, ids, 0, Vec::new()).await else {
        return false;
    };
    publish(inner, session.agent_id, &rows);
    let outcome = TurnOutcome {
        status: TurnStatus::Failed,
        reply: None,
        error: Some(reason.into()),
        model: None,
    };
    let data = json!({ "turn": turn.id.to_string(), "error": reason });
    match inner.store.finish_turn(&turn, outcome, vec![outbox(EventKind::TurnFailed, data)]).await {
        Ok(rows) => {
            publish(inner, turn.agent_id, &rows);
            true
        }
        Err(_) => false,
    }
}

fn outbox(kind: EventKind, data: Value) -> OutboxEvent {
    OutboxEvent { kind, data: data.to_string() }
}

fn publish(inner: &Inner, agent: AgentId, rows: &[OutboxRow]) {
    for row in rows {
        if let Some(session) = row.session_id {
            inner.hub.publish_with(agent, session, || LiveEvent {
                session,
                id: Some(row.id),
                kind: row.kind,
                data: serde_json::from_str(&row.data).unwrap_or(Value::Null),
            });
        }
    }
    if !rows.is_empty() {
        inner.outbox.notify_waiters();
    }
}

/// What a session's turns need to know about where they run.
struct TurnContext {
    session: SessionRow,
    tenant: Tenant,
    agent: Agent,
    /// The session's queue mode: its own, else its agent's (`sessions.agents`), else the
    /// deployment's.
    queue_mode: QueueMode,
    /// The engine's settings generation this was loaded at.
    settings: u64,
}

impl TurnContext {
    async fn load(
        inner: &Inner,
        session_id: SessionId,
        settings: u64,
    ) -> Result<Self, clade_store::Error> {
        let store = &inner.visible;
        let session = store.session_any_tenant(session_id).await?;
        let tenant = store.tenant_by_id(session.tenant_id).await?;
        let agent = store.agent_by_id(session.tenant_id, session.agent_id).await?;
        let queue_mode =
            session.queue_mode.as_deref().and_then(QueueMode::parse).unwrap_or_else(|| {
                inner.options.sessions.queue_mode_for(tenant.name.as_str(), agent.handle.as_str())
            });
        Ok(Self { session, tenant, agent, queue_mode, settings })
    }
}

/// Runs a turn until it ends, is cancelled, or has run `timeout` not counting its pauses.
async fn run_until_deadline(
    run: impl std::future::Future<Output = Result<(), String>>,
    cancelled: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    pause: &Pause,
    started: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), String> {
    tokio::pin!(run);
    loop {
        let deadline = pause.deadline(started, timeout);
        let tick = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // Paused: look again in a second (the pause ends when the approval comes).
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        tokio::select! {
            result = &mut run => return result,
            () = cancelled.as_mut() => return Err("cancelled by request".to_owned()),
            () = tick => {
                let now = tokio::time::Instant::now();
                if pause.deadline(started, timeout).is_some_and(|deadline| deadline <= now) {
                    return Err(format!(
                        "the turn did not finish within {} s (sessions.turn_timeout_secs; time waiting for approvals not counted)",
                        timeout.as_secs()
                    ));
                }
            }
        }
    }
}

tokio::task_local! {
    /// The running turn's [`Pause`], for the tool step that waits for an approval.
    static TURN_PAUSE: Arc<Pause>;
}

/// Time a turn spends waiting for operators' approvals, which its timeout does not count: a
/// turn waiting on a person is paused, not slow.
#[derive(Default)]
struct Pause {
    state: Mutex<PauseState>,
}

#[derive(Default)]
struct PauseState {
    /// Waits in progress, and since when the first of them began.
    waiting: u32,
    since: Option<tokio::time::Instant>,
    /// Time paused by waits that have ended.
    total: Duration,
}

impl Pause {
    /// Pauses the turn's clock until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> PauseGuard {
        if let Ok(mut state) = self.state.lock() {
            if state.waiting == 0 {
                state.since = Some(tokio::time::Instant::now());
            }
            state.waiting += 1;
        }
        PauseGuard(self.clone())
    }

    /// When a turn started at `started` times out; `None` while it is paused.
    fn deadline(
        &self,
        started: tokio::time::Instant,
        timeout: Duration,
    ) -> Option<tokio::time::Instant> {
        let state = self.state.lock().ok()?;
        (state.waiting == 0).then(|| started + timeout + state.total)
    }
}

struct PauseGuard(Arc<Pause>);

impl Drop for PauseGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.waiting = state.waiting.saturating_sub(1);
            if state.waiting == 0
                && let Some(since) = state.since.take()
            {
                state.total += since.elapsed();
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
    let _slot = match inner.turn_slots(&ctx.tenant) {
        Some(slots) => slots.acquire_owned().await.ok(),
        None => None,
    };
    let timeout = Duration::from_secs(inner.options.sessions.turn_timeout_secs);
    // The turn's clock stops while it waits for an operator's approval (see `Pause`).
    let pause = Arc::new(Pause::default());
    let started = tokio::time::Instant::now();
    let cancelled = cancel.notified();
    tokio::pin!(cancelled);
    let run = TURN_PAUSE.scope(pause.clone(), run_turn(&inner, &ctx, &events, &mut kept));
    let result = run_until_deadline(run, &mut cancelled, &pause, started, timeout).await;
    match result {
        Ok(()) => (true, kept),
        Err(reason) => {
            tracing::warn!(session = %session_id, reason = %reason, "turn failed");
            // A turn stopped part-way may have recorded its outcome without updating the
            // cache: the next turn reads the history from the store.
            kept.history = None;
            (Box::pin(fail_events(&inner, session_id, &events, &reason)).await, kept)
        }
    }
}

/// Runs (or resumes) the turn of `events`. `Err` carries the reason the turn failed before it
/// could record an outcome itself.
async fn run_turn(
    inner: &Inner,
    ctx: &TurnContext,
    events: &[EventRow],
    kept: &mut Kept,
) -> Result<(), String> {
    let store = &inner.visible;
    let (session, tenant, agent) = (&ctx.session, &ctx.tenant, &ctx.agent);
    let session_id = session.id;
    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let started_data = json!({ "events": ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "agent": agent.handle.as_str() });
    // A new turn is committed together with its first model response (and, when that response
    // ends the turn, with its outcome): a crash before then leaves the events pending and the
    // turn simply runs again, since nothing irreversible happened. A turn already on disk is
    // resumed from its journal.
    let persona = read_persona(inner, agent);
    kept.persona = Some(persona.clone());
    kept.layers.refresh(inner, agent, &session.source);
    let layers = &kept.layers;
    let history = &mut kept.history;
    let (turn, journal, mut begun) = match events.first().and_then(|e| e.turn_id) {
        Some(id) => {
            let turn = Box::pin(store.turn(id)).await.map_err(|e| e.to_string())?;
            let journal: HashMap<StepKey, JournalEntry> = Box::pin(store.journal(id))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|e| (e.step, e))
                .collect();
            (turn, journal, true)
        }
        None => {
            let now = store.now();
            let turn = TurnRow {
                id: clade_core::TurnId::generate(now),
                session_id: session.id,
                tenant_id: session.tenant_id,
                agent_id: session.agent_id,
                status: TurnStatus::Running,
                reply: None,
                error: None,
                model: None,
                config_revision: config_revision(inner, tenant, agent, &persona, layers),
                started_at: now,
                finished_at: None,
            };
            (turn, HashMap::new(), false)
        }
    };
    if !begun {
        // Live-only for now, so streaming clients can follow; the outbox row commits with the turn.
        inner.hub.publish_with(agent.id, session.id, || {
            let mut live = started_data.clone();
            live["turn"] = json!(turn.id.to_string());
            LiveEvent { session: session.id, id: None, kind: EventKind::TurnStarted, data: live }
        });
    }
    // The committed copy names its turn too, as the live one does (a stream passes on only one
    // of the two: see `clade-gateway`'s `live`).
    let started_outbox = || {
        let mut data = started_data.clone();
        data["turn"] = json!(turn.id.to_string());
        vec![outbox(EventKind::TurnStarted, data)]
    };

    let resumes = journal.keys().filter(|k| matches!(k, StepKey::Resume { .. })).count() as u32;
    // A resumed turn may be older than turns that completed since it yielded: the kept history
    // would give it their messages, and keeping it would put it after them. It reads the
    // store's history before it, and the next turn reads the store's again.
    if resumes > 0 {
        *history = None;
    }
    let mut messages =
        Box::pin(compose(inner, &persona, layers, ctx, &turn, events, history)).await;
    if resumes > 0 {
        *history = None;
    }
    let tools: Arc<[ToolSpec]> =
        inner.options.tools.specs_for(tenant.name.as_str(), agent.handle.as_str());
    let mut last_model = None;
    // Each resume of a yielded turn grants another `max_iterations` model calls.
    let budget = inner.options.sessions.max_iterations.saturating_mul(resumes + 1);
    for iteration in 0..budget {
        let step = StepKey::Model { iteration };
        let model_step = match journal
            .get(&step)
            .and_then(|e| serde_json::from_str::<ModelStep>(&e.data).ok())
        {
            Some(done) => done,
            None => {
                // The context goes into the request and comes back after the call: a turn's
                // context is its largest value, so it is not copied for each call.
                let request = ModelRequest {
                    messages: std::mem::take(&mut messages),
                    tools: tools.clone(),
                    ..ModelRequest::default()
                };
                let hub = inner.hub.clone();
                let turn_id = turn.id.to_string();
                let agent_id = agent.id;
                let mut on_event = |event: &StreamEvent| {
                    if let StreamEvent::TextDelta(text) = event {
                        hub.publish_with(agent_id, session_id, || LiveEvent {
                            session: session_id,
                            id: None,
                            kind: EventKind::TextDelta,
                            data: json!({ "turn": turn_id, "text": text }),
                        });
                    }
                };
                // Request and response are journaled together, once the response is in: a call
                // that crashed before then is simply made again (no side effect on our side).
                // Boxed: the call's state (router, adapter, HTTP client) is the largest part of
                // a turn's, and a turn spends most of its life awaiting other things.
                let call = Box::pin(inner.models.call_unrecorded(
                    tenant,
                    Some(agent),
                    ProcessKind::Channel,
                    &request,
                    &mut on_event,
                ));
                let outcome = match call.await {
                    Ok(outcome) => outcome,
                    Err(err) => {
                        let reason = err.error.to_string();
                        if !begun {
                            let (outcome, events_out) = outcome_of(
                                &turn,
                                TurnStatus::Failed,
                                None,
                                Some(reason),
                                last_model,
                            );
                            let rows = Box::pin(store.begin_turn(
                                &turn,
                                ids.clone(),
                                started_outbox(),
                                None,
                                Some((outcome, events_out)),
                            ))
                            .await
                            .map_err(|e| e.to_string())?;
                            publish(inner, turn.agent_id, &rows);
                            return Ok(());
                        }
                        Box::pin(finish(
                            inner,
                            &turn,
                            TurnStatus::Failed,
                            None,
                            Some(reason),
                            last_model,
                        ))
                        .await?;
                        return Ok(());
                    }
                };
                let done = ModelStep {
                    model: outcome.model.clone(),
                    text: outcome.response.text.clone(),
                    tool_calls: outcome.response.tool_calls.clone(),
                    input_tokens: outcome.response.usage.input_tokens
                        + outcome.response.usage.cached_input_tokens,
                    output_tokens: outcome.response.usage.output_tokens,
                    cost_micros: outcome.cost_micros,
                    route: outcome.events.iter().map(|e| format!("{e:?}")).collect(),
                    messages: request.messages.len(),
                    request_sha256: fingerprint(&request, inner.options.tools.specs_digest()),
                    tools: request.tools.iter().map(|t| t.name.clone()).collect(),
                };
                messages = request.messages;
                let usage =
                    crate::models::usage_record(tenant, Some(agent), Some(turn.id), &outcome);
                let entry =
                    JournalEntry { step, data: serde_json::to_string(&done).unwrap_or_default() };
                if begun {
                    let rows = Box::pin(inner.store.append_journal(
                        &turn,
                        entry,
                        Vec::new(),
                        Some(usage),
                        None,
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                    publish(inner, turn.agent_id, &rows);
                } else {
                    let ending = done.tool_calls.is_empty().then(|| {
                        outcome_of(
                            &turn,
                            TurnStatus::Completed,
                            Some(done.text.clone()),
                            None,
                            Some(done.model.clone()),
                        )
                    });
                    let rows = Box::pin(store.begin_turn(
                        &turn,
                        ids.clone(),
                        started_outbox(),
                        Some((entry, Some(usage))),
                        ending.clone(),
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                    publish(inner, turn.agent_id, &rows);
                    begun = true;
                    if ending.is_some() {
                        remember(history, inner, events, &done.text);
                        return Ok(());
                    }
                }
                done
            }
        };
        last_model = Some(model_step.model.clone());
        messages.push(Message::Assistant {
            text: model_step.text.clone(),
            tool_calls: model_step.tool_calls.clone(),
        });
        if model_step.tool_calls.is_empty() {
            remember(history, inner, events, &model_step.text);
            Box::pin(finish(
                inner,
                &turn,
                TurnStatus::Completed,
                Some(model_step.text),
                None,
                last_model,
            ))
            .await?;
            return Ok(());
        }
        for (index, call) in model_step.tool_calls.iter().enumerate() {
            let result =
                Box::pin(run_tool(inner, ctx, &turn, &journal, iteration, index, call)).await?;
            messages.push(Message::Tool {
                call_id: call.id.clone(),
                content: result.content,
                is_error: result.is_error,
            });
        }
        if ctx.queue_mode == QueueMode::Steer {
            Box::pin(steer(inner, &turn, &mut messages)).await;
        }
    }
    Box::pin(finish(inner, &turn, TurnStatus::Yielded, None, Some(format!("stopped after {budget} model calls (sessions.max_iterations is {} per run); resume with `clade sessions resume {session_id}`", inner.options.sessions.max_iterations)), last_model)).await
}

/// Steer mode: messages that arrived during the turn join it between tool calls.
async fn steer(inner: &Inner, turn: &TurnRow, messages: &mut Vec<Message>) {
    let Ok(pending) = inner.visible.pending_events(turn.session_id).await else { return };
    if pending.is_empty()
        || inner.store.join_turn(turn.id, pending.iter().map(|e| e.id).collect()).await.is_err()
    {
        return;
    }
    for event in pending {
        messages.push(Message::user(event.text));
    }
}

async fn journal_step(
    inner: &Inner,
    turn: &TurnRow,
    step: StepKey,
    data: Value,
    events: Vec<OutboxEvent>,
    audit: Option<clade_store::AuditEntry>,
) -> Result<(), String> {
    let rows = inner
        .store
        .append_journal(turn, JournalEntry { step, data: data.to_string() }, events, None, audit)
        .await
        .map_err(|e| e.to_string())?;
    publish(inner, turn.agent_id, &rows);
    Ok(())
}

/// A turn's outcome and the lifecycle event that announces it.
fn outcome_of(
    turn: &TurnRow,
    status: TurnStatus,
    reply: Option<String>,
    error: Option<String>,
    model: Option<String>,
) -> (TurnOutcome, Vec<OutboxEvent>) {
    let kind = status.end_event().unwrap_or(EventKind::TurnFailed);
    let data = json!({ "turn": turn.id.to_string(), "status": status.as_str(), "reply": reply, "error": error, "model": model });
    (TurnOutcome { status, reply, error, model }, vec![outbox(kind, data)])
}

async fn finish(
    inner: &Inner,
    turn: &TurnRow,
    status: TurnStatus,
    reply: Option<String>,
    error: Option<String>,
    model: Option<String>,
) -> Result<(), String> {
    let (outcome, events) = outcome_of(turn, status, reply, error, model);
    let rows = inner.store.finish_turn(turn, outcome, events).await.map_err(|e| e.to_string())?;
    publish(inner, turn.agent_id, &rows);
    Ok(())
}

/// Runs one tool call, or recovers its journaled outcome. An `AtMostOnce` call that started
/// but has no result is never run again: the model is told it was interrupted.
async fn run_tool(
    inner: &Inner,
    ctx: &TurnContext,
    turn: &TurnRow,
    journal: &HashMap<StepKey, JournalEntry>,
    iteration: u32,
    index: usize,
    call: &ToolCall,
) -> Result<ToolStep, String> {
    let (tenant, agent) = (ctx.tenant.name.as_str(), &ctx.agent);
    let index = u32::try_from(index).map_err(|_| format!("tool call {index} of one model call"))?;
    let result_step = StepKey::ToolResult { iteration, index };
    if let Some(done) =
        journal.get(&result_step).and_then(|e| serde_json::from_str::<ToolStep>(&e.data).ok())
    {
        return Ok(done);
    }
    let start_step = StepKey::ToolStart { iteration, index };
    let key = effect_key(turn, &start_step);
    let runner = &inner.options.tools;
    let tool = runner.registry().get_for(&call.name, tenant, agent.handle.as_str()).cloned();
    let origin = CallOrigin {
        call_key: key.clone(),
        call_id: call.id.clone(),
        session: Some(turn.session_id),
        turn: Some(turn.id),
        by: "turn",
    };
    let result = match (&tool, call.parse_arguments()) {
        (None, args) => {
            let args = args.unwrap_or(Value::Null);
            ToolStep {
                content: runner.unknown_tool(agent, &call.name, &args, &origin).await,
                is_error: true,
            }
        }
        (Some(_), Err(message)) => ToolStep { content: message, is_error: true },
        (Some(tool), Ok(args)) => {
            let started_before = journal.contains_key(&start_step);
            if started_before && tool.effect() == EffectClass::AtMostOnce {
                ToolStep {
                    content: format!(
                        "tool {} was interrupted by a restart; its outcome is unknown and it was not run again",
                        call.name
                    ),
                    is_error: true,
                }
            } else {
                // Waiting for an approval is not the turn's time (see `Pause`).
                let paused = TURN_PAUSE.try_with(|pause| pause.begin()).ok();
                let authorized = runner.authorize(agent, tool.as_ref(), &args, &origin).await;
                drop(paused);
                match authorized {
                    Err(content) => ToolStep { content, is_error: true },
                    Ok(authorized) => {
                        // The decision's audit record commits with the call's start, or the
                        // call does not run (a resumed idempotent call writes it alone).
                        let recorded = if started_before {
                            runner.record_decision(&authorized).await
                        } else {
                            let data = json!({ "call": call.id, "name": call.name, "arguments": args, "effect": tool.effect().as_str(), "key": key });
                            journal_step(
                                inner,
                                turn,
                                start_step,
                                data.clone(),
                                vec![outbox(EventKind::ToolCalled, data)],
                                Some(authorized.audit.clone()),
                            )
                            .await?;
                            crate::failpoints::hit("after_journal_intent");
                            Ok(())
                        };
                        match recorded {
                            Err(content) => ToolStep { content, is_error: true },
                            Ok(()) => {
                                let result = match runner
                                    .execute(agent, tool.as_ref(), args, &authorized)
                                    .await
                                {
                                    Ok(content) => ToolStep { content, is_error: false },
                                    Err(content) => ToolStep { content, is_error: true },
                                };
                                crate::failpoints::hit("after_tool_effect_before_result");
                                result
                            }
                        }
                    }
                }
            }
        }
    };
    let data = json!({ "call": call.id, "name": call.name, "content": result.content, "is_error": result.is_error });
    let entry = serde_json::to_value(&result).unwrap_or(Value::Null);
    let rows = inner
        .store
        .append_journal(
            turn,
            JournalEntry { step: result_step, data: entry.to_string() },
            vec![outbox(EventKind::ToolResult, data)],
            None,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    publish(inner, turn.agent_id, &rows);
    Ok(result)
}

/// The agent-config revision a turn runs with: a content hash (63 bits) of everything that
/// shapes it — the persona files and the session's layers, the model chain, the tools and
/// their schemas. Equal revisions mean equal configuration; any edit gives a new one.
fn config_revision(
    inner: &Inner,
    tenant: &Tenant,
    agent: &Agent,
    persona: &Persona,
    layers: &Layers,
) -> i64 {
    let (tenant, handle) = (tenant.name.as_str(), agent.handle.as_str());
    let mut digest = Sha256::new();
    for (file, contents) in &persona.files {
        digest.update(file.as_bytes());
        digest.update(contents);
        digest.update([0]);
    }
    for text in layers.texts() {
        digest.update(text.as_bytes());
        digest.update([0]);
    }
    for model in inner.models.chain(crate::ProcessKind::Channel, Some((tenant, handle))) {
        digest.update(model.as_bytes());
        digest.update([0]);
    }
    for tool in inner.options.tools.registry().for_agent(tenant, handle) {
        digest.update(tool.name().as_bytes());
        digest.update([0]);
    }
    digest.update(inner.options.tools.specs_digest().as_bytes());
    let hash = digest.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(first) & i64::MAX
}

/// SHA-256 of a model request's JSON, hashed as it is written out rather than from a copy.
/// Tools are stood for by their names and `tools_sha256`, the digest of every tool's name,
/// description and schema ([`ToolRunner::specs_digest`]): the same tools give the same
/// fingerprint, and their schemas are not written out again for every call.
fn fingerprint(request: &ModelRequest, tools_sha256: &str) -> String {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    #[derive(Serialize)]
    struct Fingerprinted<'a> {
        messages: &'a [Message],
        tools: Vec<&'a str>,
        tools_sha256: &'a str,
        params: &'a clade_model::Params,
    }
    let fingerprinted = Fingerprinted {
        messages: &request.messages,
        tools: request.tools.iter().map(|t| t.name.as_str()).collect(),
        tools_sha256,
        params: &request.params,
    };
    // serde_json writes a value in many small pieces: they are gathered before hashing.
    let mut hashing = std::io::BufWriter::with_capacity(8 * 1024, Hashing(Sha256::new()));
    if serde_json::to_writer(&mut hashing, &fingerprinted).is_err() {
        return String::new();
    }
    match hashing.into_inner() {
        Ok(hashing) => hex::encode(hashing.0.finalize()),
        Err(_) => String::new(),
    }
}

/// `hash(tenant, session, turn, step)`: what an idempotent tool receives, the same on every
/// retry of the same call. The step (`tool/{iteration}/{index}`), not the model's call id, since
/// a provider may reuse call ids across the model calls of one turn.
fn effect_key(turn: &TurnRow, step: &StepKey) -> String {
    let call = step.call().unwrap_or_else(|| step.to_string());
    let digest = Sha256::new()
        .chain_update(turn.tenant_id.as_bytes())
        .chain_update(turn.session_id.as_bytes())
        .chain_update(turn.id.as_bytes())
        .chain_update(call.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

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
