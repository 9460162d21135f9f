//! Agents' memory as the configuration sets it up: the memory service with its embeddings
//! model (`memory.embeddings`, an OpenAI-compatible `/embeddings` endpoint with that model's
//! base URL, headers and key), and what each turn recalls.

use std::sync::Arc;

use clade_config::{Config, MemoryIsolation, ProviderKind};
use clade_memory::{Embedder, Isolation, Memory};
use clade_model::HttpOptions;
use clade_model::embeddings::OpenAiEmbeddings;

use crate::engine::Recall;
use crate::models::EnvHints;

/// The memory service `config` describes, or `None` when agents have no memory.
pub fn memory_of(config: &Config, env: &EnvHints) -> Option<Arc<Memory>> {
    if !config.memory.enabled {
        return None;
    }
    let embedder = config.memory.embeddings.as_ref().and_then(|name| {
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
    });
    let isolation = match config.memory.isolation {
        MemoryIsolation::Global => Isolation::Global,
        MemoryIsolation::Actor => Isolation::Actor,
        MemoryIsolation::Channel => Isolation::Channel,
    };
    Some(Arc::new(Memory::new(embedder, isolation)))
}

/// What turns recall from `memory` under `config`'s limits.
pub fn recall_of(config: &Config, memory: Option<Arc<Memory>>) -> Option<Recall> {
    memory.map(|memory| Recall {
        memory,
        items: config.memory.recall_items,
        tokens: config.memory.recall_tokens,
    })
}
