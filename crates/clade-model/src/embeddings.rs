//! Embeddings over OpenAI's `POST {base}/embeddings`, which every compatible server (Ollama,
//! vLLM, llama.cpp, LM Studio) offers too. The local MiniLM, in process, is `clade-memory`'s.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::provider::{HttpOptions, send_authed};

/// The most texts sent in one request (OpenAI takes up to 2,048).
pub const MAX_BATCH: usize = 256;

/// An OpenAI-compatible embeddings model.
pub struct OpenAiEmbeddings {
    name: String,
    model: String,
    client: reqwest::Client,
    options: HttpOptions,
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Datum>,
}

#[derive(Deserialize)]
struct Datum {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbeddings {
    /// `name` is how errors name it; `model` the provider's model id.
    pub fn new(
        name: impl Into<String>,
        model: impl Into<String>,
        client: reqwest::Client,
        options: HttpOptions,
    ) -> Self {
        Self { name: name.into(), model: model.into(), client, options }
    }

    /// The provider's model id.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// One vector per text, in order, all of one length and finite; a batch over
    /// [`MAX_BATCH`] is sent in parts.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let mut vectors = Vec::with_capacity(texts.len());
        for part in texts.chunks(MAX_BATCH) {
            vectors.extend(self.embed_part(part).await?);
        }
        if let Some(first) = vectors.first()
            && vectors.iter().any(|v| v.len() != first.len())
        {
            return Err(self.malformed("vectors of different lengths"));
        }
        Ok(vectors)
    }

    async fn embed_part(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let url = format!("{}/embeddings", self.options.base_url.trim_end_matches('/'));
        let body = Body { model: &self.model, input: texts, encoding_format: "float" };
        let build = |token: Option<&str>| {
            let mut request =
                self.client.post(&url).timeout(self.options.connect_timeout).json(&body);
            for (name, value) in &self.options.headers {
                request = request.header(name, value);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request
        };
        let response = send_authed(&self.options, &self.name, build, |_, _, _| None).await?;
        let bytes = crate::http::read_capped(response, crate::http::MAX_BODY)
            .await
            .map_err(|message| Error::Transport { provider: self.name.clone(), message })?;
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| self.malformed(&format!("the answer is not an embeddings list: {e}")))?;
        if answer.data.len() != texts.len() {
            return Err(self.malformed(&format!(
                "{} vectors for {} texts",
                answer.data.len(),
                texts.len()
            )));
        }
        let mut vectors = vec![Vec::new(); texts.len()];
        for datum in answer.data {
            let slot = vectors
                .get_mut(datum.index)
                .ok_or_else(|| self.malformed(&format!("index {} out of range", datum.index)))?;
            if datum.embedding.is_empty() || datum.embedding.iter().any(|x| !x.is_finite()) {
                return Err(self.malformed("an empty or non-finite vector"));
            }
            *slot = datum.embedding;
        }
        if vectors.iter().any(Vec::is_empty) {
            return Err(self.malformed("an index answered twice"));
        }
        Ok(vectors)
    }

    fn malformed(&self, what: &str) -> Error {
        Error::MalformedResponse(format!("{} embeddings: {what}", self.name))
    }
}
