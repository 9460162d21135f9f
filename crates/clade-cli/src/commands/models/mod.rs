//! `clade models list|call|fetch`.

use std::io::Write;

use anyhow::{Result, bail};
use clade_core::Timestamp;
use clade_model::{Message, ModelRequest, Params, StreamEvent};
use clade_runtime::ProcessKind;

use crate::cli::{KindArg, ModelsCommand};
use crate::context::Ctx;
use crate::output;

mod fetch;

pub(super) async fn run(ctx: &Ctx, cmd: ModelsCommand) -> Result<()> {
    let models = ctx.models();
    match cmd {
        ModelsCommand::List => {
            let rows: Vec<Vec<String>> =
                models.list().into_iter().map(|(a, b, c, d)| vec![a, b, c, d]).collect();
            output::table(&["NAME", "PROVIDER", "MODEL", "BASE URL"], &rows);
            println!();
            // With --agent, its routes: its own, its template's, then the deployment's.
            let routed = match ctx.explicit_agent() {
                Some(_) => Some((ctx.tenant().await?, ctx.agent(None).await?)),
                None => None,
            };
            for (label, kind) in [
                ("channel", ProcessKind::Channel),
                ("branch", ProcessKind::Branch),
                ("worker", ProcessKind::Worker),
                ("compactor", ProcessKind::Compactor),
                ("cortex", ProcessKind::Cortex),
            ] {
                println!(
                    "route {label:<10} {}",
                    models
                        .chain(
                            kind,
                            routed.as_ref().map(|(t, a)| clade_runtime::models::Routed::of(t, a))
                        )
                        .join(" -> ")
                );
            }
            if models.offline_only() {
                println!(
                    "\nno model configured: replies come from the scripted offline provider, which is not a language model"
                );
                println!(
                    "run `clade models fetch local` for a small model that answers here with no key and no network,"
                );
                println!(
                    "or set OPENAI_API_KEY or ANTHROPIC_API_KEY (and CLADE_MODEL), or add models to clade.yaml"
                );
            }
        }
        ModelsCommand::Call { text, kind, max_tokens } => {
            let tenant = ctx.tenant().await?;
            // An agent is optional here: without one the call is the tenant's.
            let agent = match ctx.agent(None).await {
                Ok(agent) => Some(agent),
                Err(_) if ctx.explicit_agent().is_none() => None,
                Err(err) => return Err(err),
            };
            let kind = match kind {
                KindArg::Channel => ProcessKind::Channel,
                KindArg::Branch => ProcessKind::Branch,
                KindArg::Worker => ProcessKind::Worker,
                KindArg::Compactor => ProcessKind::Compactor,
                KindArg::Cortex => ProcessKind::Cortex,
            };
            let routed = agent.as_ref().map(|a| clade_runtime::models::Routed::of(&tenant, a));
            let max_tokens = max_tokens.unwrap_or_else(|| models.answer_tokens(kind, routed));
            if max_tokens == 0 {
                bail!("--max-tokens must be at least 1");
            }
            let request = ModelRequest {
                messages: vec![Message::user(text)],
                params: Params { max_tokens, temperature: None },
                ..ModelRequest::default()
            };
            let mut stdout = std::io::stdout();
            let mut on_event = |event: &StreamEvent| {
                if let StreamEvent::TextDelta(delta) = event {
                    let _ = stdout.write_all(delta.as_bytes());
                    let _ = stdout.flush();
                }
            };
            let outcome = models
                .call(&tenant, agent.as_ref(), kind, &request, &mut on_event)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!();
            for call in &outcome.response.tool_calls {
                println!("[tool call {} {} {}]", call.id, call.name, call.arguments);
            }
            let u = outcome.response.usage;
            eprintln!(
                "[{}: {} in + {} cached / {} out tokens, ${:.6}]",
                outcome.model,
                u.input_tokens,
                u.cached_input_tokens,
                u.output_tokens,
                outcome.cost_micros as f64 / 1e6
            );
        }
        ModelsCommand::Fetch { what: crate::cli::FetchWhat::Embeddings, from } => {
            fetch::embeddings(ctx, from.as_deref()).await?
        }
        ModelsCommand::Fetch { what: crate::cli::FetchWhat::Local, from } => {
            fetch::local_chat(ctx, from.as_deref()).await?
        }
    }
    Ok(())
}

/// `30m`, `24h`, `7d` back from `now`, or a `YYYY-MM-DD` date.
pub(crate) fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp> {
    if let Some(date) = Timestamp::parse_date(text) {
        return Ok(date);
    }
    let span = parse_span_ms(text, "--since").map_err(|_| {
        anyhow::anyhow!(
            "invalid --since {text:?}: use a duration such as 30m, 24h or 7d, or a date such as 2026-11-01"
        )
    })?;
    Ok(Timestamp::from_millis(now.as_millis() - span))
}

/// A duration such as `90s`, `30m`, `24h` or `7d`, in milliseconds; `flag` names it in errors.
pub(crate) fn parse_span_ms(text: &str, flag: &str) -> Result<i64> {
    match crate::cli::duration(text) {
        Ok(span) if !span.is_zero() => Ok(i64::try_from(span.as_millis()).unwrap_or(i64::MAX)),
        Ok(_) => Err(anyhow::anyhow!("invalid {flag} {text:?}: it must be longer than nothing")),
        Err(why) => Err(anyhow::anyhow!("invalid {flag}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_dates() {
        let now = Timestamp::from_millis(10 * 86_400_000);
        assert_eq!(parse_since("1d", now).unwrap().as_millis(), 9 * 86_400_000);
        assert_eq!(parse_since("30m", now).unwrap().as_millis(), 10 * 86_400_000 - 1_800_000);
        assert_eq!(parse_since("1970-01-02", now).unwrap().as_millis(), 86_400_000);
        assert!(parse_since("soon", now).is_err());
        // Written as every duration flag is (humantime): units combine, unknown ones fail.
        assert_eq!(parse_since("1h30m", now).unwrap().as_millis(), 10 * 86_400_000 - 5_400_000);
        assert!(parse_since("5x", now).is_err());
        assert!(parse_since("0s", now).is_err());
        assert!(parse_since("", now).is_err());
    }
}
