//! `modelbench list`: scenarios, tiers, model sources and what is cached.

use std::path::Path;

use crate::engine::scenario::{Scenario, Tier};
use crate::models::sources::{fixture_cache_dir, hub_cache_dir, offline, sources_help, SYNTHETIC};

pub fn list() -> crate::Result<()> {
    println!("Scenarios (prompt/new tokens, sampling):");
    for s in Scenario::all() {
        println!(
            "  {:<10} {:>5}/{:<4} {:<34} {}",
            s.name,
            s.prompt_tokens,
            s.new_tokens,
            s.sampling.describe(),
            s.purpose
        );
    }
    println!("\nTiers:");
    for t in [Tier::Quick, Tier::Standard, Tier::Full] {
        println!("  {:<9} {}", t.name(), t.scenario_names().join(", "));
    }
    println!("\nGGUF families (general.architecture: implementations, the first is the default unless it refuses the file; fixtures):");
    for f in crate::models::families::GGUF_FAMILIES {
        println!(
            "  {:<8} {:<34} gguf:fixture:{}",
            f.arch,
            f.implementation_names(),
            f.fixtures
                .iter()
                .map(|x| x.name)
                .collect::<Vec<_>>()
                .join(", gguf:fixture:")
        );
    }
    println!("\nModel sources: {}", sources_help());
    println!(
        "  synthetic shapes: {}",
        SYNTHETIC
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "\nFixtures written under {}:",
        fixture_cache_dir().display()
    );
    print_cached(&fixture_cache_dir());
    println!(
        "\nHugging Face cache {} (offline: {}):",
        hub_cache_dir().display(),
        offline()
    );
    print_cached(&hub_cache_dir());
    Ok(())
}

/// Cached repos as references a user can paste: `gguf:owner/repo` for a repo whose snapshot
/// holds a .gguf file (as `--model`, a bare `owner/repo` means safetensors), else `owner/repo`.
pub fn print_cached(dir: &Path) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let repo = n.strip_prefix("models--")?.replacen("--", "/", 1);
            let has_gguf = std::fs::read_dir(e.path().join("snapshots"))
                .into_iter()
                .flatten()
                .filter_map(|s| s.ok())
                .filter_map(|s| std::fs::read_dir(s.path()).ok())
                .flatten()
                .filter_map(|f| f.ok())
                .any(|f| f.path().extension().is_some_and(|x| x == "gguf"));
            Some(if has_gguf {
                format!("gguf:{repo}")
            } else {
                repo
            })
        })
        .collect();
    found.sort();
    if found.is_empty() {
        println!("  (none)");
    }
    for f in found {
        println!("  {f}");
    }
}
