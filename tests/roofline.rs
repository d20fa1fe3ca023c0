//! Work accounting against hand computations, utilisation bounds, calibration caching.

mod common;

use candle_core::DType;
use modelbench::measure::calibration::Calibration;
use modelbench::models::describe;
use modelbench::models::sources::{resolve, ModelRef};
use modelbench::workloads::work::{roofline, Work};

fn llama_1b(dtype: DType) -> modelbench::models::ModelMeta {
    let res = resolve(&ModelRef::parse("synthetic:llama-3.2-1b").unwrap(), "l").unwrap();
    describe(res.family, &res.config, &res.config_path, dtype, Some(2048)).unwrap()
}

#[test]
fn llama_3_2_1b_bytes_and_flops_match_a_hand_computation() {
    let m = llama_1b(DType::F32);
    // Projections per layer: q 2048x2048, k 512x2048, v 512x2048, o 2048x2048,
    // gate/up 8192x2048, down 2048x8192; 16 layers.
    let per_layer: u64 = 2048 * 2048 + 2 * 512 * 2048 + 2048 * 2048 + 3 * 8192 * 2048;
    assert_eq!(per_layer, 60_817_408);
    assert_eq!(m.matmul_params, 16 * per_layer);
    assert!(m.tied_embeddings);
    let w = Work { meta: &m };
    // decode at position 100: projections + LM head (128256 x 2048) + one embedding row,
    // plus K and V of 16 layers x 8 KV heads x 64 dims x 100 positions; f32.
    let weights = (16 * per_layer + 128_256 * 2048 + 2048) as f64;
    let kv = (2 * 16 * 8 * 64 * 100) as f64;
    assert_eq!(w.decode_bytes(100), (weights + kv) * 4.0);
    // prefill of 1024 tokens: 2 x projections x 1024 + causal attention (QK^T and PV over
    // 1024*1025/2 pairs, 16 layers x 32 heads x 64 dims, 2 FLOPs each) + head for one token.
    let flops = 2.0 * (16 * per_layer) as f64 * 1024.0
        + 4.0 * (16 * 32 * 64) as f64 * (1024.0 * 1025.0 / 2.0)
        + 2.0 * 2048.0 * 128_256.0;
    assert_eq!(w.prefill_flops(1024), flops);
    assert_eq!(flops, 2_062_176_747_520.0); // norms are not matmuls
                                            // half precision halves the bytes
    assert_eq!(
        Work {
            meta: &llama_1b(DType::F16)
        }
        .decode_bytes(100),
        (weights + kv) * 2.0
    );
}

#[test]
fn utilisation_is_bounded_and_flagged_when_above_the_peak() {
    let m = llama_1b(DType::F32);
    let cal = Calibration {
        key: "x".into(),
        device: "cpu".into(),
        mem_read_gbs: 20.0,
        // candle's GEMV figure is not the roof: a model at candle's speed is not at 100%
        candle_gemv_gbs: [("f32".to_string(), 8.0)].into(),
        matmul_gflops: [("f32".to_string(), 100.0)].into(),
        methods: [
            ("mem_read".to_string(), "streaming read (rayon)".to_string()),
            (
                "matmul.f32".to_string(),
                "candle matmul f32 2048^3".to_string(),
            ),
        ]
        .into(),
        measured_at: "t".into(),
    };
    // 4 tok/s of ~4.9 GB each is ~19.8 GB/s: 99% of 20 GB/s, not flagged.
    let r = roofline(&m, 64, 64, Some(4.0), Some(30.0), Some(&cal));
    let bw = r.mem_bw_util_pct.unwrap();
    assert!(bw > 95.0 && bw < 101.0, "{bw}");
    assert!(r.flag.is_none());
    // the text names the roofs it used
    common::assert_contains_all(
        &r.calibration,
        &[
            "memory: 20.0 GB/s streaming read",
            "compute: 100.0 GFLOP/s candle matmul f32",
        ],
    );
    // the memory roof is the same for every dtype (bytes are bytes); no f16 matmul figure
    let r16 = roofline(
        &llama_1b(DType::F16),
        64,
        64,
        Some(8.0),
        Some(30.0),
        Some(&cal),
    );
    let bw16 = r16.mem_bw_util_pct.unwrap();
    assert!(bw16 > 95.0 && bw16 < 101.0, "{bw16}");
    assert!(r16.compute_util_pct.is_none() && r16.calibration.contains("compute: none for f16"));
    // 8 tok/s would be ~198%: flagged.
    let r = roofline(&m, 64, 64, Some(8.0), Some(30.0), Some(&cal));
    assert!(r.flag.is_some());
    // no calibration: no percentages, and it says how to get one
    let r = roofline(&m, 64, 64, Some(4.0), Some(30.0), None);
    assert!(r.mem_bw_util_pct.is_none() && r.calibration.contains("modelbench calibrate"));
}
