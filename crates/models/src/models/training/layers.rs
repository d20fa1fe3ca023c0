//! Pieces the suite's own trainable models share (PSANN-LM in psann/, the architecture
//! sweep's backbones in backbone.rs): RMSNorm, softplus, the RoPE tables with the causal mask
//! and their per-length cache. All are built from differentiable candle ops (candle-nn's
//! fused rms_norm / rope cut the autograd graph), so the same code trains.

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor, D};

/// RMSNorm, eps inside the sqrt: `x * scale / sqrt(mean(x^2) + eps)`, eps 1e-6.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    scale: Tensor,
}

impl RmsNorm {
    pub fn new(scale: Tensor) -> Self {
        RmsNorm { scale }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + 1e-6)?.sqrt()?)?
            .broadcast_mul(&self.scale)
    }
}

/// `softplus(x) = ln(1 + e^x)` from differentiable ops (no threshold branch: the inputs the
/// models feed it are small).
pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.exp()? + 1.0)?.log()
}

/// Per-forward tensors shared by the attention layers: the RoPE tables and the causal mask
/// of one sequence length.
#[derive(Clone)]
pub struct Ctx {
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

impl Ctx {
    /// Interleaved RoPE (base 10000, full head dim) for positions 0..t, and the T x T mask
    /// (-inf above the diagonal), computed in f32 and stored in `dtype`. Built on the device
    /// (positions and the mask from `arange`), so nothing of size T x T crosses from the host.
    pub fn new(t: usize, head_dim: usize, dtype: DType, dev: &Device) -> candle_core::Result<Ctx> {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / head_dim as f32))
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), dev)?;
        let idx = Tensor::arange(0u32, t as u32, dev)?;
        let ang = idx
            .to_dtype(DType::F32)?
            .reshape((t, 1))?
            .broadcast_mul(&inv)?;
        // mask[row][col] = -inf where col > row (the future), else 0.
        let future = idx.reshape((1, t))?.broadcast_gt(&idx.reshape((t, 1))?)?;
        let mask = future.where_cond(
            &Tensor::full(f32::NEG_INFINITY, (t, t), dev)?,
            &Tensor::zeros((t, t), DType::F32, dev)?,
        )?;
        Ok(Ctx {
            cos: ang.cos()?.to_dtype(dtype)?,
            sin: ang.sin()?.to_dtype(dtype)?,
            mask: mask.to_dtype(dtype)?,
        })
    }

    /// Interleaved RoPE on (B, heads, T, head_dim).
    pub fn rope(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::rotary_emb::rope_i_slow(x, &self.cos, &self.sin)
    }

    /// The (T, T) causal mask, to add to attention scores.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }
}

/// (B, T, heads * h) -> (B, heads, T, h), contiguous.
fn split_heads(y: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, t, d) = y.dims3()?;
    y.reshape((b, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// The queries, keys and values of multi-head attention over x (B, T, d): each projection
/// split into `heads` heads (B, heads, T, d / heads), RoPE on the queries and keys.
pub fn rope_qkv<M: Module>(
    x: &Tensor,
    (q, k, v): (&M, &M, &M),
    heads: usize,
    ctx: &Ctx,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    Ok((
        ctx.rope(&split_heads(&q.forward(x)?, heads)?)?,
        ctx.rope(&split_heads(&k.forward(x)?, heads)?)?,
        split_heads(&v.forward(x)?, heads)?,
    ))
}

/// The [`Ctx`] of a model's last sequence length: repeated forwards of one shape build it
/// once (a benchmark's warm-up builds it, so it stays outside the timed region).
#[derive(Default)]
pub struct CtxCache {
    last: Mutex<Option<(usize, Ctx)>>,
}

impl CtxCache {
    /// The tables and mask for sequence length `t` (see [`Ctx::new`]), built when `t` is new.
    pub fn get(
        &self,
        t: usize,
        head_dim: usize,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Ctx> {
        let mut last = self.last.lock().expect("not poisoned");
        if let Some((lt, c)) = last.as_ref() {
            if *lt == t {
                return Ok(c.clone());
            }
        }
        let c = Ctx::new(t, head_dim, dtype, dev)?;
        *last = Some((t, c.clone()));
        Ok(c)
    }
}
