//! How close a result is to the machine's limits: calibration of the machine's memory-read
//! roof (a plain streaming read of RAM, not through candle), candle's attainable GEMV
//! bandwidth and matmul throughput, cached per machine under target/ (keyed by CPU model
//! and flags, threads, RAM, GPU and device).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::device::{sync, DeviceSpec};

/// A measured result may exceed a calibrated peak by this much before it is flagged
/// (the calibration's own run-to-run noise on this machine).
pub const NOISE: f64 = 0.10;

/// Last-level cache size assumed when sysfs does not say.
pub const LLC_FALLBACK_BYTES: u64 = 32 << 20;

/// Method keys of [`Calibration::methods`].
pub const METHOD_MEM_READ: &str = "mem_read";

pub fn method_key(figure: &str, dtype: &str) -> String {
    format!("{figure}.{dtype}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// What the calibration is keyed by: CPU model, hash of the CPU flags, threads, RAM, GPU
    /// and device (see [`cache_key`]).
    pub key: String,
    pub device: String,
    /// The memory roof: a plain streaming read of a buffer far larger than the last-level
    /// cache, GB/s (1e9). Bytes are bytes: the roof of every dtype.
    pub mem_read_gbs: f64,
    /// What candle attains on a decode-shaped GEMV (1 x K times K x N), GB/s, per dtype: a
    /// second figure, not the roof.
    pub candle_gemv_gbs: BTreeMap<String, f64>,
    /// Large square matmul throughput through candle (the gemm crate on CPU: the best GEMM
    /// in this binary), GFLOP/s, per dtype.
    pub matmul_gflops: BTreeMap<String, f64>,
    /// How each figure was measured: `mem_read`, `candle_gemv.<dtype>`, `matmul.<dtype>`.
    pub methods: BTreeMap<String, String>,
    pub measured_at: String,
}

impl Calibration {
    /// The memory roof, named: e.g. "31.2 GB/s streaming read (rayon, 2 threads, 1 GiB ...)".
    pub fn memory_roof(&self) -> String {
        format!(
            "{:.1} GB/s {}",
            self.mem_read_gbs,
            self.methods
                .get(METHOD_MEM_READ)
                .map(String::as_str)
                .unwrap_or("method not recorded")
        )
    }

    /// The compute roof of `dtype`, named, if calibrated.
    pub fn compute_roof(&self, dtype: &str) -> Option<String> {
        let g = self.matmul_gflops.get(dtype)?;
        let m = self
            .methods
            .get(&method_key("matmul", dtype))
            .map(String::as_str)
            .unwrap_or("method not recorded");
        Some(format!("{g:.1} GFLOP/s {m}"))
    }

    /// Where and when: "(<date>, <cache path>)".
    pub fn provenance(&self) -> String {
        format!("({}, {})", self.measured_at, machine_json().display())
    }
}

pub fn machine_json() -> PathBuf {
    crate::util::fsio::target_dir().join("modelbench-machine.json")
}

/// 64-bit FNV-1a: a hash that is stable across Rust releases (unlike `DefaultHasher`).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The cache key of a machine and device: a different CPU (model or flags), thread count,
/// RAM size, GPU or device never shares another's roofs.
pub fn cache_key(
    cpu: &str,
    cpu_flags: &str,
    threads: usize,
    ram_bytes: Option<u64>,
    gpu: Option<&str>,
    device: &str,
) -> String {
    let mut flags: Vec<&str> = cpu_flags.split_whitespace().collect();
    flags.sort_unstable();
    let ram = ram_bytes
        .map(|b| format!("{:.0} GiB", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_else(|| "RAM ?".into());
    format!(
        "{cpu} | flags {:016x} | x{threads} | {ram} | {} | {device}",
        fnv1a(&flags.join(" ")),
        gpu.unwrap_or("no-gpu")
    )
}

/// The CPU flags line of /proc/cpuinfo (`flags` on x86, `Features` on arm), empty if none.
pub fn cpu_flags(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn key(spec: DeviceSpec) -> String {
    let hw = crate::measure::hardware::hardware();
    let flags = cpu_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    cache_key(
        &hw.cpu,
        &flags,
        hw.cores,
        hw.ram_bytes,
        hw.gpu.as_ref().map(|g| g.name.as_str()),
        &spec.to_string(),
    )
}

/// A sysfs cache size ("32768K", "1M", "512"), in bytes.
pub fn parse_cache_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

/// The largest level-3 cache among `(level, size)` pairs of sysfs, if any.
pub fn llc_from(entries: &[(String, String)]) -> Option<u64> {
    entries
        .iter()
        .filter(|(level, _)| level.trim() == "3")
        .filter_map(|(_, size)| parse_cache_size(size))
        .max()
}

/// The last-level (L3) cache of cpu0 from sysfs, or [`LLC_FALLBACK_BYTES`].
pub fn llc_bytes() -> (u64, bool) {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let entries: Vec<(String, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .filter_map(|e| {
            let p = e.path();
            Some((
                std::fs::read_to_string(p.join("level")).ok()?,
                std::fs::read_to_string(p.join("size")).ok()?,
            ))
        })
        .collect();
    match llc_from(&entries) {
        Some(b) => (b, true),
        None => (LLC_FALLBACK_BYTES, false),
    }
}

/// The streaming buffer: max(1 GiB, 16 x LLC), at most a quarter of RAM.
pub fn stream_buffer_bytes(llc: u64, ram: Option<u64>) -> u64 {
    let want = (1u64 << 30).max(16 * llc);
    match ram {
        Some(r) => want.min((r / 4).max(16 * llc)),
        None => want,
    }
}

/// Sums a chunk with eight independent accumulators (no loop-carried dependency between
/// lanes, no bounds checks). Portable fallback of [`sum_chunk`].
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(never)]
fn sum_chunk_scalar(c: &[u64]) -> u64 {
    let mut a = [0u64; 8];
    let mut it = c.chunks_exact(8);
    for b in &mut it {
        let b: &[u64; 8] = b.try_into().expect("chunks_exact(8)");
        for (acc, x) in a.iter_mut().zip(b) {
            *acc = acc.wrapping_add(*x);
        }
    }
    let tail = it.remainder().iter().fold(0u64, |s, x| s.wrapping_add(*x));
    a.iter().fold(tail, |s, x| s.wrapping_add(*x))
}

/// Sums a chunk with four 128-bit SSE2 accumulators (64 bytes an iteration). Explicit SIMD,
/// so the kernel is as fast in the dev profile (opt-level 1, no loop vectoriser) as in
/// release: fewer instructions per cache line keep more lines in flight.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn sum_chunk(c: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut it = c.chunks_exact(8);
    // SAFETY: SSE2 is part of the x86_64 baseline; each iteration reads the four 16-byte
    // halves of an in-bounds 8 x u64 chunk with unaligned loads.
    let lanes = unsafe {
        let mut a = [_mm_setzero_si128(); 4];
        for x in &mut it {
            let p = x.as_ptr() as *const __m128i;
            a[0] = _mm_add_epi64(a[0], _mm_loadu_si128(p));
            a[1] = _mm_add_epi64(a[1], _mm_loadu_si128(p.add(1)));
            a[2] = _mm_add_epi64(a[2], _mm_loadu_si128(p.add(2)));
            a[3] = _mm_add_epi64(a[3], _mm_loadu_si128(p.add(3)));
        }
        let s = _mm_add_epi64(_mm_add_epi64(a[0], a[1]), _mm_add_epi64(a[2], a[3]));
        let mut out = [0u64; 2];
        _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s);
        out
    };
    let tail = it.remainder().iter().fold(0u64, |s, x| s.wrapping_add(*x));
    tail.wrapping_add(lanes[0]).wrapping_add(lanes[1])
}

#[cfg(not(target_arch = "x86_64"))]
fn sum_chunk(c: &[u64]) -> u64 {
    sum_chunk_scalar(c)
}

/// The streaming memory-read roof: rayon's pool (contiguous 8 MiB chunks, balanced over its
/// threads by work stealing, so one descheduled thread does not hold a pass up) sums a
/// buffer far larger than the last-level cache; best of `passes` after a first-touch write
/// and a warm-up read. Returns (GB/s, method text).
pub fn streaming_read(passes: usize) -> Result<(f64, String)> {
    let (llc, from_sysfs) = llc_bytes();
    let ram = crate::measure::hardware::hardware().ram_bytes;
    let bytes = stream_buffer_bytes(llc, ram);
    let n = (bytes / 8) as usize;
    let threads = rayon::current_num_threads().max(1);
    let chunk = (1usize << 20).min(n.div_ceil(threads).div_ceil(8) * 8); // u64s: 8 MiB
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(n)
        .map_err(|e| Error::Measure(format!("streaming buffer of {bytes} bytes: {e}")))?;
    // First touch: every page is written (in parallel, in the chunks the passes read), so no
    // pass reads the kernel's shared zero page.
    buf.resize(n, 0);
    buf.par_chunks_mut(chunk).enumerate().for_each(|(t, c)| {
        for (i, x) in c.iter_mut().enumerate() {
            *x = (t * chunk + i) as u64;
        }
    });
    let pass = |buf: &[u64]| {
        let t = Instant::now();
        let s = buf
            .par_chunks(chunk)
            .map(sum_chunk)
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        t.elapsed().as_secs_f64()
    };
    pass(&buf); // warm-up
    let best = (0..passes.max(1))
        .map(|_| pass(&buf))
        .fold(f64::MAX, f64::min);
    let gbs = (n * 8) as f64 / best / 1e9;
    let kernel = if cfg!(target_arch = "x86_64") {
        "SSE2 u64 sums"
    } else {
        "u64 sums"
    };
    let method = format!(
        "streaming read (rayon, {threads} threads, 8 MiB chunks, {} buffer = max(1 GiB, 16 x {} LLC{}), {kernel}, best of {passes} after a first-touch and a warm-up pass; not through candle)",
        human(n as u64 * 8),
        human(llc),
        if from_sysfs { "" } else { " assumed" },
    );
    Ok((gbs, method))
}

fn human(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{} KiB", b >> 10)
    }
}

/// The device's own memory roof where it is not the CPU: a large device-to-device copy into a
/// buffer allocated beforehand (read + write bytes counted), best of `passes`. On CUDA it is
/// the driver's `cuMemcpyDtoD` (what `cudaMemcpy` device-to-device reaches), not
/// `Tensor::copy`, whose time includes allocating the destination: on an H200 that read
/// 906 GB/s, below what candle's own bf16 GEMVs stream (2290 GB/s), so it was no roof.
fn device_copy(dev: &Device, passes: usize) -> Result<(f64, String)> {
    let n = 256usize << 20; // 1 GiB of f32
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = dev {
        let t = candle_core::Tensor::ones(n, DType::F32, dev)?;
        let (st, _) = t.storage_and_layout();
        let candle_core::Storage::Cuda(c) = &*st else {
            unreachable!("a tensor made on a CUDA device is stored there")
        };
        let src = c.as_cuda_slice::<f32>()?;
        let mut dst = d.alloc_zeros::<f32>(n)?;
        let secs = best_of(passes, dev, || Ok(d.memcpy_dtod(src, &mut dst)?))?;
        return Ok((
            2.0 * (n * 4) as f64 / secs / 1e9,
            format!("device-to-device copy of a 1 GiB buffer into one allocated beforehand (cuMemcpyDtoD; read + write bytes), best of {passes}"),
        ));
    }
    let t = candle_core::Tensor::ones(n, DType::F32, dev)?;
    let secs = best_of(passes, dev, || {
        std::hint::black_box(t.copy()?);
        Ok(())
    })?;
    Ok((
        2.0 * (n * 4) as f64 / secs / 1e9,
        format!("on-device copy of a 1 GiB buffer through candle (read + write bytes; the destination allocated in the timed region), best of {passes}"),
    ))
}

fn read_all() -> BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(machine_json())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The cached calibration of this machine and device, if any (entries of an older format
/// do not parse and are ignored: re-measure).
pub fn cached(spec: DeviceSpec) -> Option<Calibration> {
    serde_json::from_value(read_all().remove(&key(spec))?).ok()
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

/// Measures the memory roof, candle's GEMV bandwidth and matmul throughput for `dtypes`,
/// merges them into the cache under target/, and returns the calibration.
pub fn calibrate(spec: DeviceSpec, dtypes: &[DType]) -> Result<Calibration> {
    let dev = spec.open()?;
    let (mem_read_gbs, mem_method) = match spec {
        DeviceSpec::Cpu => streaming_read(5)?,
        DeviceSpec::Cuda(_) => device_copy(&dev, 5)?,
    };
    let mut methods = BTreeMap::from([(METHOD_MEM_READ.to_string(), mem_method)]);
    let mut bw = BTreeMap::new();
    let mut mm = BTreeMap::new();
    let gemm = match spec {
        DeviceSpec::Cpu => "gemm crate",
        DeviceSpec::Cuda(_) => "cuBLAS",
    };
    for &dt in dtypes {
        let d = dt.as_str();
        // Eight distinct 8192 x 2048 Linear weights (512 MiB in f32, far beyond any cache),
        // each used as a decode GEMV is: x (1 x 2048) times the transposed weight.
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
        let bytes = k * count * n * dt.size_in_bytes();
        bw.insert(d.to_string(), bytes as f64 / secs / 1e9);
        methods.insert(
            method_key("candle_gemv", d),
            format!(
                "candle-attainable: GEMVs over eight {d} 8192x2048 Linear weights ({}), best of 5; what candle reaches, not the machine's roof",
                human(bytes as u64)
            ),
        );
        // bf16 on CPU widens on every call (slow): a smaller square keeps this under a minute.
        // A GPU needs a large square to fill its SMs (2048^3 is launch-bound on an H100).
        let s = match spec {
            DeviceSpec::Cuda(_) => 8192,
            DeviceSpec::Cpu if dt == DType::BF16 => 1024,
            DeviceSpec::Cpu => 2048,
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
        mm.insert(d.to_string(), 2.0 * (s * s * s) as f64 / secs / 1e9);
        methods.insert(
            method_key("matmul", d),
            format!("candle matmul {d} {s}^3 on {spec} ({gemm}: the best GEMM in this binary), best of 3; no theoretical peak"),
        );
    }
    let cal = Calibration {
        key: key(spec),
        device: spec.to_string(),
        mem_read_gbs,
        candle_gemv_gbs: bw,
        matmul_gflops: mm,
        methods,
        measured_at: crate::util::time::now_rfc3339(),
    };
    // Entries that do not parse (an older format) are dropped; this key's dtypes merge.
    let mut all: BTreeMap<String, Calibration> = read_all()
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
        .collect();
    let merged = match all.remove(&cal.key) {
        Some(mut old) => {
            old.candle_gemv_gbs.extend(cal.candle_gemv_gbs.clone());
            old.matmul_gflops.extend(cal.matmul_gflops.clone());
            old.methods.extend(cal.methods.clone());
            Calibration {
                candle_gemv_gbs: old.candle_gemv_gbs,
                matmul_gflops: old.matmul_gflops,
                methods: old.methods,
                ..cal
            }
        }
        None => cal,
    };
    all.insert(merged.key.clone(), merged.clone());
    crate::util::fsio::atomic_write(
        &machine_json(),
        serde_json::to_string_pretty(&all)
            .map_err(|e| Error::Measure(e.to_string()))?
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
    /// Percent of the streaming memory-read roof / candle's matmul peak (None without
    /// calibration).
    pub mem_bw_util_pct: Option<f64>,
    pub compute_util_pct: Option<f64>,
    /// Which roofs the percentages use, when and where they were measured.
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
        calibration: match cal.and_then(|c| Some((c.compute_roof(dtype)?, c))) {
            Some((roof, c)) => format!("compute: {roof} {}", c.provenance()),
            None => format!("none for {dtype}: run `modelbench calibrate`"),
        },
        flag: pct
            .filter(|p| *p > 100.0 * (1.0 + NOISE))
            .map(|_| "above the calibrated matmul peak by more than its noise".to_string()),
        ..Roofline::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_differs_by_flags_threads_ram_gpu_and_device() {
        let k = |flags: &str, threads, ram, gpu, dev| {
            cache_key("AMD EPYC", flags, threads, ram, gpu, dev)
        };
        let base = k("sse avx2 fma", 2, Some(24 << 30), None, "cpu");
        // flag order is not a difference; a flag is
        assert_eq!(base, k("fma avx2  sse", 2, Some(24 << 30), None, "cpu"));
        assert_ne!(
            base,
            k("sse avx2 fma avx512f", 2, Some(24 << 30), None, "cpu")
        );
        assert_ne!(base, k("sse avx2 fma", 4, Some(24 << 30), None, "cpu"));
        assert_ne!(base, k("sse avx2 fma", 2, Some(48 << 30), None, "cpu"));
        assert_ne!(
            base,
            k("sse avx2 fma", 2, Some(24 << 30), Some("H100"), "cpu")
        );
        assert_ne!(base, k("sse avx2 fma", 2, Some(24 << 30), None, "cuda:0"));
        assert_ne!(
            base,
            cache_key("Intel Xeon", "sse avx2 fma", 2, Some(24 << 30), None, "cpu")
        );
        assert!(base.starts_with("AMD EPYC | flags ") && base.ends_with("| no-gpu | cpu"));
    }

    #[test]
    fn cpu_flags_are_read_from_cpuinfo() {
        let info = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx2\nbugs\t: y\n";
        assert_eq!(cpu_flags(info), "fpu sse avx2");
        assert_eq!(cpu_flags("Features\t: fp asimd\n"), "fp asimd");
        assert_eq!(cpu_flags(""), "");
    }

    #[test]
    fn llc_is_parsed_from_sysfs_sizes() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("2G"), Some(2 << 30));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("big"), None);
        let e = |l: &str, s: &str| (l.to_string(), s.to_string());
        let entries = [e("1\n", "32K\n"), e("2\n", "512K\n"), e("3\n", "32768K\n")];
        assert_eq!(llc_from(&entries), Some(32 << 20));
        assert_eq!(llc_from(&entries[..2]), None);
        // the streaming buffer is far beyond the LLC
        assert_eq!(stream_buffer_bytes(32 << 20, Some(24 << 30)), 1 << 30);
        assert_eq!(stream_buffer_bytes(256 << 20, None), 4 << 30);
        assert_eq!(stream_buffer_bytes(256 << 20, Some(8 << 30)), 4 << 30);
        assert!(stream_buffer_bytes(LLC_FALLBACK_BYTES, Some(1 << 30)) >= 16 * LLC_FALLBACK_BYTES);
    }

    #[test]
    fn old_cache_entries_do_not_parse() {
        let old = r#"{"fingerprint":"x","device":"cpu","mem_read_gbs":{"f32":1.0},"matmul_gflops":{},"measured_at":"t","method":"m"}"#;
        assert!(serde_json::from_str::<Calibration>(old).is_err());
    }

    #[test]
    fn sum_chunk_sums_with_a_tail() {
        let v: Vec<u64> = (1..=21).collect();
        assert_eq!(sum_chunk(&v), 231);
        assert_eq!(sum_chunk(&[]), 0);
        assert_eq!(sum_chunk_scalar(&v), 231);
        let big: Vec<u64> = (0..1003).map(|i| u64::MAX - i).collect();
        assert_eq!(sum_chunk(&big), sum_chunk_scalar(&big));
    }
}
