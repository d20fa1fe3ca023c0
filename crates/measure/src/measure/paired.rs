//! Paired A/B statistics (the method of Tango.rs's paired benchmarking): A and B run in
//! alternation in the same minutes, in ABBA order, and each pair gives one ratio B/A. Drift of
//! the machine (frequency, other tenants, memory placement) moves both halves of a pair alike,
//! so the per-pair ratios are far tighter than the ratio of two separately taken medians.
//!
//! The estimate is the median of the per-pair ratios; its interval (95% unless a sequential
//! design asks for more, [`paired_ratio_at`]) is a percentile bootstrap of that median over
//! the pairs (seeded, so a result is reproducible).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::measure::stats::{median, percentile};

/// Bootstrap resamples of the median of per-pair ratios.
pub const RESAMPLES: usize = 10_000;

/// The bootstrap's seed: the same pairs always give the same interval.
pub const SEED: u64 = 0xAB_BA;

/// Fewer pairs than this: no interval (and no verdict).
pub const MIN_PAIRS: usize = 5;

/// Whether A runs first in pair `i`: ABBA ABBA ... (pairs 0, 3, 4, 7, 8, ... start with A), so
/// neither side is systematically first after a warm cache or last before a context switch.
pub fn a_first(i: usize) -> bool {
    matches!(i % 4, 0 | 3)
}

/// The median of per-pair ratios B/A with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedRatio {
    pub pairs: usize,
    /// Median of b[i] / a[i].
    pub ratio: f64,
    /// The interval of that median at [`PairedRatio::confidence`]; None with fewer than
    /// [`MIN_PAIRS`] pairs.
    pub ci: Option<(f64, f64)>,
    /// The interval's confidence (0.95 for [`paired_ratio`]).
    #[serde(default = "ninety_five")]
    pub confidence: f64,
}

fn ninety_five() -> f64 {
    0.95
}

/// Per-pair ratios `b[i] / a[i]` (pairs with a non-positive or non-finite side are dropped).
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite() && **x > 0.0 && **y > 0.0)
        .map(|(x, y)| y / x)
        .collect()
}

/// The paired estimate from per-pair ratios, with a 95% interval.
pub fn paired_ratio(r: &[f64]) -> PairedRatio {
    paired_ratio_at(r, 0.95)
}

/// The paired estimate with an interval at `confidence` (e.g. 0.9875 for each of four looks
/// of a sequential design that keeps 95% overall).
pub fn paired_ratio_at(r: &[f64], confidence: f64) -> PairedRatio {
    let spans: Vec<&[f64]> = r.chunks(1).collect();
    bootstrap(r, &spans, confidence)
}

/// Fewer blocks than this: [`paired_ratio_blocked`] resamples pairs, not blocks.
pub const MIN_BLOCKS: usize = 5;

/// [`paired_ratio_at`] for pairs taken in blocks of fresh processes (`blocks`: the number of
/// pairs of each block, in order; they sum to `r.len()`): the bootstrap resamples whole
/// blocks (a cluster bootstrap), so the interval holds the speed offset each process draws at
/// start, which all pairs of a block share. Measured on the 2-core VM with lockstep pairs
/// (issue 64): pairs within a block spread 0.5-1.7% (sd of the log ratio), block means 1-5%,
/// so an interval over pairs alone was too narrow. With fewer than [`MIN_BLOCKS`] blocks the
/// offsets cannot be estimated and the pairs are resampled (the caller says so).
pub fn paired_ratio_blocked(r: &[f64], blocks: &[usize], confidence: f64) -> PairedRatio {
    if blocks.len() < MIN_BLOCKS || blocks.iter().sum::<usize>() != r.len() {
        return paired_ratio_at(r, confidence);
    }
    let mut spans = Vec::with_capacity(blocks.len());
    let mut at = 0;
    for &n in blocks {
        spans.push(&r[at..at + n]);
        at += n;
    }
    bootstrap(r, &spans, confidence)
}

/// The median of `r` with a percentile bootstrap interval that resamples `spans` (pairs, or
/// blocks of pairs) with replacement, seeded.
fn bootstrap(r: &[f64], spans: &[&[f64]], confidence: f64) -> PairedRatio {
    let tail = (1.0 - confidence) / 2.0;
    let ci = (r.len() >= MIN_PAIRS).then(|| {
        let mut rng = StdRng::seed_from_u64(SEED);
        let mut buf = Vec::with_capacity(r.len() * 2);
        let mut meds = Vec::with_capacity(RESAMPLES);
        for _ in 0..RESAMPLES {
            buf.clear();
            for _ in 0..spans.len() {
                buf.extend_from_slice(spans[rng.random_range(0..spans.len())]);
            }
            meds.push(median(&buf));
        }
        meds.sort_by(f64::total_cmp);
        (percentile(&meds, tail), percentile(&meds, 1.0 - tail))
    });
    PairedRatio {
        pairs: r.len(),
        ratio: if r.is_empty() { f64::NAN } else { median(r) },
        ci,
        confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abba_order() {
        let o: Vec<bool> = (0..8).map(a_first).collect();
        assert_eq!(o, [true, false, false, true, true, false, false, true]);
    }

    #[test]
    fn drift_cancels_in_pairs() {
        // A slow drift of +-20% over the run moves both halves of each pair: B is 3% slower
        // in every pair, and the paired interval sees exactly that.
        let a: Vec<f64> = (0..20)
            .map(|i| 1.0 + 0.2 * ((i as f64) / 3.0).sin())
            .collect();
        let b: Vec<f64> = a.iter().map(|x| x * 1.03).collect();
        let p = paired_ratio(&ratios(&a, &b));
        let (lo, hi) = p.ci.unwrap();
        assert!(
            (p.ratio - 1.03).abs() < 1e-9 && lo > 1.029 && hi < 1.031,
            "{p:?}"
        );
        // Identical halves: the interval holds 1.
        let p = paired_ratio(&ratios(&a, &a));
        assert_eq!(p.ci, Some((1.0, 1.0)));
        // Too few pairs: no interval.
        assert_eq!(paired_ratio(&ratios(&a[..4], &b[..4])).ci, None);
    }

    #[test]
    fn block_offsets_widen_the_interval_and_too_few_blocks_fall_back() {
        // 12 blocks of 4 pairs: each block shifted by its own offset (+-2%), tight within.
        let blocks = vec![4; 12];
        let r: Vec<f64> = (0..48)
            .map(|i| {
                let off = 0.02 * (((i / 4) as f64) * 2.3).sin();
                (1.0 + off) * (1.0 + 0.002 * ((i as f64) * 1.1).sin())
            })
            .collect();
        let (pl, ph) = paired_ratio_at(&r, 0.95).ci.unwrap();
        let b = paired_ratio_blocked(&r, &blocks, 0.95);
        let (bl, bh) = b.ci.unwrap();
        assert!(
            bh - bl > ph - pl,
            "blocked [{bl}, {bh}] vs pairs [{pl}, {ph}]"
        );
        assert_eq!(b.ratio, paired_ratio_at(&r, 0.95).ratio);
        // Identical offsets in every block: no wider than over pairs.
        let flat: Vec<f64> = (0..48).map(|i| 1.03 + 0.001 * ((i % 4) as f64)).collect();
        let (fl, fh) = paired_ratio_blocked(&flat, &blocks, 0.95).ci.unwrap();
        assert!(fl >= 1.03 && fh <= 1.033, "[{fl}, {fh}]");
        // Four blocks (or sizes that do not add up): the pairs are resampled.
        assert_eq!(
            paired_ratio_blocked(&r[..16], &[4; 4], 0.95),
            paired_ratio_at(&r[..16], 0.95)
        );
        assert_eq!(
            paired_ratio_blocked(&r, &[4; 11], 0.95),
            paired_ratio_at(&r, 0.95)
        );
    }

    #[test]
    fn a_higher_confidence_gives_a_wider_interval() {
        let r: Vec<f64> = (0..40)
            .map(|i| 1.0 + 0.05 * ((i as f64) * 1.7).sin())
            .collect();
        let (l95, h95) = paired_ratio(&r).ci.unwrap();
        let p = paired_ratio_at(&r, 0.9875);
        let (l, h) = p.ci.unwrap();
        assert!(l < l95 && h > h95, "{l95} {h95} vs {l} {h}");
        assert_eq!(p.confidence, 0.9875);
    }
}
