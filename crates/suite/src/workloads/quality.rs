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

    /// The near-tie margin, measured from llama.cpp against itself: the largest top-1 minus
    /// top-2 logit margin (of either run) at a step where llama.cpp's two settings (f32 KV cache
    /// without flash attention; its f16-cache, flash-attention default) pick different tokens,
    /// and at least `judge::quality::TIE_MARGIN` ([`crate::judge::quality::tie_margin`]). A
    /// margin llama.cpp's own settings can overturn is within the numerical noise of a correct
    /// implementation. Taken from the reference file only, never from the implementation being
    /// checked.
    pub fn tie_margin(&self) -> f64 {
        judge::tie_margin(self.greedy.prompts.iter().filter_map(|p| {
            let d = p.llama_cpp_defaults.as_ref()?;
            let i = agreement(&p.generated_token_ids, &d.generated_token_ids);
            let a = p.top1_minus_top2_logit.get(i)?;
            let b = d.top1_minus_top2_logit.get(i)?;
            Some(a.max(*b))
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

/// Runs the gate on a loaded model: llama-perplexity's chunked perplexity on the reference's
/// own corpus ids (the model's function, independent of tokenizers), and greedy continuations
/// of the reference's prompt ids. A prompt's agreement is the longer of its agreement with
/// llama.cpp's default run and with its f32-KV-cache run (the two differ from each other at
/// near-ties of the top two logits).
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
        if let Some(d) = &rp.llama_cpp_defaults {
            alts.push((&d.generated_token_ids, &d.top1_minus_top2_logit));
        }
        let judged: Vec<(usize, Option<f64>)> = alts
            .into_iter()
            .map(|(ids, margins)| {
                let agree = agreement(&t.tokens, ids);
                (agree, near_tie(agree, n, margins, tie_margin))
            })
            .collect();
        let (agree, tie_margin) = best_agreement(&judged, n).expect("one run");
        prompts.push(PromptAgreement {
            prompt: rp.prompt.clone(),
            agree,
            of: n,
            tie_margin,
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
    fn tie_margin_is_where_llama_cpp_disagrees_with_itself() {
        // Runs part at step 2: margins 0.01 and 0.3 there; the larger counts.
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
        assert_eq!(r.tie_margin(), 0.3);
        // Runs that never part: the floor.
        let r = reference(serde_json::json!([prompt(
            &[1, 2],
            &[0.5, 0.5],
            &[1, 2],
            &[0.4, 0.6]
        )]));
        assert_eq!(r.tie_margin(), judge::TIE_MARGIN);
    }
}
