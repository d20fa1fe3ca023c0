//! `modelbench ops` (issue 31) on the quantized Gemma 3 fixture (`gguf:fixture:gemma3`, 2
//! layers, Q8_0): the table has every op of the forward with the model's call counts and a
//! coverage line; an op slowed on purpose (`MODELBENCH_INJECT_SLOWDOWN=op:rms_norm:work=N`)
//! is the one the regression line names, and an unchanged rerun does not name it; the paired
//! regression report of `compare --paired` names it too; bad input is one line and exit 2;
//! with llama.cpp's test-backend-ops built, ggml's side and the largest gap are printed.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use modelbench::workloads::ops::OpsTable;

const MODEL: &str = "gguf:fixture:gemma3";
/// About 5-10 ms per rms_norm call here: the fixture's 13 rms_norm calls per decode step then
/// add 60-130 ms to a step of a few ms. That large so that it holds on a loaded 2-core machine,
/// where the fixture's quantized matmuls alone were measured at 0.6-20 ms per call (candle's
/// spinning matmul pool waiting for descheduled threads) and its steps at 30-200 ms.
const SLOW_NORM: &str = "op:rms_norm:work=5000000";

/// One test of this file at a time: each times ops, and they would contend with each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn modelbench(reports: &Path, args: &[&str], inject: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modelbench"));
    c.args(args)
        .env("MODELBENCH_REPORTS", reports)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MODELBENCH_INJECT_SLOWDOWN");
    if let Some(i) = inject {
        c.env("MODELBENCH_INJECT_SLOWDOWN", i);
    }
    c.output().unwrap()
}

/// stderr (progress), then stdout (the table and its last lines).
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    )
}

fn table(dir: &Path, name: &str, extra: &[&str], inject: Option<&str>) -> (OpsTable, String) {
    let json = dir.join(format!("{name}.json"));
    let mut args = vec!["ops", "--quick", "--json", json.to_str().unwrap()];
    if !extra.contains(&"--model") {
        args.extend(["--model", MODEL]);
    }
    args.extend_from_slice(extra);
    let o = modelbench(dir, &args, inject);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let t: OpsTable = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (t, out)
}

/// The decode table (one token at depth 16) of `gguf:fixture:<fixture>`.
fn decode_table(dir: &Path, fixture: &str) -> (OpsTable, String) {
    let model = format!("gguf:fixture:{fixture}");
    table(
        dir,
        fixture,
        &["--model", &model, "--scenario", "decode", "--depth", "16"],
        None,
    )
}

fn calls(t: &OpsTable, kind: &str) -> usize {
    t.rows
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.calls)
        .sum()
}

#[test]
fn the_table_has_every_op_of_the_forward_and_a_coverage_line() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (t, out) = table(
        tmp.path(),
        "decode",
        &["--scenario", "decode", "--depth", "16"],
        None,
    );
    // The fixture: 2 layers, 4 query heads over 1 KV head of 16.
    let layers = 2;
    assert_eq!(calls(&t, "matmul"), 7 * layers, "{out}");
    assert_eq!(calls(&t, "lm_head"), 1, "{out}");
    // 4 block norms + q norm + k norm per layer, and the final norm.
    assert_eq!(calls(&t, "rms_norm"), 6 * layers + 1, "{out}");
    assert_eq!(calls(&t, "rope"), 2 * layers, "{out}");
    for k in ["attn_qk", "softmax", "attn_av", "activation", "mul"] {
        assert_eq!(calls(&t, k), layers, "{k}: {out}");
    }
    assert_eq!(calls(&t, "add"), 2 * layers, "{out}");
    // One cache update (k and v) per layer: an append in the global layer, a concat in the
    // sliding one.
    assert_eq!(calls(&t, "kv_cache"), layers, "{out}");
    assert_eq!(calls(&t, "embedding"), 1, "{out}");
    assert_eq!(calls(&t, "sampling"), 1, "{out}");
    assert!(
        t.rows.iter().all(|r| r.us.is_finite() && r.us > 0.0),
        "{out}"
    );
    assert!(t.step_us > 0.0 && t.step_samples > 0, "{out}");
    assert_eq!((t.tokens, t.depth), (1, 16));
    // Decode attends over depth + 1 keys.
    assert!(out.contains("(1,1,4,17)"), "{out}");
    assert!(out.contains("\ncoverage: the ops sum to "), "{out}");
    assert!(out.contains("% of roof"), "{out}");
    // Every row timed in the forward's order too (the order calls each row as often as the
    // table says, or the table says why not), and its coverage on the line.
    assert!(
        t.rows
            .iter()
            .all(|r| r.seq_us.is_some_and(|us| us.is_finite() && us > 0.0)),
        "{out}"
    );
    assert!(out.contains("% timed in the forward's order ("), "{out}");

    // Prefill: the prompt's tokens in every op, masks built and added.
    let (p, out) = table(
        tmp.path(),
        "prefill",
        &["--scenario", "prefill", "--prompt-tokens", "24"],
        None,
    );
    assert_eq!((p.tokens, p.depth), (24, 0));
    assert!(p.rows.iter().any(|r| r.kind == "mask"), "{out}");
    assert!(p.rows.iter().all(|r| r.seq_us.is_some()), "{out}");
    assert!(out.contains("m=24 "), "{out}");
    assert!(
        out.contains("| lm_head |") && out.contains("m=1 n=262144 k=64"),
        "{out}"
    );
}

/// The per-op table of the project's Llama-architecture families, each op counted from what the
/// architecture computes per layer (the fixtures: 2 layers, 4 query heads over 2 KV heads of
/// 16): Qwen2 adds its q/k/v biases, Qwen3 its per-head q/k norms, Llama 3 neither.
#[test]
fn every_family_the_project_implements_has_its_table() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let layers = 2;
    for (fixture, adds, norms, rope) in [
        ("qwen2", 2 + 3, 2, "rope (neox)"),
        ("qwen3", 2, 4, "rope (neox)"),
        ("llama3", 2, 2, "rope (norm)"),
        // Its fused attn_qkv and ffn_up read as their parts: the same seven matmuls.
        ("phi3", 2, 2, "rope (neox)"),
    ] {
        let (t, out) = decode_table(tmp.path(), fixture);
        assert_eq!(calls(&t, "matmul"), 7 * layers, "{fixture}: {out}");
        assert_eq!(calls(&t, "lm_head"), 1, "{fixture}: {out}");
        assert_eq!(calls(&t, "add"), adds * layers, "{fixture}: {out}");
        assert_eq!(
            calls(&t, "rms_norm"),
            norms * layers + 1,
            "{fixture}: {out}"
        );
        assert_eq!(calls(&t, "kv_cache"), layers, "{fixture}: {out}");
        for k in ["attn_qk", "softmax", "attn_av", "activation", "mul"] {
            assert_eq!(calls(&t, k), layers, "{fixture} {k}: {out}");
        }
        assert!(
            t.rows.iter().any(|r| r.kind == "rope" && r.op == rope),
            "{fixture}: {out}"
        );
        assert!(
            t.rows.iter().any(|r| r.op == "silu"),
            "{fixture}: SiLU, not Gemma's GELU: {out}"
        );
        // Decode attends over depth + 1 keys: 2 query heads per KV head, 2 KV heads.
        assert!(out.contains("(1,2,2,17)"), "{fixture}: {out}");
        assert!(
            t.rows.iter().all(|r| r.seq_us.is_some()),
            "{fixture}: {out}"
        );
    }
    // A mixture of experts (the fixture: 8 experts, top-2): a decode token runs each block's
    // attention projections, the router and its softmax, and two experts, each one row
    // gathered, its gate, up and down, SiLU, gate * up, its weight and the scatter-add.
    let (t, out) = decode_table(tmp.path(), "qwen3moe");
    let used = 2;
    assert_eq!(calls(&t, "matmul"), (4 + 1 + 3 * used) * layers, "{out}");
    assert_eq!(
        calls(&t, "softmax"),
        2 * layers,
        "attention and router: {out}"
    );
    for k in ["moe_gather", "moe_scatter", "activation"] {
        assert_eq!(calls(&t, k), used * layers, "{k}: {out}");
    }
    assert_eq!(
        calls(&t, "mul"),
        2 * used * layers,
        "gate * up and weight: {out}"
    );
    assert_eq!(calls(&t, "rms_norm"), 4 * layers + 1, "{out}");
    for op in ["ffn_gate_inp (f32)", "ffn_down_exps (q8_0)"] {
        assert!(t.rows.iter().any(|r| r.op.contains(op)), "{op}: {out}");
    }
    // The blocks that are not Llama's, a decode token through each fixture's two blocks:
    // GLM-4: q/k/v biases, four RmsNorms a block (post-attention and post-MLP too), RoPE on
    // half the head (cut out and put back: two copies a call); Phi-2: six biased matmuls
    // (q, k, v, o, up, down), one LayerNorm a block, attention + MLP + residual, GELU, the
    // output's bias; LFM2: block 0 a short convolution (in_proj, out_proj, B * x, C * conv),
    // block 1 attention with q/k norms, a SwiGLU each.
    let glm4: &[(&str, usize)] = &[
        ("matmul", 7 * layers),
        ("add", 5 * layers),
        ("rms_norm", 4 * layers + 1),
        ("layer_norm", 0),
        ("kv_cache", layers),
        ("activation", layers),
        ("mul", layers),
        ("rope", 2 * layers),
    ];
    let phi2: &[(&str, usize)] = &[
        ("matmul", 6 * layers),
        ("add", 8 * layers + 1),
        ("rms_norm", 0),
        ("layer_norm", layers + 1),
        ("kv_cache", layers),
        ("activation", layers),
        ("mul", 0),
    ];
    let lfm2: &[(&str, usize)] = &[
        ("matmul", 5 + 7),
        ("add", 2 * layers),
        ("rms_norm", 2 + 4 + 1),
        ("ssm_conv", 1),
        ("kv_cache", 1),
        ("attn_qk", 1),
        ("activation", layers),
        ("mul", 3 + 1),
    ];
    for (fixture, counts, rope, act) in [
        ("glm4", glm4, "rope (norm)", "silu"),
        ("phi2", phi2, "rope (neox)", "gelu (tanh)"),
        ("lfm2", lfm2, "rope (neox)", "silu"),
    ] {
        let (t, out) = decode_table(tmp.path(), fixture);
        for (kind, n) in counts {
            assert_eq!(calls(&t, kind), *n, "{fixture} {kind}: {out}");
        }
        assert_eq!(calls(&t, "lm_head"), 1, "{fixture}: {out}");
        assert!(
            t.rows.iter().any(|r| r.kind == "rope" && r.op == rope),
            "{fixture}: {out}"
        );
        assert!(t.rows.iter().any(|r| r.op == act), "{fixture}: {out}");
        assert!(
            t.rows.iter().all(|r| r.seq_us.is_some()),
            "{fixture}: {out}"
        );
    }
}

#[test]
fn an_injected_slow_op_is_named_and_an_unchanged_rerun_does_not_name_it() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let shape = ["--scenario", "decode", "--depth", "16"];
    let (base, _) = table(dir, "base", &shape, None);
    let base_json = dir.join("base.json");
    let b = base_json.to_str().unwrap();

    let mut args = shape.to_vec();
    args.extend_from_slice(&["--base", b]);
    let (slow, out) = table(dir, "slow", &args, Some(SLOW_NORM));
    assert_eq!(slow.injected.as_deref(), Some(SLOW_NORM));
    let line = out
        .lines()
        .find(|l| l.starts_with("op whose time grew most"))
        .unwrap_or_else(|| panic!("no regression line:\n{out}"));
    assert!(
        line.contains(": rms_norm "),
        "the injected op must be named: {line}"
    );
    assert!(slow.step_us > base.step_us, "{out}");

    let (_, out) = table(dir, "same", &args, None);
    let line = out
        .lines()
        .find(|l| l.starts_with("op whose time grew most"))
        .unwrap_or_else(|| panic!("no regression line:\n{out}"));
    assert!(
        !line.contains("rms_norm"),
        "an unchanged rerun must not name the op: {line}"
    );
}

#[test]
fn the_paired_regression_report_names_the_slowed_op() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_modelbench");
    let o = modelbench(
        tmp.path(),
        &[
            "compare",
            exe,
            exe,
            "--paired",
            "--paired-model",
            MODEL,
            "--paired-suite",
            "short",
            "--pairs",
            "8",
            "--blocks",
            "2",
            "--threshold",
            "10%",
            "--inject",
            SLOW_NORM,
        ],
        None,
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("per-op profile of short-decode:"))
        .unwrap_or_else(|| panic!("no per-op profile of the decode regression:\n{out}"));
    assert!(line.contains(": rms_norm "), "{line}");
    // Saved beside the comparison.
    let saved = out
        .lines()
        .find_map(|l| l.strip_prefix("saved "))
        .unwrap_or_else(|| panic!("{out}"));
    let dir = Path::new(saved.trim());
    let report = std::fs::read_to_string(dir.join("ops-regression.md")).unwrap();
    assert!(report.contains("rms_norm"), "{report}");
    assert!(dir.join("ops-short-decode-base.json").is_file());
    assert!(dir.join("ops-short-decode-new.md").is_file());
    // A flame graph of each side where perf can sample (a software clock: no hardware
    // counters needed); otherwise the line says why not.
    let flame = out
        .lines()
        .find(|l| l.starts_with("flame graphs of short-decode:"))
        .unwrap_or_else(|| panic!("no flame graph line:\n{out}"));
    if flame.contains("not available (") {
        assert!(
            !perf_samples_here(),
            "perf samples on this machine, yet: {flame}"
        );
    } else {
        for side in ["base", "new"] {
            let svg = std::fs::read_to_string(dir.join(format!("flame-short-decode-{side}.svg")))
                .unwrap_or_else(|e| panic!("{side}: {e}: {flame}"));
            assert!(svg.contains("<title>all (") && svg.contains("samples, 100.00%)"));
            assert!(dir
                .join(format!("flame-short-decode-{side}.folded"))
                .is_file());
        }
        assert!(
            flame.contains("grew most") || flame.contains("no function"),
            "{flame}"
        );
    }
}

/// Whether `perf record -e cpu-clock` works on this machine.
fn perf_samples_here() -> bool {
    let tmp = tempfile::tempdir().unwrap();
    std::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o"])
        .arg(tmp.path().join("p.data"))
        .args(["--", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases: [(&[&str], &str); 6] = [
        (
            &["ops", "--model", MODEL, "--scenario", "medium"],
            "--scenario \"medium\"",
        ),
        (&["ops", "--model", "fixture:llama"], "not a GGUF model"),
        (
            &[
                "ops",
                "--model",
                "gguf:fixture:glm4?impl=candle-transformers",
            ],
            "whose forward is not traced",
        ),
        (
            &[
                "ops",
                "--model",
                "gguf:fixture:qwen2?impl=candle-transformers",
            ],
            "drop ?impl= or use ?impl=modelbench",
        ),
        (
            &[
                "ops",
                "--model",
                MODEL,
                "--scenario",
                "prefill",
                "--depth",
                "3",
            ],
            "--depth applies to --scenario decode",
        ),
        (
            &[
                "ops",
                "--model",
                MODEL,
                "--peer",
                "llama.cpp",
                "--peer-program",
                "/nonexistent/test-backend-ops",
            ],
            "scripts/build-llama-cpp.sh",
        ),
    ];
    for (args, want) in cases {
        let o = modelbench(dir, args, None);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: no half-written table");
    }
}

#[test]
fn ggml_times_the_same_ops_where_test_backend_ops_is_built() {
    let _one = serial();
    let Some(prog) = common::llama_cpp_program("test-backend-ops") else {
        return;
    };
    assert_eq!(prog, modelbench::workloads::ops::default_backend_ops());
    let tmp = tempfile::tempdir().unwrap();
    let (t, out) = table(
        tmp.path(),
        "peer",
        &[
            "--scenario",
            "decode",
            "--depth",
            "16",
            "--peer",
            "llama.cpp",
        ],
        None,
    );
    let with: Vec<_> = t.rows.iter().filter(|r| r.ggml_us.is_some()).collect();
    assert!(
        with.iter().any(|r| r.kind == "matmul") && with.iter().any(|r| r.kind == "rms_norm"),
        "{out}"
    );
    assert!(out.contains("not in ggml's perf cases"), "{out}");
    let last = out.trim_end().lines().last().unwrap();
    assert!(last.starts_with("largest gap ("), "{out}");
}
