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

pub mod suite;

use serde_json::json;

use crate::engine::scenario::Scenario;
use crate::error::{Error, Result};
use crate::models::Provenance;
use crate::output::record::{ModelInfo, Precision, Record};

mod llama;
pub use llama::{
    build_info_of, gguf_type_of, interleave_order, llama_peer_record, llama_peer_rows,
    llama_record, llama_timed_args, parse_llama_timed, run_llama_timed, setting_label, LlamaOut,
    LlamaRun, LlamaSetting,
};
mod torch;
pub use torch::{
    parse_torch_hello, parse_torch_trial, torch_record, torch_script, torch_setting_label,
    TorchHello, TorchRun, TorchSetting, TorchTrial, TorchWorker,
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
        let root = crate::util::root();
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

/// The model of a peer record: `base` (candle's record of the same model) with the peer's
/// load time and provenance (`implementation`, `attention`); a peer is given token ids (no
/// tokenizer) and its load is not measured in-process.
pub fn peer_model(
    base: ModelInfo,
    load_seconds: f64,
    implementation: String,
    attention: String,
) -> ModelInfo {
    ModelInfo {
        tokenizer: "none (given token ids)".into(),
        load_seconds: Some(load_seconds).filter(|s| s.is_finite() && *s > 0.0),
        load_heap_peak_bytes: None,
        load_rss_peak_bytes: None,
        load_rss_rise_bytes: None,
        load_rss_weights_rise_bytes: None,
        load_fill_gbs: None,
        provenance: Provenance {
            exact_context: None,
            implementation,
            attention,
            gguf: None,
        },
        ..base
    }
}

/// Sets what a peer record takes from its scenario `s`: the token counts and the sampling
/// (greedy, generating past EOS as candle's trials do).
pub fn set_workload(r: &mut Record, s: &Scenario) {
    r.prompt_tokens = Some(s.prompt_tokens);
    r.new_tokens = Some(s.new_tokens);
    r.sampling = Some(s.sampling);
    r.sampling_desc = s.sampling.describe();
    r.eos_ignored = true;
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
    fn on_a_gpu_every_setting_offloads_every_layer() {
        let m = LlamaSetting::matched("f32", false).on_gpu();
        let a = llama_timed_args(Path::new("m.gguf"), Path::new("ids.txt"), 64, 16, &m, 1);
        assert_eq!(
            a.join(" "),
            "-m m.gguf --ids ids.txt -n 64 -t 16 --warmup 1 -ctk f32 -ctv f32 --fa off -ngl 99"
        );
        // The record id is the setting's, the device is recorded apart.
        assert_eq!(m.id(), "kv-f32-fa-off");
        let d = LlamaSetting::defaults().on_gpu();
        assert!(d.is_default());
        assert_eq!(d.args().join(" "), "-ngl 99");
        assert_eq!(d.id(), "defaults");
        assert!(LlamaSetting::defaults().args().is_empty());
    }

    #[test]
    fn the_llama_peer_needs_the_build_of_candles_device() {
        use super::suite::{llama_backend, model_skip};
        let w = crate::models::Weights::Gguf("m.gguf".into());
        assert_eq!(model_skip(Peer::LlamaCpp, &w, "cpu", "cpu"), None);
        assert_eq!(model_skip(Peer::LlamaCpp, &w, "cuda", "cuda"), None);
        // A CUDA build runs on the CPU too (no layer offloaded).
        assert_eq!(model_skip(Peer::LlamaCpp, &w, "cpu", "cuda"), None);
        let why = model_skip(Peer::LlamaCpp, &w, "cuda", "cpu").unwrap();
        assert!(why.contains("--cuda"), "{why}");
        assert!(model_skip(Peer::LlamaCpp, &w, "metal", "cuda").is_some());
        // The backend is read from build-info.json beside bin/ (none: the CPU build).
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let prog = dir.path().join("bin/llama-timed-ids");
        assert_eq!(llama_backend(&prog), "cpu");
        std::fs::write(dir.path().join("build-info.json"), r#"{"backend": "cuda"}"#).unwrap();
        assert_eq!(llama_backend(&prog), "cuda");
        std::fs::write(dir.path().join("build-info.json"), r#"{"cmake_flags": []}"#).unwrap();
        assert_eq!(llama_backend(&prog), "cpu");
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
