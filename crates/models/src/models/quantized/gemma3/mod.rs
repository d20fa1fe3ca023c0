//! Gemma 3 on candle's quantized ops: the project's own model for `gguf:` Gemma 3 files.
//!
//! Same GGUF tensor names and metadata keys as candle-transformers 0.11.1's
//! `quantized_gemma3`, with what that model gets wrong fixed (issue 14):
//! - the MLP is `down(gelu_tanh(gate) * up)`, as Gemma 3 (HF `gelu_pytorch_tanh`) and
//!   llama.cpp compute it; upstream applies SiLU to the gate;
//! - the sliding window holds in prefill, chunked prefill and decode: a query at position `p`
//!   of a sliding-window layer attends to the keys at positions `k` with `p - window < k <= p`
//!   (HF transformers' and llama.cpp's semantics: `sliding_window = 512` lets a token see itself
//!   and the 511 tokens before it). Sliding layers keep a bounded cache of `window - 1`
//!   positions; global layers keep every position. Upstream has no mask in decode and an
//!   unbounded cache;
//! - RoPE tables cover the positions the model is built for (the plan's context cap), shared
//!   by all layers of the same base, instead of 131072 positions in every layer; a forward past
//!   them is an error, not a panic;
//! - [`ModelWeights::reset`] empties every cache, and several tokens at `index_pos > 0`
//!   (chunked prefill) work;
//! - the token embedding stays quantized: only the looked-up rows are dequantized on the CPU,
//!   and the tied output projection multiplies by the same quantized tensor.
//!
//! Kept from upstream: embeddings scaled by `sqrt(hidden)`; RmsNorm on q and k per head;
//! pre/post attention and pre/post feed-forward norms as plain RmsNorm (llama.cpp's converter
//! already adds 1 to Gemma's norm weights in GGUF files); attention scaled by
//! `1/sqrt(key_length)` (llama.cpp's rule for every Gemma 3 size but 27B); every
//! `sliding_window_type`-th layer (default 6) global, the others sliding; RoPE in the NeoX
//! layout (`candle_nn::rotary_emb::rope`, llama.cpp's `LLAMA_ROPE_TYPE_NEOX`) with base
//! `rope.local_freq_base` (default 10000) on sliding layers and `rope.freq_base` (default 1e6)
//! on global ones; `output.weight`, or the tied `token_embd.weight` when it is absent.
//! Added where the metadata asks for it (absent in Gemma 3 270M): linear RoPE scaling
//! (`rope.scaling.factor`) on global layers as llama.cpp applies it, and final / attention
//! logit soft-capping (`final_logit_softcapping`, `attn_logit_softcapping`).

use std::sync::Arc;

use candle_core::quantized::{ggml_file, gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{bail, DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_transformers::quantized_nn::RmsNorm;

// An op-scoped injected slowdown (`MODELBENCH_INJECT_SLOWDOWN=op:KIND:..`, issue 31) wraps
// each op of its kind; unset, one relaxed atomic load per op.
use crate::measure::inject::around_op as op;
use crate::models::host_ops;
use crate::models::q8_matmul::{self, PackedK, PackedQ8_0};
pub use crate::models::quantized::parts::Embedding;
use crate::models::quantized::parts::{
    forward_start, norm, open_gguf, read_projections, residual, Gelu, RopeTables, SingleSeq,
    PROJECTIONS,
};
use crate::models::quantized::wrong::{
    channel_zero, eps_times_10, head_zero, one_position_off, Wrong,
};
use modelbench_measure::traced;

mod batched;
pub use batched::*;

pub const DEFAULT_SLIDING_WINDOW_TYPE: usize = 6;
pub const DEFAULT_ROPE_FREQUENCY: f32 = 1_000_000.;
pub const DEFAULT_ROPE_FREQUENCY_SLIDING: f32 = 10_000.;

/// The model's shape and settings, from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub rms_norm_eps: f64,
    pub sliding_window: usize,
    /// Every `sliding_window_type`-th layer is global (0 or 1: all global).
    pub sliding_window_type: usize,
    pub rope_base: f32,
    pub rope_base_local: f32,
    /// Positions of global layers are divided by this (linear RoPE scaling; 1 when absent).
    pub rope_scale_global: f32,
    pub final_logit_softcapping: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    /// `context_length` of the metadata (0 when absent).
    pub max_context: usize,
}

/// Every how many layers one is global: llama.cpp's `attention.sliding_window_pattern` (a period,
/// or one bool per layer, true = sliding; llama.cpp's `load_swa_pattern`), else the older
/// `attention.sliding_window_type` period, else 6 (Gemma 3's, which llama.cpp assumes too).
fn swa_period(
    pattern: Option<&gguf_file::Value>,
    legacy: Option<&gguf_file::Value>,
) -> Result<usize> {
    use gguf_file::Value;
    match pattern {
        Some(Value::Array(per_layer)) => {
            let swa: Vec<bool> = per_layer
                .iter()
                .map(|v| v.to_bool())
                .collect::<Result<_>>()?;
            let period = swa.iter().position(|s| !s).map_or(0, |i| i + 1);
            if swa
                .iter()
                .enumerate()
                .any(|(l, s)| *s != (period > 1 && (l + 1) % period != 0))
            {
                bail!("attention.sliding_window_pattern {swa:?} is not periodic (one global layer every N): not implemented");
            }
            Ok(period)
        }
        Some(v) => Ok(v.to_u32()? as usize),
        None => Ok(legacy
            .and_then(|v| v.to_u32().ok())
            .map(|v| v as usize)
            .unwrap_or(DEFAULT_SLIDING_WINDOW_TYPE)),
    }
}

impl Config {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Config> {
        let prefix = ["gemma3", "gemma2", "gemma", "gemma-embedding"]
            .iter()
            .find(|p| {
                ct.metadata
                    .contains_key(&format!("{p}.attention.head_count"))
            })
            .copied()
            .unwrap_or("gemma3");
        let get = |s: &str| ct.metadata.get(&format!("{prefix}.{s}"));
        let need = |s: &str| match get(s) {
            Some(v) => Ok(v),
            None => bail!("cannot find {prefix}.{s} in metadata"),
        };
        let u = |s: &str| -> Result<usize> { Ok(need(s)?.to_u32()? as usize) };
        let opt_f = |s: &str| get(s).and_then(|v| v.to_f32().ok());
        let heads = u("attention.head_count")?;
        let scale_type = get("rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let factor = opt_f("rope.scaling.factor").filter(|f| *f > 0.0 && *f != 1.0);
        if let (Some(f), Some(t)) = (factor, scale_type.as_deref()) {
            if t != "linear" && t != "none" {
                bail!("rope.scaling.type `{t}` (factor {f}) is not supported (linear only)");
            }
        }
        let rope_scale_global = match scale_type.as_deref() {
            Some("none") => 1.0,
            _ => factor.unwrap_or(1.0),
        };
        Ok(Config {
            layers: u("block_count")?,
            heads,
            kv_heads: u("attention.head_count_kv")?,
            head_dim: u("attention.key_length")?,
            hidden: u("embedding_length")?,
            rms_norm_eps: need("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            sliding_window: u("attention.sliding_window")?,
            sliding_window_type: swa_period(
                get("attention.sliding_window_pattern"),
                get("attention.sliding_window_type"),
            )?,
            rope_base: opt_f("rope.freq_base").unwrap_or(DEFAULT_ROPE_FREQUENCY),
            rope_base_local: opt_f("rope.local_freq_base")
                .unwrap_or(DEFAULT_ROPE_FREQUENCY_SLIDING),
            rope_scale_global,
            final_logit_softcapping: opt_f("final_logit_softcapping")
                .filter(|c| *c > 0.0)
                .map(f64::from),
            attn_logit_softcapping: opt_f("attn_logit_softcapping")
                .filter(|c| *c > 0.0)
                .map(f64::from),
            max_context: get("context_length")
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .unwrap_or(0),
        })
    }

    /// Whether layer `layer` uses the sliding window (upstream's and llama.cpp's pattern:
    /// every `sliding_window_type`-th layer, counting from 1, is global).
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window_type > 1 && !(layer + 1).is_multiple_of(self.sliding_window_type)
    }
}

/// Whether a query at position `q` may attend to the key at position `k`: causal, and with a
/// sliding window `w`, only `q - k < w` (the token itself and the `w - 1` before it).
pub fn attends(q: usize, k: usize, window: Option<usize>) -> bool {
    k <= q && window.is_none_or(|w| q - k < w)
}

/// Additive mask (0 or -inf), row-major `(n_q, n_k)`, of `n_q` queries at positions
/// `q0..q0+n_q` over `n_k` keys at positions `k0..k0+n_k`; `None` when nothing is masked.
pub fn attention_mask(
    q0: usize,
    n_q: usize,
    k0: usize,
    n_k: usize,
    window: Option<usize>,
) -> Option<Vec<f32>> {
    let mut any = false;
    let mut m = Vec::with_capacity(n_q * n_k);
    for i in 0..n_q {
        for j in 0..n_k {
            if attends(q0 + i, k0 + j, window) {
                m.push(0.0);
            } else {
                any = true;
                m.push(f32::NEG_INFINITY);
            }
        }
    }
    any.then_some(m)
}

/// RoPE tables (NeoX layout) for `positions` positions.
#[derive(Debug, Clone)]
pub struct Rope(RopeTables);

impl Rope {
    /// The same tables rounded to f16 ([`Wrong::RopeF16`]).
    fn rounded_to_f16(&self) -> Result<Self> {
        Ok(Self(self.0.rounded_to_f16()?))
    }

    pub fn new(
        head_dim: usize,
        base: f32,
        scale: f32,
        positions: usize,
        dev: &Device,
    ) -> Result<Self> {
        // ggml's angles (its running product, as the generic decoder): 5.6e-12 mean KLD
        // against llama.cpp's f32 logits on the real Gemma 3 270M's F32 rewrite, where the
        // direct formula (`p * inv_freq`, candle's) reads 2.95e-10, over that file's
        // full-precision limit of 1.85e-10 (2026-11-29; docs/quality-full-precision.md).
        Ok(Self(RopeTables::new(
            base,
            1.0 / scale,
            head_dim,
            None,
            positions,
            dev,
        )?))
    }

    /// `x`: (b, heads, len, head_dim), contiguous, at positions `pos..pos+len`.
    pub fn apply(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        self.0.apply(x, pos, false)
    }
}

/// One layer's KV cache (a sequence's, in [`SeqCache`]).
#[derive(Debug, Clone)]
pub enum Cache {
    /// Every position, preallocated for the built context.
    Global(KvCache),
    /// The last `window - 1` positions at most (all a next query can see).
    Sliding(Option<(Tensor, Tensor)>),
}

impl Cache {
    /// Adds this step's keys and values (b, kv_heads, len, head_dim) and returns every key and
    /// value the step's queries attend to: the whole preallocated history in a global layer;
    /// in a sliding one the kept positions and the new ones, keeping the last `window - 1` of
    /// them (all a next query can see).
    fn update(&mut self, k: Tensor, v: Tensor, window: usize) -> Result<(Tensor, Tensor)> {
        match self {
            Cache::Global(c) => {
                let out = op("kv_cache", || c.append(&k, &v))?;
                crate::models::quantized::parts::note_append(c, &k, &v);
                Ok(out)
            }
            Cache::Sliding(c) => {
                let (k, v) = match c.take() {
                    Some((ck, cv)) => traced!("kv_cache", "k, v cat (sliding)", [ck, cv, k, v], {
                        Ok((Tensor::cat(&[ck, k], 2)?, Tensor::cat(&[cv, v], 2)?))
                    })?,
                    None => (k, v),
                };
                let keys = k.dim(2)?;
                let keep = keys.min(window.saturating_sub(1));
                if keep > 0 {
                    *c = Some((
                        k.narrow(2, keys - keep, keep)?,
                        v.narrow(2, keys - keep, keep)?,
                    ));
                }
                Ok((k, v))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    window: Option<usize>,
    cache: Cache,
    /// [`Gelu::Exact`] but for `verify --full-precision` ([`ModelWeights::match_ggml_gelu`]).
    gelu: Gelu,
}

struct Shape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    attn_softcap: Option<f64>,
    /// The deliberately wrong variant, test side ([`ModelWeights::wrong`]); None in every
    /// model the suite runs.
    wrong: Option<Wrong>,
}

impl Shape {
    fn of(cfg: &Config) -> Shape {
        Shape {
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f64).sqrt(),
            attn_softcap: cfg.attn_logit_softcapping,
            wrong: None,
        }
    }

    /// Whether the model is made wrong in way `w`.
    fn is(&self, w: Wrong) -> bool {
        self.wrong == Some(w)
    }
}

impl Layer {
    fn reset(&mut self) {
        match &mut self.cache {
            Cache::Global(c) => c.reset(),
            Cache::Sliding(c) => *c = None,
        }
    }

    /// Attention of layer `li` on `x` (b, len, hidden) at positions `pos..`; `mask` (len,
    /// keys) additive.
    fn attention(
        &mut self,
        li: usize,
        x: &Tensor,
        pos: usize,
        rope: &Rope,
        mask: Option<&Tensor>,
        s: &Shape,
    ) -> Result<Tensor> {
        let (b, len, _) = x.dims3()?;
        let q = traced!("matmul", "attn_q", [w = self.wq, x], w.forward(x))?;
        let k = traced!("matmul", "attn_k", [w = self.wk, x], w.forward(x))?;
        let v = traced!("matmul", "attn_v", [w = self.wv, x], w.forward(x))?;
        let q = q.reshape((b, len, s.heads, s.head_dim))?;
        let k = k.reshape((b, len, s.kv_heads, s.head_dim))?;
        let v = v.reshape((b, len, s.kv_heads, s.head_dim))?;
        let (q, k) = if s.is(Wrong::SkipQkNorm) {
            (q, k)
        } else {
            (
                norm("attn_q_norm", &self.q_norm, &q)?,
                norm("attn_k_norm", &self.k_norm, &k)?,
            )
        };
        let q = q.transpose(1, 2)?;
        let q = traced!("copy", "q transpose", [q], q.contiguous())?;
        let k = k.transpose(1, 2)?;
        let k = traced!("copy", "k, v transpose", [k], k.contiguous())?;
        let v = v.transpose(1, 2)?;
        let v = traced!("copy", "k, v transpose", [v], v.contiguous())?;
        let q = rope.apply(&q, pos)?;
        let k = rope.apply(&k, pos)?;

        let (k, v) = self.cache.update(k, v, self.window.unwrap_or(1))?;
        let (k, v) = (
            traced!("copy", "k, v from the cache", [k], k.contiguous())?,
            traced!("copy", "k, v from the cache", [v], v.contiguous())?,
        );
        let (k, v) = if s.is(Wrong::KvOneOff) {
            (one_position_off(&k)?, one_position_off(&v)?)
        } else {
            (k, v)
        };

        // Grouped-query attention without copying K/V: the `rep` query heads of one KV head
        // (heads kv*rep .. kv*rep+rep, as repeat_kv orders them) become rows of one matmul.
        let rep = s.heads / s.kv_heads;
        let q = q.reshape((b, s.kv_heads, rep * len, s.head_dim))?;
        let kt = k.t()?;
        let att = traced!("attn_qk", "q k^T", [q, kt], q.matmul(kt))?;
        let scale = s.scale
            * if s.is(Wrong::AttnScaleUp1Pct) {
                1.01
            } else {
                1.0
            };
        let mut att = traced!("scale", "scores * 1/sqrt(head_dim)", [att, scale], {
            att.affine(*scale, 0.)
        })?;
        if let Some(cap) = s.attn_softcap {
            att = traced!("activation", "attention logit soft-cap", [att, cap], {
                att.affine(1. / cap, 0.)?.tanh()?.affine(*cap, 0.)
            })?;
        }
        if let Some(mask) = mask {
            att = traced!("mask", "scores + mask", [att, mask], {
                let (b, kv, rows, keys) = att.dims4()?;
                let len = mask.dim(0)?;
                att.reshape((b, kv, rows / len, len, keys))?
                    .broadcast_add(mask)?
                    .reshape((b, kv, rows, keys))
            })?;
        }
        // Row-order sums on the host (CPU): a position's weights are then the same bits
        // whatever key count its chunk ended at, as in the batched path (batched.rs says why).
        let att = traced!("softmax", "softmax_last_dim", [att], {
            if att.device().is_cpu() {
                host_ops::softmax_last_dim(att)
            } else {
                candle_nn::ops::softmax_last_dim(att)
            }
        })?;
        // Summed over fixed blocks of keys (the same bits whatever a chunk's key count).
        let out = traced!("attn_av", "scores v", [att, v], {
            host_ops::attention_values(att, v)
        })?
        .reshape((b, s.heads, len, s.head_dim))?
        .transpose(1, 2)?;
        let hidden = s.heads * s.head_dim;
        let out = traced!("copy", "attention output transpose", [out], {
            out.reshape((b, len, hidden))
        })?;
        let out = if li == 0 && s.is(Wrong::HeadZero) {
            head_zero(&out, s.heads, s.head_dim)?
        } else {
            out
        };
        traced!("matmul", "attn_output", [w = self.wo, out], w.forward(out))
    }

    /// Layer `li`'s MLP on `x`.
    fn mlp(&self, li: usize, x: &Tensor, s: &Shape) -> Result<Tensor> {
        let gate = traced!("matmul", "ffn_gate", [w = self.gate, x], w.forward(x))?;
        let up = traced!("matmul", "ffn_up", [w = self.up, x], w.forward(x))?;
        let (gate, up) = if s.is(Wrong::GateUpSwap) {
            (up, gate)
        } else {
            (gate, up)
        };
        // tanh approximation, as Gemma 3
        let gelu = self.gelu;
        let gate = traced!("activation", "gelu (tanh)", [gate], gelu.apply(gate))?;
        let h = traced!("mul", "gate * up", [gate, up], gate.mul(up))?;
        let m = traced!("matmul", "ffn_down", [w = self.down, h], w.forward(h))?;
        if li == 0 && s.is(Wrong::MlpChannelZero) {
            return channel_zero(&m);
        }
        Ok(m)
    }
}

/// Quantized Gemma 3 with a KV cache (see the module documentation).
#[derive(Debug, Clone)]
pub struct ModelWeights {
    cfg: Config,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    rope_local: Rope,
    rope_global: Rope,
    /// Positions the RoPE tables and global caches were built for.
    context: usize,
    /// Positions in the cache (the next forward must start here, or at 0).
    pos: usize,
    /// Positions the sliding layers' caches hold.
    sliding_len: usize,
    device: Device,
    /// The file the model was read from and where its `token_embd.weight` starts in it, for
    /// `--fast-weights` to repack a tied lm_head from the file ([`Batched::new`]).
    embd_source: Option<(Arc<std::fs::File>, u64)>,
    /// Test side only: a deliberately wrong variant ([`ModelWeights::wrong`]).
    wrong: Option<Wrong>,
}

impl ModelWeights {
    /// GELU from now on as llama.cpp's CPU backend computes it in its GEGLU
    /// ([`Gelu::GgmlF16`]; the single-sequence forward only, not [`Batched`]).
    pub fn match_ggml_gelu(&mut self) -> bool {
        for l in &mut self.layers {
            l.gelu = Gelu::GgmlF16;
        }
        true
    }

    /// Loads the model, built for `context` positions (RoPE tables and global caches).
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        reader: &mut R,
        device: &Device,
        context: usize,
    ) -> Result<Self> {
        let cfg = Config::from_gguf(&ct)?;
        if cfg.heads == 0 || cfg.kv_heads == 0 || cfg.heads % cfg.kv_heads != 0 {
            bail!(
                "head_count {} is not a multiple of head_count_kv {}",
                cfg.heads,
                cfg.kv_heads
            );
        }
        let eps = cfg.rms_norm_eps;
        let (mut get, (embed, norm, output)) =
            open_gguf(&ct, reader, device, context, "output_norm.weight")?;
        let norm = RmsNorm::from_qtensor(norm, eps)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let [wq, wk, wv, wo, gate, up, down] = read_projections(&mut get, i)?;
            let mut n = |n: &str| RmsNorm::from_qtensor(get(&format!("blk.{i}.{n}.weight"))?, eps);
            let sliding = cfg.is_sliding(i);
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                q_norm: n("attn_q_norm")?,
                k_norm: n("attn_k_norm")?,
                attn_norm: n("attn_norm")?,
                post_attn_norm: n("post_attention_norm")?,
                ffn_norm: n("ffn_norm")?,
                post_ffn_norm: n("post_ffw_norm")?,
                gate,
                up,
                down,
                window: sliding.then_some(cfg.sliding_window.max(1)),
                cache: if sliding {
                    Cache::Sliding(None)
                } else {
                    Cache::Global(KvCache::new(2, context))
                },
                gelu: Gelu::Exact,
            });
        }
        let rope_local = Rope::new(cfg.head_dim, cfg.rope_base_local, 1.0, context, device)?;
        let rope_global = Rope::new(
            cfg.head_dim,
            cfg.rope_base,
            cfg.rope_scale_global,
            context,
            device,
        )?;
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            output,
            rope_local,
            rope_global,
            context,
            pos: 0,
            sliding_len: 0,
            device: device.clone(),
            embd_source: None,
            wrong: None,
        })
    }

    /// Test side: the model made deliberately wrong in one way, for the KLD gate's measured
    /// sensitivity (tests/sensitivity.rs): the table's deviations ([`Wrong::HELD_OUT`],
    /// [`Wrong::CONTROLS_LISTED`]); the generic decoder's family controls are refused.
    /// Single-sequence only: [`Batched`] refuses a wrong model.
    pub fn wrong(mut self, w: Wrong) -> Result<Self> {
        match w {
            Wrong::RopeBaseUpHalfPct => {
                let (hd, ctx, dev) = (self.cfg.head_dim, self.context, &self.device);
                self.rope_local = Rope::new(hd, self.cfg.rope_base_local * 1.005, 1.0, ctx, dev)?;
                let (base, scale) = (self.cfg.rope_base * 1.005, self.cfg.rope_scale_global);
                self.rope_global = Rope::new(hd, base, scale, ctx, dev)?;
            }
            Wrong::RopeF16 => {
                self.rope_local = self.rope_local.rounded_to_f16()?;
                self.rope_global = self.rope_global.rounded_to_f16()?;
            }
            Wrong::AttnScaleUp1Pct
            | Wrong::EpsTimes10
            | Wrong::NormL0Up2Pct
            | Wrong::HeadZero
            | Wrong::GateUpSwap
            | Wrong::MlpChannelZero
            | Wrong::KvOneOff
            | Wrong::SkipQkNorm => {}
            Wrong::OtherRopeLayout
            | Wrong::ZeroBias
            | Wrong::DropRopeFreqs
            | Wrong::NoExpertRenorm
            | Wrong::SkipPostNorms
            | Wrong::ReverseConvTaps => {
                bail!(
                    "`{}` is not a deviation of the Gemma 3 decoder",
                    w.describe()
                )
            }
        }
        self.wrong = Some(w);
        Ok(self)
    }

    /// `n` over `x` as the wrong variant changes it: epsilon x10 on every norm of a block and
    /// the output norm ([`Wrong::EpsTimes10`]); layer 0's post-attention norm x1.02
    /// ([`Wrong::NormL0Up2Pct`]; `li` the layer, `usize::MAX` for another norm). Not the
    /// attention norm, as in the generic decoder: in Gemma 3 its scale is renormalised away
    /// (the q/k norms rescale q and k, the post-attention norm the output scaled through v),
    /// so x1.02 there moves the logits only through the norms' epsilon (measured on the
    /// fixture's F32 rewrite: mean KLD 2.2e-8, under the gate's limit, 2026-11-29).
    fn normed(
        wrong: Option<Wrong>,
        eps: f64,
        (what, n): (&'static str, &RmsNorm),
        x: &Tensor,
        li: usize,
    ) -> Result<Tensor> {
        let y = norm(what, n, x)?;
        match wrong {
            Some(Wrong::EpsTimes10) => eps_times_10(&y, x, eps),
            Some(Wrong::NormL0Up2Pct) if li == 0 && what == "post_attention_norm" => y * 1.02,
            _ => Ok(y),
        }
    }

    /// Keeps `file` (the one the model was read from) and the offset of its
    /// `token_embd.weight`, so [`Batched::new`] with `--fast-weights` can repack a tied lm_head
    /// straight from the file after freeing the loaded table.
    pub fn keep_embedding_source(&mut self, file: std::fs::File, offset: u64) {
        self.embd_source = Some((Arc::new(file), offset));
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Positions the model was built for.
    pub fn context(&self) -> usize {
        self.context
    }
}

impl SingleSeq for ModelWeights {
    /// Empties every layer's KV cache.
    fn reset(&mut self) {
        for l in &mut self.layers {
            l.reset();
        }
        self.pos = 0;
        self.sliding_len = 0;
    }

    /// Runs `x` (b, len) u32 at positions `index_pos..index_pos+len` and returns the logits of
    /// the last position, (b, vocab) f32. `index_pos` must be the number of positions already
    /// in the cache, or 0 (which empties the cache first, as upstream's forward does).
    fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (b, len) = x.dims2()?;
        if forward_start(len, index_pos, self.pos)? {
            self.reset();
        }
        if index_pos + len > self.context {
            bail!(
                "positions {index_pos}..{} exceed the {} positions this model was built for (its context cap); load it with a larger one",
                index_pos + len,
                self.context
            );
        }
        let h = traced!(
            "embedding",
            "token_embd rows",
            [e = self.embed, x],
            e.forward(x)
        )?;
        let sqrt_hidden = (self.cfg.hidden as f64).sqrt();
        let mut h = traced!("scale", "embedding * sqrt(hidden)", [h, sqrt_hidden], {
            h.affine(*sqrt_hidden, 0.)
        })?;

        let dev = &self.device;
        let mask = |k0: usize, n_k: usize, window: Option<usize>| -> Result<Option<Tensor>> {
            traced!(
                "mask",
                "mask build (host)",
                [index_pos, len, k0, n_k, window, dev],
                {
                    attention_mask(*index_pos, *len, *k0, *n_k, *window)
                        .map(|m| Tensor::from_vec(m, (*len, *n_k), dev))
                        .transpose()
                }
            )
        };
        let window = self.cfg.sliding_window.max(1);
        let global_mask = mask(0, index_pos + len, None)?;
        let sliding_mask = mask(
            index_pos - self.sliding_len,
            self.sliding_len + len,
            Some(window),
        )?;
        let shape = Shape {
            wrong: self.wrong,
            ..Shape::of(&self.cfg)
        };
        let (wrong, eps) = (self.wrong, self.cfg.rms_norm_eps);
        let nm =
            |n: (&'static str, &RmsNorm), x: &Tensor, li: usize| Self::normed(wrong, eps, n, x, li);
        for (li, layer) in self.layers.iter_mut().enumerate() {
            let (rope, mask) = if layer.window.is_some() {
                (&self.rope_local, sliding_mask.as_ref())
            } else {
                (&self.rope_global, global_mask.as_ref())
            };
            let a = nm(("attn_norm", &layer.attn_norm), &h, li)?;
            let a = layer.attention(li, &a, index_pos, rope, mask, &shape)?;
            let a = nm(("post_attention_norm", &layer.post_attn_norm), &a, li)?;
            h = residual(&a, &h)?;
            let x = nm(("ffn_norm", &layer.ffn_norm), &h, li)?;
            let m = layer.mlp(li, &x, &shape)?;
            let m = nm(("post_ffw_norm", &layer.post_ffn_norm), &m, li)?;
            h = residual(&m, &h)?;
        }
        self.pos = index_pos + len;
        self.sliding_len = (self.sliding_len + len).min(window - 1);

        let last = h.i((.., len - 1, ..))?.reshape((b, self.cfg.hidden))?;
        let last = nm(("output_norm", &self.norm), &last, usize::MAX)?;
        let mut logits = traced!(
            "lm_head",
            "output",
            [w = self.output, last],
            w.forward(last)
        )?;
        if let Some(cap) = self.cfg.final_logit_softcapping {
            logits = traced!("activation", "final logit soft-cap", [logits, cap], {
                logits.affine(1. / cap, 0.)?.tanh()?.affine(*cap, 0.)
            })?;
        }
        logits.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q5_0_reencoded_as_q8_0_dequantizes_bit_equal() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (4, 64), &dev).unwrap();
        let q5 = QTensor::quantize(&x, GgmlDType::Q5_0).unwrap();
        let q8 = q5_0_as_q8_0(&q5).unwrap().expect("a Q5_0 tensor");
        assert_eq!(q8.dtype(), GgmlDType::Q8_0);
        let values = |q: &QTensor| -> Vec<f32> {
            let t = q.dequantize(&dev).unwrap();
            t.flatten_all().unwrap().to_vec1().unwrap()
        };
        let (a, b) = (values(&q5), values(&q8));
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        let q4 = QTensor::quantize(&x, GgmlDType::Q8_0).unwrap();
        assert!(q5_0_as_q8_0(&q4).unwrap().is_none());
    }

    #[test]
    fn window_keeps_the_token_and_the_window_minus_one_before_it() {
        assert!(attends(511, 0, Some(512)));
        assert!(!attends(512, 0, Some(512)));
        assert!(attends(512, 1, Some(512)));
        assert!(!attends(3, 4, Some(512)));
        assert!(attends(100_000, 0, None));
        assert!(!attends(0, 1, None));
    }

    #[test]
    fn masks_are_causal_and_windowed() {
        // 3 queries at positions 4..7 over keys 2..7, window 3.
        let m = attention_mask(4, 3, 2, 5, Some(3)).unwrap();
        let ok: Vec<Vec<bool>> = m
            .chunks(5)
            .map(|r| r.iter().map(|x| *x == 0.0).collect())
            .collect();
        assert_eq!(
            ok,
            vec![
                vec![true, true, true, false, false],
                vec![false, true, true, true, false],
                vec![false, false, true, true, true],
            ]
        );
        assert!(attention_mask(5, 1, 0, 6, None).is_none());
        assert!(attention_mask(5, 1, 3, 3, Some(3)).is_none());
    }
}
