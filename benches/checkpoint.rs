//! `cargo bench --bench checkpoint`: peak memory (`checkpoint_memory`, a bytes measurement)
//! and time (`checkpoint_time`) of a PSANN-LM train step with and without checkpointing.

fn main() {
    modelbench::harness::main(modelbench::harness::Bench::Checkpoint);
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
