//! `modelbench noise`: this machine's run-to-run spread per benchmark, from repeated runs of
//! one build (`--measure K` runs `cargo bench` K times first), saved as the noise profile the
//! benches hand to criterion (`output::noise`).

use std::path::PathBuf;
use std::process::Command;

use crate::app::Context;
use crate::judge::noise::{NoiseProfile, MIN_RUNS};
use crate::output::noise;
use crate::output::record::Record;
use crate::output::report::{list_runs, read_run, reports_root};
use crate::Result;

#[derive(clap::Args)]
pub struct NoiseArgs {
    /// Run folders to read (default: every run folder under the reports root whose records
    /// come from the newest run's commit, build and machine).
    pub runs: Vec<PathBuf>,
    /// First run `cargo bench` this many times (labelled `noise`), then read those runs.
    #[arg(long)]
    pub measure: Option<usize>,
    /// Extra arguments for each `cargo bench` of --measure (e.g. `--bench moe`).
    #[arg(long, allow_hyphen_values = true)]
    pub bench_args: Option<String>,
    /// Print the table only; do not write the profile.
    #[arg(long)]
    pub dry_run: bool,
    /// One row per benchmark, not only per group.
    #[arg(long)]
    pub all: bool,
    /// Fit this machine's saved profile again from its stored per-run means (after a change
    /// of the noise model); runs nothing.
    #[arg(long)]
    pub refit: bool,
}

pub fn noise_cmd(a: &NoiseArgs) -> Result<()> {
    let root = reports_root();
    if a.refit {
        ensure!(
            a.measure.is_none() && a.runs.is_empty(),
            "--refit reads the saved profile; give neither --measure nor run folders"
        );
        let fp = crate::measure::hardware::context().hardware.fingerprint();
        let mut p = noise::load(&root, &fp)?.with_context(|| {
            format!(
                "no noise profile of this machine at {}; run `modelbench noise --measure 3` first",
                noise::path_for(&root, &fp).display()
            )
        })?;
        p.refit();
        return show_and_save(&root, &p, a);
    }
    let before: Vec<PathBuf> = list_runs(&root);
    if let Some(k) = a.measure {
        ensure!(
            k >= MIN_RUNS,
            "--measure {k}: at least {} runs are needed for a spread",
            MIN_RUNS
        );
        ensure!(
            a.runs.is_empty(),
            "--measure reads the runs it makes; give no run folders with it"
        );
        for i in 1..=k {
            eprintln!("noise: cargo bench, run {i} of {k} ...");
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.arg("bench");
            if let Some(extra) = &a.bench_args {
                cmd.args(extra.split_whitespace());
            }
            let st = cmd
                .env("MODELBENCH_LABEL", "noise")
                .current_dir(crate::util::root())
                .status()
                .context("cannot start cargo (is it on PATH?)")?;
            ensure!(
                st.success(),
                "cargo bench (noise run {i} of {k}) failed: {st}"
            );
        }
    }
    let dirs: Vec<PathBuf> = if a.measure.is_some() {
        list_runs(&root)
            .into_iter()
            .filter(|d| !before.contains(d))
            .collect()
    } else if !a.runs.is_empty() {
        a.runs.clone()
    } else {
        // Runs that ended only: an interrupted run's spread is not the build's.
        same_build_runs(&crate::output::runs::baseline_runs(&root))?
    };
    ensure!(
        !dirs.is_empty(),
        "no run folders under {}; run the benches first, or `modelbench noise --measure 4`",
        root.display()
    );
    let mut runs: Vec<(String, Vec<Record>)> = Vec::new();
    for d in &dirs {
        runs.push((d.display().to_string(), read_run(d)?));
    }
    let p = noise::profile(&runs)?;
    show_and_save(&root, &p, a)
}

fn show_and_save(root: &std::path::Path, p: &NoiseProfile, a: &NoiseArgs) -> Result<()> {
    println!("{}", noise::render(p, a.all));
    if !a.dry_run {
        let path = noise::save(root, p)?;
        println!(
            "saved {} (the benches read it on this machine)",
            path.display()
        );
    }
    Ok(())
}

/// Every run folder whose records come from the newest run's commit, build settings and
/// machine, and carry no injected slowdown.
fn same_build_runs(all: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let Some(newest) = all.last() else {
        return Ok(Vec::new());
    };
    let n = read_run(newest)?;
    let Some(r0) = n.first() else {
        return Ok(Vec::new());
    };
    let (hw, build) = (r0.hardware.fingerprint(), r0.build.clone());
    let mut out = Vec::new();
    for d in all {
        let Ok(rs) = read_run(d) else { continue };
        if rs.iter().all(|r| {
            r.hardware.fingerprint() == hw
                && r.build.git_commit == build.git_commit
                && r.build.differences(&build).is_empty()
                && r.injected.is_none()
        }) && !rs.is_empty()
        {
            out.push(d.clone());
        }
    }
    Ok(out)
}
