//! PSANN-LM on candle, as specified in docs/psann-spec.md: the SineParam activation,
//! the `respsann`, `sgrpsann` and `waveresnet` bases (pre-norm decoder, interleaved RoPE,
//! causal "math" attention, sine MLP with a learnable residual scale, sgrpsann's spectral
//! gate, untied head) and the spec's initialisation.
//!
//! Built only from differentiable candle ops (candle-nn's fused softmax / rms_norm / rope cut
//! the autograd graph silently: candle-facts.md), so the same model trains.

pub mod train;

use candle_core::{DType, Device, Module, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::layers::{rope_qkv, softplus, CtxCache, RmsNorm};
use crate::error::{Error, Result};
use crate::util::fill::{seeded, Dist};

pub use super::layers::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    Respsann,
    Sgrpsann,
    /// Identical to respsann with default settings (the optional wave block is off).
    Waveresnet,
}

impl Base {
    pub const ALLOWED: &'static str = "respsann, sgrpsann, waveresnet";

    pub fn name(self) -> &'static str {
        match self {
            Base::Respsann => "respsann",
            Base::Sgrpsann => "sgrpsann",
            Base::Waveresnet => "waveresnet",
        }
    }

    pub fn parse(s: &str) -> Option<Base> {
        match s.trim() {
            "respsann" => Some(Base::Respsann),
            "sgrpsann" => Some(Base::Sgrpsann),
            "waveresnet" => Some(Base::Waveresnet),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PsannConfig {
    pub base: Base,
    pub vocab: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_mlp: usize,
    /// sgrpsann's window (k_fft).
    pub k_fft: usize,
    pub amp_init: f32,
    pub freq_init: f32,
    pub damp_init: f32,
}

impl PsannConfig {
    /// The PSANN throughput grid's model: d_model 256, 4 layers, 4 heads, d_mlp 1024, vocab 32000.
    pub fn gpu03(base: Base) -> Self {
        Self::new(base, 32000, 256, 4, 4)
    }

    /// The "medium" model of the checkpointing benchmark: d_model 512, 8 layers, 8 heads, d_mlp 2048.
    pub fn medium(base: Base, vocab: usize) -> Self {
        Self::new(base, vocab, 512, 8, 8)
    }

    /// The training-throughput sweep's model: byte vocabulary (256), d_model 64, 2 layers, 4 heads, d_mlp 256.
    pub fn sweep(base: Base) -> Self {
        Self::new(base, 256, 64, 2, 4)
    }

    /// A model with the spec's defaults (d_mlp = 4 d_model, sine 1.0 / 1.0 / 0.01, k_fft 64).
    pub fn new(base: Base, vocab: usize, d_model: usize, n_layers: usize, n_heads: usize) -> Self {
        PsannConfig {
            base,
            vocab,
            d_model,
            n_layers,
            n_heads,
            d_mlp: 4 * d_model,
            k_fft: 64,
            amp_init: 1.0,
            freq_init: 1.0,
            damp_init: 0.01,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(format!(
                "d_model {} must be a multiple of n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        if !(self.d_model / self.n_heads).is_multiple_of(2) {
            return Err("interleaved RoPE needs an even head dimension".into());
        }
        if self.vocab == 0
            || self.n_layers == 0
            || self.d_mlp == 0
            || self.k_fft < 2
            || !self.k_fft.is_multiple_of(2)
        {
            return Err("vocab, n_layers and d_mlp must be positive and k_fft even".into());
        }
        Ok(())
    }

    /// Parameter count by the spec's formula (§6).
    pub fn param_count(&self) -> u64 {
        let (d, m, v) = (self.d_model as u64, self.d_mlp as u64, self.vocab as u64);
        let mut block = 4 * d * d + 2 * d * m + 4 * m + 3 * d + 1;
        if self.base == Base::Sgrpsann {
            block += d * (self.k_fft as u64 / 2 + 1) + d;
        }
        self.n_layers as u64 * block + 2 * v * d + d
    }

    /// Forward FLOPs per token at sequence length `t` (2 per multiply-add): the linear
    /// layers, the full T x T "math" attention (QK^T and PV), and the LM head.
    pub fn forward_flops_per_token(&self, t: usize) -> f64 {
        let (d, m, v, l) = (
            self.d_model as f64,
            self.d_mlp as f64,
            self.vocab as f64,
            self.n_layers as f64,
        );
        2.0 * l * (4.0 * d * d + 2.0 * d * m) + 4.0 * l * t as f64 * d + 2.0 * d * v
    }
}

/// Where parameters live: trainable [`Var`]s, or plain tensors for inference (no graph).
pub struct Params {
    seed: u64,
    dev: Device,
    trainable: bool,
    /// Matmul dtype (autocast): parameters stay f32, matmuls run in this dtype.
    compute: DType,
    pub vars: Vec<(String, Var)>,
}

/// A Linear under autocast: f32 master weight, matmul in the compute dtype (PyTorch AMP's
/// bf16 autocast), f32 output so the residual stream stays f32. The casts are
/// differentiable, so gradients reach the f32 parameters.
#[derive(Debug, Clone)]
pub struct AmpLinear {
    inner: candle_nn::Linear,
    compute: DType,
}

impl Module for AmpLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.compute == DType::F32 {
            return self.inner.forward(x);
        }
        let w = self.inner.weight().to_dtype(self.compute)?;
        let b = self
            .inner
            .bias()
            .map(|b| b.to_dtype(self.compute))
            .transpose()?;
        candle_nn::Linear::new(w, b)
            .forward(&x.to_dtype(self.compute)?)?
            .to_dtype(DType::F32)
    }
}

impl Params {
    pub fn new(seed: u64, dev: &Device, trainable: bool, compute: DType) -> Self {
        Params {
            seed,
            dev: dev.clone(),
            trainable,
            compute,
            vars: Vec::new(),
        }
    }

    fn get(&mut self, name: &str, shape: &[usize], dist: Dist) -> Result<Tensor> {
        let t = seeded(&shape.into(), self.seed, name, dist, &self.dev)?;
        if self.trainable {
            let v = Var::from_tensor(&t)?;
            let t = v.as_tensor().clone();
            self.vars.push((name.to_string(), v));
            Ok(t)
        } else {
            Ok(t)
        }
    }

    /// A Linear with Xavier-uniform weight and zero bias.
    fn linear(
        &mut self,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
    ) -> Result<AmpLinear> {
        let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
        let w = self.get(
            &format!("{name}.weight"),
            &[fan_out, fan_in],
            Dist::Uniform(-a, a),
        )?;
        let b = if bias {
            Some(self.get(&format!("{name}.bias"), &[fan_out], Dist::Const(0.0))?)
        } else {
            None
        };
        Ok(AmpLinear {
            inner: candle_nn::Linear::new(w, b),
            compute: self.compute,
        })
    }
}

/// The value stored for an init `v` in softplus space: `ln(expm1(max(v, eps)))`.
pub fn softplus_inverse(v: f32) -> f32 {
    let eps = f32::EPSILON;
    v.max(eps).exp_m1().max(eps).ln()
}

/// SineParam: `y = A * exp(-d * |z|) * sin(f * z)` with per-channel A = softplus(a_raw),
/// f = softplus(f_raw) + 1e-6, d = softplus(d_raw); decay mode "abs". (The raw parameters are
/// small, so PyTorch's threshold-20 linear branch of softplus is never reached.)
#[derive(Debug, Clone)]
pub struct SineParam {
    pub a_raw: Tensor,
    pub f_raw: Tensor,
    pub d_raw: Tensor,
}

impl SineParam {
    fn new(p: &mut Params, name: &str, n: usize, cfg: &PsannConfig) -> Result<Self> {
        Ok(SineParam {
            a_raw: p.get(
                &format!("{name}._A"),
                &[n],
                Dist::Const(softplus_inverse(cfg.amp_init)),
            )?,
            f_raw: p.get(
                &format!("{name}._f"),
                &[n],
                Dist::Const(softplus_inverse(cfg.freq_init)),
            )?,
            d_raw: p.get(
                &format!("{name}._d"),
                &[n],
                Dist::Const(softplus_inverse(cfg.damp_init)),
            )?,
        })
    }
}

impl Module for SineParam {
    fn forward(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let a = softplus(&self.a_raw)?;
        let f = (softplus(&self.f_raw)? + 1e-6)?;
        let d = softplus(&self.d_raw)?;
        let decay = z.abs()?.broadcast_mul(&d.neg()?)?.exp()?;
        let wave = z.broadcast_mul(&f)?.sin()?;
        decay.broadcast_mul(&a)?.mul(&wave)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: AmpLinear,
    k: AmpLinear,
    v: AmpLinear,
    o: AmpLinear,
    heads: usize,
}

impl Attention {
    fn forward(&self, x: &Tensor, ctx: &Ctx) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = d / self.heads;
        let (q, k, v) = rope_qkv(x, (&self.q, &self.k, &self.v), self.heads, ctx)?;
        // Autocast: QK^T and PV in the compute dtype, scale/mask/softmax in f32.
        let c = self.o.compute;
        let qk = q.to_dtype(c)?.matmul(&k.to_dtype(c)?.t()?.contiguous()?)?;
        let scores =
            (qk.to_dtype(DType::F32)? * (1.0 / (h as f64).sqrt()))?.broadcast_add(ctx.mask())?;
        let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let o = p
            .to_dtype(c)?
            .matmul(&v.to_dtype(c)?)?
            .to_dtype(DType::F32)?;
        let o = o.transpose(1, 2)?.reshape((b, t, d))?;
        self.o.forward(&o)
    }
}

/// sgrpsann's SpectralGate1D (rfft gate, depthwise mix) over the last k_fft positions, with
/// the real DFT written as matmuls by cos/sin matrices (the spec's `fourier_features` form,
/// numerically the same gate; candle has no FFT).
#[derive(Debug, Clone)]
struct Spectral {
    mask: Tensor,
    mix: Tensor,
    k: usize,
    /// (K, F) forward DFT: Re = w C, Im = -w S.
    c: Tensor,
    s: Tensor,
    /// (F, K) inverse real DFT with the 1/K and doubling weights folded in.
    ci: Tensor,
    si: Tensor,
}

impl Spectral {
    fn new(p: &mut Params, name: &str, d: usize, k: usize, dev: &Device) -> Result<Self> {
        let f = k / 2 + 1;
        let mut c = vec![0f32; k * f];
        let mut s = vec![0f32; k * f];
        let mut ci = vec![0f32; f * k];
        let mut si = vec![0f32; f * k];
        for n in 0..k {
            for j in 0..f {
                let th = 2.0 * std::f64::consts::PI * (n * j) as f64 / k as f64;
                c[n * f + j] = th.cos() as f32;
                s[n * f + j] = th.sin() as f32;
                let w = if j == 0 || j == k / 2 { 1.0 } else { 2.0 } / k as f64;
                ci[j * k + n] = (w * th.cos()) as f32;
                si[j * k + n] = (w * th.sin()) as f32;
            }
        }
        Ok(Spectral {
            mask: p.get(&format!("{name}.mask"), &[d, f], Dist::Const(0.0))?,
            mix: p.get(&format!("{name}.mix.weight"), &[d, 1, 1], Dist::Const(1.0))?,
            k,
            c: Tensor::from_vec(c, (k, f), dev)?,
            s: Tensor::from_vec(s, (k, f), dev)?,
            ci: Tensor::from_vec(ci, (f, k), dev)?,
            si: Tensor::from_vec(si, (f, k), dev)?,
        })
    }

    fn forward(&self, u: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = u.dims3()?;
        let k = self.k;
        let k_out = t.min(k);
        let mut w = u.narrow(1, t - k_out, k_out)?;
        if t < k {
            w = Tensor::cat(
                &[Tensor::zeros((b, k - t, d), u.dtype(), u.device())?, w],
                1,
            )?;
        }
        let w = w.transpose(1, 2)?.contiguous()?; // (B, d, K)
        let re = w.broadcast_matmul(&self.c)?;
        let im = w.broadcast_matmul(&self.s)?.neg()?;
        let one = Tensor::ones_like(&self.mask)?;
        let gate = one.broadcast_div(&(self.mask.neg()?.exp()? + 1.0)?)?; // sigmoid(mask)
        let (re, im) = (re.broadcast_mul(&gate)?, im.broadcast_mul(&gate)?);
        // irfft: r = Re Ci - Im Si
        let r = (re.broadcast_matmul(&self.ci)? - im.broadcast_matmul(&self.si)?)?;
        let r = r.broadcast_mul(&self.mix.reshape((1, d, 1))?)?; // depthwise 1x1 conv, no bias
        let r = r.transpose(1, 2)?.narrow(1, k - k_out, k_out)?; // (B, k_out, d)
        if t > k_out {
            Tensor::cat(
                &[Tensor::zeros((b, t - k_out, d), u.dtype(), u.device())?, r],
                1,
            )
        } else {
            Ok(r)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Block {
    norm1: RmsNorm,
    attn: Attention,
    norm2: RmsNorm,
    fc1: AmpLinear,
    act: SineParam,
    fc2: AmpLinear,
    alpha: Tensor,
    spectral: Option<Spectral>,
}

impl Block {
    fn new(p: &mut Params, l: usize, cfg: &PsannConfig, dev: &Device) -> Result<Self> {
        let (d, m) = (cfg.d_model, cfg.d_mlp);
        let n = |s: &str| format!("blocks.{l}.{s}");
        Ok(Block {
            norm1: RmsNorm::new(p.get(&n("norm1.scale"), &[d], Dist::Const(1.0))?),
            attn: Attention {
                q: p.linear(&n("attn.q_proj"), d, d, false)?,
                k: p.linear(&n("attn.k_proj"), d, d, false)?,
                v: p.linear(&n("attn.v_proj"), d, d, false)?,
                o: p.linear(&n("attn.o_proj"), d, d, false)?,
                heads: cfg.n_heads,
            },
            norm2: RmsNorm::new(p.get(&n("norm2.scale"), &[d], Dist::Const(1.0))?),
            fc1: p.linear(&n("mlp.fc1"), d, m, true)?,
            act: SineParam::new(p, &n("mlp.act"), m, cfg)?,
            fc2: p.linear(&n("mlp.fc2"), m, d, true)?,
            alpha: p.get(&n("alpha"), &[1], Dist::Const(1.0))?,
            spectral: match cfg.base {
                Base::Sgrpsann => Some(Spectral::new(p, &n("spectral"), d, cfg.k_fft, dev)?),
                _ => None,
            },
        })
    }

    /// sgrpsann's spectral gate alone (None for the other bases).
    pub fn spectral_gate(&self, u: &Tensor) -> Option<candle_core::Result<Tensor>> {
        self.spectral.as_ref().map(|s| s.forward(u))
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> candle_core::Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?, ctx)?)?;
        let h = self
            .act
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        let mut m = self.fc2.forward(&h)?.broadcast_mul(&self.alpha)?;
        if let Some(s) = &self.spectral {
            m = (&m + s.forward(&m)?)?;
        }
        x + m
    }
}

pub struct PsannLm {
    pub cfg: PsannConfig,
    embed: Tensor,
    pub blocks: Vec<Block>,
    ln_f: RmsNorm,
    head: AmpLinear,
    /// Trainable parameters by state-dict name (empty for an inference model).
    pub vars: Vec<(String, Var)>,
    dev: Device,
    /// The RoPE tables and mask of the last sequence length (built once per shape).
    ctx_cache: CtxCache,
}

impl PsannLm {
    /// Builds the model with the spec's initialisation from `seed`. `trainable` makes every
    /// parameter a [`Var`]; otherwise plain tensors (forward-only, no autograd graph).
    pub fn new(cfg: PsannConfig, seed: u64, dev: &Device, trainable: bool) -> Result<Self> {
        Self::with_compute(cfg, seed, dev, trainable, DType::F32)
    }

    /// [`PsannLm::new`] with matmuls in `compute` (bf16/f16 autocast; parameters, norms,
    /// SineParam, softmax and the residual stream stay f32, as under PyTorch AMP).
    pub fn with_compute(
        cfg: PsannConfig,
        seed: u64,
        dev: &Device,
        trainable: bool,
        compute: DType,
    ) -> Result<Self> {
        cfg.validate().map_err(|e| Error::Config {
            path: "psann config".into(),
            family: cfg.base.name().into(),
            reason: e,
        })?;
        let mut p = Params::new(seed, dev, trainable, compute);
        let embed = p.get(
            "embed.weight",
            &[cfg.vocab, cfg.d_model],
            Dist::Normal(0.0, 0.02),
        )?;
        let blocks = (0..cfg.n_layers)
            .map(|l| Block::new(&mut p, l, &cfg, dev))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = RmsNorm::new(p.get("ln_f.scale", &[cfg.d_model], Dist::Const(1.0))?);
        let head = p.linear("lm_head", cfg.d_model, cfg.vocab, false)?;
        Ok(PsannLm {
            cfg,
            embed,
            blocks,
            ln_f,
            head,
            vars: p.vars,
            dev: dev.clone(),
            ctx_cache: CtxCache::default(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The RoPE tables and causal mask for sequence length `t`: built on the device the
    /// first time a length is seen, then reused (a benchmark's warm-up builds them, so they
    /// stay outside the timed region).
    pub fn ctx(&self, t: usize) -> candle_core::Result<Ctx> {
        let head_dim = self.cfg.d_model / self.cfg.n_heads;
        self.ctx_cache.get(t, head_dim, DType::F32, &self.dev)
    }

    /// Token embeddings (B, T, d); no scaling, no positional add (RoPE is in attention).
    pub fn embed(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.d_model))
    }

    /// Final norm and untied head: (B, T, d) -> (B, T, V) logits.
    pub fn head(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(&self.ln_f.forward(x)?)
    }

    /// ids (B, T) u32 -> logits (B, T, V), f32.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let ctx = self.ctx(ids.dim(1)?)?;
        let mut x = self.embed(ids)?;
        for b in &self.blocks {
            x = b.forward(&x, &ctx)?;
        }
        self.head(&x)
    }

    /// Parameters actually built (must equal [`PsannConfig::param_count`]).
    pub fn built_params(&self) -> u64 {
        self.vars.iter().map(|(_, v)| v.elem_count() as u64).sum()
    }
}

/// The PSANN throughput grid's shape rule for a target of `n` tokens: T = min(max_t, max(64, n)),
/// B = ceil(n / T); if B > max_b: B = max_b, T = max(64, ceil(n / B)) capped at max_t.
pub fn gpu03_shape(n: usize, max_t: usize, max_b: usize) -> (usize, usize) {
    let mut t = max_t.min(n.max(64));
    let mut b = n.div_ceil(t);
    if b > max_b {
        b = max_b;
        t = 64.max(n.div_ceil(b));
        if t > max_t {
            t = max_t;
            b = n.div_ceil(t);
        }
    }
    (b, t)
}

/// Uniform random ids (B, T) in [0, vocab), seeded.
pub fn random_ids(
    b: usize,
    t: usize,
    vocab: usize,
    seed: u64,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    // The same ids as the engine's prompt_ids(.., vocab + 3, seed, 0) shifted down by 3.
    let ids: Vec<u32> = crate::util::fill::uniform_ids(b * t, 3, vocab as u32 + 3, seed, 0)
        .into_iter()
        .map(|i| i - 3)
        .collect();
    Tensor::from_vec(ids, (b, t), dev)
}
