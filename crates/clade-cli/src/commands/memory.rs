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

pub(super) async fn run(ctx: &Ctx, cmd: MemoryCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    let agent = ctx.agent(None).await?;
    let store = ctx.store.tenant_scope(tenant.id);
    let memory = || {
        let models = ctx.data_dir.models_dir();
        clade_runtime::memory::memory_of(&ctx.config, &env_hints(&ctx.config), &models).context(
            "agents have no memory here: set `memory.enabled: true` in clade.yaml (it is the default)",
        )
    };
    let scoped = |scope: Option<String>| {
        let scope = scope.filter(|s| !s.is_empty());
        if let Some(key) = &scope {
            clade_store::memories::check_scope(key)?;
        }
        Ok::<_, clade_store::Error>(scope)
    };
    match cmd {
        MemoryCommand::List { pruned: true, limit, json, .. } => {
            let rows = store.pruned_memories(agent.id, limit.clamp(1, 1000)).await?;
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
        }
        MemoryCommand::List { scope, kind, limit, json, pruned: false } => {
            let key = scoped(scope)?;
            let filter = MemoryFilter {
                exclude_global: key.is_some(),
                scope: key,
                kinds: kind.as_deref().map(kind_of).transpose()?.into_iter().collect(),
                since: None,
            };
            let rows = store.memories(agent.id, &filter, None, limit.clamp(1, 1000)).await?;
            if json {
                return output::json(&rows.iter().map(row_json).collect::<Vec<_>>());
            }
            let rows: Vec<Vec<String>> = rows.iter().map(row_cells).collect();
            output::table(&["ID", "KIND", "UPDATED", "CONTENT"], &rows);
        }
        MemoryCommand::Search { query, scope, limit, json } => {
            let memory = memory()?;
            let filter = MemoryFilter { scope: scoped(scope)?, ..MemoryFilter::default() };
            let hits = memory
                .recall(&store, agent.id, &filter, &query, limit.clamp(1, 50) as usize)
                .await?;
            if json {
                let items: Vec<_> = hits
                    .iter()
                    .map(|hit| {
                        let mut item = row_json(&hit.item);
                        item["score"] = hit.score.into();
                        item["why"] =
                            hit.reasons.iter().map(clade_memory::Reason::describe).collect();
                        item
                    })
                    .collect();
                return output::json(&items);
            }
            let rows: Vec<Vec<String>> = hits
                .iter()
                .map(|hit| {
                    let mut cells = row_cells(&hit.item);
                    let why: Vec<String> =
                        hit.reasons.iter().map(clade_memory::Reason::describe).collect();
                    cells.push(why.join("; "));
                    cells
                })
                .collect();
            output::table(&["ID", "KIND", "UPDATED", "CONTENT", "WHY"], &rows);
            if memory.embedding_model().is_none() {
                eprintln!(
                    "(full text only: set memory.embeddings in clade.yaml to match by meaning too)"
                );
            }
        }
        MemoryCommand::Add { content, kind, scope, importance, json } => {
            let memory = memory()?;
            let new = NewMemory {
                agent: agent.id,
                scope: scoped(scope)?.unwrap_or_default(),
                kind: kind_of(&kind)?,
                content,
                importance,
                confidence: 0.8,
                provenance: Provenance {
                    by: ctx.store.actor().to_owned(),
                    ..Provenance::default()
                },
                untrusted: false,
                embedding: None,
            };
            let saved = memory.save(&store, new).await?;
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
        }
        MemoryCommand::Rm { id } => {
            let parsed: MemoryId = id.parse().map_err(|_| {
                anyhow::anyhow!("{id:?} is not a memory id: list them with `clade memory list`")
            })?;
            match store.forget_memory(agent.id, parsed).await {
                Err(clade_store::Error::MemoryNotFound(_)) => anyhow::bail!(
                    "agent {} has no memory {id}: list them with `clade memory list`",
                    agent.handle
                ),
                other => other?,
            }
            println!("forgot {id}");
        }
        MemoryCommand::Restore { id, json } => {
            let parsed: MemoryId = id.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{id:?} is not a memory id: list the pruned with `clade memory list --pruned`"
                )
            })?;
            let row = match store.restore_memory(agent.id, parsed).await {
                Err(clade_store::Error::MemoryNotFound(_)) => anyhow::bail!(
                    "agent {} has no pruned memory {id}: list them with `clade memory list --pruned`",
                    agent.handle
                ),
                other => other?,
            };
            if json {
                return output::json(&row_json(&row));
            }
            println!("restored {id}");
        }
        MemoryCommand::Upkeep { json } => {
            let memory = memory()?;
            let policy = clade_runtime::memory::upkeep_policy(&ctx.config.memory.upkeep);
            let since = store.memory_upkeep_ran(agent.id).await?;
            // Consolidating calls the cortex model route, which the gateway runs.
            let report = memory.upkeep(&store, agent.id, since, &policy, None).await?;
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
                agent.handle,
                report.merged,
                report.faded,
                report.pruned,
                report.purged,
                report.live
            );
            match report.next_due {
                Some(at) => println!("next upkeep due at {at}"),
                None => println!("next upkeep after its next write"),
            }
        }
        MemoryCommand::Reembed => {
            let memory = memory()?;
            let Some(model) = memory.embedding_model().map(str::to_owned) else {
                anyhow::bail!(
                    "no embeddings model to embed with: install the local one with `clade models fetch`, or set memory.embeddings in clade.yaml"
                );
            };
            let mut done = 0;
            loop {
                let batch = memory.reembed(&store, agent.id, 256).await?;
                if batch == 0 {
                    break;
                }
                done += batch;
                eprintln!("embedded {done} items with {model}");
            }
            println!("{done} items of agent {} embedded with {model}", agent.handle);
        }
        MemoryCommand::Export { output } => {
            let handle = agent.handle.to_string();
            let mut show = progress("exported");
            let done = crate::output::write_whole(output.as_deref(), async |out| {
                clade_memory::archive::export(
                    &ctx.store, tenant.id, agent.id, &handle, out, &mut show,
                )
                .await
            })
            .await?;
            eprintln!("exported {} items and {} links of agent {handle}", done.items, done.links);
        }
        MemoryCommand::Import { file, json } => {
            let mut show = progress("imported");
            let report =
                clade_memory::archive::import(&ctx.store, tenant.id, agent.id, &file, &mut show)
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
                agent.handle,
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
        }
        // Dispatched before a store is opened (commands/ingest_service.rs).
        MemoryCommand::IngestService(_) => {}
    }
    Ok(())
}
