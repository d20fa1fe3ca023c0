//! `cargo bench --bench moe`: group `moe_topk` over experts x top-k x tokens
//! (`moe_topk/cpu-f32/e16-k2/t512`) and the dense SwiGLU with the same active parameters.

fn main() {
    modelbench::harness::main(modelbench::harness::Bench::Moe);
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
