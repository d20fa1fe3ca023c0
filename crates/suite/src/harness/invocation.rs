//! One run folder per `cargo bench`. Cargo runs the bench binaries of one invocation one
//! after another, each a child of the same `cargo` process; that process (its pid and its
//! start time, which together never repeat) is the invocation. The first bench of an
//! invocation picks the run folder and writes it into a marker,
//! `<reports>/.cargo-bench/<pid>-<start>.json`; the later ones find the marker, append their
//! records to the same folder and mark themselves done. Cargo's own command line says which
//! bench targets it runs (`--bench NAME`, `--benches`, none), so the bench that completes the
//! set knows it is the last and prints the summary. A bench binary not started by cargo (run
//! by hand, or by a script) makes its own folder and prints its own summary.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::process::{alive, start_ticks};
use crate::output::report::RunDir;
use crate::util::fsio::atomic_write;

/// The bench targets of benches/ (Cargo.toml's `[[bench]]` names).
pub const ALL: [&str; 6] = ["arch", "checkpoint", "depth", "generation", "moe", "psann"];

/// The `cargo` process that started this bench binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `<pid>-<start time in clock ticks since boot>`.
    pub key: String,
    /// The bench targets this cargo runs; None when its command line does not say.
    pub benches: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Marker {
    /// The run folder's name under the reports root.
    run: String,
    /// Benches of the invocation that have finished.
    done: Vec<String>,
}

impl Invocation {
    /// The invocation of this process: its parent, when that is `cargo`.
    pub fn current() -> Option<Invocation> {
        let ppid = std::os::unix::process::parent_id();
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
        if comm.trim() != "cargo" {
            return None;
        }
        let start = start_ticks(ppid)?;
        let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(Invocation {
            key: format!("{ppid}-{start}"),
            benches: benches_of(&args),
        })
    }
}

/// The bench targets a cargo command line runs: `--bench NAME` (and `--bench=NAME`) name
/// them; `--benches`, `--all-targets` or no target flag at all run every one; other target
/// flags alone (`--test X`, `--lib`, ...) run none. None when there is no `bench` or `test`
/// subcommand.
pub fn benches_of(args: &[String]) -> Option<Vec<String>> {
    let sub = args.iter().position(|a| a == "bench" || a == "test")?;
    let mut names = Vec::new();
    let (mut all, mut other) = (false, false);
    let mut it = args[sub + 1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => break,
            "--bench" => names.push(it.next()?.clone()),
            "--benches" | "--all-targets" => all = true,
            "--lib" | "--bins" | "--tests" | "--examples" | "--doc" => other = true,
            "--bin" | "--test" | "--example" => {
                other = true;
                it.next();
            }
            _ => {
                if let Some(n) = a.strip_prefix("--bench=") {
                    names.push(n.to_string());
                } else if ["--bin=", "--test=", "--example="]
                    .iter()
                    .any(|p| a.starts_with(p))
                {
                    other = true;
                }
            }
        }
    }
    if all || (names.is_empty() && !other) {
        return Some(ALL.iter().map(|s| s.to_string()).collect());
    }
    Some(names)
}

fn marker_dir(root: &Path) -> PathBuf {
    root.join(".cargo-bench")
}

fn read_marker(p: &Path) -> Option<Marker> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn write_marker(p: &Path, m: &Marker) -> Result<()> {
    let json = serde_json::to_vec_pretty(m).map_err(|e| Error::Report(e.to_string()))?;
    Ok(atomic_write(p, &json)?)
}

/// Removes markers of cargo processes that are gone (or whose pid now names another process).
fn prune(root: &Path) {
    for e in std::fs::read_dir(marker_dir(root)).into_iter().flatten() {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pid, start)) = name.trim_end_matches(".json").split_once('-') else {
            continue;
        };
        let live = pid
            .parse()
            .ok()
            .zip(start.parse().ok())
            .is_some_and(|(p, s)| alive(p, s));
        if !live {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// This bench's run folder under `root`: the one an earlier bench of the same invocation
/// chose, or a new one (`<stamp>[-label]`), recorded for the benches after it.
pub fn run_dir(root: &Path, label: Option<&str>, inv: Option<&Invocation>) -> Result<RunDir> {
    let Some(inv) = inv else {
        return Ok(RunDir::new(root, label));
    };
    let marker = marker_dir(root).join(format!("{}.json", inv.key));
    if let Some(m) = read_marker(&marker).filter(|m| !m.run.is_empty()) {
        return RunDir::resume(&root.join(&m.run));
    }
    prune(root);
    let mut run = RunDir::new(root, label);
    // The run ends with the cargo process, not with this bench binary.
    if let Some((pid, start)) = inv
        .key
        .split_once('-')
        .and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?)))
    {
        run = run.owned_by(pid, start);
    }
    write_marker(
        &marker,
        &Marker {
            run: run.name(),
            done: Vec::new(),
        },
    )?;
    Ok(run)
}

/// Marks `bench` done; true when it is the last bench of the invocation (or there is no
/// invocation: a bench run on its own is its own last).
pub fn finish(root: &Path, bench: &str, inv: Option<&Invocation>) -> Result<bool> {
    let Some(inv) = inv else {
        return Ok(true);
    };
    let marker = marker_dir(root).join(format!("{}.json", inv.key));
    let mut m = read_marker(&marker).unwrap_or_default();
    if !m.done.iter().any(|d| d == bench) {
        m.done.push(bench.to_string());
    }
    write_marker(&marker, &m)?;
    Ok(match &inv.benches {
        Some(all) => all.iter().all(|b| m.done.contains(b)),
        None => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn cargo_command_lines_name_their_benches() {
        let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(benches_of(&args("cargo bench")), Some(all.clone()));
        assert_eq!(
            benches_of(&args("/x/cargo bench -- --save-baseline main")),
            Some(all.clone())
        );
        assert_eq!(
            benches_of(&args("cargo bench --bench depth --bench=moe -- medium")),
            Some(vec!["depth".into(), "moe".into()])
        );
        assert_eq!(
            benches_of(&args("cargo test --benches --release")),
            Some(all)
        );
        assert_eq!(benches_of(&args("cargo test --test knobs")), Some(vec![]));
        assert_eq!(benches_of(&args("cargo build")), None);
    }

    #[test]
    fn benches_of_one_invocation_share_a_folder_and_the_last_knows_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let inv = Invocation {
            key: format!("{}-1", u32::MAX),
            benches: Some(vec!["depth".into(), "moe".into()]),
        };
        let a = run_dir(root, Some("x"), Some(&inv)).unwrap();
        assert!(!finish(root, "depth", Some(&inv)).unwrap());
        let b = run_dir(root, Some("x"), Some(&inv)).unwrap();
        assert_eq!(a.path, b.path);
        assert!(finish(root, "moe", Some(&inv)).unwrap());
        // Another invocation gets another folder.
        let other = Invocation {
            key: format!("{}-2", u32::MAX),
            benches: None,
        };
        std::fs::create_dir_all(&a.path).unwrap();
        let c = run_dir(root, Some("x"), Some(&other)).unwrap();
        assert_ne!(a.path, c.path);
    }
}
