//! The output verdict beside the speed verdict (issue 59), seen from the CLI: three runs of
//! the same scenario on fixture:llama (a base, an unchanged rerun, and a rerun with
//! `MODELBENCH_INJECT_NUMERIC=lm_head:0.5%`, the logits scaled by 1.005), then `compare`.
//! The rerun reads `same` and exits 0; the numeric change reads `OUTPUTS CHANGED` and exits 1
//! (0 with `--allow-output-change`), its speed verdict printed beside it, while every trial's
//! greedy ids stay identical: only the probe can see it. The speed threshold is set wide (90%)
//! so the exit code is the output verdict's alone.

mod common;
use common::modelbench;

use std::path::{Path, PathBuf};

use modelbench::judge::outputs::OutputVerdict;
use modelbench::output::report::read_run;

fn run(reports: &Path, label: &str, numeric: Option<&str>) -> PathBuf {
    let mut c = common::bin();
    c.args(["run", "--model", "fixture:llama", "--scenario", "short"])
        .args(["--trials", "5", "--warmup", "1", "--label", label])
        .env("MODELBENCH_REPORTS", reports)
        .env("MODELBENCH_DB", "off")
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MODELBENCH_INJECT_SLOWDOWN")
        .env_remove("MODELBENCH_INJECT_NUMERIC");
    if let Some(n) = numeric {
        c.env("MODELBENCH_INJECT_NUMERIC", n);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::run_folder(reports, label)
}

fn compare(reports: &Path, base: &Path, new: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "compare",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--threshold",
        "90%",
        "--ignore-noise",
    ];
    args.extend(extra);
    common::code_and_output(&modelbench(reports, &args))
}

#[test]
fn a_numeric_change_is_outputs_changed_and_a_rerun_is_same() {
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    let base = run(&reports, "base", None);
    let again = run(&reports, "again", None);
    let scaled = run(&reports, "scaled", Some("lm_head:0.5%"));

    let (b, s) = (read_run(&base).unwrap(), read_run(&scaled).unwrap());
    let (ob, os) = (
        b[0].outputs
            .as_ref()
            .expect("a generation record keeps its outputs"),
        s[0].outputs.as_ref().unwrap(),
    );
    assert_eq!(s[0].injected_numeric.as_deref(), Some("lm_head:0.5%"));
    assert!(
        ob.ids.trials.len() >= 6,
        "warm-up and timed trials: {:?}",
        ob.ids
    );
    assert_eq!(ob.ids, os.ids, "scaled logits keep every greedy id");
    let (pb, ps) = (ob.probe.as_ref().unwrap(), os.probe.as_ref().unwrap());
    assert_eq!(pb.positions.len(), 64);
    assert_ne!(pb.logits_sha256, ps.logits_sha256);
    // The model's own noise includes another thread count, taken by a second process of
    // this build (bit-identical on fixture:llama: candle splits work by output rows; the
    // single-token steps read ~3e-17). The scaled run's second process scales too: else its
    // noise would be the 0.5% change itself (mean KLD ~1.9e-9).
    for p in [pb, ps] {
        let n = p.noise.as_ref().expect("the probe keeps its noise");
        assert!(n.perturbation.contains("another thread count ("), "{n:?}");
        assert!(n.not_measured.is_empty(), "{n:?}");
        assert!(n.max_kld < 1e-12, "{n:?}");
    }

    let (code, out) = compare(&reports, &base, &again, &[]);
    assert_eq!(code, 0, "an unchanged rerun:\n{out}");
    assert!(out.contains("| same |"), "{out}");
    assert!(out.contains("outputs: 1 same"), "{out}");

    let (code, out) = compare(&reports, &base, &scaled, &[]);
    assert_eq!(code, 1, "scaled logits:\n{out}");
    assert!(out.contains("| OUTPUTS CHANGED |"), "{out}");
    assert!(out.contains("1 benchmark(s) OUTPUTS CHANGED"), "{out}");
    assert!(out.contains("mean KLD"), "the why names the KLD: {out}");
    let (code, out) = compare(&reports, &base, &scaled, &["--allow-output-change"]);
    assert_eq!(code, 0, "allowed:\n{out}");

    // The same through the library, for the verdict's figures.
    let j = modelbench::judge::outputs::judge(Some(ob), Some(os));
    assert_eq!(j.verdict, OutputVerdict::Changed, "{}", j.why);
    assert_eq!(j.first_trial_differing, None);
    eprintln!("base vs lm_head:0.5%: {}", j.why);
    eprintln!(
        "probe: {:.3} s for {} positions (noise included)",
        pb.seconds,
        pb.positions.len()
    );
}

/// The thread-count perturbation both ways, through the library: a second process of this
/// build probes `gguf:fixture:llama` at another thread count. Left alone it is bit-identical
/// (noise 0); told to scale its logits by 0.5% (`MODELBENCH_INJECT_NUMERIC` set on the second
/// process only) its noise is not, so a difference there would widen the limits; a second
/// process that fails is "not measured", with why, never a 0.
#[test]
fn the_thread_count_perturbation_sees_what_a_second_process_computes() {
    use modelbench::engine::probe::{child_noise, probe_command, take, Opening};
    let models = modelbench::config::plans::parse_models("gguf:fixture:llama", "--model").unwrap();
    let (label, r) = &models[0];
    let res = modelbench::engine::scenario::prepare(label, r, &[]).unwrap();
    let dev = candle_core::Device::Cpu;
    let mut loaded = modelbench::models::sources::loading::open_with(
        res,
        &dev,
        candle_core::DType::F32,
        Some(256),
        Default::default(),
    )
    .unwrap();
    let probe = take(loaded.model.as_mut(), loaded.tokenizer.as_ref()).unwrap();
    let opening = Opening {
        device: modelbench::measure::device::DeviceSpec::Cpu,
        dtype: candle_core::DType::F32,
        attention: Default::default(),
    };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_modelbench"));
    let one = |c: &mut std::process::Command| {
        c.env("RAYON_NUM_THREADS", "1")
            .env("CANDLE_NUM_THREADS", "1")
            .env("HF_HUB_OFFLINE", "1");
    };
    let mut c = probe_command(exe, &loaded, &opening);
    one(&mut c);
    let same = child_noise(&probe, c, "one thread").unwrap();
    assert!(same.identical, "{same:?}");
    assert_eq!((same.mean_kld, same.max_kld, same.top1), (0.0, 0.0, 1.0));

    let mut c = probe_command(exe, &loaded, &opening);
    one(&mut c);
    c.env("MODELBENCH_INJECT_NUMERIC", "lm_head:0.5%");
    let scaled = child_noise(&probe, c, "one thread, logits x1.005").unwrap();
    assert!(!scaled.identical, "{scaled:?}");
    assert!(
        scaled.mean_kld > 0.0 && scaled.max_kld >= scaled.mean_kld,
        "{scaled:?}"
    );
    eprintln!("second process with lm_head:0.5%: {scaled:?}");

    let mut c = std::process::Command::new(exe);
    c.args([
        "probe",
        "--bare",
        "--json",
        "--model",
        "fixture:no-such-family",
    ]);
    let why = child_noise(&probe, c, "x").unwrap_err();
    assert!(why.starts_with("the second process failed"), "{why}");
    let n = probe
        .noise
        .clone()
        .unwrap()
        .without("another thread count", &why);
    assert_eq!(n.not_measured.len(), 1);
    assert!(
        n.not_measured[0].contains("fixture:no-such-family"),
        "{n:?}"
    );
}
