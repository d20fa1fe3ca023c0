//! The index page's sections, each shown only when a run produced its data (peers, ops, quality,
//! serving, depth, PSANN grid, training, paired comparisons).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::index::file_name;
use super::{csv_html, esc, markdown_html};
use crate::output::record::Record;
use crate::output::runs::read_run;

/// A section of what else runs produced: the newest folder holding `marker`.
pub(super) struct Section {
    id: &'static str,
    title: &'static str,
    blurb: &'static str,
    marker: &'static str,
    markdown: &'static [&'static str],
    csv: &'static [&'static str],
    images: &'static [&'static str],
    files: &'static [&'static str],
}

pub(super) const SECTIONS: &[Section] = &[
    Section {
        id: "peers",
        title: "Peers",
        blurb: "The same scenarios run by each engine (candle, llama.cpp, PyTorch) at the same prompt ids, lengths and threads: ratios candle / peer with paired 95% intervals, and the settings.",
        marker: "peers.md",
        markdown: &["peers.md"],
        csv: &[],
        images: &["peers.png"],
        files: &["peers.md", "peers.png", "results.jsonl"],
    },
    Section {
        id: "ops",
        title: "Ops",
        blurb: "Per-op profiles (time per op kind, the largest gaps) written by a comparison that flagged a regression.",
        marker: "ops-regression.md",
        markdown: &["ops-regression.md"],
        csv: &[],
        images: &[],
        files: &["ops-regression.md", "paired.md", "paired.json"],
    },
    Section {
        id: "ops-profile",
        title: "Ops (profile of a comparison)",
        blurb: "Where the time went, per op, in the two runs of a comparison.",
        marker: "profile.md",
        markdown: &["profile.md"],
        csv: &[],
        images: &[],
        files: &["profile.md"],
    },
    Section {
        id: "depth",
        title: "Depth",
        blurb: "Prefill and decode throughput against KV-cache depth.",
        marker: "depth.csv",
        markdown: &[],
        csv: &["depth.csv"],
        images: &["depth.png"],
        files: &["depth.csv", "depth.png", "results.jsonl"],
    },
    Section {
        id: "psann",
        title: "PSANN grid",
        blurb: "PSANN-LM forward throughput over the grid of bases and batch sizes.",
        marker: "throughput.csv",
        markdown: &["throughput.md"],
        csv: &[],
        images: &["throughput.png"],
        files: &["throughput.csv", "throughput.md", "throughput.png"],
    },
    Section {
        id: "checkpoint",
        title: "Checkpointing memory",
        blurb: "Peak memory of training steps with and without activation checkpointing.",
        marker: "memory.json",
        markdown: &[],
        csv: &[],
        images: &[],
        files: &["memory.json", "results.jsonl"],
    },
    Section {
        id: "training",
        title: "Training",
        blurb: "The training shoot-out's leaderboard and loss curves.",
        marker: "leaderboard.md",
        markdown: &["leaderboard.md"],
        csv: &[],
        images: &["loss_curve.png"],
        files: &["leaderboard.md", "summary.csv", "metrics.json", "steps.csv"],
    },
];

pub(super) fn sections(h: &mut String, root: &Path, folders: &[PathBuf], paired: &[PairedRun]) {
    for s in SECTIONS {
        let Some(dir) = folders.iter().rev().find(|d| d.join(s.marker).is_file()) else {
            continue;
        };
        let name = file_name(dir);
        let _ = writeln!(
            h,
            "<h2 id=\"{}\">{}</h2>\n<p class=\"meta\">Newest: <span class=\"mono\">{}</span> · {}</p>\n<p class=\"files\">{}</p>",
            s.id,
            s.title,
            esc(&name),
            s.blurb,
            s.files
                .iter()
                .filter(|f| dir.join(f).is_file())
                .map(|f| format!("<a href=\"{}/{f}\">{f}</a>", esc(&name)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for f in s.markdown {
            if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
                h.push_str(&markdown_html(&t));
            }
        }
        for f in s.csv {
            if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
                h.push_str(&csv_html(&t));
            }
        }
        for f in s.images {
            if dir.join(f).is_file() {
                let _ = writeln!(
                    h,
                    "<p><img class=\"figure\" src=\"{}/{f}\" alt=\"{} ({f})\"></p>",
                    esc(&name),
                    s.title
                );
            }
        }
        let older = folders
            .iter()
            .filter(|d| *d != dir && d.join(s.marker).is_file())
            .count();
        if older > 0 {
            let _ = writeln!(
                h,
                "<p class=\"muted\">{older} older run folder(s) hold {}: see Runs.</p>",
                s.marker
            );
        }
        if s.id == "peers" && root.join("peers-history.png").is_file() {
            h.push_str("<h3>candle / peer across runs</h3>\n<p><img class=\"figure\" src=\"peers-history.png\" alt=\"peers history\"></p>\n");
        }
    }
    quality_section(h, folders);
    // Serving: the newest load run, as before (`output::serving`).
    if let Some(latest) = folders
        .iter()
        .rev()
        .find(|p| p.join("requests.jsonl").is_file() || p.join("load.md").is_file())
    {
        let name = file_name(latest);
        match read_run(latest) {
            Ok(records) => {
                let chart = latest.join("load.png").is_file();
                if let Some(section) = crate::output::serving::serving_html(&name, &records, chart)
                {
                    h.push_str(&section);
                }
            }
            Err(e) => {
                let _ = writeln!(
                    h,
                    "<h2>Serving</h2>\n<p>load results of {} not available: {}</p>",
                    esc(&name),
                    esc(&e.to_string())
                );
            }
        }
    }
    if !paired.is_empty() {
        h.push_str("<h2 id=\"paired\">Paired comparisons</h2>\n<p class=\"muted\">A/B runs of two builds side by side (<code>modelbench compare --paired</code>): per scenario and phase, the median of per-pair ratios B/A with its 95% interval and the verdict.</p>\n<table class=\"sortable\"><thead><tr><th>folder</th><th>A (base)</th><th>B (new)</th><th>model</th><th>scenario</th><th>metric</th><th class=\"num\">B/A</th><th>95% CI</th><th>verdict</th></tr></thead><tbody>\n");
        for p in paired.iter().rev() {
            for r in &p.rows {
                h.push_str(&paired_row(p, r, ""));
            }
        }
        h.push_str("</tbody></table>\n");
    }
}

/// The quality gate's verdicts (KL divergence against llama.cpp) of the newest run whose
/// records carry one that ran (status passed or failed; of the newest [`QUALITY_LOOKBACK`]):
/// per model file and implementation.
pub(super) fn quality_section(h: &mut String, folders: &[PathBuf]) {
    let judged = |r: &Record| {
        r.quality
            .as_ref()
            .and_then(|q| q.get("status"))
            .and_then(|s| s.as_str())
            .is_some_and(|s| s == "passed" || s == "failed")
    };
    for dir in folders.iter().rev().take(QUALITY_LOOKBACK) {
        let Ok(records) = read_run(dir) else { continue };
        if !records.iter().any(judged) {
            continue;
        }
        let name = file_name(dir);
        let _ = writeln!(
            h,
            "<h2 id=\"quality\">Quality (KL divergence)</h2>\n<p class=\"meta\">Newest: <span class=\"mono\">{}</span> · the quality gate's verdict per model file and implementation (<code>modelbench verify</code>) · <a href=\"{0}/results.jsonl\">results.jsonl</a></p>\n<table class=\"sortable\"><thead><tr><th>model</th><th>implementation</th><th>device</th><th>dtype</th><th>status</th><th>checks</th></tr></thead><tbody>",
            esc(&name)
        );
        let mut seen = std::collections::HashSet::new();
        for r in &records {
            let Some(q) = r.quality.as_ref() else {
                continue;
            };
            let s = |v: Option<&serde_json::Value>| {
                v.and_then(|x| x.as_str()).unwrap_or_default().to_string()
            };
            let key = q.get("key");
            let row = (
                r.model.label.clone(),
                s(key.and_then(|k| k.get("implementation"))),
                s(key.and_then(|k| k.get("device"))),
                s(key.and_then(|k| k.get("dtype"))),
            );
            if !seen.insert(row.clone()) {
                continue;
            }
            let status = s(q.get("status"));
            let class = match status.as_str() {
                "passed" => "faster",
                "failed" => "slower",
                _ => "",
            };
            let checks = q
                .get("verdict")
                .and_then(|v| v.get("checks"))
                .and_then(|c| c.as_array())
                .map(|c| {
                    c.iter()
                        .map(|c| {
                            format!(
                                "{} {} (limit {}) {}",
                                s(c.get("name")),
                                c.get("value")
                                    .and_then(|v| v.as_f64())
                                    .map(|v| format!("{v:.4}"))
                                    .unwrap_or_default(),
                                s(c.get("limit")),
                                if c.get("passed").and_then(|p| p.as_bool()) == Some(true) {
                                    "ok"
                                } else {
                                    "FAILED"
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| s(q.get("why")));
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><span class=\"verdict {class}\">{}</span></td><td>{}</td></tr>",
                esc(&row.0),
                esc(&row.1),
                esc(&row.2),
                esc(&row.3),
                esc(&status),
                esc(&checks)
            );
        }
        h.push_str("</tbody></table>\n");
        return;
    }
}

/// How many run folders, newest first, are searched for quality verdicts.
pub const QUALITY_LOOKBACK: usize = 50;

/// A folder written by `compare --paired` (paired.json).
pub(super) struct PairedRun {
    pub(super) folder: String,
    pub(super) doc: serde_json::Value,
    pub(super) rows: Vec<serde_json::Value>,
}

pub(super) fn paired_runs(root: &Path) -> Vec<PairedRun> {
    let mut out: Vec<PairedRun> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path().join("paired.json");
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
            let rows = doc.get("rows")?.as_array()?.clone();
            Some(PairedRun {
                folder: e.file_name().to_string_lossy().into_owned(),
                doc,
                rows,
            })
        })
        .collect();
    out.sort_by(|a, b| a.folder.cmp(&b.folder));
    out
}

pub(super) fn paired_row(p: &PairedRun, r: &serde_json::Value, prefix: &str) -> String {
    let s = |v: Option<&serde_json::Value>| {
        v.and_then(|x| x.as_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let verdict = s(r.get("verdict"));
    // The stored word read back (`judge::paired::PairedVerdict`), coloured as the speed verdict
    // it reads as; an open one (Undecided, too few pairs) or an unknown word has no colour.
    let class = verdict
        .parse::<crate::judge::paired::PairedVerdict>()
        .ok()
        .and_then(|v| v.speed())
        .map_or("", |v| v.words().class);
    // `ci` (with `confidence`) since the sequential design; `ci95` in older folders.
    let ci = r
        .get("ci")
        .or_else(|| r.get("ci95"))
        .and_then(|c| c.as_array())
        .map(|c| {
            format!(
                "[{:.3}, {:.3}]",
                c.first().and_then(|x| x.as_f64()).unwrap_or(f64::NAN),
                c.get(1).and_then(|x| x.as_f64()).unwrap_or(f64::NAN)
            )
        })
        .unwrap_or_else(|| "n/a".into());
    let inject = s(p.doc.get("inject"));
    format!(
        "<tr><td class=\"mono\"><a href=\"{prefix}{f}/paired.md\">{f}</a></td><td class=\"mono\">{}</td><td class=\"mono\">{}{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.3}x</td><td>{ci}</td><td><span class=\"verdict {class}\">{}</span> <span class=\"muted\">(±{:.1}%)</span></td></tr>\n",
        esc(&s(p.doc.get("base"))),
        esc(&s(p.doc.get("new"))),
        if inject.is_empty() {
            String::new()
        } else {
            format!("<span class=\"tag\">injected {}</span>", esc(&inject))
        },
        esc(&s(p.doc.get("model"))),
        esc(&s(r.get("scenario"))),
        esc(&s(r.get("metric"))),
        r.get("ratio").and_then(|x| x.as_f64()).unwrap_or(f64::NAN),
        esc(&verdict),
        p.doc.get("threshold").and_then(|x| x.as_f64()).unwrap_or(f64::NAN) * 100.0,
        f = esc(&p.folder),
    )
}
