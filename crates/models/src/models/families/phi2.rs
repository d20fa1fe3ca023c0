//! `phi2` (Phi-2: LayerNorm with biases, attention and MLP in parallel from the same norm,
//! partial rotary embedding over the first `rope.dimension_count` dimensions of each head,
//! GELU MLP, biases everywhere): candle-transformers' quantized_phi by default; the project's
//! own ([`crate::models::quantized::llama`]: it batches, its forward is traced by `ops`, and it
//! runs the files candle's refuses for separate q/k/v, fewer KV heads or another RoPE base)
//! with `?impl=modelbench` or where candle's refuses the file.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Tensor;
use candle_transformers::models::quantized_phi;

use super::fixture::{seeded_tensor, GgufFixture, Parts, SHARPEN_QK};
use super::llama::OWN;
use super::spec::*;
use super::GgufImpl;
use super::{candle, md_f32, refuses_any_rope_scaling, GgufFamily, Implementation, Positions};
use crate::error::Result;
use crate::models::quantized::llama::layout::{
    Biases, ExpertsRule, Layout, MlpKind, NormKind, RopeLayout,
};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "phi2",
    family: Family::Phi2,
    spec: ArchSpec {
        arch: "phi2",
        keys: &[KV],
        eps: "attention.layer_norm_epsilon",
        qkv: qkv(D::Embd, D::K, D::V, true, B::All),
        tensors: &[
            t("output_norm.bias", &[D::Embd], R, B::None),
            t("output.weight", &[D::Embd, D::Vocab], R, B::None),
            t("output.bias", &[D::Vocab], R, B::None),
            ATTN_NORM,
            t("blk.{}.attn_norm.bias", &[D::Embd], R, B::All),
            ATTN_OUT_EMBD,
            t("blk.{}.attn_output.bias", &[D::Embd], R, B::All),
            FFN_DOWN,
            t("blk.{}.ffn_down.bias", &[D::Embd], R, B::All),
            FFN_UP,
            t("blk.{}.ffn_up.bias", &[D::Ff], R, B::All),
        ],
        rot: Rot::AtMostHead,
        not_run: &[],
    },
    layout: Some(Layout {
        norm: NormKind::LayerWithBias,
        rope: RopeLayout::NeoX,
        qk_norm: false,
        biases: Biases::Every,
        mlp: MlpKind::Gelu,
        fused_gate_up: false,
        experts: ExpertsRule::Never,
        post_norms: false,
        parallel: true,
        final_norm: "output_norm",
        output_bias: true,
        short_conv: false,
    }),
    implementations: &[CANDLE, OWN],
    fixtures: &[GgufFixture {
        name: "phi2",
        family: Family::Phi2,
        base: Family::Llama,
        adapt: Some(fixture),
    }],
};

/// Rotated dimensions of the fixture's 16-wide heads (Phi-2 rotates 32 of 80).
pub const FIXTURE_ROT: u32 = 8;

/// The fixture's q/k (weights and biases) scaled by this beyond the writer's sharpening: with
/// the writer's alone, Phi-2's q/k biases and LayerNorm keep its attention so flat that
/// rotating the whole head instead of its first 8 dimensions moved the mean KLD by 4e-8 and
/// the PPL ratio by 5e-4 only; with 3x more, the fixture tells it (PPL ratio 0.998 against
/// limits 0.9998 .. 1.0002, measured 2026-11-25).
pub const PHI2_QK: f64 = 3.0;

/// The Llama fixture as a Phi-2 file as llama.cpp's converter writes one from the original
/// checkpoint (`mixer.Wqkv`, as the Phi-2 GGUFs in circulation have it): `phi2.*` keys with
/// `attention.layer_norm_epsilon` (LayerNorm, not RMS), no `rope.freq_base` (10000 by
/// default), `rope.dimension_count` = [`FIXTURE_ROT`] of 16 (partial rotary), as many KV
/// heads as heads (Phi-2 is multi-head: the base's K/V heads repeated, the same model);
/// per block a fused `attn_qkv` with bias, `attn_output`, `ffn_up`, `ffn_down` with biases,
/// `attn_norm` with a bias and no `ffn_norm` (the MLP reads the attention's norm); the final
/// norm's bias and `output.weight` + `output.bias`. Biases are seeded (std 0.5: a model that
/// dropped them computes visibly different logits). The q/k rows are sharpened here (the
/// writer's [`SHARPEN_QK`] looks for separate `attn_q`/`attn_k`), by [`PHI2_QK`] more.
fn fixture(p: &mut Parts) -> Result<()> {
    p.retarget("llama", "phi2");
    let eps = p
        .metadata
        .iter()
        .find(|(k, _)| k == "phi2.attention.layer_norm_rms_epsilon")
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::F32(1e-5));
    p.drop_keys(|k| {
        matches!(
            k,
            "phi2.attention.key_length"
                | "phi2.attention.value_length"
                | "phi2.rope.freq_base"
                | "phi2.attention.layer_norm_rms_epsilon"
        )
    });
    p.set("phi2.attention.layer_norm_epsilon", eps);
    p.set("phi2.rope.dimension_count", Value::U32(FIXTURE_ROT));
    let hidden = p.cfg_u("hidden_size");
    let heads = p.cfg_u("num_attention_heads").max(1);
    let kv = p.cfg_u("num_key_value_heads").max(1);
    let hd = hidden / heads;
    let ff = p.cfg_u("intermediate_size");
    p.set("phi2.attention.head_count_kv", Value::U32(heads as u32));
    // Query head h reads KV head h / (heads / kv), as repeat_kv does.
    let rep: Vec<u32> = (0..heads).map(|h| (h / (heads / kv)) as u32).collect();
    let rep = Tensor::new(rep.as_slice(), &candle_core::Device::Cpu)?;
    let mha = |t: Tensor| -> Result<Tensor> {
        Ok(t.reshape((kv, hd, hidden))?
            .index_select(&rep, 0)?
            .reshape((heads * hd, hidden))?)
    };
    let mut seed = 0x9417_0000u64;
    let mut bias = |n: usize| {
        seed += 1;
        seeded_tensor(&[n], 0.5, seed)
    };
    for l in 0..p.cfg_u("num_hidden_layers") {
        let n = |x: &str| format!("blk.{l}.{x}");
        let q = (p.take(&n("attn_q.weight"))? * (SHARPEN_QK * PHI2_QK))?;
        let k = mha((p.take(&n("attn_k.weight"))? * (SHARPEN_QK * PHI2_QK))?)?;
        let v = mha(p.take(&n("attn_v.weight"))?)?;
        p.put(n("attn_qkv.weight"), Tensor::cat(&[q, k, v], 0)?);
        let b = bias(3 * hidden)?;
        let b = Tensor::cat(
            &[
                (b.narrow(0, 0, 2 * hidden)? * PHI2_QK)?,
                b.narrow(0, 2 * hidden, hidden)?,
            ],
            0,
        )?;
        p.put(n("attn_qkv.bias"), b);
        p.put(n("attn_output.bias"), bias(hidden)?);
        p.put(n("attn_norm.bias"), bias(hidden)?);
        p.take(&n("ffn_norm.weight"))?;
        p.take(&n("ffn_gate.weight"))?;
        p.put(n("ffn_up.bias"), bias(ff)?);
        p.put(n("ffn_down.bias"), bias(hidden)?);
    }
    let vocab = p.cfg_u("vocab_size");
    p.put("output_norm.bias", bias(hidden)?);
    let embd = p.get("token_embd.weight")?;
    p.put("output.weight", embd);
    p.put("output.bias", bias(vocab)?);
    Ok(())
}

const RUNS: &str = "candle-transformers 0.11.1 quantized_phi";

/// What candle-transformers 0.11.1's quantized_phi cannot run as the file describes it: it
/// reads only a fused `attn_qkv` (files converted from the later HF checkpoint have separate
/// q/k/v), splits it as if K and V had as many heads as Q, builds RoPE with base 10000 for
/// 4096 positions, and applies no RoPE scaling.
fn refuses(arch: &str, ct: &Content) -> Option<String> {
    if let Some(why) = refuses_any_rope_scaling(RUNS, arch, ct) {
        return Some(why);
    }
    if let Some(base) = md_f32(ct, "phi2.rope.freq_base").filter(|b| *b != 10_000.0) {
        return Some(format!(
            "`phi2.rope.freq_base` is {base}; {RUNS} builds its RoPE tables with base 10000 whatever the file says"
        ));
    }
    if !ct.tensor_infos.contains_key("blk.0.attn_qkv.weight") {
        return Some(format!(
            "the file has separate attn_q/attn_k/attn_v weights; {RUNS} reads only a fused `attn_qkv.weight`"
        ));
    }
    let u = |k: &str| ct.metadata.get(k).and_then(|v| v.to_u32().ok());
    if let (Some(h), Some(kv)) = (
        u("phi2.attention.head_count"),
        u("phi2.attention.head_count_kv"),
    ) {
        if h != kv {
            return Some(format!(
                "`phi2.attention.head_count_kv` is {kv} of {h} heads; {RUNS} splits the fused QKV as if every projection had {h} heads"
            ));
        }
    }
    None
}

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |_| RUNS.into(),
    positions: Positions::Fixed(quantized_phi::MAX_SEQ_LEN),
    refuses,
    exact_context: |_| None,
    one_token_after_start: false,
    build: |b| {
        let m = quantized_phi::ModelWeights::from_gguf(b.ct, b.file, b.device)?;
        // No cache reset method: a forward at position 0 replaces every layer's cache.
        Ok(candle::boxed(
            m,
            |m, x, p| m.forward(x, p),
            None,
            Some(|m| m.clone()),
        ))
    },
};
