//! `phi3` (Phi-3 / Phi-3.5 mini: Llama's block with a fused `attn_qkv` and a fused gate+up
//! `ffn_up`, NeoX RoPE): candle-transformers' quantized Phi-3 by default; the project's own
//! ([`crate::models::quantized::llama`], the fused weights read as their parts; it batches,
//! its forward is traced by `ops`, and it runs the files candle's refuses for their RoPE base,
//! a tied output or separate q/k/v) where candle's refuses the file or `?impl=modelbench`
//! asks for it.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Tensor;
use candle_transformers::models::quantized_phi3;

use super::fixture::{GgufFixture, Parts, SHARPEN_QK};
use super::llama::OWN;
use super::spec::*;
use super::GgufImpl;
use super::{candle, md_f32, refuses_any_rope_scaling, GgufFamily, Implementation, Positions};
use crate::error::Result;
use crate::models::quantized::llama::layout::{
    Biases, ExpertsRule, Layout, MlpKind, NormKind, RopeLayout,
};
use crate::models::tokenizers::gguf::{TYPE_CONTROL, TYPE_UNKNOWN};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "phi3",
    family: Family::Phi3,
    spec: ArchSpec {
        arch: "phi3",
        keys: &[KV],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: qkv(D::Embd, D::K, D::V, false, B::All),
        tensors: &[
            ATTN_NORM,
            ATTN_OUT_EMBD,
            FFN_NORM,
            FFN_DOWN,
            FFN_UP_FUSED,
            // TENSOR_DUPLICATED past block 0: one tensor without a block number.
            t("rope_factors_long.weight", &[D::Rot2], O, B::None),
            t("rope_factors_short.weight", &[D::Rot2], O, B::None),
        ],
        rot: Rot::EqualsHead,
        not_run: &[],
    },
    layout: Some(Layout {
        norm: NormKind::Rms,
        rope: RopeLayout::NeoX,
        qk_norm: false,
        biases: Biases::None,
        mlp: MlpKind::SwiGlu,
        fused_gate_up: true,
        experts: ExpertsRule::Never,
        post_norms: false,
        parallel: false,
        final_norm: "output_norm",
        output_bias: false,
        short_conv: false,
    }),
    implementations: &[CANDLE, OWN],
    fixtures: &[GgufFixture {
        name: "phi3",
        family: Family::Phi3,
        base: Family::Llama,
        adapt: Some(fixture),
    }],
};

/// The Llama fixture as a Phi-3 file, as llama.cpp's converter writes one (Phi3MiniModel):
/// `phi3.*` keys, RoPE base 10000 (Phi-3's), no key/value_length, the sliding window and the
/// original context; per block Q, K and V fused into `attn_qkv` (rows Q, then K, then V) and
/// gate and up fused into `ffn_up` (gate first, then up: HF's `gate_up_proj`, which Phi3MLP
/// chunks in that order); an explicit `output.weight` (Phi-3 does not tie it; a copy of the
/// embedding here, so the logits keep the fixture's scale). The q/k rows are sharpened here
/// (the fixture writer's sharpening looks for separate `attn_q`/`attn_k`).
fn fixture(p: &mut Parts) -> Result<()> {
    p.retarget("llama", "phi3");
    p.drop_keys(|k| k == "phi3.attention.key_length" || k == "phi3.attention.value_length");
    p.set("phi3.rope.freq_base", Value::F32(10_000.0));
    p.set("phi3.attention.sliding_window", Value::U32(2047));
    p.set(
        "phi3.rope.scaling.original_context_length",
        Value::U32(4096),
    );
    for l in 0..p.cfg_u("num_hidden_layers") {
        let n = |x: &str| format!("blk.{l}.{x}.weight");
        let q = (p.take(&n("attn_q"))? * SHARPEN_QK)?;
        let k = (p.take(&n("attn_k"))? * SHARPEN_QK)?;
        let v = p.take(&n("attn_v"))?;
        p.put(n("attn_qkv"), Tensor::cat(&[q, k, v], 0)?);
        let gate = p.take(&n("ffn_gate"))?;
        let up = p.take(&n("ffn_up"))?;
        p.put(n("ffn_up"), Tensor::cat(&[gate, up], 0)?);
    }
    let embd = p.get("token_embd.weight")?;
    p.put("output.weight", embd);
    // llama.cpp sets attributes of `<unk>`, `<s>`, `</s>` and `<|endoftext|>` in any file
    // whose general.name says phi3 (and fails to load one without them): Phi-3's own special
    // tokens, put on the last padding ids of the base vocabulary.
    if let Some((_, Value::Array(tokens))) = p
        .metadata
        .iter_mut()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
    {
        let first = tokens.len().min(128_000) - PHI3_SPECIALS.len();
        for (i, (t, _)) in PHI3_SPECIALS.iter().enumerate() {
            tokens[first + i] = Value::String(t.to_string());
        }
        if let Some((_, Value::Array(types))) = p
            .metadata
            .iter_mut()
            .find(|(k, _)| k == "tokenizer.ggml.token_type")
        {
            for (i, (_, ty)) in PHI3_SPECIALS.iter().enumerate() {
                types[first + i] = Value::I32(*ty);
            }
        }
    }
    Ok(())
}

/// Phi-3's special tokens llama.cpp looks up by name, with their token types.
const PHI3_SPECIALS: [(&str, i32); 4] = [
    ("<unk>", TYPE_UNKNOWN),
    ("<s>", TYPE_CONTROL),
    ("</s>", TYPE_CONTROL),
    ("<|endoftext|>", TYPE_CONTROL),
];

const RUNS: &str = "candle-transformers 0.11.1 quantized_phi3";

/// What candle-transformers 0.11.1's quantized_phi3 cannot run as the file describes it: it
/// builds its RoPE tables with base 10000 whatever `phi3.rope.freq_base` says, ignores the
/// LongRoPE factors (`rope_factors_long/short.weight`, Phi-3 128k / Phi-3.5) and any RoPE
/// scaling, and reads only the fused `attn_qkv.weight` and an untied `output.weight`.
fn refuses(arch: &str, ct: &Content) -> Option<String> {
    if let Some(why) = refuses_any_rope_scaling(RUNS, arch, ct) {
        return Some(why);
    }
    if let Some(t) = ["rope_factors_long.weight", "rope_factors_short.weight"]
        .into_iter()
        .find(|t| ct.tensor_infos.contains_key(*t))
    {
        return Some(format!(
            "the file has `{t}` (LongRoPE, Phi-3 128k / Phi-3.5), which {RUNS} ignores"
        ));
    }
    if let Some(base) = md_f32(ct, "phi3.rope.freq_base").filter(|b| *b != 10_000.0) {
        return Some(format!(
            "`phi3.rope.freq_base` is {base}; {RUNS} builds its RoPE tables with base 10000 whatever the file says"
        ));
    }
    if !ct.tensor_infos.contains_key("output.weight") {
        return Some(format!(
            "the file ties the output to `token_embd.weight` (no `output.weight`, as Phi-4-mini); {RUNS} reads `output.weight`"
        ));
    }
    if !ct.tensor_infos.contains_key("blk.0.attn_qkv.weight") {
        return Some(format!(
            "the file has separate attn_q/attn_k/attn_v weights; {RUNS} reads only a fused `attn_qkv.weight`"
        ));
    }
    None
}

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |_| RUNS.into(),
    // KV cache and RoPE tables of `phi3.context_length` positions.
    positions: Positions::FromMetadata,
    refuses,
    exact_context: |_| None,
    one_token_after_start: false,
    build: |b| {
        let m = quantized_phi3::ModelWeights::from_gguf(false, b.ct, b.file, b.device)?;
        // No cache reset method: a forward at position 0 empties every layer's cache.
        Ok(candle::boxed(
            m,
            |m, x, p| m.forward(x, p),
            None,
            Some(|m| m.clone()),
        ))
    },
};
