//! Writing an archive: the workspace's files in chunks, then every table's rows a page at a
//! time, then the secrets resealed under the archive's own key, and the end line.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clade_core::Agent;
use sha2::{Digest, Sha256};

use crate::agents::Agents;
use crate::crypto::MasterKey;
use crate::db::{Row, Tx, Value, query};
use crate::error::{Error, Result};
use crate::secrets::Secrets;

use super::*;

/// Writes `agent` of `agents`' store, with its workspace and secrets, to `out`. The rows are
/// read in one read-only transaction, so they are consistent with each other even while a
/// gateway runs the agent.
pub async fn export(
    agents: &Agents,
    secrets: &Secrets,
    agent: &Agent,
    out: &mut dyn Write,
    sign: Option<&(dyn Fn(&str) -> ArchiveSignature + Sync)>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportReport> {
    let store = agents.store();
    let mut report = ExportReport { agent: agent.handle.to_string(), ..ExportReport::default() };
    let tenant_name = store.tenants().by_id(agent.tenant_id).await?.name.to_string();
    let mut w = Hashing { out, digest: Sha256::new() };
    w.line(&Line::Header {
        format: FORMAT.into(),
        version: VERSION,
        agent: agent.id.to_string(),
        handle: agent.handle.to_string(),
        tenant: tenant_name,
        exported_at: store.now().as_millis(),
        tables: TABLES
            .iter()
            .map(|t| (t.name.to_owned(), t.columns.iter().map(|(c, _)| (*c).to_owned()).collect()))
            .collect(),
    })?;

    // The workspace, as it is on disk (a running agent may be writing it).
    let workspace = agents.workspace_path(agent.id);
    if workspace.is_dir() {
        let mut files = Vec::new();
        walk(&workspace, Path::new(""), &mut files, &mut report.skipped_links)?;
        for (rel, path) in files {
            let file = std::fs::File::open(&path).map_err(|source| Error::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            let meta = file.metadata().map_err(|source| Error::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            #[cfg(unix)]
            let executable =
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
            #[cfg(not(unix))]
            let executable = false;
            // The size announced is the size read: a file growing meanwhile is cut at it.
            let size = meta.len();
            w.line(&Line::File { path: rel, size, executable })?;
            let mut reader = file.take(size);
            let mut buf = vec![0u8; CHUNK];
            let mut sent = 0u64;
            while sent < size {
                let n = read_full(&mut reader, &mut buf).map_err(|source| Error::Io {
                    action: "read",
                    path: path.clone(),
                    source,
                })?;
                if n == 0 {
                    return Err(Error::Import(format!(
                        "{} shrank while it was exported: export again once it is left alone",
                        path.display()
                    )));
                }
                w.line(&Line::Chunk { data: b64().encode(&buf[..n]) })?;
                sent += n as u64;
            }
            report.files += 1;
            report.file_bytes += size;
            progress(Progress::Files { files: report.files, bytes: report.file_bytes });
        }
    }

    // The rows, from one snapshot of the store.
    let mut rows_per_table: BTreeMap<String, u64> = BTreeMap::new();
    let mut tx = store.read_snapshot().await?;
    let read = async {
        for table in TABLES {
            let mut count = 0u64;
            let mut after: Option<Vec<Value>> = None;
            loop {
                let page = read_page(&mut tx, table, agent, after.as_deref()).await?;
                let last = page.last().map(|row| key_of(table, row)).transpose()?;
                for row in &page {
                    let values = table
                        .columns
                        .iter()
                        .map(|(column, kind)| cell_to_json(table, row, column, *kind))
                        .collect::<Result<Vec<_>>>()?;
                    w.line(&Line::Row { table: table.name.to_owned(), values })?;
                    count += 1;
                }
                if (page.len() as i64) < PAGE {
                    break;
                }
                after = last;
            }
            progress(Progress::Table { table: table.name, rows: count });
            rows_per_table.insert(table.name.to_owned(), count);
            report.rows.push((table.name.to_owned(), count));
        }
        Ok::<_, Error>(())
    };
    let read = read.await;
    let _ = tx.batch("COMMIT").await;
    read?;

    // The secrets, sealed anew under a key made for this archive.
    let names = secrets.list(agent).await?;
    if !names.is_empty() {
        let key = MasterKey::generate();
        for info in &names {
            let value = secrets.get(agent, &info.name).await?;
            let sealed = key.seal(secret_context(info.name.as_str()).as_bytes(), &value)?;
            w.line(&Line::Secret {
                name: info.name.to_string(),
                nonce: b64().encode(&sealed.nonce),
                ciphertext: b64().encode(&sealed.ciphertext),
            })?;
        }
        report.secrets = names.len() as u64;
        report.secrets_key = Some(key.to_hex());
        progress(Progress::Secrets { secrets: report.secrets });
    }

    let sha256 = hex::encode(w.digest.clone().finalize());
    let signature = sign.map(|sign| sign(&sha256));
    w.line(&Line::End {
        files: report.files,
        rows: rows_per_table,
        secrets: report.secrets,
        sha256,
        signature,
    })?;
    w.out.flush().map_err(|e| Error::Import(format!("cannot write the archive: {e}")))?;
    Ok(report)
}

/// Fills `buf` as far as the reader allows; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The workspace's regular files, as (path relative to it with `/` separators, path), in name
/// order; links are listed in `links` and left out.
fn walk(
    dir: &Path,
    rel: &Path,
    files: &mut Vec<(String, PathBuf)>,
    links: &mut Vec<String>,
) -> Result<()> {
    let io = |source| Error::Io { action: "read", path: dir.to_owned(), source };
    let mut entries =
        std::fs::read_dir(dir).map_err(io)?.collect::<std::io::Result<Vec<_>>>().map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name_text) = name.to_str() else {
            links.push(format!("{} (not UTF-8)", rel.join(&name).display()));
            continue;
        };
        let rel = rel.join(name_text);
        let kind = entry.file_type().map_err(io)?;
        if kind.is_dir() {
            walk(&entry.path(), &rel, files, links)?;
        } else if kind.is_file() {
            let text =
                rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>();
            files.push((text.join("/"), entry.path()));
        } else {
            links.push(rel.display().to_string());
        }
    }
    Ok(())
}

async fn read_page(
    tx: &mut Tx,
    table: &Table,
    agent: &Agent,
    after: Option<&[Value]>,
) -> Result<Vec<Row>> {
    let columns = table.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
    let key = table.key.join(", ");
    let mut sql = format!("SELECT {columns} FROM {} WHERE ({})", table.name, table.filter);
    let mut q_args: Vec<Value> = Vec::new();
    if let Some(after) = after {
        let params = (0..after.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>();
        sql.push_str(&format!(" AND ({key}) > ({})", params.join(", ")));
        q_args.extend(after.iter().cloned());
    }
    sql.push_str(&format!(" ORDER BY {key} LIMIT {PAGE}"));
    let mut q =
        query(sql).bind(agent.id.as_bytes().to_vec()).bind(agent.tenant_id.as_bytes().to_vec());
    for arg in q_args {
        q = q.bind(arg);
    }
    q.fetch_all(tx).await
}

fn key_of(table: &Table, row: &Row) -> Result<Vec<Value>> {
    table
        .key
        .iter()
        .map(|column| {
            Ok(match kind_of(table, column) {
                Int => Value::Int(row.try_get::<Option<i64>, _>(*column)?),
                Real => Value::Real(row.try_get::<Option<f64>, _>(*column)?),
                Text => Value::Text(row.try_get::<Option<String>, _>(*column)?),
                Blob => Value::Blob(row.try_get::<Option<Vec<u8>>, _>(*column)?),
            })
        })
        .collect()
}

fn cell_to_json(table: &Table, row: &Row, column: &str, kind: Kind) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match kind {
        Int => row.try_get::<Option<i64>, _>(column)?.map_or(J::Null, J::from),
        Real => match row.try_get::<Option<f64>, _>(column)? {
            None => J::Null,
            Some(x) => serde_json::Number::from_f64(x).map(J::Number).ok_or_else(|| {
                Error::BadRow(format!(
                    "{}.{column} holds {x}, which an archive cannot carry",
                    table.name
                ))
            })?,
        },
        Text => row.try_get::<Option<String>, _>(column)?.map_or(J::Null, J::String),
        Blob => row
            .try_get::<Option<Vec<u8>>, _>(column)?
            .map_or(J::Null, |b| J::String(b64().encode(b))),
    })
}
