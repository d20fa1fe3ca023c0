//! What the records say about the GPU: facts from NVML (name, VRAM, compute capability,
//! driver, CUDA version), the SM count from the CUDA driver, and power drawn during the timed
//! region with the energy per generated token.
//!
//! The GPU described is the one the run opened: [`select`] is called when a CUDA device opens
//! and maps the CUDA ordinal to its NVML device by PCI bus id (CUDA and NVML may number
//! devices differently, and CUDA_VISIBLE_DEVICES renumbers only CUDA's). Before any CUDA
//! device is open (or in a CPU-only build), NVML's device 0 is described. Where there is no
//! NVIDIA driver, every GPU field is "not available"; nothing is estimated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    pub vram_total_bytes: u64,
    pub vram_used_bytes: u64,
    pub sm_count: Option<u32>,
    pub compute_capability: String,
    pub driver: String,
    pub cuda_version: String,
}

/// GPU power during the timed region and the energy per token. On machines without an
/// NVIDIA driver every number is None and `method` says "not available (...)".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// How it was measured, or why it was not.
    pub method: String,
    /// Power readings taken.
    pub samples: usize,
    pub mean_w: Option<f64>,
    pub max_w: Option<f64>,
    /// Energy of the timed region (all measured samples together), joules.
    pub energy_j: Option<f64>,
    /// Seconds the meter ran (the measured routine calls or trials); None where no power
    /// sample was taken. Records written before it was optional said 0 and read back as None.
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub timed_s: Option<f64>,
    /// Tokens generated (or processed) in that time; None where no power sample was taken
    /// (older records: 0).
    #[serde(default, deserialize_with = "crate::util::positive_or_none")]
    pub tokens: Option<u64>,
    pub j_per_token: Option<f64>,
}

impl Power {
    pub fn not_available(why: &str) -> Power {
        Power {
            method: why.into(),
            ..Power::default()
        }
    }

    /// "123.4 W, 0.567 J/tok", or "not available".
    pub fn describe(&self) -> String {
        match (self.mean_w, self.j_per_token) {
            (Some(w), Some(j)) => format!("{w:.1} W, {j:.4} J/tok"),
            (Some(w), None) => format!("{w:.1} W"),
            _ => "not available".into(),
        }
    }
}

/// How often the power sampler reads NVML. NVML refreshes its power reading every
/// few tens of milliseconds at best, so sampling faster adds nothing.
pub const POWER_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// The CUDA device a run opened, as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub ordinal: usize,
    pub pci_bus_id: String,
    pub sm_count: u32,
}

static SELECTED: Mutex<Option<Selected>> = Mutex::new(None);

/// NVML, initialised once per process; None where there is no NVIDIA driver.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().ok()).as_ref()
}

/// Remembers the CUDA device `dev` as the one the records describe (a no-op on CPU).
pub fn select(dev: &candle_core::Device) {
    if let Some(s) = cuda_selected(dev) {
        *SELECTED.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }
}

fn selected() -> Option<Selected> {
    SELECTED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(feature = "cuda")]
fn cuda_selected(dev: &candle_core::Device) -> Option<Selected> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as A;
    let candle_core::Device::Cuda(d) = dev else {
        return None;
    };
    let stream = d.cuda_stream();
    let ctx = stream.context();
    let attr = |a| ctx.attribute(a).ok();
    Some(Selected {
        ordinal: ctx.ordinal(),
        pci_bus_id: format!(
            "{:08x}:{:02x}:{:02x}.0",
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?
        ),
        sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_selected(_dev: &candle_core::Device) -> Option<Selected> {
    None
}

/// The NVML device the records describe.
fn nvml_device<'n>(nvml: &'n Nvml, sel: Option<&Selected>) -> Option<nvml_wrapper::Device<'n>> {
    match sel {
        Some(s) => nvml.device_by_pci_bus_id(s.pci_bus_id.as_str()).ok(),
        None => nvml.device_by_index(0).ok(),
    }
}

/// GPU facts, or None where NVML (the NVIDIA driver) is not present.
pub fn facts() -> Option<Gpu> {
    let nvml = nvml()?;
    let sel = selected();
    let d = nvml_device(nvml, sel.as_ref())?;
    let mem = d.memory_info().ok()?;
    let cc = d.cuda_compute_capability().ok();
    let cuda = nvml.sys_cuda_driver_version().ok();
    Some(Gpu {
        name: d.name().unwrap_or_else(|_| "unknown".into()),
        vram_total_bytes: mem.total,
        vram_used_bytes: mem.used,
        // NVML reports CUDA cores, not SMs; the SM count comes from the CUDA driver of an
        // opened device, so a CPU run (or a build without `cuda`) has none.
        sm_count: sel.map(|s| s.sm_count),
        compute_capability: cc
            .map(|c| format!("{}.{}", c.major, c.minor))
            .unwrap_or_else(|| "unknown".into()),
        driver: nvml
            .sys_driver_version()
            .unwrap_or_else(|_| "unknown".into()),
        cuda_version: cuda
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_else(|| "unknown".into()),
    })
}

/// GPU memory in use (NVML), or None where no NVIDIA driver is present.
pub fn used_bytes() -> Option<u64> {
    let d = nvml_device(nvml()?, selected().as_ref())?;
    d.memory_info().ok().map(|m| m.used)
}

/// GPU memory NVML attributes to these processes (compute and graphics contexts), summed;
/// None where no NVIDIA driver is present (`modelbench memory`).
pub fn process_bytes(pids: &std::collections::BTreeSet<u32>) -> Option<u64> {
    let d = nvml_device(nvml()?, selected().as_ref())?;
    let mut procs = d.running_compute_processes().ok()?;
    procs.extend(d.running_graphics_processes().unwrap_or_default());
    Some(
        procs
            .iter()
            .filter(|p| pids.contains(&p.pid))
            .filter_map(|p| match p.used_gpu_memory {
                nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
                nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
            })
            .sum(),
    )
}

/// Samples GPU power on a background thread while the timed region runs, and reads the
/// driver's energy counter at each start and stop. Each start/stop pair is a segment (one
/// criterion routine call, or one CLI trial) that brackets only timed work, so prompt
/// building and record writing are not counted; [`PowerMeter::keep_last`] drops the warm-up
/// segments. Without NVML it measures nothing and says why.
pub struct PowerMeter {
    nvml: Option<&'static Nvml>,
    sel: Option<Selected>,
    why_not: String,
    running: Option<Running>,
    segments: Vec<Segment>,
}

struct Running {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<f64>>,
    t0: Instant,
    energy0: Option<u64>,
}

struct Segment {
    watts: Vec<f64>,
    seconds: f64,
    /// Energy from the driver's counter (mJ), where the GPU has one.
    counter_mj: Option<u64>,
    /// Units of work (iterations or tokens) done in the segment.
    items: u64,
}

impl Default for PowerMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl PowerMeter {
    /// A meter for the GPU the run uses (see [`select`]).
    pub fn new() -> PowerMeter {
        let sel = selected();
        let (nvml, why_not) = match nvml() {
            Some(n) => {
                let ok = nvml_device(n, sel.as_ref())
                    .map(|d| d.power_usage().is_ok())
                    .unwrap_or(false);
                if ok {
                    (Some(n), String::new())
                } else {
                    (
                        None,
                        "not available (NVML cannot read this GPU's power)".into(),
                    )
                }
            }
            None => (None, "not available (no NVIDIA driver / NVML)".into()),
        };
        PowerMeter {
            nvml,
            sel,
            why_not,
            running: None,
            segments: Vec::new(),
        }
    }

    /// Whether this meter measures anything.
    pub fn available(&self) -> bool {
        self.nvml.is_some()
    }

    /// Starts a timed segment (no-op when already running or unavailable).
    pub fn start(&mut self) {
        let Some(nvml) = self.nvml else {
            return;
        };
        if self.running.is_some() {
            return;
        }
        let energy0 =
            nvml_device(nvml, self.sel.as_ref()).and_then(|d| d.total_energy_consumption().ok());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sel = self.sel.clone();
        let handle = std::thread::spawn(move || {
            let mut w = Vec::new();
            let Some(d) = nvml_device(nvml, sel.as_ref()) else {
                return w;
            };
            loop {
                if let Ok(mw) = d.power_usage() {
                    w.push(mw as f64 / 1e3);
                }
                if flag.load(Ordering::Relaxed) {
                    return w;
                }
                std::thread::sleep(POWER_SAMPLE_INTERVAL);
            }
        });
        self.running = Some(Running {
            stop,
            handle,
            t0: Instant::now(),
            energy0,
        });
    }

    /// Ends the current segment, which did `items` units of work. Call after the device is
    /// synchronised.
    pub fn stop(&mut self, items: u64) {
        let Some(r) = self.running.take() else {
            return;
        };
        let seconds = r.t0.elapsed().as_secs_f64();
        let energy1 = self
            .nvml
            .and_then(|n| nvml_device(n, self.sel.as_ref()))
            .and_then(|d| d.total_energy_consumption().ok());
        r.stop.store(true, Ordering::Relaxed);
        let watts = r.handle.join().unwrap_or_default();
        let counter_mj = match (r.energy0, energy1) {
            (Some(a), Some(b)) if b >= a => Some(b - a),
            _ => None,
        };
        self.segments.push(Segment {
            watts,
            seconds,
            counter_mj,
            items,
        });
    }

    /// Keeps only the last `n` segments (criterion's measured calls).
    pub fn keep_last(&mut self, n: usize) {
        let drop = self.segments.len().saturating_sub(n);
        self.segments.drain(..drop);
    }

    /// The reading over the kept segments; each item (iteration or trial) of them produced
    /// `tokens_per_item` tokens, the denominator of the energy per token.
    pub fn reading(&mut self, tokens_per_item: u64) -> Power {
        if self.running.is_some() {
            self.stop(0);
        }
        if !self.available() {
            return Power::not_available(&self.why_not);
        }
        reading_of(&self.segments, tokens_per_item)
    }
}

/// Power and energy of measured segments (the arithmetic of [`PowerMeter::reading`]).
fn reading_of(segments: &[Segment], tokens_per_item: u64) -> Power {
    let watts: Vec<f64> = segments
        .iter()
        .flat_map(|s| s.watts.iter().copied())
        .collect();
    if watts.is_empty() {
        return Power::not_available("not available (no power sample was taken)");
    }
    let seconds: f64 = segments.iter().map(|s| s.seconds).sum();
    let tokens = segments.iter().map(|s| s.items).sum::<u64>() * tokens_per_item;
    // The driver's counter where every segment had it; else mean power x time per segment.
    let counter: Option<u64> = segments.iter().map(|s| s.counter_mj).sum();
    let (energy_j, method) = match counter {
        Some(mj) if mj > 0 => (
            mj as f64 / 1e3,
            "NVML: power sampled every 20 ms in the timed region; energy from the driver's total-energy counter",
        ),
        _ => (
            segments
                .iter()
                .filter(|s| !s.watts.is_empty())
                .map(|s| s.watts.iter().sum::<f64>() / s.watts.len() as f64 * s.seconds)
                .sum(),
            "NVML: power sampled every 20 ms in the timed region; energy = mean sampled power x timed seconds (no energy counter on this GPU)",
        ),
    };
    Power {
        method: method.into(),
        samples: watts.len(),
        mean_w: Some(watts.iter().sum::<f64>() / watts.len() as f64),
        max_w: watts.iter().copied().reduce(f64::max),
        timed_s: Some(seconds),
        energy_j: Some(energy_j),
        tokens: Some(tokens),
        j_per_token: (tokens > 0).then(|| energy_j / tokens as f64),
    }
}

impl Drop for PowerMeter {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop.store(true, Ordering::Relaxed);
            let _ = r.handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(watts: &[f64], seconds: f64, counter_mj: Option<u64>, items: u64) -> Segment {
        Segment {
            watts: watts.to_vec(),
            seconds,
            counter_mj,
            items,
        }
    }

    /// Without a sample the time and tokens are null, not 0; the 0 of older records reads
    /// back as None, and a measured reading round-trips.
    #[test]
    fn no_sample_is_null_and_an_old_zero_reads_as_none() {
        let none = Power::not_available("not available (test)");
        let v = serde_json::to_value(&none).unwrap();
        assert_eq!(v["timed_s"], serde_json::Value::Null);
        assert_eq!(v["tokens"], serde_json::Value::Null);
        let mut old = v;
        old["timed_s"] = serde_json::json!(0.0);
        old["tokens"] = serde_json::json!(0);
        let back: Power = serde_json::from_value(old).unwrap();
        assert_eq!((back.timed_s, back.tokens), (None, None));
        let p = reading_of(&[seg(&[100.0], 2.0, None, 2)], 64);
        let back: Power = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!((p.timed_s, p.tokens), (Some(2.0), Some(128)));
    }

    #[test]
    fn energy_from_the_counter_when_every_segment_has_it() {
        let p = reading_of(
            &[
                seg(&[100.0, 300.0], 2.0, Some(500_000), 2),
                seg(&[200.0], 1.0, Some(250_000), 1),
            ],
            64,
        );
        assert_eq!(p.samples, 3);
        assert_eq!(p.mean_w, Some(200.0));
        assert_eq!(p.max_w, Some(300.0));
        assert_eq!(p.energy_j, Some(750.0));
        assert_eq!(p.tokens, Some(3 * 64));
        assert_eq!(p.timed_s, Some(3.0));
        assert!((p.j_per_token.unwrap() - 750.0 / 192.0).abs() < 1e-12);
        assert!(p.method.contains("counter"), "{}", p.method);
    }

    #[test]
    fn energy_integrated_when_a_segment_lacks_the_counter() {
        let p = reading_of(
            &[
                seg(&[100.0, 300.0], 2.0, Some(500_000), 1),
                seg(&[50.0], 4.0, None, 1),
            ],
            10,
        );
        // 200 W x 2 s + 50 W x 4 s
        assert_eq!(p.energy_j, Some(600.0));
        assert_eq!(p.j_per_token, Some(30.0));
        assert!(p.method.contains("mean sampled power"), "{}", p.method);
    }

    #[test]
    fn no_samples_is_not_available_never_a_number() {
        let p = reading_of(&[seg(&[], 1.0, None, 1)], 10);
        assert!(p.method.starts_with("not available"));
        assert_eq!((p.mean_w, p.energy_j, p.j_per_token), (None, None, None));
        assert_eq!(p.describe(), "not available");
    }

    #[test]
    fn a_meter_without_nvml_says_why() {
        let mut m = PowerMeter::new();
        m.start();
        m.stop(1);
        m.keep_last(10);
        let p = m.reading(16);
        if !m.available() {
            assert!(p.method.starts_with("not available"), "{}", p.method);
            assert_eq!((p.mean_w, p.energy_j), (None, None));
        } else {
            assert!(p.samples >= 1 && p.mean_w.unwrap() > 0.0, "{p:?}");
        }
    }
}
