//! The command line, good and bad input.

use super::support::{Env, polled_blocking, write};

#[test]
fn agents_lifecycle() {
    let env = Env::new();
    let out = env.run(&["agents", "create", "ada", "--name", "Ada Lovelace"]).ok();
    assert!(out.stdout.starts_with("created agent ada ("), "{}", out.stdout);
    env.run(&["agents", "create", "bob"]).ok();

    let list = env.run(&["agents", "list", "--json"]).ok().json();
    let handles: Vec<_> =
        list.as_array().unwrap().iter().map(|a| a["handle"].as_str().unwrap()).collect();
    assert_eq!(handles, ["ada", "bob"]);
    assert_eq!(list[0]["name"], "Ada Lovelace");
    assert_eq!(list[1]["name"], "bob");

    let human = env.run(&["agents", "list"]).ok().stdout;
    assert!(human.contains("HANDLE") && human.contains("Ada Lovelace"), "{human}");

    // No current agent yet: show without a handle says how to pick one.
    env.run(&["agents", "show"]).fails_with("clade agents switch");
    env.run(&["agents", "switch", "bob"]).ok();
    let shown = env.run(&["agents", "show", "--json"]).ok().json();
    assert_eq!(shown["handle"], "bob");
    // --agent overrides the current agent.
    assert_eq!(
        env.run(&["--agent", "ada", "agents", "show", "--json"]).ok().json()["handle"],
        "ada"
    );

    // The workspace appears only on first use, seeded with persona files.
    let id = shown["id"].as_str().unwrap().to_owned();
    let workspace = env.data_dir().join("agents").join(&id);
    assert!(!workspace.exists());
    let printed = env.run(&["agents", "workspace"]).ok().stdout;
    assert_eq!(printed.trim(), workspace.display().to_string());
    assert!(workspace.join("SOUL.md").is_file());

    env.run(&["agents", "delete", "bob"]).fails_with("--yes");
    assert!(workspace.exists(), "nothing deleted without --yes");
    env.run(&["agents", "delete", "bob", "--yes"]).ok();
    assert!(!workspace.exists());
    env.run(&["agents", "show", "bob"]).fails_with("agent \"bob\" not found");
    env.run(&["agents", "delete", "bob", "--yes"]).fails_with("not found");
}

#[test]
fn bad_handles_and_duplicates_leave_no_state() {
    let env = Env::new();
    for bad in ["Ada", "has space", "", "a/b", &"x".repeat(65)] {
        env.run(&["agents", "create", bad]).fails_with("invalid handle");
    }
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["agents", "create", "ada"]).fails_with("already exists");
    env.run(&["agents", "create", "eve", "--template", "nope"])
        .fails_with("template \"nope\" not found");
    let list = env.run(&["agents", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let agents_dir = env.data_dir().join("agents");
    assert!(!agents_dir.exists() || std::fs::read_dir(&agents_dir).unwrap().count() == 0);
}

#[test]
fn tenants_isolate_agents() {
    let env = Env::new();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["tenants", "create", "acme"]).fails_with("already exists");
    env.run(&["tenants", "create", "Not Valid"]).fails_with("invalid handle");
    env.run(&["--tenant", "acme", "agents", "create", "ada"]).ok();
    env.run(&["agents", "show", "ada"]).fails_with("not found");
    env.run(&["--tenant", "nope", "agents", "list"]).fails_with("tenant \"nope\" not found");
    let tenants = env.run(&["tenants", "list", "--json"]).ok().json();
    let names: Vec<_> =
        tenants.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme", "default"]);
    env.run(&["tenants", "delete", "default", "--yes"]).fails_with("cannot be deleted");
    env.run(&["tenants", "delete", "acme"]).fails_with("--yes");
    env.run(&["tenants", "delete", "acme", "--yes"]).ok();
    env.run(&["--tenant", "acme", "agents", "list"]).fails_with("not found");
}

#[test]
fn tokens_are_shown_once_and_listed_without_values() {
    let env = Env::new();
    let out = env.run(&["tokens", "create", "--name", "deploy"]).ok();
    let secret = out.stdout.trim().to_owned();
    assert!(secret.starts_with("clade_"), "{secret}");
    let list = env.run(&["tokens", "list", "--json"]).ok();
    assert!(!list.stdout.contains(&secret[6..]), "token value leaked into list");
    let id = list.json()[0]["id"].as_str().unwrap().to_owned();
    env.run(&["tokens", "revoke", &id]).ok();
    env.run(&["tokens", "revoke", &id]).fails_with("not found or already revoked");
    env.run(&["tokens", "revoke", "not-an-id"]).fails_with("invalid token id");
    assert!(!env.run(&["tokens", "list", "--json"]).ok().json()[0]["revoked_at"].is_null());
}

#[test]
fn secrets_are_never_printed_and_need_their_key() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["agents", "switch", "ada"]).ok();
    env.run_with_stdin(&["secrets", "set", "OPENAI_API_KEY"], "sk-canary-value\n").ok();
    env.run_with_stdin(&["secrets", "set", "EMPTY"], "").fails_with("empty secret value");
    env.run_with_stdin(&["secrets", "set", "bad/name"], "x").fails_with("invalid secret name");
    let list = env.run(&["secrets", "list"]).ok();
    assert!(list.stdout.contains("OPENAI_API_KEY"), "{}", list.stdout);
    let json = env.run(&["secrets", "list", "--json"]).ok();
    for out in [&list.stdout, &list.stderr, &json.stdout] {
        assert!(!out.contains("sk-canary"), "secret value printed: {out}");
    }
    let key = env.data_dir().join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    // Lose the key: setting and serving refuse, naming the problem and the fix.
    let saved = std::fs::read_to_string(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    env.run_with_stdin(&["secrets", "set", "OTHER"], "v").fails_with("master key missing");
    env.run(&["serve", "--listen", "127.0.0.1:0"]).fails_with("CLADE_MASTER_KEY");
    // The key from the environment works.
    let out = env
        .command()
        .env("CLADE_MASTER_KEY", saved.trim())
        .args(["secrets", "rm", "OPENAI_API_KEY"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.run(&["secrets", "rm", "OPENAI_API_KEY"]).fails_with("not found");
}

#[test]
fn import_moves_an_agent_in() {
    let env = Env::new();
    let src = env.tmp.path().join("my-bot");
    write(&src.join("SOUL.md"), "be kind");
    write(&src.join("IDENTITY.md"), "- **Name:** Molty\n");
    write(&src.join("AGENTS.md"), "rules");
    let out = env.run(&["agents", "import", src.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("imported agent my-bot"), "{}", out.stdout);
    let shown = env.run(&["agents", "show", "my-bot", "--json"]).ok().json();
    assert_eq!(shown["name"], "Molty");
    let ws = env.data_dir().join("agents").join(shown["id"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(ws.join("AGENTS.md")).unwrap(), "rules");
    env.run(&["agents", "import", src.to_str().unwrap()]).fails_with("already exists");
    env.run(&["agents", "import", "/nonexistent/dir"]).fails_with("/nonexistent/dir");
    let odd = env.tmp.path().join("Odd Name");
    write(&odd.join("SOUL.md"), "x");
    env.run(&["agents", "import", odd.to_str().unwrap()]).fails_with("--handle");
    env.run(&["agents", "import", odd.to_str().unwrap(), "--handle", "odd"]).ok();
}

#[test]
fn config_is_validated_with_file_line_and_field() {
    let env = Env::new();
    let file = env.tmp.path().join("clade.yaml");
    write(&file, "server:\n  listen: 127.0.0.1:9999\n");
    let out = env.run(&["config", "validate", file.to_str().unwrap()]).ok();
    assert!(out.stdout.contains(": ok"));
    write(&file, "server:\n  listen: 127.0.0.1:9999\n  colour: blue\n");
    env.run(&["config", "validate", file.to_str().unwrap()])
        .fails_with(&format!("{}:3:", file.display()));
    env.run(&["config", "validate", file.to_str().unwrap()]).fails_with("colour");
    // Every command refuses a broken config rather than ignoring it.
    env.run(&["--config", file.to_str().unwrap(), "agents", "list"]).fails_with("colour");
    env.run(&["--config", "/nonexistent.yaml", "agents", "list"]).fails_with("/nonexistent.yaml");
    // The data dir's own clade.yaml is optional; a file named outright is not, and its
    // failure is said once.
    let fresh = Env::new();
    let out = fresh.run(&["config", "validate"]).ok();
    assert!(out.stdout.contains("defaults apply: ok"), "{}", out.stdout);
    let missing =
        fresh.run(&["config", "validate", "/nonexistent.yaml"]).fails_with("/nonexistent.yaml");
    assert_eq!(missing.stderr.matches("os error 2").count(), 1, "{}", missing.stderr);
    assert_eq!(missing.stderr.matches("error:").count(), 1, "{}", missing.stderr);
    // `config apply` names the file it was given, not the data dir's clade.yaml.
    let out = env.run(&["config", "apply", file.to_str().unwrap()]).fails_with("colour");
    assert!(out.stderr.contains(&file.display().to_string()), "{}", out.stderr);
    let own = env.data_dir().join("clade.yaml");
    assert!(!out.stderr.contains(&own.display().to_string()), "{}", out.stderr);
    let schema = env.run(&["config", "schema"]).ok().json();
    assert_eq!(schema["title"], "clade.yaml");
    assert!(schema["properties"]["server"].is_object());
}

#[test]
fn broken_stores_and_dirs_are_clear_errors() {
    let env = Env::new();
    // A mistyped --data-dir (its folder missing too) is refused, not made into a new store.
    let typo = env.tmp.path().join("no-such-folder/data");
    let typo_arg = typo.to_str().unwrap();
    env.run(&["--data-dir", typo_arg, "agents", "list"]).fails_with("there is no data dir");
    assert!(!typo.parent().unwrap().exists(), "a mistyped data dir was created");
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let db = env.data_dir().join("clade.db");
    let garbage = "definitely not sqlite ".repeat(200);
    std::fs::write(&db, &garbage).unwrap();
    env.run(&["agents", "list"]).fails_with("corrupted");
    assert_eq!(std::fs::read_to_string(&db).unwrap(), garbage, "corrupted file left untouched");

    let file = env.tmp.path().join("plain-file");
    std::fs::write(&file, "").unwrap();
    let out = env
        .command()
        .env("CLADE_DATA_DIR", file.join("sub"))
        .args(["agents", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--data-dir") && stderr.lines().count() == 1, "{stderr}");

    let other = Env::new();
    other
        .run(&["--store", "postgres://nobody@127.0.0.1:1/x", "agents", "list"])
        .fails_with("cannot reach the database");
    other.run(&["--store", "mysql://h/db", "agents", "list"]).fails_with("unsupported store URL");
}

#[test]
fn usage_errors_exit_non_zero() {
    let env = Env::new();
    let out = env.run(&["agents", "frobnicate"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("frobnicate"));
}

#[tokio::test]
async fn postgres_store_via_flag_and_env() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let env = Env::new();
    env.run(&["--store", schema.url(), "agents", "create", "pg-agent"]).ok();
    // A second data dir pointing at the same database sees the same agents.
    let other = Env::new();
    let out = other
        .command()
        .env("CLADE_STORE", schema.url())
        .args(["agents", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["handle"], "pg-agent");
    // The SQLite file of the data dir was never created.
    assert!(!env.data_dir().join("clade.db").is_file());
}

/// `clade agents list | head -1`: the reader goes away early, and clade stops quietly instead
/// of panicking on the next line it prints.
#[test]
fn a_closed_stdout_stops_the_command_quietly() {
    let env = Env::new();
    for n in 0..20 {
        env.run(&["agents", "create", &format!("quiet-{n}")]).ok();
    }
    let mut child = env
        .command()
        .args(["agents", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before clade has started printing.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(matches!(out.status.code(), Some(0 | 141)), "{:?}: {stderr}", out.status);
}

/// Whether process `pid` has gone (or is only a zombie waiting to be reaped), polling up to 10 s.
fn process_ends(pid: u32) -> bool {
    let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    };
    let every = std::time::Duration::from_millis(100);
    polled_blocking(std::time::Duration::from_secs(10), every, gone, |gone| *gone)
}

#[test]
fn bench_turns_runs_the_stub_in_a_process_of_its_own() {
    let env = Env::new();
    let out = env
        .run(&["bench", "turns", "--turns", "30", "--sessions", "1,3", "--durability", "normal"])
        .ok();
    let pid: u32 = out
        .stdout
        .split("(process ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no stub process named in {}", out.stdout));
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("normal "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    for (row, sessions) in rows.iter().zip(["1", "3"]) {
        assert_eq!(row[1], sessions, "{row:?}");
        assert!(row[2].parse::<f64>().unwrap() > 0.0, "no turns/s: {row:?}");
        // CPU per turn: Clade's own, then the stub's, measured apart.
        let (clade, stub) = row[3].split_once('+').unwrap_or_else(|| panic!("{row:?}"));
        assert!(clade.parse::<f64>().unwrap() > 0.0, "{row:?}");
        stub.parse::<f64>().unwrap();
        // RSS per session while active, then once idle; every actor left memory.
        let rss = row[row.len() - 3];
        assert!(rss.split('→').all(|kib| kib.parse::<f64>().is_ok()), "{row:?}");
        assert!(row[row.len() - 2].ends_with("→0"), "actors stayed in memory: {row:?}");
    }
    assert!(process_ends(pid), "the stub (process {pid}) outlived the bench");
    // By default the stub is reached over HTTP/2 (as OpenAI and Anthropic are), on request
    // over HTTP/1.1.
    assert!(out.stdout.contains("over HTTP/2"), "{}", out.stdout);
    let http1 = env
        .run(&[
            "bench",
            "turns",
            "--turns",
            "10",
            "--sessions",
            "2",
            "--durability",
            "normal",
            "--model",
            "stub-http1",
        ])
        .ok();
    assert!(http1.stdout.contains("over HTTP/1.1"), "{}", http1.stdout);
    assert_eq!(http1.stdout.lines().filter(|l| l.starts_with("normal ")).count(), 1);

    env.run(&["bench", "turns", "--turns", "0"]).fails_with("at least 1");
    env.run(&["bench", "turns", "--durability", "sometimes"]).fails_with("unknown durability");
}

/// A bench table's rows (the lines that start with a number), as their words without the
/// column bars.
fn table_rows(stdout: &str) -> Vec<Vec<&str>> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().filter(|w| *w != "|").collect())
        .collect()
}

/// The OpenAI bench runs each row in process and through a gateway of its own, and leaves
/// neither that gateway nor its data dir behind.
#[test]
fn bench_openai_compares_the_engine_with_its_http_api() {
    let env = Env::new();
    let out = env
        .run(&["bench", "openai", "--turns", "20", "--sessions", "1,2", "--durability", "normal"])
        .ok();
    let rows = table_rows(&out.stdout);
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    for (row, sessions) in rows.iter().zip(["1", "2"]) {
        assert_eq!(row[0], sessions, "{row:?}");
        // turns/s, p50, p99 and CPU, in process and over HTTP: all measured.
        for value in &row[1..9] {
            assert!(value.parse::<f64>().unwrap() > 0.0, "{row:?}");
        }
        assert!(row[9].contains('/'), "{row:?}");
        assert!(row[10].parse::<f64>().unwrap() > 0.0, "{row:?}");
    }
    let scratch = env.data_dir().join("bench-openai");
    let left = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "rows' data dirs were left in {}", scratch.display());

    env.run(&["bench", "openai", "--turns", "0"]).fails_with("at least 1");
    env.run(&["bench", "openai", "--rate=-1"]).fails_with("positive number");
    env.run(&["bench", "openai", "--durability", "often"]).fails_with("unknown durability");
}

/// The gateway bench runs a default agent's turns through a gateway of its own, reports its
/// idle RSS and both rows with every figure measured, and leaves no data dir behind.
#[test]
fn bench_gateway_measures_a_default_agent_through_http() {
    let env = Env::new();
    let out = env
        .run(&[
            "bench",
            "gateway",
            "--sessions",
            "3",
            "--turns",
            "2",
            "--sequential",
            "10",
            "--settle",
            "0s",
        ])
        .ok();
    let mib = |prefix: &str| -> f64 {
        let line = out.stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_default();
        line.trim_start_matches(prefix)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(0.0)
    };
    assert!(mib("idle RSS:") > 1.0, "{}", out.stdout);
    assert!(mib("RSS after the rows:") > 1.0, "{}", out.stdout);
    let rows = table_rows(&out.stdout);
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    for (row, shape) in rows.iter().zip(["3×2", "1×10"]) {
        assert_eq!(row[0], shape, "{row:?}");
        // turns/s, p50, p99 and the gateway's CPU: all measured (the stub's may round to 0).
        for value in &row[1..5] {
            assert!(value.parse::<f64>().unwrap() > 0.0, "{row:?}");
        }
        assert!(row[5].parse::<f64>().unwrap() >= 0.0, "{row:?}");
    }
    let scratch = env.data_dir().join("bench-gateway");
    assert!(std::fs::metadata(&scratch).is_err(), "the bench left {}", scratch.display());

    env.run(&["bench", "gateway", "--sequential", "0"]).fails_with("at least 1");
    let refused = env.run(&["bench", "gateway", "--settle", "soon"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("is not a duration"), "{}", refused.stderr);
}

/// The noisy-neighbour benchmark runs a gateway of its own: the noisy tenant is limited at ten
/// times its quota and not at it, the quiet tenants are never refused, and the scratch data
/// dir is gone afterwards.
#[test]
fn bench_neighbours_limits_only_the_noisy_tenant() {
    let env = Env::new();
    let out =
        env.run(&["bench", "neighbours", "--seconds", "1", "--rounds", "1", "--quota", "10"]).ok();
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("1 "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    let (at_quota, flooding) = (&rows[0], &rows[1]);
    assert_eq!((at_quota[1], flooding[1]), ("1x", "10x"), "{}", out.stdout);
    let limited = |row: &Vec<&str>| row[3].parse::<u64>().unwrap();
    assert!(limited(at_quota) <= 1, "limited at its quota: {}", out.stdout);
    assert!(limited(flooding) >= 50, "not limited at 10x its quota: {}", out.stdout);
    assert!(rows.iter().all(|r| r[6] == "0"), "quiet tenants refused: {}", out.stdout);
    assert!(out.stdout.contains("(goal: at most 1.10x)"), "{}", out.stdout);
    let left: Vec<_> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("bench-neighbours"))
        .collect();
    assert!(left.is_empty(), "the scratch data dir was left behind");
    env.run(&["bench", "neighbours", "--rounds", "0"]).fails_with("must be above 0");
}

/// The siege benchmark holds every slot with strangers trickling a hook's body, and the tenant's
/// client, asking on new connections all the while, loses no request; the strangers were really
/// there (they held places and the gateway cut them off), and the scratch data dir is gone.
#[test]
fn bench_siege_keeps_the_tenants_requests_answered() {
    let env = Env::new();
    let out = env
        .run(&[
            "bench",
            "siege",
            "--strangers",
            "60",
            "--max-connections",
            "40",
            "--rate",
            "20",
            "--seconds",
            "2",
            "--trickle",
            "500ms",
        ])
        .ok();
    let row = |phase: &str| -> Vec<String> {
        let line = out.stdout.lines().find(|l| l.trim_start().starts_with(phase));
        let line = line.unwrap_or_else(|| panic!("no {phase} row: {}", out.stdout));
        line.split_whitespace().filter(|w| *w != "|").map(str::to_owned).collect()
    };
    // phase, asked, p50, p99, max, failed, held, dropped, CPU, RSS
    let (calm, siege) = (row("calm"), row("siege"));
    assert_eq!((calm[1].as_str(), calm[5].as_str()), ("40", "0"), "{}", out.stdout);
    assert_eq!((siege[1].as_str(), siege[5].as_str()), ("40", "0"), "{}", out.stdout);
    let number = |word: &str| word.parse::<u64>().unwrap();
    assert!(number(&siege[6]) >= 30, "the strangers held few places: {}", out.stdout);
    assert!(number(&siege[7]) >= 20, "the gateway cut no stranger off: {}", out.stdout);
    assert!(out.stdout.contains("(goal: under 100 ms, none failed)"), "{}", out.stdout);
    let left: Vec<_> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("bench-siege"))
        .collect();
    assert!(left.is_empty(), "the scratch data dir was left behind");
    env.run(&["bench", "siege", "--strangers", "0"]).fails_with("must each be above 0");
}

/// The scheduler benchmark fires jobs on the system clock and reports their lateness, CPU and
/// RSS; its scratch store is gone afterwards.
#[test]
fn bench_sched_runs_and_fires_jobs() {
    let env = Env::new();
    let out =
        env.run(&["bench", "sched", "--jobs", "300", "--seconds", "3", "--spread", "59"]).ok();
    let fires = out
        .stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("fires:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no fires line: {}", out.stdout));
    assert!(fires > 0, "no job fired: {}", out.stdout);
    assert!(out.stdout.contains("lateness:  p50"), "{}", out.stdout);
    let left =
        std::fs::read_dir(env.data_dir().join("bench-sched")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the scratch store was left behind");
    env.run(&["bench", "sched", "--spread", "60"]).fails_with("--spread between 1 and 59");
    env.run(&["bench", "sched", "--every", "31"]).fails_with("--every must be between 1 and 30");
}

/// The local model's benchmark answers several prompts at once on a tiny model and reports
/// each answer's speed and all of them together; zero of anything is refused.
#[test]
fn bench_local_answers_at_once_and_reports_both_speeds() {
    let env = Env::new();
    let file = env.tmp.path().join("tiny.gguf");
    clade_model::local_chat::write_test_model(&file).unwrap();
    let model = file.to_str().unwrap();
    let out = env
        .run(&[
            "bench",
            "local",
            "--model-file",
            model,
            "--answers",
            "4",
            "--tokens",
            "8",
            "--concurrency",
            "2",
        ])
        .ok();
    assert!(
        out.stdout.contains("tokens/s in all (4 answers of up to 8 tokens, 2 at once)"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("4/4 answers"), "{}", out.stderr);
    // The old spellings still work.
    env.run(&["bench", "local", "--model", model, "--concurrent", "0"]).fails_with("--concurrency");
}

/// The memory benchmark fills an agent's memory, saves through the service and times recalls
/// of both kinds, each finding items; bad sizes are refused.
#[test]
fn bench_memory_fills_saves_and_recalls() {
    let env = Env::new();
    let out =
        env.run(&["bench", "memory", "--items", "300", "--queries", "20", "--saves", "20"]).ok();
    for line in ["fill:", "ingest:", "recall hybrid", "recall full text", "disk:"] {
        assert!(out.stdout.contains(line), "no {line:?} line: {}", out.stdout);
    }
    assert!(out.stdout.contains("10.0 items each"), "recalls found too little: {}", out.stdout);
    env.run(&["bench", "memory", "--items", "0"]).fails_with("at least 1");
}

/// `clade bench agents --messages` asks through the durable path and reports the round trip;
/// every ask is answered, and idle sessions leave memory.
#[test]
fn bench_agents_messages_asks_and_answers() {
    let env = Env::new();
    let out =
        env.run(&["bench", "agents", "--messages", "200", "--pairs", "10", "--rate", "400"]).ok();
    assert!(out.stdout.contains("answered 200 ("), "{}", out.stdout);
    assert!(out.stdout.contains("failed or late 0"), "{}", out.stdout);
    assert!(out.stdout.contains("round trip: p50"), "{}", out.stdout);
    assert!(out.stdout.contains("0 sessions in memory after 1 s idle"), "{}", out.stdout);
    env.run(&["bench", "agents", "--messages", "0"]).fails_with("above 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stub_command_speaks_openai_and_leaves_when_its_parent_does() {
    use std::io::BufRead as _;
    let env = Env::new();
    let mut child = env
        .command()
        .args(["stub", "--listen", "127.0.0.1:0", "--exit-with-stdin", "--defaults", "fixed=pong"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&serde_json::json!({ "model": "gpt", "messages": [{ "role": "user", "content": "ping" }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "pong", "{reply}");
    drop(child.stdin.take());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");

    env.run(&["stub", "--defaults", "nonsense=1"]).fails_with("unknown directive");
    env.run(&["stub", "--listen", "not an address"]).fails_with("cannot listen on");
}

/// Every command's help, found by walking the `Commands:` lists from the top: one snapshot, so
/// a flag added, renamed or reworded shows in review. Hidden commands stay out of it.
#[test]
fn every_commands_help_is_as_reviewed() {
    let env = Env::new();
    let mut text = String::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = env.run(&args).ok().stdout;
        // A command's own options come first; the ones every command takes under a heading
        // of their own; every flag says what it is.
        let own = help.split("Global options:").next().unwrap_or_default();
        assert!(!own.contains("--data-dir"), "global options mixed in:\n{help}");
        let lines: Vec<&str> = help.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let flag = line.trim_start();
            // Arguments are listed two spaces in; deeper lines are an option's text.
            let positional =
                (flag.starts_with('<') || flag.starts_with('[')) && line.len() - flag.len() == 2;
            let named =
                flag.starts_with("--") || flag.starts_with('-') && flag.get(2..4) == Some(", ");
            if !(positional || named) {
                continue;
            }
            // Described on its line (not only by its default), or (long help) on the next,
            // indented further.
            let beside = flag
                .split("  ")
                .skip(1)
                .any(|part| !part.trim().is_empty() && !part.trim().starts_with('['));
            let indent = line.len() - flag.len();
            let below = lines.get(at + 1).is_some_and(|next| {
                let text = next.trim_start();
                !text.is_empty()
                    && !text.starts_with('-')
                    && !text.starts_with('<')
                    && next.len() - text.len() > indent
            });
            assert!(
                beside || below || flag.starts_with("-h") || flag.starts_with("-V"),
                "an undescribed flag in `clade {}`: {line}",
                args.join(" ")
            );
        }
        text.push_str(&format!("$ clade {}\n{help}\n", args.join(" ")));
        let listed = help.split("Commands:\n").nth(1).unwrap_or_default();
        let mut children: Vec<Vec<String>> = listed
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| *name != "help")
            .map(|name| path.iter().cloned().chain([name.to_owned()]).collect())
            .collect();
        // Depth first, in the order the help lists them.
        children.reverse();
        pending.extend(children);
    }
    assert!(text.matches("$ clade ").count() > 40, "the walk found too few commands:\n{text}");
    insta::with_settings!({ filters => vec![(r"/tmp/[^\] ]+", "[tmp]")] }, {
        insta::assert_snapshot!("help", text);
    });
}

/// The tables people read, with ids and times masked.
#[test]
fn listings_are_as_reviewed() {
    let env = Env::new();
    env.run(&["agents", "create", "ada", "--name", "Ada Lovelace"]).ok();
    env.run(&["agents", "create", "bob"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["tokens", "create", "--name", "deploy", "--scope", "operate"]).ok();
    let mut text = String::new();
    for args in [
        &["agents", "list"][..],
        &["tenants", "list"],
        &["tokens", "list"],
        &["--agent", "ada", "tools", "list"],
        &["grants", "list"],
        &["sessions", "list"],
    ] {
        let out = env.run(args).ok();
        text.push_str(&format!("$ clade {}\n{}\n", args.join(" "), out.stdout));
    }
    let filters = vec![
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[id]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
    ];
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("listings", text);
    });
}

/// The tiny test model as the local model, both in `--embeddings local` runs; `--eval` on our
/// evaluation set reports recall@5 and @10 for each search; a set naming unknown evidence is
/// refused. With the real all-MiniLM-L6-v2 (`CLADE_TEST_MINILM`), hybrid search beats full text
/// and vectors alone on the set, as the issue asks.
#[test]
fn bench_memory_runs_on_the_local_model_and_evaluates_recall() {
    let env = Env::new();
    let tiny = env.data_dir().join("tiny");
    clade_model::local_embeddings::write_test_model(&tiny, 16).unwrap();
    env.run(&["models", "fetch", "--from", tiny.to_str().unwrap()]).ok();
    let out = env
        .run(&[
            "bench",
            "memory",
            "--embeddings",
            "local",
            "--items",
            "200",
            "--queries",
            "5",
            "--saves",
            "10",
        ])
        .ok();
    assert!(out.stdout.contains("local:all-minilm-l6-v2:16 in process"), "{}", out.stdout);
    assert!(out.stdout.contains("ingest:"), "{}", out.stdout);
    let set =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/perf/memory-eval.json");
    let set = set.to_str().unwrap();
    let recall = |stdout: &str, mode: &str| -> (f64, f64) {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(mode))
            .unwrap_or_else(|| panic!("no {mode} line: {stdout}"));
        let number = |after: &str| -> f64 {
            line.split(after)
                .nth(1)
                .unwrap()
                .split(|c: char| c == ',' || c.is_whitespace())
                .find(|w| !w.is_empty())
                .unwrap()
                .parse()
                .unwrap()
        };
        (number("recall@5 "), number("recall@10 "))
    };
    let out = env
        .run(&["bench", "memory", "--embeddings", "local", "--eval", set, "--distractors", "100"])
        .ok()
        .stdout;
    assert!(out.contains("62 questions over 83 items and 100 generated notes"), "{out}");
    for mode in ["full text", "vectors", "hybrid"] {
        let (at5, at10) = recall(&out, mode);
        assert!((0.0..=1.0).contains(&at5) && at5 <= at10, "{mode}: {out}");
    }
    let bad = env.data_dir().join("bad.json");
    std::fs::write(&bad, r#"{"conversations":[{"turns":[{"id":"a","text":"x"}]}],"questions":[{"question":"q","evidence":["zz"]}]}"#).unwrap();
    env.run(&["bench", "memory", "--eval", bad.to_str().unwrap()])
        .fails_with("names evidence \"zz\"");

    let Some(real) = super::support::minilm("the real-model evaluation") else { return };
    env.run(&["models", "fetch", "--from", &real]).ok();
    let out = env
        .run(&["bench", "memory", "--embeddings", "local", "--eval", set, "--distractors", "500"])
        .ok()
        .stdout;
    let (text, vectors, hybrid) =
        (recall(&out, "full text"), recall(&out, "vectors"), recall(&out, "hybrid"));
    assert!(
        hybrid.0 > text.0 && hybrid.0 > vectors.0,
        "recall@5 of hybrid beats neither alone: {out}"
    );
    assert!(hybrid.1 >= text.1 && hybrid.1 >= vectors.1, "recall@10: {out}");
}

/// `clade doctor` on a fresh data dir: each check on a line, what is not made yet said as a
/// warning with what makes it; a broken config fails it (exit 1) with the field named, and the
/// checks after it are not run on a config it could not read.
#[test]
fn doctor_checks_a_first_start_and_says_what_to_do() {
    let env = Env::new();
    write(&env.data_dir().join("clade.yaml"), "server:\n  listen: 127.0.0.1:0\n");
    let out = env.run(&["doctor"]);
    let stdout = out.stdout.clone();
    assert_eq!(out.code, 0, "{stdout}{}", out.stderr);
    for line in ["data dir", "config", "store", "token", "models", "port", "sandbox"] {
        assert!(stdout.lines().any(|l| l.contains(line)), "no {line} check: {stdout}");
    }
    assert!(stdout.contains("`clade serve` makes it"), "{stdout}");
    assert!(stdout.contains("`clade models fetch local`"), "{stdout}");
    assert!(stdout.contains("bubblewrap runs commands"), "{stdout}");
    write(&env.data_dir().join("clade.yaml"), "server:\n  listn: 127.0.0.1:0\n");
    let out = env.run(&["doctor"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("FAIL") && out.stdout.contains("listn"), "{}", out.stdout);
    assert!(!out.stdout.contains("port"), "{}", out.stdout);
    assert!(env.run(&["version"]).ok().stdout.starts_with("clade "));
}

/// `clade completions bash` prints a script bash itself loads, which completes clade's
/// commands and their flags; an unknown shell is refused naming the ones there are.
#[test]
fn shell_completions_load_in_bash_and_complete_commands() {
    let env = Env::new();
    let script = env.run(&["completions", "bash"]).ok().stdout;
    let file = env.tmp.path().join("clade.bash");
    std::fs::write(&file, &script).unwrap();
    // Bash completes `clade ag` and `clade agents prompt --b` with the script's function.
    let probe = format!(
        "source {}; for line in 'clade ag' 'clade agents prompt --b'; do \
         COMP_WORDS=($line); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"$line\"; \
         COMP_POINT=${{#COMP_LINE}}; _clade clade \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
         echo \"${{COMPREPLY[*]}}\"; done",
        file.display()
    );
    let out = std::process::Command::new("bash").args(["-c", &probe]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "{said}");
    assert!(lines[0].split_whitespace().any(|w| w == "agents"), "{said}");
    assert!(lines[1].split_whitespace().any(|w| w == "--body"), "{said}");
    let refused = env.run(&["completions", "tcsh"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("bash") && refused.stderr.contains("zsh"),
        "{}",
        refused.stderr
    );
}

/// `tokens create --expires-in` takes a duration as people write one, and the list says until
/// when the token works; a duration that is not one is refused naming the flag.
#[test]
fn tokens_can_be_made_to_expire() {
    let env = Env::new();
    env.run(&["tokens", "create", "--name", "day", "--expires-in", "8h"]).ok();
    let listed = env.run(&["tokens", "list"]).ok().stdout;
    assert!(listed.lines().any(|l| l.contains("day") && l.contains("active until")), "{listed}");
    let json = env.run(&["tokens", "list", "--json"]).ok().json();
    let day = json.as_array().unwrap().iter().find(|t| t["name"] == "day").unwrap().clone();
    assert!(day["expires_at"].as_i64().unwrap() > day["created_at"].as_i64().unwrap(), "{day}");
    let refused = env.run(&["tokens", "create", "--expires-in", "soon"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("--expires-in"), "{}", refused.stderr);
    // Tokens made for another tenant are pointed at from the default tenant's list.
    assert!(!listed.contains("acme"), "{listed}");
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "tokens", "create", "--name", "ci"]).ok();
    let listed = env.run(&["tokens", "list"]).ok();
    assert!(
        listed.stderr.contains("acme (1)") && listed.stderr.contains("--tenant"),
        "{}",
        listed.stderr
    );
    let theirs = env.run(&["--tenant", "acme", "tokens", "list"]).ok();
    assert!(theirs.stdout.contains("ci") && theirs.stderr.is_empty(), "{}", theirs.stderr);
}
