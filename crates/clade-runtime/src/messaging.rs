//! Agents messaging the other agents of their tenant: `agent.send` delivers and goes on,
//! `agent.ask` delivers and waits for the receiver's turn, whose reply is the answer, and
//! `agent.publish` delivers to every agent `agent.subscribe`d to a topic.
//!
//! A message is an event of the receiver, in its session with the sender, stored with the
//! message's row and its lifecycle events in one transaction ([`Engine::deliver`]). Its key is
//! the tool call's idempotency key, so a call run again after a crash finds the message it
//! delivered the first time, and an `ask` waits for that message's turn: the answer arrives
//! once. Both tools need a grant naming the receiver (the policy resource is its handle), and
//! the receiver is looked up in the caller's tenant only: another tenant's agents cannot be
//! named. Chains are bounded: a message set off by a message is one deeper
//! (`sessions.messaging.max_depth`), and an ask along a pair of agents already waiting on an
//! ask upstream, which would wait on itself, is refused.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clade_core::{ExecutionId, ExecutionKind, ExecutionStatus, MessageKind, Origin, TurnStatus};
use clade_store::{Delivered, ExecutionOwner, NewExecution, NewMessage, Source};
use clade_tools::{CallContext, EffectClass, Error, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, WeakEngine};
use crate::execution::Durable;

/// The longest message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Where the messaging tools find the engine, which starts after its tools are built: empty
/// until [`Postbox::attach`], and then without keeping the engine alive.
#[derive(Clone, Default)]
pub struct Postbox(Arc<OnceLock<WeakEngine>>);

impl Postbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets the tools deliver through `engine` (the first engine attached stays).
    pub fn attach(&self, engine: &Engine) {
        let _ = self.0.set(engine.downgrade());
    }

    pub(crate) fn engine(&self) -> Result<Engine, Error> {
        self.0.get().and_then(WeakEngine::upgrade).ok_or_else(|| {
            Error::failed(
                "agents message each other only through a serving gateway, and none runs here",
            )
        })
    }
}

/// Registers `agent.send`, `agent.ask`, `agent.publish`, `agent.subscribe` and `agent.spawn`
/// (which makes agents through `agents`), delivering through `postbox`.
pub fn register(registry: &mut Registry, postbox: Postbox, agents: clade_store::Agents) {
    registry.register(Arc::new(AgentSpawn { postbox: postbox.clone(), agents }));
    registry.register(Arc::new(AgentSend(postbox.clone())));
    registry.register(Arc::new(AgentAsk(postbox.clone())));
    registry.register(Arc::new(AgentPublish(postbox.clone())));
    registry.register(Arc::new(AgentSubscribe(postbox)));
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishArgs {
    /// The topic: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
    pub topic: String,
    /// What you publish.
    pub message: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeArgs {
    /// The topic: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
    pub topic: String,
    /// False to unsubscribe; true (the default) to subscribe.
    #[serde(default = "yes")]
    pub subscribed: bool,
}

fn yes() -> bool {
    true
}

pub struct AgentPublish(Postbox);

impl TypedTool for AgentPublish {
    type Args = PublishArgs;
    const NAME: &'static str = "agent.publish";
    const DESCRIPTION: &'static str = "Publish a message on a topic: every other agent of your team subscribed to it receives it, in its conversation for the topic; you do not wait. Needs a grant naming the topic.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const NEEDS_GRANT: bool = true;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("topic");
    fn resource(&self, args: &PublishArgs) -> Result<String, Error> {
        Ok(args.topic.clone())
    }
    fn run<'a>(&'a self, args: PublishArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let caller = ctx.caller()?;
            clade_store::messages::check_topic(&args.topic).map_err(Error::relied)?;
            let subscribers = engine
                .store()
                .messages(caller.tenant)
                .subscribers(&args.topic)
                .await
                .map_err(Error::relied)?;
            let mut delivered = Vec::new();
            let mut refused = Vec::new();
            for (agent, handle) in subscribers.into_iter().filter(|(a, _)| *a != caller.agent) {
                let outgoing = Outgoing {
                    to: &handle,
                    text: args.message.clone(),
                    kind: MessageKind::Publish,
                    topic: Some(&args.topic),
                    key: format!("agent:{}:{agent}", ctx.idempotency_key),
                };
                match deliver(&engine, ctx, outgoing).await {
                    Ok(_) => delivered.push(handle),
                    Err(why) => refused.push(format!("{handle}: {why}")),
                }
            }
            Ok(serde_json::json!({
                "topic": args.topic,
                "delivered_to": delivered,
                "refused": refused,
            })
            .to_string())
        })
    }
}

pub struct AgentSubscribe(Postbox);

impl TypedTool for AgentSubscribe {
    type Args = SubscribeArgs;
    const NAME: &'static str = "agent.subscribe";
    const DESCRIPTION: &'static str = "Subscribe to a topic (or unsubscribe with subscribed=false): what other agents of your team publish on it then reaches you. Needs a grant naming the topic.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const NEEDS_GRANT: bool = true;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("topic");
    fn resource(&self, args: &SubscribeArgs) -> Result<String, Error> {
        Ok(args.topic.clone())
    }
    fn run<'a>(&'a self, args: SubscribeArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let caller = ctx.caller()?;
            let store = engine.store();
            if args.subscribed {
                store
                    .messages(caller.tenant)
                    .subscribe(caller.agent, &args.topic)
                    .await
                    .map_err(Error::relied)?;
            } else {
                store
                    .messages(caller.tenant)
                    .unsubscribe(caller.agent, &args.topic)
                    .await
                    .map_err(Error::relied)?;
            }
            let topics = store
                .messages(caller.tenant)
                .subscriptions(caller.agent)
                .await
                .map_err(Error::relied)?;
            let verb = if args.subscribed { "subscribed to" } else { "unsubscribed from" };
            Ok(format!("{verb} {:?}; your topics now: {}", args.topic, topics.join(", ")))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    /// The receiving agent's handle, in your tenant.
    pub to: String,
    /// What you tell it.
    pub message: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskArgs {
    /// The agent you ask: its handle, in your tenant.
    pub to: String,
    /// Your question or request.
    pub message: String,
    /// How long to wait for the answer, in seconds (at most what the operator allows).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

pub struct AgentSend(Postbox);

impl TypedTool for AgentSend {
    type Args = SendArgs;
    const NAME: &'static str = "agent.send";
    const DESCRIPTION: &'static str = "Send a message to another agent of your team. It arrives in that agent's conversation with you and it answers in its own time; you do not wait. Needs a grant naming the agent.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const NEEDS_GRANT: bool = true;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("to");
    fn resource(&self, args: &SendArgs) -> Result<String, Error> {
        Ok(args.to.clone())
    }
    fn run<'a>(&'a self, args: SendArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let outgoing = Outgoing::to(&args.to, args.message, MessageKind::Send, ctx);
            let delivered = deliver(&engine, ctx, outgoing).await?;
            let message = &delivered.message;
            Ok(serde_json::json!({
                "message": message.id.to_string(),
                "to": message.to_handle,
                "session": message.to_session.to_string(),
                "delivered": true,
            })
            .to_string())
        })
    }
}

pub struct AgentAsk(Postbox);

impl TypedTool for AgentAsk {
    type Args = AskArgs;
    const NAME: &'static str = "agent.ask";
    const DESCRIPTION: &'static str = "Ask another agent of your team and wait for its answer, which this returns. Needs a grant naming the agent.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const NEEDS_GRANT: bool = true;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("to");
    fn resource(&self, args: &AskArgs) -> Result<String, Error> {
        Ok(args.to.clone())
    }
    fn run<'a>(&'a self, args: AskArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            ask(&engine, ctx, &args.to, args.message, args.timeout_secs).await
        })
    }
}

/// Asks `to` and waits for its answer (at most `timeout` seconds, within the operator's
/// limit): what `agent.ask` and `agent.spawn` return.
async fn ask(
    engine: &Engine,
    ctx: &CallContext,
    to: &str,
    text: String,
    timeout: Option<u64>,
) -> ToolResult {
    let most = engine.settings().sessions.messaging.ask_timeout_secs;
    let wait = timeout.unwrap_or(most).clamp(1, most);
    let outgoing = Outgoing::to(to, text, MessageKind::Ask, ctx);
    let delivered = deliver(engine, ctx, outgoing).await?;
    let message = &delivered.message;
    let to = &message.to_handle;
    let ended = engine
        .wait(message.tenant, message.event, message.to_session, Duration::from_secs(wait))
        .await
        .map_err(Error::relied)?;
    match ended {
        Some(turn) if turn.status == TurnStatus::Completed => Ok(turn.reply.unwrap_or_default()),
        Some(turn) if turn.status == TurnStatus::Yielded => Err(Error::Failed(format!(
            "{to} stopped before answering: its turn used its most model calls and waits to be resumed (message {})",
            message.id
        ))),
        Some(turn) => Err(Error::Failed(format!(
            "{to} could not answer: {} (message {})",
            turn.error.as_deref().unwrap_or("its turn failed"),
            message.id
        ))),
        None => Err(Error::Failed(format!(
            "{to} did not answer within {wait} s; its turn goes on, and its answer stays in its conversation with you (message {})",
            message.id
        ))),
    }
}

/// A tool a child may be given: a tool name pattern and a resource pattern, within what its
/// parent holds.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildTool {
    pub tool: String,
    /// `*` (any) when absent.
    #[serde(default)]
    pub resource: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnArgs {
    /// The child's name: its handle is yours, a dash, and this (a-z, 0-9, '-').
    pub name: String,
    /// What the child is to do; its answer is returned.
    pub task: String,
    /// Its persona template: default, assistant, researcher, coder, reviewer or operator.
    #[serde(default)]
    pub template: Option<String>,
    /// Tools it may use that need a grant, each within a grant you hold.
    #[serde(default)]
    pub tools: Vec<ChildTool>,
    /// Delete the child once it answered (its sessions, memory and workspace with it); what it
    /// spent stays counted against your budget. Otherwise it stays, and the same name asks it
    /// again.
    #[serde(default)]
    pub ephemeral: bool,
}

/// `agent.spawn`: makes a child agent, gives it grants delegated from the caller's own (so it
/// never holds more than its parent), and asks it the task.
///
/// Each call is a durable execution of kind `subagent` ([`Durable`]), owned by the calling
/// session, under an id derived from the call's idempotency key: making (or finding) the child,
/// its answer and an ephemeral child's deletion are recorded as steps. A call run again after a
/// crash replays them: an answered ephemeral child is not made and asked a second time, and a
/// run that ended answers as it ended.
pub struct AgentSpawn {
    postbox: Postbox,
    agents: clade_store::Agents,
}

/// The child a run asks, as its first step records it.
#[derive(Serialize, Deserialize)]
struct Child {
    handle: String,
}

/// What the child answered, or why it did not: recorded, so a replay tells the model the same.
#[derive(Serialize, Deserialize)]
struct Asked {
    answer: Option<String>,
    error: Option<String>,
}

impl TypedTool for AgentSpawn {
    type Args = SpawnArgs;
    const NAME: &'static str = "agent.spawn";
    const DESCRIPTION: &'static str = "Make a child agent for a task and ask it: it gets only the tools you name, each within a grant you hold, and its answer is returned. Calling again with the same name asks the child you made. Needs a grant naming the child.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const NEEDS_GRANT: bool = true;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("name");
    fn resource(&self, args: &SpawnArgs) -> Result<String, Error> {
        Ok(args.name.clone())
    }
    fn run<'a>(&'a self, args: SpawnArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.postbox.engine()?;
            let caller = ctx.caller()?;
            let store = engine.store();
            let parent =
                store.agents(caller.tenant).by_id(caller.agent).await.map_err(Error::relied)?;
            let handle = clade_core::Handle::parse(&format!("{}-{}", parent.handle, args.name))
                .map_err(|e| format!("name: {e}"))?;
            let new = NewExecution {
                id: run_id(caller.tenant, &ctx.idempotency_key),
                tenant: caller.tenant,
                agent: caller.agent,
                kind: ExecutionKind::SubAgent,
                owner: caller
                    .session
                    .map_or(ExecutionOwner::Agent(caller.agent), ExecutionOwner::Session),
                status: ExecutionStatus::Running,
                input: serde_json::json!({
                    "child": handle.as_str(),
                    "task": &args.task,
                    "ephemeral": args.ephemeral,
                })
                .to_string(),
            };
            let mut run =
                match Durable::start_or_ended(store.clone(), new).await.map_err(Error::relied)? {
                    Ok(run) => run,
                    Err(ended) => return ended_as(ended),
                };
            let ran = self.spawn_steps(&engine, &mut run, &parent, handle, args, ctx).await;
            let ended = match &ran {
                Ok(output) => run.complete(output).await.map(drop),
                Err(failed) => run.fail(&failed.to_string()).await.map(drop),
            };
            if let Err(err) = ended {
                tracing::warn!(error = %err, "a sub-agent run's end could not be recorded");
            }
            ran.map(|output| output.to_string())
        })
    }
}

/// A sub-agent run's id: the same for every attempt of one tool call, and another tenant's
/// call can never name it.
fn run_id(tenant: clade_core::TenantId, call_key: &str) -> ExecutionId {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"subagent")
        .chain_update(tenant.as_bytes())
        .chain_update(call_key.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    ExecutionId::from_bytes(id)
}

/// What a call run again answers for a run that ended already.
fn ended_as(row: clade_store::ExecutionRow) -> ToolResult {
    match row.status {
        ExecutionStatus::Completed => Ok(row
            .output
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .map(|output| output.to_string())
            .unwrap_or_default()),
        status => Err(Error::Failed(
            row.error.unwrap_or_else(|| format!("this child's run ended {status}")),
        )),
    }
}

impl AgentSpawn {
    /// The run's steps: the child, its answer, an ephemeral child's deletion. A step's own
    /// failure is returned, not recorded (the run ends failed with it).
    async fn spawn_steps(
        &self,
        engine: &Engine,
        run: &mut Durable,
        parent: &clade_core::Agent,
        handle: clade_core::Handle,
        args: SpawnArgs,
        ctx: &CallContext,
    ) -> Result<serde_json::Value, Error> {
        let store = engine.store();
        let tenant = parent.tenant_id;
        let child: Child = run
            .step("child", |_| async {
                let child = self.child_named(engine, parent, handle, &args).await?;
                Ok::<_, Error>(Child { handle: child.handle.as_str().to_owned() })
            })
            .await
            .map_err(Error::relied)??;
        let asked: Asked = run
            .step("ask", |_| async {
                match ask(engine, ctx, &child.handle, args.task.clone(), None).await {
                    Ok(answer) => Ok(Asked { answer: Some(answer), error: None }),
                    // What the model is told stays as it was; a failure of the gateway's own is
                    // tried again by a resumed run.
                    Err(Error::Failed(why)) => Ok(Asked { answer: None, error: Some(why) }),
                    Err(other) => Err(other),
                }
            })
            .await
            .map_err(Error::relied)??;
        // An ephemeral child goes whether it answered or not: its spending stays in the budget
        // counters of its parent (and its own, kept by id). One that made agents of its own
        // stays, so theirs keeps counting against this agent's budget.
        let deleted: bool = match args.ephemeral {
            true => run
                .step("delete", |_| async {
                    let child = match store.agents(tenant).get(&child.handle).await {
                        Ok(child) => child,
                        // Deleted by the attempt that did not live to record it.
                        Err(clade_store::Error::AgentNotFound(_)) => return Ok(true),
                        Err(other) => return Err(Error::relied(other)),
                    };
                    let children = store
                        .lineage(tenant)
                        .children_count(child.id)
                        .await
                        .map_err(Error::relied)?;
                    if children > 0 {
                        return Ok(false);
                    }
                    self.agents.delete(tenant, child.handle.as_str()).await.map_err(|e| {
                        Error::Failed(format!("the child could not be deleted: {e}"))
                    })?;
                    Ok(true)
                })
                .await
                .map_err(Error::relied)??,
            false => false,
        };
        match asked {
            Asked { answer: Some(answer), .. } => Ok(serde_json::json!({
                "child": child.handle,
                "answer": answer,
                "deleted": deleted,
            })),
            Asked { error, .. } => {
                Err(Error::Failed(error.unwrap_or_else(|| "the child did not answer".to_owned())))
            }
        }
    }

    /// The caller's child under `handle`: the one it made before (a new task for the same
    /// child), or a new one. An agent of that name that is not the caller's child is refused.
    async fn child_named(
        &self,
        engine: &Engine,
        parent: &clade_core::Agent,
        handle: clade_core::Handle,
        args: &SpawnArgs,
    ) -> Result<clade_core::Agent, Error> {
        let store = engine.store();
        let tenant = parent.tenant_id;
        match store.agents(tenant).get(handle.as_str()).await {
            Ok(existing) => {
                let made_by =
                    store.lineage(tenant).parent_of(existing.id).await.map_err(Error::relied)?;
                if made_by != Some(parent.id) {
                    return Err(Error::Failed(format!(
                        "an agent {handle} exists already and is not your child: choose another name"
                    )));
                }
                Ok(existing)
            }
            Err(clade_store::Error::AgentNotFound(_)) => {
                self.make_child(engine, parent, handle, args).await
            }
            Err(other) => Err(Error::relied(other)),
        }
    }

    /// Checks the limits and the grants asked for, then makes the child with them.
    async fn make_child(
        &self,
        engine: &Engine,
        parent: &clade_core::Agent,
        handle: clade_core::Handle,
        args: &SpawnArgs,
    ) -> Result<clade_core::Agent, Error> {
        let store = engine.store();
        let depth = store
            .lineage(parent.tenant_id)
            .next_child_depth(parent.id)
            .await
            .map_err(Error::relied)?;
        // Every tool asked for lies within a live grant of the parent's, which it is delegated
        // from; one that does not refuses the whole child, before anything is made.
        let held =
            store.access(parent.tenant_id).grants(Some(parent.id)).await.map_err(Error::relied)?;
        let now = store.now();
        let mut delegated = Vec::new();
        for wanted in &args.tools {
            let rule = clade_config::PolicyRule {
                effect: clade_config::PolicyEffect::Allow,
                tool: wanted.tool.clone(),
                resource: wanted.resource.clone().unwrap_or_else(|| "*".to_owned()),
                constraints: clade_config::Constraints::default(),
            };
            let from = held.iter().filter(|g| g.is_live(now)).find(|g| {
                crate::tools::rule_of(g)
                    .is_some_and(|p| clade_tools::policy::narrowing_error(&p, &rule).is_none())
            });
            match from {
                Some(grant) => delegated.push((rule, grant.id)),
                None => {
                    return Err(Error::Failed(format!(
                        "you hold no grant that covers {} on {:?}: a child gets only what you hold",
                        rule.tool, rule.resource
                    )));
                }
            }
        }
        let template = match &args.template {
            Some(name) => {
                clade_core::TemplateName::parse(name).map_err(|e| format!("template: {e}"))?
            }
            None => clade_core::TemplateName::builtin_default(),
        };
        let spec = clade_store::NewAgent {
            handle,
            display_name: None,
            config: clade_core::AgentConfig { template },
        };
        let child = self.agents.create(parent.tenant_id, spec).await.map_err(Error::relied)?;
        store
            .lineage(parent.tenant_id)
            .record_child(parent.id, child.id, depth)
            .await
            .map_err(Error::relied)?;
        let by = format!("agent {} (agent.spawn)", parent.handle);
        for (rule, from) in delegated {
            engine
                .tools()
                .add_grant(&child, rule, Some(from), None, &by)
                .await
                .map_err(Error::relied)?;
        }
        Ok(child)
    }
}

/// A message a tool call sends.
struct Outgoing<'a> {
    to: &'a str,
    text: String,
    kind: MessageKind,
    topic: Option<&'a str>,
    /// Its idempotency key: the call's, so a call run again finds what it delivered.
    key: String,
}

impl<'a> Outgoing<'a> {
    fn to(to: &'a str, text: String, kind: MessageKind, ctx: &CallContext) -> Self {
        Self { to, text, kind, topic: None, key: format!("agent:{}", ctx.idempotency_key) }
    }
}

/// Checks a message and delivers it, one deeper than the messages that started the calling
/// turn, with the asks they wait on.
async fn deliver(
    engine: &Engine,
    ctx: &CallContext,
    outgoing: Outgoing<'_>,
) -> Result<Delivered, Error> {
    let Outgoing { to, text, kind, topic, key } = outgoing;
    let caller = ctx.caller()?;
    clade_core::Handle::parse(to).map_err(|e| format!("to: {e}"))?;
    if text.trim().is_empty() {
        return Err(Error::failed("message: empty; say something"));
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Failed(format!(
            "message: {} bytes, over the {MAX_MESSAGE_BYTES} a message may hold; send less, or put it in a file",
            text.len()
        )));
    }
    let settings = engine.settings();
    let limits = settings.sessions.messaging;
    let store = engine.store();
    let parents = match caller.turn {
        Some(turn) => store.messages(caller.tenant).of_turn(turn).await.map_err(Error::relied)?,
        None => Vec::new(),
    };
    let depth = parents.iter().map(|m| m.depth).max().unwrap_or(0) + 1;
    if depth > limits.max_depth {
        return Err(Error::Failed(format!(
            "this message would be number {depth} in a chain of messages between agents, and a chain stops at {}: answer with what you have instead",
            limits.max_depth
        )));
    }
    let mut chain: Vec<String> = Vec::new();
    for parent in parents.iter().filter(|m| m.kind == MessageKind::Ask) {
        for pair in &parent.chain {
            if !chain.contains(pair) {
                chain.push(pair.clone());
            }
        }
    }
    let source = Source {
        platform: Origin::Agent,
        channel: caller.agent.to_string(),
        actor: kind.as_str().to_owned(),
    };
    let message = NewMessage {
        tenant: caller.tenant,
        kind,
        from: caller.agent,
        from_session: caller.session,
        from_turn: caller.turn,
        to: to.to_owned(),
        topic: topic.map(str::to_owned),
        payload_hash: crate::engine::payload_hash(to, &source, &text),
        text,
        idempotency_key: key,
        depth,
        chain,
        max_open_per_session: settings.sessions.max_queued,
    };
    engine.deliver(message).await.map_err(|e| match e {
        crate::engine::Error::Store(clade_store::Error::AgentNotFound(name)) => {
            Error::Failed(format!("there is no agent {name:?} in your tenant: check the handle"))
        }
        crate::engine::Error::Store(clade_store::Error::SessionBusy { pending }) => Error::Failed(format!(
            "{to} has {pending} messages waiting in its conversation with you: wait for it to catch up"
        )),
        other => Error::relied(other),
    })
}
