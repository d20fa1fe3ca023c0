//! `modelbench compare` and `modelbench continuous` seen from outside. The verdict rules are
//! carried by the deterministic unit tests in crates/suite/src/output/compare.rs; here the CLI's exit
//! codes on synthetic run folders with known samples (no timing): 1 on a regression, 0
//! otherwise (also when the only finding is "insufficient samples"), 2 on unusable input;
//! and `continuous` comparing with the previous run and with a fixed baseline.

mod common;
use common::modelbench;

use std::path::{Path, PathBuf};

use modelbench::output::record::{Kind, Precision, Record};
use modelbench::output::report::{read_run, write_artifacts};

/// The tests that time real runs take turns: run side by side they load the 2 cores for each
/// other, and an unpaired verdict then measures the neighbour (the 2x check below once read
/// Unchanged that way while a build ran beside it).
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `n` samples around `center` with a fixed +-1% spread (deterministic, no RNG).
fn samples(center: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| center * (1.0 + 0.01 * (((i * 7) % 11) as f64 - 5.0) / 5.0))
        .collect()
}

fn record(name: &str, samples: Vec<f64>) -> Record {
    let mut r = Record::from_samples(Kind::Generation, "short", samples, 16);
    r.id = format!("short/cpu-f32/{name}");
    r.model.label = name.into();
    r.dtype = Precision::Float(candle_core::DType::F32);
    r.device = "cpu".into();
    r.sampling_desc = "greedy".into();
    r.shape = serde_json::json!({"prompt": 32, "gen": 16});
    r
}

/// A run folder with one record per (model, center, samples).
fn run_dir(root: &Path, name: &str, recs: &[(&str, f64, usize)]) -> PathBuf {
    let dir = root.join(name);
    let recs: Vec<Record> = recs
        .iter()
        .map(|(m, c, n)| record(m, samples(*c, *n)))
        .collect();
    write_artifacts(&dir, &recs).unwrap();
    dir
}

fn compare(base: &Path, new: &Path) -> (i32, String, String) {
    let o = modelbench(
        base.parent().unwrap(),
        &[
            "compare",
            base.to_str().unwrap(),
            new.to_str().unwrap(),
            "--threshold",
            "5%",
        ],
    );
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn compare_exit_codes_on_known_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = run_dir(t, "base", &[("a", 1.0, 10), ("b", 2.0, 10)]);
    let slower = run_dir(t, "slower", &[("a", 1.5, 10), ("b", 2.0, 10)]);
    let same = run_dir(t, "same", &[("a", 1.0, 10), ("b", 2.0, 10)]);
    let faster = run_dir(t, "faster", &[("a", 0.5, 10), ("b", 2.0, 10)]);
    let few_base = run_dir(t, "few-base", &[("a", 1.0, 3), ("b", 2.0, 10)]);
    let few_slow = run_dir(t, "few-slow", &[("a", 1.5, 3), ("b", 2.0, 10)]);

    let (code, out, err) = compare(&base, &slower);
    assert_eq!(code, 1, "x1.5 must be flagged:\n{out}{err}");
    assert!(
        out.contains("| Regression |") && out.contains("1 regression(s)"),
        "{out}"
    );

    let (code, out, err) = compare(&base, &same);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 regression(s), 0 improvement(s), 2 unchanged"),
        "{out}"
    );

    let (code, out, err) = compare(&base, &faster);
    assert_eq!(code, 0, "an improvement is no failure:\n{out}{err}");
    assert!(out.contains("| Improvement |"), "{out}");

    // x1.5 slower on 3 samples a side: no verdict, said so, exit 0.
    let (code, out, err) = compare(&few_base, &few_slow);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("insufficient samples (3, 3); need >= 5 a side")
            && out.contains("1 with insufficient samples")
            && out.contains("0 regression(s)"),
        "{out}"
    );

    // A benchmark of the base run missing from the new run fails (exit 1), named, unless
    // --allow-missing; one only in the new run does not.
    let only_a = run_dir(t, "only-a", &[("a", 1.0, 10)]);
    let (code, out, err) = compare(&base, &only_a);
    assert_eq!(code, 1, "a missing benchmark must fail:\n{out}{err}");
    assert!(
        out.contains("missing from the new run (fails the comparison unless --allow-missing)")
            && out.contains(&record("b", vec![]).key())
            && out.contains("1 missing from the new run"),
        "{out}"
    );
    let o = modelbench(
        t,
        &[
            "compare",
            base.to_str().unwrap(),
            only_a.to_str().unwrap(),
            "--allow-missing",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let (code, out, err) = compare(&only_a, &base);
    assert_eq!(
        code, 0,
        "a benchmark only in the new run is no failure:\n{out}{err}"
    );

    // Different build settings: refused (exit 2) naming them, unless --force.
    let other = t.join("other-build");
    let mut recs = read_run(&same).unwrap();
    for r in &mut recs {
        r.build.rustflags = "-C target-cpu=x86-64".into();
        r.build.candle = "0.9.1".into();
    }
    write_artifacts(&other, &recs).unwrap();
    let (code, _, err) = compare(&base, &other);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("different build settings")
            && err.contains("rustflags")
            && err.contains("x86-64")
            && err.contains("candle: `")
            && err.contains("--force"),
        "{err}"
    );
    let o = modelbench(
        t,
        &[
            "compare",
            base.to_str().unwrap(),
            other.to_str().unwrap(),
            "--force",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("compared because forced: rustflags"), "{out}");

    // unusable input: exit 2
    let (code, _, err) = compare(&base, &t.join("missing"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a run folder"), "{err}");
    let dup = run_dir(t, "dup", &[("a", 1.0, 10), ("a", 1.1, 10)]);
    let (code, _, err) = compare(&base, &dup);
    assert_eq!(code, 2, "{err}");
    let key = record("a", vec![]).key();
    assert!(
        err.contains(&key) && err.contains(dup.to_str().unwrap()),
        "names the key and the run: {err}"
    );
}

fn cont_runs(reports: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(reports)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("continuous.json").is_file())
        .collect();
    v.sort();
    v
}

/// Three real runs of one config; the first is then made to look twice as fast, so the
/// third is a regression against the fixed baseline whatever the machine's noise does
/// between the second and the third (their comparison is printed, not asserted).
#[test]
fn continuous_compares_with_previous_and_baseline() {
    let _turn = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let config = |name: &str, baseline: Option<&str>| {
        let mut c = serde_json::json!({
            "name": name, "models": ["fixture:llama"], "prompt_tokens": 16,
            "max_new_tokens": 4, "warmup": 1, "trials": 5, "threshold": "5%"
        });
        if let Some(b) = baseline {
            c["baseline"] = b.into();
        }
        let p = tmp.path().join(format!("{name}.json"));
        std::fs::write(&p, c.to_string()).unwrap();
        p
    };
    let cont = |cfg: &Path| {
        let o = modelbench(&reports, &["continuous", cfg.to_str().unwrap()]);
        (
            o.status.code().unwrap(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let cfg = config("drift", None);

    let (code, out) = cont(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("this run is the first baseline"), "{out}");
    let (code, out) = cont(&cfg);
    assert!(code == 0 || code == 1, "{out}");
    assert!(
        out.contains("## against the previous run")
            && out.contains("the baseline is the previous run: compared once"),
        "{out}"
    );
    let runs = cont_runs(&reports);
    assert_eq!(runs.len(), 2);
    let first = &runs[0];
    let mut recs = read_run(first).unwrap();
    for r in &mut recs {
        // 10x faster: the drift must show through heavy CPU contention (at 2x, a CI run with
        // two other builds on the cores measured 1.74x with a 95% CI of [0.95, 2.46]).
        r.samples_s.iter_mut().for_each(|s| *s *= 0.1);
        r.stats = modelbench::measure::stats::summarize(&r.samples_s);
    }
    write_artifacts(first, &recs).unwrap();

    let (code, out) = cont(&cfg);
    assert_eq!(code, 1, "drift against the first run must fail:\n{out}");
    let (step, drift) = out.split_once("## against the baseline").expect(&out);
    assert!(step.contains("## against the previous run"), "{out}");
    assert!(
        drift.contains(first.to_str().unwrap()) && drift.contains("| Regression |"),
        "{out}"
    );

    // A named baseline that is not a run folder: exit 2 before anything runs.
    let before = std::fs::read_dir(&reports).unwrap().count();
    let (code, out) = cont(&config("drift", Some("no-such-run")));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("baseline `no-such-run`"), "{out}");
    assert_eq!(std::fs::read_dir(&reports).unwrap().count(), before);
    // A named baseline (a folder name under the reports root) applies from the first run.
    let name = first.file_name().unwrap().to_str().unwrap().to_string();
    let (code, out) = cont(&config("named", Some(&name)));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("## against the baseline"), "{out}");
}

/// The old end-to-end check on real timing: one thread with four busy threads competing for
/// the 2 cores is 2-3x slower than two threads, and a rerun is not flagged.
#[test]
#[ignore = "slow (~50 s) and timing-dependent by design (CPU contention on a shared machine); \
            the verdict rules are carried by the deterministic tests in crates/suite/src/output/compare.rs \
            and compare_exit_codes_on_known_samples"]
fn compare_flags_a_truly_slower_run_and_not_a_rerun() {
    let _turn = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    /// A Llama with 512-wide layers: its 256-token prefill is dominated by GEMMs that use
    /// both cores, so one thread is truly slower (the tiny fixtures are overhead-bound).
    const MID_LLAMA: &str = r#"{"model_type": "llama", "hidden_size": 512, "intermediate_size": 2048,
  "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 2048,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 1024, "tie_word_embeddings": true}"#;
    fn run(reports: &Path, model: &Path, label: &str, threads: &str) -> PathBuf {
        let o = common::bin()
            .args([
                "run",
                "--model",
                model.to_str().unwrap(),
                "--prompt-tokens",
                "256",
                "--max-new-tokens",
                "2",
            ])
            .args(["--warmup", "2", "--trials", "15", "--label", label])
            .env("MODELBENCH_REPORTS", reports)
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::run_folder(reports, label)
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mid-llama");
    std::fs::create_dir_all(&model).unwrap();
    modelbench::models::sources::write_fixture(
        modelbench::models::Family::Llama,
        MID_LLAMA,
        &model,
    )
    .unwrap();
    let reports = tmp.path().join("reports");
    let fast = run(&reports, &model, "fast", "2");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let slow = run(&reports, &model, "slow", "1");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hogs.into_iter().for_each(|h| h.join().unwrap());
    let again = run(&reports, &model, "again", "2");
    let cmp15 = |b: &Path, n: &Path| {
        let o = modelbench(
            &reports,
            &[
                "compare",
                b.to_str().unwrap(),
                n.to_str().unwrap(),
                "--threshold",
                "15%",
            ],
        );
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = cmp15(&fast, &slow);
    assert_eq!(code, 1, "one thread must be flagged:\n{out}");
    assert!(out.contains("Regression"), "{out}");
    let (code, out) = cmp15(&fast, &again);
    assert_eq!(code, 0, "a rerun must not be flagged:\n{out}");
}

/// The gate a user runs, end to end with default flags: `modelbench run` (default trials and
/// warm-up) twice and once each with a 2x and a 4x injected slowdown
/// (`MODELBENCH_INJECT_SLOWDOWN=all:100%` / `all:300%`, a busy-wait inside the timed region),
/// then `modelbench compare` with its defaults: the 5% threshold and, since issue 46 item 7,
/// each benchmark's run-to-run noise (no profile in this test's reports root: the default
/// ±20%). The 4x is flagged (exit 1). The unchanged rerun is not flagged (exit 0) at the
/// defaults (since 2026-11-28 a flagged rerun is retaken once, and two flagged pairs in a row
/// fail: CI measured a 1.45x host burst on an unchanged rerun); before the noise model it needed a 50% threshold to stay silent (README: the
/// unpaired gate false-alarmed on 1 of 6 unchanged reruns at 5%; this test once failed at 5%
/// with a rerun 12.6% slower [1.091, 1.211]). The 2x must read Regression or Undecided, never
/// Unchanged: it was required to be flagged until it read Undecided with the release build
/// running beside it (the unpaired interval of 10 trials under load reached down to 1.14x
/// before, below the 20% noise), so the requirement was relaxed to "not called unchanged"
/// (said in the session note of 2026-11-26). The verdict that holds at 2% is the paired one
/// (tests/paired.rs). `--ignore-noise` gives the interval-only verdict: the 2x is then flagged.
/// Before issue 28 `run` took 3 trials and `compare` needed 5 a side: every row was
/// "insufficient samples" and this test failed on the injected run (exit 0).
/// Since 2026-11-29 the 2x must be flagged again (exit 1): the smallest injection flagged in 20
/// of 20 tries with one model's runs back to back beside it (CI's load, or more) is all:100%
/// (`scripts/compare-power.py`, the test-profile binary: all:100% and all:300% 20/20, all:50%
/// 7/20, reruns 0/20). With two model runs beside it the 2x was flagged in 14 of 20 and read
/// Unchanged in 2 (docs/verdicts.md): this test needs no more load than CI's own.
#[test]
fn run_and_compare_with_defaults_flag_an_injected_2x_slowdown_not_a_rerun() {
    let _turn = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    let run = |label: &str, inject: Option<&str>| -> PathBuf {
        let mut c = common::bin();
        c.args(["run", "--model", "fixture:llama", "--scenario", "short"])
            .args(["--label", label])
            .env("MODELBENCH_REPORTS", &reports)
            .env("MODELBENCH_DB", "off")
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("MODELBENCH_INJECT_SLOWDOWN");
        if let Some(i) = inject {
            c.env("MODELBENCH_INJECT_SLOWDOWN", i);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::run_folder(&reports, label)
    };
    // The unchanged rerun is taken right after the base: the nearer in time, the less of the
    // machine's drift lies between them.
    let base = run("base", None);
    let again = run("again", None);
    let slow = run("slow", Some("all:100%"));
    let slower = run("slower", Some("all:300%"));
    let recs = read_run(&slow).unwrap();
    assert_eq!(recs[0].injected.as_deref(), Some("all:100%"));
    assert!(
        recs[0].samples_s.len() >= 5,
        "run's default trials reach a verdict"
    );
    let cmp_at = |n: &Path, extra: &[&str]| {
        let mut args = vec!["compare", base.to_str().unwrap(), n.to_str().unwrap()];
        args.extend(extra);
        let o = modelbench(&reports, &args);
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = cmp_at(&slower, &[]);
    assert_eq!(
        code, 1,
        "a 4x slowdown must be flagged with default flags:\n{out}"
    );
    assert!(
        out.contains("| Regression |")
            && out.contains("injected slowdown (a calibration run, not a real one): new: all:300%")
            // The noise the row was judged against, and where it came from: the default where
            // this machine has no profile, the committed or measured one where it has (on the
            // AVX-512 EPYC whose profile target-reports/noise/ holds, ±41.4% from 4 runs; this
            // test assumed the default until it ran there, 2026-11-29).
            && (out.contains("±20.0% (default: no measured profile of this benchmark)")
                || out.contains("(measured: `modelbench noise` in ")),
        "{out}"
    );
    // A flagged comparison says how to get the per-op profile of both builds.
    assert!(out.contains("add --profile"), "{out}");
    let (code, out) = cmp_at(&slow, &[]);
    assert_eq!(
        code, 1,
        "a 2x slowdown must be flagged with default flags (20 of 20 under load, docs/verdicts.md):\n{out}"
    );
    assert!(out.contains("| Regression |"), "{out}");
    let (code, out) = cmp_at(&slow, &["--ignore-noise"]);
    assert_eq!(code, 1, "a 2x slowdown on the interval alone:\n{out}");
    assert!(out.contains("| not applied | Regression |"), "{out}");
    let (code, out) = cmp_at(&again, &[]);
    if code != 0 {
        // CI stop 69 (2026-11-28) measured an unchanged rerun 1.45x slower [1.34, 1.59] on a
        // shared 2-core VM with nothing of the suite beside it: a host-level burst the unpaired
        // verdict cannot see (the paired one can: tests/paired.rs). One more base/rerun pair is
        // taken and must be silent, so the check fails on two flagged pairs in a row (a
        // loosening, said in that session's note; it was one pair before).
        let shares = modelbench::measure::system::cpu_shares(std::time::Duration::from_millis(500));
        eprintln!(
            "the unchanged rerun was flagged once (CPU busy and steal shares now: {shares:?}); \
             taking a second pair:\n{out}"
        );
        let base2 = run("base-2", None);
        let again2 = run("again-2", None);
        let o = modelbench(
            &reports,
            &["compare", base2.to_str().unwrap(), again2.to_str().unwrap()],
        );
        let out2 = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code().unwrap(),
            0,
            "an unchanged rerun must not be flagged with default flags (two pairs in a row \
             were):\nfirst pair:\n{out}\nsecond pair:\n{out2}"
        );
        assert!(!out2.contains("add --profile"), "{out2}");
    } else {
        assert!(!out.contains("add --profile"), "{out}");
    }
}
