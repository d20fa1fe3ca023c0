//! The project's own quantized Llama and Qwen3 (`modelbench::models::quantized::llama`,
//! `gguf:<file>?impl=modelbench`): against candle-transformers' quantized models on the same
//! GGUF file, and continuous batching (a request's greedy tokens and logits do not depend on
//! what else is in the batch). On the project's Q8_0 fixtures (`gguf:fixture:llama`,
//! `gguf:fixture:qwen3`): offline, no download.

#[path = "common/batched.rs"]
mod batched;
mod common;

use std::path::PathBuf;

use batched::{
    alone_and_batched, assert_bit_equal, chunks_of, failed_step, max_diff, run_batched, run_single,
};
use candle_core::Device;
use modelbench::engine::sampling::argmax;
use modelbench::models::families::GgufImpl;
use modelbench::models::quantized::llama::{Batched, ModelWeights, Wrong};
use modelbench::models::quantized::parts::SingleSeq;
use modelbench::models::sources::gguf::load_with;
use modelbench::models::{own_weights, CausalLm, Family};

fn fixture(fam: Family) -> PathBuf {
    modelbench::models::sources::gguf_fixture(fam).unwrap()
}

fn load(path: &std::path::Path, imp: GgufImpl, cap: usize) -> Box<dyn CausalLm> {
    load_with(path, Some(imp), &Device::Cpu, Some(cap)).unwrap()
}

/// Logits after each of `toks[..n]` for n in `at` (teacher-forced: the same tokens for every
/// model), the prompt in `chunks` then one token at a time.
fn logits_along(m: &mut dyn CausalLm, toks: &[u32], prompt: usize, chunks: usize) -> Vec<Vec<f32>> {
    m.reset().unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < prompt {
        let n = chunks.min(prompt - pos);
        let l = common::logits(&m.forward(&toks[pos..pos + n], pos).unwrap());
        pos += n;
        if pos == prompt {
            out.push(l);
        }
    }
    while pos < toks.len() {
        out.push(common::logits(
            &m.forward(&toks[pos..pos + 1], pos).unwrap(),
        ));
        pos += 1;
    }
    out
}

/// Greedy ids: the prompt in one forward, then `n_new` tokens.
fn greedy(m: &mut dyn CausalLm, prompt: &[u32], n_new: usize) -> Vec<u32> {
    m.reset().unwrap();
    let mut l = common::logits(&m.forward(prompt, 0).unwrap());
    let mut out = Vec::new();
    let mut pos = prompt.len();
    loop {
        let t = argmax(&l);
        out.push(t);
        if out.len() == n_new {
            return out;
        }
        l = common::logits(&m.forward(&[t], pos).unwrap());
        pos += 1;
    }
}

/// A copy of the fixture of `fam` with `general.dtype = 0` in its metadata: candle-transformers'
/// quantized Qwen3 then builds its RoPE tables in f32 (without the key it builds them in f16,
/// which rounds the angles; llama.cpp and this project's implementation compute them in f32).
/// The project's model ignores the key.
fn with_f32_tables(fam: Family, dir: &std::path::Path) -> PathBuf {
    common::rewrite(fam, dir, |md, _| {
        md.insert(
            "general.dtype".into(),
            candle_core::quantized::gguf_file::Value::U32(0),
        );
    })
}

const FAMILIES: [Family; 2] = [Family::Llama, Family::Qwen3];

/// Prompt `i` of `n` ids.
fn prompt(n: usize, vocab: usize, i: usize) -> Vec<u32> {
    modelbench::engine::generate::prompt_ids(n, vocab, 11, i as u64)
}

/// The largest difference between two runs' logits, step by step, and the largest logit.
fn worst(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0f32, 0f32), |(d, s), (x, y)| {
        let (dd, ss) = max_diff(x, y);
        (d.max(dd), s.max(ss))
    })
}

/// The project's model (`impl=modelbench`) against candle-transformers 0.11.1's quantized
/// Llama / Qwen3 on the same fixture file: the same greedy ids, and the logits after a prompt
/// and 11 decode steps (teacher-forced: both fed the same ids) within the tolerance below.
///
/// Tolerance: twice the reference's own spread between its two ways of running the same ids
/// (the prompt in one forward vs token by token: a different kernel path in candle's Qwen3,
/// flash attention vs its fused decode kernel), plus 1e-5 of the logit scale for f32
/// summation order. Measured on these fixtures: the reference's spread is 0, and the project's
/// model gives bit-equal logits (both run the same candle kernels on the same shapes, the
/// project's with candle's softmax and RoPE angles: `match_candle_arithmetic`).
/// candle's Qwen3 builds its RoPE tables in f16 unless `general.dtype` is 0 (f32), so the
/// comparison runs on a copy of the file with that key set; on the file as it is the
/// difference is the f16 rounding of the angles (measured: 7.1e-3 at a logit scale of 1.09,
/// same greedy ids), which the last check reports and bounds loosely.
#[test]
fn own_llama_and_qwen3_match_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    for fam in FAMILIES {
        let path = with_f32_tables(fam, dir.path());
        let mut ours = load(&path, GgufImpl::Modelbench, 512);
        let mut theirs = load(&path, GgufImpl::CandleTransformers, 512);
        // Like for like: the project's models sum each softmax row in order (the same bits
        // wherever a prefill chunk ends; candle's kernel sums the row's first len & !31
        // entries in SIMD lanes). With the row-order sum the 100-token prompt in one forward
        // read 1.8e-2 from candle's logits (Q8_0 activations amplify a last-bit difference),
        // against a tolerance of 8.3e-5; the row-order sum is judged against llama.cpp by
        // the KLD gates (tests/kld.rs, tests/families.rs).
        assert!(
            ours.match_candle_arithmetic(),
            "{fam}: the softmax can be matched"
        );
        assert!(ours
            .meta()
            .provenance
            .implementation
            .starts_with("modelbench quantized_"));
        assert!(theirs
            .meta()
            .provenance
            .implementation
            .starts_with("candle-transformers"));
        let vocab = ours.meta().vocab;
        let mut spread_seen = false;
        for (i, n) in [7usize, 40, 100].into_iter().enumerate() {
            let p = prompt(n, vocab, i);
            let g_ref = greedy(theirs.as_mut(), &p, 12);
            let g_own = greedy(ours.as_mut(), &p, 12);
            assert_eq!(g_own, g_ref, "{fam} prompt {n}: greedy ids");
            let mut toks = p.clone();
            toks.extend_from_slice(&g_ref[..11]);
            let whole = logits_along(theirs.as_mut(), &toks, n, n);
            let by_token = logits_along(theirs.as_mut(), &toks, n, 1);
            let (own_spread, scale) = worst(&whole, &by_token);
            let tol = 2.0 * own_spread + 1e-5 * scale;
            for (how, chunk) in [("prompt in one forward", n), ("token by token", 1)] {
                let reference = if chunk == 1 { &by_token } else { &whole };
                let mine = logits_along(ours.as_mut(), &toks, n, chunk);
                let (d, _) = worst(reference, &mine);
                eprintln!("{fam} prompt {n} ({how}): ours vs candle-transformers {d:.3e}, reference's own spread {own_spread:.3e}, logit scale {scale:.3}");
                assert!(d <= tol, "{fam} prompt {n} ({how}): {d} > tolerance {tol}");
            }
            // The logits move with the context (a comparison of constant outputs could not fail).
            let (moved, _) = max_diff(&whole[0], &whole[whole.len() - 1]);
            spread_seen |= moved > 1e-2 * scale;
        }
        assert!(
            spread_seen,
            "{fam}: logits never changed along the sequence"
        );
    }
    // candle's Qwen3 as it loads the file itself builds f16 RoPE tables (docs/models.md): on
    // the sharpened fixture that alone changes its greedy ids (measured 2026-11-25: 114194
    // where f32 tables, ours and llama.cpp's gate agree on 7424), while with f32 tables it
    // agrees with ours (above). Both sides: the f16 tables are what differs.
    let path = fixture(Family::Qwen3);
    let dir = tempfile::tempdir().unwrap();
    let f32_path = with_f32_tables(Family::Qwen3, dir.path());
    let mut ours = load(&path, GgufImpl::Modelbench, 512);
    let mut f16 = load(&path, GgufImpl::CandleTransformers, 512);
    let mut f32 = load(&f32_path, GgufImpl::CandleTransformers, 512);
    let p = prompt(100, ours.meta().vocab, 2);
    let g = greedy(ours.as_mut(), &p, 12);
    assert_eq!(
        greedy(f32.as_mut(), &p, 12),
        g,
        "qwen3, candle with f32 tables: greedy ids"
    );
    let (d16, sc) = max_diff(
        &ours_logits(ours.as_mut(), &p),
        &ours_logits(f16.as_mut(), &p),
    );
    let (d32, _) = max_diff(
        &ours_logits(ours.as_mut(), &p),
        &ours_logits(f32.as_mut(), &p),
    );
    assert!(
        d16 > 10.0 * d32.max(1e-6 * sc),
        "qwen3: candle's f16 tables ({d16}) should differ from ours far beyond its f32 tables ({d32}) at scale {sc}"
    );
    eprintln!("qwen3, candle's RoPE tables: ours vs f16 {d16:.3e}, vs f32 {d32:.3e} at logit scale {sc:.3}");
}

/// The same comparison can fail: a Qwen3 that skips its q/k norms, and either family with RoPE
/// in the other layout, differ from candle-transformers by more than 100 times the tolerance
/// of [`own_llama_and_qwen3_match_candle_transformers`] (1e-5 of the logit scale there).
/// Measured: Qwen3 without q/k norms 0.19, Qwen3 with interleaved RoPE 0.15, Llama with NeoX
/// RoPE 8.0e-3 (the fixture's random attention weights move the logits little), at a logit
/// scale of 1.17.
#[test]
fn a_wrong_variant_differs_from_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    for (fam, wrong) in [
        (Family::Qwen3, Wrong::SkipQkNorm),
        (Family::Qwen3, Wrong::OtherRopeLayout),
        (Family::Llama, Wrong::OtherRopeLayout),
    ] {
        let path = with_f32_tables(fam, dir.path());
        let mut theirs = load(&path, GgufImpl::CandleTransformers, 512);
        let ours = load(&path, GgufImpl::Modelbench, 512);
        let mut bad: ModelWeights = own_weights::<ModelWeights>(&*ours)
            .unwrap()
            .wrong(wrong)
            .unwrap();
        // Like for like with candle, as the test above: only the wrong part differs.
        assert!(bad.match_candle_arithmetic());
        let p = prompt(40, ours.meta().vocab, 1);
        let reference = common::logits(&theirs.forward(&p, 0).unwrap());
        let x = candle_core::Tensor::new(p.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let got: Vec<f32> = bad.forward(&x, 0).unwrap().to_vec1().unwrap();
        let (d, scale) = max_diff(&reference, &got);
        eprintln!("{fam} {wrong:?}: {d:.3e} from candle-transformers at logit scale {scale:.3}");
        assert!(
            d > 1e-3 * scale,
            "{fam} {wrong:?}: only {d} from the reference"
        );
    }
}

/// Alone and batched (staggered joins, so prefill chunks and decodes share steps; prompts of
/// different lengths, chunked prefill) give the same greedy ids and bit-equal logits, for both
/// families; the batched path also gives the single-sequence path's ids and logits (the same
/// code, the same chunks) and candle-transformers' greedy ids.
#[test]
fn llama_and_qwen3_alone_and_batched_are_bit_equal() {
    let (lens, chunk, n_new) = ([5usize, 40, 100, 150, 1], 32, 12);
    for fam in FAMILIES {
        let path = fixture(fam);
        let mut single = load(&path, GgufImpl::Modelbench, 512);
        let b = Batched::new(own_weights::<ModelWeights>(&*single).unwrap()).unwrap();
        eprintln!("{fam}: {} weights run a lone row as two", b.lone_as_two());
        let vocab = single.meta().vocab;
        let prompts: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| prompt(n, vocab, i))
            .collect();
        let join: Vec<usize> = (0..prompts.len()).map(|i| i * 2).collect();
        let (alone, batched, most) = alone_and_batched(&b, &prompts, &join, n_new, chunk);
        assert!(most >= 3, "{fam}: the batch held {most} sequences at most");
        assert_bit_equal(&fam.to_string(), &alone, &batched);
        // candle's Qwen3 with f32 RoPE tables (its f16 default deviates: docs/models.md).
        let dir = tempfile::tempdir().unwrap();
        let ref_path = with_f32_tables(fam, dir.path());
        let mut reference = load(&ref_path, GgufImpl::CandleTransformers, 512);
        for (i, p) in prompts.iter().enumerate() {
            let s = run_single(single.as_mut(), p, &chunks_of(p.len(), chunk), n_new);
            assert_eq!(
                s.tokens, alone[i].tokens,
                "{fam} prompt {i}: single-sequence ids"
            );
            let (d, sc) = worst(&s.logits, &alone[i].logits);
            assert!(
                d <= 1e-5 * sc,
                "{fam} prompt {i}: single-sequence vs batched logits {d} at scale {sc}"
            );
            assert_eq!(
                greedy(reference.as_mut(), p, n_new),
                alone[i].tokens,
                "{fam} prompt {i}: candle-transformers' greedy ids"
            );
        }
    }
}

/// The mixtures of experts (`gguf:fixture:qwen3moe`, and `gguf:fixture:mixtral` with
/// `?impl=modelbench`), the fused weights of Phi-3, Phi-2 and GLM-4, GLM-4's post-norms,
/// Phi-2's parallel block, LFM2's short convolutions and StarCoder2's LayerNorm block (each
/// fixture with
/// `?impl=modelbench`): alone and batched give bit-equal logits and the same greedy ids, so an
/// expert's rows from several sequences in one matmul compute as each alone and a
/// convolution's state stays its sequence's; the batched path gives the single-sequence
/// path's ids; for all but qwen3moe also candle-transformers' greedy ids on the same file
/// (qwen3moe has no CPU reference in candle and starcoder2 no candle implementation: their
/// gates against llama.cpp are `tests/families.rs`).
#[test]
fn experts_and_fused_weights_alone_and_batched_are_bit_equal() {
    let (lens, chunk, n_new) = ([5usize, 40, 100, 1], 32, 10);
    for name in [
        "qwen3moe",
        "mixtral",
        "phi3",
        "glm4",
        "phi2",
        "lfm2",
        "starcoder2",
    ] {
        let path = modelbench::models::sources::gguf_fixture_named(name).unwrap();
        let mut single = load(&path, GgufImpl::Modelbench, 512);
        let moe = matches!(name, "qwen3moe" | "mixtral");
        assert_eq!(single.meta().experts.is_some(), moe, "{name}");
        let b = Batched::new(own_weights::<ModelWeights>(&*single).unwrap()).unwrap();
        let vocab = single.meta().vocab;
        let prompts: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| prompt(n, vocab, i + 7))
            .collect();
        let join: Vec<usize> = (0..prompts.len()).map(|i| i * 2).collect();
        let (alone, batched, most) = alone_and_batched(&b, &prompts, &join, n_new, chunk);
        assert!(most >= 3, "{name}: the batch held {most} sequences at most");
        assert_bit_equal(name, &alone, &batched);
        let mut reference =
            // qwen3moe: candle's runs on CUDA only; starcoder2: candle has none.
            (!matches!(name, "qwen3moe" | "starcoder2"))
                .then(|| load(&path, GgufImpl::CandleTransformers, 512));
        for (i, p) in prompts.iter().enumerate() {
            let s = run_single(single.as_mut(), p, &chunks_of(p.len(), chunk), n_new);
            assert_eq!(
                s.tokens, alone[i].tokens,
                "{name} prompt {i}: single-sequence ids"
            );
            if let Some(r) = reference.as_mut() {
                assert_eq!(
                    greedy(r.as_mut(), p, n_new),
                    alone[i].tokens,
                    "{name} prompt {i}: candle-transformers' greedy ids"
                );
            }
        }
    }
}

#[test]
fn a_step_past_the_context_is_an_error_not_a_panic() {
    let m = load(&fixture(Family::Llama), GgufImpl::Modelbench, 64);
    let b = Batched::new(own_weights::<ModelWeights>(&*m).unwrap()).unwrap();
    let (e, c) = failed_step(&b, 65);
    assert!(e.contains("exceed the 64 positions"), "{e}");
    assert_eq!(c.pos(), 0);
}

/// `modelbench verify --served` judges the served computation (`serving::server::served`): for
/// the project's Llama / Qwen3 it is the batched path with the server's prefill chunks, bit for
/// bit, and its meta says so (a quality verdict of it is stored apart from the bench path's).
#[test]
fn the_served_computation_is_the_batched_path() {
    use modelbench::serving::server::{served, Options};
    for fam in FAMILIES {
        let path = fixture(fam);
        let m = load(&path, GgufImpl::Modelbench, 512);
        let b = Batched::new(own_weights::<ModelWeights>(&*m).unwrap()).unwrap();
        let mut o = Options::new("fixture", 512);
        o.prefill_chunk = 32;
        let mut s = served(m, &o).unwrap();
        let imp = s.meta().provenance.implementation.clone();
        assert!(
            imp.starts_with(&format!("modelbench quantized_{fam}"))
                && imp
                    .contains("as `modelbench serve` runs it (batched path, prefill chunks of 32"),
            "{imp}"
        );
        let p = prompt(100, s.meta().vocab, 3);
        let alone = run_batched(&b, std::slice::from_ref(&p), &[0], 6, 32).0[0].clone();
        // The whole prompt in one call: Served cuts it at 32, 64, 96 as the scheduler does.
        let got = run_single(&mut s, &p, &[p.len()], 6);
        assert_eq!(got.tokens, alone.tokens, "{fam}");
        for (x, y) in got.logits.iter().zip(&alone.logits) {
            assert!(
                x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{fam}"
            );
        }
    }
}

/// Deterministic values in [-a, a) (a small LCG: the file is the same on every run).
fn values(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// A small GGUF of `fam` with the weight types of a real Q4_K_M file (Q4_K, and Q6_K for
/// `attn_v`, `ffn_down` and `output` as llama.cpp's Q4_K_M mix puts them), 256 wide so the
/// k-quants apply (the fixtures are Q8_0, 64 wide): Q6_K's x86 kernel computes one row
/// differently from several, so this exercises the batched path's lone-row rule inside a
/// model. Seeded values; `general.dtype = 0` so candle's Qwen3 builds f32 RoPE tables.
fn k_quant_file(fam: Family, dir: &std::path::Path) -> PathBuf {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    let a = if fam == Family::Qwen3 {
        "qwen3"
    } else {
        "llama"
    };
    let (hidden, ffn, layers, heads, kv, hd, vocab) = (256usize, 512usize, 2, 4, 2, 64, 1024);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.dtype".into(), Value::U32(0)),
        (format!("{a}.attention.head_count"), Value::U32(heads)),
        (format!("{a}.attention.head_count_kv"), Value::U32(kv)),
        (format!("{a}.block_count"), Value::U32(layers)),
        (format!("{a}.embedding_length"), Value::U32(hidden as u32)),
        (format!("{a}.feed_forward_length"), Value::U32(ffn as u32)),
        (format!("{a}.context_length"), Value::U32(1024)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(10000.)),
        (format!("{a}.rope.dimension_count"), Value::U32(hd)),
    ];
    if fam == Family::Qwen3 {
        md.push((format!("{a}.attention.key_length"), Value::U32(hd)));
    }
    let mut seed = 0u64;
    let mut t = |rows: usize, cols: usize, dt: GgmlDType, amp: f32| {
        seed += 1;
        let v = values(rows * cols, seed, amp);
        let x = if rows == 1 {
            // A norm weight: around 1.
            candle_core::Tensor::from_vec(
                v.iter().map(|x| 1.0 + x).collect::<Vec<_>>(),
                cols,
                &Device::Cpu,
            )
        } else {
            candle_core::Tensor::from_vec(v, (rows, cols), &Device::Cpu)
        }
        .unwrap();
        QTensor::quantize(&x, dt).unwrap()
    };
    let (q4, q6, f) = (GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::F32);
    let mut ts: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), t(vocab, hidden, q4, 1.0)),
        ("output_norm.weight".into(), t(1, hidden, f, 0.2)),
        ("output.weight".into(), t(vocab, hidden, q6, 0.1)),
    ];
    let w = 1.0 / (hidden as f32).sqrt() * 1.7;
    for l in 0..layers {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        ts.push((b("attn_q"), t(heads as usize * hd as usize, hidden, q4, w)));
        ts.push((b("attn_k"), t(kv as usize * hd as usize, hidden, q4, w)));
        ts.push((b("attn_v"), t(kv as usize * hd as usize, hidden, q6, w)));
        ts.push((
            b("attn_output"),
            t(hidden, heads as usize * hd as usize, q4, w),
        ));
        ts.push((b("ffn_gate"), t(ffn, hidden, q4, w)));
        ts.push((b("ffn_up"), t(ffn, hidden, q4, w)));
        ts.push((
            b("ffn_down"),
            t(hidden, ffn, q6, 1.0 / (ffn as f32).sqrt() * 1.7),
        ));
        ts.push((b("attn_norm"), t(1, hidden, f, 0.2)));
        ts.push((b("ffn_norm"), t(1, hidden, f, 0.2)));
        if fam == Family::Qwen3 {
            ts.push((b("attn_q_norm"), t(1, hd as usize, f, 0.2)));
            ts.push((b("attn_k_norm"), t(1, hd as usize, f, 0.2)));
        }
    }
    let out = dir.join(format!("{a}-k-quants.gguf"));
    let mut file = std::fs::File::create(&out).unwrap();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = ts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &md_refs, &t_refs).unwrap();
    out
}

/// With the weight types of a real Q4_K_M file (Q4_K and Q6_K): the project's model, with
/// candle's softmax and RoPE angles (`match_candle_arithmetic`), agrees
/// with candle-transformers' (same greedy ids; logits within the tolerance of
/// [`own_llama_and_qwen3_match_candle_transformers`]), and alone and batched stay bit-equal,
/// a lone row of a Q6_K weight run as two. Measured: here the reference's own spread is not 0
/// (up to 5.3e-2 at a logit scale of 3.8: its token-by-token decode runs Q6_K's one-row
/// kernel, and activations quantized to 8 bits amplify a last-bit difference where one
/// crosses a rounding boundary); the project's Llama gives candle's logits bit for bit, its
/// Qwen3 is within 4.7e-2 of them at a logit scale of 3.6 (candle's Qwen3 prefill runs its CPU
/// flash attention, ours a matmul and softmax), under the tolerance of 2 x 4.7e-2.
#[test]
fn k_quant_llama_and_qwen3_match_candle_and_batch_bit_equal() {
    let dir = tempfile::tempdir().unwrap();
    for fam in FAMILIES {
        let path = k_quant_file(fam, dir.path());
        let mut ours = load(&path, GgufImpl::Modelbench, 512);
        // Against candle like for like: its softmax and its RoPE angles (the project's
        // decoders compute the angles as ggml does; on this fixture the last-bit difference
        // alone changed Llama's greedy ids at prompt 30).
        let mut like = load(&path, GgufImpl::Modelbench, 512);
        assert!(like.match_candle_arithmetic(), "{fam}: candle's arithmetic");
        let mut theirs = load(&path, GgufImpl::CandleTransformers, 512);
        let vocab = ours.meta().vocab;
        let prompts: Vec<Vec<u32>> = [3usize, 30, 70, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| prompt(n, vocab, i))
            .collect();
        for p in &prompts {
            let n = p.len();
            let g = greedy(theirs.as_mut(), p, 8);
            assert_eq!(
                greedy(like.as_mut(), p, 8),
                g,
                "{fam} prompt {n}: greedy ids"
            );
            let mut toks = p.clone();
            toks.extend_from_slice(&g[..7]);
            let whole = logits_along(theirs.as_mut(), &toks, n, n);
            let by_token = logits_along(theirs.as_mut(), &toks, n, 1);
            let (own_spread, scale) = worst(&whole, &by_token);
            let tol = 2.0 * own_spread + 1e-5 * scale;
            let (d, _) = worst(&whole, &logits_along(like.as_mut(), &toks, n, n));
            eprintln!("{fam} k-quants prompt {n}: ours vs candle-transformers {d:.3e}, reference's own spread {own_spread:.3e}, logit scale {scale:.3}");
            assert!(d <= tol, "{fam} prompt {n}: {d} > tolerance {tol}");
            let (moved, _) = max_diff(&whole[0], &whole[whole.len() - 1]);
            assert!(
                moved > 1e-2 * scale,
                "{fam}: logits did not move along the sequence"
            );
        }
        let b = Batched::new(own_weights::<ModelWeights>(&*ours).unwrap()).unwrap();
        eprintln!(
            "{fam} k-quants: {} weights run a lone row as two",
            b.lone_as_two()
        );
        let (alone, batched, most) = alone_and_batched(&b, &prompts, &[0, 1, 3, 4], 8, 16);
        assert!(most >= 3, "{fam}: the batch held {most} sequences at most");
        assert_bit_equal(&format!("{fam} k-quants"), &alone, &batched);
        for (i, a) in alone.iter().enumerate() {
            let s = run_single(
                ours.as_mut(),
                &prompts[i],
                &chunks_of(prompts[i].len(), 16),
                8,
            );
            assert_eq!(s.tokens, a.tokens, "{fam} prompt {i}: single-sequence ids");
        }
    }
}

/// The logits of the last prompt position.
fn ours_logits(m: &mut dyn CausalLm, p: &[u32]) -> Vec<f32> {
    m.reset().unwrap();
    common::logits(&m.forward(p, 0).unwrap())
}
