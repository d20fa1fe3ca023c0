//! The KLD gate of a GGUF fixture against llama.cpp, shared by tests/families.rs (every
//! family's verdict and negative controls) and tests/sensitivity.rs (the held-out deviations'
//! table): llama.cpp's reference made once per file and corpus, and the gate run on an
//! implementation, optionally made wrong in one way.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use modelbench::models::families::GgufImpl;
use modelbench::models::quantized::llama::{ModelWeights, Wrong};
use modelbench::models::quantized::parts::SingleSeq;
use modelbench::models::sources::gguf::load_with;
use modelbench::models::{own_weights, CausalLm, ModelMeta};
use modelbench::util::fsio::file_sha256;
use modelbench::workloads::kld::{
    reference_command, run_kld_gate, table, KldReference, KldVerdict,
};

pub const N_CTX: usize = 512;
pub const CHUNKS: usize = 2;
pub const CORPUS: &str = "fixtures/corpus/kjv-genesis-1-3.txt";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn llama_cpp() -> PathBuf {
    modelbench::util::llama_cpp::dir()
}

/// Whether llama.cpp is built here; else the skip rule (tests/common) has been applied.
pub fn have_llama_cpp() -> bool {
    super::common::llama_cpp_program("llama-perplexity").is_some()
}

/// The fixture file and llama.cpp's reference for it (made once per file and corpus).
pub fn reference(name: &str) -> (PathBuf, KldReference) {
    let gguf = modelbench::models::sources::gguf_fixture_named(name).unwrap();
    let r = reference_of(&gguf);
    (gguf, r)
}

/// llama.cpp's reference for the GGUF at `gguf` (made once per file and corpus).
pub fn reference_of(gguf: &Path) -> KldReference {
    let name = gguf.display().to_string();
    let gguf = gguf.to_path_buf();
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
        let st = reference_command(&gguf, &cached, &llama_cpp(), &corpus, (N_CTX, CHUNKS))
            .status()
            .unwrap();
        assert!(st.success(), "llama-cpp-kld-reference.sh failed on {name}");
    }
    let r = KldReference::load(&cached).unwrap();
    assert_eq!(r.provenance["gguf"]["sha256"], sha.as_str());
    r
}

/// The project's Llama / Qwen2 / Qwen3 made wrong in one way, behind `CausalLm`.
pub struct WrongLm {
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

pub fn gate(
    path: &Path,
    r: &KldReference,
    imp: Option<GgufImpl>,
    wrong: Option<Wrong>,
) -> KldVerdict {
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
