//! Where the time goes (issue 31): every distinct op and shape of one forward of a model as it
//! runs in the suite, each timed alone at that shape, against the measured step time of the
//! same model and scenario.
//!
//! The ops are enumerated from the project's Gemma 3 ([`crate::models::gemma3_quantized`]):
//! the same calls in the same order, on the model's own quantized weights (each distinct quant
//! type and shape is one row whose calls go through every layer's tensor of it in turn, as the
//! forward reads them), its RmsNorm weights, RoPE tables and embedding code.
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::quantized_nn::RmsNorm;
use serde::{Deserialize, Serialize};

use crate::engine::generate::{generate, prompt_ids, Prompt};
use crate::engine::sampling::{Sampler, SamplingParams};
use crate::error::{Error, Result};
use crate::measure::device::sync;
use crate::measure::inject::{around_op, profile_start, profile_take};
use crate::measure::stats::{bootstrap_median_ci, median};
use crate::models::gemma3_quantized::{attention_mask, Config, Embedding, Rope};
use crate::models::quantized::dtype_name;
use crate::models::CausalLm;

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
    /// Per kind the model's forward marks: calls and wall time per step (us), averaged.
    pub kinds: Vec<KindInModel>,
}

/// One kind of op inside the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindInModel {
    pub kind: String,
    pub calls: f64,
    pub us: f64,
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
    let pick = |logits: &Tensor| -> Result<u32> {
        Ok(logits
            .to_dtype(DType::F32)?
            .argmax(candle_core::D::Minus1)?
            .to_scalar::<u32>()?)
    };
    let mut walls = Vec::new();
    let mut total: BTreeMap<&'static str, (u64, Duration)> = BTreeMap::new();
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
            let next = model.forward(ids, pos).and_then(|l| pick(&l));
            let wall = t.elapsed();
            let kinds = profile_take();
            let next = next?;
            // The first generation warms up; its times are not kept.
            if trial > 0 {
                walls.push(wall.as_secs_f64() * 1e6);
                for k in kinds {
                    let e = total.entry(k.kind).or_default();
                    e.0 += k.calls;
                    e.1 += k.time;
                }
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
        kinds: total
            .into_iter()
            .map(|(kind, (calls, time))| KindInModel {
                kind: kind.to_string(),
                calls: calls as f64 / n,
                us: time.as_secs_f64() * 1e6 / n,
            })
            .collect(),
    })
}

fn ggml_err(e: impl std::fmt::Display) -> Error {
    Error::Report(format!("ops: {e}"))
}

/// Type ids of ggml (`ggml-ids.txt` of scripts/build-llama-cpp.sh): `name -> (id, block,
/// bytes per block)`, and op ids `name -> id`.
#[derive(Debug, Clone, Default)]
pub struct GgmlIds {
    pub types: BTreeMap<String, (u32, usize, usize)>,
    pub ops: BTreeMap<String, u32>,
    pub unary: BTreeMap<String, u32>,
}

impl GgmlIds {
    pub fn parse(text: &str) -> GgmlIds {
        let mut ids = GgmlIds::default();
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["op", id, name] => {
                    if let Ok(id) = id.parse() {
                        ids.ops.insert(name.to_string(), id);
                    }
                }
                ["unary", id, name] => {
                    if let Ok(id) = id.parse() {
                        ids.unary.insert(name.to_string(), id);
                    }
                }
                ["type", id, name, blck, size] => {
                    if let (Ok(id), Ok(b), Ok(s)) = (id.parse(), blck.parse(), size.parse()) {
                        ids.types.insert(name.to_string(), (id, b, s));
                    }
                }
                _ => {}
            }
        }
        ids
    }
}

/// A source tensor of a `--test-file` line: ggml type name and ne (ggml order: fastest dim
/// first); strides are the contiguous ones unless `nb` is given (in bytes).
#[derive(Debug, Clone)]
pub struct Src {
    pub ty: String,
    pub ne: [usize; 4],
    pub nb: Option<[usize; 4]>,
}

impl Src {
    pub fn new(ty: &str, ne: [usize; 4]) -> Src {
        Src {
            ty: ty.to_string(),
            ne,
            nb: None,
        }
    }
}

/// One op in ggml's terms (resolved to ids by [`ggml_line`]).
#[derive(Debug, Clone)]
pub struct GgmlOp {
    pub op: &'static str,
    /// For `UNARY`: the unary op's name (`GELU`).
    pub unary: Option<&'static str>,
    pub out: &'static str,
    pub ne: [usize; 4],
    /// op_params as i32 (floats as their bits).
    pub params: Vec<i32>,
    pub srcs: Vec<Src>,
}

fn fbits(x: f32) -> i32 {
    x.to_bits() as i32
}

/// The `--test-file` line of `op` named `name`, or None when this build of ggml lacks one of
/// its ops or types.
pub fn ggml_line(op: &GgmlOp, name: &str, ids: &GgmlIds) -> Option<String> {
    let mut params = op.params.clone();
    if let Some(u) = op.unary {
        params.insert(0, *ids.unary.get(u)? as i32);
    }
    let (out_ty, _, _) = ids.types.get(op.out)?;
    let mut s = format!(
        "{} {} {} {} {} {} {}",
        ids.ops.get(op.op)?,
        out_ty,
        op.ne[0],
        op.ne[1],
        op.ne[2],
        op.ne[3],
        params.len()
    );
    for p in &params {
        s.push_str(&format!(" {p}"));
    }
    s.push_str(&format!(" {}", op.srcs.len()));
    for src in &op.srcs {
        let (id, blck, size) = *ids.types.get(&src.ty)?;
        let nb = src.nb.unwrap_or_else(|| {
            let nb0 = size;
            let nb1 = nb0 * src.ne[0] / blck;
            let nb2 = nb1 * src.ne[1];
            [nb0, nb1, nb2, nb2 * src.ne[2]]
        });
        s.push_str(&format!(
            " {id} {} {} {} {} {} {} {} {}",
            src.ne[0], src.ne[1], src.ne[2], src.ne[3], nb[0], nb[1], nb[2], nb[3]
        ));
    }
    s.push_str(&format!(" {name}"));
    Some(s)
}

/// ggml's name of a candle quantized type (`q4_K`), as test-backend-ops and ggml-ids spell it.
fn ggml_type(d: candle_core::quantized::GgmlDType) -> String {
    let n = dtype_name(d).to_lowercase();
    match n.strip_suffix("_k") {
        Some(base) => format!("{base}_K"),
        None => n,
    }
}

/// A builder of the rows: rows with the same kind, op and shape are one row with their calls
/// added up.
struct Rows {
    benches: Vec<(Bench, Option<GgmlOp>)>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        kind: &str,
        op: &str,
        shape: String,
        calls: usize,
        bytes: f64,
        flops: Option<f64>,
        ggml: Option<GgmlOp>,
        run: Box<dyn FnMut() -> candle_core::Result<()>>,
    ) -> Option<usize> {
        if calls == 0 {
            return None;
        }
        if let Some(i) = self
            .benches
            .iter()
            .position(|(b, _)| b.row.kind == kind && b.row.op == op && b.row.shape == shape)
        {
            self.benches[i].0.row.calls += calls;
            return Some(i);
        }
        self.benches.push((
            Bench {
                row: OpRow {
                    kind: kind.to_string(),
                    op: op.to_string(),
                    shape,
                    calls,
                    us: f64::NAN,
                    ci_us: None,
                    bytes,
                    flops,
                    ggml: None,
                    ggml_us: None,
                    seq_us: None,
                    seq_ci_us: None,
                },
                run,
            },
            ggml,
        ));
        Some(self.benches.len() - 1)
    }
}

/// A quantized matmul's ggml type and (n, k).
type MatKey = (String, usize, usize);

fn randn(shape: &[usize], dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::randn(0f32, 1f32, shape, dev)
}

fn shape_str(dims: &[usize]) -> String {
    format!(
        "({})",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Enumerates the ops of one forward of the project's Gemma 3 in `path` at the plan's shape,
/// each with its runnable call (weights read from the file: one tensor per distinct type and
/// shape) and its ggml counterpart.
pub fn gemma3_ops(path: &Path, plan: &OpsPlan, dev: &Device) -> Result<OpsSet> {
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let ct = gguf_file::Content::read(&mut f).map_err(|e| Error::weights(path.display(), e))?;
    let cfg = Config::from_gguf(&ct)?;
    let load = |f: &mut std::fs::File, name: &str| -> Result<QTensor> {
        ct.tensor(f, name, dev)
            .map_err(|e| Error::weights(path.display(), format!("tensor `{name}`: {e}")))
    };
    let (m, depth) = (plan.tokens, plan.depth);
    let (h, hd, nh, nkv) = (cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads);
    let rep = nh / nkv;
    let eps = cfg.rms_norm_eps;
    let mut rows = Rows {
        benches: Vec::new(),
    };
    let f4 = 4.0f64;

    // The quantized matmuls: per distinct (type, n, k), every tensor of that type and shape,
    // called in turn as the forward calls them, so each call reads other weights than the one
    // before it (as in the model) instead of one tensor kept hot in cache.
    let roles = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    // (type, n, k) -> (the tensors of that shape in call order, their roles, calls per step)
    let mut mm: BTreeMap<MatKey, (Vec<String>, Vec<&str>, usize)> = BTreeMap::new();
    for l in 0..cfg.layers {
        for r in roles {
            let name = format!("blk.{l}.{r}.weight");
            let info = ct
                .tensor_infos
                .get(&name)
                .ok_or_else(|| Error::weights(path.display(), format!("no tensor `{name}`")))?;
            let (n, k) = info
                .shape
                .dims2()
                .map_err(|e| Error::weights(path.display(), e))?;
            let e = mm
                .entry((ggml_type(info.ggml_dtype), n, k))
                .or_insert_with(|| (Vec::new(), Vec::new(), 0));
            e.0.push(name.clone());
            if !e.1.contains(&r) {
                e.1.push(r);
            }
            e.2 += 1;
        }
    }
    let matmul = |rows: &mut Rows,
                  kind: &str,
                  what: String,
                  qs: Vec<QTensor>,
                  m: usize,
                  calls: usize|
     -> Result<Option<usize>> {
        let (n, k) = qs[0].shape().dims2()?;
        let ty = ggml_type(qs[0].dtype());
        let wbytes = qs[0].storage_size_in_bytes() as f64;
        let qms = qs
            .into_iter()
            .map(QMatMul::from_qtensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut next = 0usize;
        let x = randn(&[1, m, k], dev)?;
        let g = GgmlOp {
            op: "MUL_MAT",
            unary: None,
            out: "f32",
            ne: [n, m, 1, 1],
            params: vec![],
            srcs: vec![Src::new(&ty, [k, n, 1, 1]), Src::new("f32", [k, m, 1, 1])],
        };
        Ok(rows.add(
            kind,
            &format!("{what} ({ty})"),
            format!("m={m} n={n} k={k}"),
            calls,
            wbytes + f4 * (m * k + m * n) as f64,
            Some(2.0 * (m * n * k) as f64),
            Some(g),
            Box::new(move || {
                let qm = &qms[next % qms.len()];
                next = next.wrapping_add(1);
                qm.forward(&x).map(drop)
            }),
        ))
    };
    // The row of each weight tensor, for the forward's order.
    let mut row_of: BTreeMap<String, Option<usize>> = BTreeMap::new();
    for ((_, _, _), (names, rs, calls)) in mm {
        let qs = names
            .iter()
            .map(|name| load(&mut f, name))
            .collect::<Result<Vec<_>>>()?;
        let i = matmul(&mut rows, "matmul", rs.join(", "), qs, m, calls)?;
        for name in names {
            row_of.insert(name, i);
        }
    }
    // The output projection (the last position only), tied to the embedding when absent.
    let out_name = if ct.tensor_infos.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let out_q = load(&mut f, out_name)?;
    let i_lm_head = matmul(
        &mut rows,
        "lm_head",
        out_name.replace(".weight", ""),
        vec![out_q],
        1,
        1,
    )?;

    // Host side of the model's forward: the ids tensor, the embedding rows, the scale.
    let ids: Vec<u32> = prompt_ids(m, 1000.min(cfg_vocab(&ct)), plan.seed, 0);
    let i_host = {
        let ids = ids.clone();
        let dev2 = dev.clone();
        rows.add(
            "host",
            "ids tensor",
            format!("({m})"),
            1,
            f4 * m as f64,
            None,
            None,
            Box::new(move || Tensor::new(ids.as_slice(), &dev2)?.unsqueeze(0).map(drop)),
        )
    };
    let embd = Arc::new(load(&mut f, "token_embd.weight")?);
    let ety = ggml_type(embd.dtype());
    let (vocab, _) = embd.shape().dims2()?;
    let row_bytes = embd.storage_size_in_bytes() as f64 / vocab as f64;
    let emb = Embedding::new(embd, dev)?;
    let ids_t = Tensor::new(ids.as_slice(), dev)?.unsqueeze(0)?;
    let i_embd = rows.add(
        "embedding",
        &format!("token_embd rows ({ety})"),
        format!("({m},{h})"),
        1,
        row_bytes * m as f64 + f4 * (m * h) as f64,
        None,
        Some(GgmlOp {
            op: "GET_ROWS",
            unary: None,
            out: "f32",
            ne: [h, m, 1, 1],
            params: vec![],
            srcs: vec![
                Src::new(&ety, [h, vocab, 1, 1]),
                Src::new("i32", [m, 1, 1, 1]),
            ],
        }),
        Box::new(move || emb.forward(&ids_t).map(drop)),
    );
    let xh = randn(&[1, m, h], dev)?;
    let scale_op = |ne: [usize; 4], s: f32| GgmlOp {
        op: "SCALE",
        unary: None,
        out: "f32",
        ne,
        params: vec![fbits(s), fbits(0.0)],
        srcs: vec![Src::new("f32", ne)],
    };
    let i_escale = {
        let x = xh.clone();
        let s = (h as f64).sqrt();
        rows.add(
            "scale",
            "embedding * sqrt(hidden)",
            format!("(1,{m},{h})"),
            1,
            2.0 * f4 * (m * h) as f64,
            None,
            Some(scale_op([h, m, 1, 1], s as f32)),
            Box::new(move || (&x * s).map(drop)),
        )
    };

    // Norms: four per layer on (1, m, hidden), q/k norms per head, the final norm (1 row).
    let norm = |f: &mut std::fs::File, name: &str| -> Result<RmsNorm> {
        Ok(RmsNorm::from_qtensor(load(f, name)?, eps)?)
    };
    let rms_ggml = |d: usize, rows: usize| GgmlOp {
        op: "RMS_NORM",
        unary: None,
        out: "f32",
        ne: [d, rows, 1, 1],
        params: vec![fbits(eps as f32)],
        srcs: vec![Src::new("f32", [d, rows, 1, 1])],
    };
    let add_norm = |rows: &mut Rows, what: &str, n: RmsNorm, x: Tensor, calls: usize| {
        let d = *x.dims().last().expect("rank >= 1");
        let r = x.elem_count() / d;
        rows.add(
            "rms_norm",
            what,
            shape_str(x.dims()),
            calls,
            f4 * (2 * x.elem_count() + d) as f64,
            None,
            Some(rms_ggml(d, r)),
            Box::new(move || n.forward(&x).map(drop)),
        )
    };
    let layers = cfg.layers;
    let i_norm4 = add_norm(
        &mut rows,
        "attn_norm, post_attention_norm, ffn_norm, post_ffw_norm",
        norm(&mut f, "blk.0.attn_norm.weight")?,
        xh.clone(),
        4 * layers,
    );
    let i_qnorm = add_norm(
        &mut rows,
        "attn_q_norm",
        norm(&mut f, "blk.0.attn_q_norm.weight")?,
        randn(&[1, m, nh, hd], dev)?,
        layers,
    );
    let i_knorm = add_norm(
        &mut rows,
        "attn_k_norm",
        norm(&mut f, "blk.0.attn_k_norm.weight")?,
        randn(&[1, m, nkv, hd], dev)?,
        layers,
    );
    let i_final_norm = add_norm(
        &mut rows,
        if m == 1 {
            "attn_norm, post_attention_norm, ffn_norm, post_ffw_norm"
        } else {
            "output_norm"
        },
        norm(&mut f, "output_norm.weight")?,
        randn(&[1, 1, h], dev)?,
        1,
    );

    // q, k, v to (1, heads, m, head_dim): a copy when m > 1 (a view otherwise).
    let mut i_transpose = Vec::new();
    for (what, heads, calls) in [
        ("q transpose", nh, layers),
        ("k, v transpose", nkv, 2 * layers),
    ] {
        let x = randn(&[1, m, heads, hd], dev)?;
        let nb = [4, 4 * hd * heads, 4 * hd, 4 * hd * heads * m];
        i_transpose.push(rows.add(
            "copy",
            what,
            format!("(1,{m},{heads},{hd})->(1,{heads},{m},{hd})"),
            calls,
            2.0 * f4 * x.elem_count() as f64,
            None,
            Some(GgmlOp {
                op: "CONT",
                unary: None,
                out: "f32",
                ne: [hd, m, heads, 1],
                params: vec![],
                srcs: vec![Src {
                    ty: "f32".into(),
                    ne: [hd, m, heads, 1],
                    nb: Some(nb),
                }],
            }),
            Box::new(move || x.transpose(1, 2)?.contiguous().map(drop)),
        ));
    }

    // RoPE (NeoX) on q and k at positions depth..depth+m.
    let rope = Rope::new(hd, cfg.rope_base, cfg.rope_scale_global, depth + m, dev)?;
    let mut i_rope = Vec::new();
    for (what, heads) in [("q", nh), ("k", nkv)] {
        let x = randn(&[1, heads, m, hd], dev)?;
        let r = rope.clone();
        i_rope.push(rows.add(
            "rope",
            &format!("rope {what} (neox)"),
            shape_str(x.dims()),
            layers,
            f4 * (2 * x.elem_count() + m * hd) as f64,
            None,
            Some(GgmlOp {
                op: "ROPE",
                unary: None,
                out: "f32",
                ne: [hd, heads, m, 1],
                params: vec![
                    0,
                    hd as i32,
                    2, // GGML_ROPE_TYPE_NEOX
                    0,
                    fbits(cfg.rope_base),
                    fbits(1.0 / cfg.rope_scale_global),
                    fbits(0.0),
                    fbits(1.0),
                    fbits(32.0),
                    fbits(1.0),
                ],
                srcs: vec![
                    Src::new("f32", [hd, heads, m, 1]),
                    Src::new("i32", [m, 1, 1, 1]),
                ],
            }),
            Box::new(move || r.apply(&x, depth).map(drop)),
        ));
    }

    // Attention per layer type: keys seen, the cache update, QK^T, scale, mask, softmax, AV.
    let window = cfg.sliding_window.max(1);
    let sliding_len = depth.min(window - 1);
    let n_sliding = (0..layers).filter(|&l| cfg.is_sliding(l)).count();
    let n_global = layers - n_sliding;
    let kv_elems = |len: usize| nkv * len * hd;
    // The cache update: global layers write k and v into the preallocated cache (slice_set at
    // `depth`); sliding layers concatenate the kept window with the new positions.
    let (mut i_append, mut i_cat) = (None, None);
    if n_global > 0 {
        let cache = Tensor::zeros((1, nkv, depth + m, hd), DType::F32, dev)?;
        let k = randn(&[1, nkv, m, hd], dev)?;
        i_append = rows.add(
            "kv_cache",
            "k, v append (global layers)",
            format!("(1,{nkv},{m},{hd}) at {depth}"),
            2 * n_global,
            2.0 * f4 * kv_elems(m) as f64,
            None,
            Some(GgmlOp {
                op: "CPY",
                unary: None,
                out: "f32",
                ne: [hd, m, nkv, 1],
                params: vec![],
                srcs: vec![
                    Src::new("f32", [hd, m, nkv, 1]),
                    Src::new("f32", [hd, m, nkv, 1]),
                ],
            }),
            Box::new(move || cache.slice_set(&k, 2, depth)),
        );
    }
    if n_sliding > 0 && sliding_len > 0 {
        let ck = randn(&[1, nkv, sliding_len, hd], dev)?;
        let k = randn(&[1, nkv, m, hd], dev)?;
        i_cat = rows.add(
            "kv_cache",
            "k, v cat (sliding layers)",
            format!("(1,{nkv},{sliding_len},{hd})+(1,{nkv},{m},{hd})"),
            2 * n_sliding,
            2.0 * f4 * kv_elems(sliding_len + m) as f64,
            None,
            Some(GgmlOp {
                op: "CONCAT",
                unary: None,
                out: "f32",
                ne: [hd, sliding_len + m, nkv, 1],
                params: vec![1],
                srcs: vec![
                    Src::new("f32", [hd, sliding_len, nkv, 1]),
                    Src::new("f32", [hd, m, nkv, 1]),
                ],
            }),
            Box::new(move || Tensor::cat(&[&ck, &k], 2).map(drop)),
        );
    }
    let scale = 1.0 / (hd as f64).sqrt();
    let groups: Vec<(usize, usize, usize, Option<usize>)> = [
        (n_global, 0, depth + m, None),
        (
            n_sliding,
            depth - sliding_len,
            sliding_len + m,
            Some(window),
        ),
    ]
    .into_iter()
    .filter(|g| g.0 > 0)
    .collect();
    // Per layer type (sliding or not), the rows of its attention ops.
    let mut i_attn: Vec<(bool, AttnRows)> = Vec::new();
    for (calls, k0, keys, win) in groups {
        let rows_q = rep * m;
        let q = randn(&[1, nkv, rows_q, hd], dev)?;
        let k = randn(&[1, nkv, keys, hd], dev)?;
        let v = randn(&[1, nkv, keys, hd], dev)?;
        let att = randn(&[1, nkv, rows_q, keys], dev)?;
        let att_ne = [keys, rows_q, nkv, 1];
        let sh = format!("(1,{nkv},{rows_q},{keys})");
        let qk = {
            let (q, k) = (q.clone(), k.clone());
            rows.add(
                "attn_qk",
                "q k^T",
                format!("(1,{nkv},{rows_q},{hd})x(1,{nkv},{hd},{keys})"),
                calls,
                f4 * (q.elem_count() + k.elem_count() + att.elem_count()) as f64,
                Some(2.0 * (nkv * rows_q * keys * hd) as f64),
                Some(GgmlOp {
                    op: "MUL_MAT",
                    unary: None,
                    out: "f32",
                    ne: att_ne,
                    params: vec![],
                    srcs: vec![
                        Src::new("f32", [hd, keys, nkv, 1]),
                        Src::new("f32", [hd, rows_q, nkv, 1]),
                    ],
                }),
                Box::new(move || q.matmul(&k.t()?).map(drop)),
            )
        };
        let scale_row = {
            let a = att.clone();
            rows.add(
                "scale",
                "scores * 1/sqrt(head_dim)",
                sh.clone(),
                calls,
                2.0 * f4 * att.elem_count() as f64,
                None,
                Some(scale_op(att_ne, scale as f32)),
                Box::new(move || (&a * scale).map(drop)),
            )
        };
        let (mask_build, mask_add) = if let Some(mv) = attention_mask(depth, m, k0, keys, win) {
            // Built on the host once per forward per layer type, added in every layer.
            let dev2 = dev.clone();
            let mv2 = mv.clone();
            let build = rows.add(
                "mask",
                "mask build (host)",
                format!("({m},{keys})"),
                1,
                f4 * (m * keys) as f64,
                None,
                None,
                Box::new(move || {
                    let v = attention_mask(depth, m, k0, keys, win).unwrap_or_else(|| mv2.clone());
                    Tensor::from_vec(v, (m, keys), &dev2).map(drop)
                }),
            );
            let mask = Tensor::from_vec(mv, (m, keys), dev)?;
            let a = att.clone();
            let add = rows.add(
                "mask",
                "scores + mask",
                sh.clone(),
                calls,
                f4 * (2 * att.elem_count() + m * keys) as f64,
                None,
                Some(GgmlOp {
                    op: "ADD",
                    unary: None,
                    out: "f32",
                    ne: [keys, m, rep, nkv],
                    params: vec![],
                    srcs: vec![
                        Src::new("f32", [keys, m, rep, nkv]),
                        Src::new("f32", [keys, m, 1, 1]),
                    ],
                }),
                Box::new(move || {
                    a.reshape((1, nkv, rep, m, keys))?
                        .broadcast_add(&mask)?
                        .reshape((1, nkv, rep * m, keys))
                        .map(drop)
                }),
            );
            (build, add)
        } else {
            (None, None)
        };
        let softmax = {
            let a = att.clone();
            rows.add(
                "softmax",
                "softmax_last_dim",
                sh.clone(),
                calls,
                2.0 * f4 * att.elem_count() as f64,
                None,
                Some(GgmlOp {
                    op: "SOFT_MAX",
                    unary: None,
                    out: "f32",
                    ne: att_ne,
                    params: vec![fbits(1.0), fbits(0.0)],
                    srcs: vec![Src::new("f32", att_ne)],
                }),
                Box::new(move || candle_nn::ops::softmax_last_dim(&a).map(drop)),
            )
        };
        let av = rows.add(
            "attn_av",
            "scores v",
            format!("(1,{nkv},{rows_q},{keys})x(1,{nkv},{keys},{hd})"),
            calls,
            f4 * (att.elem_count() + v.elem_count() + q.elem_count()) as f64,
            Some(2.0 * (nkv * rows_q * keys * hd) as f64),
            Some(GgmlOp {
                op: "MUL_MAT",
                unary: None,
                out: "f32",
                ne: [hd, rows_q, nkv, 1],
                params: vec![],
                srcs: vec![
                    Src::new("f32", [keys, hd, nkv, 1]),
                    Src::new("f32", [keys, rows_q, nkv, 1]),
                ],
            }),
            Box::new(move || att.matmul(&v).map(drop)),
        );
        i_attn.push((
            win.is_some(),
            AttnRows {
                qk,
                scale: scale_row,
                mask_build,
                mask_add,
                softmax,
                av,
            },
        ));
    }
    // The attention output back to (1, m, heads * head_dim): a copy when m > 1.
    let i_otr = {
        let o = randn(&[1, nh, m, hd], dev)?;
        rows.add(
            "copy",
            "attention output transpose",
            format!("(1,{nh},{m},{hd})->(1,{m},{})", nh * hd),
            layers,
            2.0 * f4 * o.elem_count() as f64,
            None,
            Some(GgmlOp {
                op: "CONT",
                unary: None,
                out: "f32",
                ne: [hd, nh, m, 1],
                params: vec![],
                srcs: vec![Src {
                    ty: "f32".into(),
                    ne: [hd, nh, m, 1],
                    nb: Some([4, 4 * hd * m, 4 * hd, 4 * hd * m * nh]),
                }],
            }),
            Box::new(move || o.transpose(1, 2)?.reshape((1, m, nh * hd)).map(drop)),
        )
    };

    // The MLP's elementwise ops and the residual adds.
    let ffn = ct
        .tensor_infos
        .get("blk.0.ffn_gate.weight")
        .map(|i| i.shape.dims()[0])
        .unwrap_or(4 * h);
    let xf = randn(&[1, m, ffn], dev)?;
    let yf = randn(&[1, m, ffn], dev)?;
    let ne_f = [ffn, m, 1, 1];
    let i_gelu = {
        let x = xf.clone();
        rows.add(
            "activation",
            "gelu (tanh)",
            format!("(1,{m},{ffn})"),
            layers,
            2.0 * f4 * (m * ffn) as f64,
            None,
            Some(GgmlOp {
                op: "UNARY",
                unary: Some("GELU"),
                out: "f32",
                ne: ne_f,
                params: vec![],
                srcs: vec![Src::new("f32", ne_f)],
            }),
            Box::new(move || x.gelu().map(drop)),
        )
    };
    let binary = |op: &'static str, ne: [usize; 4]| GgmlOp {
        op,
        unary: None,
        out: "f32",
        ne,
        params: vec![],
        srcs: vec![Src::new("f32", ne), Src::new("f32", ne)],
    };
    let i_mul = rows.add(
        "mul",
        "gate * up",
        format!("(1,{m},{ffn})"),
        layers,
        3.0 * f4 * (m * ffn) as f64,
        None,
        Some(binary("MUL", ne_f)),
        Box::new(move || (&xf * &yf).map(drop)),
    );
    let i_add = {
        let (a, b) = (xh.clone(), randn(&[1, m, h], dev)?);
        rows.add(
            "add",
            "residual",
            format!("(1,{m},{h})"),
            2 * layers,
            3.0 * f4 * (m * h) as f64,
            None,
            Some(binary("ADD", [h, m, 1, 1])),
            Box::new(move || (&a + &b).map(drop)),
        )
    };
    let i_softcap = if let Some(cap) = cfg.final_logit_softcapping {
        let l = randn(&[1, vocab], dev)?;
        rows.add(
            "activation",
            "final logit soft-cap",
            format!("(1,{vocab})"),
            1,
            2.0 * f4 * vocab as f64,
            None,
            None,
            Box::new(move || ((&l / cap)?.tanh()? * cap).map(drop)),
        )
    } else {
        None
    };
    // The pick: greedy argmax on the device, one u32 back to the host.
    let logits = randn(&[vocab], dev)?;
    let i_sampling = rows.add(
        "sampling",
        "argmax + to host",
        format!("({vocab})"),
        1,
        f4 * vocab as f64,
        None,
        Some(GgmlOp {
            op: "ARGMAX",
            unary: None,
            out: "i32",
            ne: [1, 1, 1, 1],
            params: vec![],
            srcs: vec![Src::new("f32", [vocab, 1, 1, 1])],
        }),
        Box::new(move || logits.argmax(0)?.to_scalar::<u32>().map(drop)),
    );

    // The forward's order, one entry per call (Gemma3Model::forward and Layer::attention/mlp).
    let mut order: Vec<Option<usize>> = vec![i_host, i_embd, i_escale];
    let group = |sliding: bool| i_attn.iter().find(|(s, _)| *s == sliding).map(|(_, r)| r);
    for sliding in [false, true] {
        order.push(group(sliding).and_then(|g| g.mask_build));
    }
    for l in 0..layers {
        let sliding = cfg.is_sliding(l);
        let w = |role: &str| {
            row_of
                .get(&format!("blk.{l}.{role}.weight"))
                .copied()
                .flatten()
        };
        let (q_tr, kv_tr) = (i_transpose[0], i_transpose[1]);
        order.extend([
            i_norm4,
            w("attn_q"),
            w("attn_k"),
            w("attn_v"),
            i_qnorm,
            q_tr,
            i_knorm,
            kv_tr,
            kv_tr,
            i_rope[0],
            i_rope[1],
        ]);
        let cache = if sliding { i_cat } else { i_append };
        order.extend([cache, cache]);
        if let Some(g) = group(sliding) {
            order.extend([g.qk, g.scale, g.mask_add, g.softmax, g.av]);
        }
        order.extend([
            i_otr,
            w("attn_output"),
            i_norm4,
            i_add,
            i_norm4,
            w("ffn_gate"),
            i_gelu,
            w("ffn_up"),
            i_mul,
            w("ffn_down"),
            i_norm4,
            i_add,
        ]);
    }
    order.extend([i_final_norm, i_lm_head, i_softcap, i_sampling]);
    let order: Vec<usize> = order.into_iter().flatten().collect();
    let order = check_order(&rows.benches, order);
    Ok(OpsSet {
        benches: rows.benches,
        order,
    })
}

/// The rows of one layer type's attention ops.
struct AttnRows {
    qk: Option<usize>,
    scale: Option<usize>,
    mask_build: Option<usize>,
    mask_add: Option<usize>,
    softmax: Option<usize>,
    av: Option<usize>,
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

fn cfg_vocab(ct: &gguf_file::Content) -> usize {
    ct.tensor_infos
        .get("token_embd.weight")
        .and_then(|i| i.shape.dims2().ok())
        .map(|(v, _)| v)
        .unwrap_or(1000)
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

/// Parses `test-backend-ops perf` console output: `name -> us/run` of the cases named `opN`.
pub fn parse_backend_ops(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let Some(i) = l.find("(name=") else { continue };
        let rest = &l[i + 6..];
        let Some(name) = rest.split(',').next() else {
            continue;
        };
        let Some(j) = l.find(" us/run") else { continue };
        let before = l[..j].trim_end();
        let num = before.rsplit(' ').next().unwrap_or("");
        if let Ok(us) = num.trim().parse::<f64>() {
            out.insert(name.to_string(), us);
        }
    }
    out
}

/// Runs `test-backend-ops perf -b CPU --test-file` over the rows that have a ggml line, with
/// `threads` CPU threads, and fills `ggml_us`. Returns the program's description.
pub fn run_backend_ops(program: &Path, rows: &mut [OpRow], threads: usize) -> Result<()> {
    let lines: Vec<&str> = rows.iter().filter_map(|r| r.ggml.as_deref()).collect();
    if lines.is_empty() {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("modelbench-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let file = dir.join("cases.txt");
    std::fs::write(&file, lines.join("\n") + "\n").map_err(Error::io(&file))?;
    let out = std::process::Command::new(program)
        .args(["perf", "-b", "CPU", "--test-file"])
        .arg(&file)
        .env("TEST_BACKEND_OPS_THREADS", threads.to_string())
        .output()
        .map_err(Error::io(program))?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(ggml_err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .chain(text.lines())
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
        )));
    }
    let times = parse_backend_ops(&text);
    for r in rows.iter_mut() {
        let name = r
            .ggml
            .as_deref()
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string);
        r.ggml_us = name.and_then(|n| times.get(&n).copied());
    }
    Ok(())
}

impl OpsTable {
    /// Sum over the rows of calls x time per call (us).
    pub fn ops_us(&self) -> f64 {
        self.rows.iter().map(OpRow::step_us).sum()
    }

    /// Share of the measured step the ops account for.
    pub fn coverage(&self) -> f64 {
        self.ops_us() / self.step_us
    }

    /// Sum over the rows of calls x time per call in the forward's order (us); None when a
    /// row was not timed in order.
    pub fn in_order_us(&self) -> Option<f64> {
        self.rows
            .iter()
            .map(|r| r.seq_us.map(|us| us * r.calls as f64))
            .sum()
    }

    /// Among the rows with ggml times, the one with the largest gap per step where candle is
    /// slower (`candle_slower`: the op accounting for most of the step's gap to ggml), or where
    /// ggml is slower.
    pub fn largest_gap(&self, candle_slower: bool) -> Option<&OpRow> {
        let sign = if candle_slower { 1.0 } else { -1.0 };
        self.rows
            .iter()
            .filter(|r| r.ggml_us.is_some() && sign * gap(r) > 0.0)
            .max_by(|a, b| (sign * gap(a)).total_cmp(&(sign * gap(b))))
    }

    /// The table as markdown, with the coverage line (and the peer's columns and the
    /// largest-gap line when ggml's times are filled in).
    pub fn render(&self) -> String {
        let peer = self.peer.is_some();
        let step = self.step_us;
        let mut s = format!(
            "per-op table: {} {} ({} token{} at KV depth {}), candle threads {}{}\n\n",
            self.model,
            self.phase.name(),
            self.tokens,
            if self.tokens == 1 { "" } else { "s" },
            self.depth,
            self.threads,
            self.injected
                .as_deref()
                .map(|i| format!(", injected {i}"))
                .unwrap_or_default()
        );
        let in_order = self.in_order_us();
        s.push_str("| kind | op | shape | calls/step | us/call [95% CI] |");
        if in_order.is_some() {
            s.push_str(" in order us/call [95% CI] |");
        }
        s.push_str(" share of step | GB/s | GFLOP/s | % of roof |");
        if peer {
            s.push_str(" ggml us/call | candle/ggml | gap us/step |");
        }
        s.push('\n');
        s.push_str("|---|---|---|---:|---:|");
        if in_order.is_some() {
            s.push_str("---:|");
        }
        s.push_str("---:|---:|---:|---:|");
        if peer {
            s.push_str("---:|---:|---:|");
        }
        s.push('\n');
        let mut rows: Vec<&OpRow> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.step_us().total_cmp(&a.step_us()));
        for r in rows {
            let gbs = r.bytes / (r.us * 1e-6) / 1e9;
            let gflops = r.flops.map(|f| f / (r.us * 1e-6) / 1e9);
            let roof = match (gflops, self.roofs.matmul_gflops, self.roofs.mem_read_gbs) {
                (Some(g), Some(peak), Some(mem)) => Some((g / peak).max(gbs / mem)),
                (Some(g), Some(peak), None) => Some(g / peak),
                (_, _, Some(mem)) => Some(gbs / mem),
                _ => None,
            };
            let ci = |c: Option<(f64, f64)>| {
                c.map(|(l, h)| format!("[{l:.2}, {h:.2}]"))
                    .unwrap_or_else(|| "[n/a]".into())
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} {} |",
                r.kind,
                r.op,
                r.shape,
                r.calls,
                r.us,
                ci(r.ci_us),
            ));
            if in_order.is_some() {
                if let Some(us) = r.seq_us {
                    s.push_str(&format!(" {us:.2} {} |", ci(r.seq_ci_us)));
                }
            }
            s.push_str(&format!(
                " {:.1}% | {:.2} | {} | {} |",
                100.0 * r.step_us() / step,
                gbs,
                gflops
                    .map(|g| format!("{g:.2}"))
                    .unwrap_or_else(|| "-".into()),
                roof.map(|x| format!("{:.1}%", 100.0 * x))
                    .unwrap_or_else(|| "not available".into()),
            ));
            if peer {
                match (r.ggml.as_ref(), r.ggml_us) {
                    (Some(_), Some(g)) => {
                        s.push_str(&format!(" {g:.2} | {:.2}x | {:+.1} |", r.us / g, gap(r)))
                    }
                    (Some(_), None) => s.push_str(" not reported by test-backend-ops | - | - |"),
                    (None, _) => s.push_str(" not in ggml's perf cases | - | - |"),
                }
            }
            s.push('\n');
        }
        let ops = self.ops_us();
        s.push_str(&format!(
            "\ncoverage: the ops sum to {:.1} us of the measured {} step of {:.1} us [95% CI {}] ({} steps): {:.1}% timed alone (each op back to back, hot caches);",
            ops,
            self.phase.name(),
            step,
            self.step_ci_us
                .map(|(l, h)| format!("{l:.1}, {h:.1}"))
                .unwrap_or_else(|| "n/a".into()),
            self.step_samples,
            100.0 * ops / step
        ));
        let covered = match in_order {
            Some(seq) => {
                s.push_str(&format!(
                    " {:.1}% timed in the forward's order ({seq:.1} us: each call where the forward makes it, after the op before it, the thread pools and caches as the model leaves them).",
                    100.0 * seq / step
                ));
                seq
            }
            None => {
                s.push_str(&format!(
                    " in the forward's order: not available ({}).",
                    self.order_note
                        .as_deref()
                        .unwrap_or("this table was measured without it")
                ));
                ops
            }
        };
        if covered < step {
            s.push_str(&format!(
                " Not covered: {:.1} us ({:.1}%): the work between the ops (views, reshapes, tensor bookkeeping and allocation in the model's forward, the engine's loop){}.\n",
                step - covered,
                100.0 * (step - covered) / step,
                if in_order.is_some() {
                    ""
                } else {
                    " and ops running slower in the model than alone"
                }
            ));
        } else {
            s.push_str(" The ops add up to more than the step.\n");
        }
        s.push_str(&self.render_in_model());
        s.push_str(&format!(
                "roofs: {}; {}\n",
                self.roofs
                    .mem_read_gbs
                    .map(|g| format!("memory {g:.1} GB/s (calibrate's streaming read)"))
                    .unwrap_or_else(
                        || "memory roof not available (run `modelbench calibrate`)".into()
                    ),
                self.roofs
                    .matmul_gflops
                    .map(|g| format!("compute {g:.1} GFLOP/s (calibrate's f32 matmul)"))
                    .unwrap_or_else(
                        || "compute roof not available (run `modelbench calibrate`)".into()
                    ),
            ));
        if let Some(p) = &self.peer {
            let with: Vec<&OpRow> = self.rows.iter().filter(|r| r.ggml_us.is_some()).collect();
            let c: f64 = with.iter().map(|r| r.step_us()).sum();
            let g: f64 = with
                .iter()
                .map(|r| r.ggml_us.unwrap_or(0.0) * r.calls as f64)
                .sum();
            s.push_str(&format!(
                "ggml: {p}; the {} ops it has: candle {c:.1} us/step, ggml {g:.1} us/step\n",
                with.len()
            ));
            let line = |what: &str, r: &OpRow| {
                format!(
                    "largest gap ({what}): {} {} {}: candle {:.2} us x {} = {:.1} us/step, ggml {:.2} us x {} = {:.1} us/step, gap {:+.1} us/step\n",
                    r.kind,
                    r.op,
                    r.shape,
                    r.us,
                    r.calls,
                    r.step_us(),
                    r.ggml_us.unwrap_or(f64::NAN),
                    r.calls,
                    r.ggml_us.unwrap_or(f64::NAN) * r.calls as f64,
                    gap(r)
                )
            };
            if let Some(r) = self.largest_gap(false) {
                s.push_str(&line("ggml slower", r));
            }
            match self.largest_gap(true) {
                Some(r) => s.push_str(&line("candle slower", r)),
                None if with.is_empty() => s.push_str(
                    "largest gap (candle slower): not available (test-backend-ops reported no op)\n",
                ),
                None => s.push_str(
                    "largest gap (candle slower): none (candle is as fast or faster on every op ggml has)\n",
                ),
            }
        }
        s
    }
}

impl OpsTable {
    /// Time per step of the rows of `kind` timed alone (us).
    fn alone_us(&self, kind: &str) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .map(OpRow::step_us)
            .sum()
    }

    /// Time per step of the rows of `kind` timed in the forward's order (us; 0 without).
    fn order_us(&self, kind: &str) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| r.seq_us.map(|us| us * r.calls as f64))
            .sum()
    }

    /// What the table misses, from the in-model profile: per marked kind, its time in the
    /// model against alone; the unmarked ops alone; the rest (work between the ops).
    pub fn render_in_model(&self) -> String {
        let Some(p) = &self.in_model else {
            return "in the model: not available (the in-model profile times ops on the host clock, so it runs on the CPU device only)\n".into();
        };
        let marked: f64 = p.kinds.iter().map(|k| k.us).sum();
        let unmarked: Vec<&str> = self
            .rows
            .iter()
            .map(|r| r.kind.as_str())
            .filter(|k| !p.kinds.iter().any(|m| m.kind == *k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // What the model's times are held against: the ops in the forward's order where the
        // table has them, else alone.
        let ordered = self.in_order_us().is_some();
        let (against, reference) = if ordered {
            ("in the forward's order", "in order")
        } else {
            ("alone", "alone")
        };
        let ref_us = |kind: &str| -> f64 {
            if ordered {
                self.order_us(kind)
            } else {
                self.alone_us(kind)
            }
        };
        let unmarked_ref: f64 = unmarked.iter().map(|k| ref_us(k)).sum();
        let between = p.step_us - marked - unmarked_ref;
        let mut s = format!(
            "in the model ({} profiled steps, each marked op's wall time inside the forward): step {:.1} us; the marked ops {:.1} us ({:.1}%); in the model vs alone{}, us per step:",
            p.steps,
            p.step_us,
            marked,
            100.0 * marked / p.step_us,
            if ordered { " and in order" } else { "" }
        );
        let mut deltas: Vec<(String, f64)> = Vec::new();
        for k in &p.kinds {
            let alone = self.alone_us(&k.kind);
            s.push_str(&format!(
                " {} {:.1} vs {:.1} ({:+.1})",
                k.kind,
                k.us,
                alone,
                k.us - alone
            ));
            if ordered {
                let o = self.order_us(&k.kind);
                s.push_str(&format!(" and {:.1} ({:+.1})", o, k.us - o));
            }
            s.push(';');
            deltas.push((
                format!("{} runs slower in the model than {against}", k.kind),
                k.us - ref_us(&k.kind),
            ));
        }
        s.push_str(&format!(
            " the ops the forward does not mark ({}) {reference} {:.1} us; the rest, {:.1} us ({:.1}%), is the work between the ops (views, reshapes, allocation, the pick's host copy).\n",
            unmarked.join(", "),
            unmarked_ref,
            between,
            100.0 * between / p.step_us
        ));
        deltas.push(("the work between the ops".into(), between));
        if let Some((what, us)) = deltas.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            if *us > 0.0 {
                s.push_str(&format!(
                    "largest part of what the table misses: {what} ({us:.1} us per step, {:.1}% of the profiled step)\n",
                    100.0 * us / p.step_us
                ));
            }
        }
        s
    }
}

/// candle - ggml, us per step.
fn gap(r: &OpRow) -> f64 {
    r.ggml_us
        .map(|g| (r.us - g) * r.calls as f64)
        .unwrap_or(0.0)
}

/// Per-op growth from `base` to `new`: rows matched by kind, op and shape; (row key, base
/// us/step, new us/step), largest growth first. Rows of one table only are left out.
pub fn growth(base: &OpsTable, new: &OpsTable) -> Vec<(String, f64, f64)> {
    let mut out: Vec<(String, f64, f64)> = new
        .rows
        .iter()
        .filter_map(|n| {
            base.rows
                .iter()
                .find(|b| b.key() == n.key())
                .map(|b| (n.key(), b.step_us(), n.step_us()))
        })
        .collect();
    out.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)));
    out
}

/// The op whose time per step grew most from `base` to `new`, when that growth is at least
/// `threshold` of the base step and the op's per-call intervals do not overlap (new's low end
/// above base's high end): (row key, base us/step, new us/step). None: no op grew that much.
pub fn grew_most(base: &OpsTable, new: &OpsTable, threshold: f64) -> Option<(String, f64, f64)> {
    growth(base, new).into_iter().find(|(k, b, n)| {
        let (Some(rb), Some(rn)) = (
            base.rows.iter().find(|r| &r.key() == k),
            new.rows.iter().find(|r| &r.key() == k),
        ) else {
            return false;
        };
        let separated = match (rb.ci_us, rn.ci_us) {
            (Some((_, hb)), Some((ln, _))) => ln > hb,
            _ => false,
        };
        n - b >= threshold * base.step_us && separated
    })
}

/// The regression report's line: the op whose time per step grew most from `base` to `new`
/// (see [`grew_most`]), or that none grew beyond the threshold.
pub fn grew_most_line(base: &OpsTable, new: &OpsTable, threshold: f64) -> String {
    let steps = format!("steps {:.1} -> {:.1} us", base.step_us, new.step_us);
    match grew_most(base, new, threshold) {
        Some((k, b, n)) => format!(
            "op whose time grew most ({} {}): {k}: {b:.1} -> {n:.1} us/step ({:+.1} us, {:.2}x); {steps}",
            new.model,
            new.phase.name(),
            n - b,
            n / b,
        ),
        None => format!(
            "op whose time grew most ({} {}): none grew by {:.0}% of the base step or more with separate 95% intervals; {steps}",
            new.model,
            new.phase.name(),
            threshold * 100.0
        ),
    }
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

/// Resolves `label` to the project's Gemma 3 on a GGUF file (what the per-op table
/// enumerates): the resolved model and the file; otherwise one line saying what to use.
pub fn gemma3_gguf(label: &str) -> Result<(crate::models::source::Resolved, std::path::PathBuf)> {
    let r = crate::models::source::ModelRef::parse(label)?;
    let res = crate::engine::scenario::prepare(label, &r, &[])?;
    let path = match &res.weights {
        crate::models::Weights::Gguf(p) => p.clone(),
        _ => {
            return Err(Error::Report(format!(
                "ops: `{label}` is not a GGUF model; the per-op table enumerates the project's quantized Gemma 3 (use gguf:<file | cached repo | fixture:gemma3>)"
            )))
        }
    };
    let imp = crate::models::quantized::GgufImpl::from_config(&res.config)
        .unwrap_or_else(|| crate::models::quantized::GgufImpl::default_for(res.family));
    if res.family != crate::models::Family::Gemma3
        || imp != crate::models::quantized::GgufImpl::Modelbench
    {
        return Err(Error::Report(format!(
            "ops: `{label}` runs as {} {}; the per-op table enumerates the project's own Gemma 3 only (gguf:<Gemma 3 file or repo>, or gguf:fixture:gemma3)",
            res.family,
            imp.name()
        )));
    }
    Ok((res, path))
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
    let (res, path) = gemma3_gguf(label)?;
    let dev = spec.open()?;
    let dtype = spec.default_dtype();
    let mut loaded = crate::models::loading::open(res, &dev, dtype, Some(plan.context()))?;
    // Half the step's generations before the ops are timed and half after, so a machine whose
    // load drifts during the run weighs on both sides of the coverage alike.
    let first = plan.step_trials.div_ceil(2);
    let mut steps = step_times(loaded.model.as_mut(), plan, first)?;
    let OpsSet { mut benches, order } = gemma3_ops(&path, plan, &dev)?;
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
            run_backend_ops(p, &mut rows, pools.matmul)?;
            Some(format!(
                "{} perf -b CPU, {} threads (TEST_BACKEND_OPS_THREADS)",
                p.display(),
                pools.matmul
            ))
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
        let mut rows = Rows {
            benches: Vec::new(),
        };
        rows.add(
            kind,
            kind,
            "(1)".into(),
            calls,
            4.0,
            None,
            None,
            Box::new(|| Ok(())),
        );
        (rows.benches.pop().unwrap().0, None)
    }

    #[test]
    fn the_forward_order_must_call_each_row_as_often_as_the_table_says() {
        let benches = vec![bench("matmul", 2), bench("rms_norm", 1)];
        assert_eq!(check_order(&benches, vec![0, 1, 0]), Ok(vec![0, 1, 0]));
        let e = check_order(&benches, vec![0, 1]).unwrap_err();
        assert!(e.contains("`matmul matmul` 1 times, the table 2"), "{e}");
        assert!(check_order(&benches, vec![0, 0, 1, 1]).is_err());
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
