//! Sliding-window perplexity (the method of HF transformers' perplexity guide): windows of
//! `seq_len` tokens advance by `stride`; each window scores only the tokens no earlier
//! window scored, with the rest of the window as context. The first token of the text has no
//! context and is never scored.
//!
//! The models return last-position logits only, so a window prefills its context in one call
//! and then feeds the scored tokens one at a time, reading each next-token distribution.

use std::time::Instant;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::CausalLm;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Perplexity {
    /// The BOS id put before each window, if any.
    pub bos: Option<u32>,
    pub seq_len: usize,
    pub stride: usize,
    pub windows: usize,
    pub tokens_scored: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
    pub seconds: f64,
    /// Scored tokens per second (context prefill included in the time).
    pub tok_s: f64,
}

/// How a text is cut into scored windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windowing {
    /// HF transformers' sliding window ([`perplexity`]): windows of `seq_len` advancing by
    /// `stride`, every token after the first scored once.
    Sliding { stride: usize },
    /// llama.cpp's `llama-perplexity` default ([`chunked_perplexity`]): non-overlapping chunks
    /// of `seq_len`, the second half of each scored; comparable number for number with it.
    LlamaCpp,
}

impl Windowing {
    /// Short name for records and ids: `sliding` or `llama-cpp`.
    pub fn name(&self) -> &'static str {
        match self {
            Windowing::Sliding { .. } => "sliding",
            Windowing::LlamaCpp => "llama-cpp",
        }
    }
}

/// Where a long perplexity run is: reported after every window (chunk) to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub windows_done: usize,
    pub windows: usize,
    pub tokens_scored: usize,
    /// Tokens the whole run will score.
    pub tokens_total: usize,
    pub elapsed_s: f64,
}

impl Progress {
    /// Scored tokens per second so far (context prefill included in the time).
    pub fn tok_s(&self) -> f64 {
        self.tokens_scored as f64 / self.elapsed_s.max(1e-9)
    }

    /// Seconds left at the rate so far.
    pub fn eta_s(&self) -> f64 {
        self.tokens_total.saturating_sub(self.tokens_scored) as f64 / self.tok_s().max(1e-9)
    }

    /// One line for stderr: `window 3/10, 765/2550 tokens, 41.2 tok/s, 18.6 s, ETA 43.1 s`.
    pub fn line(&self) -> String {
        format!(
            "window {}/{}, {}/{} tokens, {:.1} tok/s, {:.1} s, ETA {:.1} s",
            self.windows_done,
            self.windows,
            self.tokens_scored,
            self.tokens_total,
            self.tok_s(),
            self.elapsed_s,
            self.eta_s()
        )
    }
}

/// A progress callback (see [`Progress`]).
pub type OnProgress<'a> = Option<&'a mut dyn FnMut(&Progress)>;

fn nll(logits: &candle_core::Tensor, target: u32) -> Result<f64> {
    let l = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    let t = l.get(target as usize).ok_or_else(|| {
        Error::Report(format!(
            "token id {target} is outside the model's vocabulary"
        ))
    })?;
    Ok(lse - *t as f64)
}

/// `bos`: a token to put before every window's context (models such as Gemma are trained to
/// always see one; it is not scored and does not count toward `seq_len`).
pub fn perplexity(
    m: &mut dyn CausalLm,
    ids: &[u32],
    seq_len: usize,
    stride: usize,
    bos: Option<u32>,
) -> Result<Perplexity> {
    perplexity_with(m, ids, seq_len, stride, bos, None)
}

/// [`perplexity`] reporting progress after every window.
pub fn perplexity_with(
    m: &mut dyn CausalLm,
    ids: &[u32],
    seq_len: usize,
    stride: usize,
    bos: Option<u32>,
    mut progress: OnProgress<'_>,
) -> Result<Perplexity> {
    if seq_len < 2 || stride == 0 || stride > seq_len {
        return Err(Error::Report(format!(
            "--seq-len {seq_len} / --stride {stride}: need seq-len >= 2 and 1 <= stride <= seq-len"
        )));
    }
    if ids.len() < 2 {
        return Err(Error::Report(
            "the text encodes to fewer than 2 tokens: nothing to score".into(),
        ));
    }
    let t0 = Instant::now();
    let (mut total, mut scored, mut windows, mut prev_end) = (0f64, 0usize, 0usize, 0usize);
    // Windows begin at 0, stride, 2 stride, ... until one reaches the end of the text.
    let n_windows = if ids.len() <= seq_len {
        1
    } else {
        (ids.len() - seq_len).div_ceil(stride) + 1
    };
    let mut begin = 0;
    while prev_end < ids.len() {
        let end = (begin + seq_len).min(ids.len());
        // Targets: positions prev_end..end (never position 0).
        let first_target = prev_end.max(begin + 1);
        let mut ctx: Vec<u32> = bos.into_iter().collect();
        ctx.extend_from_slice(&ids[begin..first_target]);
        m.reset()?;
        let mut logits = super::generate::forward(m, &ctx, 0)?;
        let mut pos = ctx.len();
        for t in first_target..end {
            total += nll(&logits, ids[t])?;
            scored += 1;
            if t + 1 < end {
                logits = super::generate::forward(m, &ids[t..t + 1], pos)?;
                pos += 1;
            }
        }
        windows += 1;
        prev_end = end;
        begin += stride;
        if let Some(f) = progress.as_mut() {
            f(&Progress {
                windows_done: windows,
                windows: n_windows.max(windows),
                tokens_scored: scored,
                tokens_total: ids.len() - 1,
                elapsed_s: t0.elapsed().as_secs_f64(),
            });
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let mean_nll = total / scored as f64;
    Ok(Perplexity {
        bos,
        seq_len,
        stride,
        windows,
        tokens_scored: scored,
        mean_nll,
        perplexity: mean_nll.exp(),
        seconds,
        tok_s: scored as f64 / seconds,
    })
}

/// Perplexity as llama.cpp's `llama-perplexity` computes it (its default mode), so the two
/// can be compared number for number: non-overlapping chunks of `n_ctx` ids (the last
/// `len % n_ctx` ids are never used); the first id of every chunk is REPLACED by `bos`; each
/// chunk starts from an empty cache at position 0; the logits at positions
/// `n_ctx/2 .. n_ctx-2` are scored against the next id (`n_ctx - n_ctx/2 - 1` tokens a chunk).
/// `ids` must be the tokenization of the whole text with `<bos>` first, as llama.cpp makes it
/// for a model whose tokenizer adds one; for a model without `<bos>` (`bos` None) llama.cpp
/// replaces nothing, and neither does this.
pub fn chunked_perplexity(
    m: &mut dyn CausalLm,
    ids: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
) -> Result<Perplexity> {
    chunked_perplexity_with(m, ids, n_ctx, bos, None)
}

/// [`chunked_perplexity`] reporting progress after every chunk.
pub fn chunked_perplexity_with(
    m: &mut dyn CausalLm,
    ids: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    progress: OnProgress<'_>,
) -> Result<Perplexity> {
    if n_ctx < 4 || ids.len() < 2 * n_ctx {
        return Err(Error::Report(format!(
            "chunked perplexity needs n_ctx >= 4 and at least 2 x n_ctx ids ({} given, n_ctx {n_ctx})",
            ids.len()
        )));
    }
    let t0 = Instant::now();
    let (mut total, mut scored) = (0f64, 0usize);
    let chunks = ids.len() / n_ctx;
    for_each_scored_position(
        m,
        ids,
        n_ctx,
        bos,
        chunks,
        progress,
        |_, _, logits, target| {
            total += nll(logits, target)?;
            scored += 1;
            Ok(())
        },
    )?;
    let seconds = t0.elapsed().as_secs_f64();
    let mean_nll = total / scored as f64;
    Ok(Perplexity {
        bos,
        seq_len: n_ctx,
        stride: n_ctx,
        windows: chunks,
        tokens_scored: scored,
        mean_nll,
        perplexity: mean_nll.exp(),
        seconds,
        tok_s: scored as f64 / seconds,
    })
}

/// llama-perplexity's positions ([`chunked_perplexity`]'s windowing) over the first `chunks`
/// chunks of `ids`: calls `f(chunk, position, logits, next id)` for every scored position
/// (`n_ctx/2 ..= n_ctx-2` of each chunk, in order), with the model's logits there. The KL
/// divergence gate reads the whole distribution at the same positions llama.cpp saves.
pub fn for_each_scored_position(
    m: &mut dyn CausalLm,
    ids: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    chunks: usize,
    mut progress: OnProgress<'_>,
    mut f: impl FnMut(usize, usize, &candle_core::Tensor, u32) -> Result<()>,
) -> Result<()> {
    if n_ctx < 4 || ids.len() < chunks * n_ctx {
        return Err(Error::Report(format!(
            "{chunks} chunks of {n_ctx} need n_ctx >= 4 and {} ids ({} given)",
            chunks * n_ctx,
            ids.len()
        )));
    }
    let t0 = Instant::now();
    let first = n_ctx / 2;
    let per_chunk = n_ctx - first - 1;
    for k in 0..chunks {
        let mut w = ids[k * n_ctx..(k + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            w[0] = b;
        }
        m.reset()?;
        // Context up to position `first` in one call gives the logits at `first`; then one
        // token at a time (the models return last-position logits only).
        let mut logits = super::generate::forward(m, &w[..=first], 0)?;
        for j in first..n_ctx - 1 {
            f(k, j, &logits, w[j + 1])?;
            if j + 1 < n_ctx - 1 {
                logits = super::generate::forward(m, &w[j + 1..j + 2], j + 1)?;
            }
        }
        if let Some(p) = progress.as_mut() {
            p(&Progress {
                windows_done: k + 1,
                windows: chunks,
                tokens_scored: (k + 1) * per_chunk,
                tokens_total: chunks * per_chunk,
                elapsed_s: t0.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(())
}
