//! `modelbench compare`: two runs, exit 1 on a regression.

use std::path::Path;
use std::process::ExitCode;

use modelbench::output::compare::{compare, parse_threshold, render};
use modelbench::output::report::read_run;

pub fn compare_cmd(
    base: &Path,
    new: &Path,
    threshold: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let t = parse_threshold(threshold).map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    let b = read_run(base)?;
    let n = read_run(new)?;
    let c = compare(&b, &n, t, force)?;
    print!("{}", render(&c));
    Ok(if c.regressions() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
