//! Operators' pauses (migration 25, `pauses`): a paused agent starts no new turn in any of its
//! sessions, a paused session none in itself, until the pause is lifted. Each pause and its
//! lifting is audited; a pause goes with its agent, its session or its tenant. What an agent
//! runs now is [`crate::Pauses::agent_status`].

use clade_core::{AgentId, AuditKind, SessionId, TenantId, Timestamp, TurnId};

use clade_protocol::{LifecycleEvent, PauseChanged};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::{Store, id_bytes, opt_id};
use crate::turns::OutboxEvent;

/// A pause in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRow {
    pub tenant: TenantId,
    pub agent: AgentId,
    /// `None`: every session of the agent.
    pub session: Option<SessionId>,
    pub reason: Option<String>,
    pub created_at: Timestamp,
}

impl PauseRow {
    /// Its lifecycle event's data.
    pub fn data(&self) -> PauseChanged {
        PauseChanged {
            agent_id: self.agent.to_string(),
            session: self.session.map(|s| s.to_string()),
            reason: self.reason.clone(),
        }
    }

    /// The id it is kept under: its session's, else its agent's.
    pub fn target(&self) -> [u8; 16] {
        match self.session {
            Some(session) => *session.as_bytes(),
            None => *self.agent.as_bytes(),
        }
    }
}

/// A session of an agent with work in flight: its open events and its running turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionActivity {
    pub session: SessionId,
    pub platform: String,
    pub channel: String,
    pub actor: String,
    /// Events received and not yet answered (the running turn's included).
    pub open_events: u64,
    /// The turn running now, when one is.
    pub turn: Option<TurnId>,
    /// When that turn started.
    pub turn_started_at: Option<Timestamp>,
    /// Steps its journal holds: model calls, tool calls, resumes.
    pub turn_steps: u64,
    pub paused: bool,
}

impl SessionActivity {
    /// `running` (a turn runs), `paused` (held by a pause of its own) or `waiting` (events
    /// wait for a turn, or for the agent's pause to be lifted).
    pub fn state(&self) -> &'static str {
        if self.turn.is_some() {
            clade_core::TurnStatus::Running.as_str()
        } else if self.paused {
            clade_core::ExecutionStatus::Paused.as_str()
        } else {
            "waiting"
        }
    }
}

const COLUMNS: &str = "tenant_id, agent_id, session_id, reason, created_at";

fn pause_row(row: &Row) -> Result<PauseRow> {
    Ok(PauseRow {
        tenant: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        session: opt_id(row, "session_id")?.map(SessionId::from_bytes),
        reason: row.try_get("reason")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn b(bytes: &[u8; 16]) -> Vec<u8> {
    bytes.to_vec()
}

impl Store {
    /// Every pause in force, of every tenant: what a starting engine keeps in memory.
    pub async fn all_pauses(&self) -> Result<Vec<PauseRow>> {
        let rows = self.rows(query(format!("SELECT {COLUMNS} FROM pauses"))).await?;
        rows.iter().map(pause_row).collect()
    }
}

/// Announces a pause's change, in its session when it pauses one.
async fn announce(work: &mut crate::Work<'_>, event: LifecycleEvent) -> Result<()> {
    let session = match &event {
        LifecycleEvent::ExecutionsPaused(data) | LifecycleEvent::ExecutionsResumed(data) => {
            data.session.as_deref().and_then(|s| SessionId::parse(s).ok())
        }
        _ => None,
    };
    work.announce(session, &[OutboxEvent::from(&event)]).await
}

/// Checks that `agent`, and `session` when given, are `tenant`'s and the session the agent's.
pub(crate) async fn owned(
    conn: &mut crate::db::Tx,
    tenant: TenantId,
    agent: AgentId,
    session: Option<SessionId>,
) -> Result<()> {
    let found = query("SELECT 1 AS one FROM agents WHERE id = $1 AND tenant_id = $2")
        .bind(b(agent.as_bytes()))
        .bind(b(tenant.as_bytes()))
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Err(Error::AgentNotFound(agent.to_string()));
    }
    if let Some(session) = session {
        let found = query(
            "SELECT 1 AS one FROM sessions WHERE id = $1 AND agent_id = $2 AND tenant_id = $3",
        )
        .bind(b(session.as_bytes()))
        .bind(b(agent.as_bytes()))
        .bind(b(tenant.as_bytes()))
        .fetch_optional(&mut *conn)
        .await?;
        if found.is_none() {
            return Err(Error::SessionNotFound(session.to_string()));
        }
    }
    Ok(())
}

/// One tenant's pauses of agents and sessions, and what its agents' sessions are doing.
#[derive(Clone, Copy)]
pub struct Pauses<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s pauses of agents and sessions.
    pub fn pauses(&self, tenant: TenantId) -> Pauses<'_> {
        Pauses { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's pauses of agents and sessions.
    pub fn pauses(&self) -> Pauses<'_> {
        self.store().pauses(self.tenant())
    }
}

impl Pauses<'_> {
    /// Pauses `tenant`'s agent, or one of its sessions; pausing what is paused already changes
    /// nothing. A session of another agent or tenant is refused as missing.
    pub async fn pause(
        self,
        agent: AgentId,
        session: Option<SessionId>,
        reason: Option<String>,
    ) -> Result<PauseRow> {
        let tenant = self.tenant;
        if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
            return Err(Error::InvalidInput(
                "a pause's reason holds at most 500 characters".into(),
            ));
        }
        let detail = serde_json::json!({
            "session": session.map(|s| s.to_string()),
            "reason": reason,
        });
        let audit =
            self.store.admin_record(tenant, Some(agent), AuditKind::ExecutionsPaused, detail);
        let now = self.store.now();
        let row = PauseRow { tenant, agent, session, reason, created_at: now };
        let (row, _) = self
            .store
            .transact(tenant, move |work| {
                let (row, audit) = (row.clone(), audit.clone());
                Box::pin(async move {
                    owned(work.conn(), tenant, agent, session).await?;
                    let existing = query(format!("SELECT {COLUMNS} FROM pauses WHERE target = $1"))
                        .bind(b(&row.target()))
                        .fetch_optional(work.conn())
                        .await?;
                    if let Some(existing) = existing {
                        return pause_row(&existing);
                    }
                    query(
                        "INSERT INTO pauses (target, tenant_id, agent_id, session_id, reason, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(b(&row.target()))
                    .bind(b(tenant.as_bytes()))
                    .bind(b(agent.as_bytes()))
                    .bind(session.map(|s| b(s.as_bytes())))
                    .bind(row.reason.clone())
                    .bind(now.as_millis())
                    .execute(work.conn())
                    .await?;
                    work.audit(&audit).await?;
                    announce(work, LifecycleEvent::ExecutionsPaused(row.data())).await?;
                    Ok(row)
                })
            })
            .await?;
        Ok(row)
    }

    /// Lifts the pause of `tenant`'s agent, or of one of its sessions; whether there was one.
    pub async fn unpause(self, agent: AgentId, session: Option<SessionId>) -> Result<bool> {
        let tenant = self.tenant;
        let detail = serde_json::json!({ "session": session.map(|s| s.to_string()) });
        let audit =
            self.store.admin_record(tenant, Some(agent), AuditKind::ExecutionsResumed, detail);
        let target = match session {
            Some(session) => *session.as_bytes(),
            None => *agent.as_bytes(),
        };
        let (lifted, _) = self
            .store
            .transact(tenant, move |work| {
                let audit = audit.clone();
                Box::pin(async move {
                    owned(work.conn(), tenant, agent, session).await?;
                    let deleted = query("DELETE FROM pauses WHERE target = $1 AND tenant_id = $2")
                        .bind(b(&target))
                        .bind(b(tenant.as_bytes()))
                        .execute(work.conn())
                        .await?;
                    if deleted > 0 {
                        work.audit(&audit).await?;
                        let data = PauseChanged {
                            agent_id: agent.to_string(),
                            session: session.map(|s| s.to_string()),
                            reason: None,
                        };
                        announce(work, LifecycleEvent::ExecutionsResumed(data)).await?;
                    }
                    Ok(deleted > 0)
                })
            })
            .await?;
        Ok(lifted)
    }

    /// The pauses of `tenant`'s agent: its own and its sessions'.
    pub async fn of_agent(self, agent: AgentId) -> Result<Vec<PauseRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM pauses WHERE agent_id = $1 AND tenant_id = $2 \
                     ORDER BY created_at"
                ))
                .bind(b(agent.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        rows.iter().map(pause_row).collect()
    }

    /// The sessions of `tenant`'s agent with work in flight (open events, a running turn) or a
    /// pause, up to `limit`, most recently active first.
    pub async fn agent_status(self, agent: AgentId, limit: u32) -> Result<Vec<SessionActivity>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT s.id, s.platform, s.channel, s.actor, \
                     (SELECT COUNT(*) FROM events e WHERE e.session_id = s.id \
                      AND e.status IN ('pending', 'running')) AS open, \
                     (SELECT x.id FROM executions x WHERE x.owner_id = s.id AND x.kind = 'turn' \
                      AND x.status = 'running' ORDER BY x.id DESC LIMIT 1) AS turn_id, \
                     (SELECT COUNT(*) FROM pauses p WHERE p.target = s.id) AS paused \
                     FROM sessions s WHERE s.tenant_id = $1 AND s.agent_id = $2 \
                     AND (EXISTS (SELECT 1 FROM events e WHERE e.session_id = s.id \
                          AND e.status IN ('pending', 'running')) \
                      OR EXISTS (SELECT 1 FROM pauses p WHERE p.target = s.id)) \
                     ORDER BY s.updated_at DESC LIMIT $3",
                )
                .bind(b(tenant.as_bytes()))
                .bind(b(agent.as_bytes()))
                .bind(i64::from(limit)),
            )
            .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            let turn = opt_id(row, "turn_id")?.map(TurnId::from_bytes);
            let (started, steps) = match turn {
                Some(turn) => {
                    let row = self
                        .store
                        .maybe_row(
                            query(
                                "SELECT x.created_at, (SELECT COUNT(*) FROM execution_steps st \
                                 WHERE st.execution_id = x.id) AS steps FROM executions x \
                                 WHERE x.id = $1",
                            )
                            .bind(b(turn.as_bytes())),
                        )
                        .await?;
                    match row {
                        Some(row) => (
                            Some(Timestamp::from_millis(row.try_get("created_at")?)),
                            row.try_get::<i64, _>("steps")?,
                        ),
                        None => (None, 0),
                    }
                }
                None => (None, 0),
            };
            sessions.push(SessionActivity {
                session: SessionId::from_bytes(id_bytes(row, "id")?),
                platform: row.try_get("platform")?,
                channel: row.try_get("channel")?,
                actor: row.try_get("actor")?,
                open_events: u64::try_from(row.try_get::<i64, _>("open")?).unwrap_or(0),
                turn,
                turn_started_at: started,
                turn_steps: u64::try_from(steps).unwrap_or(0),
                paused: row.try_get::<i64, _>("paused")? > 0,
            });
        }
        Ok(sessions)
    }
}
