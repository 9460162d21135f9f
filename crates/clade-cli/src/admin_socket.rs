//! The gateway's admin socket: a Unix socket in the data dir (or `server.admin_socket`), mode
//! 0600, that takes control actions (`clade_protocol::admin`) from the operator's own user
//! only, one JSON line each way. It is never served over HTTP or WebSocket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clade_protocol::admin::{AdminReply, AdminRequest};
use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::context::Ctx;

/// The longest request line read.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long a client waits for the gateway's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What the gateway does for each request.
pub(crate) type Handler = Arc<dyn Fn(AdminRequest) -> BoxFuture<'static, AdminReply> + Send + Sync>;

/// The socket's path: `--admin-socket`, else `server.admin_socket`, else the data dir's.
pub(crate) fn path(ctx: &Ctx, flag: Option<&Path>) -> PathBuf {
    match (flag, &ctx.config.server.admin_socket) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => ctx.data_dir.root().join("admin.sock"),
    }
}

/// Binds the socket (replacing a stale one: `serve`'s owner lock means no other gateway of
/// this store runs) and answers requests until the task is aborted.
pub(crate) fn serve(path: &Path, handler: Handler) -> Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket: move it, or set server.admin_socket to another path",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale admin socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "cannot create the admin socket {} (a path must be under 108 bytes): set server.admin_socket to another path",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make the admin socket {} private", path.display()))?;
    let owner = rustix::process::geteuid().as_raw();
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let peer = stream.peer_cred().map(|cred| cred.uid());
            if peer.as_ref().ok() != Some(&owner) {
                // The file's mode keeps other users out; this is for those who bypass it.
                tracing::warn!(peer = ?peer, "admin socket: a connection from another user was refused");
                continue;
            }
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Err(err) = answer(stream, handler).await {
                    tracing::debug!(error = %err, "admin socket connection ended");
                }
            });
        }
    }))
}

async fn answer(stream: UnixStream, handler: Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let read =
            (&mut lines).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line).await?;
        if read == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_LINE_BYTES {
            AdminReply::Error {
                message: format!("a request line is at most {MAX_LINE_BYTES} bytes"),
            }
        } else {
            match serde_json::from_slice::<AdminRequest>(&line) {
                Ok(request) => handler(request).await,
                Err(e) => AdminReply::Error {
                    message: format!(
                        "not an admin request ({e}); send one JSON object a line, such as {{\"action\":\"status\"}}"
                    ),
                },
            }
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
        if line.len() > MAX_LINE_BYTES {
            return Ok(());
        }
    }
}

/// Sends one request to the gateway listening on `path` and reads its answer.
pub(crate) async fn request(path: &Path, request: &AdminRequest) -> Result<AdminReply> {
    request_within(path, request, ANSWER_WITHIN).await
}

/// [`request`], for an action that may take up to `within` (a drain's wait).
pub(crate) async fn request_within(
    path: &Path,
    request: &AdminRequest,
    within: Duration,
) -> Result<AdminReply> {
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.with_context(|| {
            format!(
                "cannot reach the gateway's admin socket {}: is `clade serve` running with this data dir (or pass --admin-socket)?",
                path.display()
            )
        })?;
        let mut text = serde_json::to_string(request)?;
        text.push('\n');
        stream.write_all(text.as_bytes()).await?;
        let mut line = Vec::new();
        BufReader::new(stream).take(MAX_LINE_BYTES as u64).read_until(b'\n', &mut line).await?;
        serde_json::from_slice::<AdminReply>(&line)
            .with_context(|| format!("the admin socket {} answered something else", path.display()))
    };
    tokio::time::timeout(within, exchange).await.with_context(|| {
        format!("the gateway did not answer on {} within {} s", path.display(), within.as_secs())
    })?
}
