//! Whole agents moved between data dirs and backends (`clade agents export|import`): an agent
//! killed mid-turn on SQLite is exported, imported into PostgreSQL, and its turn resumes there
//! exactly once; its workspace, memory, jobs, grants and secrets (re-encrypted) come along,
//! and a second export reads back the same rows. A cut, altered or forged archive, a wrong
//! key and a second import are refused without writing anything.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::support::{Env, Server};

const WRITE_LATE: &str =
    r#"/tool fs.write {"path":"notes/late.md","content":"written after the move"}"#;
const DESK: &str = r#"{ "platform": "http", "channel": "desk", "actor": "pat" }"#;

async fn say(server: &Server, text: &str, wait: bool) -> Value {
    let source: Value = serde_json::from_str(DESK).unwrap();
    let body = json!({ "agent": "ada", "text": text, "wait": wait, "source": source });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert!(status == 200 || status == 202, "{status} {answer}");
    answer
}

/// The archive's lines, parsed.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes `lines` as an archive whose end line counts and hashes them as an exporter would.
fn rewrite(path: &Path, lines: &[Value]) {
    let mut text = String::new();
    let mut digest = sha2::Sha256::new();
    for line in lines {
        let mut line = line.clone();
        if line["type"] == "end" {
            line["sha256"] = json!(hex::encode(digest.clone().finalize()));
        }
        let encoded = format!("{}\n", serde_json::to_string(&line).unwrap());
        digest.update(encoded.as_bytes());
        text.push_str(&encoded);
    }
    std::fs::write(path, text).unwrap();
}

/// Every row of an archive as `table: values`, with the tenant ids (which an import replaces)
/// blanked.
fn rows_of(lines: &[Value]) -> Vec<(String, Vec<Value>)> {
    let header = &lines[0];
    let mut rows: Vec<(String, Vec<Value>)> = lines
        .iter()
        .filter(|l| l["type"] == "row")
        .map(|l| {
            let table = l["table"].as_str().unwrap().to_owned();
            let columns = header["tables"][&table].as_array().unwrap();
            let values = l["values"]
                .as_array()
                .unwrap()
                .iter()
                .zip(columns)
                .map(|(v, c)| if c == "tenant_id" { Value::Null } else { v.clone() })
                .collect();
            (table, values)
        })
        .collect();
    rows.sort_by_key(|(t, v)| format!("{t}{v:?}"));
    rows
}

/// The key the export says it was signed with, which another data dir trusts with `--trust-key`.
fn signer_of(stderr: &str) -> String {
    let at = stderr.find("--trust-key ").expect("the export prints its signing key");
    stderr[at + "--trust-key ".len()..].split_whitespace().next().unwrap().to_owned()
}

/// The export's printed key.
fn key_of(stderr: &str) -> String {
    let at = stderr.find("CLADE_ARCHIVE_KEY=").expect("the export prints the secrets key");
    stderr[at + "CLADE_ARCHIVE_KEY=".len()..].split_whitespace().next().unwrap().to_owned()
}

/// A secret of an archive, opened with its key as the format says (AES-256-GCM, bound to
/// the secret's name).
fn open_secret(lines: &[Value], key: &str, name: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let line = lines.iter().find(|l| l["type"] == "secret" && l["name"] == name).unwrap();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&hex::decode(key).unwrap()).unwrap();
    let nonce = b64.decode(line["nonce"].as_str().unwrap()).unwrap();
    let sealed = b64.decode(line["ciphertext"].as_str().unwrap()).unwrap();
    let aad = format!("clade.agent archive secret/{name}");
    let plain = cipher
        .decrypt(
            &aes_gcm::Nonce::from(<[u8; 12]>::try_from(nonce.as_slice()).unwrap()),
            Payload { msg: &sealed, aad: aad.as_bytes() },
        )
        .expect("the printed key opens the secret");
    String::from_utf8(plain).unwrap()
}

/// An agent with a workspace file, a secret, a memory item and a job, whose second turn died
/// (a failpoint) once it had journaled that it will call a tool: its data dir and session.
async fn killed_mid_turn() -> (Env, String) {
    let source = Env::new();
    source.run(&["agents", "create", "ada", "--template", "researcher"]).ok();
    let workspace = source.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    std::fs::create_dir_all(Path::new(&workspace).join("notes")).unwrap();
    std::fs::write(Path::new(&workspace).join("notes/plan.md"), "ship on Friday\n").unwrap();
    source.run_with_stdin(&["--agent", "ada", "secrets", "set", "API_TOKEN"], "s3cret-value").ok();
    source
        .run(&[
            "--agent",
            "ada",
            "memory",
            "add",
            "Pat's project is called Heron",
            "--kind",
            "fact",
        ])
        .ok();
    source
        .run(&[
            "--agent",
            "ada",
            "cron",
            "create",
            "standup",
            "0 9 * * MON-FRI",
            "/reply standup time",
        ])
        .ok();

    let server = source.serve(&[]);
    let first = say(&server, "/reply first answer", true).await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(first["reply"]["text"], "first answer", "{first}");
    drop(server);
    // The next turn dies once it has journaled that it will call a tool.
    let mut server = source.serve_with(&[], &[("CLADE_FAILPOINTS", "after_journal_intent=1")]);
    say(&server, WRITE_LATE, false).await;
    assert!(server.exits_within(std::time::Duration::from_secs(20)), "the failpoint never fired");
    server.kill9();

    (source, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_turn_moves_to_postgres_and_its_turn_ends_there_once() {
    if !clade_runtime::failpoints::ENABLED {
        assert!(std::env::var("CI").is_err(), "CI builds the suite with failpoints");
        return;
    }
    let (source, session) = killed_mid_turn().await;

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ada.agent");
    let exported = source.run(&["agents", "export", "ada", "-o", archive.to_str().unwrap()]).ok();
    let key = key_of(&exported.stderr);
    let signer = signer_of(&exported.stderr);
    let first_lines = lines(&archive);
    assert_eq!(first_lines[0]["format"], "clade.agent");
    assert_eq!(open_secret(&first_lines, &key, "API_TOKEN"), "s3cret-value");
    assert!(
        !std::fs::read_to_string(&archive).unwrap().contains("s3cret-value"),
        "a secret in clear"
    );

    // Into PostgreSQL, when it is here (always under CI), else another SQLite data dir.
    let schema = clade_test_support::PgSchema::create().await;
    let mut target = Env::new();
    if let Some(schema) = &schema {
        target.vars.push(("CLADE_STORE".into(), schema.url().to_owned()));
    }
    target.run(&["agents", "create", "bo"]).ok();
    let path = archive.to_str().unwrap();
    // Signed by the source's key, which the target does not know until told.
    target.run(&["agents", "import", path]).fails_with("does not trust");
    let path_trusted = [path, "--trust-key", signer.as_str()];
    let import = |extra: &[&str]| {
        let mut args = vec!["agents", "import"];
        args.extend(path_trusted);
        args.extend(extra);
        target.run(&args)
    };
    import(&[]).fails_with("CLADE_ARCHIVE_KEY");
    let wrong = "ab".repeat(32);
    import(&["--secrets-key", &wrong]).fails_with("does not open the archive's secret API_TOKEN");
    target
        .run(&["agents", "list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .for_each(|a| assert_ne!(a["handle"], "ada", "a refused import wrote the agent"));
    let report = import(&["--secrets-key", &key, "--json"]).ok().json();
    assert_eq!(report["agent"]["handle"], "ada", "{report}");
    assert_eq!(report["dropped_grants"], json!([]), "the default tenant has no ceiling: {report}");
    assert_eq!(report["secrets"], 1, "{report}");
    assert!(report["unfinished"].as_u64().unwrap() >= 1, "the killed turn: {report}");
    assert!(report["rows"]["memories"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["rows"]["jobs"], 1, "{report}");
    assert!(!report["grants"].as_array().unwrap().is_empty(), "the template's grants: {report}");
    import(&["--secrets-key", &key]).fails_with("holds the archive's agent already");
    import(&["--secrets-key", &key, "--handle", "ada2"])
        .fails_with("holds the archive's agent already");

    // Read back: the same rows (only the tenant differs), the same files, the same secret
    // under the target's own master key.
    let again = dir.path().join("again.agent");
    let second = target.run(&["agents", "export", "ada", "-o", again.to_str().unwrap()]).ok();
    let second_lines = lines(&again);
    assert_eq!(rows_of(&first_lines), rows_of(&second_lines));
    let files = |lines: &[Value]| -> Vec<Value> {
        lines.iter().filter(|l| l["type"] == "file" || l["type"] == "chunk").cloned().collect()
    };
    assert_eq!(files(&first_lines), files(&second_lines));
    assert_eq!(open_secret(&second_lines, &key_of(&second.stderr), "API_TOKEN"), "s3cret-value");
    let moved = target.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(Path::new(&moved).join("notes/plan.md")).unwrap(),
        "ship on Friday\n"
    );
    let found = target.run(&["--agent", "ada", "memory", "search", "Heron", "--json"]).ok().json();
    assert!(found.to_string().contains("Heron"), "{found}");
    let jobs = target.run(&["cron", "list", "--json"]).ok().json();
    assert!(jobs.to_string().contains("standup"), "{jobs}");

    // Served there, the killed turn ends, once: its tool call, journaled as begun and of an
    // unknown outcome, is not run a second time.
    let server = target.serve(&[]);
    let turns = server
        .turns_until(&session, |t| t.iter().filter(|t| t["status"] == "completed").count() >= 2)
        .await;
    let replies: Vec<&str> = turns.iter().filter_map(|t| t["reply"].as_str()).collect();
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.contains("fs.write -> tool fs.write was interrupted by a restart"))
            .count(),
        1,
        "{turns:?}"
    );
    assert_eq!(replies.iter().filter(|r| **r == "first answer").count(), 1, "{turns:?}");
    let next = say(&server, "/reply third answer", true).await;
    assert_eq!(next["session_id"], session.as_str(), "{next}");
    assert_eq!(next["reply"]["text"], "third answer", "{next}");
}

/// Archives that were cut, edited, or forged to reach another agent's rows are refused,
/// naming the problem, and write nothing.
#[test]
fn a_cut_altered_or_forged_archive_writes_nothing() {
    let source = Env::new();
    source.run(&["agents", "create", "ada"]).ok();
    source.run(&["--agent", "ada", "memory", "add", "ada likes tea", "--kind", "preference"]).ok();
    source.run(&["agents", "workspace", "ada"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ada.agent");
    let exported = source.run(&["agents", "export", "ada", "-o", archive.to_str().unwrap()]).ok();
    let signer = signer_of(&exported.stderr);
    let original = std::fs::read_to_string(&archive).unwrap();
    let target = Env::new();
    let bo = target.run(&["agents", "create", "bo"]).ok();
    let bo_id = bo.stdout.split(['(', ')']).nth(1).unwrap().to_owned();
    let path = dir.path().join("bad.agent");
    let p = path.to_str().unwrap();
    // `--unsigned` where the archive was rewritten: what the import checks beyond the signature.
    let refused_as = |extra: &[&str], needle: &str| {
        let mut args = vec!["agents", "import", p, "--trust-key", signer.as_str()];
        args.extend(extra);
        target.run(&args).fails_with(needle);
        let list = target.run(&["agents", "list", "--json"]).ok().json();
        assert_eq!(list.as_array().unwrap().len(), 1, "a refused import wrote: {list}");
        let workspaces = std::fs::read_dir(target.data_dir().join("workspaces"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(
            workspaces.iter().all(|n| !n.to_string_lossy().starts_with(".archive")),
            "staging left behind: {workspaces:?}"
        );
    };
    let refused = |needle: &str| refused_as(&[], needle);

    // Cut short.
    let cut: String = original.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, cut).unwrap();
    refused("cut short");
    // Changed after it was written.
    std::fs::write(&path, original.replace("ada likes tea", "ada likes coffee")).unwrap();
    refused("checksum");
    // Forged, with a valid checksum: a memory item given to another agent of the target.
    let mut forged: Vec<Value> =
        original.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let columns = forged[0]["tables"]["memories"].clone();
    let agent_at = columns.as_array().unwrap().iter().position(|c| c == "agent_id").unwrap();
    let bo_bytes = hex::decode(bo_id.replace('-', "")).unwrap();
    use base64::Engine as _;
    let bo_b64 = base64::engine::general_purpose::STANDARD.encode(bo_bytes);
    for line in &mut forged {
        if line["type"] == "row" && line["table"] == "memories" {
            line["values"][agent_at] = json!(bo_b64);
        }
    }
    rewrite(&path, &forged);
    refused("signature does not match");
    refused_as(&["--unsigned"], "row of another agent");
    // A file outside the workspace.
    let mut escaping: Vec<Value> =
        original.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for line in &mut escaping {
        if line["type"] == "file" {
            line["path"] = json!("../../escaped.md");
            break;
        }
    }
    rewrite(&path, &escaping);
    refused_as(&["--unsigned"], "not a plain path inside the workspace");
    assert!(!target.tmp.path().join("escaped.md").exists());
    // Another format, and no file at all.
    std::fs::write(&path, "{\"type\":\"header\",\"format\":\"clade.memory\",\"version\":1,\"agent\":\"ada\",\"exported_at\":0}\n").unwrap();
    refused("agent archive");
    target
        .run(&["agents", "import", dir.path().join("missing.agent").to_str().unwrap()])
        .fails_with("missing.agent");

    // The untouched archive imports, under another handle when its own is taken.
    std::fs::write(&path, &original).unwrap();
    target.run(&["agents", "create", "ada"]).ok();
    target.run(&["agents", "import", p, "--trust-key", &signer]).fails_with("--handle");
    let report = target
        .run(&["agents", "import", p, "--trust-key", &signer, "--handle", "ada-moved", "--json"])
        .ok()
        .json();
    assert_eq!(report["agent"]["handle"], "ada-moved", "{report}");
    let found =
        target.run(&["--agent", "ada-moved", "memory", "search", "tea", "--json"]).ok().json();
    assert!(found.to_string().contains("ada likes tea"), "{found}");
    // The forged owner token is not believed: bo's memory stays empty.
    let none = target.run(&["--agent", "bo", "memory", "search", "tea", "--json"]).ok().json();
    assert!(!none.to_string().contains("tea"), "{none}");
}

/// Imported into a data dir a gateway serves, the killed turn ends there without a restart:
/// the import tells the gateway, through its admin socket, which sessions have work waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_running_gateway_resumes_its_turn_at_once() {
    if !clade_runtime::failpoints::ENABLED {
        assert!(std::env::var("CI").is_err(), "CI builds the suite with failpoints");
        return;
    }
    let (source, session) = killed_mid_turn().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ada.agent");
    let exported = source.run(&["agents", "export", "ada", "-o", archive.to_str().unwrap()]).ok();

    let target = Env::new();
    let server = target.serve(&[]);
    let path = archive.to_str().unwrap();
    let signer = signer_of(&exported.stderr);
    let imported =
        target.run(&["agents", "import", path, "--without-secrets", "--trust-key", &signer]).ok();
    assert!(imported.stderr.contains("runs its waiting work now"), "{}", imported.stderr);
    let turns = server
        .turns_until(&session, |t| t.iter().filter(|t| t["status"] == "completed").count() >= 2)
        .await;
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert!(turns.iter().all(|t| t["status"] == "completed"), "{turns:?}");
    // Without its secrets, as asked.
    let secrets = target.run(&["--agent", "ada", "secrets", "list"]).ok().stdout;
    assert!(!secrets.contains("API_TOKEN"), "{secrets}");
}

/// Export, delete, import: the deleted agent's grants stayed on record (revoked), and the same
/// grants coming back with it take their place, under its handle or another; `grants list`
/// names a deleted agent's grants as such.
#[test]
fn an_agent_exported_deleted_and_imported_comes_back_with_its_grants() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "fs.*"]).ok();
    let archive = env.data_dir().join("ada.agent");
    env.run(&["agents", "export", "ada", "-o", archive.to_str().unwrap()]).ok();
    env.run(&["agents", "delete", "ada", "--yes"]).ok();
    let listed = env.run(&["grants", "list"]).ok().stdout;
    assert!(listed.contains("(deleted agent)") && listed.contains("revoked"), "{listed}");
    env.run(&["agents", "import", archive.to_str().unwrap()]).ok();
    let listed = env.run(&["--agent", "ada", "grants", "list", "--json"]).ok().json();
    let live: Vec<&Value> =
        listed.as_array().unwrap().iter().filter(|g| g["live"] == true).collect();
    assert_eq!(live.len(), 1, "{listed}");
    assert_eq!(live[0]["tool"], "fs.*", "{listed}");
    // Once more, under another handle.
    env.run(&["agents", "delete", "ada", "--yes"]).ok();
    env.run(&["agents", "import", archive.to_str().unwrap(), "--handle", "ada9"]).ok();
    let listed = env.run(&["--agent", "ada9", "grants", "list", "--json"]).ok().json();
    assert!(
        listed.as_array().unwrap().iter().any(|g| g["live"] == true && g["tool"] == "fs.*"),
        "{listed}"
    );
}

/// An archive rewritten to grant its agent everything, with the network, does not bring those
/// grants in: its signature no longer holds, so the import is refused; with `--unsigned` it
/// comes in without its allow grants; and signed and trusted, it still brings no grant past
/// the importing tenant's ceiling. Each grant left out is named.
#[test]
fn forged_or_over_ceiling_grants_are_not_imported() {
    let source = Env::new();
    source.run(&["agents", "create", "ada"]).ok();
    source.run(&["--agent", "ada", "grants", "add", "--tool", "fs.*"]).ok();
    source
        .run(&["--agent", "ada", "grants", "add", "--tool", "shell.exec", "--effect", "deny"])
        .ok();
    // An ask turns the default deny into a question: it is held to the ceiling like an allow.
    source
        .run(&["--agent", "ada", "grants", "add", "--tool", "http.request", "--effect", "ask"])
        .ok();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ada.agent");
    let exported = source.run(&["agents", "export", "ada", "-o", archive.to_str().unwrap()]).ok();
    let signer = signer_of(&exported.stderr);

    // The grant rows rewritten: everything, with the network.
    let mut forged = lines(&archive);
    let columns = forged[0]["tables"]["grants"].as_array().unwrap().clone();
    let at = |name: &str| columns.iter().position(|c| c == name).unwrap();
    for line in &mut forged {
        if line["type"] == "row"
            && line["table"] == "grants"
            && line["values"][at("effect")] == "allow"
        {
            line["values"][at("tool")] = json!("*");
            line["values"][at("constraints")] = json!(r#"{"network":true,"private_network":true}"#);
        }
    }
    let bad = dir.path().join("forged.agent");
    rewrite(&bad, &forged);
    let target = Env::new();
    let bad = bad.to_str().unwrap();
    target
        .run(&["agents", "import", bad, "--trust-key", &signer])
        .fails_with("signature does not match");
    let report = target.run(&["agents", "import", bad, "--unsigned", "--json"]).ok().json();
    let dropped = report["dropped_grants"].as_array().unwrap();
    assert_eq!(dropped.len(), 2, "{report}");
    assert!(dropped[0].as_str().unwrap().starts_with("allow * "), "{report}");
    assert!(dropped.iter().all(|d| d.as_str().unwrap().contains("--unsigned")), "{report}");
    let live = |env: &Env, tenant: &str, agent: &str| -> Vec<String> {
        let listed = env
            .run(&["--tenant", tenant, "--agent", agent, "grants", "list", "--json"])
            .ok()
            .json();
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["live"] == true)
            .map(|g| {
                format!(
                    "{} {}",
                    g["effect"].as_str().unwrap_or_default(),
                    g["tool"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    assert_eq!(live(&target, "default", "ada"), ["deny shell.exec"], "only the deny came in");

    // Signed and trusted, into a tenant whose ceiling allows nothing: the allow grant stays out.
    // (Another data dir: an agent's id is its own in one store, whatever the tenant.)
    let path = archive.to_str().unwrap();
    let other = Env::new();
    other.run(&["tenants", "create", "acme"]).ok();
    let report = other
        .run(&["--tenant", "acme", "agents", "import", path, "--trust-key", &signer, "--json"])
        .ok()
        .json();
    let dropped = report["dropped_grants"].as_array().unwrap();
    assert_eq!(dropped.len(), 2, "{report}");
    assert!(
        dropped.iter().all(|d| d.as_str().unwrap().contains("tenants.acme.ceiling")),
        "{report}"
    );
    assert!(dropped[1].as_str().unwrap().starts_with("ask http.request"), "{report}");
    assert_eq!(live(&other, "acme", "ada"), ["deny shell.exec"]);
    // An unsigned archive is refused unless told.
    let mut unsigned = lines(&archive);
    if let Some(end) = unsigned.iter_mut().find(|l| l["type"] == "end") {
        end.as_object_mut().unwrap().remove("signature");
    }
    let plain = dir.path().join("plain.agent");
    rewrite(&plain, &unsigned);
    other.run(&["agents", "import", plain.to_str().unwrap()]).fails_with("not signed");
}

/// An archive's jobs and settings meet the importing tenant's limits as its grants meet the
/// ceiling: a job firing more often than `cron_min_interval_secs` allows, jobs past
/// `cron_jobs_per_agent` and a stored value of a setting locked here stay out, each named.
#[test]
fn imported_jobs_and_settings_keep_the_importing_sides_limits() {
    let source = Env::new();
    source.run(&["agents", "create", "ada"]).ok();
    // The operator's own jobs are not bound by the tenant's limits; an archive of them may be.
    for (name, schedule) in
        [("fast", "* * * * * *"), ("nightly", "0 3 * * *"), ("weekly", "0 4 * * 0")]
    {
        source.run(&["--agent", "ada", "cron", "create", name, schedule, "tidy up"]).ok();
    }
    source.run(&["--agent", "ada", "settings", "set", "region", "us"]).ok();
    source.run(&["--agent", "ada", "settings", "set", "tone", "warm"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ada.agent");
    let exported = source.run(&["agents", "export", "ada", "-o", archive.to_str().unwrap()]).ok();
    let signer = signer_of(&exported.stderr);

    let target = Env::new();
    super::support::write(
        &target.data_dir().join("clade.yaml"),
        "tenants:\n  \"*\":\n    quotas: { cron_jobs_per_agent: 1 }\nsettings:\n  region: { default: eu, agent_writable: false }\n",
    );
    let path = archive.to_str().unwrap();
    let report =
        target.run(&["agents", "import", path, "--trust-key", &signer, "--json"]).ok().json();
    let dropped_jobs: Vec<&str> =
        report["dropped_jobs"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(dropped_jobs.len(), 2, "{report}");
    assert!(
        dropped_jobs[0].starts_with("fast: ") && dropped_jobs[0].contains("cron_min_interval_secs"),
        "{report}"
    );
    assert!(
        dropped_jobs[1].starts_with("weekly: ") && dropped_jobs[1].contains("cron_jobs_per_agent"),
        "{report}"
    );
    let dropped_settings = report["dropped_settings"].as_array().unwrap();
    assert_eq!(dropped_settings.len(), 1, "{report}");
    assert!(dropped_settings[0].as_str().unwrap().starts_with("region: "), "{report}");

    let jobs = target.run(&["--agent", "ada", "cron", "list", "--json"]).ok().json();
    let names: Vec<&str> =
        jobs.as_array().unwrap().iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(names, ["nightly"], "{jobs}");
    let settings = target.run(&["--agent", "ada", "settings", "list", "--json"]).ok().json();
    let value = |key: &str| {
        settings.as_array().unwrap().iter().find(|s| s["key"] == key).map(|s| s["value"].clone())
    };
    assert_eq!(
        value("region"),
        Some(json!("eu")),
        "the lock's default, not the archive's: {settings}"
    );
    assert_eq!(value("tone"), Some(json!("warm")), "an unlocked setting comes in: {settings}");
}
