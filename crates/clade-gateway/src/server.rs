//! The accept loop: every connection under a cap kept below the descriptor limit, with a
//! deadline for its first request and for each request's headers, so idle or half-open
//! sockets cannot starve the clients that do send requests.
//!
//! At the cap, the oldest connection that has not sent a request yet is closed to make room
//! (a flood of silent sockets then only evicts itself); when every connection has sent one,
//! the new connection is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;

/// How connections are limited.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// For a connection's first request, and for each request's headers (and so for an idle
    /// HTTP/1 keep-alive connection).
    pub header_timeout: Duration,
}

/// One open connection, as the accept loop sees it.
struct Open {
    /// It has sent a request: never evicted to make room.
    proven: Arc<AtomicBool>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    /// By accept order, oldest first.
    open: BTreeMap<u64, Open>,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let registry = Arc::new(Mutex::new(Registry::default()));
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
        let Some((id, proven, close)) = admit(&registry, limits.max_connections) else {
            tracing::debug!(%peer, "connection refused: at the connection limit");
            drop(tcp);
            continue;
        };
        // Streamed events (SSE, WebSocket) are small writes: without TCP_NODELAY, Nagle holds
        // each one back until the client has acknowledged the one before.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
        let (registry, stopping, app) = (registry.clone(), stopping.clone(), app.clone());
        tasks.spawn(async move {
            serve_connection(tcp, peer, app, &proven, &close, &stopping, limits).await;
            if let Ok(mut registry) = registry.lock() {
                registry.open.remove(&id);
            }
        });
    }
    // Graceful: no new connections; open ones finish their requests and close.
    stopping.notify_waiters();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Takes a place for a new connection, evicting the oldest unproven one at the cap.
fn admit(registry: &Mutex<Registry>, max: usize) -> Option<(u64, Arc<AtomicBool>, Arc<Notify>)> {
    let mut registry = registry.lock().ok()?;
    if registry.open.len() >= max {
        let oldest = registry
            .open
            .iter()
            .find(|(_, open)| !open.proven.load(Ordering::Relaxed))
            .map(|(id, _)| *id)?;
        if let Some(evicted) = registry.open.remove(&oldest) {
            evicted.close.notify_one();
        }
    }
    let id = registry.next;
    registry.next += 1;
    let (proven, close) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
    registry.open.insert(id, Open { proven: proven.clone(), close: close.clone() });
    Some((id, proven, close))
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    proven: &Arc<AtomicBool>,
    close: &Notify,
    stopping: &Notify,
    limits: ConnectionLimits,
) {
    let seen = proven.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            seen.store(true, Ordering::Relaxed);
            let mut app = app.clone();
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            async move {
                use tower::Service as _;
                app.call(request).await
            }
        });
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
        if proven.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        () = close.notified() => {}
        () = unproven_deadline => {}
        () = &mut stop => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(30), connection.as_mut()).await;
        }
    }
}
