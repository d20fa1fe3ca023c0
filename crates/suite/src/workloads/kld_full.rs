//! The KL-divergence gate at full precision (issue 61 items 2-3): the implementation and
//! llama.cpp both run the model with every weight in f32 (llama.cpp's own rewrite of the GGUF,
//! `llama-logits --to-f32`: ggml dequantizes), and the KLD is computed exactly, over the whole
//! vocabulary, from llama.cpp's f32 logits (scripts/llama-logits.cpp), at the positions of the
//! committed 16-bit reference ([`KldReference`]: llama-perplexity's chunks of its own ids).
//!
//! Why: against a quantized file, two correct implementations differ by the noise of their
//! 8-bit activation rounding (a value that lands on the other side of a rounding step moves
//! by a whole step), about llama.cpp's own f16-KV difference (a mean KLD of 4e-3 on the real
//! SmolLM2), and the 16-bit reference cannot resolve under 1e-4. Small architecture bugs (RoPE
//! base +0.5%, epsilon x10) hide under both. In f32 a correct implementation differs from
//! llama.cpp only by the order of its sums and its exp/tanh approximations, and so does
//! llama.cpp from itself under perturbations that are legitimate for an f32 implementation:
//! another thread count, and token-by-token evaluation (micro-batch 1, which is how the
//! implementations here decode) instead of one batch. The limits come from those runs
//! ([`crate::judge::kld::thresholds_full`]), never from the implementation checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::engine::perplexity::{for_each_scored_position, OnProgress};
use crate::error::{Error, Result};
use crate::judge::kld::{decide, thresholds_full, Check, Decision, KldStats, Thresholds};
use crate::models::CausalLm;
use crate::workloads::kld::{stats, KldReference, Row};

/// The magic of scripts/llama-logits.cpp's output.
const MAGIC: &[u8; 8] = b"MBLOGIT1";

/// llama.cpp's full-vocabulary f32 logits at the scored positions, one run.
#[derive(Debug, Clone)]
pub struct FullLogits {
    /// What ran, in words (`llama.cpp f32 weights, f32 KV, 2 threads, micro-batch 512`).
    pub settings: String,
    pub n_vocab: usize,
    pub n_rows: usize,
    data: Vec<f32>,
}

impl FullLogits {
    /// Reads scripts/llama-logits.cpp's file.
    pub fn load(path: &Path, settings: &str) -> Result<FullLogits> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let bad = |why: &str| {
            Error::Report(format!(
                "{}: {why}; delete it and run again (it is made by llama-logits)",
                path.display()
            ))
        };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a llama-logits file"));
        }
        let n_vocab = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let n_rows = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        if n_vocab == 0 || bytes.len() != 16 + 4 * n_vocab * n_rows {
            return Err(bad("its size does not match its header"));
        }
        let data = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(FullLogits {
            settings: settings.into(),
            n_vocab,
            n_rows,
            data,
        })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_vocab..(i + 1) * self.n_vocab]
    }
}

/// ln softmax of `l`, in f64.
pub fn log_softmax(l: &[f32]) -> Vec<f64> {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    l.iter().map(|&x| x as f64 - lse).collect()
}

/// KL(P || Q) over the whole vocabulary, from log-probabilities.
pub fn full_kld(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&lp, &lq)| {
            let w = lp.exp();
            if w == 0.0 {
                0.0
            } else {
                w * (lp - lq)
            }
        })
        .sum::<f64>()
        .max(0.0)
}

fn argmax(l: &[f32]) -> usize {
    l.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| {
            if x > b.1 {
                (i, x)
            } else {
                b
            }
        })
        .0
}

/// How the reference's llama.cpp computes GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefGelu {
    /// In f32 (`bin/llama-logits-exact-gelu`: the ggml CPU library compiled without
    /// `GGML_GELU_FP16`, scripts/build-llama-cpp.sh), as every implementation here computes it
    /// in every benchmark: the gate's reference. Families without GELU read the same bits from
    /// either build (measured on the Llama fixture).
    Exact,
    /// From ggml's table of f16 values (`bin/llama-logits`, llama.cpp's CPU backend as shipped);
    /// the judged run then computes GELU the same way ([`CausalLm::match_ggml_gelu`]). Kept to
    /// show what the table alone does: it turns summation-order noise into whole f16 steps
    /// (the real Gemma 3 270M: llama.cpp's own micro-batch-1 run 3.0e-7 mean KLD with the
    /// table), wide enough to hide a RoPE base off by 0.5%.
    GgmlTable,
}

impl RefGelu {
    fn program(self) -> &'static str {
        match self {
            RefGelu::Exact => "llama-logits-exact-gelu",
            RefGelu::GgmlTable => "llama-logits",
        }
    }
}

/// The full-precision reference of one GGUF: its F32 rewrite, llama.cpp's base run on it and
/// its runs under legitimate perturbations, at the positions of `positions`.
pub struct FullReference {
    pub positions: KldReference,
    pub f32_gguf: PathBuf,
    pub base: FullLogits,
    /// llama.cpp against itself (the base run) under perturbations legitimate for an f32
    /// implementation, by the gate's exact estimator: the limits' source.
    pub legitimate: Vec<(String, KldStats)>,
    /// llama.cpp against itself with one half-precision step (f16 KV cache; flash attention):
    /// shown beside the limits, never used for them, to say what the gate can resolve.
    pub half_precision: Vec<(String, KldStats)>,
    /// "llama.cpp <commit> (llama-cpp-python <version>)".
    pub source: String,
    /// How its llama.cpp computed GELU.
    pub gelu: RefGelu,
}

/// One llama-logits run: a name for the file and its settings.
struct Setting {
    file: &'static str,
    words: &'static str,
    args: &'static [&'static str],
}

const BASE: Setting = Setting {
    file: "base",
    words: "f32 KV, flash attention off, 2 threads, the chunk as one micro-batch",
    args: &["-t", "2"],
};
const LEGITIMATE: [Setting; 2] = [
    Setting {
        file: "t1",
        words: "1 thread",
        args: &["-t", "1"],
    },
    Setting {
        file: "ub1",
        words: "micro-batch 1 (token by token, as a decode step)",
        args: &["-t", "2", "-ub", "1"],
    },
];
const HALF: [Setting; 2] = [
    Setting {
        file: "kvf16",
        words: "f16 KV cache",
        args: &["-t", "2", "-ctk", "f16", "-ctv", "f16"],
    },
    Setting {
        file: "fa",
        words: "flash attention on",
        args: &["-t", "2", "--fa", "on"],
    },
];

impl FullReference {
    /// Makes (or reads from `cache`) the full-precision reference of `gguf` at the positions
    /// of `positions`, with the llama.cpp build in `llama_cpp` (its `llama-logits-exact-gelu`:
    /// [`RefGelu::Exact`]).
    pub fn make(
        gguf: &Path,
        positions: KldReference,
        llama_cpp: &Path,
        cache: &Path,
    ) -> Result<FullReference> {
        FullReference::make_with(gguf, positions, llama_cpp, cache, RefGelu::Exact)
    }

    /// [`FullReference::make`] with GELU computed as `gelu` says.
    pub fn make_with(
        gguf: &Path,
        positions: KldReference,
        llama_cpp: &Path,
        cache: &Path,
        gelu: RefGelu,
    ) -> Result<FullReference> {
        let tool = llama_cpp.join("bin").join(gelu.program());
        if !tool.is_file() {
            return Err(Error::Report(format!(
                "{}: missing; run scripts/build-llama-cpp.sh (it compiles scripts/llama-logits.cpp against the build)",
                tool.display()
            )));
        }
        let sha = positions.provenance["gguf"]["sha256"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or(crate::util::fsio::file_sha256(gguf)?);
        let ids_sha = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for id in &positions.token_ids {
                h.update(id.to_le_bytes());
            }
            // Format 2: the chunks' first ids replaced by BOS (format 1 did not).
            h.update(format!(
                "bos={:?}",
                positions.bos_id.filter(|_| positions.add_bos)
            ));
            format!("{:x}", h.finalize())
        };
        // The program's source (kept beside the build) names the cache too: a changed
        // llama-logits makes new files.
        let kept = llama_cpp.join("llama-logits.cpp");
        let tool_sha = crate::util::fsio::file_sha256(if kept.is_file() { &kept } else { &tool })?;
        let dir = cache.join(format!(
            "{}-{}-{}{}-c{}x{}",
            &sha[..16.min(sha.len())],
            &ids_sha[..16],
            &tool_sha[..8],
            match gelu {
                RefGelu::Exact => "-eg",
                RefGelu::GgmlTable => "",
            },
            positions.n_ctx,
            positions.n_chunks
        ));
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let f32_gguf = dir.join("model-f32.gguf");
        if !f32_gguf.is_file() {
            run(Command::new(&tool)
                .arg("--to-f32")
                .arg(gguf)
                .arg(&f32_gguf)
                .args(["-t", "2"]))?;
        }
        // The ids as llama-perplexity evaluates them: each chunk's first id replaced by BOS
        // when the model adds one (as `for_each_scored_position` does for the implementation).
        let ids = dir.join("ids.txt");
        let mut evaluated = positions.token_ids.clone();
        if let (true, Some(bos)) = (positions.add_bos, positions.bos_id) {
            for chunk in evaluated.chunks_mut(positions.n_ctx) {
                chunk[0] = bos;
            }
        }
        let text: Vec<String> = evaluated.iter().map(u32::to_string).collect();
        crate::util::fsio::atomic_write(&ids, text.join(" ").as_bytes())?;
        let (n_ctx, n_rows, model_f32) = (positions.n_ctx, positions.positions(), f32_gguf.clone());
        let one = |s: &Setting| -> Result<FullLogits> {
            let out = dir.join(format!("{}.logits", s.file));
            if !out.is_file() {
                run(Command::new(&tool)
                    .arg("-m")
                    .arg(&model_f32)
                    .arg("--ids")
                    .arg(&ids)
                    .args(["-c", &n_ctx.to_string()])
                    .args(["--first", &(n_ctx / 2).to_string()])
                    .arg("-o")
                    .arg(&out)
                    .args(s.args))?;
            }
            let l = FullLogits::load(&out, s.words)?;
            if l.n_rows != n_rows {
                return Err(Error::Report(format!(
                    "{}: {} rows, expected {n_rows}; delete it and run again",
                    out.display(),
                    l.n_rows
                )));
            }
            Ok(l)
        };
        let base = one(&BASE)?;
        let mut r = FullReference {
            positions,
            f32_gguf,
            base,
            legitimate: vec![],
            half_precision: vec![],
            source: String::new(),
            gelu,
        };
        // A perturbed run is kept as its figures against the base run (`<name>.stats.json`);
        // its logits (n_vocab x positions x 4 bytes: 100-500 MB) are deleted once compared.
        let compared = |s: &Setting| -> Result<(String, KldStats)> {
            let stats_path = dir.join(format!("{}.stats.json", s.file));
            if let Some(st) = std::fs::read_to_string(&stats_path)
                .ok()
                .and_then(|t| serde_json::from_str::<KldStats>(&t).ok())
            {
                return Ok((s.words.to_string(), st));
            }
            let l = one(s)?;
            let st = r.compare(&l);
            drop(l);
            crate::util::fsio::atomic_write(
                &stats_path,
                serde_json::to_string_pretty(&st)
                    .expect("serializable")
                    .as_bytes(),
            )?;
            let _ = std::fs::remove_file(dir.join(format!("{}.logits", s.file)));
            Ok((s.words.to_string(), st))
        };
        let legitimate = LEGITIMATE
            .iter()
            .map(&compared)
            .collect::<Result<Vec<_>>>()?;
        let half_precision = HALF.iter().map(&compared).collect::<Result<Vec<_>>>()?;
        let info = llama_cpp.join("build-info.json");
        let info: serde_json::Value = std::fs::read_to_string(&info)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let source = format!(
            "llama.cpp {} (llama-cpp-python {} sdist), {}",
            info["llama_cpp_commit"].as_str().unwrap_or("?"),
            info["llama_cpp_python_version"].as_str().unwrap_or("?"),
            match gelu {
                RefGelu::Exact =>
                    "GELU in f32 (its CPU library built without GGML_GELU_FP16: llama-logits-exact-gelu)",
                RefGelu::GgmlTable => "GELU from ggml's f16 table (the CPU backend as shipped)",
            }
        );
        r.legitimate = legitimate;
        r.half_precision = half_precision;
        r.source = source;
        Ok(r)
    }

    /// `other` against the base run, by the gate's exact estimator.
    pub fn compare(&self, other: &FullLogits) -> KldStats {
        let r = &self.positions;
        let per_chunk = r.n_ctx - r.n_ctx / 2 - 1;
        let (rows, targets): (Vec<Row>, Vec<f64>) = (0..r.positions())
            .map(|i| {
                let (k, j) = (i / per_chunk, r.n_ctx / 2 + i % per_chunk);
                let next = r.token_ids[k * r.n_ctx + j + 1] as usize;
                row(self.base.row(i), other.row(i), next)
            })
            .unzip();
        stats(&rows, &targets)
    }
}

/// One position: the base's logits `p`, ours `q`, the next id; and the base's
/// ln-probability of the next id (the perplexity ratio's reference side).
fn row(p: &[f32], q: &[f32], next: usize) -> (Row, f64) {
    let (lp, lq) = (log_softmax(p), log_softmax(&q[..p.len()]));
    let r = Row {
        kld: full_kld(&lp, &lq),
        same_top1: argmax(p) == argmax(&q[..p.len()]),
        target_logprob: lq[next],
        non_finite: q.iter().any(|x| !x.is_finite()),
    };
    (r, lp[next])
}

fn run(c: &mut Command) -> Result<()> {
    let o = c.output().map_err(|e| {
        Error::Report(format!(
            "{}: cannot run it ({e})",
            c.get_program().to_string_lossy()
        ))
    })?;
    if !o.status.success() {
        return Err(Error::Report(format!(
            "{} failed: {}",
            c.get_program().to_string_lossy(),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// The verdict of the full-precision gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullVerdict {
    pub model: String,
    pub implementation: String,
    pub passed: bool,
    pub ours: KldStats,
    /// llama.cpp against itself, per legitimate perturbation (the limits' source).
    pub llama_cpp_self: Vec<(String, KldStats)>,
    /// llama.cpp against itself with one half-precision step (context only).
    pub half_precision: Vec<(String, KldStats)>,
    pub thresholds: Thresholds,
    pub checks: Vec<Check>,
    pub reference: String,
    /// Whether the judged run computed GELU from ggml's f16 table
    /// ([`CausalLm::match_ggml_gelu`]): only against a [`RefGelu::GgmlTable`] reference, on an
    /// implementation that can. Against the gate's reference ([`RefGelu::Exact`]) both sides
    /// compute GELU in f32, the benchmarks' code path.
    pub ggml_gelu: bool,
}

/// Runs `model` (loaded from the reference's F32 GGUF) over the scored positions and judges it
/// by the full-precision limits. Like for like: against the exact-GELU reference the model runs
/// as in every benchmark; against a [`RefGelu::GgmlTable`] one it computes GELU from here on as
/// llama.cpp's shipped CPU backend does (ggml's f16 table), where it can, since the table alone
/// moves llama.cpp's logits far past its own f32 noise (Phi-2 fixture: 6.0e-10 against
/// 1.7e-12); the verdict says which.
pub fn run_full_gate(
    model: &mut dyn CausalLm,
    label: &str,
    implementation: &str,
    r: &FullReference,
    progress: OnProgress<'_>,
) -> Result<FullVerdict> {
    let p = &r.positions;
    let ggml_gelu = r.gelu == RefGelu::GgmlTable && model.match_ggml_gelu();
    if model.meta().vocab < r.base.n_vocab {
        return Err(Error::Report(format!(
            "{label}: the model's vocabulary ({}) is smaller than llama.cpp's ({}): not the same model",
            model.meta().vocab,
            r.base.n_vocab
        )));
    }
    let per_chunk = p.n_ctx - p.n_ctx / 2 - 1;
    let bos = if p.add_bos { p.bos_id } else { None };
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for_each_scored_position(
        model,
        &p.token_ids,
        p.n_ctx,
        bos,
        p.n_chunks,
        progress,
        |k, j, logits, target| {
            let i = k * per_chunk + (j - p.n_ctx / 2);
            let l = logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
            let (one, base_target) = row(r.base.row(i), &l, target as usize);
            rows.push(one);
            targets.push(base_target);
            Ok(())
        },
    )?;
    let ours = stats(&rows, &targets);
    let selfs = r.legitimate.clone();
    let half = r.half_precision.clone();
    let t = thresholds_full(&selfs);
    let Decision { checks, passed } = decide(&ours, &t);
    Ok(FullVerdict {
        model: label.into(),
        implementation: implementation.into(),
        passed,
        ours,
        llama_cpp_self: selfs,
        half_precision: half,
        thresholds: t,
        checks,
        reference: format!(
            "{} (F32 rewrite by llama.cpp; {}), base run: {}{}",
            r.f32_gguf.display(),
            r.source,
            r.base.settings,
            if ggml_gelu {
                "; the judged run computed GELU as llama.cpp's CPU backend does (ggml's f16 table), like for like"
            } else {
                ""
            }
        ),
        ggml_gelu,
    })
}

/// The verdict as a table: one row per check with ours, the limit and llama.cpp against
/// itself under each perturbation (the limits' source), then the half-precision context.
pub fn table(v: &FullVerdict) -> String {
    use crate::judge::kld::{num, ok_word};
    let fig = |name: &str, s: &KldStats| -> String {
        match name {
            n if n.starts_with("same") => format!("{:.2}", s.same_top1_percent),
            n if n.starts_with("non-finite") => s.non_finite_positions.to_string(),
            n if n.starts_with("PPL") => format!("{:.7}", s.ppl_ratio),
            n if n.starts_with("99.9") => num(s.kld_p999),
            n if n.starts_with("99th") => num(s.kld_p99),
            _ => num(s.mean_kld),
        }
    };
    let mut out = format!("{:<28} {:>12} {:>24}", "check", "ours", "limit");
    for (n, _) in &v.llama_cpp_self {
        out.push_str(&format!(" | llama.cpp: {n}"));
    }
    out.push_str("  ok\n");
    for c in &v.checks {
        let ours = fig(&c.name, &v.ours);
        // The PPL band is a few 1e-6 wide here: its bounds as ratios would all print 1.0000.
        let limit = if c.name.starts_with("PPL") {
            format!("|ln| <= {}", num(v.thresholds.max_abs_ln_ppl_ratio))
        } else {
            c.limit.clone()
        };
        out.push_str(&format!("{:<28} {:>12} {:>24}", c.name, ours, limit));
        for (_, s) in &v.llama_cpp_self {
            out.push_str(&format!(" | {}", fig(&c.name, s)));
        }
        out.push_str(&format!("  {}\n", ok_word(c.passed)));
    }
    for (n, s) in &v.half_precision {
        out.push_str(&format!(
            "context, not a limit: llama.cpp with {n}: mean KLD {}, same top-1 {:.2}%\n",
            num(s.mean_kld),
            s.same_top1_percent
        ));
    }
    out.push_str(&format!(
        "perplexity: ours {:.6}, llama.cpp {:.6} over {} positions\nverdict: {}",
        v.ours.ppl,
        v.ours.reference_ppl,
        v.ours.positions,
        if v.passed { "PASSED" } else { "FAILED" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_kld_is_zero_for_equal_and_positive_otherwise() {
        let p = log_softmax(&[1.0, 2.0, 3.0]);
        assert_eq!(full_kld(&p, &p), 0.0);
        let q = log_softmax(&[1.0, 2.0, 3.1]);
        let k = full_kld(&p, &q);
        // By hand: sum p (ln p - ln q).
        let want: f64 = p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum();
        assert!(k > 0.0 && (k - want).abs() < 1e-15);
    }

    #[test]
    fn a_file_that_is_not_llama_logits_is_refused_in_one_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.logits");
        std::fs::write(&p, b"MBLOGIT1\x02\0\0\0\x02\0\0\0abc").unwrap();
        let e = FullLogits::load(&p, "x").unwrap_err().to_string();
        assert!(e.contains("does not match its header"), "{e}");
        std::fs::write(&p, b"nonsense").unwrap();
        let e = FullLogits::load(&p, "x").unwrap_err().to_string();
        assert!(
            e.contains("not a llama-logits file") && !e.contains('\n'),
            "{e}"
        );
        let mut ok = b"MBLOGIT1\x02\0\0\0\x01\0\0\0".to_vec();
        ok.extend(1.0f32.to_le_bytes());
        ok.extend(2.0f32.to_le_bytes());
        std::fs::write(&p, ok).unwrap();
        let l = FullLogits::load(&p, "x").unwrap();
        assert_eq!((l.n_vocab, l.n_rows, l.row(0)), (2, 1, &[1.0f32, 2.0][..]));
    }
}
