//! `modelbench run`: a suite tier (or one ad-hoc scenario) on models, saved as a run.

use std::path::PathBuf;

use crate::config::plans::{parse_models, parse_seed, Common, Plan};
use crate::engine::scenario::{Scenario, Tier};
use crate::output::report::{latency_table, reports_root, table, RunDir};
use crate::workloads::suite::run_suite;

use crate::app::args::RunArgs;
use crate::app::trials::Trials;

pub fn scenarios_of(a: &RunArgs) -> crate::Result<Vec<Scenario>> {
    if !a.scenarios.is_empty() {
        ensure!(
            a.prompt_tokens.is_none() && a.max_new_tokens.is_none(),
            "--scenario and --prompt-tokens/--max-new-tokens exclude each other"
        );
        return crate::config::plans::parse_scenarios(&a.scenarios.join(",")).map_err(|_| {
            fail!(
                "--scenario {}: unknown scenario (allowed: {})",
                a.scenarios.join(","),
                crate::engine::scenario::SCENARIO_NAMES
            )
        });
    }
    match (a.prompt_tokens, a.max_new_tokens) {
        (Some(p), Some(g)) => {
            let sampling = a.sampling.params()?;
            ensure!(
                p > 0 && g > 0,
                "--prompt-tokens and --max-new-tokens must be at least 1"
            );
            Ok(vec![Scenario::custom(p, g, sampling)])
        }
        (None, None) => {
            let t = Tier::parse(&a.suite).ok_or_else(|| {
                fail!(
                    "--suite {:?}: unknown tier (allowed: {})",
                    a.suite,
                    Tier::ALLOWED
                )
            })?;
            Ok(t.scenarios())
        }
        _ => bail!("--prompt-tokens and --max-new-tokens go together"),
    }
}

pub fn run(a: RunArgs) -> crate::Result<()> {
    execute(&a).map(|_| ())
}

/// Runs the suite and prints the tables; returns the run folder (not written with --no-save).
pub fn execute(a: &RunArgs) -> crate::Result<PathBuf> {
    let scenarios = scenarios_of(a)?;
    ensure!(a.trials >= 1, "--trials must be at least 1");
    let (device, dtype, label) = a.target.resolve()?;
    let plan = Plan {
        models: parse_models(&a.models.join(","), "--model")?,
        tier: if a.scenarios.is_empty() {
            Tier::parse(&a.suite)
        } else {
            None
        },
        scenarios,
        common: Common::cli(
            device,
            dtype,
            parse_seed(&a.seed.to_string(), "--seed")?,
            label,
            crate::config::plans::parse_attention(&a.attention, "--attention")?,
        ),
    };
    let dev = plan.common.device.open_for("--device")?;
    plan.common
        .attention
        .check(&dev)
        .map_err(|e| fail!("--attention {}: {e}", plan.common.attention))?;
    let mut run = RunDir::new(&reports_root(), plan.common.label.as_deref());
    // One load per model; dropped (memory released) before the next model loads.
    let mut driver = Trials::new(a.warmup, a.trials, !a.target.no_save).with_bar();
    run_suite(&plan.suite(&dev), &mut driver, &mut run)?;
    println!("\n{}", table(run.records()));
    println!("{}", latency_table(run.records()));
    if a.target.no_save {
        return Ok(run.path);
    }
    run.complete()?;
    println!("saved {}", run.path.display());
    if a.zip {
        let z = crate::output::report::zip_run(&run.path)?;
        println!("packed {}", z.display());
    }
    Ok(run.path)
}
