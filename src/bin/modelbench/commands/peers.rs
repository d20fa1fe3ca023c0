//! `modelbench peers`: one model, a suite tier, candle and its peers (llama.cpp for GGUF
//! models, PyTorch + transformers for safetensors and synthetic ones) at the same prompt ids,
//! lengths and thread count; llama.cpp and PyTorch alternate with candle repetition by
//! repetition, each in its candle-matched setting and with its defaults; records, peers.md and
//! peers.png (ratios with bootstrap 95% intervals) in one run folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use modelbench::config::plans::{parse_models, parse_seed, Plan};
use modelbench::engine::generate::prompt_ids;
use modelbench::engine::scenario::Tier;
use modelbench::measure::threads::{CandlePools, ThreadUse, Ticks};
use modelbench::models::Weights;
use modelbench::output::peers::PEERS_NOTE;
use modelbench::output::peers::{engines_list, peers_png, peers_table};
use modelbench::output::record::{Engine, Record};
use modelbench::output::report::{reports_root, RunDir};
use modelbench::workloads::peers::{
    build_info_of, check_threads, interleave_order, llama_record, missing_program, run_llama_timed,
    scenario_skip, skip_line, stamp_like, torch_record, LlamaRun, LlamaSetting, Peer, TorchHello,
    TorchRun, TorchSetting, TorchWorker, CANDLE_VERSION,
};
use modelbench::workloads::suite::Suite;
use std::time::Instant;

use crate::args::TargetArgs;
use crate::trials::Trials;

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
    /// Untimed generations per scenario before the trials (candle and PyTorch; each llama.cpp
    /// process runs one untimed generation after loading, before its timed one).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed repetitions per scenario and engine; candle and the peers alternate repetition by
    /// repetition. At least 5 give each ratio a bootstrap 95% interval.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    #[arg(long, default_value = modelbench::config::knobs::default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    /// Threads for the peers (default: candle's; candle's two pools, RAYON_NUM_THREADS and
    /// CANDLE_NUM_THREADS, must agree). A different count is refused unless
    /// --allow-thread-mismatch.
    #[arg(long)]
    pub peer_threads: Option<usize>,
    /// Run (with a warning in the output, the table and the records) when candle's two pools
    /// differ or a peer's thread count differs from candle's.
    #[arg(long)]
    pub allow_thread_mismatch: bool,
    /// llama-timed-ids binary (default: target/llama-cpp/0.3.36/bin/llama-timed-ids from
    /// scripts/build-llama-cpp.sh).
    #[arg(long)]
    pub llama_timed_ids: Option<PathBuf>,
    /// llama.cpp settings to run: `matched` (candle's KV type and attention path: -ctk f32
    /// -ctv f32 --fa off), `defaults` (llama.cpp's own), or both (comma list).
    #[arg(long, default_value = "matched,defaults")]
    pub llama_settings: String,
    /// PyTorch settings to run: `matched` (candle's attention path: attn_implementation=eager),
    /// `defaults` (transformers' own, sdpa), or both (comma list).
    #[arg(long, default_value = "matched,defaults")]
    pub torch_settings: String,
    /// Python of the PyTorch venv (default: target/peers/torch-venv/bin/python from
    /// scripts/setup-torch.sh).
    #[arg(long)]
    pub torch_python: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// A peer engine of one scenario: llama.cpp in setting k, or PyTorch worker j.
#[derive(Clone, Copy)]
enum PeerEngine {
    Llama(usize),
    Torch(usize),
}

/// The repetitions of one scenario, by llama.cpp setting and by PyTorch worker.
struct PeerRuns {
    llama: Vec<Vec<LlamaRun>>,
    torch: Vec<Vec<TorchRun>>,
}

/// The device string peer_torch.py takes (`cpu`, `cuda:0`).
fn torch_device(d: modelbench::measure::device::DeviceSpec) -> String {
    match d {
        modelbench::measure::device::DeviceSpec::Cpu => "cpu".to_string(),
        d => d.to_string(),
    }
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
            Some("llama.cpp needs a GGUF model (gguf:...); this model is compared with torch".into())
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

/// Parses a comma list of `matched` and `defaults` (`flag`: the option, for the error).
fn parse_setting_list<T: PartialEq>(
    flag: &str,
    v: &str,
    matched: impl Fn() -> T,
    defaults: impl Fn() -> T,
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let s = match p {
            "matched" => matched(),
            "defaults" => defaults(),
            _ => anyhow::bail!("{flag} {v}: unknown setting `{p}` (allowed: matched, defaults)"),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "{flag} {v:?}: name matched, defaults or both"
    );
    Ok(out)
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
    let settings = parse_setting_list(
        "--llama-settings",
        &a.llama_settings,
        || LlamaSetting::matched("f32", false),
        LlamaSetting::defaults,
    )?;
    let torch_settings = parse_setting_list(
        "--torch-settings",
        &a.torch_settings,
        || TorchSetting::matched("eager"),
        TorchSetting::defaults,
    )?;
    let (device, dtype, label) = a.target.resolve()?;
    // Same threads, really: candle's two pools must agree before a peer gets their count.
    let pools = CandlePools::current();
    let mut warnings: Vec<String> = Vec::new();
    let candle_threads = match pools.agreed() {
        Ok(n) => n,
        Err(e) if a.allow_thread_mismatch => {
            let w = format!("warning: {e} (kept: --allow-thread-mismatch)")
                .replace(" or pass --allow-thread-mismatch", "");
            println!("{w}");
            warnings.push(w);
            pools.matmul
        }
        Err(e) => return Err(e.into()),
    };
    let peer_threads = a.peer_threads.unwrap_or(candle_threads);
    anyhow::ensure!(peer_threads >= 1, "--peer-threads must be at least 1");
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
    let model_label = &plan.models[0].0;
    let dev = plan.device.open_for("--device")?;
    // candle's side is the generation suite's (`modelbench run`'s): the model resolved and
    // preflighted, loaded once, each scenario's workload measured through the trial loop; the
    // peers' repetitions interleave with its trials.
    let suite = plan.suite(&dev);
    let say = Trials::new(a.warmup, a.trials, !a.target.no_save);
    let res = suite.cases(&say)?.remove(0);

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
            Peer::LlamaCpp => a.llama_timed_ids.clone(),
            Peer::Torch => a.torch_python.clone(),
        }
        .unwrap_or_else(|| peer.default_program());
        if let Some(why) = missing_program(peer, &program) {
            println!("{}", skip_line(peer, &why));
            continue;
        }
        selected.push(Selected { peer, program });
    }
    let torch_python = selected
        .iter()
        .find(|s| s.peer == Peer::Torch)
        .map(|s| s.program.clone());
    let gguf = match &res.weights {
        Weights::Gguf(p) => Some(p.clone()),
        _ => None,
    };
    let llama = selected
        .iter()
        .find(|s| s.peer == Peer::LlamaCpp)
        .map(|s| s.program.clone());
    let build_info = llama.as_deref().and_then(build_info_of);

    // PyTorch: one worker per setting, each loaded once before candle loads (so the loads do
    // not overlap the timed trials), then serving one generation per repetition. Its thread
    // count as torch reports it is checked before anything is timed.
    let mut workers: Vec<TorchWorker> = Vec::new();
    let mut worker_warnings: Vec<Option<String>> = Vec::new();
    if let Some(python) = &torch_python {
        let dir = torch_model_dir(&res, plan.dtype)?;
        let spec_path =
            std::env::temp_dir().join(format!("modelbench-peer-torch-{}.json", std::process::id()));
        for setting in &torch_settings {
            let w = TorchWorker::start(
                python,
                &dir,
                peer_threads,
                plan.dtype.as_str(),
                &torch_device(plan.device),
                setting,
                &spec_path,
            );
            let _ = std::fs::remove_file(&spec_path);
            let w = w.with_context(|| format!("torch: {model_label} ({})", setting.id()))?;
            println!(
                "torch {}: loaded {} in {:.2} s (torch {}, transformers {}, {} threads, interop {}, attention {})",
                setting.id(),
                w.hello.model_class,
                w.hello.load_s,
                w.hello.torch_version,
                w.hello.transformers_version,
                w.hello.threads,
                w.hello.interop_threads,
                w.hello.attn_implementation.as_deref().unwrap_or("not reported"),
            );
            let warn = check_threads(
                Peer::Torch,
                candle_threads,
                Some(w.hello.threads),
                a.allow_thread_mismatch,
            )?;
            if let Some(w) = &warn {
                println!("{w}");
                warnings.push(w.clone());
            }
            worker_warnings.push(warn);
            workers.push(w);
        }
    }

    let mut run = RunDir::new(&reports_root(), plan.label.as_deref());
    let save = !a.target.no_save;
    let mut pending: Vec<Record> = Vec::new();

    // 1. Every scenario (candle loaded once), as `modelbench run` measures it; the peers'
    //    repetitions alternate with candle's trials (A B, B A, ...), from the same prompt ids.
    let mut loaded = suite.load(res.clone(), &say)?;
    let vocab = loaded.model.meta().vocab;
    let ids_file =
        std::env::temp_dir().join(format!("modelbench-peer-ids-{}.txt", std::process::id()));
    // Each scenario's torch repetitions (by worker), made into records once the workers ended
    // and their peak RSS is known.
    let mut torch_done: Vec<(usize, Record, Vec<TorchRun>)> = Vec::new();
    for (si, s) in plan.scenarios.iter().enumerate() {
        let mut engines: Vec<PeerEngine> = Vec::new();
        if llama.is_some() {
            match scenario_skip(Peer::LlamaCpp, s) {
                Some(why) => println!("{}", skip_line(Peer::LlamaCpp, &why)),
                None => engines.extend((0..settings.len()).map(PeerEngine::Llama)),
            }
        }
        if !workers.is_empty() {
            match scenario_skip(Peer::Torch, s) {
                Some(why) => println!("{}", skip_line(Peer::Torch, &why)),
                None => engines.extend((0..workers.len()).map(PeerEngine::Torch)),
            }
        }
        let n_peers = engines.len();
        let mut runs = PeerRuns {
            llama: vec![Vec::new(); settings.len()],
            torch: vec![Vec::new(); workers.len()],
        };
        let mut candle_use: Vec<ThreadUse> = Vec::new();
        let mut failure: Option<anyhow::Error> = None;
        let mut mark: Option<(Ticks, Instant)> = None;
        let warmup = a.warmup;
        let trials = a.trials;
        let seed = plan.seed;
        // Runs peer engine `e` in repetition `rep`, from the prompt ids of candle's trial of
        // that repetition.
        let run_peer = |rep: usize,
                        e: usize,
                        runs: &mut PeerRuns,
                        workers: &mut Vec<TorchWorker>|
         -> anyhow::Result<()> {
            let ids = prompt_ids(s.prompt_tokens, vocab, seed, (warmup + rep) as u64);
            match engines[e] {
                PeerEngine::Llama(k) => {
                    let r = run_llama_timed(
                        llama.as_ref().expect("llama.cpp selected"),
                        gguf.as_ref().expect("llama.cpp runs GGUF models only"),
                        &ids,
                        &ids_file,
                        s.new_tokens,
                        peer_threads,
                        &settings[k],
                        1,
                    )
                    .with_context(|| {
                        format!("llama.cpp: {model_label} / {} / repetition {rep}", s.name)
                    })?;
                    runs.llama[k].push(r);
                }
                PeerEngine::Torch(j) => {
                    let r = workers[j]
                        .generate(&ids, s.new_tokens, &s.sampling, seed)
                        .with_context(|| {
                            format!("torch: {model_label} / {} / repetition {rep}", s.name)
                        })?;
                    runs.torch[j].push(r);
                }
            }
            Ok(())
        };
        // torch's warm-ups: the prompt ids of candle's warm-up trials, untimed.
        for (e, eng) in engines.iter().enumerate() {
            if let PeerEngine::Torch(j) = *eng {
                for t in 0..warmup {
                    let ids = prompt_ids(s.prompt_tokens, vocab, seed, t as u64);
                    workers[j]
                        .generate(&ids, s.new_tokens, &s.sampling, seed)
                        .with_context(|| {
                            format!(
                                "torch: {model_label} / {} / warm-up {t} (engine {e})",
                                s.name
                            )
                        })?;
                }
            }
        }
        // The peer engines of repetition `rep` that run before (true) or after (false) candle's trial.
        let peers_of = |rep: usize, before: bool| -> Vec<usize> {
            let order = interleave_order(rep, n_peers + 1);
            let at = order
                .iter()
                .position(|&e| e == 0)
                .expect("candle is engine 0");
            let part = if before {
                &order[..at]
            } else {
                &order[at + 1..]
            };
            part.iter().map(|e| e - 1).collect()
        };
        let mut w = suite.workload(&mut loaded, si)?;
        let mut progress = |i: usize, warm: bool| {
            if warm || failure.is_some() {
                return;
            }
            let rep = i - warmup;
            if let Some((t0, at)) = mark.take() {
                if let Some(u) = Ticks::read("self").and_then(|t1| {
                    ThreadUse::from_cpu_seconds(&t0.seconds_until(&t1), at.elapsed().as_secs_f64())
                }) {
                    candle_use.push(u);
                }
            }
            let mut todo: Vec<(usize, usize)> = Vec::new();
            if rep > 0 {
                todo.extend(peers_of(rep - 1, false).into_iter().map(|k| (rep - 1, k)));
            }
            todo.extend(peers_of(rep, true).into_iter().map(|k| (rep, k)));
            for (r, k) in todo {
                if let Err(e) = run_peer(r, k, &mut runs, &mut workers) {
                    failure = Some(e);
                    return;
                }
            }
            mark = Ticks::read("self").map(|t| (t, Instant::now()));
        };
        let rec = modelbench::workloads::run_trials_with(&mut w, warmup, trials, &mut progress);
        if let Some((t0, at)) = mark.take() {
            if let Some(u) = Ticks::read("self").and_then(|t1| {
                ThreadUse::from_cpu_seconds(&t0.seconds_until(&t1), at.elapsed().as_secs_f64())
            }) {
                candle_use.push(u);
            }
        }
        let mut rec = rec.with_context(|| format!("candle: {model_label} / {}", s.name))?;
        if failure.is_none() && trials > 0 {
            for k in peers_of(trials - 1, false) {
                if let Err(e) = run_peer(trials - 1, k, &mut runs, &mut workers) {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            let _ = std::fs::remove_file(&ids_file);
            return Err(e);
        }
        let thread_use = ThreadUse::median(&candle_use);
        rec.engine = Some(Engine {
            name: "candle".into(),
            version: format!(
                "candle {CANDLE_VERSION} (modelbench {})",
                rec.build.crate_version
            ),
            flags: format!(
                "{} build, features [{}], rustflags `{}`, {} {}; KV cache {}, attention {}; thread pools {}",
                rec.build.profile,
                rec.build.features,
                rec.build.rustflags,
                rec.device,
                rec.dtype,
                match rec.dtype { modelbench::output::record::Precision::Float(d) => d.as_str().to_string(), _ => "f32".into() },
                plan.attention,
                pools.describe()
            ),
            threads: Some(candle_threads),
        });
        rec.extra["thread_pools"] = serde_json::json!(pools);
        rec.extra["thread_use"] = serde_json::json!(thread_use);
        rec.extra["interleaved"] = serde_json::json!(n_peers > 0);
        if pools.agreed().is_err() {
            rec.extra["thread_warning"] = serde_json::json!(warnings[0]);
        }
        println!("{}", progress_line("candle", &rec, thread_use));
        let n_llama = runs.llama.iter().filter(|r| !r.is_empty()).count();
        for (k, rs) in runs.llama.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let mut pr = llama_record(s, rs, &settings[k], build_info.as_ref(), &rec.model)?;
            let reported = pr.engine.as_ref().and_then(|e| e.threads);
            let warn = check_threads(
                Peer::LlamaCpp,
                candle_threads,
                reported,
                a.allow_thread_mismatch,
            )?;
            stamp_like(&mut pr, &rec);
            pr.extra["interleaved"] = serde_json::json!(true);
            pr.extra["paired_with"] = serde_json::json!(rec.id);
            if let Some(w) = warn {
                println!("{w}");
                pr.extra["thread_warning"] = serde_json::json!(w);
                warnings.push(w);
            }
            let tu = serde_json::from_value(pr.extra["thread_use"].clone()).ok();
            let name = pr.extra["setting_label"]
                .as_str()
                .unwrap_or("llama.cpp")
                .to_string();
            println!("{}", progress_line(&name, &pr, tu));
            pending.push(pr);
        }
        for (j, rs) in runs.torch.into_iter().enumerate() {
            if !rs.is_empty() {
                let tu =
                    ThreadUse::median(&rs.iter().filter_map(|r| r.thread_use).collect::<Vec<_>>());
                let mut pr = torch_record(
                    s,
                    &rs,
                    (
                        &workers[j].setting,
                        &workers[j].hello,
                        &workers[j].raw_hello,
                    ),
                    None,
                    &rec.model,
                )?;
                stamp_like(&mut pr, &rec);
                let name = pr.extra["setting_label"]
                    .as_str()
                    .unwrap_or("torch")
                    .to_string();
                println!("{}", progress_line(&name, &pr, tu));
                torch_done.push((j, rec.clone(), rs));
            }
        }
        pending.insert(pending.len() - n_llama, rec);
    }
    let _ = std::fs::remove_file(&ids_file);
    drop(loaded);

    // 2. The torch workers end; their records get each worker's own peak RSS.
    let mut processes = Vec::new();
    let mut ended: Vec<(TorchSetting, TorchHello, serde_json::Value)> = Vec::new();
    for w in workers {
        ended.push((w.setting.clone(), w.hello.clone(), w.raw_hello.clone()));
        processes.push(w.finish().context("torch: the worker ended badly")?);
    }
    for (j, candle, rs) in torch_done {
        let (setting, hello, raw) = &ended[j];
        let s = plan
            .scenarios
            .iter()
            .find(|s| s.name == candle.scenario)
            .expect("a scenario of the plan");
        let mut pr = torch_record(
            s,
            &rs,
            (setting, hello, raw),
            Some(processes[j]),
            &candle.model,
        )?;
        stamp_like(&mut pr, &candle);
        pr.extra["interleaved"] = serde_json::json!(true);
        pr.extra["paired_with"] = serde_json::json!(candle.id);
        if let Some(w) = &worker_warnings[j] {
            pr.extra["thread_warning"] = serde_json::json!(w);
        }
        pending.push(pr);
    }
    for r in pending {
        if save {
            run.push(r)?;
        } else {
            run.push_unsaved(r);
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
            "# modelbench peers: {model_label}, {} tier\n\n{}\n\n{table}\n{}",
            tier.name(),
            PEERS_NOTE.replace("{machine}", &run.records()[0].hardware.describe()),
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
    // The index again, now that peers.md and peers.png exist (the records' flush wrote it before).
    let root = run.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    if let Err(e) = modelbench::output::report::write_index(&root) {
        println!("warning: {}: index.html not updated: {e}", root.display());
    }
    println!("run folder: {}", run.path.display());
    Ok(())
}

fn progress_line(engine: &str, r: &Record, threads: Option<ThreadUse>) -> String {
    let g = r.gen.clone().unwrap_or_default();
    let na = modelbench::output::report::na;
    format!(
        "{engine} {:<8} {:>8} tok/s  prefill {:>8} tok/s  decode {:>7} tok/s  TTFT p50 {:>8} ms  TPOT p50 {:>7} ms  threads {}",
        r.scenario,
        na(r.tok_s, 1),
        na(g.prefill_tok_s, 1),
        na(g.decode_tok_s, 1),
        na(g.ttft_ms.map(|p| p.p50), 2),
        na(g.tpot_ms.map(|p| p.p50), 2),
        threads
            .map(|t| t.describe())
            .unwrap_or_else(|| "not measured".into()),
    )
}
