//! Deliberately wrong variants of the project's GGUF decoder (test side): the negative
//! controls of tests/families.rs and the held-out deviations of the KLD gate's measured
//! sensitivity (tests/sensitivity.rs, docs/quality-sensitivity.md). None of them is in any
//! model the suite runs: `wrong` is None there.

use candle_core::{DType, Result, Tensor, D};

use super::{ModelWeights, Norm, Rope, Weights};

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
    /// Layer 0's attention-norm weights x1.02.
    NormL0Up2Pct,
    /// Layer 0's attention output of head 0 zeroed (before the output projection).
    HeadZero,
    /// The SwiGLU's gate and up projections exchanged (`down(silu(up) * gate)`).
    GateUpSwap,
    /// Layer 0's MLP output zeroed in hidden channel 0.
    MlpChannelZero,
}

impl Wrong {
    /// The held-out deviations, in the sensitivity table's order.
    pub const HELD_OUT: [Wrong; 8] = [
        Wrong::AttnScaleUp1Pct,
        Wrong::RopeBaseUpHalfPct,
        Wrong::RopeF16,
        Wrong::EpsTimes10,
        Wrong::NormL0Up2Pct,
        Wrong::HeadZero,
        Wrong::GateUpSwap,
        Wrong::MlpChannelZero,
    ];

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
            Wrong::NormL0Up2Pct => "layer 0 attention-norm weights x1.02",
            Wrong::HeadZero => "layer 0 head 0 output zeroed",
            Wrong::GateUpSwap => "gate and up exchanged",
            Wrong::MlpChannelZero => "layer 0 MLP output channel 0 zeroed",
        }
    }
}

impl Weights {
    /// `n` over `x` (layer `li`'s attention norm; `usize::MAX` for another), as a held-out
    /// deviation changes it: [`Wrong::EpsTimes10`] (an RMS norm's output rescaled to what
    /// epsilon x10 gives: `y * sqrt((ms + eps) / (ms + 10 eps))`, `ms` each row's mean square)
    /// and [`Wrong::NormL0Up2Pct`] (layer 0's output x1.02: its weights x1.02).
    pub(super) fn normed(
        &self,
        n: &Norm,
        what: &'static str,
        x: &Tensor,
        li: usize,
    ) -> Result<Tensor> {
        let y = n.forward(what, x)?;
        match self.wrong {
            Some(Wrong::EpsTimes10) if matches!(n, Norm::Rms(_)) => {
                let eps = self.cfg.rms_norm_eps;
                let ms = x.to_dtype(DType::F32)?.sqr()?.mean_keepdim(D::Minus1)?;
                let f = ((&ms + eps)? / (&ms + 10.0 * eps)?)?.sqrt()?;
                Ok(y.broadcast_mul(&f.to_dtype(y.dtype())?)?)
            }
            Some(Wrong::NormL0Up2Pct) if li == 0 => Ok((y * 1.02)?),
            _ => Ok(y),
        }
    }
}

impl ModelWeights {
    /// Test side: the model made deliberately wrong in one way (to show that a comparison
    /// against another implementation can fail).
    pub fn wrong(mut self, w: Wrong) -> Result<Self> {
        match w {
            Wrong::OtherRopeLayout => self.w.rope.interleaved = !self.w.rope.interleaved,
            Wrong::DropRopeFreqs => {
                let il = self.w.rope.interleaved;
                self.w.rope = Rope::new(&self.w.cfg, None, self.w.context, il, &self.w.device)?;
            }
            Wrong::RopeBaseUpHalfPct => {
                let il = self.w.rope.interleaved;
                let mut cfg = self.w.cfg.clone();
                cfg.rope_base *= 1.005;
                self.w.rope = Rope::new(
                    &cfg,
                    self.w.factors.as_deref(),
                    self.w.context,
                    il,
                    &self.w.device,
                )?;
            }
            Wrong::RopeF16 => self.w.rope.tables = self.w.rope.tables.rounded_to_f16()?,
            Wrong::SkipQkNorm
            | Wrong::ZeroBias
            | Wrong::NoExpertRenorm
            | Wrong::SkipPostNorms
            | Wrong::ReverseConvTaps
            | Wrong::EpsTimes10
            | Wrong::NormL0Up2Pct
            | Wrong::AttnScaleUp1Pct
            | Wrong::HeadZero
            | Wrong::GateUpSwap
            | Wrong::MlpChannelZero => {}
        }
        self.w.wrong = Some(w);
        Ok(self)
    }
}
