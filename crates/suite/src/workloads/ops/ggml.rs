//! The ops table in ggml's terms: ggml's type and op ids, each row as a line of llama.cpp's
//! `test-backend-ops --test-file` format, and ggml's own times of the same ops read back
//! (`modelbench ops --peer llama.cpp`).

use std::collections::BTreeMap;
use std::path::Path;

use super::OpRow;
use crate::error::{Error, Result};
use crate::models::gguf::ggml_types::dtype_name;

pub(super) fn ggml_err(e: impl std::fmt::Display) -> Error {
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

pub(super) fn fbits(x: f32) -> i32 {
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
pub(super) fn ggml_type(d: candle_core::quantized::GgmlDType) -> String {
    let n = dtype_name(d).to_lowercase();
    match n.strip_suffix("_k") {
        Some(base) => format!("{base}_K"),
        None => n,
    }
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

/// Runs `test-backend-ops perf -b <backend> --test-file` over the rows that have a ggml line
/// (`backend`: `CPU` with `threads` CPU threads, or `CUDA0` for a CUDA build of llama.cpp when
/// the table is of a CUDA device), and fills `ggml_us`.
pub fn run_backend_ops(
    program: &Path,
    rows: &mut [OpRow],
    threads: usize,
    backend: &str,
) -> Result<()> {
    let lines: Vec<&str> = rows.iter().filter_map(|r| r.ggml.as_deref()).collect();
    if lines.is_empty() {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("modelbench-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let file = dir.join("cases.txt");
    std::fs::write(&file, lines.join("\n") + "\n").map_err(Error::io(&file))?;
    let out = std::process::Command::new(program)
        .args(["perf", "-b", backend, "--test-file"])
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
