//! A chat turn as the engine runs it: the executor's seams over the store, the agent's model
//! route and its tools, and the context sources an actor keeps between turns.

use std::collections::HashMap;
use std::sync::Arc;

use clade_core::{Agent, EventId, ProcessKind, Tenant, Timestamp};
use clade_model::{CallError, CallOutcome, ModelRequest, StreamEvent, ToolCall, ToolSpec};
use clade_protocol::LifecycleEvent;
use clade_store::{AuditEntry, EventRow, OutboxEvent, TurnRow, UsageRecord};
use clade_tools::{EffectClass, Tool};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Inner;
use super::actor::{TURN_PAUSE, TurnContext, publish};
use super::context::{
    ContextSource, ForkedFrom, Kept, Layers, MemoryRecall, Persona, PersonaFiles, SessionHistory,
    SessionLayers, Whereabouts, WorkUnderWay, WorkingMemory, read_persona,
};
use super::executor::{self, Hands, Journal, Thinker, TurnError, TurnPlan, Write};
use crate::hub::LiveEvent;
use crate::tools::{Authorized, CallOrigin, ToolRunner, ToolSet};

/// Counts a turn as running while it lives.
struct Running<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Running<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs (or resumes) the turn of `events`. `Err` carries the reason the turn failed before it
/// could record an outcome itself.
///
/// A new turn is committed together with its first model response (and, when that response
/// ends the turn, with its outcome): a crash before then leaves the events pending and the
/// turn simply runs again, since nothing irreversible happened. A turn already on disk is
/// resumed from its journal.
pub(super) async fn run_turn(
    inner: &Inner,
    ctx: &TurnContext,
    events: &[EventRow],
    kept: &mut Kept,
) -> Result<(), TurnError> {
    let _running = Running::new(&inner.running_turns);
    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let metrics = crate::telemetry::tenant(ctx.tenant.id, ctx.tenant.name.as_str());
    if let Some(metrics) = &metrics
        && let Some(oldest) = events.iter().map(|e| e.created_at).min()
    {
        metrics.queue_waited(crate::telemetry::between(oldest, inner.store.now()));
    }
    let mut journal = StoreJournal {
        inner,
        events: ids,
        announce: None,
        ended_at: None,
        metrics: metrics.clone(),
    };
    let thinker = AgentModel { inner, tenant: &ctx.tenant, agent: &ctx.agent, metrics };
    let owner = (ctx.tenant.id, ctx.agent.id, ctx.session.id);
    let resumed = events.first().and_then(|e| e.turn_id);
    let stops = super::debugger::TurnStops::of(inner, owner, resumed).await?;
    let result = Box::pin(drive(inner, ctx, events, kept, &mut journal, (&thinker, &stops))).await;
    kept.ended_at = journal.ended_at;
    result
}

/// A turn's journal, told when a new turn opens (a resumed one is already on disk).
pub(super) trait Opening: Journal {
    fn opened(&mut self, turn: &TurnRow, started: LifecycleEvent);
}

/// Runs the turn of `events` with the agent's persona, tools and context sources, writing to
/// `journal` and calling `thinker`: the store and the agent's models for a real turn, or what
/// [`super::preview`] puts in their place to see what a turn would send.
pub(super) async fn drive(
    inner: &Inner,
    ctx: &TurnContext,
    events: &[EventRow],
    kept: &mut Kept,
    journal: &mut impl Opening,
    (thinker, stops): (&impl Thinker, &impl super::debugger::Stops),
) -> Result<(), TurnError> {
    let store = &inner.visible;
    let (session, tenant, agent) = (&ctx.session, &ctx.tenant, &ctx.agent);
    let persona = read_persona(inner, agent);
    kept.persona = Some(persona.clone());
    kept.layers.refresh(inner, agent, &session.source);
    // The tools and rules this turn runs with, however they are reloaded meanwhile.
    let tools = inner.tools.tool_set();
    // A branch or worker: its row says what it may use, and whether it was cancelled.
    let fork = if ctx.profile.forked() {
        match Box::pin(store.forks(tenant.id).get(session.id)).await? {
            Some(fork) if fork.status == clade_core::ExecutionStatus::Cancelled => {
                return Err(TurnError::ForkCancelled { kind: fork.kind.to_string() });
            }
            fork => fork,
        }
    } else {
        None
    };
    let (turn, done, resumed) = match events.first().and_then(|e| e.turn_id) {
        Some(id) => {
            let turn = Box::pin(store.turn(id)).await?;
            let journal = Box::pin(store.journal(id)).await?;
            (turn, journal.into_iter().map(|e| (e.step, e)).collect(), true)
        }
        None => {
            let revision =
                config_revision(inner, ctx.kind(), &tools, tenant, agent, &persona, &kept.layers);
            let turn = TurnRow::starting(session, revision, store.now());
            (turn, HashMap::new(), false)
        }
    };
    if !resumed {
        let started = LifecycleEvent::from(clade_protocol::TurnStarted {
            turn: turn.id.to_string(),
            agent: agent.handle.as_str().to_owned(),
            events: events.iter().map(|e| e.id.to_string()).collect(),
        });
        journal.opened(&turn, started);
    }
    let hands = AgentTools::of(inner, ctx, tools, fork.as_ref()).await;
    let routed = Some(crate::models::Routed::of(tenant, agent));
    let (tool_tokens, answer_tokens) = {
        let models = inner.models();
        (models.tool_tokens(ctx.kind(), routed), models.answer_tokens(ctx.kind(), routed))
    };
    // The settings the turn's context was loaded with, however they are reloaded meanwhile.
    let max_iterations = ctx.limits().max_iterations;
    let max_tokens = ctx.token_share();
    let plan = TurnPlan {
        kind: ctx.kind(),
        turn,
        done,
        events,
        max_iterations,
        max_tokens,
        steer: ctx.queue_mode == clade_config::QueueMode::Steer,
        resume_hint: format!("session {} waits to be resumed", session.id),
        tool_tokens,
        answer_tokens,
    };
    let steered = plan.steer;
    let window = super::compaction::Window::of(inner, ctx);
    let Kept { history, layers, compact, working, forks, .. } = kept;
    let recall = inner.recall.read().unwrap_or_else(|e| e.into_inner()).clone();
    let variables = super::context::persona_variables(&ctx.settings.tenants, tenant, agent);
    let mut sources: [&mut dyn ContextSource; 8] = [
        &mut PersonaFiles { persona: &persona, variables: &variables },
        &mut SessionLayers(layers),
        &mut Whereabouts { profile: ctx.profile, source: &session.source, now: store.now() },
        &mut ForkedFrom { inner, ctx, fork: fork.as_ref() },
        &mut SessionHistory {
            kept: history,
            inner,
            ctx,
            steered,
            window,
            compact,
            cap: None,
            shown: 0,
        },
        &mut WorkingMemory { kept: working, inner, tenant: tenant.id, session: session.id },
        &mut WorkUnderWay { kept: forks, inner, ctx },
        &mut MemoryRecall {
            recall,
            store: inner.visible.tenant_scope(tenant.id),
            agent: agent.id,
            source: &session.source,
        },
    ];
    Box::pin(executor::execute(plan, journal, thinker, (&hands, stops), &mut sources)).await
}

/// The store as a turn's journal. The turn's first write commits the turn itself, takes its
/// events and announces it (`announce`); each write's lifecycle events are published live once
/// committed.
struct StoreJournal<'a> {
    inner: &'a Inner,
    events: Vec<EventId>,
    /// The `turn.started` event, until the turn is on disk (`None` once it is).
    announce: Option<OutboxEvent>,
    /// The time read just before the turn's outcome was written, so before anyone could see
    /// it: the session's idleness counts from here.
    ended_at: Option<Timestamp>,
    /// The turn's tenant's metrics, while a recorder records.
    metrics: Option<Arc<crate::telemetry::TenantMetrics>>,
}

impl Opening for StoreJournal<'_> {
    fn opened(&mut self, turn: &TurnRow, started: LifecycleEvent) {
        // Live at once, so streaming clients can follow; the outbox row commits with the turn.
        self.live(turn, &started);
        self.announce = Some(OutboxEvent::from(&started));
    }
}

impl Journal for StoreJournal<'_> {
    async fn write(&mut self, turn: &TurnRow, write: Write) -> Result<(), TurnError> {
        let store = &self.inner.store;
        let Write { step, usage, audit, mut outbox, ending } = write;
        if ending.is_some() {
            self.ended_at = Some(store.now());
        }
        // Counted once the write commits.
        let counted = (usage.clone(), ending.as_ref().map(|outcome| outcome.status));
        let rows = match self.announce.take() {
            Some(announce) => {
                if audit.is_some() {
                    return Err(TurnError::Internal(
                        "a turn's first write cannot carry an audit record",
                    ));
                }
                let first = step.map(|entry| (entry, usage));
                let (announced, ending) = match ending {
                    Some(outcome) => (vec![announce], Some((outcome, outbox))),
                    None => {
                        outbox.insert(0, announce);
                        (outbox, None)
                    }
                };
                let events = std::mem::take(&mut self.events);
                Box::pin(store.turns().begin(turn, events, announced, first, ending)).await
            }
            None => match (step, ending) {
                (Some(entry), None) => {
                    Box::pin(store.turns().append_journal(turn, entry, outbox, usage, audit)).await
                }
                (step, Some(outcome)) => {
                    if let Some(entry) = step {
                        let rows = Box::pin(store.turns().append_journal(
                            turn,
                            entry,
                            Vec::new(),
                            usage,
                            audit,
                        ))
                        .await?;
                        publish(self.inner, turn.agent_id, &rows);
                    }
                    Box::pin(store.turns().finish(turn, outcome, outbox)).await
                }
                (None, None) => Ok(Vec::new()),
            },
        }?;
        publish(self.inner, turn.agent_id, &rows);
        if let Some(metrics) = &self.metrics {
            if let Some(usage) = &counted.0 {
                metrics.model_answered(usage);
            }
            if let Some(status) = counted.1 {
                metrics.turn_ended(status, crate::telemetry::between(turn.started_at, store.now()));
            }
        }
        Ok(())
    }

    fn live(&self, turn: &TurnRow, event: &LifecycleEvent) {
        let (tenant, session) = (turn.tenant_id, turn.session_id);
        self.inner.bus.hub().publish_with(turn.agent_id, session, || {
            let event = std::sync::Arc::new(event.clone());
            Some(LiveEvent { tenant, session, id: None, event })
        });
    }

    async fn steer(&mut self, turn: &TurnRow) -> Vec<String> {
        let Ok(pending) = self.inner.visible.pending_events(turn.session_id).await else {
            return Vec::new();
        };
        if pending.is_empty()
            || self
                .inner
                .store
                .turns()
                .join(turn.id, pending.iter().map(|e| e.id).collect())
                .await
                .is_err()
        {
            return Vec::new();
        }
        pending.into_iter().map(|event| event.text).collect()
    }
}

/// The agent's model route, with its budgets.
struct AgentModel<'a> {
    inner: &'a Inner,
    tenant: &'a Tenant,
    agent: &'a Agent,
    /// The tenant's metrics, while a recorder records: each call's time to its first output.
    metrics: Option<Arc<crate::telemetry::TenantMetrics>>,
}

impl Thinker for AgentModel<'_> {
    async fn call(
        &self,
        kind: ProcessKind,
        request: &ModelRequest,
        on_event: &mut (dyn FnMut(&StreamEvent) + Send),
    ) -> Result<CallOutcome, CallError> {
        // Boxed: the call's state (router, adapter, HTTP client) is the largest part of a
        // turn's, and a turn spends most of its life awaiting other things.
        let models = self.inner.models();
        let clock = self.inner.visible.clock().clone();
        let started = clock.now();
        let mut first = None;
        let mut timed = |event: &StreamEvent| {
            if first.is_none()
                && matches!(event, StreamEvent::TextDelta(_) | StreamEvent::ToolCallStart { .. })
            {
                first = Some(clock.now());
            }
            on_event(event);
        };
        let called = Box::pin(async move {
            models.call_unrecorded(self.tenant, Some(self.agent), kind, request, &mut timed).await
        })
        .await;
        if let (Ok(outcome), Some(first), Some(metrics)) = (&called, first, &self.metrics) {
            metrics.model_first_token(&outcome.model, crate::telemetry::between(started, first));
        }
        called
    }

    fn usage(&self, turn: &TurnRow, outcome: &CallOutcome) -> UsageRecord {
        crate::models::usage_record(self.tenant, Some(self.agent), Some(turn.id), outcome)
    }
}

/// The agent's tools through the tool runner: policy, approval, sandbox, audit.
struct AgentTools<'a> {
    runner: &'a ToolRunner,
    /// The operator's rules and the agent's grants when the turn started: a tool that needs a
    /// grant none of them gives is not offered. `None`: they could not be read.
    rules: Option<Vec<clade_tools::policy::SourcedRule>>,
    set: Arc<ToolSet>,
    tenant: &'a str,
    /// The tenant's metrics, while a recorder records.
    metrics: Option<Arc<crate::telemetry::TenantMetrics>>,
    agent: &'a Agent,
    /// Where a call's progress goes: the session's live subscribers.
    hub: crate::hub::Hub,
    /// What the turn runs as: a branch or worker is offered fewer tools.
    profile: &'static dyn super::profile::Profile,
    /// A worker's tools, when it was given some; empty: all of its agent's.
    allowed: Vec<String>,
    failpoints: &'a crate::Failpoints,
}

impl<'a> AgentTools<'a> {
    /// The tools of `ctx`'s agent for one turn: `tools` as they are when it starts, told of as
    /// the agent's rules and grants allow, and only a worker's own when `fork` gave it some.
    async fn of(
        inner: &'a Inner,
        ctx: &'a TurnContext,
        tools: Arc<ToolSet>,
        fork: Option<&clade_store::ForkRow>,
    ) -> Self {
        let agent = &ctx.agent;
        // What the agent may use decides what it is told of; a failed read tells it of
        // everything (each call is still decided by the policy).
        let rules = match inner.tools.rules_in(&tools, agent).await {
            Ok(rules) => Some(rules),
            Err(err) => {
                tracing::warn!(agent = %agent.handle, error = %err, "cannot read the agent's grants; its model is offered every tool");
                None
            }
        };
        AgentTools {
            runner: &inner.tools,
            rules,
            set: tools,
            tenant: ctx.tenant.name.as_str(),
            metrics: crate::telemetry::tenant(ctx.tenant.id, ctx.tenant.name.as_str()),
            agent,
            hub: inner.bus.hub().clone(),
            profile: ctx.profile,
            allowed: fork.map(|f| f.tools.clone()).unwrap_or_default(),
            failpoints: &inner.failpoints,
        }
    }
    /// Whether the turn is offered the tool `name`: as its profile says.
    fn offers(&self, name: &str) -> bool {
        self.profile.offers(name, &self.allowed)
    }

    /// Whether the model is told of the tool `name`: it is offered, and either needs no grant
    /// or some rule or grant that is not a denial names it. (A call is decided by the policy
    /// whatever the model was told.)
    fn told(&self, name: &str) -> bool {
        if !self.offers(name) {
            return false;
        }
        let (Some(rules), Some(tool)) = (&self.rules, self.set.registry().get(name)) else {
            return true;
        };
        !tool.needs_grant()
            || rules.iter().any(|r| {
                r.rule.effect != clade_config::PolicyEffect::Deny
                    && clade_tools::pattern::matches(&r.rule.tool, name)
            })
    }
}

impl AgentTools<'_> {
    /// Passes a call's progress to the session's live subscribers as `tool.progress`.
    fn progress(&self, call: &ToolCall, turn: &TurnRow) -> clade_tools::Progress {
        let hub = self.hub.clone();
        let (tenant, agent, session) = (turn.tenant_id, turn.agent_id, turn.session_id);
        let (turn, id, name) = (turn.id.to_string(), call.id.clone(), call.name.clone());
        clade_tools::Progress::new(move |message, fraction| {
            let event = LifecycleEvent::from(clade_protocol::ToolProgress {
                turn: turn.clone(),
                call: id.clone(),
                name: name.clone(),
                message: message.to_owned(),
                fraction,
            });
            hub.publish_with(agent, session, || {
                Some(LiveEvent { tenant, session, id: None, event: std::sync::Arc::new(event) })
            });
        })
    }

    fn origin(call: &ToolCall, key: &str, turn: &TurnRow) -> CallOrigin {
        CallOrigin {
            call_key: key.to_owned(),
            call_id: call.id.clone(),
            session: Some(turn.session_id),
            turn: Some(turn.id),
            by: "turn",
        }
    }
}

impl Hands for AgentTools<'_> {
    type Tool = Arc<dyn Tool>;
    type Authorized = Authorized;

    fn reached(&self, name: &str) {
        self.failpoints.hit(name);
    }

    fn returned(&self, name: &str, is_error: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.tool_returned(name, is_error);
        }
    }

    fn specs(&self) -> Arc<[ToolSpec]> {
        self.set.specs_offered(self.tenant, self.agent.handle.as_str(), |name| self.told(name))
    }

    fn specs_digest(&self) -> &str {
        self.set.specs_digest()
    }

    fn find(&self, name: &str) -> Option<Arc<dyn Tool>> {
        if name == super::catalogue::FIND {
            return Some(Arc::new(super::catalogue::Finder { specs: self.specs() }));
        }
        if !self.offers(name) {
            return None;
        }
        self.set.registry().get_for(name, self.tenant, self.agent.handle.as_str()).cloned()
    }

    fn effect(&self, tool: &Arc<dyn Tool>) -> EffectClass {
        tool.effect()
    }

    async fn unknown(&self, call: &ToolCall, args: &Value, key: &str, turn: &TurnRow) -> String {
        let origin = Self::origin(call, key, turn);
        let offered = |name: &str| self.offers(name);
        self.runner
            .unknown_tool_in(&self.set, self.agent, (&call.name, args), &offered, &origin)
            .await
    }

    async fn authorize(
        &self,
        tool: &Arc<dyn Tool>,
        call: &ToolCall,
        args: &Value,
        key: &str,
        turn: &TurnRow,
    ) -> Result<Authorized, clade_tools::Error> {
        let origin = Self::origin(call, key, turn);
        // Waiting for an approval is not the turn's time (see the actor's `Pause`).
        let paused = TURN_PAUSE.try_with(|pause| pause.begin()).ok();
        let authorized =
            self.runner.authorize_in(&self.set, self.agent, tool.as_ref(), args, &origin).await;
        drop(paused);
        authorized.map(|mut authorized| {
            authorized.context.progress = Some(self.progress(call, turn));
            authorized
        })
    }

    fn audit(&self, authorized: &Authorized) -> AuditEntry {
        authorized.audit.clone()
    }

    async fn record_decision(&self, authorized: &Authorized) -> Result<(), clade_tools::Error> {
        self.runner.record_decision(authorized).await
    }

    async fn execute(
        &self,
        tool: &Arc<dyn Tool>,
        args: Value,
        authorized: &Authorized,
    ) -> Result<String, clade_tools::Error> {
        let Some(metrics) = &self.metrics else {
            return self.runner.execute(self.agent, tool.as_ref(), args, authorized).await;
        };
        let clock = self.runner.store().clock();
        let started = clock.now();
        let ran = self.runner.execute(self.agent, tool.as_ref(), args, authorized).await;
        metrics.tool_ran(tool.name(), crate::telemetry::between(started, clock.now()));
        ran
    }
}

/// The agent-config revision a turn runs with: a content hash (63 bits) of everything that
/// shapes it — the persona files and the session's layers, the model chain, the tools and
/// their schemas. Equal revisions mean equal configuration; any edit gives a new one.
fn config_revision(
    inner: &Inner,
    kind: ProcessKind,
    tools: &ToolSet,
    tenant: &Tenant,
    agent: &Agent,
    persona: &Persona,
    layers: &Layers,
) -> i64 {
    let routed = crate::models::Routed::of(tenant, agent);
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
    for model in inner.models().chain(kind, Some(routed)) {
        digest.update(model.as_bytes());
        digest.update([0]);
    }
    for tool in tools.registry().for_agent(tenant, handle) {
        digest.update(tool.name().as_bytes());
        digest.update([0]);
    }
    digest.update(tools.specs_digest().as_bytes());
    let hash = digest.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(first) & i64::MAX
}
