//! One step of any number of sequences, each at its own positions (the single-sequence
//! model runs the same code with one), and [`Batched`], the form `modelbench serve
//! --max-batch` drives.

use candle_core::quantized::QMatMul;
use candle_core::{Result, Tensor};
use candle_nn::kv_cache::KvCache;

use super::{Config, LayerCache, Masks, Mixer, ModelWeights, SeqCache, SeqStep, Weights, Wrong};
use crate::measure::inject::around_op as op;
use crate::models::quantized::gemma3::{attention_mask, Proj};
use crate::models::quantized::parts::{last_logits, norm, residual, step_input};
use modelbench_measure::traced;

impl Weights {
    pub(super) fn new_seq(&self) -> SeqCache {
        SeqCache::new(
            self.layers
                .iter()
                .map(|l| match &l.mixer {
                    Mixer::Attention { .. } => LayerCache::Kv(KvCache::new(2, self.context)),
                    // Shared until the first step replaces it (a state is never written in place).
                    Mixer::ShortConv { start, .. } => LayerCache::Conv(start.clone()),
                })
                .collect(),
        )
    }

    /// One step over `seqs` (see [`Batched::forward`]); `mm(layer, j, x)` runs projection `j`
    /// of `layer` (`layer == layers`: the output projection) on `x` (1, rows, in).
    pub(super) fn step(
        &self,
        seqs: &mut [SeqStep<'_>],
        mm: &dyn Fn(usize, usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Vec<Option<Tensor>>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let (x, spans) = step_input(seqs, self.layers.len(), self.context, &self.device)?;
        let mut h = traced!(
            "embedding",
            "token_embd rows",
            [e = self.embed, x],
            e.forward(x)
        )?;
        let dev = &self.device;
        let masks = spans
            .iter()
            .map(|&(_, len, pos)| {
                traced!("mask", "mask build (host)", [pos, len, dev], {
                    attention_mask(*pos, *len, 0, pos + len, None)
                        .map(|m| Tensor::from_vec(m, (*len, pos + len), dev))
                        .transpose()
                })
            })
            .collect::<Result<Masks>>()?;
        // The projection `j` of layer `li` with its bias, if any.
        let proj = |li: usize, j: usize, x: &Tensor| -> Result<Tensor> {
            let y = mm(li, j, x)?;
            match &self.layers[li].bias[j] {
                Some(b) if self.wrong != Some(Wrong::ZeroBias) => {
                    let what = self.layers[li].names[j];
                    traced!("add", what, [y, b], y.broadcast_add(b))
                }
                _ => Ok(y),
            }
        };
        for (li, layer) in self.layers.iter().enumerate() {
            let a = self.normed(&layer.attn_norm, "attn_norm", &h, li)?;
            let mixed = match &layer.mixer {
                Mixer::Attention { qk_norm } => {
                    self.attention(li, qk_norm.as_ref(), &a, seqs, &spans, &masks, &proj)?
                }
                Mixer::ShortConv { taps, .. } => {
                    self.short_conv(li, taps, &a, seqs, &spans, &proj)?
                }
            };
            let mlp = |x: &Tensor| self.mlp(li, layer.mlp_at, x, &proj);
            let post = layer
                .post_norms
                .as_ref()
                .filter(|_| self.wrong != Some(Wrong::SkipPostNorms));
            match &layer.ffn_norm {
                // Phi-2: attention and MLP from the same norm, `h + attn + mlp` (llama.cpp's
                // order of the adds).
                None => {
                    let m = mlp(&a)?;
                    let sum = traced!("add", "attention + MLP", [mixed, m], mixed.add(m))?;
                    h = residual(&sum, &h)?;
                }
                Some(ffn_norm) => {
                    let mixed = match post {
                        Some((pa, _)) => norm("post_attention_norm", pa, &mixed)?,
                        None => mixed,
                    };
                    h = residual(&mixed, &h)?;
                    let x = self.normed(ffn_norm, "ffn_norm", &h, usize::MAX)?;
                    let m = mlp(&x)?;
                    let m = match post {
                        Some((_, pf)) => norm("post_ffw_norm", pf, &m)?,
                        None => m,
                    };
                    h = residual(&m, &h)?;
                }
            }
        }
        for (sq, &(_, len, pos)) in seqs.iter_mut().zip(&spans) {
            sq.cache.pos = pos + len;
        }

        last_logits(&h, &spans, seqs.iter().map(|s| s.logits), |last| {
            let last = self.normed(&self.norm, "output_norm", last, usize::MAX)?;
            let y = mm(self.layers.len(), 0, &last)?;
            match &self.output_bias {
                Some(b) if self.wrong != Some(Wrong::ZeroBias) => {
                    traced!("add", "output bias", [y, b], y.broadcast_add(b))
                }
                _ => Ok(y),
            }
        })
    }

    /// The model's own projection `j` of layer `li` (the output projection past the layers).
    pub(super) fn weight(&self, li: usize, j: usize) -> &QMatMul {
        match self.layers.get(li) {
            Some(l) => &l.w[j],
            None => &self.output,
        }
    }

    /// The name of projection `j` of layer `li`, for the op trace.
    pub(super) fn weight_name(&self, li: usize, j: usize) -> &'static str {
        match self.layers.get(li) {
            Some(l) => l.names[j],
            None => "output",
        }
    }
}

/// Continuous batching over the quantized Llama / Qwen3 (`modelbench serve --max-batch`), in
/// the shape of the project's Gemma 3 ([`crate::models::quantized::gemma3::Batched`]): every token of
/// every sequence in a step goes through each weight matmul together, and attention runs per
/// sequence against that sequence's own cache, with its own positions, RoPE and causal mask,
/// exactly as [`ModelWeights::forward`] runs one sequence of the same chunk (the same code).
/// A sequence's results therefore do not depend on what else is in the batch, provided each
/// matmul computes a row the same whatever the number of rows: candle's CPU kernels are
/// row-independent except that some switch kernels between one row and several;
/// [`Batched::new`] measures that once per weight type and shape and runs a lone row of such
/// a weight as two.
#[derive(Debug, Clone)]
pub struct Batched {
    w: Weights,
    /// Per layer its weights ([`Layer::w`]), then the output projection, as the batched path
    /// runs them.
    projs: Vec<Vec<Proj>>,
    output: Proj,
}

impl Batched {
    /// Wraps loaded weights (their single-sequence cache is dropped) and measures which
    /// weights need a lone row run as two (once per weight type and shape).
    pub fn new(model: ModelWeights) -> Result<Self> {
        let w = model.w;
        let dev = w.device.clone();
        let mut probed = std::collections::HashMap::new();
        let mut projs = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let mut p = Vec::with_capacity(l.w.len());
            for x in &l.w {
                p.push(Proj::candle_probed(x, &dev, &mut probed)?);
            }
            projs.push(p);
        }
        let output = Proj::candle_probed(&w.output, &dev, &mut probed)?;
        Ok(Self { w, projs, output })
    }

    pub fn config(&self) -> &Config {
        &self.w.cfg
    }

    /// How many of the model's weight matmuls run a lone row as two.
    pub fn lone_as_two(&self) -> usize {
        self.projs
            .iter()
            .flatten()
            .chain(std::iter::once(&self.output))
            .filter(|p| p.lone_as_two())
            .count()
    }
}

impl crate::models::batched::BatchedLm for Batched {
    type Seq = SeqCache;

    /// An empty cache for one sequence.
    fn new_seq(&self) -> SeqCache {
        self.w.new_seq()
    }

    /// Runs one step: each sequence's tokens at its own next positions, all through each
    /// weight matmul together. Returns, per sequence, the logits (vocab, f32) of its last
    /// token where `logits` asked for them. On an error no cache has advanced its position,
    /// but caches may hold part of the step: drop the sequences of a failed step.
    fn forward(&self, seqs: &mut [SeqStep<'_>]) -> Result<Vec<Option<Tensor>>> {
        let layers = self.projs.len();
        let mm = |li: usize, j: usize, x: &Tensor| {
            if li == layers {
                op("lm_head", || self.output.forward(x))
            } else {
                op("matmul", || self.projs[li][j].forward(x))
            }
        };
        self.w.step(seqs, &mm)
    }

    fn describe(&self) -> String {
        format!(
            "the project's quantized {} (impl=modelbench){}",
            self.w.cfg.arch,
            match self.lone_as_two() {
                0 => String::new(),
                p => format!(", {p} weights run a lone row as two (batch-independent results)"),
            }
        )
    }

    fn fork_seq(&self, seq: &SeqCache, len: usize) -> Option<Result<SeqCache>> {
        let whole = len >= seq.pos();
        seq.fork(len, |l, len| match l {
            LayerCache::Kv(c) => {
                Some(crate::models::quantized::parts::copy_kv(c, len).map(LayerCache::Kv))
            }
            // Replaced by each step, never written in place: sharing it is a copy. It holds the
            // last inputs of the whole sequence, so only the whole sequence can be kept.
            LayerCache::Conv(t) => whole.then(|| Ok(LayerCache::Conv(t.clone()))),
        })
    }
}
