//! What a run spends: the usage of its tasks' turns (model calls, tokens, cost), summed, and
//! the run's `budget` checked against it before each question. Each turn's usage is read once
//! per drive and kept; questions asked at once in parallel branches are each checked against
//! what had ended before them, so a run can pass its budget by what those questions spend.

use std::collections::HashMap;
use std::sync::Mutex;

use clade_core::{TenantId, TurnId};
use clade_store::{Store, TurnUsage};
use serde::{Deserialize, Serialize};

use crate::flow::Budget;

/// What a run spent, as its record keeps it once it ended (the turns of agents it made for
/// itself go with them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub model_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

impl From<TurnUsage> for Spent {
    fn from(usage: TurnUsage) -> Self {
        Self {
            model_calls: usage.model_calls,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_micros: usage.cost_micros,
        }
    }
}

/// The usage of the turns a run's tasks asked, summed (a turn deleted since counts nothing).
pub async fn usage_of(
    store: &Store,
    tenant: TenantId,
    turns: &[String],
) -> Result<TurnUsage, clade_store::Error> {
    Spending::default().spent(store, tenant, turns).await
}

/// The turns' usage read so far in one drive of a run.
#[derive(Default)]
pub(crate) struct Spending {
    read: Mutex<HashMap<String, TurnUsage>>,
}

impl Spending {
    /// The usage of `turns`, summed (a turn read before is not read again).
    pub(crate) async fn spent(
        &self,
        store: &Store,
        tenant: TenantId,
        turns: &[String],
    ) -> Result<TurnUsage, clade_store::Error> {
        let mut total = TurnUsage::default();
        for turn in turns {
            let known = self.read.lock().ok().and_then(|read| read.get(turn).copied());
            let usage = match known {
                Some(usage) => usage,
                None => {
                    let Ok(id) = turn.parse::<TurnId>() else { continue };
                    let usage = match store.tenant_scope(tenant).turn_usage(id).await {
                        Ok(usage) => usage,
                        Err(clade_store::Error::TurnNotFound(_)) => TurnUsage::default(),
                        Err(other) => return Err(other),
                    };
                    if let Ok(mut read) = self.read.lock() {
                        read.insert(turn.clone(), usage);
                    }
                    usage
                }
            };
            total.model_calls += usage.model_calls;
            total.input_tokens += usage.input_tokens;
            total.output_tokens += usage.output_tokens;
            total.cost_micros += usage.cost_micros;
        }
        Ok(total)
    }
}

/// Why `spent` leaves no room for another question under `budget` (`whose`: "the run's",
/// "its"), if it does not.
pub(crate) fn exhausted(budget: Budget, spent: &TurnUsage, whose: &str) -> Option<String> {
    let tokens = spent.input_tokens + spent.output_tokens;
    if let Some(max) = budget.max_tokens
        && tokens >= max
    {
        return Some(format!("{whose} budget is spent: {tokens} tokens of {max}"));
    }
    if let Some(max) = budget.max_cost_micros
        && spent.cost_micros >= max
    {
        return Some(format!(
            "{whose} budget is spent: ${:.6} of ${:.6}",
            spent.cost_micros as f64 / 1e6,
            max as f64 / 1e6
        ));
    }
    None
}
