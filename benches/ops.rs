//! `cargo bench --bench ops`: criterion group `ops`, the decode ops of the quantized Gemma 3
//! fixture and (where installed) the real Gemma 3 270M, each alone at its shape (issue 31;
//! docs/ops.md). Not part of the default `cargo bench` set's groups: run it by name.

fn main() {
    let mut c = modelbench::harness::criterion();
    modelbench::harness::exit_on_error(modelbench::harness::ops::ops_group(&mut c));
    c.final_summary();
}

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;
