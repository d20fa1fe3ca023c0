//! Quality gate on the real Gemma 3 270M (GGUF Q4_K_M, installed by
//! scripts/fetch-offline-models.sh) against llama.cpp's values on the same file
//! (fixtures/reference/gemma-3-270m-Q4_K_M.json, made by scripts/llama-cpp-reference.sh with
//! llama.cpp built from the llama-cpp-python sdist; never by this suite):
//! - perplexity with llama-perplexity's own windowing on llama.cpp's own corpus token ids,
//!   within PPL_TOLERANCE of llama.cpp's value;
//! - greedy continuations (32 tokens) of llama.cpp's prompt ids: every prompt agrees for at
//!   least MIN_AGREEMENT leading tokens;
//! - the negative control: candle-transformers 0.11.1's quantized_gemma3 (SiLU MLP) fails it;
//! - our tokenizer.json encodes the corpus and prompts to llama.cpp's ids.
//!
//! Absent model: a skip through tests/common's rule (docs/testing.md): a failure with
//! MODELBENCH_REQUIRE_QUALITY=1 (CI sets it after a successful fetch) or under CI=true.

mod common;
#[path = "families/kld_gate.rs"]
mod kld_gate;

use candle_core::{DType, Device};
use modelbench::engine::scenario::prepare;
use modelbench::judge::quality::MIN_AGREEMENT;
use modelbench::models::sources::loading::{open, Loaded};
use modelbench::models::sources::ModelRef;
use modelbench::workloads::quality::{run_gate, Reference};

const MODEL: &str = "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF";
const UPSTREAM: &str = "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF?impl=candle-transformers";
const REFERENCE: &str = "fixtures/reference/gemma-3-270m-Q4_K_M.json";

fn reference() -> Reference {
    Reference::load(std::path::Path::new(REFERENCE)).unwrap()
}

/// The loaded model, or None (skip) when it is not installed and not required.
fn load(label: &str) -> Option<Loaded> {
    let r = ModelRef::parse(label).unwrap();
    match prepare(label, &r, &[]) {
        Ok(res) => Some(open(res, &Device::Cpu, DType::F32, Some(1024)).unwrap()),
        Err(e) => {
            common::skip_real_model(e);
            None
        }
    }
}

/// The real file's GGUF and its tokenizer.json, or None (skipped by the common rule).
fn real_gguf() -> Option<(std::path::PathBuf, Option<std::path::PathBuf>)> {
    let r = ModelRef::parse(MODEL).unwrap();
    let res = match prepare(MODEL, &r, &[]) {
        Ok(res) => res,
        Err(e) => {
            common::skip_real_model(e);
            return None;
        }
    };
    let modelbench::models::Weights::Gguf(path) = res.weights else {
        panic!("a GGUF reference")
    };
    Some((path, res.tokenizer))
}

fn gate(label: &str) -> Option<modelbench::output::quality::Verdict> {
    let mut m = load(label)?;
    let implementation = m.model.meta().provenance.implementation.clone();
    Some(gate_on(m.model.as_mut(), label, &implementation))
}

/// The gate on a loaded model, printed.
fn gate_on(
    m: &mut dyn modelbench::models::CausalLm,
    label: &str,
    implementation: &str,
) -> modelbench::output::quality::Verdict {
    let v = run_gate(m, label, implementation, &reference(), REFERENCE).unwrap();
    eprintln!(
        "{label} [{implementation}]: perplexity {:.4} vs llama.cpp {:.4} (n_ctx {}, tolerance {:.0}%); greedy agreement {} (near-tie below {:.3}); passed {}",
        v.perplexity,
        v.reference_perplexity,
        v.n_ctx,
        v.perplexity_tolerance * 100.0,
        v.prompts
            .iter()
            .map(|p| {
                let free = match p.tie_margin {
                    Some(m) => format!("{}/{} (then a near-tie, margin {m:.3})", p.agree, p.of),
                    None => format!("{}/{}", p.agree, p.of),
                };
                format!(
                    "{free} [teacher-forced {}/{}, confident misses at {:?}]",
                    p.forced_agree
                        .map_or_else(|| "not run".to_string(), |a| a.to_string()),
                    p.of,
                    p.confident_misses
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        v.near_tie_margin.unwrap_or(f64::NAN),
        v.passed
    );
    v
}

#[test]
fn corrected_gemma3_passes_the_gate_against_llama_cpp() {
    let Some(v) = gate(MODEL) else { return };
    assert!(
        v.perplexity_ok,
        "perplexity {} is not within {:.0}% of llama.cpp's {}",
        v.perplexity,
        v.perplexity_tolerance * 100.0,
        v.reference_perplexity
    );
    for p in &v.prompts {
        assert!(
            p.ok(MIN_AGREEMENT),
            "{:?}: greedy agrees with llama.cpp for {} of {} tokens (need {MIN_AGREEMENT}, or a first difference at a near-tie of llama.cpp); teacher-forced misses at steps {:?} that are not near-ties (need none)",
            p.prompt,
            p.agree,
            p.of,
            p.confident_misses
        );
    }
    assert!(v.passed);
}

#[test]
fn upstream_candle_gemma3_fails_the_gate() {
    let Some(v) = gate(UPSTREAM) else { return };
    assert!(
        !v.passed,
        "negative control: candle-transformers' quantized_gemma3 (SiLU MLP) must fail the gate"
    );
}

/// The gate judged on deviations it was not shaped on (its near-tie margin and teacher-forced
/// rule were set on the unchanged decoder and candle's SiLU Gemma 3 only): the project's Gemma 3
/// decoder on the real Q4_K_M file made wrong in each of the sensitivity table's ways
/// (docs/quality-sensitivity.md). A measurement for docs/quality.md, printed; it asserts only
/// that every deviation ran.
#[test]
#[ignore = "a measurement for docs/quality.md (about 8 minutes, release)"]
fn quality_gate_on_held_out_deviations() {
    use modelbench::models::families::GgufImpl;
    use modelbench::models::quantized::llama::Wrong;
    let Some((path, _)) = real_gguf() else { return };
    let path = &path;
    let (mut rows, mut reference_ppl) = (Vec::new(), f64::NAN);
    for w in Wrong::HELD_OUT.into_iter().chain(Wrong::CONTROLS_LISTED) {
        let (mut m, label) =
            kld_gate::load_maybe_wrong(path, Some(GgufImpl::Modelbench), 1024, Some(w));
        let v = gate_on(m.as_mut(), MODEL, &label);
        let misses: usize = v.prompts.iter().map(|p| p.confident_misses.len()).sum();
        let short = v.prompts.iter().filter(|p| !p.ok(MIN_AGREEMENT)).count();
        reference_ppl = v.reference_perplexity;
        rows.push(format!(
            "| {} | {:.4} ({}) | {} of {} prompts fail; {misses} confident misses | {} |",
            w.describe(),
            v.perplexity,
            if v.perplexity_ok { "ok" } else { "off" },
            short,
            v.prompts.len(),
            if v.passed { "PASSED" } else { "FAILED" }
        ));
    }
    eprintln!(
        "| deviation | perplexity (llama.cpp {reference_ppl:.4}) | greedy | verdict |\n|---|---|---|---|\n{}",
        rows.join("\n")
    );
    assert_eq!(
        rows.len(),
        Wrong::HELD_OUT.len() + Wrong::CONTROLS_LISTED.len()
    );
}

#[test]
fn tokenizer_json_encodes_as_llama_cpp_does() {
    let r0 = ModelRef::parse(MODEL).unwrap();
    let res = match prepare(MODEL, &r0, &[]) {
        Ok(res) => res,
        Err(e) => return common::skip_real_model(e),
    };
    let tok =
        modelbench::models::tokenizers::load(&res.tokenizer.expect("tokenizer beside the GGUF"))
            .unwrap();
    let tok = &tok;
    let r = reference();
    for p in &r.greedy.prompts {
        let mut ids = vec![2u32];
        ids.extend(modelbench::models::tokenizers::encode(tok, &p.prompt).unwrap());
        assert_eq!(ids, p.prompt_token_ids, "{:?}", p.prompt);
    }
    // llama-perplexity reads the file with its one trailing newline removed.
    let text = modelbench::engine::generate::CORPUS;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut ids = vec![2u32];
    ids.extend(modelbench::models::tokenizers::encode(tok, text).unwrap());
    assert_eq!(ids.len(), r.corpus.token_ids.len());
    assert_eq!(ids, r.corpus.token_ids);
}

/// Part 4 of the issue: the same GGUF dequantized to a Hugging Face folder and run through the
/// non-quantized path (candle-transformers' gemma3, f32) must pass the same gate. Ignored by
/// default (a 1 GB f32 copy and a third model load): run with `--ignored`.
#[test]
#[ignore = "writes a 1 GB f32 copy of the model; run with --ignored"]
fn dequantized_gemma3_through_candle_transformers_passes_the_gate() {
    let Some((path, tokenizer)) = real_gguf() else {
        return;
    };
    let path = &path;
    let out = modelbench::util::fsio::target_dir().join("modelbench-dequantized/gemma-3-270m");
    if !out.join("config.json").is_file() {
        modelbench::models::sources::dequantize::gguf_to_hf(path, tokenizer.as_deref(), &out)
            .unwrap();
    }
    let Some(v) = gate(&out.display().to_string()) else {
        return;
    };
    assert!(v.passed, "{v:?}");
}

/// `modelbench perplexity --method llama-cpp --seq-len 1024` on the corpus file lands within
/// the gate's tolerance of llama.cpp's value at `-c 1024` on the same text: windows up to 1024
/// on the corrected model, through the CLI a user runs. At 1024 (past Gemma 3's 512-token
/// window) llama.cpp's own two settings differ by 1.5% (f32 KV cache without flash attention
/// 2.3868, its default f16 cache with flash attention 2.4219), so the nearer one counts, as
/// for the greedy agreement; both deviations are printed.
#[test]
fn cli_perplexity_at_1024_matches_llama_cpp() {
    let r0 = ModelRef::parse(MODEL).unwrap();
    if let Err(e) = prepare(MODEL, &r0, &[]) {
        return common::skip_real_model(e);
    }
    let r = reference();
    let runs: Vec<_> = r
        .perplexity
        .runs
        .iter()
        .filter(|x| x.n_ctx == 1024)
        .collect();
    assert!(!runs.is_empty(), "the reference has no -c 1024 run");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args([
            "perplexity",
            "--model",
            MODEL,
            "--method",
            "llama-cpp",
            "--seq-len",
            "1024",
            "--no-save",
            "fixtures/corpus/kjv-genesis-1-3.txt",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let ppl: f64 = stdout
        .split("perplexity ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no perplexity in {stdout:?}"));
    assert!(
        stdout.contains("2 windows (llama-perplexity chunks of 1024)"),
        "{stdout}"
    );
    // Progress on stderr after every chunk (issue 29, item 6).
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "perplexity: window 1/2, 511/1022 tokens",
        "perplexity: window 2/2, 1022/1022 tokens",
    ] {
        assert!(
            stderr.contains(line) && stderr.contains("tok/s") && stderr.contains("ETA"),
            "no `{line}` in {stderr}"
        );
    }
    let devs: Vec<(f64, String)> = runs
        .iter()
        .map(|x| {
            (
                (ppl / x.ppl - 1.0).abs(),
                format!("{} ({})", x.ppl, x.settings),
            )
        })
        .collect();
    let said = devs
        .iter()
        .map(|(d, what)| format!("{:.2}% from llama.cpp's {what}", d * 100.0))
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("perplexity {ppl} at 1024: {said}");
    assert!(
        devs.iter()
            .any(|(d, _)| *d <= modelbench::judge::quality::PPL_TOLERANCE),
        "perplexity {ppl} at 1024 is not within {:.0}% of any llama.cpp run: {said}",
        modelbench::judge::quality::PPL_TOLERANCE * 100.0
    );
}
