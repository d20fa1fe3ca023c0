//! `cargo bench --bench depth`: prefill and decode speed against KV-cache depth (group
//! `depth`). Knobs: MODELBENCH_DEPTHS, MODELBENCH_DEPTH_PROMPT, MODELBENCH_DEPTH_GEN,
//! MODELBENCH_DEPTH_MODELS, MODELBENCH_ATTENTION (README).

fn main() {
    // The output probe's thread-count perturbation runs this build's CLI (engine::probe).
    modelbench::engine::probe::use_exe(env!("CARGO_BIN_EXE_modelbench"));
    modelbench::harness::main(modelbench::harness::Bench::Depth);
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
