//! llama.cpp as a peer: its settings (KV type, flash attention, GPU layers), the
//! `llama-timed-ids` program's arguments and output, and the peer records built from them.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

use super::torch::{json_line, peer_trace, token_times_ok};
use super::{
    check_threads, missing_program, peer_model, scenario_skip, set_workload, skip_line, stamp_like,
    Peer,
};
use crate::engine::generate::Trace;
use crate::engine::scenario::Scenario;
use crate::error::{Error, Result};
use crate::measure::process::{run_measured, ProcessUse};
use crate::measure::stats::median;
use crate::measure::threads::ThreadUse;
use crate::output::record::{
    gen_metrics, trial_rates, Engine, Harness, Kind, ModelInfo, Precision, Record,
};

// ---------------------------------------------------------------- llama.cpp (llama-timed-ids)

/// How llama.cpp is run: the KV-cache type and the flash-attention setting (None: llama.cpp's
/// own default, f16 and `auto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaSetting {
    pub kv: Option<String>,
    pub fa: Option<String>,
    /// Layers offloaded to the GPU (`-ngl`; None: 0, all on the CPU). Set by [`Self::on_gpu`]
    /// when candle runs on CUDA: the peer is then llama.cpp's CUDA build with every layer on
    /// the GPU, whatever the setting.
    pub gpu_layers: Option<u32>,
}

impl LlamaSetting {
    /// The setting that does candle's work: its KV-cache dtype (`f32` for a CPU GGUF run,
    /// whose activations are f32) and its attention path (eager: flash attention off).
    pub fn matched(candle_kv: &str, candle_flash: bool) -> LlamaSetting {
        LlamaSetting {
            kv: Some(candle_kv.to_string()),
            fa: Some(if candle_flash { "on" } else { "off" }.to_string()),
            gpu_layers: None,
        }
    }

    /// The same setting with every layer on the GPU (`-ngl 99`, as llama.cpp's docs run a
    /// CUDA build).
    pub fn on_gpu(mut self) -> LlamaSetting {
        self.gpu_layers = Some(99);
        self
    }

    /// llama.cpp's defaults, as a user running it without flags gets them.
    pub fn defaults() -> LlamaSetting {
        LlamaSetting {
            kv: None,
            fa: None,
            gpu_layers: None,
        }
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
        if let Some(n) = self.gpu_layers {
            v.extend(["-ngl".into(), n.to_string()]);
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
    /// Layers on the GPU (`-ngl`; absent from a program built before issue 60: 0).
    #[serde(default)]
    pub n_gpu_layers: u32,
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
    let vocab = candle.model.vocab.ok_or_else(|| {
        crate::Error::Report(format!(
            "the candle record of `{}` names no vocabulary size, so llama.cpp cannot be given its prompt ids",
            candle.model.label
        ))
    })?;
    let runs = (0..reps)
        .map(|k| {
            let ids = crate::engine::generate::prompt_ids(s.prompt_tokens, vocab, seed, k as u64);
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
                match setting.gpu_layers {
                    Some(n) => format!("-ngl {n} (every layer on the GPU) with llama.cpp's defaults"),
                    None => "with llama.cpp's defaults".to_string(),
                }
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
    let attention = if o.flash_attn_resolved == "enabled" {
        "flash".into()
    } else if o.flash_attn_resolved == "disabled" {
        "eager".into()
    } else {
        format!("flash attention {}", o.flash_attn_resolved)
    };
    r.model = ModelInfo {
        source: o.model.clone(),
        family: o.model_desc.clone(),
        params: (o.model_n_params > 0).then_some(o.model_n_params),
        weight_bytes: (o.model_size_bytes > 0).then_some(o.model_size_bytes),
        built_context: (o.n_ctx > 0).then_some(o.n_ctx),
        prefill_mode: format!("one batch of {} (n_ubatch {})", o.n_batch, o.n_ubatch),
        ..peer_model(
            model_meta.clone(),
            median(&loads),
            format!("llama.cpp libllama, ggml CPU backend ({})", o.model_desc),
            attention,
        )
    };
    r.memory.host_peak_bytes = rss;
    r.memory.host_method = "peak RSS of the llama-timed-ids process (wait4 ru_maxrss; model load, warm-up and the timed generation together), the highest of the repetitions".into();
    r.memory.gpu_method = "not available (CPU build)".into();
    r.dtype = Precision::Gguf(gguf_type_of(&o.model_desc));
    set_workload(&mut r, s);
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
pub(super) fn kv_label(o: &LlamaOut) -> String {
    if o.type_k == o.type_v {
        o.type_k.clone()
    } else {
        format!("k {} / v {}", o.type_k, o.type_v)
    }
}

/// `off`, `on`, or `auto -> enabled` for llama.cpp's default.
pub(super) fn fa_label(o: &LlamaOut) -> String {
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

/// MODELBENCH_PEERS: a llama.cpp peer record beside each GGUF model's generation records,
/// and the peers table printed. Without llama.cpp, or with candle's two thread pools apart, a
/// one-line skip: the run itself never depends on it.
pub fn llama_peer_rows(
    models: &[(String, crate::models::sources::ModelRef)],
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
