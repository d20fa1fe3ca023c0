//! `modelbench serve`: an OpenAI-compatible HTTP server over any model the suite loads.
//!
//! The model lives on ONE worker thread fed by a FIFO queue; each request runs to its end
//! through the engine's one generation loop ([`generate_until`]) before the next starts
//! (batch size 1: the suite's `CausalLm::forward` takes one sequence, see README). The HTTP
//! side (axum on a current-thread tokio runtime) tokenizes, validates and streams; the worker
//! sends each token through a channel, and a closed channel (the client went away) ends that
//! request at the next token, so its slot is freed.

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
use clap::Args;
use serde_json::{json, Value};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use modelbench::config::plans::parse_models;
use modelbench::engine::generate::{generate_until, Prompt};
use modelbench::engine::sampling::{Sampler, SamplingParams};
use modelbench::engine::scenario::prepare;
use modelbench::models::loading::{load_line, open};
use modelbench::models::tokenizer::{bos_id, encode, eos_ids, StreamDecoder};
use modelbench::models::CausalLm;

use crate::args::device_and_dtype;

/// `modelbench serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Model reference (fixture:, synthetic:, gguf:, a hub repo or a directory); requests
    /// name it by this string.
    #[arg(long)]
    pub model: String,
    /// Address to bind (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the line `listening on http://ADDR` says which).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Requests per forward pass. Only 1: the suite's models take one sequence per forward.
    #[arg(long, default_value_t = 1)]
    pub max_batch: usize,
    /// Positions a request may use (prompt + max_tokens); default: the model's context,
    /// capped at 4096.
    #[arg(long)]
    pub context: Option<usize>,
    /// Requests waiting beyond this get 503.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Seed of requests that give none (request n uses seed + n).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What the worker sends back for one request.
enum Event {
    /// Text of one generated token (empty while a multi-byte character is incomplete).
    Text(String),
    Done {
        finish: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
}

struct Job {
    ids: Vec<u32>,
    max_tokens: usize,
    sampling: SamplingParams,
    seed: u64,
    stop: Vec<String>,
    ignore_eos: bool,
    tx: UnboundedSender<Event>,
}

struct Shared {
    name: String,
    tok: Arc<Tokenizer>,
    bos: Option<u32>,
    context: usize,
    queue: std::sync::mpsc::SyncSender<Job>,
    next_id: AtomicU64,
    seed: u64,
    created: u64,
    device: String,
    dtype: String,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.max_batch == 1,
        "--max-batch {}: only 1 is supported (the suite's CausalLm::forward takes one \
         sequence, so requests run one at a time in FIFO order; see README)",
        a.max_batch
    );
    anyhow::ensure!(a.max_queue >= 1, "--max-queue must be at least 1");
    let (spec, dtype) = device_and_dtype(&a.device, a.dtype.as_deref())?;
    let models = parse_models(&a.model, "--model")?;
    let (label, r) = &models[0];
    let res = prepare(label, r, &[])?;
    let tok_path = res.tokenizer_path()?.to_path_buf();
    let tok = Arc::new(modelbench::models::tokenizer::load(&tok_path)?);
    let addr: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .map_err(|e| anyhow::anyhow!("--host {:?} / --port {}: {e}", a.host, a.port))?;
    let dev = spec.open_for("--device")?;
    let max_context = modelbench::engine::preflight::meta_of(&res, dtype, usize::MAX)
        .map(|m| m.max_context)
        .unwrap_or(4096);
    let context = match a.context {
        Some(c) if c < 2 => anyhow::bail!("--context {c}: must be at least 2"),
        Some(c) if c > max_context => {
            anyhow::bail!("--context {c}: beyond the model's context of {max_context} positions")
        }
        Some(c) => c,
        None => max_context.min(4096),
    };
    let loaded = open(res, &dev, dtype, Some(context))?;
    eprintln!("{}", load_line(&loaded));
    // What the weights are (`f32`, `gguf-q4_k_m`, ...), not only the activation dtype.
    let precision = loaded.model.meta().dtype.clone();
    let (qtx, qrx) = std::sync::mpsc::sync_channel::<Job>(a.max_queue);
    let model = loaded.model;
    let wtok = tok.clone();
    std::thread::Builder::new()
        .name("modelbench-model".into())
        .spawn(move || worker(model, wtok, qrx))?;
    let shared = Arc::new(Shared {
        name: label.clone(),
        bos: bos_id(&tok),
        tok,
        context,
        queue: qtx,
        next_id: AtomicU64::new(0),
        seed: a.seed,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        device: spec.to_string(),
        dtype: precision.clone(),
    });
    let app = Router::new()
        .route("/health", get(|| async { json_response(StatusCode::OK, json!({"status": "ok"})) }))
        .route("/v1/models", get(models_handler))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                &format!("no route {uri} (routes: /v1/completions, /v1/chat/completions, /v1/models, /health)"),
                "invalid_request_error",
                None,
                Some("not_found"),
            )
        })
        .with_state(shared);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e} (pick another --port)"))?;
        let bound = listener.local_addr()?;
        println!(
            "modelbench serve: {label} on {spec} ({precision}), context {context}, batch 1 (FIFO); listening on http://{bound}"
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        axum::serve(listener, app).await?;
        Ok::<(), anyhow::Error>(())
    })
}

/// The model thread: one request at a time, in arrival order.
fn worker(mut model: Box<dyn CausalLm>, tok: Arc<Tokenizer>, rx: std::sync::mpsc::Receiver<Job>) {
    let eos = eos_ids(&tok);
    while let Ok(job) = rx.recv() {
        if job.tx.is_closed() {
            continue; // the client left while queued
        }
        let t = Instant::now();
        let prompt_tokens = job.ids.len();
        let mut sampler = Sampler::new(job.sampling, job.seed);
        let mut dec = StreamDecoder::new(&tok);
        let mut text = String::new();
        let mut finish = "length";
        let mut gone = false;
        let mut err = None;
        let trace = generate_until(
            model.as_mut(),
            &Prompt::Ids(job.ids),
            job.max_tokens,
            &mut sampler,
            None,
            &mut |id| {
                if !job.ignore_eos && eos.contains(&id) {
                    finish = "stop";
                    return false;
                }
                let piece = match dec.push(id) {
                    Ok(p) => p.unwrap_or_default(),
                    Err(e) => {
                        err = Some(e.to_string());
                        return false;
                    }
                };
                let before = text.len();
                text.push_str(&piece);
                let mut out = piece;
                let mut go_on = true;
                if let Some(at) = job.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    out = text[before.min(at)..at].to_string();
                    finish = "stop";
                    go_on = false;
                }
                if job.tx.send(Event::Text(out)).is_err() {
                    gone = true;
                    return false;
                }
                go_on
            },
        );
        let msg = match (trace, err) {
            (Err(e), _) => Event::Failed(e.to_string()),
            (_, Some(e)) => Event::Failed(e),
            (Ok(tr), None) => {
                let completion_tokens = tr.tokens.len();
                eprintln!(
                    "request: {prompt_tokens} prompt + {completion_tokens} tokens, {}, {:.1} ms",
                    if gone { "client gone" } else { finish },
                    t.elapsed().as_secs_f64() * 1e3
                );
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                }
            }
        };
        let _ = job.tx.send(msg);
    }
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    json_response(
        status,
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

fn bad(message: String, param: Option<&str>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &message,
        "invalid_request_error",
        param,
        None,
    )
}

/// [`bad`], boxed (a `Response` is large for an `Err`).
fn rej(message: String, param: Option<&str>) -> Box<Response> {
    Box::new(bad(message, param))
}

async fn models_handler(State(s): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        json!({"object": "list", "data": [{
            "id": s.name, "object": "model", "created": s.created, "owned_by": "modelbench",
            "max_model_len": s.context,
            "modelbench": {"device": s.device, "dtype": s.dtype, "batch": 1}
        }]}),
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Completions,
    Chat,
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(s, body, Api::Completions).await
}

async fn chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(s, body, Api::Chat).await
}

/// A validated request.
struct Req {
    prompt: String,
    max_tokens: usize,
    sampling: SamplingParams,
    seed: Option<u64>,
    stop: Vec<String>,
    ignore_eos: bool,
    stream: bool,
    include_usage: bool,
}

fn parse(v: &Value, api: Api) -> Result<Req, Box<Response>> {
    let obj = v
        .as_object()
        .ok_or_else(|| rej("the request body must be a JSON object".into(), None))?;
    let num = |k: &str| -> Result<Option<f64>, Box<Response>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| rej(format!("`{k}` must be a number"), Some(k))),
        }
    };
    let boolean = |k: &str| -> Result<bool, Box<Response>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(rej(format!("`{k}` must be true or false"), Some(k))),
        }
    };
    let prompt = match api {
        Api::Completions => match obj.get("prompt") {
            Some(Value::String(p)) => p.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            None => return Err(rej("`prompt` is required".into(), Some("prompt"))),
            Some(_) => {
                return Err(rej(
                    "`prompt` must be a string (or an array of one string)".into(),
                    Some("prompt"),
                ))
            }
        },
        Api::Chat => {
            let msgs = obj
                .get("messages")
                .and_then(Value::as_array)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    rej(
                        "`messages` must be a non-empty array".into(),
                        Some("messages"),
                    )
                })?;
            // No chat template (see README): "role: content" lines, then "assistant:".
            let mut p = String::new();
            for m in msgs {
                let role = m.get("role").and_then(Value::as_str);
                let content = m.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(c)) => p.push_str(&format!("{r}: {c}\n")),
                    _ => {
                        return Err(rej(
                            "each message needs a string `role` and a string `content`".into(),
                            Some("messages"),
                        ))
                    }
                }
            }
            p.push_str("assistant:");
            p
        }
    };
    let max_key = if api == Api::Chat && obj.contains_key("max_completion_tokens") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let max_tokens = match obj.get(max_key) {
        None | Some(Value::Null) => 16,
        Some(x) => match x.as_u64() {
            Some(n) if n >= 1 => n as usize,
            _ => {
                return Err(rej(
                    format!("`{max_key}` must be an integer >= 1"),
                    Some(max_key),
                ))
            }
        },
    };
    let temperature = num("temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(rej(
            format!("`temperature` {temperature} must be in [0, 2]"),
            Some("temperature"),
        ));
    }
    let top_p = num("top_p")?;
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(rej(format!("`top_p` {p} must be in (0, 1]"), Some("top_p")));
        }
    }
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_u64()
                .ok_or_else(|| rej("`seed` must be an integer >= 0".into(), Some("seed")))?,
        ),
    };
    if let Some(n) = obj.get("n").filter(|n| !n.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(rej("only `n` = 1 is supported".into(), Some("n")));
        }
    }
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(rej(
                "`stop` must be a string or an array of at most 4 strings".into(),
                Some("stop"),
            ))
        }
    };
    if stop.iter().any(String::is_empty) {
        return Err(rej("`stop` strings must not be empty".into(), Some("stop")));
    }
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(rej(
                    "`stream_options.include_usage` must be true or false".into(),
                    Some("stream_options"),
                ))
            }
        },
        Some(_) => {
            return Err(rej(
                "`stream_options` must be an object".into(),
                Some("stream_options"),
            ))
        }
    };
    Ok(Req {
        prompt,
        max_tokens,
        sampling: SamplingParams {
            temperature,
            top_k: None,
            top_p: top_p.filter(|p| *p < 1.0),
            repetition_penalty: None,
            repeat_last_n: 64,
        },
        seed,
        stop,
        ignore_eos: boolean("ignore_eos")?,
        stream: boolean("stream")?,
        include_usage,
    })
}

async fn handle(s: Arc<Shared>, body: Bytes, api: Api) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("malformed JSON body: {e}"), None),
    };
    match v.get("model") {
        Some(Value::String(m)) if *m == s.name => {}
        Some(Value::String(m)) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!(
                    "The model `{m}` does not exist (this server serves `{}`)",
                    s.name
                ),
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            )
        }
        _ => return bad("`model` (a string) is required".into(), Some("model")),
    }
    let req = match parse(&v, api) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let mut ids = match encode(&s.tok, &req.prompt) {
        Ok(ids) => ids,
        Err(e) => return bad(format!("cannot tokenize the prompt: {e}"), Some("prompt")),
    };
    if let Some(b) = s.bos {
        if ids.first() != Some(&b) {
            ids.insert(0, b);
        }
    }
    let param = if api == Api::Chat {
        "messages"
    } else {
        "prompt"
    };
    if ids.is_empty() {
        return bad("the prompt encodes to no tokens".into(), Some(param));
    }
    if ids.len() + req.max_tokens > s.context {
        return error(
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
        );
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
        tx,
    };
    if s.queue.try_send(job).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request queue is full; retry later",
            "server_error",
            None,
            None,
        );
    }
    let meta = Meta {
        id: format!("{}-{n}", if api == Api::Chat { "chatcmpl" } else { "cmpl" }),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: s.name.clone(),
        api,
    };
    if req.stream {
        stream_response(meta, rx, req.include_usage)
    } else {
        collect_response(meta, rx).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    api: Api,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
        }
    }
    /// One streamed choice: the text piece (None: only the finish reason).
    fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
        let choice = match self.api {
            Api::Completions => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
            Api::Chat => {
                let delta = match (first, text) {
                    (true, t) => json!({"role": "assistant", "content": t.unwrap_or("")}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(true), "created": self.created,
               "model": self.model, "choices": [choice]})
    }
}

fn usage(p: usize, c: usize) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Server-sent events in OpenAI's format: `data: {chunk}\n\n` per piece, a last chunk with
/// the finish reason, the usage chunk (`stream_options.include_usage`), then `data: [DONE]`.
fn stream_response(meta: Meta, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    struct St {
        meta: Meta,
        rx: UnboundedReceiver<Event>,
        first: bool,
        done: bool,
        include_usage: bool,
    }
    let st = St {
        meta,
        rx,
        first: true,
        done: false,
        include_usage,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out = Vec::new();
        while out.is_empty() {
            let failed = match st.rx.recv().await {
                Some(Event::Text(t)) if t.is_empty() && !st.first => continue, // incomplete char
                Some(Event::Text(t)) => {
                    out.extend_from_slice(&sse(&st.meta.chunk(Some(&t), None, st.first)));
                    st.first = false;
                    continue;
                }
                Some(Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    let mut last = st.meta.chunk(None, Some(finish), st.first);
                    if st.include_usage {
                        last["usage"] = Value::Null;
                    }
                    out.extend_from_slice(&sse(&last));
                    if st.include_usage {
                        let mut u = st.meta.chunk(None, None, false);
                        u["choices"] = json!([]);
                        u["usage"] = usage(prompt_tokens, completion_tokens);
                        out.extend_from_slice(&sse(&u));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    st.done = true;
                    continue;
                }
                Some(Event::Failed(m)) => m,
                None => "the model worker stopped".to_string(),
            };
            let e = json!({"error": {"message": failed, "type": "server_error", "param": null, "code": null}});
            out.extend_from_slice(&sse(&e));
            out.extend_from_slice(b"data: [DONE]\n\n");
            st.done = true;
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

/// One JSON body with the whole text and `usage`.
async fn collect_response(meta: Meta, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                let choice = match meta.api {
                    Api::Completions => {
                        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
                    }
                    Api::Chat => json!({"index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null, "finish_reason": finish}),
                };
                return json_response(
                    StatusCode::OK,
                    json!({"id": meta.id, "object": meta.object(false), "created": meta.created,
                           "model": meta.model, "choices": [choice],
                           "usage": usage(prompt_tokens, completion_tokens)}),
                );
            }
            Some(Event::Failed(m)) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &m,
                    "server_error",
                    None,
                    None,
                )
            }
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the model worker stopped",
                    "server_error",
                    None,
                    None,
                )
            }
        }
    }
}
