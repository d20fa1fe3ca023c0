//! modelbench's suite library (crate `modelbench-suite`): the engine (prompts, sampling,
//! generation, perplexity), output (records, run folders, verdicts, database, site),
//! workloads, serving, knobs and plans, the criterion harness, what each CLI command does
//! ([`app`]) and the A/B verdicts between builds ([`verdicts`]).
//!
//! Inside this crate the folders are layers and imports point one way (tests/layers.rs
//! checks what the compiler cannot):
//!
//! [`engine`] <- [`output`] <- [`workloads`] <- [`serving`] <- [`config`] <- [`harness`] <-
//! [`app`] <- [`verdicts`]
//!
//! Below it, crates the compiler keeps apart: `modelbench-models` (re-exported as
//! [`models`]) <- `modelbench-measure` ([`judge`] <- [`measure`], [`util`]) and
//! `modelbench-kernels` (inside `models`). Every verdict is made in [`judge`]. Each crate has
//! its own error type and wraps the one below ([`error`]).
//!
//! Data flows: knobs ([`config`]) -> plans -> [`models::sources::resolve`] ->
//! [`models::sources::loading::open`] -> a [`workloads::Workload`] run by the one trial loop
//! ([`workloads::TrialLoop`]) under criterion ([`harness`]) or the CLI -> one record builder
//! per workload -> [`output`].

pub use modelbench_models::{judge, measure, models, util};

pub mod error;
pub use error::{Error, Result};

pub mod engine;

pub mod output;

pub mod workloads;

pub mod serving;

pub mod config;

pub mod harness;

/// `fail!`, `bail!` and `ensure!` of the command layers ([`app`], [`verdicts`]): an
/// [`Error::Command`] with a one-line formatted message.
macro_rules! fail {
    ($($t:tt)*) => { $crate::Error::Command(format!($($t)*)) };
}
macro_rules! bail {
    ($($t:tt)*) => { return Err(fail!($($t)*)) };
}
macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => { if !$cond { bail!($($t)*) } };
}

pub mod app;

pub mod verdicts;
