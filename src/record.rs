//! Records: one JSON object per measured benchmark, whether `cargo bench` or the CLI ran it,
//! holding what criterion cannot: every timed sample, TTFT / TPOT / ITL percentiles, load
//! cost, memory, hardware and build. Run folders and their artifacts are in [`crate::report`].

use serde::{Deserialize, Serialize};

use crate::generate::Trace;
use crate::sampling::SamplingParams;
use crate::stats::{percentiles, summarize, Percentiles, Summary};

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu: String,
    pub cores: usize,
    pub ram_bytes: Option<u64>,
    pub os: String,
    /// GPU facts from NVML; `None` is written as "not available" by the reports.
    pub gpu: Option<Gpu>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    pub vram_total_bytes: u64,
    pub vram_used_bytes: u64,
    pub sm_count: Option<u32>,
    pub compute_capability: String,
    pub driver: String,
    pub cuda_version: String,
}

impl Hardware {
    /// A key that identifies like-for-like hardware for comparisons.
    pub fn fingerprint(&self) -> String {
        let gpu = self
            .gpu
            .as_ref()
            .map(|g| g.name.as_str())
            .unwrap_or("no-gpu");
        format!("{} x{} | {}", self.cpu, self.cores, gpu)
    }

    pub fn describe(&self) -> String {
        let ram = self
            .ram_bytes
            .map(|b| format!("{:.0} GiB RAM", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_else(|| "RAM not available".into());
        let gpu = match &self.gpu {
            Some(g) => format!(
                "{} ({:.0} GiB VRAM, {}, compute {}, driver {}, CUDA {})",
                g.name,
                g.vram_total_bytes as f64 / (1u64 << 30) as f64,
                g.sm_count
                    .map(|s| format!("{s} SMs"))
                    .unwrap_or_else(|| "SM count not available".into()),
                g.compute_capability,
                g.driver,
                g.cuda_version
            ),
            None => "GPU: not available".into(),
        };
        format!(
            "{} ({} threads), {ram}, {}; {gpu}",
            self.cpu, self.cores, self.os
        )
    }
}

/// Probes this machine. GPU facts come from NVML when the NVIDIA library is present.
pub fn hardware() -> Hardware {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let ram_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    Hardware {
        cpu,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ram_bytes,
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        gpu: crate::gpu::facts(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub git_commit: String,
    pub git_dirty: String,
    pub rustc: String,
    pub features: String,
    pub rustflags: String,
    pub profile: String,
    pub crate_version: String,
    /// CUDA builds: nvcc release and the compute capability the kernels were built for.
    #[serde(default)]
    pub cuda: String,
}

pub fn build() -> Build {
    Build {
        git_commit: env!("BUILDINFO_GIT_COMMIT").into(),
        git_dirty: env!("BUILDINFO_GIT_DIRTY").into(),
        rustc: env!("BUILDINFO_RUSTC").into(),
        features: env!("BUILDINFO_FEATURES").into(),
        rustflags: env!("BUILDINFO_RUSTFLAGS").into(),
        profile: env!("BUILDINFO_PROFILE").into(),
        crate_version: env!("CARGO_PKG_VERSION").into(),
        cuda: env!("BUILDINFO_CUDA").into(),
    }
}

/// The model a record measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub label: String,
    pub source: String,
    pub family: String,
    pub params: u64,
    pub weight_bytes: u64,
    pub layers: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub max_context: usize,
    pub built_context: usize,
    pub prefill_mode: String,
    pub tokenizer: String,
    pub load_seconds: f64,
    pub load_heap_peak_bytes: Option<u64>,
    pub load_rss_peak_bytes: Option<u64>,
    #[serde(default)]
    pub load_fill_gbs: Option<f64>,
    /// Positions up to which the model's outputs are exact (see ModelMeta::exact_context).
    #[serde(default)]
    pub exact_context: Option<usize>,
}

/// Memory of the timed region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Peak live host heap during the timed trials (counting allocator), model included.
    pub host_peak_bytes: Option<u64>,
    pub host_method: String,
    /// GPU memory in use after the trials (NVML); None: not available.
    pub gpu_used_bytes: Option<u64>,
    pub gpu_method: String,
}

/// GPU power during the timed region and the energy per token. On machines without an
/// NVIDIA driver every number is None and `method` says "not available (...)".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// How it was measured, or why it was not.
    pub method: String,
    /// Power readings taken.
    pub samples: usize,
    pub mean_w: Option<f64>,
    pub max_w: Option<f64>,
    /// Energy of the timed region (all measured samples together), joules.
    pub energy_j: Option<f64>,
    /// Seconds the meter ran (the measured routine calls or trials).
    pub timed_s: f64,
    /// Tokens generated (or processed) in that time.
    pub tokens: u64,
    pub j_per_token: Option<f64>,
}

impl Power {
    pub fn not_available(why: &str) -> Power {
        Power {
            method: why.into(),
            ..Power::default()
        }
    }

    /// "123.4 W, 0.567 J/tok", or "not available".
    pub fn describe(&self) -> String {
        match (self.mean_w, self.j_per_token) {
            (Some(w), Some(j)) => format!("{w:.1} W, {j:.4} J/tok"),
            (Some(w), None) => format!("{w:.1} W"),
            _ => "not available".into(),
        }
    }
}

/// Per-token metrics of a generation benchmark (vLLM definitions; see README).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenMetrics {
    pub ttft_ms: Option<Percentiles>,
    pub tpot_ms: Option<Percentiles>,
    pub itl_ms: Option<Percentiles>,
    /// Median over trials of prompt_tokens / TTFT.
    pub prefill_tok_s: f64,
    /// Median over trials of (new_tokens - 1) / (E2E - TTFT).
    pub decode_tok_s: f64,
    pub tokenize_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub timestamp: String,
    /// `criterion` (cargo bench) or `cli` (modelbench run).
    pub harness: String,
    /// Workload: `generation`, `moe`, `psann`, `checkpoint`, ...
    pub kind: String,
    /// Criterion group (the scenario for generation).
    pub scenario: String,
    pub model: ModelInfo,
    pub dtype: String,
    pub device: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub sampling: Option<SamplingParams>,
    pub sampling_desc: String,
    pub seed: u64,
    /// Generation length is fixed: EOS never stops a run.
    pub eos_ignored: bool,
    /// The timed region includes tokenization and streaming detokenization.
    pub pipeline: bool,
    /// Tokens one sample processes (new tokens for generation): the tok/s numerator.
    pub tokens_per_sample: u64,
    /// Every timed sample, seconds.
    pub samples_s: Vec<f64>,
    pub stats: Summary,
    /// tokens_per_sample / median sample.
    pub tok_s: f64,
    pub gen: Option<GenMetrics>,
    pub memory: Memory,
    /// GPU power and energy per token of the timed region.
    #[serde(default)]
    pub power: Power,
    pub hardware: Hardware,
    pub build: Build,
    /// Result of a quality gate, when one ran.
    pub quality: Option<serde_json::Value>,
    /// Workload-specific fields.
    #[serde(default)]
    pub extra: serde_json::Value,
    /// Achieved bandwidth / FLOP rate and their share of the calibrated peaks.
    #[serde(default)]
    pub roofline: Option<crate::roofline::Roofline>,
}

impl Record {
    /// The key two runs are joined on.
    pub fn key(&self) -> (String, String, String, String) {
        (
            self.scenario.clone(),
            self.model.label.clone(),
            self.dtype.clone(),
            self.device.clone(),
        )
    }

    /// A record of what [`crate::bench::timed`] measured.
    pub fn from_timed(
        kind: &str,
        scenario: &str,
        t: crate::bench::Timed,
        tokens_per_sample: u64,
    ) -> Record {
        let mut r = Record::from_samples(kind, scenario, t.samples_s, tokens_per_sample);
        r.power = t.power;
        r
    }

    /// A record of timed samples (seconds), each processing `tokens_per_sample` tokens.
    pub fn from_samples(
        kind: &str,
        scenario: &str,
        samples_s: Vec<f64>,
        tokens_per_sample: u64,
    ) -> Record {
        let stats = summarize(&samples_s);
        Record {
            schema: SCHEMA,
            timestamp: crate::report::now_rfc3339(),
            harness: "criterion".into(),
            kind: kind.into(),
            scenario: scenario.into(),
            model: ModelInfo::default(),
            dtype: String::new(),
            device: String::new(),
            prompt_tokens: 0,
            new_tokens: 0,
            sampling: None,
            sampling_desc: String::new(),
            seed: 0,
            eos_ignored: false,
            pipeline: false,
            tokens_per_sample,
            tok_s: if stats.median > 0.0 {
                tokens_per_sample as f64 / stats.median
            } else {
                0.0
            },
            samples_s,
            stats,
            gen: None,
            memory: Memory::default(),
            power: Power::not_available(
                "not measured (no power meter in this workload's timed region)",
            ),
            hardware: hardware(),
            build: build(),
            quality: None,
            extra: serde_json::Value::Null,
            roofline: None,
        }
    }
}

/// Per-token metrics of a set of traces: TTFT per trial, TPOT per trial (trials with more
/// than one token), ITL pooled over all gaps of all trials.
pub fn gen_metrics(traces: &[Trace]) -> GenMetrics {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let ttft: Vec<f64> = traces.iter().map(|t| ms(t.ttft())).collect();
    let tpot: Vec<f64> = traces.iter().filter_map(|t| t.tpot().map(ms)).collect();
    let itl: Vec<f64> = traces.iter().flat_map(|t| t.itl()).map(ms).collect();
    let pp: Vec<f64> = traces
        .iter()
        .map(|t| t.prompt_tokens as f64 / t.ttft().as_secs_f64().max(1e-12))
        .collect();
    let tg: Vec<f64> = traces
        .iter()
        .filter(|t| t.tokens.len() > 1)
        .map(|t| (t.tokens.len() - 1) as f64 / (t.e2e() - t.ttft()).as_secs_f64().max(1e-12))
        .collect();
    let tok: Vec<f64> = traces
        .iter()
        .filter(|t| t.text.is_some())
        .map(|t| ms(t.tokenize))
        .collect();
    GenMetrics {
        ttft_ms: percentiles(&ttft),
        tpot_ms: percentiles(&tpot),
        itl_ms: percentiles(&itl),
        prefill_tok_s: if pp.is_empty() {
            0.0
        } else {
            crate::stats::median(&pp)
        },
        decode_tok_s: if tg.is_empty() {
            0.0
        } else {
            crate::stats::median(&tg)
        },
        tokenize_ms: (!tok.is_empty()).then(|| crate::stats::median(&tok)),
    }
}
