//! The memory of a process tree over time (`modelbench memory -- CMD`, issue 62 item 5): the
//! resident set of a process and every descendant it starts, summed, sampled on a thread of
//! its own from /proc (each process's `statm` resident pages; descendants found through the
//! `ppid` of every `/proc/<pid>/stat`), and the GPU memory NVML attributes to those processes
//! where an NVIDIA driver is present. Linux only; elsewhere the sampler says "not available".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One sample of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since sampling started.
    pub t_s: f64,
    /// Resident bytes of every process of the tree, summed.
    pub rss_bytes: u64,
    /// Processes in the tree at that moment.
    pub processes: usize,
    /// GPU memory NVML attributes to the tree's processes (None: not available).
    pub gpu_bytes: Option<u64>,
}

/// The processes of the tree rooted at `root` (itself included, when alive).
pub fn tree(root: u32) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = ppid(pid) {
                children.entry(pp).or_default().push(pid);
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if out.insert(p) {
            todo.extend(children.get(&p).into_iter().flatten().copied());
        }
    }
    out.retain(|&p| std::path::Path::new(&format!("/proc/{p}")).exists());
    out
}

/// The parent of `pid` (field 4 of /proc/<pid>/stat).
fn ppid(pid: u32) -> Option<u32> {
    crate::measure::process::stat_field(pid, 4).and_then(|p| u32::try_from(p).ok())
}

/// Resident bytes of one process (`statm`'s second field, in pages).
pub fn rss_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

/// Samples the tree of `root` every `interval` until stopped.
pub struct TreeSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl TreeSampler {
    pub fn start(root: u32, interval: Duration) -> TreeSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            loop {
                let pids = tree(root);
                let rss = pids.iter().filter_map(|&p| rss_of(p)).sum();
                out.push(Sample {
                    t_s: t0.elapsed().as_secs_f64(),
                    rss_bytes: rss,
                    processes: pids.len(),
                    gpu_bytes: super::gpu::process_bytes(&pids),
                });
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(interval);
            }
            out
        });
        TreeSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns the samples (the last taken after the stop).
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// The sample of the largest resident set (None without samples).
pub fn peak(samples: &[Sample]) -> Option<Sample> {
    samples.iter().copied().max_by_key(|s| s.rss_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process is in its own tree with a positive resident set; a child started by it is
    /// found as a descendant while it lives.
    #[test]
    fn the_tree_holds_the_root_and_its_children() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(rss_of(me).unwrap() > 1 << 20);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let t = tree(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(t.contains(&child.id()), "{t:?}");
    }
}
