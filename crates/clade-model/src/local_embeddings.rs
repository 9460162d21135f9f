//! Embeddings made in process, with no service to call: a BERT sentence encoder (by default
//! all-MiniLM-L6-v2, 384 dimensions) run with candle on the CPU, mean-pooled over its tokens and
//! normalised to unit length, as sentence-transformers does. Its files (`config.json`,
//! `tokenizer.json`, `model.safetensors`) sit in one folder; nothing is fetched at run time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bert::{Config, Encoder};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The files a model folder holds.
pub const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// The longest text embedded, in tokens; the rest of a longer one is left out.
const MAX_TOKENS: usize = 256;
/// Texts embedded in one forward pass.
const BATCH: usize = 32;

/// What can go wrong loading or running a local model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: missing: the local embeddings model is not installed", .0.display())]
    Missing(PathBuf),
    #[error("{}: {message}: the local embeddings model's files are damaged", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("the local embeddings model failed: {0}")]
    Run(#[source] Arc<Failure>),
    #[error("cannot start the local embeddings model's thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the local embeddings model's thread has stopped; restart the process")]
    Stopped,
}

/// What failed in a forward pass: shared by every caller whose texts were in it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("tokenizing: {0}")]
    Tokenize(#[source] tokenizers::Error),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

struct Loaded {
    model: Encoder,
    tokenizer: Tokenizer,
    dimensions: usize,
}

/// Texts to embed and where their vectors go.
struct Job {
    texts: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, Arc<Failure>>>,
}

/// A sentence encoder loaded from a folder, shared by every caller. One thread of its own runs
/// it: the texts of every request waiting when it is free go through the model together, so
/// many callers embedding a sentence each (concurrent saves) share forward passes instead of
/// contending for the cores with one each.
#[derive(Clone)]
pub struct LocalEmbeddings {
    name: String,
    dimensions: usize,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for LocalEmbeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbeddings").field("name", &self.name).finish_non_exhaustive()
    }
}

fn corrupt(path: &Path, message: impl ToString) -> Error {
    Error::Corrupt { path: path.to_owned(), message: message.to_string() }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing(path.into())),
        Err(err) => Err(corrupt(path, err)),
    }
}

impl LocalEmbeddings {
    /// Loads the model in `dir`, named `name` beside the vectors it makes. Each file missing or
    /// unreadable is an error naming it.
    pub fn load(dir: &Path, name: &str) -> Result<Self, Error> {
        let [config_file, tokenizer_file, weights_file] = FILES.map(|f| dir.join(f));
        let config: Config = serde_json::from_slice(&read(&config_file)?)
            .map_err(|e| corrupt(&config_file, format!("not a BERT configuration: {e}")))?;
        config.check().map_err(|e| corrupt(&config_file, e))?;
        let mut tokenizer = Tokenizer::from_bytes(read(&tokenizer_file)?)
            .map_err(|e| corrupt(&tokenizer_file, format!("not a tokenizer: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..TruncationParams::default()
            }))
            .map_err(|e| corrupt(&tokenizer_file, e))?;
        let weights = read(&weights_file)?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| corrupt(&weights_file, format!("not safetensors: {e}")))?;
        let model = Encoder::load(vb, &config)
            .map_err(|e| corrupt(&weights_file, format!("does not match config.json: {e}")))?;
        let loaded = Loaded { model, tokenizer, dimensions: config.hidden_size };
        let (jobs, queue) = std::sync::mpsc::channel();
        let dimensions = loaded.dimensions;
        std::thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || work(&loaded, &queue))
            .map_err(Error::Thread)?;
        Ok(Self { name: name.to_owned(), dimensions, jobs })
    }

    /// The model's name, as stored beside each vector.
    pub fn model(&self) -> &str {
        &self.name
    }

    /// How many numbers a vector has.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// One unit-length vector per text, in order, made on the model's thread.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs.send(Job { texts: texts.to_vec(), reply }).map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?.map_err(Error::Run)
    }
}

/// The model's thread: takes every job waiting (up to a few batches' worth), embeds their
/// texts together, shortest first so each batch pads little, and answers each job with its
/// own vectors. It ends when the last handle to the model is dropped.
fn work(loaded: &Loaded, queue: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        let mut waiting = jobs[0].texts.len();
        while waiting < BATCH * 4 {
            match queue.try_recv() {
                Ok(job) => {
                    waiting += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let texts: Vec<&String> = jobs.iter().flat_map(|j| &j.texts).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let mut failed = None;
        for chunk in order.chunks(BATCH) {
            let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
            match forward(loaded, &batch) {
                Ok(made) => {
                    for (&i, vector) in chunk.iter().zip(made) {
                        vectors[i] = vector;
                    }
                }
                Err(err) => {
                    failed = Some(Arc::new(err));
                    break;
                }
            }
        }
        let mut vectors = vectors.into_iter();
        for job in jobs {
            let answer = match &failed {
                Some(err) => Err(err.clone()),
                None => Ok(vectors.by_ref().take(job.texts.len()).collect()),
            };
            // A caller that stopped waiting has nothing to be told.
            let _ = job.reply.send(answer);
        }
    }
}

fn forward(loaded: &Loaded, texts: &[String]) -> Result<Vec<Vec<f32>>, Failure> {
    let encodings =
        loaded.tokenizer.encode_batch(texts.to_vec(), true).map_err(Failure::Tokenize)?;
    let device = Device::Cpu;
    let stack = |pick: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| {
        let rows = encodings
            .iter()
            .map(|e| Tensor::new(pick(e).as_slice(), &device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    };
    let ids = stack(&|e| e.get_ids().to_vec())?;
    let mask = stack(&|e| e.get_attention_mask().to_vec())?;
    let hidden = loaded.model.forward(&ids, &mask)?;
    // The mean over real tokens (padding left out), then unit length.
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
    let mean = sum.broadcast_div(&mask.sum(1)?)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
    Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
}

/// Writes a tiny BERT with random weights and a small word-piece vocabulary into `dir`, in
/// the layout [`LocalEmbeddings::load`] reads: for tests, which need the real loading and
/// inference code without a 90 MB download.
pub fn write_test_model(
    dir: &Path,
    hidden: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;

    std::fs::create_dir_all(dir)?;
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].map(String::from).to_vec();
    for c in ('a'..='z').chain('0'..='9') {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    for word in ["the", "cat", "dog", "colour", "favourite", "is", "my", "teal", "blue"] {
        vocab.push(word.to_owned());
    }
    // The vocabulary as BERT ships it: a token a line, its id the line's number.
    let vocab_file = dir.join("vocab.txt");
    std::fs::write(&vocab_file, vocab.join("\n"))?;
    let wordpiece =
        WordPiece::from_file(&vocab_file.to_string_lossy()).unk_token("[UNK]".into()).build()?;
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer.with_normalizer(Some(BertNormalizer::default()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer
        .with_post_processor(Some(BertProcessing::new(("[SEP]".into(), 3), ("[CLS]".into(), 2))));
    tokenizer.save(dir.join("tokenizer.json"), false)?;

    let config = serde_json::json!({
        "vocab_size": vocab.len(), "hidden_size": hidden, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": hidden * 2, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "max_position_embeddings": 64, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "model_type": "bert",
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let config: Config = serde_json::from_value(config)?;
    // A model built on an empty variable map makes every weight under the names loading
    // looks for; they are then drawn again from a fixed seed, so every test model is the same
    // and a test's outcome does not depend on the draw.
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Encoder::load(vb, &config)?;
    let draws = clade_core::Jitter::seeded(0x5eed_cafe);
    let uniform = |bound: f32, n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let unit = (draws.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                (unit * 2.0 - 1.0) * bound
            })
            .collect()
    };
    let vars = varmap.data().lock().map_err(|_| "the variable map's lock is poisoned")?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        let n = dims.iter().product();
        let values = if name.contains("LayerNorm") {
            vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; n]
        } else if name.contains("embeddings") {
            // About the spread of a standard normal.
            uniform(1.7, n)
        } else {
            let fan_in = dims.last().copied().unwrap_or(1).max(1) as f32;
            uniform(1.0 / fan_in.sqrt(), n)
        };
        let tensor = Tensor::from_vec(values, dims, &Device::Cpu)?;
        var.set(&tensor)?;
    }
    drop(vars);
    Ok(varmap.save(dir.join("model.safetensors"))?)
}
