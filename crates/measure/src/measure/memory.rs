//! Host memory accounting: a counting global allocator (current and peak live heap bytes,
//! with a resettable peak), and the process's resident set from /proc where available.
//! candle's CPU tensors are plain `Vec`s, so the counted heap matches RSS for CPU models
//! (candle-facts.md: 4746 MiB counted vs 4752 MiB RSS for Llama-1B f32).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Install in a binary or bench with
/// `#[global_allocator] static A: modelbench::measure::memory::CountingAlloc = modelbench::measure::memory::CountingAlloc;`
pub struct CountingAlloc;

#[inline]
fn grow(n: usize) {
    let now = CURRENT.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: defers to the system allocator and only adds counting.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grow(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grow(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        CURRENT.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                grow(new - l.size());
            } else {
                CURRENT.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

/// Live heap bytes, or None when [`CountingAlloc`] is not the global allocator.
pub fn heap_current() -> Option<u64> {
    let c = CURRENT.load(Relaxed);
    (c > 0).then_some(c as u64)
}

/// Highest live heap since the last [`reset_peak`] (None without the counting allocator).
pub fn heap_peak() -> Option<u64> {
    let p = PEAK.load(Relaxed);
    (p > 0).then_some(p as u64)
}

/// Starts a new peak window at the current live heap.
pub fn reset_peak() {
    PEAK.store(CURRENT.load(Relaxed), Relaxed);
}

/// (resident bytes now, resident high-water mark) from /proc/self/status (Linux only).
pub fn rss() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Hands the allocator's free memory back to the kernel (glibc's `malloc_trim(0)`; a no-op
/// elsewhere), so the resident set that follows counts live memory only: a phase measured
/// after another that freed memory would otherwise reuse those pages unseen and look
/// smaller than it is.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes a padding size and only releases free memory.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Resets the kernel's resident high-water mark (Linux >= 4.0), so [`rss`] reports the peak
/// of the phase that follows. Returns false where that is not possible.
pub fn reset_rss_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Device memory of the pool candle's CUDA backend allocates from (cudarc allocates with
/// `cuMemAllocAsync` from the device's current memory pool where the driver supports it):
/// `(in use now, high-water mark since the last [`reset_device_peak`])`, exact and in bytes.
/// None on CPU, in a binary built without CUDA, or where the driver has no memory pools
/// (then candle allocates with plain `cuMemAlloc`, which no pool counts). cuBLAS workspaces
/// and the CUDA context are outside the pool and not counted.
pub fn device_pool(dev: &candle_core::Device) -> Option<(u64, u64)> {
    cuda_pool::read(dev)
}

/// Starts a new device-pool high-water window (false where [`device_pool`] is None).
pub fn reset_device_peak(dev: &candle_core::Device) -> bool {
    cuda_pool::reset_high(dev)
}

/// Peak device-pool bytes in use during `f` above those in use before it (None where
/// [`device_pool`] is None). The device is synchronized before and after `f`.
pub fn device_peak_during<T, E: From<crate::error::Error>>(
    dev: &candle_core::Device,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<(T, Option<u64>), E> {
    crate::measure::device::sync(dev)?;
    let before = device_pool(dev).map(|(cur, _)| cur);
    let reset = reset_device_peak(dev);
    let out = f()?;
    crate::measure::device::sync(dev)?;
    let peak = match (before, reset, device_pool(dev)) {
        (Some(b), true, Some((_, high))) => Some(high.max(b) - b),
        _ => None,
    };
    Ok((out, peak))
}

#[cfg(feature = "cuda")]
mod cuda_pool {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use sys::CUmemPool_attribute as A;

    fn pool(dev: &candle_core::Device) -> Option<sys::CUmemoryPool> {
        let candle_core::Device::Cuda(d) = dev else {
            return None;
        };
        let stream = d.cuda_stream();
        let ctx = stream.context();
        if !ctx.has_async_alloc() {
            return None;
        }
        ctx.bind_to_thread().ok()?;
        // SAFETY: the device handle comes from a live context bound to this thread.
        unsafe { result::device::get_mem_pool(ctx.cu_device()) }.ok()
    }

    fn get(pool: sys::CUmemoryPool, a: A) -> Option<u64> {
        let mut v: u64 = 0;
        // SAFETY: both USED_MEM attributes are cuuint64_t, written into `v`.
        unsafe { result::mem_pool::get_attribute(pool, a, (&mut v as *mut u64).cast()) }.ok()?;
        Some(v)
    }

    pub fn read(dev: &candle_core::Device) -> Option<(u64, u64)> {
        let p = pool(dev)?;
        Some((
            get(p, A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            get(p, A::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        ))
    }

    pub fn reset_high(dev: &candle_core::Device) -> bool {
        let Some(p) = pool(dev) else {
            return false;
        };
        let mut zero: u64 = 0;
        // SAFETY: USED_MEM_HIGH is cuuint64_t and may only be set to 0 (a reset).
        unsafe {
            result::mem_pool::set_attribute(
                p,
                A::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut zero as *mut u64).cast(),
            )
        }
        .is_ok()
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda_pool {
    pub fn read(_dev: &candle_core::Device) -> Option<(u64, u64)> {
        None
    }
    pub fn reset_high(_dev: &candle_core::Device) -> bool {
        false
    }
}

/// Memory the kernel says can be allocated without swapping (`MemAvailable` of
/// /proc/meminfo); None where there is no /proc.
pub fn available_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&s)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Free device memory of the selected GPU (NVML: total - used); None without NVML.
pub fn device_available_bytes() -> Option<u64> {
    let g = crate::measure::gpu::facts()?;
    let used = crate::measure::gpu::used_bytes()?;
    Some(g.vram_total_bytes.saturating_sub(used))
}

/// glibc's tunable that makes malloc ask for transparent huge pages (`madvise(MADV_HUGEPAGE)`
/// on its heap and mmap'd chunks; glibc 2.35 and later, older ones ignore it). Measured on the
/// 2-core EPYC VM (issue 64, and docs/verdicts.md "Huge pages for every timed process"):
/// without it each process of one binary draws a speed at start and keeps it for its life
/// (the f32 Llama fixture decoded 3.7 to 5.2 ms a token in four workers; sd of a block's mean
/// log ratio 0.25); with it, 2.8-3.4 ms and 0.016-0.027.
pub const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// The knob that turns huge pages off (`0`, `false`, `no`, `off`); the knob table
/// (config::knobs) declares it, [`reexec_with_huge_pages`] reads it before anything else runs.
pub const HUGE_PAGES_KNOB: &str = "MODELBENCH_HUGE_PAGES";

/// Whether a value of [`HUGE_PAGES_KNOB`] turns huge pages off.
pub fn huge_pages_knob_off(v: Option<&str>) -> bool {
    matches!(
        v.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("0" | "false" | "no" | "off")
    )
}

/// `GLIBC_TUNABLES` with [`HUGE_PAGES_TUNABLE`] added to what it held (tunables are joined
/// by `:`).
pub fn tunables_with_huge_pages(existing: Option<&str>) -> String {
    match existing {
        Some(v) if !v.is_empty() => format!("{v}:{HUGE_PAGES_TUNABLE}"),
        _ => HUGE_PAGES_TUNABLE.to_string(),
    }
}

/// `GLIBC_TUNABLES` without any `glibc.malloc.hugetlb` setting (None: nothing is left).
pub fn tunables_without_huge_pages(existing: &str) -> Option<String> {
    let kept: Vec<&str> = existing
        .split(':')
        .filter(|t| !t.is_empty() && !t.starts_with("glibc.malloc.hugetlb="))
        .collect();
    (!kept.is_empty()).then(|| kept.join(":"))
}

/// Whether `GLIBC_TUNABLES` asks malloc for huge pages (`glibc.malloc.hugetlb=1` or `=2`).
pub fn tunables_ask_huge_pages(tunables: &str) -> bool {
    tunables
        .split(':')
        .any(|t| t.starts_with("glibc.malloc.hugetlb=") && !t.ends_with("=0"))
}

/// The kernel's transparent-huge-page mode (`always`, `madvise` or `never`: the bracketed
/// word of /sys/kernel/mm/transparent_hugepage/enabled); None where there is no such file.
pub fn thp_mode() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    parse_thp_mode(&s)
}

fn parse_thp_mode(s: &str) -> Option<String> {
    let (_, rest) = s.split_once('[')?;
    let (mode, _) = rest.split_once(']')?;
    Some(mode.to_string())
}

/// Restarts this process with [`HUGE_PAGES_TUNABLE`] in its environment, as the first thing
/// `main` does (the CLI and every bench), so every timed process of the suite allocates its
/// weights, KV cache and activations in huge pages: glibc reads its tunables once, at start,
/// so the process must begin with them. Nothing happens when `GLIBC_TUNABLES` already sets
/// `glibc.malloc.hugetlb`, when [`HUGE_PAGES_KNOB`] is off, when the kernel's THP mode is
/// `never` or unknown (nothing to gain), or off Linux. The same pid goes on (exec), with the
/// same arguments; should exec fail, the process goes on without huge pages and says so.
pub fn reexec_with_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        if huge_pages_knob_off(std::env::var(HUGE_PAGES_KNOB).ok().as_deref()) {
            return;
        }
        let existing = std::env::var("GLIBC_TUNABLES").ok();
        if existing
            .as_deref()
            .is_some_and(|t| t.split(':').any(|t| t.starts_with("glibc.malloc.hugetlb=")))
        {
            return;
        }
        if !matches!(thp_mode().as_deref(), Some("always" | "madvise")) {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut c = std::process::Command::new(exe);
        if let Some(a0) = args.next() {
            c.arg0(a0);
        }
        let err = c
            .args(args)
            .env(
                "GLIBC_TUNABLES",
                tunables_with_huge_pages(existing.as_deref()),
            )
            .exec();
        eprintln!(
            "warning: could not restart with {HUGE_PAGES_TUNABLE} ({err}); running without huge pages"
        );
    }
}

/// This process's huge-page setting as records store it (`Build::huge_pages`): `on` when
/// its `GLIBC_TUNABLES` asks malloc for huge pages and the kernel grants them (THP `always` or
/// `madvise`), else `off`; with the kernel's mode, e.g. `on (THP madvise)`.
pub fn huge_pages_setting() -> String {
    let asked = std::env::var("GLIBC_TUNABLES")
        .ok()
        .is_some_and(|t| tunables_ask_huge_pages(&t));
    match thp_mode() {
        Some(m) => {
            let on = asked && (m == "always" || m == "madvise");
            format!("{} (THP {m})", if on { "on" } else { "off" })
        }
        None => "off (no THP)".to_string(),
    }
}

/// The anonymous memory of process `pid` backed by transparent huge pages, and all of it,
/// in bytes (Linux's /proc/PID/smaps_rollup; None where unreadable).
pub fn huge_pages_of(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        let l = s.lines().find(|l| l.starts_with(key))?;
        l[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("AnonHugePages:")?, kb("Anonymous:")?))
}

/// Asks the kernel to back this process's anonymous memory with transparent huge pages now:
/// `madvise(MADV_COLLAPSE)` (Linux 6.1+; synchronous, compacting memory as it needs, whatever
/// THP's `defrag` setting) on the 2 MiB-aligned part of every private writable anonymous
/// mapping (the heap included, the stack not). A fault that finds no free 2 MiB page gets 4 KiB
/// pages, so whether a process got huge pages was a draw (the AVX-512 VM of 2026-11-29: about
/// half the paired workers, right after a build); after this call both workers of a pair have
/// them where the kernel can make them. Returns how many mappings it asked for and how many
/// the kernel refused (an older kernel refuses all); off Linux, (0, 0).
pub fn collapse_huge_pages() -> (usize, usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return (0, 0);
        };
        let (mut asked, mut refused) = (0, 0);
        for l in maps.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (Some(range), Some(perms), Some(inode)) = (f.first(), f.get(1), f.get(4)) else {
                continue;
            };
            let path = f.get(5).copied();
            let anonymous = *inode == "0" && path.is_none_or(|p| p == "[heap]");
            if !anonymous || !perms.starts_with("rw") || !perms.ends_with('p') {
                continue;
            }
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            let (start, end) = (a.div_ceil(HUGE) * HUGE, b / HUGE * HUGE);
            if end <= start {
                continue;
            }
            asked += 1;
            // SAFETY: advice on this process's own mapped, private anonymous memory; the
            // kernel copies the pages into huge ones and leaves their contents as they were.
            let rc = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_COLLAPSE)
            };
            refused += usize::from(rc != 0);
        }
        (asked, refused)
    }
    #[cfg(not(target_os = "linux"))]
    {
        (0, 0)
    }
}

/// Whether a reading of [`huge_pages_of`] has most of the anonymous memory in huge pages
/// (over half); None where it is unreadable or the process has none.
pub fn mostly_huge(reading: Option<(u64, u64)>) -> Option<bool> {
    reading
        .filter(|&(_, anon)| anon > 0)
        .map(|(huge, anon)| 2 * huge > anon)
}

/// Two processes that differ in huge pages: one with most of its memory in them, the other
/// not (False where either reading is missing).
pub fn unequal_huge(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> bool {
    matches!((mostly_huge(a), mostly_huge(b)), (Some(x), Some(y)) if x != y)
}

#[cfg(test)]
mod huge_pages_tests {
    use super::*;

    /// A process holding an 8 MiB anonymous buffer has at least one mapping to collapse, and
    /// the kernel refuses no more than it was asked; on Linux 6.1+ with THP not `never` the
    /// buffer then reads as huge pages (checked where the kernel can say so).
    #[cfg(target_os = "linux")]
    #[test]
    fn collapse_asks_for_the_anonymous_mappings() {
        let buf = vec![1u8; 8 << 20];
        let (asked, refused) = collapse_huge_pages();
        assert!(asked >= 1 && refused <= asked, "{asked} {refused}");
        std::hint::black_box(&buf);
    }

    /// The AVX-512 VM's readings of 2026-11-29: 0 of 132 MiB against 124 of 133 is unequal;
    /// two alike (both with, both without) and an unreadable one are not.
    #[test]
    fn workers_differ_in_huge_pages_only_when_one_has_most_and_the_other_not() {
        let mib = |h: u64, a: u64| Some((h << 20, a << 20));
        assert!(unequal_huge(mib(0, 132), mib(124, 133)));
        assert!(unequal_huge(mib(126, 134), mib(0, 132)));
        assert!(!unequal_huge(mib(124, 133), mib(128, 134)));
        assert!(!unequal_huge(mib(0, 132), mib(0, 132)));
        assert!(!unequal_huge(None, mib(124, 133)));
        assert_eq!(mostly_huge(mib(0, 0)), None);
    }

    #[test]
    fn tunables_gain_and_lose_the_huge_page_setting() {
        assert_eq!(tunables_with_huge_pages(None), HUGE_PAGES_TUNABLE);
        assert_eq!(
            tunables_with_huge_pages(Some("glibc.malloc.tcache_count=0")),
            "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"
        );
        assert_eq!(
            tunables_without_huge_pages("glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"),
            Some("glibc.malloc.tcache_count=0".to_string())
        );
        assert_eq!(tunables_without_huge_pages(HUGE_PAGES_TUNABLE), None);
        assert!(tunables_ask_huge_pages("a=1:glibc.malloc.hugetlb=2"));
        assert!(!tunables_ask_huge_pages("glibc.malloc.hugetlb=0"));
        assert!(!tunables_ask_huge_pages("glibc.malloc.tcache_count=0"));
    }

    #[test]
    fn reads_the_kernel_mode_and_the_knob() {
        assert_eq!(
            parse_thp_mode("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(parse_thp_mode("[never]").as_deref(), Some("never"));
        assert_eq!(parse_thp_mode("garbage"), None);
        assert!(huge_pages_knob_off(Some("0")));
        assert!(huge_pages_knob_off(Some("Off")));
        assert!(!huge_pages_knob_off(Some("1")));
        assert!(!huge_pages_knob_off(None));
    }
}

#[cfg(test)]
mod available_tests {
    #[test]
    fn reads_mem_available() {
        let s =
            "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(super::parse_mem_available(s), Some(20_000_000 * 1024));
        assert_eq!(super::parse_mem_available("MemTotal: 1 kB\n"), None);
    }
}
