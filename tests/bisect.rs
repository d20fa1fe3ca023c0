//! `modelbench bisect` in a scratch git repository: five commits whose committed `work` file
//! tells the run script how many CPU-burning loops to run beside the benchmark (real work
//! competing for the cores, so the benchmark itself is slower with the same shape and key);
//! commit 4 of 5 turns it on (6 loops on this 2-core machine: well beyond the 50% threshold,
//! while unchanged commits stay far below it; 2 loops were tried and slowed some runs 3x,
//! others 1.3x). Bisect must name that commit.

use std::path::Path;
use std::process::Command;

fn git(repo: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn head(repo: &Path) -> String {
    let o = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The two bisections of this file run one at a time: the first one's busy loops would
/// otherwise share the cores with the second's paired measurements (seen: the paired GOOD
/// vs BAD check missed its 30% slowdown beside six busy loops).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `modelbench bisect ARGS` in `repo` (reports under `reports`); asserts it succeeded and
/// named `first` with `subject`, and that the repository is back on `last`, not bisecting.
/// Returns what it printed.
fn bisect_names(
    repo: &Path,
    reports: &Path,
    args: &[&str],
    first: &str,
    subject: &str,
    last: &str,
) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .arg("bisect")
        .args(args)
        .current_dir(repo)
        .env("MB", env!("CARGO_BIN_EXE_modelbench"))
        .env("MODELBENCH_REPORTS", reports)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("MODELBENCH_INJECT_SLOWDOWN")
        .env_remove("MODELBENCH_INJECT_NUMERIC")
        .env_remove("MODELBENCH_DB")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains(&format!("first bad commit: {first} {subject}")),
        "{out}\n{err}"
    );
    assert_eq!(head(repo), last);
    assert!(!repo.join(".git/BISECT_LOG").exists());
    out
}

/// The benchmark: fixture:llama, 16 prompt + 32 generated tokens, 60 trials (about 2.5 s
/// unloaded: with 9 trials, 0.35 s, one burst of the VM's host load covered a whole run and an
/// unchanged commit was flagged 1.74x in a cold CI run); with `work` = N, N busy loops run
/// beside it for its whole duration.
const RUN_SH: &str = r#"#!/bin/sh
n=$(cat work)
pids=""
i=0
while [ "$i" -lt "$n" ]; do
  ( while :; do :; done ) &
  pids="$pids $!"
  i=$((i + 1))
done
"$MB" run --model fixture:llama --prompt-tokens 16 --max-new-tokens 32 --warmup 1 --trials 60 --label bisect >/dev/null
rc=$?
[ -n "$pids" ] && kill $pids
exit $rc
"#;

#[test]
fn bisect_names_the_slowed_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("run.sh"), RUN_SH).unwrap();
    let mut commits = Vec::new();
    for (i, work) in [0, 0, 0, 6, 6].iter().enumerate() {
        std::fs::write(repo.join("work"), format!("{work}\n")).unwrap();
        std::fs::write(repo.join("notes"), format!("change {i}\n")).unwrap();
        git(&repo, &["add", "."]);
        git(
            &repo,
            &["commit", "-q", "-m", &format!("commit {i}: work {work}")],
        );
        commits.push(head(&repo));
    }
    let reports = tmp.path().join("reports");
    let t0 = std::time::Instant::now();
    let out = bisect_names(
        &repo,
        &reports,
        &[
            &commits[0],
            &commits[4],
            "--bench",
            "custom-p16-g32",
            "--threshold",
            "50%",
            "--build",
            "true",
            "--run",
            "sh run.sh",
        ],
        &commits[3],
        "commit 3: work 6",
        &commits[4],
    );
    assert!(out.contains("Regression"), "its numbers: {out}");
    eprintln!("{out}bisect took {:.1} s", t0.elapsed().as_secs_f64());
}

/// A scratch repository under `tmp` with one commit per value, each writing the value to
/// `file` (and a line to `notes`), subject `commit <i>: <value>`; returns it and the commits.
fn setting_commits(tmp: &Path, file: &str, values: &[&str]) -> (std::path::PathBuf, Vec<String>) {
    let repo = tmp.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let mut commits = Vec::new();
    for (i, v) in values.iter().enumerate() {
        std::fs::write(repo.join(file), format!("{v}\n")).unwrap();
        std::fs::write(repo.join("notes"), format!("change {i}\n")).unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", &format!("commit {i}: {v}")]);
        commits.push(head(&repo));
    }
    (repo, commits)
}

/// The build of the paired bisection's scratch commits: a `modelbench` that is this test's
/// binary with the commit's `inject` file as MODELBENCH_INJECT_SLOWDOWN (a real, measured
/// slowdown inside the timed region of the commits that carry one).
const PAIRED_BUILD: &str = r#"mkdir -p target/release && printf '#!/bin/sh\nMODELBENCH_INJECT_SLOWDOWN=%s exec "$MB" "$@"\n' "$(cat inject)" > target/release/modelbench && chmod +x target/release/modelbench"#;

/// `bisect --paired`: each commit's executable kept, every verdict a paired A/B of GOOD's
/// workers against the commit's, in looks of 10 pairs up to 40 (the default 4 x --pairs).
/// Commit 2 of 4 adds a 30% decode slowdown; bisect names it.
#[test]
fn bisect_paired_names_the_slowed_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, commits) = setting_commits(
        tmp.path(),
        "inject",
        &["off", "off", "decode:30%", "decode:30%"],
    );
    let reports = tmp.path().join("reports");
    let out = bisect_names(
        &repo,
        &reports,
        &[
            &commits[0],
            &commits[3],
            "--bench",
            "short/cpu-f32/fixture:llama",
            "--paired",
            "--pairs",
            "10",
            "--threshold",
            "10%",
            "--build",
            PAIRED_BUILD,
        ],
        &commits[2],
        "commit 2: decode:30%",
        &commits[3],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("| short | decode |") && l.ends_with("| Regression |")),
        "its paired table: {out}"
    );
    // The executables were kept, one per measured commit.
    let kept = std::fs::read_dir(&reports)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("bisect-"))
        .expect("the bisection's folder");
    assert!(kept
        .path()
        .join(&commits[0][..10])
        .join("modelbench")
        .is_file());
}

/// As [`PAIRED_BUILD`], with the commit's `numeric` file as MODELBENCH_INJECT_NUMERIC: a real
/// change of what the model computes (its logits scaled), its speed the same.
const NUMERIC_BUILD: &str = r#"mkdir -p target/release && printf '#!/bin/sh\nMODELBENCH_INJECT_NUMERIC=%s exec "$MB" "$@"\n' "$(cat numeric)" > target/release/modelbench && chmod +x target/release/modelbench"#;

/// `bisect --outputs` (issue 59): the first commit whose outputs changed, by the output
/// verdict taken inside each paired comparison (one look of 5 pairs: the speed is not what is
/// asked). Commit 2 of 4 scales the logits by 1.005 (every greedy id stays, the probe moves);
/// bisect names it. GOOD against itself would be "nothing to bisect".
#[test]
fn bisect_outputs_names_the_commit_that_changed_the_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, commits) = setting_commits(
        tmp.path(),
        "numeric",
        &["off", "off", "lm_head:0.5%", "lm_head:0.5%"],
    );
    let reports = tmp.path().join("reports");
    let out = bisect_names(
        &repo,
        &reports,
        &[
            &commits[0],
            &commits[3],
            "--bench",
            "short/cpu-f32/fixture:llama",
            "--outputs",
            "--pairs",
            "5",
            "--max-pairs",
            "5",
            "--build",
            NUMERIC_BUILD,
        ],
        &commits[2],
        "commit 2: lm_head:0.5%",
        &commits[3],
    );
    assert!(out.contains("outputs short: OUTPUTS CHANGED ("), "{out}");
}

/// `bisect --candle-repo` for real: a Candle history of six commits on the registry's
/// candle-nn 0.11.1 (as published; a comment; a commit that does not build; its fix; a 100 us
/// busy-wait in `softmax_last_dim`; a README line). This repository's HEAD is built against
/// each commit the search asks for and run paired on the fixture Gemma 3: the broken commit
/// must be skipped with its one-line build error and the busy-wait named.
#[test]
#[ignore = "builds this repository's HEAD against five Candle commits (about 40 min on 2 cores, more than CI's budget); run with --ignored"]
fn bisect_candle_repo_skips_the_broken_commit_and_names_the_slowed_one() {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"));
    let nn = std::fs::read_dir(home.join("registry/src"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("candle-nn-0.11.1"))
        .find(|p| p.is_dir())
        .expect("the registry's candle-nn 0.11.1 (cargo fetch)");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("candle");
    std::fs::create_dir_all(&repo).unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg(&nn)
        .arg(repo.join("candle-nn"))
        .status()
        .unwrap();
    assert!(st.success());
    git(&repo, &["init", "-q", "-b", "main"]);
    let lib = repo.join("candle-nn/src/lib.rs");
    let ops = repo.join("candle-nn/src/ops.rs");
    let text = |p: &Path| std::fs::read_to_string(p).unwrap();
    let original = text(&lib);
    // One commit each: its subject and the edit that makes it.
    type Edit<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let edits: [Edit; 6] = [
        ("candle-nn 0.11.1 as published", Box::new(|| {})),
        (
            "a comment",
            Box::new(|| std::fs::write(&lib, format!("{original}// a comment\n")).unwrap()),
        ),
        (
            "a commit that does not build",
            Box::new(|| {
                std::fs::write(&lib, format!("{original}this does not compile\n")).unwrap()
            }),
        ),
        (
            "fix the build",
            Box::new(|| std::fs::write(&lib, &original).unwrap()),
        ),
        (
            "softmax_last_dim: busy-wait 100 us a call",
            Box::new(|| {
                let slowed = text(&ops).replacen(
                    "pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {\n",
                    "pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {\n    let t0 = std::time::Instant::now();\n    while t0.elapsed() < std::time::Duration::from_micros(100) {\n        std::hint::spin_loop();\n    }\n",
                    1,
                );
                assert_ne!(slowed, text(&ops), "softmax_last_dim moved in candle-nn");
                std::fs::write(&ops, slowed).unwrap();
            }),
        ),
        (
            "README: a line",
            Box::new(|| {
                let readme = repo.join("candle-nn/README.md");
                std::fs::write(&readme, format!("{}a line\n", text(&readme))).unwrap()
            }),
        ),
    ];
    let mut commits = Vec::new();
    for (subject, edit) in &edits {
        edit();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", subject]);
        commits.push(head(&repo));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args(["bisect", &commits[0], &commits[5], "--candle-repo"])
        .arg(&repo)
        .args(["--bench", "short/cpu-f32/gguf:fixture:gemma3"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MODELBENCH_REPORTS", tmp.path().join("reports"))
        .env("HF_HUB_OFFLINE", "1")
        .env("MODELBENCH_DB", "off")
        .env_remove("MODELBENCH_INJECT_SLOWDOWN")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "first bad Candle commit: {} softmax_last_dim: busy-wait 100 us a call",
            commits[4]
        )),
        "{out}\n{err}"
    );
    assert!(
        out.contains(&format!(
            "{} a commit that does not build: skip (Candle {}: the suite does not build against Candle",
            &commits[2][..10],
            &commits[2][..10]
        )),
        "{out}"
    );
}
