//! The one trial loop. Criterion's routine calls (`iter_custom`), the CLI's trials and the
//! tests all run a workload's iterations through [`TrialLoop::call`], so trials are numbered
//! the same way everywhere (0, 1, 2, ... in the order they run, warm-up included), the heap
//! peak and GPU power are taken over the same region, and errors stop the loop the same way.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::measure::gpu::{Power, PowerMeter};
use crate::measure::memory;

/// Samples per benchmark in every criterion group this crate configures; also the number of
/// routine calls the records keep (criterion's measured samples follow its warm-up calls).
pub const SAMPLE_SIZE: usize = 10;

/// One routine call: the timed seconds and output of each of its iterations.
struct Call<O> {
    seconds: Vec<f64>,
    outs: Vec<O>,
    heap_peak: Option<u64>,
    device_peak: Option<u64>,
}

/// What the measured calls of a [`TrialLoop`] gave.
#[derive(Debug, Clone)]
pub struct Measured<O> {
    /// Seconds per iteration as criterion sees a sample: the mean over each measured call.
    pub sample_s: Vec<f64>,
    /// Seconds of every measured iteration, in the order they ran.
    pub iter_s: Vec<f64>,
    /// What every measured iteration produced, in the order they ran.
    pub outs: Vec<O>,
    /// Trial number of the first measured iteration.
    pub first_trial: u64,
    /// Peak live heap (counting allocator) over the measured calls; None without it.
    pub heap_peak_bytes: Option<u64>,
    /// High-water mark of the CUDA memory pool candle allocates from (weights, KV cache and
    /// activations) over the measured calls; None on CPU or where the pool cannot be read
    /// (see [`TrialLoop::on_device`]).
    pub device_peak_bytes: Option<u64>,
    /// This process's anonymous memory in transparent huge pages, and all of it, read after
    /// the measured calls (measure::memory::huge_pages_of); None where /proc cannot be read.
    pub huge_page_bytes: Option<(u64, u64)>,
    /// GPU power and energy of the measured calls ("not available" without NVML).
    pub power: Power,
}

/// Runs iterations of one benchmark and keeps what each call measured. `E` is the caller's
/// error type (each layer has its own; the loop only keeps the first one and hands it back).
pub struct TrialLoop<O, E = Error> {
    next_trial: u64,
    calls: Vec<Call<O>>,
    error: Option<E>,
    meter: PowerMeter,
    /// Where the device-pool peak is read (None: not read).
    device: Option<candle_core::Device>,
}

impl<O, E> Default for TrialLoop<O, E> {
    fn default() -> Self {
        TrialLoop {
            next_trial: 0,
            calls: Vec::new(),
            error: None,
            meter: PowerMeter::new(),
            device: None,
        }
    }
}

impl<O, E> TrialLoop<O, E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also reads the device memory pool's high-water mark over each call (CUDA devices;
    /// elsewhere nothing is read and the peak stays None).
    pub fn on_device(mut self, dev: Option<&candle_core::Device>) -> Self {
        self.device = dev.filter(|d| d.is_cuda()).cloned();
        self
    }

    /// One routine call of `iters` iterations; `iteration(trial)` runs one iteration and
    /// returns its timed region (ending after a device synchronisation) and its output.
    /// Returns the summed timed duration, as criterion's `iter_custom` wants. After an error
    /// the loop runs nothing more (criterion cannot be stopped from inside a routine) and
    /// [`TrialLoop::finish`] returns the error.
    pub fn call(
        &mut self,
        iters: u64,
        iteration: &mut dyn FnMut(u64) -> Result<(Duration, O), E>,
    ) -> Duration {
        if self.error.is_some() {
            return Duration::from_nanos(iters.max(1));
        }
        let mut call = Call {
            seconds: Vec::with_capacity(iters as usize),
            outs: Vec::with_capacity(iters as usize),
            heap_peak: None,
            device_peak: None,
        };
        // Outside the timed regions: the device is idle after the previous call's last sync.
        let pool_reset = self.device.as_ref().is_some_and(memory::reset_device_peak);
        memory::reset_peak();
        self.meter.start();
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let trial = self.next_trial;
            self.next_trial += 1;
            match iteration(trial) {
                Ok((d, out)) => {
                    total += d;
                    call.seconds.push(d.as_secs_f64());
                    call.outs.push(out);
                }
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        self.meter.stop(iters);
        call.heap_peak = memory::heap_peak();
        if pool_reset {
            call.device_peak = self
                .device
                .as_ref()
                .and_then(memory::device_pool)
                .map(|(_, high)| high);
        }
        self.calls.push(call);
        total.max(Duration::from_nanos(1))
    }

    /// What the iterations of the latest call produced.
    pub fn last_outs(&self) -> &[O] {
        self.calls.last().map(|c| c.outs.as_slice()).unwrap_or(&[])
    }

    /// The last `keep` calls (criterion: its measured samples, after the warm-up calls; the
    /// CLI: the trials after its warm-up). None when fewer calls ran (criterion's test and
    /// list modes, or a benchmark filtered out): nothing was measured then.
    pub fn finish(self, keep: usize, tokens_per_iter: u64) -> Result<Option<Measured<O>>, E> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let n = self.calls.len();
        if keep == 0 || n < keep {
            return Ok(None);
        }
        let mut meter = self.meter;
        meter.keep_last(keep);
        let skipped: u64 = self.calls[..n - keep]
            .iter()
            .map(|c| c.seconds.len() as u64)
            .sum();
        let mut m = Measured {
            sample_s: Vec::with_capacity(keep),
            iter_s: Vec::new(),
            outs: Vec::new(),
            first_trial: skipped,
            heap_peak_bytes: None,
            device_peak_bytes: None,
            huge_page_bytes: crate::measure::memory::huge_pages_of(std::process::id()),
            power: meter.reading(tokens_per_iter),
        };
        for c in self.calls.into_iter().skip(n - keep) {
            if !c.seconds.is_empty() {
                m.sample_s
                    .push(c.seconds.iter().sum::<f64>() / c.seconds.len() as f64);
            }
            m.iter_s.extend(c.seconds);
            m.outs.extend(c.outs);
            m.heap_peak_bytes = match (m.heap_peak_bytes, c.heap_peak) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            m.device_peak_bytes = match (m.device_peak_bytes, c.device_peak) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(Some(m))
    }
}

/// Runs `f` as a timed region: the clock stops after the device is synchronised.
pub fn time_region<T, E: From<Error>>(
    dev: &candle_core::Device,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<(Duration, T), E> {
    crate::measure::device::sync(dev)?;
    let t = std::time::Instant::now();
    let out = f()?;
    crate::measure::device::sync(dev)?;
    Ok((t.elapsed(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_are_numbered_in_order_and_the_last_calls_are_kept() {
        let mut l: TrialLoop<u64> = TrialLoop::new();
        let mut f = |trial: u64| Ok((Duration::from_millis(1 + trial), trial));
        l.call(1, &mut f); // warm-up
        l.call(2, &mut f);
        l.call(3, &mut f);
        let m = l.finish(2, 1).unwrap().unwrap();
        assert_eq!(m.outs, vec![1, 2, 3, 4, 5]);
        assert_eq!(m.first_trial, 1);
        assert_eq!(m.sample_s.len(), 2);
        assert!((m.sample_s[0] - 0.0025).abs() < 1e-9);
        assert_eq!(m.iter_s.len(), 5);
    }

    #[test]
    fn too_few_calls_measure_nothing_and_errors_surface() {
        let mut l: TrialLoop<()> = TrialLoop::new();
        l.call(1, &mut |_| Ok((Duration::from_millis(1), ())));
        assert!(l.finish(2, 1).unwrap().is_none());
        let mut l: TrialLoop<()> = TrialLoop::new();
        l.call(1, &mut |_| Err(Error::Measure("boom".into())));
        let mut ran = false;
        l.call(1, &mut |_| {
            ran = true;
            Ok((Duration::ZERO, ()))
        });
        assert!(!ran, "nothing runs after an error");
        assert!(l.finish(1, 1).is_err());
    }
}
