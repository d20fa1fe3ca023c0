//! `modelbench peers` on the one suite loop ([`run_suite`](crate::workloads::suite::run_suite)):
//! the generation suite's model and scenarios, candle measured by the driver's trial loop, and
//! the peer engines (llama.cpp in each setting, one PyTorch worker per setting) run in
//! alternation with candle's trials, repetition by repetition, from the prompt ids of
//! candle's trial of that repetition.
//!
//! The suite's parts: a case loads the peers that fit the model (a PyTorch worker is loaded
//! before candle, so that no load overlaps a timed trial) and then candle; a point is a
//! scenario, whose workload ([`Interleaved`]) is candle's generation with the peers' runs
//! before and after each of its timed trials; candle's record is the generation record with
//! its engine and thread use; llama.cpp's records follow it ([`Suite::beside`]), PyTorch's
//! come once the workers ended and their peak RSS is known ([`Suite::unload`]).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engine::generate::{prompt_ids, Trace};
use crate::error::{Error, Result};
use crate::measure::threads::{CandlePools, ThreadUse, Ticks};
use crate::models::sources::loading::Loaded;
use crate::models::sources::Resolved;
use crate::models::Weights;
use crate::output::record::{Engine, Precision, Record};
use crate::workloads::generation::{Generation, GenerationSuite};
use crate::workloads::suite::{Say, Suite};
use crate::workloads::{Measured, Target, Workload};

use super::{
    build_info_of, check_threads, interleave_order, llama_record, missing_program, run_llama_timed,
    scenario_skip, skip_line, stamp_like, torch_record, LlamaRun, LlamaSetting, Peer, TorchRun,
    TorchSetting, TorchWorker, CANDLE_VERSION,
};

/// What a peers run compares and how, as the command parsed it.
pub struct PeerOptions {
    /// The peers asked for (None: those that fit the model).
    pub wanted: Option<Vec<Peer>>,
    /// llama-timed-ids (None: [`Peer::default_program`]).
    pub llama_timed_ids: Option<PathBuf>,
    /// The PyTorch venv's python (None: [`Peer::default_program`]).
    pub torch_python: Option<PathBuf>,
    pub llama_settings: Vec<LlamaSetting>,
    pub torch_settings: Vec<TorchSetting>,
    /// candle's two thread pools, as read at start-up.
    pub pools: CandlePools,
    /// candle's thread count (its pools' agreed count, or the matmul pool's when allowed apart).
    pub candle_threads: usize,
    /// The peers' thread count.
    pub peer_threads: usize,
    /// Keep a run whose thread counts differ, with a warning.
    pub allow_thread_mismatch: bool,
    /// The warning of candle's two pools differing (kept by `allow_thread_mismatch`).
    pub pool_warning: Option<String>,
    /// The driver's untimed and timed iterations per scenario: the peers' repetition `r`
    /// pairs with candle's call `warmup + r` (same prompt ids).
    pub warmup: usize,
    pub trials: usize,
}

/// The peers suite: [`GenerationSuite`] (one model) with peer engines beside candle.
pub struct PeersSuite {
    pub gen: GenerationSuite,
    pub opts: PeerOptions,
    /// Thread warnings raised while running (printed as they come; the command repeats them).
    warnings: RefCell<Vec<String>>,
    /// Whether any peer was selected to run.
    any_peer: Cell<bool>,
}

impl PeersSuite {
    pub fn new(gen: GenerationSuite, opts: PeerOptions) -> PeersSuite {
        PeersSuite {
            gen,
            opts,
            warnings: RefCell::new(Vec::new()),
            any_peer: Cell::new(false),
        }
    }

    /// The thread warnings raised by the peers while running, in order.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }

    /// Whether a peer was installed and fit the model (false: candle's numbers only).
    pub fn any_peer(&self) -> bool {
        self.any_peer.get()
    }

    fn warn(&self, say: &dyn Say, w: &str) {
        say.say(w);
        self.warnings.borrow_mut().push(w.to_string());
    }
}

/// A loaded case: candle's model, and the peers beside it.
pub struct PeersLoaded {
    candle: Loaded,
    side: PeerSide,
}

/// The peers of a loaded case and what they ran so far.
struct PeerSide {
    /// llama-timed-ids and the GGUF it runs (None: llama.cpp does not run).
    llama: Option<(PathBuf, PathBuf)>,
    build_info: Option<Value>,
    /// One PyTorch worker per setting, with its thread warning.
    workers: Vec<TorchWorker>,
    worker_warnings: Vec<Option<String>>,
    /// Where llama-timed-ids reads a repetition's prompt ids.
    ids_file: PathBuf,
    /// Each scenario's PyTorch repetitions by worker, with candle's record of the scenario:
    /// made into records once the workers ended.
    torch_done: Vec<(usize, Record, Vec<TorchRun>)>,
}

impl Drop for PeerSide {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ids_file);
    }
}

/// Why a peer does not fit this model and device (None: it fits). `llama_backend`: the
/// backend of the llama.cpp build (its build-info.json's `backend`; a build without one is the
/// CPU build).
pub fn model_skip(
    peer: Peer,
    weights: &Weights,
    device: &str,
    llama_backend: &str,
) -> Option<String> {
    match (peer, weights) {
        (Peer::LlamaCpp, Weights::Gguf(_)) if device.starts_with("cuda") && llama_backend != "cuda" => Some(format!(
            "candle runs on {device} and this llama.cpp build is {llama_backend}-only; build the CUDA peer with scripts/build-llama-cpp.sh --cuda <compute capability> and pass its bin/llama-timed-ids"
        )),
        (Peer::LlamaCpp, Weights::Gguf(_)) if !device.starts_with("cuda") && device != "cpu" => Some(format!(
            "the llama.cpp builds of scripts/build-llama-cpp.sh are for the CPU and CUDA; candle runs on {device}"
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

/// The backend of the llama.cpp build a peer program belongs to: build-info.json's `backend`
/// (`cuda` for scripts/build-llama-cpp.sh --cuda), else `cpu`.
pub fn llama_backend(program: &Path) -> String {
    build_info_of(program)
        .and_then(|b| b["backend"].as_str().map(str::to_string))
        .unwrap_or_else(|| "cpu".into())
}

/// The device string peer_torch.py takes (`cpu`, `cuda:0`).
fn torch_device(d: crate::measure::device::DeviceSpec) -> String {
    match d {
        crate::measure::device::DeviceSpec::Cpu => "cpu".to_string(),
        d => d.to_string(),
    }
}

/// The folder PyTorch loads for a model: the safetensors' own folder, or for a synthetic model
/// its seeded weights written once under target/peers/models/ (same filler, same numbers).
fn torch_model_dir(res: &Resolved, dtype: candle_core::DType, say: &dyn Say) -> Result<PathBuf> {
    match &res.weights {
        Weights::Safetensors(paths) => {
            let dir = paths[0].parent().unwrap_or(Path::new(".")).to_path_buf();
            if !dir.join("config.json").is_file() {
                return Err(Error::Report(format!(
                    "{}: no config.json beside the safetensors for PyTorch to load",
                    dir.display()
                )));
            }
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
            let root = crate::util::root().join("target/peers/models");
            let dir = root.join(format!("{name}-seed{seed}-{}", dtype.as_str()));
            if dir.join("modelbench-export.json").is_file() {
                return Ok(dir);
            }
            let tmp = root.join(format!("{name}-seed{seed}-{}.partial", dtype.as_str()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
            say.say(&format!(
                "writing {}'s seeded weights ({}) once as safetensors for PyTorch: {}",
                res.label,
                dtype.as_str(),
                dir.display()
            ));
            let config = serde_json::to_string_pretty(&res.config)
                .map_err(|e| Error::Report(format!("{}: config: {e}", res.label)))?;
            crate::models::sources::write_seeded(res.family, &config, &tmp, dtype)?;
            let done = tmp.join("modelbench-export.json");
            std::fs::write(
                &done,
                json!({"model": res.label, "seed": seed, "dtype": dtype.as_str(),
                    "written_by": "modelbench peers (models::sources::write_seeded)"})
                .to_string(),
            )
            .map_err(Error::io(&done))?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).map_err(Error::io(&dir))?;
            Ok(dir)
        }
        Weights::Gguf(_) => unreachable!("model_skip keeps GGUF away from torch"),
    }
}

/// One line of a scenario's result for an engine: tok/s, prefill and decode rates, TTFT and
/// TPOT medians, threads busy.
pub fn progress_line(engine: &str, r: &Record, threads: Option<ThreadUse>) -> String {
    let g = r.gen.clone().unwrap_or_default();
    let na = crate::output::report::na;
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

/// A peer engine of one scenario: llama.cpp in setting k, or PyTorch worker j.
#[derive(Clone, Copy)]
enum PeerEngine {
    Llama(usize),
    Torch(usize),
}

/// The workload of one scenario: candle's generation, with the peer engines' repetitions
/// before and after each of its timed trials (the order of [`interleave_order`], candle being
/// engine 0), from the prompt ids of candle's trial of the same repetition. Timing, trial loop
/// and record are candle's generation's; the peers' runs stay outside candle's timed region.
pub struct Interleaved<'a> {
    candle: Generation<'a>,
    side: &'a mut PeerSide,
    opts: &'a PeerOptions,
    /// candle's attention path (named in its engine's flags).
    attention: crate::models::attention::Attention,
    engines: Vec<PeerEngine>,
    /// Repetitions by llama.cpp setting and by PyTorch worker.
    llama_runs: Vec<Vec<LlamaRun>>,
    torch_runs: Vec<Vec<TorchRun>>,
    /// Threads busy in candle's timed trials.
    candle_use: Vec<ThreadUse>,
    /// A peer's failure: no peer runs after it, candle finishes its trials, and the point
    /// fails with it.
    failure: Option<Error>,
}

impl Interleaved<'_> {
    /// The peer engines of repetition `rep` that run before (true) or after (false) candle's
    /// trial.
    fn peers_of(&self, rep: usize, before: bool) -> Vec<usize> {
        let order = interleave_order(rep, self.engines.len() + 1);
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
    }

    fn run_peers(&mut self, rep: usize, before: bool) {
        for e in self.peers_of(rep, before) {
            if self.failure.is_some() {
                return;
            }
            if let Err(err) = self.run_peer(rep, e) {
                self.failure = Some(err);
            }
        }
    }

    /// Runs peer engine `e` in repetition `rep`.
    fn run_peer(&mut self, rep: usize, e: usize) -> Result<()> {
        let s = self.candle.scenario;
        let model = &self.candle.loaded.resolved.label;
        let vocab = self.candle.loaded.model.meta().vocab;
        let seed = self.candle.seed;
        let ids = prompt_ids(
            s.prompt_tokens,
            vocab,
            seed,
            (self.opts.warmup + rep) as u64,
        );
        let what = |peer: &str, e: Error| {
            Error::Report(format!(
                "{peer}: {model} / {} / repetition {rep}: {e}",
                s.name
            ))
        };
        match self.engines[e] {
            PeerEngine::Llama(k) => {
                let (bin, gguf) = self.side.llama.as_ref().expect("llama.cpp selected");
                let r = run_llama_timed(
                    bin,
                    gguf,
                    &ids,
                    &self.side.ids_file,
                    s.new_tokens,
                    self.opts.peer_threads,
                    &self.opts.llama_settings[k],
                    1,
                )
                .map_err(|e| what("llama.cpp", e))?;
                self.llama_runs[k].push(r);
            }
            PeerEngine::Torch(j) => {
                let r = self.side.workers[j]
                    .generate(&ids, s.new_tokens, &s.sampling, seed)
                    .map_err(|e| what("torch", e))?;
                self.torch_runs[j].push(r);
            }
        }
        Ok(())
    }
}

impl Workload for Interleaved<'_> {
    type Out = Trace;

    fn group(&self) -> String {
        self.candle.group()
    }

    fn name(&self) -> String {
        self.candle.name()
    }

    fn target(&self) -> Target {
        self.candle.target()
    }

    fn tokens_per_iter(&self) -> u64 {
        self.candle.tokens_per_iter()
    }

    fn pool_device(&self) -> Option<&candle_core::Device> {
        self.candle.pool_device()
    }

    /// Candle's iteration; in a timed trial (call `warmup + rep`), the peers of repetition
    /// `rep` run before and after it, and the threads busy in candle's are measured.
    fn iterate(&mut self, trial: u64) -> Result<(Duration, Trace)> {
        let rep = usize::try_from(trial)
            .ok()
            .and_then(|t| t.checked_sub(self.opts.warmup))
            .filter(|&r| r < self.opts.trials);
        let Some(rep) = rep else {
            return self.candle.iterate(trial);
        };
        self.run_peers(rep, true);
        let mark = Ticks::read("self").map(|t| (t, Instant::now()));
        let out = self.candle.iterate(trial);
        if let Some((t0, at)) = mark {
            if let Some(u) = Ticks::read("self").and_then(|t1| {
                ThreadUse::from_cpu_seconds(&t0.seconds_until(&t1), at.elapsed().as_secs_f64())
            }) {
                self.candle_use.push(u);
            }
        }
        self.run_peers(rep, false);
        out
    }

    /// The generation record, naming candle as the engine (version, build, KV cache,
    /// attention, thread pools) with the threads busy in its trials.
    fn record(&self, m: &Measured<Trace>) -> Record {
        let mut rec = self.candle.record(m);
        let thread_use = ThreadUse::median(&self.candle_use);
        let pools = &self.opts.pools;
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
                match rec.dtype {
                    Precision::Float(d) => d.as_str().to_string(),
                    _ => "f32".into(),
                },
                self.attention,
                pools.describe()
            ),
            threads: Some(self.opts.candle_threads),
        });
        rec.extra["thread_pools"] = json!(pools);
        rec.extra["thread_use"] = json!(thread_use);
        rec.extra["interleaved"] = json!(!self.engines.is_empty());
        if let Some(w) = &self.opts.pool_warning {
            rec.extra["thread_warning"] = json!(w);
        }
        rec
    }
}

impl Suite for PeersSuite {
    type Case = Resolved;
    type Loaded = PeersLoaded;
    type Work<'a> = Interleaved<'a>;

    /// The generation suite's: the model resolved and every scenario preflighted.
    fn cases(&self, say: &dyn Say) -> Result<Vec<Resolved>> {
        self.gen.cases(say)
    }

    /// Selects the peers that fit the model and are installed (a skip is one line, never a
    /// number), loads one PyTorch worker per setting (its thread count as torch reports it
    /// checked before anything is timed), then candle.
    fn load(&self, res: Resolved, say: &dyn Say) -> Result<PeersLoaded> {
        let o = &self.opts;
        let device_name = self.gen.device.to_string();
        let mut llama = None;
        let mut torch_python = None;
        for peer in Peer::ALL {
            let explicit = o.wanted.as_ref().map(|w| w.contains(&peer));
            if explicit == Some(false) {
                continue;
            }
            let program = match peer {
                Peer::LlamaCpp => o.llama_timed_ids.clone(),
                Peer::Torch => o.torch_python.clone(),
            }
            .unwrap_or_else(|| peer.default_program());
            let backend = llama_backend(&program);
            if let Some(why) = model_skip(peer, &res.weights, &device_name, &backend) {
                if explicit == Some(true) || o.wanted.is_none() {
                    say.say(&skip_line(peer, &why));
                }
                continue;
            }
            if let Some(why) = missing_program(peer, &program) {
                say.say(&skip_line(peer, &why));
                continue;
            }
            self.any_peer.set(true);
            match (peer, &res.weights) {
                (Peer::LlamaCpp, Weights::Gguf(gguf)) => llama = Some((program, gguf.clone())),
                (Peer::LlamaCpp, _) => unreachable!("model_skip keeps llama.cpp to GGUF"),
                (Peer::Torch, _) => torch_python = Some(program),
            }
        }
        let build_info = llama.as_ref().and_then(|(bin, _)| build_info_of(bin));
        let mut side = PeerSide {
            llama,
            build_info,
            workers: Vec::new(),
            worker_warnings: Vec::new(),
            ids_file: std::env::temp_dir()
                .join(format!("modelbench-peer-ids-{}.txt", std::process::id())),
            torch_done: Vec::new(),
        };
        if let Some(python) = &torch_python {
            let dir = torch_model_dir(&res, self.gen.dtype, say)?;
            let spec_path = std::env::temp_dir()
                .join(format!("modelbench-peer-torch-{}.json", std::process::id()));
            for setting in &o.torch_settings {
                let w = TorchWorker::start(
                    python,
                    &dir,
                    o.peer_threads,
                    self.gen.dtype.as_str(),
                    &torch_device(self.gen.device),
                    setting,
                    &spec_path,
                );
                let _ = std::fs::remove_file(&spec_path);
                let w = w.map_err(|e| {
                    Error::Report(format!("torch: {} ({}): {e}", res.label, setting.id()))
                })?;
                say.say(&format!(
                    "torch {}: loaded {} in {:.2} s (torch {}, transformers {}, {} threads, interop {}, attention {})",
                    setting.id(),
                    w.hello.model_class,
                    w.hello.load_s,
                    w.hello.torch_version,
                    w.hello.transformers_version,
                    w.hello.threads,
                    w.hello.interop_threads,
                    w.hello.attn_implementation.as_deref().unwrap_or("not reported"),
                ));
                let warn = check_threads(
                    Peer::Torch,
                    o.candle_threads,
                    Some(w.hello.threads),
                    o.allow_thread_mismatch,
                )?;
                if let Some(w) = &warn {
                    self.warn(say, w);
                }
                side.worker_warnings.push(warn);
                side.workers.push(w);
            }
        }
        let candle = self.gen.load(res, say)?;
        Ok(PeersLoaded { candle, side })
    }

    fn points(&self) -> usize {
        self.gen.points()
    }

    /// Candle's generation of scenario `p` with the peers that can run it (a peer that cannot
    /// is one skip line); PyTorch's warm-ups (the prompt ids of candle's warm-up calls,
    /// untimed) run here, before candle's.
    fn workload<'a>(
        &'a self,
        loaded: &'a mut PeersLoaded,
        p: usize,
        say: &dyn Say,
    ) -> Result<Interleaved<'a>> {
        let PeersLoaded { candle, side } = loaded;
        let s = &self.gen.scenarios[p];
        let mut engines = Vec::new();
        if side.llama.is_some() {
            match scenario_skip(Peer::LlamaCpp, s) {
                Some(why) => say.say(&skip_line(Peer::LlamaCpp, &why)),
                None => engines.extend((0..self.opts.llama_settings.len()).map(PeerEngine::Llama)),
            }
        }
        if !side.workers.is_empty() {
            match scenario_skip(Peer::Torch, s) {
                Some(why) => say.say(&skip_line(Peer::Torch, &why)),
                None => engines.extend((0..side.workers.len()).map(PeerEngine::Torch)),
            }
        }
        let vocab = candle.model.meta().vocab;
        for (e, eng) in engines.iter().enumerate() {
            if let PeerEngine::Torch(j) = *eng {
                for t in 0..self.opts.warmup {
                    let ids = prompt_ids(s.prompt_tokens, vocab, self.gen.seed, t as u64);
                    side.workers[j]
                        .generate(&ids, s.new_tokens, &s.sampling, self.gen.seed)
                        .map_err(|err| {
                            Error::Report(format!(
                                "torch: {} / {} / warm-up {t} (engine {e}): {err}",
                                candle.resolved.label, s.name
                            ))
                        })?;
                }
            }
        }
        Ok(Interleaved {
            llama_runs: vec![Vec::new(); self.opts.llama_settings.len()],
            torch_runs: vec![Vec::new(); side.workers.len()],
            candle: self.gen.workload(candle, p, say)?,
            side,
            opts: &self.opts,
            attention: self.gen.attention,
            engines,
            candle_use: Vec::new(),
            failure: None,
        })
    }

    /// candle's line: rates, TTFT, TPOT and the threads busy.
    fn result_line(&self, _: usize, r: &Record, _: bool) -> Option<String> {
        let tu = serde_json::from_value(r.extra["thread_use"].clone()).ok();
        Some(progress_line("candle", r, tu))
    }

    /// llama.cpp's records of the scenario, one per setting (each with its line); PyTorch's
    /// lines, its records kept for [`Suite::unload`]. A peer's failure fails the point here.
    fn beside<'a>(
        &'a self,
        w: &mut Interleaved<'a>,
        candle: &Record,
        say: &dyn Say,
    ) -> Result<Vec<Record>> {
        if let Some(e) = w.failure.take() {
            return Err(e);
        }
        let o = &self.opts;
        let s = w.candle.scenario;
        let mut out = Vec::new();
        for (k, rs) in w
            .llama_runs
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
        {
            let mut pr = llama_record(
                s,
                rs,
                &o.llama_settings[k],
                w.side.build_info.as_ref(),
                &candle.model,
            )?;
            let reported = pr.engine.as_ref().and_then(|e| e.threads);
            let warn = check_threads(
                Peer::LlamaCpp,
                o.candle_threads,
                reported,
                o.allow_thread_mismatch,
            )?;
            stamp_like(&mut pr, candle);
            pr.extra["interleaved"] = json!(true);
            pr.extra["paired_with"] = json!(candle.id);
            if let Some(warn) = warn {
                self.warn(say, &warn);
                pr.extra["thread_warning"] = json!(warn);
            }
            let tu = serde_json::from_value(pr.extra["thread_use"].clone()).ok();
            let name = pr.extra["setting_label"]
                .as_str()
                .unwrap_or("llama.cpp")
                .to_string();
            say.say(&progress_line(&name, &pr, tu));
            out.push(pr);
        }
        for (j, rs) in std::mem::take(&mut w.torch_runs).into_iter().enumerate() {
            if rs.is_empty() {
                continue;
            }
            let tu = ThreadUse::median(&rs.iter().filter_map(|r| r.thread_use).collect::<Vec<_>>());
            let worker = &w.side.workers[j];
            let mut pr = torch_record(
                s,
                &rs,
                (&worker.setting, &worker.hello, &worker.raw_hello),
                None,
                &candle.model,
            )?;
            stamp_like(&mut pr, candle);
            let name = pr.extra["setting_label"]
                .as_str()
                .unwrap_or("torch")
                .to_string();
            say.say(&progress_line(&name, &pr, tu));
            w.side.torch_done.push((j, candle.clone(), rs));
        }
        Ok(out)
    }

    /// candle's model dropped, the PyTorch workers end; their records get each worker's own
    /// peak RSS (over its life).
    fn unload(&self, loaded: PeersLoaded, _: &dyn Say) -> Result<Vec<Record>> {
        let PeersLoaded { candle, mut side } = loaded;
        drop(candle);
        let mut ended = Vec::new();
        for w in std::mem::take(&mut side.workers) {
            let (setting, hello, raw) = (w.setting.clone(), w.hello.clone(), w.raw_hello.clone());
            let process = w
                .finish()
                .map_err(|e| Error::Report(format!("torch: the worker ended badly: {e}")))?;
            ended.push((setting, hello, raw, process));
        }
        let mut out = Vec::new();
        for (j, candle, rs) in std::mem::take(&mut side.torch_done) {
            let (setting, hello, raw, process) = &ended[j];
            let s = self
                .gen
                .scenarios
                .iter()
                .find(|s| s.name == candle.scenario)
                .expect("a scenario of the plan");
            let mut pr =
                torch_record(s, &rs, (setting, hello, raw), Some(*process), &candle.model)?;
            stamp_like(&mut pr, &candle);
            pr.extra["interleaved"] = json!(true);
            pr.extra["paired_with"] = json!(candle.id);
            if let Some(w) = &side.worker_warnings[j] {
                pr.extra["thread_warning"] = json!(w);
            }
            out.push(pr);
        }
        Ok(out)
    }
}
