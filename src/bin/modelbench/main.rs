//! The `modelbench` CLI: the seed-003 harness (`run`), run folders (`report`, `compare`,
//! `export`), and what is available (`list`). Same library as the criterion benches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use modelbench::config::plans::{check_label, parse_models, parse_seed, Plan};
use modelbench::engine::sampling::SamplingParams;
use modelbench::engine::scenario::{prepare, Scenario, Tier};
use modelbench::measure::device::{parse_dtype, DeviceSpec};
use modelbench::models::loading::{load_line, open};
use modelbench::models::source::{
    fixture_cache_dir, hub_cache_dir, offline, SOURCES_HELP, SYNTHETIC,
};
use modelbench::output::compare::{compare, parse_threshold, render};
use modelbench::output::report::{
    latency_table, read_run, reports_root, table, write_artifacts, RunDir,
};

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;

#[derive(Parser)]
#[command(name = "modelbench", version, about = "Benchmarks language models on Hugging Face Candle", after_help = after_help())]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

fn after_help() -> String {
    let mut s = modelbench::config::knobs::help();
    s.push_str("\nExit codes: 0 success; 1 regression found (compare); 2 bad input.");
    s
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenarios, tiers, model sources and which models are already in the cache.
    List,
    /// Run a suite tier (or one ad-hoc scenario) on one or more models and save a run.
    Run(RunArgs),
    /// Re-render the artifacts (README.md, results.csv, summary.json) of a run.
    Report {
        /// Run folder (default: the newest under target-reports/).
        run: Option<PathBuf>,
    },
    /// Compare two runs; exit 1 when a benchmark is slower beyond the threshold with 95%
    /// confidence (bootstrap CI of the median ratio), 0 otherwise, 2 on unusable input.
    Compare {
        base: PathBuf,
        new: PathBuf,
        /// Slowdown that counts as a regression, e.g. 5% or 0.05.
        #[arg(long, default_value = "5%")]
        threshold: String,
        /// Compare runs taken on different hardware anyway.
        #[arg(long)]
        force: bool,
    },
    /// Continuous benchmarking: run the benchmarks a JSON config lists, save a run labelled
    /// `cont-<name>`, compare it with the previous run of the same config, exit 1 on a
    /// regression (see scripts/continuous.sh and scripts/continuous.example.json).
    Continuous {
        config: PathBuf,
        /// Compare runs taken on different hardware anyway.
        #[arg(long)]
        force: bool,
    },
    /// Time one MoE feed-forward block (router, top-k, SwiGLU experts, combine): latency
    /// median and p90, tokens/s; saved as records like the generation runs.
    Moe(MoeArgs),
    /// Measure this machine's limits (memory read bandwidth, matmul throughput) once and
    /// cache them in target-reports/machine.json; records then show utilisation.
    Calibrate {
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Dtypes to calibrate (default: the device's default dtype).
        #[arg(long = "dtype")]
        dtypes: Vec<String>,
        /// Measure again even if a calibration is cached.
        #[arg(long)]
        force: bool,
    },
    /// Sliding-window perplexity of a text file: mean NLL, perplexity, tokens scored, tok/s.
    Perplexity {
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 1024)]
        seq_len: usize,
        #[arg(long, default_value_t = 256)]
        stride: usize,
        #[command(flatten)]
        target: TargetArgs,
        /// UTF-8 text to score.
        file: PathBuf,
    },
    /// Export a run as metric-registry JSONL (id, value, unit, higher_is_better).
    Export {
        run: Option<PathBuf>,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct MoeArgs {
    #[arg(long, default_value_t = 16)]
    num_experts: usize,
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Tokens per call (1 = decode, hundreds = prefill).
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    #[arg(long, default_value_t = modelbench::models::moe::MoeConfig::DEFAULT_HIDDEN)]
    hidden: usize,
    /// Per-expert intermediate size.
    #[arg(long, default_value_t = modelbench::models::moe::MoeConfig::DEFAULT_EXPERT_INTERMEDIATE)]
    intermediate: usize,
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Timed calls.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    target: TargetArgs,
}

/// Where a CLI measurement runs and where its record goes (run, moe, perplexity).
#[derive(Args)]
struct TargetArgs {
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    dtype: Option<String>,
    /// Run folder suffix.
    #[arg(long)]
    label: Option<String>,
    /// Do not write a run folder.
    #[arg(long)]
    no_save: bool,
}

impl TargetArgs {
    /// The validated device, dtype (the device's default when not given) and label.
    fn resolve(&self) -> anyhow::Result<(DeviceSpec, candle_core::DType, Option<String>)> {
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
struct RunArgs {
    /// quick (short, medium), standard (+ prefill, decode, sampled) or full (all seven).
    #[arg(long, default_value = "quick")]
    suite: String,
    /// Model reference, repeatable: fixture:<family>, synthetic:<name>, owner/repo[@rev], or a directory.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Untimed runs of each scenario before the trials.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed trials per scenario (their median is the headline).
    #[arg(long, default_value_t = 3)]
    trials: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    target: TargetArgs,
    /// Also pack the run folder into <run>.zip.
    #[arg(long)]
    zip: bool,
    /// Ad hoc: prompt length (with --max-new-tokens, replaces the suite).
    #[arg(long)]
    prompt_tokens: Option<usize>,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::List => list().map(|_| ExitCode::SUCCESS),
        Cmd::Run(a) => run(a).map(|_| ExitCode::SUCCESS),
        Cmd::Report { run } => report(run).map(|_| ExitCode::SUCCESS),
        Cmd::Compare {
            base,
            new,
            threshold,
            force,
        } => compare_cmd(&base, &new, &threshold, force),
        Cmd::Export { run, out } => export(run, out).map(|_| ExitCode::SUCCESS),
        Cmd::Continuous { config, force } => continuous(&config, force),
        Cmd::Moe(a) => moe(a).map(|_| ExitCode::SUCCESS),
        Cmd::Perplexity {
            model,
            seq_len,
            stride,
            target,
            file,
        } => perplexity(&model, seq_len, stride, &target, &file).map(|_| ExitCode::SUCCESS),
        Cmd::Calibrate {
            device,
            dtypes,
            force,
        } => calibrate(&device, &dtypes, force).map(|_| ExitCode::SUCCESS),
    };
    match out {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn list() -> anyhow::Result<()> {
    println!("Scenarios (prompt/new tokens, sampling):");
    for s in Scenario::all() {
        println!(
            "  {:<10} {:>5}/{:<4} {:<34} {}",
            s.name,
            s.prompt_tokens,
            s.new_tokens,
            s.sampling.describe(),
            s.purpose
        );
    }
    println!("\nTiers:");
    for t in [Tier::Quick, Tier::Standard, Tier::Full] {
        println!("  {:<9} {}", t.name(), t.scenario_names().join(", "));
    }
    println!("\nModel sources: {SOURCES_HELP}");
    println!(
        "  synthetic shapes: {}",
        SYNTHETIC
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "\nFixtures written under {}:",
        fixture_cache_dir().display()
    );
    print_cached(&fixture_cache_dir());
    println!(
        "\nHugging Face cache {} (offline: {}):",
        hub_cache_dir().display(),
        offline()
    );
    print_cached(&hub_cache_dir());
    Ok(())
}

fn print_cached(dir: &Path) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("models--").map(|r| r.replacen("--", "/", 1))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        println!("  (none)");
    }
    for f in found {
        println!("  {f}");
    }
}

fn scenarios_of(a: &RunArgs) -> anyhow::Result<Vec<Scenario>> {
    match (a.prompt_tokens, a.max_new_tokens) {
        (Some(p), Some(g)) => {
            let sampling = SamplingParams {
                temperature: a.temperature,
                top_k: a.top_k,
                top_p: a.top_p,
                repetition_penalty: a.repetition_penalty,
                repeat_last_n: 64,
            };
            sampling.validate().map_err(|e| {
                anyhow::anyhow!("--temperature/--top-k/--top-p/--repetition-penalty: {e}")
            })?;
            anyhow::ensure!(
                p > 0 && g > 0,
                "--prompt-tokens and --max-new-tokens must be at least 1"
            );
            Ok(vec![Scenario::custom(p, g, sampling)])
        }
        (None, None) => {
            let t = Tier::parse(&a.suite).ok_or_else(|| {
                anyhow::anyhow!(
                    "--suite {:?}: unknown tier (allowed: {})",
                    a.suite,
                    Tier::ALLOWED
                )
            })?;
            Ok(t.scenarios())
        }
        _ => anyhow::bail!("--prompt-tokens and --max-new-tokens go together"),
    }
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    execute(&a).map(|_| ())
}

/// Runs the suite and prints the tables; returns the run folder (not written with --no-save).
fn execute(a: &RunArgs) -> anyhow::Result<PathBuf> {
    let scenarios = scenarios_of(a)?;
    anyhow::ensure!(a.trials >= 1, "--trials must be at least 1");
    let (device, dtype, label) = a.target.resolve()?;
    let plan = Plan {
        models: parse_models(&a.models.join(","), "--model")?,
        tier: Tier::parse(&a.suite),
        scenarios,
        device,
        dtype,
        seed: parse_seed(&a.seed.to_string(), "--seed")?,
        min_measure: std::time::Duration::ZERO,
        label,
    };
    let mut prepared = Vec::new();
    for (l, r) in &plan.models {
        prepared.push(prepare(l, r, &plan.scenarios)?);
    }
    let dev = plan.device.open_for("--device")?;
    let mut run = RunDir::new(&reports_root(), plan.label.as_deref());
    run_suite(&plan, prepared, &dev, a, &mut run)?;
    println!("\n{}", table(run.records()));
    println!("{}", latency_table(run.records()));
    if a.target.no_save {
        return Ok(run.path);
    }
    println!("saved {}", run.path.display());
    if a.zip {
        let z = modelbench::output::report::zip_run(&run.path)?;
        println!("packed {}", z.display());
    }
    Ok(run.path)
}

/// A continuous-benchmarking config.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ContinuousConfig {
    name: String,
    models: Vec<String>,
    #[serde(default = "default_suite")]
    suite: String,
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default = "one")]
    warmup: usize,
    #[serde(default = "five")]
    trials: usize,
    #[serde(default = "default_threshold")]
    threshold: String,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default = "default_seed")]
    seed: u64,
}

fn default_suite() -> String {
    "quick".into()
}
fn one() -> usize {
    1
}
fn five() -> usize {
    5
}
fn default_threshold() -> String {
    "5%".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_seed() -> u64 {
    42
}

fn continuous(config: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("{}: cannot read", config.display()))?;
    let c: ContinuousConfig = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid config: {e}", config.display()))?;
    let label = format!("cont-{}", c.name);
    check_label(&label, "name")?;
    let threshold = parse_threshold(&c.threshold)
        .map_err(|e| anyhow::anyhow!("{}: threshold: {e}", config.display()))?;
    let previous = runs_with_suffix(&format!("-{label}")).pop();
    let args = RunArgs {
        suite: c.suite.clone(),
        models: c.models.clone(),
        warmup: c.warmup,
        trials: c.trials,
        seed: c.seed,
        target: TargetArgs {
            device: c.device.clone(),
            dtype: c.dtype.clone(),
            label: Some(label),
            no_save: false,
        },
        zip: false,
        prompt_tokens: c.prompt_tokens,
        max_new_tokens: c.max_new_tokens,
        temperature: 0.0,
        top_k: None,
        top_p: None,
        repetition_penalty: None,
    };
    let dir = execute(&args)?;
    modelbench::util::fsio::atomic_write(
        &dir.join("continuous.json"),
        serde_json::to_string_pretty(&c)?.as_bytes(),
    )?;
    let Some(prev) = previous else {
        println!(
            "no previous run of `{}`: this run is the first baseline",
            c.name
        );
        return Ok(ExitCode::SUCCESS);
    };
    println!("comparing with {}", prev.display());
    let cmp = compare(&read_run(&prev)?, &read_run(&dir)?, threshold, force)?;
    print!("{}", render(&cmp));
    Ok(if cmp.regressions() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Run folders whose name ends with `suffix`, oldest first.
fn runs_with_suffix(suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(reports_root())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("results.jsonl").is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        })
        .collect();
    v.sort();
    v
}

fn run_suite(
    plan: &Plan,
    prepared: Vec<modelbench::models::source::Resolved>,
    dev: &candle_core::Device,
    a: &RunArgs,
    run: &mut RunDir,
) -> anyhow::Result<()> {
    use modelbench::workloads::generation::Generation;
    let total = prepared.len() * plan.scenarios.len() * (a.warmup + a.trials);
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs {msg}")
            .expect("valid template"),
    );
    let calibration = modelbench::measure::calibration::cached(plan.device);
    for res in prepared {
        let label = res.label.clone();
        bar.set_message(format!("loading {label}"));
        // One load per suite and model; dropped (memory released) before the next model.
        let mut loaded = open(res, dev, plan.dtype, Some(plan.context_cap()))?;
        bar.println(load_line(&loaded));
        for s in &plan.scenarios {
            let mut w = Generation {
                loaded: &mut loaded,
                scenario: s,
                seed: plan.seed,
                device: plan.device,
                dtype: plan.dtype,
                calibration: calibration.clone(),
            };
            let rec = modelbench::workloads::run_trials_with(
                &mut w,
                a.warmup,
                a.trials,
                &mut |_, warm| {
                    bar.set_message(format!(
                        "{label} {} {}",
                        s.name,
                        if warm { "warm-up" } else { "trial" }
                    ));
                    bar.inc(1);
                },
            )
            .with_context(|| format!("{label} / {}", s.name))?;
            let power = if rec.power.mean_w.is_some() {
                format!("  GPU {}", rec.power.describe())
            } else {
                String::new()
            };
            let p50 = |p: Option<modelbench::measure::stats::Percentiles>| {
                modelbench::output::report::na(p.map(|p| p.p50), 2)
            };
            bar.println(format!(
                "{label:>24} {:<10} {:>9} tok/s  TTFT p50 {:>8} ms  TPOT p50 {:>7} ms{power}",
                s.name,
                modelbench::output::report::na(rec.tok_s, 1),
                p50(rec.gen.as_ref().and_then(|g| g.ttft_ms)),
                p50(rec.gen.as_ref().and_then(|g| g.tpot_ms)),
            ));
            if a.target.no_save {
                run.push_unsaved(rec);
            } else {
                run.push(rec)?;
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn device_and_dtype(
    device: &str,
    dtype: Option<&str>,
) -> anyhow::Result<(DeviceSpec, candle_core::DType)> {
    let spec: DeviceSpec = device.parse().map_err(|e: String| {
        anyhow::anyhow!(
            "--device {device:?}: {e} (allowed: {})",
            DeviceSpec::ALLOWED
        )
    })?;
    let dt = match dtype {
        Some(d) => parse_dtype(d)
            .map_err(|e| anyhow::anyhow!("--dtype {d:?}: {e} (allowed: f32, f16, bf16)"))?,
        None => spec.default_dtype(),
    };
    Ok((spec, dt))
}

fn moe(a: MoeArgs) -> anyhow::Result<()> {
    use modelbench::models::moe::MoeConfig;
    use modelbench::workloads::moe::Moe;
    let cfg = MoeConfig::new(a.hidden, a.intermediate, a.num_experts, a.top_k);
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--num-experts/--top-k: {e}"))?;
    anyhow::ensure!(
        a.tokens > 0 && a.iters > 0,
        "--tokens and --iters must be at least 1"
    );
    let (spec, dtype, label) = a.target.resolve()?;
    let dev = spec.open_for("--device")?;
    let cal = modelbench::measure::calibration::cached(spec);
    let mut w = Moe::new(cfg, false, a.tokens, a.seed, spec, dtype, &dev, cal)?;
    let r = modelbench::workloads::run_trials(&mut w, a.warmup, a.iters)?;
    let mut sorted = r.samples_s.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}: median {:.3} ms, p90 {:.3} ms, {} tokens/s ({} calls, hidden {}, expert intermediate {}, {})",
        r.id,
        r.stats.median * 1e3,
        modelbench::measure::stats::percentile(&sorted, 0.9) * 1e3,
        modelbench::output::report::na(r.tok_s, 1),
        r.stats.n,
        a.hidden,
        a.intermediate,
        r.dtype
    );
    if !a.target.no_save {
        let mut run = RunDir::new(&reports_root(), label.as_deref());
        run.push(r)?;
        println!("saved {}", run.path.display());
    }
    Ok(())
}

fn perplexity(
    model: &str,
    seq_len: usize,
    stride: usize,
    target: &TargetArgs,
    file: &Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read the text", file.display()))?;
    let (spec, dt, label) = target.resolve()?;
    let models = parse_models(model, "--model")?;
    let (l, r) = &models[0];
    let res = prepare(l, r, &[])?;
    let tok_path = res
        .tokenizer
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{l}: perplexity needs the model's tokenizer.json"))?;
    let dev = spec.open_for("--device")?;
    let mut loaded = open(res, &dev, dt, Some(seq_len))?;
    if let Some(w) = loaded.model.meta().exact_context {
        anyhow::ensure!(
            seq_len < w,
            "--seq-len {seq_len}: {l} computes exactly only up to {w} positions in candle 0.11 (quantized Gemma3 decodes without its sliding-window mask); use --seq-len {} or less",
            w - 1
        );
    }
    let tok = loaded
        .tokenizer
        .as_ref()
        .expect("loaded with the tokenizer");
    let ids = modelbench::models::tokenizer::encode(tok, &text)?;
    let bos = modelbench::models::tokenizer::bos_id(tok);
    let mut w = modelbench::workloads::perplexity::Perplexity {
        loaded: &mut loaded,
        text_name: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ids,
        seq_len,
        stride,
        bos,
        device: spec,
        dtype: dt,
    };
    let r = modelbench::workloads::run_trials(&mut w, 0, 1)?;
    let p: modelbench::engine::perplexity::Perplexity = serde_json::from_value(r.extra.clone())?;
    println!(
        "{l} on {}: perplexity {:.3} (mean NLL {:.4} nats), {} tokens scored in {} windows (seq-len {}, stride {}), {:.1} tok/s, {:.1} s; tokenizer {}",
        file.display(), p.perplexity, p.mean_nll, p.tokens_scored, p.windows, p.seq_len, p.stride, p.tok_s, p.seconds, tok_path.display()
    );
    if !target.no_save {
        let mut run = RunDir::new(&reports_root(), label.as_deref());
        run.push(r)?;
        println!("saved {}", run.path.display());
    }
    Ok(())
}

fn calibrate(device: &str, dtypes: &[String], force: bool) -> anyhow::Result<()> {
    let (spec, default) = device_and_dtype(device, None)?;
    let mut dts = Vec::new();
    for d in dtypes {
        dts.push(
            parse_dtype(d)
                .map_err(|e| anyhow::anyhow!("--dtype {d:?}: {e} (allowed: f32, f16, bf16)"))?,
        );
    }
    if dts.is_empty() {
        dts.push(default);
    }
    // A device this binary cannot open is a --device error, cached or not.
    spec.open_for("--device")?;
    let cached = modelbench::measure::calibration::cached(spec);
    let have_all = cached
        .as_ref()
        .is_some_and(|c| dts.iter().all(|d| c.mem_read_gbs.contains_key(d.as_str())));
    let cal = if have_all && !force {
        println!(
            "cached calibration ({}; --force re-measures):",
            modelbench::measure::calibration::machine_json().display()
        );
        cached.expect("checked")
    } else {
        println!(
            "calibrating {spec} for {} ...",
            dts.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        modelbench::measure::calibration::calibrate(spec, &dts)?
    };
    println!(
        "{} | {} (measured {})",
        cal.fingerprint, cal.device, cal.measured_at
    );
    for (d, v) in &cal.mem_read_gbs {
        println!(
            "  {d:<5} memory read {v:>8.1} GB/s   matmul {:>9.1} GFLOP/s",
            cal.matmul_gflops.get(d).copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn latest_run() -> anyhow::Result<PathBuf> {
    let root = reports_root();
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("{}: no runs yet", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("results.jsonl").is_file())
        .collect();
    runs.sort();
    runs.pop()
        .ok_or_else(|| anyhow::anyhow!("{}: no runs yet", root.display()))
}

fn report(run: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match run {
        Some(r) => r,
        None => latest_run()?,
    };
    let records = read_run(&dir)?;
    write_artifacts(&dir, &records)?;
    let tput = dir.join("throughput.csv");
    if tput.is_file() {
        let grid = records
            .iter()
            .find_map(|r| {
                r.extra
                    .get("grid")
                    .and_then(|g| g.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "default".into());
        modelbench::output::report::write_throughput_views(
            &dir,
            &grid,
            &modelbench::output::report::read_throughput_csv(&tput)?,
        )?;
    }
    modelbench::output::report::write_index(dir.parent().unwrap_or(Path::new(".")))?;
    print!("{}", modelbench::output::report::markdown(&dir, &records));
    Ok(())
}

fn compare_cmd(base: &Path, new: &Path, threshold: &str, force: bool) -> anyhow::Result<ExitCode> {
    let t = parse_threshold(threshold).map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    let b = read_run(base)?;
    let n = read_run(new)?;
    let c = compare(&b, &n, t, force)?;
    print!("{}", render(&c));
    Ok(if c.regressions() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn export(run: Option<PathBuf>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match run {
        Some(r) => r,
        None => latest_run()?,
    };
    let lines = modelbench::output::report::registry_lines(&read_run(&dir)?);
    match out {
        Some(p) => modelbench::util::fsio::atomic_write(&p, lines.as_bytes())?,
        None => print!("{lines}"),
    }
    Ok(())
}
