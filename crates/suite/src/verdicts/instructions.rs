//! `modelbench instructions`: instructions per prefill and per decode token, counted by
//! callgrind (see `crate::measure::instructions` for the region and why it repeats
//! exactly). For each model, starts this binary's hidden `instructions-worker` under valgrind
//! with one thread in rayon's and candle's pools; the worker loads the model, runs one
//! untimed warm-up generation, then the two counted generations (1 token, N tokens). Writes
//! one JSON line per model to `target-reports/<stamp>-instructions/instructions.jsonl` (or
//! `--out`), after every model was counted; with `--baseline` compares the counts and exits 1
//! when one differs by more than `--tolerance`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::app::Context;
use crate::config::plans::{check_label, parse_models, parse_scenarios};
use crate::engine::generate::{generate, scenario_prompt, Prompt, Trace};
use crate::engine::sampling::{Sampler, SamplingParams};
use crate::engine::scenario::{prepare, Scenario};
use crate::measure::hardware::Build;
use crate::measure::instructions as mi;
use crate::output::instructions::{self as oi, InstrRecord};
use crate::output::report::{reports_root, RunDir};
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(clap::Args)]
pub struct InstructionsArgs {
    /// Model reference, repeatable (default: the three fixtures).
    #[arg(long = "model")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub scenario: ScenarioChoice,
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    /// An instructions file (or run folder) to compare with: exit 1 when a count differs by
    /// more than --tolerance.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Largest accepted difference of a count from the baseline, e.g. 0.1% or 0.001.
    #[arg(long, default_value = "0.1%")]
    pub tolerance: String,
    /// Compare with a baseline counted under other settings (valgrind, target features,
    /// build) anyway.
    #[arg(long)]
    pub force: bool,
    /// Write the records to this file instead of a run folder under target-reports/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run folder suffix after `instructions-`.
    #[arg(long)]
    pub label: Option<String>,
    /// The modelbench binary to count (default: this one). For a binary valgrind can run
    /// where this one has AVX-512: build one with `-C target-cpu=x86-64-v3` (see README).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// The scenario counted, by name or ad hoc: the same flags for `instructions` and its worker.
#[derive(clap::Args)]
pub struct ScenarioChoice {
    /// Scenario by name (its prompt and new tokens, sampling and seed); short by default.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Ad hoc: prompt length (with --max-new-tokens, greedy; replaces --scenario).
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
}

/// `instructions-worker`: what runs under valgrind.
#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub scenario: ScenarioChoice,
    #[arg(long)]
    pub seed: u64,
}

/// What the worker reports on stdout (one line after [`WORKER_TAG`]).
#[derive(Serialize, Deserialize)]
struct WorkerOut {
    prompt_tokens: usize,
    new_tokens: usize,
    /// Ids of the counted N-token generation.
    tokens: Vec<u32>,
    dtype: String,
    threads: usize,
    build: Build,
    target_features: String,
    injected: Option<String>,
}

const WORKER_TAG: &str = "modelbench-instructions-worker:";

impl ScenarioChoice {
    /// The scenario the flags name; refuses a name with ad hoc lengths, and one length alone.
    fn resolve(&self) -> Result<Scenario> {
        match (
            self.scenario.as_deref(),
            self.prompt_tokens,
            self.max_new_tokens,
        ) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                bail!("--scenario and --prompt-tokens/--max-new-tokens exclude each other")
            }
            (_, Some(p), Some(g)) => {
                ensure!(
                    p > 0 && g > 0,
                    "--prompt-tokens and --max-new-tokens must be at least 1"
                );
                Ok(Scenario::custom(p, g, SamplingParams::GREEDY))
            }
            (_, Some(_), None) | (_, None, Some(_)) => {
                bail!("--prompt-tokens and --max-new-tokens go together")
            }
            (s, None, None) => {
                let name = s.unwrap_or("short");
                Ok(parse_scenarios(name)
                    .map_err(|_| {
                        fail!(
                            "--scenario {name:?}: unknown scenario (allowed: {})",
                            crate::engine::scenario::SCENARIO_NAMES
                        )
                    })?
                    .remove(0))
            }
        }
    }
}

pub fn instructions(a: InstructionsArgs) -> Result<ExitCode> {
    // Everything that can be wrong with the input is checked before valgrind starts.
    let tolerance =
        crate::judge::speed::parse_threshold(&a.tolerance).map_err(|e| fail!("--tolerance {e}"))?;
    let s = a.scenario.resolve()?;
    let models = if a.models.is_empty() {
        "fixture:llama,fixture:qwen3,fixture:gemma3".to_string()
    } else {
        a.models.join(",")
    };
    let models = parse_models(&models, "--model")?;
    let baseline = a.baseline.as_deref().map(oi::read).transpose()?;
    let label = match &a.label {
        Some(l) => format!("instructions-{}", check_label(l, "--label")?),
        None => "instructions".to_string(),
    };
    if let Some(o) = &a.out {
        ensure!(
            !o.is_dir(),
            "--out {}: is a directory; name a file (e.g. instructions.jsonl)",
            o.display()
        );
    }
    let valgrind = mi::valgrind_version()?;
    let binary = match &a.binary {
        Some(b) => {
            ensure!(
                b.is_file(),
                "--binary {}: no such file; build it with: {}",
                b.display(),
                mi::SAFE_BUILD
            );
            b.canonicalize()
                .with_context(|| format!("--binary {}", b.display()))?
        }
        None => {
            ensure!(
                !mi::built_with_avx512(),
                "this modelbench was compiled with AVX-512 (target features {}), which valgrind cannot execute; build a valgrind-safe binary: {}",
                mi::target_features(),
                mi::SAFE_BUILD
            );
            std::env::current_exe().context("cannot find this executable")?
        }
    };
    // Resolve (and make the fixtures) outside valgrind: a missing model fails here, in seconds.
    for (l, r) in &models {
        prepare(l, r, std::slice::from_ref(&s))?;
    }
    let cpu = crate::measure::hardware::hardware().cpu;
    let mut records = Vec::new();
    for (i, (label, _)) in models.iter().enumerate() {
        eprintln!(
            "{label} / {}: counting under valgrind (callgrind, 1 thread)...",
            s.name
        );
        let r = count_one(&binary, label, &s, &a, &valgrind, &cpu, i)?;
        eprintln!(
            "{label} / {}: {:.0} instructions per prefill token, {} per decode token, {} in all ({:.0} s under valgrind)",
            s.name,
            r.per_prefill_token,
            r.per_decode_token
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "n/a".into()),
            r.counts.all_tokens,
            r.valgrind_wall_s
        );
        records.push(r);
    }
    // Written only once every model was counted: no half-written output.
    let path = match &a.out {
        Some(o) => o.clone(),
        None => RunDir::new(&reports_root(), Some(&label))
            .path
            .join(oi::FILE),
    };
    crate::util::fsio::atomic_write(&path, oi::to_jsonl(&records).as_bytes())?;
    println!("{}", oi::table(&records));
    println!("saved {}", path.display());
    let Some(base) = baseline else {
        return Ok(ExitCode::SUCCESS);
    };
    let c = oi::compare(&base, &records, tolerance, a.force)?;
    print!("{}", c.lines(tolerance));
    let n = c.differing();
    if n > 0 {
        println!(
            "{n} count(s) differ from the baseline {} by more than {}",
            a.baseline.as_deref().unwrap_or(Path::new("")).display(),
            oi::pct(tolerance)
        );
    } else {
        println!("every count within {} of the baseline", oi::pct(tolerance));
    }
    Ok(crate::judge::gate::exit_code(n > 0))
}

/// One valgrind run of the worker on one model.
fn count_one(
    binary: &Path,
    label: &str,
    s: &Scenario,
    a: &InstructionsArgs,
    valgrind: &str,
    cpu: &str,
    i: usize,
) -> Result<InstrRecord> {
    let dir = std::env::temp_dir().join(format!(
        "modelbench-instructions-{}-{i}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join("callgrind.out");
    let log = dir.join("valgrind.log");
    let mut cmd = Command::new("valgrind");
    cmd.args(mi::callgrind_args(&out, &log))
        .arg(binary)
        .arg("instructions-worker")
        .args(["--model", label, "--seed", &a.seed.to_string()]);
    if s.name.starts_with("custom-") {
        cmd.args([
            "--prompt-tokens",
            &s.prompt_tokens.to_string(),
            "--max-new-tokens",
            &s.new_tokens.to_string(),
        ]);
    } else {
        cmd.args(["--scenario", &s.name]);
    }
    cmd.envs(mi::WORKER_ENV)
        .env(
            "MODELBENCH_FIXTURE_CACHE",
            crate::models::sources::fixture_cache_dir(),
        )
        .stdin(Stdio::null());
    let t = Instant::now();
    let o = cmd
        .output()
        .context("cannot start valgrind (install it: apt-get install valgrind)")?;
    let wall = t.elapsed().as_secs_f64();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        bail!(
            "{label}: the worker under valgrind failed ({}): {} (valgrind log: {})",
            o.status,
            mi::explain_failure(&log_text, &String::from_utf8_lossy(&o.stderr)),
            log.display()
        );
    }
    let w: WorkerOut = stdout
        .lines()
        .find_map(|l| l.strip_prefix(WORKER_TAG))
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| fail!("{label}: the worker's result line: {e}"))?
        .ok_or_else(|| fail!("{label}: the worker printed no result line"))?;
    let dumps = mi::region_dumps(&out)?;
    ensure!(
        dumps.len() == 2,
        "{label}: callgrind wrote {} region dumps, expected 2 (was `{}` kept as a symbol? valgrind log: {})",
        dumps.len(),
        mi::REGION_SYMBOL,
        log.display()
    );
    let counts = mi::Counts {
        first_token: dumps[0],
        all_tokens: dumps[1],
        prompt_tokens: w.prompt_tokens,
        new_tokens: w.new_tokens,
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(InstrRecord {
        kind: oi::KIND.into(),
        timestamp: crate::util::time::now_rfc3339(),
        id: format!("{}/cpu-{}/{label}", s.name, w.dtype),
        model: label.to_string(),
        scenario: s.name.clone(),
        prompt_tokens: w.prompt_tokens,
        new_tokens: w.new_tokens,
        sampling: s.sampling.describe(),
        seed: a.seed,
        dtype: w.dtype,
        device: "cpu".into(),
        tokens: w.tokens,
        per_prefill_token: counts.per_prefill_token(),
        per_decode_token: counts.per_decode_token(),
        counts,
        injected: w.injected,
        valgrind: valgrind.to_string(),
        tool: mi::TOOL.into(),
        region: format!(
            "callgrind --collect-atstart=no --toggle-collect={0} --dump-after={0}: a 1-token and an N-token generation after one warm-up, on rayon's one thread; env {1}",
            mi::REGION_SYMBOL,
            mi::WORKER_ENV
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        threads: w.threads,
        build: w.build,
        target_features: w.target_features,
        cpu: cpu.to_string(),
        valgrind_wall_s: wall,
    })
}

/// The worker. The model is loaded on the main thread; the warm-up and the two counted
/// generations run on the one thread of rayon's global pool (see `measure::instructions`), so
/// the thread that enters the region does all of its work, and in a malloc arena of its own:
/// the load leaves the main arena in a layout that differs from run to run (hash maps iterate
/// in a random order), which would change the allocator's instruction counts in the region.
pub fn worker(a: WorkerArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    let candle_threads = candle_core::utils::get_num_threads();
    ensure!(
        threads == 1 && candle_threads == 1,
        "the worker needs one thread (RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1; rayon has {threads}, candle {candle_threads}): run `modelbench instructions`, which sets them"
    );
    let s = a.scenario.resolve()?;
    let models = parse_models(&a.model, "--model")?;
    let (label, r) = &models[0];
    let res = prepare(label, r, std::slice::from_ref(&s))?;
    let mut loaded = crate::models::sources::loading::open(
        res,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
        Some(s.context_needed()),
    )?;
    let prompt = scenario_prompt(
        &s,
        loaded.model.meta().vocab,
        loaded.tokenizer.as_ref(),
        a.seed,
        0,
    )?;
    let (first, all) = rayon::scope(|_| counted(&mut loaded, &s, &prompt, a.seed))?;
    ensure!(
        first.tokens[..] == all.tokens[..1],
        "{label}: the 1-token and the N-token generation started with other tokens: not deterministic, counts would not repeat"
    );
    let prompt_tokens = match &prompt {
        Prompt::Ids(ids) => ids.len(),
        Prompt::Text(_) => all.prompt_tokens,
    };
    let out = WorkerOut {
        prompt_tokens,
        new_tokens: all.tokens.len(),
        tokens: all.tokens,
        dtype: "f32".into(),
        threads,
        build: crate::measure::hardware::build(),
        target_features: mi::target_features(),
        injected: crate::measure::inject::current().map(|i| i.to_string()),
    };
    println!(
        "{WORKER_TAG}{}",
        serde_json::to_string(&out).expect("serializable")
    );
    Ok(())
}

/// On the pool's thread: one uncounted warm-up generation (first-call costs: lazy statics,
/// kernel dispatch, the arena's first growth), then the two counted ones.
fn counted(
    loaded: &mut crate::models::sources::loading::Loaded,
    s: &Scenario,
    prompt: &Prompt,
    seed: u64,
) -> Result<(Trace, Trace)> {
    let mut gen = |n: usize| {
        let mut sampler = Sampler::new(s.sampling, seed);
        generate(
            loaded.model.as_mut(),
            prompt,
            n,
            &mut sampler,
            loaded.tokenizer.as_ref(),
        )
    };
    let warm = gen(s.new_tokens)?;
    let mut first = None;
    mi::region(&mut || first = Some(gen(1)));
    let first = first.expect("the region ran")?;
    let mut all = None;
    mi::region(&mut || all = Some(gen(s.new_tokens)));
    let all = all.expect("the region ran")?;
    ensure!(
        all.tokens == warm.tokens,
        "the counted generation produced other tokens than the warm-up: not deterministic, counts would not repeat"
    );
    Ok((first, all))
}
