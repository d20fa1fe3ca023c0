//! `modelbench compare`: two runs; exit 1 on a regression or on a benchmark of the base run
//! missing from the new one (unless `--allow-missing`), 0 otherwise (benchmarks with too few
//! samples get no verdict and say so, but never fail), 2 on unusable input (including runs
//! from different hardware or build settings without `--force`).
//!
//! A ref is a run folder, or a commit (prefix) or branch name: `git rev-parse` turns it into
//! a commit, and the results database gives the newest run of that commit (preferring the
//! other ref's hardware, so like is compared with like whenever the database has it).

use std::path::Path;
use std::process::ExitCode;

use modelbench::output::compare::{compare_runs, parse_threshold, render, Comparison};
use modelbench::output::db::Db;
use modelbench::output::record::Record;
use modelbench::output::report::read_run;

pub fn compare_cmd(
    base: &Path,
    new: &Path,
    threshold: &str,
    force: bool,
    allow_missing: bool,
    db: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let t = parse_threshold(threshold).map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    let c = if base.is_dir() && new.is_dir() {
        compare_dirs(base, new, t, force)?
    } else {
        compare_refs(base, new, t, force, db)?
    };
    print!("{}", render(&c));
    Ok(exit_code(&c, allow_missing))
}

/// Reads two run folders and compares them (errors name the folders).
pub fn compare_dirs(
    base: &Path,
    new: &Path,
    threshold: f64,
    force: bool,
) -> anyhow::Result<Comparison> {
    let b = read_run(base)?;
    let n = read_run(new)?;
    Ok(compare_runs(
        &base.display().to_string(),
        &b,
        &new.display().to_string(),
        &n,
        threshold,
        force,
    )?)
}

fn compare_refs(
    base: &Path,
    new: &Path,
    threshold: f64,
    force: bool,
    flag: Option<&str>,
) -> anyhow::Result<Comparison> {
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
    Ok(compare_runs(&bn, &b, &nn, &n, threshold, force)?)
}

fn fingerprint(records: &[Record]) -> Option<String> {
    records.first().map(|r| r.hardware.fingerprint())
}

/// `git rev-parse --verify REF^{commit}`: the full hash, or None when git does not know it.
pub fn rev_parse(r: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{r}^{{commit}}"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A commit or branch ref: the newest run of its commit in the database, on `prefer_hw`
/// when the database has one there.
fn resolve(
    r: &Path,
    db: &mut Option<Db>,
    flag: Option<&str>,
    prefer_hw: Option<&str>,
) -> anyhow::Result<(String, Vec<Record>)> {
    let name = r.display().to_string();
    let commit = match rev_parse(&name) {
        Some(c) => c,
        None if name.len() >= 4 && name.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_ascii_lowercase()
        }
        None => anyhow::bail!(
            "`{name}`: not a run folder, and `git rev-parse` knows no such commit or branch here"
        ),
    };
    if db.is_none() {
        *db = Some(super::db::open(flag)?);
    }
    let db = db.as_mut().expect("opened");
    let runs = db.runs(Some(&commit))?;
    let commits: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.git_commit.as_str()).collect();
    anyhow::ensure!(
        commits.len() <= 1,
        "`{name}`: the prefix matches several commits in {} ({}); give more digits",
        db.target().describe(),
        commits.into_iter().collect::<Vec<_>>().join(", ")
    );
    let pick = runs
        .iter()
        .rev()
        .find(|x| Some(x.hardware_fp.as_str()) == prefer_hw)
        .or_else(|| runs.last())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`{name}` (commit {}): no run of that commit in {}; run the benchmarks at that commit, or `modelbench db push` its run folders",
                super::db::short(&commit),
                db.target().describe()
            )
        })?;
    let records = db.run_records(&pick.run, &pick.hardware_fp)?;
    Ok((
        format!(
            "{name} (commit {}, run {} on {})",
            super::db::short(&pick.git_commit),
            pick.run,
            pick.hardware_fp
        ),
        records,
    ))
}

/// 1 when any benchmark regressed or (unless `allow_missing`) one of the base run is missing
/// from the new run, 0 otherwise (insufficient samples included).
pub fn exit_code(c: &Comparison, allow_missing: bool) -> ExitCode {
    if c.failed(allow_missing) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
