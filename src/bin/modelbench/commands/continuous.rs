//! `modelbench continuous`: run a config, compare with the previous run of it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use modelbench::config::plans::check_label;
use modelbench::output::compare::{compare, parse_threshold, render};
use modelbench::output::report::{list_runs, read_run, reports_root};

use crate::args::{RunArgs, TargetArgs};

/// A continuous-benchmarking config.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ContinuousConfig {
    name: String,
    models: Vec<String>,
    #[serde(default = "default_suite")]
    suite: String,
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default = "one")]
    warmup: usize,
    #[serde(default = "five")]
    trials: usize,
    #[serde(default = "default_threshold")]
    threshold: String,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default = "default_seed")]
    seed: u64,
}

pub fn default_suite() -> String {
    "quick".into()
}
pub fn one() -> usize {
    1
}
pub fn five() -> usize {
    5
}
pub fn default_threshold() -> String {
    "5%".into()
}
pub fn default_device() -> String {
    "cpu".into()
}
pub fn default_seed() -> u64 {
    42
}

pub fn continuous(config: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("{}: cannot read", config.display()))?;
    let c: ContinuousConfig = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid config: {e}", config.display()))?;
    let label = format!("cont-{}", c.name);
    check_label(&label, "name")?;
    let threshold = parse_threshold(&c.threshold)
        .map_err(|e| anyhow::anyhow!("{}: threshold: {e}", config.display()))?;
    let previous = list_runs(&reports_root())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&format!("-{label}")))
        })
        .next_back();
    let args = RunArgs {
        suite: c.suite.clone(),
        models: c.models.clone(),
        warmup: c.warmup,
        trials: c.trials,
        seed: c.seed,
        target: TargetArgs {
            device: c.device.clone(),
            dtype: c.dtype.clone(),
            label: Some(label),
            no_save: false,
        },
        zip: false,
        prompt_tokens: c.prompt_tokens,
        max_new_tokens: c.max_new_tokens,
        temperature: 0.0,
        top_k: None,
        top_p: None,
        repetition_penalty: None,
    };
    let dir = super::run::execute(&args)?;
    modelbench::util::fsio::atomic_write(
        &dir.join("continuous.json"),
        serde_json::to_string_pretty(&c)?.as_bytes(),
    )?;
    let Some(prev) = previous else {
        println!(
            "no previous run of `{}`: this run is the first baseline",
            c.name
        );
        return Ok(ExitCode::SUCCESS);
    };
    println!("comparing with {}", prev.display());
    let cmp = compare(&read_run(&prev)?, &read_run(&dir)?, threshold, force)?;
    print!("{}", render(&cmp));
    Ok(if cmp.regressions() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
