//! Attention (grouped-query, per-sequence caches, RoPE in the family's layout) and LFM2's
//! gated short convolution: the two mixers of a block.

use candle_core::{bail, Device, Result, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use super::{Config, LayerCache, Masks, SeqStep, Weights, Wrong};
use crate::measure::inject::around_op as op;
use crate::models::quantized::parts::{norm, note_append, RopeTables, Span};
use crate::models::quantized::wrong::{head_zero, one_position_off};
use modelbench_measure::traced;

/// RoPE tables for `positions` positions, applied in the family's layout to the first
/// `rot` dimensions of each head (the rest pass through).
#[derive(Debug, Clone)]
pub(super) struct Rope {
    pub(super) tables: RopeTables,
    /// Pairs `2i, 2i+1` (Llama, GLM-4: llama.cpp's NORM) rather than `i, i + d/2` (NeoX).
    pub(super) interleaved: bool,
    rot: usize,
}

impl Rope {
    /// `factors`: llama.cpp's per-pair frequency divisors (`rope_freqs.weight`, Llama 3.x),
    /// one per rotated pair; `scale` multiplies every frequency (linear scaling: 1 / factor).
    /// Pair `i` of the `rot` rotated dimensions turns at `base^(-2i/rot)`, as ggml's rope
    /// with `n_dims = rot` (its angles computed as ggml does: [`RopeTables::new`]).
    pub(super) fn new(
        cfg: &Config,
        factors: Option<&[f32]>,
        positions: usize,
        interleaved: bool,
        dev: &Device,
    ) -> Result<Self> {
        let (rot, base) = (cfg.rot, cfg.rope_base);
        if let Some(f) = factors {
            if f.len() != rot / 2 {
                bail!(
                    "rope_freqs.weight has {} factors, the {rot} rotated dimensions need {}",
                    f.len(),
                    rot / 2
                );
            }
            if let Some(bad) = f.iter().find(|x| !x.is_finite() || **x <= 0.0) {
                bail!("rope_freqs.weight holds {bad}: every factor must be finite and positive");
            }
        }
        Ok(Self {
            tables: RopeTables::new(base, cfg.rope_freq_scale, rot, factors, positions, dev)?,
            interleaved,
            rot,
        })
    }

    /// The same rotation with each angle computed directly, `p * inv_freq`, as
    /// candle-transformers' models compute it (for a like-for-like comparison with them).
    pub(super) fn candle_angles(
        &self,
        cfg: &Config,
        factors: Option<&[f32]>,
        positions: usize,
        dev: &Device,
    ) -> Result<Self> {
        let (rot, base) = (self.rot, cfg.rope_base);
        let inv: Vec<f32> = (0..rot)
            .step_by(2)
            .map(|i| {
                let ff = factors.map_or(1.0, |f| f[i / 2]);
                cfg.rope_freq_scale / (base.powf(i as f32 / rot as f32) * ff)
            })
            .collect();
        Ok(Self {
            tables: RopeTables::direct(&inv, positions, dev)?,
            ..self.clone()
        })
    }

    /// `x`: (b, heads, len, head_dim), contiguous, at positions `pos..pos+len`.
    pub(super) fn apply(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let hd = x.dim(3)?;
        if self.rot == hd {
            return self.tables.apply(x, pos, self.interleaved);
        }
        let r = x.narrow(3, 0, self.rot)?;
        let r = traced!("copy", "rotated dimensions", [r], r.contiguous())?;
        let r = self.tables.apply(&r, pos, self.interleaved)?;
        let pass = x.narrow(3, self.rot, hd - self.rot)?;
        traced!("copy", "rotated and passed dimensions cat", [r, pass], {
            Tensor::cat(&[r, pass], 3)?.contiguous()
        })
    }
}

impl Weights {
    /// in turn: each sequence's queries against its own cache, with its own positions and
    /// mask; returns the output projection's result (1, rows, hidden).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention(
        &self,
        li: usize,
        qk_norm: Option<&(RmsNorm, RmsNorm)>,
        a: &Tensor,
        seqs: &mut [SeqStep<'_>],
        spans: &[Span],
        masks: &Masks,
        proj: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let total = a.dim(1)?;
        let (heads, kv_heads, hd) = (c.heads, c.kv_heads, c.head_dim);
        let rep = heads / kv_heads;
        let scale = 1.0 / (hd as f64).sqrt()
            * if self.wrong == Some(Wrong::AttnScaleUp1Pct) {
                1.01
            } else {
                1.0
            };
        let (q, k, v) = (proj(li, 0, a)?, proj(li, 1, a)?, proj(li, 2, a)?);
        let q = q.reshape((1, total, heads, hd))?;
        let k = k.reshape((1, total, kv_heads, hd))?;
        let v = v.reshape((1, total, kv_heads, hd))?;
        let (q, k) = match qk_norm {
            Some((qn, kn)) if self.wrong != Some(Wrong::SkipQkNorm) => {
                (norm("attn_q_norm", qn, &q)?, norm("attn_k_norm", kn, &k)?)
            }
            _ => (q, k),
        };
        let mut outs = Vec::with_capacity(seqs.len());
        for ((sq, &(start, len, pos)), mask) in seqs.iter_mut().zip(spans).zip(masks) {
            let q = q.narrow(1, start, len)?.transpose(1, 2)?;
            let q = traced!("copy", "q transpose", [q], q.contiguous())?;
            let k = k.narrow(1, start, len)?.transpose(1, 2)?;
            let k = traced!("copy", "k, v transpose", [k], k.contiguous())?;
            let v = v.narrow(1, start, len)?.transpose(1, 2)?;
            let v = traced!("copy", "k, v transpose", [v], v.contiguous())?;
            let q = self.rope.apply(&q, pos)?;
            let k = self.rope.apply(&k, pos)?;
            let LayerCache::Kv(cache) = &mut sq.cache.layers[li] else {
                bail!("a sequence cache of another model (layer {li} is attention)");
            };
            let (k, v) =
                op("kv_cache", || cache.append(&k, &v)).inspect(|_| note_append(cache, &k, &v))?;
            let (k, v) = (
                traced!("copy", "k, v from the cache", [k], k.contiguous())?,
                traced!("copy", "k, v from the cache", [v], v.contiguous())?,
            );
            let (k, v) = if self.wrong == Some(Wrong::KvOneOff) {
                (one_position_off(&k)?, one_position_off(&v)?)
            } else {
                (k, v)
            };
            // Grouped-query attention without copying K/V: the `rep` query heads of one
            // KV head (heads kv*rep .. kv*rep+rep, as repeat_kv orders them) become rows
            // of one matmul.
            let q = q.reshape((1, kv_heads, rep * len, hd))?;
            let kt = k.t()?;
            let att = traced!("attn_qk", "q k^T", [q, kt], q.matmul(kt))?;
            let mut att = traced!("scale", "scores * 1/sqrt(head_dim)", [att, scale], {
                att.affine(*scale, 0.)
            })?;
            if let Some(mask) = mask {
                att = traced!("mask", "scores + mask", [att, mask], {
                    let keys = att.dim(3)?;
                    att.reshape((1, kv_heads, rep, len, keys))?
                        .broadcast_add(mask)?
                        .reshape((1, kv_heads, rep * len, keys))
                })?;
            }
            // On the host on the CPU, as Gemma 3's: candle's CPU softmax sums a row's first
            // len & !31 entries in SIMD lanes and the rest one by one, so a position's
            // weights depend on where its prefill chunk ended (masked keys add exact zeros
            // either way). With prefix-cache reuse, a position computed in turn 1's chunk then
            // read other bits than the same position computed without the cache: Qwen2.5-Coder
            // 0.5B conversations answered 1 of 8 later turns otherwise (docs/serving.md).
            let row_order = att.device().is_cpu() && !self.candle_softmax;
            let att = traced!("softmax", "softmax_last_dim", [att], {
                if row_order {
                    modelbench_kernels::host_ops::softmax_last_dim(att)
                } else {
                    candle_nn::ops::softmax_last_dim(att)
                }
            })?;
            // Summed over fixed blocks of keys (the same bits whatever a chunk's key count),
            // with the row-order softmax; candle's one matmul beside candle's softmax.
            let out = traced!("attn_av", "scores v", [att, v], {
                if row_order {
                    modelbench_kernels::host_ops::attention_values(att, v)
                } else {
                    att.matmul(v)
                }
            })?
            .reshape((1, heads, len, hd))?
            .transpose(1, 2)?;
            outs.push(traced!("copy", "attention output transpose", [out], {
                out.reshape((1, len, heads * hd))
            })?);
        }
        let out = if outs.len() == 1 {
            outs.pop().expect("one sequence")
        } else {
            traced!("copy", "sequences cat", [outs], Tensor::cat(outs, 1))?
        };
        let out = if li == 0 && self.wrong == Some(Wrong::HeadZero) {
            head_zero(&out, heads, hd)?
        } else {
            out
        };
        proj(li, 3, &out)
    }

    /// Layer `li`'s gated short convolution (LFM2) on `a` (1, rows, hidden): `in_proj` gives
    /// B, C and x; per sequence, `B * x` after that sequence's last `taps - 1` inputs (its
    /// cache) goes through the causal depthwise convolution (ggml's `ssm_conv`: output `t` is
    /// `sum_j in[t + j] * taps[j]` over the padded input), and the newest inputs become the
    /// cache; `out_proj` reads `C * conv`.
    pub(super) fn short_conv(
        &self,
        li: usize,
        taps: &Tensor,
        a: &Tensor,
        seqs: &mut [SeqStep<'_>],
        spans: &[Span],
        proj: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let hidden = self.cfg.hidden;
        let n = taps.dim(0)?;
        let bcx = proj(li, 0, a)?;
        let (b, c, x) = (
            bcx.narrow(2, 0, hidden)?,
            bcx.narrow(2, hidden, hidden)?,
            bcx.narrow(2, 2 * hidden, hidden)?,
        );
        let bx = traced!("mul", "B * x", [b, x], b.mul(x))?.squeeze(0)?;
        let reverse = self.wrong == Some(Wrong::ReverseConvTaps);
        let mut outs = Vec::with_capacity(seqs.len());
        for (sq, &(start, len, _)) in seqs.iter_mut().zip(spans) {
            let LayerCache::Conv(state) = &mut sq.cache.layers[li] else {
                bail!("a sequence cache of another model (layer {li} is a convolution)");
            };
            let rows = bx.narrow(0, start, len)?;
            let padded = traced!("copy", "conv state, B * x cat", [state, rows], {
                Tensor::cat(&[state, rows], 0)
            })?;
            let y = traced!("ssm_conv", "short conv", [padded, taps, len], {
                let mut y: Option<Tensor> = None;
                for j in 0..n {
                    let w = taps.narrow(0, if reverse { n - 1 - j } else { j }, 1)?;
                    let t = padded.narrow(0, j, *len)?.broadcast_mul(&w)?;
                    y = Some(match y {
                        None => t,
                        Some(y) => y.add(&t)?,
                    });
                }
                y.ok_or_else(|| candle_core::Error::Msg("a convolution of no taps".into()))
            })?;
            *state = padded.narrow(0, len, n - 1)?.contiguous()?;
            outs.push(y);
        }
        let conv = if outs.len() == 1 {
            outs.pop().expect("one sequence")
        } else {
            traced!("copy", "sequences cat", [outs], Tensor::cat(outs, 0))?
        };
        let conv = conv.unsqueeze(0)?;
        let y = traced!("mul", "C * conv", [c, conv], c.mul(conv))?;
        proj(li, 1, &y)
    }
}
