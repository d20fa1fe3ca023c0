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
    crate::models::dequantize::gguf_to_hf(path, res.tokenizer.as_deref(), out)?;
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
