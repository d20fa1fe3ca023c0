//! Workloads: one file each. A workload knows how to run one iteration (untimed set-up, then
//! a timed region that ends after a device synchronisation), how much work an iteration does,
//! and how to turn what was measured into its record. It knows nothing of criterion: the
//! harness (criterion glue), the CLI and the tests all drive it through the same trial loop
//! ([`TrialLoop`]) and the same record builder ([`Workload::record`]).

use std::time::Duration;

use crate::error::Result;
use crate::measure::device::DeviceSpec;
pub use crate::measure::timing::{Measured, SAMPLE_SIZE};

/// The one trial loop (measure::timing), holding this crate's error.
pub type TrialLoop<O> = crate::measure::timing::TrialLoop<O, crate::Error>;

/// [`crate::measure::timing::time_region`] for a region that fails with this crate's error.
pub fn time_region<T>(
    dev: &candle_core::Device,
    f: impl FnOnce() -> crate::Result<T>,
) -> crate::Result<(std::time::Duration, T)> {
    crate::measure::timing::time_region(dev, f)
}

/// [`crate::measure::memory::device_peak_during`] for a region that fails with this crate's
/// error.
pub fn device_peak_during<T>(
    dev: &candle_core::Device,
    f: impl FnOnce() -> crate::Result<T>,
) -> crate::Result<(T, Option<u64>)> {
    crate::measure::memory::device_peak_during(dev, f)
}
use crate::output::record::{Harness, Precision, Record};

pub mod arch;
pub mod checkpoint;
pub mod depth;
pub mod generation;
pub mod kld;
pub mod kld_full;
pub mod moe;
pub mod ops;
pub mod overhead;
pub mod peers;
pub mod perplexity;
pub mod psann;
pub mod quality;
pub mod suite;
pub mod train;
pub mod work;

/// Where a workload runs: the device and the precision. Part of every benchmark id, so a
/// CUDA run is never compared with a CPU baseline, nor bf16 with f32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub device: DeviceSpec,
    pub precision: Precision,
}

impl Target {
    pub fn new(device: DeviceSpec, precision: Precision) -> Target {
        Target { device, precision }
    }

    /// `cpu-f32`, `cuda:0-bf16`, `cpu-gguf-q4_k_m`: criterion's function id.
    pub fn tag(&self) -> String {
        format!("{}-{}", self.device, self.precision)
    }
}

/// One benchmark: a workload at one point of its grid.
pub trait Workload {
    /// What one iteration produces (a per-token trace, a peak, nothing).
    type Out;

    /// Criterion group (the scenario for generation).
    fn group(&self) -> String;

    /// What varies inside the group: the model label, the grid point.
    fn name(&self) -> String;

    fn target(&self) -> Target;

    /// Tokens one iteration processes: criterion's `Throughput::Elements` and the tok/s
    /// numerator.
    fn tokens_per_iter(&self) -> u64;

    /// One iteration of trial `trial`: untimed set-up (cache reset, prompt, sampler), then the
    /// timed region, which ends after a device synchronisation. Returns the timed duration and
    /// what the iteration produced.
    fn iterate(&mut self, trial: u64) -> Result<(Duration, Self::Out)>;

    /// The record of the measured iterations (`harness` is set by the caller).
    fn record(&self, m: &Measured<Self::Out>) -> Record;

    /// The device whose memory pool the trial loop reads for [`Measured::device_peak_bytes`]
    /// (None: not read; workloads that measure their own peak leave it None).
    fn pool_device(&self) -> Option<&candle_core::Device> {
        None
    }

    /// An estimate of one iteration's duration, from an untimed run of the same shape (which
    /// also warms it up). Used only to size criterion's measurement window.
    fn estimate(&mut self) -> Result<Duration> {
        self.iterate(u64::MAX).map(|(d, _)| d)
    }

    /// Criterion's benchmark id: `<group>/<device>-<dtype>/<name>`.
    fn id(&self) -> String {
        format!("{}/{}/{}", self.group(), self.target().tag(), self.name())
    }
}

/// Sets the fields every record of a workload shares: id, target, harness.
pub fn stamp<W: Workload + ?Sized>(w: &W, r: &mut Record, harness: Harness) {
    r.id = w.id();
    let t = w.target();
    r.device = t.device.to_string();
    r.dtype = t.precision;
    r.harness = harness;
    // The meter reads the GPU whatever the workload runs on; a host-side benchmark in a CUDA
    // run (the overhead group's sampling rows) would carry the idle GPU's watts as its own.
    if t.device == DeviceSpec::Cpu && r.power.mean_w.is_some() {
        r.power = crate::measure::gpu::Power::not_available(
            "not measured: this benchmark runs on the host CPU, and the GPU's power is not its own",
        );
    }
}

/// The CLI's and the tests' way to measure a workload: `warmup` untimed iterations, then
/// `trials` timed ones, one iteration per call of the same trial loop the criterion harness
/// uses; returns the record.
pub fn run_trials<W: Workload>(w: &mut W, warmup: usize, trials: usize) -> Result<Record> {
    run_trials_with(w, warmup, trials, &mut |_, _| {})
}

/// [`run_trials`], calling `progress(call index, is_warm_up)` before each call.
pub fn run_trials_with<W: Workload>(
    w: &mut W,
    warmup: usize,
    trials: usize,
    progress: &mut dyn FnMut(usize, bool),
) -> Result<Record> {
    if trials == 0 {
        return Err(crate::error::Error::Report(
            "at least one timed trial is needed".into(),
        ));
    }
    let mut l: TrialLoop<W::Out> = TrialLoop::new().on_device(w.pool_device());
    for i in 0..warmup + trials {
        progress(i, i < warmup);
        l.call(1, &mut |trial| w.iterate(trial));
    }
    let m = l
        .finish(trials, w.tokens_per_iter())?
        .expect("warmup + trials calls ran");
    let mut r = w.record(&m);
    stamp(w, &mut r, Harness::Cli);
    Ok(r)
}
