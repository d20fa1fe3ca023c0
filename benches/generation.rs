//! `cargo bench --bench generation`: the generation scenarios (seed 003) as criterion groups,
//! one benchmark per model, and the `overhead` group. Knobs: README (MODELBENCH_MODELS, ...).

fn main() {
    modelbench::harness::main(modelbench::harness::Bench::Generation);
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
