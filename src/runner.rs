//! Opening a model for benchmarking (resolve -> load -> tokenizer), with its load cost, and
//! the short probe that sizes criterion's measurement window.

use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::generate::{generate, prompt_ids, Prompt};
use crate::memory;
use crate::model::{self, Arch, CausalLm};
use crate::sampling::{Sampler, SamplingParams};
use crate::scenario::Scenario;
use crate::source::{resolve, ModelRef, Resolved};

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

/// Resolves a reference (no weights are read) and checks that every scenario fits the
/// model's context, so an impossible plan fails before anything heavy happens.
pub fn prepare(label: &str, r: &ModelRef, scenarios: &[Scenario]) -> Result<Resolved> {
    let res = resolve(r, label)?;
    let max_context = match &res.weights {
        crate::model::Weights::Gguf(p) => {
            let ct = crate::model::quantized::read_header(p)?;
            let meta = crate::model::quantized::describe(p, &ct, res.family, None)?;
            meta.max_context.min(meta.built_context)
        }
        _ => Arch::from_json(res.family, &res.config, &res.config_path)?.max_context(),
    };
    for s in scenarios {
        if s.context_needed() > max_context {
            return Err(Error::Scenario {
                scenario: s.name.clone(),
                model: label.to_string(),
                reason: format!(
                    "needs {} positions ({} prompt + {} new) but the model's max_position_embeddings is {}",
                    s.context_needed(),
                    s.prompt_tokens,
                    s.new_tokens,
                    max_context
                ),
            });
        }
        if s.pipeline && res.tokenizer.is_none() {
            return Err(Error::Scenario {
                scenario: s.name.clone(),
                model: label.to_string(),
                reason: "the pipeline scenario needs a tokenizer.json beside the model".into(),
            });
        }
    }
    Ok(res)
}

/// Loads weights and tokenizer, measuring time and memory of the load.
pub fn open(
    res: Resolved,
    device: &Device,
    dtype: DType,
    context_cap: Option<usize>,
) -> Result<Loaded> {
    let heap_before = memory::heap_current().unwrap_or(0);
    memory::reset_peak();
    let rss_reset = memory::reset_rss_peak();
    let t = Instant::now();
    let opts = model::LoadOptions {
        device: device.clone(),
        dtype,
        context_cap,
    };
    let model = model::load(
        res.family,
        &res.config,
        &res.config_path,
        &res.weights,
        &opts,
    )?;
    let fill_secs = t.elapsed().as_secs_f64();
    let tokenizer = res
        .tokenizer
        .as_deref()
        .map(crate::tokenizer::load)
        .transpose()?;
    crate::device::sync(device)?;
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
        fill_gbs: matches!(res.weights, model::Weights::Seeded(_))
            .then(|| model.meta().weight_bytes as f64 / fill_secs.max(1e-9) / 1e9),
    };
    Ok(Loaded {
        resolved: res,
        model,
        tokenizer,
        load,
    })
}

/// Measured prefill and decode rates (tokens/s) from one short greedy generation (16-token
/// prompt, 8 new tokens) after one untimed run of the same shape. Only used to size
/// criterion's measurement window; never reported as a result.
pub fn probe_rates(m: &mut dyn CausalLm, seed: u64) -> Result<(f64, f64)> {
    let prompt = Prompt::Ids(prompt_ids(16, m.meta().vocab, seed, u64::MAX));
    let mut sampler = Sampler::new(SamplingParams::GREEDY, seed);
    generate(m, &prompt, 8, &mut sampler, None)?;
    let t = generate(m, &prompt, 8, &mut sampler, None)?;
    let pp = 16.0 / t.ttft().as_secs_f64().max(1e-9);
    let tg = 7.0 / (t.e2e() - t.ttft()).as_secs_f64().max(1e-9);
    Ok((pp, tg))
}
