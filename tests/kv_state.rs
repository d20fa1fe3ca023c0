//! KV snapshot and restore (`CausalLm::snapshot` / `restore`): the logits of a forward after a
//! restore equal those of the same forward after a fresh fill to the same depth, for every
//! implementation the suite loads. Each case dirties the live cache after the snapshot first
//! (a forward past the saved depth), so a snapshot that shares storage with buffers written in
//! place would show here.

mod common;

use candle_core::{DType, Device};
use modelbench::engine::generate::prompt_ids;
use modelbench::engine::scenario::prepare;
use modelbench::models::sources::loading::{open, Loaded};
use modelbench::models::sources::ModelRef;
use modelbench::models::{CausalLm, Restored};

fn load(r: &str) -> Loaded {
    let res = prepare(r, &ModelRef::parse(r).unwrap(), &[]).unwrap();
    open(res, &Device::Cpu, DType::F32, Some(512)).unwrap()
}

/// Fills to `depth` in chunks of `chunk` tokens from position 0.
fn fill(m: &mut dyn CausalLm, toks: &[u32], chunk: usize) {
    m.reset().unwrap();
    for (i, c) in toks.chunks(chunk).enumerate() {
        if let Err(e) = m.forward(c, i * chunk) {
            panic!(
                "{}: forward at {}: {e}",
                m.meta().provenance.implementation,
                i * chunk
            );
        }
    }
    assert_eq!(m.depth(), toks.len());
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Returns how the two restores were done.
fn check(m: &mut dyn CausalLm, what: &str, depth: usize, p: usize) -> Vec<Restored> {
    let vocab = m.meta().vocab;
    let ctx = prompt_ids(depth, vocab, 11, 0);
    let next = prompt_ids(p, vocab, 12, 0);
    let other = prompt_ids(p + 3, vocab, 13, 0);
    // Fresh: fill, then the forward under test.
    fill(m, &ctx, 16);
    let fresh = common::logits(&m.forward(&next, depth).unwrap());
    let fresh_decode = common::logits(&m.forward(&next[..1], depth + p).unwrap());
    // Snapshot at the same depth, dirty the live cache, restore, the same forward; twice.
    fill(m, &ctx, 16);
    let s = m.snapshot().unwrap();
    assert_eq!(s.depth(), depth, "{what}");
    m.forward(&other, depth).unwrap();
    m.forward(&other[..1], depth + other.len()).unwrap();
    let mut how = Vec::new();
    for round in 0..2 {
        how.push(m.restore(&s).unwrap());
        assert_eq!(m.depth(), depth, "{what}");
        let got = common::logits(&m.forward(&next, depth).unwrap());
        let got_decode = common::logits(&m.forward(&next[..1], depth + p).unwrap());
        let d = max_diff(&fresh, &got).max(max_diff(&fresh_decode, &got_decode));
        assert!(
            d <= 1e-6,
            "{what}: depth {depth}, round {round}: max |logit diff| {d} after restore ({how:?})"
        );
    }
    // Restoring a state into another model is an error, not a panic.
    how
}

#[test]
fn restore_equals_a_fresh_fill_for_every_implementation() {
    for r in [
        "fixture:llama",
        "fixture:qwen3",
        "fixture:qwen3-moe",
        "gguf:fixture:llama",
        "gguf:fixture:qwen3",
        "gguf:fixture:llama?impl=modelbench",
        "gguf:fixture:qwen3?impl=modelbench",
        "gguf:fixture:gemma3",
        "gguf:fixture:gemma3?impl=candle-transformers",
    ] {
        let mut l = load(r);
        for (depth, p) in [(40, 8), (100, 8)] {
            let how = check(l.model.as_mut(), r, depth, p);
            assert_eq!(how, [Restored::Copy, Restored::Copy], "{r}");
        }
    }
}

/// candle's float Gemma3 keeps its sliding layers' cache in a ring written in place (window 64
/// in the fixture): within the window a restore is a copy; once a write reaches past the
/// window the shared ring is overwritten, and the restore replays the fill (still exact).
#[test]
fn gemma3_restores_by_copy_within_the_window_and_by_recompute_past_it() {
    let mut l = load("fixture:gemma3");
    let m = l.model.as_mut();
    // depth 24 + 8 + (8+3+1 dirtying) stays within 64: copies.
    assert_eq!(check(m, "fixture:gemma3", 24, 8), [Restored::Copy; 2]);
    // depth 100: any write is past the window.
    assert_eq!(check(m, "fixture:gemma3", 100, 8), [Restored::Recompute; 2]);
    let mut other = load("fixture:llama");
    let s = other.model.snapshot().unwrap();
    let e = l.model.restore(&s).unwrap_err().to_string();
    assert!(e.contains("different model"), "{e}");
}
