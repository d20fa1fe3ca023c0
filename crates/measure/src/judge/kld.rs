//! The KL-divergence gate's verdict (`verify`, issue 29 item 3): an implementation's figures
//! against llama.cpp's reference ([`KldStats`], computed by `workloads::kld`, which runs the
//! model) held to limits taken from llama.cpp against itself (its default f16-KV/flash-attention
//! run against its f32-KV run, by the same estimator) times [`SLACK`] ([`thresholds`]), check by
//! check ([`decide`]). The limits come from the reference, never from the implementation
//! checked.

use serde::{Deserialize, Serialize};

/// How far past llama.cpp's own self-difference (its default run against its f32-KV run) an
/// implementation may be: 2x its mean KLD, 2x its 99th-percentile KLD, 2x its share of
/// positions with a different top-1 token. Chosen from llama.cpp's self-comparison before any
/// candle implementation was measured against the reference; never loosened after a failure.
pub const SLACK: f64 = 2.0;
/// The perplexity ratio: |ln(ours/llama.cpp)| may exceed llama.cpp's own |ln ratio| by this
/// many standard errors of that mean (the standard error llama.cpp prints with
/// `Mean ln(PPL(Q)/PPL(base))`, recomputed from the reference's per-position values).
pub const PPL_SIGMAS: f64 = 2.0;
/// The reference's own resolution: its log-probabilities are stored with 4 decimals (each off
/// by up to 5e-5 nats), which moves a KLD or a mean log-ratio by up to about 1e-4. A limit is
/// never below it (where llama.cpp's two runs agree exactly, e.g. a tiny fixture model).
pub const RESOLUTION: f64 = 1e-4;

/// The word of a check that passed, in `verify`'s table (its `ok` column).
pub const PASSED: &str = "yes";
/// The word of a check that failed, in `verify`'s table: what a reader of that table (e.g.
/// `compare --paired`'s line on NEW against llama.cpp) looks for.
pub const FAILED: &str = "NO";

/// The name of the first check, the gate's headline figure.
pub const MEAN_KLD: &str = "mean KLD";

/// [`PASSED`] or [`FAILED`].
pub fn ok_word(passed: bool) -> &'static str {
    if passed {
        PASSED
    } else {
        FAILED
    }
}

fn nan() -> f64 {
    f64::NAN
}

/// The gate's figures for one distribution against the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KldStats {
    pub positions: usize,
    pub mean_kld: f64,
    pub kld_p99: f64,
    /// The 99.9th percentile (nearest rank: over 510 positions, the second largest): the
    /// tail the mean and the 99th percentile do not see. NaN in verdicts written before it.
    #[serde(default = "nan")]
    pub kld_p999: f64,
    pub kld_max: f64,
    /// Positions whose most likely token is the reference's, in percent.
    pub same_top1_percent: f64,
    /// exp(mean NLL) over the positions, ours and the reference's.
    pub ppl: f64,
    pub reference_ppl: f64,
    pub ppl_ratio: f64,
    /// Mean of ln(p_ref(next)/p(next)) = ln(ppl ratio), and its standard error.
    pub ln_ppl_ratio: f64,
    pub ln_ppl_ratio_se: f64,
    /// Positions whose logits held a NaN or an infinity (ours: any of the vocabulary's logits;
    /// llama.cpp's: any log-probability it wrote for the position). Such a position's KLD is
    /// not a number, so the gate fails on the count itself, naming it. Absent in verdicts
    /// written before it was counted.
    #[serde(default)]
    pub non_finite_positions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub max_mean_kld: f64,
    pub max_kld_p99: f64,
    /// The tail limit: [`SLACK`] x llama.cpp's own 99.9th-percentile KLD (added with the
    /// held-out text, before any implementation was judged by it). NaN in verdicts written
    /// before it.
    #[serde(default = "nan")]
    pub max_kld_p999: f64,
    pub min_same_top1_percent: f64,
    /// |ln(ppl ratio)| allowed.
    pub max_abs_ln_ppl_ratio: f64,
    pub how: String,
}

/// One check of the gate: name, value, limit, passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub value: f64,
    pub limit: String,
    pub passed: bool,
}

impl Check {
    /// `value` against an upper `limit`.
    fn at_most(name: &str, value: f64, limit: f64) -> Check {
        Check {
            name: name.into(),
            value,
            limit: format!("<= {}", num(limit)),
            passed: value <= limit,
        }
    }
}

/// A figure as the gate writes it (its limits, `verify`'s table): 5 decimals, or 3
/// significant digits when smaller than 0.001.
pub fn num(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.5}")
    }
}

/// The gate's limits from llama.cpp against itself (`self_`: its default run against its
/// f32-KV run over the reference's `top_k` log-probabilities), with [`SLACK`], [`PPL_SIGMAS`]
/// and never below [`RESOLUTION`].
pub fn thresholds(self_: &KldStats, top_k: usize) -> Thresholds {
    let s = self_;
    Thresholds {
        max_mean_kld: (SLACK * s.mean_kld).max(RESOLUTION),
        max_kld_p99: (SLACK * s.kld_p99).max(RESOLUTION),
        max_kld_p999: (SLACK * s.kld_p999).max(RESOLUTION),
        min_same_top1_percent: 100.0 - SLACK * (100.0 - s.same_top1_percent),
        max_abs_ln_ppl_ratio: (s.ln_ppl_ratio.abs() + PPL_SIGMAS * s.ln_ppl_ratio_se)
            .max(RESOLUTION),
        how: format!(
            "llama.cpp against itself (its default f16-KV/flash-attention run vs its f32-KV run, same positions, same top-{} estimator): {SLACK}x its mean KLD ({:.5}), {SLACK}x its 99th-percentile KLD ({:.4}), {SLACK}x its 99.9th-percentile KLD ({:.4}), {SLACK}x its share of different top-1 tokens ({:.2}%), and |ln PPL ratio| up to its own ({:.5}) plus {PPL_SIGMAS} standard errors ({:.5}); none below the reference's resolution {RESOLUTION}",
            top_k, s.mean_kld, s.kld_p99, s.kld_p999, 100.0 - s.same_top1_percent, s.ln_ppl_ratio.abs(), s.ln_ppl_ratio_se
        ),
    }
}

/// The full-precision gate's slack on KLD figures (`thresholds_full`): 100x llama.cpp against
/// itself. llama.cpp's own variants (thread count, micro-batch, measured also: its build
/// without SIMD) only reorder its sums; an implementation on another library (candle's gemm,
/// exp, norms) rounds differently at every op. KLD is quadratic in the logits' error, so 100x
/// is 10x llama.cpp's own logit noise. Set on 2026-11-28 after the project's and candle's
/// unchanged implementations measured 10x llama.cpp's own mean KLD (and 25-40x its tails) on
/// the real SmolLM2, where the first rule ([`SLACK`], 2x) failed both; the other files were
/// judged only after (docs/quality-full-precision.md). The smallest held-out bug measured
/// there (RoPE tables in f16) is 1.4e5x llama.cpp's own.
pub const FULL_SLACK_KLD: f64 = 100.0;
/// The full-precision gate's slack on figures linear in the logits' error (the share of
/// different top-1 tokens, |ln PPL ratio|): sqrt([`FULL_SLACK_KLD`]).
pub const FULL_SLACK_LINEAR: f64 = 10.0;

/// The full-precision gate's limits (`workloads::kld_full`): llama.cpp on the F32 rewrite of
/// the file against itself under each perturbation legitimate for an f32 implementation
/// (`selfs`: name and figures, by the exact full-vocabulary estimator), the largest of each
/// figure with [`FULL_SLACK_KLD`] / [`FULL_SLACK_LINEAR`] and [`PPL_SIGMAS`].
pub fn thresholds_full(selfs: &[(String, KldStats)]) -> Thresholds {
    let max = |f: fn(&KldStats) -> f64| selfs.iter().map(|(_, s)| f(s)).fold(0.0, f64::max);
    let min_top1 = selfs
        .iter()
        .map(|(_, s)| s.same_top1_percent)
        .fold(100.0, f64::min);
    let ppl = selfs
        .iter()
        .map(|(_, s)| s.ln_ppl_ratio.abs() + PPL_SIGMAS * s.ln_ppl_ratio_se)
        .fold(0.0, f64::max);
    let names: Vec<&str> = selfs.iter().map(|(n, _)| n.as_str()).collect();
    let (k, l) = (FULL_SLACK_KLD, FULL_SLACK_LINEAR);
    Thresholds {
        max_mean_kld: k * max(|s| s.mean_kld),
        max_kld_p99: k * max(|s| s.kld_p99),
        max_kld_p999: k * max(|s| s.kld_p999),
        min_same_top1_percent: 100.0 - l * (100.0 - min_top1),
        max_abs_ln_ppl_ratio: l * ppl,
        how: format!(
            "llama.cpp against itself on the F32 rewrite of the file (full vocabulary, f32 logits; perturbations legitimate for an f32 implementation: {}): {k}x the largest mean ({}), 99th-percentile ({}) and 99.9th-percentile ({}) KLD, {l}x the largest share of different top-1 tokens ({:.2}%), |ln PPL ratio| up to {l}x the largest of its own plus {PPL_SIGMAS} standard errors ({})",
            names.join(", "),
            num(max(|s| s.mean_kld)),
            num(max(|s| s.kld_p99)),
            num(max(|s| s.kld_p999)),
            100.0 - min_top1,
            num(ppl)
        ),
    }
}

/// The gate's checks of `ours` against the limits `t`, and whether all passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub checks: Vec<Check>,
    pub passed: bool,
}

/// Judges `ours` by every limit of `t` ([`thresholds`]): mean, 99th and 99.9th percentile
/// KLD, the share of same top-1 tokens, the perplexity ratio, and no non-finite logits.
pub fn decide(ours: &KldStats, t: &Thresholds) -> Decision {
    let checks = vec![
        Check::at_most(MEAN_KLD, ours.mean_kld, t.max_mean_kld),
        Check::at_most("99th percentile KLD", ours.kld_p99, t.max_kld_p99),
        Check::at_most("99.9th percentile KLD", ours.kld_p999, t.max_kld_p999),
        Check {
            name: "same top-1 %".into(),
            value: ours.same_top1_percent,
            limit: format!(">= {:.2}", t.min_same_top1_percent),
            passed: ours.same_top1_percent >= t.min_same_top1_percent,
        },
        Check {
            name: "PPL ratio (ours/llama.cpp)".into(),
            value: ours.ppl_ratio,
            limit: format!(
                "{:.4} .. {:.4}",
                (-t.max_abs_ln_ppl_ratio).exp(),
                t.max_abs_ln_ppl_ratio.exp()
            ),
            passed: ours.ln_ppl_ratio.abs() <= t.max_abs_ln_ppl_ratio,
        },
        Check {
            name: "non-finite logits (positions)".into(),
            value: ours.non_finite_positions as f64,
            limit: "= 0".into(),
            passed: ours.non_finite_positions == 0,
        },
    ];
    Decision {
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp against itself: small differences everywhere.
    fn self_stats() -> KldStats {
        KldStats {
            positions: 510,
            mean_kld: 0.002,
            kld_p99: 0.02,
            kld_p999: 0.05,
            kld_max: 0.06,
            same_top1_percent: 97.0,
            ppl: 10.0,
            reference_ppl: 10.0,
            ppl_ratio: 1.001,
            ln_ppl_ratio: 0.001,
            ln_ppl_ratio_se: 0.002,
            non_finite_positions: 0,
        }
    }

    /// The full-precision limits: the largest of llama.cpp's perturbations, 100x on KLD, 10x
    /// on linear figures, no 1e-4 floor; an implementation inside passes, one past fails.
    #[test]
    fn full_precision_limits_come_from_the_largest_perturbation_without_a_floor() {
        let small = |mean: f64, p99: f64, ln: f64| KldStats {
            positions: 510,
            mean_kld: mean,
            kld_p99: p99,
            kld_p999: 2.0 * p99,
            kld_max: 3.0 * p99,
            same_top1_percent: 100.0,
            ppl: 10.0,
            reference_ppl: 10.0,
            ppl_ratio: ln.exp(),
            ln_ppl_ratio: ln,
            ln_ppl_ratio_se: 1e-8,
            non_finite_positions: 0,
        };
        let selfs = vec![
            ("1 thread".to_string(), small(0.0, 0.0, 0.0)),
            ("micro-batch 1".to_string(), small(3e-12, 1e-11, 1e-7)),
        ];
        let t = thresholds_full(&selfs);
        assert!((t.max_mean_kld - 3e-10).abs() < 1e-22, "{}", t.max_mean_kld);
        assert!((t.max_kld_p99 - 1e-9).abs() < 1e-21);
        assert_eq!(t.min_same_top1_percent, 100.0);
        assert!((t.max_abs_ln_ppl_ratio - 10.0 * (1e-7 + 2e-8)).abs() < 1e-15);
        assert!(t.how.contains("micro-batch 1"), "{}", t.how);
        // A correct implementation on another library (measured: 10-40x llama.cpp's own).
        assert!(decide(&small(3e-11, 3e-10, 1e-6), &t).passed);
        // RoPE tables in f16 on the Llama fixture (measured 5.0e-11 mean against 3e-14 here:
        // the limits scale with llama.cpp's own figures): past them fails.
        let d = decide(&small(4e-10, 3e-10, 1e-6), &t);
        assert!(!d.passed && !d.checks[0].passed && d.checks[1].passed);
        let mut flipped = small(1e-11, 1e-11, 0.0);
        flipped.same_top1_percent = 99.8;
        assert!(
            !decide(&flipped, &t).passed,
            "a different top-1 token anywhere fails"
        );
    }

    #[test]
    fn limits_are_the_slack_times_llama_cpp_against_itself_and_never_below_the_resolution() {
        let t = thresholds(&self_stats(), 10);
        assert_eq!(t.max_mean_kld, 0.004);
        assert_eq!(t.max_kld_p99, 0.04);
        assert_eq!(t.min_same_top1_percent, 94.0);
        assert!((t.max_abs_ln_ppl_ratio - 0.005).abs() < 1e-15);
        assert!(t.how.contains("same top-10 estimator"), "{}", t.how);
        let exact = KldStats {
            mean_kld: 0.0,
            kld_p99: 0.0,
            kld_p999: 0.0,
            ln_ppl_ratio: 0.0,
            ln_ppl_ratio_se: 0.0,
            ..self_stats()
        };
        let t = thresholds(&exact, 10);
        assert_eq!(
            (t.max_mean_kld, t.max_kld_p99, t.max_abs_ln_ppl_ratio),
            (RESOLUTION, RESOLUTION, RESOLUTION)
        );
    }

    /// Passes what llama.cpp itself does; fails each figure moved past its limit, naming it.
    #[test]
    fn an_unchanged_model_passes_and_each_moved_figure_fails_its_check() {
        let t = thresholds(&self_stats(), 10);
        let same = decide(&self_stats(), &t);
        assert!(same.passed, "{:?}", same.checks);
        assert_eq!(same.checks.len(), 6);
        let failed = |ours: KldStats| -> Vec<String> {
            let d = decide(&ours, &t);
            assert!(!d.passed);
            d.checks
                .into_iter()
                .filter(|c| !c.passed)
                .map(|c| c.name)
                .collect()
        };
        let base = self_stats();
        assert_eq!(
            failed(KldStats {
                mean_kld: 0.0041,
                ..base.clone()
            }),
            ["mean KLD"]
        );
        assert_eq!(
            failed(KldStats {
                same_top1_percent: 93.9,
                ..base.clone()
            }),
            ["same top-1 %"]
        );
        assert_eq!(
            failed(KldStats {
                ppl_ratio: 1.01,
                ln_ppl_ratio: 0.00995,
                ..base.clone()
            }),
            ["PPL ratio (ours/llama.cpp)"]
        );
        assert_eq!(
            failed(KldStats {
                non_finite_positions: 1,
                ..base.clone()
            }),
            ["non-finite logits (positions)"]
        );
        assert_eq!(decide(&base, &t).checks[0].limit, "<= 0.00400");
        assert_eq!(ok_word(true), "yes");
        assert_eq!(ok_word(false), "NO");
    }
}
