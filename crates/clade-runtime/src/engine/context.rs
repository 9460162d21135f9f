//! A turn's context, built by [`ContextSource`]s in order: the agent's persona files, the
//! session's own persona layers, where and when, and the session's history, kept by its actor
//! between turns.

use std::sync::Arc;

use clade_core::{Agent, SessionId};
use clade_model::Message;
use clade_store::{EventRow, Source, TurnRow};
use futures::future::BoxFuture;

use super::Inner;

/// An agent's persona files as read: `(name, contents)`, empty when missing, and what each
/// file looked like on disk then.
#[derive(Default)]
pub(super) struct Persona {
    pub(super) files: Vec<(&'static str, Vec<u8>)>,
    pub(super) seen: Vec<Option<FileStamp>>,
}

/// Size, inode and modification time: a file whose stamp is unchanged is not read again (an
/// edit that keeps the size within the file system's timestamp granularity goes unseen until
/// the next one).
type FileStamp = (u64, u64, Option<std::time::SystemTime>);

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.ino(), meta.modified().ok()))
}

/// The most of one persona file a prompt shows.
const MAX_PERSONA_FILE: usize = 256 * 1024;

/// The file at `path` inside the agent's workspace `dir`, opened as its tools open files
/// (`clade_tools::workspace::read`: nothing outside the workspace, whatever link the agent
/// planted, say to `/proc/self/environ`); empty when it is missing or cannot be read.
fn read_confined(dir: &std::path::Path, path: &std::path::Path) -> Vec<u8> {
    let Some(relative) = path.strip_prefix(dir).ok().and_then(|p| p.to_str()) else {
        return Vec::new();
    };
    match clade_tools::workspace::read(dir, relative, MAX_PERSONA_FILE) {
        Ok((bytes, _)) => bytes,
        Err(err) => {
            if path.symlink_metadata().is_ok() {
                tracing::warn!(file = relative, error = %err, "a persona file was not read");
            }
            Vec::new()
        }
    }
}

/// How long persona files stay trusted without a `stat`: an edit made outside Clade (an
/// operator's editor) applies to turns that start at most this long after it. A tool call in
/// this process (the agent's own `fs.write`, a shell command) ends the trust at once, so an
/// agent that edits its persona sees the edit in its next turn. Checking every turn cost a
/// `stat` per file and layer, about 7% of a turn's CPU.
const PERSONA_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// When files were last checked against the disk.
#[derive(Clone, Copy)]
pub(super) struct Checked {
    pub(super) at: clade_core::Timestamp,
    /// [`ToolRunner::runs`] then.
    pub(super) tool_runs: u64,
}

impl Checked {
    pub(super) fn now(inner: &Inner) -> Self {
        Self { at: inner.store.now(), tool_runs: inner.tools.runs() }
    }

    pub(super) fn still_current(&self, inner: &Inner) -> bool {
        let age = inner.store.now().as_millis().saturating_sub(self.at.as_millis());
        (0..PERSONA_RECHECK.as_millis() as i64).contains(&age)
            && self.tool_runs == inner.tools.runs()
    }
}

/// The agent's persona files for this turn. They may change between turns (an operator's
/// edit, the agent's own `fs.write`), so a turn checks them with a `stat` per file, unless
/// they were checked moments ago (see [`PERSONA_RECHECK`]); only a changed file is read again.
pub(super) fn read_persona(inner: &Inner, agent: &Agent) -> Arc<Persona> {
    let known = inner
        .personas
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&agent.id)
        .and_then(|(held, checked)| Some((held.upgrade()?, *checked)));
    if let Some((known, checked)) = &known
        && checked.still_current(inner)
    {
        return known.clone();
    }
    let checked = Checked::now(inner);
    let dir = match inner.workspaces.open(agent) {
        Ok(dir) => dir,
        Err(err) => {
            tracing::warn!(agent = %agent.handle, error = %err, "cannot read persona files");
            return Arc::default();
        }
    };
    let paths = clade_store::agents::PERSONA_FILES.map(|file| dir.join(file));
    let seen: Vec<Option<FileStamp>> = paths.iter().map(|p| stamp(p)).collect();
    let persona = match known {
        Some((known, _)) if known.seen == seen => known,
        _ => {
            let files = clade_store::agents::PERSONA_FILES
                .into_iter()
                .zip(&paths)
                .map(|(file, path)| (file, read_confined(&dir, path)))
                .collect();
            Arc::new(Persona { files, seen })
        }
    };
    let mut personas = inner.personas.lock().unwrap_or_else(|e| e.into_inner());
    // Agents whose sessions all left memory leave the cache too (swept as it doubles).
    if personas.len() >= 64 && personas.len().is_power_of_two() {
        personas.retain(|_, (held, _)| held.strong_count() > 0);
    }
    personas.insert(agent.id, (Arc::downgrade(&persona), checked));
    persona
}

/// A session's own persona layers, from the agent's workspace: what its platform
/// (`channels/<platform>.md`), its channel (`channels/<platform>/<channel>.md`) and its actor
/// (`actors/<platform>/<actor>.md`) add to the agent's files, in that order. A name that
/// cannot be a plain file name (empty, a leading dot, a slash or other characters outside
/// `A-Za-z0-9._@+-`, over 128 bytes) has no layer.
#[derive(Default)]
pub(super) struct Layers {
    /// Each layer's path, its file's stamp when read, and its text (empty when missing).
    pub(super) files: Vec<(std::path::PathBuf, Option<FileStamp>, String)>,
    pub(super) checked: Option<Checked>,
}

impl Layers {
    /// Re-reads the layers whose files changed since the last turn (a `stat` each otherwise,
    /// unless they were checked moments ago: see [`PERSONA_RECHECK`]).
    pub(super) fn refresh(&mut self, inner: &Inner, agent: &Agent, source: &Source) {
        if self.checked.is_some_and(|checked| checked.still_current(inner)) {
            return;
        }
        self.checked = Some(Checked::now(inner));
        // `read_persona` has made sure the workspace exists; a missing layer is just empty.
        let paths = layer_paths(&inner.workspaces.locate(agent.id), source);
        if self.files.len() != paths.len() || self.files.iter().zip(&paths).any(|(f, p)| f.0 != *p)
        {
            self.files = paths.into_iter().map(|p| (p, None, String::new())).collect();
        }
        let dir = inner.workspaces.locate(agent.id);
        for (path, seen, text) in &mut self.files {
            let now = stamp(path);
            if now != *seen {
                *text = String::from_utf8(read_confined(&dir, path)).unwrap_or_default();
                *seen = now;
            }
        }
    }

    pub(super) fn texts(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(_, _, text)| text.as_str()).filter(|t| !t.trim().is_empty())
    }
}

fn layer_paths(dir: &std::path::Path, source: &Source) -> Vec<std::path::PathBuf> {
    pub(super) fn plain(name: &str) -> Option<&str> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
        ok.then_some(name)
    }
    let Some(platform) = plain(source.platform.as_str()) else { return Vec::new() };
    let mut paths = vec![dir.join("channels").join(format!("{platform}.md"))];
    if let Some(channel) = plain(&source.channel) {
        paths.push(dir.join("channels").join(platform).join(format!("{channel}.md")));
    }
    if let Some(actor) = plain(&source.actor) {
        paths.push(dir.join("actors").join(platform).join(format!("{actor}.md")));
    }
    paths
}

/// What a session's actor keeps from one turn to the next.
#[derive(Default)]
pub(super) struct Kept {
    /// The last completed turns, so a turn's context needs no store read.
    pub(super) history: Option<History>,
    /// The agent's persona as last read; holding it keeps it in the engine's shared cache.
    pub(super) persona: Option<Arc<Persona>>,
    /// The session's own persona layers as last read.
    pub(super) layers: Layers,
    /// When the last turn's outcome was written (see the actor's idle exit).
    pub(super) ended_at: Option<clade_core::Timestamp>,
    /// Set by a turn whose context grew past its compaction threshold: the actor starts a
    /// compaction once the turn ends.
    pub(super) compact: bool,
    /// The session's working memory as last read, and [`ToolRunner::runs`] then: only a tool
    /// call changes it, so it is read again only after one.
    pub(super) working: Option<(Vec<clade_store::WorkingEntry>, u64)>,
    /// The branches and workers the session has running, as last read, and the engine's count
    /// of fork changes then: read again only after one.
    pub(super) forks: Option<(Vec<clade_store::ForkRow>, u64)>,
}

/// A session's newest summary and its last completed turns after it, `(user text, reply)`,
/// oldest first, as the store would return them. Only the session's actor runs its turns, so
/// it can keep this current by itself; it is dropped when it grows past
/// [`HISTORY_CACHE_BYTES`], and read again after any compaction.
#[derive(Default)]
pub(super) struct History {
    pub(super) summary: Option<String>,
    pub(super) turns: std::collections::VecDeque<(String, String)>,
    pub(super) bytes: usize,
    /// Turns after the summary fell out for `sessions.history_turns`: a compaction should
    /// fold them in.
    pub(super) overflow: bool,
    /// The engine's count of compactions when this was read.
    pub(super) compactions: u64,
}

/// Above this a session's history is read from the store for every turn instead of kept in
/// memory, so an active session stays small whatever its messages' length.
const HISTORY_CACHE_BYTES: usize = 16 * 1024;

impl History {
    pub(super) fn push(&mut self, user: String, reply: String, keep: usize) {
        self.bytes += user.len() + reply.len();
        self.turns.push_back((user, reply));
        while self.turns.len() > keep {
            if let Some((user, reply)) = self.turns.pop_front() {
                self.bytes -= user.len() + reply.len();
                self.overflow = true;
            }
        }
    }

    /// Shows the summary in the system prompt and the turns, but the first `skip`, as messages.
    fn show(&self, skip: usize, into: &mut Composed) {
        if let Some(summary) = &self.summary {
            paragraph(
                &mut into.system,
                &format!("{}\n{summary}", super::compaction::SUMMARY_HEADING),
            );
        }
        into.history.reserve_exact(2 * self.turns.len().saturating_sub(skip));
        for (user, reply) in self.turns.iter().skip(skip) {
            into.history.push(Message::user(user.clone()));
            into.history.push(Message::Assistant { text: reply.clone(), tool_calls: Vec::new() });
        }
    }

    /// The session's newest summary before `before` and the (at most `keep`) turns after it.
    async fn read(
        store: &clade_store::SystemStore,
        session: SessionId,
        before: clade_core::TurnId,
        keep: u32,
        compactions: u64,
    ) -> clade_store::Result<Self> {
        let summary = store.summary_before(session, before).await?;
        // One more than shown: whether turns wait to be compacted.
        let turns = store
            .history(session, summary.as_ref().map(|s| s.through), before, keep.saturating_add(1))
            .await?;
        let mut history = Self { summary: summary.map(|s| s.text), compactions, ..Self::default() };
        for turn in turns {
            history.push(turn.user, turn.reply, keep as usize);
        }
        Ok(history)
    }
}

/// What a context source sees of the turn being composed.
pub(crate) struct TurnInput<'a> {
    pub turn: &'a TurnRow,
    pub events: &'a [EventRow],
    /// A yielded turn run again: it may be older than turns completed since.
    pub resumed: bool,
}

/// A turn's context as its sources build it: the system prompt, then earlier messages, then
/// what was recalled from memory for this turn.
#[derive(Default)]
pub(crate) struct Composed {
    pub system: String,
    pub history: Vec<Message>,
    /// The session's working memory, shown after the history.
    pub working: String,
    pub recalled: String,
}

/// One part of a turn's context (persona files, the session's layers, where and when, its
/// history, memory recall). Sources run in a fixed order and each appends to what the
/// previous ones wrote, so the prompt's prefix stays byte-stable between turns.
pub(crate) trait ContextSource: Send {
    fn contribute<'a>(
        &'a mut self,
        input: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()>;

    /// The turn completed with `reply`: a source that keeps state between turns updates it.
    fn completed(&mut self, _events: &[EventRow], _reply: &str) {}

    /// The model refused the context, of about `refused` tokens, as too long: make this
    /// source's part smaller for one more try. Returns whether it did.
    fn shrink(&mut self, _refused: u32) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(false))
    }
}

/// A turn's messages as one text, a line each: what the history keeps and recall asks about.
fn events_text(events: &[EventRow]) -> String {
    events.iter().map(|e| e.text.as_str()).collect::<Vec<_>>().join("\n")
}

/// Appends `text` as a paragraph of the system prompt.
fn paragraph(system: &mut String, text: &str) {
    system.push_str(text);
    system.push_str("\n\n");
}

/// The agent's persona files, in their fixed order.
pub(super) struct PersonaFiles<'a> {
    pub(super) persona: &'a Persona,
    /// `{{name}}`s and their values ([`persona_variables`]).
    pub(super) variables: &'a [(String, String)],
}

impl ContextSource for PersonaFiles<'_> {
    fn contribute<'a>(
        &'a mut self,
        _: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        for (_, contents) in &self.persona.files {
            if let Ok(text) = std::str::from_utf8(contents)
                && !contents.is_empty()
            {
                paragraph(&mut into.system, &render(text, self.variables));
            }
        }
        Box::pin(std::future::ready(()))
    }
}

/// `text` with each `{{name}}` of `variables` replaced by its value, in one pass (a value is
/// never read for names itself); a name without a value stays as written.
pub(super) fn render(text: &str, variables: &[(String, String)]) -> String {
    if !text.contains("{{") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // A name is short: look no further for its end (a text of many `{{` stays linear).
        let near = &after[..after.char_indices().nth(66).map_or(after.len(), |(i, _)| i)];
        let value = near.find("}}").and_then(|end| {
            let name = &after[..end];
            let found = variables.iter().find(|(key, _)| key == name);
            found.map(|(_, value)| (value, end))
        });
        match value {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variables an agent's persona files may name: the built-in `agent`, `handle` and
/// `tenant`, then its tenant's `variables` over those of `"*"`.
pub(super) fn persona_variables(
    tenants: &std::collections::BTreeMap<String, clade_config::TenantConfig>,
    tenant: &clade_core::Tenant,
    agent: &clade_core::Agent,
) -> Vec<(String, String)> {
    let shown =
        if agent.display_name.is_empty() { agent.handle.as_str() } else { &agent.display_name };
    let mut variables = vec![
        ("agent".to_owned(), shown.to_owned()),
        ("handle".to_owned(), agent.handle.as_str().to_owned()),
        ("tenant".to_owned(), tenant.name.as_str().to_owned()),
    ];
    let own = tenants.get(tenant.name.as_str()).map(|t| &t.variables);
    let every = tenants.get("*").map(|t| &t.variables);
    for set in [own, every].into_iter().flatten() {
        for (name, value) in set {
            if !variables.iter().any(|(key, _)| key == name) {
                variables.push((name.clone(), value.clone()));
            }
        }
    }
    variables
}

/// The session's own persona layers (platform, channel, actor).
pub(super) struct SessionLayers<'a>(pub(super) &'a Layers);

impl ContextSource for SessionLayers<'_> {
    fn contribute<'a>(
        &'a mut self,
        _: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        for text in self.0.texts() {
            paragraph(&mut into.system, text);
        }
        Box::pin(std::future::ready(()))
    }
}

/// Where the conversation happens, and the date (not the time, so the prompt stays the same,
/// and a provider's prompt cache warm, for a whole day).
pub(super) struct Whereabouts<'a> {
    /// What the session runs as: it says where the model is.
    pub(super) profile: &'a dyn super::profile::Profile,
    pub(super) source: &'a Source,
    pub(super) now: clade_core::Timestamp,
}

impl ContextSource for Whereabouts<'_> {
    fn contribute<'a>(
        &'a mut self,
        _: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        let today = self.now.to_string();
        let today = today.get(..10).unwrap_or(&today);
        let text = self.profile.whereabouts(self.source, today);
        into.system.push_str(&text);
        Box::pin(std::future::ready(()))
    }
}

/// The session's summary (in the system prompt) and its last completed turns after it: kept by
/// its actor between turns (see [`History`]), read from the store when not kept. It measures
/// the context too: past the compaction threshold it asks for a compaction after the turn, and
/// past the emergency threshold it leaves the oldest turns out of this one.
pub(super) struct SessionHistory<'a> {
    pub(super) kept: &'a mut Option<History>,
    pub(super) inner: &'a super::Inner,
    pub(super) ctx: &'a super::actor::TurnContext,
    /// Steered turns take in messages mid-turn, which the kept history would not see.
    pub(super) steered: bool,
    /// The context's limits; `None` when compaction is off.
    pub(super) window: Option<super::compaction::Window>,
    /// Set when the session should be compacted after this turn.
    pub(super) compact: &'a mut bool,
    /// After [`ContextSource::shrink`]: the most turns shown.
    pub(super) cap: Option<usize>,
    /// Turns shown in the last context composed.
    pub(super) shown: usize,
}

impl ContextSource for SessionHistory<'_> {
    fn contribute<'a>(
        &'a mut self,
        input: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            use super::compaction::tokens;
            let (store, session) = (&self.inner.visible, self.ctx.session.id);
            let keep = self.ctx.settings.sessions.history_turns;
            let compactions = self.inner.compactions.load(std::sync::atomic::Ordering::SeqCst);
            // A resumed turn may be older than turns that completed since it yielded: the kept
            // history would give it their messages. It reads the store's history before it,
            // and the next turn reads the store's again. A compaction since the history was
            // kept changes what the context shows.
            if input.resumed || self.kept.as_ref().is_some_and(|k| k.compactions != compactions) {
                *self.kept = None;
            }
            let mut fresh = None;
            if self.kept.is_none() {
                match History::read(store, session, input.turn.id, keep, compactions).await {
                    Ok(history) if !self.steered && !input.resumed => *self.kept = Some(history),
                    Ok(history) => fresh = Some(history),
                    Err(err) => {
                        tracing::warn!(session = %session, error = %err, "cannot read the session's history")
                    }
                }
            }
            let first = into.history.len();
            let mut overflow = false;
            if let Some(history) = self.kept.as_ref().or(fresh.as_ref()) {
                let skip = self.cap.map_or(0, |cap| history.turns.len().saturating_sub(cap));
                history.show(skip, into);
                overflow = history.overflow || skip > 0;
            }
            if self.kept.as_ref().is_some_and(|k| k.bytes > HISTORY_CACHE_BYTES) {
                *self.kept = None;
            }
            if let Some(window) = self.window {
                let message_tokens = |m: &Message| match m {
                    Message::User { text } | Message::Assistant { text, .. } => tokens(text),
                    _ => 0,
                };
                let events: u32 = input.events.iter().map(|e| tokens(&e.text)).sum();
                let mut total = tokens(&into.system)
                    .saturating_add(events)
                    .saturating_add(into.history[first..].iter().map(message_tokens).sum());
                if total > window.emergency {
                    // No model call: the oldest turns leave this context until it is back
                    // under the compaction threshold. They stay in the store.
                    let mut dropped = 0;
                    while total > window.at && into.history.len() >= first + 2 {
                        let pair: u32 =
                            into.history[first..first + 2].iter().map(message_tokens).sum();
                        into.history.drain(first..first + 2);
                        total = total.saturating_sub(pair);
                        dropped += 1;
                    }
                    tracing::warn!(session = %session, dropped, window = window.tokens, "the context passed its emergency threshold; its oldest turns were left out");
                    *self.compact = true;
                }
                if total > window.at || overflow {
                    *self.compact = true;
                }
            }
            self.shown = (into.history.len() - first) / 2;
        })
    }

    fn completed(&mut self, events: &[EventRow], reply: &str) {
        if let Some(cache) = self.kept.as_mut() {
            let user = events_text(events);
            cache.push(user, reply.to_owned(), self.ctx.settings.sessions.history_turns as usize);
            if cache.bytes > HISTORY_CACHE_BYTES {
                *self.kept = None;
            }
        }
    }

    fn shrink(&mut self, refused: u32) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            // Fold what the model refused into the summary now, so that the next prompt is at
            // most about half the refused one.
            let limits = super::compaction::Limits {
                keep_tokens: refused / 4,
                keep_turns: (self.shown / 2) as u32,
                summary_tokens: refused / 8,
            };
            *self.kept = None;
            match super::compaction::compact(self.inner, self.ctx, limits).await {
                Ok(Some(_)) => return true,
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(session = %self.ctx.session.id, error = %err, "compaction after a too-long prompt failed; leaving turns out instead")
                }
            }
            if self.shown == 0 {
                return false;
            }
            self.cap = Some(self.shown / 2);
            true
        })
    }
}

/// How long a recalled item goes before its use is written again.
const RENEW_AFTER_MS: i64 = 3_600_000;

/// The agent's memories most relevant to the turn's messages, within the session's isolation
/// key. A failure to recall leaves them out: memory never fails a turn.
pub(super) struct MemoryRecall<'a> {
    pub(super) recall: Option<Arc<super::Recall>>,
    pub(super) store: clade_store::TenantStore,
    pub(super) agent: clade_core::AgentId,
    pub(super) source: &'a Source,
}

impl ContextSource for MemoryRecall<'_> {
    fn contribute<'a>(
        &'a mut self,
        input: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(recall) = self.recall.as_ref().filter(|r| r.items > 0) else { return };
            let query = events_text(input.events);
            let filter = clade_store::MemoryFilter {
                scope: recall.memory.isolation_key(self.source),
                ..clade_store::MemoryFilter::default()
            };
            let started = self.store.now();
            let recalled = recall
                .memory
                .recall(&self.store, self.agent, &filter, &query, recall.items as usize)
                .await;
            crate::telemetry::recalled(crate::telemetry::between(started, self.store.now()));
            match recalled {
                Ok(hits) => {
                    into.recalled = clade_memory::render(&hits, recall.tokens as usize);
                    // Recalled is used: its decay starts again. Only items not renewed within
                    // the hour are written, after the turn's read, so a turn waits on no write.
                    let now = self.store.now().as_millis();
                    let stale: Vec<_> = hits
                        .iter()
                        .filter(|hit| now - hit.item.accessed_at.as_millis() > RENEW_AFTER_MS)
                        .map(|hit| hit.item.id)
                        .collect();
                    if !stale.is_empty() {
                        let (store, agent) = (self.store.clone(), self.agent);
                        tokio::spawn(async move {
                            if let Err(err) = store.memories().touch(agent, stale).await {
                                tracing::debug!(%agent, error = %err, "recalled memories were not marked used");
                            }
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(agent = %self.agent, error = %err, "memory recall failed; the turn goes on without it")
                }
            }
        })
    }
}

/// The session's working memory (its scratchpad), shown after the history: kept by the actor
/// and read again only after a tool call in this process, since only the scratchpad tools write
/// it. A failed read leaves it out of the turn.
pub(super) struct WorkingMemory<'a> {
    pub(super) kept: &'a mut Option<(Vec<clade_store::WorkingEntry>, u64)>,
    pub(super) inner: &'a Inner,
    pub(super) tenant: clade_core::TenantId,
    pub(super) session: SessionId,
}

impl ContextSource for WorkingMemory<'_> {
    fn contribute<'a>(
        &'a mut self,
        _input: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let runs = self.inner.tools.runs();
            if self.kept.as_ref().is_none_or(|(_, seen)| *seen != runs) {
                match self
                    .inner
                    .visible
                    .tenant_scope(self.tenant)
                    .working()
                    .list(self.session)
                    .await
                {
                    Ok(entries) => *self.kept = Some((entries, runs)),
                    Err(err) => {
                        *self.kept = None;
                        tracing::warn!(session = %self.session, error = %err, "cannot read the session's working memory; the turn goes on without it");
                    }
                }
            }
            if let Some((entries, _)) = self.kept.as_ref().filter(|(e, _)| !e.is_empty()) {
                into.working = clade_memory::working::render(entries);
            }
        })
    }
}

/// A branch's view of the conversation it forked: the parent session's summary and turns
/// before the turn that started it, and that turn's message. Nothing for a worker (a fresh
/// context) or a channel. A failed read leaves it out, and the branch works from its task.
pub(super) struct ForkedFrom<'a> {
    pub(super) inner: &'a Inner,
    pub(super) ctx: &'a super::actor::TurnContext,
    pub(super) fork: Option<&'a clade_store::ForkRow>,
}

impl ContextSource for ForkedFrom<'_> {
    fn contribute<'a>(
        &'a mut self,
        _input: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(fork) = self.fork.filter(|_| self.ctx.profile.sees_its_parent()) else {
                return;
            };
            let Some(turn) = fork.parent_turn else { return };
            let store = &self.inner.visible;
            let keep = self.ctx.settings.sessions.history_turns;
            let compactions = self.inner.compactions.load(std::sync::atomic::Ordering::SeqCst);
            let history = match History::read(store, fork.parent_session, turn, keep, compactions)
                .await
            {
                Ok(history) => history,
                Err(err) => {
                    tracing::warn!(session = %fork.parent_session, error = %err, "cannot read the conversation a branch forked; it works from its task alone");
                    return;
                }
            };
            history.show(0, into);
            if let Ok(texts) = store.turn_texts(turn).await
                && !texts.is_empty()
            {
                into.history.push(Message::user(texts.join("\n")));
                into.history.push(Message::Assistant {
                    text: "(I start a branch to think about one task while we go on.)".to_owned(),
                    tool_calls: Vec::new(),
                });
            }
        })
    }
}

/// A channel's status block: the branches and workers it started that still run, each with its
/// task, its latest status line and its age, shown after the history. Kept by the actor and
/// read again only after a fork changed in this process (started, reported, ended).
pub(super) struct WorkUnderWay<'a> {
    pub(super) kept: &'a mut Option<(Vec<clade_store::ForkRow>, u64)>,
    pub(super) inner: &'a Inner,
    pub(super) ctx: &'a super::actor::TurnContext,
}

impl ContextSource for WorkUnderWay<'_> {
    fn contribute<'a>(
        &'a mut self,
        _input: &'a TurnInput<'a>,
        into: &'a mut Composed,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !self.ctx.profile.shows_work_under_way() {
                return;
            }
            let changes = self.inner.fork_changes.load(std::sync::atomic::Ordering::SeqCst);
            if self.kept.as_ref().is_none_or(|(_, seen)| *seen != changes) {
                let (tenant, session) = (self.ctx.tenant.id, self.ctx.session.id);
                match self.inner.visible.forks(tenant).of_parent(session, true).await {
                    Ok(forks) => *self.kept = Some((forks, changes)),
                    Err(err) => {
                        *self.kept = None;
                        tracing::warn!(session = %session, error = %err, "cannot read the session's branches and workers; the turn goes on without its status block");
                    }
                }
            }
            let Some((forks, _)) = self.kept.as_ref().filter(|(f, _)| !f.is_empty()) else {
                return;
            };
            let now = self.inner.store.now();
            let ago = |at: clade_core::Timestamp| {
                let secs = now.as_millis().saturating_sub(at.as_millis()).max(0) / 1000;
                if secs < 120 { format!("{secs} s") } else { format!("{} min", secs / 60) }
            };
            let mut block = String::from(
                "## Work under way\nBranches and workers you started that still run (their outcomes arrive as messages; agent.cancel stops one):\n",
            );
            for fork in forks {
                let task: String = fork
                    .task
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(160)
                    .collect();
                block.push_str(&format!(
                    "- {} {} (running {}): {task}",
                    fork.kind,
                    fork.session,
                    ago(fork.created_at)
                ));
                if let (Some(progress), Some(at)) = (&fork.progress, fork.progress_at) {
                    block.push_str(&format!("\n  status ({} ago): {progress}", ago(at)));
                }
                block.push('\n');
            }
            if !into.working.is_empty() {
                into.working.push_str("\n\n");
            }
            into.working.push_str(&block);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn variables_are_filled_in_once_and_unknown_ones_stay() {
        let vars = [
            ("agent".to_owned(), "Ada".to_owned()),
            ("company".to_owned(), "Acme {{agent}}".to_owned()),
        ];
        assert_eq!(
            render("I am {{agent}} of {{company}}; {{missing}} and {{ stays", &vars),
            "I am Ada of Acme {{agent}}; {{missing}} and {{ stays"
        );
        assert_eq!(render("no variables", &vars), "no variables");
        assert_eq!(render("{{agent}}{{agent}}}}", &vars), "AdaAda}}");
    }
}
