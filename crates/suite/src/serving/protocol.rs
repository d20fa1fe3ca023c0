//! The OpenAI wire format of `modelbench serve`: request parsing and validation, response
//! bodies and streamed chunks, and OpenAI-style error bodies.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::engine::sampling::SamplingParams;
use crate::serving::scheduler::Finished;

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

/// A validated request.
pub struct Req {
    pub prompt: String,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
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
    /// One streamed choice: the text piece (None: only the finish reason).
    pub fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
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

pub fn usage(p: usize, c: usize) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

pub fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// What a request saw in the server (`modelbench` extension of the final chunk and body):
/// queue time, and the sequences in the steps that ran it.
pub fn stats(f: &Finished) -> Value {
    json!({"queue_ms": (f.queue_ms * 1e3).round() / 1e3, "batch_mean": (f.batch_mean * 1e3).round() / 1e3,
           "batch_max": f.batch_max, "steps": f.steps})
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
