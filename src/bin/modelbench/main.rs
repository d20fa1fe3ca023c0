//! The `modelbench` CLI: the generation harness (`run`), run folders (`report`, `compare`,
//! `export`, `continuous`), the results history database (`db`, `history`, `bisect`), single workloads (`moe`, `perplexity`), the machine's roof
//! (`calibrate`), serving (`serve`, `load`, `power`), peers (`peers`) and what is available (`list`). Same library as the criterion benches; this
//! file only parses and dispatches: each command is one call into the library's `app` or
//! `verdicts` layer, where its options and its work are.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use modelbench::app::{self, args};
use modelbench::verdicts;

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;

#[derive(Parser)]
#[command(name = "modelbench", version, about = "Benchmarks language models on Hugging Face Candle", after_help = short_after_help(), after_long_help = after_help())]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `modelbench --help`'s commands, by what a user wants to do. A visible command not named
/// here (a new one) is listed under "Other", so none goes missing.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "Measure",
        &[
            "run",
            "depth",
            "moe",
            "perplexity",
            "peers",
            "ops",
            "calibrate",
            "instructions",
            "noise",
            "sensitivity",
        ],
    ),
    (
        "Compare and history",
        &[
            "compare",
            "report",
            "export",
            "history",
            "bisect",
            "continuous",
            "db",
        ],
    ),
    (
        "Models",
        &[
            "list",
            "generate",
            "tokenize",
            "probe",
            "verify",
            "dequantize",
        ],
    ),
    ("Serving", &["serve", "load", "power", "memory"]),
    ("Training", &["train", "train-sweep", "sweep"]),
];

/// The grouped command list: one line per command (its first doc paragraph); the details are
/// in `modelbench <COMMAND> --help`.
fn grouped_commands(cmd: &clap::Command) -> String {
    let visible: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).collect();
    let width = visible
        .iter()
        .map(|c| c.get_name().len())
        .max()
        .unwrap_or(0);
    let line = |c: &clap::Command| {
        let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
        format!("  {:<width$}  {about}\n", c.get_name())
    };
    let mut s = String::new();
    let mut listed: Vec<&str> = Vec::new();
    for (title, names) in GROUPS {
        s.push_str(&format!("{title}:\n"));
        for n in *names {
            if let Some(c) = visible.iter().find(|c| c.get_name() == *n) {
                s.push_str(&line(c));
                listed.push(n);
            }
        }
        s.push('\n');
    }
    let other: Vec<_> = visible
        .iter()
        .filter(|c| !listed.contains(&c.get_name()))
        .collect();
    if !other.is_empty() {
        s.push_str("Other:\n");
        for c in other {
            s.push_str(&line(c));
        }
        s.push('\n');
    }
    s.push_str("Details of a command: modelbench <COMMAND> --help\n\n");
    s
}

/// `-h`: where the knobs are, without listing them.
fn short_after_help() -> String {
    "Environment knobs (MODELBENCH_*, for `cargo bench`): `modelbench --help` lists them; docs/knobs.md explains them.\nExit codes: 0 success; 1 regression found (compare); 2 bad input.".into()
}

/// `--help`: every knob, one line each.
fn after_help() -> String {
    let mut s = modelbench::config::knobs::help();
    s.push_str("\nExit codes: 0 success; 1 regression found (compare); 2 bad input.");
    s
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenarios, tiers, model sources and which models are already in the cache.
    List,
    /// Stream a model's continuation of a prompt, with one timing line.
    ///
    /// Stream a model's continuation of a prompt (greedy by default) and one timing line:
    /// see what a model produces before trusting its speed.
    Generate(args::GenerateArgs),
    /// Tokenize a prompt or a file with a model's tokenizer, as llama-tokenize does.
    ///
    /// Tokenize a prompt or a file with a model's tokenizer (the benchmarks' own), printing
    /// ids (`--ids`) or `id -> 'piece'` lines in llama-tokenize's shape.
    Tokenize(app::tokenize::TokenizeArgs),
    /// Write a GGUF Gemma 3 as a safetensors folder for the non-quantized path.
    ///
    /// Write a GGUF Gemma 3, Qwen2 or Llama as a Hugging Face folder (f32 safetensors +
    /// config.json + tokenizer.json) for the non-quantized path; `verify --model <folder>`
    /// checks it against llama.cpp on the GGUF it came from.
    Dequantize {
        #[arg(long)]
        model: String,
        /// Output folder (must not hold a model yet).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a synthetic model (real shapes, seeded weights) as an F16 GGUF for llama-quantize.
    ///
    /// Write `synthetic:<name>` (a real model's shapes, the suite's seeded weights) as a GGUF
    /// file with F16 matrices, llama.cpp's names and metadata and the fixture tokenizer at the
    /// real vocabulary size: `llama-quantize OUT X.gguf Q4_K_M` then makes a file at real shape
    /// that candle and llama.cpp both run (the GPU peers of docs/gpu.md).
    SynthGguf {
        /// synthetic:<llama-3.2-1b|qwen3-1.7b|gemma-3-1b>
        #[arg(long)]
        model: String,
        /// The .gguf file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Type of the matrices: f16 (for llama-quantize), q8_0, or q4_k (llama.cpp's Q4_K_S
        /// file type: q4_K throughout, q5_0 where 256 does not divide a row).
        #[arg(long = "type", default_value = "f16")]
        ty: String,
    },
    /// Run a suite tier (or one ad-hoc scenario) on one or more models and save a run.
    Run(args::RunArgs),
    /// Prefill and decode speed against KV-cache depth (llama-bench's -d).
    ///
    /// Prefill and decode speed against KV-cache depth: the cache is filled to each depth once
    /// (untimed), restored before every timed prefill / decode; records, depth.csv and
    /// depth.png (tok/s against depth, one line per model) in a run folder.
    Depth(args::DepthArgs),
    /// Re-render the artifacts (README.md, results.csv, summary.json) of a run, or (`--html`)
    /// the browsable report target-reports/index.html.
    Report {
        /// Run folder (default: the newest under target-reports/).
        run: Option<PathBuf>,
        /// Only regenerate the browsable report (target-reports/index.html and the pages under
        /// target-reports/site/) from the run folders and the results database.
        #[arg(long)]
        html: bool,
    },
    /// Compare two runs (or commits); exit 1 on a regression.
    ///
    /// Compare two runs; exit 1 when a benchmark is slower beyond the threshold with 95%
    /// confidence (bootstrap CI of the median ratio) or one of the base run is missing from
    /// the new run, 0 otherwise, 2 on unusable input.
    ///
    /// A ref is a run folder, or a commit (prefix) or branch name: resolved with
    /// `git rev-parse`, then the newest run of that commit in the results database (on the
    /// other ref's hardware when there is one).
    Compare(verdicts::compare::CompareArgs),
    /// What `compare --paired` starts: a model loaded once, one trial per stdin line.
    #[command(hide = true)]
    Worker(verdicts::worker::WorkerArgs),
    /// The results history database: upload run folders, show what it holds.
    ///
    /// The results history database: `db push RUN...` uploads run folders (idempotent, one
    /// transaction), `db info` shows what it holds.
    Db {
        #[command(subcommand)]
        cmd: app::db::DbCmd,
    },
    /// One benchmark of one model across commits and machines (table and PNG).
    ///
    /// One benchmark of one model across commits and machines from the results database: a
    /// table ordered by time and a PNG trend (tok/s, one line per hardware).
    History {
        /// Benchmark id (`medium/cpu-f32/fixture:llama`) or its group (`medium`); `peers`: the
        /// candle/peer ratios (with 95% intervals) of `modelbench peers` runs, per commit and
        /// machine, from the run folders.
        #[arg(long)]
        bench: String,
        /// Model label as records name it (e.g. `fixture:llama`).
        #[arg(long)]
        model: String,
        #[arg(long)]
        db: Option<String>,
        /// The PNG (default: target-reports/history-<bench>-<model>.png).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Find the first commit where a benchmark got slower (git bisect).
    ///
    /// Find the first commit where a benchmark got slower: `git bisect run` with a build, the
    /// one benchmark and the compare gate against GOOD's numbers (run in the repository).
    Bisect(verdicts::bisect::BisectArgs),
    /// One step of `bisect` (what `git bisect run` calls): exit 0 good, 1 regression,
    /// 125 skip (build or run failed), 128 abort.
    #[command(hide = true)]
    BisectStep(verdicts::bisect::StepArgs),
    /// Run a benchmark config; compare with the previous run and a fixed baseline.
    ///
    /// Continuous benchmarking: run the benchmarks a JSON config lists, save a run labelled
    /// `cont-<name>`, compare it with the previous run of the same config and with a fixed
    /// baseline (the config's `baseline`, default its first run), exit 1 on a regression in
    /// either (see scripts/continuous.sh and scripts/continuous.example.json).
    Continuous {
        config: PathBuf,
        /// Compare runs taken on different hardware anyway.
        #[arg(long)]
        force: bool,
    },
    /// OpenAI-compatible HTTP server over one model (continuous batching for the families with a batched implementation, else one sequence at a time).
    ///
    /// An OpenAI-compatible HTTP server over one model (`/v1/completions`,
    /// `/v1/chat/completions` with SSE streaming, `/v1/models`, `/health`); one model thread:
    /// continuous batching of up to --max-batch sequences for the project's GGUF Gemma 3,
    /// Llama and Qwen models, else one request at a time in FIFO order (docs/serving.md).
    Serve(app::serve::ServeArgs),
    /// Load test any OpenAI-compatible server: TTFT, TPOT, ITL, throughput, goodput.
    ///
    /// Load test of any OpenAI-compatible server: closed-loop concurrency or Poisson
    /// arrivals, streaming requests; TTFT / TPOT / ITL / E2E percentiles, throughput and
    /// goodput per level; records, load.md, load.csv and load.png in a run folder.
    Load(app::load::LoadArgs),
    /// Candle beside llama.cpp and PyTorch: same model, lengths and threads.
    ///
    /// Candle side by side with llama.cpp (llama-bench, GGUF models) and PyTorch +
    /// transformers (safetensors and synthetic models) on the same model, lengths and thread
    /// count, engines in turn: one table with candle/peer ratios, peers.png and records in a
    /// run folder. A peer that is not installed is a one-line skip naming its setup script.
    Peers(app::peers::PeersArgs),
    /// GPU power and energy (NVML) while a command runs, as JSON.
    ///
    /// GPU power and energy (NVML) while a command runs, as JSON; null ("not available")
    /// without an NVIDIA driver. Exits with the command's exit code.
    Power(app::power::PowerArgs),
    /// The memory of a command and its children over time (host, and GPU with NVML), as JSON.
    ///
    /// The resident set of the command and every process it starts, sampled from /proc, its
    /// peak checked against the kernel's ru_maxrss, GPU memory per process with NVML ("not
    /// available" without a driver), a timeline (--png) and, with --hotspots, the allocation
    /// hot spots by call stack from heaptrack. Exits with the command's exit code.
    Memory(app::memory::MemoryArgs),
    /// Train PSANN-LM on a text corpus (tiny-corpus baseline, or --shootout).
    ///
    /// Train PSANN-LM on a text corpus from a config (tiny-corpus baseline: metrics.json, steps.csv,
    /// loss_curve.png, config_used.toml), or `--shootout` the bases x seeds on one budget
    /// (base shootout: summary.json, summary.csv, leaderboard.md). Every step logs loss, gradient
    /// norm and lr; a NaN/Inf stops the run (exit 2) naming the step and the tensor.
    Train(args::TrainArgs),
    /// Training-throughput sweep of PSANN-LM: precision x sequence length x batch.
    ///
    /// Training-throughput sweep: PSANN-LM train-step and inference tokens/s, ms/step, allocated and
    /// peak memory and parameter count over precision x sequence length x batch;
    /// bench_results.jsonl and bench_results.csv in a run folder (`--zip` packs it).
    TrainSweep(args::TrainSweepArgs),
    /// Architecture sweep: dense, mixture, state-space and hybrid backbones.
    ///
    /// Architecture sweep: dense, mixture, state-space and hybrid backbones over
    /// model dims x depths x horizons; forward and train-step latency (median, p90),
    /// samples/s and tokens/s, peak memory, FLOPs and % of the calibrated matmul roof; one
    /// parquet row per grid point and the telemetry table (.md) beside it.
    Sweep(args::SweepArgs),
    /// Time MoE feed-forward blocks: the moe bench's experts x top-k x tokens grid.
    ///
    /// Time MoE feed-forward blocks (router, top-k, SwiGLU experts, combine) over the moe
    /// bench's grid, experts x top-k x tokens plus the dense SwiGLU rows with the same active
    /// parameters; each flag defaults to its MODELBENCH_MOE_* knob. Latency median and p90,
    /// tokens/s; saved as records like the generation runs.
    Moe(args::MoeArgs),
    /// Measure this machine's run-to-run noise (criterion's noise thresholds).
    ///
    /// This machine's run-to-run noise per benchmark, from repeated runs of one build
    /// (`--measure K` runs `cargo bench` K times first): the noise thresholds the benches give
    /// criterion, saved in target-reports/noise/<machine>.json.
    Noise(verdicts::noise::NoiseArgs),
    /// Measure which slowdowns `compare` detects here, and its false alarms.
    ///
    /// The power of `run` + `compare` on this machine, measured: per try a base run, an
    /// unchanged rerun and runs with injected slowdowns (MODELBENCH_INJECT_SLOWDOWN), each
    /// compared with the base; false alarms, detections per slowdown, and the smallest
    /// slowdown flagged in every try, per benchmark.
    Sensitivity(verdicts::sensitivity::SensitivityArgs),
    /// Measure this machine's limits (memory bandwidth, matmul) and its checks.
    ///
    /// Measure this machine's limits (memory read bandwidth, matmul throughput) once and
    /// cache them in target/modelbench-machine.json; records then show utilisation. Also
    /// shows the machine checks (other load, steal, frequency scaling, huge pages, NUMA) and
    /// the measured run-to-run noise.
    Calibrate {
        #[arg(long, default_value = modelbench::config::knobs::default_of("MODELBENCH_DEVICE"))]
        device: String,
        /// Dtypes to calibrate (default: the device's default dtype).
        #[arg(long = "dtype")]
        dtypes: Vec<String>,
        /// Measure again even if a calibration is cached.
        #[arg(long)]
        force: bool,
    },
    /// Where the time goes: each op of one forward timed alone, against llama.cpp's ggml.
    ///
    /// Every distinct op and shape of one forward of a GGUF Gemma 3 as the
    /// suite runs it, each timed alone (us per call with a 95% CI, share of the step, GB/s,
    /// GFLOP/s, % of calibrate's roofs), a coverage line against the measured step, and with
    /// `--peer llama.cpp` ggml's time of each op (test-backend-ops perf) and the largest gap.
    Ops(app::ops::OpsArgs),
    /// Instructions per prefill and decode token under valgrind (deterministic).
    ///
    /// Instructions per prefill and per decode token under valgrind (callgrind, 1 thread):
    /// a deterministic cost metric where the machine has no hardware counters. Writes
    /// instructions.jsonl in a run folder (or --out); with --baseline exits 1 when a count
    /// differs by more than --tolerance.
    Instructions(verdicts::instructions::InstructionsArgs),
    /// What `instructions` runs under valgrind: load, one warm-up generation, then the two
    /// counted generations (1 and N tokens).
    #[command(hide = true)]
    InstructionsWorker(verdicts::instructions::WorkerArgs),
    /// A model's output probe: what it computes, and its own numerical noise.
    ///
    /// The output probe every generation record keeps (issue 59): the model's
    /// log-probabilities over 2 x 64 positions of the held-out verdict text, the sha256 of
    /// every logit, and its own numerical noise (prefill as single-token steps, batched
    /// sequences, another thread count in a second process). --json prints it as records
    /// keep it.
    Probe(app::probe::ProbeArgs),
    /// KL-divergence quality gate of a GGUF against llama.cpp; exit 1 on failure.
    ///
    /// The KL-divergence quality gate for a GGUF against llama.cpp on the same file: mean KLD,
    /// its 99th percentile, same top-1 %, PPL ratio; stores the verdict for generation records
    /// of this file, implementation, device, dtype and commit. Exit 1 when it fails.
    Verify(app::verify::VerifyArgs),
    /// Perplexity of a text file: mean NLL, perplexity, tokens scored, tok/s.
    Perplexity(app::perplexity::PerplexityArgs),
    /// Export a run: metric-registry JSONL or Bencher Metric Format JSON.
    ///
    /// Export a run: metric-registry JSONL (id, value, unit, higher_is_better), or Bencher
    /// Metric Format JSON (`--format bencher`: tok/s, TTFT p99, % of bandwidth, energy per
    /// token; unmeasured measures left out).
    Export {
        run: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = app::report::ExportFormat::Registry)]
        format: app::report::ExportFormat,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // First: glibc reads its tunables at start, so huge pages need a fresh start.
    modelbench::measure::memory::reexec_with_huge_pages();
    modelbench::util::llama_cpp::avoid_amx_fault();
    // Before any thread exists: candle re-reads the CPU count on every f32 matmul otherwise.
    modelbench::measure::threads::pin_rayon_count();
    let cmd = Cli::command();
    let groups = grouped_commands(&cmd);
    let cmd = cmd.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}Options:\n{{options}}{{after-help}}"
    ));
    let cli = Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    if let Err(e) = modelbench::config::knobs::install(&modelbench::config::knobs::env) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let ok = |r: modelbench::Result<()>| r.map(|_| ExitCode::SUCCESS);
    let out = match cli.cmd {
        Cmd::List => ok(app::list::list()),
        Cmd::Dequantize { model, out } => ok(app::dequantize::dequantize(&model, &out)),
        Cmd::SynthGguf { model, out, ty } => ok(app::dequantize::synth_gguf(&model, &out, &ty)),
        Cmd::Generate(a) => ok(app::generate::generate(a)),
        Cmd::Tokenize(a) => ok(app::tokenize::tokenize(a)),
        Cmd::Run(a) => ok(app::run::run(a)),
        Cmd::Depth(a) => ok(app::depth::depth(a)),
        Cmd::Report { run, html } => ok(app::report::report(run, html)),
        Cmd::Compare(a) => verdicts::compare::compare(&a),
        Cmd::Worker(a) => ok(verdicts::worker::worker(a)),
        Cmd::Db { cmd } => ok(app::db::db(cmd)),
        Cmd::History {
            bench,
            model,
            db,
            png,
        } => ok(app::history::history(&bench, &model, db.as_deref(), png)),
        Cmd::Bisect(a) => verdicts::bisect(&a),
        Cmd::BisectStep(a) => Ok(verdicts::bisect::step(&a)),
        Cmd::Export { run, format, out } => ok(app::report::export(run, format, out)),
        Cmd::Continuous { config, force } => verdicts::continuous::continuous(&config, force),
        Cmd::Serve(a) => ok(app::serve::serve(a)),
        Cmd::Load(a) => ok(app::load::load(a)),
        Cmd::Power(a) => app::power::power(a),
        Cmd::Memory(a) => app::memory::memory(a),
        Cmd::Peers(a) => ok(app::peers::peers(a)),
        Cmd::Ops(a) => verdicts::candle_ops::ops(a),
        Cmd::Train(a) => ok(app::train::train(a)),
        Cmd::TrainSweep(a) => app::train_sweep::train_sweep(a),
        Cmd::Sweep(a) => ok(app::sweep::sweep(a)),
        Cmd::Moe(a) => ok(app::moe::moe(a)),
        Cmd::Instructions(a) => verdicts::instructions::instructions(a),
        Cmd::InstructionsWorker(a) => ok(verdicts::instructions::worker(a)),
        Cmd::Perplexity(a) => ok(app::perplexity::perplexity(&a)),
        Cmd::Verify(a) => app::verify::verify(&a),
        Cmd::Probe(a) => ok(app::probe::probe(a)),
        Cmd::Noise(a) => ok(verdicts::noise::noise_cmd(&a)),
        Cmd::Sensitivity(a) => ok(verdicts::sensitivity::sensitivity(&a)),
        Cmd::Calibrate {
            device,
            dtypes,
            force,
        } => ok(app::calibrate::calibrate(&device, &dtypes, force)),
    };
    match out {
        Ok(c) => c,
        Err(e) => {
            // As anyhow's alternate form: the error, then each of its sources.
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(2)
        }
    }
}
