//! The cortex: keeps agents' memories in the background ([`clade_memory::upkeep`]: merge
//! repeats, decay, prune, purge). It looks, once every few seconds, for the agents whose upkeep
//! is due (a write settled, or decay reaching one of their items); an agent nobody talks to is
//! not looked at, nor held in memory, until its own due time. Each agent's upkeep is logged
//! when it changed anything, and audited by the store.

use std::time::Duration;

use clade_store::Store;

use crate::Engine;

/// Agents kept per look.
const BATCH: u32 = 64;
/// How long an agent whose upkeep failed waits for the next try.
const RETRY: Duration = Duration::from_secs(3600);
/// The longest wait between looks.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Starts keeping agents' memories while `engine` runs (and its memory has an upkeep policy).
/// Dropping the handle does not stop it; aborting it does.
pub fn spawn(store: Store, engine: Engine) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, engine))
}

async fn run(store: Store, engine: Engine) {
    loop {
        let wait = match look(&store, &engine).await {
            // A full batch: more wait.
            Ok((kept, _)) if kept == BATCH as usize => Duration::from_millis(10),
            Ok((_, settle)) => settle.clamp(Duration::from_secs(1), MAX_WAIT),
            Err(err) => {
                tracing::warn!(error = %err, "memory upkeep failed; it tries again shortly");
                MAX_WAIT
            }
        };
        // On the store's clock, so tests that move time move the cortex too.
        store.clock().sleep(wait).await;
    }
}

/// Keeps the agents due now; how many, and how long a write settles before its upkeep.
async fn look(store: &Store, engine: &Engine) -> Result<(usize, Duration), String> {
    let Some(memory) = engine.memory() else { return Ok((0, MAX_WAIT)) };
    let Some(policy) = memory.upkeep_policy().cloned() else { return Ok((0, MAX_WAIT)) };
    let settle = policy.settle;
    let due = store
        .memory_upkeep_due(store.now(), settle.as_millis() as i64, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    for agent in &due {
        let scope = store.acting_as("memory upkeep").tenant_scope(agent.tenant);
        match memory.upkeep(&scope, agent.agent, agent.last_ran, &policy).await {
            Ok(report) if report.changed() => tracing::info!(
                agent = %agent.agent,
                merged = report.merged,
                faded = report.faded,
                pruned = report.pruned,
                purged = report.purged,
                live = report.live,
                "memory kept"
            ),
            Ok(_) => {}
            Err(err) => {
                // One agent's failure holds up no other: it is tried again in an hour, or
                // after its next write.
                tracing::warn!(agent = %agent.agent, error = %err, "memory upkeep of an agent failed; it is tried again in an hour");
                let now = store.now();
                let retry =
                    clade_core::Timestamp::from_millis(now.as_millis() + RETRY.as_millis() as i64);
                store
                    .finish_memory_upkeep(agent.tenant, agent.agent, now, now, Some(retry))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok((due.len(), settle))
}
