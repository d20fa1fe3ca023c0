//! GGUF models: candle-transformers' quantized Llama and Qwen3, and Gemma 3 through the
//! project's own [`super::gemma3_quantized`] (candle-transformers' `quantized_gemma3` stays
//! selectable with `gguf:<file or repo>?impl=candle-transformers`).

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_gemma3, quantized_llama, quantized_qwen3};

use super::{gemma3_quantized, CausalLm, Family, ModelMeta};
use crate::error::{one_line, Error, Result};

/// Which code runs a GGUF model (`gguf:...?impl=<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufImpl {
    /// The project's own model ([`gemma3_quantized`]); Gemma 3 only.
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

    /// The default of a family: the project's own Gemma 3, candle-transformers' otherwise.
    pub fn default_for(family: Family) -> GgufImpl {
        match family {
            Family::Gemma3 => GgufImpl::Modelbench,
            _ => GgufImpl::CandleTransformers,
        }
    }

    /// Whether this implementation exists for `family`.
    pub fn supports(self, family: Family) -> bool {
        self == GgufImpl::CandleTransformers || family == Family::Gemma3
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

/// Reads the header (metadata and tensor table) of a GGUF file.
pub fn read_header(path: &Path) -> Result<Content> {
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    Content::read(&mut f).map_err(|e| {
        gguf_err(
            path,
            format!(
                "not a readable GGUF file ({}); it is truncated or corrupt: fetch it again",
                one_line(&e.to_string())
            ),
        )
    })
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
                "impl={} exists only for gemma3; use impl=candle-transformers (or leave it out) for {family}",
                imp.name()
            ),
        ));
    }
    let a = match family {
        Family::Gemma3 => "gemma3",
        Family::Qwen3 => "qwen3",
        _ => "llama",
    };
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
        Family::Llama => quantized_llama::MAX_SEQ_LEN,
        Family::Gemma3 if !own => quantized_gemma3::MAX_SEQ_LEN,
        Family::Gemma3 => {
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
            "modelbench quantized_gemma3 (GELU-tanh MLP, sliding window of {} in prefill and decode, RoPE for {built} positions): candle-transformers 0.11.1 quantized_gemma3 uses SiLU and no decode window",
            window.unwrap_or(0)
        ),
        (Family::Gemma3, false) => "candle-transformers 0.11.1 quantized_gemma3 (chosen with impl=candle-transformers; known wrong: SiLU MLP, no sliding window in decode)".into(),
        (Family::Llama, _) => "candle-transformers 0.11.1 quantized_llama".into(),
        _ => "candle-transformers 0.11.1 quantized_qwen3".into(),
    };
    let ftype = ct
        .tensor_infos
        .get("blk.0.ffn_down.weight")
        .map(|i| format!("{:?}", i.ggml_dtype))
        .unwrap_or_default();
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
        dtype: format!("gguf-{}", ftype.to_lowercase()),
        max_context,
        built_context: built,
        prefill: "single-call".into(),
        // The project's Gemma 3 is exact at every position it was built for.
        exact_context: if own { None } else { window },
        implementation,
        attention: "eager".into(),
        experts: None,
        matmul_params: matmul,
        expert_params: 0,
        tied_embeddings: !ct.tensor_infos.contains_key("output.weight"),
        decode_weight_bytes: Some(bytes as f64),
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
    let q = match family {
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
        Family::Gemma3 => {
            Q::Gemma3(quantized_gemma3::ModelWeights::from_gguf(ct, &mut f, device).map_err(err)?)
        }
        Family::Qwen3Moe => unreachable!("family() never returns it"),
    };
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
}

impl QuantizedLm {
    fn forward_raw(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let x = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let out = match &mut self.q {
            Q::Llama(m) => m.forward(&x, pos),
            Q::Qwen3(m) => m.forward(&x, pos),
            Q::Gemma3(m) => m.forward(&x, pos),
            Q::Gemma3Own(m) => m.forward(&x, pos),
        };
        out.and_then(|l| l.flatten_all())
            .map_err(|e| Error::Candle(candle_core::Error::Msg(one_line(&e.to_string()))))
    }
}
