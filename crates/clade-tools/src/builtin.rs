//! Built-in tools.
//!
//! Touching nothing on the host: `time.now`, `echo`; the test ledger (`ledger.append`,
//! `ledger.append_idempotent`), which appends to one operator-configured file so crash tests
//! can count side effects independently of Clade's own records. Touching the host, and so
//! denied unless a policy rule allows them: `shell.exec` (in the [`crate::sandbox`]),
//! `fs.read`, `fs.write`, `fs.list`, `fs.search` and `reply.attach` (confined to the agent's
//! workspace by [`crate::workspace`]) and `http.request` (behind the [`crate::net`] egress
//! guard).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clade_core::{Clock, SystemClock};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sandbox::{Exec, Sandbox};
use crate::{CallContext, EffectClass, Error, Registry, Tool, ToolResult, TypedTool, workspace};

/// Every built-in that needs no operator setting, sharing one sandbox.
pub fn register_all(registry: &mut Registry, sandbox: Arc<Sandbox>) {
    let workspace_bytes = sandbox.limits().workspace_mib.saturating_mul(1024 * 1024);
    registry.register(Arc::new(TimeNow));
    registry.register(Arc::new(Echo));
    registry.register(Arc::new(ShellExec { sandbox }));
    registry.register(Arc::new(FsRead));
    registry.register(Arc::new(FsWrite { workspace_bytes }));
    registry.register(Arc::new(FsList));
    registry.register(Arc::new(FsSearch));
    registry.register(Arc::new(ReplyAttach));
    registry.register(Arc::new(HttpRequest));
}

/// Bytes as MiB with one decimal, for the model.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs blocking file work off the async threads.
/// A file's bytes as a tool answers them: text, with a note when cut at `max` bytes.
pub fn read_as_text(data: &[u8], truncated: bool, max: usize) -> String {
    let mut text = String::from_utf8_lossy(data).into_owned();
    if truncated {
        text.push_str(&format!("\n[truncated at {max} bytes]"));
    }
    text
}

/// A directory's entries as a tool answers them, one a line (`name/` for a directory).
pub fn listing(entries: &[workspace::Entry]) -> String {
    entries
        .iter()
        .map(|e| match e.kind {
            "dir" => format!("{}/", e.name),
            "file" => format!("{} ({} bytes)", e.name, e.size),
            other => format!("{} ({other})", e.name),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs blocking file work off the async runtime.
pub async fn blocking<T: Send + 'static, E: Into<Error> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done.map_err(Into::into),
        Err(e) => Err(Error::internal("the tool's work stopped unfinished: try again", e)),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

pub struct TimeNow;

impl TypedTool for TimeNow {
    type Args = NoArgs;
    const NAME: &'static str = "time.now";
    const DESCRIPTION: &'static str = "The current date and time in UTC (RFC 3339).";
    const EFFECT: EffectClass = EffectClass::Pure;
    fn run<'a>(&'a self, _args: NoArgs, _ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async { Ok(SystemClock.now().to_string()) })
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct EchoArgs {
    /// Returned unchanged.
    pub text: String,
}

pub struct Echo;

impl TypedTool for Echo {
    type Args = EchoArgs;
    const NAME: &'static str = "echo";
    const DESCRIPTION: &'static str = "Returns its `text` argument unchanged.";
    const EFFECT: EffectClass = EffectClass::Pure;
    fn run<'a>(&'a self, args: EchoArgs, _ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move { Ok(args.text) })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellArgs {
    /// Program and arguments, run directly (no shell). Give this or `command`.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// A command line run by `/bin/sh -c`. Give this or `argv`.
    #[serde(default)]
    pub command: Option<String>,
    /// Text written to the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
}

impl ShellArgs {
    fn argv(&self) -> Result<Vec<String>, Error> {
        match (&self.argv, &self.command) {
            (Some(argv), None) if !argv.is_empty() => Ok(argv.clone()),
            (None, Some(command)) if !command.trim().is_empty() => {
                Ok(vec!["/bin/sh".into(), "-c".into(), command.clone()])
            }
            _ => Err(Error::failed(
                "shell.exec needs exactly one of `argv` (a non-empty list) or `command`",
            )),
        }
    }
}

/// Runs a command in the agent's workspace, in the sandbox.
pub struct ShellExec {
    pub sandbox: Arc<Sandbox>,
}

impl TypedTool for ShellExec {
    type Args = ShellArgs;
    const NAME: &'static str = "shell.exec";
    const DESCRIPTION: &'static str = "Runs a command in the agent's workspace (mounted at /workspace) inside a sandbox without network unless granted. Returns the exit code, stdout and stderr.";
    const TOUCHES_HOST: bool = true;
    const RUNS_IN_SANDBOX: bool = true;
    /// The argument list, quoted (`/bin/sh -c '<line>'` for a shell line): what approvals and
    /// the audit log show.
    fn resource(&self, args: &ShellArgs) -> Result<String, crate::Error> {
        Ok(crate::argv::quote(&args.argv()?))
    }

    fn argv(&self, args: &ShellArgs) -> Option<Vec<String>> {
        args.argv().ok()
    }

    fn run<'a>(&'a self, args: ShellArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let argv = args.argv()?;
            // A program allowed by its name starts no other program (a hook, a pager, `sh`);
            // a shell is allowed to run what it runs.
            let program = crate::argv::program_name(&argv[0]);
            let exec_only_itself = !crate::init::SHELLS.contains(&program);
            let exec = Exec {
                argv,
                exec_only_itself,
                workspace: ctx.workspace()?.clone(),
                network: ctx.granted.network,
                egress: crate::egress::EgressRules {
                    private_network: ctx.granted.private_network,
                    hosts: ctx.granted.hosts.clone(),
                },
                env: ctx.env.clone(),
                stdin: args.stdin.map(String::into_bytes),
                room: ctx.workspace_room.clone(),
            };
            let out = self.sandbox.run(exec).await?;
            let text = out.render(self.sandbox.limits());
            if out.success() { Ok(text) } else { Err(Error::Failed(text)) }
        })
    }
}

fn path_resource(path: &str) -> Result<String, Error> {
    Ok(workspace::normalize(path)?)
}

fn default_dot() -> String {
    ".".into()
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// Path relative to the workspace.
    pub path: String,
    /// Most bytes returned (default 256 KiB).
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

pub struct FsRead;

impl TypedTool for FsRead {
    type Args = ReadArgs;
    const NAME: &'static str = "fs.read";
    const DESCRIPTION: &'static str = "Reads a text file of the agent's workspace.";
    const EFFECT: EffectClass = EffectClass::Pure;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &ReadArgs) -> Result<String, crate::Error> {
        path_resource(&args.path)
    }
    fn run<'a>(&'a self, args: ReadArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let root = ctx.workspace()?.clone();
            let max = args.max_bytes.unwrap_or(256 * 1024).min(4 * 1024 * 1024);
            let (data, truncated) =
                blocking(move || workspace::read(&root, &args.path, max)).await?;
            Ok(read_as_text(&data, truncated, max))
        })
    }
}

/// The largest file a reply carries (what Telegram's bots may send is 50 MB; Discord takes
/// less, and its channel says so in the chat).
pub const MAX_REPLY_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// The tool that attaches a file to a reply: the engine collects its results.
pub const REPLY_ATTACH: &str = "reply.attach";
/// The most files one reply carries.
pub const MAX_REPLY_FILES: usize = 10;
/// The longest caption, in characters (Telegram's limit, the smallest of the platforms').
const MAX_CAPTION: usize = 1024;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachArgs {
    /// Path of the file, relative to the workspace.
    pub path: String,
    /// A line shown with the file, where the platform can.
    #[serde(default)]
    pub caption: Option<String>,
}

/// Attaches a workspace file to the turn's reply: it is checked now (inside the workspace, a
/// regular file reached through no link, within the size limit) and sent by the chat channel
/// after the reply's text, when it is checked again. The executor collects the results.
pub struct ReplyAttach;

impl TypedTool for ReplyAttach {
    type Args = AttachArgs;
    const NAME: &'static str = REPLY_ATTACH;
    const DESCRIPTION: &'static str = "Sends a file of the agent's workspace to the person it talks to, with this turn's reply (chat channels; at most 20 MB and 10 files a reply).";
    const EFFECT: EffectClass = EffectClass::Pure;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &AttachArgs) -> Result<String, crate::Error> {
        path_resource(&args.path)
    }
    fn run<'a>(&'a self, args: AttachArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            if args.caption.as_ref().is_some_and(|c| c.chars().count() > MAX_CAPTION) {
                return Err(format!("caption: at most {MAX_CAPTION} characters").into());
            }
            let root = ctx.workspace()?.clone();
            let path = workspace::normalize(&args.path)?;
            let read = path.clone();
            let data = blocking(move || workspace::read_upload(&root, &read, MAX_REPLY_FILE_BYTES))
                .await?;
            if data.is_empty() {
                return Err(format!("cannot send {path:?}: it is empty").into());
            }
            let file = clade_protocol::ReplyFile {
                path,
                bytes: data.len() as u64,
                caption: args.caption.filter(|c| !c.trim().is_empty()),
            };
            serde_json::to_string(&file)
                .map_err(|e| Error::internal("the attachment could not be described", e))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// Path relative to the workspace; parent directories are created.
    pub path: String,
    pub content: String,
    /// Append instead of replacing.
    #[serde(default)]
    pub append: bool,
}

pub struct FsWrite {
    /// What the workspace may hold (`tools.limits.workspace_mib`).
    workspace_bytes: u64,
}

impl TypedTool for FsWrite {
    type Args = WriteArgs;
    const NAME: &'static str = "fs.write";
    const DESCRIPTION: &'static str = "Writes (or appends to) a file of the agent's workspace.";
    const EFFECT: EffectClass = EffectClass::AtMostOnce;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &WriteArgs) -> Result<String, crate::Error> {
        path_resource(&args.path)
    }
    fn run<'a>(&'a self, args: WriteArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let root = ctx.workspace()?.clone();
            let path = args.path.clone();
            let room = ctx.workspace_room.as_ref().map(crate::WorkspaceRoom::bytes);
            let quota = room.map_or(self.workspace_bytes, |room| room.min(self.workspace_bytes));
            let key = crate::sandbox::quota_key(quota < self.workspace_bytes);
            let n = blocking(move || {
                // What the write adds, at most: all of it (a replaced file's old bytes are
                // not subtracted, so a write never passes the quota by a guess).
                let used = workspace::usage(&root);
                let adding = args.content.len() as u64;
                if used.saturating_add(adding) > quota {
                    return Err(crate::Error::failed(format!(
                        "the workspace holds {} of its {} quota ({key}), and {} more would pass it: delete files you no longer need first",
                        mib(used),
                        mib(quota),
                        mib(adding)
                    )));
                }
                Ok(workspace::write(&root, &args.path, args.content.as_bytes(), args.append)?)
            })
            .await?;
            Ok(format!("wrote {n} bytes to {path}"))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Directory relative to the workspace (default: its root).
    #[serde(default = "default_dot")]
    pub path: String,
}

pub struct FsList;

impl TypedTool for FsList {
    type Args = ListArgs;
    const NAME: &'static str = "fs.list";
    const DESCRIPTION: &'static str = "Lists a directory of the agent's workspace.";
    const EFFECT: EffectClass = EffectClass::Pure;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &ListArgs) -> Result<String, crate::Error> {
        path_resource(&args.path)
    }
    fn run<'a>(&'a self, args: ListArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let root = ctx.workspace()?.clone();
            let entries = blocking(move || workspace::list(&root, &args.path)).await?;
            Ok(listing(&entries))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// Text to find (plain, case-sensitive).
    pub text: String,
    /// Directory to search under (default: the whole workspace).
    #[serde(default = "default_dot")]
    pub path: String,
    /// Most matching lines returned (default 100).
    #[serde(default)]
    pub max_results: Option<usize>,
}

pub struct FsSearch;

impl TypedTool for FsSearch {
    type Args = SearchArgs;
    const NAME: &'static str = "fs.search";
    const DESCRIPTION: &'static str =
        "Finds lines containing a text in the files of the agent's workspace.";
    const EFFECT: EffectClass = EffectClass::Pure;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &SearchArgs) -> Result<String, crate::Error> {
        path_resource(&args.path)
    }
    fn run<'a>(&'a self, args: SearchArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let root = ctx.workspace()?.clone();
            let max = args.max_results.unwrap_or(100).min(1000);
            let hits =
                blocking(move || workspace::search(&root, &args.path, &args.text, max)).await?;
            if hits.is_empty() {
                return Ok("no matches".into());
            }
            Ok(hits
                .iter()
                .map(|h| format!("{}:{}: {}", h.path, h.line, h.text))
                .collect::<Vec<_>>()
                .join("\n"))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// An http or https URL.
    pub url: String,
    /// GET by default.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
}

pub struct HttpRequest;

impl TypedTool for HttpRequest {
    type Args = HttpArgs;
    const NAME: &'static str = "http.request";
    const DESCRIPTION: &'static str = "Sends an HTTP request to a public address and returns the status and body (up to 1 MiB, 30 s).";
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &HttpArgs) -> Result<String, crate::Error> {
        let url =
            url::Url::parse(&args.url).map_err(|e| format!("invalid URL {:?}: {e}", args.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(crate::net::EgressError::Scheme(url.scheme().to_owned()).into());
        }
        let host = url.host_str().map(str::to_owned);
        host.ok_or_else(|| format!("URL {:?} has no host", args.url).into())
    }
    fn run<'a>(&'a self, args: HttpArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let request = crate::net::Request {
                method: args.method.unwrap_or_else(|| "GET".into()),
                url: args.url,
                headers: args.headers.into_iter().collect(),
                body: args.body,
                max_bytes: 1024 * 1024,
                timeout: Duration::from_secs(30),
                allow_private: ctx.granted.private_network,
            };
            Ok(crate::net::send(request).await?.for_the_model())
        })
    }
}

/// Appends `<effect key> <call id> <pid> <note>` lines to a file with `O_APPEND` and fsync.
pub struct Ledger {
    path: PathBuf,
    idempotent: bool,
}

impl Ledger {
    /// The at-most-once variant.
    pub fn at_most_once(path: PathBuf) -> Self {
        Self { path, idempotent: false }
    }

    /// The idempotent variant: the receiver (the file's reader) drops repeated keys.
    pub fn idempotent(path: PathBuf) -> Self {
        Self { path, idempotent: true }
    }
}

impl Tool for Ledger {
    fn name(&self) -> &str {
        if self.idempotent { "ledger.append_idempotent" } else { "ledger.append" }
    }
    fn description(&self) -> &str {
        "Test harness: appends a line to the side-effect ledger."
    }
    fn input_schema(&self) -> Value {
        json!({ "type": "object", "properties": { "note": { "type": "string" } } })
    }
    fn effect(&self) -> EffectClass {
        if self.idempotent { EffectClass::Idempotent } else { EffectClass::AtMostOnce }
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let note = args["note"].as_str().unwrap_or("-").replace(char::is_whitespace, "_");
            let line = format!(
                "{} {} {} {} {}\n",
                self.name(),
                ctx.idempotency_key,
                ctx.call_id,
                std::process::id(),
                note
            );
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || {
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                file.write_all(line.as_bytes())?;
                file.sync_data()
            })
            .await
            .map_err(|e| format!("ledger task failed: {e}"))?
            .map_err(|e| format!("cannot append to the ledger: {e}"))?;
            Ok("appended".to_owned())
        })
    }
}
