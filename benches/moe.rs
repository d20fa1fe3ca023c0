//! `cargo bench --bench moe`: criterion group `moe_topk` over experts x top-k x tokens
//! (ids `e16-k2/t512`), plus the dense SwiGLU with the same active parameters per token
//! (`dense-k2/t512`), so the cost of routing is visible. Throughput::Elements(tokens).

use criterion::Criterion;
use modelbench::bench::{exit_on_error, moe_grid, run_dir};
use modelbench::options::MoePlan;

#[global_allocator]
static ALLOC: modelbench::memory::CountingAlloc = modelbench::memory::CountingAlloc;

fn main() {
    modelbench::plot::register_fonts();
    let plan = exit_on_error(MoePlan::from_env());
    let mut c = Criterion::default().configure_from_args();
    let mut run = run_dir(plan.common.label.as_deref());
    exit_on_error(moe_grid(&mut c, &plan, &mut run));
    c.final_summary();
    if !run.records().is_empty() {
        eprintln!("records: {}", run.path.display());
    }
}
