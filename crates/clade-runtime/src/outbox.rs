//! Delivering the outbox to subscribers: at least once, in order per session, retried with
//! exponential backoff, and dead-lettered after the configured attempts. Each subscriber has
//! its own task and cursor, so a slow or dead subscriber delays only itself, never a turn; a
//! failing delivery holds back only its own session.
//!
//! A configured webhook's deliveries are signed with HMAC-SHA256 under its secret. A paired
//! subscriber's (`clade pair subscriber`) are signed with the gateway's key and go to `events`
//! under its endpoint, each pass only after it proved, by signing a fresh challenge, that it
//! holds the key it was paired with; one paired `--leased` receives only events under a live
//! lease, and its leases end when its deliveries are given up. A [`Sink`] (a chat channel's
//! outbound side) is handed each row to send its own way, with the same ordering, retries and
//! dead letters, and may ask for a longer wait (a platform's `retry_after`) or give up at once.

use std::sync::Arc;
use std::time::Duration;

use clade_store::{GivenUp, OutboxRow, Store};
use tokio::sync::Notify;

/// A subscriber with its credentials resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Its delivery cursor's name: a configured webhook's name, or `peer:<name>`.
    pub name: String,
    pub url: String,
    pub signing: Signing,
    /// Event types to deliver; empty means all.
    pub events: Vec<String>,
    /// The agents whose events it receives: agent patterns (`*`, `tenant/*`, `tenant/handle`,
    /// or a bare handle in the default tenant).
    pub agents: Vec<String>,
    pub max_attempts: u32,
    pub timeout: Duration,
}

/// How deliveries reach a subscriber, and how they are signed.
#[derive(Clone)]
pub enum Signing {
    /// A destination of the gateway's own (a chat channel), which sends each row its own way.
    Sink(Arc<dyn Sink>),
    /// A configured webhook: HMAC-SHA256 under its secret.
    Secret(Vec<u8>),
    /// A paired subscriber: signed with the gateway's key, after the subscriber proves its own.
    Paired {
        /// Its name as paired (its leases name it).
        peer: String,
        keys: clade_tools::remote::Peer,
        /// It receives only what a live lease gives it.
        leased: bool,
    },
}

impl PartialEq for Signing {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Signing::Secret(a), Signing::Secret(b)) => a == b,
            (Signing::Sink(a), Signing::Sink(b)) => Arc::ptr_eq(a, b),
            (
                Signing::Paired { peer: a, keys: ka, leased: la },
                Signing::Paired { peer: b, keys: kb, leased: lb },
            ) => {
                a == b
                    && la == lb
                    && ka.host_key == kb.host_key
                    && ka.identity.public() == kb.identity.public()
            }
            _ => false,
        }
    }
}

impl Eq for Signing {}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A destination that sends rows its own way: a chat platform's API, say.
pub trait Sink: Send + Sync {
    /// Sends `row`, or skips it (`Ok`) when it is none of this sink's.
    fn deliver<'a>(
        &'a self,
        row: &'a OutboxRow,
    ) -> futures::future::BoxFuture<'a, Result<(), Refused>>;
}

/// Why a delivery did not go through, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub reason: String,
    /// Wait at least this long before trying again (a `Retry-After`, Telegram's `retry_after`).
    pub retry_after: Option<Duration>,
    /// Trying again cannot help (the chat is gone, the bot was blocked): dead-letter it now.
    pub permanent: bool,
}

impl Refused {
    /// A failure worth trying again after the usual back-off.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry_after: None, permanent: false }
    }

    /// A failure no retry can mend.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry_after: None, permanent: true }
    }
}

impl From<String> for Refused {
    fn from(reason: String) -> Self {
        Self::transient(reason)
    }
}

impl From<clade_tools::remote::ClientError> for Refused {
    fn from(err: clade_tools::remote::ClientError) -> Self {
        Self::transient(err.to_string())
    }
}

const BATCH: u32 = 200;
/// The waits before a failed delivery is tried again: from 200 ms after the first failure,
/// doubling to a minute, or longer when the receiver asked (`Retry-After`).
const RETRY: clade_core::Backoff =
    clade_core::Backoff::new(Duration::from_millis(100), Duration::from_secs(60));

/// The most sessions whose agent is remembered before the memory starts afresh.
const REMEMBERED_SESSIONS: usize = 10_000;

/// Which rows a subscriber receives: its agent patterns, and for a leased subscriber its live
/// leases too. Tenant names and sessions' agents are read once each.
struct Audience {
    patterns: Vec<String>,
    /// Whether a pattern names single agents, so that a row's agent must be known.
    by_agent: bool,
    /// The peer whose leases gate delivery, for a leased subscriber.
    leased: Option<String>,
    leases: Vec<clade_store::peer_leases::LeaseRow>,
    tenants: std::collections::HashMap<clade_core::TenantId, Option<String>>,
    sessions:
        std::collections::HashMap<clade_core::SessionId, Option<(clade_core::AgentId, String)>>,
}

impl Audience {
    fn new(subscriber: &Subscriber) -> Self {
        let leased = match &subscriber.signing {
            Signing::Paired { peer, leased: true, .. } => Some(peer.clone()),
            _ => None,
        };
        Self {
            by_agent: subscriber.agents.iter().any(|p| p != "*" && !p.ends_with("/*")),
            patterns: subscriber.agents.clone(),
            leased,
            leases: Vec::new(),
            tenants: Default::default(),
            sessions: Default::default(),
        }
    }

    /// Reads the live leases again (ending those found expired). `Ok(false)` when a paired
    /// subscriber is no longer paired with the key it was started with: it is sent nothing more.
    async fn refresh(
        &mut self,
        store: &Store,
        subscriber: &Subscriber,
    ) -> Result<bool, clade_store::Error> {
        if let Signing::Paired { peer, keys, .. } = &subscriber.signing {
            let paired = store.peer(PEER_KIND, peer).await?;
            if paired.is_none_or(|p| p.key != keys.host_key) {
                return Ok(false);
            }
        }
        if let Some(peer) = &self.leased {
            self.leases = store.peers().leases_of(PEER_KIND, peer).await?;
        }
        Ok(true)
    }

    /// Whether `row` goes to this subscriber: a deleted tenant's does not. `Err` when the store
    /// could not say; the row waits for the next pass rather than being skipped.
    async fn covers(&mut self, store: &Store, row: &OutboxRow) -> Result<bool, clade_store::Error> {
        let tenant = match self.tenants.get(&row.tenant_id) {
            Some(name) => name.clone(),
            None => {
                let name = match store.tenants().by_id(row.tenant_id).await {
                    Ok(t) => Some(t.name.as_str().to_owned()),
                    Err(clade_store::Error::TenantNotFound(_)) => None,
                    Err(err) => return Err(err),
                };
                self.tenants.insert(row.tenant_id, name.clone());
                name
            }
        };
        let Some(tenant) = tenant else { return Ok(false) };
        let agent = if self.by_agent || self.leased.is_some() {
            self.agent_of(store, row).await?
        } else {
            None
        };
        let handle = agent.as_ref().map(|(_, handle)| handle.as_str());
        let standing = self.patterns.iter().any(|pattern| match handle {
            Some(handle) => clade_config::agent_pattern_covers(pattern, &tenant, handle),
            // An event of no session is the tenant's: only a tenant-wide pattern takes it.
            None => pattern == "*" || pattern.strip_suffix("/*") == Some(tenant.as_str()),
        });
        if !standing || self.leased.is_none() {
            return Ok(standing);
        }
        let agent = agent.map(|(id, _)| id);
        Ok(self
            .leases
            .iter()
            .any(|l| l.covers(row.tenant_id, agent, row.session_id, row.created_at)))
    }

    async fn agent_of(
        &mut self,
        store: &Store,
        row: &OutboxRow,
    ) -> Result<Option<(clade_core::AgentId, String)>, clade_store::Error> {
        let Some(session) = row.session_id else { return Ok(None) };
        if let Some(known) = self.sessions.get(&session) {
            return Ok(known.clone());
        }
        let agent = match store.sessions(row.tenant_id).get(session).await {
            Ok(found) => match store.agents(row.tenant_id).by_id(found.agent_id).await {
                Ok(agent) => Some((agent.id, agent.handle.as_str().to_owned())),
                Err(clade_store::Error::AgentNotFound(_)) => None,
                Err(err) => return Err(err),
            },
            Err(clade_store::Error::SessionNotFound(_)) => None,
            Err(err) => return Err(err),
        };
        if self.sessions.len() >= REMEMBERED_SESSIONS {
            self.sessions.clear();
        }
        self.sessions.insert(session, agent.clone());
        Ok(agent)
    }
}

/// The kind of peer a paired subscriber is, as the store keeps it.
pub const PEER_KIND: &str = clade_store::peers::SUBSCRIBER;

/// Leases `scope` of `tenant` to the paired component `kind`/`peer` for `ttl` (see
/// `clade_store::peer_leases`): a subscriber ([`PEER_KIND`]) is sent the scope's events; an
/// operator paired `leased` (`clade_store::peers::OPERATOR`) may act on the scope with its key.
/// A component whose agent patterns do not cover the scope, or an operator paired without
/// `leased`, is refused as if it were not paired: a tenant learns nothing of components that
/// do not serve it.
pub async fn grant_lease(
    store: &clade_store::TenantStore,
    tenant: &clade_core::Tenant,
    kind: &str,
    peer: &str,
    scope: clade_store::peer_leases::LeaseScope,
    ttl: Duration,
) -> Result<clade_store::peer_leases::LeaseRow, clade_store::Error> {
    use clade_store::peer_leases::LeaseScope;
    let name = tenant.name.as_str();
    let handle = match scope {
        LeaseScope::Tenant => None,
        LeaseScope::Agent(id) => Some(store.agents().by_id(id).await?.handle),
        LeaseScope::Session(id) => {
            let session = store.sessions().get(id).await?;
            Some(store.agents().by_id(session.agent_id).await?.handle)
        }
    };
    let leasable = |paired: &clade_store::PeerRow| {
        (kind == PEER_KIND || (kind == clade_store::peers::OPERATOR && paired.leased))
            && paired.kind == kind
    };
    let serves = store.peer(kind, peer).await?.filter(leasable).is_some_and(|paired| {
        paired.agents.iter().any(|pattern| match &handle {
            Some(handle) => clade_config::agent_pattern_covers(pattern, name, handle.as_str()),
            None => pattern == "*" || pattern.strip_suffix("/*") == Some(name),
        })
    });
    if !serves {
        let what = match scope {
            LeaseScope::Tenant => "this tenant's events".to_owned(),
            LeaseScope::Agent(_) | LeaseScope::Session(_) => {
                format!("agent {}'s events", handle.map(|h| h.to_string()).unwrap_or_default())
            }
        };
        return Err(clade_store::Error::LeaseeNotFound {
            kind: kind.to_owned(),
            peer: peer.to_owned(),
            what,
        });
    }
    store.leases().grant(kind, peer, scope, ttl).await
}

/// The body a subscriber receives for an outbox row: the protocol's
/// [`clade_protocol::WebhookEvent`] (the envelope, the event's `type` and its `data`), its data
/// read as the event's own type. A row whose data does not read so (only a damaged store
/// holds one: the outbox is written from these types) is an error no retry can mend.
pub fn body(row: &OutboxRow) -> Result<clade_protocol::WebhookEvent, Refused> {
    let unreadable = |e: serde_json::Error| {
        Refused::permanent(format!(
            "outbox row {} does not read as a {} event: {e}",
            row.id,
            row.kind.as_str()
        ))
    };
    let data = serde_json::from_str(&row.data).map_err(unreadable)?;
    Ok(clade_protocol::WebhookEvent {
        id: row.event_id.clone(),
        seq: row.id,
        tenant: row.tenant_id.to_string(),
        session: row.session_id.map(|s| s.to_string()),
        turn: row.turn_id.map(|t| t.to_string()),
        created_at: row.created_at.as_millis(),
        event: clade_protocol::LifecycleEvent::from_parts(row.kind, data).map_err(unreadable)?,
    })
}

/// `sha256=<hex>`: HMAC-SHA256 (RFC 2104) of the body under the subscriber's secret.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    crate::signing::clade_signature(secret, body)
}

/// Proves (when paired) and posts one row to the subscriber; `Err` says why it failed.
pub async fn deliver(
    client: &reqwest::Client,
    subscriber: &Subscriber,
    row: &OutboxRow,
    now: clade_core::Timestamp,
) -> Result<(), Refused> {
    let courier = Courier::new(subscriber.clone(), client.clone())?;
    courier.prove().await?;
    courier.deliver(row, now).await
}

/// How deliveries reach one subscriber.
struct Courier {
    subscriber: Subscriber,
    http: reqwest::Client,
    /// A paired subscriber's client, which signs each request.
    paired: Option<clade_tools::remote::Client>,
}

impl Courier {
    fn new(subscriber: Subscriber, http: reqwest::Client) -> Result<Self, Refused> {
        let paired = match &subscriber.signing {
            Signing::Secret(_) | Signing::Sink(_) => None,
            Signing::Paired { keys, .. } => Some(
                clade_tools::remote::Client::new(&subscriber.url, None)?
                    .with_peer(Some(keys.clone())),
            ),
        };
        Ok(Self { subscriber, http, paired })
    }

    /// A paired subscriber must sign a fresh challenge with the key it was paired with before
    /// it is sent anything: an impostor at its address receives nothing.
    async fn prove(&self) -> Result<(), Refused> {
        let Some(client) = &self.paired else { return Ok(()) };
        match client.health_proved(self.subscriber.timeout).await? {
            true => Ok(()),
            false => Err(Refused::transient(KEY_NOT_PROVED)),
        }
    }

    /// Posts `row`, signed as of `now`: a retry is signed anew, so its Standard Webhooks
    /// timestamp is never stale.
    async fn deliver(&self, row: &OutboxRow, now: clade_core::Timestamp) -> Result<(), Refused> {
        let payload = serde_json::to_string(&body(row)?)
            .map_err(|e| Refused::permanent(format!("cannot write outbox row {}: {e}", row.id)))?;
        let request = match (&self.subscriber.signing, &self.paired) {
            (Signing::Sink(sink), _) => return sink.deliver(row).await,
            (Signing::Secret(secret), _) => {
                let sent_at = now.as_millis().div_euclid(1000);
                let standard = crate::signing::StandardKey::new(secret)
                    .map(|key| key.sign(&row.event_id, sent_at, payload.as_bytes()))
                    .map_err(|err| format!("cannot sign: {err}"))?;
                self.http
                    .post(&self.subscriber.url)
                    .header("content-type", "application/json")
                    .header("x-clade-signature", signature(secret, payload.as_bytes()))
                    .header("webhook-id", &row.event_id)
                    .header("webhook-timestamp", sent_at.to_string())
                    .header("webhook-signature", standard)
                    .body(payload)
            }
            (Signing::Paired { .. }, Some(client)) => client
                .signed(reqwest::Method::POST, "events", payload.into_bytes())
                .map_err(|e| Refused::transient(e.to_string()))?,
            (Signing::Paired { .. }, None) => {
                return Err(Refused::transient("no client for a paired subscriber"));
            }
        };
        let response = request
            .timeout(self.subscriber.timeout)
            .header("idempotency-key", &row.event_id)
            .header("x-clade-event-id", &row.event_id)
            .header("x-clade-event-type", row.kind.as_str())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let retry_after = clade_model::error::parse_retry_after(response.headers());
            Err(Refused {
                reason: format!("subscriber answered HTTP {}", status.as_u16()),
                retry_after,
                permanent: false,
            })
        }
    }
}

/// What a paired subscriber that did not sign the challenge is told in the log and the audit.
const KEY_NOT_PROVED: &str = "did not sign the challenge with the key it was paired with (replaced, or its identity changed: pair it again if that was meant)";

/// Starts one delivery task per subscriber.
#[must_use = "dropping the dispatchers stops them"]
pub fn spawn(store: Store, subscribers: Vec<Subscriber>, signal: Arc<Notify>) -> Dispatchers {
    Dispatchers::new(store, subscribers, signal, true)
}

/// The dispatchers of `subscribers`, delivering nothing until [`Dispatchers::deliver`] says so.
#[must_use = "dropping the dispatchers stops them"]
pub fn idle(store: Store, subscribers: Vec<Subscriber>, signal: Arc<Notify>) -> Dispatchers {
    Dispatchers::new(store, subscribers, signal, false)
}

/// The running dispatchers, one per subscriber, which a new configuration replaces.
pub struct Dispatchers {
    store: Store,
    signal: Arc<Notify>,
    client: reqwest::Client,
    running: std::sync::Mutex<Running>,
}

/// The subscribers, and each one's task while this process delivers.
struct Running {
    /// Whether this process delivers now (a cluster's node delivers while it holds the outbox).
    delivering: bool,
    tasks: Vec<(Subscriber, Option<tokio::task::JoinHandle<()>>)>,
}

impl Dispatchers {
    fn new(
        store: Store,
        subscribers: Vec<Subscriber>,
        signal: Arc<Notify>,
        delivering: bool,
    ) -> Self {
        let dispatchers = Dispatchers {
            store,
            signal,
            client: reqwest::Client::new(),
            running: std::sync::Mutex::new(Running { delivering, tasks: Vec::new() }),
        };
        dispatchers.replace(|_| true, subscribers);
        dispatchers
    }

    /// Makes the configured webhooks' dispatchers `subscribers`: an unchanged one keeps
    /// running, a changed or removed one stops (delivery is at least once from its durable
    /// cursor, so what it was sending is sent again by its successor), and a new or changed one
    /// starts. Paired subscribers are left as they are.
    pub fn reload(&self, subscribers: Vec<Subscriber>) {
        self.replace(|s| matches!(s.signing, Signing::Secret(_)), subscribers);
    }

    /// The same for paired subscribers, leaving configured webhooks as they are.
    pub fn reload_paired(&self, subscribers: Vec<Subscriber>) {
        self.replace(|s| matches!(s.signing, Signing::Paired { .. }), subscribers);
    }

    /// Starts or stops delivering to every subscriber, keeping them: a cluster's node delivers
    /// only while it holds the outbox, and each subscriber's durable cursor carries delivery
    /// over from one node to the next (at least once).
    pub fn deliver(&self, delivering: bool) {
        let mut running = self.lock();
        running.delivering = delivering;
        for (subscriber, task) in &mut running.tasks {
            match (delivering, task.take()) {
                (true, Some(alive)) if !alive.is_finished() => *task = Some(alive),
                (true, _) => *task = Some(self.start(subscriber)),
                (false, Some(stopped)) => stopped.abort(),
                (false, None) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, subscriber: &Subscriber) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run(
            self.store.clone(),
            self.client.clone(),
            subscriber.clone(),
            self.signal.clone(),
        ))
    }

    fn replace(&self, in_group: impl Fn(&Subscriber) -> bool, subscribers: Vec<Subscriber>) {
        let mut running = self.lock();
        let delivering = running.delivering;
        let (kept, stopped): (Vec<_>, Vec<_>) = running.tasks.drain(..).partition(|(old, task)| {
            let alive = task.as_ref().is_some_and(|t| !t.is_finished()) || !delivering;
            !in_group(old) || (subscribers.contains(old) && alive)
        });
        for (old, task) in stopped {
            if let Some(task) = task {
                task.abort();
            }
            tracing::info!(subscriber = %old.name, "subscriber stopped: its configuration or pairing changed");
        }
        running.tasks = kept;
        for subscriber in subscribers {
            if running.tasks.iter().any(|(old, _)| *old == subscriber) {
                continue;
            }
            let task = delivering.then(|| self.start(&subscriber));
            running.tasks.push((subscriber, task));
        }
    }
}

impl Drop for Dispatchers {
    fn drop(&mut self) {
        for (_, task) in self.lock().tasks.drain(..) {
            if let Some(task) = task {
                task.abort();
            }
        }
    }
}

/// A session whose oldest undelivered row failed: its later rows wait behind it.
struct Blocked {
    row: i64,
    attempts: i64,
    retry_at: clade_core::Timestamp,
}

/// How many pages past the cursor one pass may read, so a long-blocked session cannot starve
/// the others of delivery.
const MAX_PAGES: usize = 20;

/// Delivers in order per session: a failing row holds back only later rows of its own session
/// (retried with exponential backoff), while other sessions' rows go on. The durable cursor is
/// the low watermark below which everything was delivered or dead-lettered; rows delivered
/// beyond it are remembered in memory and, after a restart, delivered again (at least once;
/// receivers drop repeats by the idempotency key).
async fn run(store: Store, client: reqwest::Client, subscriber: Subscriber, signal: Arc<Notify>) {
    // Delivery reads the outbox of every tenant the subscriber names.
    let store = store.system();
    let mut delivered_beyond: std::collections::BTreeSet<i64> = Default::default();
    let mut blocked: std::collections::HashMap<Option<clade_core::SessionId>, Blocked> =
        Default::default();
    let mut restored = false;
    let mut audience = Audience::new(&subscriber);
    let courier = match Courier::new(subscriber.clone(), client) {
        Ok(courier) => courier,
        Err(err) => {
            tracing::error!(subscriber = %subscriber.name, error = %err, "subscriber left out: it cannot be reached");
            return;
        }
    };
    // Whether the paired subscriber's last failure to prove its key was audited already.
    let mut refusal_audited = false;
    let clock = store.clock().clone();
    loop {
        match audience.refresh(&store, &subscriber).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(subscriber = %subscriber.name, "subscriber unpaired (or paired again with another key): deliveries to it stop");
                return;
            }
            Err(err) => {
                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read the subscriber's pairing and leases");
                clock.sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // Proved once a pass, before the pass's first delivery.
        let mut proof: Option<Result<(), Refused>> = None;
        let (mut cursor, saved_attempts) = match store.deliveries().cursor(&subscriber.name).await {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read the delivery cursor");
                clock.sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let notified = signal.notified();
        let mut rows = Vec::new();
        let mut after = cursor;
        let mut read_failed = false;
        for _ in 0..MAX_PAGES {
            match store.outbox_after(after, BATCH).await {
                Ok(page) => {
                    let full = page.len() == BATCH as usize;
                    after = page.last().map_or(after, |r| r.id);
                    rows.extend(page);
                    // Read further only while the pages so far are all held back.
                    let now = clock.now();
                    let pending = rows
                        .iter()
                        .any(|r| !delivered_beyond.contains(&r.id) && !is_held(&blocked, r, now));
                    if !full || pending {
                        break;
                    }
                }
                Err(err) => {
                    tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read the outbox");
                    read_failed = true;
                    break;
                }
            }
        }
        if read_failed {
            clock.sleep(Duration::from_secs(1)).await;
            continue;
        }
        if rows.is_empty() {
            // Wake on new rows, and poll now and then in case another process wrote them.
            nap(clock.as_ref(), Duration::from_secs(1), notified).await;
            continue;
        }
        let mut progressed = false;
        for row in &rows {
            if delivered_beyond.contains(&row.id) {
                continue;
            }
            let unwanted_kind = !subscriber.events.is_empty()
                && !subscriber.events.iter().any(|e| e == row.kind.as_str());
            let wanted = match audience.covers(&store, row).await {
                Ok(covered) => covered,
                Err(err) => {
                    tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read whose event a row is");
                    break;
                }
            };
            if unwanted_kind || !wanted {
                delivered_beyond.insert(row.id);
                progressed = true;
                continue;
            }
            let now = clock.now();
            if is_held(&blocked, row, now) {
                continue;
            }
            if proof.is_none() {
                let proved = courier.prove().await;
                match &proved {
                    Err(refused) if refused.reason == KEY_NOT_PROVED && !refusal_audited => {
                        tracing::warn!(subscriber = %subscriber.name, "paired subscriber {KEY_NOT_PROVED}: nothing is sent to it");
                        if let Signing::Paired { peer, .. } = &subscriber.signing {
                            refusal_audited = store
                                .peers()
                                .audit_refused(PEER_KIND, peer, KEY_NOT_PROVED)
                                .await
                                .is_ok();
                        }
                    }
                    Ok(()) => refusal_audited = false,
                    Err(_) => {}
                }
                proof = Some(proved);
            }
            let sent = match &proof {
                Some(Err(refused)) => Err(refused.clone()),
                _ => courier.deliver(row, clock.now()).await,
            };
            match sent {
                Ok(()) => {
                    crate::failpoints::hit("mid_outbox_publish");
                    let lag = crate::telemetry::between(row.created_at, clock.now());
                    crate::telemetry::outbox_delivered(&subscriber.name, lag);
                    delivered_beyond.insert(row.id);
                    blocked.remove(&row.session_id);
                    progressed = true;
                }
                Err(refused) => {
                    let Refused { reason, retry_after, permanent } = refused;
                    let mut attempts = blocked.get(&row.session_id).map_or(0, |b| b.attempts) + 1;
                    // The attempts of the cursor's row survive a restart.
                    if !restored && row.id == rows[0].id {
                        attempts = attempts.max(saved_attempts + 1);
                        restored = true;
                    }
                    if permanent || attempts >= i64::from(subscriber.max_attempts) {
                        tracing::warn!(subscriber = %subscriber.name, outbox = row.id, %reason, "dead-lettering event");
                        let dead = Some(GivenUp { outbox_id: row.id, reason, attempts });
                        match store.deliveries().set_cursor(&subscriber.name, cursor, 0, dead).await
                        {
                            Ok(()) => {
                                delivered_beyond.insert(row.id);
                                blocked.remove(&row.session_id);
                                progressed = true;
                                end_leases(&store, &subscriber).await;
                            }
                            Err(err) => {
                                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot dead-letter")
                            }
                        }
                    } else {
                        let failures =
                            u32::try_from(attempts.saturating_add(1)).unwrap_or(u32::MAX);
                        let backoff = RETRY.after(failures).max(retry_after.unwrap_or_default());
                        tracing::debug!(subscriber = %subscriber.name, attempts, ?backoff, %reason, "delivery failed; backing off");
                        blocked.insert(
                            row.session_id,
                            Blocked { row: row.id, attempts, retry_at: now.plus(backoff) },
                        );
                    }
                }
            }
        }
        // Advance the low watermark over the delivered prefix.
        for row in &rows {
            if !delivered_beyond.remove(&row.id) {
                break;
            }
            cursor = row.id;
        }
        let head_attempts = rows
            .iter()
            .find(|r| r.id > cursor)
            .and_then(|r| blocked.get(&r.session_id).filter(|b| b.row == r.id))
            .map_or(0, |b| b.attempts);
        if let Err(err) =
            store.deliveries().set_cursor(&subscriber.name, cursor, head_attempts, None).await
        {
            tracing::error!(subscriber = %subscriber.name, error = %err, "cannot save the delivery cursor");
        }
        if !progressed {
            // Everything readable waits for a retry: sleep until the first one (or new rows).
            let next = blocked.values().map(|b| b.retry_at).min();
            let wait = next.map_or(Duration::from_secs(1), |at| {
                let left = at.as_millis().saturating_sub(clock.now().as_millis()).max(0);
                Duration::from_millis(left.unsigned_abs()).min(Duration::from_secs(1))
            });
            nap(clock.as_ref(), wait, notified).await;
        }
    }
}

/// A paired subscriber that stopped answering loses its leases: whoever granted one grants it
/// again once it is back.
async fn end_leases(store: &Store, subscriber: &Subscriber) {
    if let Signing::Paired { peer, .. } = &subscriber.signing {
        match store
            .peers()
            .end_leases_of(PEER_KIND, peer, "disconnected: its deliveries were given up")
            .await
        {
            Ok(0) => {}
            Ok(ended) => {
                tracing::warn!(subscriber = %subscriber.name, ended, "leases of a subscriber that stopped answering ended")
            }
            Err(err) => {
                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot end the leases of a subscriber that stopped answering")
            }
        }
    }
}

/// Whether `row` cannot be sent now: behind a failing row of its session, or that row itself
/// before its retry time.
fn is_held(
    blocked: &std::collections::HashMap<Option<clade_core::SessionId>, Blocked>,
    row: &OutboxRow,
    now: clade_core::Timestamp,
) -> bool {
    blocked.get(&row.session_id).is_some_and(|b| b.row != row.id || b.retry_at > now)
}

/// Waits until `notified` (new rows) or for `wait` on `clock`, whichever comes first.
async fn nap(clock: &dyn clade_core::Clock, wait: Duration, notified: impl Future<Output = ()>) {
    tokio::select! {
        () = notified => {}
        () = clock.sleep(wait) => {}
    }
}

#[cfg(test)]
mod tests {
    use clade_core::{EventKind, SessionId, TenantId, Timestamp};
    use clade_store::OutboxRow;

    use super::body;

    fn row(kind: EventKind, data: &str) -> OutboxRow {
        let now = Timestamp::from_millis(1_700_000_000_000);
        OutboxRow {
            id: 7,
            event_id: "evt_7".into(),
            tenant_id: TenantId::generate(now),
            session_id: Some(SessionId::generate(now)),
            turn_id: None,
            kind,
            data: data.into(),
            created_at: now,
        }
    }

    /// A subscriber reads the protocol's webhook event; a row whose data does not fit its kind
    /// (only a damaged store holds one) is refused for good, naming the row, not sent as null.
    #[test]
    fn a_body_is_the_protocols_webhook_event_and_a_damaged_row_is_refused() {
        let good = row(EventKind::TextDelta, r#"{"turn":"t","text":"hi"}"#);
        let sent = serde_json::to_value(body(&good).unwrap()).unwrap();
        assert_eq!(sent["type"], EventKind::TextDelta.as_str(), "{sent}");
        assert_eq!(sent["data"]["text"], "hi", "{sent}");
        assert_eq!((sent["id"].as_str(), sent["seq"].as_i64()), (Some("evt_7"), Some(7)));
        let read: clade_protocol::WebhookEvent = serde_json::from_value(sent).unwrap();
        assert_eq!(read.event.kind(), EventKind::TextDelta);

        for data in ["{}", "not json", r#"{"turn":"t"}"#] {
            let refused = body(&row(EventKind::TextDelta, data)).unwrap_err();
            assert!(refused.permanent, "{data}: {refused:?}");
            assert!(refused.reason.contains("outbox row 7"), "{data}: {refused:?}");
            assert!(refused.reason.contains(EventKind::TextDelta.as_str()), "{data}: {refused:?}");
        }
    }
}
