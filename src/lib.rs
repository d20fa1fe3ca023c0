//! modelbench: criterion-native benchmarks of language models on Hugging Face Candle.
//!
//! Data flows one way: knobs -> [`options::Plan`] -> [`source::resolve`] -> [`model::load`]
//! -> [`generate::generate`] -> [`generate::Trace`] -> records.

pub mod device;
pub mod error;
pub mod fill;
pub mod fsio;
pub mod generate;
pub mod gpu;
pub mod model;
pub mod sampling;
pub mod scenario;
pub mod source;
pub mod tokenizer;

pub use error::{Error, Result};
pub use fsio::atomic_write;
pub mod bench;
pub mod compare;
pub mod memory;
pub mod moe;
pub mod options;
pub mod perplexity;
pub mod plot;
pub mod psann;
pub mod quality;
pub mod record;
pub mod report;
pub mod roofline;
pub mod runner;
pub mod stats;
