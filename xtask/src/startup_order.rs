//! `cargo xtask startup-order [BINARY]`: which functions `clade serve` runs from its start
//! until it idles, written as the linker's symbol ordering file
//! (`crates/clade-cli/startup-order.txt`, read by `crates/clade-cli/build.rs`).
//!
//! Why: the kernel maps a binary's code 64 KB around each page a process touches. Started,
//! the gateway runs about 6,000 functions (3 MB of code) spread over all of `.text`, so it
//! mapped 21 MiB of it; laid out together, they fit in a few hundred KB of windows. Symbol
//! names carry hashes that change with dependency versions, so regenerate the file after an
//! upgrade, or when `clade bench gateway`'s idle RSS grows (`docs/perf/build.md`). Names the
//! binary no longer has are skipped by the linker; nothing breaks, the figure only drifts.
//!
//! It runs the release binary under valgrind's callgrind on a fresh data dir, waits for
//! `/healthz`, lets it idle, stops it with SIGTERM and reads the functions callgrind saw.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

const OUTPUT: &str = "crates/clade-cli/startup-order.txt";
/// Under callgrind the gateway starts about fifty times slower than natively.
const START_PATIENCE: Duration = Duration::from_secs(300);
/// How long it idles once up: the keepers' and sweepers' first ticks run in this span.
const IDLE: Duration = Duration::from_secs(3);

pub fn run(binary: Option<String>) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = match binary {
        Some(path) => PathBuf::from(path),
        None => root.join("target/release/clade"),
    };
    ensure!(
        binary.is_file(),
        "{} does not exist: build it first with `cargo build --release --bin clade`, or name a \
         binary: `cargo xtask startup-order path/to/clade`",
        binary.display()
    );
    let binary = binary.canonicalize()?;
    ensure!(
        Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success()),
        "valgrind is not installed: `apt-get install -y valgrind`"
    );
    let work = std::env::temp_dir().join(format!("clade-startup-order-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let profile = work.join("callgrind.out");
    let result = profile_start(&binary, &work, &profile).and_then(|()| {
        let names = executed_functions(&profile, &binary)?;
        write_order(&root.join(OUTPUT), &names)?;
        eprintln!("wrote {} functions to {OUTPUT}", names.len());
        Ok(())
    });
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("the run's files are kept in {}", work.display());
    }
    result
}

/// Starts `clade serve` under callgrind, waits until it answers and idles, then stops it.
fn profile_start(binary: &Path, work: &Path, profile: &Path) -> anyhow::Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(work.join("serve.log"))?;
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .args(["--demangle=no", "--compress-strings=no", "--compress-pos=no"])
        .arg(binary)
        .arg("--data-dir")
        .arg(work.join("data"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        // No operator's config or model files from the caller's home.
        .env("HOME", work)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting valgrind")?;
    eprintln!("starting `clade serve` under callgrind (a minute or two)…");
    let started = Instant::now();
    while !healthy(port) {
        if let Some(status) = child.try_wait()? {
            bail!("`clade serve` exited ({status}) before it answered; see serve.log");
        }
        if started.elapsed() > START_PATIENCE {
            let _ = child.kill();
            bail!("`clade serve` did not answer /healthz within {START_PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("up after {:.0?}; idling {IDLE:?}, then stopping it", started.elapsed());
    std::thread::sleep(IDLE);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    ensure!(status.success(), "could not signal the server");
    let status = child.wait()?;
    ensure!(profile.is_file(), "callgrind wrote no profile ({status}); see serve.log");
    Ok(())
}

fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// The functions of `binary` that ran, in the order callgrind first names them, but for
/// addresses without a symbol. Names with LLVM's `.llvm.<hash>` suffix (local functions thin LTO
/// made visible across modules) are kept: the hash is the module's, so most survive a build that
/// changes other crates, and they are a sixth of what runs.
fn executed_functions(profile: &Path, binary: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(profile)?;
    let ours = binary.to_string_lossy();
    let (mut in_binary, mut seen, mut names) = (false, HashSet::new(), Vec::new());
    for line in text.lines() {
        if let Some(object) = line.strip_prefix("ob=") {
            in_binary = strip_id(object) == ours;
        } else if let Some(function) = line.strip_prefix("fn=")
            && in_binary
        {
            let name = strip_id(function);
            let per_build = name.starts_with("0x") || name.contains(' ');
            if !per_build && seen.insert(name.to_owned()) {
                names.push(name.to_owned());
            }
        }
    }
    ensure!(!names.is_empty(), "the profile names no function of {ours}");
    Ok(names)
}

/// `(12) name` → `name`: callgrind may prefix a name with its number.
fn strip_id(field: &str) -> &str {
    let field = field.trim();
    match field.strip_prefix('(').and_then(|rest| rest.split_once(") ")) {
        Some((id, name)) if id.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => field,
    }
}

fn write_order(path: &Path, names: &[String]) -> anyhow::Result<()> {
    let mut out = String::from(
        "# The functions `clade serve` runs from start to idle, laid out together by the linker\n\
         # (`--symbol-ordering-file`, crates/clade-cli/build.rs) so that starting maps a few\n\
         # hundred KB of code instead of most of it. Generated by `cargo xtask startup-order`;\n\
         # regenerate after dependency upgrades (names carry hashes).\n",
    );
    for name in names {
        out.push_str(name);
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile as callgrind writes it with uncompressed names: functions count only while
    /// the object is the binary's, each once, and addresses without a name are dropped.
    #[test]
    fn only_the_binarys_named_functions_are_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("callgrind.out");
        std::fs::write(
            &profile,
            "version: 1\ncmd: clade serve\nob=/opt/clade\nfn=_ZN5clade4main17h0123456789abcdefE\n\
             calls=1 0\nob=/usr/lib/libc.so.6\nfn=malloc\nob=(3) /opt/clade\n\
             fn=(7) sqlite3_open_v2\nfn=0x0000000000bcb370\n\
             fn=_ZN5clade4main17h0123456789abcdefE\nfn=anon.1f.3.llvm.42\n",
        )
        .unwrap();
        let names = executed_functions(&profile, Path::new("/opt/clade")).unwrap();
        assert_eq!(
            names,
            ["_ZN5clade4main17h0123456789abcdefE", "sqlite3_open_v2", "anon.1f.3.llvm.42"]
        );
        let err = executed_functions(&profile, Path::new("/opt/other")).unwrap_err();
        assert!(err.to_string().contains("names no function of /opt/other"), "{err}");
    }

    #[test]
    fn callgrind_ids_are_not_part_of_a_name() {
        assert_eq!(strip_id("(12) mi_malloc"), "mi_malloc");
        assert_eq!(strip_id("mi_malloc"), "mi_malloc");
        assert_eq!(strip_id("(below main)"), "(below main)");
    }
}
