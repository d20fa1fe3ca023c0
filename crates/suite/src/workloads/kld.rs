//! The KL-divergence quality gate (issue 29, item 3), the way llama.cpp measures a quantized
//! model against its base: over every position llama-perplexity scores on a short corpus, the
//! KL divergence from llama.cpp's next-token distribution to ours, its 99th percentile, how
//! often the two agree on the most likely token, and the perplexity ratio (ours/llama.cpp's).
//!
//! The reference (`scripts/llama-cpp-kld-reference.sh`, never this code) stores llama.cpp's
//! top-K log-probabilities per position from its f32-KV-cache run (the run closest to an f32
//! implementation), plus its default run (f16 KV cache, flash attention) at the same ids. The
//! thresholds are llama.cpp against itself (default vs f32-KV, the same estimator as ours) times
//! `judge::kld::SLACK`; they are read from the reference, never from the implementation
//! checked. This module runs the model and computes the figures; the limits and the checks are
//! the judge's (`judge::kld`).
//!
//! KL divergence from top-K: with P the reference's top-K probabilities p_1..p_K and the rest
//! p_r = 1 - sum p_i, and Q ours at the same ids (q_r = 1 - sum q_i),
//! KLD = sum p_i ln(p_i/q_i) + p_r ln(p_r/q_r): the divergence of the (K+1)-outcome
//! coarse-graining, a lower bound of the full-vocabulary value (llama.cpp's own
//! `--kl-divergence` over the whole vocabulary is kept in the reference to compare).

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::engine::perplexity::{for_each_scored_position, OnProgress};
use crate::error::{Error, Result};
use crate::judge::kld::{decide, num, ok_word, Check, Decision, KldStats, Thresholds};
use crate::models::CausalLm;

/// Probabilities below this are taken as this (a rest mass that rounds to zero).
const FLOOR: f64 = 1e-10;

#[derive(Debug, Clone, Deserialize)]
pub struct KldReference {
    pub format: String,
    pub provenance: serde_json::Value,
    pub n_ctx: usize,
    pub n_chunks: usize,
    pub n_vocab: usize,
    pub top_k: usize,
    pub bos_id: Option<u32>,
    pub add_bos: bool,
    pub token_ids: Vec<u32>,
    pub reference: RefRun,
    pub llama_cpp_default: DefaultRun,
    pub llama_cpp_self_comparison: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefRun {
    pub settings: serde_json::Value,
    pub ppl: f64,
    pub top_ids: Vec<Vec<u32>>,
    pub top_logprobs: Vec<Vec<f64>>,
    pub target_logprob: Vec<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DefaultRun {
    pub settings: serde_json::Value,
    pub ppl: f64,
    pub logprobs_at_reference_top_ids: Vec<Vec<f64>>,
    pub target_logprob: Vec<f64>,
    pub top1_id: Vec<u32>,
}

/// The verdict of the KL-divergence gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KldVerdict {
    pub model: String,
    pub implementation: String,
    pub passed: bool,
    pub ours: KldStats,
    /// llama.cpp's default run against its f32-KV run, by the same estimator.
    pub llama_cpp_self: KldStats,
    pub thresholds: Thresholds,
    /// Each check: name, value, limit, passed.
    pub checks: Vec<Check>,
    pub reference: String,
    pub corpus: String,
    pub checked_at: String,
}

impl KldReference {
    pub fn load(path: &Path) -> Result<KldReference> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let r: KldReference = serde_json::from_str(&text).map_err(|e| {
            Error::Report(format!(
                "{}: not a KL-divergence reference ({e}); make it with scripts/llama-cpp-kld-reference.sh",
                path.display()
            ))
        })?;
        r.check().map_err(|e| {
            Error::Report(format!(
                "{}: {e}; make it again with scripts/llama-cpp-kld-reference.sh",
                path.display()
            ))
        })?;
        Ok(r)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.format != "modelbench-kld-reference/1" {
            return Err(format!("unknown format `{}`", self.format));
        }
        let n = self.positions();
        let r = &self.reference;
        let d = &self.llama_cpp_default;
        if self.n_ctx < 4 || self.token_ids.len() != self.n_chunks * self.n_ctx {
            return Err("token_ids is not n_chunks x n_ctx ids".into());
        }
        for (what, len) in [
            ("reference.top_ids", r.top_ids.len()),
            ("reference.top_logprobs", r.top_logprobs.len()),
            ("reference.target_logprob", r.target_logprob.len()),
            (
                "llama_cpp_default.logprobs_at_reference_top_ids",
                d.logprobs_at_reference_top_ids.len(),
            ),
            ("llama_cpp_default.target_logprob", d.target_logprob.len()),
            ("llama_cpp_default.top1_id", d.top1_id.len()),
        ] {
            if len != n {
                return Err(format!("{what} has {len} positions, expected {n}"));
            }
        }
        let rows_ok = r
            .top_ids
            .iter()
            .zip(&r.top_logprobs)
            .zip(&d.logprobs_at_reference_top_ids)
            .all(|((a, b), c)| {
                a.len() == self.top_k && b.len() == self.top_k && c.len() == self.top_k
            });
        if !rows_ok {
            return Err(format!(
                "a position does not have top_k = {} entries",
                self.top_k
            ));
        }
        Ok(())
    }

    /// Scored positions: n_ctx - n_ctx/2 - 1 per chunk.
    pub fn positions(&self) -> usize {
        self.n_chunks * (self.n_ctx - self.n_ctx / 2 - 1)
    }

    /// llama.cpp's default run against its f32-KV run, by the gate's own estimator.
    pub fn self_comparison(&self) -> KldStats {
        let d = &self.llama_cpp_default;
        let rows: Vec<Row> = (0..self.positions())
            .map(|i| Row {
                kld: topk_kld(
                    &self.reference.top_logprobs[i],
                    &d.logprobs_at_reference_top_ids[i],
                ),
                same_top1: d.top1_id[i] == self.reference.top_ids[i][0],
                target_logprob: d.target_logprob[i],
                non_finite: !d.target_logprob[i].is_finite()
                    || d.logprobs_at_reference_top_ids[i]
                        .iter()
                        .any(|x| !x.is_finite()),
            })
            .collect();
        stats(&rows, &self.reference.target_logprob)
    }

    /// The gate's limits: llama.cpp's self-comparison with `SLACK` and `PPL_SIGMAS`
    /// (`judge::kld::thresholds`).
    pub fn thresholds(&self) -> Thresholds {
        crate::judge::kld::thresholds(&self.self_comparison(), self.top_k)
    }

    /// "llama.cpp <commit> (llama-cpp-python <version>), <date>".
    pub fn source(&self) -> String {
        super::quality::source_of(&self.provenance)
    }
}

/// One scored position's figures.
pub(crate) struct Row {
    pub kld: f64,
    pub same_top1: bool,
    pub target_logprob: f64,
    pub non_finite: bool,
}

/// KL(P || Q) of the (K+1)-outcome coarse-graining: P's top-K and the rest of its mass, Q at
/// the same ids and the rest of its mass.
pub fn topk_kld(ref_logprobs: &[f64], logprobs: &[f64]) -> f64 {
    let mut kld = 0.0;
    let (mut p_sum, mut q_sum) = (0.0, 0.0);
    for (&lp, &lq) in ref_logprobs.iter().zip(logprobs) {
        let p = lp.exp();
        p_sum += p;
        q_sum += lq.exp();
        kld += p * (lp - lq);
    }
    let p_r = (1.0 - p_sum).max(FLOOR);
    let q_r = (1.0 - q_sum).max(FLOOR);
    kld + p_r * (p_r.ln() - q_r.ln())
}

pub(crate) fn stats(rows: &[Row], reference_target: &[f64]) -> KldStats {
    let n = rows.len().max(1) as f64;
    let mut k: Vec<f64> = rows.iter().map(|r| r.kld).collect();
    k.sort_by(f64::total_cmp);
    let mean_kld = k.iter().sum::<f64>() / n;
    // Nearest rank, as llama.cpp reads its sorted values (index 0.99 x (n-1), rounded).
    let rank = |q: f64| {
        k.get(((k.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let p99 = rank(0.99);
    let d: Vec<f64> = rows
        .iter()
        .zip(reference_target)
        .map(|(r, t)| t - r.target_logprob)
        .collect();
    let ln_ratio = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - ln_ratio).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let nll = -rows.iter().map(|r| r.target_logprob).sum::<f64>() / n;
    let ref_nll = -reference_target.iter().sum::<f64>() / n;
    KldStats {
        positions: rows.len(),
        mean_kld,
        kld_p99: p99,
        kld_p999: rank(0.999),
        kld_max: k.last().copied().unwrap_or(f64::NAN),
        same_top1_percent: 100.0 * rows.iter().filter(|r| r.same_top1).count() as f64 / n,
        ppl: nll.exp(),
        reference_ppl: ref_nll.exp(),
        ppl_ratio: ln_ratio.exp(),
        ln_ppl_ratio: ln_ratio,
        ln_ppl_ratio_se: (var / n).sqrt(),
        non_finite_positions: rows.iter().filter(|r| r.non_finite).count(),
    }
}

/// Runs the model over the reference's positions (llama-perplexity's chunks of its own ids)
/// and judges it against the thresholds.
pub fn run_kld_gate(
    model: &mut dyn CausalLm,
    label: &str,
    implementation: &str,
    reference: &KldReference,
    reference_name: &str,
    progress: OnProgress<'_>,
) -> Result<KldVerdict> {
    let vocab = model.meta().vocab;
    if reference.n_vocab > vocab {
        return Err(Error::Report(format!(
            "{label}: the model's vocabulary ({vocab}) is smaller than the reference's ({}): not the same model",
            reference.n_vocab
        )));
    }
    let per_chunk = reference.n_ctx - reference.n_ctx / 2 - 1;
    let bos = if reference.add_bos {
        reference.bos_id
    } else {
        None
    };
    let mut rows = Vec::with_capacity(reference.positions());
    for_each_scored_position(
        model,
        &reference.token_ids,
        reference.n_ctx,
        bos,
        reference.n_chunks,
        progress,
        |k, j, logits, target| {
            let i = k * per_chunk + (j - reference.n_ctx / 2);
            let l = logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
            // llama.cpp's vocabulary size counts; extra rows of ours (padding) do not.
            let l = &l[..reference.n_vocab.min(l.len())];
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            let lp = |id: u32| {
                l.get(id as usize)
                    .map(|&x| x as f64 - lse)
                    .unwrap_or(f64::NEG_INFINITY)
            };
            let ids = &reference.reference.top_ids[i];
            let ours: Vec<f64> = ids.iter().map(|&id| lp(id)).collect();
            let argmax = l
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| {
                    if x > b.1 {
                        (i, x)
                    } else {
                        b
                    }
                })
                .0;
            rows.push(Row {
                kld: topk_kld(&reference.reference.top_logprobs[i], &ours),
                same_top1: argmax as u32 == ids[0],
                target_logprob: lp(target),
                non_finite: l.iter().any(|x| !x.is_finite()),
            });
            Ok(())
        },
    )?;
    let ours = stats(&rows, &reference.reference.target_logprob);
    let llama_cpp_self = reference.self_comparison();
    let t = reference.thresholds();
    let Decision { checks, passed } = decide(&ours, &t);
    Ok(KldVerdict {
        model: label.into(),
        implementation: implementation.into(),
        passed,
        ours,
        llama_cpp_self,
        thresholds: t,
        checks,
        reference: format!("{reference_name}: {}", reference.source()),
        corpus: format!(
            "{} ({} chunks of {}, {} scored positions, llama.cpp's token ids)",
            reference.provenance["corpus"]["path"]
                .as_str()
                .unwrap_or("?"),
            reference.n_chunks,
            reference.n_ctx,
            reference.positions()
        ),
        checked_at: crate::util::time::now_rfc3339(),
    })
}

/// The command that makes llama.cpp's reference for `gguf` into `out`
/// (scripts/llama-cpp-kld-reference.sh: llama-perplexity `--kl-divergence-base`, two runs, of
/// the llama.cpp build in `llama_cpp` over `corpus` in `chunks` windows of `n_ctx`).
pub fn reference_command(
    gguf: &Path,
    out: &Path,
    llama_cpp: &Path,
    corpus: &Path,
    (n_ctx, chunks): (usize, usize),
) -> Command {
    let mut c = Command::new("bash");
    c.arg(crate::util::root().join("scripts/llama-cpp-kld-reference.sh"))
        .arg("--model")
        .arg(gguf)
        .arg("--out")
        .arg(out)
        .arg("--llama-cpp")
        .arg(llama_cpp)
        .arg("--corpus")
        .arg(corpus)
        .args(["--n-ctx", &n_ctx.to_string()])
        .args(["--chunks", &chunks.to_string()]);
    c
}

/// One row of the verdict's table: a check with ours, llama.cpp against itself and the limit,
/// each as printed.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub check: String,
    pub ours: String,
    pub llama_cpp_self: String,
    pub limit: String,
    pub passed: bool,
}

impl TableRow {
    /// The row in words: `mean KLD 3.891e-7 (llama.cpp against itself 2.454e-7, limit <=
    /// 1.000e-4)`.
    pub fn words(&self) -> String {
        format!(
            "{} {} (llama.cpp against itself {}, limit {})",
            self.check, self.ours, self.llama_cpp_self, self.limit
        )
    }
}

/// The rows of the verdict's table, one per check.
pub fn table_rows(v: &KldVerdict) -> Vec<TableRow> {
    let s = &v.llama_cpp_self;
    let t = &v.thresholds;
    let rows = [
        (s.mean_kld, format!("<= {}", num(t.max_mean_kld))),
        (s.kld_p99, format!("<= {}", num(t.max_kld_p99))),
        (s.kld_p999, format!("<= {}", num(t.max_kld_p999))),
        (
            s.same_top1_percent,
            format!(">= {:.2}", t.min_same_top1_percent),
        ),
        (
            s.ppl_ratio,
            format!(
                "{:.5} .. {:.5}",
                (-t.max_abs_ln_ppl_ratio).exp(),
                t.max_abs_ln_ppl_ratio.exp()
            ),
        ),
        (s.non_finite_positions as f64, "= 0".to_string()),
    ];
    v.checks
        .iter()
        .zip(rows)
        .map(|(c, (sv, limit))| {
            let f = |x: f64| {
                if c.name.starts_with("same") {
                    format!("{x:.2}")
                } else if c.name.starts_with("non-finite") {
                    format!("{x:.0}")
                } else {
                    num(x)
                }
            };
            TableRow {
                check: c.name.clone(),
                ours: f(c.value),
                llama_cpp_self: f(sv),
                limit,
                passed: c.passed,
            }
        })
        .collect()
}

/// The verdict as a table: one row per check with ours, llama.cpp against itself and the limit.
pub fn table(v: &KldVerdict) -> String {
    let mut out = format!(
        "{:<28} {:>12} {:>16} {:>22} {:>4}\n",
        "check", "ours", "llama.cpp self", "limit", "ok"
    );
    for r in table_rows(v) {
        out.push_str(&format!(
            "{:<28} {:>12} {:>16} {:>22} {:>4}\n",
            r.check,
            r.ours,
            r.llama_cpp_self,
            r.limit,
            ok_word(r.passed)
        ));
    }
    out.push_str(&format!(
        "perplexity: ours {:.4}, llama.cpp (f32 KV) {:.4} over {} positions\nverdict: {}",
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
    fn topk_kld_is_zero_for_equal_and_grows_with_difference() {
        let p = [(0.5f64).ln(), (0.3f64).ln()];
        assert!(topk_kld(&p, &p).abs() < 1e-12);
        let q = [(0.3f64).ln(), (0.5f64).ln()];
        let k = topk_kld(&p, &q);
        // 0.5 ln(5/3) + 0.3 ln(3/5), rest equal (0.2 both).
        assert!((k - (0.5 * (5.0f64 / 3.0).ln() + 0.3 * (0.6f64).ln())).abs() < 1e-12);
        // More mass moved to the rest: a larger divergence.
        let q2 = [(0.2f64).ln(), (0.1f64).ln()];
        assert!(topk_kld(&p, &q2) > k);
    }
}
