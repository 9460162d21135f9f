//! The scheduler: looks at the jobs that are due, commits what each fires through the store,
//! and wakes the sessions that received envelopes.
//!
//! A look ([`look`]) reads the due jobs of every tenant, decides each one's fires from its
//! stored text ([`plan`]), and commits them with the job's new settled time
//! ([`clade_store::JobWrites::settle`]): a look that raced another (two nodes, or a restart
//! that looked again) finds the job settled and writes nothing. An envelope the store refuses
//! (its session has too many events waiting, its target session is gone) is settled as a run
//! with the error, so the job moves on and the time is accounted for. A job whose last
//! `max_failures` settled runs all failed is disabled, with an audit record saying why,
//! before it fires again.
//!
//! [`Scheduler::run`] looks again whenever the soonest job is due, on the store's clock, so a
//! test moves a `ManualClock` instead of waiting, and an idle gateway sleeps until then.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clade_core::{ExecutionId, SessionId, TenantId, Timestamp};
use clade_store::{FireDelivery, JobRow, JobRun, RunOutcome, Settled, Settlement, Store};
use tokio::sync::Notify;

use crate::{Misfire, Schedule, ScheduleError, Zone};

/// How the scheduler looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookOptions {
    /// A scheduled time this recent is on time and fires; older ones follow the job's misfire
    /// policy.
    pub grace: Duration,
    /// The most jobs one look settles; a look that finds this many looks again at once.
    pub limit: u32,
    /// An envelope is refused when its session already has this many events waiting.
    pub max_queued: u64,
    /// A job whose last this many settled runs all failed is disabled; 0 never disables one.
    pub max_failures: u32,
    /// Jobs of one tenant settled in one transaction.
    pub batch: usize,
    /// Transactions in flight at once within a look.
    pub concurrency: usize,
}

impl Default for LookOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
            limit: 1_000,
            max_queued: 100,
            max_failures: 5,
            batch: 64,
            concurrency: 16,
        }
    }
}

/// What one look did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Look {
    /// Due jobs it looked at.
    pub seen: usize,
    /// Jobs it settled.
    pub settled: usize,
    /// Envelopes it fired.
    pub fired: usize,
    /// Scheduled times whose envelopes the store refused, each recorded as a failed run.
    pub refused: usize,
    /// Scheduled times it skipped under their jobs' policies.
    pub skipped: u64,
    /// Jobs another look had settled first.
    pub raced: usize,
    /// Sessions that received envelopes, to wake.
    pub sessions: Vec<(TenantId, SessionId)>,
    /// Flow runs that fires started, for the flow runner to drive.
    pub flow_runs: Vec<(TenantId, ExecutionId)>,
    /// Jobs it disabled (a schedule it could not read, too many failures in a row), with why.
    pub disabled: Vec<(ExecutionId, String)>,
    /// Jobs it could not settle (the store failed), with why: they stay due, and one job's
    /// failure never holds up another's, least of all another tenant's.
    pub failed: Vec<(ExecutionId, String)>,
    /// For each envelope fired, how long after its scheduled time it was committed.
    pub lateness: Vec<Duration>,
    /// Due jobs whose fires their tenant's rate did not admit now ([`FireGate`]): they stay
    /// due, and go out at a later look.
    pub deferred: usize,
}

/// Whether a tenant's fires go out now: a tenant's schedules count against the rate its events
/// do (`quotas.events_per_second`), so its jobs cannot send it more than the API would take.
/// A fire refused now stays due, and goes out at a later look (late, as its misfire policy
/// then says).
pub trait FireGate: Send + Sync {
    /// Takes `fires` from `tenant`'s allowance, or refuses them all.
    fn admit(&self, tenant: TenantId, fires: usize) -> futures::future::BoxFuture<'_, bool>;
}

impl Look {
    /// Counts what settling `job`, of `tenant`, did.
    fn count(
        &mut self,
        tenant: TenantId,
        job: ExecutionId,
        skipped: u64,
        outcome: Result<Settled, clade_store::Error>,
    ) {
        match outcome {
            Ok(Settled::Fired(runs)) => {
                self.fired += runs.len();
                self.lateness.extend(runs.iter().map(|(run, _)| {
                    let late =
                        run.fired_at.as_millis().saturating_sub(run.scheduled_at.as_millis());
                    let late = Duration::from_millis(late.max(0).unsigned_abs());
                    metrics::histogram!("clade_schedule_lateness_seconds")
                        .record(late.as_secs_f64());
                    late
                }));
                for (_, delivered) in &runs {
                    match delivered {
                        FireDelivery::Envelope(accepted) => {
                            self.sessions.push((tenant, accepted.session_id));
                        }
                        FireDelivery::Flow(run) => self.flow_runs.push((tenant, *run)),
                    }
                }
            }
            Ok(Settled::Refused { runs, .. }) => self.refused += runs.len(),
            Ok(Settled::Raced) => {
                self.raced += 1;
                return;
            }
            Err(err) => {
                self.failed.push((job, err.to_string()));
                return;
            }
        }
        self.settled += 1;
        self.skipped += skipped;
    }

    /// Adds what another look (at other jobs) did.
    fn add(&mut self, other: Look) {
        self.settled += other.settled;
        self.fired += other.fired;
        self.refused += other.refused;
        self.skipped += other.skipped;
        self.raced += other.raced;
        self.sessions.extend(other.sessions);
        self.flow_runs.extend(other.flow_runs);
        self.disabled.extend(other.disabled);
        self.failed.extend(other.failed);
        self.lateness.extend(other.lateness);
        self.deferred += other.deferred;
    }
}

/// The settlement of one due job at `now`, from its stored schedule, zone and policy.
pub fn plan(
    job: &JobRow,
    now: Timestamp,
    grace: Duration,
    max_queued: u64,
) -> Result<Settlement, ScheduleError> {
    let schedule = Schedule::parse(&job.schedule)?;
    let zone = Zone::parse(&job.zone)?;
    let misfire = Misfire::parse(&job.misfire)?;
    // A fire delayed by its jitter is still on time.
    let grace = grace.max(Duration::from_secs(u64::from(job.jitter_secs)));
    let due = misfire.due(&schedule, &zone, job.settled_at, now, grace);
    Ok(Settlement {
        from: job.settled_at,
        fires: due.fire,
        skipped: due.skipped,
        settled_at: due.settled,
        // The look after waits for the next time's jitter too.
        next_at: due.next.map(|next| crate::jobs::jitter_of(job.id, next, job.jitter_secs)),
        max_queued,
    })
}

/// Why the circuit breaker disables a job whose newest runs (since it was last enabled,
/// newest first) are `runs`: its last `max` settled runs all failed.
fn tripped(runs: &[JobRun], max: u32) -> Option<String> {
    if max == 0 {
        return None;
    }
    // Runs still in flight neither fail nor succeed yet.
    let settled: Vec<_> =
        runs.iter().filter(|run| !run.outcome.is_pending()).take(max as usize).collect();
    if settled.len() < max as usize || !settled.iter().all(|run| run.outcome.is_failure()) {
        return None;
    }
    // Only refusals and failed turns are failures.
    let last = match &settled[0].outcome {
        RunOutcome::Refused(why) => format!("was refused: {why}"),
        RunOutcome::Turn { id, .. } => format!("ran turn {id}, which failed"),
        RunOutcome::Flow { run, .. } => format!("started flow run {run}, which failed"),
        _ => String::new(),
    };
    Some(format!(
        "its last {max} runs failed (the latest {last}); enable it again once the cause is fixed"
    ))
}

/// One write a look makes.
enum Step {
    /// Settle these jobs of one tenant in one transaction.
    Settle(TenantId, Vec<(ExecutionId, Settlement)>),
    /// Disable this job, for why.
    Disable(TenantId, ExecutionId, String),
}

/// Looks at the jobs due at `now` (at most `options.limit`), and commits what each fires.
///
/// A look reads the due jobs and their newest runs (for the circuit breaker) in two queries,
/// then settles each tenant's jobs in transactions of up to `options.batch` jobs, side by
/// side: a look of a thousand jobs waits out a few group commits, not one per job, so fires
/// stay on time while the same writer carries the turns they start.
pub async fn look(
    store: &Store,
    now: Timestamp,
    options: LookOptions,
) -> Result<Look, clade_store::Error> {
    look_gated(store, now, options, None).await
}

/// [`look`], with each job's fires admitted by `gate` first: a job whose fires its tenant's
/// rate refuses is left due (counted in [`Look::deferred`]).
pub async fn look_gated(
    store: &Store,
    now: Timestamp,
    options: LookOptions,
    gate: Option<&dyn FireGate>,
) -> Result<Look, clade_store::Error> {
    use futures::StreamExt as _;
    let due = store.system().due_jobs(now, options.limit).await?;
    let mut look = Look { seen: due.len(), ..Look::default() };
    let history = if options.max_failures > 0 {
        let ids: Vec<_> = due.iter().map(|job| job.id).collect();
        store.system().recent_job_runs(&ids, options.max_failures.saturating_mul(2)).await?
    } else {
        Default::default()
    };
    let mut steps = Vec::new();
    let mut by_tenant = std::collections::BTreeMap::<TenantId, Vec<_>>::new();
    for job in &due {
        let runs = history.get(&job.id).map(Vec::as_slice).unwrap_or_default();
        if let Some(why) = tripped(runs, options.max_failures) {
            steps.push(Step::Disable(job.tenant_id, job.id, why));
            continue;
        }
        match plan(job, now, options.grace, options.max_queued) {
            Ok(settlement) => {
                let fires = settlement.fires.len();
                if let Some(gate) = gate
                    && fires > 0
                    && !gate.admit(job.tenant_id, fires).await
                {
                    look.deferred += 1;
                    continue;
                }
                by_tenant.entry(job.tenant_id).or_default().push((job.id, settlement))
            }
            // It would be due at every look, and never fire.
            Err(err) => steps.push(Step::Disable(
                job.tenant_id,
                job.id,
                format!("its schedule cannot be read: {err}"),
            )),
        }
    }
    let batch = options.batch.max(1);
    for (tenant, mut settlements) in by_tenant {
        while !settlements.is_empty() {
            let rest = settlements.split_off(settlements.len().min(batch));
            steps.push(Step::Settle(tenant, std::mem::replace(&mut settlements, rest)));
        }
    }
    let mut each = futures::stream::iter(steps)
        .map(|step| async move { take(store, step).await })
        .buffer_unordered(options.concurrency.max(1));
    while let Some(one) = each.next().await {
        look.add(one);
    }
    look.sessions.sort();
    look.sessions.dedup();
    Ok(look)
}

/// Makes one of a look's writes, and says what it did. A transaction that fails (the store
/// failed) leaves its jobs due, and holds up no other step, least of all another tenant's.
async fn take(store: &Store, step: Step) -> Look {
    let mut look = Look::default();
    match step {
        Step::Disable(tenant, job, why) => {
            match store.jobs(tenant).set_enabled(job, false, Some(why.clone())).await {
                Ok(_) => look.disabled.push((job, why)),
                Err(err) => look.failed.push((job, err.to_string())),
            }
        }
        Step::Settle(tenant, settlements) => {
            let skipped: Vec<_> = settlements.iter().map(|(id, s)| (*id, s.skipped)).collect();
            match store.jobs(tenant).settle_many(settlements).await {
                Ok(outcomes) => {
                    for ((job, skipped), outcome) in skipped.into_iter().zip(outcomes) {
                        look.count(tenant, job, skipped, outcome);
                    }
                }
                Err(err) => {
                    let why = err.to_string();
                    look.failed.extend(skipped.into_iter().map(|(job, _)| (job, why.clone())));
                }
            }
        }
    }
    look
}

/// Told what each look did: the sessions it delivered envelopes to, to wake them, and what a
/// benchmark measures.
pub type OnLook = Arc<dyn Fn(&Look) + Send + Sync>;

/// The scheduler as a service: looks whenever a job is due, and tells `on_look` what each look
/// did.
pub struct Scheduler {
    store: Store,
    options: LookOptions,
    on_look: OnLook,
    poke: Arc<Notify>,
    /// The longest it sleeps without looking: jobs created by another process (the CLI beside a
    /// gateway) are found within this.
    poll: Duration,
    /// What admits each tenant's fires, if anything does.
    gate: Option<Arc<dyn FireGate>>,
}

impl Scheduler {
    pub fn new(store: Store, options: LookOptions, on_look: OnLook) -> Self {
        Self {
            // Fires commit ahead of the turns they start.
            store: store.writes_first(),
            options,
            on_look,
            poke: Arc::new(Notify::new()),
            poll: Duration::from_secs(1),
            gate: None,
        }
    }

    /// Fires go out only as `gate` admits them (a tenant's event rate).
    pub fn with_gate(mut self, gate: Arc<dyn FireGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The longest sleep between looks (one second unless set).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Notify it to look again now (a job was created or enabled in this process).
    pub fn poke(&self) -> Arc<Notify> {
        self.poke.clone()
    }

    /// Looks until `shutdown` completes. A look that fails (the store unreachable) is logged
    /// and tried again after the poll interval; nothing is lost meanwhile, since what is due
    /// stays due.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let clock = self.store.clock().clone();
        loop {
            let now = clock.now();
            let wait = match look_gated(&self.store, now, self.options, self.gate.as_deref()).await
            {
                Ok(look) => {
                    (self.on_look)(&look);
                    report(&look);
                    let held = look.failed.len() + look.deferred;
                    if look.seen >= self.options.limit as usize && look.seen > held {
                        // More are due than one look takes.
                        continue;
                    }
                    if held > 0 {
                        // What failed or waits for its tenant's rate is still due: do not spin
                        // on it.
                        self.poll.min(Duration::from_secs(1))
                    } else {
                        self.until_next(now).await
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the scheduler could not read the due jobs; it looks again shortly");
                    self.poll
                }
            };
            tokio::select! {
                () = clock.sleep(wait) => {}
                () = self.poke.notified() => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// How long until the soonest job is due, at most the poll interval.
    async fn until_next(&self, now: Timestamp) -> Duration {
        match self.store.system().next_due().await {
            Ok(Some(next)) => {
                let millis = next.as_millis().saturating_sub(now.as_millis()).max(0);
                Duration::from_millis(millis.unsigned_abs()).min(self.poll)
            }
            Ok(None) | Err(_) => self.poll,
        }
    }
}

fn report(look: &Look) {
    if look.fired > 0 || look.refused > 0 || look.skipped > 0 {
        tracing::debug!(
            jobs = look.settled,
            fired = look.fired,
            refused = look.refused,
            skipped = look.skipped,
            raced = look.raced,
            "scheduler fired"
        );
    }
    for (job, why) in &look.disabled {
        tracing::warn!(job = %job, reason = %why, "job disabled");
    }
    for (job, why) in &look.failed {
        tracing::warn!(job = %job, error = %why, "job could not be settled; it stays due");
    }
    if look.deferred > 0 {
        tracing::debug!(
            jobs = look.deferred,
            "jobs wait for their tenants' event rate (quotas.events_per_second)"
        );
    }
}
