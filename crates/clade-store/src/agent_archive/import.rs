//! Reading an archive: every line checked, every row proved to be the agent's, before one
//! transaction writes them all and the workspace is published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use clade_core::{AgentId, AuditKind, Handle, SecretName, TenantId};
use sha2::{Digest, Sha256};

use crate::agents::Agents;
use crate::crypto::{MasterKey, Sealed};
use crate::db::{Value, query};
use crate::error::{Error, Result};
use crate::secrets::Secrets;
use crate::store::Store;

use super::*;

/// A value of an archive's row, as its column's kind.
fn json_to_value(
    table: &Table,
    column: &str,
    kind: Kind,
    value: &serde_json::Value,
) -> Result<Value> {
    use serde_json::Value as J;
    let bad = |what: &str| {
        Error::Import(format!(
            "the archive's {} row has {column} = {value}, not {what}",
            table.name
        ))
    };
    Ok(match (kind, value) {
        (Int, J::Null) => Value::Int(None),
        (Real, J::Null) => Value::Real(None),
        (Text, J::Null) => Value::Text(None),
        (Blob, J::Null) => Value::Blob(None),
        (Int, J::Number(n)) => Value::Int(Some(n.as_i64().ok_or_else(|| bad("an integer"))?)),
        (Real, J::Number(n)) => Value::Real(Some(n.as_f64().ok_or_else(|| bad("a number"))?)),
        (Text, J::String(s)) => Value::Text(Some(s.clone())),
        (Blob, J::String(s)) => {
            Value::Blob(Some(b64().decode(s).map_err(|_| bad("base64 bytes"))?))
        }
        (Int, _) => return Err(bad("an integer")),
        (Real, _) => return Err(bad("a number")),
        (Text, _) => return Err(bad("a text")),
        (Blob, _) => return Err(bad("base64 bytes")),
    })
}

/// An archive read and checked, ready to write.
struct Checked {
    agent: AgentId,
    handle: String,
    /// Rows per table, values in the table's column order.
    rows: Vec<(&'static Table, Vec<Vec<Value>>)>,
    secrets: Vec<(SecretName, Sealed)>,
    files: u64,
    file_bytes: u64,
}

/// Reads an archive from `input` into `tenant` of `agents`' store, checking all of it before
/// anything is written (see the module's doc).
pub async fn import(
    agents: &Agents,
    secrets: &Secrets,
    tenant: TenantId,
    input: &mut dyn BufRead,
    options: ImportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let store = agents.store().clone();
    let staging = agents.workspaces_dir().join(format!(".archive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let checked = read_archive(input, &staging, options.verify.as_ref(), progress);
    let checked = match checked {
        Ok(checked) => checked,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    let result = write_checked(&store, secrets, tenant, checked, &options).await;
    let (agent_id, report) = match result {
        Ok(written) => written,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    let workspace = agents.workspace_path(agent_id);
    if staging.is_dir()
        && let Err(source) = std::fs::rename(&staging, &workspace)
    {
        let _ = std::fs::remove_dir_all(&staging);
        let agent = report.agent.handle.to_string();
        let _ = store.agents(tenant).delete(&agent).await;
        return Err(Error::Io { action: "create workspace", path: workspace, source });
    }
    Ok(report)
}

fn read_archive(
    input: &mut dyn BufRead,
    staging: &Path,
    verify: Option<&VerifyArchive>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Checked> {
    let bad = |msg: String| Error::Import(msg);
    let mut digest = Sha256::new();
    let mut line_no = 0u64;
    let mut header: Option<(AgentId, String)> = None;
    let mut rows: HashMap<&'static str, Vec<Vec<Value>>> = HashMap::new();
    let mut sealed: Vec<(SecretName, Sealed)> = Vec::new();
    let mut file: Option<(std::fs::File, PathBuf, u64, u64)> = None;
    let (mut files, mut file_bytes) = (0u64, 0u64);
    let mut ended = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = input
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| bad(format!("cannot read the archive: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            return Err(bad(if n as u64 > MAX_LINE {
                format!("line {line_no} of the archive is longer than {MAX_LINE} bytes")
            } else {
                format!("the archive is cut short at line {line_no}: export it again")
            }));
        }
        if ended {
            return Err(bad(format!("line {line_no} follows the archive's end line")));
        }
        if line_no == 1 {
            check_format(&buf)?;
        }
        let line: Line = serde_json::from_slice(&buf).map_err(|e| {
            bad(format!("line {line_no} of the archive is not an archive line: {e}"))
        })?;
        let in_file = file.as_ref().is_some_and(|(_, _, size, got)| got < size);
        if in_file && !matches!(line, Line::Chunk { .. }) {
            let (_, path, size, got) =
                file.as_ref().map(|(_, p, s, g)| (0, p.clone(), *s, *g)).unwrap_or_default();
            return Err(bad(format!(
                "line {line_no}: {} ends after {got} of its {size} bytes",
                path.display()
            )));
        }
        match line {
            Line::Header { agent, handle, tables, .. } => {
                if line_no != 1 {
                    return Err(bad(format!("line {line_no} is a second header")));
                }
                for t in TABLES {
                    let ours: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
                    let theirs = tables
                        .get(t.name)
                        .map(|c| c.iter().map(String::as_str).collect::<Vec<_>>());
                    if theirs.as_deref() != Some(ours.as_slice()) {
                        return Err(bad(format!(
                            "the archive's {} table has columns {theirs:?}, not the {ours:?} this Clade writes: export it again with this version",
                            t.name
                        )));
                    }
                }
                let id = AgentId::parse(&agent)
                    .map_err(|_| bad(format!("the header's agent {agent:?} is not an agent id")))?;
                header = Some((id, handle));
            }
            _ if header.is_none() => {
                return Err(bad(
                    "the file does not start with an agent archive's header: is it one?".into(),
                ));
            }
            Line::File { path, size, executable } => {
                let rel = safe_path(&path).ok_or_else(|| {
                    bad(format!("line {line_no} names the file {path:?}, which is not a plain path inside the workspace"))
                })?;
                file_bytes = file_bytes.saturating_add(size);
                if file_bytes > MAX_FILES_BYTES {
                    return Err(bad(format!(
                        "the archive's files add up to more than {MAX_FILES_BYTES} bytes"
                    )));
                }
                let dest = staging.join(&rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                        action: "create",
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                let out =
                    std::fs::OpenOptions::new().write(true).create_new(true).open(&dest).map_err(
                        |source| match source.kind() {
                            std::io::ErrorKind::AlreadyExists => {
                                bad(format!("line {line_no} names {path:?} a second time"))
                            }
                            _ => Error::Io { action: "create", path: dest.clone(), source },
                        },
                    )?;
                #[cfg(unix)]
                if executable {
                    use std::os::unix::fs::PermissionsExt as _;
                    let _ = out.set_permissions(std::fs::Permissions::from_mode(0o755));
                }
                #[cfg(not(unix))]
                let _ = executable;
                files += 1;
                file = Some((out, dest, size, 0));
                progress(Progress::Files { files, bytes: file_bytes });
            }
            Line::Chunk { data } => {
                let Some((out, path, size, got)) = file.as_mut() else {
                    return Err(bad(format!("line {line_no}: a chunk outside any file")));
                };
                let bytes = b64()
                    .decode(&data)
                    .map_err(|_| bad(format!("line {line_no}: a chunk that is not base64")))?;
                *got += bytes.len() as u64;
                if *got > *size {
                    return Err(bad(format!(
                        "line {line_no}: {} is longer than its {size} bytes",
                        path.display()
                    )));
                }
                out.write_all(&bytes).map_err(|source| Error::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                })?;
            }
            Line::Row { table: name, values } => {
                let table = table(&name).ok_or_else(|| {
                    bad(format!("line {line_no}: no table {name:?} in an agent archive"))
                })?;
                if values.len() != table.columns.len() {
                    return Err(bad(format!(
                        "line {line_no}: a {name} row has {} values, not {}",
                        values.len(),
                        table.columns.len()
                    )));
                }
                let values = table
                    .columns
                    .iter()
                    .zip(&values)
                    .map(|((column, kind), v)| json_to_value(table, column, *kind, v))
                    .collect::<Result<Vec<_>>>()?;
                rows.entry(table.name).or_default().push(values);
            }
            Line::Secret { name, nonce, ciphertext } => {
                let name = SecretName::parse(&name)
                    .map_err(|e| bad(format!("line {line_no}: secret name {name:?}: {e}")))?;
                let decode = |s: &str| {
                    b64()
                        .decode(s)
                        .map_err(|_| bad(format!("line {line_no}: secret {name} is not base64")))
                };
                sealed.push((
                    name.clone(),
                    Sealed { nonce: decode(&nonce)?, ciphertext: decode(&ciphertext)? },
                ));
            }
            Line::End {
                files: want_files,
                rows: want_rows,
                secrets: want_secrets,
                sha256,
                signature,
            } => {
                let got = hex::encode(digest.clone().finalize());
                if got != sha256 {
                    return Err(bad("the archive does not match its checksum: it was changed or damaged after it was written".into()));
                }
                if let Some(verify) = verify {
                    verify(&sha256, signature.as_ref()).map_err(|Untrusted(why)| bad(why))?;
                }
                let have: BTreeMap<String, u64> = TABLES
                    .iter()
                    .map(|t| (t.name.to_owned(), rows.get(t.name).map_or(0, |r| r.len() as u64)))
                    .collect();
                let want: BTreeMap<String, u64> = TABLES
                    .iter()
                    .map(|t| (t.name.to_owned(), want_rows.get(t.name).copied().unwrap_or(0)))
                    .collect();
                if want_files != files || want != have || want_secrets != sealed.len() as u64 {
                    return Err(bad(
                        "the archive's end line does not count what it holds: it is damaged".into(),
                    ));
                }
                ended = true;
            }
        }
        digest.update(&buf);
    }
    if !ended {
        return Err(bad("the archive is cut short (no end line): export it again".into()));
    }
    let Some((agent, handle)) = header else {
        return Err(bad("the archive is empty".into()));
    };
    let rows: Vec<(&'static Table, Vec<Vec<Value>>)> =
        TABLES.iter().map(|t| (t, rows.remove(t.name).unwrap_or_default())).collect();
    check_ownership(agent, &rows)?;
    for (table, rows) in &rows {
        progress(Progress::Table { table: table.name, rows: rows.len() as u64 });
    }
    Ok(Checked { agent, handle, rows, secrets: sealed, files, file_bytes })
}

/// Refuses a first line that is not an agent archive's header of this version, naming what
/// it is instead, before its fields are read.
fn check_format(line: &[u8]) -> Result<()> {
    let bad = |msg: String| Error::Import(msg);
    let header: serde_json::Value = serde_json::from_slice(line).map_err(|_| {
        bad("the file does not start with an agent archive's header: is it one?".into())
    })?;
    let format = header["format"].as_str().unwrap_or_default();
    if header["type"] != "header" || format != FORMAT {
        return Err(Error::NotAnAgentArchive { format: format.to_owned() });
    }
    let version = header["version"].as_u64().unwrap_or_default();
    if version != u64::from(VERSION) {
        return Err(bad(format!(
            "the archive is version {version}; this Clade reads version {VERSION}: import it \
             with the version that wrote it, or export it again with this one"
        )));
    }
    Ok(())
}

/// A path of the archive as a relative path of normal components, or none.
fn safe_path(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\\') || path.contains('\0') {
        return None;
    }
    let rel = PathBuf::from(path);
    rel.components().all(|c| matches!(c, Component::Normal(_))).then_some(rel)
}

fn column_index(table: &Table, column: &str) -> Result<usize> {
    table
        .columns
        .iter()
        .position(|(c, _)| *c == column)
        .ok_or_else(|| Error::BadRow(format!("{} has no column {column}", table.name)))
}

fn blob(value: &Value) -> Option<&[u8]> {
    match value {
        Value::Blob(Some(bytes)) => Some(bytes),
        _ => None,
    }
}

/// Every row belongs to the archive's agent: exactly one agent row, of its id; each agent
/// column holds that id; each reference names the agent or a row the archive brings.
fn check_ownership(agent: AgentId, rows: &[(&'static Table, Vec<Vec<Value>>)]) -> Result<()> {
    let bad = |msg: String| Error::Import(msg);
    let id = agent.as_bytes().as_slice();
    let mut present: HashMap<&str, HashSet<Vec<u8>>> = HashMap::new();
    for (table, rows) in rows {
        if table.name == "agents" && rows.len() != 1 {
            return Err(bad(format!("the archive holds {} agent rows, not one", rows.len())));
        }
        let agent_columns =
            table.agent.iter().map(|c| column_index(table, c)).collect::<Result<Vec<_>>>()?;
        let refs = table
            .refs
            .iter()
            .map(|(c, targets)| Ok((*c, column_index(table, c)?, *targets)))
            .collect::<Result<Vec<_>>>()?;
        let first_key = column_index(table, table.key[0])?;
        let mut keys = HashSet::new();
        for row in rows {
            for &i in &agent_columns {
                if blob(&row[i]) != Some(id) {
                    return Err(bad(format!(
                        "the archive has a {} row of another agent ({} is not {agent}): it was altered",
                        table.name, table.columns[i].0
                    )));
                }
            }
            for (column, i, targets) in &refs {
                let Some(value) = blob(&row[*i]) else { continue };
                let found = targets.iter().any(|target| match target {
                    Target::Agent => value == id,
                    Target::Table(t) => present.get(t).is_some_and(|set| set.contains(value)),
                });
                if !found {
                    return Err(bad(format!(
                        "the archive has a {} row whose {column} names something the archive does not bring: it was altered",
                        table.name
                    )));
                }
            }
            if let Some(key) = blob(&row[first_key]) {
                keys.insert(key.to_vec());
            }
        }
        present.insert(table.name, keys);
    }
    Ok(())
}

async fn write_checked(
    store: &Store,
    secrets: &Secrets,
    tenant: TenantId,
    checked: Checked,
    options: &ImportOptions,
) -> Result<(AgentId, ImportReport)> {
    let Checked { agent, handle, mut rows, secrets: sealed, files, file_bytes } = checked;
    let handle = match &options.handle {
        Some(handle) => handle.clone(),
        None => Handle::parse(&handle)
            .map_err(|e| Error::Import(format!("the archive's handle {handle:?}: {e}")))?,
    };
    // The secrets are opened before anything is written: a wrong key writes nothing.
    let mut resealed = Vec::new();
    if !sealed.is_empty() && !options.without_secrets {
        let Some(hex) = options.secrets_key.as_deref() else {
            return Err(Error::Import(format!(
                "the archive holds {} secrets, sealed with the key its export printed: pass it \
                 (CLADE_ARCHIVE_KEY or --secrets-key), or import --without-secrets and set them again",
                sealed.len()
            )));
        };
        let key = MasterKey::from_hex(hex).map_err(|_| {
            Error::Import(
                "the secrets key is not 64 hexadecimal characters: pass the key the export printed"
                    .into(),
            )
        })?;
        for (name, sealed) in &sealed {
            let value = key
                .open(secret_context(name.as_str()).as_bytes(), sealed, name.as_str())
                .map_err(|_| {
                    Error::Import(format!(
                        "the secrets key does not open the archive's secret {name}: pass the key printed by the export that wrote this file"
                    ))
                })?;
            resealed.push((name.clone(), secrets.seal(agent, name, &value).await?));
        }
    }

    let tenant_bytes = tenant.as_bytes().to_vec();
    for (table, rows) in &mut rows {
        let tenant_column = table.columns.iter().position(|(c, _)| *c == "tenant_id");
        let handle_column =
            (table.name == "agents").then(|| column_index(table, "handle")).transpose()?;
        let owner = (table.name == "memories")
            .then(|| Ok::<_, Error>((column_index(table, "owner")?, column_index(table, "scope")?)))
            .transpose()?;
        for row in rows.iter_mut() {
            if let Some(i) = tenant_column {
                row[i] = Value::Blob(Some(tenant_bytes.clone()));
            }
            if let Some(i) = handle_column {
                row[i] = Value::Text(Some(handle.to_string()));
            }
            if let Some((owner, scope)) = owner {
                let Value::Text(Some(scope)) = &row[scope] else {
                    return Err(Error::Import(
                        "the archive has a memory item without a scope".into(),
                    ));
                };
                row[owner] = Value::Text(Some(crate::memories::owner_token(agent, scope)));
            }
        }
    }

    let Dropped { grants: dropped_grants, jobs: dropped_jobs, settings: dropped_settings } =
        admit_rows(&mut rows, &handle, options.admit.as_ref())?;
    let mut grants = Vec::new();
    let mut delegated = 0u64;
    let mut unfinished = 0u64;
    let mut waiting = Vec::new();
    for (table, rows) in &rows {
        match table.name {
            "grants" => {
                let [effect, tool, resource, parent, revoked] =
                    ["effect", "tool", "resource", "parent_id", "revoked_at"]
                        .map(|c| column_index(table, c));
                let (effect, tool, resource, parent, revoked) =
                    (effect?, tool?, resource?, parent?, revoked?);
                for row in rows {
                    if !matches!(row[revoked], Value::Int(None)) {
                        continue;
                    }
                    let text = |v: &Value| match v {
                        Value::Text(Some(s)) => s.clone(),
                        _ => String::new(),
                    };
                    grants.push(format!(
                        "{} {} {}",
                        text(&row[effect]),
                        text(&row[tool]),
                        text(&row[resource])
                    ));
                    if blob(&row[parent]).is_some() {
                        delegated += 1;
                    }
                }
            }
            "events" => {
                let (session, status) =
                    (column_index(table, "session_id")?, column_index(table, "status")?);
                for row in rows {
                    let open = matches!(&row[status], Value::Text(Some(s))
                        if clade_core::EventStatus::parse(s).is_some_and(|s| s.is_open()));
                    if let (true, Some(bytes)) = (open, blob(&row[session]))
                        && let Ok(bytes) = <[u8; 16]>::try_from(bytes)
                    {
                        let id = clade_core::SessionId::from_bytes(bytes);
                        if !waiting.contains(&id) {
                            waiting.push(id);
                        }
                    }
                }
            }
            "executions" => {
                let finished = column_index(table, "finished_at")?;
                unfinished +=
                    rows.iter().filter(|r| matches!(r[finished], Value::Int(None))).count() as u64;
            }
            _ => {}
        }
    }

    let counts: Vec<(String, u64)> =
        rows.iter().map(|(t, r)| (t.name.to_owned(), r.len() as u64)).collect();
    let audit = store.admin_record(
        tenant,
        Some(agent),
        AuditKind::AgentCreated,
        serde_json::json!({
            "handles": [handle.as_str()],
            "count": 1,
            "imported": { "files": files, "rows": counts.iter().map(|(t, n)| (t.clone(), *n)).collect::<BTreeMap<_, _>>(), "secrets": resealed.len() },
        }),
    );
    let rows = std::sync::Arc::new(rows);
    let resealed = std::sync::Arc::new(resealed);
    let handle_text = handle.to_string();
    store
        .transact(tenant, move |work| {
            let (rows, resealed, audit, handle) =
                (rows.clone(), resealed.clone(), audit.clone(), handle_text.clone());
            Box::pin(async move {
                let now = work.now().as_millis();
                let conn = work.conn();
                let held = query("SELECT handle FROM agents WHERE id = $1")
                    .bind(agent.as_bytes().to_vec())
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(row) = held {
                    let held: String = row.try_get("handle")?;
                    return Err(Error::ArchivedAgentHeld { held, agent: agent.to_string() });
                }
                let taken = query("SELECT 1 AS one FROM agents WHERE tenant_id = $1 AND handle = $2")
                    .bind(tenant.as_bytes().to_vec())
                    .bind(handle.clone())
                    .fetch_optional(&mut *conn)
                    .await?;
                if taken.is_some() {
                    return Err(Error::Import(format!(
                        "the tenant has an agent {handle:?} already: import with --handle <another>"
                    )));
                }
                // A deleted agent's grants stay on record, revoked, under their ids: the same
                // grants coming back with it take their place.
                if let Some((table, grants)) = rows.iter().find(|(t, _)| t.name == "grants") {
                    let id = column_index(table, "id")?;
                    for grant in grants {
                        query("DELETE FROM grants WHERE id = $1 AND agent_id = $2 AND revoked_at IS NOT NULL")
                            .bind(grant[id].clone())
                            .bind(agent.as_bytes().to_vec())
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                for (table, rows) in rows.iter() {
                    let width = table.columns.len();
                    let columns = table.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
                    // Many rows a statement: a statement each was a round trip each on
                    // PostgreSQL. At most `MAX_PARAMS` values keep it within both backends'
                    // limits.
                    for chunk in rows.chunks((MAX_PARAMS / width.max(1)).max(1)) {
                        let tuples: Vec<String> = (0..chunk.len())
                            .map(|r| {
                                let marks: Vec<String> =
                                    (1..=width).map(|c| format!("${}", r * width + c)).collect();
                                format!("({})", marks.join(", "))
                            })
                            .collect();
                        let sql =
                            format!("INSERT INTO {} ({columns}) VALUES {}", table.name, tuples.join(", "));
                        let mut q = query(sql);
                        for value in chunk.iter().flatten() {
                            q = q.bind(value.clone());
                        }
                        q.execute(&mut *conn).await.map_err(|e| match e {
                            Error::Database(_) | Error::Sqlite(_) => Error::Import(format!(
                                "the archive's {} rows do not fit this store ({e}): nothing was imported",
                                table.name
                            )),
                            other => other,
                        })?;
                    }
                }
                for (name, sealed) in resealed.iter() {
                    query(
                        "INSERT INTO secrets (agent_id, name, nonce, ciphertext, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(agent.as_bytes().to_vec())
                    .bind(name.as_str())
                    .bind(sealed.nonce.clone())
                    .bind(sealed.ciphertext.clone())
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                work.audit(&audit).await?;
                Ok(())
            })
        })
        .await?;
    let imported = store.agents(tenant).by_id(agent).await?;
    let report = ImportReport {
        agent: imported,
        files,
        file_bytes,
        rows: counts,
        secrets: resealed_len(&sealed, options),
        unfinished,
        grants,
        orphaned_grants: delegated,
        dropped_grants,
        dropped_jobs,
        dropped_settings,
        waiting_sessions: waiting,
    };
    Ok((agent, report))
}

/// What [`admit_rows`] left out, each as `what: why`.
#[derive(Default)]
struct Dropped {
    grants: Vec<String>,
    jobs: Vec<String>,
    settings: Vec<String>,
}

/// Takes out of `rows` the live grants, jobs and settings `admit` refuses, and the run history
/// of the jobs left out.
fn admit_rows(
    rows: &mut [(&'static Table, Vec<Vec<Value>>)],
    handle: &Handle,
    admit: Option<&Admit>,
) -> Result<Dropped> {
    let Some(admit) = admit else { return Ok(Dropped::default()) };
    let text = |v: &Value| match v {
        Value::Text(Some(s)) => s.clone(),
        _ => String::new(),
    };
    let mut dropped = Dropped::default();
    let mut dropped_job_ids = Vec::new();
    for (table, rows) in rows.iter_mut() {
        match table.name {
            "grants" => {
                let [effect, tool, resource, constraints, revoked] =
                    ["effect", "tool", "resource", "constraints", "revoked_at"]
                        .map(|c| column_index(table, c));
                let (effect, tool, resource, constraints, revoked) =
                    (effect?, tool?, resource?, constraints?, revoked?);
                rows.retain(|row| {
                    if !matches!(row[revoked], Value::Int(None)) {
                        return true;
                    }
                    let grant = ArchivedGrant {
                        effect: text(&row[effect]),
                        tool: text(&row[tool]),
                        resource: text(&row[resource]),
                        constraints: text(&row[constraints]),
                    };
                    let Some(why) = admit(&Archived::Grant(&grant)) else { return true };
                    let (effect, tool, resource) = (grant.effect, grant.tool, grant.resource);
                    dropped.grants.push(format!("{effect} {tool} {resource}: {why}"));
                    false
                });
            }
            "jobs" => {
                let [id, name, schedule, zone] =
                    ["id", "name", "schedule", "zone"].map(|c| column_index(table, c));
                let (id, name, schedule, zone) = (id?, name?, schedule?, zone?);
                let mut admitted = 0;
                rows.retain(|row| {
                    let (job, schedule, zone) =
                        (text(&row[name]), text(&row[schedule]), text(&row[zone]));
                    let asked = Archived::Job {
                        handle: handle.as_str(),
                        name: &job,
                        schedule: &schedule,
                        zone: &zone,
                        admitted,
                    };
                    match admit(&asked) {
                        None => {
                            admitted += 1;
                            true
                        }
                        Some(why) => {
                            dropped.jobs.push(format!("{job}: {why}"));
                            dropped_job_ids.extend(blob(&row[id]).map(<[u8]>::to_vec));
                            false
                        }
                    }
                });
            }
            "agent_settings" => {
                let key = column_index(table, "key")?;
                rows.retain(|row| {
                    let key = text(&row[key]);
                    let Some(why) = admit(&Archived::Setting { key: &key }) else { return true };
                    dropped.settings.push(format!("{key}: {why}"));
                    false
                });
            }
            _ => {}
        }
    }
    if !dropped_job_ids.is_empty() {
        for (table, rows) in rows.iter_mut().filter(|(t, _)| t.name == "job_runs") {
            let job = column_index(table, "job_id")?;
            rows.retain(|row| {
                blob(&row[job]).is_none_or(|id| !dropped_job_ids.iter().any(|d| d == id))
            });
        }
    }
    Ok(dropped)
}

/// The most values bound to one insert of an import (SQLite allows 32,766, PostgreSQL 65,535).
const MAX_PARAMS: usize = 2_000;

fn resealed_len(sealed: &[(SecretName, Sealed)], options: &ImportOptions) -> u64 {
    if options.without_secrets { 0 } else { sealed.len() as u64 }
}
