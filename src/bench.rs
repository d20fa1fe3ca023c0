//! The criterion glue every file in benches/ shares: group settings for multi-second
//! iterations, the generation benchmark loop (iter_custom, sync before the clock stops,
//! records of every timed trial), and the exit path for bad input.

use std::cell::RefCell;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

use crate::error::{Error, Result};
use crate::generate::{generate, scenario_prompt, Trace};
use crate::memory;
use crate::options::Plan;
use crate::record::{gen_metrics, ModelInfo, Record};
use crate::report::{reports_root, RunDir};
use crate::runner::{open, prepare, probe_rates, Loaded};
use crate::sampling::Sampler;
use crate::scenario::Scenario;

/// Prints a one-line error and exits non-zero: the bench's answer to bad input.
pub fn exit_on_error<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// Above this, a benchmark takes criterion's minimum: 10 samples of one iteration each.
pub const LONG_BUDGET: Duration = Duration::from_secs(120);

/// A group configured for long iterations: flat sampling, the minimum 10 samples, a warm-up
/// of exactly one full iteration (the first routine call), and a measurement window sized
/// from an estimate of one iteration: at least two iterations per sample where that fits in
/// [`LONG_BUDGET`], else one (criterion then prints its "unable to complete" note, which is
/// expected for multi-second generations).
pub fn long_group<'a>(
    c: &'a mut Criterion,
    name: &str,
    est_iter: Duration,
    min_measure: Duration,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    let two_per_sample = est_iter.mul_f64(10.0 * 1.5);
    let window = if two_per_sample > LONG_BUDGET {
        est_iter.mul_f64(10.0 * 0.9)
    } else {
        two_per_sample.max(min_measure)
    };
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_nanos(1))
        .measurement_time(window.max(Duration::from_millis(1)));
    g
}

/// The current run folder for `cargo bench` (created on the first record).
pub fn run_dir(plan_label: Option<&str>) -> RunDir {
    RunDir::new(&reports_root(), plan_label)
}

/// Collects what the timed calls of one benchmark produced. Criterion's first call is its
/// warm-up (warm_up_time is 1 ns, so exactly one call); later calls are measured samples.
pub struct Samples<T> {
    calls: usize,
    pub measured: Vec<T>,
    pub error: Option<Error>,
}

impl<T> Default for Samples<T> {
    fn default() -> Self {
        Samples {
            calls: 0,
            measured: Vec::new(),
            error: None,
        }
    }
}

impl<T> Samples<T> {
    /// Registers a call; true when it is a measured one.
    pub fn next_call(&mut self) -> bool {
        self.calls += 1;
        self.calls > 1
    }
}

/// Runs every scenario of the plan on every model: one criterion group per scenario, one
/// benchmark per model, `Throughput::Elements(new tokens)` so criterion prints tokens/s.
/// Each model is loaded once, runs all its scenarios, and is dropped before the next loads.
pub fn generation(c: &mut Criterion, plan: &Plan, run: &mut RunDir) -> Result<()> {
    // Resolve everything first: a bad model or an impossible scenario fails before any
    // weights load.
    let mut prepared = Vec::new();
    for (label, r) in &plan.models {
        prepared.push(prepare(label, r, &plan.scenarios)?);
    }
    let device = plan.device.open()?;
    for res in prepared {
        let label = res.label.clone();
        eprintln!("loading {label} ({}) ...", res.source);
        let mut loaded = open(res, &device, plan.dtype, Some(plan.context_cap()))?;
        eprintln!(
            "loaded {label}: {} params, {:.2} s",
            loaded.model.meta().params,
            loaded.load.seconds
        );
        let (pp, tg) = probe_rates(loaded.model.as_mut(), plan.seed)?;
        for s in &plan.scenarios {
            let est = Duration::from_secs_f64(s.prompt_tokens as f64 / pp + s.new_tokens as f64 / tg);
            bench_scenario(c, plan, run, &mut loaded, s, est)?;
        }
    }
    Ok(())
}

fn bench_scenario(
    c: &mut Criterion,
    plan: &Plan,
    run: &mut RunDir,
    loaded: &mut Loaded,
    s: &Scenario,
    est: Duration,
) -> Result<()> {
    let label = loaded.resolved.label.clone();
    let samples: RefCell<Samples<Trace>> = RefCell::default();
    let peak: RefCell<Option<u64>> = RefCell::default();
    {
        let mut g = long_group(c, &s.name, est, plan.min_measure);
        g.throughput(Throughput::Elements(s.new_tokens as u64));
        let vocab = loaded.model.meta().vocab;
        let Loaded { model, tokenizer, .. } = loaded;
        g.bench_function(BenchmarkId::from_parameter(&label), |b| {
            b.iter_custom(|iters| {
                let mut st = samples.borrow_mut();
                let measured = st.next_call();
                if measured && st.measured.is_empty() {
                    memory::reset_peak();
                }
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if st.error.is_some() {
                        return Duration::from_nanos(1);
                    }
                    // Trial number drives prompt and sampler seed: distinct per trial,
                    // identical across runs.
                    let trial = st.calls as u64 * 1000 + st.measured.len() as u64;
                    let out = scenario_prompt(s, vocab, tokenizer.as_ref(), plan.seed, trial).and_then(|p| {
                        let mut sampler = Sampler::new(s.sampling, plan.seed ^ trial);
                        generate(model.as_mut(), &p, s.new_tokens, &mut sampler, tokenizer.as_ref())
                    });
                    match out {
                        Ok(t) => {
                            total += t.e2e();
                            if measured {
                                st.measured.push(t);
                            }
                        }
                        Err(e) => st.error = Some(e),
                    }
                }
                if measured {
                    *peak.borrow_mut() = memory::heap_peak();
                }
                total
            })
        });
        g.finish();
    }
    let st = samples.into_inner();
    if let Some(e) = st.error {
        return Err(e);
    }
    if st.measured.is_empty() {
        return Ok(()); // test or list mode, or filtered out: nothing measured
    }
    let mut rec = generation_record(loaded, s, plan, &st.measured);
    rec.memory.host_peak_bytes = peak.into_inner();
    run.push(rec)?;
    Ok(())
}

/// The record of a generation benchmark from its measured traces.
pub fn generation_record(loaded: &Loaded, s: &Scenario, plan: &Plan, traces: &[Trace]) -> Record {
    let samples: Vec<f64> = traces.iter().map(|t| t.e2e().as_secs_f64()).collect();
    let mut r = Record::from_samples("generation", &s.name, samples, s.new_tokens as u64);
    r.model = model_info(loaded);
    r.dtype = plan.dtype.as_str().to_string();
    r.device = plan.device.to_string();
    r.prompt_tokens = s.prompt_tokens;
    r.new_tokens = s.new_tokens;
    r.sampling = Some(s.sampling);
    r.sampling_desc = s.sampling.describe();
    r.seed = plan.seed;
    r.eos_ignored = true;
    r.pipeline = s.pipeline;
    r.gen = Some(gen_metrics(traces));
    r.memory.host_method = if memory::heap_current().is_some() {
        "counting global allocator (live heap, model included)".into()
    } else {
        "not available (counting allocator not installed)".into()
    };
    r.memory.gpu_used_bytes = crate::record::gpu_used_bytes();
    r.memory.gpu_method = if r.memory.gpu_used_bytes.is_some() {
        "NVML device memory in use after the trials".into()
    } else {
        "not available (no NVIDIA driver / NVML)".into()
    };
    r
}

pub fn model_info(l: &Loaded) -> ModelInfo {
    let m = l.model.meta();
    ModelInfo {
        label: l.resolved.label.clone(),
        source: l.resolved.source.clone(),
        family: m.family.to_string(),
        params: m.params,
        weight_bytes: m.weight_bytes,
        layers: m.layers,
        hidden: m.hidden,
        vocab: m.vocab,
        max_context: m.max_context,
        built_context: m.built_context,
        prefill_mode: m.prefill.clone(),
        tokenizer: l.resolved.tokenizer_kind.clone(),
        load_seconds: l.load.seconds,
        load_heap_peak_bytes: l.load.heap_peak_bytes,
        load_rss_peak_bytes: l.load.rss_peak_bytes,
    }
}
