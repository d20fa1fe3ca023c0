//! The index page: the newest run's summary table, the flagged list, every benchmark, the run folders.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::page::machine_cell;
use super::sections::{sections, PairedRun};
use super::{
    criterion_report, day_time, esc, foot, head, machine_identity, nav, relative, short,
    verdict_badge, Bench, DbRow,
};
use crate::judge::noise::{threshold_for, NoiseProfile};
use crate::judge::speed::Verdict;
use crate::output::noise;
use crate::output::record::Record;
use crate::output::runs::{list_runs, read_run, run_state, RunState};
use crate::output::summary::{self, Change, Line};

/// The index page.
pub(super) fn index_page(
    root: &Path,
    rows: &[DbRow],
    benches: &[Bench],
    pages: &HashMap<&str, &str>,
    paired: &[PairedRun],
    db_note: Option<String>,
    profile: &mut dyn FnMut(&str) -> Option<NoiseProfile>,
) -> String {
    let mut h = head("modelbench report", "site/style.css");
    h.push_str(&nav(""));
    let folders = list_runs(root);
    h.push_str("<h1>modelbench report</h1>\n");
    // The newest run with a summary (criterion records: `cargo bench`).
    let mut shown = false;
    for dir in folders.iter().rev() {
        let Ok(records) = read_run(dir) else { continue };
        if !records.iter().any(summary::counts) {
            continue;
        }
        let name = file_name(dir);
        let fp = records
            .iter()
            .find(|r| summary::counts(r))
            .map(|r| r.hardware.fingerprint())
            .unwrap_or_default();
        let prof = profile(&fp);
        let lines = summary::lines(root, dir, &records, &|id| {
            threshold_for(prof.as_ref(), id).0
        });
        let mine: Vec<&Record> = records.iter().filter(|r| summary::counts(r)).collect();
        let thresholds = match &prof {
            Some(p) => format!(
                "<p class=\"muted\" id=\"thresholds\">Noise thresholds: measured on this machine ({} runs of commit <code>{}</code>, <code>{}</code>); a benchmark without a measurement uses the default ±{:.0}%.</p>\n",
                p.runs.len(),
                esc(short(&p.build.git_commit)),
                esc(&relative(root, &noise::path_for(root, &fp))),
                crate::judge::noise::DEFAULT_THRESHOLD * 100.0
            ),
            None => format!(
                "<p class=\"note\" id=\"thresholds\">No noise thresholds were measured on this machine (<code>{}</code>): every verdict uses the default ±{:.0}%, and on a busy machine that flags changes that are only noise. Measure them with <code>modelbench noise --measure 4</code>.</p>\n",
                esc(&fp),
                crate::judge::noise::DEFAULT_THRESHOLD * 100.0
            ),
        };
        summary_section(
            &mut h,
            root,
            (&name, &mine, &lines),
            pages,
            folders.last() != Some(dir),
            &thresholds,
        );
        shown = true;
        break;
    }
    if !shown {
        h.push_str("<h2 id=\"summary\">Newest run</h2>\n<p>No run folder holds a summary yet: the summary covers the benchmarks <code>cargo bench</code> measured (criterion's records). Run <code>cargo bench</code>, then open this page again.</p>\n");
    }
    h.push_str("<div id=\"sections\"></div>\n");
    sections(&mut h, root, &folders, paired);
    all_benchmarks(&mut h, benches, db_note.as_deref());
    runs_table(&mut h, &folders, rows);
    h.push_str(&foot("site/sort.js"));
    h
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn summary_section(
    h: &mut String,
    root: &Path,
    (run, mine, lines): (&str, &[&Record], &[Line]),
    pages: &HashMap<&str, &str>,
    newer_exists: bool,
    // The paragraph saying where the noise thresholds come from.
    thresholds: &str,
) {
    let first = mine.first();
    let _ = writeln!(h, "<h2 id=\"summary\">Newest run: {}</h2>", esc(run));
    if let Some(r) = first {
        let _ = writeln!(
            h,
            "<p class=\"meta\">commit <code>{}</code>{} · {} · {} · {} benchmarks · <a href=\"{r_}/summary.md\">summary.md</a> · <a href=\"{r_}/results.csv\">results.csv</a> · <a href=\"{r_}/results.jsonl\">results.jsonl</a></p>",
            esc(short(&r.build.git_commit)),
            if r.build.git_dirty == "true" { " (dirty)" } else { "" },
            esc(&day_time(&r.timestamp)),
            esc(&r.hardware.describe()),
            lines.len(),
            r_ = esc(run)
        );
    }
    match run_state(&root.join(run)) {
        RunState::Interrupted => h.push_str("<p class=\"note\" id=\"run-state\">This run was <strong>interrupted</strong>: it ended before its last benchmark (killed, crashed or failed). Its records are shown; it is no later run's baseline.</p>\n"),
        RunState::Running => h.push_str("<p class=\"muted\" id=\"run-state\">This run is still running: the table holds the benchmarks it has finished so far.</p>\n"),
        RunState::Complete | RunState::Unmarked => {}
    }
    if newer_exists {
        h.push_str("<p class=\"muted\">Newer run folders hold no <code>cargo bench</code> records (CLI runs, load tests, peers); they are listed under Runs and in the sections below.</p>\n");
    }
    let count = |v: Verdict| {
        lines
            .iter()
            .filter(|l| l.change.as_ref().map(|c| c.verdict) == Some(v))
            .count()
    };
    let first_runs = lines.iter().filter(|l| l.change.is_none()).count();
    let outputs_changed = lines
        .iter()
        .filter(|l| {
            l.change.as_ref().map(|c| c.outputs.verdict)
                == Some(crate::judge::outputs::OutputVerdict::Changed)
        })
        .count();
    let _ = writeln!(
        h,
        "<div class=\"cards\"><div class=\"card\"><div class=\"n\">{}</div>benchmarks</div><div class=\"card bad\"><div class=\"n\">{}</div>SLOWER</div><div class=\"card good\"><div class=\"n\">{}</div>faster</div><div class=\"card\"><div class=\"n\">{}</div>within noise</div><div class=\"card\"><div class=\"n\">{}</div>first run here</div><div class=\"card{}\"><div class=\"n\">{}</div>OUTPUTS CHANGED</div></div>",
        lines.len(),
        count(Verdict::Regression),
        count(Verdict::Improvement),
        count(Verdict::Unchanged),
        first_runs,
        if outputs_changed > 0 { " bad" } else { "" },
        outputs_changed
    );
    // An injected slowdown (MODELBENCH_INJECT_SLOWDOWN) is the run's setting: said once above
    // the table; a row carries its own tag only when the run's rows differ.
    let mut injections: Vec<&str> = mine.iter().filter_map(|r| r.injected.as_deref()).collect();
    injections.sort_unstable();
    injections.dedup();
    let uniform = injections.len() == 1 && mine.iter().all(|r| r.injected.is_some());
    if !injections.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note\"><span class=\"tag\">injected {}</span> {} this run with <code>MODELBENCH_INJECT_SLOWDOWN</code>: a calibration run, judged against the previous clean run and never the previous run of a later one.</p>",
            esc(&injections.join(", ")),
            if uniform {
                "Every benchmark of"
            } else {
                "The tagged benchmarks of"
            }
        );
    }
    h.push_str(thresholds);
    flagged_list(h, lines, mine, pages);
    h.push_str("<p class=\"muted\">Median of criterion's samples (time per iteration) with its bootstrap 95% interval; tok/s = tokens per iteration / median. <em>vs previous run</em>: the median against the newest earlier run of the same benchmark on this machine, the 95% interval of the ratio, and the verdict against the benchmark's noise threshold (±N%): SLOWER or faster only when the whole interval lies beyond it. Click a column to sort.</p>\n");
    h.push_str("<table id=\"summary-table\" class=\"sortable\"><thead><tr><th>benchmark</th><th class=\"num\">median</th><th class=\"num\">95% CI of median</th><th class=\"num\">tok/s</th><th>verdict</th><th>time vs previous run</th><th class=\"num\">threshold</th><th>outputs vs previous run</th><th>criterion</th></tr></thead><tbody>\n");
    for (l, r) in lines.iter().zip(mine) {
        let page = pages.get(r.key().as_str());
        let name = match page {
            Some(p) => format!("<a href=\"site/bench/{}.html\">{}</a>", esc(p), esc(&l.id)),
            None => esc(&l.id),
        };
        let injected = r
            .injected
            .as_deref()
            .filter(|_| !uniform)
            .map(|i| format!("<br><span class=\"tag\">injected {}</span>", esc(i)))
            .unwrap_or_default()
            + &r.injected_numeric
                .as_deref()
                .map(|i| {
                    format!(
                        "<br><span class=\"tag\">numerics injected {}</span>",
                        esc(i)
                    )
                })
                .unwrap_or_default();
        let (class, word) = verdict_badge(&l.change);
        let crit = criterion_report(&l.id)
            .map(|p| format!("<a href=\"{}\">report</a>", esc(&relative(root, &p))))
            .unwrap_or_else(|| "<span class=\"muted\">none</span>".into());
        let ratio = l.change.as_ref().map(|c| c.ratio).unwrap_or(f64::NAN);
        let outputs = summary::outputs_cell(&l.change);
        let outputs_html = outputs_badge(&l.change);
        let _ = writeln!(
            h,
            "<tr data-key=\"{}\"><td class=\"bench\">{name}{injected}</td><td class=\"num\" data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\" data-sort=\"{}\">{}</td><td data-sort=\"{word}\"><span class=\"verdict {class}\">{word}</span></td><td data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td data-sort=\"{outputs}\">{outputs_html}</td><td>{crit}</td></tr>",
            esc(&r.key()),
            l.median_s,
            esc(&summary::time(l.median_s)),
            esc(&summary::interval(l.median_s, l.ci_s)),
            l.tok_s.unwrap_or(-1.0),
            l.tok_s.map(summary::sig3).unwrap_or_else(|| "n/a".into()),
            if ratio.is_finite() { ratio } else { 0.0 },
            esc(&summary::change(&l.change)),
            l.change
                .as_ref()
                .map(|c| format!("±{:.0}%", c.threshold * 100.0))
                .unwrap_or_default(),
        );
    }
    h.push_str("</tbody></table>\n");
}

/// The benchmarks of the summary judged beyond noise (SLOWER first, the largest change
/// first), above the full table so a change is seen without scrolling or sorting.
pub(super) fn flagged_list(
    h: &mut String,
    lines: &[Line],
    mine: &[&Record],
    pages: &HashMap<&str, &str>,
) {
    let mut flagged: Vec<(&Line, &Record, &Change)> = lines
        .iter()
        .zip(mine)
        .filter_map(|(l, r)| {
            let c = l.change.as_ref()?;
            matches!(c.verdict, Verdict::Regression | Verdict::Improvement).then_some((l, *r, c))
        })
        .collect();
    if flagged.is_empty() {
        return;
    }
    flagged.sort_by(|a, b| {
        (
            a.2.verdict != Verdict::Regression,
            -a.2.ratio.max(1.0 / a.2.ratio),
        )
            .partial_cmp(&(
                b.2.verdict != Verdict::Regression,
                -b.2.ratio.max(1.0 / b.2.ratio),
            ))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    h.push_str("<div class=\"flagged\"><h3>Beyond noise</h3><ul id=\"flagged-list\">\n");
    for (l, r, c) in flagged {
        let (class, word) = verdict_badge(&l.change);
        let name = match pages.get(r.key().as_str()) {
            Some(p) => format!("<a href=\"site/bench/{}.html\">{}</a>", esc(p), esc(&l.id)),
            None => esc(&l.id),
        };
        let _ = writeln!(
            h,
            "<li><span class=\"verdict {class}\">{word}</span> <span class=\"mono\">{name}</span> <span class=\"muted\">{}{} against {} (threshold ±{:.0}%)</span></li>",
            summary::pct(c.ratio),
            c.ci
                .map(|(lo, hi)| format!(" [{}, {}]", summary::pct(lo), summary::pct(hi)))
                .unwrap_or_default(),
            esc(&c.run),
            c.threshold * 100.0
        );
    }
    h.push_str("</ul></div>\n");
}

/// Every benchmark of the database with a link to its page.
pub(super) fn all_benchmarks(h: &mut String, benches: &[Bench], note: Option<&str>) {
    h.push_str("<h2 id=\"benchmarks\">All benchmarks</h2>\n");
    if let Some(n) = note {
        let _ = writeln!(h, "<p class=\"muted\">{}.</p>", esc(n));
    }
    if benches.is_empty() {
        h.push_str("<p>No benchmark in the results database.</p>\n");
        return;
    }
    h.push_str("<p class=\"muted\">Every benchmark the results database holds, with its history page.</p>\n<table id=\"benchmarks-table\" class=\"sortable\"><thead><tr><th>benchmark</th><th>kind</th><th>model</th><th class=\"num\">runs</th><th class=\"num\">machines</th><th class=\"num\">latest median</th><th>latest vs previous</th></tr></thead><tbody>\n");
    for b in benches {
        let last = b.points.last().expect("a benchmark has a point");
        let mut machines: Vec<&str> = b.points.iter().map(|p| p.machine.as_str()).collect();
        machines.sort();
        machines.dedup();
        let (class, word) = verdict_badge(&last.change);
        let _ = writeln!(
            h,
            "<tr><td><a href=\"site/bench/{}.html\">{}</a></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\" data-sort=\"{}\">{}</td><td data-sort=\"{word}\"><span class=\"verdict {class}\">{word}</span></td></tr>",
            esc(&b.page),
            esc(&b.id),
            last.row.record.kind,
            esc(&last.row.record.model.label),
            b.points.len(),
            machines.len(),
            last.row.record.stats.median,
            esc(&summary::time(last.row.record.stats.median)),
        );
    }
    h.push_str("</tbody></table>\n");
}

/// A run's state in the Runs table.
fn state_cell(s: RunState) -> &'static str {
    match s {
        RunState::Complete => "complete",
        RunState::Running => "running",
        RunState::Interrupted => "<span class=\"verdict bad\" title=\"ended before its last benchmark (killed, crashed or failed): its records are kept, and it is no later run's baseline\">INTERRUPTED</span>",
        RunState::Unmarked => "<span class=\"muted\" title=\"written before run states were kept\">not recorded</span>",
    }
}

pub(super) fn runs_table(h: &mut String, folders: &[PathBuf], rows: &[DbRow]) {
    h.push_str("<h2 id=\"runs\">Runs</h2>\n");
    if folders.is_empty() {
        h.push_str("<p>No run folders yet.</p>\n");
        return;
    }
    h.push_str("<table id=\"runs-table\" class=\"sortable\"><thead><tr><th>run</th><th>commit</th><th>machine</th><th class=\"num\">records</th><th>state</th><th>files</th></tr></thead><tbody>\n");
    for dir in folders.iter().rev() {
        let name = file_name(dir);
        let mine: Vec<&DbRow> = rows.iter().filter(|r| r.run == name).collect();
        let (commit, machine) = match mine.first() {
            Some(r) => (
                short(&r.record.build.git_commit).to_string(),
                machine_identity(&r.record),
            ),
            None => (String::new(), "not in the database".into()),
        };
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let links: Vec<String> = files
            .iter()
            .map(|f| format!("<a href=\"{}/{}\">{}</a>", esc(&name), esc(f), esc(f)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"files\">{}</td></tr>",
            esc(&name),
            esc(&commit),
            esc(&machine),
            if mine.is_empty() {
                esc(&machine)
            } else {
                machine_cell(&machine)
            },
            mine.len(),
            state_cell(run_state(dir)),
            links.join(" ")
        );
    }
    h.push_str("</tbody></table>\n");
}

/// The output verdict of a benchmark against its previous run as a badge (`OUTPUTS CHANGED`
/// red, with why in its title; `same` and `within numerical noise` plain).
pub(super) fn outputs_badge(c: &Option<crate::output::summary::Change>) -> String {
    use crate::judge::outputs::OutputVerdict;
    let word = summary::outputs_cell(c);
    match c.as_ref().map(|c| (c.outputs.verdict, &c.outputs.why)) {
        Some((OutputVerdict::Changed, why)) => format!(
            "<span class=\"verdict bad outputs-changed\" title=\"{}\">{}</span>",
            esc(why),
            esc(&word)
        ),
        Some((_, why)) => format!(
            "<span class=\"muted\" title=\"{}\">{}</span>",
            esc(why),
            esc(&word)
        ),
        None => format!("<span class=\"muted\">{}</span>", esc(&word)),
    }
}
