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
use modelbench::workloads::kld_full::{FullReference, FullVerdict, RefGelu};

#[path = "families/kld_gate.rs"]
mod kld_gate;
use kld_gate::*;

const OWN: Option<GgufImpl> = Some(GgufImpl::Modelbench);

/// Every GGUF fixture: the project's generic decoder (`quantized::llama`) runs them but Gemma
/// 3's, which runs its own (`quantized::gemma3`).
const FIXTURES: [&str; 12] = [
    "llama",
    "llama3",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "phi3",
    "glm4",
    "phi2",
    "lfm2",
    "starcoder2",
    "gemma3",
];

/// The real files (scripts/fetch-offline-models.sh): the table's last columns (the Gemma 3
/// 270M on the project's Gemma 3 decoder, the others on the generic one).
const REAL: [(&str, &str); 3] = [
    (
        "SmolLM2-135M",
        "gguf:modelbench-offline/SmolLM2-135M-Instruct-GGUF",
    ),
    (
        "Qwen2.5-Coder-0.5B",
        "gguf:modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF",
    ),
    (
        "Gemma-3-270M",
        "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF",
    ),
];

/// The table's deviations in its order: the held-out ones, then the ones the issue lists that
/// the fixtures were shaped against as controls.
fn deviations() -> Vec<Wrong> {
    Wrong::HELD_OUT
        .iter()
        .chain(&Wrong::CONTROLS_LISTED)
        .copied()
        .collect()
}

/// A deviation's row label (a control says so).
fn row_label(w: Wrong) -> String {
    if Wrong::CONTROLS_LISTED.contains(&w) {
        format!(
            "{} (a control the fixtures were shaped against)",
            w.describe()
        )
    } else {
        w.describe().to_string()
    }
}

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
    let wrong = deviations()
        .into_iter()
        .map(|w| (w, gate(&path, r, OWN, Some(w))))
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
    for (i, w) in deviations().into_iter().enumerate() {
        let _ = write!(md, "| {} |", row_label(w));
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
/// implementation, each deviation, and the right model computed other legitimate ways.
fn judge_full(name: &str, gguf: &std::path::Path) -> Judged {
    let r = full_reference(gguf);
    let unchanged = full_gate(&r, None);
    let wrong = deviations()
        .into_iter()
        .map(|w| full_gate(&r, Some(w)))
        .collect();
    let legit = LEGITIMATE
        .iter()
        .map(|&(row, how)| legitimate(name, &r, row, how))
        .collect();
    (unchanged, wrong, legit)
}

type Judged = (FullVerdict, Vec<FullVerdict>, Vec<Legit>);

/// The right model computed another legitimate way: its verdict (or why it could not run) and,
/// where the way is known not to be right on this file, what is wrong in it (said in the cell;
/// such a cell is not counted among the ones that must pass).
struct Legit {
    verdict: Result<FullVerdict, String>,
    known: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum Way {
    /// The project's implementation, the context forwarded in pieces of this many tokens.
    Pieces(usize),
    /// candle-transformers' implementation of the family.
    Candle,
}

/// The legitimate variants' rows (each must pass): the same right model computed otherwise.
/// Another thread count is not here: it is bit-identical on every file (the output probe's
/// table in docs/verdicts.md), and a process fixes its thread pool at first use.
const LEGITIMATE: [(&str, Way); 3] = [
    ("the context as single-token decode steps", Way::Pieces(1)),
    ("the context in chunks of 64 tokens", Way::Pieces(64)),
    ("candle-transformers' implementation", Way::Candle),
];

/// What is known to be wrong in candle-transformers' implementation on file `name` (measured
/// and documented: docs/quality.md, docs/models.md).
fn candle_known(name: &str) -> Option<&'static str> {
    match name {
        "qwen3" => Some("candle's RoPE tables in f16 (docs/quality.md)"),
        n if n.contains("Gemma") || n == "gemma3" => {
            Some("candle's MLP applies SiLU, not GELU (docs/models.md)")
        }
        _ => None,
    }
}

fn legitimate(name: &str, r: &FullReference, row: &str, way: Way) -> Legit {
    use modelbench::models::sources::gguf::load_with;
    let n_ctx = Some(r.positions.n_ctx);
    let dev = candle_core::Device::Cpu;
    match way {
        Way::Pieces(piece) => {
            let m = load_with(&r.f32_gguf, OWN, &dev, n_ctx).unwrap();
            let label = format!("{} [{row}]", m.meta().provenance.implementation);
            let mut m = InPieces { m, piece };
            Legit {
                verdict: Ok(full_gate_on(r, &mut m, &label)),
                known: None,
            }
        }
        Way::Candle => {
            match load_with(&r.f32_gguf, Some(GgufImpl::CandleTransformers), &dev, n_ctx) {
                Ok(mut m) => {
                    let label = m.meta().provenance.implementation.clone();
                    Legit {
                        verdict: Ok(full_gate_on(r, m.as_mut(), &label)),
                        known: candle_known(name),
                    }
                }
                Err(e) => Legit {
                    verdict: Err(e.to_string()),
                    known: None,
                },
            }
        }
    }
}

/// A legitimate variant's cell.
fn legit_cell(l: &Legit, unchanged: &FullVerdict) -> String {
    match (&l.verdict, l.known) {
        (Err(e), _) => format!("not run: {}", e.lines().next().unwrap_or("")),
        (Ok(v), None) => full_cell(v, unchanged)
            .replace("no effect (not in this family)", "PASSED (bit-identical)"),
        (Ok(v), Some(k)) => format!(
            "{} (KLD {:.2e}; a known deviation: {k})",
            if v.passed { "PASSED" } else { "FAILED" },
            v.ours.mean_kld
        ),
    }
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
    let judged: Vec<Judged> = files.iter().map(|(n, p)| judge_full(n, p)).collect();
    let mut md = String::from(
        "# The KLD gate at full precision: measured sensitivity\n\n[Back to docs/quality.md](quality.md)\n\n\
         Written by `cargo test --release --test sensitivity -- --ignored write_full_precision_table` \
         (tests/sensitivity.rs). Each file is rewritten by llama.cpp with every tensor in F32 \
         (`llama-logits --to-f32`: ggml dequantizes); llama.cpp's f32 logits over the whole \
         vocabulary (scripts/llama-logits.cpp linked against ggml's CPU library built without \
         `GGML_GELU_FP16`, so GELU is computed in f32 as the implementations compute it in every \
         benchmark: `llama-logits-exact-gelu`; f32 KV cache, flash attention off) at the positions \
         llama-perplexity scores on the held-out text (fixtures/corpus/kjv-ruth-1-4.txt, 2 chunks \
         of 512) are the reference, and the KLD is exact. The limits are llama.cpp against itself \
         under the perturbations legitimate for an f32 implementation (the rows marked *limit \
         source*), 100x the largest of each KLD figure and 10x of the linear ones \
         (`judge::kld::thresholds_full`); the half-precision \
         rows say what one f16 step costs and are never used for limits. The project's GGUF \
         implementation (`quantized::llama`) runs the same F32 file, unchanged and with each \
         deviation (`quantized::wrong::Wrong`; Gemma 3's fixture and the Gemma 3 270M run the \
         project's Gemma 3 decoder, the others the generic one). A deviation that PASSES is a blind spot, \
         listed with its KLD; \"no effect\" means the figures are bit-identical to the unchanged \
         model's (the family lacks the piece). The *legitimate* rows are the right model \
         computed another way and must PASS (another thread count is bit-identical on every \
         file: the output probe's table in docs/verdicts.md); a candle-transformers cell marked \
         \"a known deviation\" is an implementation measured wrong elsewhere, not counted.\n\n| |",
    );
    for (n, _) in &files {
        let _ = write!(md, " {n} |");
    }
    md.push_str("\n|---|");
    for _ in &files {
        md.push_str("---|");
    }
    md.push('\n');
    let (u0, _, _) = &judged[0];
    for (k, (name, _)) in u0.llama_cpp_self.iter().enumerate() {
        let _ = write!(md, "| llama.cpp: {name} (*limit source*) |");
        for (u, _, _) in &judged {
            let s = &u.llama_cpp_self[k].1;
            let _ = write!(md, " KLD {:.2e}, p99.9 {:.2e} |", s.mean_kld, s.kld_p999);
        }
        md.push('\n');
    }
    for (k, (name, _)) in u0.half_precision.iter().enumerate() {
        let _ = write!(md, "| llama.cpp: {name} (half precision, context) |");
        for (u, _, _) in &judged {
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
    for (u, _, _) in &judged {
        let _ = write!(md, " <= {:.2e} |", u.thresholds.max_mean_kld);
    }
    md.push_str("\n| unchanged (must pass) |");
    for (u, _, _) in &judged {
        let _ = write!(
            md,
            " {} (KLD {:.2e}) |",
            if u.passed { "PASSED" } else { "**FAILED**" },
            u.ours.mean_kld
        );
    }
    md.push('\n');
    let (mut legit_passed, mut legit_counted) = (0, 0);
    for (i, (row, _)) in LEGITIMATE.iter().enumerate() {
        let _ = write!(md, "| *legitimate*: {row} (must pass) |");
        for (u, _, ls) in &judged {
            let c = legit_cell(&ls[i], u);
            if ls[i].known.is_none() && ls[i].verdict.is_ok() {
                legit_counted += 1;
                legit_passed += usize::from(c.starts_with("PASSED") || c.starts_with("**PASSED"));
            }
            let _ = write!(md, " {c} |");
        }
        md.push('\n');
    }
    for (i, w) in deviations().into_iter().enumerate() {
        let _ = write!(md, "| {} |", row_label(w));
        for (u, ws, _) in &judged {
            let _ = write!(md, " {} |", full_cell(&ws[i], u));
        }
        md.push('\n');
    }
    let cells = judged
        .iter()
        .flat_map(|(u, ws, _)| ws.iter().map(move |v| full_cell(v, u)));
    let (mut caught, mut applicable) = (0, 0);
    for c in cells {
        if !c.starts_with("no effect") {
            applicable += 1;
            caught += usize::from(c.starts_with("FAILED"));
        }
    }
    let passed = judged.iter().filter(|(u, _, _)| u.passed).count();
    let _ = write!(
        md,
        "\nUnchanged: {passed} of {} files PASSED. Legitimate variants: {legit_passed} of \
         {legit_counted} cells PASSED. Deviations: {caught} of {applicable} applicable \
         (file, deviation) cells FAILED. Generated in {:.0} s on {}.\n",
        judged.len(),
        t0.elapsed().as_secs_f64(),
        modelbench::measure::hardware::context().hardware.describe()
    );
    let out = root().join("docs/quality-full-precision.md");
    std::fs::write(&out, md).unwrap();
    eprintln!("wrote {}", out.display());
}

/// The full-precision gate on the Llama fixture both ways (issue 61 items 2-4): on
/// llama.cpp's F32 rewrite, with llama.cpp's f32 logits as the reference, the unchanged
/// implementation and the right model computed other legitimate ways (the context as decode
/// steps and in chunks of 64, candle-transformers' `quantized_llama`) PASS, and every held-out
/// deviation FAILS, including the three the 16-bit gate cannot see on this fixture (attention
/// scale +1%, RoPE base +0.5%, RoPE tables in f16) and the KV cache read one position off.
#[test]
fn full_precision_gate_catches_every_held_out_deviation_on_the_llama_fixture() {
    both_ways_on_fixture("llama");
}

/// The same on Gemma 3's fixture, which runs the project's other decoder (`quantized::gemma3`,
/// sliding-window layers, q/k norms, post-norms, GELU in f32 on both sides): the unchanged decoder
/// and the context as steps or in chunks PASS; every deviation of the table FAILS, the
/// q/k norms skipped included (candle's `quantized_gemma3`, a known deviation, is not asked to
/// pass).
#[test]
fn full_precision_gate_catches_every_deviation_on_the_gemma3_fixture() {
    both_ways_on_fixture("gemma3");
}

/// The full-precision reference of real file `REAL[i]`, or None after the skip rule (llama.cpp
/// or the file not installed).
fn real_full_reference(i: usize) -> Option<FullReference> {
    if !have_llama_cpp() || common::llama_cpp_program("llama-logits").is_none() {
        return None;
    }
    real_file(REAL[i].1).map(|gguf| full_reference(&gguf))
}

/// One real file's row in CI (issue 61: the fixture rows and one real file): the real
/// SmolLM2-135M Q4_1 at full precision (llama.cpp's F32 rewrite), the smallest of the three.
/// The unchanged implementation and the context as single-token decode steps PASS; RoPE tables
/// in f16 (the smallest deviation of the table on this file, which the 16-bit gate passes) and
/// the KV cache read one position off FAIL.
#[test]
fn full_precision_gate_on_a_real_file_both_ways() {
    real_file_both_ways(0, &[Wrong::RopeF16, Wrong::KvOneOff]);
}

/// The real Gemma 3 270M's two cells that passed against llama.cpp's GELU table (RoPE base
/// +0.5%: 3.1e-6, RoPE tables in f16: 9.1e-7, against a limit of 2.9e-5 from the table's own
/// noise): against llama.cpp with GELU in f32 they FAIL, while the unchanged decoder and the
/// context as single-token steps PASS (5.6e-12 with ggml's RoPE angles, which the Gemma 3
/// decoder uses; with the direct formula it read 2.95e-10 against the limit
/// of 1.85e-10). Not in CI (its F32 reference is 1.1 GB and five llama.cpp runs; the decoder
/// runs four times over 510 positions of a 262k vocabulary).
#[test]
#[ignore = "the real Gemma 3 270M at full precision (about 3 minutes, release; a 1.1 GB F32 reference)"]
fn full_precision_gate_sees_rope_deviations_on_the_real_gemma3() {
    real_file_both_ways(2, &[Wrong::RopeBaseUpHalfPct, Wrong::RopeF16]);
}

/// Real file `REAL[i]` at full precision: unchanged and as single-token decode steps PASS,
/// each of `wrong` FAILS.
fn real_file_both_ways(i: usize, wrong: &[Wrong]) {
    let Some(r) = real_full_reference(i) else {
        return;
    };
    let unchanged = full_gate(&r, None);
    assert!(unchanged.passed, "unchanged: {:?}", unchanged.checks);
    let (row, way) = LEGITIMATE[0];
    let steps = legitimate(REAL[i].0, &r, row, way);
    let v = steps
        .verdict
        .as_ref()
        .expect("the project's implementation runs");
    assert!(v.passed, "{row}: {}", legit_cell(&steps, &unchanged));
    for &w in wrong {
        let v = full_gate(&r, Some(w));
        assert!(!v.passed, "{}: {}", w.describe(), full_cell(&v, &unchanged));
    }
}

/// Why the real Gemma 3 270M's full-precision limit is wide (docs/quality.md): the project's
/// Gemma 3 decoder against itself, the context batched against as single-token steps, with
/// GELU exact and with ggml's f16 table (what the gate runs, like llama.cpp's CPU backend).
/// Measured 2026-11-29: exact 4.2e-12 mean KLD, the table 2.8e-7 (llama.cpp's own
/// micro-batch-1 figure on the file: 3.0e-7): the table turns the two paths' different
/// summation orders into whole f16 steps. A measurement, printed, not a check.
#[test]
#[ignore = "a measurement for docs/quality.md (about 2 minutes, release)"]
fn gelu_table_amplifies_the_order_noise_on_the_real_gemma3() {
    use modelbench::models::sources::gguf::load_with;
    use modelbench::models::CausalLm;
    use modelbench::workloads::kld_full::{full_kld, log_softmax};
    let Some(r) = real_full_reference(2) else {
        return;
    };
    let p = &r.positions;
    let bos = if p.add_bos { p.bos_id } else { None };
    let rows = |m: &mut dyn CausalLm| {
        let mut out = Vec::new();
        modelbench::engine::perplexity::for_each_scored_position(
            m,
            &p.token_ids,
            p.n_ctx,
            bos,
            1,
            None,
            |_, _, l, _| {
                let l = l.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
                out.push(log_softmax(&l));
                Ok(())
            },
        )
        .unwrap();
        out
    };
    for table in [false, true] {
        let load =
            || load_with(&r.f32_gguf, OWN, &candle_core::Device::Cpu, Some(p.n_ctx)).unwrap();
        let (mut a, mut b) = (
            load(),
            InPieces {
                m: load(),
                piece: 1,
            },
        );
        if table {
            assert!(a.match_ggml_gelu() && b.match_ggml_gelu());
        }
        let (ra, rb) = (rows(a.as_mut()), rows(&mut b));
        let k: Vec<f64> = ra.iter().zip(&rb).map(|(x, y)| full_kld(x, y)).collect();
        eprintln!(
            "GELU {}: batched context against single-token steps: mean KLD {:.3e}, max {:.3e} over {} positions",
            if table { "as ggml's f16 table" } else { "exact" },
            k.iter().sum::<f64>() / k.len() as f64,
            k.iter().copied().fold(0.0, f64::max),
            k.len()
        );
    }
}

/// The full-precision gate on GGUF fixture `name`: unchanged and the legitimate variants
/// (but a known deviation of candle's) PASS, every applicable deviation FAILS.
fn both_ways_on_fixture(name: &str) {
    if !have_llama_cpp() || common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let gguf = modelbench::models::sources::gguf_fixture_named(name).unwrap();
    let r = full_reference(&gguf);
    let unchanged = full_gate(&r, None);
    assert!(
        unchanged.passed,
        "{name}: the unchanged implementation must pass: {:?}",
        unchanged.checks
    );
    for (row, way) in LEGITIMATE {
        let l = legitimate(name, &r, row, way);
        let cell = legit_cell(&l, &unchanged);
        eprintln!("{name}: {row}: {cell}");
        if l.known.is_none() {
            assert!(
                l.verdict.as_ref().is_ok_and(|v| v.passed),
                "{name}: {row} (a right model) must pass: {cell}"
            );
        }
    }
    for w in deviations() {
        let v = full_gate(&r, Some(w));
        let cell = full_cell(&v, &unchanged);
        assert!(
            !v.passed || cell.starts_with("no effect"),
            "{name}: {} passes the full-precision gate ({cell})",
            w.describe(),
        );
    }
}

/// Phi-2's GELU, like for like (issue 61): llama.cpp's CPU backend as shipped computes GELU
/// from an f16 table (ggml-cpu/vec.h, `GGML_GELU_FP16`), and the table alone moves its logits
/// far past its own f32 noise. The gate's reference is therefore llama.cpp with GELU in f32
/// (`llama-logits-exact-gelu`), and the implementations run as in every benchmark: the
/// project's Phi-2 and candle-transformers' `quantized_phi` (both exact GELU) PASS. Against
/// the shipped build's table, candle's exact GELU FAILS (the project's Phi-2 passes there only
/// by computing GELU from the same table, `Gelu::GgmlF16`), so the gate still sees a
/// difference of the table's size, and the exact build is what removes it.
#[test]
fn phi2_gelu_is_judged_exact_against_exact_and_the_table_is_seen() {
    if !have_llama_cpp() || common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let gguf = modelbench::models::sources::gguf_fixture_named("phi2").unwrap();
    let r = full_reference(&gguf);
    for imp in [GgufImpl::Modelbench, GgufImpl::CandleTransformers] {
        let v = full_gate_with(&r, imp, None);
        assert!(
            !v.ggml_gelu,
            "{imp:?} took ggml's table against the exact reference"
        );
        assert!(
            v.passed,
            "{imp:?} (exact GELU) against llama.cpp's exact GELU: {:?}",
            v.checks
        );
        eprintln!(
            "Phi-2 {imp:?} against llama.cpp's exact GELU: mean KLD {:.3e}, limit {:.3e}",
            v.ours.mean_kld, v.thresholds.max_mean_kld
        );
    }
    let t = full_reference_with(&gguf, RefGelu::GgmlTable);
    let ours = full_gate_with(&t, GgufImpl::Modelbench, None);
    assert!(
        ours.ggml_gelu,
        "the project's Phi-2 did not take ggml's GELU"
    );
    assert!(
        ours.passed,
        "the project's Phi-2 with ggml's GELU: {:?}",
        ours.checks
    );
    let candle = full_gate_with(&t, GgufImpl::CandleTransformers, None);
    assert!(!candle.ggml_gelu);
    assert!(
        !candle.passed,
        "candle's quantized_phi (exact GELU) passes against ggml's GELU table: mean KLD {:.3e}, limit {:.3e}",
        candle.ours.mean_kld,
        candle.thresholds.max_mean_kld
    );
    eprintln!(
        "Phi-2 against llama.cpp's GELU table: ours with the table {:.3e}, candle's exact GELU {:.3e}, limit {:.3e}",
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
