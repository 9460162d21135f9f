//! A chat model run in process, with no service and no key: a llama-architecture model in one
//! GGUF file (by default SmolLM2-135M-Instruct), run with candle on the CPU. Its tokenizer is
//! built from the file's own metadata (a byte-level BPE), its prompt is ChatML, and its answer
//! streams token by token until an end token, the request's `max_tokens`, or the context. The
//! network itself is [`crate::llama`] (its Q4_1 weights held as Q8_0: 270 MB for SmolLM2-135M).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use futures::future::BoxFuture;
use tokenizers::Tokenizer;

use crate::error::Error as ModelError;
use crate::llama::{Llama, MAX_CONTEXT, Sampler};
use crate::provider::Provider;
use crate::text_calls::{self, CallSplitter};
use crate::types::{EventStream, Message, ModelRequest, StopReason, StreamEvent, ToolSpec, Usage};

/// The provider's name in replies' metadata.
pub const LOCAL_NAME: &str = "local";

/// What can go wrong loading a local chat model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{}: missing: the local chat model is not installed", .0.display())]
    Missing(PathBuf),
    #[error("{}: {message}: the local chat model's file is damaged", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: a {arch:?} model; only llama-architecture chat models (such as SmolLM2) run in process", path.display())]
    Architecture { path: PathBuf, arch: String },
    #[error("{}: loading stopped before it ended ({message}); try again", path.display())]
    Interrupted { path: PathBuf, message: String },
}

struct Shared {
    tokenizer: Tokenizer,
    /// Tokens that end an answer (`<|im_end|>`, the end of text).
    stops: Vec<u32>,
    context: usize,
}

/// A loaded model, shared: answers are generated on blocking threads, up to its concurrency
/// at once, each on a copy of the weights of its own (the tensors are shared; only the
/// attention cache is a copy's own), so answers to different sessions do not queue behind
/// each other. A copy's cache outlives its answer: the next prompt that begins the same way
/// (a session's next turn, or any turn of an agent with the same system prompt) is read from
/// where they part, not from its first token.
#[derive(Clone)]
pub struct LocalChat {
    name: String,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
}

struct Pool {
    /// What a new copy is cloned from.
    template: Llama,
    idle: Mutex<Vec<Copy>>,
    /// One per answer being generated.
    places: Arc<tokio::sync::Semaphore>,
    concurrency: usize,
}

impl Pool {
    fn new(template: Llama, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            template,
            idle: Mutex::new(Vec::new()),
            places: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            concurrency,
        }
    }

    /// The idle copy of `scope` whose cache shares the longest beginning with `prompt`; else
    /// another idle copy or a new one, holding nothing (what it held was another scope's).
    fn take(&self, prompt: &[u32], scope: Option<&str>) -> Copy {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let ours = |copy: &Copy| scope.is_some() && copy.scope.as_deref() == scope;
        let best = (0..idle.len())
            .filter(|&i| ours(&idle[i]))
            .max_by_key(|&i| shared_prefix(&idle[i].seen, prompt));
        let mut copy = match best.or_else(|| idle.len().checked_sub(1)) {
            Some(i) => idle.swap_remove(i),
            None => Copy { weights: self.template.clone(), seen: Vec::new(), scope: None },
        };
        if !ours(&copy) {
            copy.seen.clear();
        }
        copy.scope = scope.map(str::to_owned);
        copy
    }

    fn give_back(&self, copy: Copy) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(copy);
    }
}

/// A copy of the weights and the tokens its attention cache holds, in order.
struct Copy {
    weights: Llama,
    seen: Vec<u32>,
    /// Whose prompts `seen` holds ([`ModelRequest::cache_scope`]).
    scope: Option<String>,
}

/// How many tokens `a` and `b` begin with alike.
fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Answers generated at once by default: one per two cores, at most 4. candle already spreads
/// one answer's matrix products over the cores; on 2 cores two answers at once wrote 12 %
/// fewer tokens a second in all than one at a time (`docs/perf/local-model.md`).
fn default_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, 4)
}

impl std::fmt::Debug for LocalChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChat").field("name", &self.name).finish_non_exhaustive()
    }
}

fn corrupt(path: &Path, message: impl ToString) -> LoadError {
    LoadError::Corrupt { path: path.to_owned(), message: message.to_string() }
}

impl LocalChat {
    /// Loads the model in `path` (a `.gguf` file).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let mut file =
            std::fs::File::open(path).map_err(|_| LoadError::Missing(path.to_owned()))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| corrupt(path, format!("not a GGUF model ({e})")))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(LoadError::Architecture { path: path.to_owned(), arch });
        }
        let (tokenizer, stops) = tokenizer_of(path, &content)?;
        // The file states what the model was trained on; the rotary tables stop at
        // `MAX_CONTEXT`, and a position past them fails mid-answer.
        let context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(2048, |n| n as usize)
            .min(MAX_CONTEXT);
        let weights = Llama::load(&content, &mut file).map_err(|e| {
            corrupt(path, format!("its weights cannot be loaded ({e}): the file may be cut short or not describe a model this runs"))
        })?;
        let name = path.file_stem().map_or("local".into(), |s| s.to_string_lossy().into_owned());
        let shared = Arc::new(Shared { tokenizer, stops, context });
        let pool = Arc::new(Pool::new(weights, default_concurrency()));
        Ok(Self { name, shared, pool })
    }

    /// The same model generating at most `answers` at once (at least 1).
    #[must_use]
    pub fn with_concurrency(self, answers: usize) -> Self {
        let pool = Arc::new(Pool::new(self.pool.template.clone(), answers));
        Self { pool, ..self }
    }

    /// How many answers it generates at once.
    pub fn concurrency(&self) -> usize {
        self.pool.concurrency
    }

    /// The longest prompt and answer together, in tokens.
    pub fn context(&self) -> usize {
        self.shared.context
    }

    /// The model's name: its file's, without `.gguf`.
    pub fn model_name(&self) -> &str {
        &self.name
    }
}

/// A byte-level BPE tokenizer from the GGUF metadata (`tokenizer.ggml.*`, as llama.cpp writes
/// it for GPT-2-style vocabularies), with its control tokens as special tokens; and the ids
/// that end an answer.
fn tokenizer_of(
    path: &Path,
    content: &gguf_file::Content,
) -> Result<(Tokenizer, Vec<u32>), LoadError> {
    use tokenizers::models::bpe::{BPE, Vocab};
    use tokenizers::{AddedToken, decoders, pre_tokenizers};
    let md = |key: &str| {
        content.metadata.get(key).ok_or_else(|| corrupt(path, format!("no {key} in its metadata")))
    };
    let kind = md("tokenizer.ggml.model")?.to_string().map_err(|e| corrupt(path, e))?;
    if kind != "gpt2" {
        let message = format!("a {kind:?} tokenizer; only byte-level BPE (gpt2) is read");
        return Err(corrupt(path, message));
    }
    let strings = |key: &str| -> Result<Vec<String>, LoadError> {
        md(key)?
            .to_vec()
            .map_err(|e| corrupt(path, e))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| corrupt(path, e)))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
        .into_iter()
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| corrupt(path, format!("its vocabulary does not build a tokenizer ({e})")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizers::byte_level::ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(decoders::byte_level::ByteLevel::default()));
    // Control (3) and user-defined (4) tokens are whole tokens, never split.
    let types: Vec<u32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| corrupt(path, e))?
            .iter()
            .map(|t| t.to_i32().map(|t| t as u32).unwrap_or(1))
            .collect(),
        None => Vec::new(),
    };
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| matches!(t, 3 | 4))
        .map(|(token, _)| AddedToken::from(token.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| corrupt(path, format!("its control tokens cannot be added ({e})")))?;
    let mut stops: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
        .iter()
        .filter_map(|t| tokens.iter().position(|k| k == t).map(|i| i as u32))
        .collect();
    if let Some(eos) =
        content.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok())
    {
        stops.push(eos);
    }
    Ok((tokenizer, stops))
}

/// The conversation in ChatML, ending where the assistant's answer begins. With `tools`, the
/// system turn lists them and says how to call one, and earlier calls and their results are
/// shown as the model writes and reads them ([`crate::text_calls`]).
pub fn chatml(messages: &[Message], tools: &[ToolSpec]) -> String {
    let mut turns: Vec<(&str, String)> = messages
        .iter()
        .map(|message| match message {
            Message::System { text } => ("system", text.clone()),
            Message::User { text } => ("user", text.clone()),
            Message::Assistant { text, tool_calls } => {
                ("assistant", text_calls::calls_text(text, tool_calls))
            }
            Message::Tool { content, is_error, .. } => {
                ("user", text_calls::response_text(content, *is_error))
            }
        })
        .collect();
    if !tools.is_empty() {
        let listed = text_calls::tools_prompt(tools);
        match turns.first_mut() {
            Some(("system", text)) => {
                text.push_str("\n\n");
                text.push_str(&listed);
            }
            _ => turns.insert(0, ("system", listed)),
        }
    }
    let mut prompt = String::new();
    for (role, text) in turns {
        prompt.push_str(&format!("<|im_start|>{role}\n{text}<|im_end|>\n"));
    }
    prompt.push_str("<|im_start|>assistant\n");
    prompt
}

/// A failure of the model's arithmetic or tokenizer. Its text may carry a backtrace (candle
/// captures one where `RUST_BACKTRACE` is set): only its first line is kept for the caller, the
/// whole of it goes to the log.
fn failure(e: &dyn std::fmt::Display) -> ModelError {
    let full = e.to_string();
    tracing::error!(error = %full, "the local model failed");
    ModelError::Server {
        provider: LOCAL_NAME.into(),
        status: 500,
        message: crate::error::public_text(&full),
    }
}

/// Generates an answer after `prompt` (its tokens) on this thread with `copy`, passing each
/// new piece of text to `emit`; the tokens written. The prompt is read from where it parts
/// from what the copy's cache holds.
fn generate(
    shared: &Shared,
    copy: &mut Copy,
    prompt: Vec<u32>,
    max_tokens: usize,
    temperature: Option<f64>,
    emit: &mut dyn FnMut(String) -> bool,
) -> Result<usize, ModelError> {
    let fail = |e: &dyn std::fmt::Display| failure(e);
    // At least the prompt's last token is read again: its logits give the first of the answer.
    let mut position = shared_prefix(&copy.seen, &prompt).min(prompt.len().saturating_sub(1));
    // Until the answer ends, the cache holds no more than what both agree on.
    copy.seen.truncate(position);
    let mut input = prompt[position..].to_vec();
    let mut tokens = prompt;
    let read = tokens.len();
    let room = shared.context.saturating_sub(read);
    let mut sampler = Sampler::new(299_792_458, temperature, 0.9);
    let mut shown = String::new();
    let mut written = 0;
    while written < max_tokens.min(room) {
        let tensor = Tensor::new(input.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(|e| fail(&e))?;
        let logits = match copy.weights.forward(&tensor, position) {
            Ok(logits) => logits,
            Err(err) => {
                // A block's cache may be half written: the next answer starts afresh.
                copy.seen.clear();
                return Err(fail(&err));
            }
        };
        let logits = logits.squeeze(0).map_err(|e| fail(&e))?;
        position += input.len();
        copy.seen.extend_from_slice(&input);
        let next = sampler.sample(&logits).map_err(|e| fail(&e))?;
        if shared.stops.contains(&next) {
            break;
        }
        tokens.push(next);
        written += 1;
        // A small model that starts repeating itself would otherwise write until max_tokens
        // (minutes on a CPU); the repeats already written end the answer.
        if looping(&tokens[read..]) {
            break;
        }
        input = vec![next];
        let text = shared.tokenizer.decode(&tokens[read..], true).map_err(|e| fail(&e))?;
        // A piece that ends inside a character waits for the rest of it.
        if text.len() > shown.len() && !text.ends_with('\u{fffd}') && text.starts_with(&shown) {
            let piece = text[shown.len()..].to_owned();
            shown = text;
            if !emit(piece) {
                break;
            }
        }
    }
    Ok(written)
}

/// The shortest run of repeats that counts as a loop, in tokens.
const LOOP_SPAN: usize = 48;
/// The longest period (in tokens) looked for: a loop of a whole paragraph.
const LOOP_PERIOD: usize = 192;

/// Whether `answer` ends in the same tokens written again and again: over at least
/// [`LOOP_SPAN`] tokens, a period of up to 47 tokens three times, or a longer one (up to
/// [`LOOP_PERIOD`]) twice in full.
fn looping(answer: &[u32]) -> bool {
    (1..=LOOP_PERIOD).any(|period| {
        let repeats = if period < LOOP_SPAN { 3 } else { 2 };
        let span = (period * repeats).max(LOOP_SPAN);
        answer.len() >= span && {
            let tail = &answer[answer.len() - span..];
            tail[period..].iter().zip(tail).all(|(later, earlier)| later == earlier)
        }
    })
}

impl Provider for LocalChat {
    fn name(&self) -> &str {
        LOCAL_NAME
    }

    fn body(&self, _model: &str, request: &ModelRequest) -> Option<String> {
        Some(chatml(&request.messages, &request.tools))
    }

    fn stream<'a>(
        &'a self,
        _model: &'a str,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<EventStream, ModelError>> {
        Box::pin(async move {
            let encode = |text: String| -> Result<Vec<u32>, ModelError> {
                let encoding =
                    self.shared.tokenizer.encode(text, false).map_err(|e| failure(&e))?;
                Ok(encoding.get_ids().to_vec())
            };
            let mut calling = !request.tools.is_empty();
            let mut prompt = encode(chatml(&request.messages, &request.tools))?;
            // A small model's context is soon filled by an agent's tool schemas: they are
            // offered only when they leave a quarter of it for the answer.
            if calling && prompt.len() + self.shared.context / 4 > self.shared.context {
                if !TOOLS_LEFT_OUT.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        tools = request.tools.len(),
                        context = self.shared.context,
                        "the agent's tools do not fit the local model's context: it answers without them (give the agent fewer tools, or a model with a longer context)"
                    );
                }
                prompt = encode(chatml(&request.messages, &[]))?;
                calling = false;
            }
            let read = prompt.len();
            // Refused before anything streams, so the caller can compact and try again.
            if read + 1 > self.shared.context {
                return Err(ModelError::ContextTooLong {
                    provider: LOCAL_NAME.into(),
                    message: format!(
                        "the prompt is {read} tokens; the model's context holds {}",
                        self.shared.context
                    ),
                });
            }
            let max_tokens = request.params.max_tokens as usize;
            let temperature = request.params.temperature.map(f64::from);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (shared, pool) = (self.shared.clone(), self.pool.clone());
            let scope = request.cache_scope.clone();
            // Past the concurrency, an answer waits here rather than holding a blocking thread.
            let place = pool.places.clone().acquire_owned().await.map_err(|e| failure(&e))?;
            // The model's arithmetic blocks: it runs on a thread of its own.
            tokio::task::spawn_blocking(move || {
                let _place = place;
                let mut copy = pool.take(&prompt, scope.as_deref());
                // Nothing to show (a call being written) still stops once the caller is gone.
                let say = |text: String| {
                    if text.is_empty() {
                        !tx.is_closed()
                    } else {
                        tx.send(Ok(StreamEvent::TextDelta(text))).is_ok()
                    }
                };
                // With tools, a call's text is held back and read as a call when the answer ends.
                let mut splitter = calling.then(CallSplitter::default);
                let mut emit = |piece: String| match splitter.as_mut() {
                    Some(splitter) => say(splitter.push(&piece)),
                    None => say(piece),
                };
                let outcome =
                    generate(&shared, &mut copy, prompt, max_tokens, temperature, &mut emit);
                pool.give_back(copy);
                let (rest, calls) = splitter.map(CallSplitter::finish).unwrap_or_default();
                match outcome {
                    Ok(written) => {
                        say(rest);
                        let made = !calls.is_empty();
                        for (index, call) in calls.into_iter().enumerate() {
                            let start =
                                StreamEvent::ToolCallStart { index, id: call.id, name: call.name };
                            let _ = tx.send(Ok(start));
                            let _ = tx.send(Ok(StreamEvent::ToolCallDelta {
                                index,
                                arguments: call.arguments,
                            }));
                        }
                        let usage = Usage {
                            input_tokens: read as u64,
                            output_tokens: written as u64,
                            ..Usage::default()
                        };
                        let stop = if made {
                            StopReason::ToolUse
                        } else if written >= max_tokens {
                            StopReason::MaxTokens
                        } else {
                            StopReason::EndTurn
                        };
                        let _ = tx.send(Ok(StreamEvent::Usage(usage)));
                        let _ = tx.send(Ok(StreamEvent::Stop(stop)));
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err));
                    }
                }
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok(Box::pin(stream) as EventStream)
        })
    }
}

/// Whether a request's tools were left out for want of context (said once a process).
static TOOLS_LEFT_OUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

type Cell = Arc<tokio::sync::OnceCell<Result<LocalChat, LoadError>>>;

/// A local chat model as a provider: its file is loaded on the first call (on a blocking
/// thread), once a process whatever the number of routers that name it.
#[derive(Clone)]
pub struct LocalProvider {
    path: PathBuf,
    /// Answers at once, when not the model's default.
    concurrency: Option<usize>,
    cell: Cell,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider").field("path", &self.path).finish_non_exhaustive()
    }
}

impl LocalProvider {
    /// The model in `path`, generating `concurrency` answers at once (`None`: its default).
    pub fn new(path: PathBuf, concurrency: Option<usize>) -> Self {
        type Loaded = std::collections::HashMap<(PathBuf, Option<usize>), Cell>;
        static LOADED: std::sync::OnceLock<Mutex<Loaded>> = std::sync::OnceLock::new();
        let mut loaded =
            LOADED.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
        let cell = loaded.entry((path.clone(), concurrency)).or_default().clone();
        Self { path, concurrency, cell }
    }

    /// The loaded model (loading it on the first call).
    pub async fn loaded(&self) -> Result<LocalChat, ModelError> {
        self.model().await
    }

    async fn model(&self) -> Result<LocalChat, ModelError> {
        let (path, concurrency) = (self.path.clone(), self.concurrency);
        let loaded = self
            .cell
            .get_or_init(|| async move {
                let interrupted = path.clone();
                tokio::task::spawn_blocking(move || {
                    let chat = LocalChat::load(&path)?;
                    Ok(match concurrency {
                        Some(n) => chat.with_concurrency(n),
                        None => chat,
                    })
                })
                .await
                .unwrap_or_else(|e| {
                    Err(LoadError::Interrupted { path: interrupted, message: e.to_string() })
                })
            })
            .await;
        loaded.clone().map_err(|e| ModelError::InvalidRequest {
            provider: LOCAL_NAME.into(),
            message: e.to_string(),
        })
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &str {
        LOCAL_NAME
    }

    fn body(&self, _model: &str, request: &ModelRequest) -> Option<String> {
        Some(chatml(&request.messages, &request.tools))
    }

    fn stream<'a>(
        &'a self,
        model: &'a str,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<EventStream, ModelError>> {
        Box::pin(async move {
            let chat = self.model().await?;
            chat.stream(model, request).await
        })
    }
}

/// Writes a tiny llama to `path` (a GGUF file): two layers of width 64, grouped-query attention,
/// a byte-level vocabulary of 256 bytes, two merges and ChatML's control tokens, weights drawn
/// from a fixed seed (the matrices quantized as Q4_1, so loading requantizes them). Tests run
/// the real loading and generation code on it instead of the 98 MB model.
pub fn write_test_model(path: &Path) -> candle_core::Result<()> {
    use gguf_file::Value;
    let mut alphabet: Vec<char> =
        tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let mut tokens: Vec<String> = alphabet.iter().map(char::to_string).collect();
    tokens.extend(["he", "ll"].map(String::from));
    let normal = tokens.len();
    tokens.extend(["<|im_start|>", "<|im_end|>", "<|endoftext|>"].map(String::from));
    let types: Vec<Value> =
        (0..tokens.len()).map(|i| Value::I32(if i < normal { 1 } else { 3 })).collect();
    let strings =
        |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
    let (hidden, heads, kv_heads, layers, ff) = (64usize, 2u32, 1u32, 2u32, 128usize);
    let head_dim = hidden / heads as usize;
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.attention.head_count", Value::U32(heads)),
        ("llama.attention.head_count_kv", Value::U32(kv_heads)),
        ("llama.block_count", Value::U32(layers)),
        ("llama.embedding_length", Value::U32(hidden as u32)),
        ("llama.rope.dimension_count", Value::U32(head_dim as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", Value::U32(1024)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&["h e".to_owned(), "l l".to_owned()])),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.eos_token_id", Value::U32(tokens.len() as u32 - 1)),
    ];
    let draws = clade_core::Jitter::seeded(0x11a_a0a);
    let random = |rows: usize, cols: usize, dtype: GgmlDType| -> candle_core::Result<QTensor> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| ((draws.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.2)
            .collect();
        let tensor = Tensor::from_vec(values, (rows, cols), &Device::Cpu)?;
        QTensor::quantize(&tensor, dtype)
    };
    let ones = |n: usize| -> candle_core::Result<QTensor> {
        let tensor = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?;
        QTensor::quantize(&tensor, GgmlDType::F32)
    };
    let vocab = tokens.len();
    let kv = kv_heads as usize * head_dim;
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), random(vocab, hidden, GgmlDType::F32)?),
        ("output_norm.weight".into(), ones(hidden)?),
        ("output.weight".into(), random(vocab, hidden, GgmlDType::Q4_1)?),
    ];
    for layer in 0..layers {
        let name = |part: &str| format!("blk.{layer}.{part}.weight");
        tensors.push((name("attn_norm"), ones(hidden)?));
        tensors.push((name("ffn_norm"), ones(hidden)?));
        tensors.push((name("attn_q"), random(hidden, hidden, GgmlDType::Q4_1)?));
        tensors.push((name("attn_k"), random(kv, hidden, GgmlDType::Q4_1)?));
        tensors.push((name("attn_v"), random(kv, hidden, GgmlDType::Q4_1)?));
        tensors.push((name("attn_output"), random(hidden, hidden, GgmlDType::Q4_1)?));
        tensors.push((name("ffn_gate"), random(ff, hidden, GgmlDType::Q4_1)?));
        tensors.push((name("ffn_up"), random(ff, hidden, GgmlDType::Q4_1)?));
        tensors.push((name("ffn_down"), random(hidden, ff, GgmlDType::Q4_1)?));
    }
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path)?;
    gguf_file::write(&mut file, &metadata, &refs)
}

#[cfg(test)]
mod tests {
    use super::looping;

    #[test]
    fn an_answer_loops_once_its_tail_repeats() {
        let word = vec![7; 47];
        assert!(!looping(&word), "47 tokens are short of the span");
        assert!(looping(&[word.as_slice(), &[7]].concat()));
        // A sentence of 20 tokens, twice, is not yet a loop; a third time it is.
        let sentence: Vec<u32> = (100..120).collect();
        let twice = [sentence.clone(), sentence.clone()].concat();
        assert!(!looping(&[&[1, 2, 3][..], &twice].concat()));
        assert!(looping(&[twice.clone(), sentence.clone()].concat()));
        // A paragraph of 78 tokens written twice in full is a loop; once and a half is not.
        let paragraph: Vec<u32> = (200..278).collect();
        assert!(!looping(&[paragraph.clone(), paragraph[..40].to_vec()].concat()));
        assert!(looping(&[paragraph.clone(), paragraph.clone()].concat()));
        // A list whose items differ never loops, however long.
        let counting: Vec<u32> = (0..40).flat_map(|n| [5, 1000 + n, 6]).collect();
        assert!(!looping(&counting));
        // What came before the repeats does not matter, only how the answer ends.
        let mut ends_apart = [twice, sentence].concat();
        ends_apart.push(9);
        assert!(!looping(&ends_apart));
    }

    /// A copy's cache serves the next prompt of its own scope only: another tenant's, or a
    /// prompt of no scope, starts from nothing, so no tenant can time another's prompts.
    #[test]
    fn a_copy_keeps_its_cache_for_its_own_scope_only() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("tiny.gguf");
        super::write_test_model(&file).unwrap();
        let model = super::LocalChat::load(&file).unwrap().with_concurrency(1);
        let pool = &model.pool;
        let prompt = [1, 2, 3, 4];
        let answered = |scope: Option<&str>| {
            let mut copy = pool.take(&prompt, scope);
            copy.seen = prompt.to_vec();
            pool.give_back(copy);
        };
        answered(Some("a"));
        assert_eq!(pool.take(&prompt, Some("a")).seen, prompt, "its own scope lost its cache");
        answered(Some("a"));
        let other = pool.take(&prompt, Some("b"));
        assert!(other.seen.is_empty() && other.scope.as_deref() == Some("b"));
        pool.give_back(other);
        assert!(pool.take(&prompt, Some("a")).seen.is_empty(), "b's cache served a");
        answered(None);
        assert!(pool.take(&prompt, None).seen.is_empty(), "a prompt of no scope was cached");
    }
}
