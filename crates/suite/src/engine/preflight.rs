//! Memory preflight: before any weights load, an estimate of the peak bytes a prompt of P
//! tokens in a context of C positions needs, compared with the memory available, so a run
//! that cannot fit is refused with one line instead of being killed by the OOM killer.
//!
//! The estimate (bytes; `b` = the dtype's size, 4 for GGUF models whose activations and KV
//! cache are f32):
//! - weights: the model's weight bytes (parameters x b; a GGUF file's tensor bytes);
//! - KV cache: (layers + 1) x 2 x kv_heads x head_dim x C x b: every layer's K and V, plus
//!   one layer's transient copy while a cache grows by `Tensor::cat`;
//! - attention scores of the largest forward (T = the prompt, or the chunk of `chunked:N`):
//!   heads x T x P x 4 x 3 (f32 scores, their masked copy and the softmax live together);
//!   0 for `flash` (tiles on chip);
//! - activations of that forward: T x (4 x hidden + 3 x intermediate) x b;
//! - logits: vocab x 4 (candle's models compute the last position only).

use candle_core::{DType, Device};

use crate::engine::scenario::Scenario;
use crate::error::{Error, Result};
use crate::measure::memory;
use crate::models::attention::Attention;
use crate::models::sources::Resolved;
use crate::models::{ModelMeta, Weights};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub attention_scores: u64,
    pub activations: u64,
    pub logits: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.attention_scores + self.activations + self.logits
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (weights {}, KV cache {}, attention scores {}, activations {}, logits {})",
            gib(self.total()),
            gib(self.weights),
            gib(self.kv_cache),
            gib(self.attention_scores),
            gib(self.activations),
            gib(self.logits)
        )
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// The peak estimate of a prompt of `prompt` tokens in a context of `context` positions.
pub fn estimate(meta: &ModelMeta, prompt: usize, context: usize, att: Attention) -> Estimate {
    let b = if meta.dtype.starts_with("gguf-") {
        4
    } else {
        match meta.dtype.as_str() {
            "f16" | "bf16" => 2,
            "f64" => 8,
            _ => 4,
        }
    } as u64;
    let t = att.chunk_of(prompt) as u64;
    let (p, c) = (prompt as u64, context as u64);
    let kv = (meta.layers as u64 + 1) * 2 * (meta.kv_heads * meta.head_dim) as u64 * c * b;
    let scores = match att {
        Attention::Flash => 0,
        _ => meta.heads as u64 * t * p * 4 * 3,
    };
    Estimate {
        weights: meta.weight_bytes,
        kv_cache: kv,
        attention_scores: scores,
        activations: t * (4 * meta.hidden + 3 * meta.intermediate) as u64 * b,
        logits: meta.vocab as u64 * 4,
    }
}

/// A model's meta from its config or GGUF header alone (no weights read).
pub fn meta_of(res: &Resolved, dtype: DType, context_cap: usize) -> Result<ModelMeta> {
    match &res.weights {
        Weights::Gguf(p) => {
            let g = res.gguf_source()?;
            Ok(crate::models::sources::gguf::describe_impl(
                p,
                &g.header,
                Some(context_cap),
                g.imp,
            )?)
        }
        _ => Ok(crate::models::describe(
            res.family,
            &res.config,
            &res.config_path,
            dtype,
            Some(context_cap),
        )?),
    }
}

/// Memory a run on `device` can use: MemAvailable on the CPU, NVML's free bytes on CUDA
/// (None: not known, then nothing is refused). Names where the number came from.
pub fn available(device: &Device) -> Option<(u64, &'static str)> {
    if device.is_cuda() {
        memory::device_available_bytes().map(|b| (b, "free device memory (NVML)"))
    } else {
        memory::available_bytes().map(|b| (b, "MemAvailable of /proc/meminfo"))
    }
}

/// Refuses (one line) a run of `what` (prompt `prompt` in `context` positions) whose
/// estimate exceeds `avail`.
pub fn check_fits(
    what: &str,
    label: &str,
    e: &Estimate,
    att: Attention,
    avail: Option<(u64, &'static str)>,
) -> Result<()> {
    let Some((avail, source)) = avail else {
        return Ok(());
    };
    if e.total() <= avail {
        return Ok(());
    }
    let hint = match att {
        Attention::Eager => {
            "; MODELBENCH_ATTENTION=chunked (or --attention chunked) bounds the attention scores"
        }
        _ => "; use a shorter prompt or a smaller model",
    };
    Err(Error::Scenario {
        scenario: what.to_string(),
        model: label.to_string(),
        reason: format!(
            "memory preflight: needs about {} at peak with {} attention but only {} is available ({source}){hint}",
            e.describe(),
            att.name(),
            gib(avail)
        ),
    })
}

/// The preflight of every scenario of a plan on one resolved model.
pub fn check_scenarios(
    res: &Resolved,
    scenarios: &[Scenario],
    dtype: DType,
    device: &Device,
    att: Attention,
) -> Result<()> {
    let cap = scenarios
        .iter()
        .map(Scenario::context_needed)
        .max()
        .unwrap_or(1);
    let meta = meta_of(res, dtype, cap)?;
    let avail = available(device);
    for s in scenarios {
        let e = estimate(&meta, s.prompt_tokens, s.context_needed(), att);
        check_fits(&s.name, &res.label, &e, att, avail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::sources::{resolve, ModelRef};

    fn llama_1b() -> ModelMeta {
        let res = resolve(&ModelRef::parse("synthetic:llama-3.2-1b").unwrap(), "l").unwrap();
        meta_of(&res, DType::F32, 16400).unwrap()
    }

    /// Llama 3.2 1B in f32, long-16k (prompt 16384, context 16400): 16 layers, 32 heads, 8 KV
    /// heads x 64 dims, hidden 2048, intermediate 8192, vocab 128256, 1,235,814,400
    /// parameters (tied embeddings).
    #[test]
    fn llama_1b_long_16k_by_hand() {
        let m = llama_1b();
        assert_eq!(m.params, 1_235_814_400);
        let e = estimate(&m, 16384, 16400, Attention::Eager);
        assert_eq!(e.weights, 4_943_257_600);
        // 17 x 2 x 8 x 64 x 16400 x 4
        assert_eq!(e.kv_cache, 1_141_964_800);
        // 32 heads x 16384 x 16384 x 4 bytes x 3
        assert_eq!(e.attention_scores, 103_079_215_104);
        // 16384 x (4 x 2048 + 3 x 8192) x 4
        assert_eq!(e.activations, 2_147_483_648);
        assert_eq!(e.logits, 513_024);
        assert_eq!(e.total(), 111_312_434_176);
        // chunked:512: scores 32 x 512 x 16384 x 4 x 3, activations 512 x 32768 x 4
        let c = estimate(&m, 16384, 16400, Attention::Chunked(512));
        assert_eq!(c.attention_scores, 3_221_225_472);
        assert_eq!(c.activations, 67_108_864);
        assert_eq!(
            c.total(),
            4_943_257_600 + 1_141_964_800 + 3_221_225_472 + 67_108_864 + 513_024
        );
        // flash: no score matrix
        assert_eq!(
            estimate(&m, 16384, 16400, Attention::Flash).attention_scores,
            0
        );
    }

    #[test]
    fn refuses_with_one_line_naming_estimate_and_available() {
        let m = llama_1b();
        let e = estimate(&m, 16384, 16400, Attention::Eager);
        let avail = Some((24 * (1u64 << 30), "MemAvailable of /proc/meminfo"));
        let err = check_fits(
            "long-16k",
            "synthetic:llama-3.2-1b",
            &e,
            Attention::Eager,
            avail,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(
            err.contains("103.67 GiB") && err.contains("24.00 GiB"),
            "{err}"
        );
        assert!(err.contains("long-16k") && err.contains("chunked"), "{err}");
        let c = estimate(&m, 16384, 16400, Attention::Chunked(512));
        check_fits("long-16k", "l", &c, Attention::Chunked(512), avail).unwrap();
        check_fits("long-16k", "l", &e, Attention::Eager, None).unwrap();
    }
}
