//! Run-to-run noise, per machine and benchmark (issue 28).
//!
//! Criterion's verdicts compare one run with the previous one, and its statistics see only
//! the spread *within* a run. On a shared VM the spread *between* runs of the same binary is
//! far larger (10-15% typical, up to 50% for microsecond iterations), so criterion's default
//! noise threshold (1%) calls most of an unchanged rerun "regressed" or "improved". This
//! module measures the between-run spread from repeated runs of one build on one machine and
//! turns it into a per-benchmark noise threshold that the benches hand to criterion.
//!
//! The model: a benchmark's mean time in run k is `m_k = m * exp(e_k)`, `e_k` independent
//! with standard deviation `sigma` (estimated from K >= 3 runs as the sample standard
//! deviation of `ln m_k`). Two new runs then differ by `ln(m_2/m_1) ~ N(0, 2 sigma^2)`, and a
//! threshold of `Z * sqrt(2) * sigma` is exceeded by an unchanged rerun with probability
//! `P(|N(0,1)| > Z)`: 1.2% for [`Z`] = 2.5, so about 0.7 false alarms over the 55 default
//! benchmarks before criterion's own interval (which must lie wholly beyond the threshold)
//! removes more. Because sigma from a handful of runs can come out low by chance, the
//! threshold is never below the largest change actually seen between two of the measured runs,
//! and never below [`FLOOR`].
//!
//! Profiles live in `target-reports/noise/<machine>.json` (committed for the machines the
//! project measures on), keyed by the hardware fingerprint; a benchmark without a measured
//! spread gets [`DEFAULT_THRESHOLD`], and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::hardware::Build;
use crate::output::record::Record;

/// How many standard deviations of the difference of two runs a threshold spans.
pub const Z: f64 = 2.5;

/// No threshold below this (criterion's own default is 1%).
pub const FLOOR: f64 = 0.01;

/// The threshold of a benchmark this machine has no measured spread for. From the 2-core VM
/// this project is developed on, where 35 of 55 benchmarks moved more than 10% between two
/// runs of the same binary (issue 28) and the measured thresholds are in README.
pub const DEFAULT_THRESHOLD: f64 = 0.20;

/// Fewer runs of a benchmark than this give no spread.
pub const MIN_RUNS: usize = 3;

pub const SCHEMA: u32 = 1;

/// The measured run-to-run spread of one benchmark.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchNoise {
    /// Mean seconds per iteration (criterion's estimate) in each run, oldest first.
    pub means_s: Vec<f64>,
    /// Sample standard deviation of `ln(mean)` across the runs.
    pub sigma: f64,
    /// The largest |m_i / m_j - 1| over every two runs.
    pub max_change: f64,
    /// The noise threshold criterion is given: max(Z sqrt(2) sigma, max_change, FLOOR).
    pub threshold: f64,
}

/// One machine's measured noise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoiseProfile {
    pub schema: u32,
    /// The hardware fingerprint the runs came from.
    pub hardware: String,
    /// The build the runs came from (one commit, one set of build settings).
    pub build: Build,
    /// First and last record timestamps of the runs.
    pub first: String,
    pub last: String,
    /// The run folders read.
    pub runs: Vec<String>,
    pub z: f64,
    /// Criterion benchmark id -> its spread.
    pub benches: BTreeMap<String, BenchNoise>,
}

/// Where a threshold came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// Measured from this many runs on this machine.
    Measured(usize),
    /// No measured spread for this benchmark on this machine.
    Default,
    /// A deterministic measure (peak bytes): any change beyond [`FLOOR`] is real.
    Deterministic,
}

/// The spread of one benchmark's per-run means (None with fewer than [`MIN_RUNS`]).
pub fn spread(means: &[f64]) -> Option<BenchNoise> {
    let means: Vec<f64> = means
        .iter()
        .copied()
        .filter(|m| m.is_finite() && *m > 0.0)
        .collect();
    if means.len() < MIN_RUNS {
        return None;
    }
    let logs: Vec<f64> = means.iter().map(|m| m.ln()).collect();
    let mu = logs.iter().sum::<f64>() / logs.len() as f64;
    let var = logs.iter().map(|l| (l - mu).powi(2)).sum::<f64>() / (logs.len() - 1) as f64;
    let sigma = var.sqrt();
    let mut max_change: f64 = 0.0;
    for a in &means {
        for b in &means {
            max_change = max_change.max((a / b - 1.0).abs());
        }
    }
    let threshold = (Z * std::f64::consts::SQRT_2 * sigma)
        .max(max_change)
        .max(FLOOR);
    Some(BenchNoise {
        means_s: means,
        sigma,
        max_change,
        threshold,
    })
}

/// A profile from repeated runs of one build on one machine: `runs` are (folder, records)
/// in time order. Every record must come from the same hardware and build settings and
/// commit (an error names the first that does not); a benchmark present in fewer than
/// [`MIN_RUNS`] runs is left out.
pub fn profile(runs: &[(String, Vec<Record>)]) -> Result<NoiseProfile> {
    let first = runs
        .iter()
        .flat_map(|(_, rs)| rs.first())
        .next()
        .ok_or_else(|| Error::Report("no records in the runs given".into()))?;
    let (hw, build) = (first.hardware.fingerprint(), first.build.clone());
    let mut by_id: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (mut t0, mut t1) = (first.timestamp.clone(), first.timestamp.clone());
    for (name, rs) in runs {
        for r in rs {
            if r.hardware.fingerprint() != hw {
                return Err(Error::Report(format!(
                    "{name}: hardware `{}` differs from `{hw}`; a noise profile is per machine",
                    r.hardware.fingerprint()
                )));
            }
            let d = build.differences(&r.build);
            if !d.is_empty() || r.build.git_commit != build.git_commit {
                return Err(Error::Report(format!(
                    "{name}: another build ({}); measure noise on repeated runs of one build",
                    if d.is_empty() {
                        format!("commit {} vs {}", r.build.git_commit, build.git_commit)
                    } else {
                        d.join("; ")
                    }
                )));
            }
            if r.injected.is_some() {
                return Err(Error::Report(format!(
                    "{name}: a run with an injected slowdown ({}) is not a noise run",
                    r.injected.as_deref().unwrap_or("")
                )));
            }
            if r.id.is_empty() || r.samples_s.is_empty() {
                continue;
            }
            t0 = t0.min(r.timestamp.clone());
            t1 = t1.max(r.timestamp.clone());
            by_id.entry(r.id.clone()).or_default().push(r.stats.mean);
        }
    }
    let benches: BTreeMap<String, BenchNoise> = by_id
        .into_iter()
        .filter_map(|(id, m)| spread(&m).map(|n| (id, n)))
        .collect();
    if benches.is_empty() {
        return Err(Error::Report(format!(
            "no benchmark appears in at least {MIN_RUNS} of the {} runs given; run the benches \
             {MIN_RUNS} or more times on one build (e.g. `modelbench noise --measure 4`)",
            runs.len()
        )));
    }
    Ok(NoiseProfile {
        schema: SCHEMA,
        hardware: hw,
        build,
        first: t0,
        last: t1,
        runs: runs.iter().map(|(n, _)| n.clone()).collect(),
        z: Z,
        benches,
    })
}

/// A file name for a hardware fingerprint: lower-case alphanumerics and dashes.
pub fn slug(fingerprint: &str) -> String {
    let mut s = String::new();
    for c in fingerprint.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_string()
}

/// `<root>/noise/<slug>.json`.
pub fn path_for(root: &Path, fingerprint: &str) -> PathBuf {
    root.join("noise")
        .join(format!("{}.json", slug(fingerprint)))
}

/// Writes the profile (atomically) to its machine's file under `root`; returns the path.
pub fn save(root: &Path, p: &NoiseProfile) -> Result<PathBuf> {
    let path = path_for(root, &p.hardware);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(Error::io(d))?;
    }
    let text = serde_json::to_string_pretty(p).expect("a profile serialises");
    crate::util::fsio::atomic_write(&path, text.as_bytes())?;
    Ok(path)
}

/// The profile of the machine `fingerprint` under `root`; None when there is none. A file
/// that exists but does not parse is an error naming it.
pub fn load(root: &Path, fingerprint: &str) -> Result<Option<NoiseProfile>> {
    let path = path_for(root, fingerprint);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let p: NoiseProfile = serde_json::from_str(&text).map_err(|e| {
        Error::Report(format!(
            "{}: not a noise profile ({e}); delete it or run `modelbench noise` again",
            path.display()
        ))
    })?;
    Ok((p.hardware == fingerprint).then_some(p))
}

impl NoiseProfile {
    /// The threshold of benchmark `id` and where it came from.
    pub fn threshold(&self, id: &str) -> (f64, Source) {
        match self.benches.get(id) {
            Some(n) => (n.threshold, Source::Measured(n.means_s.len())),
            None => (DEFAULT_THRESHOLD, Source::Default),
        }
    }

    /// The profile as a markdown table: group, benchmarks, median and largest threshold
    /// (README's per-group table), then one row per benchmark.
    pub fn render(&self, per_bench: bool) -> String {
        use std::fmt::Write as _;
        let mut groups: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (id, n) in &self.benches {
            let g = id.split('/').next().unwrap_or(id);
            groups.entry(g).or_default().push(n.threshold);
        }
        let mut s = format!(
            "noise profile of `{}`: {} run folders of commit {} ({} .. {}), Z = {}\n\n\
             | group | benchmarks | median threshold | largest threshold |\n|---|---:|---:|---:|\n",
            self.hardware,
            self.runs.len(),
            &self.build.git_commit[..self.build.git_commit.len().min(10)],
            self.first,
            self.last,
            self.z
        );
        for (g, mut t) in groups {
            t.sort_by(f64::total_cmp);
            let _ = writeln!(
                s,
                "| {g} | {} | {:.1}% | {:.1}% |",
                t.len(),
                100.0 * crate::measure::stats::percentile(&t, 0.5),
                100.0 * t[t.len() - 1]
            );
        }
        if per_bench {
            s.push_str(
                "\n| benchmark | runs | sigma (ln) | largest change | threshold |\n|---|---:|---:|---:|---:|\n",
            );
            for (id, n) in &self.benches {
                let _ = writeln!(
                    s,
                    "| {id} | {} | {:.4} | {:.1}% | {:.1}% |",
                    n.means_s.len(),
                    n.sigma,
                    100.0 * n.max_change,
                    100.0 * n.threshold
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_threshold() {
        assert!(spread(&[1.0, 1.1]).is_none());
        let n = spread(&[1.0, 1.0, 1.0]).unwrap();
        assert_eq!((n.sigma, n.max_change, n.threshold), (0.0, 0.0, FLOOR));
        let n = spread(&[1.0, 1.1, 0.95, 1.05]).unwrap();
        assert!((n.max_change - (1.1 / 0.95 - 1.0)).abs() < 1e-12);
        assert!(n.threshold >= n.max_change && n.threshold >= Z * 2f64.sqrt() * n.sigma);
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("AMD EPYC x2 | no-gpu"), "amd-epyc-x2-no-gpu");
    }
}
