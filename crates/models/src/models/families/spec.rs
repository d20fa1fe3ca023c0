//! The vocabulary of a family's spec: what llama.cpp's loader expects of a file of the
//! architecture (one [`ArchSpec`] per family, `GgufFamily::spec`: its keys, tensors and
//! shapes), and the parts several families share. The GGUF validation
//! ([`crate::models::families::check`]) checks files against it.

/// llama.cpp's LLAMA_MAX_LAYERS.
pub const MAX_LAYERS: u64 = 512;
/// llama.cpp's LLAMA_MAX_EXPERTS.
pub const MAX_EXPERTS: u64 = 1024;
/// The largest `context_length` accepted (2^24 positions; llama.cpp has no bound, but the
/// RoPE tables and caches an implementation builds grow with it).
pub const MAX_CONTEXT: u64 = 1 << 24;

// ---------------------------------------------------------------------------------------------
// The architecture table

/// How llama.cpp reads a hyper-parameter (its `get_key` wants exactly this GGUF type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    U32,
    F32,
    /// A u32, or an array of u32 with one entry per block (`get_key_or_arr`; lfm2's
    /// `head_count_kv`, 0 for a convolution block).
    U32OrPerLayer,
}

/// The range a hyper-parameter must lie in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// An integer in lo..=hi.
    Int(u64, u64),
    /// A finite float in (lo, hi].
    Float(f64, f64),
}

#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// After `<arch>.`.
    pub key: &'static str,
    pub kind: Kind,
    /// Absent is an error (llama.cpp's, or the implementation's that runs the arch).
    pub required: bool,
    pub range: Range,
}

pub(crate) const fn key(key: &'static str, kind: Kind, required: bool, range: Range) -> KeySpec {
    KeySpec {
        key,
        kind,
        required,
        range,
    }
}

/// A dimension of an expected tensor, from the hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum D {
    Embd,
    Vocab,
    /// key_length x head_count
    Q,
    /// key_length x head_count_kv
    K,
    /// value_length x head_count_kv
    V,
    /// Q + K + V (a fused QKV projection)
    Qkv,
    HeadK,
    Ff,
    /// 2 x feed_forward_length (phi3, glm4: gate and up fused)
    Ff2,
    FfExp,
    Expert,
    /// rope.dimension_count / 2
    Rot2,
    /// 3 x embedding_length (lfm2's short convolution input)
    Embd3,
    /// lfm2's `shortconv.l_cache`
    LCache,
}

impl D {
    /// Which hyper-parameters the dimension comes from, for the error line.
    pub(crate) fn source(self, a: &str) -> String {
        match self {
            D::Embd => format!("{a}.embedding_length"),
            D::Vocab => "the vocabulary (tokenizer.ggml.tokens)".into(),
            D::Q => format!("{a}.attention.key_length x {a}.attention.head_count"),
            D::K => format!("{a}.attention.key_length x {a}.attention.head_count_kv"),
            D::V => format!("{a}.attention.value_length x {a}.attention.head_count_kv"),
            D::Qkv => format!("({a}.attention.head_count + 2 x {a}.attention.head_count_kv) x {a}.attention.key_length"),
            D::HeadK => format!("{a}.attention.key_length"),
            D::Ff => format!("{a}.feed_forward_length"),
            D::Ff2 => format!("2 x {a}.feed_forward_length"),
            D::FfExp => format!("{a}.expert_feed_forward_length"),
            D::Expert => format!("{a}.expert_count"),
            D::Rot2 => format!("{a}.rope.dimension_count / 2"),
            D::Embd3 => format!("3 x {a}.embedding_length"),
            D::LCache => format!("{a}.shortconv.l_cache"),
        }
    }
}

/// Whether a tensor must be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Required,
    /// llama.cpp's TENSOR_NOT_REQUIRED: absent is fine, present must have its shape.
    Optional,
}

/// Which blocks a per-block tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    /// A tensor of the whole model (`token_embd.weight`).
    None,
    All,
    /// lfm2: blocks whose `head_count_kv` is non-zero.
    Attention,
    /// lfm2: blocks whose `head_count_kv` is zero (short convolution).
    Recurrent,
    /// Only when expert_count = 0 / > 0.
    Dense,
    Moe,
}

#[derive(Debug, Clone, Copy)]
pub struct TensorSpec {
    /// The name, `{}` standing for the block number.
    pub name: &'static str,
    pub shape: &'static [D],
    pub need: Need,
    pub blocks: Blocks,
}

pub(crate) const fn t(
    name: &'static str,
    shape: &'static [D],
    need: Need,
    blocks: Blocks,
) -> TensorSpec {
    TensorSpec {
        name,
        shape,
        need,
        blocks,
    }
}

/// How a block's attention projections may come (llama.cpp's `create_tensor_qkv`): a fused
/// `attn_qkv.weight` or separate `attn_q/k/v.weight`, each with optional biases.
#[derive(Debug, Clone, Copy)]
pub struct QkvSpec {
    /// The widths of Q, K, V.
    pub q: D,
    pub k: D,
    pub v: D,
    /// Separate Q/K/V weights required when no fused one is there (phi3: neither is).
    pub required: bool,
    pub blocks: Blocks,
}

/// How a rope.dimension_count must relate to the head size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rot {
    /// llama.cpp refuses anything else for llama; the implementations here rotate the whole
    /// head for every other architecture they run too.
    EqualsHead,
    /// Partial rotary (phi2).
    AtMostHead,
}

/// One architecture: the hyper-parameters read and the tensors expected.
#[derive(Debug, Clone, Copy)]
pub struct ArchSpec {
    pub arch: &'static str,
    pub keys: &'static [KeySpec],
    /// The normalisation epsilon key (`attention.layer_norm_rms_epsilon`, or phi2's
    /// `attention.layer_norm_epsilon`).
    pub eps: &'static str,
    pub qkv: Option<QkvSpec>,
    pub tensors: &'static [TensorSpec],
    pub rot: Rot,
    /// Tensors (suffixes after `blk.N.`, or whole names) llama.cpp accepts for the arch but
    /// the project's implementations of it do not read: present, the file describes a model
    /// other than the one that would run, so it is refused.
    pub not_run: &'static [&'static str],
}

pub(crate) type B = Blocks;
pub(crate) const R: Need = Need::Required;
pub(crate) const O: Need = Need::Optional;

pub(crate) const U: Kind = Kind::U32;
pub(crate) const F: Kind = Kind::F32;
pub(crate) const POS: Range = Range::Int(1, u32::MAX as u64);
pub(crate) const BASE: Range = Range::Float(1.0, 1e10);

/// Keys every architecture here reads (llama.cpp's `load_hparams`).
pub const COMMON_KEYS: &[KeySpec] = &[
    key("context_length", U, true, Range::Int(1, MAX_CONTEXT)),
    key("embedding_length", U, true, POS),
    key("block_count", U, true, Range::Int(1, MAX_LAYERS)),
    key("feed_forward_length", U, true, POS),
    key("attention.head_count", U, true, POS),
    key("attention.key_length", U, false, POS),
    key("attention.value_length", U, false, POS),
    key("rope.dimension_count", U, false, POS),
    key("rope.freq_base", F, false, BASE),
    // 0 is llama.cpp's "no scaling" (any x > -tiny: zero or positive).
    key(
        "rope.scaling.factor",
        F,
        false,
        Range::Float(-f64::MIN_POSITIVE, 1e6),
    ),
    key("expert_count", U, false, Range::Int(0, MAX_EXPERTS)),
    key("expert_used_count", U, false, Range::Int(0, MAX_EXPERTS)),
    key("expert_feed_forward_length", U, false, POS),
];

pub(crate) const KV: KeySpec = key("attention.head_count_kv", U, false, POS);
pub(crate) const EPS: Range = Range::Float(0.0, 0.1);

pub(crate) const HEAD: &[TensorSpec] = &[
    t("token_embd.weight", &[D::Embd, D::Vocab], R, B::None),
    t("output_norm.weight", &[D::Embd], R, B::None),
    t("output.weight", &[D::Embd, D::Vocab], O, B::None),
];

pub(crate) const LLAMA_NOT_RUN: &[&str] = &[
    // `rope_freqs.weight` (Llama 3.x) is read by the project's implementation; the family
    // table (models::families) refuses it for candle-transformers' quantized_llama.
    "attn_qkv.weight",
    "attn_qkv.bias",
    "attn_q.bias",
    "attn_k.bias",
    "attn_v.bias",
    "attn_output.bias",
    "ffn_gate.bias",
    "ffn_down.bias",
    "ffn_up.bias",
];

/// The attention projections of every block (see [`QkvSpec`]).
pub(crate) const fn qkv(q: D, k: D, v: D, required: bool, blocks: Blocks) -> Option<QkvSpec> {
    Some(QkvSpec {
        q,
        k,
        v,
        required,
        blocks,
    })
}

/// A projection from and to the embedding width.
pub(crate) const SQUARE: &[D] = &[D::Embd, D::Embd];
/// lfm2's short convolution: its kernel (l_cache taps per channel) and input projection.
pub(crate) const CONV: &[D] = &[D::LCache, D::Embd];
pub(crate) const CONV_IN: &[D] = &[D::Embd, D::Embd3];

// The shapes of a mixture-of-experts block's router and experts (in, out, expert), the
// experts as wide as the dense FFN (llama) or `expert_feed_forward_length` (qwen3moe).
pub(crate) const ROUTER: &[D] = &[D::Embd, D::Expert];
pub(crate) const UP_EXPS: &[D] = &[D::Embd, D::Ff, D::Expert];
pub(crate) const DOWN_EXPS: &[D] = &[D::Ff, D::Embd, D::Expert];
pub(crate) const UP_EXPS_FF_EXP: &[D] = &[D::Embd, D::FfExp, D::Expert];
pub(crate) const DOWN_EXPS_FF_EXP: &[D] = &[D::FfExp, D::Embd, D::Expert];

// Per-block tensors that several architectures expect alike (required in every block).
pub(crate) const ATTN_NORM: TensorSpec = t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All);
pub(crate) const ATTN_OUT: TensorSpec = t("blk.{}.attn_output.weight", &[D::Q, D::Embd], R, B::All);
pub(crate) const ATTN_OUT_EMBD: TensorSpec = t("blk.{}.attn_output.weight", SQUARE, R, B::All);
pub(crate) const K_NORM: TensorSpec = t("blk.{}.attn_k_norm.weight", &[D::HeadK], R, B::All);
pub(crate) const Q_NORM: TensorSpec = t("blk.{}.attn_q_norm.weight", &[D::HeadK], R, B::All);
pub(crate) const POST_ATTN_NORM: TensorSpec =
    t("blk.{}.post_attention_norm.weight", &[D::Embd], R, B::All);
pub(crate) const FFN_NORM: TensorSpec = t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All);
pub(crate) const FFN_GATE: TensorSpec = t("blk.{}.ffn_gate.weight", &[D::Embd, D::Ff], R, B::All);
pub(crate) const FFN_DOWN: TensorSpec = t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All);
pub(crate) const FFN_UP: TensorSpec = t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::All);
pub(crate) const FFN_UP_FUSED: TensorSpec =
    t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff2], R, B::All);
pub(crate) const POST_FFW_NORM: TensorSpec =
    t("blk.{}.post_ffw_norm.weight", &[D::Embd], R, B::All);

impl ArchSpec {
    /// Whether some blocks are recurrent (lfm2's short convolutions: `head_count_kv` 0 there).
    pub fn has_recurrent_blocks(&self) -> bool {
        self.tensors.iter().any(|t| t.blocks == Blocks::Recurrent)
    }
    /// Whether the final norm is `token_embd_norm` in place of HEAD's `output_norm` (llama.cpp's
    /// LLM_TENSOR_OUTPUT_NORM_LFM2).
    pub fn final_norm_is_token_embd_norm(&self) -> bool {
        self.tensors
            .iter()
            .any(|t| t.name == "token_embd_norm.weight")
    }
}
