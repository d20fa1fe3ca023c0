//! `qwen3`: candle's quantized Qwen3 by default, the project's own (which batches) with
//! `?impl=modelbench` or `serve --max-batch`.

use candle_transformers::models::quantized_qwen3;

use super::fixture::GgufFixture;
use super::llama::OWN;
use super::spec::*;
use super::GgufImpl;
use super::{candle, refuses_any_rope_scaling, GgufFamily, Implementation, Positions};
use crate::models::quantized::llama::layout::{
    Biases, ExpertsRule, Layout, MlpKind, NormKind, RopeLayout,
};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "qwen3",
    family: Family::Qwen3,
    spec: ArchSpec {
        arch: "qwen3",
        keys: &[
            KV,
            // candle-transformers' quantized_qwen3 reads them without a default.
            key("attention.key_length", U, true, POS),
            key("rope.freq_base", F, true, BASE),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: qkv(D::Q, D::K, D::K, true, B::All),
        tensors: &[
            t("cls_out.weight", &[D::Embd], O, B::None),
            ATTN_NORM,
            ATTN_OUT,
            K_NORM,
            Q_NORM,
            FFN_NORM,
            FFN_GATE,
            FFN_DOWN,
            FFN_UP,
        ],
        rot: Rot::EqualsHead,
        not_run: &[
            "attn_qkv.weight",
            "attn_qkv.bias",
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
            "cls_out.weight",
        ],
    },
    layout: Some(Layout {
        norm: NormKind::Rms,
        rope: RopeLayout::NeoX,
        qk_norm: true,
        biases: Biases::None,
        mlp: MlpKind::SwiGlu,
        fused_gate_up: false,
        experts: ExpertsRule::Never,
        post_norms: false,
        parallel: false,
        final_norm: "output_norm",
        output_bias: false,
        short_conv: false,
    }),
    implementations: &[CANDLE, OWN],
    fixtures: &[GgufFixture {
        name: "qwen3",
        family: Family::Qwen3,
        base: Family::Qwen3,
        adapt: None,
    }],
};

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |_| "candle-transformers 0.11.1 quantized_qwen3".into(),
    positions: Positions::FromMetadata,
    refuses: |arch, ct| {
        refuses_any_rope_scaling("candle-transformers 0.11.1 quantized_qwen3", arch, ct)
    },
    exact_context: |_| None,
    one_token_after_start: false,
    build: |b| {
        let m = quantized_qwen3::ModelWeights::from_gguf(b.ct, b.file, b.device)?;
        Ok(candle::boxed(
            m,
            |m, x, p| m.forward(x, p),
            Some(|m| m.clear_kv_cache()),
            Some(|m| m.clone()),
        ))
    },
};
