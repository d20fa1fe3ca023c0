//! The exit rules: what fails a command (exit 1) once its verdicts are made. `compare` of runs
//! or commits, `compare --paired`, `continuous`, `verify` and `instructions` all end here, so
//! "what fails CI" is written once:
//!
//! - a comparison fails on a regression, on changed outputs unless they are wanted
//!   (`--allow-output-change`), and on a benchmark of the base run missing from the new one
//!   unless allowed (`--allow-missing`) ([`failed`]); a paired comparison is the same rule with
//!   nothing missing;
//! - `continuous` fails when any of its comparisons fails, with nothing allowed
//!   ([`continuous_failed`]);
//! - `verify` fails when a check of the KL-divergence gate fails (`judge::kld::decide`);
//! - `instructions` fails when a count differs from the baseline by more than the tolerance,
//!   either way ([`differs`]).

use std::process::ExitCode;

/// What a comparison found, the counts its exit reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    /// Benchmarks (or paired metrics) judged a regression.
    pub regressions: usize,
    /// Benchmarks (or paired scenarios) whose outputs changed (`judge::outputs`).
    pub outputs_changed: usize,
    /// Benchmarks of the base run missing from the new one.
    pub missing: usize,
}

/// What the user said is wanted: listed, not failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowed {
    /// `--allow-output-change`.
    pub output_change: bool,
    /// `--allow-missing`.
    pub missing: bool,
}

impl Allowed {
    /// Nothing allowed (`continuous`, and the defaults).
    pub const NONE: Allowed = Allowed {
        output_change: false,
        missing: false,
    };
}

/// A comparison's verdict for CI: a regression, changed outputs (unless allowed), or (unless
/// allowed) a benchmark of the base run missing from the new one.
pub fn failed(f: Findings, allowed: Allowed) -> bool {
    f.regressions > 0
        || (!allowed.output_change && f.outputs_changed > 0)
        || (!allowed.missing && f.missing > 0)
}

/// `continuous`'s rule for the regressions of a comparison of two stored runs: they count only
/// as far as a paired comparison of the two builds, taken now (both sides in the same
/// minutes, `compare --paired`), confirms them. Two runs minutes apart differ by the machine's
/// drift (measured 2026-11-28: an unchanged rerun 1.38x slower than the config's first run,
/// beyond the ±28% its five earlier runs spread), which no threshold on stored runs can tell
/// from a slower build. `confirmed`: how many of the flagged benchmarks the paired comparison
/// flagged too; None: they could not be checked paired (an ad-hoc shape, a baseline built from
/// an uncommitted tree, confirmation turned off) and the unpaired verdict stands.
pub fn after_confirmation(f: Findings, confirmed: Option<usize>) -> Findings {
    match confirmed {
        Some(n) => Findings {
            regressions: n.min(f.regressions),
            ..f
        },
        None => f,
    }
}

/// `continuous`: fails when the paired comparison (if one ran) or any comparison of runs (the
/// previous run, the baseline) fails, with nothing allowed.
pub fn continuous_failed(paired: Option<Findings>, runs: &[Findings]) -> bool {
    // `runs` hold their regressions after `after_confirmation`.
    paired.is_some_and(|p| failed(p, Allowed::NONE))
        || runs.iter().any(|f| failed(*f, Allowed::NONE))
}

/// An instruction count's relative change, new / base - 1 (0 for two zeros, infinite from
/// zero to any count).
pub fn count_change(base: u64, new: u64) -> f64 {
    if base == 0 {
        if new == 0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        new as f64 / base as f64 - 1.0
    }
}

/// An instruction count differs when |change| exceeds the tolerance, either way (fewer
/// instructions are a change of the code too).
pub fn differs(change: f64, tolerance: f64) -> bool {
    change.abs() > tolerance
}

/// The exit code of a verdict: 1 when it failed, 0 otherwise (2, bad input, is the CLI's).
pub fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: Findings = Findings {
        regressions: 0,
        outputs_changed: 0,
        missing: 0,
    };

    #[test]
    fn only_confirmed_regressions_of_stored_runs_fail_continuous() {
        let two = Findings {
            regressions: 2,
            ..CLEAN
        };
        // Not confirmed: drift, the run passes; one confirmed: it fails; not checkable: the
        // unpaired verdict stands. Changed outputs fail whatever the confirmation says.
        assert!(!continuous_failed(
            None,
            &[after_confirmation(two, Some(0))]
        ));
        assert!(continuous_failed(None, &[after_confirmation(two, Some(1))]));
        assert_eq!(after_confirmation(two, Some(5)).regressions, 2);
        assert!(continuous_failed(None, &[after_confirmation(two, None)]));
        let changed = Findings {
            outputs_changed: 1,
            ..two
        };
        assert!(continuous_failed(
            None,
            &[after_confirmation(changed, Some(0))]
        ));
    }

    #[test]
    fn a_comparison_fails_on_each_finding_unless_allowed_and_passes_when_clean() {
        assert!(!failed(CLEAN, Allowed::NONE));
        let regression = Findings {
            regressions: 1,
            ..CLEAN
        };
        let changed = Findings {
            outputs_changed: 1,
            ..CLEAN
        };
        let missing = Findings {
            missing: 1,
            ..CLEAN
        };
        let all = Allowed {
            output_change: true,
            missing: true,
        };
        for f in [regression, changed, missing] {
            assert!(failed(f, Allowed::NONE), "{f:?}");
        }
        // A regression is never allowed; changed outputs and missing benchmarks may be.
        assert!(failed(regression, all));
        assert!(!failed(changed, all) && !failed(missing, all));
        assert!(failed(
            changed,
            Allowed {
                missing: true,
                ..Allowed::NONE
            }
        ));
    }

    #[test]
    fn continuous_fails_when_any_comparison_fails() {
        assert!(!continuous_failed(None, &[CLEAN, CLEAN]));
        assert!(!continuous_failed(Some(CLEAN), &[]));
        let changed = Findings {
            outputs_changed: 2,
            ..CLEAN
        };
        assert!(continuous_failed(Some(changed), &[CLEAN]));
        assert!(continuous_failed(None, &[CLEAN, changed]));
        let missing = Findings {
            missing: 1,
            ..CLEAN
        };
        assert!(continuous_failed(None, &[missing]));
    }

    #[test]
    fn a_count_beyond_the_tolerance_differs_either_way_and_an_equal_one_does_not() {
        assert_eq!(count_change(100, 100), 0.0);
        assert!(!differs(count_change(100, 100), 0.001));
        assert!(differs(count_change(1000, 1002), 0.001));
        assert!(differs(count_change(1000, 998), 0.001));
        assert!(!differs(count_change(1000, 1001), 0.001));
        assert_eq!(count_change(0, 0), 0.0);
        assert!(differs(count_change(0, 5), 0.5));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(true), ExitCode::from(1));
        assert_eq!(exit_code(false), ExitCode::SUCCESS);
    }
}
