//! How close a result is to the machine's limits: calibration of memory-read bandwidth and
//! matmul throughput (cached per hardware fingerprint in target-reports/machine.json), and the
//! work a model does per token, from its config and checkpoint layout (not guessed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::device::{sync, DeviceSpec};

/// A measured result may exceed a calibrated peak by this much before it is flagged
/// (the calibration's own run-to-run noise on this machine).
pub const NOISE: f64 = 0.10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub fingerprint: String,
    pub device: String,
    /// Sustained read bandwidth through a candle GEMV (1 x K times K x N), GB/s, per dtype.
    pub mem_read_gbs: BTreeMap<String, f64>,
    /// Large square matmul throughput, GFLOP/s, per dtype.
    pub matmul_gflops: BTreeMap<String, f64>,
    pub measured_at: String,
    pub method: String,
}

pub fn machine_json() -> PathBuf {
    crate::util::fsio::target_dir().join("modelbench-machine.json")
}

fn key(spec: DeviceSpec) -> String {
    format!(
        "{} | {}",
        crate::measure::hardware::hardware().fingerprint(),
        spec
    )
}

/// The cached calibration of this machine and device, if any.
pub fn cached(spec: DeviceSpec) -> Option<Calibration> {
    let text = std::fs::read_to_string(machine_json()).ok()?;
    let all: BTreeMap<String, Calibration> = serde_json::from_str(&text).ok()?;
    all.get(&key(spec)).cloned()
}

fn best_of<F: FnMut() -> Result<()>>(n: usize, dev: &Device, mut f: F) -> Result<f64> {
    f()?; // warm-up
    sync(dev)?;
    let mut best = f64::MAX;
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        sync(dev)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Measures read bandwidth and matmul throughput for `dtypes`, merges them into
/// machine.json, and returns the calibration.
pub fn calibrate(spec: DeviceSpec, dtypes: &[DType]) -> Result<Calibration> {
    let dev = spec.open()?;
    let mut bw = BTreeMap::new();
    let mut mm = BTreeMap::new();
    for &dt in dtypes {
        // Eight distinct 8192 x 2048 Linear weights (512 MiB in f32, far beyond any cache),
        // each used as a decode GEMV is: x (1 x 2048) times the transposed weight. A single
        // huge GEMV reaches less than a model's decode does on this CPU (16 vs 24 GB/s).
        let (k, n, count) = (2048usize, 8192usize, 8usize);
        let ws = (0..count)
            .map(|i| {
                crate::util::fill::seeded_tensor(
                    &(n, k).into(),
                    i as u64,
                    "cal-w",
                    candle_nn::Init::Const(0.5),
                    dt,
                    &dev,
                )
                .and_then(|w| w.t())
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let x = crate::util::fill::seeded_tensor(
            &(1, k).into(),
            2,
            "cal-x",
            candle_nn::Init::Const(1.0),
            dt,
            &dev,
        )?;
        let secs = best_of(5, &dev, || {
            for w in &ws {
                std::hint::black_box(x.matmul(w)?);
            }
            Ok(())
        })?;
        let k = k * count;
        bw.insert(
            dt.as_str().to_string(),
            (k * n * dt.size_in_bytes()) as f64 / secs / 1e9,
        );
        // bf16 on CPU widens on every call (slow): a smaller square keeps this under a minute.
        let s = if dt == DType::BF16 && spec == DeviceSpec::Cpu {
            1024
        } else {
            2048
        };
        let square = |seed: u64, name: &str| {
            let hint = candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            };
            crate::util::fill::seeded_tensor(&(s, s).into(), seed, name, hint, dt, &dev)
        };
        let (a, b) = (square(3, "cal-a")?, square(4, "cal-b")?);
        let secs = best_of(3, &dev, || {
            std::hint::black_box(a.matmul(&b)?);
            Ok(())
        })?;
        mm.insert(
            dt.as_str().to_string(),
            2.0 * (s * s * s) as f64 / secs / 1e9,
        );
    }
    let cal = Calibration {
        fingerprint: crate::measure::hardware::hardware().fingerprint(),
        device: spec.to_string(),
        mem_read_gbs: bw,
        matmul_gflops: mm,
        measured_at: crate::util::time::now_rfc3339(),
        method: "best of 5 passes of GEMVs over eight 8192x2048 Linear weights (512 MiB in f32) for bandwidth; best of 3 square matmuls (2048, or 1024 for CPU bf16) for FLOP/s; through candle on the device".into(),
    };
    let path = machine_json();
    let mut all: BTreeMap<String, Calibration> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let entry = all.entry(key(spec)).or_insert_with(|| cal.clone());
    entry.mem_read_gbs.extend(cal.mem_read_gbs.clone());
    entry.matmul_gflops.extend(cal.matmul_gflops.clone());
    entry.measured_at = cal.measured_at.clone();
    let merged = entry.clone();
    crate::util::fsio::atomic_write(
        &path,
        serde_json::to_string_pretty(&all)
            .map_err(|e| Error::Report(e.to_string()))?
            .as_bytes(),
    )?;
    Ok(merged)
}

/// Roofline figures of one generation record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    /// Mean bytes read per decode token over the decoded positions.
    pub decode_bytes_per_token: f64,
    pub prefill_flops: f64,
    /// None when the decode rate was not measured (one-token generations).
    pub decode_gbs: Option<f64>,
    /// None when the prefill time was not measured.
    pub prefill_gflops: Option<f64>,
    /// Percent of the calibrated read bandwidth / matmul peak (None without calibration).
    pub mem_bw_util_pct: Option<f64>,
    pub compute_util_pct: Option<f64>,
    pub calibration: String,
    /// Set when a figure exceeds its calibrated peak by more than the noise allowance.
    pub flag: Option<String>,
}

/// Compute utilisation of a FLOP-counted workload (MoE block, PSANN forward): achieved
/// GFLOP/s and its share of the calibrated matmul peak for `dtype`.
pub fn compute_only(
    flops_per_token: f64,
    tok_s: Option<f64>,
    dtype: &str,
    cal: Option<&Calibration>,
) -> Roofline {
    let gflops = tok_s.map(|t| flops_per_token * t / 1e9);
    let peak = cal.and_then(|c| c.matmul_gflops.get(dtype)).copied();
    let pct = peak.zip(gflops).map(|(p, g)| 100.0 * g / p);
    Roofline {
        prefill_flops: flops_per_token,
        prefill_gflops: gflops,
        compute_util_pct: pct,
        calibration: match (cal, peak) {
            (Some(c), Some(_)) => format!("{} ({})", c.measured_at, machine_json().display()),
            _ => format!("none for {dtype}: run `modelbench calibrate`"),
        },
        flag: pct
            .filter(|p| *p > 100.0 * (1.0 + NOISE))
            .map(|_| "above the calibrated matmul peak by more than its noise".to_string()),
        ..Roofline::default()
    }
}
