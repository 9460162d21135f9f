use anyhow::{Result, bail};
use clade_config::Config;
use clade_gateway::config_flow::{self, Applied};

use crate::cli::{ConfigCommand, Global, HooksCommand};
use crate::context::{self, Ctx};
use crate::output;

/// Whether `cmd` works on the store's revisions (the others need no store).
pub(super) fn needs_store(cmd: &ConfigCommand) -> bool {
    !matches!(cmd, ConfigCommand::Schema | ConfigCommand::Validate { .. })
}

pub(super) fn run(global: &Global, cmd: &ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Schema => {
            println!("{}", serde_json::to_string_pretty(&Config::json_schema())?);
        }
        ConfigCommand::Validate { file } => {
            let (path, named) = match (file, &global.config) {
                (Some(path), _) | (None, Some(path)) => (path.clone(), true),
                (None, None) => {
                    (context::data_dir_path(global)?.join(clade_config::FILE_NAME), false)
                }
            };
            // The data dir's own clade.yaml is optional: without one, the defaults apply.
            if !named && !path.try_exists().unwrap_or(true) {
                println!("{}: absent, so the defaults apply: ok", path.display());
                return Ok(());
            }
            let config = Config::load(&path)?;
            // Heartbeats are jobs: checked as every job is.
            clade_sched::check_config(&config, clade_core::Clock::now(&clade_core::SystemClock))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!("{}: ok", path.display());
        }
        ConfigCommand::Apply { .. }
        | ConfigCommand::History { .. }
        | ConfigCommand::Diff { .. }
        | ConfigCommand::Revert { .. } => {}
    }
    Ok(())
}

/// `clade config apply|history|diff|revert`: the deployment's configuration revisions.
pub(super) async fn revisions(ctx: &Ctx, cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Apply { file, smoke } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                anyhow::anyhow!("cannot read {}: {e}; pass the file to apply", file.display())
            })?;
            let smoke: Option<config_flow::SmokeTest<'_>> =
                smoke.then(|| -> config_flow::SmokeTest<'_> {
                    Box::new(move |config: &Config| {
                        let models = ctx.models_of(config);
                        Box::pin(async move { Ok(smoke_test(ctx, models).await?) })
                    })
                });
            let trials = config_flow::Trials {
                environment: Some(std::sync::Arc::new(context::environment_check)),
                smoke,
            };
            let flow = config_flow::apply(&ctx.store, &ctx.config_path, &file, &text, None, trials);
            applied(ctx, flow.await?);
        }
        ConfigCommand::Revert { revision } => {
            let old = match ctx.store.config_revisions().get(revision).await {
                Err(clade_store::Error::ConfigRevisionNotFound(n)) => {
                    bail!(
                        "there is no configuration revision {n}: list them with `clade config history`"
                    )
                }
                other => other?,
            };
            let flow = config_flow::apply(
                &ctx.store,
                &ctx.config_path,
                &ctx.config_path,
                &old.yaml,
                Some(revision),
                config_flow::Trials {
                    environment: Some(std::sync::Arc::new(context::environment_check)),
                    smoke: None,
                },
            );
            applied(ctx, flow.await?);
        }
        ConfigCommand::History { limit, json } => {
            let revisions = ctx.store.config_revisions().list(limit).await?;
            if json {
                let items: Vec<_> = revisions
                    .iter()
                    .map(|r| {
                        serde_json::json!({ "revision": r.revision, "sha256": r.sha256,
                            "applied_by": r.applied_by, "applied_at": r.applied_at.as_millis(),
                            "reverts": r.reverts })
                    })
                    .collect();
                return output::json(&items);
            }
            let rows: Vec<Vec<String>> = revisions
                .iter()
                .map(|r| {
                    vec![
                        r.revision.to_string(),
                        r.applied_at.to_string(),
                        r.applied_by.clone(),
                        r.sha256.chars().take(12).collect(),
                        r.reverts.map(|n| format!("reverts {n}")).unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(&["REVISION", "APPLIED", "BY", "SHA256", "NOTE"], &rows);
        }
        ConfigCommand::Diff { revision } => {
            match ctx.store.config_revisions().get(revision).await {
                Err(clade_store::Error::ConfigRevisionNotFound(n)) => {
                    bail!(
                        "there is no configuration revision {n}: list them with `clade config history`"
                    )
                }
                other => print!("{}", other?.diff),
            }
        }
        ConfigCommand::Schema | ConfigCommand::Validate { .. } => {}
    }
    Ok(())
}

/// One short call through the new configuration's channel route, for the operator's tenant.
async fn smoke_test(ctx: &Ctx, models: clade_runtime::Models) -> Result<()> {
    let tenant = ctx.tenant().await?;
    smoke_call(&tenant, models).await
}

/// One short call through `models`' channel route for `tenant`.
pub(crate) async fn smoke_call(
    tenant: &clade_core::Tenant,
    models: clade_runtime::Models,
) -> Result<()> {
    use clade_model::{Message, ModelRequest, Params};
    let request = ModelRequest {
        messages: vec![Message::user("Reply with the word ok.")],
        params: Params { max_tokens: 16, temperature: None },
        ..ModelRequest::default()
    };
    let kind = clade_core::ProcessKind::Channel;
    let mut ignore = |_: &clade_model::StreamEvent| {};
    models
        .call_unrecorded(tenant, None, kind, &request, &mut ignore)
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("the channel model did not answer: {e}"))
}

fn applied(ctx: &Ctx, applied: Applied) {
    match applied {
        Applied::Unchanged => {
            println!("{} already says this: nothing applied", ctx.config_path.display())
        }
        Applied::Revision { revision, at_restart } => {
            print!("{}", revision.diff);
            println!(
                "applied revision {} to {}; a serving gateway takes it within a second",
                revision.revision,
                ctx.config_path.display()
            );
            if !at_restart.is_empty() {
                println!(
                    "changed sections that take effect at the next start: {}",
                    at_restart.join(", ")
                );
            }
        }
    }
}

/// `clade hooks`.
pub(super) fn hooks(ctx: &Ctx, cmd: HooksCommand) -> Result<()> {
    match cmd {
        HooksCommand::Secret => {
            use base64::Engine as _;
            use rand::Rng as _;
            let mut key = [0u8; 32];
            #[allow(clippy::disallowed_methods)] // A secret: from the OS-seeded generator.
            rand::rng().fill(&mut key);
            println!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
            Ok(())
        }
        HooksCommand::List { json } => {
            let mut rows = Vec::new();
            for (tenant, config) in &ctx.config.tenants {
                for (name, hook) in &config.hooks {
                    let secret_set = context::env_value(&hook.secret_env).is_some();
                    rows.push((tenant, name, hook, secret_set));
                }
            }
            if json {
                let items: Vec<_> = rows
                    .iter()
                    .map(|(tenant, name, hook, secret_set)| {
                        serde_json::json!({
                            "tenant": tenant, "name": name, "path": format!("/hooks/{tenant}/{name}"),
                            "agent": hook.agent, "scheme": hook.scheme, "mode": hook.mode,
                            "session": hook.session, "secret_env": hook.secret_env,
                            "secret_set": secret_set,
                        })
                    })
                    .collect();
                return output::json(&items);
            }
            if rows.is_empty() {
                println!(
                    "no hooks: declare them in clade.yaml under tenants.<tenant>.hooks.<name>"
                );
                return Ok(());
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|(tenant, name, hook, secret_set)| {
                    vec![
                        format!("/hooks/{tenant}/{name}"),
                        hook.agent.clone(),
                        format!("{:?}", hook.scheme).to_lowercase(),
                        format!("{:?}", hook.mode).to_lowercase(),
                        if *secret_set {
                            hook.secret_env.clone()
                        } else {
                            format!("{} (NOT SET)", hook.secret_env)
                        },
                    ]
                })
                .collect();
            output::table(&["PATH", "AGENT", "SCHEME", "MODE", "SECRET"], &table);
            Ok(())
        }
    }
}
