use std::sync::Arc;

use anyhow::{Result, bail};
use clade_core::{AgentConfig, Handle, TemplateName};
use clade_protocol::AgentResponse;
use clade_store::NewAgent;
use serde_json::Value;

use crate::cli::AgentsCommand;
use crate::context::Ctx;
use crate::output;

/// Rows fetched per page when listing everything.
const PAGE: u32 = 1000;

pub(super) async fn run(ctx: &Ctx, cmd: AgentsCommand) -> Result<()> {
    match cmd {
        AgentsCommand::Create { handle, name, template } => {
            create(ctx, &handle, name, template).await?;
        }
        AgentsCommand::List { json } => {
            list(ctx, json).await?;
        }
        AgentsCommand::Show { handle, json } => {
            show(ctx, handle.as_deref(), json).await?;
        }
        AgentsCommand::Delete { handle, yes } => {
            if !yes {
                bail!("refusing to delete agent {handle:?} and its workspace without --yes");
            }
            let tenant = ctx.tenant().await?;
            let agent = ctx.agents.delete(tenant.id, &handle).await?;
            if let Some((t, h)) = ctx.data_dir.current_agent()?
                && t == tenant.name.as_str()
                && h == handle
            {
                println!(
                    "note: {handle} was the current agent; choose another with `clade agents switch`"
                );
            }
            println!("deleted agent {} ({})", agent.handle, agent.id);
        }
        AgentsCommand::Switch { handle } => {
            let agent = ctx.agent(Some(&handle)).await?;
            ctx.data_dir.set_current_agent(ctx.tenant_name(), agent.handle.as_str())?;
            println!("current agent: {}", agent.handle);
        }
        AgentsCommand::Import {
            path,
            handle,
            secrets_key,
            without_secrets,
            trust_key,
            unsigned,
            json,
        } => {
            let tenant = ctx.tenant().await?;
            let handle = handle.as_deref().map(Handle::parse).transpose()?;
            if path.is_dir() {
                let agent = ctx.agents.import(tenant.id, &path, handle).await?;
                println!("imported agent {} ({}) from {}", agent.handle, agent.id, path.display());
            } else {
                let (verify, admit) = archive_trust(ctx, &tenant, trust_key, unsigned)?;
                let options = clade_store::agent_archive::ImportOptions {
                    handle,
                    secrets_key,
                    without_secrets,
                    verify: Some(verify),
                    admit: Some(admit),
                };
                import_archive(ctx, &tenant, &path, options, json).await?;
            }
        }
        AgentsCommand::Export { handle, output } => {
            let agent = ctx.agent(handle.as_deref()).await?;
            export_archive(ctx, &agent, output.as_deref()).await?;
        }
        AgentsCommand::Workspace { handle } => {
            let agent = ctx.agent(handle.as_deref()).await?;
            println!("{}", ctx.agents.workspace(&agent)?.display());
        }
        AgentsCommand::Pause { handle, reason, admin_socket } => {
            let agent = ctx.agent(handle.as_deref()).await?;
            ctx.store.pauses(agent.tenant_id).pause(agent.id, None, reason).await?;
            println!(
                "paused agent {}: no new turn starts until `clade agents resume`",
                agent.handle
            );
            tell_gateway(ctx, admin_socket.as_deref()).await;
        }
        AgentsCommand::Resume { handle, admin_socket } => {
            let agent = ctx.agent(handle.as_deref()).await?;
            if ctx.store.pauses(agent.tenant_id).unpause(agent.id, None).await? {
                println!("resumed agent {}", agent.handle);
            } else {
                println!("agent {} was not paused", agent.handle);
            }
            tell_gateway(ctx, admin_socket.as_deref()).await;
        }
        AgentsCommand::Prompt { handle, text, session, body, json, server } => {
            let asked = PromptAsk { text: &text, session: session.as_deref(), body, json };
            prompt(ctx, handle.as_deref(), asked, server.server.as_deref()).await?;
        }
        AgentsCommand::Messages { handle, limit, json } => {
            messages(ctx, handle.as_deref(), limit, json).await?;
        }
        AgentsCommand::Status { handle, json } => {
            status(ctx, handle.as_deref(), json).await?;
        }
    }
    Ok(())
}

/// What `clade agents prompt` is asked to show.
struct PromptAsk<'a> {
    text: &'a str,
    session: Option<&'a str>,
    /// Only the provider's request body.
    body: bool,
    json: bool,
}

/// `clade agents prompt`: what `handle`'s model would be sent for a message, from the running
/// gateway (the prompt is composed by the code that runs turns, with its models and tools).
async fn prompt(
    ctx: &Ctx,
    handle: Option<&str>,
    ask: PromptAsk<'_>,
    server: Option<&str>,
) -> Result<()> {
    let agent = ctx.agent(handle).await?;
    let client = super::sessions::Client::new(ctx, server)?;
    let mut request = serde_json::json!({ "text": ask.text });
    if let Some(session) = ask.session {
        request["session"] = session.into();
    }
    let (_, preview) = client.post(&format!("/v1/agents/{}/prompt", agent.handle), request).await?;
    if ask.json {
        return output::json(&preview);
    }
    let text = |key: &str| preview[key].as_str().unwrap_or_default().to_owned();
    let number = |key: &str| preview[key].as_u64().unwrap_or_default();
    if ask.body {
        match preview["body"].as_str() {
            Some(body) => println!("{body}"),
            None => anyhow::bail!(
                "the model {} cannot say what it would be sent (a scripted model); drop --body to see the composed prompt",
                preview["route"][0].as_str().unwrap_or("of this agent")
            ),
        }
        return Ok(());
    }
    let route: Vec<&str> =
        preview["route"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let model = match (preview["provider"].as_str(), preview["model"].as_str()) {
        (Some(provider), Some(model)) => format!(" ({provider}: {model})"),
        _ => " (not configured)".to_owned(),
    };
    println!("agent {} · route {}{model}", text("agent"), route.join(" → "));
    println!(
        "sends {} bytes, about {} tokens; a prompt may fill {} of the model's {} tokens",
        number("bytes"),
        number("estimated_tokens"),
        number("prompt_room"),
        number("context_window")
    );
    if preview["fits"] == false {
        eprintln!(
            "warning: this prompt is larger than the model's window leaves it: the model will refuse it; shorten the persona files or route the agent to a model with a larger context_window"
        );
    }
    let tools: Vec<&str> =
        preview["tools"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    println!(
        "tools offered ({} tokens of schemas at most): {}",
        number("tool_tokens"),
        if tools.is_empty() { "none".to_owned() } else { tools.join(", ") }
    );
    for message in preview["messages"].as_array().into_iter().flatten() {
        println!("\n── {} ──", message["role"].as_str().unwrap_or("?"));
        println!("{}", message["content"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// `clade agents messages`: the newest messages `handle` sent or received.
async fn messages(ctx: &Ctx, handle: Option<&str>, limit: u32, json: bool) -> Result<()> {
    let agent = ctx.agent(handle).await?;
    let rows =
        ctx.store.messages(agent.tenant_id).of_agent(agent.id, None, limit.clamp(1, 1000)).await?;
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id.to_string(), "kind": m.kind.as_str(), "from": m.from_handle,
                    "to": m.to_handle, "to_session": m.to_session.to_string(),
                    "event": m.event.to_string(), "text": m.text, "depth": m.depth,
                    "created_at": m.created_at.as_millis(),
                })
            })
            .collect();
        return output::json(&items);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let text = m.text.as_deref().unwrap_or("(deleted)");
            let short: String = text.chars().take(60).collect();
            vec![
                m.created_at.to_string(),
                m.kind.as_str().to_owned(),
                m.from_handle.clone(),
                m.to_handle.clone(),
                short.replace('\n', " "),
            ]
        })
        .collect();
    output::table(&["AT", "KIND", "FROM", "TO", "TEXT"], &rows);
    Ok(())
}

/// Tells a gateway serving this data dir that pauses changed; says so when none runs (it
/// reads them when it starts).
async fn tell_gateway(ctx: &Ctx, socket: Option<&std::path::Path>) {
    use clade_protocol::admin::{AdminReply, AdminRequest};
    let path = crate::admin_socket::path(ctx, socket);
    match crate::admin_socket::request(&path, &AdminRequest::Pauses {}).await {
        Ok(AdminReply::Woken { .. }) => {}
        Ok(other) => eprintln!("the gateway did not take the change: {other:?}"),
        Err(_) => eprintln!(
            "no gateway answers at {}: one that starts on this data dir reads the change then",
            path.display()
        ),
    }
}

/// Tells a gateway serving this data dir to run `sessions`' waiting work now; says so when
/// none runs (one that starts runs it then).
async fn wake_gateway(ctx: &Ctx, sessions: &[clade_core::SessionId]) {
    use clade_protocol::admin::{AdminReply, AdminRequest};
    let path = crate::admin_socket::path(ctx, None);
    let request =
        AdminRequest::Wake { sessions: sessions.iter().map(ToString::to_string).collect() };
    match crate::admin_socket::request(&path, &request).await {
        Ok(AdminReply::Woken { .. }) => {
            eprintln!("the gateway at {} runs its waiting work now", path.display())
        }
        Ok(other) => eprintln!("the gateway did not take the imported work: {other:?}"),
        Err(_) => eprintln!(
            "no gateway answers at {}: one that starts on this data dir runs the imported agent's waiting work",
            path.display()
        ),
    }
}

/// Gives a new agent its template's default tools as grants (the operator's CLI: no ceiling
/// applies) and says which.
pub(super) async fn give_template_tools(
    ctx: &Ctx,
    agent: &clade_core::Agent,
    rules: Vec<clade_config::PolicyRule>,
    by: &str,
) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let given = ctx.tools().await.grant_template_tools(agent, rules, None, by).await?;
    for tool in clade_gateway::template_tools_response(&given) {
        match tool.left_out {
            None => println!(
                "  {} {} on {} (template {})",
                tool.effect, tool.tool, tool.resource, agent.config.template
            ),
            Some(why) => println!("  left out {} {}: {why}", tool.tool, tool.resource),
        }
    }
    Ok(())
}

/// Says how far a long export or import has come, on standard error.
fn archive_progress(verb: &'static str) -> impl FnMut(clade_store::agent_archive::Progress) {
    use clade_store::agent_archive::Progress;
    let mut shown_bytes = 0u64;
    move |done| match done {
        Progress::Files { files, bytes } => {
            if bytes >= shown_bytes + 64 * 1024 * 1024 {
                shown_bytes = bytes;
                eprintln!("{verb} {files} files ({})", output::bytes(bytes));
            }
        }
        // Only what takes a while: a small agent's archive goes by in an instant.
        Progress::Table { table, rows } if rows >= 10_000 => {
            eprintln!("{verb} {rows} {table} rows")
        }
        Progress::Table { .. } | Progress::Secrets { .. } => {}
    }
}

async fn export_archive(
    ctx: &Ctx,
    agent: &clade_core::Agent,
    output: Option<&std::path::Path>,
) -> Result<()> {
    let secrets = ctx.secrets();
    let mut show = archive_progress("exported");
    let identity = crate::context::identity_in(ctx.data_dir.root())?;
    let sign = |sha256: &str| clade_store::agent_archive::ArchiveSignature {
        key: identity.public(),
        value: identity.sign(&[ARCHIVE_SIGNED.as_bytes(), sha256.as_bytes()]),
    };
    let report = output::write_whole(output, async |out| {
        clade_store::agent_archive::export(
            &ctx.agents,
            &secrets,
            agent,
            out,
            Some(&sign),
            &mut show,
        )
        .await
    })
    .await?;
    let rows: u64 = report.rows.iter().map(|(_, n)| n).sum();
    let into = output.map(|p| format!(" to {}", p.display())).unwrap_or_default();
    eprintln!(
        "exported agent {}{into}: {} files ({}), {rows} rows, {} secrets",
        report.agent,
        report.files,
        output::bytes(report.file_bytes),
        report.secrets
    );
    for link in &report.skipped_links {
        eprintln!("left out {link}: not a regular file of the workspace");
    }
    eprintln!(
        "signed with this data dir's key {}: another data dir imports it with --trust-key {}",
        identity.fingerprint(),
        identity.public()
    );
    if let Some(key) = &report.secrets_key {
        let file = output.map_or_else(|| "<file>".to_owned(), |p| p.display().to_string());
        eprintln!(
            "its secrets are sealed with a key made for this file; keep it apart from the file and import with:\n  CLADE_ARCHIVE_KEY={key} clade agents import {file}"
        );
    }
    Ok(())
}

/// `clade agents list`: every agent of the tenant, a page at a time, the current one marked.
async fn list(ctx: &Ctx, json: bool) -> Result<()> {
    let tenant = ctx.tenant().await?;
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ctx.store.agents(tenant.id).list(after.as_deref(), PAGE).await?;
        let done = page.len() < PAGE as usize;
        after = page.last().map(|a| a.handle.to_string());
        all.extend(page);
        if done {
            break;
        }
    }
    if json {
        output::json(&all.iter().map(AgentResponse::from).collect::<Vec<_>>())?;
    } else if all.is_empty() {
        println!(
            "no agents in tenant {}: create one with `clade agents create <handle>`",
            tenant.name
        );
    } else {
        let current = ctx.data_dir.current_agent()?;
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|a| {
                let mark = current
                    .as_ref()
                    .is_some_and(|(t, h)| t == tenant.name.as_str() && h == a.handle.as_str());
                vec![
                    if mark { "*".into() } else { String::new() },
                    a.handle.to_string(),
                    a.display_name.clone(),
                    a.created_at.to_string(),
                    a.id.to_string(),
                ]
            })
            .collect();
        output::table(&["", "HANDLE", "NAME", "CREATED", "ID"], &rows);
    }
    Ok(())
}

/// `clade agents show`.
async fn show(ctx: &Ctx, handle: Option<&str>, json: bool) -> Result<()> {
    let agent = ctx.agent(handle).await?;
    if json {
        output::json(&AgentResponse::from(&agent))?;
    } else {
        let workspace = ctx.agents.workspace_path(agent.id);
        println!("handle:    {}", agent.handle);
        println!("name:      {}", agent.display_name);
        println!("id:        {}", agent.id);
        println!("tenant:    {}", ctx.tenant_name());
        println!("created:   {}", agent.created_at);
        println!("template:  {}", agent.config.template);
        let state = if workspace.is_dir() { "" } else { " (created on first use)" };
        println!("workspace: {}{state}", workspace.display());
    }
    Ok(())
}

/// `clade agents create`: the agent, with its template's default tools as grants.
async fn create(
    ctx: &Ctx,
    handle: &str,
    name: Option<String>,
    template: Option<String>,
) -> Result<()> {
    let tenant = ctx.tenant().await?;
    let handle = Handle::parse(handle)?;
    let template = match template {
        Some(name) => TemplateName::parse(&name)?,
        None => TemplateName::builtin_default(),
    };
    let rules = clade_runtime::tools::template_tools(&ctx.agents, &template)?;
    let agent = ctx
        .agents
        .create(
            tenant.id,
            NewAgent { handle, display_name: name, config: AgentConfig { template } },
        )
        .await?;
    println!("created agent {} ({})", agent.handle, agent.id);
    give_template_tools(ctx, &agent, rules, "operator (cli)").await?;
    Ok(())
}

/// `clade agents status`: the agent's pause, and its sessions with turns running or events
/// waiting.
async fn status(ctx: &Ctx, handle: Option<&str>, json: bool) -> Result<()> {
    let agent = ctx.agent(handle).await?;
    let pauses = ctx.store.pauses(agent.tenant_id).of_agent(agent.id).await?;
    let own = pauses.iter().find(|p| p.session.is_none());
    let sessions = ctx.store.pauses(agent.tenant_id).agent_status(agent.id, 100).await?;
    let now = ctx.store.now().as_millis();
    let age = |s: &clade_store::SessionActivity| {
        s.turn_started_at.map(|at| (now - at.as_millis()).max(0))
    };
    if json {
        return output::json(&serde_json::json!({
            "agent": agent.handle.as_str(),
            "paused": own.map(|p| serde_json::json!({
                "reason": p.reason, "paused_at": p.created_at.as_millis(),
            })),
            "sessions": sessions.iter().map(|s| serde_json::json!({
                "session": s.session.to_string(), "platform": s.platform,
                "channel": s.channel, "actor": s.actor, "state": s.state(),
                "open_events": s.open_events, "turn": s.turn.map(|t| t.to_string()),
                "turn_age_ms": age(s), "turn_steps": s.turn_steps,
            })).collect::<Vec<_>>(),
        }));
    }
    match own {
        Some(pause) => println!(
            "agent {} is paused since {}{}",
            agent.handle,
            pause.created_at,
            pause.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        ),
        None => println!("agent {} runs", agent.handle),
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.session.to_string(),
                format!("{}/{}/{}", s.platform, s.channel, s.actor),
                s.state().to_owned(),
                s.open_events.to_string(),
                s.turn_steps.to_string(),
                age(s).map_or_else(|| "-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            ]
        })
        .collect();
    output::table(&["SESSION", "SOURCE", "STATE", "WAITING", "STEPS", "AGE"], &rows);
    Ok(())
}

/// What an archive's signature covers: its checksum, under this purpose.
const ARCHIVE_SIGNED: &str = "clade.agent archive/";

/// How an import trusts an archive: signed by this data dir's key or one given with
/// `--trust-key`, or with `--unsigned` not at all, and then without its allow and ask grants;
/// and never with a grant beyond what the tenant's ceiling lets its own tokens grant.
fn archive_trust(
    ctx: &Ctx,
    tenant: &clade_core::Tenant,
    mut trusted: Vec<String>,
    unsigned: bool,
) -> Result<(clade_store::agent_archive::VerifyArchive, clade_store::agent_archive::Admit)> {
    use clade_store::agent_archive::Untrusted;
    use clade_tools::remote::identity;
    use std::sync::atomic::{AtomicBool, Ordering};
    trusted.push(crate::context::identity_in(ctx.data_dir.root())?.public());
    let vouched = Arc::new(AtomicBool::new(false));
    let verify = {
        let vouched = vouched.clone();
        Arc::new(
            move |sha256: &str,
                  signature: Option<&clade_store::agent_archive::ArchiveSignature>| {
                let Some(signature) = signature else {
                    return if unsigned {
                        Ok(())
                    } else {
                        Err(Untrusted("the archive is not signed, so anyone could have written its grants: import it with --unsigned to leave its allow and ask grants out".to_owned()))
                    };
                };
                if !trusted.contains(&signature.key) {
                    return if unsigned {
                        Ok(())
                    } else {
                        Err(Untrusted(format!(
                            "the archive is signed by key {}, which this data dir does not trust: if that is the exporting gateway's key, pass --trust-key {}; else import it with --unsigned to leave its allow and ask grants out",
                            identity::fingerprint(&signature.key),
                            signature.key
                        )))
                    };
                }
                if !identity::verify(
                    &signature.key,
                    &[ARCHIVE_SIGNED.as_bytes(), sha256.as_bytes()],
                    &signature.value,
                ) {
                    return if unsigned {
                        Ok(())
                    } else {
                        Err(Untrusted("the archive's signature does not match it: it was changed after it was signed; import it with --unsigned to leave its allow and ask grants out".to_owned()))
                    };
                }
                vouched.store(true, Ordering::Release);
                Ok(())
            },
        ) as clade_store::agent_archive::VerifyArchive
    };
    let ceiling = match ctx.config.tenants.get(tenant.name.as_str()).and_then(|t| t.ceiling.clone())
    {
        Some(ceiling) => Some(ceiling),
        None if tenant.name.as_str() == clade_core::Tenant::DEFAULT_NAME => None,
        None => Some(clade_config::GrantCeiling::default()),
    };
    let tenant_name = tenant.name.to_string();
    let admit_grant = move |grant: &clade_store::agent_archive::ArchivedGrant| {
        let Some(effect) = clade_config::PolicyEffect::parse(&grant.effect) else {
            return Some(format!("its effect {:?} is none this build knows", grant.effect));
        };
        if effect == clade_config::PolicyEffect::Deny {
            return None; // A deny only narrows what the agent may do.
        }
        // An ask is an allow with a question (and turns the default deny into one).
        if !vouched.load(Ordering::Acquire) {
            return Some("the archive's signature was not checked (--unsigned)".to_owned());
        }
        let Ok(constraints) = serde_json::from_str(&grant.constraints) else {
            return Some("its constraints cannot be read".to_owned());
        };
        let rule = clade_config::PolicyRule {
            effect,
            tool: grant.tool.clone(),
            resource: grant.resource.clone(),
            constraints,
        };
        let why = clade_tools::policy::ceiling_error(ceiling.as_ref()?, &rule)?;
        Some(format!("tenant {tenant_name} may not hold it: {why} (tenants.{tenant_name}.ceiling)"))
    };
    Ok((verify, admit_archived(ctx, tenant, admit_grant)))
}

/// What an import admits of an archive's rows: grants as `admit_grant` says, and jobs and
/// settings within the tenant's job limits and this gateway's locked settings, which bind what
/// an archive brings as they bind what its agents make here.
fn admit_archived(
    ctx: &Ctx,
    tenant: &clade_core::Tenant,
    admit_grant: impl Fn(&clade_store::agent_archive::ArchivedGrant) -> Option<String>
    + Send
    + Sync
    + 'static,
) -> clade_store::agent_archive::Admit {
    let tenants = ctx.config.tenants.clone();
    let tenant_name = tenant.name.to_string();
    let locked: Vec<String> = ctx
        .config
        .settings
        .iter()
        .filter(|(_, setting)| !setting.agent_writable)
        .map(|(key, _)| key.clone())
        .collect();
    let now = ctx.store.clock().now();
    Arc::new(move |row: &clade_store::agent_archive::Archived<'_>| {
        use clade_store::agent_archive::Archived;
        match row {
            Archived::Grant(grant) => admit_grant(grant),
            Archived::Job { handle, schedule, zone, admitted, .. } => {
                let jobs = clade_sched::JobLimits::of(&tenants, &tenant_name, handle);
                let checked = jobs.check_count(*admitted);
                checked.and_then(|()| jobs.check_schedule(schedule, zone, now)).err().map(|e| e.to_string())
            }
            Archived::Setting { key } => locked.iter().any(|k| k == key).then(|| {
                format!("settings.{key} is locked here (agent_writable: false): only the operator sets it (clade settings set)")
            }),
        }
    }) as clade_store::agent_archive::Admit
}

async fn import_archive(
    ctx: &Ctx,
    tenant: &clade_core::Tenant,
    path: &std::path::Path,
    options: clade_store::agent_archive::ImportOptions,
    json: bool,
) -> Result<()> {
    use anyhow::Context as _;
    let file = std::fs::File::open(path).with_context(|| {
        format!("cannot read {}: name an archive file or a folder of persona files", path.display())
    })?;
    let mut input = std::io::BufReader::new(file);
    let secrets = ctx.secrets();
    let mut show = archive_progress("read");
    let report = clade_store::agent_archive::import(
        &ctx.agents,
        &secrets,
        tenant.id,
        &mut input,
        options,
        &mut show,
    )
    .await?;
    let agent = &report.agent;
    if json {
        let rows: serde_json::Map<String, serde_json::Value> =
            report.rows.iter().map(|(t, n)| (t.clone(), (*n).into())).collect();
        output::json(&serde_json::json!({
            "agent": AgentResponse::from(agent),
            "files": report.files,
            "file_bytes": report.file_bytes,
            "rows": rows,
            "secrets": report.secrets,
            "unfinished": report.unfinished,
            "grants": report.grants,
            "orphaned_grants": report.orphaned_grants,
            "dropped_grants": report.dropped_grants,
            "dropped_jobs": report.dropped_jobs,
            "dropped_settings": report.dropped_settings,
        }))?;
    } else {
        let rows: u64 = report.rows.iter().map(|(_, n)| n).sum();
        println!(
            "imported agent {} ({}) into tenant {}: {} files ({}), {rows} rows, {} secrets",
            agent.handle,
            agent.id,
            tenant.name,
            report.files,
            output::bytes(report.file_bytes),
            report.secrets
        );
        for grant in &report.grants {
            println!("grant: {grant}");
        }
        for dropped in &report.dropped_grants {
            println!("left out grant {dropped}");
        }
        for dropped in &report.dropped_jobs {
            println!("left out job {dropped}");
        }
        for dropped in &report.dropped_settings {
            println!("left out setting {dropped}");
        }
        if report.orphaned_grants > 0 {
            println!(
                "{} of its grants were delegated by an agent that did not come along: they are not in force here until granted again",
                report.orphaned_grants
            );
        }
        if report.unfinished > 0 {
            println!(
                "{} executions had not ended: a gateway serving this data dir resumes them where their journals stop",
                report.unfinished
            );
        }
    }
    if !report.waiting_sessions.is_empty() {
        wake_gateway(ctx, &report.waiting_sessions).await;
    }
    Ok(())
}
