//! The quality gate's verdicts, kept beside the build (target/modelbench-quality/) so
//! generation records of the same model can carry them (MLPerf pairs speed with accuracy).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub model: String,
    pub passed: bool,
    pub perplexity: f64,
    pub perplexity_threshold: f64,
    pub corpus: String,
    pub golden_prompts_matched: usize,
    pub golden_prompts: usize,
    pub checked_at: String,
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
