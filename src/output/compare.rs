//! Comparing two runs: join on (scenario, model, dtype, device), ratio of median times with a
//! bootstrap confidence interval from the raw samples, and a verdict that can fail CI.
//!
//! Method: for each benchmark, 10,000 bootstrap resamples (seeded, so a comparison is
//! reproducible) of both sample sets give the distribution of median(new) / median(base);
//! the 95% interval is its 2.5th..97.5th percentile. A benchmark is a regression when the
//! whole interval lies above 1 + threshold (slower beyond the threshold with confidence),
//! an improvement when it lies below 1 - threshold, and unchanged otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::measure::stats::{median, percentile};
use crate::output::record::Record;

pub const RESAMPLES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Regression,
    Improvement,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub model: String,
    pub dtype: String,
    pub device: String,
    pub base_median_s: f64,
    pub new_median_s: f64,
    /// median(new) / median(base): above 1 is slower.
    pub ratio: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub rows: Vec<Row>,
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
    pub threshold: f64,
}

impl Comparison {
    pub fn regressions(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Regression)
            .count()
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

/// Compares two runs. Refuses runs from different hardware unless `force`.
pub fn compare(base: &[Record], new: &[Record], threshold: f64, force: bool) -> Result<Comparison> {
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
    let key = |r: &Record| r.key();
    let b: BTreeMap<String, &Record> = base.iter().map(|r| (key(r), r)).collect();
    let n: BTreeMap<String, &Record> = new.iter().map(|r| (key(r), r)).collect();
    let mut rows = Vec::new();
    for (k, rb) in &b {
        let Some(rn) = n.get(k) else { continue };
        if rb.samples_s.is_empty() || rn.samples_s.is_empty() {
            continue;
        }
        let ratio = rn.stats.median / rb.stats.median;
        let (lo, hi) = bootstrap_ratio(&rb.samples_s, &rn.samples_s, 0xC0FFEE);
        let verdict = if lo > 1.0 + threshold {
            Verdict::Regression
        } else if hi < 1.0 - threshold {
            Verdict::Improvement
        } else {
            Verdict::Unchanged
        };
        rows.push(Row {
            scenario: rb.scenario.clone(),
            model: rb.model.label.clone(),
            dtype: rb.dtype.to_string(),
            device: rb.device.clone(),
            base_median_s: rb.stats.median,
            new_median_s: rn.stats.median,
            ratio,
            ci_low: lo,
            ci_high: hi,
            verdict,
        });
    }
    if rows.is_empty() {
        return Err(Error::Report(
            "the runs share no benchmark (scenario, model, dtype, device); nothing to compare"
                .into(),
        ));
    }
    Ok(Comparison {
        only_in_base: b.keys().filter(|k| !n.contains_key(*k)).cloned().collect(),
        only_in_new: n.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
        rows,
        threshold,
    })
}

pub fn render(c: &Comparison) -> String {
    let mut s = String::from("| Scenario | Model | dtype | device | base median | new median | new/base | 95% CI | verdict |\n|---|---|---|---|---:|---:|---:|---|---|\n");
    for r in &c.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.4} s | {:.4} s | {:.3} | [{:.3}, {:.3}] | {:?} |",
            r.scenario,
            r.model,
            r.dtype,
            r.device,
            r.base_median_s,
            r.new_median_s,
            r.ratio,
            r.ci_low,
            r.ci_high,
            r.verdict
        );
    }
    for k in &c.only_in_base {
        let _ = writeln!(s, "only in base: {k}");
    }
    for k in &c.only_in_new {
        let _ = writeln!(s, "only in new: {k}");
    }
    let _ = writeln!(
        s,
        "{} regression(s) beyond {:.1}% with 95% confidence, {} benchmark(s) compared",
        c.regressions(),
        c.threshold * 100.0,
        c.rows.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
