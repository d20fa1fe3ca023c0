//! Model sources and bad input: hub-cache resolution with no network, misses, broken files.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::fixture_snapshot;
use modelbench::engine::scenario::prepare;
use modelbench::engine::scenario::Scenario;
use modelbench::models::sources::loading::open;
use modelbench::models::sources::{resolve, resolve_in, HubEnv, ModelRef};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn offline_hub(dir: &Path) -> HubEnv {
    HubEnv {
        cache_dir: dir.to_path_buf(),
        offline: true,
        token: None,
    }
}

#[test]
fn hub_resolution_from_a_temporary_cache_without_network() {
    let tmp = tempfile::tempdir().unwrap();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo = tmp.path().join("models--acme--tiny-llama");
    copy_dir(
        &fixture_snapshot("llama"),
        &repo.join("snapshots").join(sha),
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    // huggingface_hub writes no newline; hf-hub 0.4 fails on one: both must work.
    std::fs::write(repo.join("refs/main"), format!("{sha}\n")).unwrap();
    let hub = offline_hub(tmp.path());
    for reference in ["acme/tiny-llama", &format!("acme/tiny-llama@{sha}")] {
        let r = ModelRef::parse(reference).unwrap();
        let res = resolve_in(&r, reference, &hub).unwrap();
        assert_eq!(res.family, modelbench::models::Family::Llama);
        assert!(res.tokenizer.is_some());
        let mut m = open(res, &Device::Cpu, DType::F32, Some(128)).unwrap();
        assert_eq!(m.model.forward(&[5, 6, 7], 0).unwrap().dims(), &[128256]);
    }
    // A miss names the repo, the file and how to get it.
    let e = resolve_in(
        &ModelRef::parse("acme/absent").unwrap(),
        "acme/absent",
        &hub,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("config.json")
            && e.contains("acme/absent")
            && e.contains("huggingface-cli download"),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

fn broken_dir(edit: impl FnOnce(&Path)) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("model");
    copy_dir(&fixture_snapshot("qwen3"), &d);
    edit(&d);
    let s = d.display().to_string();
    (tmp, s)
}

fn load_err(dir: &str) -> String {
    let r = ModelRef::parse(dir).unwrap();
    let e = match prepare(dir, &r, &[])
        .and_then(|res| Ok(open(res, &Device::Cpu, DType::F32, Some(64))?))
    {
        Ok(_) => panic!("{dir} loaded"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn missing_weights_are_a_clear_error() {
    let (_t, d) = broken_dir(|d| std::fs::remove_file(d.join("model.safetensors")).unwrap());
    assert!(load_err(&d).contains("no *.safetensors"));
}

#[test]
fn truncated_weights_are_a_clear_error() {
    let (_t, d) = broken_dir(|d| {
        let p = d.join("model.safetensors");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    });
    let e = load_err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated or corrupt"),
        "{e}"
    );
}

#[test]
fn config_with_a_missing_key_is_a_clear_error() {
    let (_t, d) = broken_dir(|d| {
        let p = d.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("hidden_size");
        std::fs::write(&p, v.to_string()).unwrap();
    });
    let e = load_err(&d);
    assert!(
        e.contains("config.json") && e.contains("hidden_size"),
        "{e}"
    );
}

#[test]
fn a_checkpoint_lacking_a_tensor_is_an_error_not_a_panic() {
    // candle's Llama::load unwraps inside; the loader checks names and shapes first.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("llama");
    copy_dir(&fixture_snapshot("llama"), &d);
    let p = d.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    t.remove("model.layers.1.mlp.up_proj.weight").unwrap();
    candle_core::safetensors::save(&t, &p).unwrap();
    let e = load_err(&d.display().to_string());
    assert!(
        e.contains("lacks tensor `model.layers.1.mlp.up_proj.weight`"),
        "{e}"
    );
}

#[test]
fn a_scenario_longer_than_the_context_is_refused_before_loading() {
    let r = ModelRef::parse("fixture:llama").unwrap();
    let s = Scenario::custom(
        4000,
        200,
        modelbench::engine::sampling::SamplingParams::GREEDY,
    );
    let e = prepare("fixture:llama", &r, &[s]).unwrap_err().to_string();
    assert!(
        e.contains("4200 positions") && e.contains("max_position_embeddings is 4096"),
        "{e}"
    );
}

#[test]
fn synthetic_shapes_have_the_real_parameter_counts() {
    // Parameter counts of the real models (tied embeddings), from the config alone.
    for (name, params) in [
        ("llama-3.2-1b", 1_235_814_400u64),
        ("qwen3-1.7b", 1_720_574_976),
        ("gemma-3-1b", 999_885_952),
    ] {
        let res = resolve(
            &ModelRef::parse(&format!("synthetic:{name}")).unwrap(),
            name,
        )
        .unwrap();
        let arch =
            modelbench::models::Arch::from_json(res.family, &res.config, &res.config_path).unwrap();
        let got: u64 = modelbench::models::expected_tensors(&arch)
            .unwrap()
            .values()
            .map(|s| s.iter().product::<usize>() as u64)
            .sum();
        assert_eq!(got, params, "{name}");
    }
}
