//! Generation: one scenario (prompt length, new tokens, sampling) on one loaded model. One
//! iteration is one fixed-length generation; its timed region is the engine's (KV cache reset
//! and prompt construction outside the clock).

use std::time::Duration;

use crate::engine::generate::{generate, scenario_prompt, Trace};
use crate::engine::sampling::Sampler;
use crate::engine::scenario::Scenario;
use crate::error::Result;
use crate::measure::calibration::Calibration;
use crate::measure::device::DeviceSpec;
use crate::measure::memory;
use crate::models::sources::loading::Loaded;
use crate::output::record::{gen_metrics, Kind, ModelInfo, Precision, Record};

use super::{Measured, Target, Workload};

/// The precision a loaded model runs at: GGUF models name their weight type.
pub fn precision_of(loaded: &Loaded, dtype: candle_core::DType) -> Precision {
    let md = &loaded.model.meta().dtype;
    match md.strip_prefix("gguf-") {
        Some(t) => Precision::Gguf(t.to_string()),
        None => Precision::Float(dtype),
    }
}

/// The quality-verdict key of a loaded model run on `device` in `dtype`
/// ([`crate::output::quality::VerdictKey`]): its weights file's sha256, implementation,
/// device, precision and this build's commit.
pub fn verdict_key(
    loaded: &Loaded,
    device: DeviceSpec,
    dtype: candle_core::DType,
) -> std::result::Result<crate::output::quality::VerdictKey, String> {
    crate::output::quality::VerdictKey::of(
        &loaded.resolved.weights,
        &loaded.model.meta().provenance.implementation,
        &device.to_string(),
        &format!(
            "{} ({})",
            precision_of(loaded, dtype).name(),
            dtype.as_str()
        ),
    )
}

pub struct Generation<'a> {
    pub loaded: &'a mut Loaded,
    pub scenario: &'a Scenario,
    pub seed: u64,
    pub device: DeviceSpec,
    pub dtype: candle_core::DType,
    /// The machine's roof for utilisation figures (None: not calibrated).
    pub calibration: Option<Calibration>,
    /// The model's output probe (`engine::probe`), taken once per model by the suite; None:
    /// not taken (the record then keeps only the ids).
    pub probe: Option<crate::measure::outputs::Probe>,
    /// The generated ids of every trial so far, trial 0 first (the record's outputs).
    pub ids: crate::measure::outputs::Ids,
    /// Called after every token with the clock stopped (a paired worker in lockstep waits
    /// there for its turn; `verdicts::worker`). None: the plain loop.
    pub step_gate: Option<StepGate<'a>>,
}

/// What [`Generation::step_gate`] holds: called with each token, false ends the trial.
pub type StepGate<'a> = Box<dyn FnMut(u32) -> bool + 'a>;

impl Workload for Generation<'_> {
    type Out = Trace;

    fn group(&self) -> String {
        self.scenario.name.clone()
    }

    fn name(&self) -> String {
        self.loaded.resolved.label.clone()
    }

    fn target(&self) -> Target {
        Target::new(self.device, precision_of(self.loaded, self.dtype))
    }

    fn tokens_per_iter(&self) -> u64 {
        self.scenario.new_tokens as u64
    }

    fn pool_device(&self) -> Option<&candle_core::Device> {
        Some(self.loaded.model.device())
    }

    /// Prompt and sampler are a function of (seed, trial): trials differ, runs repeat.
    fn iterate(&mut self, trial: u64) -> Result<(Duration, Trace)> {
        let s = self.scenario;
        let l = &mut *self.loaded;
        let prompt = scenario_prompt(
            s,
            l.model.meta().vocab,
            l.tokenizer.as_ref(),
            self.seed,
            trial,
        )?;
        let mut sampler = Sampler::new(s.sampling, self.seed ^ trial);
        let t = match self.step_gate.as_mut() {
            None => generate(
                l.model.as_mut(),
                &prompt,
                s.new_tokens,
                &mut sampler,
                l.tokenizer.as_ref(),
            )?,
            Some(gate) => crate::engine::generate::generate_until(
                l.model.as_mut(),
                &prompt,
                s.new_tokens,
                &mut sampler,
                l.tokenizer.as_ref(),
                &mut **gate,
            )?,
        };
        self.ids.push(trial, &t.tokens);
        Ok((t.e2e(), t))
    }

    /// Samples are the end-to-end seconds of every measured generation.
    fn record(&self, m: &Measured<Trace>) -> Record {
        let s = self.scenario;
        let mut r = Record::from_samples(
            Kind::Generation,
            &s.name,
            m.iter_s.clone(),
            s.new_tokens as u64,
        );
        r.power = m.power.clone();
        r.memory.host_peak_bytes = m.heap_peak_bytes;
        r.memory.host_huge_page_bytes = m.huge_page_bytes;
        r.memory.gpu_peak_bytes = m.device_peak_bytes;
        r.model = model_info(self.loaded);
        r.dtype = self.target().precision;
        r.device = self.device.to_string();
        r.prompt_tokens = Some(s.prompt_tokens);
        r.new_tokens = Some(s.new_tokens);
        r.sampling = Some(s.sampling);
        r.sampling_desc = s.sampling.describe();
        r.shape = serde_json::json!({"prompt_tokens": s.prompt_tokens, "new_tokens": s.new_tokens,
            "pipeline": s.pipeline});
        r.seed = Some(self.seed);
        r.eos_ignored = true;
        r.pipeline = s.pipeline;
        let g = gen_metrics(&m.outs);
        r.extra["trial_rates"] = serde_json::json!(crate::output::record::trial_rates(&m.outs));
        let ttft_s = g.ttft_ms.map(|p| p.p50 / 1e3);
        r.roofline = Some(super::work::roofline(
            self.loaded.model.meta(),
            s.prompt_tokens,
            s.new_tokens,
            g.decode_tok_s,
            ttft_s,
            self.calibration.as_ref(),
        ));
        r.gen = Some(g);
        r.outputs = Some(crate::measure::outputs::Outputs {
            ids: self.ids.clone(),
            probe: self.probe.clone(),
        });
        r.quality = Some(crate::output::quality::verdict_value(
            &self.loaded.resolved.label,
            verdict_key(self.loaded, self.device, self.dtype),
        ));
        r.memory.host_method = if memory::heap_current().is_some() {
            "counting global allocator: peak live heap over the measured trials, model included"
                .into()
        } else {
            "not available (counting allocator not installed)".into()
        };
        r.memory.gpu_used_bytes = crate::measure::gpu::used_bytes();
        r.memory.gpu_method = if r.memory.gpu_used_bytes.is_some() {
            "NVML device memory in use after the trials".into()
        } else {
            "not available (no NVIDIA driver / NVML)".into()
        };
        if r.memory.gpu_peak_bytes.is_some() {
            r.memory.gpu_method.push_str("; gpu_peak_bytes: high-water mark of the CUDA memory pool candle allocates from over the measured trials (weights, KV cache, activations; cuBLAS workspace and context outside it)");
        }
        r
    }
}

pub fn model_info(l: &Loaded) -> ModelInfo {
    let m = l.model.meta();
    // A size the model does not state (0) is recorded as not known, never as 0.
    fn stated<T: Default + PartialOrd>(v: T) -> Option<T> {
        (v > T::default()).then_some(v)
    }
    ModelInfo {
        label: l.resolved.label.clone(),
        source: l.resolved.source.clone(),
        family: m.family.to_string(),
        params: stated(m.params),
        weight_bytes: stated(m.weight_bytes),
        layers: stated(m.layers),
        hidden: stated(m.hidden),
        vocab: stated(m.vocab),
        max_context: stated(m.max_context),
        built_context: stated(m.built_context),
        prefill_mode: m.prefill.clone(),
        tokenizer: l.resolved.tokenizer_kind.clone(),
        load_seconds: Some(l.load.seconds),
        load_heap_peak_bytes: l.load.heap_peak_bytes,
        load_rss_peak_bytes: l.load.rss_peak_bytes,
        load_rss_rise_bytes: l.load.rss_rise_bytes,
        load_rss_weights_rise_bytes: l.load.rss_weights_rise_bytes,
        load_fill_gbs: l.load.fill_gbs,
        provenance: m.provenance.clone(),
    }
}

/// The generation suite: every scenario on every model, one model loaded at a time (built for
/// the longest scenario), its scenarios measured in order; the benches' `generation` and
/// `modelbench run` both run it through [`run_suite`](super::suite::run_suite).
pub struct GenerationSuite {
    /// (label as written, parsed reference)
    pub models: Vec<(String, crate::models::sources::ModelRef)>,
    pub scenarios: Vec<Scenario>,
    pub device: DeviceSpec,
    /// The opened device.
    pub dev: candle_core::Device,
    pub dtype: candle_core::DType,
    pub seed: u64,
    pub attention: crate::models::attention::Attention,
    /// Positions the models are built for (the longest scenario's).
    pub context_cap: usize,
    pub calibration: Option<Calibration>,
    /// Each model's output probe, by label, taken when its first scenario starts.
    pub probes: crate::engine::probe::Probes,
}

impl super::suite::Suite for GenerationSuite {
    type Case = crate::models::sources::Resolved;
    type Loaded = Loaded;
    type Work<'a> = Generation<'a>;

    /// Resolves every model and checks every scenario fits it (context and memory).
    fn cases(&self, _: &dyn super::suite::Say) -> Result<Vec<Self::Case>> {
        let mut prepared = Vec::new();
        for (label, r) in &self.models {
            prepared.push(crate::engine::scenario::prepare(label, r, &self.scenarios)?);
        }
        for res in &prepared {
            crate::engine::preflight::check_scenarios(
                res,
                &self.scenarios,
                self.dtype,
                &self.dev,
                self.attention,
            )?;
        }
        Ok(prepared)
    }

    /// Loads the model with the suite's attention backend, and warns of scenarios past the
    /// positions it computes exactly.
    fn load(&self, res: Self::Case, say: &dyn super::suite::Say) -> Result<Loaded> {
        let label = res.label.clone();
        say.loading(&label, &res.source);
        let loaded = crate::models::sources::loading::open_with(
            res,
            &self.dev,
            self.dtype,
            Some(self.context_cap),
            self.attention,
        )?;
        say.say(&crate::models::sources::loading::load_line(&loaded));
        if let Some(w) = loaded.model.meta().provenance.exact_context {
            for s in self.scenarios.iter().filter(|s| s.context_needed() > w) {
                say.say(&format!("warning: {label} / {}: {} positions exceed the {w} this model computes exactly; timings are valid, outputs past {w} are degraded", s.name, s.context_needed()));
            }
        }
        Ok(loaded)
    }

    fn points(&self) -> usize {
        self.scenarios.len()
    }

    /// From the model's prefill and decode rates, probed once (short untimed generations).
    fn estimates(&self, loaded: &mut Loaded, listing: bool) -> Result<Vec<Option<Duration>>> {
        let (pp, tg) = if listing {
            (1e9, 1e9)
        } else {
            crate::engine::generate::probe_rates(loaded.model.as_mut(), self.seed)?
        };
        Ok(self
            .scenarios
            .iter()
            .map(|s| {
                Some(Duration::from_secs_f64(
                    s.prompt_tokens as f64 / pp + s.new_tokens as f64 / tg,
                ))
            })
            .collect())
    }

    fn workload<'a>(
        &'a self,
        loaded: &'a mut Loaded,
        p: usize,
        say: &dyn super::suite::Say,
    ) -> Result<Generation<'a>> {
        // The output probe, once per model, outside every timed region (issue 59).
        let opening = crate::engine::probe::Opening::of(self.device, self.dtype, self.attention);
        let probe = crate::engine::probe::once(&self.probes, loaded, &opening, &|l| say.say(l))?;
        Ok(Generation {
            loaded,
            scenario: &self.scenarios[p],
            seed: self.seed,
            device: self.device,
            dtype: self.dtype,
            calibration: self.calibration.clone(),
            probe: Some(probe),
            ids: Default::default(),
            step_gate: None,
        })
    }

    /// The CLI's line: tok/s and the TTFT and TPOT medians (criterion prints its own block).
    /// A run whose logits went NaN/Inf says so whether verbose or not.
    fn result_line(&self, p: usize, rec: &Record, verbose: bool) -> Option<String> {
        let warning = rec.gen.as_ref().and_then(|g| g.non_finite_warning());
        if !verbose {
            return warning.map(|w| {
                format!(
                    "{} {}: {w}: the speed is of a model computing garbage",
                    rec.model.label, self.scenarios[p].name
                )
            });
        }
        let power = if rec.power.mean_w.is_some() {
            format!("  GPU {}", rec.power.describe())
        } else {
            String::new()
        };
        let p50 = |p: Option<crate::measure::stats::Percentiles>| {
            crate::output::report::na(p.map(|p| p.p50), 2)
        };
        let non_finite = warning.map(|w| format!("  {w}")).unwrap_or_default();
        Some(format!(
            "{:>24} {:<10} {:>9} tok/s  TTFT p50 {:>8} ms  TPOT p50 {:>7} ms{power}{non_finite}",
            rec.model.label,
            self.scenarios[p].name,
            crate::output::report::na(rec.tok_s, 1),
            p50(rec.gen.as_ref().and_then(|g| g.ttft_ms)),
            p50(rec.gen.as_ref().and_then(|g| g.tpot_ms)),
        ))
    }
}
