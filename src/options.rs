//! Knobs: their raw form (environment variables, since `cargo bench` hands argv to
//! criterion) and the validated [`Plan`]. This is the one place that knows the allowed
//! values and writes the messages for bad ones.

use std::time::Duration;

use candle_core::DType;

use crate::device::{parse_dtype, DeviceSpec, DTYPES_ALLOWED};
use crate::error::{Error, Result};
use crate::scenario::{Scenario, Tier, SCENARIO_NAMES};
use crate::source::{ModelRef, SOURCES_HELP};

/// Every environment knob the suite reads, with its meaning (also printed by `--help`).
pub const KNOBS: &[(&str, &str)] = &[
    (
        "MODELBENCH_MODELS",
        "comma-separated model references (default: fixture:llama,fixture:qwen3,fixture:gemma3)",
    ),
    ("MODELBENCH_TIER", "quick | standard | full (default: full)"),
    (
        "MODELBENCH_SCENARIOS",
        "comma-separated scenarios, instead of a tier",
    ),
    (
        "MODELBENCH_DEVICE",
        "cpu | cuda | cuda:N (default: cpu; cuda needs --features cuda)",
    ),
    (
        "MODELBENCH_DTYPE",
        "f32 | f16 | bf16 (default: f32 on CPU, bf16 on CUDA)",
    ),
    (
        "MODELBENCH_SEED",
        "seed of prompts and sampling (default: 42)",
    ),
    (
        "MODELBENCH_MEASURE_SECS",
        "least criterion measurement time per benchmark, seconds (default: 5)",
    ),
    (
        "MODELBENCH_LABEL",
        "suffix of the run folder under target-reports/",
    ),
    (
        "MODELBENCH_OFFLINE",
        "1: never touch the network (as HF_HUB_OFFLINE=1)",
    ),
    (
        "MODELBENCH_FIXTURE_CACHE",
        "where fixture models are written (default: target/modelbench-fixtures/hub)",
    ),
    (
        "MODELBENCH_REPORTS",
        "where run folders go (default: target-reports/)",
    ),
    (
        "MODELBENCH_MOE_EXPERTS",
        "moe bench: comma list of expert counts (default: 8,16,32)",
    ),
    (
        "MODELBENCH_MOE_TOPK",
        "moe bench: comma list of top-k values (default: 1,2,4)",
    ),
    (
        "MODELBENCH_MOE_TOKENS",
        "moe bench: comma list of token counts (default: 1,128,512)",
    ),
    (
        "MODELBENCH_MOE_HIDDEN",
        "moe bench: hidden size (default: 512, Qwen3-30B-A3B's 2048 / 4)",
    ),
    (
        "MODELBENCH_MOE_INTERMEDIATE",
        "moe bench: per-expert intermediate size (default: 192, Qwen3-30B-A3B's 768 / 4)",
    ),
];

pub const DEFAULT_MODELS: &str = "fixture:llama,fixture:qwen3,fixture:gemma3";

/// Raw knob values, as found.
#[derive(Debug, Default, Clone)]
pub struct RawKnobs {
    pub models: Option<String>,
    pub tier: Option<String>,
    pub scenarios: Option<String>,
    pub device: Option<String>,
    pub dtype: Option<String>,
    pub seed: Option<String>,
    pub measure_secs: Option<String>,
    pub label: Option<String>,
}

impl RawKnobs {
    /// Reads the environment. An unknown `MODELBENCH_*` variable is an error (a typo such as
    /// MODELBENCH_MODEL would otherwise be silently ignored).
    pub fn from_env() -> Result<RawKnobs> {
        for (k, v) in std::env::vars() {
            if k.starts_with("MODELBENCH_")
                && !KNOBS.iter().any(|(n, _)| *n == k)
                && !extra_knob(&k)
            {
                let known: Vec<_> = KNOBS.iter().map(|(n, _)| *n).collect();
                return Err(Error::knob(k, v, "not a known knob", known.join(", ")));
            }
        }
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Ok(RawKnobs {
            models: get("MODELBENCH_MODELS"),
            tier: get("MODELBENCH_TIER"),
            scenarios: get("MODELBENCH_SCENARIOS"),
            device: get("MODELBENCH_DEVICE"),
            dtype: get("MODELBENCH_DTYPE"),
            seed: get("MODELBENCH_SEED"),
            measure_secs: get("MODELBENCH_MEASURE_SECS"),
            label: get("MODELBENCH_LABEL"),
        })
    }
}

/// Knobs owned by other workloads (their benches validate them).
fn extra_knob(k: &str) -> bool {
    k.starts_with("MODELBENCH_CKPT_")
}

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
}

pub fn parse_models(list: &str, knob: &str) -> Result<Vec<(String, ModelRef)>> {
    let mut out = Vec::new();
    for m in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let r =
            ModelRef::parse(m).map_err(|e| Error::knob(knob, list, e.to_string(), SOURCES_HELP))?;
        if out.iter().any(|(l, _): &(String, ModelRef)| l == m) {
            return Err(Error::knob(
                knob,
                list,
                format!("`{m}` is listed twice"),
                SOURCES_HELP,
            ));
        }
        out.push((m.to_string(), r));
    }
    if out.is_empty() {
        return Err(Error::knob(knob, list, "no models", SOURCES_HELP));
    }
    Ok(out)
}

pub fn parse_seed(v: &str, knob: &str) -> Result<u64> {
    v.trim().parse().map_err(|_| {
        Error::knob(
            knob,
            v,
            "not a non-negative integer",
            "0..=18446744073709551615",
        )
    })
}

/// A run-folder label: letters, digits, `-`, `_`, `.`.
pub fn check_label(v: &str, knob: &str) -> Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(Error::knob(
            knob,
            v,
            "not usable in a folder name",
            "1-64 of [A-Za-z0-9._-]",
        ))
    }
}

impl Plan {
    pub fn from_env() -> Result<Plan> {
        Plan::from_raw(&RawKnobs::from_env()?)
    }

    pub fn from_raw(raw: &RawKnobs) -> Result<Plan> {
        let models = parse_models(
            raw.models.as_deref().unwrap_or(DEFAULT_MODELS),
            "MODELBENCH_MODELS",
        )?;
        let (tier, scenarios) = match (&raw.scenarios, &raw.tier) {
            (Some(_), Some(t)) => {
                return Err(Error::knob(
                    "MODELBENCH_TIER",
                    t,
                    "set either MODELBENCH_TIER or MODELBENCH_SCENARIOS, not both",
                    Tier::ALLOWED,
                ))
            }
            (Some(list), None) => {
                let mut v = Vec::new();
                for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    v.push(Scenario::by_name(n).map_err(|_| {
                        Error::knob(
                            "MODELBENCH_SCENARIOS",
                            list,
                            format!("unknown scenario `{n}`"),
                            SCENARIO_NAMES,
                        )
                    })?);
                }
                if v.is_empty() {
                    return Err(Error::knob(
                        "MODELBENCH_SCENARIOS",
                        list,
                        "no scenarios",
                        SCENARIO_NAMES,
                    ));
                }
                (None, v)
            }
            (None, t) => {
                let t = t.as_deref().unwrap_or("full");
                let tier = Tier::parse(t).ok_or_else(|| {
                    Error::knob("MODELBENCH_TIER", t, "unknown tier", Tier::ALLOWED)
                })?;
                (Some(tier), tier.scenarios())
            }
        };
        let device: DeviceSpec = match &raw.device {
            Some(d) => d
                .parse()
                .map_err(|e: String| Error::knob("MODELBENCH_DEVICE", d, e, DeviceSpec::ALLOWED))?,
            None => DeviceSpec::Cpu,
        };
        let dtype = match &raw.dtype {
            Some(d) => {
                parse_dtype(d).map_err(|e| Error::knob("MODELBENCH_DTYPE", d, e, DTYPES_ALLOWED))?
            }
            None => device.default_dtype(),
        };
        let seed = match &raw.seed {
            Some(s) => parse_seed(s, "MODELBENCH_SEED")?,
            None => 42,
        };
        let min_measure = match &raw.measure_secs {
            Some(s) => {
                let v: f64 = s.trim().parse().map_err(|_| {
                    Error::knob(
                        "MODELBENCH_MEASURE_SECS",
                        s,
                        "not a number",
                        "a number of seconds > 0",
                    )
                })?;
                if !(v > 0.0 && v < 86400.0) {
                    return Err(Error::knob(
                        "MODELBENCH_MEASURE_SECS",
                        s,
                        "out of range",
                        "a number of seconds in (0, 86400)",
                    ));
                }
                Duration::from_secs_f64(v)
            }
            None => Duration::from_secs(5),
        };
        let label = raw
            .label
            .as_deref()
            .map(|l| check_label(l, "MODELBENCH_LABEL"))
            .transpose()?;
        Ok(Plan {
            models,
            tier,
            scenarios,
            device,
            dtype,
            seed,
            min_measure,
            label,
        })
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

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// A comma list of positive integers.
pub fn parse_list(name: &str, v: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match p.parse::<usize>() {
            Ok(n) if n > 0 => out.push(n),
            _ => {
                return Err(Error::knob(
                    name,
                    v,
                    format!("`{p}` is not a positive integer"),
                    "a comma list of positive integers",
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::knob(
            name,
            v,
            "empty list",
            "a comma list of positive integers",
        ));
    }
    Ok(out)
}

fn positive(name: &str, v: &str) -> Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::knob(
            name,
            v,
            "not a positive integer",
            "an integer >= 1",
        )),
    }
}

/// Knobs shared by every workload bench: device, dtype, seed, label.
#[derive(Debug, Clone)]
pub struct Common {
    pub device: DeviceSpec,
    pub dtype: DType,
    pub seed: u64,
    pub label: Option<String>,
}

impl Common {
    pub fn from_env() -> Result<Common> {
        let p = Plan::from_raw(&RawKnobs::from_env()?)?;
        Ok(Common {
            device: p.device,
            dtype: p.dtype,
            seed: p.seed,
            label: p.label,
        })
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
        MoePlan::from_lookup(Common::from_env()?, &env)
    }

    /// From knob values given by `lookup` (the environment, or a test's map).
    pub fn from_lookup(common: Common, lookup: &dyn Fn(&str) -> Option<String>) -> Result<MoePlan> {
        let env = lookup;
        let list = |k: &str, d: &str| parse_list(k, &env(k).unwrap_or_else(|| d.to_string()));
        let experts = list("MODELBENCH_MOE_EXPERTS", "8,16,32")?;
        let top_k = list("MODELBENCH_MOE_TOPK", "1,2,4")?;
        let tokens = list("MODELBENCH_MOE_TOKENS", "1,128,512")?;
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
            hidden: hidden.unwrap_or(crate::moe::MoeConfig::DEFAULT_HIDDEN),
            intermediate: inter.unwrap_or(crate::moe::MoeConfig::DEFAULT_EXPERT_INTERMEDIATE),
            common,
        })
    }
}

/// The PSANN throughput grid (groups `psann_throughput` and `psann_train`).
#[derive(Debug, Clone)]
pub struct PsannPlan {
    /// `default` or `gpu03`.
    pub grid: String,
    pub bases: Vec<crate::psann::Base>,
    pub batch_tokens: Vec<usize>,
    /// GPU-03's caps on sequence length and batch.
    pub max_t: usize,
    pub max_b: usize,
    pub common: Common,
}

impl PsannPlan {
    pub fn from_env() -> Result<PsannPlan> {
        PsannPlan::from_lookup(Common::from_env()?, &env)
    }

    pub fn from_lookup(common: Common, env: &dyn Fn(&str) -> Option<String>) -> Result<PsannPlan> {
        let grid = env("MODELBENCH_PSANN_GRID").unwrap_or_else(|| "default".into());
        let (default_tokens, max_t) = match grid.trim() {
            "default" => ("1024,2048,4096", 256),
            "gpu03" => ("65536,131072,262144", 4096),
            other => {
                return Err(Error::knob(
                    "MODELBENCH_PSANN_GRID",
                    other,
                    "unknown grid",
                    "default, gpu03",
                ))
            }
        };
        let bases_s = env("MODELBENCH_PSANN_BASES").unwrap_or_else(|| "respsann,waveresnet".into());
        let mut bases = Vec::new();
        for b in bases_s.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            bases.push(crate::psann::Base::parse(b).ok_or_else(|| {
                Error::knob(
                    "MODELBENCH_PSANN_BASES",
                    &bases_s,
                    format!("unknown base `{b}`"),
                    crate::psann::Base::ALLOWED,
                )
            })?);
        }
        if bases.is_empty() {
            return Err(Error::knob(
                "MODELBENCH_PSANN_BASES",
                &bases_s,
                "no bases",
                crate::psann::Base::ALLOWED,
            ));
        }
        let tokens = env("MODELBENCH_PSANN_BATCH_TOKENS").unwrap_or_else(|| default_tokens.into());
        let batch_tokens = parse_list("MODELBENCH_PSANN_BATCH_TOKENS", &tokens)?;
        Ok(PsannPlan {
            grid: grid.trim().to_string(),
            bases,
            batch_tokens,
            max_t,
            max_b: 64,
            common,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawKnobs {
        RawKnobs::default()
    }

    #[test]
    fn defaults() {
        let p = Plan::from_raw(&raw()).unwrap();
        assert_eq!(p.models.len(), 3);
        assert_eq!(p.scenarios.len(), 7);
        assert_eq!(p.dtype, DType::F32);
        assert_eq!(p.seed, 42);
        assert_eq!(p.context_cap(), 1536);
    }

    #[test]
    fn moe_knobs_are_validated() {
        let common = Common {
            device: DeviceSpec::Cpu,
            dtype: DType::F32,
            seed: 1,
            label: None,
        };
        let with = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            MoePlan::from_lookup(common.clone(), &move |k: &str| map.get(k).cloned())
        };
        let p = with(&[]).unwrap();
        assert_eq!((p.experts.len(), p.top_k.len(), p.tokens.len()), (3, 3, 3));
        let e = with(&[
            ("MODELBENCH_MOE_EXPERTS", "4"),
            ("MODELBENCH_MOE_TOPK", "2,8"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("MODELBENCH_MOE_TOPK") && e.contains("top-k 8 exceeds 4 experts"),
            "{e}"
        );
        let e = with(&[("MODELBENCH_MOE_EXPERTS", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("MODELBENCH_MOE_EXPERTS"), "{e}");
        assert!(with(&[("MODELBENCH_MOE_TOKENS", "1,x")]).is_err());
        assert!(with(&[("MODELBENCH_MOE_HIDDEN", "-3")]).is_err());
    }

    #[test]
    fn bad_values_name_the_knob() {
        let cases: Vec<(RawKnobs, &str)> = vec![
            (
                RawKnobs {
                    tier: Some("huge".into()),
                    ..raw()
                },
                "MODELBENCH_TIER",
            ),
            (
                RawKnobs {
                    device: Some("tpu".into()),
                    ..raw()
                },
                "MODELBENCH_DEVICE",
            ),
            (
                RawKnobs {
                    dtype: Some("f8".into()),
                    ..raw()
                },
                "MODELBENCH_DTYPE",
            ),
            (
                RawKnobs {
                    seed: Some("-1".into()),
                    ..raw()
                },
                "MODELBENCH_SEED",
            ),
            (
                RawKnobs {
                    models: Some("fixture:gpt2".into()),
                    ..raw()
                },
                "MODELBENCH_MODELS",
            ),
            (
                RawKnobs {
                    scenarios: Some("short,huge".into()),
                    ..raw()
                },
                "MODELBENCH_SCENARIOS",
            ),
            (
                RawKnobs {
                    measure_secs: Some("0".into()),
                    ..raw()
                },
                "MODELBENCH_MEASURE_SECS",
            ),
            (
                RawKnobs {
                    label: Some("a/b".into()),
                    ..raw()
                },
                "MODELBENCH_LABEL",
            ),
        ];
        for (r, knob) in cases {
            let e = Plan::from_raw(&r).unwrap_err().to_string();
            assert!(e.starts_with(knob), "{e}");
            assert!(e.contains("allowed"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
