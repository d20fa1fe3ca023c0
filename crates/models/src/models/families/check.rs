//! A GGUF file against its family's spec: step 2 of the GGUF validation (steps 1 and 3, the
//! bounded scan of the header and the panic guard, are [`crate::models::gguf::check`]'s; this
//! step reads the family table, so it sits in families/, above the format code the table's
//! implementations use).
//!
//! [`check_arch`]: per-architecture expectations modelled on llama.cpp's loader
//! (`src/llama-model.cpp` `load_hparams`, `crates/models/src/models/<arch>.cpp` `load_arch_tensors`,
//! `llama_model_loader::create_tensor` / `done_getting_tensors`): the hyper-parameters of the
//! family table's [`ArchSpec`]s present where required, of the type llama.cpp reads them as,
//! finite and in range; every tensor the architecture expects present with the shape they
//! imply; every tensor in the file used (an extra tensor, e.g. a block past `block_count`, is
//! refused). The table is data: one [`ArchSpec`] per architecture, in its family's file
//! ([`crate::models::families`]). Here: hyper-parameters read as llama.cpp reads them, the
//! tensors an architecture expects with the shapes they imply, and the file against them.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use super::spec::*;
use crate::error::Result;
use crate::models::gguf::check::{bad, read_checked};

/// The hyper-parameters the shapes are computed from (read and range-checked).
#[derive(Debug, Clone, Default)]
pub struct Hparams {
    pub arch: String,
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_head: u64,
    /// Per block (lfm2: 0 for a convolution block).
    pub n_head_kv: Vec<u64>,
    pub head_k: u64,
    pub head_v: u64,
    pub n_ff: u64,
    pub n_ff_exp: u64,
    pub n_vocab: u64,
    pub n_expert: u64,
    pub n_expert_used: u64,
    pub n_rot: u64,
    pub l_cache: u64,
}

impl Hparams {
    pub(super) fn dim(&self, d: D, layer: usize) -> u64 {
        let kv = self.n_head_kv.get(layer).copied().unwrap_or(0);
        let m = |a: u64, b: u64| a.saturating_mul(b);
        match d {
            D::Embd => self.n_embd,
            D::Vocab => self.n_vocab,
            D::Q => m(self.head_k, self.n_head),
            D::K => m(self.head_k, kv),
            D::V => m(self.head_v, kv),
            D::Qkv => m(self.head_k, self.n_head)
                .saturating_add(m(self.head_k, kv))
                .saturating_add(m(self.head_v, kv)),
            D::HeadK => self.head_k,
            D::Ff => self.n_ff,
            D::Ff2 => m(2, self.n_ff),
            D::FfExp => self.n_ff_exp,
            D::Expert => self.n_expert,
            D::Rot2 => self.n_rot / 2,
            D::Embd3 => m(3, self.n_embd),
            D::LCache => self.l_cache,
        }
    }
}

/// The type name of a metadata value, as the error lines spell it.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F32(_) => "f32",
        Value::F64(_) => "f64",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
    }
}

pub(super) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::F32(x) => format!("{x:e}"),
        Value::F64(x) => format!("{x:e}"),
        Value::U32(x) => x.to_string(),
        other => format!("{other:?}"),
    }
}

/// Reads and checks one hyper-parameter: its type (llama.cpp's), its range. `None`: absent
/// and optional. Scalars as u64 / f64; per-layer arrays expanded.
pub(super) fn read_key(
    ct: &Content,
    arch: &str,
    k: &KeySpec,
    n_layer: u64,
) -> std::result::Result<Option<Vec<f64>>, String> {
    let full = format!("{arch}.{}", k.key);
    let Some(v) = ct.metadata.get(&full) else {
        if k.required {
            return Err(format!(
                "metadata lacks `{full}` ({} expected; llama.cpp: key not found in model)",
                match k.kind {
                    Kind::F32 => "an f32",
                    _ => "a u32",
                }
            ));
        }
        return Ok(None);
    };
    let vals: Vec<f64> = match (k.kind, v) {
        (Kind::U32 | Kind::U32OrPerLayer, Value::U32(x)) => vec![*x as f64],
        (Kind::F32, Value::F32(x)) => vec![*x as f64],
        (Kind::U32OrPerLayer, Value::Array(a)) => {
            if a.len() as u64 != n_layer {
                return Err(format!(
                    "`{full}` holds an array of {}, expected one u32 per block ({arch}.block_count = {n_layer})",
                    a.len()
                ));
            }
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                match x {
                    Value::U32(x) => out.push(*x as f64),
                    // llama.cpp's converter writes Python ints as INT32 (lfm2's
                    // head_count_kv), and its loader takes INT32 or UINT32 arrays.
                    Value::I32(x) if *x >= 0 => out.push(*x as f64),
                    other => {
                        return Err(format!(
                            "`{full}` holds an array of {}, expected an array of u32 (or non-negative i32)",
                            type_name(other)
                        ))
                    }
                }
            }
            out
        }
        (kind, v) => {
            return Err(format!(
                "`{full}` is of type {} (holds {}), expected {} (llama.cpp: key has wrong type)",
                type_name(v),
                show(v),
                match kind {
                    Kind::F32 => "f32",
                    Kind::U32 => "u32",
                    Kind::U32OrPerLayer => "u32 or an array of u32",
                }
            ))
        }
    };
    for x in &vals {
        let ok = match k.range {
            Range::Int(lo, hi) => *x >= lo as f64 && *x <= hi as f64,
            Range::Float(lo, hi) => x.is_finite() && *x > lo && *x <= hi,
        };
        if !ok {
            let want = match k.range {
                Range::Int(lo, hi) => format!("an integer in {lo}..={hi}"),
                Range::Float(lo, hi) => format!("a finite number in ({lo:e}, {hi:e}]"),
            };
            return Err(format!(
                "`{full}` holds {}, expected {want}",
                if vals.len() > 1 {
                    format!("{x} in its per-block array")
                } else {
                    show(v)
                }
            ));
        }
    }
    Ok(Some(vals))
}

/// The hyper-parameters of `ct` for `spec`, checked (types, ranges, head counts dividing the
/// widths, experts); the tensor shapes are checked against them by [`expected_tensors`].
pub fn hparams(ct: &Content, spec: &ArchSpec) -> std::result::Result<Hparams, String> {
    let a = spec.arch;
    // Arch-specific entries override the common ones of the same key.
    let mut keys: Vec<KeySpec> = COMMON_KEYS
        .iter()
        .filter(|c| !spec.keys.iter().any(|k| k.key == c.key))
        .copied()
        .collect();
    keys.extend(spec.keys.iter().copied());
    keys.push(key(spec.eps, F, true, EPS));
    let n_layer = read_key(
        ct,
        a,
        &key("block_count", U, true, Range::Int(1, MAX_LAYERS)),
        0,
    )?
    .map(|v| v[0] as u64)
    .unwrap_or(0);
    let mut got: HashMap<&str, Vec<f64>> = HashMap::new();
    for k in &keys {
        if let Some(v) = read_key(ct, a, k, n_layer)? {
            got.insert(k.key, v);
        }
    }
    let u = |k: &str| got.get(k).map(|v| v[0] as u64);
    let n_embd = u("embedding_length").unwrap_or(0);
    let n_head = u("attention.head_count").unwrap_or(0);
    let n_head_kv: Vec<u64> = match got.get("attention.head_count_kv") {
        Some(v) if v.len() > 1 => v.iter().map(|x| *x as u64).collect(),
        Some(v) => vec![v[0] as u64; n_layer as usize],
        None => vec![n_head; n_layer as usize],
    };
    let per_block = got
        .get("attention.head_count_kv")
        .is_some_and(|v| v.len() > 1);
    for (i, &kv) in n_head_kv.iter().enumerate() {
        let per = if per_block {
            format!(" (block {i})")
        } else {
            String::new()
        };
        if kv == 0 && !spec.has_recurrent_blocks() {
            return Err(format!(
                "`{a}.attention.head_count_kv` holds 0{per}, expected a divisor of `{a}.attention.head_count` = {n_head}"
            ));
        }
        if kv > 0 && n_head % kv != 0 {
            return Err(format!(
                "`{a}.attention.head_count_kv` holds {kv}{per}, expected a divisor of `{a}.attention.head_count` = {n_head}"
            ));
        }
    }
    let head_k = match u("attention.key_length") {
        Some(k) => k,
        None => {
            if n_embd % n_head != 0 {
                return Err(format!(
                    "`{a}.embedding_length` = {n_embd} is not a multiple of `{a}.attention.head_count` = {n_head} and there is no `{a}.attention.key_length`"
                ));
            }
            n_embd / n_head
        }
    };
    let head_v = u("attention.value_length").unwrap_or(n_embd / n_head);
    let n_rot = u("rope.dimension_count").unwrap_or(head_k);
    match spec.rot {
        Rot::EqualsHead if n_rot != head_k => {
            // Without key_length the head size comes from head_count: either field may be
            // the wrong one, so both are named.
            let from = match u("attention.key_length") {
                Some(_) => format!("`{a}.attention.key_length`"),
                None => format!(
                    "`{a}.embedding_length` {n_embd} / `{a}.attention.head_count` {n_head}"
                ),
            };
            return Err(format!(
                "`{a}.rope.dimension_count` holds {n_rot}, expected the head size {head_k} ({from}): the implementations rotate whole heads"
            ));
        }
        Rot::AtMostHead if n_rot > head_k || n_rot % 2 != 0 => {
            return Err(format!(
                "`{a}.rope.dimension_count` holds {n_rot}, expected an even number at most the head size {head_k}"
            ))
        }
        _ => {}
    }
    let n_expert = u("expert_count").unwrap_or(0);
    let n_expert_used = u("expert_used_count").unwrap_or(0);
    if n_expert_used > n_expert || (n_expert > 0 && n_expert_used == 0) {
        return Err(format!(
            "`{a}.expert_used_count` holds {n_expert_used}, expected 1..={n_expert} (`{a}.expert_count` = {n_expert}); 0 without experts"
        ));
    }
    let n_ff = u("feed_forward_length").unwrap_or(0);
    let n_ff_exp = u("expert_feed_forward_length")
        .unwrap_or_else(|| n_ff.checked_div(n_expert_used).unwrap_or(0));
    let n_vocab = vocab(ct, a)?;
    Ok(Hparams {
        arch: a.to_string(),
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_k,
        head_v,
        n_ff,
        n_ff_exp,
        n_vocab,
        n_expert,
        n_expert_used,
        n_rot,
        l_cache: u("shortconv.l_cache").unwrap_or(0),
    })
}

/// llama.cpp's n_vocab: `<arch>.vocab_size`, else the length of `tokenizer.ggml.tokens`; the
/// rows of `token_embd.weight` without either.
pub(super) fn vocab(ct: &Content, a: &str) -> std::result::Result<u64, String> {
    if let Some(v) = ct.metadata.get(&format!("{a}.vocab_size")) {
        return match v {
            Value::U32(x) if *x > 0 => Ok(*x as u64),
            other => Err(format!(
                "`{a}.vocab_size` holds {} ({}), expected a positive u32",
                show(other),
                type_name(other)
            )),
        };
    }
    if let Some(v) = ct.metadata.get("tokenizer.ggml.tokens") {
        return match v {
            Value::Array(t) if !t.is_empty() => Ok(t.len() as u64),
            other => Err(format!(
                "`tokenizer.ggml.tokens` holds {} ({}), expected a non-empty array of strings",
                show(other),
                type_name(other)
            )),
        };
    }
    Ok(ct
        .tensor_infos
        .get("token_embd.weight")
        .and_then(|t| t.shape.dims().first().copied())
        .unwrap_or(0) as u64)
}

/// One tensor the architecture expects: name, shape (ggml order), whether it must be there,
/// and which hyper-parameters each dimension comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub name: String,
    pub ne: Vec<u64>,
    pub need: Need,
    pub dims: Vec<D>,
    /// llama.cpp reads it but the project's implementations do not.
    pub not_run: bool,
}

pub(super) fn in_blocks(b: Blocks, h: &Hparams, layer: usize) -> bool {
    let kv = h.n_head_kv.get(layer).copied().unwrap_or(0);
    match b {
        Blocks::None => false,
        Blocks::All => true,
        Blocks::Attention => kv > 0,
        Blocks::Recurrent => kv == 0,
        Blocks::Dense => h.n_expert == 0,
        Blocks::Moe => h.n_expert > 0,
    }
}

/// Every tensor `spec` expects of a model with hyper-parameters `h` (the fused-or-separate
/// QKV choice made by what `present` holds, as llama.cpp's `create_tensor_qkv` does).
pub fn expected_for(spec: &ArchSpec, h: &Hparams, present: &dyn Fn(&str) -> bool) -> Vec<Expected> {
    let mut out: Vec<Expected> = Vec::new();
    let not_run = |name: &str| {
        let short = name
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .map(|(_, s)| s);
        spec.not_run.iter().any(|n| Some(*n) == short || *n == name)
    };
    let mut push = |name: String, dims: &[D], need: Need, layer: usize| {
        let nr = not_run(&name);
        out.push(Expected {
            ne: dims.iter().map(|d| h.dim(*d, layer)).collect(),
            dims: dims.to_vec(),
            need,
            not_run: nr,
            name,
        });
    };
    // The arch's own entries first: they override HEAD's of the same name (phi2's output).
    let mut top: BTreeSet<&str> = BTreeSet::new();
    for s in spec.tensors.iter().chain(HEAD) {
        if s.blocks == Blocks::None {
            if s.name == "output_norm.weight" && spec.final_norm_is_token_embd_norm() {
                continue;
            }
            if top.insert(s.name) {
                push(s.name.to_string(), s.shape, s.need, 0);
            }
        }
    }
    for layer in 0..h.n_layer as usize {
        if let Some(q) = spec.qkv {
            if in_blocks(q.blocks, h, layer) {
                let n = |x: &str| format!("blk.{layer}.{x}");
                if present(&n("attn_qkv.weight")) {
                    push(
                        n("attn_qkv.weight"),
                        &[D::Embd, D::Qkv],
                        Need::Optional,
                        layer,
                    );
                    if present(&n("attn_qkv.bias")) {
                        push(n("attn_qkv.bias"), &[D::Qkv], Need::Optional, layer);
                    } else {
                        push(n("attn_q.bias"), &[q.q], Need::Optional, layer);
                        push(n("attn_k.bias"), &[q.k], Need::Optional, layer);
                        push(n("attn_v.bias"), &[q.v], Need::Optional, layer);
                    }
                } else {
                    let need = if q.required {
                        Need::Required
                    } else {
                        Need::Optional
                    };
                    push(n("attn_q.weight"), &[D::Embd, q.q], need, layer);
                    push(n("attn_k.weight"), &[D::Embd, q.k], need, layer);
                    push(n("attn_v.weight"), &[D::Embd, q.v], need, layer);
                    push(n("attn_q.bias"), &[q.q], Need::Optional, layer);
                    push(n("attn_k.bias"), &[q.k], Need::Optional, layer);
                    push(n("attn_v.bias"), &[q.v], Need::Optional, layer);
                }
            }
        }
        for s in spec.tensors {
            if s.blocks != Blocks::None && in_blocks(s.blocks, h, layer) {
                push(
                    s.name.replace("{}", &layer.to_string()),
                    s.shape,
                    s.need,
                    layer,
                );
            }
        }
    }
    out
}

/// Every tensor the architecture of `ct` expects, with the hyper-parameters they come from
/// (see [`expected_for`]; the fused-or-separate QKV choice made by what the file holds).
pub fn expected_tensors(
    arch: &str,
    ct: &Content,
) -> std::result::Result<(Hparams, Vec<Expected>), String> {
    let spec = arch_spec(arch).ok_or_else(|| unknown_arch(arch))?;
    let h = hparams(ct, spec)?;
    let e = expected_for(spec, &h, &|n| ct.tensor_infos.contains_key(n));
    Ok((h, e))
}

pub(super) fn unknown_arch(arch: &str) -> String {
    format!(
        "`general.architecture` holds {arch:?}, expected one of {}",
        crate::models::families::archs()
    )
}

/// The architecture's checks (see the module doc) on a header [`read_checked`] produced.
pub fn check_arch(path: &Path, ct: &Content) -> Result<()> {
    check_arch_inner(ct).map_err(|e| bad(path, e))
}

pub(super) fn check_arch_inner(ct: &Content) -> std::result::Result<(), String> {
    let arch = match ct.metadata.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "`general.architecture` is of type {}, expected a string",
                type_name(other)
            ))
        }
        None => return Err("metadata lacks `general.architecture`".into()),
    };
    let (h, expected) = expected_tensors(&arch, ct)?;
    let a = arch.as_str();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for e in &expected {
        let Some(info) = ct.tensor_infos.get(&e.name) else {
            if e.need == Need::Required {
                let why = match e.name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
                    Some((b, _)) => {
                        format!(" (`{a}.block_count` = {} says block {b} exists)", h.n_layer)
                    }
                    None => String::new(),
                };
                return Err(format!(
                    "tensor `{}` is missing{why}: the file is incomplete, or not a {a} model (llama.cpp: missing tensor)",
                    e.name
                ));
            }
            continue;
        };
        let mut ne: Vec<u64> = info.shape.dims().iter().rev().map(|&d| d as u64).collect();
        // llama.cpp compares 4 dims with the missing ones 1: [n, 1] is [n].
        while ne.len() > e.ne.len() && ne.last() == Some(&1) {
            ne.pop();
        }
        if ne != e.ne {
            let from: Vec<String> = e
                .dims
                .iter()
                .zip(&e.ne)
                .enumerate()
                .filter(|(i, _)| ne.get(*i) != e.ne.get(*i))
                .map(|(_, (d, v))| format!("{v} from {}", d.source(a)))
                .collect();
            return Err(format!(
                "tensor `{}` has shape {:?} (ggml order), expected {:?} ({}) (llama.cpp: tensor has wrong shape)",
                e.name,
                ne,
                e.ne,
                if from.is_empty() {
                    "a different rank".to_string()
                } else {
                    from.join("; ")
                }
            ));
        }
        if e.not_run {
            return Err(format!(
                "tensor `{}` is part of a {a} model as llama.cpp runs it, but the project's implementations of {a} do not read it: they would run a different model than the file describes",
                e.name
            ));
        }
        used.insert(e.name.as_str());
    }
    // llama.cpp: "wrong number of tensors" — every tensor in the file must be used.
    let mut extra: Vec<&String> = ct
        .tensor_infos
        .keys()
        .filter(|n| !used.contains(n.as_str()))
        .collect();
    extra.sort();
    if let Some(x) = extra.first() {
        let block = x
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(b, _)| b.parse::<u64>().ok());
        let why = match block {
            Some(b) if b >= h.n_layer => format!(
                "block {b} is past `{a}.block_count` = {} (the file has blocks up to {})",
                h.n_layer,
                last_block(ct).unwrap_or(b)
            ),
            _ => format!("no {a} model with these hyper-parameters reads it"),
        };
        return Err(format!(
            "tensor `{x}` is not used: {why} ({} of {} tensors unused; llama.cpp: wrong number of tensors)",
            extra.len(),
            ct.tensor_infos.len()
        ));
    }
    Ok(())
}

pub(super) fn last_block(ct: &Content) -> Option<u64> {
    ct.tensor_infos
        .keys()
        .filter_map(|n| {
            n.strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(b, _)| b.parse::<u64>().ok())
        })
        .max()
}

/// The spec of `arch` (its family's, [`crate::models::families`]).
pub fn arch_spec(arch: &str) -> Option<&'static ArchSpec> {
    crate::models::families::by_arch(arch).map(|f| &f.spec)
}

/// Bounded scan, then candle's reader, then the architecture's checks ([`check_arch`]).
pub fn validate_gguf(path: &Path) -> Result<Content> {
    let (_, ct) = read_checked(path)?;
    check_arch(path, &ct)?;
    Ok(ct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    fn content(md: Vec<(&str, Value)>, tensors: Vec<(String, Vec<usize>)>) -> Content {
        use candle_core::quantized::gguf_file::{TensorInfo, VersionedMagic};
        Content {
            magic: VersionedMagic::GgufV3,
            metadata: md.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensor_infos: tensors
                .into_iter()
                .map(|(n, ne)| {
                    let mut d = ne;
                    d.reverse();
                    (
                        n,
                        TensorInfo {
                            ggml_dtype: GgmlDType::F32,
                            shape: candle_core::Shape::from(d),
                            offset: 0,
                        },
                    )
                })
                .collect(),
            tensor_data_offset: 0,
        }
    }

    /// A 2-block llama (ggml order shapes): embd 8, 2 heads of 4, 1 KV head, ff 16, vocab 10.
    fn llama(block_count: u32, extra: &[(&str, Vec<usize>)]) -> Content {
        let md = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.context_length", Value::U32(64)),
            ("llama.embedding_length", Value::U32(8)),
            ("llama.block_count", Value::U32(block_count)),
            ("llama.feed_forward_length", Value::U32(16)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(1)),
            ("llama.rope.dimension_count", Value::U32(4)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.vocab_size", Value::U32(10)),
        ];
        let mut ts: Vec<(String, Vec<usize>)> = vec![
            ("token_embd.weight".into(), vec![8, 10]),
            ("output_norm.weight".into(), vec![8]),
        ];
        let per = [
            ("attn_norm.weight", vec![8]),
            ("attn_q.weight", vec![8, 8]),
            ("attn_k.weight", vec![8, 4]),
            ("attn_v.weight", vec![8, 4]),
            ("attn_output.weight", vec![8, 8]),
            ("ffn_norm.weight", vec![8]),
            ("ffn_gate.weight", vec![8, 16]),
            ("ffn_down.weight", vec![16, 8]),
            ("ffn_up.weight", vec![8, 16]),
        ];
        for b in 0..2 {
            for (n, s) in &per {
                ts.push((format!("blk.{b}.{n}"), s.clone()));
            }
        }
        ts.extend(extra.iter().map(|(n, s)| (n.to_string(), s.clone())));
        content(md, ts)
    }

    #[test]
    fn a_consistent_file_passes_and_each_contradiction_names_its_field() {
        check_arch_inner(&llama(2, &[])).unwrap();
        let e = check_arch_inner(&llama(1, &[])).unwrap_err();
        assert!(e.contains("block 1 is past `llama.block_count` = 1"), "{e}");
        let e = check_arch_inner(&llama(3, &[])).unwrap_err();
        assert!(
            e.contains("`llama.block_count` = 3 says block 2 exists"),
            "{e}"
        );
        let e = check_arch_inner(&llama(2, &[("blk.0.attn_q.bias", vec![8])])).unwrap_err();
        assert!(e.contains("do not read it"), "{e}");
        let mut c = llama(2, &[]);
        c.metadata
            .insert("llama.feed_forward_length".into(), Value::U32(32));
        let e = check_arch_inner(&c).unwrap_err();
        assert!(e.contains("llama.feed_forward_length"), "{e}");
        let mut c = llama(2, &[]);
        c.metadata.insert(
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(f32::NAN),
        );
        let e = check_arch_inner(&c).unwrap_err();
        assert!(e.contains("layer_norm_rms_epsilon` holds NaN"), "{e}");
        let mut c = llama(2, &[]);
        c.metadata
            .insert("llama.attention.head_count".into(), Value::U64(2));
        let e = check_arch_inner(&c).unwrap_err();
        assert!(e.contains("is of type u64"), "{e}");
    }
}
