//! The four backbone families of the architecture sweep, built only from
//! differentiable candle ops so one train step (forward, loss over `horizons` next-token
//! heads, backward, AdamW) runs on every family:
//!
//! - `dense`: pre-norm transformer blocks (RMSNorm, causal multi-head attention with
//!   interleaved RoPE, SwiGLU feed-forward of width `ffn`);
//! - `mixture` (the original sweep's `omni_mixture`): the same blocks with the suite's MoE block
//!   ([`MoeBlock`], top-k routing over `experts` SwiGLU experts of width `ffn / top_k`, so a
//!   token's active feed-forward parameters equal the dense block's) as the feed-forward;
//!   routing weights are gathered from a differentiable softmax, so the router trains too;
//! - `state_space`: Mamba-style selective state-space blocks (in-projection to 2 x d_inner,
//!   causal depthwise conv of width 4, SiLU, input-dependent dt / B / C, a diagonal state of
//!   `d_state` per channel, SiLU gate, out-projection), after candle-transformers' `mamba.rs`;
//!   the scan runs sequentially over T: O(T * d_inner * d_state) work per layer in T steps;
//! - `hybrid` (the original sweep's `hybrid_transformer`): state-space blocks with a transformer block
//!   (attention + SwiGLU) as every `attention_every`-th layer (layers `attention_every - 1`,
//!   `2 * attention_every - 1`, ...; the last layer when the stack is shorter than that), so
//!   attention : state-space = 1 : attention_every - 1.
//!
//! `horizons` is the number of future tokens each position predicts: head k (k = 0..H) reads
//! the final hidden state at position t and predicts token t + 1 + k (multi-token prediction
//! with independent linear heads on a shared trunk); the loss is the mean of the H
//! cross-entropies.

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{linear, linear_no_bias, AdamW, Init, Linear, Optimizer, ParamsAdamW, VarBuilder};
use serde::Serialize;

use super::layers::{rope_qkv, softplus, Ctx, CtxCache, RmsNorm};
use crate::error::{Error, Result};
use crate::models::moe::{top_k_routing, MoeBlock, MoeConfig, SwiGlu};
use crate::util::fill::Filler;

/// A backbone family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Dense,
    Mixture,
    StateSpace,
    Hybrid,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Dense,
        Family::Mixture,
        Family::StateSpace,
        Family::Hybrid,
    ];
    pub const ALLOWED: &'static str =
        "dense, mixture (or omni_mixture), state_space, hybrid (or hybrid_transformer)";

    pub fn name(self) -> &'static str {
        match self {
            Family::Dense => "dense",
            Family::Mixture => "mixture",
            Family::StateSpace => "state_space",
            Family::Hybrid => "hybrid",
        }
    }

    /// A family by its name or the original sweep's (`omni_mixture`, `hybrid_transformer`).
    pub fn parse(s: &str) -> Option<Family> {
        match s.trim() {
            "dense" | "transformer" => Some(Family::Dense),
            "mixture" | "omni_mixture" | "moe" => Some(Family::Mixture),
            "state_space" | "ssm" | "mamba" => Some(Family::StateSpace),
            "hybrid" | "hybrid_transformer" => Some(Family::Hybrid),
            _ => None,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One model of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BackboneConfig {
    pub family: Family,
    pub vocab: usize,
    pub d_model: usize,
    pub depth: usize,
    pub heads: usize,
    /// Future tokens predicted per position (1 = ordinary next-token LM).
    pub horizons: usize,
    /// SwiGLU width of the dense feed-forward (8/3 d_model rounded up to 8 when 0 is given).
    pub ffn: usize,
    /// Mixture: experts and top-k (each expert is ffn / top_k wide).
    pub experts: usize,
    pub top_k: usize,
    /// State-space: state size per channel, d_inner = expand * d_model, conv width.
    pub d_state: usize,
    pub expand: usize,
    pub d_conv: usize,
    /// Hybrid: one transformer layer in every `attention_every` layers.
    pub attention_every: usize,
}

impl BackboneConfig {
    /// Defaults for everything but the grid's axes: 8 experts top-2, d_state 16, expand 2,
    /// conv 4, one attention layer in 4 (hybrid), head dim 64 (at least one head).
    pub fn new(
        family: Family,
        vocab: usize,
        d_model: usize,
        depth: usize,
        horizons: usize,
    ) -> Self {
        BackboneConfig {
            family,
            vocab,
            d_model,
            depth,
            heads: (d_model / 64).max(1),
            horizons,
            ffn: (8 * d_model / 3).div_ceil(8) * 8,
            experts: 8,
            top_k: 2,
            d_state: 16,
            expand: 2,
            d_conv: 4,
            attention_every: 4,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.vocab < 2 || self.d_model == 0 || self.depth == 0 || self.horizons == 0 {
            return Err("vocab >= 2, model dim, depth and horizons >= 1 are needed".into());
        }
        if self.heads == 0
            || !self.d_model.is_multiple_of(self.heads)
            || !(self.d_model / self.heads).is_multiple_of(2)
        {
            return Err(format!(
                "model dim {} must split into {} heads of an even size",
                self.d_model, self.heads
            ));
        }
        if self.family == Family::Mixture {
            if self.top_k == 0 || self.top_k > self.experts {
                return Err(format!(
                    "top_k {} must be in 1..=experts {}",
                    self.top_k, self.experts
                ));
            }
            if self.ffn < self.top_k {
                return Err("ffn must be at least top_k".into());
            }
        }
        if self.d_state == 0 || self.expand == 0 || self.d_conv == 0 || self.attention_every == 0 {
            return Err("d_state, expand, d_conv and attention_every must be >= 1".into());
        }
        Ok(())
    }

    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    pub fn dt_rank(&self) -> usize {
        self.d_model.div_ceil(16)
    }

    /// Whether layer `i` is a transformer (attention) layer.
    pub fn is_attention(&self, i: usize) -> bool {
        match self.family {
            Family::Dense | Family::Mixture => true,
            Family::StateSpace => false,
            Family::Hybrid => {
                let every = self.attention_every;
                (i + 1).is_multiple_of(every) || (self.depth < every && i + 1 == self.depth)
            }
        }
    }

    pub fn attention_layers(&self) -> usize {
        (0..self.depth).filter(|&i| self.is_attention(i)).count()
    }

    fn expert_width(&self) -> usize {
        self.ffn / self.top_k
    }

    /// Matmul FLOPs of one forward per token at sequence length `t` (2 per multiply-add):
    /// every linear layer a token passes through (for mixture: the router and its top-k
    /// experts), QK^T and PV over all T positions (the full causal matrix is computed), and
    /// the H heads. The state-space scan's elementwise work is not counted.
    pub fn forward_flops_per_token(&self, t: usize) -> f64 {
        let (d, f, v) = (self.d_model as f64, self.ffn as f64, self.vocab as f64);
        let mut fl = 0.0;
        for i in 0..self.depth {
            if self.is_attention(i) {
                fl += 2.0 * 4.0 * d * d + 4.0 * t as f64 * d;
                fl += match self.family {
                    Family::Mixture => {
                        2.0 * (d * self.experts as f64
                            + self.top_k as f64 * 3.0 * d * self.expert_width() as f64)
                    }
                    _ => 2.0 * 3.0 * d * f,
                };
            } else {
                let (e, r, n) = (
                    self.d_inner() as f64,
                    self.dt_rank() as f64,
                    self.d_state as f64,
                );
                fl += 2.0 * (d * 2.0 * e + e * (r + 2.0 * n) + r * e + e * d);
            }
        }
        fl + 2.0 * self.horizons as f64 * d * v
    }
}

/// The RMSNorm of a layer, its scale (ones) from the var builder.
fn rms_norm(d: usize, vb: VarBuilder) -> candle_core::Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get_with_hints(
        d,
        "scale",
        Init::Const(1.0),
    )?))
}

/// The MoE feed-forward with gradients to the router: the top-k choice is made on the host
/// from the probabilities (as [`MoeBlock::forward`] does), the k weights are gathered from
/// the differentiable softmax and renormalised, and each expert runs once on its rows.
fn moe_forward(m: &MoeBlock, x: &Tensor) -> candle_core::Result<Tensor> {
    let (t, h) = x.dims2()?;
    let probs = candle_nn::ops::softmax(&m.router().forward(x)?, D::Minus1)?;
    let host = probs.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let routing = top_k_routing(&host, m.cfg.top_k, false);
    let e_n = m.cfg.num_experts;
    let mut sel = vec![0f32; t * e_n];
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); e_n];
    for (tok, es) in routing.experts.iter().enumerate() {
        for &e in es {
            sel[tok * e_n + e] = 1.0;
            rows[e].push(tok as u32);
        }
    }
    let dev = x.device();
    let sel = Tensor::from_vec(sel, (t, e_n), dev)?.to_dtype(probs.dtype())?;
    let kept = (&probs * &sel)?;
    let w = kept.broadcast_div(&kept.sum_keepdim(D::Minus1)?)?; // (T, E), zero off the top-k
    let mut out = Tensor::zeros((t, h), x.dtype(), dev)?;
    for (e, r) in rows.iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        let idx = Tensor::new(r.as_slice(), dev)?;
        let y = m.expert(e).forward(&x.index_select(&idx, 0)?)?;
        let we = w.narrow(1, e, 1)?.contiguous()?.index_select(&idx, 0)?;
        out = out.index_add(&idx, &y.broadcast_mul(&we)?, 0)?;
    }
    Ok(out)
}

enum Ffn {
    Dense(SwiGlu),
    Moe(MoeBlock),
}

struct AttnLayer {
    norm1: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    norm2: RmsNorm,
    ffn: Ffn,
}

impl AttnLayer {
    fn new(cfg: &BackboneConfig, moe: bool, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let ffn = if moe {
            let mc = MoeConfig::new(d, cfg.expert_width(), cfg.experts, cfg.top_k);
            Ffn::Moe(MoeBlock::new(mc, vb.pp("moe"))?)
        } else {
            Ffn::Dense(SwiGlu::new(d, cfg.ffn, vb.pp("mlp"))?)
        };
        Ok(AttnLayer {
            norm1: rms_norm(d, vb.pp("norm1"))?,
            q: linear_no_bias(d, d, vb.pp("q_proj"))?,
            k: linear_no_bias(d, d, vb.pp("k_proj"))?,
            v: linear_no_bias(d, d, vb.pp("v_proj"))?,
            o: linear_no_bias(d, d, vb.pp("o_proj"))?,
            heads: cfg.heads,
            norm2: rms_norm(d, vb.pp("norm2"))?,
            ffn,
        })
    }

    fn attention(&self, x: &Tensor, ctx: &Ctx) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = d / self.heads;
        let (q, k, v) = rope_qkv(x, (&self.q, &self.k, &self.v), self.heads, ctx)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (h as f64).sqrt()))?
            .broadcast_add(ctx.mask())?;
        let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.o.forward(&o)
    }

    fn forward(&self, x: &Tensor, ctx: &Ctx) -> candle_core::Result<Tensor> {
        let x = (x + self.attention(&self.norm1.forward(x)?, ctx)?)?;
        let hn = self.norm2.forward(&x)?;
        let f = match &self.ffn {
            Ffn::Dense(m) => m.forward(&hn)?,
            Ffn::Moe(m) => {
                let (b, t, d) = hn.dims3()?;
                moe_forward(m, &hn.reshape((b * t, d))?)?.reshape((b, t, d))?
            }
        };
        x + f
    }
}

/// A Mamba-style selective state-space mixer with its pre-norm and residual.
struct SsmLayer {
    norm: RmsNorm,
    in_proj: Linear,
    conv_w: Tensor,
    conv_b: Tensor,
    x_proj: Linear,
    dt_proj: Linear,
    a_log: Tensor,
    d_skip: Tensor,
    out_proj: Linear,
    d_inner: usize,
    dt_rank: usize,
    d_state: usize,
    d_conv: usize,
}

impl SsmLayer {
    fn new(cfg: &BackboneConfig, vb: VarBuilder) -> Result<Self> {
        let (d, e, n, r) = (cfg.d_model, cfg.d_inner(), cfg.d_state, cfg.dt_rank());
        // A = -exp(a_log) with a_log = ln(1..=n) per channel (S4D-real, as Mamba's init); the
        // filler gives constants only, so the rows are built here and made a variable.
        let a: Vec<f32> = (0..e)
            .flat_map(|_| (1..=n).map(|j| (j as f32).ln()))
            .collect();
        let a_log = vb.get_with_hints((e, n), "A_log", Init::Const(0.0))?;
        let a_log_init = Tensor::from_vec(a, (e, n), a_log.device())?.to_dtype(a_log.dtype())?;
        let a_log = (a_log + a_log_init)?;
        Ok(SsmLayer {
            norm: rms_norm(d, vb.pp("norm"))?,
            in_proj: linear_no_bias(d, 2 * e, vb.pp("in_proj"))?,
            conv_w: vb.get_with_hints(
                (e, cfg.d_conv),
                "conv1d.weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            conv_b: vb.get_with_hints(e, "conv1d.bias", Init::Const(0.0))?,
            x_proj: linear_no_bias(e, r + 2 * n, vb.pp("x_proj"))?,
            dt_proj: linear(r, e, vb.pp("dt_proj"))?,
            a_log,
            d_skip: vb.get_with_hints(e, "D", Init::Const(1.0))?,
            out_proj: linear_no_bias(e, d, vb.pp("out_proj"))?,
            d_inner: e,
            dt_rank: r,
            d_state: n,
            d_conv: cfg.d_conv,
        })
    }

    fn mixer(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (e, n, k) = (self.d_inner, self.d_state, self.d_conv);
        let xz = self.in_proj.forward(x)?;
        let xs = xz.narrow(D::Minus1, 0, e)?;
        let z = xz.narrow(D::Minus1, e, e)?;
        // Causal depthwise conv: left-pad k - 1 zeros, sum k shifted slices.
        let xp = Tensor::cat(
            &[Tensor::zeros((b, k - 1, e), xs.dtype(), xs.device())?, xs],
            1,
        )?;
        let mut conv = self
            .conv_b
            .reshape((1, 1, e))?
            .broadcast_as((b, t, e))?
            .contiguous()?;
        for j in 0..k {
            let wj = self.conv_w.narrow(1, j, 1)?.reshape((1, 1, e))?;
            conv = (conv + xp.narrow(1, j, t)?.broadcast_mul(&wj)?)?;
        }
        let u = conv.silu()?;
        let dbc = self.x_proj.forward(&u)?;
        let dt = dbc.narrow(D::Minus1, 0, self.dt_rank)?;
        let bm = dbc.narrow(D::Minus1, self.dt_rank, n)?; // (B, T, N)
        let cm = dbc.narrow(D::Minus1, self.dt_rank + n, n)?;
        let delta = softplus(&self.dt_proj.forward(&dt)?)?; // (B, T, E)
        let a = self.a_log.exp()?.neg()?; // (E, N)
                                          // Sequential selective scan: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t h_t.
                                          // Each step slices the (B, T, E) / (B, T, N) inputs, not a (B, T, E, N) tensor: the
                                          // backward of a slice is a zero-padded full tensor, so slicing the small ones keeps
                                          // the backward's extra work at O(T * B * T * E) instead of O(T * B * T * E * N).
        let du = (&delta * &u)?;
        let mut h = Tensor::zeros((b, e, n), x.dtype(), x.device())?;
        let mut ys = Vec::with_capacity(t);
        for i in 0..t {
            let dt_i = delta.narrow(1, i, 1)?.squeeze(1)?.unsqueeze(D::Minus1)?; // (B, E, 1)
            let da = dt_i.broadcast_mul(&a.unsqueeze(0)?)?.exp()?; // (B, E, N)
            let b_i = bm.narrow(1, i, 1)?; // (B, 1, N)
            let dbu = du
                .narrow(1, i, 1)?
                .squeeze(1)?
                .unsqueeze(D::Minus1)?
                .broadcast_mul(&b_i)?;
            h = ((da * &h)? + dbu)?;
            let c_i = cm.narrow(1, i, 1)?; // (B, 1, N)
            ys.push(h.broadcast_mul(&c_i)?.sum(D::Minus1)?); // (B, E)
        }
        let y = Tensor::stack(&ys, 1)?; // (B, T, E)
        let y = (y + u.broadcast_mul(&self.d_skip)?)?;
        self.out_proj.forward(&(y * z.silu()?)?)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x + self.mixer(&self.norm.forward(x)?)?
    }
}

enum Layer {
    Attn(AttnLayer),
    Ssm(SsmLayer),
}

/// A backbone with `horizons` prediction heads.
pub struct Backbone {
    pub cfg: BackboneConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm_f: RmsNorm,
    heads: Vec<Linear>,
    /// Every trainable parameter, by name.
    pub vars: Vec<(String, Var)>,
    ctx: CtxCache,
}

impl Backbone {
    /// Seeded parameters (the suite's filler: uniform, std 0.02; norms 1; A_log = ln(1..n)),
    /// all trainable, in `dtype`.
    pub fn new(cfg: BackboneConfig, seed: u64, dtype: DType, dev: &Device) -> Result<Self> {
        cfg.validate().map_err(|e| Error::Config {
            path: "architecture sweep".into(),
            family: cfg.family.name().into(),
            reason: e,
        })?;
        let fill = Filler::trainable(seed);
        let vb = VarBuilder::from_backend(Box::new(fill.clone()), dtype, dev.clone());
        let embed = vb.get((cfg.vocab, cfg.d_model), "embed.weight")?;
        let mut layers = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let lvb = vb.pp(format!("layers.{i}"));
            layers.push(if cfg.is_attention(i) {
                Layer::Attn(AttnLayer::new(&cfg, cfg.family == Family::Mixture, lvb)?)
            } else {
                Layer::Ssm(SsmLayer::new(&cfg, lvb)?)
            });
        }
        let norm_f = rms_norm(cfg.d_model, vb.pp("norm_f"))?;
        let heads = (0..cfg.horizons)
            .map(|k| linear_no_bias(cfg.d_model, cfg.vocab, vb.pp(format!("heads.{k}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let vars = fill.take_vars();
        Ok(Backbone {
            cfg,
            embed,
            layers,
            norm_f,
            heads,
            vars,
            ctx: CtxCache::default(),
        })
    }

    /// Parameters built (every variable's elements).
    pub fn params(&self) -> u64 {
        self.vars.iter().map(|(_, v)| v.elem_count() as u64).sum()
    }

    /// Parameters one token passes through: all, less the experts it is not routed to.
    pub fn active_params(&self) -> u64 {
        let c = &self.cfg;
        if c.family != Family::Mixture {
            return self.params();
        }
        let idle = (c.experts - c.top_k) * 3 * c.d_model * c.expert_width();
        self.params() - (c.attention_layers() * idle) as u64
    }

    /// ids (B, T) -> final hidden states (B, T, d).
    pub fn trunk(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let head_dim = self.cfg.d_model / self.cfg.heads;
        let ctx = self
            .ctx
            .get(t, head_dim, self.embed.dtype(), self.embed.device())?;
        let mut x =
            self.embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, t, self.cfg.d_model))?;
        for l in &self.layers {
            x = match l {
                Layer::Attn(a) => a.forward(&x, &ctx)?,
                Layer::Ssm(s) => s.forward(&x)?,
            };
        }
        self.norm_f.forward(&x)
    }

    /// ids (B, T) -> the logits of every head, each (B, T, V).
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let h = self.trunk(ids)?;
        self.heads.iter().map(|hd| hd.forward(&h)).collect()
    }

    /// Mean over the heads of the mean cross-entropy; `seq` (B, T + H) holds the inputs
    /// (its first T columns) and every head's targets (head k: columns k + 1 .. k + 1 + T).
    pub fn loss(&self, seq: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n) = seq.dims2()?;
        let hz = self.cfg.horizons;
        let t = n - hz;
        let logits = self.forward(&seq.narrow(1, 0, t)?)?;
        let mut total: Option<Tensor> = None;
        for (k, lg) in logits.iter().enumerate() {
            let tgt = seq.narrow(1, k + 1, t)?.contiguous()?.reshape(b * t)?;
            let l = candle_nn::loss::cross_entropy(
                &lg.reshape((b * t, self.cfg.vocab))?.to_dtype(DType::F32)?,
                &tgt,
            )?;
            total = Some(match total {
                Some(s) => (s + l)?,
                None => l,
            });
        }
        total.expect("horizons >= 1") / hz as f64
    }
}

/// A backbone and its AdamW (lr 3e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1; no
/// gradient clipping).
pub struct BackboneTrainer {
    pub model: Backbone,
    opt: AdamW,
}

impl BackboneTrainer {
    pub fn new(model: Backbone) -> Result<Self> {
        let vars = model.vars.iter().map(|(_, v)| v.clone()).collect();
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: 3e-4,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
            },
        )?;
        Ok(BackboneTrainer { model, opt })
    }

    /// One step: forward, loss over the heads, backward, AdamW; returns the loss before it.
    pub fn step(&mut self, seq: &Tensor) -> Result<f32> {
        let l = self.model.loss(seq)?;
        let g = l.backward()?;
        self.opt.step(&g)?;
        Ok(l.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(b: usize, n: usize, v: usize) -> Tensor {
        let x: Vec<u32> = (0..b * n).map(|i| ((i * 7919 + 13) % v) as u32).collect();
        Tensor::from_vec(x, (b, n), &Device::Cpu).unwrap()
    }

    #[test]
    fn hybrid_ratio_and_layer_kinds() {
        let mut c = BackboneConfig::new(Family::Hybrid, 64, 32, 8, 1);
        assert_eq!(c.attention_layers(), 2); // layers 3 and 7
        assert!(c.is_attention(3) && c.is_attention(7) && !c.is_attention(0));
        c.depth = 2;
        assert_eq!(c.attention_layers(), 1); // the last layer when depth < attention_every
        assert!(c.is_attention(1));
        assert_eq!(
            BackboneConfig::new(Family::StateSpace, 64, 32, 6, 1).attention_layers(),
            0
        );
        assert_eq!(
            BackboneConfig::new(Family::Dense, 64, 32, 6, 1).attention_layers(),
            6
        );
        assert_eq!(Family::parse("omni_mixture"), Some(Family::Mixture));
        assert_eq!(Family::parse("hybrid_transformer"), Some(Family::Hybrid));
        assert_eq!(Family::parse("rnn"), None);
    }

    #[test]
    fn a_train_step_lowers_the_loss_of_every_family_and_touches_every_parameter() {
        // Memorising one batch: 5 steps at lr 3e-4 must lower the loss, every parameter
        // must get a gradient (the router's included), and the count matches the formula
        // of the dense case.
        for fam in Family::ALL {
            let mut c = BackboneConfig::new(fam, 32, 32, 2, 2);
            c.experts = 4;
            let m = Backbone::new(c, 3, DType::F32, &Device::Cpu).unwrap();
            let seq = ids(2, 8 + 2, 32);
            let g = m.loss(&seq).unwrap().backward().unwrap();
            // (An expert that no token was routed to gets none: experts are counted apart.)
            let mut experts_hit = 0;
            for (name, v) in &m.vars {
                let gr = g.get(v.as_tensor());
                if name.contains(".experts.") {
                    experts_hit += usize::from(gr.is_some());
                    continue;
                }
                assert!(gr.is_some(), "{fam}: no gradient for {name}");
            }
            if fam == Family::Mixture {
                // 2 layers x at least top-2 experts x 3 matrices.
                assert!(experts_hit >= 2 * 2 * 3, "{experts_hit}");
            }
            if fam == Family::Dense {
                let d = 32u64;
                let f = c.ffn as u64;
                let layer = 2 * d + 4 * d * d + 3 * d * f;
                assert_eq!(m.params(), 32 * d + 2 * layer + d + 2 * d * 32);
            }
            let mut tr = BackboneTrainer::new(m).unwrap();
            let first = tr.step(&seq).unwrap();
            let mut last = first;
            for _ in 0..5 {
                last = tr.step(&seq).unwrap();
            }
            assert!(
                first.is_finite() && last < first,
                "{fam}: {first} -> {last}"
            );
        }
    }

    #[test]
    fn the_scan_is_causal() {
        // Changing the last token must not change any earlier position's hidden state.
        for fam in [Family::StateSpace, Family::Hybrid, Family::Dense] {
            let m = Backbone::new(
                BackboneConfig::new(fam, 16, 32, 2, 1),
                5,
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
            let a: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
            let mut b2 = a.clone();
            b2[5] = 9;
            let h = |v: Vec<u32>| {
                m.trunk(&Tensor::from_vec(v, (1, 6), &Device::Cpu).unwrap())
                    .unwrap()
                    .narrow(1, 0, 5)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let (x, y) = (h(a), h(b2));
            let diff = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(diff < 1e-6, "{fam}: {diff}");
        }
    }
}
