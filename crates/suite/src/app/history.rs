//! `modelbench history --bench ID --model M`: one benchmark across commits and machines, from
//! the results database; a table ordered by time and a PNG trend (tok/s, a line per hardware).

use std::path::PathBuf;

use crate::output::report::{na, reports_root};

use super::db::{cell, open, short};

pub fn history(
    bench: &str,
    model: &str,
    flag: Option<&str>,
    png: Option<PathBuf>,
) -> crate::Result<()> {
    if bench == "peers" {
        return peers_history(model, png);
    }
    let mut db = open(flag)?;
    let rows = db.history(bench, model)?;
    if rows.is_empty() {
        let known: Vec<String> = db
            .trend_series(1)?
            .into_iter()
            .take(10)
            .map(|(b, m)| format!("{b} ({m})"))
            .collect();
        bail!(
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
    let series = crate::output::db::trend_lines(&rows);
    if series.is_empty() {
        println!("no trend: none of these records has tok/s");
        return Ok(());
    }
    let path = png.unwrap_or_else(|| {
        let slug = crate::output::db::slug(&format!("{bench}-{model}"));
        reports_root().join(format!("history-{slug}.png"))
    });
    crate::output::plot::trend_png(
        &path,
        &format!("{bench} on {model}: tok/s per hardware"),
        ("run (time order)", "tok/s"),
        &series,
    )?;
    println!("trend: {}", path.display());
    Ok(())
}

/// `history --bench peers`: every `modelbench peers` run folder of `model` under the reports
/// root, oldest first: the candle/peer E2E ratio per scenario and engine setting, per commit
/// and machine, as a table and a PNG.
fn peers_history(model: &str, png: Option<PathBuf>) -> crate::Result<()> {
    use crate::output::peers::{
        peers_history as points_of, peers_history_png, peers_history_table,
    };
    let root = reports_root();
    let runs: Vec<(String, Vec<crate::output::record::Record>)> =
        crate::output::report::list_runs(&root)
            .iter()
            .filter(|p| p.join("peers.md").is_file())
            .filter_map(|p| {
                let n = p.file_name()?.to_string_lossy().into_owned();
                let recs: Vec<_> = crate::output::report::read_run(p)
                    .ok()?
                    .into_iter()
                    .filter(|r| r.model.label == model)
                    .collect();
                Some((n, recs))
            })
            .collect();
    let points = points_of(&runs);
    ensure!(
        !points.is_empty(),
        "{}: no `modelbench peers` run of model `{model}` with a peer ratio (run `modelbench peers --model {model}` first)",
        root.display()
    );
    print!("{}", peers_history_table(&points));
    let path = png.unwrap_or_else(|| {
        root.join(format!(
            "history-peers-{}.png",
            crate::output::db::slug(model)
        ))
    });
    if peers_history_png(&path, &points)? {
        println!("chart: {}", path.display());
    }
    Ok(())
}
