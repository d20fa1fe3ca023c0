//! Speed against KV-cache depth (llama-bench's `-d`): the cache is filled to depth d once,
//! outside any timed region, and snapshotted ([`CausalLm::snapshot`]); each iteration
//! restores it (untimed) and times a prefill of P tokens at positions d.., then restores again
//! (untimed) and times a greedy decode of N tokens at positions d.. (device synchronised
//! before each clock read that ends a timed region). Records carry the depth in their id and
//! shape, so `compare` joins on it; the roofline counts the KV cache read at that depth.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::engine::generate::prompt_ids;
use crate::error::{Error, Result};
use crate::measure::calibration::Calibration;
use crate::measure::device::{sync, DeviceSpec};
use crate::measure::inject;
use crate::measure::memory;
use crate::measure::stats::{median, percentiles};
use crate::models::sources::loading::Loaded;
use crate::models::{CausalLm, KvState};
use crate::output::record::{GenMetrics, Kind, Record};

use super::generation::{model_info, precision_of};
use super::{Measured, Target, Workload};

/// Chunk of the untimed fill (bounds its attention scores to FILL_CHUNK x depth).
pub const FILL_CHUNK: usize = 512;

/// The timed parts of one iteration.
#[derive(Debug, Clone, Copy, Default)]
pub struct DepthTimes {
    pub prefill: Option<Duration>,
    pub decode: Option<Duration>,
}

pub struct Depth<'a> {
    pub loaded: &'a mut Loaded,
    pub depth: usize,
    /// Prefill tokens timed at the depth (0: no prefill).
    pub prompt: usize,
    /// Decode tokens timed at the depth (0: no decode).
    pub gen: usize,
    pub seed: u64,
    pub device: DeviceSpec,
    pub dtype: candle_core::DType,
    pub calibration: Option<Calibration>,
    state: Option<KvState>,
    fill_s: Option<f64>,
    restores: BTreeSet<&'static str>,
    /// Each trial's generated ids (prefill's token, then decode's), trial 0 first: the
    /// record's outputs (issue 59).
    ids: crate::measure::outputs::Ids,
    /// The model's output probe (`engine::probe`), taken once per model by the suite.
    pub probe: Option<crate::measure::outputs::Probe>,
}

impl<'a> Depth<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        loaded: &'a mut Loaded,
        depth: usize,
        prompt: usize,
        gen: usize,
        seed: u64,
        device: DeviceSpec,
        dtype: candle_core::DType,
        calibration: Option<Calibration>,
    ) -> Result<Depth<'a>> {
        if prompt == 0 && gen == 0 {
            return Err(Error::Report(
                "depth: nothing to time (prefill and decode tokens are both 0)".into(),
            ));
        }
        let need = depth + prompt.max(gen);
        let built = loaded.model.meta().built_context;
        if need > built {
            return Err(Error::Scenario {
                scenario: format!("depth {depth}"),
                model: loaded.resolved.label.clone(),
                reason: format!(
                    "needs {need} positions but the model was built for {built} (load it with a larger context cap)"
                ),
            });
        }
        Ok(Depth {
            loaded,
            depth,
            prompt,
            gen,
            seed,
            device,
            dtype,
            calibration,
            state: None,
            fill_s: None,
            restores: BTreeSet::new(),
            ids: Default::default(),
            probe: None,
        })
    }

    /// Fills the cache to the depth (once) and keeps its snapshot.
    fn ensure_filled(&mut self) -> Result<()> {
        if self.state.is_some() {
            return Ok(());
        }
        let m = self.loaded.model.as_mut();
        let t = Instant::now();
        m.reset()?;
        let ids = prompt_ids(self.depth, m.meta().vocab, self.seed, u64::MAX - 1);
        let mut pos = 0;
        for c in ids.chunks(FILL_CHUNK) {
            m.forward(c, pos)?;
            pos += c.len();
        }
        sync(m.device())?;
        self.fill_s = Some(t.elapsed().as_secs_f64());
        self.state = Some(m.snapshot()?);
        Ok(())
    }

    fn restore(&mut self) -> Result<()> {
        let s = self.state.as_ref().expect("filled");
        let how = self.loaded.model.restore(s)?;
        self.restores.insert(how.name());
        Ok(sync(self.loaded.model.device())?)
    }
}

/// Greedy argmax of the last logits, on the host (a device sync), through the engine's forward
/// path (so the numeric injection reaches it as it reaches every benchmark).
fn argmax(m: &mut dyn CausalLm, tokens: &[u32], pos: usize) -> Result<u32> {
    Ok(crate::engine::generate::forward(m, tokens, pos)?
        .argmax(0)?
        .to_scalar::<u32>()?)
}

impl Workload for Depth<'_> {
    type Out = DepthTimes;

    fn group(&self) -> String {
        "depth".into()
    }

    /// `<model>/d<depth>-p<prompt>-n<gen>`.
    fn name(&self) -> String {
        format!(
            "{}/d{}-p{}-n{}",
            self.loaded.resolved.label, self.depth, self.prompt, self.gen
        )
    }

    fn target(&self) -> Target {
        Target::new(self.device, precision_of(self.loaded, self.dtype))
    }

    fn tokens_per_iter(&self) -> u64 {
        (self.prompt + self.gen) as u64
    }

    fn pool_device(&self) -> Option<&candle_core::Device> {
        Some(self.loaded.model.device())
    }

    fn iterate(&mut self, trial: u64) -> Result<(Duration, DepthTimes)> {
        self.ensure_filled()?;
        let d = self.depth;
        let vocab = self.loaded.model.meta().vocab;
        let mut out = DepthTimes::default();
        let mut generated = Vec::with_capacity(self.gen + 1);
        if self.prompt > 0 {
            let ids = prompt_ids(self.prompt, vocab, self.seed, trial);
            self.restore()?;
            let m = self.loaded.model.as_mut();
            let t = Instant::now();
            generated.push(argmax(m, &ids, d)?);
            sync(m.device())?;
            // The suite's injected slowdown (MODELBENCH_INJECT_SLOWDOWN) reaches this loop as
            // it reaches the engine's: inside the timed region, after each step.
            inject::after_step(true, t.elapsed());
            out.prefill = Some(t.elapsed());
        }
        if self.gen > 0 {
            let first = prompt_ids(1, vocab, self.seed ^ 0x5eed, trial)[0];
            self.restore()?;
            let m = self.loaded.model.as_mut();
            let t = Instant::now();
            let mut next = first;
            for i in 0..self.gen {
                let step = Instant::now();
                next = argmax(m, &[next], d + i)?;
                // Each step reads its token back (argmax to the host): the step is done here.
                inject::after_step(false, step.elapsed());
                generated.push(next);
            }
            sync(m.device())?;
            out.decode = Some(t.elapsed());
        }
        let total = out.prefill.unwrap_or_default() + out.decode.unwrap_or_default();
        self.ids.push(trial, &generated);
        Ok((total, out))
    }

    /// Samples are prefill + decode seconds of each iteration; prefill and decode tok/s are
    /// medians over iterations of P / prefill time and N / decode time.
    fn record(&self, m: &Measured<DepthTimes>) -> Record {
        let mut r = Record::from_samples(
            Kind::Depth,
            "depth",
            m.iter_s.clone(),
            self.tokens_per_iter(),
        );
        r.power = m.power.clone();
        r.memory.host_peak_bytes = m.heap_peak_bytes;
        r.memory.host_huge_page_bytes = m.huge_page_bytes;
        r.memory.gpu_peak_bytes = m.device_peak_bytes;
        r.memory.host_method = if memory::heap_current().is_some() {
            "counting global allocator: peak live heap over the measured iterations (model, filled KV cache and its snapshot included)".into()
        } else {
            "not available (counting allocator not installed)".into()
        };
        r.model = model_info(self.loaded);
        r.dtype = self.target().precision;
        r.device = self.device.to_string();
        r.prompt_tokens = Some(self.prompt);
        r.new_tokens = Some(self.gen);
        r.sampling_desc = "greedy".into();
        r.seed = Some(self.seed);
        r.eos_ignored = true;
        // The generated ids and the model's probe (issue 59).
        r.outputs = Some(crate::measure::outputs::Outputs {
            ids: self.ids.clone(),
            probe: self.probe.clone(),
        });
        let meta = self.loaded.model.meta();
        r.shape = serde_json::json!({"depth": self.depth, "prompt_tokens": self.prompt,
            "new_tokens": self.gen, "attention": meta.provenance.attention});
        let secs = |f: fn(&DepthTimes) -> Option<Duration>| -> Vec<f64> {
            m.outs
                .iter()
                .filter_map(|o| f(o).map(|d| d.as_secs_f64()))
                .collect()
        };
        let pre = secs(|o| o.prefill);
        let dec = secs(|o| o.decode);
        let rate = |xs: &[f64], n: usize| -> Option<f64> {
            let v: Vec<f64> = xs
                .iter()
                .filter(|s| **s > 0.0)
                .map(|s| n as f64 / s)
                .collect();
            (!v.is_empty() && n > 0).then(|| median(&v))
        };
        let prefill_tok_s = rate(&pre, self.prompt);
        let decode_tok_s = rate(&dec, self.gen);
        let per_token_ms: Vec<f64> = dec
            .iter()
            .map(|s| s * 1e3 / self.gen.max(1) as f64)
            .collect();
        r.gen = Some(GenMetrics {
            ttft_ms: None,
            tpot_ms: percentiles(&per_token_ms),
            itl_ms: None,
            prefill_tok_s,
            decode_tok_s,
            tokenize_ms: None,
            ..Default::default()
        });
        r.roofline = Some(super::work::roofline_depth(
            meta,
            self.depth,
            self.prompt,
            self.gen,
            decode_tok_s,
            (!pre.is_empty()).then(|| median(&pre)),
            self.calibration.as_ref(),
        ));
        let kv_elem = if meta.dtype.starts_with("gguf-") {
            4
        } else {
            self.dtype.size_in_bytes()
        };
        r.extra = serde_json::json!({
            "depth": self.depth,
            "attention": meta.provenance.attention,
            "prefill_s": pre,
            "decode_s": dec,
            "fill_s": self.fill_s,
            "fill_chunk": FILL_CHUNK,
            "restore": self.restores.iter().collect::<Vec<_>>(),
            "kv_bytes_at_depth": 2 * meta.layers * meta.kv_heads * meta.head_dim * self.depth * kv_elem,
            "method": "cache filled to the depth once (untimed, chunks of fill_chunk), snapshotted, restored before each timed prefill and each timed decode",
        });
        r
    }
}

/// depth.png (prefill and decode tok/s against depth, one line per model and precision) and
/// depth.csv in the run folder, from its depth records.
pub fn write_artifacts(run: &mut crate::output::report::RunDir) -> Result<()> {
    let mut pre: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    let mut dec: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    let mut csv = String::from(
        "model,precision,attention,depth,prompt_tokens,new_tokens,prefill_tok_s,decode_tok_s\n",
    );
    for r in run.records().iter().filter(|r| r.kind == Kind::Depth) {
        let depth = r.extra["depth"].as_u64().unwrap_or(0) as f64;
        let key = format!("{} ({})", r.model.label, r.dtype);
        let g = r.gen.clone().unwrap_or_default();
        if let Some(v) = g.prefill_tok_s {
            pre.entry(key.clone()).or_default().push((depth, v));
        }
        if let Some(v) = g.decode_tok_s {
            dec.entry(key.clone()).or_default().push((depth, v));
        }
        let cell = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            r.model.label,
            r.dtype,
            r.model.provenance.attention,
            depth,
            crate::output::csv_count(r.prompt_tokens),
            crate::output::csv_count(r.new_tokens),
            cell(g.prefill_tok_s),
            cell(g.decode_tok_s)
        ));
    }
    if pre.is_empty() && dec.is_empty() {
        return Ok(());
    }
    run.put_file("depth.csv", csv.into_bytes())?;
    let sorted = |m: std::collections::BTreeMap<String, Vec<(f64, f64)>>| {
        m.into_iter()
            .map(|(k, mut v)| {
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                (k, v)
            })
            .collect::<Vec<_>>()
    };
    crate::output::plot::depth_png(
        &run.path.join("depth.png"),
        "speed against KV-cache depth",
        &sorted(pre),
        &sorted(dec),
    )
}

/// The depth suite: per model (loaded once, built for the deepest point), per depth, one
/// [`Depth`] workload; the `depth` bench and `modelbench depth` both run it through
/// [`run_suite`](super::suite::run_suite), then [`write_artifacts`].
pub struct DepthSuite {
    /// (label as written, parsed reference)
    pub models: Vec<(String, crate::models::sources::ModelRef)>,
    pub depths: Vec<usize>,
    pub prompt: usize,
    pub gen: usize,
    pub device: DeviceSpec,
    /// The opened device.
    pub dev: candle_core::Device,
    pub dtype: candle_core::DType,
    pub seed: u64,
    pub attention: crate::models::attention::Attention,
    pub calibration: Option<Calibration>,
    /// Each model's output probe, by label, taken when its first depth starts.
    pub probes: crate::engine::probe::Probes,
}

impl DepthSuite {
    /// Positions the deepest point needs: models are built for this many.
    pub fn context_cap(&self) -> usize {
        self.deepest() + self.prompt.max(self.gen)
    }

    fn deepest(&self) -> usize {
        self.depths.iter().max().copied().unwrap_or(0)
    }
}

impl super::suite::Suite for DepthSuite {
    type Case = crate::models::sources::Resolved;
    type Loaded = Loaded;
    type Work<'a> = Depth<'a>;

    /// Resolves every model and checks the deepest point fits it: its context and, by the
    /// memory preflight, the device.
    fn cases(&self, say: &dyn super::suite::Say) -> Result<Vec<Self::Case>> {
        use crate::engine::preflight;
        let cap = self.context_cap();
        let deepest = self.deepest();
        let mut prepared = Vec::new();
        for (label, r) in &self.models {
            let res = crate::engine::scenario::prepare(label, r, &[])?;
            let meta = preflight::meta_of(&res, self.dtype, cap)?;
            if cap > meta.max_context {
                return Err(Error::Scenario {
                    scenario: format!("depth {deepest}"),
                    model: res.label.clone(),
                    reason: format!(
                        "needs {cap} positions but the model's max_position_embeddings is {}",
                        meta.max_context
                    ),
                });
            }
            let e = preflight::estimate(
                &meta,
                FILL_CHUNK.min(deepest).max(self.prompt),
                cap,
                self.attention,
            );
            preflight::check_fits(
                &format!("depth {deepest}"),
                &res.label,
                &e,
                self.attention,
                preflight::available(&self.dev),
            )?;
            if say.verbose() {
                say.say(&format!(
                    "{label}: preflight estimate {} for {cap} positions",
                    e.describe()
                ));
            }
            prepared.push(res);
        }
        Ok(prepared)
    }

    fn load(&self, res: Self::Case, say: &dyn super::suite::Say) -> Result<Loaded> {
        say.loading(&res.label, &res.source);
        let loaded = crate::models::sources::loading::open_with(
            res,
            &self.dev,
            self.dtype,
            Some(self.context_cap()),
            self.attention,
        )?;
        say.say(&crate::models::sources::loading::load_line(&loaded));
        Ok(loaded)
    }

    fn points(&self) -> usize {
        self.depths.len()
    }

    fn workload<'a>(
        &'a self,
        loaded: &'a mut Loaded,
        p: usize,
        say: &dyn super::suite::Say,
    ) -> Result<Depth<'a>> {
        // The output probe, once per model, outside every timed region (issue 59).
        let opening = crate::engine::probe::Opening::of(self.device, self.dtype, self.attention);
        let probe = crate::engine::probe::once(&self.probes, loaded, &opening, &|l| say.say(l))?;
        let mut d = Depth::new(
            loaded,
            self.depths[p],
            self.prompt,
            self.gen,
            self.seed,
            self.device,
            self.dtype,
            self.calibration.clone(),
        )?;
        d.probe = Some(probe);
        Ok(d)
    }

    /// Prefill and decode tok/s at the depth (criterion's block shows only the whole
    /// iteration), with the fill time, the restore kinds and the backend for the CLI.
    fn result_line(&self, p: usize, r: &Record, verbose: bool) -> Option<String> {
        let d = self.depths[p];
        let g = r.gen.clone().unwrap_or_default();
        let na = crate::output::report::na;
        Some(if verbose {
            format!(
                "{:>24} depth {d:>6}: prefill {:>9} tok/s  decode {:>8} tok/s  fill {:.2} s  restore {}  ({})",
                r.model.label,
                na(g.prefill_tok_s, 1),
                na(g.decode_tok_s, 1),
                r.extra["fill_s"].as_f64().unwrap_or(f64::NAN),
                r.extra["restore"],
                r.model.provenance.attention,
            )
        } else {
            format!(
                "depth {d}: prefill {} tok/s, decode {} tok/s (restore: {})",
                na(g.prefill_tok_s, 1),
                na(g.decode_tok_s, 1),
                r.extra["restore"]
            )
        })
    }
}
