//! Helpers below every layer: atomic file writes, seeded tensors, UTC timestamps, and the
//! path settings the knob table installs for the layers below it (settings.rs).

pub mod fill;
pub mod fsio;
pub mod settings;
pub mod time;
