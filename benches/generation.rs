//! `cargo bench --bench generation`: the generation scenarios (seed 003) as criterion groups,
//! one benchmark per model, and the `overhead` group. Knobs: README (MODELBENCH_MODELS, ...).

fn main() {
    // The output probe's thread-count perturbation runs this build's CLI (engine::probe).
    modelbench::engine::probe::use_exe(env!("CARGO_BIN_EXE_modelbench"));
    modelbench::harness::main(modelbench::harness::Bench::Generation);
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
