//! Plans: the validated form of the knobs (see [`super::knobs`]) for each bench, built with
//! the value parsers of [`super::values`] (re-exported here).

use std::time::Duration;

use candle_core::DType;

use crate::engine::scenario::{Scenario, Tier};
use crate::error::{Error, Result};
use crate::measure::device::DeviceSpec;
use crate::models::source::ModelRef;

use super::knobs;
pub use super::values::*;

/// The validated plan: models x scenarios x dtype x device.
#[derive(Debug, Clone)]
pub struct Plan {
    /// (label as written, parsed reference)
    pub models: Vec<(String, ModelRef)>,
    pub tier: Option<Tier>,
    pub scenarios: Vec<Scenario>,
    pub device: DeviceSpec,
    pub dtype: DType,
    pub seed: u64,
    pub min_measure: Duration,
    pub label: Option<String>,
    /// Attention backend (MODELBENCH_ATTENTION).
    pub attention: crate::models::attention::Attention,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// MODELBENCH_PEERS: whether the generation bench adds a llama.cpp row to its summary.
pub fn peers_row(lookup: Lookup) -> Result<bool> {
    Ok(knobs::get(lookup, "MODELBENCH_PEERS")
        .map(|v| crate::config::values::parse_bool(&v, "MODELBENCH_PEERS"))
        .transpose()?
        .unwrap_or(false))
}

impl Plan {
    /// From the environment, after every MODELBENCH_* variable has been validated.
    pub fn from_env() -> Result<Plan> {
        knobs::validate_env()?;
        Plan::from_lookup(&knobs::env)
    }

    /// From knob values given by `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: Lookup) -> Result<Plan> {
        let get = |k: &str| knobs::get(lookup, k);
        let models = parse_models(
            get("MODELBENCH_MODELS")
                .as_deref()
                .unwrap_or(DEFAULT_MODELS),
            "MODELBENCH_MODELS",
        )?;
        let (tier, scenarios) = match (get("MODELBENCH_SCENARIOS"), get("MODELBENCH_TIER")) {
            (Some(_), Some(t)) => {
                return Err(Error::knob(
                    "MODELBENCH_TIER",
                    t,
                    "set either MODELBENCH_TIER or MODELBENCH_SCENARIOS, not both",
                    Tier::ALLOWED,
                ))
            }
            (Some(list), None) => (None, parse_scenarios(&list)?),
            (None, t) => {
                let tier = parse_tier(t.as_deref().unwrap_or(DEFAULT_TIER))?;
                (Some(tier), tier.scenarios())
            }
        };
        let c = Common::from_lookup(lookup)?;
        peers_row(lookup)?; // validated with the plan; acted on by harness::llama_peer_rows
        Ok(Plan {
            models,
            tier,
            scenarios,
            device: c.device,
            dtype: c.dtype,
            seed: c.seed,
            min_measure: c.min_measure,
            label: c.label,
            attention: c.attention,
        })
    }

    /// The generation workload of scenario `s` on a loaded model under this plan (the one
    /// construction the benches and `modelbench run` share).
    pub fn generation<'a>(
        &self,
        loaded: &'a mut crate::models::loading::Loaded,
        s: &'a Scenario,
        calibration: Option<crate::measure::calibration::Calibration>,
    ) -> crate::workloads::generation::Generation<'a> {
        crate::workloads::generation::Generation {
            loaded,
            scenario: s,
            seed: self.seed,
            device: self.device,
            dtype: self.dtype,
            calibration,
        }
    }

    /// Positions the longest scenario needs: models are built for no more than this.
    pub fn context_cap(&self) -> usize {
        self.scenarios
            .iter()
            .map(Scenario::context_needed)
            .max()
            .unwrap_or(1)
    }
}

/// Knobs shared by every workload bench: device, dtype, seed, measurement window, label.
#[derive(Debug, Clone)]
pub struct Common {
    pub device: DeviceSpec,
    pub dtype: DType,
    pub seed: u64,
    pub min_measure: Duration,
    pub label: Option<String>,
    pub attention: crate::models::attention::Attention,
}

impl Common {
    pub fn from_env() -> Result<Common> {
        knobs::validate_env()?;
        Common::from_lookup(&knobs::env)
    }

    pub fn from_lookup(lookup: Lookup) -> Result<Common> {
        let get = |k: &str| knobs::get(lookup, k);
        let device = get("MODELBENCH_DEVICE")
            .map(|d| parse_device(&d, "MODELBENCH_DEVICE"))
            .transpose()?
            .unwrap_or(DeviceSpec::Cpu);
        let dtype = get("MODELBENCH_DTYPE")
            .map(|d| parse_dtype_knob(&d, "MODELBENCH_DTYPE"))
            .transpose()?
            .unwrap_or_else(|| device.default_dtype());
        Ok(Common {
            device,
            dtype,
            seed: get("MODELBENCH_SEED")
                .map(|s| parse_seed(&s, "MODELBENCH_SEED"))
                .transpose()?
                .unwrap_or(42),
            min_measure: get("MODELBENCH_MEASURE_SECS")
                .map(|s| parse_secs(&s, "MODELBENCH_MEASURE_SECS"))
                .transpose()?
                .unwrap_or(DEFAULT_MEASURE),
            label: get("MODELBENCH_LABEL")
                .map(|l| check_label(&l, "MODELBENCH_LABEL"))
                .transpose()?,
            attention: get("MODELBENCH_ATTENTION")
                .map(|v| parse_attention(&v, "MODELBENCH_ATTENTION"))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// The `depth` group: models x depths, a prefill of `prompt` and a decode of `gen` tokens
/// timed at each depth.
#[derive(Debug, Clone)]
pub struct DepthPlan {
    pub models: Vec<(String, ModelRef)>,
    pub depths: Vec<usize>,
    pub prompt: usize,
    pub gen: usize,
    pub common: Common,
}

impl DepthPlan {
    pub fn from_env() -> Result<DepthPlan> {
        knobs::validate_env()?;
        DepthPlan::from_lookup(&knobs::env)
    }

    pub fn from_lookup(lookup: Lookup) -> Result<DepthPlan> {
        let common = Common::from_lookup(lookup)?;
        let env = |k: &str| knobs::get(lookup, k);
        let models = parse_models(
            env("MODELBENCH_DEPTH_MODELS")
                .as_deref()
                .unwrap_or(DEFAULT_DEPTH_MODELS),
            "MODELBENCH_DEPTH_MODELS",
        )?;
        let depths = parse_depths(
            &env("MODELBENCH_DEPTHS").unwrap_or_else(|| "0,256,1024".into()),
            "MODELBENCH_DEPTHS",
        )?;
        let count = |k: &str, d: usize| {
            env(k)
                .map(|v| parse_count(&v, k))
                .transpose()
                .map(|v| v.unwrap_or(d))
        };
        let prompt = count("MODELBENCH_DEPTH_PROMPT", 64)?;
        let gen = count("MODELBENCH_DEPTH_GEN", 16)?;
        if prompt == 0 && gen == 0 {
            return Err(Error::knob(
                "MODELBENCH_DEPTH_PROMPT",
                "0",
                "MODELBENCH_DEPTH_PROMPT and MODELBENCH_DEPTH_GEN are both 0: nothing to time",
                "at least one of them positive",
            ));
        }
        Ok(DepthPlan {
            models,
            depths,
            prompt,
            gen,
            common,
        })
    }

    /// Positions the deepest point needs: models are built for this many.
    pub fn context_cap(&self) -> usize {
        self.depths.iter().max().copied().unwrap_or(0) + self.prompt.max(self.gen)
    }
}

/// The MoE grid (criterion group `moe_topk`).
#[derive(Debug, Clone)]
pub struct MoePlan {
    pub experts: Vec<usize>,
    pub top_k: Vec<usize>,
    pub tokens: Vec<usize>,
    pub hidden: usize,
    pub intermediate: usize,
    pub common: Common,
}

impl MoePlan {
    pub fn from_env() -> Result<MoePlan> {
        knobs::validate_env()?;
        MoePlan::from_lookup(&knobs::env)
    }

    /// From knob values given by `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: Lookup) -> Result<MoePlan> {
        let common = Common::from_lookup(lookup)?;
        let env = |k: &str| knobs::get(lookup, k);
        let list = |k: &str, d: &str| parse_list(k, &env(k).unwrap_or_else(|| d.to_string()));
        let experts = list("MODELBENCH_MOE_EXPERTS", "8,32")?;
        let top_k = list("MODELBENCH_MOE_TOPK", "1,4")?;
        let tokens = list("MODELBENCH_MOE_TOKENS", "1,512")?;
        let hidden = env("MODELBENCH_MOE_HIDDEN")
            .map(|v| positive("MODELBENCH_MOE_HIDDEN", &v))
            .transpose()?;
        let inter = env("MODELBENCH_MOE_INTERMEDIATE")
            .map(|v| positive("MODELBENCH_MOE_INTERMEDIATE", &v))
            .transpose()?;
        let min_e = *experts.iter().min().expect("non-empty");
        if let Some(&k) = top_k.iter().find(|&&k| k > min_e) {
            return Err(Error::knob(
                "MODELBENCH_MOE_TOPK",
                top_k
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                format!("top-k {k} exceeds {min_e} experts (MODELBENCH_MOE_EXPERTS)"),
                "values no larger than the smallest expert count",
            ));
        }
        Ok(MoePlan {
            experts,
            top_k,
            tokens,
            hidden: hidden.unwrap_or(crate::models::moe::MoeConfig::DEFAULT_HIDDEN),
            intermediate: inter
                .unwrap_or(crate::models::moe::MoeConfig::DEFAULT_EXPERT_INTERMEDIATE),
            common,
        })
    }
}

/// The PSANN throughput grid (groups `psann_throughput` and `psann_train`).
#[derive(Debug, Clone)]
pub struct PsannPlan {
    /// `default` or `gpu03`.
    pub grid: String,
    pub bases: Vec<crate::models::psann::Base>,
    pub batch_tokens: Vec<usize>,
    /// Batch tokens of the train-step group (empty: no train steps).
    pub train_tokens: Vec<usize>,
    /// The PSANN throughput grid's caps on sequence length and batch.
    pub max_t: usize,
    pub max_b: usize,
    /// Group `train_step` (the training-throughput sweep): matmul dtypes x sequence lengths x batches.
    pub step_dtypes: Vec<candle_core::DType>,
    pub step_seqs: Vec<usize>,
    pub step_batches: Vec<usize>,
    pub common: Common,
}

impl PsannPlan {
    pub fn from_env() -> Result<PsannPlan> {
        knobs::validate_env()?;
        PsannPlan::from_lookup(&knobs::env)
    }

    pub fn from_lookup(lookup: Lookup) -> Result<PsannPlan> {
        let common = Common::from_lookup(lookup)?;
        let env = |k: &str| knobs::get(lookup, k);
        let grid = parse_grid(&env("MODELBENCH_PSANN_GRID").unwrap_or_else(|| "default".into()))?;
        let (default_tokens, default_train, max_t) = match grid {
            "gpu03" => ("65536,131072,262144", "65536,131072,262144", 4096),
            _ => ("256,1024", "256", 256),
        };
        let bases = parse_bases(
            &env("MODELBENCH_PSANN_BASES").unwrap_or_else(|| "respsann,waveresnet".into()),
        )?;
        let batch_tokens = parse_list(
            "MODELBENCH_PSANN_BATCH_TOKENS",
            &env("MODELBENCH_PSANN_BATCH_TOKENS").unwrap_or_else(|| default_tokens.into()),
        )?;
        let train_tokens = parse_optional_list(
            "MODELBENCH_PSANN_TRAIN_TOKENS",
            &env("MODELBENCH_PSANN_TRAIN_TOKENS").unwrap_or_else(|| default_train.into()),
        )?;
        let step_dtypes = crate::config::values::parse_dtypes(
            &env("MODELBENCH_TRAIN_STEP_DTYPES").unwrap_or_else(|| "f32".into()),
            "MODELBENCH_TRAIN_STEP_DTYPES",
        )?;
        let step_seqs = parse_list(
            "MODELBENCH_TRAIN_STEP_SEQS",
            &env("MODELBENCH_TRAIN_STEP_SEQS").unwrap_or_else(|| "64".into()),
        )?;
        let step_batches = parse_list(
            "MODELBENCH_TRAIN_STEP_BATCHES",
            &env("MODELBENCH_TRAIN_STEP_BATCHES").unwrap_or_else(|| "2,4".into()),
        )?;
        Ok(PsannPlan {
            grid: grid.to_string(),
            bases,
            batch_tokens,
            train_tokens,
            max_t,
            max_b: 64,
            step_dtypes,
            step_seqs,
            step_batches,
            common,
        })
    }

    /// (batch_tokens, B, T) of each grid point by the PSANN throughput grid's shape rule.
    pub fn shapes(&self, tokens: &[usize]) -> Vec<(usize, usize, usize)> {
        tokens
            .iter()
            .map(|&n| {
                let (b, t) = crate::models::psann::gpu03_shape(n, self.max_t, self.max_b);
                (n, b, t)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let p = Plan::from_lookup(&with(&[])).unwrap();
        assert_eq!(p.models.len(), 3);
        assert_eq!(p.tier, Some(Tier::Quick));
        assert_eq!(p.dtype, DType::F32);
        assert_eq!(p.seed, 42);
        let full = Plan::from_lookup(&with(&[("MODELBENCH_TIER", "full")])).unwrap();
        assert_eq!(full.scenarios.len(), 7);
        assert_eq!(full.context_cap(), 1536);
    }

    #[test]
    fn moe_knobs_are_validated() {
        let p = MoePlan::from_lookup(&with(&[])).unwrap();
        assert_eq!((p.experts.len(), p.top_k.len(), p.tokens.len()), (2, 2, 2));
        let e = MoePlan::from_lookup(&with(&[
            ("MODELBENCH_MOE_EXPERTS", "4"),
            ("MODELBENCH_MOE_TOPK", "2,8"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("MODELBENCH_MOE_TOPK") && e.contains("top-k 8 exceeds 4 experts"),
            "{e}"
        );
    }

    #[test]
    fn tier_and_scenarios_exclude_each_other() {
        let e = Plan::from_lookup(&with(&[
            ("MODELBENCH_TIER", "quick"),
            ("MODELBENCH_SCENARIOS", "short"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not both"), "{e}");
    }
}
