//! Continuous batching over the quantized Gemma 3 ([`Batched`], `modelbench serve --max-batch`):
//! one matmul per weight per step for every token of every sequence, attention per sequence.

use super::*;
use crate::models::quantized::parts::{last_logits, step_input};

/// The KV cache of one sequence of a batched forward ([`Batched`]): every layer's keys and
/// values at this sequence's own positions, laid out as the single-sequence cache is (its
/// sliding layers hold the last `min(pos, window - 1)` positions).
pub type SeqCache = crate::models::quantized::parts::SeqCache<Cache>;

/// One sequence's share of a batched step ([`crate::models::batched::SeqStep`] over this model's cache).
pub type SeqStep<'a> = crate::models::batched::SeqStep<'a, SeqCache>;

/// Continuous batching over the quantized Gemma 3 (`modelbench serve --max-batch`): every
/// token of every sequence in a step goes through each weight matmul together (one matmul
/// per weight per step), and attention runs per sequence against that sequence's own cache,
/// with its own positions, RoPE and masks, exactly as [`ModelWeights::forward`] runs it for
/// one sequence of the same chunk. A sequence's results therefore do not depend on what else
/// is in the batch, provided each matmul computes a row the same whatever the number of rows:
/// candle's CPU kernels are row-independent except that some switch kernels between one row
/// and several (on x86, Q6_K weights use a compact GEMV for one row and repacked tiles for
/// more). [`Batched::new`] measures that for every weight and runs a lone row of such a weight
/// as two (the row twice), so a step of one sequence computes exactly as a bigger step does.
#[derive(Debug, Clone)]
pub struct Batched {
    model: ModelWeights,
    /// `--fast-weights`: also GELU and softmax on the host ([`host_ops`]).
    fast: bool,
    /// `--swa-full`: the sliding layers' caches keep every position, as the global ones do,
    /// and attend over all of them masked to the window (the masks in `forward`).
    swa_full: bool,
    /// Per layer, the seven projections as the batched path runs them.
    projs: Vec<[Proj; PROJECTIONS]>,
    output: Proj,
}

/// A weight as a batched path runs it (see [`Batched::new`]), and whether a lone row runs
/// as two; the project's Llama / Qwen3 batch through it too.
#[derive(Debug, Clone)]
pub struct Proj {
    w: Weight,
    lone_as_two: bool,
}

/// Which code multiplies by a weight: candle's quantized matmul, or (with `--fast-weights`
/// on a CPU with AVX-512 VNNI) the project's kernels ([`PackedQ8_0`], [`PackedK`]).
#[derive(Debug, Clone)]
pub(super) enum Weight {
    Candle(QMatMul),
    Packed(PackedQ8_0),
    PackedK(PackedK),
}

impl Weight {
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Candle(w) => w.forward(x),
            Weight::Packed(p) => p.forward(x),
            Weight::PackedK(p) => p.forward(x),
        }
    }
}

/// Whether `w` gives row 0 different bits alone than with other rows beside it (measured on
/// seeded inputs; the kernel choice depends only on shapes and dtype, not on values).
pub(super) fn lone_row_differs(w: &Weight, k: usize, dev: &Device) -> Result<bool> {
    let x = Tensor::randn(0f32, 1f32, (8, k), dev)?;
    let alone = w
        .forward(&x.narrow(0, 0, 1)?)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for m in [2usize, 5, 8] {
        let many = w.forward(&x.narrow(0, 0, m)?)?.i(0)?.to_vec1::<f32>()?;
        if alone
            .iter()
            .zip(&many)
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) fn in_features(w: &QMatMul) -> Result<usize> {
    match w {
        QMatMul::QTensor(t) => Ok(t.shape().dims2()?.1),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => Ok(t.dims2()?.1),
    }
}

pub(super) fn matmul_rows(kind: &str, p: &Proj, x: &Tensor) -> Result<Tensor> {
    op(kind, || p.forward(x))
}

impl Proj {
    /// `w` as a batched path runs it ([`proj`]; `fast`: `--fast-weights`).
    pub fn new(w: &QMatMul, fast: bool, dev: &Device) -> Result<Self> {
        proj(w, fast, dev).map(|(p, _)| p)
    }

    /// `w` on candle's kernels (no `--fast-weights`), whether a lone row runs as two measured
    /// once per weight type and shape (`probed` keeps the answers across a model's weights:
    /// the kernel choice depends on nothing else, and a mixture of experts has thousands of
    /// weights of a few shapes).
    pub fn candle_probed(
        w: &QMatMul,
        dev: &Device,
        probed: &mut std::collections::HashMap<(String, Vec<usize>), bool>,
    ) -> Result<Self> {
        let key = match w {
            QMatMul::QTensor(t) => (format!("{:?}", t.dtype()), t.shape().dims().to_vec()),
            QMatMul::Tensor(t) => ("f32".to_string(), t.dims().to_vec()),
            QMatMul::TensorF16(t) => ("f16".to_string(), t.dims().to_vec()),
        };
        let run = Weight::Candle(w.clone());
        let lone_as_two = match probed.get(&key) {
            Some(v) => *v,
            None => {
                let v = lone_row_differs(&run, in_features(w)?, dev)?;
                probed.insert(key, v);
                v
            }
        };
        Ok(Self {
            w: run,
            lone_as_two,
        })
    }

    /// `x` (1, rows, k) through the weight; a lone row runs as two where the kernel would
    /// compute it otherwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.lone_as_two && x.dim(1)? == 1 {
            self.w.forward(&Tensor::cat(&[x, x], 1)?)?.narrow(1, 0, 1)
        } else {
            self.w.forward(x)
        }
    }

    /// Whether a lone row runs as two.
    pub fn lone_as_two(&self) -> bool {
        self.lone_as_two
    }
}

/// A Q5_0 tensor re-encoded as Q8_0, exactly: both are blocks of 32 weights with one f16
/// scale, Q5_0's 5-bit values `q - 16` (in -16..=15) fit Q8_0's i8, so every dequantized
/// weight is bit-equal. None for another dtype. candle 0.11 has no SIMD kernel for Q5_0
/// (a scalar loop) and AVX2 / AVX-512 ones for Q8_0.
pub fn q5_0_as_q8_0(t: &QTensor) -> Result<Option<QTensor>> {
    if t.dtype() != GgmlDType::Q5_0 {
        return Ok(None);
    }
    let data = t.data()?;
    let mut out = Vec::with_capacity(data.len() / 22 * 34);
    for b in data.chunks_exact(22) {
        out.extend_from_slice(&b[0..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let mut q = [0u8; 32];
        for j in 0..16 {
            let h0 = (((qh >> j) & 1) << 4) as u8;
            let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
            q[j] = (((qs[j] & 0x0F) | h0) as i8 - 16) as u8;
            q[j + 16] = (((qs[j] >> 4) | h1) as i8 - 16) as u8;
        }
        out.extend_from_slice(&q);
    }
    Ok(Some(ggml_file::qtensor_from_ggml(
        GgmlDType::Q8_0,
        &out,
        t.shape().dims().to_vec(),
        &t.device(),
    )?))
}

/// `w` as the batched path runs it. With `fast`, where the CPU has AVX-512 VNNI: a Q8_0 or
/// Q5_0 weight on [`PackedQ8_0`], a Q4_K or Q6_K one on [`PackedK`]; without, a Q5_0 weight
/// re-encoded as Q8_0 on candle's SIMD Q8_0 loop; anything else on candle's kernels. Then
/// whether a lone row must run as two, and whether the weight was re-encoded (a copy: the
/// file's form is no longer needed).
pub(super) fn proj(w: &QMatMul, fast: bool, dev: &Device) -> Result<(Proj, bool)> {
    let k = in_features(w)?;
    let mut run = Weight::Candle(w.clone());
    let mut copied = false;
    if fast {
        if let QMatMul::QTensor(t) = w {
            let ours = q8_matmul::available() && dev.is_cpu();
            if let Some(p) = ours
                .then(|| PackedQ8_0::from_qtensor(t))
                .transpose()?
                .flatten()
            {
                run = Weight::Packed(p);
                copied = true;
            } else if let Some(p) = ours
                .then(|| PackedK::from_qtensor(t))
                .transpose()?
                .flatten()
            {
                run = Weight::PackedK(p);
                copied = true;
            } else if let Some(q) = q5_0_as_q8_0(t)? {
                run = Weight::Candle(QMatMul::from_qtensor(q)?);
                copied = true;
            }
        }
    }
    let lone_as_two = lone_row_differs(&run, k, dev)?;
    Ok((
        Proj {
            w: run,
            lone_as_two,
        },
        copied,
    ))
}

/// What stands in for a weight the batched path re-encoded: the file's form is dropped (and
/// freed where the batched model held the last reference), and nothing reads it again (the
/// batched forward runs the re-encoded [`Proj`]).
pub(super) fn released() -> Result<QMatMul> {
    Ok(QMatMul::Tensor(Tensor::zeros(0, DType::F32, &Device::Cpu)?))
}

/// `--fast-weights` on a tied lm_head whose table `model` holds alone (its embedding and
/// lm_head the only references) and whose file it kept: the table is freed first, then
/// repacked from the file band by band ([`PackedQ8_0::from_bands`]) and the embedding looks
/// its rows up in the repacked tiles, so the table is never in memory twice (repacking from
/// the loaded table would hold both: 178 MB more for Gemma 3 270M). None where that does not
/// apply (the caller repacks from memory, or keeps candle's kernel).
pub(super) fn lm_head_from_file(model: &mut ModelWeights, dev: &Device) -> Result<Option<Proj>> {
    let (
        Some((file, offset)),
        QMatMul::QTensor(q),
        Embedding::Rows {
            q: e,
            vocab,
            hidden,
        },
    ) = (&model.embd_source, &model.output, &model.embed)
    else {
        return Ok(None);
    };
    let (vocab, hidden, dtype) = (*vocab, *hidden, q.dtype());
    let alone = Arc::ptr_eq(q, e) && Arc::strong_count(q) == 2;
    if !alone
        || !dev.is_cpu()
        || !q8_matmul::available()
        || !PackedQ8_0::fits(dtype, vocab, hidden)
        || q.shape().dims2()? != (vocab, hidden)
    {
        return Ok(None);
    }
    let (file, offset) = (file.clone(), *offset);
    model.output = released()?;
    model.embed = Embedding::Dense(candle_nn::Embedding::new(
        Tensor::zeros((0, hidden), DType::F32, &Device::Cpu)?,
        hidden,
    ));
    let p = PackedQ8_0::from_bands(dtype, vocab, hidden, |i, buf| {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset + (i * buf.len()) as u64)
            .map_err(candle_core::Error::wrap)
    })?;
    model.embed = Embedding::Packed {
        p: p.clone(),
        vocab,
        hidden,
    };
    let run = Weight::Packed(p);
    let lone_as_two = lone_row_differs(&run, hidden, dev)?;
    Ok(Some(Proj {
        w: run,
        lone_as_two,
    }))
}

impl Batched {
    /// Wraps loaded weights (their single-sequence caches are not used) and measures which
    /// weights need a lone row run as two (see [`Batched`]). With `fast` (`--fast-weights`),
    /// every weight runs on the project's kernels where the CPU has AVX-512 VNNI: Q8_0 and
    /// Q5_0 ones (the lm_head included) on [`PackedQ8_0`] against per-32 activation blocks,
    /// Q4_K and Q6_K ones on [`PackedK`] against per-256 blocks, as ggml computes each type,
    /// each weight tile read once for up to four rows; GELU and softmax run on the host
    /// ([`host_ops`]). Elsewhere Q5_0 weights run re-encoded as Q8_0 ([`q5_0_as_q8_0`]) on
    /// candle's SIMD Q8_0 loop. Logits differ from the bench path's in float rounding (still
    /// the same alone as batched); the KLD gate judges them (tests/kld.rs: passes).
    ///
    /// Memory: a re-encoded weight replaces the file's form in `model` as soon as it is made,
    /// so where `model` holds the last reference (`serve --fast-weights` hands its model
    /// over) the file's form is freed then and the two are never all held at once; a tied
    /// lm_head is repacked from the file ([`lm_head_from_file`]). The single-sequence forward
    /// of the wrapped model is not used again (its re-encoded weights are gone).
    pub fn new(mut model: ModelWeights, fast: bool, swa_full: bool) -> Result<Self> {
        if let Some(w) = model.wrong {
            candle_core::bail!(
                "a Gemma 3 made wrong (`{}`) runs single-sequence only, not batched",
                w.describe()
            );
        }
        model.reset();
        let dev = model.device.clone();
        let mut projs = Vec::with_capacity(model.layers.len());
        for l in &mut model.layers {
            let ws = [
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ];
            let mut p = Vec::with_capacity(PROJECTIONS);
            for w in ws {
                let (pj, copied) = proj(w, fast, &dev)?;
                if copied {
                    *w = released()?;
                }
                p.push(pj);
            }
            projs.push(
                p.try_into()
                    .unwrap_or_else(|_| unreachable!("seven projections")),
            );
        }
        let output = match fast {
            true => match lm_head_from_file(&mut model, &dev)? {
                Some(p) => p,
                None => {
                    let (p, copied) = proj(&model.output, fast, &dev)?;
                    if copied {
                        model.output = released()?;
                    }
                    p
                }
            },
            false => proj(&model.output, false, &dev)?.0,
        };
        Ok(Self {
            model,
            fast,
            swa_full,
            projs,
            output,
        })
    }

    /// How many of the model's weight matmuls run a lone row as two, and how many run on the
    /// project's kernels.
    pub fn adapted_weights(&self) -> (usize, usize) {
        let all = || {
            self.projs
                .iter()
                .flatten()
                .chain(std::iter::once(&self.output))
        };
        (
            all().filter(|p| p.lone_as_two).count(),
            all()
                .filter(|p| matches!(p.w, Weight::Packed(_) | Weight::PackedK(_)))
                .count(),
        )
    }

    pub fn model(&self) -> &ModelWeights {
        &self.model
    }
}

impl crate::models::batched::BatchedLm for Batched {
    type Seq = SeqCache;

    /// An empty cache for one sequence.
    fn new_seq(&self) -> SeqCache {
        SeqCache::new(
            self.model
                .layers
                .iter()
                .map(|l| match l.cache {
                    Cache::Sliding(_) if !self.swa_full => Cache::Sliding(None),
                    _ => Cache::Global(KvCache::new(2, self.model.context)),
                })
                .collect(),
        )
    }

    /// Runs one step: each sequence's tokens at its own next positions, all through each
    /// weight matmul together. Returns, per sequence, the logits (vocab, f32) of its last
    /// token where `logits` asked for them. On an error no cache has advanced its position,
    /// but caches may hold part of the step: drop the sequences of a failed step.
    fn forward(&self, seqs: &mut [SeqStep<'_>]) -> Result<Vec<Option<Tensor>>> {
        let m = &self.model;
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let window = m.cfg.sliding_window.max(1);
        let (x, spans) = step_input(seqs, m.layers.len(), m.context, &m.device)?;
        let total = x.dim(1)?;
        let mut h = (m.embed.forward(&x)? * (m.cfg.hidden as f64).sqrt())?;

        // Each sequence's masks, as the single-sequence forward builds them.
        let mut masks = Vec::with_capacity(seqs.len());
        for &(_, len, pos) in &spans {
            let mk = |k0: usize, n_k: usize, w: Option<usize>| -> Result<Option<Tensor>> {
                attention_mask(pos, len, k0, n_k, w)
                    .map(|v| Tensor::from_vec(v, (len, n_k), &m.device))
                    .transpose()
            };
            // The sliding layers' caches hold the last `window - 1` positions at most; with
            // --swa-full they hold every position and attend over all of them, as the global
            // layers do, masked to the window: each key then sits at the same place in its
            // row whatever position the step starts at (with the window's keys alone the row
            // would start at `pos - window + 1`, and att x V would add the same terms in
            // other SIMD lanes: another last bit for a prompt whose start a cache reused).
            let sl = pos.min(window - 1);
            masks.push((
                mk(0, pos + len, None)?,
                if self.swa_full {
                    mk(0, pos + len, Some(window))?
                } else {
                    mk(pos - sl, sl + len, Some(window))?
                },
            ));
        }
        let shape = Shape::of(&m.cfg);
        for (li, layer) in m.layers.iter().enumerate() {
            let pj = &self.projs[li];
            let sliding = layer.window.is_some();
            let rope = if sliding {
                &m.rope_local
            } else {
                &m.rope_global
            };
            let a = op("rms_norm", || layer.attn_norm.forward(&h))?;

            let s = &shape;
            let q = matmul_rows("matmul", &pj[0], &a)?.reshape((1, total, s.heads, s.head_dim))?;
            let k =
                matmul_rows("matmul", &pj[1], &a)?.reshape((1, total, s.kv_heads, s.head_dim))?;
            let v =
                matmul_rows("matmul", &pj[2], &a)?.reshape((1, total, s.kv_heads, s.head_dim))?;
            let q = op("rms_norm", || layer.q_norm.forward(&q))?;
            let k = op("rms_norm", || layer.k_norm.forward(&k))?;
            let mut outs = Vec::with_capacity(seqs.len());
            for ((sq, &(start, len, pos)), mask) in seqs.iter_mut().zip(&spans).zip(&masks) {
                let (q, k, v) = op("copy", || {
                    let t = |x: &Tensor| x.narrow(1, start, len)?.transpose(1, 2)?.contiguous();
                    Ok::<_, candle_core::Error>((t(&q)?, t(&k)?, t(&v)?))
                })?;
                let q = op("rope", || rope.apply(&q, pos))?;
                let k = op("rope", || rope.apply(&k, pos))?;
                let (k, v) = op("kv_cache", || {
                    let (k, v) = sq.cache.layers[li].update(k, v, window)?;
                    Ok::<_, candle_core::Error>((k.contiguous()?, v.contiguous()?))
                })?;
                let keys = k.dim(2)?;
                let rep = s.heads / s.kv_heads;
                let q = q.reshape((1, s.kv_heads, rep * len, s.head_dim))?;
                let mut att = op("attn_qk", || q.matmul(&k.t()?)? * s.scale)?;
                if let Some(cap) = s.attn_softcap {
                    att = op("scale", || (att / cap)?.tanh()? * cap)?;
                }
                let mask = if sliding { &mask.1 } else { &mask.0 };
                if let Some(mask) = mask {
                    att = op("mask", || {
                        att.reshape((1, s.kv_heads, rep, len, keys))?
                            .broadcast_add(mask)?
                            .reshape((1, s.kv_heads, rep * len, keys))
                    })?;
                }
                // On the host on every CPU path, not only --fast-weights: candle's CPU
                // softmax sums a row's first len & !31 entries in SIMD lanes and the rest one
                // by one, so a position's weights depend on how many keys its chunk ended
                // at (masked keys add exact zeros either way). A prompt whose earlier
                // positions were computed in another chunk (prefix-cache reuse, another
                // --prefill-chunk) then read other bits: measured 2026-11-28 on Gemma 3 270M,
                // up to 0.42 nats on the next token's top-20 log-probabilities with the cache
                // against without, 0.54 for chunk 40 against 256; 0 for both with the
                // host's row-order sum (docs/serving.md, "Which positions are reused").
                let att = op("softmax", || {
                    if att.device().is_cpu() {
                        host_ops::softmax_last_dim(&att)
                    } else {
                        candle_nn::ops::softmax_last_dim(&att)
                    }
                })?;
                outs.push(op("attn_av", || {
                    host_ops::attention_values(&att, &v)?
                        .reshape((1, s.heads, len, s.head_dim))?
                        .transpose(1, 2)?
                        .reshape((1, len, s.heads * s.head_dim))
                })?);
            }
            let out = op("copy", || Tensor::cat(&outs, 1))?;
            let a = matmul_rows("matmul", &pj[3], &out)?;
            let a = op("rms_norm", || layer.post_attn_norm.forward(&a))?;
            h = op("add", || a + &h)?;
            let x = op("rms_norm", || layer.ffn_norm.forward(&h))?;
            let gate = matmul_rows("matmul", &pj[4], &x)?;
            let gate = op("activation", || {
                if self.fast && gate.device().is_cpu() {
                    host_ops::gelu_tanh(&gate)
                } else {
                    gate.gelu()
                }
            })?;
            let up = matmul_rows("matmul", &pj[5], &x)?;
            let hm = op("mul", || gate * up)?;
            let mm = matmul_rows("matmul", &pj[6], &hm)?;
            let mm = op("rms_norm", || layer.post_ffn_norm.forward(&mm))?;
            h = op("add", || mm + &h)?;
        }
        for (sq, &(_, len, pos)) in seqs.iter_mut().zip(&spans) {
            sq.cache.pos = pos + len;
        }

        last_logits(&h, &spans, seqs.iter().map(|s| s.logits), |last| {
            let last = op("rms_norm", || m.norm.forward(last))?;
            let logits = matmul_rows("lm_head", &self.output, &last)?;
            match m.cfg.final_logit_softcapping {
                Some(cap) => (logits / cap)?.tanh()? * cap,
                None => Ok(logits),
            }
        })
    }

    fn describe(&self) -> String {
        let (lone, packed) = self.adapted_weights();
        let mut lone_rows = match lone {
            0 => String::new(),
            n => format!(", {n} weights run a lone row as two (batch-independent results)"),
        };
        if self.swa_full {
            lone_rows.push_str(&format!(
                ", sliding-window layers keep every position (--swa-full: prompts longer than the {}-position window reusable)",
                self.model.cfg.sliding_window
            ));
        }
        match (self.fast, packed) {
            (true, p) if p > 0 => format!("the project's quantized gemma3 with --fast-weights: {p} weights (the lm_head included) on the project's AVX-512 VNNI kernels (Q8_0/Q5_0 against per-32 activation blocks, Q4_K/Q6_K per-256, as ggml), GELU and softmax on the host{lone_rows}"),
            (true, _) => format!("the project's quantized gemma3 with --fast-weights: Q5_0 weights as Q8_0 on candle's kernels (this CPU lacks AVX-512 VNNI for the project's Q8_0 kernel){lone_rows}"),
            (false, _) => format!("the project's quantized gemma3 on the bench path's kernels, attention softmax on the host (row-order sums: the same bits whatever the chunk){lone_rows}"),
        }
    }
    fn fork_seq(&self, seq: &SeqCache, len: usize) -> Option<Result<SeqCache>> {
        let pos = seq.pos();
        // A sliding layer keeps the last `window - 1` positions (all a next query sees).
        let keep = self.model.cfg.sliding_window.max(1) - 1;
        seq.fork(len, |l, len| match l {
            Cache::Global(c) => {
                Some(crate::models::quantized::parts::copy_kv(c, len).map(Cache::Global))
            }
            Cache::Sliding(None) => Some(Ok(Cache::Sliding(None))),
            // Cut and concatenated into new tensors each step, never written in place: a
            // narrowed view is a copy. It holds positions pos - held .. pos; a sequence of
            // `len` positions keeps len - min(len, keep) .. len, which must be among them.
            Cache::Sliding(Some((k, v))) => {
                let held = match k.dim(2) {
                    Ok(h) => h,
                    Err(e) => return Some(Err(e)),
                };
                let from = len - len.min(keep);
                let first = pos - held;
                if from < first {
                    return None;
                }
                if len == from {
                    return Some(Ok(Cache::Sliding(None)));
                }
                let cut = |t: &Tensor| t.narrow(2, from - first, len - from);
                Some(cut(k).and_then(|k| Ok(Cache::Sliding(Some((k, cut(v)?))))))
            }
        })
    }
}
