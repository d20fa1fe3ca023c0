//! Every GGUF family of the family table, checked against llama.cpp on its fixture (the
//! project's GGUF writer makes a small seeded file per fixture; llama.cpp reads any GGUF it
//! can, so it is the reference for fixtures too): the KL-divergence gate (workloads::kld,
//! limits unchanged: from llama.cpp against itself on the same file) passes for every
//! implementation that runs the file, and **every fixture verdict has a negative control**:
//! the same model with the family's distinguishing piece broken (QKV biases zeroed, the
//! Llama 3.x frequency factors dropped, the RoPE layout swapped, the q/k norms skipped;
//! candle-transformers' Gemma3 with its SiLU MLP) fails the same gate, so a fixture whose
//! logits are too flat to tell right from wrong is caught.
//!
//! The references come from llama.cpp (scripts/llama-cpp-kld-reference.sh, llama-perplexity
//! --kl-divergence-base), cached under target/modelbench-verify/ as `modelbench verify`
//! caches them. Without a llama.cpp build (scripts/build-llama-cpp.sh) the tests say so and
//! skip, except under CI=true, where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use modelbench::models::llama_quantized::{ModelWeights, Wrong};
use modelbench::models::quality::file_sha256;
use modelbench::models::quantized::{load_with, GgufImpl};
use modelbench::models::{families, own_weights, CausalLm, ModelMeta};
use modelbench::workloads::kld::{run_kld_gate, table, KldReference, KldVerdict};

const N_CTX: usize = 512;
const CHUNKS: usize = 2;
const CORPUS: &str = "fixtures/corpus/kjv-genesis-1-3.txt";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn llama_cpp() -> PathBuf {
    modelbench::util::llama_cpp::dir()
}

/// None (and a printed reason) when llama.cpp is not built here; a failure under CI=true.
fn have_llama_cpp() -> bool {
    let bin = llama_cpp().join("bin/llama-perplexity");
    if bin.is_file() {
        return true;
    }
    let why = format!(
        "llama.cpp is not built ({} is missing): run scripts/build-llama-cpp.sh",
        bin.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {why}");
    }
    eprintln!("skip: {why}");
    false
}

/// The fixture file and llama.cpp's reference for it (made once per file and corpus).
fn reference(name: &str) -> (PathBuf, KldReference) {
    let gguf = modelbench::models::source::gguf_fixture_named(name).unwrap();
    let corpus = root().join(CORPUS);
    let sha = file_sha256(&gguf).unwrap();
    let corpus_sha = file_sha256(&corpus).unwrap();
    let cached = modelbench::util::fsio::target_dir()
        .join("modelbench-verify")
        .join(format!(
            "{}-{}-c{N_CTX}x{CHUNKS}.kld.json",
            &sha[..16],
            &corpus_sha[..16]
        ));
    if KldReference::load(&cached).is_err() {
        let st = Command::new("bash")
            .arg(root().join("scripts/llama-cpp-kld-reference.sh"))
            .arg("--model")
            .arg(&gguf)
            .arg("--out")
            .arg(&cached)
            .arg("--llama-cpp")
            .arg(llama_cpp())
            .arg("--corpus")
            .arg(&corpus)
            .args([
                "--n-ctx",
                &N_CTX.to_string(),
                "--chunks",
                &CHUNKS.to_string(),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "llama-cpp-kld-reference.sh failed on {name}");
    }
    let r = KldReference::load(&cached).unwrap();
    assert_eq!(r.provenance["gguf"]["sha256"], sha.as_str());
    (gguf, r)
}

/// The project's Llama / Qwen2 / Qwen3 made wrong in one way, behind `CausalLm`.
struct WrongLm {
    m: ModelWeights,
    meta: ModelMeta,
    device: Device,
}

impl CausalLm for WrongLm {
    fn reset(&mut self) -> modelbench::error::Result<()> {
        self.m.reset();
        Ok(())
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> modelbench::error::Result<Tensor> {
        let x = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        Ok(self.m.forward(&x, pos)?)
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

fn gate(path: &Path, r: &KldReference, imp: Option<GgufImpl>, wrong: Option<Wrong>) -> KldVerdict {
    let mut m = load_with(path, imp, &Device::Cpu, Some(N_CTX)).unwrap();
    let mut label = m.meta().provenance.implementation.clone();
    if let Some(w) = wrong {
        let own = own_weights::<ModelWeights>(&*m).expect("the project's implementation");
        label = format!("{label} [wrong: {w:?}]");
        m = Box::new(WrongLm {
            m: own.wrong(w).unwrap(),
            meta: m.meta().clone(),
            device: Device::Cpu,
        });
    }
    let v = run_kld_gate(
        m.as_mut(),
        &path.display().to_string(),
        &label,
        r,
        "test",
        None,
    )
    .unwrap();
    eprintln!("{label}:\n{}", table(&v));
    v
}

/// (fixture, implementations that must pass, negative controls that must fail)
type Case = (
    &'static str,
    &'static [Option<GgufImpl>],
    &'static [(Option<GgufImpl>, Option<Wrong>)],
);

const OWN: Option<GgufImpl> = Some(GgufImpl::Modelbench);
const CANDLE: Option<GgufImpl> = Some(GgufImpl::CandleTransformers);

const CASES: &[Case] = &[
    (
        "llama",
        &[None, OWN],
        &[(OWN, Some(Wrong::OtherRopeLayout))],
    ),
    (
        // Llama 3.2-shaped: candle-transformers' quantized_llama refuses it (it ignores
        // rope_freqs.weight), so the default is the project's implementation.
        "llama3",
        &[None],
        &[(OWN, Some(Wrong::DropRopeFreqs))],
    ),
    (
        "qwen2",
        &[None, OWN],
        &[
            (OWN, Some(Wrong::ZeroBias)),
            (OWN, Some(Wrong::OtherRopeLayout)),
        ],
    ),
    (
        // candle-transformers' quantized_qwen3 is judged apart (see
        // `candle_qwen3_kld_within_limits`): it builds its RoPE tables in f16.
        "qwen3",
        &[OWN],
        &[
            (OWN, Some(Wrong::SkipQkNorm)),
            (OWN, Some(Wrong::OtherRopeLayout)),
        ],
    ),
    ("gemma3", &[None], &[(CANDLE, None)]),
];

fn check(name: &str) {
    if !have_llama_cpp() {
        return;
    }
    let (_, passes, controls) = CASES.iter().find(|c| c.0 == name).unwrap();
    let (path, r) = reference(name);
    for imp in passes.iter() {
        let v = gate(&path, &r, *imp, None);
        assert!(
            v.passed,
            "{name} {imp:?} fails the gate against llama.cpp:\n{}",
            table(&v)
        );
    }
    if name == "qwen3" {
        // candle-transformers 0.11.1's quantized_qwen3 computes its RoPE tables (positions
        // included) in f16 unless the file sets general.dtype = 0, where HF and llama.cpp use
        // f32: its logits differ from llama.cpp's beyond llama.cpp's own f16-KV spread in the
        // top-1 check on this fixture (measured 96.86% against a limit of 96.86%), while its
        // KL divergence stays inside the limits. docs/models.md has the reproduction.
        let v = gate(&path, &r, CANDLE, None);
        for c in v.checks.iter().filter(|c| c.name.contains("KLD")) {
            assert!(
                c.passed,
                "candle's quantized_qwen3 {}: {} not {}",
                c.name, c.value, c.limit
            );
        }
    }
    for (imp, wrong) in controls.iter() {
        let v = gate(&path, &r, *imp, *wrong);
        assert!(
            !v.passed,
            "{name} negative control {imp:?} {wrong:?} passes the gate: the fixture cannot tell right from wrong:\n{}",
            table(&v)
        );
    }
}

#[test]
fn every_fixture_has_a_case() {
    let names: Vec<&str> = families::GGUF_FAMILIES
        .iter()
        .flat_map(|f| f.fixtures.iter().map(|x| x.name))
        .collect();
    for n in &names {
        assert!(
            CASES.iter().any(|c| c.0 == *n),
            "fixture {n} has no KLD case here"
        );
    }
    assert_eq!(names.len(), CASES.len());
}

#[test]
fn llama_fixture_matches_llama_cpp() {
    check("llama");
}

#[test]
fn llama3_fixture_matches_llama_cpp() {
    check("llama3");
}

#[test]
fn qwen2_fixture_matches_llama_cpp() {
    check("qwen2");
}

#[test]
fn qwen3_fixture_matches_llama_cpp() {
    check("qwen3");
}

#[test]
fn gemma3_fixture_matches_llama_cpp() {
    check("gemma3");
}

/// candle-transformers' quantized_llama ignores `rope_freqs.weight`: asked for explicitly on
/// a Llama 3.x file it is refused in one line naming the fix, and the file's default is the
/// project's implementation, which applies the factors.
#[test]
fn llama3_files_run_on_the_implementation_that_applies_rope_freqs() {
    let path = modelbench::models::source::gguf_fixture_named("llama3").unwrap();
    let err = match load_with(&path, CANDLE, &Device::Cpu, Some(64)) {
        Ok(_) => panic!("candle-transformers' quantized_llama accepted rope_freqs.weight"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("rope_freqs.weight") && err.contains("impl=modelbench"),
        "{err}"
    );
    let m = load_with(&path, None, &Device::Cpu, Some(64)).unwrap();
    let own = own_weights::<ModelWeights>(&*m).expect("the project's implementation");
    assert!(own.has_rope_freqs());
    assert!(m
        .meta()
        .provenance
        .implementation
        .starts_with("modelbench quantized_llama"));
}

/// NaN logits fail the gate by name: the llama fixture with one forward call's logits made
/// NaN fails the "non-finite logits" check with exactly that one position counted (the same
/// model unpoisoned passes every check in `llama_fixture_matches_llama_cpp`, 0 counted).
#[test]
fn nan_logits_fail_the_gate_by_name() {
    if !have_llama_cpp() {
        return;
    }
    let (path, r) = reference("llama");
    let m = load_with(&path, None, &Device::Cpu, Some(N_CTX)).unwrap();
    let label = m.meta().provenance.implementation.clone();
    // Call 0 is chunk 0's prefill; call 1 scores the position after it.
    let mut nan = common::NanOn {
        inner: m,
        poisoned: vec![1],
        calls: 0,
    };
    let v = run_kld_gate(
        &mut nan,
        "llama fixture, one NaN step",
        &label,
        &r,
        "test",
        None,
    )
    .unwrap();
    eprintln!("{}", table(&v));
    assert!(!v.passed);
    assert_eq!(v.ours.non_finite_positions, 1);
    let c = v
        .checks
        .iter()
        .find(|c| c.name.starts_with("non-finite"))
        .unwrap();
    assert!(!c.passed && c.value == 1.0, "{c:?}");
    assert_eq!(v.llama_cpp_self.non_finite_positions, 0);
}
