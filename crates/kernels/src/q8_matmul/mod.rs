//! The project's own Q8_0 matmul for the batched serving path (`modelbench serve
//! --fast-weights`): Q8_0 weights (and Q5_0 ones re-encoded as Q8_0, exactly) against
//! activations quantized to Q8_0 blocks of 32, as ggml computes `q8_0 x q8_0` and `q5_0 x
//! q8_0` dot products, with every weight tile read once for up to [`ROWS`] activation rows.
//!
//! Why: candle 0.11.1's x86 Q8_0 matmul has two paths. Its repacked AVX-512 VNNI tiles
//! share each weight read across four rows but take only in-features that are multiples of
//! 256 and quantize activations per 256 (a coarser function; widening the layers' 640-input
//! weights to use them failed the KLD gate, docs/serving.md). Its generic loop re-reads the
//! whole weight for every row at about 16 GMAC/s here, so a step of 4 sequences costs 4
//! steps of one (measured: Gemma 3 270M ffn_gate, n=2048 k=640, 1 thread: 80 us at 1 row,
//! 315 us at 4). This kernel keeps ggml's per-32 activation blocks and reuses each weight
//! tile across rows.
//!
//! Exactness: per block, the integer dot product is exact (i32); the float part is, per
//! output, `acc = fma(d_w * d_a, isum, acc)` over blocks in order, the same operations in the
//! same order on every path (AVX-512 VNNI and the portable reference [`PackedQ8_0::matmul_ref`]),
//! so both give the same bits, and a row's result does not depend on the other rows beside
//! it. Results differ from candle's generic Q8_0 loop in float rounding only (it sums per
//! SIMD lane and reduces at the end).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, Device, Result, Tensor};
use half::f16;

/// Output columns per weight tile (one AVX-512 register of i32 / f32).
pub const TILE_N: usize = 16;
/// Values per Q8_0 block.
pub const QK: usize = 32;
/// Activation rows computed against one weight tile read.
pub const ROWS: usize = 4;

/// The quants of one Q8_0 block of 32 values for [`TILE_N`] output columns, offset by +128
/// (u8, for `vpdpbusd`'s unsigned operand) as `[group of 4 k][column][4]`; cache-line
/// aligned (the scales live in their own array).
#[repr(C, align(64))]
#[derive(Clone)]
struct Tile {
    qs: [u8; QK * TILE_N],
}

/// An activation row's Q8_0 block: scale, quants, and sums of the quants: 128 times the
/// block's (the +128 offset's correction of [`PackedQ8_0`]), 128 times each half's
/// ([`PackedK`]'s signed weights, scaled per 16), and the block's as f32 ([`PackedK`]'s
/// minimums).
#[derive(Clone, Copy, Debug, Default)]
struct Act {
    d: f32,
    corr: i32,
    corr_lo: i32,
    corr_hi: i32,
    sum: f32,
    qs: [i8; QK],
}

/// `forward` of a packed weight type ([`PackedQ8_0`], [`PackedK`]: both have `k`, `n`, a
/// fast path `matmul` and a portable reference `matmul_ref` that give the same bits).
macro_rules! packed_forward {
    ($doc:literal) => {
        #[doc = $doc]
        pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
            forward_with(x, self.k, self.n, |xs, m, out| {
                if available() {
                    self.matmul(xs, m, out)
                } else {
                    self.matmul_ref(xs, m, out)
                }
            })
        }
    };
}

/// A Q8_0 (or Q5_0) weight of `n` outputs and `k` inputs, repacked into tiles.
#[derive(Clone)]
pub struct PackedQ8_0 {
    n: usize,
    k: usize,
    /// `[n / TILE_N][k / QK]`
    tiles: std::sync::Arc<Vec<Tile>>,
    /// The weights' scales, `[n / TILE_N][k / QK][TILE_N]` like `tiles`.
    scales: std::sync::Arc<Vec<[f16; TILE_N]>>,
}

impl std::fmt::Debug for PackedQ8_0 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ8_0({}x{})", self.n, self.k)
    }
}

static FORCED_FALLBACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`available`] false whatever the CPU (`MODELBENCH_FAST_WEIGHTS_FALLBACK`, installed
/// from the knob table by `config::knobs::install`): `--fast-weights` then runs its fallback.
pub fn force_fallback(on: bool) {
    FORCED_FALLBACK.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`PackedQ8_0`]'s fast path runs: the CPU has AVX-512 F/BW and VNNI and the
/// fallback is not forced ([`force_fallback`]).
pub fn available() -> bool {
    !FORCED_FALLBACK.load(std::sync::atomic::Ordering::Relaxed) && cpu_has_vnni()
}

/// Whether this CPU has what [`PackedQ8_0`]'s fast path needs (AVX-512 F/BW and VNNI).
pub fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The 32 weights of a Q5_0 block (22 bytes: f16 scale, 4 bytes of fifth bits, 16 bytes of
/// nibbles) as Q8_0 values `q - 16`, exactly as ggml dequantizes them.
fn q5_0_values(b: &[u8]) -> [i8; QK] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    let mut q = [0i8; QK];
    for j in 0..16 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        q[j] = ((qs[j] & 0x0F) | h0) as i8 - 16;
        q[j + 16] = ((qs[j] >> 4) | h1) as i8 - 16;
    }
    q
}

/// The activations' Q8_0 blocks, row after row, as candle's `BlockQ8_0::from_float`
/// makes them (scale `amax / 127` stored as f16, quants `round(x / d)`), with sums.
fn quantize(xs: &[f32], m: usize, k: usize) -> Vec<Act> {
    let kb = k / QK;
    let mut out = vec![Act::default(); m * kb];
    let one = |x: &[f32], a: &mut Act| {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        a.d = f16::from_f32(d).to_f32();
        for (q, &v) in a.qs.iter_mut().zip(x) {
            *q = f32::round(v * id) as i8;
        }
        let lo: i32 = a.qs[..QK / 2].iter().map(|&q| q as i32).sum();
        let hi: i32 = a.qs[QK / 2..].iter().map(|&q| q as i32).sum();
        a.corr = 128 * (lo + hi);
        a.corr_lo = 128 * lo;
        a.corr_hi = 128 * hi;
        a.sum = (lo + hi) as f32;
    };
    if m == 1 {
        for (x, a) in xs.chunks_exact(QK).zip(out.iter_mut()) {
            one(x, a);
        }
        return out;
    }
    let ptr = out.as_mut_ptr() as usize;
    crate::pool::execute_chunked(m, |rows| {
        for r in rows {
            // Safety: each row's blocks are written by one chunk only.
            let dst = unsafe { std::slice::from_raw_parts_mut((ptr as *mut Act).add(r * kb), kb) };
            for (x, a) in xs[r * k..(r + 1) * k].chunks_exact(QK).zip(dst.iter_mut()) {
                one(x, a);
            }
        }
    });
    out
}

/// The activations as Q8_K blocks of 256 (what candle's `BlockQ8K::from_float` and ggml make
/// for k-quant weights: scale `max / -127` in f32 where `max` is the value of largest
/// magnitude, quants `round(x / d)` clamped to i8), handed to the kernels as 8 blocks of 32
/// sharing the superblock's scale.
fn quantize_k(xs: &[f32], m: usize, k: usize) -> Vec<Act> {
    let mut out = vec![Act::default(); m * k / QK];
    for (x, a) in xs.chunks_exact(256).zip(out.chunks_exact_mut(8)) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let iscale = if amax == 0.0 { 0.0 } else { -127f32 / max };
        let d = if amax == 0.0 { 0.0 } else { 1.0 / iscale };
        for (x, a) in x.chunks_exact(QK).zip(a.iter_mut()) {
            for (q, &v) in a.qs.iter_mut().zip(x) {
                *q = (iscale * v).round().clamp(-128.0, 127.0) as i8;
            }
            let lo: i32 = a.qs[..QK / 2].iter().map(|&q| q as i32).sum();
            let hi: i32 = a.qs[QK / 2..].iter().map(|&q| q as i32).sum();
            a.d = d;
            a.corr = 128 * (lo + hi);
            a.corr_lo = 128 * lo;
            a.corr_hi = 128 * hi;
            a.sum = (lo + hi) as f32;
        }
    }
    out
}

impl PackedQ8_0 {
    /// Bytes of one block of a type this repacks (Q8_0, Q5_0), None for another.
    fn block_bytes(dtype: GgmlDType) -> Option<usize> {
        match dtype {
            GgmlDType::Q8_0 => Some(34),
            GgmlDType::Q5_0 => Some(22),
            _ => None,
        }
    }

    /// Whether a weight (n, k) of `dtype` can be repacked: Q8_0 or Q5_0, n a multiple of 16,
    /// k of 32.
    pub fn fits(dtype: GgmlDType, n: usize, k: usize) -> bool {
        Self::block_bytes(dtype).is_some()
            && n > 0
            && k > 0
            && n.is_multiple_of(TILE_N)
            && k.is_multiple_of(QK)
    }

    /// Repacks a Q8_0 or Q5_0 weight (n, k); None for another dtype or a shape the tiles do
    /// not cover (n not a multiple of 16, k not a multiple of 32).
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let (n, k) = t.shape().dims2()?;
        if !Self::fits(t.dtype(), n, k) {
            return Ok(None);
        }
        let bytes = Self::block_bytes(t.dtype()).unwrap_or(34);
        let data = t.data()?;
        if data.len() != n * (k / QK) * bytes {
            bail!("{:?} weight of {n}x{k}: {} bytes", t.dtype(), data.len());
        }
        let band = TILE_N * (k / QK) * bytes;
        Self::from_bands(t.dtype(), n, k, |i, buf| {
            buf.copy_from_slice(&data[i * band..][..band]);
            Ok(())
        })
        .map(Some)
    }

    /// Repacks a Q8_0 or Q5_0 weight (n, k) given band by band: `read(i, buf)` fills `buf`
    /// with rows `16 i .. 16 i + 16` as the file stores them (so a weight can be repacked
    /// straight from its file, never held twice). The shape must [`fits`](Self::fits).
    pub fn from_bands(
        dtype: GgmlDType,
        n: usize,
        k: usize,
        mut read: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        let Some(bytes) = Self::block_bytes(dtype).filter(|_| Self::fits(dtype, n, k)) else {
            bail!("a {dtype:?} weight of {n}x{k} cannot be repacked as Q8_0 tiles");
        };
        let kb = k / QK;
        let mut band = vec![0u8; TILE_N * kb * bytes];
        let mut tiles = Vec::with_capacity(n / TILE_N * kb);
        let mut scales = Vec::with_capacity(n / TILE_N * kb);
        for t in 0..n / TILE_N {
            read(t, &mut band)?;
            let block = |r: usize, b: usize| -> (f16, [i8; QK]) {
                let s = &band[(r * kb + b) * bytes..][..bytes];
                let d = f16::from_le_bytes([s[0], s[1]]);
                if bytes == 34 {
                    let mut q = [0i8; QK];
                    for (q, &v) in q.iter_mut().zip(&s[2..34]) {
                        *q = v as i8;
                    }
                    (d, q)
                } else {
                    (d, q5_0_values(s))
                }
            };
            for b in 0..kb {
                let mut tile = Tile {
                    qs: [0; QK * TILE_N],
                };
                let mut ds = [f16::ZERO; TILE_N];
                for (r, dr) in ds.iter_mut().enumerate() {
                    let (d, q) = block(r, b);
                    *dr = d;
                    for g in 0..QK / 4 {
                        for j in 0..4 {
                            tile.qs[(g * TILE_N + r) * 4 + j] = (q[g * 4 + j] as i16 + 128) as u8;
                        }
                    }
                }
                tiles.push(tile);
                scales.push(ds);
            }
        }
        Ok(Self {
            n,
            k,
            tiles: std::sync::Arc::new(tiles),
            scales: std::sync::Arc::new(scales),
        })
    }

    /// (outputs, inputs) of the weight.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Row `r` of the weight dequantized into `out` (k values): `d * q` per value, as ggml
    /// and candle dequantize Q8_0 (and Q5_0: `d * (q - 16)`), so the same bits. A tied
    /// embedding looks its rows up here instead of keeping the file's copy beside this one.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.n || out.len() != self.k {
            bail!(
                "row {r} of a {}x{} weight into {} values",
                self.n,
                self.k,
                out.len()
            );
        }
        let (t, lane, kb) = (r / TILE_N, r % TILE_N, self.k / QK);
        for b in 0..kb {
            let d = self.scales[t * kb + b][lane].to_f32();
            let qs = &self.tiles[t * kb + b].qs;
            for g in 0..QK / 4 {
                for j in 0..4 {
                    let q = qs[(g * TILE_N + lane) * 4 + j] as i16 - 128;
                    out[b * QK + g * 4 + j] = q as f32 * d;
                }
            }
        }
        Ok(())
    }

    packed_forward!(
        "`x` (.., k) f32 times the weight transposed: (.., n) f32, on the fast path where the \
         CPU has it ([`available`]), else on the portable reference (the same bits, slower)."
    );

    /// The portable reference: the same operations in the same order as the fast path.
    pub fn matmul_ref(&self, xs: &[f32], m: usize, out: &mut [f32]) {
        let w = (self.k, self.n, &self.tiles[..], &self.scales[..]);
        reference(w, quantize, xs, m, out, |tile, ds, a, acc| {
            for (c, acc) in acc.iter_mut().enumerate() {
                let mut isum = 0i32;
                for g in 0..QK / 4 {
                    for j in 0..4 {
                        isum += tile.qs[(g * TILE_N + c) * 4 + j] as i32 * a.qs[g * 4 + j] as i32;
                    }
                }
                isum -= a.corr;
                let scale = ds[c].to_f32() * a.d;
                *acc = scale.mul_add(isum as f32, *acc);
            }
        });
    }

    /// The fast path (needs [`available`]): work units of one column tile and up to
    /// [`ROWS`] rows, spread over candle's barrier pool (the pool candle's own quantized
    /// matmuls run on, sized by `CANDLE_NUM_THREADS`).
    pub fn matmul(&self, xs: &[f32], m: usize, out: &mut [f32]) {
        assert!(cpu_has_vnni(), "PackedQ8_0::matmul needs AVX-512 VNNI");
        assert_eq!(xs.len(), m * self.k);
        assert_eq!(out.len(), m * self.n);
        #[cfg(target_arch = "x86_64")]
        {
            let n = self.n;
            let w = (self.k, n, &self.tiles[..], &self.scales[..]);
            fast(w, quantize, xs, m, out, |t, s, a, kb, rows, dst| {
                // Safety: `available()` checked the features; `dst` is this unit's own block
                // of the output (see `spread`).
                unsafe { avx512::unit(t, s, a, kb, rows, dst, n) }
            });
        }
    }
}

/// A Q4_K or Q6_K block of 32 weights of one column as `s_h * (u - z) - m`: quants `u` (u8),
/// a scale per half (16 weights), one minimum per block, and a per-tensor offset `z`. Both
/// are exact: Q4_K's `d * sc * q - dmin * m` per 32 (u = q, z = 0, the same scale in both
/// halves), Q6_K's `d * sc * q` per 16 with q in -32..=31 (u = q + 128, z = 128, m = 0).
#[derive(Clone, Copy)]
#[repr(C)]
struct KScales {
    lo: [f32; TILE_N],
    hi: [f32; TILE_N],
    min: [f32; TILE_N],
}

/// A Q4_K or Q6_K weight of `n` outputs and `k` inputs, unpacked into [`KScales`] form and
/// tiled like [`PackedQ8_0`]: 1.375 bytes a weight (Q4_K is 0.5625, Q6_K 0.82), against
/// activations in Q8_K blocks of 256 ([`quantize_k`]), as ggml and candle compute these
/// types. (Quantizing these activations per 32 instead, finer, was measured: Gemma 3 270M's
/// perplexity fell 2.4% below llama.cpp's on the same file, outside the KLD gate's band.)
#[derive(Clone)]
pub struct PackedK {
    n: usize,
    k: usize,
    /// 128 for Q6_K (signed quants), 0 for Q4_K.
    signed: bool,
    tiles: std::sync::Arc<Vec<Tile>>,
    scales: std::sync::Arc<Vec<KScales>>,
}

impl std::fmt::Debug for PackedK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedK({}x{})", self.n, self.k)
    }
}

/// ggml's 6-bit scale and minimum `j` of a Q4_K superblock.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// One 32-weight block `b` (0..8) of a superblock: quants u, scale of each half, minimum.
type KBlock = ([u8; QK], f32, f32, f32);
/// Reads block `b` of a superblock's bytes.
type KBlockFn = fn(&[u8], usize) -> KBlock;

/// Block `b` of a Q4_K superblock (144 bytes: d, dmin, 12 bytes of scales, 128 of nibbles).
fn q4k_block(sb: &[u8], b: usize) -> KBlock {
    let d = f16::from_le_bytes([sb[0], sb[1]]).to_f32();
    let dmin = f16::from_le_bytes([sb[2], sb[3]]).to_f32();
    let (sc, m) = scale_min_k4(b, &sb[4..16]);
    let qs = &sb[16 + (b / 2) * 32..][..32];
    let mut u = [0u8; QK];
    for (u, &q) in u.iter_mut().zip(qs) {
        *u = if b.is_multiple_of(2) {
            q & 0x0F
        } else {
            q >> 4
        };
    }
    let s = d * sc as f32;
    (u, s, s, dmin * m as f32)
}

/// Block `b` of a Q6_K superblock (210 bytes: 128 of low nibbles, 64 of high bits, 16 i8
/// scales, d).
fn q6k_block(sb: &[u8], b: usize) -> KBlock {
    let (ql, qh, sc) = (&sb[0..128], &sb[128..192], &sb[192..208]);
    let d = f16::from_le_bytes([sb[208], sb[209]]).to_f32();
    let (half, part) = (b / 4, b % 4); // 128-value half, 32-value part of it
    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
    let mut u = [0u8; QK];
    for (l, u) in u.iter_mut().enumerate() {
        let q = match part {
            0 => (ql[l] & 0xF) | ((qh[l] & 3) << 4),
            1 => (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
            2 => (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
            _ => (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
        };
        *u = (q as i16 - 32 + 128) as u8;
    }
    let s = |i: usize| d * sc[i] as i8 as f32;
    (u, s(2 * b), s(2 * b + 1), 0.0)
}

impl PackedK {
    /// Unpacks a Q4_K or Q6_K weight (n, k); None for another dtype or n not a multiple
    /// of 16.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let (n, k) = t.shape().dims2()?;
        let (bytes, signed, block): (usize, bool, KBlockFn) = match t.dtype() {
            GgmlDType::Q4K => (144, false, q4k_block),
            GgmlDType::Q6K => (210, true, q6k_block),
            _ => return Ok(None),
        };
        if n == 0 || n % TILE_N != 0 || k == 0 || k % 256 != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let (sbs, kb) = (k / 256, k / QK);
        if data.len() != n * sbs * bytes {
            bail!("{:?} weight of {n}x{k}: {} bytes", t.dtype(), data.len());
        }
        let mut tiles = Vec::with_capacity(n / TILE_N * kb);
        let mut scales = Vec::with_capacity(n / TILE_N * kb);
        for t in 0..n / TILE_N {
            for b in 0..kb {
                let mut tile = Tile {
                    qs: [0; QK * TILE_N],
                };
                let mut sc = KScales {
                    lo: [0.0; TILE_N],
                    hi: [0.0; TILE_N],
                    min: [0.0; TILE_N],
                };
                for r in 0..TILE_N {
                    let sb = &data[((t * TILE_N + r) * sbs + b / 8) * bytes..][..bytes];
                    let (u, lo, hi, min) = block(sb, b % 8);
                    (sc.lo[r], sc.hi[r], sc.min[r]) = (lo, hi, min);
                    for g in 0..QK / 4 {
                        tile.qs[(g * TILE_N + r) * 4..][..4].copy_from_slice(&u[g * 4..][..4]);
                    }
                }
                tiles.push(tile);
                scales.push(sc);
            }
        }
        Ok(Some(Self {
            n,
            k,
            signed,
            tiles: std::sync::Arc::new(tiles),
            scales: std::sync::Arc::new(scales),
        }))
    }

    packed_forward!("`x` (.., k) times the weight transposed, like [`PackedQ8_0::forward`].");

    /// The portable reference: the same operations in the same order as the fast path.
    pub fn matmul_ref(&self, xs: &[f32], m: usize, out: &mut [f32]) {
        let w = (self.k, self.n, &self.tiles[..], &self.scales[..]);
        reference(w, quantize_k, xs, m, out, |tile, sc, a, acc| {
            for (c, acc) in acc.iter_mut().enumerate() {
                let dot = |g0: usize| -> i32 {
                    (g0..g0 + 4)
                        .flat_map(|g| (0..4).map(move |j| (g, j)))
                        .map(|(g, j)| {
                            tile.qs[(g * TILE_N + c) * 4 + j] as i32 * a.qs[g * 4 + j] as i32
                        })
                        .sum()
                };
                let (mut lo, mut hi) = (dot(0), dot(4));
                if self.signed {
                    lo -= a.corr_lo;
                    hi -= a.corr_hi;
                }
                let t = sc.lo[c] * lo as f32;
                let t = sc.hi[c].mul_add(hi as f32, t);
                let t = (-sc.min[c]).mul_add(a.sum, t);
                *acc = t.mul_add(a.d, *acc);
            }
        });
    }

    /// The fast path (needs [`available`]), spread like [`PackedQ8_0::matmul`].
    pub fn matmul(&self, xs: &[f32], m: usize, out: &mut [f32]) {
        assert!(cpu_has_vnni(), "PackedK::matmul needs AVX-512 VNNI");
        assert_eq!(xs.len(), m * self.k);
        assert_eq!(out.len(), m * self.n);
        #[cfg(target_arch = "x86_64")]
        {
            let (n, signed) = (self.n, self.signed);
            let w = (self.k, n, &self.tiles[..], &self.scales[..]);
            fast(w, quantize_k, xs, m, out, |t, s, a, kb, rows, dst| {
                // Safety: as in PackedQ8_0::matmul.
                unsafe { avx512::unit_k(t, s, signed, a, kb, rows, dst, n) }
            });
        }
    }
}

/// The fast path of both packed types around their inner loop (a weight as [`reference`]
/// takes it): `xs` (m rows of k) quantized by `quantize`, then every work unit of one column
/// tile and up to [`ROWS`] rows, spread over candle's barrier pool ([`spread`]), computed by
/// `unit(tiles, scales, acts, kb, rows, dst)`: the tile's `kb` blocks, the rows' activation
/// blocks, and where the unit's output starts.
#[cfg(target_arch = "x86_64")]
fn fast<S: Sync>(
    (k, n, tiles, scales): (usize, usize, &[Tile], &[S]),
    quantize: fn(&[f32], usize, usize) -> Vec<Act>,
    xs: &[f32],
    m: usize,
    out: &mut [f32],
    unit: impl Fn(&[Tile], &[S], &[Act], usize, usize, *mut f32) + Sync,
) {
    let kb = k / QK;
    let acts = quantize(xs, m, k);
    spread(m, n, out, |t, r0, rows, dst| {
        let (blocks, act_rows) = (t * kb..(t + 1) * kb, r0 * kb..(r0 + rows) * kb);
        unit(
            &tiles[blocks.clone()],
            &scales[blocks],
            &acts[act_rows],
            kb,
            rows,
            dst,
        )
    });
}

/// Runs `unit(t, r0, rows, dst)` for every work unit of an (m, n) output: column tile `t`
/// and up to [`ROWS`] rows from `r0`, `dst` pointing at the unit's first output (row `r0`,
/// column `16 t`; rows `n` apart), spread over candle's barrier pool. Units write disjoint
/// parts of `out`.
#[cfg(target_arch = "x86_64")]
fn spread(
    m: usize,
    n: usize,
    out: &mut [f32],
    unit: impl Fn(usize, usize, usize, *mut f32) + Sync,
) {
    assert_eq!(out.len(), m * n);
    let groups = m.div_ceil(ROWS);
    let out_ptr = out.as_mut_ptr() as usize;
    crate::pool::execute_chunked(n / TILE_N * groups, |range| {
        for u in range {
            let (t, g) = (u / groups, u % groups);
            let r0 = g * ROWS;
            // `wrapping_add`: the pointer stays inside `out` (r0 < m, 16 t < n).
            let dst = (out_ptr as *mut f32).wrapping_add(r0 * n + t * TILE_N);
            unit(t, r0, (m - r0).min(ROWS), dst);
        }
    });
}

/// The loop of both packed types' portable reference, in their fast path's order: a weight of
/// `n` outputs and `k` inputs as `tiles` and `scales` (`[n / TILE_N][k / QK]`); `xs` (m rows of
/// k) quantized by `quantize`, then per row and column tile the tile's TILE_N accumulators, `block(tile, scales, act, acc)`
/// adding one block's share to them, block after block, stored into `out` (m x n).
fn reference<S>(
    (k, n, tiles, scales): (usize, usize, &[Tile], &[S]),
    quantize: fn(&[f32], usize, usize) -> Vec<Act>,
    xs: &[f32],
    m: usize,
    out: &mut [f32],
    block: impl Fn(&Tile, &S, &Act, &mut [f32; TILE_N]),
) {
    assert_eq!(xs.len(), m * k);
    assert_eq!(out.len(), m * n);
    let kb = k / QK;
    let acts = quantize(xs, m, k);
    for row in 0..m {
        for t in 0..n / TILE_N {
            let mut acc = [0f32; TILE_N];
            for b in 0..kb {
                let i = t * kb + b;
                block(&tiles[i], &scales[i], &acts[row * kb + b], &mut acc);
            }
            out[row * n + t * TILE_N..][..TILE_N].copy_from_slice(&acc);
        }
    }
}

/// `x` (.., k) as host f32 rows through `f` into (.., n).
fn forward_with(
    x: &Tensor,
    k_w: usize,
    n: usize,
    f: impl FnOnce(&[f32], usize, &mut [f32]),
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&k, lead)) = dims.split_last() else {
        bail!("a matmul input of rank 0");
    };
    if k != k_w {
        bail!("matmul input of {k} features against a weight of {k_w}");
    }
    let m: usize = lead.iter().product();
    let xs = x
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = vec![0f32; m * n];
    f(&xs, m, &mut out);
    let mut shape = lead.to_vec();
    shape.push(n);
    Tensor::from_vec(out, shape, &Device::Cpu)
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
