//! `clade tui`: a terminal UI on a running gateway (local or remote, with a token), through
//! its public API only: the agents' list and status every two seconds, each agent's live
//! events over its SSE stream (resumed after a dropped connection with `Last-Event-ID`), and
//! commands that call the same routes the CLI and the console do.

mod app;
mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use self::app::{Action, AgentRow, App, HELP, View};
use super::sessions::Client;
use crate::cli::ChatArgs;
use crate::context::Ctx;

/// What the loop waits on.
enum Incoming {
    Key(KeyEvent),
    Redraw,
    Agents(Vec<AgentRow>),
    Sessions(String, Vec<(String, String)>),
    Live {
        agent: String,
        kind: String,
        data: Value,
    },
    /// A command's outcome, and whether it failed.
    Done(String, bool),
}

/// Agents whose live events are followed, at most (each is one stream of the token's quota).
const FOLLOWED: usize = 16;
/// Agents whose status is read at each refresh, at most.
const WITH_STATUS: usize = 40;
const REFRESH: Duration = Duration::from_secs(2);
/// A session's state in an agent's status while a turn runs in it.
const RUNNING: &str = clade_core::ExecutionStatus::Running.as_str();

pub(super) async fn run(ctx: &Ctx, args: ChatArgs) -> Result<()> {
    let client = Arc::new(super::sessions::Client::new(ctx, args.server.server.as_deref())?);
    // Asked before the screen is taken over, so a wrong address or token is a plain error.
    client.get("/v1/agents?limit=1").await?;
    let palette = view::Palette::of(ctx.config.tui.theme);
    let mut app = App::new(client.url().to_owned());
    let (tx, rx) = mpsc::channel(1024);
    let (selected_tx, selected_rx) = watch::channel(None::<String>);
    let mut tasks = vec![
        tokio::spawn(keys(tx.clone())),
        tokio::spawn(refresh(client.clone(), tx.clone(), selected_rx)),
    ];
    let clock = ctx.store.clock().clone();
    let links = Links { client, tx, selected: selected_tx, clock };
    let mut terminal = ratatui::try_init()
        .context("cannot take over the terminal: run `clade tui` in an interactive terminal")?;
    let outcome = event_loop(&mut terminal, &mut app, palette, rx, links, &mut tasks).await;
    ratatui::restore();
    for task in tasks {
        task.abort();
    }
    outcome
}

/// What the loop reaches out with.
struct Links {
    client: Arc<Client>,
    tx: mpsc::Sender<Incoming>,
    selected: watch::Sender<Option<String>>,
    clock: Arc<dyn clade_core::Clock>,
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    palette: view::Palette,
    mut rx: mpsc::Receiver<Incoming>,
    Links { client, tx, selected, clock }: Links,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<()> {
    let mut followed = std::collections::HashSet::new();
    while !app.quit {
        terminal.draw(|frame| view::draw(frame, app, palette))?;
        let Some(incoming) = rx.recv().await else { break };
        match incoming {
            Incoming::Key(key) => on_key(app, key, &client, &tx),
            Incoming::Redraw => {}
            Incoming::Agents(agents) => {
                app.set_agents(agents);
                for row in app.agents.iter().take(FOLLOWED) {
                    if followed.insert(row.handle.clone()) {
                        tasks.push(tokio::spawn(follow(
                            (client.clone(), clock.clone()),
                            row.handle.clone(),
                            tx.clone(),
                        )));
                    }
                }
            }
            Incoming::Sessions(agent, sessions) => {
                if app.selected_handle() == Some(agent.as_str()) {
                    app.sessions = sessions;
                }
            }
            Incoming::Live { agent, kind, data } => app.live(&agent, &kind, &data),
            Incoming::Done(text, failed) => app.tell(text, failed),
        }
        let now = app.selected_handle().map(str::to_owned);
        if *selected.borrow() != now {
            app.sessions.clear();
            let _ = selected.send(now);
        }
    }
    Ok(())
}

fn on_key(app: &mut App, key: KeyEvent, client: &Arc<Client>, tx: &mpsc::Sender<Incoming>) {
    if key.kind != KeyEventKind::Press {
        return;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') if ctrl => app.quit = true,
        KeyCode::Esc => app.quit = true,
        KeyCode::Char(c) => app.input.push(c),
        KeyCode::Backspace => {
            app.input.pop();
        }
        KeyCode::Up => app.move_selection(-1),
        KeyCode::Down => app.move_selection(1),
        KeyCode::Tab => {
            app.view = if app.view == View::Agent { View::All } else { View::Agent };
        }
        KeyCode::Enter => {
            let line = std::mem::take(&mut app.input);
            if line.trim().is_empty() {
                return;
            }
            match app::parse(&line) {
                Ok(action) => act(app, action, client, tx),
                Err(why) => app.tell(why.to_string(), true),
            }
        }
        _ => {}
    }
}

/// Does what a command asks: at once for what only changes the screen, in a task for what
/// calls the gateway (its outcome comes back as `Incoming::Done`).
fn act(app: &mut App, action: Action, client: &Arc<Client>, tx: &mpsc::Sender<Incoming>) {
    match action {
        Action::Quit => app.quit = true,
        Action::Help => app.tell(HELP, false),
        Action::All => app.view = View::All,
        Action::Switch(handle) => {
            if !app.select(&handle) {
                app.tell(format!("no agent {handle} in the list: /spawn {handle} makes one"), true);
            }
        }
        Action::Spawn { handle, task } => {
            let (client, body) = (client.clone(), json!({ "handle": handle, "task": task }));
            call(
                tx,
                Box::pin(async move {
                    client.post("/v1/agents", body).await?;
                    Ok(format!("spawned {handle}"))
                }),
            );
        }
        other => {
            let Some(handle) = app.selected_handle().map(str::to_owned) else {
                app.tell("no agent selected: /spawn HANDLE makes one", true);
                return;
            };
            let client = client.clone();
            call(tx, Box::pin(async move { on_agent(&client, &handle, other).await }));
        }
    }
}

/// Runs `work` in a task; its outcome comes back as `Incoming::Done`.
fn call(tx: &mpsc::Sender<Incoming>, work: futures::future::BoxFuture<'static, Result<String>>) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let done = match work.await {
            Ok(text) => Incoming::Done(text, false),
            Err(err) => Incoming::Done(format!("{err:#}"), true),
        };
        let _ = tx.send(done).await;
    });
}

/// An action on the selected agent.
async fn on_agent(client: &Client, handle: &str, action: Action) -> Result<String> {
    let base = format!("/v1/agents/{handle}");
    match action {
        Action::Send(text) => {
            let source = json!({ "platform": "cli", "channel": "tui", "actor": "tui" });
            let body = json!({ "agent": handle, "text": text, "source": source });
            client.post("/v1/events", body).await?;
            Ok(format!("sent to {handle}"))
        }
        Action::Pause => {
            client
                .post(&format!("{base}/pause"), json!({ "reason": "paused from clade tui" }))
                .await?;
            Ok(format!("paused {handle}: no new turn starts; /resume lifts it"))
        }
        Action::Resume => {
            client.post(&format!("{base}/resume"), json!({})).await?;
            Ok(format!("resumed {handle}"))
        }
        Action::Stop => {
            let status = client.get(&format!("{base}/status")).await?;
            let running: Vec<String> = status["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["state"] == RUNNING)
                .filter_map(|s| s["session"].as_str().map(str::to_owned))
                .collect();
            for session in &running {
                client.post(&format!("/v1/sessions/{session}/cancel"), json!({})).await?;
            }
            Ok(format!("asked {} running turn(s) of {handle} to stop", running.len()))
        }
        Action::Approve(id) => decide(client, handle, id, true).await,
        Action::Deny(id) => decide(client, handle, id, false).await,
        Action::Break { at, tool } => {
            let body = json!({ "agent": handle, "at": at, "tool": tool });
            client.post("/v1/breakpoints", body).await?;
            Ok(format!(
                "{handle}'s turns pause at {at}{}",
                tool.map(|t| format!(" {t}")).unwrap_or_default()
            ))
        }
        Action::Unbreak => {
            let listed = client.get(&format!("/v1/breakpoints?agent={handle}")).await?;
            let ids: Vec<String> = listed["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["id"].as_str().map(str::to_owned))
                .collect();
            for id in &ids {
                client.delete(&format!("/v1/breakpoints/{id}")).await?;
            }
            Ok(format!("removed {} breakpoint(s) of {handle}", ids.len()))
        }
        Action::Tell { action, data } => tell(client, handle, action, data).await,
        _ => Ok(String::new()),
    }
}

/// Tells the selected agent's oldest paused turn what to do.
async fn tell(
    client: &Client,
    handle: &str,
    action: clade_core::StopAction,
    data: Option<String>,
) -> Result<String> {
    let waiting = client.get(&format!("/v1/debug/stops?agent={handle}")).await?;
    let stop = waiting["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
        .next_back()
        .map(str::to_owned)
        .with_context(|| format!("no turn of {handle} waits at a breakpoint"))?;
    let mut body = json!({ "action": action.as_str() });
    match (action, data) {
        (clade_core::StopAction::Skip, Some(result)) => body["result"] = json!(result),
        (clade_core::StopAction::Edit, Some(arguments)) => {
            body["arguments"] = serde_json::from_str(&arguments)?;
        }
        _ => {}
    }
    let told = client.post(&format!("/v1/debug/stops/{stop}"), body).await?.1;
    Ok(format!(
        "{} at {}: the turn goes on",
        action.as_str(),
        told["place"].as_str().unwrap_or("?")
    ))
}

/// Decides the approval `id`, or the selected agent's oldest waiting one.
async fn decide(
    client: &Client,
    handle: &str,
    id: Option<String>,
    approve: bool,
) -> Result<String> {
    let decision = if approve { "approve" } else { "deny" };
    let id = match id {
        Some(id) => id,
        None => {
            let pending = client.get("/v1/approvals?status=pending").await?;
            let oldest = pending["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["agent"] == handle)
                .filter_map(|a| a["id"].as_str())
                .next_back()
                .map(str::to_owned);
            oldest.with_context(|| format!("nothing of {handle} waits for approval"))?
        }
    };
    client.post(&format!("/v1/approvals/{id}"), json!({ "decision": decision })).await?;
    Ok(format!("{} {id}", if approve { "approved" } else { "denied" }))
}

/// Reads the terminal's keys (and resizes, which redraw).
async fn keys(tx: mpsc::Sender<Incoming>) {
    let mut events = EventStream::new();
    while let Some(Ok(event)) = events.next().await {
        let incoming = match event {
            Event::Key(key) => Incoming::Key(key),
            Event::Resize(..) => Incoming::Redraw,
            _ => continue,
        };
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

/// Reads the agents and their status every [`REFRESH`], the token use every fifth time, and
/// the selected agent's sessions.
async fn refresh(
    client: Arc<Client>,
    tx: mpsc::Sender<Incoming>,
    mut selected: watch::Receiver<Option<String>>,
) {
    let mut tokens: HashMap<String, u64> = HashMap::new();
    for round in 0u64.. {
        if round % 5 == 0 {
            tokens = usage(&client).await.unwrap_or(tokens);
        }
        match agents(&client, &tokens).await {
            Ok(rows) => {
                if tx.send(Incoming::Agents(rows)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                let _ = tx.send(Incoming::Done(format!("{err:#}"), true)).await;
            }
        }
        let handle = selected.borrow_and_update().clone();
        if let Some(handle) = handle
            && let Ok(page) = client.get(&format!("/v1/sessions?limit=6&agent={handle}")).await
        {
            let sessions = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let text = |key: &str| s[key].as_str().unwrap_or_default().to_owned();
                    let id = text("id");
                    // The end of the id: a UUIDv7's start is its time, alike for near sessions.
                    let short = id.get(id.len().saturating_sub(8)..).unwrap_or_default().to_owned();
                    (format!("{} · {}", text("channel"), text("actor")), short)
                })
                .collect();
            let _ = tx.send(Incoming::Sessions(handle, sessions)).await;
        }
        // Sooner when the selection changes.
        let _ = tokio::time::timeout(REFRESH, selected.changed()).await;
    }
}

async fn agents(client: &Client, tokens: &HashMap<String, u64>) -> Result<Vec<AgentRow>> {
    let page = client.get("/v1/agents?limit=100").await?;
    let mut rows = Vec::new();
    for (index, agent) in page["items"].as_array().into_iter().flatten().enumerate() {
        let handle = agent["handle"].as_str().unwrap_or_default().to_owned();
        let mut row =
            AgentRow { tokens: tokens.get(&handle).copied().unwrap_or(0), ..AgentRow::default() };
        if index < WITH_STATUS
            && let Ok(status) = client.get(&format!("/v1/agents/{handle}/status")).await
        {
            row.paused = !status["paused"].is_null();
            let sessions = status["sessions"].as_array().cloned().unwrap_or_default();
            row.running = sessions.iter().filter(|s| s["state"] == RUNNING).count();
            row.waiting = sessions.len() - row.running;
        }
        row.handle = handle;
        rows.push(row);
    }
    Ok(rows)
}

/// Tokens in and out per agent over the last 30 days.
async fn usage(client: &Client) -> Result<HashMap<String, u64>> {
    let usage = client.get("/v1/usage").await?;
    let mut tokens = HashMap::new();
    for item in usage["items"].as_array().into_iter().flatten() {
        let used = item["input_tokens"].as_u64().unwrap_or(0)
            + item["output_tokens"].as_u64().unwrap_or(0);
        *tokens.entry(item["agent"].as_str().unwrap_or_default().to_owned()).or_default() += used;
    }
    Ok(tokens)
}

/// Follows `agent`'s live events for as long as the UI runs, reconnecting after a drop and
/// resuming after the last event seen.
async fn follow(
    (client, clock): (Arc<Client>, Arc<dyn clade_core::Clock>),
    agent: String,
    tx: mpsc::Sender<Incoming>,
) {
    let mut last: Option<String> = None;
    loop {
        let path = format!("/v1/agents/{agent}/events");
        if let Ok(response) = client.stream(&path, last.as_deref()).await {
            let mut body = response.bytes_stream();
            let mut parser = clade_model::sse::SseParser::default();
            while let Some(Ok(chunk)) = body.next().await {
                let mut events = Vec::new();
                if parser.push(&chunk, &mut events).is_err() {
                    break;
                }
                for event in events {
                    last = event.id.clone().or(last);
                    let kind = event.event.unwrap_or_default();
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    let data = data.get("data").cloned().unwrap_or(data);
                    if tx.send(Incoming::Live { agent: agent.clone(), kind, data }).await.is_err() {
                        return;
                    }
                }
            }
        }
        clock.sleep(REFRESH).await;
    }
}
