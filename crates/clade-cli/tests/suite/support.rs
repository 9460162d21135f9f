//! Running the binary: one-shot commands and a served gateway.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use assert_cmd::cargo::CommandCargoExt;

pub struct Env {
    pub tmp: tempfile::TempDir,
    /// Extra environment for every command (e.g. subscriber secrets).
    pub vars: Vec<(String, String)>,
}

/// How long a one-shot command may run.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(150);

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: stdout={} stderr={}", self.stdout, self.stderr);
        self
    }

    /// Asserts a failure with a one-line error containing `needle`.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_ne!(self.code, 0, "expected failure, got stdout={}", self.stdout);
        let line = self.stderr.trim();
        assert!(line.starts_with("error: "), "stderr: {line}");
        assert_eq!(line.lines().count(), 1, "error must be one line: {line}");
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Env {
    pub fn new() -> Self {
        Self { tmp: tempfile::tempdir().unwrap(), vars: Vec::new() }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::cargo_bin("clade").unwrap();
        for var in [
            "CLADE_AGENT",
            "CLADE_TENANT",
            "CLADE_STORE",
            "CLADE_CONFIG",
            "CLADE_MASTER_KEY",
            "CLADE_TOKEN",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("CLADE_DATA_DIR", self.data_dir());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        // A command that hangs is killed before the test's own limit, with its threads'
        // stacks, so a rare hang in CI says where it was.
        let pid = child.id();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || match finished.recv_timeout(RUN_LIMIT) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let stacks = clade_test_support::thread_stacks(pid);
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                Some(stacks)
            }
            _ => None,
        });
        let out = child.wait_with_output().unwrap();
        let _ = done.send(());
        if let Some(stacks) = watchdog.join().unwrap() {
            panic!(
                "`clade {}` ran over {RUN_LIMIT:?} and was killed\n--- stdout\n{}\n--- stderr\n{}\n--- its threads\n{stacks}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `clade serve` on a free port and waits until it listens.
    pub fn serve(&self, extra: &[&str]) -> Server {
        self.serve_with(extra, &[])
    }

    /// Like [`Env::serve`] with extra environment variables for this server only.
    pub fn serve_with(&self, extra: &[&str], vars: &[(&str, &str)]) -> Server {
        self.try_serve_with(extra, vars).expect("server printed nothing")
    }

    /// Like [`Env::serve_with`], but `None` if the server exits before it listens (e.g. at an
    /// armed failpoint during start-up).
    pub fn try_serve_with(&self, extra: &[&str], vars: &[(&str, &str)]) -> Option<Server> {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(extra);
        self.spawn_service(&args, vars)
    }

    /// Starts a long-running command (`serve`, `cron-service`) and waits for the first line it
    /// prints, which names its `http://` address.
    pub fn spawn_service(&self, args: &[&str], vars: &[(&str, &str)]) -> Option<Server> {
        let mut child = self
            .command()
            .envs(vars.iter().copied())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = match lines.next() {
            Some(Ok(line)) => line,
            _ => {
                let _ = child.wait();
                return None;
            }
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        // Keep draining both pipes so the server never blocks on a full one.
        std::thread::spawn(move || for _ in lines {});
        let (logs, logs_read) = gathered(child.stderr.take().unwrap());
        // The CLI token `serve` writes at its first start (none before one ran).
        let token = std::fs::read_to_string(self.data_dir().join("token"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Some(Server { child, url, token, logs, logs_read })
    }
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub token: String,
    logs: Arc<Mutex<String>>,
    /// Told when the server's standard error has ended and every line of it is in `logs`.
    logs_read: std::sync::mpsc::Receiver<()>,
}

impl Server {
    /// Whether the server process ends within `within` (e.g. at a failpoint).
    pub fn exits_within(&mut self, within: std::time::Duration) -> bool {
        let child = &mut self.child;
        let every = std::time::Duration::from_millis(20);
        polled_blocking(within, every, || matches!(child.try_wait(), Ok(Some(_))), |&exited| exited)
    }

    /// The items of the page at `path` once `done` holds for them (or 30 s pass).
    pub async fn items_until(
        &self,
        path: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        self.items_as_until(None, path, done).await
    }

    /// [`Server::items_until`], read with `token` (the server's own when `None`).
    pub async fn items_as_until(
        &self,
        token: Option<&str>,
        path: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let read = async || {
            let page = self.send("GET", path, token, None).await.1;
            page["items"].as_array().cloned().unwrap_or_default()
        };
        polled(read, |items: &Vec<serde_json::Value>| done(items)).await
    }

    /// A session's first page of turns once `done` holds for them (or 30 s pass).
    pub async fn turns_until(
        &self,
        session: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        self.items_until(&format!("/v1/sessions/{session}/turns"), done).await
    }

    /// Every turn of a session, following `next_cursor` page by page.
    pub async fn all_turns(&self, session: &str) -> Vec<serde_json::Value> {
        let mut turns = Vec::new();
        let mut path = format!("/v1/sessions/{session}/turns?limit=50");
        loop {
            let page = self.get_json(&path).await;
            turns.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(cursor) => {
                    path = format!("/v1/sessions/{session}/turns?limit=50&cursor={cursor}")
                }
                None => return turns,
            }
        }
    }

    /// The sessions of `agent` from `platform` on `channel`, as `GET /v1/sessions` lists them.
    pub async fn sessions_on(
        &self,
        agent: &str,
        platform: &str,
        channel: &str,
    ) -> Vec<serde_json::Value> {
        let sessions = self.get_json(&format!("/v1/sessions?agent={agent}")).await;
        sessions["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s["platform"] == platform && s["channel"] == channel)
            .collect()
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `method path` with a JSON body and `token` (the server's own when `None`): status and
    /// JSON answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        request(&self.url, token.unwrap_or(&self.token), method, path, body).await
    }

    /// What a spawned task needs to call this server: its URL and token.
    pub fn address(&self) -> (String, String) {
        (self.url.clone(), self.token.clone())
    }

    /// Kills the server with SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // Already dead (a failpoint); its pid may belong to someone else now.
        }
        let _ = Command::new("kill").arg("-9").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Stops the server and returns what it logged.
    pub fn stop(mut self) -> String {
        unsafe_free_kill(&mut self.child);
        // Until the reader thread has taken the last lines (bounded: a process the server
        // started may still hold the pipe).
        let _ = self.logs_read.recv_timeout(std::time::Duration::from_secs(2));
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM through the `kill` command (no unsafe libc call) and waits for exit.
fn unsafe_free_kill(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// What `pipe` says, gathered line by line by a thread of its own as it comes; the receiver is
/// told once the pipe has ended and every line is in.
pub fn gathered(
    pipe: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::sync::mpsc::Receiver<()>) {
    let said = Arc::new(Mutex::new(String::new()));
    let sink = said.clone();
    let (ended, end) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut said = sink.lock().unwrap();
            said.push_str(&line);
            said.push('\n');
        }
        let _ = ended.send(());
    });
    (said, end)
}

/// `method url+path` with a bearer token and an optional JSON body: status and JSON answer.
pub async fn request(
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(method, format!("{url}{path}")).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

pub fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Serves `handler` at `POST /hook` on a free local port (a webhook receiver); its URL.
pub async fn serve_hook<H, T>(handler: H) -> String
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let app = axum::Router::new().route("/hook", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Creates a token for `tenant` with `scopes`; its secret (and id, from the CLI's note).
pub fn token(env: &Env, tenant: &str, scopes: &[&str]) -> (String, String) {
    let mut args = vec!["--tenant", tenant, "tokens", "create", "--name", "test"];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let out = env.run(&args).ok();
    let id = out.stderr.split_whitespace().nth(1).unwrap().to_owned();
    (out.stdout.trim().to_owned(), id)
}

/// The next text frame of a WebSocket, as JSON (a test fails after 20 s without one).
pub async fn read<S>(socket: &mut S) -> serde_json::Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next())
            .await
            .expect("no WebSocket frame within 20 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// A program from outside the project that a test needs (`found`, if it was). `None`, said
/// loudly, when it is missing, except under `CI=true`, where that fails the test: CI must never
/// skip it silently. `what` names it, `test` the test skipped, `how` how to install it.
pub fn required_tool(
    found: Option<std::path::PathBuf>,
    what: &str,
    test: &str,
    how: &str,
) -> Option<std::path::PathBuf> {
    if found.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{what} is missing: {how}");
        eprintln!("WARNING: {what} is not installed: {test} is SKIPPED ({how})");
    }
    found
}

/// The program `name` from the `PATH` (a package scripts/test installs): as [`required_tool`]
/// says, `None` said loudly when missing, a failure under `CI=true`.
pub fn on_path(name: &str, test: &str, how: &str) -> Option<std::path::PathBuf> {
    let dirs = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
    let found = dirs.map(|dir| dir.join(name)).find(|p| p.is_file());
    required_tool(found, name, test, how)
}

/// The folder of the real all-MiniLM-L6-v2 model files: `CLADE_TEST_MINILM`, set by
/// `scripts/test`, which downloads them into `target/models`. `None`, said loudly, when there is
/// none, except under `CI=true`, where that fails the test.
pub fn minilm(test: &str) -> Option<String> {
    let found = std::env::var_os("CLADE_TEST_MINILM")
        .map(std::path::PathBuf::from)
        .filter(|dir| dir.join("model.safetensors").is_file());
    required_tool(
        found,
        "the all-MiniLM-L6-v2 model files",
        test,
        "run scripts/test, which downloads them into target/models",
    )
    .map(|dir| dir.to_string_lossy().into_owned())
}

/// The Python with the official packages from PyPI (`openai`, `mcp`, `standardwebhooks`):
/// `CLADE_PYCLIENTS`, set by
/// `scripts/test`, which installs them into `target/pyclients`. `None`, said loudly, when there
/// is none, except under `CI=true`, where that fails the test.
pub fn python_clients(test: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("CLADE_PYCLIENTS")
        .map(|dir| std::path::PathBuf::from(dir).join("bin/python"))
        .filter(|python| python.is_file());
    required_tool(
        found,
        "the Python clients (openai, mcp, standardwebhooks)",
        test,
        "run scripts/test, which installs them into target/pyclients",
    )
}

/// A free local port (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a client script of `tests/clients` with `python` and `args`; what it printed, as JSON.
pub fn run_client(python: &std::path::Path, script: &str, args: &[&str]) -> serde_json::Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    #[allow(clippy::disallowed_methods)] // The client under test is a program we did not write.
    let out = std::process::Command::new(python).arg(&script).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap()
}

/// `ada` in the default tenant and `bob` in the tenant `rival`, whose token (read and send) is
/// returned: the two sides of a client test that tries one tenant against the other.
pub fn ada_and_rival_bob(env: &Env) -> String {
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "rival"]).ok();
    env.run(&["--tenant", "rival", "agents", "create", "bob"]).ok();
    token(env, "rival", &["read", "send"]).0
}

/// Waits until `done` holds for what `shared` holds (a fake platform's record), or 30 s pass;
/// whether it did.
pub async fn until<T>(shared: &Arc<Mutex<T>>, done: impl Fn(&T) -> bool) -> bool {
    // A fake's record is cheap to look at: look often, so a test waits no longer than it must.
    let every = std::time::Duration::from_millis(20);
    polled_within(PATIENCE, every, async || done(&shared.lock().unwrap()), |&held| held).await
}

/// Chat completions `stub` has been asked for so far.
pub fn model_calls(stub: &clade_stub::Stub) -> usize {
    stub.captured().iter().filter(|c| c.path == "/v1/chat/completions").count()
}

/// Waits until `stub` has been asked for `n` chat completions in all, so that a test can act
/// while a turn's model call is under way (a turn is stored only with its first step, after
/// that call answers, so the gateway cannot show it sooner).
pub async fn model_called(stub: &clade_stub::Stub, n: usize) {
    let seen = polled(async || model_calls(stub), |&seen| seen >= n).await;
    assert!(seen >= n, "the model was asked {seen} times, not {n}");
}

pub use clade_test_support::wait::{
    PATIENCE, POLL, eventually, holds_for, polled, polled_blocking, polled_within,
};

/// A data dir with `ada` and the rival tenant's `bob` (see [`ada_and_rival_bob`]) under
/// `config` (clade.yaml), with `vars` set for every command; and the rival's token.
pub fn two_tenants_under(config: &str, vars: &[(&str, &str)]) -> (Env, String) {
    let mut env = Env::new();
    let rival = ada_and_rival_bob(&env);
    write(&env.data_dir().join("clade.yaml"), config);
    env.vars.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    (env, rival)
}

/// One part of a `multipart/form-data` body.
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// The parts of a `multipart/form-data` body (RFC 7578) of content type `kind`, as a platform's
/// server reads an upload; `None` when it is not one.
pub fn multipart(kind: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = kind.strip_prefix("multipart/form-data; boundary=")?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
    };
    let mut parts = Vec::new();
    let mut at = find(body, delimiter.as_bytes(), 0)? + delimiter.len();
    loop {
        if body.get(at..at + 2)? == b"--" {
            return Some(parts);
        }
        let start = at + 2;
        let head_end = find(body, b"\r\n\r\n", start)?;
        let head = std::str::from_utf8(&body[start..head_end]).ok()?;
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), head_end + 4)?;
        let disposition =
            head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let field = |key: &str| {
            // " name=" is not within " filename=".
            let from = disposition.find(&format!(" {key}=\""))? + key.len() + 3;
            let to = disposition[from..].find('"')? + from;
            Some(disposition[from..to].to_owned())
        };
        parts.push(Part {
            name: field("name")?,
            filename: field("filename"),
            data: body[head_end + 4..next].to_vec(),
        });
        at = next + 2 + delimiter.len();
    }
}

/// A data dir whose agent `ada` may attach files to its replies (`reply.attach`), under the
/// `channels` YAML given (the `channels:` key's lines) with `vars` set; and its workspace, with
/// `files` (path, bytes) written into it.
pub fn attaching_agent(
    channels: &str,
    vars: &[(&str, &str)],
    files: &[(&str, &[u8])],
) -> (Env, PathBuf) {
    let mut env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "channels:\n{channels}default_agent: ada\ntools:\n  policy:\n    - {{ effect: allow, tool: reply.attach }}\n"
        ),
    );
    for (name, value) in vars {
        env.vars.push(((*name).to_owned(), (*value).to_owned()));
    }
    let ws = PathBuf::from(env.run(&["agents", "workspace", "ada"]).ok().stdout.trim());
    for (path, bytes) in files {
        let path = ws.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    (env, ws)
}

/// Pairs the machine `host` (its own data dir) as the listener of `channel` on `platform` with
/// the gateway of `gateway` serving at `url`: `clade remote listen` there, `clade pair
/// listener` on the gateway's side, as an operator would.
pub fn pair_listener(gateway: &Env, url: &str, host: &Env, channel: &str, platform: &str) {
    const PAIR: (&str, &str) = ("CLADE_PAIR_TOKEN", "pairing-secret-0123456789");
    let mut waiting = host
        .spawn_service(&["remote", "listen", "--listen", "127.0.0.1:0", "--gateway", url], &[PAIR])
        .expect("clade remote listen printed nothing");
    let paired = gateway
        .command()
        .env(PAIR.0, PAIR.1)
        .args(["pair", "listener", &waiting.url, channel, "--platform", platform])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&paired.stdout);
    assert!(paired.status.success(), "{said}{}", String::from_utf8_lossy(&paired.stderr));
    assert!(said.contains(&format!("paired listener {platform}-{channel}")), "{said}");
    assert!(waiting.exits_within(std::time::Duration::from_secs(10)));
}

/// Another machine for a channel's listener: the gateway's clade.yaml, and of the environment
/// only `vars` (the platform's tokens, none of the channel's secrets).
pub fn listener_host(gateway: &Env, vars: &[(&str, &str)]) -> Env {
    let mut host = Env::new();
    let yaml = std::fs::read_to_string(gateway.data_dir().join("clade.yaml")).unwrap();
    write(&host.data_dir().join("clade.yaml"), &yaml);
    for (name, value) in vars {
        host.vars.push(((*name).to_owned(), (*value).to_owned()));
    }
    host
}

/// A data dir whose clade.yaml routes to `stub` as `paid` ($2 and $8 a million tokens in and
/// out), beside `cheap` ($0.10 and $0.40) on the same stub: for tests of costs and estimates.
pub fn priced_models(stub: &clade_stub::Stub) -> Env {
    let mut env = Env::new();
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "models:\n  paid:\n    provider: openai\n    base_url: {url}/v1\n    api_key_env: STUB_KEY\n    price: {{ input_per_mtok: 2, output_per_mtok: 8 }}\n  cheap:\n    provider: openai\n    base_url: {url}/v1\n    api_key_env: STUB_KEY\n    price: {{ input_per_mtok: 0.1, output_per_mtok: 0.4 }}\nrouting:\n  default: [paid]\n",
            url = stub.url()
        ),
    );
    env
}
