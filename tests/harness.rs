//! The criterion glue: a peak-bytes group must survive being run again against the baseline
//! of the last run (`cargo bench` twice in a row), and the trial loop's numbering is the one
//! the CLI uses.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use modelbench::harness::{group, memory_criterion};

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;

/// A deterministic allocation: every sample has exactly the same peak.
fn step() -> Vec<u8> {
    std::hint::black_box(vec![7u8; 1 << 20])
}

fn run_memory_group(dir: &std::path::Path, c: Criterion) {
    let mut c = memory_criterion(c.output_directory(dir));
    let (mut g, _) = group(
        &mut c,
        "mem",
        "checkpoint_memory/cpu-f32/alloc",
        Duration::from_millis(1),
        Duration::from_millis(50),
    );
    g.bench_function(BenchmarkId::new("cpu-f32", "alloc"), |b| {
        b.iter_custom(|iters| {
            let mut total = 0u64;
            for _ in 0..iters {
                use criterion::measurement::Measurement;
                let m = modelbench::harness::PeakBytes;
                let s = m.start();
                drop(step());
                total += m.end(s);
            }
            total
        })
    });
    g.finish();
}

#[test]
fn a_memory_group_runs_twice_against_its_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    // First run saves the baseline; the second compares with it (the case that panicked in
    // criterion's KDE when plots were on), then once more against a named baseline.
    run_memory_group(tmp.path(), Criterion::default());
    run_memory_group(tmp.path(), Criterion::default());
    run_memory_group(
        tmp.path(),
        Criterion::default().save_baseline("base".into()),
    );
    run_memory_group(
        tmp.path(),
        Criterion::default().retain_baseline("base".into(), true),
    );
    let est = tmp.path().join("mem/cpu-f32/alloc/new/estimates.json");
    assert!(
        est.is_file(),
        "criterion wrote no estimates at {}",
        est.display()
    );
}
