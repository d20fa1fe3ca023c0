//! Reading run folders (`target-reports/<YYYYMMDD_HHMMSS>[-label]/results.jsonl`): which
//! folders there are and the records of one. Here, not in `report` (which writes them and
//! re-exports these), so that the run summary and the browsable site, which `report` calls,
//! can read runs without an import cycle.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::process::alive;
use crate::output::record::Record;

/// Written into a run folder with its first record: who is running it.
pub const STARTED: &str = "started.json";
/// Written into a run folder last, when its last benchmark has ended (issue 61 item 8): a
/// folder without it was interrupted (or is still running).
pub const COMPLETE: &str = "complete.json";

/// [`STARTED`]'s content. The owner is the process whose end ends the run: the `cargo` of a
/// `cargo bench` (its bench binaries come and go), else the command itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub pid: u32,
    /// Its start time in clock ticks since boot ([`crate::measure::process::start_ticks`]).
    pub start_ticks: u64,
    pub started_at: String,
    /// The machine it runs on (a run folder may be read on another one).
    pub host: String,
}

/// [`COMPLETE`]'s content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complete {
    pub finished_at: String,
    pub records: usize,
}

/// Whether a run folder's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Its last benchmark ended ([`COMPLETE`] is there).
    Complete,
    /// Not complete, and its owner is still running (on this machine).
    Running,
    /// Not complete, and its owner is gone: killed, crashed or ended by an error.
    Interrupted,
    /// A folder from before run states were kept (neither marker): taken as complete.
    Unmarked,
}

impl RunState {
    /// Whether the run may be a verdict's baseline without being asked for by name.
    pub fn is_baseline(self) -> bool {
        matches!(self, RunState::Complete | RunState::Unmarked)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Complete => "complete",
            RunState::Running => "running",
            RunState::Interrupted => "interrupted",
            RunState::Unmarked => "unmarked",
        }
    }
}

/// This machine's name (a run started elsewhere cannot be seen running from here).
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The state of the run folder `dir`. A folder started on another machine and not complete
/// reads as interrupted (its owner cannot be seen from here).
pub fn run_state(dir: &Path) -> RunState {
    if dir.join(COMPLETE).is_file() {
        return RunState::Complete;
    }
    let Some(s) = std::fs::read(dir.join(STARTED))
        .ok()
        .and_then(|b| serde_json::from_slice::<Started>(&b).ok())
    else {
        return if dir.join(STARTED).exists() {
            RunState::Interrupted
        } else {
            RunState::Unmarked
        };
    };
    if s.host == host() && alive(s.pid, s.start_ticks) {
        RunState::Running
    } else {
        RunState::Interrupted
    }
}

/// The run folders under `root` that may be a verdict's baseline unasked ([`RunState::is_baseline`]),
/// oldest first.
pub fn baseline_runs(root: &Path) -> Vec<PathBuf> {
    list_runs(root)
        .into_iter()
        .filter(|p| run_state(p).is_baseline())
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each state from the markers: none (unmarked), started by a live process (this test),
    /// by a gone one, by one on another machine, and complete.
    #[test]
    fn a_folder_state_comes_from_its_markers_and_its_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(run_state(d), RunState::Unmarked);
        let me = std::process::id();
        let mut s = Started {
            pid: me,
            start_ticks: crate::measure::process::start_ticks(me).unwrap(),
            started_at: String::new(),
            host: host(),
        };
        let write =
            |s: &Started| std::fs::write(d.join(STARTED), serde_json::to_vec(s).unwrap()).unwrap();
        write(&s);
        assert_eq!(run_state(d), RunState::Running);
        s.start_ticks += 1; // the pid now names another process
        write(&s);
        assert_eq!(run_state(d), RunState::Interrupted);
        s.start_ticks -= 1;
        s.host = format!("{}-elsewhere", s.host);
        write(&s);
        assert_eq!(run_state(d), RunState::Interrupted);
        std::fs::write(d.join(STARTED), "not json").unwrap();
        assert_eq!(run_state(d), RunState::Interrupted);
        std::fs::write(d.join(COMPLETE), "{}").unwrap();
        assert_eq!(run_state(d), RunState::Complete);
        assert!(RunState::Complete.is_baseline() && RunState::Unmarked.is_baseline());
        assert!(!RunState::Running.is_baseline() && !RunState::Interrupted.is_baseline());
    }
}
