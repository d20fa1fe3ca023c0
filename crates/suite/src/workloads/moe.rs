//! One MoE feed-forward block (router, top-k, SwiGLU experts, combine) at one grid point, or
//! the dense SwiGLU with the same active parameters per token (the `dense-k<k>` rows), so the
//! cost of routing is visible. One iteration is one forward of `tokens` tokens.

use std::time::Duration;

use candle_core::{Device, Module, Tensor};

use crate::error::Result;
use crate::measure::calibration::{compute_only, Calibration};
use crate::measure::device::DeviceSpec;
use crate::models::moe::{dense_reference, seeded_input, MoeBlock, MoeConfig, SwiGlu};
use crate::output::record::{Kind, Precision, Record};
use crate::workloads::time_region;

use super::suite::Setup;
use super::{Measured, Target, Workload};

enum Block {
    Moe(MoeBlock),
    Dense(SwiGlu),
}

pub struct Moe {
    cfg: MoeConfig,
    block: Block,
    x: Tensor,
    tokens: usize,
    seed: u64,
    device: DeviceSpec,
    dtype: candle_core::DType,
    dev: Device,
    calibration: Option<Calibration>,
}

impl Moe {
    /// Seeded weights and input, on `s`'s device in its dtype. `dense`: the dense SwiGLU of
    /// intermediate top_k x expert size.
    pub fn new(cfg: MoeConfig, dense: bool, tokens: usize, s: &Setup) -> Result<Moe> {
        let (seed, device, dtype, dev) = (s.seed, s.device, s.dtype, &s.dev);
        let calibration = s.calibration.clone();
        let block = if dense {
            Block::Dense(dense_reference(&cfg, seed, dtype, dev)?)
        } else {
            Block::Moe(MoeBlock::seeded(cfg, seed, dtype, dev)?)
        };
        Ok(Moe {
            cfg,
            block,
            x: seeded_input(tokens, cfg.hidden, seed, dtype, dev)?,
            tokens,
            seed,
            device,
            dtype,
            dev: dev.clone(),
            calibration,
        })
    }

    fn dense(&self) -> bool {
        matches!(self.block, Block::Dense(_))
    }

    /// `e16-k2` or `dense-k2`.
    pub fn point(&self) -> String {
        if self.dense() {
            format!("dense-k{}", self.cfg.top_k)
        } else {
            format!("e{}-k{}", self.cfg.num_experts, self.cfg.top_k)
        }
    }

    fn active_params(&self) -> u64 {
        if self.dense() {
            (3 * self.cfg.hidden * self.cfg.top_k * self.cfg.expert_intermediate) as u64
        } else {
            self.cfg.active_params()
        }
    }

    fn flops_per_token(&self) -> u64 {
        if self.dense() {
            (6 * self.cfg.hidden * self.cfg.top_k * self.cfg.expert_intermediate) as u64
        } else {
            self.cfg.flops_per_token()
        }
    }
}

impl Workload for Moe {
    type Out = ();

    fn group(&self) -> String {
        "moe_topk".into()
    }

    fn name(&self) -> String {
        format!("{}/t{}", self.point(), self.tokens)
    }

    fn target(&self) -> Target {
        Target::new(self.device, Precision::Float(self.dtype))
    }

    fn tokens_per_iter(&self) -> u64 {
        self.tokens as u64
    }

    fn iterate(&mut self, _trial: u64) -> Result<(Duration, ())> {
        let (d, y) = time_region(&self.dev, || {
            Ok(match &self.block {
                Block::Moe(m) => m.forward(&self.x)?,
                Block::Dense(d) => d.forward(&self.x)?,
            })
        })?;
        std::hint::black_box(y);
        Ok((d, ()))
    }

    fn record(&self, m: &Measured<()>) -> Record {
        let cfg = &self.cfg;
        let dense = self.dense();
        let mut r = Record::from_measured(
            Kind::Moe,
            &format!("moe_topk/{}/t{}", self.point(), self.tokens),
            m,
            self.tokens as u64,
        );
        r.model.label = if dense {
            format!(
                "dense SwiGLU (intermediate {})",
                cfg.top_k * cfg.expert_intermediate
            )
        } else {
            format!("MoE {}", self.point())
        };
        r.model.params = Some(if dense {
            self.active_params()
        } else {
            (cfg.hidden * cfg.num_experts
                + cfg.num_experts * 3 * cfg.hidden * cfg.expert_intermediate) as u64
        });
        r.model.weight_bytes = r
            .model
            .params
            .map(|p| p * self.dtype.size_in_bytes() as u64);
        r.model.hidden = Some(cfg.hidden);
        r.seed = Some(self.seed);
        r.prompt_tokens = Some(self.tokens);
        r.shape = serde_json::json!({"hidden": cfg.hidden, "expert_intermediate": cfg.expert_intermediate,
            "num_experts": if dense { 0 } else { cfg.num_experts }, "top_k": cfg.top_k, "tokens": self.tokens});
        r.extra = serde_json::json!({
            "hidden": cfg.hidden, "expert_intermediate": cfg.expert_intermediate,
            "num_experts": if dense { 0 } else { cfg.num_experts }, "top_k": cfg.top_k,
            "tokens": self.tokens, "dense_reference": dense, "norm_topk_prob": cfg.norm_topk_prob,
            "active_params_per_token": self.active_params(),
            "flops_per_token": self.flops_per_token(),
        });
        r.roofline = Some(compute_only(
            self.flops_per_token() as f64,
            r.tok_s,
            self.dtype.as_str(),
            self.calibration.as_ref(),
        ));
        r
    }
}

/// The `moe_topk` grid's axes (MODELBENCH_MOE_*).
#[derive(Debug, Clone)]
pub struct MoeGrid {
    pub experts: Vec<usize>,
    pub top_k: Vec<usize>,
    pub tokens: Vec<usize>,
    pub hidden: usize,
    pub intermediate: usize,
}

/// The `moe_topk` grid: experts x top-k x tokens, plus the dense rows (`dense-k<k>`), each
/// point measured by `driver` into `run`.
pub fn run_grid<D: super::suite::Driver>(
    grid: &MoeGrid,
    s: &super::suite::Setup,
    driver: &mut D,
    run: &mut crate::output::report::RunDir,
) -> Result<()> {
    let mut points: Vec<(MoeConfig, bool)> = Vec::new();
    for &e in &grid.experts {
        for &k in &grid.top_k {
            points.push((MoeConfig::new(grid.hidden, grid.intermediate, e, k), false));
        }
    }
    for &k in &grid.top_k {
        points.push((MoeConfig::new(grid.hidden, grid.intermediate, k, k), true));
    }
    for (cfg, dense) in points {
        for &t in &grid.tokens {
            let mut w = Moe::new(cfg, dense, t, s)?;
            super::suite::measure_into(driver, &mut w, None, run)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload that routes tokens but prompts and generates nothing records its token
    /// count and seed, and null (never 0) for what it does not have: no generated tokens, no
    /// context limit, no vocabulary, no layers.
    #[test]
    fn a_moe_record_has_no_placeholder_zeros() {
        let s = Setup {
            device: DeviceSpec::Cpu,
            dev: Device::Cpu,
            dtype: candle_core::DType::F32,
            seed: 7,
            calibration: None,
        };
        let mut w = Moe::new(MoeConfig::new(16, 8, 4, 2), false, 3, &s).unwrap();
        let r = crate::workloads::run_trials(&mut w, 0, 1).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["prompt_tokens"], 3, "{v}");
        assert_eq!(v["seed"], 7, "{v}");
        assert!(v["model"]["params"].as_u64().is_some_and(|p| p > 0), "{v}");
        assert_eq!(v["model"]["hidden"], 16, "{v}");
        assert_eq!(
            v["model"]["weight_bytes"].as_u64(),
            v["model"]["params"].as_u64().map(|p| p * 4),
            "{v}"
        );
        assert!(v["new_tokens"].is_null(), "{v}");
        for null in ["layers", "vocab", "max_context", "built_context"] {
            assert!(v["model"][null].is_null(), "model.{null}: {v}");
        }
        // The record reads back as written; one written before these were optional (0 for
        // "none") reads back as None.
        let back: Record = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, r);
        let mut old = v;
        old["new_tokens"] = 0.into();
        old["model"]["max_context"] = 0.into();
        let old: Record = serde_json::from_value(old).unwrap();
        assert_eq!((old.new_tokens, old.model.max_context), (None, None));
    }
}
