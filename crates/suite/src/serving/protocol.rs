//! The OpenAI wire format of `modelbench serve`: request parsing and validation, response
//! bodies and streamed chunks, and OpenAI-style error bodies.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::engine::sampling::SamplingParams;
use crate::serving::scheduler::{Finished, TokenLogprobs};

pub fn json_response(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error(
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

pub fn bad(message: String, param: Option<&str>) -> Response {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// Most choices one request may ask for (`n`).
pub const MAX_N: usize = 16;
/// Most alternatives per token (`top_logprobs`, or the completions API's `logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What a request asks to continue.
pub enum Prompt {
    /// The completions API's prompt.
    Text(String),
    /// The chat API's messages (checked: [`crate::serving::chat::check_messages`]),
    /// rendered by the model's chat format.
    Chat {
        messages: Vec<Value>,
        add_generation_prompt: bool,
        /// `chat_template_kwargs`: extra variables of the template (an object, or null).
        kwargs: Value,
    },
}

/// A validated request.
pub struct Req {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices (`n`).
    pub n: usize,
    /// Log-probabilities asked for, with this many alternatives per token.
    pub logprobs: Option<usize>,
    /// llama-server's `cache_prompt` (default true): the prompt may reuse cached positions.
    pub cache_prompt: bool,
}

pub fn parse(v: &Value, api: Api) -> Result<Req, Box<Response>> {
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
    let flag = |k: &str, default: bool| -> Result<bool, Box<Response>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(rej(format!("`{k}` must be true or false"), Some(k))),
        }
    };
    let boolean = |k: &str| flag(k, false);
    let prompt = match api {
        Api::Completions => match obj.get("prompt") {
            Some(Value::String(p)) => Prompt::Text(p.clone()),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or_default().to_string())
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
            let messages =
                crate::serving::chat::check_messages(msgs).map_err(|m| rej(m, Some("messages")))?;
            let add_generation_prompt = flag("add_generation_prompt", true)?;
            let kwargs = match obj.get("chat_template_kwargs") {
                None | Some(Value::Null) => Value::Null,
                Some(o @ Value::Object(_)) => o.clone(),
                Some(_) => {
                    return Err(rej(
                        "`chat_template_kwargs` must be an object".into(),
                        Some("chat_template_kwargs"),
                    ))
                }
            };
            Prompt::Chat {
                messages,
                add_generation_prompt,
                kwargs,
            }
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
    let n = match obj.get("n") {
        None | Some(Value::Null) => 1,
        Some(x) => match x.as_u64() {
            Some(n) if (1..=MAX_N as u64).contains(&n) => n as usize,
            _ => {
                return Err(rej(
                    format!("`n` must be an integer in 1..={MAX_N}"),
                    Some("n"),
                ))
            }
        },
    };
    let top = |k: &str| -> Result<Option<usize>, Box<Response>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => match x.as_u64() {
                Some(t) if t <= MAX_TOP_LOGPROBS as u64 => Ok(Some(t as usize)),
                _ => Err(rej(
                    format!("`{k}` must be an integer in 0..={MAX_TOP_LOGPROBS}"),
                    Some(k),
                )),
            },
        }
    };
    let logprobs = match api {
        // The completions API: `logprobs` is the number of alternatives (0: the token's own).
        Api::Completions => top("logprobs")?,
        // The chat API: `logprobs` true, `top_logprobs` alternatives.
        Api::Chat => {
            let on = boolean("logprobs")?;
            match top("top_logprobs")? {
                Some(_) if !on => {
                    return Err(rej(
                        "`top_logprobs` needs `logprobs`: true".into(),
                        Some("top_logprobs"),
                    ))
                }
                t => on.then(|| t.unwrap_or(0)),
            }
        }
    };
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
        n,
        logprobs,
        cache_prompt: flag("cache_prompt", true)?,
    })
}

pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub api: Api,
}

impl Meta {
    pub fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
        }
    }
    /// One streamed chunk of choice `index`: its text piece (None: only the finish reason),
    /// the finish reason, whether it is the choice's first (the chat API's role goes there) and
    /// its `logprobs` ([`logprobs_json`] of the chunk's tokens, or null).
    pub fn chunk(
        &self,
        index: usize,
        text: Option<&str>,
        finish: Option<&str>,
        first: bool,
        logprobs: Value,
    ) -> Value {
        let choice = match self.api {
            Api::Completions => {
                json!({"index": index, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish})
            }
            Api::Chat => {
                let delta = match (first, text) {
                    (true, t) => json!({"role": "assistant", "content": t.unwrap_or("")}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(true), "created": self.created,
               "model": self.model, "choices": [choice]})
    }

    /// One choice of the whole (non-streamed) body.
    pub fn choice(&self, index: usize, text: &str, finish: &str, logprobs: Value) -> Value {
        match self.api {
            Api::Completions => {
                json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
            Api::Chat => json!({"index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs, "finish_reason": finish}),
        }
    }
}

/// A log-probability as JSON: OpenAI's -9999 for an impossible token (JSON has no infinity).
fn lp(x: f32) -> Value {
    json!(if x.is_finite() {
        x.max(-9999.0)
    } else {
        -9999.0
    })
}

/// `logprobs` of a choice (or of one streamed chunk) in the API's shape, for `tokens` whose
/// first begins `offset` characters into the choice's text:
/// - chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
///   "bytes"}]}], "refusal": null}`;
/// - completions: `{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}],
///   "text_offset"}` (offsets from the start of the completion, in characters).
pub fn logprobs_json(api: Api, tokens: &[TokenLogprobs], offset: usize) -> Value {
    match api {
        Api::Chat => {
            let entry =
                |t: &str, x: f32| json!({"token": t, "logprob": lp(x), "bytes": t.as_bytes()});
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(&t.token, t.logprob);
                    e["top_logprobs"] = t.top.iter().map(|(s, x)| entry(s, *x)).collect();
                    e
                })
                .collect();
            json!({"content": content, "refusal": null})
        }
        Api::Completions => {
            let mut at = offset;
            let mut offsets = Vec::with_capacity(tokens.len());
            for t in tokens {
                offsets.push(at);
                at += t.token.chars().count();
            }
            let top: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut m = serde_json::Map::new();
                    for (s, x) in &t.top {
                        m.entry(s.clone()).or_insert_with(|| lp(*x));
                    }
                    Value::Object(m)
                })
                .collect();
            json!({"tokens": tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
                   "token_logprobs": tokens.iter().map(|t| lp(t.logprob)).collect::<Vec<_>>(),
                   "top_logprobs": top, "text_offset": offsets})
        }
    }
}

/// OpenAI's usage object: prompt tokens (`cached`: how many of them came from the prefix
/// cache, as `prompt_tokens_details.cached_tokens`) and completion tokens.
pub fn usage(p: usize, cached: usize, c: usize) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

pub fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// What a request saw in the server (`modelbench` extension of the final chunk and body):
/// queue time, the sequences in the steps that ran it, and the prompt tokens the prefix cache
/// gave it.
pub fn stats(f: &Finished) -> Value {
    json!({"queue_ms": (f.queue_ms * 1e3).round() / 1e3, "batch_mean": (f.batch_mean * 1e3).round() / 1e3,
           "batch_max": f.batch_max, "steps": f.steps, "cached_tokens": f.cached_tokens})
}

/// 503 with `Retry-After` (seconds): the queue is full.
pub fn overloaded(max_queue: usize) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the request queue is full ({max_queue} waiting); retry later"),
        "server_error",
        None,
        Some("queue_full"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}
