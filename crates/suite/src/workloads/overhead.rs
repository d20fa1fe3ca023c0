//! The suite's own cost. `Overhead`: the engine's greedy generation against a bare loop doing
//! exactly the engine's model work (same cache reset outside the clock, same device-side
//! argmax). Each iteration first runs the bare loop once untimed on its prompt (the first
//! loop on a new prompt ran slower, which favoured whichever loop went second), then the two
//! loops twice each in ABBA order (BAAB on odd trials) so drift within the iteration hits both
//! alike; every loop must produce the same tokens. The figure is the median of the
//! per-iteration engine/bare ratios with a bootstrap 95% confidence interval. `SamplingCost`: the
//! sampling pipeline per token at a model's real vocabulary size.

use std::time::Duration;

use crate::engine::generate::{bare_greedy, generate, prompt_ids, Prompt};
use crate::engine::sampling::{Sampler, SamplingParams};
use crate::error::{Error, Result};
use crate::measure::device::DeviceSpec;
use crate::measure::stats::{bootstrap_median_ci, median};
use crate::models::sources::loading::Loaded;
use crate::output::record::{Kind, Record};

use super::generation::{model_info, precision_of};
use super::{Measured, Target, Workload};

/// Prompt and generation length of the overhead comparison.
pub const LENGTHS: (usize, usize) = (64, 64);
/// Loops of LENGTHS.1 tokens each iteration runs (see [`Overhead::iterate`]).
const LOOPS_PER_ITER: u64 = 5;

/// Engine vs bare on one model. The timed duration of an iteration (what criterion sees) is
/// the engine's; the bare loop's time rides along in the output.
pub struct Overhead<'a> {
    pub loaded: &'a mut Loaded,
    pub seed: u64,
    pub device: DeviceSpec,
    pub dtype: candle_core::DType,
}

/// One A/B pair: engine seconds, bare seconds.
pub type Pair = (f64, f64);

impl Overhead<'_> {
    fn engine(&mut self, ids: &[u32]) -> Result<(Duration, Vec<u32>)> {
        let mut s = Sampler::new(SamplingParams::GREEDY, self.seed);
        let t = generate(
            self.loaded.model.as_mut(),
            &Prompt::Ids(ids.to_vec()),
            LENGTHS.1,
            &mut s,
            None,
        )?;
        Ok((t.e2e(), t.tokens))
    }

    fn bare(&mut self, ids: &[u32]) -> Result<(Duration, Vec<u32>)> {
        bare_greedy(self.loaded.model.as_mut(), ids, LENGTHS.1)
    }

    /// The engine's and the bare loop's tokens on trial `trial`'s prompt (untimed; the
    /// same-work check of the tests).
    pub fn tokens(&mut self, trial: u64) -> Result<(Vec<u32>, Vec<u32>)> {
        let ids = prompt_ids(LENGTHS.0, self.loaded.model.meta().vocab, self.seed, trial);
        Ok((self.engine(&ids)?.1, self.bare(&ids)?.1))
    }
}

/// Where two greedy token sequences first differ (None: identical).
pub fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    (a != b).then(|| {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()))
    })
}

impl Workload for Overhead<'_> {
    type Out = Pair;

    fn group(&self) -> String {
        "overhead".into()
    }

    fn name(&self) -> String {
        format!("{}/engine-vs-bare", self.loaded.resolved.label)
    }

    fn target(&self) -> Target {
        Target::new(self.device, precision_of(self.loaded, self.dtype))
    }

    fn tokens_per_iter(&self) -> u64 {
        LENGTHS.1 as u64
    }

    /// One untimed bare loop on the trial's prompt, then engine and bare twice each: ABBA on
    /// even trials, BAAB on odd ones. Every loop's tokens must equal the untimed loop's (an
    /// error otherwise: the two loops would not be doing the same work). The timed duration
    /// (criterion's) is the engine's mean; the pair is (engine mean, bare mean) in seconds.
    fn iterate(&mut self, trial: u64) -> Result<(Duration, Pair)> {
        let ids = prompt_ids(LENGTHS.0, self.loaded.model.meta().vocab, self.seed, trial);
        let (_, reference) = self.bare(&ids)?;
        let engine_first = trial.is_multiple_of(2);
        let (mut e, mut b) = (Duration::ZERO, Duration::ZERO);
        for slot in 0..4 {
            let is_engine = (slot == 0 || slot == 3) == engine_first;
            let (d, tokens) = if is_engine {
                self.engine(&ids)?
            } else {
                self.bare(&ids)?
            };
            if let Some(i) = first_difference(&tokens, &reference) {
                return Err(Error::Report(format!(
                    "overhead {}: the {} loop's token {i} differs from the bare loop's on trial \
                     {trial} ({} vs {}); the two loops must do the same work",
                    self.loaded.resolved.label,
                    if is_engine { "engine" } else { "bare" },
                    tokens.get(i).map_or("none".into(), |t| t.to_string()),
                    reference.get(i).map_or("none".into(), |t| t.to_string()),
                )));
            }
            if is_engine {
                e += d;
            } else {
                b += d;
            }
        }
        let (e, b) = (e / 2, b / 2);
        Ok((e, (e.as_secs_f64(), b.as_secs_f64())))
    }

    fn record(&self, m: &Measured<Pair>) -> Record {
        let mut r = Record::from_measured(Kind::Overhead, "overhead", m, LENGTHS.1 as u64);
        // The meter runs over whole iterations: five loops of LENGTHS.1 tokens each (the
        // untimed bare loop, two engine and two bare loops), so that is the energy's
        // denominator, not the one loop criterion's time is of.
        if let (Some(e), Some(t)) = (r.power.energy_j, r.power.tokens) {
            let t = t * LOOPS_PER_ITER;
            r.power.tokens = Some(t);
            r.power.j_per_token = (t > 0).then(|| e / t as f64);
            r.power.method = format!(
                "{}; per token of all {LOOPS_PER_ITER} loops of each iteration (1 untimed bare, 2 engine, 2 bare)",
                r.power.method
            );
        }
        r.model = model_info(self.loaded);
        r.seed = Some(self.seed);
        r.prompt_tokens = Some(LENGTHS.0);
        r.new_tokens = Some(LENGTHS.1);
        r.shape = serde_json::json!({"prompt_tokens": LENGTHS.0, "new_tokens": LENGTHS.1});
        let ratios: Vec<f64> = m.outs.iter().map(|(e, b)| e / b).collect();
        let engine: Vec<f64> = m.outs.iter().map(|p| p.0).collect();
        let bare: Vec<f64> = m.outs.iter().map(|p| p.1).collect();
        let ratio = median(&ratios);
        let ci = bootstrap_median_ci(&ratios, 10_000, 0x0BAD_5EED);
        r.extra = serde_json::json!({
            "lengths": "64/64 greedy",
            "order": "per iteration: one untimed bare loop, then ABBA (even trials, A = engine) or BAAB (odd); engine and bare are the means of their two loops",
            "engine_median_s": median(&engine),
            "bare_median_s": median(&bare),
            "ratio_median": ratio,
            "ratio_ci95": ci.map(|(lo, hi)| vec![lo, hi]),
            "overhead_pct": 100.0 * (ratio - 1.0),
            "overhead_pct_ci95": ci.map(|(lo, hi)| vec![100.0 * (lo - 1.0), 100.0 * (hi - 1.0)]),
            "pairs": m.outs.len(),
            "engine_s": engine,
            "bare_s": bare,
        });
        r
    }
}

/// The sampling pipeline's cost per token at a vocabulary size (host work only).
pub struct SamplingCost {
    /// Whose vocabulary: the model label.
    pub label: String,
    pub scenario: &'static str,
    pub params: SamplingParams,
    pub logits: Vec<f32>,
    pub context: Vec<u32>,
    pub sampler: Sampler,
    pub buf: Vec<f32>,
    /// The model whose vocabulary this is, as its records describe it (None: only the label
    /// and vocabulary are known). Without it a record's parameter count, load time and the
    /// like would read 0, a placeholder, where they describe a real model.
    pub model: Option<crate::output::record::ModelInfo>,
}

impl SamplingCost {
    pub fn new(label: &str, scenario: &'static str, vocab: usize, seed: u64) -> Result<Self> {
        let params = crate::engine::scenario::Scenario::by_name(scenario)?.sampling;
        let logits: Vec<f32> = crate::util::fill::seeded(
            &vocab.into(),
            seed,
            "logits",
            crate::util::fill::Dist::Normal(0.0, 3.0),
            &candle_core::Device::Cpu,
        )?
        .to_vec1()?;
        Ok(SamplingCost {
            label: label.into(),
            scenario,
            params,
            buf: logits.clone(),
            logits,
            context: prompt_ids(320, vocab, seed, 1),
            sampler: Sampler::new(params, seed),
            model: None,
        })
    }

    /// The same, with the whole description of the model whose vocabulary it is.
    pub fn of_model(mut self, model: crate::output::record::ModelInfo) -> Self {
        self.model = Some(model);
        self
    }
}

impl Workload for SamplingCost {
    type Out = ();

    fn group(&self) -> String {
        "overhead".into()
    }

    fn name(&self) -> String {
        format!("{}/sample-{}", self.label, self.scenario)
    }

    fn target(&self) -> Target {
        Target::new(
            DeviceSpec::Cpu,
            crate::output::record::Precision::Float(candle_core::DType::F32),
        )
    }

    fn tokens_per_iter(&self) -> u64 {
        1
    }

    fn iterate(&mut self, _trial: u64) -> Result<(Duration, ())> {
        self.buf.copy_from_slice(&self.logits);
        let t = std::time::Instant::now();
        std::hint::black_box(self.sampler.sample(&mut self.buf, &self.context));
        Ok((t.elapsed(), ()))
    }

    fn record(&self, m: &Measured<()>) -> Record {
        let mut r = Record::from_measured(Kind::Overhead, "overhead", m, 1);
        if let Some(model) = &self.model {
            r.model = model.clone();
        }
        r.model.label = self.label.clone();
        r.model.vocab = Some(self.logits.len());
        r.sampling = Some(self.params);
        r.sampling_desc = self.params.describe();
        r.shape = serde_json::json!({"vocab": self.logits.len(), "context": self.context.len()});
        r.extra = serde_json::json!({"vocab": self.logits.len(), "sampling": self.scenario,
            "per_token_us": median(&m.sample_s) * 1e6});
        r
    }
}

/// Group `overhead`: per fixture family, the engine against the bare loop (interleaved), and
/// the sampling pipeline's cost per token at the family's vocabulary size, each measured by
/// `driver` into `run`.
pub fn run_group<D: super::suite::Driver>(
    s: &super::suite::Setup,
    driver: &mut D,
    run: &mut crate::output::report::RunDir,
) -> Result<()> {
    for fam in ["llama", "qwen3", "gemma3"] {
        let label = format!("fixture:{fam}");
        let res = crate::engine::scenario::prepare(
            &label,
            &crate::models::sources::ModelRef::parse(&label)?,
            &[],
        )?;
        let mut l = crate::models::sources::loading::open(res, &s.dev, s.dtype, Some(256))?;
        let vocab = l.model.meta().vocab;
        let info = model_info(&l);
        let mut w = Overhead {
            loaded: &mut l,
            seed: s.seed,
            device: s.device,
            dtype: s.dtype,
        };
        if let Some(r) = super::suite::measure_into(driver, &mut w, None, run)? {
            let ci = r.extra["ratio_ci95"]
                .as_array()
                .and_then(|v| Some((v.first()?.as_f64()?, v.get(1)?.as_f64()?)))
                .map_or("not available: too few pairs".to_string(), |(lo, hi)| {
                    format!("[{lo:.3}, {hi:.3}]")
                });
            driver.say(&format!(
                "overhead {label}: engine/bare {:.3} (95% CI {ci}), {:+.2}%",
                r.extra["ratio_median"].as_f64().unwrap_or(f64::NAN),
                r.extra["overhead_pct"].as_f64().unwrap_or(f64::NAN),
            ));
        }
        for sc in ["sampled", "full-pipe"] {
            let mut w = SamplingCost::new(&label, sc, vocab, s.seed)?.of_model(info.clone());
            let est = Some(Duration::from_millis(1));
            if let Some(r) = super::suite::measure_into(driver, &mut w, est, run)? {
                driver.say(&format!(
                    "sampling {sc} at vocab {vocab}: {:.1} us/token",
                    r.extra["per_token_us"].as_f64().unwrap_or(f64::NAN)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::ModelInfo;

    /// A sampling row describes the model whose vocabulary it samples, not a model of 0
    /// parameters loaded in 0 s; without the model only its label and vocabulary are set.
    #[test]
    fn a_sampling_record_carries_its_model_and_no_placeholders() {
        let info = ModelInfo {
            label: "fixture:llama".into(),
            family: "llama".into(),
            params: Some(8_282_432),
            load_seconds: Some(0.1),
            vocab: Some(1000),
            ..ModelInfo::default()
        };
        let mut w = SamplingCost::new("fixture:llama", "sampled", 1000, 7)
            .unwrap()
            .of_model(info);
        let r = crate::workloads::run_trials(&mut w, 0, 2).unwrap();
        assert_eq!(r.model.params, Some(8_282_432));
        assert_eq!(r.model.family, "llama");
        assert_eq!(r.model.vocab, Some(1000));
        let mut bare = SamplingCost::new("fixture:llama", "sampled", 1000, 7).unwrap();
        let r = crate::workloads::run_trials(&mut bare, 0, 2).unwrap();
        assert_eq!((r.model.params, r.model.vocab), (None, Some(1000)));
    }
}
