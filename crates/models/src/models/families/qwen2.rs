//! `qwen2` (Qwen2 / Qwen2.5: Llama's block with q/k/v biases, NeoX RoPE, tied or separate
//! output): the project's own by default (it batches, and loads like llama.cpp: each tensor
//! read once, the embedding kept quantized); candle's quantized Qwen2 with
//! `?impl=candle-transformers`. Both pass the KLD gate on the real Qwen2.5-Coder-0.5B; candle's
//! dequantizes the token embedding to f32 at load (151936 x 896 x 4 bytes = 545 MB for a
//! 485 MB file), so its load peaks near 2x the file's tensor bytes.

use candle_transformers::models::quantized_qwen2;

use super::fixture::{seeded_normal, GgufFixture, Parts};
use super::llama::OWN;
use super::spec::*;
use super::GgufImpl;
use super::{candle, refuses_any_rope_scaling, GgufFamily, Implementation, Positions};
use crate::error::Result;
use crate::models::quantized::llama::layout::{
    Biases, ExpertsRule, Layout, MlpKind, NormKind, RopeLayout,
};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "qwen2",
    family: Family::Qwen2,
    spec: ArchSpec {
        arch: "qwen2",
        keys: &[KV],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: qkv(D::Embd, D::K, D::V, true, B::All),
        tensors: &[
            t("output.bias", &[D::Vocab], O, B::None),
            ATTN_NORM,
            ATTN_OUT_EMBD,
            FFN_NORM,
            FFN_GATE,
            FFN_DOWN,
            FFN_UP,
        ],
        rot: Rot::EqualsHead,
        not_run: &[],
    },
    layout: Some(Layout {
        norm: NormKind::Rms,
        rope: RopeLayout::NeoX,
        qk_norm: false,
        biases: Biases::Qkv { required: true },
        mlp: MlpKind::SwiGlu,
        fused_gate_up: false,
        experts: ExpertsRule::Never,
        post_norms: false,
        parallel: false,
        final_norm: "output_norm",
        output_bias: false,
        short_conv: false,
    }),
    implementations: &[OWN, CANDLE],
    fixtures: &[GgufFixture {
        name: "qwen2",
        family: Family::Qwen2,
        base: Family::Qwen3,
        adapt: Some(fixture),
    }],
};

/// The Qwen3 fixture as a Qwen2 file: `qwen2.*` keys, no per-head q/k norms, no
/// key/value_length (Qwen2 files derive the head size from the widths), and seeded q/k/v
/// biases (F32, as llama.cpp's converter writes them) large enough that a model without them
/// computes visibly different logits.
fn fixture(p: &mut Parts) -> Result<()> {
    p.retarget("qwen3", "qwen2");
    p.drop_keys(|k| k == "qwen2.attention.key_length" || k == "qwen2.attention.value_length");
    p.tensors
        .retain(|(n, _)| !n.ends_with("attn_q_norm.weight") && !n.ends_with("attn_k_norm.weight"));
    let hidden = p.cfg_u("hidden_size");
    let heads = p.cfg_u("num_attention_heads").max(1);
    let hd = hidden / heads;
    let kv = p.cfg_u("num_key_value_heads") * hd;
    for l in 0..p.cfg_u("num_hidden_layers") {
        for (j, (n, width)) in [("attn_q", heads * hd), ("attn_k", kv), ("attn_v", kv)]
            .into_iter()
            .enumerate()
        {
            let v = seeded_normal(width, 1.0, 0xB1A5 + (l * 3 + j) as u64);
            let t = candle_core::Tensor::from_vec(v, width, &candle_core::Device::Cpu)?;
            p.tensors.push((format!("blk.{l}.{n}.bias"), t));
        }
    }
    Ok(())
}

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |_| "candle-transformers 0.11.1 quantized_qwen2".into(),
    positions: Positions::FromMetadata,
    refuses: |arch, ct| {
        refuses_any_rope_scaling("candle-transformers 0.11.1 quantized_qwen2", arch, ct)
    },
    exact_context: |_| None,
    one_token_after_start: false,
    build: |b| {
        let m = quantized_qwen2::ModelWeights::from_gguf(b.ct, b.file, b.device)?;
        // Not Clone: a KV snapshot is restored by replaying the tokens.
        Ok(candle::boxed(
            m,
            |m, x, p| m.forward(x, p),
            Some(|m| m.clear_kv_cache()),
            None,
        ))
    },
};
