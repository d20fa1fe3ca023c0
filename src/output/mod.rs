//! What a run leaves behind: typed records, run folders and their tables, comparison of two
//! runs, plots, the results history database.

pub mod arch_table;
pub mod compare;
pub mod db;
pub mod flamegraph;
pub mod instructions;
pub mod noise;
pub mod peers;
pub mod plot;
pub mod record;
pub mod report;
pub mod serving;
pub mod summary;
