//! Element-wise ops of the batched serving path with `--fast-weights`, computed on the host in
//! loops the compiler vectorizes, where candle 0.11.1's CPU ops are slow for the sizes serving
//! meets (measured on Gemma 3 270M, 1 thread, the batched forward's op profile):
//!
//! - GELU (tanh approximation): candle evaluates `tanh` per element through libm; a
//!   128-token prefill spent 63 ms of its 168 ms in the 18 layers' GELU (128 x 2048 values each).
//! - softmax over the last dimension: candle hands even a few hundred values to rayon's pool;
//!   each call waits for a pool thread to wake (about 50 us a call, 72 calls a decode step of 4
//!   sequences: 3.6 ms of 23.5).
//!
//! Both are the same functions to float rounding: `exp` is evaluated by range reduction and a
//! degree-7 polynomial (relative error about 2e-7), and GELU as `x * sigmoid(2u)`, which is
//! `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`. The unit tests hold both
//! to an f64 evaluation of the same formulas, with the tolerance candle's own ops reach against
//! it.

use candle_core::{DType, Device, Result, Tensor};

/// `e^x` in f32 without libm: `x = n ln2 + r`, `|r| <= ln2 / 2`, `e^r` by a Taylor polynomial
/// to degree 7 (truncation under 3e-8 relative), scaled by `2^n` through the exponent bits.
/// Inputs above 88 give `e^88`; below -87 (masked scores included), 0.
#[inline(always)]
fn exp(x0: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x0.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    let e = f32::from_bits(((n as i32 + 127) << 23) as u32) * p;
    if x0 < -87.0 {
        0.0
    } else {
        e
    }
}

/// GELU with the tanh approximation (Gemma 3's `gelu_pytorch_tanh`) of one value.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    let u = C * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// Values past which a slice is split over candle's barrier pool.
const PARALLEL_FROM: usize = 1 << 15;

fn host(x: &Tensor) -> Result<(Vec<f32>, Vec<usize>)> {
    let dims = x.dims().to_vec();
    let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((v, dims))
}

/// Runs `f` over `v` in chunks of whole rows of `row` values, on candle's barrier pool when
/// `v` is large.
fn for_rows(v: &mut [f32], row: usize, f: impl Fn(&mut [f32]) + Sync) {
    if v.len() < PARALLEL_FROM || v.is_empty() {
        for r in v.chunks_exact_mut(row) {
            f(r);
        }
        return;
    }
    let rows = v.len() / row;
    let ptr = v.as_mut_ptr() as usize;
    crate::pool::execute_chunked(rows, |range| {
        for r in range {
            // Safety: each row is handed to exactly one chunk.
            let s = unsafe { std::slice::from_raw_parts_mut((ptr as *mut f32).add(r * row), row) };
            f(s);
        }
    });
}

/// GELU (tanh approximation) of every value of a CPU tensor, as f32.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let (mut v, dims) = host(x)?;
    let row = *dims.last().unwrap_or(&1);
    for_rows(&mut v, row.max(1), |r| {
        for x in r.iter_mut() {
            *x = gelu_one(*x);
        }
    });
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// Softmax over the last dimension of a CPU tensor, as f32 (max-subtracted, as candle's).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let (mut v, dims) = host(x)?;
    let row = *dims.last().unwrap_or(&1);
    for_rows(&mut v, row.max(1), |r| {
        let max = r.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in r.iter_mut() {
            *x = exp(*x - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in r.iter_mut() {
            *x *= inv;
        }
    });
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// The widest inner dimension gemm (candle's CPU f32 matmul) sums in one block. Past it
/// gemm-common's `kernel_params` splits the inner dimension into balanced blocks (`k_iter =
/// ceil(k / 512)`, `kc = ceil(k / k_iter)`), so the same terms are grouped otherwise when the
/// dimension's length changes.
pub const GEMM_ONE_BLOCK: usize = 512;

/// Attention weights times values, `att` (.., rows, keys) by `v` (.., keys, head_dim), with
/// each output summed over keys the same way whatever the number of keys: over fixed blocks of
/// [`GEMM_ONE_BLOCK`] keys from key 0 (each one gemm block, summed in key order; the masked
/// keys past a row's own add exact zeros), the blocks' results then added in order. With
/// candle's one `matmul` a row's sum is grouped by how many keys its step had (the balanced
/// blocks above), so a position computed in another prefill chunk (a prefix cache's reuse)
/// read other bits once its chunk saw more than 512 keys (measured on Gemma 3 270M: a
/// 700-token prompt's last logits moved by up to 1.9 between chunkings). At most 512 keys:
/// the one matmul, as before. Not on the CPU: the one matmul.
pub fn attention_values(att: &Tensor, v: &Tensor) -> Result<Tensor> {
    use candle_core::D;
    let keys = att.dim(D::Minus1)?;
    if keys <= GEMM_ONE_BLOCK || !att.device().is_cpu() {
        return att.matmul(v);
    }
    let mut out: Option<Tensor> = None;
    let mut start = 0;
    while start < keys {
        let n = GEMM_ONE_BLOCK.min(keys - start);
        let a = att.narrow(D::Minus1, start, n)?.contiguous()?;
        let b = v.narrow(D::Minus2, start, n)?.contiguous()?;
        let part = a.matmul(&b)?;
        out = Some(match out {
            None => part,
            Some(o) => (o + part)?,
        });
        start += n;
    }
    out.ok_or_else(|| candle_core::Error::Msg("attention over no keys".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of [`attention_values`]: a row's output does not depend on how many masked
    /// keys follow its own (up to 1100 keys, across two and three blocks), where one candle
    /// matmul's does once the keys pass 512; at most 512 keys it is the one matmul.
    #[test]
    fn attention_values_do_not_depend_on_the_number_of_keys() {
        let (rows, hd) = (64usize, 256usize);
        let val = |i: usize| ((i * 2654435761usize) % 1000) as f32 / 997.0 - 0.5;
        let v_all: Vec<f32> = (0..1100 * hd).map(val).collect();
        // Row r attends to the first 600 keys (weights summing to about 1), the rest masked.
        let run = |keys: usize, blocked: bool| -> Vec<f32> {
            let att: Vec<f32> = (0..rows * keys)
                .map(|i| {
                    if i % keys < 600 {
                        val(i % keys + 7 * (i / keys)) / 300.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let att = Tensor::from_vec(att, (1, rows, keys), &Device::Cpu).unwrap();
            let v =
                Tensor::from_vec(v_all[..keys * hd].to_vec(), (1, keys, hd), &Device::Cpu).unwrap();
            let o = if blocked {
                attention_values(&att, &v)
            } else {
                att.matmul(&v)
            };
            o.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let bits = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        let base = run(600, true);
        for keys in [700, 1024, 1100] {
            assert!(bits(&base, &run(keys, true)), "{keys} keys, blocked");
        }
        // Without the blocks: another grouping (so the test can fail).
        assert!(
            !bits(&run(700, false), &run(1100, false)),
            "one matmul: 700 vs 1100 keys"
        );
        // At most 512 keys the one matmul.
        let small = Tensor::ones((1, 2, 300), DType::F32, &Device::Cpu).unwrap();
        let vs = Tensor::ones((1, 300, 4), DType::F32, &Device::Cpu).unwrap();
        let a = attention_values(&small, &vs)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(a.iter().all(|&x| x == 300.0));
    }

    fn values() -> Vec<f32> {
        let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 400.0).collect();
        v.extend([-100.0, -30.0, -9.5, 9.5, 30.0, 100.0, 0.0, 1e-8, -1e-8]);
        v
    }

    fn gelu64(x: f32) -> f64 {
        let x = x as f64;
        let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        0.5 * x * (1.0 + u.tanh())
    }

    /// Largest error against the f64 formula, scaled by max(1, |value|).
    fn worst(got: &[f32], want: &[f64]) -> f64 {
        got.iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0))
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_is_close_to_libm_over_the_range() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            assert!((a - b).abs() <= 4e-7 * b, "exp({x}): {a} vs {b}");
        }
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn gelu_is_as_close_to_the_formula_as_candles() {
        let v = values();
        let want: Vec<f64> = v.iter().map(|&x| gelu64(x)).collect();
        let t = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
        let candle: Vec<f32> = t.gelu().unwrap().to_vec1().unwrap();
        let ours: Vec<f32> = gelu_tanh(&t).unwrap().to_vec1().unwrap();
        let (c, o) = (worst(&candle, &want), worst(&ours, &want));
        // candle's own error against the formula, floored at 2 f32 ulps of 1
        let tol = (4.0 * c).max(2.4e-7);
        assert!(o <= tol, "ours {o:e} against candle's {c:e}");
        // large inputs: both tails exact enough to pass values through / give zero
        assert_eq!(ours[v.len() - 4], 100.0);
        assert!(ours[v.len() - 9].abs() < 1e-30);
    }

    #[test]
    fn softmax_matches_candles_and_sums_to_one() {
        let x = Tensor::randn(0f32, 3f32, (3, 5, 257), &Device::Cpu).unwrap();
        let ours: Vec<f32> = softmax_last_dim(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let candle: Vec<f32> = candle_nn::ops::softmax_last_dim(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        for (r, (o, c)) in ours.chunks(257).zip(candle.chunks(257)).enumerate() {
            let row = &xs[r * 257..(r + 1) * 257];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let want: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp() / z).collect();
            let (eo, ec) = (worst(o, &want), worst(c, &want));
            // each value carries exp's relative error (under 4e-7, the bound the exp test
            // holds) twice, once in its numerator and once through the sum
            assert!(
                eo <= (4.0 * ec).max(8e-7),
                "row {r}: ours {eo:e} candle {ec:e}"
            );
            let s: f32 = o.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "row {r} sums to {s}");
        }
        // a large tensor goes through the pool: same bits as row by row
        let big = Tensor::randn(0f32, 3f32, (256, 300), &Device::Cpu).unwrap();
        let whole: Vec<f32> = softmax_last_dim(&big)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let first: Vec<f32> = softmax_last_dim(&big.narrow(0, 0, 1).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(first
            .iter()
            .zip(&whole)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
