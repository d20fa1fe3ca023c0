//! Criterion glue, and nothing else: group settings for multi-second iterations, benchmark ids
//! that carry device and dtype, the one routine every benchmark uses (`iter_custom` over the
//! shared [`TrialLoop`]), the criterion [`Driver`] of the suite loop
//! (`workloads::suite::run_suite`; the CLI drives the same loop with fixed trials), a
//! peak-bytes [`Measurement`](criterion::measurement::Measurement) with the checkpoint bench's
//! memory group, and the entry of each file in benches/ ([`main`]). What each bench runs
//! lives beside its workloads (`workloads::generation::GenerationSuite`,
//! `workloads::moe::run_grid`, ...); workloads know nothing of criterion.

pub mod ops;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::measurement::Measurement;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

use crate::config::plans::{Common, DepthPlan, MoePlan, Plan, PsannPlan};
use crate::error::Result;
use crate::judge::noise::{threshold_for, NoiseProfile, Source, DEFAULT_THRESHOLD};
use crate::measure::memory;
use crate::measure::timing::{Measured, SAMPLE_SIZE};
use crate::output::noise;
use crate::output::record::Harness;
use crate::output::report::{reports_root, RunDir};
use crate::workloads::checkpoint::Checkpoint;
use crate::workloads::suite::{run_suite, Driver};
use crate::workloads::TrialLoop;
use crate::workloads::{stamp, Workload};

pub mod invocation;

pub use crate::config::knobs::Bench;

/// The whole `main` of a bench: validate the knobs, run its groups into the run folder of
/// this `cargo bench` ([`invocation`]), print where the records went and how long it took,
/// write the run's summary.md, and, from the invocation's last bench, print the summary.
/// Bad input is one line on stderr and exit status 2.
pub fn main(bench: Bench) {
    // First: glibc reads its tunables at start, so huge pages need a fresh start.
    crate::measure::memory::reexec_with_huge_pages();
    crate::measure::threads::pin_rayon_count();
    crate::output::plot::register_fonts();
    let t = Instant::now();
    // The path knobs first: the noise profile below is read from the reports root.
    exit_on_error(crate::config::knobs::install(&crate::config::knobs::env));
    if !listing() {
        for w in crate::measure::system::check().iter().filter(|c| !c.ok) {
            eprintln!("warning: {}: {}", w.what, w.detail);
        }
    }
    exit_on_error(install_noise());
    let root = reports_root();
    let inv = invocation::Invocation::current();
    let shared = |label: Option<&str>| invocation::run_dir(&root, label, inv.as_ref());
    // One criterion over the bench's groups, into the invocation's run folder.
    type Groups<'a> = &'a mut dyn FnMut(&mut Criterion<TokenTime>, &mut RunDir) -> Result<()>;
    let with_criterion = |label: Option<&str>, groups: Groups| -> Result<RunDir> {
        let mut c = criterion();
        let mut run = shared(label)?;
        groups(&mut c, &mut run)?;
        c.final_summary();
        Ok(run)
    };
    let out = match bench {
        Bench::Generation => Plan::from_env().and_then(|plan| {
            let mut run = with_criterion(plan.common.label.as_deref(), &mut |c, run| {
                generation(c, &plan, run)?;
                overhead(c, &plan, run)
            })?;
            if crate::config::plans::peers_row(&crate::config::knobs::env)? {
                crate::workloads::peers::llama_peer_rows(
                    &plan.models,
                    &plan.scenarios,
                    plan.common.seed,
                    &mut run,
                    &|l| eprintln!("{l}"),
                )?;
            }
            Ok(run)
        }),
        Bench::Moe => MoePlan::from_env().and_then(|plan| {
            with_criterion(plan.common.label.as_deref(), &mut |c, run| {
                moe(c, &plan, run)
            })
        }),
        Bench::Psann => PsannPlan::from_env().and_then(|plan| {
            with_criterion(plan.common.label.as_deref(), &mut |c, run| {
                psann(c, &plan, run)
            })
        }),
        Bench::Depth => DepthPlan::from_env().and_then(|plan| {
            with_criterion(plan.common.label.as_deref(), &mut |c, run| {
                depth(c, &plan, run)
            })
        }),
        Bench::Arch => crate::config::sweep::ArchPlan::from_env().and_then(|plan| {
            with_criterion(plan.common.label.as_deref(), &mut |c, run| {
                arch(c, &plan, run)
            })
        }),
        Bench::Checkpoint => Common::from_env().and_then(|common| {
            let mut c_mem = memory_criterion(criterion());
            let mut c_time = criterion();
            let mut run = shared(common.label.as_deref())?;
            checkpoint(&mut c_mem, &mut c_time, &common, &mut run)?;
            c_mem.final_summary();
            c_time.final_summary();
            Ok(run)
        }),
    };
    let run = exit_on_error(out);
    let added = run.records().len() - run.resumed();
    if added > 0 {
        eprintln!("records: {}", run.path.display());
    }
    eprintln!(
        "bench {bench:?} took {:.1} s ({added} records)",
        t.elapsed().as_secs_f64(),
    );
    let last = exit_on_error(invocation::finish(&root, bench.name(), inv.as_ref()));
    if last {
        // The invocation's last bench has ended: the run is complete (before the summary, so
        // that index.html shows it so).
        exit_on_error(run.complete());
    }
    exit_on_error(summarize(&root, &run, last));
}

/// Writes the run's summary.md (every benchmark the run folder holds so far, against its
/// previous measurement on this machine) and index.html, and prints the table when `print`.
pub fn summarize(root: &std::path::Path, run: &RunDir, print: bool) -> Result<()> {
    use crate::output::summary;
    let lines = summary::lines(root, &run.path, run.records(), &|id| noise_threshold(id).0);
    if lines.is_empty() {
        return Ok(());
    }
    crate::util::fsio::atomic_write(
        &run.path.join("summary.md"),
        summary::markdown(&run.name(), &lines).as_bytes(),
    )?;
    crate::output::report::write_index(root)?;
    if print {
        println!(
            "\nSummary of run {} ({} benchmarks; {}):\n\n{}\nmedian: of criterion's samples (time per iteration); 95% CI: bootstrap interval of that median; tok/s: tokens per iteration / median.\nvs previous run: median time against the newest earlier run of the benchmark on this machine, 95% interval of the ratio, and the verdict against the benchmark's noise threshold (±N%): `within noise` unless the whole interval lies beyond it.",
            run.name(),
            lines.len(),
            run.path.join("summary.md").display(),
            summary::table(&lines)
        );
    }
    Ok(())
}

/// Bootstrap resamples of criterion's analysis (its default is 100,000). The HTML report draws a
/// kernel density of each bootstrap distribution, and with 100,000 resamples that drawing took
/// about 4 s per benchmark on a 2-core machine (the `moe` bench: 76 s with 100,000, 29 s with
/// 10,000), longer than most measurements. Redrawn ten times from our own samples, the bounds of
/// a median's 95% interval with 10,000 resamples varied by at most 3% of the interval's width.
/// `-- --nresamples N` still overrides it.
pub const NRESAMPLES: usize = 10_000;

static NOISE: std::sync::OnceLock<Option<NoiseProfile>> = std::sync::OnceLock::new();

/// Loads this machine's noise profile (`target-reports/noise/<machine>.json`, see
/// `output::noise`) once; a profile that exists but does not parse is an error.
pub fn install_noise() -> Result<()> {
    let fp = crate::measure::hardware::context().hardware.fingerprint();
    let p = noise::load(&reports_root(), &fp)?;
    match &p {
        Some(p) => eprintln!(
            "criterion noise thresholds: measured on this machine ({} run folders of {}, {} benchmarks; {}); {:.0}% for benchmarks without a measurement",
            p.runs.len(),
            &p.build.git_commit[..p.build.git_commit.len().min(10)],
            p.benches.len(),
            noise::path_for(&reports_root(), &fp).display(),
            DEFAULT_THRESHOLD * 100.0
        ),
        None => eprintln!(
            "criterion noise thresholds: none measured for `{fp}`; every benchmark uses the default {:.0}% (measure them with `modelbench noise --measure 4`)",
            DEFAULT_THRESHOLD * 100.0
        ),
    }
    let _ = NOISE.set(p);
    Ok(())
}

/// The noise threshold criterion gets for benchmark `id` (`group/device-dtype/name`): the
/// judge's rule (`judge::noise::threshold_for`) with this machine's profile.
pub fn noise_threshold(id: &str) -> (f64, Source) {
    threshold_for(NOISE.get().and_then(|p| p.as_ref()), id)
}

/// Criterion as every bench configures it: [`NRESAMPLES`], then criterion's own flags.
/// Its measurement is [`TokenTime`]: wall time, with throughput printed in tokens.
pub fn criterion() -> Criterion<TokenTime> {
    Criterion::default()
        .with_measurement(TokenTime)
        .nresamples(NRESAMPLES)
        .configure_from_args()
}

/// The criterion of a peak-bytes group, from a configured criterion. Peak bytes of a
/// deterministic step are identical from sample to sample, and criterion 0.8's HTML report
/// panics drawing the KDE of a comparison with zero spread (`kde.rs: index out of bounds`) on
/// the second run; so memory groups keep criterion's statistics, console report and
/// baselines but no HTML plots. A test runs such a group twice.
pub fn memory_criterion<M: Measurement>(c: Criterion<M>) -> Criterion<PeakBytes> {
    c.with_measurement(PeakBytes).without_plots()
}

/// Prints a one-line error and exits non-zero: the bench's answer to bad input.
pub fn exit_on_error<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// The current run folder for `cargo bench` (created on the first record).
pub fn run_dir(plan_label: Option<&str>) -> RunDir {
    RunDir::new(&reports_root(), plan_label)
}

/// Criterion was asked only to list the benchmarks (`cargo bench -- --list`): nothing is run,
/// so no probe either.
pub fn listing() -> bool {
    std::env::args().any(|a| a == "--list")
}

/// Above this, a benchmark takes criterion's minimum: [`SAMPLE_SIZE`] samples of one iteration
/// each (criterion then prints its "unable to complete" note, which is expected).
pub const LONG_BUDGET: Duration = Duration::from_secs(30);

/// The most samples a benchmark takes: short iterations get more samples (not longer ones), so
/// the bootstrap interval of the median narrows (its width falls about as 1/sqrt(samples)).
pub const MAX_SAMPLES: usize = 50;

/// How criterion measures one benchmark: the sample count and the measurement window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub samples: usize,
    pub window: Duration,
}

/// Sizes a benchmark from an estimate of one iteration and the minimum measurement time.
/// Each flat sample holds two iterations (criterion warns on one), and there are as many
/// samples as fit in `min_measure`, between [`SAMPLE_SIZE`] and [`MAX_SAMPLES`]; iterations
/// shorter than `min_measure / (2 * MAX_SAMPLES)` get more iterations per sample instead.
/// Where even ten two-iteration samples exceed [`LONG_BUDGET`], one iteration per sample.
pub fn sizing(est_iter: Duration, min_measure: Duration) -> Sizing {
    let est = est_iter.max(Duration::from_nanos(1));
    let two = est.mul_f64(2.0);
    if two.mul_f64(SAMPLE_SIZE as f64) > LONG_BUDGET {
        return Sizing {
            samples: SAMPLE_SIZE,
            window: est.mul_f64(SAMPLE_SIZE as f64 * 0.5),
        };
    }
    let fit = (min_measure.as_secs_f64() / two.as_secs_f64()).floor() as usize;
    let samples = fit.clamp(SAMPLE_SIZE, MAX_SAMPLES);
    // 1.5 iterations' time per sample: criterion rounds it up to two iterations.
    let window = if fit > MAX_SAMPLES {
        min_measure
    } else {
        est.mul_f64(samples as f64 * 1.5)
    };
    Sizing {
        samples,
        window: window.max(Duration::from_millis(1)),
    }
}

/// Group settings for one benchmark: flat sampling, [`sizing`]'s samples and window, and a
/// warm-up of exactly one routine call (criterion runs the routine once with one iteration
/// when the warm-up time is a nanosecond). Returns the group and its sample count.
///
/// The group's noise threshold is the benchmark's measured run-to-run spread on this machine
/// ([`noise_threshold`] of `id`, the full `group/device-dtype/name`): criterion then calls a
/// change within it "within noise" instead of "regressed".
pub fn group<'a, M: Measurement>(
    c: &'a mut Criterion<M>,
    name: &str,
    id: &str,
    est_iter: Duration,
    min_measure: Duration,
) -> (BenchmarkGroup<'a, M>, usize) {
    let mut g = c.benchmark_group(name);
    let s = sizing(est_iter, min_measure);
    let (thr, src) = noise_threshold(id);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(s.samples)
        .warm_up_time(Duration::from_nanos(1))
        .measurement_time(s.window)
        .noise_threshold(thr);
    if !listing() {
        eprintln!(
            "{id}: noise threshold {:.1}% ({})",
            thr * 100.0,
            match src {
                Source::Measured(n) => format!("run-to-run spread of {n} runs here"),
                Source::Default => "default: not measured on this machine".into(),
                Source::Deterministic => "peak bytes are deterministic".into(),
            }
        );
    }
    (g, s.samples)
}

/// Benchmarks one workload in its criterion group under id `<device>-<dtype>/<name>`, through
/// the shared trial loop. `est`: one iteration's duration if already known (else one untimed
/// iteration estimates it). Returns what the measured samples gave (None in criterion's test
/// and list modes, or when the benchmark was filtered out).
pub fn bench<W: Workload, M: Measurement<Value = Duration>>(
    c: &mut Criterion<M>,
    w: &mut W,
    est: Option<Duration>,
    min_measure: Duration,
) -> Result<Option<Measured<W::Out>>> {
    let est = match est {
        Some(e) => e,
        None if listing() => Duration::from_millis(1),
        None => w.estimate()?,
    };
    let tokens = w.tokens_per_iter();
    let trials = RefCell::new(TrialLoop::<W::Out>::new().on_device(w.pool_device()));
    let id = BenchmarkId::new(w.target().tag(), w.name());
    let samples = {
        let (mut g, samples) = group(c, &w.group(), &w.id(), est, min_measure);
        g.throughput(Throughput::Elements(tokens));
        g.bench_function(id, |b| {
            b.iter_custom(|iters| trials.borrow_mut().call(iters, &mut |t| w.iterate(t)))
        });
        g.finish();
        samples
    };
    trials.into_inner().finish(samples, tokens)
}

/// The criterion driver of the suite loop ([`run_suite`]): each workload is one benchmark
/// ([`bench`]), sized from the suite's estimate, its record stamped `criterion`.
pub struct CriterionDriver<'c> {
    c: &'c mut Criterion<TokenTime>,
    min_measure: Duration,
}

impl<'c> CriterionDriver<'c> {
    pub fn new(c: &'c mut Criterion<TokenTime>, min_measure: Duration) -> Self {
        CriterionDriver { c, min_measure }
    }
}

impl Driver for CriterionDriver<'_> {
    fn sizes_by_estimate(&self) -> bool {
        true
    }
    fn listing(&self) -> bool {
        listing()
    }
    fn verbose(&self) -> bool {
        false
    }
    fn loading(&self, label: &str, source: &str) {
        eprintln!("loading {label} ({source}) ...");
    }
    fn measure<W: Workload>(
        &mut self,
        w: &mut W,
        est: Option<Duration>,
    ) -> Result<Option<crate::output::record::Record>> {
        let Some(m) = bench(self.c, w, est, self.min_measure)? else {
            return Ok(None);
        };
        let mut r = w.record(&m);
        stamp(w, &mut r, Harness::Criterion);
        Ok(Some(r))
    }
    fn say(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// [`bench`], then the workload's record (stamped `criterion`) into the run folder.
pub fn bench_and_record<W: Workload, M: Measurement<Value = Duration>>(
    c: &mut Criterion<M>,
    w: &mut W,
    est: Option<Duration>,
    min_measure: Duration,
    run: &mut RunDir,
) -> Result<Option<crate::output::record::Record>> {
    let Some(m) = bench(c, w, est, min_measure)? else {
        return Ok(None);
    };
    let mut r = w.record(&m);
    stamp(w, &mut r, Harness::Criterion);
    run.push(r.clone())?;
    Ok(Some(r))
}

/// Every scenario of the plan on every model: one criterion group per scenario, one benchmark
/// per model (`medium/cpu-f32/fixture:llama`), `Throughput::Elements(new tokens)` so
/// criterion prints tokens/s. Each model is loaded once, runs all its scenarios, and is
/// dropped before the next loads (the generation suite, `workloads::generation`).
pub fn generation(c: &mut Criterion<TokenTime>, plan: &Plan, run: &mut RunDir) -> Result<()> {
    let dev = plan.common.device.open()?;
    let mut d = CriterionDriver::new(c, plan.common.min_measure);
    run_suite(&plan.suite(&dev), &mut d, run)
}

/// Group `depth`: per model (loaded once, built for the deepest point), per depth, one
/// benchmark `depth/<device>-<dtype>/<model>/d<depth>-p<P>-n<N>` (the depth suite,
/// `workloads::depth`); depth.png and depth.csv in the run folder.
pub fn depth(c: &mut Criterion<TokenTime>, plan: &DepthPlan, run: &mut RunDir) -> Result<()> {
    let dev = plan.common.device.open()?;
    let mut d = CriterionDriver::new(c, plan.common.min_measure);
    run_suite(&plan.suite(&dev), &mut d, run)?;
    crate::workloads::depth::write_artifacts(run)
}

/// Group `overhead` (`workloads::overhead::run_group`) under criterion.
pub fn overhead(c: &mut Criterion<TokenTime>, plan: &Plan, run: &mut RunDir) -> Result<()> {
    let s = plan.common.setup()?;
    let mut d = CriterionDriver::new(c, plan.common.min_measure);
    crate::workloads::overhead::run_group(&s, &mut d, run)
}

/// The `moe_topk` grid (`workloads::moe::run_grid`) under criterion.
pub fn moe(c: &mut Criterion<TokenTime>, plan: &MoePlan, run: &mut RunDir) -> Result<()> {
    let s = plan.common.setup()?;
    let mut d = CriterionDriver::new(c, plan.common.min_measure);
    crate::workloads::moe::run_grid(&plan.grid, &s, &mut d, run)
}

/// Group `arch_sweep` (`workloads::arch::run_grid`) under criterion: every family x dim x depth
/// of the plan at [`ArchPlan::HORIZONS`](crate::config::sweep::ArchPlan) horizons.
pub fn arch(
    c: &mut Criterion<TokenTime>,
    plan: &crate::config::sweep::ArchPlan,
    run: &mut RunDir,
) -> Result<()> {
    use crate::config::sweep::ArchPlan;
    let s = plan.common.setup()?;
    let mut d = CriterionDriver::new(c, plan.common.min_measure);
    let batch_seq = (ArchPlan::BATCH, ArchPlan::SEQ);
    crate::workloads::arch::run_grid(&plan.configs(), batch_seq, &s, &mut d, run)
}

/// The PSANN groups (`workloads::psann::run_grid`) under criterion.
pub fn psann(c: &mut Criterion<TokenTime>, plan: &PsannPlan, run: &mut RunDir) -> Result<()> {
    let s = plan.common.setup()?;
    let mut d = CriterionDriver::new(c, plan.common.min_measure);
    crate::workloads::psann::run_grid(&plan.grid(), &s, &mut d, run)
}

/// Groups `checkpoint_memory` (peak bytes per train step, through [`PeakBytes`]) and
/// `checkpoint_time` (wall time and the peak of the same steps); memory.json in the run
/// folder (the original checkpointing benchmark's fields plus batch, sequence length and method).
pub fn checkpoint(
    c_mem: &mut Criterion<PeakBytes>,
    c_time: &mut Criterion<TokenTime>,
    common: &Common,
    run: &mut RunDir,
) -> Result<()> {
    let dev = common.device.open()?;
    let mut entries = Vec::new();
    for ckpt in [true, false] {
        let mut w = Checkpoint::new(ckpt, common.seed, common.device, common.dtype, &dev)?;
        // One untimed step: its duration sizes the time group, its peak bytes the memory
        // group (whose criterion "time" unit is bytes).
        let (est, peak) = if listing() {
            (Duration::from_millis(1), None)
        } else {
            w.iterate(u64::MAX)?
        };
        // Memory: criterion's statistics and baselines of the peak bytes of a step, where the
        // device's peak can be measured (a missing peak is left out, never counted as 0).
        let trials: RefCell<TrialLoop<Option<u64>>> = RefCell::default();
        let mut mem_samples = SAMPLE_SIZE;
        if !w.peak_available() {
            eprintln!(
                "checkpoint_memory/{}/{}: not available on {} (no memory counter for it; see memory.json's method)",
                w.target().tag(),
                w.name(),
                common.device
            );
        } else {
            // Peak bytes of a step are the same from step to step: the fewest samples, two
            // steps each (criterion sizes flat samples from the warm-up's bytes).
            let bytes = Duration::from_nanos(peak.unwrap_or(1).max(1));
            let id = format!("checkpoint_memory/{}/{}", w.target().tag(), w.name());
            let (mut g, samples) = group(c_mem, "checkpoint_memory", &id, bytes, Duration::ZERO);
            mem_samples = samples;
            g.bench_function(BenchmarkId::new(w.target().tag(), w.name()), |b| {
                b.iter_custom(|iters| {
                    let mut l = trials.borrow_mut();
                    l.call(iters, &mut |t| w.iterate(t));
                    l.last_outs().iter().flatten().sum::<u64>()
                })
            });
            g.finish();
        }
        trials.into_inner().finish(mem_samples, 0)?;
        // Time (and the peak of the same steps, for the record).
        if let Some(r) = bench_and_record(c_time, &mut w, Some(est), common.min_measure, run)? {
            entries.push(r.extra.clone());
        }
    }
    if !entries.is_empty() {
        run.put_file(
            "memory.json",
            serde_json::to_string_pretty(&entries)
                .expect("json")
                .into_bytes(),
        )?;
        for e in &entries {
            let mib = e["max_memory_mb"]
                .as_f64()
                .map(|m| format!("{m:.1} MiB"))
                .unwrap_or_else(|| "not available".into());
            eprintln!(
                "checkpoint {}: peak {mib}, step {:.3} s",
                if e["grad_checkpoint"] == true {
                    "on "
                } else {
                    "off"
                },
                e["elapsed_s"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}

/// A criterion [`Measurement`] of bytes: the routine returns the peak live heap (counting
/// allocator) of its iterations above the live heap at their start, so criterion's
/// statistics, baselines and regression reports apply to memory.
pub struct PeakBytes;

struct BytesFormatter;

impl criterion::measurement::ValueFormatter for BytesFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= (1u64 << 20) as f64);
        "MiB"
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            Throughput::ElementsAndBytes { elements, .. } => *elements as f64,
            Throughput::Bits(n) => *n as f64,
        };
        values.iter_mut().for_each(|v| *v = *v / n / 1024.0);
        "KiB/elem"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "B"
    }
}

impl Measurement for PeakBytes {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        memory::reset_peak();
        memory::heap_current().unwrap_or(0)
    }
    fn end(&self, base: u64) -> u64 {
        memory::heap_peak().unwrap_or(0).saturating_sub(base)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        &BytesFormatter
    }
}

/// Wall time, exactly as criterion's `WallTime` measures it (an [`Instant`] per routine call,
/// values in nanoseconds, so baselines saved with either compare), printed with tokens: every
/// benchmark's `Throughput::Elements` is the tokens one iteration processes, so criterion's
/// `thrpt` line reads `tok/s` (`Ktok/s`, ...) where `WallTime` would print `elem/s`.
pub struct TokenTime;

struct TokenFormatter;

impl TokenFormatter {
    /// Criterion's own time units (`DurationFormatter`): ps, ns, µs, ms, s by the typical value.
    fn time_unit(ns: f64) -> (f64, &'static str) {
        if ns < 1.0 {
            (1e3, "ps")
        } else if ns < 1e3 {
            (1.0, "ns")
        } else if ns < 1e6 {
            (1e-3, "µs")
        } else if ns < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        }
    }
}

impl criterion::measurement::ValueFormatter for TokenFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = Self::time_unit(typical);
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let tokens = match t {
            Throughput::Elements(n)
            | Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Bits(n) => *n as f64,
            Throughput::ElementsAndBytes { elements, .. } => *elements as f64,
        };
        let per_s = tokens * 1e9 / typical;
        let (den, unit) = if per_s < 1e3 {
            (1.0, " tok/s")
        } else if per_s < 1e6 {
            (1e3, "Ktok/s")
        } else if per_s < 1e9 {
            (1e6, "Mtok/s")
        } else {
            (1e9, "Gtok/s")
        };
        values.iter_mut().for_each(|v| *v = tokens * 1e9 / *v / den);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for TokenTime {
    type Intermediate = Instant;
    type Value = Duration;
    fn start(&self) -> Instant {
        Instant::now()
    }
    fn end(&self, i: Instant) -> Duration {
        i.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        &TokenFormatter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn sizing_trades_samples_for_iteration_length() {
        // Short iterations: the most samples, the window is the minimum measurement time.
        assert_eq!(
            sizing(ms(1), ms(2000)),
            Sizing {
                samples: MAX_SAMPLES,
                window: ms(2000)
            }
        );
        // As many two-iteration samples as fit: 2000 / (2 * 40) = 25, window 25 * 1.5 * 40 ms.
        assert_eq!(
            sizing(ms(40), ms(2000)),
            Sizing {
                samples: 25,
                window: ms(1500)
            }
        );
        // Never fewer than criterion's minimum: ten samples of two iterations.
        assert_eq!(sizing(ms(500), ms(2000)).samples, SAMPLE_SIZE);
        assert_eq!(sizing(ms(500), ms(2000)).window, ms(7500));
        // Past the long budget: ten samples of one iteration.
        assert_eq!(
            sizing(ms(2000), ms(2000)),
            Sizing {
                samples: SAMPLE_SIZE,
                window: ms(10000)
            }
        );
    }
}
