//! The process sandbox: every command a tool runs goes through [`Sandbox::run`].
//!
//! With bubblewrap (the default) a command sees a read-only system (`/usr` and the links into
//! it, a few files of `/etc`), its agent's workspace read-write at `/workspace` and nothing else
//! of the host: a private `/tmp`, new user, pid, ipc, uts, cgroup and (unless granted) network
//! namespaces, no capabilities, uid 65534, a new terminal session, and an environment holding
//! only what the call was granted. Every process gets rlimits (CPU, address space, file size,
//! processes, no core dumps); the whole tree dies at the wall-clock deadline or when its output
//! passes the cap. Without bubblewrap a command fails closed, naming the package to install.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clade_config::{SandboxLimits, SandboxMode};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::init::{InitConfig, InitReport};
pub use crate::seccomp::FORBIDDEN_SYSCALLS;
use crate::seccomp::{Action, Filter};

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the sandbox is unavailable: {0}. Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`), or, only if you accept running tools unsandboxed, set `tools.sandbox: none` in clade.yaml"
    )]
    Unavailable(String),
    #[error("cannot start the sandboxed command: {0}")]
    Spawn(std::io::Error),
    /// The self-check at start failed; carries its error, which says what to do.
    #[error("refused: the sandbox failed its self-check when the gateway started ({0})")]
    SelfCheckFailed(String),
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct Exec {
    /// Program and arguments, passed as argv (never through a shell unless argv says so).
    pub argv: Vec<String>,
    /// Host directory mounted read-write at `/workspace`, the working directory.
    pub workspace: PathBuf,
    /// A network grant: the command reaches out only through the egress proxy
    /// ([`crate::egress`]), under `egress`'s rules.
    pub network: bool,
    /// What a network grant reaches (ignored without one).
    pub egress: crate::egress::EgressRules,
    /// Extra environment (granted secrets).
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// The command may execute its own program only: set for a program run by its name (not a
    /// shell), so that an allowed program cannot start others ([`crate::init`]).
    pub exec_only_itself: bool,
    /// What the workspace may hold under its tenant's total, when that is set; the lower of
    /// this and `tools.limits.workspace_mib` binds, checked again as the run writes.
    pub room: Option<crate::WorkspaceRoom>,
}

/// What a command did.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Killed at the wall-clock deadline.
    pub timed_out: bool,
    /// Killed because its output passed the cap.
    pub output_capped: bool,
    /// Killed because the workspace passed its quota while it ran ([`crate::meter`]): the
    /// bytes it held then.
    pub over_quota: Option<u64>,
    /// Forbidden system calls processes of the command made (each process was killed), as the
    /// kernel reported them to the gateway: the call and the process.
    pub violations: Vec<String>,
    /// The signal that ended the command, as its init saw it (`waitpid`).
    pub signal: Option<i32>,
    /// Processes still running when the command ended (stopped with it), counted by its init.
    pub left_running: u32,
    /// Forks the run's process limit refused, from its pids cgroup (`pids.events`).
    pub forks_refused: u64,
    /// Files in the workspace whose setuid/setgid bits the sandbox cleared after the run.
    pub setid_cleared: usize,
    /// Destinations the egress proxy refused, each with the reason.
    pub egress_refused: Vec<String>,
    /// The workspace against its quota, when the quota bound the run: `(bytes used after it,
    /// bytes the workspace may hold, the largest file the run could write)`.
    pub workspace: Option<WorkspaceUse>,
}

/// An agent's workspace against its quota, around one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkspaceUse {
    /// Bytes the workspace held when the run ended.
    pub used: u64,
    /// Bytes it may hold (`tools.limits.workspace_mib`, or less under its tenant's total).
    pub quota: u64,
    /// The largest file the run could write: what was left of the quota, when less than
    /// `file_size_mib`.
    pub file_cap: u64,
    /// The quota is what the tenant's total left it, not `tools.limits.workspace_mib`.
    pub by_tenant: bool,
}

impl WorkspaceUse {
    /// The setting that sets the quota, as the refusal names it.
    pub fn quota_key(&self) -> &'static str {
        quota_key(self.by_tenant)
    }
}

/// The setting a workspace's quota comes from: its own, or its tenant's for all its agents.
pub(crate) fn quota_key(by_tenant: bool) -> &'static str {
    if by_tenant {
        "the tenant's quotas.workspace_mib, for all its agents' workspaces together"
    } else {
        "tools.limits.workspace_mib"
    }
}

/// What the sandbox stopped or refused during a run, as read back from its account
/// ([`ExecOutput::render`]); the runtime records each one in the audit log.
///
/// The first three come from the account's header, which the gateway writes from what the
/// kernel and the sandbox itself saw, before any of the command's output: a command cannot add,
/// change or hide them. The others are read from the command's error text and its command line
/// and are best-effort ([`Finding::best_effort`]): a command can word, redirect or suppress its
/// errors, so they may be missing or made up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Forbidden system calls, each with the process that made it (which was killed).
    Violation(Vec<String>),
    /// A limit the sandbox enforced: the wall clock, the output cap, a signal from an rlimit,
    /// forks the process limit refused, processes left running when the command ended.
    Limit(String),
    /// What the sandbox itself refused or undid: destinations the egress proxy refused,
    /// setuid/setgid bits it cleared in the workspace.
    Refused(Vec<String>),
    /// Best-effort: a limit the command's errors say it ran into (fork, memory, file size,
    /// descriptors, the size-capped `/tmp`).
    SeemsLimited(String),
    /// Best-effort: accesses the command's errors say were refused (a write to the read-only
    /// system, a permission the sandbox user lacks, an operation it may not do).
    Denied(Vec<String>),
    /// Best-effort: host paths the command named that its sandbox does not have: they exist on
    /// the host but read as missing inside (the data dir, another workspace, `/etc/shadow`, …).
    Hidden(Vec<String>),
    /// Best-effort: what the command asked for that the sandbox does not pass in: the daemon's
    /// environment or some of its variables, or the host's processes.
    Withheld(Vec<String>),
}

impl Finding {
    /// Whether it was read from the command's own text rather than recorded by the sandbox.
    pub fn best_effort(&self) -> bool {
        !matches!(self, Finding::Violation(_) | Finding::Limit(_) | Finding::Refused(_))
    }
}

/// Header lines of a run's account (see `ExecOutput::render`).
const VIOLATION_PREFIX: &str = "sandbox violation: forbidden system call ";
const LIMIT_PREFIX: &str = "killed";
const SIGNAL_PREFIX: &str = "ended by signal ";
const LEFT_RUNNING_PREFIX: &str = "sandbox: stopped ";
const FORKS_PREFIX: &str = "sandbox: the process limit ";
const SETID_PREFIX: &str = "sandbox: removed setuid/setgid bits";
/// A destination the egress proxy refused.
const EGRESS_PREFIX: &str = "egress refused: ";
/// A workspace at or past its quota after the run.
const WORKSPACE_PREFIX: &str = "sandbox: the workspace is full: ";
const MIB: f64 = 1024.0 * 1024.0;
/// Error texts of refused accesses, as libc's `strerror` spells them for EROFS, EACCES, EPERM
/// and ESRCH (a signal to a process outside the sandbox's pid namespace).
const DENIAL_TEXTS: [&str; 4] =
    ["Read-only file system", "Permission denied", "Operation not permitted", "No such process"];
/// Error texts that are refusals only in a run without a network grant, whose network
/// namespace holds nothing but its own loopback.
const OFFLINE_DENIAL_TEXTS: [&str; 2] = ["Connection refused", "Network is unreachable"];
/// Error texts of a resource limit a process ran into (fork, memory, file size, descriptors,
/// the size-capped `/tmp`), as libc, the shells and Python spell them.
const LIMIT_TEXTS: [&str; 7] = [
    "Cannot fork",
    "Resource temporarily unavailable",
    "Cannot allocate memory",
    "MemoryError",
    "File size limit exceeded",
    "Too many open files",
    "No space left on device",
];

/// Whether `text` is a run's account as [`ExecOutput::render`] writes it.
pub fn is_account(text: &str) -> bool {
    let first = text.lines().next().unwrap_or_default();
    first.starts_with(VIOLATION_PREFIX)
        || first.starts_with(LIMIT_PREFIX)
        || first.starts_with(SIGNAL_PREFIX)
        || first.starts_with("exit code ")
}

/// What the daemon knows of a run besides its account.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFacts<'a> {
    /// The command line it ran: its absolute paths are checked like the ones in error lines,
    /// and what it asks of the environment and of other processes is read from it.
    pub command: &'a str,
    /// Whether the run shared the host's network (a grant).
    pub network: bool,
    /// Names of the variables the call was granted (besides the sandbox's own `PATH`, …).
    pub granted_env: &'a [&'a str],
}

/// The findings in a run's account; none for text that is not an account.
pub fn findings(account: &str, run: &RunFacts<'_>) -> Vec<Finding> {
    let daemon_env: Vec<String> =
        std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()).collect();
    findings_with(account, run, &daemon_env, exists_on_host)
}

fn findings_with(
    account: &str,
    run: &RunFacts<'_>,
    daemon_env: &[String],
    exists: impl Fn(&Path) -> bool + Copy,
) -> Vec<Finding> {
    if !is_account(account) {
        return Vec::new();
    }
    let mut found = Vec::new();
    // The header: every line before the command's output, written by the gateway.
    let header = account
        .lines()
        .take_while(|l| *l != "stdout:" && *l != "stderr:")
        .take(MAX_VIOLATIONS + 10);
    let (mut violations, mut refused) = (Vec::new(), Vec::new());
    for line in header {
        if let Some(call) = line.strip_prefix(VIOLATION_PREFIX) {
            violations.push(call.split(';').next().unwrap_or(call).chars().take(200).collect());
        } else if line.starts_with(LIMIT_PREFIX)
            || line.starts_with(LEFT_RUNNING_PREFIX)
            || line.starts_with(FORKS_PREFIX)
        {
            found.push(Finding::Limit(line.chars().take(200).collect()));
        } else if line.starts_with(EGRESS_PREFIX) || line.starts_with(SETID_PREFIX) {
            refused.push(line.chars().take(300).collect());
        }
    }
    if !violations.is_empty() {
        found.insert(0, Finding::Violation(violations));
    }
    if !refused.is_empty() {
        found.push(Finding::Refused(refused));
    }
    // The command's stderr, and its stdout only when the command sent its errors there
    // (`2>&1`): otherwise stdout may be any data (a log that quotes an error).
    let (head, stderr) = account.rsplit_once("\nstderr:\n").unwrap_or((account, ""));
    let stdout = head.split_once("\nstdout:\n").map(|(_, out)| out).unwrap_or_default();
    let merged = ["2>&1", "|&", "&>", ">&"].iter().any(|op| run.command.contains(op));
    let errors = if merged { format!("{stdout}\n{stderr}") } else { stderr.to_owned() };
    // Without a network grant the run has a network of its own, empty: a refused or
    // unreachable connection is one to something outside it (a host abstract socket, say).
    let offline_texts: &[&str] = if run.network { &[] } else { &OFFLINE_DENIAL_TEXTS };
    let denied: Vec<String> = errors
        .lines()
        .filter(|line| DENIAL_TEXTS.iter().chain(offline_texts).any(|text| line.contains(text)))
        .take(5)
        .map(|line| line.chars().take(200).collect())
        .collect();
    if !denied.is_empty() {
        found.push(Finding::Denied(denied));
    }
    if !found.iter().any(|f| matches!(f, Finding::Limit(_)))
        && let Some(line) = errors.lines().find(|l| LIMIT_TEXTS.iter().any(|t| l.contains(t)))
    {
        found.push(Finding::SeemsLimited(line.chars().take(200).collect()));
    }
    let mut hidden = hidden_host_paths(&errors, true, exists);
    for path in hidden_host_paths(run.command, false, exists) {
        if hidden.len() < 5 && !hidden.contains(&path) {
            hidden.push(path);
        }
    }
    if !hidden.is_empty() {
        found.push(Finding::Hidden(hidden));
    }
    let withheld = withheld_from(run, daemon_env);
    if !withheld.is_empty() {
        found.push(Finding::Withheld(withheld));
    }
    found
}

/// Variables every sandboxed run has (see `bwrap_command`).
const SANDBOX_ENV: [&str; 4] = ["PATH", "HOME", "TMPDIR", "LANG"];
/// Commands that list processes (a pid namespace shows none of the host's).
const PROCESS_LISTERS: [&str; 8] =
    ["ps", "pgrep", "pkill", "pidof", "top", "htop", "killall", "pstree"];
/// How programs read one variable, just before its name.
const VARIABLE_READS: [&str; 14] = [
    "$",
    "${",
    "getenv(\"",
    "getenv('",
    "environ[\"",
    "environ['",
    "environ.get(\"",
    "environ.get('",
    "ENV{",
    "ENV{'",
    "ENV{\"",
    "ENV[\"",
    "ENV['",
    "process.env.",
];

/// What the sandbox withheld that the command asked for: the daemon's environment (all of it,
/// or the variables it named) and the host's processes. Read from the command line, since
/// inside the sandbox both simply are not there.
fn withheld_from(run: &RunFacts<'_>, daemon_env: &[String]) -> Vec<String> {
    let command = run.command;
    let withheld: Vec<&str> = daemon_env
        .iter()
        .map(String::as_str)
        .filter(|name| !SANDBOX_ENV.contains(name) && !run.granted_env.contains(name))
        .collect();
    let mut found = Vec::new();
    let simple_commands = command.split(|c: char| ";|&()`\n".contains(c)).map(|segment| {
        let mut words = segment
            .split_whitespace()
            .skip_while(|w| w.contains('=') || matches!(*w, "exec" | "command" | "nohup" | "time"));
        let program = words.next().map(|w| w.rsplit('/').next().unwrap_or(w)).unwrap_or_default();
        // Redirections are not operands (`env 2>/dev/null` still prints everything).
        let rest: Vec<&str> = words.filter(|w| !w.starts_with(['>', '<', '2'])).collect();
        (program, rest)
    });
    let mut dump = false;
    let mut lists_processes = false;
    for (program, rest) in simple_commands {
        let operands = rest.iter().filter(|w| !w.starts_with('-')).count();
        dump |= match program {
            "env" | "printenv" => operands == 0,
            "set" | "export" => rest.is_empty() || rest == ["-p"],
            "declare" | "typeset" => {
                rest.iter().any(|w| matches!(*w, "-x" | "-p")) && operands == 0
            }
            _ => false,
        };
        lists_processes |= PROCESS_LISTERS.contains(&program);
    }
    dump |= ["os.environ)", "os.environ.items", "os.environ.copy", "%ENV", "environ;"]
        .iter()
        .any(|text| command.contains(text))
        || command.split_whitespace().any(|w| w.starts_with("/proc/") && w.ends_with("/environ"));
    lists_processes |= command
        .split(|c: char| c.is_whitespace() || "'\"|;&<>".contains(c))
        .any(|w| matches!(w, "/proc" | "/proc/" | "/proc/*" | "/proc/[0-9]*"));
    if dump {
        found.push(format!("the daemon's environment ({} variables)", withheld.len()));
    }
    for name in &withheld {
        if found.len() >= 5 {
            break;
        }
        let named = command.match_indices(name).any(|(at, _)| {
            let after = command[at + name.len()..].chars().next();
            !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && VARIABLE_READS.iter().any(|read| command[..at].ends_with(read))
        });
        if named {
            found.push(format!("the daemon's variable {name}").chars().take(200).collect());
        }
    }
    if lists_processes {
        found.push("the host's processes (the sandbox has a pid namespace of its own)".into());
    }
    found
}

/// Host paths that a sandbox shows as they are: what is missing there is missing on the host.
const SHOWN_AS_IS: [&str; 8] =
    ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/workspace"];
/// Directories the sandbox has, but as its own (private `/tmp`, a few files of `/etc`, its own
/// `/proc` and `/dev`): a new name under them is not a host path.
const OWN_DIRS: [&str; 5] = ["/tmp", "/etc", "/proc", "/dev", "/"];
/// Error texts of a path that is not there, as libc and the shells spell them.
const MISSING_TEXTS: [&str; 3] =
    ["No such file or directory", "Directory nonexistent", "cannot access"];

/// Absolute paths in `text` (only its "not found" error lines when `errors_only`) that name
/// something the host has: the deepest
/// part of the path that exists on the host is not one of the sandbox's own directories.
/// `/proc/<pid>/root/…` and `/proc/<pid>/cwd/…` count as the host path after them, since on
/// the host that is what they lead to.
fn hidden_host_paths(text: &str, errors_only: bool, exists: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut hidden = Vec::new();
    let lines =
        text.lines().filter(|l| !errors_only || MISSING_TEXTS.iter().any(|t| l.contains(t)));
    for line in lines {
        // Shell operators split words too: `cat</etc/shadow`, `a;cat /x`, `$(cat /x)`.
        let words = line.split(|c: char| c.is_whitespace() || "<>|;&()=".contains(c));
        for token in words {
            let named = token
                .trim_end_matches([':', ','])
                .trim_matches(|c| matches!(c, '\'' | '"' | '`'))
                .trim_end_matches(':');
            if !named.starts_with('/')
                || SHOWN_AS_IS.iter().any(|p| Path::new(named).starts_with(p))
            {
                continue;
            }
            let host = host_view(named);
            let existing = host.ancestors().find(|a| exists(a)).unwrap_or(Path::new("/"));
            if OWN_DIRS.iter().any(|d| existing == Path::new(d)) {
                continue;
            }
            if hidden.len() < 5 && !hidden.iter().any(|h| h == named) {
                hidden.push(named.chars().take(200).collect());
            }
        }
    }
    hidden
}

/// Where a path named inside the sandbox leads on the host when it goes through another
/// process's root or working directory.
fn host_view(named: &str) -> PathBuf {
    let mut parts = named.trim_start_matches('/').splitn(4, '/');
    if let (Some("proc"), Some(_pid), Some("root" | "cwd"), rest) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    {
        return Path::new("/").join(rest.unwrap_or_default());
    }
    PathBuf::from(named)
}

#[allow(clippy::disallowed_methods)] // A yes/no probe: an unreadable path counts as absent.
fn exists_on_host(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

impl ExecOutput {
    /// A short account for the model: a header of what the sandbox saw (violations, how the
    /// command ended, limits, refusals), then stdout and stderr. The header comes first so
    /// nothing the command prints can pass for part of it.
    pub fn render(&self, limits: &SandboxLimits) -> String {
        let mut text = String::new();
        for call in &self.violations {
            text.push_str(&format!("{VIOLATION_PREFIX}{call}; that process was killed\n"));
        }
        text.push_str(&self.status_line(limits));
        if self.left_running > 0 {
            text.push_str(&format!(
                "{LEFT_RUNNING_PREFIX}{} process(es) still running when the command ended\n",
                self.left_running
            ));
        }
        if self.forks_refused > 0 {
            text.push_str(&format!(
                "{FORKS_PREFIX}of {} refused {} fork(s)\n",
                limits.processes, self.forks_refused
            ));
        }
        if let Some(workspace) = self.workspace.filter(|w| w.used >= w.quota) {
            text.push_str(&format!(
                "{WORKSPACE_PREFIX}{:.1} MiB used of its {:.1} MiB quota ({}): files cannot grow until you delete some\n",
                workspace.used as f64 / MIB,
                workspace.quota as f64 / MIB,
                workspace.quota_key()
            ));
        }
        if self.setid_cleared > 0 {
            text.push_str(&format!(
                "{SETID_PREFIX} from {} file(s) in the workspace\n",
                self.setid_cleared
            ));
        }
        for refusal in &self.egress_refused {
            text.push_str(EGRESS_PREFIX);
            text.push_str(&refusal.replace('\n', " "));
            text.push('\n');
        }
        if !self.stdout.is_empty() {
            text.push_str("stdout:\n");
            text.push_str(&String::from_utf8_lossy(&self.stdout));
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        if !self.stderr.is_empty() {
            text.push_str("stderr:\n");
            text.push_str(&String::from_utf8_lossy(&self.stderr));
        }
        text
    }

    /// How the command ended, as the account's first line after any violations.
    fn status_line(&self, limits: &SandboxLimits) -> String {
        if let (Some(used), Some(workspace)) = (self.over_quota, self.workspace) {
            return format!(
                "killed: the workspace passed its {:.1} MiB quota while the command ran ({:.1} MiB; {}); every process of the command was stopped. Delete files to make room\n",
                workspace.quota as f64 / MIB,
                used as f64 / MIB,
                workspace.quota_key()
            );
        }
        match (self.timed_out, self.output_capped, self.code, self.signal) {
            (true, _, _, _) => format!(
                "killed: wall-clock limit of {} s reached (every process of the command was stopped)\n",
                limits.timeout_secs
            ),
            (_, true, _, _) => {
                format!("killed: output passed the limit of {} bytes\n", limits.output_bytes)
            }
            (_, _, _, Some(signal)) => signal_line(signal, limits, self),
            (_, _, Some(code), None) => format!("exit code {code}\n"),
            (_, _, None, None) => {
                "killed by a signal (a resource limit may have been reached)\n".to_owned()
            }
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.stopped()
    }

    /// Whether the sandbox killed it: at its deadline, past its output cap or its quota.
    fn stopped(&self) -> bool {
        self.timed_out || self.output_capped || self.over_quota.is_some()
    }
}

/// The status line of a command a signal ended: a limit's signal starts with `killed`.
fn signal_line(signal: i32, limits: &SandboxLimits, out: &ExecOutput) -> String {
    match signal {
        libc::SIGXCPU => {
            format!(
                "killed by signal {signal} (SIGXCPU): CPU-time limit of {} s\n",
                limits.cpu_secs
            )
        }
        libc::SIGXFSZ => match out.workspace {
            Some(workspace) => format!(
                "killed by signal {signal} (SIGXFSZ): the workspace's quota left {:.1} MiB for files to grow ({})\n",
                workspace.file_cap as f64 / MIB,
                workspace.quota_key()
            ),
            None => format!(
                "killed by signal {signal} (SIGXFSZ): file-size limit of {} MiB\n",
                limits.file_size_mib
            ),
        },
        libc::SIGKILL if out.violations.is_empty() => format!(
            "killed by signal {signal} (SIGKILL): CPU-time limit of {} s, or out of memory\n",
            limits.cpu_secs
        ),
        libc::SIGKILL => {
            format!("{SIGNAL_PREFIX}{signal} (SIGKILL), after its forbidden system call\n")
        }
        _ => format!("{SIGNAL_PREFIX}{signal}\n"),
    }
}

/// Where and how commands run; cheap to share.
#[derive(Debug, Clone)]
pub struct Sandbox {
    mode: SandboxMode,
    bwrap: Option<PathBuf>,
    limits: SandboxLimits,
    /// A pids cgroup directory under which each run gets its own group, when the host lets
    /// this process create one. RLIMIT_NPROC does not bind processes owned by host root, so
    /// without it a root daemon's sandbox caps processes only by its deadline.
    pids_cgroup: Option<PathBuf>,
    /// The compiled seccomp filters bwrap loads before the command starts: for runs with a
    /// network grant, and for runs without (which also may not open internet sockets).
    seccomp: Option<Arc<SealedFilter>>,
    seccomp_offline: Option<Arc<SealedFilter>>,
    /// Loaded beside `seccomp` in services with a network grant (see [`Filter::NoUnixSockets`]).
    seccomp_no_unix: Option<Arc<SealedFilter>>,
    /// The program (and leading arguments) of the egress bridge that network-granted runs
    /// start inside the sandbox (see [`crate::egress`]); without it they are refused.
    egress_bridge: Option<Arc<[String]>>,
    /// The program (and leading arguments) of the init every tool run starts under
    /// ([`crate::init`]); without it tool runs are refused.
    init: Option<Arc<[String]>>,
    /// What the self-check found, shared by every clone.
    health: Arc<std::sync::RwLock<SandboxHealth>>,
}

/// Whether the sandbox works, as its self-check ([`Sandbox::self_check`]) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxHealth {
    /// `tools.sandbox: none`: tools run unsandboxed, by the operator's choice.
    Off,
    /// Not checked yet, or being checked: runs go ahead (and fail closed if it is broken).
    Checking,
    Ready,
    /// The self-check failed, for this reason: every run is refused at once.
    Broken(String),
}

impl SandboxHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            SandboxHealth::Off => "off",
            SandboxHealth::Checking => "checking",
            SandboxHealth::Ready => "ready",
            SandboxHealth::Broken(_) => "broken",
        }
    }
}

/// A compiled seccomp filter in a sealed memory file: nothing on disk to replace, and the seals
/// forbid any change to it. Its descriptor is inherited by the launcher, which opens it afresh
/// through `/proc/self/fd/<n>` (its own offset, so concurrent runs do not share one).
#[derive(Debug)]
struct SealedFilter {
    _fd: rustix::fd::OwnedFd,
    /// `/proc/self/fd/<n>`, as the launcher sees it.
    path: PathBuf,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// A small host-side launcher every process goes through: it closes every descriptor above
/// stderr (the daemon may have inherited some without close-on-exec from whatever started it,
/// and they would pass on to the command), then, for a sandboxed run, joins the run's pids
/// cgroup (so every process of the tree is counted from the first fork), and execs the
/// program. `$0` is the cgroup's `cgroup.procs` file or `-`; `$1` and `$2` seccomp filters
/// (`/proc/self/fd/<n>` of a [`SealedFilter`]) opened as descriptors 3 and 4 for
/// `bwrap --add-seccomp-fd` before anything else is closed, or `-`; `$3` the number of the
/// descriptor of the run's report socket, moved to 5 for the sandbox's init, or `-`. bash is
/// used where present because POSIX sh cannot close descriptors above 9.
const LAUNCHER: &str = r#"keep=:0:1:2:
if [ "$1" != "-" ]; then exec 3< "$1" || exit 125; keep=${keep}3:; fi
if [ "$2" != "-" ]; then exec 4< "$2" || exit 125; keep=${keep}4:; fi
if [ "$3" != "-" ]; then eval "exec 5<&$3" || exit 125; keep=${keep}5:; fi
for fd in /proc/$$/fd/*; do n=${fd##*/}; case $keep in *:$n:*) ;; *) eval "exec $n>&-" 2>/dev/null ;; esac; done
[ "$0" = "-" ] || echo $$ > "$0" || exit 125
shift 3
exec "$@""#;

/// Where the egress bridge's program is bound inside the sandbox.
const BRIDGE_PATH: &str = "/run/clade-egress-bridge";

/// `PATH` inside the sandbox.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// The uid and gid commands run as inside the sandbox (`nobody`).
const SANDBOX_ID: &str = "65534";

impl Sandbox {
    /// `bwrap`: the executable to use; `None` looks it up on `path_var` (the `PATH` value),
    /// then at `/usr/bin/bwrap`.
    pub fn new(
        mode: SandboxMode,
        bwrap: Option<PathBuf>,
        path_var: Option<&str>,
        limits: SandboxLimits,
    ) -> Self {
        let bwrap = bwrap.or_else(|| locate("bwrap", path_var));
        let pids_cgroup =
            std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| pids_cgroup(&c));
        let seccomp = seccomp_filter(Filter::Online).map(Arc::new);
        let seccomp_offline = seccomp_filter(Filter::Offline).map(Arc::new);
        let seccomp_no_unix = seccomp_filter(Filter::NoUnixSockets).map(Arc::new);
        Self {
            mode,
            bwrap,
            limits,
            pids_cgroup,
            seccomp,
            seccomp_offline,
            seccomp_no_unix,
            egress_bridge: None,
            init: None,
            health: Arc::new(std::sync::RwLock::new(match mode {
                SandboxMode::None => SandboxHealth::Off,
                SandboxMode::Bubblewrap => SandboxHealth::Checking,
            })),
        }
    }

    /// What the self-check found so far.
    pub fn health(&self) -> SandboxHealth {
        self.health.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Probes the sandbox ([`Sandbox::probe`]) and records the outcome for [`Sandbox::health`]:
    /// once broken, runs are refused at once with the reason instead of each failing in
    /// bubblewrap. Meant to run in the background while the gateway already answers.
    pub async fn self_check(&self) -> Result<(), SandboxError> {
        if self.mode == SandboxMode::None {
            return Ok(());
        }
        *self.health.write().unwrap_or_else(|e| e.into_inner()) = SandboxHealth::Checking;
        let outcome = self.probe().await;
        let health = match &outcome {
            Ok(()) => SandboxHealth::Ready,
            Err(err) => SandboxHealth::Broken(err.to_string()),
        };
        *self.health.write().unwrap_or_else(|e| e.into_inner()) = health;
        outcome
    }

    /// The egress bridge network-granted runs start inside the sandbox: a program (bound
    /// read-only into the sandbox) and its leading arguments, to which the listen address and
    /// the proxy's socket are appended (`clade __egress-bridge`, or `clade-egress-bridge`).
    pub fn with_egress_bridge(mut self, command: Vec<String>) -> Self {
        self.egress_bridge = (!command.is_empty()).then(|| command.into());
        self
    }

    /// The sandbox's init every tool run starts under: a program (bound read-only into the
    /// sandbox) and its leading arguments (`clade __sandbox-init`, or `clade-sandbox-init`).
    pub fn with_init(mut self, command: Vec<String>) -> Self {
        self.init = (!command.is_empty()).then(|| command.into());
        self
    }

    /// Whether each run's process count is capped by a cgroup (else only by RLIMIT_NPROC).
    pub fn has_pids_cgroup(&self) -> bool {
        self.pids_cgroup.is_some()
    }

    pub fn mode(&self) -> SandboxMode {
        self.mode
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Runs `true` in the sandbox: `Ok` when commands can run, else why not. Also removes
    /// empty run groups a previous process left behind.
    pub async fn probe(&self) -> Result<(), SandboxError> {
        if let Some(parent) = &self.pids_cgroup {
            for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                // Only groups of processes that are gone: `clade-<pid>-<run>`.
                let name = entry.file_name().to_string_lossy().into_owned();
                let owner = name.strip_prefix("clade-").and_then(|rest| rest.split('-').next());
                if let Some(pid) = owner {
                    let alive = Path::new("/proc").join(pid).is_dir();
                    if !alive {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
        }
        // A workspace of its own: the shared temporary directory changes under other programs'
        // writes, which the run's meter would count against the quota.
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("clade-probe-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(SandboxError::Spawn)?;
        let out = self
            .run(Exec {
                argv: vec!["true".into()],
                workspace: dir.clone(),
                network: false,
                egress: Default::default(),
                env: Vec::new(),
                stdin: None,
                exec_only_itself: false,
                room: None,
            })
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        let out = out?;
        if out.success() {
            Ok(())
        } else {
            Err(SandboxError::Unavailable(format!(
                "bubblewrap could not set up the sandbox ({}); user namespaces may be disabled on this host",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Runs one command under the limits; fails closed when no sandbox can be set up.
    pub async fn run(&self, exec: Exec) -> Result<ExecOutput, SandboxError> {
        if exec.argv.is_empty() {
            return Err(SandboxError::Spawn(std::io::Error::other("empty command")));
        }
        if let SandboxHealth::Broken(reason) = self.health() {
            return Err(SandboxError::SelfCheckFailed(reason));
        }
        let proxy = match (self.mode, exec.network) {
            (SandboxMode::Bubblewrap, true) => {
                if self.egress_bridge.is_none() {
                    return Err(SandboxError::Unavailable(
                        "network for sandboxed commands needs the egress bridge, which this process was not given".into(),
                    ));
                }
                let proxy =
                    crate::egress::EgressProxy::start(&std::env::temp_dir(), exec.egress.clone())
                        .map_err(|e| {
                        SandboxError::Unavailable(format!("cannot start the egress proxy: {e}"))
                    })?;
                Some(proxy)
            }
            _ => None,
        };
        if self.mode == SandboxMode::Bubblewrap && self.init.is_none() {
            return Err(SandboxError::Unavailable(
                "tool runs need the sandbox's init (the binary's __sandbox-init entry), which this process was not given".into(),
            ));
        }
        // A file may grow by what is left of the workspace's quota (RLIMIT_FSIZE binds each
        // file, so a full workspace lets commands delete but not write).
        let own = self.limits.workspace_mib.saturating_mul(1024 * 1024);
        let quota = exec.room.as_ref().map_or(own, |room| room.bytes().min(own));
        let by_tenant = quota < own;
        let file_size = self.limits.file_size_mib.saturating_mul(1024 * 1024);
        // Counting starts before the run, so none of its writes goes unseen.
        let meter = {
            let workspace = exec.workspace.clone();
            tokio::task::spawn_blocking(move || crate::meter::Meter::start(&workspace)).await.ok()
        };
        let used_before = meter.as_ref().map_or(u64::MAX, crate::meter::Meter::used);
        let file_cap = file_size.min(quota.saturating_sub(used_before));
        let watching = meter
            .filter(|_| self.mode == SandboxMode::Bubblewrap)
            .map(|meter| crate::meter::Watching::spawn(meter, own, exec.room.clone()));
        let group = self.pids_cgroup.as_ref().and_then(|parent| self.create_group(parent));
        let (command, report) = match self.mode {
            SandboxMode::Bubblewrap => {
                let (ours, theirs) = report_socket().map_err(SandboxError::Spawn)?;
                let command = self.bwrap_command(
                    &exec,
                    group.as_deref(),
                    Some(&theirs),
                    proxy.as_ref(),
                    file_cap,
                )?;
                (command, Some((ours, theirs)))
            }
            SandboxMode::None => (unsandboxed_command(&exec), None),
        };
        let (watching, over) = watching.unzip();
        let mut out = self.supervise(command, exec.stdin, report, over).await;
        drop(watching);
        if let (Ok(out), Some(proxy)) = (&mut out, &proxy) {
            out.egress_refused = proxy.refusals();
        }
        drop(proxy);
        if let Some(group) = group {
            if let Ok(out) = &mut out {
                out.forks_refused = forks_refused(&group);
            }
            remove_group(&group).await;
        }
        if self.mode == SandboxMode::Bubblewrap
            && let Ok(out) = &mut out
        {
            let workspace = exec.workspace.clone();
            let (cleared, used) = tokio::task::spawn_blocking(move || {
                (crate::workspace::strip_setid(&workspace), crate::workspace::usage(&workspace))
            })
            .await
            .unwrap_or((0, u64::MAX));
            out.setid_cleared = cleared;
            if file_cap < file_size || used >= quota || out.over_quota.is_some() {
                out.workspace = Some(WorkspaceUse { used, quota, file_cap, by_tenant });
            }
        }
        out
    }

    /// A long-lived service process an operator configured (an MCP server on stdio), killed
    /// when dropped. Under bubblewrap it is confined like a tool run — read-only system, `dir`
    /// as its only writable place (at `/workspace`), no network unless `network`, the same
    /// memory, file-size and process limits and seccomp filter — but with no CPU-time or
    /// wall-clock limit, since it lives as long as the daemon. Its environment is `PATH`,
    /// `HOME` and `LANG` plus `env`. With `sandbox: none` it runs with the daemon's rights.
    pub fn service_command(
        &self,
        argv: &[String],
        env: &[(String, String)],
        dir: &Path,
        network: bool,
    ) -> Result<tokio::process::Command, SandboxError> {
        if argv.is_empty() {
            return Err(SandboxError::Spawn(std::io::Error::other("empty command")));
        }
        let exec = Exec {
            argv: argv.to_vec(),
            workspace: dir.to_owned(),
            network,
            egress: Default::default(),
            env: env.to_vec(),
            stdin: None,
            exec_only_itself: false,
            room: None,
        };
        let mut command = match self.mode {
            SandboxMode::Bubblewrap => self.bwrap_command(
                &exec,
                None,
                None,
                None,
                self.limits.file_size_mib.saturating_mul(1024 * 1024),
            )?,
            SandboxMode::None => unsandboxed_command(&exec),
        };
        command.kill_on_drop(true);
        Ok(command)
    }

    fn create_group(&self, parent: &Path) -> Option<PathBuf> {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let group = parent.join(format!("clade-{}-{n}", std::process::id()));
        std::fs::create_dir(&group).ok()?;
        match std::fs::write(group.join("pids.max"), self.limits.processes.to_string()) {
            Ok(()) => Some(group),
            Err(_) => {
                let _ = std::fs::remove_dir(&group);
                None
            }
        }
    }

    /// The bubblewrap command for `exec`. A tool run (with its `report` socket) starts under
    /// the sandbox's init ([`crate::init`]), which sets its limits and seccomp filter. A service
    /// (a long-lived MCP server, no `report`) gets no CPU-time limit and a filter that kills
    /// outright, and the directory of its program is mounted read-only when it lives outside
    /// the system directories.
    fn bwrap_command(
        &self,
        exec: &Exec,
        group: Option<&Path>,
        report: Option<&rustix::fd::OwnedFd>,
        egress: Option<&crate::egress::EgressProxy>,
        file_size_bytes: u64,
    ) -> Result<tokio::process::Command, SandboxError> {
        let service = report.is_none();
        let bwrap = self.bwrap.as_ref().filter(|p| p.is_file()).ok_or_else(|| {
            SandboxError::Unavailable(match &self.bwrap {
                Some(p) => format!("{} does not exist", p.display()),
                None => "bubblewrap (bwrap) is not installed".into(),
            })
        })?;
        let limits = &self.limits;
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
        push(&["--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts"]);
        push(&["--unshare-cgroup-try", "--uid", SANDBOX_ID, "--gid", SANDBOX_ID]);
        // A tool run with a network grant gets a namespace of its own too, whose only way out
        // is the egress proxy; only an operator's service with `network: true` shares the
        // host's.
        if !exec.network || egress.is_some() {
            push(&["--unshare-net"]);
        }
        push(&["--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
        // No nested user namespaces: they are the usual first step of kernel exploits.
        push(&["--disable-userns"]);
        push(&["--ro-bind", "/usr", "/usr"]);
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(dir) {
                Ok(target) => {
                    let target = target.to_string_lossy().into_owned();
                    push(&["--symlink", &target, dir]);
                }
                Err(_) if Path::new(dir).is_dir() => push(&["--ro-bind", dir, dir]),
                Err(_) => {}
            }
        }
        let mut etc = vec![
            "/etc/alternatives",
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/localtime",
        ];
        if exec.network {
            etc.extend(["/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl"]);
            etc.extend(["/etc/ca-certificates"]);
        }
        for path in etc {
            push(&["--ro-bind-try", path, path]);
        }
        let tmp_size = (limits.file_size_mib * 1024 * 1024).to_string();
        push(&["--proc", "/proc", "--dev", "/dev", "--size", &tmp_size, "--tmpfs", "/tmp"]);
        if service
            && let Some(dir) = exec.argv.first().map(Path::new).and_then(Path::parent)
            && dir.is_absolute()
            && !dir.starts_with("/usr")
        {
            let dir = dir.to_string_lossy().into_owned();
            push(&["--ro-bind", &dir, &dir]);
        }
        let workspace = exec.workspace.to_string_lossy().into_owned();
        push(&["--bind", &workspace, "/workspace", "--chdir", "/workspace", "--clearenv"]);
        // The sandbox's own root (where `/etc`, `/home`, … would be created) is read-only too:
        // only `/workspace` and `/tmp`, separate mounts, take writes, and a write elsewhere
        // fails with EROFS, which the run's account shows (see `findings`).
        let bridge = match (egress, &self.egress_bridge) {
            (Some(proxy), Some(bridge)) => {
                let dir = proxy.dir().to_string_lossy().into_owned();
                push(&["--bind", &dir, crate::egress::SANDBOX_SOCKET_DIR]);
                push(&["--ro-bind", &bridge[0], BRIDGE_PATH]);
                let proxy_url = format!("http://{}", crate::egress::BRIDGE_LISTEN);
                for name in [
                    "HTTP_PROXY",
                    "HTTPS_PROXY",
                    "ALL_PROXY",
                    "http_proxy",
                    "https_proxy",
                    "all_proxy",
                ] {
                    push(&["--setenv", name, &proxy_url]);
                }
                let mut command = vec![BRIDGE_PATH.to_owned()];
                command.extend(bridge[1..].iter().cloned());
                command.push(crate::egress::BRIDGE_LISTEN.to_owned());
                command.push(crate::egress::sandbox_socket());
                Some(command)
            }
            _ => None,
        };
        if let (false, Some(init)) = (service, &self.init) {
            push(&["--ro-bind", &init[0], crate::init::INIT_PATH]);
        }
        push(&["--remount-ro", "/"]);
        push(&["--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", "/workspace"]);
        push(&["--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8"]);
        for (key, value) in &exec.env {
            push(&["--setenv", key, value]);
        }
        if service {
            let memory = format!("--as={}", limits.memory_mib * 1024 * 1024);
            let fsize = format!("--fsize={file_size_bytes}");
            let nproc = format!("--nproc={}", limits.processes);
            push(&["--", "/usr/bin/prlimit"]);
            push(&[&memory, &fsize, &nproc, "--nofile=256", "--core=0", "--"]);
        } else {
            let init = self.init.as_ref().ok_or_else(|| {
                SandboxError::Unavailable("the sandbox's init was not given".into())
            })?;
            let config = InitConfig {
                offline: !exec.network,
                cpu_secs: Some(limits.cpu_secs),
                memory_bytes: limits.memory_mib * 1024 * 1024,
                file_size_bytes,
                processes: limits.processes,
                bridge,
                exec_only_itself: exec.exec_only_itself,
            };
            let config = serde_json::to_string(&config)
                .map_err(|e| SandboxError::Spawn(std::io::Error::other(e)))?;
            // The init is pid 1 itself: no reaper of bubblewrap's that a command could outlive.
            push(&["--as-pid-1"]);
            push(&["--", crate::init::INIT_PATH]);
            args.extend(init[1..].iter().cloned());
            args.extend([config, "--".to_owned()]);
        }
        args.extend(exec.argv.iter().cloned());
        // bwrap itself stays pid 1's parent inside the sandbox, where /proc/1/environ is
        // readable: it must not carry the daemon's environment (the launcher clears it).
        // Tool runs get their filter from the init; services one bubblewrap loads.
        let (filter, second) = match (service, exec.network) {
            (false, _) => (&None, &None),
            (true, true) => (&self.seccomp, &self.seccomp_no_unix),
            (true, false) => (&self.seccomp_offline, &None),
        };
        let filters = [filter, second].map(|f| f.as_deref().map(|f| f.path.as_path()));
        let report_fd = report.map(std::os::fd::AsRawFd::as_raw_fd);
        let mut command = launcher(group, filters, report_fd);
        command.arg(bwrap);
        for (fd, filter) in ["3", "4"].into_iter().zip(filters) {
            if filter.is_some() {
                command.args(["--add-seccomp-fd", fd]);
            }
        }
        command.args(args);
        Ok(command)
    }

    /// Runs `command` to its end under the deadline and output cap; with a `report` socket
    /// (ours, the init's end), watches the init's listener and report beside it.
    async fn supervise(
        &self,
        mut command: tokio::process::Command,
        stdin: Option<Vec<u8>>,
        report: Option<(rustix::fd::OwnedFd, rustix::fd::OwnedFd)>,
        over_quota: Option<tokio::sync::oneshot::Receiver<u64>>,
    ) -> Result<ExecOutput, SandboxError> {
        command
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(SandboxError::Spawn)?;
        // Only the launcher holds the init's end now, so the watch sees the end of the run.
        let watch = report.map(|(ours, theirs)| {
            drop(theirs);
            let rounds = (self.limits.timeout_secs + 10) * 10;
            tokio::task::spawn_blocking(move || watch_run(&ours, rounds))
        });
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = pipe.write_all(&input).await;
            });
        }
        let cap = usize::try_from(self.limits.output_bytes).unwrap_or(usize::MAX);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SandboxError::Spawn(std::io::Error::other("no output pipes")));
        };
        let deadline = Duration::from_secs(self.limits.timeout_secs);
        let mut out = ExecOutput::default();
        let collect = async {
            let (a, b) = tokio::join!(read_capped(stdout, cap), read_capped(stderr, cap));
            (a, b)
        };
        tokio::pin!(collect);
        let quota_passed = async move {
            match over_quota {
                Some(over) => match over.await {
                    Ok(used) => used,
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let finished = tokio::select! {
            finished = tokio::time::timeout(deadline, &mut collect) => finished,
            used = quota_passed => {
                out.over_quota = Some(used);
                let _ = child.start_kill();
                tokio::time::timeout(deadline, &mut collect).await
            }
        };
        match finished {
            Ok(((stdout, over_a), (stderr, over_b))) => {
                out.stdout = stdout;
                out.stderr = stderr;
                if over_a || over_b {
                    out.output_capped = true;
                    let _ = child.start_kill();
                }
                match tokio::time::timeout(deadline, child.wait()).await {
                    Ok(Ok(status)) if !out.stopped() => out.code = status.code(),
                    Ok(_) => {}
                    Err(_) => {
                        out.timed_out = true;
                        let _ = child.start_kill();
                    }
                }
            }
            Err(_) => {
                out.timed_out = true;
                let _ = child.start_kill();
            }
        }
        // Reap it so no zombie stays; killing bwrap takes its whole pid namespace with it.
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let Some(watch) = watch else { return Ok(out) };
        let watched = match tokio::time::timeout(Duration::from_secs(5), watch).await {
            Ok(Ok(watched)) => watched,
            _ => Watched::default(),
        };
        out.violations = watched.violations;
        if let Some(report) = watched.report {
            if let Some(error) = report.error {
                return Err(SandboxError::Unavailable(format!(
                    "the sandbox's init failed: {error}"
                )));
            }
            if !out.stopped() {
                out.code = report.exit;
                out.signal = report.signal;
            }
            out.left_running = report.left_running;
        } else if !watched.listener && !out.stopped() {
            // The init never started the command: bubblewrap could not set the sandbox up.
            return Ok(out);
        }
        Ok(out)
    }
}

/// The host-side launcher (see `LAUNCHER`), ready for the program and its arguments.
#[allow(clippy::disallowed_methods)] // The one place tools spawn processes.
fn launcher(
    group: Option<&Path>,
    seccomp: [Option<&Path>; 2],
    report: Option<i32>,
) -> tokio::process::Command {
    let shell = ["/usr/bin/bash", "/bin/bash"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("/bin/sh");
    let mut command = tokio::process::Command::new(shell);
    command.env_clear().arg("-c").arg(LAUNCHER);
    match group {
        Some(group) => command.arg(group.join("cgroup.procs")),
        None => command.arg("-"),
    };
    for filter in seccomp {
        match filter {
            Some(filter) => command.arg(filter),
            None => command.arg("-"),
        };
    }
    match report {
        Some(fd) => command.arg(fd.to_string()),
        None => command.arg("-"),
    };
    command
}

/// The run's report socket: ours, and the init's end, which child processes inherit (the
/// launcher moves it to descriptor 5 and closes every other).
fn report_socket() -> std::io::Result<(rustix::fd::OwnedFd, rustix::fd::OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
    Ok((ours, theirs))
}

/// What the gateway saw of a run through its init.
#[derive(Debug, Default)]
struct Watched {
    /// The init sent its seccomp listener (so it installed the filter before the command).
    listener: bool,
    violations: Vec<String>,
    report: Option<InitReport>,
}

/// The most violations one run's account lists.
const MAX_VIOLATIONS: usize = 20;

/// Reads the init's messages and serves its seccomp listener until the init's end of the
/// socket closes (the run is over), for at most `rounds` tenths of a second: each forbidden
/// call is recorded from the kernel's notification and its process killed.
fn watch_run(report: &rustix::fd::OwnedFd, rounds: u64) -> Watched {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut watched = Watched::default();
    let mut listener: Option<rustix::fd::OwnedFd> = None;
    let tenth = Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
    for _ in 0..rounds {
        let (report_events, listener_events) = {
            let mut fds = vec![PollFd::new(report, PollFlags::IN)];
            if let Some(listener) = &listener {
                fds.push(PollFd::new(listener, PollFlags::IN));
            }
            if rustix::event::poll(&mut fds, Some(&tenth)).is_err() {
                continue;
            }
            (fds[0].revents(), fds.get(1).map(PollFd::revents))
        };
        if let (Some(events), Some(fd)) = (listener_events, &listener) {
            if events.contains(PollFlags::IN) {
                serve_notification(fd, &mut watched);
            } else if !events.is_empty() {
                // Every process under the filter is gone.
                listener = None;
            }
        }
        if report_events.is_empty() {
            continue;
        }
        match receive_message(report) {
            Ok(Message::Listener(fd)) => {
                watched.listener = true;
                listener = Some(fd);
            }
            Ok(Message::Report(report)) => watched.report = Some(report),
            Ok(Message::Other) => {}
            Ok(Message::End) | Err(_) => break,
        }
    }
    watched
}

/// Records one forbidden call and kills the process that made it.
fn serve_notification(listener: &rustix::fd::OwnedFd, watched: &mut Watched) {
    use std::os::fd::AsFd;
    let Ok(notification) = crate::seccomp::receive(listener.as_fd()) else { return };
    // The process waits on its call until answered, so its pid cannot have been reused.
    if crate::seccomp::still_waiting(listener.as_fd(), notification.id)
        && let Some(pid) =
            i32::try_from(notification.pid).ok().and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    if watched.violations.len() < MAX_VIOLATIONS {
        watched.violations.push(format!("{} by process {}", notification.call, notification.pid));
    }
}

enum Message {
    Listener(rustix::fd::OwnedFd),
    Report(InitReport),
    Other,
    End,
}

fn receive_message(report: &rustix::fd::OwnedFd) -> std::io::Result<Message> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = vec![0u8; 16 * 1024];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        report,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<rustix::fd::OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let bytes = &buf[..received.bytes];
    if bytes.is_empty() && fds.is_empty() {
        return Ok(Message::End);
    }
    if bytes == crate::init::LISTENER_MESSAGE
        && let Some(fd) = fds.pop()
    {
        return Ok(Message::Listener(fd));
    }
    Ok(serde_json::from_slice(bytes).map(Message::Report).unwrap_or(Message::Other))
}

/// How many forks the run's pids cgroup refused (`max` in `pids.events`).
fn forks_refused(group: &Path) -> u64 {
    let events = std::fs::read_to_string(group.join("pids.events")).unwrap_or_default();
    events.lines().find_map(|line| line.strip_prefix("max ")?.trim().parse().ok()).unwrap_or(0)
}

/// The operator's explicit `sandbox: none`: same environment scrubbing and limits on time and
/// output, but the host's filesystem, network and processes are reachable.
fn unsandboxed_command(exec: &Exec) -> tokio::process::Command {
    let mut command = launcher(None, [None, None], None);
    command.args(&exec.argv).current_dir(&exec.workspace);
    command.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
    command.envs(exec.env.iter().map(|(k, v)| (k, v)));
    command
}

/// Reads up to `cap` bytes; true when there was more (the reader stops there).
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, false),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    return (kept, true);
                }
            }
        }
    }
}

/// A service's compiled seccomp filter ([`crate::seccomp`], killing outright) in a sealed
/// memory file the launcher can open. `None` when this architecture or host cannot have one;
/// the service then runs without it (namespaces and capabilities still apply).
fn seccomp_filter(kind: Filter) -> Option<SealedFilter> {
    let program = crate::seccomp::program(kind, Action::Kill)?;
    seal(&crate::seccomp::to_bytes(&program), kind)
}

/// `bytes` in a memory file that can no longer change (write, grow, shrink and seal seals),
/// at a descriptor above 9 that child processes inherit (the launcher's 3 and 4 are free).
fn seal(bytes: &[u8], kind: Filter) -> Option<SealedFilter> {
    use rustix::fs::{MemfdFlags, SealFlags};
    use rustix::io::FdFlags;
    let name = format!("clade-seccomp-{kind:?}");
    let memfd =
        rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).ok()?;
    let mut written = 0;
    while written < bytes.len() {
        written += rustix::io::write(&memfd, &bytes[written..]).ok()?;
    }
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .ok()?;
    let fd = rustix::io::fcntl_dupfd_cloexec(&memfd, 10).ok()?;
    rustix::io::fcntl_setfd(&fd, FdFlags::empty()).ok()?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
    Some(SealedFilter { _fd: fd, path })
}

/// What [`harden_daemon`] could set, read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// `PR_SET_DUMPABLE` is 0: no core dumps, and same-user processes cannot ptrace the daemon
    /// or read its `/proc/<pid>/mem` and `environ`.
    pub non_dumpable: bool,
    /// `RLIMIT_CORE` is 0 (soft and hard).
    pub no_core: bool,
}

/// Makes the daemon non-dumpable and without core files, so neither a sandbox escapee nor a
/// crash can read its memory (keys, tokens) from a dump.
pub fn harden_daemon() -> Hardening {
    use rustix::process::{DumpableBehavior, Resource, Rlimit};
    let _ = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable);
    let _ =
        rustix::process::setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
    let core = rustix::process::getrlimit(Resource::Core);
    Hardening {
        non_dumpable: rustix::process::dumpable_behavior()
            .is_ok_and(|b| b == DumpableBehavior::NotDumpable),
        no_core: core.current == Some(0) && core.maximum == Some(0),
    }
}

/// Kills whatever is left in a run's cgroup and removes it: up to a second inline, then in the
/// background (processes killed en masse can take a moment to leave the group).
async fn remove_group(group: &Path) {
    if drain_group(group, 50).await {
        return;
    }
    let group = group.to_owned();
    tokio::spawn(async move { drain_group(&group, 3000).await });
}

async fn drain_group(group: &Path, rounds: usize) -> bool {
    for _ in 0..rounds {
        let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() && std::fs::remove_dir(group).is_ok() {
            return true;
        }
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        #[allow(clippy::disallowed_methods)] // Waits for real processes to die.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The pids cgroup directory this process may create groups under, from `/proc/self/cgroup`:
/// cgroup v2 when its `pids` controller is delegated to our group, else the v1 `pids` hierarchy.
fn pids_cgroup(self_cgroup: &str) -> Option<PathBuf> {
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        let dir = if id == "0" && controllers.is_empty() {
            let base = Path::new("/sys/fs/cgroup").join(relative);
            let delegated =
                std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
            if !delegated.split_whitespace().any(|c| c == "pids") {
                continue;
            }
            base
        } else if controllers.split(',').any(|c| c == "pids") {
            Path::new("/sys/fs/cgroup/pids").join(relative)
        } else {
            continue;
        };
        let probe = dir.join(format!("clade-probe-{}", std::process::id()));
        if std::fs::create_dir(&probe).is_ok() {
            let _ = std::fs::remove_dir(&probe);
            return Some(dir);
        }
    }
    None
}

/// Finds `name` in the directories of a `PATH` value, else in `/usr/bin`.
fn locate(name: &str, path_var: Option<&str>) -> Option<PathBuf> {
    path_var
        .unwrap_or("")
        .split(':')
        .filter(|dir| !dir.is_empty())
        .chain(["/usr/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(out: ExecOutput) -> Vec<Finding> {
        run(out, &RunFacts::default())
    }

    fn run(out: ExecOutput, facts: &RunFacts<'_>) -> Vec<Finding> {
        let daemon_env =
            ["PATH", "HOME", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL", "GRANTED"].map(String::from);
        findings_with(&out.render(&SandboxLimits::default()), facts, &daemon_env, |_| false)
    }

    fn exited(code: i32, stdout: &str, stderr: &str) -> ExecOutput {
        let (stdout, stderr) = (stdout.as_bytes().to_vec(), stderr.as_bytes().to_vec());
        ExecOutput { code: Some(code), stdout, stderr, ..Default::default() }
    }

    fn withheld(command: &str) -> Vec<String> {
        let facts = RunFacts { command, granted_env: &["GRANTED"], ..Default::default() };
        match &run(exited(0, "", ""), &facts)[..] {
            [Finding::Withheld(what)] => what.clone(),
            [] => Vec::new(),
            other => panic!("unexpected findings {other:?}"),
        }
    }

    #[test]
    fn what_the_sandbox_withheld_is_read_from_the_command_line() {
        let whole = "the daemon's environment (2 variables)";
        for dump in [
            "env",
            "printenv | sort",
            "FOO=1 /usr/bin/env 2>/dev/null",
            "export -p",
            "cat /proc/1/environ",
            "python3 -c 'import os; print(os.environ)'",
            "set",
        ] {
            assert_eq!(withheld(dump), vec![whole], "{dump}");
        }
        assert_eq!(
            withheld("echo $AWS_SECRET_ACCESS_KEY ${DATABASE_URL:-none} $GRANTED $HOME"),
            vec![
                "the daemon's variable AWS_SECRET_ACCESS_KEY",
                "the daemon's variable DATABASE_URL"
            ]
        );
        assert_eq!(
            withheld("python3 -c 'import os; os.environ[\"DATABASE_URL\"]'"),
            vec!["the daemon's variable DATABASE_URL"]
        );
        let processes = "the host's processes (the sandbox has a pid namespace of its own)";
        for listing in ["ps aux", "ls /proc | wc -l", "pgrep -f clade", "ls -d /proc/[0-9]*"] {
            assert_eq!(withheld(listing), vec![processes], "{listing}");
        }
        // Running a program through `env`, setting shell options, or a variable name that is
        // only text: nothing withheld.
        for quiet in [
            "env python3 x.py",
            "set -e; make",
            "echo AWS_SECRET_ACCESS_KEY_ID",
            "echo $AWS_SECRET_ACCESS_KEY_ID",
            "cat /proc/cpuinfo",
            "grep DATABASE_URL .env",
        ] {
            assert_eq!(withheld(quiet), Vec::<String>::new(), "{quiet}");
        }
    }

    #[test]
    fn errors_sent_to_stdout_count_when_the_command_sent_them_there() {
        let out = || exited(2, "RTNETLINK answers: Operation not permitted\n", "");
        let merged = RunFacts { command: "ip link set lo down 2>&1", ..Default::default() };
        assert_eq!(
            run(out(), &merged),
            vec![Finding::Denied(vec!["RTNETLINK answers: Operation not permitted".into()])]
        );
        let apart = RunFacts { command: "ip link set lo down", ..Default::default() };
        assert!(run(out(), &apart).is_empty());
    }

    #[test]
    fn a_refused_connection_is_a_denial_only_without_the_network() {
        let out = || exited(1, "", "ConnectionRefusedError: [Errno 111] Connection refused\n");
        let offline = RunFacts::default();
        assert!(
            matches!(&run(out(), &offline)[..], [Finding::Denied(l)] if l[0].contains("refused"))
        );
        let online = RunFacts { network: true, ..Default::default() };
        assert!(run(out(), &online).is_empty());
    }

    #[test]
    fn each_kind_of_stop_or_refusal_is_found_in_the_account() {
        let stderr = |s: &str| s.as_bytes().to_vec();
        let violation = ExecOutput {
            violations: vec!["unshare by process 7".into()],
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(
            account(violation),
            vec![Finding::Violation(vec!["unshare by process 7".into()])]
        );
        // The same words printed by the command, the exit status a kill gives, or a note of
        // processes left running are no record: only the header is.
        let forged = ExecOutput {
            code: Some(159),
            stdout: stderr(&format!("{VIOLATION_PREFIX}x; that process was killed\n")),
            stderr: stderr(
                "Bad system call\n[sandbox: stopped 3 process(es) still running]\nsandbox: stopped 3 process(es)\n",
            ),
            ..Default::default()
        };
        assert!(account(forged).is_empty());
        let left = ExecOutput {
            code: Some(0),
            left_running: 2,
            forks_refused: 5,
            setid_cleared: 1,
            ..Default::default()
        };
        let found = account(left);
        assert!(
            matches!(&found[..], [Finding::Limit(a), Finding::Limit(b), Finding::Refused(c)]
            if a.contains("stopped 2 process") && b.contains("refused 5 fork") && c[0].contains("setuid")),
            "{found:?}"
        );
        assert!(found.iter().all(|f| !f.best_effort()));
        let xcpu = ExecOutput { signal: Some(libc::SIGXCPU), ..Default::default() };
        assert!(matches!(&account(xcpu)[..], [Finding::Limit(l)] if l.contains("SIGXCPU")));
        let segv = ExecOutput { signal: Some(libc::SIGSEGV), ..Default::default() };
        assert!(account(segv).is_empty());
        let timed_out = ExecOutput { timed_out: true, ..Default::default() };
        assert!(matches!(&account(timed_out)[..], [Finding::Limit(l)] if l.contains("wall-clock")));
        let signal = ExecOutput::default();
        assert!(matches!(&account(signal)[..], [Finding::Limit(l)] if l.contains("signal")));
        let denied = ExecOutput {
            code: Some(1),
            stdout: stderr("a log line: Permission denied\n"),
            stderr: stderr("sh: 1: cannot create /usr/x: Read-only file system\nother\n"),
            ..Default::default()
        };
        assert_eq!(
            account(denied),
            vec![Finding::Denied(vec![
                "sh: 1: cannot create /usr/x: Read-only file system".into()
            ])]
        );
        // Denial texts on stdout are data, and a clean run finds nothing.
        let quoted = ExecOutput {
            code: Some(0),
            stdout: stderr("Permission denied\n"),
            ..Default::default()
        };
        assert!(account(quoted).is_empty());
        assert!(findings("file contents: Permission denied", &RunFacts::default()).is_empty());
        // The egress proxy's refusals, recorded by the daemon; the same words printed by the
        // command are not a record.
        let egress = ExecOutput {
            code: Some(1),
            egress_refused: vec!["127.0.0.1 resolves to 127.0.0.1, a loopback address".into()],
            stdout: stderr("egress refused: faked\n"),
            ..Default::default()
        };
        assert_eq!(
            account(egress),
            vec![Finding::Refused(vec![
                "egress refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address".into()
            ])]
        );
        // A limit a process ran into, reported by the process itself.
        let fork_bomb = ExecOutput {
            code: Some(0),
            stderr: stderr("/bin/sh: 1: Cannot fork\n/bin/sh: 1: Cannot fork\n"),
            ..Default::default()
        };
        let found = account(fork_bomb);
        assert_eq!(found, vec![Finding::SeemsLimited("/bin/sh: 1: Cannot fork".into())]);
        assert!(found[0].best_effort());
    }
}

#[cfg(test)]
mod hidden_tests {
    use super::*;

    /// A host with `/etc/shadow`, `/srv/data/clade.db` and `/root`.
    fn host(path: &Path) -> bool {
        ["/", "/etc", "/etc/shadow", "/srv", "/srv/data", "/srv/data/clade.db", "/root", "/tmp"]
            .iter()
            .any(|p| path == Path::new(p))
    }

    #[test]
    fn named_host_paths_the_sandbox_hides_are_found_and_typos_are_not() {
        let stderr = "cat: /etc/shadow: No such file or directory\n\
            head: cannot open '/srv/data/clade.db' for reading: No such file or directory\n\
            /bin/sh: 1: cannot create /srv/data/pwned: Directory nonexistent\n\
            cat: /proc/self/root/srv/data/clade.db: No such file or directory\n\
            ls: cannot access '/root/.ssh/*': No such file or directory\n\
            cat: /etc/typo: No such file or directory\n\
            cat: /tmp/new/file: No such file or directory\n\
            cat: /workspace/missing: No such file or directory\n\
            cat: /usr/bin/nothing: No such file or directory\n\
            awk: fatal: cannot open file `/srv/data' for reading: No such file or directory\n";
        assert_eq!(
            hidden_host_paths(stderr, true, host),
            vec![
                "/etc/shadow",
                "/srv/data/clade.db",
                "/srv/data/pwned",
                "/proc/self/root/srv/data/clade.db",
                "/root/.ssh/*",
            ]
        );
        let awk = "awk: fatal: cannot open file `/srv/data' for reading: No such file or directory";
        assert_eq!(hidden_host_paths(awk, true, host), vec!["/srv/data"]);
        assert!(hidden_host_paths("cat: /etc/shadow: Is a directory\n", true, host).is_empty());
        // A command line's paths count whatever the command printed.
        let command = "mkdir -p /srv/data/w1; cat</etc/shadow >/tmp/out; ls /workspace /etc/new";
        assert_eq!(hidden_host_paths(command, false, host), vec!["/srv/data/w1", "/etc/shadow"]);
    }
}
