//! Plans: the validated form of the knobs (see [`super::knobs`]) for each bench, built with
//! the value parsers of [`super::values`] (re-exported here).

use std::time::Duration;

use candle_core::DType;

use crate::engine::scenario::{Scenario, Tier};
use crate::error::{Error, Result};
use crate::measure::device::DeviceSpec;
use crate::models::sources::ModelRef;

use super::knobs;
pub use super::values::*;

/// The validated plan: models x scenarios x dtype x device.
#[derive(Debug, Clone)]
pub struct Plan {
    /// (label as written, parsed reference)
    pub models: Vec<(String, ModelRef)>,
    pub tier: Option<Tier>,
    pub scenarios: Vec<Scenario>,
    /// Device, dtype, seed, measurement window, label and attention backend
    /// (MODELBENCH_ATTENTION).
    pub common: Common,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A plan from the environment (`from_lookup` over it), after every MODELBENCH_* variable has
/// been validated.
pub(super) fn from_validated_env<T>(from_lookup: impl FnOnce(Lookup) -> Result<T>) -> Result<T> {
    knobs::validate_env()?;
    from_lookup(&knobs::env)
}

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
        from_validated_env(Plan::from_lookup)
    }

    /// From knob values given by `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: Lookup) -> Result<Plan> {
        let get = |k: &str| knobs::get(lookup, k);
        let models = parse_models(
            &knobs::value(lookup, "MODELBENCH_MODELS"),
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
                let tier =
                    parse_tier(&t.unwrap_or_else(|| knobs::default_of("MODELBENCH_TIER").into()))?;
                (Some(tier), tier.scenarios())
            }
        };
        let common = Common::from_lookup(lookup)?;
        peers_row(lookup)?; // validated with the plan; acted on by harness::llama_peer_rows
        Ok(Plan {
            models,
            tier,
            scenarios,
            common,
        })
    }

    /// The generation workload of scenario `s` on a loaded model under this plan (the one
    /// construction the benches and `modelbench run` share).
    pub fn generation<'a>(
        &self,
        loaded: &'a mut crate::models::sources::loading::Loaded,
        s: &'a Scenario,
        calibration: Option<crate::measure::calibration::Calibration>,
    ) -> crate::workloads::generation::Generation<'a> {
        let c = &self.common;
        crate::workloads::generation::Generation {
            loaded,
            scenario: s,
            seed: c.seed,
            device: c.device,
            dtype: c.dtype,
            calibration,
            probe: None,
            ids: Default::default(),
            step_gate: None,
        }
    }

    /// The generation suite of this plan on the opened device `dev` (the benches' and
    /// `modelbench run`'s; see `workloads::suite::run_suite`).
    pub fn suite(
        &self,
        dev: &candle_core::Device,
    ) -> crate::workloads::generation::GenerationSuite {
        let c = &self.common;
        crate::workloads::generation::GenerationSuite {
            models: self.models.clone(),
            scenarios: self.scenarios.clone(),
            device: c.device,
            dev: dev.clone(),
            dtype: c.dtype,
            seed: c.seed,
            attention: c.attention,
            context_cap: self.context_cap(),
            calibration: crate::measure::calibration::cached(c.device),
            probes: Default::default(),
        }
    }

    /// Positions the longest scenario needs: models are built for no more than this.
    pub fn context_cap(&self) -> usize {
        self.scenarios
            .iter()
            .map(Scenario::context_needed)
            .max()
            .unwrap_or(1)
            // The output probe's sequences (issue 59) run on the same model.
            .max(crate::engine::probe::LEN)
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
    /// A CLI command's settings: no measurement window (the CLI runs a fixed number of trials).
    pub fn cli(
        device: DeviceSpec,
        dtype: DType,
        seed: u64,
        label: Option<String>,
        attention: crate::models::attention::Attention,
    ) -> Common {
        Common {
            device,
            dtype,
            seed,
            min_measure: Duration::ZERO,
            label,
            attention,
        }
    }

    /// Where a plan's grid runs (the overhead group's too): the device opened, and its
    /// calibration.
    pub fn setup(&self) -> Result<crate::workloads::suite::Setup> {
        Ok(crate::workloads::suite::Setup {
            device: self.device,
            dev: self.device.open()?,
            dtype: self.dtype,
            seed: self.seed,
            calibration: crate::measure::calibration::cached(self.device),
        })
    }

    pub fn from_env() -> Result<Common> {
        from_validated_env(Common::from_lookup)
    }

    pub fn from_lookup(lookup: Lookup) -> Result<Common> {
        let get = |k: &str| knobs::get(lookup, k);
        let value = |k: &str| knobs::value(lookup, k);
        let device = parse_device(&value("MODELBENCH_DEVICE"), "MODELBENCH_DEVICE")?;
        let dtype = get("MODELBENCH_DTYPE")
            .map(|d| parse_dtype_knob(&d, "MODELBENCH_DTYPE"))
            .transpose()?
            .unwrap_or_else(|| device.default_dtype());
        Ok(Common {
            device,
            dtype,
            seed: parse_seed(&value("MODELBENCH_SEED"), "MODELBENCH_SEED")?,
            min_measure: parse_secs(&value("MODELBENCH_MEASURE_SECS"), "MODELBENCH_MEASURE_SECS")?,
            label: get("MODELBENCH_LABEL")
                .map(|l| check_label(&l, "MODELBENCH_LABEL"))
                .transpose()?,
            attention: parse_attention(&value("MODELBENCH_ATTENTION"), "MODELBENCH_ATTENTION")?,
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
        from_validated_env(DepthPlan::from_lookup)
    }

    pub fn from_lookup(lookup: Lookup) -> Result<DepthPlan> {
        let common = Common::from_lookup(lookup)?;
        let value = |k: &str| knobs::value(lookup, k);
        let models = parse_models(&value("MODELBENCH_DEPTH_MODELS"), "MODELBENCH_DEPTH_MODELS")?;
        let depths = parse_depths(&value("MODELBENCH_DEPTHS"), "MODELBENCH_DEPTHS")?;
        let count = |k: &str| parse_count(&value(k), k);
        let prompt = count("MODELBENCH_DEPTH_PROMPT")?;
        let gen = count("MODELBENCH_DEPTH_GEN")?;
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

    /// The depth suite of this plan on the opened device `dev` (see
    /// `workloads::suite::run_suite`).
    pub fn suite(&self, dev: &candle_core::Device) -> crate::workloads::depth::DepthSuite {
        let cm = &self.common;
        crate::workloads::depth::DepthSuite {
            models: self.models.clone(),
            depths: self.depths.clone(),
            prompt: self.prompt,
            gen: self.gen,
            device: cm.device,
            dev: dev.clone(),
            dtype: cm.dtype,
            seed: cm.seed,
            attention: cm.attention,
            calibration: crate::measure::calibration::cached(cm.device),
            probes: Default::default(),
        }
    }

    /// Positions the deepest point needs: models are built for this many.
    pub fn context_cap(&self) -> usize {
        self.depths.iter().max().copied().unwrap_or(0) + self.prompt.max(self.gen)
    }
}

/// The MoE grid (criterion group `moe_topk`).
#[derive(Debug, Clone)]
pub struct MoePlan {
    pub grid: crate::workloads::moe::MoeGrid,
    pub common: Common,
}

impl MoePlan {
    pub fn from_env() -> Result<MoePlan> {
        from_validated_env(MoePlan::from_lookup)
    }

    /// From knob values given by `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: Lookup) -> Result<MoePlan> {
        let common = Common::from_lookup(lookup)?;
        let names = MOE_KNOBS;
        Ok(MoePlan {
            grid: moe_grid(names.map(|k| knobs::value(lookup, k)), names)?,
            common,
        })
    }
}

/// The moe_topk grid's knobs, in [`moe_grid`]'s order: experts, top-k, tokens, hidden,
/// intermediate (`modelbench moe`'s flags set the same five, with these knobs' defaults).
pub const MOE_KNOBS: [&str; 5] = [
    "MODELBENCH_MOE_EXPERTS",
    "MODELBENCH_MOE_TOPK",
    "MODELBENCH_MOE_TOKENS",
    "MODELBENCH_MOE_HIDDEN",
    "MODELBENCH_MOE_INTERMEDIATE",
];

/// The moe_topk grid from its five values as written (experts, top-k and tokens comma
/// lists; hidden and intermediate sizes), `names` naming each in errors (the knobs, or the
/// CLI's flags): the benches and `modelbench moe` parse it the same way.
pub fn moe_grid(
    values: [impl AsRef<str>; 5],
    names: [&str; 5],
) -> Result<crate::workloads::moe::MoeGrid> {
    let [e, k, t, h, i] = &values;
    let experts = parse_list(names[0], e.as_ref())?;
    let top_k = parse_list(names[1], k.as_ref())?;
    let tokens = parse_list(names[2], t.as_ref())?;
    let hidden = positive(names[3], h.as_ref())?;
    let intermediate = positive(names[4], i.as_ref())?;
    let min_e = *experts.iter().min().expect("non-empty");
    if let Some(&k) = top_k.iter().find(|&&k| k > min_e) {
        return Err(Error::knob(
            names[1],
            top_k
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(","),
            format!("top-k {k} exceeds {min_e} experts ({})", names[0]),
            "values no larger than the smallest expert count",
        ));
    }
    Ok(crate::workloads::moe::MoeGrid {
        experts,
        top_k,
        tokens,
        hidden,
        intermediate,
    })
}

/// The PSANN throughput grid (groups `psann_throughput` and `psann_train`).
#[derive(Debug, Clone)]
pub struct PsannPlan {
    /// `default` or `gpu03`.
    pub grid: String,
    pub bases: Vec<crate::models::training::psann::Base>,
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
    /// The grid with its points shaped (see `workloads::psann::run_grid`).
    pub fn grid(&self) -> crate::workloads::psann::PsannGrid {
        crate::workloads::psann::PsannGrid {
            grid: self.grid.clone(),
            bases: self.bases.clone(),
            batch_shapes: self.shapes(&self.batch_tokens),
            train_shapes: self.shapes(&self.train_tokens),
            step_dtypes: self.step_dtypes.clone(),
            step_seqs: self.step_seqs.clone(),
            step_batches: self.step_batches.clone(),
        }
    }

    pub fn from_env() -> Result<PsannPlan> {
        from_validated_env(PsannPlan::from_lookup)
    }

    pub fn from_lookup(lookup: Lookup) -> Result<PsannPlan> {
        let common = Common::from_lookup(lookup)?;
        let env = |k: &str| knobs::get(lookup, k);
        let value = |k: &str| knobs::value(lookup, k);
        let grid = parse_grid(&value("MODELBENCH_PSANN_GRID"))?;
        let (default_tokens, default_train, max_t) = match grid {
            "gpu03" => ("65536,131072,262144", "65536,131072,262144", 4096),
            _ => ("256,1024", "256", 256),
        };
        let bases = parse_bases(&value("MODELBENCH_PSANN_BASES"))?;
        let batch_tokens = parse_list(
            "MODELBENCH_PSANN_BATCH_TOKENS",
            &env("MODELBENCH_PSANN_BATCH_TOKENS").unwrap_or_else(|| default_tokens.into()),
        )?;
        let train_tokens = parse_optional_list(
            "MODELBENCH_PSANN_TRAIN_TOKENS",
            &env("MODELBENCH_PSANN_TRAIN_TOKENS").unwrap_or_else(|| default_train.into()),
        )?;
        let step_dtypes = crate::config::values::parse_dtypes(
            &value("MODELBENCH_TRAIN_STEP_DTYPES"),
            "MODELBENCH_TRAIN_STEP_DTYPES",
        )?;
        let step_seqs = parse_list(
            "MODELBENCH_TRAIN_STEP_SEQS",
            &value("MODELBENCH_TRAIN_STEP_SEQS"),
        )?;
        let step_batches = parse_list(
            "MODELBENCH_TRAIN_STEP_BATCHES",
            &value("MODELBENCH_TRAIN_STEP_BATCHES"),
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
                let (b, t) = crate::models::training::psann::gpu03_shape(n, self.max_t, self.max_b);
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
        assert_eq!(p.common.dtype, DType::F32);
        assert_eq!(p.common.seed, 42);
        let full = Plan::from_lookup(&with(&[("MODELBENCH_TIER", "full")])).unwrap();
        assert_eq!(full.scenarios.len(), 7);
        assert_eq!(full.context_cap(), 1536);
    }

    #[test]
    fn moe_knobs_are_validated() {
        let p = MoePlan::from_lookup(&with(&[])).unwrap();
        let g = &p.grid;
        assert_eq!((g.experts.len(), g.top_k.len(), g.tokens.len()), (2, 2, 2));
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
