//! The AVX-512 VNNI inner loops of the packed Q8_0 and K-quant matmuls (x86_64; picked at run
//! time when the CPU has the features).

use super::{Act, Tile, QK, ROWS, TILE_N};
use half::f16;

/// How many tiles ahead of the one computed the fast path prefetches.
const PREFETCH: usize = 8;
use core::arch::x86_64::*;

/// A tile's weights as `QK / 4` vectors of 64 quants, loaded in the caller's unsafe,
/// AVX-512 context (a macro, so the loads stay inlined in the caller's target features), after
/// asking for the tile PREFETCH tiles ahead: the weights stream from memory once (the lm_head:
/// 178 MB a step); tiles of the next units follow in memory, and a prefetch past the end does
/// not fault.
macro_rules! tile_weights {
    ($tile:expr) => {{
        let q = $tile.qs.as_ptr();
        for l in 0..QK * TILE_N / 64 {
            _mm_prefetch::<_MM_HINT_T0>(
                q.wrapping_add(PREFETCH * QK * TILE_N + l * 64) as *const i8
            );
        }
        let w: [__m512i; QK / 4] =
            std::array::from_fn(|g| _mm512_load_si512(q.add(g * 64) as *const __m512i));
        w
    }};
}

/// One column tile against `rows` (1..=ROWS) activation rows of `kb` blocks each.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
pub(super) unsafe fn unit(
    tiles: &[Tile],
    scales: &[[f16; TILE_N]],
    acts: &[Act],
    kb: usize,
    rows: usize,
    dst: *mut f32,
    n: usize,
) {
    let mut acc = [_mm512_setzero_ps(); ROWS];
    for (b, (tile, ds)) in tiles.iter().zip(scales).enumerate().take(kb) {
        let w = tile_weights!(tile);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(ds.as_ptr() as *const __m256i));
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let a = &acts[r * kb + b];
            let ap = a.qs.as_ptr() as *const i32;
            // four independent accumulators: a single chain of eight dpbusd waits on
            // each one's latency (the integer sum is exact in any order)
            let x = |g: usize| _mm512_set1_epi32(std::ptr::read_unaligned(ap.add(g)));
            let z = _mm512_setzero_si512();
            let mut i0 = _mm512_dpbusd_epi32(z, w[0], x(0));
            let mut i1 = _mm512_dpbusd_epi32(z, w[1], x(1));
            let mut i2 = _mm512_dpbusd_epi32(z, w[2], x(2));
            let mut i3 = _mm512_dpbusd_epi32(z, w[3], x(3));
            i0 = _mm512_dpbusd_epi32(i0, w[4], x(4));
            i1 = _mm512_dpbusd_epi32(i1, w[5], x(5));
            i2 = _mm512_dpbusd_epi32(i2, w[6], x(6));
            i3 = _mm512_dpbusd_epi32(i3, w[7], x(7));
            let isum = _mm512_add_epi32(_mm512_add_epi32(i0, i1), _mm512_add_epi32(i2, i3));
            let isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(a.corr));
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d));
            *acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), *acc);
        }
    }
    for (r, acc) in acc.iter().enumerate().take(rows) {
        _mm512_storeu_ps(dst.add(r * n), *acc);
    }
}

/// One column tile of a [`super::PackedK`] weight against `rows` activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn unit_k(
    tiles: &[Tile],
    scales: &[super::KScales],
    signed: bool,
    acts: &[Act],
    kb: usize,
    rows: usize,
    dst: *mut f32,
    n: usize,
) {
    let mut acc = [_mm512_setzero_ps(); ROWS];
    for (b, (tile, sc)) in tiles.iter().zip(scales).enumerate().take(kb) {
        let w = tile_weights!(tile);
        let lo_s = _mm512_loadu_ps(sc.lo.as_ptr());
        let hi_s = _mm512_loadu_ps(sc.hi.as_ptr());
        let min = _mm512_loadu_ps(sc.min.as_ptr());
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let a = &acts[r * kb + b];
            let ap = a.qs.as_ptr() as *const i32;
            let x = |g: usize| _mm512_set1_epi32(std::ptr::read_unaligned(ap.add(g)));
            let z = _mm512_setzero_si512();
            let mut l0 = _mm512_dpbusd_epi32(z, w[0], x(0));
            let mut l1 = _mm512_dpbusd_epi32(z, w[1], x(1));
            let mut h0 = _mm512_dpbusd_epi32(z, w[4], x(4));
            let mut h1 = _mm512_dpbusd_epi32(z, w[5], x(5));
            l0 = _mm512_dpbusd_epi32(l0, w[2], x(2));
            l1 = _mm512_dpbusd_epi32(l1, w[3], x(3));
            h0 = _mm512_dpbusd_epi32(h0, w[6], x(6));
            h1 = _mm512_dpbusd_epi32(h1, w[7], x(7));
            let mut lo = _mm512_add_epi32(l0, l1);
            let mut hi = _mm512_add_epi32(h0, h1);
            if signed {
                lo = _mm512_sub_epi32(lo, _mm512_set1_epi32(a.corr_lo));
                hi = _mm512_sub_epi32(hi, _mm512_set1_epi32(a.corr_hi));
            }
            let t = _mm512_mul_ps(lo_s, _mm512_cvtepi32_ps(lo));
            let t = _mm512_fmadd_ps(hi_s, _mm512_cvtepi32_ps(hi), t);
            let t = _mm512_fnmadd_ps(min, _mm512_set1_ps(a.sum), t);
            *acc = _mm512_fmadd_ps(t, _mm512_set1_ps(a.d), *acc);
        }
    }
    for (r, acc) in acc.iter().enumerate().take(rows) {
        _mm512_storeu_ps(dst.add(r * n), *acc);
    }
}
