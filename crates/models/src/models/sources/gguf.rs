//! GGUF models: describing a file (its header read by [`crate::models::gguf::check`]) and
//! loading it through the model-family table ([`crate::models::families`]), which says which implementation runs each
//! architecture (candle-transformers' quantized models, or the project's own
//! [`crate::models::quantized::llama`] / [`crate::models::quantized::gemma3`], which batch).

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use crate::error::{one_line, Error, Result};
use crate::models::batched::{BatchOptions, StepModel};
use crate::models::families::{self, GgufFamily, GgufImpl, GgufModel, Implementation, Positions};
use crate::models::gguf::check::read_header;
use crate::models::gguf::ggml_types::dtype_name;
use crate::models::{CausalLm, Family, ModelMeta, Provenance};

fn gguf_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::weights(path.display(), reason)
}

/// A GGUF file's header, read and checked once when its reference is resolved, and the
/// implementation `?impl=` named: what travels with a resolved source
/// ([`crate::models::sources::Resolved::gguf`]) to the preflight, the tokenizer and the loader, none of
/// which reads the file's header again.
#[derive(Debug, Clone)]
pub struct GgufSource {
    /// Shared by clones of the resolved source; copied ([`crate::models::gguf::read::copy_content`])
    /// only where a builder consumes it.
    pub header: std::sync::Arc<Content>,
    /// `?impl=` (None: the file's default, [`GgufFamily::default_for`]).
    pub imp: Option<GgufImpl>,
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

/// The family table's entry of a GGUF file, from `general.architecture`.
pub fn family_entry(path: &Path, ct: &Content) -> Result<&'static GgufFamily> {
    let arch = families::md_str(ct, "general.architecture").unwrap_or_default();
    families::by_arch(&arch).ok_or_else(|| {
        gguf_err(
            path,
            format!(
                "GGUF architecture `{arch}` is not supported ({})",
                families::archs()
            ),
        )
    })
}

/// The family of a GGUF file, from `general.architecture`.
pub fn family(path: &Path, ct: &Content) -> Result<Family> {
    family_entry(path, ct).map(|f| f.family)
}

fn md_u(ct: &Content, key: &str) -> Option<usize> {
    ct.metadata.get(key).and_then(|v| {
        v.to_u32()
            .ok()
            .map(|x| x as usize)
            .or_else(|| v.to_u64().ok().map(|x| x as usize))
    })
}

/// The implementation of `fam` that runs the file: the one `imp` names, or the file's default;
/// an error when `imp` names one the family lacks or the implementation refuses the file.
pub fn choose(
    path: &Path,
    ct: &Content,
    fam: &'static GgufFamily,
    imp: Option<GgufImpl>,
) -> Result<&'static Implementation> {
    let chosen = match imp {
        Some(i) => fam.implementation(i).ok_or_else(|| {
            gguf_err(
                path,
                format!(
                    "impl={} does not exist for {}; its implementations: {} (or leave impl= out)",
                    i.name(),
                    fam.arch,
                    fam.implementation_names()
                ),
            )
        })?,
        None => fam.default_for(ct),
    };
    if let Some(why) = (chosen.refuses)(fam.arch, ct) {
        let others: Vec<&str> = fam
            .implementations
            .iter()
            .filter(|i| i.imp != chosen.imp && (i.refuses)(fam.arch, ct).is_none())
            .map(|i| i.imp.name())
            .collect();
        let fix = match others.as_slice() {
            [] => "use a GGUF file without it".to_string(),
            [one, ..] => format!("use impl={one} (or leave impl= out), which runs it"),
        };
        return Err(gguf_err(path, format!("{why}; {fix}")));
    }
    Ok(chosen)
}

/// Describes a GGUF model as its default implementation runs it (see [`describe_impl`]).
pub fn describe(
    path: &Path,
    ct: &Content,
    family: Family,
    context_cap: Option<usize>,
) -> Result<ModelMeta> {
    let _ = family;
    describe_impl(path, ct, context_cap, None)
}

/// Describes a GGUF model: parameters and bytes from the tensor table, shapes from metadata,
/// built context and exactness from the implementation that runs it (`imp`, or the file's
/// default).
pub fn describe_impl(
    path: &Path,
    ct: &Content,
    context_cap: Option<usize>,
    imp: Option<GgufImpl>,
) -> Result<ModelMeta> {
    let fam = family_entry(path, ct)?;
    let chosen = choose(path, ct, fam, imp)?;
    let a = fam.arch;
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
    // The stacked experts (`blk.N.ffn_{gate,up,down}_exps`, experts x rows x columns): a
    // token reads `expert_used_count` of `expert_count` of them.
    let (mut expert_params, mut expert_bytes) = (0u64, 0u64);
    for (name, info) in &ct.tensor_infos {
        let n = info.shape.elem_count();
        let b = (n / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        params += n as u64;
        bytes += b;
        if name == "token_embd.weight" {
            vocab = info.shape.dims()[0];
        } else if info.shape.rank() == 3 && name.ends_with("_exps.weight") {
            matmul += n as u64;
            expert_params += n as u64;
            expert_bytes += b;
        } else if info.shape.rank() == 2 && name != "output.weight" {
            matmul += n as u64;
        }
    }
    let experts = match (
        md_u(ct, &format!("{a}.expert_count")),
        md_u(ct, &format!("{a}.expert_used_count")),
    ) {
        (Some(e), Some(k)) if e > 0 && k > 0 && k <= e && expert_params > 0 => Some((e, k)),
        _ => None,
    };
    // Bytes a decode step reads: every tensor once, of the experts only the used share.
    let decode_bytes = match experts {
        Some((e, k)) => bytes as f64 - expert_bytes as f64 * (1.0 - k as f64 / e as f64),
        None => bytes as f64,
    };
    let max_context = md_u(ct, &format!("{a}.context_length")).unwrap_or(0);
    let built = match chosen.positions {
        Positions::Fixed(n) => n,
        Positions::Asked => {
            let full = if max_context > 0 { max_context } else { 8192 };
            context_cap
                .map(|c| c.max(families::MIN_BUILT_CONTEXT).min(full))
                .unwrap_or(full)
        }
        Positions::FromMetadata => context_cap
            .map(|c| c.min(max_context))
            .unwrap_or(max_context),
    };
    let gguf = weights_info(ct);
    Ok(ModelMeta {
        family: fam.family,
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
        experts,
        matmul_params: matmul,
        expert_params: if experts.is_some() { expert_params } else { 0 },
        tied_embeddings: !ct.tensor_infos.contains_key("output.weight"),
        decode_weight_bytes: Some(decode_bytes),
        provenance: Provenance {
            exact_context: (chosen.exact_context)(ct),
            implementation: (chosen.label)(ct),
            attention: "eager".into(),
            gguf: Some(gguf),
        },
    })
}

/// A GGUF model behind [`CausalLm`]: the family table's implementation, the positions run,
/// and (for implementations that cannot be copied) the tokens since the last reset, so a KV
/// snapshot is restored by replaying them.
pub struct QuantizedLm {
    m: Box<dyn GgufModel>,
    one_token_after_start: bool,
    len: usize,
    history: Vec<u32>,
    device: Device,
    meta: ModelMeta,
}

/// A saved KV state: a copy of the model, or the tokens to replay.
enum Saved {
    Copy(std::sync::Arc<std::sync::Mutex<Box<dyn GgufModel>>>),
    Replay(Vec<u32>),
}

/// Loads a GGUF model with its file's default implementation (see [`load_with`]).
pub fn load(path: &Path, device: &Device, context_cap: Option<usize>) -> Result<Box<dyn CausalLm>> {
    load_with(path, None, device, context_cap)
}

/// Loads a GGUF model with implementation `imp` (None: the file's default, see
/// [`GgufFamily::default_for`]), built for the context [`describe_impl`] reports.
pub fn load_with(
    path: &Path,
    imp: Option<GgufImpl>,
    device: &Device,
    context_cap: Option<usize>,
) -> Result<Box<dyn CausalLm>> {
    load_header(path, read_header(path)?, imp, device, context_cap)
}

/// [`load_with`] on a header already read ([`GgufSource`]).
pub fn load_header(
    path: &Path,
    mut ct: Content,
    imp: Option<GgufImpl>,
    device: &Device,
    context_cap: Option<usize>,
) -> Result<Box<dyn CausalLm>> {
    let fam = family_entry(path, &ct)?;
    crate::models::families::check::check_arch(path, &ct)?;
    let chosen = choose(path, &ct, fam, imp)?;
    let meta = describe_impl(path, &ct, context_cap, Some(chosen.imp))?;
    if chosen.positions == Positions::FromMetadata {
        ct.metadata.insert(
            format!("{}.context_length", fam.arch),
            Value::U32(meta.built_context as u32),
        );
    }
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let m = crate::models::gguf::check::guard(path, "building the model", || {
        (chosen.build)(families::Build {
            ct,
            file: &mut f,
            device,
            context: meta.built_context,
        })
        .map_err(|e| gguf_err(path, one_line(&e.to_string())))
    })?;
    Ok(Box::new(QuantizedLm {
        m,
        one_token_after_start: chosen.one_token_after_start,
        len: 0,
        history: Vec::new(),
        device: device.clone(),
        meta,
    }))
}

impl CausalLm for QuantizedLm {
    fn reset(&mut self) -> Result<()> {
        self.m.reset();
        self.len = 0;
        self.history.clear();
        Ok(())
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let out = if self.one_token_after_start && pos > 0 && tokens.len() > 1 {
            let mut last = None;
            for (i, t) in tokens.iter().enumerate() {
                last = Some(self.forward_raw(std::slice::from_ref(t), pos + i)?);
            }
            last.expect("more than one token")
        } else {
            self.forward_raw(tokens, pos)?
        };
        // Only a model that cannot be copied needs its tokens to restore a snapshot.
        if !self.m.can_snapshot() {
            self.history.truncate(pos);
            self.history.extend_from_slice(tokens);
        }
        self.len = pos + tokens.len();
        Ok(out)
    }
    fn depth(&self) -> usize {
        self.len
    }
    fn snapshot(&mut self) -> Result<crate::models::KvState> {
        let saved = match self.m.snapshot() {
            Some(m) => Saved::Copy(std::sync::Arc::new(std::sync::Mutex::new(m))),
            None => Saved::Replay(self.history.clone()),
        };
        Ok(crate::models::KvState::new(self.len, saved))
    }
    fn restore(&mut self, s: &crate::models::KvState) -> Result<crate::models::Restored> {
        match s.get::<Saved>()? {
            Saved::Copy(m) => {
                let copy = m
                    .lock()
                    .map_err(|_| Error::Model("KV snapshot poisoned".into()))?
                    .snapshot()
                    .ok_or_else(|| Error::Model("KV snapshot cannot be copied".into()))?;
                self.m = copy;
                self.len = s.depth();
                self.history.truncate(self.len);
                Ok(crate::models::Restored::Copy)
            }
            Saved::Replay(tokens) => {
                self.reset()?;
                if !tokens.is_empty() {
                    self.forward(tokens, 0)?;
                }
                Ok(crate::models::Restored::Recompute)
            }
        }
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn batched(&mut self, o: &BatchOptions) -> Option<Result<Box<dyn StepModel>>> {
        self.m.batched(o)
    }
    fn own_weights(&self) -> Option<Box<dyn std::any::Any + Send>> {
        self.m.own_weights()
    }
    fn match_ggml_gelu(&mut self) -> bool {
        self.m.match_ggml_gelu()
    }
    fn match_candle_arithmetic(&mut self) -> bool {
        self.m.match_candle_arithmetic()
    }
}

impl QuantizedLm {
    fn forward_raw(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let dev = &self.device;
        let x = modelbench_measure::traced!("host", "ids tensor", [t = tokens.to_vec(), dev], {
            Tensor::new(t.as_slice(), dev)?.unsqueeze(0)
        })?;
        self.m
            .forward(&x, pos)
            .and_then(|l| l.flatten_all())
            .map_err(|e| Error::from(candle_core::Error::Msg(one_line(&e.to_string()))))
    }
}
