//! Quantized fixtures: the tiny fixture weights quantized with candle's quantization API
//! (Q8_0 for 2-D weights: k-quants need 256-wide rows, the fixtures are 64 wide) and written
//! as GGUF with llama.cpp's tensor names and metadata, so the quantized path of every family
//! is tested without downloads. Referenced as `gguf:fixture:<family>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device};

use super::Family;
use crate::error::{one_line, Error, Result};

/// GGUF name -> HF checkpoint name: the inverse of [`gguf_name`] for the layers a model has.
pub fn hf_name(family: Family, gguf: &str, layers: usize) -> Option<String> {
    const PER_LAYER: [&str; 13] = [
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "self_attn.q_norm.weight",
        "self_attn.k_norm.weight",
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
        "pre_feedforward_layernorm.weight",
        "post_feedforward_layernorm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    ];
    let top = [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    ];
    if let Some(t) = top
        .iter()
        .find(|t| gguf_name(family, t).as_deref() == Some(gguf))
    {
        return Some(t.to_string());
    }
    (0..layers).find_map(|l| {
        PER_LAYER.iter().find_map(|n| {
            let hf = format!("model.layers.{l}.{n}");
            (gguf_name(family, &hf).as_deref() == Some(gguf)).then_some(hf)
        })
    })
}

/// HF checkpoint name -> GGUF name (llama.cpp's convention).
fn gguf_name(family: Family, hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, name) = rest.split_once('.')?;
    let g = match (family, name) {
        (_, "self_attn.q_proj.weight") => "attn_q.weight",
        (_, "self_attn.k_proj.weight") => "attn_k.weight",
        (_, "self_attn.v_proj.weight") => "attn_v.weight",
        (_, "self_attn.o_proj.weight") => "attn_output.weight",
        (_, "self_attn.q_norm.weight") => "attn_q_norm.weight",
        (_, "self_attn.k_norm.weight") => "attn_k_norm.weight",
        (_, "input_layernorm.weight") => "attn_norm.weight",
        (Family::Gemma3, "post_attention_layernorm.weight") => "post_attention_norm.weight",
        (Family::Gemma3, "pre_feedforward_layernorm.weight") => "ffn_norm.weight",
        (Family::Gemma3, "post_feedforward_layernorm.weight") => "post_ffw_norm.weight",
        (_, "post_attention_layernorm.weight") => "ffn_norm.weight",
        (_, "mlp.gate_proj.weight") => "ffn_gate.weight",
        (_, "mlp.up_proj.weight") => "ffn_up.weight",
        (_, "mlp.down_proj.weight") => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}"))
}

fn metadata(family: Family, c: &serde_json::Value) -> Vec<(String, Value)> {
    let u = |k: &str| Value::U32(c[k].as_u64().unwrap_or(0) as u32);
    let f = |k: &str| Value::F32(c[k].as_f64().unwrap_or(0.0) as f32);
    let heads = c["num_attention_heads"].as_u64().unwrap_or(1);
    let head_dim = c["head_dim"]
        .as_u64()
        .unwrap_or(c["hidden_size"].as_u64().unwrap_or(0) / heads.max(1)) as u32;
    let (a, arch) = match family {
        Family::Llama => ("llama", "llama"),
        Family::Qwen3 => ("qwen3", "qwen3"),
        _ => ("gemma3", "gemma3"),
    };
    let mut m = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (
            "general.name".into(),
            Value::String(format!("modelbench fixture {family} (Q8_0)")),
        ),
        (
            format!("{a}.attention.head_count"),
            u("num_attention_heads"),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            u("num_key_value_heads"),
        ),
        (format!("{a}.block_count"), u("num_hidden_layers")),
        (format!("{a}.embedding_length"), u("hidden_size")),
        (format!("{a}.feed_forward_length"), u("intermediate_size")),
        (format!("{a}.context_length"), u("max_position_embeddings")),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            f("rms_norm_eps"),
        ),
        (format!("{a}.rope.freq_base"), f("rope_theta")),
        (format!("{a}.attention.key_length"), Value::U32(head_dim)),
        (format!("{a}.attention.value_length"), Value::U32(head_dim)),
        (format!("{a}.rope.dimension_count"), Value::U32(head_dim)),
    ];
    if family == Family::Gemma3 {
        m.push((
            "gemma3.attention.sliding_window".into(),
            u("sliding_window"),
        ));
        m.push((
            "gemma3.attention.sliding_window_type".into(),
            u("_sliding_window_pattern"),
        ));
        m.push((
            "gemma3.rope.local_freq_base".into(),
            f("rope_local_base_freq"),
        ));
    }
    m
}

/// Whether `family` has a quantized fixture (llama, qwen3, gemma3); the error names the choice.
pub fn check(family: Family) -> Result<()> {
    if matches!(family, Family::Llama | Family::Qwen3 | Family::Gemma3) {
        return Ok(());
    }
    Err(Error::ModelRef {
        reference: format!("gguf:fixture:{family}"),
        reason: "quantized fixtures exist for llama, qwen3 and gemma3".into(),
    })
}

/// Writes (once) into `dir` the quantized fixture of `family` made from its safetensors
/// fixture (`snapshot`: the folder holding its config.json, model.safetensors and
/// tokenizer.json), with the tokenizer.json beside it, and returns the .gguf path.
/// The source module finds the snapshot and the folder for `gguf:fixture:<family>`.
pub fn ensure(family: Family, snapshot: &Path, dir: &Path) -> Result<PathBuf> {
    check(family)?;
    let get = |f: &str| snapshot.join(f);
    // v2: Gemma norm weights stored as llama.cpp's converter stores them (1 + w).
    let out = dir.join(format!("fixture-{family}-q8_0-v2.gguf"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(get("config.json")).map_err(Error::io(get("config.json")))?,
    )
    .map_err(|e| Error::Report(e.to_string()))?;
    let st = get("model.safetensors");
    let tensors: HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(&st, &Device::Cpu)?;
    let mut q: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in &tensors {
        let Some(g) = gguf_name(family, name) else {
            return Err(Error::weights(
                st.display(),
                format!("no GGUF name for `{name}`"),
            ));
        };
        let mut t = t.to_dtype(DType::F32)?;
        // HF Gemma RmsNorm scales by (1 + w); GGUF Gemma files (llama.cpp's converter) store
        // 1 + w and use a plain RmsNorm, as candle's and our quantized Gemma 3 read them.
        // Without this the fixture's norms would be zero and every logit 0.
        if family == Family::Gemma3 && t.rank() == 1 && g.ends_with("norm.weight") {
            t = (t + 1.0)?;
        }
        let dt = if t.rank() == 2 {
            GgmlDType::Q8_0
        } else {
            GgmlDType::F32
        };
        q.push((g, QTensor::quantize(&t, dt)?));
    }
    q.sort_by(|a, b| a.0.cmp(&b.0));
    let md = metadata(family, &config);
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md_refs, &t_refs)
        .map_err(|e| Error::weights(out.display(), one_line(&e.to_string())))?;
    // Atomic too: another thread may already read the tokenizer of a finished fixture.
    let tok = std::fs::read(get("tokenizer.json")).map_err(Error::io(get("tokenizer.json")))?;
    crate::util::fsio::atomic_write(&dir.join("tokenizer.json"), &tok)?;
    crate::util::fsio::atomic_write(&out, &buf.into_inner())?;
    Ok(out)
}
