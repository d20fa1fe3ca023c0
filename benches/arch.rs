//! `cargo bench --bench arch`: group `arch_sweep`, seed 000's architecture sweep on a small
//! grid (dense, mixture, state_space, hybrid; a forward and a train step each). Knobs:
//! MODELBENCH_ARCH_FAMILIES, MODELBENCH_ARCH_DIMS, MODELBENCH_ARCH_DEPTHS (README).

fn main() {
    modelbench::harness::main(modelbench::harness::Bench::Arch);
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
