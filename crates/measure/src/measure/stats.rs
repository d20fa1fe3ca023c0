//! The statistics conventions of every record, written down once:
//! - `stddev` is the sample standard deviation (n - 1), as criterion and llama-bench use;
//! - `mad` is the median absolute deviation scaled by 1.4826 (criterion's convention), so it
//!   estimates the standard deviation for normal data;
//! - percentiles use linear interpolation between closest ranks (numpy's default).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub mean: f64,
    pub stddev: f64,
    pub mad: f64,
    pub min: f64,
    pub max: f64,
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let r = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = r.floor() as usize;
            let hi = r.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (r - lo as f64)
        }
    }
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

pub fn median(xs: &[f64]) -> f64 {
    percentile(&sorted(xs), 0.5)
}

pub fn summarize(xs: &[f64]) -> Summary {
    let n = xs.len();
    if n == 0 {
        return Summary::default();
    }
    let s = sorted(xs);
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let med = percentile(&s, 0.5);
    let dev: Vec<f64> = xs.iter().map(|x| (x - med).abs()).collect();
    Summary {
        n,
        median: med,
        mean,
        stddev: var.sqrt(),
        mad: 1.4826 * median(&dev),
        min: s[0],
        max: s[n - 1],
    }
}

/// p50 / p90 / p99 and mean of a latency population, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
}

pub fn percentiles(xs: &[f64]) -> Option<Percentiles> {
    if xs.is_empty() {
        return None;
    }
    let s = sorted(xs);
    Some(Percentiles {
        p50: percentile(&s, 0.5),
        p90: percentile(&s, 0.9),
        p99: percentile(&s, 0.99),
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
    })
}

/// Percentile-bootstrap 95% confidence interval of the median of `xs` (`resamples`
/// resamples, seeded): None for fewer than two values.
pub fn bootstrap_median_ci(xs: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    use rand::{Rng, SeedableRng};
    if xs.len() < 2 || resamples == 0 {
        return None;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut meds = Vec::with_capacity(resamples);
    let mut buf = vec![0.0; xs.len()];
    for _ in 0..resamples {
        for b in buf.iter_mut() {
            *b = xs[rng.random_range(0..xs.len())];
        }
        meds.push(median(&buf));
    }
    meds.sort_by(f64::total_cmp);
    Some((percentile(&meds, 0.025), percentile(&meds, 0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.mean, 22.0);
        assert!((s.stddev - 43.617_656_3).abs() < 1e-6);
        assert!((s.mad - 1.4826).abs() < 1e-9);
        let p = percentiles(&[10.0, 20.0, 30.0, 40.0]).unwrap();
        assert_eq!(p.p50, 25.0);
        assert!((p.p90 - 37.0).abs() < 1e-9);
    }
}
