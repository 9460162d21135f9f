//! Budgets over the store: limits from `clade.yaml`, counters per UTC day and month, and
//! reservations that make concurrent calls unable to overspend.

use clade_config::Limits;
use clade_core::{AgentId, Clock, Tenant, Timestamp};
use clade_model::{Budget, Error, Reservation, Spend};
use clade_store::{BudgetCounter, BudgetSettlement, Store};
use futures::future::BoxFuture;
use std::sync::Arc;

/// One scope's limits (a tenant or an agent).
#[derive(Debug, Clone)]
struct Scope {
    key: String,
    label: String,
    limits: Limits,
}

/// The budgets that apply to one agent's (or one tenant's) model calls.
#[derive(Clone)]
pub struct StoreBudget {
    store: Store,
    clock: Arc<dyn Clock>,
    scopes: Vec<Scope>,
}

const TOKENS: &str = "tokens";
const MICROS: &str = "micro_usd";

impl StoreBudget {
    /// Budgets for calls made by `agent` (if any) of `tenant`; `None` when no limit applies.
    pub fn for_caller(
        store: Store,
        clock: Arc<dyn Clock>,
        budgets: &clade_config::BudgetsConfig,
        tenant: &Tenant,
        agent: Option<(AgentId, &str)>,
    ) -> Option<Self> {
        Self::for_descendant(store, clock, budgets, tenant, agent, &[])
    }

    /// [`StoreBudget::for_caller`] for an agent another agent made: its calls also count
    /// against the budget of each of its `ancestors` (its parent first), so a child spends out
    /// of its parent's budget and never past it.
    pub fn for_descendant(
        store: Store,
        clock: Arc<dyn Clock>,
        budgets: &clade_config::BudgetsConfig,
        tenant: &Tenant,
        agent: Option<(AgentId, &str)>,
        ancestors: &[(AgentId, String)],
    ) -> Option<Self> {
        let mut scopes = Vec::new();
        if let Some(limits) = budgets.tenants.get(tenant.name.as_str()) {
            scopes.push(Scope {
                key: format!("tenant:{}", tenant.id),
                label: format!("tenant {}", tenant.name),
                limits: *limits,
            });
        }
        if let Some((id, handle)) = agent {
            let qualified = format!("{}/{handle}", tenant.name);
            let limits = clade_config::for_agent(&budgets.agents, tenant.name.as_str(), handle);
            if let Some(limits) = limits {
                scopes.push(Scope {
                    key: format!("agent:{id}"),
                    label: format!("agent {qualified}"),
                    limits: *limits,
                });
            }
        }
        if let Some((_, child)) = agent {
            for (id, handle) in ancestors {
                let limits = clade_config::for_agent(&budgets.agents, tenant.name.as_str(), handle);
                if let Some(limits) = limits {
                    scopes.push(Scope {
                        key: format!("agent:{id}"),
                        label: format!("agent {}/{handle} (which made {child})", tenant.name),
                        limits: *limits,
                    });
                }
            }
        }
        (!scopes.is_empty()).then_some(Self { store, clock, scopes })
    }

    /// Every (scope, period, unit, limit, label) that applies now.
    fn counters(&self, now: Timestamp) -> Vec<(String, String, &'static str, u64, String)> {
        let (day, month) = periods(now);
        let mut out = Vec::new();
        for scope in &self.scopes {
            let l = scope.limits;
            let usd = |v: f64| (v * 1_000_000.0).round().max(0.0) as u64;
            let entries = [
                (day.clone(), TOKENS, l.tokens_per_day, "tokens per day (UTC)"),
                (month.clone(), TOKENS, l.tokens_per_month, "tokens per month"),
                (day.clone(), MICROS, l.usd_per_day.map(usd), "USD per day (UTC)"),
                (month.clone(), MICROS, l.usd_per_month.map(usd), "USD per month"),
            ];
            for (period, unit, limit, what) in entries {
                let Some(limit) = limit else { continue };
                let shown = if unit == MICROS {
                    format!("{:.2}", limit as f64 / 1e6)
                } else {
                    limit.to_string()
                };
                let label = format!(
                    "budget exhausted: {} has reached its limit of {shown} {what}; raise it in clade.yaml (budgets) or wait for the next period",
                    scope.label
                );
                out.push((scope.key.clone(), period, unit, limit, label));
            }
        }
        out
    }
}

/// `d2026-11-22` and `m2026-11` for `now` (UTC).
fn periods(now: Timestamp) -> (String, String) {
    let date = now.to_string(); // 2026-11-22T09:04:54.123Z
    (format!("d{}", &date[..10]), format!("m{}", &date[..7]))
}

fn amount(unit: &str, spend: Spend) -> u64 {
    if unit == TOKENS { spend.tokens } else { spend.cost_micros }
}

impl Budget for StoreBudget {
    fn reserve(&self, estimate: Spend) -> BoxFuture<'_, Result<Reservation, Error>> {
        Box::pin(async move {
            let now = self.clock.now();
            let counters: Vec<BudgetCounter> = self
                .counters(now)
                .into_iter()
                .map(|(scope, period, unit, limit, label)| BudgetCounter {
                    amount: amount(unit, estimate),
                    scope,
                    period,
                    unit: unit.to_owned(),
                    limit,
                    label,
                })
                .collect();
            match self.store.budgets().reserve(counters).await {
                Ok(()) => Ok(Reservation { id: now.as_millis().to_string(), reserved: estimate }),
                Err(clade_store::Error::BudgetExceeded(message)) => {
                    Err(Error::BudgetExceeded(message))
                }
                Err(other) => Err(Error::BudgetExceeded(format!(
                    "budget could not be checked ({other}); the call was not made"
                ))),
            }
        })
    }

    fn settle(&self, reservation: Reservation, actual: Spend) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Settle against the periods the reservation was made in.
            let made = reservation
                .id
                .parse::<i64>()
                .map(Timestamp::from_millis)
                .unwrap_or_else(|_| self.clock.now());
            let settlements = self
                .counters(made)
                .into_iter()
                .map(|(scope, period, unit, _, _)| BudgetSettlement {
                    reserved: amount(unit, reservation.reserved),
                    spent: amount(unit, actual),
                    scope,
                    period,
                    unit: unit.to_owned(),
                })
                .collect();
            if let Err(err) = self.store.budgets().settle(settlements).await {
                tracing::error!(error = %err, "could not settle a budget reservation; the reserved amount stays booked");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_day_and_month() {
        let (d, m) = periods(Timestamp::from_millis(1_795_338_294_123));
        assert_eq!((d.as_str(), m.as_str()), ("d2026-11-22", "m2026-11"));
    }
}
