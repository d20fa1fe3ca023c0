//! The one skip rule of the suite (tests/common's `skip_or_fail`, docs/testing.md "Skips"),
//! seen from outside: this binary runs its own ignored tests that skip, under each
//! environment, and checks which pass (a skip, its line in MODELBENCH_SKIP_LOG) and which fail.

mod common;

use std::path::Path;
use std::process::Command;

/// Skips for a cause inside the project, covered by a REQUIRE knob.
#[test]
#[ignore = "run by skips_fail_under_ci_unless_outside_the_project"]
fn skip_inside_the_project() {
    common::skip_unless_required(
        "MODELBENCH_REQUIRE_QUALITY",
        "the thing",
        "not installed (demo)",
    );
}

/// Skips for a cause outside the project (the caller's probe says so).
#[test]
#[ignore = "run by skips_fail_under_ci_unless_outside_the_project"]
fn skip_outside_the_project() {
    common::skip_or_fail(
        "the registry",
        "unreachable (demo probe: HTTP 000)",
        true,
        None,
    );
}

/// Runs one of the ignored tests above with `env` (and no CI/REQUIRE variables of the
/// caller's); true when it passed.
fn run(test: &str, env: &[(&str, &str)], log: &Path) -> bool {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--ignored", "--exact", test])
        .env_remove("CI")
        .env_remove("MODELBENCH_REQUIRE_QUALITY")
        .env("MODELBENCH_SKIP_LOG", log);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let out = common::text(&o);
    assert!(
        out.contains("1 passed") || out.contains("1 failed"),
        "{out}"
    );
    o.status.success()
}

#[test]
fn skips_fail_under_ci_unless_outside_the_project() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("skips.txt");
    let inside = "skip_inside_the_project";
    let outside = "skip_outside_the_project";
    for (test, env, passes) in [
        (inside, vec![], true),
        (inside, vec![("CI", "true")], false),
        (inside, vec![("CI", "1")], false),
        (inside, vec![("CI", "false")], true),
        // The knob through the table's parser: `true` counts as `1`.
        (inside, vec![("MODELBENCH_REQUIRE_QUALITY", "true")], false),
        (inside, vec![("MODELBENCH_REQUIRE_QUALITY", "1")], false),
        // CI decided the cause is outside (its probe found the registry unreachable).
        (
            inside,
            vec![("CI", "true"), ("MODELBENCH_REQUIRE_QUALITY", "0")],
            true,
        ),
        (outside, vec![("CI", "true")], true),
        (outside, vec![], true),
    ] {
        let _ = std::fs::remove_file(&log);
        let passed = run(test, &env, &log);
        assert_eq!(passed, passes, "{test} with {env:?}");
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        if passes {
            assert_eq!(logged.lines().count(), 1, "{test} with {env:?}: {logged}");
            assert!(
                logged.starts_with(&format!("skip: skip_rule::{test}: ")),
                "{logged}"
            );
        } else {
            assert!(logged.is_empty(), "a failure is not a skip: {logged}");
        }
    }
    // A value that is not a boolean fails, naming the knob.
    assert!(!run(
        inside,
        &[("MODELBENCH_REQUIRE_QUALITY", "required")],
        &log
    ));
}

/// The test targets `cargo test` leaves out (`test = false` in Cargo.toml: they need a real
/// model, llama.cpp or many timed pairs) and the ones `.ci/run` names in its step that runs
/// them: each left-out target must be run there, or CI would pass without it.
fn left_out_and_run_by_ci(manifest: &str, ci: &str) -> (Vec<String>, Vec<String>) {
    let mut left_out = Vec::new();
    for block in manifest.split("[[test]]").skip(1) {
        let block = block.split("\n[").next().unwrap_or("");
        let field = |k: &str| {
            block.lines().find_map(|l| {
                let (key, v) = l.split_once('=')?;
                (key.trim() == k).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if field("test").as_deref() == Some("false") {
            left_out.extend(field("name"));
        }
    }
    let line = ci
        .lines()
        .find(|l| l.trim_start().starts_with("heavy_tests="))
        .unwrap_or("");
    let run = line
        .split_once('=')
        .map(|(_, v)| v.trim_matches(|c| c == '"' || c == '(' || c == ')'))
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (left_out, run)
}

#[test]
fn every_test_target_cargo_test_leaves_out_is_run_by_ci() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let (left_out, run) = left_out_and_run_by_ci(&manifest, &ci);
    assert!(
        left_out.len() >= 5,
        "found only {left_out:?} with `test = false` in Cargo.toml: the reader is broken"
    );
    let missing: Vec<&String> = left_out.iter().filter(|t| !run.contains(t)).collect();
    assert!(
        missing.is_empty(),
        "Cargo.toml leaves {missing:?} out of `cargo test` (test = false) but .ci/run's \
         heavy_tests does not run them: add them there"
    );
    for t in &run {
        assert!(
            root.join("tests").join(format!("{t}.rs")).exists(),
            ".ci/run's heavy_tests names `{t}`, which is no file in tests/"
        );
    }
    // Both sides: a target dropped from CI's list is reported.
    let ci_without = ci.replace(&format!(" {}", left_out[0]), " ");
    let ci_without = ci_without.replace(&format!("({} ", left_out[0]), "(");
    let (_, run_without) = left_out_and_run_by_ci(&manifest, &ci_without);
    assert!(
        !run_without.contains(&left_out[0]),
        "the check cannot see a target dropped from .ci/run: {run_without:?}"
    );
}
