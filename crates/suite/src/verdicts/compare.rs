//! `modelbench compare`: two runs; exit 1 on a regression or on a benchmark of the base run
//! missing from the new one (unless `--allow-missing`), 0 otherwise (benchmarks with too few
//! samples get no verdict and say so, but never fail), 2 on unusable input (including runs
//! from different hardware or build settings without `--force`).
//!
//! A ref is a run folder, or a commit (prefix) or branch name: `git rev-parse` turns it into
//! a commit, and the results database gives the newest run of that commit (preferring the
//! other ref's hardware, so like is compared with like whenever the database has it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::app::db::{open, short};
use crate::judge::speed::{parse_threshold, Verdict};
use crate::output::compare::{apply_noise, compare_runs, render, Comparison, Row};
use crate::output::db::Db;
use crate::output::noise::RunNoise;
use crate::output::record::Record;
use crate::output::report::{read_run, reports_root};
use crate::util::fsio::atomic_write;
use crate::verdicts::build::{executable, rev_parse};
use crate::verdicts::paired::{paired_cmd, PairedOpts, DEFAULT_THRESHOLD};
use crate::{Error, Result};

/// `modelbench compare`'s options.
#[derive(clap::Args)]
pub struct CompareArgs {
    pub base: PathBuf,
    pub new: PathBuf,
    /// Slowdown that counts as a regression, e.g. 5% or 0.05 (default 5%; with --paired
    /// 1%, see docs/verdicts.md "Lockstep pairs").
    #[arg(long)]
    pub threshold: Option<String>,
    /// Compare runs taken on different hardware or with different build settings
    /// (profile, features, rustflags, rustc, candle version) anyway.
    #[arg(long)]
    pub force: bool,
    /// A benchmark of the base run missing from the new run is listed but does not fail.
    #[arg(long)]
    pub allow_missing: bool,
    /// Changed outputs (the output verdict: the new side computes something else than the
    /// base, beyond the model's own numerical noise) are wanted: listed, exit 0 when nothing
    /// else fails. Without it they exit 1, whatever the speed verdict says.
    #[arg(long)]
    pub allow_output_change: bool,
    /// Judge run folders and commits by the interval and the threshold only, not also against
    /// each benchmark's run-to-run noise on this machine (`modelbench noise`; default ±20%
    /// where none was measured), which otherwise turns a change an unchanged rerun can make
    /// into "Undecided".
    #[arg(long)]
    pub ignore_noise: bool,
    /// On a regression, the per-op tables and flame graphs of both builds on each flagged
    /// benchmark (each commit built once under target/paired/).
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub paired: PairedOpts,
    /// Results database for commit and branch refs (default: MODELBENCH_DB, else
    /// target-reports/modelbench.db).
    #[arg(long)]
    pub db: Option<String>,
}

/// `modelbench compare`: paired with `--paired`, else of two runs (or the runs of two
/// commits); the Candle flags need `--paired`.
pub fn compare(a: &CompareArgs) -> Result<ExitCode> {
    let threshold = a.threshold.as_deref();
    if a.paired.paired {
        let t = threshold.unwrap_or(DEFAULT_THRESHOLD);
        return paired_cmd(&a.base, &a.new, t, &a.paired, a.allow_output_change);
    }
    ensure!(
        a.paired.base_candle.is_none() && a.paired.new_candle.is_none(),
        "--base-candle / --new-candle build each side against a Candle: add --paired (e.g. `modelbench compare HEAD HEAD --paired --base-candle 0.11.1 --new-candle ../candle`)"
    );
    compare_cmd(
        &a.base,
        &a.new,
        threshold.unwrap_or("5%"),
        a.force,
        a.allow_missing,
        a.db.as_deref(),
        a.profile,
        a.ignore_noise,
        a.allow_output_change,
    )
}

#[allow(clippy::too_many_arguments)]
fn compare_cmd(
    base: &Path,
    new: &Path,
    threshold: &str,
    force: bool,
    allow_missing: bool,
    db: Option<&str>,
    profile: bool,
    ignore_noise: bool,
    allow_output_change: bool,
) -> Result<ExitCode> {
    let t = parse_threshold(threshold).map_err(|e| fail!("--threshold: {e}"))?;
    let (mut c, commits, fp) = if base.is_dir() && new.is_dir() {
        read_and_compare(base, new, t, force)?
    } else {
        compare_refs(base, new, t, force, db)?
    };
    c.allow_output_change = allow_output_change;
    if !ignore_noise {
        let noise = RunNoise::for_machine(&reports_root(), &fp.unwrap_or_default())?;
        apply_noise(&mut c, |r| noise.of(r));
    }
    print!("{}", render(&c));
    let flagged: Vec<&Row> = c
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regression)
        .collect();
    if !flagged.is_empty() {
        if profile {
            profile_flagged(&flagged, commits)?;
        } else {
            println!(
                "per-op tables and flame graphs of both builds on each flagged benchmark: add --profile (builds each commit once), or use `compare BASE NEW --paired`"
            );
        }
    }
    Ok(exit_code(&c, allow_missing))
}

/// Reads two run folders and compares them (errors name the folders).
pub fn compare_dirs(base: &Path, new: &Path, threshold: f64, force: bool) -> Result<Comparison> {
    read_and_compare(base, new, threshold, force).map(|(c, _, _)| c)
}

/// [`compare_dirs`], and the commits the two runs were built from.
fn read_and_compare(
    base: &Path,
    new: &Path,
    threshold: f64,
    force: bool,
) -> Result<(Comparison, Commits, Option<String>)> {
    let (b, n) = (read_run(base)?, read_run(new)?);
    let c = compare_runs(
        &base.display().to_string(),
        &b,
        &new.display().to_string(),
        &n,
        threshold,
        force,
    )?;
    Ok((c, (commit_of(&b), commit_of(&n)), fingerprint(&n)))
}

/// The commits of the base and the new run, where their records name them.
type Commits = (Option<String>, Option<String>);

/// The commit a run was built from (its first record's).
fn commit_of(records: &[Record]) -> Option<String> {
    records
        .first()
        .map(|r| r.build.git_commit.clone())
        .filter(|c| !c.is_empty() && c != "unknown")
}

/// `--profile`: for each flagged generation benchmark, the per-op tables of both builds at
/// its decode step (mid-generation depth) and a flame graph of each build running the
/// scenario, as `compare --paired` makes for its flagged rows; each commit is built once
/// under target/paired/ (and reused). Saved under target-reports/<time>-profile/.
fn profile_flagged(flagged: &[&Row], (base, new): Commits) -> Result<()> {
    let (Some(base), Some(new)) = (base, new) else {
        println!(
            "--profile: not available (a run's records do not name the commit it was built from)"
        );
        return Ok(());
    };
    let (eb, nb) = executable(Path::new(&base), "base")?;
    let (en, nn) = executable(Path::new(&new), "new")?;
    let out = crate::output::report::reports_root()
        .join(format!("{}-profile", crate::util::time::stamp()));
    std::fs::create_dir_all(&out).map_err(Error::io(&out))?;
    let mut lines = format!("per-op profiles: base {nb}, new {nn}\n");
    let mut flames = super::profile::Flames::default();
    for r in flagged {
        let Ok(sc) = crate::engine::scenario::Scenario::by_name(&r.scenario) else {
            let l = format!("{}: no profile (not a generation scenario)", r.id);
            println!("{l}");
            lines.push_str(&l);
            lines.push('\n');
            continue;
        };
        let tag = format!("{}-decode", sc.name);
        let l = super::profile::profile(
            &mut flames,
            (&eb, &en),
            None,
            &r.model,
            &sc.name,
            crate::workloads::ops::Phase::Decode,
            sc.prompt_tokens + sc.new_tokens / 2,
            &out,
            &tag,
            0.05,
        );
        println!("{}: {l}", r.id);
        lines.push_str(&format!("{}: {l}\n", r.id));
    }
    atomic_write(&out.join("profile.md"), lines.as_bytes())?;
    println!("saved {}", out.display());
    Ok(())
}

fn compare_refs(
    base: &Path,
    new: &Path,
    threshold: f64,
    force: bool,
    flag: Option<&str>,
) -> Result<(Comparison, Commits, Option<String>)> {
    let mut db: Option<Db> = None;
    // A run folder side first: its hardware is the one to look for on the other side.
    let (bn, b, nn, n) = if base.is_dir() {
        let (bn, b) = (base.display().to_string(), read_run(base)?);
        let (nn, n) = resolve(new, &mut db, flag, fingerprint(&b).as_deref())?;
        (bn, b, nn, n)
    } else {
        let (bn, b) = resolve(base, &mut db, flag, None)?;
        let (nn, n) = if new.is_dir() {
            (new.display().to_string(), read_run(new)?)
        } else {
            resolve(new, &mut db, flag, fingerprint(&b).as_deref())?
        };
        (bn, b, nn, n)
    };
    println!("base: {bn}\nnew:  {nn}\n");
    Ok((
        compare_runs(&bn, &b, &nn, &n, threshold, force)?,
        (commit_of(&b), commit_of(&n)),
        fingerprint(&n),
    ))
}

fn fingerprint(records: &[Record]) -> Option<String> {
    records.first().map(|r| r.hardware.fingerprint())
}

/// A commit or branch ref: the newest run of its commit in the database, on `prefer_hw`
/// when the database has one there.
fn resolve(
    r: &Path,
    db: &mut Option<Db>,
    flag: Option<&str>,
    prefer_hw: Option<&str>,
) -> Result<(String, Vec<Record>)> {
    let name = r.display().to_string();
    let commit = match rev_parse(&name) {
        Some(c) => c,
        None if name.len() >= 4 && name.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_ascii_lowercase()
        }
        None => bail!(
            "`{name}`: not a run folder, and `git rev-parse` knows no such commit or branch here"
        ),
    };
    if db.is_none() {
        *db = Some(open(flag)?);
    }
    let db = db.as_mut().expect("opened");
    let runs = db.runs(Some(&commit))?;
    let commits: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.git_commit.as_str()).collect();
    ensure!(
        commits.len() <= 1,
        "`{name}`: the prefix matches several commits in {} ({}); give more digits",
        db.target().describe(),
        commits.into_iter().collect::<Vec<_>>().join(", ")
    );
    // A run that did not end (interrupted, or still running) is no commit's measurement: it
    // is compared only when named as a run folder.
    let ended: Vec<_> = runs
        .iter()
        .filter(|r| r.state == "complete" || r.state == "unmarked")
        .collect();
    if ended.is_empty() {
        if let Some(r) = runs.last() {
            bail!(
                "`{name}` (commit {}): its runs in {} did not end (run {} is {}); give that run folder to compare it anyway, or run the benchmarks at that commit again",
                short(&commit),
                db.target().describe(),
                r.run,
                r.state
            );
        }
    }
    let pick = ended
        .iter()
        .rev()
        .find(|x| Some(x.hardware_fp.as_str()) == prefer_hw)
        .or_else(|| ended.last())
        .ok_or_else(|| {
            fail!(
                "`{name}` (commit {}): no run of that commit in {}; run the benchmarks at that commit, or `modelbench db push` its run folders",
                short(&commit),
                db.target().describe()
            )
        })?;
    let records = db.run_records(&pick.run, &pick.hardware_fp)?;
    Ok((
        format!(
            "{name} (commit {}, run {} on {})",
            short(&pick.git_commit),
            pick.run,
            pick.hardware_fp
        ),
        records,
    ))
}

/// 1 when any benchmark regressed, changed its outputs (unless the comparison allows it) or
/// (unless `allow_missing`) one of the base run is missing from the new run, 0 otherwise
/// (insufficient samples included).
pub fn exit_code(c: &Comparison, allow_missing: bool) -> ExitCode {
    crate::judge::gate::exit_code(c.failed(allow_missing))
}
