//! modelbench's measurement layer (crate `modelbench-measure`): the error type every layer
//! returns, helpers below every layer ([`util`]), measurement ([`measure`]): statistics,
//! timing, memory, threads, hardware and machine identity, devices; and the one place
//! verdicts are made ([`judge`]: numbers in, verdict out), above `measure` and below every
//! layer that calls it.
//!
//! The crates are the layers (docs/architecture.md): `modelbench-kernels` <-
//! `modelbench-measure` <- `modelbench-models` <- `modelbench-suite` <- `modelbench` (the
//! benches, the tests and the CLI). Each crate re-exports the modules of the crates below it
//! at its root, so a path such as `crate::measure::stats` reads the same in every layer, and
//! a path to a layer above does not compile.

pub mod error;
pub mod judge;
pub mod measure;
pub mod util;

pub use error::{Error, Result};
