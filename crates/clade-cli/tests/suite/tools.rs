//! Tools through the real binary: the attack corpus (RELIABILITY.md G, H, J1/J4 at PR tier),
//! approvals, grants and the audit log.
//!
//! Every attempt goes through `POST /v1/agents/{handle}/tools/{name}/call`, the path a model's
//! call takes, as agent `alice` of the default tenant, which holds broad grants (so what stops
//! an attempt is the sandbox, the workspace confinement or the egress guard, not a missing
//! grant). Each attempt is checked on the host side where it could have had an effect.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::support::{
    Env, PATIENCE, POLL, Server, eventually, polled, polled_blocking, polled_within, request, write,
};

const CANARY_SECRET: &str = "canary-secret-7f3a9c1e55";
const CANARY_ENV: &str = "canary-env-b41d0e9a27";
const CANARY_TENANT_B: &str = "canary-tenant-b-99e2c4";
const CANARY_SAME_TENANT: &str = "canary-carol-5b1f07";

#[derive(Default)]
struct Corpus {
    attempted: u32,
    blocked: u32,
    escapes: Vec<String>,
    /// Attempts whose outcome is a sandbox run's account, and those among them in which the
    /// sandbox stopped or refused something the audit log records (`sandbox.*`).
    sandbox_runs: u32,
    recorded_runs: u32,
    unrecorded: Vec<String>,
    findings: usize,
}

impl Corpus {
    fn record(&mut self, name: &str, blocked: bool, detail: &str) {
        self.record_as(name, blocked, detail, true);
    }

    /// `attack`: whether the attempt did something the sandbox should record (an attempt that
    /// only prints the words of a record has nothing to record).
    fn record_as(&mut self, name: &str, blocked: bool, detail: &str, attack: bool) {
        if attack && clade_tools::sandbox::is_account(detail) {
            let command = LAST_COMMAND.lock().unwrap().clone();
            // alice holds no network grant and no secret in her environment.
            let run = clade_tools::sandbox::RunFacts { command: &command, ..Default::default() };
            let found = clade_tools::sandbox::findings(detail, &run).len();
            self.sandbox_runs += 1;
            self.recorded_runs += u32::from(found > 0);
            if found == 0 {
                self.unrecorded.push(format!("{name}: {command}"));
            }
            self.findings += found;
        }
        self.attempted += 1;
        if blocked {
            self.blocked += 1;
        } else {
            self.escapes.push(format!("{name}: {detail}"));
        }
    }
}

async fn call(server: &Server, agent: &str, tool: &str, args: Value) -> (bool, String) {
    let (status, body) = server
        .send(
            "POST",
            &format!("/v1/agents/{agent}/tools/{tool}/call"),
            None,
            Some(json!({ "arguments": args })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (body["is_error"].as_bool().unwrap(), body["content"].as_str().unwrap_or_default().to_owned())
}

/// The command line of the corpus's latest `shell` call (the sandbox's findings depend on it).
static LAST_COMMAND: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

async fn shell(server: &Server, command: &str) -> String {
    *LAST_COMMAND.lock().unwrap() = command.to_owned();
    call(server, "alice", "shell.exec", json!({ "command": command })).await.1
}

/// A loopback listener that records whether anything connected.
fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn was_reached(listener: &TcpListener) -> bool {
    listener.accept().is_ok()
}

fn setup() -> Env {
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    env.run(&["tenants", "create", "other"]).ok();
    env.run(&["--tenant", "other", "agents", "create", "bob"]).ok();
    let bob_ws =
        env.run(&["--tenant", "other", "agents", "workspace", "bob"]).ok().stdout.trim().to_owned();
    write(&Path::new(&bob_ws).join("secret.txt"), CANARY_TENANT_B);
    // Another agent of alice's own tenant.
    env.run(&["agents", "create", "carol"]).ok();
    let carol_ws = env.run(&["agents", "workspace", "carol"]).ok().stdout.trim().to_owned();
    write(&Path::new(&carol_ws).join("secret.txt"), CANARY_SAME_TENANT);
    env.run_with_stdin(&["--agent", "alice", "secrets", "set", "CANARY_KEY"], CANARY_SECRET).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        "tools:\n  limits:\n    timeout_secs: 4\n    memory_mib: 256\n    processes: 64\n    output_bytes: 65536\n",
    );
    for tool in ["shell.exec", "fs.*", "http.request"] {
        env.run(&["--agent", "alice", "grants", "add", "--tool", tool]).ok();
    }
    env
}

#[tokio::test]
async fn attack_corpus_is_blocked_or_contained() {
    let env = setup();
    let server = env.serve_with(&[], &[("CLADE_TEST_CANARY", CANARY_ENV)]);
    let data = env.data_dir();
    let data_text = data.display().to_string();
    let alice_ws = env.run(&["agents", "workspace", "alice"]).ok().stdout.trim().to_owned();
    let bob_ws =
        env.run(&["--tenant", "other", "agents", "workspace", "bob"]).ok().stdout.trim().to_owned();
    let carol_ws = env.run(&["agents", "workspace", "carol"]).ok().stdout.trim().to_owned();
    let master_key = std::fs::read_to_string(data.join("master.key")).unwrap_or_default();
    let shadow_head = std::fs::read_to_string("/etc/shadow")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("root:")
        .to_owned();
    let marker = env.tmp.path().join("host-marker");
    write(&marker, "untouched");
    let mut corpus = Corpus::default();

    // The attack corpus's data file, every group through one check helper.
    let (host_listener, port) = listener();
    let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    udp.set_nonblocking(true).unwrap();
    let host_socket =
        std::os::unix::net::UnixListener::bind(env.tmp.path().join("host.sock")).unwrap();
    host_socket.set_nonblocking(true).unwrap();
    let first_line = |text: &str| text.lines().next().unwrap_or_default().to_owned();
    let vars: Vec<(&str, String)> = vec![
        ("data", data_text.clone()),
        ("alice_ws", alice_ws.clone()),
        ("bob_ws", bob_ws.clone()),
        ("carol_ws", carol_ws.clone()),
        ("tmp", env.tmp.path().display().to_string()),
        ("marker", marker.display().to_string()),
        ("port", port.to_string()),
        ("host_sock", env.tmp.path().join("host.sock").display().to_string()),
        ("abstract", format!("clade-test-{}", std::process::id())),
        ("server_pid", server.child.id().to_string()),
        ("server_port", server.url.rsplit(':').next().unwrap().to_owned()),
        ("shadow", shadow_head.clone()),
        ("master_key", first_line(master_key.trim())),
        ("canary_b", CANARY_TENANT_B.to_owned()),
        ("canary_carol", CANARY_SAME_TENANT.to_owned()),
        ("canary_env", CANARY_ENV.to_owned()),
        ("canary_secret", CANARY_SECRET.to_owned()),
    ];
    // The links the fs tools try to follow out of the workspace.
    shell(&server, "echo inside > f.txt; ln -s /etc/shadow shadow-link; ln -s / root-link; ln -s ../../../../../../ up-link; ln -s /proc/self/root proc-link; ln f.txt hard.txt").await;
    let file: AttackFile =
        serde_saphyr::from_str(include_str!("../attacks.yaml")).expect("tests/attacks.yaml");
    let mut rows_run = 0;
    for group in &file.groups {
        let rows =
            if group.over.is_empty() { vec![Default::default()] } else { group.over.clone() };
        for mut row in rows {
            if let Some(call) = row.get("call").cloned() {
                row.insert("nr".into(), syscall_number(&call).to_string());
            }
            let fill = |text: &str| {
                let mut text = text.to_owned();
                for (key, value) in &row {
                    text = text.replace(&format!("{{{key}}}"), value);
                }
                for (key, value) in &vars {
                    text = text.replace(&format!("{{{key}}}"), value);
                }
                text
            };
            for command in &group.commands {
                let command = fill(command);
                let started = std::time::Instant::now();
                let out = match &group.tool {
                    None => shell(&server, &command).await,
                    Some(tool) => {
                        let args: Value = serde_json::from_str(&command).unwrap();
                        call(&server, "alice", tool, args).await.1
                    }
                };
                let failed = group.expect.check(
                    &fill,
                    &Seen {
                        out: &out,
                        took: started.elapsed(),
                        reached: was_reached(&host_listener)
                            || udp.recv(&mut [0u8; 16]).is_ok()
                            || host_socket.accept().is_ok(),
                        alive: server.send("GET", "/healthz", None, None).await.0 == 200,
                        marker_untouched: std::fs::read_to_string(&marker).unwrap() == "untouched",
                        inside: std::fs::read_to_string(Path::new(&alice_ws).join("f.txt"))
                            .is_ok_and(|t| t.trim() == "inside"),
                    },
                );
                let name =
                    format!("{}: {}", group.name, command.chars().take(120).collect::<String>());
                let detail =
                    if failed.is_empty() { out } else { format!("{}\n{out}", failed.join("; ")) };
                corpus.record_as(
                    &name,
                    failed.is_empty(),
                    &detail,
                    group.expect.no_record.is_none(),
                );
                rows_run += 1;
            }
        }
    }
    assert!(rows_run >= 280, "the data file shrank to {rows_run} attempts");

    // A setuid file planted in the workspace does not stay setuid on the host.
    let out = shell(&server, "cp /usr/bin/id ./suid-id && chmod 4755 ./suid-id && mkdir -p d && cp /usr/bin/id d/sgid && chmod 2755 d/sgid").await;
    let planted = ["suid-id", "d/sgid"].iter().any(|f| {
        std::fs::metadata(Path::new(&alice_ws).join(f))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o6000 != 0)
            .unwrap_or(false)
    });
    corpus.record("setuid file planted on the host", !planted, &out);

    // G3: the API's latency while a tool spins every core it can get (a figure, not a gate).
    let p99 = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() * 99 / 100 - 1]
    };
    let mut baseline = Vec::new();
    for _ in 0..100 {
        let started = std::time::Instant::now();
        server.send("GET", "/v1/agents", None, None).await;
        baseline.push(started.elapsed());
    }
    let attack = {
        let url = format!("{}/v1/agents/alice/tools/shell.exec/call", server.url);
        let token = server.token.clone();
        let body = json!({ "arguments": { "command": "for i in 1 2 3 4; do (while :; do :; done) & done; b() { b | b & }; b; wait" } });
        tokio::spawn(async move {
            reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap()
        })
    };
    // Measure once the attack's loops spin (its shell's forks carry its command line).
    let spinning = || {
        let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
        procs.filter_map(|p| std::fs::read(p.path().join("cmdline")).ok()).any(|line| {
            line.windows(b"while :; do :; done".len()).any(|w| w == b"while :; do :; done")
        })
    };
    assert!(polled(async || spinning(), |&spins| spins).await, "the attack never started");
    let mut loaded = Vec::new();
    for _ in 0..100 {
        let started = std::time::Instant::now();
        server.send("GET", "/v1/agents", None, None).await;
        loaded.push(started.elapsed());
    }
    attack.await.unwrap();
    let (before, during) = (p99(baseline), p99(loaded));
    println!(
        "API p99 before {before:?}, during a CPU + fork attack {during:?} ({:.2}x)",
        during.as_secs_f64() / before.as_secs_f64()
    );

    let big = Path::new(&alice_ws).join("big");
    let big_size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
    corpus.record("disk fill size", big_size <= 64 * 1024 * 1024, &format!("{big_size} bytes"));

    // TOCTOU: a directory swapped with a symlink to / while fs.read runs through it.
    let swapper = {
        let url = server.url.clone();
        let token = server.token.clone();
        tokio::spawn(async move {
            let body = json!({ "arguments": { "command": "mkdir -p real/etc; echo fake > real/etc/shadow; for i in $(seq 1 3000); do mv real swap 2>/dev/null; ln -sfn / swap 2>/dev/null; rm -f swap; mv swap real 2>/dev/null; mkdir -p real/etc; ln -sfn real swap; done" } });
            reqwest::Client::new()
                .post(format!("{url}/v1/agents/alice/tools/shell.exec/call"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
        })
    };
    let mut raced = 0;
    for _ in 0..60 {
        let (_, out) =
            call(&server, "alice", "fs.read", json!({ "path": "swap/etc/shadow" })).await;
        if out.contains(&shadow_head) {
            raced += 1;
        }
    }
    swapper.await.unwrap();
    corpus.record(
        "symlink swap race (60 reads)",
        raced == 0,
        &format!("{raced} reads returned host content"),
    );

    // H: SSRF through http.request (granted, but without private_network).
    let (ssrf_listener, ssrf_port) = listener();
    let server_port = server.url.rsplit(':').next().unwrap().to_owned();
    // H: every non-public IPv4 class in every spelling a URL parser accepts, IPv6 forms that
    // embed them, native IPv6 classes, names, metadata services, our own listener, bad schemes.
    let mut targets: Vec<String> = Vec::new();
    let v4 = [
        [127, 0, 0, 1],
        [127, 255, 255, 254],
        [10, 0, 0, 1],
        [10, 255, 255, 255],
        [172, 16, 0, 1],
        [172, 31, 255, 254],
        [192, 168, 0, 1],
        [169, 254, 169, 254],
        [169, 254, 1, 1],
        [100, 100, 100, 200],
        [168, 63, 129, 16],
        [100, 64, 0, 1],
        [0, 0, 0, 0],
        [224, 0, 0, 1],
        [255, 255, 255, 255],
    ];
    for [a, b, c, d] in v4 {
        let n = u32::from_be_bytes([a, b, c, d]);
        let (hi, lo) = (n >> 16, n & 0xffff);
        targets.extend([
            format!("http://{a}.{b}.{c}.{d}:{ssrf_port}/"),
            format!("http://{n}:{ssrf_port}/"),
            format!("http://0x{n:x}:{ssrf_port}/"),
            format!("http://0{a:o}.0{b:o}.0{c:o}.0{d:o}:{ssrf_port}/"),
            format!("http://[::ffff:{a}.{b}.{c}.{d}]:{ssrf_port}/"),
            format!("http://[64:ff9b::{hi:x}:{lo:x}]:{ssrf_port}/"),
            format!("http://[2002:{hi:x}:{lo:x}::1]:{ssrf_port}/"),
        ]);
    }
    targets.extend([
        format!("http://[::1]:{ssrf_port}/"),
        format!("http://[::]:{ssrf_port}/"),
        format!("http://localhost:{ssrf_port}/"),
        format!("http://localhost.:{ssrf_port}/"),
        format!("http://127.0.0.1:{server_port}/healthz"),
        "http://metadata.google.internal/computeMetadata/v1/".into(),
        "http://metadata/computeMetadata/v1/".into(),
        "http://[fd00:ec2::254]/".into(),
        "http://[fc00::1]/".into(),
        "http://[fe80::1]/".into(),
        "http://[ff02::1]/".into(),
        "file:///etc/shadow".into(),
        "gopher://127.0.0.1:25/".into(),
        "ftp://127.0.0.1/".into(),
    ]);
    for url in &targets {
        let (is_error, out) = call(&server, "alice", "http.request", json!({ "url": url })).await;
        let named = [
            "loopback",
            "private",
            "link-local",
            "metadata",
            "unspecified",
            "shared",
            "scheme",
            "reserved",
        ]
        .iter()
        .any(|class| out.contains(class));
        corpus.record(
            &format!("ssrf {url}"),
            is_error && named && !was_reached(&ssrf_listener),
            &out,
        );
    }

    // The host is untouched, tenant B too, and the server still serves.
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "untouched");
    assert_eq!(
        std::fs::read_to_string(Path::new(&bob_ws).join("secret.txt")).unwrap(),
        CANARY_TENANT_B
    );
    assert_eq!(server.send("GET", "/healthz", None, None).await.0, 200);
    // The daemonised child of "escape the deadline" would have written this 3 s after its
    // start: watched until then, it never appears.
    let late = Path::new(&alice_ws).join("late");
    let appeared =
        polled_within(Duration::from_secs(2), POLL, async || late.exists(), |&seen| seen).await;
    corpus.record("daemonised child outlived its command", !appeared, "late");

    // Last, as it empties the agent's own workspace: the host and tenant B stay intact.
    let out = shell(&server, "rm -rf --no-preserve-root / 2>/dev/null; echo done").await;
    let intact = std::fs::read_to_string(&marker).unwrap() == "untouched"
        && data.join("clade.db").exists()
        && Path::new(&bob_ws).join("secret.txt").exists()
        && Path::new("/usr/bin/env").exists();
    corpus.record("rm -rf /", intact, &out);

    // G4: the daemon cannot be dumped.
    let server_pid = server.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{server_pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap().to_owned();
    corpus.record(
        "daemon core dumps",
        core.split_whitespace().filter(|w| *w == "0").count() == 2,
        &core,
    );

    // J4: canaries never in the audit log or the server's logs.
    let audit = env.run(&["audit", "--json", "--limit", "1000000"]).ok().stdout;
    let violations = audit.matches("\"sandbox.violation\"").count();
    let sandbox_records = ["violation", "limit", "denied"]
        .iter()
        .map(|kind| audit.matches(&format!("\"sandbox.{kind}\"")).count())
        .sum::<usize>();
    println!(
        "sandbox: {} of {} sandboxed attempts left a sandbox.* audit record ({} forbidden system \
         calls, {sandbox_records} sandbox.* records in all)",
        corpus.recorded_runs, corpus.sandbox_runs, violations
    );
    // G1: every attempt the sandbox contained is on record as a denial, limit or violation.
    let unrecorded = std::mem::take(&mut corpus.unrecorded);
    corpus.record(
        "every sandboxed attempt left a sandbox.* record",
        unrecorded.is_empty(),
        &unrecorded.join("\n"),
    );
    corpus.record(
        "forbidden system calls recorded as violations",
        violations >= 5,
        &format!("{violations} recorded"),
    );
    corpus.record(
        "every stop or refusal the sandbox reported is in the audit log",
        sandbox_records >= corpus.findings,
        &format!("{sandbox_records} records for {} findings", corpus.findings),
    );
    let logs = server.stop();
    corpus.record(
        "daemon dumpable",
        logs.contains("non_dumpable=true"),
        "no `daemon hardened non_dumpable=true` log line",
    );
    for canary in [CANARY_SECRET, CANARY_ENV] {
        corpus.record("canary in audit log", !audit.contains(canary), "audit");
        corpus.record("canary in server log", !logs.contains(canary), "log");
    }

    println!(
        "attack corpus: {} attempted, {} blocked or contained",
        corpus.attempted, corpus.blocked
    );
    assert!(corpus.escapes.is_empty(), "escapes:\n{}", corpus.escapes.join("\n---\n"));
    assert!(corpus.attempted >= 80, "the corpus shrank to {}", corpus.attempted);
}

/// `tests/attacks.yaml`: what each attempt runs and what must hold after it.
#[derive(serde::Deserialize)]
struct AttackFile {
    groups: Vec<AttackGroup>,
}

#[derive(serde::Deserialize)]
struct AttackGroup {
    name: String,
    /// `shell.exec` (a shell line per command) unless named (a JSON object per command).
    #[serde(default)]
    tool: Option<String>,
    commands: Vec<String>,
    #[serde(default)]
    over: Vec<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    expect: Expect,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Expect {
    lacks: Vec<String>,
    absent: Vec<String>,
    unreached: bool,
    root: bool,
    within_secs: Option<u64>,
    record: Option<String>,
    call: Option<String>,
    no_record: Option<String>,
    inside: bool,
}

/// What the helper saw of one attempt, on the host side.
struct Seen<'a> {
    out: &'a str,
    took: Duration,
    reached: bool,
    alive: bool,
    marker_untouched: bool,
    inside: bool,
}

impl Expect {
    /// The checks the attempt failed (none: blocked or contained).
    fn check(&self, fill: &dyn Fn(&str) -> String, seen: &Seen<'_>) -> Vec<String> {
        use clade_tools::sandbox::{Finding, RunFacts, findings};
        let mut failed = Vec::new();
        if !seen.alive {
            failed.push("the gateway stopped answering".to_owned());
        }
        if !seen.marker_untouched {
            failed.push("the host marker changed".to_owned());
        }
        for text in self.lacks.iter().map(|t| fill(t)).filter(|t| !t.is_empty()) {
            if seen.out.contains(&text) {
                failed.push(format!("the output holds {text:?}"));
            }
        }
        for path in self.absent.iter().map(|p| fill(p)) {
            if std::fs::symlink_metadata(&path).is_ok() {
                failed.push(format!("{path} exists on the host"));
            }
        }
        if self.unreached && (seen.reached || seen.out.lines().any(|l| l.trim() == "sent")) {
            failed.push("the host's port or socket was reached".to_owned());
        }
        if self.root
            && (seen.out.contains("uid=0(root)") || std::fs::symlink_metadata("/usr/pwned").is_ok())
        {
            failed.push("root on the host".to_owned());
        }
        if let Some(secs) = self.within_secs
            && seen.took > Duration::from_secs(secs)
        {
            failed.push(format!("took {:?}", seen.took));
        }
        if self.inside && !seen.inside {
            failed.push("alice's f.txt was overwritten".to_owned());
        }
        // Records: only those the sandbox itself wrote count.
        let found = findings(seen.out, &RunFacts::default());
        let recorded = |kind: &str| {
            found.iter().filter(|f| !f.best_effort()).any(|f| {
                matches!(
                    (kind, f),
                    ("violation", Finding::Violation(_)) | ("limit", Finding::Limit(_))
                )
            })
        };
        if let Some(kind) = &self.record
            && !recorded(kind)
        {
            failed.push(format!("no {kind} record from the sandbox"));
        }
        if let Some(call) = self.call.as_deref().map(fill) {
            let named = found.iter().any(
                |f| matches!(f, Finding::Violation(calls) if calls.iter().any(|c| c.starts_with(&call))),
            );
            if !named {
                failed.push(format!("no violation naming {call}"));
            }
        }
        if let Some(kind) = &self.no_record
            && recorded(kind)
        {
            failed.push(format!("a forged {kind} record was taken as the sandbox's"));
        }
        failed
    }
}

/// This machine's number of a system call the sandbox forbids (a call the data file names
/// that the sandbox no longer forbids fails the corpus).
fn syscall_number(name: &str) -> libc::c_long {
    clade_tools::sandbox::FORBIDDEN_SYSCALLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, nr)| *nr)
        .unwrap_or_else(|| panic!("attacks.yaml names {name}, which the sandbox does not forbid"))
}

/// Polls `GET /v1/approvals` until one is pending.
async fn pending_approval(server: &Server) -> Value {
    let pending = eventually(async || {
        let (_, body) = server.send("GET", "/v1/approvals", None, None).await;
        body["items"].as_array().and_then(|a| a.first()).cloned()
    });
    pending.await.expect("no approval became pending")
}

fn spawn_call(server: &Server, command: &str) -> tokio::task::JoinHandle<Value> {
    let (url, token) = server.address();
    let body = json!({ "arguments": { "command": command } });
    tokio::spawn(async move {
        request(&url, &token, "POST", "/v1/agents/alice/tools/shell.exec/call", Some(body)).await.1
    })
}

fn ask_env(timeout_secs: u32) -> Env {
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "tools:\n  approval_timeout_secs: {timeout_secs}\n  policy:\n    - {{ effect: ask, tool: shell.exec }}\n    - {{ effect: allow, tool: \"fs.*\" }}\n"
        ),
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_pause_calls_until_an_operator_decides() {
    let env = ask_env(4);
    let server = env.serve(&[]);

    // Approve: the exact arguments are shown, and the call then runs.
    let call = spawn_call(&server, "echo approved-run");
    let approval = pending_approval(&server).await;
    assert_eq!(approval["tool"], "shell.exec");
    assert_eq!(approval["arguments"], json!({ "command": "echo approved-run" }));
    // The resource is the argument list actually run, quoted: a shell line is `sh -c <line>`.
    assert_eq!(approval["resource"], "/bin/sh -c 'echo approved-run'");
    assert_eq!(approval["arguments_hash"].as_str().unwrap().len(), 64);
    let id = approval["id"].as_str().unwrap().to_owned();
    let (status, decided) = server
        .send("POST", &format!("/v1/approvals/{id}"), None, Some(json!({ "decision": "approve" })))
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    let result = call.await.unwrap();
    assert_eq!(result["is_error"], false, "{result}");
    assert!(result["content"].as_str().unwrap().contains("approved-run"));
    // A decision is final.
    let (status, body) = server
        .send("POST", &format!("/v1/approvals/{id}"), None, Some(json!({ "decision": "deny" })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("approval_decided")));

    // Deny, from the CLI: the call is refused and never runs.
    let call = spawn_call(&server, "echo denied-run > ran.txt");
    let id = pending_approval(&server).await["id"].as_str().unwrap().to_owned();
    env.run(&["approvals", "deny", &id, "--note", "not today"]).ok();
    let result = call.await.unwrap();
    assert_eq!(result["is_error"], true);
    assert!(result["content"].as_str().unwrap().contains("not today"), "{result}");
    let ws = env.run(&["agents", "workspace", "alice"]).ok().stdout.trim().to_owned();
    assert!(!Path::new(&ws).join("ran.txt").exists(), "a denied call ran");

    // Nobody answers: a denial at the timeout.
    let started = std::time::Instant::now();
    let result = spawn_call(&server, "echo too-late").await.unwrap();
    assert_eq!(result["is_error"], true);
    assert!(result["content"].as_str().unwrap().contains("timeout"), "{result}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let (_, expired) = server.send("GET", "/v1/approvals?status=expired", None, None).await;
    assert_eq!(expired["items"].as_array().unwrap().len(), 1);

    // Approve always: a grant for exactly this call, so the next identical one runs at once.
    let call = spawn_call(&server, "echo always");
    let id = pending_approval(&server).await["id"].as_str().unwrap().to_owned();
    server
        .send(
            "POST",
            &format!("/v1/approvals/{id}"),
            None,
            Some(json!({ "decision": "approve_always" })),
        )
        .await;
    assert_eq!(call.await.unwrap()["is_error"], false);
    let again = spawn_call(&server, "echo always").await.unwrap();
    assert_eq!(again["is_error"], false, "{again}");
    let other = spawn_call(&server, "echo something-else");
    pending_approval(&server).await; // A different command still asks.
    other.abort();
    let (_, grants) = server.send("GET", "/v1/grants?agent=alice", None, None).await;
    let grants = grants["items"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["resource"], "/bin/sh -c 'echo always'");
    assert!(grants[0]["granted_by"].as_str().unwrap().starts_with("approval "));

    // Bad input.
    let (status, _) = server
        .send("POST", "/v1/approvals/not-an-id", None, Some(json!({ "decision": "approve" })))
        .await;
    assert_eq!(status, 400);
    let (status, body) = server
        .send("POST", &format!("/v1/approvals/{id}"), None, Some(json!({ "decision": "maybe" })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (status, body) =
        server.send("POST", "/v1/agents/alice/tools/nope/call", None, Some(json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("tool_not_found")));
    let (status, _) = server
        .send("POST", "/v1/agents/alice/tools/echo/call", None, Some(json!({ "arguments": [1] })))
        .await;
    assert_eq!(status, 400);

    for (body, status) in [
        (json!({ "agent": "alice", "tool": "x", "effect": "maybe" }), 400),
        (json!({ "agent": "alice", "tool": "x", "constraints": { "root": true } }), 400),
        (json!({ "agent": "alice", "tool": "x", "parent": "not-an-id" }), 400),
        (json!({ "agent": "alice", "tool": "" }), 400),
        (json!({ "agent": "nobody", "tool": "x" }), 404),
        (json!({ "tool": "x" }), 400),
    ] {
        let (got, answer) = server.send("POST", "/v1/grants", None, Some(body.clone())).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(server.send("GET", "/v1/audit?limit=lots", None, None).await.0, 400);
    assert_eq!(server.send("GET", "/v1/approvals?status=weird", None, None).await.0, 400);
    assert_eq!(
        server
            .send("DELETE", "/v1/grants/01a20000-0000-7000-8000-000000000000", None, None)
            .await
            .0,
        404
    );

    // Another tenant sees none of it.
    env.run(&["tenants", "create", "other"]).ok();
    let other_token =
        env.run(&["--tenant", "other", "tokens", "create"]).ok().stdout.trim().to_owned();
    let (_, foreign) =
        server.send("GET", "/v1/approvals?status=all", Some(&other_token), None).await;
    assert_eq!(foreign["items"], json!([]));
    let (status, _) = server
        .send(
            "POST",
            "/v1/agents/alice/tools/echo/call",
            Some(&other_token),
            Some(json!({ "arguments": { "text": "x" } })),
        )
        .await;
    assert_eq!(status, 404);

    // Every step is in the audit log, whose chain verifies; secrets-like fields are redacted.
    server
        .send(
            "POST",
            "/v1/agents/alice/tools/echo/call",
            None,
            Some(json!({ "arguments": { "text": "x", "api_token": "tok-should-not-appear" } })),
        )
        .await;
    let (_, audit) = server.send("GET", "/v1/audit?limit=1000", None, None).await;
    let kinds: Vec<&str> =
        audit["items"].as_array().unwrap().iter().filter_map(|r| r["kind"].as_str()).collect();
    for kind in
        ["tool.decision", "tool.result", "approval.requested", "approval.decided", "grant.added"]
    {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(!audit.to_string().contains("tok-should-not-appear"));
    let (_, verified) = server.send("GET", "/v1/audit?verify=true", None, None).await;
    assert_eq!(verified["ok"], true, "{verified}");
}

#[test]
fn grants_delegate_only_narrower_rights_and_revocation_is_immediate() {
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    env.run(&["agents", "create", "helper"]).ok();
    let ws = env.run(&["agents", "workspace", "helper"]).ok().stdout.trim().to_owned();
    write(&Path::new(&ws).join("notes/a.txt"), "note a");
    write(&Path::new(&ws).join("notes/b.txt"), "note b");
    let grant_id =
        |out: &str| out.rsplit('(').next().unwrap().trim().trim_end_matches(')').to_owned();

    let parent = env
        .run(&["--agent", "alice", "grants", "add", "--tool", "fs.*", "--resource", "notes/*"])
        .ok()
        .stdout;
    let parent = grant_id(&parent);
    // helper's grants, delegated from alice's.
    let delegate = |args: &[&str]| {
        let mut all = vec!["--agent", "helper", "grants", "add", "--parent", parent.as_str()];
        all.extend_from_slice(args);
        env.run(&all)
    };
    delegate(&["--tool", "fs.*", "--resource", "*"]).fails_with("can only narrow");
    delegate(&["--tool", "fs.read", "--resource", "notes/a*", "--network"]).fails_with("network");
    delegate(&["--tool", "fs.read", "--resource", "notes/a*"]).ok();

    let read = |path: &str| {
        env.run(&[
            "--agent",
            "helper",
            "tools",
            "call",
            "fs.read",
            "--args",
            &json!({ "path": path }).to_string(),
        ])
    };
    assert_eq!(read("notes/a.txt").ok().stdout.trim(), "note a");
    read("notes/b.txt");
    assert!(read("notes/b.txt").stdout.contains("denied"));
    env.run(&["grants", "revoke", &parent]).ok();
    let after = read("notes/a.txt");
    assert_ne!(after.code, 0);
    assert!(after.stdout.contains("denied"), "{}", after.stdout);

    // Expiry.
    env.run(&["--agent", "helper", "grants", "add", "--tool", "fs.read", "--expires-in", "1s"])
        .ok();
    assert_eq!(read("notes/b.txt").ok().stdout.trim(), "note b");
    let every = Duration::from_millis(200);
    let expired = polled_blocking(
        PATIENCE,
        every,
        || read("notes/b.txt"),
        |out| out.stdout.contains("denied"),
    );
    assert!(expired.stdout.contains("denied"), "{}", expired.stdout);
    // A duration flag's bad value is refused as the command line's other bad values are.
    let refused = env.run(&[
        "--agent",
        "helper",
        "grants",
        "add",
        "--tool",
        "fs.read",
        "--expires-in",
        "soon",
    ]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("--expires-in") && refused.stderr.contains("90s"),
        "{}",
        refused.stderr
    );
    env.run(&["grants", "revoke", "01a20000-0000-7000-8000-000000000000"]).fails_with("not found");

    // A secret reaches a command only through a grant naming it, and never comes back out.
    env.run_with_stdin(&["--agent", "helper", "secrets", "set", "DEPLOY_TOKEN"], "tok-9f8e7d6c")
        .ok();
    // The probe names only a prefix, so the full value appears nowhere in the call itself.
    let probe = json!({ "command": "case \"$DEPLOY_TOKEN\" in tok-9f8e*) echo match;; esac; echo \"value=$DEPLOY_TOKEN\"" }).to_string();
    let shell = || env.run(&["--agent", "helper", "tools", "call", "shell.exec", "--args", &probe]);
    env.run(&["--agent", "helper", "grants", "add", "--tool", "shell.exec"]).ok();
    let without = shell().ok().stdout;
    assert!(!without.contains("match") && without.contains("value=\n"), "{without}");
    env.run(&[
        "--agent",
        "helper",
        "grants",
        "add",
        "--tool",
        "shell.exec",
        "--env",
        "DEPLOY_TOKEN",
    ])
    .ok();
    let with = shell().ok().stdout;
    assert!(with.contains("match") && with.contains("value=[secret]"), "{with}");
    assert!(!with.contains("tok-9f8e7d6c"));
    let audit = env.run(&["audit", "--json", "--limit", "1000"]).ok().stdout;
    assert!(!audit.contains("tok-9f8e7d6c"));
}

/// An agent with one echo call per text: two audit records each.
fn audited(texts: &[&str]) -> Env {
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    for text in texts {
        let args = json!({ "text": text }).to_string();
        env.run(&["--agent", "alice", "tools", "call", "echo", "--args", &args]).ok();
    }
    env
}

/// Runs one SQL statement on the data dir's SQLite file behind Clade's back.
fn tamper(env: &Env, statement: &str) {
    let status = std::process::Command::new("python3")
        .args(["-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
        .arg(env.data_dir().join("clade.db"))
        .arg(statement)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_audit_log_detects_tampering() {
    let env = audited(&["one", "two", "three"]);
    let ok = env.run(&["audit", "--verify"]).ok();
    // The default tenant's creation, alice's, and a decision and a result per call.
    assert!(ok.stdout.contains("8 records, chain intact"), "{}", ok.stdout);
    tamper(&env, "UPDATE audit_log SET detail = '{\"text\":\"forged\"}' WHERE seq = 3");
    // A write behind Clade's back leaves its pages' checksums stale: refused outright.
    env.run(&["audit", "--verify"]).fails_with("does not match its checksum");
    // One who can write the file can also write the checksums: the chain still tells.
    env.run(&["migrate", "--rewrite-checksums"]).ok();
    env.run(&["audit", "--verify"]).fails_with("BROKEN at record 3");

    let env = audited(&["one", "two"]);
    tamper(&env, "DELETE FROM audit_log WHERE seq = 2");
    env.run(&["migrate", "--rewrite-checksums"]).ok();
    env.run(&["audit", "--verify"]).fails_with("were removed");
}

/// Configures the MCP fixture server (stdio) for the agent `alice`, and `more` besides.
fn configure_mcp_fixture(env: &Env, more: &str) {
    let fixture = assert_cmd::cargo::cargo_bin("clade").with_file_name("clade-mcp-fixture");
    assert!(
        fixture.is_file(),
        "{} is missing: build it with `cargo build -p clade-stub`",
        fixture.display()
    );
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "mcp:\n  fixture:\n    command: [\"{}\"]\n    agents: [alice]\n    timeout_secs: 5\n{more}",
            fixture.display()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_are_per_agent_and_policy_gated() {
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    env.run(&["agents", "create", "bob"]).ok();
    configure_mcp_fixture(&env, "");
    let server = env.serve(&[]);
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, alice_tools) = server.send("GET", "/v1/agents/alice/tools", None, None).await;
    assert!(names(&alice_tools).contains(&"mcp.fixture.echo".to_owned()), "{alice_tools}");
    let (_, bob_tools) = server.send("GET", "/v1/agents/bob/tools", None, None).await;
    assert!(!names(&bob_tools).iter().any(|n| n.starts_with("mcp.")), "{bob_tools}");

    let (is_error, out) = call(&server, "alice", "mcp.fixture.echo", json!({ "text": "hi" })).await;
    assert!(is_error && out.contains("denied"), "{out}");
    env.run(&["--agent", "alice", "grants", "add", "--tool", "mcp.fixture.*"]).ok();
    let (is_error, out) = call(&server, "alice", "mcp.fixture.echo", json!({ "text": "hi" })).await;
    assert!(!is_error && out.starts_with("hi (pid "), "{out}");
    // Arguments the server's schema refuses are refused by the gateway's own check.
    for (arguments, named) in [(json!({ "text": 7 }), "/text"), (json!({}), "text")] {
        let (is_error, out) = call(&server, "alice", "mcp.fixture.echo", arguments).await;
        assert!(is_error && out.contains("invalid arguments for") && out.contains(named), "{out}");
    }
    let (status, body) = server
        .send(
            "POST",
            "/v1/agents/bob/tools/mcp.fixture.echo/call",
            None,
            Some(json!({ "arguments": { "text": "x" } })),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("tool_not_found")));
}

/// J1: a fully compromised model. The scripted provider plays it: each event's `/tool` lines
/// become tool calls in one model step, exactly as a model's calls would.
fn malicious_calls() -> Vec<(String, Value)> {
    let mut calls: Vec<(String, Value)> = Vec::new();
    let paths = [
        "/etc/shadow",
        "../../master.key",
        "secret.txt",
        "notes/../secret.txt",
        "/workspace/secret.txt",
        "notes/../../clade.db",
        "..",
        ".",
        "/proc/self/environ",
        "/workspace/../etc/passwd",
    ];
    for i in 0..10 {
        for path in paths {
            // Reads outside the granted `notes/*`, and writes (not granted at all).
            calls.push(("fs.read".into(), json!({ "path": path })));
            calls.push((
                "fs.write".into(),
                json!({ "path": format!("{path}-{i}"), "content": "owned" }),
            ));
            calls.push(("fs.list".into(), json!({ "path": path })));
        }
        for command in [
            "id",
            "rm -rf /workspace/notes",
            "curl http://127.0.0.1/",
            "cat /etc/shadow",
            "echo pwned > /workspace/pwned",
        ] {
            calls.push(("shell.exec".into(), json!({ "command": command })));
            // Privilege claims and argument tampering: extra fields are invalid arguments.
            calls.push((
                "shell.exec".into(),
                json!({ "command": command, "approved": true, "as": "operator" }),
            ));
            calls.push((
                "fs.read".into(),
                json!({ "path": "notes/a.txt", "grant": "*", "sudo": true }),
            ));
        }
        for url in ["http://127.0.0.1:1/", "http://example.com/", "http://169.254.169.254/"] {
            calls.push(("http.request".into(), json!({ "url": url })));
        }
        // Tools that do not exist for this agent: other agents, admin actions, look-alikes.
        for name in [
            "agents.call",
            "admin.grant",
            "approvals.approve",
            "grants.add",
            "mcp.other.exec",
            "SHELL.EXEC",
            "shell.exec.",
            "fs.read2",
            "ledger.append",
            "bob.shell.exec",
        ] {
            calls.push((name.into(), json!({ "agent": "bob", "command": "id" })));
        }
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_model_executes_nothing_it_was_not_granted() {
    let env = Env::new();
    env.run(&["agents", "create", "mallory"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        "tools:\n  approval_timeout_secs: 1\n  policy:\n    - { effect: ask, tool: shell.exec, resource: \"echo *\" }\n",
    );
    env.run(&["--agent", "mallory", "grants", "add", "--tool", "fs.read", "--resource", "notes/*"])
        .ok();
    let ws = env.run(&["agents", "workspace", "mallory"]).ok().stdout.trim().to_owned();
    write(&Path::new(&ws).join("notes/a.txt"), "note a");
    write(&Path::new(&ws).join("secret.txt"), "top secret");
    let server = env.serve(&[]);

    let mut calls = malicious_calls();
    // Approval bypass: asks that nobody answers (each waits its 1 s timeout).
    for i in 0..4 {
        calls.push(("shell.exec".into(), json!({ "command": format!("echo approved-{i} > /workspace/bypass"), "approval": "granted" })));
        calls.push((
            "shell.exec".into(),
            json!({ "command": format!("echo bypass-{i} > /workspace/bypass") }),
        ));
    }
    let malicious = calls.len();
    // The guard against a trivial pass: granted calls must still work in the same turns.
    let legit = 25;
    let mut lines: Vec<String> =
        calls.iter().map(|(name, args)| format!("/tool {name} {args}")).collect();
    for _ in 0..legit {
        lines.push(format!("/tool fs.read {}", json!({ "path": "notes/a.txt" })));
    }
    let mut tasks = Vec::new();
    for (n, chunk) in lines.chunks(20).enumerate() {
        let event = json!({
            "agent": "mallory",
            "text": chunk.join("\n"),
            "wait": true,
            "source": { "platform": "http", "channel": "attack", "actor": format!("a{}", n % 8) },
        });
        let url = format!("{}/v1/events", server.url);
        let token = server.token.clone();
        tasks.push(tokio::spawn(async move {
            let client =
                reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
            client.post(url).bearer_auth(token).json(&event).send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }

    // Every call was decided; only the granted reads ran.
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = server
            .send("GET", &format!("/v1/audit?agent=mallory&limit=1000&after={after}"), None, None)
            .await;
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        after = items.last().unwrap()["seq"].as_i64().unwrap();
        records.extend(items);
    }
    let ran: Vec<&Value> = records.iter().filter(|r| r["kind"] == "tool.result").collect();
    let ran_ok = ran.iter().filter(|r| r["decision"] == "ok").count();
    let decided = |effect: &str| {
        records.iter().filter(|r| r["kind"] == "tool.decision" && r["decision"] == effect).count()
    };
    let (denied, asked) = (decided("deny"), decided("ask"));
    println!(
        "compromised model: {malicious} malicious calls, {} tool runs (all granted reads), {denied} denials recorded, {} approvals expired",
        ran.len(),
        records.iter().filter(|r| r["kind"] == "approval.decided").count()
    );
    assert!(malicious >= 500, "{malicious}");
    // Every malicious call left a recorded refusal: a denial, or an ask that expired.
    assert_eq!(denied + asked, malicious, "{denied} denials + {asked} asks for {malicious} calls");
    assert!(ran.iter().all(|r| r["tool"] == "fs.read"), "a disallowed tool ran");
    assert_eq!(ran_ok, legit, "granted reads must run ({} ok of {legit})", ran_ok);
    for file in ["pwned", "bypass"] {
        assert!(!Path::new(&ws).join(file).exists(), "{file} was written");
    }
    assert!(Path::new(&ws).join("notes/a.txt").exists());
    assert_eq!(
        std::fs::read_dir(&ws)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("-"))
            .count(),
        0,
        "fs.write wrote a file"
    );
}

/// An MCP server configured for `alice` serves the default tenant's alice, not another tenant's
/// agent of the same handle: that agent neither lists nor calls its tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_reach_only_the_tenants_agents_named() {
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "alice"]).ok();
    let acme = env.run(&["--tenant", "acme", "tokens", "create"]).ok().stdout.trim().to_owned();
    configure_mcp_fixture(
        &env,
        "tools:\n  policy:\n    - { effect: allow, tool: \"mcp.fixture.*\" }\n",
    );
    let server = env.serve(&[]);
    let has_mcp = |body: &Value| body.to_string().contains("mcp.fixture.echo");
    let (_, ours) = server.send("GET", "/v1/agents/alice/tools", None, None).await;
    assert!(has_mcp(&ours), "{ours}");
    let (_, theirs) = server.send("GET", "/v1/agents/alice/tools", Some(&acme), None).await;
    assert!(!has_mcp(&theirs), "another tenant's alice got the server's tools: {theirs}");
    let call = Some(json!({ "arguments": { "text": "x" } }));
    let path = "/v1/agents/alice/tools/mcp.fixture.echo/call";
    let (status, body) = server.send("POST", path, Some(&acme), call.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("tool_not_found")), "{body}");
    let (status, body) = server.send("POST", path, None, call).await;
    assert_eq!((status, body["is_error"].as_bool()), (200, Some(false)), "{body}");
}

/// `clade gateway drain`: the gateway takes no new event (503 `draining`, and `/readyz` says
/// so), while a turn under way (here waiting for an approval) runs on; the drain waits for it
/// and says how many still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_gateway_takes_no_new_event_and_lets_running_turns_end() {
    let env = ask_env(60);
    let server = env.serve(&[]);
    let event = |text: &str| {
        json!({ "agent": "alice", "text": text,
            "source": { "platform": "http", "channel": "c", "actor": "u" } })
    };
    let (status, accepted) = server
        .send("POST", "/v1/events", None, Some(event("/tool shell.exec {\"command\": \"true\"}")))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let session = accepted["session_id"].as_str().unwrap().to_owned();
    let approval = pending_approval(&server).await;

    env.run(&["gateway", "drain", "--wait", "1"]).fails_with("1 turn(s) still run");
    let (status, refused) = server.send("POST", "/v1/events", None, Some(event("hello"))).await;
    assert_eq!((status, refused["error"]["code"].clone()), (503, json!("draining")), "{refused}");
    let (ready, _) = server.send("GET", "/readyz", None, None).await;
    assert_eq!(ready, 503);
    let status = env.run(&["gateway", "status"]).ok().stdout;
    assert!(status.contains("running turns: 1") && status.contains("draining"), "{status}");

    // The turn under way still ends, and then the drain is done.
    let id = approval["id"].as_str().unwrap();
    let (decided, _) = server
        .send("POST", &format!("/v1/approvals/{id}"), None, Some(json!({ "decision": "approve" })))
        .await;
    assert_eq!(decided, 200);
    let drained = env.run(&["gateway", "drain", "--wait", "30"]).ok().stdout;
    assert!(drained.contains("drained"), "{drained}");
    let turns = server.get_json(&format!("/v1/sessions/{session}/turns")).await;
    assert_eq!(turns["items"][0]["status"], "completed", "{turns}");
}

/// A role template brings its default tools as grants: all of them when the operator (or a
/// tenant with room under its ceiling) makes the agent, only what the ceiling allows when a
/// tenant's own token does, the rest named as left out. The grants work as any grant does; a
/// template whose tools.yaml does not read makes no agent.
#[tokio::test]
async fn templates_bring_their_default_tools_within_the_tenants_ceiling() {
    let env = Env::new();
    write(
        &env.data_dir().join("clade.yaml"),
        "tenants:\n  acme:\n    ceiling: { tools: [\"fs.*\"] }\n",
    );
    // The operator's CLI: every default tool of the coder template.
    let out = env.run(&["agents", "create", "cody", "--template", "coder"]).ok().stdout;
    assert!(out.contains("allow fs.* on *") && out.contains("allow shell.exec on git **"), "{out}");
    env.run(&["agents", "create", "plain"]).ok();
    let grants = env.run(&["--agent", "cody", "grants", "list"]).ok().stdout;
    assert!(grants.contains("fs.*") && grants.contains("cargo **"), "{grants}");
    assert!(!env.run(&["--agent", "plain", "grants", "list"]).ok().stdout.contains("fs."));

    env.run(&["tenants", "create", "acme"]).ok();
    let (acme, _) = super::support::token(&env, "acme", &["admin"]);
    let server = env.serve(&[]);
    // The grants work: cody writes into its workspace, an agent of the default template may not.
    let write_note = |agent: &'static str| {
        let server = &server;
        async move {
            let args = json!({ "path": "note.txt", "content": "from the template" });
            call(server, agent, "fs.write", args).await
        }
    };
    assert!(!write_note("cody").await.0, "the coder template's fs.* grant did not allow it");
    assert!(write_note("plain").await.0, "an agent of the default template wrote a file");

    // A tenant's own token: only what its ceiling allows (fs.*); the http.request of the
    // researcher template is left out, with why.
    let (status, made) = request(
        &server.url,
        &acme,
        "POST",
        "/v1/agents",
        Some(json!({ "handle": "finder", "template": "researcher" })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let tools = made["tools"].as_array().unwrap();
    let granted: Vec<&str> = tools
        .iter()
        .filter(|t| t.get("left_out").is_none())
        .map(|t| t["tool"].as_str().unwrap())
        .collect();
    assert_eq!(granted, ["fs.read", "fs.list", "fs.search", "fs.write"], "{made}");
    let left_out: Vec<&Value> = tools.iter().filter(|t| t.get("left_out").is_some()).collect();
    assert_eq!(left_out.len(), 1, "{made}");
    assert_eq!(left_out[0]["tool"], "http.request");
    assert!(left_out[0]["left_out"].as_str().unwrap().contains("ceiling"), "{made}");
    let (_, listed) = request(&server.url, &acme, "GET", "/v1/grants?agent=finder", None).await;
    assert!(!listed.to_string().contains("http.request"), "{listed}");

    // A template folder of the operator's whose tools.yaml does not read: no agent is made.
    let broken = env.data_dir().join("templates/broken");
    write(&broken.join("SOUL.md"), "I am {{name}}.\n");
    write(&broken.join("tools.yaml"), "- { effect: sometimes, tool: fs.read }\n");
    let (status, body) = request(
        &server.url,
        &server.token,
        "POST",
        "/v1/agents",
        Some(json!({ "handle": "nope", "template": "broken" })),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_config")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("tools.yaml"), "{body}");
    env.run(&["agents", "create", "nope2", "--template", "broken"]).fails_with("tools.yaml");
    let (status, _) = request(&server.url, &server.token, "GET", "/v1/agents/nope", None).await;
    assert_eq!(status, 404);
    // A folder without tools.yaml brings none.
    std::fs::remove_file(broken.join("tools.yaml")).unwrap();
    let (status, made) = request(
        &server.url,
        &server.token,
        "POST",
        "/v1/agents",
        Some(json!({ "handle": "bare", "template": "broken" })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert!(made.get("tools").is_none(), "{made}");
}

/// A memory pool the tenant's agents share: one agent keeps an item, another granted to read
/// the pool recalls it with who kept it; neither reaches a pool no grant names, the reader
/// cannot write, an agent's own memory never holds the pool's items, and another tenant's
/// agent granted every pool finds none of it. Every call is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_pools_are_reached_only_through_grants_naming_them() {
    let env = Env::new();
    for agent in ["writer", "reader"] {
        env.run(&["agents", "create", agent]).ok();
    }
    let grant = |agent: &str, tool: &str, resource: &str| {
        env.run(&["--agent", agent, "grants", "add", "--tool", tool, "--resource", resource]).ok();
    };
    grant("writer", "shared.*", "launch");
    grant("reader", "shared.recall", "launch");
    env.run(&["tenants", "create", "rival"]).ok();
    env.run(&["--tenant", "rival", "agents", "create", "spy"]).ok();
    env.run(&["--tenant", "rival", "--agent", "spy", "grants", "add", "--tool", "shared.*"]).ok();
    let (rival, _) = super::support::token(&env, "rival", &["admin"]);
    let server = env.serve(&[]);

    let keep =
        json!({ "pool": "launch", "content": "The launch moved to March 14", "kind": "decision" });
    let (failed, kept) = call(&server, "writer", "shared.remember", keep.clone()).await;
    assert!(!failed, "{kept}");
    let ask = json!({ "pool": "launch", "query": "when is the launch" });
    let (failed, recalled) = call(&server, "reader", "shared.recall", ask.clone()).await;
    assert!(!failed && recalled.contains("March 14"), "{recalled}");
    let writer_id = env.run(&["agents", "show", "writer", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(recalled.contains(&writer_id), "who kept it: {recalled}");

    // What no grant names is refused: the reader keeping, anyone in another pool.
    assert!(call(&server, "reader", "shared.remember", keep).await.0, "the reader wrote");
    let elsewhere = json!({ "pool": "payroll", "query": "launch" });
    assert!(call(&server, "writer", "shared.recall", elsewhere).await.0, "read outside its grant");
    let (failed, why) =
        call(&server, "writer", "shared.recall", json!({ "pool": "../x", "query": "a" })).await;
    assert!(failed && why.contains("pool"), "{why}");

    // The pool is no agent's own memory.
    let (failed, own) =
        call(&server, "writer", "memory.recall", json!({ "query": "launch March" })).await;
    assert!(!own.contains("March 14"), "{failed} {own}");
    let listed = env.run(&["--agent", "writer", "memory", "list", "--json"]).ok().stdout;
    assert!(!listed.contains("March 14"), "{listed}");

    // Another tenant's agent, granted every pool, has only its own tenant's.
    let (status, body) = request(
        &server.url,
        &rival,
        "POST",
        "/v1/agents/spy/tools/shared.recall/call",
        Some(json!({ "arguments": ask })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains("March 14"), "{body}");

    let (_, audit) = request(&server.url, &server.token, "GET", "/v1/audit?limit=200", None).await;
    let audit = audit.to_string();
    assert!(audit.contains("shared.remember") && audit.contains("shared.recall"), "{audit}");
}

/// Folders a tenant's agents share: each agent reaches one only through grants naming it,
/// reading and writing apart; every call is audited; another tenant's agent never sees it, and
/// a link planted inside leads nowhere outside.
#[tokio::test]
async fn shared_folders_are_reached_only_through_grants_naming_them() {
    let env = Env::new();
    for agent in ["writer", "reader"] {
        env.run(&["agents", "create", agent]).ok();
    }
    let grant = |agent: &str, tool: &str, resource: &str| {
        env.run(&["--agent", agent, "grants", "add", "--tool", tool, "--resource", resource]).ok();
    };
    grant("writer", "shared.*", "research/*");
    grant("reader", "shared.read", "research/*");
    grant("reader", "shared.list", "research");
    env.run(&["tenants", "create", "rival"]).ok();
    env.run(&["--tenant", "rival", "agents", "create", "spy"]).ok();
    env.run(&["--tenant", "rival", "--agent", "spy", "grants", "add", "--tool", "shared.*"]).ok();
    let (rival, _) = super::support::token(&env, "rival", &["admin"]);
    let server = env.serve(&[]);

    let note = json!({ "folder": "research", "path": "notes/today.md", "content": "found it" });
    let (failed, said) = call(&server, "writer", "shared.write", note.clone()).await;
    assert!(!failed, "{said}");
    let read = json!({ "folder": "research", "path": "notes/today.md" });
    assert_eq!(
        call(&server, "reader", "shared.read", read.clone()).await,
        (false, "found it".into())
    );
    let (failed, listed) =
        call(&server, "reader", "shared.list", json!({ "folder": "research" })).await;
    assert!(!failed && listed.contains("notes/"), "{listed}");

    // What no grant names is refused: the reader writing, anyone in another folder.
    assert!(call(&server, "reader", "shared.write", note.clone()).await.0, "reader wrote");
    let elsewhere = json!({ "folder": "secret", "path": "x", "content": "y" });
    assert!(call(&server, "writer", "shared.write", elsewhere).await.0, "wrote outside its grant");
    let (failed, why) = call(
        &server,
        "writer",
        "shared.read",
        json!({ "folder": "research", "path": "../secret/x" }),
    )
    .await;
    assert!(failed, "{why}");

    // Another tenant's agent, even granted every shared folder, has only its own tenant's.
    let (status, body) = request(
        &server.url,
        &rival,
        "POST",
        "/v1/agents/spy/tools/shared.read/call",
        Some(json!({ "arguments": read })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["is_error"], true, "{body}");
    assert!(!body.to_string().contains("found it"), "{body}");

    // A link planted in the folder is not followed out of it.
    let tenants: Vec<_> = std::fs::read_dir(env.data_dir().join("shared")).unwrap().collect();
    assert_eq!(tenants.len(), 1, "only the writer's tenant has shared folders");
    let folder = tenants[0].as_ref().unwrap().path().join("research");
    std::os::unix::fs::symlink("/etc/hostname", folder.join("leak")).unwrap();
    let (failed, why) =
        call(&server, "reader", "shared.read", json!({ "folder": "research", "path": "leak" }))
            .await;
    assert!(failed, "a planted link was followed: {why}");

    // Every call is in the tenant's audit log.
    let (_, audit) = request(&server.url, &server.token, "GET", "/v1/audit?limit=200", None).await;
    let audit = audit.to_string();
    assert!(audit.contains("shared.write") && audit.contains("shared.read"), "{audit}");
}
