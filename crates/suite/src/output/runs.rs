//! Reading run folders (`target-reports/<YYYYMMDD_HHMMSS>[-label]/results.jsonl`): which
//! folders there are and the records of one. Here, not in `report` (which writes them and
//! re-exports these), so that the run summary and the browsable site, which `report` calls,
//! can read runs without an import cycle.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::output::record::Record;

/// The run folders under `root` (those holding results.jsonl), oldest first (their names
/// start with the UTC time they were made). Empty when `root` does not exist.
pub fn list_runs(root: &Path) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("results.jsonl").is_file())
        .collect();
    runs.sort();
    runs
}

/// Reads the records of a run folder.
pub fn read_run(dir: &Path) -> Result<Vec<Record>> {
    let f = dir.join("results.jsonl");
    if !dir.is_dir() {
        return Err(Error::Report(format!(
            "{}: not a run folder (no such directory)",
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&f)
        .map_err(|e| Error::Report(format!("{}: cannot read results.jsonl: {e}", dir.display())))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        out.push(serde_json::from_str(line).map_err(|e| {
            Error::Report(format!(
                "{}:{}: not a modelbench record: {e}",
                f.display(),
                i + 1
            ))
        })?);
    }
    if out.is_empty() {
        return Err(Error::Report(format!(
            "{}: the run holds no records",
            dir.display()
        )));
    }
    Ok(out)
}
