//! The quality gate: a model's perplexity and greedy continuations against reference values
//! from an independent implementation (llama.cpp; fixtures/reference/, made by
//! scripts/llama-cpp-reference.sh, never by this code). A speed number counts only for a model
//! that computes the right function. This module runs the model; the rules and limits are the
//! judge's (`judge::quality`).

use std::path::Path;

use serde::Deserialize;

use crate::engine::generate::{generate, Prompt};
use crate::engine::perplexity::chunked_perplexity;
use crate::engine::sampling::{Sampler, SamplingParams};
use crate::error::{Error, Result};
use crate::judge::quality::{
    self as judge, best_agreement, near_tie, MIN_AGREEMENT, PPL_TOLERANCE,
};
use crate::models::CausalLm;
use crate::output::quality::{PromptAgreement, Verdict};

/// Which llama.cpp made a reference, from the reference file's `provenance`: "llama.cpp
/// <commit> (llama-cpp-python <version> sdist), <date>".
pub fn source_of(p: &serde_json::Value) -> String {
    format!(
        "llama.cpp {} (llama-cpp-python {} sdist), {}",
        p["llama_cpp_commit"].as_str().unwrap_or("?"),
        p["llama_cpp_python_version"].as_str().unwrap_or("?"),
        p["date"].as_str().unwrap_or("?")
    )
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    pub provenance: serde_json::Value,
    pub corpus: RefCorpus,
    pub perplexity: RefPerplexity,
    pub greedy: RefGreedy,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefCorpus {
    pub token_ids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefPerplexity {
    pub runs: Vec<RefPplRun>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefPplRun {
    pub n_ctx: usize,
    pub ppl: f64,
    #[serde(default)]
    pub settings: serde_json::Value,
}

impl RefPplRun {
    /// llama.cpp with an f32 KV cache and no flash attention: the run closest to candle's f32.
    fn is_f32(&self) -> bool {
        self.settings["kv_cache"] == "f32"
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefGreedy {
    pub n_predict: usize,
    pub prompts: Vec<RefPrompt>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefPrompt {
    pub prompt: String,
    pub prompt_token_ids: Vec<u32>,
    pub generated_token_ids: Vec<u32>,
    /// llama.cpp's top-1 minus top-2 logit at every step.
    #[serde(default)]
    pub top1_minus_top2_logit: Vec<f64>,
    /// The same prompt under llama.cpp's default settings (f16 KV cache, flash attention);
    /// the top-level ids are from an f32 KV cache without flash attention.
    #[serde(default)]
    pub llama_cpp_defaults: Option<RefRun>,
    /// The top-level settings on the GGUF's F32 rewrite (every tensor dequantized exactly):
    /// f32 activations in the matrix products instead of ggml's 8-bit quantized ones.
    /// Absent from references written before 2026-11-29 (then the default run alone).
    #[serde(default)]
    pub llama_cpp_f32_weights: Option<RefRun>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefRun {
    pub generated_token_ids: Vec<u32>,
    #[serde(default)]
    pub top1_minus_top2_logit: Vec<f64>,
}

impl Reference {
    pub fn load(path: &Path) -> Result<Reference> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Report(format!(
                "{}: not a reference file ({e}); regenerate it with scripts/llama-cpp-reference.sh",
                path.display()
            ))
        })
    }

    /// The near-tie margin, measured from llama.cpp against itself: the largest movement of a
    /// step's top-1 minus top-2 logit margin between llama.cpp's f32-KV-cache run (without
    /// flash attention) and each other legitimate setting of the same prompt (its f16-cache,
    /// flash-attention default; the same weights as F32 tensors, i.e. f32 activations in the
    /// matrix products), while both runs see the same context, and the margins where they
    /// part ways ([`judge::margin_noise`]); at least `judge::quality::TIE_MARGIN`. A margin
    /// llama.cpp's own settings move by is within the numerical noise of a correct
    /// implementation. Taken from the reference file only, never from the implementation
    /// being checked.
    pub fn tie_margin(&self) -> f64 {
        judge::tie_margin(self.greedy.prompts.iter().flat_map(|p| {
            let base = (&p.generated_token_ids[..], &p.top1_minus_top2_logit[..]);
            [&p.llama_cpp_defaults, &p.llama_cpp_f32_weights]
                .into_iter()
                .flatten()
                .filter_map(move |r| {
                    judge::margin_noise(base, (&r.generated_token_ids, &r.top1_minus_top2_logit))
                })
        }))
    }

    /// "llama.cpp <commit> (llama-cpp-python <version> sdist), <date>".
    pub fn source(&self) -> String {
        source_of(&self.provenance)
    }
}

/// Leading tokens two sequences share.
pub fn agreement(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The model's argmax at each step of `reference` (one per reference token), fed the prompt and
/// then the reference's own tokens (teacher forcing), through the engine's forward path.
fn teacher_forced(model: &mut dyn CausalLm, prompt: &[u32], reference: &[u32]) -> Result<Vec<u32>> {
    model.reset()?;
    let mut out = Vec::with_capacity(reference.len());
    let mut pos = 0;
    let mut feed = prompt.to_vec();
    for &next in reference {
        let logits = crate::engine::generate::forward(model, &feed, pos)?;
        let logits: Vec<f32> = logits.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        out.push(crate::engine::sampling::argmax(&logits));
        pos += feed.len();
        feed = vec![next];
    }
    Ok(out)
}

/// Runs the gate on a loaded model: llama-perplexity's chunked perplexity on the reference's
/// own corpus ids (the model's function, independent of tokenizers), and greedy continuations
/// of the reference's prompt ids. A prompt's agreement is the best of its agreements with
/// llama.cpp's runs (f32 KV cache; its default f16 cache with flash attention; F32 weights),
/// which differ from each other at near-ties of the top two logits; and teacher-forced on the
/// f32-KV-cache run's tokens, every step that is not a near-tie must pick the same token.
pub fn run_gate(
    model: &mut dyn CausalLm,
    label: &str,
    implementation: &str,
    reference: &Reference,
    reference_name: &str,
) -> Result<Verdict> {
    let runs = &reference.perplexity.runs;
    let run = runs
        .iter()
        .filter(|r| r.is_f32())
        .min_by_key(|r| r.n_ctx)
        .or_else(|| runs.iter().min_by_key(|r| r.n_ctx))
        .ok_or_else(|| Error::Report("the reference has no perplexity run".into()))?;
    let bos = reference.corpus.token_ids.first().copied().unwrap_or(2);
    let p = chunked_perplexity(model, &reference.corpus.token_ids, run.n_ctx, Some(bos))?;
    let tie_margin = reference.tie_margin();
    let mut prompts = Vec::new();
    for rp in &reference.greedy.prompts {
        let n = reference.greedy.n_predict;
        let mut sampler = Sampler::new(SamplingParams::GREEDY, 0);
        let t = generate(
            model,
            &Prompt::Ids(rp.prompt_token_ids.clone()),
            n,
            &mut sampler,
            None,
        )?;
        // Against each llama.cpp setting: leading agreement, and whether the first difference
        // falls on that run's near-tie; the best of them counts.
        let mut alts = vec![(&rp.generated_token_ids, &rp.top1_minus_top2_logit)];
        for d in [&rp.llama_cpp_defaults, &rp.llama_cpp_f32_weights]
            .into_iter()
            .flatten()
        {
            alts.push((&d.generated_token_ids, &d.top1_minus_top2_logit));
        }
        let judged: Vec<(usize, Option<f64>)> = alts
            .into_iter()
            .map(|(ids, margins)| {
                let agree = agreement(&t.tokens, ids);
                (agree, near_tie(agree, n, margins, tie_margin))
            })
            .collect();
        let (agree, at_tie) = best_agreement(&judged, n).expect("one run");
        // Fed llama.cpp's own tokens: every step is judged, not only those before the first
        // difference.
        let reference_ids = &rp.generated_token_ids[..n.min(rp.generated_token_ids.len())];
        let forced = teacher_forced(model, &rp.prompt_token_ids, reference_ids)?;
        prompts.push(PromptAgreement {
            prompt: rp.prompt.clone(),
            agree,
            of: n,
            tie_margin: at_tie,
            forced_agree: Some(
                forced
                    .iter()
                    .zip(reference_ids)
                    .filter(|(a, b)| a == b)
                    .count(),
            ),
            confident_misses: judge::confident_misses(
                &forced,
                reference_ids,
                &rp.top1_minus_top2_logit,
                tie_margin,
            ),
        });
    }
    let perplexity_ok = judge::perplexity_ok(p.perplexity, run.ppl);
    let passed = judge::passed(perplexity_ok, prompts.iter().map(|p| p.ok(MIN_AGREEMENT)));
    Ok(Verdict {
        model: label.into(),
        implementation: implementation.into(),
        passed,
        reference: format!("{reference_name}: {}", reference.source()),
        corpus: "fixtures/corpus/kjv-genesis-1-3.txt (llama.cpp's token ids)".into(),
        n_ctx: run.n_ctx,
        perplexity: p.perplexity,
        reference_perplexity: run.ppl,
        perplexity_tolerance: PPL_TOLERANCE,
        perplexity_ok,
        prompts,
        min_agreement: MIN_AGREEMENT,
        near_tie_margin: Some(tie_margin),
        checked_at: crate::util::time::now_rfc3339(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(prompts: serde_json::Value) -> Reference {
        serde_json::from_value(serde_json::json!({
            "provenance": {}, "corpus": {"token_ids": [2, 5]},
            "perplexity": {"runs": []},
            "greedy": {"n_predict": 4, "prompts": prompts}
        }))
        .unwrap()
    }

    fn prompt(a: &[u32], ma: &[f64], b: &[u32], mb: &[f64]) -> serde_json::Value {
        serde_json::json!({"prompt": "p", "prompt_token_ids": [2],
            "generated_token_ids": a, "top1_minus_top2_logit": ma,
            "llama_cpp_defaults": {"generated_token_ids": b, "top1_minus_top2_logit": mb}})
    }

    #[test]
    fn tie_margin_is_how_far_llama_cpp_moves_its_own_margins() {
        // Prompt 1: the runs part at step 2 (margins 0.01 and 0.3 there; 0.1 moves before it);
        // prompt 2: the runs never part, step 1's margin moves by 0.5.
        let r = reference(serde_json::json!([
            prompt(
                &[1, 2, 3, 4],
                &[1.0, 2.0, 0.01, 1.0],
                &[1, 2, 9, 9],
                &[1.1, 1.9, 0.3, 1.0]
            ),
            prompt(
                &[1, 2, 3, 4],
                &[5.0, 0.2, 0.1, 0.1],
                &[1, 2, 3, 4],
                &[5.0, 0.7, 0.1, 0.1]
            ),
        ]));
        assert!((r.tie_margin() - 0.5).abs() < 1e-12, "{}", r.tie_margin());
        // Without prompt 2, the parting margin counts.
        let r = reference(serde_json::json!([prompt(
            &[1, 2, 3, 4],
            &[1.0, 2.0, 0.01, 1.0],
            &[1, 2, 9, 9],
            &[1.1, 1.9, 0.3, 1.0]
        )]));
        assert_eq!(r.tie_margin(), 0.3);
        // The F32-weights run counts like the default one.
        let mut p = prompt(&[1, 2], &[0.5, 0.5], &[1, 2], &[0.5, 0.5]);
        p["llama_cpp_f32_weights"] =
            serde_json::json!({"generated_token_ids": [1, 2], "top1_minus_top2_logit": [0.5, 1.5]});
        let r = reference(serde_json::json!([p]));
        assert_eq!(r.tie_margin(), 1.0);
        // Runs that hardly move: the floor.
        let r = reference(serde_json::json!([prompt(
            &[1, 2],
            &[0.5, 0.5],
            &[1, 2],
            &[0.5, 0.51]
        )]));
        assert_eq!(r.tie_margin(), judge::TIE_MARGIN);
    }
}
