//! `server.grpc`: the AgentHub's gRPC server beside the HTTP one. Built with the `grpc` cargo
//! feature (on by default); without it, a configuration that asks for gRPC is refused at start
//! with what to do, and nothing of tonic is in the binary.

use anyhow::Result;
use clade_gateway::{AppState, ConnectionLimits};

use crate::context::Ctx;

#[cfg(not(feature = "grpc"))]
pub(super) use absent::{prepare, start};
#[cfg(feature = "grpc")]
pub(super) use served::{prepare, start};

#[cfg(feature = "grpc")]
mod served {
    use anyhow::Context as _;

    use super::*;

    /// The AgentHub's gRPC server, running beside the HTTP one.
    pub(in crate::commands) struct GrpcServer {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
        /// Where it listens, `http://` or `https://`.
        url: String,
    }

    impl GrpcServer {
        pub(in crate::commands) fn url(&self) -> &str {
            &self.url
        }

        /// Stops taking calls and gives those in flight a moment; traces, which never end by
        /// themselves, are then cut.
        pub(in crate::commands) async fn stop(mut self) {
            let _ = self.stop.send(());
            let grace = std::time::Duration::from_secs(5);
            if tokio::time::timeout(grace, &mut self.task).await.is_err() {
                self.task.abort();
            }
        }
    }

    /// `server.grpc` made ready to serve: its listener bound, its TLS identity read and checked.
    pub(in crate::commands) struct PreparedGrpc {
        listener: tokio::net::TcpListener,
        tls: Option<(Vec<u8>, Vec<u8>)>,
    }

    /// Binds `server.grpc`'s port and reads its TLS files, so a wrong port or file stops `clade
    /// serve` before it starts anything, with the reason.
    pub(in crate::commands) async fn prepare(
        ctx: &Ctx,
        grpc: &clade_config::GrpcConfig,
    ) -> Result<PreparedGrpc> {
        let base = ctx.config_path.parent().unwrap_or(std::path::Path::new("."));
        let read = |name: &str, file: &str| {
            let path = base.join(file);
            std::fs::read(&path).with_context(|| {
                format!("cannot read server.grpc.tls.{name} ({}): give the PEM file's path, absolute or relative to clade.yaml", path.display())
            })
        };
        let tls = match &grpc.tls {
            Some(files) => {
                let (cert, key) = (read("cert", &files.cert)?, read("key", &files.key)?);
                clade_gateway::check_grpc_tls(&cert, &key).context(
                    "server.grpc.tls cannot be served: give a PEM certificate chain and its private key",
                )?;
                Some((cert, key))
            }
            None => None,
        };
        let listener = clade_gateway::bind(&grpc.listen).await.with_context(|| {
            format!(
                "cannot listen on {} for gRPC: set another address in server.grpc.listen",
                grpc.listen
            )
        })?;
        Ok(PreparedGrpc { listener, tls })
    }

    /// Serves the AgentHub on the prepared listener beside the HTTP server.
    pub(in crate::commands) fn start(
        prepared: PreparedGrpc,
        state: AppState,
        max_message_bytes: usize,
        limits: ConnectionLimits,
    ) -> GrpcServer {
        let PreparedGrpc { listener, tls } = prepared;
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        if !loopback && tls.is_none() {
            tracing::warn!(
                address = %address,
                "the AgentHub's gRPC server listens beyond this machine without TLS (tokens and messages unencrypted); set server.grpc.tls or listen on 127.0.0.1"
            );
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let options = clade_gateway::GrpcOptions { tls, max_message_bytes, limits };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(err) = clade_gateway::serve_grpc(listener, state, options, shutdown).await {
                tracing::error!(error = %err, "the AgentHub's gRPC server stopped");
            }
        });
        tracing::info!(address = %address, tls = scheme == "https", "AgentHub listening (gRPC)");
        GrpcServer { stop, task, url: format!("{scheme}://{address}") }
    }
}

/// A build without gRPC: the types exist so `serve` reads the same, but none can be made.
#[cfg(not(feature = "grpc"))]
mod absent {
    use super::*;

    pub(in crate::commands) enum GrpcServer {}

    impl GrpcServer {
        pub(in crate::commands) fn url(&self) -> &str {
            match *self {}
        }

        pub(in crate::commands) async fn stop(self) {
            match self {}
        }
    }

    pub(in crate::commands) enum PreparedGrpc {}

    pub(in crate::commands) async fn prepare(
        _ctx: &Ctx,
        _grpc: &clade_config::GrpcConfig,
    ) -> Result<PreparedGrpc> {
        anyhow::bail!(
            "server.grpc is set in clade.yaml, but this clade was built without gRPC: rebuild with the default features (or `--features grpc`), or remove server.grpc"
        )
    }

    pub(in crate::commands) fn start(
        prepared: PreparedGrpc,
        _state: AppState,
        _max_message_bytes: usize,
        _limits: ConnectionLimits,
    ) -> GrpcServer {
        match prepared {}
    }
}
