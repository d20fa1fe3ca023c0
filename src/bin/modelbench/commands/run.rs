//! `modelbench run`: a suite tier (or one ad-hoc scenario) on models, saved as a run.

use std::path::PathBuf;

use modelbench::config::plans::{parse_models, parse_seed, Plan};
use modelbench::engine::scenario::{Scenario, Tier};
use modelbench::output::report::{latency_table, reports_root, table, RunDir};
use modelbench::workloads::suite::run_suite;

use crate::args::RunArgs;
use crate::trials::Trials;

pub fn scenarios_of(a: &RunArgs) -> anyhow::Result<Vec<Scenario>> {
    if !a.scenarios.is_empty() {
        anyhow::ensure!(
            a.prompt_tokens.is_none() && a.max_new_tokens.is_none(),
            "--scenario and --prompt-tokens/--max-new-tokens exclude each other"
        );
        return modelbench::config::plans::parse_scenarios(&a.scenarios.join(",")).map_err(|_| {
            anyhow::anyhow!(
                "--scenario {}: unknown scenario (allowed: {})",
                a.scenarios.join(","),
                modelbench::engine::scenario::SCENARIO_NAMES
            )
        });
    }
    match (a.prompt_tokens, a.max_new_tokens) {
        (Some(p), Some(g)) => {
            let sampling = a.sampling.params()?;
            anyhow::ensure!(
                p > 0 && g > 0,
                "--prompt-tokens and --max-new-tokens must be at least 1"
            );
            Ok(vec![Scenario::custom(p, g, sampling)])
        }
        (None, None) => {
            let t = Tier::parse(&a.suite).ok_or_else(|| {
                anyhow::anyhow!(
                    "--suite {:?}: unknown tier (allowed: {})",
                    a.suite,
                    Tier::ALLOWED
                )
            })?;
            Ok(t.scenarios())
        }
        _ => anyhow::bail!("--prompt-tokens and --max-new-tokens go together"),
    }
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    execute(&a).map(|_| ())
}

/// Runs the suite and prints the tables; returns the run folder (not written with --no-save).
pub fn execute(a: &RunArgs) -> anyhow::Result<PathBuf> {
    let scenarios = scenarios_of(a)?;
    anyhow::ensure!(a.trials >= 1, "--trials must be at least 1");
    let (device, dtype, label) = a.target.resolve()?;
    let plan = Plan {
        models: parse_models(&a.models.join(","), "--model")?,
        tier: if a.scenarios.is_empty() {
            Tier::parse(&a.suite)
        } else {
            None
        },
        scenarios,
        device,
        dtype,
        seed: parse_seed(&a.seed.to_string(), "--seed")?,
        min_measure: std::time::Duration::ZERO,
        label,
        attention: modelbench::config::plans::parse_attention(&a.attention, "--attention")?,
    };
    let dev = plan.device.open_for("--device")?;
    plan.attention
        .check(&dev)
        .map_err(|e| anyhow::anyhow!("--attention {}: {e}", plan.attention))?;
    let mut run = RunDir::new(&reports_root(), plan.label.as_deref());
    // One load per model; dropped (memory released) before the next model loads.
    let mut driver = Trials::new(a.warmup, a.trials, !a.target.no_save).with_bar();
    run_suite(&plan.suite(&dev), &mut driver, &mut run)?;
    println!("\n{}", table(run.records()));
    println!("{}", latency_table(run.records()));
    if a.target.no_save {
        return Ok(run.path);
    }
    println!("saved {}", run.path.display());
    if a.zip {
        let z = modelbench::output::report::zip_run(&run.path)?;
        println!("packed {}", z.display());
    }
    Ok(run.path)
}
