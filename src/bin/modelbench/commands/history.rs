//! `modelbench history --bench ID --model M`: one benchmark across commits and machines, from
//! the results database; a table ordered by time and a PNG trend (tok/s, a line per hardware).

use std::path::PathBuf;

use modelbench::output::report::{na, reports_root};

use super::db::{cell, open, short};

pub fn history(
    bench: &str,
    model: &str,
    flag: Option<&str>,
    png: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut db = open(flag)?;
    let rows = db.history(bench, model)?;
    if rows.is_empty() {
        let known: Vec<String> = db
            .trend_series(1)?
            .into_iter()
            .take(10)
            .map(|(b, m)| format!("{b} ({m})"))
            .collect();
        anyhow::bail!(
            "{}: no record of benchmark `{bench}` on model `{model}` (--bench takes an id or its group; benchmarks with tok/s there: {})",
            db.target().describe(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    println!(
        "| time | commit | dirty | hardware | benchmark | shape | samples | median s | tok/s | TTFT p99 ms | J/token |\n|---|---|---|---|---|---|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.timestamp,
            short(&r.git_commit),
            r.git_dirty,
            cell(&r.hardware_fp),
            cell(&r.bench_id),
            cell(&r.shape),
            r.n_samples,
            na(r.median_s, 4),
            na(r.tok_s, 1),
            na(r.ttft_p99_ms, 3),
            na(r.j_per_token, 6)
        );
    }
    let series = modelbench::output::db::trend_lines(&rows);
    if series.is_empty() {
        println!("no trend: none of these records has tok/s");
        return Ok(());
    }
    let path = png.unwrap_or_else(|| {
        let slug = modelbench::output::db::slug(&format!("{bench}-{model}"));
        reports_root().join(format!("history-{slug}.png"))
    });
    modelbench::output::plot::trend_png(
        &path,
        &format!("{bench} on {model}: tok/s per hardware"),
        "run (time order)",
        "tok/s",
        &series,
    )?;
    println!("trend: {}", path.display());
    Ok(())
}
