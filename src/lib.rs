//! modelbench: criterion-native benchmarks of language models on Hugging Face Candle.
//!
//! The folders are the layers, and imports point one way (a test, `tests/layers.rs`, fails
//! on one that points back up):
//!
//! `util`, `error` <- [`measure`] <- [`models`] <- [`engine`] <- [`output`] <- [`workloads`]
//! <- [`serving`] <- [`config`] <- {[`harness`], the `modelbench` binary}
//!
//! Data flows: knobs ([`config`]) -> plans -> [`models::source::resolve`] ->
//! [`models::loading::open`] -> a [`workloads::Workload`] run by the one trial loop
//! ([`workloads::TrialLoop`]) under criterion ([`harness`]) or the CLI -> one record builder
//! per workload -> [`output`].

pub mod error;
pub mod util;

pub mod measure;

pub mod models;

pub mod engine;

pub mod output;

pub mod workloads;

pub mod serving;

pub mod config;

pub mod harness;

pub use error::{Error, Result};
