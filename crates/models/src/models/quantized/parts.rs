//! What the project's two quantized implementations (Gemma 3: [`crate::models::quantized::gemma3`];
//! the other families: [`crate::models::quantized::llama`]) share, written once: a decoder layer's
//! projection names as llama.cpp's GGUF files spell them, the quantized token embedding
//! ([`Embedding`]), the model's ends as read from a file (token embedding, final norm, lm_head), RoPE tables, the single-sequence interface
//! ([`SingleSeq`]), and a batched step's sequence caches,
//! input and last step (each asking sequence's logits).

use std::sync::Arc;

use candle_core::quantized::{ggml_file, gguf_file, QMatMul, QTensor};
use candle_core::{bail, DType, Device, IndexOp, Module, Result, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use crate::models::batched::SeqStep;
use crate::models::q8_matmul::PackedQ8_0;
// An op-scoped injected slowdown (`MODELBENCH_INJECT_SLOWDOWN=op:KIND:..`, issue 31) wraps
// each op of its kind (`traced!`); unset, one relaxed atomic load per op.
use crate::measure::trace::{self, Arg, Describe};
use modelbench_measure::traced;

/// The weights of a layer's seven projections.
pub const PROJECTIONS: usize = 7;

/// A layer's projections as llama.cpp's GGUF names them (`blk.N.<name>.weight`), in the order
/// the implementations hold them: q, k, v, o, gate, up, down.
pub const PROJECTION_NAMES: [&str; PROJECTIONS] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// The token embedding: quantized rows looked up and dequantized one by one on the CPU; on
/// other devices the table is dequantized once (as upstream does).
#[derive(Debug, Clone)]
pub enum Embedding {
    Rows {
        q: Arc<QTensor>,
        vocab: usize,
        hidden: usize,
    },
    Dense(candle_nn::Embedding),
    /// Rows looked up in the lm_head's repacked tiles (`--fast-weights` with a tied lm_head:
    /// the table is held once, in the lm_head's form).
    Packed {
        p: PackedQ8_0,
        vocab: usize,
        hidden: usize,
    },
}

impl Embedding {
    pub fn new(q: Arc<QTensor>, dev: &Device) -> Result<Self> {
        let (vocab, hidden) = q.shape().dims2()?;
        if dev.is_cpu() && hidden % q.dtype().block_size() == 0 {
            Ok(Self::Rows { q, vocab, hidden })
        } else {
            Ok(Self::Dense(candle_nn::Embedding::new(
                q.dequantize(dev)?,
                hidden,
            )))
        }
    }

    /// `ids`: (b, len) u32 -> (b, len, hidden) f32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(e) => e.forward(ids),
            Self::Rows { q, vocab, hidden } => {
                let (b, len) = ids.dims2()?;
                let ids = ids.flatten_all()?.to_vec1::<u32>()?;
                let dt = q.dtype();
                let row = hidden / dt.block_size() * dt.type_size();
                let data = q.data()?;
                let mut buf = Vec::with_capacity(row * ids.len());
                for &id in &ids {
                    let id = id as usize;
                    if id >= *vocab {
                        bail!("token id {id} is out of the vocabulary ({vocab} entries)");
                    }
                    buf.extend_from_slice(&data[id * row..(id + 1) * row]);
                }
                let rows =
                    ggml_file::qtensor_from_ggml(dt, &buf, vec![ids.len(), *hidden], &Device::Cpu)?;
                rows.dequantize(&Device::Cpu)?.reshape((b, len, *hidden))
            }
            Self::Packed { p, vocab, hidden } => {
                let (b, len) = ids.dims2()?;
                let ids = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * hidden];
                for (row, &id) in out.chunks_exact_mut(*hidden).zip(&ids) {
                    if id as usize >= *vocab {
                        bail!("token id {id} is out of the vocabulary ({vocab} entries)");
                    }
                    p.dequantize_row(id as usize, row)?;
                }
                Tensor::from_vec(out, (b, len, *hidden), &Device::Cpu)
            }
        }
    }
}

impl Describe for Embedding {
    fn describe(&self, out: &mut Vec<Arg>) {
        match self {
            Self::Rows { q, .. } => q.describe(out),
            Self::Dense(e) => {
                let mut w = Vec::new();
                e.embeddings().describe(&mut w);
                out.extend(w.into_iter().map(|a| Arg { weight: true, ..a }));
            }
            Self::Packed { vocab, hidden, .. } => {
                let q8 = candle_core::quantized::GgmlDType::Q8_0;
                let bytes = vocab * hidden / q8.block_size() * q8.type_size();
                out.push(Arg::quant(&[*vocab, *hidden], q8, bytes))
            }
        }
    }
}

/// How an implementation computes GELU (tanh approximation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gelu {
    /// In f32, as candle's `gelu` (every benchmark, server and default run).
    #[default]
    Exact,
    /// As llama.cpp's CPU backend (ggml-cpu/vec.h, `GGML_GELU_FP16`, also in its GEGLU): an
    /// input at or below -10 gives 0, at or above 10 itself, any other is rounded to f16 and
    /// looked up in a table of f16 GELU values, so `f16(gelu(f16(x)))`. Only for judging the
    /// rest of a model against llama.cpp's f32 logits like for like (`verify
    /// --full-precision`): measured on the Phi-2 fixture, the table alone moves llama.cpp's
    /// logits by a mean KLD of 6.0e-10, 350 times its own f32 noise (docs/quality.md).
    GgmlF16,
}

impl Gelu {
    /// GELU of `x` (any float dtype; the result has `x`'s dtype).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Gelu::Exact => x.gelu(),
            Gelu::GgmlF16 => {
                let x32 = x.to_dtype(DType::F32)?;
                let f16 = |t: &Tensor| t.to_dtype(DType::F16)?.to_dtype(DType::F32);
                let table = f16(&f16(&x32)?.gelu()?)?;
                let y = x32.ge(10f64)?.where_cond(&x32, &table)?;
                let y = x32.le(-10f64)?.where_cond(&x32.zeros_like()?, &y)?;
                y.to_dtype(x.dtype())
            }
        }
    }
}

/// `n` (an RmsNorm the forward calls `what`) over `x`, a traced op.
pub fn norm(what: &'static str, n: &RmsNorm, x: &Tensor) -> Result<Tensor> {
    traced!("rms_norm", what, [n, x], n.forward(x))
}

/// The residual add `a + h`, a traced op.
pub fn residual(a: &Tensor, h: &Tensor) -> Result<Tensor> {
    traced!("add", "residual", [a, h], a.add(h))
}

/// Records (in an op trace: [`trace::note`]) the append `c.append(&k, &v)` has just made: the
/// keys and values written into the cache's buffers at the positions they took.
pub fn note_append(c: &candle_nn::kv_cache::KvCache, k: &Tensor, v: &Tensor) {
    if !trace::recording() {
        return;
    }
    let (k, v) = (k.clone(), v.clone());
    let (Ok(len), Some(kb), Some(vb)) = (
        k.dim(2),
        c.k_cache().all_data().clone(),
        c.v_cache().all_data().clone(),
    ) else {
        return;
    };
    let pos = c.current_seq_len().saturating_sub(len);
    let mut args = Vec::new();
    k.describe(&mut args);
    v.describe(&mut args);
    args.push(Arg::scalar(pos as f64));
    trace::note("kv_cache", "k, v append", args, move || {
        kb.slice_set(&k, 2, pos)?;
        vb.slice_set(&v, 2, pos)
    });
}

/// A copy of the first `len` positions of `c` (at most those it holds) with buffers of its own
/// (a clone shares them, and an append writes into them in place), in a fresh cache of the
/// same length.
pub fn copy_kv(
    c: &candle_nn::kv_cache::KvCache,
    len: usize,
) -> Result<candle_nn::kv_cache::KvCache> {
    let dim = c.k_cache().dim();
    let mut out = candle_nn::kv_cache::KvCache::new(dim, c.k_cache().max_seq_len());
    if let (Some(k), Some(v)) = (c.k()?, c.v()?) {
        let len = len.min(k.dim(dim)?);
        if len > 0 {
            out.append(
                &k.narrow(dim, 0, len)?.contiguous()?,
                &v.narrow(dim, 0, len)?.contiguous()?,
            )?;
        }
    }
    Ok(out)
}

/// The model's ends as a llama.cpp GGUF file holds them, `get` reading a tensor by name: the
/// token embedding (kept quantized, [`Embedding`]), the final norm's weight (`norm`: its
/// tensor name, `output_norm.weight` in most families; the caller makes the norm) and the
/// lm_head (`output.weight`, or the tied `token_embd.weight` when it is absent).
pub fn read_ends(
    ct: &gguf_file::Content,
    get: &mut dyn FnMut(&str) -> Result<QTensor>,
    norm: &str,
    device: &Device,
) -> Result<(Embedding, QTensor, QMatMul)> {
    let embd = Arc::new(get("token_embd.weight")?);
    let norm = get(norm)?;
    let output = if ct.tensor_infos.contains_key("output.weight") {
        QMatMul::from_qtensor(get("output.weight")?)?
    } else {
        QMatMul::from_arc(embd.clone())?
    };
    Ok((Embedding::new(embd, device)?, norm, output))
}

/// How every project GGUF loader starts, for a model built for `context` positions (at least
/// one): a reader of tensors by name, each read once into its final buffer (candle's reader
/// copies it), and the model's ends ([`read_ends`], the final norm's weight named `norm`).
#[allow(clippy::type_complexity)]
pub fn open_gguf<'a, R: std::io::Read + std::io::Seek>(
    ct: &'a gguf_file::Content,
    reader: &'a mut R,
    device: &'a Device,
    context: usize,
    norm: &str,
) -> Result<(
    impl FnMut(&str) -> Result<QTensor> + 'a,
    (Embedding, QTensor, QMatMul),
)> {
    if context == 0 {
        bail!("the model must be built for at least one position");
    }
    let mut get = move |name: &str| crate::models::gguf::read::tensor(ct, reader, name, device);
    let ends = read_ends(ct, &mut get, norm, device)?;
    Ok((get, ends))
}

/// Layer `layer`'s seven projections in [`PROJECTION_NAMES`] order, `get` reading a tensor
/// by name.
pub fn read_projections(
    get: &mut dyn FnMut(&str) -> Result<QTensor>,
    layer: usize,
) -> Result<[QMatMul; PROJECTIONS]> {
    let mut w = Vec::with_capacity(PROJECTIONS);
    for n in PROJECTION_NAMES {
        w.push(QMatMul::from_qtensor(get(&format!(
            "blk.{layer}.{n}.weight"
        ))?)?);
    }
    Ok(w.try_into()
        .unwrap_or_else(|_| unreachable!("seven projections")))
}

/// RoPE tables (cos, sin) for `positions` positions.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl RopeTables {
    /// The same tables with every entry rounded to f16 and back (a deliberately wrong
    /// variant for the sensitivity table: candle's `quantized_qwen3` keeps its tables in f16).
    pub fn rounded_to_f16(&self) -> Result<Self> {
        let r = |t: &Tensor| t.to_dtype(DType::F16)?.to_dtype(DType::F32);
        Ok(Self {
            cos: r(&self.cos)?,
            sin: r(&self.sin)?,
        })
    }

    /// The tables from each rotated pair's inverse frequency `inv_freq`, each angle computed
    /// directly as `p * inv_freq` (candle-transformers' models' formula; the project's decoders
    /// use it only to compare with them like for like: [`RopeTables::new`] is theirs).
    pub fn direct(inv_freq: &[f32], positions: usize, dev: &Device) -> Result<Self> {
        let inv = Tensor::new(inv_freq, dev)?;
        let t = Tensor::arange(0u32, positions as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.matmul(&inv.reshape((1, inv.elem_count()))?)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// The tables of `n_dims` rotated dimensions (`n_dims / 2` pairs) for `positions`
    /// positions, each angle computed as ggml's CPU rope computes it (ggml-cpu/ops.cpp,
    /// `ggml_rope_cache_init` and `rope_yarn` without YaRN): in f32, `theta = p`, then for each
    /// pair in turn the angle `freq_scale * (theta / factor)` and `theta *= base^(-2/n_dims)`.
    /// The repeated product rounds once per pair, so a late pair's angle differs from
    /// `p * base^(-2i/n_dims)` computed directly by up to about `i` roundings: on the real
    /// Gemma 3 270M (256-dimensional heads, 128 pairs) the direct formula read mean KLD
    /// 2.95e-10 against llama.cpp's f32 logits, 160x llama.cpp's own noise (1.9e-12; a
    /// llama.cpp built without SIMD 1.6e-12), and these tables 5e-12 (2026-11-29, issue 61).
    /// `factors`: llama.cpp's per-pair frequency divisors (`rope_freqs.weight`), if any.
    pub fn new(
        base: f32,
        freq_scale: f32,
        n_dims: usize,
        factors: Option<&[f32]>,
        positions: usize,
        dev: &Device,
    ) -> Result<Self> {
        let pairs = n_dims / 2;
        let step = base.powf(-2.0 / n_dims as f32);
        let (mut cos, mut sin) = (
            Vec::with_capacity(positions * pairs),
            Vec::with_capacity(positions * pairs),
        );
        for p in 0..positions {
            let mut theta = p as f32;
            for i in 0..pairs {
                let ff = factors.map_or(1.0, |f| f[i]);
                let angle = freq_scale * (theta / ff);
                cos.push(angle.cos());
                sin.push(angle.sin());
                theta *= step;
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (positions, pairs), dev)?,
            sin: Tensor::from_vec(sin, (positions, pairs), dev)?,
        })
    }

    /// `x`: (b, heads, len, head_dim), contiguous, at positions `pos..pos+len`; `interleaved`:
    /// pairs `2i, 2i+1` (llama.cpp's NORM layout) rather than `i, i + d/2` (NeoX).
    pub fn apply(&self, x: &Tensor, pos: usize, interleaved: bool) -> Result<Tensor> {
        let len = x.dim(2)?;
        let cos = self.cos.narrow(0, pos, len)?;
        let sin = self.sin.narrow(0, pos, len)?;
        let what = if interleaved {
            "rope (norm)"
        } else {
            "rope (neox)"
        };
        traced!("rope", what, [x, cos, sin], {
            if interleaved {
                candle_nn::rotary_emb::rope_i(x, cos, sin)
            } else {
                candle_nn::rotary_emb::rope(x, cos, sin)
            }
        })
    }
}

/// The project's own quantized models run one sequence at a time (the path the benchmarks
/// time), with a KV cache of their own.
pub trait SingleSeq {
    /// Empties the KV cache.
    fn reset(&mut self);
    /// Runs `x` (b, len) u32 at positions `index_pos..index_pos+len` and returns the logits of
    /// the last position, f32. `index_pos` must be the number of positions already in the
    /// cache, or 0 (which empties the cache first, as candle-transformers' models do).
    fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor>;
}

/// The start of a single-sequence forward of `len` tokens at `index_pos`, the cache holding
/// `held` positions: whether the cache must be emptied first (`index_pos` 0, as
/// candle-transformers' models do); an error for zero tokens or a position other than 0 or
/// `held`.
pub fn forward_start(len: usize, index_pos: usize, held: usize) -> Result<bool> {
    if len == 0 {
        bail!("forward of zero tokens");
    }
    if index_pos != 0 && index_pos != held {
        bail!(
            "forward at position {index_pos} but the KV cache holds {held} positions (reset, or continue at {held})"
        );
    }
    Ok(index_pos == 0)
}

/// The KV cache of one sequence of a batched forward: each layer's cache (`L`), at this
/// sequence's own positions.
#[derive(Debug, Clone)]
pub struct SeqCache<L> {
    pub(crate) layers: Vec<L>,
    /// Positions in the cache (where this sequence's next tokens go).
    pub(crate) pos: usize,
}

impl<L> SeqCache<L> {
    /// An empty cache of these layer caches.
    pub(crate) fn new(layers: Vec<L>) -> Self {
        Self { layers, pos: 0 }
    }

    /// Positions this sequence has been run through.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// A copy of this sequence's first `len` positions (at most those it holds) going on by
    /// itself: each layer's cache through `copy(layer, len)`. None where a layer cannot keep
    /// only those positions (then nothing is copied).
    pub(crate) fn fork(
        &self,
        len: usize,
        copy: impl Fn(&L, usize) -> Option<Result<L>>,
    ) -> Option<Result<Self>> {
        let len = len.min(self.pos);
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            match copy(l, len)? {
                Ok(l) => layers.push(l),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(Self { layers, pos: len }))
    }
}

/// A sequence's share of a step: where its tokens start in the step, how many, first position.
pub type Span = (usize, usize, usize);

/// The input of a batched step over a model of `layers` layers built for `context` positions:
/// the tokens of every sequence, one sequence after another, as ids (1, tokens) on `dev`, and
/// each sequence's [`Span`]. An error, before anything runs, for an empty share, a cache of
/// another model (not `layers` layers) or positions past `context`.
pub fn step_input<L>(
    seqs: &[SeqStep<'_, SeqCache<L>>],
    layers: usize,
    context: usize,
    dev: &Device,
) -> Result<(Tensor, Vec<Span>)> {
    let mut ids = Vec::new();
    let mut spans = Vec::new();
    for s in seqs {
        let (pos, len) = (s.cache.pos, s.tokens.len());
        if len == 0 {
            bail!("a batched step of zero tokens for one sequence");
        }
        if s.cache.layers.len() != layers {
            bail!("a sequence cache of another model");
        }
        if pos + len > context {
            bail!(
                "positions {pos}..{} exceed the {context} positions this model was built for (its context cap); load it with a larger one",
                pos + len
            );
        }
        spans.push((ids.len(), len, pos));
        ids.extend_from_slice(s.tokens);
    }
    let total = ids.len();
    Ok((Tensor::from_vec(ids, (1, total), dev)?, spans))
}

/// The end of a batched step: `h` (1, tokens, hidden) the step's hidden states, `spans` each
/// sequence's tokens in it, `wanted` whether each wants its logits. The last row of every
/// sequence that wants them goes through `head` together ((1, n, hidden) to (1, n, vocab):
/// the final norm and the lm_head); returns per sequence its logits (vocab, f32), or None.
pub fn last_logits(
    h: &Tensor,
    spans: &[Span],
    wanted: impl Iterator<Item = bool>,
    head: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Vec<Option<Tensor>>> {
    let mut out = vec![None; spans.len()];
    let want: Vec<usize> = wanted
        .enumerate()
        .filter_map(|(i, w)| w.then_some(i))
        .collect();
    if want.is_empty() {
        return Ok(out);
    }
    let rows = want
        .iter()
        .map(|&i| h.narrow(1, spans[i].0 + spans[i].1 - 1, 1))
        .collect::<Result<Vec<_>>>()?;
    let logits = head(&Tensor::cat(&rows, 1)?)?.to_dtype(DType::F32)?;
    for (j, &i) in want.iter().enumerate() {
        out[i] = Some(logits.i((0, j))?);
    }
    Ok(out)
}

#[cfg(test)]
mod gelu_tests {
    use super::*;

    /// ggml's table entry for `x`, computed here in f64 from ggml-cpu's formula
    /// (`0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))`) with `half`'s rounding.
    fn ggml(x: f32) -> f32 {
        if x <= -10.0 {
            return 0.0;
        }
        if x >= 10.0 {
            return x;
        }
        let r = half::f16::from_f32(x).to_f64();
        let g = 0.5
            * r
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * r * (1.0 + 0.044715 * r * r)).tanh());
        half::f16::from_f64(g).to_f32()
    }

    #[test]
    fn ggml_gelu_rounds_through_f16_and_keeps_the_ends_exact() {
        let xs: Vec<f32> = vec![
            -12.5, -10.0, -9.99, -3.3, -0.7001, -1e-3, 0.0, 1e-4, 0.3, 0.7001, 1.2345, 2.5, 9.99,
            10.0, 12.3,
        ];
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let got = Gelu::GgmlF16.apply(&t).unwrap().to_vec1::<f32>().unwrap();
        let exact = Gelu::Exact.apply(&t).unwrap().to_vec1::<f32>().unwrap();
        for (x, g) in xs.iter().zip(&got) {
            // An f32 tanh and an f64 one can round to neighbouring f16 values.
            let want = ggml(*x);
            // One f16 step at `want` (the next value away from zero).
            let b = half::f16::from_f32(want).to_bits();
            let ulp = (half::f16::from_bits(b.wrapping_add(1)).to_f32() - want).abs();
            assert!(
                *g == want || (g - want).abs() <= ulp,
                "x {x}: got {g}, ggml {want}"
            );
            if *x > -10.0 && *x < 10.0 {
                assert_eq!(
                    *g,
                    half::f16::from_f32(*g).to_f32(),
                    "x {x}: {g} is not an f16 value"
                );
            }
        }
        // The ends: 0 at or below -10, x itself (not rounded to f16) at or above 10.
        assert_eq!(got[0], 0.0);
        assert_eq!(got[1], 0.0);
        assert_eq!(got[14], 12.3);
        assert_eq!(got[13], 10.0);
        // And it is not the exact GELU: the rounding shows.
        assert!(got.iter().zip(&exact).any(|(g, e)| g != e));
        // Exact is candle's gelu.
        assert_eq!(exact, t.gelu().unwrap().to_vec1::<f32>().unwrap());
    }
}
