//! Helpers below every layer: atomic file writes, seeded tensors, UTC timestamps.

pub mod fill;
pub mod fsio;
pub mod time;
