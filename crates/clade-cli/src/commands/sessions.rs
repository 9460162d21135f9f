//! `clade chat`, `clade event send`, `clade sessions`, `clade deadletters`.

use std::io::{BufRead, Write};

use anyhow::{Context as _, Result, bail};
use clade_core::{EventKind, SessionId, TurnStatus};
use clade_protocol::TurnStep;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::cli::{ChatArgs, DeadlettersCommand, EventCommand, RunsCommand, SessionsCommand};
use crate::context::Ctx;
use crate::output;

/// A small client of the running gateway.
pub(super) struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    pub(super) fn new(ctx: &Ctx, url: Option<&str>) -> Result<Self> {
        let (url, token) = ctx.server(url)?;
        Ok(Self { http: reqwest::Client::new(), url, token })
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.request(reqwest::Method::GET, path, None).await?.1)
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// The gateway's URL.
    #[cfg(feature = "tui")]
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    #[cfg(feature = "tui")]
    /// Opens a Server-Sent Events stream at `path`, resuming after `last_id` when given.
    pub(super) async fn stream(
        &self,
        path: &str,
        last_id: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut request = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.with_context(|| {
            format!("cannot reach the gateway at {}: is `clade serve` running?", self.url)
        })?;
        let status = response.status().as_u16();
        if status >= 400 {
            bail!("the gateway refused the stream {path} (HTTP {status})");
        }
        Ok(response)
    }

    pub(super) async fn delete(&self, path: &str) -> Result<()> {
        self.request(reqwest::Method::DELETE, path, None).await.map(|_| ())
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Result<(u16, Value)> {
        self.request(method, path, Some(body)).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request =
            self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the gateway at {}: is `clade serve` running? (--server URL)",
                self.url
            )
        })?;
        let status = response.status().as_u16();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            let message = value["error"]["message"].as_str().unwrap_or("request failed");
            bail!("{message} (HTTP {status})");
        }
        Ok((status, value))
    }
}

/// Prints a turn's reply; a turn that ended without one is an error, so scripts can tell.
fn print_reply(value: &Value) -> Result<()> {
    match value["status"].as_str() {
        Some(status) if TurnStatus::parse(status) == Some(TurnStatus::Completed) => {
            println!("{}", value["reply"]["text"].as_str().unwrap_or_default())
        }
        Some(other) => {
            let session = value["session_id"].as_str().unwrap_or_default();
            bail!(
                "turn {other}: {} (session {session}; its steps: `clade sessions show {session}`)",
                value["error"].as_str().unwrap_or("no reply")
            )
        }
        None => {
            println!("accepted: event {} in session {}", value["event_id"], value["session_id"]);
            if let Some(paused) = value["paused"].as_str() {
                eprintln!("{paused}");
            }
        }
    }
    Ok(())
}

pub(super) async fn event(ctx: &Ctx, cmd: EventCommand) -> Result<()> {
    let EventCommand::Send { text, no_wait, server } = cmd;
    let agent = ctx.agent(None).await?;
    let client = Client::new(ctx, server.server.as_deref())?;
    // A new session per invocation: the actor names this process.
    let actor = format!("cli-{}-{}", std::process::id(), ctx.store.now().as_millis());
    let body = json!({
        "agent": agent.handle.as_str(),
        "text": text,
        "source": { "platform": "cli", "channel": "cli", "actor": actor },
        "wait": !no_wait,
    });
    let (_, value) = client.post("/v1/events", body).await?;
    print_reply(&value)
}

pub(super) async fn chat(ctx: &Ctx, args: ChatArgs) -> Result<()> {
    let agent = ctx.agent(None).await?;
    let client = Client::new(ctx, args.server.server.as_deref())?;
    let actor = format!("chat-{}-{}", std::process::id(), ctx.store.now().as_millis());
    // The gateway is asked before anything is promised.
    client.get(&format!("/v1/agents/{}", agent.handle)).await?;
    eprintln!("chatting with {} (/help for commands, /quit or Ctrl-D to end)", agent.handle);
    let stdin = std::io::stdin();
    let prompt = || {
        eprint!("> ");
        let _ = std::io::stderr().flush();
    };
    prompt();
    let mut stream: Option<(
        String,
        futures::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
    )> = None;
    let mut parser = clade_model::sse::SseParser::default();
    for line in stdin.lock().lines() {
        let line = line?;
        match line.trim() {
            "" => {
                prompt();
                continue;
            }
            "/quit" | "/exit" => break,
            "/help" => {
                eprintln!(
                    "type a message and press Enter; the reply streams as it is written\n/quit or /exit (or Ctrl-D) ends the chat; /help shows this\nthe offline model also reads /tool <name> {{json}} and /reply <text>"
                );
                prompt();
                continue;
            }
            _ => {}
        }
        let body = json!({
            "agent": agent.handle.as_str(),
            "text": line,
            "source": { "platform": "cli", "channel": "chat", "actor": actor },
        });
        let (_, accepted) = client.post("/v1/events", body).await?;
        let event_id = accepted["event_id"].as_str().unwrap_or_default().to_owned();
        let session = accepted["session_id"].as_str().unwrap_or_default().to_owned();
        if stream.as_ref().is_none_or(|(s, _)| *s != session) {
            let response = client
                .http
                .get(format!("{}/v1/sessions/{session}/events", client.url))
                .bearer_auth(&client.token)
                .send()
                .await?;
            stream = Some((session.clone(), response.bytes_stream().boxed()));
        }
        let Some((_, body)) = stream.as_mut() else { continue };
        // Print deltas until the turn that answers our event ends. Deltas are live only: a turn
        // that ran before the stream was open shows its reply from `turn.finished` instead.
        let (mut ours, mut streamed) = (false, false);
        'read: while let Some(chunk) = body.next().await {
            let mut events = Vec::new();
            parser.push(&chunk?, &mut events)?;
            for event in events {
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                let kind = event.event.as_deref().and_then(EventKind::parse);
                match kind {
                    Some(EventKind::TurnStarted) => {
                        ours = data["events"]
                            .as_array()
                            .is_some_and(|e| e.iter().any(|id| id == &event_id));
                    }
                    Some(EventKind::TextDelta) if ours => {
                        print!("{}", data["text"].as_str().unwrap_or_default());
                        let _ = std::io::stdout().flush();
                        streamed = true;
                    }
                    Some(kind) if kind.ends_turn() && ours => {
                        if !streamed && let Some(reply) = data["reply"].as_str() {
                            print!("{reply}");
                        }
                        if let Some(error) = data["error"].as_str() {
                            eprintln!("[{}: {error}]", event.event.unwrap_or_default());
                        }
                        println!();
                        prompt();
                        break 'read;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn run(ctx: &Ctx, cmd: SessionsCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    match cmd {
        SessionsCommand::List { json } => list(ctx, &tenant, json).await?,
        SessionsCommand::Show { id, json } => show(ctx, &tenant, &id, json).await?,
        SessionsCommand::Summaries { id, json } => summaries(ctx, &tenant, &id, json).await?,
        SessionsCommand::Working { id, name, json } => {
            working(ctx, &tenant, &id, name.as_deref(), json).await?
        }
        SessionsCommand::Resume { id, server } => {
            let id = SessionId::parse(&id)?;
            let client = Client::new(ctx, server.server.as_deref())?;
            let (_, value) = client.post(&format!("/v1/sessions/{id}/resume"), json!({})).await?;
            if value["unpaused"] == json!(true) {
                println!("lifted the pause of session {id}");
            }
            println!("resumed {} event(s) of session {id}", value["resumed_events"]);
        }
        SessionsCommand::Pause { id, reason, server } => {
            let id = SessionId::parse(&id)?;
            let client = Client::new(ctx, server.server.as_deref())?;
            client.post(&format!("/v1/sessions/{id}/pause"), json!({ "reason": reason })).await?;
            println!("paused session {id}: no new turn starts until `clade sessions resume {id}`");
        }
        SessionsCommand::Cancel { id, server } => {
            let id = SessionId::parse(&id)?;
            let client = Client::new(ctx, server.server.as_deref())?;
            let (_, value) = client.post(&format!("/v1/sessions/{id}/cancel"), json!({})).await?;
            if value["cancelled"] == json!(true) {
                println!("cancelled the running turn of session {id}");
            } else {
                println!("no turn of session {id} was running");
            }
        }
        SessionsCommand::QueueMode { id, mode, server } => {
            let id = SessionId::parse(&id)?;
            let client = Client::new(ctx, server.server.as_deref())?;
            let body =
                json!({ "queue_mode": if mode == "agent" { Value::Null } else { json!(mode) } });
            let path = format!("/v1/sessions/{id}");
            let (_, value) = client.send(reqwest::Method::PATCH, &path, body).await?;
            match value["queue_mode"].as_str() {
                Some(own) => println!("session {id} queues in {own} mode"),
                None => println!("session {id} follows its agent's queue mode"),
            }
        }
    }
    Ok(())
}

/// `clade sessions list`: the tenant's sessions (of `--agent` only, when given).
async fn list(ctx: &Ctx, tenant: &clade_core::Tenant, json: bool) -> Result<()> {
    let agent = match ctx.explicit_agent() {
        Some(handle) => Some(ctx.store.agents(tenant.id).get(handle).await?.id),
        None => None,
    };
    let sessions = ctx.store.sessions(tenant.id).list(agent, 1000).await?;
    if json {
        let items: Vec<_> = sessions
            .iter()
            .map(|s| json!({
                "id": s.id.to_string(), "agent_id": s.agent_id.to_string(),
                "platform": s.source.platform.as_str(), "channel": s.source.channel, "actor": s.source.actor,
                "last_active_channel": s.last_active_channel, "updated_at": s.updated_at.as_millis(),
            }))
            .collect();
        return output::json(&items);
    }
    let rows: Vec<_> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.source.platform.to_string(),
                s.source.channel.clone(),
                s.source.actor.clone(),
                s.updated_at.to_string(),
            ]
        })
        .collect();
    output::table(&["ID", "PLATFORM", "CHANNEL", "ACTOR", "ACTIVE"], &rows);
    Ok(())
}

/// `clade sessions show`: a session's turns, each with its messages, tool calls and usage.
async fn show(ctx: &Ctx, tenant: &clade_core::Tenant, id: &str, json: bool) -> Result<()> {
    let id = SessionId::parse(id)?;
    let session = ctx.store.sessions(tenant.id).get(id).await?;
    let turns = ctx
        .store
        .tenant_scope(tenant.id)
        .sessions()
        .turn_records(session.id, None, u32::MAX)
        .await?;
    if json {
        let mut items = Vec::with_capacity(turns.len());
        for clade_store::TurnRecord { turn: t, events, usage, steps, .. } in &turns {
            // The API's typed view of each step (`GET …/turns/{turn}/steps`).
            let steps = steps
                .iter()
                .map(|e| clade_runtime::step_view(e).map_err(anyhow::Error::from))
                .collect::<Result<Vec<_>>>()?;
            items.push(json!({
                "steps": steps,
                "id": t.id.to_string(), "status": t.status.as_str(), "reply": t.reply, "error": t.error, "model": t.model,
                "started_at": t.started_at.as_millis(),
                "usage": { "model_calls": usage.model_calls, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "cost_micros": usage.cost_micros },
                "events": events.iter().map(|e| json!({ "id": e.id.to_string(), "seq": e.seq, "text": e.text })).collect::<Vec<_>>(),
            }));
        }
        return output::json(&json!({ "session": id.to_string(), "turns": items }));
    }
    println!(
        "session {} ({} / {} / {})",
        session.id, session.source.platform, session.source.channel, session.source.actor
    );
    for clade_store::TurnRecord { turn, events, usage, steps, .. } in turns {
        for event in events {
            println!("> {}", event.text);
        }
        for entry in steps {
            match clade_runtime::step_view(&entry)? {
                TurnStep::ToolStarted { name, arguments, .. } => {
                    println!("  · {name} {arguments}")
                }
                TurnStep::ToolResult { content, is_error, .. } => {
                    let shown: String = content.chars().take(200).collect();
                    let error = if is_error { " (error)" } else { "" };
                    println!("    → {shown}{error}");
                }
                TurnStep::Resumed { .. } => println!("  · resumed"),
                TurnStep::ModelResponse { .. } => {}
            }
        }
        match turn.status {
            TurnStatus::Completed => println!("< {}", turn.reply.unwrap_or_default()),
            status => println!("< [{status}] {}", turn.error.unwrap_or_default()),
        }
        println!(
            "  ({} model call(s), {} in / {} out tokens, ${:.6})",
            usage.model_calls,
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_micros as f64 / 1e6
        );
    }
    Ok(())
}

/// `clade sessions summaries`: what compaction made of the session's older turns.
async fn summaries(ctx: &Ctx, tenant: &clade_core::Tenant, id: &str, json: bool) -> Result<()> {
    let id = SessionId::parse(id)?;
    let session = ctx.store.sessions(tenant.id).get(id).await?;
    let summaries = ctx.store.tenant_scope(tenant.id).sessions().summaries(session.id, 100).await?;
    if json {
        let items: Vec<_> = summaries
            .iter()
            .map(|s| json!({
                "through_turn": s.through.to_string(), "text": s.text, "turns": s.turns,
                "model": s.model, "memories": s.memories, "created_at": s.created_at.as_millis(),
            }))
            .collect();
        return output::json(&items);
    }
    if summaries.is_empty() {
        println!("session {} has not been compacted", session.id);
    }
    for s in summaries {
        println!(
            "through turn {} ({} turns, {} memories saved, by {}, {}):\n{}\n",
            s.through,
            s.turns,
            s.memories,
            s.model.as_deref().unwrap_or("no model"),
            s.created_at,
            s.text
        );
    }
    Ok(())
}

/// `clade sessions working`: the session's working memory, or one value's history.
async fn working(
    ctx: &Ctx,
    tenant: &clade_core::Tenant,
    id: &str,
    name: Option<&str>,
    json: bool,
) -> Result<()> {
    let id = SessionId::parse(id)?;
    let session = ctx.store.sessions(tenant.id).get(id).await?;
    let store = ctx.store.tenant_scope(tenant.id);
    let entries = match name {
        Some(name) => store.working().history(session.id, name).await?,
        None => store.working().list(session.id).await?,
    };
    if json {
        let items: Vec<_> = entries
            .iter()
            .map(|e| json!({
                "name": e.name, "value": e.value, "version": e.version,
                "turn_id": e.turn.map(|t| t.to_string()), "written_at": e.written_at.as_millis(),
            }))
            .collect();
        return output::json(&items);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.version.to_string(),
                e.turn.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                e.value.clone().unwrap_or_else(|| "(cleared)".to_owned()),
            ]
        })
        .collect();
    output::table(&["NAME", "VERSION", "TURN", "VALUE"], &rows);
    Ok(())
}

pub(super) async fn runs(ctx: &Ctx, cmd: RunsCommand) -> Result<()> {
    use clade_core::{ExecutionId, ExecutionKind};
    match cmd {
        RunsCommand::List { handle, open, kind, limit, json } => {
            let agent = ctx.agent(handle.as_deref()).await?;
            let kind = kind
                .map(|k| {
                    ExecutionKind::parse(&k).with_context(|| {
                        let kinds: Vec<_> = ExecutionKind::ALL.iter().map(|k| k.as_str()).collect();
                        format!("--kind {k:?}: not a kind of run; one of {}", kinds.join(", "))
                    })
                })
                .transpose()?;
            if !(1..=1000).contains(&limit) {
                bail!("--limit {limit}: must be 1 to 1000");
            }
            let filter =
                clade_store::RunFilter { agent: Some(agent.id), kind, open_only: open, limit };
            let store = ctx.store.tenant_scope(agent.tenant_id);
            let mut runs = Vec::new();
            for row in store.forks().runs(&filter).await? {
                let fork = store.forks().of_execution(row.id).await?;
                runs.push(clade_gateway::runs::run_response(row, fork.as_ref()));
            }
            if json {
                return output::json(&runs);
            }
            if runs.is_empty() {
                println!("agent {} has no such runs", agent.handle);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    let what = r
                        .fork
                        .as_ref()
                        .map(|f| f.progress.clone().unwrap_or_else(|| f.task.clone()))
                        .or_else(|| r.input.clone())
                        .unwrap_or_default();
                    vec![
                        r.id.clone(),
                        r.kind.0.as_str().to_owned(),
                        r.status.0.as_str().to_owned(),
                        clade_core::Timestamp::from_millis(r.created_at).to_string(),
                        output::clip(&what, 60),
                    ]
                })
                .collect();
            output::table(&["ID", "KIND", "STATE", "STARTED", "TASK / STATUS"], &rows);
        }
        RunsCommand::Show { id, json } => {
            let tenant = ctx.tenant().await?;
            let id: ExecutionId =
                id.parse().map_err(|_| anyhow::anyhow!("{id:?} is not a run id"))?;
            let store = ctx.store.tenant_scope(tenant.id);
            let row = store.executions().get(id).await?;
            let fork = store.forks().of_execution(row.id).await?;
            let run = clade_gateway::runs::run_response(row, fork.as_ref());
            if json {
                return output::json(&run);
            }
            println!("run {} ({}): {}", run.id, run.kind.0.as_str(), run.status.0.as_str());
            if let Some(fork) = &run.fork {
                println!("{} {} of session {}", run.kind.0.as_str(), fork.id, fork.parent_session);
                println!("task: {}", fork.task);
                if let Some(progress) = &fork.progress {
                    println!("status: {progress}");
                }
            } else if let Some(input) = &run.input {
                println!("input: {input}");
            }
            if let Some(output) = &run.output {
                println!("outcome: {output}");
            }
            if let Some(error) = &run.error {
                println!("error: {error}");
            }
        }
        RunsCommand::Cancel { id, server } => {
            let id: ExecutionId =
                id.parse().map_err(|_| anyhow::anyhow!("{id:?} is not a run id"))?;
            let client = Client::new(ctx, server.server.as_deref())?;
            let (_, value) = client.post(&format!("/v1/runs/{id}/cancel"), json!({})).await?;
            println!("run {id} is {}", value["status"].as_str().unwrap_or("unknown"));
        }
        RunsCommand::Pause { id, reason, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let (id, session) = run_session(&client, &id).await?;
            client
                .post(&format!("/v1/sessions/{session}/pause"), json!({ "reason": reason }))
                .await?;
            println!(
                "paused run {id} (session {session}): its running step finishes, nothing new starts until `clade runs resume {id}`"
            );
        }
        RunsCommand::Resume { id, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let (id, session) = run_session(&client, &id).await?;
            let (_, value) =
                client.post(&format!("/v1/sessions/{session}/resume"), json!({})).await?;
            let lifted = if value["unpaused"] == json!(true) { "lifted its pause; " } else { "" };
            println!(
                "run {id}: {lifted}resumed {} event(s) of session {session}",
                value["resumed_events"]
            );
        }
    }
    Ok(())
}

/// The run `id` names, and the session its pause acts on: a branch's or worker's own, or the
/// session a turn belongs to.
async fn run_session(client: &Client, id: &str) -> Result<(clade_core::ExecutionId, String)> {
    let id: clade_core::ExecutionId =
        id.parse().map_err(|_| anyhow::anyhow!("{id:?} is not a run id"))?;
    let run = client.get(&format!("/v1/runs/{id}")).await?;
    let session =
        run["fork"]["id"].as_str().or_else(|| run["session"].as_str()).ok_or_else(|| {
            anyhow::anyhow!("run {id} belongs to no session: there is nothing to pause")
        })?;
    Ok((id, session.to_owned()))
}

pub(super) async fn deadletters(ctx: &Ctx, cmd: DeadlettersCommand) -> Result<()> {
    match cmd {
        DeadlettersCommand::List { json } => {
            let letters = ctx.store.system().dead_letters().await?;
            if json {
                let items: Vec<_> = letters
                    .iter()
                    .map(|d| json!({ "subscriber": d.subscriber, "outbox_id": d.outbox_id, "reason": d.reason, "attempts": d.attempts, "created_at": d.created_at.as_millis() }))
                    .collect();
                return output::json(&items);
            }
            let rows: Vec<_> = letters
                .iter()
                .map(|d| {
                    vec![
                        d.subscriber.clone(),
                        d.outbox_id.to_string(),
                        d.attempts.to_string(),
                        d.created_at.to_string(),
                        d.reason.clone(),
                    ]
                })
                .collect();
            output::table(&["SUBSCRIBER", "OUTBOX ID", "ATTEMPTS", "AT", "REASON"], &rows);
        }
        DeadlettersCommand::Retry { subscriber, outbox_id } => {
            let letters = ctx.store.system().dead_letters().await?;
            if !letters.iter().any(|d| d.subscriber == subscriber && d.outbox_id == outbox_id) {
                bail!(
                    "no dead letter {outbox_id} for subscriber {subscriber:?}: see `clade deadletters list`"
                );
            }
            let mut known = ctx.subscribers()?;
            if subscriber.starts_with("peer:") {
                known
                    .extend(crate::context::paired_subscribers(&ctx.store, ctx.identity()?).await?);
            }
            let target = known.into_iter().find(|s| s.name == subscriber).with_context(|| {
                format!(
                    "subscriber {subscriber:?} is no longer in clade.yaml nor paired (`clade pair list`)"
                )
            })?;
            let row = ctx.store.system().outbox_row(outbox_id).await?;
            clade_runtime::outbox::deliver(&reqwest::Client::new(), &target, &row, ctx.store.now())
                .await
                .map_err(|reason| anyhow::anyhow!("delivery failed again: {reason}"))?;
            ctx.store.deliveries().delete_dead_letter(&subscriber, outbox_id).await?;
            println!("delivered outbox event {outbox_id} to {subscriber}");
        }
    }
    Ok(())
}
