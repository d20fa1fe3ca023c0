//! `cargo bench --bench checkpoint`: peak memory (criterion group `checkpoint_memory`, a
//! custom bytes measurement) and time (`checkpoint_time`) of one PSANN-LM train step with and
//! without gradient checkpointing; memory.json in the run folder (seed 002, BMRK-03).

use criterion::Criterion;
use modelbench::bench::{checkpoint_groups, exit_on_error, run_dir, PeakBytes};
use modelbench::options::Common;

#[global_allocator]
static ALLOC: modelbench::memory::CountingAlloc = modelbench::memory::CountingAlloc;

fn main() {
    modelbench::plot::register_fonts();
    let common = exit_on_error(Common::from_env());
    let mut c_mem = Criterion::default()
        .with_measurement(PeakBytes)
        .configure_from_args();
    let mut c_time = Criterion::default().configure_from_args();
    let mut run = run_dir(common.label.as_deref());
    exit_on_error(checkpoint_groups(
        &mut c_mem,
        &mut c_time,
        &common,
        &mut run,
    ));
    c_mem.final_summary();
    c_time.final_summary();
    if !run.records().is_empty() {
        eprintln!("records: {}", run.path.display());
    }
}
