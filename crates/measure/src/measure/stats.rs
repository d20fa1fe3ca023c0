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

/// The mean of repeated runs with its 95% Student-t interval (AIPerf's multi-run report) and
/// the coefficient of variation (sample standard deviation over the mean).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanInterval {
    pub n: usize,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// None where the mean is 0.
    pub cv: Option<f64>,
}

/// [`MeanInterval`] of `xs`; None for fewer than two values.
pub fn mean_interval(xs: &[f64]) -> Option<MeanInterval> {
    if xs.len() < 2 {
        return None;
    }
    let s = summarize(xs);
    let half = t975(xs.len() - 1) * s.stddev / (xs.len() as f64).sqrt();
    Some(MeanInterval {
        n: xs.len(),
        mean: s.mean,
        lo: s.mean - half,
        hi: s.mean + half,
        cv: (s.mean != 0.0).then(|| s.stddev / s.mean.abs()),
    })
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (at least 1): the table's
/// values to 30, then the Cornish-Fisher expansion to its second term,
/// z + (z^3 + z) / (4 df) + (5 z^5 + 16 z^3 + 3 z) / (96 df^2).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => {
            let (z, v) = (1.959_964f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * v)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The t density integrated numerically (Simpson) over [-q, q] is 0.95 for the table's
    /// quantiles: a check by a route that does not use the table.
    #[test]
    fn t975_holds_95_percent_of_the_t_distribution() {
        fn ln_gamma(x: f64) -> f64 {
            // Lanczos (g = 7, n = 9).
            const C: [f64; 9] = [
                0.999_999_999_999_809_9,
                676.520_368_121_885_1,
                -1_259.139_216_722_402_8,
                771.323_428_777_653_1,
                -176.615_029_162_140_6,
                12.507_343_278_686_905,
                -0.138_571_095_265_720_12,
                9.984_369_578_019_572e-6,
                1.505_632_735_149_311_6e-7,
            ];
            let x = x - 1.0;
            let mut a = C[0];
            let t = x + 7.5;
            for (i, c) in C.iter().enumerate().skip(1) {
                a += c / (x + i as f64);
            }
            0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
        }
        for df in [1usize, 2, 3, 5, 9, 19, 30, 31, 60, 200] {
            let v = df as f64;
            let c = (ln_gamma((v + 1.0) / 2.0) - ln_gamma(v / 2.0)).exp()
                / (v * std::f64::consts::PI).sqrt();
            let pdf = |x: f64| c * (1.0 + x * x / v).powf(-(v + 1.0) / 2.0);
            let q = t975(df);
            let n = 20_000;
            let h = 2.0 * q / n as f64;
            let mut sum = pdf(-q) + pdf(q);
            for i in 1..n {
                sum += pdf(-q + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            let mass = sum * h / 3.0;
            assert!((mass - 0.95).abs() < 2e-4, "df {df}: t975 {q} holds {mass}");
        }
    }

    #[test]
    fn mean_interval_of_repeated_runs() {
        // mean 2, sample sd 1, n 3: half-width 4.303 / sqrt(3).
        let m = mean_interval(&[1.0, 2.0, 3.0]).unwrap();
        let half = 4.303 / 3f64.sqrt();
        assert!((m.lo - (2.0 - half)).abs() < 1e-12 && (m.hi - (2.0 + half)).abs() < 1e-12);
        assert_eq!(m.cv, Some(0.5));
        assert!(mean_interval(&[1.0]).is_none());
    }

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
