//! `lfm2` (LiquidAI LFM2: blocks that are either a gated short convolution or grouped-query
//! attention with per-head q/k norms, a SwiGLU MLP each; which is which comes from the
//! per-block `head_count_kv`, 0 for a convolution block): candle-transformers' quantized_lfm2
//! by default; the project's own ([`crate::models::quantized::llama`]: each sequence's
//! convolution state in its own cache, so prompts run in chunks and sequences batch; its
//! forward is traced by `ops`) with `?impl=modelbench`.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_lfm2;

use super::fixture::{seeded_normal, seeded_tensor, GgufFixture, Parts};
use super::llama::OWN;
use super::spec::*;
use super::{refuses_any_rope_scaling, Build, GgufFamily, GgufImpl, GgufModel};
use super::{Implementation, Positions};
use crate::error::Result;
use crate::models::gguf::read::copy_content;
use crate::models::quantized::llama::layout::{
    Biases, ExpertsRule, Layout, MlpKind, NormKind, RopeLayout,
};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "lfm2",
    family: Family::Lfm2,
    spec: ArchSpec {
        arch: "lfm2",
        keys: &[
            key(
                "attention.head_count_kv",
                Kind::U32OrPerLayer,
                true,
                Range::Int(0, u32::MAX as u64),
            ),
            key("shortconv.l_cache", U, true, Range::Int(1, 1 << 16)),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: qkv(D::Embd, D::K, D::V, true, B::Attention),
        tensors: &[
            // llama.cpp's LLM_TENSOR_OUTPUT_NORM_LFM2 is named `token_embd_norm`.
            t("token_embd_norm.weight", &[D::Embd], R, B::None),
            FFN_NORM,
            FFN_GATE,
            FFN_DOWN,
            FFN_UP,
            ATTN_NORM,
            t("blk.{}.attn_q_norm.weight", &[D::HeadK], R, B::Attention),
            t("blk.{}.attn_k_norm.weight", &[D::HeadK], R, B::Attention),
            t("blk.{}.attn_output.weight", SQUARE, R, B::Attention),
            t("blk.{}.shortconv.conv.weight", CONV, R, B::Recurrent),
            t("blk.{}.shortconv.in_proj.weight", CONV_IN, R, B::Recurrent),
            t("blk.{}.shortconv.out_proj.weight", SQUARE, R, B::Recurrent),
        ],
        rot: Rot::EqualsHead,
        not_run: &[],
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
        final_norm: "token_embd_norm",
        output_bias: false,
        short_conv: true,
    }),
    implementations: &[CANDLE, OWN],
    fixtures: &[GgufFixture {
        name: "lfm2",
        family: Family::Lfm2,
        base: Family::Llama,
        adapt: Some(fixture),
    }],
};

/// The fixture's convolution length (LFM2's `conv_L_cache`).
pub const FIXTURE_L_CACHE: u32 = 3;

/// The Llama fixture as an LFM2 file as llama.cpp's converter (LFM2Model) writes one:
/// `lfm2.*` keys with `head_count_kv` per block as an INT32 array (block 0 a short
/// convolution, block 1 attention), `shortconv.l_cache`, RoPE base 1e6 (LFM2's), no
/// rope.dimension_count or key/value_length; the final norm named `token_embd_norm` (llama.cpp's
/// LLM_TENSOR_OUTPUT_NORM_LFM2), the output tied to the embedding. Block 0 loses its attention:
/// `shortconv.in_proj` (B, C and x, seeded so each is about unit-sized on a normed input),
/// `shortconv.conv` (3 taps per channel, F32) and `shortconv.out_proj` (the base's
/// attn_output); block 1 gains `attn_q_norm` / `attn_k_norm` (1 + seeded noise).
fn fixture(p: &mut Parts) -> Result<()> {
    p.retarget("llama", "lfm2");
    p.drop_keys(|k| {
        matches!(
            k,
            "lfm2.attention.key_length"
                | "lfm2.attention.value_length"
                | "lfm2.rope.dimension_count"
        )
    });
    let hidden = p.cfg_u("hidden_size");
    let heads = p.cfg_u("num_attention_heads").max(1);
    let kv = p.cfg_u("num_key_value_heads") as i32;
    let hd = hidden / heads;
    let layers = p.cfg_u("num_hidden_layers");
    p.set("lfm2.rope.freq_base", Value::F32(1_000_000.0));
    p.set("lfm2.shortconv.l_cache", Value::U32(FIXTURE_L_CACHE));
    let per_block: Vec<Value> = (0..layers)
        .map(|l| Value::I32(if l % 2 == 0 { 0 } else { kv }))
        .collect();
    p.set("lfm2.attention.head_count_kv", Value::Array(per_block));
    for l in 0..layers {
        let n = |x: &str| format!("blk.{l}.{x}.weight");
        if l % 2 == 0 {
            p.take(&n("attn_q"))?;
            p.take(&n("attn_k"))?;
            p.take(&n("attn_v"))?;
            let out = p.take(&n("attn_output"))?;
            let std = 1.0 / (hidden as f32).sqrt();
            p.put(
                n("shortconv.in_proj"),
                seeded_tensor(&[3 * hidden, hidden], std, 0x1F42_0000 + l as u64)?,
            );
            p.put(
                n("shortconv.conv"),
                seeded_tensor(
                    &[hidden, FIXTURE_L_CACHE as usize],
                    0.5,
                    0x1F42_1000 + l as u64,
                )?,
            );
            p.put(n("shortconv.out_proj"), out);
        } else {
            for (j, which) in ["attn_q_norm", "attn_k_norm"].into_iter().enumerate() {
                let v: Vec<f32> = seeded_normal(hd, 0.1, 0x1F42_2000 + (2 * l + j) as u64)
                    .into_iter()
                    .map(|x| 1.0 + x)
                    .collect();
                p.put(n(which), Tensor::from_vec(v, hd, &Device::Cpu)?);
            }
        }
    }
    let norm = p.take("output_norm.weight")?;
    p.put("token_embd_norm.weight", norm);
    Ok(())
}

const RUNS: &str = "candle-transformers 0.11.1 quantized_lfm2";

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |_| RUNS.into(),
    // RoPE tables of `lfm2.context_length` positions (its KV cache grows by concatenation).
    positions: Positions::FromMetadata,
    refuses: |arch, ct| refuses_any_rope_scaling(RUNS, arch, ct),
    exact_context: |_| None,
    // Its short convolution ignores the saved state in a multi-token forward after position
    // 0 (it pads with zeros as at the start), so chunked prefill goes one token at a time.
    one_token_after_start: true,
    build: |b| Ok(Box::new(Lfm2::load(b)?)),
};

/// candle's quantized_lfm2 with a reset: its short-convolution state is replaced by a
/// multi-token forward at position 0 but reused by a one-token one (and the model has no
/// reset method and is not `Clone`), so after a reset a one-token start reloads the weights.
struct Lfm2 {
    m: quantized_lfm2::ModelWeights,
    file: std::fs::File,
    /// The header it was built from (`lfm2.context_length` as the loader lowered it).
    header: Content,
    device: Device,
    /// A forward ran since the model was built.
    used: bool,
}

impl Lfm2 {
    fn load(b: Build<'_>) -> candle_core::Result<Lfm2> {
        let file = b.file.try_clone()?;
        let header = copy_content(&b.ct);
        let m = quantized_lfm2::ModelWeights::from_gguf(b.ct, b.file, b.device)?;
        Ok(Lfm2 {
            m,
            file,
            header,
            device: b.device.clone(),
            used: false,
        })
    }
    fn reload(&mut self) -> candle_core::Result<()> {
        let ct = copy_content(&self.header);
        self.m = quantized_lfm2::ModelWeights::from_gguf(ct, &mut self.file, &self.device)?;
        self.used = false;
        Ok(())
    }
}

impl GgufModel for Lfm2 {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        if pos == 0 && x.dim(1)? == 1 && self.used {
            self.reload()?;
        }
        self.used = true;
        self.m.forward(x, pos)
    }
    fn reset(&mut self) {}
    fn snapshot(&self) -> Option<Box<dyn GgufModel>> {
        None
    }
    fn can_snapshot(&self) -> bool {
        false
    }
}
