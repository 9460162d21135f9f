//! Test fixtures shared by the crates' integration suites; a dev-dependency only.
//!
//! Owns [`PgSchema`]: a fresh, empty PostgreSQL schema per test, dropped afterwards. The server
//! is named by `CLADE_TEST_POSTGRES` (default [`DEFAULT_PG`]). When it is unreachable the caller
//! gets `None` and a loud warning, except under `CI=true`, where that is a failure: CI must never
//! skip the PostgreSQL half silently.
//!
//! [`nats_url`] does the same for the NATS server of the cluster tests (`CLADE_TEST_NATS`).
//!
//! Also owns [`history`]: the record of a crash run and the checker of the reliability contract
//! over it, shared by the crash test and `cargo xtask check-history`; and [`soak_scale`], how
//! much work the soak tests do; [`Watchdog`], which turns a hang into a report of every
//! thread's stack; and [`wait`], the suites' one way to wait for a condition on real time.

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // Test support reads env and warns.

use sqlx::Executor;

pub mod history;
mod proxy;
pub mod wait;
mod watchdog;

pub use proxy::Proxy;
pub use watchdog::{Watchdog, thread_stacks};

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server the PostgreSQL tests use.
pub fn pg_admin_url() -> String {
    std::env::var("CLADE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// The NATS server the cluster tests use (`CLADE_TEST_NATS`, default `nats://127.0.0.1:4222`),
/// or `None` with a loud warning when nothing answers there, except under `CI=true`, where
/// that is a failure: CI must never skip the cluster tests silently.
///
/// # Panics
/// Under `CI=true` when the server is unreachable.
pub fn nats_url() -> Option<String> {
    let url = std::env::var("CLADE_TEST_NATS").unwrap_or_else(|_| DEFAULT_NATS.to_owned());
    let address = url.trim_start_matches("nats://").to_owned();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&address)
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| {
            std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2))
                .is_ok()
        });
    if reachable {
        return Some(url);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "NATS at {url} is unreachable under CI=true: scripts/test starts it"
    );
    eprintln!("WARNING: skipping a cluster test: no NATS server answers at {url}");
    None
}

pub const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";

/// A `nats-server` of the test's own, on a free port, killed when dropped: for a test that
/// takes NATS down, or guards it with a password, without touching the shared one.
pub struct NatsServer {
    pub url: String,
    child: std::process::Child,
}

impl NatsServer {
    /// Starts the real `nats-server` with `args` besides its address and port, and waits until
    /// it takes connections; `None` (outside CI, with a warning) when it is not installed.
    ///
    /// # Panics
    /// Under `CI=true` when it is not installed, or when it ends before it is ready.
    pub fn start(args: &[&str]) -> Option<Self> {
        let binary =
            ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
                .into_iter()
                .find(|path| std::path::Path::new(path).is_file());
        let Some(binary) = binary else {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "nats-server is not installed under CI=true: scripts/test installs it"
            );
            eprintln!(
                "WARNING: skipping a test of its own NATS server: nats-server is not installed"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        // It says so on its log (standard error) once it takes connections.
        use std::io::BufRead as _;
        let log = std::io::BufReader::new(child.stderr.take()?);
        let mut lines = log.lines();
        let ready = lines.by_ref().map_while(Result::ok).any(|l| l.contains("Server is ready"));
        assert!(ready, "the test's nats-server on port {port} ended before it was ready");
        std::thread::spawn(move || lines.for_each(drop));
        Some(Self { url: format!("nats://127.0.0.1:{port}"), child })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many times their bounded size the soak tests run (`CLADE_SOAK_SCALE`, default 1, at
/// most 1,000): the crash test's kills and events, the WAL bound's writes. The size CI runs is
/// 1; a longer soak is `CLADE_SOAK_SCALE=20 cargo nextest run --profile soak`.
pub fn soak_scale() -> usize {
    match std::env::var("CLADE_SOAK_SCALE") {
        Err(_) => 1,
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(scale @ 1..=1000) => scale,
            _ => panic!("CLADE_SOAK_SCALE={text:?}: give a whole number from 1 to 1000"),
        },
    }
}

/// A schema of its own in the test database; dropped with everything in it on `Drop`.
pub struct PgSchema {
    name: String,
    url: String,
}

impl PgSchema {
    /// Creates the schema, or returns `None` (outside CI) when PostgreSQL is unreachable.
    ///
    /// # Panics
    /// Under `CI=true` when the server is unreachable, or when the schema cannot be created.
    pub async fn create() -> Option<Self> {
        sqlx::any::install_default_drivers();
        let admin = pg_admin_url();
        let pool = match sqlx::AnyPool::connect(&admin).await {
            Ok(pool) => pool,
            Err(err) => {
                assert!(
                    std::env::var("CI").map_or(true, |v| v != "true"),
                    "PostgreSQL at {admin} is unreachable under CI=true: {err}"
                );
                eprintln!(
                    "WARNING: skipping the PostgreSQL half of this test: {admin} is unreachable: {err}"
                );
                return None;
            }
        };
        let name = format!("t_{}", unique_suffix());
        let created = pool.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).await;
        pool.close().await;
        if let Err(err) = created {
            panic!("cannot create schema {name} in {admin}: {err}");
        }
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-c%20search_path%3D{name}");
        Some(Self { name, url })
    }

    /// A connection URL whose `search_path` is this schema.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop is synchronous: run the cleanup on a runtime of its own, off the test's runtime.
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
                    let _ = pool.execute(sqlx::AssertSqlSafe(sql)).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}_{:x}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Asserts that the committed file `repo_relative` (e.g. `docs/openapi.json`) equals
/// `generated`; with `UPDATE_SCHEMAS` set it rewrites the file first (`cargo xtask codegen`).
///
/// # Panics
/// When the committed copy is missing or stale.
pub fn assert_committed(repo_relative: &str, generated: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(repo_relative);
    if std::env::var_os("UPDATE_SCHEMAS").is_some()
        && let Err(err) = std::fs::write(&path, generated)
    {
        panic!("cannot write {}: {err}", path.display());
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{repo_relative} is stale: run `cargo xtask codegen` and commit it"
    );
}
