//! An interrupted run says so (issue 61 item 8): `kill -9` of a run between its benchmarks
//! leaves a folder without complete.json, shown as interrupted in the results database (once
//! a later run sees its owner gone) and in index.html; a run that ends is marked complete in
//! all three. That neither is a later run's baseline is tested in `output::summary` (the
//! `cargo bench` summary), `site` (history pages) and `compare` (runs of a commit).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{code_and_output, modelbench, modelbench_cmd, run_folder};

fn records_in(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// The state column of `db info`'s row of `run` (None: no row yet).
fn db_state_or_none(reports: &Path, run: &str) -> Option<String> {
    let o = modelbench(reports, &["db", "info"]);
    let (code, out) = code_and_output(&o);
    assert_eq!(code, 0, "{out}");
    let row = out.lines().find(|l| l.starts_with(&format!("| {run} |")))?;
    Some(
        row.trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap()
            .trim()
            .to_string(),
    )
}

fn db_state(reports: &Path, run: &str) -> String {
    db_state_or_none(reports, run).unwrap_or_else(|| panic!("no row of {run} in db info"))
}

#[test]
fn a_killed_run_is_interrupted_and_a_finished_one_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path();
    // Two benchmarks (short, then medium), each long enough to be killed between them.
    let mut child = modelbench_cmd(reports)
        .args([
            "run",
            "--model",
            "fixture:llama",
            "--suite",
            "quick",
            "--warmup",
            "0",
            "--trials",
            "20",
            "--label",
            "killed",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let killed = loop {
        let dir = std::fs::read_dir(reports)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("killed"));
        // Killed once its first record is in the folder and in the database (which the
        // folder's flush writes just after the files).
        let first = dir.filter(|d| {
            records_in(d) >= 1
                && db_state_or_none(reports, &d.file_name().unwrap().to_string_lossy()).is_some()
        });
        if let Some(d) = first {
            child.kill().unwrap(); // SIGKILL: nothing of the process runs after it
            child.wait().unwrap();
            break d;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no record in 600 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let name = killed.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(records_in(&killed), 1, "killed between its two benchmarks");
    assert!(killed.join("started.json").is_file());
    assert!(
        !killed.join("complete.json").exists(),
        "a killed run has no completion marker"
    );
    // Until a later run looks, the database knows only that it started.
    assert_eq!(db_state(reports, &name), "running");

    let o = modelbench(
        reports,
        &[
            "run",
            "--model",
            "fixture:llama",
            "--scenario",
            "short",
            "--warmup",
            "0",
            "--trials",
            "2",
            "--label",
            "finished",
        ],
    );
    let (code, out) = code_and_output(&o);
    assert_eq!(code, 0, "{out}");
    let finished = run_folder(reports, "finished");
    let done: serde_json::Value =
        serde_json::from_slice(&std::fs::read(finished.join("complete.json")).unwrap()).unwrap();
    assert_eq!(done["records"], 1, "{done}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(finished.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["state"], "complete");
    let fin = finished.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(db_state(reports, &fin), "complete");
    assert_eq!(
        db_state(reports, &name),
        "interrupted",
        "the later run's first push marks the gone run"
    );

    // index.html's Runs table says which is which.
    let html = std::fs::read_to_string(reports.join("index.html")).unwrap();
    let row = |run: &str| {
        html.lines()
            .find(|l| l.starts_with(&format!("<tr><td class=\"mono\">{run}</td>")))
            .unwrap_or_else(|| panic!("no Runs row of {run}"))
            .to_string()
    };
    assert!(row(&name).contains("INTERRUPTED"), "{}", row(&name));
    assert!(row(&fin).contains("<td>complete</td>"), "{}", row(&fin));
    assert!(!row(&fin).contains("INTERRUPTED"));
}
