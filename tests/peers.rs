//! `modelbench peers` seen from outside: real recorded peer outputs (fixtures/peers/, see its
//! SOURCE.md) parsed into records, the table and its ratios, the thread-count refusal and the
//! one-line skips of peers that are not installed. No peer runs here.

use std::path::Path;
use std::process::{Command, Output};

use modelbench::engine::scenario::Scenario;
use modelbench::output::peers::{peer_rows, peers_table};
use modelbench::output::record::{Engine, Kind, Record};
use modelbench::workloads::peers::{
    llama_record, parse_llama_bench, parse_torch, stamp_like, torch_record, CANDLE_VERSION,
};

const LLAMA_BENCH: &str = include_str!("../fixtures/peers/llama-bench-gemma3-270m-q4km-short.json");
const TORCH: &str = include_str!("../fixtures/peers/torch-fixture-llama-short.json");

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

/// The samples (seconds) of the llama-bench test with these lengths, read from the raw JSON.
fn raw_samples(n_prompt: u64, n_gen: u64, depth: u64) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_str(LLAMA_BENCH).unwrap();
    let t = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["n_prompt"].as_u64() == Some(n_prompt)
                && t["n_gen"].as_u64() == Some(n_gen)
                && t["n_depth"].as_u64() == Some(depth)
        })
        .unwrap_or_else(|| panic!("fixture has no test p{n_prompt} g{n_gen} d{depth}"));
    t["samples_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() * 1e-9)
        .collect()
}

#[test]
fn a_recorded_llama_bench_run_becomes_a_peer_record() {
    let s = Scenario::by_name("short").unwrap();
    let (p, g) = (s.prompt_tokens as f64, s.new_tokens as f64);
    let tests = parse_llama_bench(LLAMA_BENCH, "fixture").unwrap();
    assert_eq!(tests.len(), 3, "pp, pg and tg at depth");
    let r = llama_record(&s, &tests, None).unwrap();
    assert_eq!(r.kind, Kind::Peer);
    let e = r.engine.as_ref().unwrap();
    assert_eq!(e.name, "llama.cpp");
    assert!(e.version.starts_with("llama.cpp "), "{}", e.version);
    assert_eq!(e.threads, Some(tests[0].0.n_threads));
    // E2E: the pg repetitions are the samples; tok/s = G / their median.
    let pg = raw_samples(64, 64, 0);
    assert_eq!(r.samples_s.len(), pg.len());
    assert!(close(r.tok_s.unwrap(), g / median(&pg)));
    let gen = r.gen.as_ref().unwrap();
    // Prefill from pp P, decode from tg G at depth P.
    let pp = raw_samples(64, 0, 0);
    let tg = raw_samples(0, 64, 64);
    assert!(close(
        gen.prefill_tok_s.unwrap(),
        median(&pp.iter().map(|x| p / x).collect::<Vec<_>>())
    ));
    assert!(close(
        gen.decode_tok_s.unwrap(),
        median(&tg.iter().map(|x| g / x).collect::<Vec<_>>())
    ));
    assert!(close(gen.ttft_ms.unwrap().p50, median(&pp) * 1e3));
    assert!(close(gen.tpot_ms.unwrap().p50, median(&tg) / g * 1e3));
    assert!(
        gen.itl_ms.is_none(),
        "llama-bench does not measure ITL: null, never 0"
    );
    // Raw output kept whole.
    assert_eq!(r.extra["llama_bench"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_llama_bench_output_is_one_line_error() {
    for bad in ["", "{}", "[]", "[{\"n_prompt\": 1}]", "not json"] {
        let e = parse_llama_bench(bad, "llama-bench")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("llama-bench: not llama-bench JSON output"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
    // A scenario the output does not cover.
    let tests = parse_llama_bench(LLAMA_BENCH, "fixture").unwrap();
    let e = llama_record(&Scenario::by_name("medium").unwrap(), &tests, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pg test of 256 prompt + 256"), "{e}");
}

#[test]
fn a_recorded_torch_run_becomes_a_peer_record() {
    let s = Scenario::by_name("short").unwrap();
    let (out, raw) = parse_torch(TORCH, "fixture").unwrap();
    let r = torch_record(&s, &out, &raw);
    assert_eq!(r.kind, Kind::Peer);
    let e = r.engine.as_ref().unwrap();
    assert_eq!(e.name, "torch");
    assert!(e.version.contains(&out.torch_version) && e.version.contains("transformers"));
    assert_eq!(e.threads, Some(out.threads));
    // E2E samples are each trial's last token time; TTFT its first; TPOT (E2E-TTFT)/(n-1).
    let trials = raw["trials"].as_array().unwrap();
    let times: Vec<Vec<f64>> = trials
        .iter()
        .map(|t| {
            t["token_times_s"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let e2e: Vec<f64> = times.iter().map(|t| *t.last().unwrap()).collect();
    assert_eq!(r.samples_s.len(), e2e.len());
    for (a, b) in r.samples_s.iter().zip(&e2e) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    let n = s.new_tokens as f64;
    assert!((r.tok_s.unwrap() - n / median(&e2e)).abs() < 1e-6 * n / median(&e2e));
    let g = r.gen.as_ref().unwrap();
    let ttft: Vec<f64> = times.iter().map(|t| t[0] * 1e3).collect();
    assert!((g.ttft_ms.unwrap().p50 - median(&ttft)).abs() < 1e-6);
    let tpot: Vec<f64> = times
        .iter()
        .map(|t| (t.last().unwrap() - t[0]) / (n - 1.0) * 1e3)
        .collect();
    assert!((g.tpot_ms.unwrap().p50 - median(&tpot)).abs() < 1e-6);
    assert!(g.itl_ms.is_some());
}

#[test]
fn bad_torch_output_is_one_line_error() {
    for bad in ["", "{}", "{\"trials\": []}", "Traceback ..."] {
        let e = parse_torch(bad, "peer_torch.py").unwrap_err().to_string();
        assert!(
            e.starts_with("peer_torch.py: not peer_torch.py output"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
    // A trial one token short.
    let mut v: serde_json::Value = serde_json::from_str(TORCH).unwrap();
    v["trials"][0]["token_times_s"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert!(parse_torch(&v.to_string(), "x").is_err());
}

fn rec(
    kind: Kind,
    engine: &str,
    samples: &[f64],
    prefill: Option<f64>,
    decode: Option<f64>,
) -> Record {
    let mut r = Record::from_samples(kind, "short", samples.to_vec(), 64);
    r.model.label = "m".into();
    r.prompt_tokens = 64;
    r.new_tokens = 64;
    r.engine = Some(Engine {
        name: engine.into(),
        version: format!("{engine} 1"),
        flags: String::new(),
        threads: Some(2),
    });
    r.gen = Some(modelbench::output::record::GenMetrics {
        prefill_tok_s: prefill,
        decode_tok_s: decode,
        ..Default::default()
    });
    r
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
    assert_eq!(rows[1].ratio_e2e, Some(0.5));
    assert_eq!(rows[1].ratio_prefill, Some(0.25));
    assert_eq!(rows[1].ratio_decode, Some(0.5));
    assert_eq!(rows[2].ratio_e2e, Some(2.0));
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
    assert!(
        line("llama.cpp").ends_with("| 0.50x | 0.25x | 0.50x |"),
        "{t}"
    );
    assert!(line("torch").ends_with("| 2.00x | 2.00x | n/a |"), "{t}");
    assert!(line("candle").ends_with("| - | - | - |"), "{t}");
    assert!(line("candle").contains("| 32.0 |"), "{t}");
    // The run README shows it.
    let md = modelbench::output::report::markdown(Path::new("run"), &records);
    assert!(md.contains("## Peers") && md.contains("| 0.50x |"), "{md}");
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

fn modelbench(reports: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args(args)
        .env("MODELBENCH_REPORTS", reports)
        .env("HF_HUB_OFFLINE", "1")
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
    let o = modelbench(
        tmp.path(),
        &[
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
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(
            "skip: torch: /nonexistent/python not found (install it with scripts/setup-torch.sh)"
        ),
        "{out}"
    );
    assert!(
        out.contains("skip: llama.cpp: llama-bench needs a GGUF model"),
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
