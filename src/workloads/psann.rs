//! PSANN-LM at one point of GPU-03's grid: a forward (fp32, math attention, logits
//! materialised; group `psann_throughput`) or one full train step (forward, mean CE, backward,
//! clip 1.0, AdamW; group `psann_train`) of B x T tokens. RoPE tables and the causal mask are
//! built once per shape, on the device, by the untimed warm-up.

use std::time::Duration;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::measure::calibration::{compute_only, Calibration};
use crate::measure::device::DeviceSpec;
use crate::measure::timing::time_region;
use crate::models::psann::train::{TrainConfig, Trainer};
use crate::models::psann::{random_ids, Base, PsannConfig, PsannLm};
use crate::output::record::{Kind, Precision, Record};

use super::{Measured, Target, Workload};

enum Step {
    Forward(PsannLm),
    Train(Box<Trainer>),
}

pub struct Psann {
    pub grid: String,
    pub base: Base,
    pub cfg: PsannConfig,
    /// The grid's batch_tokens and the (B, T) it maps to.
    pub n: usize,
    pub b: usize,
    pub t: usize,
    step: Step,
    ids: Tensor,
    targets: Tensor,
    seed: u64,
    device: DeviceSpec,
    dev: Device,
    calibration: Option<Calibration>,
}

/// Peak memory of a forward of B x T tokens, GiB: one fp32 score tensor B*H*T^2 (two alive
/// at the softmax) and the logits B*T*V.
pub fn peak_estimate_gib(cfg: &PsannConfig, b: usize, t: usize) -> f64 {
    let scores = (b * cfg.n_heads * t * t * 4) as f64;
    let logits = (b * t * cfg.vocab * 4) as f64;
    (2.0 * scores + logits) / (1u64 << 30) as f64
}

impl Psann {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        grid: &str,
        base: Base,
        (n, b, t): (usize, usize, usize),
        train: bool,
        seed: u64,
        device: DeviceSpec,
        dev: &Device,
        calibration: Option<Calibration>,
    ) -> Result<Psann> {
        let cfg = PsannConfig::gpu03(base);
        let ids = random_ids(b, t, cfg.vocab, seed, dev)?;
        let targets = random_ids(b, t, cfg.vocab, seed ^ 1, dev)?;
        let step = if train {
            let model = PsannLm::new(cfg, seed, dev, true)?;
            Step::Train(Box::new(Trainer::new(model, TrainConfig::default())?))
        } else {
            Step::Forward(PsannLm::new(cfg, seed, dev, false)?)
        };
        Ok(Psann {
            grid: grid.into(),
            base,
            cfg,
            n,
            b,
            t,
            step,
            ids,
            targets,
            seed,
            device,
            dev: dev.clone(),
            calibration,
        })
    }

    fn train(&self) -> bool {
        matches!(self.step, Step::Train(_))
    }
}

impl Workload for Psann {
    type Out = ();

    fn group(&self) -> String {
        if self.train() {
            "psann_train".into()
        } else {
            "psann_throughput".into()
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.base.name(), self.n)
    }

    fn target(&self) -> Target {
        Target::new(self.device, Precision::Float(candle_core::DType::F32))
    }

    fn tokens_per_iter(&self) -> u64 {
        (self.b * self.t) as u64
    }

    fn iterate(&mut self, _trial: u64) -> Result<(Duration, ())> {
        let (ids, targets) = (&self.ids, &self.targets);
        let (d, ()) = match &mut self.step {
            Step::Forward(m) => time_region(&self.dev, || {
                std::hint::black_box(m.forward(ids)?);
                Ok(())
            })?,
            Step::Train(tr) => time_region(&self.dev, || tr.step(ids, targets).map(|_| ()))?,
        };
        Ok((d, ()))
    }

    fn record(&self, m: &Measured<()>) -> Record {
        let (cfg, train) = (&self.cfg, self.train());
        let kind = if train { Kind::PsannTrain } else { Kind::Psann };
        let scenario = format!("{}/{}/{}", self.group(), self.base.name(), self.n);
        let mut r = Record::from_measured(kind, &scenario, m, self.tokens_per_iter());
        r.model.label = self.base.name().into();
        r.model.family = "psann".into();
        r.model.params = cfg.param_count();
        r.model.weight_bytes = cfg.param_count() * 4;
        r.model.layers = cfg.n_layers;
        r.model.hidden = cfg.d_model;
        r.model.vocab = cfg.vocab;
        r.seed = self.seed;
        r.prompt_tokens = self.t;
        r.shape = serde_json::json!({"grid": self.grid, "batch_tokens": self.n, "B": self.b, "T": self.t,
            "d_model": cfg.d_model, "n_layers": cfg.n_layers});
        r.extra = serde_json::json!({
            "grid": self.grid, "base": self.base.name(), "batch_tokens": self.n, "B": self.b, "T": self.t,
            "procedure": if train { "one train step: forward, mean CE, backward, clip 1.0, AdamW (lr 2e-4, betas 0.9/0.95, wd 0.01)" } else { "GPU-03: fp32 forward only, math attention, logits materialised" },
            "forward_flops_per_token": cfg.forward_flops_per_token(self.t),
            "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_mlp": cfg.d_mlp,
        });
        // A train step is about 3x the forward FLOPs (forward + backward).
        let fpt = cfg.forward_flops_per_token(self.t) * if train { 3.0 } else { 1.0 };
        r.roofline = Some(compute_only(fpt, r.tok_s, "f32", self.calibration.as_ref()));
        r
    }
}
