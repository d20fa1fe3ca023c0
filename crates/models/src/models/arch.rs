//! Per-family config parsing and the adapters from candle-transformers models to
//! [`CausalLm`]. Each family's quirks are handled here and nowhere else.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{gemma3, llama, qwen2, qwen3, qwen3_moe};
use serde_json::Value;

use super::{CausalLm, Family, KvState, ModelMeta, Provenance, Restored};
use crate::error::{one_line, Error, Result};

/// A family's typed config, deserialised straight from config.json (candle's own structs).
#[derive(Debug, Clone)]
pub enum Arch {
    Llama(llama::Config),
    Qwen2(qwen2::Config),
    Qwen3(qwen3::Config),
    Qwen3Moe(qwen3_moe::Config),
    Gemma3(gemma3::Config),
}

fn config_err(path: &str, family: Family, reason: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_string(),
        family: family.to_string(),
        reason: reason.into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, path: &str, family: Family) -> Result<T> {
    serde_json::from_value(v).map_err(|e| config_err(path, family, e.to_string()))
}

/// Newer Gemma 3 exports (270M, and transformers >= 4.50 in general) write
/// `_sliding_window_pattern` and `layer_types` instead of the `sliding_window_pattern` key
/// candle 0.11 requires; derive it from whichever is present. Multimodal Gemma 3 configs
/// nest the text model under `text_config`.
fn patch_gemma3(mut v: Value) -> Value {
    if let Some(text) = v.get("text_config").cloned() {
        v = text;
    }
    if let Some(obj) = v.as_object_mut() {
        if !obj.contains_key("sliding_window_pattern") {
            let from_private = obj.get("_sliding_window_pattern").cloned();
            let from_types = obj
                .get("layer_types")
                .and_then(|t| t.as_array())
                .and_then(|t| {
                    t.iter()
                        .position(|x| x.as_str() == Some("full_attention"))
                        .map(|i| Value::from(i + 1))
                });
            if let Some(p) = from_private.or(from_types) {
                obj.insert("sliding_window_pattern".into(), p);
            }
        }
    }
    v
}

impl Arch {
    pub fn from_json(family: Family, v: &Value, path: &str) -> Result<Arch> {
        let v = v.clone();
        let arch = match family {
            Family::Llama => {
                let c: llama::LlamaConfig = parse(v, path, family)?;
                Arch::Llama(c.into_config(cfg!(feature = "flash-attn")))
            }
            Family::Qwen2 => Arch::Qwen2(parse(v, path, family)?),
            Family::Qwen3 => Arch::Qwen3(parse(v, path, family)?),
            Family::Qwen3Moe => Arch::Qwen3Moe(parse(v, path, family)?),
            Family::Gemma3 => Arch::Gemma3(parse(patch_gemma3(v), path, family)?),
            Family::Phi3 | Family::Phi2 | Family::Lfm2 | Family::Starcoder2 => {
                return Err(config_err(
                    path,
                    family,
                    format!("{family} runs from GGUF files here (gguf:<file>); a config.json + safetensors {family} model is not implemented yet"),
                ))
            }
            Family::Glm4 => {
                return Err(config_err(
                    path,
                    family,
                    "glm4 runs from GGUF files here (gguf:<file>); a config.json + safetensors glm4 model is not implemented yet",
                ))
            }
        };
        arch.validate()
            .map_err(|reason| config_err(path, family, reason))?;
        Ok(arch)
    }

    pub fn family(&self) -> Family {
        match self {
            Arch::Llama(_) => Family::Llama,
            Arch::Qwen2(_) => Family::Qwen2,
            Arch::Qwen3(_) => Family::Qwen3,
            Arch::Qwen3Moe(_) => Family::Qwen3Moe,
            Arch::Gemma3(_) => Family::Gemma3,
        }
    }

    /// (layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, max_context)
    fn dims(&self) -> [usize; 8] {
        // The fields every config here names alike, with its head dimension and FFN width.
        macro_rules! dims {
            ($c:expr, $head_dim:expr, $inter:expr) => {
                [
                    $c.num_hidden_layers,
                    $c.hidden_size,
                    $c.num_attention_heads,
                    $c.num_key_value_heads,
                    $head_dim,
                    $inter,
                    $c.vocab_size,
                    $c.max_position_embeddings,
                ]
            };
        }
        match self {
            Arch::Llama(c) => dims!(
                c,
                c.hidden_size / c.num_attention_heads.max(1),
                c.intermediate_size
            ),
            Arch::Qwen2(c) => dims!(
                c,
                c.hidden_size / c.num_attention_heads.max(1),
                c.intermediate_size
            ),
            Arch::Qwen3(c) => dims!(c, c.head_dim, c.intermediate_size),
            Arch::Qwen3Moe(c) => dims!(c, c.head_dim, c.moe_intermediate_size),
            Arch::Gemma3(c) => dims!(c, c.head_dim, c.intermediate_size),
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let [layers, hidden, heads, kv, head_dim, inter, vocab, ctx] = self.dims();
        for (name, v) in [
            ("num_hidden_layers", layers),
            ("hidden_size", hidden),
            ("num_attention_heads", heads),
            ("num_key_value_heads", kv),
            ("head_dim", head_dim),
            ("intermediate_size", inter),
            ("vocab_size", vocab),
            ("max_position_embeddings", ctx),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if heads % kv != 0 {
            return Err(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            ));
        }
        let hidden_split = match self {
            Arch::Llama(c) => Some((c.hidden_size, c.num_attention_heads)),
            Arch::Qwen2(c) => Some((c.hidden_size, c.num_attention_heads)),
            _ => None,
        };
        if let Some((h, n)) = hidden_split {
            if h % n != 0 {
                return Err(format!(
                    "hidden_size {h} is not a multiple of num_attention_heads {n}"
                ));
            }
        }
        if let Arch::Qwen3Moe(c) = self {
            if c.num_experts_per_tok == 0 || c.num_experts_per_tok > c.num_experts {
                return Err(format!(
                    "num_experts_per_tok {} must be in 1..={}",
                    c.num_experts_per_tok, c.num_experts
                ));
            }
        }
        Ok(())
    }

    pub fn max_context(&self) -> usize {
        self.dims()[7]
    }

    /// Sizes RoPE tables and caches for `cap` positions instead of the config's maximum
    /// (Llama-3's 131072-position tables cost 0.08 s per cache reset and real memory).
    pub fn cap_context(&mut self, cap: usize) {
        let m = match self {
            Arch::Llama(c) => &mut c.max_position_embeddings,
            Arch::Qwen2(c) => &mut c.max_position_embeddings,
            Arch::Qwen3(c) => &mut c.max_position_embeddings,
            Arch::Qwen3Moe(c) => &mut c.max_position_embeddings,
            Arch::Gemma3(c) => &mut c.max_position_embeddings,
        };
        *m = (*m).min(cap.max(1));
    }

    pub fn meta(&self, params: u64, dtype: DType) -> ModelMeta {
        let [layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, built] = self.dims();
        let prefill = match self {
            Arch::Gemma3(c) if c.num_key_value_heads > 1 => "token-by-token",
            _ => "single-call",
        };
        ModelMeta {
            family: self.family(),
            params,
            weight_bytes: params * dtype.size_in_bytes() as u64,
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            vocab,
            dtype: dtype.as_str().to_string(),
            max_context: built,
            built_context: built,
            prefill: prefill.into(),
            experts: match self {
                Arch::Qwen3Moe(c) => Some((c.num_experts, c.num_experts_per_tok)),
                _ => None,
            },
            matmul_params: 0,
            expert_params: 0,
            tied_embeddings: match self {
                Arch::Llama(c) => c.tie_word_embeddings,
                Arch::Qwen2(c) => c.tie_word_embeddings,
                Arch::Qwen3(c) => c.tie_word_embeddings,
                Arch::Qwen3Moe(c) => c.tie_word_embeddings,
                Arch::Gemma3(_) => true,
            },
            decode_weight_bytes: None,
            provenance: Provenance {
                exact_context: None,
                attention: "eager".into(),
                gguf: None,
                implementation: format!(
                    "candle-transformers 0.11.1 {}",
                    match self {
                        Arch::Llama(_) => "llama",
                        Arch::Qwen2(_) => "qwen2",
                        Arch::Qwen3(_) => "qwen3",
                        Arch::Qwen3Moe(_) => "qwen3_moe",
                        Arch::Gemma3(_) => "gemma3",
                    }
                ),
            },
        }
    }

    /// Builds the model; `meta.max_context` should hold the uncapped config value.
    pub fn build(&self, vb: VarBuilder, meta: ModelMeta) -> candle_core::Result<Box<dyn CausalLm>> {
        let device = vb.device().clone();
        let dtype = vb.dtype();
        Ok(match self {
            Arch::Llama(c) => {
                let model = llama::Llama::load(vb, c)?;
                let cache = llama::Cache::new(true, dtype, c, &device)?;
                let m = LlamaCached {
                    model,
                    cache,
                    cfg: c.clone(),
                    dtype,
                    device: device.clone(),
                };
                CachedLm::boxed(m, device, meta)
            }
            Arch::Qwen2(c) => CachedLm::boxed(qwen2::ModelForCausalLM::new(c, vb)?, device, meta),
            Arch::Qwen3(c) => CachedLm::boxed(qwen3::ModelForCausalLM::new(c, vb)?, device, meta),
            Arch::Qwen3Moe(c) => {
                CachedLm::boxed(qwen3_moe::ModelForCausalLM::new(c, vb)?, device, meta)
            }
            Arch::Gemma3(c) => Box::new(Gemma3Lm {
                model: gemma3::Model::new(cfg!(feature = "flash-attn"), c, vb)?,
                token_by_token: c.num_key_value_heads > 1,
                window: c.sliding_window,
                log: Vec::new(),
                shared: None,
                device,
                meta,
            }),
        })
    }
}

fn input(tokens: &[u32], dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::new(tokens, dev)?.unsqueeze(0)
}

fn wrap(e: candle_core::Error) -> Error {
    Error::from(candle_core::Error::Msg(one_line(&e.to_string())))
}

/// A candle-transformers model whose KV cache is a real snapshot when cloned: its cache grows
/// by `Tensor::cat` (new tensors every step, never written in place). Llama, Qwen2, Qwen3 and
/// Qwen3-MoE; [`CachedLm`] adapts any of them.
trait CatCached: Send + 'static {
    /// What a snapshot keeps: the cache, or the model that holds it (weights shared).
    type State: Clone + Send + 'static;
    /// The logits of the last of `x` (1, len) at positions `pos..`.
    fn run(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor>;
    /// Empties the cache.
    fn clear(&mut self) -> candle_core::Result<()>;
    fn state(&self) -> Self::State;
    fn set_state(&mut self, state: Self::State);
}

/// candle's Llama and the cache it is run with.
struct LlamaCached {
    model: llama::Llama,
    cache: llama::Cache,
    cfg: llama::Config,
    dtype: DType,
    device: Device,
}

impl CatCached for LlamaCached {
    type State = llama::Cache;
    fn run(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        // (b, vocab) f32
        self.model.forward(x, pos, &mut self.cache)
    }
    fn clear(&mut self) -> candle_core::Result<()> {
        // candle's llama Cache has no reset and private fields: build a new one.
        self.cache = llama::Cache::new(true, self.dtype, &self.cfg, &self.device)?;
        Ok(())
    }
    fn state(&self) -> llama::Cache {
        self.cache.clone()
    }
    fn set_state(&mut self, state: llama::Cache) {
        self.cache = state;
    }
}

/// candle models with `forward(&mut self, ids, offset) -> (b, 1, vocab)` in the model dtype
/// and `clear_kv_cache()` (Qwen2, Qwen3 and Qwen3-MoE): their attention keeps a `ConcatKvCache`, so a
/// clone of the model is the snapshot.
macro_rules! cat_cached_model {
    ($model:ty) => {
        impl CatCached for $model {
            type State = $model;
            fn run(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
                self.forward(x, pos)
            }
            fn clear(&mut self) -> candle_core::Result<()> {
                self.clear_kv_cache();
                Ok(())
            }
            fn state(&self) -> $model {
                self.clone()
            }
            fn set_state(&mut self, state: $model) {
                *self = state;
            }
        }
    };
}

cat_cached_model!(qwen2::ModelForCausalLM);
cat_cached_model!(qwen3::ModelForCausalLM);
cat_cached_model!(qwen3_moe::ModelForCausalLM);

/// Any [`CatCached`] model as a [`CausalLm`]: a snapshot is a clone of its state.
struct CachedLm<M> {
    model: M,
    len: usize,
    device: Device,
    meta: ModelMeta,
}

impl<M: CatCached> CachedLm<M> {
    fn boxed(model: M, device: Device, meta: ModelMeta) -> Box<dyn CausalLm> {
        Box::new(CachedLm {
            model,
            len: 0,
            device,
            meta,
        })
    }
}

impl<M: CatCached> CausalLm for CachedLm<M> {
    fn reset(&mut self) -> Result<()> {
        self.model.clear().map_err(wrap)?;
        self.len = 0;
        Ok(())
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let x = input(tokens, &self.device).map_err(wrap)?;
        let out = self
            .model
            .run(&x, pos)
            .and_then(|l| l.flatten_all())
            .map_err(wrap)?;
        self.len = pos + tokens.len();
        Ok(out)
    }
    fn depth(&self) -> usize {
        self.len
    }
    fn snapshot(&mut self) -> Result<KvState> {
        Ok(KvState::new(self.len, self.model.state()))
    }
    fn restore(&mut self, s: &KvState) -> Result<Restored> {
        self.model.set_state(s.get::<M::State>()?.clone());
        self.len = s.depth();
        Ok(Restored::Copy)
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

struct Gemma3Lm {
    model: gemma3::Model,
    /// candle 0.11's Gemma3 fails a multi-token forward with more than one KV head
    /// (`slice-set only supports contiguous tensors` in the KV cache); such models prefill
    /// one token at a time, and their records say so.
    token_by_token: bool,
    /// The sliding window of its local layers.
    window: usize,
    /// Every forward since the last reset (tokens, position): replayed by a recompute restore.
    log: Vec<(Vec<u32>, usize)>,
    /// Set while the live model shares KV buffers with a snapshot: raised when a write may
    /// have overwritten that snapshot's part of a RotatingKvCache ring.
    shared: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    device: Device,
    meta: ModelMeta,
}

/// A snapshot of candle-transformers' Gemma3: a clone of the model (its KV tensors share
/// storage with the live model's) and the forwards that built it.
#[derive(Clone)]
struct Gemma3State {
    model: gemma3::Model,
    log: Vec<(Vec<u32>, usize)>,
    /// Raised once a live write may have overwritten the shared ring (see Gemma3Lm::shared).
    clobbered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gemma3Lm {
    fn cached_len(&self) -> usize {
        self.log.last().map_or(0, |(t, p)| p + t.len())
    }
}

impl CausalLm for Gemma3Lm {
    fn reset(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        self.log.clear();
        self.shared = None;
        Ok(())
    }
    fn depth(&self) -> usize {
        self.cached_len()
    }
    /// candle's Gemma3 writes its KV caches in place (`KvCache` and `RotatingKvCache` with
    /// `slice_set`) and keeps them private, so the snapshot is a clone sharing those buffers.
    /// The full-attention layers' `KvCache` is only written past its length, so the saved
    /// part stays intact; the sliding layers' ring is overwritten once a position reaches the
    /// window, which is tracked: such a restore replays the logged forwards instead.
    fn snapshot(&mut self) -> Result<KvState> {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = Gemma3State {
            model: self.model.clone(),
            log: self.log.clone(),
            clobbered: flag.clone(),
        };
        self.shared = Some(flag);
        Ok(KvState::new(self.cached_len(), st))
    }
    fn restore(&mut self, s: &KvState) -> Result<Restored> {
        use std::sync::atomic::Ordering;
        let st = s.get::<Gemma3State>()?;
        // The live model shares the snapshot's buffers only when the snapshot was taken from
        // it or restored into it by copy; `shared` then points at that snapshot's flag.
        if !st.clobbered.load(Ordering::SeqCst) {
            self.model = st.model.clone();
            self.log = st.log.clone();
            self.shared = Some(st.clobbered.clone());
            return Ok(Restored::Copy);
        }
        self.reset()?;
        for (t, p) in st.log.clone() {
            self.forward(&t, p)?;
        }
        Ok(Restored::Recompute)
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        if pos + tokens.len() > self.window {
            if let Some(f) = &self.shared {
                f.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.log.push((tokens.to_vec(), pos));
        let run = |m: &mut gemma3::Model, t: &[u32], p: usize| -> candle_core::Result<Tensor> {
            m.forward(&input(t, &self.device)?, p)?.flatten_all()
        };
        // candle 0.11's Gemma3 masks a chunk at offset > 0 with `offset + len` key columns,
        // but its sliding layers' ring returns at most `window` keys: a chunk that ends past
        // the window goes one token at a time (exact, as decode is).
        let split = self.token_by_token || (pos > 0 && pos + tokens.len() > self.window);
        let out = if split && tokens.len() > 1 {
            let mut last = Err(candle_core::Error::Msg("empty prompt".into()));
            for (i, t) in tokens.iter().enumerate() {
                last = Ok(run(&mut self.model, std::slice::from_ref(t), pos + i).map_err(wrap)?);
            }
            last
        } else {
            run(&mut self.model, tokens, pos)
        };
        out.map_err(wrap)
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        &self.device
    }
}
