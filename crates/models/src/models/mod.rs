//! "A causal LM under benchmark": one small trait over candle-transformers' Llama, Qwen3,
//! Qwen3-MoE and Gemma3, their config.json handling (with the known candle quirks routed
//! around), and loading from safetensors or from seeded in-memory weights.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::one_line;
/// The model layer's error and result (crate::error), here beside the traits that return them.
pub use crate::error::{Error, Result};
use crate::util::fill::Filler;

mod arch;
pub mod attention;
pub mod batched;
pub mod families;
pub mod gguf;
pub use modelbench_kernels::host_ops;
pub mod moe;
pub use modelbench_kernels::q8_matmul;
pub mod quantized;
pub mod sources;
pub mod tokenizers;
pub mod training;
pub use arch::Arch;

/// A model under benchmark: a KV cache that can be reset, and a forward that returns the
/// logits of the last position.
pub trait CausalLm: Send {
    /// Empties the KV cache (untimed in every benchmark).
    fn reset(&mut self) -> Result<()>;
    /// Runs `tokens` at positions `pos..pos+len` and returns the last position's logits as a
    /// rank-1 tensor of `vocab` entries on the model's device, in any float dtype.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor>;
    fn meta(&self) -> &ModelMeta;
    fn device(&self) -> &Device;
    /// Positions the KV cache holds (where the next forward continues).
    fn depth(&self) -> usize {
        0
    }
    /// A copy of the KV cache as it is now, to [`restore`](CausalLm::restore) later (the
    /// depth workload fills a cache once per depth and restores it between repetitions).
    fn snapshot(&mut self) -> Result<KvState> {
        Err(Error::Model(format!(
            "{}: KV snapshot not implemented for this model",
            self.meta().provenance.implementation
        )))
    }
    /// Puts back the KV cache of `s`; the next forward continues at `s.depth()` exactly as
    /// after a fresh fill. Returns how it was restored.
    fn restore(&mut self, s: &KvState) -> Result<Restored> {
        let _ = s;
        Err(Error::Model(format!(
            "{}: KV restore not implemented for this model",
            self.meta().provenance.implementation
        )))
    }
    /// The batched form of this model for `modelbench serve --max-batch` (weights shared, not
    /// copied): any family whose implementation has one ([`batched::BatchedLm`]); None for a
    /// model that serves one sequence at a time. With `o.fast_weights` the weights move into
    /// the batched form, so those it re-encodes are freed as they are replaced (never held
    /// twice): this model is then left without weights (its forward fails; drop it).
    fn batched(
        &mut self,
        o: &batched::BatchOptions,
    ) -> Option<Result<Box<dyn batched::StepModel>>> {
        let _ = o;
        None
    }
    /// The project's own weights behind this model (a clone sharing the tensors, e.g. a
    /// [`quantized::gemma3::ModelWeights`]), for tests that drive an implementation directly;
    /// None for other models. See [`own_weights`].
    fn own_weights(&self) -> Option<Box<dyn std::any::Any + Send>> {
        None
    }
    /// From now on computes GELU as llama.cpp's CPU backend does ([`quantized::parts::Gelu`]:
    /// ggml's f16 table), for a like-for-like judgement against llama.cpp at full precision
    /// (`verify --full-precision`); returns whether it did: false for a model without GELU or
    /// whose implementation cannot (candle-transformers' models). Never set in a benchmark.
    fn match_ggml_gelu(&mut self) -> bool {
        false
    }
    /// From now on computes the attention softmax with candle's CPU kernel instead of the
    /// row-order sum the project's models use (whose bits do not depend on where a prefill
    /// chunk ended), for a like-for-like comparison with candle-transformers' models
    /// (tests/llama_batching.rs); returns whether it did. Never set in a benchmark or server.
    fn match_candle_arithmetic(&mut self) -> bool {
        false
    }
}

/// The project's own weights of type `T` behind `m` (see [`CausalLm::own_weights`]).
pub fn own_weights<T: 'static>(m: &dyn CausalLm) -> Option<T> {
    m.own_weights()?.downcast::<T>().ok().map(|b| *b)
}

/// How a KV state came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Restored {
    /// The saved cache tensors were put back (nothing recomputed).
    Copy,
    /// The cache was refilled by replaying the forwards that built it (candle-transformers'
    /// Gemma3 past its sliding window: its RotatingKvCache is written in place and its fields
    /// are private, so a saved copy shares storage the ring has since overwritten).
    Recompute,
}

impl Restored {
    pub fn name(self) -> &'static str {
        match self {
            Restored::Copy => "copy",
            Restored::Recompute => "recompute",
        }
    }
}

/// A saved KV cache of one model (opaque: each implementation keeps what it needs).
pub struct KvState {
    depth: usize,
    inner: Box<dyn std::any::Any + Send>,
}

impl KvState {
    pub fn new<T: std::any::Any + Send>(depth: usize, inner: T) -> KvState {
        KvState {
            depth,
            inner: Box::new(inner),
        }
    }
    /// Positions the saved cache holds.
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// The saved state as the type its model stored (an error for another model's state).
    pub fn get<T: 'static>(&self) -> Result<&T> {
        self.inner.downcast_ref::<T>().ok_or_else(|| {
            Error::Model("KV state restored into a different model than it was taken from".into())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Llama,
    /// GGUF only (`qwen2` files: Qwen2 / Qwen2.5).
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Gemma3,
    /// GGUF only (`glm4` files: GLM-4-0414).
    Glm4,
    /// GGUF only (`phi3` files: Phi-3 / Phi-3.5 mini; fused QKV and gate+up).
    Phi3,
    /// GGUF only (`phi2` files: Phi-2; LayerNorm, parallel attention and MLP, partial RoPE).
    Phi2,
    /// GGUF only (`lfm2` files: LiquidAI LFM2; short-convolution blocks among attention ones).
    Lfm2,
    /// GGUF only (`starcoder2` files: StarCoder2; LayerNorms and biases, a GELU MLP).
    Starcoder2,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Llama,
        Family::Qwen2,
        Family::Qwen3,
        Family::Qwen3Moe,
        Family::Gemma3,
        Family::Glm4,
        Family::Phi3,
        Family::Phi2,
        Family::Lfm2,
        Family::Starcoder2,
    ];
    pub const ALLOWED: &'static str =
        "llama, qwen2, qwen3, qwen3-moe, gemma3, glm4, phi3, phi2, lfm2, starcoder2";

    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Qwen3Moe => "qwen3-moe",
            Family::Gemma3 => "gemma3",
            Family::Glm4 => "glm4",
            Family::Phi3 => "phi3",
            Family::Phi2 => "phi2",
            Family::Lfm2 => "lfm2",
            Family::Starcoder2 => "starcoder2",
        }
    }

    /// The family of a config.json, from its `model_type`.
    pub fn from_model_type(t: &str) -> Option<Family> {
        match t {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "qwen3" => Some(Family::Qwen3),
            "qwen3_moe" => Some(Family::Qwen3Moe),
            "gemma3" | "gemma3_text" => Some(Family::Gemma3),
            "glm4" => Some(Family::Glm4),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown family `{s}` (expected one of {})", Family::ALLOWED))
    }
}

/// What a record needs to know about a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    pub family: Family,
    pub params: u64,
    /// Bytes of the weights as loaded (parameters x dtype size).
    pub weight_bytes: u64,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub dtype: String,
    /// max_position_embeddings of the config.
    pub max_context: usize,
    /// Positions the RoPE tables and caches were built for (capped to what the plan needs).
    pub built_context: usize,
    /// `single-call`, or `token-by-token` where a candle bug forbids batched prefill.
    pub prefill: String,
    /// (experts, active per token) for MoE models.
    pub experts: Option<(usize, usize)>,
    /// Parameters of the projection weights (everything a token multiplies by, except the
    /// embedding table and LM head; a GGUF file's stacked experts included), from the
    /// checkpoint layout.
    #[serde(default)]
    pub matmul_params: u64,
    /// Of those, the parameters inside MoE experts.
    #[serde(default)]
    pub expert_params: u64,
    #[serde(default)]
    pub tied_embeddings: bool,
    /// Weight bytes read per decode token when known exactly (quantized files).
    #[serde(default)]
    pub decode_weight_bytes: Option<f64>,
    /// What computes it and how far its outputs are exact (the record's `ModelInfo` carries
    /// the same, flattened, as its last fields).
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// What computes a model and how faithfully: a model's [`ModelMeta`] and each record's model
/// (`output::record::ModelInfo`) carry it, flattened into their last fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Positions up to which the model computes exactly what it should (None: every built
    /// position, as the project's own quantized Gemma 3). candle 0.11's quantized Gemma3
    /// (`gguf:...?impl=candle-transformers`) decodes without a mask and an unbounded cache,
    /// so its sliding-window layers see the whole history past the window (measured:
    /// perplexity 8 at 512 positions, 47 at 1024). Timings past it still measure the work done; the outputs are degraded.
    #[serde(default)]
    pub exact_context: Option<usize>,
    /// Which code computes the model (e.g. `candle-transformers 0.11.1 llama`), and why where
    /// it is not candle-transformers' model of the family. Empty only in records written
    /// before this field was filled for config.json models.
    #[serde(default)]
    pub implementation: String,
    /// The attention backend it runs (`eager`, `flash`, `chunked:N`; see [`attention`]);
    /// empty in records written before it was recorded.
    #[serde(default)]
    pub attention: String,
    /// GGUF files: where the precision label came from (`general.file_type`, or the most
    /// common type of the 2-D weights where that is missing) and a histogram of the tensor
    /// types (type -> count and bytes). None for other weights and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<sources::gguf::GgufWeights>,
}

/// Where weights come from.
#[derive(Debug, Clone)]
pub enum Weights {
    /// One or more safetensors files (shards).
    Safetensors(Vec<PathBuf>),
    /// Seeded values filled in memory (synthetic shapes).
    Seeded(u64),
    /// A GGUF file (quantized models; the config is in its metadata).
    Gguf(PathBuf),
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    /// Build RoPE tables / caches for at most this many positions (None: the config's).
    pub context_cap: Option<usize>,
}

/// Loads a model: parses the config, checks the weights against what the config expects
/// (names and shapes, so a missing or mismatched tensor is an error, never a panic inside
/// candle), and builds the model on the device.
/// A GGUF file is built from the header its resolved source carries (`gguf`; read again only
/// without one).
pub fn load(
    family: Family,
    config: &serde_json::Value,
    config_path: &str,
    weights: &Weights,
    gguf: Option<&sources::gguf::GgufSource>,
    opts: &LoadOptions,
) -> Result<Box<dyn CausalLm>> {
    if let Weights::Gguf(path) = weights {
        let (dev, cap) = (&opts.device, opts.context_cap);
        return match gguf {
            Some(g) => {
                let ct = gguf::read::copy_content(&g.header);
                sources::gguf::load_header(path, ct, g.imp, dev, cap)
            }
            None => sources::gguf::load_with(path, None, dev, cap),
        };
    }
    let (arch, expected, meta) =
        describe_full(family, config, config_path, opts.dtype, opts.context_cap)?;
    let vb = match weights {
        Weights::Seeded(seed) => VarBuilder::from_backend(
            Box::new(Filler::seeded(*seed)),
            opts.dtype,
            opts.device.clone(),
        ),
        Weights::Safetensors(paths) => {
            let st = open_safetensors(paths)?;
            check_tensors(&st, &expected, paths)?;
            gguf::check::check_safetensors(
                config_path,
                config,
                &st,
                &expected,
                &describe_paths(paths),
            )?;
            VarBuilder::from_backend(Box::new(st), opts.dtype, opts.device.clone())
        }
        Weights::Gguf(_) => unreachable!("handled above"),
    };
    arch.build(vb, meta).map_err(|e| Error::Config {
        path: config_path.to_string(),
        family: family.to_string(),
        reason: one_line(&e.to_string()),
    })
}

/// What a model is, from its config alone (no weights read): parameters, projection
/// parameters, shapes and context.
pub fn describe(
    family: Family,
    config: &serde_json::Value,
    config_path: &str,
    dtype: DType,
    context_cap: Option<usize>,
) -> Result<ModelMeta> {
    describe_full(family, config, config_path, dtype, context_cap).map(|(_, _, m)| m)
}

type Described = (Arch, BTreeMap<String, Vec<usize>>, ModelMeta);

fn describe_full(
    family: Family,
    config: &serde_json::Value,
    config_path: &str,
    dtype: DType,
    context_cap: Option<usize>,
) -> Result<Described> {
    let mut arch = Arch::from_json(family, config, config_path)?;
    let max_context = arch.max_context();
    if let Some(cap) = context_cap {
        arch.cap_context(cap);
    }
    let expected = expected_tensors(&arch)?;
    let params: u64 = expected
        .values()
        .map(|s| s.iter().product::<usize>() as u64)
        .sum();
    let mut meta = arch.meta(params, dtype);
    meta.max_context = max_context;
    let is_proj = |n: &str, s: &Vec<usize>| {
        s.len() == 2 && !n.contains("embed_tokens") && !n.starts_with("lm_head")
    };
    meta.matmul_params = expected
        .iter()
        .filter(|(n, s)| is_proj(n, s))
        .map(|(_, s)| (s[0] * s[1]) as u64)
        .sum();
    meta.expert_params = expected
        .iter()
        .filter(|(n, s)| is_proj(n, s) && n.contains(".experts."))
        .map(|(_, s)| (s[0] * s[1]) as u64)
        .sum();
    Ok((arch, expected, meta))
}

/// Names and shapes of every tensor the model of `arch` reads, learned by building it once
/// over lazily-zeroed CPU tensors (no memory is touched).
pub fn expected_tensors(arch: &Arch) -> Result<BTreeMap<String, Vec<usize>>> {
    let probe = Filler::shapes_only();
    let vb = VarBuilder::from_backend(Box::new(probe.clone()), DType::F32, Device::Cpu);
    arch.build(vb, arch.meta(0, DType::F32))
        .map_err(|e| Error::Config {
            path: "config.json".into(),
            family: arch.family().to_string(),
            reason: one_line(&e.to_string()),
        })?;
    let mut shapes = probe.shapes();
    // candle-transformers' qwen2 reads `lm_head.weight` whenever the checkpoint has one (the
    // probe has every name) and ties it otherwise, whatever config.json says: a tied model
    // does not read it.
    if let Arch::Qwen2(c) = arch {
        if c.tie_word_embeddings {
            shapes.remove("lm_head.weight");
        }
    }
    Ok(shapes)
}

fn describe_paths(paths: &[PathBuf]) -> String {
    match paths {
        [one] => one.display().to_string(),
        [first, ..] => format!("{} (+{} more shards)", first.display(), paths.len() - 1),
        [] => "(no weight files)".into(),
    }
}

fn open_safetensors(paths: &[PathBuf]) -> Result<candle_core::safetensors::MmapedSafetensors> {
    if paths.is_empty() {
        return Err(Error::weights("model", "no *.safetensors files"));
    }
    for p in paths {
        if !p.is_file() {
            return Err(Error::weights(p.display(), "weight file is missing"));
        }
    }
    // SAFETY: the files are mapped read-only and not modified while the benchmark runs.
    unsafe { candle_core::safetensors::MmapedSafetensors::multi(paths) }.map_err(|e| {
        Error::weights(
            describe_paths(paths),
            format!(
                "not a readable safetensors file ({}); it is truncated or corrupt: fetch it again",
                one_line(&e.to_string())
            ),
        )
    })
}

fn check_tensors(
    st: &candle_core::safetensors::MmapedSafetensors,
    expected: &BTreeMap<String, Vec<usize>>,
    paths: &[PathBuf],
) -> Result<()> {
    for (name, shape) in expected {
        match st.get(name) {
            Ok(view) if view.shape() == shape.as_slice() => {}
            Ok(view) => {
                return Err(Error::weights(
                    describe_paths(paths),
                    format!(
                        "tensor `{name}` has shape {:?} but config.json implies {shape:?}: the weights and config.json are from different models",
                        view.shape()
                    ),
                ))
            }
            Err(_) => {
                return Err(Error::weights(
                    describe_paths(paths),
                    format!("lacks tensor `{name}` that config.json implies: the checkpoint is incomplete or for another model"),
                ))
            }
        }
    }
    Ok(())
}
