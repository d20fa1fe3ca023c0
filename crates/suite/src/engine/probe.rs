//! The output probe (issue 59): what a model computes, taken once per model and run through
//! the engine's own forward path ([`super::generate::forward`], the path every benchmark
//! runs), kept in every generation record for the output verdict (`measure::outputs`).
//!
//! The positions: the held-out verdict text (fixtures/corpus/kjv-ruth-1-4.txt, which nothing
//! was tuned on) tokenized by the model's tokenizer (seeded ids for a model without one), cut
//! into [`SEQUENCES`] sequences of [`LEN`] ids. Each sequence is prefilled with its first
//! [`PREFILL`] ids in one forward call (the prefill kernels) and continued one id at a time
//! (the decode kernels, on the KV cache): [`LEN`] - [`PREFILL`] + 1 positions a sequence whose
//! logits are kept (top [`PROBE_TOP_K`]) and hashed (all, f32).
//!
//! The noise: the same positions computed another legitimate way, every id of the sequence as
//! its own single-token step from position 0 (no prefill call): other matrix shapes, other
//! summation orders, the same model. What that does to the probe is the limit of "same model"
//! for this build ([`crate::measure::outputs::Noise`]).

use std::time::Instant;

use candle_core::DType;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::measure::outputs::{noise, LogitsHash, Position, Probe, PROBE_TOP_K};
use crate::models::CausalLm;

use super::generate::forward;

/// The held-out verdict text.
pub const TEXT: &str = include_str!("../../../../fixtures/corpus/kjv-ruth-1-4.txt");
pub const TEXT_NAME: &str = "fixtures/corpus/kjv-ruth-1-4.txt";
pub const SEQUENCES: usize = 2;
pub const LEN: usize = 64;
pub const PREFILL: usize = 32;

/// The seed of the ids of a model without a tokenizer.
const SEED: u64 = 0x9e0be;

/// The probe's ids and how they were made (two probes compare only when this is equal):
/// [`SEQUENCES`] sequences of `len` ids, the first `len / 2` prefilled.
pub fn probe_ids(tok: Option<&Tokenizer>, vocab: usize, len: usize) -> Result<(Vec<u32>, String)> {
    let n = SEQUENCES * len;
    let (ids, from) = match tok {
        Some(t) => {
            let ids: Vec<u32> = crate::models::tokenizer::encode(t, TEXT)?
                .into_iter()
                .filter(|&i| (i as usize) < vocab)
                .take(n)
                .collect();
            (ids, TEXT_NAME.to_string())
        }
        None => (
            super::generate::prompt_ids(n, vocab, SEED, 0),
            format!("seeded ids (seed {SEED:#x})"),
        ),
    };
    if ids.len() < n {
        return Err(Error::Report(format!(
            "the output probe needs {n} ids of {TEXT_NAME}; this tokenizer gives {}",
            ids.len()
        )));
    }
    let desc = format!(
        "{from}, ids sha256 {}, {SEQUENCES} x {len} ids ({} prefilled, then decoded)",
        crate::measure::outputs::hash_ids(&ids),
        len / 2
    );
    Ok((ids, desc))
}

fn host(l: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(l.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Takes the probe of `model` (the KV cache is left reset). A model built for fewer than
/// [`LEN`] positions is probed on sequences of its own length (its probe then compares only
/// with probes of that length).
pub fn take(model: &mut dyn CausalLm, tok: Option<&Tokenizer>) -> Result<Probe> {
    let t0 = Instant::now();
    let built = model.meta().built_context;
    let len = if built >= 4 { LEN.min(built) } else { LEN };
    let prefill = if len == LEN { PREFILL } else { len / 2 };
    let (ids, text) = probe_ids(tok, model.meta().vocab, len)?;
    let mut hash = LogitsHash::default();
    let mut positions = Vec::new();
    for seq in ids.chunks(len) {
        model.reset()?;
        let mut keep = |l: candle_core::Tensor| -> Result<()> {
            let v = host(&l)?;
            hash.update(&v);
            positions.push(Position::of_logits(&v, PROBE_TOP_K));
            Ok(())
        };
        keep(forward(model, &seq[..prefill], 0)?)?;
        for (i, &id) in seq.iter().enumerate().take(len - 1).skip(prefill) {
            keep(forward(model, &[id], i)?)?;
        }
    }
    let mut probe = Probe {
        text,
        logits_sha256: hash.finish(),
        positions,
        noise: None,
        seconds: 0.0,
    };
    // The noise: the same positions, every id its own step from position 0.
    let mut hash = LogitsHash::default();
    let mut perturbed = Vec::new();
    for seq in ids.chunks(len) {
        model.reset()?;
        for (i, &id) in seq.iter().enumerate().take(len - 1) {
            let l = forward(model, &[id], i)?;
            if i + 1 >= prefill {
                let v = host(&l)?;
                hash.update(&v);
                perturbed.push(Position::of_logits(&v, PROBE_TOP_K));
            }
        }
    }
    model.reset()?;
    let identical = hash.finish() == probe.logits_sha256;
    probe.noise = Some(noise(
        "the prompt prefilled as single-token steps",
        &probe,
        &perturbed,
        identical,
    ));
    probe.seconds = t0.elapsed().as_secs_f64();
    Ok(probe)
}
