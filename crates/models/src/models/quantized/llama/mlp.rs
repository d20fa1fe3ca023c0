//! A block's MLP: SwiGLU, Phi-2's GELU MLP, or a mixture of experts of SwiGLUs.

use candle_core::{DType, Result, Tensor};

use super::{expert_proj, Experts, Mlp, Weights, Wrong, ROUTER};
use crate::models::quantized::wrong::channel_zero;
use modelbench_measure::traced;

impl Weights {
    /// Layer `li`'s MLP on `x` (1, rows, hidden), its weights from `at` in [`Layer::w`].
    pub(super) fn mlp(
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
                let gelu = self.gelu;
                let g = traced!("activation", "gelu (tanh)", [up], gelu.apply(up))?;
                proj(li, at + 1, &g)
            }
            Mlp::Experts(ex) => self.experts(li, ex, x, proj),
        }?;
        if li == 0 && self.wrong == Some(Wrong::MlpChannelZero) {
            return channel_zero(&m);
        }
        Ok(m)
    }

    /// Layer `li`'s mixture of experts on `x` (1, rows, hidden): the router's softmax comes to
    /// the host, which picks each row's top `ex.used` experts and weights
    /// ([`crate::models::moe::top_k_routing`], ties to the lower index), and each expert that got rows
    /// runs its SwiGLU once over them ([`crate::models::moe::dispatch`]).
    pub(super) fn experts(
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
        let routing = crate::models::moe::top_k_routing(&probs, ex.used, renorm);
        let out = crate::models::moe::dispatch(
            &x.reshape((rows, hidden))?,
            &routing,
            ex.count,
            &mut |e, r| swiglu(&r.unsqueeze(0)?, &|j, x| mm(li, expert_proj(e, j), x))?.squeeze(0),
        )?;
        out.reshape((1, rows, hidden))
    }
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
