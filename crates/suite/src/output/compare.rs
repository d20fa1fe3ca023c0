//! Comparing two runs: join on the full record key ([`Record::key`]: kind, benchmark id,
//! model, sampling, shape), the speed verdict of each joined benchmark from its raw samples
//! and the output verdict beside it (both the judge's: `judge::speed`, `judge::outputs`), and
//! what fails CI (`judge::gate`).
//!
//! Rules, in order:
//! - a run that holds two records with the same key is refused (an error naming the key and
//!   the run): joining it would silently keep one of them;
//! - runs from different hardware, or from builds with different settings (profile,
//!   features, rustflags, rustc, candle version: [`Build::differences`](crate::measure::hardware::Build::differences)), are refused unless
//!   forced, and the error names what differs;
//! - a benchmark of the base run missing from the new run (crashed, renamed, relabelled) is
//!   listed and fails the comparison ([`Comparison::failed`]) unless missing ones are allowed;
//! - each joined benchmark gets `judge::speed::judge`'s verdict: fewer than `MIN_SAMPLES`
//!   samples on either side is `InsufficientSamples`, never a regression; otherwise the
//!   bootstrap 95% interval of median(new) / median(base) against the threshold.
//! - two saved runs differ by more than their trials' own spread: a rerun of the same binary
//!   lands 10-15% away on these VMs (issue 46: an unchanged `continuous` rerun read 1.226x
//!   [1.114, 1.332]). [`apply_noise`] therefore gives each row the run-to-run noise threshold
//!   of its benchmark on this machine ([`RowNoise`]: measured by `modelbench noise` or from the
//!   config's own earlier runs, else the default) and a row whose interval clears the
//!   threshold but not that noise becomes [`Verdict::Undecided`] (`judge::speed::with_noise`):
//!   beyond the threshold, within what an unchanged rerun does; not a regression. `compare` of
//!   run folders and `continuous` apply it; paired verdicts need not (both sides run in the
//!   same minutes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::judge::gate::{self, Allowed, Findings};
use crate::judge::outputs::{judge as judge_outputs, OutputJudgement, OutputVerdict};
use crate::judge::speed::{judge, with_noise, RowNoise, Verdict, MIN_SAMPLES};
use crate::measure::stats::median;
use crate::output::record::Record;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The join key ([`Record::key`]).
    pub key: String,
    pub kind: String,
    /// Criterion's benchmark id (or `<scenario>/<device>-<dtype>` for records without one).
    pub id: String,
    pub scenario: String,
    pub model: String,
    pub dtype: String,
    pub device: String,
    pub sampling: String,
    /// The workload's shape as JSON (`null` when the record has none).
    pub shape: String,
    pub n_base: usize,
    pub n_new: usize,
    pub base_median_s: f64,
    pub new_median_s: f64,
    /// median(new) / median(base): above 1 is slower. None without samples on a side.
    pub ratio: Option<f64>,
    /// The bootstrap 95% interval of the ratio; None for `InsufficientSamples`.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub verdict: Verdict,
    /// The run-to-run noise threshold the verdict also had to clear ([`apply_noise`]); None
    /// when the comparison did not apply one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<RowNoise>,
    /// The output verdict beside the speed verdict (`judge::outputs::judge`): whether the
    /// two runs computed the same thing.
    pub outputs: OutputJudgement,
}

/// Gives every judged row its noise threshold (`noise(row)`) and turns a regression or an
/// improvement whose interval does not also clear `1 ± noise` into [`Verdict::Undecided`].
pub fn apply_noise(c: &mut Comparison, noise: impl Fn(&Row) -> RowNoise) {
    for r in &mut c.rows {
        if r.verdict == Verdict::InsufficientSamples {
            continue;
        }
        let n = noise(r);
        r.verdict = with_noise(r.verdict, r.ci_low.zip(r.ci_high), n.threshold);
        r.noise = Some(n);
    }
    c.noise_applied = true;
}

impl Row {
    /// Why a row has no verdict, e.g. `insufficient samples (3, 3); need >= 5 a side`.
    pub fn insufficient_note(&self) -> String {
        format!(
            "insufficient samples ({}, {}); need >= {MIN_SAMPLES} a side",
            self.n_base, self.n_new
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub rows: Vec<Row>,
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
    pub threshold: f64,
    /// Injected slowdowns the runs carried (`MODELBENCH_INJECT_SLOWDOWN`), `side: spec`.
    #[serde(default)]
    pub injected: Vec<String>,
    /// Build settings that differ and were compared anyway (`--force`).
    #[serde(default)]
    pub forced: Vec<String>,
    /// Whether the rows were also judged against run-to-run noise ([`apply_noise`]).
    #[serde(default)]
    pub noise_applied: bool,
    /// Changed outputs are wanted (`--allow-output-change`): listed, not failed.
    #[serde(default)]
    pub allow_output_change: bool,
}

impl Comparison {
    pub fn count(&self, v: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == v).count()
    }

    pub fn regressions(&self) -> usize {
        self.count(Verdict::Regression)
    }

    pub fn insufficient(&self) -> usize {
        self.count(Verdict::InsufficientSamples)
    }

    /// Benchmarks of the base run that the new run lacks.
    pub fn missing(&self) -> usize {
        self.only_in_base.len()
    }

    /// Benchmarks whose outputs changed (the output verdict).
    pub fn outputs_changed(&self) -> usize {
        self.outputs_count(OutputVerdict::Changed)
    }

    pub fn outputs_count(&self, v: OutputVerdict) -> usize {
        self.rows.iter().filter(|r| r.outputs.verdict == v).count()
    }

    /// What the exit rules read: regressions, changed outputs, missing benchmarks.
    pub fn findings(&self) -> Findings {
        Findings {
            regressions: self.regressions(),
            outputs_changed: self.outputs_changed(),
            missing: self.missing(),
        }
    }

    /// The comparison's verdict for CI (`judge::gate::failed`): a regression, changed outputs
    /// (unless `allow_output_change`), or (unless `allow_missing`) a benchmark of the base run
    /// missing from the new one.
    pub fn failed(&self, allow_missing: bool) -> bool {
        gate::failed(
            self.findings(),
            Allowed {
                output_change: self.allow_output_change,
                missing: allow_missing,
            },
        )
    }
}

/// The records of a run by key; an error naming the key and the run when two share one.
fn by_key<'a>(run: &str, records: &'a [Record]) -> Result<BTreeMap<String, &'a Record>> {
    let mut m = BTreeMap::new();
    for r in records {
        let k = r.key();
        if m.insert(k.clone(), r).is_some() {
            return Err(Error::Report(format!(
                "{run}: two records share the key `{k}` (kind | id | model | sampling | shape); \
                 a run must hold each benchmark once to be compared"
            )));
        }
    }
    Ok(m)
}

/// Compares two runs, named "base run" and "new run" in errors. See [`compare_runs`].
pub fn compare(base: &[Record], new: &[Record], threshold: f64, force: bool) -> Result<Comparison> {
    compare_runs("base run", base, "new run", new, threshold, force)
}

/// Compares two runs (`base_name` and `new_name` name them in errors, e.g. their folders).
/// Refuses duplicate keys within a run, and runs from different hardware unless `force`.
pub fn compare_runs(
    base_name: &str,
    base: &[Record],
    new_name: &str,
    new: &[Record],
    threshold: f64,
    force: bool,
) -> Result<Comparison> {
    let b = by_key(base_name, base)?;
    let n = by_key(new_name, new)?;
    let fp = |rs: &[Record]| {
        rs.first()
            .map(|r| r.hardware.fingerprint())
            .unwrap_or_default()
    };
    if !force && fp(base) != fp(new) {
        return Err(Error::Report(format!(
            "runs come from different hardware ({} vs {}); compare like with like, or pass --force",
            fp(base),
            fp(new)
        )));
    }
    let forced = match (base.first(), new.first()) {
        (Some(a), Some(b)) => a.build.differences(&b.build),
        _ => Vec::new(),
    };
    if !force && !forced.is_empty() {
        return Err(Error::Report(format!(
            "{base_name} and {new_name} come from different build settings ({}); rebuild (or, \
             for huge pages, rerun with MODELBENCH_HUGE_PAGES) one side with the other's \
             settings, or pass --force",
            forced.join("; ")
        )));
    }
    let mut injected = Vec::new();
    for (side, rs) in [("base", base), ("new", new)] {
        let mut specs: Vec<&str> = rs.iter().filter_map(|r| r.injected.as_deref()).collect();
        specs.sort_unstable();
        specs.dedup();
        injected.extend(specs.iter().map(|s| format!("{side}: {s}")));
    }
    let mut rows = Vec::new();
    for (k, rb) in &b {
        let Some(rn) = n.get(k) else { continue };
        let (bs, ns) = (&rb.samples_s, &rn.samples_s);
        let base_median_s = median(bs);
        let new_median_s = median(ns);
        let (verdict, ci) = judge(bs, ns, threshold);
        rows.push(Row {
            key: k.clone(),
            kind: rb.kind.to_string(),
            id: if rb.id.is_empty() {
                format!("{}/{}-{}", rb.scenario, rb.device, rb.dtype)
            } else {
                rb.id.clone()
            },
            scenario: rb.scenario.clone(),
            model: rb.model.label.clone(),
            dtype: rb.dtype.to_string(),
            device: rb.device.clone(),
            sampling: rb.sampling_desc.clone(),
            shape: rb.shape.to_string(),
            n_base: bs.len(),
            n_new: ns.len(),
            base_median_s,
            new_median_s,
            ratio: (!bs.is_empty() && !ns.is_empty()).then(|| new_median_s / base_median_s),
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            verdict,
            noise: None,
            outputs: judge_outputs(rb.outputs.as_ref(), rn.outputs.as_ref()),
        });
    }
    if rows.is_empty() {
        return Err(Error::Report(
            "the runs share no benchmark (kind | id | model | sampling | shape); nothing to compare"
                .into(),
        ));
    }
    Ok(Comparison {
        only_in_base: b.keys().filter(|k| !n.contains_key(*k)).cloned().collect(),
        only_in_new: n.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
        rows,
        threshold,
        injected,
        forced,
        noise_applied: false,
        allow_output_change: false,
    })
}

/// A markdown cell: pipes escaped, empty as `-`.
fn cell(s: &str) -> String {
    if s.is_empty() || s == "null" {
        "-".into()
    } else {
        s.replace('|', "\\|")
    }
}

fn num(v: Option<f64>, prec: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "n/a".into())
}

/// The comparison as a markdown table (one row per joined benchmark, with its verdict), a
/// line per benchmark without a verdict or present in one run only, and a summary line.
pub fn render(c: &Comparison) -> String {
    let mut s = String::from(
        "| Kind | Benchmark | Model | Sampling | Shape | samples (base, new) | base median | new median | new/base | 95% CI | run-to-run noise | verdict | outputs |\n\
         |---|---|---|---|---|---:|---:|---:|---:|---|---|---|---|\n",
    );
    for r in &c.rows {
        let ci = match (r.ci_low, r.ci_high) {
            (Some(lo), Some(hi)) => format!("[{lo:.3}, {hi:.3}]"),
            _ => "n/a".into(),
        };
        let noise = r.noise.as_ref().map_or_else(
            || "not applied".to_string(),
            |n| format!("±{:.1}% ({})", 100.0 * n.threshold, n.source),
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {}, {} | {} s | {} s | {} | {} | {} | {} | {} |",
            cell(&r.kind),
            cell(&r.id),
            cell(&r.model),
            cell(&r.sampling),
            cell(&r.shape),
            r.n_base,
            r.n_new,
            num(Some(r.base_median_s), 4),
            num(Some(r.new_median_s), 4),
            num(r.ratio, 3),
            ci,
            cell(&noise),
            r.verdict,
            r.outputs.verdict
        );
    }
    for r in c.rows.iter().filter(|r| {
        matches!(
            r.outputs.verdict,
            OutputVerdict::Changed | OutputVerdict::WithinNoise
        )
    }) {
        let _ = writeln!(
            s,
            "outputs {}: {}: {}",
            r.outputs.verdict, r.id, r.outputs.why
        );
    }
    for r in c
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::InsufficientSamples)
    {
        let _ = writeln!(
            s,
            "{}: no verdict, not a regression: {}",
            r.insufficient_note(),
            r.key
        );
    }
    for k in &c.only_in_base {
        let _ = writeln!(
            s,
            "missing from the new run (fails the comparison unless --allow-missing): {k}"
        );
    }
    for k in &c.only_in_new {
        let _ = writeln!(s, "only in new: {k}");
    }
    for i in &c.injected {
        let _ = writeln!(
            s,
            "injected slowdown (a calibration run, not a real one): {i}"
        );
    }
    for f in &c.forced {
        let _ = writeln!(s, "different build settings, compared because forced: {f}");
    }
    if c.outputs_changed() > 0 {
        let _ = writeln!(
            s,
            "{} benchmark(s) OUTPUTS CHANGED: the model computes something else; {}",
            c.outputs_changed(),
            if c.allow_output_change {
                "wanted (--allow-output-change), not a failure"
            } else {
                "fails the comparison unless --allow-output-change says it is wanted"
            }
        );
    }
    let _ = writeln!(
        s,
        "outputs: {} same, {} within numerical noise, {} OUTPUTS CHANGED, {} not judged",
        c.outputs_count(OutputVerdict::Same),
        c.outputs_count(OutputVerdict::WithinNoise),
        c.outputs_changed(),
        c.outputs_count(OutputVerdict::Unjudged)
    );
    let _ = writeln!(
        s,
        "{} regression(s), {} improvement(s), {} unchanged, {} undecided (threshold {:.1}%{}, 95% \
         confidence); {} with insufficient samples (< {MIN_SAMPLES} a side); {} missing from the \
         new run; {} benchmark(s) compared",
        c.regressions(),
        c.count(Verdict::Improvement),
        c.count(Verdict::Unchanged),
        c.count(Verdict::Undecided),
        c.threshold * 100.0,
        if c.noise_applied {
            " and each benchmark's run-to-run noise"
        } else {
            ""
        },
        c.insufficient(),
        c.missing(),
        c.rows.len()
    );
    s
}

#[cfg(test)]
mod tests {
    //! The verdict rules on synthetic, seeded samples (no timing). Each test was checked to
    //! fail when its rule is broken, by temporarily breaking the rule and running
    //! `cargo test --lib compare`:
    //! - `slower_by_half_is_a_regression`: regression test `lo > 1 + t` changed to
    //!   `lo > 2.0 + t` (never flags) -> fails;
    //! - `ten_percent_within_wide_noise_is_not_flagged`: verdict from the point ratio
    //!   (`ratio > 1 + t`) instead of the CI's low end -> fails;
    //! - `twice_as_fast_is_an_improvement`: improvement branch removed (falls to
    //!   unchanged) -> fails;
    //! - `too_few_samples_is_no_verdict_and_no_regression`: MIN_SAMPLES check removed, or
    //!   MIN_SAMPLES set to 3 or 6 -> fails;
    //! - `duplicate_key_is_refused`: `by_key` collecting into a map without the check
    //!   (the old silent overwrite) -> fails;
    //! - `join_uses_the_whole_key`: key without the shape (the old join) -> fails;
    //! - `different_hardware_needs_force`: fingerprint check removed -> fails.
    use super::*;
    use crate::output::record::Kind;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `n` samples around `center`, uniform relative noise of +-`noise`, seeded.
    fn samples(center: f64, noise: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| center * (1.0 + noise * rng.random_range(-1.0..=1.0)))
            .collect()
    }

    fn rec(name: &str, shape: serde_json::Value, s: Vec<f64>) -> Record {
        let mut r = Record::from_samples(Kind::Generation, "short", s, 16);
        r.id = format!("short/cpu-f32/{name}");
        r.model.label = name.into();
        r.device = "cpu".into();
        r.sampling_desc = "greedy".into();
        r.shape = shape;
        r
    }

    fn one(base: Vec<f64>, new: Vec<f64>, threshold: f64) -> Row {
        let shape = serde_json::json!({"prompt": 32, "gen": 16});
        let c = compare(
            &[rec("m", shape.clone(), base)],
            &[rec("m", shape, new)],
            threshold,
            false,
        )
        .unwrap();
        assert_eq!(c.rows.len(), 1);
        c.rows[0].clone()
    }

    #[test]
    fn slower_by_half_is_a_regression() {
        let r = one(samples(1.0, 0.01, 10, 1), samples(1.5, 0.01, 10, 2), 0.05);
        assert_eq!(r.verdict, Verdict::Regression, "{r:?}");
        assert!(r.ci_low.unwrap() > 1.4, "{r:?}");
        // The boundary: with exactly MIN_SAMPLES a side the rule applies.
        let r = one(samples(1.0, 0.01, 5, 3), samples(1.5, 0.01, 5, 4), 0.05);
        assert_eq!(r.verdict, Verdict::Regression, "{r:?}");
    }

    #[test]
    fn ten_percent_within_wide_noise_is_not_flagged() {
        let r = one(samples(1.0, 0.3, 10, 5), samples(1.1, 0.3, 10, 6), 0.05);
        // The point estimate alone is beyond the threshold: only the interval saves it.
        assert!(r.ratio.unwrap() > 1.05, "{r:?}");
        assert!(r.ci_low.unwrap() <= 1.05, "{r:?}");
        assert_eq!(r.verdict, Verdict::Unchanged, "{r:?}");
        // The same runs are no regression either way round.
        let r = one(samples(1.1, 0.3, 10, 6), samples(1.0, 0.3, 10, 5), 0.05);
        assert_eq!(r.verdict, Verdict::Unchanged, "{r:?}");
    }

    #[test]
    fn twice_as_fast_is_an_improvement() {
        let r = one(samples(1.0, 0.01, 10, 7), samples(0.5, 0.01, 10, 8), 0.05);
        assert_eq!(r.verdict, Verdict::Improvement, "{r:?}");
        assert!(r.ci_high.unwrap() < 0.95, "{r:?}");
    }

    #[test]
    fn a_change_within_run_to_run_noise_is_undecided_and_beyond_it_a_regression() {
        // 1.25x slower with tight trials: a regression at 5% on the interval alone.
        let base = samples(1.0, 0.01, 10, 21);
        let slower = samples(1.25, 0.01, 10, 22);
        let mut c = compare(
            &[rec("m", serde_json::json!(null), base.clone())],
            &[rec("m", serde_json::json!(null), slower)],
            0.05,
            false,
        )
        .unwrap();
        assert_eq!(c.regressions(), 1);
        let noise = |t: f64| {
            move |_: &Row| RowNoise {
                threshold: t,
                source: "test".into(),
            }
        };
        // Within a 40% run-to-run noise: undecided, not a regression, and said so.
        let mut within = c.clone();
        apply_noise(&mut within, noise(0.40));
        assert_eq!(within.rows[0].verdict, Verdict::Undecided);
        assert_eq!(within.regressions(), 0);
        assert!(!within.failed(false));
        let text = render(&within);
        assert!(
            text.contains("±40.0% (test)") && text.contains("1 undecided"),
            "{text}"
        );
        // Beyond a 10% noise: still a regression.
        apply_noise(&mut c, noise(0.10));
        assert_eq!(c.rows[0].verdict, Verdict::Regression);
        // 2x faster beyond the noise stays an improvement; 1.1x faster within it is undecided.
        for (f, t, v) in [
            (0.5, 0.2, Verdict::Improvement),
            (0.9, 0.2, Verdict::Undecided),
        ] {
            let mut c = compare(
                &[rec("m", serde_json::json!(null), base.clone())],
                &[rec("m", serde_json::json!(null), samples(f, 0.01, 10, 23))],
                0.05,
                false,
            )
            .unwrap();
            apply_noise(&mut c, noise(t));
            assert_eq!(c.rows[0].verdict, v, "{f}x at noise {t}");
        }
    }

    #[test]
    fn too_few_samples_is_no_verdict_and_no_regression() {
        // x1.5 slower: a regression with enough samples, but only 3 a side.
        let r = one(samples(1.0, 0.01, 3, 9), samples(1.5, 0.01, 3, 10), 0.05);
        assert_eq!(r.verdict, Verdict::InsufficientSamples, "{r:?}");
        assert_eq!((r.n_base, r.n_new), (3, 3));
        assert_eq!((r.ci_low, r.ci_high), (None, None));
        assert_eq!(
            r.insufficient_note(),
            "insufficient samples (3, 3); need >= 5 a side"
        );
        // One side short is enough to withhold the verdict.
        let r = one(samples(1.0, 0.01, 10, 11), samples(1.5, 0.01, 4, 12), 0.05);
        assert_eq!(r.verdict, Verdict::InsufficientSamples, "{r:?}");
        let c = Comparison {
            rows: vec![r],
            only_in_base: vec![],
            only_in_new: vec![],
            threshold: 0.05,
            injected: vec![],
            forced: vec![],
            noise_applied: false,
            allow_output_change: false,
        };
        assert_eq!(c.regressions(), 0);
        let text = render(&c);
        assert!(
            text.contains("insufficient samples (10, 4); need >= 5 a side: no verdict"),
            "{text}"
        );
        assert!(text.contains("| Insufficient samples |"), "{text}");
        assert!(
            text.contains("0 regression(s)") && text.contains("1 with insufficient samples"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_key_is_refused() {
        let shape = serde_json::json!({"prompt": 32});
        let a = rec("m", shape.clone(), samples(1.0, 0.01, 10, 13));
        let b = rec("m", shape, samples(2.0, 0.01, 10, 14));
        let key = a.key();
        let dup = [a, b];
        let e = compare_runs("runs/new", &dup[..1], "runs/dup", &dup, 0.05, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("runs/dup") && e.contains(&key), "{e}");
        assert!(!e.contains("runs/new"), "{e}");
    }

    #[test]
    fn join_uses_the_whole_key() {
        // Same kind, id, model and sampling; only the shape differs: two benchmarks.
        let p32 = serde_json::json!({"prompt": 32});
        let p64 = serde_json::json!({"prompt": 64});
        let base = [
            rec("m", p32.clone(), samples(1.0, 0.01, 10, 15)),
            rec("m", p64.clone(), samples(2.0, 0.01, 10, 16)),
        ];
        let new = [
            rec("m", p32, samples(1.0, 0.01, 10, 17)),
            rec("m", p64, samples(3.0, 0.01, 10, 18)),
        ];
        let c = compare(&base, &new, 0.05, false).unwrap();
        assert_eq!(c.rows.len(), 2);
        let by_shape = |s: &str| c.rows.iter().find(|r| r.shape == s).unwrap().verdict;
        assert_eq!(by_shape(r#"{"prompt":32}"#), Verdict::Unchanged);
        assert_eq!(by_shape(r#"{"prompt":64}"#), Verdict::Regression);
        let text = render(&c);
        assert!(text.contains("| Regression |") && text.contains("| Unchanged |"));
        assert!(
            text.contains("1 regression(s), 0 improvement(s), 1 unchanged"),
            "{text}"
        );
    }

    /// The output verdict beside the speed verdict: the same timings with outputs whose ids
    /// differ fail the comparison (exit 1) unless changed outputs are allowed, and the speed
    /// verdict stays what the timings say; identical outputs read `same` and pass.
    #[test]
    fn changed_outputs_fail_beside_an_unchanged_speed_unless_allowed() {
        use crate::measure::outputs::{Ids, Outputs};
        let p = serde_json::json!({"prompt": 32});
        let with_ids = |ids: &[u32], seed: u64| {
            let mut r = rec("m", p.clone(), samples(1.0, 0.01, 10, seed));
            let mut i = Ids::default();
            i.push(0, ids);
            r.outputs = Some(Outputs {
                ids: i,
                probe: None,
            });
            r
        };
        let base = [with_ids(&[1, 2, 3], 31)];
        let changed = [with_ids(&[1, 2, 4], 32)];
        let mut c = compare(&base, &changed, 0.05, false).unwrap();
        assert_eq!(c.rows[0].verdict, Verdict::Unchanged);
        assert_eq!(c.rows[0].outputs.verdict, OutputVerdict::Changed);
        assert!(c.failed(false));
        let text = render(&c);
        assert!(text.contains("| Unchanged | OUTPUTS CHANGED |"), "{text}");
        c.allow_output_change = true;
        assert!(!c.failed(false));
        let same = [with_ids(&[1, 2, 3], 33)];
        let c = compare(&base, &same, 0.05, false).unwrap();
        assert_ne!(c.rows[0].outputs.verdict, OutputVerdict::Changed);
        assert!(!c.failed(false));
    }

    #[test]
    fn a_missing_benchmark_fails_unless_allowed() {
        let p = serde_json::json!({"prompt": 32});
        let base = [
            rec("a", p.clone(), samples(1.0, 0.01, 10, 21)),
            rec("b", p.clone(), samples(1.0, 0.01, 10, 22)),
        ];
        let new = [rec("a", p.clone(), samples(1.0, 0.01, 10, 23))];
        let c = compare(&base, &new, 0.05, false).unwrap();
        assert_eq!((c.regressions(), c.missing()), (0, 1));
        assert!(c.failed(false) && !c.failed(true));
        assert!(
            render(&c).contains("missing from the new run"),
            "{}",
            render(&c)
        );
        // Both present: nothing fails; a benchmark only in the new run never fails.
        let c = compare(&base[..1], &base, 0.05, false).unwrap();
        assert_eq!(c.missing(), 0);
        assert!(!c.failed(false));
    }

    /// The same benchmark run twice (samples seeded `seed` and `seed + 1`), the second run's
    /// record then changed by `change`.
    fn two_runs(seed: u64, change: impl FnOnce(&mut Record)) -> (Record, Record) {
        let shape = serde_json::Value::Null;
        let a = rec("m", shape.clone(), samples(1.0, 0.01, 10, seed));
        let mut b = rec("m", shape, samples(1.0, 0.01, 10, seed + 1));
        change(&mut b);
        (a, b)
    }

    /// `compare` of the one record `a` against the one record `b` at a 5% threshold.
    fn compare_one(a: &Record, b: &Record, force: bool) -> Result<Comparison> {
        compare(
            std::slice::from_ref(a),
            std::slice::from_ref(b),
            0.05,
            force,
        )
    }

    #[test]
    fn different_build_settings_need_force_and_are_named() {
        let (a, b) = two_runs(24, |b| {
            b.build.profile = "custom-lto (opt-level s)".into();
            b.build.git_commit = "another commit".into();
        });
        let e = compare_one(&a, &b, false).unwrap_err().to_string();
        assert!(
            e.contains("profile")
                && e.contains("custom-lto (opt-level s)")
                && e.contains("--force"),
            "{e}"
        );
        assert!(
            !e.contains("git_commit") && !e.contains("another commit"),
            "{e}"
        );
        let c = compare_one(&a, &b, true).unwrap();
        assert!(render(&c).contains("compared because forced: profile"));
        // Only the commit differs: compared without a word.
        let mut b2 = a.clone();
        b2.build.git_commit = "another commit".into();
        let c = compare(&[a], &[b2], 0.05, false).unwrap();
        assert!(c.forced.is_empty());
    }

    #[test]
    fn different_hardware_needs_force() {
        let (a, b) = two_runs(19, |b| b.hardware.cpu = "Some Other CPU".into());
        let e = compare_one(&a, &b, false).unwrap_err().to_string();
        assert!(
            e.contains("different hardware") && e.contains("--force"),
            "{e}"
        );
        let c = compare(&[a], &[b], 0.05, true).unwrap();
        assert_eq!(c.rows[0].verdict, Verdict::Unchanged);
    }
}
