//! `qwen3`: candle's quantized Qwen3 by default, the project's own (which batches) with
//! `?impl=modelbench` or `serve --max-batch`.

use candle_transformers::models::quantized_qwen3;

use super::llama::OWN;
use super::GgufImpl;
use super::{candle, refuses_any_rope_scaling, GgufFamily, Implementation, Positions};
use crate::models::gguf_fixture::GgufFixture;
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "qwen3",
    family: Family::Qwen3,
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
