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

/// Resets the kernel's resident high-water mark (Linux >= 4.0), so [`rss`] reports the peak
/// of the phase that follows. Returns false where that is not possible.
pub fn reset_rss_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
