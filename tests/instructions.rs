//! `modelbench instructions`: instruction counts under valgrind repeat, and added work shows.
//!
//! On fixture:llama with a 16-token prompt and 8 new tokens (each valgrind run well under a
//! minute): two runs of the same binary give counts within 0.1% (prefill, decode and total;
//! the test prints both), the rerun compared with the first (`--baseline`) exits 0, and a run
//! with `MODELBENCH_INJECT_SLOWDOWN=decode:work=N` (N iterations of a fixed integer loop after
//! each decode step) exits 1 naming the benchmark and both counts, its prefill count
//! unchanged. Bad input fails with one line and exit 2, before valgrind, writing nothing.
//!
//! It counts on any x86-64 machine: where this build has AVX-512 target features (the
//! `target-cpu=native` build on an AVX-512 CPU; valgrind cannot execute AVX-512) it counts a
//! valgrind-safe build of the same commit instead, `-C target-cpu=x86-64-v3` in target/valgrind
//! (the `dev` profile, as `cargo test`'s), which it builds itself and states the build's time;
//! `.ci/run` builds it before `cargo test`, so there the test's `cargo build` is a no-op.
//! Without valgrind it goes through tests/common's skip rule (MODELBENCH_REQUIRE_VALGRIND; under
//! CI=true it fails).

mod common;
use common::text;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use modelbench::output::instructions::{read, InstrRecord};

const SHAPE: [&str; 6] = [
    "--model",
    "fixture:llama",
    "--prompt-tokens",
    "16",
    "--max-new-tokens",
    "8",
];

/// Iterations of the injected loop after each decode step: a few tens of thousands of
/// instructions per step, a fraction of a percent of a decode step of the fixture, and
/// several times the 0.1% tolerance.
const WORK: u64 = 20_000;

/// The binary with no injected slowdown from the caller's shell.
fn bin() -> Command {
    let mut c = common::bin();
    c.env_remove("MODELBENCH_INJECT_SLOWDOWN");
    c
}

/// The modelbench binary valgrind counts: this build's, or where this build has AVX-512 a
/// valgrind-safe build of the same sources (see the module docs); None after tests/common's
/// skip rule where valgrind is missing.
fn countable_binary() -> Option<PathBuf> {
    if let Err(e) = modelbench::measure::instructions::valgrind_version() {
        common::skip_unless_required(
            "MODELBENCH_REQUIRE_VALGRIND",
            "instruction counts",
            &e.to_string(),
        );
        return None;
    }
    let native = PathBuf::from(env!("CARGO_BIN_EXE_modelbench"));
    if !modelbench::measure::instructions::built_with_avx512() {
        return Some(native);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join(modelbench::measure::instructions::SAFE_TARGET_DIR);
    let rustflags = format!(
        "-C target-cpu={}",
        modelbench::measure::instructions::SAFE_TARGET_CPU
    );
    let t = std::time::Instant::now();
    let o = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .current_dir(root)
        .args(["build", "--bin", "modelbench"])
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", &rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the valgrind-safe build (RUSTFLAGS='{rustflags}' CARGO_TARGET_DIR={} cargo build --bin modelbench) failed:\n{}",
        target.display(),
        text(&o)
    );
    eprintln!(
        "this build has AVX-512 target features ({}), which valgrind cannot execute: counting the valgrind-safe build of the same sources instead (RUSTFLAGS='{rustflags}', {}), cargo build took {:.1} s",
        modelbench::measure::instructions::target_features(),
        target.display(),
        t.elapsed().as_secs_f64()
    );
    let bin = target.join("debug/modelbench");
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    Some(bin)
}

fn count(binary: &Path, out: &Path, extra: &[&str], inject: Option<&str>) -> Output {
    let mut c = bin();
    c.arg("instructions")
        .args(SHAPE)
        .arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .args(extra);
    if let Some(i) = inject {
        c.env("MODELBENCH_INJECT_SLOWDOWN", i);
    }
    c.output().unwrap()
}

fn one(path: &Path) -> InstrRecord {
    let mut v = read(path).unwrap();
    assert_eq!(v.len(), 1, "{}", path.display());
    v.remove(0)
}

fn within(a: u64, b: u64, tol: f64) -> bool {
    (a as f64 / b as f64 - 1.0).abs() <= tol
}

#[test]
fn counts_repeat_and_added_decode_work_is_flagged() {
    let Some(binary) = countable_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("c.jsonl"),
    );
    let o = count(&binary, &a, &[], None);
    assert!(o.status.success(), "first count failed:\n{}", text(&o));
    let base = one(&a);
    let o = count(&binary, &b, &["--baseline", a.to_str().unwrap()], None);
    let again = one(&b);
    eprintln!(
        "fixture:llama p16 g8, same binary twice: prefill (1-token generation) {} / {}, decode (7 steps) {} / {}, total {} / {} instructions",
        base.counts.first_token,
        again.counts.first_token,
        base.counts.decode(),
        again.counts.decode(),
        base.counts.all_tokens,
        again.counts.all_tokens
    );
    for (what, x, y) in [
        ("prefill", base.counts.first_token, again.counts.first_token),
        ("decode", base.counts.decode(), again.counts.decode()),
        ("total", base.counts.all_tokens, again.counts.all_tokens),
    ] {
        assert!(
            within(y, x, 0.001),
            "{what}: {x} then {y} instructions, more than 0.1% apart"
        );
    }
    assert_eq!(
        o.status.code(),
        Some(0),
        "an unchanged rerun must pass the baseline:\n{}",
        text(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("every count within 0.1%"));

    let inject = format!("decode:work={WORK}");
    let o = count(
        &binary,
        &c,
        &["--baseline", a.to_str().unwrap()],
        Some(&inject),
    );
    let slow = one(&c);
    let out = text(&o);
    eprintln!(
        "with {inject}: decode {} -> {} instructions (+{}), prefill {} -> {}",
        base.counts.decode(),
        slow.counts.decode(),
        slow.counts.decode() as i64 - base.counts.decode() as i64,
        base.counts.first_token,
        slow.counts.first_token
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "added decode work must fail the baseline:\n{out}"
    );
    assert_eq!(slow.injected.as_deref(), Some(inject.as_str()));
    // The message names the benchmark and both counts.
    let line = out
        .lines()
        .find(|l| l.contains(" decode: ") && l.contains("DIFFERS"))
        .unwrap_or_else(|| panic!("no decode line marked DIFFERS:\n{out}"));
    assert!(
        line.contains("custom-p16-g8/cpu-f32/fixture:llama"),
        "{line}"
    );
    let digits = |v: u64| {
        let s = v.to_string();
        let mut o = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                o.push(',');
            }
            o.push(ch);
        }
        o
    };
    assert!(
        line.contains(&digits(base.counts.decode()))
            && line.contains(&digits(slow.counts.decode())),
        "{line}"
    );
    // The work goes after decode steps only: the 1-token generation is unchanged, and the
    // decode steps grew by about WORK iterations each (at least 2 instructions apiece).
    assert!(
        within(slow.counts.first_token, base.counts.first_token, 0.001),
        "prefill moved: {} -> {}",
        base.counts.first_token,
        slow.counts.first_token
    );
    let added = slow.counts.decode() as i64 - base.counts.decode() as i64;
    assert!(
        added >= (2 * WORK * 7) as i64,
        "decode grew by only {added} instructions for 7 x {WORK} iterations"
    );
}

#[test]
fn bad_input_is_one_line_exit_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let missing = dir.path().join("no-such-baseline.jsonl");
    let not_records = dir.path().join("results.jsonl");
    std::fs::write(&not_records, "{\"schema\": 2, \"kind\": \"generation\"}\n").unwrap();
    for (args, needle) in [
        (vec!["--tolerance", "lots"], "--tolerance"),
        (
            vec!["--baseline", missing.to_str().unwrap()],
            "no-such-baseline.jsonl",
        ),
        (
            vec!["--baseline", not_records.to_str().unwrap()],
            "not an instructions record",
        ),
        (vec!["--scenario", "shortest"], "--scenario"),
    ] {
        let mut c = bin();
        c.arg("instructions")
            .args(["--model", "fixture:llama", "--out"])
            .arg(&out)
            .args(&args);
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}:\n{}", text(&o));
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line:\n{err}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
