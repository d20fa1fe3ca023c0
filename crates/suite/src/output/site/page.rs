//! One benchmark's page: its history chart, the same as a table, and its paired comparisons.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::sections::{paired_row, PairedRun};
use super::{
    criterion_report, day_time, esc, foot, head, nav, relative, short, subject, svg, verdict_badge,
    Bench, HistPoint, DIR,
};
use crate::judge::speed::Verdict;
use crate::output::record::Kind;
use crate::output::summary;

/// The page of one benchmark.
pub(super) fn bench_page(
    root: &Path,
    b: &Bench,
    subjects: &HashMap<String, String>,
    paired: &[PairedRun],
) -> String {
    let last = &b.points.last().expect("a benchmark has a point").row.record;
    let mut h = head(&format!("{} · modelbench", b.id), "../style.css");
    h.push_str(&nav("../../"));
    let _ = writeln!(
        h,
        "<h1 class=\"mono\">{}</h1>\n<p class=\"meta\">{} · model {} · {} · sampling {} · shape <code>{}</code></p>",
        esc(&b.id),
        last.kind,
        esc(&last.model.label),
        esc(&last.dtype.name()),
        esc(if last.sampling_desc.is_empty() { "n/a" } else { &last.sampling_desc }),
        esc(&last.shape.to_string())
    );
    if let Some(p) = criterion_report(&b.id) {
        let _ = writeln!(
            h,
            "<p><a href=\"{}\">criterion's report of this benchmark</a></p>",
            esc(&relative(&root.join(DIR).join("bench"), &p))
        );
    }
    // Slots: the runs in order (shared by every machine).
    let mut runs: Vec<&str> = b.points.iter().map(|p| p.row.run.as_str()).collect();
    runs.sort();
    runs.dedup();
    let slots: Vec<(String, String)> = runs
        .iter()
        .map(|run| {
            let p = b
                .points
                .iter()
                .find(|p| p.row.run == *run)
                .expect("a run of the benchmark");
            (
                short(&p.row.record.build.git_commit).to_string(),
                day_time(&p.row.record.timestamp).chars().skip(5).collect(),
            )
        })
        .collect();
    let mut machines: Vec<&str> = b.points.iter().map(|p| p.machine.as_str()).collect();
    machines.sort();
    machines.dedup();
    let series: Vec<svg::Series> = machines
        .iter()
        .map(|m| svg::Series {
            name: (*m).to_string(),
            points: b
                .points
                .iter()
                .filter(|p| p.machine == *m)
                .map(|p| {
                    let r = &p.row.record;
                    let band = p.change.as_ref().map(|c| {
                        let prev = r.stats.median / c.ratio;
                        (prev * (1.0 - c.threshold), prev * (1.0 + c.threshold))
                    });
                    let flag = match p.change.as_ref().map(|c| c.verdict) {
                        Some(Verdict::Regression) => svg::Flag::Slower,
                        Some(Verdict::Improvement) => svg::Flag::Faster,
                        _ => svg::Flag::None,
                    };
                    svg::Point {
                        slot: runs.iter().position(|x| *x == p.row.run).unwrap_or(0),
                        median: r.stats.median,
                        ci: p.ci,
                        band,
                        flag,
                        title: hover(p, subjects),
                        run: p.row.run.clone(),
                    }
                })
                .collect(),
        })
        .collect();
    let _ = writeln!(
        h,
        "<h2>History</h2>\n<p class=\"muted\">One point per recorded run (x: commit and date, oldest left), one colour per machine; the bar is the bootstrap 95% interval of the median, the shaded box the previous run's median ± the noise threshold; a ringed point was judged SLOWER (red) or faster (green) against the previous run. Hover a point for the commit, its subject and the machine.</p>\n{}",
        svg::chart(&slots, &series, "median time per iteration")
    );
    h.push_str("<table id=\"history-table\" class=\"sortable\"><thead><tr><th>run</th><th>commit</th><th>date</th><th>machine</th><th class=\"num\">samples</th><th class=\"num\">median</th><th class=\"num\">95% CI</th><th class=\"num\">tok/s</th><th>verdict</th><th>time vs previous run</th><th>outputs vs previous run</th></tr></thead><tbody>\n");
    for p in b.points.iter().rev() {
        let r = &p.row.record;
        let (class, word) = verdict_badge(&p.change);
        let injected = r
            .injected
            .as_deref()
            .map(|i| format!("<span class=\"tag\">injected {}</span>", esc(i)))
            .unwrap_or_default()
            + &r.injected_numeric
                .as_deref()
                .map(|i| format!("<span class=\"tag\">numerics injected {}</span>", esc(i)))
                .unwrap_or_default()
            + if p.row.state == "interrupted" {
                "<span class=\"tag bad\" title=\"the run ended before its last benchmark: no later point's baseline\">interrupted run</span>"
            } else {
                ""
            };
        let _ = writeln!(
            h,
            "<tr class=\"history-row\"><td class=\"mono\"><a href=\"../../{run}/summary.md\">{run}</a>{injected}</td><td class=\"mono\" title=\"{}\">{}</td><td class=\"nowrap\">{}</td><td data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\" data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td data-sort=\"{word}\"><span class=\"verdict {class}\">{word}</span></td><td>{}</td><td>{}</td></tr>",
            esc(subject(subjects, &r.build.git_commit).unwrap_or("")),
            esc(short(&r.build.git_commit)),
            esc(&day_time(&r.timestamp)),
            esc(&p.machine),
            machine_cell(&p.machine),
            r.samples_s.len(),
            r.stats.median,
            esc(&summary::time(r.stats.median)),
            esc(&summary::interval(r.stats.median, p.ci)),
            r.tok_s.map(summary::sig3).unwrap_or_else(|| "n/a".into()),
            esc(&summary::change(&p.change)),
            super::index::outputs_badge(&p.change),
            run = esc(&p.row.run),
        );
    }
    h.push_str("</tbody></table>\n");
    // Paired comparisons of this scenario and model.
    let mine: Vec<(&PairedRun, &serde_json::Value)> = paired
        .iter()
        .rev()
        .flat_map(|p| p.rows.iter().map(move |r| (p, r)))
        .filter(|(p, r)| {
            last.kind == Kind::Generation
                && p.doc.get("model").and_then(|m| m.as_str()) == Some(last.model.label.as_str())
                && r.get("scenario").and_then(|s| s.as_str()) == Some(last.scenario.as_str())
        })
        .collect();
    h.push_str("<h2>Paired comparisons</h2>\n");
    if mine.is_empty() {
        h.push_str("<p class=\"muted\">None of this scenario and model (<code>modelbench compare --paired</code> writes them).</p>\n");
    } else {
        h.push_str("<table class=\"sortable\"><thead><tr><th>folder</th><th>A (base)</th><th>B (new)</th><th>model</th><th>scenario</th><th>metric</th><th class=\"num\">B/A</th><th>95% CI</th><th>verdict</th></tr></thead><tbody>\n");
        for (p, r) in mine {
            h.push_str(&paired_row(p, r, "../../"));
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str(&foot("../sort.js"));
    h
}

/// A machine identity in a table cell: the CPU and core count on one line, the rest of the
/// fingerprint (CPU id, GPU) small below it, so long fingerprints do not stretch the table.
pub(super) fn machine_cell(m: &str) -> String {
    match m.split_once(" | ") {
        Some((cpu, rest)) => format!(
            "{}<br><span class=\"small mono\">{}</span>",
            esc(cpu),
            esc(rest)
        ),
        None => esc(m),
    }
}

/// The hover text of a point: run, commit and subject, machine, median and interval, change.
pub(super) fn hover(p: &HistPoint, subjects: &HashMap<String, String>) -> String {
    let r = &p.row.record;
    format!(
        "{}\ncommit {}{}: {}\nmachine: {}\nmedian {} {}\n{}{}",
        p.row.run,
        short(&r.build.git_commit),
        if r.build.git_dirty == "true" {
            " (dirty)"
        } else {
            ""
        },
        subject(subjects, &r.build.git_commit).unwrap_or("(subject not in this checkout)"),
        r.hardware.describe(),
        summary::time(r.stats.median),
        summary::interval(r.stats.median, p.ci),
        summary::change(&p.change),
        r.injected
            .as_deref()
            .map(|i| format!("\ninjected slowdown: {i}"))
            .unwrap_or_default()
    )
}
