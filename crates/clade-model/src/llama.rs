//! The llama architecture over quantized GGUF weights, as the local chat model runs it: token
//! embeddings, blocks of RMS-normed grouped-query attention (interleaved rotary positions, a
//! cache of keys and values per block) and a gated SiLU feed-forward, then the vocabulary's
//! logits for the last position. Written on candle's tensors so that `clade` does not compile
//! candle-transformers and its hundred other architectures for this one (`docs/perf/build.md`);
//! a test checks it against candle-transformers' `quantized_llama`.
//!
//! Weights quantized as Q4_1 are requantized to Q8_0 as they load: candle has no fast path for
//! Q4_1, and Q8_0 keeps the model's quality at about twice the memory.

use std::io::{Read, Seek};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, IndexOp as _, Module as _, Tensor};
use candle_nn::{Embedding, RmsNorm};

/// The longest context the rotary tables are made for, whatever the file states: attention on
/// the CPU over longer prompts is slower than anyone would wait for.
pub(crate) const MAX_CONTEXT: usize = 4096;

/// A loaded model. A clone shares the weights and has a cache of its own.
#[derive(Clone)]
pub(crate) struct Llama {
    embeddings: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
}

#[derive(Clone)]
struct Block {
    attention_norm: RmsNorm,
    query: QMatMul,
    key: QMatMul,
    value: QMatMul,
    out: QMatMul,
    ffn_norm: RmsNorm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Keys and values of the positions seen so far, `(1, kv_heads, positions, head_dim)`.
    cache: Option<(Tensor, Tensor)>,
}

/// The shape the file's metadata states.
struct Shape {
    heads: usize,
    kv_heads: usize,
    blocks: usize,
    width: usize,
    rope_dims: usize,
    eps: f64,
    freq_base: f32,
}

fn invalid(message: String) -> candle_core::Error {
    candle_core::Error::Msg(message)
}

impl Shape {
    fn of(content: &gguf_file::Content) -> candle_core::Result<Self> {
        let get = |key: &str| {
            content.metadata.get(key).ok_or_else(|| invalid(format!("no {key} in its metadata")))
        };
        let count = |key: &str| get(key).and_then(|v| v.to_u32()).map(|n| n as usize);
        if content.metadata.get("llama.expert_count").and_then(|v| v.to_u32().ok()).unwrap_or(0) > 0
        {
            return Err(invalid("a mixture of experts; only dense llama models run".into()));
        }
        let shape = Self {
            heads: count("llama.attention.head_count")?,
            kv_heads: count("llama.attention.head_count_kv")?,
            blocks: count("llama.block_count")?,
            width: count("llama.embedding_length")?,
            rope_dims: count("llama.rope.dimension_count")?,
            eps: f64::from(get("llama.attention.layer_norm_rms_epsilon")?.to_f32()?),
            freq_base: content
                .metadata
                .get("llama.rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.0),
        };
        let fits = shape.heads > 0
            && shape.kv_heads > 0
            && shape.heads.is_multiple_of(shape.kv_heads)
            && shape.width.is_multiple_of(shape.heads)
            && shape.rope_dims == shape.width / shape.heads
            && shape.rope_dims.is_multiple_of(2);
        if !fits {
            return Err(invalid(format!(
                "{} heads ({} for keys and values) of {} rotary dimensions do not divide a width of {}",
                shape.heads, shape.kv_heads, shape.rope_dims, shape.width
            )));
        }
        Ok(shape)
    }
}

impl Llama {
    /// Reads the weights the file's metadata describes from `reader`.
    pub(crate) fn load<R: Read + Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
    ) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        let shape = Shape::of(content)?;
        let mut tensor = |name: &str| -> candle_core::Result<QTensor> {
            let tensor = content.tensor(reader, name, &device)?;
            if tensor.dtype() == GgmlDType::Q4_1 {
                QTensor::quantize(&tensor.dequantize(&device)?, GgmlDType::Q8_0)
            } else {
                Ok(tensor)
            }
        };
        let norm = |tensor: QTensor| -> candle_core::Result<RmsNorm> {
            Ok(RmsNorm::new(tensor.dequantize(&device)?, shape.eps))
        };
        let embedded = tensor("token_embd.weight")?;
        // Models that tie their output to their embeddings have no `output.weight`.
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => tensor("output.weight")?,
            false => tensor("token_embd.weight")?,
        };
        let embeddings = Embedding::new(embedded.dequantize(&device)?, shape.width);
        let head_dim = shape.width / shape.heads;
        let mut blocks = Vec::with_capacity(shape.blocks);
        for index in 0..shape.blocks {
            let mut part = |name: &str| tensor(&format!("blk.{index}.{name}.weight"));
            blocks.push(Block {
                attention_norm: norm(part("attn_norm")?)?,
                query: QMatMul::from_qtensor(part("attn_q")?)?,
                key: QMatMul::from_qtensor(part("attn_k")?)?,
                value: QMatMul::from_qtensor(part("attn_v")?)?,
                out: QMatMul::from_qtensor(part("attn_output")?)?,
                ffn_norm: norm(part("ffn_norm")?)?,
                gate: QMatMul::from_qtensor(part("ffn_gate")?)?,
                up: QMatMul::from_qtensor(part("ffn_up")?)?,
                down: QMatMul::from_qtensor(part("ffn_down")?)?,
                heads: shape.heads,
                kv_heads: shape.kv_heads,
                head_dim,
                cache: None,
            });
        }
        let (cos, sin) = rotary_tables(head_dim, shape.freq_base, &device)?;
        Ok(Self {
            embeddings,
            blocks,
            norm: norm(tensor("output_norm.weight")?)?,
            output: QMatMul::from_qtensor(output)?,
            cos,
            sin,
        })
    }

    /// The logits of the token after `tokens` (shape `(1, n)`), which follow the first
    /// `position` tokens this copy has seen (what it saw after them is forgotten):
    /// `(1, vocabulary)`.
    pub(crate) fn forward(
        &mut self,
        tokens: &Tensor,
        position: usize,
    ) -> candle_core::Result<Tensor> {
        let (_, length) = tokens.dims2()?;
        if position + length > MAX_CONTEXT {
            return Err(invalid(format!(
                "{} positions are past the {MAX_CONTEXT} the model runs with",
                position + length
            )));
        }
        let cos = self.cos.narrow(0, position, length)?;
        let sin = self.sin.narrow(0, position, length)?;
        let mask = (length > 1).then(|| causal_mask(length, position)).transpose()?;
        let mut hidden = self.embeddings.forward(tokens)?;
        for block in &mut self.blocks {
            hidden = block.forward(&hidden, position, (&cos, &sin), mask.as_ref())?;
        }
        let last = self.norm.forward(&hidden)?.i((.., length - 1, ..))?;
        self.output.forward(&last)
    }
}

impl Block {
    fn forward(
        &mut self,
        input: &Tensor,
        position: usize,
        rotary: (&Tensor, &Tensor),
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let normed = self.attention_norm.forward(input)?;
        let attended = self.attend(&normed, position, rotary, mask)?;
        let hidden = (attended + input)?;
        let normed = self.ffn_norm.forward(&hidden)?;
        let gated =
            (candle_nn::ops::silu(&self.gate.forward(&normed)?)? * self.up.forward(&normed)?)?;
        self.down.forward(&gated)? + hidden
    }

    fn attend(
        &mut self,
        input: &Tensor,
        position: usize,
        (cos, sin): (&Tensor, &Tensor),
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (batch, length, width) = input.dims3()?;
        let split = |projected: Tensor, heads: usize| {
            projected.reshape((batch, length, heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let query = split(self.query.forward(input)?, self.heads)?;
        let key = split(self.key.forward(input)?, self.kv_heads)?;
        let value = split(self.value.forward(input)?, self.kv_heads)?;
        let query = candle_nn::rotary_emb::rope_i(&query, cos, sin)?;
        let key = candle_nn::rotary_emb::rope_i(&key, cos, sin)?;
        let (key, value) = match (self.cache.take(), position) {
            // At position 0 a new answer begins: the last one's cache is dropped.
            (_, 0) => (key, value),
            // Past it, the cache holds at least the `position` tokens before (an answer whose
            // prompt begins as the last one's did keeps that much of it).
            (Some((keys, values)), _) if keys.dim(2)? >= position => {
                let (keys, values) = (keys.narrow(2, 0, position)?, values.narrow(2, 0, position)?);
                (Tensor::cat(&[&keys, &key], 2)?, Tensor::cat(&[&values, &value], 2)?)
            }
            (cache, _) => {
                let cached = cache.map_or(Ok(0), |(keys, _)| keys.dim(2))?;
                return Err(invalid(format!("position {position} follows {cached} cached tokens")));
            }
        };
        self.cache = Some((key.clone(), value.clone()));
        let group = self.heads / self.kv_heads;
        let (key, value) = (shared_heads(key, group)?, shared_heads(value, group)?);
        let scores = (query.matmul(&key.t()?)? / (self.head_dim as f64).sqrt())?;
        let scores = match mask {
            Some(mask) => {
                let hidden = Tensor::new(f32::NEG_INFINITY, scores.device())?
                    .broadcast_as(scores.shape())?;
                mask.broadcast_as(scores.shape())?.where_cond(&hidden, &scores)?
            }
            None => scores,
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = weights.matmul(&value.contiguous()?)?;
        let attended = attended.transpose(1, 2)?.reshape((batch, length, width))?;
        self.out.forward(&attended)
    }
}

/// Keys or values of `kv_heads` heads, each repeated for the `group` query heads that share it:
/// `(b, kv_heads, n, d)` to `(b, kv_heads * group, n, d)`.
fn shared_heads(x: Tensor, group: usize) -> candle_core::Result<Tensor> {
    if group == 1 {
        return Ok(x);
    }
    let (batch, kv_heads, length, dims) = x.dims4()?;
    Tensor::cat(&vec![&x; group], 2)?.reshape((batch, kv_heads * group, length, dims))
}

/// 1 where a query (row, at `position + row`) must not see a key (column): the keys after it.
fn causal_mask(length: usize, position: usize) -> candle_core::Result<Tensor> {
    let keys = position + length;
    let hidden: Vec<u8> = (0..length)
        .flat_map(|row| (0..keys).map(move |key| u8::from(key > position + row)))
        .collect();
    Tensor::from_slice(&hidden, (length, keys), &Device::Cpu)
}

/// The rotary positions' cosines and sines, `(MAX_CONTEXT, head_dim / 2)`.
fn rotary_tables(
    head_dim: usize,
    freq_base: f32,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inverse: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / freq_base.powf(i as f32 / head_dim as f32))
        .collect();
    let inverse = Tensor::from_vec(inverse, (1, head_dim / 2), device)?;
    let positions = Tensor::arange(0u32, MAX_CONTEXT as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((MAX_CONTEXT, 1))?;
    let angles = positions.matmul(&inverse)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Picks the next token from `logits`: the likeliest without a temperature; with one, a draw
/// from the smallest set of tokens whose probabilities add up to `top_p`.
pub(crate) struct Sampler {
    temperature: Option<f64>,
    top_p: f64,
    draws: clade_core::Jitter,
}

impl Sampler {
    pub(crate) fn new(seed: u64, temperature: Option<f64>, top_p: f64) -> Self {
        let temperature = temperature.filter(|t| *t > 0.0);
        Self { temperature, top_p, draws: clade_core::Jitter::seeded(seed) }
    }

    pub(crate) fn sample(&mut self, logits: &Tensor) -> candle_core::Result<u32> {
        let logits = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let Some(temperature) = self.temperature else {
            return Ok(likeliest(&logits));
        };
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut weighted: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, ((f64::from(*l) - f64::from(top)) / temperature).exp()))
            .collect();
        let total: f64 = weighted.iter().map(|(_, w)| w).sum();
        weighted.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (mut kept, mut mass) = (0, 0.0);
        for (_, weight) in &weighted {
            kept += 1;
            mass += weight / total;
            if mass >= self.top_p {
                break;
            }
        }
        weighted.truncate(kept.max(1));
        let kept_total: f64 = weighted.iter().map(|(_, w)| w).sum();
        let unit = (self.draws.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut left = unit * kept_total;
        for (token, weight) in &weighted {
            if left < *weight {
                return Ok(*token);
            }
            left -= weight;
        }
        Ok(weighted.last().map_or_else(|| likeliest(&logits), |(token, _)| *token))
    }
}

fn likeliest(logits: &[f32]) -> u32 {
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny test model's file, open past its header, and the header read.
    fn tiny() -> (tempfile::TempDir, std::fs::File, gguf_file::Content) {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("tiny.gguf");
        crate::local_chat::write_test_model(&file).unwrap();
        let mut reader = std::fs::File::open(&file).unwrap();
        let content = gguf_file::Content::read(&mut reader).unwrap();
        (tmp, reader, content)
    }

    /// The same file through candle-transformers' `quantized_llama` gives the same logits,
    /// over a prompt and then token by token from its cache.
    #[test]
    fn logits_match_candle_transformers_quantized_llama() {
        let (_tmp, mut reader, content) = tiny();
        let mut ours = Llama::load(&content, &mut reader).unwrap();
        // Theirs reads the requantized weights ours holds: written back into a file of Q8_0.
        let mut tensors = Vec::new();
        for name in content.tensor_infos.keys() {
            let tensor = content.tensor(&mut reader, name, &Device::Cpu).unwrap();
            let tensor = if tensor.dtype() == GgmlDType::Q4_1 {
                QTensor::quantize(&tensor.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q8_0)
                    .unwrap()
            } else {
                tensor
            };
            tensors.push((name.clone(), tensor));
        }
        let metadata: Vec<(&str, &gguf_file::Value)> =
            content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut buffer = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buffer, &metadata, &refs).unwrap();
        buffer.set_position(0);
        let requantized = gguf_file::Content::read(&mut buffer).unwrap();
        let mut theirs = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
            requantized,
            &mut buffer,
            &Device::Cpu,
        )
        .unwrap();
        let worst = |a: Tensor, b: Tensor| {
            let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
            diff.max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        let prompt = Tensor::new(&[[3u32, 40, 41, 42, 7, 9, 100]], &Device::Cpu).unwrap();
        let a = ours.forward(&prompt, 0).unwrap();
        let b = theirs.forward(&prompt, 0).unwrap();
        assert_eq!(a.dims(), b.dims());
        assert!(worst(a, b) < 1e-4);
        for (step, token) in [5u32, 60, 61].into_iter().enumerate() {
            let next = Tensor::new(&[[token]], &Device::Cpu).unwrap();
            let a = ours.forward(&next, 7 + step).unwrap();
            let b = theirs.forward(&next, 7 + step).unwrap();
            let w = worst(a, b);
            assert!(w < 1e-4, "step {step}: largest difference {w}");
        }
    }

    #[test]
    fn a_position_past_the_context_is_an_error_not_a_panic() {
        let (_tmp, mut reader, content) = tiny();
        let mut model = Llama::load(&content, &mut reader).unwrap();
        let token = Tensor::new(&[[3u32]], &Device::Cpu).unwrap();
        let err = model.forward(&token, MAX_CONTEXT).err().unwrap().to_string();
        assert!(err.contains("past the 4096"), "{err}");
    }

    /// A prompt read from where it parts from the last one (the cache cut back to the part
    /// they share) gives the logits of the whole prompt read afresh; a position past what the
    /// cache holds is an error.
    #[test]
    fn a_cache_cut_back_to_a_shared_beginning_reads_on_as_a_fresh_copy() {
        let (_tmp, mut reader, content) = tiny();
        let fresh = Llama::load(&content, &mut reader).unwrap();
        let mut reused = fresh.clone();
        let tokens = |ids: &[u32]| Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        reused.forward(&tokens(&[3, 40, 41, 42, 7, 9, 100, 5, 60]), 0).unwrap();
        reused.forward(&tokens(&[61]), 9).unwrap();
        // The next prompt shares the first five tokens.
        let next = [3, 40, 41, 42, 7, 11, 12, 13];
        let a = reused.forward(&tokens(&next[5..]), 5).unwrap();
        let b = fresh.clone().forward(&tokens(&next), 0).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        let worst = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(worst < 1e-4, "largest difference {worst}");
        let err = reused.forward(&tokens(&[1]), 30).err().unwrap().to_string();
        assert!(err.contains("position 30 follows 8 cached tokens"), "{err}");
        let err = fresh.clone().forward(&tokens(&[1]), 2).err().unwrap().to_string();
        assert!(err.contains("position 2 follows 0 cached tokens"), "{err}");
    }

    /// Metadata that cannot describe a dense llama is an error naming what is wrong, not a
    /// panic in the middle of an answer.
    #[test]
    fn shapes_it_cannot_run_are_named() {
        let (_tmp, mut reader, mut content) = tiny();
        // The load's error with `key` set to `value` (or removed), the file's own value put back.
        let mut refused = |key: &str, value: Option<gguf_file::Value>| {
            let own = match value {
                Some(value) => content.metadata.insert(key.to_owned(), value),
                None => content.metadata.remove(key),
            };
            let err = Llama::load(&content, &mut reader).err().unwrap().to_string();
            match own {
                Some(own) => content.metadata.insert(key.to_owned(), own),
                None => content.metadata.remove(key),
            };
            err
        };
        use gguf_file::Value::U32;
        let err = refused("llama.attention.head_count", Some(U32(3)));
        assert!(err.contains("3 heads") && err.contains("width of 64"), "{err}");
        let err = refused("llama.attention.head_count_kv", Some(U32(0)));
        assert!(err.contains("(0 for keys and values)"), "{err}");
        let err = refused("llama.expert_count", Some(U32(8)));
        assert!(err.contains("mixture of experts"), "{err}");
        let err = refused("llama.block_count", None);
        assert!(err.contains("no llama.block_count"), "{err}");
    }

    #[test]
    fn sampling_is_greedy_without_a_temperature_and_stays_in_the_top_p() {
        let logits = Tensor::new(&[0.0f32, 5.0, 1.0, 4.9, -3.0], &Device::Cpu).unwrap();
        assert_eq!(Sampler::new(1, None, 0.9).sample(&logits).unwrap(), 1);
        assert_eq!(Sampler::new(1, Some(0.0), 0.9).sample(&logits).unwrap(), 1);
        let mut sampler = Sampler::new(7, Some(1.0), 0.9);
        let drawn: std::collections::BTreeSet<u32> =
            (0..200).map(|_| sampler.sample(&logits).unwrap()).collect();
        // Tokens 1 and 3 hold 0.99 of the mass, 1 alone 0.52: the rest are never drawn.
        assert_eq!(drawn, [1, 3].into());
        // The same seed draws the same tokens.
        let draw = |seed| {
            let mut s = Sampler::new(seed, Some(1.0), 0.9);
            (0..20).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
    }
}
