//! The architecture sweep (group `arch_sweep`, `modelbench sweep`): one backbone
//! family ([`crate::models::training::backbone`]) at one model dim, depth and horizon count, as a
//! forward of B x T tokens (`fwd`) or one train step (`train`: forward, mean cross-entropy over
//! the horizon heads, backward, AdamW). The batch of B sequences of T + horizons seeded random
//! ids is built once, outside the timed region; a sample is one sequence.
//!
//! [`sweep_point`] measures both modes of a grid point into one [`ArchRow`].

use std::time::Duration;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::measure::calibration::{compute_only, Calibration};
use crate::measure::device::DeviceSpec;
use crate::measure::stats::percentiles;
use crate::models::training::backbone::{Backbone, BackboneConfig, BackboneTrainer, Family};
use crate::models::training::psann::random_ids;
use crate::output::arch_table::ArchRow;
use crate::output::record::{Kind, Precision, Record};
use crate::workloads::time_region;

use super::suite::Setup;
use super::{Measured, Target, Workload};

enum Step {
    Forward(Backbone),
    Train(BackboneTrainer),
}

pub struct ArchStep {
    pub cfg: BackboneConfig,
    pub batch: usize,
    pub seq_len: usize,
    step: Step,
    seq: Tensor,
    params: u64,
    active_params: u64,
    seed: u64,
    device: DeviceSpec,
    dtype: DType,
    dev: Device,
    calibration: Option<Calibration>,
}

impl ArchStep {
    /// A forward (`train` false) or a train step of a seeded backbone of `cfg` on
    /// `(batch, seq_len)` random ids, on `s`'s device in its dtype.
    pub fn new(
        cfg: BackboneConfig,
        (batch, seq_len): (usize, usize),
        train: bool,
        s: &Setup,
    ) -> Result<ArchStep> {
        let (seed, device, dtype, dev) = (s.seed, s.device, s.dtype, &s.dev);
        let calibration = s.calibration.clone();
        let model = Backbone::new(cfg, seed, dtype, dev)?;
        let (params, active_params) = (model.params(), model.active_params());
        let step = if train {
            Step::Train(BackboneTrainer::new(model)?)
        } else {
            Step::Forward(model)
        };
        Ok(ArchStep {
            cfg,
            batch,
            seq_len,
            step,
            seq: random_ids(batch, seq_len + cfg.horizons, cfg.vocab, seed, dev)?,
            params,
            active_params,
            seed,
            device,
            dtype,
            dev: dev.clone(),
            calibration,
        })
    }

    pub fn train(&self) -> bool {
        matches!(self.step, Step::Train(_))
    }

    /// Matmul FLOPs per token of one iteration (a train step: 3x the forward).
    pub fn flops_per_token(&self) -> f64 {
        self.cfg.forward_flops_per_token(self.seq_len) * if self.train() { 3.0 } else { 1.0 }
    }
}

impl Workload for ArchStep {
    /// The loss of a train step (None for a forward).
    type Out = Option<f32>;

    fn group(&self) -> String {
        "arch_sweep".into()
    }

    /// `<family>/d<dim>/L<depth>/h<horizons>/<fwd|train>`.
    fn name(&self) -> String {
        let c = &self.cfg;
        format!(
            "{}/d{}/L{}/h{}/{}",
            c.family,
            c.d_model,
            c.depth,
            c.horizons,
            if self.train() { "train" } else { "fwd" }
        )
    }

    fn target(&self) -> Target {
        Target::new(self.device, Precision::Float(self.dtype))
    }

    fn pool_device(&self) -> Option<&Device> {
        Some(&self.dev)
    }

    fn tokens_per_iter(&self) -> u64 {
        (self.batch * self.seq_len) as u64
    }

    fn iterate(&mut self, _trial: u64) -> Result<(Duration, Option<f32>)> {
        let seq = &self.seq;
        match &mut self.step {
            Step::Forward(m) => {
                let t = self.seq_len;
                time_region(&self.dev, || {
                    std::hint::black_box(m.forward(&seq.narrow(1, 0, t)?)?);
                    Ok(None)
                })
            }
            Step::Train(tr) => time_region(&self.dev, || Ok(tr.step(seq).map(Some)?)),
        }
    }

    fn record(&self, m: &Measured<Option<f32>>) -> Record {
        let c = &self.cfg;
        let mut r = Record::from_measured(
            Kind::ArchSweep,
            &format!("arch_sweep/{}", self.name()),
            m,
            self.tokens_per_iter(),
        );
        r.model.label = format!("{} d{} L{} h{}", c.family, c.d_model, c.depth, c.horizons);
        r.model.family = c.family.name().into();
        r.model.params = Some(self.params);
        r.model.weight_bytes = Some(self.params * self.dtype.size_in_bytes() as u64);
        r.model.layers = Some(c.depth);
        r.model.hidden = Some(c.d_model);
        r.model.vocab = Some(c.vocab);
        r.seed = Some(self.seed);
        r.prompt_tokens = Some(self.seq_len);
        r.shape = serde_json::json!({"family": c.family.name(), "d_model": c.d_model, "depth": c.depth,
            "horizons": c.horizons, "B": self.batch, "T": self.seq_len, "train": self.train()});
        r.extra = serde_json::json!({
            "config": c,
            "active_params": self.active_params,
            "attention_layers": c.attention_layers(),
            "procedure": if self.train() {
                "one train step: forward, mean CE over the horizon heads, backward, AdamW (lr 3e-4, betas 0.9/0.95, wd 0.1, no clipping)"
            } else {
                "forward of B x T tokens, every head's logits materialised"
            },
            "flops_per_token": self.flops_per_token(),
            "flops_counted": "matmuls only (linear layers, active experts, QK^T and PV over the full T x T, heads); the state-space scan's elementwise work is not counted",
            "losses": m.outs.iter().flatten().collect::<Vec<_>>(),
        });
        r.roofline = Some(compute_only(
            self.flops_per_token(),
            r.tok_s,
            self.dtype.as_str(),
            self.calibration.as_ref(),
        ));
        r.memory.gpu_peak_bytes = m.device_peak_bytes;
        r
    }
}

/// What a sweep point is: the queue's label and settings.
#[derive(Debug, Clone)]
pub struct PointSpec {
    pub queue: String,
    pub accelerator: String,
    pub batch: usize,
    pub seq_len: usize,
    pub warmup: usize,
    pub trials: usize,
    pub seed: u64,
    pub device: DeviceSpec,
    pub dtype: DType,
}

/// Measures one grid point: a train step and a forward, each built, warmed up (`warmup`
/// untimed iterations, at least one) and timed `trials` times through the trial loop.
/// A mode that fails leaves its cells null and the row's status `failed` with the reason.
pub fn sweep_point(
    cfg: BackboneConfig,
    p: &PointSpec,
    dev: &Device,
    calibration: Option<Calibration>,
) -> (ArchRow, Vec<Record>) {
    let cuda = dev.is_cuda();
    let mut row = ArchRow {
        queue: p.queue.clone(),
        architecture: cfg.family.name().into(),
        model_dim: cfg.d_model as i64,
        depth: cfg.depth as i64,
        horizons: cfg.horizons as i64,
        batch: p.batch as i64,
        seq_len: p.seq_len as i64,
        vocab: cfg.vocab as i64,
        attention_layers: cfg.attention_layers() as i64,
        state_space_layers: (cfg.depth - cfg.attention_layers()) as i64,
        experts: (cfg.family == Family::Mixture).then_some(cfg.experts as i64),
        top_k: (cfg.family == Family::Mixture).then_some(cfg.top_k as i64),
        accelerator: p.accelerator.clone(),
        device: p.device.to_string(),
        dtype: p.dtype.as_str().into(),
        trials: p.trials as i64,
        memory_kind: if cuda { "device pool" } else { "host heap" }.into(),
        forward_flops_per_token: cfg.forward_flops_per_token(p.seq_len),
        train_flops_per_token: 3.0 * cfg.forward_flops_per_token(p.seq_len),
        status: "ok".into(),
        timestamp: crate::util::time::now_rfc3339(),
        ..ArchRow::default()
    };
    let peak = calibration
        .as_ref()
        .and_then(|c| c.matmul_gflops.get(p.dtype.as_str()))
        .copied();
    row.matmul_roof_gflops = peak;
    let mut records = Vec::new();
    for train in [true, false] {
        let measured = (|| -> Result<Record> {
            let s = Setup {
                device: p.device,
                dev: dev.clone(),
                dtype: p.dtype,
                seed: p.seed,
                calibration: calibration.clone(),
            };
            let mut w = ArchStep::new(cfg, (p.batch, p.seq_len), train, &s)?;
            row.params = w.params as i64;
            row.active_params = w.active_params as i64;
            super::run_trials(&mut w, p.warmup.max(1), p.trials)
        })();
        match measured {
            Ok(r) => {
                let ms: Vec<f64> = r.samples_s.iter().map(|s| s * 1e3).collect();
                let pc = percentiles(&ms);
                let samples_s = (r.stats.median > 0.0).then(|| p.batch as f64 / r.stats.median);
                let peak_b = if cuda {
                    r.memory.gpu_peak_bytes
                } else {
                    r.memory.host_peak_bytes
                }
                .map(|b| b as i64);
                if train {
                    row.train_ms_median = pc.map(|q| q.p50);
                    row.train_ms_p90 = pc.map(|q| q.p90);
                    row.train_samples_per_s = samples_s;
                    row.train_tokens_per_s = r.tok_s;
                    row.train_peak_bytes = peak_b;
                    row.train_loss = r.extra["losses"]
                        .as_array()
                        .and_then(|l| l.last())
                        .and_then(|v| v.as_f64());
                    let rf = r.roofline.as_ref();
                    row.train_gflops = rf.and_then(|x| x.prefill_gflops);
                    row.train_roof_pct = rf.and_then(|x| x.compute_util_pct);
                    row.roof_source = rf.map(|x| x.calibration.clone()).unwrap_or_default();
                } else {
                    row.forward_ms_median = pc.map(|q| q.p50);
                    row.forward_ms_p90 = pc.map(|q| q.p90);
                    row.forward_samples_per_s = samples_s;
                    row.forward_tokens_per_s = r.tok_s;
                    row.forward_peak_bytes = peak_b;
                }
                records.push(r);
            }
            Err(e) => {
                row.status = "failed".into();
                let what = if train { "train step" } else { "forward" };
                let reason = format!("{what}: {}", crate::error::one_line(&e.to_string()));
                row.reason = Some(match row.reason.take() {
                    Some(r) => format!("{r}; {reason}"),
                    None => reason,
                });
            }
        }
    }
    if row.roof_source.is_empty() {
        row.roof_source = format!("none for {}: run `modelbench calibrate`", p.dtype.as_str());
    }
    (row, records)
}

/// Group `arch_sweep` (the architecture sweep, small): every backbone of `configs` at
/// `(batch, seq)`, a forward and a train step each (`arch_sweep/cpu-f32/hybrid/d64/L2/h2/train`),
/// measured by `driver` into `run`.
pub fn run_grid<D: super::suite::Driver>(
    configs: &[BackboneConfig],
    batch_seq: (usize, usize),
    s: &super::suite::Setup,
    driver: &mut D,
    run: &mut crate::output::report::RunDir,
) -> Result<()> {
    for &cfg in configs {
        for train in [false, true] {
            let mut w = ArchStep::new(cfg, batch_seq, train, s)?;
            super::suite::measure_into(driver, &mut w, None, run)?;
        }
    }
    Ok(())
}
