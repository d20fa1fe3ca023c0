//! `modelbench peers` seen from outside: real recorded peer outputs (fixtures/peers/, see its
//! SOURCE.md) parsed into records, the table and its ratios, the thread-count refusal and the
//! one-line skips of peers that are not installed, and the whole loop with a stand-in
//! llama.cpp (a shell script). No real peer runs here.

mod common;

use std::path::Path;
use std::process::Output;

use modelbench::engine::scenario::Scenario;
use modelbench::measure::process::ProcessUse;
use modelbench::measure::threads::ThreadUse;
use modelbench::output::peers::{peer_rows, peers_table, Ratio};
use modelbench::output::record::{Engine, Kind, ModelInfo, Record, TrialRates};
use modelbench::workloads::peers::{
    llama_record, parse_llama_timed, parse_torch_hello, parse_torch_trial, stamp_like,
    torch_record, LlamaRun, LlamaSetting, TorchHello, TorchRun, TorchSetting, TorchTrial,
    CANDLE_VERSION,
};

#[path = "peers/records.rs"]
mod records;
use records::*;

const LLAMA_TIMED: &str =
    include_str!("../fixtures/peers/llama-timed-ids-gemma3-270m-q4km-short-kvf32-faoff.json");
const TORCH: &str = include_str!("../fixtures/peers/torch-worker-fixture-llama-short-eager.jsonl");

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn a_recorded_llama_timed_ids_run_becomes_a_peer_record() {
    let s = Scenario::by_name("short").unwrap();
    let (out, raw) = parse_llama_timed(LLAMA_TIMED, "fixture").unwrap();
    assert_eq!((out.prompt_tokens, out.new_tokens), (64, 64));
    let run = LlamaRun {
        out: out.clone(),
        raw,
        process: ProcessUse {
            wall_s: 3.0,
            max_rss_bytes: 300 << 20,
            user_s: 5.0,
            sys_s: 0.1,
        },
    };
    let meta = ModelInfo {
        label: "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF".into(),
        load_seconds: Some(99.0), // candle's: must not be copied
        layers: Some(18),
        ..Default::default()
    };
    let setting = LlamaSetting::matched("f32", false);
    let r = llama_record(&s, &[run.clone(), run], &setting, None, &meta).unwrap();
    assert_eq!(r.kind, Kind::Peer);
    let e = r.engine.as_ref().unwrap();
    assert_eq!(e.name, "llama.cpp");
    assert_eq!(e.threads, Some(out.n_threads), "as llama.cpp reports it");
    assert!(
        e.flags.contains("KV f32") && e.flags.contains("flash attention off"),
        "{}",
        e.flags
    );
    assert_eq!(r.extra["setting_label"], "llama.cpp (KV f32, FA off)");
    // Its own model file, type, load time and memory; candle's structure of the same file.
    assert_eq!(r.model.source, out.model);
    assert_eq!(r.model.load_seconds, Some(out.load_s));
    assert_eq!(r.model.layers, Some(18));
    assert_eq!(r.dtype.name(), "gguf-q4_k_m");
    assert_eq!(r.memory.host_peak_bytes, Some(300 << 20));
    assert!(r.model.provenance.implementation.starts_with("llama.cpp"));
    // Metrics by candle's definitions from llama.cpp's token times.
    let t = &out.token_times_s;
    assert!(close(r.samples_s[0], *t.last().unwrap()));
    let g = r.gen.as_ref().unwrap();
    assert!(close(g.ttft_ms.unwrap().p50, t[0] * 1e3));
    assert!(close(g.prefill_tok_s.unwrap(), 64.0 / t[0]));
    assert!(close(g.decode_tok_s.unwrap(), 63.0 / (t[63] - t[0])));
    let rates = TrialRates::of(&r).unwrap();
    assert_eq!(rates.e2e_tok_s.len(), 2);
    // Threads busy from its per-thread CPU time.
    assert!(r.extra["thread_use"]["busy_threads"].as_u64().unwrap() >= 1);
}

/// `r` failed with one line that starts with `start`.
fn one_line_error<T: std::fmt::Debug>(r: modelbench::Result<T>, start: &str) {
    let e = r.unwrap_err().to_string();
    assert!(e.starts_with(start) && !e.contains('\n'), "{e}");
}

#[test]
fn bad_llama_timed_ids_output_is_one_line_error() {
    for bad in [
        "",
        "{}",
        "[]",
        "not json",
        "{\"tool\": \"llama-timed-ids\"}",
    ] {
        one_line_error(
            parse_llama_timed(bad, "llama-timed-ids"),
            "llama-timed-ids: not llama-timed-ids output",
        );
    }
    // One token time short.
    let mut v: serde_json::Value = serde_json::from_str(LLAMA_TIMED).unwrap();
    v["token_times_s"].as_array_mut().unwrap().pop();
    assert!(parse_llama_timed(&v.to_string(), "x").is_err());
}

/// The recorded worker transcript: its first line and its replies.
fn torch_fixture() -> (TorchHello, serde_json::Value, Vec<TorchTrial>) {
    let mut lines = TORCH.lines();
    let (h, raw) = parse_torch_hello(lines.next().unwrap(), "fixture").unwrap();
    let trials = lines
        .map(|l| parse_torch_trial(l, 64, 64, "fixture").unwrap())
        .collect();
    (h, raw, trials)
}

#[test]
fn a_recorded_torch_worker_run_becomes_a_peer_record() {
    let s = Scenario::by_name("short").unwrap();
    let (h, raw, trials) = torch_fixture();
    assert_eq!((h.threads, h.interop_threads), (2, 2));
    assert_eq!(h.attn_implementation.as_deref(), Some("eager"));
    // One repetition with its threads measured, one without (/proc unreadable).
    let busy = ThreadUse::from_cpu_seconds(&[1.9, 1.7, 0.01], 2.0);
    let runs = vec![
        TorchRun {
            trial: trials[0].clone(),
            thread_use: busy,
        },
        TorchRun {
            trial: trials[1].clone(),
            thread_use: None,
        },
    ];
    let meta = ModelInfo {
        label: "fixture:llama".into(),
        load_seconds: Some(99.0), // candle's: must not be copied
        layers: Some(2),
        ..Default::default()
    };
    let process = ProcessUse {
        wall_s: 60.0,
        max_rss_bytes: 700 << 20,
        user_s: 30.0,
        sys_s: 1.0,
    };
    let matched = TorchSetting::matched("eager");
    let r = torch_record(&s, &runs, (&matched, &h, &raw), Some(process), &meta).unwrap();
    assert_eq!(r.kind, Kind::Peer);
    let e = r.engine.as_ref().unwrap();
    assert_eq!(e.name, "torch");
    assert!(e.version.contains(&h.torch_version) && e.version.contains("transformers 5.23.0"));
    assert_eq!(e.threads, Some(2), "as torch.get_num_threads() reports it");
    assert!(
        e.flags.contains("attention eager")
            && e.flags.contains("KV cache on (DynamicCache)")
            && e.flags.contains("dtype f32"),
        "{}",
        e.flags
    );
    assert_eq!(r.extra["setting_label"], "torch (f32, attention eager)");
    assert_eq!(r.extra["setting"], "attn-eager");
    // Its own load time, memory and dtype; candle's structure of the same weights.
    assert_eq!(r.model.load_seconds, Some(h.load_s));
    assert_eq!(r.model.layers, Some(2));
    assert_eq!(r.model.provenance.attention, "eager");
    assert!(r
        .model
        .provenance
        .implementation
        .contains("LlamaForCausalLM"));
    assert_eq!(r.memory.host_peak_bytes, Some(700 << 20));
    assert_eq!(r.dtype.name(), "f32");
    // Threads busy: the median of the measured repetitions only.
    assert_eq!(r.extra["thread_use"]["busy_threads"], 2);
    // Metrics by candle's definitions from torch's token times.
    let t = &trials[0].token_times_s;
    assert!(close(r.samples_s[0], *t.last().unwrap()));
    let rates = TrialRates::of(&r).unwrap();
    assert_eq!(rates.e2e_tok_s.len(), 2);
    assert!(close(rates.e2e_tok_s[0].unwrap(), 64.0 / t[63]));
    assert!(close(rates.prefill_tok_s[0].unwrap(), 64.0 / t[0]));
    assert!(close(rates.decode_tok_s[0].unwrap(), 63.0 / (t[63] - t[0])));
    let g = r.gen.as_ref().unwrap();
    let ttft: Vec<f64> = trials.iter().map(|x| x.token_times_s[0] * 1e3).collect();
    assert!(close(g.ttft_ms.unwrap().p50, median(&ttft)));
    // transformers' defaults are a row of their own; an unmeasured process says so.
    let d = torch_record(
        &s,
        &runs,
        (&TorchSetting::defaults(), &h, &raw),
        None,
        &meta,
    )
    .unwrap();
    assert_eq!(d.extra["setting"], "defaults");
    assert!(d.extra["setting_label"]
        .as_str()
        .unwrap()
        .starts_with("torch defaults ("));
    assert_eq!(d.memory.host_peak_bytes, None);
    assert!(d.memory.host_method.starts_with("not available"));
    assert!(torch_record(&s, &[], (&matched, &h, &raw), None, &meta).is_err());
}

#[test]
fn bad_torch_output_is_one_line_error() {
    for bad in ["", "{}", "[]", "Traceback ..."] {
        one_line_error(
            parse_torch_hello(bad, "peer_torch.py"),
            "peer_torch.py: not peer_torch.py's first line",
        );
        one_line_error(
            parse_torch_trial(bad, 64, 64, "peer_torch.py"),
            "peer_torch.py: not a peer_torch.py reply",
        );
    }
    let reply = TORCH.lines().nth(1).unwrap();
    assert!(parse_torch_trial(reply, 64, 64, "x").is_ok());
    // Credited tokens and prompt ids must be what was asked for.
    let e = parse_torch_trial(reply, 64, 65, "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected 65 increasing token times"), "{e}");
    assert!(parse_torch_trial(reply, 63, 64, "x").is_err());
    // A trial one token short.
    let mut v: serde_json::Value = serde_json::from_str(reply).unwrap();
    v["token_times_s"].as_array_mut().unwrap().pop();
    assert!(parse_torch_trial(&v.to_string(), 64, 64, "x").is_err());
}

#[test]
fn the_table_puts_candle_first_and_divides_candle_by_peer() {
    // candle: 64 tokens in 2 s = 32 tok/s; llama.cpp 64 in 1 s = 64 tok/s; torch 64 in 4 s.
    let candle = rec(
        Kind::Generation,
        "candle",
        &[2.0, 2.0, 2.0],
        Some(100.0),
        Some(40.0),
    );
    let mut llama = rec(
        Kind::Peer,
        "llama.cpp",
        &[1.0, 1.0, 1.0],
        Some(400.0),
        Some(80.0),
    );
    let mut torch = rec(Kind::Peer, "torch", &[4.0, 4.0, 4.0], Some(50.0), None);
    stamp_like(&mut llama, &candle);
    stamp_like(&mut torch, &candle);
    let records = vec![candle, llama, torch];
    let rows = peer_rows(&records);
    assert_eq!(
        rows.iter().map(|r| r.engine.as_str()).collect::<Vec<_>>(),
        ["candle", "llama.cpp", "torch"]
    );
    assert_eq!(rows[0].ratio_e2e, None, "candle's own row has no ratio");
    assert_eq!(rows[1].ratio_e2e, Some(Ratio::OfMedians(0.5)));
    assert_eq!(rows[1].ratio_prefill, Some(Ratio::OfMedians(0.25)));
    assert_eq!(rows[1].ratio_decode, Some(Ratio::OfMedians(0.5)));
    assert_eq!(rows[2].ratio_e2e, Some(Ratio::OfMedians(2.0)));
    assert_eq!(
        rows[2].ratio_decode, None,
        "torch decode not measured: no ratio"
    );
    let t = peers_table(&records);
    let line = |e: &str| {
        t.lines()
            .find(|l| l.contains(&format!("| {e} |")))
            .unwrap()
            .to_string()
    };
    // Not run in alternation: a ratio of medians that says it has no interval.
    let nc = "[no CI: not interleaved]";
    assert!(
        line("llama.cpp").ends_with(&format!("| 0.50x {nc} | 0.25x {nc} | 0.50x {nc} |")),
        "{t}"
    );
    assert!(
        line("torch").ends_with(&format!("| 2.00x {nc} | 2.00x {nc} | n/a |")),
        "{t}"
    );
    assert!(line("candle").ends_with("| - | - | - |"), "{t}");
    assert!(line("candle").contains("| 32.0 |"), "{t}");
    // The run README shows it.
    let md = modelbench::output::report::markdown(Path::new("run"), &records);
    assert!(
        md.contains("## Peers") && md.contains("| 0.50x [no CI"),
        "{md}"
    );
    // Records round-trip with their engine.
    let j = serde_json::to_string(&records[1]).unwrap();
    let back: Record = serde_json::from_str(&j).unwrap();
    assert_eq!(back.engine.unwrap().name, "llama.cpp");
}

#[test]
fn the_peers_chart_is_written() {
    let candle = rec(Kind::Generation, "candle", &[2.0], Some(100.0), Some(40.0));
    let mut llama = rec(Kind::Peer, "llama.cpp", &[1.0], Some(400.0), None);
    stamp_like(&mut llama, &candle);
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("peers.png");
    assert!(modelbench::output::peers::peers_png(&png, "t", &[candle, llama]).unwrap());
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    // No peer rows: nothing written.
    let other = Record::from_samples(Kind::Generation, "short", vec![1.0], 64);
    let none = tmp.path().join("none.png");
    assert!(!modelbench::output::peers::peers_png(&none, "t", &[other]).unwrap());
    assert!(!none.exists());
}

#[test]
fn candle_version_is_the_locked_one() {
    let lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let needle = format!("name = \"candle-core\"\nversion = \"{CANDLE_VERSION}\"");
    assert!(
        lock.contains(&needle),
        "Cargo.lock's candle-core is not {CANDLE_VERSION}"
    );
}

/// The CLI with candle's barrier pool left to follow rayon's (no CANDLE_NUM_THREADS).
/// `peers` on the llama fixture, the quick suite, no warm-up, one trial, and a torch peer
/// whose Python is not there.
const QUICK_WITHOUT_TORCH: [&str; 11] = [
    "peers",
    "--model",
    "fixture:llama",
    "--suite",
    "quick",
    "--warmup",
    "0",
    "--trials",
    "1",
    "--torch-python",
    "/nonexistent/python",
];

/// The stdout of a run that must have succeeded (its output and errors in the message).
fn succeeded(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn modelbench(reports: &Path, args: &[&str]) -> Output {
    common::modelbench_cmd(reports)
        .args(args)
        .env_remove("CANDLE_NUM_THREADS")
        .output()
        .unwrap()
}

#[test]
fn thread_mismatch_is_refused_and_bad_peers_named() {
    let tmp = tempfile::tempdir().unwrap();
    let o = modelbench(
        tmp.path(),
        &["peers", "--model", "fixture:llama", "--peer-threads", "999"],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("999 threads") && e.contains("--allow-thread-mismatch"),
        "{e}"
    );
    let o = modelbench(
        tmp.path(),
        &["peers", "--model", "fixture:llama", "--peers", "vllm"],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("unknown peer `vllm`") && e.contains("llama.cpp, torch"),
        "{e}"
    );
    let o = modelbench(
        tmp.path(),
        &[
            "peers",
            "--model",
            "fixture:llama",
            "--torch-settings",
            "matched,flash",
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("--torch-settings matched,flash: unknown setting `flash`"),
        "{e}"
    );
    assert!(
        std::fs::read_dir(tmp.path())
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "nothing written"
    );
}

#[test]
fn a_missing_peer_is_a_one_line_skip_naming_its_setup_script() {
    let tmp = tempfile::tempdir().unwrap();
    let o = modelbench(tmp.path(), &QUICK_WITHOUT_TORCH);
    let out = succeeded(&o);
    assert!(
        out.contains(
            "skip: torch: /nonexistent/python not found (install it with scripts/setup-torch.sh)"
        ),
        "{out}"
    );
    assert!(
        out.contains("skip: llama.cpp: llama.cpp needs a GGUF model"),
        "{out}"
    );
    // candle's numbers still measured and saved, no peer row invented.
    let t: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| short") || l.starts_with("| medium"))
        .collect();
    assert_eq!(t.len(), 2, "{out}");
    assert!(t.iter().all(|l| l.contains("| candle |")), "{out}");
    let run = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("results.jsonl").is_file())
        .expect("a run folder");
    let md = std::fs::read_to_string(run.join("peers.md")).unwrap();
    assert!(md.contains("| candle |"), "{md}");
}

#[test]
fn interleaved_repetitions_give_paired_ratios_with_intervals() {
    let candle = candle_reps(7);
    // The peer is 2.5x candle in every repetition, with per-pair noise of +-4%.
    let mut llama = peer_reps("llama.cpp", 7, 50.0);
    let noise = [1.04, 0.97, 1.0, 1.02, 0.96, 1.01, 0.99];
    for key in ["e2e_tok_s", "prefill_tok_s", "decode_tok_s"] {
        for (i, x) in llama.extra["trial_rates"][key]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            *x = serde_json::json!(x.as_f64().unwrap() * noise[i]);
        }
    }
    llama.extra["setting_label"] = serde_json::json!("llama.cpp (KV f32, FA off)");
    stamp_like(&mut llama, &candle);
    let records = vec![candle.clone(), llama.clone()];
    let rows = peer_rows(&records);
    let Some(Ratio::Paired(p)) = rows[1].ratio_e2e else {
        panic!("{:?}", rows[1].ratio_e2e)
    };
    assert_eq!(p.pairs, 7);
    let (lo, hi) = p.ci.unwrap();
    assert!((p.ratio - 0.4 / 1.0).abs() < 0.02, "{p:?}");
    assert!(
        lo < p.ratio && p.ratio < hi && lo > 0.37 && hi < 0.43,
        "{p:?}"
    );
    let t = peers_table(&records);
    let line = t
        .lines()
        .find(|l| l.contains("| llama.cpp (KV f32, FA off) |"))
        .unwrap();
    let cell = format!("| {:.2}x [{lo:.2}, {hi:.2}] |", p.ratio);
    assert!(line.contains(&cell), "{t}");
    // Fewer than 5 repetitions: the ratio, and why there is no interval.
    let c4 = candle_reps(4);
    let mut l4 = peer_reps("llama.cpp", 4, 50.0);
    stamp_like(&mut l4, &c4);
    let t4 = peers_table(&[c4, l4]);
    assert!(t4.contains("0.40x [no CI: 4 pairs < 5]"), "{t4}");
    // Same rates but not run in alternation: no pairing, no interval.
    let mut apart = llama;
    apart.extra["interleaved"] = serde_json::json!(false);
    let rows = peer_rows(&[candle, apart]);
    assert!(
        matches!(rows[1].ratio_e2e, Some(Ratio::OfMedians(_))),
        "{:?}",
        rows[1].ratio_e2e
    );
}

fn modelbench_env(reports: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::modelbench_cmd(reports);
    c.args(args)
        .env_remove("CANDLE_NUM_THREADS")
        .env_remove("RAYON_NUM_THREADS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn candles_two_pools_must_agree_or_the_run_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let mismatched = [("CANDLE_NUM_THREADS", "1"), ("RAYON_NUM_THREADS", "2")];
    let o = modelbench_env(
        tmp.path(),
        &["peers", "--model", "fixture:llama", "--suite", "quick"],
        &mismatched,
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("CANDLE_NUM_THREADS=\"1\"")
            && e.contains("RAYON_NUM_THREADS=\"2\"")
            && e.contains("CANDLE_NUM_THREADS=2 RAYON_NUM_THREADS=2"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
    // Agreeing pools run.
    let args = [&QUICK_WITHOUT_TORCH[..], &["--no-save"][..]].concat();
    let o = modelbench_env(
        tmp.path(),
        &args,
        &[("CANDLE_NUM_THREADS", "2"), ("RAYON_NUM_THREADS", "2")],
    );
    let out = succeeded(&o);
    assert!(!out.contains("MISMATCH"), "{out}");
    // Kept with --allow-thread-mismatch: flagged in the output and the table.
    let mut allow = args.to_vec();
    allow.push("--allow-thread-mismatch");
    let o = modelbench_env(tmp.path(), &allow, &mismatched);
    let out = succeeded(&o);
    assert!(
        out.contains("warning: candle's two thread pools differ"),
        "{out}"
    );
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| short") || l.starts_with("| medium"))
        .collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|l| l.contains("MISMATCH")),
        "{out}"
    );
}

/// The peer's program where its setup script puts it; None, after tests/common's skip rule,
/// where it is not there (llama.cpp: `MODELBENCH_REQUIRE_LLAMA_CPP`, built by `.ci/run`).
fn installed(peer: modelbench::workloads::peers::Peer, why: &str) -> Option<std::path::PathBuf> {
    let p = peer.default_program();
    if p.is_file() {
        return Some(p);
    }
    let cause = format!("{} {why} ({})", p.display(), peer.setup_script());
    match peer {
        modelbench::workloads::peers::Peer::LlamaCpp => {
            common::skip_unless_required("MODELBENCH_REQUIRE_LLAMA_CPP", "llama.cpp peer", &cause)
        }
        // Ignored by default (not in CI): run with --ignored, it must run.
        modelbench::workloads::peers::Peer::Torch => panic!("{cause}"),
    }
    None
}

/// The real llama.cpp peer on the real Gemma 3 (runs in CI; elsewhere a skip where either is
/// absent, through tests/common's rule): both
/// settings name their KV type and flash-attention setting as llama.cpp applied them.
#[test]
fn llama_timed_ids_applies_the_kv_type_and_attention_asked_for() {
    use modelbench::workloads::peers::{run_llama_timed, Peer};
    let Some(bin) = installed(Peer::LlamaCpp, "not built") else {
        return;
    };
    let hub = std::env::var("HF_HUB_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/huggingface/hub")
        });
    let snaps = hub.join("models--modelbench-offline--gemma-3-270m-Q4_K_M-GGUF/snapshots");
    let Some(gguf) = std::fs::read_dir(&snaps).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("gemma-3-270m-Q4_K_M.gguf"))
            .find(|p| p.is_file())
    }) else {
        return common::skip_real_model(format!("no GGUF in {}", snaps.display()));
    };
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<u32> = (0..8).map(|i| 1000 + 37 * i).collect();
    let ids_file = tmp.path().join("ids.txt");
    let m = run_llama_timed(
        &bin,
        &gguf,
        &ids,
        &ids_file,
        4,
        2,
        &LlamaSetting::matched("f32", false),
        0,
    )
    .unwrap();
    assert_eq!(
        (m.out.type_k.as_str(), m.out.type_v.as_str()),
        ("f32", "f32")
    );
    assert_eq!(
        (
            m.out.flash_attn_requested.as_str(),
            m.out.flash_attn_resolved.as_str()
        ),
        ("off", "disabled")
    );
    assert_eq!(m.out.n_threads, 2);
    assert_eq!(m.out.token_times_s.len(), 4);
    assert!(m.process.max_rss_bytes > 100 << 20, "{:?}", m.process);
    let d = run_llama_timed(
        &bin,
        &gguf,
        &ids,
        &ids_file,
        4,
        2,
        &LlamaSetting::defaults(),
        0,
    )
    .unwrap();
    assert_eq!(d.out.type_k, "f16");
    assert!(
        d.out.flash_attn_requested.starts_with("default"),
        "{}",
        d.out.flash_attn_requested
    );
    assert!(
        ["enabled", "disabled"].contains(&d.out.flash_attn_resolved.as_str()),
        "{}",
        d.out.flash_attn_resolved
    );
    // Both greedy runs from the same ids start with the same token.
    assert_eq!(m.out.generated_ids[0], d.out.generated_ids[0]);
}

#[test]
fn torch_rows_get_paired_intervals_and_a_thread_mismatch_is_marked() {
    let candle = candle_reps(6);
    // torch is half candle's speed in every repetition, drifting with it.
    let mut torch = peer_reps("torch", 6, 10.0);
    torch.extra["setting_label"] = serde_json::json!("torch (f32, attention eager)");
    stamp_like(&mut torch, &candle);
    let rows = peer_rows(&[candle.clone(), torch.clone()]);
    let Some(Ratio::Paired(p)) = rows[1].ratio_decode else {
        panic!("{:?}", rows[1].ratio_decode)
    };
    assert_eq!(p.pairs, 6);
    assert!((p.ratio - 2.0).abs() < 1e-9, "{p:?}");
    let t = peers_table(&[candle.clone(), torch.clone()]);
    let line = t
        .lines()
        .find(|l| l.contains("| torch (f32, attention eager) |"))
        .unwrap();
    assert!(line.contains("| 2.00x [2.00, 2.00] |"), "{t}");
    assert!(!line.contains("MISMATCH"), "{t}");
    // A torch that reported another thread count (kept with --allow-thread-mismatch).
    torch.extra["thread_warning"] = serde_json::json!(
        "warning: torch ran with 1 threads but candle with 2: not a like-for-like comparison"
    );
    let t = peers_table(&[candle, torch]);
    let line = t
        .lines()
        .find(|l| l.contains("| torch (f32, attention eager) |"))
        .unwrap();
    assert!(line.contains("MISMATCH"), "{t}");
}

/// The real PyTorch peer (ignored by default: target/peers/torch-venv is several GB of CUDA
/// wheels from PyPI, not installed in CI; with `--ignored` it fails where the venv is absent):
/// a worker loads once, takes the thread count and attention it is given, generates the
/// credited number of tokens from given ids, greedily (same ids, same tokens), and its process
/// is measured. A worker at another thread count is refused.
#[test]
#[ignore = "needs scripts/setup-torch.sh's venv (several GB, not in CI); run with --ignored"]
fn the_torch_worker_runs_given_ids_at_the_threads_and_attention_asked_for() {
    use modelbench::engine::sampling::SamplingParams;
    use modelbench::workloads::peers::{check_threads, Peer, TorchWorker};
    let Some(python) = installed(Peer::Torch, "not set up") else {
        return;
    };
    use modelbench::models::sources::{resolve, ModelRef};
    let res = resolve(&ModelRef::parse("fixture:llama").unwrap(), "fixture:llama").unwrap();
    let modelbench::models::Weights::Safetensors(files) = &res.weights else {
        panic!("fixture:llama is safetensors")
    };
    let dir = files[0].parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.json");
    let mut w = TorchWorker::start(
        &python,
        &dir,
        2,
        "f32",
        "cpu",
        &TorchSetting::matched("eager"),
        &spec,
    )
    .unwrap();
    assert_eq!((w.hello.threads, w.hello.interop_threads), (2, 2));
    assert_eq!(w.hello.attn_implementation.as_deref(), Some("eager"));
    assert_eq!(w.hello.dtype, "f32");
    assert!(w.hello.load_s > 0.0);
    assert!(check_threads(Peer::Torch, 2, Some(w.hello.threads), false)
        .unwrap()
        .is_none());
    let ids: Vec<u32> = (0..16).map(|i| 3 + 37 * i).collect();
    let a = w.generate(&ids, 8, &SamplingParams::GREEDY, 42).unwrap();
    let b = w.generate(&ids, 8, &SamplingParams::GREEDY, 42).unwrap();
    assert_eq!(a.trial.prompt_tokens, 16);
    assert_eq!(a.trial.generated_ids.len(), 8);
    assert_eq!(a.trial.generated_ids, b.trial.generated_ids, "greedy");
    assert_eq!(a.trial.cache.as_deref(), Some("DynamicCache"));
    // The same work: candle's greedy tokens from the same ids on the same weights, in f32.
    let mut candle = modelbench::models::sources::loading::open_with(
        res.clone(),
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
        None,
        modelbench::models::attention::Attention::Eager,
    )
    .unwrap();
    let (_, c) = modelbench::engine::generate::bare_greedy(candle.model.as_mut(), &ids, 8).unwrap();
    let same = c
        .iter()
        .zip(&a.trial.generated_ids)
        .take_while(|(x, y)| x == y)
        .count();
    println!(
        "candle {c:?}, torch {:?}: {same} of 8 agree",
        a.trial.generated_ids
    );
    assert!(
        same >= 1,
        "the first greedy token differs: candle {c:?}, torch {:?}",
        a.trial.generated_ids
    );
    let p = w.finish().unwrap();
    assert!(p.max_rss_bytes > 100 << 20, "{p:?}");
    // At one thread against candle's two: torch reports 1, and the comparison is refused.
    let one = TorchWorker::start(
        &python,
        &dir,
        1,
        "f32",
        "cpu",
        &TorchSetting::defaults(),
        &spec,
    )
    .unwrap();
    assert_eq!(one.hello.threads, 1);
    assert_ne!(one.hello.attn_implementation.as_deref(), Some("eager"));
    let e = check_threads(Peer::Torch, 2, Some(one.hello.threads), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("torch ran with 1 threads but candle with 2"),
        "{e}"
    );
    one.finish().unwrap();
    // A worker that cannot load: one line, with the last line of its stderr.
    let Err(e) = TorchWorker::start(
        &python,
        tmp.path(),
        2,
        "f32",
        "cpu",
        &TorchSetting::defaults(),
        &spec,
    ) else {
        panic!("a folder without config.json loaded")
    };
    let e = e.to_string();
    assert!(
        e.contains("--serve (defaults) failed (exit status 1)") && !e.contains('\n'),
        "{e}"
    );
}

/// A stand-in for llama-timed-ids (POSIX sh + awk): answers in its output format with the
/// thread count asked for, and logs each call as `<KV type or default> <prompt ids>` to
/// $FAKE_LLAMA_LOG; exits 1 naming itself when $FAKE_LLAMA_FAIL is set.
const FAKE_LLAMA: &str = r#"#!/bin/sh
[ -n "$FAKE_LLAMA_FAIL" ] && { echo "fake llama: cannot load the model" >&2; exit 1; }
k=""; fa=""
while [ $# -gt 0 ]; do
  case "$1" in
    -m) m=$2; shift;; --ids) ids=$2; shift;; -n) n=$2; shift;; -t) t=$2; shift;;
    --warmup) w=$2; shift;; -ctk) k=$2; shift;; -ctv) shift;; --fa) fa=$2; shift;;
  esac
  shift
done
echo "${k:-default} $(cat "$ids")" >> "$FAKE_LLAMA_LOG"
awk -v n="$n" -v t="$t" -v w="$w" -v k="${k:-f16}" -v fa="${fa:-auto}" -v m="$m" -v np="$(wc -w < "$ids")" 'BEGIN {
  tt = ""; id = ""; cpu = "";
  for (i = 1; i <= n; i++) { tt = tt (i > 1 ? "," : "") i * 0.001; id = id (i > 1 ? "," : "") 7 }
  for (i = 1; i <= t; i++) { cpu = cpu (i > 1 ? "," : "") n * 0.001 }
  printf "{\"model\":\"%s\",\"model_desc\":\"llama 8M Q8_0\",\"model_size_bytes\":1,\"model_n_params\":1,\"load_s\":0.01,\"prompt_tokens\":%d,\"new_tokens\":%d,\"warmup\":%d,\"n_threads\":%d,\"n_threads_batch\":%d,\"n_ctx\":512,\"n_batch\":512,\"n_ubatch\":512,\"type_k\":\"%s\",\"type_v\":\"%s\",\"flash_attn_requested\":\"%s\",\"flash_attn_resolved\":\"disabled\",\"timed_wall_s\":%f,\"thread_cpu_s\":[%s],\"token_times_s\":[%s],\"generated_ids\":[%s]}\n", m, np, n, w, t, t, k, k, fa, n * 0.001, cpu, tt, id
}'
"#;

/// The whole `peers` loop with a stand-in llama.cpp: per scenario candle's record, then one
/// record per llama.cpp setting paired with it; the peers run in the ABBA order around
/// candle's trials (candle first in even repetitions, last in odd ones) from the prompt ids
/// of candle's trial of the same repetition; a failing peer is a one-line error.
#[test]
fn peers_alternate_with_candles_trials_on_its_prompt_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("llama-timed-ids");
    std::fs::write(&fake, FAKE_LLAMA).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = tmp.path().join("calls.log");
    let reports = tmp.path().join("reports");
    let (warmup, trials) = (1usize, 2usize);
    let args = [
        "peers",
        "--model",
        "gguf:fixture:llama",
        "--suite",
        "quick",
        "--warmup",
        "1",
        "--trials",
        "2",
        "--llama-timed-ids",
        fake.to_str().unwrap(),
    ];
    let o = modelbench_env(
        &reports,
        &args,
        &[
            ("CANDLE_NUM_THREADS", "2"),
            ("RAYON_NUM_THREADS", "2"),
            ("FAKE_LLAMA_LOG", log.to_str().unwrap()),
        ],
    );
    assert!(o.status.success(), "{}", common::text(&o));
    let run = std::fs::read_dir(&reports)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("results.jsonl").is_file())
        .expect("a run folder");
    let recs: Vec<Record> = std::fs::read_to_string(run.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    let mut at = 0;
    let scenarios = ["short", "medium"];
    assert_eq!(recs.len(), 3 * scenarios.len(), "{recs:#?}");
    for (si, name) in scenarios.iter().enumerate() {
        let candle = &recs[3 * si];
        assert_eq!(
            (candle.kind, candle.scenario.as_str()),
            (Kind::Generation, *name)
        );
        assert_eq!(candle.engine.as_ref().unwrap().name, "candle");
        assert_eq!(candle.extra["interleaved"], true);
        for (k, setting) in ["kv-f32-fa-off", "defaults"].iter().enumerate() {
            let p = &recs[3 * si + 1 + k];
            assert_eq!(p.kind, Kind::Peer);
            assert_eq!(p.id, format!("{}@llama.cpp:{setting}", candle.id));
            assert_eq!(p.extra["paired_with"], candle.id.as_str());
            assert_eq!(
                p.extra["trial_rates"]["e2e_tok_s"]
                    .as_array()
                    .unwrap()
                    .len(),
                2
            );
        }
        // Repetition r: candle's trial `warmup + r`'s prompt ids; engines in the order
        // candle, matched, defaults (r even) and defaults, matched, candle (r odd).
        let s = Scenario::by_name(name).unwrap();
        for r in 0..trials {
            let ids = modelbench::engine::generate::prompt_ids(
                s.prompt_tokens,
                candle
                    .model
                    .vocab
                    .expect("a generation record carries its vocabulary"),
                candle.seed.expect("a generation record carries its seed"),
                (warmup + r) as u64,
            );
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            let order = if r % 2 == 0 {
                ["f32", "default"]
            } else {
                ["default", "f32"]
            };
            for kv in order {
                assert_eq!(
                    calls.get(at).copied(),
                    Some(format!("{kv} {}", ids.join(" ")).as_str()),
                    "{name} repetition {r}: call {at} of {calls:?}"
                );
                at += 1;
            }
        }
    }
    assert_eq!(at, calls.len(), "{calls:?}");

    // A peer that fails: one line naming the peer, model, scenario and repetition; exit 2.
    let o = modelbench_env(
        &tmp.path().join("failed"),
        &[
            "peers",
            "--model",
            "gguf:fixture:llama",
            "--warmup",
            "0",
            "--trials",
            "1",
            "--llama-timed-ids",
            fake.to_str().unwrap(),
        ],
        &[
            ("CANDLE_NUM_THREADS", "2"),
            ("RAYON_NUM_THREADS", "2"),
            ("FAKE_LLAMA_LOG", log.to_str().unwrap()),
            ("FAKE_LLAMA_FAIL", "1"),
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("llama.cpp: gguf:fixture:llama / short / repetition 0:")
            && e.contains("fake llama: cannot load the model"),
        "{e}"
    );
}
