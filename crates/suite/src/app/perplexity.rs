//! `modelbench perplexity`: perplexity of a text file, sliding-window or with llama-perplexity's
//! chunks.

use crate::app::Context;
use crate::config::plans::parse_models;
use crate::engine::perplexity::Windowing;
use crate::engine::scenario::prepare;
use crate::models::sources::loading::open;
use crate::output::report::{reports_root, RunDir};

use crate::app::args::TargetArgs;
use crate::Result;

/// `modelbench perplexity --method`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Sliding,
    LlamaCpp,
}

/// `modelbench perplexity`.
#[derive(clap::Args)]
pub struct PerplexityArgs {
    #[arg(long)]
    pub model: String,
    /// Window length in tokens (with `--method llama-cpp`: the chunk length, llama.cpp's -c).
    #[arg(long, default_value_t = 1024)]
    pub seq_len: usize,
    /// How far each sliding window advances (default 256); not used by `--method llama-cpp`.
    #[arg(long)]
    pub stride: Option<usize>,
    /// `sliding`: HF transformers' sliding window (every token after the first scored once).
    /// `llama-cpp`: llama-perplexity's default windowing (non-overlapping --seq-len chunks,
    /// <bos> replacing each chunk's first token, the second half of each chunk scored), to
    /// compare number for number with llama.cpp on the same file.
    #[arg(long, value_enum, default_value_t = Method::Sliding)]
    pub method: Method,
    #[command(flatten)]
    pub target: TargetArgs,
    /// UTF-8 text to score.
    pub file: std::path::PathBuf,
}

/// The windowing of `--method` and `--stride`: a stride belongs to sliding windows only.
pub fn windowing(llama_cpp: bool, stride: Option<usize>) -> Result<Windowing> {
    match (llama_cpp, stride) {
        (false, s) => Ok(Windowing::Sliding {
            stride: s.unwrap_or(256),
        }),
        (true, None) => Ok(Windowing::LlamaCpp),
        (true, Some(s)) => bail!(
            "--stride {s}: --method llama-cpp does not use a stride (its chunks do not overlap); drop --stride or use --method sliding"
        ),
    }
}

pub fn perplexity(a: &PerplexityArgs) -> Result<()> {
    let windowing = windowing(a.method == Method::LlamaCpp, a.stride)?;
    let (model, seq_len, target, file) = (&a.model, a.seq_len, &a.target, &a.file);
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read the text", file.display()))?;
    let (spec, dt, label) = target.resolve()?;
    let models = parse_models(model, "--model")?;
    let (l, r) = &models[0];
    let res = prepare(l, r, &[])?;
    let tok_path = res.tokenizer_path()?.to_path_buf();
    let dev = spec.open_for("--device")?;
    let mut loaded = open(res, &dev, dt, Some(seq_len))?;
    // The project's Gemma 3 is exact at every built position (exact_context None); the
    // candle-transformers one (`?impl=candle-transformers`) only up to its sliding window.
    if let Some(w) = loaded.model.meta().provenance.exact_context {
        ensure!(
            seq_len < w,
            "--seq-len {seq_len}: {l} computes exactly only up to {w} positions ({}); use --seq-len {} or less, or the default implementation",
            loaded.model.meta().provenance.implementation,
            w - 1
        );
    }
    let built = loaded.model.meta().built_context;
    ensure!(
        seq_len <= built,
        "--seq-len {seq_len}: {l} was built for {built} positions (its context length); use --seq-len {built} or less"
    );
    let tok = loaded
        .tokenizer
        .as_ref()
        .expect("loaded with the tokenizer");
    let bos = crate::models::tokenizers::bos_id(tok);
    let ids = match windowing {
        Windowing::Sliding { .. } => crate::models::tokenizers::encode(tok, &text)?,
        Windowing::LlamaCpp => {
            // As llama-perplexity reads the file: one trailing newline removed, the whole text
            // tokenized once with <bos> first when the model has one.
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let mut ids: Vec<u32> = bos.into_iter().collect();
            ids.extend(crate::models::tokenizers::encode(tok, text)?);
            ensure!(
                ids.len() >= 2 * seq_len,
                "--seq-len {seq_len}: {} is {} tokens and llama-perplexity's windowing needs at least 2 x seq-len = {}; use --seq-len {} or less, or a longer text",
                file.display(),
                ids.len(),
                2 * seq_len,
                ids.len() / 2
            );
            ids
        }
    };
    // After the input checks: a bad --seq-len is one line, not the load figures and an error.
    eprintln!("{}", crate::models::sources::loading::load_line(&loaded));
    let mut w = crate::workloads::perplexity::Perplexity {
        loaded: &mut loaded,
        text_name: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ids,
        seq_len,
        windowing,
        bos,
        device: spec,
        dtype: dt,
        progress: true,
    };
    let r = crate::workloads::run_trials(&mut w, 0, 1)?;
    let p: crate::engine::perplexity::Perplexity = serde_json::from_value(r.extra.clone())
        .map_err(|e| fail!("{l}: the perplexity record: {e}"))?;
    let how = match windowing {
        Windowing::Sliding { stride } => format!("seq-len {}, stride {stride}", p.seq_len),
        Windowing::LlamaCpp => format!("llama-perplexity chunks of {}", p.seq_len),
    };
    println!(
        "{l} on {}: perplexity {:.4} (mean NLL {:.4} nats), {} tokens scored in {} windows ({how}), {:.1} tok/s, {:.1} s; tokenizer {}",
        file.display(), p.perplexity, p.mean_nll, p.tokens_scored, p.windows, p.tok_s, p.seconds, tok_path.display()
    );
    if !target.no_save {
        let mut run = RunDir::new(&reports_root(), label.as_deref());
        run.push(r)?;
        run.complete()?;
        println!("saved {}", run.path.display());
    }
    Ok(())
}
