//! PSANN-LM at one point of the PSANN throughput grid: a forward (fp32, math attention, logits
//! materialised; group `psann_throughput`) or one full train step (forward, mean CE, backward,
//! clip 1.0, AdamW; group `psann_train`) of B x T tokens. RoPE tables and the causal mask are
//! built once per shape, on the device, by the untimed warm-up.
//!
//! [`Psann::sweep`] builds the same forward / train step on any model config and precision for
//! the training-throughput sweep (group `train_step`, `modelbench train-sweep`): precision x sequence length
//! x batch, with the memory allocated once built (parameters, and AdamW state after the warm-up
//! step) and the peak over the timed steps.

use std::time::Duration;

use candle_core::{DType, Device, Tensor};

use crate::error::{one_line, Error, Result};
use crate::measure::calibration::{compute_only, Calibration};
use crate::measure::device::DeviceSpec;
use crate::models::training::psann::train::{TrainConfig, Trainer};
use crate::models::training::psann::{random_ids, Base, PsannConfig, PsannLm};
use crate::output::record::{Kind, Precision, Record};
use crate::workloads::time_region;

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
    dtype: candle_core::DType,
    /// The sweep's group and name (None: the throughput grid's `psann_throughput` / `psann_train`).
    sweep: Option<(String, String)>,
    /// AdamW's learning rate (train steps).
    lr: f64,
    /// Train steps taken so far (warm-up included): the step a non-finite one is named by.
    steps: usize,
}

/// Peak memory of a forward of B x T tokens, GiB: one fp32 score tensor B*H*T^2 (two alive
/// at the softmax) and the logits B*T*V.
pub fn peak_estimate_gib(cfg: &PsannConfig, b: usize, t: usize) -> f64 {
    let scores = (b * cfg.n_heads * t * t * 4) as f64;
    let logits = (b * t * cfg.vocab * 4) as f64;
    (2.0 * scores + logits) / (1u64 << 30) as f64
}

/// Why a PSANN point cannot run on candle 0.11.1's CUDA backend, if it cannot: its element-wise
/// kernels are launched with `LaunchConfig::for_num_elems(el as u32)`, so a tensor of 2^32
/// elements or more gets a truncated grid (exactly 2^32: zero blocks, CUDA_ERROR_INVALID_VALUE,
/// as the gpu03 point 262144 = B 64 x T 4096 did on an H200 on 2026-11-26, whose attention
/// scores are 64 x 4 x 4096 x 4096 = 2^32 elements; above it, a kernel over part of the
/// tensor). The largest tensors of a forward are the attention scores (B x H x T x T) and the
/// logits (B x T x vocab).
pub fn cuda_element_limit(cfg: &PsannConfig, b: usize, t: usize) -> Option<String> {
    const LIMIT: u128 = 1 << 32;
    let scores = (b * cfg.n_heads) as u128 * (t * t) as u128;
    let logits = (b * t) as u128 * cfg.vocab as u128;
    let over: Vec<String> = [("attention scores", scores), ("logits", logits)]
        .iter()
        .filter(|(_, n)| *n >= LIMIT)
        .map(|(what, n)| format!("its {what} have {n} elements"))
        .collect();
    (!over.is_empty()).then(|| {
        format!(
            "{}, at or above the 2^32 elements candle 0.11.1's CUDA kernels can index (their launch size is cast to u32); see docs/gpu.md",
            over.join(" and ")
        )
    })
}

impl Psann {
    /// A point of the throughput grid `grid`: the gpu03 model of `base` in f32, one forward
    /// (`train` false) or one train step of B x T random ids, standing for `n` batch tokens;
    /// seed, device and calibration from `s`.
    pub fn new(
        grid: &str,
        base: Base,
        (n, b, t): (usize, usize, usize),
        train: bool,
        s: &super::suite::Setup,
    ) -> Result<Psann> {
        let cfg = PsannConfig::gpu03(base);
        let (seed, cal) = (s.seed, s.calibration.clone());
        let mut p = Self::sweep(cfg, DType::F32, (b, t), train, seed, s.device, &s.dev, cal)?;
        p.grid = grid.into();
        p.n = n;
        p.sweep = None;
        Ok(p)
    }

    /// A training-throughput sweep point: a model of `cfg` with matmuls in `dtype` (parameters f32),
    /// one forward (`train` false) or one train step of B x T random ids; group `train_step`,
    /// name `<train|infer>/B<b>xT<t>`.
    #[allow(clippy::too_many_arguments)]
    pub fn sweep(
        cfg: PsannConfig,
        dtype: candle_core::DType,
        (b, t): (usize, usize),
        train: bool,
        seed: u64,
        device: DeviceSpec,
        dev: &Device,
        calibration: Option<Calibration>,
    ) -> Result<Psann> {
        let ids = random_ids(b, t, cfg.vocab, seed, dev)?;
        let targets = random_ids(b, t, cfg.vocab, seed ^ 1, dev)?;
        let step = if train {
            let model = PsannLm::with_compute(cfg, seed, dev, true, dtype)?;
            Step::Train(Box::new(Trainer::new(model, TrainConfig::default())?))
        } else {
            Step::Forward(PsannLm::with_compute(cfg, seed, dev, false, dtype)?)
        };
        let mode = if train { "train" } else { "infer" };
        Ok(Psann {
            grid: "sweep".into(),
            base: cfg.base,
            cfg,
            n: b * t,
            b,
            t,
            step,
            ids,
            targets,
            seed,
            device,
            dev: dev.clone(),
            calibration,
            dtype,
            sweep: Some(("train_step".into(), format!("{mode}/B{b}xT{t}"))),
            lr: TrainConfig::default().lr,
            steps: 0,
        })
    }

    /// AdamW's learning rate from the next train step on (no effect on a forward). A step's
    /// cost does not depend on it; a rate that makes a step NaN or infinite fails the step.
    pub fn set_lr(&mut self, lr: f64) {
        if let Step::Train(tr) = &mut self.step {
            tr.set_lr(lr);
        }
        self.lr = lr;
    }

    fn train(&self) -> bool {
        matches!(self.step, Step::Train(_))
    }
}

impl Workload for Psann {
    type Out = ();

    fn group(&self) -> String {
        if let Some((g, _)) = &self.sweep {
            return g.clone();
        }
        if self.train() {
            "psann_train".into()
        } else {
            "psann_throughput".into()
        }
    }

    fn name(&self) -> String {
        if let Some((_, n)) = &self.sweep {
            return n.clone();
        }
        format!("{}/{}", self.base.name(), self.n)
    }

    fn target(&self) -> Target {
        Target::new(self.device, Precision::Float(self.dtype))
    }

    /// Every point reads the device pool's peak (the gpu03 grid's points had none on an H200
    /// when only the sweep's did: GPU-03's memory is what decides whether a point fits).
    fn pool_device(&self) -> Option<&Device> {
        Some(&self.dev)
    }

    fn tokens_per_iter(&self) -> u64 {
        (self.b * self.t) as u64
    }

    /// A train step whose loss, gradients or parameters are NaN or infinite fails (naming the
    /// step and the tensor): its time would not be the time of a train step.
    fn iterate(&mut self, _trial: u64) -> Result<(Duration, ())> {
        let (ids, targets) = (&self.ids, &self.targets);
        match &mut self.step {
            Step::Forward(m) => {
                let (d, ()) = time_region(&self.dev, || {
                    std::hint::black_box(m.forward(ids)?);
                    Ok(())
                })?;
                Ok((d, ()))
            }
            Step::Train(tr) => {
                let (d, stats) = time_region(&self.dev, || Ok(tr.step_checked(ids, targets)?))?;
                self.steps += 1;
                match stats.non_finite {
                    Some(tensor) => Err(Error::NonFinite {
                        step: self.steps,
                        tensor,
                    }),
                    None => Ok((d, ())),
                }
            }
        }
    }

    fn record(&self, m: &Measured<()>) -> Record {
        let (cfg, train) = (&self.cfg, self.train());
        let kind = if train { Kind::PsannTrain } else { Kind::Psann };
        let scenario = match &self.sweep {
            Some((g, n)) => format!("{g}/{}/{n}", self.base.name()),
            None => format!("{}/{}/{}", self.group(), self.base.name(), self.n),
        };
        let mut r = Record::from_measured(kind, &scenario, m, self.tokens_per_iter());
        r.model.label = self.base.name().into();
        r.model.family = "psann".into();
        r.model.params = Some(cfg.param_count());
        r.model.weight_bytes = Some(cfg.param_count() * 4);
        r.model.layers = Some(cfg.n_layers);
        r.model.hidden = Some(cfg.d_model);
        r.model.vocab = Some(cfg.vocab);
        r.seed = Some(self.seed);
        r.prompt_tokens = Some(self.t);
        r.shape = serde_json::json!({"grid": self.grid, "batch_tokens": self.n, "B": self.b, "T": self.t,
            "d_model": cfg.d_model, "n_layers": cfg.n_layers});
        r.extra = serde_json::json!({
            "grid": self.grid, "base": self.base.name(), "batch_tokens": self.n, "B": self.b, "T": self.t,
            "procedure": match (train, self.sweep.is_some()) {
                (true, _) => format!("one train step: forward, mean CE, backward, clip 1.0, AdamW (lr {:e}, betas 0.9/0.95, wd 0.01)", self.lr),
                (false, false) => "throughput grid: fp32 forward only, math attention, logits materialised".into(),
                (false, true) => "forward only, math attention, logits materialised (inference)".into(),
            },
            "matmul_dtype": self.dtype.as_str(),
            "forward_flops_per_token": cfg.forward_flops_per_token(self.t),
            "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_mlp": cfg.d_mlp,
        });
        // A train step is about 3x the forward FLOPs (forward + backward).
        let fpt = cfg.forward_flops_per_token(self.t) * if train { 3.0 } else { 1.0 };
        r.roofline = Some(compute_only(
            fpt,
            r.tok_s,
            self.dtype.as_str(),
            self.calibration.as_ref(),
        ));
        r.memory.gpu_peak_bytes = m.device_peak_bytes;
        r
    }
}

/// One point of the training-throughput sweep (`modelbench train-sweep`): a train step and a forward
/// at one precision, sequence length and batch. Unmeasured values are None; a precision the
/// device cannot run ([`dtype_refusal`]) has `status` "refused" and the reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepRow {
    pub base: String,
    pub precision: String,
    pub seq_len: usize,
    pub batch: usize,
    pub params: u64,
    pub status: String,
    pub reason: Option<String>,
    pub train_tokens_per_s: Option<f64>,
    pub train_ms_per_step: Option<f64>,
    pub infer_tokens_per_s: Option<f64>,
    pub infer_ms_per_step: Option<f64>,
    /// Memory in use once built and warmed up (parameters, AdamW state for train), and the
    /// peak over the timed steps: host heap on CPU, candle's CUDA pool on a GPU.
    pub train_allocated_bytes: Option<u64>,
    pub train_peak_bytes: Option<u64>,
    pub infer_allocated_bytes: Option<u64>,
    pub infer_peak_bytes: Option<u64>,
    pub memory_kind: String,
    pub device: String,
}

impl SweepRow {
    pub const CSV_HEADER: &'static str = "base,precision,seq_len,batch,params,status,reason,train_tokens_per_s,train_ms_per_step,infer_tokens_per_s,infer_ms_per_step,train_allocated_bytes,train_peak_bytes,infer_allocated_bytes,infer_peak_bytes,memory_kind,device";

    pub fn csv_line(&self) -> String {
        let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let u = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.base,
            self.precision,
            self.seq_len,
            self.batch,
            self.params,
            self.status,
            self.reason
                .as_deref()
                .unwrap_or("")
                .replace([',', '\n'], ";"),
            f(self.train_tokens_per_s),
            f(self.train_ms_per_step),
            f(self.infer_tokens_per_s),
            f(self.infer_ms_per_step),
            u(self.train_allocated_bytes),
            u(self.train_peak_bytes),
            u(self.infer_allocated_bytes),
            u(self.infer_peak_bytes),
            self.memory_kind,
            self.device
        )
    }
}

/// Why `dtype` cannot run on `device`, when `e` is candle refusing an op in that very dtype
/// there (`UnsupportedDTypeForOp`): "bf16 cannot run on cpu: candle has no bf16 matmul there".
/// f32 is never refused (every backend runs it), and no other error is a refusal: a failed
/// f32 step, a bad shape or a NaN is a failure, not a precision the device lacks.
pub fn dtype_refusal(e: &Error, dtype: DType, device: DeviceSpec) -> Option<String> {
    fn unsupported(e: &candle_core::Error) -> Option<(DType, &'static str)> {
        use candle_core::Error as C;
        match e {
            C::UnsupportedDTypeForOp(d, op) => Some((*d, op)),
            C::WithBacktrace { inner, .. }
            | C::Context { inner, .. }
            | C::WithPath { inner, .. } => unsupported(inner),
            _ => None,
        }
    }
    let c = e.as_candle()?;
    let (d, op) = unsupported(c)?;
    (d == dtype && dtype != DType::F32).then(|| {
        format!(
            "{} cannot run on {device}: candle has no {} {op} there",
            dtype.as_str(),
            d.as_str()
        )
    })
}

/// Measures one sweep point: for train and forward, build, one untimed warm-up step (which
/// also allocates AdamW's state), read the memory in use, then `trials` timed steps through
/// the trial loop. Train steps use AdamW at `lr`. Returns the row and the records of what was
/// measured. A mode whose precision the device cannot run ([`dtype_refusal`]) leaves its cells
/// None and the row `refused` with the reason; any other error fails the point, naming it.
#[allow(clippy::too_many_arguments)]
pub fn sweep_point(
    cfg: PsannConfig,
    dtype: DType,
    (b, t): (usize, usize),
    trials: usize,
    seed: u64,
    lr: f64,
    device: DeviceSpec,
    dev: &Device,
    calibration: Option<Calibration>,
) -> Result<(SweepRow, Vec<Record>)> {
    let cuda = dev.is_cuda();
    let mut row = SweepRow {
        base: cfg.base.name().into(),
        precision: dtype.as_str().into(),
        seq_len: t,
        batch: b,
        params: cfg.param_count(),
        status: "ok".into(),
        reason: None,
        train_tokens_per_s: None,
        train_ms_per_step: None,
        infer_tokens_per_s: None,
        infer_ms_per_step: None,
        train_allocated_bytes: None,
        train_peak_bytes: None,
        infer_allocated_bytes: None,
        infer_peak_bytes: None,
        memory_kind: if cuda { "device pool" } else { "host heap" }.into(),
        device: device.to_string(),
    };
    let mut records = Vec::new();
    for train in [true, false] {
        let measured = (|| -> Result<(Option<u64>, Record)> {
            let mut w = Psann::sweep(
                cfg,
                dtype,
                (b, t),
                train,
                seed,
                device,
                dev,
                calibration.clone(),
            )?;
            w.set_lr(lr);
            w.estimate()?;
            let allocated = if cuda {
                crate::measure::memory::device_pool(dev).map(|(now, _)| now)
            } else {
                crate::measure::memory::heap_current()
            };
            Ok((allocated, super::run_trials(&mut w, 0, trials)?))
        })();
        let what = if train { "train step" } else { "forward" };
        match measured {
            Ok((allocated, r)) => {
                let ms = r.stats.median * 1e3;
                let peak = if cuda {
                    r.memory.gpu_peak_bytes
                } else {
                    r.memory.host_peak_bytes
                };
                if train {
                    row.train_tokens_per_s = r.tok_s;
                    row.train_ms_per_step = Some(ms);
                    row.train_allocated_bytes = allocated;
                    row.train_peak_bytes = peak;
                } else {
                    row.infer_tokens_per_s = r.tok_s;
                    row.infer_ms_per_step = Some(ms);
                    row.infer_allocated_bytes = allocated;
                    row.infer_peak_bytes = peak;
                }
                records.push(r);
            }
            Err(e) => {
                let Some(why) = dtype_refusal(&e, dtype, device) else {
                    return Err(Error::Report(format!(
                        "sweep point {} seq {t} batch {b} on {device}, {what}: {}",
                        dtype.as_str(),
                        one_line(&e.to_string())
                    )));
                };
                row.status = "refused".into();
                let reason = format!("{what}: {why}");
                row.reason = Some(match row.reason.take() {
                    Some(r) => format!("{r}; {reason}"),
                    None => reason,
                });
            }
        }
    }
    Ok((row, records))
}

/// The PSANN throughput grid and the training-throughput sweep (MODELBENCH_PSANN_*,
/// MODELBENCH_TRAIN_STEP_*), with each grid point's (batch tokens, B, T) already shaped.
pub struct PsannGrid {
    /// `default` or `gpu03`.
    pub grid: String,
    pub bases: Vec<Base>,
    /// Points of `psann_throughput` (forward).
    pub batch_shapes: Vec<(usize, usize, usize)>,
    /// Points of `psann_train` (one full step; empty: none).
    pub train_shapes: Vec<(usize, usize, usize)>,
    /// Group `train_step`: matmul dtypes x sequence lengths x batches.
    pub step_dtypes: Vec<DType>,
    pub step_seqs: Vec<usize>,
    pub step_batches: Vec<usize>,
}

/// The PSANN throughput procedure as groups `psann_throughput` (fp32 forward, ids
/// `<base>/<batch_tokens>`), `psann_train` (one full step), then the training-throughput sweep
/// `train_step` (train and forward per precision x T x B); throughput.csv, .md and .png in
/// the run folder. Each point is measured by `driver` into `run`.
pub fn run_grid<D: super::suite::Driver>(
    g: &PsannGrid,
    s: &super::suite::Setup,
    driver: &mut D,
    run: &mut crate::output::report::RunDir,
) -> Result<()> {
    if s.dtype != DType::F32 {
        driver.say("note: the PSANN grid runs in f32 (the throughput grid is specified in FP32); MODELBENCH_DTYPE is ignored here");
    }
    let cfg0 = PsannConfig::gpu03(g.bases[0]);
    for &(n, b, t) in &g.batch_shapes {
        let need = peak_estimate_gib(&cfg0, b, t);
        if need > 4.0 {
            driver.say(&format!("warning: batch_tokens {n} (B={b}, T={t}) needs about {need:.1} GiB at peak (attention scores and logits)"));
        }
    }
    let mut tput: Vec<(String, usize, f64)> = Vec::new();
    for train in [false, true] {
        let shapes = if train {
            &g.train_shapes
        } else {
            &g.batch_shapes
        };
        for &base in &g.bases {
            for &shape in shapes {
                if s.device != DeviceSpec::Cpu {
                    if let Some(why) = cuda_element_limit(&cfg0, shape.1, shape.2) {
                        let group = if train {
                            "psann_train"
                        } else {
                            "psann_throughput"
                        };
                        driver.say(&format!(
                            "{group} {}/{} (B={}, T={}): not run: {why}",
                            base.name(),
                            shape.0,
                            shape.1,
                            shape.2
                        ));
                        continue;
                    }
                }
                let mut w = Psann::new(&g.grid, base, shape, train, s)?;
                let r = super::suite::measure_into(driver, &mut w, None, run)?;
                if let (Some(r), false) = (r, train) {
                    if let Some(v) = r.tok_s {
                        tput.push((base.name().to_string(), shape.0, v));
                    }
                }
            }
        }
    }
    if !tput.is_empty() {
        crate::output::report::write_psann_artifacts(run, &g.grid, &tput)?;
    }
    // The training-throughput sweep, group `train_step`: train step and forward per precision x T x B.
    let cfg = PsannConfig::sweep(Base::Waveresnet);
    for &dtype in &g.step_dtypes {
        for &t in &g.step_seqs {
            for &b in &g.step_batches {
                for train in [true, false] {
                    let mut w = Psann::sweep(
                        cfg,
                        dtype,
                        (b, t),
                        train,
                        s.seed,
                        s.device,
                        &s.dev,
                        s.calibration.clone(),
                    )?;
                    // A precision the device cannot run is refused with its reason, not
                    // timed; any other failure fails the bench.
                    if let Err(e) = w.estimate() {
                        let why = dtype_refusal(&e, dtype, s.device).ok_or(e)?;
                        driver.say(&format!("train_step {}: refused: {why}", w.id()));
                        continue;
                    }
                    super::suite::measure_into(driver, &mut w, None, run)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gpu03 grid's points against candle's CUDA element limit: 65536 and 131072 ran on an
    /// H200; 262144 failed at launch (its attention scores are exactly 2^32 elements).
    #[test]
    fn cuda_element_limit_refuses_exactly_the_points_past_u32() {
        let cfg = PsannConfig::gpu03(Base::Respsann);
        assert_eq!(cuda_element_limit(&cfg, 16, 4096), None);
        assert_eq!(cuda_element_limit(&cfg, 32, 4096), None);
        let why = cuda_element_limit(&cfg, 64, 4096).expect("262144 is past the limit");
        assert!(
            why.contains("attention scores have 4294967296 elements"),
            "{why}"
        );
        assert!(why.contains("logits have 8388608000 elements"), "{why}");
        // One token fewer per sequence is below 2^32 in the scores but not in the logits.
        let why = cuda_element_limit(&cfg, 64, 4095).unwrap();
        assert!(!why.contains("attention"), "{why}");
    }

    /// The refusal is candle's own "no such op in this dtype" for the point's dtype, through
    /// its wrappers; f32, another dtype's refusal and any other error are failures. (Making
    /// every error a refusal, the old behaviour, fails the last three asserts.)
    #[test]
    fn only_the_devices_missing_dtype_is_a_refusal() {
        let cpu = DeviceSpec::Cpu;
        let bf16 = Error::from(
            candle_core::Error::UnsupportedDTypeForOp(DType::BF16, "matmul")
                .context("autocast")
                .with_path("x"),
        );
        let r = dtype_refusal(&bf16, DType::BF16, cpu).unwrap();
        assert_eq!(r, "bf16 cannot run on cpu: candle has no bf16 matmul there");
        let f32 = Error::from(candle_core::Error::UnsupportedDTypeForOp(
            DType::F32,
            "matmul",
        ));
        assert_eq!(dtype_refusal(&f32, DType::F32, cpu), None);
        assert_eq!(dtype_refusal(&bf16, DType::F16, cpu), None);
        let other = Error::NonFinite {
            step: 2,
            tensor: "loss".into(),
        };
        assert_eq!(dtype_refusal(&other, DType::BF16, cpu), None);
    }
}
