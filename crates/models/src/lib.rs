//! modelbench's model layer (crate `modelbench-models`): GGUF reading, validation (files are
//! untrusted input) and fixtures, tokenizers from GGUF metadata, the family table, candle-
//! transformers' models and the project's batched ones, and model sources (fixture,
//! synthetic, HF cache, folder, GGUF file). See [`models`].
//!
//! Below it: `modelbench-measure` (re-exported here as [`util`], [`measure`], [`judge`], so
//! `crate::measure::x` reads as it does in every layer; its error type is wrapped by this
//! crate's own [`error`]) and `modelbench-kernels` (as `models::q8_matmul`,
//! `models::host_ops`).

pub use modelbench_measure::{judge, measure, util};

pub mod error;
pub use error::{Error, Result};

pub mod models;
