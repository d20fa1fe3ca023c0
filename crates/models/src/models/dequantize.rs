//! A GGUF Gemma 3 dequantized into a Hugging Face folder (config.json, model.safetensors in
//! f32, tokenizer.json), so the non-quantized path (candle-transformers' gemma3 through the
//! directory source) can be checked against the same llama.cpp reference as the GGUF.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};

use super::gguf_fixture::hf_name;
use super::quantized::{family, read_header};
use super::Family;
use crate::error::{Error, Result};

fn md_u(ct: &Content, key: &str) -> Option<u64> {
    let v = ct.metadata.get(key)?;
    v.to_u32().map(u64::from).ok().or_else(|| v.to_u64().ok())
}

fn md_f(ct: &Content, key: &str) -> Option<f64> {
    ct.metadata.get(key)?.to_f32().ok().map(f64::from)
}

/// Writes `out/` from a Gemma 3 GGUF. Norm weights are stored as `w` (llama.cpp's converter
/// stores `1 + w`; HF's Gemma RmsNorm adds the 1).
pub fn gemma3_to_hf(gguf: &Path, tokenizer: Option<&Path>, out: &Path) -> Result<()> {
    let ct = read_header(gguf)?;
    let fam = family(gguf, &ct)?;
    if fam != Family::Gemma3 {
        return Err(Error::weights(
            gguf.display(),
            format!("dequantizing to a HF folder supports gemma3 only, not {fam}"),
        ));
    }
    let need = |k: &str| {
        md_u(&ct, &format!("gemma3.{k}"))
            .ok_or_else(|| Error::weights(gguf.display(), format!("metadata gemma3.{k} missing")))
    };
    let layers = need("block_count")? as usize;
    let heads = need("attention.head_count")?;
    let head_dim = need("attention.key_length")?;
    let mut f = std::fs::File::open(gguf).map_err(Error::io(gguf))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut vocab = 0;
    for name in ct.tensor_infos.keys() {
        let hf = hf_name(Family::Gemma3, name, layers).ok_or_else(|| {
            Error::weights(
                gguf.display(),
                format!("no HF name for GGUF tensor `{name}`"),
            )
        })?;
        let mut t = ct
            .tensor(&mut f, name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        if name.ends_with("norm.weight") {
            t = (t - 1.0)?;
        }
        if name == "token_embd.weight" {
            vocab = t.dim(0)?;
        }
        tensors.insert(hf, t);
    }
    let tied = !tensors.contains_key("lm_head.weight");
    let config = serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "attention_bias": false,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": need("embedding_length")?,
        "intermediate_size": need("feed_forward_length")?,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": need("attention.head_count_kv")?,
        "rms_norm_eps": md_f(&ct, "gemma3.attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
        "rope_theta": md_f(&ct, "gemma3.rope.freq_base").unwrap_or(1_000_000.0),
        "rope_local_base_freq": md_f(&ct, "gemma3.rope.local_freq_base").unwrap_or(10_000.0),
        "vocab_size": vocab,
        "final_logit_softcapping": null,
        "attn_logit_softcapping": null,
        "query_pre_attn_scalar": head_dim,
        "sliding_window": need("attention.sliding_window")?,
        "sliding_window_pattern": md_u(&ct, "gemma3.attention.sliding_window_pattern")
            .or_else(|| md_u(&ct, "gemma3.attention.sliding_window_type"))
            .unwrap_or(6),
        "max_position_embeddings": need("context_length")?,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        "modelbench_source": format!("dequantized from {}", gguf.display()),
    });
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let st = out.join("model.safetensors");
    let tmp = out.join("model.safetensors.partial");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &st).map_err(Error::io(&st))?;
    if let Some(t) = tokenizer {
        let dst = out.join("tokenizer.json");
        if crate::models::gguf_tokenizer::is_gguf(t) {
            // The tokenizer of the GGUF metadata, written out as a tokenizer.json.
            crate::models::tokenizer::load(t)?
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
    )
}
