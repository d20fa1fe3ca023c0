//! `gemma3`: the project's own quantized Gemma 3 by default (checked against llama.cpp; it
//! batches, with `--fast-weights` on the project's kernels); candle-transformers' with
//! `?impl=candle-transformers` (known wrong: SiLU MLP, no sliding window in decode).

use candle_transformers::models::quantized_gemma3;

use super::fixture::GgufFixture;
use super::own::{self, OwnModel};
use super::spec::*;
use super::GgufImpl;
use super::{candle, refuses_any_rope_scaling, Build, GgufFamily, Implementation, Positions};
use crate::error::{one_line, Result};
use crate::models::batched::{BatchOptions, Slots, StepModel};
use crate::models::quantized;
use crate::models::quantized::gemma3::{Batched, ModelWeights};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "gemma3",
    family: Family::Gemma3,
    spec: ArchSpec {
        arch: "gemma3",
        keys: &[
            KV,
            // candle-transformers' quantized_gemma3 reads them without a default.
            key("attention.key_length", U, true, POS),
            key("attention.value_length", U, true, POS),
            key(
                "attention.sliding_window",
                U,
                true,
                Range::Int(1, MAX_CONTEXT),
            ),
            key(
                "attention.sliding_window_type",
                U,
                false,
                Range::Int(1, MAX_LAYERS),
            ),
            // llama.cpp's key (a period; its per-layer array form is checked by the model).
            key(
                "attention.sliding_window_pattern",
                U,
                false,
                Range::Int(1, MAX_LAYERS),
            ),
            key("rope.local_freq_base", F, false, BASE),
            key("final_logit_softcapping", F, false, Range::Float(0.0, 1e6)),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: qkv(D::Q, D::K, D::V, true, B::All),
        tensors: &[
            ATTN_NORM,
            ATTN_OUT,
            POST_ATTN_NORM,
            K_NORM,
            Q_NORM,
            FFN_NORM,
            FFN_GATE,
            FFN_UP,
            FFN_DOWN,
            POST_FFW_NORM,
        ],
        rot: Rot::EqualsHead,
        not_run: &[
            "attn_qkv.weight",
            "attn_qkv.bias",
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
        ],
    },
    // Gemma 3 runs on its own decoder (crate::models::quantized::gemma3), not the generic one.
    layout: None,
    implementations: &[OWN, CANDLE],
    fixtures: &[GgufFixture {
        name: "gemma3",
        family: Family::Gemma3,
        base: Family::Gemma3,
        adapt: None,
    }],
};

fn window(ct: &candle_core::quantized::gguf_file::Content) -> Option<usize> {
    ct.metadata
        .get("gemma3.attention.sliding_window")
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
}

const OWN: Implementation = Implementation {
    imp: GgufImpl::Modelbench,
    // Not the built context (meta.built_context has it): this string is part of the quality
    // verdict's key, which must not change with a run's context length.
    label: |ct| {
        format!(
        "modelbench quantized_gemma3 (GELU-tanh MLP, sliding window of {} in prefill and decode, attention softmax summed in row order on the CPU): candle-transformers 0.11.1 quantized_gemma3 uses SiLU and no decode window",
        window(ct).unwrap_or(0)
    )
    },
    positions: Positions::Asked,
    refuses: |_, ct| {
        quantized::gemma3::Config::from_gguf(ct)
            .err()
            .map(|e| one_line(&e.to_string()))
    },
    exact_context: |_| None,
    one_token_after_start: false,
    build: own::build::<ModelWeights>,
};

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |_| {
        "candle-transformers 0.11.1 quantized_gemma3 (chosen with impl=candle-transformers; known wrong: SiLU MLP, no sliding window in decode)".into()
    },
    positions: Positions::Fixed(quantized_gemma3::MAX_SEQ_LEN),
    refuses: |arch, ct| {
        refuses_any_rope_scaling(
            "candle-transformers 0.11.1 quantized_gemma3 (impl=candle-transformers)",
            arch,
            ct,
        )
    },
    exact_context: window,
    // candle 0.11's quantized_gemma3 fails a multi-token forward at index_pos > 0 (its mask
    // concatenates f32 zeros with a u32 mask: "dtype mismatch in cat").
    one_token_after_start: true,
    build: |b| {
        let m = quantized_gemma3::ModelWeights::from_gguf(b.ct, b.file, b.device)?;
        // No cache reset method: a forward at position 0 replaces every layer's cache.
        Ok(candle::boxed(
            m,
            |m, x, p| m.forward(x, p),
            None,
            Some(|m| m.clone()),
        ))
    },
};

impl OwnModel for ModelWeights {
    fn load(b: Build<'_>) -> candle_core::Result<Self> {
        // Where the embedding lies in the file, so `--fast-weights` can repack the tied
        // lm_head from the file after freeing the loaded table (never both in memory).
        let embd =
            b.ct.tensor_infos
                .get("token_embd.weight")
                .map(|i| b.ct.tensor_data_offset + i.offset);
        let file = b.file.try_clone()?;
        let mut m = ModelWeights::from_gguf(b.ct, b.file, b.device, b.context)?;
        if let Some(offset) = embd {
            m.keep_embedding_source(file, offset);
        }
        Ok(m)
    }
    fn match_ggml_gelu(&mut self) -> bool {
        ModelWeights::match_ggml_gelu(self)
    }
    fn batch(self, o: &BatchOptions) -> Result<Box<dyn StepModel>> {
        Ok(Box::new(Slots::new(
            Batched::new(self, o.fast_weights, o.swa_full)?,
            o.slots,
        )))
    }
}
