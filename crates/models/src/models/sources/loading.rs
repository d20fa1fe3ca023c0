//! Opening a resolved model for benchmarking (weights + tokenizer), with its load cost.

use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::Result;
use crate::measure::memory;
use crate::models::attention::Attention;
use crate::models::sources::Resolved;
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
    /// Resident set of the process just before the load (/proc; None elsewhere).
    #[serde(default)]
    pub rss_before_bytes: Option<u64>,
    /// What the whole load (tokenizer and weights) added to the resident set at its peak:
    /// [`LoadStats::rss_peak_bytes`] less [`LoadStats::rss_before_bytes`].
    #[serde(default)]
    pub rss_rise_bytes: Option<u64>,
    /// Resident set once the tokenizer is loaded, just before the weights (the tokenizer is
    /// loaded first).
    #[serde(default)]
    pub rss_weights_before_bytes: Option<u64>,
    /// What loading the weights added to the resident set at its peak, over
    /// [`LoadStats::rss_weights_before_bytes`]: the figure to set beside the file's tensor
    /// bytes (llama.cpp maps a GGUF file: about 1.0x).
    #[serde(default)]
    pub rss_weights_rise_bytes: Option<u64>,
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
    memory::trim();
    let heap_before = memory::heap_current().unwrap_or(0);
    memory::reset_peak();
    // The peak is reset to the resident set now, so the rise is the load's, whatever the
    // process held before. The tokenizer first, then (the peak reset again) the weights, so
    // each one's rise is known.
    let rss_reset = memory::reset_rss_peak();
    let rss_before = rss_reset.then(memory::rss).flatten().map(|(now, _)| now);
    let t = Instant::now();
    let tokenizer = res
        .tokenizer
        .as_deref()
        .map(|p| crate::models::tokenizers::load_resolved(p, res.gguf.as_ref().map(|g| &*g.header)))
        .transpose()?;
    let tok_peak = rss_before.and(memory::rss()).map(|(_, hwm)| hwm);
    // What the tokenizer's load freed (its file's text, parse temporaries) goes back to the
    // kernel, so the weights' rise is not hidden by reusing it.
    memory::trim();
    let rss_reset = rss_reset && memory::reset_rss_peak();
    let weights_before = rss_reset.then(memory::rss).flatten().map(|(now, _)| now);
    let tw = Instant::now();
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
        res.gguf.as_ref(),
        &opts,
    )?;
    let model = crate::models::attention::apply(model, attention)?;
    let fill_secs = tw.elapsed().as_secs_f64();
    if let (Some(t), Some(p)) = (&tokenizer, &res.tokenizer) {
        check_vocab(t, p, model.meta().vocab)?;
    }
    crate::measure::device::sync(device)?;
    let seconds = t.elapsed().as_secs_f64();
    let weights_peak = if rss_reset {
        memory::rss().map(|(_, hwm)| hwm)
    } else {
        None
    };
    let rss_peak = weights_peak.map(|w| w.max(tok_peak.unwrap_or(0)));
    let load = LoadStats {
        seconds,
        heap_peak_bytes: memory::heap_peak().map(|p| p.saturating_sub(heap_before)),
        heap_after_bytes: memory::heap_current().map(|c| c.saturating_sub(heap_before)),
        rss_peak_bytes: rss_peak,
        rss_before_bytes: rss_before,
        rss_rise_bytes: rss_peak.zip(rss_before).map(|(p, b)| p.saturating_sub(b)),
        rss_weights_before_bytes: weights_before,
        rss_weights_rise_bytes: weights_peak
            .zip(weights_before)
            .map(|(p, b)| p.saturating_sub(b)),
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

/// Extends `l`'s peak to now: what happened since the load (a re-encoding of its weights
/// for serving, `--fast-weights`' repack) counts as part of it. Valid while nothing reset the
/// resident high-water mark since [`open`] did.
pub fn extend_to_now(l: &mut LoadStats) {
    let (Some(before), Some(wb), Some((_, hwm))) = (
        l.rss_before_bytes,
        l.rss_weights_before_bytes,
        memory::rss(),
    ) else {
        return;
    };
    let peak = hwm.max(l.rss_peak_bytes.unwrap_or(0));
    l.rss_peak_bytes = Some(peak);
    l.rss_rise_bytes = Some(peak.saturating_sub(before));
    let wpeak = hwm.max(wb + l.rss_weights_rise_bytes.unwrap_or(0));
    l.rss_weights_rise_bytes = Some(wpeak.saturating_sub(wb));
}

/// A tokenizer whose ids the model cannot embed (a vocabulary larger than the embedding, or a
/// BOS past its last row: another model's tokenizer) is refused in one line. Added tokens past
/// the embedding are allowed (Gemma 3's tokenizer.json has `<image_soft_token>` = 262144 for
/// a 262144-row embedding).
pub fn check_vocab(tok: &Tokenizer, path: &std::path::Path, rows: usize) -> Result<()> {
    let n = tok.get_vocab_size(false);
    let bos = crate::models::tokenizers::bos_id(tok);
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

/// The load cost of a model, as the benches, `run`, `serve`, `verify` and `generate` print
/// it: the peak resident set during the load, and its rise over the resident set before the
/// load (weights and tokenizer) against the model's weight bytes (for a GGUF file, the
/// bytes of its tensors as the file stores them).
pub fn load_line(l: &Loaded) -> String {
    let m = l.model.meta();
    format!(
        "loaded {}: {} params, {:.2} GiB of weights ({}), {:.2} s{}, {}",
        l.resolved.label,
        m.params,
        gib(m.weight_bytes),
        m.dtype,
        l.load.seconds,
        l.load
            .fill_gbs
            .map(|g| format!(" (seeded fill {g:.2} GB/s)"))
            .unwrap_or_default(),
        memory_phrase(&l.load, m.weight_bytes),
    )
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// `peak RSS 0.47 GiB during load (2.05x the weights); weights: rise 0.25 GiB = 1.08x the
/// weights over 0.22 GiB (tokenizer loaded); with the tokenizer: rise 0.38 GiB = 1.65x over
/// 0.09 GiB before`, or the counted heap where the resident set cannot be read.
pub fn memory_phrase(l: &LoadStats, weight_bytes: u64) -> String {
    let x = |b: u64| b as f64 / weight_bytes.max(1) as f64;
    match (
        l.rss_peak_bytes,
        l.rss_before_bytes,
        l.rss_rise_bytes,
        l.rss_weights_before_bytes,
        l.rss_weights_rise_bytes,
    ) {
        (Some(p), Some(b), Some(r), Some(wb), Some(wr)) => format!(
            "peak RSS {:.3} GiB during load ({:.2}x the weights); weights: rise {:.3} GiB = {:.2}x the weights over {:.3} GiB (tokenizer loaded); with the tokenizer: rise {:.3} GiB = {:.2}x over {:.3} GiB before",
            gib(p),
            x(p),
            gib(wr),
            x(wr),
            gib(wb),
            gib(r),
            x(r),
            gib(b),
        ),
        _ => match l.heap_peak_bytes {
            Some(h) => format!(
                "peak heap {:.3} GiB during load = {:.2}x the weights (resident set not readable here)",
                gib(h),
                x(h)
            ),
            None => "peak during load not available".into(),
        },
    }
}
