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
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::judge::noise::{threshold_for, NoiseProfile};
use crate::judge::speed::{judge, Verdict, RESAMPLES, SEED};
use crate::measure::stats::bootstrap_median_ci;
use crate::output::db::{Db, DbTarget};
use crate::output::noise;
use crate::output::record::{Kind, Record};
use crate::output::summary::{self, Change};
use crate::util::fsio::atomic_write;

mod index;
mod markup;
mod page;
mod sections;
use index::index_page;
pub use markup::{csv_html, markdown_html};
use page::bench_page;
use sections::paired_runs;

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

/// One row of the results database.
#[derive(Debug, Clone)]
pub struct DbRow {
    pub run: String,
    pub seq: i64,
    pub record: Record,
    /// The run's state in the database (`complete`, `running`, `interrupted`; `unmarked`
    /// for runs older than run states).
    pub state: String,
}

impl DbRow {
    /// Whether this row's run may be a later point's baseline (it ended).
    pub fn ended(&self) -> bool {
        self.state == "complete" || self.state == "unmarked"
    }
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
            "SELECT r.run, r.seq, r.record_json, s.state FROM records r LEFT JOIN run_states s \
             ON s.run = r.run AND s.hardware_fp = r.hardware_fp ORDER BY r.run, r.hardware_fp, r.seq",
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
            state: r[3]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("unmarked")
                .to_string(),
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
        // The verdict as its serde name (`insufficient-samples`), the interval.
        let parse = |v: &serde_json::Value| -> Option<(Verdict, Option<(f64, f64)>)> {
            let verdict = serde_json::from_value(v.get(0)?.clone()).ok()?;
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
    Ok(atomic_write(&root.join("index.html"), index.as_bytes())?)
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
        // A model given as a path makes ids longer than a file name may be.
        let mut page = crate::util::fsio::bounded_name(page);
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
                .find(|p| {
                    p.machine == machine
                        && p.row.ended()
                        && p.row.record.injected.is_none()
                        && p.row.record.injected_numeric.is_none()
                })
                .map(|p| p.row);
            let change = prev.map(|prev| {
                // Noise profiles are stored per hardware fingerprint.
                let t = threshold_for(profile(&r.record.hardware.fingerprint()).as_ref(), &id).0;
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
                    outputs: crate::judge::outputs::judge(
                        prev.record.outputs.as_ref(),
                        r.record.outputs.as_ref(),
                    ),
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

/// The CSS class and word of a verdict (`judge::speed::Verdict::words`).
fn verdict_badge(c: &Option<Change>) -> (&'static str, &'static str) {
    match c.as_ref().map(|c| c.verdict.words()) {
        Some(w) => (w.class, w.badge),
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
