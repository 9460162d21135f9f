//! `clade remote`: the CLI on another machine, paired with a gateway as an operator (`clade
//! pair cli` on the gateway's side). `listen` waits to be paired and keeps the gateway's URL and
//! key; `status`, `send` and `chat` then call the API with this machine's key instead of a
//! token, and refuse a gateway that does not sign their challenge with the key it paired with.
//! Nothing here opens a store: only the data dir's key pair and profile are read.

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clade_protocol::remote_tools::{
    CHALLENGE_HEADER, HOST_SIGNATURE_HEADER, PEER_HEADER, PEER_SIGNATURE_HEADER, PEER_TIME_HEADER,
};
use clade_tools::remote::identity::{self, Identity};
use serde_json::{Value, json};

use crate::cli::RemoteCommand;
use crate::context::env_value;

/// What `listen` keeps once paired.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Profile {
    /// The gateway's base URL (`http://gateway:8080`).
    gateway: String,
    /// Its key, which must sign each challenge.
    gateway_key: String,
    /// The name the gateway gave this CLI.
    name: String,
}

const PROFILE: &str = "remote.json";

fn identity(data_dir: &clade_store::DataDir) -> Result<Arc<Identity>> {
    let path = data_dir.root().join("remote.key");
    Ok(Arc::new(
        Identity::load_or_create(&path)
            .with_context(|| format!("cannot use the key pair {}", path.display()))?,
    ))
}

/// Where the pairing is kept: the gateway's URL and key, and the name it gave.
pub(super) fn profile_path(data_dir: &clade_store::DataDir) -> std::path::PathBuf {
    data_dir.root().join(PROFILE)
}

fn profile(data_dir: &clade_store::DataDir) -> Result<Profile> {
    let path = profile_path(data_dir);
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{} cannot be read ({e}): pair this CLI first with `clade remote listen`",
            path.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| {
        format!("{} is not a profile: pair again with `clade remote listen`", path.display())
    })
}

/// The key this machine was paired with (`clade remote listen`, then `clade pair cli` or
/// `clade pair listener` on the gateway's), and the gateway's URL.
pub(super) fn paired_identity(data_dir: &clade_store::DataDir) -> Result<(Arc<Identity>, String)> {
    let profile = profile(data_dir)?;
    Ok((identity(data_dir)?, profile.gateway))
}

pub(super) async fn run(data_dir: &clade_store::DataDir, cmd: RemoteCommand) -> Result<()> {
    match cmd {
        RemoteCommand::Listen { listen, gateway, token_env } => {
            listen_for_pairing(data_dir, (&listen, &gateway, &token_env), "cli").await?;
            println!("try `clade remote status`");
            Ok(())
        }
        RemoteCommand::Status => {
            let client = Remote::open(data_dir)?;
            let agents = client.call(reqwest::Method::GET, "/v1/agents", None).await?;
            let handles: Vec<&str> = agents["items"]
                .as_array()
                .map(|items| items.iter().filter_map(|a| a["handle"].as_str()).collect())
                .unwrap_or_default();
            println!(
                "paired as {} with the gateway at {} (its key {}…, proved just now)",
                client.profile.name,
                client.profile.gateway,
                identity::fingerprint(&client.profile.gateway_key)
            );
            println!("agents it reaches: {}", handles.join(", "));
            Ok(())
        }
        RemoteCommand::Send { agent, text } => {
            let client = Remote::open(data_dir)?;
            client.prove().await?;
            let reply = client.send(&Target::Agent(agent), &text).await?;
            println!("{reply}");
            Ok(())
        }
        RemoteCommand::Chat { agent, session } => {
            let client = Remote::open(data_dir)?;
            client.prove().await?;
            let (target, attached) = match (agent, session) {
                (Some(agent), _) => (Target::Agent(agent), None),
                (None, Some(id)) => {
                    let session = client
                        .call(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
                        .await
                        .with_context(|| format!("session {id}: is it leased to this CLI (`clade lease grant {} --kind operator --session {id}` on the gateway)?", client.profile.name))?;
                    let id = session["id"].as_str().unwrap_or(&id).to_owned();
                    let attached = client.attach(&id).await?;
                    (Target::Session(id), Some(attached))
                }
                (None, None) => bail!("name --agent or --session"),
            };
            eprintln!(
                "chatting with {target} at {} as {} (end with Ctrl-D)",
                client.profile.gateway, client.profile.name
            );
            let mut lines = stdin_lines();
            // Without a stream to follow, nothing ends the chat but the end of its input.
            let (_idle, never) = tokio::sync::watch::channel(None);
            let mut ended = attached.as_ref().map_or(never, |a| a.ended.clone());
            loop {
                let line = tokio::select! {
                    line = lines.recv() => line.transpose()?,
                    _ = ended.changed() => {
                        let why = ended.borrow().clone().unwrap_or_default();
                        bail!("the gateway ended this chat: {why}");
                    }
                };
                let Some(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                println!("{}", client.send(&target, &line).await?);
            }
            Ok(())
        }
    }
}

/// Serves the pairing routes until a gateway pairs this machine as a component of `kind`
/// (`clade pair <kind>` there), then keeps its URL and key; the name it was paired as.
pub(super) async fn listen_for_pairing(
    data_dir: &clade_store::DataDir,
    (listen, gateway, token_env): (&str, &str, &str),
    kind: &str,
) -> Result<String> {
    let gateway = gateway.trim_end_matches('/').to_owned();
    if !(gateway.starts_with("http://") || gateway.starts_with("https://")) {
        bail!("--gateway {gateway:?} is not an http:// or https:// URL");
    }
    let identity = identity(data_dir)?;
    // A one-time secret that authorizes the pairing: given, or made here and shown.
    let token = env_value(token_env).unwrap_or_else(identity::challenge);
    let peers = data_dir.root().join("remote.peers.json");
    let _ = std::fs::remove_file(&peers);
    let pairing = Arc::new(clade_gateway::pairing::Pairing::load(
        Some(&token),
        Some(identity.clone()),
        Some(peers),
    )?);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}: pass another address with --listen")
    })?;
    let address = listener.local_addr()?;
    let app = clade_gateway::pairing::waiting_router(pairing.clone());
    let limits = clade_gateway::ConnectionLimits::new(64, Duration::from_secs(10));
    let server = tokio::spawn(async move {
        if let Err(err) = clade_gateway::serve(listener, app, std::future::pending(), limits).await
        {
            tracing::warn!(error = %err, "the pairing listener stopped");
        }
    });
    println!(
        "waiting to be paired at http://{address}/ (this machine's key {})",
        identity.public()
    );
    println!(
        "on the gateway's machine run: {token_env}={token} clade pair {kind} http://{address}/ <name>"
    );
    let (key, name) = loop {
        if let Some(first) = pairing.paired().into_iter().next() {
            break first;
        }
        tokio::select! {
            () = clade_core::Clock::sleep(&clade_core::SystemClock, Duration::from_millis(200)) => {}
            () = super::serve::shutdown_signal() => {
                server.abort();
                bail!("stopped before a gateway paired");
            }
        }
    };
    server.abort();
    let profile = Profile { gateway: gateway.clone(), gateway_key: key.clone(), name };
    let path = profile_path(data_dir);
    write_private(&path, &serde_json::to_vec_pretty(&profile)?)
        .with_context(|| format!("cannot keep the pairing in {}", path.display()))?;
    println!(
        "paired as {} with the gateway at {gateway} (its key {}…)",
        profile.name,
        identity::fingerprint(&key)
    );
    Ok(profile.name)
}

/// The name this machine was paired as with the gateway at `gateway`, if it was.
pub(super) fn paired_with(data_dir: &clade_store::DataDir, gateway: &str) -> Option<String> {
    profile(data_dir).ok().filter(|p| p.gateway == gateway).map(|p| p.name)
}

/// A signed request to the paired gateway, which must prove its key: its status and JSON
/// answer, refusals included.
pub(super) async fn ask_paired(
    data_dir: &clade_store::DataDir,
    method: reqwest::Method,
    path: &str,
) -> Result<(reqwest::StatusCode, Value)> {
    let remote = Remote::open(data_dir)?;
    let (status, answer, proved) = remote.exchange(method, path, None).await?;
    if !proved {
        return Err(remote.not_proved());
    }
    Ok((status, answer))
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let staged = path.with_extension("staged");
    let _ = std::fs::remove_file(&staged);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staged)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&staged, path)
}

/// A client of the paired gateway's API, signing each request with this CLI's key.
struct Remote {
    http: reqwest::Client,
    identity: Arc<Identity>,
    profile: Profile,
}

impl Remote {
    fn open(data_dir: &clade_store::DataDir) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::new(),
            identity: identity(data_dir)?,
            profile: profile(data_dir)?,
        })
    }

    /// One turn: `text` to the target from this CLI; the reply.
    async fn send(&self, target: &Target, text: &str) -> Result<String> {
        let body = match target {
            Target::Agent(agent) => json!({
                "agent": agent,
                "text": text,
                "source": { "platform": "cli", "channel": "remote", "actor": self.profile.name },
                "wait": true,
            }),
            Target::Session(id) => json!({ "session": id, "text": text, "wait": true }),
        };
        let answer = self.call(reqwest::Method::POST, "/v1/events", Some(body)).await?;
        match answer["reply"]["text"].as_str() {
            Some(reply) => Ok(reply.to_owned()),
            None => bail!(
                "the turn ended without a reply: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            ),
        }
    }

    /// Follows the session's stream for as long as the chat runs: what holds a lease of the
    /// session alone (the gateway ends it when this stream closes). `ended` says why the
    /// gateway closed it, if it did.
    async fn attach(&self, session: &str) -> Result<Attached> {
        let (response, proved) = self
            .signed(
                reqwest::Method::GET,
                &format!("/v1/sessions/{session}/events"),
                Vec::new(),
                None,
            )
            .await?;
        if !proved {
            return Err(self.not_proved());
        }
        if !response.status().is_success() {
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let message = answer["error"]["message"].as_str().unwrap_or("request failed");
            bail!("the gateway refused the session's stream: {message} (HTTP {})", status.as_u16());
        }
        let (tell, ended) = tokio::sync::watch::channel(None);
        let follow = tokio::spawn(async move {
            use futures::StreamExt as _;
            let mut body = response.bytes_stream();
            let mut pending = String::new();
            let why = loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        pending.push_str(&String::from_utf8_lossy(&chunk));
                        // The gateway's last word on a closed stream is an `error` event.
                        if let Some(at) = pending.find("event: error") {
                            let data = pending[at..]
                                .lines()
                                .find_map(|line| line.strip_prefix("data: "))
                                .and_then(|data| serde_json::from_str::<Value>(data).ok());
                            break data
                                .and_then(|d| d["message"].as_str().map(str::to_owned))
                                .unwrap_or_else(|| "the stream ended with an error".into());
                        }
                        // Keep only the unfinished event.
                        if let Some(end) = pending.rfind("\n\n") {
                            pending.drain(..end + 2);
                        }
                    }
                    Some(Err(err)) => break format!("the stream broke: {err}"),
                    None => break "the gateway closed the session's stream".into(),
                }
            };
            let _ = tell.send(Some(why));
        });
        Ok(Attached { ended, _follow: AbortOnDrop(follow) })
    }

    /// Has the gateway sign a challenge before anything of the operator's is sent: a server
    /// at its address that is not the gateway paired with is sent nothing more.
    async fn prove(&self) -> Result<()> {
        let (_, _, proved) =
            self.exchange(reqwest::Method::GET, "/v1/agents?limit=1", None).await?;
        if proved { Ok(()) } else { Err(self.not_proved()) }
    }

    fn not_proved(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "{} did not prove it is the gateway this CLI paired with (its key {}…): nothing more is sent to it; if the gateway's key changed on purpose, pair again",
            self.profile.gateway,
            identity::fingerprint(&self.profile.gateway_key)
        )
    }

    /// A signed request with a fresh challenge; the answer, once the gateway proved its key.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, answer, proved) = self.exchange(method, path, body).await?;
        if !proved {
            return Err(self.not_proved());
        }
        if status.is_client_error() || status.is_server_error() {
            let message = answer["error"]["message"].as_str().unwrap_or("request failed");
            bail!("the gateway refused: {message} (HTTP {})", status.as_u16());
        }
        Ok(answer)
    }

    /// One signed request: its status, its JSON answer, and whether the gateway signed the
    /// challenge with the key it paired with.
    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(reqwest::StatusCode, Value, bool)> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (response, proved) =
            self.signed(method, path, body, Some(Duration::from_secs(300))).await?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, answer, proved))
    }

    /// Sends one signed request with a fresh challenge: the response, and whether the gateway
    /// signed the challenge with the key it paired with.
    async fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(reqwest::Response, bool)> {
        use clade_core::Clock as _;
        let time = clade_core::SystemClock.now().as_millis();
        let signed = identity::request_text(method.as_str(), path, time, &body);
        let challenge = identity::challenge();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.profile.gateway))
            .header(PEER_HEADER, self.identity.public())
            .header(PEER_TIME_HEADER, time.to_string())
            .header(PEER_SIGNATURE_HEADER, self.identity.sign(&[identity::REQUEST, &signed]))
            .header(CHALLENGE_HEADER, &challenge);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if !body.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.profile.gateway))?;
        let proved = response
            .headers()
            .get(HOST_SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proof| {
                identity::verify(
                    &self.profile.gateway_key,
                    &[identity::HOST_PROOF, challenge.as_bytes()],
                    proof,
                )
            });
        Ok((response, proved))
    }
}

/// Standard input's lines, read on a thread of their own: a chat the gateway ends exits at
/// once, where a read on the runtime's blocking pool would hold the exit until a line came.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Where a chat sends: an agent (this CLI's session with it), or a session by id.
enum Target {
    Agent(String),
    Session(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Agent(agent) => write!(f, "{agent}"),
            Target::Session(id) => write!(f, "session {id}"),
        }
    }
}

/// A chat's hold on a session's stream.
struct Attached {
    /// Why the gateway ended the stream, once it did.
    ended: tokio::sync::watch::Receiver<Option<String>>,
    _follow: AbortOnDrop,
}

/// Stops following the stream (closing it) when the chat ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
