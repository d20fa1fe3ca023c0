//! modelbench: criterion-native benchmarks of language models on Hugging Face Candle.
//!
//! This package is the top: the criterion benches (benches/), the `modelbench` binary
//! (src/bin/) and the tests (tests/) use the library through this facade. The layers are the
//! workspace's crates, and the compiler keeps their imports pointing one way
//! (docs/architecture.md):
//!
//! `modelbench-kernels` <- `modelbench-measure` ([`error`], [`util`], [`measure`], [`judge`]) <-
//! `modelbench-models` ([`models`]) <- `modelbench-suite` ([`engine`] <- [`output`] <-
//! [`workloads`] <- [`serving`] <- [`config`] <- [`harness`]) <- this package.

pub use modelbench_suite::*;
