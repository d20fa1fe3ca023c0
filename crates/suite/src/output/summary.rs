//! The summary of a run: one line per benchmark (median time, its bootstrap 95% interval,
//! tokens/s) and the change against the previous run that measured the same benchmark on the
//! same machine, with a verdict against that benchmark's noise threshold. `cargo bench`
//! prints it at the end and writes it to the run folder as summary.md; index.html opens on it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::judge::outputs::{judge as judge_outputs, OutputJudgement, OutputVerdict};
use crate::judge::speed::{judge, Verdict, RESAMPLES, SEED};
use crate::measure::stats::bootstrap_median_ci;
use crate::output::record::{Harness, Record};
use crate::output::runs::{baseline_runs, read_run};

/// How many earlier run folders are searched for a benchmark's previous measurement.
pub const LOOKBACK: usize = 100;

/// The change of one benchmark against its previous measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The run folder of the previous measurement.
    pub run: String,
    /// median(this run) / median(previous): above 1 is slower.
    pub ratio: f64,
    /// Bootstrap 95% interval of the ratio (None with too few samples).
    pub ci: Option<(f64, f64)>,
    pub verdict: Verdict,
    /// The noise threshold the verdict used (a fraction: 0.2 = 20%).
    pub threshold: f64,
    /// The output verdict against the same previous measurement: did the model compute the
    /// same thing (`judge::outputs::judge`).
    pub outputs: OutputJudgement,
}

/// One benchmark of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Criterion's benchmark id (`medium/cpu-f32/fixture:llama`).
    pub id: String,
    pub samples: usize,
    pub median_s: f64,
    /// Bootstrap 95% interval of the median (None for fewer than two samples).
    pub ci_s: Option<(f64, f64)>,
    pub tok_s: Option<f64>,
    /// None: no earlier run on this machine measured this benchmark.
    pub change: Option<Change>,
}

fn id_of(r: &Record) -> String {
    if r.id.is_empty() {
        format!("{}/{}-{}", r.scenario, r.device, r.dtype)
    } else {
        r.id.clone()
    }
}

/// A record the summary covers: criterion's own measurements of candle (not a peer's row).
/// A record with an injected slowdown is judged against the previous clean run (that is
/// what a calibration run is for) and is never another run's previous measurement.
pub fn counts(r: &Record) -> bool {
    r.harness == Harness::Criterion && r.engine.is_none() && !r.samples_s.is_empty()
}

/// The summary lines of `records` (the run folder `run` under `root`). Each benchmark's
/// previous measurement is the newest earlier run folder that ended (at most [`LOOKBACK`]) holding a
/// criterion record with the same key on the same hardware and with no injected slowdown;
/// `threshold(id)` is the noise threshold its change is judged against.
pub fn lines(
    root: &Path,
    run: &Path,
    records: &[Record],
    threshold: &dyn Fn(&str) -> f64,
) -> Vec<Line> {
    let mine: Vec<&Record> = records.iter().filter(|r| counts(r)).collect();
    let mut wanted: BTreeMap<String, Option<(String, Record)>> =
        mine.iter().map(|r| (r.key(), None)).collect();
    let hw = mine.first().map(|r| r.hardware.fingerprint());
    let name = run.file_name().map(|n| n.to_os_string());
    // Only runs that ended: an interrupted run is never a baseline unasked.
    let earlier: Vec<_> = baseline_runs(root)
        .into_iter()
        .filter(|p| p.as_path() != run && p.file_name().map(|n| n.to_os_string()) < name)
        .collect();
    for p in earlier.iter().rev().take(LOOKBACK) {
        if wanted.values().all(|v| v.is_some()) {
            break;
        }
        let Ok(rs) = read_run(p) else { continue };
        let folder = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for r in rs {
            if !counts(&r)
                || r.injected.is_some()
                || r.injected_numeric.is_some()
                || Some(r.hardware.fingerprint()) != hw
            {
                continue;
            }
            if let Some(slot) = wanted.get_mut(&r.key()) {
                if slot.is_none() {
                    *slot = Some((folder.clone(), r));
                }
            }
        }
    }
    mine.iter()
        .enumerate()
        .map(|(i, r)| {
            let id = id_of(r);
            let change = wanted.get(&r.key()).cloned().flatten().map(|(run, prev)| {
                let t = threshold(&id);
                let (verdict, ci) = judge(&prev.samples_s, &r.samples_s, t);
                Change {
                    run,
                    ratio: r.stats.median / prev.stats.median,
                    ci,
                    verdict,
                    threshold: t,
                    outputs: judge_outputs(prev.outputs.as_ref(), r.outputs.as_ref()),
                }
            });
            Line {
                samples: r.samples_s.len(),
                median_s: r.stats.median,
                ci_s: bootstrap_median_ci(&r.samples_s, RESAMPLES, SEED + i as u64),
                tok_s: r.tok_s,
                change,
                id,
            }
        })
        .collect()
}

/// A unit for times around `scale` seconds (s, ms, µs, ns): `(factor, name)`.
pub fn unit(scale: f64) -> (f64, &'static str) {
    if scale >= 1.0 {
        (1.0, "s")
    } else if scale >= 1e-3 {
        (1e3, "ms")
    } else if scale >= 1e-6 {
        (1e6, "µs")
    } else {
        (1e9, "ns")
    }
}

/// Three significant digits (no more than the samples support), at most no decimals.
pub fn sig3(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "n/a".into()
    } else if a >= 99.95 {
        format!("{v:.0}")
    } else if a >= 9.995 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `1.58 s`, `15.1 ms`.
pub fn time(s: f64) -> String {
    let (f, u) = unit(s);
    format!("{} {u}", sig3(s * f))
}

/// The median's interval in the median's unit: `[1.38, 1.81] s`.
pub fn interval(median: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => {
            let (f, u) = unit(median);
            format!("[{}, {}] {u}", sig3(lo * f), sig3(hi * f))
        }
        None => "n/a".into(),
    }
}

/// A ratio as a signed percentage change (`1.25` -> `+25.0%`).
pub fn pct(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

/// `+3.2% [-1.0%, +7.5%] within noise (±25%)`, or `first run` without a previous one.
pub fn change(c: &Option<Change>) -> String {
    let Some(c) = c else {
        return "first run here".into();
    };
    let ci =
        c.ci.map(|(lo, hi)| format!(" [{}, {}]", pct(lo), pct(hi)))
            .unwrap_or_default();
    let verdict = c.verdict.words().change;
    format!(
        "{}{ci} {verdict} (±{:.0}%)",
        pct(c.ratio),
        c.threshold * 100.0
    )
}

/// The output cell: the output verdict against the previous run's outputs.
pub fn outputs_cell(c: &Option<Change>) -> String {
    match c {
        None => "first run here".into(),
        Some(c) if c.outputs.verdict == OutputVerdict::Unjudged => "not judged".into(),
        Some(c) => c.outputs.verdict.to_string(),
    }
}

fn cells(l: &Line) -> [String; 6] {
    [
        l.id.clone(),
        time(l.median_s),
        interval(l.median_s, l.ci_s),
        l.tok_s.map(sig3).unwrap_or_else(|| "n/a".into()),
        change(&l.change),
        outputs_cell(&l.change),
    ]
}

const HEAD: [&str; 6] = [
    "benchmark",
    "median",
    "95% CI of median",
    "tok/s",
    "time vs previous run",
    "outputs vs previous run",
];

/// The console table: aligned columns, then one line on how to read it.
pub fn table(lines: &[Line]) -> String {
    let rows: Vec<[String; 6]> = lines.iter().map(cells).collect();
    let mut w = HEAD.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let mut put = |r: &[String]| {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            // Numbers right-aligned, names and verdicts left-aligned.
            if i == 1 || i == 3 {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                if i + 1 < r.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
            if i + 1 < r.len() {
                line.push_str("  ");
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    };
    put(&HEAD.map(String::from));
    for r in &rows {
        put(r);
    }
    for l in lines {
        if let Some(c) = l
            .change
            .as_ref()
            .filter(|c| c.outputs.verdict == OutputVerdict::Changed)
        {
            let _ = writeln!(s, "OUTPUTS CHANGED: {}: {}", l.id, c.outputs.why);
        }
    }
    s
}

/// summary.md: the same table in Markdown, with where the previous runs were.
pub fn markdown(run: &str, lines: &[Line]) -> String {
    let mut s = format!(
        "# Summary of {run}\n\n{} benchmarks. Median of criterion's samples (time per iteration) with its bootstrap 95% interval; tok/s = tokens per iteration / median; change = median time against the previous run of the same benchmark on this machine, with the 95% interval of the ratio and the verdict against the benchmark's noise threshold (`within noise` unless the whole interval lies beyond it); outputs = the output verdict against the same previous run (`same`: bit-identical probe logits and ids; `within numerical noise`: inside what the model's own legitimate perturbation does; `OUTPUTS CHANGED`: the model computes something else).\n\n| {} |\n|---|---:|---:|---:|---|---|\n",
        lines.len(),
        HEAD.join(" | ")
    );
    for l in lines {
        let c = cells(l);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            c[0], c[1], c[2], c[3], c[4], c[5]
        );
    }
    for l in lines {
        if let Some(c) = l
            .change
            .as_ref()
            .filter(|c| c.outputs.verdict == OutputVerdict::Changed)
        {
            let _ = writeln!(s, "\n**OUTPUTS CHANGED** `{}`: {}", l.id, c.outputs.why);
        }
    }
    let mut prev: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.change.as_ref().map(|c| c.run.as_str()))
        .collect();
    prev.sort();
    prev.dedup();
    if !prev.is_empty() {
        let _ = writeln!(s, "\nPrevious runs compared with: {}.", prev.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_three_significant_digits() {
        assert_eq!(time(1.5834), "1.58 s");
        assert_eq!(time(0.015123), "15.1 ms");
        assert_eq!(time(0.000123456), "123 µs");
        assert_eq!(interval(0.0151, Some((0.0138, 0.0181))), "[13.8, 18.1] ms");
        assert_eq!(sig3(161.77), "162");
        assert_eq!(sig3(99.99), "100");
        assert_eq!(time(0.09999), "100 ms");
    }

    /// One run folder per `(name, record)` under `root`, its results.jsonl holding the record.
    fn write_runs(root: &Path, runs: &[(&str, Record)]) {
        for (name, r) in runs {
            let d = root.join(name);
            std::fs::create_dir_all(&d).unwrap();
            let line = serde_json::to_string(r).unwrap();
            std::fs::write(d.join("results.jsonl"), format!("{line}\n")).unwrap();
        }
    }

    /// An injected run is judged against the previous clean run (SLOWER), and a later clean
    /// run is judged against the clean run before it, never against the injected one.
    #[test]
    fn an_injected_run_is_judged_but_never_a_baseline() {
        use crate::output::record::{Kind, Record};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let rec = |f: f64, injected: Option<&str>| {
            let samples: Vec<f64> = (0..20)
                .map(|i| 0.01 * f * (1.0 + 0.01 * (i as f64).sin()))
                .collect();
            let mut r = Record::from_samples(Kind::Generation, "medium", samples, 16);
            r.id = "medium/cpu-f32/fixture:llama".into();
            r.injected = injected.map(str::to_string);
            r
        };
        let runs = [
            ("20990101_000001", rec(1.0, None)),
            ("20990101_000002", rec(1.5, Some("decode:50%"))),
            ("20990101_000003", rec(1.02, None)),
        ];
        write_runs(root, &runs);
        let judged = |i: usize| {
            let (name, r) = &runs[i];
            lines(root, &root.join(name), std::slice::from_ref(r), &|_| 0.2)[0]
                .change
                .clone()
                .expect("a previous run")
        };
        let slow = judged(1);
        assert_eq!(slow.verdict, Verdict::Regression);
        assert_eq!(slow.run, "20990101_000001");
        let clean = judged(2);
        assert_eq!(clean.verdict, Verdict::Unchanged);
        assert_eq!(clean.run, "20990101_000001", "never the injected run");
    }

    /// The output verdict of the summary: a run with the logits changed (its ids differ from
    /// the previous run's) reads OUTPUTS CHANGED in its line and table while its time verdict
    /// stays what the samples say; a later clean run is judged against the clean run before
    /// it (`same`), never against the changed one.
    #[test]
    fn changed_outputs_are_marked_and_never_a_baseline() {
        use crate::measure::outputs::{Ids, Outputs};
        use crate::output::record::{Kind, Record};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let rec = |ids: &[u32], numeric: Option<&str>| {
            let samples: Vec<f64> = (0..20)
                .map(|i| 0.01 * (1.0 + 0.01 * (i as f64).sin()))
                .collect();
            let mut r = Record::from_samples(Kind::Generation, "medium", samples, 16);
            r.id = "medium/cpu-f32/fixture:llama".into();
            r.injected_numeric = numeric.map(str::to_string);
            let mut i = Ids::default();
            i.push(0, ids);
            r.outputs = Some(Outputs {
                ids: i,
                probe: None,
            });
            r
        };
        let runs = [
            ("20990101_000001", rec(&[1, 2, 3], None)),
            ("20990101_000002", rec(&[1, 2, 4], Some("lm_head:5%"))),
            ("20990101_000003", rec(&[1, 2, 3], None)),
        ];
        write_runs(root, &runs);
        let judged = |i: usize| {
            let (name, r) = &runs[i];
            lines(root, &root.join(name), std::slice::from_ref(r), &|_| 0.2)
        };
        let changed = judged(1);
        let c = changed[0].change.clone().unwrap();
        assert_eq!(c.outputs.verdict, OutputVerdict::Changed);
        assert_eq!(c.verdict, Verdict::Unchanged);
        let t = table(&changed);
        assert!(
            t.contains("OUTPUTS CHANGED: medium/cpu-f32/fixture:llama"),
            "{t}"
        );
        assert!(markdown("r", &changed).contains("**OUTPUTS CHANGED**"));
        let clean = judged(2)[0].change.clone().unwrap();
        assert_eq!(clean.run, "20990101_000001", "never the changed run");
        assert_ne!(clean.outputs.verdict, OutputVerdict::Changed);
    }

    #[test]
    fn a_change_reads_as_a_verdict() {
        let c = Change {
            run: "r".into(),
            ratio: 1.032,
            ci: Some((0.99, 1.075)),
            verdict: Verdict::Unchanged,
            threshold: 0.25,
            outputs: judge_outputs(None, None),
        };
        assert_eq!(change(&Some(c)), "+3.2% [-1.0%, +7.5%] within noise (±25%)");
        assert_eq!(change(&None), "first run here");
    }

    /// A run that did not end (issue 61 item 8) is no later run's baseline; the same folder
    /// marked complete is.
    #[test]
    fn an_interrupted_run_is_never_a_baseline() {
        use crate::output::record::{Kind, Record};
        use crate::output::runs::{run_state, RunState, Started, COMPLETE, STARTED};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let rec = |f: f64| {
            let samples: Vec<f64> = (0..20)
                .map(|i| 0.01 * f * (1.0 + 0.01 * (i as f64).sin()))
                .collect();
            let mut r = Record::from_samples(Kind::Generation, "medium", samples, 16);
            r.id = "medium/cpu-f32/fixture:llama".into();
            r
        };
        let runs = [
            ("20990101_000001", rec(1.0)),
            ("20990101_000002", rec(1.5)),
            ("20990101_000003", rec(1.5)),
        ];
        write_runs(root, &runs);
        // Run 1 ended; run 2 was started by a process that is gone (no pid is u32::MAX).
        std::fs::write(root.join(runs[0].0).join(COMPLETE), "{}").unwrap();
        let gone = Started {
            pid: u32::MAX,
            start_ticks: 1,
            started_at: "2099-01-01T00:00:02Z".into(),
            host: crate::output::runs::host(),
        };
        std::fs::write(
            root.join(runs[1].0).join(STARTED),
            serde_json::to_vec(&gone).unwrap(),
        )
        .unwrap();
        assert_eq!(run_state(&root.join(runs[0].0)), RunState::Complete);
        assert_eq!(run_state(&root.join(runs[1].0)), RunState::Interrupted);
        let judged = || {
            let (name, r) = &runs[2];
            lines(root, &root.join(name), std::slice::from_ref(r), &|_| 0.2)[0]
                .change
                .clone()
                .expect("a previous run")
        };
        let c = judged();
        assert_eq!(c.run, "20990101_000001", "never the interrupted run");
        assert_eq!(c.verdict, Verdict::Regression);
        // The same folder once complete is the baseline (and 1.5x against 1.5x is no change).
        std::fs::write(root.join(runs[1].0).join(COMPLETE), "{}").unwrap();
        let c = judged();
        assert_eq!(c.run, "20990101_000002");
        assert_eq!(c.verdict, Verdict::Unchanged);
    }
}
