//! `modelbench compare`: two runs; exit 1 on a regression, 0 otherwise (benchmarks with too
//! few samples get no verdict and say so, but never fail), 2 on unusable input.

use std::path::Path;
use std::process::ExitCode;

use modelbench::output::compare::{compare_runs, parse_threshold, render, Comparison};
use modelbench::output::report::read_run;

pub fn compare_cmd(
    base: &Path,
    new: &Path,
    threshold: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let t = parse_threshold(threshold).map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    let c = compare_dirs(base, new, t, force)?;
    print!("{}", render(&c));
    Ok(exit_code(&c))
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

/// 1 when any benchmark regressed, 0 otherwise (insufficient samples included).
pub fn exit_code(c: &Comparison) -> ExitCode {
    if c.regressions() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
