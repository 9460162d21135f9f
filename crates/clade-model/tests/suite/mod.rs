mod adapters;
mod fixtures;
#[cfg(feature = "local-models")]
mod local_chat;
#[cfg(feature = "local-models")]
mod local_embeddings;
mod oauth;
mod router;
mod support;
