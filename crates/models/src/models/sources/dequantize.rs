//! A GGUF model dequantized into a Hugging Face folder (config.json, model.safetensors in
//! f32, tokenizer.json), so the non-quantized path (candle-transformers' safetensors model of
//! the family, through the directory source) can be checked against the same llama.cpp
//! reference as the GGUF. Gemma 3, Qwen2 and Llama (Llama 3.x `rope_freqs.weight` included).
//!
//! What llama.cpp's converter changed on the way to GGUF is undone here:
//! - Gemma 3: norm weights are stored as `1 + w`; HF's Gemma RmsNorm adds the 1, so `w` is
//!   written.
//! - Llama: the rows of `attn_q` / `attn_k` are permuted so that RoPE over adjacent pairs
//!   (`2i, 2i+1`, llama.cpp's NORM layout) computes what HF's half rotation (pairs `i, i + d/2`)
//!   computes on the original rows; the inverse permutation is applied. Qwen2 and Gemma 3 use
//!   the half rotation in GGUF too (NeoX layout): nothing to undo.
//! - Llama 3.x: the per-pair frequency divisors of `rope_freqs.weight` become config.json's
//!   `llama3` rope_scaling, recovered from the divisors and checked to reproduce every one
//!   of them; a file whose divisors follow no such rule is refused.
//!
//! config.json records the GGUF it came from (`modelbench_gguf`: path and sha256), so
//! `modelbench verify --model <folder>` finds the llama.cpp reference file by itself.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::models::families::fixture::hf_name;
use crate::models::families::llama::llama3_rope_factors;
use crate::models::families::md_str;
use crate::models::gguf::check::read_header;
use crate::models::sources::gguf::family;
use crate::models::Family;

/// The families `gguf_to_hf` writes.
pub const FAMILIES: &str = "gemma3, qwen2, llama";

fn md_u(ct: &Content, key: &str) -> Option<u64> {
    let v = ct.metadata.get(key)?;
    v.to_u32().map(u64::from).ok().or_else(|| v.to_u64().ok())
}

fn md_f(ct: &Content, key: &str) -> Option<f64> {
    ct.metadata.get(key)?.to_f32().ok().map(f64::from)
}

/// The inverse of llama.cpp's `attn_q` / `attn_k` row permutation (its converter's
/// `permute`: per head, HF rows `i` and `i + d/2` become rows `2i` and `2i + 1`). `t` is
/// (heads * head_dim, ...) or a bias (heads * head_dim).
pub fn unpermute_rope_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(Error::Model(format!(
            "cannot undo the RoPE row permutation: {rows} rows, {heads} heads"
        )));
    }
    let hd = rows / heads;
    Ok(t.reshape((heads, hd / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// Llama 3 rope_scaling (factor, low_freq_factor, high_freq_factor,
/// original_max_position_embeddings) that reproduces `divisors` (`rope_freqs.weight`: one per
/// pair of a `head_dim`-wide head, RoPE base `base`), within 1e-3 relative, or why none does.
///
/// Within the rule, a divisor is 1 (short wavelengths), `factor` (long ones) or, between,
/// `1 / ((1 - s) / factor + s)` with `s = a / wavelength - b` (`a = original / (high - low)`,
/// `b = low / (high - low)`): only `a` and `b` are determined, so `low` is written as 1. With
/// fewer than two divisors between, Llama 3.x's own values (low 1, high 4, original 8192),
/// then low 1 and high 4 with the original context that one divisor between implies, are
/// tried.
pub fn llama3_scaling_of(
    divisors: &[f32],
    head_dim: usize,
    base: f32,
) -> std::result::Result<(f32, f32, f32, f32), String> {
    let factor = divisors.iter().fold(1f32, |m, &x| m.max(x));
    if divisors.iter().any(|&x| !x.is_finite() || x < 0.999) {
        return Err("rope_freqs.weight holds a divisor below 1 or not finite".into());
    }
    let wavelen = |i: usize| std::f32::consts::TAU * base.powf((2 * i) as f32 / head_dim as f32);
    let between: Vec<(f64, f64)> = divisors
        .iter()
        .enumerate()
        .filter(|(_, &d)| d > 1.0 + 1e-4 && d < factor * (1.0 - 1e-4))
        .map(|(i, &d)| {
            let s = (1.0 / d as f64 - 1.0 / factor as f64) / (1.0 - 1.0 / factor as f64);
            (1.0 / wavelen(i) as f64, s)
        })
        .collect();
    let mut candidates = vec![(factor, 1.0, 4.0, 8192.0)];
    if let Some(&(x, s)) = between.first() {
        // Llama 3's low 1 and high 4, the original context from one divisor between.
        candidates.push((factor, 1.0, 4.0, ((3.0 * s + 1.0) / x) as f32));
    }
    if between.len() >= 2 {
        // Least squares s = a x - b.
        let n = between.len() as f64;
        let (sx, sy) = between
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let (sxy, sxx) = between.iter().fold((0.0, 0.0), |(p, q), (x, y)| {
            (p + (x - mx) * (y - my), q + (x - mx) * (x - mx))
        });
        if sxx > 0.0 {
            let a = sxy / sxx;
            let b = a * mx - my;
            if a > 0.0 && b > 0.0 {
                candidates.push((factor, 1.0, (1.0 + 1.0 / b) as f32, (a / b) as f32));
            }
        }
    }
    for (f, low, high, orig) in candidates {
        let got = llama3_rope_factors(head_dim, base, f, low, high, orig);
        if got.len() == divisors.len()
            && got
                .iter()
                .zip(divisors)
                .all(|(g, d)| (g - d).abs() <= 1e-3 * d.abs().max(1.0))
        {
            return Ok((f, low, high, orig));
        }
    }
    Err(format!(
        "rope_freqs.weight ({} divisors, largest {factor}) follows no Llama 3 rope_scaling rule, which is all a config.json can express",
        divisors.len()
    ))
}

/// Writes `out/` (config.json, model.safetensors in f32, tokenizer.json when `tokenizer` is
/// given) from a Gemma 3, Qwen2 or Llama GGUF.
pub fn gguf_to_hf(gguf: &Path, tokenizer: Option<&Path>, out: &Path) -> Result<()> {
    let ct = read_header(gguf)?;
    let fam = family(gguf, &ct)?;
    let bad = |reason: String| Error::weights(gguf.display(), reason);
    let arch = match fam {
        Family::Gemma3 => "gemma3",
        Family::Qwen2 => "qwen2",
        Family::Llama => "llama",
        other => {
            return Err(bad(format!(
                "dequantizing to a HF folder supports {FAMILIES}, not {other}"
            )))
        }
    };
    let need = |k: &str| {
        md_u(&ct, &format!("{arch}.{k}")).ok_or_else(|| bad(format!("metadata {arch}.{k} missing")))
    };
    let layers = need("block_count")? as usize;
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = md_u(&ct, &format!("{arch}.attention.head_count_kv")).unwrap_or(heads);
    let head_dim = md_u(&ct, &format!("{arch}.attention.key_length")).unwrap_or(hidden / heads);
    let rms_eps = md_f(&ct, &format!("{arch}.attention.layer_norm_rms_epsilon"));
    let rope_base = md_f(&ct, &format!("{arch}.rope.freq_base"));
    if fam != Family::Gemma3 {
        // candle-transformers' llama and qwen2 derive the head width from hidden / heads and
        // rotate all of it, without RoPE scaling other than Llama 3's.
        if head_dim * heads != hidden {
            return Err(bad(format!(
                "head width {head_dim} x {heads} heads is not the hidden size {hidden}; candle-transformers' {arch} cannot express it"
            )));
        }
        if let Some(d) = md_u(&ct, &format!("{arch}.rope.dimension_count")) {
            if d != head_dim {
                return Err(bad(format!(
                    "partial RoPE ({d} of {head_dim} dimensions); candle-transformers' {arch} rotates the whole head"
                )));
            }
        }
        if let Some(t) = md_str(&ct, &format!("{arch}.rope.scaling.type")) {
            if t != "none" {
                return Err(bad(format!(
                    "{arch}.rope.scaling.type `{t}`; candle-transformers' {arch} implements only Llama 3's rope_freqs"
                )));
            }
        }
        if md_u(&ct, &format!("{arch}.expert_count")).unwrap_or(0) > 1 {
            return Err(bad(
                "a mixture-of-experts file; candle-transformers' llama is dense only".into(),
            ));
        }
    }
    let mut f = std::fs::File::open(gguf).map_err(Error::io(gguf))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut vocab = 0;
    let mut rope_freqs: Option<Vec<f32>> = None;
    for name in ct.tensor_infos.keys() {
        let mut t = ct
            .tensor(&mut f, name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        if name == "rope_freqs.weight" && fam == Family::Llama {
            rope_freqs = Some(t.flatten_all()?.to_vec1()?);
            continue;
        }
        let hf = hf_name(fam, name, layers)
            .ok_or_else(|| bad(format!("no HF name for GGUF tensor `{name}`")))?;
        if fam == Family::Gemma3 && name.ends_with("norm.weight") {
            t = (t - 1.0)?;
        }
        if fam == Family::Llama {
            if name.contains(".attn_q.") {
                t = unpermute_rope_rows(&t, heads as usize)?;
            } else if name.contains(".attn_k.") {
                t = unpermute_rope_rows(&t, kv_heads as usize)?;
            }
        }
        if name == "token_embd.weight" {
            vocab = t.dim(0)?;
        }
        tensors.insert(hf, t);
    }
    let tied = !tensors.contains_key("lm_head.weight");
    let common = serde_json::json!({
        "hidden_size": hidden,
        "intermediate_size": need("feed_forward_length")?,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": need("context_length")?,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        "modelbench_source": format!("dequantized from {}", gguf.display()),
        "modelbench_gguf": {
            "path": std::fs::canonicalize(gguf).unwrap_or_else(|_| gguf.to_path_buf()),
            "sha256": crate::util::fsio::file_sha256(gguf)?,
        },
    });
    let own = match fam {
        Family::Gemma3 => serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "attention_bias": false,
            "head_dim": head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": rms_eps.unwrap_or(1e-6),
            "rope_theta": rope_base.unwrap_or(1_000_000.0),
            "rope_local_base_freq": md_f(&ct, "gemma3.rope.local_freq_base").unwrap_or(10_000.0),
            "final_logit_softcapping": null,
            "attn_logit_softcapping": null,
            "query_pre_attn_scalar": head_dim,
            "sliding_window": need("attention.sliding_window")?,
            "sliding_window_pattern": md_u(&ct, "gemma3.attention.sliding_window_pattern")
                .or_else(|| md_u(&ct, "gemma3.attention.sliding_window_type"))
                .unwrap_or(6),
        }),
        Family::Qwen2 => {
            let ctx = need("context_length")?;
            serde_json::json!({
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "hidden_act": "silu",
                "rms_norm_eps": rms_eps.unwrap_or(1e-6),
                "rope_theta": rope_base.unwrap_or(1_000_000.0),
                // No sliding window (Qwen2.5's use_sliding_window is false): the window
                // candle-transformers' qwen2 masks with is the whole context.
                "use_sliding_window": false,
                "sliding_window": ctx,
                "max_window_layers": layers,
            })
        }
        _ => {
            let base = rope_base.unwrap_or(10_000.0);
            let scaling = match &rope_freqs {
                None => serde_json::Value::Null,
                Some(d) => {
                    let (factor, low, high, orig) =
                        llama3_scaling_of(d, head_dim as usize, base as f32).map_err(bad)?;
                    serde_json::json!({
                        "rope_type": "llama3",
                        "factor": factor,
                        "low_freq_factor": low,
                        "high_freq_factor": high,
                        "original_max_position_embeddings": orig.round() as u64,
                    })
                }
            };
            serde_json::json!({
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_act": "silu",
                "rms_norm_eps": rms_eps.unwrap_or(1e-5),
                "rope_theta": base,
                "rope_scaling": scaling,
            })
        }
    };
    let mut config = own;
    if let (Some(c), Some(o)) = (config.as_object_mut(), common.as_object()) {
        for (k, v) in o {
            c.insert(k.clone(), v.clone());
        }
    }
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let st = out.join("model.safetensors");
    let tmp = out.join("model.safetensors.partial");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &st).map_err(Error::io(&st))?;
    if let Some(t) = tokenizer {
        let dst = out.join("tokenizer.json");
        if crate::models::tokenizers::gguf::is_gguf(t) {
            // The tokenizer of the GGUF metadata, written out as a tokenizer.json.
            crate::models::tokenizers::load(t)?
                .save(&dst, false)
                .map_err(|e| Error::Tokenizer {
                    path: dst.display().to_string(),
                    reason: crate::error::one_line(&e.to_string()),
                })?;
        } else {
            std::fs::copy(t, &dst).map_err(Error::io(t))?;
        }
    }
    crate::util::fsio::atomic_write(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)
            .expect("json")
            .as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's converter's permutation, written independently: per head, HF row `i` of
    /// the first half goes to `2i`, row `i + d/2` to `2i + 1`.
    fn permute(rows: &[f32], heads: usize, width: usize) -> Vec<f32> {
        let n = rows.len() / width;
        let hd = n / heads;
        let mut out = vec![0f32; rows.len()];
        for h in 0..heads {
            for i in 0..hd / 2 {
                for (k, src) in [(2 * i, i), (2 * i + 1, i + hd / 2)] {
                    let (d, s) = ((h * hd + k) * width, (h * hd + src) * width);
                    out[d..d + width].copy_from_slice(&rows[s..s + width]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_undoes_the_converters_permutation() {
        let (heads, hd, width) = (3, 8, 5);
        let hf: Vec<f32> = (0..heads * hd * width).map(|x| x as f32).collect();
        let g = permute(&hf, heads, width);
        assert_ne!(g, hf);
        let t = Tensor::from_vec(g, (heads * hd, width), &Device::Cpu).unwrap();
        let back: Vec<f32> = unpermute_rope_rows(&t, heads)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(back, hf);
        // A bias (one value per row) the same way.
        let hb: Vec<f32> = (0..heads * hd).map(|x| x as f32).collect();
        let b = Tensor::new(permute(&hb, heads, 1), &Device::Cpu).unwrap();
        let back: Vec<f32> = unpermute_rope_rows(&b, heads).unwrap().to_vec1().unwrap();
        assert_eq!(back, hb);
        // 24 rows: not a whole number of heads of 5, and heads of 8 are 3 wide (odd).
        assert!(unpermute_rope_rows(&t, 5).is_err());
        assert!(unpermute_rope_rows(&t, 8).is_err());
        assert!(unpermute_rope_rows(&t, 0).is_err());
    }

    #[test]
    fn llama3_scaling_is_recovered_from_its_divisors() {
        // Llama 3.2 1B's own (head 64, base 500000, factor 32, low 1, high 4, 8192).
        let d = llama3_rope_factors(64, 500_000.0, 32.0, 1.0, 4.0, 8192.0);
        assert_eq!(
            llama3_scaling_of(&d, 64, 500_000.0).unwrap(),
            (32.0, 1.0, 4.0, 8192.0)
        );
        // Other rules (the project's llama3 fixture: original context 64, head 16, two
        // divisors between; at 256, one): the written parameters reproduce every divisor.
        for orig in [64.0, 256.0] {
            let d = llama3_rope_factors(16, 10_000.0, 8.0, 1.0, 4.0, orig);
            let (f, l, h, o) = llama3_scaling_of(&d, 16, 10_000.0).unwrap();
            let again = llama3_rope_factors(16, 10_000.0, f, l, h, o);
            for (a, b) in again.iter().zip(&d) {
                assert!((a - b).abs() < 1e-3 * b, "{orig}: {again:?} vs {d:?}");
            }
        }
        let d = llama3_rope_factors(16, 10_000.0, 8.0, 1.0, 4.0, 64.0);
        // Divisors no rule makes (rising then falling) are refused.
        let mut bad = d.clone();
        bad.reverse();
        assert!(llama3_scaling_of(&bad, 16, 10_000.0).is_err());
        assert!(llama3_scaling_of(&[0.5, 1.0], 4, 10_000.0).is_err());
    }
}
