//! Records: one JSON object per measured benchmark, whether `cargo bench` or the CLI ran it,
//! holding what criterion cannot: every timed sample, TTFT / TPOT / ITL percentiles, load
//! cost, memory, hardware and build. Run folders and their artifacts are in [`crate::output::report`].

use serde::{Deserialize, Serialize};

use crate::engine::generate::Trace;
use crate::engine::sampling::SamplingParams;
pub use crate::measure::gpu::{Gpu, Power};
pub use crate::measure::hardware::{Build, Hardware};
use crate::measure::stats::{percentiles, summarize, Percentiles, Summary};

/// Schema 2: typed kind/harness/dtype, `id` (criterion's benchmark id), `shape` (the join
/// key's workload shape), and metrics that were not measured are null instead of 0.
pub const SCHEMA: u32 = 2;

/// The workload a record measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Generation,
    Overhead,
    Moe,
    Psann,
    PsannTrain,
    Checkpoint,
    Perplexity,
    Depth,
    /// One architecture-sweep grid point (a forward or a train step of a backbone family).
    ArchSweep,
    /// `modelbench load`: one load level against an OpenAI-compatible server.
    ServingLoad,
    /// `modelbench peers`: one scenario run by another engine (llama.cpp, PyTorch); the
    /// record's `engine` names it.
    Peer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Generation => "generation",
            Kind::Overhead => "overhead",
            Kind::Moe => "moe",
            Kind::Psann => "psann",
            Kind::PsannTrain => "psann-train",
            Kind::Checkpoint => "checkpoint",
            Kind::Perplexity => "perplexity",
            Kind::Depth => "depth",
            Kind::ArchSweep => "arch-sweep",
            Kind::ServingLoad => "serving-load",
            Kind::Peer => "peer",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What produced a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Harness {
    /// `cargo bench`.
    Criterion,
    /// `modelbench run`, `moe`, `perplexity`.
    Cli,
}

/// The precision a record ran at: a float dtype, or quantized GGUF weights (activations in
/// f32), written as before: `f32`, `f16`, `bf16`, `gguf-q4_k_m`; or `unreported` where the
/// code that ran is not ours and does not say (a load test of another server).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Precision {
    Float(candle_core::DType),
    /// GGUF weights; the string is the file type (`q8_0`, `q4_k_m`, ...).
    Gguf(String),
    /// Not known to this process: never guessed as f32.
    Unreported,
}

impl Precision {
    pub fn name(&self) -> String {
        match self {
            Precision::Float(d) => d.as_str().to_string(),
            Precision::Gguf(t) => format!("gguf-{t}"),
            Precision::Unreported => "unreported".to_string(),
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        if let Some(t) = s.strip_prefix("gguf-") {
            return Some(Precision::Gguf(t.to_string()));
        }
        if s == "unreported" {
            return Some(Precision::Unreported);
        }
        crate::measure::device::parse_dtype(s)
            .ok()
            .or(match s {
                "f64" => Some(candle_core::DType::F64),
                _ => None,
            })
            .map(Precision::Float)
    }
}

impl Default for Precision {
    fn default() -> Self {
        Precision::Float(candle_core::DType::F32)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Precision::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown precision `{s}`")))
    }
}

/// The model a record measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub label: String,
    pub source: String,
    pub family: String,
    /// The model's sizes, as the model states them. None where the record does not know
    /// them (a load test against a server, a peer that did not say, a workload without that
    /// piece); records written before they were optional said 0 and read back as None.
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub params: Option<u64>,
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub weight_bytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub layers: Option<usize>,
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub hidden: Option<usize>,
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub vocab: Option<usize>,
    /// The longest context the model accepts, and the one it was built for (None: a model
    /// without a context limit, e.g. the MoE layer or PSANN grid, or not known).
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub max_context: Option<usize>,
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub built_context: Option<usize>,
    pub prefill_mode: String,
    pub tokenizer: String,
    /// Seconds the load took (tokenizer and weights); None where nothing was loaded (a
    /// workload that builds its model in memory) or a peer that did not say. Records written
    /// before it was optional said 0 for "not measured" and read back as None.
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub load_seconds: Option<f64>,
    pub load_heap_peak_bytes: Option<u64>,
    pub load_rss_peak_bytes: Option<u64>,
    /// The peak's rise over the resident set before the load (tokenizer and weights).
    #[serde(default)]
    pub load_rss_rise_bytes: Option<u64>,
    /// The weights' part: the peak's rise over the resident set once the tokenizer is loaded.
    #[serde(default)]
    pub load_rss_weights_rise_bytes: Option<u64>,
    #[serde(default)]
    pub load_fill_gbs: Option<f64>,
    /// What computed it and how far its outputs are exact, as the model states it
    /// (`exact_context`, `implementation`, `attention`, `gguf`: the record's last model fields).
    #[serde(flatten)]
    pub provenance: crate::models::Provenance,
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
    /// Peak bytes of candle's CUDA memory pool (see measure::memory::device_pool): for
    /// generation the pool's high-water mark over the measured calls (weights, KV cache,
    /// activations); for checkpoint one step's peak above the bytes in use before it (see the
    /// record's `extra.method`). None: not measured.
    #[serde(default)]
    pub gpu_peak_bytes: Option<u64>,
    /// The process's anonymous memory in transparent huge pages, and all of it, read after
    /// the trials (/proc/self/smaps_rollup): what shows that `build.huge_pages` took effect.
    /// None: not measured (a peer's or a load client's record) or not readable here.
    #[serde(default)]
    pub host_huge_page_bytes: Option<(u64, u64)>,
}

/// Per-token metrics of a generation benchmark (vLLM definitions; see README).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenMetrics {
    pub ttft_ms: Option<Percentiles>,
    pub tpot_ms: Option<Percentiles>,
    pub itl_ms: Option<Percentiles>,
    /// Median over trials of prompt_tokens / TTFT.
    pub prefill_tok_s: Option<f64>,
    /// Median over trials of (new_tokens - 1) / (E2E - TTFT); None for one-token runs.
    pub decode_tok_s: Option<f64>,
    pub tokenize_ms: Option<f64>,
    /// Generation steps whose logits held a NaN or an infinity, and the steps checked, over
    /// the measured trials (None: not checked: a peer's run, or a record written before the
    /// check). A count above zero means the speed is of a model that computed garbage.
    #[serde(default)]
    pub non_finite_steps: Option<u64>,
    #[serde(default)]
    pub checked_steps: Option<u64>,
}

impl GenMetrics {
    /// TTFT, TPOT and ITL, each at p50, p90 and p99, in that order (None: not measured): the
    /// nine latency columns of results.csv and of the database's `records` table.
    pub fn latency_percentiles(&self) -> Vec<Option<f64>> {
        [self.ttft_ms, self.tpot_ms, self.itl_ms]
            .into_iter()
            .flat_map(|p| [p.map(|p| p.p50), p.map(|p| p.p90), p.map(|p| p.p99)])
            .collect()
    }

    /// "NaN/Inf logits in 3 of 96 steps", when any step had them.
    pub fn non_finite_warning(&self) -> Option<String> {
        match (self.non_finite_steps, self.checked_steps) {
            (Some(n), Some(of)) if n > 0 => Some(format!("NaN/Inf logits in {n} of {of} steps")),
            _ => None,
        }
    }
}

/// The engine that produced a record's numbers. None in a record means modelbench on candle
/// (every record written before `modelbench peers` existed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    /// `candle`, `llama.cpp`, `torch`.
    pub name: String,
    /// The engine's version (`candle 0.11.1`, llama.cpp's commit, `torch 2.15.0 / transformers
    /// 5.23.0`).
    pub version: String,
    /// How it was built and run: build flags, backend, dtype, the settings that matter.
    pub flags: String,
    /// Threads the engine computed with, as the engine itself reported them (None: not known).
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub timestamp: String,
    pub harness: Harness,
    pub kind: Kind,
    /// Criterion group (the scenario for generation).
    pub scenario: String,
    /// Criterion's benchmark id, `<group>/<device>-<dtype>/<name>` (e.g.
    /// `medium/cpu-f32/fixture:llama`): baselines of different devices or dtypes never mix.
    #[serde(default)]
    pub id: String,
    /// The workload's shape (lengths, batch, grid point): with `id`, kind and sampling, what
    /// two runs are joined on.
    #[serde(default)]
    pub shape: serde_json::Value,
    pub model: ModelInfo,
    pub dtype: Precision,
    pub device: String,
    /// Prompt length (sequence length for training and forward grids) in tokens; None where
    /// the workload has none or a server reported none: never a 0 for "not applicable".
    /// Records written before it was optional said 0 and read back as None.
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub prompt_tokens: Option<usize>,
    /// Tokens generated per trial; None where the workload generates none.
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub new_tokens: Option<usize>,
    pub sampling: Option<SamplingParams>,
    pub sampling_desc: String,
    /// The seed the workload ran with; None where it draws nothing at random.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Generation length is fixed: EOS never stops a run.
    pub eos_ignored: bool,
    /// The timed region includes tokenization and streaming detokenization.
    pub pipeline: bool,
    /// Tokens one sample processes (new tokens for generation): the tok/s numerator.
    pub tokens_per_sample: u64,
    /// Every timed sample, seconds.
    pub samples_s: Vec<f64>,
    pub stats: Summary,
    /// tokens_per_sample / median sample (None when the median is not positive).
    pub tok_s: Option<f64>,
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
    pub roofline: Option<crate::measure::calibration::Roofline>,
    /// The engine that ran it (`modelbench peers`); None: modelbench on candle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// A deliberate slowdown this run carried (`MODELBENCH_INJECT_SLOWDOWN`, e.g.
    /// `decode:5%`): calibration runs only; absent in real runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<String>,
    /// A deliberate change of the numerics this run carried (`MODELBENCH_INJECT_NUMERIC`, e.g.
    /// `lm_head:0.5%`): calibration of the output verdict only; absent in real runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_numeric: Option<String>,
    /// What the model computed (issue 59): the generated ids of every trial and the model's
    /// probe; the output verdict (`judge::outputs::judge`) compares two runs' of these. None:
    /// a workload that generates no text, or a record older than the output verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<crate::measure::outputs::Outputs>,
}

impl Record {
    /// The key two runs are joined on: workload, benchmark id (group, device, dtype, name),
    /// model, sampling and the workload's shape.
    pub fn key(&self) -> String {
        format!(
            "{} | {} | {} | {} | {}",
            self.kind,
            if self.id.is_empty() {
                format!("{}/{}-{}", self.scenario, self.device, self.dtype)
            } else {
                self.id.clone()
            },
            self.model.label,
            self.sampling_desc,
            self.shape
        )
    }

    /// A record of what the trial loop measured: criterion's samples (per-iteration means of
    /// each measured routine call), the heap peak and the power of the measured calls.
    pub fn from_measured<O>(
        kind: Kind,
        scenario: &str,
        m: &crate::measure::timing::Measured<O>,
        tokens_per_sample: u64,
    ) -> Record {
        let mut r = Record::from_samples(kind, scenario, m.sample_s.clone(), tokens_per_sample);
        r.power = m.power.clone();
        r.memory.host_peak_bytes = m.heap_peak_bytes;
        r.memory.host_huge_page_bytes = m.huge_page_bytes;
        r
    }

    /// A record of timed samples (seconds), each processing `tokens_per_sample` tokens.
    pub fn from_samples(
        kind: Kind,
        scenario: &str,
        samples_s: Vec<f64>,
        tokens_per_sample: u64,
    ) -> Record {
        let stats = summarize(&samples_s);
        let ctx = crate::measure::hardware::context();
        Record {
            schema: SCHEMA,
            timestamp: crate::util::time::now_rfc3339(),
            harness: Harness::Criterion,
            kind,
            scenario: scenario.into(),
            id: String::new(),
            shape: serde_json::Value::Null,
            model: ModelInfo::default(),
            dtype: Precision::default(),
            device: String::new(),
            prompt_tokens: None,
            new_tokens: None,
            sampling: None,
            sampling_desc: String::new(),
            seed: None,
            eos_ignored: false,
            pipeline: false,
            tokens_per_sample,
            tok_s: (stats.median > 0.0).then(|| tokens_per_sample as f64 / stats.median),
            samples_s,
            stats,
            gen: None,
            memory: Memory::default(),
            power: Power::not_available(
                "not measured (no power meter in this workload's timed region)",
            ),
            hardware: ctx.hardware.with_current_gpu(),
            build: ctx.build.clone(),
            quality: None,
            extra: serde_json::Value::Null,
            roofline: None,
            engine: None,
            injected: crate::measure::inject::current().map(|i| i.to_string()),
            injected_numeric: crate::measure::inject::current_numeric().map(|n| n.to_string()),
            outputs: None,
        }
    }
}

/// Per-token metrics of a set of traces: TTFT per trial, TPOT per trial (trials with more
/// than one token), ITL pooled over all gaps of all trials.
/// Each trial's E2E, prefill and decode tok/s in trial order, by the definitions of
/// [`gen_metrics`] (E2E: generated tokens / the trace's E2E time). Paired ratios between two
/// engines run in alternation are computed from these (output::peers). None: not measurable in
/// that trial (decode of a one-token generation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialRates {
    pub e2e_tok_s: Vec<Option<f64>>,
    pub prefill_tok_s: Vec<Option<f64>>,
    pub decode_tok_s: Vec<Option<f64>>,
}

pub fn trial_rates(traces: &[Trace]) -> TrialRates {
    let pos = |x: f64| (x.is_finite() && x > 0.0).then_some(x);
    TrialRates {
        e2e_tok_s: traces
            .iter()
            .map(|t| pos(t.tokens.len() as f64 / t.e2e().as_secs_f64()))
            .collect(),
        prefill_tok_s: traces
            .iter()
            .map(|t| pos(t.prompt_tokens as f64 / t.ttft().as_secs_f64()))
            .collect(),
        decode_tok_s: traces
            .iter()
            .map(|t| {
                (t.tokens.len() > 1)
                    .then(|| (t.tokens.len() - 1) as f64 / (t.e2e() - t.ttft()).as_secs_f64())
                    .and_then(pos)
            })
            .collect(),
    }
}

impl TrialRates {
    /// The rates a record keeps in `extra.trial_rates` (None: the record has none).
    pub fn of(r: &Record) -> Option<TrialRates> {
        serde_json::from_value(r.extra.get("trial_rates")?.clone()).ok()
    }
}

pub fn gen_metrics(traces: &[Trace]) -> GenMetrics {
    // A sum over the traces, when every trace was checked.
    let checked = |f: fn(&Trace) -> Option<u64>| -> Option<u64> {
        (!traces.is_empty())
            .then(|| traces.iter().map(f).sum::<Option<u64>>())
            .flatten()
    };
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
        prefill_tok_s: (!pp.is_empty()).then(|| crate::measure::stats::median(&pp)),
        decode_tok_s: (!tg.is_empty()).then(|| crate::measure::stats::median(&tg)),
        tokenize_ms: (!tok.is_empty()).then(|| crate::measure::stats::median(&tok)),
        non_finite_steps: checked(|t| t.non_finite_steps.map(|n| n as u64)),
        checked_steps: checked(|t| t.non_finite_steps.map(|_| t.tokens.len() as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::{ModelInfo, Precision};

    /// A load that was not measured is null, not 0: written as null, and the 0 older records
    /// wrote for it reads back as None; a measured load reads back as itself.
    #[test]
    fn an_unmeasured_load_is_null_and_an_old_zero_reads_as_none() {
        let none = ModelInfo::default();
        let v = serde_json::to_value(&none).unwrap();
        assert_eq!(v["load_seconds"], serde_json::Value::Null);
        let mut old = v.clone();
        old["load_seconds"] = serde_json::json!(0.0);
        let back: ModelInfo = serde_json::from_value(old).unwrap();
        assert_eq!(back.load_seconds, None);
        let mut measured = v.clone();
        measured["load_seconds"] = serde_json::json!(1.25);
        let back: ModelInfo = serde_json::from_value(measured).unwrap();
        assert_eq!(back.load_seconds, Some(1.25));
        let mut missing = v;
        missing.as_object_mut().unwrap().remove("load_seconds");
        let back: ModelInfo = serde_json::from_value(missing).unwrap();
        assert_eq!(back.load_seconds, None);
    }

    #[test]
    fn precision_names_round_trip_and_unknown_is_not_f32() {
        for p in [
            Precision::Float(candle_core::DType::BF16),
            Precision::Gguf("q4_k_m".into()),
            Precision::Unreported,
        ] {
            let s = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Precision>(&s).unwrap(), p, "{s}");
        }
        assert_eq!(Precision::Unreported.name(), "unreported");
        assert_eq!(Precision::parse("q7"), None);
    }
}
