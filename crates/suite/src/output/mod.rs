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

/// A count (tokens, a seed), or `n/a` where the workload has none (tables).
/// (These helpers are here, not in `report`, so that `report` and the views it shows share
/// them without an import cycle.)
pub fn na_count(v: Option<impl std::fmt::Display>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "n/a".into())
}

/// A CSV cell of a count: empty where the workload has none.
pub fn csv_count(v: Option<impl std::fmt::Display>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// A number with `prec` decimals, or `n/a` when it was not measured (tables).
pub fn na(v: Option<f64>, prec: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "n/a".into())
}
