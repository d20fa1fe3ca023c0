#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device};
use modelbench::engine::scenario::prepare;
use modelbench::models::loading::{open, Loaded};
use modelbench::models::source::ModelRef;

/// The `modelbench` binary of this build, nothing set.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modelbench"))
}

/// The binary as the CLI tests run it: run folders (and the default results database) under
/// `reports`, no network (HF_HUB_OFFLINE=1), and no MODELBENCH_DB of the caller's shell.
pub fn modelbench_cmd(reports: &Path) -> Command {
    let mut c = bin();
    c.env("MODELBENCH_REPORTS", reports)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MODELBENCH_DB");
    c
}

/// [`modelbench_cmd`] with `args`, run to completion.
pub fn modelbench(reports: &Path, args: &[&str]) -> Output {
    modelbench_cmd(reports).args(args).output().unwrap()
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub const FAMILIES: [&str; 4] = ["llama", "qwen3", "qwen3-moe", "gemma3"];

/// A fixture model in f32 on the CPU, built for up to 2048 positions.
pub fn fixture(family: &str) -> Loaded {
    let label = format!("fixture:{family}");
    let r = ModelRef::parse(&label).unwrap();
    let res = prepare(&label, &r, &[]).unwrap();
    open(res, &Device::Cpu, DType::F32, Some(2048)).unwrap()
}

/// The snapshot folder of a fixture (config.json, model.safetensors, tokenizer.json).
pub fn fixture_snapshot(family: &str) -> std::path::PathBuf {
    let fam: modelbench::models::Family = family.parse().unwrap();
    let (repo, rev) = modelbench::models::source::ensure_fixture(fam).unwrap();
    modelbench::models::source::cached_file(
        &modelbench::models::source::fixture_cache_dir(),
        &repo,
        &rev,
        "config.json",
    )
    .unwrap()
    .parent()
    .unwrap()
    .to_path_buf()
}

/// One generation of scenario `s` (trial 0), prompt and sampler seeded with `seed`: one
/// iteration of the generation workload, as the benches and the CLI run it.
pub fn run_scenario(
    m: &mut Loaded,
    s: &modelbench::engine::scenario::Scenario,
    seed: u64,
) -> modelbench::engine::generate::Trace {
    use modelbench::workloads::Workload;
    let dtype = m.model.meta().dtype.clone();
    let mut w = modelbench::workloads::generation::Generation {
        loaded: m,
        scenario: s,
        seed,
        device: modelbench::measure::device::DeviceSpec::Cpu,
        dtype: modelbench::measure::device::parse_dtype(&dtype).unwrap_or(DType::F32),
        calibration: None,
    };
    w.iterate(0).unwrap().1
}

pub fn logits(t: &candle_core::Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// Logits after a 20-token prefill and 4 single-token decode steps must equal those of one
/// fresh 24-token forward, within `tol` of the logit scale.
pub fn assert_kv_cache_exact(m: &mut dyn modelbench::models::CausalLm, what: &str, tol: f32) {
    let toks = modelbench::engine::generate::prompt_ids(24, m.meta().vocab, 3, 0);
    m.reset().unwrap();
    let full = logits(&m.forward(&toks, 0).unwrap());
    m.reset().unwrap();
    let mut inc = logits(&m.forward(&toks[..20], 0).unwrap());
    for i in 20..24 {
        inc = logits(&m.forward(&toks[i..i + 1], i).unwrap());
    }
    let scale = full.iter().fold(1e-3f32, |a, x| a.max(x.abs()));
    let diff = full
        .iter()
        .zip(&inc)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(
        diff <= tol * scale,
        "{what}: max |diff| {diff} at scale {scale}"
    );
}
