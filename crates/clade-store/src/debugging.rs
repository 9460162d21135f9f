//! Step-through debugging (migration 35): breakpoints on an agent or one of its sessions, and
//! the stops where turns wait for a person. A stop is keyed by its turn and its place in the
//! turn, so a turn resumed after a restart finds the stop it paused at, and either waits for it
//! again or does what it was told there. Setting and removing a breakpoint, and every decision
//! on a stop, are audited; a stop's pause and its end are announced in its session.

use clade_core::{
    AgentId, AuditKind, BreakAt, BreakpointId, SessionId, StopAction, StopId, TenantId, Timestamp,
    TurnId,
};
use clade_protocol::{DebugStopChanged, LifecycleEvent};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::{Store, id_bytes, opt_id};
use crate::turns::{OutboxEvent, OutboxRow};

/// The most breakpoints one tenant holds.
pub const MAX_BREAKPOINTS: u64 = 100;

/// A breakpoint: where an agent's turns pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakpointRow {
    pub id: BreakpointId,
    pub tenant: TenantId,
    pub agent: AgentId,
    /// `None`: every session of the agent.
    pub session: Option<SessionId>,
    pub at: BreakAt,
    /// With [`BreakAt::Tool`]: the one tool; `None` for every tool.
    pub tool: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
}

impl BreakpointRow {
    /// Whether it pauses a turn of `session` at `at` (before `tool`, for a tool call).
    pub fn matches(&self, session: SessionId, at: BreakAt, tool: Option<&str>) -> bool {
        self.at == at
            && self.session.is_none_or(|s| s == session)
            && match (&self.tool, tool) {
                (Some(wanted), Some(tool)) => wanted == tool,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

/// A breakpoint to set.
#[derive(Debug, Clone)]
pub struct NewBreakpoint {
    pub agent: AgentId,
    pub session: Option<SessionId>,
    pub at: BreakAt,
    pub tool: Option<String>,
}

/// A turn paused at a breakpoint, and what it was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRow {
    pub id: StopId,
    pub tenant: TenantId,
    pub agent: AgentId,
    pub session: SessionId,
    pub turn: TurnId,
    /// Where in the turn (`model/0`, `tool/0/1`, `error/tool/0/1`).
    pub place: String,
    pub at: BreakAt,
    /// What the turn holds there, as JSON.
    pub detail: String,
    /// `None` while it waits.
    pub action: Option<StopAction>,
    /// An edit's arguments or a skip's result, as JSON.
    pub action_data: Option<String>,
    pub decided_by: Option<String>,
    pub created_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    /// Whether its turn still runs.
    pub turn_running: bool,
}

impl StopRow {
    /// Whether its turn waits for a person now.
    pub fn waiting(&self) -> bool {
        self.action.is_none() && self.turn_running
    }

    /// Its lifecycle event's data.
    pub fn data(&self) -> DebugStopChanged {
        DebugStopChanged {
            stop: self.id.to_string(),
            turn: self.turn.to_string(),
            agent_id: self.agent.to_string(),
            place: self.place.clone(),
            at: self.at.into(),
            action: self.action.map(Into::into),
        }
    }
}

/// A stop a turn makes.
#[derive(Debug, Clone)]
pub struct NewStop {
    pub agent: AgentId,
    pub session: SessionId,
    pub turn: TurnId,
    pub place: String,
    pub at: BreakAt,
    pub detail: String,
}

/// What a person tells a stop.
#[derive(Debug, Clone)]
pub struct StopDecision {
    pub action: StopAction,
    /// An edit's arguments or a skip's result, as JSON.
    pub data: Option<String>,
    pub by: String,
}

const BREAKPOINT_COLUMNS: &str = "id, tenant_id, agent_id, session_id, at, tool, created_by, \
                                  created_at";
const STOP_COLUMNS: &str = "id, tenant_id, agent_id, session_id, turn_id, place, at, detail, \
                            action, action_data, decided_by, created_at, decided_at";

/// A stop's columns, and whether its turn still runs (a turn cancelled, timed out or
/// deleted while it waited leaves its stop undecided).
fn stop_select() -> String {
    format!("SELECT {STOP_COLUMNS}, {} AS turn_running FROM debug_stops", turn_running())
}

/// Whether a stop's turn runs: its execution says so, or, for a turn paused before its first
/// model call (not on disk yet: it commits with that call's answer), its session still has
/// events to answer (a cancelled one's are failed).
fn turn_running() -> String {
    format!(
        "(EXISTS (SELECT 1 FROM executions x WHERE x.id = debug_stops.turn_id AND x.status = '{}') \
         OR (NOT EXISTS (SELECT 1 FROM executions x WHERE x.id = debug_stops.turn_id) \
         AND EXISTS (SELECT 1 FROM events e WHERE e.session_id = debug_stops.session_id \
         AND e.status IN ('{}', '{}'))))",
        clade_core::ExecutionStatus::Running.as_str(),
        clade_core::EventStatus::Pending.as_str(),
        clade_core::EventStatus::Running.as_str(),
    )
}

fn word<T: clade_core::Word>(row: &Row, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    T::parse(&text).ok_or_else(|| Error::BadRow(format!("{column} {text:?} is not known")))
}

fn breakpoint_row(row: &Row) -> Result<BreakpointRow> {
    Ok(BreakpointRow {
        id: BreakpointId::from_bytes(id_bytes(row, "id")?),
        tenant: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        session: opt_id(row, "session_id")?.map(SessionId::from_bytes),
        at: word(row, "at")?,
        tool: row.try_get("tool")?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn stop_row(row: &Row) -> Result<StopRow> {
    let action: Option<String> = row.try_get("action")?;
    Ok(StopRow {
        id: StopId::from_bytes(id_bytes(row, "id")?),
        tenant: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        session: SessionId::from_bytes(id_bytes(row, "session_id")?),
        turn: TurnId::from_bytes(id_bytes(row, "turn_id")?),
        place: row.try_get("place")?,
        at: word(row, "at")?,
        detail: row.try_get("detail")?,
        action: match action {
            Some(text) => Some(
                StopAction::parse(&text)
                    .ok_or_else(|| Error::BadRow(format!("action {text:?} is not known")))?,
            ),
            None => None,
        },
        action_data: row.try_get("action_data")?,
        decided_by: row.try_get("decided_by")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        decided_at: row.try_get::<Option<i64>, _>("decided_at")?.map(Timestamp::from_millis),
        turn_running: row.try_get::<bool, _>("turn_running")?,
    })
}

fn b(bytes: &[u8; 16]) -> Vec<u8> {
    bytes.to_vec()
}

/// One tenant's breakpoints and the stops of its turns: `Debugging::of(&store, tenant)`, or
/// `Debugging::from(&tenant_store)` at the API's edge.
#[derive(Clone, Copy)]
pub struct Debugging<'s> {
    store: &'s Store,
    tenant: TenantId,
}

impl<'s> From<&'s crate::TenantStore> for Debugging<'s> {
    fn from(scoped: &'s crate::TenantStore) -> Self {
        Self { store: scoped.store(), tenant: scoped.tenant() }
    }
}

impl<'s> Debugging<'s> {
    /// `tenant`'s breakpoints and stops in `store`.
    pub fn of(store: &'s Store, tenant: TenantId) -> Self {
        Self { store, tenant }
    }

    /// Every breakpoint of every tenant: what a starting engine keeps in memory.
    pub async fn every_breakpoint(store: &Store) -> Result<Vec<BreakpointRow>> {
        let rows = store
            .rows(query(format!("SELECT {BREAKPOINT_COLUMNS} FROM breakpoints ORDER BY id")))
            .await?;
        rows.iter().map(breakpoint_row).collect()
    }

    /// Sets a breakpoint on `tenant`'s agent, or one of its sessions. A session of another
    /// agent or tenant is refused as missing; past [`MAX_BREAKPOINTS`], refused.
    pub async fn set_breakpoint(self, new: NewBreakpoint) -> Result<BreakpointRow> {
        let tenant = self.tenant;
        if let Some(tool) = &new.tool {
            if new.at == BreakAt::Model {
                return Err(Error::InvalidInput(format!(
                    "a breakpoint names a tool only with `at: {}` or `at: {}`",
                    BreakAt::Tool.as_str(),
                    BreakAt::Error.as_str()
                )));
            }
            if tool.is_empty() || tool.len() > 128 || tool.chars().any(char::is_control) {
                return Err(Error::InvalidInput(
                    "a breakpoint's tool is a tool's name: 1 to 128 characters, none a control"
                        .into(),
                ));
            }
        }
        let now = self.store.now();
        let row = BreakpointRow {
            id: BreakpointId::generate(now),
            tenant,
            agent: new.agent,
            session: new.session,
            at: new.at,
            tool: new.tool,
            created_by: self.store.actor().to_owned(),
            created_at: now,
        };
        let detail = serde_json::json!({
            "breakpoint": row.id.to_string(),
            "session": row.session.map(|s| s.to_string()),
            "at": row.at.as_str(),
            "tool": row.tool,
        });
        let audit =
            self.store.admin_record(tenant, Some(row.agent), AuditKind::BreakpointSet, detail);
        let inserted = row.clone();
        self.store
            .transact(tenant, move |work| {
                let (row, audit) = (inserted.clone(), audit.clone());
                Box::pin(async move {
                    crate::pauses::owned(work.conn(), tenant, row.agent, row.session).await?;
                    let held = query("SELECT COUNT(*) AS n FROM breakpoints WHERE tenant_id = $1")
                        .bind(b(tenant.as_bytes()))
                        .fetch_one(work.conn())
                        .await?
                        .try_get::<i64, _>("n")?;
                    if u64::try_from(held).unwrap_or(0) >= MAX_BREAKPOINTS {
                        return Err(Error::QuotaExceeded(format!(
                            "a tenant holds at most {MAX_BREAKPOINTS} breakpoints: remove some first"
                        )));
                    }
                    query(format!(
                        "INSERT INTO breakpoints ({BREAKPOINT_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ))
                    .bind(b(row.id.as_bytes()))
                    .bind(b(tenant.as_bytes()))
                    .bind(b(row.agent.as_bytes()))
                    .bind(row.session.map(|s| b(s.as_bytes())))
                    .bind(row.at.as_str())
                    .bind(row.tool.clone())
                    .bind(row.created_by.clone())
                    .bind(row.created_at.as_millis())
                    .execute(work.conn())
                    .await?;
                    work.audit(&audit).await
                })
            })
            .await?;
        Ok(row)
    }

    /// The tenant's breakpoints (of one agent, when given), oldest first.
    pub async fn breakpoints(self, agent: Option<AgentId>) -> Result<Vec<BreakpointRow>> {
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {BREAKPOINT_COLUMNS} FROM breakpoints WHERE tenant_id = $1 \
                     AND ($2 IS NULL OR agent_id = $2) ORDER BY id"
                ))
                .bind(b(self.tenant.as_bytes()))
                .bind(agent.map(|a| b(a.as_bytes()))),
            )
            .await?;
        rows.iter().map(breakpoint_row).collect()
    }

    /// Removes one of the tenant's breakpoints; the turns it paused stay paused until told.
    pub async fn remove_breakpoint(self, id: BreakpointId) -> Result<BreakpointRow> {
        let tenant = self.tenant;
        let store = self.store.clone();
        let (row, _) = self
            .store
            .transact(tenant, move |work| {
                let store = store.clone();
                Box::pin(async move {
                    let found = query(format!(
                        "SELECT {BREAKPOINT_COLUMNS} FROM breakpoints WHERE id = $1 \
                         AND tenant_id = $2"
                    ))
                    .bind(b(id.as_bytes()))
                    .bind(b(tenant.as_bytes()))
                    .fetch_optional(work.conn())
                    .await?
                    .ok_or_else(|| Error::BreakpointNotFound(id.to_string()))?;
                    let row = breakpoint_row(&found)?;
                    query("DELETE FROM breakpoints WHERE id = $1")
                        .bind(b(id.as_bytes()))
                        .execute(work.conn())
                        .await?;
                    let detail = serde_json::json!({ "breakpoint": id.to_string() });
                    let audit = store.admin_record(
                        tenant,
                        Some(row.agent),
                        AuditKind::BreakpointRemoved,
                        detail,
                    );
                    work.audit(&audit).await?;
                    Ok(row)
                })
            })
            .await?;
        Ok(row)
    }

    /// Records that a turn paused at `new.place`, and announces it in its session; a turn
    /// that paused there before (a resumed turn) gets its stop back, as it was. The outbox
    /// rows are the announcement, to publish live.
    pub async fn open_stop(self, new: NewStop) -> Result<(StopRow, Vec<OutboxRow>)> {
        let tenant = self.tenant;
        let now = self.store.now();
        let (row, announced) = self
            .store
            .transact(tenant, move |work| {
                let new = new.clone();
                Box::pin(async move {
                    let found =
                        query(format!("{} WHERE turn_id = $1 AND place = $2", stop_select()))
                            .bind(b(new.turn.as_bytes()))
                            .bind(new.place.clone())
                            .fetch_optional(work.conn())
                            .await?;
                    if let Some(found) = found {
                        return stop_row(&found);
                    }
                    // A session runs one turn at a time: a stop of another turn of it that
                    // never reached the disk (paused before its first model call, then a
                    // restart started that turn anew) waits for nothing.
                    query(
                        "DELETE FROM debug_stops WHERE session_id = $1 AND turn_id <> $2 \
                         AND decided_at IS NULL AND NOT EXISTS \
                         (SELECT 1 FROM executions x WHERE x.id = debug_stops.turn_id)",
                    )
                    .bind(b(new.session.as_bytes()))
                    .bind(b(new.turn.as_bytes()))
                    .execute(work.conn())
                    .await?;
                    let row = StopRow {
                        id: StopId::generate(now),
                        tenant,
                        agent: new.agent,
                        session: new.session,
                        turn: new.turn,
                        place: new.place,
                        at: new.at,
                        detail: new.detail,
                        action: None,
                        action_data: None,
                        decided_by: None,
                        created_at: now,
                        decided_at: None,
                        turn_running: true,
                    };
                    query(format!(
                        "INSERT INTO debug_stops ({STOP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, \
                         $6, $7, $8, NULL, NULL, NULL, $9, NULL)"
                    ))
                    .bind(b(row.id.as_bytes()))
                    .bind(b(tenant.as_bytes()))
                    .bind(b(row.agent.as_bytes()))
                    .bind(b(row.session.as_bytes()))
                    .bind(b(row.turn.as_bytes()))
                    .bind(row.place.clone())
                    .bind(row.at.as_str())
                    .bind(row.detail.clone())
                    .bind(now.as_millis())
                    .execute(work.conn())
                    .await?;
                    let event = LifecycleEvent::DebugStopped(row.data());
                    work.announce(Some(row.session), &[OutboxEvent::from(&event)]).await?;
                    Ok(row)
                })
            })
            .await?;
        Ok((row, announced))
    }

    /// One of the tenant's stops.
    pub async fn stop(self, id: StopId) -> Result<StopRow> {
        let row = self
            .store
            .maybe_row(
                query(format!("{} WHERE id = $1 AND tenant_id = $2", stop_select()))
                    .bind(b(id.as_bytes()))
                    .bind(b(self.tenant.as_bytes())),
            )
            .await?
            .ok_or_else(|| Error::StopNotFound(id.to_string()))?;
        stop_row(&row)
    }

    /// The stops of one of the tenant's turns, in the order it made them.
    pub async fn stops_of_turn(self, turn: TurnId) -> Result<Vec<StopRow>> {
        let rows = self
            .store
            .rows(
                query(format!(
                    "{} WHERE turn_id = $1 AND tenant_id = $2 ORDER BY id",
                    stop_select()
                ))
                .bind(b(turn.as_bytes()))
                .bind(b(self.tenant.as_bytes())),
            )
            .await?;
        rows.iter().map(stop_row).collect()
    }

    /// The tenant's stops (of one agent, when given; waiting ones only, unless `all`), up to
    /// `limit`, newest first.
    pub async fn stops(
        self,
        agent: Option<AgentId>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<StopRow>> {
        let rows = self
            .store
            .rows(
                query(format!(
                    "{} WHERE tenant_id = $1 AND ($2 IS NULL OR agent_id = $2) \
                     AND ($3 = 1 OR (decided_at IS NULL AND {})) ORDER BY id DESC LIMIT $4",
                    stop_select(),
                    turn_running()
                ))
                .bind(b(self.tenant.as_bytes()))
                .bind(agent.map(|a| b(a.as_bytes())))
                .bind(i64::from(all))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(stop_row).collect()
    }

    /// Tells a waiting stop what to do; audited (an edit with the arguments before and
    /// after) and announced in its session. A stop already told is refused.
    pub async fn decide_stop(
        self,
        id: StopId,
        decision: StopDecision,
    ) -> Result<(StopRow, Vec<OutboxRow>)> {
        let tenant = self.tenant;
        let now = self.store.now();
        let store = self.store.clone();
        let (row, announced) = self
            .store
            .transact(tenant, move |work| {
                let (decision, store) = (decision.clone(), store.clone());
                Box::pin(async move {
                    let found =
                        query(format!("{} WHERE id = $1 AND tenant_id = $2", stop_select()))
                            .bind(b(id.as_bytes()))
                            .bind(b(tenant.as_bytes()))
                            .fetch_optional(work.conn())
                            .await?
                            .ok_or_else(|| Error::StopNotFound(id.to_string()))?;
                    let mut row = stop_row(&found)?;
                    if let Some(action) = row.action {
                        return Err(Error::StopDecided {
                            id: id.to_string(),
                            action: action.as_str().to_owned(),
                        });
                    }
                    if !row.turn_running {
                        return Err(Error::StopEnded(id.to_string()));
                    }
                    query(
                        "UPDATE debug_stops SET action = $2, action_data = $3, decided_by = $4, \
                         decided_at = $5 WHERE id = $1 AND decided_at IS NULL",
                    )
                    .bind(b(id.as_bytes()))
                    .bind(decision.action.as_str())
                    .bind(decision.data.clone())
                    .bind(decision.by.clone())
                    .bind(now.as_millis())
                    .execute(work.conn())
                    .await?;
                    row.action = Some(decision.action);
                    row.action_data = decision.data.clone();
                    row.decided_by = Some(decision.by.clone());
                    row.decided_at = Some(now);
                    let parse = |text: &str| {
                        serde_json::from_str::<serde_json::Value>(text)
                            .unwrap_or(serde_json::Value::Null)
                    };
                    let mut detail = serde_json::json!({
                        "stop": id.to_string(),
                        "turn": row.turn.to_string(),
                        "session": row.session.to_string(),
                        "place": row.place,
                        "action": decision.action.as_str(),
                        "decided_by": decision.by,
                    });
                    if let Some(data) = &decision.data {
                        detail["data"] = parse(data);
                    }
                    if decision.action == StopAction::Edit {
                        detail["arguments_before"] =
                            parse(&row.detail)["call"]["arguments"].clone();
                    }
                    let audit = store.admin_record(
                        tenant,
                        Some(row.agent),
                        AuditKind::DebugResumed,
                        detail,
                    );
                    work.audit(&audit).await?;
                    let event = LifecycleEvent::DebugResumed(row.data());
                    work.announce(Some(row.session), &[OutboxEvent::from(&event)]).await?;
                    Ok(row)
                })
            })
            .await?;
        Ok((row, announced))
    }
}
