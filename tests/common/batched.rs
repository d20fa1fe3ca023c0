//! The batched test driver of tests/batching.rs (Gemma 3) and tests/llama_batching.rs (Llama /
//! Qwen3): any [`BatchedLm`] run as the server's scheduler runs it, the single-sequence path
//! run the same way, and the checks that compare them. Loaded by those two tests only
//! (`#[path]`), beside `mod common;`.

use modelbench::engine::sampling::argmax;
use modelbench::models::batched::{BatchedLm, SeqStep};
use modelbench::models::CausalLm;

use crate::common;

/// Greedy tokens and the logits that chose each.
#[derive(Debug, Default, Clone)]
pub struct Gen {
    pub tokens: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
}

/// Runs `prompts` through the batched forward as the server's scheduler does: sequence i
/// joins at step `join[i]`; each step runs one token of every decoding sequence and the next
/// chunk (`chunk` tokens, cut at fixed offsets) of every sequence still reading its prompt;
/// each sequence generates `n_new` greedy tokens and leaves. Returns the runs and the most
/// sequences one step held.
pub fn run_batched<B: BatchedLm>(
    b: &B,
    prompts: &[Vec<u32>],
    join: &[usize],
    n_new: usize,
    chunk: usize,
) -> (Vec<Gen>, usize) {
    let mut caches: Vec<Option<B::Seq>> = (0..prompts.len()).map(|_| None).collect();
    let mut fed = vec![0usize; prompts.len()];
    let mut out = vec![Gen::default(); prompts.len()];
    let mut most = 0;
    let mut step = 0;
    loop {
        for i in 0..prompts.len() {
            if join[i] == step {
                caches[i] = Some(b.new_seq());
            }
        }
        let live: Vec<usize> = (0..prompts.len())
            .filter(|&i| caches[i].is_some() && out[i].tokens.len() < n_new)
            .collect();
        if live.is_empty() && join.iter().all(|&j| j <= step) {
            break;
        }
        let mut toks: Vec<Vec<u32>> = Vec::new();
        for &i in &live {
            if fed[i] < prompts[i].len() {
                let to = prompts[i].len().min(fed[i] + chunk);
                toks.push(prompts[i][fed[i]..to].to_vec());
            } else {
                toks.push(vec![*out[i].tokens.last().unwrap()]);
            }
        }
        let mut taken: Vec<Option<&mut B::Seq>> = caches.iter_mut().map(|c| c.as_mut()).collect();
        let mut seqs: Vec<SeqStep<'_, B::Seq>> = Vec::new();
        for (k, &i) in live.iter().enumerate() {
            let done_prompt = fed[i] + toks[k].len() >= prompts[i].len();
            seqs.push(SeqStep {
                cache: taken[i].take().unwrap(),
                tokens: &toks[k],
                logits: done_prompt,
            });
        }
        most = most.max(seqs.len());
        let logits = if seqs.is_empty() {
            Vec::new()
        } else {
            b.forward(&mut seqs).unwrap()
        };
        drop(seqs);
        for (k, &i) in live.iter().enumerate() {
            if fed[i] < prompts[i].len() {
                fed[i] += toks[k].len();
            }
            if let Some(l) = &logits[k] {
                let l: Vec<f32> = l.to_vec1().unwrap();
                out[i].tokens.push(argmax(&l));
                out[i].logits.push(l);
            }
        }
        step += 1;
        assert!(step < 10_000);
    }
    (out, most)
}

/// Each prompt run alone through [`run_batched`], then all of them together, sequence i
/// joining at step `join[i]`: (alone, batched, the most sequences one step held).
pub fn alone_and_batched<B: BatchedLm>(
    b: &B,
    prompts: &[Vec<u32>],
    join: &[usize],
    n_new: usize,
    chunk: usize,
) -> (Vec<Gen>, Vec<Gen>, usize) {
    let alone: Vec<Gen> = prompts
        .iter()
        .map(|p| run_batched(b, std::slice::from_ref(p), &[0], n_new, chunk).0[0].clone())
        .collect();
    let (batched, most) = run_batched(b, prompts, join, n_new, chunk);
    (alone, batched, most)
}

/// The same tokens and bit-equal logits, run by run (`what` names the model in the message).
pub fn assert_bit_equal(what: &str, alone: &[Gen], batched: &[Gen]) {
    assert_eq!(alone.len(), batched.len(), "{what}: runs");
    for (i, (a, g)) in alone.iter().zip(batched).enumerate() {
        assert_eq!(
            a.tokens, g.tokens,
            "{what} prompt {i}: ids alone vs batched"
        );
        for (s, (x, y)) in a.logits.iter().zip(&g.logits).enumerate() {
            let (d, sc) = max_diff(x, y);
            assert!(
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{what} prompt {i} token {s}: logits alone vs batched differ (max |diff| {d} at scale {sc})"
            );
        }
    }
}

/// The same greedy run through the single-sequence forward (`CausalLm::forward`, the path the
/// benchmarks time), the prompt in `chunks` (their lengths, summing to the prompt's).
pub fn run_single(m: &mut dyn CausalLm, prompt: &[u32], chunks: &[usize], n_new: usize) -> Gen {
    m.reset().unwrap();
    let mut pos = 0;
    let mut l = Vec::new();
    for &c in chunks {
        l = common::logits(&m.forward(&prompt[pos..pos + c], pos).unwrap());
        pos += c;
    }
    assert_eq!(pos, prompt.len());
    let mut g = Gen::default();
    loop {
        let t = argmax(&l);
        g.tokens.push(t);
        g.logits.push(l);
        if g.tokens.len() == n_new {
            return g;
        }
        l = common::logits(&m.forward(&[t], pos).unwrap());
        pos += 1;
    }
}

/// A prompt of `len` tokens cut into chunks of `c` at fixed offsets, as the scheduler cuts it.
pub fn chunks_of(len: usize, c: usize) -> Vec<usize> {
    let mut v = vec![c; len / c];
    if !len.is_multiple_of(c) {
        v.push(len % c);
    }
    v
}

/// The largest difference between two logit vectors, and the largest logit (at least 1e-3).
pub fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    let scale = a.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (diff, scale)
}

/// A step of `n` tokens on a fresh sequence of `b`, which must fail: the error's first line
/// (candle appends a backtrace when RUST_BACKTRACE is set; the server keeps line one) and the
/// sequence after the failed step.
pub fn failed_step<B: BatchedLm>(b: &B, n: usize) -> (String, B::Seq) {
    let mut c = b.new_seq();
    let toks = vec![1u32; n];
    let e = b
        .forward(&mut [SeqStep {
            cache: &mut c,
            tokens: &toks,
            logits: true,
        }])
        .unwrap_err()
        .to_string();
    (modelbench::error::one_line(&e), c)
}
