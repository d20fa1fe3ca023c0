//! Peers (issues 15 and 30): the same scenario run by other engines, llama.cpp
//! (`llama-timed-ids`, our small program on libllama, for GGUF models) and PyTorch + Hugging
//! Face transformers (`scripts/peer_torch.py`, for safetensors and synthetic models), at the
//! same prompt ids, generation length and thread count as candle's run, each turned into a
//! record of kind `peer` whose `engine` names it.
//!
//! llama.cpp runs like for like: one process per repetition, alternating with candle's trials
//! in the same minutes ([`interleave_order`]), from the same prompt token ids as candle's trial
//! of that repetition, crediting the same G generated tokens; once with the KV-cache type and
//! attention path of candle's run ([`LlamaSetting::matched`]: f32 KV, flash attention off for
//! a CPU GGUF run) and once with llama.cpp's defaults, each record naming its setting. Each
//! record keeps its per-repetition rates (`extra.trial_rates`), from which output::peers
//! computes paired candle/peer ratios with bootstrap intervals.
//!
//! PyTorch runs by the same rules, as a long-lived worker ([`TorchWorker`]: loaded once, then
//! one generate() per repetition, alternating with candle's trials) so that it is timed warm
//! without paying a process start and a model load per repetition; once with candle's
//! attention path ([`TorchSetting::matched`]: eager) and once with transformers' default
//! (sdpa), in candle's dtype, KV cache on, torch's intra- and inter-op pools set to the suite's
//! thread count and checked as torch reports it.
//!
//! Nothing here is invented: a metric the peer does not measure stays null, and what a peer
//! record says about load time, memory, threads and the model file is the peer's own,
//! measured around or reported by its process.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod suite;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::generate::Trace;
use crate::engine::scenario::Scenario;
use crate::error::{Error, Result};
use crate::measure::process::{run_measured, ProcessUse};
use crate::measure::stats::median;
use crate::measure::threads::ThreadUse;
use crate::models::Provenance;
use crate::output::record::{
    gen_metrics, trial_rates, Engine, Harness, Kind, ModelInfo, Precision, Record,
};

/// The candle version modelbench is built on (Cargo.lock; a test keeps them equal).
pub const CANDLE_VERSION: &str = "0.11.1";

/// A peer engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    LlamaCpp,
    Torch,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::LlamaCpp, Peer::Torch];
    pub const ALLOWED: &'static str = "llama.cpp, torch";

    pub fn name(self) -> &'static str {
        match self {
            Peer::LlamaCpp => "llama.cpp",
            Peer::Torch => "torch",
        }
    }

    pub fn parse(s: &str) -> Option<Peer> {
        match s.trim() {
            "llama.cpp" | "llama-cpp" | "llamacpp" => Some(Peer::LlamaCpp),
            "torch" | "pytorch" => Some(Peer::Torch),
            _ => None,
        }
    }

    /// The script that installs the peer.
    pub fn setup_script(self) -> &'static str {
        match self {
            Peer::LlamaCpp => "scripts/build-llama-cpp.sh",
            Peer::Torch => "scripts/setup-torch.sh",
        }
    }

    /// Where the setup script puts the peer's program by default (llama.cpp: in
    /// `$LLAMA_CPP_DIR` when set, [`crate::util::llama_cpp::dir`]).
    pub fn default_program(self) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        match self {
            Peer::LlamaCpp => crate::util::llama_cpp::program("llama-timed-ids"),
            Peer::Torch => root.join("target/peers/torch-venv/bin/python"),
        }
    }
}

/// The one line printed when a peer cannot run a scenario or is not installed.
pub fn skip_line(peer: Peer, reason: &str) -> String {
    format!("skip: {}: {reason}", peer.name())
}

/// The skip reason for a peer program that is not there.
pub fn missing_program(peer: Peer, program: &Path) -> Option<String> {
    if program.is_file() {
        return None;
    }
    Some(format!(
        "{} not found (install it with {})",
        program.display(),
        peer.setup_script()
    ))
}

/// Whether a peer can run a scenario at all (None: it can; Some: why not).
pub fn scenario_skip(peer: Peer, s: &Scenario) -> Option<String> {
    if s.pipeline {
        return Some(format!(
            "scenario {}: its timed region includes tokenization and detokenization, which the peers are not given (they run on token ids)",
            s.name
        ));
    }
    if peer == Peer::LlamaCpp && !s.sampling.is_greedy() {
        return Some(format!(
            "scenario {}: llama-timed-ids decodes greedily (argmax), so a sampled scenario has no llama.cpp counterpart",
            s.name
        ));
    }
    None
}

/// Same thread count or nothing: Ok(None) when they agree, Ok(Some(warning)) when they differ
/// and `allow` is set, Err naming both counts otherwise. A peer that did not report its thread
/// count is an error too (its number could not be called comparable).
pub fn check_threads(
    peer: Peer,
    candle: usize,
    reported: Option<usize>,
    allow: bool,
) -> Result<Option<String>> {
    let msg = match reported {
        Some(t) if t == candle => return Ok(None),
        Some(t) => format!(
            "{} ran with {t} threads but candle with {candle}: not a like-for-like comparison",
            peer.name()
        ),
        None => format!(
            "{} did not report its thread count (candle used {candle})",
            peer.name()
        ),
    };
    if allow {
        Ok(Some(format!(
            "warning: {msg} (kept: --allow-thread-mismatch)"
        )))
    } else {
        Err(Error::Report(format!(
            "{msg}; make them agree (CANDLE_NUM_THREADS sets candle's, --peer-threads the peers') or pass --allow-thread-mismatch"
        )))
    }
}

// ---------------------------------------------------------------- llama.cpp (llama-timed-ids)

/// How llama.cpp is run: the KV-cache type and the flash-attention setting (None: llama.cpp's
/// own default, f16 and `auto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaSetting {
    pub kv: Option<String>,
    pub fa: Option<String>,
}

impl LlamaSetting {
    /// The setting that does candle's work: its KV-cache dtype (`f32` for a CPU GGUF run,
    /// whose activations are f32) and its attention path (eager: flash attention off).
    pub fn matched(candle_kv: &str, candle_flash: bool) -> LlamaSetting {
        LlamaSetting {
            kv: Some(candle_kv.to_string()),
            fa: Some(if candle_flash { "on" } else { "off" }.to_string()),
        }
    }

    /// llama.cpp's defaults, as a user running it without flags gets them.
    pub fn defaults() -> LlamaSetting {
        LlamaSetting { kv: None, fa: None }
    }

    pub fn is_default(&self) -> bool {
        self.kv.is_none() && self.fa.is_none()
    }

    /// Flags of llama-timed-ids (the same spelling as llama-cli / llama-bench: -ctk, -ctv; --fa).
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(k) = &self.kv {
            v.extend(["-ctk".into(), k.clone(), "-ctv".into(), k.clone()]);
        }
        if let Some(f) = &self.fa {
            v.extend(["--fa".into(), f.clone()]);
        }
        v
    }

    /// The part of the record id that tells the settings apart: `kv-f32-fa-off`, `defaults`.
    pub fn id(&self) -> String {
        if self.is_default() {
            return "defaults".into();
        }
        format!(
            "kv-{}-fa-{}",
            self.kv.as_deref().unwrap_or("default"),
            self.fa.as_deref().unwrap_or("default")
        )
    }
}

/// llama-timed-ids's output (the fields modelbench reads; the whole object is kept).
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaOut {
    pub model: String,
    pub model_desc: String,
    pub model_size_bytes: u64,
    pub model_n_params: u64,
    pub load_s: f64,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub warmup: usize,
    pub n_threads: usize,
    pub n_threads_batch: usize,
    pub n_ctx: usize,
    pub n_batch: usize,
    pub n_ubatch: usize,
    pub type_k: String,
    pub type_v: String,
    pub flash_attn_requested: String,
    pub flash_attn_resolved: String,
    pub timed_wall_s: f64,
    pub thread_cpu_s: Vec<f64>,
    pub token_times_s: Vec<f64>,
    pub generated_ids: Vec<u32>,
    #[serde(default)]
    pub system_info: String,
}

/// Parses llama-timed-ids's stdout: one JSON object with exactly `new_tokens` increasing token
/// times and ids.
pub fn parse_llama_timed(text: &str, what: &str) -> Result<(LlamaOut, Value)> {
    let bad = |e: String| Error::Report(format!("{what}: not llama-timed-ids output: {e}"));
    let v = json_line(text, &bad)?;
    let out: LlamaOut = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
    if !token_times_ok(&out.token_times_s, out.generated_ids.len(), out.new_tokens) {
        return Err(bad(format!(
            "expected {} increasing token times and ids",
            out.new_tokens
        )));
    }
    Ok((out, v))
}

/// One repetition of llama.cpp: its output and what its process used.
#[derive(Debug, Clone)]
pub struct LlamaRun {
    pub out: LlamaOut,
    pub raw: Value,
    pub process: ProcessUse,
}

impl LlamaRun {
    /// The generation as the engine's own trace type, so metrics come from the same code as
    /// candle's.
    pub fn trace(&self) -> Trace {
        let o = &self.out;
        peer_trace(o.prompt_tokens, &o.generated_ids, &o.token_times_s)
    }

    /// Threads busy in the timed generation, from llama-timed-ids's per-thread CPU time.
    pub fn thread_use(&self) -> Option<ThreadUse> {
        ThreadUse::from_cpu_seconds(&self.out.thread_cpu_s, self.out.timed_wall_s)
    }
}

/// The arguments of one llama-timed-ids repetition.
pub fn llama_timed_args(
    gguf: &Path,
    ids_file: &Path,
    new_tokens: usize,
    threads: usize,
    setting: &LlamaSetting,
    warmup: usize,
) -> Vec<String> {
    let mut v = vec![
        "-m".to_string(),
        gguf.display().to_string(),
        "--ids".into(),
        ids_file.display().to_string(),
        "-n".into(),
        new_tokens.to_string(),
        "-t".into(),
        threads.to_string(),
        "--warmup".into(),
        warmup.to_string(),
    ];
    v.extend(setting.args());
    v
}

/// Runs one repetition: writes the prompt ids to `ids_file`, runs llama-timed-ids once
/// (its own warm-up generations, then one timed), measured from outside with wait4.
#[allow(clippy::too_many_arguments)]
pub fn run_llama_timed(
    bin: &Path,
    gguf: &Path,
    ids: &[u32],
    ids_file: &Path,
    new_tokens: usize,
    threads: usize,
    setting: &LlamaSetting,
    warmup: usize,
) -> Result<LlamaRun> {
    let text: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    crate::util::fsio::atomic_write(ids_file, text.join(" ").as_bytes())?;
    let args = llama_timed_args(gguf, ids_file, new_tokens, threads, setting, warmup);
    let (stdout, process) = run_measured(
        Command::new(bin).args(&args),
        bin,
        &setting.args().join(" "),
    )?;
    let (out, raw) = parse_llama_timed(&stdout, &bin.display().to_string())?;
    if out.prompt_tokens != ids.len() || out.new_tokens != new_tokens {
        return Err(Error::Report(format!(
            "{}: ran {} prompt + {} new tokens, asked for {} + {new_tokens}",
            bin.display(),
            out.prompt_tokens,
            out.new_tokens,
            ids.len()
        )));
    }
    Ok(LlamaRun { out, raw, process })
}

/// The build-info.json of scripts/build-llama-cpp.sh beside a peer binary (`<dir>/bin/x` ->
/// `<dir>/build-info.json`), when there.
pub fn build_info_of(bin: &Path) -> Option<Value> {
    let dir = bin.parent()?.parent()?;
    let text = std::fs::read_to_string(dir.join("build-info.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// llama.cpp's peer record of one scenario without alternation (the generation bench's
/// optional peer row, MODELBENCH_PEERS): `reps` repetitions in the matched setting, prompt ids
/// from candle's generator (`prompt_ids(P, vocab, seed, trial)`, trials 0..reps), one process
/// each. Its ratios are ratios of medians, without an interval (`extra.interleaved` false).
#[allow(clippy::too_many_arguments)]
pub fn llama_peer_record(
    bin: &Path,
    gguf: &Path,
    s: &Scenario,
    candle: &Record,
    seed: u64,
    threads: usize,
    reps: usize,
    ids_file: &Path,
) -> Result<Record> {
    let setting = LlamaSetting::matched("f32", false);
    let runs = (0..reps)
        .map(|k| {
            let ids = crate::engine::generate::prompt_ids(
                s.prompt_tokens,
                candle.model.vocab,
                seed,
                k as u64,
            );
            run_llama_timed(
                bin,
                gguf,
                &ids,
                ids_file,
                s.new_tokens,
                threads,
                &setting,
                1,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut r = llama_record(
        s,
        &runs,
        &setting,
        build_info_of(bin).as_ref(),
        &candle.model,
    )?;
    check_threads(
        Peer::LlamaCpp,
        threads,
        r.engine.as_ref().and_then(|e| e.threads),
        false,
    )?;
    stamp_like(&mut r, candle);
    r.extra["interleaved"] = json!(false);
    Ok(r)
}

/// The order in which engines run in repetition `rep`: forward in even repetitions, backward
/// in odd ones (A B, B A, A B, ...: with two engines the ABBA order of measure::paired), so
/// no engine is always first after the previous one warmed the caches.
pub fn interleave_order(rep: usize, engines: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..engines).collect();
    if rep % 2 == 1 {
        v.reverse();
    }
    v
}

/// A record of llama.cpp's repetitions of one scenario in one setting, run in alternation with
/// candle's trials. Everything in it is llama.cpp's own: metrics from its token times (by
/// candle's definitions, [`gen_metrics`]), its load time (llama_model_load_from_file, median
/// of the repetitions), its process's peak RSS (wait4), its model file and type, its version,
/// flags, KV type and flash-attention setting, its thread count as it reports it and the
/// threads measured busy. `model_meta`: the structure of the same GGUF as candle read it
/// (layers, hidden, vocab; llama-timed-ids does not print them).
pub fn llama_record(
    s: &Scenario,
    runs: &[LlamaRun],
    setting: &LlamaSetting,
    build_info: Option<&Value>,
    model_meta: &ModelInfo,
) -> Result<Record> {
    let first = runs
        .first()
        .ok_or_else(|| Error::Report("llama.cpp: no repetition ran".into()))?;
    let o = &first.out;
    let traces: Vec<Trace> = runs.iter().map(LlamaRun::trace).collect();
    let e2e: Vec<f64> = traces.iter().map(|t| t.e2e().as_secs_f64()).collect();
    let mut r = Record::from_samples(Kind::Peer, &s.name, e2e, s.new_tokens as u64);
    r.harness = Harness::Cli;
    r.gen = Some(gen_metrics(&traces));
    let version = match build_info {
        Some(b) => format!(
            "llama.cpp {} (llama-cpp-python {} sdist)",
            b["llama_cpp_commit"]
                .as_str()
                .map(|c| &c[..c.len().min(12)])
                .unwrap_or("commit not available"),
            b["llama_cpp_python_version"]
                .as_str()
                .unwrap_or("version not available")
        ),
        None => "llama.cpp (version not available: no build-info.json beside the binary)".into(),
    };
    let cmake = build_info
        .and_then(|b| b["cmake_flags"].as_array())
        .map(|f| {
            f.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "not available (no build-info.json beside the binary)".into());
    let kv = kv_label(o);
    let fa = fa_label(o);
    r.engine = Some(Engine {
        name: Peer::LlamaCpp.name().into(),
        version,
        flags: format!(
            "llama-timed-ids {}; KV {kv}; flash attention {fa}; n_batch = n_ubatch = {} (one prompt pass), n_ctx {}; cmake {cmake}",
            if setting.is_default() {
                "with llama.cpp's defaults".to_string()
            } else {
                setting.args().join(" ")
            },
            o.n_batch,
            o.n_ctx
        ),
        threads: Some(o.n_threads),
    });
    let loads: Vec<f64> = runs.iter().map(|r| r.out.load_s).collect();
    let rss = runs.iter().map(|r| r.process.max_rss_bytes).max();
    let thread_use = ThreadUse::median(
        &runs
            .iter()
            .filter_map(LlamaRun::thread_use)
            .collect::<Vec<_>>(),
    );
    r.model = ModelInfo {
        label: model_meta.label.clone(),
        source: o.model.clone(),
        family: o.model_desc.clone(),
        params: o.model_n_params,
        weight_bytes: o.model_size_bytes,
        layers: model_meta.layers,
        hidden: model_meta.hidden,
        vocab: model_meta.vocab,
        max_context: model_meta.max_context,
        built_context: o.n_ctx,
        prefill_mode: format!("one batch of {} (n_ubatch {})", o.n_batch, o.n_ubatch),
        tokenizer: "none (given token ids)".into(),
        load_seconds: median(&loads),
        load_heap_peak_bytes: None,
        load_rss_peak_bytes: None,
        load_rss_rise_bytes: None,
        load_rss_weights_rise_bytes: None,
        load_fill_gbs: None,
        provenance: Provenance {
            exact_context: None,
            implementation: format!("llama.cpp libllama, ggml CPU backend ({})", o.model_desc),
            attention: if o.flash_attn_resolved == "enabled" {
                "flash".into()
            } else if o.flash_attn_resolved == "disabled" {
                "eager".into()
            } else {
                format!("flash attention {}", o.flash_attn_resolved)
            },
            gguf: None,
        },
    };
    r.memory.host_peak_bytes = rss;
    r.memory.host_method = "peak RSS of the llama-timed-ids process (wait4 ru_maxrss; model load, warm-up and the timed generation together), the highest of the repetitions".into();
    r.memory.gpu_method = "not available (CPU build)".into();
    r.dtype = Precision::Gguf(gguf_type_of(&o.model_desc));
    r.prompt_tokens = s.prompt_tokens;
    r.new_tokens = s.new_tokens;
    r.sampling = Some(s.sampling);
    r.sampling_desc = s.sampling.describe();
    r.eos_ignored = true;
    r.extra = json!({
        "method": "llama-timed-ids (scripts/llama-timed-ids.cpp): one process per repetition, alternating with candle's trials; each runs its warm-up generation(s), then one timed greedy generation from the same prompt ids as candle's trial of that repetition: one prompt pass (token 1), then G-1 single-token steps; TTFT, TPOT, prefill and decode rates by candle's definitions",
        "setting": setting.id(),
        "setting_label": setting_label(setting, o),
        "kv_type": kv,
        "flash_attn": fa,
        "trial_rates": trial_rates(&traces),
        "threads_reported": o.n_threads,
        "threads_batch_reported": o.n_threads_batch,
        "thread_use": thread_use,
        "load_s": loads,
        "process": runs.iter().map(|r| r.process).collect::<Vec<_>>(),
        "system_info": o.system_info,
        "runs": runs.iter().map(|r| {
            let mut v = r.raw.clone();
            if let Some(m) = v.as_object_mut() { m.remove("system_info"); }
            v
        }).collect::<Vec<_>>(),
    });
    Ok(r)
}

/// `f32`, or `k f16 / v f32` when they differ.
fn kv_label(o: &LlamaOut) -> String {
    if o.type_k == o.type_v {
        o.type_k.clone()
    } else {
        format!("k {} / v {}", o.type_k, o.type_v)
    }
}

/// `off`, `on`, or `auto -> enabled` for llama.cpp's default.
fn fa_label(o: &LlamaOut) -> String {
    match o.flash_attn_requested.as_str() {
        "on" | "off" => o.flash_attn_requested.clone(),
        req => format!("{req} -> {}", o.flash_attn_resolved),
    }
}

/// The engine column's label: `llama.cpp (KV f32, FA off)`, `llama.cpp defaults (KV f16, FA auto -> enabled)`.
pub fn setting_label(setting: &LlamaSetting, o: &LlamaOut) -> String {
    let fa = match o.flash_attn_requested.as_str() {
        "on" | "off" => o.flash_attn_requested.clone(),
        _ => format!("auto -> {}", o.flash_attn_resolved),
    };
    format!(
        "llama.cpp{} (KV {}, FA {fa})",
        if setting.is_default() {
            " defaults"
        } else {
            ""
        },
        kv_label(o)
    )
}

/// The file type from llama.cpp's model description (`gemma3 270M Q4_K - Medium` ->
/// `q4_k_m`; one it does not know: its words, lower case, joined by `_`).
pub fn gguf_type_of(desc: &str) -> String {
    let known = [
        ("Q4_K - Medium", "q4_k_m"),
        ("Q4_K - Small", "q4_k_s"),
        ("Q5_K - Medium", "q5_k_m"),
        ("Q5_K - Small", "q5_k_s"),
        ("Q3_K - Medium", "q3_k_m"),
        ("Q3_K - Small", "q3_k_s"),
        ("Q3_K - Large", "q3_k_l"),
        ("Q6_K", "q6_k"),
        ("Q8_0", "q8_0"),
        ("Q4_0", "q4_0"),
        ("Q5_0", "q5_0"),
        ("F16", "f16"),
        ("BF16", "bf16"),
        ("all F32", "f32"),
    ];
    for (k, v) in known {
        if desc.ends_with(k) {
            return v.into();
        }
    }
    desc.split_whitespace()
        .skip(2)
        .filter(|w| *w != "-")
        .collect::<Vec<_>>()
        .join("_")
        .to_lowercase()
}

// ---------------------------------------------------------------- PyTorch (peer_torch.py)

/// How the PyTorch peer is run: the attention implementation transformers builds the model
/// with (None: transformers' own default, `sdpa` on CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchSetting {
    pub attn: Option<String>,
}

impl TorchSetting {
    /// The setting that does candle's work: candle's attention path (`eager`: the softmax of
    /// QK^T times V in plain ops; `flash` has no CPU counterpart in transformers and is passed
    /// as `flash_attention_2`, which transformers refuses without the package).
    pub fn matched(candle_attention: &str) -> TorchSetting {
        let attn = match candle_attention {
            "eager" => "eager",
            "flash" => "flash_attention_2",
            other => other,
        };
        TorchSetting {
            attn: Some(attn.to_string()),
        }
    }

    /// transformers' defaults, as a user calling from_pretrained without arguments gets them.
    pub fn defaults() -> TorchSetting {
        TorchSetting { attn: None }
    }

    pub fn is_default(&self) -> bool {
        self.attn.is_none()
    }

    /// The part of the record id that tells the settings apart: `attn-eager`, `defaults`.
    pub fn id(&self) -> String {
        match &self.attn {
            Some(a) => format!("attn-{a}"),
            None => "defaults".into(),
        }
    }
}

/// peer_torch.py's first line, once the model is loaded (the fields modelbench reads; the whole
/// object is kept).
#[derive(Debug, Clone, Deserialize)]
pub struct TorchHello {
    pub torch_version: String,
    pub transformers_version: String,
    pub device: String,
    pub dtype: String,
    /// torch.get_num_threads() after torch.set_num_threads.
    pub threads: usize,
    pub interop_threads: usize,
    pub model_dir: String,
    pub model_class: String,
    pub attn_implementation: Option<String>,
    pub load_s: f64,
}

/// One timed generation of peer_torch.py (one reply line).
#[derive(Debug, Clone, Deserialize)]
pub struct TorchTrial {
    pub prompt_tokens: usize,
    pub token_times_s: Vec<f64>,
    pub generated_ids: Vec<u32>,
    /// The KV-cache class generate() used (None: no cache).
    #[serde(default)]
    pub cache: Option<String>,
}

/// The last JSON object line of `text`, parsed; `bad` makes the error.
fn json_line(text: &str, bad: &dyn Fn(String) -> Error) -> Result<Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| bad("no JSON object".into()))?;
    serde_json::from_str(line).map_err(|e| bad(e.to_string()))
}

/// Exactly `n` > 0 positive, non-decreasing token times and `n` ids.
fn token_times_ok(times: &[f64], ids: usize, n: usize) -> bool {
    times.len() == n
        && ids == n
        && n > 0
        && times.first().is_some_and(|&x| x > 0.0)
        && times.windows(2).all(|w| w[1] >= w[0])
}

/// Parses peer_torch.py's first line (`what`: the script, for the error).
pub fn parse_torch_hello(text: &str, what: &str) -> Result<(TorchHello, Value)> {
    let bad = |e: String| Error::Report(format!("{what}: not peer_torch.py's first line: {e}"));
    let v = json_line(text, &bad)?;
    let h: TorchHello = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
    Ok((h, v))
}

/// Parses one reply of peer_torch.py: `new_tokens` increasing token times and ids from a
/// prompt of `prompt_tokens` ids.
pub fn parse_torch_trial(
    text: &str,
    prompt_tokens: usize,
    new_tokens: usize,
    what: &str,
) -> Result<TorchTrial> {
    let bad = |e: String| Error::Report(format!("{what}: not a peer_torch.py reply: {e}"));
    let v = json_line(text, &bad)?;
    let t: TorchTrial = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
    if !token_times_ok(&t.token_times_s, t.generated_ids.len(), new_tokens)
        || t.prompt_tokens != prompt_tokens
    {
        return Err(bad(format!(
            "expected {new_tokens} increasing token times and ids from {prompt_tokens} prompt ids, got {} and {} from {}",
            t.token_times_s.len(),
            t.generated_ids.len(),
            t.prompt_tokens
        )));
    }
    Ok(t)
}

/// A generation as the engine's own trace type, so a peer's metrics come from the same code
/// as candle's ([`gen_metrics`]).
fn peer_trace(prompt_tokens: usize, ids: &[u32], times_s: &[f64]) -> Trace {
    Trace {
        prompt_tokens,
        tokens: ids.to_vec(),
        token_times: times_s
            .iter()
            .map(|&s| std::time::Duration::from_secs_f64(s))
            .collect(),
        tokenize: std::time::Duration::ZERO,
        text: None,
        // A peer's logits never reach us.
        non_finite_steps: None,
    }
}

/// One timed repetition of the PyTorch peer, with the threads measured busy in its process
/// over the request (None: /proc not readable, or too short to account).
#[derive(Debug, Clone)]
pub struct TorchRun {
    pub trial: TorchTrial,
    pub thread_use: Option<ThreadUse>,
}

impl TorchRun {
    pub fn trace(&self) -> Trace {
        let t = &self.trial;
        peer_trace(t.prompt_tokens, &t.generated_ids, &t.token_times_s)
    }
}

/// peer_torch.py running as a worker: loaded once, one generation per request. Its process is
/// modelbench's child, so its threads' CPU time is read from /proc/<pid>/task (as llama.cpp's
/// are, from inside its process) and its peak RSS from wait4 when it ends ([`Self::finish`]).
pub struct TorchWorker {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: std::time::Instant,
    program: PathBuf,
    what: String,
    pub setting: TorchSetting,
    pub hello: TorchHello,
    pub raw_hello: Value,
}

/// peer_torch.py in the repository.
pub fn torch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peer_torch.py")
}

impl TorchWorker {
    /// Starts `python scripts/peer_torch.py --serve SPEC` (the spec written to `spec_path`:
    /// model_dir, threads, dtype, device and the setting's attention) and waits until the
    /// model is loaded. A worker that fails to start or load is one error with the last line of
    /// its stderr.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        python: &Path,
        model_dir: &Path,
        threads: usize,
        dtype: &str,
        device: &str,
        setting: &TorchSetting,
        spec_path: &Path,
    ) -> Result<TorchWorker> {
        use std::process::Stdio;
        let spec = json!({
            "model_dir": model_dir,
            "threads": threads,
            "dtype": dtype,
            "device": device,
            "attn_implementation": setting.attn,
        });
        crate::util::fsio::atomic_write(spec_path, spec.to_string().as_bytes())?;
        let script = torch_script();
        let started = std::time::Instant::now();
        let mut child = Command::new(python)
            .arg(&script)
            .arg("--serve")
            .arg(spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(python))?;
        let stderr = crate::measure::process::read_in_background(
            child.stderr.take().expect("stderr is piped"),
        );
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let what = format!("{} --serve ({})", script.display(), setting.id());
        let mut w = TorchWorker {
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
            started,
            program: python.to_path_buf(),
            what,
            setting: setting.clone(),
            hello: TorchHello {
                torch_version: String::new(),
                transformers_version: String::new(),
                device: String::new(),
                dtype: String::new(),
                threads: 0,
                interop_threads: 0,
                model_dir: String::new(),
                model_class: String::new(),
                attn_implementation: None,
                load_s: f64::NAN,
            },
            raw_hello: Value::Null,
        };
        let line = w.read_line()?;
        let (hello, raw) = parse_torch_hello(&line, &w.what)?;
        w.hello = hello;
        w.raw_hello = raw;
        Ok(w)
    }

    /// The next line of the worker's stdout; at its end, the worker's own error.
    fn read_line(&mut self) -> Result<String> {
        use std::io::BufRead;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(Error::io(&self.program))?;
        if n == 0 {
            drop(self.stdin.take());
            let stderr = self.stderr.take();
            let ended = crate::measure::process::wait_measured(
                &mut self.child,
                self.started,
                move || stderr.and_then(|h| h.join().ok()).unwrap_or_default(),
                &self.program,
                &self.what,
            );
            return Err(match ended {
                Err(e) => e,
                Ok(_) => Error::Report(format!(
                    "{} {}: ended without answering",
                    self.program.display(),
                    self.what
                )),
            });
        }
        Ok(line)
    }

    /// Runs one generation of `new_tokens` from `ids`; returns its token times and the threads
    /// measured busy in the worker's process over the request.
    pub fn generate(
        &mut self,
        ids: &[u32],
        new_tokens: usize,
        sampling: &crate::engine::sampling::SamplingParams,
        seed: u64,
    ) -> Result<TorchRun> {
        use std::io::Write;
        let req = json!({
            "ids": ids,
            "new_tokens": new_tokens,
            "sampling": {"temperature": sampling.temperature, "top_k": sampling.top_k,
                "top_p": sampling.top_p, "repetition_penalty": sampling.repetition_penalty},
            "seed": seed,
        });
        let pid = self.child.id().to_string();
        let before = crate::measure::threads::Ticks::read(&pid);
        let t0 = std::time::Instant::now();
        // A failed write (a broken pipe) means the worker is gone: read_line then says why.
        if let Some(i) = self.stdin.as_mut() {
            let _ = writeln!(i, "{req}").and_then(|_| i.flush());
        }
        let line = self.read_line()?;
        let wall = t0.elapsed().as_secs_f64();
        let thread_use = before
            .zip(crate::measure::threads::Ticks::read(&pid))
            .and_then(|(b, a)| ThreadUse::from_cpu_seconds(&b.seconds_until(&a), wall));
        let trial = parse_torch_trial(&line, ids.len(), new_tokens, &self.what)?;
        Ok(TorchRun { trial, thread_use })
    }

    /// Ends the worker (end of input) and returns what its process used over its life: load,
    /// warm-ups and every trial (wait4).
    pub fn finish(mut self) -> Result<ProcessUse> {
        drop(self.stdin.take());
        let stderr = self.stderr.take();
        crate::measure::process::wait_measured(
            &mut self.child,
            self.started,
            move || stderr.and_then(|h| h.join().ok()).unwrap_or_default(),
            &self.program,
            &self.what,
        )
    }
}

impl Drop for TorchWorker {
    fn drop(&mut self) {
        // A worker dropped on an error path: end it rather than leave it waiting on stdin.
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The engine column's label: `torch (f32, attention eager)`, `torch defaults (f32, attention sdpa)`.
pub fn torch_setting_label(setting: &TorchSetting, h: &TorchHello) -> String {
    format!(
        "torch{} ({}, attention {})",
        if setting.is_default() {
            " defaults"
        } else {
            ""
        },
        h.dtype,
        h.attn_implementation.as_deref().unwrap_or("not reported")
    )
}

/// A record of the PyTorch peer's repetitions of one scenario in one setting, run in
/// alternation with candle's trials. Everything in it is the peer's own: metrics from its token
/// times (by candle's definitions, [`gen_metrics`]), its load time (from_pretrained + to(device)
/// in the worker), its process's peak RSS (wait4 when the worker ended: `process`, None when
/// not measured), its versions, dtype, attention implementation and KV cache, its thread count
/// as torch reports it and the threads measured busy. `model_meta`: candle's description of
/// the same weights (layers, hidden, vocab), which the peer loads from the same files.
pub fn torch_record(
    s: &Scenario,
    runs: &[TorchRun],
    worker: (&TorchSetting, &TorchHello, &Value),
    process: Option<ProcessUse>,
    model_meta: &ModelInfo,
) -> Result<Record> {
    let (setting, h, raw) = worker;
    if runs.is_empty() {
        return Err(Error::Report("torch: no repetition ran".into()));
    }
    let traces: Vec<Trace> = runs.iter().map(TorchRun::trace).collect();
    let e2e: Vec<f64> = traces.iter().map(|t| t.e2e().as_secs_f64()).collect();
    let mut r = Record::from_samples(Kind::Peer, &s.name, e2e, s.new_tokens as u64);
    r.harness = Harness::Cli;
    r.gen = Some(gen_metrics(&traces));
    let attn = h
        .attn_implementation
        .clone()
        .unwrap_or_else(|| "not reported".into());
    let cache = runs[0]
        .trial
        .cache
        .clone()
        .map(|c| format!("KV cache on ({c})"))
        .unwrap_or_else(|| "KV cache not reported".into());
    r.engine = Some(Engine {
        name: Peer::Torch.name().into(),
        version: format!(
            "torch {} / transformers {}",
            h.torch_version, h.transformers_version
        ),
        flags: format!(
            "peer_torch.py worker ({}); generate() on {}, dtype {}, attention {attn}; {cache}; min_new_tokens = max_new_tokens; set_num_threads = set_num_interop_threads = {}",
            if setting.is_default() {
                "transformers' default attention".to_string()
            } else {
                format!("attn_implementation={}", setting.attn.as_deref().unwrap_or(""))
            },
            h.device,
            h.dtype,
            h.threads
        ),
        threads: Some(h.threads),
    });
    let thread_use =
        ThreadUse::median(&runs.iter().filter_map(|r| r.thread_use).collect::<Vec<_>>());
    r.model = ModelInfo {
        source: h.model_dir.clone(),
        tokenizer: "none (given token ids)".into(),
        load_seconds: h.load_s,
        load_heap_peak_bytes: None,
        load_rss_peak_bytes: None,
        load_rss_rise_bytes: None,
        load_rss_weights_rise_bytes: None,
        load_fill_gbs: None,
        provenance: Provenance {
            exact_context: None,
            implementation: format!(
                "transformers {} ({})",
                h.transformers_version, h.model_class
            ),
            attention: attn,
            gguf: None,
        },
        prefill_mode: "one forward of the prompt (generate())".into(),
        ..model_meta.clone()
    };
    match process {
        Some(p) => {
            r.memory.host_peak_bytes = Some(p.max_rss_bytes);
            r.memory.host_method = "peak RSS of the peer_torch.py worker process (wait4 ru_maxrss over its life: load, warm-ups and the trials of every scenario)".into();
        }
        None => {
            r.memory.host_peak_bytes = None;
            r.memory.host_method = "not available (the worker's process was not measured)".into();
        }
    }
    r.memory.gpu_method = "not available (CPU run)".into();
    r.dtype = Precision::parse(&h.dtype).unwrap_or(Precision::Unreported);
    r.prompt_tokens = s.prompt_tokens;
    r.new_tokens = s.new_tokens;
    r.sampling = Some(s.sampling);
    r.sampling_desc = s.sampling.describe();
    r.eos_ignored = true;
    r.extra = json!({
        "method": "scripts/peer_torch.py as a worker: loaded once, then one generate() per request, alternating with candle's trials repetition by repetition, from the same prompt ids as candle's trial of that repetition, crediting the same G generated tokens (min_new_tokens = max_new_tokens); a streamer timestamps each token once it is on the host; TTFT = first token, E2E = last, as candle's engine",
        "setting": setting.id(),
        "setting_label": torch_setting_label(setting, h),
        "attn_implementation": h.attn_implementation,
        "kv_cache": runs[0].trial.cache,
        "trial_rates": trial_rates(&traces),
        "threads_reported": h.threads,
        "interop_threads_reported": h.interop_threads,
        "thread_use": thread_use,
        "load_s": h.load_s,
        "process": process,
        "hello": raw,
        "runs": runs.iter().map(|r| json!({
            "prompt_tokens": r.trial.prompt_tokens,
            "token_times_s": r.trial.token_times_s,
            "generated_ids": r.trial.generated_ids,
            "thread_use": r.thread_use,
        })).collect::<Vec<_>>(),
    });
    Ok(r)
}

/// Sets the fields a peer record shares with candle's record of the same scenario: device,
/// seed, shape and the benchmark id (`<scenario>/<device>-<dtype>/<model>@<engine>[:setting]`).
/// The model and dtype stay the peer's own where its record set them (llama.cpp's do); a record
/// that did not (PyTorch's, which loads the same weights) takes candle's.
pub fn stamp_like(r: &mut Record, candle: &Record) {
    if r.model.label.is_empty() {
        r.model = candle.model.clone();
    }
    if r.dtype == Precision::default() {
        r.dtype = candle.dtype.clone();
    }
    r.device = candle.device.clone();
    r.seed = candle.seed;
    let engine = r
        .engine
        .as_ref()
        .map(|e| e.name.clone())
        .unwrap_or_default();
    let engine = match r.extra.get("setting").and_then(|v| v.as_str()) {
        Some(set) => format!("{engine}:{set}"),
        None => engine,
    };
    r.shape =
        json!({"prompt_tokens": r.prompt_tokens, "new_tokens": r.new_tokens, "engine": engine});
    r.id = format!(
        "{}/{}-{}/{}@{engine}",
        r.scenario, r.device, r.dtype, r.model.label
    );
}

/// MODELBENCH_PEERS: a llama.cpp peer record beside each GGUF model's generation records,
/// and the peers table printed. Without llama.cpp, or with candle's two thread pools apart, a
/// one-line skip: the run itself never depends on it.
pub fn llama_peer_rows(
    models: &[(String, crate::models::source::ModelRef)],
    scenarios: &[Scenario],
    seed: u64,
    run: &mut crate::output::report::RunDir,
    say: &dyn Fn(&str),
) -> Result<()> {
    use crate::engine::scenario::prepare;
    let bin = Peer::LlamaCpp.default_program();
    if let Some(why) = missing_program(Peer::LlamaCpp, &bin) {
        say(&skip_line(Peer::LlamaCpp, &why));
        return Ok(());
    }
    let threads = match crate::measure::threads::CandlePools::current().agreed() {
        Ok(n) => n,
        Err(e) => {
            say(&skip_line(Peer::LlamaCpp, &e.to_string()));
            return Ok(());
        }
    };
    let ids_file =
        std::env::temp_dir().join(format!("modelbench-peer-ids-{}.txt", std::process::id()));
    let mut added = 0;
    for (label, r) in models {
        let res = prepare(label, r, &[])?;
        let crate::models::Weights::Gguf(gguf) = &res.weights else {
            say(&skip_line(
                Peer::LlamaCpp,
                &format!("{label}: llama.cpp needs a GGUF model"),
            ));
            continue;
        };
        for s in scenarios {
            if let Some(why) = scenario_skip(Peer::LlamaCpp, s) {
                say(&skip_line(Peer::LlamaCpp, &why));
                continue;
            }
            let Some(candle) = run
                .records()
                .iter()
                .find(|x| {
                    x.kind == Kind::Generation && x.scenario == s.name && x.model.label == res.label
                })
                .cloned()
            else {
                continue;
            };
            let rec = llama_peer_record(&bin, gguf, s, &candle, seed, threads, 5, &ids_file);
            let _ = std::fs::remove_file(&ids_file);
            run.push(rec?)?;
            added += 1;
        }
    }
    if added > 0 {
        say(&format!(
            "\n{}",
            crate::output::peers::peers_table(run.records())
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_must_agree_unless_allowed() {
        assert!(check_threads(Peer::Torch, 2, Some(2), false)
            .unwrap()
            .is_none());
        let e = check_threads(Peer::Torch, 2, Some(4), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4 threads") && e.contains("candle with 2") && !e.contains('\n'),
            "{e}"
        );
        let w = check_threads(Peer::LlamaCpp, 2, Some(1), true)
            .unwrap()
            .unwrap();
        assert!(
            w.starts_with("warning: llama.cpp ran with 1 threads"),
            "{w}"
        );
        assert!(check_threads(Peer::LlamaCpp, 2, None, false).is_err());
    }

    #[test]
    fn llama_is_asked_for_candles_kv_and_attention_and_its_defaults() {
        let m = LlamaSetting::matched("f32", false);
        let a = llama_timed_args(Path::new("m.gguf"), Path::new("ids.txt"), 256, 2, &m, 1);
        assert_eq!(
            a.join(" "),
            "-m m.gguf --ids ids.txt -n 256 -t 2 --warmup 1 -ctk f32 -ctv f32 --fa off"
        );
        assert_eq!(m.id(), "kv-f32-fa-off");
        let d = LlamaSetting::defaults();
        assert!(d.args().is_empty() && d.is_default());
        assert_eq!(d.id(), "defaults");
        assert_eq!(
            LlamaSetting::matched("f16", true).args().join(" "),
            "-ctk f16 -ctv f16 --fa on"
        );
    }

    #[test]
    fn engines_alternate_by_repetition() {
        let order: Vec<Vec<usize>> = (0..4).map(|r| interleave_order(r, 3)).collect();
        assert_eq!(
            order,
            [vec![0, 1, 2], vec![2, 1, 0], vec![0, 1, 2], vec![2, 1, 0]]
        );
        // Two engines: A B B A A B B A, the ABBA sequence of measure::paired.
        let seq: Vec<usize> = (0..4).flat_map(|r| interleave_order(r, 2)).collect();
        assert_eq!(seq, [0, 1, 1, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn file_type_from_llamas_description() {
        assert_eq!(gguf_type_of("gemma3 270M Q4_K - Medium"), "q4_k_m");
        assert_eq!(gguf_type_of("llama 1B Q8_0"), "q8_0");
        assert_eq!(
            gguf_type_of("qwen3 0.6B IQ4_XS - 4.25 bpw"),
            "iq4_xs_4.25_bpw"
        );
    }

    #[test]
    fn pipeline_and_sampled_scenarios_are_skipped_where_not_comparable() {
        let pipe = Scenario::by_name("full-pipe").unwrap();
        assert!(scenario_skip(Peer::Torch, &pipe).is_some());
        let sampled = Scenario::by_name("sampled").unwrap();
        assert!(scenario_skip(Peer::LlamaCpp, &sampled).is_some());
        assert!(scenario_skip(Peer::Torch, &sampled).is_none());
        assert!(scenario_skip(Peer::LlamaCpp, &Scenario::by_name("short").unwrap()).is_none());
    }
}
