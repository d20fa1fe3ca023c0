//! Llama, Qwen2, Qwen3 and their mixtures of experts (Mixtral-style Llama, Qwen3-MoE) on
//! candle's quantized ops: the project's own model for such `gguf:` files
//! (`gguf:<file>?impl=modelbench`; the default for Qwen2, Qwen3-MoE and Llama 3.x files with
//! `rope_freqs.weight`), written for continuous batching (`modelbench serve --max-batch`):
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
//!   (which must be the whole head): Llama in llama.cpp's `LLAMA_ROPE_TYPE_NORM` layout (pairs
//!   `2i, 2i+1`; llama.cpp's converter permutes the rows of `attn_q` / `attn_k` so that this
//!   layout computes what HF's half-rotation computes on the original weights), Qwen2 and
//!   Qwen3 in the NeoX layout (pairs `i, i + d/2`; no permutation in their files);
//! - Qwen3 only: RmsNorm of each head of q and k (`attn_q_norm`, `attn_k_norm`) before RoPE;
//! - Qwen2 only: q/k/v biases (Llama and Qwen3 files with one are refused, not run without);
//! - a mixture of experts in place of the SwiGLU where the file has one (`expert_count`:
//!   Mixtral-style `llama`, and `qwen3moe`, Qwen3's attention with experts): the router's
//!   softmax, the top `expert_used_count` experts of each token weighted by their
//!   probabilities renormalised to sum to one, each expert a SwiGLU of its own
//!   (`ffn_{gate,up,down}_exps`, read expert by expert), as llama.cpp's `build_moe_ffn`
//!   computes these two families.
//!
//! Llama 3.x's `rope_freqs.weight` divides each pair's frequency by its factor, and linear
//! `rope.scaling` scales positions, as llama.cpp does. Refused rather than run wrong: other
//! RoPE scaling types, partial rotary dimensions, experts without a gate tensor, Qwen2-MoE.
//! Positions past the built context are an error, not a panic.
//!
//! The project's `gguf:fixture:llama` writes `attn_q` / `attn_k` without llama.cpp's
//! permutation (seeded weights, no HF model to match), so tests compare this model with
//! candle-transformers' on the same file (tests/llama_batching.rs), not with the safetensors
//! fixture. Shared with the project's Gemma 3: the quantized row-wise embedding and the mask
//! builder. Each sequence's cache is candle's `KvCache`, preallocated for the built context on
//! its first token (as Gemma 3's global layers).

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_transformers::quantized_nn::RmsNorm;

use super::gemma3_quantized::{attention_mask, Embedding, Proj};
use super::quantized_parts::{
    forward_start, last_logits, norm, note_append, open_gguf, read_projections, residual,
    step_input, RopeTables, SingleSeq, PROJECTION_NAMES,
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
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Llama => "llama",
            Kind::Qwen2 => "qwen2",
            Kind::Qwen3 => "qwen3",
            Kind::Qwen3Moe => "qwen3moe",
            Kind::Phi3 => "phi3",
        }
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

/// The model's shape and settings, from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub kind: Kind,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub rms_norm_eps: f64,
    pub rope_base: f32,
    /// Positions are multiplied by this (`rope.scaling.type` linear: 1 / factor; else 1).
    pub rope_freq_scale: f32,
    /// `context_length` of the metadata (0 when absent).
    pub max_context: usize,
    /// The mixture of experts every block's MLP is (None: a dense SwiGLU).
    pub experts: Option<Experts>,
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
            other => {
                bail!("GGUF architecture `{other}` is not llama, qwen2, qwen3, qwen3moe or phi3")
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
        let heads = u("attention.head_count")?;
        let hidden = u("embedding_length")?;
        let kv_heads = opt_u("attention.head_count_kv").unwrap_or(heads);
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
        if let Some(r) = opt_u("rope.dimension_count").filter(|r| *r != head_dim) {
            bail!("rope.dimension_count {r} is not the head dimension {head_dim} (partial rotary embeddings are not implemented)");
        }
        if let Some(t) = ["rope_factors_long.weight", "rope_factors_short.weight"]
            .into_iter()
            .find(|t| ct.tensor_infos.contains_key(*t))
        {
            bail!("the file has `{t}` (LongRoPE, Phi-3 128k / Phi-3.5): not implemented here");
        }
        let experts = match opt_u("expert_count").unwrap_or(0) {
            0 if kind != Kind::Qwen3Moe => None,
            count => {
                let used = opt_u("expert_used_count").unwrap_or(0);
                if matches!(kind, Kind::Qwen2 | Kind::Phi3) {
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
        Ok(Config {
            kind,
            layers: u("block_count")?,
            heads,
            kv_heads,
            head_dim,
            hidden,
            rms_norm_eps: need("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            rope_base: get("rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.),
            rope_freq_scale,
            max_context: opt_u("context_length").unwrap_or(0),
            experts,
        })
    }
}

/// RoPE tables for `positions` positions, applied in the family's layout.
#[derive(Debug, Clone)]
struct Rope {
    tables: RopeTables,
    /// Pairs `2i, 2i+1` (Llama, llama.cpp's NORM) rather than `i, i + d/2` (NeoX, Qwen3).
    interleaved: bool,
}

impl Rope {
    /// `factors`: llama.cpp's per-pair frequency divisors (`rope_freqs.weight`, Llama 3.x),
    /// one per rotated pair; `scale` multiplies every frequency (linear scaling: 1 / factor).
    fn new(
        cfg: &Config,
        factors: Option<&[f32]>,
        positions: usize,
        interleaved: bool,
        dev: &Device,
    ) -> Result<Self> {
        let (head_dim, base) = (cfg.head_dim, cfg.rope_base);
        if let Some(f) = factors {
            if f.len() != head_dim / 2 {
                bail!(
                    "rope_freqs.weight has {} factors, the head dimension {head_dim} needs {}",
                    f.len(),
                    head_dim / 2
                );
            }
            if let Some(bad) = f.iter().find(|x| !x.is_finite() || **x <= 0.0) {
                bail!("rope_freqs.weight holds {bad}: every factor must be finite and positive");
            }
        }
        let inv: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| {
                let ff = factors.map_or(1.0, |f| f[i / 2]);
                cfg.rope_freq_scale / (base.powf(i as f32 / head_dim as f32) * ff)
            })
            .collect();
        Ok(Self {
            tables: RopeTables::new(&inv, positions, dev)?,
            interleaved,
        })
    }

    /// `x`: (b, heads, len, head_dim), contiguous, at positions `pos..pos+len`.
    fn apply(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        self.tables.apply(x, pos, self.interleaved)
    }
}

/// Where a mixture-of-experts layer keeps its router among its weights ([`Layer::w`]); the
/// experts' gate, up and down follow, three per expert ([`expert_proj`]).
const ROUTER: usize = 4;

/// The index in [`Layer::w`] of expert `e`'s gate (`which` 0), up (1) or down (2).
fn expert_proj(e: usize, which: usize) -> usize {
    ROUTER + 1 + 3 * e + which
}

/// Which tensor weight `j` of a layer is, for the op trace.
fn proj_name(moe: bool, j: usize) -> &'static str {
    match j {
        _ if !moe || j < ROUTER => PROJECTION_NAMES[j],
        ROUTER => "ffn_gate_inp",
        _ => ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"][(j - ROUTER - 1) % 3],
    }
}

#[derive(Debug, Clone)]
struct Layer {
    /// q, k, v, o, then the MLP's gate, up and down ([`PROJECTION_NAMES`] order), or for a
    /// mixture of experts its router ([`ROUTER`]) and every expert's gate, up and down
    /// ([`expert_proj`]).
    w: Vec<QMatMul>,
    /// Qwen2's biases of q, k and v (None for Llama and Qwen3).
    qkv_bias: Option<[Tensor; 3]>,
    /// Qwen3's per-head RmsNorm of q and k (None for Llama).
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

/// The weights (shared by clones: quantized tensors are reference-counted).
#[derive(Debug, Clone)]
struct Weights {
    cfg: Config,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
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

/// Deliberately wrong variants of the model, for tests that must be able to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrong {
    /// Qwen3 without its per-head q/k RmsNorm (no effect on Llama, which has none).
    SkipQkNorm,
    /// RoPE in the other layout (NeoX for Llama, interleaved for Qwen2 / Qwen3).
    OtherRopeLayout,
    /// Qwen2 without its q/k/v biases.
    ZeroBias,
    /// Llama 3.x without its `rope_freqs.weight` frequency factors (plain RoPE).
    DropRopeFreqs,
    /// A mixture of experts weighting its k experts by their softmax probabilities as they
    /// are, not renormalised to sum to one (as a Qwen2-MoE-style `norm_topk_prob: false`).
    NoExpertRenorm,
}

/// The KV cache of one sequence: every layer's keys and values at this sequence's positions.
pub type SeqCache = super::quantized_parts::SeqCache<KvCache>;

/// One sequence's share of a batched step ([`super::batched::SeqStep`] over this model's cache).
pub type SeqStep<'a> = super::batched::SeqStep<'a, SeqCache>;

impl Weights {
    fn new_seq(&self) -> SeqCache {
        SeqCache::new(
            (0..self.layers.len())
                .map(|_| KvCache::new(2, self.context))
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
        let c = &self.cfg;
        let (x, spans) = step_input(seqs, self.layers.len(), self.context, &self.device)?;
        let total = x.dim(1)?;
        let mut h = traced!(
            "embedding",
            "token_embd rows",
            [e = self.embed, x],
            e.forward(x)
        )?;
        // Each sequence's causal mask over its own cache (None for a single token).
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
            .collect::<Result<Vec<_>>>()?;
        let (heads, kv_heads, hd) = (c.heads, c.kv_heads, c.head_dim);
        let rep = heads / kv_heads;
        let scale = 1.0 / (hd as f64).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            let a = norm("attn_norm", &layer.attn_norm, &h)?;
            let (q, k, v) = (mm(li, 0, &a)?, mm(li, 1, &a)?, mm(li, 2, &a)?);
            let (q, k, v) = match &layer.qkv_bias {
                Some([bq, bk, bv]) if self.wrong != Some(Wrong::ZeroBias) => (
                    traced!("add", "attn_q bias", [q, bq], q.broadcast_add(bq))?,
                    traced!("add", "attn_k, attn_v bias", [k, bk], k.broadcast_add(bk))?,
                    traced!("add", "attn_k, attn_v bias", [v, bv], v.broadcast_add(bv))?,
                ),
                _ => (q, k, v),
            };
            let q = q.reshape((1, total, heads, hd))?;
            let k = k.reshape((1, total, kv_heads, hd))?;
            let v = v.reshape((1, total, kv_heads, hd))?;
            let (q, k) = match &layer.qk_norm {
                Some((qn, kn)) if self.wrong != Some(Wrong::SkipQkNorm) => {
                    (norm("attn_q_norm", qn, &q)?, norm("attn_k_norm", kn, &k)?)
                }
                _ => (q, k),
            };
            let mut outs = Vec::with_capacity(seqs.len());
            for ((sq, &(start, len, pos)), mask) in seqs.iter_mut().zip(&spans).zip(&masks) {
                let q = q.narrow(1, start, len)?.transpose(1, 2)?;
                let q = traced!("copy", "q transpose", [q], q.contiguous())?;
                let k = k.narrow(1, start, len)?.transpose(1, 2)?;
                let k = traced!("copy", "k, v transpose", [k], k.contiguous())?;
                let v = v.narrow(1, start, len)?.transpose(1, 2)?;
                let v = traced!("copy", "k, v transpose", [v], v.contiguous())?;
                let q = self.rope.apply(&q, pos)?;
                let k = self.rope.apply(&k, pos)?;
                let cache = &mut sq.cache.layers[li];
                let (k, v) = op("kv_cache", || cache.append(&k, &v))
                    .inspect(|_| note_append(cache, &k, &v))?;
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
            let a = mm(li, 3, &out)?;
            h = residual(&a, &h)?;
            let x = norm("ffn_norm", &layer.ffn_norm, &h)?;
            let m = match c.experts {
                None => swiglu(&x, &|j, x| mm(li, 4 + j, x))?,
                Some(ex) => self.experts(li, ex, &x, mm)?,
            };
            h = residual(&m, &h)?;
        }
        for (sq, &(_, len, pos)) in seqs.iter_mut().zip(&spans) {
            sq.cache.pos = pos + len;
        }

        last_logits(&h, &spans, seqs.iter().map(|s| s.logits), |last| {
            let last = norm("output_norm", &self.norm, last)?;
            mm(self.layers.len(), 0, &last)
        })
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
}

/// A Phi-3 file's fused weights as the separate projections the rest of the model reads:
/// each block's `attn_qkv` (rows Q, K, V) as `attn_q`, `attn_k`, `attn_v`, and its `ffn_up`
/// (gate rows first, then up: HF's `gate_up_proj`) as `ffn_gate` and `ffn_up`
/// ([`super::gguf_read::split_fused_rows`]: byte ranges of the fused tensors, nothing copied).
/// A file with separate q/k/v or gate/up tensors is read as it is.
fn split_phi3(ct: &mut gguf_file::Content, cfg: &Config) -> Result<()> {
    let q = cfg.heads * cfg.head_dim;
    let kv = cfg.kv_heads * cfg.head_dim;
    for i in 0..cfg.layers {
        let n = |x: &str| format!("blk.{i}.{x}.weight");
        if ct.tensor_infos.contains_key(&n("attn_qkv")) {
            if ct
                .tensor_infos
                .contains_key(&format!("blk.{i}.attn_qkv.bias"))
            {
                bail!("the file has attention biases (blk.{i}.attn_qkv.bias), which phi3 does not have; this implementation does not apply them");
            }
            let parts = [(n("attn_q"), q), (n("attn_k"), kv), (n("attn_v"), kv)];
            super::gguf_read::split_fused_rows(ct, &n("attn_qkv"), &parts)?;
        }
        if !ct.tensor_infos.contains_key(&n("ffn_gate")) {
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

/// A SwiGLU MLP, `down(silu(gate(x)) * up(x))`, `w(j, x)` running its gate (0), up (1) and
/// down (2) projections.
fn swiglu(x: &Tensor, w: &dyn Fn(usize, &Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let gate = w(0, x)?;
    let gate = traced!("activation", "silu", [gate], candle_nn::ops::silu(gate))?;
    let up = w(1, x)?;
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
        let biased = cfg.kind == Kind::Qwen2;
        if !biased && ct.tensor_infos.contains_key("blk.0.attn_q.bias") {
            bail!("the file has attention biases (blk.0.attn_q.bias), which {} does not have; this implementation does not apply them", cfg.kind.name());
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
        if cfg.kind == Kind::Phi3 {
            split_phi3(&mut ct, &cfg)?;
        }
        if cfg.experts.is_some() {
            // Each expert as a 2-D tensor of its own (`blk.N.ffn_gate.E.weight`), at its
            // offset in the stacked `ffn_gate_exps`: one quantized matmul per expert.
            super::gguf_read::split_stacked_experts(&mut ct)?;
        }
        let (mut get, (embed, norm, output)) = open_gguf(&ct, reader, device, context, eps)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let qkv_bias = if biased {
                let mut b = |n: &str| -> Result<Tensor> {
                    get(&format!("blk.{i}.{n}.bias"))?
                        .dequantize(device)?
                        .to_dtype(DType::F32)
                };
                Some([b("attn_q")?, b("attn_k")?, b("attn_v")?])
            } else {
                None
            };
            let w = match cfg.experts {
                None => read_projections(&mut get, i)?.into(),
                Some(ex) => {
                    let mut w = Vec::with_capacity(ROUTER + 1 + 3 * ex.count);
                    let mut q = |n: String| QMatMul::from_qtensor(get(&n)?);
                    for n in &PROJECTION_NAMES[..ROUTER] {
                        w.push(q(format!("blk.{i}.{n}.weight"))?);
                    }
                    w.push(q(format!("blk.{i}.ffn_gate_inp.weight"))?);
                    for e in 0..ex.count {
                        for n in &PROJECTION_NAMES[ROUTER..] {
                            w.push(q(format!("blk.{i}.{n}.{e}.weight"))?);
                        }
                    }
                    w
                }
            };
            let mut t = |n: &str| get(&format!("blk.{i}.{n}.weight"));
            let mut n = |name: &str| -> Result<RmsNorm> { RmsNorm::from_qtensor(t(name)?, eps) };
            let qk_norm = match cfg.kind {
                Kind::Qwen3 | Kind::Qwen3Moe => Some((n("attn_q_norm")?, n("attn_k_norm")?)),
                Kind::Llama | Kind::Qwen2 | Kind::Phi3 => None,
            };
            layers.push(Layer {
                w,
                qkv_bias,
                qk_norm,
                attn_norm: n("attn_norm")?,
                ffn_norm: n("ffn_norm")?,
            });
        }
        let rope = Rope::new(
            &cfg,
            factors.as_deref(),
            context,
            cfg.kind == Kind::Llama,
            device,
        )?;
        let w = Weights {
            factors,
            cfg,
            embed,
            layers,
            norm,
            output,
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

    /// Test side: the model made deliberately wrong in one way (to show that a comparison
    /// against another implementation can fail).
    pub fn wrong(mut self, w: Wrong) -> Result<Self> {
        match w {
            Wrong::OtherRopeLayout => self.w.rope.interleaved = !self.w.rope.interleaved,
            Wrong::DropRopeFreqs => {
                let il = self.w.rope.interleaved;
                self.w.rope = Rope::new(&self.w.cfg, None, self.w.context, il, &self.w.device)?;
            }
            Wrong::SkipQkNorm | Wrong::ZeroBias | Wrong::NoExpertRenorm => {}
        }
        self.w.wrong = Some(w);
        Ok(self)
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
        let moe = w.cfg.experts.is_some();
        let mm = |li: usize, j: usize, x: &Tensor| {
            let wt = w.weight(li, j);
            if li == w.layers.len() {
                traced!("lm_head", "output", [wt, x], wt.forward(x))
            } else {
                traced!("matmul", proj_name(moe, j), [wt, x], wt.forward(x))
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
/// [`Batched::new`] measures that for every weight and runs a lone row of such a weight as two.
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
    /// weights need a lone row run as two.
    pub fn new(model: ModelWeights) -> Result<Self> {
        let w = model.w;
        let dev = w.device.clone();
        let mut projs = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let mut p = Vec::with_capacity(l.w.len());
            for x in &l.w {
                p.push(Proj::new(x, false, &dev)?);
            }
            projs.push(p);
        }
        let output = Proj::new(&w.output, false, &dev)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
