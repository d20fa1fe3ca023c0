//! The speed verdict of one benchmark from two sample sets (base and new), as `compare`, the
//! `cargo bench` summary, the site and `continuous` make it:
//!
//! - fewer than [`MIN_SAMPLES`] samples on either side: [`Verdict::InsufficientSamples`], never
//!   a regression, whatever the medians say;
//! - otherwise [`RESAMPLES`] bootstrap resamples (seeded with [`SEED`], so a comparison is
//!   reproducible) of both sample sets give the distribution of median(new) / median(base); its
//!   2.5th..97.5th percentiles are the 95% interval. A regression when the whole interval lies
//!   above 1 + threshold, an improvement when it lies below 1 - threshold, unchanged otherwise
//!   ([`judge`]);
//! - two saved runs differ by more than their trials' own spread (a rerun of the same binary
//!   lands 10-15% away on the project's VMs), so a comparison of saved runs may also hold each
//!   verdict to the benchmark's run-to-run noise ([`with_noise`]): a regression or an
//!   improvement whose interval does not also clear `1 ± noise` is [`Verdict::Undecided`].
//!
//! Every word a speed verdict is written with comes from one table ([`Verdict::words`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::measure::stats::{median, percentile};

pub const RESAMPLES: usize = 10_000;

/// Fewer samples than this on either side: no verdict.
pub const MIN_SAMPLES: usize = 5;

/// The bootstrap's seed: the same two runs always get the same interval.
pub const SEED: u64 = 0xC0FFEE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Regression,
    Improvement,
    Unchanged,
    /// Fewer than [`MIN_SAMPLES`] samples on a side: not judged, never a regression.
    InsufficientSamples,
    /// The interval clears the threshold but not the benchmark's run-to-run noise on this
    /// machine ([`with_noise`]): what an unchanged rerun can do; never a regression.
    Undecided,
}

/// The ways one speed verdict is written. The places differ on purpose (a table cell, a
/// sentence, a badge), and keep their own words; they all take them from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    /// `compare`'s table (and [`Verdict`]'s `Display`): `Regression`.
    pub table: &'static str,
    /// The `cargo bench` summary's change against the previous run: `SLOWER`.
    pub change: &'static str,
    /// The site's badge: `SLOWER`.
    pub badge: &'static str,
    /// The site's CSS class of the badge: `slower`, `faster`, `noise`, or none.
    pub class: &'static str,
}

impl Verdict {
    /// Every word of this verdict (the one table of them). The summary says `too few
    /// samples to judge` where the site's badge says `too few samples`, and the site colours
    /// Undecided as noise: both as they were before this table.
    pub const fn words(self) -> Words {
        let (table, change, badge, class) = match self {
            Verdict::Regression => ("Regression", "SLOWER", "SLOWER", "slower"),
            Verdict::Improvement => ("Improvement", "faster", "faster", "faster"),
            Verdict::Unchanged => ("Unchanged", "within noise", "within noise", "noise"),
            Verdict::InsufficientSamples => (
                "Insufficient samples",
                "too few samples to judge",
                "too few samples",
                "",
            ),
            Verdict::Undecided => (
                "Undecided (within run-to-run noise)",
                "undecided (within run-to-run noise)",
                "undecided (within run-to-run noise)",
                "noise",
            ),
        };
        Words {
            table,
            change,
            badge,
            class,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.words().table)
    }
}

/// A benchmark's run-to-run noise threshold and where it came from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowNoise {
    /// Relative: 0.2 = a rerun may land 20% away.
    pub threshold: f64,
    /// `measured (N runs, <where>)` or `default`.
    pub source: String,
}

/// A verdict held to a run-to-run noise threshold `noise` as well: a regression or an
/// improvement whose interval `ci` does not also clear `1 ± noise` becomes
/// [`Verdict::Undecided`]; every other verdict stays.
pub fn with_noise(v: Verdict, ci: Option<(f64, f64)>, noise: f64) -> Verdict {
    let (lo, hi) = ci.unwrap_or((f64::NAN, f64::NAN));
    match v {
        Verdict::Regression if lo <= 1.0 + noise => Verdict::Undecided,
        Verdict::Improvement if hi >= 1.0 - noise => Verdict::Undecided,
        v => v,
    }
}

/// Parses `5%`, `5` (percent) or `0.05`.
pub fn parse_threshold(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map(|x| x / 100.0)
    } else {
        t.parse::<f64>()
            .map(|x| if x >= 1.0 { x / 100.0 } else { x })
    }
    .map_err(|_| format!("`{s}` is not a percentage (e.g. 5%)"))?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("`{s}` must be between 0% and 100%"));
    }
    Ok(v)
}

/// Bootstrap 95% interval of median(new)/median(base).
pub fn bootstrap_ratio(base: &[f64], new: &[f64], seed: u64) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf_b = vec![0.0; base.len()];
    let mut buf_n = vec![0.0; new.len()];
    let mut ratios = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for x in buf_b.iter_mut() {
            *x = base[rng.random_range(0..base.len())];
        }
        for x in buf_n.iter_mut() {
            *x = new[rng.random_range(0..new.len())];
        }
        ratios.push(median(&buf_n) / median(&buf_b));
    }
    ratios.sort_by(f64::total_cmp);
    (percentile(&ratios, 0.025), percentile(&ratios, 0.975))
}

/// The verdict of one benchmark from its raw samples (the rules in the module docs).
/// Returns the verdict and, when there were enough samples, the 95% interval.
pub fn judge(base: &[f64], new: &[f64], threshold: f64) -> (Verdict, Option<(f64, f64)>) {
    if base.len() < MIN_SAMPLES || new.len() < MIN_SAMPLES {
        return (Verdict::InsufficientSamples, None);
    }
    let (lo, hi) = bootstrap_ratio(base, new, SEED);
    let verdict = if lo > 1.0 + threshold {
        Verdict::Regression
    } else if hi < 1.0 - threshold {
        Verdict::Improvement
    } else {
        Verdict::Unchanged
    };
    (verdict, Some((lo, hi)))
}

#[cfg(test)]
mod tests {
    //! The verdict rules on synthetic, seeded samples (no timing); output::compare's tests
    //! check them again through the join of two runs.
    use super::*;

    /// `n` samples around `center`, uniform relative noise of +-`noise`, seeded.
    fn samples(center: f64, noise: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| center * (1.0 + noise * rng.random_range(-1.0..=1.0)))
            .collect()
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("5%").unwrap(), 0.05);
        assert_eq!(parse_threshold("0.05").unwrap(), 0.05);
        assert_eq!(parse_threshold("5").unwrap(), 0.05);
        assert!(parse_threshold("abc").is_err());
        assert!(parse_threshold("150%").is_err());
    }

    #[test]
    fn bootstrap_separates_shifted_samples() {
        let base: Vec<f64> = (0..10).map(|i| 1.0 + 0.01 * i as f64).collect();
        let slow: Vec<f64> = base.iter().map(|x| x * 1.5).collect();
        let (lo, _) = bootstrap_ratio(&base, &slow, 1);
        assert!(lo > 1.3);
        let (lo, hi) = bootstrap_ratio(&base, &base, 1);
        assert!(lo < 1.0 && hi > 1.0);
    }

    /// Flags a change beyond the threshold both ways, and is silent on the same samples.
    #[test]
    fn a_change_is_flagged_and_the_same_samples_are_unchanged() {
        let base = samples(1.0, 0.01, 10, 1);
        assert_eq!(
            judge(&base, &samples(1.5, 0.01, 10, 2), 0.05).0,
            Verdict::Regression
        );
        assert_eq!(
            judge(&base, &samples(0.5, 0.01, 10, 3), 0.05).0,
            Verdict::Improvement
        );
        assert_eq!(
            judge(&base, &samples(1.0, 0.01, 10, 4), 0.05).0,
            Verdict::Unchanged
        );
        let (v, ci) = judge(&base[..4], &samples(1.5, 0.01, 10, 2), 0.05);
        assert_eq!((v, ci), (Verdict::InsufficientSamples, None));
    }

    #[test]
    fn noise_turns_a_verdict_inside_it_undecided_and_keeps_one_beyond_it() {
        let ci = Some((1.2, 1.3));
        assert_eq!(with_noise(Verdict::Regression, ci, 0.4), Verdict::Undecided);
        assert_eq!(
            with_noise(Verdict::Regression, ci, 0.1),
            Verdict::Regression
        );
        let ci = Some((0.5, 0.7));
        assert_eq!(
            with_noise(Verdict::Improvement, ci, 0.2),
            Verdict::Improvement
        );
        assert_eq!(
            with_noise(Verdict::Improvement, ci, 0.4),
            Verdict::Undecided
        );
        assert_eq!(with_noise(Verdict::Unchanged, ci, 0.4), Verdict::Unchanged);
        assert_eq!(
            with_noise(Verdict::InsufficientSamples, None, 0.4),
            Verdict::InsufficientSamples
        );
    }

    /// The words each place prints, and the stored (serde) names, are what they were.
    #[test]
    fn every_word_of_a_verdict_comes_from_one_table() {
        let all = [
            Verdict::Regression,
            Verdict::Improvement,
            Verdict::Unchanged,
            Verdict::InsufficientSamples,
            Verdict::Undecided,
        ];
        let shown: Vec<String> = all.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            shown,
            [
                "Regression",
                "Improvement",
                "Unchanged",
                "Insufficient samples",
                "Undecided (within run-to-run noise)"
            ]
        );
        assert_eq!(all.map(|v| v.words().change)[3], "too few samples to judge");
        assert_eq!(all.map(|v| v.words().badge)[3], "too few samples");
        assert_eq!(
            all.map(|v| v.words().class),
            ["slower", "faster", "noise", "", "noise"]
        );
        for v in all {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(serde_json::from_value::<Verdict>(json).unwrap(), v);
        }
        assert_eq!(
            serde_json::to_value(Verdict::InsufficientSamples).unwrap(),
            "insufficient-samples"
        );
    }
}
