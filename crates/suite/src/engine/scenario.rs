//! The seven generation scenarios and the suite tiers of the original benchmark log. Data,
//! not code paths: every scenario runs through the same engine.

use serde::Serialize;

use crate::engine::sampling::SamplingParams;
use crate::error::{Error, Result};
use crate::models::sources::{resolve, ModelRef, Resolved};
use crate::models::Arch;

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub sampling: SamplingParams,
    /// End-to-end pipeline: tokenizing the prompt text and streaming detokenization are timed.
    pub pipeline: bool,
    pub purpose: &'static str,
}

const SAMPLED: SamplingParams = SamplingParams {
    temperature: 0.8,
    top_k: Some(50),
    top_p: Some(0.9),
    repetition_penalty: None,
    repeat_last_n: 64,
};

const FULL_PIPE: SamplingParams = SamplingParams {
    repetition_penalty: Some(1.1),
    ..SAMPLED
};

/// (name, prompt, generated, sampling, pipeline, purpose) as in the original benchmark log's table.
const TABLE: [(&str, usize, usize, SamplingParams, bool, &str); 7] = [
    (
        "short",
        64,
        64,
        SamplingParams::GREEDY,
        false,
        "Quick Q&A, baseline latency",
    ),
    (
        "medium",
        256,
        256,
        SamplingParams::GREEDY,
        false,
        "Standard chat (headline number)",
    ),
    (
        "prefill",
        1024,
        64,
        SamplingParams::GREEDY,
        false,
        "Isolates prefill performance",
    ),
    (
        "decode",
        64,
        512,
        SamplingParams::GREEDY,
        false,
        "Isolates decode performance",
    ),
    (
        "long",
        1024,
        512,
        SamplingParams::GREEDY,
        false,
        "Stress test, longest sequence",
    ),
    (
        "sampled",
        256,
        256,
        SAMPLED,
        false,
        "Sampling transform overhead",
    ),
    (
        "full-pipe",
        256,
        256,
        FULL_PIPE,
        true,
        "All transforms active, tokenize + detokenize",
    ),
];

pub const SCENARIO_NAMES: &str =
    "short, medium, prefill, decode, long, sampled, full-pipe, long-8k, long-16k";

/// Long-context scenarios (8K-16K tokens, batch 1): in no tier, run only when named
/// (`MODELBENCH_SCENARIOS=long-8k`); a memory preflight ([`crate::engine::preflight`]) checks
/// them against the machine before any weights load.
const LONG: [(&str, usize, usize, &str); 2] = [
    ("long-8k", 8192, 16, "Long context: 8K-token prompt"),
    ("long-16k", 16384, 16, "Long context: 16K-token prompt"),
];

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        TABLE
            .iter()
            .map(|&(name, p, g, sampling, pipeline, purpose)| Scenario {
                name: name.to_string(),
                prompt_tokens: p,
                new_tokens: g,
                sampling,
                pipeline,
                purpose,
            })
            .collect()
    }

    /// The long-context scenarios (in no tier).
    pub fn long() -> Vec<Scenario> {
        LONG.iter()
            .map(|&(name, p, g, purpose)| Scenario {
                name: name.to_string(),
                prompt_tokens: p,
                new_tokens: g,
                sampling: SamplingParams::GREEDY,
                pipeline: false,
                purpose,
            })
            .collect()
    }

    pub fn by_name(name: &str) -> Result<Scenario> {
        Scenario::all()
            .into_iter()
            .chain(Scenario::long())
            .find(|s| s.name == name.trim())
            .ok_or_else(|| Error::Scenario {
                scenario: name.to_string(),
                model: "-".into(),
                reason: format!("unknown scenario (expected one of {SCENARIO_NAMES})"),
            })
    }

    /// An ad-hoc scenario (CLI `--prompt-tokens/--max-new-tokens/...`).
    pub fn custom(prompt_tokens: usize, new_tokens: usize, sampling: SamplingParams) -> Scenario {
        Scenario {
            name: format!("custom-p{prompt_tokens}-g{new_tokens}"),
            prompt_tokens,
            new_tokens,
            sampling,
            pipeline: false,
            purpose: "Ad-hoc run",
        }
    }

    /// Positions the KV cache must hold.
    pub fn context_needed(&self) -> usize {
        self.prompt_tokens + self.new_tokens
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Quick,
    Standard,
    Full,
}

impl Tier {
    pub const ALLOWED: &'static str = "quick, standard, full";

    pub fn parse(s: &str) -> Option<Tier> {
        match s.trim() {
            "quick" => Some(Tier::Quick),
            "standard" => Some(Tier::Standard),
            "full" => Some(Tier::Full),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Quick => "quick",
            Tier::Standard => "standard",
            Tier::Full => "full",
        }
    }

    pub fn scenario_names(self) -> &'static [&'static str] {
        match self {
            Tier::Quick => &["short", "medium"],
            Tier::Standard => &["short", "medium", "prefill", "decode", "sampled"],
            Tier::Full => &[
                "short",
                "medium",
                "prefill",
                "decode",
                "long",
                "sampled",
                "full-pipe",
            ],
        }
    }

    pub fn scenarios(self) -> Vec<Scenario> {
        self.scenario_names()
            .iter()
            .map(|n| Scenario::by_name(n).expect("tier names are scenario names"))
            .collect()
    }
}

/// Resolves a reference (no weights are read) and checks that every scenario fits the
/// model's context, so an impossible plan fails before anything heavy happens.
pub fn prepare(label: &str, r: &ModelRef, scenarios: &[Scenario]) -> Result<Resolved> {
    let res = resolve(r, label)?;
    let max_context = match &res.weights {
        crate::models::Weights::Gguf(p) => {
            let g = res.gguf_source()?;
            let meta = crate::models::sources::gguf::describe_impl(p, &g.header, None, g.imp)?;
            meta.max_context.min(meta.built_context)
        }
        _ => Arch::from_json(res.family, &res.config, &res.config_path)?.max_context(),
    };
    for s in scenarios {
        if s.context_needed() > max_context {
            return Err(Error::Scenario {
                scenario: s.name.clone(),
                model: label.to_string(),
                reason: format!(
                    "needs {} positions ({} prompt + {} new) but the model's max_position_embeddings is {}",
                    s.context_needed(),
                    s.prompt_tokens,
                    s.new_tokens,
                    max_context
                ),
            });
        }
        if s.pipeline {
            if let Err(e) = res.tokenizer_path() {
                return Err(Error::Scenario {
                    scenario: s.name.clone(),
                    model: label.to_string(),
                    reason: format!("the pipeline scenario needs a tokenizer: {e}"),
                });
            }
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_seed() {
        let s = Scenario::by_name("long").unwrap();
        assert_eq!((s.prompt_tokens, s.new_tokens), (1024, 512));
        let f = Scenario::by_name("full-pipe").unwrap();
        assert!(f.pipeline && f.sampling.repetition_penalty == Some(1.1));
        assert_eq!(Tier::Full.scenarios().len(), 7);
        assert_eq!(Tier::Standard.scenarios().len(), 5);
        assert!(Scenario::by_name("nope").is_err());
        let l = Scenario::by_name("long-16k").unwrap();
        assert_eq!((l.prompt_tokens, l.new_tokens), (16384, 16));
        for t in [Tier::Quick, Tier::Standard, Tier::Full] {
            assert!(t.scenario_names().iter().all(|n| !n.starts_with("long-")));
        }
        assert!(Tier::parse("huge").is_none());
    }
}
