//! `clade bench memory`: one agent's memory filled to each size, then the ingest rate through
//! `Memory::save` (deduplication, embedding, insert) and as the ingestion saves mined turns
//! (`Memory::save_all`: a page embedded together), recall p50/p99 with vectors (hybrid) and
//! without (full text), disk bytes per item, and the memory the kept vectors take. Embeddings
//! come from `clade-stub` in process over OpenAI's wire format (feature hashes, 256
//! dimensions), so the figures are the store's and the ranking's, not a model's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clade_core::{AgentConfig, Handle, MemoryKind};
use clade_memory::{Embedder, Isolation, Memory};
use clade_store::{MemoryFilter, NewAgent, NewMemory, Provenance};
use tokio::task::JoinSet;

use super::bench::{now, peak_rss_kib, percentile_ms, rss_kib};
use crate::context::Ctx;

/// Saves in flight at once while the ingest rate is measured.
const INGEST_CONCURRENCY: usize = 16;
/// Items embedded together while the ingestion's rate is measured (a page of mined turns).
const INGESTION_PAGE: usize = 64;

pub(super) struct Plan {
    pub(super) items: Vec<usize>,
    pub(super) queries: usize,
    pub(super) saves: usize,
    /// `stub` or `local`.
    pub(super) embeddings: String,
    /// An evaluation set: measure recall@k instead of speed.
    pub(super) eval: Option<std::path::PathBuf>,
    /// Generated notes stored beside an evaluation set's items.
    pub(super) distractors: usize,
    /// Recall on the full-text index in the segments the writes left, unmerged.
    pub(super) unmerged: bool,
}

const NAMES: [&str; 12] =
    ["Ada", "Bob", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena"];
const VERBS: [&str; 10] = [
    "prefers", "booked", "moved", "renewed", "forgot", "ordered", "painted", "sold", "lost",
    "found",
];
const THINGS: [&str; 16] = [
    "the blue bicycle",
    "a train ticket",
    "the garden shed",
    "her passport",
    "the printer",
    "a dentist appointment",
    "the quarterly invoice",
    "his guitar",
    "a birthday cake",
    "the kitchen tiles",
    "a rental car",
    "the team offsite",
    "an old laptop",
    "the wedding venue",
    "a yoga class",
    "the tax return",
];
const PLACES: [&str; 12] = [
    "Lisbon", "Leeds", "Osaka", "Lagos", "Quito", "Tallinn", "Perth", "Denver", "Accra", "Bergen",
    "Hanoi", "Lyon",
];

const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "zo", "pa", "qui", "do", "fe", "gu", "ha", "jo",
];

/// A small deterministic generator: every run writes and asks the same texts. Beside a few
/// common words (names, places, things), each item names two of 4,096 rarer ones (projects,
/// people, codes), as real notes do, so words are common and rare in about real proportions.
struct Texts(u64);

impl Texts {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn rare(&mut self) -> String {
        let n = self.next() % 4096;
        [n % 16, (n / 16) % 16, n / 256].iter().map(|i| SYLLABLES[*i as usize]).collect()
    }

    fn item(&mut self, n: usize) -> String {
        format!(
            "{} {} {} in {} for {} with {} (note {n})",
            self.pick(&NAMES),
            self.pick(&VERBS),
            self.pick(&THINGS),
            self.pick(&PLACES),
            self.rare(),
            self.rare()
        )
    }

    fn query(&mut self) -> String {
        format!("what did {} do about {}?", self.pick(&NAMES), self.rare())
    }
}

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    if plan.items.contains(&0) || plan.queries == 0 {
        bail!("--items and --queries must be at least 1");
    }
    let stub = clade_stub::Stub::start(
        "127.0.0.1:0",
        clade_stub::StubOptions { capture: 0, ..Default::default() },
    )
    .await?;
    let (embedder, from): (Arc<dyn Embedder>, String) = match plan.embeddings.as_str() {
        "stub" => {
            let mut options = clade_model::HttpOptions::new(format!("{}/v1", stub.url()));
            options.connect_timeout = Duration::from_secs(30);
            let stub = clade_model::embeddings::OpenAiEmbeddings::new(
                "stub",
                "hash",
                reqwest::Client::new(),
                options,
            );
            (Arc::new(stub), "clade-stub (feature hashes, 256 dimensions)".into())
        }
        "local" => {
            let name = clade_runtime::memory::DEFAULT_LOCAL_EMBEDDINGS;
            let local = clade_runtime::memory::local_embeddings(&ctx.data_dir.models_dir(), name)?;
            let from = format!("{} in process", local.model());
            (local, from)
        }
        other => bail!("--embeddings {other:?}: use stub or local"),
    };
    let tenant = ctx.tenant().await?;
    let store = ctx.store.tenant_scope(tenant.id);
    println!("bench memory: store {}, embeddings from {from}", ctx.store.location());
    if let Some(file) = &plan.eval {
        return evaluate(ctx, &tenant, file, plan.distractors, embedder).await;
    }
    for &size in &plan.items {
        let hybrid = Arc::new(Memory::new(Some(embedder.clone()), Isolation::Global));
        let words = Memory::new(None, Isolation::Global);
        let handle = format!("bmem{:x}-{size}", ctx.store.now().as_millis());
        let agent = new_agent(ctx, &tenant, &handle).await?;
        let disk_before = ctx.store.disk_bytes().await?;
        let mut texts = Texts(0x9e37_79b9_7f4a_7c15 ^ size as u64);

        // Fill: embedded in batches, stored by concurrent writers (the group commit folds them).
        eprintln!("filling {handle} with {size} items");
        let started = now();
        let (mut written, mut tasks) = (0usize, JoinSet::new());
        let batch = 256;
        let mut next = 0;
        while next < size || !tasks.is_empty() {
            while next < size && tasks.len() < 8 {
                let end = (next + batch).min(size);
                let contents: Vec<String> = (next..end).map(|n| texts.item(n)).collect();
                let vectors = embedder.embed(&contents).await.map_err(|e| anyhow::anyhow!(e))?;
                let (store, agent_id) = (store.clone(), agent.id);
                let model = embedder.model().to_owned();
                tasks.spawn(async move {
                    let mut saves = JoinSet::new();
                    for (content, vector) in contents.into_iter().zip(vectors) {
                        let (store, vector) = (store.clone(), Some((vector, model.clone())));
                        saves.spawn(async move {
                            store.memories().save(new_item(agent_id, content, vector)).await
                        });
                    }
                    let mut n = 0;
                    while let Some(saved) = saves.join_next().await {
                        saved??;
                        n += 1;
                    }
                    anyhow::Ok(n)
                });
                next = end;
            }
            if let Some(done) = tasks.join_next().await {
                written += done??;
                let rate = written as f64 / started.elapsed().as_secs_f64();
                crate::output::progress(&format!("  {written}/{size} ({rate:.0}/s)"));
            }
        }
        crate::output::progress_end();
        let fill_secs = started.elapsed().as_secs_f64();

        // Ingest through the service, 16 saves at a time (as many sessions' turns are mined
        // at once): search for a repeat, embed, insert, each insert durable before it answers.
        let started = now();
        let mut saves = JoinSet::new();
        for n in 0..plan.saves {
            if saves.len() == INGEST_CONCURRENCY
                && let Some(saved) = saves.join_next().await
            {
                saved??;
            }
            let (memory, store, agent_id) = (hybrid.clone(), store.clone(), agent.id);
            let content = texts.item(size + n);
            saves
                .spawn(async move { memory.save(&store, new_item(agent_id, content, None)).await });
        }
        while let Some(saved) = saves.join_next().await {
            saved??;
        }
        let ingest_rate = plan.saves as f64 / started.elapsed().as_secs_f64().max(1e-9);

        // As the ingestion saves mined turns: a page's items embedded together, then saved in
        // order (one agent's turns go one after another).
        let started = now();
        let (mut next, end) = (size + plan.saves, size + 2 * plan.saves);
        while next < end {
            let page_end = (next + INGESTION_PAGE).min(end);
            let items = (next..page_end).map(|n| new_item(agent.id, texts.item(n), None)).collect();
            for saved in hybrid.save_all(&store, items).await {
                saved?;
            }
            next = page_end;
        }
        let ingestion_rate = plan.saves as f64 / started.elapsed().as_secs_f64().max(1e-9);

        let disk_after = ctx.store.disk_bytes().await?;
        let items = store.memories().count(agent.id).await?;
        // The full-text index as the cortex keeps it: merged into one segment once writes
        // have split it into many (or left as they split it, to compare).
        let segments = ctx.store.memory_upkeep().index_segments().await?;
        let index = if plan.unmerged {
            format!("{segments} full-text segments, left unmerged")
        } else {
            let started = now();
            let mut begun = false;
            while !clade_runtime::cortex::merge_memory_index(&ctx.store, 2, begun).await? {
                begun = true;
            }
            format!(
                "{segments} full-text segments merged into {} in {:.1} s, as the cortex merges them",
                ctx.store.memory_upkeep().index_segments().await?,
                started.elapsed().as_secs_f64()
            )
        };
        let rss_before_recall = rss_kib();
        let mut rows = Vec::new();
        for (mode, memory) in [("hybrid", &*hybrid), ("full text", &words)] {
            let cold = now();
            memory.recall(&store, agent.id, &MemoryFilter::default(), &texts.query(), 10).await?;
            let cold = cold.elapsed();
            let mut latencies = Vec::with_capacity(plan.queries);
            let mut asked = Vec::with_capacity(plan.queries);
            let mut found = 0usize;
            for _ in 0..plan.queries {
                let query = texts.query();
                let t = now();
                let hits =
                    memory.recall(&store, agent.id, &MemoryFilter::default(), &query, 10).await?;
                let wall = t.elapsed();
                latencies.push(wall);
                asked.push((wall, query));
                found += hits.len();
            }
            latencies.sort();
            // The slowest 1% asked again: a query slow by its own cost is slow again; one that
            // met a busy machine is not.
            asked.sort_by_key(|(wall, _)| *wall);
            let slowest = &asked[asked.len() - (asked.len() / 100).max(1)..];
            let mut again = std::time::Duration::ZERO;
            for (_, query) in slowest {
                let t = now();
                memory.recall(&store, agent.id, &MemoryFilter::default(), query, 10).await?;
                again += t.elapsed();
            }
            let first_time: std::time::Duration = slowest.iter().map(|(wall, _)| *wall).sum();
            let tail = format!(
                "slowest 1%: {:.1} ms, asked again {:.1} ms",
                first_time.as_secs_f64() * 1e3 / slowest.len() as f64,
                again.as_secs_f64() * 1e3 / slowest.len() as f64
            );
            rows.push((
                mode,
                cold,
                percentile_ms(&latencies, 0.5),
                percentile_ms(&latencies, 0.99),
                found,
                tail,
            ));
        }
        let kept_mib = hybrid.kept_bytes() as f64 / 1_048_576.0;
        println!("  {items} items (agent {handle}):");
        println!(
            "    fill:    {:.1} s, {:.0} items/s (embedded in batches of {batch}, stored by concurrent writers)",
            fill_secs,
            size as f64 / fill_secs
        );
        println!(
            "    ingest:  {ingest_rate:.0} items/s through Memory::save, {INGEST_CONCURRENCY} at a time ({} saves: repeat search, embedding, durable insert)",
            plan.saves
        );
        println!(
            "    ingestion: {ingestion_rate:.0} items/s as mined turns are saved, {INGESTION_PAGE} embedded together then saved in order ({} saves)",
            plan.saves
        );
        println!("    index:   {index}");
        for (mode, cold, p50, p99, found, tail) in rows {
            println!(
                "    recall {mode:<9}: p50 {p50:.2} ms, p99 {p99:.2} ms, first {:.1} ms ({} queries, {:.1} items each); {tail}",
                cold.as_secs_f64() * 1e3,
                plan.queries,
                found as f64 / plan.queries as f64
            );
        }
        println!(
            "    disk:    {:.0} bytes per item; vectors kept: {kept_mib:.1} MiB; rss {} KiB before recall, {} KiB now, peak {} KiB",
            (disk_after - disk_before) as f64 / items.max(1) as f64,
            rss_before_recall,
            rss_kib(),
            peak_rss_kib()
        );
    }
    Ok(())
}

fn new_item(
    agent: clade_core::AgentId,
    content: String,
    vector: Option<(Vec<f32>, String)>,
) -> NewMemory {
    NewMemory {
        agent,
        scope: String::new(),
        kind: MemoryKind::Fact,
        content,
        importance: 0.5,
        confidence: 0.8,
        provenance: Provenance { by: "bench".into(), ..Provenance::default() },
        untrusted: false,
        embedding: vector,
    }
}

async fn new_agent(
    ctx: &Ctx,
    tenant: &clade_core::Tenant,
    handle: &str,
) -> Result<clade_core::Agent> {
    let spec = NewAgent {
        handle: Handle::parse(handle)?,
        display_name: None,
        config: AgentConfig::default(),
    };
    Ok(ctx.agents.create(tenant.id, spec).await?)
}

/// An evaluation set (`docs/perf/memory-eval.json` is ours): conversations whose turns become
/// memory items, and questions naming the turns that answer them.
#[derive(serde::Deserialize)]
struct EvalSet {
    conversations: Vec<EvalConversation>,
    questions: Vec<EvalQuestion>,
}

#[derive(serde::Deserialize)]
struct EvalConversation {
    turns: Vec<EvalTurn>,
}

#[derive(serde::Deserialize)]
struct EvalTurn {
    id: String,
    text: String,
}

#[derive(serde::Deserialize)]
struct EvalQuestion {
    question: String,
    evidence: Vec<String>,
}

/// Ingests the set's turns into a new agent (a turn an item, embedded), then asks each question
/// by full text alone, vectors alone and both fused, and reports recall@5 and recall@10: the
/// share of each question's evidence among the first 5 and 10 items, averaged over questions.
async fn evaluate(
    ctx: &Ctx,
    tenant: &clade_core::Tenant,
    file: &std::path::Path,
    distractors: usize,
    embedder: Arc<dyn Embedder>,
) -> Result<()> {
    use std::collections::HashMap;
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let set: EvalSet = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not an evaluation set: {e}", file.display()))?;
    let turns: Vec<&EvalTurn> = set.conversations.iter().flat_map(|c| &c.turns).collect();
    if turns.is_empty() || set.questions.is_empty() {
        bail!("{}: an evaluation set needs turns and questions", file.display());
    }
    let known: std::collections::HashSet<&str> = turns.iter().map(|t| t.id.as_str()).collect();
    for q in &set.questions {
        if q.evidence.is_empty() {
            bail!("question {:?} names no evidence", q.question);
        }
        if let Some(missing) = q.evidence.iter().find(|e| !known.contains(e.as_str())) {
            bail!("question {:?} names evidence {missing:?}, which no turn has", q.question);
        }
    }
    let agent = new_agent(ctx, tenant, &format!("beval{:x}", ctx.store.now().as_millis())).await?;
    let store = ctx.store.tenant_scope(tenant.id);
    eprintln!(
        "storing {distractors} generated notes and {} turns in {}",
        turns.len(),
        agent.handle
    );
    let mut generated = Texts(0x5eed);
    let notes: Vec<String> = (0..distractors).map(|n| generated.item(n)).collect();
    for (n, chunk) in notes.chunks(64).enumerate() {
        let vectors = embedder.embed(chunk).await.map_err(|e| anyhow::anyhow!(e))?;
        for (text, vector) in chunk.iter().zip(vectors) {
            let embedding = Some((vector, embedder.model().to_owned()));
            store.memories().save(new_item(agent.id, text.clone(), embedding)).await?;
        }
        crate::output::progress(&format!("  {}/{distractors} notes", n * 64 + chunk.len()));
    }
    let mut ids = HashMap::new();
    for chunk in turns.chunks(64) {
        let texts: Vec<String> = chunk.iter().map(|t| t.text.clone()).collect();
        let vectors = embedder.embed(&texts).await.map_err(|e| anyhow::anyhow!(e))?;
        for (turn, vector) in chunk.iter().zip(vectors) {
            let embedding = Some((vector, embedder.model().to_owned()));
            let row =
                store.memories().save(new_item(agent.id, turn.text.clone(), embedding)).await?;
            ids.insert(row.id, turn.id.as_str());
        }
    }
    let memory = Memory::new(Some(embedder), Isolation::Global);
    crate::output::progress_end();
    println!(
        "  {} questions over {} items and {distractors} generated notes ({})",
        set.questions.len(),
        turns.len(),
        file.display()
    );
    for (name, mode) in [
        ("full text", clade_memory::Mode::FullText),
        ("vectors", clade_memory::Mode::Vectors),
        ("hybrid", clade_memory::Mode::Hybrid),
    ] {
        let (mut at5, mut at10) = (0.0, 0.0);
        for q in &set.questions {
            let hits = memory
                .search(&store, agent.id, &MemoryFilter::default(), &q.question, 10, mode)
                .await?;
            let found: Vec<&str> =
                hits.iter().filter_map(|h| ids.get(&h.item.id).copied()).collect();
            let share = |k: usize| {
                let top = &found[..found.len().min(k)];
                q.evidence.iter().filter(|e| top.contains(&e.as_str())).count() as f64
                    / q.evidence.len() as f64
            };
            at5 += share(5);
            at10 += share(10);
        }
        let n = set.questions.len() as f64;
        println!("    {name:<9}: recall@5 {:.3}, recall@10 {:.3}", at5 / n, at10 / n);
    }
    Ok(())
}
