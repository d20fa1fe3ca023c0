//! The `modelbench` binary seen from outside: runs, reports, compare and bad input.

mod common;
use common::{assert_bad_input, modelbench};

use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    assert_bad_input(
        &modelbench(r, &["run", "--suite", "huge", "--model", "fixture:llama"]),
        "--suite",
    );
    assert_bad_input(
        &modelbench(r, &["run", "--model", "fixture:gpt2"]),
        "fixture:gpt2",
    );
    assert_bad_input(
        &modelbench(r, &["run", "--model", "fixture:llama", "--dtype", "f8"]),
        "--dtype",
    );
    assert_bad_input(
        &modelbench(r, &["run", "--model", "fixture:llama", "--device", "tpu"]),
        "--device",
    );
    // CUDA asked of a build without it (with it but no GPU: the driver's error, same form)
    if !cfg!(feature = "cuda") {
        assert_bad_input(
            &modelbench(r, &["run", "--model", "fixture:llama", "--device", "cuda"]),
            "--device=\"cuda:0\" is invalid: this binary was built without CUDA; rebuild with `--features cuda`",
        );
    }
    assert_bad_input(
        &modelbench(
            r,
            &[
                "run",
                "--model",
                "fixture:llama",
                "--prompt-tokens",
                "5000",
                "--max-new-tokens",
                "8",
            ],
        ),
        "max_position_embeddings",
    );
    assert_bad_input(
        &modelbench(r, &["run", "--model", "acme/not-cached"]),
        "not in the Hugging Face cache",
    );
    assert_bad_input(
        &modelbench(r, &["report", "/nonexistent/run"]),
        "not a run folder",
    );
    let corpus = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/corpus/kjv-genesis-1-3.txt"
    );
    for (flag, value, needle) in [
        (
            "--stride",
            "64",
            "--stride 64: --method llama-cpp does not use a stride",
        ),
        ("--seq-len", "2048", "--seq-len 2048"),
    ] {
        let args = [
            "perplexity",
            "--model",
            "fixture:llama",
            "--method",
            "llama-cpp",
            flag,
            value,
            corpus,
        ];
        assert_bad_input(&modelbench(r, &args), needle);
    }
    // nothing half-written
    assert!(std::fs::read_dir(r).unwrap().next().is_none());
}

#[test]
fn run_report_export_and_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    let run = |label: &str| {
        let o = modelbench(
            r,
            &[
                "run",
                "--model",
                "fixture:llama",
                "--prompt-tokens",
                "32",
                "--max-new-tokens",
                "16",
                "--warmup",
                "1",
                "--trials",
                "5",
                "--label",
                label,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(out.contains("| custom-p32-g16 |"), "{out}");
        std::fs::read_dir(r)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(label))
            .unwrap()
    };
    let a = run("a");
    for f in ["results.jsonl", "results.csv", "summary.json", "README.md"] {
        assert!(a.join(f).is_file(), "{f}");
    }
    assert!(r.join("index.html").is_file());
    let records = modelbench::output::report::read_run(&a).unwrap();
    assert_eq!(records.len(), 1);
    let rec = &records[0];
    assert_eq!(rec.samples_s.len(), 5);
    assert_eq!(rec.harness, modelbench::output::record::Harness::Cli);
    assert!(rec.gen.as_ref().unwrap().ttft_ms.is_some());
    assert!(rec.model.load_seconds.is_some_and(|s| s > 0.0));
    assert!(rec.memory.host_peak_bytes.unwrap() > rec.model.weight_bytes.unwrap());
    // report re-renders the same README
    let before = std::fs::read_to_string(a.join("README.md")).unwrap();
    // GPU fields: measured where NVML answers, "not available" (never a number) where not.
    match &rec.hardware.gpu {
        None => {
            assert!(
                rec.power.method.starts_with("not available"),
                "{:?}",
                rec.power
            );
            assert_eq!(
                (rec.power.mean_w, rec.power.energy_j, rec.power.j_per_token),
                (None, None, None)
            );
            assert!(before.contains("GPU: not available"), "{before}");
            assert!(before.contains("| not available |"), "{before}");
            let csv = std::fs::read_to_string(a.join("results.csv")).unwrap();
            let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
            let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
            let col = head.iter().position(|h| *h == "j_per_token").unwrap();
            assert_eq!(row[row.len() - head.len() + col], "");
        }
        Some(g) => {
            assert!(g.vram_total_bytes > 0);
            if let Some(w) = rec.power.mean_w {
                assert!(w > 0.0 && rec.power.j_per_token.unwrap() > 0.0);
            }
        }
    }
    let o = modelbench(r, &["report", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        before,
        std::fs::read_to_string(a.join("README.md")).unwrap()
    );
    // export: one JSON object per line with the registry fields
    let o = modelbench(r, &["export", a.to_str().unwrap()]);
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["id"]
        .as_str()
        .unwrap()
        .starts_with("modelbench.generation.custom-p32-g16.fixture:llama"));
    assert_eq!(v["higher_is_better"], true);
    // a run compared with itself is no regression
    let o = modelbench(r, &["compare", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn calibration_is_cached_and_force_remeasures() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    // The cache lives under the target directory: a temporary one, not the real cache.
    let target = r.join("target");
    let calibrate = |args: &[&str]| {
        common::bin()
            .args(args)
            .env("MODELBENCH_REPORTS", r)
            .env("HF_HUB_OFFLINE", "1")
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap()
    };
    let cache = target.join("modelbench-machine.json");
    // an old-format cache does not parse and is re-measured
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(&cache, r#"{"x": {"fingerprint": "x", "method": "old"}}"#).unwrap();
    let first = calibrate(&["calibrate", "--dtype", "f32"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    for want in [
        "calibrating",
        "memory roof (streaming read",
        "candle GEMV attainable",
        "GB/s",
        "GFLOP/s",
        "matmul",
        cache.to_str().unwrap(),
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    let json = std::fs::read_to_string(&cache).unwrap();
    assert!(
        !json.contains("\"old\"") && json.contains("mem_read_gbs"),
        "{json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entry = v.as_object().unwrap().values().next().unwrap();
    assert!(entry["mem_read_gbs"].as_f64().unwrap() > 0.0, "{json}");
    assert!(entry["methods"]["mem_read"]
        .as_str()
        .unwrap()
        .contains("streaming read"));
    let second =
        String::from_utf8_lossy(&calibrate(&["calibrate", "--dtype", "f32"]).stdout).into_owned();
    assert!(second.contains("cached calibration"), "{second}");
    assert_eq!(
        json,
        std::fs::read_to_string(&cache).unwrap(),
        "a cache hit writes nothing"
    );
    let forced =
        String::from_utf8_lossy(&calibrate(&["calibrate", "--dtype", "f32", "--force"]).stdout)
            .into_owned();
    assert!(forced.contains("calibrating"), "{forced}");
    assert_ne!(
        json,
        std::fs::read_to_string(&cache).unwrap(),
        "--force re-measures"
    );
    // nothing is written beside the reports any more
    assert!(!r.join("machine.json").exists());
}

/// `modelbench moe` runs the moe bench's grid (experts x top-k x tokens, then the dense rows)
/// with the benches' parser: lists accepted, a top-k above the smallest expert count refused
/// in one line naming the flags.
#[test]
fn moe_runs_the_bench_grid_from_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "moe",
        "--num-experts",
        "4",
        "--top-k",
        "1,2",
        "--tokens",
        "1",
        "--hidden",
        "64",
        "--intermediate",
        "32",
        "--warmup",
        "0",
        "--iters",
        "2",
        "--no-save",
    ];
    let o = modelbench(tmp.path(), &args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let ids: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            l.split(": median")
                .next()
                .filter(|_| l.contains(": median"))
        })
        .collect();
    assert_eq!(
        ids,
        [
            "moe_topk/cpu-f32/e4-k1/t1",
            "moe_topk/cpu-f32/e4-k2/t1",
            "moe_topk/cpu-f32/dense-k1/t1",
            "moe_topk/cpu-f32/dense-k2/t1",
        ],
        "{out}"
    );
    assert_bad_input(
        &modelbench(tmp.path(), &["moe", "--num-experts", "2,8", "--top-k", "4"]),
        "--top-k=\"4\" is invalid: top-k 4 exceeds 2 experts (--num-experts)",
    );
    assert_bad_input(
        &modelbench(tmp.path(), &["moe", "--tokens", "1,x"]),
        "--tokens=\"1,x\" is invalid",
    );
}
