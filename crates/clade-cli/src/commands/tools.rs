//! `clade tools|approvals|grants|audit`: the operator's side of tool permissions, run against
//! the store directly (a running gateway sees every change on its next call).

use anyhow::{Result, bail};
use clade_config::{Constraints, PolicyEffect, PolicyRule};
use clade_core::{ApprovalId, GrantId};
use clade_runtime::{CallOrigin, Verdict};
use clade_store::{ApprovalStatus, AuditFilter};
use serde_json::{Value, json};

use crate::cli::{ApprovalsCommand, AuditArgs, GrantsCommand, ToolsCommand};
use crate::commands::models::parse_since;
use crate::context::Ctx;
use crate::output;

pub(super) async fn run(ctx: &Ctx, cmd: ToolsCommand) -> Result<()> {
    let agent = ctx.agent(None).await?;
    let runner = ctx.tools().await;
    match cmd {
        ToolsCommand::List { json } => {
            let rules = runner.rules_for(&agent).await?;
            let set = runner.tool_set();
            let tools: Vec<_> =
                set.registry().for_agent(ctx.tenant_name(), agent.handle.as_str()).collect();
            if json {
                let items: Vec<Value> = tools
                    .iter()
                    .map(|t| json!({ "name": t.name(), "description": t.description(), "effect": t.effect().as_str(), "touches_host": t.touches_host(), "input_schema": t.input_schema() }))
                    .collect();
                return output::json(&items);
            }
            let rows: Vec<Vec<String>> = tools
                .iter()
                .map(|t| {
                    // What a call on any resource gets, as a hint; rules may narrow by resource.
                    let decision = clade_tools::policy::decide(
                        &rules,
                        t.name(),
                        clade_tools::policy::Target::Text("*"),
                        t.needs_grant(),
                    );
                    vec![
                        t.name().to_owned(),
                        arguments_of(&t.input_schema()),
                        t.effect().as_str().to_owned(),
                        if t.touches_host() { "yes" } else { "no" }.to_owned(),
                        decision.effect.as_str().to_owned(),
                        t.description().to_owned(),
                    ]
                })
                .collect();
            output::table(
                &["TOOL", "ARGUMENTS", "EFFECT", "HOST", "POLICY (*)", "DESCRIPTION"],
                &rows,
            );
        }
        ToolsCommand::Call { name, args, json } => {
            let arguments: Value = serde_json::from_str(&args)
                .map_err(|e| anyhow::anyhow!("--args is not valid JSON: {e}"))?;
            if !arguments.is_object() {
                bail!("--args must be a JSON object, such as '{{\"path\": \"notes.md\"}}'");
            }
            let set = runner.tool_set();
            if set.registry().get_for(&name, ctx.tenant_name(), agent.handle.as_str()).is_none() {
                bail!(
                    "agent {} has no tool {name:?}: list them with `clade tools list`",
                    agent.handle
                );
            }
            let origin = CallOrigin::operator(ctx.store.now());
            let waiting = tokio::spawn(announce_wait(
                ctx.store.clone(),
                agent.tenant_id,
                origin.call_key.clone(),
            ));
            let outcome = runner.call(&agent, &name, arguments, &origin).await;
            waiting.abort();
            if json {
                output::json(
                    &json!({ "content": outcome.content, "is_error": outcome.is_error, "decision": outcome.decision.as_str() }),
                )?;
            } else {
                println!("{}", outcome.content);
            }
            if outcome.is_error {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// Tells the operator when their call waits for approval, and how to give it.
async fn announce_wait(store: clade_store::Store, tenant: clade_core::TenantId, key: String) {
    for _ in 0..600 {
        store.clock().sleep(std::time::Duration::from_millis(200)).await;
        if let Ok(approval) = store.access(tenant).approval_by_call(&key).await {
            eprintln!(
                "waiting for approval {}: run `clade approvals approve {}` (or `deny`) in another terminal",
                approval.id, approval.id
            );
            return;
        }
    }
}

pub(super) async fn approvals(ctx: &Ctx, cmd: ApprovalsCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    let runner = ctx.tools().await;
    let (id, verdict, note) = match cmd {
        ApprovalsCommand::List { status, json } => {
            let filter = match status.as_str() {
                "all" => None,
                other => Some(ApprovalStatus::parse(other).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown --status {other:?}: use pending, approved, denied, expired, cancelled or all"
                    )
                })?),
            };
            let rows = ctx.store.access(tenant.id).approvals(None, filter, 1000).await?;
            if json {
                let items: Vec<Value> = rows
                    .iter()
                    .map(|a| json!({ "id": a.id.to_string(), "tool": a.tool, "resource": a.resource, "arguments": serde_json::from_str::<Value>(&a.arguments).unwrap_or(Value::Null), "arguments_hash": a.arguments_hash, "status": a.status.as_str(), "reason": a.reason, "expires_at": a.expires_at.as_millis() }))
                    .collect();
                return output::json(&items);
            }
            if rows.is_empty() {
                println!("no {status} approvals in tenant {}", tenant.name);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.status.as_str().to_owned(),
                        a.tool.clone(),
                        a.arguments.clone(),
                        a.expires_at.to_string(),
                    ]
                })
                .collect();
            // The exact arguments, never a summary: what is approved is what runs.
            output::table(&["ID", "STATUS", "TOOL", "ARGUMENTS", "EXPIRES"], &rows);
            return Ok(());
        }
        ApprovalsCommand::Approve { id, always, note } => {
            (id, if always { Verdict::ApproveAlways } else { Verdict::Approve }, note)
        }
        ApprovalsCommand::Deny { id, note } => (id, Verdict::Deny, note),
    };
    let id = ApprovalId::parse(&id)?;
    let row = runner.decide(tenant.id, id, verdict, "operator (cli)", note).await?;
    println!("{} {}: {} {}", row.status.as_str(), row.id, row.tool, row.arguments);
    if verdict == Verdict::ApproveAlways {
        println!("added a grant allowing {} on {:?} for this agent", row.tool, row.resource);
    }
    Ok(())
}

pub(super) async fn grants(ctx: &Ctx, cmd: GrantsCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    match cmd {
        GrantsCommand::List { json } => {
            let agent = match ctx.explicit_agent() {
                Some(handle) => Some(ctx.store.agents(tenant.id).get(handle).await?.id),
                None => None,
            };
            let rows = ctx.store.access(tenant.id).grants(agent).await?;
            let now = ctx.store.now();
            if json {
                let items: Vec<Value> = rows
                    .iter()
                    .map(|g| json!({ "id": g.id.to_string(), "agent_id": g.agent_id.to_string(), "effect": g.effect, "tool": g.tool, "resource": g.resource, "constraints": serde_json::from_str::<Value>(&g.constraints).unwrap_or(Value::Null), "parent": g.parent_id.map(|p| p.to_string()), "granted_by": g.granted_by, "live": g.is_live(now) }))
                    .collect();
                return output::json(&items);
            }
            let mut table = Vec::new();
            for g in &rows {
                let agent = ctx
                    .store
                    .agents(tenant.id)
                    .by_id(g.agent_id)
                    .await
                    .map(|a| a.handle.to_string())
                    .unwrap_or_else(|_| "(deleted agent)".to_owned());
                let state = match (g.revoked_at, g.expires_at) {
                    (Some(_), _) => "revoked".to_owned(),
                    (None, Some(at)) if at <= now => "expired".to_owned(),
                    (None, Some(at)) => format!("until {at}"),
                    (None, None) => "live".to_owned(),
                };
                table.push(vec![
                    g.id.to_string(),
                    agent,
                    g.effect.clone(),
                    g.tool.clone(),
                    g.resource.clone(),
                    g.constraints.clone(),
                    state,
                ]);
            }
            output::table(
                &["ID", "AGENT", "EFFECT", "TOOL", "RESOURCE", "CONSTRAINTS", "STATE"],
                &table,
            );
        }
        GrantsCommand::Add {
            tool,
            resource,
            effect,
            network,
            private_network,
            hosts,
            env,
            parent,
            expires_in,
        } => {
            let agent = ctx.agent(None).await?;
            let effect = PolicyEffect::parse(&effect).ok_or_else(|| {
                anyhow::anyhow!("unknown --effect {effect:?}: use allow, ask or deny")
            })?;
            let parent = parent.as_deref().map(GrantId::parse).transpose()?;
            let expires_at = expires_in.map(|after| ctx.store.now().plus(after));
            let rule = PolicyRule {
                effect,
                tool,
                resource,
                constraints: Constraints { network, private_network, hosts, env },
            };
            let grant = ctx
                .tools()
                .await
                .add_grant(&agent, rule, parent, expires_at, "operator (cli)")
                .await?;
            println!(
                "granted {} {} on {:?} to {} ({})",
                grant.effect, grant.tool, grant.resource, agent.handle, grant.id
            );
        }
        GrantsCommand::Revoke { id } => {
            let id = GrantId::parse(&id)?;
            ctx.tools().await.revoke_grant(tenant.id, id, "operator (cli)").await?;
            println!("revoked grant {id} (and every grant delegated from it)");
        }
    }
    Ok(())
}

pub(super) async fn audit(ctx: &Ctx, args: AuditArgs) -> Result<()> {
    let tenant = ctx.tenant().await?;
    if args.verify {
        let result = ctx.store.access(tenant.id).verify_audit().await?;
        return match result.broken {
            None => {
                println!(
                    "audit log of tenant {} verified: {} records, chain intact",
                    tenant.name, result.records
                );
                Ok(())
            }
            Some((seq, why)) => bail!(
                "audit log of tenant {} is BROKEN at record {seq}: {why} ({} records verified before it)",
                tenant.name,
                result.records
            ),
        };
    }
    let agent = match ctx.explicit_agent() {
        Some(handle) => Some(ctx.store.agents(tenant.id).get(handle).await?.id),
        None => None,
    };
    let since = args.since.as_deref().map(|s| parse_since(s, ctx.store.now())).transpose()?;
    let filter =
        AuditFilter { agent, tool: args.tool, since, until: None, after: None, limit: args.limit };
    let rows = ctx.store.access(tenant.id).audit_records(&filter).await?;
    if args.json {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| json!({ "seq": r.seq, "at": r.at.as_millis(), "agent_id": r.agent_id.map(|a| a.to_string()), "kind": r.kind, "tool": r.tool, "decision": r.decision, "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null), "hash": r.hash }))
            .collect();
        return output::json(&items);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                r.at.to_string(),
                r.kind.clone(),
                r.tool.clone().unwrap_or_default(),
                r.decision.clone().unwrap_or_default(),
                r.detail.chars().take(120).collect(),
            ]
        })
        .collect();
    output::table(&["SEQ", "AT", "KIND", "TOOL", "DECISION", "DETAIL"], &table);
    Ok(())
}

pub(super) async fn settings(ctx: &Ctx, cmd: crate::cli::SettingsCommand) -> Result<()> {
    use crate::cli::SettingsCommand;
    let tenant = ctx.tenant().await?;
    let agent = ctx.agent(None).await?;
    match cmd {
        SettingsCommand::List { json } => {
            let settings = ctx.settings.read(&ctx.store, tenant.id, agent.id).await?;
            if json {
                let items: Vec<_> = settings
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "key": s.key,
                            "value": s.value,
                            "source": s.source.as_str(),
                            "description": s.description,
                            "agent_writable": s.agent_writable,
                            "stored": s.stored.as_ref().map(|row| &row.value),
                        })
                    })
                    .collect();
                return output::json(&items);
            }
            let rows: Vec<Vec<String>> = settings
                .iter()
                .map(|s| {
                    let source = match &s.source {
                        clade_runtime::settings::Source::Environment(var) => format!("env {var}"),
                        other => other.as_str().to_owned(),
                    };
                    vec![s.key.clone(), s.value.to_string(), source, s.description.clone()]
                })
                .collect();
            output::table(&["KEY", "VALUE", "FROM", "DESCRIPTION"], &rows);
        }
        SettingsCommand::Set { key, value } => {
            let value = clade_runtime::settings::env_value(&value);
            ctx.store.settings(tenant.id).set(agent.id, &key, value).await?;
            match ctx.settings.overridden_by(&key) {
                Some(var) => println!(
                    "stored {key} for {}; {var} is set, and agents read its value while it is",
                    agent.handle
                ),
                None => println!("stored {key} for {}", agent.handle),
            }
        }
        SettingsCommand::Unset { key } => {
            match ctx.store.settings(tenant.id).unset(agent.id, &key).await {
                Err(clade_store::Error::SettingNotFound(_)) => anyhow::bail!(
                    "agent {} has no stored value of {key:?}: list its settings with `clade settings list`",
                    agent.handle
                ),
                other => other?,
            }
            println!("removed {key} for {}", agent.handle);
        }
    }
    Ok(())
}

/// A tool's arguments as a person reads them: each name, `?` after an optional one
/// (`path, content, append?`).
fn arguments_of(schema: &Value) -> String {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return String::new() };
    let mut names: Vec<String> =
        properties.keys().filter(|name| required.contains(&name.as_str())).cloned().collect();
    names.extend(
        properties
            .keys()
            .filter(|name| !required.contains(&name.as_str()))
            .map(|n| format!("{n}?")),
    );
    names.join(", ")
}
