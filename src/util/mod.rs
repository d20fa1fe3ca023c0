//! Helpers below every layer: atomic file writes, seeded tensors, UTC timestamps, and the
//! path settings the knob table installs for the layers below it (settings.rs), and where the
//! llama.cpp build is (llama_cpp.rs).

pub mod fill;
pub mod fsio;
pub mod llama_cpp;
pub mod settings;
pub mod time;
