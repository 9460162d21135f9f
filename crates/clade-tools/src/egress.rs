//! Network for sandboxed commands that hold a grant: the command runs in a network namespace
//! of its own, whose only way out is an HTTP proxy in this process that checks every
//! destination after resolving it, on every connection.
//!
//! Inside the sandbox a small bridge ([`bridge`], the `clade-egress-bridge` program or
//! `clade __egress-bridge`) listens on `127.0.0.1:3128` and carries each connection over a Unix
//! socket bound into the sandbox to an [`EgressProxy`] outside it, and `HTTP_PROXY` and
//! friends point there. The proxy speaks `CONNECT host:port` (HTTPS and any client that can
//! tunnel) and absolute-form HTTP requests, resolves the host once, refuses loopback, private,
//! link-local, shared, metadata and other non-public addresses unless the grant has
//! `private_network` (metadata never), refuses hosts the grant does not name when it names
//! some, and dials the address it checked. Anything that does not go through the proxy has no
//! route: the namespace holds nothing but its own loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the bridge listens inside the sandbox; `HTTP_PROXY` points here.
pub const BRIDGE_LISTEN: &str = "127.0.0.1:3128";
/// Where the proxy's socket appears inside the sandbox.
pub const SANDBOX_SOCKET_DIR: &str = "/run/clade-egress";
const SOCKET_NAME: &str = "proxy.sock";

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head, and a destination to answer a dial.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run's grant lets it reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules {
    /// Loopback, private, link-local and shared addresses may be reached (metadata never).
    pub private_network: bool,
    /// When not empty, only these destinations: `host` or `host:port` globs (`*.github.com`).
    pub hosts: Vec<String>,
}

impl EgressRules {
    /// Whether the grant names `host` on `port` (or names nothing, so any host).
    fn names(&self, host: &str, port: u16) -> bool {
        let with_port = format!("{host}:{port}");
        self.hosts.is_empty()
            || self.hosts.iter().any(|pattern| {
                let pattern = pattern.to_ascii_lowercase();
                crate::pattern::matches(&pattern, host)
                    || crate::pattern::matches(&pattern, &with_port)
            })
    }
}

/// A proxy serving one sandboxed run; stops (and removes its socket) when dropped.
pub struct EgressProxy {
    dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
    refusals: Arc<Mutex<Vec<String>>>,
}

impl EgressProxy {
    /// Listens on a new socket in a new private directory under `parent`.
    pub fn start(parent: &Path, rules: EgressRules) -> std::io::Result<Self> {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = parent.join(format!("clade-egress-{}-{n}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let listener = match tokio::net::UnixListener::bind(dir.join(SOCKET_NAME)) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(rules);
        let seen = refusals.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (rules, seen) = (rules.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Err(refusal) = serve(stream, &rules).await
                        && let Ok(mut seen) = seen.lock()
                        && seen.len() < 64
                    {
                        seen.push(refusal.to_string());
                    }
                });
            }
        });
        Ok(Self { dir, task, refusals })
    }

    /// The host directory holding the socket, to bind at [`SANDBOX_SOCKET_DIR`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Destinations refused so far, each with the reason (for the run's account).
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why the proxy turned a connection away: answered to the command (400 or 403) and kept for
/// the run's account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("request head is not UTF-8")]
    NotText,
    #[error("not an HTTP proxy request: {0:?}")]
    NotProxy(String),
    #[error("{0:?} is not an absolute http:// URL (use CONNECT for https)")]
    NotAbsolute(String),
    #[error("bad address {0:?}")]
    Address(String),
    #[error("bad port in {0:?}")]
    Port(String),
    #[error("{0:?} names no port")]
    NoPort(String),
    #[error("{0:?} names no host")]
    NoHost(String),
    #[error("cannot read the request head: {0}")]
    Read(String),
    #[error("connection closed before the request head ended")]
    Closed,
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("{host}:{port} is not among the hosts this command was granted")]
    NotGranted { host: String, port: u16 },
    #[error(transparent)]
    Destination(#[from] crate::net::EgressError),
}

/// A request head the proxy understood.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `CONNECT host:port`: a tunnel.
    Tunnel { host: String, port: u16 },
    /// `GET http://host:port/path`: forwarded as `GET /path`, with `head` the rewritten head.
    Forward { host: String, port: u16, head: Vec<u8> },
}

/// Reads one request head and says where it goes, or why not.
fn parse_head(head: &[u8]) -> Result<Target, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| Refusal::NotText)?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::NotProxy(first.to_owned()));
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target, None)?;
        return Ok(Target::Tunnel { host, port });
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err(Refusal::NotAbsolute(target.to_owned()));
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = split_host_port(authority, Some(80))?;
    // The same request in origin form, for one exchange: the proxy cannot follow a second
    // request on the same connection to another host, so it asks for the connection to close.
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if name.starts_with("proxy-") || name == "connection" || name == "keep-alive" {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(Target::Forward { host, port, head: out.into_bytes() })
}

fn split_host_port(authority: &str, default: Option<u16>) -> Result<(String, u16), Refusal> {
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) =
            v6.split_once(']').ok_or_else(|| Refusal::Address(authority.to_owned()))?;
        (host, rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match (port, default) {
        (Some(port), _) => port.parse().map_err(|_| Refusal::Port(authority.to_owned()))?,
        (None, Some(default)) => default,
        (None, None) => return Err(Refusal::NoPort(authority.to_owned())),
    };
    if host.is_empty() {
        return Err(Refusal::NoHost(authority.to_owned()));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Serves one client connection; `Err` is a refusal, already answered with a 403.
async fn serve(mut client: tokio::net::UnixStream, rules: &EgressRules) -> Result<(), Refusal> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(head)) => head,
        Ok(Err(why)) => return refuse(&mut client, 400, why).await,
        Err(_) => return Ok(()),
    };
    let (target, rest) = head;
    let target = match parse_head(&target) {
        Ok(target) => target,
        Err(why) => return refuse(&mut client, 400, why).await,
    };
    let (host, port) = match &target {
        Target::Tunnel { host, port } | Target::Forward { host, port, .. } => (host.clone(), *port),
    };
    if !rules.names(&host, port) {
        return refuse(&mut client, 403, Refusal::NotGranted { host, port }).await;
    }
    let addr = match crate::net::resolve_checked(&host, port, rules.private_network).await {
        Ok(addr) => addr,
        Err(err) => return refuse(&mut client, 403, err.into()).await,
    };
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, dial(addr)).await {
        Ok(Ok(stream)) => stream,
        // The destination was allowed; it just did not answer: not a refusal.
        Ok(Err(err)) => {
            answer(&mut client, 502, &format!("{host}:{port}: {err}")).await;
            return Ok(());
        }
        Err(_) => {
            answer(&mut client, 504, &format!("{host}:{port} did not answer")).await;
            return Ok(());
        }
    };
    match target {
        Target::Tunnel { .. } => {
            if client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.is_err() {
                return Ok(());
            }
        }
        Target::Forward { head, .. } => {
            if upstream.write_all(&head).await.is_err() {
                return Ok(());
            }
        }
    }
    if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
        return Ok(());
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

async fn dial(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Reads up to the end of the head; returns it and whatever came after it.
async fn read_head(client: &mut tokio::net::UnixStream) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await.map_err(|e| Refusal::Read(e.to_string()))?;
        if n == 0 {
            return Err(Refusal::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal::TooLong);
        }
    }
}

/// Answers `status` with `why`, and ends the connection with it as the refusal.
async fn refuse(
    client: &mut tokio::net::UnixStream,
    status: u16,
    why: Refusal,
) -> Result<(), Refusal> {
    answer(client, status, &why.to_string()).await;
    Err(why)
}

/// Answers `status` with `why` as a plain-text body, and closes.
async fn answer(client: &mut tokio::net::UnixStream, status: u16, why: &str) {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        _ => "Gateway Timeout",
    };
    let body = format!("clade egress: {why}\n");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// The bridge inside the sandbox: accepts on `listen` and carries each connection to the
/// proxy's Unix socket at `socket`. Prints `ready` on stdout once it listens.
pub async fn bridge(listen: SocketAddr, socket: PathBuf) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        out.write_all(b"ready\n")?;
        out.flush()?;
    }
    loop {
        let (mut tcp, _) = listener.accept().await?;
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            }
        });
    }
}

/// `SANDBOX_SOCKET_DIR/proxy.sock`.
pub fn sandbox_socket() -> String {
    format!("{SANDBOX_SOCKET_DIR}/{SOCKET_NAME}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_as_tunnels_or_forwards() {
        assert_eq!(
            parse_head(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            Ok(Target::Tunnel { host: "example.com".into(), port: 443 })
        );
        let Ok(Target::Forward { host, port, head }) = parse_head(
            b"GET http://Example.com:8080/a?b HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: x\r\nConnection: keep-alive\r\n\r\n",
        ) else {
            panic!("not a forward")
        };
        assert_eq!((host.as_str(), port), ("example.com", 8080));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            parse_head(b"CONNECT [::1]:22 HTTP/1.1\r\n\r\n"),
            Ok(Target::Tunnel { host: "::1".into(), port: 22 })
        );
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"CONNECT host HTTP/1.1\r\n\r\n",
            b"junk",
            b"\xff\xfe",
        ] {
            assert!(parse_head(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_grant_naming_hosts_reaches_only_those() {
        let any = EgressRules::default();
        assert!(any.names("example.com", 443));
        let named = EgressRules {
            private_network: false,
            hosts: vec!["*.github.com".into(), "127.0.0.1:8080".into()],
        };
        assert!(named.names("api.github.com", 443));
        assert!(named.names("127.0.0.1", 8080));
        assert!(!named.names("127.0.0.1", 5432));
        assert!(!named.names("github.com.evil.net", 443));
    }
}
