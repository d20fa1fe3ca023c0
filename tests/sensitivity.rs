//! The measured sensitivity of the KLD gate (issue 61 item 4): held-out deviations, small
//! plausible bugs that no fixture was shaped against ([`Wrong::HELD_OUT`]: attention scale
//! +1%, RoPE base +0.5%, RoPE tables in f16, RMS epsilon x10, one layer's norm x1.02, one
//! head zeroed, gate and up exchanged, one MLP channel zeroed), injected into the project's
//! GGUF implementation, each judged by the same gate against llama.cpp as every verdict
//! (`workloads::kld`, limits unchanged), on every fixture the implementation runs; beside the
//! unchanged implementation, which must pass.
//!
//! `cargo test --test sensitivity -- --ignored write_sensitivity_table` regenerates
//! docs/quality-sensitivity.md (every row measured, the ones that PASS listed with their KLD).
//! The test CI runs, `held_out_deviations_fail_on_the_llama_fixture`, judges the Llama
//! fixture: unchanged PASSED, and every deviation the table shows caught there FAILED.

mod common;

use std::fmt::Write as _;

use modelbench::judge::kld::{Check, KldStats};
use modelbench::models::families::GgufImpl;
use modelbench::models::quantized::llama::Wrong;
use modelbench::workloads::kld::KldVerdict;
use modelbench::workloads::kld_full::FullVerdict;

#[path = "families/kld_gate.rs"]
mod kld_gate;
use kld_gate::*;

const OWN: Option<GgufImpl> = Some(GgufImpl::Modelbench);

/// The fixtures the project's generic decoder (`quantized::llama`) runs; Gemma 3 has its own
/// (`quantized::gemma3`), without the deviations.
const FIXTURES: [&str; 10] = [
    "llama", "llama3", "mixtral", "qwen2", "qwen3", "qwen3moe", "phi3", "glm4", "phi2", "lfm2",
];

/// The real files (scripts/fetch-offline-models.sh) the project's generic decoder runs: the
/// table's last columns (the Gemma 3 270M runs the project's Gemma 3 decoder, without the
/// deviations).
const REAL: [(&str, &str); 2] = [
    (
        "SmolLM2-135M",
        "gguf:modelbench-offline/SmolLM2-135M-Instruct-GGUF",
    ),
    (
        "Qwen2.5-Coder-0.5B",
        "gguf:modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF",
    ),
];

/// A real file's path, or None after the skip rule (not installed).
fn real_file(label: &str) -> Option<std::path::PathBuf> {
    use modelbench::models::sources::ModelRef;
    use modelbench::models::Weights;
    let r = ModelRef::parse(label).unwrap();
    match modelbench::engine::scenario::prepare(label, &r, &[]) {
        Ok(res) => match res.weights {
            Weights::Gguf(p) => Some(p),
            other => panic!("{label}: not a GGUF ({other:?})"),
        },
        Err(e) => {
            common::skip_real_model(format!("{label}: {e}"));
            None
        }
    }
}

/// One cell: FAILED/PASSED, the mean KLD and what failed; "no effect" when the deviated
/// model's figures are bit-identical to the unchanged one's (the family lacks the piece).
fn cell(v: &KldVerdict, unchanged: &KldVerdict) -> String {
    cell_of((&v.ours, &v.checks, v.passed), &unchanged.ours)
}

/// One cell of the full-precision table, in the same words.
fn full_cell(v: &FullVerdict, unchanged: &FullVerdict) -> String {
    cell_of((&v.ours, &v.checks, v.passed), &unchanged.ours)
}

fn cell_of((ours, checks, passed): (&KldStats, &[Check], bool), unchanged: &KldStats) -> String {
    if ours.mean_kld.to_bits() == unchanged.mean_kld.to_bits()
        && ours.ppl.to_bits() == unchanged.ppl.to_bits()
    {
        return "no effect (not in this family)".into();
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    if passed {
        format!("**PASSED** (KLD {:.2e})", ours.mean_kld)
    } else {
        format!("FAILED (KLD {:.2e}; {})", ours.mean_kld, failed.join(", "))
    }
}

/// The gate on `fixture`: unchanged, then with each held-out deviation.
fn judge(fixture: &str) -> (KldVerdict, Vec<(Wrong, KldVerdict)>) {
    let (path, r) = reference(fixture);
    judge_file(&path, &r)
}

/// The gate on the GGUF at `path` against its reference `r`: unchanged, then each deviation.
fn judge_file(
    path: &std::path::Path,
    r: &modelbench::workloads::kld::KldReference,
) -> (KldVerdict, Vec<(Wrong, KldVerdict)>) {
    let (path, r) = (path.to_path_buf(), r);
    let unchanged = gate(&path, r, OWN, None);
    let wrong = Wrong::HELD_OUT
        .iter()
        .map(|&w| (w, gate(&path, r, OWN, Some(w))))
        .collect();
    (unchanged, wrong)
}

#[test]
#[ignore = "regenerates docs/quality-sensitivity.md (about 25 minutes on 2 cores)"]
fn write_sensitivity_table() {
    if !have_llama_cpp() {
        return;
    }
    let t0 = std::time::Instant::now();
    let mut md = String::from(
        "# The KLD gate's measured sensitivity\n\n[Back to docs/quality.md](quality.md)\n\n\
         Written by `cargo test --test sensitivity -- --ignored write_sensitivity_table` \
         (tests/sensitivity.rs): each held-out deviation (issue 61 item 4: small, plausible bugs \
         that no fixture was shaped against) injected into the project's GGUF implementation \
         (`quantized::llama::Wrong`), judged by `verify`'s gate against llama.cpp on each fixture \
         that implementation runs (limits unchanged: llama.cpp against itself, floor 1e-4). \
         A deviation that PASSES is a blind spot of that fixture, listed with its KLD; \
         \"no effect\" means the figures are bit-identical to the unchanged model's (the family \
         lacks the piece: no SwiGLU gate in Phi-2, experts instead of one MLP, a convolution as \
         layer 0).\n\n",
    );
    let reals: Vec<(&str, std::path::PathBuf)> = REAL
        .iter()
        .filter_map(|(name, label)| real_file(label).map(|p| (*name, p)))
        .collect();
    let _ = write!(md, "| deviation |");
    for f in FIXTURES {
        let _ = write!(md, " {f} |");
    }
    for (name, _) in &reals {
        let _ = write!(md, " **{name}** (real) |");
    }
    md.push_str("\n|---|");
    for _ in 0..FIXTURES.len() + reals.len() {
        md.push_str("---|");
    }
    md.push('\n');
    // The real files first (their references may have to be made: a failure shows early).
    let real_judged: Vec<(KldVerdict, Vec<(Wrong, KldVerdict)>)> = reals
        .iter()
        .map(|(_, p)| judge_file(p, &reference_of(p)))
        .collect();
    let mut judged: Vec<(KldVerdict, Vec<(Wrong, KldVerdict)>)> =
        FIXTURES.iter().map(|f| judge(f)).collect();
    judged.extend(real_judged);
    md.push_str("| unchanged (must pass) |");
    for (u, _) in &judged {
        let _ = write!(
            md,
            " {} (KLD {:.2e}) |",
            if u.passed { "PASSED" } else { "**FAILED**" },
            u.ours.mean_kld
        );
    }
    md.push('\n');
    for (i, w) in Wrong::HELD_OUT.iter().enumerate() {
        let _ = write!(md, "| {} |", w.describe());
        for (u, ws) in &judged {
            let _ = write!(md, " {} |", cell(&ws[i].1, u));
        }
        md.push('\n');
    }
    let caught: usize = judged
        .iter()
        .flat_map(|(u, ws)| ws.iter().map(move |(_, v)| (u, v)))
        .filter(|(u, v)| !v.passed && !cell(v, u).starts_with("no effect"))
        .count();
    let applicable: usize = judged
        .iter()
        .flat_map(|(u, ws)| ws.iter().map(move |(_, v)| (u, v)))
        .filter(|(u, v)| !cell(v, u).starts_with("no effect"))
        .count();
    let _ = write!(
        md,
        "\n{caught} of {applicable} applicable (file, deviation) cells FAILED; generated in {:.0} s \
         on {}.\n",
        t0.elapsed().as_secs_f64(),
        modelbench::measure::hardware::context().hardware.describe()
    );
    let out = root().join("docs/quality-sensitivity.md");
    std::fs::write(&out, md).unwrap();
    eprintln!("wrote {}", out.display());
}

/// The gate on the Llama fixture both ways: the unchanged implementation PASSES, and the
/// held-out deviations the table shows caught on it FAIL (the blind spots of this fixture,
/// attention scale +1%, RoPE base +0.5% and RoPE in f16, are in the table, not asserted).
#[test]
fn held_out_deviations_fail_on_the_llama_fixture() {
    if !have_llama_cpp() {
        return;
    }
    let (path, r) = reference("llama");
    let unchanged = gate(&path, &r, OWN, None);
    assert!(unchanged.passed, "the unchanged implementation must pass");
    for w in [
        Wrong::EpsTimes10,
        Wrong::NormL0Up2Pct,
        Wrong::HeadZero,
        Wrong::GateUpSwap,
        Wrong::MlpChannelZero,
    ] {
        let v = gate(&path, &r, OWN, Some(w));
        assert!(
            !v.passed,
            "{}: passes the gate on the Llama fixture ({})",
            w.describe(),
            cell(&v, &unchanged)
        );
    }
}

/// The full-precision gate on one file: llama.cpp against itself, the unchanged
/// implementation, each held-out deviation.
fn judge_full(gguf: &std::path::Path) -> (FullVerdict, Vec<FullVerdict>) {
    let r = full_reference(gguf);
    let unchanged = full_gate(&r, None);
    let wrong = Wrong::HELD_OUT
        .iter()
        .map(|&w| full_gate(&r, Some(w)))
        .collect();
    (unchanged, wrong)
}

#[test]
#[ignore = "regenerates docs/quality-full-precision.md (about 40 minutes on 2 cores)"]
fn write_full_precision_table() {
    if !have_llama_cpp() || common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let t0 = std::time::Instant::now();
    let reals: Vec<(&str, std::path::PathBuf)> = REAL
        .iter()
        .filter_map(|(name, label)| real_file(label).map(|p| (*name, p)))
        .collect();
    let mut files: Vec<(String, std::path::PathBuf)> = FIXTURES
        .iter()
        .map(|f| {
            (
                f.to_string(),
                modelbench::models::sources::gguf_fixture_named(f).unwrap(),
            )
        })
        .collect();
    files.extend(
        reals
            .iter()
            .map(|(n, p)| (format!("**{n}** (real)"), p.clone())),
    );
    let judged: Vec<(FullVerdict, Vec<FullVerdict>)> =
        files.iter().map(|(_, p)| judge_full(p)).collect();
    let mut md = String::from(
        "# The KLD gate at full precision: measured sensitivity\n\n[Back to docs/quality.md](quality.md)\n\n\
         Written by `cargo test --release --test sensitivity -- --ignored write_full_precision_table` \
         (tests/sensitivity.rs). Each file is rewritten by llama.cpp with every tensor in F32 \
         (`llama-logits --to-f32`: ggml dequantizes); llama.cpp's f32 logits over the whole \
         vocabulary (scripts/llama-logits.cpp; f32 KV cache, flash attention off) at the positions \
         llama-perplexity scores on the held-out text (fixtures/corpus/kjv-ruth-1-4.txt, 2 chunks \
         of 512) are the reference, and the KLD is exact. The limits are llama.cpp against itself \
         under the perturbations legitimate for an f32 implementation (the rows marked *limit \
         source*), 100x the largest of each KLD figure and 10x of the linear ones \
         (`judge::kld::thresholds_full`); the half-precision \
         rows say what one f16 step costs and are never used for limits. The project's GGUF \
         implementation (`quantized::llama`) runs the same F32 file, unchanged and with each \
         held-out deviation (`quantized::llama::Wrong`). A deviation that PASSES is a blind spot, \
         listed with its KLD; \"no effect\" means the figures are bit-identical to the unchanged \
         model's (the family lacks the piece).\n\n| |",
    );
    for (n, _) in &files {
        let _ = write!(md, " {n} |");
    }
    md.push_str("\n|---|");
    for _ in &files {
        md.push_str("---|");
    }
    md.push('\n');
    let (u0, _) = &judged[0];
    for (k, (name, _)) in u0.llama_cpp_self.iter().enumerate() {
        let _ = write!(md, "| llama.cpp: {name} (*limit source*) |");
        for (u, _) in &judged {
            let s = &u.llama_cpp_self[k].1;
            let _ = write!(md, " KLD {:.2e}, p99.9 {:.2e} |", s.mean_kld, s.kld_p999);
        }
        md.push('\n');
    }
    for (k, (name, _)) in u0.half_precision.iter().enumerate() {
        let _ = write!(md, "| llama.cpp: {name} (half precision, context) |");
        for (u, _) in &judged {
            let s = &u.half_precision[k].1;
            let _ = write!(
                md,
                " KLD {:.2e}, top-1 {:.2}% |",
                s.mean_kld, s.same_top1_percent
            );
        }
        md.push('\n');
    }
    md.push_str("| **limit** (mean KLD) |");
    for (u, _) in &judged {
        let _ = write!(md, " <= {:.2e} |", u.thresholds.max_mean_kld);
    }
    md.push_str("\n| unchanged (must pass) |");
    for (u, _) in &judged {
        let _ = write!(
            md,
            " {} (KLD {:.2e}) |",
            if u.passed { "PASSED" } else { "**FAILED**" },
            u.ours.mean_kld
        );
    }
    md.push('\n');
    for (i, w) in Wrong::HELD_OUT.iter().enumerate() {
        let _ = write!(md, "| {} |", w.describe());
        for (u, ws) in &judged {
            let _ = write!(md, " {} |", full_cell(&ws[i], u));
        }
        md.push('\n');
    }
    let cells = judged
        .iter()
        .flat_map(|(u, ws)| ws.iter().map(move |v| full_cell(v, u)));
    let (mut caught, mut applicable) = (0, 0);
    for c in cells {
        if !c.starts_with("no effect") {
            applicable += 1;
            caught += usize::from(c.starts_with("FAILED"));
        }
    }
    let passed = judged.iter().filter(|(u, _)| u.passed).count();
    let _ = write!(
        md,
        "\nUnchanged: {passed} of {} files PASSED. Deviations: {caught} of {applicable} applicable \
         (file, deviation) cells FAILED. Generated in {:.0} s on {}.\n",
        judged.len(),
        t0.elapsed().as_secs_f64(),
        modelbench::measure::hardware::context().hardware.describe()
    );
    let out = root().join("docs/quality-full-precision.md");
    std::fs::write(&out, md).unwrap();
    eprintln!("wrote {}", out.display());
}

/// The full-precision gate on the Llama fixture both ways (issue 61 items 2-3): on
/// llama.cpp's F32 rewrite, with llama.cpp's f32 logits as the reference, the unchanged
/// implementation PASSES and every held-out deviation FAILS, including the three the 16-bit
/// gate cannot see on this fixture (attention scale +1%, RoPE base +0.5%, RoPE tables in f16).
#[test]
fn full_precision_gate_catches_every_held_out_deviation_on_the_llama_fixture() {
    if !have_llama_cpp() || common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let gguf = modelbench::models::sources::gguf_fixture_named("llama").unwrap();
    let r = full_reference(&gguf);
    let unchanged = full_gate(&r, None);
    assert!(
        unchanged.passed,
        "the unchanged implementation must pass: {:?}",
        unchanged.checks
    );
    for w in Wrong::HELD_OUT {
        let v = full_gate(&r, Some(w));
        assert!(
            !v.passed,
            "{}: passes the full-precision gate on the Llama fixture ({})",
            w.describe(),
            full_cell(&v, &unchanged)
        );
    }
}

/// Phi-2's GELU, like for like (issue 61): llama.cpp's CPU backend computes GELU from an f16
/// table (ggml-cpu/vec.h, `GGML_GELU_FP16`), and the table alone moves its logits far past its
/// own f32 noise. The full-precision gate therefore runs the project's Phi-2 with ggml's table
/// (`Gelu::GgmlF16`): it PASSES. candle-transformers' `quantized_phi`, whose exact f32 GELU
/// cannot be switched, FAILS by the table's effect (measured before the change: the project's
/// Phi-2 read the same 6.0e-10 against a limit of 1.7e-12), so the gate still sees a
/// difference of that size.
#[test]
fn phi2_passes_the_full_precision_gate_like_for_like_and_an_exact_gelu_is_seen() {
    if !have_llama_cpp() || common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let gguf = modelbench::models::sources::gguf_fixture_named("phi2").unwrap();
    let r = full_reference(&gguf);
    let ours = full_gate_with(&r, GgufImpl::Modelbench, None);
    assert!(
        ours.ggml_gelu,
        "the project's Phi-2 did not take ggml's GELU"
    );
    assert!(
        ours.passed,
        "the project's Phi-2 with ggml's GELU: {:?}",
        ours.checks
    );
    let candle = full_gate_with(&r, GgufImpl::CandleTransformers, None);
    assert!(!candle.ggml_gelu);
    assert!(
        !candle.passed,
        "candle's quantized_phi (exact GELU) passes at full precision: mean KLD {:.3e}, limit {:.3e}",
        candle.ours.mean_kld,
        candle.thresholds.max_mean_kld
    );
    eprintln!(
        "Phi-2: ours with ggml's GELU {:.3e}, candle's exact GELU {:.3e}, limit {:.3e}",
        ours.ours.mean_kld, candle.ours.mean_kld, candle.thresholds.max_mean_kld
    );
}

/// candle-transformers' `quantized_qwen3` computes RoPE from f16 tables (docs/models.md): the
/// 16-bit gate cannot see it on the Qwen3 fixture (KLD 45x under its limit); at full
/// precision it FAILS, while the project's implementation of the same file PASSES; and the
/// same file with `general.dtype = 0` (candle's switch to f32 tables) PASSES on candle too.
#[test]
fn candle_quantized_qwen3_fails_the_full_precision_gate_and_ours_passes() {
    if !have_llama_cpp() || common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let gguf = modelbench::models::sources::gguf_fixture_named("qwen3").unwrap();
    let r = full_reference(&gguf);
    let ours = full_gate_with(&r, GgufImpl::Modelbench, None);
    assert!(ours.passed, "the project's Qwen3: {:?}", ours.checks);
    let candle = full_gate_with(&r, GgufImpl::CandleTransformers, None);
    assert!(
        !candle.passed,
        "candle's quantized_qwen3 (f16 RoPE tables) passes at full precision: mean KLD {:.3e}, limit {:.3e}",
        candle.ours.mean_kld,
        candle.thresholds.max_mean_kld
    );
    eprintln!(
        "candle quantized_qwen3: mean KLD {:.3e} = {:.0}x the limit {:.3e}; ours {:.3e}",
        candle.ours.mean_kld,
        candle.ours.mean_kld / candle.thresholds.max_mean_kld,
        candle.thresholds.max_mean_kld,
        ours.ours.mean_kld
    );
    // The cause: without `general.dtype = 0` (llama.cpp's F32 rewrite does not write that
    // key; candle reads nothing else) candle builds its RoPE tables in f16, positions and
    // their products with the frequencies included, so an angle is rounded to f16 before its
    // sine and cosine (at position 500 a step of 0.25 rad). The same F32 file with the key:
    let dir = tempfile::tempdir().unwrap();
    let mut r = r;
    r.f32_gguf = common::rewrite_file(&r.f32_gguf, dir.path(), |md, _| {
        md.insert(
            "general.dtype".into(),
            candle_core::quantized::gguf_file::Value::U32(0),
        );
    });
    let f32_tables = full_gate_with(&r, GgufImpl::CandleTransformers, None);
    eprintln!(
        "candle quantized_qwen3 with general.dtype = 0 (f32 RoPE tables): mean KLD {:.3e} ({}), limit {:.3e}",
        f32_tables.ours.mean_kld,
        if f32_tables.passed { "PASSED" } else { "FAILED" },
        f32_tables.thresholds.max_mean_kld
    );
    // Measured 2026-11-29: 3.1e-4 without the key, 3.3e-12 with it (PASSED; ours 3.3e-12):
    // the f16 tables are the whole deviation.
    assert!(
        f32_tables.passed && f32_tables.ours.mean_kld < candle.ours.mean_kld / 100.0,
        "f32 tables did not remove candle's deviation: {:.3e} ({:?}) against {:.3e}",
        f32_tables.ours.mean_kld,
        f32_tables.checks,
        candle.ours.mean_kld
    );
}
