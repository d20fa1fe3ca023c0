//! A file's shape and settings, read from its GGUF metadata through its family's record
//! ([`FamilyLayout`]: the [`Layout`] the decoder runs, its spec's epsilon key and rotary
//! rule).

use candle_core::quantized::gguf_file;
use candle_core::{bail, Result};

use super::layout::{ExpertsRule, FamilyLayout, Layout};

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
    /// `general.architecture` (messages and labels only: the decoder reads [`Config::layout`]).
    pub arch: &'static str,
    /// The family's layout record ([`crate::models::families`]).
    pub layout: Layout,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Dimensions of each head RoPE rotates (`rope.dimension_count`): the whole head, or
    /// the first ones where the family's spec allows partial rotary (GLM-4, Phi-2).
    pub rot: usize,
    pub hidden: usize,
    /// The norms' epsilon (the family spec's key: `attention.layer_norm_rms_epsilon`;
    /// Phi-2's LayerNorms: `attention.layer_norm_epsilon`).
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
    /// `fam`: the family of the file's `general.architecture` (a file of another is refused).
    pub fn from_gguf(ct: &gguf_file::Content, fam: &FamilyLayout) -> Result<Config> {
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != fam.arch {
            bail!("GGUF architecture `{arch}` given as a {} file", fam.arch);
        }
        let (a, layout) = (fam.arch, fam.layout);
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
                if !layout.short_conv {
                    bail!("{a}.attention.head_count_kv is a per-block array: only a family with convolution blocks (lfm2) has one here");
                }
                let per_block = per_block
                    .iter()
                    .map(|v| crate::models::tokenizers::gguf::as_u32(v).map(|x| x as usize))
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
        if rot != head_dim && !fam.partial_rotary {
            bail!("rope.dimension_count {rot} is not the head dimension {head_dim} ({a} rotates whole heads, as llama.cpp runs it: partial rotary embeddings are for the families whose spec allows them)");
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
            0 if layout.experts != ExpertsRule::Required => None,
            count => {
                let used = opt_u("expert_used_count").unwrap_or(0);
                if layout.experts == ExpertsRule::Never {
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
        let eps_key = fam.eps_key;
        let rms_norm_eps = need(eps_key)?.to_f32()? as f64;
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            bail!("{a}.{eps_key} is {rms_norm_eps}: it must be finite and non-negative");
        }
        Ok(Config {
            arch: a,
            layout,
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
