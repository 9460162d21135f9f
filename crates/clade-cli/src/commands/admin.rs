//! Tenants, tokens and secrets.

use std::io::Read;

use anyhow::{Context as _, Result, bail};
use clade_core::{SecretName, TokenId};
use serde_json::json;

use crate::cli::{SecretsCommand, TenantsCommand, TokensCommand};
use crate::context::Ctx;
use crate::output;

/// Largest secret value accepted from standard input.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

pub(super) async fn tenants(ctx: &Ctx, cmd: TenantsCommand) -> Result<()> {
    match cmd {
        TenantsCommand::Create { name } => {
            let tenant = ctx.store.tenants().create(&name).await?;
            println!("created tenant {} ({})", tenant.name, tenant.id);
            println!("give it an API token with `clade tokens create --tenant {}`", tenant.name);
        }
        TenantsCommand::List { json } => {
            let tenants = ctx.store.tenants().list().await?;
            if json {
                let items: Vec<_> = tenants
                    .iter()
                    .map(|t| json!({ "id": t.id.to_string(), "name": t.name.as_str(), "created_at": t.created_at.as_millis() }))
                    .collect();
                output::json(&items)?;
            } else {
                let rows: Vec<_> = tenants
                    .iter()
                    .map(|t| vec![t.name.to_string(), t.created_at.to_string(), t.id.to_string()])
                    .collect();
                output::table(&["NAME", "CREATED", "ID"], &rows);
            }
        }
        TenantsCommand::Delete { name, yes } => {
            if !yes {
                bail!("refusing to delete tenant {name:?} with all its agents without --yes");
            }
            let id = ctx.store.tenants().named(&name).await?.id;
            let agents = ctx.store.tenants().delete(&name).await?;
            ctx.agents.remove_workspaces(&agents);
            let shared = ctx.data_dir.shared_dir().join(id.to_string());
            if let Err(err) = std::fs::remove_dir_all(&shared)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("warning: cannot remove {} ({err}): remove it by hand", shared.display());
            }
            println!("deleted tenant {name} and {} agent(s)", agents.len());
        }
    }
    Ok(())
}

pub(super) async fn tokens(ctx: &Ctx, cmd: TokensCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    match cmd {
        TokensCommand::Create { name, scopes, only_agents, expires_in } => {
            let expires_at = expires_in.map(|after| ctx.store.now().plus(after));
            let scopes = match (scopes.is_empty(), only_agents.is_empty()) {
                (false, _) => {
                    clade_core::Scope::split(&scopes.join(",")).map_err(anyhow::Error::msg)?
                }
                (true, true) => vec![clade_core::Scope::Admin],
                (true, false) => vec![clade_core::Scope::Operate],
            };
            let mut agents = Vec::new();
            for handle in &only_agents {
                agents.push(ctx.store.agents(tenant.id).get(handle).await?.id);
            }
            let agents = (!agents.is_empty()).then_some(agents.as_slice());
            let (info, secret) =
                ctx.store.tokens(tenant.id).create(&name, &scopes, agents, expires_at).await?;
            eprintln!(
                "token {} for tenant {} (shown once; store it safely):",
                info.id, tenant.name
            );
            println!("{secret}");
        }
        TokensCommand::List { json } => {
            let tokens = ctx.store.tokens(tenant.id).list().await?;
            let now = ctx.store.now();
            // A limited token's agents by handle; one deleted since shows as such.
            let mut handles = std::collections::HashMap::new();
            for id in tokens.iter().filter_map(|t| t.agents.as_ref()).flatten() {
                if !handles.contains_key(id) {
                    let handle = match ctx.store.agents(tenant.id).by_id(*id).await {
                        Ok(agent) => agent.handle.to_string(),
                        Err(clade_store::Error::AgentNotFound(_)) => format!("(deleted {id})"),
                        Err(err) => return Err(err.into()),
                    };
                    handles.insert(*id, handle);
                }
            }
            let agents_of = |t: &clade_store::TokenInfo| -> Option<Vec<String>> {
                t.agents.as_ref().map(|ids| {
                    ids.iter().map(|id| handles.get(id).cloned().unwrap_or_default()).collect()
                })
            };
            if json {
                let items: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        json!({
                            "id": t.id.to_string(),
                            "name": t.name,
                            "scopes": t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                            "agents": agents_of(t),
                            "created_at": t.created_at.as_millis(),
                            "revoked_at": t.revoked_at.map(|r| r.as_millis()),
                            "expires_at": t.expires_at.map(|r| r.as_millis()),
                        })
                    })
                    .collect();
                output::json(&items)?;
            } else {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            clade_core::Scope::join(&t.scopes),
                            agents_of(t).map_or_else(|| "all".to_owned(), |a| a.join(",")),
                            t.created_at.to_string(),
                            match (t.revoked_at, t.expires_at) {
                                (Some(at), _) => format!("revoked {at}"),
                                (None, Some(at)) if at <= now => format!("expired {at}"),
                                (None, Some(at)) => format!("active until {at}"),
                                (None, None) => "active".into(),
                            },
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "SCOPES", "AGENTS", "CREATED", "STATE"], &rows);
                other_tenants_tokens(ctx, &tenant).await?;
            }
        }
        TokensCommand::Revoke { id } => {
            let id = TokenId::parse(&id)?;
            ctx.store.tokens(tenant.id).revoke(id).await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

/// Says on stderr which other tenants have tokens, when `--tenant` named none: a list of the
/// default tenant's tokens would otherwise hide the ones just made for another.
async fn other_tenants_tokens(ctx: &Ctx, shown: &clade_core::Tenant) -> Result<()> {
    if ctx.tenant_named() {
        return Ok(());
    }
    let mut others = Vec::new();
    for tenant in ctx.store.tenants().list().await? {
        if tenant.id == shown.id {
            continue;
        }
        let count = ctx.store.tokens(tenant.id).list().await?.len();
        if count > 0 {
            others.push(format!("{} ({count})", tenant.name));
        }
    }
    if !others.is_empty() {
        eprintln!(
            "these are tenant {}'s tokens; other tenants have some too: {} (pass --tenant NAME)",
            shown.name,
            others.join(", ")
        );
    }
    Ok(())
}

pub(super) async fn secrets(ctx: &Ctx, cmd: SecretsCommand) -> Result<()> {
    let agent = ctx.agent(None).await?;
    let secrets = ctx.secrets();
    match cmd {
        SecretsCommand::Set { name } => {
            let name = SecretName::parse(&name)?;
            let mut value = Vec::new();
            std::io::stdin()
                .take(MAX_SECRET_BYTES + 1)
                .read_to_end(&mut value)
                .context("cannot read the secret value from standard input")?;
            if value.len() as u64 > MAX_SECRET_BYTES {
                bail!("secret value is larger than 64 KiB");
            }
            // A value typed or piped with `echo` ends in a newline that is not part of it.
            while value.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                value.pop();
            }
            if value.is_empty() {
                bail!(
                    "empty secret value: pipe it on standard input, e.g. `printf %s \"$KEY\" | clade secrets set {name}`"
                );
            }
            secrets.set(&agent, &name, &value).await?;
            println!("set secret {name} for agent {}", agent.handle);
        }
        SecretsCommand::List { json } => {
            let list = secrets.list(&agent).await?;
            if json {
                let items: Vec<_> = list
                    .iter()
                    .map(|s| json!({ "name": s.name.as_str(), "created_at": s.created_at.as_millis(), "updated_at": s.updated_at.as_millis() }))
                    .collect();
                output::json(&items)?;
            } else {
                let rows: Vec<_> = list
                    .iter()
                    .map(|s| {
                        vec![s.name.to_string(), s.created_at.to_string(), s.updated_at.to_string()]
                    })
                    .collect();
                output::table(&["NAME", "CREATED", "UPDATED"], &rows);
            }
        }
        SecretsCommand::Rm { name } => {
            let name = SecretName::parse(&name)?;
            secrets.remove(&agent, &name).await?;
            println!("removed secret {name} from agent {}", agent.handle);
        }
    }
    Ok(())
}

/// Reports what opening the store for migration did (the upgrade itself ran at open).
/// `clade migrate --rewrite-checksums`: accepts a SQLite file as it is.
pub(super) fn rewrite_checksums(location: &clade_store::Location) -> Result<()> {
    let clade_store::Location::Sqlite(path) = location else {
        anyhow::bail!(
            "--rewrite-checksums is for a SQLite store; PostgreSQL checks its own pages (a \
             cluster made with `initdb --data-checksums`)"
        );
    };
    println!("{}: rewriting page checksums…", path.display());
    let done = clade_store::checksums::rewrite(path)?;
    if done.added {
        println!("{}: page checksums added to {} pages", path.display(), done.pages);
    } else {
        println!(
            "{}: {} of {} pages had a checksum that did not match; all match now",
            path.display(),
            done.rewritten,
            done.pages
        );
    }
    Ok(())
}

pub(super) fn migrate(ctx: &Ctx) -> Result<()> {
    match ctx.store.page_checksums() {
        Some(clade_store::PageChecksums::Added) => {
            println!("{}: page checksums added", ctx.store.location());
        }
        Some(clade_store::PageChecksums::Absent) => println!(
            "{}: pages carry no checksums (a server holds the store, or its pages reserve room \
             for something else)",
            ctx.store.location()
        ),
        Some(clade_store::PageChecksums::On) | None => {}
    }
    let report = ctx.store.migrated();
    if report.from == report.to {
        println!("{}: schema at version {}, nothing to do", ctx.store.location(), report.to);
    } else {
        println!(
            "{}: schema upgraded from version {} to {}",
            ctx.store.location(),
            report.from,
            report.to
        );
    }
    Ok(())
}
