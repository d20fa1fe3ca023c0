//! `modelbench continuous`: run a config, compare with the previous run of it (a step) and
//! with a fixed baseline (drift: a series of small steps, each within the threshold, adds up
//! against the baseline); exit 1 when either comparison finds a regression.
//!
//! Two runs minutes apart differ by more than their trials' spread (the VM drifts 10-15%), so
//! each comparison is also judged against every benchmark's run-to-run noise
//! ([`RunNoise`]): the spread of this config's own earlier runs on this machine once there are
//! three, else the machine's `modelbench noise` profile (in the reports folder, else in the
//! default one, and the table says which), else the default 20%. A change beyond the
//! threshold but within that noise is "Undecided" and does not fail the run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::app::args::{RunArgs, SamplingArgs, TargetArgs};
use crate::app::Context;
use crate::config::plans::check_label;
use crate::judge::gate::{continuous_failed, exit_code, Findings};
use crate::judge::speed::parse_threshold;
use crate::output::compare::{apply_noise, render, Comparison};
use crate::output::noise::RunNoise;
use crate::output::record::Record;
use crate::output::report::{read_run, reports_root};
use crate::output::runs::baseline_runs;
use crate::verdicts::build::executable;
use crate::verdicts::compare::compare_dirs;
use crate::verdicts::paired::{check, run_paired, PairedOpts, DEFAULT_THRESHOLD};
use crate::Result;

/// A continuous-benchmarking config.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ContinuousConfig {
    name: String,
    models: Vec<String>,
    #[serde(default = "default_suite")]
    suite: String,
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default = "one")]
    warmup: usize,
    #[serde(default = "five")]
    trials: usize,
    #[serde(default = "default_threshold")]
    threshold: String,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default = "default_seed")]
    seed: u64,
    /// The fixed baseline every run is also compared with: a run folder (a path, or a
    /// folder name under the reports root), or `first`: the first run of this config.
    #[serde(default = "default_baseline")]
    baseline: String,
    /// A commit, branch or modelbench executable to compare this binary with, paired
    /// (`compare --paired`: both as workers side by side, ABBA) on the first model and the
    /// suite; its regressions fail the run like the others. Drift between the run and the
    /// stored runs cannot enter this verdict.
    #[serde(default)]
    paired_base: Option<String>,
    /// The paired comparison's threshold (default 1%).
    #[serde(default)]
    paired_threshold: Option<String>,
    /// Confirm each regression against a stored run (the previous run, the baseline) by a
    /// paired comparison of that run's build with this one on the flagged model and scenario
    /// before it fails the run (`judge::gate::after_confirmation`); default true. The
    /// stored run's commit is built once (`compare`'s worktree build) unless it is this
    /// very build.
    #[serde(default = "yes")]
    confirm_paired: bool,
}

fn yes() -> bool {
    true
}

fn default_suite() -> String {
    "quick".into()
}
fn one() -> usize {
    1
}
fn five() -> usize {
    5
}
fn default_threshold() -> String {
    "5%".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_seed() -> u64 {
    42
}
fn default_baseline() -> String {
    FIRST.into()
}

/// `baseline` value meaning the first run of the config.
const FIRST: &str = "first";

/// Whether a run folder name is `<YYYYMMDD_HHMMSS>-<label>` (or `.N`, when that folder name
/// was taken): exactly this config's runs, not those of a config whose name ends like it.
fn is_run_of(name: &str, label: &str) -> bool {
    let Some((stamp, rest)) = name.split_at_checked(15) else {
        return false;
    };
    let stamp_ok = stamp
        .char_indices()
        .all(|(i, c)| if i == 8 { c == '_' } else { c.is_ascii_digit() });
    let Some(rest) = rest.strip_prefix('-').and_then(|r| r.strip_prefix(label)) else {
        return false;
    };
    stamp_ok
        && (rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// The fixed baseline named by the config: Ok(None) for `first` when the config never ran.
fn resolve_baseline(baseline: &str, runs: &[PathBuf], config: &Path) -> Result<Option<PathBuf>> {
    if baseline == FIRST {
        return Ok(runs.first().cloned());
    }
    let given = PathBuf::from(baseline);
    let under_root = reports_root().join(baseline);
    [given.clone(), under_root.clone()]
        .into_iter()
        .find(|p| p.join("results.jsonl").is_file())
        .map(Some)
        .ok_or_else(|| {
            fail!(
                "{}: baseline `{baseline}` is not a run folder (looked at {} and {}); \
                 give a run folder or `{FIRST}`",
                config.display(),
                given.display(),
                under_root.display()
            )
        })
}

pub fn continuous(config: &Path, force: bool) -> Result<ExitCode> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("{}: cannot read", config.display()))?;
    let c: ContinuousConfig = serde_json::from_str(&text)
        .map_err(|e| fail!("{}: invalid config: {e}", config.display()))?;
    let label = format!("cont-{}", c.name);
    check_label(&label, "name")?;
    let threshold =
        parse_threshold(&c.threshold).map_err(|e| fail!("{}: threshold: {e}", config.display()))?;
    // Its earlier runs that ended: an interrupted one is never the baseline unless named.
    let runs: Vec<PathBuf> = baseline_runs(&reports_root())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_run_of(&n.to_string_lossy(), &label))
        })
        .collect();
    let previous = runs.last().cloned();
    let paired_t = parse_threshold(c.paired_threshold.as_deref().unwrap_or(DEFAULT_THRESHOLD))
        .map_err(|e| fail!("{}: paired_threshold: {e}", config.display()))?;
    let paired_model = c.models.first().cloned().unwrap_or_default();
    // Checked and built before the benchmarks run: a wrong base fails fast.
    let paired_exe = match &c.paired_base {
        Some(base) => {
            check(&PairedOpts::for_model(&paired_model, &c.suite))?;
            Some(executable(Path::new(base), "paired_base")?)
        }
        None => None,
    };
    // Checked before the benchmarks run: a wrong baseline fails fast (exit 2).
    let baseline = resolve_baseline(&c.baseline, &runs, config)?;
    let args = RunArgs {
        suite: c.suite.clone(),
        models: c.models.clone(),
        warmup: c.warmup,
        trials: c.trials,
        seed: c.seed,
        target: TargetArgs {
            device: c.device.clone(),
            dtype: c.dtype.clone(),
            label: Some(label),
            no_save: false,
        },
        zip: false,
        prompt_tokens: c.prompt_tokens,
        max_new_tokens: c.max_new_tokens,
        sampling: SamplingArgs::default(),
        attention: "eager".into(),
        scenarios: Vec::new(),
    };
    let dir = crate::app::run::execute(&args)?;
    let noise = run_noise(&dir, &runs)?;
    crate::util::fsio::atomic_write(
        &dir.join("continuous.json"),
        crate::app::json_text(&c).as_bytes(),
    )?;
    // The paired verdict against `paired_base`: this executable against that one.
    let paired: Option<Findings> = match &paired_exe {
        Some((ea, na)) => {
            let me = std::env::current_exe().context("cannot find this executable")?;
            let o = PairedOpts::for_model(&paired_model, &c.suite);
            let p = run_paired((ea, na), (&me, "this build"), paired_t, &o)?;
            println!(
                "continuous `{}`: {} paired regression(s), {} scenario(s) OUTPUTS CHANGED against {na}",
                c.name,
                p.regressions,
                p.outputs_changed()
            );
            Some(p.findings())
        }
        None => None,
    };
    let Some(prev) = previous else {
        if c.baseline == FIRST {
            println!(
                "no previous run of `{}`: this run is the first baseline",
                c.name
            );
        } else {
            println!("no previous run of `{}`", c.name);
        }
        if let Some(b) = &baseline {
            // A named baseline from elsewhere still applies to the first run.
            let cmp = report("the baseline", b, &dir, threshold, force, &noise)?;
            return Ok(exit_code(continuous_failed(paired, &[cmp.findings()])));
        }
        return Ok(exit_code(continuous_failed(paired, &[])));
    };
    let step = report("the previous run", &prev, &dir, threshold, force, &noise)?;
    let drift = match &baseline {
        Some(b) if !crate::util::fsio::same_path(b, &prev) => {
            Some(report("the baseline", b, &dir, threshold, force, &noise)?)
        }
        _ => {
            println!("the baseline is the previous run: compared once");
            None
        }
    };
    // Each flagged benchmark confirmed (or not) by a paired comparison of the two builds.
    let mut memo = Confirmations::default();
    let how = Confirm {
        enabled: c.confirm_paired,
        ad_hoc: c.prompt_tokens.is_some() || c.max_new_tokens.is_some(),
        threshold: paired_t,
    };
    let step_f = confirm(&step, &prev, &how, &mut memo)?;
    let drift_f = match (&drift, &baseline) {
        (Some(d), Some(b)) => Some(confirm(d, b, &how, &mut memo)?),
        _ => None,
    };
    let (r_step, r_drift) = (step_f.regressions, drift_f.map(|d| d.regressions));
    println!(
        "continuous `{}`: {r_step} regression(s) against the previous run, {} against the baseline",
        c.name,
        r_drift.map_or("same comparison".to_string(), |r| r.to_string())
    );
    let changed = step.outputs_changed() + drift.as_ref().map_or(0, |d| d.outputs_changed());
    if changed > 0 {
        println!("continuous `{}`: {changed} benchmark(s) OUTPUTS CHANGED: fails (the model computes something else)", c.name);
    }
    let missing = step.missing() + drift.as_ref().map_or(0, |d| d.missing());
    if missing > 0 {
        println!("continuous `{}`: {missing} benchmark(s) of an earlier run missing from this one: fails", c.name);
    }
    let runs: Vec<Findings> = std::iter::once(step_f).chain(drift_f).collect();
    Ok(exit_code(continuous_failed(paired, &runs)))
}

/// How `continuous` confirms regressions against stored runs.
struct Confirm {
    enabled: bool,
    /// The config sets prompt_tokens / max_new_tokens: the paired workers run named
    /// scenarios only.
    ad_hoc: bool,
    threshold: f64,
}

/// What this run's confirmations already hold, so the previous run and the baseline share
/// them: each (stored run's commit, model, scenario) checked -> flagged, and each stored
/// commit's executable, built once.
#[derive(Default)]
struct Confirmations {
    checked: std::collections::BTreeMap<(String, String, String), bool>,
    built: std::collections::BTreeMap<String, (PathBuf, String)>,
}

/// The comparison's findings after each flagged benchmark was checked by a paired comparison
/// of the stored run's build (`base_dir`) against this executable on that model and
/// scenario (`judge::gate::after_confirmation` decides what counts). Prints one line per
/// flagged benchmark, and why none could be checked where that is so.
fn confirm(
    cmp: &Comparison,
    base_dir: &Path,
    how: &Confirm,
    memo: &mut Confirmations,
) -> Result<Findings> {
    use crate::judge::gate::after_confirmation;
    use crate::judge::paired::PairedVerdict;
    use crate::judge::speed::Verdict;
    let f = cmp.findings();
    let flagged: Vec<&crate::output::compare::Row> = cmp
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regression)
        .collect();
    if flagged.is_empty() {
        return Ok(f);
    }
    let stands = |why: &str| {
        println!(
            "{} regression(s) against {} not confirmed paired ({why}): the unpaired verdict stands",
            flagged.len(),
            base_dir.display()
        );
        Ok(after_confirmation(f, None))
    };
    if !how.enabled {
        return stands("`confirm_paired` is false");
    }
    if how.ad_hoc {
        return stands("the config's prompt_tokens / max_new_tokens make an ad-hoc scenario; paired workers run named ones");
    }
    let me = &crate::measure::hardware::context().build;
    let Some(base) = read_run(base_dir)?.first().map(|r| r.build.clone()) else {
        return stands("the stored run holds no records");
    };
    let this = std::env::current_exe().context("cannot find this executable")?;
    let short = |c: &str| c.chars().take(10).collect::<String>();
    let (exe, name) = if base.git_commit == me.git_commit
        && base.git_dirty == "false"
        && me.git_dirty == "false"
    {
        (
            this.clone(),
            format!(
                "the stored run's build ({}, this build)",
                short(&base.git_commit)
            ),
        )
    } else if base.git_dirty != "false"
        || base.git_commit.is_empty()
        || base.git_commit == "unknown"
    {
        return stands(&format!(
            "its build came from an uncommitted tree of {}, which cannot be rebuilt",
            short(&base.git_commit)
        ));
    } else if let Some(e) = memo.built.get(&base.git_commit) {
        e.clone()
    } else {
        match executable(Path::new(&base.git_commit), "stored run") {
            Ok(e) => {
                memo.built.insert(base.git_commit.clone(), e.clone());
                e
            }
            Err(e) => return stands(&format!("building {} failed: {e}", short(&base.git_commit))),
        }
    };
    let mut confirmed = 0;
    for r in flagged {
        let key = (base.git_commit.clone(), r.model.clone(), r.scenario.clone());
        let yes = match memo.checked.get(&key) {
            Some(y) => *y,
            None => {
                let mut o = PairedOpts::for_model(&r.model, &r.scenario);
                // A run made with an injected slowdown is confirmed with it on this side.
                o.inject = crate::measure::inject::current().map(|i| i.to_string());
                o.profile = false;
                let p = run_paired((&exe, &name), (&this, "this build"), how.threshold, &o)?;
                let yes = p
                    .metrics
                    .iter()
                    .any(|m| m.scenario == r.scenario && m.verdict == PairedVerdict::Regression);
                let rows: Vec<String> = p
                    .metrics
                    .iter()
                    .filter(|m| m.scenario == r.scenario)
                    .map(|m| m.describe())
                    .collect();
                println!(
                    "paired check of {} {} against {name}: {} ({})",
                    r.model,
                    r.scenario,
                    if yes {
                        "confirmed"
                    } else {
                        "not confirmed: machine drift between the runs"
                    },
                    rows.join("; ")
                );
                memo.checked.insert(key, yes);
                yes
            }
        };
        confirmed += usize::from(yes);
    }
    Ok(after_confirmation(f, Some(confirmed)))
}

/// The run-to-run noise the new run `dir` is judged against: this machine's profile, and
/// the earlier runs of the config taken on the same machine identity.
fn run_noise(dir: &Path, earlier: &[PathBuf]) -> Result<RunNoise> {
    let fp = |rs: &[Record]| rs.first().map(|r| r.hardware.fingerprint());
    let mine = fp(&read_run(dir)?).unwrap_or_default();
    let history: Vec<Vec<Record>> = earlier
        .iter()
        .filter_map(|d| read_run(d).ok())
        .filter(|rs| fp(rs).as_deref() == Some(mine.as_str()))
        .collect();
    Ok(RunNoise::for_machine(&reports_root(), &mine)?.with_history(&history))
}

/// Compares `base` with the new run, judged also against `noise`, and prints the comparison
/// under a heading.
fn report(
    what: &str,
    base: &Path,
    new: &Path,
    threshold: f64,
    force: bool,
    noise: &RunNoise,
) -> Result<Comparison> {
    println!("\n## against {what}: {}\n", base.display());
    let mut cmp = compare_dirs(base, new, threshold, force)?;
    apply_noise(&mut cmp, |r| noise.of(r));
    print!("{}", render(&cmp));
    Ok(cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_folders_of_a_config() {
        assert!(is_run_of("20250101_120000-cont-x", "cont-x"));
        assert!(is_run_of("20250101_120000-cont-x.2", "cont-x"));
        assert!(!is_run_of("20250101_120000-cont-foo-cont-x", "cont-x"));
        assert!(!is_run_of("20250101_120000-cont-x-y", "cont-x"));
        assert!(!is_run_of("20250101_120000-cont-x.", "cont-x"));
        assert!(!is_run_of("2025010a_120000-cont-x", "cont-x"));
        assert!(!is_run_of("cont-x", "cont-x"));
    }

    #[test]
    fn baseline_field_defaults_to_first() {
        let c: ContinuousConfig =
            serde_json::from_str(r#"{"name": "n", "models": ["fixture:llama"]}"#).unwrap();
        assert_eq!(c.baseline, FIRST);
        let c: ContinuousConfig = serde_json::from_str(
            r#"{"name": "n", "models": ["fixture:llama"], "baseline": "runs/x"}"#,
        )
        .unwrap();
        assert_eq!(c.baseline, "runs/x");
    }
}
