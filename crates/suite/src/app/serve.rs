//! `modelbench serve`: an OpenAI-compatible HTTP server over any model the suite loads. This
//! file holds the flags and loads the model (the settings' checks are serving's own:
//! `Options::check`, `context_for`); the server is `crate::serving`
//! (continuous batching for the project's quantized Gemma 3, Llama and Qwen3; batch 1 for
//! other models).

use std::net::SocketAddr;

use clap::Args;

use crate::config::plans::parse_models;
use crate::engine::scenario::prepare;
use crate::models::sources::loading::{load_line, open};
use crate::serving::chat::ChatFormat;
use crate::serving::server::{self, Options};

use crate::app::args::{device_and_dtype, FastWeightsArg};
use crate::Result;

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
    /// Sequences per batched step (llama-server's --parallel). Default 8 for the project's
    /// Gemma 3 (gguf:); above 1 a GGUF Llama or Qwen3 file runs the project's implementation
    /// (impl=modelbench); other models run one sequence per forward and accept only 1.
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Tokens per step: decodes (one each) plus whole prefill chunks (llama-server's
    /// --batch-size).
    #[arg(long, default_value_t = server::DEFAULT_MAX_BATCH_TOKENS)]
    pub max_batch_tokens: usize,
    /// Prefill chunk: prompts run in chunks of this many tokens, cut at the same offsets
    /// whatever else is in the batch (at most --max-batch-tokens).
    #[arg(long, default_value_t = server::DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Positions a request may use (prompt + max_tokens); default: the model's context,
    /// capped at 4096.
    #[arg(long)]
    pub context: Option<usize>,
    /// Requests waiting beyond this get 503 with Retry-After.
    #[arg(long, default_value_t = server::DEFAULT_MAX_QUEUE)]
    pub max_queue: usize,
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_DEVICE"))]
    pub device: String,
    /// f32, f16 or bf16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Seed of requests that give none (request n uses seed + n).
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    /// Turn prefix caching off: every prompt runs whole (by default a prompt reuses the keys
    /// and values a slot's cache holds of its start, as llama-server's `cache_prompt` and
    /// vLLM's automatic prefix caching do; a request's `"cache_prompt": false` opts out alone).
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Let the prefix cache reuse positions a decode step computed (an earlier answer's
    /// tokens), as llama-server does: more reuse in conversations, but those keys and values
    /// differ from a prefill's in rounding, so outputs may differ from the cache off (measured:
    /// docs/serving.md). Default: only prefill-computed positions (outputs as without it).
    #[arg(long, conflicts_with = "no_prefix_cache")]
    pub prefix_cache_decoded: bool,
    /// Sliding-window layers (Gemma 3's) keep every position, as llama-server's --swa-full:
    /// the prefix cache can then reuse a prompt longer than the window (without it a slot's
    /// sliding layers hold only the last window - 1 positions, so a longer prompt's start is
    /// gone). They attend over every position masked to the window, as the global layers
    /// attend: answers are the same with the cache on and off; memory and attention work of
    /// those layers grow with the context, as the global layers' do.
    #[arg(long)]
    pub swa_full: bool,
    #[command(flatten)]
    pub fast: FastWeightsArg,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    // The server's settings, checked before anything loads (the weights' dtype comes later).
    let mut opts = Options {
        name: a.model.clone(),
        context: 0,
        max_batch: a.max_batch,
        max_batch_tokens: a.max_batch_tokens,
        prefill_chunk: a.prefill_chunk,
        max_queue: a.max_queue,
        seed: a.seed,
        device: String::new(),
        dtype: String::new(),
        fast_weights: a.fast.fast_weights,
        chat: std::sync::Arc::new(ChatFormat::role_lines()),
        prefix_cache: !a.no_prefix_cache,
        prefix_cache_decoded: a.prefix_cache_decoded,
        swa_full: a.swa_full,
    };
    opts.check()?;
    let (spec, dtype) = device_and_dtype(&a.device, a.dtype.as_deref())?;
    let models = parse_models(&a.model, "--model")?;
    let (label, r) = &models[0];
    let mut res = prepare(label, r, &[])?;
    if server::choose_impl(&mut res, a.max_batch) {
        eprintln!(
            "modelbench serve: --max-batch {}: running the project's quantized {} (impl=modelbench), which batches; candle-transformers' (the benchmarks' default for this family) runs one sequence per forward",
            a.max_batch.unwrap_or(1),
            res.family
        );
    }
    // Checked now (a missing tokenizer fails before the weights load); loaded by `open`, once,
    // so the load's memory figures include it.
    res.tokenizer_path()?;
    let addr: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .map_err(|e| fail!("--host {:?} / --port {}: {e}", a.host, a.port))?;
    let dev = spec.open_for("--device")?;
    let model_context = crate::engine::preflight::meta_of(&res, dtype, usize::MAX)
        .map(|m| m.max_context)
        .unwrap_or(server::DEFAULT_CONTEXT_CAP);
    let context = server::context_for(a.context, model_context)?;
    let mut loaded = open(res, &dev, dtype, Some(context))?;
    eprintln!("{}", load_line(&loaded));
    let tok = loaded
        .tokenizer
        .take()
        .ok_or_else(|| fail!("{label}: no tokenizer was loaded"))?;
    // The model's chat template (GGUF metadata, else tokenizer_config.json beside it).
    let chat = ChatFormat::for_model(&loaded.resolved, &tok)?;
    eprintln!("modelbench serve: {}", chat.describe());
    opts.chat = std::sync::Arc::new(chat);
    opts.name = label.clone();
    opts.context = context;
    opts.device = spec.to_string();
    // What the weights are (`f32`, `gguf-q4_k_m`, ...), not only the activation dtype.
    opts.dtype = loaded.model.meta().dtype.clone();
    let precision = opts.dtype.clone();
    let weight_bytes = loaded.model.meta().weight_bytes;
    let prepared = server::prepare(loaded.model, &opts)?;
    crate::models::sources::loading::extend_to_now(&mut loaded.load);
    eprintln!(
        "modelbench serve: prepared for serving ({}): {}",
        prepared.describe,
        crate::models::sources::loading::memory_phrase(&loaded.load, weight_bytes)
    );
    let describe = prepared.describe.clone();
    let running = server::start(prepared, tok, &opts, addr)?;
    println!(
        "modelbench serve: {label} on {spec} ({precision}), context {context}, {describe}; listening on {}",
        running.url()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    running.wait();
    Ok(())
}
