//! Run folders under target-reports/ and their artifacts: results.jsonl (the records),
//! results.csv, summary.json, README.md (scenario x model table), plus target-reports/index.html
//! (the browsable report: [`crate::output::site`]). Every file is rewritten atomically after each
//! benchmark, so an interrupted run leaves complete files, and no earlier run is touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::output::record::{Kind, Record};
use crate::util::fsio::atomic_write;
use crate::util::time::stamp;

use crate::output::runs::{host, Complete, Started, COMPLETE, STARTED};
/// Reading run folders lives in [`crate::output::runs`] (the summary and the site read them
/// too, and this module writes the site).
pub use crate::output::runs::{list_runs, read_run};

/// target-reports/ (the knob MODELBENCH_REPORTS overrides it; see `util::settings`).
pub fn reports_root() -> PathBuf {
    crate::util::settings::current().reports_root
}

/// A run folder `target-reports/<YYYYMMDD_HHMMSS>[-label]/`, created on the first record.
pub struct RunDir {
    pub path: PathBuf,
    records: Vec<Record>,
    /// Extra artifacts workloads add (file name -> content), rewritten with the rest.
    extra_files: BTreeMap<String, Vec<u8>>,
    /// Records already pushed to the results database (see [`crate::output::db`]).
    db_synced: std::cell::Cell<usize>,
    /// Records that were in the folder when it was resumed ([`RunDir::resume`]).
    resumed: usize,
    /// The process whose end ends the run (pid, start ticks): this one unless
    /// [`RunDir::owned_by`] says otherwise (a `cargo bench`'s cargo).
    owner: (u32, u64),
}

fn this_process() -> (u32, u64) {
    let pid = std::process::id();
    (
        pid,
        crate::measure::process::start_ticks(pid).unwrap_or_default(),
    )
}

impl RunDir {
    /// A new run folder name under `root`; never an existing one.
    pub fn new(root: &Path, label: Option<&str>) -> RunDir {
        let base = match label {
            Some(l) => format!("{}-{l}", stamp()),
            None => stamp(),
        };
        let mut path = root.join(&base);
        let mut i = 2;
        while path.exists() {
            path = root.join(format!("{base}.{i}"));
            i += 1;
        }
        RunDir {
            path,
            records: Vec::new(),
            extra_files: BTreeMap::new(),
            db_synced: std::cell::Cell::new(0),
            resumed: 0,
            owner: this_process(),
        }
    }

    /// The run ends with process `pid` started at `start_ticks`, not with this one.
    pub fn owned_by(mut self, pid: u32, start_ticks: u64) -> RunDir {
        self.owner = (pid, start_ticks);
        self
    }

    /// The run folder at `path` with the records already in it: another bench of the same
    /// `cargo bench` wrote them (see `harness::invocation`). New records are appended, every
    /// artifact is rewritten over all of them, and the workload files already there stay.
    pub fn resume(path: &Path) -> Result<RunDir> {
        let jsonl = path.join("results.jsonl");
        let has = std::fs::metadata(&jsonl)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        let records = if has { read_run(path)? } else { Vec::new() };
        Ok(RunDir {
            path: path.to_path_buf(),
            // Their flush already put them in the results database.
            db_synced: std::cell::Cell::new(records.len()),
            resumed: records.len(),
            records,
            extra_files: BTreeMap::new(),
            owner: this_process(),
        })
    }

    /// How many of [`RunDir::records`] were already in the folder when it was resumed.
    pub fn resumed(&self) -> usize {
        self.resumed
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Keeps a record in memory only (`--no-save`).
    pub fn push_unsaved(&mut self, r: Record) {
        self.records.push(r);
    }

    /// Adds a record and rewrites every artifact.
    pub fn push(&mut self, r: Record) -> Result<()> {
        self.records.push(r);
        self.flush()
    }

    /// Adds (or replaces) a workload artifact such as throughput.csv or memory.json.
    pub fn put_file(&mut self, name: &str, content: Vec<u8>) -> Result<()> {
        self.extra_files.insert(name.to_string(), content);
        self.flush()
    }

    /// The records' artifacts, then the workload's own files (which may replace one of them:
    /// a shootout's summary.json).
    fn write_files(&self) -> Result<()> {
        write_artifacts(&self.path, &self.records)?;
        for (name, content) in &self.extra_files {
            atomic_write(&self.path.join(name), content)?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        let started = self.path.join(STARTED);
        if !started.exists() {
            std::fs::create_dir_all(&self.path).map_err(Error::io(&self.path))?;
            let s = Started {
                pid: self.owner.0,
                start_ticks: self.owner.1,
                started_at: crate::util::time::now_rfc3339(),
                host: host(),
            };
            let json = serde_json::to_vec_pretty(&s).map_err(|e| Error::Report(e.to_string()))?;
            atomic_write(&started, &json)?;
        }
        self.write_files()?;
        // The database after the files: when it fails, the run folder already holds every
        // record (the error says how to push them later). One transaction per flush; rows
        // already there are skipped, so each record is added once.
        if self.records.len() > self.db_synced.get() {
            crate::output::db::sync_run(&self.path, &self.records)?;
            self.db_synced.set(self.records.len());
        }
        if let Some(root) = self.path.parent() {
            write_index(root)?;
        }
        Ok(())
    }
}

impl RunDir {
    /// Marks the run complete: its last benchmark has ended. Writes [`COMPLETE`] after every
    /// record is in the folder (a folder without it is interrupted or still running), then
    /// restates it in summary.json, the results database and index.html. Nothing to do for a
    /// run that wrote no record (no folder).
    pub fn complete(&self) -> Result<()> {
        if self.records.is_empty() || !self.path.join(STARTED).exists() {
            return Ok(());
        }
        let c = Complete {
            finished_at: crate::util::time::now_rfc3339(),
            records: self.records.len(),
        };
        let json = serde_json::to_vec_pretty(&c).map_err(|e| Error::Report(e.to_string()))?;
        atomic_write(&self.path.join(COMPLETE), &json)?;
        // summary.json says so now (a workload's own files after it, as in every flush).
        self.write_files()?;
        crate::output::db::sync_state(&self.path, &self.records)?;
        if let Some(root) = self.path.parent() {
            write_index(root)?;
        }
        Ok(())
    }
}

/// Writes results.jsonl, results.csv, summary.json and README.md for `records`.
pub fn write_artifacts(dir: &Path, records: &[Record]) -> Result<()> {
    let mut jsonl = String::new();
    for r in records {
        jsonl.push_str(&serde_json::to_string(r).map_err(|e| Error::Report(e.to_string()))?);
        jsonl.push('\n');
    }
    atomic_write(&dir.join("results.jsonl"), jsonl.as_bytes())?;
    atomic_write(&dir.join("results.csv"), csv(records).as_bytes())?;
    let summary = summary_json(dir, records);
    atomic_write(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;
    atomic_write(&dir.join("README.md"), markdown(dir, records).as_bytes())?;
    Ok(())
}

fn opt_num(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_default()
}

fn opt_ms(
    p: Option<crate::measure::stats::Percentiles>,
    f: fn(&crate::measure::stats::Percentiles) -> f64,
) -> String {
    p.map(|p| format!("{:.3}", f(&p))).unwrap_or_default()
}

pub use crate::output::na;

pub fn csv(records: &[Record]) -> String {
    let mut s = String::from(
        "timestamp,kind,scenario,model,family,dtype,device,prompt_tokens,new_tokens,sampling,seed,samples,median_s,mean_s,stddev_s,mad_s,tok_s,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,tpot_p50_ms,tpot_p90_ms,tpot_p99_ms,itl_p50_ms,itl_p90_ms,itl_p99_ms,prefill_tok_s,decode_tok_s,load_s,host_peak_bytes,gpu_peak_bytes,gpu_mean_w,gpu_max_w,energy_j,j_per_token,params,git_commit\n",
    );
    for r in records {
        let g = r.gen.clone().unwrap_or_default();
        let q = |x: &str| format!("\"{}\"", x.replace('"', "\"\""));
        // ttft_p50_ms .. itl_p99_ms.
        let latency = g
            .latency_percentiles()
            .into_iter()
            .map(|v| opt_num(v, 3))
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.timestamp,
            r.kind,
            q(&r.scenario),
            q(&r.model.label),
            r.model.family,
            r.dtype,
            r.device,
            super::csv_count(r.prompt_tokens),
            super::csv_count(r.new_tokens),
            q(&r.sampling_desc),
            super::csv_count(r.seed),
            r.stats.n,
            r.stats.median,
            r.stats.mean,
            r.stats.stddev,
            r.stats.mad,
            opt_num(r.tok_s, 3),
            latency,
            opt_num(g.prefill_tok_s, 3),
            opt_num(g.decode_tok_s, 3),
            // Only generation-style records load a model.
            opt_num(r.model.load_seconds, 3),
            r.memory.host_peak_bytes.map(|b| b.to_string()).unwrap_or_default(),
            r.memory.gpu_peak_bytes.map(|b| b.to_string()).unwrap_or_default(),
            opt_num(r.power.mean_w, 2),
            opt_num(r.power.max_w, 2),
            opt_num(r.power.energy_j, 3),
            opt_num(r.power.j_per_token, 6),
            super::csv_count(r.model.params),
            r.build.git_commit,
        );
    }
    s
}

fn summary_json(dir: &Path, records: &[Record]) -> serde_json::Value {
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "kind": r.kind, "scenario": r.scenario, "model": r.model.label, "dtype": r.dtype,
                "device": r.device, "median_s": r.stats.median, "tok_s": r.tok_s,
                "ttft_p50_ms": r.gen.as_ref().and_then(|g| g.ttft_ms).map(|p| p.p50),
                "tpot_p50_ms": r.gen.as_ref().and_then(|g| g.tpot_ms).map(|p| p.p50),
                "non_finite_logit_steps": r.gen.as_ref().and_then(|g| g.non_finite_steps),
                "samples": r.stats.n,
            })
        })
        .collect();
    serde_json::json!({
        "run": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "records": records.len(),
        // "running" while it is written; a run killed then keeps "running" here, which is why
        // readers take the state from complete.json and the owner (output::runs::run_state).
        "state": if dir.join(COMPLETE).is_file() { "complete" } else { "running" },
        "hardware": records.first().map(|r| r.hardware.describe()),
        "build": records.first().map(|r| &r.build),
        "results": rows,
    })
}

/// The run table: rows = scenario, columns = models, cells = median E2E tok/s.
pub fn table(records: &[Record]) -> String {
    let gen: Vec<&Record> = records
        .iter()
        .filter(|r| r.kind == Kind::Generation)
        .collect();
    let mut models: Vec<String> = Vec::new();
    let mut scenarios: Vec<String> = Vec::new();
    for r in &gen {
        let m = format!("{} ({})", r.model.label, r.dtype);
        if !models.contains(&m) {
            models.push(m);
        }
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| Scenario | Prompt | Gen | Sampling | {} |",
        models.join(" | ")
    );
    let _ = writeln!(s, "|---|---:|---:|---|{}", "---:|".repeat(models.len()));
    for sc in &scenarios {
        let first = gen.iter().find(|r| &r.scenario == sc).expect("present");
        let cells: Vec<String> = models
            .iter()
            .map(|m| {
                gen.iter()
                    .find(|r| &r.scenario == sc && &format!("{} ({})", r.model.label, r.dtype) == m)
                    .map(|r| {
                        let nan = r.gen.as_ref().and_then(|g| g.non_finite_warning());
                        match nan {
                            Some(w) => format!("{} ({w})", na(r.tok_s, 1)),
                            None => na(r.tok_s, 1),
                        }
                    })
                    .unwrap_or_else(|| "-".into())
            })
            .collect();
        let _ = writeln!(
            s,
            "| {sc} | {} | {} | {} | {} |",
            super::na_count(first.prompt_tokens),
            super::na_count(first.new_tokens),
            first.sampling_desc,
            cells.join(" | ")
        );
    }
    s
}

/// Latency detail: one row per record.
pub fn latency_table(records: &[Record]) -> String {
    let mut s = String::from("| Scenario | Model | E2E tok/s | TTFT p50 ms | TPOT p50 ms | ITL p90 ms | ITL p99 ms | prefill tok/s | decode tok/s | decode GB/s (% BW) | prefill GFLOP/s (% peak) | GPU power, energy | trials |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in records.iter().filter(|r| r.kind == Kind::Generation) {
        let g = r.gen.clone().unwrap_or_default();
        let rl = r.roofline.clone().unwrap_or_default();
        let pct = |p: Option<f64>| p.map(|p| format!(" ({p:.0}%)")).unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} | {}{} | {} | {} |",
            r.scenario,
            r.model.label,
            na(r.tok_s, 1),
            opt_ms(g.ttft_ms, |p| p.p50),
            opt_ms(g.tpot_ms, |p| p.p50),
            opt_ms(g.itl_ms, |p| p.p90),
            opt_ms(g.itl_ms, |p| p.p99),
            na(g.prefill_tok_s, 1),
            na(g.decode_tok_s, 1),
            na(rl.decode_gbs, 1),
            pct(rl.mem_bw_util_pct),
            na(rl.prefill_gflops, 1),
            pct(rl.compute_util_pct),
            r.power.describe(),
            r.stats.n
        );
    }
    s
}

/// Rows for non-generation workloads.
pub fn other_table(records: &[Record]) -> String {
    let mut s = String::from(
        "| Workload | Benchmark | median | tok/s | samples |\n|---|---|---:|---:|---:|\n",
    );
    for r in records.iter().filter(|r| r.kind != Kind::Generation) {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} ms | {} | {} |",
            r.kind,
            if r.id.is_empty() { &r.scenario } else { &r.id },
            r.stats.median * 1e3,
            na(r.tok_s, 1),
            r.stats.n
        );
    }
    s
}

/// The run's huge-page setting and what the first record that measured it read, e.g. `on
/// (THP madvise): 80 of 84 MiB ...`; "not recorded" for records older than the field.
fn huge_pages_text(r: &Record, records: &[Record]) -> String {
    let setting = if r.build.huge_pages.is_empty() {
        "not recorded"
    } else {
        &r.build.huge_pages
    };
    match records.iter().find_map(|r| r.memory.host_huge_page_bytes) {
        Some((huge, all)) => format!(
            "{setting}: {} of {} MiB anonymous memory in huge pages",
            huge >> 20,
            all >> 20
        ),
        None => format!("{setting}: huge-page MiB not available"),
    }
}

pub fn markdown(dir: &Path, records: &[Record]) -> String {
    let mut s = String::new();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(s, "# modelbench run {name}\n");
    if let Some(r) = records.first() {
        let _ = writeln!(s, "**Hardware**: {}\n", r.hardware.describe());
        let _ = writeln!(
            s,
            "**Build**: {} (dirty: {}), {}, features [{}], rustflags `{}`, {}{}; huge pages {}\n",
            r.build.git_commit,
            r.build.git_dirty,
            r.build.rustc,
            r.build.features,
            r.build.rustflags,
            r.build.profile,
            if r.build.cuda.is_empty() {
                String::new()
            } else {
                format!(", {}", r.build.cuda)
            },
            huge_pages_text(r, records)
        );
    }
    if records.iter().any(|r| r.kind == Kind::Generation) {
        let _ = writeln!(s, "E2E throughput (generated tokens / median end-to-end time, tok/s). Higher is better.\n");
        s.push_str(&table(records));
        s.push('\n');
        s.push_str(&latency_table(records));
        s.push('\n');
    }
    if records
        .iter()
        .any(|r| r.kind == Kind::Peer || (r.kind == Kind::Generation && r.engine.is_some()))
    {
        let _ = writeln!(
            s,
            "## Peers\n\nThe same scenarios run by each engine at the same prompt ids, lengths and thread count. Ratios are candle / peer (above 1: candle is faster); engines that alternated with candle repetition by repetition have paired ratios with bootstrap 95% intervals [low, high]. Chart: peers.png.\n"
        );
        s.push_str(&crate::output::peers::peers_table(records));
        s.push('\n');
        s.push_str(&crate::output::peers::engines_list(records));
        s.push('\n');
    }
    if records
        .iter()
        .any(|r| r.kind != Kind::Generation && r.kind != Kind::Peer)
    {
        s.push_str(&other_table(records));
    }
    s
}

/// target-reports/index.html and the pages under target-reports/site/ ([`crate::output::site`]):
/// the newest run's summary with its verdicts, a page per benchmark of the results database,
/// and a section for each other kind of result a run folder holds. The peers chart across
/// runs (peers-history.png) is drawn first from the run folders' own records; a failure there
/// never fails the run.
pub fn write_index(root: &Path) -> Result<()> {
    let folders = list_runs(root);
    if folders.iter().any(|p| p.join("peers.md").is_file()) {
        let runs: Vec<(String, Vec<Record>)> = folders
            .iter()
            .filter(|p| p.join("peers.md").is_file())
            .filter_map(|p| {
                let n = p.file_name()?.to_string_lossy().into_owned();
                read_run(p).ok().map(|r| (n, r))
            })
            .collect();
        let points = crate::output::peers::peers_history(&runs);
        let _ = crate::output::peers::peers_history_png(&root.join("peers-history.png"), &points);
    }
    crate::output::site::write(root)
}

/// One row of a PSANN grid's throughput.csv (the original PSANN throughput log's columns).
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputRow {
    pub timestamp: String,
    pub base: String,
    pub batch_tokens: usize,
    pub tokens_per_s: f64,
}

pub fn throughput_csv(rows: &[ThroughputRow]) -> String {
    let mut csv = String::from("timestamp,base,batch_tokens,tokens_per_s\n");
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{:.1}",
            r.timestamp, r.base, r.batch_tokens, r.tokens_per_s
        );
    }
    csv
}

pub fn read_throughput_csv(path: &Path) -> Result<Vec<ThroughputRow>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || {
            Error::Report(format!(
                "{}:{}: not a throughput.csv row",
                path.display(),
                i + 1
            ))
        };
        if f.len() != 4 {
            return Err(bad());
        }
        rows.push(ThroughputRow {
            timestamp: f[0].into(),
            base: f[1].into(),
            batch_tokens: f[2].parse().map_err(|_| bad())?,
            tokens_per_s: f[3].parse().map_err(|_| bad())?,
        });
    }
    Ok(rows)
}

/// throughput.md (best number per base, then every point) and throughput.png.
pub fn write_throughput_views(dir: &Path, grid: &str, rows: &[ThroughputRow]) -> Result<()> {
    let mut bases: Vec<&str> = Vec::new();
    for r in rows {
        if !bases.contains(&r.base.as_str()) {
            bases.push(&r.base);
        }
    }
    let mut md = format!("# PSANN-LM throughput ({grid} grid, fp32 forward, d_model 256, 4 layers, vocab 32000)\n\n| base | best tokens/s | at batch_tokens |\n|---|---:|---:|\n");
    for b in &bases {
        if let Some(r) = rows
            .iter()
            .filter(|r| r.base == *b)
            .max_by(|x, y| x.tokens_per_s.total_cmp(&y.tokens_per_s))
        {
            let _ = writeln!(md, "| {b} | {:.0} | {} |", r.tokens_per_s, r.batch_tokens);
        }
    }
    md.push_str("\n| base | batch_tokens | tokens/s |\n|---|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} |",
            r.base, r.batch_tokens, r.tokens_per_s
        );
    }
    atomic_write(&dir.join("throughput.md"), md.as_bytes())?;
    let series: Vec<(String, Vec<(f64, f64)>)> = bases
        .iter()
        .map(|b| {
            (
                b.to_string(),
                rows.iter()
                    .filter(|r| r.base == *b)
                    .map(|r| (r.batch_tokens as f64, r.tokens_per_s))
                    .collect(),
            )
        })
        .collect();
    crate::output::plot::lines_png(
        &dir.join("throughput.png"),
        "PSANN-LM forward throughput (fp32)",
        "batch_tokens",
        "tokens/s",
        &series,
    )
}

/// Packs a run folder into `<run>.zip` beside it (`--zip`).
pub fn zip_run(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    let target = dir.with_extension("zip");
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(Error::io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).map_err(Error::io(&f))?;
            let entry = format!("{name}/{}", f.file_name().expect("file").to_string_lossy());
            z.start_file(entry, opts)
                .map_err(|e| Error::Report(e.to_string()))?;
            z.write_all(&bytes).map_err(Error::io(&f))?;
        }
        z.finish().map_err(|e| Error::Report(e.to_string()))?;
    }
    atomic_write(&target, &buf.into_inner())?;
    Ok(target)
}

/// Metric-registry lines: one JSON object per metric, with a stable id.
pub fn registry_lines(records: &[Record]) -> String {
    let mut s = String::new();
    for r in records {
        let base = format!(
            "modelbench.{}.{}.{}.{}.{}",
            r.kind, r.scenario, r.model.label, r.dtype, r.device
        );
        // A metric that was not measured is left out, never written as 0.
        let mut put = |metric: &str, value: Option<f64>, unit: &str, higher: bool| {
            let Some(value) = value.filter(|v| v.is_finite()) else {
                return;
            };
            let line = serde_json::json!({
                "id": format!("{base}.{metric}"), "value": value, "unit": unit,
                "higher_is_better": higher, "timestamp": r.timestamp,
                "git_commit": r.build.git_commit, "hardware": r.hardware.fingerprint(),
            });
            let _ = writeln!(s, "{line}");
        };
        put("tok_s", r.tok_s, "tok/s", true);
        put("median_s", Some(r.stats.median), "s", false);
        if let Some(g) = &r.gen {
            if let Some(p) = g.ttft_ms {
                put("ttft_p50_ms", Some(p.p50), "ms", false);
            }
            if let Some(p) = g.tpot_ms {
                put("tpot_p50_ms", Some(p.p50), "ms", false);
            }
            put("prefill_tok_s", g.prefill_tok_s, "tok/s", true);
            put("decode_tok_s", g.decode_tok_s, "tok/s", true);
        }
        if let Some(b) = r.memory.host_peak_bytes {
            put("host_peak_bytes", Some(b as f64), "bytes", false);
        }
        if let Some(b) = r.memory.gpu_peak_bytes {
            put("gpu_peak_bytes", Some(b as f64), "bytes", false);
        }
    }
    s
}

/// Bencher Metric Format (`{"<benchmark>": {"<measure>": {"value", "lower_value",
/// "upper_value"}}}`) of a run's records: tok/s (bounds: the slowest and fastest sample's
/// rate), TTFT p99 (ms), % of the calibrated memory bandwidth and energy per token (J). A
/// measure that was not measured is left out; a record with none is left out. The benchmark
/// is the record's id, or its whole key when two records of the run share the id.
pub fn bencher_json(records: &[Record]) -> serde_json::Value {
    let id = |r: &Record| {
        if r.id.is_empty() {
            format!("{}/{}-{}", r.scenario, r.device, r.dtype)
        } else {
            r.id.clone()
        }
    };
    let mut out = serde_json::Map::new();
    for r in records {
        let mut m = serde_json::Map::new();
        let fin = |v: Option<f64>| v.filter(|x| x.is_finite());
        let mut put = |name: &str, value: Option<f64>, bounds: Option<(f64, f64)>| {
            let Some(value) = fin(value) else { return };
            let mut o = serde_json::json!({ "value": value });
            if let Some((lo, hi)) = bounds.filter(|(lo, hi)| lo.is_finite() && hi.is_finite()) {
                o["lower_value"] = lo.into();
                o["upper_value"] = hi.into();
            }
            m.insert(name.to_string(), o);
        };
        let rate_bounds = (r.stats.n > 0 && r.stats.min > 0.0).then(|| {
            let t = r.tokens_per_sample as f64;
            (t / r.stats.max, t / r.stats.min)
        });
        put("tokens-per-second", r.tok_s, rate_bounds);
        put(
            "ttft-p99-ms",
            r.gen.as_ref().and_then(|g| g.ttft_ms).map(|p| p.p99),
            None,
        );
        put(
            "memory-bandwidth-pct",
            r.roofline.as_ref().and_then(|x| x.mem_bw_util_pct),
            None,
        );
        put("energy-per-token-j", r.power.j_per_token, None);
        if m.is_empty() {
            continue;
        }
        let shared = records.iter().filter(|x| id(x) == id(r)).count() > 1;
        let name = if shared { r.key() } else { id(r) };
        out.insert(name, serde_json::Value::Object(m));
    }
    serde_json::Value::Object(out)
}

/// throughput.csv (the original PSANN throughput log's columns), throughput.md and throughput.png of a PSANN grid run,
/// from (base, batch_tokens, tokens/s) rows.
pub fn write_psann_artifacts(
    run: &mut RunDir,
    grid: &str,
    tput: &[(String, usize, f64)],
) -> Result<()> {
    let ts = crate::util::time::now_rfc3339();
    let rows: Vec<ThroughputRow> = tput
        .iter()
        .map(|(b, n, v)| ThroughputRow {
            timestamp: ts.clone(),
            base: b.clone(),
            batch_tokens: *n,
            tokens_per_s: *v,
        })
        .collect();
    run.put_file("throughput.csv", throughput_csv(&rows).into_bytes())?;
    write_throughput_views(&run.path, grid, &rows)
}
