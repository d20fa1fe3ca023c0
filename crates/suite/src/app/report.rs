//! `modelbench report` and `export`: re-render a run (`--html`: the browsable report), or export it as metric-registry lines
//! or Bencher Metric Format JSON.

use std::path::{Path, PathBuf};

use crate::output::report::{list_runs, read_run, reports_root, write_artifacts};

pub fn latest_run() -> crate::Result<PathBuf> {
    let root = reports_root();
    list_runs(&root)
        .pop()
        .ok_or_else(|| fail!("{}: no runs yet", root.display()))
}

pub fn report(run: Option<PathBuf>, html: bool) -> crate::Result<()> {
    if html {
        if let Some(r) = run {
            bail!(
                "{}: `report --html` regenerates the whole report from target-reports/ (set MODELBENCH_REPORTS for another folder); give no run folder",
                r.display()
            );
        }
        let root = reports_root();
        if !root.is_dir() {
            bail!(
                "{}: no reports folder (run `cargo bench` or `modelbench run` first)",
                root.display()
            );
        }
        crate::output::report::write_index(&root)?;
        let pages = std::fs::read_dir(root.join(crate::output::site::DIR).join("bench"))
            .map(|d| d.count())
            .unwrap_or(0);
        println!(
            "{}: the newest run's summary and {pages} benchmark pages ({})",
            root.join("index.html").display(),
            root.join(crate::output::site::DIR).display()
        );
        return Ok(());
    }
    let dir = match run {
        Some(r) => r,
        None => latest_run()?,
    };
    let records = read_run(&dir)?;
    write_artifacts(&dir, &records)?;
    let tput = dir.join("throughput.csv");
    if tput.is_file() {
        let grid = records
            .iter()
            .find_map(|r| {
                r.extra
                    .get("grid")
                    .and_then(|g| g.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "default".into());
        crate::output::report::write_throughput_views(
            &dir,
            &grid,
            &crate::output::report::read_throughput_csv(&tput)?,
        )?;
    }
    crate::output::report::write_index(dir.parent().unwrap_or(Path::new(".")))?;
    print!("{}", crate::output::report::markdown(&dir, &records));
    Ok(())
}

/// `modelbench export --format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Metric-registry JSONL: one object per metric.
    Registry,
    /// Bencher Metric Format JSON (`bencher run --adapter json`).
    Bencher,
}

pub fn export(
    run: Option<PathBuf>,
    format: ExportFormat,
    out: Option<PathBuf>,
) -> crate::Result<()> {
    let dir = match run {
        Some(r) => r,
        None => latest_run()?,
    };
    let records = read_run(&dir)?;
    let lines = match format {
        ExportFormat::Registry => crate::output::report::registry_lines(&records),
        ExportFormat::Bencher => {
            let mut s = super::json_text(&crate::output::report::bencher_json(&records));
            s.push('\n');
            s
        }
    };
    match out {
        Some(p) => crate::util::fsio::atomic_write(&p, lines.as_bytes())?,
        None => print!("{lines}"),
    }
    Ok(())
}
