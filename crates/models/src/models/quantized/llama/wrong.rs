//! The generic decoder made deliberately wrong ([`Wrong`], test side: the variants are
//! described in [`crate::models::quantized::wrong`]).

use candle_core::{Result, Tensor};

use super::{ModelWeights, Norm, Rope, Weights};
use crate::models::quantized::wrong::eps_times_10;
pub use crate::models::quantized::wrong::Wrong;

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
                eps_times_10(&y, x, self.cfg.rms_norm_eps)
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
            | Wrong::MlpChannelZero
            | Wrong::KvOneOff => {}
        }
        self.w.wrong = Some(w);
        Ok(self)
    }
}
