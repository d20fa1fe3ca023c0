//! Training PSANN-LM: mean cross-entropy over all positions, AdamW with the spec's defaults
//! (betas 0.9/0.95, eps 1e-8, weight decay 0.01 on every parameter), global gradient-norm
//! clipping at 1.0, and optional per-block gradient checkpointing.
//!
//! Checkpointing (candle has none): the forward keeps only each block's input, detached;
//! the backward re-runs one block at a time from its saved input made a fresh variable, and
//! back-propagates the incoming gradient through it with the surrogate loss
//! `sum(output * grad_out)`, whose gradient w.r.t. the block's parameters and input is exactly
//! the chain rule's. Parameter gradients of every block land in one store. Embedding, final
//! norm and head are not checkpointed (as in the original).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::PsannLm;
use crate::error::Result;

#[derive(Debug, Clone, Copy)]
pub struct TrainConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub grad_checkpoint: bool,
}

impl Default for TrainConfig {
    /// The spec's TrainConfig defaults (lr 2e-4; the warm-up schedule is not modelled: a
    /// benchmark step's cost does not depend on the learning rate).
    fn default() -> Self {
        TrainConfig {
            lr: 2e-4,
            weight_decay: 0.01,
            grad_clip: 1.0,
            grad_checkpoint: false,
        }
    }
}

/// Mean cross-entropy of logits (B, T, V) against targets (B, T).
pub fn loss(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)
}

/// Loss and gradients of every parameter, with or without checkpointing.
pub fn grads(
    model: &PsannLm,
    ids: &Tensor,
    targets: &Tensor,
    checkpoint: bool,
) -> Result<(f32, GradStore)> {
    if !checkpoint {
        let l = loss(&model.forward(ids)?, targets)?;
        let g = l.backward()?;
        return Ok((l.to_scalar::<f32>()?, g));
    }
    let ctx = model.ctx(ids.dim(1)?)?;
    let x0 = model.embed(ids)?;
    let mut inputs: Vec<Tensor> = Vec::with_capacity(model.blocks.len());
    let mut x = x0.detach();
    for b in &model.blocks {
        inputs.push(x.clone());
        x = b.forward(&x, &ctx)?.detach();
    }
    let top = Var::from_tensor(&x)?;
    let l = loss(&model.head(top.as_tensor())?, targets)?;
    let mut store = l.backward()?;
    let mut g = store
        .remove(top.as_tensor())
        .expect("the head depends on its input");
    for (b, xin) in model.blocks.iter().zip(&inputs).rev() {
        let v = Var::from_tensor(xin)?;
        let y = b.forward(v.as_tensor(), &ctx)?;
        let part = (y * &g)?.sum_all()?.backward()?;
        g = part
            .get(v.as_tensor())
            .expect("a block depends on its input")
            .clone();
        merge(&mut store, &part, model);
    }
    let part = (x0 * &g)?.sum_all()?.backward()?;
    merge(&mut store, &part, model);
    Ok((l.to_scalar::<f32>()?, store))
}

fn merge(into: &mut GradStore, from: &GradStore, model: &PsannLm) {
    for (_, v) in &model.vars {
        if let Some(g) = from.get(v.as_tensor()) {
            into.insert(v.as_tensor(), g.clone());
        }
    }
}

/// Scales gradients so their global L2 norm is at most `max`; returns the norm before.
pub fn clip_grad_norm(store: &mut GradStore, model: &PsannLm, max: f64) -> Result<f64> {
    let mut sq = 0f64;
    for (_, v) in &model.vars {
        if let Some(g) = store.get(v.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if norm > max {
        let s = max / (norm + 1e-6);
        for (_, v) in &model.vars {
            if let Some(g) = store.get(v.as_tensor()).cloned() {
                store.insert(v.as_tensor(), (g * s)?);
            }
        }
    }
    Ok(norm)
}

pub struct Trainer {
    pub model: PsannLm,
    opt: AdamW,
    pub cfg: TrainConfig,
}

impl Trainer {
    pub fn new(model: PsannLm, cfg: TrainConfig) -> Result<Self> {
        let vars = model.vars.iter().map(|(_, v)| v.clone()).collect();
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: cfg.lr,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: cfg.weight_decay,
            },
        )?;
        Ok(Trainer { model, opt, cfg })
    }

    /// One optimizer step on a batch; returns the loss before the step.
    pub fn step(&mut self, ids: &Tensor, targets: &Tensor) -> Result<f32> {
        self.step_checked(ids, targets).map(|s| s.loss)
    }

    /// The optimizer's learning rate from now on (a schedule sets it before each step).
    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    /// One optimizer step with its stability signals: the loss, the global gradient norm
    /// before clipping, and, when either is NaN or infinite, the first tensor that is (a
    /// parameter, else a parameter's gradient, else the loss). A non-finite step is NOT
    /// applied: the parameters stay as they were.
    pub fn step_checked(&mut self, ids: &Tensor, targets: &Tensor) -> Result<StepStats> {
        let (l, mut g) = grads(&self.model, ids, targets, self.cfg.grad_checkpoint)?;
        let norm = clip_grad_norm(&mut g, &self.model, self.cfg.grad_clip)?;
        let mut stats = StepStats {
            loss: l,
            grad_norm: norm,
            non_finite: None,
        };
        if !l.is_finite() || !norm.is_finite() {
            stats.non_finite = Some(first_non_finite(&self.model, &g, l)?);
            return Ok(stats);
        }
        self.opt.step(&g)?;
        Ok(stats)
    }
}

/// What one checked step saw.
#[derive(Debug, Clone)]
pub struct StepStats {
    pub loss: f32,
    /// Global L2 norm of all gradients before clipping.
    pub grad_norm: f64,
    /// The first non-finite tensor, e.g. `parameter blocks.0.mlp.fc1.weight`, `gradient of
    /// lm_head.weight` or `loss`; None when the step was finite (and applied).
    pub non_finite: Option<String>,
}

fn finite(t: &Tensor) -> Result<bool> {
    let s = t
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    // A sum is finite only if no element is NaN or infinite (or the finite ones overflow,
    // which a real parameter or gradient tensor does not).
    Ok(s.is_finite())
}

/// Names the first non-finite tensor: a parameter, else a gradient, else the loss.
pub fn first_non_finite(model: &PsannLm, g: &GradStore, loss: f32) -> Result<String> {
    for (name, v) in &model.vars {
        if !finite(v.as_tensor())? {
            return Ok(format!("parameter {name}"));
        }
    }
    for (name, v) in &model.vars {
        if let Some(t) = g.get(v.as_tensor()) {
            if !finite(t)? {
                return Ok(format!("gradient of {name}"));
            }
        }
    }
    Ok(format!("loss ({loss})"))
}
