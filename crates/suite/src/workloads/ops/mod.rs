//! Where the time goes (issue 31): every distinct op and shape of one forward of a model as it
//! runs in the suite, each timed alone at that shape, against the measured step time of the
//! same model and scenario.
//!
//! The ops are the forward's own ([`traced_ops`]): one step of the model as the suite loads it
//! runs under an op trace, and each op it makes (the project's Gemma 3, and its Llama, Qwen2,
//! Qwen3, Qwen3-MoE, Phi-3, Phi-2, GLM-4 and LFM2 implementation mark theirs with `traced!`) is recorded with its inputs, its weights and its kernel; calls
//! of the same kind, shape and types make one row, which replays them in turn (every layer's
//! tensor, as the forward reads them).
//! Each op runs on the suite's device and candle thread pools, with a device sync after each
//! sample, criterion-style: a warm-up call, then samples of enough calls to last a couple of
//! milliseconds; the row is the median per-call time of the samples with a bootstrap 95% CI.
//! The step time is measured with the suite's own generation loop (`engine::generate`) in the
//! same process: a decode step at depth D (the gaps between successive tokens after a D-token
//! prompt) or the prompt's prefill (TTFT: one forward of P tokens and the first token's pick).
//!
//! An op timed alone runs back to back with itself, its inputs hot in cache and candle's
//! thread pools awake, as llama.cpp's `test-backend-ops perf` times ggml's (the columns the
//! peer comparison uses). The same calls are then replayed in the forward's order
//! ([`time_in_order`]: every call of one step, one after another as the model makes them, each
//! timed on its own): an op so timed meets the pools and caches as its neighbours leave them.
//! On the 2-core VM that is what separates the two: a quantized matmul after rayon ops finds
//! candle's barrier-pool worker parked or spinning, and small ones run up to twice as long as
//! back to back. The coverage line gives both sums against the step; what the in-order sum
//! leaves is the work between the ops (tensor bookkeeping, views, the allocator, the engine's
//! loop).
//!
//! [`ggml_line`] writes each op in llama.cpp's `test-backend-ops --test-file` format, so ggml
//! times the same op at the same shape (`modelbench ops --peer llama.cpp`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::engine::generate::{generate, prompt_ids, Prompt};
use crate::engine::sampling::{Sampler, SamplingParams};
use crate::error::{Error, Result};
use crate::measure::device::sync;
use crate::measure::inject::{around_op, profile_start, profile_take};
use crate::measure::stats::{bootstrap_median_ci, median};
use crate::models::CausalLm;

mod ggml;
pub use ggml::{ggml_line, parse_backend_ops, run_backend_ops, GgmlIds, GgmlOp, Src};
mod forward;
use forward::pick;
pub use forward::{rows_of, traced_ops, Hparams};
mod render;
pub use render::{grew_most, grew_most_line};

/// Which step of a generation the table is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// One forward of the whole prompt at depth 0 and the first token's pick (TTFT).
    Prefill,
    /// One single-token forward at a KV depth and its pick.
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// One distinct op and shape of the step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpRow {
    /// One of `measure::inject::OP_KINDS`.
    pub kind: String,
    /// What it is in the model (`attn_q, attn_k (q5_0)`).
    pub op: String,
    pub shape: String,
    /// Calls per step (per generated token in decode; per prompt forward in prefill).
    pub calls: usize,
    /// Median time per call (us) and its bootstrap 95% CI.
    pub us: f64,
    pub ci_us: Option<(f64, f64)>,
    /// Bytes read and written per call (weights included).
    pub bytes: f64,
    /// Floating-point operations per call (matmuls only: 2mnk; None elsewhere).
    pub flops: Option<f64>,
    /// The op as a `test-backend-ops --test-file` line (ids of this build), None: not
    /// expressible in ggml's perf cases.
    #[serde(default)]
    pub ggml: Option<String>,
    /// ggml's time per call (us) from `test-backend-ops perf`.
    #[serde(default)]
    pub ggml_us: Option<f64>,
    /// Median time per call (us) with its 95% CI when the ops run in the forward's order
    /// ([`time_in_order`]): each call timed where the forward makes it, after the op before it.
    #[serde(default)]
    pub seq_us: Option<f64>,
    #[serde(default)]
    pub seq_ci_us: Option<(f64, f64)>,
}

impl OpRow {
    /// Time of this row per step (us).
    pub fn step_us(&self) -> f64 {
        self.us * self.calls as f64
    }
    /// The key a row is matched by across tables.
    pub fn key(&self) -> String {
        format!("{} {} {}", self.kind, self.op, self.shape)
    }
}

/// The machine's roofs from `modelbench calibrate` (None: not calibrated).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Roofs {
    pub mem_read_gbs: Option<f64>,
    pub matmul_gflops: Option<f64>,
}

/// The per-op table of one model and step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpsTable {
    pub model: String,
    pub phase: Phase,
    /// Tokens in the step's forward.
    pub tokens: usize,
    /// KV positions before the step.
    pub depth: usize,
    /// candle's pools (`rayon=N, matmul=N`).
    pub threads: String,
    /// The measured step time (us) with its 95% CI and the number of steps measured.
    pub step_us: f64,
    pub step_ci_us: Option<(f64, f64)>,
    pub step_samples: usize,
    pub rows: Vec<OpRow>,
    pub roofs: Roofs,
    /// An injected slowdown active while this was measured (`op:rms_norm:100%`).
    pub injected: Option<String>,
    /// The peer's program and thread count, when ggml's times were filled in.
    #[serde(default)]
    pub peer: Option<String>,
    /// The same step profiled inside the model's forward (CPU only; None elsewhere).
    #[serde(default)]
    pub in_model: Option<InModel>,
    /// Why the rows have no in-order times (None: they have them, or the table predates them).
    #[serde(default)]
    pub order_note: Option<String>,
}

/// The model's own op calls timed inside its forward ([`profile_start`]): where the time of
/// the step goes when the ops run in the model rather than alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InModel {
    /// Steps profiled.
    pub steps: usize,
    /// Median wall time of a profiled step (us): forward and greedy pick.
    pub step_us: f64,
    /// Mean wall time of a profiled step (us): the statistic the kinds' averaged times add
    /// up within (each step's marked ops lie inside that step). None in tables written
    /// before it was kept.
    #[serde(default)]
    pub mean_step_us: Option<f64>,
    /// Per kind the model's forward marks: calls and wall time per step (us), averaged.
    pub kinds: Vec<KindInModel>,
}

/// One kind of op inside the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindInModel {
    pub kind: String,
    pub calls: f64,
    pub us: f64,
    /// The median over the profiled steps of the kind's time per step (us) and its 95%
    /// bootstrap interval: what a comparison of two builds holds against each other.
    #[serde(default)]
    pub median_us: Option<f64>,
    #[serde(default)]
    pub ci_us: Option<(f64, f64)>,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct OpsPlan {
    pub phase: Phase,
    /// Decode: KV positions before the step (>= 1). Prefill: 0.
    pub depth: usize,
    /// Prefill: prompt tokens. Decode: 1.
    pub tokens: usize,
    /// Generations whose steps give the step time.
    pub step_trials: usize,
    /// Minimum time one op sample lasts.
    pub sample: Duration,
    /// Samples per op (fewer for ops slower than 20 ms).
    pub samples: usize,
    pub seed: u64,
}

impl OpsPlan {
    /// The suite's `prefill` / `decode` scenario shapes: prefill is the 1024-token prompt;
    /// decode the midpoint of its 512 steps after a 64-token prompt (depth 320).
    pub fn for_scenario(phase: Phase, depth: Option<usize>, tokens: Option<usize>) -> OpsPlan {
        let (depth, tokens) = match phase {
            Phase::Prefill => (0, tokens.unwrap_or(1024)),
            Phase::Decode => (depth.unwrap_or(64 + 512 / 2), 1),
        };
        OpsPlan {
            phase,
            depth,
            tokens,
            step_trials: 5,
            sample: Duration::from_millis(2),
            samples: 15,
            seed: 42,
        }
    }

    /// Fewer repetitions: 5 samples of 1 ms per op, 2 generations for the step.
    pub fn quick(mut self) -> OpsPlan {
        self.samples = 5;
        self.sample = Duration::from_millis(1);
        self.step_trials = 2;
        self
    }

    /// Decode steps measured per generation.
    const DECODE_STEPS: usize = 8;

    /// Positions the model must be built for.
    pub fn context(&self) -> usize {
        match self.phase {
            Phase::Prefill => self.tokens + 1,
            Phase::Decode => self.depth + Self::DECODE_STEPS + 2,
        }
    }

    pub fn check(&self) -> Result<()> {
        match self.phase {
            Phase::Decode if self.depth == 0 => Err(Error::Report(
                "--depth 0: a decode step needs at least one position in the KV cache (--depth 1 or more)".into(),
            )),
            Phase::Prefill if self.tokens == 0 => Err(Error::Report(
                "--prompt-tokens 0: a prefill needs at least one token".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// One op ready to run: its row (time not yet filled) and the call.
pub struct Bench {
    pub row: OpRow,
    pub run: Box<dyn FnMut() -> candle_core::Result<()>>,
}

/// Times `f` (one call of an op of `kind`): a warm-up call, then `plan.samples` samples of as
/// many calls as last `plan.sample`, each call inside the op-scoped injection of its kind, a
/// device sync closing each sample. Returns the median per-call time (us) and its 95% CI.
pub fn time_op(
    kind: &str,
    f: &mut dyn FnMut() -> candle_core::Result<()>,
    dev: &Device,
    plan: &OpsPlan,
) -> Result<(f64, Option<(f64, f64)>)> {
    around_op(kind, &mut *f)?;
    sync(dev)?;
    let t = Instant::now();
    around_op(kind, &mut *f)?;
    sync(dev)?;
    let one = t.elapsed().as_secs_f64().max(1e-9);
    let iters = ((plan.sample.as_secs_f64() / one).ceil() as usize).clamp(1, 1_000_000);
    let samples = if one > 0.02 {
        plan.samples.min(5)
    } else {
        plan.samples
    }
    .max(3);
    let mut per_call = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..iters {
            around_op(kind, &mut *f)?;
        }
        sync(dev)?;
        per_call.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    Ok((
        median(&per_call),
        bootstrap_median_ci(&per_call, 2000, plan.seed),
    ))
}

/// Step times (us) of `model` at the plan's shape, measured with the suite's generation loop
/// (greedy) in `trials` generations after one untimed one: decode steps at depths
/// `depth..depth+8` (the gaps between tokens), or the prompt's TTFT.
pub fn step_times(model: &mut dyn CausalLm, plan: &OpsPlan, trials: usize) -> Result<Vec<f64>> {
    let vocab = model.meta().vocab;
    let mut sampler = Sampler::new(SamplingParams::GREEDY, plan.seed);
    let (prompt_len, new) = match plan.phase {
        Phase::Prefill => (plan.tokens, 1),
        Phase::Decode => (plan.depth, OpsPlan::DECODE_STEPS + 1),
    };
    let mut steps = Vec::new();
    for trial in 0..=trials as u64 {
        let prompt = Prompt::Ids(prompt_ids(prompt_len, vocab, plan.seed, trial));
        let t = generate(model, &prompt, new, &mut sampler, None)?;
        if trial == 0 {
            continue;
        }
        match plan.phase {
            Phase::Prefill => steps.push(t.ttft().as_secs_f64() * 1e6),
            Phase::Decode => steps.extend(t.itl().iter().map(|d| d.as_secs_f64() * 1e6)),
        }
    }
    Ok(steps)
}

/// Profiles `trials` steps of `model` at the plan's shape from inside its forward: each op
/// call the model marks ([`around_op`]) adds its wall time to its kind. The step is driven
/// like the engine's (a prompt of `depth` ids, then single-token forwards with a greedy pick
/// for decode; one prompt forward and its pick for prefill), and only the step itself is
/// profiled. CPU only: on a GPU an op's host time is its launch, not its work.
pub fn profile_steps(model: &mut dyn CausalLm, plan: &OpsPlan, trials: usize) -> Result<InModel> {
    let vocab = model.meta().vocab;
    let mut walls = Vec::new();
    let mut total: BTreeMap<&'static str, (u64, Duration)> = BTreeMap::new();
    // Each kind's time in each kept step (us), a step that did not call it counting 0.
    let mut per_step: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for trial in 0..=trials as u64 {
        model.reset()?;
        let (prompt, steps) = match plan.phase {
            Phase::Prefill => (prompt_ids(plan.tokens, vocab, plan.seed, trial), 0),
            Phase::Decode => (
                prompt_ids(plan.depth, vocab, plan.seed, trial),
                OpsPlan::DECODE_STEPS,
            ),
        };
        let mut step = |model: &mut dyn CausalLm, ids: &[u32], pos: usize| -> Result<u32> {
            profile_start();
            let t = Instant::now();
            let next = model
                .forward(ids, pos)
                .map_err(Error::from)
                .and_then(|l| pick(&l));
            let wall = t.elapsed();
            let kinds = profile_take();
            let next = next?;
            // The first generation warms up; its times are not kept.
            if trial > 0 {
                for k in &kinds {
                    let e = total.entry(k.kind).or_default();
                    e.0 += k.calls;
                    e.1 += k.time;
                    let v = per_step.entry(k.kind).or_default();
                    v.resize(walls.len(), 0.0);
                    v.push(k.time.as_secs_f64() * 1e6);
                }
                walls.push(wall.as_secs_f64() * 1e6);
            }
            Ok(next)
        };
        match plan.phase {
            Phase::Prefill => {
                step(model, &prompt, 0)?;
            }
            Phase::Decode => {
                let mut next = pick(&model.forward(&prompt, 0)?)?;
                for i in 0..steps {
                    next = step(model, &[next], plan.depth + i)?;
                }
            }
        }
    }
    let n = walls.len().max(1) as f64;
    Ok(InModel {
        steps: walls.len(),
        step_us: median(&walls),
        mean_step_us: Some(walls.iter().sum::<f64>() / n),
        kinds: total
            .into_iter()
            .map(|(kind, (calls, time))| {
                let mut steps = per_step.remove(kind).unwrap_or_default();
                steps.resize(walls.len(), 0.0);
                KindInModel {
                    kind: kind.to_string(),
                    calls: calls as f64 / n,
                    us: time.as_secs_f64() * 1e6 / n,
                    median_us: (!steps.is_empty()).then(|| median(&steps)),
                    ci_us: bootstrap_median_ci(&steps, 2000, plan.seed),
                }
            })
            .collect(),
    })
}

/// The ops of one forward: each distinct op and shape ready to run, and the forward's order.
pub struct OpsSet {
    pub benches: Vec<(Bench, Option<GgmlOp>)>,
    /// Row indices, one per call, in the order the forward makes the calls; Err: why the
    /// order is not available (it does not match the rows' call counts).
    pub order: std::result::Result<Vec<usize>, String>,
}

/// `order` if it calls every row exactly as often as the row's calls per step, else why not.
fn check_order(
    benches: &[(Bench, Option<GgmlOp>)],
    order: Vec<usize>,
) -> std::result::Result<Vec<usize>, String> {
    let mut n = vec![0usize; benches.len()];
    for &i in &order {
        n[i] += 1;
    }
    for ((b, _), got) in benches.iter().zip(&n) {
        if *got != b.row.calls {
            return Err(format!(
                "the forward's order calls `{} {}` {} times, the table {} (a bug in the op enumeration)",
                b.row.kind, b.row.op, got, b.row.calls
            ));
        }
    }
    Ok(order)
}

/// Times every op and fills the table's rows (the step time and roofs are the caller's).
pub fn time_rows(
    benches: &mut [(Bench, Option<GgmlOp>)],
    dev: &Device,
    plan: &OpsPlan,
    ids: Option<&GgmlIds>,
    progress: &mut dyn FnMut(&OpRow),
) -> Result<()> {
    for (i, (b, g)) in benches.iter_mut().enumerate() {
        let (us, ci) = time_op(&b.row.kind, &mut b.run, dev, plan)?;
        b.row.us = us;
        b.row.ci_us = ci;
        if let (Some(g), Some(ids)) = (g.as_ref(), ids) {
            b.row.ggml = ggml_line(g, &format!("op{i}"), ids);
        }
        progress(&b.row);
    }
    Ok(())
}

/// Times the ops in the forward's `order` (row indices, one per call): `reps` replays of one
/// step after two untimed ones, each call timed on its own (inside the op-scoped injection of
/// its kind, a device sync closing it) where the forward makes it, after the op the forward
/// runs before it. An op so timed meets the thread pools and caches as the model leaves them
/// (the barrier pool's worker parked or spinning after the rayon ops between two quantized
/// matmuls; the weights of the other layers and the lm_head streamed through the cache since
/// its last call) rather than the hot, back-to-back state of [`time_op`]. Fills each row's
/// `seq_us` with the median over the replays of its time per step divided by its calls, and
/// the 95% CI.
pub fn time_in_order(
    benches: &mut [(Bench, Option<GgmlOp>)],
    order: &[usize],
    dev: &Device,
    reps: usize,
    seed: u64,
) -> Result<()> {
    let mut per_rep: Vec<Vec<f64>> = vec![Vec::with_capacity(reps); benches.len()];
    for rep in 0..reps + 2 {
        let mut acc = vec![0f64; benches.len()];
        for &i in order {
            let b = &mut benches[i].0;
            let t = Instant::now();
            around_op(&b.row.kind, &mut b.run)?;
            sync(dev)?;
            acc[i] += t.elapsed().as_secs_f64() * 1e6;
        }
        if rep >= 2 {
            for (samples, us) in per_rep.iter_mut().zip(acc) {
                samples.push(us);
            }
        }
    }
    for ((b, _), samples) in benches.iter_mut().zip(per_rep) {
        let calls = b.row.calls.max(1) as f64;
        let per_call: Vec<f64> = samples.iter().map(|us| us / calls).collect();
        b.row.seq_us = Some(median(&per_call));
        b.row.seq_ci_us = bootstrap_median_ci(&per_call, 2000, seed);
    }
    Ok(())
}

/// Where llama.cpp's `test-backend-ops` is put by scripts/build-llama-cpp.sh (in
/// `$LLAMA_CPP_DIR` when set: [`crate::util::llama_cpp::dir`]).
pub fn default_backend_ops() -> std::path::PathBuf {
    crate::util::llama_cpp::program("test-backend-ops")
}

/// The ids file beside a `test-backend-ops` built by scripts/build-llama-cpp.sh.
pub fn ids_of(program: &Path) -> std::path::PathBuf {
    program
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("ggml-ids.txt")
}

/// Resolves `label` for the per-op table: a GGUF model on the project's own implementation
/// (whose forward traces its ops): `?impl=modelbench` unless the reference names another,
/// which is refused with the fix. Returns the resolved model and the file.
pub fn ops_model(label: &str) -> Result<(crate::models::sources::Resolved, std::path::PathBuf)> {
    use crate::models::families::GgufImpl;
    let r = crate::models::sources::ModelRef::parse(label)?;
    let mut res = crate::engine::scenario::prepare(label, &r, &[])?;
    let path = match &res.weights {
        crate::models::Weights::Gguf(p) => p.clone(),
        _ => {
            return Err(Error::Report(format!(
                "ops: `{label}` is not a GGUF model; the per-op table traces the project's quantized models (use gguf:<file | cached repo | fixture:NAME>)"
            )))
        }
    };
    let gguf = res
        .gguf
        .as_mut()
        .ok_or_else(|| Error::Report(format!("ops: `{label}` resolved without its GGUF header")))?;
    match gguf.imp {
        None if GgufImpl::Modelbench.supports(res.family) => {
            gguf.imp = Some(GgufImpl::Modelbench);
        }
        Some(GgufImpl::Modelbench) => {}
        Some(other) if GgufImpl::Modelbench.supports(res.family) => {
            return Err(Error::Report(format!(
                "ops: `{label}` asks for {}, whose forward is not traced; the per-op table traces the project's implementation of {}: drop ?impl= or use ?impl=modelbench",
                other.name(),
                res.family
            )))
        }
        _ => {
            return Err(Error::Report(format!(
                "ops: `{label}` is {}, which has no implementation of the project's here (the per-op table traces the project's implementations of {}: gguf:<such a file>, without ?impl= or with ?impl=modelbench)",
                res.family,
                crate::models::families::GGUF_FAMILIES
                    .iter()
                    .filter(|f| f.implementation(GgufImpl::Modelbench).is_some())
                    .map(|f| f.arch)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
    Ok((res, path))
}

/// `label` loaded for the per-op table at the plan's shape ([`ops_model`]), with its file's
/// [`Hparams`] and the device.
pub fn open_for_ops(
    label: &str,
    plan: &OpsPlan,
    spec: crate::measure::device::DeviceSpec,
) -> Result<(crate::models::sources::loading::Loaded, Hparams, Device)> {
    let (res, path) = ops_model(label)?;
    let hp = match &res.gguf {
        Some(g) => Hparams::of(&g.header),
        None => Hparams::of(&crate::models::gguf::check::read_header(&path)?),
    };
    let dev = spec.open()?;
    let dtype = spec.default_dtype();
    let loaded = crate::models::sources::loading::open(res, &dev, dtype, Some(plan.context()))?;
    Ok((loaded, hp, dev))
}

/// The per-op table of model `label` at the plan's shape: the model loaded as the suite loads
/// it (its step time measured with the generation loop), its ops timed alone, the roofs from
/// calibrate's cache, and, with `peer` (a `test-backend-ops` program), ggml's time of each op
/// it can express. `progress` sees each row as it is timed.
pub fn measure(
    label: &str,
    plan: &OpsPlan,
    spec: crate::measure::device::DeviceSpec,
    peer: Option<&Path>,
    progress: &mut dyn FnMut(&OpRow),
) -> Result<OpsTable> {
    plan.check()?;
    let ids = match peer {
        Some(p) => {
            if !p.is_file() {
                return Err(Error::Report(format!(
                    "llama.cpp's test-backend-ops is not at {} (build it with scripts/build-llama-cpp.sh)",
                    p.display()
                )));
            }
            let f = ids_of(p);
            let text = std::fs::read_to_string(&f).map_err(|_| {
                Error::Report(format!(
                    "{} is missing (scripts/build-llama-cpp.sh writes it beside test-backend-ops; run it again)",
                    f.display()
                ))
            })?;
            Some(GgmlIds::parse(&text))
        }
        None => None,
    };
    let (mut loaded, hp, dev) = open_for_ops(label, plan, spec)?;
    // Half the step's generations before the ops are timed and half after, so a machine whose
    // load drifts during the run weighs on both sides of the coverage alike.
    let first = plan.step_trials.div_ceil(2);
    let mut steps = step_times(loaded.model.as_mut(), plan, first)?;
    let OpsSet { mut benches, order } = traced_ops(loaded.model.as_mut(), plan, hp)?;
    time_rows(&mut benches, &dev, plan, ids.as_ref(), progress)?;
    let order_note = match &order {
        Ok(order) => {
            let reps = match plan.phase {
                Phase::Decode => plan.step_trials * OpsPlan::DECODE_STEPS,
                Phase::Prefill => plan.step_trials,
            };
            time_in_order(&mut benches, order, &dev, reps.max(3), plan.seed)?;
            None
        }
        Err(why) => Some(why.clone()),
    };
    let mut rows: Vec<OpRow> = benches.into_iter().map(|(b, _)| b.row).collect();
    steps.extend(step_times(
        loaded.model.as_mut(),
        plan,
        plan.step_trials - first,
    )?);
    let in_model = if dev.is_cpu() {
        Some(profile_steps(
            loaded.model.as_mut(),
            plan,
            plan.step_trials,
        )?)
    } else {
        None
    };
    drop(loaded);
    let (step_us, step_ci_us, step_samples) = (
        median(&steps),
        bootstrap_median_ci(&steps, 2000, plan.seed),
        steps.len(),
    );
    let pools = crate::measure::threads::CandlePools::current();
    let peer_desc = match peer {
        Some(p) => {
            // A table of a CUDA device is compared with ggml's CUDA backend (a llama.cpp
            // build of scripts/build-llama-cpp.sh --cuda); of the CPU, with its CPU backend.
            let backend = if dev.is_cpu() { "CPU" } else { "CUDA0" };
            run_backend_ops(p, &mut rows, pools.matmul, backend)?;
            if dev.is_cpu() {
                Some(format!(
                    "{} perf -b CPU, {} threads (TEST_BACKEND_OPS_THREADS)",
                    p.display(),
                    pools.matmul
                ))
            } else {
                Some(format!("{} perf -b {backend}", p.display()))
            }
        }
        None => None,
    };
    let cal = crate::measure::calibration::cached(spec);
    Ok(OpsTable {
        model: label.to_string(),
        phase: plan.phase,
        tokens: plan.tokens,
        depth: plan.depth,
        threads: pools.describe(),
        step_us,
        step_ci_us,
        step_samples,
        rows,
        roofs: Roofs {
            mem_read_gbs: cal.as_ref().map(|c| c.mem_read_gbs),
            matmul_gflops: cal.and_then(|c| c.matmul_gflops.get("f32").copied()),
        },
        injected: crate::measure::inject::current().map(|i| i.to_string()),
        peer: peer_desc,
        in_model,
        order_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(kind: &str, calls: usize) -> (Bench, Option<GgmlOp>) {
        let row = OpRow {
            kind: kind.into(),
            op: kind.into(),
            shape: "(1)".into(),
            calls,
            us: f64::NAN,
            ci_us: None,
            bytes: 4.0,
            flops: None,
            ggml: None,
            ggml_us: None,
            seq_us: None,
            seq_ci_us: None,
        };
        let run = Box::new(|| Ok(()));
        (Bench { row, run }, None)
    }

    #[test]
    fn the_forward_order_must_call_each_row_as_often_as_the_table_says() {
        let benches = vec![bench("matmul", 2), bench("rms_norm", 1)];
        assert_eq!(check_order(&benches, vec![0, 1, 0]), Ok(vec![0, 1, 0]));
        let e = check_order(&benches, vec![0, 1]).unwrap_err();
        assert!(e.contains("`matmul matmul` 1 times, the table 2"), "{e}");
        assert!(check_order(&benches, vec![0, 0, 1, 1]).is_err());
    }

    fn table(kinds: &[(&str, f64, (f64, f64))]) -> OpsTable {
        OpsTable {
            model: "m".into(),
            phase: Phase::Decode,
            tokens: 1,
            depth: 16,
            threads: String::new(),
            step_us: 1000.0,
            step_ci_us: None,
            step_samples: 40,
            rows: Vec::new(),
            roofs: Roofs::default(),
            injected: None,
            peer: None,
            in_model: Some(InModel {
                steps: 40,
                step_us: 1000.0,
                mean_step_us: Some(1000.0),
                kinds: kinds
                    .iter()
                    .map(|&(kind, us, ci)| KindInModel {
                        kind: kind.into(),
                        calls: 1.0,
                        us,
                        median_us: Some(us),
                        ci_us: Some(ci),
                    })
                    .collect(),
            }),
            order_note: None,
        }
    }

    /// The kinds' averaged times are held against the mean step (they add up within it), so
    /// one stalled step cannot make "the work between the ops" negative; where the kinds still
    /// exceed the step (a table written before the mean was kept), it says not measured.
    #[test]
    fn the_work_between_the_ops_is_never_printed_negative() {
        // One stalled softmax: its average 290 us, the median step 820 us, the mean 1110 us.
        let mut t = table(&[
            ("lm_head", 554.0, (540.0, 560.0)),
            ("softmax", 290.0, (30.0, 35.0)),
        ]);
        let p = t.in_model.as_mut().expect("profile");
        p.step_us = 820.0;
        p.mean_step_us = Some(1110.0);
        let out = t.render_in_model();
        assert!(out.contains("the rest, 266.0 us"), "{out}");
        t.in_model.as_mut().expect("profile").mean_step_us = None;
        let out = t.render_in_model();
        assert!(
            out.contains("the work between the ops: not measured (")
                && !out.contains("the rest, -"),
            "{out}"
        );
    }

    #[test]
    fn an_op_slowed_only_inside_the_model_is_named_from_the_in_model_profile() {
        let base = table(&[
            ("lm_head", 815.0, (805.0, 825.0)),
            ("softmax", 29.0, (28.0, 30.0)),
        ]);
        // lm_head 133 us slower with separate intervals: named, though no row grew alone.
        let slow = table(&[
            ("lm_head", 948.0, (930.0, 960.0)),
            ("softmax", 31.0, (30.5, 31.5)),
        ]);
        let (what, b, n, _) = grew_most(&base, &slow, 0.02).expect("lm_head grew");
        assert_eq!(
            (what.as_str(), b, n),
            ("lm_head (in the model's forward)", 815.0, 948.0)
        );
        // The same growth with overlapping intervals, or under 2% of the step, names nothing;
        // an unchanged rerun names nothing.
        let wide = table(&[("lm_head", 948.0, (820.0, 990.0))]);
        assert!(grew_most(&base, &wide, 0.02).is_none());
        let small = table(&[("lm_head", 830.0, (826.0, 834.0))]);
        assert!(grew_most(&base, &small, 0.02).is_none());
        assert!(grew_most(&base, &base.clone(), 0.02).is_none());
    }

    #[test]
    fn under_drift_the_op_that_grew_by_the_largest_factor_is_named_not_the_largest_op() {
        // Issue 48's softmax try: the machine ran the new side ~1.35x slower, so the lm_head
        // gained the most microseconds; softmax, the changed op, grew by the largest factor.
        let kinds = |g: f64, soft: f64| -> Vec<(&'static str, f64, (f64, f64))> {
            [
                ("activation", 4.1, 4.0, 4.3),
                ("add", 1.7, 1.6, 1.9),
                ("lm_head", 890.0, 860.0, 905.0),
                ("matmul", 21.0, 20.6, 21.7),
                ("mul", 1.1, 1.0, 1.3),
                ("rms_norm", 5.9, 5.8, 6.5),
                ("rope", 2.5, 2.3, 2.7),
                ("softmax", soft, soft - 1.5, soft + 1.5),
            ]
            .into_iter()
            .map(|(k, us, lo, hi)| (k, us * g, (lo * g, hi * g)))
            .collect()
        };
        let base = table(&kinds(1.0, 31.0));
        let slow = table(&kinds(1.35, 95.0 / 1.35));
        let (what, ..) = grew_most(&base, &slow, 0.02).expect("softmax grew");
        assert_eq!(what, "softmax (in the model's forward)");
        // Drift alone (every op 1.35x) names nothing.
        assert!(grew_most(&base, &table(&kinds(1.35, 31.0)), 0.02).is_none());
    }

    #[test]
    fn in_order_times_fill_every_row_and_sum_per_step() {
        let mut benches = vec![bench("matmul", 2), bench("add", 1)];
        let dev = Device::Cpu;
        time_in_order(&mut benches, &[0, 1, 0], &dev, 5, 1).unwrap();
        for (b, _) in &benches {
            let us = b.row.seq_us.unwrap();
            assert!(us.is_finite() && us >= 0.0);
            let (lo, hi) = b.row.seq_ci_us.unwrap();
            assert!(lo <= us && us <= hi);
        }
    }
}
