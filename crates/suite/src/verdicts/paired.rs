//! `modelbench compare --paired A B`: paired A/B verdicts (Tango.rs's method). A and B are
//! commits or branches (each built once in a worktree under target/paired/) or paths to
//! `modelbench` executables. Both start as long-lived workers (`modelbench worker`) with the
//! model loaded and warmed up; the parent asks them for one trial each, in ABBA order, pair
//! after pair, in the same minutes, with the same prompt ids (same seed, same trial number on
//! both sides). Each pair gives ratios B/A of end-to-end time, prefill time (TTFT) and time
//! per output token after the first (decode); the verdict of each metric is the median of its
//! per-pair ratios with a bootstrap CI (`measure::paired`) against the threshold
//! (`judge::paired::verdict`).
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
//! `--max-pairs` equal to `--pairs` is the old fixed design (one look, 95%). The design and
//! the stop rule are the judge's (`judge::paired::design`, `judge::paired::stop`); this module
//! runs the workers and keeps the records.

use std::path::Path;
use std::process::ExitCode;

use crate::judge::gate::{self, Allowed, Findings};
use crate::judge::kld;
use crate::judge::outputs::{OutputJudgement, OutputVerdict};
use crate::judge::paired::{
    block_sizes, design, stop, undecided_why, verdict, Design, Look, PairedVerdict,
};
use crate::judge::speed::parse_threshold;
use crate::measure::memory::{huge_pages_of, unequal_huge};
use crate::measure::paired::{a_first, paired_ratio_blocked, ratios, PairedRatio, MIN_BLOCKS};
use crate::output::report::reports_root;
use crate::util::fsio::atomic_write;
use crate::verdicts::build::{build_side_with, candle_source, resolve};
use crate::verdicts::worker::{balance, lockstep_pair, scenarios, Worker};
use crate::workloads::kld::{table_rows, KldVerdict, TableRow};
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
    #[arg(long, default_value_t = 30)]
    pub pairs: usize,
    /// With --paired: the cap on pairs per scenario; looks of --pairs until every metric is
    /// decided or the cap (or --max-minutes) is reached. Equal to --pairs: one fixed look.
    #[arg(long = "max-pairs", default_value_t = 60)]
    pub max_pairs: usize,
    /// With --paired: do not start a look that would end past this many minutes (predicted
    /// from the last look's time; metrics still open are "Undecided").
    #[arg(long = "max-minutes", default_value_t = 5.0)]
    pub max_minutes: f64,
    /// With --paired: stop after the first look that flags any metric as a regression (a gate
    /// asking only "did it get slower?"). The false-alarm bound is unchanged: each look's
    /// intervals already cover every look it could stop at. Metrics still open then are
    /// "Undecided".
    #[arg(long = "stop-on-regression")]
    pub stop_on_regression: bool,
    /// With --paired: each look's pairs are split into this many blocks, each with freshly
    /// started workers (alternating which starts first), so a per-process offset is not a
    /// bias; the intervals resample whole blocks (from 5 blocks on), so it widens them. The
    /// default is one pair a block: measured with lockstep pairs, the pairs of one block
    /// agree to 0.5-1.7% while blocks differ by 2-5% (docs/verdicts.md).
    #[arg(long, default_value_t = 30)]
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
    /// With --paired: each pair runs the two trials one after the other, whole (the design
    /// before issue 64), instead of in lockstep: A's and B's decode steps alternating, each
    /// worker's clock stopped while it waits. Builds whose worker cannot run lockstep get
    /// whole trials anyway (the table says which).
    #[arg(long = "whole-trials")]
    pub whole_trials: bool,
    /// With --paired: do not ask glibc's malloc for transparent huge pages in the workers
    /// (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, given to both sides alike; without it each
    /// process draws a speed offset of up to 40% at start on a VM: docs/verdicts.md).
    #[arg(long = "no-huge-pages")]
    pub no_huge_pages: bool,
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
            pairs: 30,
            max_pairs: 60,
            max_minutes: 5.0,
            stop_on_regression: false,
            blocks: 30,
            inject: None,
            inject_numeric: None,
            no_reference: true,
            base_candle: None,
            new_candle: None,
            whole_trials: false,
            no_huge_pages: false,
            profile: true,
        }
    }
}

/// How many times a block's two workers are started again when they come up unequal in huge
/// pages (`measure::memory::unequal_huge`), before the block runs as it is.
const MAX_HUGE_RESTARTS: usize = 2;

/// The paired gate's default threshold: a per-pair median ratio whose whole interval lies
/// beyond 1%. 2% until issue 64: lockstep pairs and huge pages made the decode intervals of
/// 40 pairs about +-0.6% (docs/verdicts.md, "Lockstep pairs"), so a 2% slowdown is flagged
/// and an unchanged build reads Unchanged.
pub const DEFAULT_THRESHOLD: &str = "1%";

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
    Ok(gate::exit_code(gate::failed(
        out.findings(),
        Allowed {
            output_change: allow_output_change,
            missing: false,
        },
    )))
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
    pub outputs: Vec<(String, OutputJudgement)>,
}

impl PairedOutcome {
    /// Scenarios whose outputs changed.
    pub fn outputs_changed(&self) -> usize {
        self.outputs
            .iter()
            .filter(|(_, j)| j.verdict == OutputVerdict::Changed)
            .count()
    }

    /// What the exit rules read (`judge::gate`): regressions and changed outputs (a paired
    /// comparison misses no benchmark).
    pub fn findings(&self) -> Findings {
        Findings {
            regressions: self.regressions,
            outputs_changed: self.outputs_changed(),
            missing: 0,
        }
    }
}

/// One row of a paired comparison: a scenario's metric, its B/A ratio and the verdict.
#[derive(Debug, Clone)]
pub struct MetricVerdict {
    pub scenario: String,
    pub metric: String,
    pub ratio: PairedRatio,
    pub verdict: PairedVerdict,
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
    let Design { looks, confidence } = design(o.pairs, o.max_pairs);
    let cap = std::time::Duration::from_secs_f64(o.max_minutes * 60.0);
    let mut a: Vec<Vec<[f64; 3]>> = vec![Vec::new(); scen.len()];
    let mut b: Vec<Vec<[f64; 3]>> = vec![Vec::new(); scen.len()];
    // What each side computed: every pair's ids hash per scenario, and the probe of each
    // side's first worker (taken once, between trials).
    let mut ids: [Vec<Vec<Option<String>>>; 2] =
        [vec![Vec::new(); scen.len()], vec![Vec::new(); scen.len()]];
    let mut probes: [Option<crate::measure::outputs::Probe>; 2] = [None, None];
    let mut probed = false;
    // Whether each block ran in lockstep.
    let mut pairing: Vec<bool> = Vec::new();
    // Each block's huge pages of both sides, read after its pairs: a worker that did not get
    // them runs at another speed (on the AVX-512 VM of 2026-11-29 about one worker in three
    // had none), which no pairing inside the block can cancel.
    let mut huge_blocks: Vec<[Option<(u64, u64)>; 2]> = Vec::new();
    let mut huge_restarts = 0;
    let (mut i, mut blk, mut done, mut look) = (0, 0, 0, 0);
    let target = (o.model.as_str(), o.suite.as_str());
    // The pairs of each block so far (every scenario has the same), for the cluster bootstrap.
    let mut block_pairs: Vec<usize> = Vec::new();
    let estimate = |a: &[Vec<[f64; 3]>], b: &[Vec<[f64; 3]>], blocks: &[usize]| {
        let mut rows = Vec::new();
        for (k, s) in scen.iter().enumerate() {
            for (m, metric) in METRICS.iter().enumerate() {
                let xa: Vec<f64> = a[k].iter().map(|x| x[m]).collect();
                let xb: Vec<f64> = b[k].iter().map(|x| x[m]).collect();
                let p = paired_ratio_blocked(&ratios(&xa, &xb), blocks, confidence);
                rows.push((s.name.clone(), metric.to_string(), p, xa, xb));
            }
        }
        rows
    };
    let (rows, stopped) = loop {
        look += 1;
        let look_t0 = std::time::Instant::now();
        let n_look = o.pairs.min(o.max_pairs - done);
        for &n in &block_sizes(n_look, o.blocks) {
            let b_env = (o.inject.as_deref(), o.inject_numeric.as_deref());
            let hp = !o.no_huge_pages;
            // Both started at once (their loads overlap), which one first alternating.
            let (sa, sb) = (("A", ea, (None, None)), ("B", eb, b_env));
            let start = || -> Result<(Worker, Worker)> {
                Ok(if blk % 2 == 0 {
                    let [wa, wb] = Worker::start_two(sa, sb, target, hp, &scratch)?;
                    (wa, wb)
                } else {
                    let [wb, wa] = Worker::start_two(sb, sa, target, hp, &scratch)?;
                    (wa, wb)
                })
            };
            // Two workers unequal in huge pages (one with most of its memory in them, the
            // other not) differ in speed by more than a pair can cancel: both start again, at
            // most MAX_HUGE_RESTARTS times a block; the report counts the restarts.
            let (mut wa, mut wb) = start()?;
            let mut tries = 0;
            while hp
                && tries < MAX_HUGE_RESTARTS
                && unequal_huge(huge_pages_of(wa.pid()), huge_pages_of(wb.pid()))
            {
                drop((wa, wb));
                (wa, wb) = start()?;
                tries += 1;
            }
            huge_restarts += tries;
            blk += 1;
            if !probed {
                probes = [wa.probe()?, wb.probe()?];
                probed = true;
            }
            let lockstep = !o.whole_trials && wa.can_lockstep && wb.can_lockstep;
            pairing.push(lockstep);
            if wa.can_lockstep && wb.can_lockstep {
                // The side that runs last alternates by block (`blk` counts this block).
                balance(&mut wa, &mut wb, &scen[0].name, blk % 2 == 1)?;
            }
            block_pairs.push(n);
            for _ in 0..n {
                for (k, s) in scen.iter().enumerate() {
                    let got = if lockstep {
                        lockstep_pair(&mut wa, &mut wb, &s.name, a_first(i))?
                    } else if a_first(i) {
                        let x = wa.trial(&s.name)?;
                        [x, wb.trial(&s.name)?]
                    } else {
                        let y = wb.trial(&s.name)?;
                        [wa.trial(&s.name)?, y]
                    };
                    for (side, (x, h)) in got.into_iter().enumerate() {
                        [&mut a, &mut b][side][k].push(x);
                        ids[side][k].push(h);
                    }
                }
                i += 1;
            }
            let read = [huge_pages_of(wa.pid()), huge_pages_of(wb.pid())];
            huge_blocks.push(read);
        }
        done += n_look;
        let rows = estimate(&a, &b, &block_pairs);
        let verdicts: Vec<PairedVerdict> =
            rows.iter().map(|(_, _, p, _, _)| verdict(p, t)).collect();
        let open = crate::judge::paired::open(&verdicts);
        println!(
            "look {look} of at most {looks}: {done} pairs per scenario, {} of {} metrics decided \
             ({:.2}% intervals, {:.0} s)",
            rows.len() - open,
            rows.len(),
            100.0 * confidence,
            t0.elapsed().as_secs_f64()
        );
        let at = Look {
            done,
            max_pairs: o.max_pairs,
            // Predicted: the next look takes about as long as this one did.
            out_of_time: t0.elapsed() + look_t0.elapsed() > cap,
            stop_on_regression: o.stop_on_regression,
        };
        if let Some(why) = stop(&verdicts, at) {
            break (rows, why);
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
        regressions += usize::from(v == PairedVerdict::Regression);
        flagged.push((s.clone(), m.clone(), v == PairedVerdict::Regression));
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
            "why": undecided_why(p, t), "a_s": xa, "b_s": xb}),
        );
    }
    let undecided = rows
        .iter()
        .filter(|(_, _, p, _, _)| verdict(p) == PairedVerdict::Undecided)
        .count();
    let boot = if block_pairs.len() >= MIN_BLOCKS {
        "intervals resample blocks"
    } else {
        "intervals resample pairs (fewer than 5 blocks: blind to per-process offsets)"
    };
    let locked = pairing.iter().filter(|&&l| l).count();
    let pairing_desc = if locked == pairing.len() {
        "lockstep (A's and B's decode steps alternating)".to_string()
    } else if locked == 0 {
        format!(
            "whole trials{}",
            if o.whole_trials {
                ""
            } else {
                " (a worker cannot run lockstep: a build from before issue 64)"
            }
        )
    } else {
        format!("lockstep in {locked} of {} blocks", pairing.len())
    };
    // What each side had in huge pages, measured either way: with `--no-huge-pages` it
    // shows that the setting held (0 MiB).
    let side = |x: Option<(u64, u64)>| match x {
        Some((h, a)) => format!("{} of {} MiB", h >> 20, a >> 20),
        None => "not available".into(),
    };
    let measured = match huge_blocks.first().copied() {
        Some([ha, hb]) => format!(" (A {}, B {} anonymous memory in them)", side(ha), side(hb)),
        None => String::new(),
    };
    // Blocks whose two workers differ in huge pages after their pairs: one with over half
    // its anonymous memory in them, the other under half.
    let read_blocks = huge_blocks
        .iter()
        .filter(|[x, y]| x.is_some() && y.is_some())
        .count();
    let unequal = huge_blocks
        .iter()
        .filter(|[x, y]| unequal_huge(*x, *y))
        .count();
    let huge_desc = if o.no_huge_pages {
        format!("huge pages off (--no-huge-pages){measured}")
    } else {
        format!(
            "malloc asked for huge pages{measured}; the two sides unequal in them in {unequal} of {read_blocks} blocks read (blocks started again because their workers came up unequal: {huge_restarts})"
        )
    };
    md.push_str(&format!(
        "{regressions} regression(s), {undecided} undecided (threshold {:.1}%; {:.2}% intervals at each of at most {looks} look(s), 95% overall; stopped after look {look} at {stopped}; model {}, {done} pairs per scenario in {blk} blocks of fresh workers, {boot}, ABBA order, {pairing_desc}, {huge_desc}, {:.0} s)\n",
        t * 100.0,
        100.0 * confidence,
        o.model,
        t0.elapsed().as_secs_f64()
    ));
    // Why each open metric is open (the judge's reason), and, for prefill under lockstep
    // pairing, how its pairs were formed: one forward per trial, paired trial by trial.
    for (sn, m, p, _, _) in &rows {
        if let Some(why) = undecided_why(p, t) {
            let how = if m == "prefill" && locked > 0 {
                "; prefill is one forward per trial, paired trial by trial (lockstep alternates decode steps only)"
            } else {
                ""
            };
            md.push_str(&format!("undecided: {sn} {m}: {why}{how}\n"));
        }
    }
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
        let j = crate::judge::outputs::judge(side(0).as_ref(), side(1).as_ref());
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
        "confidence": confidence, "stopped": stopped, "pairing": pairing_desc, "blocks": block_pairs, "interval": boot,
        "huge_pages": huge_desc,
        "huge_page_restarts": huge_restarts,
        "huge_pages_blocks": huge_blocks.iter().map(|s| s.map(|x| x.map(|(h, a)| [h, a]))).collect::<Vec<_>>(),
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
    reference_line(
        model,
        o.status.code(),
        &String::from_utf8_lossy(&o.stdout),
        &String::from_utf8_lossy(&o.stderr),
    )
}

/// `verify`'s run on `model` (its exit code and output) as [`against_reference`]'s line. The
/// checks are read from the verdict `verify` stored (its `stored <file> (key: ...)` line
/// names the file: the gate's own record, not its table): the checks that failed, else the
/// mean-KLD row, in words. A `verify` that stored none (an older build) is read from its
/// table: the rows whose `ok` column is `judge::kld::FAILED`, else its mean-KLD row.
fn reference_line(model: &str, code: Option<i32>, out: &str, err: &str) -> String {
    let last = |t: &str| {
        t.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let kld = match stored_verdict(out) {
        Some(v) => {
            let rows = table_rows(&v);
            let failed: Vec<String> = rows
                .iter()
                .filter(|r| !r.passed)
                .map(TableRow::words)
                .collect();
            if failed.is_empty() {
                rows.iter()
                    .find(|r| r.check == kld::MEAN_KLD)
                    .map_or_else(|| last(out), TableRow::words)
            } else {
                format!("failed: {}", failed.join("; "))
            }
        }
        None => {
            // `verify`'s table (check, ours, llama.cpp against itself, limit, ok).
            let rows: Vec<String> = out
                .lines()
                .filter(|l| l.split_whitespace().last() == Some(kld::FAILED))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            if rows.is_empty() {
                out.lines()
                    .find(|l| l.starts_with(kld::MEAN_KLD))
                    .map(mean_kld_row)
                    .unwrap_or_else(|| last(out))
            } else {
                format!("failed: {}", rows.join("; "))
            }
        }
    };
    match code {
        Some(0) => format!("PASSED (`verify --model {model}`: {kld})"),
        Some(1) => format!("FAILS (`verify --model {model}`: {kld})"),
        _ => format!("not available: {}", last(err)),
    }
}

/// The KL-divergence verdict `verify` stored, from the `stored <file> (key: ...)` line of its
/// output; None without that line or a readable verdict there.
fn stored_verdict(out: &str) -> Option<KldVerdict> {
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix("stored "))?
        .split(" (key: ")
        .next()?;
    let text = std::fs::read_to_string(path).ok()?;
    let stored: crate::output::quality::StoredVerdict = serde_json::from_str(&text).ok()?;
    serde_json::from_value(stored.verdict).ok()
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
    let mut flames = super::profile::Flames::default();
    for m in metrics
        .iter()
        .filter(|m| m.verdict == PairedVerdict::Regression)
    {
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
            &mut flames,
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A KL-divergence verdict whose mean KLD is `mean_kld` against llama.cpp's own 0.002
    /// (limit 0.004): as `verify` makes it.
    fn kld_verdict(mean_kld: f64) -> KldVerdict {
        use crate::judge::kld::{decide, thresholds, KldStats};
        let self_ = KldStats {
            positions: 510,
            mean_kld: 0.002,
            kld_p99: 0.02,
            kld_p999: 0.05,
            kld_max: 0.06,
            same_top1_percent: 97.0,
            ppl: 10.0,
            reference_ppl: 10.0,
            ppl_ratio: 1.001,
            ln_ppl_ratio: 0.001,
            ln_ppl_ratio_se: 0.002,
            non_finite_positions: 0,
        };
        let ours = KldStats {
            mean_kld,
            ..self_.clone()
        };
        let t = thresholds(&self_, 10);
        let d = decide(&ours, &t);
        KldVerdict {
            model: "gguf:m".into(),
            implementation: "i".into(),
            passed: d.passed,
            ours,
            llama_cpp_self: self_,
            thresholds: t,
            checks: d.checks,
            reference: String::new(),
            corpus: String::new(),
            checked_at: String::new(),
        }
    }

    /// `verify`'s stdout: its table, and the line naming the stored verdict when `stored`.
    fn verify_stdout(v: &KldVerdict, stored: Option<&Path>) -> String {
        let mut out = format!(
            "gguf:m [i] on cpu, f32\n{}\n",
            crate::workloads::kld::table(v)
        );
        if let Some(p) = stored {
            let doc = crate::output::quality::StoredVerdict {
                key: crate::output::quality::VerdictKey {
                    file_sha256: "ab".repeat(32),
                    implementation: "i".into(),
                    device: "cpu".into(),
                    dtype: "f32".into(),
                    commit: "c".into(),
                },
                passed: v.passed,
                verdict: serde_json::to_value(v).unwrap(),
            };
            std::fs::write(p, serde_json::to_string(&doc).unwrap()).unwrap();
            out.push_str(&format!(
                "stored {} (key: file sha256 abab.., i, cpu, f32, commit c)\n",
                p.display()
            ));
        }
        out
    }

    /// NEW against llama.cpp names the checks that failed (they used to be missed: the table
    /// says `NO`, and the filter looked for ` no`), from the stored verdict and, for a
    /// `verify` that stores none, from its table; a pass reads the mean-KLD row in words, the
    /// same either way.
    #[test]
    fn a_failed_verify_names_its_failed_checks_and_a_passed_one_its_mean_kld() {
        let failed = kld_verdict(0.0041);
        assert!(!failed.passed);
        let from_table = reference_line("gguf:m", Some(1), &verify_stdout(&failed, None), "");
        assert!(
            from_table.starts_with(
                "FAILS (`verify --model gguf:m`: failed: mean KLD 0.00410 0.00200 <= 0.00400 NO"
            ),
            "{from_table}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("verdict.json");
        let stored = reference_line("gguf:m", Some(1), &verify_stdout(&failed, Some(&file)), "");
        assert_eq!(
            stored,
            "FAILS (`verify --model gguf:m`: failed: mean KLD 0.00410 (llama.cpp against itself 0.00200, limit <= 0.00400))"
        );
        let passed = kld_verdict(0.0009);
        assert!(passed.passed);
        let words = "PASSED (`verify --model gguf:m`: mean KLD 9.000e-4 (llama.cpp against itself 0.00200, limit <= 0.00400))";
        assert_eq!(
            reference_line("gguf:m", Some(0), &verify_stdout(&passed, None), ""),
            words
        );
        assert_eq!(
            reference_line("gguf:m", Some(0), &verify_stdout(&passed, Some(&file)), ""),
            words
        );
        assert_eq!(
            reference_line("gguf:m", Some(2), "", "error: no llama.cpp\n"),
            "not available: error: no llama.cpp"
        );
    }
}
