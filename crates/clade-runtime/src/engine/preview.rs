//! What a turn would send to its model, composed by the turn's own code with nothing called
//! and nothing written: `clade agents prompt`, and the route behind it.
//!
//! The preview drives a real turn ([`super::turn::drive`]) with a journal that keeps nothing and
//! a model that records the request it is given and refuses it: so persona, session history,
//! working memory, recall and the tools offered are exactly what a turn would compose, and the
//! two cannot drift apart.

use std::sync::Mutex;

use clade_core::{Agent, EventId, EventStatus, ProcessKind, SessionId, Tenant};
use clade_model::{CallError, CallOutcome, ModelRequest, StreamEvent};
use clade_protocol::LifecycleEvent;
use clade_store::{EventRow, SessionRow, Source, TurnRow, UsageRecord};

use super::actor::TurnContext;
use super::context::Kept;
use super::executor::{Journal, Thinker, TurnError, Write};
use super::turn::{Opening, drive};
use super::{Engine, Error};
use crate::models::Routed;

/// Where a preview's new session says it comes from.
const PREVIEW_CHANNEL: &str = "preview";

/// What the next call to an agent's model would carry for one message.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The models a conversation's turn tries, in order.
    pub route: Vec<String>,
    /// The first model of the route, if it is configured: its provider's name and the model
    /// it asks for.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// The request as the turn composed it: messages and the tools offered.
    pub request: ModelRequest,
    /// What the first model's provider would send: its request body, or the prompt text a
    /// model in process reads. `None` where the provider cannot say (a scripted model).
    pub body: Option<String>,
    /// The request's tokens, estimated from its text (about four bytes a token).
    pub estimated_tokens: u64,
    /// The first model's context window, the part of it a prompt may fill, and the tokens of
    /// tool schemas a call may offer.
    pub context_window: u32,
    pub prompt_room: u32,
    pub tool_tokens: u32,
}

impl Preview {
    /// The composed messages as `(role, text)`, a call of tools written as the model wrote it.
    pub fn messages(&self) -> Vec<(&'static str, String)> {
        use clade_model::Message;
        self.request
            .messages
            .iter()
            .map(|message| match message {
                Message::System { text } => ("system", text.clone()),
                Message::User { text } => ("user", text.clone()),
                Message::Assistant { text, tool_calls } => {
                    ("assistant", clade_model::text_calls::calls_text(text, tool_calls))
                }
                Message::Tool { content, .. } => ("tool", content.clone()),
            })
            .collect()
    }

    /// The names of the tools the call offers.
    pub fn tools(&self) -> Vec<String> {
        self.request.tools.iter().map(|tool| tool.name.clone()).collect()
    }

    /// Whether the request fits the room a prompt and its tools have in the model's window
    /// (by the estimate): a provider refuses one that does not, and the turn fails.
    pub fn fits(&self) -> bool {
        self.estimated_tokens <= u64::from(self.prompt_room) + u64::from(self.tool_tokens)
    }

    /// The bytes the provider would be sent: its body's, else the messages' and tool schemas'.
    pub fn bytes(&self) -> u64 {
        match &self.body {
            Some(body) => body.len() as u64,
            None => serde_json::to_string(&self.request).map_or(0, |text| text.len() as u64),
        }
    }
}

impl Engine {
    /// What `agent`'s model would be sent for `text`: in `session` (its history, layers and
    /// working memory) when given, else as the first message of a new session. Nothing is
    /// called and nothing is written. `Err(Error::Unsent)` says why a turn would end before it
    /// called a model (a prompt that cannot fit, say).
    pub async fn preview(
        &self,
        tenant: &Tenant,
        agent: &Agent,
        text: &str,
        session: Option<SessionId>,
    ) -> Result<Preview, Error> {
        let inner = &*self.inner;
        let now = inner.store.now();
        let session = match session {
            Some(id) => {
                let row = inner.visible.sessions(tenant.id).get(id).await?;
                if row.agent_id != agent.id {
                    return Err(clade_store::Error::SessionNotFound(id.to_string()).into());
                }
                row
            }
            None => SessionRow {
                id: SessionId::generate(now),
                tenant_id: tenant.id,
                agent_id: agent.id,
                source: Source {
                    platform: "http".into(),
                    channel: PREVIEW_CHANNEL.to_owned(),
                    actor: "operator".to_owned(),
                },
                last_active_channel: PREVIEW_CHANNEL.to_owned(),
                queue_mode: None,
                created_at: now,
                updated_at: now,
            },
        };
        let ctx = TurnContext::of(inner, tenant.clone(), agent.clone(), session);
        let event = EventRow {
            id: EventId::generate(now),
            tenant_id: tenant.id,
            session_id: ctx.session.id,
            seq: 0,
            idempotency_key: String::new(),
            text: text.to_owned(),
            status: EventStatus::Pending,
            turn_id: None,
            created_at: now,
        };
        let mut journal = Discard::default();
        let model = Capture { request: Mutex::new(None), tenant, agent };
        let mut kept = Kept::default();
        let ran = Box::pin(drive(
            inner,
            &ctx,
            std::slice::from_ref(&event),
            &mut kept,
            &mut journal,
            (&model, &super::debugger::NoStops),
        ))
        .await;
        let captured = model.request.into_inner().unwrap_or_else(|e| e.into_inner());
        let Some(request) = captured else {
            let why = journal.error.or(ran.err().map(|e| e.to_string()));
            return Err(Error::Unsent(
                why.unwrap_or_else(|| "the turn ended before it called a model".to_owned()),
            ));
        };
        let models = inner.models();
        let routed = Some(Routed::of(tenant, agent));
        let route = models.chain(ctx.kind(), routed);
        let router = models.router_for(Some(agent));
        let first = route.first().and_then(|name| router.model(name));
        Ok(Preview {
            provider: first.map(|entry| entry.provider.name().to_owned()),
            model: first.map(|entry| entry.model.clone()),
            body: first.and_then(|entry| entry.provider.body(&entry.model, &request)),
            estimated_tokens: clade_model::router::input_tokens(&request),
            context_window: models.context_window(ctx.kind(), routed),
            prompt_room: models.prompt_room(ctx.kind(), routed),
            tool_tokens: models.tool_tokens(ctx.kind(), routed),
            route,
            request,
        })
    }
}

/// A journal that keeps nothing but how the turn ended.
#[derive(Default)]
struct Discard {
    error: Option<String>,
}

impl Journal for Discard {
    async fn write(&mut self, _turn: &TurnRow, write: Write) -> Result<(), TurnError> {
        if let Some(ending) = write.ending {
            self.error = ending.error;
        }
        Ok(())
    }

    fn live(&self, _turn: &TurnRow, _event: &LifecycleEvent) {}

    async fn steer(&mut self, _turn: &TurnRow) -> Vec<String> {
        Vec::new()
    }
}

impl Opening for Discard {
    fn opened(&mut self, _turn: &TurnRow, _started: LifecycleEvent) {}
}

/// A model that keeps the first request it is given and answers none, which ends the turn.
struct Capture<'a> {
    request: Mutex<Option<ModelRequest>>,
    tenant: &'a Tenant,
    agent: &'a Agent,
}

impl Thinker for Capture<'_> {
    async fn call(
        &self,
        _kind: ProcessKind,
        request: &ModelRequest,
        _on_event: &mut (dyn FnMut(&StreamEvent) + Send),
    ) -> Result<CallOutcome, CallError> {
        if let Ok(mut kept) = self.request.lock() {
            kept.get_or_insert_with(|| request.clone());
        }
        Err(CallError {
            error: clade_model::Error::NoModel("a preview calls no model".to_owned()),
            events: Vec::new(),
        })
    }

    fn usage(&self, turn: &TurnRow, outcome: &CallOutcome) -> UsageRecord {
        crate::models::usage_record(self.tenant, Some(self.agent), Some(turn.id), outcome)
    }
}
