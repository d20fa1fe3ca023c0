//! Views of `modelbench peers` runs: one table (per scenario, candle's row then each peer's,
//! with candle/peer ratios of E2E, prefill and decode tok/s, and TTFT / TPOT side by side) and
//! a PNG bar chart of the same rates. Built from the records alone, so `modelbench report`
//! redraws them.
//!
//! A peer that ran in alternation with candle (`extra.interleaved`) has per-repetition rates
//! (`extra.trial_rates`) paired with candle's: each ratio is then the median of the per-pair
//! ratios candle_i / peer_i with a percentile-bootstrap 95% interval (measure::paired), printed
//! `0.42x [0.39, 0.45]`. Otherwise (older records, the generation bench's optional peer row) it
//! is the ratio of the medians and says that it has no interval.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::na;
use crate::error::{Error, Result};
use crate::measure::paired::{paired_ratio, ratios, PairedRatio, MIN_PAIRS};
use crate::output::record::{Kind, Record, TrialRates};

/// What every peers table says about how it was measured (`{machine}`: the machine).
pub const PEERS_NOTE: &str = "Ratios are candle / peer (above 1: candle is faster). llama.cpp and PyTorch ran in alternation with candle, repetition by repetition (A B, B A, ...), from the same prompt token ids, crediting the same generated tokens; each ratio is the median of the per-repetition ratios with its bootstrap 95% interval [low, high]. Machine: {machine}.";

/// candle / peer for a higher-is-better rate; None when either was not measured.
pub fn ratio(candle: Option<f64>, peer: Option<f64>) -> Option<f64> {
    match (candle, peer) {
        (Some(c), Some(p)) if c.is_finite() && p.is_finite() && p > 0.0 => Some(c / p),
        _ => None,
    }
}

/// One row of the peers table.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    pub scenario: String,
    pub prompt_tokens: Option<usize>,
    pub new_tokens: Option<usize>,
    pub engine: String,
    pub version: String,
    pub dtype: String,
    pub threads: Option<usize>,
    pub e2e_tok_s: Option<f64>,
    pub prefill_tok_s: Option<f64>,
    pub decode_tok_s: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub tpot_p50_ms: Option<f64>,
    /// candle / this engine (None on candle's own row and where not measured).
    pub ratio_e2e: Option<Ratio>,
    pub ratio_prefill: Option<Ratio>,
    pub ratio_decode: Option<Ratio>,
    /// The engine's setting as the table names it (`llama.cpp (KV f32, FA off)`).
    pub label: String,
    /// Threads: as the engine reported them, and measured busy (None: not measured).
    pub busy_threads: Option<usize>,
    pub cores_used: Option<f64>,
    /// A thread-count warning this record carries (kept with --allow-thread-mismatch).
    pub thread_warning: Option<String>,
    /// The engine's own model load time, seconds.
    pub load_s: Option<f64>,
}

/// A candle / peer ratio: paired (median of per-repetition ratios, with an interval from
/// [`MIN_PAIRS`] pairs on) or, for engines that did not alternate with candle, the ratio of
/// the two medians (no interval).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ratio {
    Paired(PairedRatio),
    OfMedians(f64),
}

impl Ratio {
    pub fn value(&self) -> f64 {
        match self {
            Ratio::Paired(p) => p.ratio,
            Ratio::OfMedians(r) => *r,
        }
    }

    pub fn ci(&self) -> Option<(f64, f64)> {
        match self {
            Ratio::Paired(p) => p.ci,
            Ratio::OfMedians(_) => None,
        }
    }

    /// `0.42x [0.39, 0.45]`; without an interval it says why.
    pub fn cell(&self) -> String {
        match self {
            Ratio::Paired(p) => match p.ci {
                Some((lo, hi)) => format!("{:.2}x [{lo:.2}, {hi:.2}]", p.ratio),
                None => format!("{:.2}x [no CI: {} pairs < {MIN_PAIRS}]", p.ratio, p.pairs),
            },
            Ratio::OfMedians(r) => format!("{r:.2}x [no CI: not interleaved]"),
        }
    }
}

/// The paired ratio candle_i / peer_i of one rate.
pub fn paired(candle: &[Option<f64>], peer: &[Option<f64>]) -> Option<PairedRatio> {
    let f = |v: &[Option<f64>]| v.iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let r = ratios(&f(peer), &f(candle));
    (!r.is_empty()).then(|| paired_ratio(&r))
}

fn engine_of(r: &Record) -> String {
    r.engine
        .as_ref()
        .map(|e| e.name.clone())
        .unwrap_or_else(|| "candle".into())
}

fn row(r: &Record, candle: Option<(&PeerRow, &Record)>) -> PeerRow {
    let g = r.gen.clone().unwrap_or_default();
    let mut x = PeerRow {
        scenario: r.scenario.clone(),
        prompt_tokens: r.prompt_tokens,
        new_tokens: r.new_tokens,
        engine: engine_of(r),
        version: r
            .engine
            .as_ref()
            .map(|e| e.version.clone())
            .unwrap_or_default(),
        dtype: r.dtype.to_string(),
        threads: r.engine.as_ref().and_then(|e| e.threads),
        e2e_tok_s: r.tok_s,
        prefill_tok_s: g.prefill_tok_s,
        decode_tok_s: g.decode_tok_s,
        ttft_p50_ms: g.ttft_ms.map(|p| p.p50),
        tpot_p50_ms: g.tpot_ms.map(|p| p.p50),
        ratio_e2e: None,
        ratio_prefill: None,
        ratio_decode: None,
        label: r
            .extra
            .get("setting_label")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| engine_of(r)),
        busy_threads: r
            .extra
            .pointer("/thread_use/busy_threads")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize),
        cores_used: r
            .extra
            .pointer("/thread_use/cores_used")
            .and_then(|v| v.as_f64()),
        thread_warning: r
            .extra
            .get("thread_warning")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        load_s: r.model.load_seconds,
    };
    if let Some((c, crec)) = candle {
        let pair = r.extra.get("interleaved").and_then(|v| v.as_bool()) == Some(true);
        match (pair, TrialRates::of(crec), TrialRates::of(r)) {
            (true, Some(cr), Some(pr)) => {
                x.ratio_e2e = paired(&cr.e2e_tok_s, &pr.e2e_tok_s).map(Ratio::Paired);
                x.ratio_prefill = paired(&cr.prefill_tok_s, &pr.prefill_tok_s).map(Ratio::Paired);
                x.ratio_decode = paired(&cr.decode_tok_s, &pr.decode_tok_s).map(Ratio::Paired);
            }
            _ => {
                x.ratio_e2e = ratio(c.e2e_tok_s, x.e2e_tok_s).map(Ratio::OfMedians);
                x.ratio_prefill = ratio(c.prefill_tok_s, x.prefill_tok_s).map(Ratio::OfMedians);
                x.ratio_decode = ratio(c.decode_tok_s, x.decode_tok_s).map(Ratio::OfMedians);
            }
        }
    }
    x
}

/// The rows: for each scenario of a peers run, candle's generation record of the same scenario
/// and model first, then each peer's, in record order.
pub fn peer_rows(records: &[Record]) -> Vec<PeerRow> {
    let mut scenarios: Vec<(String, String)> = Vec::new();
    // A peers run: peer records, and candle's generation records (which name their engine;
    // other runs' generation records do not).
    for r in records
        .iter()
        .filter(|r| r.kind == Kind::Peer || (r.kind == Kind::Generation && r.engine.is_some()))
    {
        let k = (r.scenario.clone(), r.model.label.clone());
        if !scenarios.contains(&k) {
            scenarios.push(k);
        }
    }
    let mut rows = Vec::new();
    for (sc, model) in scenarios {
        let same = |r: &&Record| r.scenario == sc && r.model.label == model;
        let crec = records
            .iter()
            .filter(same)
            .find(|r| r.kind == Kind::Generation);
        let candle = crec.map(|r| row(r, None));
        if let Some(c) = &candle {
            rows.push(c.clone());
        }
        for r in records.iter().filter(same).filter(|r| r.kind == Kind::Peer) {
            rows.push(row(r, candle.as_ref().zip(crec)));
        }
    }
    rows
}

fn ratio_cell(v: Option<Ratio>, engine: &str) -> String {
    if engine == "candle" {
        return "-".into();
    }
    v.filter(|x| x.value().is_finite())
        .map(|x| x.cell())
        .unwrap_or_else(|| "n/a".into())
}

/// `2 (2 busy, 1.98 cores)`; `MISMATCH` when the record carries a thread warning.
fn threads_cell(r: &PeerRow) -> String {
    let mut s = r
        .threads
        .map(|t| t.to_string())
        .unwrap_or_else(|| "n/a".into());
    match (r.busy_threads, r.cores_used) {
        (Some(b), Some(c)) => s.push_str(&format!(" ({b} busy, {c:.2} cores)")),
        _ => s.push_str(" (busy: not measured)"),
    }
    if r.thread_warning.is_some() {
        s.push_str(" MISMATCH");
    }
    s
}

/// The peers table (Markdown).
pub fn peers_table(records: &[Record]) -> String {
    let mut s = String::from(
        "| Scenario | Prompt | Gen | Engine | weights | threads (busy, cores used) | load s | E2E tok/s | prefill tok/s | decode tok/s | TTFT p50 ms | TPOT p50 ms | candle/peer E2E [95% CI] | candle/peer prefill [95% CI] | candle/peer decode [95% CI] |\n|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in peer_rows(records) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            super::na_count(r.prompt_tokens),
            super::na_count(r.new_tokens),
            r.label,
            r.dtype,
            threads_cell(&r),
            na(r.load_s, 2),
            na(r.e2e_tok_s, 1),
            na(r.prefill_tok_s, 1),
            na(r.decode_tok_s, 1),
            na(r.ttft_p50_ms, 2),
            na(r.tpot_p50_ms, 2),
            ratio_cell(r.ratio_e2e, &r.engine),
            ratio_cell(r.ratio_prefill, &r.engine),
            ratio_cell(r.ratio_decode, &r.engine),
        );
    }
    s
}

/// The engines of a run and their versions and flags, one line each (for the run README).
pub fn engines_list(records: &[Record]) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut s = String::new();
    for r in records {
        let Some(e) = &r.engine else { continue };
        let line = format!(
            "- **{}**: {}; {}; threads {}",
            e.name,
            e.version,
            e.flags,
            e.threads
                .map(|t| t.to_string())
                .unwrap_or_else(|| "n/a".into())
        );
        if !seen.contains(&line) {
            let _ = writeln!(s, "{line}");
            seen.push(line);
        }
    }
    s
}

fn perr(e: impl std::fmt::Display) -> Error {
    Error::Report(format!("plot: {e}"))
}

/// Three panels (E2E, prefill, decode tok/s), a group of bars per scenario, one bar per
/// engine; an unmeasured value draws no bar. Written atomically as PNG. Returns false (and
/// writes nothing) when the records hold no peer rows.
pub fn peers_png(path: &Path, title: &str, records: &[Record]) -> Result<bool> {
    let rows = peer_rows(records);
    if rows.is_empty() {
        return Ok(false);
    }
    crate::output::plot::register_fonts();
    let mut scenarios: Vec<String> = Vec::new();
    let mut engines: Vec<String> = Vec::new();
    for r in &rows {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
        if !engines.contains(&r.label) {
            engines.push(r.label.clone());
        }
    }
    type Metric = fn(&PeerRow) -> Option<f64>;
    let panels: [(&str, Metric); 3] = [
        ("E2E tok/s", |r| r.e2e_tok_s),
        ("prefill tok/s", |r| r.prefill_tok_s),
        ("decode tok/s", |r| r.decode_tok_s),
    ];
    let colors = [RGBColor(220, 90, 40), BLUE, GREEN, MAGENTA, CYAN, BLACK];
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1200, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(perr)?;
        let areas = root.split_evenly((1, 3));
        let nb = engines.len() as f64;
        for (area, (label, get)) in areas.iter().zip(panels.iter()) {
            let ymax = rows
                .iter()
                .filter_map(get)
                .filter(|v| v.is_finite())
                .fold(0f64, f64::max)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .caption(*label, ("sans-serif", 18))
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..scenarios.len() as f64, 0f64..ymax.max(1.0))
                .map_err(perr)?;
            let sc = scenarios.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(scenarios.len() * 2 + 1)
                .x_label_formatter(&move |x| {
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 1e-6 && i < sc.len() {
                        sc[i].clone()
                    } else {
                        String::new()
                    }
                })
                .y_desc(*label)
                .draw()
                .map_err(perr)?;
            for (ei, engine) in engines.iter().enumerate() {
                let c = colors[ei % colors.len()];
                let bars: Vec<Rectangle<(f64, f64)>> = scenarios
                    .iter()
                    .enumerate()
                    .filter_map(|(si, s)| {
                        let v = rows
                            .iter()
                            .find(|r| &r.scenario == s && &r.label == engine)
                            .and_then(get)
                            .filter(|v| v.is_finite())?;
                        let w = 0.8 / nb;
                        let x0 = si as f64 + 0.1 + ei as f64 * w;
                        Some(Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], c.filled()))
                    })
                    .collect();
                chart
                    .draw_series(bars)
                    .map_err(perr)?
                    .label(engine.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(perr)?;
        }
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    Ok(true)
}

/// One point of the peers history: one run's candle/peer E2E ratio for a scenario and engine
/// setting, with the commit and the machine it was measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    pub run: String,
    pub timestamp: String,
    pub commit: String,
    pub machine: String,
    pub scenario: String,
    pub engine: String,
    pub ratio: Ratio,
}

/// The peers history of run folders (name, records), in the order given (oldest first): every
/// peer row with a measured E2E ratio.
pub fn peers_history(runs: &[(String, Vec<Record>)]) -> Vec<HistoryPoint> {
    let mut out = Vec::new();
    for (name, records) in runs {
        for row in peer_rows(records) {
            let Some(ratio) = row.ratio_e2e.filter(|r| r.value().is_finite()) else {
                continue;
            };
            let Some(r) = records.iter().find(|r| {
                r.kind == Kind::Peer && r.scenario == row.scenario && row_label(r) == row.label
            }) else {
                continue;
            };
            out.push(HistoryPoint {
                run: name.clone(),
                timestamp: r.timestamp.clone(),
                commit: r.build.git_commit.chars().take(10).collect(),
                machine: r.hardware.fingerprint(),
                scenario: row.scenario.clone(),
                engine: row.label.clone(),
                ratio,
            });
        }
    }
    out
}

fn row_label(r: &Record) -> String {
    r.extra
        .get("setting_label")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| engine_of(r))
}

/// The history as a Markdown table, oldest first.
pub fn peers_history_table(points: &[HistoryPoint]) -> String {
    let mut s = String::from(
        "| time | run | commit | machine | scenario | engine | candle/peer E2E [95% CI] |\n|---|---|---|---|---|---|---:|\n",
    );
    for p in points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.timestamp,
            p.run,
            p.commit,
            p.machine,
            p.scenario,
            p.engine,
            p.ratio.cell()
        );
    }
    s
}

/// The history chart: candle/peer E2E ratio per run (time order), a line per machine,
/// scenario and engine setting. Returns false (and writes nothing) without points.
pub fn peers_history_png(path: &Path, points: &[HistoryPoint]) -> Result<bool> {
    if points.is_empty() {
        return Ok(false);
    }
    let mut runs: Vec<&str> = Vec::new();
    for p in points {
        if !runs.contains(&p.run.as_str()) {
            runs.push(&p.run);
        }
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in points {
        let key = format!("{} · {} · {}", p.machine, p.scenario, p.engine);
        let x = runs.iter().position(|r| *r == p.run).unwrap_or(0) as f64 + 1.0;
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push((x, p.ratio.value())),
            None => series.push((key, vec![(x, p.ratio.value())])),
        }
    }
    crate::output::plot::trend_png(
        path,
        "candle / peer E2E tok/s per run (above 1: candle is faster)",
        ("run (time order)", "candle / peer"),
        &series,
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_candle_over_peer_and_null_when_unmeasured() {
        assert_eq!(ratio(Some(30.0), Some(20.0)), Some(1.5));
        assert_eq!(ratio(None, Some(20.0)), None);
        assert_eq!(ratio(Some(30.0), None), None);
        assert_eq!(ratio(Some(30.0), Some(0.0)), None);
    }
}
