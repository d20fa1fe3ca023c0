//! Mutated copies of a fixture for the negative controls: tensors and metadata changed one way each.

use super::*;

/// Rows `a` and `b` (ranges of dim 0, `a` before `b`, equal lengths) of `t` exchanged.
pub(super) fn swap_rows(
    t: &Tensor,
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
) -> Tensor {
    assert!(a.end <= b.start && a.len() == b.len());
    let n = t.dim(0).unwrap();
    Tensor::cat(
        &[
            t.narrow(0, 0, a.start).unwrap(),
            t.narrow(0, b.start, b.len()).unwrap(),
            t.narrow(0, a.end, b.start - a.end).unwrap(),
            t.narrow(0, a.start, a.len()).unwrap(),
            t.narrow(0, b.end, n - b.end).unwrap(),
        ],
        0,
    )
    .unwrap()
}

pub(super) fn set_u32(md: &mut [(String, Value)], key: &str, v: u32) {
    let e = md.iter_mut().find(|(k, _)| k == key).expect("key present");
    e.1 = Value::U32(v);
}

pub(super) fn md_u32(md: &[(String, Value)], key: &str) -> usize {
    md.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.to_u32().ok())
        .expect("key present") as usize
}

/// Applies `f` to every tensor whose name passes `pick`, through f32 and back to its type
/// (exact for Q8_0 rows moved whole: each block keeps its own maximum, so its scale).
pub(super) fn map_tensors(
    ts: &mut [(String, QTensor)],
    pick: impl Fn(&str) -> bool,
    f: impl Fn(&str, Tensor) -> Tensor,
) {
    for (n, q) in ts.iter_mut() {
        if pick(n) {
            let t = q.dequantize(&Device::Cpu).unwrap();
            *q = QTensor::quantize(&f(n, t), q.dtype()).unwrap();
        }
    }
}

pub(super) fn rotate_router(_: &mut Vec<(String, Value)>, ts: &mut [(String, QTensor)]) {
    map_tensors(
        ts,
        |n| n.ends_with("ffn_gate_inp.weight"),
        |_, t| {
            let e = t.dim(0).unwrap();
            Tensor::cat(
                &[t.narrow(0, 1, e - 1).unwrap(), t.narrow(0, 0, 1).unwrap()],
                0,
            )
            .unwrap()
        },
    );
}

pub(super) fn swap_gate_up(_: &mut Vec<(String, Value)>, ts: &mut [(String, QTensor)]) {
    map_tensors(
        ts,
        |n| n.ends_with("ffn_up.weight"),
        |_, t| {
            let h = t.dim(0).unwrap() / 2;
            Tensor::cat(&[t.narrow(0, h, h).unwrap(), t.narrow(0, 0, h).unwrap()], 0).unwrap()
        },
    );
}

// The `Mutation` signature (tests/families.rs): some mutations add metadata.
#[allow(clippy::ptr_arg)]
pub(super) fn rope_other_half(md: &mut Vec<(String, Value)>, ts: &mut [(String, QTensor)]) {
    let hd = md_u32(md, "glm4.attention.key_length");
    map_tensors(
        ts,
        |n| {
            n.ends_with("attn_q.weight")
                || n.ends_with("attn_k.weight")
                || n.ends_with("attn_q.bias")
                || n.ends_with("attn_k.bias")
        },
        |_, t| {
            let dims = t.dims().to_vec();
            let rows = dims[0];
            let rest: usize = dims[1..].iter().product();
            let r = t.reshape((rows / hd, hd, rest)).unwrap();
            let h = hd / 2;
            Tensor::cat(&[r.narrow(1, h, h).unwrap(), r.narrow(1, 0, h).unwrap()], 1)
                .unwrap()
                .reshape(dims)
                .unwrap()
        },
    );
}

/// Where a mutated copy of `src` tagged `tag` is written (under target/, keyed by the
/// source file's hash so a changed fixture gets new copies).
pub(super) fn mutated_path(src: &Path, tag: &str) -> std::path::PathBuf {
    let sha = modelbench::util::fsio::file_sha256(src).unwrap();
    modelbench::util::fsio::target_dir()
        .join("modelbench-verify")
        .join("controls")
        .join(format!("{}-{tag}.gguf", &sha[..16]))
}

/// Writes `src` with `f` applied to `dst` (sorted tensors, as the fixture writer does).
pub(super) fn write_mutated(src: &Path, dst: &Path, f: Mutation) {
    let mut file = std::fs::File::open(src).unwrap();
    let ct = gguf_file::Content::read(&mut file).unwrap();
    let mut md: Vec<(String, Value)> = ct
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    let mut ts: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| (n.clone(), ct.tensor(&mut file, n, &Device::Cpu).unwrap()))
        .collect();
    f(&mut md, &mut ts);
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = ts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &md_refs, &t_refs).unwrap();
}
