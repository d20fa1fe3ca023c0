//! The paired verdict (`compare --paired`, `bisect --paired`, `continuous`'s `paired_base`):
//! a metric's median of per-pair ratios B/A with its interval (`measure::paired`) against a
//! threshold, and the sequential design around it (issue 46).
//!
//! A metric is decided when its interval lies wholly above 1 + t ([`PairedVerdict::Regression`]),
//! wholly below 1 - t (Improvement), or wholly inside [1 - t, 1 + t] (Unchanged: equal within
//! the threshold); an interval that straddles 1 + t or 1 - t is Undecided, and a metric with
//! too few pairs for an interval has no verdict. The pairs come in looks of `pairs` each up to
//! `max_pairs` ([`design`]: at most K looks, each interval at confidence 1 - 0.05/K, Bonferroni
//! over the looks); the comparison stops when every metric is decided, at the first regression
//! when asked, at the pair cap or at the time cap ([`stop`]).

use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::judge::speed::Verdict;
use crate::measure::paired::PairedRatio;

/// The verdict of one paired metric. `Display` (and serde) write the words stored in
/// paired.json and printed in paired.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairedVerdict {
    /// The whole interval above 1 + t.
    Regression,
    /// The whole interval below 1 - t.
    Improvement,
    /// The whole interval inside [1 - t, 1 + t].
    Unchanged,
    /// The interval straddles 1 + t or 1 - t.
    Undecided,
    /// Too few pairs for an interval (`measure::paired::MIN_PAIRS`).
    TooFewPairs,
}

const ALL: [PairedVerdict; 5] = [
    PairedVerdict::Regression,
    PairedVerdict::Improvement,
    PairedVerdict::Unchanged,
    PairedVerdict::Undecided,
    PairedVerdict::TooFewPairs,
];

impl PairedVerdict {
    /// The word stored and printed.
    pub const fn word(self) -> &'static str {
        match self {
            PairedVerdict::Regression => "Regression",
            PairedVerdict::Improvement => "Improvement",
            PairedVerdict::Unchanged => "Unchanged",
            PairedVerdict::Undecided => "Undecided",
            PairedVerdict::TooFewPairs => "no verdict (too few pairs)",
        }
    }

    /// Whether the metric is settled: Regression, Improvement or Unchanged. Undecided is
    /// open, and so is a metric with too few pairs (more pairs may decide it).
    pub const fn decided(self) -> bool {
        matches!(
            self,
            PairedVerdict::Regression | PairedVerdict::Improvement | PairedVerdict::Unchanged
        )
    }

    /// The speed verdict this one reads as where both are shown together (the site's badge
    /// colours, [`Verdict::words`]): the three decided verdicts; an open one has none.
    pub const fn speed(self) -> Option<Verdict> {
        match self {
            PairedVerdict::Regression => Some(Verdict::Regression),
            PairedVerdict::Improvement => Some(Verdict::Improvement),
            PairedVerdict::Unchanged => Some(Verdict::Unchanged),
            PairedVerdict::Undecided | PairedVerdict::TooFewPairs => None,
        }
    }
}

impl std::fmt::Display for PairedVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

impl Serialize for PairedVerdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.word())
    }
}

impl FromStr for PairedVerdict {
    type Err = String;

    /// A stored word (paired.json's `verdict`) back into the verdict.
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter()
            .find(|v| v.word() == s)
            .ok_or_else(|| format!("`{s}` is not a paired verdict"))
    }
}

/// The verdict of one metric: its per-pair median ratio's interval against the threshold `t`
/// (the module docs).
pub fn verdict(p: &PairedRatio, t: f64) -> PairedVerdict {
    match p.ci {
        Some((lo, _)) if lo > 1.0 + t => PairedVerdict::Regression,
        Some((_, hi)) if hi < 1.0 - t => PairedVerdict::Improvement,
        Some((lo, hi)) if lo >= 1.0 - t && hi <= 1.0 + t => PairedVerdict::Unchanged,
        Some(_) => PairedVerdict::Undecided,
        None => PairedVerdict::TooFewPairs,
    }
}

/// The sequential design: how many looks at most, and each look's confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Design {
    /// At most this many looks: `max_pairs / pairs`, rounded up (at least 1).
    pub looks: usize,
    /// Each look's interval: 1 - 0.05 / looks (95% over all of them, Bonferroni).
    pub confidence: f64,
}

/// The design of looks of `pairs` pairs up to `max_pairs`.
pub fn design(pairs: usize, max_pairs: usize) -> Design {
    let looks = max_pairs.div_ceil(pairs).max(1);
    Design {
        looks,
        confidence: 1.0 - 0.05 / looks as f64,
    }
}

/// The metrics not yet decided ([`PairedVerdict::decided`]).
pub fn open(verdicts: &[PairedVerdict]) -> usize {
    verdicts.iter().filter(|v| !v.decided()).count()
}

/// Where the comparison stands after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Pairs per scenario so far.
    pub done: usize,
    /// The pair cap (`--max-pairs`).
    pub max_pairs: usize,
    /// The time cap (`--max-minutes`) has passed.
    pub out_of_time: bool,
    /// Stop at the first regression (`--stop-on-regression`).
    pub stop_on_regression: bool,
}

/// The stop rule, after each look: why the comparison stops now, or None to take another look.
/// In order: every metric decided; a regression when asked to stop on one; the pair cap; the
/// time cap.
pub fn stop(verdicts: &[PairedVerdict], look: Look) -> Option<&'static str> {
    if open(verdicts) == 0 {
        Some("every metric decided")
    } else if look.stop_on_regression && verdicts.contains(&PairedVerdict::Regression) {
        Some("a regression (--stop-on-regression)")
    } else if look.done >= look.max_pairs {
        Some("the pair cap (--max-pairs)")
    } else if look.out_of_time {
        Some("the time cap (--max-minutes)")
    } else {
        None
    }
}

/// The pairs of each block of fresh workers: `pairs` split as evenly as can be into
/// `blocks` (at least 1, at most one block per pair), the larger blocks first.
pub fn block_sizes(pairs: usize, blocks: usize) -> Vec<usize> {
    let blocks = blocks.clamp(1, pairs.max(1));
    (0..blocks)
        .map(|blk| pairs / blocks + usize::from(blk < pairs % blocks))
        .collect()
}

/// Why a metric is Undecided, from its interval and the threshold `t` (None where it is
/// decided or has too few pairs): an interval wider than the threshold cannot read Unchanged
/// at any estimate, so more pairs are what decides it; a narrower one that still holds an edge
/// of the band (1 - t or 1 + t) is of a change about the threshold's size.
pub fn undecided_why(p: &PairedRatio, t: f64) -> Option<String> {
    if verdict(p, t) != PairedVerdict::Undecided {
        return None;
    }
    let (lo, hi) = p.ci?;
    let half = (hi - lo) / 2.0;
    Some(if half > t {
        format!(
            "its interval [{lo:.3}, {hi:.3}] is ±{:.1}% wide, wider than the ±{:.1}% threshold: more pairs (--max-pairs, --max-minutes) narrow it",
            100.0 * half,
            100.0 * t
        )
    } else {
        let edge = if hi > 1.0 + t { 1.0 + t } else { 1.0 - t };
        format!(
            "its interval [{lo:.3}, {hi:.3}] (±{:.1}%) holds the threshold's edge {edge:.3}: a change about the threshold's size",
            100.0 * half
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use PairedVerdict::*;

    /// The reason is the interval's: too wide for the threshold, or narrow but on its edge;
    /// a decided metric has none.
    #[test]
    fn an_undecided_metric_says_why_and_a_decided_one_does_not() {
        let t = 0.01;
        assert_eq!(undecided_why(&ratio(Some((1.011, 1.03))), t), None);
        assert_eq!(undecided_why(&ratio(Some((0.995, 1.005))), t), None);
        assert_eq!(undecided_why(&ratio(None), t), None);
        let wide = undecided_why(&ratio(Some((0.96, 1.04))), t).unwrap();
        assert!(
            wide.contains("±4.0% wide, wider than the ±1.0% threshold"),
            "{wide}"
        );
        let edge = undecided_why(&ratio(Some((1.003, 1.015))), t).unwrap();
        assert!(edge.contains("holds the threshold's edge 1.010"), "{edge}");
        let low = undecided_why(&ratio(Some((0.985, 0.997))), t).unwrap();
        assert!(low.contains("edge 0.990"), "{low}");
    }

    fn ratio(ci: Option<(f64, f64)>) -> PairedRatio {
        PairedRatio {
            ratio: 1.0,
            pairs: 60,
            ci,
            confidence: 0.95,
        }
    }

    #[test]
    fn a_regression_needs_the_whole_interval_beyond_the_threshold() {
        let t = 0.02;
        assert_eq!(verdict(&ratio(Some((1.021, 1.08))), t), Regression);
        assert_eq!(verdict(&ratio(Some((1.019, 1.08))), t), Undecided);
        assert_eq!(verdict(&ratio(Some((0.90, 0.979))), t), Improvement);
        assert_eq!(verdict(&ratio(Some((0.97, 1.03))), t), Undecided);
        assert_eq!(verdict(&ratio(Some((0.981, 1.019))), t), Unchanged);
        assert_eq!(verdict(&ratio(None), t), TooFewPairs);
    }

    /// The words stored in paired.json are today's, and read back.
    #[test]
    fn the_stored_words_are_unchanged_and_read_back() {
        assert_eq!(
            ALL.map(|v| v.to_string()),
            [
                "Regression",
                "Improvement",
                "Unchanged",
                "Undecided",
                "no verdict (too few pairs)"
            ]
        );
        for v in ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.word());
            assert_eq!(v.word().parse::<PairedVerdict>(), Ok(v));
        }
        assert!("regression".parse::<PairedVerdict>().is_err());
    }

    #[test]
    fn looks_share_the_five_percent() {
        let d = design(60, 240);
        assert_eq!(d.looks, 4);
        assert!((d.confidence - 0.9875).abs() < 1e-12, "{d:?}");
        assert_eq!(design(60, 60).looks, 1);
        assert_eq!(design(60, 61).looks, 2);
        assert!((design(60, 60).confidence - 0.95).abs() < 1e-12);
    }

    fn look(done: usize, out_of_time: bool, stop_on_regression: bool) -> Look {
        Look {
            done,
            max_pairs: 240,
            out_of_time,
            stop_on_regression,
        }
    }

    /// The stop rule both ways: decided metrics stop, an open one does not; a metric with too
    /// few pairs is open (it used to count as decided, so a run stopped early as if settled).
    #[test]
    fn the_stop_rule_stops_when_decided_and_goes_on_while_open() {
        let l = look(60, false, false);
        assert_eq!(
            stop(&[Unchanged, Regression, Improvement], l),
            Some("every metric decided")
        );
        assert_eq!(stop(&[Unchanged, Undecided], l), None);
        assert_eq!(stop(&[Unchanged, TooFewPairs], l), None);
        assert_eq!(open(&[Unchanged, TooFewPairs, Undecided]), 2);
        // Open metrics stop at a regression when asked, at the pair cap, at the time cap.
        assert_eq!(
            stop(&[Regression, Undecided], look(60, false, true)),
            Some("a regression (--stop-on-regression)")
        );
        assert_eq!(stop(&[Regression, Undecided], l), None);
        assert_eq!(
            stop(&[TooFewPairs], look(240, false, false)),
            Some("the pair cap (--max-pairs)")
        );
        assert_eq!(
            stop(&[Undecided], look(120, true, false)),
            Some("the time cap (--max-minutes)")
        );
    }

    #[test]
    fn pairs_split_evenly_into_blocks() {
        assert_eq!(block_sizes(60, 12), vec![5; 12]);
        assert_eq!(block_sizes(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(block_sizes(3, 12), vec![1, 1, 1]);
        assert_eq!(block_sizes(7, 0), vec![7]);
        assert_eq!(block_sizes(60, 12).iter().sum::<usize>(), 60);
    }
}
