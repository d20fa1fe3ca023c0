//! Flags shared by several commands, and their validation into library types.

use crate::config::knobs::default_of;
use crate::config::plans::check_label;
use crate::measure::device::{parse_dtype, DeviceSpec};
use clap::Args;

/// `modelbench moe`: the moe bench's grid (its knobs' defaults), from the CLI.
#[derive(Args)]
pub struct MoeArgs {
    /// Expert counts, comma list (as MODELBENCH_MOE_EXPERTS).
    #[arg(long, default_value = default_of("MODELBENCH_MOE_EXPERTS"))]
    pub num_experts: String,
    /// Experts per token, comma list, none above the smallest expert count; also the dense
    /// rows' sizes (as MODELBENCH_MOE_TOPK).
    #[arg(long, default_value = default_of("MODELBENCH_MOE_TOPK"))]
    pub top_k: String,
    /// Tokens per call, comma list (1 = decode, hundreds = prefill; as MODELBENCH_MOE_TOKENS).
    #[arg(long, default_value = default_of("MODELBENCH_MOE_TOKENS"))]
    pub tokens: String,
    /// Hidden size (as MODELBENCH_MOE_HIDDEN).
    #[arg(long, default_value = default_of("MODELBENCH_MOE_HIDDEN"))]
    pub hidden: String,
    /// Per-expert intermediate size (as MODELBENCH_MOE_INTERMEDIATE).
    #[arg(long, default_value = default_of("MODELBENCH_MOE_INTERMEDIATE"))]
    pub intermediate: String,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Timed calls.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    #[arg(long, default_value = default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// The one switch between the bench path's kernels and the faster ones for the batched
/// Gemma 3 (`serve`, and `verify`, which judges what `serve` would run).
#[derive(Args)]
pub struct FastWeightsArg {
    /// Run the batched Gemma 3 on the project's kernels instead of candle's: AVX-512 VNNI
    /// matmuls for Q8_0/Q5_0/Q4_K/Q6_K weights (ggml's activation blocks per type, each
    /// weight tile read once for up to 4 sequences), GELU and softmax on the host (without
    /// AVX-512 VNNI: Q5_0 as Q8_0 on candle's SIMD loop). Logits change in float rounding; on Gemma 3 270M the
    /// KL-divergence gate against llama.cpp passes (`verify --fast-weights`; docs/serving.md).
    /// Off by default.
    #[arg(long)]
    pub fast_weights: bool,
}

/// Where a CLI measurement runs and where its record goes (run, moe, perplexity).
#[derive(Args)]
pub struct TargetArgs {
    #[arg(long, default_value = default_of("MODELBENCH_DEVICE"))]
    pub device: String,
    /// f32, f16 or bf16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Run folder suffix.
    #[arg(long)]
    pub label: Option<String>,
    /// Do not write a run folder.
    #[arg(long)]
    pub no_save: bool,
}

impl TargetArgs {
    /// The validated device, dtype (the device's default when not given) and label.
    pub fn resolve(&self) -> crate::Result<(DeviceSpec, candle_core::DType, Option<String>)> {
        let (spec, dtype) = device_and_dtype(&self.device, self.dtype.as_deref())?;
        let label = self
            .label
            .as_deref()
            .map(|l| check_label(l, "--label"))
            .transpose()?;
        Ok((spec, dtype, label))
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// quick (short, medium), standard (+ prefill, decode, sampled) or full (all seven).
    #[arg(long, default_value = default_of("MODELBENCH_TIER"))]
    pub suite: String,
    /// Scenario by name, repeatable, instead of the suite (e.g. long-8k, long-16k, in no tier).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// Model reference, repeatable: fixture:<family>, synthetic:<name>, owner/repo[@rev], or a directory.
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// Untimed runs of each scenario before the trials.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed trials per scenario (their median is the headline). The default, 10, gives
    /// `compare` enough samples for a verdict (it needs at least 5 a side).
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    #[arg(long, default_value = default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also pack the run folder into <run>.zip.
    #[arg(long)]
    pub zip: bool,
    /// Ad hoc: prompt length (with --max-new-tokens, replaces the suite).
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Attention backend: eager, flash (CUDA builds with --features flash-attn), chunked or
    /// chunked:N (the prompt in N-token chunks at increasing positions).
    #[arg(long, default_value = default_of("MODELBENCH_ATTENTION"))]
    pub attention: String,
}

/// `modelbench depth`.
#[derive(Args)]
pub struct DepthArgs {
    /// Model reference, repeatable (one line per model in the plot).
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// KV-cache depths, comma list of integers >= 0 (default: MODELBENCH_DEPTHS's).
    #[arg(long, default_value = default_of("MODELBENCH_DEPTHS"))]
    pub depths: String,
    /// Prefill tokens timed at each depth (0: none).
    #[arg(long, default_value = default_of("MODELBENCH_DEPTH_PROMPT"))]
    pub prompt: usize,
    /// Decode tokens timed at each depth (0: none).
    #[arg(long, default_value = default_of("MODELBENCH_DEPTH_GEN"))]
    pub gen: usize,
    /// Untimed iterations per depth before the trials.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed iterations per depth.
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    #[arg(long, default_value = default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    /// Attention backend: eager, flash, chunked or chunked:N.
    #[arg(long, default_value = default_of("MODELBENCH_ATTENTION"))]
    pub attention: String,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn device_and_dtype(
    device: &str,
    dtype: Option<&str>,
) -> crate::Result<(DeviceSpec, candle_core::DType)> {
    let spec: DeviceSpec = device.parse().map_err(|e: String| {
        fail!(
            "--device {device:?}: {e} (allowed: {})",
            DeviceSpec::ALLOWED
        )
    })?;
    let dt = match dtype {
        Some(d) => {
            parse_dtype(d).map_err(|e| fail!("--dtype {d:?}: {e} (allowed: f32, f16, bf16)"))?
        }
        None => spec.default_dtype(),
    };
    Ok((spec, dt))
}

/// `modelbench generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Model reference (fixture:, synthetic:, gguf:, a hub repo or a directory).
    #[arg(long)]
    pub model: String,
    /// Text to continue.
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[arg(long, default_value = default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    #[arg(long, default_value = default_of("MODELBENCH_DEVICE"))]
    pub device: String,
    /// f32, f16 or bf16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Also print the generated token ids.
    #[arg(long)]
    pub ids: bool,
}

/// Sampling flags of `run` (ad-hoc scenarios) and `generate`.
#[derive(Args, Default)]
pub struct SamplingArgs {
    /// 0 = greedy (argmax).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
}

impl SamplingArgs {
    /// The validated sampling parameters (repetition window 64, as the scenarios use).
    pub fn params(&self) -> crate::Result<crate::engine::sampling::SamplingParams> {
        let p = crate::engine::sampling::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            repeat_last_n: 64,
        };
        p.validate()
            .map_err(|e| fail!("--temperature/--top-k/--top-p/--repetition-penalty: {e}"))?;
        Ok(p)
    }
}

/// `modelbench train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Training config (flat TOML; default configs/tiny_corpus_benchmark.toml, or
    /// configs/base_shootout.toml with --shootout).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Override the config's corpus file.
    #[arg(long)]
    pub corpus: Option<std::path::PathBuf>,
    /// Override the config's max_steps (optimizer steps per run).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Override the config's peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Base shootout: train every base of --bases with every seed of --seeds on the config's budget;
    /// summary.json, summary.csv, leaderboard.md and runs/<base>_seed<seed>/metrics.json.
    #[arg(long)]
    pub shootout: bool,
    /// Bases of the shootout, comma list.
    #[arg(long, default_value = "respsann,sgrpsann,waveresnet")]
    pub bases: String,
    /// Seeds of the shootout, comma list.
    #[arg(long, default_value = "1337,1338")]
    pub seeds: String,
    /// Run folder suffix (default: train or shootout).
    #[arg(long)]
    pub label: Option<String>,
    /// Also pack the run folder into <run>.zip.
    #[arg(long)]
    pub zip: bool,
}

/// `modelbench train-sweep`: the training-throughput sweep.
#[derive(Args)]
pub struct TrainSweepArgs {
    /// Matmul precisions, comma list of f32, f16, bf16 (parameters stay f32; as
    /// MODELBENCH_TRAIN_STEP_DTYPES).
    #[arg(long, default_value = default_of("MODELBENCH_TRAIN_STEP_DTYPES"))]
    pub precision: String,
    /// Sequence lengths, comma list (as MODELBENCH_TRAIN_STEP_SEQS).
    #[arg(long, default_value = default_of("MODELBENCH_TRAIN_STEP_SEQS"))]
    pub seq: String,
    /// Batch sizes (sequences), comma list (as MODELBENCH_TRAIN_STEP_BATCHES).
    #[arg(long, default_value = default_of("MODELBENCH_TRAIN_STEP_BATCHES"))]
    pub batch: String,
    /// Timed steps per point (after one untimed warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// AdamW learning rate of the train steps (TrainConfig's 2e-4; a step's cost does not
    /// depend on it). A step that turns NaN or infinite fails the command (exit 1).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// respsann, sgrpsann or waveresnet (byte vocabulary, d_model 64, 2 layers, 4 heads).
    #[arg(long, default_value = "waveresnet")]
    pub base: String,
    #[arg(long, default_value = default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    #[arg(long, default_value = default_of("MODELBENCH_DEVICE"))]
    pub device: String,
    /// Run folder suffix (default: sweep).
    #[arg(long)]
    pub label: Option<String>,
    /// Also pack the run folder into <run>.zip.
    #[arg(long)]
    pub zip: bool,
}

/// `modelbench sweep`: the architecture sweep. Every flag given replaces the
/// config's value.
#[derive(Args)]
pub struct SweepArgs {
    /// Queue config (configs/benchmarks/{baseline_cpu,omni_gpu,hybrid_gpu}.yaml).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Comma list: dense, mixture (omni_mixture), state_space, hybrid (hybrid_transformer).
    #[arg(long)]
    pub architectures: Option<String>,
    /// Model widths, comma list.
    #[arg(long)]
    pub model_dims: Option<String>,
    /// Layer counts, comma list.
    #[arg(long)]
    pub depths: Option<String>,
    /// Future tokens predicted per position (heads), comma list.
    #[arg(long)]
    pub horizons: Option<String>,
    /// cpu or gpu (CUDA device 0; needs a `--features cuda` build and a GPU).
    #[arg(long)]
    pub accelerator: Option<String>,
    /// The parquet file (one row per grid point); the telemetry table goes beside it as .md.
    #[arg(long)]
    pub output: std::path::PathBuf,
    /// Do not also save the records in a run folder.
    #[arg(long)]
    pub no_save: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_dtype_name_the_flag_and_what_is_allowed() {
        let (spec, dt) = device_and_dtype("cpu", None).unwrap();
        assert_eq!(dt, spec.default_dtype());
        assert_eq!(
            device_and_dtype("cpu", Some("f16")).unwrap().1,
            candle_core::DType::F16
        );
        let e = device_and_dtype("tpu", None).unwrap_err().to_string();
        assert!(
            e.starts_with("--device \"tpu\": ")
                && e.ends_with(&format!("(allowed: {})", DeviceSpec::ALLOWED)),
            "{e}"
        );
        let e = device_and_dtype("cpu", Some("f8")).unwrap_err().to_string();
        assert!(
            e.starts_with("--dtype \"f8\": ") && e.ends_with("(allowed: f32, f16, bf16)"),
            "{e}"
        );
    }

    #[test]
    fn sampling_flags_are_checked_together() {
        assert!(SamplingArgs::default().params().is_ok());
        let bad = SamplingArgs {
            temperature: -1.0,
            ..SamplingArgs::default()
        };
        let e = bad.params().unwrap_err().to_string();
        assert!(
            e.starts_with("--temperature/--top-k/--top-p/--repetition-penalty: "),
            "{e}"
        );
    }
}
