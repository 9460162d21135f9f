//! Local embeddings through the real loading and inference code: a tiny random-weight BERT
//! built in the test (vectors of its width, unit length, the same text the same vector,
//! different texts different vectors, batches as single texts), clear errors for missing and
//! corrupt files, and the real all-MiniLM-L6-v2 when its files are there (`CLADE_TEST_MINILM`,
//! which `scripts/test` sets; required under `CI=true`): meaning decides its similarities.

use clade_model::local_embeddings::{Error, LocalEmbeddings, write_test_model};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn a_tiny_model_embeds_like_a_sentence_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    write_test_model(tmp.path(), 16).unwrap();
    let model = LocalEmbeddings::load(tmp.path(), "tiny").unwrap();
    assert_eq!((model.model(), model.dimensions()), ("tiny", 16));
    let texts: Vec<String> = [
        "my favourite colour is teal",
        "the dog",
        "my favourite colour is teal",
        "a much longer text about cats and dogs and the colour blue, which goes on and on",
    ]
    .map(String::from)
    .to_vec();
    let vectors = model.embed(&texts).await.unwrap();
    assert_eq!(vectors.len(), 4);
    for v in &vectors {
        assert_eq!(v.len(), 16);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    assert!(cosine(&vectors[0], &vectors[2]) > 0.9999, "the same text, another vector");
    assert!(cosine(&vectors[0], &vectors[1]) < 0.9999, "different texts, one vector");
    // Padding in a batch changes nothing: each text alone gives the vector it got beside others.
    let alone = model.embed(&texts[1..2]).await.unwrap();
    assert!(cosine(&alone[0], &vectors[1]) > 0.9999);
    // Many callers at once share forward passes, and each gets its own texts' vectors.
    let many: Vec<String> =
        (0..40).map(|n| "the cat ".repeat(n % 7 + 1) + &n.to_string()).collect();
    let one_by_one = model.embed(&many).await.unwrap();
    let calls = many.iter().map(|text| {
        let model = model.clone();
        let text = text.clone();
        tokio::spawn(async move { model.embed(&[text]).await.unwrap().remove(0) })
    });
    let together: Vec<Vec<f32>> =
        futures::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
    for (n, (a, b)) in together.iter().zip(&one_by_one).enumerate() {
        assert!(cosine(a, b) > 0.9999, "text {n} got another text's vector");
    }
    // Empty input, empty output; an empty text still gets a vector.
    assert!(model.embed(&[]).await.unwrap().is_empty());
    assert_eq!(model.embed(&[String::new()]).await.unwrap()[0].len(), 16);
}

#[test]
fn missing_and_corrupt_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = LocalEmbeddings::load(tmp.path(), "none").unwrap_err();
    assert!(matches!(err, Error::Missing(_)), "{err}");
    assert!(err.to_string().contains("config.json") && err.to_string().contains("not installed"));
    write_test_model(tmp.path(), 16).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), b"not weights").unwrap();
    let err = LocalEmbeddings::load(tmp.path(), "bad").unwrap_err();
    assert!(
        err.to_string().contains("model.safetensors") && err.to_string().contains("safetensors"),
        "{err}"
    );
    // Weights of another shape than config.json says.
    let other = tmp.path().join("other");
    write_test_model(&other, 8).unwrap();
    std::fs::copy(other.join("model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
    let err = LocalEmbeddings::load(tmp.path(), "mismatch").unwrap_err();
    assert!(err.to_string().contains("does not match config.json"), "{err}");
    std::fs::write(tmp.path().join("tokenizer.json"), b"{").unwrap();
    let err = LocalEmbeddings::load(tmp.path(), "bad").unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[tokio::test]
async fn the_real_minilm_puts_meaning_close() {
    let Some(dir) = std::env::var_os("CLADE_TEST_MINILM") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CLADE_TEST_MINILM is not set: run scripts/test, which downloads the model"
        );
        eprintln!("SKIPPED: CLADE_TEST_MINILM is not set (scripts/test downloads the model)");
        return;
    };
    let model = LocalEmbeddings::load(std::path::Path::new(&dir), "all-minilm-l6-v2").unwrap();
    assert_eq!(model.dimensions(), 384);
    let texts: Vec<String> = [
        "cat",
        "kitten",
        "stock market",
        "My favourite colour is teal",
        "What color do I like best?",
    ]
    .map(String::from)
    .to_vec();
    let v = model.embed(&texts).await.unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2, "cat/kitten vs cat/stocks");
    assert!(cosine(&v[3], &v[4]) > 0.4, "a preference and the question about it");
}
