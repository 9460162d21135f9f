//! MCP client (the official `rmcp` SDK): servers on stdio or streamable HTTP, their tools
//! discovered and exposed as `mcp.<server>.<tool>`, every call time-limited, and a server that
//! crashed started again on the next call.
//!
//! MCP tools count as touching the host: they are denied unless a policy rule allows them.
//! A stdio server runs in the tool sandbox (see `Sandbox::service_command`): it sees the
//! system read-only, writes only to its own directory, and has no network unless configured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, CallToolResponse};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use crate::sandbox::Sandbox;
use crate::{CallContext, EffectClass, Error, Listing, Tool, ToolResult};

/// How to reach a server.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A child process speaking MCP on stdin/stdout, started through `sandbox` with `dir` as
    /// its only writable directory (created when missing) and the network only if `network`.
    Stdio {
        command: Vec<String>,
        env: Vec<(String, String)>,
        sandbox: Arc<Sandbox>,
        dir: PathBuf,
        network: bool,
    },
    /// A streamable-HTTP endpoint.
    Http { url: String },
}

/// One configured server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// `[a-z0-9_-]+`; the middle of its tools' names.
    pub name: String,
    pub transport: Transport,
    /// The agents that get its tools, as `mcp.<name>.agents` names them
    /// ([`clade_config::agent_pattern_covers`]).
    pub agents: Vec<String>,
    pub timeout: Duration,
}

/// Why a server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP server {server}: {message}")]
    Server { server: String, message: String },
}

/// A connected (or restartable) server.
pub struct Server {
    spec: ServerSpec,
    client: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
}

impl Server {
    fn error(&self, message: impl std::fmt::Display) -> McpError {
        McpError::Server { server: self.spec.name.clone(), message: message.to_string() }
    }

    async fn start(&self) -> Result<RunningService<RoleClient, ()>, McpError> {
        let connect = async {
            match &self.spec.transport {
                Transport::Stdio { command, env, sandbox, dir, network } => {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        self.error(format!("cannot create its directory {}: {e}", dir.display()))
                    })?;
                    let command = sandbox
                        .service_command(command, env, dir, *network)
                        .map_err(|e| self.error(e))?;
                    let transport =
                        rmcp::transport::TokioChildProcess::new(command).map_err(|e| {
                            self.error(format!("cannot start {:?}: {e}", command_text(&self.spec)))
                        })?;
                    ().serve(transport)
                        .await
                        .map_err(|e| {
                            let command = command_text(&self.spec);
                            self.error(format!("{command:?} did not complete the MCP handshake ({e}); check that it runs and speaks MCP on stdio"))
                        })
                }
                Transport::Http { url } => {
                    let transport =
                        rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
                    ().serve(transport)
                        .await
                        .map_err(|e| self.error(format!("cannot connect to {url}: {e}")))
                }
            }
        };
        tokio::time::timeout(self.spec.timeout, connect).await.map_err(|_| {
            self.error(format!("did not answer within {} s", self.spec.timeout.as_secs()))
        })?
    }

    /// Connects and lists the server's tools.
    pub async fn connect(spec: ServerSpec) -> Result<(Arc<Self>, Vec<Arc<dyn Tool>>), McpError> {
        let server = Arc::new(Self { spec, client: tokio::sync::Mutex::new(None) });
        let client = server.start().await?;
        let listed = tokio::time::timeout(server.spec.timeout, client.list_all_tools())
            .await
            .map_err(|_| server.error("listing tools timed out"))?
            .map_err(|e| server.error(format!("cannot list tools: {e}")))?;
        *server.client.lock().await = Some(client);
        let agents: Arc<[String]> = server.spec.agents.clone().into();
        let tools = listed
            .into_iter()
            .map(|tool| {
                let name = format!("mcp.{}.{}", server.spec.name, tool.name);
                Arc::new(McpTool {
                    server: server.clone(),
                    listing: Listing {
                        name,
                        description: tool.description.map(|d| d.to_string()).unwrap_or_default(),
                        schema: Value::Object((*tool.input_schema).clone()),
                        agents: agents.clone(),
                    },
                    remote: tool.name.to_string(),
                }) as Arc<dyn Tool>
            })
            .collect();
        Ok((server, tools))
    }

    /// Calls `tool`, starting the server again first if it stopped.
    async fn call(&self, tool: &str, args: Value) -> ToolResult {
        let peer = {
            let mut client = self.client.lock().await;
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                *client = Some(self.start().await.map_err(|e| Error::failed(e.to_string()))?);
            }
            match client.as_ref() {
                Some(c) => c.peer().clone(),
                None => return Err(Error::failed(self.error("not connected").to_string())),
            }
        };
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            _ => return Err(Error::failed("MCP tool arguments must be a JSON object")),
        };
        let answer = tokio::time::timeout(self.spec.timeout, peer.call_tool_once(params)).await;
        let result = match answer {
            Err(_) => {
                return Err(Error::Failed(format!(
                    "MCP server {} did not answer {tool} within {} s",
                    self.spec.name,
                    self.spec.timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                // The connection may be gone (the server crashed): start afresh next time.
                *self.client.lock().await = None;
                return Err(Error::Failed(format!(
                    "MCP server {} failed during {tool} ({e}); it will be restarted on the next call",
                    self.spec.name
                )));
            }
            Ok(Ok(CallToolResponse::Complete(result))) => result,
            Ok(Ok(_)) => {
                return Err(Error::Failed(format!(
                    "MCP tool {tool} asked for input, which Clade does not provide"
                )));
            }
        };
        let text: Vec<String> = result
            .content
            .iter()
            .map(|block| match block.as_text() {
                Some(text) => text.text.clone(),
                None => serde_json::to_string(block).unwrap_or_default(),
            })
            .collect();
        let text = text.join("\n");
        if result.is_error == Some(true) { Err(Error::Failed(text)) } else { Ok(text) }
    }
}

fn command_text(spec: &ServerSpec) -> String {
    match &spec.transport {
        Transport::Stdio { command, .. } => command.join(" "),
        Transport::Http { url } => url.clone(),
    }
}

/// One tool of an MCP server.
pub struct McpTool {
    server: Arc<Server>,
    listing: Listing,
    remote: String,
}

impl Tool for McpTool {
    crate::listed!();
    fn effect(&self) -> EffectClass {
        EffectClass::AtMostOnce
    }
    fn touches_host(&self) -> bool {
        true
    }
    fn call<'a>(&'a self, args: Value, _ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(self.server.call(&self.remote, args))
    }
}
