//! The one batched-model abstraction: a model that runs many sequences in one step, each at
//! its own positions against a KV cache of its own ([`BatchedLm`]), and the one slot set that
//! drives any such model for the serving scheduler ([`Slots`], a [`StepModel`]).
//!
//! A family with a batched implementation (the project's quantized Gemma 3, Llama / Qwen2 /
//! Qwen3) implements [`BatchedLm`] and hands itself out through
//! [`super::CausalLm::batched`]; the scheduler (serving/scheduler.rs) and `serve` know only
//! [`StepModel`], never a family.

use candle_core::Tensor;

use crate::error::{one_line, Error, Result};

/// One sequence's share of a batched step: its cache, the tokens it runs this step (the next
/// prompt chunk, or the one token it decodes) and whether the logits of the last are wanted.
pub struct SeqStep<'a, C> {
    pub cache: &'a mut C,
    pub tokens: &'a [u32],
    pub logits: bool,
}

/// A model that steps many sequences at once, each with a cache of its own.
pub trait BatchedLm: Send {
    /// One sequence's KV cache.
    type Seq: Send;
    /// An empty cache for one sequence.
    fn new_seq(&self) -> Self::Seq;
    /// One step: each sequence's tokens at its own next positions. Returns, per sequence, the
    /// logits (vocab, f32) of its last token where `logits` asked for them. On an error no
    /// cache has advanced its position, but caches may hold part of the step: drop the
    /// sequences of a failed step.
    fn forward(
        &self,
        seqs: &mut [SeqStep<'_, Self::Seq>],
    ) -> candle_core::Result<Vec<Option<Tensor>>>;
    /// What computes a step (implementation, kernels, weights that run a lone row as two),
    /// for `serve`'s start line and records: the model says what it is.
    fn describe(&self) -> String;
    /// A copy of the first `len` positions of `seq` (at most those it holds) that goes on by
    /// itself (buffers of its own: what one later writes the other never sees): for several
    /// choices of one request from one prefill (the whole sequence), and for a prompt that
    /// begins with what a cache holds (prefix caching). None where the model cannot copy a
    /// cache, or cannot keep only those positions (a sliding window that lost them).
    fn fork_seq(&self, _seq: &Self::Seq, _len: usize) -> Option<candle_core::Result<Self::Seq>> {
        None
    }
}

/// How a batched model is asked for (`modelbench serve --max-batch N [--fast-weights]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Sequences one step may hold.
    pub slots: usize,
    /// The project's own CPU kernels for the weights where the family has them.
    pub fast_weights: bool,
    /// Sliding-window layers keep every position (`serve --swa-full`, as llama-server's flag
    /// names it), so a cached prompt longer than the window can be reused; attention masks
    /// them to the window (the same keys weigh in; past the window their sums may round
    /// otherwise than with the window's keys alone). Families without a sliding window
    /// ignore it.
    pub swa_full: bool,
}

/// A model as the scheduler drives it: `slots` sequences, each with its own cache.
pub trait StepModel: Send {
    /// Sequences one step may hold.
    fn slots(&self) -> usize;
    /// Whether a prompt may run in chunks (false: the whole prompt in one forward).
    fn chunked(&self) -> bool;
    /// Empties slot `slot` for a new sequence.
    fn start(&mut self, slot: usize) -> Result<()>;
    /// One step: per entry, a slot, the tokens it runs now and whether the last token's
    /// logits are wanted; returns those logits (host f32) in the same order.
    fn step(&mut self, work: &[Work<'_>]) -> Result<Vec<Option<Vec<f32>>>>;
    /// What computes a step (see [`BatchedLm::describe`]).
    fn describe(&self) -> String;
    /// Slot `to` becomes a copy of the first `len` positions of slot `from` (`usize::MAX`: all
    /// of them), going on by itself ([`BatchedLm::fork_seq`]); `from` may be `to` (the slot
    /// keeps only its first `len` positions). False where the model cannot copy a sequence or
    /// keep only those positions; slot `to` is then unchanged.
    fn fork(&mut self, _from: usize, _to: usize, _len: usize) -> Result<bool> {
        Ok(false)
    }
    /// Whether a slot's cache, once its sequence ends, may be continued by the next sequence
    /// it takes (prefix caching: the scheduler calls [`StepModel::start`] only for a slot it
    /// does not continue). False: every sequence starts from [`StepModel::start`].
    fn keeps_prefixes(&self) -> bool {
        false
    }
}

/// One sequence's share of a step.
pub struct Work<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    pub logits: bool,
}

/// Logits as host f32.
pub fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

/// Any [`BatchedLm`] over a fixed number of slots, one cache per slot.
pub struct Slots<B: BatchedLm> {
    model: B,
    caches: Vec<B::Seq>,
}

impl<B: BatchedLm> Slots<B> {
    pub fn new(model: B, slots: usize) -> Self {
        let caches = (0..slots).map(|_| model.new_seq()).collect();
        Slots { model, caches }
    }
    pub fn model(&self) -> &B {
        &self.model
    }
}

impl<B: BatchedLm> StepModel for Slots<B> {
    fn slots(&self) -> usize {
        self.caches.len()
    }
    fn chunked(&self) -> bool {
        true
    }
    fn start(&mut self, slot: usize) -> Result<()> {
        let fresh = self.model.new_seq();
        match self.caches.get_mut(slot) {
            Some(c) => {
                *c = fresh;
                Ok(())
            }
            None => Err(Error::Model(format!(
                "slot {slot} of {} does not exist",
                self.caches.len()
            ))),
        }
    }
    fn step(&mut self, work: &[Work<'_>]) -> Result<Vec<Option<Vec<f32>>>> {
        // Each slot at most once per step; hand out disjoint &mut caches in work order.
        let mut taken: Vec<Option<&mut B::Seq>> = self.caches.iter_mut().map(Some).collect();
        let mut seqs = Vec::with_capacity(work.len());
        for w in work {
            let cache = taken
                .get_mut(w.slot)
                .and_then(Option::take)
                .ok_or_else(|| Error::Model(format!("slot {} twice in one step", w.slot)))?;
            seqs.push(SeqStep {
                cache,
                tokens: w.tokens,
                logits: w.logits,
            });
        }
        let out = self
            .model
            .forward(&mut seqs)
            .map_err(|e| Error::Model(one_line(&e.to_string())))?;
        out.iter()
            .map(|o| o.as_ref().map(host).transpose())
            .collect()
    }
    fn describe(&self) -> String {
        self.model.describe()
    }
    fn keeps_prefixes(&self) -> bool {
        true
    }
    fn fork(&mut self, from: usize, to: usize, len: usize) -> Result<bool> {
        let n = self.caches.len();
        if from >= n || to >= n {
            return Err(Error::Model(format!(
                "fork of slot {from} into slot {to}: slots are 0..{n}"
            )));
        }
        match self.model.fork_seq(&self.caches[from], len) {
            None => Ok(false),
            Some(copy) => {
                self.caches[to] = copy.map_err(|e| Error::Model(one_line(&e.to_string())))?;
                Ok(true)
            }
        }
    }
}
