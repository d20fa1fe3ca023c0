//! The Candle label of a build, shared by `build.rs` (included there with `#[path]`, so it
//! uses nothing but std) and the library ([`crate::measure::candle_source`]).

/// The Candle a build used, as `build.rs` writes it into every record: the label a paired
/// side's build was given (MODELBENCH_CANDLE_SOURCE), else candle-core's version in
/// Cargo.lock, marked `(local path)` when the lock names no registry source for it.
pub fn label_from_lock(lock: &str, given: Option<&str>) -> String {
    if let Some(g) = given.map(str::trim).filter(|g| !g.is_empty()) {
        return g.to_string();
    }
    let Some(at) = lock.find("name = \"candle-core\"") else {
        return "unknown".into();
    };
    let block = lock[at..].split("\n\n").next().unwrap_or("");
    let version = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("version = \""))
        .map(|v| v.trim_end_matches('"').to_string());
    match version {
        Some(v) if block.contains("source = \"registry+") => v,
        Some(v) => format!("{v} (local path)"),
        None => "unknown".into(),
    }
}
