//! Model usage and budgets: each call's tokens and cost recorded, summed per tenant, and
//! budget counters reserved and settled.

use clade_core::{AgentId, TenantId, Timestamp};

use super::*;
use crate::db::{Tx, query};
use crate::error::{Error, Result};

/// One model call's usage, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub tenant: TenantId,
    pub agent: Option<AgentId>,
    /// The turn the call belonged to, if any.
    pub turn: Option<clade_core::TurnId>,
    /// The configured model name.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_micros: u64,
}

impl UsageRecord {
    /// What the call adds to its turn's totals: input tokens (cached and cache writes
    /// included), output tokens and cost.
    pub(crate) fn turn_totals(&self) -> (i64, i64, i64) {
        (
            to_i64(self.input_tokens + self.cached_tokens + self.cache_write_tokens),
            to_i64(self.output_tokens),
            to_i64(self.cost_micros),
        )
    }
}

/// Usage summed per agent and model (and day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSummary {
    /// The day (UTC, `YYYY-MM-DD`) of a report by day or by hour.
    pub day: Option<String>,
    /// The hour of that day (UTC, 0 to 23) of a report by hour.
    pub hour: Option<u8>,
    /// The agent's handle; `None` for calls made for the tenant, not an agent.
    pub agent: Option<String>,
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_micros: u64,
}

/// One counter a reservation must fit under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCounter {
    pub scope: String,
    pub period: String,
    pub unit: String,
    pub amount: u64,
    pub limit: u64,
    /// What to tell the user when this counter refuses, e.g. "tenant acme: 5.00 USD per day".
    pub label: String,
}

/// Returning a reservation and booking the real spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSettlement {
    pub scope: String,
    pub period: String,
    pub unit: String,
    pub reserved: u64,
    pub spent: u64,
}

/// Inserts a usage row inside the caller's transaction.
/// Records a model call. With `add_to_turn`, its turn's totals grow by it (a turn inserted in
/// the same write carries them from the start instead: see [`UsageRecord::turn_totals`]).
pub(crate) async fn insert_usage(
    conn: &mut Tx,
    usage: &UsageRecord,
    now: Timestamp,
    add_to_turn: bool,
) -> Result<()> {
    query(
        "INSERT INTO model_usage (id, tenant_id, agent_id, turn_id, model, input_tokens, output_tokens, \
         cached_tokens, cache_write_tokens, cost_micros, created_at) \
         VALUES ($1, $2, $3, $11, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(clade_core::TokenId::generate(now).as_bytes().to_vec())
    .bind(usage.tenant.as_bytes().to_vec())
    .bind(usage.agent.map(|a| a.as_bytes().to_vec()))
    .bind(usage.model.clone())
    .bind(to_i64(usage.input_tokens))
    .bind(to_i64(usage.output_tokens))
    .bind(to_i64(usage.cached_tokens))
    .bind(to_i64(usage.cache_write_tokens))
    .bind(to_i64(usage.cost_micros))
    .bind(now.as_millis())
    .bind(usage.turn.map(|t| t.as_bytes().to_vec()))
    .execute(&mut *conn)
    .await?;
    // A turn carries its own totals, so listing a session's turns needs no index of usage by
    // turn (one page fewer in every commit that records a model call).
    if let Some(turn) = usage.turn.filter(|_| add_to_turn) {
        let (input, output, cost) = usage.turn_totals();
        query(
            "UPDATE executions SET model_calls = model_calls + 1, input_tokens = input_tokens + $2, \
             output_tokens = output_tokens + $3, cost_micros = cost_micros + $4 \
             WHERE id = $1 AND tenant_id = $5 AND kind = 'turn'",
        )
        .bind(turn.as_bytes().to_vec())
        .bind(input)
        .bind(output)
        .bind(cost)
        .bind(usage.tenant.as_bytes().to_vec())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Records one model call's usage.
    pub async fn record_usage(&self, usage: UsageRecord) -> Result<()> {
        let now = self.now();
        self.write(move |conn| {
            let usage = usage.clone();
            Box::pin(async move { insert_usage(conn, &usage, now, true).await })
        })
        .await
    }
}

/// The payload bytes of one tenant's conversations (see [`crate::Usage::stored_bytes`]).
const STORED_BYTES: &str = "SELECT CAST(\
    (SELECT COALESCE(SUM(OCTET_LENGTH(text)), 0) FROM events WHERE tenant_id = $1) \
  + (SELECT COALESCE(SUM(OCTET_LENGTH(data)), 0) FROM outbox WHERE tenant_id = $1) \
  + (SELECT COALESCE(SUM(COALESCE(OCTET_LENGTH(input), 0) + COALESCE(OCTET_LENGTH(output), 0) \
       + COALESCE(OCTET_LENGTH(error), 0)), 0) FROM executions WHERE tenant_id = $1) \
  + (SELECT COALESCE(SUM(OCTET_LENGTH(s.data)), 0) FROM execution_steps s \
       JOIN executions e ON e.id = s.execution_id WHERE e.tenant_id = $1) \
  AS BIGINT)";

/// A tenant's usage since a time, per agent and model: one range of `model_usage`'s primary key
/// (tenant, time), whatever other tenants used.
/// What every usage report sums, per group.
const USAGE_SUMS: &str = "COUNT(*) AS calls, CAST(SUM(u.input_tokens) AS BIGINT) AS input, \
     CAST(SUM(u.output_tokens) AS BIGINT) AS output, CAST(SUM(u.cached_tokens) AS BIGINT) AS cached, \
     CAST(SUM(u.cache_write_tokens) AS BIGINT) AS cache_write, CAST(SUM(u.cost_micros) AS BIGINT) AS cost";

/// How a usage report is split in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    /// One sum for the whole span.
    Total,
    /// A sum per UTC day.
    Day,
    /// A sum per UTC hour.
    Hour,
}

impl UsageBy {
    /// Its buckets' width in milliseconds (`None`: one bucket).
    fn millis(self) -> Option<i64> {
        match self {
            UsageBy::Total => None,
            UsageBy::Day => Some(86_400_000),
            UsageBy::Hour => Some(3_600_000),
        }
    }
}

/// A tenant's usage since a time ($2), of one agent ($3) or all, per agent and model, and per
/// day or hour (UTC, buckets since the epoch, integer division on both backends) when `by`
/// says so.
pub(crate) fn usage_summary_sql(by: UsageBy) -> String {
    // A literal in GROUP BY would name a column by position: no bucket is no group.
    let (day, by) = match by.millis() {
        Some(width) => (format!("u.created_at / {width}"), format!("u.created_at / {width}, ")),
        None => ("0".to_owned(), String::new()),
    };
    format!(
        "SELECT {day} AS day, a.handle AS handle, u.model AS model, {USAGE_SUMS} \
         FROM model_usage u LEFT JOIN agents a ON a.id = u.agent_id \
         WHERE u.tenant_id = $1 AND u.created_at >= $2 AND ($3 IS NULL OR u.agent_id = $3) \
         GROUP BY {by}a.handle, u.model ORDER BY {by}a.handle, u.model"
    )
}

/// A tenant's ($1) usage by one session's ($2) work: the executions it owns (its turns, and
/// the branches and workers it started), per agent and model.
fn session_usage_sql() -> String {
    format!(
        "SELECT 0 AS day, a.handle AS handle, u.model AS model, {USAGE_SUMS} \
         FROM model_usage u JOIN executions t ON t.id = u.turn_id \
         LEFT JOIN agents a ON a.id = u.agent_id \
         WHERE u.tenant_id = $1 AND t.tenant_id = $1 AND t.owner_id = $2 \
         GROUP BY a.handle, u.model ORDER BY a.handle, u.model"
    )
}

/// Budget counters, one per (scope, period, unit): reserved all-or-nothing, then settled.
#[derive(Clone, Copy)]
pub struct Budgets<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The budget counters.
    pub fn budgets(&self) -> Budgets<'_> {
        Budgets { store: self }
    }
}

impl Budgets<'_> {
    /// Reserves `amount` on every counter, all or none: a counter that would go over its limit
    /// refuses the whole reservation with [`Error::BudgetExceeded`] naming it.
    pub async fn reserve(self, counters: Vec<BudgetCounter>) -> Result<()> {
        self.store.write(move |conn| {
            let counters = counters.clone();
            Box::pin(async move {
                for c in &counters {
                    query(
                        "INSERT INTO budget_counters (scope, period, unit, spent, reserved) VALUES ($1, $2, $3, 0, 0) \
                         ON CONFLICT (scope, period, unit) DO NOTHING",
                    )
                    .bind(c.scope.clone())
                    .bind(c.period.clone())
                    .bind(c.unit.clone())
                    .execute(&mut *conn)
                    .await?;
                    let done = query(
                        "UPDATE budget_counters SET reserved = reserved + $4 \
                         WHERE scope = $1 AND period = $2 AND unit = $3 AND spent + reserved + $4 <= $5",
                    )
                    .bind(c.scope.clone())
                    .bind(c.period.clone())
                    .bind(c.unit.clone())
                    .bind(to_i64(c.amount))
                    .bind(to_i64(c.limit))
                    .execute(&mut *conn)
                    .await?;
                    if done == 0 {
                        // The savepoint of this write rolls back the counters already raised.
                        return Err(Error::BudgetExceeded(c.label.clone()));
                    }
                }
                Ok(())
            })
        })
        .await
    }

    /// Releases reservations and adds what was really spent.
    pub async fn settle(self, settlements: Vec<BudgetSettlement>) -> Result<()> {
        self.store.write(move |conn| {
            let settlements = settlements.clone();
            Box::pin(async move {
                for s in &settlements {
                    query(
                        "UPDATE budget_counters SET reserved = CASE WHEN reserved >= $4 THEN reserved - $4 ELSE 0 END, \
                         spent = spent + $5 WHERE scope = $1 AND period = $2 AND unit = $3",
                    )
                    .bind(s.scope.clone())
                    .bind(s.period.clone())
                    .bind(s.unit.clone())
                    .bind(to_i64(s.reserved))
                    .bind(to_i64(s.spent))
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// `(spent, reserved)` of one counter.
    pub async fn counter(self, scope: &str, period: &str, unit: &str) -> Result<(u64, u64)> {
        let row = self.store.maybe_row(query("SELECT spent, reserved FROM budget_counters WHERE scope = $1 AND period = $2 AND unit = $3")
            .bind(scope)
            .bind(period)
            .bind(unit)).await?;
        Ok(match row {
            Some(row) => (
                u64::try_from(row.try_get::<i64, _>("spent")?).unwrap_or(0),
                u64::try_from(row.try_get::<i64, _>("reserved")?).unwrap_or(0),
            ),
            None => (0, 0),
        })
    }
}

/// One tenant's model usage, summed, and the bytes its rows hold.
#[derive(Clone, Copy)]
pub struct Usage<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s model usage and stored bytes.
    pub fn usage(&self, tenant: TenantId) -> Usage<'_> {
        Usage { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's model usage and stored bytes.
    pub fn usage(&self) -> Usage<'_> {
        self.store().usage(self.tenant())
    }
}

impl Usage<'_> {
    /// Bytes of conversation the store holds for `tenant`: event texts, lifecycle events, and
    /// executions (turns among them) with their inputs, outputs, errors and steps (the
    /// payloads, not the indexes or row overhead). Reads every such row of the tenant: meant for a quota
    /// check every few seconds, not for every request.
    pub async fn stored_bytes(self) -> Result<u64> {
        let tenant = self.tenant;
        let rows = self.store.rows(query(STORED_BYTES).bind(tenant.as_bytes().to_vec())).await?;
        let bytes = match rows.first() {
            Some(row) => row.try_get::<i64, _>(0)?,
            None => 0,
        };
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Usage of a tenant since `since`, summed per agent and model, and per day or hour (UTC)
    /// as `by` says ([`usage_summary_sql`]).
    pub async fn summary(
        self,
        agent: Option<AgentId>,
        since: Timestamp,
        by: UsageBy,
    ) -> Result<Vec<UsageSummary>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(usage_summary_sql(by))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(since.as_millis())
                    .bind(agent.map(|a| a.as_bytes().to_vec())),
            )
            .await?;
        rows.iter().map(|row| summary_of(row, by)).collect()
    }

    /// What one of the tenant's sessions has used, per agent and model: the model calls of
    /// the executions it owns (its turns, branches and workers). Another tenant's session
    /// reads as one with no usage.
    pub async fn of_session(self, session: clade_core::SessionId) -> Result<Vec<UsageSummary>> {
        let rows = self
            .store
            .rows(
                query(session_usage_sql())
                    .bind(self.tenant.as_bytes().to_vec())
                    .bind(session.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(|row| summary_of(row, UsageBy::Total)).collect()
    }
}

/// A usage report's row; its `day` (and `hour`) when the report is split so.
fn summary_of(row: &crate::db::Row, by: UsageBy) -> Result<UsageSummary> {
    let sum = |col: &str| row.try_get::<i64, _>(col).map(|v| u64::try_from(v).unwrap_or(0));
    let (day, hour) = match by.millis() {
        Some(width) => {
            let start = row.try_get::<i64, _>("day")?.saturating_mul(width);
            let hour = (by == UsageBy::Hour)
                .then(|| u8::try_from(start.rem_euclid(86_400_000) / 3_600_000).unwrap_or(0));
            (Some(Timestamp::from_millis(start).date()), hour)
        }
        None => (None, None),
    };
    Ok(UsageSummary {
        day,
        hour,
        agent: row.try_get::<Option<String>, _>("handle")?,
        model: row.try_get("model")?,
        calls: sum("calls")?,
        input_tokens: sum("input")?,
        output_tokens: sum("output")?,
        cached_tokens: sum("cached")?,
        cache_write_tokens: sum("cache_write")?,
        cost_micros: sum("cost")?,
    })
}
