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
pub use crate::models::batched::{host, StepModel, Work};
use crate::models::tokenizers::{decode, eos_ids, StreamDecoder};
use crate::models::CausalLm;
use crate::serving::prefix::{Held, Placement};

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
    fn start(&mut self, _slot: usize) -> modelbench_models::Result<()> {
        self.pos = 0;
        self.model.reset()
    }
    fn step(&mut self, work: &[Work<'_>]) -> modelbench_models::Result<Vec<Option<Vec<f32>>>> {
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

/// What the scheduler sends back for one request (`index`: which of its `n` choices).
pub enum Event {
    /// One generated token of choice `index`: the text it releases (empty while a multi-byte
    /// character is incomplete or while the text could still be the start of a stop string)
    /// and, when the request asked, its log-probabilities. After the last token, a held-back
    /// text comes as an event with `logprobs` None.
    Token {
        index: usize,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Done {
        index: usize,
        finished: Finished,
    },
    Failed(String),
}

/// A sampled token's log-probability and the most likely tokens at its position, each with
/// its log-probability under the model's distribution (log-softmax of the logits, before
/// temperature and the sampler's cuts): the sampled token as the text it released, the
/// alternatives as the text each would add after the token before it.
#[derive(Debug, Clone)]
pub struct TokenLogprobs {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// The end of a request, with what it saw.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `length` or `stop`.
    pub finish: &'static str,
    pub prompt_tokens: usize,
    /// Prompt tokens not run again: their keys and values came from the prefix cache
    /// (OpenAI's `usage.prompt_tokens_details.cached_tokens`).
    pub cached_tokens: usize,
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
    /// Choice `i` samples with seed `seed + i`.
    pub seed: u64,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// Choices (OpenAI's `n`): one prefill, then each choice from a copy of the sequence where
    /// the model can copy one ([`StepModel::fork`]), else each choice prefills by itself.
    pub n: usize,
    /// Log-probabilities of each sampled token and of the `k` most likely at its position.
    pub logprobs: Option<usize>,
    pub tx: UnboundedSender<Event>,
    pub queued: Instant,
    /// Whether the prompt may reuse what a slot's cache holds (llama-server's `cache_prompt`,
    /// true unless the request says false; nothing is reused when the server's prefix cache
    /// is off).
    pub cache_prompt: bool,
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
    /// Prefix caching (serving/prefix.rs): a prompt reuses the positions a slot's cache holds
    /// of its start, where the model can keep a finished sequence's cache.
    pub prefix_cache: bool,
    /// Reuse positions a decode step computed too (see serving/prefix.rs).
    pub prefix_cache_decoded: bool,
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
    /// Prompts that reused cached positions, prompts that could have but found none, the
    /// positions reused, and the caches copied for it.
    pub prefix_hits: AtomicU64,
    pub prefix_misses: AtomicU64,
    pub prefix_reused_tokens: AtomicU64,
    pub prefix_copies: AtomicU64,
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
max_batch_tokens gauge --max-batch-tokens
prefix_cache_hits_total counter prompts that reused positions a slot's cache held
prefix_cache_misses_total counter prompts that could reuse cached positions but found none
prefix_cache_reused_tokens_total counter prompt tokens not run again (their keys and values reused)
prefix_cache_copies_total counter caches copied for reuse (from a running sequence, or cut to a prefix)";

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self, limits: &Limits) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let steps = g(&self.steps);
        let mean = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let values: [String; 21] = [
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
            g(&self.prefix_hits).to_string(),
            g(&self.prefix_misses).to_string(),
            g(&self.prefix_reused_tokens).to_string(),
            g(&self.prefix_copies).to_string(),
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

/// The sequences at positions `gone` of `active` leave it, their slots back in `free`.
fn leave(active: &mut Vec<Active<'_>>, free: &mut Vec<usize>, held: &mut Held, gone: &[usize]) {
    if gone.is_empty() {
        return;
    }
    let mut k = 0;
    active.retain(|a| {
        let keep = !gone.contains(&k);
        k += 1;
        if !keep {
            free.push(a.slot);
            held.freed(a.slot);
        }
        keep
    });
}

/// Takes slot `slot` out of `free`.
fn take(free: &mut Vec<usize>, slot: usize) {
    if let Some(k) = free.iter().position(|&s| s == slot) {
        free.remove(k);
    }
}

/// How a request ended, the worst of its choices' ends (for `/metrics`).
const ENDED_OK: u8 = 0;
const ENDED_GONE: u8 = 1;
const ENDED_FAILED: u8 = 2;

/// A request with the choices it still runs: shared by its sequences.
struct Request {
    job: Job,
    /// Choices not yet ended (queued, pending or in a slot).
    left: AtomicUsize,
    /// The worst end so far ([`ENDED_OK`], [`ENDED_GONE`], [`ENDED_FAILED`]).
    ended: std::sync::atomic::AtomicU8,
}

impl Request {
    /// One choice ended `how`; the request's counter of `/metrics` moves when it was the last.
    fn end(&self, how: u8, metrics: &Metrics) {
        self.ended.fetch_max(how, Ordering::Relaxed);
        if self.left.fetch_sub(1, Ordering::Relaxed) == 1 {
            let c = match self.ended.load(Ordering::Relaxed) {
                ENDED_OK => &metrics.completed,
                ENDED_GONE => &metrics.cancelled,
                _ => &metrics.failed,
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A choice of a request in a slot.
struct Active<'t> {
    req: Arc<Request>,
    /// Which choice (0..n).
    index: usize,
    /// Choices still to make from this sequence once its prompt is in (n - 1 for choice 0).
    forks: usize,
    slot: usize,
    /// Prompt tokens run so far (from the reused ones on).
    fed: usize,
    /// Prompt tokens whose keys and values were reused from a slot's cache.
    cached: usize,
    /// Prompt and generated tokens (the sampler's context).
    context: Vec<u32>,
    generated: usize,
    sampler: Sampler,
    dec: StreamDecoder<'t>,
    text: String,
    /// Bytes of `text` sent (the rest may begin a stop string).
    sent: usize,
    queue_ms: f64,
    steps: usize,
    batch_sum: usize,
    batch_max: usize,
    started: Instant,
}

impl<'t> Active<'t> {
    fn job(&self) -> &Job {
        &self.req.job
    }

    /// This choice ended `how`, and with it the choices still to be made from it.
    fn end(&self, how: u8, metrics: &Metrics) {
        for _ in 0..=self.forks {
            self.req.end(how, metrics);
        }
    }

    /// Counts and logs a choice whose client went away.
    fn client_gone(&self, metrics: &Metrics) {
        self.end(ENDED_GONE, metrics);
        eprintln!(
            "request: {} prompt + {} tokens, client gone, {:.1} ms",
            self.job().ids.len(),
            self.generated,
            self.started.elapsed().as_secs_f64() * 1e3
        );
    }

    fn prompt_done(&self) -> bool {
        self.fed == self.job().ids.len()
    }

    fn finished(&self, finish: &'static str) -> Finished {
        Finished {
            finish,
            prompt_tokens: self.job().ids.len(),
            cached_tokens: self.cached,
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

    /// Choice `index` of the same request from this sequence, whose prompt is in: in `slot`,
    /// which holds a copy of this sequence's cache.
    fn forked(&self, index: usize, slot: usize, tok: &'t Tokenizer) -> Active<'t> {
        Active {
            req: self.req.clone(),
            index,
            forks: 0,
            slot,
            fed: self.fed,
            cached: self.cached,
            context: self.context.clone(),
            generated: 0,
            sampler: Sampler::new(
                self.job().sampling,
                self.job().seed.wrapping_add(index as u64),
            ),
            dec: decoder(tok, &self.context),
            text: String::new(),
            sent: 0,
            queue_ms: self.queue_ms,
            steps: self.steps,
            batch_sum: self.batch_sum,
            batch_max: self.batch_max,
            started: self.started,
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
    let mut free: Vec<usize> = (0..slots).collect();
    let mut held = Held::new(slots, limits.prefix_cache_decoded);
    let reuse = limits.prefix_cache && model.keeps_prefixes();
    let mut active: Vec<Active<'_>> = Vec::new();
    // Choices that could not be copied from their first sequence: they prefill by themselves,
    // before any newer request.
    let mut pending: std::collections::VecDeque<(Arc<Request>, usize)> = Default::default();
    loop {
        // Leave: clients gone (streaming or not) free their slot before the next step.
        active.retain(|a| {
            if a.job().tx.is_closed() {
                a.client_gone(&metrics);
                free.push(a.slot);
                held.freed(a.slot);
                false
            } else {
                true
            }
        });
        metrics.running.store(active.len(), Ordering::Relaxed);
        // Join: pending choices, then queued requests, into free slots (block when there is
        // nothing to run).
        while !free.is_empty() {
            let (req, index) = match pending.pop_front() {
                Some(p) => p,
                None => {
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
                    let n = job.n.max(1);
                    let req = Arc::new(Request {
                        job,
                        left: AtomicUsize::new(n),
                        ended: Default::default(),
                    });
                    (req, 0)
                }
            };
            // Choice 0 stands for every choice still to be made from it.
            let choices = if index == 0 { req.job.n.max(1) } else { 1 };
            let end = |how: u8| (0..choices).for_each(|_| req.end(how, &metrics));
            if req.job.tx.is_closed() {
                end(ENDED_GONE); // the client left while this waited
                continue;
            }
            // The slot: the one whose cache holds the longest start of the prompt (or a copy
            // of a running sequence's), else the least recently freed (serving/prefix.rs).
            let busy: Vec<usize> = active.iter().map(|a| a.slot).collect();
            let asks = reuse && req.job.cache_prompt;
            let choice = held.choose(&free, &busy, &req.job.ids, asks);
            take(&mut free, choice.slot());
            let placed = match held.place(choice, model.as_mut()) {
                Ok(p) => p,
                Err(e) => {
                    let _ = req.job.tx.send(Event::Failed(e.to_string()));
                    end(ENDED_FAILED);
                    held.clear(choice.slot());
                    free.push(choice.slot());
                    continue;
                }
            };
            if asks {
                let c = if placed.reused > 0 {
                    &metrics.prefix_hits
                } else {
                    &metrics.prefix_misses
                };
                c.fetch_add(1, Ordering::Relaxed);
                metrics
                    .prefix_reused_tokens
                    .fetch_add(placed.reused as u64, Ordering::Relaxed);
                if placed.copied {
                    metrics.prefix_copies.fetch_add(1, Ordering::Relaxed);
                }
            }
            active.push(admit(req, index, placed, &metrics, &tok));
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
            // Chunks end at multiples of the chunk length whatever a prefix reused, so the
            // positions after the first boundary run as they would without the cache.
            let boundary = (a.fed / chunk).saturating_add(1).saturating_mul(chunk);
            let to = a.job().ids.len().min(boundary);
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
                        tokens: &a.job().ids[from..to],
                        logits: to == a.job().ids.len(),
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
                    let _ = a.job().tx.send(Event::Failed(msg.clone()));
                    a.end(ENDED_FAILED, &metrics);
                    held.clear(a.slot);
                }
                let gone: Vec<usize> = plan.iter().map(|p| p.0).collect();
                leave(&mut active, &mut free, &mut held, &gone);
                continue;
            }
        };
        let mut ended: Vec<usize> = Vec::new();
        // Choices copied from a sequence whose prompt just went in, with their first logits.
        let mut born: Vec<(Active<'_>, Vec<f32>)> = Vec::new();
        for (&(i, from, to), l) in plan.iter().zip(logits) {
            let a = &mut active[i];
            a.steps += 1;
            a.batch_sum += n_seq;
            a.batch_max = a.batch_max.max(n_seq);
            if !a.prompt_done() {
                held.ran(a.slot, &a.job().ids[from..to], true);
                a.fed = to;
            } else if let Some(&last) = a.context.last() {
                held.ran(a.slot, &[last], false);
            }
            let Some(mut l) = l else { continue };
            if a.forks > 0 {
                for index in a.index + 1..=a.index + a.forks {
                    let oldest = match free.is_empty() {
                        true => None,
                        false => Some(held.choose(&free, &[], &[], false).slot()),
                    };
                    let copied = match oldest {
                        Some(slot) => match model.fork(a.slot, slot, usize::MAX) {
                            Ok(true) => {
                                take(&mut free, slot);
                                held.copied(a.slot, slot, usize::MAX);
                                Some(slot)
                            }
                            Ok(false) => None,
                            Err(e) => {
                                eprintln!("fork of a sequence failed ({e}): its choice {index} prefills by itself");
                                None
                            }
                        },
                        None => None,
                    };
                    match copied {
                        Some(slot) => born.push((a.forked(index, slot, &tok), l.clone())),
                        None => pending.push_back((a.req.clone(), index)),
                    }
                }
                a.forks = 0;
            }
            let after = sample_one(a, &mut l, &eos, &tok);
            if settle(a, after, &metrics) {
                ended.push(i);
            }
        }
        leave(&mut active, &mut free, &mut held, &ended);
        for (mut a, mut l) in born {
            let after = sample_one(&mut a, &mut l, &eos, &tok);
            if settle(&mut a, after, &metrics) {
                free.push(a.slot);
                held.freed(a.slot);
            } else {
                active.push(a);
            }
        }
    }
}

/// Acts on what a sampled token did: sends the end of a finished choice (with any text held
/// back) and counts it. Returns whether the choice leaves its slot.
fn settle(a: &mut Active<'_>, after: After, metrics: &Metrics) -> bool {
    match after {
        After::Continue => false,
        After::Finish(finish) => {
            // Text held back as a possible stop string's start goes out now (a stop string's
            // end sent what comes before it already).
            if a.sent < a.text.len() {
                let rest = a.text[a.sent..].to_string();
                a.sent = a.text.len();
                let _ = a.job().tx.send(Event::Token {
                    index: a.index,
                    text: rest,
                    logprobs: None,
                });
            }
            let f = a.finished(finish);
            a.end(ENDED_OK, metrics);
            metrics
                .completion_tokens
                .fetch_add(a.generated as u64, Ordering::Relaxed);
            eprintln!(
                "request: {} prompt + {} tokens{}, {finish}, queue {:.1} ms, batch mean {:.2} max {}, {:.1} ms",
                f.prompt_tokens,
                f.completion_tokens,
                if a.job().n > 1 {
                    format!(" (choice {} of {})", a.index, a.job().n)
                } else {
                    String::new()
                },
                f.queue_ms,
                f.batch_mean,
                f.batch_max,
                a.started.elapsed().as_secs_f64() * 1e3
            );
            let _ = a.job().tx.send(Event::Done {
                index: a.index,
                finished: f,
            });
            true
        }
        After::Gone => {
            a.client_gone(metrics);
            true
        }
        After::Failed(m) => {
            a.end(ENDED_FAILED, metrics);
            let _ = a.job().tx.send(Event::Failed(m));
            true
        }
    }
}

/// Choice `index` of a request placed in a slot (its prompt still to run from the positions
/// the slot's cache gave it).
fn admit<'t>(
    req: Arc<Request>,
    index: usize,
    placed: Placement,
    metrics: &Metrics,
    tok: &'t Tokenizer,
) -> Active<'t> {
    let job = &req.job;
    let queue_ms = job.queued.elapsed().as_secs_f64() * 1e3;
    if index == 0 {
        metrics.admitted.fetch_add(1, Ordering::Relaxed);
        metrics
            .queue_us
            .fetch_add((queue_ms * 1e3) as u64, Ordering::Relaxed);
    }
    metrics
        .prompt_tokens
        .fetch_add(job.ids.len() as u64, Ordering::Relaxed);
    Active {
        slot: placed.slot,
        index,
        forks: if index == 0 {
            job.n.saturating_sub(1)
        } else {
            0
        },
        fed: placed.reused,
        cached: placed.reused,
        context: job.ids.clone(),
        generated: 0,
        sampler: Sampler::new(job.sampling, job.seed.wrapping_add(index as u64)),
        dec: decoder(tok, &job.ids),
        text: String::new(),
        sent: 0,
        queue_ms,
        steps: 0,
        batch_sum: 0,
        batch_max: 0,
        started: Instant::now(),
        req,
    }
}

/// A streaming decoder that continues `context` (its last token read first, its text not
/// sent): the first generated token's text is what it adds after the prompt (" e" after
/// "a b c d"), as a later token's is.
fn decoder<'t>(tok: &'t Tokenizer, context: &[u32]) -> StreamDecoder<'t> {
    let mut d = StreamDecoder::new(tok);
    if let Some(&last) = context.last() {
        let _ = d.push(last);
    }
    d
}

/// The text token `id` adds after `prev` (the token before it, if any).
pub fn token_piece(tok: &Tokenizer, prev: Option<u32>, id: u32) -> String {
    let Some(p) = prev else {
        return decode(tok, &[id]).unwrap_or_default();
    };
    let before = decode(tok, &[p]).unwrap_or_default();
    let both = decode(tok, &[p, id]).unwrap_or_default();
    let mut cut = before.len().min(both.len());
    while cut > 0 && !both.is_char_boundary(cut) {
        cut -= 1;
    }
    both[cut..].to_string()
}

/// Log-probabilities of `id` and of the `k` most likely tokens under `logits` (the model's,
/// before the sampler touched them), each token's text after `prev`.
pub fn logprobs_of(
    tok: &Tokenizer,
    prev: Option<u32>,
    logits: &[f32],
    id: u32,
    k: usize,
) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let lp = |i: u32| {
        logits
            .get(i as usize)
            .map_or(f32::NEG_INFINITY, |x| x - lse)
    };
    TokenLogprobs {
        token: token_piece(tok, prev, id),
        logprob: lp(id),
        top: match k {
            0 => Vec::new(),
            _ => crate::engine::sampling::top_k(logits, k)
                .into_iter()
                .map(|(t, _)| (token_piece(tok, prev, t), lp(t)))
                .collect(),
        },
    }
}

/// How many bytes at the end of `text` could begin one of `stops` (the longest such suffix
/// shorter than the stop string itself), on a character boundary.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for k in (1..s.len()).rev() {
            if k <= keep {
                break;
            }
            if k <= text.len()
                && text.is_char_boundary(text.len() - k)
                && s.is_char_boundary(k)
                && text.ends_with(&s[..k])
            {
                keep = k;
                break;
            }
        }
    }
    keep
}

/// Samples the next token of `a` from its logits and streams its text: all of it, except a
/// tail that could begin a stop string (sent once it cannot, or at the end); a stop string
/// ends the text before it.
fn sample_one(a: &mut Active<'_>, logits: &mut [f32], eos: &[u32], tok: &Tokenizer) -> After {
    let model_logits = a.job().logprobs.map(|_| logits.to_vec());
    let id = a.sampler.sample(logits, &a.context);
    if !a.job().ignore_eos && eos.contains(&id) {
        return After::Finish("stop");
    }
    let mut logprobs = model_logits.map(|l| {
        logprobs_of(
            tok,
            a.context.last().copied(),
            &l,
            id,
            a.job().logprobs.unwrap_or(0),
        )
    });
    a.generated += 1;
    a.context.push(id);
    let piece = match a.dec.push(id) {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return After::Failed(e.to_string()),
    };
    if let Some(l) = logprobs.as_mut() {
        // The sampled token as the text it released (a character split over tokens goes with
        // the token that completes it), so the tokens spell the text.
        l.token = piece.clone();
    }
    a.text.push_str(&piece);
    let stop_at = a
        .job()
        .stop
        .iter()
        .filter_map(|s| a.text.find(s.as_str()))
        .min();
    let upto = match stop_at {
        Some(at) => at,
        None => a.text.len() - held_back(&a.text, &a.job().stop),
    };
    let out = if upto > a.sent {
        let t = a.text[a.sent..upto].to_string();
        a.sent = upto;
        t
    } else {
        String::new()
    };
    if stop_at.is_some() {
        // What follows the stop string is never sent.
        a.text.truncate(a.sent);
    }
    let ev = Event::Token {
        index: a.index,
        text: out,
        logprobs,
    };
    if a.job().tx.send(ev).is_err() {
        return After::Gone;
    }
    match stop_at {
        Some(_) => After::Finish("stop"),
        None if a.generated >= a.job().max_tokens => After::Finish("length"),
        None => After::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_is_the_longest_tail_that_begins_a_stop_string() {
        let stops = vec!["\nuser:".to_string(), "END".to_string()];
        assert_eq!(held_back("hello\nus", &stops), 3);
        assert_eq!(held_back("hello\n", &stops), 1);
        assert_eq!(held_back("hello EN", &stops), 2);
        assert_eq!(held_back("hello", &stops), 0);
        assert_eq!(held_back("", &stops), 0);
        assert_eq!(held_back("xé", &["éa".to_string()]), 2);
        assert_eq!(held_back("abc", &[]), 0);
    }
}
