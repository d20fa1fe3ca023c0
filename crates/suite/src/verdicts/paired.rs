//! `modelbench compare --paired A B`: paired A/B verdicts (Tango.rs's method). A and B are
//! commits or branches (each built once in a worktree under target/paired/) or paths to
//! `modelbench` executables. Both start as long-lived workers (`modelbench worker`) with the
//! model loaded and warmed up; the parent asks them for one trial each, in ABBA order, pair
//! after pair, in the same minutes, with the same prompt ids (same seed, same trial number on
//! both sides). Each pair gives ratios B/A of end-to-end time, prefill time (TTFT) and time
//! per output token after the first (decode); the verdict of each metric is the median of its
//! per-pair ratios with a bootstrap CI (`measure::paired`) against the threshold.
//!
//! **Sequential, with stated power (issue 46).** A fixed number of pairs is too few on a noisy
//! day and wasted on a quiet one, and looking at the interval after every batch and stopping
//! when it looks good ("peeking") inflates false alarms. So the pairs come in looks of
//! `--pairs` each, up to `--max-pairs` (at most K = max/pairs looks); every look's intervals
//! are at confidence 1 - 0.05/K (Bonferroni over the looks: whatever look it stops at, an
//! unchanged build is flagged with probability at most 5% per metric). After each look a
//! metric is decided when its interval lies wholly above 1 + t (Regression), wholly below
//! 1 - t (Improvement), or wholly inside [1 - t, 1 + t] (Unchanged: equal within the
//! threshold); the comparison stops when every metric is decided, at the pair cap, or at the
//! time cap (`--max-minutes`), and a metric still open then is "Undecided", never "Unchanged".
//! `--max-pairs` equal to `--pairs` is the old fixed design (one look, 95%).

use std::path::Path;
use std::process::ExitCode;

use crate::measure::paired::{a_first, paired_ratio_at, ratios, PairedRatio};
use crate::output::compare::parse_threshold;
use crate::output::report::reports_root;
use crate::util::fsio::atomic_write;
use crate::verdicts::build::{build_side_with, candle_source, resolve};
use crate::verdicts::worker::{scenarios, Worker};
use crate::workloads::ops::Phase;
use crate::{Error, Result};

/// The options of `compare --paired`.
#[derive(clap::Args, Debug, Clone)]
pub struct PairedOpts {
    /// Paired A/B: BASE and NEW are commits/branches (built once each in a worktree under
    /// target/paired/) or paths to modelbench executables; both run as workers, alternating
    /// trials ABBA in the same minutes.
    #[arg(long)]
    pub paired: bool,
    /// With --paired: the model (one).
    #[arg(long = "paired-model", default_value = "fixture:llama")]
    pub model: String,
    /// With --paired: the suite tier (quick: short and medium) or one scenario name.
    #[arg(long = "paired-suite", default_value = crate::config::knobs::default_of("MODELBENCH_TIER"))]
    pub suite: String,
    /// With --paired: pairs per scenario in each look of the sequential design (module docs).
    #[arg(long, default_value_t = 60)]
    pub pairs: usize,
    /// With --paired: the cap on pairs per scenario; looks of --pairs until every metric is
    /// decided or the cap (or --max-minutes) is reached. Equal to --pairs: one fixed look.
    #[arg(long = "max-pairs", default_value_t = 240)]
    pub max_pairs: usize,
    /// With --paired: stop after the look that passes this many minutes (metrics still open
    /// are "Undecided").
    #[arg(long = "max-minutes", default_value_t = 10.0)]
    pub max_minutes: f64,
    /// With --paired: stop after the first look that flags any metric as a regression (a gate
    /// asking only "did it get slower?"). The false-alarm bound is unchanged: each look's
    /// intervals already cover every look it could stop at. Metrics still open then are
    /// "Undecided".
    #[arg(long = "stop-on-regression")]
    pub stop_on_regression: bool,
    /// With --paired: each look's pairs are split into this many blocks, each with freshly
    /// started workers (alternating which starts first), so a per-process offset is not a
    /// bias.
    #[arg(long, default_value_t = 12)]
    pub blocks: usize,
    /// With --paired: MODELBENCH_INJECT_SLOWDOWN for NEW's worker only (calibration, e.g.
    /// decode:5%).
    #[arg(long)]
    pub inject: Option<String>,
    /// With --paired: MODELBENCH_INJECT_NUMERIC for NEW's worker only (calibration of the
    /// output verdict, e.g. lm_head:0.5%: the logits scaled, the speed unchanged).
    #[arg(long = "inject-numeric")]
    pub inject_numeric: Option<String>,
    /// With --paired: do not also judge NEW against llama.cpp (by default, for a GGUF model,
    /// NEW's `verify` runs after the pairs where llama.cpp or a committed reference is there:
    /// "faster, outputs changed, still passes against llama.cpp").
    #[arg(long = "no-reference")]
    pub no_reference: bool,
    /// With --paired: build BASE (a commit) against this Candle instead of its Cargo.lock's:
    /// a crates.io version (0.10.2) or the folder of a Candle checkout or of a copied crate
    /// (candle-core, candle-nn, candle-transformers; README "Benchmarking a Candle change").
    #[arg(long = "base-candle", value_name = "VERSION|PATH")]
    pub base_candle: Option<String>,
    /// With --paired: build NEW (a commit) against this Candle (as --base-candle).
    #[arg(long = "new-candle", value_name = "VERSION|PATH")]
    pub new_candle: Option<String>,
    /// Per-op tables and flame graphs of each flagged scenario (always from the command line;
    /// a Candle bisection makes them once, for the first bad commit).
    #[arg(skip = true)]
    pub profile: bool,
}

impl PairedOpts {
    /// The options `bisect --paired` and `continuous` use: `model` on `suite`, the default
    /// looks, caps and blocks, nothing injected.
    pub fn for_model(model: &str, suite: &str) -> PairedOpts {
        PairedOpts {
            paired: true,
            model: model.to_string(),
            suite: suite.to_string(),
            pairs: 60,
            max_pairs: 240,
            max_minutes: 10.0,
            stop_on_regression: false,
            blocks: 12,
            inject: None,
            inject_numeric: None,
            no_reference: true,
            base_candle: None,
            new_candle: None,
            profile: true,
        }
    }
}

/// The paired gate's default threshold: a per-pair median ratio whose whole interval lies
/// beyond 2% (measured A/A intervals and the 5% decode calibration are in README).
pub const DEFAULT_THRESHOLD: &str = "2%";

const METRICS: [&str; 3] = ["e2e", "prefill", "decode"];

pub fn paired_cmd(
    base: &Path,
    new: &Path,
    threshold: &str,
    o: &PairedOpts,
    allow_output_change: bool,
) -> Result<ExitCode> {
    let t = parse_threshold(threshold).map_err(|e| fail!("--threshold: {e}"))?;
    check(o)?;
    // The Candle sources first (a bad one fails before anything is built).
    let ca = candle_source(o.base_candle.as_deref(), "--base-candle")?;
    let cb = candle_source(o.new_candle.as_deref(), "--new-candle")?;
    let (sa, sb) = (resolve(base, "BASE")?, resolve(new, "NEW")?);
    let (ea, na) = build_side_with(sa, "BASE", ca.as_ref())?;
    let (eb, nb) = build_side_with(sb, "NEW", cb.as_ref())?;
    let out = run_paired((&ea, &na), (&eb, &nb), t, o)?;
    if out.outputs_changed() > 0 {
        println!(
            "{} scenario(s) OUTPUTS CHANGED: {}",
            out.outputs_changed(),
            if allow_output_change {
                "wanted (--allow-output-change), not a failure"
            } else {
                "fails the comparison unless --allow-output-change says it is wanted"
            }
        );
    }
    Ok(
        if out.regressions > 0 || (out.outputs_changed() > 0 && !allow_output_change) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// The options' own checks (before anything is built or started).
pub fn check(o: &PairedOpts) -> Result<()> {
    ensure!(
        o.pairs >= crate::measure::paired::MIN_PAIRS,
        "--pairs {}: at least {} pairs are needed for an interval",
        o.pairs,
        crate::measure::paired::MIN_PAIRS
    );
    ensure!(
        o.max_pairs >= o.pairs,
        "--max-pairs {}: below --pairs {}; give at least --pairs (equal: one fixed look)",
        o.max_pairs,
        o.pairs
    );
    ensure!(
        o.max_minutes.is_finite() && o.max_minutes > 0.0,
        "--max-minutes {}: give a positive number of minutes",
        o.max_minutes
    );
    if let Some(i) = &o.inject {
        crate::measure::inject::parse(i).map_err(|e| fail!("--inject: {e}"))?;
    }
    if let Some(n) = &o.inject_numeric {
        crate::measure::inject::parse_numeric(n).map_err(|e| fail!("--inject-numeric: {e}"))?;
    }
    scenarios(&o.suite)?;
    Ok(())
}

/// What one paired comparison found.
pub struct PairedOutcome {
    /// Metrics (scenario x e2e/prefill/decode) flagged as regressions.
    pub regressions: usize,
    /// The table as printed (also saved as paired.md beside paired.json).
    pub table: String,
    /// (scenario, metric, flagged as a regression) per row.
    pub rows: Vec<(String, String, bool)>,
    /// Each row's ratio, interval and verdict.
    pub metrics: Vec<MetricVerdict>,
    /// The folder of paired.json / paired.md.
    pub saved: std::path::PathBuf,
    /// The output verdict of each scenario, taken inside the same pairs: both sides' probes
    /// (one per worker) and every pair's generated ids.
    pub outputs: Vec<(String, crate::measure::outputs::OutputJudgement)>,
}

impl PairedOutcome {
    /// Scenarios whose outputs changed.
    pub fn outputs_changed(&self) -> usize {
        self.outputs
            .iter()
            .filter(|(_, j)| j.verdict == crate::measure::outputs::OutputVerdict::Changed)
            .count()
    }
}

/// One row of a paired comparison: a scenario's metric, its B/A ratio and the verdict.
#[derive(Debug, Clone)]
pub struct MetricVerdict {
    pub scenario: String,
    pub metric: String,
    pub ratio: PairedRatio,
    pub verdict: &'static str,
}

impl MetricVerdict {
    /// `short decode 1.119x [1.103, 1.136] Regression`.
    pub fn describe(&self) -> String {
        let ci = self
            .ratio
            .ci
            .map(|(l, h)| format!(" [{l:.3}, {h:.3}]"))
            .unwrap_or_default();
        format!(
            "{} {} {:.3}x{ci} {}",
            self.scenario, self.metric, self.ratio.ratio, self.verdict
        )
    }
}

/// Runs the paired comparison of executable A (base) against B (new), prints the table and
/// saves paired.json / paired.md in a new folder under the reports root.
pub fn run_paired(
    (ea, na): (&Path, &str),
    (eb, nb): (&Path, &str),
    t: f64,
    o: &PairedOpts,
) -> Result<PairedOutcome> {
    let scen = scenarios(&o.suite)?;
    let stamp = crate::util::time::stamp();
    let scratch =
        std::env::temp_dir().join(format!("modelbench-paired-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(Error::io(&scratch))?;
    println!(
        "A (base): {na}\nB (new):  {nb}{}{}",
        o.inject
            .as_deref()
            .map(|i| format!("\ninjected slowdown in B only (calibration): {i}"))
            .unwrap_or_default(),
        o.inject_numeric
            .as_deref()
            .map(|i| format!("\ninjected numeric change in B only (calibration): {i}"))
            .unwrap_or_default()
    );
    let t0 = std::time::Instant::now();
    // Two processes of one binary differ by a few percent that stays with the process
    // (measured: B 6% slower than A in every pair of an A/A run, both scenarios): memory
    // layout and placement are drawn once per process. So the pairs are split into blocks,
    // each with freshly started workers, started in alternating order; the per-process
    // offset then varies from block to block and widens the interval instead of biasing it.
    let looks = o.max_pairs.div_ceil(o.pairs).max(1);
    let confidence = 1.0 - 0.05 / looks as f64;
    let cap = std::time::Duration::from_secs_f64(o.max_minutes * 60.0);
    let mut a: Vec<Vec<[f64; 3]>> = vec![Vec::new(); scen.len()];
    let mut b: Vec<Vec<[f64; 3]>> = vec![Vec::new(); scen.len()];
    // What each side computed: every pair's ids hash per scenario, and the probe of each
    // side's first worker (taken once, between trials).
    let mut ids: [Vec<Vec<Option<String>>>; 2] =
        [vec![Vec::new(); scen.len()], vec![Vec::new(); scen.len()]];
    let mut probes: [Option<crate::measure::outputs::Probe>; 2] = [None, None];
    let mut probed = false;
    let (mut i, mut blk, mut done, mut look) = (0, 0, 0, 0);
    let target = (o.model.as_str(), o.suite.as_str());
    let estimate = |a: &[Vec<[f64; 3]>], b: &[Vec<[f64; 3]>]| {
        let mut rows = Vec::new();
        for (k, s) in scen.iter().enumerate() {
            for (m, metric) in METRICS.iter().enumerate() {
                let xa: Vec<f64> = a[k].iter().map(|x| x[m]).collect();
                let xb: Vec<f64> = b[k].iter().map(|x| x[m]).collect();
                let p = paired_ratio_at(&ratios(&xa, &xb), confidence);
                rows.push((s.name.clone(), metric.to_string(), p, xa, xb));
            }
        }
        rows
    };
    let (rows, stopped) = loop {
        look += 1;
        let n_look = o.pairs.min(o.max_pairs - done);
        for &n in &block_sizes(n_look, o.blocks) {
            let b_env = (o.inject.as_deref(), o.inject_numeric.as_deref());
            let (mut wa, mut wb) = if blk % 2 == 0 {
                let wa = Worker::start("A", ea, target, (None, None), &scratch)?;
                (wa, Worker::start("B", eb, target, b_env, &scratch)?)
            } else {
                let wb = Worker::start("B", eb, target, b_env, &scratch)?;
                (Worker::start("A", ea, target, (None, None), &scratch)?, wb)
            };
            blk += 1;
            if !probed {
                probes = [wa.probe()?, wb.probe()?];
                probed = true;
            }
            for _ in 0..n {
                for (k, s) in scen.iter().enumerate() {
                    let order: [usize; 2] = if a_first(i) { [0, 1] } else { [1, 0] };
                    for side in order {
                        let (x, h) = if side == 0 {
                            wa.trial(&s.name)?
                        } else {
                            wb.trial(&s.name)?
                        };
                        [&mut a, &mut b][side][k].push(x);
                        ids[side][k].push(h);
                    }
                }
                i += 1;
            }
        }
        done += n_look;
        let rows = estimate(&a, &b);
        let open = rows
            .iter()
            .filter(|(_, _, p, _, _)| verdict(p, t) == UNDECIDED)
            .count();
        println!(
            "look {look} of at most {looks}: {done} pairs per scenario, {} of {} metrics decided \
             ({:.2}% intervals, {:.0} s)",
            rows.len() - open,
            rows.len(),
            100.0 * confidence,
            t0.elapsed().as_secs_f64()
        );
        if open == 0 {
            break (rows, "every metric decided");
        }
        if o.stop_on_regression
            && rows
                .iter()
                .any(|(_, _, p, _, _)| verdict(p, t) == "Regression")
        {
            break (rows, "a regression (--stop-on-regression)");
        }
        if done >= o.max_pairs {
            break (rows, "the pair cap (--max-pairs)");
        }
        if t0.elapsed() >= cap {
            break (rows, "the time cap (--max-minutes)");
        }
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let verdict = |p: &PairedRatio| verdict(p, t);
    let mut md = String::from(
        "| scenario | metric | pairs | B/A (median of per-pair ratios) | CI | verdict |\n|---|---|---:|---:|---|---|\n",
    );
    let mut regressions = 0;
    let mut json = Vec::new();
    let mut flagged = Vec::new();
    let mut metrics = Vec::new();
    for (s, m, p, xa, xb) in &rows {
        let v = verdict(p);
        regressions += usize::from(v == "Regression");
        flagged.push((s.clone(), m.clone(), v == "Regression"));
        metrics.push(MetricVerdict {
            scenario: s.clone(),
            metric: m.clone(),
            ratio: *p,
            verdict: v,
        });
        let ci =
            p.ci.map(|(l, h)| format!("[{l:.3}, {h:.3}]"))
                .unwrap_or_else(|| "n/a".into());
        md.push_str(&format!(
            "| {s} | {m} | {} | {:.3}x | {ci} | {v} |\n",
            p.pairs, p.ratio
        ));
        json.push(
            serde_json::json!({"scenario": s, "metric": m, "pairs": p.pairs, "ratio": p.ratio,
            "ci": p.ci.map(|(l, h)| [l, h]), "confidence": p.confidence, "verdict": v,
            "a_s": xa, "b_s": xb}),
        );
    }
    let undecided = rows
        .iter()
        .filter(|(_, _, p, _, _)| verdict(p) == UNDECIDED)
        .count();
    md.push_str(&format!(
        "{regressions} regression(s), {undecided} undecided (threshold {:.1}%; {:.2}% intervals at each of at most {looks} look(s), 95% overall; stopped after look {look} at {stopped}; model {}, {done} pairs per scenario in {blk} blocks of fresh workers, ABBA order, {:.0} s)\n",
        t * 100.0,
        100.0 * confidence,
        o.model,
        t0.elapsed().as_secs_f64()
    ));
    // The output verdict of each scenario, from the same pairs.
    let mut outputs = Vec::new();
    for (k, s) in scen.iter().enumerate() {
        let side = |x: usize| {
            let trials: Option<Vec<String>> = ids[x][k].iter().cloned().collect();
            (trials.is_some() || probes[x].is_some()).then(|| crate::measure::outputs::Outputs {
                ids: crate::measure::outputs::Ids {
                    trials: trials.unwrap_or_default(),
                    first: Vec::new(),
                },
                probe: probes[x].clone(),
            })
        };
        let j = crate::measure::outputs::judge(side(0).as_ref(), side(1).as_ref());
        md.push_str(&format!("outputs {}: {} ({})\n", s.name, j.verdict, j.why));
        outputs.push((s.name.clone(), j));
    }
    let reference = if o.no_reference {
        None
    } else {
        let r = against_reference(eb, &o.model, o.inject_numeric.as_deref());
        md.push_str(&format!("NEW against llama.cpp: {r}\n"));
        Some(r)
    };
    print!("{md}");
    let out = reports_root().join(format!("{stamp}-paired"));
    std::fs::create_dir_all(&out).map_err(Error::io(&out))?;
    let doc = serde_json::json!({"base": na, "new": nb, "inject": o.inject,
        "inject_numeric": o.inject_numeric, "against_llama_cpp": reference, "outputs": outputs.iter().map(|(s, j)| serde_json::json!({"scenario": s, "verdict": j})).collect::<Vec<_>>(), "threshold": t,
        "model": o.model, "pairs": done, "looks": look, "max_looks": looks,
        "confidence": confidence, "stopped": stopped,
        "hardware": crate::measure::hardware::context().hardware.fingerprint(), "rows": json});
    atomic_write(
        &out.join("paired.json"),
        crate::app::json_text(&doc).as_bytes(),
    )?;
    atomic_write(&out.join("paired.md"), md.as_bytes())?;
    if o.profile {
        profile_regressions((ea, eb), o, &metrics, &out, t)?;
    }
    println!("saved {}", out.display());
    Ok(PairedOutcome {
        regressions,
        table: md,
        rows: flagged,
        metrics,
        saved: out,
        outputs,
    })
}

/// NEW's `verify` on `model` against llama.cpp (issue 59 item 4), as one line: `PASSED ...`,
/// `FAILED ...`, or `not available: <why>` (not a GGUF model, no llama.cpp build and no
/// committed reference, or the verify run could not start). NEW's numeric injection, if any,
/// is NEW's here too.
fn against_reference(new_exe: &Path, model: &str, numeric: Option<&str>) -> String {
    if !model.starts_with("gguf:") {
        return format!(
            "not available: {model} is not a GGUF model (llama.cpp runs GGUF files; `verify` judges those)"
        );
    }
    let mut c = std::process::Command::new(new_exe);
    c.args(["verify", "--model", model])
        .env_remove("MODELBENCH_INJECT_SLOWDOWN")
        .env_remove("MODELBENCH_INJECT_NUMERIC");
    if let Some(n) = numeric {
        c.env("MODELBENCH_INJECT_NUMERIC", n);
    }
    let o = match c.output() {
        Ok(o) => o,
        Err(e) => {
            return format!(
                "not available: cannot run {} verify: {e}",
                new_exe.display()
            )
        }
    };
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let last = |t: &str| {
        t.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    // `verify`'s own table (check, ours, llama.cpp against itself, limit, ok): the checks
    // that failed, else its mean-KLD row.
    let rows: Vec<String> = out
        .lines()
        .filter(|l| l.trim_end().ends_with(" no"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let kld = if rows.is_empty() {
        out.lines()
            .find(|l| l.starts_with("mean KLD"))
            .map(mean_kld_row)
            .unwrap_or_else(|| last(&out))
    } else {
        format!("failed: {}", rows.join("; "))
    };
    match o.status.code() {
        Some(0) => format!("PASSED (`verify --model {model}`: {kld})"),
        Some(1) => format!("FAILS (`verify --model {model}`: {kld})"),
        _ => format!("not available: {}", last(&err)),
    }
}

/// `verify`'s mean-KLD row (`mean KLD  OURS  SELF  <= LIMIT  yes`) in words: `mean KLD OURS
/// (llama.cpp against itself SELF, limit <= LIMIT)`; another layout as it is, spaces collapsed.
fn mean_kld_row(l: &str) -> String {
    let t: Vec<&str> = l.split_whitespace().collect();
    match t.as_slice() {
        ["mean", "KLD", ours, own, op, limit, _] => {
            format!("mean KLD {ours} (llama.cpp against itself {own}, limit {op} {limit})")
        }
        _ => t.join(" "),
    }
}

/// Every scenario and phase flagged a regression in `metrics`: where the time went, per op,
/// in A and in B, and both flame graphs (issue 31), saved in `out` (ops-regression.md and the
/// files the profile names); returns the lines printed.
pub fn profile_regressions(
    (ea, eb): (&Path, &Path),
    o: &PairedOpts,
    metrics: &[MetricVerdict],
    out: &Path,
    t: f64,
) -> Result<String> {
    let scen = scenarios(&o.suite)?;
    let mut profiles = String::new();
    for m in metrics.iter().filter(|m| m.verdict == "Regression") {
        let Some(sc) = scen.iter().find(|x| x.name == m.scenario) else {
            continue;
        };
        let (phase, shape) = if m.metric == "prefill" {
            (Phase::Prefill, sc.prompt_tokens)
        } else {
            (Phase::Decode, sc.prompt_tokens + sc.new_tokens / 2)
        };
        let tag = format!("{}-{}", m.scenario, phase.name());
        if profiles.contains(&format!("profile of {tag}:")) {
            continue;
        }
        let line = super::profile::profile(
            (ea, eb),
            o.inject.as_deref(),
            &o.model,
            &m.scenario,
            phase,
            shape,
            out,
            &tag,
            t,
        );
        println!("{line}");
        profiles.push_str(&line);
        profiles.push('\n');
    }
    if !profiles.is_empty() {
        atomic_write(&out.join("ops-regression.md"), profiles.as_bytes())?;
    }
    Ok(profiles)
}

/// A metric whose interval straddles 1 + t or 1 - t.
pub const UNDECIDED: &str = "Undecided";

/// The verdict of one metric: its per-pair median ratio's interval against the threshold `t`:
/// a regression when the whole interval lies above 1 + t, an improvement below 1 - t,
/// unchanged when it lies wholly within [1 - t, 1 + t], else undecided.
pub fn verdict(p: &PairedRatio, t: f64) -> &'static str {
    match p.ci {
        Some((lo, _)) if lo > 1.0 + t => "Regression",
        Some((_, hi)) if hi < 1.0 - t => "Improvement",
        Some((lo, hi)) if lo >= 1.0 - t && hi <= 1.0 + t => "Unchanged",
        Some(_) => UNDECIDED,
        None => "no verdict (too few pairs)",
    }
}

/// The pairs of each block of fresh workers: `pairs` split as evenly as can be into
/// `blocks` (at least 1, at most one block per pair), the larger blocks first.
pub fn block_sizes(pairs: usize, blocks: usize) -> Vec<usize> {
    let blocks = blocks.clamp(1, pairs.max(1));
    (0..blocks)
        .map(|blk| pairs / blocks + usize::from(blk < pairs % blocks))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(ci: Option<(f64, f64)>) -> PairedRatio {
        PairedRatio {
            ratio: 1.0,
            pairs: 60,
            ci,
            confidence: 0.95,
        }
    }

    #[test]
    fn a_regression_needs_the_whole_interval_beyond_the_threshold() {
        let t = 0.02;
        assert_eq!(verdict(&ratio(Some((1.021, 1.08))), t), "Regression");
        assert_eq!(verdict(&ratio(Some((1.019, 1.08))), t), UNDECIDED);
        assert_eq!(verdict(&ratio(Some((0.90, 0.979))), t), "Improvement");
        assert_eq!(verdict(&ratio(Some((0.97, 1.03))), t), UNDECIDED);
        assert_eq!(verdict(&ratio(Some((0.981, 1.019))), t), "Unchanged");
        assert_eq!(verdict(&ratio(None), t), "no verdict (too few pairs)");
    }

    #[test]
    fn pairs_split_evenly_into_blocks() {
        assert_eq!(block_sizes(60, 12), vec![5; 12]);
        assert_eq!(block_sizes(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(block_sizes(3, 12), vec![1, 1, 1]);
        assert_eq!(block_sizes(7, 0), vec![7]);
        assert_eq!(block_sizes(60, 12).iter().sum::<usize>(), 60);
    }

    #[test]
    fn for_model_checks_and_a_bad_suite_is_named() {
        let o = PairedOpts::for_model("fixture:llama", "quick");
        assert!(check(&o).is_ok());
        let mut bad = o.clone();
        bad.pairs = 1;
        assert!(check(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("--pairs 1:"));
        let bad = PairedOpts::for_model("fixture:llama", "nope");
        assert!(check(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("--paired-suite \"nope\""));
    }

    #[test]
    fn verifys_mean_kld_row_reads_in_words() {
        assert_eq!(
            mean_kld_row(
                "mean KLD                       3.891e-7         2.454e-7     <= 1.000e-4  yes"
            ),
            "mean KLD 3.891e-7 (llama.cpp against itself 2.454e-7, limit <= 1.000e-4)"
        );
        assert_eq!(mean_kld_row("mean KLD  n/a"), "mean KLD n/a");
    }
}
