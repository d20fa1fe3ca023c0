//! `modelbench probe`: a model's output probe (issue 59), the fingerprint of what it computes
//! that every generation record keeps: its log-probabilities over the held-out verdict text's
//! positions, the sha256 of every logit, and the model's own numerical noise (prefill as
//! single-token steps, batched sequences where it has a batched form, another thread count in
//! a second process). `--json` prints it as records store it; `--bare` leaves out the noise
//! (what the thread-count perturbation asks of its second process).

use crate::app::args::device_and_dtype;
use crate::config::plans::parse_models;
use crate::engine::probe::{describe, take, take_bare, with_threads, Opening};
use crate::engine::scenario::prepare;
use crate::models::attention::Attention;
use crate::models::sources::loading::{load_line, open_with};
use crate::{Error, Result};

/// `modelbench probe`.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Model reference (fixture:, synthetic:, gguf:, a hub repo or a directory).
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (default: the device's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// The attention backend: eager, flash (CUDA builds), chunked or chunked:N.
    #[arg(long, default_value = "eager")]
    pub attention: String,
    /// Positions to build the model for (a run builds its longest scenario's; the probe
    /// needs 64, a model built for fewer is probed on shorter sequences).
    #[arg(long, default_value_t = crate::engine::probe::LEN)]
    pub context: usize,
    /// Print the probe as records keep it (JSON) instead of one line.
    #[arg(long)]
    pub json: bool,
    /// The probe's positions only, no noise (what a parent process asks of this one).
    #[arg(long, hide = true)]
    pub bare: bool,
}

pub fn probe(a: ProbeArgs) -> Result<()> {
    ensure!(a.context >= 1, "--context must be at least 1");
    let (device, dtype) = device_and_dtype(&a.device, a.dtype.as_deref())?;
    let attention = Attention::parse(&a.attention).map_err(|e| {
        fail!(
            "--attention {:?}: {e} (allowed: {})",
            a.attention,
            Attention::ALLOWED
        )
    })?;
    let models = parse_models(&a.model, "--model")?;
    let (label, r) = &models[0];
    let res = prepare(label, r, &[])?;
    let dev = device.open_for("--device")?;
    let mut loaded = open_with(res, &dev, dtype, Some(a.context), attention)?;
    if !a.json {
        eprintln!("{}", load_line(&loaded));
    }
    let p = if a.bare {
        take_bare(loaded.model.as_mut(), loaded.tokenizer.as_ref())?
    } else {
        let p = take(loaded.model.as_mut(), loaded.tokenizer.as_ref())?;
        with_threads(p, &loaded, &Opening::of(device, dtype, attention))
    };
    if a.json {
        let s = serde_json::to_string(&p).map_err(|e| Error::Command(format!("probe: {e}")))?;
        println!("{s}");
    } else {
        println!("{}", describe(label, &p));
        println!("logits sha256 {} ({})", p.logits_sha256, p.text);
    }
    Ok(())
}
