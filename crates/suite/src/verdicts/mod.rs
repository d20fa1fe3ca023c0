//! A/B verdicts between builds and runs, the top layer of the suite: `compare` of two runs or
//! commits (compare.rs, with `--profile`), paired A/B of two executables or commits in the
//! same minutes (paired.rs, its worker process worker.rs, the builds of each side build.rs),
//! the first slow commit (bisect.rs; of a Candle git history: candle_bisect.rs), the per-op
//! table of this commit built against another Candle (candle_ops.rs), continuous
//! benchmarking against the previous run and a baseline (continuous.rs), the measured power of the gates (sensitivity.rs), this machine's
//! run-to-run noise (noise.rs), instructions counted under valgrind (instructions.rs), and
//! the per-op tables and flame graphs of a flagged regression (profile.rs). Each command's
//! options are its `clap::Args` type beside its function; the binary parses and calls one.

pub mod bisect;
pub mod build;
pub mod candle_bisect;
pub mod candle_ops;
pub mod compare;
pub mod continuous;
pub mod instructions;
pub mod noise;
pub mod paired;
pub mod profile;
pub mod sensitivity;
pub mod worker;

/// `modelbench bisect`: of this repository's commits, or (`--candle-repo`) of a Candle git
/// history.
pub fn bisect(a: &bisect::BisectArgs) -> crate::Result<std::process::ExitCode> {
    match &a.candle_repo {
        Some(repo) => candle_bisect::bisect(a, repo),
        None => bisect::bisect(a),
    }
}
