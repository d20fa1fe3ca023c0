//! The op list of `modelbench ops` as the forward makes it (issue 41): one step of the loaded
//! model runs under an op trace ([`crate::measure::trace`]), and every op it records becomes
//! a call of a row. Calls with the same kind, shape and types are one row (the norms of a
//! layer, the projections of one quant type and shape); a row replays its calls' own inputs
//! and weights in turn, as the forward read them. Nothing here knows a family: what a row is
//! comes from the recorded op (its kind, inputs and output), so every implementation that
//! traces its forward (the project's Gemma 3, Llama, Qwen2, Qwen3, Qwen3-MoE, Phi-3, Phi-2, GLM-4,
//! LFM2) has its table.

use candle_core::quantized::gguf_file;
use candle_core::{DType, Tensor};
use modelbench_measure::traced;

use super::ggml::{fbits, ggml_type};
use super::{check_order, Bench, GgmlOp, OpRow, OpsPlan, OpsSet, Phase, Src};
use crate::engine::generate::prompt_ids;
use crate::error::{Error, Result};
use crate::measure::trace::{self, Arg, ArgType, Traced};
use crate::models::CausalLm;

/// The activations a row keeps for its replays at most (its weights are the model's own and
/// cost nothing). A long prefill's attention scores are large; past this a row replays the
/// calls it kept in turn.
const KEEP_BYTES: usize = 256 << 20;

/// What the ggml lines take from the file's metadata: the norms' epsilon and RoPE's base.
#[derive(Debug, Clone, Copy)]
pub struct Hparams {
    pub eps: f32,
    pub rope_base: f32,
}

impl Hparams {
    /// From a GGUF header (`<arch>.attention.layer_norm_rms_epsilon`, or Phi-2's
    /// `layer_norm_epsilon`, `<arch>.rope.freq_base`;
    /// llama.cpp's defaults when absent).
    pub fn of(ct: &gguf_file::Content) -> Hparams {
        let arch = crate::models::families::md_str(ct, "general.architecture").unwrap_or_default();
        let f = |k: &str| crate::models::families::md_f32(ct, &format!("{arch}.{k}"));
        Hparams {
            eps: f("attention.layer_norm_rms_epsilon")
                .or_else(|| f("attention.layer_norm_epsilon"))
                .unwrap_or(1e-6),
            rope_base: f("rope.freq_base").unwrap_or(10_000.0),
        }
    }
}

/// The ops of one step of `model` at the plan's shape, as its forward makes them: a prompt
/// of `depth` ids and its pick run untraced for decode, then the step's forward and the
/// greedy pick run traced. Err when the model's implementation traces no op (candle-
/// transformers' models).
pub fn traced_ops(model: &mut dyn CausalLm, plan: &OpsPlan, hp: Hparams) -> Result<OpsSet> {
    let vocab = model.meta().vocab;
    model.reset()?;
    let (ids, pos) = match plan.phase {
        Phase::Prefill => (prompt_ids(plan.tokens, vocab, plan.seed, 0), 0),
        Phase::Decode => {
            let prompt = prompt_ids(plan.depth, vocab, plan.seed, 0);
            let next = pick(&model.forward(&prompt, 0)?)?;
            (vec![next], plan.depth)
        }
    };
    trace::start();
    let step = model.forward(&ids, pos).and_then(|logits| {
        traced!("sampling", "argmax + to host", [logits], argmax(logits))
            .map_err(modelbench_models::Error::from)
    });
    let ops = trace::take();
    step?;
    if !ops.iter().any(|o| o.kind == "matmul") {
        return Err(Error::Report(format!(
            "ops: {} makes no traced op (only the project's own implementations trace their forward: add ?impl=modelbench to a GGUF of a family the project implements: every one `modelbench list` names)",
            model.meta().provenance.implementation
        )));
    }
    Ok(rows_of(ops, hp))
}

/// The greedy pick of `logits` (rank 1): the argmax, read back to the host.
fn argmax(logits: &Tensor) -> candle_core::Result<u32> {
    logits
        .to_dtype(DType::F32)?
        .argmax(candle_core::D::Minus1)?
        .to_scalar::<u32>()
}

/// [`argmax`] with the suite's error.
pub(super) fn pick(logits: &Tensor) -> Result<u32> {
    Ok(argmax(logits)?)
}

pub(super) fn shape_str(dims: &[usize]) -> String {
    format!(
        "({})",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// ggml's name of an argument's type (`f32`, `q4_K`, `i32` for token ids).
fn ty_name(t: ArgType) -> String {
    match t {
        ArgType::Quant(q) => ggml_type(q),
        ArgType::Dense(DType::U32 | DType::I64 | DType::U8) => "i32".into(),
        ArgType::Dense(d) => d.as_str().to_string(),
        ArgType::Scalar(_) => "scalar".into(),
    }
}

fn tensors(o: &Traced) -> Vec<&Arg> {
    o.args.iter().filter(|a| a.is_tensor()).collect()
}

fn scalar(o: &Traced, i: usize) -> Option<f64> {
    o.args
        .iter()
        .filter_map(|a| match a.ty {
            ArgType::Scalar(x) => Some(x),
            _ => None,
        })
        .nth(i)
}

/// A weight matmul's (m, n, k) from its weight (n, k) and input (.., k).
fn mnk(o: &Traced) -> Option<(usize, usize, usize)> {
    let t = tensors(o);
    let w = t.iter().find(|a| a.weight)?;
    let x = t.iter().find(|a| !a.weight)?;
    let (n, k) = (*w.dims.first()?, *w.dims.get(1)?);
    Some((x.elems() / k.max(1), n, k))
}

/// A batched matmul's (batch, rows, inner, cols) from a (.., r, c) and b (.., c, n).
fn bmm(o: &Traced) -> Option<(usize, usize, usize, usize)> {
    let t = tensors(o);
    let (a, b) = (t.first()?, t.get(1)?);
    let r = a.dims.len();
    if r < 2 || b.dims.len() != r {
        return None;
    }
    let batch = a.dims[..r - 2].iter().product();
    Some((batch, a.dims[r - 2], a.dims[r - 1], b.dims[r - 1]))
}

/// The row's shape column.
fn shape_of(o: &Traced) -> String {
    let t = tensors(o);
    let first = || t.first().map(|a| shape_str(&a.dims));
    let out = || o.out.first().map(|a| shape_str(&a.dims));
    match o.kind {
        "matmul" | "lm_head" => mnk(o).map(|(m, n, k)| format!("m={m} n={n} k={k}")),
        "attn_qk" | "attn_av" => match (t.first(), t.get(1)) {
            (Some(a), Some(b)) => Some(format!("{}x{}", shape_str(&a.dims), shape_str(&b.dims))),
            _ => None,
        },
        "copy" => first().zip(out()).map(|(a, b)| format!("{a}->{b}")),
        "kv_cache" => match scalar(o, 0) {
            Some(pos) => first().map(|a| format!("{a} at {pos}")),
            None => t
                .get(2)
                .zip(t.first())
                .map(|(k, ck)| format!("{}+{}", shape_str(&ck.dims), shape_str(&k.dims))),
        },
        "mask" | "host" if t.is_empty() => out(),
        _ => None,
    }
    .or_else(first)
    .or_else(out)
    .unwrap_or_else(|| "()".into())
}

/// Bytes the op reads and writes (weights included).
fn bytes_of(o: &Traced) -> f64 {
    let read: usize = o.args.iter().map(|a| a.bytes).sum();
    let written: usize = if o.kind == "kv_cache" && o.out.is_empty() {
        read
    } else {
        o.out.iter().map(|a| a.bytes).sum()
    };
    (read + written) as f64
}

fn flops_of(o: &Traced) -> Option<f64> {
    match o.kind {
        "matmul" | "lm_head" => mnk(o).map(|(m, n, k)| 2.0 * (m * n * k) as f64),
        "attn_qk" | "attn_av" => bmm(o).map(|(b, r, c, n)| 2.0 * (b * r * c * n) as f64),
        _ => None,
    }
}

/// ggml's ne (fastest dimension first) of `dims`, at most 4 of them.
fn ne(dims: &[usize]) -> Option<[usize; 4]> {
    if dims.len() > 4 {
        return None;
    }
    let mut ne = [1usize; 4];
    for (i, d) in dims.iter().rev().enumerate() {
        ne[i] = *d;
    }
    Some(ne)
}

fn src(a: &Arg) -> Option<Src> {
    Some(Src::new(&ty_name(a.ty), ne(&a.dims)?))
}

fn plain(op: &'static str, ne: [usize; 4], params: Vec<i32>, srcs: Vec<Src>) -> GgmlOp {
    GgmlOp {
        op,
        unary: None,
        out: "f32",
        ne,
        params,
        srcs,
    }
}

/// The op in ggml's terms, where `test-backend-ops` has a perf case for it.
fn ggml_of(o: &Traced, hp: Hparams) -> Option<GgmlOp> {
    let t = tensors(o);
    let x = t.first().copied();
    match o.kind {
        "matmul" | "lm_head" => {
            let (m, n, k) = mnk(o)?;
            let w = t.iter().find(|a| a.weight)?;
            Some(plain(
                "MUL_MAT",
                [n, m, 1, 1],
                vec![],
                vec![
                    Src::new(&ty_name(w.ty), [k, n, 1, 1]),
                    Src::new("f32", [k, m, 1, 1]),
                ],
            ))
        }
        "embedding" => {
            let w = t.iter().find(|a| a.weight)?;
            let ids = t.iter().find(|a| !a.weight)?;
            let (vocab, h) = (*w.dims.first()?, *w.dims.get(1)?);
            let m = ids.elems();
            Some(plain(
                "GET_ROWS",
                [h, m, 1, 1],
                vec![],
                vec![
                    Src::new(&ty_name(w.ty), [h, vocab, 1, 1]),
                    Src::new("i32", [m, 1, 1, 1]),
                ],
            ))
        }
        "scale" => {
            let ne = ne(&x?.dims)?;
            let s = scalar(o, 0)? as f32;
            Some(plain(
                "SCALE",
                ne,
                vec![fbits(s), fbits(0.0)],
                vec![Src::new("f32", ne)],
            ))
        }
        // ggml's RMS_NORM, or NORM for a LayerNorm (mean and variance): the weight (and bias)
        // are ops of their own there.
        "rms_norm" | "layer_norm" => {
            let x = x?;
            let d = *x.dims.last()?;
            let rows = x.elems() / d.max(1);
            Some(plain(
                if o.kind == "rms_norm" {
                    "RMS_NORM"
                } else {
                    "NORM"
                },
                [d, rows, 1, 1],
                vec![fbits(hp.eps)],
                vec![Src::new("f32", [d, rows, 1, 1])],
            ))
        }
        // LFM2's short convolution, (taps - 1 + len, hidden) padded input and (taps, hidden)
        // taps: ggml's SSM_CONV of the transposed input (time fastest), as llama.cpp's LFM2.
        "ssm_conv" => {
            let (padded, taps) = (t.first()?, t.get(1)?);
            let [rows, ch]: [usize; 2] = padded.dims.as_slice().try_into().ok()?;
            let n = *taps.dims.first()?;
            let len = (rows + 1).checked_sub(n)?;
            Some(plain(
                "SSM_CONV",
                [ch, len, 1, 1],
                vec![],
                vec![
                    Src::new("f32", [rows, ch, 1, 1]),
                    Src::new("f32", [n, ch, 1, 1]),
                ],
            ))
        }
        "rope" => {
            let (heads, m, hd) = match x?.dims.as_slice() {
                [_, h, m, d] => (*h, *m, *d),
                _ => return None,
            };
            let mode = if o.what.contains("neox") { 2 } else { 0 };
            Some(plain(
                "ROPE",
                [hd, heads, m, 1],
                vec![
                    0,
                    hd as i32,
                    mode,
                    0,
                    fbits(hp.rope_base),
                    fbits(1.0),
                    fbits(0.0),
                    fbits(1.0),
                    fbits(32.0),
                    fbits(1.0),
                ],
                vec![
                    Src::new("f32", [hd, heads, m, 1]),
                    Src::new("i32", [m, 1, 1, 1]),
                ],
            ))
        }
        "kv_cache" if scalar(o, 0).is_some() => {
            let ne = ne(&x?.dims)?;
            Some(plain(
                "CPY",
                ne,
                vec![],
                vec![Src::new("f32", ne), Src::new("f32", ne)],
            ))
        }
        "kv_cache" => {
            // (kept k, kept v, new k, new v): one concat of the keys stands for the pair.
            let (ck, k) = (ne(&t.first()?.dims)?, ne(&t.get(2)?.dims)?);
            Some(plain(
                "CONCAT",
                [ck[0], ck[1] + k[1], ck[2], ck[3]],
                vec![1],
                vec![Src::new("f32", ck), Src::new("f32", k)],
            ))
        }
        "attn_qk" | "attn_av" => {
            let (b, r, c, n) = bmm(o)?;
            Some(plain(
                "MUL_MAT",
                [n, r, b, 1],
                vec![],
                vec![Src::new("f32", [c, n, b, 1]), Src::new("f32", [c, r, b, 1])],
            ))
        }
        "mask" if t.len() == 2 => {
            let (att, mask) = (t[0], t[1]);
            let [_, kv, rows, keys]: [usize; 4] = att.dims.as_slice().try_into().ok()?;
            let len = *mask.dims.first()?;
            Some(plain(
                "ADD",
                [keys, len, rows / len.max(1), kv],
                vec![],
                vec![
                    Src::new("f32", [keys, len, rows / len.max(1), kv]),
                    Src::new("f32", [keys, len, 1, 1]),
                ],
            ))
        }
        "softmax" => {
            let ne = ne(&x?.dims)?;
            Some(plain(
                "SOFT_MAX",
                ne,
                vec![fbits(1.0), fbits(0.0)],
                vec![Src::new("f32", ne)],
            ))
        }
        "activation" => {
            let unary = match o.what {
                "gelu (tanh)" => "GELU",
                "silu" => "SILU",
                _ => return None,
            };
            let ne = ne(&x?.dims)?;
            Some(GgmlOp {
                unary: Some(unary),
                ..plain("UNARY", ne, vec![], vec![Src::new("f32", ne)])
            })
        }
        "mul" | "add" => {
            let op = if o.kind == "mul" { "MUL" } else { "ADD" };
            let srcs = t.iter().map(|a| src(a)).collect::<Option<Vec<_>>>()?;
            Some(plain(op, srcs.first()?.ne, vec![], srcs))
        }
        "copy" => {
            let x = x?;
            let stride = x.stride.as_ref()?;
            let ne = ne(&x.dims)?;
            let mut nb = [0usize; 4];
            for (i, s) in stride.iter().rev().enumerate() {
                nb[i] = s * 4;
            }
            for i in stride.len()..4 {
                nb[i] = nb[i - 1] * ne[i - 1];
            }
            Some(plain(
                "CONT",
                ne,
                vec![],
                vec![Src {
                    ty: "f32".into(),
                    ne,
                    nb: Some(nb),
                }],
            ))
        }
        "sampling" => {
            let vocab = x?.elems();
            Some(GgmlOp {
                out: "i32",
                ..plain(
                    "ARGMAX",
                    [1, 1, 1, 1],
                    vec![],
                    vec![Src::new("f32", [vocab, 1, 1, 1])],
                )
            })
        }
        _ => None,
    }
}

/// Groups the recorded ops into rows (same kind, shape and types: one row whose label lists
/// the distinct names, with the weight's type) and the forward's order. A row's call replays
/// its recorded ops in turn (those whose activations fit [`KEEP_BYTES`]).
pub fn rows_of(ops: Vec<Traced>, hp: Hparams) -> OpsSet {
    struct Group {
        key: (&'static str, String, String),
        whats: Vec<&'static str>,
        wty: Option<String>,
        replays: Vec<Box<dyn FnMut() -> candle_core::Result<()>>>,
        kept_bytes: usize,
        calls: usize,
        bytes: f64,
        flops: Option<f64>,
        ggml: Option<GgmlOp>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut order = Vec::with_capacity(ops.len());
    for o in ops {
        // Every input's type and dims: a bias add (1,1,n)+(n) is not a residual (1,1,n)+(1,1,n).
        let types = tensors(&o)
            .iter()
            .map(|a| format!("{}{}", ty_name(a.ty), shape_str(&a.dims)))
            .collect::<Vec<_>>()
            .join(",");
        let key = (o.kind, shape_of(&o), types);
        let i = match groups.iter().position(|g| g.key == key) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    wty: o
                        .args
                        .iter()
                        .find(|a| a.weight && matches!(o.kind, "matmul" | "lm_head" | "embedding"))
                        .map(|a| ty_name(a.ty)),
                    key,
                    whats: Vec::new(),
                    replays: Vec::new(),
                    kept_bytes: 0,
                    calls: 0,
                    bytes: bytes_of(&o),
                    flops: flops_of(&o),
                    ggml: ggml_of(&o, hp),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        if !g.whats.contains(&o.what) {
            g.whats.push(o.what);
        }
        g.calls += 1;
        let act: usize = o.args.iter().filter(|a| !a.weight).map(|a| a.bytes).sum();
        if g.replays.is_empty() || g.kept_bytes + act <= KEEP_BYTES {
            g.kept_bytes += act;
            g.replays.push(o.replay);
        }
        order.push(i);
    }
    let benches = groups
        .into_iter()
        .map(|g| {
            let mut op = g.whats.join(", ");
            if let Some(t) = &g.wty {
                op = format!("{op} ({t})");
            }
            let mut replays = g.replays;
            let mut next = 0usize;
            let bench = Bench {
                row: OpRow {
                    kind: g.key.0.to_string(),
                    op,
                    shape: g.key.1,
                    calls: g.calls,
                    us: f64::NAN,
                    ci_us: None,
                    bytes: g.bytes,
                    flops: g.flops,
                    ggml: None,
                    ggml_us: None,
                    seq_us: None,
                    seq_ci_us: None,
                },
                run: Box::new(move || {
                    let n = replays.len();
                    let r = &mut replays[next % n];
                    next = next.wrapping_add(1);
                    r()
                }),
            };
            (bench, g.ggml)
        })
        .collect::<Vec<_>>();
    let order = check_order(&benches, order);
    OpsSet { benches, order }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use std::cell::Cell;
    use std::rc::Rc;

    fn t(dims: &[usize]) -> Arg {
        Arg {
            dims: dims.to_vec(),
            stride: None,
            ty: ArgType::Dense(DType::F32),
            bytes: dims.iter().product::<usize>() * 4,
            weight: false,
        }
    }

    fn op(kind: &'static str, what: &'static str, args: Vec<Arg>, out: &[usize]) -> Traced {
        Traced {
            kind,
            what,
            args,
            out: vec![t(out)],
            replay: Box::new(|| Ok(())),
        }
    }

    const HP: Hparams = Hparams {
        eps: 1e-6,
        rope_base: 1e6,
    };

    /// ggml's MUL_MAT takes src0 as [K, N] (the weight, or the right operand transposed) and
    /// src1 as [K, M], giving [N, M], as llama.cpp's graph builds attention: `kq =
    /// ggml_mul_mat(k, q)` with k [head_dim, n_kv, heads], q [head_dim, n_tokens, heads] ->
    /// [n_kv, n_tokens, heads]; then `ggml_mul_mat(v^T, kq)`. Shapes of Qwen2.5 0.5B at depth 32.
    #[test]
    fn the_attention_matmuls_are_ggml_mul_mats_of_the_right_orientation() {
        let qk = op(
            "attn_qk",
            "q k^T",
            vec![t(&[1, 2, 7, 64]), t(&[1, 2, 64, 33])],
            &[1, 2, 7, 33],
        );
        let g = ggml_of(&qk, HP).unwrap();
        assert_eq!((g.op, g.ne), ("MUL_MAT", [33, 7, 2, 1]));
        assert_eq!(g.srcs[0].ne, [64, 33, 2, 1]);
        assert_eq!(g.srcs[1].ne, [64, 7, 2, 1]);
        assert_eq!(flops_of(&qk), Some(2.0 * (2 * 7 * 64 * 33) as f64));
        let av = op(
            "attn_av",
            "scores v",
            vec![t(&[1, 2, 7, 33]), t(&[1, 2, 33, 64])],
            &[1, 2, 7, 64],
        );
        let g = ggml_of(&av, HP).unwrap();
        assert_eq!(g.ne, [64, 7, 2, 1]);
        assert_eq!(g.srcs[0].ne, [33, 64, 2, 1]);
        assert_eq!(g.srcs[1].ne, [33, 7, 2, 1]);
    }

    #[test]
    fn a_weight_matmul_reads_its_shape_and_type_from_the_weight() {
        let w = Arg::quant(&[4864, 896], GgmlDType::Q5_0, 4864 * 896 / 32 * 22);
        let mm = op(
            "matmul",
            "ffn_gate",
            vec![w, t(&[1, 1, 896])],
            &[1, 1, 4864],
        );
        assert_eq!(shape_of(&mm), "m=1 n=4864 k=896");
        let g = ggml_of(&mm, HP).unwrap();
        assert_eq!(g.srcs[0].ty, "q5_0");
        assert_eq!((g.ne, g.srcs[0].ne), ([4864, 1, 1, 1], [896, 4864, 1, 1]));
        // Weight bytes + input + output, f32.
        let want = (4864 * 896 / 32 * 22 + 4 * 896 + 4 * 4864) as f64;
        assert_eq!(bytes_of(&mm), want);
    }

    #[test]
    fn a_strided_copy_is_a_cont_of_the_views_strides() {
        // (1, m=3, heads=2, d=4) transposed to (1, 2, 3, 4): strides (24, 4, 8, 1).
        let mut v = t(&[1, 2, 3, 4]);
        v.stride = Some(vec![24, 4, 8, 1]);
        let c = op("copy", "q transpose", vec![v], &[1, 2, 3, 4]);
        let g = ggml_of(&c, HP).unwrap();
        assert_eq!((g.op, g.ne), ("CONT", [4, 3, 2, 1]));
        assert_eq!(g.srcs[0].nb, Some([4, 32, 16, 96]));
        assert_eq!(shape_of(&c), "(1,2,3,4)->(1,2,3,4)");
        // A contiguous input is no ggml case.
        assert!(ggml_of(&op("copy", "x", vec![t(&[1, 2])], &[1, 2]), HP).is_none());
    }

    #[test]
    fn calls_of_one_kind_shape_and_types_are_one_row_in_the_forwards_order() {
        let ran = Rc::new(Cell::new(Vec::<usize>::new()));
        let mk = |kind, what, args: Vec<Arg>, id: usize| {
            let ran = ran.clone();
            Traced {
                kind,
                what,
                args,
                out: vec![],
                replay: Box::new(move || {
                    let mut v = ran.take();
                    v.push(id);
                    ran.set(v);
                    Ok(())
                }),
            }
        };
        let q8 = |n, k| Arg::quant(&[n, k], GgmlDType::Q8_0, n * k / 32 * 34);
        let ops = vec![
            mk("matmul", "attn_q", vec![q8(64, 64), t(&[1, 1, 64])], 0),
            mk("add", "attn_q bias", vec![t(&[1, 1, 64]), t(&[64])], 1),
            mk("matmul", "attn_output", vec![q8(64, 64), t(&[1, 1, 64])], 2),
            mk("add", "residual", vec![t(&[1, 1, 64]), t(&[1, 1, 64])], 3),
            mk("matmul", "attn_q", vec![q8(64, 64), t(&[1, 1, 64])], 4),
            mk("add", "residual", vec![t(&[1, 1, 64]), t(&[1, 1, 64])], 5),
        ];
        let OpsSet { mut benches, order } = rows_of(ops, HP);
        let rows: Vec<(&str, &str, usize)> = benches
            .iter()
            .map(|(b, _)| (b.row.kind.as_str(), b.row.op.as_str(), b.row.calls))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("matmul", "attn_q, attn_output (q8_0)", 3),
                ("add", "attn_q bias", 1),
                ("add", "residual", 2),
            ]
        );
        assert_eq!(order.unwrap(), vec![0, 1, 0, 2, 0, 2]);
        // A row's calls replay the recorded ops in turn.
        for _ in 0..4 {
            (benches[0].0.run)().unwrap();
        }
        assert_eq!(ran.take(), vec![0, 2, 4, 0]);
    }
}
