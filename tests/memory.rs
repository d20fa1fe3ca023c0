//! The counting allocator and what checkpointing does to the measured peak. One test, so no
//! other test in this binary allocates while it measures.

use candle_core::Device;
use modelbench::measure::memory::{heap_current, heap_peak, reset_peak};
use modelbench::models::training::psann::train::grads;
use modelbench::models::training::psann::{random_ids, Base, PsannConfig, PsannLm};

#[global_allocator]
static ALLOC: modelbench::measure::memory::CountingAlloc =
    modelbench::measure::memory::CountingAlloc;

fn peak_of(f: impl FnOnce()) -> u64 {
    let base = heap_current().unwrap();
    reset_peak();
    f();
    heap_peak().unwrap() - base
}

#[test]
fn allocator_counts_and_checkpointing_lowers_the_peak() {
    // A known allocation: the counter rises by its size and falls back when it is freed.
    let before = heap_current().expect("the counting allocator is installed");
    let v = vec![1u8; 64 << 20];
    let during = heap_current().unwrap();
    assert!(during - before >= 64 << 20 && during - before < (64 << 20) + (1 << 20));
    drop(v);
    let after = heap_current().unwrap();
    assert!(after < before + (1 << 20), "freed: {before} -> {after}");
    let p = peak_of(|| drop(vec![0u8; 8 << 20]));
    assert!((8 << 20..9 << 20).contains(&p), "{p}");

    // A deep model: 8 blocks of d 64 at T 128; checkpointing keeps one block's activations.
    let cfg = PsannConfig::new(Base::Waveresnet, 31, 64, 8, 4);
    let m = PsannLm::new(cfg, 1, &Device::Cpu, true).unwrap();
    let ids = random_ids(4, 128, 31, 1, &Device::Cpu).unwrap();
    let plain = peak_of(|| drop(grads(&m, &ids, &ids, false).unwrap()));
    let ckpt = peak_of(|| drop(grads(&m, &ids, &ids, true).unwrap()));
    assert!(
        ckpt * 2 < plain,
        "checkpointed peak {ckpt} B vs {plain} B without"
    );
}
