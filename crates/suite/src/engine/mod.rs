//! The generation engine: prompts, sampling, prefill + decode with per-token timestamps, and
//! sliding-window perplexity.

pub mod generate;
pub mod perplexity;
pub mod preflight;
pub mod probe;
pub mod sampling;
pub mod scenario;
