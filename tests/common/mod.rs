#![allow(dead_code)]

use candle_core::{DType, Device};
use modelbench::runner::{open, prepare, Loaded};
use modelbench::source::ModelRef;

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
    let fam: modelbench::model::Family = family.parse().unwrap();
    let (repo, rev) = modelbench::source::ensure_fixture(fam).unwrap();
    modelbench::source::cached_file(
        &modelbench::source::fixture_cache_dir(),
        &repo,
        &rev,
        "config.json",
    )
    .unwrap()
    .parent()
    .unwrap()
    .to_path_buf()
}

pub fn logits(t: &candle_core::Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}
