//! Configuration: the one knob table (name, doc, default, parser) and the plans built from it.

pub mod knobs;
pub mod plans;
