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
//! The noise: the same positions computed other legitimate ways by the same build: every id of
//! the sequence as its own single-token step from position 0 (no prefill call: other matrix
//! shapes, other summation orders), and, where the model has a batched form (`serve
//! --max-batch`), the sequences side by side in one batched step each (prefilled together,
//! then decoded together). What they do to the probe, the larger of the two, is the limit of
//! "same model" for this build ([`crate::measure::outputs::Noise`]).

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
            let ids: Vec<u32> = crate::models::tokenizers::encode(t, TEXT)?
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
    let mut n = noise(
        "the prompt prefilled as single-token steps",
        &probe,
        &perturbed,
        identical,
    );
    if let Some(batched) = batched_positions(model, &ids, len, prefill)? {
        let (identical, perturbed) = batched;
        n = n.and(noise(
            "the sequences batched together",
            &probe,
            &perturbed,
            identical == probe.logits_sha256,
        ));
    }
    probe.noise = Some(n);
    probe.seconds = t0.elapsed().as_secs_f64();
    Ok(probe)
}

/// The probe's positions with the [`SEQUENCES`] sequences in one batched step each (both
/// prefilled in one step, then one id each per step), and the hash of their logits in the
/// probe's order; None for a model without a batched form. The numeric injection
/// (`MODELBENCH_INJECT_NUMERIC`) is applied to these logits as the engine's forward applies it,
/// so an injected run's noise is its own build's, not the injection.
fn batched_positions(
    model: &mut dyn CausalLm,
    ids: &[u32],
    len: usize,
    prefill: usize,
) -> Result<Option<(String, Vec<Position>)>> {
    use crate::models::batched::{BatchOptions, Work};
    let Some(b) = model.batched(&BatchOptions {
        slots: SEQUENCES,
        fast_weights: false,
    }) else {
        return Ok(None);
    };
    let mut m = b?;
    let seqs: Vec<&[u32]> = ids.chunks(len).collect();
    for s in 0..seqs.len() {
        m.start(s)?;
    }
    let factor = crate::measure::inject::numeric_factor("lm_head");
    let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); seqs.len()];
    let mut step = |from: usize, to: usize| -> Result<()> {
        let work: Vec<Work<'_>> = seqs
            .iter()
            .enumerate()
            .map(|(slot, q)| Work {
                slot,
                tokens: &q[from..to],
                logits: true,
            })
            .collect();
        for (s, l) in m.step(&work)?.into_iter().enumerate() {
            let mut v = l.ok_or_else(|| {
                Error::Report("a batched step returned no logits where they were asked".into())
            })?;
            if let Some(f) = factor {
                // As candle's `affine(f, 0)` computes it in f32 (the engine's forward).
                let f = f as f32;
                v.iter_mut().for_each(|x| *x = *x * f + 0.0);
            }
            logits[s].push(v);
        }
        Ok(())
    };
    step(0, prefill)?;
    for i in prefill..len - 1 {
        step(i, i + 1)?;
    }
    let mut hash = LogitsHash::default();
    let mut positions = Vec::new();
    for v in logits.iter().flatten() {
        hash.update(v);
        positions.push(Position::of_logits(v, PROBE_TOP_K));
    }
    Ok(Some((hash.finish(), positions)))
}

/// Each model's probe, by label: taken the first time a suite asks for the model, outside
/// every timed region, then shared by its workloads (generation and depth suites).
pub type Probes = std::sync::Mutex<std::collections::BTreeMap<String, Probe>>;

/// The probe of `loaded` from `probes`, taken (and said through `say`) the first time.
pub fn once(
    probes: &Probes,
    loaded: &mut crate::models::sources::loading::Loaded,
    say: &dyn Fn(&str),
) -> Result<Probe> {
    let label = loaded.resolved.label.clone();
    if let Some(p) = probes.lock().ok().and_then(|m| m.get(&label).cloned()) {
        return Ok(p);
    }
    let p = take(loaded.model.as_mut(), loaded.tokenizer.as_ref())?;
    let n = p.noise.as_ref();
    say(&format!(
        "output probe of {label}: {} positions in {:.2} s; own noise ({}): {}",
        p.positions.len(),
        p.seconds,
        n.map_or("-", |n| n.perturbation.as_str()),
        n.map_or("not measured".to_string(), |n| if n.identical {
            "bit-identical".to_string()
        } else {
            format!(
                "mean KLD {:.3e}, max {:.3e}, top-1 {:.1}%",
                n.mean_kld,
                n.max_kld,
                100.0 * n.top1
            )
        })
    ));
    if let Ok(mut m) = probes.lock() {
        m.insert(label, p.clone());
    }
    Ok(p)
}
