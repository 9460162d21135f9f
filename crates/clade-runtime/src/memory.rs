//! Agents' memory as the configuration sets it up: the memory service with its embeddings
//! model (`memory.embeddings`: `local:<name>`, a model run in process from the data dir's
//! `models/<name>`, which is the default when its files are there; or an OpenAI-compatible
//! `/embeddings` endpoint with that model's base URL, headers and key), and what each turn
//! recalls.

use std::sync::Arc;

use clade_config::{Config, MemoryIsolation, ProviderKind};
use clade_memory::{Embedder, Isolation, Memory};
use clade_model::HttpOptions;
use clade_model::embeddings::OpenAiEmbeddings;

use crate::engine::Recall;
use crate::models::EnvHints;

/// The local embeddings model used when `memory.embeddings` names none.
pub const DEFAULT_LOCAL_EMBEDDINGS: &str = "all-minilm-l6-v2";

/// The memory service `config` describes, or `None` when agents have no memory. Local models
/// are looked for under `models_dir` (the data dir's `models`).
pub fn memory_of(
    config: &Config,
    env: &EnvHints,
    models_dir: &std::path::Path,
) -> Option<Arc<Memory>> {
    if !config.memory.enabled {
        return None;
    }
    let local = match config.memory.embeddings.as_deref() {
        None => Some((DEFAULT_LOCAL_EMBEDDINGS, false)),
        Some(name) => name.strip_prefix(clade_config::LOCAL_PREFIX).map(|name| (name, true)),
    };
    let embedder = match local {
        Some((name, asked)) => local_embedder(models_dir, name, asked),
        None => openai_embedder(config, env),
    };
    let isolation_of = |isolation: MemoryIsolation| match isolation {
        MemoryIsolation::Global => Isolation::Global,
        MemoryIsolation::Actor => Isolation::Actor,
        MemoryIsolation::Channel => Isolation::Channel,
    };
    // Every binding, so the first that matches a source decides, as it does its agent.
    let rules = config
        .bindings
        .iter()
        .map(|b| clade_memory::IsolationRule {
            platform: b.platform.clone(),
            channel: b.channel.clone(),
            actor: b.actor.clone(),
            isolation: b.isolation.map(isolation_of),
        })
        .collect();
    let mut memory = Memory::new(embedder, isolation_of(config.memory.isolation))
        .with_isolation_rules(rules)
        .with_max_items(config.memory.max_items_per_agent);
    if config.memory.upkeep.enabled {
        memory = memory.with_upkeep(upkeep_policy(&config.memory.upkeep));
    }
    Some(Arc::new(memory))
}

/// The cortex's upkeep policy as `memory.upkeep` sets it.
pub fn upkeep_policy(config: &clade_config::MemoryUpkeepConfig) -> clade_memory::upkeep::Policy {
    clade_memory::upkeep::Policy {
        half_life_days: config.half_life_days,
        prune_below: config.prune_below,
        purge_after_days: config.purge_after_days,
        settle: std::time::Duration::from_secs(config.settle_secs),
        consolidate_at: config.consolidate_at as usize,
    }
}

/// Whether the lack of a local model was said already: it is said once a process.
static SAID_NO_LOCAL_MODEL: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The local model `name` from `models_dir`, loaded once a process and shared; `None`, said
/// once, when its files are not there (`asked`: the configuration named it, so it is a warning).
fn local_embedder(
    models_dir: &std::path::Path,
    name: &str,
    asked: bool,
) -> Option<Arc<dyn Embedder>> {
    let loaded = local_embeddings(models_dir, name);
    if let Err(err) = &loaded
        && !SAID_NO_LOCAL_MODEL.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        if asked {
            tracing::warn!(model = %name, "memory.embeddings: {err}; recall uses full text until it is there");
        } else {
            tracing::info!(model = %name, "memory: no local embeddings model ({err}); recall uses full text alone");
        }
    }
    loaded.ok()
}

/// Why no local embeddings model is there.
#[derive(Debug, thiserror::Error)]
pub enum LocalModelError {
    #[cfg(feature = "local-models")]
    #[error(transparent)]
    Load(#[from] clade_model::local_embeddings::Error),
    #[error("this build has no local models (cargo feature `local-models`)")]
    NotBuilt,
}

/// The local model `name` from `models_dir` as memory's embedder, loaded once a process.
#[cfg(feature = "local-models")]
pub fn local_embeddings(
    models_dir: &std::path::Path,
    name: &str,
) -> Result<Arc<dyn Embedder>, LocalModelError> {
    let dir = &models_dir.join(name);
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Loaded = HashMap<std::path::PathBuf, clade_model::local_embeddings::LocalEmbeddings>;
    // A reload asks again: the model stays loaded rather than read anew (90 MB).
    static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = loaded.get_or_insert_with(HashMap::new);
    let model = match cache.get(dir) {
        Some(model) => model.clone(),
        None => {
            let model = clade_model::local_embeddings::LocalEmbeddings::load(dir, name)?;
            tracing::info!(model = %name, dimensions = model.dimensions(), "memory: embeddings made in process");
            cache.insert(dir.to_owned(), model.clone());
            model
        }
    };
    // Vectors are stored under a name that changes with the model's width: files replaced by
    // another model's are never compared with the vectors the old one made.
    let name = format!("{}{name}:{}", clade_config::LOCAL_PREFIX, model.dimensions());
    Ok(Arc::new(LocalEmbedder { name, model }))
}

/// Without the `local-models` feature there are no local models.
#[cfg(not(feature = "local-models"))]
pub fn local_embeddings(
    _models_dir: &std::path::Path,
    _name: &str,
) -> Result<Arc<dyn Embedder>, LocalModelError> {
    Err(LocalModelError::NotBuilt)
}

/// A local model as memory's embedder, under the name its vectors are stored with.
#[cfg(feature = "local-models")]
struct LocalEmbedder {
    name: String,
    model: clade_model::local_embeddings::LocalEmbeddings,
}

#[cfg(feature = "local-models")]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.name
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<f32>>, clade_memory::BoxError>> {
        Box::pin(async move { Ok(self.model.embed(texts).await?) })
    }
}

/// The OpenAI-compatible endpoint `memory.embeddings` names, if it names a `models` entry.
fn openai_embedder(config: &Config, env: &EnvHints) -> Option<Arc<dyn Embedder>> {
    config.memory.embeddings.as_ref().and_then(|name| {
        let model = config.models.get(name).filter(|m| m.provider == ProviderKind::Openai)?;
        let base = model
            .base_url
            .clone()
            .unwrap_or_else(|| crate::models::default_base(ProviderKind::Openai).to_owned());
        let mut options = HttpOptions::new(base);
        options.headers = model.headers.clone().into_iter().collect();
        options.connect_timeout = std::time::Duration::from_secs(30);
        if let Some(var) = &model.api_key_env {
            match env.get(var) {
                Some(key) => options.credentials = Some(Arc::new(clade_model::StaticKey::new(key))),
                None => tracing::warn!(
                    model = %name,
                    "memory.embeddings: environment variable {var} is not set; recall uses full text until it is"
                ),
            }
        }
        let id = model.model.clone().unwrap_or_else(|| name.clone());
        let embedder: Arc<dyn Embedder> =
            Arc::new(OpenAiEmbeddings::new(name.clone(), id, reqwest::Client::new(), options));
        Some(embedder)
    })
}

/// What turns recall from `memory` under `config`'s limits.
pub fn recall_of(config: &Config, memory: Option<Arc<Memory>>) -> Option<Recall> {
    memory.map(|memory| Recall {
        ingest: match config.memory.ingest {
            clade_config::MemoryIngest::Heuristic => Some(crate::ingest::Miner::Heuristic),
            clade_config::MemoryIngest::Model => Some(crate::ingest::Miner::Model),
            clade_config::MemoryIngest::Off => None,
        },
        memory,
        items: config.memory.recall_items,
        tokens: config.memory.recall_tokens,
    })
}
