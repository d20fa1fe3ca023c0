//! Work split over candle's CPU thread pool for quantized matmuls (`candle_core::utils::
//! barrier_pool`, the pool candle's own quantized kernels run on), so the project's kernels
//! and candle's share one set of threads.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f` over `0..n_items` in chunks on candle's barrier pool: every thread (the pool's
/// workers and the caller) takes the next chunk from a shared cursor until none is left, so a
/// fast thread absorbs a slow one's share. About eight chunks per thread. Written over the
/// pool's `execute` and `n_workers`, which every candle 0.11 release has (0.11.1's own
/// `execute_chunked` splits the same way; 0.11.0 has none), so the suite builds against each
/// of them (`compare --paired --base-candle 0.11.0`). Not for use from inside the pool's own
/// workers (candle's `execute` would wait on itself): the callers are the models' forwards.
pub fn execute_chunked<F: Fn(Range<usize>) + Sync>(n_items: usize, f: F) {
    if n_items == 0 {
        return;
    }
    let pool = candle_core::utils::barrier_pool();
    let chunk = n_items.div_ceil((pool.n_workers() + 1) * 8).max(1);
    let cursor = AtomicUsize::new(0);
    pool.execute(|_| loop {
        let start = cursor.fetch_add(chunk, Ordering::Relaxed);
        if start >= n_items {
            break;
        }
        f(start..n_items.min(start + chunk));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_run_exactly_once() {
        for n in [0usize, 1, 7, 64, 1000, 4097] {
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            execute_chunked(n, |r| {
                for i in r {
                    seen[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                seen.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }
}
