//! Where vectors come from: anything that turns texts into vectors of one length, named by the
//! model that made them (an item embedded by another model is embedded again before its vector
//! is used).

use futures::future::BoxFuture;

use crate::BoxError;

/// Turns texts into vectors.
pub trait Embedder: Send + Sync {
    /// The model, as stored beside each vector.
    fn model(&self) -> &str;
    /// One vector per text, in order.
    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BoxError>>;
}

impl Embedder for clade_model::embeddings::OpenAiEmbeddings {
    fn model(&self) -> &str {
        clade_model::embeddings::OpenAiEmbeddings::model(self)
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BoxError>> {
        Box::pin(
            async move { Ok(clade_model::embeddings::OpenAiEmbeddings::embed(self, texts).await?) },
        )
    }
}
