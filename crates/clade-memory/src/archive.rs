//! An agent's memory as a file, to move it between data dirs and backends: JSON Lines, a
//! header first, then every item (all its stored fields, its embedding as the exact bits of
//! its floats), then every link, and an end line with the counts, so a cut file is refused
//! rather than half imported. An import checks the whole file before it writes anything.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

use base64::Engine as _;
use clade_core::{AgentId, LinkKind, MemoryId, MemoryKind, TenantId, Timestamp};
use clade_store::memory_transfer::check_record;
use clade_store::{LinkRow, MemoryRecord, MemoryRow, Provenance, Store};
use serde::{Deserialize, Serialize};

use crate::Error;

/// What the header names the format.
pub const FORMAT: &str = "clade.memory";
/// The format's version this build writes and reads.
pub const VERSION: u32 = 1;
/// The longest line read, in bytes: an item of 4 KiB and an embedding of 16,384 floats fit.
const MAX_LINE: usize = 128 * 1024;
/// Items or links per page read and per transaction written.
const BATCH: u32 = 500;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header {
        format: String,
        version: u32,
        /// The handle of the agent it was exported from.
        agent: String,
        exported_at: i64,
    },
    Item(Box<Item>),
    Link {
        from: String,
        to: String,
        kind: String,
        weight: f64,
        created_at: i64,
    },
    End {
        items: u64,
        links: u64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    id: String,
    scope: String,
    kind: String,
    content: String,
    importance: f64,
    confidence: f64,
    strength: f64,
    untrusted: bool,
    created_at: i64,
    updated_at: i64,
    accessed_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    turn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<String>,
    by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    embedding: Option<Embedding>,
    /// When upkeep pruned it (restorable until purged), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pruned_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pruned_why: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Embedding {
    model: String,
    /// The floats as little-endian bytes, in base64: their exact bits.
    f32le: String,
}

/// How far an export or import has got: items and links done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub items: u64,
    pub links: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The agent the file was exported from.
    pub from_agent: String,
    pub items: u64,
    /// Items the agent held already, left as they were.
    pub present: u64,
    /// Items kept under a new id, because another agent holds their own.
    pub renamed: u64,
    pub links: u64,
}

fn archive(line: usize, message: impl Into<String>) -> Error {
    Error::Archive { line, message: message.into() }
}

fn to_item(record: &MemoryRecord) -> Item {
    let row = &record.row;
    let embedding = match (&record.embedding, &row.embedding_model) {
        (Some(vector), Some(model)) => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            Some(Embedding {
                model: model.clone(),
                f32le: base64::engine::general_purpose::STANDARD.encode(bytes),
            })
        }
        _ => None,
    };
    Item {
        id: row.id.to_string(),
        scope: row.scope.clone(),
        kind: row.kind.as_str().to_owned(),
        content: row.content.clone(),
        importance: row.importance,
        confidence: row.confidence,
        strength: row.strength,
        untrusted: row.untrusted,
        created_at: row.created_at.as_millis(),
        updated_at: row.updated_at.as_millis(),
        accessed_at: row.accessed_at.as_millis(),
        session: row.provenance.session.map(|s| s.to_string()),
        turn: row.provenance.turn.map(|t| t.to_string()),
        tool: row.provenance.tool.clone(),
        by: row.provenance.by.clone(),
        embedding,
        pruned_at: row.pruned.as_ref().map(|p| p.at.as_millis()),
        pruned_why: row.pruned.as_ref().map(|p| p.why.clone()),
    }
}

fn from_item(item: Box<Item>, agent: AgentId, line: usize) -> Result<MemoryRecord, Error> {
    let id: MemoryId =
        item.id.parse().map_err(|_| archive(line, format!("{:?} is not a memory id", item.id)))?;
    let kind = MemoryKind::parse(&item.kind).ok_or_else(|| {
        archive(line, format!("unknown kind {:?}: use one of {}", item.kind, crate::kinds_list()))
    })?;
    let session = item.session.as_deref().map(str::parse).transpose();
    let turn = item.turn.as_deref().map(str::parse).transpose();
    let (embedding, embedding_model) = match item.embedding {
        None => (None, None),
        Some(e) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e.f32le.as_bytes())
                .map_err(|_| archive(line, "the embedding is not base64"))?;
            let vector = clade_store::memories::vector_of(&bytes)
                .map_err(|e| archive(line, e.to_string()))?;
            (Some(vector), Some(e.model))
        }
    };
    let record = MemoryRecord {
        row: MemoryRow {
            id,
            agent_id: agent,
            scope: item.scope,
            kind,
            content: item.content,
            importance: item.importance,
            confidence: item.confidence,
            provenance: Provenance {
                session: session.map_err(|_| archive(line, "provenance: bad session id"))?,
                turn: turn.map_err(|_| archive(line, "provenance: bad turn id"))?,
                tool: item.tool,
                by: item.by,
            },
            untrusted: item.untrusted,
            strength: item.strength,
            created_at: Timestamp::from_millis(item.created_at),
            updated_at: Timestamp::from_millis(item.updated_at),
            accessed_at: Timestamp::from_millis(item.accessed_at),
            embedding_model,
            pruned: match (item.pruned_at, item.pruned_why) {
                (Some(at), why) => Some(clade_store::Pruned {
                    at: Timestamp::from_millis(at),
                    why: why.unwrap_or_default(),
                }),
                (None, None) => None,
                (None, Some(_)) => return Err(archive(line, "pruned_why without pruned_at")),
            },
        },
        embedding,
    };
    check_record(&record).map_err(|e| archive(line, e.to_string()))?;
    Ok(record)
}

fn from_link(
    (from, to, kind, weight, created_at): (String, String, String, f64, i64),
    line: usize,
) -> Result<LinkRow, Error> {
    let id = |text: &str| -> Result<MemoryId, Error> {
        text.parse().map_err(|_| archive(line, format!("{text:?} is not a memory id")))
    };
    let kind = LinkKind::parse(&kind).ok_or_else(|| {
        archive(
            line,
            format!(
                "unknown link kind {kind:?}: updates, contradicts, caused_by, related_to or part_of"
            ),
        )
    })?;
    if !(0.0..=1.0).contains(&weight) {
        return Err(archive(line, format!("link weight {weight} is not between 0 and 1")));
    }
    Ok(LinkRow {
        from: id(&from)?,
        to: id(&to)?,
        kind,
        weight,
        created_at: Timestamp::from_millis(created_at),
    })
}

fn write_line(out: &mut dyn Write, line: &Line) -> Result<(), Error> {
    let text = serde_json::to_string(line).map_err(|e| Error::Io(std::io::Error::other(e)))?;
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes `agent`'s (handle `handle`) whole memory to `out`, a page at a time.
pub async fn export(
    store: &Store,
    tenant: TenantId,
    agent: AgentId,
    handle: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress),
) -> Result<Progress, Error> {
    let header = Line::Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        agent: handle.to_owned(),
        exported_at: store.now().as_millis(),
    };
    write_line(out, &header)?;
    let mut done = Progress::default();
    let mut after = None;
    loop {
        let page = store.memories(tenant).records(agent, after, BATCH).await?;
        for record in &page {
            write_line(out, &Line::Item(Box::new(to_item(record))))?;
        }
        done.items += page.len() as u64;
        progress(done);
        match page.last() {
            Some(last) if page.len() == BATCH as usize => after = Some(last.row.id),
            _ => break,
        }
    }
    let mut after: Option<LinkRow> = None;
    loop {
        let page = store.memories(tenant).link_page(agent, after.as_ref(), BATCH).await?;
        for link in &page {
            let line = Line::Link {
                from: link.from.to_string(),
                to: link.to.to_string(),
                kind: link.kind.as_str().to_owned(),
                weight: link.weight,
                created_at: link.created_at.as_millis(),
            };
            write_line(out, &line)?;
        }
        done.links += page.len() as u64;
        progress(done);
        match page.last() {
            Some(last) if page.len() == BATCH as usize => after = Some(last.clone()),
            _ => break,
        }
    }
    write_line(out, &Line::End { items: done.items, links: done.links })?;
    out.flush()?;
    Ok(done)
}

/// The file's lines, parsed, with their numbers (from 1). A line longer than [`MAX_LINE`],
/// not UTF-8 or not one of the format's lines is an error naming it.
fn lines(path: &Path) -> Result<impl Iterator<Item = Result<(usize, Line), Error>>, Error> {
    let file = std::fs::File::open(path)?;
    let mut reader = std::io::BufReader::new(file);
    let mut number = 0;
    let mut buffer = Vec::new();
    Ok(std::iter::from_fn(move || {
        buffer.clear();
        number += 1;
        let read =
            std::io::Read::take(&mut reader, MAX_LINE as u64 + 1).read_until(b'\n', &mut buffer);
        match read {
            Err(err) => Some(Err(Error::Io(err))),
            Ok(0) => None,
            Ok(_) if buffer.len() > MAX_LINE => {
                Some(Err(archive(number, format!("longer than {MAX_LINE} bytes"))))
            }
            Ok(_) => Some(
                serde_json::from_slice::<Line>(buffer.trim_ascii_end())
                    .map(|line| (number, line))
                    .map_err(|e| archive(number, format!("not a line of a memory export: {e}"))),
            ),
        }
    }))
}

/// Reads `path` through once without writing: the header, every item and link well formed,
/// each link between items of the file, and the end line's counts matching. Returns the
/// handle the file was exported from.
fn check_file(path: &Path, agent: AgentId) -> Result<String, Error> {
    let mut ids = HashSet::new();
    let (mut from, mut links, mut ended) = (None, 0u64, false);
    for next in lines(path)? {
        let (number, line) = next?;
        if ended {
            return Err(archive(number, "a line after the end line"));
        }
        match line {
            Line::Header { format, version, agent: handle, .. } => {
                if number != 1 {
                    return Err(archive(number, "a second header"));
                }
                if format != FORMAT || version != VERSION {
                    return Err(archive(
                        number,
                        format!(
                            "format {format:?} version {version}: this build reads {FORMAT:?} version {VERSION}"
                        ),
                    ));
                }
                from = Some(handle);
            }
            _ if from.is_none() => {
                return Err(archive(
                    number,
                    "the file does not start with a memory export's header",
                ));
            }
            Line::Item(item) => {
                let record = from_item(item, agent, number)?;
                if !ids.insert(record.row.id) {
                    return Err(archive(number, format!("item {} appears twice", record.row.id)));
                }
            }
            Line::Link { from: a, to: b, kind, weight, created_at } => {
                let link = from_link((a, b, kind, weight, created_at), number)?;
                for end in [link.from, link.to] {
                    if !ids.contains(&end) {
                        return Err(archive(
                            number,
                            format!("the link names item {end}, which no item line before it has"),
                        ));
                    }
                }
                links += 1;
            }
            Line::End { items: counted_items, links: counted_links } => {
                if counted_items != ids.len() as u64 || counted_links != links {
                    return Err(archive(
                        number,
                        format!(
                            "the end line counts {counted_items} items and {counted_links} links, the file has {} and {links}",
                            ids.len()
                        ),
                    ));
                }
                ended = true;
            }
        }
    }
    match from {
        None => Err(Error::BadArchive("the file is empty: it is not a memory export".into())),
        Some(_) if !ended => Err(Error::BadArchive(
            "the file has no end line: it was cut short; export it again".into(),
        )),
        Some(handle) => Ok(handle),
    }
}

/// Imports the export at `path` into `agent`'s memory, exactly as it was exported. The whole
/// file is checked first, and nothing is written when any line is wrong; items the agent
/// holds already are left as they are, so importing the same file twice changes nothing.
pub async fn import(
    store: &Store,
    tenant: TenantId,
    agent: AgentId,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport, Error> {
    let from_agent = check_file(path, agent)?;
    let mut report = ImportReport { from_agent, ..ImportReport::default() };
    let mut renamed: HashMap<MemoryId, MemoryId> = HashMap::new();
    let (mut items, mut links) = (Vec::new(), Vec::new());
    let mut done = Progress::default();
    for next in lines(path)? {
        let (number, line) = next?;
        match line {
            Line::Item(item) => {
                items.push(from_item(item, agent, number)?);
                if items.len() >= BATCH as usize {
                    flush_items(store, tenant, agent, &mut items, &mut report, &mut renamed)
                        .await?;
                    done.items = report.items + report.present;
                    progress(done);
                }
            }
            Line::Link { from, to, kind, weight, created_at } => {
                // A link's ends come before it: they are written, and any new ids known.
                flush_items(store, tenant, agent, &mut items, &mut report, &mut renamed).await?;
                let mut link = from_link((from, to, kind, weight, created_at), number)?;
                link.from = renamed.get(&link.from).copied().unwrap_or(link.from);
                link.to = renamed.get(&link.to).copied().unwrap_or(link.to);
                links.push(link);
                if links.len() >= BATCH as usize {
                    let batch = std::mem::take(&mut links);
                    report.links += store.memories(tenant).import_links(agent, batch).await?;
                    done.links = report.links;
                    progress(done);
                }
            }
            Line::Header { .. } | Line::End { .. } => {}
        }
    }
    flush_items(store, tenant, agent, &mut items, &mut report, &mut renamed).await?;
    report.links += store.memories(tenant).import_links(agent, links).await?;
    done = Progress { items: report.items + report.present, links: report.links };
    progress(done);
    Ok(report)
}

async fn flush_items(
    store: &Store,
    tenant: TenantId,
    agent: AgentId,
    items: &mut Vec<MemoryRecord>,
    report: &mut ImportReport,
    renamed: &mut HashMap<MemoryId, MemoryId>,
) -> Result<(), Error> {
    if items.is_empty() {
        return Ok(());
    }
    let imported = store.memories(tenant).import(agent, std::mem::take(items)).await?;
    report.items += imported.written;
    report.present += imported.present;
    report.renamed += imported.renamed.len() as u64;
    renamed.extend(imported.renamed);
    Ok(())
}
