//! Every GGUF family of the family table, checked against llama.cpp on its fixture (the
//! project's GGUF writer makes a small seeded file per fixture; llama.cpp reads any GGUF it
//! can, so it is the reference for fixtures too): the KL-divergence gate (workloads::kld,
//! limits unchanged: from llama.cpp against itself on the same file) passes for every
//! implementation that runs the file, and **every fixture verdict has a negative control**:
//! the same model with the family's distinguishing piece broken (QKV biases zeroed, the
//! Llama 3.x frequency factors dropped, the RoPE layout swapped, the q/k norms skipped;
//! candle-transformers' Gemma3 with its SiLU MLP; for families only candle runs, the fixture
//! file with one piece changed: experts misrouted or top-k lowered, GLM-4's fused gate/up
//! halves or rotary half swapped; Phi-3's fused gate/up halves or K/V blocks exchanged,
//! Phi-2's partial rotary made whole or LayerNorm biases zeroed, LFM2's convolution taps
//! reversed or B/C gates exchanged) fails the same gate, so a fixture whose logits are too
//! flat to tell right from wrong is caught.
//!
//! The references come from llama.cpp (scripts/llama-cpp-kld-reference.sh, llama-perplexity
//! --kl-divergence-base), cached under target/modelbench-verify/ as `modelbench verify`
//! caches them. Without a llama.cpp build (scripts/build-llama-cpp.sh) the tests say so and
//! skip, except under CI=true, where that is a failure.

mod common;

use std::path::Path;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{Device, Tensor};
use gguf_file::Value;
use modelbench::models::families::GgufImpl;
use modelbench::models::quantized::llama::{ModelWeights, Wrong};
use modelbench::models::sources::gguf::load_with;
use modelbench::models::{families, own_weights, CausalLm, ModelMeta};
use modelbench::workloads::kld::{run_kld_gate, table, KldReference};

#[path = "families/mutations.rs"]
mod mutations;
use mutations::*;

#[path = "families/kld_gate.rs"]
mod kld_gate;
use kld_gate::*;

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
        // The default is the project's implementation (candle-transformers' dequantizes the
        // embedding to f32 at load); candle's is judged by name.
        "qwen2",
        &[None, CANDLE],
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
    // candle-transformers' quantized_llama by default, the project's by name; the mutated
    // files (MUTATED) are run by the default.
    (
        "mixtral",
        &[None, OWN],
        &[(OWN, Some(Wrong::NoExpertRenorm))],
    ),
    // candle-transformers' by default, the project's by name; the mutated files (MUTATED)
    // run on both.
    (
        "glm4",
        &[None, OWN],
        &[
            (OWN, Some(Wrong::SkipPostNorms)),
            (OWN, Some(Wrong::OtherRopeLayout)),
        ],
    ),
    // The project's by default; candle-transformers 0.11.1's quantized_qwen3_moe runs on CUDA
    // only: see `qwen3moe_fixture_matches_llama_cpp`.
    (
        "qwen3moe",
        &[None],
        &[
            (OWN, Some(Wrong::NoExpertRenorm)),
            (OWN, Some(Wrong::SkipQkNorm)),
        ],
    ),
    // candle-transformers' by default, the project's by name (the mutated files are run by
    // the default).
    ("phi3", &[None, OWN], &[(OWN, Some(Wrong::OtherRopeLayout))]),
    (
        "phi2",
        &[None, OWN],
        &[
            (OWN, Some(Wrong::ZeroBias)),
            (OWN, Some(Wrong::OtherRopeLayout)),
        ],
    ),
    (
        "lfm2",
        &[None, OWN],
        &[
            (OWN, Some(Wrong::ReverseConvTaps)),
            (OWN, Some(Wrong::SkipQkNorm)),
        ],
    ),
    // The project's only (candle-transformers 0.11.1 has no quantized StarCoder2): a family
    // that is its record alone (docs/architecture.md, "Adding a GGUF family").
    (
        "starcoder2",
        &[None],
        &[
            (OWN, Some(Wrong::ZeroBias)),
            (OWN, Some(Wrong::OtherRopeLayout)),
        ],
    ),
];

/// A fixture file with one piece changed: metadata and tensors as candle reads them.
type Mutation = fn(&mut Vec<(String, Value)>, &mut [(String, QTensor)]);

/// Negative controls as files: the fixture file with the family's distinguishing piece
/// broken, run by every implementation that passes on the fixture against llama.cpp's
/// reference of the unmodified file; each must fail the gate. (fixture, what is broken, the change)
const MUTATED: &[(&str, &str, Mutation)] = &[
    (
        "mixtral",
        "router rows rotated (each token routed to the wrong experts)",
        rotate_router,
    ),
    (
        "mixtral",
        "expert_used_count 2 -> 1 (top-1 routing)",
        |md, _| set_u32(md, "llama.expert_used_count", 1),
    ),
    (
        "glm4",
        "fused ffn_up halves swapped (SiLU on up, not gate)",
        swap_gate_up,
    ),
    (
        "glm4",
        "RoPE on the second half of each head, not the first",
        rope_other_half,
    ),
    (
        "qwen3moe",
        "router rows rotated (each token routed to the wrong experts)",
        rotate_router,
    ),
    (
        "qwen3moe",
        "expert_used_count 2 -> 1 (top-1 routing)",
        |md, _| set_u32(md, "qwen3moe.expert_used_count", 1),
    ),
    (
        "phi3",
        "fused ffn_up halves swapped (SiLU on up, not gate)",
        swap_gate_up,
    ),
    (
        "phi3",
        "K and V blocks of the fused attn_qkv exchanged",
        |md, ts| {
            let hd = md_u32(md, "phi3.embedding_length") / md_u32(md, "phi3.attention.head_count");
            let q = md_u32(md, "phi3.attention.head_count") * hd;
            let kv = md_u32(md, "phi3.attention.head_count_kv") * hd;
            map_tensors(
                ts,
                |n| n.ends_with(".attn_qkv.weight"),
                |_, t| swap_rows(&t, q..q + kv, q + kv..q + 2 * kv),
            );
        },
    ),
    (
        "phi2",
        "whole head rotated (rope.dimension_count = head size, not 8 of 16)",
        |md, _| {
            let hd = md_u32(md, "phi2.embedding_length") / md_u32(md, "phi2.attention.head_count");
            set_u32(md, "phi2.rope.dimension_count", hd as u32)
        },
    ),
    ("phi2", "LayerNorm biases zeroed", |_, ts| {
        map_tensors(
            ts,
            |n| n.ends_with(".attn_norm.bias") || n == "output_norm.bias",
            |_, t| t.zeros_like().unwrap(),
        )
    }),
    ("lfm2", "short-convolution taps reversed", |_, ts| {
        map_tensors(
            ts,
            |n| n.ends_with(".shortconv.conv.weight"),
            |_, t| {
                let l = t.dim(1).unwrap();
                let idx: Vec<u32> = (0..l as u32).rev().collect();
                t.index_select(&Tensor::new(idx.as_slice(), t.device()).unwrap(), 1)
                    .unwrap()
            },
        )
    }),
    (
        "lfm2",
        "B and C gates of the short convolution exchanged",
        |md, ts| {
            let h = md_u32(md, "lfm2.embedding_length");
            map_tensors(
                ts,
                |n| n.ends_with(".shortconv.in_proj.weight"),
                |_, t| swap_rows(&t, 0..h, h..2 * h),
            )
        },
    ),
];

/// Runs the mutated-file controls of `name` with `imp` against `r` (the reference of the
/// unmodified file `path`); each must fail the gate.
fn mutated_controls(
    name: &str,
    path: &Path,
    r: &KldReference,
    imp: Option<GgufImpl>,
    device: &Device,
) {
    for (i, (_, what, f)) in MUTATED.iter().filter(|m| m.0 == name).enumerate() {
        let dst = mutated_path(path, &format!("{name}-control{i}"));
        write_mutated(path, &dst, *f);
        let mut m = load_with(&dst, imp, device, Some(N_CTX)).unwrap();
        let label = format!("{} [control: {what}]", m.meta().provenance.implementation);
        let v = run_kld_gate(
            m.as_mut(),
            &dst.display().to_string(),
            &label,
            r,
            "test",
            None,
        )
        .unwrap();
        eprintln!("{label}:\n{}", table(&v));
        assert!(
            !v.passed,
            "{name} negative control `{what}` passes the gate: the fixture cannot tell right from wrong:\n{}",
            table(&v)
        );
    }
}

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
    // The mutated files fail on every implementation that passes on the file itself.
    for imp in passes.iter() {
        mutated_controls(name, &path, &r, *imp, &Device::Cpu);
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

/// A bias tensor the project's implementation would not apply is refused in one line naming
/// it, not run as a model without it: the qwen2 fixture with `blk.0.attn_v.bias` renamed to
/// `blk.0.attn_output.bias` (Qwen2 has q/k/v biases only), and the same file unchanged runs.
/// The file checks (`families::check`: a tensor no model of the family reads) refuse it first; the
/// implementation refuses such a file by itself too (`ModelWeights::from_gguf`, below).
#[test]
fn a_bias_the_implementation_does_not_apply_is_refused() {
    let src = modelbench::models::sources::gguf_fixture_named("qwen2").unwrap();
    let dst = mutated_path(&src, "qwen2-output-bias");
    write_mutated(&src, &dst, |_, ts| {
        let t = ts
            .iter_mut()
            .find(|(n, _)| n == "blk.0.attn_v.bias")
            .expect("the qwen2 fixture has v biases");
        t.0 = "blk.0.attn_output.bias".into();
    });
    let e = load_with(&dst, OWN, &Device::Cpu, Some(64))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("blk.0.attn_output.bias") && !e.contains('\n'),
        "{e}"
    );
    assert!(load_with(&src, OWN, &Device::Cpu, Some(64)).is_ok());
    let mut f = std::fs::File::open(&dst).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let fam = families::decoder_of(&ct).unwrap();
    let e = ModelWeights::from_gguf(ct, &fam, &mut f, &Device::Cpu, 64)
        .expect_err("refused by the implementation")
        .to_string();
    assert!(
        e.contains("blk.0.attn_output.bias") && e.contains("does not apply"),
        "{e}"
    );
}

/// Files candle-transformers refuses for a setting it would not apply, which the project's
/// implementation reads: (fixture, what is changed, the change, what candle's refusal names).
/// Phi-3 and Phi-2 with RoPE base 40000 (candle builds its tables with 10000 whatever the file
/// says), GLM-4 rotating its whole head (candle hard-codes half).
const CANDLE_REFUSES: &[(&str, &str, Mutation, &str)] = &[
    (
        "phi3",
        "rope.freq_base 40000",
        |md, _| set_value(md, "phi3.rope.freq_base", Value::F32(40_000.0)),
        "40000",
    ),
    (
        "phi2",
        "rope.freq_base 40000",
        |md, _| set_value(md, "phi2.rope.freq_base", Value::F32(40_000.0)),
        "40000",
    ),
    (
        "glm4",
        "rope.dimension_count = the head (whole head rotated)",
        |md, _| {
            let hd = md_u32(md, "glm4.attention.key_length") as u32;
            set_value(md, "glm4.rope.dimension_count", Value::U32(hd))
        },
        "rope.dimension_count",
    ),
];

/// `key` set to `v` in `md`, added where the file lacks it.
fn set_value(md: &mut Vec<(String, Value)>, key: &str, v: Value) {
    match md.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = v,
        None => md.push((key.to_string(), v)),
    }
}

/// Each file of [`CANDLE_REFUSES`] is refused by candle-transformers in one line naming the
/// setting, runs by default on the project's implementation and passes the gate against
/// llama.cpp's reference of that same file; against the unmodified fixture's reference it
/// fails (the setting is applied, not ignored).
#[test]
fn files_candle_refuses_run_on_the_project_implementation() {
    if !have_llama_cpp() {
        return;
    }
    for (name, what, f, names) in CANDLE_REFUSES {
        let src = modelbench::models::sources::gguf_fixture_named(name).unwrap();
        let dst = mutated_path(&src, &format!("{name}-candle-refuses"));
        write_mutated(&src, &dst, *f);
        let err = match load_with(&dst, CANDLE, &Device::Cpu, Some(N_CTX)) {
            Ok(_) => panic!("candle-transformers' {name} took a file with {what}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(names) && !err.contains('\n'), "{name}: {err}");
        let r = reference_of(&dst);
        let v = gate(&dst, &r, None, None);
        assert!(
            v.implementation
                .starts_with(&format!("modelbench quantized_{name}")),
            "{}",
            v.implementation
        );
        assert!(
            v.passed,
            "{name} with {what} fails the gate:\n{}",
            table(&v)
        );
        let (_, unmodified) = reference(name);
        let wrong = gate(&dst, &unmodified, None, None);
        assert!(
            !wrong.passed,
            "{name} with {what} passes against the unmodified file's reference:\n{}",
            table(&wrong)
        );
    }
}

/// candle-transformers' quantized_llama ignores `rope_freqs.weight`: asked for explicitly on
/// a Llama 3.x file it is refused in one line naming the fix, and the file's default is the
/// project's implementation, which applies the factors.
#[test]
fn llama3_files_run_on_the_implementation_that_applies_rope_freqs() {
    let path = modelbench::models::sources::gguf_fixture_named("llama3").unwrap();
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

#[test]
fn mixtral_fixture_matches_llama_cpp() {
    check("mixtral");
}

#[test]
fn glm4_fixture_matches_llama_cpp() {
    check("glm4");
}

/// The qwen3moe fixture runs on the project's implementation (the default: gate and controls
/// as for every family). candle-transformers 0.11.1's quantized_qwen3_moe computes its experts
/// with `candle_nn::moe::moe_gemm_gguf`, a CUDA kernel only: on the CPU it is refused in one
/// line naming the cause, and the cause is shown as candle's own code meets it. On a CUDA
/// device (a `--features cuda` build) candle's is run through the gate: it failed there on an
/// H200 (docs/models.md), so this asserts that it still fails, and tells when it passes.
#[test]
fn qwen3moe_fixture_matches_llama_cpp() {
    // What a decode step reads: the file's tensors, of the experts 2 of 8 (the fixture's
    // 8 experts of 32 rows, Q8_0: 34 bytes a block of 32).
    let path = modelbench::models::sources::gguf_fixture_named("qwen3moe").unwrap();
    let m = load_with(&path, None, &Device::Cpu, Some(64)).unwrap();
    let meta = m.meta();
    assert_eq!(meta.experts, Some((8, 2)));
    let file_bytes: u64 = {
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        std::fs::metadata(&path).unwrap().len() - ct.tensor_data_offset
    };
    let expert = (32 * meta.hidden / 32 * 34) as f64;
    let unused = (meta.layers * 3 * (8 - 2)) as f64 * expert;
    let want = meta.weight_bytes as f64 - unused;
    assert!(
        meta.weight_bytes <= file_bytes && meta.decode_weight_bytes == Some(want),
        "decode bytes {:?}, want {want} (weights {}, tensor data {file_bytes})",
        meta.decode_weight_bytes,
        meta.weight_bytes
    );
    check("qwen3moe");
    if !have_llama_cpp() {
        return;
    }
    let (path, r) = reference("qwen3moe");
    let cuda = Device::cuda_if_available(0).unwrap();
    if !cuda.is_cuda() {
        let err = match load_with(&path, CANDLE, &Device::Cpu, Some(N_CTX)) {
            Ok(_) => panic!("quantized_qwen3_moe loaded on the CPU, where it cannot run"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("moe_gemm_gguf") && err.contains("CUDA"),
            "{err}"
        );
        eprintln!("qwen3moe on the CPU: {err}");
        // The refusal's cause, run as candle's own code does it (the reproduction in
        // docs/models.md): it loads, and its first forward fails in the experts. When a
        // candle release adds a CPU path this fails: drop the refusal then.
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let mut m = candle_transformers::models::quantized_qwen3_moe::GGUFQWenMoE::from_gguf(
            ct,
            &mut f,
            &Device::Cpu,
            candle_core::DType::F32,
        )
        .unwrap();
        let x = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        let e = m
            .forward(&x, 0)
            .expect_err("candle's qwen3moe ran on the CPU")
            .to_string();
        assert!(
            e.contains("moe_gemm_gguf is only implemented for the cuda backend"),
            "{e}"
        );
        return;
    }
    let mut m = load_with(&path, CANDLE, &cuda, Some(N_CTX)).unwrap();
    let label = m.meta().provenance.implementation.clone();
    let v = run_kld_gate(m.as_mut(), "qwen3moe", &label, &r, "test", None).unwrap();
    eprintln!("{label}:\n{}", table(&v));
    assert!(
        !v.passed,
        "candle's qwen3moe passes the gate on CUDA: the deviation in docs/models.md is gone; make it a passing case"
    );
}

/// candle-transformers 0.11.1's quantized_llama reads experts only as one tensor per expert
/// (`blk.N.ffn_gate.E.weight`); llama.cpp writes and reads them stacked
/// (`blk.N.ffn_gate_exps.weight`). Read directly by candle, the Mixtral-style fixture fails
/// for want of the per-expert names; through the family table (which presents the stacked
/// experts at their offsets) it loads. When a candle release reads stacked experts itself,
/// this fails: drop `split_stacked_experts` then.
#[test]
fn candle_quantized_llama_reads_experts_only_per_expert() {
    let path = modelbench::models::sources::gguf_fixture_named("mixtral").unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let e = match candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        ct,
        &mut f,
        &Device::Cpu,
    ) {
        Ok(_) => panic!("candle's quantized_llama read stacked experts"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("blk.0.ffn_gate.0.weight"), "{e}");
    eprintln!("candle on a stacked-expert file: {e}");
    let m = load_with(&path, None, &Device::Cpu, Some(64)).unwrap();
    assert!(m
        .meta()
        .provenance
        .implementation
        .contains("per-expert tensors"));
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

#[test]
fn phi3_fixture_matches_llama_cpp() {
    check("phi3");
}

#[test]
fn phi2_fixture_matches_llama_cpp() {
    check("phi2");
}

#[test]
fn lfm2_fixture_matches_llama_cpp() {
    check("lfm2");
}

#[test]
fn starcoder2_fixture_matches_llama_cpp() {
    check("starcoder2");
}

/// Phi-2 (HF `PhiForCausalLM`, `gelu_new` = the tanh GELU in f32) written out with candle's
/// ops and the same quantized matmuls as candle-transformers' quantized_phi, with its GELU
/// either exact in f32 (as HF and candle compute it) or through an f16 table as ggml's CPU
/// backend computes it (`GGML_GELU_FP16`: f16(gelu(f16(x))), x for x >= 10, 0 for x <= -10).
/// No KV cache: each forward recomputes the sequence.
struct Phi2Ref {
    emb: Tensor,
    layers: Vec<Phi2Layer>,
    norm: candle_nn::LayerNorm,
    out: (candle_core::quantized::QMatMul, Tensor),
    heads: usize,
    rot: usize,
    f16_gelu: bool,
    history: Vec<u32>,
    meta: ModelMeta,
}

struct Phi2Layer {
    norm: candle_nn::LayerNorm,
    qkv: (candle_core::quantized::QMatMul, Tensor),
    o: (candle_core::quantized::QMatMul, Tensor),
    up: (candle_core::quantized::QMatMul, Tensor),
    down: (candle_core::quantized::QMatMul, Tensor),
}

fn ggml_gelu_f16(x: &Tensor) -> candle_core::Result<Tensor> {
    use half::f16;
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let g = |x: f32| 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh());
    let y: Vec<f32> = v
        .into_iter()
        .map(|x| {
            if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                f16::from_f32(g(f16::from_f32(x).to_f32())).to_f32()
            }
        })
        .collect();
    Tensor::from_vec(y, x.shape(), x.device())
}

impl Phi2Ref {
    fn load(path: &Path, f16_gelu: bool, meta: ModelMeta) -> Phi2Ref {
        use candle_core::quantized::QMatMul;
        let mut f = std::fs::File::open(path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let dev = Device::Cpu;
        let mut deq = |n: &str| {
            ct.tensor(&mut f, n, &dev)
                .unwrap()
                .dequantize(&dev)
                .unwrap()
        };
        let u = |k: &str| ct.metadata[k].to_u32().unwrap() as usize;
        let eps = ct.metadata["phi2.attention.layer_norm_epsilon"]
            .to_f32()
            .unwrap() as f64;
        let mut f2 = std::fs::File::open(path).unwrap();
        let mut lin = |n: &str| {
            let w = ct.tensor(&mut f2, &format!("{n}.weight"), &dev).unwrap();
            let b = ct
                .tensor(&mut f2, &format!("{n}.bias"), &dev)
                .unwrap()
                .dequantize(&dev)
                .unwrap();
            (QMatMul::from_qtensor(w).unwrap(), b)
        };
        let layers = (0..u("phi2.block_count"))
            .map(|l| Phi2Layer {
                norm: candle_nn::LayerNorm::new(
                    deq(&format!("blk.{l}.attn_norm.weight")),
                    deq(&format!("blk.{l}.attn_norm.bias")),
                    eps,
                ),
                qkv: lin(&format!("blk.{l}.attn_qkv")),
                o: lin(&format!("blk.{l}.attn_output")),
                up: lin(&format!("blk.{l}.ffn_up")),
                down: lin(&format!("blk.{l}.ffn_down")),
            })
            .collect();
        Phi2Ref {
            emb: deq("token_embd.weight"),
            norm: candle_nn::LayerNorm::new(
                deq("output_norm.weight"),
                deq("output_norm.bias"),
                eps,
            ),
            out: lin("output"),
            layers,
            heads: u("phi2.attention.head_count"),
            rot: u("phi2.rope.dimension_count"),
            f16_gelu,
            history: Vec::new(),
            meta,
        }
    }

    fn logits(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        use candle_core::{Module, D};
        let dev = Device::Cpu;
        let lin = |l: &(candle_core::quantized::QMatMul, Tensor), x: &Tensor| {
            l.0.forward(x)?.broadcast_add(&l.1)
        };
        let t = ids.len();
        let mut x = self
            .emb
            .index_select(&Tensor::new(ids, &dev)?, 0)?
            .unsqueeze(0)?;
        let e = x.dim(2)?;
        let hd = e / self.heads;
        let theta: Vec<f32> = (0..self.rot)
            .step_by(2)
            .map(|i| 1.0 / 10_000f32.powf(i as f32 / self.rot as f32))
            .collect();
        let theta = Tensor::new(theta.as_slice(), &dev)?;
        let ang = Tensor::arange(0u32, t as u32, &dev)?
            .to_dtype(candle_core::DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&theta.unsqueeze(0)?)?;
        let (cos, sin) = (ang.cos()?, ang.sin()?);
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev)?;
        let rope = |z: &Tensor| -> candle_core::Result<Tensor> {
            let r = candle_nn::rotary_emb::rope(
                &z.narrow(D::Minus1, 0, self.rot)?.contiguous()?,
                &cos,
                &sin,
            )?;
            Tensor::cat(
                &[&r, &z.narrow(D::Minus1, self.rot, hd - self.rot)?],
                D::Minus1,
            )
        };
        for l in &self.layers {
            let h = l.norm.forward(&x)?;
            let qkv = lin(&l.qkv, &h)?.reshape((1, t, 3, self.heads, hd))?;
            let part = |i: usize| {
                qkv.narrow(2, i, 1)?
                    .squeeze(2)?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (rope(&part(0)?)?, rope(&part(1)?)?, part(2)?);
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?;
            let att = lin(&l.o, &att.transpose(1, 2)?.reshape((1, t, e))?)?;
            let up = lin(&l.up, &h)?;
            let act = if self.f16_gelu {
                ggml_gelu_f16(&up)?
            } else {
                up.gelu()?
            };
            x = ((x + att)? + lin(&l.down, &act)?)?;
        }
        let last = self.norm.forward(&x)?.narrow(1, t - 1, 1)?.squeeze(1)?;
        lin(&self.out, &last)?.squeeze(0)
    }
}

impl CausalLm for Phi2Ref {
    fn reset(&mut self) -> modelbench::models::Result<()> {
        self.history.clear();
        Ok(())
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> modelbench::models::Result<Tensor> {
        self.history.truncate(pos);
        self.history.extend_from_slice(tokens);
        Ok(self.logits(&self.history)?)
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        &Device::Cpu
    }
}

/// Where candle's quantized_phi and llama.cpp disagree on the phi2 fixture (the PPL-ratio
/// check; docs/models.md): Phi-2 written out with candle's ops reproduces candle's verdict
/// with the f32 GELU of the reference definition, and passes with ggml's f16 GELU table, so
/// the gap is llama.cpp's GELU, not candle's model.
#[test]
fn phi2_gap_is_ggml_f16_gelu() {
    if !have_llama_cpp() {
        return;
    }
    // The fixture with its q/k at the writer's sharpening only (a third of the fixture's):
    // attention flatter, the MLP's share of the logits larger.
    let (fixture, _) = reference("phi2");
    let path = mutated_path(&fixture, "phi2-qk-third");
    write_mutated(&fixture, &path, |md, ts| {
        let e = md_u32(md, "phi2.embedding_length");
        map_tensors(
            ts,
            |n| n.ends_with(".attn_qkv.weight") || n.ends_with(".attn_qkv.bias"),
            |_, t| {
                let qk = (t.narrow(0, 0, 2 * e).unwrap() / 3.0).unwrap();
                Tensor::cat(&[&qk, &t.narrow(0, 2 * e, e).unwrap()], 0).unwrap()
            },
        )
    });
    let r = reference_of(&path);
    let meta = load_with(&path, None, &Device::Cpu, Some(N_CTX))
        .unwrap()
        .meta()
        .clone();
    let mut verdicts = Vec::new();
    for f16_gelu in [false, true] {
        let mut m = Phi2Ref::load(&path, f16_gelu, meta.clone());
        let label = format!(
            "Phi-2 from candle ops, GELU {}",
            if f16_gelu {
                "as ggml (f16 table)"
            } else {
                "in f32 (HF, candle)"
            }
        );
        let v = run_kld_gate(
            &mut m,
            &path.display().to_string(),
            &label,
            &r,
            "test",
            None,
        )
        .unwrap();
        eprintln!("{label}:\n{}", table(&v));
        verdicts.push(v.passed);
    }
    assert_eq!(
        verdicts,
        [false, true],
        "f32 GELU fails, ggml's f16 GELU passes"
    );
}

/// candle-transformers 0.11.1's quantized_lfm2 keeps its short-convolution state wrong in two
/// cases (docs/models.md): a multi-token forward after position 0 starts the convolution from
/// zeros instead of the saved state, and a one-token forward at position 0 continues from the
/// previous sequence's state. Shown on candle's model directly; the suite's wrapper (one token
/// at a time after the start, a reload before a one-token start) gives the exact logits.
#[test]
fn candle_lfm2_conv_state_bugs_are_routed_around() {
    use candle_transformers::models::quantized_lfm2::ModelWeights;
    let path = modelbench::models::sources::gguf_fixture_named("lfm2").unwrap();
    let raw = || {
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap()
    };
    let ids: Vec<u32> = vec![128000, 791, 1917, 374, 264, 1296, 315, 279];
    let t = |x: &[u32]| Tensor::new(x, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let diff = |a: &Tensor, b: &Tensor| -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    // Chunked prefill.
    let whole = raw().forward(&t(&ids), 0).unwrap();
    let mut m = raw();
    m.forward(&t(&ids[..4]), 0).unwrap();
    let chunked = m.forward(&t(&ids[4..]), 4).unwrap();
    let chunk_gap = diff(&whole, &chunked);
    // A one-token start after another sequence.
    let fresh = raw().forward(&t(&ids[..1]), 0).unwrap();
    let mut m = raw();
    m.forward(&t(&ids[2..]), 0).unwrap();
    let stale = m.forward(&t(&ids[..1]), 0).unwrap();
    let stale_gap = diff(&fresh, &stale);
    eprintln!("candle quantized_lfm2: chunked prefill differs by {chunk_gap:e}, a one-token start after another sequence by {stale_gap:e} (max |logit difference|)");
    assert!(chunk_gap > 1e-3 && stale_gap > 1e-3);
    // Through the suite.
    let mut lm = load_with(&path, None, &Device::Cpu, Some(64)).unwrap();
    lm.forward(&ids[..4], 0).unwrap();
    let ours_chunked = lm.forward(&ids[4..], 4).unwrap();
    lm.reset().unwrap();
    let ours_start = lm.forward(&ids[..1], 0).unwrap();
    let (a, b) = (
        diff(&whole.squeeze(0).unwrap(), &ours_chunked),
        diff(&fresh.squeeze(0).unwrap(), &ours_start),
    );
    eprintln!("through the suite: {a:e}, {b:e}");
    assert!(a < 1e-4 && b < 1e-4, "{a} {b}");
}
