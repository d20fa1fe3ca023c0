//! `modelbench verify` (issue 29, item 4) through the CLI a user runs: the real Gemma 3 passes
//! with the committed reference (no llama.cpp needed), candle-transformers' quantized_gemma3
//! fails (exit 1); a GGUF fixture gets its reference computed by llama.cpp when llama.cpp is
//! built (a skip otherwise, through tests/common's rule: the test never builds llama.cpp,
//! 10-25 min; `.ci/run` does, once per machine); bad
//! input is a one-line error with a non-zero exit.

mod common;

use std::process::Output;

const MODEL: &str = "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF";

fn verify(args: &[&str]) -> Output {
    common::bin()
        .arg("verify")
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn gemma_installed() -> bool {
    let r = modelbench::models::sources::ModelRef::parse(MODEL).unwrap();
    match modelbench::engine::scenario::prepare(MODEL, &r, &[]) {
        Ok(_) => true,
        Err(e) => {
            common::skip_real_model(e);
            false
        }
    }
}

#[test]
fn verify_passes_gemma3_with_the_committed_reference() {
    if !gemma_installed() {
        return;
    }
    let o = verify(&["--model", MODEL]);
    let t = text(&o);
    eprintln!("{t}");
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("(committed; made by llama.cpp from this very file)"),
        "{t}"
    );
    assert!(t.contains("verdict: PASSED"), "{t}");
    assert!(
        t.contains("verify: window 2/2, 510/510 tokens"),
        "progress lines: {t}"
    );
    assert!(t.contains("stored "), "{t}");
}

#[test]
fn verify_fails_the_upstream_gemma3() {
    if !gemma_installed() {
        return;
    }
    let o = verify(&["--model", &format!("{MODEL}?impl=candle-transformers")]);
    let t = text(&o);
    eprintln!("{t}");
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("verdict: FAILED"), "{t}");
    let kld = t.lines().find(|l| l.starts_with("mean KLD")).unwrap();
    assert!(kld.trim_end().ends_with("NO"), "{kld}");
}

#[test]
fn verify_computes_a_reference_for_a_gguf_fixture_with_llama_cpp() {
    if common::llama_cpp_program("llama-perplexity").is_none() {
        return;
    }
    let o = verify(&["--model", "gguf:fixture:llama", "--fresh-reference"]);
    let t = text(&o);
    eprintln!("{t}");
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("verify: computing the reference with llama.cpp"),
        "{t}"
    );
    assert!(t.contains("verdict: PASSED"), "{t}");
    // Cached: the second run does not call llama.cpp.
    let o = verify(&["--model", "gguf:fixture:llama"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("(cached)") && !t.contains("computing the reference"),
        "{t}"
    );
}

/// `verify --full-precision` (issue 61 items 2-3) on a fixture: llama.cpp's F32 rewrite and
/// f32 logits, the limits from llama.cpp against itself, the project's implementation PASSES.
/// (That the same gate FAILS held-out deviations: tests/sensitivity.rs.)
#[test]
fn verify_full_precision_passes_the_llama_fixture() {
    if common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let o = verify(&["--model", "gguf:fixture:llama", "--full-precision"]);
    let t = text(&o);
    eprintln!("{t}");
    assert!(o.status.success(), "{t}");
    assert!(t.contains("at full precision (F32 weights)"), "{t}");
    assert!(t.contains("llama.cpp: 1 thread"), "{t}");
    assert!(t.contains("verdict: PASSED"), "{t}");
}

/// A dequantized folder (`modelbench dequantize`: f32 safetensors, run by candle-transformers'
/// Qwen2) judged at full precision against llama.cpp's F32 rewrite of the GGUF it came from,
/// both ways: unchanged it PASSES (the 16-bit gate, against llama.cpp's 8-bit activations,
/// FAILS this correct f32 path: top-1 93.1%, issue 61); with its config.json's `rope_theta`
/// raised by 0.5% (which the 16-bit gate passed on the Llama fixture) it FAILS.
#[test]
fn verify_full_precision_judges_a_dequantized_folder_both_ways() {
    if common::llama_cpp_program("llama-logits").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("qwen2");
    let o = common::bin()
        .args(["dequantize", "--model", "gguf:fixture:qwen2", "--out"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let f = folder.to_str().unwrap();
    let o = verify(&["--model", f, "--full-precision"]);
    let t = text(&o);
    eprintln!("{t}");
    assert!(o.status.success(), "the unchanged folder: {t}");
    assert!(
        t.contains("candle-transformers") && t.contains("verdict: PASSED"),
        "{t}"
    );
    let cfg_path = folder.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let theta = cfg["rope_theta"]
        .as_f64()
        .expect("config.json has rope_theta");
    cfg["rope_theta"] = serde_json::json!(theta * 1.005);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let o = verify(&["--model", f, "--full-precision"]);
    let t = text(&o);
    eprintln!("{t}");
    assert_eq!(o.status.code(), Some(1), "rope_theta x1.005: {t}");
    assert!(t.contains("verdict: FAILED"), "{t}");
}

#[test]
fn verify_rejects_bad_input_in_one_line() {
    for (m, says) in [
        ("fixture:llama", "not a GGUF file"),
        ("gguf:/nonexistent/model.gguf", "GGUF file is missing"),
        ("gguf:README.md", "not a readable GGUF file"),
    ] {
        let o = verify(&["--model", m]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{m}: {e}");
        assert!(e.contains(says), "{m}: {e}");
        assert!(!e.contains("panicked"), "{m}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{m}: {e}");
    }
}
