//! The HTTP side of `modelbench serve`: axum on a current-thread tokio runtime, in front of
//! the scheduler's model thread ([`super::scheduler`]). The HTTP side tokenizes, validates,
//! queues (a bounded queue: 503 with `Retry-After` when full) and streams; `/metrics` reports
//! the scheduler's counters. [`start`] runs it on threads of its own and returns the bound
//! address (tests run the server in-process); dropping the [`Running`] handle stops it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::error::{Error, Result};
use crate::models::batched::BatchOptions;
use crate::models::families::GgufImpl;
use crate::models::sources::Resolved;
use crate::models::tokenizers::bos_id;
use crate::models::CausalLm;
use crate::models::Weights;
use crate::serving::chat::{chat_prompt, prompt_ids, ChatFormat};
use crate::serving::protocol::{
    bad, error, json_response, logprobs_json, overloaded, parse, sse, stats, usage, Api, Meta,
    Prompt,
};
use crate::serving::scheduler::{
    self, Event, Finished, Job, Limits, Metrics, Single, TokenLogprobs,
};

/// Default `--max-batch` for a model that batches (llama-server's `--parallel` is 4 by
/// default; vLLM's is 256).
pub const DEFAULT_MAX_BATCH: usize = 8;
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 512;
pub const DEFAULT_PREFILL_CHUNK: usize = 256;
/// Default `--max-queue`: requests waiting beyond it get 503 with Retry-After.
pub const DEFAULT_MAX_QUEUE: usize = 256;
/// Default `--context` cap: the model's context, at most this many positions.
pub const DEFAULT_CONTEXT_CAP: usize = 4096;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The model's name in requests and `/v1/models`.
    pub name: String,
    /// Positions a request may use (prompt + max_tokens).
    pub context: usize,
    /// Sequences per step (None: [`DEFAULT_MAX_BATCH`] where the model batches, else 1).
    pub max_batch: Option<usize>,
    pub max_batch_tokens: usize,
    pub prefill_chunk: usize,
    /// Requests waiting beyond this get 503.
    pub max_queue: usize,
    /// Seed of requests that give none (request n uses seed + n).
    pub seed: u64,
    /// For `/v1/models`: the device and what the weights are.
    pub device: String,
    pub dtype: String,
    /// Run the batched Gemma 3's weights on the project's kernels (`models::q8_matmul`,
    /// AVX-512 VNNI; ggml's activation blocks for each weight type, each weight tile read once
    /// for up to 4 rows; GELU and softmax on the host); without AVX-512 VNNI, Q5_0 weights as
    /// Q8_0 on candle's SIMD loop. Logits differ from the bench path's in float rounding; the KL-divergence
    /// gate judges them (docs/serving.md). False (the default): the bench path's kernels.
    pub fast_weights: bool,
    /// How chat messages become a prompt: the model's chat template
    /// ([`ChatFormat::for_model`]), or the "role: content" fallback.
    pub chat: Arc<ChatFormat>,
    /// Prefix caching (serving/prefix.rs; on by default, as llama-server's `cache_prompt` and
    /// vLLM's automatic prefix caching are).
    pub prefix_cache: bool,
    /// Reuse positions a decode step computed too (`--prefix-cache-decoded`).
    pub prefix_cache_decoded: bool,
    /// Sliding-window layers keep every position (`--swa-full`): prompts longer than the
    /// window reusable by the prefix cache (see [`BatchOptions::swa_full`]).
    pub swa_full: bool,
}

impl Options {
    pub fn new(name: &str, context: usize) -> Options {
        Options {
            name: name.to_string(),
            context,
            max_batch: None,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            max_queue: DEFAULT_MAX_QUEUE,
            seed: 42,
            device: "cpu".into(),
            dtype: "unreported".into(),
            fast_weights: false,
            chat: Arc::new(ChatFormat::role_lines()),
            prefix_cache: true,
            prefix_cache_decoded: false,
            swa_full: false,
        }
    }

    /// The settings' own checks, before a model loads (each a one-line error naming the
    /// flag): every count at least 1, a prefill chunk within a step's tokens.
    pub fn check(&self) -> Result<()> {
        let bad_flag = |m: String| Err(Error::Serving(m));
        if self.max_queue == 0 {
            return bad_flag("--max-queue must be at least 1".into());
        }
        if self.max_batch == Some(0) {
            return bad_flag("--max-batch 0: must be at least 1".into());
        }
        if self.max_batch_tokens == 0 {
            return bad_flag("--max-batch-tokens 0: must be at least 1".into());
        }
        if self.prefill_chunk == 0 || self.prefill_chunk > self.max_batch_tokens {
            return bad_flag(format!(
                "--prefill-chunk {}: must be in 1..=--max-batch-tokens ({})",
                self.prefill_chunk, self.max_batch_tokens
            ));
        }
        Ok(())
    }
}

/// The positions a request may use: `asked` (`--context`) when the model has them, else the
/// model's context capped at [`DEFAULT_CONTEXT_CAP`].
pub fn context_for(asked: Option<usize>, model_context: usize) -> Result<usize> {
    match asked {
        Some(c) if c < 2 => Err(Error::Serving(format!("--context {c}: must be at least 2"))),
        Some(c) if c > model_context => Err(Error::Serving(format!(
            "--context {c}: beyond the model's context of {model_context} positions"
        ))),
        Some(c) => Ok(c),
        None => Ok(model_context.min(DEFAULT_CONTEXT_CAP)),
    }
}

struct Shared {
    name: String,
    chat: Arc<ChatFormat>,
    tok: Arc<Tokenizer>,
    bos: Option<u32>,
    context: usize,
    max_queue: usize,
    queue: std::sync::mpsc::SyncSender<Job>,
    next_id: AtomicU64,
    seed: u64,
    created: u64,
    device: String,
    dtype: String,
    limits: Limits,
    metrics: Arc<Metrics>,
}

/// A model ready to serve: the scheduler's model and the settings it runs under.
pub struct Prepared {
    model: Box<dyn scheduler::StepModel>,
    limits: Limits,
    /// One line for the log: how it batches.
    pub describe: String,
    /// Whether it runs the batched path (the project's Gemma 3, Llama or Qwen3), not the
    /// model's own forward.
    pub batched: bool,
}

/// `modelbench serve`'s choice of implementation, made before the model loads: a GGUF file
/// named without `?impl=` whose family's default is candle-transformers' (one cache per
/// model) runs the project's own implementation (which batches) when `--max-batch` above 1 is
/// asked and the family table has one. Returns whether it changed the choice. An explicit
/// `?impl=` is kept (and [`prepare`] refuses `--max-batch` above 1 with candle-transformers').
pub fn choose_impl(res: &mut Resolved, max_batch: Option<usize>) -> bool {
    let gguf = matches!(res.weights, Weights::Gguf(_));
    let family = crate::models::families::of(res.family).is_some_and(|f| {
        f.implementations[0].imp != GgufImpl::Modelbench
            && f.implementation(GgufImpl::Modelbench).is_some()
    });
    if !gguf || !family || max_batch.is_none_or(|n| n <= 1) {
        return false;
    }
    match res.gguf.as_mut() {
        Some(g) if g.imp.is_none() => {
            g.imp = Some(GgufImpl::Modelbench);
            true
        }
        _ => false,
    }
}

/// Picks how `model` is served: the project's Gemma 3, Llama or Qwen3 batched over
/// `max_batch` slots, any other model one sequence at a time (an explicit `--max-batch` above
/// 1 is an error there).
pub fn prepare(mut model: Box<dyn CausalLm>, o: &Options) -> Result<Prepared> {
    o.check()?;
    let bad_flag = |m: String| Err(Error::Serving(m));
    let slots = o.max_batch.unwrap_or(DEFAULT_MAX_BATCH);
    let asked = BatchOptions {
        slots,
        fast_weights: o.fast_weights,
        swa_full: o.swa_full,
    };
    if let Some(b) = model.batched(&asked) {
        let b = b?;
        return Ok(Prepared {
            limits: Limits {
                max_batch: slots,
                max_batch_tokens: o.max_batch_tokens,
                prefill_chunk: o.prefill_chunk,
                prefix_cache: o.prefix_cache,
                prefix_cache_decoded: o.prefix_cache_decoded,
            },
            batched: true,
            describe: format!(
                "continuous batching: up to {slots} sequences and {} tokens per step, prefill chunks of {}, prefix cache {}; {}",
                o.max_batch_tokens,
                o.prefill_chunk,
                match (o.prefix_cache, o.prefix_cache_decoded) {
                    (true, false) => "on (each slot's last sequence, prefill-computed positions: outputs as without it; --no-prefix-cache turns it off)",
                    (true, true) => "on (each slot's last sequence, decode-computed positions too: outputs may differ from the cache off)",
                    (false, _) => "off",
                },
                b.describe()
            ),
            model: b,
        });
    }
    let meta = model.meta();
    if let Some(n) = o.max_batch.filter(|n| *n > 1) {
        let how = match crate::models::families::of(meta.family) {
            Some(f)
                if meta.provenance.gguf.is_some()
                    && f.implementation(GgufImpl::Modelbench).is_some() =>
            {
                format!(
                    "this {} GGUF file batches with the project's implementation: name it with ?impl=modelbench or leave impl= out (serve then picks it)",
                    meta.family
                )
            }
            _ => format!(
                "continuous batching exists for the project's quantized implementations ({} GGUF files)",
                crate::models::families::GGUF_FAMILIES
                    .iter()
                    .filter(|f| f.implementation(GgufImpl::Modelbench).is_some())
                    .map(|f| f.arch)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return bad_flag(format!(
            "--max-batch {n}: {} runs one sequence per forward; {how}; or leave --max-batch out or pass 1",
            meta.provenance.implementation
        ));
    }
    if o.fast_weights {
        return bad_flag(format!(
            "--fast-weights: {} has no batched path to run on other kernels; it exists for the project's quantized Gemma 3 (gguf: Gemma 3 files); leave --fast-weights out",
            meta.provenance.implementation
        ));
    }
    Ok(Prepared {
        model: Box::new(Single::new(model)),
        batched: false,
        limits: Limits {
            max_batch: 1,
            max_batch_tokens: usize::MAX,
            prefill_chunk: usize::MAX,
            prefix_cache: false,
            prefix_cache_decoded: false,
        },
        describe: "batch 1 (FIFO): this model runs one sequence per forward, no prefix cache (it has no batched form to keep a finished sequence's cache)".into(),
    })
}

/// One request's computation exactly as the server runs it, behind [`CausalLm`] (for the
/// KL-divergence gate: `modelbench verify --served` / `--fast-weights`, tests/kld.rs): the
/// scheduler's model from [`prepare`] (the same code, with one slot), a prompt cut into
/// `prefill_chunk` pieces at the scheduler's offsets (0, C, 2C, ... of the sequence), later
/// tokens as given (the gate decodes one at a time, as the server does). Not a second
/// implementation: [`prepare`] builds it as it builds the server's.
pub struct Served {
    model: Box<dyn scheduler::StepModel>,
    chunk: usize,
    pos: usize,
    meta: crate::models::ModelMeta,
    device: candle_core::Device,
}

/// The model as `modelbench serve` with options `o` computes it (see [`Served`]). For the
/// project's Gemma 3 the implementation named in its meta (part of a stored quality verdict's
/// key) says so, with `--fast-weights` where set, so verdicts of the bench path and of the
/// served path are stored apart.
pub fn served(model: Box<dyn CausalLm>, o: &Options) -> Result<Served> {
    let mut meta = model.meta().clone();
    let device = model.device().clone();
    let o = Options {
        max_batch: Some(1),
        ..o.clone()
    };
    let p = prepare(model, &o)?;
    if p.batched {
        meta.provenance.implementation = format!(
            "{}; as `modelbench serve` runs it (batched path, prefill chunks of {}{})",
            meta.provenance.implementation,
            o.prefill_chunk,
            match (o.fast_weights, crate::models::q8_matmul::available()) {
                (true, true) => ", --fast-weights: the project's AVX-512 VNNI kernels",
                (true, false) => ", --fast-weights: its fallback without AVX-512 VNNI (Q5_0 as Q8_0 on candle's kernels)",
                (false, _) => "",
            }
        );
    }
    let chunk = if p.model.chunked() {
        p.limits.prefill_chunk.max(1)
    } else {
        usize::MAX
    };
    Ok(Served {
        model: p.model,
        chunk,
        pos: 0,
        meta,
        device,
    })
}

/// `l` with its model replaced by [`served`]`(model, o)` (file and tokenizer kept; the load's
/// memory figures extended over the preparation, e.g. `--fast-weights`' repack).
pub fn served_loaded(
    l: crate::models::sources::loading::Loaded,
    o: &Options,
) -> Result<crate::models::sources::loading::Loaded> {
    let crate::models::sources::loading::Loaded {
        resolved,
        model,
        tokenizer,
        mut load,
    } = l;
    let model = Box::new(served(model, o)?);
    crate::models::sources::loading::extend_to_now(&mut load);
    Ok(crate::models::sources::loading::Loaded {
        resolved,
        model,
        tokenizer,
        load,
    })
}

impl CausalLm for Served {
    fn reset(&mut self) -> modelbench_models::Result<()> {
        self.pos = 0;
        self.model.start(0)
    }

    fn forward(
        &mut self,
        tokens: &[u32],
        pos: usize,
    ) -> modelbench_models::Result<candle_core::Tensor> {
        if tokens.is_empty() {
            return Err(modelbench_models::Error::Model(
                "forward of zero tokens".into(),
            ));
        }
        if pos == 0 {
            self.reset()?;
        } else if pos != self.pos {
            return Err(modelbench_models::Error::Model(format!(
                "forward at position {pos} but the sequence holds {} positions (reset, or continue at {})",
                self.pos, self.pos
            )));
        }
        let mut last = None;
        let mut done = 0;
        while done < tokens.len() {
            // The next cut at a multiple of the chunk, as the scheduler cuts a prompt.
            let at = self.pos + done;
            let room = self.chunk - at % self.chunk;
            let n = room.min(tokens.len() - done);
            let end = done + n;
            let out = self.model.step(&[scheduler::Work {
                slot: 0,
                tokens: &tokens[done..end],
                logits: end == tokens.len(),
            }])?;
            last = out.into_iter().next().flatten();
            done = end;
        }
        self.pos += tokens.len();
        let l = last
            .ok_or_else(|| modelbench_models::Error::Model("the step returned no logits".into()))?;
        let n = l.len();
        Ok(candle_core::Tensor::from_vec(l, n, &self.device)?)
    }

    fn meta(&self) -> &crate::models::ModelMeta {
        &self.meta
    }

    fn device(&self) -> &candle_core::Device {
        &self.device
    }

    fn depth(&self) -> usize {
        self.pos
    }
}

/// A running server; dropping it stops the HTTP side (the model thread ends with it).
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<std::thread::JoinHandle<()>>,
    pub metrics: Arc<Metrics>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Blocks until the server stops (never, unless it fails).
    pub fn wait(mut self) {
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
    }
}

/// Binds `addr` and serves `p` on threads of their own (the model thread and one HTTP
/// thread).
pub fn start(p: Prepared, tok: Tokenizer, o: &Options, addr: SocketAddr) -> Result<Running> {
    let tok = Arc::new(tok);
    let metrics = Arc::new(Metrics::default());
    let (qtx, qrx) = std::sync::mpsc::sync_channel::<Job>(o.max_queue);
    let limits = p.limits;
    {
        let (tok, metrics) = (tok.clone(), metrics.clone());
        let model = p.model;
        std::thread::Builder::new()
            .name("modelbench-model".into())
            .spawn(move || scheduler::run(model, tok, qrx, limits, metrics))
            .map_err(|e| Error::Serving(format!("cannot start the model thread: {e}")))?;
    }
    let shared = Arc::new(Shared {
        name: o.name.clone(),
        chat: o.chat.clone(),
        bos: bos_id(&tok),
        tok,
        context: o.context,
        max_queue: o.max_queue,
        queue: qtx,
        next_id: AtomicU64::new(0),
        seed: o.seed,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        device: o.device.clone(),
        dtype: o.dtype.clone(),
        limits,
        metrics: metrics.clone(),
    });
    let texts = super::tokens::routes(super::tokens::Texts {
        chat: shared.chat.clone(),
        tok: shared.tok.clone(),
        bos: shared.bos,
    });
    let app = Router::new()
        .route(
            "/health",
            get(|| async { json_response(StatusCode::OK, json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics_handler))
        .route("/v1/models", get(models_handler))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                &format!("no route {uri} (routes: /v1/completions, /v1/chat/completions, /v1/models, /apply-template, /tokenize, /detokenize, /metrics, /health)"),
                "invalid_request_error",
                None,
                Some("not_found"),
            )
        })
        .with_state(shared)
        .merge(texts);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::Serving(format!("cannot start the HTTP runtime: {e}")))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| Error::Serving(format!("cannot bind {addr}: {e} (pick another --port)")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Serving(format!("cannot bind {addr}: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = std::thread::Builder::new()
        .name("modelbench-http".into())
        .spawn(move || {
            rt.block_on(async move {
                let r = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
                if let Err(e) = r {
                    eprintln!("modelbench serve: the HTTP server stopped: {e}");
                }
            })
        })
        .map_err(|e| Error::Serving(format!("cannot start the HTTP thread: {e}")))?;
    Ok(Running {
        addr: bound,
        stop: Some(stop_tx),
        http: Some(http),
        metrics,
    })
}

async fn metrics_handler(State(s): State<Arc<Shared>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&s.limits),
    )
        .into_response()
}

async fn models_handler(State(s): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        json!({"object": "list", "data": [{
            "id": s.name, "object": "model", "created": s.created, "owned_by": "modelbench",
            "max_model_len": s.context,
            "modelbench": {"device": s.device, "dtype": s.dtype, "batch": s.limits.max_batch,
                           "max_batch_tokens": s.limits.max_batch_tokens}
        }]}),
    )
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(s, body, Api::Completions).await
}

async fn chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(s, body, Api::Chat).await
}

async fn handle(s: Arc<Shared>, body: Bytes, api: Api) -> Response {
    match validate_and_queue(&s, body, api) {
        Parts::Done(resp) => {
            if resp.status().is_client_error() {
                s.metrics.rejected_invalid.fetch_add(1, Ordering::Relaxed);
            }
            resp
        }
        Parts::Queued {
            meta,
            rx,
            stream,
            include_usage,
            n,
            logprobs,
        } => {
            let how = Collect { meta, n, logprobs };
            if stream {
                stream_response(how, rx, include_usage)
            } else {
                collect_response(how, rx).await
            }
        }
    }
}

/// What shapes a queued request's answer.
struct Collect {
    meta: Meta,
    /// Choices.
    n: usize,
    /// Whether `logprobs` go in the choices.
    logprobs: bool,
}

/// A request answered at once, or queued.
enum Parts {
    Done(Response),
    Queued {
        meta: Meta,
        rx: UnboundedReceiver<Event>,
        stream: bool,
        include_usage: bool,
        n: usize,
        logprobs: bool,
    },
}

fn validate_and_queue(s: &Shared, body: Bytes, api: Api) -> Parts {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Parts::Done(bad(format!("malformed JSON body: {e}"), None)),
    };
    match v.get("model") {
        Some(Value::String(m)) if *m == s.name => {}
        Some(Value::String(m)) => {
            return Parts::Done(error(
                StatusCode::NOT_FOUND,
                &format!(
                    "The model `{m}` does not exist (this server serves `{}`)",
                    s.name
                ),
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ))
        }
        _ => return Parts::Done(bad("`model` (a string) is required".into(), Some("model"))),
    }
    let req = match parse(&v, api) {
        Ok(r) => r,
        Err(resp) => return Parts::Done(*resp),
    };
    let ids = match &req.prompt {
        Prompt::Text(p) => match prompt_ids(&s.tok, s.bos, p) {
            Ok(ids) => ids,
            Err(e) => {
                return Parts::Done(bad(
                    format!("cannot tokenize the prompt: {e}"),
                    Some("prompt"),
                ))
            }
        },
        Prompt::Chat {
            messages,
            add_generation_prompt,
            kwargs,
        } => match chat_prompt(
            &s.chat,
            &s.tok,
            s.bos,
            messages,
            *add_generation_prompt,
            kwargs,
        ) {
            Ok((_, ids)) => ids,
            Err(m) => return Parts::Done(bad(m, Some("messages"))),
        },
    };
    let param = if api == Api::Chat {
        "messages"
    } else {
        "prompt"
    };
    if ids.is_empty() {
        return Parts::Done(bad("the prompt encodes to no tokens".into(), Some(param)));
    }
    if ids.len() + req.max_tokens > s.context {
        return Parts::Done(error(
            StatusCode::BAD_REQUEST,
            &format!(
                "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the prompt, {} for the completion). Please reduce the prompt or max_tokens.",
                s.context,
                ids.len() + req.max_tokens,
                ids.len(),
                req.max_tokens
            ),
            "invalid_request_error",
            Some(param),
            Some("context_length_exceeded"),
        ));
    }
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = unbounded_channel();
    let job = Job {
        ids,
        max_tokens: req.max_tokens,
        sampling: req.sampling,
        seed: req.seed.unwrap_or(s.seed.wrapping_add(n)),
        stop: req.stop.clone(),
        ignore_eos: req.ignore_eos,
        n: req.n,
        logprobs: req.logprobs,
        tx,
        queued: Instant::now(),
        cache_prompt: req.cache_prompt,
    };
    // Counted before the send: the model thread may take it (and count it down) at once.
    s.metrics.queued.fetch_add(1, Ordering::Relaxed);
    if s.queue.try_send(job).is_err() {
        s.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        s.metrics.rejected_full.fetch_add(1, Ordering::Relaxed);
        return Parts::Done(overloaded(s.max_queue));
    }
    s.metrics.accepted.fetch_add(1, Ordering::Relaxed);
    Parts::Queued {
        meta: Meta {
            id: format!("{}-{n}", if api == Api::Chat { "chatcmpl" } else { "cmpl" }),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            model: s.name.clone(),
            api,
        },
        rx,
        stream: req.stream,
        include_usage: req.include_usage,
        n: req.n,
        logprobs: req.logprobs.is_some(),
    }
}

/// Server-sent events in OpenAI's format: `data: {chunk}\n\n` per piece of each choice (with
/// its tokens' `logprobs` when asked), a chunk with each choice's finish reason (and its
/// `modelbench` stats), once every choice finished the usage chunk
/// (`stream_options.include_usage`: then every other chunk carries `"usage": null`), then
/// `data: [DONE]`.
fn stream_response(how: Collect, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    struct St {
        how: Collect,
        rx: UnboundedReceiver<Event>,
        /// Per choice: nothing sent yet, characters of its tokens so far.
        first: Vec<bool>,
        offset: Vec<usize>,
        done: Vec<Option<Finished>>,
        over: bool,
        include_usage: bool,
    }
    let n = how.n;
    let st = St {
        how,
        rx,
        first: vec![true; n],
        offset: vec![0; n],
        done: vec![None; n],
        over: false,
        include_usage,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.over {
            return None;
        }
        let mut out = Vec::new();
        let send = |out: &mut Vec<u8>, mut v: Value, include_usage: bool| {
            if include_usage {
                v["usage"] = Value::Null;
            }
            out.extend_from_slice(&sse(&v));
        };
        while out.is_empty() {
            let failed = match st.rx.recv().await {
                Some(Event::Token {
                    index,
                    text,
                    logprobs,
                }) if index < st.how.n => {
                    if text.is_empty() && logprobs.is_none() && !st.first[index] {
                        continue; // an incomplete character, or text held back
                    }
                    let lp = match &logprobs {
                        Some(t) if st.how.logprobs => {
                            let v = logprobs_json(
                                st.how.meta.api,
                                std::slice::from_ref(t),
                                st.offset[index],
                            );
                            st.offset[index] += t.token.chars().count();
                            v
                        }
                        _ => Value::Null,
                    };
                    let c = st
                        .how
                        .meta
                        .chunk(index, Some(&text), None, st.first[index], lp);
                    send(&mut out, c, st.include_usage);
                    st.first[index] = false;
                    continue;
                }
                Some(Event::Done { index, finished }) if index < st.how.n => {
                    let mut last = st.how.meta.chunk(
                        index,
                        None,
                        Some(finished.finish),
                        st.first[index],
                        Value::Null,
                    );
                    last["modelbench"] = stats(&finished);
                    send(&mut out, last, st.include_usage);
                    st.done[index] = Some(finished);
                    if st.done.iter().all(Option::is_some) {
                        if st.include_usage {
                            let done: Vec<&Finished> = st.done.iter().flatten().collect();
                            let mut u = st.how.meta.chunk(0, None, None, false, Value::Null);
                            u["choices"] = json!([]);
                            u["usage"] = usage(
                                done[0].prompt_tokens,
                                done[0].cached_tokens,
                                done.iter().map(|f| f.completion_tokens).sum(),
                            );
                            out.extend_from_slice(&sse(&u));
                        }
                        out.extend_from_slice(b"data: [DONE]\n\n");
                        st.over = true;
                    }
                    continue;
                }
                Some(Event::Token { index, .. } | Event::Done { index, .. }) => {
                    format!("the model worker sent choice {index} of {}", st.how.n)
                }
                Some(Event::Failed(m)) => m,
                None => "the model worker stopped".to_string(),
            };
            let e = json!({"error": {"message": failed, "type": "server_error", "param": null, "code": null}});
            out.extend_from_slice(&sse(&e));
            out.extend_from_slice(b"data: [DONE]\n\n");
            st.over = true;
        }
        Some((Ok::<Bytes, Infallible>(Bytes::from(out)), st))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One JSON body with every choice's whole text (and `logprobs` when asked), `usage` (the
/// prompt once, the completion tokens of all choices) and the first choice's `modelbench`
/// stats.
async fn collect_response(how: Collect, mut rx: UnboundedReceiver<Event>) -> Response {
    let n = how.n;
    let mut text = vec![String::new(); n];
    let mut tokens: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); n];
    let mut done: Vec<Option<Finished>> = vec![None; n];
    let failed = loop {
        match rx.recv().await {
            Some(Event::Token {
                index,
                text: t,
                logprobs,
            }) if index < n => {
                text[index].push_str(&t);
                tokens[index].extend(logprobs);
            }
            Some(Event::Done { index, finished }) if index < n => {
                done[index] = Some(finished);
                if done.iter().all(Option::is_some) {
                    break None;
                }
            }
            Some(Event::Token { index, .. } | Event::Done { index, .. }) => {
                break Some(format!("the model worker sent choice {index} of {n}"))
            }
            Some(Event::Failed(m)) => break Some(m),
            None => break Some("the model worker stopped".to_string()),
        }
    };
    if let Some(m) = failed {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &m,
            "server_error",
            None,
            None,
        );
    }
    let done: Vec<Finished> = done.into_iter().flatten().collect();
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            let lp = if how.logprobs {
                logprobs_json(how.meta.api, &tokens[i], 0)
            } else {
                Value::Null
            };
            how.meta.choice(i, &text[i], done[i].finish, lp)
        })
        .collect();
    let meta = &how.meta;
    json_response(
        StatusCode::OK,
        json!({"id": meta.id, "object": meta.object(false), "created": meta.created,
               "model": meta.model, "choices": choices,
               "usage": usage(done[0].prompt_tokens, done[0].cached_tokens, done.iter().map(|f| f.completion_tokens).sum()),
               "modelbench": stats(&done[0])}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_check_themselves() {
        let o = Options::new("m", 512);
        assert!(o.check().is_ok());
        let mut q = o.clone();
        q.max_queue = 0;
        assert_eq!(
            q.check().unwrap_err().to_string(),
            "--max-queue must be at least 1"
        );
        let mut c = o.clone();
        c.prefill_chunk = c.max_batch_tokens + 1;
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("--prefill-chunk "));
        let mut b = o;
        b.max_batch = Some(0);
        assert_eq!(
            b.check().unwrap_err().to_string(),
            "--max-batch 0: must be at least 1"
        );
    }

    #[test]
    fn the_context_is_the_models_capped_unless_asked() {
        assert_eq!(context_for(None, 131072).unwrap(), DEFAULT_CONTEXT_CAP);
        assert_eq!(context_for(None, 512).unwrap(), 512);
        assert_eq!(context_for(Some(256), 512).unwrap(), 256);
        assert_eq!(
            context_for(Some(1), 512).unwrap_err().to_string(),
            "--context 1: must be at least 2"
        );
        assert_eq!(
            context_for(Some(1024), 512).unwrap_err().to_string(),
            "--context 1024: beyond the model's context of 512 positions"
        );
    }
}
