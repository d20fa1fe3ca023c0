//! `modelbench compare` on real runs: a truly slower run (one thread instead of two, on a
//! prefill-heavy shape: about 1.5x slower here) is flagged with exit 1; two runs of the same
//! configuration are not. One test per binary, so no other test competes for the cores.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(reports: &Path, label: &str, threads: &str) -> PathBuf {
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args([
            "run",
            "--model",
            "fixture:qwen3",
            "--prompt-tokens",
            "1024",
            "--max-new-tokens",
            "4",
        ])
        .args(["--warmup", "1", "--trials", "7", "--label", label])
        .env("MODELBENCH_REPORTS", reports)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_dir(reports)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(label))
        .unwrap()
}

fn compare(base: &Path, new: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args([
            "compare",
            base.to_str().unwrap(),
            new.to_str().unwrap(),
            "--threshold",
            "5%",
        ])
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn compare_flags_a_truly_slower_run_and_not_a_rerun() {
    if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        < 2
    {
        eprintln!("skipped: needs 2 cores to make a one-thread run slower");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fast = run(tmp.path(), "fast", "2");
    let again = run(tmp.path(), "again", "2");
    let slow = run(tmp.path(), "slow", "1");
    let (code, out) = compare(&fast, &slow);
    assert_eq!(code, 1, "one thread must be flagged:\n{out}");
    assert!(out.contains("Regression"), "{out}");
    let (code, out) = compare(&fast, &again);
    assert_eq!(code, 0, "a rerun must not be flagged:\n{out}");
}
