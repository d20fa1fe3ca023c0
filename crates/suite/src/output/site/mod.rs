//! The report a user browses: `target-reports/index.html` and one page per benchmark under
//! `target-reports/site/`, static files that work from `file://` (no CDN, no server, no
//! request leaving the machine).
//!
//! - index.html opens on the newest run that has a summary: the table `cargo bench` prints
//!   ([`crate::output::summary::lines`], the same code, so the same verdicts), sortable, each
//!   row linking to the benchmark's page and to criterion's own report; then the sections a
//!   run produced (peers, ops, quality, serving, depth, PSANN grid, training, paired
//!   comparisons), each only when there is data; every benchmark in the results database; the
//!   run folders.
//! - site/bench/<benchmark>.html: the benchmark's history from the results database
//!   (target-reports/modelbench.db): x = runs in time order (commit, date; hover: commit
//!   subject, machine), y = median time per iteration with its bootstrap 95% interval, the
//!   noise band (previous median ± the benchmark's noise threshold) behind each point, points
//!   judged SLOWER or faster ringed, one series per machine ([`machine_identity`]); then the
//!   same as a table, and the paired comparisons that measured its scenario and model.
//!
//! Bootstrap intervals are cached in site/cache.json (a record in the database never changes,
//! so neither do they): the pages are rewritten after every benchmark of a run.

pub mod style;
pub mod svg;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::measure::stats::bootstrap_median_ci;
use crate::output::compare::{judge, Verdict, RESAMPLES, SEED};
use crate::output::db::{Db, DbTarget};
use crate::output::noise::{self, NoiseProfile};
use crate::output::record::{Kind, Record};
use crate::output::runs::{list_runs, read_run};
use crate::output::summary::{self, Change, Line};
use crate::util::fsio::atomic_write;

/// The folder under the reports root holding the pages, stylesheet and script.
pub const DIR: &str = "site";

/// The series a point belongs to: one per machine. Today the hardware fingerprint; the one
/// place to change when machines get a better identity.
pub fn machine_identity(r: &Record) -> String {
    r.hardware.fingerprint()
}

/// HTML-escaped text (also safe inside attribute values).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A file-name-safe form of `s` (letters, digits, `-`, `.`; the rest `_`).
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The benchmark id of a record (criterion's, or `<scenario>/<device>-<dtype>`).
pub fn bench_id(r: &Record) -> String {
    if r.id.is_empty() {
        format!("{}/{}-{}", r.scenario, r.device, r.dtype)
    } else {
        r.id.clone()
    }
}

/// The noise threshold of benchmark `id` with a machine's profile: the rule of
/// `harness::noise_threshold` (peak-bytes groups are deterministic: the floor; else the
/// profile's measured threshold, else the default).
pub fn threshold(profile: Option<&NoiseProfile>, id: &str) -> f64 {
    if id.starts_with("checkpoint_memory/") {
        return noise::FLOOR;
    }
    match profile {
        Some(p) => p.threshold(id).0,
        None => noise::DEFAULT_THRESHOLD,
    }
}

/// One row of the results database.
#[derive(Debug, Clone)]
pub struct DbRow {
    pub run: String,
    pub seq: i64,
    pub record: Record,
}

/// Every record of the database beside the run folders (or `MODELBENCH_DB`), oldest run
/// first; None when there is no database (off, or the SQLite file does not exist yet).
pub fn db_rows(root: &Path) -> Result<Option<Vec<DbRow>>> {
    let target = DbTarget::resolve(None, root)?;
    if let DbTarget::Sqlite(p) = &target {
        if !p.is_file() {
            return Ok(None);
        }
    }
    let Some(mut db) = Db::open(&target)? else {
        return Ok(None);
    };
    let raw = db.with_tx(|tx| {
        tx.query(
            "SELECT run, seq, record_json FROM records ORDER BY run, hardware_fp, seq",
            &[],
        )
    })?;
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let run = r[0].as_str().unwrap_or_default().to_string();
        let record: Record =
            serde_json::from_str(r[2].as_str().unwrap_or_default()).map_err(|e| {
                Error::Db(format!(
                    "{}: run {run}: a stored record does not parse: {e}",
                    target.describe()
                ))
            })?;
        out.push(DbRow {
            seq: r[1].as_i64().unwrap_or(0),
            run,
            record,
        });
    }
    Ok(Some(out))
}

/// Bootstrap results already computed (site/cache.json): key -> [low, high] or a verdict.
#[derive(Default)]
struct Cache {
    map: BTreeMap<String, serde_json::Value>,
    dirty: bool,
}

impl Cache {
    fn load(path: &Path) -> Cache {
        let map = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Cache { map, dirty: false }
    }

    fn ci(&mut self, key: String, f: impl FnOnce() -> Option<(f64, f64)>) -> Option<(f64, f64)> {
        if let Some(v) = self.map.get(&key) {
            return serde_json::from_value(v.clone()).ok().flatten();
        }
        let v = f();
        self.map.insert(key, serde_json::json!(v));
        self.dirty = true;
        v
    }

    fn judged(
        &mut self,
        key: String,
        f: impl FnOnce() -> (Verdict, Option<(f64, f64)>),
    ) -> (Verdict, Option<(f64, f64)>) {
        let parse = |v: &serde_json::Value| -> Option<(Verdict, Option<(f64, f64)>)> {
            let verdict = match v.get(0)?.as_str()? {
                "regression" => Verdict::Regression,
                "improvement" => Verdict::Improvement,
                "unchanged" => Verdict::Unchanged,
                "insufficient-samples" => Verdict::InsufficientSamples,
                _ => return None,
            };
            Some((verdict, serde_json::from_value(v.get(1)?.clone()).ok()?))
        };
        if let Some(v) = self.map.get(&key).and_then(parse) {
            return v;
        }
        let (v, ci) = f();
        self.map.insert(key, serde_json::json!([v, ci]));
        self.dirty = true;
        (v, ci)
    }
}

/// One point of a benchmark's history.
struct HistPoint<'a> {
    row: &'a DbRow,
    machine: String,
    ci: Option<(f64, f64)>,
    change: Option<Change>,
}

/// A benchmark: every row with one record key.
struct Bench<'a> {
    key: String,
    id: String,
    page: String,
    points: Vec<HistPoint<'a>>,
}

/// Writes index.html, site/style.css, site/sort.js and a page per benchmark of the database.
pub fn write(root: &Path) -> Result<()> {
    let site = root.join(DIR);
    let bench_dir = site.join("bench");
    std::fs::create_dir_all(&bench_dir).map_err(Error::io(&bench_dir))?;
    atomic_write(&site.join("style.css"), style::CSS.as_bytes())?;
    atomic_write(&site.join("sort.js"), style::SORT_JS.as_bytes())?;
    let mut cache = Cache::load(&site.join("cache.json"));
    let mut profiles: HashMap<String, Option<NoiseProfile>> = HashMap::new();
    let mut profile = |fp: &str| -> Option<NoiseProfile> {
        profiles
            .entry(fp.to_string())
            .or_insert_with(|| noise::load(root, fp).ok().flatten())
            .clone()
    };
    let (rows, db_note) = match db_rows(root) {
        Ok(Some(r)) => (r, None),
        Ok(None) => (Vec::new(), Some("no results database yet".to_string())),
        Err(e) => (
            Vec::new(),
            Some(format!("results database not readable: {e}")),
        ),
    };
    let benches = benches(&rows, &mut cache, &mut profile);
    let pages: HashMap<&str, &str> = benches
        .iter()
        .map(|b| (b.key.as_str(), b.page.as_str()))
        .collect();
    let subjects = commit_subjects(root, &rows);
    let paired = paired_runs(root);
    // Remove pages of benchmarks no longer in the database, then write the current ones.
    if let Ok(rd) = std::fs::read_dir(&bench_dir) {
        let keep: std::collections::HashSet<String> =
            benches.iter().map(|b| format!("{}.html", b.page)).collect();
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".html") && !keep.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    for b in &benches {
        let html = bench_page(root, b, &subjects, &paired);
        atomic_write(&bench_dir.join(format!("{}.html", b.page)), html.as_bytes())?;
    }
    let index = index_page(
        root,
        &rows,
        &benches,
        &pages,
        &paired,
        db_note,
        &mut profile,
    );
    if cache.dirty {
        let _ = atomic_write(
            &site.join("cache.json"),
            serde_json::to_string(&cache.map)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    atomic_write(&root.join("index.html"), index.as_bytes())
}

/// The benchmarks of the database, sorted by id, each with its points in run order and their
/// change against the previous point of the same machine (the summary's rule: the newest
/// earlier run without an injected slowdown).
fn benches<'a>(
    rows: &'a [DbRow],
    cache: &mut Cache,
    profile: &mut dyn FnMut(&str) -> Option<NoiseProfile>,
) -> Vec<Bench<'a>> {
    // The summary's bootstrap seed of a record: SEED + its position among the run's
    // summarised records (so the chart's interval is the summary table's).
    let mut pos: HashMap<(&str, String), usize> = HashMap::new();
    let mut seed_of: HashMap<(&str, i64, String), u64> = HashMap::new();
    for r in rows {
        let m = machine_identity(&r.record);
        if summary::counts(&r.record) {
            let n = pos.entry((r.run.as_str(), m.clone())).or_insert(0);
            seed_of.insert((r.run.as_str(), r.seq, m), SEED + *n as u64);
            *n += 1;
        }
    }
    let mut by_key: BTreeMap<String, Vec<&DbRow>> = BTreeMap::new();
    for r in rows {
        if r.record.samples_s.is_empty() {
            continue;
        }
        by_key.entry(r.record.key()).or_default().push(r);
    }
    let mut out: Vec<Bench> = Vec::new();
    let mut used: HashMap<String, usize> = HashMap::new();
    for (key, mut rs) in by_key {
        rs.sort_by(|a, b| (&a.run, a.seq).cmp(&(&b.run, b.seq)));
        let first = &rs[0].record;
        let id = bench_id(first);
        let mut page = slug(&id);
        if !id.contains(&first.model.label) {
            page = format!("{page}--{}", slug(&first.model.label));
        }
        if first.kind != Kind::Generation {
            page = format!("{}--{page}", first.kind);
        }
        let n = used.entry(page.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            page = format!("{page}-{n}");
        }
        let mut points: Vec<HistPoint> = Vec::new();
        for r in &rs {
            let machine = machine_identity(&r.record);
            let seed = seed_of
                .get(&(r.run.as_str(), r.seq, machine.clone()))
                .copied()
                .unwrap_or(SEED + r.seq as u64);
            let ci = cache.ci(format!("ci|{}|{machine}|{}|{seed}", r.run, r.seq), || {
                bootstrap_median_ci(&r.record.samples_s, RESAMPLES, seed)
            });
            let prev = points
                .iter()
                .rev()
                .find(|p| p.machine == machine && p.row.record.injected.is_none())
                .map(|p| p.row);
            let change = prev.map(|prev| {
                // Noise profiles are stored per hardware fingerprint.
                let t = threshold(profile(&r.record.hardware.fingerprint()).as_ref(), &id);
                let (verdict, ci) = cache.judged(
                    format!(
                        "v|{}|{}|{}|{}|{machine}|{t}",
                        prev.run, prev.seq, r.run, r.seq
                    ),
                    || judge(&prev.record.samples_s, &r.record.samples_s, t),
                );
                Change {
                    run: prev.run.clone(),
                    ratio: r.record.stats.median / prev.record.stats.median,
                    ci,
                    verdict,
                    threshold: t,
                }
            });
            points.push(HistPoint {
                row: r,
                machine,
                ci,
                change,
            });
        }
        out.push(Bench {
            key,
            id,
            page,
            points,
        });
    }
    out.sort_by(|a, b| (&a.id, &a.key).cmp(&(&b.id, &b.key)));
    out
}

/// The subject line of each commit of the database, from `git log` of the checkout the
/// reports root is in (empty when git or the commits are not there).
fn commit_subjects(root: &Path, rows: &[DbRow]) -> HashMap<String, String> {
    let mut commits: Vec<&str> = rows
        .iter()
        .map(|r| r.record.build.git_commit.as_str())
        .filter(|c| c.len() >= 7 && c.chars().all(|ch| ch.is_ascii_hexdigit()))
        .collect();
    commits.sort();
    commits.dedup();
    let mut out = HashMap::new();
    if commits.is_empty() {
        return out;
    }
    let dir = if root.is_dir() { root } else { Path::new(".") };
    let Ok(o) = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "show",
            "--no-patch",
            "--format=%H%x1f%s",
            "--ignore-missing",
        ])
        .args(&commits)
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return out;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some((h, s)) = line.split_once('\u{1f}') {
            out.insert(h.to_string(), s.to_string());
        }
    }
    out
}

fn subject<'a>(subjects: &'a HashMap<String, String>, commit: &str) -> Option<&'a str> {
    if commit.is_empty() {
        return None;
    }
    subjects
        .iter()
        .find(|(h, _)| h.starts_with(commit) || commit.starts_with(h.as_str()))
        .map(|(_, s)| s.as_str())
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

/// `2026-11-25 14:02` of an RFC 3339 time.
fn day_time(ts: &str) -> String {
    let t = ts.replace('T', " ");
    t.chars().take(16).collect()
}

/// The CSS class and word of a verdict.
fn verdict_badge(c: &Option<Change>) -> (&'static str, &'static str) {
    match c.as_ref().map(|c| c.verdict) {
        Some(Verdict::Regression) => ("slower", "SLOWER"),
        Some(Verdict::Improvement) => ("faster", "faster"),
        Some(Verdict::Unchanged) => ("noise", "within noise"),
        Some(Verdict::InsufficientSamples) => ("", "too few samples"),
        None => ("", "first run here"),
    }
}

/// A relative link from the folder `from` to `to` (both made absolute first).
pub fn relative(from: &Path, to: &Path) -> String {
    let abs = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        })
    };
    let (a, b) = (abs(from), abs(to));
    let ac: Vec<_> = a.components().collect();
    let bc: Vec<_> = b.components().collect();
    let common = ac.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); ac.len() - common];
    parts.extend(
        bc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// Criterion's own report of benchmark `id` (target/criterion/<group>/<function>/<value>/
/// report/index.html, each part made file-name safe as criterion does), if it exists.
pub fn criterion_report(id: &str) -> Option<PathBuf> {
    let safe = |s: &str| {
        let mut t: String = s
            .chars()
            .map(|c| if "?\"/\\*<>:|^".contains(c) { '_' } else { c })
            .collect();
        while t.len() > 64 {
            t.pop();
        }
        t
    };
    let mut parts = id.splitn(3, '/');
    let mut dir = crate::util::fsio::target_dir().join("criterion");
    for p in parts.by_ref() {
        dir = dir.join(safe(p));
    }
    let p = dir.join("report").join("index.html");
    p.is_file().then_some(p)
}

fn head(title: &str, css: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><link rel=\"stylesheet\" href=\"{css}\"></head><body>\n",
        esc(title)
    )
}

fn nav(prefix: &str) -> String {
    format!(
        "<header class=\"top\"><a class=\"brand\" href=\"{prefix}index.html\">modelbench</a><a href=\"{prefix}index.html#summary\">newest run</a><a href=\"{prefix}index.html#sections\">what else ran</a><a href=\"{prefix}index.html#benchmarks\">all benchmarks</a><a href=\"{prefix}index.html#runs\">runs</a></header>\n<main>\n"
    )
}

fn foot(js: &str) -> String {
    format!(
        "<footer>Generated by modelbench from the run folders and the results database; static files, no network. Regenerate with <code>modelbench report --html</code>.</footer>\n</main><script src=\"{js}\"></script></body></html>\n"
    )
}

/// The index page.
fn index_page(
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
        let lines = summary::lines(root, dir, &records, &|id| threshold(prof.as_ref(), id));
        let mine: Vec<&Record> = records.iter().filter(|r| summary::counts(r)).collect();
        let thresholds = match &prof {
            Some(p) => format!(
                "<p class=\"muted\" id=\"thresholds\">Noise thresholds: measured on this machine ({} runs of commit <code>{}</code>, <code>{}</code>); a benchmark without a measurement uses the default ±{:.0}%.</p>\n",
                p.runs.len(),
                esc(short(&p.build.git_commit)),
                esc(&relative(root, &noise::path_for(root, &fp))),
                noise::DEFAULT_THRESHOLD * 100.0
            ),
            None => format!(
                "<p class=\"note\" id=\"thresholds\">No noise thresholds were measured on this machine (<code>{}</code>): every verdict uses the default ±{:.0}%, and on a busy machine that flags changes that are only noise. Measure them with <code>modelbench noise --measure 4</code>.</p>\n",
                esc(&fp),
                noise::DEFAULT_THRESHOLD * 100.0
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

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn summary_section(
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
    let _ = writeln!(
        h,
        "<div class=\"cards\"><div class=\"card\"><div class=\"n\">{}</div>benchmarks</div><div class=\"card bad\"><div class=\"n\">{}</div>SLOWER</div><div class=\"card good\"><div class=\"n\">{}</div>faster</div><div class=\"card\"><div class=\"n\">{}</div>within noise</div><div class=\"card\"><div class=\"n\">{}</div>first run here</div></div>",
        lines.len(),
        count(Verdict::Regression),
        count(Verdict::Improvement),
        count(Verdict::Unchanged),
        first_runs
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
    h.push_str("<table id=\"summary-table\" class=\"sortable\"><thead><tr><th>benchmark</th><th class=\"num\">median</th><th class=\"num\">95% CI of median</th><th class=\"num\">tok/s</th><th>verdict</th><th>time vs previous run</th><th class=\"num\">threshold</th><th>criterion</th></tr></thead><tbody>\n");
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
            .unwrap_or_default();
        let (class, word) = verdict_badge(&l.change);
        let crit = criterion_report(&l.id)
            .map(|p| format!("<a href=\"{}\">report</a>", esc(&relative(root, &p))))
            .unwrap_or_else(|| "<span class=\"muted\">none</span>".into());
        let ratio = l.change.as_ref().map(|c| c.ratio).unwrap_or(f64::NAN);
        let _ = writeln!(
            h,
            "<tr data-key=\"{}\"><td class=\"bench\">{name}{injected}</td><td class=\"num\" data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\" data-sort=\"{}\">{}</td><td data-sort=\"{word}\"><span class=\"verdict {class}\">{word}</span></td><td data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td>{crit}</td></tr>",
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
fn flagged_list(h: &mut String, lines: &[Line], mine: &[&Record], pages: &HashMap<&str, &str>) {
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
fn all_benchmarks(h: &mut String, benches: &[Bench], note: Option<&str>) {
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

fn runs_table(h: &mut String, folders: &[PathBuf], rows: &[DbRow]) {
    h.push_str("<h2 id=\"runs\">Runs</h2>\n");
    if folders.is_empty() {
        h.push_str("<p>No run folders yet.</p>\n");
        return;
    }
    h.push_str("<table id=\"runs-table\" class=\"sortable\"><thead><tr><th>run</th><th>commit</th><th>machine</th><th class=\"num\">records</th><th>files</th></tr></thead><tbody>\n");
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
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"files\">{}</td></tr>",
            esc(&name),
            esc(&commit),
            esc(&machine),
            if mine.is_empty() {
                esc(&machine)
            } else {
                machine_cell(&machine)
            },
            mine.len(),
            links.join(" ")
        );
    }
    h.push_str("</tbody></table>\n");
}

/// A section of what else runs produced: the newest folder holding `marker`.
struct Section {
    id: &'static str,
    title: &'static str,
    blurb: &'static str,
    marker: &'static str,
    markdown: &'static [&'static str],
    csv: &'static [&'static str],
    images: &'static [&'static str],
    files: &'static [&'static str],
}

const SECTIONS: &[Section] = &[
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

fn sections(h: &mut String, root: &Path, folders: &[PathBuf], paired: &[PairedRun]) {
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
fn quality_section(h: &mut String, folders: &[PathBuf]) {
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
struct PairedRun {
    folder: String,
    doc: serde_json::Value,
    rows: Vec<serde_json::Value>,
}

fn paired_runs(root: &Path) -> Vec<PairedRun> {
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

fn paired_row(p: &PairedRun, r: &serde_json::Value, prefix: &str) -> String {
    let s = |v: Option<&serde_json::Value>| {
        v.and_then(|x| x.as_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let verdict = s(r.get("verdict"));
    let class = match verdict.as_str() {
        "Regression" => "slower",
        "Improvement" => "faster",
        "Unchanged" => "noise",
        _ => "",
    };
    let ci = r
        .get("ci95")
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

/// The page of one benchmark.
fn bench_page(
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
    h.push_str("<table id=\"history-table\" class=\"sortable\"><thead><tr><th>run</th><th>commit</th><th>date</th><th>machine</th><th class=\"num\">samples</th><th class=\"num\">median</th><th class=\"num\">95% CI</th><th class=\"num\">tok/s</th><th>verdict</th><th>time vs previous run</th></tr></thead><tbody>\n");
    for p in b.points.iter().rev() {
        let r = &p.row.record;
        let (class, word) = verdict_badge(&p.change);
        let injected = r
            .injected
            .as_deref()
            .map(|i| format!("<span class=\"tag\">injected {}</span>", esc(i)))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr class=\"history-row\"><td class=\"mono\"><a href=\"../../{run}/summary.md\">{run}</a>{injected}</td><td class=\"mono\" title=\"{}\">{}</td><td class=\"nowrap\">{}</td><td data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\" data-sort=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td data-sort=\"{word}\"><span class=\"verdict {class}\">{word}</span></td><td>{}</td></tr>",
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
fn machine_cell(m: &str) -> String {
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
fn hover(p: &HistPoint, subjects: &HashMap<String, String>) -> String {
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

/// Markdown as the run folders write it (headings, paragraphs, pipe tables, `code`) in HTML.
pub fn markdown_html(md: &str) -> String {
    let inline = |s: &str| {
        let e = esc(s);
        let mut out = String::new();
        for (i, part) in e.split('`').enumerate() {
            if i % 2 == 1 {
                let _ = write!(out, "<code>{part}</code>");
            } else {
                out.push_str(&part.replace("**", ""));
            }
        }
        out
    };
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut h = String::new();
    let mut in_table = false;
    let mut header_done = false;
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with('|') {
            if !in_table {
                h.push_str("<table class=\"sortable\"><thead><tr>");
                for c in cells(t) {
                    let _ = write!(h, "<th>{}</th>", inline(&c));
                }
                h.push_str("</tr></thead><tbody>\n");
                in_table = true;
                header_done = false;
                continue;
            }
            if !header_done && t.chars().all(|c| "|-: ".contains(c)) {
                header_done = true;
                continue;
            }
            h.push_str("<tr>");
            for c in cells(t) {
                let _ = write!(h, "<td>{}</td>", inline(&c));
            }
            h.push_str("</tr>\n");
            continue;
        }
        if in_table {
            h.push_str("</tbody></table>\n");
            in_table = false;
        }
        if t.is_empty() {
            continue;
        }
        if let Some(x) = t.strip_prefix('#') {
            let _ = writeln!(h, "<h3>{}</h3>", inline(x.trim_start_matches('#').trim()));
        } else {
            let _ = writeln!(h, "<p>{}</p>", inline(t));
        }
    }
    if in_table {
        h.push_str("</tbody></table>\n");
    }
    h
}

/// A CSV file (first line: header) as a table.
pub fn csv_html(csv: &str) -> String {
    let mut h = String::from("<table class=\"sortable\">");
    for (i, line) in csv.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        if i == 0 {
            h.push_str("<thead>");
        } else if i == 1 {
            h.push_str("<tbody>");
        }
        h.push_str("<tr>");
        for c in line.split(',') {
            let _ = write!(h, "<{tag}>{}</{tag}>", esc(c.trim_matches('"')));
        }
        h.push_str("</tr>");
        if i == 0 {
            h.push_str("</thead>");
        }
    }
    h.push_str("</tbody></table>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_tables_become_html_tables() {
        let h = markdown_html("# T\n\nsome `x` text\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n");
        assert!(h.contains("<h3>T</h3>"), "{h}");
        assert!(h.contains("<code>x</code>"), "{h}");
        assert!(h.contains("<th>a</th><th>b</th>"), "{h}");
        assert!(h.contains("<td>1</td><td>2</td>"), "{h}");
        assert!(!h.contains("---"), "{h}");
    }

    #[test]
    fn relative_links_climb_out_of_the_page_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("r/site/bench");
        let b = tmp.path().join("target/criterion/x/report/index.html");
        std::fs::create_dir_all(&a).unwrap();
        assert_eq!(
            relative(&a, &b),
            "../../../target/criterion/x/report/index.html"
        );
    }
}
