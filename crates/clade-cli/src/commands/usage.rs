//! `clade usage`: model usage and cost per agent and model (and day, and tenant), and
//! `clade usage estimate`: what a session cost, and what it would cost on other models.

use anyhow::{Context as _, Result, bail};
use clade_store::UsageSummary;
use serde_json::json;

use super::models::parse_since;
use crate::cli::{UsageArgs, UsageCommand};
use crate::context::Ctx;
use crate::output;

pub(super) async fn run(ctx: &Ctx, args: UsageArgs) -> Result<()> {
    match args.command {
        Some(UsageCommand::Estimate { file, session, models, json }) => {
            let used = match (&file, &session) {
                (Some(file), _) => used_in_file(file)?,
                (None, Some(session)) => used_in_session(ctx, session).await?,
                (None, None) => bail!("name a trace file, or a session with --session"),
            };
            estimate(ctx, used, &models, json)
        }
        None => report(ctx, &args).await,
    }
}

/// Dollars of `micros` millionths, as the tables print them.
fn usd(micros: u64) -> String {
    format!("{:.4}", micros as f64 / 1e6)
}

async fn report(ctx: &Ctx, args: &UsageArgs) -> Result<()> {
    let since = parse_since(&args.since, ctx.store.now())?;
    let tenants = if args.all_tenants {
        ctx.store.tenants().list().await?
    } else {
        vec![ctx.tenant().await?]
    };
    let mut rows: Vec<(String, UsageSummary)> = Vec::new();
    for tenant in &tenants {
        // A handle names an agent within a tenant: with --all-tenants, each one's of that
        // handle, where there is one.
        let agent = match ctx.explicit_agent() {
            None => None,
            Some(handle) if !args.all_tenants => Some(ctx.agent(Some(handle)).await?.id),
            Some(handle) => match ctx.store.agents(tenant.id).get(handle).await {
                Ok(agent) => Some(agent.id),
                Err(err) if err.is_not_found() => continue,
                Err(err) => return Err(err.into()),
            },
        };
        let by = if args.by_day { clade_store::UsageBy::Day } else { clade_store::UsageBy::Total };
        let summary = ctx.store.usage(tenant.id).summary(agent, since, by).await?;
        rows.extend(summary.into_iter().map(|u| (tenant.name.to_string(), u)));
    }
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|(tenant, u)| {
                let mut item = json!({
                    "tenant": tenant, "agent": u.agent, "model": u.model, "calls": u.calls,
                    "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                    "cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens,
                    "cost_usd": u.cost_micros as f64 / 1e6,
                });
                if let Some(day) = &u.day {
                    item["day"] = json!(day);
                }
                item
            })
            .collect();
        return output::json(&json!({ "since": since.as_millis(), "items": items }));
    }
    if rows.is_empty() {
        let whose = match tenants.as_slice() {
            [one] => format!("tenant {}", one.name),
            _ => "any tenant".to_owned(),
        };
        println!("no model usage in {whose} since {since}");
        return Ok(());
    }
    let mut headers = vec!["AGENT", "MODEL", "CALLS", "INPUT", "CACHED", "OUTPUT", "COST USD"];
    if args.by_day {
        headers.insert(0, "DAY");
    }
    if args.all_tenants {
        headers.insert(0, "TENANT");
    }
    let mut table: Vec<Vec<String>> = rows
        .iter()
        .map(|(tenant, u)| {
            let mut row = vec![
                u.agent.clone().unwrap_or_else(|| "(tenant)".into()),
                u.model.clone(),
                u.calls.to_string(),
                u.input_tokens.to_string(),
                u.cached_tokens.to_string(),
                u.output_tokens.to_string(),
                usd(u.cost_micros),
            ];
            if let Some(day) = &u.day {
                row.insert(0, day.clone());
            }
            if args.all_tenants {
                row.insert(0, tenant.clone());
            }
            row
        })
        .collect();
    let mut total = vec![String::new(); headers.len()];
    total[0] = "total".into();
    total[headers.len() - 5] = rows.iter().map(|(_, u)| u.calls).sum::<u64>().to_string();
    total[headers.len() - 1] = usd(rows.iter().map(|(_, u)| u.cost_micros).sum());
    table.push(total);
    output::table(&headers, &table);
    println!("since {since}");
    Ok(())
}

/// What a session or a trace file used: its model calls' tokens and recorded cost.
struct Used {
    /// `session <id>` or `<file>`, as the report names it.
    what: String,
    /// Its `session` or `file` field in JSON.
    field: (&'static str, String),
    calls: u64,
    tokens: clade_model::types::Usage,
    recorded: u64,
    models: Vec<String>,
}

async fn used_in_session(ctx: &Ctx, session: &str) -> Result<Used> {
    let (tenant, found) = super::trace::session_of(ctx, session).await?;
    let used = ctx.store.usage(tenant.id).of_session(found.id).await?;
    Ok(Used {
        what: format!("session {session}"),
        field: ("session", session.to_owned()),
        calls: used.iter().map(|u| u.calls).sum(),
        tokens: clade_model::types::Usage {
            input_tokens: used.iter().map(|u| u.input_tokens).sum(),
            output_tokens: used.iter().map(|u| u.output_tokens).sum(),
            cached_input_tokens: used.iter().map(|u| u.cached_tokens).sum(),
            cache_write_tokens: used.iter().map(|u| u.cache_write_tokens).sum(),
        },
        recorded: used.iter().map(|u| u.cost_micros).sum(),
        models: used.into_iter().map(|u| u.model).collect(),
    })
}

/// The model calls of a trace file: every span of a GenAI `chat` (or other model) operation,
/// with its token counts; the recorded cost is Clade's own `clade.cost_micros` where present.
fn used_in_file(path: &std::path::Path) -> Result<Used> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read {}: name a file `clade trace export` wrote", path.display())
    })?;
    let mut used = Used {
        what: path.display().to_string(),
        field: ("file", path.display().to_string()),
        calls: 0,
        tokens: clade_model::types::Usage::default(),
        recorded: 0,
        models: Vec::new(),
    };
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not JSON: a trace file holds one OTLP/JSON export request per line",
                path.display(),
                n + 1
            )
        })?;
        for span in clade_otlp::wire::spans_of_json(&value) {
            let operation = span.str("gen_ai.operation.name").unwrap_or_default();
            // The agent's span sums its calls: counting it too would count them twice.
            if !matches!(operation, "chat" | "text_completion" | "generate_content") {
                continue;
            }
            used.calls += 1;
            used.tokens.input_tokens += span.uint("gen_ai.usage.input_tokens").unwrap_or(0);
            used.tokens.output_tokens += span.uint("gen_ai.usage.output_tokens").unwrap_or(0);
            used.tokens.cached_input_tokens +=
                span.uint("gen_ai.usage.cache_read.input_tokens").unwrap_or(0);
            used.tokens.cache_write_tokens +=
                span.uint("gen_ai.usage.cache_creation.input_tokens").unwrap_or(0);
            used.recorded += span.uint("clade.cost_micros").unwrap_or(0);
            let model = span.str("gen_ai.response.model").or(span.str("gen_ai.request.model"));
            if let Some(model) = model.filter(|m| !used.models.iter().any(|u| u == m)) {
                used.models.push(model.to_owned());
            }
        }
    }
    Ok(used)
}

/// Prices what was used: as recorded, and on each of `models` (default: every model of
/// clade.yaml with a price).
fn estimate(ctx: &Ctx, used: Used, models: &[String], json: bool) -> Result<()> {
    let configured = &ctx.config.models;
    for name in models {
        if !configured.contains_key(name) {
            let known: Vec<&str> = configured.keys().map(String::as_str).collect();
            bail!(
                "no model {name:?} in clade.yaml (models: {}): name one of them, or add it with its price",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            );
        }
    }
    let targets: Vec<&String> = if models.is_empty() {
        configured.iter().filter(|(_, m)| m.price != Default::default()).map(|(n, _)| n).collect()
    } else {
        models.iter().collect()
    };
    let Used { what, field, calls, tokens, recorded, models: models_used } = used;
    let priced: Vec<(&String, u64)> = targets
        .iter()
        .map(|name| {
            let price = configured.get(*name).map(|m| clade_runtime::models::price_of(&m.price));
            (*name, price.map_or(0, |p| p.cost_micros(&tokens)))
        })
        .collect();
    if json {
        let on: Vec<_> = priced
            .iter()
            .map(|(name, cost)| json!({ "model": name, "cost_usd": *cost as f64 / 1e6 }))
            .collect();
        let mut report = json!({
            "calls": calls,
            "input_tokens": tokens.input_tokens, "output_tokens": tokens.output_tokens,
            "cached_tokens": tokens.cached_input_tokens, "cache_write_tokens": tokens.cache_write_tokens,
            "models_used": models_used,
            "recorded_cost_usd": recorded as f64 / 1e6,
            "on": on,
        });
        report[field.0] = json!(field.1);
        return output::json(&report);
    }
    if calls == 0 {
        println!("{what} made no model calls: nothing to price");
        return Ok(());
    }
    println!(
        "{what}: {calls} model call{} on {}; {} input, {} cached, {} output tokens; recorded cost {} USD",
        if calls == 1 { "" } else { "s" },
        models_used.join(", "),
        tokens.input_tokens,
        tokens.cached_input_tokens,
        tokens.output_tokens,
        usd(recorded)
    );
    if priced.is_empty() {
        println!(
            "no model of clade.yaml has a price: add `price:` to one, or name one with --model"
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = priced
        .iter()
        .map(|(name, cost)| {
            let versus = match recorded {
                0 => "-".to_owned(),
                _ => format!("{:.2}x", *cost as f64 / recorded as f64),
            };
            vec![(*name).clone(), usd(*cost), versus]
        })
        .collect();
    output::table(&["ON MODEL", "COST USD", "VS RECORDED"], &rows);
    Ok(())
}
