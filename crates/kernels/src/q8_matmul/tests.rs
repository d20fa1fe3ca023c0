use super::*;

fn weight(n: usize, k: usize, dtype: GgmlDType, seed: u64) -> QTensor {
    let w = Tensor::randn(0f32, 1f32, (n, k), &Device::Cpu).unwrap();
    let _ = seed;
    QTensor::quantize(&w, dtype).unwrap()
}

fn inputs(m: usize, k: usize) -> Vec<f32> {
    Tensor::randn(0f32, 1f32, (m, k), &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The exact value of one output from the dequantized blocks: sum over blocks of
/// d_w * d_a * (integer dot), in f64, for checking the packing independently of the
/// kernels' float order.
fn exact(t: &QTensor, xs: &[f32], k: usize, row: usize, col: usize) -> f64 {
    let x = &xs[row * k..(row + 1) * k];
    let acts = match t.dtype() {
        GgmlDType::Q4K | GgmlDType::Q6K => quantize_k(x, 1, k),
        _ => quantize(x, 1, k),
    };
    let w = t
        .dequantize(&Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut s = 0f64;
    for (b, a) in acts.iter().enumerate() {
        for j in 0..QK {
            s += w[col][b * QK + j] as f64 * a.d as f64 * a.qs[j] as f64;
        }
    }
    s
}

#[test]
fn the_reference_computes_the_dequantized_dot_products() {
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0] {
        let (n, k, m) = (32, 96, 3);
        let t = weight(n, k, dtype, 1);
        let p = PackedQ8_0::from_qtensor(&t).unwrap().unwrap();
        let xs = inputs(m, k);
        let mut out = vec![0f32; m * n];
        p.matmul_ref(&xs, m, &mut out);
        for row in 0..m {
            for col in 0..n {
                let e = exact(&t, &xs, k, row, col);
                let got = out[row * n + col] as f64;
                assert!(
                    (got - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{dtype:?} row {row} col {col}: {got} vs {e}"
                );
            }
        }
    }
}

#[test]
fn fast_path_equals_the_reference_bit_for_bit_at_every_row_count() {
    if !available() {
        eprintln!("SKIPPED: this CPU lacks AVX-512 VNNI (the reference still runs)");
        return;
    }
    let (n, k) = (48, 640);
    let t = weight(n, k, GgmlDType::Q5_0, 2);
    let p = PackedQ8_0::from_qtensor(&t).unwrap().unwrap();
    let xs = inputs(9, k);
    let mut alone = vec![0f32; n];
    p.matmul(&xs[..k], 1, &mut alone);
    for m in 1..=9 {
        let (mut fast, mut slow) = (vec![0f32; m * n], vec![0f32; m * n]);
        p.matmul(&xs[..m * k], m, &mut fast);
        p.matmul_ref(&xs[..m * k], m, &mut slow);
        assert!(
            fast.iter()
                .zip(&slow)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "m={m}: fast path differs from the reference"
        );
        assert!(
            fast[..n]
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "m={m}: row 0 differs from row 0 alone"
        );
    }
}

/// A row looked up in the tiles is candle's dequantized row, bit for bit (a tied
/// embedding reads its rows there), and a weight built band by band from the file's bytes
/// is the one built from the tensor.
#[test]
fn rows_dequantize_as_candle_does_and_bands_build_the_same_tiles() {
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0] {
        let (n, k) = (48, 96);
        let t = weight(n, k, dtype, 6);
        let p = PackedQ8_0::from_qtensor(&t).unwrap().unwrap();
        let want = t
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut row = vec![0f32; k];
        for (r, want) in want.iter().enumerate() {
            p.dequantize_row(r, &mut row).unwrap();
            assert!(
                row.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype:?} row {r}"
            );
        }
        assert!(p.dequantize_row(n, &mut row).is_err());
        let data = t.data().unwrap();
        let band = data.len() / (n / TILE_N);
        let q = PackedQ8_0::from_bands(dtype, n, k, |i, buf| {
            buf.copy_from_slice(&data[i * band..][..band]);
            Ok(())
        })
        .unwrap();
        assert!(q
            .tiles
            .iter()
            .zip(p.tiles.iter())
            .all(|(a, b)| a.qs == b.qs));
        assert_eq!(q.scales, p.scales);
    }
    assert!(PackedQ8_0::from_bands(GgmlDType::Q4K, 16, 256, |_, _| Ok(())).is_err());
}

#[test]
fn shapes_the_tiles_do_not_cover_are_refused() {
    assert!(
        PackedQ8_0::from_qtensor(&weight(24, 64, GgmlDType::Q8_0, 3))
            .unwrap()
            .is_none()
    );
    assert!(
        PackedQ8_0::from_qtensor(&weight(32, 256, GgmlDType::Q4K, 3))
            .unwrap()
            .is_none()
    );
    assert!(PackedK::from_qtensor(&weight(32, 256, GgmlDType::Q8_0, 3))
        .unwrap()
        .is_none());
    assert!(PackedK::from_qtensor(&weight(24, 256, GgmlDType::Q4K, 3))
        .unwrap()
        .is_none());
}

/// The unpacked blocks give back candle's dequantized weights bit for bit: `s * (u - z)
/// - m` for every weight, against candle's own `dequantize` (its code, not ours).
#[test]
fn k_quant_blocks_unpack_to_candles_dequantized_weights() {
    for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
        let (n, k) = (16, 512);
        let t = weight(n, k, dtype, 4);
        let p = PackedK::from_qtensor(&t).unwrap().unwrap();
        let want = t
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let kb = k / QK;
        let z = if p.signed { 128 } else { 0 };
        for (c, want) in want.iter().enumerate() {
            for (i, &w) in want.iter().enumerate() {
                let (b, j) = (i / QK, i % QK);
                let (tile, sc) = (&p.tiles[b], &p.scales[b]);
                let u = tile.qs[((j / 4) * TILE_N + c) * 4 + j % 4] as i32 - z;
                let s = if j < QK / 2 { sc.lo[c] } else { sc.hi[c] };
                let got = if p.signed {
                    s * u as f32
                } else {
                    s * u as f32 - sc.min[c]
                };
                assert_eq!(
                    got.to_bits(),
                    w.to_bits(),
                    "{dtype:?} col {c} k {i}: {got} vs {w}"
                );
            }
        }
        assert_eq!(p.tiles.len(), kb);
    }
}

#[test]
fn k_quant_products_match_the_dequantized_weights_and_are_row_independent() {
    for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
        let (n, k) = (32, 512);
        let t = weight(n, k, dtype, 5);
        let p = PackedK::from_qtensor(&t).unwrap().unwrap();
        let xs = inputs(6, k);
        let mut slow = vec![0f32; 6 * n];
        p.matmul_ref(&xs, 6, &mut slow);
        for row in 0..6 {
            for col in 0..n {
                let e = exact(&t, &xs, k, row, col);
                let got = slow[row * n + col] as f64;
                assert!(
                    (got - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{dtype:?} row {row} col {col}: {got} vs {e}"
                );
            }
        }
        if !available() {
            eprintln!("SKIPPED the fast path: this CPU lacks AVX-512 VNNI");
            continue;
        }
        for m in 1..=6 {
            let mut fast = vec![0f32; m * n];
            p.matmul(&xs[..m * k], m, &mut fast);
            assert!(
                fast.iter()
                    .zip(&slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype:?} m={m}: fast path differs from the reference"
            );
        }
    }
}
