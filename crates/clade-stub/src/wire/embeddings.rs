//! OpenAI's `POST /v1/embeddings`, as documented: `input` a string or an array of strings,
//! `dimensions` optional, `encoding_format` `float` (the default) or `base64`. The vectors are
//! deterministic feature hashes of each text's words and their character trigrams, so texts
//! sharing words (or most of a word) point the same way, as a real model's would for the tests'
//! purposes; they carry no meaning beyond that.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The vector length when the request names none.
const DEFAULT_DIMENSIONS: usize = 256;

fn invalid(message: &str, param: &str) -> Response {
    let body = json!({
        "error": { "message": message, "type": "invalid_request_error", "param": param, "code": null }
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The stub's embedding of `text`, `dimensions` long, of unit length (or all zero for a text
/// with no word).
pub(crate) fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut vector = vec![0f32; dimensions];
    let mut add = |feature: &str, weight: f32| {
        let hash = fnv(feature.as_bytes());
        let slot = (hash % dimensions as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[slot] += sign * weight;
    };
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let word = word.to_lowercase();
        add(&word, 1.0);
        let chars: Vec<char> = format!("^{word}$").chars().collect();
        for gram in chars.windows(3) {
            add(&gram.iter().collect::<String>(), 0.5);
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

pub(crate) async fn handle(
    axum::extract::State(shared): axum::extract::State<std::sync::Arc<crate::Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return invalid("the body is not JSON", "body");
    };
    crate::capture(&shared, "/v1/embeddings", &headers, &request);
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return invalid("you must provide a model parameter", "model");
    };
    let texts: Vec<&str> = match request.get("input") {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 2048 => {
            match items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                Some(texts) => texts,
                None => return invalid("input must be a string or an array of strings", "input"),
            }
        }
        _ => {
            return invalid(
                "input must be a string or a non-empty array of at most 2048 strings",
                "input",
            );
        }
    };
    if texts.iter().any(|t| t.is_empty()) {
        return invalid("input cannot contain an empty string", "input");
    }
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(value) => match value.as_u64() {
            Some(n @ 1..=4096) => n as usize,
            _ => return invalid("dimensions must be an integer from 1 to 4096", "dimensions"),
        },
    };
    let base64 = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return invalid("encoding_format must be float or base64", "encoding_format"),
    };
    let mut tokens = 0;
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += text.split_whitespace().count();
            let vector = embed(text, dimensions);
            let embedding = if base64 {
                use base64::Engine as _;
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens }
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn texts_sharing_words_point_the_same_way() {
        let cat = embed("the cat sat on the mat", 64);
        let cats = embed("cats sit on mats", 64);
        let stocks = embed("quarterly stock prices fell", 64);
        assert!((cosine(&cat, &cat) - 1.0).abs() < 1e-5);
        assert!(cosine(&cat, &cats) > cosine(&cat, &stocks) + 0.2);
        assert!(embed("?!", 8).iter().all(|x| *x == 0.0));
    }
}
