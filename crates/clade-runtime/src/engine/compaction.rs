//! Compaction: a session whose context nears its model's window has its oldest turns folded
//! into a summary, written by the `compactor` route, while the newest turns stay word for
//! word. The folded turns are mined for memories first (by the model's answer and by
//! [`clade_memory::mine`]), so what the summary leaves out can still be recalled. The turns
//! themselves stay in the store: the transcript is archived, never replaced.
//!
//! A compaction runs after the turn that found the context too long, beside the session (its
//! next turns go on with the old context until the summary commits), or within a turn whose
//! model refused its prompt as too long, before that turn's one retry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use clade_core::{MemoryKind, ProcessKind, TurnId};
use clade_model::{Message, ModelRequest, Params};
use clade_store::{NewMemory, NewSummary, PastTurn, Provenance, SessionSummary};

use super::Inner;
use super::actor::TurnContext;

/// A session's context limits, in tokens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// What the channel model's prompt may fill: its window less the answer and the tool
    /// schemas ([`crate::models::Models::prompt_room`]).
    pub(super) tokens: u32,
    /// Past this a compaction starts after the turn.
    pub(super) at: u32,
    /// Past this a turn leaves its oldest history out at once.
    pub(super) emergency: u32,
    /// What the turns kept word for word may fill after a compaction.
    pub(super) keep: u32,
}

impl Window {
    /// The limits of `ctx`'s turns; `None` when compaction is off.
    pub(super) fn of(inner: &Inner, ctx: &TurnContext) -> Option<Self> {
        let c = ctx.settings.sessions.compaction;
        if !c.enabled {
            return None;
        }
        let agent = crate::models::Routed::of(&ctx.tenant, &ctx.agent);
        let tokens = inner.models().prompt_room(ProcessKind::Channel, Some(agent));
        let share = |percent: u8| (u64::from(tokens) * u64::from(percent) / 100) as u32;
        Some(Self {
            tokens,
            at: share(c.at_percent),
            emergency: share(c.emergency_percent),
            keep: share(c.keep_percent),
        })
    }
}

/// About how many tokens `text` is: providers' rough rule of one per 4 bytes.
pub(super) fn tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// What a turn's system prompt says before a session's summary.
pub(super) const SUMMARY_HEADING: &str = "Summary of this conversation's earlier turns (they were compacted; the transcript is archived):";

/// The most unsummarised turns one compaction reads.
const MAX_READ: u32 = 2000;

const INSTRUCTIONS: &str = "You compact a conversation so that it can go on within a limited context. \
Summarise the previous summary (if any) and the turns below in at most WORDS words, keeping every \
name, number, date, decision, preference, commitment and open task. Answer with JSON only: \
{\"summary\": \"...\", \"memories\": [{\"kind\": \"fact\", \"content\": \"one self-contained sentence\"}]} \
where kind is one of fact, preference, decision, identity, event, observation, goal, todo.";

/// Starts a compaction of `ctx`'s session beside it, unless one runs already.
pub(super) fn start(inner: &Arc<Inner>, ctx: &Arc<TurnContext>) {
    let Some(window) = Window::of(inner, ctx) else { return };
    let session = ctx.session.id;
    if !inner.compacting.lock().unwrap_or_else(|e| e.into_inner()).insert(session) {
        return;
    }
    let (inner, ctx) = (inner.clone(), ctx.clone());
    inner.runtime.clone().spawn(async move {
        let keep_turns = ctx.settings.sessions.history_turns / 2;
        let limits = Limits { keep_tokens: window.keep, keep_turns, summary_tokens: window.keep / 2 };
        let result = Box::pin(compact(&inner, &ctx, limits)).await;
        inner.compacting.lock().unwrap_or_else(|e| e.into_inner()).remove(&session);
        if let Err(err) = result {
            tracing::warn!(session = %session, error = %err, "compaction failed; the session goes on uncompacted and tries again after its next turn");
        }
    });
}

/// What a compaction keeps out of the summary, and how long the summary may be (tokens).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) keep_tokens: u32,
    pub(super) keep_turns: u32,
    pub(super) summary_tokens: u32,
}

/// Folds the session's oldest unsummarised turns into a new summary, keeping the newest ones
/// that fit in `limits.keep_tokens` (at most `limits.keep_turns` of them) out of it. `None`:
/// nothing to fold.
pub(super) async fn compact(
    inner: &Inner,
    ctx: &TurnContext,
    limits: Limits,
) -> Result<Option<SessionSummary>, clade_store::Error> {
    let Limits { keep_tokens, keep_turns, .. } = limits;
    let session = ctx.session.id;
    let store = &inner.visible;
    let last = TurnId::from_bytes([0xff; 16]);
    let previous = store.summary_before(session, last).await?;
    let through = previous.as_ref().map(|s| s.through);
    let mut turns = store.history(session, through, last, MAX_READ + 1).await?;
    // More wait than one compaction reads: the oldest are folded first (none kept), and the
    // next compaction goes on from them, so no turn is ever skipped.
    let backlog = turns.len() > MAX_READ as usize;
    if backlog {
        turns = store.oldest_turns(session, through, MAX_READ).await?;
    }
    let mut kept = 0;
    let mut kept_tokens = 0u32;
    for turn in turns.iter().rev().take_while(|_| !backlog) {
        let size = tokens(&turn.user).saturating_add(tokens(&turn.reply));
        if kept >= keep_turns as usize || kept_tokens.saturating_add(size) > keep_tokens {
            break;
        }
        kept_tokens += size;
        kept += 1;
    }
    let agent = crate::models::Routed::of(&ctx.tenant, &ctx.agent);
    let models = inner.models();
    // The compactor's prompt must fit its own window, with room for its answer.
    let room = models.context_window(ProcessKind::Compactor, Some(agent)) / 2;
    let summary_tokens = limits.summary_tokens.min(room / 4).clamp(64, 4096);
    let mut fold: &[PastTurn] = &turns[..turns.len() - kept];
    let mut transcript = String::new();
    for (n, turn) in fold.iter().enumerate() {
        let part = format!("User: {}\nAssistant: {}\n\n", turn.user, turn.reply);
        if n > 0 && tokens(&transcript).saturating_add(tokens(&part)) > room {
            fold = &fold[..n];
            break;
        }
        transcript.push_str(&cut(&part, room as usize * 4));
    }
    let Some(through) = fold.last().map(|t| t.id) else { return Ok(None) };

    let mut mined: Vec<(MemoryKind, String, f64, TurnId)> = fold
        .iter()
        .flat_map(|turn| {
            clade_memory::mine::mine(&turn.user)
                .into_iter()
                .map(move |m| (m.kind, m.content, m.importance, turn.id))
        })
        .collect();
    let previous_text = previous.as_ref().map(|s| s.text.as_str()).unwrap_or_default();
    let request = ModelRequest {
        messages: vec![
            Message::system(INSTRUCTIONS.replace("WORDS", &(summary_tokens * 3 / 4).to_string())),
            Message::user(format!(
                "Previous summary:\n{}\n\nTurns to fold in:\n{transcript}",
                if previous_text.is_empty() { "(none)" } else { previous_text }
            )),
        ],
        params: Params { max_tokens: summary_tokens * 2, temperature: Some(0.0) },
        cache_scope: Some(ctx.tenant.id.to_string()),
        ..ModelRequest::default()
    };
    let called = Box::pin(models.call(
        &ctx.tenant,
        Some(&ctx.agent),
        ProcessKind::Compactor,
        &request,
        &mut |_| {},
    ))
    .await;
    let (text, model) = match called {
        Ok(outcome) => {
            let (summary, memories) = parse_answer(&outcome.response.text);
            mined.extend(memories.into_iter().map(|(kind, content)| (kind, content, 0.6, through)));
            (summary, Some(outcome.model))
        }
        Err(err) => {
            tracing::warn!(session = %session, error = %err, "the compactor route failed; summarising without a model");
            (String::new(), None)
        }
    };
    let text = if text.trim().is_empty() {
        without_model(previous_text, fold.len(), &mined)
    } else {
        text
    };
    let text = cut(text.trim(), summary_tokens as usize * 4);

    let saved = Box::pin(remember(inner, ctx, &mined)).await;
    inner.failpoints.hit("mid_compaction");
    let summary = store
        .save_summary(NewSummary {
            tenant: ctx.tenant.id,
            agent: ctx.agent.id,
            session,
            through,
            text,
            turns: previous.as_ref().map_or(0, |s| s.turns).saturating_add(fold.len() as u32),
            model,
            memories: saved,
        })
        .await?;
    inner.compactions.fetch_add(1, Ordering::SeqCst);
    tracing::info!(session = %session, folded = fold.len(), kept, memories = saved, "session compacted");
    Ok(Some(summary))
}

/// Saves what was mined into the agent's memory under the session's isolation key; returns how
/// many items were saved or merged. Without memory (or on a failure) nothing is, and the
/// summary is all that carries the folded turns.
async fn remember(
    inner: &Inner,
    ctx: &TurnContext,
    mined: &[(MemoryKind, String, f64, TurnId)],
) -> u32 {
    let recall = inner.recall.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(recall) = recall else { return 0 };
    let store = inner.store.tenant_scope(ctx.tenant.id);
    let scope = recall.memory.isolation_key(&ctx.session.source).unwrap_or_default();
    let mut saved = 0;
    for (kind, content, importance, turn) in mined {
        let new = NewMemory {
            agent: ctx.agent.id,
            scope: scope.clone(),
            kind: *kind,
            content: content.clone(),
            importance: *importance,
            confidence: 0.6,
            provenance: Provenance {
                session: Some(ctx.session.id),
                turn: Some(*turn),
                tool: None,
                by: "compaction".to_owned(),
            },
            untrusted: false,
            embedding: None,
        };
        match recall.memory.save(&store, new).await {
            Ok(_) => saved += 1,
            Err(err) => {
                tracing::warn!(session = %ctx.session.id, error = %err, "compaction could not save a memory")
            }
        }
    }
    saved
}

/// The summary when no model wrote one: the previous summary and what was mined.
fn without_model(
    previous: &str,
    folded: usize,
    mined: &[(MemoryKind, String, f64, TurnId)],
) -> String {
    let mut text = String::new();
    if !previous.is_empty() {
        text.push_str(previous);
        text.push_str("\n\n");
    }
    text.push_str(&format!("{folded} more turns were compacted without a model"));
    if mined.is_empty() {
        text.push('.');
    } else {
        text.push_str("; what they stated:");
        for (kind, content, _, _) in mined {
            text.push_str(&format!("\n- ({}) {content}", kind.as_str()));
        }
    }
    text
}

/// The summary and memories of a compactor's answer: JSON as asked (in a code fence or not),
/// else the whole answer as the summary.
fn parse_answer(answer: &str) -> (String, Vec<(MemoryKind, String)>) {
    #[derive(serde::Deserialize)]
    struct Answer {
        summary: String,
        #[serde(default)]
        memories: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        kind: String,
        content: String,
    }
    let trimmed = answer.trim();
    match serde_json::from_str::<Answer>(clade_memory::upkeep::unfenced(answer)) {
        Ok(parsed) => {
            let memories = parsed
                .memories
                .into_iter()
                .filter_map(|item| {
                    let kind = MemoryKind::parse(&item.kind)?;
                    let content = item.content.trim().to_owned();
                    (!content.is_empty()).then_some((kind, content))
                })
                .collect();
            (parsed.summary, memories)
        }
        Err(_) => (trimmed.to_owned(), Vec::new()),
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_answers_and_falls_back_to_text() {
        let (summary, memories) = parse_answer(
            "```json\n{\"summary\": \"They planned a trip.\", \"memories\": [{\"kind\": \"decision\", \"content\": \"Fly on Friday.\"}, {\"kind\": \"rumour\", \"content\": \"x\"}]}\n```",
        );
        assert_eq!(summary, "They planned a trip.");
        assert_eq!(memories, vec![(MemoryKind::Decision, "Fly on Friday.".to_owned())]);
        let (summary, memories) = parse_answer("  They talked.  ");
        assert_eq!((summary.as_str(), memories.len()), ("They talked.", 0));
    }

    #[test]
    fn cuts_at_character_boundaries() {
        assert_eq!(cut("héllo wörld", 7), "hél...");
        assert_eq!(cut("héllo wörld", 6), "hé...");
        assert_eq!(cut("short", 10), "short");
    }
}
