//! Per-tenant quotas and rate limits on the API (`tenants.<name>.quotas` in clade.yaml, `"*"`
//! for every tenant without its own): events per second through a token bucket per tenant,
//! the number of agents, checked in the transaction that creates one, and the bytes of
//! conversation the store holds for the tenant, measured by the store at most every
//! [`STORED_BYTES_EVERY`] with what was accepted since added in between. Each answers 429
//! naming the limit, so one tenant's flood costs the others nothing but a bucket check.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_config::{Quotas, TenantConfig};
use clade_core::{Clock, Tenant, TenantId, Timestamp};
use clade_store::Store;

use crate::error::{ApiError, Code};

/// The quotas in force and each tenant's event bucket.
pub struct TenantLimits {
    /// Swapped whole when a new configuration is applied.
    tenants: std::sync::RwLock<Arc<BTreeMap<String, TenantConfig>>>,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
    /// Each tenant's stored bytes as last measured, plus what was accepted since.
    stored: Mutex<HashMap<TenantId, Stored>>,
    /// What buckets refill by.
    clock: Arc<dyn Clock>,
    /// Long-lived streams open now.
    streams: Mutex<OpenStreams>,
    /// Counts the cluster's nodes as this one sees them (none alone: 1): each node holds its
    /// share of the rates, streams and connections, so a tenant spread over them gets no
    /// more in all.
    nodes: std::sync::OnceLock<NodeCount>,
}

type NodeCount = Box<dyn Fn() -> usize + Send + Sync>;

struct Bucket {
    tokens: f64,
    at: Timestamp,
}

struct Stored {
    bytes: u64,
    measured_at: Timestamp,
}

/// How long a measure of a tenant's stored bytes stands before the store is asked again.
pub const STORED_BYTES_EVERY: Duration = Duration::from_secs(5);

impl TenantLimits {
    pub fn new(tenants: BTreeMap<String, TenantConfig>, clock: Arc<dyn Clock>) -> Self {
        Self {
            tenants: std::sync::RwLock::new(Arc::new(tenants)),
            buckets: Mutex::default(),
            stored: Mutex::default(),
            clock,
            streams: Mutex::default(),
            nodes: std::sync::OnceLock::new(),
        }
    }

    /// Shares the rates, streams and connections of every tenant among the nodes `count`
    /// counts at each check (a cluster's members, as nodes join and leave); set once, at
    /// start. The agents and stored bytes quotas are counted in the store, for the whole
    /// cluster already.
    pub fn share_among(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        if self.nodes.set(Box::new(count)).is_err() {
            tracing::warn!("the tenants' quotas are already shared among the cluster's nodes");
        }
    }

    /// The nodes the quotas are shared among now (1 alone).
    fn nodes(&self) -> usize {
        self.nodes.get().map_or(1, |count| count().max(1))
    }

    /// This node's share of a count a tenant's quotas allow: rounded up, so a quota above 0
    /// leaves every node at least 1.
    fn share(&self, allowed: u64) -> u64 {
        allowed.div_ceil(self.nodes() as u64)
    }

    /// How a refusal names the setting `key` that allows `allowed`: alone as it is, in a
    /// cluster with the split.
    fn named(&self, key: String, allowed: impl std::fmt::Display) -> String {
        match self.nodes() {
            1 => key,
            nodes => format!("this node's share of {key}: {allowed} over {nodes} nodes"),
        }
    }

    /// Takes the quotas of a newly applied configuration; buckets keep their tokens.
    pub fn reload(&self, tenants: BTreeMap<String, TenantConfig>) {
        *self.tenants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tenants);
    }

    /// The tenant's quotas, and the clade.yaml key they come from.
    fn quotas(&self, tenant: &Tenant) -> Option<(Quotas, String)> {
        let name = tenant.name.as_str();
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(quotas) = tenants.get(name).and_then(|t| t.quotas) {
            return Some((quotas, format!("tenants.{name}.quotas")));
        }
        tenants.get("*").and_then(|t| t.quotas).map(|q| (q, "tenants.\"*\".quotas".to_owned()))
    }

    /// Marks the connection `trust` stands for as `tenant`'s, unless the tenant holds as many
    /// connections as its `connections` quota allows: then 429 with `Retry-After`, and the
    /// connection stays a stranger's (the first to be closed when places run short).
    pub(crate) fn trust_connection(
        &self,
        trust: &crate::server::ConnectionTrust,
        tenant: &Tenant,
        credential: &crate::auth::Credential,
    ) -> Result<(), ApiError> {
        use crate::server::{ConnectionCaps, Holder, OverCap};
        let quotas = self.quotas(tenant);
        let allowed = |of: fn(&Quotas) -> Option<u64>| quotas.as_ref().and_then(|(q, _)| of(q));
        let (per_tenant, per_token) =
            (allowed(|q| q.connections), allowed(|q| q.connections_per_token));
        let cap = |n: u64| usize::try_from(self.share(n)).unwrap_or(usize::MAX);
        let caps = ConnectionCaps { tenant: per_tenant.map(cap), credential: per_token.map(cap) };
        let holder = Holder { tenant: tenant.id, credential: credential.fingerprint() };
        let key = quotas.map(|(_, key)| key).unwrap_or_default();
        let setting = |name: &str, allowed: Option<u64>| {
            self.named(format!("{key}.{name}"), allowed.unwrap_or_default())
        };
        let retry = CONNECTION_RETRY.as_secs();
        let message = match trust.set(holder, caps) {
            Ok(()) => return Ok(()),
            Err(OverCap::Tenant(held)) => format!(
                "tenant {} holds {held} connections, the most it may ({}): reuse one (keep-alive), or retry in {retry} s",
                tenant.name,
                setting("connections", per_tenant)
            ),
            Err(OverCap::Credential(held)) => format!(
                "this token holds {held} connections, the most one token may ({}): reuse one (keep-alive), or retry in {retry} s",
                setting("connections_per_token", per_token)
            ),
        };
        Err(ApiError::new(Code::QuotaExceeded, message).retry_after(CONNECTION_RETRY))
    }

    /// How often and how many jobs `tenant`'s tokens may schedule for its agent `handle`.
    pub fn job_limits(&self, tenant: &Tenant, handle: &str) -> clade_sched::JobLimits {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        clade_sched::JobLimits::of(&tenants, tenant.name.as_str(), handle)
    }

    /// The most agents `tenant` may have, and where that is set.
    pub fn max_agents(&self, tenant: &Tenant) -> Option<(u64, String)> {
        self.quotas(tenant).and_then(|(q, key)| q.agents.map(|n| (n, format!("{key}.agents"))))
    }

    /// Admits `adding` more bytes of the tenant's conversation, or refuses them when the store
    /// holds as much for the tenant as its `stored_bytes` quota allows.
    pub async fn admit_bytes(
        &self,
        store: &Store,
        tenant: &Tenant,
        adding: u64,
    ) -> Result<(), ApiError> {
        let Some((quotas, key)) = self.quotas(tenant) else { return Ok(()) };
        let Some(quota) = quotas.stored_bytes else { return Ok(()) };
        let now = self.clock.now();
        let fresh = |s: &Stored| {
            now.as_millis().saturating_sub(s.measured_at.as_millis())
                < STORED_BYTES_EVERY.as_millis() as i64
        };
        let known = self
            .stored
            .lock()
            .ok()
            .and_then(|stored| stored.get(&tenant.id).filter(|s| fresh(s)).map(|s| s.bytes));
        let bytes = match known {
            Some(bytes) => bytes,
            None => {
                let bytes = store.usage(tenant.id).stored_bytes().await?;
                if let Ok(mut stored) = self.stored.lock() {
                    stored.insert(tenant.id, Stored { bytes, measured_at: now });
                }
                bytes
            }
        };
        if bytes.saturating_add(adding) > quota {
            return Err(ApiError::new(
                Code::QuotaExceeded,
                format!(
                    "tenant {} stores {bytes} bytes of conversation and may store {quota} ({key}.stored_bytes): delete sessions or agents it no longer needs, or ask the operator to raise the quota",
                    tenant.name
                ),
            ));
        }
        if let Ok(mut stored) = self.stored.lock()
            && let Some(entry) = stored.get_mut(&tenant.id)
        {
            entry.bytes = entry.bytes.saturating_add(adding);
        }
        Ok(())
    }

    /// Takes one event from the tenant's bucket, or says when to retry.
    pub fn take_event(&self, tenant: &Tenant) -> Result<(), ApiError> {
        self.take_events(tenant, 1)
    }

    /// Takes `count` events from the tenant's bucket (at most a burst's worth: more would
    /// never be admitted), or none and says when to retry. Scheduled fires take theirs here
    /// too, so jobs send a tenant no more than its API would take.
    pub fn take_events(&self, tenant: &Tenant, count: usize) -> Result<(), ApiError> {
        let Some((quotas, key)) = self.quotas(tenant) else { return Ok(()) };
        let Some(rate) = quotas.events_per_second.filter(|r| *r > 0.0) else { return Ok(()) };
        let burst = quotas.burst.map_or(rate.max(1.0), |b| b as f64).max(1.0);
        // In a cluster each node refills its bucket at its share of the rate.
        let (allowed, nodes) = (rate, self.nodes() as f64);
        let (rate, burst) = (rate / nodes, (burst / nodes).ceil().max(1.0));
        let need = (count.max(1) as f64).min(burst);
        let now = self.clock.now();
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let bucket = buckets.entry(tenant.id).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.as_millis().saturating_sub(bucket.at.as_millis()).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= need {
            bucket.tokens -= need;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((need - bucket.tokens) / rate);
        Err(ApiError::new(
            Code::RateLimited,
            format!(
                "tenant {} sends more than {rate} events per second ({}): retry in {} ms",
                tenant.name,
                self.named(format!("{key}.events_per_second"), allowed),
                wait.as_millis().max(1)
            ),
        )
        .retry_after(wait))
    }
}

/// Streams a tenant may hold open at once (SSE, WebSocket, gRPC traces) when its quotas say
/// nothing: a fifth of the default connection limit, so no tenant takes every slot.
pub const DEFAULT_STREAMS: u64 = 100;
/// Streams one token may hold open at once when its tenant's quotas say nothing.
pub const DEFAULT_STREAMS_PER_TOKEN: u64 = 50;
/// What a refused stream is told to wait: slots free as other streams close.
const STREAM_RETRY: Duration = Duration::from_secs(5);

/// The streams open now, by tenant and by token.
#[derive(Default)]
pub(crate) struct OpenStreams {
    tenants: HashMap<TenantId, u64>,
    /// By a hash of the token: the map holds no credential.
    tokens: HashMap<u64, u64>,
}

/// One open stream's place in its tenant's and token's counts, given back when dropped.
pub(crate) struct StreamSlot {
    limits: Arc<TenantLimits>,
    tenant: TenantId,
    token: u64,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Ok(mut open) = self.limits.streams.lock() else { return };
        let release = |count: Option<&mut u64>| {
            if let Some(count) = count {
                *count = count.saturating_sub(1);
            }
        };
        release(open.tenants.get_mut(&self.tenant));
        release(open.tokens.get_mut(&self.token));
        open.tenants.retain(|_, n| *n > 0);
        open.tokens.retain(|_, n| *n > 0);
    }
}

impl TenantLimits {
    /// Takes a slot for one more long-lived stream of `tenant` on `credential`, or refuses it
    /// (429 with `Retry-After`) when the tenant or the token holds as many as its quotas
    /// (`streams`, `streams_per_token`) allow: one tenant's streams cannot starve the others.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        tenant: &Tenant,
        credential: &crate::auth::Credential,
    ) -> Result<StreamSlot, ApiError> {
        let (quotas, key) = self
            .quotas(tenant)
            .unwrap_or_else(|| (Quotas::default(), "tenants.<name>.quotas".to_owned()));
        let allowed_tenant = quotas.streams.unwrap_or(DEFAULT_STREAMS);
        let allowed_token = quotas.streams_per_token.unwrap_or(DEFAULT_STREAMS_PER_TOKEN);
        let (per_tenant, per_token) = (self.share(allowed_tenant), self.share(allowed_token));
        let token = credential.fingerprint();
        let mut open = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let tenant_open = open.tenants.get(&tenant.id).copied().unwrap_or(0);
        let token_open = open.tokens.get(&token).copied().unwrap_or(0);
        let refusal = if tenant_open >= per_tenant {
            Some(format!(
                "tenant {} holds {tenant_open} streams open, the most it may ({}): close one, or retry in {} s",
                tenant.name,
                self.named(format!("{key}.streams"), allowed_tenant),
                STREAM_RETRY.as_secs()
            ))
        } else if token_open >= per_token {
            Some(format!(
                "this token holds {token_open} streams open, the most one token may ({}): close one, or retry in {} s",
                self.named(format!("{key}.streams_per_token"), allowed_token),
                STREAM_RETRY.as_secs()
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            return Err(ApiError::new(Code::QuotaExceeded, message).retry_after(STREAM_RETRY));
        }
        *open.tenants.entry(tenant.id).or_default() += 1;
        *open.tokens.entry(token).or_default() += 1;
        Ok(StreamSlot { limits: self.clone(), tenant: tenant.id, token })
    }
}

/// The tenants' event rates as the scheduler's gate: a tenant's scheduled fires take from
/// the bucket its API events take from (`quotas.events_per_second`), so its jobs cannot send
/// it more than the API would take. Tenants are looked up once, by id.
/// When a tenant at its connection quota is told to retry.
const CONNECTION_RETRY: Duration = Duration::from_secs(1);

pub struct FireRate {
    limits: Arc<TenantLimits>,
    store: Store,
    known: Mutex<HashMap<TenantId, Tenant>>,
}

impl FireRate {
    pub fn new(limits: Arc<TenantLimits>, store: Store) -> Self {
        Self { limits, store, known: Mutex::default() }
    }

    async fn tenant(&self, id: TenantId) -> Option<Tenant> {
        if let Some(known) = self.known.lock().ok().and_then(|known| known.get(&id).cloned()) {
            return Some(known);
        }
        let tenant = self.store.tenants().by_id(id).await.ok()?;
        if let Ok(mut known) = self.known.lock() {
            known.insert(id, tenant.clone());
        }
        Some(tenant)
    }
}

impl clade_sched::scheduler::FireGate for FireRate {
    fn admit(&self, tenant: TenantId, fires: usize) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            // A tenant that cannot be read is not held back here: its fires meet the store's
            // own checks.
            match self.tenant(tenant).await {
                Some(tenant) => self.limits.take_events(&tenant, fires).is_ok(),
                None => true,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clade_core::{Handle, ManualClock};

    use super::*;

    /// A bucket refills by its clock: a tenant over its rate is told when to retry, and is
    /// let through exactly then.
    #[test]
    fn a_bucket_refills_as_its_clock_moves() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_795_338_294_000)));
        let config: TenantConfig = serde_json::from_value(serde_json::json!({
            "quotas": { "events_per_second": 1.0, "burst": 2 }
        }))
        .unwrap();
        let limits =
            TenantLimits::new(BTreeMap::from([("acme".to_owned(), config)]), clock.clone());
        let nodes = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let counted = nodes.clone();
        limits.share_among(move || counted.load(std::sync::atomic::Ordering::Relaxed));
        let tenant = Tenant {
            id: TenantId::generate(clock.now()),
            name: Handle::parse("acme").unwrap(),
            created_at: clock.now(),
        };
        assert!(limits.take_event(&tenant).is_ok());
        assert!(limits.take_event(&tenant).is_ok());
        let refused = limits.take_event(&tenant).unwrap_err();
        assert!(refused.message.contains("retry in 1000 ms"), "{}", refused.message);
        clock.advance(Duration::from_millis(999));
        assert!(limits.take_event(&tenant).is_err(), "refilled early");
        clock.advance(Duration::from_millis(1));
        assert!(limits.take_event(&tenant).is_ok(), "not refilled on time");
        assert!(limits.take_event(&tenant).is_err());
        // Several at once take as many, and never more than a burst's worth is asked.
        clock.advance(Duration::from_secs(2));
        assert!(limits.take_events(&tenant, 5).is_ok(), "a burst's worth was not admitted");
        assert!(limits.take_events(&tenant, 1).is_err(), "more than the burst went out");
        // One node of two holds half the burst and refills at half the rate, and says so.
        nodes.store(2, std::sync::atomic::Ordering::Relaxed);
        clock.advance(Duration::from_secs(10));
        assert!(limits.take_event(&tenant).is_ok());
        let refused = limits.take_event(&tenant).unwrap_err();
        assert!(
            refused.message.contains("retry in 2000 ms")
                && refused.message.contains(
                    "this node's share of tenants.acme.quotas.events_per_second: 1 over 2 nodes"
                ),
            "{}",
            refused.message
        );
        clock.advance(Duration::from_millis(1999));
        assert!(limits.take_event(&tenant).is_err(), "refilled at more than its share");
        // Alone again, the whole rate.
        nodes.store(0, std::sync::atomic::Ordering::Relaxed);
        clock.advance(Duration::from_secs(10));
        assert!(limits.take_events(&tenant, 2).is_ok());
    }

    /// A node's share of a count is the count over the nodes, rounded up: 0 only for 0.
    #[test]
    fn each_node_holds_its_share_of_a_count() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_795_338_294_000)));
        let limits = TenantLimits::new(BTreeMap::new(), clock);
        assert_eq!((limits.share(5), limits.named("k".into(), 5)), (5, "k".into()));
        let nodes = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let counted = nodes.clone();
        limits.share_among(move || counted.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(limits.share(5), 3);
        assert_eq!(limits.named("k".into(), 5), "this node's share of k: 5 over 2 nodes");
        nodes.store(8, std::sync::atomic::Ordering::Relaxed);
        assert_eq!((limits.share(5), limits.share(0)), (1, 0));
    }
}
