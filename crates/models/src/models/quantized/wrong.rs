//! Deliberately wrong variants of the project's GGUF decoders (test side): the negative
//! controls of tests/families.rs and the deviations of the KLD gate's measured sensitivity
//! (tests/sensitivity.rs, docs/quality-sensitivity.md, docs/quality-full-precision.md). The
//! generic decoder ([`super::llama`]) takes every one; Gemma 3's ([`super::gemma3`]) takes
//! the table's ([`Wrong::HELD_OUT`], [`Wrong::CONTROLS_LISTED`]) and refuses the others. None
//! of them is in any model the suite runs: `wrong` is None there.

use candle_core::{DType, Result, Tensor, D};

/// Deliberately wrong variants of the model, for tests that must be able to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrong {
    /// Without the per-head q/k RmsNorm (Qwen3, Qwen3-MoE, LFM2; no effect on the others).
    SkipQkNorm,
    /// RoPE in the other layout (NeoX for Llama and GLM-4, interleaved for the others).
    OtherRopeLayout,
    /// Without the projections' biases (Qwen2's, GLM-4's q/k/v; Phi-2's every one).
    ZeroBias,
    /// Llama 3.x without its `rope_freqs.weight` frequency factors (plain RoPE).
    DropRopeFreqs,
    /// A mixture of experts weighting its k experts by their softmax probabilities as they
    /// are, not renormalised to sum to one (as a Qwen2-MoE-style `norm_topk_prob: false`).
    NoExpertRenorm,
    /// GLM-4 without its norms after attention and MLP (a Llama-style block).
    SkipPostNorms,
    /// LFM2's convolution taps in the other order (the newest input weighted by the oldest
    /// tap: a convolution where a cross-correlation is meant).
    ReverseConvTaps,
    // Held-out deviations (issue 61 item 4): small, plausible bugs no fixture was shaped
    // against, for the measured sensitivity table (docs/quality.md).
    /// The attention scores scaled by 1.01/sqrt(head_dim).
    AttnScaleUp1Pct,
    /// RoPE base (`rope.freq_base`) 0.5% higher.
    RopeBaseUpHalfPct,
    /// RoPE's cos/sin tables rounded to f16 (candle's `quantized_qwen3`'s deviation).
    RopeF16,
    /// Every RMS norm's epsilon x10.
    EpsTimes10,
    /// Layer 0's attention-norm weights x1.02 (Gemma 3: its post-attention norm's, since
    /// Gemma 3 renormalises the attention norm's scale away: `gemma3::ModelWeights`).
    NormL0Up2Pct,
    /// Layer 0's attention output of head 0 zeroed (before the output projection).
    HeadZero,
    /// The SwiGLU's gate and up projections exchanged (`down(silu(up) * gate)`).
    GateUpSwap,
    /// Layer 0's MLP output zeroed in hidden channel 0.
    MlpChannelZero,
    /// Every query reads the keys and values one position off: key and value `j` are those
    /// of position `j - 1` (position 0's repeated), so a position never sees its own and
    /// sees the one before it twice (an off-by-one in the cache read).
    KvOneOff,
}

impl Wrong {
    /// The held-out deviations, in the sensitivity table's order.
    pub const HELD_OUT: [Wrong; 9] = [
        Wrong::AttnScaleUp1Pct,
        Wrong::RopeBaseUpHalfPct,
        Wrong::RopeF16,
        Wrong::EpsTimes10,
        Wrong::NormL0Up2Pct,
        Wrong::HeadZero,
        Wrong::GateUpSwap,
        Wrong::MlpChannelZero,
        Wrong::KvOneOff,
    ];

    /// The deviations the issue lists that are not held out (the fixtures were shaped against
    /// them as negative controls): the sensitivity table's rows after [`Wrong::HELD_OUT`].
    pub const CONTROLS_LISTED: [Wrong; 1] = [Wrong::SkipQkNorm];

    /// What the deviation is, in the table's words.
    pub fn describe(self) -> &'static str {
        match self {
            Wrong::SkipQkNorm => "q/k norms skipped",
            Wrong::OtherRopeLayout => "RoPE in the other pair layout",
            Wrong::ZeroBias => "projection biases dropped",
            Wrong::DropRopeFreqs => "rope_freqs factors dropped",
            Wrong::NoExpertRenorm => "expert weights not renormalised",
            Wrong::SkipPostNorms => "post-norms skipped",
            Wrong::ReverseConvTaps => "convolution taps reversed",
            Wrong::AttnScaleUp1Pct => "attention scale +1%",
            Wrong::RopeBaseUpHalfPct => "RoPE base +0.5%",
            Wrong::RopeF16 => "RoPE tables in f16",
            Wrong::EpsTimes10 => "RMS epsilon x10",
            Wrong::NormL0Up2Pct => {
                "layer 0 attention-norm weights x1.02 (Gemma 3: its post-attention norm)"
            }
            Wrong::HeadZero => "layer 0 head 0 output zeroed",
            Wrong::GateUpSwap => "gate and up exchanged",
            Wrong::MlpChannelZero => "layer 0 MLP output channel 0 zeroed",
            Wrong::KvOneOff => "KV cache read one position off",
        }
    }
}

/// An RMS norm's output `y` of `x` rescaled to what epsilon x10 gives ([`Wrong::EpsTimes10`]):
/// `y * sqrt((ms + eps) / (ms + 10 eps))`, `ms` each row's mean square.
pub fn eps_times_10(y: &Tensor, x: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.to_dtype(DType::F32)?.sqr()?.mean_keepdim(D::Minus1)?;
    let f = ((&ms + eps)? / (&ms + 10.0 * eps)?)?.sqrt()?;
    y.broadcast_mul(&f.to_dtype(y.dtype())?)
}

/// `t` (b, heads, keys, head_dim) read one position off ([`Wrong::KvOneOff`]): entry `j` is
/// entry `j - 1`'s, entry 0 its own.
pub fn one_position_off(t: &Tensor) -> Result<Tensor> {
    let keys = t.dim(2)?;
    if keys < 2 {
        return Ok(t.clone());
    }
    Tensor::cat(&[t.narrow(2, 0, 1)?, t.narrow(2, 0, keys - 1)?], 2)?.contiguous()
}

/// `out` (b, rows, heads * head_dim) with head 0's `head_dim` channels zeroed
/// ([`Wrong::HeadZero`]).
pub fn head_zero(out: &Tensor, heads: usize, hd: usize) -> Result<Tensor> {
    let keep: Vec<f32> = (0..heads * hd).map(|i| (i >= hd) as u8 as f32).collect();
    out.broadcast_mul(&Tensor::new(keep, out.device())?.to_dtype(out.dtype())?)
}

/// `m` (b, rows, hidden) with channel 0 zeroed ([`Wrong::MlpChannelZero`]).
pub fn channel_zero(m: &Tensor) -> Result<Tensor> {
    let hidden = m.dim(2)?;
    let keep: Vec<f32> = (0..hidden).map(|i| (i > 0) as u8 as f32).collect();
    m.broadcast_mul(&Tensor::new(keep, m.device())?.to_dtype(m.dtype())?)
}
