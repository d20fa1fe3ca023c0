//! The attention backend a model runs (`MODELBENCH_ATTENTION` / `--attention`), and chunked
//! prefill: a multi-token forward fed in chunks of C tokens at increasing positions, so the
//! attention scores of a chunk are C x context instead of T x T (the memory-efficient CPU
//! path for long prompts). Every family the suite loads takes a chunk at position > 0:
//! - candle-transformers 0.11.1 llama builds its mask with `build_causal_mask(len, index_pos)`;
//! - qwen3 / qwen3_moe pass the offset to candle-nn's CPU flash kernel
//!   (`AttnMask::causal_with_offset`) and to `build_additive_causal_mask` on GPUs;
//! - gemma3 (float) builds a `(len, offset + len)` mask, but its sliding layers' ring returns
//!   at most `sliding_window` keys: a chunk is exact only while it ends within the window, so
//!   past it the adapter feeds the chunk one token at a time (see `Gemma3Lm`);
//! - quantized llama / qwen3 / gemma3 (candle's and the project's own) mask with the offset.

use std::fmt;

use candle_core::{Device, Tensor};

use super::{CausalLm, KvState, ModelMeta, Restored};
use crate::error::{Error, Result};

/// Default chunk of `chunked`.
pub const DEFAULT_CHUNK: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attention {
    /// Each family's candle-transformers attention, the whole prompt in one forward.
    #[default]
    Eager,
    /// candle-flash-attn (CUDA builds with `--features flash-attn`).
    Flash,
    /// The prompt in chunks of this many tokens at increasing positions.
    Chunked(usize),
}

impl Attention {
    pub const ALLOWED: &'static str =
        "`eager`, `flash` (CUDA builds with --features flash-attn), `chunked` (512-token chunks) or `chunked:N`";

    pub fn parse(s: &str) -> std::result::Result<Attention, String> {
        match s.trim() {
            "eager" => Ok(Attention::Eager),
            "flash" => Ok(Attention::Flash),
            "chunked" => Ok(Attention::Chunked(DEFAULT_CHUNK)),
            other => match other.strip_prefix("chunked:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Attention::Chunked(n)),
                Some(_) => Err(format!("`{other}`: the chunk must be a positive integer")),
                None => Err(format!("unknown attention backend `{other}`")),
            },
        }
    }

    pub fn name(&self) -> String {
        match self {
            Attention::Eager => "eager".into(),
            Attention::Flash => "flash".into(),
            Attention::Chunked(n) => format!("chunked:{n}"),
        }
    }

    /// Whether this build can run the backend on `device` (a one-line reason when not).
    /// candle-transformers chooses flash attention at compile time (`flash-attn` feature), so
    /// a flash-attn build on CUDA cannot run eager, and only such a build can run flash.
    pub fn check(&self, device: &Device) -> std::result::Result<(), String> {
        let flash_build = cfg!(feature = "flash-attn");
        match self {
            Attention::Flash if !flash_build => Err("flash needs a CUDA build with `--features flash-attn` (candle-flash-attn); this build has no flash-attn".into()),
            Attention::Flash if !device.is_cuda() => Err("flash runs on CUDA only (candle-flash-attn); use eager or chunked on the CPU".into()),
            Attention::Eager | Attention::Chunked(_) if flash_build && device.is_cuda() => Err(format!("{}: this build has `--features flash-attn`, with which candle-transformers' models use flash attention on CUDA (a compile-time switch); use flash, or build without the feature", self.name())),
            _ => Ok(()),
        }
    }

    /// Tokens one forward call holds during a prefill of `prompt` tokens.
    pub fn chunk_of(&self, prompt: usize) -> usize {
        match self {
            Attention::Chunked(n) => (*n).min(prompt.max(1)),
            _ => prompt.max(1),
        }
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Sets the backend of a loaded model: its meta names it, and `chunked` wraps the model so a
/// multi-token forward is fed chunk by chunk.
pub fn apply(model: Box<dyn CausalLm>, att: Attention) -> Result<Box<dyn CausalLm>> {
    att.check(model.device()).map_err(|reason| {
        Error::knob(
            "MODELBENCH_ATTENTION",
            att.name(),
            reason,
            Attention::ALLOWED,
        )
    })?;
    let mut meta = model.meta().clone();
    meta.provenance.attention = att.name();
    let chunk = match att {
        Attention::Chunked(n) => n,
        _ => usize::MAX,
    };
    Ok(Box::new(WithAttention {
        inner: model,
        chunk,
        meta,
    }))
}

/// A model with its backend named in its meta; multi-token forwards are fed in chunks of
/// `chunk` tokens (usize::MAX: one call).
pub struct WithAttention {
    inner: Box<dyn CausalLm>,
    chunk: usize,
    meta: ModelMeta,
}

impl CausalLm for WithAttention {
    fn reset(&mut self) -> Result<()> {
        self.inner.reset()
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let mut last = None;
        let mut p = pos;
        for c in tokens.chunks(self.chunk) {
            last = Some(self.inner.forward(c, p)?);
            p += c.len();
        }
        last.ok_or_else(|| Error::Model("forward of zero tokens".into()))
    }
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn depth(&self) -> usize {
        self.inner.depth()
    }
    fn snapshot(&mut self) -> Result<KvState> {
        self.inner.snapshot()
    }
    fn restore(&mut self, s: &KvState) -> Result<Restored> {
        self.inner.restore(s)
    }
    fn batched(
        &mut self,
        o: &super::batched::BatchOptions,
    ) -> Option<Result<Box<dyn super::batched::StepModel>>> {
        self.inner.batched(o)
    }
    fn own_weights(&self) -> Option<Box<dyn std::any::Any + Send>> {
        self.inner.own_weights()
    }
    fn match_ggml_gelu(&mut self) -> bool {
        self.inner.match_ggml_gelu()
    }
    fn match_candle_arithmetic(&mut self) -> bool {
        self.inner.match_candle_arithmetic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backends() {
        assert_eq!(Attention::parse("eager"), Ok(Attention::Eager));
        assert_eq!(Attention::parse("chunked"), Ok(Attention::Chunked(512)));
        assert_eq!(Attention::parse("chunked:128"), Ok(Attention::Chunked(128)));
        assert!(Attention::parse("chunked:0").is_err());
        assert!(Attention::parse("sdpa").is_err());
        assert_eq!(Attention::Chunked(128).chunk_of(16384), 128);
        assert_eq!(Attention::Chunked(128).chunk_of(64), 64);
        assert_eq!(Attention::Eager.chunk_of(16384), 16384);
        if !cfg!(feature = "flash-attn") {
            let e = Attention::Flash.check(&Device::Cpu).unwrap_err();
            assert!(e.contains("--features flash-attn"), "{e}");
        }
        assert!(Attention::Chunked(64).check(&Device::Cpu).is_ok());
    }
}
