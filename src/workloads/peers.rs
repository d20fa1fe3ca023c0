//! Peers (issue 15): the same scenario run by other engines, llama.cpp (`llama-bench`, for GGUF
//! models) and PyTorch + Hugging Face transformers (`scripts/peer_torch.py`, for safetensors
//! and synthetic models), at the same prompt and generation lengths and the same thread count
//! as candle's run, each turned into a record of kind `peer` whose `engine` names it.
//!
//! A peer is an external program that runs its own warm-ups and repetitions, so it is not a
//! [`super::Workload`] driven call by call by the trial loop: one call runs all of a scenario's
//! repetitions, and this module turns its raw output (kept whole in the record's `extra`) into
//! the same metrics the generation workload reports. Nothing here is invented: a metric the
//! peer does not measure stays null.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::generate::Trace;
use crate::engine::scenario::Scenario;
use crate::error::{Error, Result};
use crate::measure::stats::{median, percentiles};
use crate::output::record::{gen_metrics, Engine, GenMetrics, Harness, Kind, Record};

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

    /// Where the setup script puts the peer's program by default.
    pub fn default_program(self) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        match self {
            Peer::LlamaCpp => root.join("target/llama-cpp/0.3.36/bin/llama-bench"),
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
            "scenario {}: llama-bench does not sample (it times the model only), so a sampled scenario has no llama.cpp counterpart",
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

// ---------------------------------------------------------------- llama.cpp (llama-bench)

/// One test of `llama-bench -o json` (the fields modelbench reads; the whole object is kept).
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaBenchTest {
    pub build_commit: String,
    pub build_number: i64,
    #[serde(default)]
    pub cpu_info: String,
    #[serde(default)]
    pub backends: String,
    pub model_filename: String,
    #[serde(default)]
    pub model_type: String,
    pub n_threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    #[serde(default)]
    pub n_depth: usize,
    #[serde(default)]
    pub n_batch: Option<usize>,
    #[serde(default)]
    pub n_ubatch: Option<usize>,
    #[serde(default)]
    pub type_k: String,
    #[serde(default)]
    pub type_v: String,
    #[serde(default)]
    pub flash_attn: Value,
    /// Nanoseconds of every repetition.
    pub samples_ns: Vec<u64>,
}

/// Parses `llama-bench -o json` output: a JSON array of tests; each returned with its raw
/// object.
pub fn parse_llama_bench(text: &str, what: &str) -> Result<Vec<(LlamaBenchTest, Value)>> {
    let bad = |e: String| Error::Report(format!("{what}: not llama-bench JSON output: {e}"));
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| bad(e.to_string()))?;
    let arr = v
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of tests".into()))?;
    if arr.is_empty() {
        return Err(bad("no tests".into()));
    }
    arr.iter()
        .map(|t| {
            let parsed: LlamaBenchTest =
                serde_json::from_value(t.clone()).map_err(|e| bad(e.to_string()))?;
            if parsed.samples_ns.is_empty() || parsed.samples_ns.contains(&0) {
                return Err(bad("a test without positive samples_ns".into()));
            }
            Ok((parsed, t.clone()))
        })
        .collect()
}

/// The llama-bench invocations of a scenario (P prompt, G generated tokens): the first times
/// `pp P` (prompt processing) and `pg P,G` (prompt then G tokens: the end-to-end run), the
/// second `tg G` at depth P (G decode steps after a P-token cache, as candle's decode runs).
pub fn llama_bench_args(
    gguf: &Path,
    s: &Scenario,
    threads: usize,
    reps: usize,
) -> [Vec<String>; 2] {
    let common = |v: &mut Vec<String>| {
        v.extend([
            "-m".to_string(),
            gguf.display().to_string(),
            "-t".into(),
            threads.to_string(),
            "-r".into(),
            reps.to_string(),
            "-o".into(),
            "json".into(),
        ])
    };
    let p = s.prompt_tokens.to_string();
    let g = s.new_tokens.to_string();
    let mut a = vec![
        "-p".to_string(),
        p.clone(),
        "-n".into(),
        "0".into(),
        "-pg".into(),
        format!("{p},{g}"),
    ];
    common(&mut a);
    let mut b = vec!["-p".to_string(), "0".into(), "-n".into(), g, "-d".into(), p];
    common(&mut b);
    [a, b]
}

/// Runs llama-bench for a scenario; returns every test it reported.
pub fn run_llama_bench(
    bin: &Path,
    gguf: &Path,
    s: &Scenario,
    threads: usize,
    reps: usize,
) -> Result<Vec<(LlamaBenchTest, Value)>> {
    let mut all = Vec::new();
    for args in llama_bench_args(gguf, s, threads, reps) {
        let stdout = run_peer(Command::new(bin).args(&args), bin, &args.join(" "))?;
        all.extend(parse_llama_bench(&stdout, &bin.display().to_string())?);
    }
    Ok(all)
}

/// A record of llama-bench's tests of one scenario. Samples are the `pg P,G` repetitions (the
/// end-to-end run); prefill is `pp P`, decode `tg G` at depth P. TTFT is the `pp` time (the
/// prompt pass; llama-bench does not sample), TPOT the `tg` time / G. ITL is not measured
/// (llama-bench times whole tests). `build_info`: the build's build-info.json, when present.
pub fn llama_record(
    s: &Scenario,
    tests: &[(LlamaBenchTest, Value)],
    build_info: Option<&Value>,
) -> Result<Record> {
    let (p, g) = (s.prompt_tokens, s.new_tokens);
    let find = |np: usize, ng: usize, depth: usize| {
        tests
            .iter()
            .find(|(t, _)| t.n_prompt == np && t.n_gen == ng && t.n_depth == depth)
            .map(|(t, _)| t)
    };
    let e2e = find(p, g, 0).ok_or_else(|| {
        Error::Report(format!(
            "llama-bench output has no pg test of {p} prompt + {g} generated tokens"
        ))
    })?;
    let secs = |t: &LlamaBenchTest| -> Vec<f64> {
        t.samples_ns.iter().map(|&n| n as f64 * 1e-9).collect()
    };
    let pp = find(p, 0, 0);
    let tg = find(0, g, p);
    let mut r = Record::from_samples(Kind::Peer, &s.name, secs(e2e), g as u64);
    r.harness = Harness::Cli;
    let ms = |xs: Vec<f64>| xs.into_iter().map(|x| x * 1e3).collect::<Vec<_>>();
    r.gen = Some(GenMetrics {
        ttft_ms: pp.and_then(|t| percentiles(&ms(secs(t)))),
        tpot_ms: tg.and_then(|t| percentiles(&ms(secs(t).iter().map(|x| x / g as f64).collect()))),
        itl_ms: None,
        prefill_tok_s: pp
            .map(|t| median(&secs(t).iter().map(|x| p as f64 / x).collect::<Vec<_>>())),
        decode_tok_s: tg.map(|t| median(&secs(t).iter().map(|x| g as f64 / x).collect::<Vec<_>>())),
        tokenize_ms: None,
    });
    let version = match build_info {
        Some(b) => format!(
            "llama.cpp {} (build {}; llama-cpp-python {} sdist)",
            e2e.build_commit,
            e2e.build_number,
            b["llama_cpp_python_version"].as_str().unwrap_or("?")
        ),
        None => format!(
            "llama.cpp {} (build {})",
            e2e.build_commit, e2e.build_number
        ),
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
    r.engine = Some(Engine {
        name: Peer::LlamaCpp.name().into(),
        version,
        flags: format!(
            "backends {}; cmake {cmake}; n_batch {}, n_ubatch {}, KV {}/{}, flash_attn {}",
            e2e.backends,
            e2e.n_batch
                .map(|x| x.to_string())
                .unwrap_or_else(|| "?".into()),
            e2e.n_ubatch
                .map(|x| x.to_string())
                .unwrap_or_else(|| "?".into()),
            e2e.type_k,
            e2e.type_v,
            e2e.flash_attn
        ),
        threads: Some(e2e.n_threads),
    });
    r.prompt_tokens = p;
    r.new_tokens = g;
    r.sampling = Some(s.sampling);
    r.sampling_desc = s.sampling.describe();
    r.eos_ignored = true;
    r.extra = json!({
        "method": "llama-bench -o json: pg P,G repetitions are the samples (E2E); pp P gives TTFT and prefill tok/s, tg G at depth P gives TPOT and decode tok/s; llama-bench's prompt is random token ids and its pg decodes G tokens after the prompt pass (candle's G tokens include the one the prompt pass yields)",
        "warmup_convention": "llama-bench's own: one untimed run of each test before its repetitions",
        "model_type": e2e.model_type,
        "model_filename": e2e.model_filename,
        "cpu_info": e2e.cpu_info,
        "llama_bench": tests.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
    });
    Ok(r)
}

// ---------------------------------------------------------------- PyTorch (peer_torch.py)

/// One timed generation of scripts/peer_torch.py.
#[derive(Debug, Clone, Deserialize)]
pub struct TorchTrial {
    pub prompt_tokens: usize,
    pub token_times_s: Vec<f64>,
    pub generated_ids: Vec<u32>,
}

/// scripts/peer_torch.py's output (the fields modelbench reads; the whole object is kept).
#[derive(Debug, Clone, Deserialize)]
pub struct TorchOut {
    pub torch_version: String,
    pub transformers_version: String,
    pub device: String,
    pub dtype: String,
    pub threads: usize,
    pub new_tokens: usize,
    pub warmup: usize,
    #[serde(default)]
    pub warmup_convention: String,
    pub trials: Vec<TorchTrial>,
}

/// Parses peer_torch.py's stdout: one JSON object, each trial with exactly `new_tokens`
/// increasing token times.
pub fn parse_torch(text: &str, what: &str) -> Result<(TorchOut, Value)> {
    let bad = |e: String| Error::Report(format!("{what}: not peer_torch.py output: {e}"));
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| bad("no JSON object".into()))?;
    let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let out: TorchOut = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
    if out.trials.is_empty() {
        return Err(bad("no trials".into()));
    }
    for (i, t) in out.trials.iter().enumerate() {
        let ok = t.token_times_s.len() == out.new_tokens
            && t.generated_ids.len() == out.new_tokens
            && t.token_times_s.first().is_some_and(|&x| x > 0.0)
            && t.token_times_s.windows(2).all(|w| w[1] >= w[0]);
        if !ok {
            return Err(bad(format!(
                "trial {i}: expected {} increasing token times and ids",
                out.new_tokens
            )));
        }
    }
    Ok((out, v))
}

/// The traces of peer_torch.py's trials, in the engine's own type, so the metrics are
/// computed by the same code as candle's ([`gen_metrics`]).
pub fn torch_traces(out: &TorchOut) -> Vec<Trace> {
    out.trials
        .iter()
        .map(|t| Trace {
            prompt_tokens: t.prompt_tokens,
            tokens: t.generated_ids.clone(),
            token_times: t
                .token_times_s
                .iter()
                .map(|&s| std::time::Duration::from_secs_f64(s))
                .collect(),
            tokenize: std::time::Duration::ZERO,
            text: None,
        })
        .collect()
}

/// A record of peer_torch.py's trials of one scenario: E2E samples, TTFT / TPOT / ITL and
/// prefill / decode rates exactly as candle's generation records compute them.
pub fn torch_record(s: &Scenario, out: &TorchOut, raw: &Value) -> Record {
    let traces = torch_traces(out);
    let e2e: Vec<f64> = traces.iter().map(|t| t.e2e().as_secs_f64()).collect();
    let mut r = Record::from_samples(Kind::Peer, &s.name, e2e, s.new_tokens as u64);
    r.harness = Harness::Cli;
    r.gen = Some(gen_metrics(&traces));
    r.engine = Some(Engine {
        name: Peer::Torch.name().into(),
        version: format!(
            "torch {} / transformers {}",
            out.torch_version, out.transformers_version
        ),
        flags: format!(
            "generate() on {}, dtype {}, min_new_tokens = max_new_tokens, {}",
            out.device,
            out.dtype,
            raw["attn_implementation"]
                .as_str()
                .map(|a| format!("attention {a}"))
                .unwrap_or_else(|| "attention not reported".into())
        ),
        threads: Some(out.threads),
    });
    r.prompt_tokens = s.prompt_tokens;
    r.new_tokens = s.new_tokens;
    r.sampling = Some(s.sampling);
    r.sampling_desc = s.sampling.describe();
    r.eos_ignored = true;
    let mut raw = raw.clone();
    raw["method"] = json!("scripts/peer_torch.py: transformers generate() with a streamer that timestamps each token once it is on the host; TTFT = first token, E2E = last, as candle's engine");
    r.extra = raw;
    r
}

/// Runs peer_torch.py with `python` on a spec (written to `spec_path`); returns its output.
pub fn run_torch(python: &Path, spec: &Value, spec_path: &Path) -> Result<(TorchOut, Value)> {
    crate::util::fsio::atomic_write(spec_path, spec.to_string().as_bytes())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peer_torch.py");
    let stdout = run_peer(
        Command::new(python)
            .arg(&script)
            .arg("--spec")
            .arg(spec_path),
        python,
        &script.display().to_string(),
    )?;
    parse_torch(&stdout, &script.display().to_string())
}

/// Runs a peer program to completion and returns its stdout; a failure is one error naming
/// `program`, `what` it was given, its exit status and the last line of its stderr.
fn run_peer(cmd: &mut Command, program: &Path, what: &str) -> Result<String> {
    let out = cmd.output().map_err(Error::io(program))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Error::Report(format!(
            "{} {what} failed ({}): {last}",
            program.display(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sets the fields a peer record shares with candle's record of the same scenario: model,
/// device, dtype, seed, shape and the benchmark id (`<scenario>/<device>-<dtype>/<model>@<engine>`).
pub fn stamp_like(r: &mut Record, candle: &Record) {
    r.model = candle.model.clone();
    r.device = candle.device.clone();
    r.dtype = candle.dtype.clone();
    r.seed = candle.seed;
    let engine = r
        .engine
        .as_ref()
        .map(|e| e.name.clone())
        .unwrap_or_default();
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
    fn llama_bench_is_asked_for_the_scenario_lengths() {
        let s = Scenario::by_name("medium").unwrap();
        let [a, b] = llama_bench_args(Path::new("m.gguf"), &s, 2, 3);
        let j = a.join(" ");
        assert!(
            j.starts_with("-p 256 -n 0 -pg 256,256 -m m.gguf -t 2 -r 3 -o json"),
            "{j}"
        );
        assert_eq!(
            b.join(" "),
            "-p 0 -n 256 -d 256 -m m.gguf -t 2 -r 3 -o json"
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
