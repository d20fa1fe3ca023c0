//! `modelbench bisect GOOD BAD --bench ID`: the first commit where one benchmark got slower.
//!
//! In the repository to bisect: measures GOOD (build, then the benchmark), then BAD (it must
//! be slower beyond the threshold, else there is nothing to find), then drives
//! `git bisect start BAD GOOD` + `git bisect run modelbench bisect-step ...`, where each step
//! builds, runs the one benchmark and applies the compare gate (the verdict of
//! `output::compare`, bootstrap CI of the median ratio) against GOOD's numbers. Prints the
//! first bad commit with its numbers, then `git bisect reset` and the original checkout are
//! restored (also on error).
//!
//! With `--paired` each measurement is a paired A/B instead (`compare --paired`): GOOD's and
//! every step's `modelbench` executable are kept (built once per commit), and the gate runs
//! GOOD's and the step's workers side by side, ABBA, on the benchmark's scenario and model, so
//! machine drift between the two builds' measurements does not enter the verdict.
//!
//! With `--candle-repo PATH` GOOD and BAD are revisions of a Candle git history instead, and
//! this repository's HEAD is built against each Candle commit: `super::candle_bisect`
//! (`verdicts::bisect` picks one of the two).
//!
//! Every step's run folder is kept under target-reports/bisect-<time>/<commit>/ (the
//! commands see MODELBENCH_REPORTS pointing there, and MODELBENCH_DB=off so the scratch runs
//! stay out of the history). `{bench}` in --build/--run is replaced by the benchmark id.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::app::Context;
use crate::judge::paired::PairedVerdict;
use crate::judge::speed::parse_threshold;
use crate::output::compare::{compare_runs, render, Comparison};
use crate::output::record::Record;
use crate::output::report::{list_runs, read_run, reports_root};
use crate::verdicts::build::{git, rev_parse};
use crate::verdicts::paired::{
    check, run_paired, MetricVerdict, PairedOpts, PairedOutcome, DEFAULT_THRESHOLD,
};
use crate::Result;

#[derive(clap::Args)]
pub struct BisectArgs {
    /// A commit (or branch) where the benchmark was fast.
    pub good: String,
    /// A later commit where it is slow.
    pub bad: String,
    /// Benchmark id (`medium/cpu-f32/fixture:llama`) or its group (`medium`).
    #[arg(long)]
    pub bench: String,
    /// Slowdown that counts as a regression, e.g. 5% or 0.05 (default 5%; with --paired 1%).
    #[arg(long)]
    pub threshold: Option<String>,
    /// Shell command that builds the checked-out commit (failure: the commit is skipped).
    /// Default: `cargo build --release --benches`; with --paired `cargo build --release --bin
    /// modelbench`.
    #[arg(long)]
    pub build: Option<String>,
    /// Shell command that runs the benchmark and writes a run folder under
    /// $MODELBENCH_REPORTS (failure: the commit is skipped). Not used with --paired.
    #[arg(long, default_value = "cargo bench --bench generation -- '{bench}'")]
    pub run: String,
    /// Paired verdicts: GOOD's and each commit's modelbench run side by side as workers
    /// (`compare --paired`) on the benchmark's scenario and model (`--bench
    /// medium/cpu-f32/fixture:llama`, or a scenario: fixture:llama); default threshold 1%.
    #[arg(long)]
    pub paired: bool,
    /// With --paired: pairs per comparison (with --max-pairs above it: per look). Default 30,
    /// as a look of `compare --paired`.
    #[arg(long, default_value_t = 30)]
    pub pairs: usize,
    /// With --paired: the cap on pairs per comparison, in looks of --pairs until every metric
    /// is decided or one regressed (`compare --paired --stop-on-regression`). Default: 4 x
    /// --pairs (a step judges one scenario, where `compare --paired` has two). A metric still
    /// Undecided at the cap counts as good for a commit and skips the commit for
    /// --candle-repo. Equal to --pairs: one fixed look.
    #[arg(long = "max-pairs")]
    pub max_pairs: Option<usize>,
    /// Bisect a Candle git history instead of this repository's: GOOD and BAD are revisions of
    /// this Candle git checkout or bare clone; each step builds this repository's HEAD against
    /// the Candle commit (as `compare --paired --new-candle`) and judges it paired against GOOD
    /// on --bench's scenario and model (implies --paired; README "Benchmarking a Candle
    /// change").
    #[arg(long = "candle-repo", value_name = "PATH")]
    pub candle_repo: Option<PathBuf>,
    /// Bisect what the model computes instead of its speed: the first commit whose outputs
    /// changed against GOOD (the output verdict, issue 59: the probe and every pair's ids,
    /// taken inside the paired comparison; implies --paired). BAD must read OUTPUTS CHANGED.
    #[arg(long)]
    pub outputs: bool,
}

/// The build command of a bisection.
fn build_cmd(build: &Option<String>, paired: bool) -> String {
    build.clone().unwrap_or_else(|| {
        if paired {
            "cargo build --release --bin modelbench".into()
        } else {
            "cargo build --release --benches".into()
        }
    })
}

/// `--max-pairs` of a paired bisection, commits or Candle's: as given, else 4 x `--pairs`
/// (with the default 30: up to four looks of 30 one-pair blocks; two looks missed a +2% BAD
/// in 1 of 5 whole bisections, docs/verdicts.md, `scripts/bisect-power.py`).
pub(crate) fn max_pairs(given: Option<usize>, pairs: usize) -> usize {
    given.unwrap_or(4 * pairs)
}

/// `--bench` as a paired comparison's scenario and model: `scenario[/target/model]`; looks
/// of `pairs` up to `max_pairs` that stop at the first regression (equal: one fixed look).
pub(crate) fn paired_target(bench: &str, pairs: usize, max_pairs: usize) -> Result<PairedOpts> {
    let mut parts = bench.splitn(3, '/');
    let scenario = parts.next().unwrap_or_default();
    let model = parts.nth(1).unwrap_or("fixture:llama");
    crate::engine::scenario::Scenario::by_name(scenario).map_err(|_| {
        fail!(
            "--bench `{bench}`: --paired needs a generation benchmark (`medium/cpu-f32/fixture:llama` or a scenario name such as `medium`)"
        )
    })?;
    let mut o = PairedOpts::for_model(model, scenario);
    // Looks of `pairs` up to `max_pairs` (default 4 x): a step whose interval still straddles
    // the threshold takes another look instead of being called good on one noisy look (seen:
    // CI's one fixed look of 10 pairs called a 30% decode slowdown good and bisect named the
    // next commit). Only "regressed or not" is asked, so it stops at the first regression.
    o.pairs = pairs;
    o.max_pairs = max_pairs.max(pairs);
    o.stop_on_regression = o.max_pairs > pairs;
    // One pair a block of fresh workers, as `compare --paired` (issue 64: blocks, not pairs,
    // are the unit of evidence once pairs run in lockstep).
    o.blocks = pairs;
    check(&o)?;
    Ok(o)
}

/// `bisect-step`: what `git bisect run` calls for each commit.
#[derive(clap::Args)]
pub struct StepArgs {
    /// GOOD's run folder.
    #[arg(long)]
    pub good_run: Option<PathBuf>,
    /// Where this bisection keeps its run folders.
    #[arg(long)]
    pub work: PathBuf,
    #[arg(long)]
    pub bench: String,
    #[arg(long)]
    pub threshold: String,
    #[arg(long)]
    pub build: String,
    #[arg(long)]
    pub run: String,
    /// Paired mode: GOOD's executable (the gate runs it beside this commit's).
    #[arg(long)]
    pub good_exe: Option<PathBuf>,
    #[arg(long, default_value_t = 60)]
    pub pairs: usize,
    #[arg(long = "max-pairs")]
    pub max_pairs: Option<usize>,
    /// Judge the step by its output verdict (`bisect --outputs`).
    #[arg(long)]
    pub outputs: bool,
}

/// The commit a ref names.
fn commit_of(r: &str, what: &str) -> Result<String> {
    rev_parse(r).ok_or_else(|| fail!("{what} `{r}`: not a commit or branch of this repository"))
}

/// Whether a record is the benchmark `bench` names (its id, its group, or an id prefix).
pub fn selects(r: &Record, bench: &str) -> bool {
    r.id == bench || r.scenario == bench || r.id.starts_with(&format!("{bench}/"))
}

/// The compare gate on the one benchmark: GOOD's records against a commit's.
pub fn gate(good: &[Record], new: &[Record], bench: &str, t: f64) -> Result<Comparison> {
    let g: Vec<Record> = good.iter().filter(|r| selects(r, bench)).cloned().collect();
    let n: Vec<Record> = new.iter().filter(|r| selects(r, bench)).cloned().collect();
    ensure!(
        !g.is_empty() && !n.is_empty(),
        "benchmark `{bench}`: not in {} run",
        if g.is_empty() {
            "GOOD's"
        } else {
            "this commit's"
        }
    );
    compare_runs("GOOD", &g, "this commit", &n, t, false)
}

/// Builds and runs the benchmark at the checked-out commit with run folders under `dir`;
/// returns the run folder, or the failing command.
fn measure(build: &str, run: &str, bench: &str, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (what, cmd) in [("build", build), ("run", run)] {
        let cmd = cmd.replace("{bench}", bench);
        eprintln!("bisect: {what}: {cmd}");
        let st = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("MODELBENCH_REPORTS", dir)
            .env("MODELBENCH_DB", "off")
            .status()
            .map_err(|e| format!("{what} command `{cmd}`: cannot start sh: {e}"))?;
        if !st.success() {
            return Err(format!("{what} command `{cmd}` failed ({st})"));
        }
    }
    list_runs(dir).pop().ok_or_else(|| {
        format!(
            "the run command wrote no run folder under {}",
            dir.display()
        )
    })
}

/// Paired mode: builds the checked-out commit and keeps its executable as `dir/modelbench`.
fn build_exe(build: &str, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!("bisect: build: {build}");
    let st = Command::new("sh")
        .arg("-c")
        .arg(build)
        .status()
        .map_err(|e| format!("build command `{build}`: cannot start sh: {e}"))?;
    if !st.success() {
        return Err(format!("build command `{build}` failed ({st})"));
    }
    let top = git(&["rev-parse", "--show-toplevel"]).map_err(|e| e.to_string())?;
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => Path::new(&top).join(t),
        None => Path::new(&top).join("target"),
    };
    let built = target.join("release").join("modelbench");
    let exe = dir.join("modelbench");
    std::fs::copy(&built, &exe).map_err(|e| {
        format!(
            "the build command left no {} ({e}); a --build for --paired must build the release modelbench binary",
            built.display()
        )
    })?;
    Ok(exe)
}

/// Paired mode's gate: GOOD's executable against this one on the benchmark.
pub(crate) fn paired_gate(
    good: &Path,
    new: &Path,
    new_name: &str,
    o: &PairedOpts,
    t: f64,
) -> Result<PairedOutcome> {
    run_paired((good, "GOOD"), (new, new_name), t, o)
}

/// What one bisection step found, as `git bisect run` reads its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    Good,
    Bad,
    /// Not judged (the build failed, or the verdict stayed open): why, in one line.
    Skip(String),
}

impl Judged {
    /// `git bisect run`'s code: 0 good, 1 bad, 125 skip.
    pub fn exit_code(&self) -> u8 {
        match self {
            Judged::Good => 0,
            Judged::Bad => 1,
            Judged::Skip(_) => 125,
        }
    }

    /// A paired outcome as a step: any metric flagged a regression is bad; otherwise an
    /// Undecided metric (its interval straddles the threshold) is good when `undecided_good`
    /// (a commit bisection, at the pair cap), else a skip naming the open metrics.
    pub fn of(p: &PairedOutcome, undecided_good: bool) -> Judged {
        Judged::of_metrics(&p.metrics.iter().collect::<Vec<_>>(), undecided_good)
    }

    /// A paired outcome as a step of `bisect --outputs`: bad when any scenario's outputs
    /// changed, good when every one reads `same` or `within numerical noise`, else a skip
    /// naming why (a build that keeps no outputs).
    pub fn of_outputs(p: &PairedOutcome) -> Judged {
        use crate::judge::outputs::OutputVerdict;
        if p.outputs_changed() > 0 {
            return Judged::Bad;
        }
        let open: Vec<String> = p
            .outputs
            .iter()
            .filter(|(_, j)| j.verdict == OutputVerdict::Unjudged)
            .map(|(s, j)| format!("{s}: {}", j.why))
            .collect();
        if open.is_empty() && !p.outputs.is_empty() {
            Judged::Good
        } else {
            Judged::Skip(format!("outputs not judged: {}", open.join("; ")))
        }
    }

    /// [`Judged::of`] or, for `bisect --outputs`, [`Judged::of_outputs`].
    pub fn of_mode(p: &PairedOutcome, outputs: bool) -> Judged {
        if outputs {
            Judged::of_outputs(p)
        } else {
            Judged::of(p, true)
        }
    }

    /// As [`Judged::of`], on these rows only (a Candle bisection watches the metrics BAD
    /// regressed on).
    pub fn of_metrics(metrics: &[&MetricVerdict], undecided_good: bool) -> Judged {
        if metrics
            .iter()
            .any(|m| m.verdict == PairedVerdict::Regression)
        {
            return Judged::Bad;
        }
        let open: Vec<String> = metrics
            .iter()
            .filter(|m| !m.verdict.decided())
            .map(|m| m.describe())
            .collect();
        if open.is_empty() || undecided_good {
            Judged::Good
        } else {
            Judged::Skip(format!("undecided: {}", open.join("; ")))
        }
    }
}

/// Puts the repository back as it was: ends the bisection, checks the original ref out.
struct Restore {
    orig: String,
    bisecting: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.bisecting {
            let _ = git(&["bisect", "reset"]);
        }
        let _ = git(&["checkout", "--quiet", &self.orig]);
    }
}

/// `--threshold` as given and as a fraction: default 5%, or 1% for a paired bisection (a
/// Candle one included).
pub(crate) fn threshold(a: &BisectArgs) -> Result<(String, f64)> {
    let threshold = match (&a.threshold, a.paired || a.candle_repo.is_some()) {
        (Some(t), _) => t.clone(),
        (None, true) => DEFAULT_THRESHOLD.to_string(),
        (None, false) => "5%".to_string(),
    };
    let t = parse_threshold(&threshold).map_err(|e| fail!("--threshold: {e}"))?;
    Ok((threshold, t))
}

/// A bisection of this repository's commits (`--candle-repo`: verdicts::bisect dispatches to
/// candle_bisect instead).
pub fn bisect(a: &BisectArgs) -> Result<ExitCode> {
    let (threshold, t) = threshold(a)?;
    let paired_mode = a.paired || a.outputs;
    let build = build_cmd(&a.build, paired_mode);
    let paired = if paired_mode {
        Some(paired_target(
            &a.bench,
            a.pairs,
            max_pairs(a.max_pairs, a.pairs),
        )?)
    } else {
        None
    };
    git(&["rev-parse", "--show-toplevel"])
        .map_err(|_| fail!("bisect: run it inside the git repository to bisect"))?;
    ensure!(
        git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty(),
        "bisect: the working tree has uncommitted changes; commit or stash them first"
    );
    let good = commit_of(&a.good, "GOOD")?;
    let bad = commit_of(&a.bad, "BAD")?;
    let orig =
        git(&["symbolic-ref", "--short", "-q", "HEAD"]).or_else(|_| git(&["rev-parse", "HEAD"]))?;
    let mut restore = Restore {
        orig,
        bisecting: false,
    };
    let work = reports_root().join(format!("bisect-{}", crate::util::time::stamp()));
    let short = |c: &str| c[..c.len().min(10)].to_string();
    let nothing = |table: &str| -> Result<ExitCode> {
        print!("{table}");
        if a.outputs {
            bail!(
                "BAD {} computes the same as GOOD {} on `{}` (the output verdict): nothing to bisect",
                short(&bad),
                short(&good),
                a.bench
            )
        }
        bail!(
            "BAD {} is not slower than GOOD {} beyond {threshold} on `{}` (95% confidence): nothing to bisect",
            short(&bad),
            short(&good),
            a.bench
        )
    };

    // GOOD and BAD measured first (BAD must be slower, else there is nothing to find).
    git(&["checkout", "--quiet", "--detach", &good])?;
    let (good_ref, bad_table) = if let Some(o) = &paired {
        let good_exe = build_exe(&build, &work.join(short(&good)))
            .map_err(|e| fail!("GOOD {}: {e}", short(&good)))?;
        git(&["checkout", "--quiet", "--detach", &bad])?;
        let bad_exe = build_exe(&build, &work.join(short(&bad)))
            .map_err(|e| fail!("BAD {}: {e}", short(&bad)))?;
        let p = paired_gate(&good_exe, &bad_exe, &format!("BAD {}", short(&bad)), o, t)?;
        if Judged::of_mode(&p, a.outputs) != Judged::Bad {
            return nothing(&p.table);
        }
        (("--good-exe", good_exe), p.table)
    } else {
        let good_run = measure(&build, &a.run, &a.bench, &work.join(short(&good)))
            .map_err(|e| fail!("GOOD {}: {e}", short(&good)))?;
        git(&["checkout", "--quiet", "--detach", &bad])?;
        let bad_run = measure(&build, &a.run, &a.bench, &work.join(short(&bad)))
            .map_err(|e| fail!("BAD {}: {e}", short(&bad)))?;
        let c = gate(&read_run(&good_run)?, &read_run(&bad_run)?, &a.bench, t)?;
        if c.regressions() == 0 {
            return nothing(&render(&c));
        }
        (("--good-run", good_run), render(&c))
    };

    git(&["bisect", "start", &bad, &good])?;
    restore.bisecting = true;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let out = Command::new("git")
        .args(["bisect", "run"])
        .arg(&exe)
        .arg("bisect-step")
        .arg(good_ref.0)
        .arg(&good_ref.1)
        .arg("--work")
        .arg(&work)
        .args([
            "--bench",
            a.bench.as_str(),
            "--threshold",
            threshold.as_str(),
        ])
        .args(["--build", build.as_str(), "--run", a.run.as_str()])
        .args(["--pairs", &a.pairs.to_string()])
        .args(["--max-pairs", &max_pairs(a.max_pairs, a.pairs).to_string()])
        .args(a.outputs.then_some("--outputs"))
        .output()
        .context("git bisect run")?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let first = log
        .lines()
        .find_map(|l| l.strip_suffix(" is the first bad commit"))
        .map(str::trim)
        .map(str::to_string);
    let Some(first) = first else {
        print!("{log}");
        bail!("git bisect run found no first bad commit (see its output above)");
    };
    let subject = git(&["log", "-1", "--format=%s", &first])?;
    drop(restore);
    println!("first bad commit: {first} {subject}");
    let first_dir = work.join(short(&first));
    let table = if first == bad {
        // BAD itself, measured before the bisection.
        bad_table
    } else if paired.is_some() {
        // The step's own table, saved by its paired comparison.
        std::fs::read_to_string(first_dir.join("paired.md")).unwrap_or(bad_table)
    } else {
        match list_runs(&first_dir).pop() {
            Some(dir) => render(&gate(
                &read_run(&good_ref.1)?,
                &read_run(&dir)?,
                &a.bench,
                t,
            )?),
            None => bad_table,
        }
    };
    println!(
        "its numbers against GOOD {} (kept under {}):",
        short(&good),
        work.display()
    );
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// One `git bisect run` step: 0 good, 1 regression, 125 skip, 128 abort.
pub fn step(a: &StepArgs) -> ExitCode {
    let inner = || -> Result<u8> {
        let t = parse_threshold(&a.threshold).map_err(|e| fail!("--threshold: {e}"))?;
        let head = git(&["rev-parse", "HEAD"])?;
        let dir = a.work.join(&head[..head.len().min(10)]);
        if let Some(good_exe) = &a.good_exe {
            let exe = match build_exe(&a.build, &dir) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("bisect: {head}: {e}; skipping this commit");
                    return Ok(125);
                }
            };
            let o = paired_target(&a.bench, a.pairs, max_pairs(a.max_pairs, a.pairs))?;
            let p = paired_gate(good_exe, &exe, &head[..10], &o, t)?;
            let _ = std::fs::write(dir.join("paired.md"), &p.table);
            return Ok(Judged::of_mode(&p, a.outputs).exit_code());
        }
        let Some(good_run) = &a.good_run else {
            bail!("bisect-step: --good-run or --good-exe is needed");
        };
        let run = match measure(&a.build, &a.run, &a.bench, &dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bisect: {head}: {e}; skipping this commit");
                return Ok(125);
            }
        };
        let c = gate(&read_run(good_run)?, &read_run(&run)?, &a.bench, t)?;
        print!("{}", render(&c));
        Ok(if c.regressions() > 0 { 1 } else { 0 })
    };
    match inner() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(128)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_command_fits_the_mode() {
        assert_eq!(build_cmd(&None, false), "cargo build --release --benches");
        assert_eq!(
            build_cmd(&None, true),
            "cargo build --release --bin modelbench"
        );
        assert_eq!(build_cmd(&Some("make".into()), true), "make");
    }

    #[test]
    fn a_paired_bisection_takes_the_scenario_and_model_of_the_bench() {
        let o = paired_target("medium/cpu-f32/fixture:qwen3", 20, 20).unwrap();
        assert_eq!(
            (o.suite.as_str(), o.model.as_str()),
            ("medium", "fixture:qwen3")
        );
        assert_eq!((o.pairs, o.max_pairs, o.blocks), (20, 20, 20));
        assert!(!o.stop_on_regression);
        let o = paired_target("short", 60, 60).unwrap();
        assert_eq!((o.model.as_str(), o.blocks), ("fixture:llama", 60));
        // More looks than one: they stop at the first regression.
        let o = paired_target("short/cpu-f32/gguf:owner/repo-GGUF", 60, 240).unwrap();
        assert_eq!(o.model, "gguf:owner/repo-GGUF");
        assert_eq!((o.pairs, o.max_pairs), (60, 240));
        assert!(o.stop_on_regression);
        // The default cap is 4 looks; --max-pairs as given otherwise.
        assert_eq!((max_pairs(None, 10), max_pairs(Some(10), 10)), (40, 10));
        let e = paired_target("moe/x", 60, 60).unwrap_err().to_string();
        assert!(
            e.starts_with("--bench `moe/x`: --paired needs a generation benchmark"),
            "{e}"
        );
    }

    #[test]
    fn commit_of_names_a_bad_ref() {
        assert_eq!(commit_of("HEAD", "GOOD").unwrap().len(), 40);
        assert_eq!(
            commit_of("no-such-branch-of-modelbench", "BAD")
                .unwrap_err()
                .to_string(),
            "BAD `no-such-branch-of-modelbench`: not a commit or branch of this repository"
        );
    }
}
