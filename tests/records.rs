//! Records and run folders: round trip, the summary table, atomic writes, unusable input.

use std::path::Path;
use std::process::Command;

use modelbench::output::record::{Kind, Precision, Record};
use modelbench::output::report::{read_run, table, write_artifacts};

fn record(scenario: &str, model: &str, samples: &[f64], tokens: u64) -> Record {
    let mut r = Record::from_samples(Kind::Generation, scenario, samples.to_vec(), tokens);
    r.model.label = model.into();
    r.dtype = Precision::Float(candle_core::DType::F32);
    r.device = "cpu".into();
    r.prompt_tokens = Some(64);
    r.new_tokens = Some(tokens as usize);
    r.sampling_desc = "greedy".into();
    r
}

#[test]
fn record_round_trips_through_a_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = vec![
        record("short", "a", &[0.5, 0.4, 0.6], 64),
        record("short", "b", &[1.0, 1.0, 1.0], 64),
    ];
    write_artifacts(tmp.path(), &recs).unwrap();
    assert_eq!(read_run(tmp.path()).unwrap(), recs);
    let csv = std::fs::read_to_string(tmp.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
}

#[test]
fn summary_table_from_known_records() {
    // median 0.5 s for 64 tokens -> 128.0 tok/s; 1.0 s -> 64.0
    let recs = vec![
        record("short", "a", &[0.5, 0.4, 0.6], 64),
        record("short", "b", &[1.0, 1.0, 1.0], 64),
        record("medium", "a", &[2.0], 256),
    ];
    let t = table(&recs);
    assert!(
        t.contains("| Scenario | Prompt | Gen | Sampling | a (f32) | b (f32) |"),
        "{t}"
    );
    assert!(
        t.contains("| short | 64 | 64 | greedy | 128.0 | 64.0 |"),
        "{t}"
    );
    assert!(
        t.contains("| medium | 64 | 256 | greedy | 128.0 | - |"),
        "{t}"
    );
}

#[test]
fn a_killed_run_leaves_readable_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args([
            "run",
            "--suite",
            "full",
            "--model",
            "fixture:llama",
            "--warmup",
            "0",
            "--trials",
            "2",
            "--label",
            "killed",
        ])
        .env("MODELBENCH_REPORTS", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first record, then kill mid-run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let dir = loop {
        let found = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.join("results.jsonl").is_file());
        if let Some(d) = found {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "no record written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::thread::sleep(std::time::Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();
    let recs = read_run(&dir).unwrap();
    assert!(
        !recs.is_empty() && recs.len() < 7,
        "killed mid-run: {}",
        recs.len()
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(summary["records"].as_u64().unwrap() >= 1);
}

fn compare_code(base: &Path, new: &Path, extra: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .arg("compare")
        .arg(base)
        .arg(new)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn compare_refuses_unusable_input_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let other_hw = tmp.path().join("b");
    let empty = tmp.path().join("empty");
    write_artifacts(&a, &[record("short", "m", &[1.0, 1.1, 0.9], 64)]).unwrap();
    let mut r = record("short", "m", &[1.0, 1.1, 0.9], 64);
    r.hardware.cpu = "Some Other CPU".into();
    write_artifacts(&other_hw, &[r]).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("results.jsonl"), "").unwrap();

    let (code, e) = compare_code(&a, &other_hw, &[]);
    assert_eq!(code, 2, "{e}");
    assert!(
        e.contains("different hardware") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(compare_code(&a, &other_hw, &["--force"]).0, 0);
    let (code, e) = compare_code(&a, &empty, &[]);
    assert_eq!(code, 2);
    assert!(e.contains("no records"), "{e}");
    let (code, e) = compare_code(&a, &tmp.path().join("missing"), &[]);
    assert_eq!(code, 2);
    assert!(e.contains("not a run folder"), "{e}");
    let (code, e) = compare_code(&a, &a, &["--threshold", "lots"]);
    assert_eq!(code, 2);
    assert!(e.contains("--threshold"), "{e}");
}
