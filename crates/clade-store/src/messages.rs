//! Messages between agents of one tenant (migration 24, `agent_messages`). A message is
//! delivered as an event of the receiver, in its session with the sender (platform
//! `Origin::Agent`, channel and actor the sender's handle), and its row, the event and the
//! `agent.message.sent`/`received` lifecycle events commit in one transaction. The event's
//! idempotency key makes a repeated send (a retried tool call) find the first message instead
//! of delivering another.

use clade_core::{
    AgentId, EventId, MessageId, MessageKind, Origin, SessionId, TenantId, Timestamp, TurnId,
};
use clade_protocol::{AgentMessage, LifecycleEvent, Spelled};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::{Store, id_bytes, opt_id};
use crate::turns::{Accepted, NewEvent, OutboxEvent, OutboxRow, Source};

/// How the channel of a session of published messages starts: `topic:<topic>`.
pub const TOPIC_CHANNEL: &str = "topic:";

/// The most subscriptions an agent holds, and subscribers a topic of a tenant delivers to.
pub const MAX_SUBSCRIPTIONS: i64 = 100;

/// Checks a topic's name: 1 to 64 of `a-z`, `0-9`, `.`, `_` and `-`.
pub fn check_topic(topic: &str) -> Result<()> {
    let fits = (1..=64).contains(&topic.len())
        && topic.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if fits {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("topic {topic:?}: 1 to 64 of a-z, 0-9, '.', '_' and '-'")))
    }
}

/// A message to store and deliver.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub tenant: TenantId,
    pub kind: MessageKind,
    /// The sender, an agent of `tenant` (checked): its handle, read in the same transaction,
    /// names the receiver's session, so no caller can claim another sender.
    pub from: AgentId,
    pub from_session: Option<SessionId>,
    pub from_turn: Option<TurnId>,
    /// The receiver's handle, looked up in `tenant` only.
    pub to: String,
    /// The topic a published message went out on: it arrives in the receiver's session for
    /// the topic and the sender (channel `topic:<topic>`).
    pub topic: Option<String>,
    pub text: String,
    /// The same key again finds the first message.
    pub idempotency_key: String,
    /// See [`NewEvent::payload_hash`]; computed over the receiver, the source and the text.
    pub payload_hash: String,
    pub depth: u32,
    /// The asks waiting upstream, `<from>><to>` handle pairs (see the migration).
    pub chain: Vec<String>,
    /// See [`NewEvent::max_open_per_session`].
    pub max_open_per_session: u64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: MessageId,
    pub tenant: TenantId,
    pub kind: MessageKind,
    pub from_agent: AgentId,
    /// The sender's handle; empty once the sender is gone.
    pub from_handle: String,
    pub from_session: Option<SessionId>,
    pub from_turn: Option<TurnId>,
    pub to_agent: AgentId,
    pub to_handle: String,
    pub to_session: SessionId,
    pub event: EventId,
    /// The message's text; `None` once retention deleted its event.
    pub text: Option<String>,
    pub depth: u32,
    pub chain: Vec<String>,
    pub created_at: Timestamp,
}

/// What [`Store::send_message`] did.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub message: MessageRow,
    /// The receiver's event, as accepted: `duplicate` when the key was seen before.
    pub accepted: Accepted,
    /// The lifecycle events it announced (none for a duplicate), to publish.
    pub announced: Vec<OutboxRow>,
}

const COLUMNS: &str = "m.id, m.tenant_id, m.kind, m.from_agent, m.from_session, m.from_turn, \
     m.to_agent, m.to_session, m.event_id, m.depth, m.chain, m.created_at, \
     COALESCE(fa.handle, '') AS from_handle, COALESCE(ta.handle, '') AS to_handle, e.text AS text";

const JOINS: &str = "FROM agent_messages m LEFT JOIN agents fa ON fa.id = m.from_agent \
     LEFT JOIN agents ta ON ta.id = m.to_agent LEFT JOIN events e ON e.id = m.event_id";

fn message_row(row: &Row) -> Result<MessageRow> {
    let depth: i64 = row.try_get("depth")?;
    let chain: String = row.try_get("chain")?;
    Ok(MessageRow {
        id: MessageId::from_bytes(id_bytes(row, "id")?),
        tenant: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        kind: row.word("kind", MessageKind::parse)?,
        from_agent: AgentId::from_bytes(id_bytes(row, "from_agent")?),
        from_handle: row.try_get("from_handle")?,
        from_session: opt_id(row, "from_session")?.map(SessionId::from_bytes),
        from_turn: opt_id(row, "from_turn")?.map(TurnId::from_bytes),
        to_agent: AgentId::from_bytes(id_bytes(row, "to_agent")?),
        to_handle: row.try_get("to_handle")?,
        to_session: SessionId::from_bytes(id_bytes(row, "to_session")?),
        event: EventId::from_bytes(id_bytes(row, "event_id")?),
        text: row.try_get("text")?,
        depth: u32::try_from(depth).unwrap_or(u32::MAX),
        chain: chain.split_whitespace().map(str::to_owned).collect(),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

impl MessageRow {
    /// Its lifecycle event's data.
    pub fn data(&self) -> AgentMessage {
        AgentMessage {
            message: self.id.to_string(),
            kind: Spelled(self.kind),
            from: self.from_handle.clone(),
            to: self.to_handle.clone(),
            event: self.event.to_string(),
            session: self.to_session.to_string(),
            depth: self.depth,
        }
    }
}

/// The chain a message is stored with: an ask adds its own pair of agents to the asks waiting
/// upstream, and is refused when that pair waits already (its receiver's session with the
/// sender runs the turn that waits for this very message); nothing waits on a send or a
/// publication.
fn chain_of(message: &NewMessage, from_handle: &str) -> Result<Vec<String>> {
    if message.kind != MessageKind::Ask {
        return Ok(Vec::new());
    }
    let pair = format!("{from_handle}>{}", message.to);
    if message.chain.contains(&pair) {
        return Err(Error::InvalidInput(format!(
            "{} is waiting for an answer from you already, through the chain of questions {}: asking it again would wait forever; answer with what you have, or use agent.send",
            message.to,
            message.chain.join(" ")
        )));
    }
    let mut chain = message.chain.clone();
    chain.push(pair);
    Ok(chain)
}

fn b(bytes: &[u8; 16]) -> Vec<u8> {
    bytes.to_vec()
}

impl Store {
    /// Delivers a message: the receiver's event, the message's row and its lifecycle events
    /// (`agent.message.sent` in the sender's session when it has one, `agent.message.received`
    /// in the receiver's), in one transaction. A key seen before returns the first message and
    /// writes nothing. An unknown receiver, or a sender that is not the tenant's, is refused.
    pub async fn send_message(&self, message: NewMessage) -> Result<Delivered> {
        let tenant = message.tenant;
        let (delivered, announced) = self
            .transact(tenant, move |work| {
                let message = message.clone();
                Box::pin(async move {
                    let tenant_bytes = b(message.tenant.as_bytes());
                    let from = query("SELECT handle FROM agents WHERE id = $1 AND tenant_id = $2")
                        .bind(b(message.from.as_bytes()))
                        .bind(tenant_bytes.clone())
                        .fetch_optional(work.conn())
                        .await?
                        .ok_or_else(|| Error::AgentNotFound(message.from.to_string()))?;
                    let from_handle: String = from.try_get("handle")?;
                    let to = query("SELECT id FROM agents WHERE tenant_id = $1 AND handle = $2")
                        .bind(tenant_bytes.clone())
                        .bind(message.to.clone())
                        .fetch_optional(work.conn())
                        .await?
                        .ok_or_else(|| Error::AgentNotFound(message.to.clone()))?;
                    let to_agent = AgentId::from_bytes(id_bytes(&to, "id")?);
                    if to_agent == message.from {
                        return Err(Error::InvalidInput(
                            "an agent cannot message itself: think it through in this turn instead"
                                .into(),
                        ));
                    }
                    let chain = chain_of(&message, &from_handle)?;
                    let accepted = work
                        .accept(NewEvent {
                            tenant: message.tenant,
                            agent: message.to.clone(),
                            source: Source {
                                platform: Origin::Agent,
                                channel: match &message.topic {
                                    Some(topic) => format!("{TOPIC_CHANNEL}{topic}"),
                                    None => from_handle.clone(),
                                },
                                actor: from_handle.clone(),
                            },
                            text: message.text.clone(),
                            idempotency_key: Some(message.idempotency_key.clone()),
                            payload_hash: message.payload_hash.clone(),
                            max_open_per_session: message.max_open_per_session,
                        })
                        .await?;
                    if accepted.duplicate {
                        let row = query(format!("SELECT {COLUMNS} {JOINS} WHERE m.event_id = $1"))
                            .bind(b(accepted.event_id.as_bytes()))
                            .fetch_optional(work.conn())
                            .await?
                            .ok_or_else(|| {
                                Error::InvalidInput(format!(
                                    "the key {:?} was taken by an event that is no agent's message",
                                    message.idempotency_key
                                ))
                            })?;
                        return Ok(Delivered {
                            message: message_row(&row)?,
                            accepted,
                            announced: Vec::new(),
                        });
                    }
                    let now = work.now();
                    let row = MessageRow {
                        id: MessageId::generate(now),
                        tenant: message.tenant,
                        kind: message.kind,
                        from_agent: message.from,
                        from_handle,
                        from_session: message.from_session,
                        from_turn: message.from_turn,
                        to_agent,
                        to_handle: message.to.clone(),
                        to_session: accepted.session_id,
                        event: accepted.event_id,
                        text: Some(message.text.clone()),
                        depth: message.depth,
                        chain,
                        created_at: Timestamp::from_millis(now.as_millis()),
                    };
                    query(
                        "INSERT INTO agent_messages (id, tenant_id, kind, from_agent, \
                         from_session, from_turn, to_agent, to_session, event_id, depth, chain, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(b(row.id.as_bytes()))
                    .bind(tenant_bytes)
                    .bind(row.kind.as_str())
                    .bind(b(row.from_agent.as_bytes()))
                    .bind(row.from_session.map(|s| b(s.as_bytes())))
                    .bind(row.from_turn.map(|t| b(t.as_bytes())))
                    .bind(b(to_agent.as_bytes()))
                    .bind(b(row.to_session.as_bytes()))
                    .bind(b(row.event.as_bytes()))
                    .bind(i64::from(row.depth))
                    .bind(row.chain.join(" "))
                    .bind(now.as_millis())
                    .execute(work.conn())
                    .await?;
                    if let Some(session) = row.from_session {
                        let sent = LifecycleEvent::AgentMessageSent(row.data());
                        work.announce(Some(session), &[OutboxEvent::from(&sent)]).await?;
                    }
                    let received = LifecycleEvent::AgentMessageReceived(row.data());
                    work.announce(Some(row.to_session), &[OutboxEvent::from(&received)]).await?;
                    Ok(Delivered { message: row, accepted, announced: Vec::new() })
                })
            })
            .await?;
        Ok(Delivered { announced, ..delivered })
    }
}

/// One tenant's agent-to-agent mail: topic subscriptions and the messages sent.
#[derive(Clone, Copy)]
pub struct Messages<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s agent-to-agent messages and topic subscriptions.
    pub fn messages(&self, tenant: TenantId) -> Messages<'_> {
        Messages { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's agent-to-agent messages and topic subscriptions.
    pub fn messages(&self) -> Messages<'_> {
        self.store().messages(self.tenant())
    }
}

impl Messages<'_> {
    /// Subscribes `tenant`'s agent to `topic` (again: nothing changes); past
    /// [`MAX_SUBSCRIPTIONS`] it is refused.
    pub async fn subscribe(self, agent: AgentId, topic: &str) -> Result<()> {
        let tenant = self.tenant;
        check_topic(topic)?;
        let topic = topic.to_owned();
        self.store.transact(tenant, move |work| {
            let topic = topic.clone();
            Box::pin(async move {
                let held = query(
                    "SELECT COUNT(*) AS n FROM topic_subscriptions WHERE agent_id = $1 \
                     AND tenant_id = $2",
                )
                .bind(b(agent.as_bytes()))
                .bind(b(tenant.as_bytes()))
                .fetch_one(work.conn())
                .await?
                .try_get::<i64, _>("n")?;
                let owned = query("SELECT 1 AS one FROM agents WHERE id = $1 AND tenant_id = $2")
                    .bind(b(agent.as_bytes()))
                    .bind(b(tenant.as_bytes()))
                    .fetch_optional(work.conn())
                    .await?;
                if owned.is_none() {
                    return Err(Error::AgentNotFound(agent.to_string()));
                }
                let exists = query(
                    "SELECT 1 AS one FROM topic_subscriptions WHERE agent_id = $1 AND topic = $2",
                )
                .bind(b(agent.as_bytes()))
                .bind(topic.clone())
                .fetch_optional(work.conn())
                .await?;
                if exists.is_some() {
                    return Ok(());
                }
                if held >= MAX_SUBSCRIPTIONS {
                    return Err(Error::InvalidInput(format!(
                        "an agent subscribes to at most {MAX_SUBSCRIPTIONS} topics: unsubscribe from one first"
                    )));
                }
                query(
                    "INSERT INTO topic_subscriptions (agent_id, topic, tenant_id, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(b(agent.as_bytes()))
                .bind(topic)
                .bind(b(tenant.as_bytes()))
                .bind(work.now().as_millis())
                .execute(work.conn())
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(())
    }

    /// Ends `tenant`'s agent's subscription to `topic`; whether it had one.
    pub async fn unsubscribe(self, agent: AgentId, topic: &str) -> Result<bool> {
        let tenant = self.tenant;
        check_topic(topic)?;
        let topic = topic.to_owned();
        let (gone, _) = self
            .store
            .transact(tenant, move |work| {
                let topic = topic.clone();
                Box::pin(async move {
                    let n = query(
                        "DELETE FROM topic_subscriptions WHERE agent_id = $1 AND topic = $2 \
                         AND tenant_id = $3",
                    )
                    .bind(b(agent.as_bytes()))
                    .bind(topic)
                    .bind(b(tenant.as_bytes()))
                    .execute(work.conn())
                    .await?;
                    Ok(n > 0)
                })
            })
            .await?;
        Ok(gone)
    }

    /// The agents of `tenant` subscribed to `topic`, by handle (at most [`MAX_SUBSCRIPTIONS`]).
    pub async fn subscribers(self, topic: &str) -> Result<Vec<(AgentId, String)>> {
        let tenant = self.tenant;
        check_topic(topic)?;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT a.id, a.handle FROM topic_subscriptions t JOIN agents a \
                     ON a.id = t.agent_id WHERE t.tenant_id = $1 AND t.topic = $2 \
                     ORDER BY a.handle LIMIT $3",
                )
                .bind(b(tenant.as_bytes()))
                .bind(topic.to_owned())
                .bind(MAX_SUBSCRIPTIONS),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((AgentId::from_bytes(id_bytes(r, "id")?), r.try_get("handle")?)))
            .collect()
    }

    /// The topics `tenant`'s agent subscribes to, by name.
    pub async fn subscriptions(self, agent: AgentId) -> Result<Vec<String>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT topic FROM topic_subscriptions WHERE agent_id = $1 AND tenant_id = $2 \
                     ORDER BY topic",
                )
                .bind(b(agent.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        rows.iter().map(|r| r.try_get("topic")).collect()
    }

    /// The messages that brought the events `turn` answers (none when people sent them).
    pub async fn of_turn(self, turn: TurnId) -> Result<Vec<MessageRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} {JOINS} WHERE e.turn_id = $1 AND m.tenant_id = $2 \
                     ORDER BY m.id"
                ))
                .bind(b(turn.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        rows.iter().map(message_row).collect()
    }

    /// The message an event of `tenant` holds, if an agent sent it.
    pub async fn of_event(self, event: EventId) -> Result<Option<MessageRow>> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {COLUMNS} {JOINS} WHERE m.event_id = $1 AND m.tenant_id = $2"
                ))
                .bind(b(event.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        row.as_ref().map(message_row).transpose()
    }

    /// Up to `limit` messages `agent` of `tenant` sent or received, newest first, those before
    /// `before` when given.
    pub async fn of_agent(
        self,
        agent: AgentId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageRow>> {
        let tenant = self.tenant;
        // The newest possible id: a page without `before` starts at the top.
        let before = before.map_or_else(|| vec![0xff; 16], |id| b(id.as_bytes()));
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} {JOINS} WHERE m.tenant_id = $1 \
                     AND (m.from_agent = $2 OR m.to_agent = $2) AND m.id < $3 \
                     ORDER BY m.id DESC LIMIT $4"
                ))
                .bind(b(tenant.as_bytes()))
                .bind(b(agent.as_bytes()))
                .bind(before)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(message_row).collect()
    }
}
