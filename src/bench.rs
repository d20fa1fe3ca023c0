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
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_nanos(1))
        .measurement_time(window.max(Duration::from_millis(1)));
    g
}

/// The current run folder for `cargo bench` (created on the first record).
pub fn run_dir(plan_label: Option<&str>) -> RunDir {
    RunDir::new(&reports_root(), plan_label)
}

/// Samples per benchmark in every group this crate configures.
pub const SAMPLE_SIZE: usize = 10;

/// Collects what each call of a benchmark routine produced. Criterion calls the routine
/// for warm-up first and then once per sample, so the measured items are those of the last
/// [`SAMPLE_SIZE`] calls; in test or list mode there are fewer calls and nothing is measured.
pub struct Samples<T> {
    calls: Vec<Vec<T>>,
    pub error: Option<Error>,
}

impl<T> Default for Samples<T> {
    fn default() -> Self {
        Samples {
            calls: Vec::new(),
            error: None,
        }
    }
}

impl<T> Samples<T> {
    /// Starts a new routine call; returns its index.
    pub fn start_call(&mut self) -> usize {
        self.calls.push(Vec::new());
        self.calls.len() - 1
    }

    pub fn push(&mut self, item: T) {
        self.calls.last_mut().expect("start_call first").push(item);
    }

    /// Items of the measured calls, or None when criterion did not measure (test/list mode).
    pub fn measured(self) -> Option<Vec<T>> {
        let n = self.calls.len();
        (n > SAMPLE_SIZE).then(|| {
            self.calls
                .into_iter()
                .skip(n - SAMPLE_SIZE)
                .flatten()
                .collect()
        })
    }
}

/// A group for short routines (microseconds to a few hundred milliseconds): flat sampling,
/// [`SAMPLE_SIZE`] samples, half a second of warm-up.
pub fn short_group<'a>(
    c: &'a mut Criterion,
    name: &str,
    measure: Duration,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measure);
    g
}

/// Benchmarks `f` with the device synchronised before the clock stops; returns the measured
/// per-iteration seconds, one per criterion sample (None in test/list mode).
pub fn timed<F>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    dev: &candle_core::Device,
    mut f: F,
) -> Result<Option<Vec<f64>>>
where
    F: FnMut() -> Result<()>,
{
    let samples: RefCell<Samples<f64>> = RefCell::default();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut st = samples.borrow_mut();
            st.start_call();
            if st.error.is_some() {
                return Duration::from_nanos(iters);
            }
            let t = std::time::Instant::now();
            for _ in 0..iters {
                if let Err(e) = f().and_then(|_| crate::device::sync(dev)) {
                    st.error = Some(e);
                    break;
                }
            }
            let d = t.elapsed();
            st.push(d.as_secs_f64() / iters as f64);
            d
        })
    });
    let st = samples.into_inner();
    if let Some(e) = st.error {
        return Err(e);
    }
    Ok(st.measured())
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
            let est =
                Duration::from_secs_f64(s.prompt_tokens as f64 / pp + s.new_tokens as f64 / tg);
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
        let Loaded {
            model, tokenizer, ..
        } = loaded;
        g.bench_function(BenchmarkId::from_parameter(&label), |b| {
            b.iter_custom(|iters| {
                let mut st = samples.borrow_mut();
                let call = st.start_call();
                if call == 1 {
                    memory::reset_peak(); // the first measured call (call 0 is the warm-up)
                }
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    if st.error.is_some() {
                        return Duration::from_nanos(1);
                    }
                    // Trial number drives prompt and sampler seed: distinct per trial,
                    // identical across runs.
                    let trial = call as u64 * 1000 + i;
                    let out = scenario_prompt(s, vocab, tokenizer.as_ref(), plan.seed, trial)
                        .and_then(|p| {
                            let mut sampler = Sampler::new(s.sampling, plan.seed ^ trial);
                            generate(
                                model.as_mut(),
                                &p,
                                s.new_tokens,
                                &mut sampler,
                                tokenizer.as_ref(),
                            )
                        });
                    match out {
                        Ok(t) => {
                            total += t.e2e();
                            st.push(t);
                        }
                        Err(e) => st.error = Some(e),
                    }
                }
                *peak.borrow_mut() = memory::heap_peak();
                total
            })
        });
        g.finish();
    }
    let st = samples.into_inner();
    if let Some(e) = st.error {
        return Err(e);
    }
    let Some(traces) = st.measured() else {
        return Ok(()); // test or list mode, or filtered out: nothing measured
    };
    let mut rec = generation_record(loaded, s, plan, &traces);
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

/// The `moe_topk` grid. Inputs are seeded; the MoE weights of each (experts, top-k) point are
/// built once. The dense rows use intermediate size k x expert size.
pub fn moe_grid(c: &mut Criterion, plan: &crate::options::MoePlan, run: &mut RunDir) -> Result<()> {
    use crate::moe::{dense_reference, MoeBlock, MoeConfig};
    use candle_core::Module;
    let dev = plan.common.device.open()?;
    let dtype = plan.common.dtype;
    let seed = plan.common.seed;
    let mut g = short_group(c, "moe_topk", Duration::from_secs(2));
    let input = |t: usize| {
        crate::fill::seeded_tensor(
            &(t, plan.hidden).into(),
            seed,
            "moe-input",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            dtype,
            &dev,
        )
        .map(|x| (x * 50.0).expect("scale")) // unit-scale activations
    };
    let mut points: Vec<(String, MoeConfig, bool)> = Vec::new();
    for &e in &plan.experts {
        for &k in &plan.top_k {
            let cfg = MoeConfig {
                hidden: plan.hidden,
                expert_intermediate: plan.intermediate,
                num_experts: e,
                top_k: k,
                norm_topk_prob: true,
            };
            points.push((format!("e{e}-k{k}"), cfg, false));
        }
    }
    for &k in &plan.top_k {
        let cfg = MoeConfig {
            hidden: plan.hidden,
            expert_intermediate: plan.intermediate,
            num_experts: k,
            top_k: k,
            norm_topk_prob: true,
        };
        points.push((format!("dense-k{k}"), cfg, true));
    }
    for (name, cfg, dense) in points {
        let moe = if dense {
            None
        } else {
            Some(MoeBlock::seeded(cfg, seed, dtype, &dev)?)
        };
        let mlp = if dense {
            Some(dense_reference(&cfg, seed, dtype, &dev)?)
        } else {
            None
        };
        for &t in &plan.tokens {
            let x = input(t)?;
            g.throughput(Throughput::Elements(t as u64));
            let id = BenchmarkId::new(&name, format!("t{t}"));
            let samples = timed(&mut g, id, &dev, || {
                let y = match (&moe, &mlp) {
                    (Some(m), _) => m.forward(&x)?,
                    (_, Some(d)) => d.forward(&x)?,
                    _ => unreachable!(),
                };
                std::hint::black_box(y);
                Ok(())
            })?;
            if let Some(samples) = samples {
                let mut r = Record::from_samples(
                    "moe",
                    &format!("moe_topk/{name}/t{t}"),
                    samples,
                    t as u64,
                );
                r.model.label = if dense {
                    format!(
                        "dense SwiGLU (intermediate {})",
                        cfg.top_k * cfg.expert_intermediate
                    )
                } else {
                    format!("MoE {name}")
                };
                r.model.params = if dense {
                    (3 * cfg.hidden * cfg.top_k * cfg.expert_intermediate) as u64
                } else {
                    (cfg.hidden * cfg.num_experts
                        + cfg.num_experts * 3 * cfg.hidden * cfg.expert_intermediate)
                        as u64
                };
                r.dtype = dtype.as_str().into();
                r.device = plan.common.device.to_string();
                r.seed = seed;
                r.prompt_tokens = t;
                r.extra = serde_json::json!({
                    "hidden": cfg.hidden, "expert_intermediate": cfg.expert_intermediate,
                    "num_experts": if dense { 0 } else { cfg.num_experts }, "top_k": cfg.top_k,
                    "tokens": t, "dense_reference": dense, "norm_topk_prob": cfg.norm_topk_prob,
                    "active_params_per_token": if dense { (3 * cfg.hidden * cfg.top_k * cfg.expert_intermediate) as u64 } else { cfg.active_params() },
                    "flops_per_token": if dense { (6 * cfg.hidden * cfg.top_k * cfg.expert_intermediate) as u64 } else { cfg.flops_per_token() },
                });
                run.push(r)?;
            }
        }
    }
    g.finish();
    Ok(())
}
