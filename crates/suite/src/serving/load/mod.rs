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

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engine::generate::CORPUS;
use crate::error::{Error, Result};
use crate::measure::latency::{
    parse_duration_s, summarize_load, summarize_turns, LoadSummary, RequestTiming, Slo, TurnSummary,
};
use crate::measure::outputs::{Ids, Outputs};
use crate::measure::stats::mean_interval;
use crate::measure::stats::percentiles;
use crate::output::record::{GenMetrics, Harness, Kind, Precision, Record};
use crate::output::report::{reports_root, RunDir};
use crate::output::serving::{load_csv, load_table, scaling_table, sweep_png};

mod client;
pub mod dataset;
use client::{describe, run_level, Client, Mode, Stop};

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
    /// Prompts from this file of conversations ([`dataset`]) instead of `prompt_tokens` corpus
    /// words (then `prompt_tokens` and `prefix_tokens` are not used: the caller refuses them).
    pub dataset: Option<std::path::PathBuf>,
    /// Each turn's `max_tokens` is the length of the dataset's answer to it in the server's
    /// tokens (vLLM's ShareGPT default) instead of `max_tokens`.
    pub dataset_output_lengths: bool,
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
        a.turns == 1 || a.rate.as_deref().map(str::trim) != Some("auto"),
        "--turns {} with --rate auto: the saturation search counts lone requests; give conversation rates (--rate 0.5,1,...) or --concurrency",
        a.turns
    );
    ensure!(
        a.temperature >= 0.0 && a.temperature <= 2.0,
        "--temperature {}: must be in [0, 2]",
        a.temperature
    );
    ensure!(
        a.dataset.is_none() || a.prefix_tokens == 0,
        "--dataset and --prefix-tokens exclude each other: a dataset's system messages are its prefixes"
    );
    let targets = parse_targets(&a.url)?;
    ensure!(
        a.dataset.is_some() || !a.dataset_output_lengths,
        "--dataset-output-lengths needs --dataset FILE (the lengths are its answers')"
    );
    // Read before anything is sent or written: a bad file is one line and no run folder.
    let dataset = a
        .dataset
        .as_deref()
        .map(dataset::Dataset::read)
        .transpose()?;
    // The answers the output lengths come from, checked before anything is sent.
    let answers: Option<Vec<Vec<&str>>> = match &dataset {
        Some(d) if a.dataset_output_lengths => Some(d.answers(a.turns).map_err(|m| {
            Error::Serving(format!(
                "--dataset-output-lengths: --dataset {}: {m} (give every user message an answer, or leave the flag out to send --max-tokens)",
                d.path
            ))
        })?),
        _ => None,
    };
    if let Some(d) = &dataset {
        let (users, most) = d.turns();
        println!(
            "dataset {} (sha256 {}): {} conversations, {} user messages (at most {} in one){}{}",
            d.path,
            d.sha256,
            d.conversations.len(),
            users,
            most,
            if d.skipped > 0 {
                format!(
                    "; {} entries without a user message left out (as vLLM does)",
                    d.skipped
                )
            } else {
                String::new()
            },
            if a.turns > 1 {
                format!("; each conversation runs at most {} turns", a.turns)
            } else {
                "; each request sends a conversation's first user message".into()
            }
        );
    }
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
            dataset: dataset.clone(),
            output_lengths: None,
        };
        // Reach the prompt length in the server's tokens (a dataset's prompts have their own:
        // no probe, and every request's reported length is recorded).
        let mut measured = None;
        if dataset.is_none() {
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
        }
        // Each answer's length in this server's tokens (its /tokenize), once per distinct text.
        if let Some(answers) = &answers {
            let mut seen: std::collections::HashMap<&str, usize> = Default::default();
            let mut lengths = Vec::with_capacity(answers.len());
            for conv in answers {
                let mut l = Vec::with_capacity(conv.len());
                for &text in conv {
                    let n = match seen.get(text) {
                        Some(&n) => n,
                        None => {
                            let n = client.count_tokens(text)?.max(1);
                            seen.insert(text, n);
                            n
                        }
                    };
                    l.push(n);
                }
                lengths.push(l);
            }
            let all: Vec<f64> = lengths.iter().flatten().map(|&n| n as f64).collect();
            println!(
                "output lengths: {} answers counted by {url}/tokenize: mean {:.1}, min {}, max {} tokens",
                seen.len(),
                all.iter().sum::<f64>() / all.len().max(1) as f64,
                all.iter().copied().fold(f64::INFINITY, f64::min),
                all.iter().copied().fold(0.0, f64::max),
            );
            client.output_lengths = Some(lengths);
        }
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
                // The output tokens asked for: --max-tokens, or with the dataset's lengths the
                // mean of what the level's requests asked (None, and no samples, when it sent
                // none).
                let asked: Vec<f64> = reqs
                    .iter()
                    .filter_map(|r| r.max_tokens.map(|n| n as f64))
                    .collect();
                let asked_mean = percentiles(&asked).map(|p| p.mean);
                let new_tokens = match (&client.output_lengths, asked_mean) {
                    (Some(_), Some(m)) => Some(m.round().max(1.0) as usize),
                    (Some(_), None) => None,
                    (None, _) => Some(a.max_tokens),
                };
                let mut rec = Record::from_samples(
                    Kind::ServingLoad,
                    "serving-load",
                    e2e,
                    new_tokens.unwrap_or(0) as u64,
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
                // A dataset's prompts: their mean length as the server counted them (None
                // where it reports none).
                rec.prompt_tokens = match &dataset {
                    Some(_) => percentiles(&reported).map(|p| p.mean.round() as usize),
                    None => Some(a.prompt_tokens),
                };
                rec.new_tokens = new_tokens;
                rec.seed = Some(a.seed);
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
                // So is a dataset's: the file (by its hash) is the workload.
                if let Some(d) = &dataset {
                    rec.shape["prompt_tokens"] = Value::Null;
                    rec.shape["dataset_sha256"] = json!(d.sha256);
                }
                // And lengths from the answers are another benchmark than a fixed length.
                if client.output_lengths.is_some() {
                    rec.shape["max_tokens"] = Value::Null;
                    rec.shape["output_lengths"] = json!("dataset");
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
                    // With --turns, an open loop's arrivals are conversations (their turns
                    // follow one another), so its rate is conversations/s.
                    "rate_unit": match mode {
                        Mode::Open(_) if a.turns > 1 => json!("conversations/s"),
                        Mode::Open(_) => json!("requests/s"),
                        Mode::Closed(_) => Value::Null,
                    },
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
                    "dataset": dataset.as_ref().map(|d| json!({"file": d.path, "sha256": d.sha256,
                        "conversations": d.conversations.len(), "skipped_without_user_message": d.skipped})),
                    "output_lengths": client.output_lengths.as_ref().map(|_| json!({
                        "from": "the dataset's answers, counted by the server's /tokenize",
                        "max_tokens_mean": asked_mean,
                        "max_tokens_min": asked.iter().copied().reduce(f64::min),
                        "max_tokens_max": asked.iter().copied().reduce(f64::max),
                    })),
                });
                for r in &reqs {
                    let mut v =
                        serde_json::to_value(r).map_err(|e| Error::Serving(e.to_string()))?;
                    v["level"] = json!(mode.name());
                    // `server` names the target; what the server said about the request
                    // (`modelbench serve`'s queue time, batch sizes, steps) stays beside it.
                    if let Some(report) = r.server.as_ref() {
                        v["server_report"] = report.clone();
                    }
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
