//! GGUF models: candle-transformers' quantized Llama and Qwen3 (the default; the project's own
//! [`super::llama_quantized`], which batches, with `gguf:<file or repo>?impl=modelbench`), and
//! Gemma 3 through the project's own [`super::gemma3_quantized`] (candle-transformers'
//! `quantized_gemma3` stays selectable with `?impl=candle-transformers`).

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_gemma3, quantized_llama, quantized_qwen3};

use super::{gemma3_quantized, llama_quantized, CausalLm, Family, ModelMeta, Provenance};
use crate::error::{one_line, Error, Result};

/// Which code runs a GGUF model (`gguf:...?impl=<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufImpl {
    /// The project's own model: [`gemma3_quantized`] for Gemma 3, [`llama_quantized`] for
    /// Llama and Qwen3.
    Modelbench,
    /// candle-transformers 0.11.1's quantized model of the family.
    CandleTransformers,
}

impl GgufImpl {
    pub const ALLOWED: &'static str = "modelbench, candle-transformers";
    /// The key under which a resolved GGUF reference carries its choice in
    /// [`super::source::Resolved::config`].
    pub const CONFIG_KEY: &'static str = "gguf_impl";

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

    /// The default of a family: the project's own Gemma 3, candle-transformers' otherwise
    /// (Llama and Qwen3 records keep naming the implementation they were measured with;
    /// `modelbench serve --max-batch` above 1 picks the project's own, which batches).
    pub fn default_for(family: Family) -> GgufImpl {
        match family {
            Family::Gemma3 => GgufImpl::Modelbench,
            _ => GgufImpl::CandleTransformers,
        }
    }

    /// Whether this implementation exists for `family`.
    pub fn supports(self, family: Family) -> bool {
        self == GgufImpl::CandleTransformers
            || matches!(family, Family::Gemma3 | Family::Llama | Family::Qwen3)
    }

    /// The choice a resolved GGUF reference carries in its config (`None`: the default).
    pub fn from_config(config: &serde_json::Value) -> Option<GgufImpl> {
        config
            .get(GgufImpl::CONFIG_KEY)
            .and_then(|v| v.as_str())
            .and_then(|s| GgufImpl::parse(s).ok())
    }
}

/// The least context the project's Gemma 3 is built for, whatever the cap (the rate probe of
/// the harness runs 24 positions; tables are 1 KiB per position).
const MIN_BUILT_CONTEXT: usize = 64;

fn gguf_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::weights(path.display(), reason)
}

/// Reads the header (metadata and tensor table) of a GGUF file: the bounded scan of
/// [`super::gguf_check`] (counts, lengths, dimensions, offsets and alignment against the file's
/// size, llama.cpp's layout rules), then candle's reader.
pub fn read_header(path: &Path) -> Result<Content> {
    super::gguf_check::read_checked(path).map(|(_, ct)| ct)
}

/// The tensor types candle 0.11.1 reads and runs (quantized matmuls on CPU and CUDA).
pub const CANDLE_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// ggml's name of a tensor type id (ggml/include/ggml.h, `enum ggml_type`).
pub fn ggml_type_name(t: u32) -> String {
    const NAMES: [(u32, &str); 36] = [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (8, "Q8_0"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (30, "BF16"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
        (40, "NVFP4"),
        (41, "Q1_0"),
        (42, "Q2_0"),
        (31, "Q4_0_4_4 (removed from GGUF)"),
    ];
    NAMES
        .iter()
        .find(|(i, _)| *i == t)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("unknown ({t})"))
}

/// ggml's name of one of candle's tensor types (`Q4_K`, not candle's `Q4K`).
pub fn dtype_name(d: candle_core::quantized::GgmlDType) -> &'static str {
    use candle_core::quantized::GgmlDType as G;
    match d {
        G::F32 => "F32",
        G::F16 => "F16",
        G::BF16 => "BF16",
        G::Q4_0 => "Q4_0",
        G::Q4_1 => "Q4_1",
        G::Q5_0 => "Q5_0",
        G::Q5_1 => "Q5_1",
        G::Q8_0 => "Q8_0",
        G::Q8_1 => "Q8_1",
        G::Q2K => "Q2_K",
        G::Q3K => "Q3_K",
        G::Q4K => "Q4_K",
        G::Q5K => "Q5_K",
        G::Q6K => "Q6_K",
        G::Q8K => "Q8_K",
    }
}

/// llama.cpp's name of a `general.file_type` (include/llama.h, `enum llama_ftype`, and
/// `llama_model_ftype_name`), as the precision label spells it (`q4_k_m`).
pub fn file_type_label(ftype: u32) -> Option<&'static str> {
    Some(match ftype {
        0 => "f32",
        1 => "f16",
        2 => "q4_0",
        3 => "q4_1",
        7 => "q8_0",
        8 => "q5_0",
        9 => "q5_1",
        10 => "q2_k",
        11 => "q3_k_s",
        12 => "q3_k_m",
        13 => "q3_k_l",
        14 => "q4_k_s",
        15 => "q4_k_m",
        16 => "q5_k_s",
        17 => "q5_k_m",
        18 => "q6_k",
        19 => "iq2_xxs",
        20 => "iq2_xs",
        21 => "q2_k_s",
        22 => "iq3_xs",
        23 => "iq3_xxs",
        24 => "iq1_s",
        25 => "iq4_nl",
        26 => "iq3_s",
        27 => "iq3_m",
        28 => "iq2_s",
        29 => "iq2_m",
        30 => "iq4_xs",
        31 => "iq1_m",
        32 => "bf16",
        36 => "tq1_0",
        37 => "tq2_0",
        38 => "mxfp4_moe",
        39 => "nvfp4",
        40 => "q1_0",
        41 => "q2_0",
        _ => return None,
    })
}

/// Count and bytes of one tensor type in a GGUF file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TypeCount {
    pub count: usize,
    pub bytes: u64,
}

/// What a GGUF file's weights are: the precision label and where it came from, and every
/// tensor type with its count and bytes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GgufWeights {
    /// The label after `gguf-` (`q4_k_m`, `q8_0`).
    pub label: String,
    /// `general.file_type` when the file has it (llama.cpp's `llama_ftype`).
    pub file_type: Option<u32>,
    /// Where the label came from: `general.file_type = 15`, or, without it, the most common
    /// type of the 2-D weight tensors.
    pub label_source: String,
    /// ggml type name (`Q4_K`) -> count and bytes of its tensors.
    pub tensor_types: std::collections::BTreeMap<String, TypeCount>,
}

/// The precision label and tensor-type histogram of a GGUF file: the label from
/// `general.file_type`; without it (or with a value llama.cpp does not name), the most common
/// type among the 2-D weight tensors, and `label_source` says so.
pub fn weights_info(ct: &Content) -> GgufWeights {
    let mut types: std::collections::BTreeMap<String, TypeCount> = Default::default();
    let mut two_d: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for info in ct.tensor_infos.values() {
        let n = info.shape.elem_count();
        let name = dtype_name(info.ggml_dtype);
        let e = types.entry(name.to_string()).or_default();
        e.count += 1;
        e.bytes += (n / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        if info.shape.rank() == 2 {
            *two_d.entry(name).or_default() += 1;
        }
    }
    let file_type = md_u(ct, "general.file_type").map(|x| x as u32);
    let named = file_type.and_then(|t| file_type_label(t).map(|l| (t, l)));
    let (label, label_source) = match named {
        Some((t, l)) => (l.to_string(), format!("general.file_type = {t}")),
        None => {
            // Most tensors first, then the name, so the choice is deterministic.
            let top = two_d
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(n, c)| (n.to_lowercase(), *c));
            let why = match file_type {
                Some(t) => format!("general.file_type = {t} is not a type llama.cpp names"),
                None => "no general.file_type".to_string(),
            };
            match top {
                Some((n, c)) => (
                    n.clone(),
                    format!(
                        "{why}: the most common type of the 2-D weight tensors ({c} of {} are {n})",
                        two_d.values().sum::<usize>()
                    ),
                ),
                None => ("unknown".into(), format!("{why} and no 2-D weight tensors")),
            }
        }
    };
    GgufWeights {
        label,
        file_type,
        label_source,
        tensor_types: types,
    }
}

/// The family of a GGUF file, from `general.architecture`.
pub fn family(path: &Path, ct: &Content) -> Result<Family> {
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    match arch.as_str() {
        "llama" => Ok(Family::Llama),
        "qwen3" => Ok(Family::Qwen3),
        "gemma3" => Ok(Family::Gemma3),
        other => Err(gguf_err(
            path,
            format!("GGUF architecture `{other}` is not supported (llama, qwen3, gemma3)"),
        )),
    }
}

fn md_u(ct: &Content, key: &str) -> Option<usize> {
    ct.metadata.get(key).and_then(|v| {
        v.to_u32()
            .ok()
            .map(|x| x as usize)
            .or_else(|| v.to_u64().ok().map(|x| x as usize))
    })
}

/// Refuses RoPE scaling the implementation would silently ignore: candle-transformers 0.11.1's
/// quantized Llama, Qwen3 and Gemma3 read no `<arch>.rope.scaling.*` key and no
/// `rope_freqs.weight` (Llama 3.1-style frequency factors), so such a file would run with the
/// wrong positions. The project's own Gemma 3 implements linear scaling and refuses the rest
/// itself (see [`gemma3_quantized`]).
pub fn check_rope(path: &Path, ct: &Content, family: Family, imp: GgufImpl) -> Result<()> {
    let a = match family {
        Family::Gemma3 => "gemma3",
        Family::Qwen3 => "qwen3",
        _ => "llama",
    };
    if family == Family::Gemma3 && imp == GgufImpl::Modelbench {
        return Ok(());
    }
    let own = imp == GgufImpl::Modelbench;
    let runs = match family {
        Family::Gemma3 => "candle-transformers 0.11.1 quantized_gemma3 (impl=candle-transformers)",
        Family::Qwen3 if own => "the project's quantized qwen3 (impl=modelbench)",
        Family::Qwen3 => "candle-transformers 0.11.1 quantized_qwen3",
        _ if own => "the project's quantized llama (impl=modelbench)",
        _ => "candle-transformers 0.11.1 quantized_llama",
    };
    let kind = ct
        .metadata
        .get(&format!("{a}.rope.scaling.type"))
        .and_then(|v| v.to_string().ok())
        .cloned();
    let factor = ct
        .metadata
        .get(&format!("{a}.rope.scaling.factor"))
        .and_then(|v| v.to_f32().ok());
    let scaled = match kind.as_deref() {
        None | Some("none") | Some("") => factor.is_some_and(|f| f != 0.0 && f != 1.0),
        Some(_) => factor.is_none_or(|f| f != 1.0),
    };
    if scaled {
        return Err(gguf_err(
            path,
            format!(
                "RoPE scaling `{}` (factor {}, `{a}.rope.scaling.*`) is not implemented by {runs}, which would run it unscaled; use a GGUF without RoPE scaling{}",
                kind.as_deref().unwrap_or("linear"),
                factor.map(|f| f.to_string()).unwrap_or_else(|| "unset".into()),
                if family == Family::Gemma3 { " or leave impl= out (the project's Gemma 3 implements linear)" } else { "" }
            ),
        ));
    }
    if ct.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(gguf_err(
            path,
            format!(
                "the file has `rope_freqs.weight` (per-dimension RoPE frequency factors, Llama 3.1-style scaling), which {runs} ignores; use a GGUF without it (no implementation here applies it)"
            ),
        ));
    }
    Ok(())
}

/// Describes a GGUF model as its default implementation runs it (see [`describe_impl`]).
pub fn describe(
    path: &Path,
    ct: &Content,
    family: Family,
    context_cap: Option<usize>,
) -> Result<ModelMeta> {
    describe_impl(path, ct, family, context_cap, GgufImpl::default_for(family))
}

/// Describes a GGUF model: parameters and bytes from the tensor table, shapes from metadata,
/// built context and exactness from the implementation that runs it.
pub fn describe_impl(
    path: &Path,
    ct: &Content,
    family: Family,
    context_cap: Option<usize>,
    imp: GgufImpl,
) -> Result<ModelMeta> {
    if !imp.supports(family) {
        return Err(gguf_err(
            path,
            format!(
                "impl={} exists only for gemma3, llama and qwen3; use impl=candle-transformers (or leave it out) for {family}",
                imp.name()
            ),
        ));
    }
    let a = match family {
        Family::Gemma3 => "gemma3",
        Family::Qwen3 => "qwen3",
        _ => "llama",
    };
    check_rope(path, ct, family, imp)?;
    let need = |k: &str| {
        md_u(ct, &format!("{a}.{k}"))
            .ok_or_else(|| gguf_err(path, format!("metadata lacks `{a}.{k}`")))
    };
    let (layers, hidden, heads) = (
        need("block_count")?,
        need("embedding_length")?,
        need("attention.head_count")?,
    );
    let kv_heads = md_u(ct, &format!("{a}.attention.head_count_kv")).unwrap_or(heads);
    let head_dim = md_u(ct, &format!("{a}.attention.key_length")).unwrap_or(hidden / heads.max(1));
    let mut params = 0u64;
    let mut bytes = 0u64;
    let mut matmul = 0u64;
    let mut vocab = 0usize;
    for (name, info) in &ct.tensor_infos {
        let n = info.shape.elem_count();
        params += n as u64;
        bytes += (n / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        if name == "token_embd.weight" {
            vocab = info.shape.dims()[0];
        } else if info.shape.rank() == 2 && name != "output.weight" {
            matmul += n as u64;
        }
    }
    let max_context = md_u(ct, &format!("{a}.context_length")).unwrap_or(0);
    let own = imp == GgufImpl::Modelbench;
    let built = match family {
        Family::Llama if !own => quantized_llama::MAX_SEQ_LEN,
        Family::Gemma3 if !own => quantized_gemma3::MAX_SEQ_LEN,
        Family::Gemma3 | Family::Llama | Family::Qwen3 if own => {
            let full = if max_context > 0 { max_context } else { 8192 };
            context_cap
                .map(|c| c.max(MIN_BUILT_CONTEXT).min(full))
                .unwrap_or(full)
        }
        _ => context_cap
            .map(|c| c.min(max_context))
            .unwrap_or(max_context),
    };
    let window = md_u(ct, "gemma3.attention.sliding_window").filter(|_| family == Family::Gemma3);
    let implementation = match (family, own) {
        (Family::Gemma3, true) => format!(
            // Not the built context (meta.built_context has it): this string is part of the
            // quality verdict's key, which must not change with a run's context length.
            "modelbench quantized_gemma3 (GELU-tanh MLP, sliding window of {} in prefill and decode): candle-transformers 0.11.1 quantized_gemma3 uses SiLU and no decode window",
            window.unwrap_or(0)
        ),
        (Family::Gemma3, false) => "candle-transformers 0.11.1 quantized_gemma3 (chosen with impl=candle-transformers; known wrong: SiLU MLP, no sliding window in decode)".into(),
        (Family::Llama, true) => "modelbench quantized_llama (the project's own, impl=modelbench: per-sequence KV caches, batched by `modelbench serve`)".into(),
        (Family::Qwen3, true) => "modelbench quantized_qwen3 (the project's own, impl=modelbench: per-sequence KV caches, batched by `modelbench serve`)".into(),
        (Family::Llama, _) => "candle-transformers 0.11.1 quantized_llama".into(),
        _ => "candle-transformers 0.11.1 quantized_qwen3".into(),
    };
    let gguf = weights_info(ct);
    Ok(ModelMeta {
        family,
        params,
        weight_bytes: bytes,
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim,
        intermediate: md_u(ct, &format!("{a}.feed_forward_length")).unwrap_or(0),
        vocab,
        dtype: format!("gguf-{}", gguf.label),
        max_context,
        built_context: built,
        prefill: "single-call".into(),
        experts: None,
        matmul_params: matmul,
        expert_params: 0,
        tied_embeddings: !ct.tensor_infos.contains_key("output.weight"),
        decode_weight_bytes: Some(bytes as f64),
        provenance: Provenance {
            // The project's Gemma 3 is exact at every position it was built for.
            exact_context: if own { None } else { window },
            implementation,
            attention: "eager".into(),
            gguf: Some(gguf),
        },
    })
}

/// Every variant is `Clone` with weights shared (`Arc`): a clone is a KV snapshot because
/// quantized Llama and candle's Gemma3 grow their caches by `Tensor::cat`, quantized Qwen3 on
/// CPU keeps a `Vec<f32>` (cloned deeply) or a cat-grown tensor, and the project's Gemma 3
/// writes its global `KvCache` in place only past the saved length (see
/// [`gemma3_quantized::ModelWeights`]).
#[derive(Clone)]
enum Q {
    Llama(quantized_llama::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    /// No cache reset method: a forward at position 0 replaces every layer's cache.
    Gemma3(quantized_gemma3::ModelWeights),
    Gemma3Own(gemma3_quantized::ModelWeights),
    /// The project's own Llama / Qwen3 (impl=modelbench).
    LlamaOwn(llama_quantized::ModelWeights),
}

pub struct QuantizedLm {
    q: Q,
    len: usize,
    device: Device,
    meta: ModelMeta,
}

/// Loads a GGUF model with its family's default implementation (see [`load_with`]).
pub fn load(path: &Path, device: &Device, context_cap: Option<usize>) -> Result<Box<dyn CausalLm>> {
    load_with(path, None, device, context_cap)
}

/// Loads a GGUF model with implementation `imp` (None: the family's default). Qwen3 and the
/// project's Gemma 3 build their RoPE tables for `context_cap` positions (patched into the
/// metadata for Qwen3); quantized Llama and candle-transformers' Gemma3 use candle's fixed
/// tables (4096 and 131072).
pub fn load_with(
    path: &Path,
    imp: Option<GgufImpl>,
    device: &Device,
    context_cap: Option<usize>,
) -> Result<Box<dyn CausalLm>> {
    let mut ct = read_header(path)?;
    let family = family(path, &ct)?;
    super::gguf_check::check_arch(path, &ct)?;
    let imp = imp.unwrap_or(GgufImpl::default_for(family));
    let meta = describe_impl(path, &ct, family, context_cap, imp)?;
    if family == Family::Qwen3 {
        ct.metadata.insert(
            "qwen3.context_length".into(),
            Value::U32(meta.built_context as u32),
        );
    }
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let err = |e: candle_core::Error| gguf_err(path, one_line(&e.to_string()));
    let q = super::gguf_check::guard(path, "building the model", || {
        Ok(match family {
            Family::Llama | Family::Qwen3 if imp == GgufImpl::Modelbench => Q::LlamaOwn(
                llama_quantized::ModelWeights::from_gguf(ct, &mut f, device, meta.built_context)
                    .map_err(err)?,
            ),
            Family::Llama => {
                Q::Llama(quantized_llama::ModelWeights::from_gguf(ct, &mut f, device).map_err(err)?)
            }
            Family::Qwen3 => {
                Q::Qwen3(quantized_qwen3::ModelWeights::from_gguf(ct, &mut f, device).map_err(err)?)
            }
            Family::Gemma3 if imp == GgufImpl::Modelbench => Q::Gemma3Own(
                gemma3_quantized::ModelWeights::from_gguf(ct, &mut f, device, meta.built_context)
                    .map_err(err)?,
            ),
            Family::Gemma3 => Q::Gemma3(
                quantized_gemma3::ModelWeights::from_gguf(ct, &mut f, device).map_err(err)?,
            ),
            Family::Qwen3Moe => unreachable!("family() never returns it"),
        })
    })?;
    Ok(Box::new(QuantizedLm {
        q,
        len: 0,
        device: device.clone(),
        meta,
    }))
}

impl CausalLm for QuantizedLm {
    fn reset(&mut self) -> Result<()> {
        match &mut self.q {
            Q::Llama(m) => m.clear_kv_cache(),
            Q::Qwen3(m) => m.clear_kv_cache(),
            Q::Gemma3(_) => {}
            Q::Gemma3Own(m) => m.reset(),
            Q::LlamaOwn(m) => m.reset(),
        }
        self.len = 0;
        Ok(())
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        // candle 0.11's quantized_gemma3 fails a multi-token forward at index_pos > 0 (its
        // mask concatenates f32 zeros with a u32 mask: "dtype mismatch in cat"), so such a
        // chunk goes one token at a time there.
        let out = if matches!(self.q, Q::Gemma3(_)) && pos > 0 && tokens.len() > 1 {
            let mut last = None;
            for (i, t) in tokens.iter().enumerate() {
                last = Some(self.forward_raw(std::slice::from_ref(t), pos + i)?);
            }
            last.expect("more than one token")
        } else {
            self.forward_raw(tokens, pos)?
        };
        self.len = pos + tokens.len();
        Ok(out)
    }
    fn depth(&self) -> usize {
        self.len
    }
    fn snapshot(&mut self) -> Result<crate::models::KvState> {
        Ok(crate::models::KvState::new(self.len, self.q.clone()))
    }
    fn restore(&mut self, s: &crate::models::KvState) -> Result<crate::models::Restored> {
        self.q = s.get::<Q>()?.clone();
        self.len = s.depth();
        Ok(crate::models::Restored::Copy)
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn gemma3_weights(&self) -> Option<gemma3_quantized::ModelWeights> {
        match &self.q {
            Q::Gemma3Own(m) => Some(m.clone()),
            _ => None,
        }
    }
    fn llama_weights(&self) -> Option<llama_quantized::ModelWeights> {
        match &self.q {
            Q::LlamaOwn(m) => Some(m.clone()),
            _ => None,
        }
    }
}

impl QuantizedLm {
    fn forward_raw(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let x = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let out = match &mut self.q {
            Q::Llama(m) => m.forward(&x, pos),
            Q::Qwen3(m) => m.forward(&x, pos),
            Q::Gemma3(m) => m.forward(&x, pos),
            Q::Gemma3Own(m) => m.forward(&x, pos),
            Q::LlamaOwn(m) => m.forward(&x, pos),
        };
        out.and_then(|l| l.flatten_all())
            .map_err(|e| Error::Candle(candle_core::Error::Msg(one_line(&e.to_string()))))
    }
}
