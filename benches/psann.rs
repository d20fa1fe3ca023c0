//! `cargo bench --bench psann`: the PSANN-LM throughput grid (GPU-03's procedure) as
//! criterion group `psann_throughput` (ids `<base>/<batch_tokens>`), and `psann_train`
//! (a full train step per base). MODELBENCH_PSANN_GRID=gpu03 runs the original grid.

use criterion::Criterion;
use modelbench::bench::{exit_on_error, psann_grid, run_dir};
use modelbench::options::PsannPlan;

#[global_allocator]
static ALLOC: modelbench::memory::CountingAlloc = modelbench::memory::CountingAlloc;

fn main() {
    modelbench::plot::register_fonts();
    let plan = exit_on_error(PsannPlan::from_env());
    let mut c = Criterion::default().configure_from_args();
    let mut run = run_dir(plan.common.label.as_deref());
    exit_on_error(psann_grid(&mut c, &plan, &mut run));
    c.final_summary();
    if !run.records().is_empty() {
        eprintln!("records: {}", run.path.display());
    }
}
