//! Views of `modelbench load` runs: the Markdown table, the CSV and the concurrency-sweep plot
//! (tokens/s per user against total tokens/s), from the `serving-load` records.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::Result;
use crate::measure::latency::LoadSummary;
use crate::measure::stats::Percentiles;
use crate::output::na;
use crate::output::record::{Kind, Record};

/// The level (`c=4`, `rate=2/s`) and summary of a serving-load record.
pub fn level_of(r: &Record) -> Option<(String, LoadSummary)> {
    if r.kind != Kind::ServingLoad {
        return None;
    }
    let level = r.extra.get("level")?.as_str()?.to_string();
    let summary = serde_json::from_value(r.extra.get("summary")?.clone()).ok()?;
    Some((level, summary))
}

fn p3(p: Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:.1} / {:.1} / {:.1}", p.p50, p.p90, p.p99),
        None => "n/a".into(),
    }
}

/// One row per load level.
pub fn load_table(records: &[Record]) -> String {
    let mut s = String::from(
        "| Model | Level | Prompt tok (measured) | Max tok | OK / errors | req/s | output tok/s | tok/s per user | TTFT ms p50/p90/p99 | TPOT ms p50/p90/p99 | ITL ms p50/p90/p99 | E2E ms p50/p90/p99 | SLO | goodput req/s (attained) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in records {
        let Some((level, x)) = level_of(r) else {
            continue;
        };
        let measured = r
            .extra
            .get("prompt_tokens_measured")
            .and_then(|v| v.as_f64());
        let slo = r.extra.get("slo").and_then(|v| v.as_str()).unwrap_or("");
        let _ = writeln!(
            s,
            "| {} | {level} | {} ({}) | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.model.label,
            super::na_count(r.prompt_tokens),
            na(measured, 1),
            super::na_count(r.new_tokens),
            x.completed,
            x.errors,
            na(x.request_s, 2),
            na(x.output_tok_s, 1),
            na(x.tok_s_per_user, 1),
            p3(x.ttft_ms),
            p3(x.tpot_ms),
            p3(x.itl_ms),
            p3(x.e2e_ms),
            if slo.is_empty() { "-" } else { slo },
            match (x.goodput_request_s, x.slo_attained) {
                (Some(g), Some(a)) => format!("{g:.2} ({:.0}%)", a * 100.0),
                _ => "n/a".into(),
            }
        );
    }
    s
}

/// The same rows as CSV (empty cell: not measured).
pub fn load_csv(records: &[Record]) -> String {
    let mut s = String::from("model,level,prompt_tokens,prompt_tokens_measured,max_tokens,requests,completed,errors,duration_s,request_s,output_tok_s,tok_s_per_user,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,tpot_p50_ms,tpot_p90_ms,tpot_p99_ms,itl_p50_ms,itl_p90_ms,itl_p99_ms,e2e_p50_ms,e2e_p90_ms,e2e_p99_ms,slo,goodput_request_s,slo_attained\n");
    let o = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    let p = |v: Option<Percentiles>| match v {
        Some(p) => format!("{},{},{}", p.p50, p.p90, p.p99),
        None => ",,".into(),
    };
    for r in records {
        let Some((level, x)) = level_of(r) else {
            continue;
        };
        let _ = writeln!(
            s,
            "{},{level},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.model.label,
            super::csv_count(r.prompt_tokens),
            o(r.extra
                .get("prompt_tokens_measured")
                .and_then(|v| v.as_f64())),
            super::csv_count(r.new_tokens),
            x.requests,
            x.completed,
            x.errors,
            x.duration_s,
            o(x.request_s),
            o(x.output_tok_s),
            o(x.tok_s_per_user),
            p(x.ttft_ms),
            p(x.tpot_ms),
            p(x.itl_ms),
            p(x.e2e_ms),
            r.extra.get("slo").and_then(|v| v.as_str()).unwrap_or(""),
            o(x.goodput_request_s),
            o(x.slo_attained),
        );
    }
    s
}

/// The sweep plot: one point per level at (total output tok/s, median tok/s per user), a line
/// per model. Levels without both numbers are left out; Ok(false) when none has them.
pub fn sweep_png(path: &Path, records: &[Record]) -> Result<bool> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in records {
        let Some((_, x)) = level_of(r) else {
            continue;
        };
        let (Some(total), Some(user)) = (x.output_tok_s, x.tok_s_per_user) else {
            continue;
        };
        match series.iter_mut().find(|(n, _)| *n == r.model.label) {
            Some((_, v)) => v.push((total, user)),
            None => series.push((r.model.label.clone(), vec![(total, user)])),
        }
    }
    if series.is_empty() {
        return Ok(false);
    }
    crate::output::plot::lines_png(
        path,
        "Serving: per-user speed against total throughput",
        "total output tokens/s (log)",
        "tokens/s per user (median 1/TPOT)",
        &series,
    )?;
    Ok(true)
}

/// One row of the scaling view: a server's level beside its own concurrency-1 level.
struct ScalingRow {
    server: String,
    level: String,
    x: LoadSummary,
    /// Output tok/s of this level over the same server's `c=1` level (None: no such level,
    /// an open-loop level, or a throughput not measured).
    vs_c1: Option<f64>,
}

fn scaling_rows(records: &[Record]) -> Vec<ScalingRow> {
    let concurrency = |r: &Record| r.extra.get("concurrency").and_then(|v| v.as_u64());
    records
        .iter()
        .filter_map(|r| {
            let (level, x) = level_of(r)?;
            let c1 = records
                .iter()
                .filter(|o| o.model.label == r.model.label && concurrency(o) == Some(1))
                .filter_map(level_of)
                .next_back()
                .and_then(|(_, s)| s.output_tok_s)
                .filter(|v| *v > 0.0);
            let vs_c1 = match (concurrency(r), x.output_tok_s, c1) {
                (Some(_), Some(t), Some(c1)) => Some(t / c1),
                _ => None,
            };
            Some(ScalingRow {
                server: r.model.label.clone(),
                level,
                x,
                vs_c1,
            })
        })
        .collect()
}

fn p50_p99(p: Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:.1} / {:.1}", p.p50, p.p99),
        None => "n/a".into(),
    }
}

fn goodput(x: &LoadSummary) -> String {
    match (x.goodput_request_s, x.slo_attained) {
        (Some(g), Some(a)) => format!("{g:.2} ({:.0}%)", a * 100.0),
        _ => "n/a (no SLO)".into(),
    }
}

/// The cells of a scaling row, in [`SCALING_HEADER`]'s order.
fn scaling_cells(r: &ScalingRow) -> [String; 9] {
    [
        r.server.clone(),
        r.level.clone(),
        na(r.x.output_tok_s, 1),
        na(r.vs_c1, 2),
        na(r.x.tok_s_per_user, 1),
        p50_p99(r.x.ttft_ms),
        p50_p99(r.x.tpot_ms),
        goodput(&r.x),
        format!("{} / {}", r.x.completed, r.x.errors),
    ]
}

const SCALING_HEADER: [&str; 9] = [
    "Server",
    "Level",
    "output tok/s",
    "x c=1",
    "tok/s per user",
    "TTFT ms p50 / p99",
    "TPOT ms p50 / p99",
    "goodput req/s (attained)",
    "OK / errors",
];

/// Per server and level: output tok/s and its ratio to the same server's `c=1` level, per-user
/// speed, TTFT and TPOT p50/p99, goodput and errors (Markdown; what docs/serving.md and
/// scripts/serving-table.sh print). Empty when no record is a load level.
pub fn scaling_table(records: &[Record]) -> String {
    let rows = scaling_rows(records);
    if rows.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "| {} |\n|---|---|{}\n",
        SCALING_HEADER.join(" | "),
        "---:|".repeat(SCALING_HEADER.len() - 2)
    );
    for r in &rows {
        let _ = writeln!(s, "| {} |", scaling_cells(r).join(" | "));
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The `Serving` section of target-reports/index.html for the load run `run` (the folder's
/// name, for links) with `records`: the scaling table as HTML and, when `chart` is set, the
/// run's load.png (tokens/s per user against total tokens/s). None when no record is a load
/// level.
pub fn serving_html(run: &str, records: &[Record], chart: bool) -> Option<String> {
    let rows = scaling_rows(records);
    if rows.is_empty() {
        return None;
    }
    let run = esc(run);
    let mut h = format!(
        "<h2>Serving</h2>\n<p>Newest load run, {run} (<a href=\"{run}/load.md\">load.md</a> · <a href=\"{run}/load.csv\">load.csv</a> · <a href=\"{run}/requests.jsonl\">requests.jsonl</a>): per server and level; x c=1 is the output tok/s over the same server's concurrency-1 level. Errors never enter the latency figures.</p>\n<table id=\"serving\">\n<tr>"
    );
    for c in SCALING_HEADER {
        let _ = write!(h, "<th>{c}</th>");
    }
    h.push_str("</tr>\n");
    for r in &rows {
        h.push_str("<tr>");
        for c in scaling_cells(r) {
            let _ = write!(h, "<td>{}</td>", esc(&c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    if chart {
        let _ = writeln!(
            h,
            "<p>Tokens/s per user against total output tokens/s, one point per level:</p>\n<img src=\"{run}/load.png\" alt=\"serving: tokens/s per user against total tokens/s\">"
        );
    }
    Some(h)
}
