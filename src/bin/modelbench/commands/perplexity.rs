//! `modelbench perplexity`: sliding-window perplexity of a text file.

use std::path::Path;

use anyhow::Context;
use modelbench::config::plans::parse_models;
use modelbench::engine::scenario::prepare;
use modelbench::models::loading::open;
use modelbench::output::report::{reports_root, RunDir};

use crate::args::TargetArgs;

pub fn perplexity(
    model: &str,
    seq_len: usize,
    stride: usize,
    target: &TargetArgs,
    file: &Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read the text", file.display()))?;
    let (spec, dt, label) = target.resolve()?;
    let models = parse_models(model, "--model")?;
    let (l, r) = &models[0];
    let res = prepare(l, r, &[])?;
    let tok_path = res
        .tokenizer
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{l}: perplexity needs the model's tokenizer.json"))?;
    let dev = spec.open_for("--device")?;
    let mut loaded = open(res, &dev, dt, Some(seq_len))?;
    // The project's Gemma 3 is exact at every built position (exact_context None); the
    // candle-transformers one (`?impl=candle-transformers`) only up to its sliding window.
    if let Some(w) = loaded.model.meta().exact_context {
        anyhow::ensure!(
            seq_len < w,
            "--seq-len {seq_len}: {l} computes exactly only up to {w} positions ({}); use --seq-len {} or less, or the default implementation",
            loaded.model.meta().implementation,
            w - 1
        );
    }
    let built = loaded.model.meta().built_context;
    anyhow::ensure!(
        seq_len <= built,
        "--seq-len {seq_len}: {l} was built for {built} positions (its context length); use --seq-len {built} or less"
    );
    let tok = loaded
        .tokenizer
        .as_ref()
        .expect("loaded with the tokenizer");
    let ids = modelbench::models::tokenizer::encode(tok, &text)?;
    let bos = modelbench::models::tokenizer::bos_id(tok);
    let mut w = modelbench::workloads::perplexity::Perplexity {
        loaded: &mut loaded,
        text_name: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ids,
        seq_len,
        stride,
        bos,
        device: spec,
        dtype: dt,
    };
    let r = modelbench::workloads::run_trials(&mut w, 0, 1)?;
    let p: modelbench::engine::perplexity::Perplexity = serde_json::from_value(r.extra.clone())?;
    println!(
        "{l} on {}: perplexity {:.3} (mean NLL {:.4} nats), {} tokens scored in {} windows (seq-len {}, stride {}), {:.1} tok/s, {:.1} s; tokenizer {}",
        file.display(), p.perplexity, p.mean_nll, p.tokens_scored, p.windows, p.seq_len, p.stride, p.tok_s, p.seconds, tok_path.display()
    );
    if !target.no_save {
        let mut run = RunDir::new(&reports_root(), label.as_deref());
        run.push(r)?;
        println!("saved {}", run.path.display());
    }
    Ok(())
}
