//! `modelbench load`: drives OpenAI-compatible servers with synthetic streaming requests,
//! closed-loop (N users, each sending its next request when the last ends) or open-loop
//! (Poisson arrivals at a rate, seeded; `auto`: rates doubling until the server saturates),
//! for a duration or a request count after a warm-up; per request TTFT, TPOT, ITL, E2E,
//! tokens and errors; one `serving-load` record per server and level, load.md / load.csv /
//! load.png / requests.jsonl in a run folder.
//!
//! Accounting that cannot flatter: a request that errors (HTTP status, transport, an `error`
//! event), returns no content, or ends its stream without `data: [DONE]` is an error and
//! never enters the latency samples or the throughput.
//!
//! Prompt length: the tokenizer of a remote server is unknown, so prompts are words of
//! natural text (the project's corpus, from a seeded offset per request); before the first
//! level one probe request per step (max_tokens 1) reads the server's `usage.prompt_tokens`
//! and scales the word count until the server counts the requested length (at most 8
//! probes). Every request's reported prompt length is recorded; without `usage` the length is
//! "not verified" (null).

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engine::generate::CORPUS;
use crate::error::{Error, Result};
use crate::measure::latency::{
    parse_duration_s, poisson_gaps, summarize_load, summarize_turns, LoadSummary, RequestTiming,
    Slo, TurnSummary,
};
use crate::measure::outputs::{hash_text, Ids, Outputs};
use crate::measure::stats::mean_interval;
use crate::measure::stats::percentiles;
use crate::output::record::{GenMetrics, Harness, Kind, Precision, Record};
use crate::output::report::{reports_root, RunDir};
use crate::output::serving::{load_csv, load_table, scaling_table, sweep_png};

/// Longest a load level may run, and most requests it may send: load tests stop by
/// themselves.
pub const MAX_DURATION_S: f64 = 3600.0;
pub const MAX_REQUESTS: usize = 100_000;
pub const MAX_CONCURRENCY: usize = 1024;
/// Most turns of a conversation, and most runs of a level.
pub const MAX_TURNS: usize = 100;
pub const MAX_RUNS: usize = 50;
/// The closed-loop sweep when neither concurrency nor rate is given.
pub const DEFAULT_CONCURRENCY: &str = "1,2,4,8,16";
/// `--rate auto`: the first rate (requests/s), doubled per level, at most this many levels.
const AUTO_RATE_START: f64 = 0.25;
const AUTO_RATE_LEVELS: usize = 10;

macro_rules! ensure {
    ($c:expr, $($t:tt)*) => {
        if !($c) {
            return Err(Error::Serving(format!($($t)*)));
        }
    };
}

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(Error::Serving(format!($($t)*)))
    };
}

/// `modelbench load`'s settings (the binary's flags, unparsed where a flag is a list).
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `URL`, or `NAME=URL[,NAME=URL...]` for several servers, one after the other.
    pub url: String,
    pub model: String,
    /// `completions` or `chat`.
    pub endpoint: String,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    /// Closed loop: comma list of users (None and no rate: [`DEFAULT_CONCURRENCY`]).
    pub concurrency: Option<String>,
    /// Open loop: comma list of requests/s, or `auto`.
    pub rate: Option<String>,
    pub duration: Option<String>,
    pub requests: Option<usize>,
    pub warmup: usize,
    pub slo: Option<String>,
    pub slo_preset: Option<String>,
    pub temperature: f64,
    pub seed: u64,
    /// Seconds before one request counts as failed.
    pub timeout: u64,
    /// Run folder suffix (already checked).
    pub label: Option<String>,
    pub no_save: bool,
    /// Turns per conversation (1: lone requests). Turn k sends the conversation so far (the
    /// shared prefix, every earlier prompt and the server's answers to them) and a new prompt
    /// of `prompt_tokens`, as GuideLLM's `turns`.
    pub turns: usize,
    /// A system prefix of about this many tokens before every conversation (GuideLLM's
    /// `prefix_tokens`; 0: none), one of `prefix_count` different ones.
    pub prefix_tokens: usize,
    pub prefix_count: usize,
    /// Runs of every level, each with fresh seeds (seed + run): intervals across them.
    pub runs: usize,
    /// Send `"cache_prompt": false` (llama-server's and `modelbench serve`'s per-request
    /// opt-out of prompt reuse): the same server measured without its prefix cache.
    pub no_cache_prompt: bool,
}

#[derive(Clone, Copy)]
enum Mode {
    Closed(usize),
    Open(f64),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Closed(c) => format!("c={c}"),
            Mode::Open(r) => format!("rate={r}/s"),
        }
    }
}

#[derive(Clone, Copy)]
enum Stop {
    Duration(f64),
    Requests(usize),
}

/// What every request to one server shares.
struct Client {
    agent: ureq::Agent,
    url: String,
    model: String,
    chat: bool,
    max_tokens: usize,
    temperature: f64,
    words: Vec<&'static str>,
    prompt_words: usize,
    seed: u64,
    turns: usize,
    no_cache_prompt: bool,
    /// Words of each shared prefix (0: none), and how many different prefixes.
    prefix_words: usize,
    prefix_count: usize,
}

/// One message of a conversation: the user's prompt or the server's answer.
type Turn = (String, String);

impl Client {
    /// The prompt of request `i`: `prompt_words` words of the corpus from a seeded offset.
    fn prompt(&self, i: u64) -> String {
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
    fn probe(&self, prompt: &str) -> Result<Option<usize>> {
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

    /// One streamed request, timed from just before it is sent.
    fn run(&self, i: u64, t0: Instant) -> RequestTiming {
        let prompt = self.prompt(i);
        let body = self.body(&prompt, self.max_tokens, true, i);
        self.send(body, i, t0).0
    }

    /// Conversation `conv` (its requests numbered `first`, `first + 1`, ...): each turn once
    /// the answer to the one before has ended, while `go` says the level goes on. A failed
    /// turn ends the conversation (the next would lack its answer).
    fn conversation(
        &self,
        conv: u64,
        first: u64,
        t0: Instant,
        go: &dyn Fn() -> bool,
    ) -> Vec<RequestTiming> {
        let prefix = self.prefix(conv);
        let mut history: Vec<Turn> = Vec::new();
        let mut out = Vec::new();
        for t in 0..self.turns {
            if t > 0 && !go() {
                break;
            }
            let i = first + t as u64;
            let prompt = self.prompt(i);
            let body = self.conversation_body(
                prefix.as_deref(),
                &history,
                &prompt,
                self.max_tokens,
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

    /// Sends one streamed request body (request number `i`), timed from just before it is
    /// sent; returns the timing and the text the server streamed.
    fn send(&self, body: Value, i: u64, t0: Instant) -> (RequestTiming, String) {
        let body = body.to_string();
        let sent = Instant::now();
        let mut r = RequestTiming {
            sent_s: sent.duration_since(t0).as_secs_f64(),
            request: Some(i),
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

fn describe(e: ureq::Error) -> String {
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

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Runs one level; returns the measured requests (warm-up excluded).
fn run_level(c: &Arc<Client>, mode: Mode, stop: Stop, base: u64) -> Vec<RequestTiming> {
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
                            if turns > 1 {
                                // Conversation n's requests are numbered n * turns + t.
                                let n = i - base;
                                let rs = c.conversation(n, base + n * turns as u64, t0, &go);
                                out.lock().expect("lock").extend(rs);
                            } else {
                                let r = c.run(i, t0);
                                out.lock().expect("lock").push(r);
                            }
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
                handles.push(std::thread::spawn(move || {
                    let r = c.run(i, t0);
                    out.lock().expect("lock").push(r);
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

fn parse_list<T: std::str::FromStr>(s: &str, flag: &str) -> Result<Vec<T>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<T>()
                .map_err(|_| Error::Serving(format!("{flag} {s:?}: `{p}` is not a number")))
        })
        .collect()
}

/// The servers of `--url`: `URL` or `NAME=URL,...` (name None: the model's name labels it).
pub fn parse_targets(s: &str) -> Result<Vec<(Option<String>, String)>> {
    let mut out: Vec<(Option<String>, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = match part.split_once('=') {
            Some((n, u)) if !n.contains("://") => (Some(n.trim().to_string()), u.trim()),
            _ => (None, part),
        };
        let url = url.trim_end_matches('/').to_string();
        ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "--url {part:?}: the URL must start with http:// or https:// (NAME=URL for several servers)"
        );
        if let Some(n) = &name {
            ensure!(
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "--url {part:?}: the name must be letters, digits, - _ . (NAME=URL)"
            );
            ensure!(
                !out.iter().any(|(m, _)| m.as_deref() == Some(n.as_str())),
                "--url: the name {n:?} is given twice"
            );
        }
        out.push((name, url));
    }
    ensure!(
        !out.is_empty(),
        "--url {s:?}: give URL or NAME=URL[,NAME=URL...]"
    );
    ensure!(
        out.len() == 1 || out.iter().all(|(n, _)| n.is_some()),
        "--url {s:?}: with several servers name each one (NAME=URL,NAME=URL)"
    );
    Ok(out)
}

/// The levels of a load run.
enum Levels {
    Fixed(Vec<Mode>),
    /// Open loop, rates doubling until the server saturates.
    AutoRate,
}

/// Whether an open-loop level saturated the server: it completed under 80% of the offered
/// rate, or some requests failed.
fn saturated(rate: f64, completed_s: Option<f64>, errors: usize) -> bool {
    errors > 0 || completed_s.is_none_or(|r| r < 0.8 * rate)
}

pub fn load(a: &LoadOptions) -> Result<()> {
    let chat = match a.endpoint.as_str() {
        "completions" => false,
        "chat" => true,
        e => bail!("--endpoint {e:?}: allowed: completions, chat"),
    };
    ensure!(a.prompt_tokens >= 1, "--prompt-tokens must be at least 1");
    ensure!(a.max_tokens >= 1, "--max-tokens must be at least 1");
    ensure!(
        (1..=MAX_TURNS).contains(&a.turns),
        "--turns {}: must be in 1..={MAX_TURNS}",
        a.turns
    );
    ensure!(
        (1..=1000).contains(&a.prefix_count),
        "--prefix-count {}: must be in 1..=1000",
        a.prefix_count
    );
    ensure!(
        (1..=MAX_RUNS).contains(&a.runs),
        "--runs {}: must be in 1..={MAX_RUNS}",
        a.runs
    );
    ensure!(
        a.turns == 1 || a.rate.is_none(),
        "--turns {}: conversations run as closed-loop users (--concurrency); open-loop arrivals (--rate) send lone requests (leave --turns out)",
        a.turns
    );
    ensure!(
        a.temperature >= 0.0 && a.temperature <= 2.0,
        "--temperature {}: must be in [0, 2]",
        a.temperature
    );
    let targets = parse_targets(&a.url)?;
    let levels = match (&a.concurrency, &a.rate) {
        (Some(_), Some(_)) => bail!("--concurrency and --rate exclude each other"),
        (None, Some(r)) if r.trim() == "auto" => Levels::AutoRate,
        (None, Some(r)) => {
            let v: Vec<f64> = parse_list(r, "--rate")?;
            ensure!(
                v.iter().all(|&x| x > 0.0 && x.is_finite() && x <= 10_000.0),
                "--rate {r:?}: each rate must be in (0, 10000] requests/s (or auto)"
            );
            Levels::Fixed(v.into_iter().map(Mode::Open).collect())
        }
        (c, None) => {
            let c = c.as_deref().unwrap_or(DEFAULT_CONCURRENCY);
            let v: Vec<usize> = parse_list(c, "--concurrency")?;
            ensure!(
                v.iter().all(|&n| (1..=MAX_CONCURRENCY).contains(&n)),
                "--concurrency {c:?}: each level must be in 1..={MAX_CONCURRENCY}"
            );
            Levels::Fixed(v.into_iter().map(Mode::Closed).collect())
        }
    };
    let stop = match (&a.duration, a.requests) {
        (Some(d), None) => {
            let s = parse_duration_s(d)
                .map_err(|e| Error::Serving(format!("--duration {d:?}: {e}")))?;
            if s > MAX_DURATION_S {
                bail!("--duration {d:?}: at most {MAX_DURATION_S} s per level");
            }
            Stop::Duration(s)
        }
        (None, Some(k)) => {
            ensure!(
                (1..=MAX_REQUESTS).contains(&k),
                "--requests {k}: must be in 1..={MAX_REQUESTS}"
            );
            Stop::Requests(k)
        }
        _ => bail!("give --duration (e.g. 30s) or --requests K"),
    };
    let slo = match (&a.slo, &a.slo_preset) {
        (Some(s), _) => {
            Some(Slo::parse(s).map_err(|e| Error::Serving(format!("--slo {s:?}: {e}")))?)
        }
        (None, Some(p)) => {
            Some(Slo::preset(p).map_err(|e| Error::Serving(format!("--slo-preset {p:?}: {e}")))?)
        }
        (None, None) => None,
    };
    let mut run = RunDir::new(&reports_root(), a.label.as_deref());
    let mut requests_jsonl = String::new();
    let mut runs_md = String::new();
    for (ti, (name, url)) in targets.iter().enumerate() {
        let who = name.clone().unwrap_or_else(|| a.model.clone());
        if targets.len() > 1 {
            println!("server {who} ({url}):");
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(a.timeout.max(1)))
            .max_idle_connections_per_host(MAX_CONCURRENCY)
            .build();
        // What the server says about the model (our server adds device and dtype).
        let models: Value = agent
            .get(&format!("{url}/v1/models"))
            .call()
            .map_err(|e| {
                Error::Serving(format!(
                    "{url}/v1/models: {} (is the server up?)",
                    describe(e)
                ))
            })
            .and_then(|r| {
                let body = r
                    .into_string()
                    .map_err(|e| Error::Serving(format!("{url}/v1/models: {e}")))?;
                serde_json::from_str(&body)
                    .map_err(|e| Error::Serving(format!("{url}/v1/models: not JSON: {e}")))
            })?;
        let listed = models["data"].as_array().cloned().unwrap_or_default();
        let entry = listed
            .iter()
            .find(|m| m["id"].as_str() == Some(&a.model))
            .cloned();
        if entry.is_none() {
            let ids: Vec<&str> = listed.iter().filter_map(|m| m["id"].as_str()).collect();
            eprintln!(
                "warning: {url}/v1/models lists [{}], not {:?}; sending it anyway",
                ids.join(", "),
                a.model
            );
        }
        let words: Vec<&'static str> = CORPUS.split_whitespace().collect();
        let mut client = Client {
            agent,
            url: url.clone(),
            model: a.model.clone(),
            chat,
            max_tokens: a.max_tokens,
            temperature: a.temperature,
            words,
            prompt_words: a.prompt_tokens,
            seed: a.seed,
            turns: a.turns,
            no_cache_prompt: a.no_cache_prompt,
            prefix_words: 0,
            prefix_count: a.prefix_count,
        };
        // Reach the prompt length in the server's tokens.
        let mut measured = None;
        for _ in 0..8 {
            let p = client.probe(&client.prompt(u64::MAX - 1))?;
            let Some(p) = p else {
                eprintln!("warning: the server reports no usage.prompt_tokens: prompt length not verified ({} words sent)", client.prompt_words);
                break;
            };
            measured = Some(p);
            if p == a.prompt_tokens {
                break;
            }
            let w = client.prompt_words as f64 * a.prompt_tokens as f64 / p as f64;
            let mut next = w.round().max(1.0) as usize;
            if next == client.prompt_words {
                next = if p > a.prompt_tokens {
                    next.saturating_sub(1).max(1)
                } else {
                    next + 1
                };
            }
            client.prompt_words = next;
        }
        println!(
            "prompt: {} words -> {} prompt tokens as the server counts them (asked {}){}",
            client.prompt_words,
            measured
                .map(|m| m.to_string())
                .unwrap_or_else(|| "not available".into()),
            a.prompt_tokens,
            match measured {
                Some(m) if m != a.prompt_tokens =>
                    " (closest reached; every request's real length is recorded)",
                _ => "",
            }
        );
        // The shared prefix at the words-per-token ratio the prompt probe measured.
        if a.prefix_tokens > 0 {
            let ratio = measured.map_or(1.0, |m| client.prompt_words as f64 / m.max(1) as f64);
            client.prefix_words = ((a.prefix_tokens as f64 * ratio).round() as usize).max(1);
            println!(
                "prefix: {} words ({} different prefixes), about {} tokens",
                client.prefix_words, a.prefix_count, a.prefix_tokens
            );
        }
        let client = Arc::new(client);
        let count = match &levels {
            Levels::Fixed(m) => m.len(),
            Levels::AutoRate => AUTO_RATE_LEVELS,
        };
        for li in 0..count {
            let mode = match &levels {
                Levels::Fixed(m) => m[li],
                Levels::AutoRate => Mode::Open(AUTO_RATE_START * f64::from(1u32 << li)),
            };
            let mut per_run: Vec<LoadSummary> = Vec::new();
            for run_i in 0..a.runs {
                // Run r's requests are numbered from its own base: fresh prompts and seeds, the
                // same ones in run r of another load with the same seed.
                let base = ((ti as u64) << 40) + ((li as u64 + 1) << 32) + ((run_i as u64) << 24);
                for w in 0..a.warmup {
                    let r = client.run(base - 1 - w as u64, Instant::now());
                    if let Some(e) = r.error {
                        bail!("{who}: warm-up request failed: {e}");
                    }
                }
                println!(
                    "level {}{}: {} ...",
                    mode.name(),
                    if a.runs > 1 {
                        format!(", run {} of {}", run_i + 1, a.runs)
                    } else {
                        String::new()
                    },
                    match stop {
                        Stop::Duration(d) => format!("{d} s"),
                        Stop::Requests(k) => format!("{k} requests"),
                    }
                );
                let reqs = run_level(&client, mode, stop, base);
                let summary = summarize_load(&reqs, slo.as_ref());
                let errors: Vec<&str> = reqs.iter().filter_map(|r| r.error.as_deref()).collect();
                if !errors.is_empty() {
                    eprintln!(
                        "{} of {} requests failed; first: {}",
                        errors.len(),
                        reqs.len(),
                        errors[0]
                    );
                }
                let ok: Vec<&RequestTiming> = reqs.iter().filter(|r| r.ok()).collect();
                let reported: Vec<f64> = ok
                    .iter()
                    .filter_map(|r| r.prompt_tokens.map(|p| p as f64))
                    .collect();
                // Only successful requests enter the samples.
                let e2e: Vec<f64> = ok.iter().filter_map(|r| r.e2e_s).collect();
                let server_stat = |k: &str| -> Option<f64> {
                    let v: Vec<f64> = ok
                        .iter()
                        .filter_map(|r| r.server.as_ref().and_then(|s| s[k].as_f64()))
                        .collect();
                    percentiles(&v).map(|p| p.mean)
                };
                let mut rec = Record::from_samples(
                    Kind::ServingLoad,
                    "serving-load",
                    e2e,
                    a.max_tokens as u64,
                );
                rec.harness = Harness::Cli;
                rec.id = format!("serving-load/{}/{}", mode.name(), who);
                if a.runs > 1 {
                    rec.id.push_str(&format!("/run{}", run_i + 1));
                }
                let turns = summarize_turns(&reqs);
                rec.model.label = who.clone();
                rec.model.source = url.clone();
                rec.device = entry
                    .as_ref()
                    .and_then(|m| m["modelbench"]["device"].as_str())
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "remote".into());
                // Only our server says what precision it runs; another server's is not guessed.
                rec.dtype = entry
                    .as_ref()
                    .and_then(|m| m["modelbench"]["dtype"].as_str())
                    .and_then(Precision::parse)
                    .unwrap_or(Precision::Unreported);
                rec.prompt_tokens = a.prompt_tokens;
                rec.new_tokens = a.max_tokens;
                rec.seed = a.seed;
                rec.eos_ignored = true;
                rec.sampling_desc = if a.temperature > 0.0 {
                    format!("temp={}", a.temperature)
                } else {
                    "greedy".into()
                };
                rec.tok_s = summary.output_tok_s;
                rec.shape = json!({"endpoint": a.endpoint, "prompt_tokens": a.prompt_tokens,
                "max_tokens": a.max_tokens, "level": mode.name()});
                // A conversation load is another benchmark than lone requests of the same length.
                if a.turns > 1 || a.prefix_tokens > 0 {
                    rec.shape["turns"] = json!(a.turns);
                    rec.shape["prefix_tokens"] = json!(a.prefix_tokens);
                    rec.shape["prefix_count"] = json!(a.prefix_count);
                }
                rec.gen = Some(GenMetrics {
                    ttft_ms: summary.ttft_ms,
                    tpot_ms: summary.tpot_ms,
                    itl_ms: summary.itl_ms,
                    prefill_tok_s: None,
                    decode_tok_s: None,
                    tokenize_ms: None,
                    ..Default::default()
                });
                // What the server returned (issue 59): request k's text, k from 0 in this level (its
                // prompt and seed are a function of k), as a hash; the output verdict of `compare`
                // between two loads reads it like a benchmark's generated ids.
                let mut texts: Vec<(u64, String)> = reqs
                    .iter()
                    .filter_map(|r| Some((r.request?.checked_sub(base)?, r.text_sha256.clone()?)))
                    .collect();
                texts.sort();
                let mut ids = Ids::default();
                for (k, h) in texts {
                    ids.push_text_hash(k, h);
                }
                rec.outputs = (!ids.trials.is_empty()).then_some(Outputs { ids, probe: None });
                rec.extra = json!({
                    "level": mode.name(),
                    "server": who,
                    "mode": match mode { Mode::Closed(_) => "closed-loop", Mode::Open(_) => "open-loop-poisson" },
                    "concurrency": match mode { Mode::Closed(n) => json!(n), Mode::Open(_) => Value::Null },
                    "rate": match mode { Mode::Open(r) => json!(r), Mode::Closed(_) => Value::Null },
                    "url": url,
                    "endpoint": a.endpoint,
                    "stop": match stop { Stop::Duration(d) => json!({"duration_s": d}), Stop::Requests(k) => json!({"requests": k}) },
                    "warmup": a.warmup,
                    "prompt_words": client.prompt_words,
                    "prompt_tokens_probe": measured,
                    "prompt_tokens_measured": percentiles(&reported).map(|p| p.mean),
                    "prompt_tokens_min": reported.iter().copied().reduce(f64::min),
                    "prompt_tokens_max": reported.iter().copied().reduce(f64::max),
                    "server_queue_ms_mean": server_stat("queue_ms"),
                    "server_batch_mean": server_stat("batch_mean"),
                    "slo": slo.as_ref().map(|s| s.describe()),
                    "slo_preset": a.slo_preset,
                    "summary": summary,
                    "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
                    "run": run_i + 1,
                    "runs": a.runs,
                    "turns": a.turns,
                    "prefix_tokens": a.prefix_tokens,
                    "prefix_count": a.prefix_count,
                    "prefix_words": client.prefix_words,
                "cache_prompt": !a.no_cache_prompt,
                    "by_turn": turns.clone(),
                    "cached_tokens_reported": reqs.iter().any(|r| r.cached_tokens.is_some()),
                });
                for r in &reqs {
                    let mut v =
                        serde_json::to_value(r).map_err(|e| Error::Serving(e.to_string()))?;
                    v["level"] = json!(mode.name());
                    v["server"] = json!(who);
                    requests_jsonl.push_str(&v.to_string());
                    requests_jsonl.push('\n');
                }
                println!(
                    "  {} requests ({} errors) in {:.1} s: {} req/s, {} output tok/s{}",
                    summary.requests,
                    summary.errors,
                    summary.duration_s,
                    crate::output::report::na(summary.request_s, 2),
                    crate::output::report::na(summary.output_tok_s, 1),
                    match server_stat("batch_mean") {
                        Some(b) => format!(", server batch mean {b:.2}"),
                        None => String::new(),
                    }
                );
                if a.no_save {
                    run.push_unsaved(rec);
                } else {
                    run.push(rec)?;
                    run.put_file("requests.jsonl", requests_jsonl.clone().into_bytes())?;
                }
                if !turns.is_empty() && a.turns > 1 {
                    println!("{}", turn_table(&turns));
                }
                per_run.push(summary);
            }
            if a.runs > 1 {
                let t = runs_table(&per_run);
                println!("  across {} runs (mean [95% t-interval], CV):\n{t}", a.runs);
                runs_md.push_str(&format!("### {who}, {}\n\n{t}\n", mode.name()));
            }
            let summary = per_run.last().cloned().unwrap_or_default();
            if let (Levels::AutoRate, Mode::Open(rate)) = (&levels, mode) {
                if saturated(rate, summary.request_s, summary.errors) {
                    println!("  saturated at {rate}/s (completed under 80% of the offered rate, or errors): rate sweep ends");
                    break;
                }
            }
        }
    }
    let table = load_table(run.records());
    let scaling = scaling_table(run.records());
    println!(
        "\n{table}\nScaling (x c=1: output tok/s over the same server's c=1 level):\n\n{scaling}"
    );
    if !a.no_save {
        // The plot first: writing load.md rewrites target-reports/index.html, whose serving
        // section shows the plot when it exists.
        let png = run.path.join("load.png");
        let plotted = sweep_png(&png, run.records())?;
        run.put_file("load.csv", load_csv(run.records()).into_bytes())?;
        run.put_file(
            "load.md",
            format!(
                "# modelbench load against {}\n\n{table}\n## Scaling\n\nx c=1: output tok/s over the same server's c=1 level.\n\n{scaling}{}{}",
                a.url,
                turns_md(run.records()),
                if runs_md.is_empty() {
                    String::new()
                } else {
                    format!("\n## Across runs\n\nEach level run {} times with fresh prompts and seeds: the mean, its 95% Student-t interval and the coefficient of variation (sample sd / mean) of each run's figure.\n\n{runs_md}", a.runs)
                }
            )
            .into_bytes(),
        )?;
        run.complete()?;
        if plotted {
            println!("plot: {}", png.display());
        }
        println!("run folder: {}", run.path.display());
    }
    Ok(())
}

/// The by-turn table of a multi-turn level: prompt length, cached prompt tokens (as the
/// server reports them), TTFT and E2E per turn.
fn turn_table(turns: &[TurnSummary]) -> String {
    let f = |x: Option<f64>, d: usize| crate::output::report::na(x, d);
    let mut t = String::from("| turn | requests | errors | prompt tokens | cached tokens | cached share | TTFT p50 ms | TTFT mean ms | E2E p50 ms |\n|---|---|---|---|---|---|---|---|---|\n");
    for x in turns {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            x.turn,
            x.requests,
            x.errors,
            f(x.prompt_tokens_mean, 1),
            f(x.cached_tokens_mean, 1),
            f(x.cached_share.map(|c| c * 100.0), 1)
                + if x.cached_share.is_some() { "%" } else { "" },
            f(x.ttft_ms.map(|p| p.p50), 1),
            f(x.ttft_ms.map(|p| p.mean), 1),
            f(x.e2e_ms.map(|p| p.p50), 1),
        ));
    }
    t
}

/// load.md's by-turn section: one table per multi-turn record.
fn turns_md(records: &[crate::output::record::Record]) -> String {
    let mut s = String::new();
    for r in records {
        let Some(turns) = r
            .extra
            .get("by_turn")
            .and_then(|v| serde_json::from_value::<Vec<TurnSummary>>(v.clone()).ok())
            .filter(|t| t.len() > 1)
        else {
            continue;
        };
        if s.is_empty() {
            s.push_str("\n## By turn\n\nEach conversation's turn k sends the conversation so far and a new prompt; cached tokens are the prompt tokens the server says it did not run again (`usage.prompt_tokens_details.cached_tokens`, llama-server's `timings.cache_n`).\n\n");
        }
        s.push_str(&format!("### {}\n\n{}\n", r.id, turn_table(&turns)));
    }
    s
}

/// Each figure across the runs of one level: mean [95% t-interval], CV.
fn runs_table(runs: &[LoadSummary]) -> String {
    let rows: [(&str, Vec<f64>); 6] = [
        (
            "output tok/s",
            runs.iter().filter_map(|x| x.output_tok_s).collect(),
        ),
        (
            "requests/s",
            runs.iter().filter_map(|x| x.request_s).collect(),
        ),
        (
            "tok/s per user",
            runs.iter().filter_map(|x| x.tok_s_per_user).collect(),
        ),
        (
            "TTFT p50 ms",
            runs.iter()
                .filter_map(|x| x.ttft_ms.map(|p| p.p50))
                .collect(),
        ),
        (
            "TPOT p50 ms",
            runs.iter()
                .filter_map(|x| x.tpot_ms.map(|p| p.p50))
                .collect(),
        ),
        (
            "E2E p50 ms",
            runs.iter()
                .filter_map(|x| x.e2e_ms.map(|p| p.p50))
                .collect(),
        ),
    ];
    let mut t =
        String::from("| figure | runs | mean | 95% interval | CV |\n|---|---|---|---|---|\n");
    for (name, v) in rows {
        match mean_interval(&v) {
            Some(m) => t.push_str(&format!(
                "| {name} | {} | {:.2} | [{:.2}, {:.2}] | {} |\n",
                m.n,
                m.mean,
                m.lo,
                m.hi,
                m.cv.map_or("n/a".into(), |c| format!("{:.1}%", c * 100.0))
            )),
            None => t.push_str(&format!(
                "| {name} | {} | not available (fewer than 2 runs measured it) | | |\n",
                v.len()
            )),
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_one_url_or_named_servers() {
        assert_eq!(
            parse_targets("http://127.0.0.1:8000/").unwrap(),
            vec![(None, "http://127.0.0.1:8000".to_string())]
        );
        let t = parse_targets("ours=http://a:1,llama-server=http://b:2").unwrap();
        assert_eq!(t[1], (Some("llama-server".into()), "http://b:2".into()));
        assert!(parse_targets("http://a:1,http://b:2").is_err());
        assert!(parse_targets("x=ftp://a").is_err());
        assert!(parse_targets("x=http://a,x=http://b").is_err());
    }

    #[test]
    fn saturation_is_a_shortfall_or_an_error() {
        assert!(!saturated(1.0, Some(0.95), 0));
        assert!(saturated(1.0, Some(0.7), 0));
        assert!(saturated(1.0, Some(1.0), 1));
        assert!(saturated(1.0, None, 0));
    }
}
