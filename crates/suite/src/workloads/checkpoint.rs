//! Gradient checkpointing: the medium waveresnet (d_model 512, 8 layers, 8 heads,
//! d_mlp 2048) on a 31-symbol character vocabulary, one train step per iteration, with and
//! without per-block checkpointing. Each iteration yields its wall time and the peak memory of
//! the step above the memory in use before it (gradients and activations; parameters and
//! AdamW state excluded), measured in the same steps: the live host heap on CPU, the CUDA
//! memory pool candle allocates from on a GPU.

use std::time::Duration;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::measure::device::DeviceSpec;
use crate::measure::memory;
use crate::measure::stats::median;
use crate::models::training::psann::train::{TrainConfig, Trainer};
use crate::models::training::psann::{random_ids, Base, PsannConfig, PsannLm};
use crate::output::record::{Kind, Precision, Record};

use super::{Measured, Target, Workload};

pub const BATCH: usize = 1;
pub const SEQ: usize = 128;
pub const VOCAB: usize = 31;
pub const LABEL: &str = "waveresnet-d512-l8";

pub struct Checkpoint {
    pub ckpt: bool,
    cfg: PsannConfig,
    tr: Trainer,
    ids: Tensor,
    targets: Tensor,
    seed: u64,
    device: DeviceSpec,
    dtype: candle_core::DType,
    dev: Device,
}

impl Checkpoint {
    /// Builds the model and takes one untimed step (AdamW allocates its state there: part of
    /// the post-load baseline, not of a step's peak).
    pub fn new(
        ckpt: bool,
        seed: u64,
        device: DeviceSpec,
        dtype: candle_core::DType,
        dev: &Device,
    ) -> Result<Checkpoint> {
        let cfg = PsannConfig::medium(Base::Waveresnet, VOCAB);
        let model = PsannLm::with_compute(cfg, seed, dev, true, dtype)?;
        let tr = Trainer::new(
            model,
            TrainConfig {
                grad_checkpoint: ckpt,
                ..Default::default()
            },
        )?;
        Ok(Checkpoint {
            ckpt,
            cfg,
            tr,
            ids: random_ids(BATCH, SEQ, VOCAB, seed, dev)?,
            targets: random_ids(BATCH, SEQ, VOCAB, seed ^ 1, dev)?,
            seed,
            device,
            dtype,
            dev: dev.clone(),
        })
    }

    pub fn mode(&self) -> &'static str {
        if self.ckpt {
            "ckpt"
        } else {
            "no-ckpt"
        }
    }

    /// Whether this device's step peak can be measured here: the counting allocator on CPU,
    /// the CUDA memory pool on a GPU.
    pub fn peak_available(&self) -> bool {
        match self.device {
            DeviceSpec::Cpu => memory::heap_current().is_some(),
            DeviceSpec::Cuda(_) => memory::device_pool(&self.dev).is_some(),
        }
    }

    /// What memory.json says about how the peak was measured.
    fn method(&self) -> &'static str {
        match (self.device, self.peak_available()) {
            (DeviceSpec::Cpu, true) => "counting global allocator (host heap), median over the measured steps",
            (DeviceSpec::Cuda(_), true) => "CUDA memory pool (cuMemPool USED_MEM_HIGH reset before each step, minus USED_MEM_CURRENT before it; cuBLAS workspaces outside the pool), median over the measured steps",
            (DeviceSpec::Cpu, false) => "not available: the counting allocator is not this binary's global allocator",
            (DeviceSpec::Cuda(_), false) => "not available: the driver gives candle no stream-ordered memory pool to read",
        }
    }
}

impl Workload for Checkpoint {
    /// Peak memory of the step above the memory before it (host heap on CPU, device pool on
    /// CUDA); None where it cannot be measured.
    type Out = Option<u64>;

    fn group(&self) -> String {
        "checkpoint_time".into()
    }

    fn name(&self) -> String {
        format!("{LABEL}/{}", self.mode())
    }

    fn target(&self) -> Target {
        Target::new(self.device, Precision::Float(self.dtype))
    }

    fn tokens_per_iter(&self) -> u64 {
        (BATCH * SEQ) as u64
    }

    fn iterate(&mut self, _trial: u64) -> Result<(Duration, Option<u64>)> {
        crate::measure::device::sync(&self.dev)?;
        if self.device != DeviceSpec::Cpu {
            let (d, peak) = crate::workloads::device_peak_during(&self.dev, || {
                let t = std::time::Instant::now();
                self.tr.step(&self.ids, &self.targets)?;
                crate::measure::device::sync(&self.dev)?;
                Ok(t.elapsed())
            })?;
            return Ok((d, peak));
        }
        memory::reset_peak();
        let base = memory::heap_current();
        let t = std::time::Instant::now();
        self.tr.step(&self.ids, &self.targets)?;
        let d = t.elapsed();
        let peak = base.and_then(|b| Some(memory::heap_peak()?.saturating_sub(b)));
        Ok((d, peak))
    }

    fn record(&self, m: &Measured<Option<u64>>) -> Record {
        let mut r = Record::from_measured(
            Kind::Checkpoint,
            &format!("checkpoint/{LABEL}/{}", self.mode()),
            m,
            self.tokens_per_iter(),
        );
        r.model.label = LABEL.into();
        r.model.family = "psann".into();
        r.model.params = Some(self.cfg.param_count());
        // As the PSANN grid's records say them: f32 master weights, the model's sizes, the
        // sequence length as the prompt.
        r.model.weight_bytes = Some(self.cfg.param_count() * 4);
        r.model.layers = Some(self.cfg.n_layers);
        r.model.hidden = Some(self.cfg.d_model);
        r.model.vocab = Some(self.cfg.vocab);
        r.prompt_tokens = Some(SEQ);
        r.seed = Some(self.seed);
        r.shape = serde_json::json!({"batch": BATCH, "seq_len": SEQ, "vocab": VOCAB, "grad_checkpoint": self.ckpt});
        let peaks: Vec<f64> = m.outs.iter().flatten().map(|&p| p as f64).collect();
        let peak = (!peaks.is_empty() && peaks.len() == m.outs.len()).then(|| median(&peaks));
        r.memory.gpu_used_bytes = crate::measure::gpu::used_bytes();
        r.memory.gpu_method = if r.memory.gpu_used_bytes.is_some() {
            "NVML device memory in use after the steps (whole device)".into()
        } else {
            "not available (no NVIDIA driver / NVML)".into()
        };
        if self.device == DeviceSpec::Cpu {
            r.memory.host_peak_bytes = peak.map(|p| p as u64);
            r.memory.host_method = "counting global allocator: peak live heap of one train step above the live heap before it (parameters, AdamW state excluded; gradients and activations included)".into();
        } else {
            r.memory.gpu_peak_bytes = peak.map(|p| p as u64);
            r.memory.host_method =
                "not measured: the step's tensors live on the GPU (see gpu_peak_bytes)".into();
        }
        let amp = if self.dtype == candle_core::DType::F32 {
            "none (fp32; MODELBENCH_DTYPE=bf16 enables autocast; the CPU default is f32 because candle's CPU bf16 matmul is ~10x slower)".to_string()
        } else {
            format!("{} autocast (f32 master weights, {} matmuls, f32 norms/SineParam/softmax/residual)", self.dtype.as_str(), self.dtype.as_str())
        };
        r.extra = serde_json::json!({
            "base": "waveresnet", "d_model": self.cfg.d_model, "n_layers": self.cfg.n_layers,
            "grad_checkpoint": self.ckpt,
            "amp": amp,
            "max_memory_mb": peak.map(|p| p / (1u64 << 20) as f64),
            "elapsed_s": r.stats.median,
            "batch": BATCH, "seq_len": SEQ, "vocab": VOCAB,
            "memory_space": if self.device == DeviceSpec::Cpu { "host heap" } else { "device (CUDA memory pool)" },
            "method": self.method(),
            "params": self.cfg.param_count(),
        });
        r
    }
}
