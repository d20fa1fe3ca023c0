//! The work a model does per token, from its config and checkpoint layout (not guessed), and
//! the roofline figures of a generation record against the machine's calibrated roof.

use candle_core::DType;

use crate::measure::calibration::{Calibration, Roofline, NOISE};
use crate::models::ModelMeta;

/// Work per token of a model, from its layout.
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    pub meta: &'a ModelMeta,
}

impl Work<'_> {
    fn active_matmul_params(&self) -> f64 {
        let m = self.meta;
        let inactive = match m.experts {
            Some((e, k)) if e > 0 => m.expert_params as f64 * (1.0 - k as f64 / e as f64),
            _ => 0.0,
        };
        m.matmul_params as f64 - inactive
    }

    /// Bytes read to decode one token at cache position `pos`: the active projection weights,
    /// the LM head (vocab x hidden), one embedding row, and the K and V cache of every layer
    /// (full attention assumed: an upper bound for sliding-window layers).
    pub fn decode_bytes(&self, pos: usize) -> f64 {
        let m = self.meta;
        let kv = 2.0 * (m.layers * m.kv_heads * m.head_dim * pos) as f64;
        if let Some(w) = m.decode_weight_bytes {
            // Quantized weights: every tensor of the file once; the KV cache in f32.
            return w + kv * 4.0;
        }
        let size = DType::size_in_bytes(&dtype_of(&m.dtype)) as f64;
        let weights = self.active_matmul_params() + (m.vocab * m.hidden + m.hidden) as f64;
        (weights + kv) * size
    }

    /// FLOPs of a prefill of `p` tokens (one forward call): projections for every token,
    /// causal attention (QK^T and PV over the p(p+1)/2 visible pairs), and the LM head for
    /// the last position only (as candle's models compute it).
    pub fn prefill_flops(&self, p: usize) -> f64 {
        self.prefill_flops_at(p, 0)
    }

    /// FLOPs of a prefill of `p` tokens after `depth` positions already in the KV cache: the
    /// same, with token i attending to depth + i keys (p x depth + p(p+1)/2 pairs).
    pub fn prefill_flops_at(&self, p: usize, depth: usize) -> f64 {
        let m = self.meta;
        let pairs = (p * depth + p * (p + 1) / 2) as f64;
        2.0 * self.active_matmul_params() * p as f64
            + 4.0 * (m.layers * m.heads * m.head_dim) as f64 * pairs
            + 2.0 * (m.hidden * m.vocab) as f64
    }
}

fn dtype_of(s: &str) -> DType {
    match s {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f64" => DType::F64,
        _ => DType::F32,
    }
}

pub fn roofline(
    meta: &ModelMeta,
    prompt: usize,
    new: usize,
    decode_tok_s: Option<f64>,
    ttft_s: Option<f64>,
    cal: Option<&Calibration>,
) -> Roofline {
    let w = Work { meta };
    let positions = new.saturating_sub(1).max(1);
    roofline_of(
        meta,
        prompt,
        positions,
        w.prefill_flops(prompt),
        decode_tok_s,
        ttft_s,
        cal,
    )
}

/// The roofline of a depth record: decode of `new` tokens at cache positions depth..,
/// prefill of `prompt` tokens after `depth` positions (its time `prefill_s`).
pub fn roofline_depth(
    meta: &ModelMeta,
    depth: usize,
    prompt: usize,
    new: usize,
    decode_tok_s: Option<f64>,
    prefill_s: Option<f64>,
    cal: Option<&Calibration>,
) -> Roofline {
    let w = Work { meta };
    roofline_of(
        meta,
        depth,
        new.max(1),
        w.prefill_flops_at(prompt, depth),
        decode_tok_s,
        prefill_s.filter(|_| prompt > 0),
        cal,
    )
}

fn roofline_of(
    meta: &ModelMeta,
    first_pos: usize,
    positions: usize,
    flops: f64,
    decode_tok_s: Option<f64>,
    ttft_s: Option<f64>,
    cal: Option<&Calibration>,
) -> Roofline {
    let w = Work { meta };
    let bytes = (0..positions)
        .map(|i| w.decode_bytes(first_pos + i))
        .sum::<f64>()
        / positions as f64;
    let decode_gbs = decode_tok_s.map(|r| bytes * r / 1e9);
    let prefill_gflops = ttft_s.filter(|t| *t > 0.0).map(|t| flops / t / 1e9);
    // The memory roof is the streaming read of RAM: bytes are bytes, for every dtype and for
    // quantized (gguf) weights alike.
    let bw = cal.map(|c| c.mem_read_gbs).filter(|b| *b > 0.0);
    let mm = cal.and_then(|c| c.matmul_gflops.get(&meta.dtype)).copied();
    let mem_bw_util_pct = bw.zip(decode_gbs).map(|(b, g)| 100.0 * g / b);
    let compute_util_pct = mm.zip(prefill_gflops).map(|(m, g)| 100.0 * g / m);
    let over = |p: Option<f64>| p.is_some_and(|p| p > 100.0 * (1.0 + NOISE));
    let flag = (over(mem_bw_util_pct) || over(compute_util_pct)).then(|| {
        "above the calibrated peak by more than its noise: caches or a stale calibration; re-run `modelbench calibrate --force`".to_string()
    });
    Roofline {
        decode_bytes_per_token: bytes,
        prefill_flops: flops,
        decode_gbs,
        prefill_gflops,
        mem_bw_util_pct,
        compute_util_pct,
        calibration: match cal.filter(|_| bw.is_some()) {
            Some(c) => format!(
                "memory: {}; compute: {} {}",
                c.memory_roof(),
                c.compute_roof(&meta.dtype)
                    .unwrap_or_else(|| format!("none for {}", meta.dtype)),
                c.provenance()
            ),
            None => format!("none for {}: run `modelbench calibrate`", meta.dtype),
        },
        flag,
    }
}
