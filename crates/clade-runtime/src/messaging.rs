//! Agents messaging the other agents of their tenant: `agent.send` delivers and goes on,
//! `agent.ask` delivers and waits for the receiver's turn, whose reply is the answer.
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

use clade_core::{MessageKind, TurnStatus};
use clade_store::{AGENT_PLATFORM, Delivered, NewMessage, Source};
use clade_tools::{CallContext, EffectClass, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::engine::{Engine, WeakEngine};

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

    fn engine(&self) -> Result<Engine, String> {
        self.0.get().and_then(WeakEngine::upgrade).ok_or_else(|| {
            "agents message each other only through a serving gateway, and none runs here"
                .to_owned()
        })
    }
}

/// Registers `agent.send` and `agent.ask`, delivering through `postbox`.
pub fn register(registry: &mut Registry, postbox: Postbox) {
    registry.register(Arc::new(AgentSend(postbox.clone())));
    registry.register(Arc::new(AgentAsk(postbox)));
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
    fn resource(&self, args: &SendArgs) -> Result<String, String> {
        Ok(args.to.clone())
    }
    fn run<'a>(&'a self, args: SendArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let delivered =
                deliver(&engine, ctx, &args.to, args.message, MessageKind::Send).await?;
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
    fn resource(&self, args: &AskArgs) -> Result<String, String> {
        Ok(args.to.clone())
    }
    fn run<'a>(&'a self, args: AskArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let most = engine.settings().sessions.messaging.ask_timeout_secs;
            let wait = args.timeout_secs.unwrap_or(most).clamp(1, most);
            let delivered = deliver(&engine, ctx, &args.to, args.message, MessageKind::Ask).await?;
            let message = &delivered.message;
            let to = &message.to_handle;
            let ended = engine
                .wait(message.tenant, message.event, message.to_session, Duration::from_secs(wait))
                .await
                .map_err(|e| e.to_string())?;
            match ended {
                Some(turn) if turn.status == TurnStatus::Completed => {
                    Ok(turn.reply.unwrap_or_default())
                }
                Some(turn) if turn.status == TurnStatus::Yielded => Err(format!(
                    "{to} stopped before answering: its turn used its most model calls and waits to be resumed (message {})",
                    message.id
                )),
                Some(turn) => Err(format!(
                    "{to} could not answer: {} (message {})",
                    turn.error.as_deref().unwrap_or("its turn failed"),
                    message.id
                )),
                None => Err(format!(
                    "{to} did not answer within {wait} s; its turn goes on, and its answer stays in its conversation with you (message {})",
                    message.id
                )),
            }
        })
    }
}

/// Checks a message and delivers it, one deeper than the messages that started the calling
/// turn, with the asks they wait on.
async fn deliver(
    engine: &Engine,
    ctx: &CallContext,
    to: &str,
    text: String,
    kind: MessageKind,
) -> Result<Delivered, String> {
    let caller = ctx.caller()?;
    clade_core::Handle::parse(to).map_err(|e| format!("to: {e}"))?;
    if text.trim().is_empty() {
        return Err("message: empty; say something".into());
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message: {} bytes, over the {MAX_MESSAGE_BYTES} a message may hold; send less, or put it in a file",
            text.len()
        ));
    }
    let settings = engine.settings();
    let limits = settings.sessions.messaging;
    let store = engine.store();
    let parents = match caller.turn {
        Some(turn) => {
            store.messages_of_turn(caller.tenant, turn).await.map_err(|e| e.to_string())?
        }
        None => Vec::new(),
    };
    let depth = parents.iter().map(|m| m.depth).max().unwrap_or(0) + 1;
    if depth > limits.max_depth {
        return Err(format!(
            "this message would be number {depth} in a chain of messages between agents, and a chain stops at {}: answer with what you have instead",
            limits.max_depth
        ));
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
        platform: AGENT_PLATFORM.to_owned(),
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
        payload_hash: crate::engine::payload_hash(to, &source, &text),
        text,
        idempotency_key: format!("agent:{}", ctx.idempotency_key),
        depth,
        chain,
        max_open_per_session: settings.sessions.max_queued,
    };
    engine.deliver(message).await.map_err(|e| match e {
        crate::engine::Error::Store(clade_store::Error::AgentNotFound(name)) => {
            format!("there is no agent {name:?} in your tenant: check the handle")
        }
        crate::engine::Error::Store(clade_store::Error::SessionBusy { pending }) => format!(
            "{to} has {pending} messages waiting in its conversation with you: wait for it to catch up"
        ),
        other => other.to_string(),
    })
}
