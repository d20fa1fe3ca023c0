//! The GPU run's tools that can be checked without a GPU (issue 60): the kernel-trace summary
//! (scripts/cuda-trace-summary.py) on traces whose answer is known, and `synth-gguf`'s bad
//! input. The tracer itself (scripts/cuda-kernel-trace.c) needs a CUDA driver: docs/gpu.md has
//! its runs.

mod common;

use std::path::Path;
use std::process::Command;

/// A trace in cuda-kernel-trace's format: the same prologue (load, prompt) in every run, then
/// `tokens` decode steps of `kernels` kernels of 3 us with 2 us between them, one pair of them
/// overlapping by 1 us, one 1 us device-to-host copy, and 20 us of host time before the next.
fn trace(path: &Path, tokens: usize, kernels: usize) {
    let mut lines = Vec::new();
    // prologue: 50 kernels of 10 us, 5 us apart
    let mut t: u64 = 1_000_000;
    for _ in 0..50 {
        lines.push(format!("K\t{t}\t{}\t7\t0\tload_kernel", t + 10_000));
        t += 15_000;
    }
    t += 1_000_000;
    for _ in 0..tokens {
        for k in 0..kernels {
            let name = if k < 7 {
                "_ZN4ggml13mul_mat_vec_qILi12EEEvPKv"
            } else {
                "rmsnorm_f32"
            };
            lines.push(format!("K\t{t}\t{}\t7\t3\t{name}", t + 3_000));
            t += 5_000;
        }
        // an overlapping kernel (another stream): 2 us of which 1 us outside the last one
        lines.push(format!(
            "K\t{}\t{}\t9\t3\tside_kernel",
            t - 3_000,
            t - 1_000
        ));
        lines.push(format!("M\t{t}\t{}\t7\t4\t2", t + 1_000));
        t += 21_000;
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn summary(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/cuda-trace-summary.py"
        ))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python3 runs")
}

#[test]
fn the_trace_summary_counts_only_the_extra_decode_steps() {
    let d = tempfile::tempdir().unwrap();
    let (short, long) = (d.path().join("a.tsv"), d.path().join("b.tsv"));
    trace(&short, 32, 10);
    trace(&long, 160, 10);
    // each step: 10 kernels of 3 us (30 us busy), the side kernel overlapping the last one and
    // running 1 us past it (+1 us busy, +2 us kernel time), the copy (+1 us): busy 32 us,
    // kernel time 32 us in 11 kernels; wall 50 + 21 = 71 us a step (the program's clock).
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    let s = summarise(d.path(), "s.json", true);
    let f = |k: &str| s[k].as_f64().unwrap();
    assert!(near(f("wall_us_per_token"), 71.0), "{s}");
    assert!(near(f("device_busy_us_per_token"), 32.0), "{s}");
    assert!(near(f("kernel_us_per_token"), 32.0), "{s}");
    assert!(near(f("kernels_per_token"), 11.0), "{s}");
    assert!(near(f("copy_us_per_token"), 1.0), "{s}");
    assert!(near(f("launch_bound_share"), 39.0 / 71.0), "{s}");
    assert!(
        near(f("launch_bound_share_untraced_wall"), 29.0 / 61.0),
        "{s}"
    );
    // the prologue cancels: no load_kernel among the per-token kernels
    let names: Vec<&str> = s["top_kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"load_kernel"), "{names:?}");
    assert_eq!(names[0], "ggml::mul_mat_vec_q", "{names:?}");
    // a change in the per-token work shows: 12 kernels a step instead of 10
    trace(&long, 160, 12);
    trace(&short, 32, 12);
    let s2 = summarise(d.path(), "s2.json", false);
    assert!(
        near(s2["kernels_per_token"].as_f64().unwrap(), 13.0),
        "{s2}"
    );
    assert!(
        near(s2["device_busy_us_per_token"].as_f64().unwrap(), 38.0),
        "{s2}"
    );
    assert!(s2.get("launch_bound_share_untraced_wall").is_none(), "{s2}");
}

/// The summary of a.tsv (32 tokens) against b.tsv (160) in `dir`, with the walls of 71 us a
/// step (and, with `untraced`, 61 us untraced), read back from `out`.
fn summarise(dir: &Path, out: &str, untraced: bool) -> serde_json::Value {
    let secs = |n: f64, us: f64| format!("{}", n * us * 1e-6);
    let mut args: Vec<String> = [
        "--engine",
        "test",
        "--short",
        "a.tsv",
        "--long",
        "b.tsv",
        "--short-tokens",
        "32",
        "--long-tokens",
        "160",
        "--out",
        out,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(["--short-wall-s".into(), secs(32.0, 71.0)]);
    args.extend(["--long-wall-s".into(), secs(160.0, 71.0)]);
    if untraced {
        args.extend(["--untraced-short-wall-s".into(), secs(32.0, 61.0)]);
        args.extend(["--untraced-long-wall-s".into(), secs(160.0, 61.0)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = summary(dir, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(dir.join(out)).unwrap()).unwrap()
}

#[test]
fn an_empty_trace_is_a_one_line_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.tsv"), "").unwrap();
    trace(&d.path().join("b.tsv"), 4, 2);
    let out = summary(
        d.path(),
        &[
            "--engine",
            "x",
            "--short",
            "a.tsv",
            "--long",
            "b.tsv",
            "--short-tokens",
            "1",
            "--long-tokens",
            "4",
            "--short-wall-s",
            "0.1",
            "--long-wall-s",
            "0.2",
            "--out",
            "s.json",
        ],
    );
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.starts_with("error: an empty trace"), "{e}");
    assert!(!d.path().join("s.json").exists());
}

#[test]
fn synth_gguf_refuses_bad_input_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.gguf");
    let o = out.to_str().unwrap();
    let run = |args: &[&str]| common::modelbench(d.path(), args);
    common::assert_bad_input(
        &run(&["synth-gguf", "--model", "synthetic:nope", "--out", o]),
        "unknown synthetic model",
    );
    common::assert_bad_input(
        &run(&["synth-gguf", "--model", "fixture:llama", "--out", o]),
        "synth-gguf writes a synthetic model",
    );
    common::assert_bad_input(
        &run(&[
            "synth-gguf",
            "--model",
            "synthetic:llama-3.2-1b",
            "--type",
            "q3",
            "--out",
            o,
        ]),
        "--type q3",
    );
    std::fs::write(&out, b"taken").unwrap();
    common::assert_bad_input(
        &run(&[
            "synth-gguf",
            "--model",
            "synthetic:llama-3.2-1b",
            "--out",
            o,
        ]),
        "already exists",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"taken");
}
