//! `qwen3moe` (Qwen3-30B-A3B-shaped: Qwen3's attention with per-head q/k norms, every block's
//! MLP a softmax-routed top-k mixture with the k weights renormalised): the project's own
//! ([`crate::models::quantized::llama`], candle's quantized matmuls, one per expert; it runs on
//! every device and batches) by default, and candle's quantized Qwen3-MoE with
//! `?impl=candle-transformers`. candle's computes its experts with
//! `candle_nn::moe::moe_gemm_gguf`, a CUDA kernel only (on the CPU candle-nn 0.11.1 bails
//! "moe_gemm_gguf is only implemented for the cuda backend"): on a CPU its builder says so in
//! one line instead of failing at the first forward; on CUDA it fails the KLD gate
//! (docs/models.md), so it is not the default.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_qwen3_moe::GGUFQWenMoE;

use super::fixture::{GgufFixture, Parts};
use super::llama::OWN;
use super::spec::*;
use super::GgufImpl;
use super::{candle, refuses_any_rope_scaling, GgufFamily, Implementation, Positions};
use crate::error::Result;
use crate::models::gguf::read::copy_content;
use crate::models::quantized::llama::layout::{
    Biases, ExpertsRule, Layout, MlpKind, NormKind, RopeLayout,
};
use crate::models::Family;

pub(super) static FAMILY: GgufFamily = GgufFamily {
    arch: "qwen3moe",
    family: Family::Qwen3Moe,
    spec: ArchSpec {
        arch: "qwen3moe",
        keys: &[
            KV,
            key("expert_count", U, true, Range::Int(1, MAX_EXPERTS)),
            key("expert_used_count", U, true, Range::Int(1, MAX_EXPERTS)),
            // candle-transformers' quantized_qwen3_moe reads it without a default.
            key("expert_feed_forward_length", U, true, POS),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: qkv(D::Q, D::K, D::K, true, B::All),
        tensors: &[
            ATTN_NORM,
            ATTN_OUT,
            K_NORM,
            Q_NORM,
            FFN_NORM,
            t("blk.{}.ffn_gate_inp.weight", ROUTER, R, B::All),
            t("blk.{}.ffn_gate_exps.weight", UP_EXPS_FF_EXP, R, B::All),
            t("blk.{}.ffn_down_exps.weight", DOWN_EXPS_FF_EXP, R, B::All),
            t("blk.{}.ffn_up_exps.weight", UP_EXPS_FF_EXP, R, B::All),
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
        experts: ExpertsRule::Required,
        post_norms: false,
        parallel: false,
        final_norm: "output_norm",
        output_bias: false,
        short_conv: false,
    }),
    implementations: &[OWN, CANDLE],
    fixtures: &[GgufFixture {
        name: "qwen3moe",
        family: Family::Qwen3Moe,
        base: Family::Qwen3,
        adapt: Some(fixture),
    }],
};

/// Experts, experts per token and expert width of the fixture (those of the safetensors
/// `fixture:qwen3-moe`, fixtures/models/qwen3-moe/config.json).
const EXPERTS: usize = 8;
const USED: usize = 2;
const EXPERT_FF: usize = 32;

/// The Qwen3 fixture as a Qwen3-MoE file as llama.cpp's converter writes one
/// (Qwen3MoeModel): `qwen3moe.*` keys with expert_count, expert_used_count and
/// expert_feed_forward_length, every block's SwiGLU replaced by a router and stacked experts
/// ([`super::fixture::to_experts`]).
fn fixture(p: &mut Parts) -> Result<()> {
    p.retarget("qwen3", "qwen3moe");
    super::fixture::to_experts(p, EXPERTS, EXPERT_FF, 0x03E0)?;
    p.set("qwen3moe.expert_count", Value::U32(EXPERTS as u32));
    p.set("qwen3moe.expert_used_count", Value::U32(USED as u32));
    p.set(
        "qwen3moe.expert_feed_forward_length",
        Value::U32(EXPERT_FF as u32),
    );
    Ok(())
}

const RUNS: &str =
    "candle-transformers 0.11.1 quantized_qwen3_moe (bf16 attention and expert inputs)";

/// The dtype candle's model computes attention and feeds its experts in. candle-nn 0.11.1's
/// `moe_gemm_gguf` prefill converts its input to this dtype and then reads it as f16 when it
/// is F16 and as bf16 otherwise, so with F32 every prompt of more than one token fails
/// ("unexpected dtype, expected: BF16, got: F32", seen on an H200 on 2026-11-26); f16 or bf16
/// are the dtypes it runs. bf16, as candle's CUDA models default to: f16's range (65504) is
/// too small for the activations of real Qwen models.
const ACTIVATIONS: DType = DType::BF16;

/// candle's model with what a reset needs: it has no cache reset (its ConcatKvCache keeps
/// growing across forwards at position 0), so a forward at position 0 after others rebuilds
/// it from the file (the weights again, the header it was built from kept).
struct Reloading {
    m: GGUFQWenMoE,
    file: std::fs::File,
    device: Device,
    /// The header it was built from (`qwen3moe.context_length` as the loader lowered it).
    header: Content,
    /// Positions in its caches.
    len: usize,
}

impl Reloading {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        if pos == 0 && self.len > 0 {
            let ct = copy_content(&self.header);
            self.m = GGUFQWenMoE::from_gguf(ct, &mut self.file, &self.device, ACTIVATIONS)?;
            self.len = 0;
        }
        if pos != self.len {
            candle_core::bail!(
                "{RUNS}: a forward at position {pos} with {} positions cached (it cannot cut its cache)",
                self.len
            );
        }
        let out = self.m.forward(x, pos)?;
        self.len = pos + x.dim(1)?;
        Ok(out)
    }
}

const CANDLE: Implementation = Implementation {
    imp: GgufImpl::CandleTransformers,
    label: |_| RUNS.into(),
    positions: Positions::FromMetadata,
    refuses: |arch, ct| refuses_any_rope_scaling(RUNS, arch, ct),
    exact_context: |_| None,
    one_token_after_start: false,
    build: |b| {
        if !b.device.is_cuda() {
            candle_core::bail!(
                "{RUNS} computes its experts with candle_nn::moe::moe_gemm_gguf, which candle-nn 0.11.1 implements for CUDA only (on {:?} it fails at the first forward); run qwen3moe files on a CUDA device (a build with --features cuda)",
                b.device.location()
            );
        }
        let header = copy_content(&b.ct);
        let m = GGUFQWenMoE::from_gguf(b.ct, b.file, b.device, ACTIVATIONS)?;
        let file = b.file.try_clone()?;
        Ok(candle::boxed(
            Reloading {
                m,
                file,
                device: b.device.clone(),
                header,
                len: 0,
            },
            |m, x, p| m.forward(x, p),
            None,
            None,
        ))
    },
};
