//! `modelbench load`: drives OpenAI-compatible servers with synthetic streaming requests.
//! This file parses the flags; the load generator is `crate::serving::load`.

use clap::Args;

use crate::serving::load::{load as run_load, LoadOptions};

/// `modelbench load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Server base URL (loopback unless you pass another), or NAME=URL[,NAME=URL...] to run
    /// the same levels against several servers one after the other (e.g.
    /// ours=http://127.0.0.1:8000,llama-server=http://127.0.0.1:8080).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Model name as the server knows it (`/v1/models`).
    #[arg(long)]
    pub model: String,
    /// `completions` (/v1/completions) or `chat` (/v1/chat/completions).
    #[arg(long, default_value = "completions")]
    pub endpoint: String,
    /// Prompt length in the server's tokens (see docs/serving.md: how it is reached and
    /// checked). Default 128; not with --dataset.
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    /// Output tokens per request (`max_tokens`, sent with `ignore_eos: true`).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Closed loop: comma list of concurrent users, one level each (default, without --rate:
    /// 1,2,4,8,16).
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<String>,
    /// Open loop: Poisson arrivals, requests per second (comma list: one level each), or
    /// `auto`: 0.25, 0.5, 1, ... until the server saturates.
    #[arg(long)]
    pub rate: Option<String>,
    /// Measured time per level (e.g. 30s, 2m); no request starts after it.
    #[arg(long, conflicts_with = "requests")]
    pub duration: Option<String>,
    /// Measured requests per level.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Untimed requests (one at a time) before each level.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Service-level objectives for goodput, e.g. ttft=2000ms,tpot=100ms.
    #[arg(long, conflicts_with = "slo_preset")]
    pub slo: Option<String>,
    /// MLPerf Inference server limits by benchmark name (e.g. llama3.1-8b; see docs/serving.md).
    #[arg(long)]
    pub slo_preset: Option<String>,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Seeds prompts, arrivals and the requests' `seed`.
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    /// Seconds before one request counts as failed.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Run folder suffix.
    #[arg(long)]
    pub label: Option<String>,
    /// Do not write a run folder.
    #[arg(long)]
    pub no_save: bool,
    /// Turns per conversation (GuideLLM's `turns`): each user runs conversations whose turn k
    /// sends the whole conversation so far (prefix, earlier prompts, the server's answers)
    /// and a new prompt of --prompt-tokens; TTFT and cached prompt tokens by turn. Closed loop.
    #[arg(long, default_value_t = 1)]
    pub turns: usize,
    /// A shared system prefix of about this many tokens before every conversation
    /// (GuideLLM's `prefix_tokens`; 0: none).
    #[arg(long, default_value_t = 0)]
    pub prefix_tokens: usize,
    /// How many different prefixes (conversation n uses prefix n mod this; GuideLLM's
    /// `prefix_count`).
    #[arg(long, default_value_t = 1)]
    pub prefix_count: usize,
    /// Runs of every level, each with fresh prompts and seeds: mean, 95% t-interval and CV
    /// per figure across them (AIPerf's --num-profile-runs).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Send `"cache_prompt": false` with every request: the server's prefix cache is not used
    /// (llama-server and `modelbench serve` honour it), to measure it against the same load
    /// with the cache.
    #[arg(long)]
    pub no_cache_prompt: bool,
    /// Prompts from a file of conversations instead of corpus words: JSON Lines (or one JSON
    /// array) of ShareGPT `{"conversations": [...]}`, OpenAI `{"messages": [...]}` or
    /// `{"prompt": "..."}` entries, drawn with the seed; each request sends a conversation's
    /// system message and first user message, or with --turns N its first N user messages as
    /// turns (the server's own answers in between). E.g.
    /// fixtures/datasets/kjv-conversations.jsonl (docs/serving.md).
    #[arg(long, value_name = "FILE")]
    pub dataset: Option<std::path::PathBuf>,
    /// With --dataset: each turn asks for as many tokens as the file's answer to it has
    /// (vLLM's default for ShareGPT), counted by the server's /tokenize (llama-server and
    /// `modelbench serve` have it), instead of --max-tokens; still with `ignore_eos`.
    #[arg(long)]
    pub dataset_output_lengths: bool,
}

pub fn load(a: LoadArgs) -> crate::Result<()> {
    let label = a
        .label
        .as_deref()
        .map(|l| crate::config::plans::check_label(l, "--label"))
        .transpose()?;
    if let (Some(d), Some(_)) = (&a.dataset, a.prompt_tokens) {
        return Err(crate::error::Error::Serving(format!(
            "--dataset {} and --prompt-tokens exclude each other: a dataset's prompts have their own lengths",
            d.display()
        )));
    }
    run_load(&LoadOptions {
        url: a.url,
        model: a.model,
        endpoint: a.endpoint,
        prompt_tokens: a.prompt_tokens.unwrap_or(128),
        max_tokens: a.max_tokens,
        concurrency: a.concurrency,
        rate: a.rate,
        duration: a.duration,
        requests: a.requests,
        warmup: a.warmup,
        slo: a.slo,
        slo_preset: a.slo_preset,
        temperature: a.temperature,
        seed: a.seed,
        timeout: a.timeout,
        label,
        no_save: a.no_save,
        turns: a.turns,
        prefix_tokens: a.prefix_tokens,
        prefix_count: a.prefix_count,
        runs: a.runs,
        no_cache_prompt: a.no_cache_prompt,
        dataset: a.dataset,
        dataset_output_lengths: a.dataset_output_lengths,
    })?;
    Ok(())
}
