//! Opening a resolved model for benchmarking (weights + tokenizer), with its load cost.

use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::Result;
use crate::measure::memory;
use crate::models::attention::Attention;
use crate::models::source::Resolved;
use crate::models::{self, CausalLm};

/// The cost of loading a model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadStats {
    pub seconds: f64,
    /// Peak live heap during the load, above what was live before it (counting allocator).
    pub heap_peak_bytes: Option<u64>,
    /// Live heap held by the model after the load.
    pub heap_after_bytes: Option<u64>,
    /// Peak resident set of the process during the load (/proc; None elsewhere).
    pub rss_peak_bytes: Option<u64>,
    /// Seeded (synthetic) weights: bytes filled per second of load.
    #[serde(default)]
    pub fill_gbs: Option<f64>,
}

pub struct Loaded {
    pub resolved: Resolved,
    pub model: Box<dyn CausalLm>,
    pub tokenizer: Option<Tokenizer>,
    pub load: LoadStats,
}

/// Loads weights and tokenizer, measuring time and memory of the load (eager attention).
pub fn open(
    res: Resolved,
    device: &Device,
    dtype: DType,
    context_cap: Option<usize>,
) -> Result<Loaded> {
    open_with(res, device, dtype, context_cap, Attention::Eager)
}

/// [`open`] with an attention backend (see [`crate::models::attention`]).
pub fn open_with(
    res: Resolved,
    device: &Device,
    dtype: DType,
    context_cap: Option<usize>,
    attention: Attention,
) -> Result<Loaded> {
    attention.check(device).map_err(|reason| {
        crate::error::Error::knob(
            "MODELBENCH_ATTENTION",
            attention.name(),
            reason,
            Attention::ALLOWED,
        )
    })?;
    let heap_before = memory::heap_current().unwrap_or(0);
    memory::reset_peak();
    let rss_reset = memory::reset_rss_peak();
    let t = Instant::now();
    let opts = models::LoadOptions {
        device: device.clone(),
        dtype,
        context_cap,
    };
    let model = models::load(
        res.family,
        &res.config,
        &res.config_path,
        &res.weights,
        &opts,
    )?;
    let model = crate::models::attention::apply(model, attention)?;
    let fill_secs = t.elapsed().as_secs_f64();
    let tokenizer = res
        .tokenizer
        .as_deref()
        .map(crate::models::tokenizer::load)
        .transpose()?;
    if let (Some(t), Some(p)) = (&tokenizer, &res.tokenizer) {
        check_vocab(t, p, model.meta().vocab)?;
    }
    crate::measure::device::sync(device)?;
    let seconds = t.elapsed().as_secs_f64();
    let load = LoadStats {
        seconds,
        heap_peak_bytes: memory::heap_peak().map(|p| p.saturating_sub(heap_before)),
        heap_after_bytes: memory::heap_current().map(|c| c.saturating_sub(heap_before)),
        rss_peak_bytes: if rss_reset {
            memory::rss().map(|(_, hwm)| hwm)
        } else {
            None
        },
        fill_gbs: matches!(res.weights, models::Weights::Seeded(_))
            .then(|| model.meta().weight_bytes as f64 / fill_secs.max(1e-9) / 1e9),
    };
    Ok(Loaded {
        resolved: res,
        model,
        tokenizer,
        load,
    })
}

/// A tokenizer whose ids the model cannot embed (a vocabulary larger than the embedding, or a
/// BOS past its last row: another model's tokenizer) is refused in one line. Added tokens past
/// the embedding are allowed (Gemma 3's tokenizer.json has `<image_soft_token>` = 262144 for
/// a 262144-row embedding).
pub fn check_vocab(tok: &Tokenizer, path: &std::path::Path, rows: usize) -> Result<()> {
    let n = tok.get_vocab_size(false);
    let bos = crate::models::tokenizer::bos_id(tok);
    let bad = if n > rows {
        Some(format!("has {n} tokens"))
    } else {
        bos.filter(|&b| b as usize >= rows)
            .map(|b| format!("puts BOS id {b} first"))
    };
    match bad {
        Some(what) => Err(crate::error::Error::Tokenizer {
            path: path.display().to_string(),
            reason: format!(
                "{what} but the model's embedding has {rows} rows, so it is not this model's tokenizer; use the model's own (for GGUF files the one in the file, or the model's tokenizer.json beside it)"
            ),
        }),
        None => Ok(()),
    }
}

/// The load cost of a model, as the benches and `run` print it.
pub fn load_line(l: &Loaded) -> String {
    let m = l.model.meta();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let peak = l.load.rss_peak_bytes.or(l.load.heap_peak_bytes);
    format!(
        "loaded {}: {} params, {:.2} GiB of weights ({}), {:.2} s{}, peak {} during load{}",
        l.resolved.label,
        m.params,
        gib(m.weight_bytes),
        m.dtype,
        l.load.seconds,
        l.load
            .fill_gbs
            .map(|g| format!(" (seeded fill {g:.2} GB/s)"))
            .unwrap_or_default(),
        peak.map(|p| format!("{:.2} GiB", gib(p)))
            .unwrap_or_else(|| "not available".into()),
        peak.map(|p| format!(
            " = {:.2}x the weights",
            p as f64 / m.weight_bytes.max(1) as f64
        ))
        .unwrap_or_default(),
    )
}
