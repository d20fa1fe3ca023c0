//! `cargo bench --bench generation`: the seven generation scenarios (seed 003) as criterion
//! groups, one benchmark per model. Knobs: see README (MODELBENCH_MODELS, _TIER, ...).

use criterion::Criterion;
use modelbench::bench::{exit_on_error, generation, overhead, run_dir};
use modelbench::options::Plan;

#[global_allocator]
static ALLOC: modelbench::memory::CountingAlloc = modelbench::memory::CountingAlloc;

fn main() {
    modelbench::plot::register_fonts();
    let plan = exit_on_error(Plan::from_env());
    let mut c = Criterion::default().configure_from_args();
    let mut run = run_dir(plan.label.as_deref());
    exit_on_error(generation(&mut c, &plan, &mut run));
    exit_on_error(overhead(&mut c, &plan, &mut run));
    c.final_summary();
    if !run.records().is_empty() {
        eprintln!("records: {}", run.path.display());
    }
}
