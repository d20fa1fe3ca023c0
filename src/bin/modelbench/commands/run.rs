//! `modelbench run`: a suite tier (or one ad-hoc scenario) on models, saved as a run.

use std::path::PathBuf;

use anyhow::Context;
use modelbench::config::plans::{parse_models, parse_seed, Plan};
use modelbench::engine::scenario::{prepare, Scenario, Tier};
use modelbench::models::loading::{load_line, open_with};
use modelbench::output::report::{latency_table, reports_root, table, RunDir};

use crate::args::RunArgs;

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
    let mut prepared = Vec::new();
    for (l, r) in &plan.models {
        prepared.push(prepare(l, r, &plan.scenarios)?);
    }
    let dev = plan.device.open_for("--device")?;
    plan.attention
        .check(&dev)
        .map_err(|e| anyhow::anyhow!("--attention {}: {e}", plan.attention))?;
    for res in &prepared {
        modelbench::engine::preflight::check_scenarios(
            res,
            &plan.scenarios,
            plan.dtype,
            &dev,
            plan.attention,
        )?;
    }
    let mut run = RunDir::new(&reports_root(), plan.label.as_deref());
    run_suite(&plan, prepared, &dev, a, &mut run)?;
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

pub fn run_suite(
    plan: &Plan,
    prepared: Vec<modelbench::models::source::Resolved>,
    dev: &candle_core::Device,
    a: &RunArgs,
    run: &mut RunDir,
) -> anyhow::Result<()> {
    let total = prepared.len() * plan.scenarios.len() * (a.warmup + a.trials);
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs {msg}")
            .expect("valid template"),
    );
    let calibration = modelbench::measure::calibration::cached(plan.device);
    for res in prepared {
        let label = res.label.clone();
        bar.set_message(format!("loading {label}"));
        // One load per suite and model; dropped (memory released) before the next model.
        let mut loaded = open_with(
            res,
            dev,
            plan.dtype,
            Some(plan.context_cap()),
            plan.attention,
        )?;
        bar.println(load_line(&loaded));
        for s in &plan.scenarios {
            let mut w = plan.generation(&mut loaded, s, calibration.clone());
            let rec = modelbench::workloads::run_trials_with(
                &mut w,
                a.warmup,
                a.trials,
                &mut |_, warm| {
                    bar.set_message(format!(
                        "{label} {} {}",
                        s.name,
                        if warm { "warm-up" } else { "trial" }
                    ));
                    bar.inc(1);
                },
            )
            .with_context(|| format!("{label} / {}", s.name))?;
            let power = if rec.power.mean_w.is_some() {
                format!("  GPU {}", rec.power.describe())
            } else {
                String::new()
            };
            let p50 = |p: Option<modelbench::measure::stats::Percentiles>| {
                modelbench::output::report::na(p.map(|p| p.p50), 2)
            };
            bar.println(format!(
                "{label:>24} {:<10} {:>9} tok/s  TTFT p50 {:>8} ms  TPOT p50 {:>7} ms{power}",
                s.name,
                modelbench::output::report::na(rec.tok_s, 1),
                p50(rec.gen.as_ref().and_then(|g| g.ttft_ms)),
                p50(rec.gen.as_ref().and_then(|g| g.tpot_ms)),
            ));
            if a.target.no_save {
                run.push_unsaved(rec);
            } else {
                run.push(rec)?;
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}
