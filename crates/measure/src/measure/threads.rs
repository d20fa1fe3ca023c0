//! Threads, configured and measured (issue 30).
//!
//! candle computes on two CPU pools: rayon's global pool (`RAYON_NUM_THREADS`, else the
//! physical cores) runs most ops, and the barrier pool of the quantized matmuls
//! (`CANDLE_NUM_THREADS`, else rayon's count) runs those. [`CandlePools`] reads both as candle
//! 0.11.1 sizes them; a comparison with another engine needs them equal.
//!
//! What ran is measured from the kernel's per-thread CPU time (`/proc/<pid>/task/*/stat`,
//! utime + stime): [`ThreadUse`] over a timed region is the number of threads that were busy
//! (CPU time at least [`BUSY_SHARE`] of the region's wall time) and the cores used (CPU time /
//! wall time). Kernel accounting is in clock ticks (10 ms at 100 Hz), so a region should last
//! at least a few hundred milliseconds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A thread counts as busy over a region when its CPU time is at least this share of the
/// region's wall time.
pub const BUSY_SHARE: f64 = 0.25;

/// candle's two CPU pools as candle sizes them, with the environment they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandlePools {
    /// rayon's global pool (most ops).
    pub rayon: usize,
    /// The barrier pool of the quantized matmuls.
    pub matmul: usize,
    pub rayon_env: Option<String>,
    pub candle_env: Option<String>,
}

fn positive(v: &Option<String>) -> Option<usize> {
    v.as_deref()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

impl CandlePools {
    /// From the two variables' values (None: unset) and the default count candle falls back
    /// to (the physical cores): the rules of candle-core 0.11.1's `utils.rs`.
    pub fn from_env_values(
        rayon_env: Option<String>,
        candle_env: Option<String>,
        default: usize,
    ) -> CandlePools {
        let rayon = positive(&rayon_env).unwrap_or(default.max(1));
        let matmul = positive(&candle_env).unwrap_or(rayon);
        CandlePools {
            rayon,
            matmul,
            rayon_env,
            candle_env,
        }
    }

    /// This process's pools.
    pub fn current() -> CandlePools {
        let rayon_env = std::env::var("RAYON_NUM_THREADS").ok();
        let candle_env = std::env::var("CANDLE_NUM_THREADS").ok();
        // candle's own rayon count (RAYON_NUM_THREADS, else its physical-core default).
        let rayon = candle_core::utils::get_num_threads();
        let mut p = CandlePools::from_env_values(rayon_env, candle_env, rayon);
        p.rayon = rayon;
        p.matmul = positive(&p.candle_env).unwrap_or(rayon);
        p
    }

    fn show(v: &Option<String>) -> String {
        match v {
            Some(v) => format!("{v:?}"),
            None => "unset".into(),
        }
    }

    /// Ok(count) when both pools have the same size; otherwise one line naming both variables
    /// and the fix.
    pub fn agreed(&self) -> Result<usize> {
        if self.rayon == self.matmul {
            return Ok(self.rayon);
        }
        Err(Error::ThreadMismatch(format!(
            "candle's two thread pools differ: CANDLE_NUM_THREADS={} gives the quantized matmuls {} threads, RAYON_NUM_THREADS={} gives the other ops {}; set both to the same count (e.g. CANDLE_NUM_THREADS={n} RAYON_NUM_THREADS={n}) or pass --allow-thread-mismatch",
            Self::show(&self.candle_env),
            self.matmul,
            Self::show(&self.rayon_env),
            self.rayon,
            n = self.matmul.max(self.rayon),
        )))
    }

    /// `rayon N, matmul M` (and whether the suite pinned RAYON_NUM_THREADS).
    pub fn describe(&self) -> String {
        format!(
            "rayon {}{}, matmul {}",
            self.rayon,
            if pinned_rayon_count().is_some() {
                " (RAYON_NUM_THREADS pinned by the suite)"
            } else {
                ""
            },
            self.matmul
        )
    }
}

/// Whether [`pin_rayon_count`] set `RAYON_NUM_THREADS` in this process.
static PINNED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Sets `RAYON_NUM_THREADS` to the count candle would use anyway when it is unset; call once at
/// start-up, before any other thread exists (the benches' and the CLI's `main`). Returns the
/// count it set (None: the variable was set already, or it ran before).
///
/// Why: candle-core 0.11.1's CPU f32 matmul asks `utils::get_num_threads()` for its
/// parallelism on every call, and without `RAYON_NUM_THREADS` that falls back to
/// `default_num_threads()`, which reads the process's CPU mask and the preferred CPUs from
/// procfs/sysfs (`linux_env_cpu_mask`, `linux_preferred_cpus`, else `num_cpus`) each time.
/// Measured on the 2-core VM (perf, cpu-clock, `run --model fixture:llama --scenario short
/// --trials 20`): 725 of 2,536 CPU samples of the generation loop (29%) were those reads; with
/// the variable set, none. The pools keep their size; the file reads (and their variable
/// latency, a source of run-to-run drift) go.
pub fn pin_rayon_count() -> Option<usize> {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() || PINNED.get().is_some() {
        return None;
    }
    let n = candle_core::utils::get_num_threads();
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    let _ = PINNED.set(n);
    Some(n)
}

/// The count [`pin_rayon_count`] set in this process, if it did.
pub fn pinned_rayon_count() -> Option<usize> {
    PINNED.get().copied()
}

/// Busy threads and cores used over a timed region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThreadUse {
    /// Threads whose CPU time was at least [`BUSY_SHARE`] of the wall time.
    pub busy_threads: usize,
    /// All threads' CPU time / wall time.
    pub cores_used: f64,
    pub wall_s: f64,
}

impl ThreadUse {
    /// From each thread's CPU seconds over a region of `wall_s` seconds. None when the region
    /// is not positive or no CPU time was accounted (too short to measure).
    pub fn from_cpu_seconds(per_thread: &[f64], wall_s: f64) -> Option<ThreadUse> {
        let total: f64 = per_thread.iter().filter(|x| x.is_finite()).sum();
        if wall_s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return None;
        }
        Some(ThreadUse {
            busy_threads: per_thread
                .iter()
                .filter(|&&c| c >= BUSY_SHARE * wall_s)
                .count(),
            cores_used: total / wall_s,
            wall_s,
        })
    }

    /// The median of several regions' values (busy threads: the median count, rounded down).
    pub fn median(xs: &[ThreadUse]) -> Option<ThreadUse> {
        if xs.is_empty() {
            return None;
        }
        let mut b: Vec<usize> = xs.iter().map(|x| x.busy_threads).collect();
        b.sort_unstable();
        let c: Vec<f64> = xs.iter().map(|x| x.cores_used).collect();
        let w: Vec<f64> = xs.iter().map(|x| x.wall_s).collect();
        Some(ThreadUse {
            busy_threads: b[(b.len() - 1) / 2],
            cores_used: crate::measure::stats::median(&c),
            wall_s: crate::measure::stats::median(&w),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{} busy, {:.2} cores used",
            self.busy_threads, self.cores_used
        )
    }
}

/// Per-thread CPU ticks (utime + stime) of one process, by thread id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ticks(pub BTreeMap<u64, u64>);

/// Parses utime + stime out of one `/proc/.../stat` line (fields 14 and 15, counted after the
/// parenthesised command name, which may hold spaces).
pub fn stat_ticks(line: &str) -> Option<u64> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field n is f[n - 3].
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some(ut + st)
}

impl Ticks {
    /// The threads of `/proc/<pid>` (`self` for this process) now; None where /proc cannot be
    /// read (not Linux).
    pub fn read(pid: &str) -> Option<Ticks> {
        let dir = Path::new("/proc").join(pid).join("task");
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let Ok(tid) = e.file_name().to_string_lossy().parse::<u64>() else {
                continue;
            };
            if let Some(t) = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|l| stat_ticks(&l))
            {
                m.insert(tid, t);
            }
        }
        Some(Ticks(m))
    }

    /// Each thread's CPU seconds between `self` (before) and `after` (threads born in between
    /// count from zero).
    pub fn seconds_until(&self, after: &Ticks) -> Vec<f64> {
        let hz = clock_ticks_per_second();
        after
            .0
            .iter()
            .map(|(tid, &t)| t.saturating_sub(*self.0.get(tid).unwrap_or(&0)) as f64 / hz)
            .collect()
    }
}

/// The kernel's USER_HZ (sysconf(_SC_CLK_TCK); 100 if it cannot say).
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_agree_or_the_error_names_both_variables_and_the_fix() {
        let p = CandlePools::from_env_values(Some("2".into()), Some("1".into()), 2);
        let e = p.agreed().unwrap_err().to_string();
        assert!(
            e.contains("CANDLE_NUM_THREADS=\"1\"")
                && e.contains("RAYON_NUM_THREADS=\"2\"")
                && e.contains("CANDLE_NUM_THREADS=2 RAYON_NUM_THREADS=2")
                && !e.contains('\n'),
            "{e}"
        );
        // Only CANDLE_NUM_THREADS set, below the default: the pools differ too.
        assert!(CandlePools::from_env_values(None, Some("1".into()), 2)
            .agreed()
            .is_err());
        // Unset: both pools take the default; one set: the other follows it.
        assert_eq!(
            CandlePools::from_env_values(None, None, 2)
                .agreed()
                .unwrap(),
            2
        );
        assert_eq!(
            CandlePools::from_env_values(Some("3".into()), None, 2)
                .agreed()
                .unwrap(),
            3
        );
        assert_eq!(
            CandlePools::from_env_values(Some("2".into()), Some("2".into()), 8)
                .agreed()
                .unwrap(),
            2
        );
        // A bad value is ignored as candle ignores it.
        assert_eq!(
            CandlePools::from_env_values(Some("x".into()), Some("0".into()), 2).matmul,
            2
        );
    }

    #[test]
    fn busy_threads_from_cpu_seconds() {
        // Two threads computing, the main thread mostly waiting.
        let u = ThreadUse::from_cpu_seconds(&[1.9, 1.8, 0.1], 2.0).unwrap();
        assert_eq!(u.busy_threads, 2);
        assert!((u.cores_used - 1.9).abs() < 1e-9);
        let one = ThreadUse::from_cpu_seconds(&[2.0, 0.02], 2.0).unwrap();
        assert_eq!(one.busy_threads, 1);
        assert!(ThreadUse::from_cpu_seconds(&[0.0], 2.0).is_none());
        assert!(ThreadUse::from_cpu_seconds(&[1.0], 0.0).is_none());
    }

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let l = "1234 (rayon worker 1) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 1 0";
        assert_eq!(stat_ticks(l), Some(280));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn this_process_spins_one_busy_thread() {
        let Some(before) = Ticks::read("self") else {
            println!("skip: /proc is not readable here");
            return;
        };
        // Spin until /proc shows one thread 0.4 s of CPU busier (a loaded machine gives this
        // thread less than a core, so the wall time it takes is not fixed), at most 60 s.
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        let spun = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let d = before.seconds_until(&Ticks::read("self").unwrap());
            let most = d.iter().copied().fold(0.0, f64::max);
            if most >= 0.4 || t0.elapsed().as_secs_f64() > 60.0 {
                break most;
            }
        };
        std::hint::black_box(x);
        assert!(
            spun >= 0.4,
            "no thread of this process accrued 0.4 s of CPU in {:.1} s of spinning",
            t0.elapsed().as_secs_f64()
        );
        let wall = t0.elapsed().as_secs_f64();
        let after = Ticks::read("self").unwrap();
        let u = ThreadUse::from_cpu_seconds(&before.seconds_until(&after), wall).unwrap();
        assert!(u.cores_used > 0.0, "{u:?}");
    }
}
