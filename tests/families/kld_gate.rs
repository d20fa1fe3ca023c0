//! The KLD gate of a GGUF fixture against llama.cpp, shared by tests/families.rs (every
//! family's verdict and negative controls) and tests/sensitivity.rs (the held-out deviations'
//! table): llama.cpp's reference made once per file and corpus, and the gate run on an
//! implementation, optionally made wrong in one way.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use modelbench::models::families::GgufImpl;
use modelbench::models::quantized::gemma3;
use modelbench::models::quantized::llama::{ModelWeights, Wrong};
use modelbench::models::quantized::parts::SingleSeq;
use modelbench::models::sources::gguf::load_with;
use modelbench::models::{own_weights, CausalLm, ModelMeta};
use modelbench::util::fsio::file_sha256;
use modelbench::workloads::kld::{
    reference_command, run_kld_gate, table, KldReference, KldVerdict,
};
use modelbench::workloads::kld_full::{run_full_gate, FullReference, FullVerdict, RefGelu};

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
    reference_on(gguf, CORPUS)
}

/// The held-out text (docs/quality.md): what the full-precision gate is judged on.
pub const HELD_OUT_CORPUS: &str = "fixtures/corpus/kjv-ruth-1-4.txt";

/// llama.cpp's 16-bit reference of `gguf` over `corpus` (made once, cached under target/).
pub fn reference_on(gguf: &Path, corpus: &str) -> KldReference {
    let name = gguf.display().to_string();
    let gguf = gguf.to_path_buf();
    let corpus = root().join(corpus);
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
/// The full-precision reference of `gguf` (its F32 rewrite, llama.cpp's f32 logits) at the
/// positions of its 16-bit reference over the held-out text; made once, cached under target/.
pub fn full_reference(gguf: &Path) -> FullReference {
    full_reference_with(gguf, RefGelu::Exact)
}

/// [`full_reference`] with llama.cpp's GELU as `gelu` says.
pub fn full_reference_with(gguf: &Path, gelu: RefGelu) -> FullReference {
    FullReference::make_with(
        gguf,
        reference_on(gguf, HELD_OUT_CORPUS),
        &llama_cpp(),
        &modelbench::util::fsio::target_dir().join("modelbench-verify/full"),
        gelu,
    )
    .unwrap()
}

/// The project's implementation on the F32 rewrite, as is or with `wrong`, judged by the
/// full-precision gate.
pub fn full_gate(r: &FullReference, wrong: Option<Wrong>) -> FullVerdict {
    full_gate_with(r, GgufImpl::Modelbench, wrong)
}

/// The full-precision gate on implementation `imp` (`wrong` needs the project's).
pub fn full_gate_with(r: &FullReference, imp: GgufImpl, wrong: Option<Wrong>) -> FullVerdict {
    let (mut m, label) = load_maybe_wrong(&r.f32_gguf, Some(imp), r.positions.n_ctx, wrong);
    full_gate_on(r, m.as_mut(), &label)
}

/// The full-precision gate on `m` (loaded from the reference's F32 rewrite), labelled `label`.
pub fn full_gate_on(r: &FullReference, m: &mut dyn CausalLm, label: &str) -> FullVerdict {
    let v = run_full_gate(m, &r.f32_gguf.display().to_string(), label, r, None).unwrap();
    eprintln!(
        "{label}: {} mean KLD {:.3e} p99 {:.3e} p99.9 {:.3e} top-1 {:.2}% PPL ratio {:.6}; {}",
        if v.passed { "PASSED" } else { "FAILED" },
        v.ours.mean_kld,
        v.ours.kld_p99,
        v.ours.kld_p999,
        v.ours.same_top1_percent,
        v.ours.ppl_ratio,
        v.thresholds.how
    );
    v
}

/// The GGUF at `path` on implementation `imp`, made wrong by `wrong` (the project's
/// implementations only: the generic decoder takes every [`Wrong`], Gemma 3's the table's),
/// and its label.
pub fn load_maybe_wrong(
    path: &Path,
    imp: Option<GgufImpl>,
    n_ctx: usize,
    wrong: Option<Wrong>,
) -> (Box<dyn CausalLm>, String) {
    let m = load_with(path, imp, &Device::Cpu, Some(n_ctx)).unwrap();
    let label = m.meta().provenance.implementation.clone();
    match wrong {
        None => (m, label),
        Some(w) => {
            let inner = if let Some(own) = own_weights::<ModelWeights>(&*m) {
                Inner::Generic(own.wrong(w).unwrap())
            } else if let Some(own) = own_weights::<gemma3::ModelWeights>(&*m) {
                Inner::Gemma3(own.wrong(w).unwrap())
            } else {
                panic!("{label}: not one of the project's implementations; cannot be made wrong")
            };
            let wrong = WrongLm {
                m: inner,
                meta: m.meta().clone(),
                device: Device::Cpu,
            };
            (Box::new(wrong), format!("{label} [wrong: {w:?}]"))
        }
    }
}

/// A project's decoder made wrong.
enum Inner {
    Generic(ModelWeights),
    Gemma3(gemma3::ModelWeights),
}

impl Inner {
    fn seq(&mut self) -> &mut dyn SingleSeq {
        match self {
            Inner::Generic(m) => m,
            Inner::Gemma3(m) => m,
        }
    }
}

pub struct WrongLm {
    m: Inner,
    meta: ModelMeta,
    device: Device,
}

impl CausalLm for WrongLm {
    fn reset(&mut self) -> modelbench::models::Result<()> {
        self.m.seq().reset();
        Ok(())
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> modelbench::models::Result<Tensor> {
        let x = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        // The last position's logits: (vocab), as every `CausalLm` gives them (Gemma 3's
        // decoder returns them per batch row, (1, vocab)).
        let l = self.m.seq().forward(&x, pos)?;
        Ok(if l.rank() == 2 { l.squeeze(0)? } else { l })
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn match_ggml_gelu(&mut self) -> bool {
        match &mut self.m {
            Inner::Generic(m) => m.match_ggml_gelu(),
            Inner::Gemma3(m) => m.match_ggml_gelu(),
        }
    }
}

/// A right model computed another legitimate way (the sensitivity table's rows that must
/// pass): every forward of several tokens (the context before the scored positions) run in
/// pieces of `piece` tokens, 1 being single-token decode steps.
pub struct InPieces {
    pub m: Box<dyn CausalLm>,
    pub piece: usize,
}

impl CausalLm for InPieces {
    fn reset(&mut self) -> modelbench::models::Result<()> {
        self.m.reset()
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> modelbench::models::Result<Tensor> {
        let mut out = None;
        for (i, c) in tokens.chunks(self.piece).enumerate() {
            out = Some(self.m.forward(c, pos + i * self.piece)?);
        }
        Ok(out.expect("at least one token"))
    }
    fn meta(&self) -> &ModelMeta {
        self.m.meta()
    }
    fn device(&self) -> &Device {
        self.m.device()
    }
    fn match_ggml_gelu(&mut self) -> bool {
        self.m.match_ggml_gelu()
    }
}

pub fn gate(
    path: &Path,
    r: &KldReference,
    imp: Option<GgufImpl>,
    wrong: Option<Wrong>,
) -> KldVerdict {
    let (mut m, label) = load_maybe_wrong(path, imp, N_CTX, wrong);
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
