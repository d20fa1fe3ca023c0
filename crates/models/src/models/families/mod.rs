//! The model-family table: one entry per GGUF architecture the suite runs. An entry says
//! which `general.architecture` it reads, which implementations can run such a file (in order
//! of preference: a file runs on the first that does not refuse it unless `?impl=` names
//! one), how each is labelled in records, which positions it builds, what it refuses rather
//! than run wrong, and how it is built. Every place that asks "which family / which code"
//! asks this table ([`by_arch`]); a family's own file holds only its wiring.
//!
//! What a file must contain (tensor names and shapes, hyper-parameters) is checked before
//! anything here is built, by the GGUF validation of the models layer.

use std::any::Any;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::models::batched::{BatchOptions, StepModel};
use crate::models::quantized::llama::{FamilyLayout, Layout};
use crate::models::Family;
use fixture::GgufFixture;
use spec::{ArchSpec, Rot};

/// Which code runs a GGUF model (`gguf:...?impl=<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufImpl {
    /// The project's own model: [`super::quantized::gemma3`] for Gemma 3,
    /// [`super::quantized::llama`] for Llama (with or without experts), Qwen2, Qwen3 and
    /// Qwen3-MoE.
    Modelbench,
    /// candle-transformers 0.11.1's quantized model of the family.
    CandleTransformers,
}

impl GgufImpl {
    pub const ALLOWED: &'static str = "modelbench, candle-transformers";

    pub fn name(self) -> &'static str {
        match self {
            GgufImpl::Modelbench => "modelbench",
            GgufImpl::CandleTransformers => "candle-transformers",
        }
    }

    pub fn parse(s: &str) -> std::result::Result<GgufImpl, String> {
        match s {
            "modelbench" => Ok(GgufImpl::Modelbench),
            "candle-transformers" => Ok(GgufImpl::CandleTransformers),
            other => Err(format!(
                "unknown GGUF implementation `{other}` (allowed: {})",
                GgufImpl::ALLOWED
            )),
        }
    }

    /// The implementation a file of `family` without RoPE scaling runs on when `?impl=` names
    /// none (the family table's first; a file's own default is
    /// [`GgufFamily::default_for`]).
    pub fn default_for(family: Family) -> GgufImpl {
        of(family)
            .map(|f| f.implementations[0].imp)
            .unwrap_or(GgufImpl::CandleTransformers)
    }

    /// Whether this implementation exists for `family`.
    pub fn supports(self, family: Family) -> bool {
        of(family).is_some_and(|f| f.implementation(self).is_some())
    }
}

mod candle;
pub mod check;
pub mod fixture;
mod gemma3;
mod glm4;
mod lfm2;
pub(crate) mod llama;
mod own;
mod phi2;
mod phi3;
mod qwen2;
mod qwen3;
mod qwen3moe;
pub mod spec;
mod starcoder2;

/// A loaded GGUF model as the suite drives it, whichever code computes it.
pub trait GgufModel: Send {
    /// Runs `x` (1, len) at positions `pos..pos+len`; returns the last position's logits.
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor>;
    /// Empties the KV cache.
    fn reset(&mut self);
    /// A copy with the KV cache as it is now, weights shared; None where the implementation
    /// cannot be copied (the caller then restores by replaying the tokens).
    fn snapshot(&self) -> Option<Box<dyn GgufModel>>;
    /// Whether [`GgufModel::snapshot`] gives a copy (else the caller keeps the tokens to
    /// replay).
    fn can_snapshot(&self) -> bool {
        true
    }
    /// The batched form of this model for `serve --max-batch` (None: one sequence per
    /// forward); see [`crate::models::CausalLm::batched`] (with `o.fast_weights` the weights
    /// move into it).
    fn batched(&mut self, o: &BatchOptions) -> Option<Result<Box<dyn StepModel>>> {
        let _ = o;
        None
    }
    /// The project's own weights behind it (a clone sharing the tensors), for tests that
    /// drive an implementation directly; None for candle-transformers' models.
    fn own_weights(&self) -> Option<Box<dyn Any + Send>> {
        None
    }
    /// See [`crate::models::CausalLm::match_ggml_gelu`].
    fn match_ggml_gelu(&mut self) -> bool {
        false
    }
    /// See [`crate::models::CausalLm::match_candle_arithmetic`].
    fn match_candle_arithmetic(&mut self) -> bool {
        false
    }
}

/// What a builder gets: the parsed header, the open file, the device, and the positions to
/// build for.
pub struct Build<'a> {
    pub ct: Content,
    pub file: &'a mut std::fs::File,
    pub device: &'a Device,
    pub context: usize,
}

/// Which positions an implementation builds its tables and caches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Fixed tables of this many positions whatever is asked (candle's quantized Llama and
    /// Gemma3).
    Fixed(usize),
    /// `<arch>.context_length`, which the loader lowers to what the run needs before building
    /// (candle's quantized Qwen2 / Qwen3 build their tables from it).
    FromMetadata,
    /// What the run asks, at least [`MIN_BUILT_CONTEXT`], at most the file's context (the
    /// project's own implementations).
    Asked,
}

/// The least context the project's own implementations are built for, whatever the cap (the
/// rate probe of the harness runs 24 positions).
pub const MIN_BUILT_CONTEXT: usize = 64;

/// One implementation of a family.
pub struct Implementation {
    pub imp: GgufImpl,
    /// Which code computes the model, one line (records; part of the quality verdict's key,
    /// so it must not change with the run's context).
    pub label: fn(&Content) -> String,
    pub positions: Positions,
    /// Why it cannot run this file as the file describes it (None: it can).
    pub refuses: fn(arch: &str, ct: &Content) -> Option<String>,
    /// Positions up to which its outputs are exact (None: every built position).
    pub exact_context: fn(&Content) -> Option<usize>,
    /// A multi-token forward after position 0 must go one token at a time (a candle bug).
    pub one_token_after_start: bool,
    pub build: fn(Build<'_>) -> candle_core::Result<Box<dyn GgufModel>>,
}

/// One GGUF family: everything the suite knows of it, in the family's own file.
pub struct GgufFamily {
    /// `general.architecture`, and the prefix of its metadata keys.
    pub arch: &'static str,
    pub family: Family,
    /// What a file of the family must hold (keys and their types, tensors and shapes), as
    /// llama.cpp loads it: the GGUF validation's entry ([`crate::models::families::check`]).
    pub spec: ArchSpec,
    /// What the project's generic decoder reads to run it ([`Layout`]); None where the family
    /// has a decoder of its own (Gemma 3).
    pub layout: Option<Layout>,
    /// In order of preference (see the module documentation).
    pub implementations: &'static [Implementation],
    /// Its quantized fixtures (`gguf:fixture:<name>`), made by the project's GGUF writer.
    pub fixtures: &'static [GgufFixture],
}

/// Every GGUF family the suite runs.
pub static GGUF_FAMILIES: &[&GgufFamily] = &[
    &llama::FAMILY,
    &qwen2::FAMILY,
    &qwen3::FAMILY,
    &gemma3::FAMILY,
    &qwen3moe::FAMILY,
    &glm4::FAMILY,
    &phi3::FAMILY,
    &phi2::FAMILY,
    &lfm2::FAMILY,
    &starcoder2::FAMILY,
];

/// The entry of a `general.architecture`.
pub fn by_arch(arch: &str) -> Option<&'static GgufFamily> {
    GGUF_FAMILIES.iter().copied().find(|f| f.arch == arch)
}

/// The entry of a family.
pub fn of(family: Family) -> Option<&'static GgufFamily> {
    GGUF_FAMILIES.iter().copied().find(|f| f.family == family)
}

/// The fixture `gguf:fixture:<name>`.
pub fn fixture(name: &str) -> Option<&'static GgufFixture> {
    GGUF_FAMILIES
        .iter()
        .flat_map(|f| f.fixtures.iter())
        .find(|x| x.name == name)
}

/// Every fixture's name, for messages: "llama, llama3, qwen2, qwen3, gemma3, phi3, phi2, lfm2".
pub fn fixture_names() -> String {
    GGUF_FAMILIES
        .iter()
        .flat_map(|f| f.fixtures.iter().map(|x| x.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The architectures the generic decoder runs (a [`GgufFamily::layout`]), for messages.
pub fn layout_archs() -> String {
    GGUF_FAMILIES
        .iter()
        .filter(|f| f.layout.is_some())
        .map(|f| f.arch)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The architectures, for messages: "llama, qwen2, qwen3, gemma3".
pub fn archs() -> String {
    GGUF_FAMILIES
        .iter()
        .map(|f| f.arch)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The family of a file's `general.architecture` as the generic decoder receives it
/// ([`GgufFamily::decoder`]), or why there is none.
pub fn decoder_of(ct: &Content) -> std::result::Result<FamilyLayout, String> {
    let arch = md_str(ct, "general.architecture").unwrap_or_default();
    by_arch(&arch).and_then(GgufFamily::decoder).ok_or_else(|| {
        format!(
            "GGUF architecture `{arch}` is not one the project's generic decoder runs ({})",
            layout_archs()
        )
    })
}

impl GgufFamily {
    /// The family as the generic decoder reads it: its layout, and its spec's epsilon key and
    /// rotary rule (None without a layout).
    pub fn decoder(&self) -> Option<FamilyLayout> {
        self.layout.map(|layout| FamilyLayout {
            arch: self.arch,
            layout,
            eps_key: self.spec.eps,
            partial_rotary: self.spec.rot == Rot::AtMostHead,
        })
    }

    /// The implementation `imp` of this family.
    pub fn implementation(&self, imp: GgufImpl) -> Option<&'static Implementation> {
        self.implementations.iter().find(|i| i.imp == imp)
    }
    /// The implementation a file runs on when `?impl=` names none: the first that does not
    /// refuse it (the first of all when every one refuses: its refusal is the error).
    pub fn default_for(&self, ct: &Content) -> &'static Implementation {
        self.implementations
            .iter()
            .find(|i| (i.refuses)(self.arch, ct).is_none())
            .unwrap_or(&self.implementations[0])
    }
    /// The implementations' names, for messages.
    pub fn implementation_names(&self) -> String {
        self.implementations
            .iter()
            .map(|i| i.imp.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A metadata string.
pub fn md_str(ct: &Content, key: &str) -> Option<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

/// A metadata float (any numeric type).
pub fn md_f32(ct: &Content, key: &str) -> Option<f32> {
    ct.metadata.get(key).and_then(|v| match v {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        other => other.to_u32().ok().map(|x| x as f32),
    })
}

/// RoPE scaling the metadata asks for (`<arch>.rope.scaling.type` / `.factor`), as
/// `(type, factor)`, or None when it asks for none.
pub fn rope_scaling(arch: &str, ct: &Content) -> Option<(String, Option<f32>)> {
    let kind = md_str(ct, &format!("{arch}.rope.scaling.type"));
    let factor = md_f32(ct, &format!("{arch}.rope.scaling.factor"));
    let scaled = match kind.as_deref() {
        None | Some("none") | Some("") => factor.is_some_and(|f| f != 0.0 && f != 1.0),
        Some(_) => factor.is_none_or(|f| f != 1.0),
    };
    scaled.then(|| (kind.unwrap_or_else(|| "linear".into()), factor))
}

/// The refusal of an implementation that applies no RoPE scaling and no `rope_freqs.weight`
/// (candle-transformers 0.11.1's quantized Llama, Qwen2, Qwen3, Gemma3): such a file would run
/// with the wrong positions.
pub fn refuses_any_rope_scaling(runs: &str, arch: &str, ct: &Content) -> Option<String> {
    if let Some((kind, factor)) = rope_scaling(arch, ct) {
        return Some(format!(
            "RoPE scaling `{kind}` (factor {}, `{arch}.rope.scaling.*`) is not implemented by {runs}, which would run it unscaled",
            factor.map(|f| f.to_string()).unwrap_or_else(|| "unset".into()),
        ));
    }
    if ct.tensor_infos.contains_key("rope_freqs.weight") {
        return Some(format!(
            "the file has `rope_freqs.weight` (per-dimension RoPE frequency factors, Llama 3.1-style scaling), which {runs} ignores"
        ));
    }
    None
}

/// Whether `?impl=` may name `imp` for some family (the parse of references checks names
/// only; the family's entry decides when the file is read).
pub fn any_has(imp: GgufImpl) -> bool {
    GGUF_FAMILIES
        .iter()
        .any(|f| f.implementation(imp).is_some())
}

#[cfg(test)]
mod tests {
    use super::spec::D;
    use super::*;
    use crate::models::quantized::llama::layout::{Biases, ExpertsRule, MlpKind, NormKind};

    /// Whether the family's spec expects (or accepts) a tensor named `name` (`{}` for the
    /// block number), by its table or its fused/separate q/k/v projections with their biases.
    fn spec_has(f: &GgufFamily, name: &str) -> bool {
        let qkv = ["attn_q", "attn_k", "attn_v", "attn_qkv"].iter().any(|p| {
            name == format!("blk.{{}}.{p}.bias") || name == format!("blk.{{}}.{p}.weight")
        });
        (qkv && f.spec.qkv.is_some())
            || f.spec.tensors.iter().any(|t| t.name == name)
            || super::spec::HEAD.iter().any(|t| t.name == name)
    }

    /// Every family has every part: its spec is its own, it has an implementation and a
    /// fixture, and its layout (where the generic decoder runs it) agrees with the spec on
    /// every tensor the decoder reads: the two tables state different facts (what llama.cpp
    /// accepts, what the decoder runs) and a disagreement between them fails here.
    #[test]
    fn every_family_record_is_whole_and_its_layout_agrees_with_its_spec() {
        for f in GGUF_FAMILIES {
            let a = f.arch;
            assert_eq!(f.spec.arch, a, "{a}: the spec of another architecture");
            assert!(!f.implementations.is_empty(), "{a}: no implementation");
            assert!(!f.fixtures.is_empty(), "{a}: no fixture");
            assert!(
                f.fixtures.iter().all(|x| x.family == f.family),
                "{a}: a fixture of another family"
            );
            assert!(
                f.implementation(GgufImpl::Modelbench).is_some(),
                "{a}: no project implementation"
            );
            let Some(l) = f.layout else { continue };
            let need = |name: &str, why: &str| {
                assert!(
                    spec_has(f, name),
                    "{a}: the layout reads {name} ({why}), the spec lacks it"
                )
            };
            need(&format!("{}.weight", l.final_norm), "final_norm");
            need("blk.{}.attn_norm.weight", "every block's norm");
            if l.qk_norm {
                need("blk.{}.attn_q_norm.weight", "qk_norm");
                need("blk.{}.attn_k_norm.weight", "qk_norm");
            }
            if l.post_norms {
                need("blk.{}.post_attention_norm.weight", "post_norms");
                need("blk.{}.post_ffw_norm.weight", "post_norms");
            }
            if !l.parallel {
                need("blk.{}.ffn_norm.weight", "a block's second norm");
            }
            if l.norm == NormKind::LayerWithBias {
                need("blk.{}.attn_norm.bias", "LayerNorm");
                need(&format!("{}.bias", l.final_norm), "LayerNorm");
            }
            if l.biases == Biases::Every {
                for n in [
                    "blk.{}.attn_output.bias",
                    "blk.{}.ffn_up.bias",
                    "blk.{}.ffn_down.bias",
                ] {
                    need(n, "biases Every");
                }
            }
            if l.output_bias {
                need("output.bias", "output_bias");
            }
            if l.norm == NormKind::LayerWithBias && !l.parallel {
                need("blk.{}.ffn_norm.bias", "LayerNorm");
            }
            if l.short_conv {
                need("blk.{}.shortconv.conv.weight", "short_conv");
            }
            if l.mlp == MlpKind::Gelu {
                assert!(
                    !spec_has(f, "blk.{}.ffn_gate.weight"),
                    "{a}: a GELU MLP with a gate in the spec"
                );
            }
            let fused = f
                .spec
                .tensors
                .iter()
                .any(|t| t.name == "blk.{}.ffn_up.weight" && t.shape.contains(&D::Ff2));
            assert_eq!(
                l.fused_gate_up, fused,
                "{a}: fused_gate_up disagrees with the spec's ffn_up shape"
            );
            let experts_key = f.spec.keys.iter().find(|k| k.key == "expert_count");
            let moe_tensors = spec_has(f, "blk.{}.ffn_gate_inp.weight");
            match l.experts {
                ExpertsRule::Never => {
                    assert!(!moe_tensors, "{a}: experts Never, router in the spec")
                }
                ExpertsRule::Optional => {
                    assert!(moe_tensors, "{a}: experts Optional, no router in the spec")
                }
                ExpertsRule::Required => assert!(
                    moe_tensors && experts_key.is_some_and(|k| k.required),
                    "{a}: experts Required, the spec does not require expert_count"
                ),
            }
            // A bias the decoder reads is one llama.cpp accepts, and not one the spec refuses.
            for t in f
                .spec
                .tensors
                .iter()
                .map(|t| t.name)
                .chain(["blk.{}.attn_q.bias"])
            {
                let n = t.replace("{}", "0");
                if n.ends_with(".bias") && l.reads_bias(&n) {
                    assert!(spec_has(f, t), "{a}: reads {t}, the spec lacks it");
                    let suffix = t.trim_start_matches("blk.{}.");
                    assert!(
                        !f.spec.not_run.contains(&suffix),
                        "{a}: reads {t}, the spec refuses it"
                    );
                }
            }
        }
    }

    /// Which bias tensors each family's files may carry (any other is refused at load), as
    /// the family records state them.
    #[test]
    fn each_family_reads_only_its_biases() {
        use crate::models::quantized::llama::layout::{Biases, Layout};
        let layout = |arch: &str| -> Layout {
            by_arch(arch)
                .and_then(|f| f.layout)
                .unwrap_or_else(|| panic!("{arch} has no layout"))
        };
        let qwen2 = layout("qwen2");
        assert_eq!(qwen2.biases, Biases::Qkv { required: true });
        assert!(qwen2.reads_bias("blk.3.attn_q.bias") && qwen2.reads_bias("blk.0.attn_v.bias"));
        assert!(!qwen2.reads_bias("blk.0.attn_output.bias") && !qwen2.reads_bias("output.bias"));
        assert!(layout("glm4").reads_bias("blk.1.attn_qkv.bias"));
        let phi2 = layout("phi2");
        for n in [
            "blk.0.attn_qkv.bias",
            "blk.0.attn_output.bias",
            "blk.0.ffn_up.bias",
            "blk.0.ffn_down.bias",
            "blk.0.attn_norm.bias",
            "output_norm.bias",
            "output.bias",
        ] {
            assert!(phi2.reads_bias(n), "{n}");
        }
        // Phi-2's blocks have one norm (attention and MLP in parallel) and no gate.
        assert!(!phi2.reads_bias("blk.0.ffn_norm.bias") && !phi2.reads_bias("blk.0.ffn_gate.bias"));
        for a in ["llama", "qwen3", "qwen3moe", "phi3", "lfm2"] {
            let l = layout(a);
            for n in [
                "blk.0.attn_q.bias",
                "blk.0.attn_norm.bias",
                "output.bias",
                "output_norm.bias",
            ] {
                assert!(!l.reads_bias(n), "{a}: {n}");
            }
        }
    }
}
