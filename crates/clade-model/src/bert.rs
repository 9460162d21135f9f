//! The BERT encoder behind local sentence embeddings. It is our own rather than
//! candle-transformers' so that its weights are laid out once, at load, for the products it
//! runs: each weight transposed to the layout the matrix product reads row by row, and the
//! three attention projections joined into one. candle-transformers' encoder transposes every
//! weight for every product (gemm then packs it element by element) and takes a scalar `erf`
//! for every GELU; the two were most of a short sentence's time.

use candle_core::{CpuStorage, DType, Layout, Module as _, Shape, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

/// What the encoder reads of a model's `config.json` (Hugging Face's BERT configuration).
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Config {
    pub(crate) vocab_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub(crate) hidden_act: String,
    pub(crate) max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub(crate) type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub(crate) layer_norm_eps: f64,
    #[serde(default = "default_position_embedding_type")]
    pub(crate) position_embedding_type: String,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// A configuration this encoder cannot run, said so a model's maker can tell what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unsupported {
    #[error("hidden_act `{0}` is not supported (BERT's exact `gelu` is)")]
    Activation(String),
    #[error("position_embedding_type `{0}` is not supported (`absolute` is)")]
    PositionEmbedding(String),
    #[error("{0} is 0")]
    Empty(&'static str),
    #[error("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")]
    Heads { hidden: usize, heads: usize },
}

impl Config {
    /// What this encoder cannot run.
    pub(crate) fn check(&self) -> Result<(), Unsupported> {
        if self.hidden_act != "gelu" {
            return Err(Unsupported::Activation(self.hidden_act.clone()));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Unsupported::PositionEmbedding(self.position_embedding_type.clone()));
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return Err(Unsupported::Empty(name));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Unsupported::Heads {
                hidden: self.hidden_size,
                heads: self.num_attention_heads,
            });
        }
        Ok(())
    }
}

/// A linear layer whose weight is kept transposed (`[inputs, outputs]`, contiguous).
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Self> {
        Self::joined(std::slice::from_ref(vb), inputs, outputs)
    }

    /// Several layers over the same input as one, their outputs side by side.
    fn joined(parts: &[VarBuilder], inputs: usize, outputs: usize) -> candle_core::Result<Self> {
        let weights = parts
            .iter()
            .map(|vb| vb.get((outputs, inputs), "weight"))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let biases = parts
            .iter()
            .map(|vb| vb.get(outputs, "bias"))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let weight = Tensor::cat(&weights, 0)?.t()?.contiguous()?;
        Ok(Self { weight, bias: Tensor::cat(&biases, 0)? })
    }

    /// `x`: `[rows, inputs]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight)?.apply_op2_no_bwd(&self.bias, &AddBias { gelu: false })
    }

    /// GELU of the layer's output.
    fn forward_gelu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight)?.apply_op2_no_bwd(&self.bias, &AddBias { gelu: true })
    }

    /// The layer's output plus `residual`.
    fn forward_plus(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight)?.apply_op3_no_bwd(&self.bias, residual, &AddBiasAndResidual)
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    out: Dense,
    out_norm: LayerNorm,
}

/// A BERT encoder: token ids in, one vector per token out.
pub(crate) struct Encoder {
    words: Embedding,
    positions: Embedding,
    /// The embedding of token type 0, the only type a single sentence has.
    first_type: Tensor,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    max_positions: usize,
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb.pp("LayerNorm"))
}

impl Encoder {
    /// The encoder whose weights `vb` holds, under Hugging Face's names (with or without the
    /// `bert.` prefix of a checkpoint saved with its task head).
    pub(crate) fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<Self> {
        config.check().map_err(candle_core::Error::wrap)?;
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let (hidden, eps) = (config.hidden_size, config.layer_norm_eps);
        let embeddings = vb.pp("embeddings");
        let words =
            candle_nn::embedding(config.vocab_size, hidden, embeddings.pp("word_embeddings"))?;
        let positions = candle_nn::embedding(
            config.max_position_embeddings,
            hidden,
            embeddings.pp("position_embeddings"),
        )?;
        let types = candle_nn::embedding(
            config.type_vocab_size,
            hidden,
            embeddings.pp("token_type_embeddings"),
        )?;
        let first_type = types.embeddings().get(0)?;
        let norm = layer_norm(embeddings, hidden, eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|n| {
                let vb = vb.pp(format!("encoder.layer.{n}"));
                let own = vb.pp("attention.self");
                let parts = ["query", "key", "value"].map(|p| own.pp(p));
                Ok(Layer {
                    qkv: Dense::joined(&parts, hidden, hidden)?,
                    attention_out: Dense::load(&vb.pp("attention.output.dense"), hidden, hidden)?,
                    attention_norm: layer_norm(vb.pp("attention.output"), hidden, eps)?,
                    intermediate: Dense::load(
                        &vb.pp("intermediate.dense"),
                        hidden,
                        config.intermediate_size,
                    )?,
                    out: Dense::load(&vb.pp("output.dense"), config.intermediate_size, hidden)?,
                    out_norm: layer_norm(vb.pp("output"), hidden, eps)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            words,
            positions,
            first_type,
            norm,
            layers,
            heads: config.num_attention_heads,
            hidden,
            max_positions: config.max_position_embeddings,
        })
    }

    /// `ids` and `mask` (1 for a token, 0 for padding): `[batch, tokens]`, u32. The hidden
    /// state of every token: `[batch, tokens, hidden]`.
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens) = ids.dims2()?;
        if tokens > self.max_positions {
            return Err(candle_core::Error::Msg(format!(
                "{tokens} tokens, more than the model's {} positions",
                self.max_positions
            )));
        }
        let (hidden, heads) = (self.hidden, self.heads);
        let head = hidden / heads;
        let positions = Tensor::arange(0u32, tokens as u32, ids.device())?;
        let x = self
            .words
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?
            .broadcast_add(&self.first_type)?;
        let mut x = self.norm.forward(&x)?.reshape((batch * tokens, hidden))?;
        // Padding gets a weight that softmax makes zero: 0 for a token, -1e9 for padding.
        let padding = mask.to_dtype(DType::F32)?.affine(1e9, -1e9)?;
        let scale = 1.0 / (head as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?.reshape((batch, tokens, 3, heads, head))?;
            // Each `[batch, heads, tokens, head]`.
            let part = |n: usize| qkv.narrow(2, n, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
            let (q, k, v) = (part(0)?.affine(scale, 0.0)?, part(1)?, part(2)?);
            let weights = q.matmul(&k.t()?)?.apply_op2_no_bwd(&padding, &AddPadding)?;
            let weights = candle_nn::ops::softmax_last_dim(&weights)?;
            let context = weights
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * tokens, hidden))?;
            let attended =
                layer.attention_norm.forward(&layer.attention_out.forward_plus(&context, &x)?)?;
            let inner = layer.intermediate.forward_gelu(&attended)?;
            x = layer.out_norm.forward(&layer.out.forward_plus(&inner, &attended)?)?;
        }
        x.reshape((batch, tokens, hidden))
    }
}

// The element-wise steps are ops of our own: candle's spread a large tensor over a barrier
// pool of its own whose threads spin between ops, on cores the matrix products need (a fifth
// of a pass's time on two cores).

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(values), Some((start, end))) => values
            .get(start..end)
            .ok_or_else(|| candle_core::Error::Msg("a tensor outside its storage".into())),
        _ => Err(candle_core::Error::Msg("an encoder step takes contiguous f32 tensors".into())),
    }
}

fn mismatch(what: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: the tensors' shapes do not fit"))
}

/// `x + bias` on every row, then BERT's exact GELU if asked.
struct AddBias {
    gelu: bool,
}

impl candle_core::CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, bias) = (contiguous(x, x_layout)?, contiguous(bias, bias_layout)?);
        let out = add_bias(self.name(), x, bias, None, self.gelu)?;
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// `x + bias` on every row, plus `residual` if given, then GELU if asked: the one loop both
/// bias ops run.
fn add_bias(
    name: &str,
    x: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    gelu: bool,
) -> candle_core::Result<Vec<f32>> {
    if bias.is_empty()
        || !x.len().is_multiple_of(bias.len())
        || residual.is_some_and(|r| r.len() != x.len())
    {
        return Err(mismatch(name));
    }
    let mut out = vec![0f32; x.len()];
    by_rows(&mut out, bias.len(), |row, out| {
        let at = row * bias.len();
        let x = &x[at..][..out.len()];
        for (out, (x, b)) in out.iter_mut().zip(x.iter().zip(bias.iter().cycle())) {
            *out = x + b;
        }
        if let Some(residual) = residual {
            let residual = &residual[at..][..out.len()];
            for (out, r) in out.iter_mut().zip(residual) {
                *out += r;
            }
        }
        if gelu {
            gelu_in_place(out);
        }
    });
    Ok(out)
}

/// `x + bias` on every row, plus `residual`.
struct AddBiasAndResidual;

impl candle_core::CustomOp3 for AddBiasAndResidual {
    fn name(&self) -> &'static str {
        "add-bias-and-residual"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, bias) = (contiguous(x, x_layout)?, contiguous(bias, bias_layout)?);
        let residual = contiguous(residual, residual_layout)?;
        let out = add_bias(self.name(), x, bias, Some(residual), false)?;
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// Attention weights `[batch, heads, queries, keys]` plus each sentence's padding `[batch, keys]`.
struct AddPadding;

impl candle_core::CustomOp2 for AddPadding {
    fn name(&self) -> &'static str {
        "add-padding"
    }

    fn cpu_fwd(
        &self,
        weights: &CpuStorage,
        weights_layout: &Layout,
        padding: &CpuStorage,
        padding_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (weights, padding) =
            (contiguous(weights, weights_layout)?, contiguous(padding, padding_layout)?);
        let (batch, _, _, keys) = weights_layout.shape().dims4()?;
        if padding.len() != batch * keys || weights.is_empty() {
            return Err(mismatch("add-padding"));
        }
        let rows_a_sentence = weights.len() / keys / batch;
        let mut out = vec![0f32; weights.len()];
        by_rows(&mut out, keys, |first, out| {
            for (n, out) in out.chunks_mut(keys).enumerate() {
                let row = first + n;
                let padding = &padding[row / rows_a_sentence * keys..][..keys];
                let weights = &weights[row * keys..][..keys];
                for (out, (w, p)) in out.iter_mut().zip(weights.iter().zip(padding)) {
                    *out = w + p;
                }
            }
        });
        Ok((CpuStorage::F32(out), weights_layout.shape().clone()))
    }
}

/// Below this many values a thread of its own costs more than it saves.
const PIECE: usize = 1 << 16;

/// Runs `step(first row, rows)` over `out` (rows of `row` values), split between the cores
/// on rayon's pool (gemm's own, so nothing is spawned per step) when it is large.
fn by_rows(out: &mut [f32], row: usize, step: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    let pieces = rayon::current_num_threads().min(out.len() / PIECE).max(1);
    let rows = out.len() / row.max(1);
    if pieces == 1 || rows < pieces {
        step(0, out);
        return;
    }
    let rows_a_piece = rows.div_ceil(pieces);
    out.par_chunks_mut(rows_a_piece * row)
        .enumerate()
        .for_each(|(n, piece)| step(n * rows_a_piece, piece));
}

/// BERT's exact GELU, `x·Φ(x)`, with `erf` as a rational function the compiler vectorizes
/// (within 1e-6 of the exact one; see the test).
fn gelu_in_place(values: &mut [f32]) {
    for x in values {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf` as an odd rational function on [-4, 4], where it reaches ±1 to within f32's precision
/// (a minimax fit, as Eigen and XLA use for float `erf`).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for a in [2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_6e-3] {
        p = p * x2 + a;
    }
    p = (p * x2 - 1.609_603_3e-2) * x;
    let mut q = -1.456_607_2e-5_f32;
    for b in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + b;
    }
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64: exact enough on [-4, 4] to judge an f32 approximation.
    fn erf_series(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_a_millionth_of_the_exact_one() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = f64::from(i) / 1000.0;
            let exact = if x.abs() > 4.5 { x.signum() } else { erf_series(x) };
            worst = worst.max((f64::from(erf(x as f32)) - exact).abs());
        }
        assert!(worst < 1e-6, "worst error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan());
    }

    /// The same weights through candle-transformers' BERT give the same hidden states, padding
    /// and all (what [`Encoder`] replaces; sentence-transformers' MiniLM is run the same way).
    #[test]
    fn hidden_states_match_candle_transformers_bert() {
        let tmp = tempfile::tempdir().unwrap();
        crate::local_embeddings::write_test_model(tmp.path(), 32).unwrap();
        let config_json = std::fs::read(tmp.path().join("config.json")).unwrap();
        let weights = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
        let device = candle_core::Device::Cpu;
        let vb = || VarBuilder::from_buffered_safetensors(weights.clone(), DType::F32, &device);
        let ours =
            Encoder::load(vb().unwrap(), &serde_json::from_slice(&config_json).unwrap()).unwrap();
        let theirs = candle_transformers::models::bert::BertModel::load(
            vb().unwrap(),
            &serde_json::from_slice(&config_json).unwrap(),
        )
        .unwrap();
        let ids = Tensor::new(&[[2u32, 40, 41, 42, 43, 3], [2, 44, 3, 0, 0, 0]], &device).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], &device).unwrap();
        let a = ours.forward(&ids, &mask).unwrap();
        let b = theirs.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
        assert_eq!(a.dims(), b.dims());
        // Padded positions' states are never read (pooling leaves them out).
        let real = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let diff = (a - b).unwrap().broadcast_mul(&real).unwrap().abs().unwrap();
        let worst = diff.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(worst < 1e-4, "largest difference {worst}");
    }

    #[test]
    fn a_configuration_it_cannot_run_is_named() {
        let config = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut json = serde_json::json!({
                "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 8,
            });
            edit(&mut json);
            serde_json::from_value::<Config>(json).unwrap().check().map_err(|e| e.to_string())
        };
        assert!(config(&|_| {}).is_ok());
        let err = config(&|j| j["hidden_act"] = "swish".into()).unwrap_err();
        assert!(err.contains("hidden_act `swish`"), "{err}");
        let err = config(&|j| j["num_attention_heads"] = 3.into()).unwrap_err();
        assert!(err.contains("not a multiple of num_attention_heads 3"), "{err}");
        let err = config(&|j| j["num_hidden_layers"] = 0.into()).unwrap_err();
        assert!(err.contains("num_hidden_layers is 0"), "{err}");
        let err = config(&|j| j["position_embedding_type"] = "relative_key".into()).unwrap_err();
        assert!(err.contains("relative_key"), "{err}");
    }

    #[test]
    fn element_wise_steps_over_threads_are_the_same_as_on_one() {
        let device = candle_core::Device::Cpu;
        let (rows, width) = (PIECE * 3 / 64 + 5, 64);
        let values: Vec<f32> = (0..rows * width).map(|i| (i % 1000) as f32 / 100.0 - 5.0).collect();
        let x = Tensor::from_vec(values.clone(), (rows, width), &device).unwrap();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 / 10.0).collect();
        let b = Tensor::from_vec(bias.clone(), width, &device).unwrap();
        let expect = |f: &dyn Fn(usize) -> f32| -> Vec<f32> { (0..rows * width).map(f).collect() };
        let got = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plus = expect(&|i| values[i] + bias[i % width]);
        assert_eq!(got(x.apply_op2_no_bwd(&b, &AddBias { gelu: false }).unwrap()), plus);
        let mut gelu = plus.clone();
        gelu_in_place(&mut gelu);
        assert_eq!(got(x.apply_op2_no_bwd(&b, &AddBias { gelu: true }).unwrap()), gelu);
        let twice = expect(&|i| values[i] + bias[i % width] + values[i]);
        assert_eq!(got(x.apply_op3_no_bwd(&b, &x, &AddBiasAndResidual).unwrap()), twice);
        // Padding: two sentences, each of its own keys.
        let even = x.narrow(0, 0, rows / 2 * 2).unwrap();
        let weights = even.reshape((2, 1, rows / 2, width)).unwrap();
        let padding: Vec<f32> = (0..2 * width).map(|i| -(i as f32)).collect();
        let p = Tensor::from_vec(padding.clone(), (2, width), &device).unwrap();
        let half = rows / 2 * width;
        let padded: Vec<f32> =
            (0..2 * half).map(|i| values[i] + padding[(i / half) * width + i % width]).collect();
        assert_eq!(got(weights.apply_op2_no_bwd(&p, &AddPadding).unwrap()), padded);
        // Shapes that do not fit are an error, not a panic.
        let short = Tensor::zeros(width + 1, DType::F32, &device).unwrap();
        assert!(x.apply_op2_no_bwd(&short, &AddBias { gelu: false }).is_err());
        // gelu(1) = Φ(1) = 0.8413447…
        let mut one = [1f32];
        gelu_in_place(&mut one);
        assert!((one[0] - 0.841_344_7).abs() < 1e-6, "{}", one[0]);
    }
}
