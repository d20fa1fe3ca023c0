//! A Mixture-of-Experts feed-forward block on candle (the Qwen3-MoE / Mixtral form):
//! router linear -> softmax -> top-k experts per token -> optional renormalisation of the k
//! weights -> gated SwiGLU experts -> weighted combine.
//!
//! Dispatch strategy: routing probabilities (T x E, small) come to the host, where the top-k
//! is picked with a deterministic tie-break (lower expert index first; candle has no topk op)
//! and tokens are grouped by expert. Each expert that received tokens then runs ONE batched
//! SwiGLU over exactly its rows (`index_select` gather), and the weighted results are added
//! back with one `index_add` scatter. Cost is proportional to the active parameters: for one
//! token (decode) that is k small GEMVs and nothing for the other E - k experts; for hundreds
//! of tokens each expert sees a dense (rows x hidden) GEMM of about T*k/E rows. The
//! alternative, running every expert densely on all tokens and masking, costs E/k times more
//! compute, and a per-token loop would issue T*k tiny matmuls.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear_no_bias, Linear, VarBuilder};
use modelbench_measure::traced;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::fill::Filler;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MoeConfig {
    pub hidden: usize,
    /// Per-expert intermediate size (`moe_intermediate_size` of a Qwen3-MoE config).
    pub expert_intermediate: usize,
    pub num_experts: usize,
    pub top_k: usize,
    /// Renormalise the k routing weights to sum to 1 (`norm_topk_prob`).
    pub norm_topk_prob: bool,
}

impl MoeConfig {
    /// A grid point: `num_experts` experts of `expert_intermediate`, top-k routing with the
    /// k weights renormalised (Qwen3-MoE's `norm_topk_prob: true`).
    pub fn new(
        hidden: usize,
        expert_intermediate: usize,
        num_experts: usize,
        top_k: usize,
    ) -> MoeConfig {
        MoeConfig {
            hidden,
            expert_intermediate,
            num_experts,
            top_k,
            norm_topk_prob: true,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_experts == 0 {
            return Err("the number of experts must be at least 1".into());
        }
        if self.top_k == 0 || self.top_k > self.num_experts {
            return Err(format!(
                "top-k {} must be in 1..={} (the number of experts)",
                self.top_k, self.num_experts
            ));
        }
        if self.hidden == 0 || self.expert_intermediate == 0 {
            return Err("hidden and expert sizes must be positive".into());
        }
        Ok(())
    }

    /// The config of a Qwen3-MoE config.json (the same keys the dense models use).
    pub fn from_qwen3_moe(c: &candle_transformers::models::qwen3_moe::Config) -> MoeConfig {
        MoeConfig {
            hidden: c.hidden_size,
            expert_intermediate: c.moe_intermediate_size,
            num_experts: c.num_experts,
            top_k: c.num_experts_per_tok,
            norm_topk_prob: c.norm_topk_prob,
        }
    }

    /// Parameters a token touches: router plus k experts.
    pub fn active_params(&self) -> u64 {
        (self.hidden * self.num_experts + self.top_k * 3 * self.hidden * self.expert_intermediate)
            as u64
    }

    /// FLOPs per token: router matmul plus k SwiGLU experts (2 FLOPs per multiply-add).
    pub fn flops_per_token(&self) -> u64 {
        2 * self.active_params()
    }
}

/// A gated SwiGLU MLP: down(silu(gate(x)) * up(x)).
#[derive(Debug, Clone)]
pub struct SwiGlu {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl SwiGlu {
    pub fn new(hidden: usize, inter: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(SwiGlu {
            gate: linear_no_bias(hidden, inter, vb.pp("gate_proj"))?,
            up: linear_no_bias(hidden, inter, vb.pp("up_proj"))?,
            down: linear_no_bias(inter, hidden, vb.pp("down_proj"))?,
        })
    }
}

impl Module for SwiGlu {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        self.down.forward(&(g * self.up.forward(x)?)?)
    }
}

/// Per token: its k experts and their weights, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub experts: Vec<Vec<usize>>,
    pub weights: Vec<Vec<f32>>,
}

/// Top-k of each row of routing probabilities, ties broken by the lower expert index.
pub fn top_k_routing(probs: &[Vec<f32>], k: usize, renormalise: bool) -> Routing {
    let mut experts = Vec::with_capacity(probs.len());
    let mut weights = Vec::with_capacity(probs.len());
    for row in probs {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        idx.truncate(k);
        let mut w: Vec<f32> = idx.iter().map(|&e| row[e]).collect();
        if renormalise {
            let s: f32 = w.iter().sum();
            w.iter_mut().for_each(|x| *x /= s);
        }
        experts.push(idx);
        weights.push(w);
    }
    Routing { experts, weights }
}

#[derive(Debug, Clone)]
pub struct MoeBlock {
    pub cfg: MoeConfig,
    router: Linear,
    experts: Vec<SwiGlu>,
}

impl MoeBlock {
    pub fn new(cfg: MoeConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(|e| {
            Error::knob(
                "MoE config",
                format!("{cfg:?}"),
                e,
                "top-k in 1..=experts, experts >= 1",
            )
        })?;
        let router = linear_no_bias(cfg.hidden, cfg.num_experts, vb.pp("gate"))?;
        let experts = (0..cfg.num_experts)
            .map(|i| {
                SwiGlu::new(
                    cfg.hidden,
                    cfg.expert_intermediate,
                    vb.pp(format!("experts.{i}")),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(MoeBlock {
            cfg,
            router,
            experts,
        })
    }

    /// A block with seeded weights.
    pub fn seeded(cfg: MoeConfig, seed: u64, dtype: DType, dev: &Device) -> Result<Self> {
        let vb = VarBuilder::from_backend(Box::new(Filler::seeded(seed)), dtype, dev.clone());
        MoeBlock::new(cfg, vb)
    }

    /// Routing of `x` (T, hidden).
    pub fn route(&self, x: &Tensor) -> Result<Routing> {
        let logits = self.router.forward(x)?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
        Ok(top_k_routing(
            &probs,
            self.cfg.top_k,
            self.cfg.norm_topk_prob,
        ))
    }

    /// The router (hidden -> experts logits).
    pub fn router(&self) -> &Linear {
        &self.router
    }

    pub fn expert(&self, e: usize) -> &SwiGlu {
        &self.experts[e]
    }

    /// (T, hidden) -> (T, hidden).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let routing = self.route(x)?;
        Ok(dispatch(
            x,
            &routing,
            self.cfg.num_experts,
            &mut |e, rows| self.experts[e].forward(rows),
        )?)
    }
}

/// The grouped dispatch of a routed block (see the module documentation), for any experts:
/// `x` (T, hidden) and its `routing`; `expert(e, rows)` runs expert `e` on the rows routed to
/// it, (n, hidden) -> (n, hidden). Each expert that received tokens runs once, its outputs
/// weighted and added back in expert order. Shared by [`MoeBlock`] and the project's quantized
/// mixture-of-experts models ([`super::quantized::llama`]).
pub fn dispatch(
    x: &Tensor,
    routing: &Routing,
    num_experts: usize,
    expert: &mut dyn FnMut(usize, &Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (t, h) = x.dims2()?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); num_experts];
    let mut ws: Vec<Vec<f32>> = vec![Vec::new(); num_experts];
    for (tok, (es, w)) in routing.experts.iter().zip(&routing.weights).enumerate() {
        for (&e, &w) in es.iter().zip(w) {
            if e >= num_experts {
                candle_core::bail!("token {tok} routed to expert {e} of {num_experts}");
            }
            rows[e].push(tok as u32);
            ws[e].push(w);
        }
    }
    let dev = x.device();
    let mut out = Tensor::zeros((t, h), x.dtype(), dev)?;
    for (e, (r, w)) in rows.iter().zip(&ws).enumerate() {
        if r.is_empty() {
            continue;
        }
        let idx = Tensor::new(r.as_slice(), dev)?;
        let rows = traced!("moe_gather", "expert rows gather", [x, idx], {
            x.index_select(idx, 0)
        })?;
        let y = expert(e, &rows)?;
        let w = Tensor::new(w.as_slice(), dev)?
            .to_dtype(x.dtype())?
            .unsqueeze(D::Minus1)?;
        let y = traced!("mul", "expert output * routing weight", [y, w], {
            y.broadcast_mul(w)
        })?;
        out = traced!("moe_scatter", "expert rows scatter-add", [out, idx, y], {
            out.index_add(idx, y, 0)
        })?;
    }
    Ok(out)
}

/// Seeded unit-scale activations (tokens x hidden) to feed a block.
pub fn seeded_input(
    tokens: usize,
    hidden: usize,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let hint = candle_nn::Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    };
    // The fill's std is 0.02; scale to unit variance.
    let x = crate::util::fill::seeded_tensor(
        &(tokens, hidden).into(),
        seed,
        "moe-input",
        hint,
        dtype,
        dev,
    )?;
    Ok((x * 50.0)?)
}

/// The dense SwiGLU with the same active parameters per token as a top-k MoE (intermediate
/// k x expert size): the reference that makes the routing overhead visible.
pub fn dense_reference(cfg: &MoeConfig, seed: u64, dtype: DType, dev: &Device) -> Result<SwiGlu> {
    let vb = VarBuilder::from_backend(Box::new(Filler::seeded(seed)), dtype, dev.clone());
    Ok(SwiGlu::new(
        cfg.hidden,
        cfg.top_k * cfg.expert_intermediate,
        vb,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: &MoeBlock, x: &Tensor) -> Vec<Vec<f32>> {
        let r = m.route(x).unwrap();
        let (t, _) = x.dims2().unwrap();
        (0..t)
            .map(|i| {
                let xi = x.narrow(0, i, 1).unwrap();
                let mut acc = Tensor::zeros_like(&xi).unwrap();
                for (&e, &w) in r.experts[i].iter().zip(&r.weights[i]) {
                    acc = (acc + (m.expert(e).forward(&xi).unwrap() * w as f64).unwrap()).unwrap();
                }
                acc.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
            })
            .collect()
    }

    #[test]
    fn grouped_dispatch_equals_the_naive_loop() {
        // Tolerance 1e-5 absolute: f32, the same products summed in a different order.
        for (e, k) in [(8, 1), (8, 2), (4, 4)] {
            let cfg = MoeConfig::new(32, 16, e, k);
            let m = MoeBlock::seeded(cfg, 7, DType::F32, &Device::Cpu).unwrap();
            let x = (crate::util::fill::seeded_tensor(
                &(9, 32).into(),
                3,
                "x",
                candle_nn::Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
                * 50.0)
                .unwrap();
            let got = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let want = naive(&m, &x);
            let diff = got
                .iter()
                .flatten()
                .zip(want.iter().flatten())
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(diff < 1e-5, "E={e} k={k}: {diff}");
            assert!(
                got.iter().flatten().any(|v| v.abs() > 1e-4),
                "non-trivial output"
            );
        }
    }

    #[test]
    fn routing_picks_the_true_top_k_with_deterministic_ties() {
        let probs = vec![vec![0.1, 0.4, 0.2, 0.3], vec![0.25, 0.25, 0.25, 0.25]];
        let r = top_k_routing(&probs, 2, false);
        assert_eq!(r.experts, vec![vec![1, 3], vec![0, 1]]);
        assert_eq!(r.weights[0], vec![0.4, 0.3]);
        let r = top_k_routing(&probs, 2, true);
        assert!((r.weights[0][0] - 0.4 / 0.7).abs() < 1e-6);
    }

    #[test]
    fn bad_configs_are_errors() {
        let ok = MoeConfig {
            hidden: 8,
            expert_intermediate: 4,
            num_experts: 4,
            top_k: 2,
            norm_topk_prob: true,
        };
        assert!(ok.validate().is_ok());
        assert!(MoeConfig { top_k: 5, ..ok }
            .validate()
            .unwrap_err()
            .contains("top-k 5"));
        assert!(MoeConfig {
            num_experts: 0,
            ..ok
        }
        .validate()
        .is_err());
        assert!(MoeConfig { top_k: 0, ..ok }.validate().is_err());
    }
}
