//! What a run leaves behind: typed records, run folders and their tables, comparison of two
//! runs, plots.

pub mod compare;
pub mod plot;
pub mod record;
pub mod report;
