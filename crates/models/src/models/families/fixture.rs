//! Quantized fixtures: the tiny fixture weights quantized with candle's quantization API
//! (Q8_0 for 2-D weights: k-quants need 256-wide rows, the fixtures are 64 wide) and written
//! as GGUF with llama.cpp's tensor names and metadata, so the quantized path of every family
//! is tested without downloads. Referenced as `gguf:fixture:<family>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device};

use crate::error::{one_line, Error, Result};
use crate::models::tokenizers::gguf::{
    TYPE_BYTE, TYPE_CONTROL, TYPE_NORMAL, TYPE_UNKNOWN, TYPE_UNUSED, TYPE_USER_DEFINED,
};
use crate::models::Family;

/// GGUF name -> HF checkpoint name: the inverse of [`gguf_name`] for the layers a model has.
pub fn hf_name(family: Family, gguf: &str, layers: usize) -> Option<String> {
    const PER_LAYER: [&str; 16] = [
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.q_proj.bias",
        "self_attn.k_proj.bias",
        "self_attn.v_proj.bias",
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
        (_, "self_attn.q_proj.bias") => "attn_q.bias",
        (_, "self_attn.k_proj.bias") => "attn_k.bias",
        (_, "self_attn.v_proj.bias") => "attn_v.bias",
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
        // llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0: 2-D weights Q8_0, the rest F32.
        ("general.file_type".into(), Value::U32(7)),
    ];
    if family == Family::Gemma3 {
        m.push((
            "gemma3.attention.sliding_window".into(),
            u("sliding_window"),
        ));
        m.push((
            // llama.cpp's key (its gemma3 loader reads this one; 6 when absent).
            "gemma3.attention.sliding_window_pattern".into(),
            // transformers writes `_sliding_window_pattern` (the fixture's config) or
            // `sliding_window_pattern` (Gemma 3 1B's, the synthetic shape): reading only the
            // first wrote 0 for the synthetic file, which the loader refuses (H200, issue 60).
            Value::U32(
                c["_sliding_window_pattern"]
                    .as_u64()
                    .or(c["sliding_window_pattern"].as_u64())
                    .unwrap_or(0) as u32,
            ),
        ));
        m.push((
            "gemma3.rope.local_freq_base".into(),
            f("rope_local_base_freq"),
        ));
    }
    m
}

/// The text the fixture vocabularies are trained on (English, German, Chinese, code).
pub const TOKENIZER_CORPUS: &str = include_str!("../../../../../fixtures/tokenizer/corpus.txt");
/// Merges learned per fixture vocabulary.
const FIXTURE_MERGES: usize = 800;

/// Most frequent adjacent pair first; ties by the pair's text, so training is deterministic.
fn learn_merges(words: &[(Vec<String>, usize)], n: usize) -> Vec<(String, String)> {
    let mut words: Vec<(Vec<String>, usize)> = words.to_vec();
    let mut merges = Vec::new();
    while merges.len() < n {
        let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
        for (w, c) in &words {
            for p in w.windows(2) {
                *counts.entry((p[0].as_str(), p[1].as_str())).or_default() += c;
            }
        }
        let Some(((a, b), c)) = counts
            .iter()
            .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0)))
            .map(|(k, v)| ((k.0.to_string(), k.1.to_string()), *v))
        else {
            break;
        };
        if c < 2 {
            break;
        }
        for (w, _) in words.iter_mut() {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = format!("{a}{b}");
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push((a, b));
    }
    merges
}

fn counted(words: Vec<Vec<String>>) -> Vec<(Vec<String>, usize)> {
    let mut m: std::collections::BTreeMap<Vec<String>, usize> = Default::default();
    for w in words {
        *m.entry(w).or_default() += 1;
    }
    m.into_iter().collect()
}

/// Appends `tok` with its type and score unless the vocabulary has it already.
struct VocabBuilder {
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
    seen: std::collections::HashSet<String>,
}

impl VocabBuilder {
    fn new() -> Self {
        VocabBuilder {
            tokens: Vec::new(),
            types: Vec::new(),
            scores: Vec::new(),
            seen: Default::default(),
        }
    }
    fn push(&mut self, tok: &str, ty: i32, score: f32) {
        if self.seen.insert(tok.to_string()) {
            self.tokens.push(tok.to_string());
            self.types.push(ty);
            self.scores.push(score);
        }
    }
    /// Unused entries up to `id` (exclusive), as llama.cpp's converter pads (`[PAD<id>]`).
    fn pad_to(&mut self, id: usize) {
        while self.tokens.len() < id {
            let n = self.tokens.len();
            self.push(&format!("[PAD{n}]"), TYPE_UNUSED, -1e9);
        }
    }
}

/// The tokenizer metadata of a fixture GGUF, shaped like the real models' files (so
/// llama.cpp's `llama-tokenize` loads it): `vocab` tokens in all, learned from
/// [`TOKENIZER_CORPUS`]:
/// - llama: byte-level BPE, pre-tokenizer `llama-bpe`, `<|begin_of_text|>` = 128000 put first
///   (`add_bos_token`), 256 control tokens from 128000 like Llama 3;
/// - qwen3: byte-level BPE, pre-tokenizer `qwen2`, no BOS, `<|endoftext|>` = 151643,
///   `<|im_end|>` = 151645 (EOS), `<think>`/`</think>` user-defined like Qwen3;
/// - gemma3: SentencePiece (`llama`) with scores, `<0xXX>` byte tokens, `<bos>` = 2 first,
///   no space prefix, like Gemma 3.
pub fn tokenizer_metadata(family: Family, vocab: usize) -> Result<Vec<(String, Value)>> {
    let mut v = VocabBuilder::new();
    let mut md: Vec<(String, Value)> = Vec::new();
    let s = |x: &str| Value::String(x.to_string());
    let mut merges_out: Vec<String> = Vec::new();
    match family {
        Family::Llama | Family::Qwen3 => {
            let llama = family == Family::Llama;
            let pre = if llama { "llama-bpe" } else { "qwen2" };
            let (regexes, _, _) =
                crate::models::tokenizers::gguf::bpe_pre(Some(pre)).expect("implemented");
            let pt = crate::models::tokenizers::gguf::bpe_pre_tokenizer(&regexes)?;
            let mut pts = tokenizers::PreTokenizedString::from(TOKENIZER_CORPUS);
            tokenizers::PreTokenizer::pre_tokenize(&pt, &mut pts)
                .map_err(|e| Error::Model(format!("fixture pre-tokenizer: {e}")))?;
            let words: Vec<Vec<String>> = pts
                .get_splits(
                    tokenizers::OffsetReferential::Original,
                    tokenizers::OffsetType::Char,
                )
                .into_iter()
                .map(|(w, _, _)| w.chars().map(String::from).collect())
                .collect();
            for c in crate::models::tokenizers::gguf::byte_chars() {
                v.push(&c.to_string(), TYPE_NORMAL, 0.0);
            }
            for (a, b) in learn_merges(&counted(words), FIXTURE_MERGES) {
                v.push(&format!("{a}{b}"), TYPE_NORMAL, 0.0);
                merges_out.push(format!("{a} {b}"));
            }
            let (first, specials): (usize, Vec<(String, i32)>) = if llama {
                let named = |i: usize| match i {
                    0 => "<|begin_of_text|>".to_string(),
                    1 => "<|end_of_text|>".to_string(),
                    6 => "<|start_header_id|>".to_string(),
                    7 => "<|end_header_id|>".to_string(),
                    9 => "<|eot_id|>".to_string(),
                    _ => format!("<|reserved_special_token_{i}|>"),
                };
                (128000, (0..256).map(|i| (named(i), TYPE_CONTROL)).collect())
            } else {
                let names = [
                    ("<|endoftext|>", TYPE_CONTROL),
                    ("<|im_start|>", TYPE_CONTROL),
                    ("<|im_end|>", TYPE_CONTROL),
                    ("<|object_ref_start|>", TYPE_CONTROL),
                    ("<|object_ref_end|>", TYPE_CONTROL),
                    ("<tool_call>", TYPE_USER_DEFINED),
                    ("</tool_call>", TYPE_USER_DEFINED),
                    ("<think>", TYPE_USER_DEFINED),
                    ("</think>", TYPE_USER_DEFINED),
                ];
                (
                    151643,
                    names.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
                )
            };
            v.pad_to(first);
            for (n, t) in &specials {
                v.push(n, *t, 0.0);
            }
            v.pad_to(vocab);
            md.push(("tokenizer.ggml.model".into(), s("gpt2")));
            md.push(("tokenizer.ggml.pre".into(), s(pre)));
            if llama {
                md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(128000)));
                md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(128001)));
                md.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(128009)));
                md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)));
            } else {
                md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(151643)));
                md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(151645)));
                md.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(151643)));
                md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)));
            }
        }
        _ => {
            // SentencePiece words: a run of spaces (as `▁`) starts a word.
            let text = TOKENIZER_CORPUS.replace(' ', "▁");
            let mut words: Vec<Vec<String>> = Vec::new();
            let mut cur: Vec<String> = Vec::new();
            for c in text.chars() {
                let starts = (c == '▁' && cur.last().is_some_and(|l| l != "▁"))
                    || c == '\n'
                    || cur.last().is_some_and(|l| l == "\n");
                if starts && !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                cur.push(c.to_string());
            }
            if !cur.is_empty() {
                words.push(cur);
            }
            let mut chars: std::collections::BTreeMap<String, usize> = Default::default();
            for w in &words {
                for c in w {
                    *chars.entry(c.clone()).or_default() += 1;
                }
            }
            let merges = learn_merges(&counted(words), FIXTURE_MERGES);
            for (i, n) in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
                .iter()
                .enumerate()
            {
                v.push(n, if i == 3 { TYPE_UNKNOWN } else { TYPE_CONTROL }, 0.0);
            }
            v.push("<start_of_turn>", TYPE_CONTROL, 0.0);
            v.push("<end_of_turn>", TYPE_CONTROL, 0.0);
            for b in 0..=255u8 {
                v.push(&format!("<0x{b:02X}>"), TYPE_BYTE, 0.0);
            }
            // Scores as SentencePiece ranks them: earlier merges score higher.
            for (i, (a, b)) in merges.iter().enumerate() {
                v.push(&format!("{a}{b}"), TYPE_NORMAL, -(i as f32));
            }
            let mut by_freq: Vec<(String, usize)> = chars.into_iter().collect();
            by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            for (i, (c, _)) in by_freq.iter().enumerate() {
                v.push(c, TYPE_NORMAL, -((merges.len() + i) as f32));
            }
            v.pad_to(vocab);
            md.push(("tokenizer.ggml.model".into(), s("llama")));
            md.push(("tokenizer.ggml.pre".into(), s("default")));
            md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(2)));
            md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(1)));
            md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(3)));
            md.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(0)));
            md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)));
            md.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)));
            md.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)));
        }
    }
    if v.tokens.len() != vocab {
        return Err(Error::Model(format!(
            "fixture vocabulary of {family} has {} tokens, the model {vocab}",
            v.tokens.len()
        )));
    }
    md.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(v.tokens.into_iter().map(Value::String).collect()),
    ));
    md.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(v.types.into_iter().map(Value::I32).collect()),
    ));
    if family == Family::Gemma3 {
        md.push((
            "tokenizer.ggml.scores".into(),
            Value::Array(v.scores.into_iter().map(Value::F32).collect()),
        ));
    } else {
        md.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(merges_out.into_iter().map(Value::String).collect()),
        ));
    }
    Ok(md)
}

/// A quantized fixture (`gguf:fixture:<name>`), declared by its family's entry in the family
/// table ([`crate::models::families`]): the safetensors fixture of `base` quantized to Q8_0 with
/// llama.cpp's names and metadata, then changed by `adapt` into this family's file (its
/// architecture name, its own tensors and metadata).
pub struct GgufFixture {
    pub name: &'static str,
    /// The family of the GGUF file written.
    pub family: Family,
    /// The safetensors fixture it is made from.
    pub base: Family,
    pub adapt: Option<fn(&mut Parts) -> Result<()>>,
}

/// A fixture file before it is quantized and written: tensors (GGUF names, f32; 2-D ones
/// become Q8_0) and metadata, and the base fixture's config.json.
pub struct Parts {
    pub tensors: Vec<(String, candle_core::Tensor)>,
    pub metadata: Vec<(String, Value)>,
    pub config: serde_json::Value,
}

impl Parts {
    /// Renames the architecture: `general.architecture` and every `<from>.` key.
    pub fn retarget(&mut self, from: &str, to: &str) {
        for (k, v) in self.metadata.iter_mut() {
            if let Some(rest) = k.strip_prefix(&format!("{from}.")) {
                *k = format!("{to}.{rest}");
            } else if k == "general.architecture" {
                *v = Value::String(to.to_string());
            } else if k == "general.name" {
                *v = Value::String(format!("modelbench fixture {to} (Q8_0)"));
            }
        }
    }
    /// Sets (or adds) a metadata value.
    pub fn set(&mut self, key: &str, v: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.metadata.push((key.to_string(), v)),
        }
    }
    /// Removes the metadata keys `keep` refuses.
    pub fn drop_keys(&mut self, drop: impl Fn(&str) -> bool) {
        self.metadata.retain(|(k, _)| !drop(k));
    }
    /// A metadata integer of the base config.json.
    pub fn cfg_u(&self, k: &str) -> usize {
        self.config[k].as_u64().unwrap_or(0) as usize
    }
    /// Removes the tensor `name` and returns it (an error naming it when absent).
    pub fn take(&mut self, name: &str) -> Result<candle_core::Tensor> {
        let i = self
            .tensors
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| Error::Model(format!("fixture base has no tensor `{name}`")))?;
        Ok(self.tensors.remove(i).1)
    }
    /// A copy of the tensor `name` (an error naming it when absent).
    pub fn get(&self, name: &str) -> Result<candle_core::Tensor> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| Error::Model(format!("fixture base has no tensor `{name}`")))
    }
    /// Adds a tensor.
    pub fn put(&mut self, name: impl Into<String>, t: candle_core::Tensor) {
        self.tensors.push((name.into(), t));
    }
}

/// A seeded tensor of `shape` from N(0, std^2).
pub fn seeded_tensor(shape: &[usize], std: f32, seed: u64) -> Result<candle_core::Tensor> {
    let n = shape.iter().product();
    Ok(candle_core::Tensor::from_vec(
        seeded_normal(n, std, seed),
        shape,
        &Device::Cpu,
    )?)
}

/// `n` seeded values from N(0, std^2) (a fixed generator: a fixture is the same file
/// everywhere).
pub fn seeded_normal(n: usize, std: f32, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box-Muller.
            let (u, v): (f32, f32) = (r.random::<f32>().max(1e-12), r.random::<f32>());
            std * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// Scale of the attention logits' inputs and of the final norm in a quantized fixture.
pub const SHARPEN_QK: f64 = 3.0;
const SHARPEN_OUT: f64 = 7.0;

/// Makes a fixture's outputs depend visibly on what its family computes: with the seeded
/// weights as they are, attention is nearly uniform (so RoPE, its frequencies and its layout
/// change almost nothing) and the output distribution nearly flat (perplexity about the
/// vocabulary size, top-1 decided by rounding), and the KL-divergence gate passed a model with
/// Llama 3's frequency factors dropped. So the q/k path is scaled by [`SHARPEN_QK`] (the
/// per-head q/k norm weights where the family has them, which would cancel a scaled
/// projection, else the q/k projections) and the final norm by [`SHARPEN_OUT`]: attention
/// becomes position-selective and the logits peaked, on every implementation alike.
fn sharpen(p: &mut Parts) -> Result<()> {
    let normed = p
        .tensors
        .iter()
        .any(|(n, _)| n.ends_with("attn_q_norm.weight"));
    for (n, t) in p.tensors.iter_mut() {
        let qk = if normed {
            n.ends_with("attn_q_norm.weight") || n.ends_with("attn_k_norm.weight")
        } else {
            n.ends_with("attn_q.weight") || n.ends_with("attn_k.weight")
        };
        if qk {
            *t = (&*t * SHARPEN_QK)?;
        } else if n == "output_norm.weight" || n == "token_embd_norm.weight" {
            // (lfm2's final norm is llama.cpp's `token_embd_norm`.)
            *t = (&*t * SHARPEN_OUT)?;
        }
    }
    Ok(())
}

/// Writes (once) into `dir` the quantized fixture `fx` made from its base's safetensors
/// fixture (`snapshot`: the folder holding its config.json and model.safetensors), with its
/// tokenizer in the metadata ([`tokenizer_metadata`]; no tokenizer.json beside it), and
/// returns the .gguf path. The source module finds the snapshot and the folder for
/// `gguf:fixture:<name>`.
pub fn ensure(fx: &GgufFixture, snapshot: &Path, dir: &Path) -> Result<PathBuf> {
    // v2: Gemma norm weights stored as llama.cpp's converter stores them (1 + w).
    // v3: the tokenizer in the metadata, general.file_type.
    // v4: sharpened ([`sharpen`]) so the KL-divergence gate can tell right from wrong.
    // v7: the llama3 fixture's rope_freqs from an original context of 64 (was 256).
    // v8: the glm4 fixture's q/k weights x3 (`glm4::GLM4_QK`); the others' bytes unchanged.
    let out = dir.join(format!("fixture-{}-q8_0-v8.gguf", fx.name));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    write_from_snapshot(fx.base, snapshot, fx.adapt, GgmlDType::Q8_0, None, &out)?;
    Ok(out)
}

/// The types [`crate::models::sources::write_synthetic`] writes matrices in, by the name `synth-gguf --type` takes.
pub const SYNTHETIC_TYPES: [(&str, GgmlDType); 3] = [
    ("f16", GgmlDType::F16),
    ("q8_0", GgmlDType::Q8_0),
    ("q4_k", GgmlDType::Q4K),
];

pub(crate) fn type_name(t: GgmlDType) -> &'static str {
    SYNTHETIC_TYPES
        .iter()
        .find(|(_, d)| *d == t)
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

/// The safetensors model in `snapshot` (config.json, model.safetensors of `family`) as a GGUF
/// file at `out`: llama.cpp's names and metadata, the fixture tokenizer, `adapt`, [`sharpen`];
/// matrices in `matrix` (Q8_0 or F16), vectors F32.
pub(crate) fn write_from_snapshot(
    family: Family,
    snapshot: &Path,
    adapt: Option<fn(&mut Parts) -> Result<()>>,
    matrix: GgmlDType,
    name: Option<String>,
    out: &Path,
) -> Result<()> {
    let get = |f: &str| snapshot.join(f);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(get("config.json")).map_err(Error::io(get("config.json")))?,
    )
    .map_err(|e| Error::Model(e.to_string()))?;
    let st = get("model.safetensors");
    let tensors: HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(&st, &Device::Cpu)?;
    let mut named: Vec<(String, candle_core::Tensor)> = Vec::new();
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
        named.push((g, t));
    }
    drop(tensors);
    let mut md = metadata(family, &config);
    let vocab = config["vocab_size"].as_u64().unwrap_or(0) as usize;
    md.extend(tokenizer_metadata(family, vocab)?);
    let mut parts = Parts {
        tensors: named,
        metadata: md,
        config,
    };
    if let Some(adapt) = adapt {
        adapt(&mut parts)?;
    }
    sharpen(&mut parts)?;
    if let Some(name) = name {
        parts.set("general.name", Value::String(name));
    }
    // llama.cpp's LLAMA_FTYPE_MOSTLY_*: F16 1, Q8_0 7, Q4_K_S 14 (mostly q4_K, as here).
    let ftype = match matrix {
        GgmlDType::F16 => 1,
        GgmlDType::Q4K => 14,
        _ => 7,
    };
    parts.set("general.file_type", Value::U32(ftype));
    let mut q: Vec<(String, QTensor)> = Vec::new();
    for (g, t) in parts.tensors {
        // As llama.cpp's converter with `--outtype q8_0`: matrices (2-D, and the 3-D expert
        // stacks `ffn_*_exps`) Q8_0; vectors and the expert router `ffn_gate_inp` (forced
        // F32 by the converter) F32. Q8_0 blocks are 32 wide: narrower rows (lfm2's 3-tap
        // convolution) stay F32, as llama.cpp's converter and quantizer leave them.
        let cols = t.dims()[t.rank() - 1];
        let dt = if t.rank() >= 2 && !g.ends_with("ffn_gate_inp.weight") && cols % 32 == 0 {
            // llama-quantize's fallback for rows a k-quant's 256-wide blocks do not divide
            // (Gemma 3 1B's 1152): q5_0 for q4_K.
            if matrix.block_size() > cols || cols % matrix.block_size() != 0 {
                GgmlDType::Q5_0
            } else {
                matrix
            }
        } else {
            GgmlDType::F32
        };
        q.push((g, quantize_rows(&t, dt)?));
    }
    q.sort_by(|a, b| a.0.cmp(&b.0));
    let md = parts.metadata;
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md_refs, &t_refs)
        .map_err(|e| Error::weights(out.display(), one_line(&e.to_string())))?;
    crate::util::fsio::atomic_write(out, &buf.into_inner())?;
    Ok(())
}

/// `QTensor::quantize` of a large matrix in row blocks on every core (candle quantizes on one
/// thread; a 1B model's Q4_K takes minutes that way): the same bytes, as each block of rows
/// is quantized alone and the blocks are concatenated.
fn quantize_rows(t: &candle_core::Tensor, dt: GgmlDType) -> Result<QTensor> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 22;
    let n = t.elem_count();
    if t.rank() < 2 || n <= CHUNK || dt == GgmlDType::F32 || dt == GgmlDType::F16 {
        return Ok(QTensor::quantize(t, dt)?);
    }
    let dims = t.dims().to_vec();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let cols = dims[dims.len() - 1];
    // Each block is a tensor of its own: `QTensor::quantize` reads its source's storage from
    // the start, whatever the view's offset, so a `narrow`ed block would quantize the first
    // rows again (this writer's first GPU files were made that way; its test caught it).
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let per = (CHUNK / cols).max(1);
    let starts: Vec<usize> = (0..rows).step_by(per).collect();
    let parts: Vec<Vec<u8>> = starts
        .par_iter()
        .map(|&r0| -> Result<Vec<u8>> {
            let n = per.min(rows - r0);
            let block = candle_core::Tensor::from_slice(
                &values[r0 * cols..(r0 + n) * cols],
                (n, cols),
                &Device::Cpu,
            )?;
            Ok(QTensor::quantize(&block, dt)?.data()?.into_owned())
        })
        .collect::<Result<_>>()?;
    let bytes = parts.concat();
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        dt,
        &bytes,
        dims,
        &Device::Cpu,
    )?)
}

/// Replaces every block's dense SwiGLU (`blk.N.ffn_{gate,up,down}.weight`) by a mixture of
/// `n_expert` seeded experts of width `ff`, as llama.cpp's converter writes them: the router
/// `blk.N.ffn_gate_inp.weight` (E x hidden, kept F32) and the stacked experts
/// `blk.N.ffn_{gate,up}_exps.weight` (E x ff x hidden) and `blk.N.ffn_down_exps.weight`
/// (E x hidden x ff), 3-D tensors quantized like the other matrices.
///
/// Scales: experts N(0, [`EXPERT_STD`]) so that the mixture's output (not the 0.02-scale
/// residual) dominates each block and the choice of experts shows in the logits; router
/// N(0, [`ROUTER_STD`]): the router's input is RMS-normalised (unit RMS with the fixtures'
/// norm weights of 1), so its logits have a standard deviation of about
/// `ROUTER_STD * sqrt(hidden)` (3.0 at hidden 64): the k-th and (k+1)-th choices are far
/// apart compared with the numeric differences between implementations (about 1e-3), so
/// top-k routing is not decided by rounding, while the softmax still leaves the second
/// choice a weight that matters.
pub fn to_experts(p: &mut Parts, n_expert: usize, ff: usize, seed: u64) -> Result<()> {
    let hidden = p.cfg_u("hidden_size");
    let layers = p.cfg_u("num_hidden_layers");
    let dense = |n: &str| {
        n.ends_with(".ffn_gate.weight")
            || n.ends_with(".ffn_up.weight")
            || n.ends_with(".ffn_down.weight")
    };
    p.tensors.retain(|(n, _)| !dense(n));
    let router_std = ROUTER_STD / (hidden as f32 / 64.0).sqrt();
    for l in 0..layers {
        let s = seed + 16 * l as u64;
        let t = |shape: (usize, usize, usize), std: f32, k: u64| {
            let v = seeded_normal(shape.0 * shape.1 * shape.2, std, s + k);
            candle_core::Tensor::from_vec(v, shape, &Device::Cpu)
        };
        let router = seeded_normal(n_expert * hidden, router_std, s);
        p.tensors.push((
            format!("blk.{l}.ffn_gate_inp.weight"),
            candle_core::Tensor::from_vec(router, (n_expert, hidden), &Device::Cpu)?,
        ));
        p.tensors.push((
            format!("blk.{l}.ffn_gate_exps.weight"),
            t((n_expert, ff, hidden), EXPERT_STD, 1)?,
        ));
        p.tensors.push((
            format!("blk.{l}.ffn_up_exps.weight"),
            t((n_expert, ff, hidden), EXPERT_STD, 2)?,
        ));
        p.tensors.push((
            format!("blk.{l}.ffn_down_exps.weight"),
            t((n_expert, hidden, ff), EXPERT_STD, 3)?,
        ));
    }
    Ok(())
}

/// Standard deviation of the seeded expert weights ([`to_experts`]).
pub const EXPERT_STD: f32 = 0.1;
/// Standard deviation of the seeded router weights at hidden 64 ([`to_experts`]).
pub const ROUTER_STD: f32 = 0.375;

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma 3's global-layer period is read under both of transformers' names: the
    /// fixture's `_sliding_window_pattern` and the real 1B config's `sliding_window_pattern`
    /// (the synthetic gemma-3-1b file said 0 before, and the loader refused it on an H200).
    #[test]
    fn gemma3_period_from_either_config_key() {
        let pattern = |c: &str| {
            let c: serde_json::Value = serde_json::from_str(c).unwrap();
            metadata(Family::Gemma3, &c)
                .into_iter()
                .find(|(k, _)| k == "gemma3.attention.sliding_window_pattern")
                .map(|(_, v)| v.to_u32().unwrap())
                .unwrap()
        };
        let real = include_str!("../../../../../fixtures/synthetic/gemma-3-1b/config.json");
        assert_eq!(pattern(real), 6);
        let fixture = include_str!("../../../../../fixtures/models/gemma3/config.json");
        let want: serde_json::Value = serde_json::from_str(fixture).unwrap();
        assert_eq!(
            pattern(fixture) as u64,
            want["_sliding_window_pattern"].as_u64().unwrap()
        );
        assert_eq!(pattern(r#"{"hidden_size": 64}"#), 0);
    }

    /// Quantizing in row blocks on every core gives the very bytes of one whole-tensor call,
    /// for a matrix large enough to be split (and one row count the blocks do not divide).
    #[test]
    fn row_blocks_quantize_to_the_same_bytes() {
        let t = seeded_tensor(&[2053, 2304], 0.02, 7).unwrap();
        for dt in [GgmlDType::Q4K, GgmlDType::Q8_0, GgmlDType::Q5_0] {
            let whole = QTensor::quantize(&t, dt).unwrap();
            let split = quantize_rows(&t, dt).unwrap();
            assert_eq!(split.shape(), whole.shape());
            assert_eq!(split.dtype(), dt);
            assert!(
                split.data().unwrap() == whole.data().unwrap(),
                "{dt:?}: row blocks differ from the whole tensor"
            );
        }
    }
}
