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

use super::support::{Env, Server, request, write};

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
        if clade_tools::sandbox::is_account(detail) {
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

    // G1/G2: writes outside the workspace.
    let host_tmp = env.tmp.path().join("pwned");
    let host_tmp_text = host_tmp.display().to_string();
    for (name, command) in [
        ("write /etc", "echo x > /etc/clade-pwned".to_owned()),
        ("write host tmp path", format!("mkdir -p {0}; echo x > {0}/f", host_tmp_text)),
        ("write via ..", "echo x > ../../clade-pwned".to_owned()),
        (
            "write via symlink",
            format!("ln -s {} up && echo x > up/pwned", env.tmp.path().display()),
        ),
        ("write via /proc/self/root", format!("echo x > /proc/self/root{host_tmp_text}")),
        ("write /proc/1/cwd", "echo x > /proc/1/cwd/../clade-pwned".to_owned()),
        ("overwrite the marker", format!("echo owned > {}", marker.display())),
        ("write the data dir", format!("echo x > {data_text}/clade.db")),
    ] {
        let out = shell(&server, &command).await;
        let escaped = Path::new("/etc/clade-pwned").exists()
            || host_tmp.exists()
            || std::fs::read_to_string(&marker).unwrap() != "untouched";
        corpus.record(name, !escaped, &out);
    }

    // Reads of denied paths: each must not return the secret content.
    for (name, command, secret) in [
        ("read /etc/shadow", "cat /etc/shadow".to_owned(), shadow_head.clone()),
        (
            "read ~/.ssh",
            "cat /root/.ssh/* ~/.ssh/* 2>&1; ls -la /root".to_owned(),
            "PRIVATE KEY".to_owned(),
        ),
        (
            "read the database",
            format!("head -c 16 {data_text}/clade.db"),
            "SQLite format 3".to_owned(),
        ),
        (
            "read the master key",
            format!("cat {data_text}/master.key"),
            master_key.trim().to_owned(),
        ),
        (
            "read tenant B's workspace",
            format!("cat {bob_ws}/secret.txt"),
            CANARY_TENANT_B.to_owned(),
        ),
        (
            "read B via /proc/self/root",
            format!("cat /proc/self/root{bob_ws}/secret.txt"),
            CANARY_TENANT_B.to_owned(),
        ),
        (
            "find B's workspace",
            "grep -rs canary-tenant-b / 2>/dev/null | head -3".to_owned(),
            CANARY_TENANT_B.to_owned(),
        ),
        (
            "daemon env via /proc/1/environ",
            "cat /proc/1/environ; cat /proc/*/environ".to_owned(),
            CANARY_ENV.to_owned(),
        ),
        ("daemon env via env", "env".to_owned(), CANARY_ENV.to_owned()),
        ("vault secret via env", "env".to_owned(), CANARY_SECRET.to_owned()),
    ] {
        let out = shell(&server, &command).await;
        let leaked = !secret.is_empty() && out.contains(&secret);
        corpus.record(name, !leaked, &out);
    }

    // The same reads and writes through every common way to read or write a file.
    let readers = [
        "cat {}",
        "head -c 4096 {}",
        "tail -c 4096 {}",
        "dd if={} bs=4096 count=1 status=none",
        "base64 {}",
        "python3 -c 'print(open(\"{}\").read())'",
        "cp {} ./copied && cat ./copied",
        "grep -a . {}",
        "od -c {} | head -50",
        "perl -pe '' {}",
        "awk 1 {}",
        "sed -n p {}",
    ];
    let secrets_at = [
        ("/etc/shadow".to_owned(), shadow_head.clone()),
        (format!("{data_text}/master.key"), master_key.trim().to_owned()),
        (format!("{bob_ws}/secret.txt"), CANARY_TENANT_B.to_owned()),
        (format!("/proc/self/root{bob_ws}/secret.txt"), CANARY_TENANT_B.to_owned()),
        ("/proc/1/environ".to_owned(), CANARY_ENV.to_owned()),
        (format!("{carol_ws}/secret.txt"), CANARY_SAME_TENANT.to_owned()),
        (format!("{data_text}/clade.db"), "SQLite format 3".to_owned()),
    ];
    for reader in readers {
        for (path, secret) in &secrets_at {
            let out = shell(&server, &reader.replace("{}", path)).await;
            let leaked = !secret.is_empty() && out.contains(secret.as_str());
            corpus.record(&format!("{reader} on {path}"), !leaked, &out);
        }
    }
    let writers = [
        "echo x > {}",
        "echo x | tee {}",
        "cp /usr/bin/env {}",
        "touch {}",
        "mkdir -p {}",
        "python3 -c 'open(\"{}\", \"w\").write(\"x\")'",
        "dd if=/dev/zero of={} count=1 status=none",
        "ln -s /etc/passwd {}",
    ];
    let host_targets = [
        env.tmp.path().join("w1"),
        data.join("w2"),
        Path::new(&bob_ws).join("w3"),
        Path::new("/usr/local/clade-w4").to_owned(),
        Path::new("/etc/clade-w5").to_owned(),
        Path::new(&carol_ws).join("w6"),
        data.join("clade.yaml-w7"),
    ];
    for writer in writers {
        for target in &host_targets {
            let shown = target.display().to_string();
            let _ = std::fs::remove_file(target);
            let out = shell(&server, &writer.replace("{}", &shown)).await;
            corpus.record(
                &format!("{writer} on {shown}"),
                std::fs::symlink_metadata(target).is_err(),
                &out,
            );
        }
        let out = shell(
            &server,
            &writer.replace("{}", &format!("/proc/self/root{}", host_targets[0].display())),
        )
        .await;
        corpus.record(
            &format!("{writer} via /proc/self/root"),
            std::fs::symlink_metadata(&host_targets[0]).is_err(),
            &out,
        );
    }

    // Network egress without a grant.
    let (host_listener, port) = listener();
    for (name, command) in [
        ("bash /dev/tcp", format!("bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'")),
        ("curl loopback", format!("curl -sS -m 2 http://127.0.0.1:{port}/")),
        ("wget loopback", format!("wget -q -T 2 -O- http://127.0.0.1:{port}/")),
        ("python socket", format!("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'")),
        ("curl external", "curl -sS -m 2 http://1.1.1.1/".to_owned()),
        ("udp dns", "python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b\"x\", (\"8.8.8.8\", 53))' && echo sent".to_owned()),
    ] {
        let out = shell(&server, &command).await;
        corpus.record(name, !was_reached(&host_listener) && !out.contains("sent"), &out);
    }

    // Descriptors and host IPC: nothing inherited beyond stdio, no host sockets reachable.
    let abstract_name = format!("clade-test-{}", std::process::id());
    let host_socket =
        std::os::unix::net::UnixListener::bind(env.tmp.path().join("host.sock")).unwrap();
    host_socket.set_nonblocking(true).unwrap();
    for (name, command) in [
        ("inherited descriptors", "ls /proc/self/fd | wc -l | awk '{ if ($1 > 4) print \"leak\", $1 }'".to_owned()),
        ("host unix socket by path", format!("python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{}\"); print(\"leak\")'", env.tmp.path().join("host.sock").display())),
        ("docker socket", "ls -la /var/run/docker.sock /run/docker.sock 2>&1 | grep -v 'No such' && echo leak".to_owned()),
        ("host abstract socket", format!("python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"\\0{abstract_name}\"); print(\"leak\")'")),
        ("terminal injection", "python3 -c 'import fcntl, termios; fcntl.ioctl(0, termios.TIOCSTI, b\"x\"); print(\"leak\")'".to_owned()),
    ] {
        let out = shell(&server, &command).await;
        corpus.record(name, !out.contains("leak") && host_socket.accept().is_err(), &out);
    }

    // A setuid file planted in the workspace does not stay setuid on the host.
    let out = shell(&server, "cp /usr/bin/id ./suid-id && chmod 4755 ./suid-id && mkdir -p d && cp /usr/bin/id d/sgid && chmod 2755 d/sgid").await;
    let planted = ["suid-id", "d/sgid"].iter().any(|f| {
        std::fs::metadata(Path::new(&alice_ws).join(f))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o6000 != 0)
            .unwrap_or(false)
    });
    corpus.record("setuid file planted on the host", !planted, &out);

    // Every way to reach the network, to every kind of destination.
    let (net_listener, net_port) = listener();
    let clients = [
        "bash -c 'echo hi > /dev/tcp/{h}/{p}' && echo sent",
        "curl -sS -m 2 http://{u}:{p}/ && echo sent",
        "wget -q -T 2 -O- http://{u}:{p}/ && echo sent",
        "python3 -c 'import socket; socket.create_connection((\"{h}\", {p}), 2); print(\"sent\")'",
        "python3 -c 'import socket; s=socket.socket(socket.AF_INET6 if \":\" in \"{h}\" else socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b\"x\", (\"{h}\", {p})); print(\"sent\")'",
        "perl -MIO::Socket::IP -e 'IO::Socket::IP->new(PeerHost => \"{h}\", PeerPort => {p}, Timeout => 2) and print \"sent\"'",
    ];
    // A datagram "sent" to loopback lands on the sandbox's own loopback; what counts for UDP
    // is whether the host's socket received it.
    let udp = std::net::UdpSocket::bind(("127.0.0.1", net_port)).unwrap();
    udp.set_nonblocking(true).unwrap();
    let port_text = net_port.to_string();
    for client in clients {
        for host in ["127.0.0.1", "::1", "1.1.1.1", "10.0.0.1", "localhost"] {
            // In a URL an IPv6 address goes in brackets.
            let in_url = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
            let command =
                client.replace("{h}", host).replace("{u}", &in_url).replace("{p}", &port_text);
            let out = shell(&server, &command).await;
            let datagram = client.contains("SOCK_DGRAM");
            let sent = !datagram && out.lines().any(|l| l.trim() == "sent");
            let received = udp.recv(&mut [0u8; 16]).is_ok();
            let blocked = !sent && !received && !was_reached(&net_listener);
            corpus.record(&format!("network {host} by {}", &client[..12]), blocked, &out);
        }
    }

    // Privilege and host processes.
    let server_pid = server.child.id();
    for (name, command) in [
        ("signal the daemon", format!("kill -9 {server_pid}; kill -9 1")),
        ("nested user namespace", "unshare -r id".to_owned()),
        ("mount", "mount -t tmpfs none /usr 2>&1; touch /usr/pwned".to_owned()),
        ("raw socket", "python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW); print(\"uid=0(root) raw\")'".to_owned()),
        ("netlink route change", "ip link set lo down 2>&1; python3 -c 'import socket; s=socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); s.bind((0,0)); print(\"bound\")'".to_owned()),
        ("set the clock", "date -s '2000-01-01' 2>&1 && echo 'uid=0(root)'".to_owned()),
        ("sysctl write", "echo 1 > /proc/sys/kernel/sysrq 2>&1 && echo 'uid=0(root)'".to_owned()),
        ("chroot", "chroot / id 2>&1".to_owned()),
        ("setuid binary", "ls -la /usr/bin/su /usr/bin/passwd 2>&1; su -c id 2>&1 </dev/null".to_owned()),
        ("see host processes", "ls /proc | grep -c '^[0-9]' | awk '{ if ($1 > 20) print \"uid=0(root) sees\", $1 }'".to_owned()),
        ("ptrace the daemon", format!("python3 -c 'import ctypes; l=ctypes.CDLL(None); print(\"uid=0(root)\" if l.ptrace(16, {server_pid}, 0, 0) == 0 else \"denied\")'")),
    ] {
        let out = shell(&server, &command).await;
        let alive = server.send("GET", "/healthz", None, None).await.0 == 200;
        corpus.record(
            name,
            alive && !Path::new("/usr/pwned").exists() && !out.contains("uid=0(root)"),
            &out,
        );
    }

    // Every system call the sandbox forbids, made directly (null arguments: harmless even
    // where it reached the kernel, which prints "ran"): each must kill its caller.
    let forbidden = [
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("reboot", libc::SYS_reboot),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("acct", libc::SYS_acct),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("syslog", libc::SYS_syslog),
        ("quotactl", libc::SYS_quotactl),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("vhangup", libc::SYS_vhangup),
        ("open_tree", libc::SYS_open_tree),
        ("move_mount", libc::SYS_move_mount),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
    ];
    for (name, number) in forbidden {
        let command = format!(
            "python3 -c 'import ctypes; r = ctypes.CDLL(None).syscall({number}, 0, 0, 0, 0, 0); print(\"ran\" if r >= 0 else \"failed\")'"
        );
        let out = shell(&server, &command).await;
        let killed = out.starts_with("sandbox violation");
        corpus.record(&format!("system call {name}"), killed && !out.contains("ran"), &out);
    }

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
    tokio::time::sleep(Duration::from_millis(300)).await;
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

    // Resource exhaustion: contained, and the server keeps serving.
    for (name, command, expect) in [
        ("fork bomb", "b() { b | b & }; b; sleep 1", ""),
        (
            "memory bomb",
            "python3 -c 'x = bytearray(2 * 1024**3); print(\"allocated\")'",
            "allocated",
        ),
        ("infinite loop", "while :; do :; done", ""),
        ("gigabytes of output", "yes AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""),
        ("disk fill", "head -c 2000000000 /dev/zero > big; ls -la big", ""),
        (
            "descriptor exhaustion",
            "python3 -c 'import os; fds=[os.open(\"/dev/null\", 0) for _ in range(100000)]; print(\"opened\", len(fds))'",
            "opened",
        ),
        (
            "escape the deadline",
            "setsid sh -c 'sleep 30; echo late > /workspace/late' & disown; echo started",
            "",
        ),
    ] {
        let started = std::time::Instant::now();
        let out = shell(&server, command).await;
        let alive = server.send("GET", "/healthz", None, None).await.0 == 200;
        let contained = alive
            && started.elapsed() < Duration::from_secs(10)
            && (expect.is_empty() || !out.contains(expect));
        corpus.record(name, contained, &out);
    }
    let big = Path::new(&alice_ws).join("big");
    let big_size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
    corpus.record("disk fill size", big_size <= 64 * 1024 * 1024, &format!("{big_size} bytes"));

    // Workspace confinement of the fs tools (which run in the daemon itself).
    shell(&server, "echo inside > f.txt; ln -s /etc/shadow shadow-link; ln -s / root-link; ln -s ../../../../../../ up-link; ln -s /proc/self/root proc-link; ln f.txt hard.txt").await;
    for (name, tool, args, secret) in [
        ("fs.read absolute", "fs.read", json!({ "path": "/etc/shadow" }), shadow_head.clone()),
        (
            "fs.read ..",
            "fs.read",
            json!({ "path": "../../master.key" }),
            master_key.trim().to_owned(),
        ),
        (
            "fs.read symlink to shadow",
            "fs.read",
            json!({ "path": "shadow-link" }),
            shadow_head.clone(),
        ),
        (
            "fs.read through / symlink",
            "fs.read",
            json!({ "path": "root-link/etc/shadow" }),
            shadow_head.clone(),
        ),
        (
            "fs.read through .. symlink",
            "fs.read",
            json!({ "path": format!("up-link{data_text}/master.key") }),
            master_key.trim().to_owned(),
        ),
        (
            "fs.read /proc/self/root link",
            "fs.read",
            json!({ "path": format!("proc-link{bob_ws}/secret.txt") }),
            CANARY_TENANT_B.to_owned(),
        ),
        (
            "fs.read tenant B by path",
            "fs.read",
            json!({ "path": format!("/workspace/../..{bob_ws}/secret.txt") }),
            CANARY_TENANT_B.to_owned(),
        ),
        ("fs.list outside", "fs.list", json!({ "path": "root-link" }), "etc".to_owned()),
        ("fs.search through links", "fs.search", json!({ "text": "root:" }), shadow_head.clone()),
    ] {
        let (_, out) = call(&server, "alice", tool, args).await;
        let leaked = !secret.is_empty() && out.contains(&secret);
        corpus.record(name, !leaked, &out);
    }
    let outside = env.tmp.path().join("fs-pwned");
    for (name, path) in [
        ("fs.write ..", "../../../fs-pwned".to_owned()),
        ("fs.write through symlink", format!("up-link{}", outside.display())),
        ("fs.write absolute", outside.display().to_string()),
        ("fs.write hard link", "hard.txt".to_owned()),
        ("fs.write symlink target", "shadow-link".to_owned()),
    ] {
        let (_, out) =
            call(&server, "alice", "fs.write", json!({ "path": path, "content": "owned" })).await;
        let inside =
            std::fs::read_to_string(Path::new(&alice_ws).join("f.txt")).unwrap_or_default();
        corpus.record(name, !outside.exists() && inside.trim() == "inside", &out);
    }

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
    // The daemonised child of "escape the deadline" would have written this 3 s after its start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    corpus.record(
        "daemonised child outlived its command",
        !Path::new(&alice_ws).join("late").exists(),
        "late",
    );

    // Last, as it empties the agent's own workspace: the host and tenant B stay intact.
    let out = shell(&server, "rm -rf --no-preserve-root / 2>/dev/null; echo done").await;
    let intact = std::fs::read_to_string(&marker).unwrap() == "untouched"
        && data.join("clade.db").exists()
        && Path::new(&bob_ws).join("secret.txt").exists()
        && Path::new("/usr/bin/env").exists();
    corpus.record("rm -rf /", intact, &out);

    // G4: the daemon cannot be dumped.
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

/// Polls `GET /v1/approvals` until one is pending.
async fn pending_approval(server: &Server) -> Value {
    for _ in 0..200 {
        let (_, body) = server.send("GET", "/v1/approvals", None, None).await;
        if let Some(first) = body["items"].as_array().and_then(|a| a.first()) {
            return first.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval became pending");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_waiting_for_approval_survives_a_restart() {
    let env = ask_env(60);
    let server = env.serve(&[]);
    let event = json!({
        "agent": "alice",
        "text": "/tool shell.exec {\"command\": \"echo once >> ran.txt; cat ran.txt\"}",
        "source": { "platform": "http", "channel": "c", "actor": "u" },
    });
    let (status, accepted) = server.send("POST", "/v1/events", None, Some(event)).await;
    assert_eq!(status, 202, "{accepted}");
    let session = accepted["session_id"].as_str().unwrap().to_owned();
    let approval = pending_approval(&server).await;
    assert_eq!(approval["session_id"].as_str(), Some(session.as_str()));
    server.kill9();

    let server = env.serve(&[]);
    let again = pending_approval(&server).await;
    assert_eq!(again["id"], approval["id"], "the resumed turn asked a second time");
    let id = approval["id"].as_str().unwrap();
    let (status, _) = server
        .send("POST", &format!("/v1/approvals/{id}"), None, Some(json!({ "decision": "approve" })))
        .await;
    assert_eq!(status, 200);
    let mut finished = Value::Null;
    for _ in 0..200 {
        let (_, turns) =
            server.send("GET", &format!("/v1/sessions/{session}/turns"), None, None).await;
        if let Some(turn) =
            turns["items"].as_array().and_then(|t| t.first()).filter(|t| t["status"] != "running")
        {
            finished = turn.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(finished["status"], "completed", "{finished}");
    let ws = env.run(&["agents", "workspace", "alice"]).ok().stdout.trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(Path::new(&ws).join("ran.txt"))
            .map_err(|e| format!("{e}: {finished}"))
            .unwrap(),
        "once\n"
    );
    // The approval's lifecycle is in the session's durable event stream (and so reaches
    // webhook subscribers), in order.
    let stream = replay(&server, &session, "turn.finished").await;
    let requested =
        stream.find("event: approval.requested").expect("approval.requested in the stream");
    let decided = stream.find("event: approval.decided").expect("approval.decided in the stream");
    assert!(requested < decided, "{stream}");
}

/// The session's SSE stream from the start, read until `last` appears (or 10 s pass).
async fn replay(server: &Server, session: &str, last: &str) -> String {
    let mut response = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{session}/events?after=0", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains(&format!("event: {last}")) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break,
            Err(_) => {}
        }
    }
    text
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
    std::thread::sleep(Duration::from_millis(1200));
    assert!(read("notes/b.txt").stdout.contains("denied"));
    env.run(&["--agent", "helper", "grants", "add", "--tool", "fs.read", "--expires-in", "soon"])
        .fails_with("--expires-in");
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
    env.run(&["audit", "--verify"]).fails_with("BROKEN at record 3");

    let env = audited(&["one", "two"]);
    tamper(&env, "DELETE FROM audit_log WHERE seq = 2");
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
