//! The criterion glue every file in benches/ shares: group settings for multi-second
//! iterations, the generation benchmark loop (iter_custom, sync before the clock stops,
//! records of every timed trial), and the exit path for bad input.

use std::cell::RefCell;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

use crate::error::{Error, Result};
use crate::generate::{generate, scenario_prompt, Trace};
use crate::gpu::PowerMeter;
use crate::memory;
use crate::options::Plan;
use crate::record::{gen_metrics, ModelInfo, Power, Record};
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
pub const LONG_BUDGET: Duration = Duration::from_secs(30);

/// A group configured for long iterations: flat sampling, the minimum 10 samples, a warm-up
/// of exactly one full iteration (the first routine call), and a measurement window sized
/// from an estimate of one iteration: at least two iterations per sample where that fits in
/// [`LONG_BUDGET`], else one (criterion then prints its "unable to complete" note, which is
/// expected for multi-second generations).
pub fn long_group<'a, M: criterion::measurement::Measurement>(
    c: &'a mut Criterion<M>,
    name: &str,
    est_iter: Duration,
    min_measure: Duration,
) -> BenchmarkGroup<'a, M> {
    let mut g = c.benchmark_group(name);
    let two_per_sample = est_iter.mul_f64(10.0 * 1.5);
    let window = if two_per_sample > LONG_BUDGET {
        est_iter.mul_f64(10.0 * 0.5)
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

/// What [`timed`] measured: per-iteration seconds, one per criterion sample, and the GPU
/// power of the measured calls.
pub struct Timed {
    pub samples_s: Vec<f64>,
    pub power: Power,
}

/// Benchmarks `f` with the device synchronised before the clock stops; returns the measured
/// per-iteration seconds and the power of the measured calls, each iteration counting
/// `tokens_per_iter` tokens (None in test/list mode).
pub fn timed<F>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    dev: &candle_core::Device,
    tokens_per_iter: u64,
    mut f: F,
) -> Result<Option<Timed>>
where
    F: FnMut() -> Result<()>,
{
    let samples: RefCell<Samples<f64>> = RefCell::default();
    let meter = RefCell::new(PowerMeter::new());
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut st = samples.borrow_mut();
            st.start_call();
            if st.error.is_some() {
                return Duration::from_nanos(iters);
            }
            let mut meter = meter.borrow_mut();
            meter.start();
            let t = std::time::Instant::now();
            for _ in 0..iters {
                if let Err(e) = f().and_then(|_| crate::device::sync(dev)) {
                    st.error = Some(e);
                    break;
                }
            }
            let d = t.elapsed();
            meter.stop(iters);
            st.push(d.as_secs_f64() / iters as f64);
            d
        })
    });
    let st = samples.into_inner();
    if let Some(e) = st.error {
        return Err(e);
    }
    let Some(samples_s) = st.measured() else {
        return Ok(None);
    };
    let mut meter = meter.into_inner();
    meter.keep_last(SAMPLE_SIZE);
    Ok(Some(Timed {
        samples_s,
        power: meter.reading(tokens_per_iter),
    }))
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
            "loaded {label}: {} params, {:.2} s{}",
            loaded.model.meta().params,
            loaded.load.seconds,
            loaded
                .load
                .fill_gbs
                .map(|g| format!(" (seeded fill {g:.2} GB/s)"))
                .unwrap_or_default()
        );
        if let Some(w) = loaded.model.meta().exact_context {
            for s in plan.scenarios.iter().filter(|s| s.context_needed() > w) {
                eprintln!("warning: {label} / {}: {} positions exceed the {w} this model computes exactly in candle 0.11 (sliding-window layers unmasked in decode); timings are valid, outputs past {w} are degraded", s.name, s.context_needed());
            }
        }
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
    let meter = RefCell::new(PowerMeter::new());
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
                let mut meter = meter.borrow_mut();
                meter.start();
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
                meter.stop(iters);
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
    let mut meter = meter.into_inner();
    meter.keep_last(SAMPLE_SIZE);
    rec.power = meter.reading(s.new_tokens as u64);
    run.push(rec)?;
    Ok(())
}

/// The record of a generation benchmark from its measured traces.
pub fn generation_record(loaded: &Loaded, s: &Scenario, plan: &Plan, traces: &[Trace]) -> Record {
    let samples: Vec<f64> = traces.iter().map(|t| t.e2e().as_secs_f64()).collect();
    let mut r = Record::from_samples("generation", &s.name, samples, s.new_tokens as u64);
    r.model = model_info(loaded);
    // Quantized models say what their weights are (activations run in f32).
    let md = &loaded.model.meta().dtype;
    r.dtype = if md.starts_with("gguf") {
        md.clone()
    } else {
        plan.dtype.as_str().to_string()
    };
    r.device = plan.device.to_string();
    r.prompt_tokens = s.prompt_tokens;
    r.new_tokens = s.new_tokens;
    r.sampling = Some(s.sampling);
    r.sampling_desc = s.sampling.describe();
    r.seed = plan.seed;
    r.eos_ignored = true;
    r.pipeline = s.pipeline;
    let g = gen_metrics(traces);
    let ttft_s = g.ttft_ms.map(|p| p.p50 / 1e3).unwrap_or(0.0);
    let cal = crate::roofline::cached(plan.device);
    r.roofline = Some(crate::roofline::roofline(
        loaded.model.meta(),
        s.prompt_tokens,
        s.new_tokens,
        g.decode_tok_s,
        ttft_s,
        cal.as_ref(),
    ));
    r.gen = Some(g);
    r.quality = crate::quality::load(&loaded.resolved.label)
        .map(|v| serde_json::to_value(v).expect("json"));
    r.memory.host_method = if memory::heap_current().is_some() {
        "counting global allocator (live heap, model included)".into()
    } else {
        "not available (counting allocator not installed)".into()
    };
    r.memory.gpu_used_bytes = crate::gpu::used_bytes();
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
        load_fill_gbs: l.load.fill_gbs,
        exact_context: m.exact_context,
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
    let input = |t: usize| crate::moe::seeded_input(t, plan.hidden, seed, dtype, &dev);
    let mut points: Vec<(String, MoeConfig, bool)> = Vec::new();
    for &e in &plan.experts {
        for &k in &plan.top_k {
            let cfg = MoeConfig::new(plan.hidden, plan.intermediate, e, k);
            points.push((format!("e{e}-k{k}"), cfg, false));
        }
    }
    for &k in &plan.top_k {
        let cfg = MoeConfig::new(plan.hidden, plan.intermediate, k, k);
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
            let samples = timed(&mut g, id, &dev, t as u64, || {
                let y = match (&moe, &mlp) {
                    (Some(m), _) => m.forward(&x)?,
                    (_, Some(d)) => d.forward(&x)?,
                    _ => unreachable!(),
                };
                std::hint::black_box(y);
                Ok(())
            })?;
            if let Some(timed) = samples {
                let mut r =
                    Record::from_timed("moe", &format!("moe_topk/{name}/t{t}"), timed, t as u64);
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
                let fpt = r.extra["flops_per_token"].as_f64().unwrap_or(0.0);
                r.roofline = Some(crate::roofline::compute_only(
                    fpt,
                    r.tok_s,
                    dtype.as_str(),
                    crate::roofline::cached(plan.common.device).as_ref(),
                ));
                run.push(r)?;
            }
        }
    }
    g.finish();
    Ok(())
}

/// GPU-03's throughput procedure as criterion groups: `psann_throughput` (fp32 forward
/// only, logits materialised, ids `<base>/<batch_tokens>`) and `psann_train` (one full
/// step: forward, backward, clipping, AdamW). Writes throughput.csv, throughput.md and
/// throughput.png into the run folder.
pub fn psann_grid(
    c: &mut Criterion,
    plan: &crate::options::PsannPlan,
    run: &mut RunDir,
) -> Result<()> {
    use crate::psann::train::{TrainConfig, Trainer};
    use crate::psann::{gpu03_shape, random_ids, PsannConfig, PsannLm};
    let dev = plan.common.device.open()?;
    if plan.common.dtype != candle_core::DType::F32 {
        eprintln!("note: the PSANN grid runs in f32 (GPU-03 measures FP32); MODELBENCH_DTYPE is ignored here");
    }
    let seed = plan.common.seed;
    let shapes: Vec<(usize, usize, usize)> = plan
        .batch_tokens
        .iter()
        .map(|&n| {
            let (b, t) = gpu03_shape(n, plan.max_t, plan.max_b);
            (n, b, t)
        })
        .collect();
    let cfg0 = PsannConfig::gpu03(plan.bases[0]);
    for &(n, b, t) in &shapes {
        // One fp32 score tensor B*H*T^2 (two alive at the softmax) and the logits B*T*V.
        let gib = |x: f64| x / (1u64 << 30) as f64;
        let scores = (b * cfg0.n_heads * t * t * 4) as f64;
        let logits = (b * t * cfg0.vocab * 4) as f64;
        if gib(2.0 * scores + logits) > 4.0 {
            eprintln!(
                "warning: batch_tokens {n} (B={b}, T={t}) needs about {:.1} GiB at peak ({:.1} GiB of attention scores x2, {:.1} GiB of logits)",
                gib(2.0 * scores + logits),
                gib(scores),
                gib(logits)
            );
        }
    }
    let mut tput: Vec<(String, usize, f64)> = Vec::new();
    for group in ["psann_throughput", "psann_train"] {
        let train = group == "psann_train";
        for &base in &plan.bases {
            let cfg = PsannConfig::gpu03(base);
            for &(n, b, t) in &shapes {
                let ids = random_ids(b, t, cfg.vocab, seed, &dev)?;
                let targets = random_ids(b, t, cfg.vocab, seed ^ 1, &dev)?;
                let mut step: Box<dyn FnMut() -> Result<()>> = if train {
                    let model = PsannLm::new(cfg, seed, &dev, true)?;
                    let mut tr = Trainer::new(model, TrainConfig::default())?;
                    let (ids, targets) = (ids.clone(), targets.clone());
                    Box::new(move || tr.step(&ids, &targets).map(|_| ()))
                } else {
                    let model = PsannLm::new(cfg, seed, &dev, false)?;
                    let ids = ids.clone();
                    Box::new(move || {
                        let logits = model.forward(&ids)?;
                        std::hint::black_box(logits);
                        Ok(())
                    })
                };
                // Probe (also a warm-up of the exact shape) to size the window.
                let t0 = std::time::Instant::now();
                step()?;
                crate::device::sync(&dev)?;
                let est = t0.elapsed();
                let mut g = long_group(c, group, est, Duration::from_secs(3));
                g.throughput(Throughput::Elements((b * t) as u64));
                let id = BenchmarkId::new(base.name(), n);
                let samples = timed(&mut g, id, &dev, (b * t) as u64, &mut step)?;
                g.finish();
                if let Some(timed) = samples {
                    let kind = if train { "psann-train" } else { "psann" };
                    let mut r = Record::from_timed(
                        kind,
                        &format!("{group}/{}/{n}", base.name()),
                        timed,
                        (b * t) as u64,
                    );
                    r.model.label = base.name().into();
                    r.model.family = "psann".into();
                    r.model.params = cfg.param_count();
                    r.model.weight_bytes = cfg.param_count() * 4;
                    r.model.layers = cfg.n_layers;
                    r.model.hidden = cfg.d_model;
                    r.model.vocab = cfg.vocab;
                    r.dtype = "f32".into();
                    r.device = plan.common.device.to_string();
                    r.seed = seed;
                    r.prompt_tokens = t;
                    r.extra = serde_json::json!({
                        "grid": plan.grid, "base": base.name(), "batch_tokens": n, "B": b, "T": t,
                        "procedure": if train { "one train step: forward, mean CE, backward, clip 1.0, AdamW (lr 2e-4, betas 0.9/0.95, wd 0.01)" } else { "GPU-03: fp32 forward only, math attention, logits materialised" },
                        "forward_flops_per_token": cfg.forward_flops_per_token(t),
                        "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_mlp": cfg.d_mlp,
                    });
                    // A train step is about 3x the forward FLOPs (forward + backward).
                    let fpt = cfg.forward_flops_per_token(t) * if train { 3.0 } else { 1.0 };
                    r.roofline = Some(crate::roofline::compute_only(
                        fpt,
                        r.tok_s,
                        "f32",
                        crate::roofline::cached(plan.common.device).as_ref(),
                    ));
                    if !train {
                        tput.push((base.name().to_string(), n, r.tok_s));
                    }
                    run.push(r)?;
                }
            }
        }
    }
    if !tput.is_empty() {
        write_psann_artifacts(run, plan, &tput)?;
    }
    Ok(())
}

/// throughput.csv (seed 002's columns), throughput.md and throughput.png of a grid run.
fn write_psann_artifacts(
    run: &mut RunDir,
    plan: &crate::options::PsannPlan,
    tput: &[(String, usize, f64)],
) -> Result<()> {
    let ts = crate::report::now_rfc3339();
    let rows: Vec<crate::report::ThroughputRow> = tput
        .iter()
        .map(|(b, n, v)| crate::report::ThroughputRow {
            timestamp: ts.clone(),
            base: b.clone(),
            batch_tokens: *n,
            tokens_per_s: *v,
        })
        .collect();
    run.put_file(
        "throughput.csv",
        crate::report::throughput_csv(&rows).into_bytes(),
    )?;
    crate::report::write_throughput_views(&run.path, &plan.grid, &rows)
}

/// A criterion [`Measurement`](criterion::measurement::Measurement) of peak live heap bytes
/// (counting allocator) above the live heap at the start of the measured routine, so
/// criterion's statistics, baselines and regression reports apply to memory.
pub struct PeakBytes;

struct BytesFormatter;

impl criterion::measurement::ValueFormatter for BytesFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= (1u64 << 20) as f64);
        "MiB"
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            Throughput::ElementsAndBytes { elements, .. } => *elements as f64,
            Throughput::Bits(n) => *n as f64,
        };
        values.iter_mut().for_each(|v| *v = *v / n / 1024.0);
        "KiB/elem"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "B"
    }
}

impl criterion::measurement::Measurement for PeakBytes {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        memory::reset_peak();
        memory::heap_current().unwrap_or(0)
    }
    fn end(&self, base: u64) -> u64 {
        memory::heap_peak().unwrap_or(0).saturating_sub(base)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        &BytesFormatter
    }
}

/// The checkpoint-memory workload: BMRK-03's medium waveresnet (d_model 512, 8 layers,
/// 8 heads, d_mlp 2048) on GPU-04's character vocabulary (31), one train step per iteration.
pub const CKPT_BATCH: usize = 1;
pub const CKPT_SEQ: usize = 128;
pub const CKPT_VOCAB: usize = 31;

/// Groups `checkpoint_memory` (peak bytes per train step, through [`PeakBytes`]) and
/// `checkpoint_time` (wall time of the same steps), ids `waveresnet-d512-l8/ckpt|no-ckpt`;
/// writes memory.json (seed 002's fields plus batch, sequence length and method).
pub fn checkpoint_groups(
    c_mem: &mut Criterion<PeakBytes>,
    c_time: &mut Criterion,
    common: &crate::options::Common,
    run: &mut RunDir,
) -> Result<()> {
    use crate::psann::train::{TrainConfig, Trainer};
    use crate::psann::{random_ids, Base, PsannConfig, PsannLm};
    let dev = common.device.open()?;
    let cfg = PsannConfig::medium(Base::Waveresnet, CKPT_VOCAB);
    let ids = random_ids(CKPT_BATCH, CKPT_SEQ, CKPT_VOCAB, common.seed, &dev)?;
    let targets = random_ids(CKPT_BATCH, CKPT_SEQ, CKPT_VOCAB, common.seed ^ 1, &dev)?;
    let mut entries = Vec::new();
    for ckpt in [true, false] {
        let name = if ckpt { "ckpt" } else { "no-ckpt" };
        let model = PsannLm::with_compute(cfg, common.seed, &dev, true, common.dtype)?;
        let mut tr = Trainer::new(
            model,
            TrainConfig {
                grad_checkpoint: ckpt,
                ..Default::default()
            },
        )?;
        // First step allocates AdamW state; it is part of the "post-load baseline".
        let t0 = std::time::Instant::now();
        tr.step(&ids, &targets)?;
        crate::device::sync(&dev)?;
        let est = t0.elapsed();
        let id = BenchmarkId::new("waveresnet-d512-l8", name);
        // Memory: peak bytes of one step.
        let mem: RefCell<Samples<u64>> = RefCell::default();
        {
            let mut g = long_group(c_mem, "checkpoint_memory", est, Duration::from_secs(1));
            g.bench_function(id.clone(), |b| {
                b.iter_custom(|iters| {
                    let mut st = mem.borrow_mut();
                    st.start_call();
                    let mut total = 0;
                    for _ in 0..iters {
                        let m = PeakBytes;
                        use criterion::measurement::Measurement;
                        let s = m.start();
                        if let Err(e) = tr
                            .step(&ids, &targets)
                            .and_then(|_| crate::device::sync(&dev))
                        {
                            st.error = Some(e);
                            return 0;
                        }
                        let v = m.end(s);
                        st.push(v);
                        total += v;
                    }
                    total
                })
            });
            g.finish();
        }
        let mem = mem.into_inner();
        if let Some(e) = mem.error {
            return Err(e);
        }
        let mut g = long_group(c_time, "checkpoint_time", est, Duration::from_secs(3));
        g.throughput(Throughput::Elements((CKPT_BATCH * CKPT_SEQ) as u64));
        let times = timed(&mut g, id, &dev, (CKPT_BATCH * CKPT_SEQ) as u64, || {
            tr.step(&ids, &targets).map(|_| ())
        })?;
        g.finish();
        let (Some(peaks), Some(times)) = (mem.measured(), times) else {
            continue;
        };
        let peak = crate::stats::median(&peaks.iter().map(|&p| p as f64).collect::<Vec<_>>());
        let mut r = Record::from_timed(
            "checkpoint",
            &format!("checkpoint/waveresnet-d512-l8/{name}"),
            times,
            (CKPT_BATCH * CKPT_SEQ) as u64,
        );
        r.model.label = "waveresnet-d512-l8".into();
        r.model.family = "psann".into();
        r.model.params = cfg.param_count();
        r.dtype = common.dtype.as_str().into();
        r.device = common.device.to_string();
        r.seed = common.seed;
        r.memory.host_peak_bytes = Some(peak as u64);
        r.memory.host_method = "counting global allocator: peak live heap of one train step above the live heap before it (parameters, AdamW state excluded; gradients and activations included)".into();
        let entry = serde_json::json!({
            "base": "waveresnet", "d_model": cfg.d_model, "n_layers": cfg.n_layers, "grad_checkpoint": ckpt,
            "amp": if common.dtype == candle_core::DType::F32 {
                "none (fp32; MODELBENCH_DTYPE=bf16 enables autocast; the CPU default is f32 because candle's CPU bf16 matmul is ~10x slower)".to_string()
            } else {
                format!("{} autocast (f32 master weights, {} matmuls, f32 norms/SineParam/softmax/residual)", common.dtype.as_str(), common.dtype.as_str())
            },
            "max_memory_mb": peak / (1u64 << 20) as f64,
            "elapsed_s": r.stats.median,
            "batch": CKPT_BATCH, "seq_len": CKPT_SEQ, "vocab": CKPT_VOCAB,
            "method": if common.device == crate::device::DeviceSpec::Cpu { "counting global allocator (host heap), median of 10 steps" } else { "counting global allocator (host heap); GPU memory is not tracked by this measurement" },
            "params": cfg.param_count(),
        });
        r.extra = entry.clone();
        entries.push(entry);
        run.push(r)?;
    }
    if !entries.is_empty() {
        run.put_file(
            "memory.json",
            serde_json::to_string_pretty(&entries)
                .expect("json")
                .into_bytes(),
        )?;
        for e in &entries {
            eprintln!(
                "checkpoint {}: peak {:.1} MiB, step {:.3} s",
                if e["grad_checkpoint"] == true {
                    "on "
                } else {
                    "off"
                },
                e["max_memory_mb"].as_f64().unwrap_or(0.0),
                e["elapsed_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// Criterion group `overhead`: per fixture family, the engine's greedy generation against a
/// bare loop of forward + argmax on the same model and lengths (64/64), so the suite's own
/// cost is visible; and the sampling pipeline's cost per token (sampled and full-pipe
/// settings) at the family's real vocabulary size.
pub fn overhead(c: &mut Criterion, plan: &Plan, run: &mut RunDir) -> Result<()> {
    use crate::generate::{bare_greedy, prompt_ids, Prompt};
    use crate::source::ModelRef;
    let dev = plan.device.open()?;
    for fam in ["llama", "qwen3", "gemma3"] {
        let label = format!("fixture:{fam}");
        let res = prepare(&label, &ModelRef::parse(&label)?, &[])?;
        let mut l = open(res, &dev, plan.dtype, Some(256))?;
        let vocab = l.model.meta().vocab;
        let ids = prompt_ids(64, vocab, plan.seed, 0);
        let prompt = Prompt::Ids(ids.clone());
        let t = std::time::Instant::now();
        bare_greedy(l.model.as_mut(), &ids, 64)?;
        let est = t.elapsed();
        let mut g = long_group(c, "overhead", est, Duration::from_secs(3));
        g.throughput(Throughput::Elements(64));
        let m = &mut l.model;
        let engine = timed(&mut g, BenchmarkId::new(fam, "engine"), &dev, 64, || {
            let mut s = Sampler::new(crate::sampling::SamplingParams::GREEDY, plan.seed);
            generate(m.as_mut(), &prompt, 64, &mut s, None).map(|_| ())
        })?;
        let bare = timed(&mut g, BenchmarkId::new(fam, "bare"), &dev, 64, || {
            bare_greedy(m.as_mut(), &ids, 64).map(|_| ())
        })?;
        g.finish();
        // Sampling cost per token at this vocabulary.
        let logits: Vec<f32> = crate::fill::seeded(
            &vocab.into(),
            plan.seed,
            "logits",
            crate::fill::Dist::Normal(0.0, 3.0),
            &candle_core::Device::Cpu,
        )?
        .to_vec1()?;
        let context: Vec<u32> = prompt_ids(320, vocab, plan.seed, 1);
        let mut gs = short_group(c, "overhead", Duration::from_secs(2));
        gs.throughput(Throughput::Elements(1));
        let mut sampling = Vec::new();
        for sc in ["sampled", "full-pipe"] {
            let params = Scenario::by_name(sc)?.sampling;
            let mut s = Sampler::new(params, plan.seed);
            let mut buf = logits.clone();
            let cpu = candle_core::Device::Cpu;
            let r = timed(
                &mut gs,
                BenchmarkId::new(fam, format!("sample-{sc}")),
                &cpu,
                1,
                || {
                    buf.copy_from_slice(&logits);
                    std::hint::black_box(s.sample(&mut buf, &context));
                    Ok(())
                },
            )?;
            sampling.push((sc, r));
        }
        gs.finish();
        if let (Some(e), Some(b)) = (engine, bare) {
            let b = b.samples_s;
            let (me, mb) = (crate::stats::median(&e.samples_s), crate::stats::median(&b));
            let mut r = Record::from_timed("overhead", &format!("overhead/{fam}/engine"), e, 64);
            r.model = model_info(&l);
            r.dtype = plan.dtype.as_str().into();
            r.device = plan.device.to_string();
            r.extra = serde_json::json!({"bare_median_s": mb, "engine_median_s": me, "overhead_pct": 100.0 * (me - mb) / mb,
                "bare_samples_s": b, "lengths": "64/64 greedy"});
            eprintln!(
                "overhead {fam}: engine {:.2} ms vs bare {:.2} ms ({:+.2}%)",
                me * 1e3,
                mb * 1e3,
                100.0 * (me - mb) / mb
            );
            run.push(r)?;
        }
        for (sc, r) in sampling {
            if let Some(timed) = r {
                let per = crate::stats::median(&timed.samples_s);
                let mut rec = Record::from_timed(
                    "overhead",
                    &format!("overhead/{fam}/sample-{sc}"),
                    timed,
                    1,
                );
                rec.model = model_info(&l);
                rec.extra =
                    serde_json::json!({"vocab": vocab, "sampling": sc, "per_token_us": per * 1e6});
                eprintln!("sampling {sc} at vocab {vocab}: {:.1} us/token", per * 1e6);
                run.push(rec)?;
            }
        }
    }
    Ok(())
}
