//! `clade flow`: check a flow file here (no gateway needed), store flows in the running
//! gateway (versioned), run a file or a stored flow and follow it, and steer its runs
//! (`clade-flow`; the gateway's `/v1/flows`).

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clade_core::{Clock, ExecutionStatus, FlowTaskStatus};
use serde_json::{Value, json};

use super::sessions::Client;
use crate::cli::{FlowCommand, FlowRunsCommand};
use crate::context::Ctx;

/// How often `--watch` looks at the run.
const WATCH_EVERY: Duration = Duration::from_millis(300);

/// `clade flow check FILE`: every problem at its place, or the tasks in run order.
pub(super) fn check(file: &Path) -> Result<()> {
    match clade_flow::load(file) {
        Ok(flow) => {
            println!(
                "{}: flow {} checks: {} task(s), run in this order: {}",
                file.display(),
                flow.name,
                flow.tasks.len(),
                flow.task_order().join(", ")
            );
            Ok(())
        }
        Err(err @ (clade_flow::Error::Read { .. } | clade_flow::Error::TooLarge { .. })) => {
            Err(err.into())
        }
        Err(err) => {
            let count = err.problems().len();
            eprintln!("{err}");
            bail!(
                "{} has {count} problem{}: fix {} and check again (`docs/flow.schema.json` lets an editor check as you type)",
                file.display(),
                if count == 1 { "" } else { "s" },
                if count == 1 { "it" } else { "them" }
            )
        }
    }
}

pub(super) async fn run(ctx: &Ctx, command: FlowCommand) -> Result<()> {
    match command {
        FlowCommand::Check { file } => check(&file),
        FlowCommand::Run { flow, inputs, watch, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let clock = ctx.store.clock().clone();
            let (path, body) = run_request(&client, &flow, &inputs).await?;
            let (_, run) = client.post(&path, body).await?;
            started(&client, &clock, run, (watch, json)).await
        }
        FlowCommand::Save { file, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            save(&client, &file, json).await
        }
        FlowCommand::List { json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            list(&client, json).await
        }
        FlowCommand::Show { flow, versions, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let (name, version) = stored_ref(&flow)?;
            show(&client, name, version, versions, json).await
        }
        FlowCommand::Delete { name, yes, server } => {
            if !yes {
                bail!(
                    "deleting flow {name} removes every stored version of it (its runs keep their text); add --yes to confirm"
                );
            }
            let client = Client::new(ctx, server.server.as_deref())?;
            client.delete(&format!("/v1/flows/{name}")).await?;
            println!("deleted flow {name}");
            Ok(())
        }
        FlowCommand::Runs(command) => runs(ctx, command).await,
    }
}

/// The route and body that start a run of `flow`: a file's text given inline, or a stored
/// flow by `NAME[@VERSION]`, pinned to the version whose inputs were read here.
async fn run_request(client: &Client, flow: &str, inputs: &[String]) -> Result<(String, Value)> {
    let file = Path::new(flow);
    // A path that cannot be looked at is read as a file, so the read's error is shown.
    if file.try_exists().unwrap_or(true) || flow.contains(['/', '.']) {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read flow file {}", file.display()))?;
        // Checked here first, so a mistake is shown at its place before anything is sent.
        let parsed = clade_flow::parse(&text, file).map_err(|err| anyhow::anyhow!("{err}"))?;
        let inputs = parse_inputs(&parsed, inputs)?;
        let body = json!({ "flow": text, "file": file.display().to_string(), "inputs": inputs });
        return Ok(("/v1/flows/runs".to_owned(), body));
    }
    let (name, version) = stored_ref(flow)?;
    let stored = client.get(&stored_path(name, version)).await.with_context(|| {
        format!("{flow:?} is neither a flow file here nor a stored flow (`clade flow list`)")
    })?;
    let text = stored["source"].as_str().unwrap_or_default();
    let parsed = clade_flow::parse(text, Path::new(&clade_flow::stored::file_of(name)))
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let inputs = parse_inputs(&parsed, inputs)?;
    let body = json!({ "version": stored["version"], "inputs": inputs });
    Ok((format!("/v1/flows/{name}/runs"), body))
}

/// A stored flow named as `NAME` or `NAME@VERSION`.
fn stored_ref(flow: &str) -> Result<(&str, Option<i64>)> {
    match flow.split_once('@') {
        Some((name, version)) => {
            let version: i64 = version.parse().ok().filter(|v| *v >= 1).with_context(|| {
                format!("{flow:?}: write a stored flow as NAME or NAME@VERSION (a number from 1)")
            })?;
            Ok((name, Some(version)))
        }
        None => Ok((flow, None)),
    }
}

fn stored_path(name: &str, version: Option<i64>) -> String {
    match version {
        Some(version) => format!("/v1/flows/{name}?version={version}"),
        None => format!("/v1/flows/{name}"),
    }
}

/// After a start: the run's id, or with `--watch` its progress until it ends (an error unless
/// it completed).
async fn started(
    client: &Client,
    clock: &Arc<dyn Clock>,
    run: Value,
    (watch, json): (bool, bool),
) -> Result<()> {
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    if !watch {
        if json {
            println!("{}", serde_json::to_string_pretty(&run)?);
        } else {
            println!(
                "started flow run {id} of {}{}: follow it with `clade flow runs show {id}`",
                run["flow"].as_str().unwrap_or_default(),
                run["version"].as_i64().map(|v| format!(" (version {v})")).unwrap_or_default(),
            );
        }
        return Ok(());
    }
    let ended = follow(client, clock, &id, json).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ended)?);
    } else {
        print_run(&ended);
    }
    match run_status(&ended) {
        Some(ExecutionStatus::Completed) => Ok(()),
        _ => bail!(
            "flow run {id} ended {}: {}",
            ended["status"].as_str().unwrap_or("unknown"),
            ended["error"].as_str().unwrap_or("no reason given")
        ),
    }
}

/// `clade flow save FILE`.
async fn save(client: &Client, file: &Path, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read flow file {}", file.display()))?;
    clade_flow::parse(&text, file).map_err(|err| anyhow::anyhow!("{err}"))?;
    let body = json!({ "flow": text, "file": file.display().to_string() });
    let (status, saved) = client.post("/v1/flows", body).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&saved)?);
        return Ok(());
    }
    let (name, version) = (saved["name"].as_str().unwrap_or_default(), &saved["version"]);
    if status == 201 {
        println!("saved flow {name} version {version}: run it with `clade flow run {name}`");
    } else {
        println!("flow {name} unchanged: version {version} has the same text");
    }
    Ok(())
}

/// `clade flow list`.
async fn list(client: &Client, json: bool) -> Result<()> {
    let list = client.get("/v1/flows").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let flows = list["flows"].as_array().cloned().unwrap_or_default();
    if flows.is_empty() {
        println!("no stored flows: store one with `clade flow save FILE`");
    }
    for flow in flows {
        println!(
            "{:<24} v{:<4} {} task(s), saved by {}",
            flow["name"].as_str().unwrap_or_default(),
            flow["version"],
            flow["tasks"].as_array().map_or(0, Vec::len),
            flow["saved_by"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `clade flow show NAME[@VERSION] [--versions]`.
async fn show(
    client: &Client,
    name: &str,
    version: Option<i64>,
    versions: bool,
    json: bool,
) -> Result<()> {
    let found = if versions {
        client.get(&format!("/v1/flows/{name}/versions")).await?
    } else {
        client.get(&stored_path(name, version)).await?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if versions {
        for flow in found["flows"].as_array().into_iter().flatten() {
            println!(
                "v{:<4} sha256 {} saved by {}",
                flow["version"],
                flow["sha256"].as_str().unwrap_or_default(),
                flow["saved_by"].as_str().unwrap_or_default()
            );
        }
    } else {
        print!("{}", found["source"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// `--input NAME=VALUE`s, each read as its declared type.
pub(super) fn parse_inputs(
    flow: &clade_flow::Flow,
    given: &[String],
) -> Result<BTreeMap<String, Value>> {
    let mut inputs = BTreeMap::new();
    for pair in given {
        let Some((name, text)) = pair.split_once('=') else {
            bail!("--input {pair:?}: write it as NAME=VALUE");
        };
        let Some(input) = flow.inputs.get(name) else {
            let known: Vec<&str> = flow.inputs.keys().map(String::as_str).collect();
            bail!(
                "--input {name}: flow {} has no input {name:?} (its inputs: {})",
                flow.name,
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            );
        };
        let value = clade_flow::flow::input_value(input.kind, text)
            .with_context(|| format!("--input {name}"))?;
        inputs.insert(name.to_owned(), value);
    }
    Ok(inputs)
}

/// Polls the run until it ends, printing each task as it ends (and, on a terminal, a line of
/// progress); the ended run.
async fn follow(client: &Client, clock: &Arc<dyn Clock>, id: &str, json: bool) -> Result<Value> {
    let terminal = std::io::stderr().is_terminal() && !json;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let run = client.get(&format!("/v1/flows/runs/{id}")).await?;
        let tasks = run["tasks"].as_array().cloned().unwrap_or_default();
        for task in &tasks {
            let (name, status) = (
                task["id"].as_str().unwrap_or_default(),
                task["status"].as_str().unwrap_or_default(),
            );
            if task_status(task) == Some(FlowTaskStatus::Pending)
                || seen.get(name).map(String::as_str) == Some(status)
            {
                continue;
            }
            seen.insert(name.to_owned(), status.to_owned());
            if !json {
                if terminal {
                    eprint!("\r\x1b[2K");
                }
                eprintln!("{} {name} {status}{}", mark(status), detail(task));
            }
        }
        let status = run["status"].as_str().unwrap_or_default();
        if run_status(&run).is_some_and(ExecutionStatus::is_final) {
            if terminal {
                eprint!("\r\x1b[2K");
            }
            return Ok(run);
        }
        if terminal {
            let done = tasks
                .iter()
                .filter(|t| task_status(t).is_some_and(FlowTaskStatus::has_ended))
                .count();
            eprint!("\r\x1b[2K{status}: {done}/{} tasks done", tasks.len());
        }
        clock.sleep(WATCH_EVERY).await;
    }
}

fn run_status(run: &Value) -> Option<ExecutionStatus> {
    run["status"].as_str().and_then(ExecutionStatus::parse)
}

fn task_status(task: &Value) -> Option<FlowTaskStatus> {
    task["status"].as_str().and_then(FlowTaskStatus::parse)
}

fn mark(status: &str) -> &'static str {
    match FlowTaskStatus::parse(status) {
        Some(FlowTaskStatus::Completed) => "✓",
        Some(FlowTaskStatus::Failed) => "✗",
        Some(FlowTaskStatus::Running) => "▶",
        _ => "–",
    }
}

fn detail(task: &Value) -> String {
    match (task_status(task), task["error"].as_str()) {
        (Some(FlowTaskStatus::Failed), Some(error)) => format!(": {error}"),
        _ => match task["attempts"].as_u64() {
            Some(n) if n > 1 => format!(" ({n} questions)"),
            _ => String::new(),
        },
    }
}

fn print_run(run: &Value) {
    println!(
        "flow run {} of {}: {}{}",
        run["id"].as_str().unwrap_or_default(),
        run["flow"].as_str().unwrap_or_default(),
        run["status"].as_str().unwrap_or_default(),
        run["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default()
    );
    let usage = &run["usage"];
    if usage.is_object() {
        println!(
            "  spent: {} model call(s), {} tokens in, {} out, ${:.6}",
            usage["model_calls"],
            usage["input_tokens"],
            usage["output_tokens"],
            usage["cost_usd"].as_f64().unwrap_or_default()
        );
    }
    for task in run["tasks"].as_array().into_iter().flatten() {
        let status = task["status"].as_str().unwrap_or_default();
        let output = match &task["output"] {
            Value::Null => String::new(),
            Value::String(text) => format!(": {text}"),
            other => format!(": {other}"),
        };
        println!("  {} {} {status}{output}", mark(status), task["id"].as_str().unwrap_or_default());
    }
}

async fn runs(ctx: &Ctx, command: FlowRunsCommand) -> Result<()> {
    match command {
        FlowRunsCommand::List { limit, flow, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let path = match flow {
                Some(flow) => format!("/v1/flows/{flow}/runs?limit={limit}"),
                None => format!("/v1/flows/runs?limit={limit}"),
            };
            let list = client.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let runs = list["runs"].as_array().cloned().unwrap_or_default();
            if runs.is_empty() {
                println!("no flow runs yet: start one with `clade flow run FILE`");
            }
            for run in runs {
                let tasks = run["tasks"].as_array().cloned().unwrap_or_default();
                let done = tasks
                    .iter()
                    .filter(|t| task_status(t).is_some_and(FlowTaskStatus::has_ended))
                    .count();
                println!(
                    "{}  {:<10} {:<20} {done}/{} tasks",
                    run["id"].as_str().unwrap_or_default(),
                    run["status"].as_str().unwrap_or_default(),
                    run["flow"].as_str().unwrap_or_default(),
                    tasks.len()
                );
            }
            Ok(())
        }
        FlowRunsCommand::Show { id, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let run = client.get(&format!("/v1/flows/runs/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                print_run(&run);
            }
            Ok(())
        }
        FlowRunsCommand::Cancel { id, server } => steer(ctx, &id, "cancel", server.server).await,
        FlowRunsCommand::Pause { id, server } => steer(ctx, &id, "pause", server.server).await,
        FlowRunsCommand::Resume { id, server } => steer(ctx, &id, "resume", server.server).await,
        FlowRunsCommand::Retry { id, watch, json, server } => {
            let client = Client::new(ctx, server.server.as_deref())?;
            let clock = ctx.store.clock().clone();
            let (_, run) = client.post(&format!("/v1/flows/runs/{id}/retry"), json!({})).await?;
            started(&client, &clock, run, (watch, json)).await
        }
    }
}

async fn steer(ctx: &Ctx, id: &str, action: &str, server: Option<String>) -> Result<()> {
    let client = Client::new(ctx, server.as_deref())?;
    let (_, run) = client.post(&format!("/v1/flows/runs/{id}/{action}"), json!({})).await?;
    println!("flow run {id}: {}", run["status"].as_str().unwrap_or_default());
    Ok(())
}
