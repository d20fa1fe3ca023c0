//! Configuration: the one knob table (name, doc, default, parser), the value parsers it checks
//! with, and the plans built from it.

pub mod knobs;
pub mod plans;
pub mod sweep;
pub mod train;
pub mod values;
