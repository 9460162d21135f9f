//! `clade memory`: an agent's long-term memory from the command line, on the store directly
//! (as the API's `/v1/agents/{handle}/memories` does through a gateway).

use anyhow::{Context as _, Result};
use clade_core::{MemoryId, MemoryKind};
use clade_store::{MemoryFilter, MemoryRow, NewMemory, Provenance};

use crate::cli::MemoryCommand;
use crate::context::{Ctx, env_hints};
use crate::output;

fn kind_of(text: &str) -> Result<MemoryKind> {
    MemoryKind::parse(text).with_context(|| {
        format!("unknown kind {text:?}: use one of {}", clade_memory::kinds_list())
    })
}

fn row_json(row: &MemoryRow) -> serde_json::Value {
    serde_json::json!({
        "id": row.id.to_string(),
        "kind": row.kind.as_str(),
        "content": row.content,
        "scope": row.scope,
        "importance": row.importance,
        "confidence": row.confidence,
        "untrusted": row.untrusted,
        "by": row.provenance.by,
        "embedding_model": row.embedding_model,
        "strength": row.strength,
        // Epoch milliseconds, as every other JSON output and the API write times.
        "updated_at": row.updated_at.as_millis(),
        "pruned_at": row.pruned.as_ref().map(|p| p.at.as_millis()),
        "pruned_why": row.pruned.as_ref().map(|p| p.why.clone()),
    })
}

fn row_cells(row: &MemoryRow) -> Vec<String> {
    let date = row.updated_at.to_string();
    vec![
        row.id.to_string(),
        row.kind.as_str().to_owned(),
        date.get(..16).unwrap_or(&date).to_owned(),
        row.content.replace('\n', " "),
    ]
}

/// Progress of an export or import on standard error, every 5,000 items.
fn progress(verb: &'static str) -> impl FnMut(clade_memory::archive::Progress) {
    let mut shown = 0;
    move |done| {
        if done.items >= shown + 5000 {
            shown = done.items;
            eprintln!("{verb} {} items", done.items);
        }
    }
}

/// What every `clade memory` command acts on: the selected agent, its tenant's store, and
/// the CLI's context.
struct Mind<'a> {
    ctx: &'a Ctx,
    tenant: clade_core::Tenant,
    agent: clade_core::Agent,
    store: clade_store::TenantStore,
}

impl Mind<'_> {
    /// The memory service clade.yaml sets up, or why there is none.
    fn memory(&self) -> Result<std::sync::Arc<clade_memory::Memory>> {
        let models = self.ctx.data_dir.models_dir();
        let config = &self.ctx.config;
        clade_runtime::memory::memory_of(config, &env_hints(config), &models).context(
            "agents have no memory here: set `memory.enabled: true` in clade.yaml (it is the default)",
        )
    }
}

/// An isolation key as given (`None` when absent or empty), checked.
fn scoped(scope: Option<String>) -> Result<Option<String>> {
    let scope = scope.filter(|s| !s.is_empty());
    if let Some(key) = &scope {
        clade_store::memories::check_scope(key)?;
    }
    Ok(scope)
}

/// A memory id as given, or an error saying where ids are listed.
fn memory_id(id: &str, listed_by: &str) -> Result<MemoryId> {
    id.parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a memory id: list them with `{listed_by}`"))
}

pub(super) async fn run(ctx: &Ctx, cmd: MemoryCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    let agent = ctx.agent(None).await?;
    let store = ctx.store.tenant_scope(tenant.id);
    let mind = Mind { ctx, tenant, agent, store };
    match cmd {
        MemoryCommand::List { pruned: true, limit, json, .. } => {
            list_pruned(&mind, limit, json).await
        }
        MemoryCommand::List { scope, kind, limit, json, pruned: false } => {
            list(&mind, scope, kind, limit, json).await
        }
        MemoryCommand::Search { query, scope, limit, json } => {
            search(&mind, &query, scope, limit, json).await
        }
        MemoryCommand::Add { content, kind, scope, importance, json } => {
            add(&mind, content, &kind, scope, importance, json).await
        }
        MemoryCommand::Rm { id } => forget(&mind, &id).await,
        MemoryCommand::Restore { id, json } => restore(&mind, &id, json).await,
        MemoryCommand::Upkeep { json } => upkeep(&mind, json).await,
        MemoryCommand::Reembed => reembed(&mind).await,
        MemoryCommand::Export { output } => export(&mind, output.as_deref()).await,
        MemoryCommand::Import { file, json } => import(&mind, &file, json).await,
        // Dispatched before a store is opened (commands/ingest_service.rs).
        MemoryCommand::IngestService(_) => Ok(()),
    }
}

/// `clade memory list --pruned`: the items upkeep pruned, with why.
async fn list_pruned(mind: &Mind<'_>, limit: u32, json: bool) -> Result<()> {
    let rows = mind.store.memories().pruned(mind.agent.id, limit.clamp(1, 1000)).await?;
    if json {
        return output::json(&rows.iter().map(row_json).collect::<Vec<_>>());
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = row_cells(row);
            let pruned = row.pruned.as_ref();
            cells.push(pruned.map(|p| p.why.clone()).unwrap_or_default());
            cells
        })
        .collect();
    output::table(&["ID", "KIND", "UPDATED", "CONTENT", "PRUNED"], &rows);
    Ok(())
}

/// `clade memory list`: the live items, of one isolation key or kind when given.
async fn list(
    mind: &Mind<'_>,
    scope: Option<String>,
    kind: Option<String>,
    limit: u32,
    json: bool,
) -> Result<()> {
    let key = scoped(scope)?;
    let filter = MemoryFilter {
        exclude_global: key.is_some(),
        scope: key,
        kinds: kind.as_deref().map(kind_of).transpose()?.into_iter().collect(),
        since: None,
    };
    let rows =
        mind.store.memories().list(mind.agent.id, &filter, None, limit.clamp(1, 1000)).await?;
    if json {
        return output::json(&rows.iter().map(row_json).collect::<Vec<_>>());
    }
    let rows: Vec<Vec<String>> = rows.iter().map(row_cells).collect();
    output::table(&["ID", "KIND", "UPDATED", "CONTENT"], &rows);
    Ok(())
}

/// `clade memory search`: a recall as a turn makes one, with why each item was found.
async fn search(
    mind: &Mind<'_>,
    query: &str,
    scope: Option<String>,
    limit: u32,
    json: bool,
) -> Result<()> {
    let memory = mind.memory()?;
    let filter = MemoryFilter { scope: scoped(scope)?, ..MemoryFilter::default() };
    let hits = memory
        .recall(&mind.store, mind.agent.id, &filter, query, limit.clamp(1, 50) as usize)
        .await?;
    if json {
        let items: Vec<_> = hits
            .iter()
            .map(|hit| {
                let mut item = row_json(&hit.item);
                item["score"] = hit.score.into();
                item["why"] = hit.reasons.iter().map(clade_memory::Reason::describe).collect();
                item
            })
            .collect();
        return output::json(&items);
    }
    let rows: Vec<Vec<String>> = hits
        .iter()
        .map(|hit| {
            let mut cells = row_cells(&hit.item);
            let why: Vec<String> = hit.reasons.iter().map(clade_memory::Reason::describe).collect();
            cells.push(why.join("; "));
            cells
        })
        .collect();
    output::table(&["ID", "KIND", "UPDATED", "CONTENT", "WHY"], &rows);
    if memory.embedding_model().is_none() {
        eprintln!("(full text only: set memory.embeddings in clade.yaml to match by meaning too)");
    }
    Ok(())
}

/// `clade memory add`: an item the operator states, saved as a turn's would be.
async fn add(
    mind: &Mind<'_>,
    content: String,
    kind: &str,
    scope: Option<String>,
    importance: f64,
    json: bool,
) -> Result<()> {
    let memory = mind.memory()?;
    let new = NewMemory {
        agent: mind.agent.id,
        scope: scoped(scope)?.unwrap_or_default(),
        kind: kind_of(kind)?,
        content,
        importance,
        confidence: 0.8,
        provenance: Provenance { by: mind.ctx.store.actor().to_owned(), ..Provenance::default() },
        untrusted: false,
        embedding: None,
    };
    let saved = memory.save(&mind.store, new).await?;
    if json {
        return output::json(&row_json(&saved.item));
    }
    match saved.outcome {
        clade_memory::Outcome::Created => println!("saved {}", saved.item.id),
        clade_memory::Outcome::Merged => {
            println!("updated {}: it repeated that item", saved.item.id)
        }
        clade_memory::Outcome::Linked { to } => {
            println!("saved {}, linked to the similar item {to}", saved.item.id)
        }
    }
    Ok(())
}

/// `clade memory rm`.
async fn forget(mind: &Mind<'_>, id: &str) -> Result<()> {
    let parsed = memory_id(id, "clade memory list")?;
    match mind.store.memories().forget(mind.agent.id, parsed).await {
        Err(clade_store::Error::MemoryNotFound(_)) => anyhow::bail!(
            "agent {} has no memory {id}: list them with `clade memory list`",
            mind.agent.handle
        ),
        other => other?,
    }
    println!("forgot {id}");
    Ok(())
}

/// `clade memory restore`: a pruned item back, as if just used; one that is not pruned stays
/// as it is (as `POST …/memories/{id}/restore` answers).
async fn restore(mind: &Mind<'_>, id: &str, json: bool) -> Result<()> {
    let parsed = memory_id(id, "clade memory list --pruned")?;
    let (agent, store) = (&mind.agent, &mind.store);
    let row = match store.memories().restore(agent.id, parsed).await {
        Err(clade_store::Error::MemoryNotFound(_)) => {
            match store.memories().get(agent.id, parsed).await {
                Err(clade_store::Error::MemoryNotFound(_)) => anyhow::bail!(
                    "agent {} has no memory {id}, pruned or not: list the pruned with `clade memory list --pruned`",
                    agent.handle
                ),
                other => other?,
            }
        }
        other => other?,
    };
    if json {
        return output::json(&row_json(&row));
    }
    println!("restored {id}");
    Ok(())
}

/// `clade memory upkeep`: merge, fade, prune and purge now (consolidation is the gateway's).
async fn upkeep(mind: &Mind<'_>, json: bool) -> Result<()> {
    let memory = mind.memory()?;
    let policy = clade_runtime::memory::upkeep_policy(&mind.ctx.config.memory.upkeep);
    let agent = &mind.agent;
    let since = mind.store.memories().upkeep_ran(agent.id).await?;
    // Consolidating calls the cortex model route, which the gateway runs.
    let report = memory.upkeep(&mind.store, agent.id, since, &policy, None).await?;
    if policy.consolidate_at > 0 {
        eprintln!(
            "(consolidation runs in the gateway: POST /v1/agents/{}/memories/upkeep)",
            agent.handle
        );
    }
    if json {
        return output::json(&serde_json::json!({
            "merged": report.merged, "faded": report.faded, "pruned": report.pruned,
            "purged": report.purged, "live": report.live,
            "next_due": report.next_due.map(|t| t.to_string()),
        }));
    }
    println!(
        "agent {}: {} repeats merged, {} items faded, {} pruned, {} purged; {} live",
        agent.handle, report.merged, report.faded, report.pruned, report.purged, report.live
    );
    match report.next_due {
        Some(at) => println!("next upkeep due at {at}"),
        None => println!("next upkeep after its next write"),
    }
    Ok(())
}

/// `clade memory reembed`: every item embedded with the current embeddings model, in batches,
/// each one said as it is done.
async fn reembed(mind: &Mind<'_>) -> Result<()> {
    let memory = mind.memory()?;
    let Some(model) = memory.embedding_model().map(str::to_owned) else {
        anyhow::bail!(
            "no embeddings model to embed with: install the local one with `clade models fetch`, or set memory.embeddings in clade.yaml"
        );
    };
    let mut done = 0;
    loop {
        let batch = memory.reembed(&mind.store, mind.agent.id, 256).await?;
        if batch == 0 {
            break;
        }
        done += batch;
        eprintln!("embedded {done} items with {model}");
    }
    println!("{done} items of agent {} embedded with {model}", mind.agent.handle);
    Ok(())
}

/// `clade memory export`.
async fn export(mind: &Mind<'_>, output: Option<&std::path::Path>) -> Result<()> {
    let handle = mind.agent.handle.to_string();
    let (tenant, agent) = (mind.tenant.id, mind.agent.id);
    let mut show = progress("exported");
    let done = crate::output::write_whole(output, async |out| {
        clade_memory::archive::export(&mind.ctx.store, tenant, agent, &handle, out, &mut show).await
    })
    .await?;
    eprintln!("exported {} items and {} links of agent {handle}", done.items, done.links);
    Ok(())
}

/// `clade memory import`: all or nothing.
async fn import(mind: &Mind<'_>, file: &std::path::Path, json: bool) -> Result<()> {
    let mut show = progress("imported");
    let (tenant, agent) = (mind.tenant.id, mind.agent.id);
    let report = clade_memory::archive::import(&mind.ctx.store, tenant, agent, file, &mut show)
        .await
        .with_context(|| {
            format!("{} was not imported (nothing of it was written)", file.display())
        })?;
    if json {
        return output::json(&serde_json::json!({
            "from_agent": report.from_agent, "items": report.items,
            "present": report.present, "renamed": report.renamed, "links": report.links,
        }));
    }
    println!(
        "imported {} items and {} links from agent {}'s export into {}{}{}",
        report.items,
        report.links,
        report.from_agent,
        mind.agent.handle,
        if report.present > 0 {
            format!("; {} were there already", report.present)
        } else {
            String::new()
        },
        if report.renamed > 0 {
            format!("; {} got new ids (another agent holds theirs)", report.renamed)
        } else {
            String::new()
        },
    );
    Ok(())
}
