//! `modelbench compare --paired`: two workers of this very binary (nothing is built), the
//! short and medium scenarios of fixture:llama, trials alternated ABBA. An A/A comparison
//! flags nothing (exit 0); the same with a large injected decode slowdown in B only
//! (`--inject decode:60%`, large so the test holds on a noisy CI machine) is flagged on the
//! decode metric (exit 1). It was 30% until CI run 51: there the medium scenario's 12 per-pair
//! ratios spread so wide (median 1.297x, 95% CI [1.037, 1.765]) that the interval's low end
//! fell below the 10% threshold; on this machine the same run gave [1.168, 1.580]. The
//! verdict was right to hold back on that data; the test asks for a change the CI machine's
//! noise cannot hide (the 5% calibration of the default gate is README's table, not this
//! test). Checked to fail when B's injection is dropped (no regression) and when the verdict
//! ignores the interval's low end. Sequential design: looks of 12 pairs up to 24 (two looks,
//! 97.5% intervals each); the summary says where it stopped. The output verdict is taken in
//! the same pairs: `same` in the A/A run and beside the injected slowdown, `OUTPUTS CHANGED`
//! (exit 1) with `--inject-numeric lm_head:0.5%` in B only (one look of 6 pairs: the speed
//! verdict does not decide it, the probe does).

mod common;

use std::process::Command;

fn paired(reports: &std::path::Path, inject: Option<&str>) -> (i32, String) {
    paired_with(reports, inject, ("12", "24", "4"), &[])
}

/// `(pairs, max_pairs, blocks)`, then `extra` arguments.
fn paired_with(
    reports: &std::path::Path,
    inject: Option<&str>,
    (pairs, max_pairs, blocks): (&str, &str, &str),
    extra: &[&str],
) -> (i32, String) {
    let exe = env!("CARGO_BIN_EXE_modelbench");
    let mut c = Command::new(exe);
    // A 10% threshold (the default is 1%): this test runs beside other tests on a loaded CI
    // machine; the 2% default's calibration is README's measured table.
    c.args([
        "compare",
        exe,
        exe,
        "--paired",
        "--pairs",
        pairs,
        "--max-pairs",
        max_pairs,
        "--blocks",
        blocks,
        "--threshold",
        "10%",
    ])
    .env("MODELBENCH_REPORTS", reports)
    .env("HF_HUB_OFFLINE", "1")
    .env_remove("MODELBENCH_INJECT_SLOWDOWN")
    .env_remove("MODELBENCH_INJECT_NUMERIC");
    if let Some(i) = inject {
        c.args(["--inject", i]);
    }
    c.args(extra);
    common::code_and_output(&c.output().unwrap())
}

#[test]
fn paired_a_a_is_silent_and_an_injected_decode_slowdown_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = paired(tmp.path(), None);
    assert_eq!(code, 0, "A/A must not be flagged:\n{out}");
    assert!(out.contains("0 regression(s)"), "{out}");
    // The output verdict inside the same pairs (issue 59): both builds compute the same.
    for s in ["short", "medium"] {
        assert!(out.contains(&format!("outputs {s}: same (")), "{out}");
    }
    let (code, out) = paired(tmp.path(), Some("decode:60%"));
    assert_eq!(code, 1, "a 60% decode slowdown must be flagged:\n{out}");
    let decode_rows: Vec<&str> = out.lines().filter(|l| l.contains("| decode |")).collect();
    assert_eq!(decode_rows.len(), 2, "{out}");
    assert!(
        decode_rows.iter().all(|l| l.ends_with("| Regression |")),
        "{out}"
    );
    assert!(
        out.contains("injected slowdown in B only (calibration): decode:60%"),
        "{out}"
    );
    // Slower, and the same outputs: a speed verdict beside `same`.
    for s in ["short", "medium"] {
        assert!(out.contains(&format!("outputs {s}: same (")), "{out}");
    }
    assert!(
        out.contains(
            "97.50% intervals at each of at most 2 look(s), 95% overall; stopped after look"
        ),
        "{out}"
    );
    // The logits scaled by 1.005 in B only (`--inject-numeric`, one short look): every
    // greedy id stays, the probe moves: OUTPUTS CHANGED, exit 1, whatever the speed says.
    let (code, out) = paired_with(
        tmp.path(),
        None,
        ("6", "6", "1"),
        &["--inject-numeric", "lm_head:0.5%"],
    );
    assert_eq!(code, 1, "a numeric change must fail the comparison:\n{out}");
    for s in ["short", "medium"] {
        assert!(
            out.contains(&format!("outputs {s}: OUTPUTS CHANGED (")),
            "{out}"
        );
    }
    assert!(
        out.contains("injected numeric change in B only (calibration): lm_head:0.5%"),
        "{out}"
    );
    assert!(out.contains("2 scenario(s) OUTPUTS CHANGED"), "{out}");
    // fixture:llama is safetensors: no llama.cpp verdict, and the report says why.
    assert!(
        out.contains("NEW against llama.cpp: not available: fixture:llama is not a GGUF model"),
        "{out}"
    );
    // Bad input: too few pairs, exit 2 with one line.
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args(["compare", "HEAD", "HEAD", "--paired", "--pairs", "2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pairs 2"));
    // A cap below one look: exit 2 naming both.
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args([
            "compare",
            "HEAD",
            "HEAD",
            "--paired",
            "--pairs",
            "12",
            "--max-pairs",
            "6",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--max-pairs 6") && err.contains("--pairs 12"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The decode slowdown [the pairing check](lockstep_pairs_flag_an_injected_decode_slowdown_in_20_of_20_tries_and_no_a_a)
/// injects in B.
const CI_INJECT: &str = "30%";

/// Issue 64's CI check of the pairing itself: 20 tries of `compare --paired` on the short
/// scenario with a decode slowdown of [`CI_INJECT`] injected in B (one look of 6 pairs, each
/// in its own block of fresh workers, the 10% threshold) must each flag decode, and 3 A/A tries
/// must each flag nothing; B's prefill, untouched, must read about 1x over the 20 tries. A
/// pairing that mixed up the sides or the pairs would read about 1x
/// or 1/(1 + the slowdown) and fail. The history of the injected size: first written as 20
/// tries of 20% at 5%, which missed 1 and then 2 of 20 (short decode 1.195x [1.043, 1.300]
/// and 1.240x [0.945, 1.407], Undecided: six blocks' per-process offsets make a wide interval
/// in the test build); then 10 tries of 50% (a loosening, said in the note of 2026-11-28);
/// now 20 tries again, of 30%: flagged in 20 of 20 here under the CI's own load
/// (RUST_TEST_THREADS=1, the test profile; decode intervals about ±2%, docs/verdicts.md).
/// Between 20% (missed, before the workers' start was changed) and 30%, no size was tried.
/// On the AVX-512 VM of 2026-11-29 it missed 3 of 20 (e.g. 1.300x [1.052, 1.547], Undecided)
/// while the two workers of a block drew huge pages unequally after builds; since every worker
/// collapses its memory into huge pages (`measure::memory::collapse_huge_pages`) it passed 20
/// of 20 there (233 s). The size was not changed.
#[test]
fn lockstep_pairs_flag_an_injected_decode_slowdown_in_20_of_20_tries_and_no_a_a() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_modelbench");
    let try_once = |inject: Option<&str>| {
        let mut c = Command::new(exe);
        c.args(["compare", exe, exe, "--paired", "--paired-suite", "short"])
            .args(["--pairs", "6", "--max-pairs", "6", "--blocks", "6"])
            .args(["--threshold", "10%", "--no-reference"])
            .env("MODELBENCH_REPORTS", tmp.path())
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("MODELBENCH_INJECT_SLOWDOWN")
            .env_remove("MODELBENCH_INJECT_NUMERIC");
        if let Some(i) = inject {
            c.args(["--inject", i]);
        }
        common::code_and_output(&c.output().unwrap())
    };
    let mut missed = Vec::new();
    let mut prefill = Vec::new();
    let inject = format!("decode:{CI_INJECT}");
    for k in 0..20 {
        let (code, out) = try_once(Some(&inject));
        let row = out
            .lines()
            .find(|l| l.starts_with("| short | decode |"))
            .unwrap_or("no decode row")
            .to_string();
        // `| short | prefill | 6 | 0.984x | [..] | .. |`: B/A of the prefill, untouched by the
        // injection.
        let p: f64 = out
            .lines()
            .find(|l| l.starts_with("| short | prefill |"))
            .and_then(|l| l.split('|').nth(4))
            .and_then(|c| c.trim().trim_end_matches('x').parse().ok())
            .unwrap_or_else(|| panic!("no short prefill ratio in:\n{out}"));
        prefill.push(p);
        assert!(
            out.contains("lockstep (A's and B's decode steps alternating)"),
            "{out}"
        );
        assert!(out.contains("intervals resample blocks"), "{out}");
        eprintln!("try {k}: exit {code}: {row}");
        if code != 1 || !row.ends_with("| Regression |") {
            missed.push(format!("try {k}: exit {code}: {row}"));
        }
    }
    assert!(
        missed.is_empty(),
        "a {CI_INJECT} decode slowdown missed in {} of 20 tries:\n{}",
        missed.len(),
        missed.join("\n")
    );
    // A slowdown of B's decode must not read as a change of its prefill: workers started
    // together once gave the slower side's prefill warmer caches (0.933x with 2% injected;
    // `verdicts::worker::balance`). One try's interval is wide here, so the check is on the
    // median of the 20 tries' ratios.
    prefill.sort_by(f64::total_cmp);
    let median = (prefill[9] + prefill[10]) / 2.0;
    assert!(
        (0.97..=1.03).contains(&median),
        "B's short prefill read {median:.3}x over 20 tries with only its decode slowed: {prefill:?}"
    );
    for k in 0..3 {
        let (code, out) = try_once(None);
        assert_eq!(code, 0, "A/A try {k} flagged:\n{out}");
    }
}
