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

use candle_core::quantized::QMatMul;
use candle_core::{bail, Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_transformers::quantized_nn::RmsNorm;

mod attention;
mod config;
pub mod layout;
mod load;
mod mlp;
mod step;
mod wrong;
pub use config::{Config, Experts, ShortConv};
pub use layout::{FamilyLayout, Layout};
pub use step::Batched;
pub use wrong::Wrong;

use crate::models::quantized::gemma3::Embedding;
use crate::models::quantized::parts::{forward_start, norm, Gelu, SingleSeq};
use attention::Rope;
use modelbench_measure::traced;

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
    /// How the GELU MLP (Phi-2) computes GELU: [`Gelu::Exact`] but for `verify
    /// --full-precision` ([`ModelWeights::match_ggml_gelu`]).
    gelu: Gelu,
    /// The attention softmax on the CPU: the host's row-order sum (false), or candle's
    /// kernel (true: [`ModelWeights::match_candle_arithmetic`], tests only).
    candle_softmax: bool,
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
pub type SeqCache = crate::models::quantized::parts::SeqCache<LayerCache>;

/// One sequence's share of a batched step ([`crate::models::batched::SeqStep`] over this model's cache).
pub type SeqStep<'a> = crate::models::batched::SeqStep<'a, SeqCache>;

/// Each sequence's causal mask over its own cache (None for a single token).
type Masks = Vec<Option<Tensor>>;

/// Quantized Llama / Qwen3 with one sequence's KV cache: the single-sequence model
/// (`CausalLm`), the same code as [`Batched`] with plain matmuls.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    w: Weights,
    cache: SeqCache,
}
impl ModelWeights {
    pub fn config(&self) -> &Config {
        &self.w.cfg
    }

    /// GELU from now on as llama.cpp's CPU backend computes it ([`Gelu::GgmlF16`]); false
    /// (nothing changed) for a family without a GELU MLP.
    pub fn match_ggml_gelu(&mut self) -> bool {
        let has = matches!(self.w.mlp, Mlp::Gelu);
        if has {
            self.w.gelu = Gelu::GgmlF16;
        }
        has
    }

    /// The attention softmax (candle's CPU kernel) and the RoPE angles (`p * inv_freq`) from
    /// now on as candle-transformers' models compute them, for a like-for-like comparison with
    /// them. Call it before [`ModelWeights::wrong`] (the tables are rebuilt from the config).
    pub fn match_candle_arithmetic(&mut self) -> bool {
        let w = &self.w;
        match w
            .rope
            .candle_angles(&w.cfg, w.factors.as_deref(), w.context, &w.device)
        {
            Ok(r) => {
                self.w.rope = r;
                self.w.candle_softmax = true;
                true
            }
            Err(_) => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::quantized::gemma3::Proj;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::IndexOp;

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
