//! The model thread of `modelbench serve`: continuous (iteration-level) batching.
//!
//! Requests wait in a bounded queue; between two steps the scheduler admits queued requests
//! into free slots (up to `max_batch`) and drops the ones whose client went away. Each step
//! runs, in one batched forward ([`StepModel::step`]), one token of every sequence that is
//! decoding and then whole prefill chunks of the sequences still reading their prompt (oldest
//! first) while the step's token budget (`max_batch_tokens`) lasts; a step always makes
//! progress (one chunk goes in even if the decodes used the budget). A prompt is cut into
//! chunks of `prefill_chunk` tokens at fixed offsets (0, C, 2C, ...), whatever else is in the
//! batch, so a request's computation (its chunks, its positions, its attention) is the same
//! alone or batched: with the project's Gemma 3, Llama and Qwen3 its greedy tokens and its
//! logits are bit-equal (tests/batching.rs). Finished sequences leave at once; their slot takes the next
//! request before the next step.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::sampling::{Sampler, SamplingParams};
use crate::error::Result;
pub use crate::models::batched::{host, StepModel, Work};
use crate::models::tokenizer::{eos_ids, StreamDecoder};
use crate::models::CausalLm;

/// Any other model: one sequence at a time, the whole prompt in one forward (the models'
/// `CausalLm::forward` takes one sequence).
pub struct Single {
    model: Box<dyn CausalLm>,
    pos: usize,
}

impl Single {
    pub fn new(model: Box<dyn CausalLm>) -> Self {
        Single { model, pos: 0 }
    }
}

impl StepModel for Single {
    fn slots(&self) -> usize {
        1
    }
    fn chunked(&self) -> bool {
        false
    }
    fn start(&mut self, _slot: usize) -> Result<()> {
        self.pos = 0;
        self.model.reset()
    }
    fn step(&mut self, work: &[Work<'_>]) -> Result<Vec<Option<Vec<f32>>>> {
        let mut out = Vec::with_capacity(work.len());
        for w in work {
            let l = self.model.forward(w.tokens, self.pos)?;
            self.pos += w.tokens.len();
            out.push(if w.logits { Some(host(&l)?) } else { None });
        }
        Ok(out)
    }
    fn describe(&self) -> String {
        format!(
            "{}, one sequence per forward",
            self.model.meta().provenance.implementation
        )
    }
}

/// What the scheduler sends back for one request.
pub enum Event {
    /// Text of one generated token (empty while a multi-byte character is incomplete).
    Text(String),
    Done(Finished),
    Failed(String),
}

/// The end of a request, with what it saw.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `length` or `stop`.
    pub finish: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// From entering the queue to taking a slot.
    pub queue_ms: f64,
    /// Sequences in the steps that ran it (mean and most).
    pub batch_mean: f64,
    pub batch_max: usize,
    /// Steps it took part in.
    pub steps: usize,
}

/// A request as the scheduler takes it.
pub struct Job {
    pub ids: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub tx: UnboundedSender<Event>,
    pub queued: Instant,
}

/// The scheduler's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most sequences per step (the model's slots).
    pub max_batch: usize,
    /// Most tokens per step (one prefill chunk always goes in).
    pub max_batch_tokens: usize,
    /// Prefill chunk length (prompts are cut at multiples of it).
    pub prefill_chunk: usize,
}

/// Counters for `/metrics` (Prometheus text) and the log.
#[derive(Debug, Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub rejected_full: AtomicU64,
    pub rejected_invalid: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub steps: AtomicU64,
    pub step_sequences: AtomicU64,
    pub step_tokens: AtomicU64,
    pub batch_max: AtomicUsize,
    /// Microseconds, summed over admitted requests.
    pub queue_us: AtomicU64,
    pub admitted: AtomicU64,
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
}

/// The `/metrics` rows, one a line: name (after `modelbench_`), Prometheus type, help; in
/// the order [`Metrics::render`] gives their values.
const METRICS: &str = "\
requests_accepted_total counter requests queued
requests_rejected_queue_full_total counter requests answered 503 (queue full)
requests_rejected_invalid_total counter requests answered 4xx (bad request)
requests_completed_total counter requests finished with a finish reason
requests_failed_total counter requests ended by a model error
requests_cancelled_total counter requests whose client went away
prompt_tokens_total counter prompt tokens of admitted requests
generation_tokens_total counter tokens generated
steps_total counter batched forward steps
step_sequences_mean gauge sequences per step, mean since start
step_tokens_mean gauge tokens per step, mean since start
step_sequences_max gauge most sequences seen in one step
queue_time_mean_ms gauge time from queue to slot, mean over admitted requests
requests_queued gauge requests waiting for a slot
requests_running gauge requests in a slot
max_batch gauge --max-batch
max_batch_tokens gauge --max-batch-tokens";

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self, limits: &Limits) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let steps = g(&self.steps);
        let mean = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let values: [String; 17] = [
            g(&self.accepted).to_string(),
            g(&self.rejected_full).to_string(),
            g(&self.rejected_invalid).to_string(),
            g(&self.completed).to_string(),
            g(&self.failed).to_string(),
            g(&self.cancelled).to_string(),
            g(&self.prompt_tokens).to_string(),
            g(&self.completion_tokens).to_string(),
            steps.to_string(),
            format!("{:.3}", mean(g(&self.step_sequences), steps)),
            format!("{:.3}", mean(g(&self.step_tokens), steps)),
            self.batch_max.load(Ordering::Relaxed).to_string(),
            format!("{:.3}", mean(g(&self.queue_us), g(&self.admitted)) / 1e3),
            self.queued.load(Ordering::Relaxed).to_string(),
            self.running.load(Ordering::Relaxed).to_string(),
            limits.max_batch.to_string(),
            limits.max_batch_tokens.to_string(),
        ];
        let mut s = String::new();
        debug_assert_eq!(METRICS.lines().count(), values.len());
        for (row, v) in METRICS.lines().zip(values) {
            let (name, rest) = row.split_once(' ').unwrap_or((row, ""));
            let (kind, help) = rest.split_once(' ').unwrap_or((rest, ""));
            s.push_str(&format!(
                "# HELP modelbench_{name} {help}\n# TYPE modelbench_{name} {kind}\nmodelbench_{name} {v}\n"
            ));
        }
        s
    }
}

/// The requests at positions `gone` of `active` leave it, their slots back in `free`.
fn leave(active: &mut Vec<Active<'_>>, free: &mut Vec<usize>, gone: &[usize]) {
    if gone.is_empty() {
        return;
    }
    let mut k = 0;
    active.retain(|a| {
        let keep = !gone.contains(&k);
        k += 1;
        if !keep {
            free.push(a.slot);
        }
        keep
    });
}

/// A request in a slot.
struct Active<'t> {
    job: Job,
    slot: usize,
    /// Prompt tokens run so far.
    fed: usize,
    /// Prompt and generated tokens (the sampler's context).
    context: Vec<u32>,
    generated: usize,
    sampler: Sampler,
    dec: StreamDecoder<'t>,
    text: String,
    queue_ms: f64,
    steps: usize,
    batch_sum: usize,
    batch_max: usize,
    started: Instant,
}

impl Active<'_> {
    /// Counts and logs a request whose client went away.
    fn client_gone(&self, metrics: &Metrics) {
        metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "request: {} prompt + {} tokens, client gone, {:.1} ms",
            self.job.ids.len(),
            self.generated,
            self.started.elapsed().as_secs_f64() * 1e3
        );
    }

    fn prompt_done(&self) -> bool {
        self.fed == self.job.ids.len()
    }
    fn finished(&self, finish: &'static str) -> Finished {
        Finished {
            finish,
            prompt_tokens: self.job.ids.len(),
            completion_tokens: self.generated,
            queue_ms: self.queue_ms,
            batch_mean: if self.steps == 0 {
                0.0
            } else {
                self.batch_sum as f64 / self.steps as f64
            },
            batch_max: self.batch_max,
            steps: self.steps,
        }
    }
}

/// What one sampled token did to its request.
enum After {
    Continue,
    Finish(&'static str),
    Gone,
    Failed(String),
}

/// Runs the scheduler until the queue's senders are all gone (the server stopped).
pub fn run(
    mut model: Box<dyn StepModel>,
    tok: Arc<Tokenizer>,
    rx: std::sync::mpsc::Receiver<Job>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let eos = eos_ids(&tok);
    let slots = model.slots().min(limits.max_batch).max(1);
    let chunk = if model.chunked() {
        limits.prefill_chunk.max(1)
    } else {
        usize::MAX
    };
    let mut free: Vec<usize> = (0..slots).rev().collect();
    let mut active: Vec<Active<'_>> = Vec::new();
    loop {
        // Leave: clients gone (streaming or not) free their slot before the next step.
        active.retain(|a| {
            if a.job.tx.is_closed() {
                a.client_gone(&metrics);
                free.push(a.slot);
                false
            } else {
                true
            }
        });
        metrics.running.store(active.len(), Ordering::Relaxed);
        // Join: queued requests into free slots (block when there is nothing to run).
        while !free.is_empty() {
            let job = if active.is_empty() {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        if active.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            };
            metrics.queued.fetch_sub(1, Ordering::Relaxed);
            if job.tx.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                continue; // the client left while queued
            }
            let slot = free.pop().expect("a free slot");
            if let Err(e) = model.start(slot) {
                let _ = job.tx.send(Event::Failed(e.to_string()));
                metrics.failed.fetch_add(1, Ordering::Relaxed);
                free.push(slot);
                continue;
            }
            active.push(admit(job, slot, &metrics, &tok));
        }
        metrics.running.store(active.len(), Ordering::Relaxed);
        if active.is_empty() {
            continue;
        }
        // The step: every decode, then whole prefill chunks while the budget lasts.
        let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (active index, from, to)
        let mut budget = limits.max_batch_tokens;
        for (i, a) in active.iter().enumerate() {
            if a.prompt_done() {
                plan.push((i, 0, 0));
                budget = budget.saturating_sub(1);
            }
        }
        for (i, a) in active.iter().enumerate() {
            if a.prompt_done() {
                continue;
            }
            let to = a.job.ids.len().min(a.fed.saturating_add(chunk));
            let n = to - a.fed;
            if n > budget && !plan.is_empty() {
                break; // oldest first: a later prompt does not overtake this one
            }
            plan.push((i, a.fed, to));
            budget = budget.saturating_sub(n);
        }
        let work: Vec<Work<'_>> = plan
            .iter()
            .map(|&(i, from, to)| {
                let a = &active[i];
                if a.prompt_done() {
                    Work {
                        slot: a.slot,
                        tokens: std::slice::from_ref(a.context.last().expect("a sampled token")),
                        logits: true,
                    }
                } else {
                    Work {
                        slot: a.slot,
                        tokens: &a.job.ids[from..to],
                        logits: to == a.job.ids.len(),
                    }
                }
            })
            .collect();
        let n_seq = work.len();
        let n_tok: usize = work.iter().map(|w| w.tokens.len()).sum();
        let result = model.step(&work);
        drop(work);
        metrics.steps.fetch_add(1, Ordering::Relaxed);
        metrics
            .step_sequences
            .fetch_add(n_seq as u64, Ordering::Relaxed);
        metrics
            .step_tokens
            .fetch_add(n_tok as u64, Ordering::Relaxed);
        metrics.batch_max.fetch_max(n_seq, Ordering::Relaxed);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // A failed step leaves the caches of its sequences undefined: end them all.
                let msg = e.to_string();
                eprintln!("step failed ({n_seq} sequences): {msg}");
                for &(i, _, _) in &plan {
                    let a = &active[i];
                    let _ = a.job.tx.send(Event::Failed(msg.clone()));
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                }
                let gone: Vec<usize> = plan.iter().map(|p| p.0).collect();
                leave(&mut active, &mut free, &gone);
                continue;
            }
        };
        let mut ended: Vec<usize> = Vec::new();
        for (&(i, _, to), l) in plan.iter().zip(logits) {
            let a = &mut active[i];
            a.steps += 1;
            a.batch_sum += n_seq;
            a.batch_max = a.batch_max.max(n_seq);
            if !a.prompt_done() {
                a.fed = to;
            }
            let Some(mut l) = l else { continue };
            let after = sample_one(a, &mut l, &eos);
            match after {
                After::Continue => {}
                After::Finish(finish) => {
                    let f = a.finished(finish);
                    metrics.completed.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .completion_tokens
                        .fetch_add(a.generated as u64, Ordering::Relaxed);
                    eprintln!(
                        "request: {} prompt + {} tokens, {finish}, queue {:.1} ms, batch mean {:.2} max {}, {:.1} ms",
                        f.prompt_tokens,
                        f.completion_tokens,
                        f.queue_ms,
                        f.batch_mean,
                        f.batch_max,
                        a.started.elapsed().as_secs_f64() * 1e3
                    );
                    let _ = a.job.tx.send(Event::Done(f));
                    ended.push(i);
                }
                After::Gone => {
                    a.client_gone(&metrics);
                    ended.push(i);
                }
                After::Failed(m) => {
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = a.job.tx.send(Event::Failed(m));
                    ended.push(i);
                }
            }
        }
        leave(&mut active, &mut free, &ended);
    }
}

/// A queued request taking slot `slot`.
fn admit<'t>(job: Job, slot: usize, metrics: &Metrics, tok: &'t Tokenizer) -> Active<'t> {
    let queue_ms = job.queued.elapsed().as_secs_f64() * 1e3;
    metrics.admitted.fetch_add(1, Ordering::Relaxed);
    metrics
        .queue_us
        .fetch_add((queue_ms * 1e3) as u64, Ordering::Relaxed);
    metrics
        .prompt_tokens
        .fetch_add(job.ids.len() as u64, Ordering::Relaxed);
    Active {
        slot,
        fed: 0,
        context: job.ids.clone(),
        generated: 0,
        sampler: Sampler::new(job.sampling, job.seed),
        dec: StreamDecoder::new(tok),
        text: String::new(),
        queue_ms,
        steps: 0,
        batch_sum: 0,
        batch_max: 0,
        started: Instant::now(),
        job,
    }
}

/// Samples the next token of `a` from its logits and streams its text.
fn sample_one(a: &mut Active<'_>, logits: &mut [f32], eos: &[u32]) -> After {
    let id = a.sampler.sample(logits, &a.context);
    if !a.job.ignore_eos && eos.contains(&id) {
        return After::Finish("stop");
    }
    a.generated += 1;
    a.context.push(id);
    let piece = match a.dec.push(id) {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return After::Failed(e.to_string()),
    };
    let before = a.text.len();
    a.text.push_str(&piece);
    let mut out = piece;
    let mut finish = None;
    if let Some(at) = a
        .job
        .stop
        .iter()
        .filter_map(|s| a.text.find(s.as_str()))
        .min()
    {
        out = a.text[before.min(at)..at].to_string();
        finish = Some("stop");
    }
    if a.job.tx.send(Event::Text(out)).is_err() {
        return After::Gone;
    }
    match finish {
        Some(f) => After::Finish(f),
        None if a.generated >= a.job.max_tokens => After::Finish("length"),
        None => After::Continue,
    }
}
