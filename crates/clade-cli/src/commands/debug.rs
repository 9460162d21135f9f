//! `clade debug`: breakpoints and paused turns on the running gateway, through its API (so it
//! works the same against a remote gateway with `--server` and `CLADE_TOKEN`).

use anyhow::{Context as _, Result, bail};
use clade_core::{BreakAt, StopAction};
use serde_json::{Value, json};

use super::sessions::Client;
use crate::cli::DebugCommand;
use crate::context::Ctx;
use crate::output;

pub(super) async fn run(ctx: &Ctx, cmd: DebugCommand) -> Result<()> {
    match cmd {
        DebugCommand::Break { agent, at, tool, session, server } => {
            if BreakAt::parse(&at).is_none() {
                bail!("unknown --at {at:?}: use model, tool or error");
            }
            let client = Client::new(ctx, server.server.as_deref())?;
            let body = json!({ "agent": agent, "at": at, "tool": tool, "session": session });
            let (_, set) = client.post("/v1/breakpoints", body).await?;
            println!("breakpoint {} set: {}", text(&set["id"]), describe(&set));
            println!("paused turns: `clade debug stops`");
        }
        DebugCommand::Breakpoints { agent, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let page = client.get(&with_agent("/v1/breakpoints?", agent.as_deref())).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if json {
                return output::json(&items);
            }
            if items.is_empty() {
                println!("no breakpoints: set one with `clade debug break <agent> --at tool`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> =
                items.iter().map(|b| vec![text(&b["id"]), describe(b)]).collect();
            output::table(&["ID", "PAUSES"], &rows);
        }
        DebugCommand::Unbreak { id, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            client.delete(&format!("/v1/breakpoints/{}", encode(&id))).await?;
            println!("removed breakpoint {id}");
        }
        DebugCommand::Stops { agent, all, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let status = if all { "all" } else { "waiting" };
            let path = with_agent(&format!("/v1/debug/stops?status={status}&"), agent.as_deref());
            let items = client.get(&path).await?["items"].as_array().cloned().unwrap_or_default();
            if json {
                return output::json(&items);
            }
            if items.is_empty() {
                println!("no turn waits at a breakpoint");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|s| {
                    let state = match s["action"].as_str() {
                        Some(action) => action.to_owned(),
                        None if s["waiting"] == json!(true) => "waiting".to_owned(),
                        None => "turn ended".to_owned(),
                    };
                    vec![text(&s["id"]), text(&s["agent"]), text(&s["place"]), state, what(s)]
                })
                .collect();
            output::table(&["STOP", "AGENT", "PLACE", "STATE", "WHAT"], &rows);
        }
        DebugCommand::Show { stop, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let value = client.get(&format!("/v1/debug/stops/{}", encode(&stop))).await?;
            if json {
                return output::json(&value);
            }
            show(&value);
        }
        DebugCommand::Continue { stop, server } => {
            tell(ctx, &stop, json!({ "action": StopAction::Continue.as_str() }), server).await?;
        }
        DebugCommand::Step { stop, server } => {
            tell(ctx, &stop, json!({ "action": StopAction::Step.as_str() }), server).await?;
        }
        DebugCommand::Skip { stop, result, server } => {
            let body = json!({ "action": StopAction::Skip.as_str(), "result": result });
            tell(ctx, &stop, body, server).await?;
        }
        DebugCommand::Edit { stop, arguments, server } => {
            let arguments: Value = serde_json::from_str(&arguments)
                .context("--arguments is not JSON: give the tool's arguments as a JSON object")?;
            if !arguments.is_object() {
                bail!("--arguments must be a JSON object, like {{\"path\": \"notes.md\"}}");
            }
            let body = json!({ "action": StopAction::Edit.as_str(), "arguments": arguments });
            tell(ctx, &stop, body, server).await?;
        }
    }
    Ok(())
}

async fn tell(ctx: &Ctx, stop: &str, body: Value, server: crate::cli::ServerArgs) -> Result<()> {
    let client = Client::new(ctx, server.server.as_deref())?;
    let (_, told) = client.post(&format!("/v1/debug/stops/{}", encode(stop)), body).await?;
    println!(
        "{} stop {} ({}): turn {} goes on",
        text(&told["action"]),
        text(&told["id"]),
        text(&told["place"]),
        text(&told["turn_id"])
    );
    Ok(())
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// A path segment as the user typed it, with what would change the path escaped.
fn encode(segment: &str) -> String {
    segment.replace('%', "%25").replace('/', "%2F").replace('?', "%3F").replace('#', "%23")
}

fn with_agent(path: &str, agent: Option<&str>) -> String {
    match agent {
        Some(agent) => format!("{path}agent={}", encode(agent).replace('&', "%26")),
        None => path.trim_end_matches(['?', '&']).to_owned(),
    }
}

/// `before tool fs.write in ada's session …`.
fn describe(breakpoint: &Value) -> String {
    let at = match (breakpoint["at"].as_str(), breakpoint["tool"].as_str()) {
        (Some("model"), _) => "before each model call".to_owned(),
        (Some("tool"), Some(tool)) => format!("before each call of {tool}"),
        (Some("tool"), None) => "before each tool call".to_owned(),
        (Some("error"), Some(tool)) => format!("on each failed call of {tool}"),
        (Some("error"), None) => "on each failed call".to_owned(),
        (other, _) => other.unwrap_or("?").to_owned(),
    };
    let whose = match breakpoint["session"].as_str() {
        Some(session) => format!("{}'s session {session}", text(&breakpoint["agent"])),
        None => format!("every session of {}", text(&breakpoint["agent"])),
    };
    format!("{at}, in {whose}")
}

/// A stop's pending call or error, on one line.
fn what(stop: &Value) -> String {
    let detail = &stop["detail"];
    if let Some(error) = detail["error"].as_str() {
        return format!("failed: {}", error.lines().next().unwrap_or_default());
    }
    if detail["call"].is_object() {
        return format!("{} {}", text(&detail["call"]["name"]), detail["call"]["arguments"]);
    }
    let messages = detail["messages"].as_array().map_or(0, Vec::len);
    let tools = detail["tools"].as_array().map_or(0, Vec::len);
    format!("model call: {messages} messages, {tools} tools offered")
}

fn show(stop: &Value) {
    println!(
        "stop {} of agent {}, turn {}",
        text(&stop["id"]),
        text(&stop["agent"]),
        text(&stop["turn_id"])
    );
    println!(
        "  at {} ({})",
        text(&stop["place"]),
        if stop["waiting"] == json!(true) { "waiting" } else { "not waiting" }
    );
    let detail = &stop["detail"];
    if let Some(error) = detail["error"].as_str() {
        println!("  error: {error}");
    }
    if detail["call"].is_object() {
        println!("  call {} ({})", text(&detail["call"]["name"]), text(&detail["call"]["id"]));
        let pretty = serde_json::to_string_pretty(&detail["call"]["arguments"]).unwrap_or_default();
        for line in pretty.lines() {
            println!("    {line}");
        }
    }
    if let Some(messages) = detail["messages"].as_array() {
        println!("  context: {} messages", messages.len());
        for message in messages {
            let role = message["role"].as_str().unwrap_or("?");
            let said = message["text"].as_str().or(message["content"].as_str()).unwrap_or_default();
            let line: String = said.chars().take(160).collect::<String>().replace('\n', " ");
            println!("    [{role}] {line}");
        }
        let tools: Vec<String> =
            detail["tools"].as_array().map(|t| t.iter().map(text).collect()).unwrap_or_default();
        println!("  tools offered: {}", tools.join(", "));
    }
    if let Some(action) = stop["action"].as_str() {
        println!("  told: {action} by {}", text(&stop["decided_by"]));
    } else {
        let id = text(&stop["id"]);
        println!(
            "  next: clade debug continue|step {id}, clade debug skip {id} --result TEXT, clade debug edit {id} --arguments JSON"
        );
    }
}
