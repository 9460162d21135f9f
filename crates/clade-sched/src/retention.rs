//! The retention sweep as a scheduled system job: at each time `scheduler.retention_schedule`
//! gives (UTC), every tenant with a retention policy (`tenants.<name>.retention`, else
//! `tenants."*".retention`) has its old records deleted as the policy says
//! ([`clade_store::Store::sweep`], audited with its counts); a tenant without one keeps
//! everything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clade_config::{Config, Retention, TenantConfig};
use clade_core::Timestamp;
use clade_store::Store;
use clade_store::retention::{Cutoffs, Swept};

use crate::{Schedule, ScheduleError, Zone};

const DAY_MILLIS: i64 = 86_400_000;

/// The cutoffs a policy gives at `now`.
pub fn cutoffs(policy: Retention, now: Timestamp) -> Cutoffs {
    let before = |days: Option<u32>| {
        days.map(|d| {
            Timestamp::from_millis(now.as_millis().saturating_sub(i64::from(d) * DAY_MILLIS))
        })
    };
    Cutoffs {
        sessions: before(policy.sessions_days),
        outbox: before(policy.outbox_days),
        dead_letters: before(policy.dead_letters_days),
    }
}

/// Sweeps every tenant that has a policy in `tenants`, now; what each lost, by tenant name.
pub async fn sweep_all(
    store: &Store,
    tenants: &BTreeMap<String, TenantConfig>,
) -> Result<Vec<(String, Swept)>, clade_store::Error> {
    let now = store.now();
    let mut swept = Vec::new();
    for tenant in store.tenants().list().await? {
        let name = tenant.name.as_str();
        let Some(policy) = Config::retention_of(tenants, name) else { continue };
        swept.push((name.to_owned(), store.sweep(tenant.id, cutoffs(policy, now)).await?));
    }
    Ok(swept)
}

/// The tenants' settings in force (a reload may change them between sweeps).
pub type TenantsNow = Arc<dyn Fn() -> BTreeMap<String, TenantConfig> + Send + Sync>;

/// Sweeps at each time of `schedule` (UTC) on the store's clock, until `shutdown`.
pub async fn run(
    store: Store,
    schedule: &str,
    tenants: TenantsNow,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ScheduleError> {
    let schedule = Schedule::parse(schedule)?;
    let zone = Zone::utc();
    tokio::pin!(shutdown);
    let clock = store.clock().clone();
    loop {
        let now = clock.now();
        let Some(next) = schedule.next_after(now, &zone) else { return Ok(()) };
        let wait = Duration::from_millis(
            next.as_millis().saturating_sub(now.as_millis()).max(0).unsigned_abs(),
        );
        tokio::select! {
            () = clock.sleep(wait) => {}
            () = &mut shutdown => return Ok(()),
        }
        match sweep_all(&store, &tenants()).await {
            Ok(swept) => {
                for (tenant, swept) in swept.iter().filter(|(_, s)| !s.is_empty()) {
                    tracing::info!(
                        tenant = %tenant,
                        sessions = swept.sessions,
                        events = swept.events,
                        turns = swept.turns,
                        steps = swept.steps,
                        outbox = swept.outbox,
                        dead_letters = swept.dead_letters,
                        "retention sweep"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "the retention sweep failed; it runs again at its next time")
            }
        }
    }
}
