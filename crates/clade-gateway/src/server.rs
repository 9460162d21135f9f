//! The accept loop: every connection under a cap kept below the descriptor limit, with a
//! deadline for its first request and for each request's headers, and a least rate for each
//! request's body, so idle, half-open or trickling sockets cannot starve the clients that do
//! send requests.
//!
//! At the cap, a connection is closed to make room: the oldest that has sent no request for
//! [`SILENT_GRACE`] since it connected, else the oldest stranger (a connection whose requests
//! never passed the token check) of the source address holding the most strangers' places, so
//! a flood of strangers evicts itself and not a client arriving from elsewhere, however fast it
//! reconnects; connections that authenticated keep their places unless one tenant holds the
//! most of them. A body declared larger than `max_body_bytes` is
//! refused (413) before a byte of it is read.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use clade_core::TenantId;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;

/// How connections are limited.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// For a connection's first request, and for each request's headers (and so for an idle
    /// HTTP/1 keep-alive connection); also the grace before a body's least rate counts.
    pub header_timeout: Duration,
    /// A request declaring a longer body (`Content-Length`) is refused at once.
    pub max_body_bytes: Option<u64>,
    /// Bytes a second a request's body must average once `header_timeout` has passed: a
    /// slower one fails (the handler sees a body error) and its connection closes.
    pub min_body_rate: u64,
}

impl ConnectionLimits {
    /// Limits with no body cap of their own and the default least body rate.
    pub fn new(max_connections: usize, header_timeout: Duration) -> Self {
        Self { max_connections, header_timeout, max_body_bytes: None, min_body_rate: MIN_BODY_RATE }
    }
}

/// The default least rate of a request's body, in bytes a second.
pub(crate) const MIN_BODY_RATE: u64 = 1024;

/// How long a connection may stay silent after it connects before it is the first to make room
/// at the cap: a client sends its request at once, an idle socket never does.
pub(crate) const SILENT_GRACE: Duration = Duration::from_secs(1);

/// How much more than `max_body_bytes` a refused body may still send while its answer goes out.
const LINGER_FACTOR: u64 = 4;

/// Reads and drops up to `most` bytes of a refused request's body (paced: a trickle ends it).
async fn linger(body: axum::body::Body, most: u64) {
    use futures::StreamExt as _;
    let mut data = body.into_data_stream();
    let mut read = 0u64;
    while read < most {
        match data.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => break,
        }
    }
}

/// Marks the connection a request came on as authenticated, and by which tenant: at the cap
/// its place is kept, unless its tenant holds more places than any other. The token check
/// ([`crate::auth`]) sets it.
#[derive(Clone)]
pub(crate) struct ConnectionTrust {
    trusted: Arc<AtomicBool>,
    source: IpAddr,
    holder: Arc<std::sync::OnceLock<Holder>>,
    places: Places,
}

/// Whose a connection is: the tenant and the credential (its fingerprint) of the first request
/// on it that passed the token check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) tenant: TenantId,
    pub(crate) credential: u64,
}

/// The most connections of one listener a tenant, and one of its credentials, may hold.
#[derive(Clone, Copy, Default)]
pub(crate) struct ConnectionCaps {
    pub(crate) tenant: Option<usize>,
    pub(crate) credential: Option<usize>,
}

/// Which cap a connection would pass, and how many the tenant or credential holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OverCap {
    Tenant(usize),
    Credential(usize),
}

impl ConnectionTrust {
    /// Counts the connection as `holder`'s (the first to authenticate on it is the one it
    /// counts for), unless its tenant or its credential already holds as many connections of
    /// this listener as `caps` allow: then nothing is marked.
    pub(crate) fn set(&self, holder: Holder, caps: ConnectionCaps) -> Result<(), OverCap> {
        if self.holder.get().is_some() {
            return Ok(());
        }
        let mut registry = self.places.0.lock().unwrap_or_else(|e| e.into_inner());
        let held = |counts: &dyn Fn(&Holder) -> bool| {
            registry.open.values().filter(|o| o.holder.get().is_some_and(counts)).count()
        };
        if let Some(cap) = caps.tenant {
            let held = held(&|h| h.tenant == holder.tenant);
            if held >= cap {
                return Err(OverCap::Tenant(held));
            }
        }
        if let Some(cap) = caps.credential {
            let held = held(&|h| *h == holder);
            if held >= cap {
                return Err(OverCap::Credential(held));
            }
        }
        let _ = self.holder.set(holder);
        if !self.trusted.swap(true, Ordering::Relaxed) {
            registry.strangers.remove(self.source);
        }
        Ok(())
    }
}

/// One open connection, as the accept loop sees it.
struct Open {
    accepted: tokio::time::Instant,
    /// Where it came from ([`source_of`]).
    source: IpAddr,
    /// It has sent a request.
    requested: Arc<AtomicBool>,
    /// A request on it passed the token check: evicted to make room only when its tenant
    /// holds the most places.
    trusted: Arc<AtomicBool>,
    holder: Arc<std::sync::OnceLock<Holder>>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    /// By accept order, oldest first.
    open: BTreeMap<u64, Open>,
    strangers: Strangers,
}

impl Registry {
    /// Closes connection `id`, if it is still open.
    fn evict(&mut self, id: u64) {
        if let Some(evicted) = self.open.remove(&id) {
            if !evicted.trusted.load(Ordering::Relaxed) {
                self.strangers.remove(evicted.source);
            }
            evicted.close.notify_one();
        }
    }

    /// The oldest stranger of the source holding the most strangers' places.
    fn greediest_stranger(&self) -> Option<u64> {
        let source = self.strangers.greediest()?;
        self.open
            .iter()
            .find(|(_, o)| o.source == source && !o.trusted.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
    }
}

/// How many places the strangers of each source address hold.
#[derive(Default)]
struct Strangers(HashMap<IpAddr, usize>);

impl Strangers {
    fn add(&mut self, source: IpAddr) {
        *self.0.entry(source).or_default() += 1;
    }

    fn remove(&mut self, source: IpAddr) {
        if let Some(held) = self.0.get_mut(&source) {
            *held -= 1;
            if *held == 0 {
                self.0.remove(&source);
            }
        }
    }

    fn greediest(&self) -> Option<IpAddr> {
        self.0.iter().max_by_key(|(_, held)| **held).map(|(source, _)| *source)
    }
}

/// The address a connection is counted under: an IPv4 address (also written as IPv6), or an
/// IPv6 address's /64, which one host or site usually holds whole.
fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The places of one listener's connections (the HTTP server's, the gRPC server's), given out
/// by [`Places::admit`].
#[derive(Clone, Default)]
pub(crate) struct Places(Arc<Mutex<Registry>>);

/// One connection's place, given back when dropped. What its connection tells the accept
/// loop goes through it; [`Place::evicted`] resolves when the place is taken for a newcomer.
pub(crate) struct Place {
    id: u64,
    places: Places,
    requested: Arc<AtomicBool>,
    trust: ConnectionTrust,
    close: Arc<Notify>,
}

impl Place {
    /// Its connection has sent a request (gRPC's connections say so; HTTP's are read here).
    #[cfg(any(feature = "grpc", test))]
    pub(crate) fn requested(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }

    pub(crate) fn has_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// For the token check to mark the connection authenticated.
    pub(crate) fn trust(&self) -> ConnectionTrust {
        self.trust.clone()
    }

    /// Resolves once the place was taken from this connection: close it.
    pub(crate) fn evicted(&self) -> tokio::sync::futures::OwnedNotified {
        self.close.clone().notified_owned()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.places.0.lock()
            && let Some(open) = registry.open.remove(&self.id)
            && !open.trusted.load(Ordering::Relaxed)
        {
            registry.strangers.remove(open.source);
        }
    }
}

impl Places {
    /// Takes a place for a connection from `peer` accepted `now`. At the cap `max` it evicts
    /// the oldest that has been silent for [`SILENT_GRACE`], else the oldest stranger of the
    /// source holding the most strangers' places (a client arriving from elsewhere, about to
    /// send its token, is not the one to go), else the oldest connection of the tenant that
    /// holds the most places: one tenant's connections, however well authenticated, cannot
    /// keep every other tenant out.
    pub(crate) fn admit(
        &self,
        max: usize,
        now: tokio::time::Instant,
        peer: IpAddr,
    ) -> Option<Place> {
        let mut registry = self.0.lock().ok()?;
        if registry.open.len() >= max {
            let idle = registry.open.iter().find(|(_, o)| {
                !o.requested.load(Ordering::Relaxed)
                    && now.saturating_duration_since(o.accepted) >= SILENT_GRACE
            });
            let oldest = idle
                .map(|(id, _)| *id)
                .or_else(|| registry.greediest_stranger())
                .or_else(|| greediest(&registry))?;
            registry.evict(oldest);
        }
        let source = source_of(peer);
        let id = registry.next;
        registry.next += 1;
        let open = Open {
            accepted: now,
            source,
            requested: Arc::new(AtomicBool::new(false)),
            trusted: Arc::new(AtomicBool::new(false)),
            holder: Arc::new(std::sync::OnceLock::new()),
            close: Arc::new(Notify::new()),
        };
        let place = Place {
            id,
            places: self.clone(),
            requested: open.requested.clone(),
            trust: ConnectionTrust {
                trusted: open.trusted.clone(),
                source,
                holder: open.holder.clone(),
                places: self.clone(),
            },
            close: open.close.clone(),
        };
        registry.open.insert(id, open);
        registry.strangers.add(source);
        Some(place)
    }
}

/// Connections the kernel holds for the accept loop: when strangers reconnect faster than it
/// takes them, a short queue drops the SYNs of everyone alike (a client then waits a second to
/// retry); the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `address` (`host:port`), with a queue of [`LISTEN_BACKLOG`] connections.
pub async fn bind(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut failed = None;
    for address in tokio::net::lookup_host(address).await? {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted server may take its port back at once.
        socket.set_reuseaddr(true)?;
        match socket.bind(address).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(err) => failed = Some(err),
        }
    }
    Err(failed.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the address names no host")
    }))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let places = Places::default();
    let stopping = Arc::new(Notify::new());
    tokio::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    #[allow(clippy::disallowed_methods)] // Pacing real I/O, not domain time.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        #[allow(clippy::disallowed_methods)] // How long a socket has been silent: real I/O time.
        let Some(place) =
            places.admit(limits.max_connections, tokio::time::Instant::now(), peer.ip())
        else {
            tracing::debug!(%peer, "connection refused: at the connection limit");
            drop(tcp);
            continue;
        };
        // Streamed events (SSE, WebSocket) are small writes: without TCP_NODELAY, Nagle holds
        // each one back until the client has acknowledged the one before.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
        let (stopping, app) = (stopping.clone(), app.clone());
        tasks.spawn(async move {
            serve_connection(tcp, peer, app, &place, &stopping, limits).await;
        });
    }
    // Graceful: no new connections; open ones finish their requests and close.
    stopping.notify_waiters();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The oldest connection of the tenant that holds the most places (the first such tenant in
/// accept order on a tie).
fn greediest(registry: &Registry) -> Option<u64> {
    let mut held: HashMap<TenantId, usize> = HashMap::new();
    for open in registry.open.values() {
        if let Some(holder) = open.holder.get() {
            *held.entry(holder.tenant).or_default() += 1;
        }
    }
    let most = held.values().copied().max()?;
    registry
        .open
        .iter()
        .find(|(_, o)| o.holder.get().is_some_and(|h| held.get(&h.tenant) == Some(&most)))
        .map(|(id, _)| *id)
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    place: &Place,
    stopping: &Notify,
    limits: ConnectionLimits,
) {
    let trust = place.trust();
    let seen = place.requested.clone();
    let service = hyper::service::service_fn(
        move |request: hyper::Request<hyper::body::Incoming>| {
            seen.store(true, Ordering::Relaxed);
            let mut app = app.clone();
            let declared = request
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let too_long = limits.max_body_bytes.zip(declared).filter(|(max, len)| len > max);
            let mut request = request.map(|body| {
                axum::body::Body::new(crate::paced::Paced::new(
                    body,
                    limits.header_timeout,
                    limits.min_body_rate,
                ))
            });
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            request.extensions_mut().insert(trust.clone());
            async move {
                use axum::response::IntoResponse as _;
                if let Some((max, declared)) = too_long {
                    let message = format!(
                        "the request declares a body of {declared} bytes; at most {max} are read (server.max_body_bytes)"
                    );
                    let error =
                        crate::error::ApiError::new(crate::error::Code::PayloadTooLarge, message);
                    // A lingering close: what the client goes on sending is read and dropped
                    // (a bounded amount, at the least rate) while the answer goes out, so a
                    // client still writing is not reset before it reads the answer. Then the
                    // body is dropped and hyper closes the connection.
                    let body = request.into_body();
                    tokio::spawn(linger(body, max.saturating_mul(LINGER_FACTOR).min(declared)));
                    return Ok(error.into_response());
                }
                use tower::Service as _;
                app.call(request).await
            }
        },
    );
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(connection);
    #[allow(clippy::disallowed_methods)] // An I/O deadline on a socket, not domain time.
    let first_request = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_request);
    let stop = stopping.notified();
    tokio::pin!(stop);
    // A first request that comes after its deadline finds the connection closed; until the
    // deadline the `if` is checked only when it fires.
    let unproven_deadline = async {
        first_request.as_mut().await;
        if place.has_requested() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        () = place.evicted() => {}
        () = unproven_deadline => {}
        () = &mut stop => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(30), connection.as_mut()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(tenant: u8) -> Holder {
        Holder { tenant: TenantId::from_bytes([tenant; 16]), credential: 1 }
    }

    fn evicted(place: &Place) -> bool {
        use futures::FutureExt as _;
        place.evicted().now_or_never().is_some()
    }

    /// Who makes room at the cap: a socket silent past the grace first; then the oldest
    /// stranger of the address holding the most strangers' places, so that strangers
    /// reconnecting as fast as they can evict each other and not a client arriving from
    /// elsewhere; then the greediest tenant's oldest.
    #[test]
    fn at_the_cap_idle_sockets_go_first_then_the_greediest_sources_strangers_then_tenants() {
        #[allow(clippy::disallowed_methods)] // A fixed origin for instants the test makes up.
        let start = tokio::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let (attacker, client, other) = (
            IpAddr::from([192, 0, 2, 1]),
            IpAddr::from([198, 51, 100, 7]),
            IpAddr::from([203, 0, 113, 9]),
        );
        let places = Places::default();
        let open = |ms, from| places.admit(4, at(ms), from).unwrap();
        let theirs = open(0, client);
        theirs.requested();
        let trickling = [open(1, attacker), open(2, attacker)];
        trickling.iter().for_each(Place::requested);
        let idle = open(3, other);

        // Within the grace a silent socket may be a client about to speak; the older stranger
        // of the address holding two places goes, not the client's older one.
        let next = open(500, attacker);
        assert!(evicted(&trickling[0]) && !evicted(&theirs) && !evicted(&idle));
        assert!(!evicted(&trickling[1]));
        next.requested();
        // However fast the attacker reconnects, it evicts its own.
        let again = open(600, attacker);
        assert!(evicted(&trickling[1]) && !evicted(&theirs) && !evicted(&idle));
        again.requested();
        // Past the grace the idle socket goes first, though others are older.
        let _late = open(3 + SILENT_GRACE.as_millis() as u64, attacker);
        assert!(evicted(&idle) && !evicted(&theirs) && !evicted(&next));

        // An IPv6 /64 counts as one source, and a v4-mapped address as its IPv4 address.
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        assert_eq!(source_of(one), source_of("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_ne!(source_of(one), source_of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(source_of("::ffff:192.0.2.1".parse().unwrap()), attacker);
    }

    /// Authenticated connections keep their places from strangers; among tenants, the one
    /// holding the most gives up its oldest; a connection that authenticated no longer counts
    /// as its address's stranger.
    #[test]
    fn authenticated_connections_give_way_only_to_the_greediest_tenant() {
        #[allow(clippy::disallowed_methods)] // A fixed origin for instants the test makes up.
        let start = tokio::time::Instant::now();
        let places = Places::default();
        let from = IpAddr::from([192, 0, 2, 1]);
        let open = |ms| places.admit(3, start + Duration::from_millis(ms), from).unwrap();
        let mine = [open(0), open(1)];
        let theirs = open(2);
        for (place, tenant) in mine.iter().map(|p| (p, 1)).chain([(&theirs, 2)]) {
            place.requested();
            place.trust().set(holder(tenant), ConnectionCaps::default()).unwrap();
        }
        assert!(places.0.lock().unwrap().strangers.0.is_empty());
        let _stranger = open(3);
        assert!(evicted(&mine[0]) && !evicted(&mine[1]) && !evicted(&theirs));
        assert_eq!(places.0.lock().unwrap().strangers.0.get(&from), Some(&1));
    }
}
