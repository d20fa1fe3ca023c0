//! `llama` (Llama 2 / 3.x, Mistral, SmolLM, TinyLlama: what differs is metadata): candle's
//! quantized Llama by default; the project's own ([`crate::models::quantized::llama`], which
//! batches and applies Llama 3.x `rope_freqs.weight` and linear scaling) where candle's refuses
//! the file or `?impl=modelbench` asks for it.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_transformers::models::quantized_llama;

use super::fixture::{GgufFixture, Parts};
use super::own::{self, OwnModel};
use super::spec::*;
use super::GgufImpl;
use super::{candle, refuses_any_rope_scaling, Build, GgufFamily, Implementation, Positions};
use crate::error::Result;
use crate::models::batched::{BatchOptions, Slots, StepModel};
use crate::models::quantized;
use crate::models::quantized::llama::layout::{
    Biases, ExpertsRule, Layout, MlpKind, NormKind, RopeLayout,
};
use crate::models::quantized::llama::{Batched, ModelWeights};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "llama",
    family: Family::Llama,
    spec: ArchSpec {
        arch: "llama",
        keys: &[
            KV,
            // candle-transformers' and the project's Llama read it without a default.
            key("rope.dimension_count", U, true, POS),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: qkv(D::Q, D::K, D::V, true, B::All),
        tensors: &[
            ATTN_NORM,
            ATTN_OUT,
            t("blk.{}.attn_output.bias", &[D::Embd], O, B::All),
            FFN_NORM,
            t("rope_freqs.weight", &[D::Rot2], O, B::None),
            t("blk.{}.ffn_gate.weight", &[D::Embd, D::Ff], R, B::Dense),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::Dense),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::Dense),
            t("blk.{}.ffn_gate.bias", &[D::Ff], O, B::Dense),
            t("blk.{}.ffn_down.bias", &[D::Embd], O, B::Dense),
            t("blk.{}.ffn_up.bias", &[D::Ff], O, B::Dense),
            t("blk.{}.ffn_gate_inp.weight", ROUTER, R, B::Moe),
            t("blk.{}.ffn_gate_exps.weight", UP_EXPS, O, B::Moe),
            t("blk.{}.ffn_down_exps.weight", DOWN_EXPS, R, B::Moe),
            t("blk.{}.ffn_up_exps.weight", UP_EXPS, R, B::Moe),
        ],
        rot: Rot::EqualsHead,
        not_run: LLAMA_NOT_RUN,
    },
    layout: Some(Layout {
        norm: NormKind::Rms,
        rope: RopeLayout::Interleaved,
        qk_norm: false,
        biases: Biases::None,
        mlp: MlpKind::SwiGlu,
        fused_gate_up: false,
        experts: ExpertsRule::Optional,
        post_norms: false,
        parallel: false,
        final_norm: "output_norm",
        output_bias: false,
        short_conv: false,
    }),
    implementations: &[CANDLE, OWN],
    fixtures: &[
        GgufFixture {
            name: "llama",
            family: Family::Llama,
            base: Family::Llama,
            adapt: None,
        },
        GgufFixture {
            name: "llama3",
            family: Family::Llama,
            base: Family::Llama,
            adapt: Some(llama3_fixture),
        },
        GgufFixture {
            name: "mixtral",
            family: Family::Llama,
            base: Family::Llama,
            adapt: Some(mixtral_fixture),
        },
    ],
};

/// Experts of the `mixtral` fixture and how many each token uses (Mixtral 8x7B's 8 and 2).
const MIXTRAL_EXPERTS: usize = 8;
const MIXTRAL_USED: usize = 2;

/// The Llama fixture in Mixtral's form, as llama.cpp's converter writes a Mixtral: a `llama`
/// file with `llama.expert_count` / `llama.expert_used_count`, every block's SwiGLU replaced
/// by a router (`ffn_gate_inp`, F32) and stacked experts (`ffn_{gate,up,down}_exps`, Q8_0) of
/// `feed_forward_length` each ([`super::fixture::to_experts`]).
fn mixtral_fixture(p: &mut Parts) -> Result<()> {
    let ff = p.cfg_u("intermediate_size");
    super::fixture::to_experts(p, MIXTRAL_EXPERTS, ff, 0x313A)?;
    p.set("llama.expert_count", Value::U32(MIXTRAL_EXPERTS as u32));
    p.set("llama.expert_used_count", Value::U32(MIXTRAL_USED as u32));
    p.set(
        "general.name",
        Value::String(format!(
            "modelbench fixture mixtral (Llama with {MIXTRAL_EXPERTS} experts, top-{MIXTRAL_USED}, Mixtral-style; Q8_0)"
        )),
    );
    Ok(())
}

fn expert_count(ct: &Content) -> usize {
    super::md_f32(ct, "llama.expert_count").unwrap_or(0.0) as usize
}

/// Why candle's quantized_llama cannot run a mixture-of-experts file as it describes itself.
fn candle_moe_refuses(ct: &Content) -> Option<String> {
    match expert_count(ct) {
        0 => None,
        1 => Some("`llama.expert_count` = 1: candle-transformers 0.11.1's quantized_llama reads such a file as a dense model (ffn_gate/up/down), llama.cpp as one expert (ffn_*_exps)".into()),
        _ => (0..)
            .map_while(|l| {
                let n = format!("blk.{l}.ffn_up_exps.weight");
                ct.tensor_infos.contains_key(&n).then_some(l)
            })
            .find(|l| !ct.tensor_infos.contains_key(&format!("blk.{l}.ffn_gate_exps.weight")))
            .map(|l| format!("block {l} has no `ffn_gate_exps.weight` (llama.cpp's optional gate): candle-transformers 0.11.1's quantized_llama needs a gate per expert")),
    }
}

/// Llama 3.x's RoPE scaling as llama.cpp's converter writes it: per-pair frequency divisors
/// in `rope_freqs.weight` from the `llama3` rope_scaling of config.json (factor,
/// low/high_freq_factor, original_max_position_embeddings), following the reference
/// definition in HF transformers' `_compute_llama3_parameters`.
pub fn llama3_rope_factors(
    head_dim: usize,
    base: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_context: f32,
) -> Vec<f32> {
    let low_wavelen = original_context / low_freq_factor;
    let high_wavelen = original_context / high_freq_factor;
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / base.powf(i as f32 / head_dim as f32);
            let wavelen = std::f32::consts::TAU / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_context / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// The Llama fixture shaped like a Llama 3.2 file: `rope_freqs.weight` from the fixture's
/// llama3 rope_scaling, with the original context lowered to 64 positions so that the
/// scaled pairs rotate visibly within the few hundred positions a gate scores (at 8192, as
/// in Llama 3.2, the factors would change nothing measurable on a 16-wide head). Of its 8
/// pairs, 5 are divided by the factor and 2 lie between (the smooth part of the rule). At 256
/// (fixture v6) only 4 were scaled, by wavelengths the gate's 512 positions barely turn: the
/// fixture without `rope_freqs.weight` then passed `verify` on the held-out text (mean KLD
/// 3.2e-6 against the 1e-4 floor, PPL ratio 1.00061 inside 1.00062).
fn llama3_fixture(p: &mut Parts) -> Result<()> {
    let rs = &p.config["rope_scaling"];
    let f = |k: &str, d: f64| rs[k].as_f64().unwrap_or(d) as f32;
    let hidden = p.cfg_u("hidden_size");
    let hd = hidden / p.cfg_u("num_attention_heads").max(1);
    let base = p.config["rope_theta"].as_f64().unwrap_or(10_000.0) as f32;
    let factors = llama3_rope_factors(
        hd,
        base,
        f("factor", 32.0),
        f("low_freq_factor", 1.0),
        f("high_freq_factor", 4.0),
        64.0,
    );
    let n = factors.len();
    p.tensors.push((
        "rope_freqs.weight".into(),
        candle_core::Tensor::from_vec(factors, n, &candle_core::Device::Cpu)?,
    ));
    p.set(
        "general.name",
        candle_core::quantized::gguf_file::Value::String(
            "modelbench fixture llama3 (Llama 3.2-shaped: rope_freqs.weight; Q8_0)".into(),
        ),
    );
    Ok(())
}

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |ct| {
        if expert_count(ct) > 1 {
            "candle-transformers 0.11.1 quantized_llama (mixture of experts; stacked ffn_*_exps read as its per-expert tensors)".into()
        } else {
            "candle-transformers 0.11.1 quantized_llama".into()
        }
    },
    positions: Positions::Fixed(quantized_llama::MAX_SEQ_LEN),
    refuses: |arch, ct| {
        refuses_any_rope_scaling("candle-transformers 0.11.1 quantized_llama", arch, ct)
            .or_else(|| candle_moe_refuses(ct))
    },
    exact_context: |_| None,
    one_token_after_start: false,
    build: |mut b| {
        crate::models::gguf::read::split_stacked_experts(&mut b.ct)?;
        let m = quantized_llama::ModelWeights::from_gguf(b.ct, b.file, b.device)?;
        Ok(candle::boxed(
            m,
            |m, x, p| m.forward(x, p),
            Some(|m| m.clear_kv_cache()),
            Some(|m| m.clone()),
        ))
    },
};

/// The project's own implementation of the Llama-shaped families (`llama` with or without
/// experts, `qwen2`, `qwen3`, `qwen3moe`, `phi3`, `glm4`, `phi2`, `lfm2`).
pub(super) const OWN: Implementation = Implementation {
    imp: GgufImpl::Modelbench,
    label: |ct| {
        let arch = super::md_str(ct, "general.architecture").unwrap_or_default();
        let experts = super::decoder_of(ct)
            .ok()
            .and_then(|fam| quantized::llama::Config::from_gguf(ct, &fam).ok())
            .and_then(|c| c.experts)
            .map(|e| format!("; {} experts, top-{}", e.count, e.used))
            .unwrap_or_default();
        format!("modelbench quantized_{arch} (the project's own, impl=modelbench: per-sequence KV caches, batched by `modelbench serve`{experts})")
    },
    positions: Positions::Asked,
    refuses: |_, ct| own_refuses(ct),
    exact_context: |_| None,
    one_token_after_start: false,
    build: own::build::<ModelWeights>,
};

/// Whether the project's implementation refuses the file (its config reader says why).
pub(super) fn own_refuses(ct: &Content) -> Option<String> {
    match super::decoder_of(ct) {
        Ok(fam) => quantized::llama::Config::from_gguf(ct, &fam)
            .err()
            .map(|e| crate::error::one_line(&e.to_string())),
        Err(why) => Some(why),
    }
}

impl OwnModel for ModelWeights {
    fn load(b: Build<'_>) -> candle_core::Result<Self> {
        let fam = super::decoder_of(&b.ct).map_err(candle_core::Error::Msg)?;
        ModelWeights::from_gguf(b.ct, &fam, b.file, b.device, b.context)
    }
    fn match_ggml_gelu(&mut self) -> bool {
        ModelWeights::match_ggml_gelu(self)
    }
    fn match_candle_arithmetic(&mut self) -> bool {
        ModelWeights::match_candle_arithmetic(self)
    }
    fn batch(self, o: &BatchOptions) -> Result<Box<dyn StepModel>> {
        if o.fast_weights {
            return Err(crate::error::Error::Model(format!(
                "--fast-weights: it re-encodes the project's Gemma 3 weights; the project's quantized {} has no such variant; leave --fast-weights out",
                self.config().arch
            )));
        }
        Ok(Box::new(Slots::new(Batched::new(self)?, o.slots)))
    }
}
