//! The load generator's client: what every request to one server shares, a request and a
//! conversation (the streamed reply read event by event, timed and checked), and one level
//! run closed- or open-loop by its users.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{MAX_CONCURRENCY, MAX_DURATION_S, MAX_REQUESTS};
use crate::error::{Error, Result};
use crate::measure::latency::{poisson_gaps, RequestTiming};
use crate::measure::outputs::hash_text;

#[derive(Clone, Copy)]
pub(super) enum Mode {
    Closed(usize),
    Open(f64),
}

impl Mode {
    pub(super) fn name(self) -> String {
        match self {
            Mode::Closed(c) => format!("c={c}"),
            Mode::Open(r) => format!("rate={r}/s"),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Stop {
    Duration(f64),
    Requests(usize),
}

/// What every request to one server shares.
pub(super) struct Client {
    pub(super) agent: ureq::Agent,
    pub(super) url: String,
    pub(super) model: String,
    pub(super) chat: bool,
    pub(super) max_tokens: usize,
    pub(super) temperature: f64,
    pub(super) words: Vec<&'static str>,
    pub(super) prompt_words: usize,
    pub(super) seed: u64,
    pub(super) turns: usize,
    pub(super) no_cache_prompt: bool,
    /// Words of each shared prefix (0: none), and how many different prefixes.
    pub(super) prefix_words: usize,
    pub(super) prefix_count: usize,
    /// `--dataset`: the prompts (and system messages) come from its conversations.
    pub(super) dataset: Option<super::dataset::Dataset>,
    /// `--dataset-output-lengths`: per conversation of the dataset, the `max_tokens` of each
    /// turn (its answer's length in the server's tokens); None: `max_tokens` for every request.
    pub(super) output_lengths: Option<Vec<Vec<usize>>>,
}

/// One message of a conversation: the user's prompt or the server's answer.
pub(super) type Turn = (String, String);

impl Client {
    /// The prompt of request `i`: `prompt_words` words of the corpus from a seeded offset.
    pub(super) fn prompt(&self, i: u64) -> String {
        self.text(
            self.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            self.prompt_words,
        )
    }

    /// `words` words of the corpus from an offset drawn from `key`.
    fn text(&self, key: u64, words: usize) -> String {
        let start = (splitmix(key) as usize) % self.words.len();
        (0..words)
            .map(|k| self.words[(start + k) % self.words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Conversation `conv`'s shared prefix (one of `prefix_count`), None without one.
    fn prefix(&self, conv: u64) -> Option<String> {
        (self.prefix_words > 0).then(|| {
            let which = conv % self.prefix_count.max(1) as u64;
            self.text(
                !self.seed ^ which.wrapping_mul(0xD1B5_4A32_D192_ED03),
                self.prefix_words,
            )
        })
    }

    fn body(&self, prompt: &str, max_tokens: usize, stream: bool, i: u64) -> Value {
        self.conversation_body(None, &[], prompt, max_tokens, stream, i)
    }

    /// A request continuing a conversation: the prefix (the chat API's system message), the
    /// earlier turns (prompt, answer) and the new prompt; for the completions API the same
    /// texts one after another, a blank line before each prompt.
    fn conversation_body(
        &self,
        prefix: Option<&str>,
        history: &[Turn],
        prompt: &str,
        max_tokens: usize,
        stream: bool,
        i: u64,
    ) -> Value {
        let mut b = json!({
            "model": self.model, "max_tokens": max_tokens, "temperature": self.temperature,
            "seed": self.seed.wrapping_add(i), "ignore_eos": true, "stream": stream,
        });
        if stream {
            b["stream_options"] = json!({"include_usage": true});
        }
        if self.no_cache_prompt {
            b["cache_prompt"] = json!(false);
        }
        if self.chat {
            let mut m: Vec<Value> = Vec::new();
            if let Some(p) = prefix {
                m.push(json!({"role": "system", "content": p}));
            }
            for (u, a) in history {
                m.push(json!({"role": "user", "content": u}));
                m.push(json!({"role": "assistant", "content": a}));
            }
            m.push(json!({"role": "user", "content": prompt}));
            b["messages"] = Value::Array(m);
        } else {
            let mut t = String::new();
            if let Some(p) = prefix {
                t.push_str(p);
                t.push_str("\n\n");
            }
            for (u, a) in history {
                t.push_str(u);
                t.push_str(a);
                t.push_str("\n\n");
            }
            t.push_str(prompt);
            b["prompt"] = json!(t);
        }
        b
    }

    fn endpoint(&self) -> String {
        format!(
            "{}/v1/{}",
            self.url,
            if self.chat {
                "chat/completions"
            } else {
                "completions"
            }
        )
    }

    /// One non-streamed request: the server's usage.prompt_tokens.
    pub(super) fn probe(&self, prompt: &str) -> Result<Option<usize>> {
        let fail = |m: String| Error::Serving(format!("{}: {m}", self.endpoint()));
        let resp = self
            .agent
            .post(&self.endpoint())
            .set("Content-Type", "application/json")
            .send_string(&self.body(prompt, 1, false, u64::MAX).to_string())
            .map_err(|e| fail(describe(e)))?;
        let body = resp.into_string().map_err(|e| fail(e.to_string()))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
        Ok(v["usage"]["prompt_tokens"].as_u64().map(|n| n as usize))
    }

    /// The number of tokens of `text` as the server counts them (its `/tokenize`: llama-server's
    /// and `modelbench serve`'s; special-token texts parsed, no BOS).
    pub(super) fn count_tokens(&self, text: &str) -> Result<usize> {
        let url = format!("{}/tokenize", self.url);
        let fail = |m: String| {
            Error::Serving(format!(
                "--dataset-output-lengths: {url}: {m} (the answers' lengths are counted by the server's /tokenize, which llama-server and modelbench serve have; leave the flag out to send --max-tokens)"
            ))
        };
        let resp = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&json!({"content": text, "add_special": false}).to_string())
            .map_err(|e| fail(describe(e)))?;
        let body = resp.into_string().map_err(|e| fail(e.to_string()))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
        v["tokens"]
            .as_array()
            .map(|t| t.len())
            .ok_or_else(|| fail(format!("no `tokens` array in {body:.120}")))
    }

    /// The `max_tokens` of turn `t` of dataset conversation `conv` (`--max-tokens` without
    /// `--dataset-output-lengths`).
    fn max_tokens_of(&self, conv: Option<usize>, t: usize) -> usize {
        match (&self.output_lengths, conv) {
            (Some(l), Some(c)) => l[c][t],
            _ => self.max_tokens,
        }
    }

    /// One streamed request, timed from just before it is sent (with `--dataset`: the first
    /// user message of the conversation drawn for `i`, after its system message).
    pub(super) fn run(&self, i: u64, t0: Instant) -> RequestTiming {
        let body = match &self.dataset {
            Some(d) => {
                let k = d.pick_index(self.seed, i);
                let c = &d.conversations[k];
                self.conversation_body(
                    c.system.as_deref(),
                    &[],
                    &c.prompts[0],
                    self.max_tokens_of(Some(k), 0),
                    true,
                    i,
                )
            }
            None => self.body(&self.prompt(i), self.max_tokens, true, i),
        };
        self.send(body, i, t0).0
    }

    /// Conversation `conv` (its requests numbered `first`, `first + 1`, ...): each turn once
    /// the answer to the one before has ended, while `go` says the level goes on. A failed
    /// turn ends the conversation (the next would lack its answer). With `--dataset` the
    /// conversation drawn for `first`: its system message and at most `turns` of its user
    /// messages.
    fn conversation(
        &self,
        conv: u64,
        first: u64,
        t0: Instant,
        go: &dyn Fn() -> bool,
    ) -> Vec<RequestTiming> {
        let k = self
            .dataset
            .as_ref()
            .map(|d| d.pick_index(self.seed, first));
        let picked = self
            .dataset
            .as_ref()
            .zip(k)
            .map(|(d, k)| &d.conversations[k]);
        let (prefix, turns) = match picked {
            Some(c) => (c.system.clone(), c.prompts.len().min(self.turns)),
            None => (self.prefix(conv), self.turns),
        };
        let mut history: Vec<Turn> = Vec::new();
        let mut out = Vec::new();
        for t in 0..turns {
            if t > 0 && !go() {
                break;
            }
            let i = first + t as u64;
            let prompt = match picked {
                Some(c) => c.prompts[t].clone(),
                None => self.prompt(i),
            };
            let body = self.conversation_body(
                prefix.as_deref(),
                &history,
                &prompt,
                self.max_tokens_of(k, t),
                true,
                i,
            );
            let (mut r, text) = self.send(body, i, t0);
            r.turn = Some(t);
            let failed = !r.ok();
            out.push(r);
            if failed {
                break;
            }
            history.push((prompt, text));
        }
        out
    }

    /// Start `i` of a level whose requests are numbered from `base`: one request, or with
    /// `--turns N` conversation `i - base`, its requests numbered `base + n * N + t`.
    fn start(&self, i: u64, base: u64, t0: Instant, go: &dyn Fn() -> bool) -> Vec<RequestTiming> {
        if self.turns > 1 {
            let n = i - base;
            self.conversation(n, base + n * self.turns as u64, t0, go)
        } else {
            vec![self.run(i, t0)]
        }
    }

    /// Sends one streamed request body (request number `i`), timed from just before it is
    /// sent; returns the timing and the text the server streamed.
    fn send(&self, body: Value, i: u64, t0: Instant) -> (RequestTiming, String) {
        let asked = body["max_tokens"].as_u64().map(|n| n as usize);
        let body = body.to_string();
        let sent = Instant::now();
        let mut r = RequestTiming {
            sent_s: sent.duration_since(t0).as_secs_f64(),
            request: Some(i),
            max_tokens: asked.filter(|_| self.output_lengths.is_some()),
            ..Default::default()
        };
        let mut text = String::new();
        let resp = match self
            .agent
            .post(&self.endpoint())
            .set("Content-Type", "application/json")
            .send_string(&body)
        {
            Ok(resp) => resp,
            Err(e) => {
                r.error = Some(describe(e));
                return (r, text);
            }
        };
        let mut chunks = 0usize;
        let mut usage_out = None;
        let mut done = false;
        for line in BufReader::new(resp.into_reader()).lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    r.error = Some(format!("reading the stream: {e}"));
                    return (r, text);
                }
            };
            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                break;
            }
            let v: Value = match serde_json::from_str(data) {
                Ok(v) => v,
                Err(e) => {
                    r.error = Some(format!("bad SSE chunk ({e}): {data:.120}"));
                    return (r, text);
                }
            };
            if let Some(m) = v.get("error") {
                r.error = Some(format!("server error in stream: {m}"));
                return (r, text);
            }
            let c = &v["choices"][0];
            let piece = c["text"]
                .as_str()
                .or_else(|| c["delta"]["content"].as_str())
                .unwrap_or("");
            text.push_str(piece);
            if !piece.is_empty() {
                let at = sent.elapsed().as_secs_f64();
                r.ttft_s.get_or_insert(at);
                r.chunk_s.push(at);
                chunks += 1;
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                usage_out = u["completion_tokens"].as_u64().map(|n| n as usize);
                r.prompt_tokens = u["prompt_tokens"].as_u64().map(|n| n as usize);
                r.cached_tokens = u["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .map(|n| n as usize);
            }
            // llama-server also says it in its timings (prompt tokens taken from its cache).
            if let Some(n) = v["timings"]["cache_n"].as_u64() {
                r.cached_tokens.get_or_insert(n as usize);
            }
            if let Some(s) = v.get("modelbench").filter(|s| s.is_object()) {
                r.server = Some(s.clone());
            }
        }
        r.e2e_s = Some(sent.elapsed().as_secs_f64());
        r.output_tokens = usage_out.unwrap_or(chunks);
        // Accounting that cannot flatter: a stream cut short, or one without content, is an
        // error (and so never enters the latency samples).
        if !done {
            r.error = Some("the stream ended without `data: [DONE]`".into());
        } else if r.ttft_s.is_none() || r.output_tokens == 0 {
            r.error = Some("no content in the response".into());
        } else {
            r.text_sha256 = Some(hash_text(&text));
        }
        (r, text)
    }
}

pub(super) fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            format!("HTTP {code}: {msg:.200}")
        }
        ureq::Error::Transport(t) => format!("transport: {t}"),
    }
}

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Runs one level; returns the measured requests (warm-up excluded).
pub(super) fn run_level(c: &Arc<Client>, mode: Mode, stop: Stop, base: u64) -> Vec<RequestTiming> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicUsize::new(0));
    let turns = c.turns.max(1);
    let t0 = Instant::now();
    let deadline = |stop: Stop| match stop {
        Stop::Duration(d) => d,
        Stop::Requests(_) => MAX_DURATION_S,
    };
    let may_start = {
        let issued = issued.clone();
        move || -> Option<u64> {
            if t0.elapsed().as_secs_f64() >= deadline(stop) {
                return None;
            }
            let n = issued.fetch_add(1, Ordering::Relaxed);
            // In conversations, the requests of a conversation count as one start.
            let cap = match stop {
                Stop::Requests(k) => k.div_ceil(turns),
                Stop::Duration(_) => MAX_REQUESTS,
            };
            (n < cap).then_some(base + n as u64)
        }
    };
    let go = move || t0.elapsed().as_secs_f64() < deadline(stop);
    match mode {
        Mode::Closed(n) => {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let c = c.clone();
                    let out = out.clone();
                    let may_start = may_start.clone();
                    std::thread::spawn(move || {
                        while let Some(i) = may_start() {
                            let rs = c.start(i, base, t0, &go);
                            out.lock().expect("lock").extend(rs);
                        }
                    })
                })
                .collect();
            for h in handles {
                let _ = h.join();
            }
        }
        Mode::Open(rate) => {
            let gaps = poisson_gaps(rate, MAX_REQUESTS, c.seed ^ base);
            let in_flight = Arc::new(AtomicUsize::new(0));
            let overflow = Arc::new(AtomicBool::new(false));
            let mut handles = Vec::new();
            let mut at = 0.0;
            for g in gaps {
                at += g;
                let wait = at - t0.elapsed().as_secs_f64();
                if wait > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
                let Some(i) = may_start() else { break };
                if in_flight.load(Ordering::Relaxed) >= MAX_CONCURRENCY {
                    overflow.store(true, Ordering::Relaxed);
                    out.lock().expect("lock").push(RequestTiming {
                        sent_s: t0.elapsed().as_secs_f64(),
                        error: Some(format!(
                            "client: {MAX_CONCURRENCY} requests already in flight"
                        )),
                        ..Default::default()
                    });
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (c, out, fl) = (c.clone(), out.clone(), in_flight.clone());
                // An arrival is a request, or with --turns a conversation whose turns follow
                // one another as a user's do (each once the answer before it has ended).
                handles.push(std::thread::spawn(move || {
                    let rs = c.start(i, base, t0, &go);
                    out.lock().expect("lock").extend(rs);
                    fl.fetch_sub(1, Ordering::Relaxed);
                }));
            }
            for h in handles {
                let _ = h.join();
            }
            if overflow.load(Ordering::Relaxed) {
                eprintln!("warning: the server fell behind the arrival rate; requests beyond {MAX_CONCURRENCY} in flight were counted as errors");
            }
        }
    }
    let mut v = std::mem::take(&mut *out.lock().expect("lock"));
    v.sort_by(|a, b| a.sent_s.total_cmp(&b.sent_s));
    v
}
