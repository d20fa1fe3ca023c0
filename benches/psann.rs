//! `cargo bench --bench psann`: the PSANN-LM grid (GPU-03's procedure), groups
//! `psann_throughput` and `psann_train`, and seed 001's sweep `train_step`. MODELBENCH_PSANN_GRID=gpu03
//! runs the original grid.

fn main() {
    modelbench::harness::main(modelbench::harness::Bench::Psann);
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
