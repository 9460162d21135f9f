//! The accept loop: every connection under a cap kept below the descriptor limit, with a
//! deadline for its first request and for each request's headers, and a least rate for each
//! request's body, so idle, half-open or trickling sockets cannot starve the clients that do
//! send requests.
//!
//! At the cap, a connection is closed to make room: the oldest that has not sent a request
//! yet, else the oldest whose requests never passed the token check (a flood of strangers then
//! only evicts itself); connections that authenticated keep their places, and when every
//! connection has, the new one is refused. A body declared larger than `max_body_bytes` is
//! refused (413) before a byte of it is read.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
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
        let registry = self.places.0.lock().unwrap_or_else(|e| e.into_inner());
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
        self.trusted.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// One open connection, as the accept loop sees it.
struct Open {
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
    /// Its connection has sent a request.
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
        if let Ok(mut registry) = self.places.0.lock() {
            registry.open.remove(&self.id);
        }
    }
}

impl Places {
    /// Takes a place for a new connection, at the cap `max` evicting the oldest that sent no
    /// request, else the oldest that never authenticated, else the oldest of the tenant that
    /// holds the most places: one tenant's connections, however well authenticated, cannot
    /// keep every other tenant out.
    pub(crate) fn admit(&self, max: usize) -> Option<Place> {
        let mut registry = self.0.lock().ok()?;
        if registry.open.len() >= max {
            let silent = registry.open.iter().find(|(_, o)| !o.requested.load(Ordering::Relaxed));
            let stranger =
                || registry.open.iter().find(|(_, o)| !o.trusted.load(Ordering::Relaxed));
            let oldest =
                silent.or_else(stranger).map(|(id, _)| *id).or_else(|| greediest(&registry))?;
            if let Some(evicted) = registry.open.remove(&oldest) {
                evicted.close.notify_one();
            }
        }
        let id = registry.next;
        registry.next += 1;
        let open = Open {
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
                holder: open.holder.clone(),
                places: self.clone(),
            },
            close: open.close.clone(),
        };
        registry.open.insert(id, open);
        Some(place)
    }
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
        let Some(place) = places.admit(limits.max_connections) else {
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
