//! `clade memory ingest-service`: memory ingestion as a process of its own, over the public
//! protocol. It follows the tenant's `turn.finished` events (`GET /v1/events`) and mines each
//! turn as the gateway's own ingestion does: here, reading the turn's messages
//! (`GET /v1/sessions/{id}/turns/{turn}`) and running the heuristic ([`clade_memory::mine`]);
//! or, with `--miner model`, asking the gateway to mine it with its `cortex` route
//! (`POST /v1/sessions/{id}/turns/{turn}/mine`, charged to the turn's agent). It saves a turn's
//! items in one request under the session (`POST /v1/sessions/{id}/memories/batch`), which
//! decides the agent, the isolation key and the provenance: the service cannot file an item
//! under anyone else's key.
//!
//! Its position in the feed is a file, replaced atomically after each turn, so a restart goes
//! on where it stopped. A turn it dies in the middle of is mined again, and what it saved the
//! first time merges (a repeat updates the item it repeats), so nothing is lost or doubled; a
//! model may word a turn's items differently the second time, so with `--miner model` a near
//! repeat is merged only as closely as the gateway's duplicate check finds it. A save retried
//! while the process lives sends the items it mined the first time, so a turn is mined (and
//! its model paid) once. Nothing here opens a store: the gateway may run on another machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::cli::{IngestServiceArgs, Miner};

/// Events read a page at a time.
const PAGE: u32 = 100;
/// The waits between tries while the gateway fails: 250 ms doubling to 30 s.
const RETRY: clade_core::Backoff =
    clade_core::Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the gateway's model may take to mine a turn: its own retries and fallbacks may
/// outlast an ordinary call, and a call abandoned is still paid for.
const MINE_TIMEOUT: Duration = Duration::from_secs(600);
/// Whether the gateway's mining model was said to fail (once a process).
static MODEL_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(super) async fn run(
    data_dir: &clade_store::DataDir,
    url: String,
    agent: Option<String>,
    args: IngestServiceArgs,
) -> Result<()> {
    let token = match args.token {
        Some(token) => token,
        None => data_dir.read_token()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no token: pass --token (or CLADE_TOKEN) with a tenant token holding the read and operate scopes, or run `clade serve` once to write {}",
                data_dir.token_path().display()
            )
        })?,
    };
    if !(args.poll.is_finite() && args.poll > 0.0 && args.poll <= 3600.0) {
        bail!("--poll {}: give seconds between 0 and 3600", args.poll);
    }
    let cursor_file = args.cursor_file.unwrap_or_else(|| data_dir.root().join("ingest.cursor"));
    let mut service = Service {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot make an HTTP client")?,
        url: url.trim_end_matches('/').to_owned(),
        token,
        agent,
        miner: args.miner,
        mined: None,
        cursor: read_cursor(&cursor_file)?,
        cursor_file,
        full_warned: std::collections::HashSet::new(),
    };
    tracing::info!(
        gateway = %service.url,
        miner = ?service.miner,
        cursor = service.cursor,
        file = %service.cursor_file.display(),
        "memory ingestion following turn.finished events"
    );
    let poll = Duration::from_secs_f64(args.poll);
    let mut failures = 0u32;
    let (mut turns, mut saved) = (0u64, 0u64);
    loop {
        match service.page().await {
            Ok(Page { turns: 0, more: false, .. }) => {
                failures = 0;
                if args.once {
                    println!(
                        "mined {turns} turns into {saved} memory items (cursor {})",
                        service.cursor
                    );
                    return Ok(());
                }
                if stopped_within(poll).await {
                    return Ok(());
                }
            }
            Ok(page) => {
                failures = 0;
                turns += page.turns;
                saved += page.saved;
                tracing::info!(
                    turns = page.turns,
                    saved = page.saved,
                    cursor = service.cursor,
                    "mined completed turns into memory"
                );
            }
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Retry { why, after }) => {
                failures = failures.saturating_add(1);
                let wait = after.unwrap_or(RETRY.after(failures)).min(RETRY.max());
                tracing::warn!(error = %why, retry_in_ms = wait.as_millis() as u64, "memory ingestion cannot go on now; it tries again");
                if stopped_within(wait).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Sleeps `wait`, or less when the process is asked to stop; whether it was.
async fn stopped_within(wait: Duration) -> bool {
    tokio::select! {
        () = clade_core::Clock::sleep(&clade_core::SystemClock, wait) => false,
        _ = tokio::signal::ctrl_c() => true,
    }
}

struct Service {
    http: reqwest::Client,
    url: String,
    token: String,
    /// Only this agent's turns (the global `--agent`).
    agent: Option<String>,
    miner: Miner,
    /// The turn (session and turn ids) being saved, and what was mined of it: a save retried
    /// sends these rather than mine the turn again.
    mined: Option<(String, String, Vec<Value>)>,
    /// The last event mined.
    cursor: i64,
    cursor_file: PathBuf,
    /// Sessions whose agent's memory was said to be full.
    full_warned: std::collections::HashSet<String>,
}

/// One page of the feed: turns mined, items saved, and whether more wait.
struct Page {
    turns: u64,
    saved: u64,
    more: bool,
}

/// Why a call failed: for good (a token that does not reach, a feed refused), or for now.
enum Failure {
    Fatal(anyhow::Error),
    Retry { why: String, after: Option<Duration> },
}

/// What the gateway answered.
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<Duration>,
}

impl Service {
    /// Mines the events after the cursor, one page; the cursor moves past each turn once its
    /// items are saved.
    async fn page(&mut self) -> Result<Page, Failure> {
        let mut query = vec![
            ("type", clade_core::EventKind::TurnFinished.as_str().to_owned()),
            ("cursor", self.cursor.to_string()),
            ("limit", PAGE.to_string()),
        ];
        if let Some(agent) = &self.agent {
            query.push(("agent", agent.clone()));
        }
        let feed = reqwest::Url::parse_with_params(&format!("{}/v1/events", self.url), &query)
            .map_err(|e| {
                Failure::Fatal(anyhow::anyhow!(
                    "{} is not a gateway URL ({e}): pass --server",
                    self.url
                ))
            })?;
        let answer = self.call(reqwest::Method::GET, feed.as_str(), None, CALL_TIMEOUT).await?;
        if answer.status != 200 {
            return Err(refused("the event feed", &answer));
        }
        let items = answer.body["items"].as_array().cloned().unwrap_or_default();
        let mut page = Page { turns: 0, saved: 0, more: items.len() == PAGE as usize };
        for item in &items {
            let Some(seq) = item["seq"].as_i64() else {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "the gateway's event feed gave an item without a seq: {item}"
                )));
            };
            if let (Some(session), Some(turn)) = (item["session"].as_str(), item["turn"].as_str()) {
                page.saved += self.mine_turn(session, turn).await?;
                page.turns += 1;
            }
            // Dies here, in a crash test: the turn's items saved, the cursor not yet moved.
            clade_runtime::failpoints::hit("mid_ingest");
            self.cursor = seq;
            write_cursor(&self.cursor_file, seq).map_err(Failure::Fatal)?;
        }
        Ok(page)
    }

    /// Saves what the people in one turn stated; how many items were saved or merged.
    async fn mine_turn(&mut self, session: &str, turn: &str) -> Result<u64, Failure> {
        let items = match self.mined.take() {
            Some((s, t, items)) if s == session && t == turn => items,
            _ => match self.mined(session, turn).await? {
                Some(items) => items,
                None => {
                    // Deleted since it finished: nothing to mine, and nothing to hold up the
                    // rest.
                    tracing::debug!(session, turn, "a finished turn is gone; skipped");
                    return Ok(0);
                }
            },
        };
        self.mined = Some((session.to_owned(), turn.to_owned(), items.clone()));
        let saved = self.save(session, turn, &items).await?;
        self.mined = None;
        Ok(saved)
    }

    /// Saves one turn's mined items; how many were saved or merged.
    async fn save(&mut self, session: &str, turn: &str, items: &[Value]) -> Result<u64, Failure> {
        let mut saved = 0;
        for batch in items.chunks(clade_gateway::api::MAX_MEMORY_BATCH) {
            let body = json!({ "items": batch });
            let url = format!("{}/v1/sessions/{session}/memories/batch", self.url);
            let answer = self.call(reqwest::Method::POST, &url, Some(&body), CALL_TIMEOUT).await?;
            match answer.status {
                200 => {}
                404 if gone(&answer) => return Ok(saved),
                422 => return Err(self.memory_off(&answer)),
                _ => return Err(refused("a save", &answer)),
            }
            let results = answer.body["results"].as_array().cloned().unwrap_or_default();
            for result in &results {
                let code = &result["error"]["code"];
                match result["status"].as_u64() {
                    Some(200 | 201) => saved += 1,
                    Some(422) if code == "memory_full" => {
                        if self.full_warned.insert(session.to_owned()) {
                            tracing::warn!(session, error = %result["error"]["message"], "an agent's memory is full: its turns are no longer mined; forget items or raise memory.max_items_per_agent");
                        }
                    }
                    // One item the gateway will never take holds up no other.
                    Some(422) => {
                        tracing::warn!(session, turn, error = %result["error"]["message"], "a mined item was refused")
                    }
                    // A store that failed for now: the same items are sent again, and those
                    // saved already merge.
                    _ => {
                        return Err(Failure::Retry {
                            why: format!(
                                "the gateway could not save a mined item: {}",
                                result["error"]["message"]
                            ),
                            after: None,
                        });
                    }
                }
            }
        }
        Ok(saved)
    }

    /// What one turn holds worth remembering, as the batch route takes it; `None` when the
    /// turn (or its session) is gone. The heuristic runs here; a model runs at the gateway,
    /// which charges the agent for it.
    async fn mined(&self, session: &str, turn: &str) -> Result<Option<Vec<Value>>, Failure> {
        let turn_url = format!("{}/v1/sessions/{session}/turns/{turn}", self.url);
        let item = |kind: &str, content: &str, importance: f64| {
            json!({
                "turn": turn,
                "kind": kind,
                "content": content,
                "importance": importance,
                "confidence": clade_memory::mine::CONFIDENCE,
            })
        };
        if self.miner == Miner::Model {
            let url = format!("{turn_url}/mine");
            let body = json!({ "miner": "model" });
            let answer = self.call(reqwest::Method::POST, &url, Some(&body), MINE_TIMEOUT).await?;
            match answer.status {
                200 => {}
                404 if gone(&answer) => return Ok(None),
                422 => return Err(self.memory_off(&answer)),
                _ => return Err(refused("to mine a turn", &answer)),
            }
            if answer.body["miner"] != "model" {
                let warned = MODEL_FAILED.swap(true, std::sync::atomic::Ordering::Relaxed);
                if !warned {
                    tracing::warn!(
                        session,
                        turn,
                        "the gateway's cortex route could not mine a turn; its heuristic did (the gateway's log says why)"
                    );
                }
            }
            let items = answer.body["items"].as_array().cloned().unwrap_or_default();
            return Ok(Some(
                items
                    .iter()
                    .filter_map(|mined| {
                        let (Some(kind), Some(content)) =
                            (mined["kind"].as_str(), mined["content"].as_str())
                        else {
                            return None;
                        };
                        Some(item(kind, content, mined["importance"].as_f64().unwrap_or(0.5)))
                    })
                    .collect(),
            ));
        }
        let answer = self.call(reqwest::Method::GET, &turn_url, None, CALL_TIMEOUT).await?;
        if answer.status == 404 && gone(&answer) {
            return Ok(None);
        }
        if answer.status != 200 {
            return Err(refused("a turn", &answer));
        }
        let texts: Vec<&str> = answer.body["events"]
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["text"].as_str()).collect())
            .unwrap_or_default();
        Ok(Some(
            clade_memory::mine::mine(&texts.join("\n"))
                .iter()
                .map(|mined| item(mined.kind.as_str(), &mined.content, mined.importance))
                .collect(),
        ))
    }

    /// A 422 for the whole request: memory is off at the gateway, so nothing can be saved.
    /// The service stops rather than pass over turns for good.
    fn memory_off(&self, answer: &Answer) -> Failure {
        if answer.body["error"]["code"] != "memory_off" {
            return refused("a save", answer);
        }
        Failure::Fatal(anyhow::anyhow!(
            "the gateway has memory off ({}): turn memory on there (memory.enabled), then start the service again; it goes on from turn {}",
            message(answer),
            self.cursor
        ))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let mut request = self.http.request(method, url).bearer_auth(&self.token).timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Failure::Retry {
            why: format!("cannot reach the gateway at {}: {e}", self.url),
            after: None,
        })?;
        let status = response.status().as_u16();
        let retry_after = clade_model::error::parse_retry_after(response.headers());
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer { status, body, retry_after })
    }
}

/// Whether a 404 says the session or turn is gone (deleted since it finished), rather than that
/// the gateway does not serve the route.
fn gone(answer: &Answer) -> bool {
    let code = &answer.body["error"]["code"];
    code == "session_not_found" || code == "turn_not_found"
}

fn message(answer: &Answer) -> String {
    answer.body["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", answer.status))
}

/// A refusal: a token that does not reach (or lacks a scope) ends the service, as does a
/// request the gateway finds wrong; a busy or failing gateway is tried again.
fn refused(what: &str, answer: &Answer) -> Failure {
    let why = format!("the gateway refused {what}: {}", message(answer));
    match answer.status {
        401 => Failure::Fatal(anyhow::anyhow!(
            "{why}: the token is not valid there; pass one with --token (or CLADE_TOKEN)"
        )),
        403 => Failure::Fatal(anyhow::anyhow!(
            "{why}: the token needs the read and operate scopes (clade tokens create --scope read --scope operate)"
        )),
        404 | 405
            if matches!(
                answer.body["error"]["code"].as_str(),
                Some("route_not_found" | "method_not_allowed")
            ) =>
        {
            Failure::Fatal(anyhow::anyhow!(
                "{why}: the gateway does not serve it, so it is older than this clade ({}); upgrade the gateway, or run the ingest service of its version",
                env!("CARGO_PKG_VERSION")
            ))
        }
        413 => Failure::Fatal(anyhow::anyhow!(
            "{why}: a turn's items are over the gateway's server.max_body_bytes; raise it there (1 MiB, the default, holds any 100 items)"
        )),
        400 | 404 | 405 => Failure::Fatal(anyhow::anyhow!("{why}")),
        _ => Failure::Retry { why, after: answer.retry_after },
    }
}

fn read_cursor(path: &Path) -> Result<i64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<i64>().ok().filter(|n| *n >= 0).with_context(|| {
            format!(
                "{} does not hold a feed position (a whole number): fix it, or delete it to mine the feed from its start (what was mined merges, it is not doubled)",
                path.display()
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the cursor file whole: a crash leaves the old position or the new, never half.
fn write_cursor(path: &Path, cursor: i64) -> Result<()> {
    use std::io::Write as _;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(format!("{cursor}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Answer {
        Answer {
            status,
            body: json!({ "error": { "code": code, "message": "no" } }),
            retry_after: None,
        }
    }

    /// A session or turn deleted is passed over; a route the gateway does not serve (an older
    /// gateway) stops the service instead of passing over every turn for good.
    #[test]
    fn only_a_deleted_session_or_turn_is_passed_over() {
        assert!(gone(&answer(404, "session_not_found")));
        assert!(gone(&answer(404, "turn_not_found")));
        for (status, code, says) in [
            (404, "route_not_found", "upgrade the gateway"),
            (405, "method_not_allowed", "upgrade the gateway"),
            (413, "payload_too_large", "max_body_bytes"),
            (403, "forbidden", "operate"),
        ] {
            let refusal = answer(status, code);
            assert!(!gone(&refusal));
            match refused("a save", &refusal) {
                Failure::Fatal(err) => assert!(err.to_string().contains(says), "{err}"),
                Failure::Retry { why, .. } => panic!("{code} retried: {why}"),
            }
        }
        assert!(matches!(
            refused("a save", &answer(503, "store_unavailable")),
            Failure::Retry { .. }
        ));
    }
}
