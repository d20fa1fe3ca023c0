//! The layout record of a family: what the project's generic quantized decoder
//! ([`super`]) reads to run a file of that family. The decoder never matches a family's name
//! or identity; every difference between the Llama-shaped families is a field here, stated
//! once in the family's own file (`GgufFamily::layout`, [`crate::models::families`]), which
//! hands the decoder a [`FamilyLayout`]: the layout with the two facts the GGUF validation
//! also needs (the epsilon key, and whether RoPE may rotate only part of each head), taken
//! from the family's spec rather than repeated here.

/// The norms of the family's blocks and its final norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// RmsNorm (`<norm>.weight`).
    Rms,
    /// LayerNorm with a bias (`<norm>.weight`, `<norm>.bias`: Phi-2).
    LayerWithBias,
}

/// Which dimensions RoPE pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `2i, 2i+1`: llama.cpp's `LLAMA_ROPE_TYPE_NORM` (Llama, GLM-4).
    Interleaved,
    /// Pairs `i, i + d/2`: llama.cpp's `LLAMA_ROPE_TYPE_NEOX`.
    NeoX,
}

/// Which projection biases the family's files carry: none (a file with one is refused), q/k/v
/// (required, or read where the file has them), or every projection's (q/k/v, the attention
/// output, the MLP's up and down). The norms' biases come with [`NormKind::LayerWithBias`],
/// the logits' with [`Layout::output_bias`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Biases {
    None,
    Qkv { required: bool },
    Every,
}

impl Biases {
    /// Whether the decoder reads the projection bias `name` (`blk.N.<proj>.bias`).
    pub fn reads(self, name: &str) -> bool {
        let proj = name
            .strip_suffix(".bias")
            .and_then(|n| n.rsplit('.').next())
            .unwrap_or_default();
        let block = name.starts_with("blk.");
        match self {
            Biases::None => false,
            Biases::Qkv { .. } => {
                block && matches!(proj, "attn_q" | "attn_k" | "attn_v" | "attn_qkv")
            }
            Biases::Every => {
                block
                    && matches!(
                        proj,
                        "attn_q"
                            | "attn_k"
                            | "attn_v"
                            | "attn_qkv"
                            | "attn_output"
                            | "ffn_up"
                            | "ffn_down"
                    )
            }
        }
    }
}

/// A dense block's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
    /// `down(gelu(up(x)))`, tanh approximation (Phi-2).
    Gelu,
}

/// Whether a file of the family may (or must) have a mixture of experts (`expert_count`) in
/// place of every block's SwiGLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertsRule {
    /// A file with `expert_count` > 0 is refused.
    Never,
    /// Dense or Mixtral-style (Llama).
    Optional,
    /// Every block is a mixture of experts (Qwen3-MoE).
    Required,
}

/// What the generic decoder reads of a family (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub norm: NormKind,
    pub rope: RopeLayout,
    /// Each head of q and k RmsNormed before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    pub biases: Biases,
    pub mlp: MlpKind,
    /// `ffn_up` may hold the gate rows, then the up rows (HF's `gate_up_proj`: Phi-3, GLM-4).
    pub fused_gate_up: bool,
    pub experts: ExpertsRule,
    /// RmsNorms of the attention's and the MLP's outputs before each residual add
    /// (`post_attention_norm`, `post_ffw_norm`: GLM-4).
    pub post_norms: bool,
    /// Attention and MLP in parallel from the block's one norm, `h += attn(x) + mlp(x)`, no
    /// `ffn_norm` (Phi-2).
    pub parallel: bool,
    /// The final norm's tensor name without `.weight` (`output_norm`; LFM2's
    /// `token_embd_norm`).
    pub final_norm: &'static str,
    /// `output.bias` added to the logits (Phi-2).
    pub output_bias: bool,
    /// Blocks may be gated short convolutions instead of attention, per-block
    /// `attention.head_count_kv` 0 (LFM2).
    pub short_conv: bool,
}

impl Layout {
    /// Whether the decoder reads the bias tensor `name`: a projection's ([`Biases::reads`]), a
    /// LayerNorm's (`blk.N.attn_norm.bias`, `blk.N.ffn_norm.bias` where the block has that
    /// norm, the final norm's) or the logits' (`output.bias`). A file with any other bias is
    /// refused at load: it describes a model the decoder would not compute.
    pub fn reads_bias(&self, name: &str) -> bool {
        let norm = self.norm == NormKind::LayerWithBias && {
            let block_norm = name
                .strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .map(|(_, r)| r);
            matches!(block_norm, Some("attn_norm.bias"))
                || (!self.parallel && matches!(block_norm, Some("ffn_norm.bias")))
                || name.strip_suffix(".bias") == Some(self.final_norm)
        };
        self.biases.reads(name) || norm || (self.output_bias && name == "output.bias")
    }
}

/// A family as the decoder receives it ([`crate::models::families`]' `GgufFamily::decoder`):
/// its layout, and from its spec the epsilon key and the rotary rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyLayout {
    /// `general.architecture`, the prefix of its metadata keys (and messages).
    pub arch: &'static str,
    pub layout: Layout,
    /// The norms' epsilon key after `<arch>.` (`attention.layer_norm_rms_epsilon`, or
    /// `attention.layer_norm_epsilon` for LayerNorms).
    pub eps_key: &'static str,
    /// Whether `rope.dimension_count` may be less than the head (the rest passes through).
    pub partial_rotary: bool,
}
