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
pub mod quality;
pub mod record;
pub mod report;
pub mod runs;
pub mod serving;
pub mod site;
pub mod summary;

/// A number with `prec` decimals, or `n/a` when it was not measured (tables).
/// (Here, not in `report`, so that `report` and the views it shows share it without an
/// import cycle.)
pub fn na(v: Option<f64>, prec: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "n/a".into())
}
