//! Llama, Qwen2, Qwen3, their mixtures of experts (Mixtral-style Llama, Qwen3-MoE), Phi-3,
//! GLM-4, Phi-2 and LFM2 on candle's quantized ops: the project's own model for such `gguf:`
//! files (`gguf:<file>?impl=modelbench`; the default for Qwen2, Qwen3-MoE and Llama 3.x files
//! with `rope_freqs.weight`), written for continuous batching (`modelbench serve --max-batch`):
//! every sequence keeps a cache of its own ([`SeqCache`]), and [`Batched::forward`] runs any
//! number of sequences, each at its own positions, in one step. candle-transformers 0.11.1's
//! `quantized_llama` / `quantized_qwen3` (the default implementation of those families for the
//! benchmarks) keep one cache inside the model.
//!
//! What it computes, with llama.cpp's GGUF conventions (the same tensor names and metadata
//! keys that candle-transformers reads):
//! - pre-norm decoder blocks: `h += wo(attn(rms_norm(h)))`, `h += down(silu(gate(x)) * up(x))`
//!   with `x = rms_norm(h)`; `output_norm`, then `output.weight`, or the tied
//!   `token_embd.weight` when it is absent;
//! - grouped-query attention (`attention.head_count_kv`), scaled by `1/sqrt(head_dim)`, causal;
//!   `head_dim` is `attention.key_length`, or `embedding_length / head_count` without it;
//! - RoPE with base `rope.freq_base` (default 10000) over `rope.dimension_count` dimensions
//!   (the whole head, or its first dimensions for GLM-4 and Phi-2, the rest passed through):
//!   Llama and GLM-4 in llama.cpp's `LLAMA_ROPE_TYPE_NORM` layout (pairs `2i, 2i+1`;
//!   llama.cpp's converter permutes Llama's `attn_q` / `attn_k` rows so that this layout
//!   computes what HF's half-rotation computes on the original weights), the others in the
//!   NeoX layout (pairs `i, i + d/2`; no permutation in their files);
//! - Qwen3, Qwen3-MoE and LFM2: RmsNorm of each head of q and k (`attn_q_norm`,
//!   `attn_k_norm`) before RoPE;
//! - q/k/v biases: Qwen2 (required), GLM-4 (where the file has them), Phi-2 (biases on every
//!   projection, the output's too); the other families' files with one are refused, not run
//!   without;
//! - Phi-3, GLM-4 and Phi-2 files' fused weights (`attn_qkv`: rows Q, K, V; Phi-3's and
//!   GLM-4's `ffn_up`: gate rows, then up) read as their parts;
//! - GLM-4: RmsNorms after attention and after the MLP (`post_attention_norm`,
//!   `post_ffw_norm`) before each residual add;
//! - Phi-2: LayerNorms with biases (`attention.layer_norm_epsilon`), attention and a GELU MLP
//!   (`down(gelu(up(x)))`, tanh approximation) in parallel from one norm,
//!   `h += attn(x) + mlp(x)`;
//! - LFM2: blocks that are either attention or a gated short convolution (per-block
//!   `attention.head_count_kv`, 0 for a convolution): `in_proj` gives B, C and x, the
//!   convolution (`shortconv.l_cache` taps per channel, causal, over each sequence's own
//!   previous inputs) runs over `B * x`, and `out_proj` reads `C * conv`; the final norm is
//!   `token_embd_norm`;
//! - a mixture of experts in place of the SwiGLU where the file has one (`expert_count`:
//!   Mixtral-style `llama`, and `qwen3moe`, Qwen3's attention with experts): the router's
//!   softmax, the top `expert_used_count` experts of each token weighted by their
//!   probabilities renormalised to sum to one, each expert a SwiGLU of its own
//!   (`ffn_{gate,up,down}_exps`, read expert by expert), as llama.cpp's `build_moe_ffn`
//!   computes these two families.
//!
//! Llama 3.x's `rope_freqs.weight` divides each pair's frequency by its factor, and linear
//! `rope.scaling` scales positions, as llama.cpp does. Refused rather than run wrong: other
//! RoPE scaling types, partial rotary dimensions outside GLM-4 and Phi-2, experts without a
//! gate tensor, Qwen2-MoE. Positions past the built context are an error, not a panic.
//!
//! The project's `gguf:fixture:llama` writes `attn_q` / `attn_k` without llama.cpp's
//! permutation (seeded weights, no HF model to match), so tests compare this model with
//! candle-transformers' on the same file (tests/llama_batching.rs), not with the safetensors
//! fixture. Shared with the project's Gemma 3: the quantized row-wise embedding and the mask
//! builder. Each sequence's cache is candle's `KvCache`, preallocated for the built context on
//! its first token (as Gemma 3's global layers), or for a convolution block its last inputs.

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_transformers::quantized_nn::RmsNorm;

mod wrong;
pub use wrong::Wrong;

use super::gemma3_quantized::{attention_mask, Embedding, Proj};
use super::quantized_parts::{
    forward_start, last_logits, norm, note_append, open_gguf, residual, step_input, RopeTables,
    SingleSeq, Span, PROJECTION_NAMES,
};
// An op-scoped injected slowdown (`MODELBENCH_INJECT_SLOWDOWN=op:KIND:..`, issue 31) wraps
// each op of its kind; unset, one relaxed atomic load per op.
use crate::measure::inject::around_op as op;
use modelbench_measure::traced;

/// Which of the families a file is (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Llama,
    /// Llama's block with q/k/v biases and NeoX RoPE (`qwen2`).
    Qwen2,
    Qwen3,
    /// Qwen3's attention with every block's MLP a mixture of experts (`qwen3moe`).
    Qwen3Moe,
    /// Llama's block with NeoX RoPE, q/k/v fused in `attn_qkv` and gate/up fused in `ffn_up`
    /// (`phi3`: Phi-3 / Phi-3.5 mini, Phi-4-mini's layout).
    Phi3,
    /// GLM-4-0414 (`glm4`): RmsNorms after attention and MLP too, q/k/v biases, gate/up fused,
    /// interleaved RoPE over the first `rope.dimension_count` dimensions of each head.
    Glm4,
    /// Phi-2 (`phi2`): LayerNorms with biases, attention and a GELU MLP in parallel, biases
    /// on every projection, NeoX RoPE over the first `rope.dimension_count` dimensions.
    Phi2,
    /// LiquidAI LFM2 (`lfm2`): gated short-convolution blocks and attention blocks with q/k
    /// norms, a SwiGLU each.
    Lfm2,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Llama => "llama",
            Kind::Qwen2 => "qwen2",
            Kind::Qwen3 => "qwen3",
            Kind::Qwen3Moe => "qwen3moe",
            Kind::Phi3 => "phi3",
            Kind::Glm4 => "glm4",
            Kind::Phi2 => "phi2",
            Kind::Lfm2 => "lfm2",
        }
    }

    /// Whether RoPE pairs dimensions `2i, 2i+1` (llama.cpp's NORM) rather than `i, i + d/2`.
    fn interleaved_rope(self) -> bool {
        matches!(self, Kind::Llama | Kind::Glm4)
    }

    /// Whether the files of this family may rotate only the first dimensions of each head.
    fn partial_rotary(self) -> bool {
        matches!(self, Kind::Glm4 | Kind::Phi2)
    }

    /// Whether each head of q and k is RmsNormed before RoPE (`attn_q_norm`, `attn_k_norm`).
    fn qk_norm(self) -> bool {
        matches!(self, Kind::Qwen3 | Kind::Qwen3Moe | Kind::Lfm2)
    }
}

/// A mixture-of-experts MLP's routing (`expert_count`, `expert_used_count`): every block's
/// SwiGLU is `expert_count` experts, `used` of them per token, picked by a softmax over the
/// router's logits (`ffn_gate_inp`) and weighted by their probabilities renormalised to sum
/// to one, as llama.cpp computes Mixtral (`llama` with experts) and Qwen3-MoE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Experts {
    pub count: usize,
    pub used: usize,
}

/// LFM2's gated short convolutions: which blocks are one (the others are attention) and
/// how many taps each channel's causal convolution has (`shortconv.l_cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortConv {
    pub taps: usize,
    /// Per block, whether it is a convolution (`attention.head_count_kv` 0 there).
    pub blocks: Vec<bool>,
}

/// The model's shape and settings, from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub kind: Kind,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Dimensions of each head RoPE rotates (`rope.dimension_count`): the whole head, or
    /// the first ones (GLM-4, Phi-2).
    pub rot: usize,
    pub hidden: usize,
    /// The norms' epsilon (`attention.layer_norm_rms_epsilon`; Phi-2's LayerNorms:
    /// `attention.layer_norm_epsilon`).
    pub rms_norm_eps: f64,
    pub rope_base: f32,
    /// Positions are multiplied by this (`rope.scaling.type` linear: 1 / factor; else 1).
    pub rope_freq_scale: f32,
    /// `context_length` of the metadata (0 when absent).
    pub max_context: usize,
    /// The mixture of experts every block's MLP is (None: a dense SwiGLU).
    pub experts: Option<Experts>,
    /// LFM2's convolution blocks (None: every block is attention).
    pub short_conv: Option<ShortConv>,
}

impl Config {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Config> {
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let kind = match arch.as_str() {
            "llama" => Kind::Llama,
            "qwen2" => Kind::Qwen2,
            "qwen3" => Kind::Qwen3,
            "qwen3moe" => Kind::Qwen3Moe,
            "phi3" => Kind::Phi3,
            "glm4" => Kind::Glm4,
            "phi2" => Kind::Phi2,
            "lfm2" => Kind::Lfm2,
            other => {
                bail!("GGUF architecture `{other}` is not llama, qwen2, qwen3, qwen3moe, phi3, glm4, phi2 or lfm2")
            }
        };
        let a = kind.name();
        let get = |s: &str| ct.metadata.get(&format!("{a}.{s}"));
        let need = |s: &str| match get(s) {
            Some(v) => Ok(v),
            None => bail!("cannot find {a}.{s} in metadata"),
        };
        let u = |s: &str| -> Result<usize> { Ok(need(s)?.to_u32()? as usize) };
        let opt_u = |s: &str| get(s).and_then(|v| v.to_u32().ok()).map(|v| v as usize);
        let layers = u("block_count")?;
        let heads = u("attention.head_count")?;
        let hidden = u("embedding_length")?;
        // LFM2 gives `head_count_kv` per block, 0 for a convolution block.
        let (kv_heads, short_conv) = match get("attention.head_count_kv") {
            Some(gguf_file::Value::Array(per_block)) => {
                if kind != Kind::Lfm2 {
                    bail!("{a}.attention.head_count_kv is a per-block array: only lfm2 files have one here");
                }
                let per_block = per_block
                    .iter()
                    .map(|v| super::gguf_tokenizer::as_u32(v).map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
                    .filter(|v| v.len() == layers);
                let Some(per_block) = per_block else {
                    bail!("{a}.attention.head_count_kv must hold {layers} non-negative integers (one per block)");
                };
                let mut kv = per_block.iter().copied().filter(|k| *k > 0);
                let first = kv.next().unwrap_or(heads);
                if let Some(other) = kv.find(|k| *k != first) {
                    bail!("{a}.attention.head_count_kv holds {first} and {other}: attention blocks with different KV head counts are not implemented");
                }
                let blocks: Vec<bool> = per_block.iter().map(|k| *k == 0).collect();
                let conv = if blocks.iter().any(|c| *c) {
                    let taps = u("shortconv.l_cache")?;
                    if taps < 2 {
                        bail!("{a}.shortconv.l_cache is {taps}: a convolution of at least 2 taps is implemented");
                    }
                    Some(ShortConv { taps, blocks })
                } else {
                    None
                };
                (first, conv)
            }
            Some(v) => (v.to_u32()? as usize, None),
            None => (heads, None),
        };
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            bail!("head_count {heads} is not a multiple of head_count_kv {kv_heads}");
        }
        let head_dim = opt_u("attention.key_length").unwrap_or(hidden / heads);
        if let Some(v) = opt_u("attention.value_length").filter(|v| *v != head_dim) {
            bail!("value_length {v} differs from key_length {head_dim}: not supported");
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("head dimension {head_dim} must be even and positive");
        }
        let rot = opt_u("rope.dimension_count").unwrap_or(head_dim);
        if rot != head_dim && !kind.partial_rotary() {
            bail!("rope.dimension_count {rot} is not the head dimension {head_dim} (partial rotary embeddings are implemented for glm4 and phi2 only, as llama.cpp runs them)");
        }
        if rot == 0 || rot % 2 != 0 || rot > head_dim {
            bail!("rope.dimension_count {rot} must be even, positive and at most the head dimension {head_dim}");
        }
        if let Some(t) = ["rope_factors_long.weight", "rope_factors_short.weight"]
            .into_iter()
            .find(|t| ct.tensor_infos.contains_key(*t))
        {
            bail!("the file has `{t}` (LongRoPE, Phi-3 128k / Phi-3.5): not implemented here");
        }
        if get("rope.dimension_sections").is_some() {
            bail!("{a}.rope.dimension_sections (M-RoPE, multimodal models): not implemented here");
        }
        let experts = match opt_u("expert_count").unwrap_or(0) {
            0 if kind != Kind::Qwen3Moe => None,
            count => {
                let used = opt_u("expert_used_count").unwrap_or(0);
                if !matches!(kind, Kind::Llama | Kind::Qwen3Moe) {
                    bail!("{a}.expert_count {count}: mixture-of-experts {a} files are not implemented here");
                }
                if count == 0 || used == 0 || used > count {
                    bail!("{a}.expert_count {count} and expert_used_count {used}: a mixture of experts needs 1 <= used <= count");
                }
                if !ct.tensor_infos.contains_key("blk.0.ffn_gate_exps.weight") {
                    bail!("{a}.expert_count {count} but no blk.0.ffn_gate_exps.weight (experts without a gate, or per-expert tensors): not implemented here");
                }
                Some(Experts { count, used })
            }
        };
        let opt_f = |s: &str| get(s).and_then(|v| v.to_f32().ok());
        let scaling = get("rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let factor = opt_f("rope.scaling.factor").unwrap_or(1.0);
        let rope_freq_scale = match scaling.as_str() {
            _ if factor == 1.0 => 1.0,
            "" | "none" => 1.0,
            "linear" if factor.is_finite() && factor > 0.0 => 1.0 / factor,
            other => bail!(
                "{a}.rope.scaling.type `{other}` (factor {factor}) is not implemented (linear, and Llama 3 frequency factors in rope_freqs.weight, are)"
            ),
        };
        let eps_key = match kind {
            Kind::Phi2 => "attention.layer_norm_epsilon",
            _ => "attention.layer_norm_rms_epsilon",
        };
        let rms_norm_eps = need(eps_key)?.to_f32()? as f64;
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            bail!("{a}.{eps_key} is {rms_norm_eps}: it must be finite and non-negative");
        }
        Ok(Config {
            kind,
            layers,
            heads,
            kv_heads,
            head_dim,
            rot,
            hidden,
            rms_norm_eps,
            rope_base: get("rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.),
            rope_freq_scale,
            max_context: opt_u("context_length").unwrap_or(0),
            experts,
            short_conv,
        })
    }

    /// Whether block `i` is a short convolution (LFM2) rather than attention.
    pub fn is_conv(&self, i: usize) -> bool {
        self.short_conv
            .as_ref()
            .is_some_and(|c| c.blocks.get(i).copied().unwrap_or(false))
    }
}

/// RoPE tables for `positions` positions, applied in the family's layout to the first
/// `rot` dimensions of each head (the rest pass through).
#[derive(Debug, Clone)]
struct Rope {
    tables: RopeTables,
    /// Pairs `2i, 2i+1` (Llama, GLM-4: llama.cpp's NORM) rather than `i, i + d/2` (NeoX).
    interleaved: bool,
    rot: usize,
}

impl Rope {
    /// `factors`: llama.cpp's per-pair frequency divisors (`rope_freqs.weight`, Llama 3.x),
    /// one per rotated pair; `scale` multiplies every frequency (linear scaling: 1 / factor).
    /// Pair `i` of the `rot` rotated dimensions turns at `base^(-2i/rot)`, as ggml's rope
    /// with `n_dims = rot`.
    fn new(
        cfg: &Config,
        factors: Option<&[f32]>,
        positions: usize,
        interleaved: bool,
        dev: &Device,
    ) -> Result<Self> {
        let (rot, base) = (cfg.rot, cfg.rope_base);
        if let Some(f) = factors {
            if f.len() != rot / 2 {
                bail!(
                    "rope_freqs.weight has {} factors, the {rot} rotated dimensions need {}",
                    f.len(),
                    rot / 2
                );
            }
            if let Some(bad) = f.iter().find(|x| !x.is_finite() || **x <= 0.0) {
                bail!("rope_freqs.weight holds {bad}: every factor must be finite and positive");
            }
        }
        let inv: Vec<f32> = (0..rot)
            .step_by(2)
            .map(|i| {
                let ff = factors.map_or(1.0, |f| f[i / 2]);
                cfg.rope_freq_scale / (base.powf(i as f32 / rot as f32) * ff)
            })
            .collect();
        Ok(Self {
            tables: RopeTables::new(&inv, positions, dev)?,
            interleaved,
            rot,
        })
    }

    /// `x`: (b, heads, len, head_dim), contiguous, at positions `pos..pos+len`.
    fn apply(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let hd = x.dim(3)?;
        if self.rot == hd {
            return self.tables.apply(x, pos, self.interleaved);
        }
        let r = x.narrow(3, 0, self.rot)?;
        let r = traced!("copy", "rotated dimensions", [r], r.contiguous())?;
        let r = self.tables.apply(&r, pos, self.interleaved)?;
        let pass = x.narrow(3, self.rot, hd - self.rot)?;
        traced!("copy", "rotated and passed dimensions cat", [r, pass], {
            Tensor::cat(&[r, pass], 3)?.contiguous()
        })
    }
}

/// The index in [`Layer::w`] of a mixture of experts' router: the MLP's first weight, after
/// q, k, v and o; the experts' gate, up and down follow, three per expert ([`expert_proj`]).
const ROUTER: usize = 4;

/// The index in [`Layer::w`] of expert `e`'s gate (`which` 0), up (1) or down (2).
fn expert_proj(e: usize, which: usize) -> usize {
    ROUTER + 1 + 3 * e + which
}

/// A norm as the family has it: RmsNorm, or Phi-2's LayerNorm with a bias.
#[derive(Debug, Clone)]
enum Norm {
    Rms(RmsNorm),
    Layer(candle_nn::LayerNorm),
}

impl Norm {
    /// The norm (the forward calls it `what`) over `x`, a traced op.
    fn forward(&self, what: &'static str, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Rms(n) => norm(what, n, x),
            Norm::Layer(n) => traced!("layer_norm", what, [n, x], n.forward(x)),
        }
    }
}

/// What mixes positions in a block.
#[derive(Debug, Clone)]
enum Mixer {
    /// Attention: weights q, k, v, o at 0..4 of [`Layer::w`], each sequence's keys and values
    /// in its cache, Qwen3's / LFM2's per-head q/k norms where the family has them.
    Attention { qk_norm: Option<(RmsNorm, RmsNorm)> },
    /// LFM2's gated short convolution: `in_proj` (0) gives B, C and x, the convolution runs
    /// over `B * x`, `out_proj` (1) reads `C * conv`. `taps`: (taps, hidden), row `j`
    /// multiplying the input `taps - 1 - j` positions back (the file's `shortconv.conv`,
    /// (hidden, taps), transposed); `start`: a sequence's state before its first token,
    /// zeros (taps - 1, hidden).
    ShortConv { taps: Tensor, start: Tensor },
}

/// What a block's MLP is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mlp {
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
    /// Phi-2's `down(gelu(up(x)))` (tanh approximation, as ggml's and candle's GELU).
    Gelu,
    /// A mixture of experts, each a SwiGLU.
    Experts(Experts),
}

#[derive(Debug, Clone)]
struct Layer {
    mixer: Mixer,
    /// The mixer's weights (q, k, v, o; or a convolution's in_proj, out_proj), then from
    /// [`Layer::mlp_at`] the MLP's: gate, up, down; Phi-2's up, down; or a mixture of experts'
    /// router and every expert's gate, up and down ([`expert_proj`]).
    w: Vec<QMatMul>,
    /// Each weight's bias where the family has one (Qwen2's and GLM-4's q/k/v; Phi-2's every
    /// projection).
    bias: Vec<Option<Tensor>>,
    /// Each weight's tensor name (`blk.N.<name>.weight`), for the op trace.
    names: Vec<&'static str>,
    mlp_at: usize,
    attn_norm: Norm,
    /// None for Phi-2 (its MLP reads the attention's norm).
    ffn_norm: Option<Norm>,
    /// GLM-4's norms of the attention's and the MLP's outputs, before each residual add.
    post_norms: Option<(RmsNorm, RmsNorm)>,
}

/// The weights (shared by clones: quantized tensors are reference-counted).
#[derive(Debug, Clone)]
struct Weights {
    cfg: Config,
    mlp: Mlp,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Norm,
    output: QMatMul,
    /// Phi-2's `output.bias`.
    output_bias: Option<Tensor>,
    rope: Rope,
    /// Positions the RoPE tables and caches are built for.
    context: usize,
    device: Device,
    /// Test side only: a deliberately wrong variant (to show that a comparison against
    /// another implementation can fail); None in every model the suite runs.
    wrong: Option<Wrong>,
    /// `rope_freqs.weight` as read (Llama 3.x), to rebuild the tables for a wrong variant.
    factors: Option<Vec<f32>>,
}

/// One layer's cache in a sequence: an attention block's keys and values, or a convolution
/// block's last `taps - 1` inputs (rows, hidden), zeros before the first token.
#[derive(Debug, Clone)]
pub enum LayerCache {
    Kv(KvCache),
    Conv(Tensor),
}

/// The cache of one sequence: every layer's keys and values (or convolution inputs) at this
/// sequence's positions.
pub type SeqCache = super::quantized_parts::SeqCache<LayerCache>;

/// One sequence's share of a batched step ([`super::batched::SeqStep`] over this model's cache).
pub type SeqStep<'a> = super::batched::SeqStep<'a, SeqCache>;

/// Each sequence's causal mask over its own cache (None for a single token).
type Masks = Vec<Option<Tensor>>;

impl Weights {
    fn new_seq(&self) -> SeqCache {
        SeqCache::new(
            self.layers
                .iter()
                .map(|l| match &l.mixer {
                    Mixer::Attention { .. } => LayerCache::Kv(KvCache::new(2, self.context)),
                    // Shared until the first step replaces it (a state is never written in place).
                    Mixer::ShortConv { start, .. } => LayerCache::Conv(start.clone()),
                })
                .collect(),
        )
    }

    /// One step over `seqs` (see [`Batched::forward`]); `mm(layer, j, x)` runs projection `j`
    /// of `layer` (`layer == layers`: the output projection) on `x` (1, rows, in).
    fn step(
        &self,
        seqs: &mut [SeqStep<'_>],
        mm: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Vec<Option<Tensor>>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let (x, spans) = step_input(seqs, self.layers.len(), self.context, &self.device)?;
        let mut h = traced!(
            "embedding",
            "token_embd rows",
            [e = self.embed, x],
            e.forward(x)
        )?;
        let dev = &self.device;
        let masks = spans
            .iter()
            .map(|&(_, len, pos)| {
                traced!("mask", "mask build (host)", [pos, len, dev], {
                    attention_mask(*pos, *len, 0, pos + len, None)
                        .map(|m| Tensor::from_vec(m, (*len, pos + len), dev))
                        .transpose()
                })
            })
            .collect::<Result<Masks>>()?;
        // The projection `j` of layer `li` with its bias, if any.
        let proj = |li: usize, j: usize, x: &Tensor| -> Result<Tensor> {
            let y = mm(li, j, x)?;
            match &self.layers[li].bias[j] {
                Some(b) if self.wrong != Some(Wrong::ZeroBias) => {
                    let what = self.layers[li].names[j];
                    traced!("add", what, [y, b], y.broadcast_add(b))
                }
                _ => Ok(y),
            }
        };
        for (li, layer) in self.layers.iter().enumerate() {
            let a = self.normed(&layer.attn_norm, "attn_norm", &h, li)?;
            let mixed = match &layer.mixer {
                Mixer::Attention { qk_norm } => {
                    self.attention(li, qk_norm.as_ref(), &a, seqs, &spans, &masks, &proj)?
                }
                Mixer::ShortConv { taps, .. } => {
                    self.short_conv(li, taps, &a, seqs, &spans, &proj)?
                }
            };
            let mlp = |x: &Tensor| self.mlp(li, layer.mlp_at, x, &proj);
            let post = layer
                .post_norms
                .as_ref()
                .filter(|_| self.wrong != Some(Wrong::SkipPostNorms));
            match &layer.ffn_norm {
                // Phi-2: attention and MLP from the same norm, `h + attn + mlp` (llama.cpp's
                // order of the adds).
                None => {
                    let m = mlp(&a)?;
                    let sum = traced!("add", "attention + MLP", [mixed, m], mixed.add(m))?;
                    h = residual(&sum, &h)?;
                }
                Some(ffn_norm) => {
                    let mixed = match post {
                        Some((pa, _)) => norm("post_attention_norm", pa, &mixed)?,
                        None => mixed,
                    };
                    h = residual(&mixed, &h)?;
                    let x = self.normed(ffn_norm, "ffn_norm", &h, usize::MAX)?;
                    let m = mlp(&x)?;
                    let m = match post {
                        Some((_, pf)) => norm("post_ffw_norm", pf, &m)?,
                        None => m,
                    };
                    h = residual(&m, &h)?;
                }
            }
        }
        for (sq, &(_, len, pos)) in seqs.iter_mut().zip(&spans) {
            sq.cache.pos = pos + len;
        }

        last_logits(&h, &spans, seqs.iter().map(|s| s.logits), |last| {
            let last = self.normed(&self.norm, "output_norm", last, usize::MAX)?;
            let y = mm(self.layers.len(), 0, &last)?;
            match &self.output_bias {
                Some(b) if self.wrong != Some(Wrong::ZeroBias) => {
                    traced!("add", "output bias", [y, b], y.broadcast_add(b))
                }
                _ => Ok(y),
            }
        })
    }

    /// Layer `li`'s attention on `a` (1, rows, hidden), the normed input of every sequence
    /// in turn: each sequence's queries against its own cache, with its own positions and
    /// mask; returns the output projection's result (1, rows, hidden).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        li: usize,
        qk_norm: Option<&(RmsNorm, RmsNorm)>,
        a: &Tensor,
        seqs: &mut [SeqStep<'_>],
        spans: &[Span],
        masks: &Masks,
        proj: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let total = a.dim(1)?;
        let (heads, kv_heads, hd) = (c.heads, c.kv_heads, c.head_dim);
        let rep = heads / kv_heads;
        let scale = 1.0 / (hd as f64).sqrt()
            * if self.wrong == Some(Wrong::AttnScaleUp1Pct) {
                1.01
            } else {
                1.0
            };
        let (q, k, v) = (proj(li, 0, a)?, proj(li, 1, a)?, proj(li, 2, a)?);
        let q = q.reshape((1, total, heads, hd))?;
        let k = k.reshape((1, total, kv_heads, hd))?;
        let v = v.reshape((1, total, kv_heads, hd))?;
        let (q, k) = match qk_norm {
            Some((qn, kn)) if self.wrong != Some(Wrong::SkipQkNorm) => {
                (norm("attn_q_norm", qn, &q)?, norm("attn_k_norm", kn, &k)?)
            }
            _ => (q, k),
        };
        let mut outs = Vec::with_capacity(seqs.len());
        for ((sq, &(start, len, pos)), mask) in seqs.iter_mut().zip(spans).zip(masks) {
            let q = q.narrow(1, start, len)?.transpose(1, 2)?;
            let q = traced!("copy", "q transpose", [q], q.contiguous())?;
            let k = k.narrow(1, start, len)?.transpose(1, 2)?;
            let k = traced!("copy", "k, v transpose", [k], k.contiguous())?;
            let v = v.narrow(1, start, len)?.transpose(1, 2)?;
            let v = traced!("copy", "k, v transpose", [v], v.contiguous())?;
            let q = self.rope.apply(&q, pos)?;
            let k = self.rope.apply(&k, pos)?;
            let LayerCache::Kv(cache) = &mut sq.cache.layers[li] else {
                bail!("a sequence cache of another model (layer {li} is attention)");
            };
            let (k, v) =
                op("kv_cache", || cache.append(&k, &v)).inspect(|_| note_append(cache, &k, &v))?;
            let (k, v) = (
                traced!("copy", "k, v from the cache", [k], k.contiguous())?,
                traced!("copy", "k, v from the cache", [v], v.contiguous())?,
            );
            // Grouped-query attention without copying K/V: the `rep` query heads of one
            // KV head (heads kv*rep .. kv*rep+rep, as repeat_kv orders them) become rows
            // of one matmul.
            let q = q.reshape((1, kv_heads, rep * len, hd))?;
            let kt = k.t()?;
            let att = traced!("attn_qk", "q k^T", [q, kt], q.matmul(kt))?;
            let mut att = traced!("scale", "scores * 1/sqrt(head_dim)", [att, scale], {
                att.affine(*scale, 0.)
            })?;
            if let Some(mask) = mask {
                att = traced!("mask", "scores + mask", [att, mask], {
                    let keys = att.dim(3)?;
                    att.reshape((1, kv_heads, rep, len, keys))?
                        .broadcast_add(mask)?
                        .reshape((1, kv_heads, rep * len, keys))
                })?;
            }
            let att = traced!("softmax", "softmax_last_dim", [att], {
                candle_nn::ops::softmax_last_dim(att)
            })?;
            let out = traced!("attn_av", "scores v", [att, v], att.matmul(v))?
                .reshape((1, heads, len, hd))?
                .transpose(1, 2)?;
            outs.push(traced!("copy", "attention output transpose", [out], {
                out.reshape((1, len, heads * hd))
            })?);
        }
        let out = if outs.len() == 1 {
            outs.pop().expect("one sequence")
        } else {
            traced!("copy", "sequences cat", [outs], Tensor::cat(outs, 1))?
        };
        let out = if li == 0 && self.wrong == Some(Wrong::HeadZero) {
            let keep: Vec<f32> = (0..heads * hd).map(|i| (i >= hd) as u8 as f32).collect();
            out.broadcast_mul(&Tensor::new(keep, out.device())?)?
        } else {
            out
        };
        proj(li, 3, &out)
    }

    /// Layer `li`'s gated short convolution (LFM2) on `a` (1, rows, hidden): `in_proj` gives
    /// B, C and x; per sequence, `B * x` after that sequence's last `taps - 1` inputs (its
    /// cache) goes through the causal depthwise convolution (ggml's `ssm_conv`: output `t` is
    /// `sum_j in[t + j] * taps[j]` over the padded input), and the newest inputs become the
    /// cache; `out_proj` reads `C * conv`.
    fn short_conv(
        &self,
        li: usize,
        taps: &Tensor,
        a: &Tensor,
        seqs: &mut [SeqStep<'_>],
        spans: &[Span],
        proj: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let hidden = self.cfg.hidden;
        let n = taps.dim(0)?;
        let bcx = proj(li, 0, a)?;
        let (b, c, x) = (
            bcx.narrow(2, 0, hidden)?,
            bcx.narrow(2, hidden, hidden)?,
            bcx.narrow(2, 2 * hidden, hidden)?,
        );
        let bx = traced!("mul", "B * x", [b, x], b.mul(x))?.squeeze(0)?;
        let reverse = self.wrong == Some(Wrong::ReverseConvTaps);
        let mut outs = Vec::with_capacity(seqs.len());
        for (sq, &(start, len, _)) in seqs.iter_mut().zip(spans) {
            let LayerCache::Conv(state) = &mut sq.cache.layers[li] else {
                bail!("a sequence cache of another model (layer {li} is a convolution)");
            };
            let rows = bx.narrow(0, start, len)?;
            let padded = traced!("copy", "conv state, B * x cat", [state, rows], {
                Tensor::cat(&[state, rows], 0)
            })?;
            let y = traced!("ssm_conv", "short conv", [padded, taps, len], {
                let mut y: Option<Tensor> = None;
                for j in 0..n {
                    let w = taps.narrow(0, if reverse { n - 1 - j } else { j }, 1)?;
                    let t = padded.narrow(0, j, *len)?.broadcast_mul(&w)?;
                    y = Some(match y {
                        None => t,
                        Some(y) => y.add(&t)?,
                    });
                }
                y.ok_or_else(|| candle_core::Error::Msg("a convolution of no taps".into()))
            })?;
            *state = padded.narrow(0, len, n - 1)?.contiguous()?;
            outs.push(y);
        }
        let conv = if outs.len() == 1 {
            outs.pop().expect("one sequence")
        } else {
            traced!("copy", "sequences cat", [outs], Tensor::cat(outs, 0))?
        };
        let conv = conv.unsqueeze(0)?;
        let y = traced!("mul", "C * conv", [c, conv], c.mul(conv))?;
        proj(li, 1, &y)
    }

    /// Layer `li`'s MLP on `x` (1, rows, hidden), its weights from `at` in [`Layer::w`].
    fn mlp(
        &self,
        li: usize,
        at: usize,
        x: &Tensor,
        proj: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let m = match self.mlp {
            Mlp::SwiGlu => swiglu_in(
                x,
                &|j, x| proj(li, at + j, x),
                self.wrong == Some(Wrong::GateUpSwap),
            ),
            Mlp::Gelu => {
                let up = proj(li, at, x)?;
                let g = traced!("activation", "gelu (tanh)", [up], up.gelu())?;
                proj(li, at + 1, &g)
            }
            Mlp::Experts(ex) => self.experts(li, ex, x, proj),
        }?;
        if li == 0 && self.wrong == Some(Wrong::MlpChannelZero) {
            let hidden = m.dim(2)?;
            let keep: Vec<f32> = (0..hidden).map(|i| (i > 0) as u8 as f32).collect();
            return m.broadcast_mul(&Tensor::new(keep, m.device())?);
        }
        Ok(m)
    }

    /// Layer `li`'s mixture of experts on `x` (1, rows, hidden): the router's softmax comes to
    /// the host, which picks each row's top `ex.used` experts and weights
    /// ([`super::moe::top_k_routing`], ties to the lower index), and each expert that got rows
    /// runs its SwiGLU once over them ([`super::moe::dispatch`]).
    fn experts(
        &self,
        li: usize,
        ex: Experts,
        x: &Tensor,
        mm: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (_, rows, hidden) = x.dims3()?;
        let logits = mm(li, ROUTER, x)?;
        let probs = traced!("softmax", "router softmax", [logits], {
            candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)
        })?;
        let probs = probs.reshape((rows, ex.count))?.to_vec2::<f32>()?;
        let renorm = self.wrong != Some(Wrong::NoExpertRenorm);
        let routing = super::moe::top_k_routing(&probs, ex.used, renorm);
        let out = super::moe::dispatch(
            &x.reshape((rows, hidden))?,
            &routing,
            ex.count,
            &mut |e, r| swiglu(&r.unsqueeze(0)?, &|j, x| mm(li, expert_proj(e, j), x))?.squeeze(0),
        )?;
        out.reshape((1, rows, hidden))
    }

    /// The model's own projection `j` of layer `li` (the output projection past the layers).
    fn weight(&self, li: usize, j: usize) -> &QMatMul {
        match self.layers.get(li) {
            Some(l) => &l.w[j],
            None => &self.output,
        }
    }

    /// The name of projection `j` of layer `li`, for the op trace.
    fn weight_name(&self, li: usize, j: usize) -> &'static str {
        match self.layers.get(li) {
            Some(l) => l.names[j],
            None => "output",
        }
    }
}

/// A file's fused weights as the separate projections the rest of the model reads: each
/// block's `attn_qkv` (rows Q, K, V: Phi-3, Phi-2, GLM-4 files that have one) as `attn_q`,
/// `attn_k`, `attn_v`, and for the gated MLPs of Phi-3 and GLM-4 the `ffn_up` that holds
/// gate rows, then up rows (HF's `gate_up_proj`) as `ffn_gate` and `ffn_up`
/// ([`super::gguf_read::split_fused_rows`]: byte ranges of the fused tensors, nothing copied).
/// A file with separate tensors is read as it is. A fused bias (`attn_qkv.bias`) is split
/// when it is read ([`qkv_biases`]).
fn split_fused(ct: &mut gguf_file::Content, cfg: &Config) -> Result<()> {
    let q = cfg.heads * cfg.head_dim;
    let kv = cfg.kv_heads * cfg.head_dim;
    let gated_up = matches!(cfg.kind, Kind::Phi3 | Kind::Glm4);
    for i in 0..cfg.layers {
        let n = |x: &str| format!("blk.{i}.{x}.weight");
        if ct.tensor_infos.contains_key(&n("attn_qkv")) {
            let parts = [(n("attn_q"), q), (n("attn_k"), kv), (n("attn_v"), kv)];
            super::gguf_read::split_fused_rows(ct, &n("attn_qkv"), &parts)?;
        }
        if gated_up && !ct.tensor_infos.contains_key(&n("ffn_gate")) {
            let Some(info) = ct.tensor_infos.get(&n("ffn_up")) else {
                bail!("cannot find tensor info for {}", n("ffn_up"))
            };
            let (rows, _) = info.shape.dims2()?;
            if rows % 2 != 0 {
                bail!(
                    "{} has {rows} rows: a fused gate and up needs an even number",
                    n("ffn_up")
                );
            }
            let parts = [(n("ffn_gate"), rows / 2), (n("ffn_up"), rows / 2)];
            super::gguf_read::split_fused_rows(ct, &n("ffn_up"), &parts)?;
        }
    }
    Ok(())
}

/// Which biases a family's files carry: none (a file with one is refused), q/k/v (Qwen2:
/// required; GLM-4: where the file has them), or every projection's (Phi-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Biases {
    None,
    Qkv { required: bool },
    Every,
}

impl Biases {
    /// Whether the model reads the bias tensor `name` (`blk.N.<proj>.bias`, or Phi-2's
    /// `output.bias` and LayerNorm biases).
    fn reads(self, name: &str) -> bool {
        let proj = name
            .strip_suffix(".bias")
            .and_then(|n| n.rsplit('.').next())
            .unwrap_or_default();
        match self {
            Biases::None => false,
            Biases::Qkv { .. } => {
                name.starts_with("blk.")
                    && matches!(proj, "attn_q" | "attn_k" | "attn_v" | "attn_qkv")
            }
            Biases::Every => {
                (name.starts_with("blk.")
                    && matches!(
                        proj,
                        "attn_q"
                            | "attn_k"
                            | "attn_v"
                            | "attn_qkv"
                            | "attn_output"
                            | "ffn_up"
                            | "ffn_down"
                            | "attn_norm"
                    ))
                    || matches!(name, "output.bias" | "output_norm.bias")
            }
        }
    }

    fn of(kind: Kind) -> Self {
        match kind {
            Kind::Qwen2 => Biases::Qkv { required: true },
            Kind::Glm4 => Biases::Qkv { required: false },
            Kind::Phi2 => Biases::Every,
            _ => Biases::None,
        }
    }
}

/// Block `i`'s q, k and v biases as f32 (each its projection's width): read from
/// `attn_q.bias` .. or from a fused `attn_qkv.bias` (rows Q, K, V), `get` reading a tensor.
/// None where the file has neither.
fn qkv_biases(
    ct: &gguf_file::Content,
    get: &mut dyn FnMut(&str) -> Result<candle_core::quantized::QTensor>,
    cfg: &Config,
    i: usize,
    device: &Device,
) -> Result<Option<[Tensor; 3]>> {
    let n = |x: &str| format!("blk.{i}.{x}.bias");
    let mut f32_of =
        |name: &str| -> Result<Tensor> { get(name)?.dequantize(device)?.to_dtype(DType::F32) };
    let (q, kv) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
    if ct.tensor_infos.contains_key(&n("attn_qkv")) {
        let b = f32_of(&n("attn_qkv"))?.flatten_all()?;
        if b.dim(0)? != q + 2 * kv {
            bail!(
                "{} has {} values; q, k and v need {}",
                n("attn_qkv"),
                b.dim(0)?,
                q + 2 * kv
            );
        }
        return Ok(Some([
            b.narrow(0, 0, q)?,
            b.narrow(0, q, kv)?,
            b.narrow(0, q + kv, kv)?,
        ]));
    }
    if !ct.tensor_infos.contains_key(&n("attn_q")) {
        return Ok(None);
    }
    Ok(Some([
        f32_of(&n("attn_q"))?,
        f32_of(&n("attn_k"))?,
        f32_of(&n("attn_v"))?,
    ]))
}

/// A SwiGLU MLP, `down(silu(gate(x)) * up(x))`, `w(j, x)` running its gate (0), up (1) and
/// down (2) projections.
fn swiglu(x: &Tensor, w: &dyn Fn(usize, &Tensor) -> Result<Tensor>) -> Result<Tensor> {
    swiglu_in(x, w, false)
}

/// [`swiglu`], with gate and up exchanged when `swap` ([`Wrong::GateUpSwap`]).
fn swiglu_in(
    x: &Tensor,
    w: &dyn Fn(usize, &Tensor) -> Result<Tensor>,
    swap: bool,
) -> Result<Tensor> {
    let (g, u) = if swap { (1, 0) } else { (0, 1) };
    let gate = w(g, x)?;
    let gate = traced!("activation", "silu", [gate], candle_nn::ops::silu(gate))?;
    let up = w(u, x)?;
    let hm = traced!("mul", "gate * up", [gate, up], gate.mul(up))?;
    w(2, &hm)
}

/// Quantized Llama / Qwen3 with one sequence's KV cache: the single-sequence model
/// (`CausalLm`), the same code as [`Batched`] with plain matmuls.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    w: Weights,
    cache: SeqCache,
}

impl ModelWeights {
    /// Loads the model, built for `context` positions (RoPE tables and caches).
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        reader: &mut R,
        device: &Device,
        context: usize,
    ) -> Result<Self> {
        let cfg = Config::from_gguf(&ct)?;
        let biases = Biases::of(cfg.kind);
        let mut unread: Vec<&String> = ct
            .tensor_infos
            .keys()
            .filter(|n| n.ends_with(".bias") && !biases.reads(n))
            .collect();
        unread.sort();
        if let Some(t) = unread.first() {
            bail!("the file has a bias tensor ({t}), which {} does not have here; this implementation does not apply it", cfg.kind.name());
        }
        let eps = cfg.rms_norm_eps;
        let factors = if ct.tensor_infos.contains_key("rope_freqs.weight") {
            Some(
                ct.tensor(reader, "rope_freqs.weight", &Device::Cpu)?
                    .dequantize(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )
        } else {
            None
        };
        let mut ct = ct;
        split_fused(&mut ct, &cfg)?;
        if cfg.experts.is_some() {
            // Each expert as a 2-D tensor of its own (`blk.N.ffn_gate.E.weight`), at its
            // offset in the stacked `ffn_gate_exps`: one quantized matmul per expert.
            super::gguf_read::split_stacked_experts(&mut ct)?;
        }
        let final_norm = match cfg.kind {
            Kind::Lfm2 => "token_embd_norm",
            _ => "output_norm",
        };
        let (mut get, (embed, norm_w, output)) = open_gguf(
            &ct,
            reader,
            device,
            context,
            &format!("{final_norm}.weight"),
        )?;
        let layer_norm = cfg.kind == Kind::Phi2;
        // A norm of the family's kind from its weight `<name>.weight` (and `<name>.bias`).
        let norm_of = |get: &mut dyn FnMut(&str) -> Result<QTensor>,
                       name: &str,
                       w: Option<QTensor>|
         -> Result<Norm> {
            let w = match w {
                Some(w) => w,
                None => get(&format!("{name}.weight"))?,
            };
            if layer_norm {
                let b = get(&format!("{name}.bias"))?.dequantize(device)?;
                Ok(Norm::Layer(candle_nn::LayerNorm::new(
                    w.dequantize(device)?,
                    b,
                    eps,
                )))
            } else {
                Ok(Norm::Rms(RmsNorm::from_qtensor(w, eps)?))
            }
        };
        let norm = norm_of(&mut get, final_norm, Some(norm_w))?;
        let mlp = match (cfg.experts, cfg.kind) {
            (Some(ex), _) => Mlp::Experts(ex),
            (None, Kind::Phi2) => Mlp::Gelu,
            (None, _) => Mlp::SwiGlu,
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let mut names: Vec<&'static str> = Vec::new();
            let mut bias: Vec<Option<Tensor>> = Vec::new();
            let conv = cfg.is_conv(i);
            if conv {
                names.extend(["shortconv.in_proj", "shortconv.out_proj"]);
                bias.extend([None, None]);
            } else {
                names.extend(&PROJECTION_NAMES[..ROUTER]);
                let qkv = match biases {
                    Biases::None => None,
                    Biases::Qkv { .. } | Biases::Every => {
                        qkv_biases(&ct, &mut get, &cfg, i, device)?
                    }
                };
                match (qkv, biases) {
                    (None, Biases::Qkv { required: true } | Biases::Every) => {
                        bail!("cannot find tensor info for blk.{i}.attn_q.bias (or attn_qkv.bias): {} has q/k/v biases", cfg.kind.name())
                    }
                    (Some([q, k, v]), _) => bias.extend([Some(q), Some(k), Some(v)]),
                    (None, _) => bias.extend([None, None, None]),
                }
                bias.push(None);
            }
            let mlp_at = names.len();
            match mlp {
                Mlp::SwiGlu => names.extend(&PROJECTION_NAMES[ROUTER..]),
                Mlp::Gelu => names.extend(["ffn_up", "ffn_down"]),
                Mlp::Experts(ex) => {
                    names.push("ffn_gate_inp");
                    for _ in 0..ex.count {
                        names.extend(["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]);
                    }
                }
            }
            // The tensor each weight is read from.
            let files: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(j, n)| match mlp {
                    Mlp::Experts(_) if j > mlp_at => {
                        let (e, which) = ((j - mlp_at - 1) / 3, (j - mlp_at - 1) % 3);
                        let base = PROJECTION_NAMES[ROUTER + which];
                        format!("blk.{i}.{base}.{e}.weight")
                    }
                    _ => format!("blk.{i}.{n}.weight"),
                })
                .collect();
            let mut w = Vec::with_capacity(files.len());
            for f in &files {
                w.push(QMatMul::from_qtensor(get(f)?)?);
            }
            if biases == Biases::Every {
                if !conv {
                    bias[3] = Some(get(&format!("blk.{i}.attn_output.bias"))?.dequantize(device)?);
                }
                for n in &names[mlp_at..] {
                    bias.push(Some(get(&format!("blk.{i}.{n}.bias"))?.dequantize(device)?));
                }
            } else {
                bias.resize(names.len(), None);
            }
            let mut t = |n: &str| get(&format!("blk.{i}.{n}.weight"));
            let conv_taps = match conv {
                true => Some(t("shortconv.conv")?.dequantize(device)?),
                false => None,
            };
            let mut rms = |name: &str| -> Result<RmsNorm> { RmsNorm::from_qtensor(t(name)?, eps) };
            let mixer = if let Some(taps) = conv_taps {
                let (ch, n) = taps.dims2()?;
                let want = cfg.short_conv.as_ref().map_or(0, |c| c.taps);
                if ch != cfg.hidden || n != want {
                    bail!("blk.{i}.shortconv.conv.weight is {ch}x{n}; a convolution of {want} taps over {} channels needs {}x{want}", cfg.hidden, cfg.hidden);
                }
                Mixer::ShortConv {
                    taps: taps.to_dtype(DType::F32)?.t()?.contiguous()?,
                    start: Tensor::zeros((n - 1, ch), DType::F32, device)?,
                }
            } else {
                let qk_norm = match cfg.kind.qk_norm() {
                    true => Some((rms("attn_q_norm")?, rms("attn_k_norm")?)),
                    false => None,
                };
                Mixer::Attention { qk_norm }
            };
            let post_norms = match cfg.kind {
                Kind::Glm4 => Some((rms("post_attention_norm")?, rms("post_ffw_norm")?)),
                _ => None,
            };
            let attn_norm = norm_of(&mut get, &format!("blk.{i}.attn_norm"), None)?;
            let ffn_norm = match cfg.kind {
                Kind::Phi2 => None,
                _ => Some(norm_of(&mut get, &format!("blk.{i}.ffn_norm"), None)?),
            };
            layers.push(Layer {
                mixer,
                w,
                bias,
                names,
                mlp_at,
                attn_norm,
                ffn_norm,
                post_norms,
            });
        }
        let output_bias = match cfg.kind {
            Kind::Phi2 => Some(get("output.bias")?.dequantize(device)?),
            _ => None,
        };
        let rope = Rope::new(
            &cfg,
            factors.as_deref(),
            context,
            cfg.kind.interleaved_rope(),
            device,
        )?;
        let w = Weights {
            factors,
            cfg,
            mlp,
            embed,
            layers,
            norm,
            output,
            output_bias,
            rope,
            context,
            device: device.clone(),
            wrong: None,
        };
        let cache = w.new_seq();
        Ok(Self { w, cache })
    }

    pub fn config(&self) -> &Config {
        &self.w.cfg
    }

    /// Positions the model was built for.
    pub fn context(&self) -> usize {
        self.w.context
    }

    /// Whether the file carried Llama 3.x frequency factors (`rope_freqs.weight`), applied.
    pub fn has_rope_freqs(&self) -> bool {
        self.w.factors.is_some()
    }

    /// Positions in the cache.
    pub fn pos(&self) -> usize {
        self.cache.pos
    }
}

impl SingleSeq for ModelWeights {
    /// Empties the KV cache.
    fn reset(&mut self) {
        self.cache = self.w.new_seq();
    }

    /// Runs `x` (1, len) u32 at positions `index_pos..index_pos+len` and returns the logits of
    /// the last position, (vocab) f32. `index_pos` must be the number of positions already in
    /// the cache, or 0 (which empties the cache first).
    fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (b, len) = x.dims2()?;
        if b != 1 {
            bail!("a forward of {b} sequences: this model runs one (Batched runs several)");
        }
        if forward_start(len, index_pos, self.cache.pos)? {
            self.reset();
        }
        let tokens = x.flatten_all()?.to_vec1::<u32>()?;
        let w = &self.w;
        let mut seqs = [SeqStep {
            cache: &mut self.cache,
            tokens: &tokens,
            logits: true,
        }];
        let mm = |li: usize, j: usize, x: &Tensor| {
            let wt = w.weight(li, j);
            if li == w.layers.len() {
                traced!("lm_head", "output", [wt, x], wt.forward(x))
            } else {
                traced!("matmul", w.weight_name(li, j), [wt, x], wt.forward(x))
            }
        };
        let out = w.step(&mut seqs, &mm);
        match out?.pop().flatten() {
            Some(l) => Ok(l),
            None => bail!("the step returned no logits"),
        }
    }
}

/// Continuous batching over the quantized Llama / Qwen3 (`modelbench serve --max-batch`), in
/// the shape of the project's Gemma 3 ([`super::gemma3_quantized::Batched`]): every token of
/// every sequence in a step goes through each weight matmul together, and attention runs per
/// sequence against that sequence's own cache, with its own positions, RoPE and causal mask,
/// exactly as [`ModelWeights::forward`] runs one sequence of the same chunk (the same code).
/// A sequence's results therefore do not depend on what else is in the batch, provided each
/// matmul computes a row the same whatever the number of rows: candle's CPU kernels are
/// row-independent except that some switch kernels between one row and several;
/// [`Batched::new`] measures that once per weight type and shape and runs a lone row of such
/// a weight as two.
#[derive(Debug, Clone)]
pub struct Batched {
    w: Weights,
    /// Per layer its weights ([`Layer::w`]), then the output projection, as the batched path
    /// runs them.
    projs: Vec<Vec<Proj>>,
    output: Proj,
}

impl Batched {
    /// Wraps loaded weights (their single-sequence cache is dropped) and measures which
    /// weights need a lone row run as two (once per weight type and shape).
    pub fn new(model: ModelWeights) -> Result<Self> {
        let w = model.w;
        let dev = w.device.clone();
        let mut probed = std::collections::HashMap::new();
        let mut projs = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let mut p = Vec::with_capacity(l.w.len());
            for x in &l.w {
                p.push(Proj::candle_probed(x, &dev, &mut probed)?);
            }
            projs.push(p);
        }
        let output = Proj::candle_probed(&w.output, &dev, &mut probed)?;
        Ok(Self { w, projs, output })
    }

    pub fn config(&self) -> &Config {
        &self.w.cfg
    }

    /// How many of the model's weight matmuls run a lone row as two.
    pub fn lone_as_two(&self) -> usize {
        self.projs
            .iter()
            .flatten()
            .chain(std::iter::once(&self.output))
            .filter(|p| p.lone_as_two())
            .count()
    }
}

impl super::batched::BatchedLm for Batched {
    type Seq = SeqCache;

    /// An empty cache for one sequence.
    fn new_seq(&self) -> SeqCache {
        self.w.new_seq()
    }

    /// Runs one step: each sequence's tokens at its own next positions, all through each
    /// weight matmul together. Returns, per sequence, the logits (vocab, f32) of its last
    /// token where `logits` asked for them. On an error no cache has advanced its position,
    /// but caches may hold part of the step: drop the sequences of a failed step.
    fn forward(&self, seqs: &mut [SeqStep<'_>]) -> Result<Vec<Option<Tensor>>> {
        let layers = self.projs.len();
        let mm = |li: usize, j: usize, x: &Tensor| {
            if li == layers {
                op("lm_head", || self.output.forward(x))
            } else {
                op("matmul", || self.projs[li][j].forward(x))
            }
        };
        self.w.step(seqs, &mm)
    }

    fn describe(&self) -> String {
        format!(
            "the project's quantized {} (impl=modelbench){}",
            self.w.cfg.kind.name(),
            match self.lone_as_two() {
                0 => String::new(),
                p => format!(", {p} weights run a lone row as two (batch-independent results)"),
            }
        )
    }

    fn fork_seq(&self, seq: &SeqCache) -> Option<Result<SeqCache>> {
        Some(seq.fork(|l| match l {
            LayerCache::Kv(c) => super::quantized_parts::copy_kv(c).map(LayerCache::Kv),
            // Replaced by each step, never written in place: sharing it is a copy.
            LayerCache::Conv(t) => Ok(LayerCache::Conv(t.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::IndexOp;

    /// Which bias tensors each family's files may carry (any other is refused at load).
    #[test]
    fn each_family_reads_only_its_biases() {
        let qkv = Biases::of(Kind::Qwen2);
        assert!(qkv.reads("blk.3.attn_q.bias") && qkv.reads("blk.0.attn_v.bias"));
        assert!(!qkv.reads("blk.0.attn_output.bias") && !qkv.reads("output.bias"));
        assert!(Biases::of(Kind::Glm4).reads("blk.1.attn_qkv.bias"));
        let phi2 = Biases::of(Kind::Phi2);
        for n in [
            "blk.0.attn_qkv.bias",
            "blk.0.attn_output.bias",
            "blk.0.ffn_up.bias",
            "blk.0.ffn_down.bias",
            "blk.0.attn_norm.bias",
            "output_norm.bias",
            "output.bias",
        ] {
            assert!(phi2.reads(n), "{n}");
        }
        assert!(!phi2.reads("blk.0.ffn_norm.bias") && !phi2.reads("blk.0.ffn_gate.bias"));
        for k in [
            Kind::Llama,
            Kind::Qwen3,
            Kind::Qwen3Moe,
            Kind::Phi3,
            Kind::Lfm2,
        ] {
            assert!(!Biases::of(k).reads("blk.0.attn_q.bias"), "{k:?}");
        }
    }

    /// A lone row through a batched projection is bit-equal to the same row among others, for
    /// the weight types of the real files (Q4_K, Q6_K: kernels that may switch between one row
    /// and several) as for the fixtures' Q8_0.
    #[test]
    fn a_lone_row_computes_as_among_others() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1f32, (64, 256), &dev).unwrap();
        let x = Tensor::randn(0f32, 1f32, (1, 3, 256), &dev).unwrap();
        for dt in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let q = QMatMul::from_qtensor(QTensor::quantize(&w, dt).unwrap()).unwrap();
            let p = Proj::new(&q, false, &dev).unwrap();
            eprintln!("{dt:?}: lone row as two: {}", p.lone_as_two());
            let many: Vec<f32> = p.forward(&x).unwrap().i((0, 0)).unwrap().to_vec1().unwrap();
            let alone: Vec<f32> = p
                .forward(&x.narrow(1, 0, 1).unwrap())
                .unwrap()
                .i((0, 0))
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(
                many.iter()
                    .zip(&alone)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dt:?} (lone row as two: {})",
                p.lone_as_two()
            );
        }
    }
}
