//! Run-to-run noise, per machine and benchmark (issue 28): the files and the lookups. The
//! model and its thresholds are the judge's (`judge::noise`: two components, common drift and
//! each benchmark's own noise); this module builds a machine's profile from run folders
//! ([`profile`]), stores and loads it, renders it ([`render`]), and gives a comparison's rows
//! their thresholds ([`RunNoise`]).
//!
//! Profiles live in `target-reports/noise/<machine>.json` (committed for the machines the
//! project measures on), keyed by the hardware fingerprint; a benchmark without a measured
//! spread gets [`DEFAULT_THRESHOLD`], and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::judge::noise::{fit, BenchNoise, NoiseProfile, DEFAULT_THRESHOLD, MIN_RUNS, Z};
use crate::judge::speed::RowNoise;
use crate::output::record::Record;

pub const SCHEMA: u32 = 1;

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
    let (sigma_drift, benches) = fit(&by_id);
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
        sigma_drift,
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

/// The profile as a markdown table: group, benchmarks, median and largest threshold
/// (README's per-group table), then one row per benchmark.
pub fn render(p: &NoiseProfile, per_bench: bool) -> String {
    use std::fmt::Write as _;
    let mut groups: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (id, n) in &p.benches {
        let g = id.split('/').next().unwrap_or(id);
        groups.entry(g).or_default().push(n.threshold);
    }
    let mut s = format!(
        "noise profile of `{}`: {} run folders of commit {} ({} .. {}), Z = {}, \
         common drift sigma {:.3} (ln)\n\n\
         | group | benchmarks | median threshold | largest threshold |\n|---|---:|---:|---:|\n",
        p.hardware,
        p.runs.len(),
        &p.build.git_commit[..p.build.git_commit.len().min(10)],
        p.first,
        p.last,
        p.z,
        p.sigma_drift
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
            "\n| benchmark | runs | sigma (ln) | own sigma (ln) | largest change | threshold |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for (id, n) in &p.benches {
            let _ = writeln!(
                s,
                "| {id} | {} | {:.4} | {:.4} | {:.1}% | {:.1}% |",
                n.means_s.len(),
                n.sigma,
                n.sigma_own,
                100.0 * n.max_change,
                100.0 * n.threshold
            );
        }
    }
    s
}

/// Run-to-run noise for a comparison of two saved runs (`compare` of run folders,
/// `continuous`): per benchmark, from the spread of its own earlier runs when there are at
/// least [`MIN_RUNS`] of them ([`RunNoise::with_history`], fitted with the same two-component
/// model as the machine's profile), else from this machine's noise profile (`modelbench noise`;
/// a CLI record `<scenario>/<device>-<dtype>` of model M is looked up as criterion's
/// `<scenario>/<device>-<dtype>/M`), else [`DEFAULT_THRESHOLD`].
pub struct RunNoise {
    machine: Option<NoiseProfile>,
    /// Where the machine's profile was found: the reports folder, or the default one.
    machine_from: String,
    history: BTreeMap<String, BenchNoise>,
    history_runs: usize,
}

impl RunNoise {
    /// The machine `fingerprint`'s profile under `root`, else the one in the default reports
    /// folder (`target-reports/` of the checkout: a `MODELBENCH_REPORTS` folder of its own
    /// starts with the machine's profile, and says so); none is not an error.
    pub fn for_machine(root: &Path, fingerprint: &str) -> Result<RunNoise> {
        let default_root = crate::util::root().join("target-reports");
        let (machine, machine_from) = match load(root, fingerprint)? {
            Some(p) => (Some(p), String::new()),
            None if !crate::util::fsio::same_path(root, &default_root) => (
                load(&default_root, fingerprint)?,
                format!(" in {}", default_root.display()),
            ),
            None => (None, String::new()),
        };
        Ok(RunNoise {
            machine,
            machine_from,
            history: BTreeMap::new(),
            history_runs: 0,
        })
    }

    /// Adds the spread of earlier runs (each a run's records, oldest first; the caller keeps
    /// them to one machine identity): per record key, the median of each run's samples.
    pub fn with_history(mut self, runs: &[Vec<Record>]) -> RunNoise {
        let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for rs in runs {
            for r in rs.iter().filter(|r| !r.samples_s.is_empty()) {
                series
                    .entry(r.key())
                    .or_default()
                    .push(crate::measure::stats::median(&r.samples_s));
            }
        }
        self.history = fit(&series).1;
        self.history_runs = runs.len();
        self
    }

    /// The noise threshold of a compared row and where it came from.
    pub fn of(&self, r: &crate::output::compare::Row) -> RowNoise {
        if let Some(n) = self.history.get(&r.key) {
            return RowNoise {
                threshold: n.threshold,
                source: format!("measured: {} earlier runs of this config", n.means_s.len()),
            };
        }
        if let Some(p) = &self.machine {
            for id in [r.id.clone(), format!("{}/{}", r.id, r.model)] {
                if let Some(n) = p.benches.get(&id) {
                    return RowNoise {
                        threshold: n.threshold,
                        source: format!(
                            "measured: `modelbench noise`{}, {} runs of {id}",
                            self.machine_from,
                            n.means_s.len()
                        ),
                    };
                }
            }
        }
        RowNoise {
            threshold: DEFAULT_THRESHOLD,
            source: if self.history_runs > 0 {
                format!(
                    "default: {} earlier run(s) of this config, {MIN_RUNS} needed, and no \
                     measured profile of this benchmark",
                    self.history_runs
                )
            } else {
                "default: no measured profile of this benchmark".into()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("AMD EPYC x2 | no-gpu"), "amd-epyc-x2-no-gpu");
    }

    /// [`RunNoise`]: the config's own history (3 runs) wins, then the machine's profile under
    /// criterion's id of the CLI record, then the default; each says where it came from.
    #[test]
    fn run_noise_prefers_history_then_the_machine_profile_then_the_default() {
        use crate::output::compare::compare;
        use crate::output::record::Kind;
        let rec = |model: &str, at: f64| {
            let mut r = Record::from_samples(Kind::Generation, "short", vec![at; 6], 16);
            r.id = String::new();
            r.device = "cpu".into();
            r.model.label = model.into();
            r
        };
        let row = |model: &str| {
            compare(&[rec(model, 1.0)], &[rec(model, 1.0)], 0.05, false)
                .unwrap()
                .rows
                .remove(0)
        };
        let id = row("m").id.clone();
        let profile = |t: f64| NoiseProfile {
            schema: SCHEMA,
            hardware: "hw".into(),
            build: rec("m", 1.0).build,
            first: String::new(),
            last: String::new(),
            runs: vec![],
            z: Z,
            sigma_drift: 0.0,
            benches: [(
                format!("{id}/m"),
                BenchNoise {
                    means_s: vec![1.0; 3],
                    sigma: 0.0,
                    sigma_own: 0.0,
                    max_change: 0.0,
                    threshold: t,
                },
            )]
            .into(),
        };
        let none = RunNoise {
            machine: None,
            machine_from: String::new(),
            history: BTreeMap::new(),
            history_runs: 0,
        };
        let n = none.of(&row("m"));
        assert_eq!(n.threshold, DEFAULT_THRESHOLD);
        assert!(n.source.starts_with("default"), "{}", n.source);
        let machine = RunNoise {
            machine: Some(profile(0.33)),
            ..none
        };
        let n = machine.of(&row("m"));
        assert_eq!(n.threshold, 0.33);
        assert!(n.source.contains(&format!("{id}/m")), "{}", n.source);
        assert_eq!(machine.of(&row("other")).threshold, DEFAULT_THRESHOLD);
        // Three earlier runs 1.0, 1.3, 0.8: their own spread, larger than the profile's.
        let runs: Vec<Vec<Record>> = [1.0, 1.3, 0.8].iter().map(|&x| vec![rec("m", x)]).collect();
        let both = machine.with_history(&runs);
        let n = both.of(&row("m"));
        assert!(n.threshold >= 1.3 / 0.8 - 1.0, "{n:?}");
        assert!(
            n.source.contains("3 earlier runs of this config"),
            "{}",
            n.source
        );
        // Two earlier runs are too few: the profile again.
        let two = RunNoise::for_machine(Path::new("/nonexistent"), "hw")
            .unwrap()
            .with_history(&runs[..2]);
        assert_eq!(two.of(&row("m")).threshold, DEFAULT_THRESHOLD);
        assert!(two.of(&row("m")).source.contains("2 earlier run(s)"));
    }

    /// A reports folder without the machine's profile uses the default folder's, and the
    /// row's noise says where it came from; a machine with none anywhere gets the default.
    #[test]
    fn a_folder_without_a_profile_uses_the_default_folders() {
        let fp = format!("test-machine-{}", std::process::id());
        let default_root = crate::util::root().join("target-reports");
        let bench = "short/cpu-f32/fixture:llama";
        let p = NoiseProfile {
            schema: 1,
            hardware: fp.clone(),
            build: crate::measure::hardware::context().build.clone(),
            first: String::new(),
            last: String::new(),
            runs: vec![],
            z: 2.0,
            sigma_drift: 0.0,
            benches: [(
                bench.to_string(),
                BenchNoise {
                    means_s: vec![1.0, 1.01, 1.02],
                    sigma: 0.01,
                    sigma_own: 0.01,
                    max_change: 0.02,
                    threshold: 0.07,
                },
            )]
            .into_iter()
            .collect(),
        };
        let saved = save(&default_root, &p).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let row = crate::output::compare::Row {
            key: String::new(),
            kind: "generation".into(),
            id: bench.into(),
            scenario: "short".into(),
            model: "fixture:llama".into(),
            dtype: "f32".into(),
            device: "cpu".into(),
            sampling: "greedy".into(),
            shape: "null".into(),
            n_base: 5,
            n_new: 5,
            base_median_s: 1.0,
            new_median_s: 1.0,
            ratio: Some(1.0),
            ci_low: Some(1.0),
            ci_high: Some(1.0),
            verdict: crate::judge::speed::Verdict::Unchanged,
            noise: None,
            outputs: crate::judge::outputs::judge(None, None),
        };
        let n = RunNoise::for_machine(fresh.path(), &fp).unwrap().of(&row);
        let none = RunNoise::for_machine(fresh.path(), "no-such-machine")
            .unwrap()
            .of(&row);
        std::fs::remove_file(&saved).unwrap();
        assert_eq!(n.threshold, 0.07, "{}", n.source);
        assert!(
            n.source.contains(&default_root.display().to_string()),
            "{}",
            n.source
        );
        assert_eq!(none.threshold, DEFAULT_THRESHOLD);
    }
}
