//! `modelbench peers`: one model, a suite tier, candle and its peers (llama.cpp's llama-bench
//! for GGUF models, PyTorch + transformers for safetensors and synthetic ones) in turn, at the
//! same lengths and thread count; records, peers.md and peers.png in one run folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use modelbench::config::plans::{parse_models, parse_seed, Plan};
use modelbench::engine::scenario::{prepare, Tier};
use modelbench::models::loading::{load_line, open_with};
use modelbench::models::Weights;
use modelbench::output::peers::{engines_list, peers_png, peers_table};
use modelbench::output::record::{Engine, Record};
use modelbench::output::report::{reports_root, RunDir};
use modelbench::workloads::peers::{
    check_threads, llama_record, missing_program, run_llama_bench, run_torch, scenario_skip,
    skip_line, stamp_like, torch_record, Peer, CANDLE_VERSION,
};

use crate::args::TargetArgs;

#[derive(Args)]
pub struct PeersArgs {
    /// Model reference: a GGUF (`gguf:...`) is compared with llama.cpp, safetensors, fixture
    /// and synthetic models with PyTorch.
    #[arg(long)]
    pub model: String,
    /// quick (short, medium), standard (+ prefill, decode, sampled) or full (all seven;
    /// full-pipe has no peer counterpart and is skipped for them).
    #[arg(long, default_value = "quick")]
    pub suite: String,
    /// Peers to run, comma list of llama.cpp, torch (default: those that fit the model).
    #[arg(long)]
    pub peers: Option<String>,
    /// Untimed generations per scenario before the trials (candle and PyTorch; llama-bench
    /// keeps its own warm-up convention, one untimed run of each test).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed trials per scenario (llama-bench's -r).
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Threads for the peers (default: candle's, CANDLE_NUM_THREADS or the physical cores).
    /// A different count is refused unless --allow-thread-mismatch.
    #[arg(long)]
    pub peer_threads: Option<usize>,
    /// Run (with a warning in the output and the records) when a peer's thread count differs
    /// from candle's.
    #[arg(long)]
    pub allow_thread_mismatch: bool,
    /// llama-bench binary (default: target/llama-cpp/0.3.36/bin/llama-bench from
    /// scripts/build-llama-cpp.sh).
    #[arg(long)]
    pub llama_bench: Option<PathBuf>,
    /// Python of the PyTorch venv (default: target/peers/torch-venv/bin/python from
    /// scripts/setup-torch.sh).
    #[arg(long)]
    pub torch_python: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// A peer that will run, with its program.
struct Selected {
    peer: Peer,
    program: PathBuf,
}

fn parse_peers(v: Option<&str>) -> anyhow::Result<Option<Vec<Peer>>> {
    let Some(v) = v else { return Ok(None) };
    let mut out = Vec::new();
    for p in v.split(',').filter(|p| !p.trim().is_empty()) {
        let peer = Peer::parse(p).ok_or_else(|| {
            anyhow::anyhow!(
                "--peers {v}: unknown peer `{}` (allowed: {})",
                p.trim(),
                Peer::ALLOWED
            )
        })?;
        if !out.contains(&peer) {
            out.push(peer);
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "--peers {v:?}: name at least one of {}",
        Peer::ALLOWED
    );
    Ok(Some(out))
}

/// Why a peer does not fit this model and device (None: it fits).
fn model_skip(peer: Peer, weights: &Weights, device: &str) -> Option<String> {
    match (peer, weights) {
        (Peer::LlamaCpp, Weights::Gguf(_)) if device != "cpu" => Some(format!(
            "the llama.cpp build of scripts/build-llama-cpp.sh is CPU-only and candle runs on {device}"
        )),
        (Peer::LlamaCpp, Weights::Gguf(_)) => None,
        (Peer::LlamaCpp, _) => {
            Some("llama-bench needs a GGUF model (gguf:...); this model is compared with torch".into())
        }
        (Peer::Torch, Weights::Gguf(_)) => Some(
            "the PyTorch peer loads safetensors; GGUF models are compared with llama.cpp".into(),
        ),
        (Peer::Torch, _) => None,
    }
}

/// The folder PyTorch loads for a model: the safetensors' own folder, or for a synthetic model
/// its seeded weights written once under target/peers/models/ (same filler, same numbers).
fn torch_model_dir(
    res: &modelbench::models::source::Resolved,
    dtype: candle_core::DType,
) -> anyhow::Result<PathBuf> {
    match &res.weights {
        Weights::Safetensors(paths) => {
            let dir = paths[0].parent().unwrap_or(Path::new(".")).to_path_buf();
            anyhow::ensure!(
                dir.join("config.json").is_file(),
                "{}: no config.json beside the safetensors for PyTorch to load",
                dir.display()
            );
            Ok(dir)
        }
        Weights::Seeded(seed) => {
            let name: String = res
                .label
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/models");
            let dir = root.join(format!("{name}-seed{seed}-{}", dtype.as_str()));
            let done = dir.join("modelbench-export.json");
            if done.is_file() {
                return Ok(dir);
            }
            let tmp = root.join(format!("{name}-seed{seed}-{}.partial", dtype.as_str()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            println!(
                "writing {}'s seeded weights ({}) once as safetensors for PyTorch: {}",
                res.label,
                dtype.as_str(),
                dir.display()
            );
            let config = serde_json::to_string_pretty(&res.config)?;
            modelbench::models::source::write_seeded(res.family, &config, &tmp, dtype)?;
            std::fs::write(
                tmp.join("modelbench-export.json"),
                serde_json::json!({"model": res.label, "seed": seed, "dtype": dtype.as_str(),
                    "written_by": "modelbench peers (models::source::write_seeded)"})
                .to_string(),
            )?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)?;
            Ok(dir)
        }
        Weights::Gguf(_) => unreachable!("model_skip keeps GGUF away from torch"),
    }
}

pub fn peers(a: PeersArgs) -> anyhow::Result<()> {
    let tier = Tier::parse(&a.suite).ok_or_else(|| {
        anyhow::anyhow!(
            "--suite {:?}: unknown tier (allowed: {})",
            a.suite,
            Tier::ALLOWED
        )
    })?;
    anyhow::ensure!(a.trials >= 1, "--trials must be at least 1");
    let wanted = parse_peers(a.peers.as_deref())?;
    let (device, dtype, label) = a.target.resolve()?;
    let candle_threads = candle_core::utils::get_num_threads();
    let peer_threads = a.peer_threads.unwrap_or(candle_threads);
    anyhow::ensure!(peer_threads >= 1, "--peer-threads must be at least 1");
    let mut warnings: Vec<String> = Vec::new();
    if let Some(w) = check_threads(
        Peer::Torch,
        candle_threads,
        Some(peer_threads),
        a.allow_thread_mismatch,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "--peer-threads {peer_threads}: {}",
            e.to_string().replace("torch ran", "the peers would run")
        )
    })? {
        warnings.push(w.replace("torch ran", "the peers run"));
    }
    let plan = Plan {
        models: parse_models(&a.model, "--model")?,
        tier: Some(tier),
        scenarios: tier.scenarios(),
        device,
        dtype,
        seed: parse_seed(&a.seed.to_string(), "--seed")?,
        min_measure: std::time::Duration::ZERO,
        label,
        attention: modelbench::models::attention::Attention::Eager,
    };
    anyhow::ensure!(
        plan.models.len() == 1,
        "--model: peers compare one model at a time"
    );
    let (model_label, model_ref) = &plan.models[0];
    let res = prepare(model_label, model_ref, &plan.scenarios)?;
    let dev = plan.device.open_for("--device")?;
    modelbench::engine::preflight::check_scenarios(
        &res,
        &plan.scenarios,
        plan.dtype,
        &dev,
        plan.attention,
    )?;

    // Which peers run: a skip is one line, never a number.
    let device_name = plan.device.to_string();
    let mut selected: Vec<Selected> = Vec::new();
    for peer in Peer::ALL {
        let explicit = wanted.as_ref().map(|w| w.contains(&peer));
        if explicit == Some(false) {
            continue;
        }
        if let Some(why) = model_skip(peer, &res.weights, &device_name) {
            if explicit == Some(true) || wanted.is_none() {
                println!("{}", skip_line(peer, &why));
            }
            continue;
        }
        let program = match peer {
            Peer::LlamaCpp => a.llama_bench.clone(),
            Peer::Torch => a.torch_python.clone(),
        }
        .unwrap_or_else(|| peer.default_program());
        if let Some(why) = missing_program(peer, &program) {
            println!("{}", skip_line(peer, &why));
            continue;
        }
        selected.push(Selected { peer, program });
    }
    let torch_dir = if selected.iter().any(|s| s.peer == Peer::Torch) {
        Some(torch_model_dir(&res, plan.dtype)?)
    } else {
        None
    };
    let gguf = match &res.weights {
        Weights::Gguf(p) => Some(p.clone()),
        _ => None,
    };

    let mut run = RunDir::new(&reports_root(), plan.label.as_deref());
    let save = !a.target.no_save;
    let push = |run: &mut RunDir, r: Record| -> anyhow::Result<()> {
        if save {
            run.push(r)?;
        } else {
            run.push_unsaved(r);
        }
        Ok(())
    };

    // 1. candle, every scenario (one load), as `modelbench run` measures it.
    let calibration = modelbench::measure::calibration::cached(plan.device);
    let mut loaded = open_with(
        res.clone(),
        &dev,
        plan.dtype,
        Some(plan.context_cap()),
        plan.attention,
    )?;
    println!("{}", load_line(&loaded));
    let vocab = loaded.model.meta().vocab;
    let mut candle_records: Vec<Record> = Vec::new();
    for s in &plan.scenarios {
        let mut w = plan.generation(&mut loaded, s, calibration.clone());
        let mut rec = modelbench::workloads::run_trials(&mut w, a.warmup, a.trials)
            .with_context(|| format!("candle: {model_label} / {}", s.name))?;
        rec.engine = Some(Engine {
            name: "candle".into(),
            version: format!(
                "candle {CANDLE_VERSION} (modelbench {})",
                rec.build.crate_version
            ),
            flags: format!(
                "{} build, features [{}], rustflags `{}`, {} {}",
                rec.build.profile, rec.build.features, rec.build.rustflags, rec.device, rec.dtype
            ),
            threads: Some(candle_threads),
        });
        println!("{}", progress_line("candle", &rec));
        candle_records.push(rec.clone());
        push(&mut run, rec)?;
    }
    drop(loaded); // the peers get the machine's memory

    // 2. Each peer in turn, every scenario it can run.
    for sel in &selected {
        let build_info = sel
            .program
            .parent()
            .and_then(|b| b.parent())
            .map(|d| d.join("build-info.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        for (s, candle) in plan.scenarios.iter().zip(&candle_records) {
            if let Some(why) = scenario_skip(sel.peer, s) {
                println!("{}", skip_line(sel.peer, &why));
                continue;
            }
            let mut rec = match sel.peer {
                Peer::LlamaCpp => {
                    let g = gguf.as_ref().expect("llama.cpp runs GGUF models only");
                    let tests = run_llama_bench(&sel.program, g, s, peer_threads, a.trials)?;
                    llama_record(s, &tests, build_info.as_ref())?
                }
                Peer::Torch => {
                    let prompts: Vec<Vec<u32>> = (0..(a.warmup + a.trials) as u64)
                        .map(|t| {
                            modelbench::engine::generate::prompt_ids(
                                s.prompt_tokens,
                                vocab,
                                plan.seed,
                                t,
                            )
                        })
                        .collect();
                    let spec = serde_json::json!({
                        "model_dir": torch_dir.as_ref().expect("set when torch runs"),
                        "prompts": prompts,
                        "warmup": a.warmup,
                        "new_tokens": s.new_tokens,
                        "threads": peer_threads,
                        "dtype": plan.dtype.as_str(),
                        "device": match plan.device { modelbench::measure::device::DeviceSpec::Cpu => "cpu".to_string(), d => d.to_string() },
                        "sampling": {"temperature": s.sampling.temperature, "top_k": s.sampling.top_k,
                            "top_p": s.sampling.top_p, "repetition_penalty": s.sampling.repetition_penalty},
                        "seed": plan.seed,
                    });
                    let spec_path = std::env::temp_dir()
                        .join(format!("modelbench-peer-torch-{}.json", std::process::id()));
                    let out = run_torch(&sel.program, &spec, &spec_path);
                    let _ = std::fs::remove_file(&spec_path);
                    let (out, raw) = out?;
                    torch_record(s, &out, &raw)
                }
            };
            let reported = rec.engine.as_ref().and_then(|e| e.threads);
            let warn = check_threads(sel.peer, candle_threads, reported, a.allow_thread_mismatch)?;
            stamp_like(&mut rec, candle);
            if let Some(w) = warn {
                println!("{w}");
                rec.extra["thread_warning"] = serde_json::json!(w);
                warnings.push(w);
            }
            println!("{}", progress_line(sel.peer.name(), &rec));
            push(&mut run, rec)?;
        }
    }

    let table = peers_table(run.records());
    println!("\n{table}");
    print!("{}", engines_list(run.records()));
    for w in &warnings {
        println!("{w}");
    }
    if selected.is_empty() {
        println!("no peer ran: candle's numbers only (see the skip lines above)");
    }
    if !save {
        return Ok(());
    }
    run.put_file(
        "peers.md",
        format!(
            "# modelbench peers: {model_label}, {} tier\n\nRatios are candle / peer (above 1: candle is faster). Numbers taken one engine after the other on {}.\n\n{table}\n{}",
            tier.name(),
            run.records()[0].hardware.describe(),
            engines_list(run.records())
        )
        .into_bytes(),
    )?;
    let png = run.path.join("peers.png");
    if peers_png(
        &png,
        &format!("{model_label}: candle vs peers ({} tier)", tier.name()),
        run.records(),
    )? {
        println!("chart: {}", png.display());
    }
    println!("run folder: {}", run.path.display());
    Ok(())
}

fn progress_line(engine: &str, r: &Record) -> String {
    let g = r.gen.clone().unwrap_or_default();
    let na = modelbench::output::report::na;
    format!(
        "{engine:>10} {:<8} {:>8} tok/s  prefill {:>8} tok/s  decode {:>7} tok/s  TTFT p50 {:>8} ms  TPOT p50 {:>7} ms",
        r.scenario,
        na(r.tok_s, 1),
        na(g.prefill_tok_s, 1),
        na(g.decode_tok_s, 1),
        na(g.ttft_ms.map(|p| p.p50), 2),
        na(g.tpot_ms.map(|p| p.p50), 2),
    )
}
