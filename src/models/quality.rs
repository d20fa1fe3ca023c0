//! The quality gate's verdicts, kept beside the build (target/modelbench-quality/) so
//! generation records of the same model can carry them (MLPerf pairs speed with accuracy).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The verdict of a quality gate against an independent reference (llama.cpp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub model: String,
    /// Which implementation ran (see ModelMeta::implementation).
    #[serde(default)]
    pub implementation: String,
    pub passed: bool,
    /// What it was checked against: the reference file and its llama.cpp build.
    pub reference: String,
    pub corpus: String,
    /// llama-perplexity's windowing: chunk length.
    pub n_ctx: usize,
    pub perplexity: f64,
    pub reference_perplexity: f64,
    /// |ppl / reference - 1| allowed.
    pub perplexity_tolerance: f64,
    pub perplexity_ok: bool,
    /// Per prompt: greedy tokens agreeing with the reference before the first difference.
    pub prompts: Vec<PromptAgreement>,
    /// Every prompt must agree on at least this many tokens.
    pub min_agreement: usize,
    /// A first difference at a reference step with a smaller top-1/top-2 margin is a near-tie
    /// (measured from llama.cpp's own two settings; see the reference's `tie_margin`).
    #[serde(default)]
    pub near_tie_margin: Option<f64>,
    pub checked_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptAgreement {
    pub prompt: String,
    /// Leading tokens equal to the reference's.
    pub agree: usize,
    /// Tokens compared.
    pub of: usize,
    /// When the first difference falls on a near-tie of the reference: its top-1 minus top-2
    /// logit there.
    #[serde(default)]
    pub tie_margin: Option<f64>,
}

impl PromptAgreement {
    /// At least `min` leading tokens agree, or the first difference is at a reference near-tie.
    pub fn ok(&self, min: usize) -> bool {
        self.agree >= min.min(self.of) || self.tie_margin.is_some()
    }
}

fn dir() -> PathBuf {
    crate::util::fsio::target_dir().join("modelbench-quality")
}

fn file(model: &str) -> PathBuf {
    dir().join(format!("{}.json", model.replace(['/', ':', '@'], "_")))
}

pub fn save(v: &Verdict) -> crate::Result<()> {
    crate::util::fsio::atomic_write(
        &file(&v.model),
        serde_json::to_string_pretty(v).expect("json").as_bytes(),
    )
}

/// The last verdict for a model reference, if a gate ran for it.
pub fn load(model: &str) -> Option<Verdict> {
    serde_json::from_str(&std::fs::read_to_string(file(model)).ok()?).ok()
}

/// What a record says about the model's quality: the last gate verdict, or "not checked".
pub fn verdict_value(model: &str) -> serde_json::Value {
    match load(model) {
        Some(v) => serde_json::to_value(v).expect("verdict serialises"),
        None => serde_json::json!({
            "model": model,
            "status": "not checked",
            "why": "no quality gate has run for this model on this machine"
        }),
    }
}
