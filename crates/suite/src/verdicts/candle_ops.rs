//! `modelbench ops --candle <VERSION|PATH>`: the per-op table of this repository's HEAD built
//! against another Candle (issue 48). The build is `compare --paired --new-candle`'s
//! (build.rs: a suite worktree per Candle source, cargo's `[patch.crates-io]`, one shared
//! target dir, the binary kept); the measurement is that build's own `ops`, run with the same
//! arguments less `--candle`, so the table it saves (`--json`) names the Candle it was built
//! against, and two tables of two Candles compare with `ops --base`. Without `--candle`,
//! `ops` as it is (app::ops).

use std::ffi::OsString;
use std::process::{Command, ExitCode};

use crate::app::ops::{ops_cmd, prepare, OpsArgs};
use crate::verdicts::build::{build_side_with, candle_source, head_to_build, Side};
use crate::Result;

/// `modelbench ops`: measured here, or (`--candle`) by this commit built against that Candle.
pub fn ops(a: OpsArgs) -> Result<ExitCode> {
    let Some(spec) = a.candle.as_deref() else {
        return ops_cmd(a).map(|_| ExitCode::SUCCESS);
    };
    // Everything checked before the build: the Candle source, then the arguments.
    let src = candle_source(Some(spec), "--candle")?.expect("a --candle value");
    prepare(&a)?;
    model_ready(&a.model)?;
    let commit = head_to_build("ops --candle")?;
    let side = Side::Commit {
        name: "HEAD".into(),
        commit,
    };
    let (exe, label) = build_side_with(side, "ops", Some(&src))?;
    println!("ops: measured by {label}");
    // The build's own fixture cache would be its worktree's, written by that Candle (0.11.0
    // cannot: a BF16 matmul); this one's keeps one fixture file for every Candle measured.
    let status = Command::new(&exe)
        .args(without_candle(std::env::args_os().skip(1)))
        .env(FIXTURE_CACHE, fixture_cache())
        .status()
        .map_err(|e| fail!("--candle: cannot start {}: {e}", exe.display()))?;
    // The build's `ops` printed its own error; its exit code is this one's.
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

/// The knob of the fixture models' cache (docs/knobs.md).
pub const FIXTURE_CACHE: &str = "MODELBENCH_FIXTURE_CACHE";

/// This process's fixture cache (the knob's value, or its default), for the Candle builds it
/// starts: they run this repository's HEAD, so they read the same fixture files instead of
/// writing their own under their worktrees (which every Candle cannot: 0.11.0 has no CPU
/// BF16 matmul), and both sides of a comparison load the very same file.
pub fn fixture_cache() -> std::path::PathBuf {
    crate::util::settings::current().fixture_cache
}

/// Resolves `model` here, before any Candle build: a bad reference is one line now, and a
/// fixture is written once into [`fixture_cache`] by this build, for every build after.
pub fn model_ready(model: &str) -> Result<()> {
    let r = crate::models::sources::ModelRef::parse(model).map_err(|e| fail!("--model: {e}"))?;
    crate::engine::scenario::prepare(model, &r, &[])?;
    Ok(())
}

/// The command line for the build's `ops`: this one's arguments (after the program) without
/// `--candle VALUE` / `--candle=VALUE`.
pub fn without_candle(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(x) = it.next() {
        if x == "--candle" {
            it.next();
            continue;
        }
        if x.to_str().is_some_and(|s| s.starts_with("--candle=")) {
            continue;
        }
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_builds_ops_gets_every_argument_but_the_candle() {
        assert_eq!(
            without_candle(args(&[
                "ops", "--model", "m", "--candle", "0.11.0", "--json", "a.json"
            ])),
            args(&["ops", "--model", "m", "--json", "a.json"])
        );
        assert_eq!(
            without_candle(args(&[
                "ops",
                "--candle=/x/candle",
                "--model",
                "m",
                "--quick"
            ])),
            args(&["ops", "--model", "m", "--quick"])
        );
        assert_eq!(
            without_candle(args(&["ops", "--model", "m"])),
            args(&["ops", "--model", "m"])
        );
    }

    #[test]
    fn a_bad_candle_is_one_line_before_anything_is_built() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: OpsArgs,
        }
        let parse = |args: &[&str]| {
            use clap::Parser;
            Cli::try_parse_from(std::iter::once("ops").chain(args.iter().copied()))
                .unwrap()
                .a
        };
        let a = parse(&[
            "--model",
            "gguf:fixture:gemma3",
            "--candle",
            "/no/such/candle",
        ]);
        let e = ops(a.clone()).unwrap_err().to_string();
        assert!(
            e.starts_with("--candle: candle source `/no/such/candle`: no such folder"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
        // The arguments are checked before the build too.
        let bad = parse(&[
            "--model",
            "gguf:fixture:gemma3",
            "--candle",
            "0.11.0",
            "--scenario",
            "prefill",
            "--depth",
            "10",
        ]);
        let e = ops(bad).unwrap_err().to_string();
        assert!(e.starts_with("--depth applies to --scenario decode"), "{e}");
    }
}
