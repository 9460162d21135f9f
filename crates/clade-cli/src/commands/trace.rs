//! `clade trace export`: a session's turns as OTLP/JSON lines, the spans `server.traces` sends
//! a collector (`clade_otlp`), for a file, a replay or `clade usage estimate FILE`.

use std::io::Write as _;

use anyhow::{Context as _, Result};

use crate::cli::TraceCommand;
use crate::context::Ctx;

/// Turns read per page.
const PAGE: u32 = 100;

pub(super) async fn run(ctx: &Ctx, command: TraceCommand) -> Result<()> {
    let TraceCommand::Export { session, output, content } = command;
    let (tenant, found) = session_of(ctx, &session).await?;
    let id = found.id;
    let agent = match ctx.store.agents(tenant.id).by_id(found.agent_id).await {
        Ok(agent) => agent.handle.as_str().to_owned(),
        Err(err) if err.is_not_found() => found.agent_id.to_string(),
        Err(err) => return Err(err.into()),
    };
    let owner = clade_otlp::Owner { tenant: tenant.name.as_str().to_owned(), agent };
    let content =
        if content { clade_otlp::Content::Included } else { clade_otlp::Content::Omitted };
    let resource = clade_otlp::resource(
        ctx.config.server.traces.as_ref().map_or("clade", |t| t.service_name.as_str()),
        &crate::context::instance_name(&ctx.config),
    );
    let mut out: Box<dyn std::io::Write> = match &output {
        Some(path) => {
            Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| {
                format!("cannot write {}: name a file in a folder that exists", path.display())
            })?))
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let (mut after, mut turns) = (None, 0usize);
    loop {
        let page = ctx.store.sessions(tenant.id).turn_records(id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.turn.id);
        for record in &page {
            // A turn still running has no end to trace yet.
            if record.turn.status == clade_core::TurnStatus::Running {
                continue;
            }
            let spans = clade_otlp::trace_of(&ctx.store, record, &owner, content).await?;
            let request = clade_otlp::export::request(resource.clone(), spans);
            writeln!(out, "{}", clade_otlp::wire::to_json(&request))?;
            turns += 1;
        }
    }
    out.flush()?;
    if let Some(path) = &output {
        println!(
            "wrote {turns} turn{} of session {session} to {}",
            if turns == 1 { "" } else { "s" },
            path.display()
        );
    }
    Ok(())
}

/// The session `session` names in the CLI's tenant; another tenant's reads as one that does
/// not exist.
pub(super) async fn session_of(
    ctx: &Ctx,
    session: &str,
) -> Result<(clade_core::Tenant, clade_store::SessionRow)> {
    let id = clade_core::SessionId::parse(session).ok().with_context(|| {
        format!("{session:?} is not a session id: `clade sessions list` shows them")
    })?;
    let tenant = ctx.tenant().await?;
    let found = ctx.store.sessions(tenant.id).get(id).await.with_context(|| {
        format!(
            "no session {session} in tenant {}: `clade sessions list` shows its sessions",
            tenant.name
        )
    })?;
    Ok((tenant, found))
}
