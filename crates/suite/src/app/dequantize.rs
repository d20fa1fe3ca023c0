//! `modelbench dequantize`: a GGUF Gemma 3, Qwen2 or Llama as a Hugging Face folder (f32
//! safetensors, config.json, tokenizer.json), loadable as `--model <dir>` through
//! candle-transformers' model of the family, and checked by `verify --model <dir>` against
//! llama.cpp on the GGUF it came from.

use std::path::Path;

use crate::config::plans::parse_models;
use crate::engine::scenario::prepare;

pub fn dequantize(model: &str, out: &Path) -> crate::Result<()> {
    let models = parse_models(model, "--model")?;
    let (label, r) = &models[0];
    let res = prepare(label, r, &[])?;
    let crate::models::Weights::Gguf(path) = &res.weights else {
        bail!("--model {label}: not a GGUF reference (use gguf:<file> or gguf:<owner>/<repo>)");
    };
    ensure!(
        !out.join("config.json").exists(),
        "--out {}: already holds a model (config.json); choose an empty folder",
        out.display()
    );
    crate::models::sources::dequantize::gguf_to_hf(path, res.tokenizer.as_deref(), out)?;
    println!(
        "wrote {} (f32 safetensors, config.json{}); use it as --model {}; check it with `modelbench verify --model {}`",
        out.display(),
        if res.tokenizer.is_some() {
            ", tokenizer.json"
        } else {
            ""
        },
        out.display(),
        out.display()
    );
    Ok(())
}

/// `modelbench synth-gguf`: `synthetic:<name>` as an F16 GGUF file (seeded weights, real
/// shapes, the fixture tokenizer at the real vocabulary size).
pub fn synth_gguf(model: &str, out: &Path, ty: &str) -> crate::Result<()> {
    use crate::models::families::fixture::SYNTHETIC_TYPES;
    let Some((_, matrix)) = SYNTHETIC_TYPES.iter().find(|(n, _)| *n == ty) else {
        bail!(
            "--type {ty}: unknown type (allowed: {})",
            SYNTHETIC_TYPES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let names = || {
        crate::models::sources::SYNTHETIC
            .iter()
            .map(|(n, _)| format!("synthetic:{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(name) = model.strip_prefix("synthetic:") else {
        bail!(
            "--model {model}: synth-gguf writes a synthetic model; use one of {}",
            names()
        );
    };
    let Some((_, config)) = crate::models::sources::SYNTHETIC
        .iter()
        .find(|(n, _)| *n == name)
    else {
        bail!(
            "--model {model}: unknown synthetic model; use one of {}",
            names()
        );
    };
    ensure!(
        !out.exists(),
        "--out {}: already exists; choose a new file name",
        out.display()
    );
    ensure!(
        out.extension().is_some_and(|e| e == "gguf"),
        "--out {}: name the file *.gguf",
        out.display()
    );
    let res = prepare(model, &crate::models::sources::ModelRef::parse(model)?, &[])?;
    let t0 = std::time::Instant::now();
    crate::models::sources::write_synthetic(res.family, name, config, *matrix, out)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({:.2} GB, {ty} matrices, {} family, seeded weights) in {:.1} s{}",
        out.display(),
        bytes as f64 / 1e9,
        res.family,
        t0.elapsed().as_secs_f64(),
        if *matrix == candle_core::quantized::GgmlDType::F16 {
            format!(
                "; quantize it with llama-quantize {} OUT.gguf Q4_K_M",
                out.display()
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
