//! `modelbench tokenize`: a prompt or a file through a model's tokenizer, in the shape of
//! llama.cpp's `llama-tokenize` (`--ids` prints `[id, id, ...]`; otherwise one
//! `id -> 'piece'` line per token), so any file's tokens can be checked against llama.cpp by
//! hand. The tokenizer is the one the benchmarks use (`models::tokenizers::load` on the
//! resolved model: a tokenizer.json beside a GGUF file, else the file's metadata), and so is
//! the encoding (`tokenizer::encode`, BOS from `tokenizer::bos_id`).

use std::io::Write;
use std::path::PathBuf;

use crate::config::plans::parse_models;
use crate::engine::scenario::prepare;
use crate::models::tokenizers::{bos_id, decode, encode, load};
use clap::Args;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model whose tokenizer to use (gguf:<file>, gguf:<owner>/<repo>, a Hugging Face repo or
    /// folder, a fixture name).
    #[arg(long, short = 'm')]
    pub model: String,
    /// Text to tokenize.
    #[arg(
        long,
        short = 'p',
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    pub prompt: Option<String>,
    /// File whose whole content (UTF-8, taken as is) is tokenized.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Print only the ids, as `[id, id, ...]` (llama-tokenize --ids).
    #[arg(long)]
    pub ids: bool,
    /// Special-token texts in the input (`<|im_start|>`, `<bos>`) stay plain text instead of
    /// becoming their token (llama-tokenize --no-parse-special).
    #[arg(long)]
    pub no_parse_special: bool,
    /// Do not put BOS first, whatever the file says (llama-tokenize --no-bos).
    #[arg(long, conflicts_with = "bos")]
    pub no_bos: bool,
    /// Put the tokenizer's BOS first even when the file says not to.
    #[arg(long)]
    pub bos: bool,
    /// Print the number of tokens last (llama-tokenize --show-count).
    #[arg(long)]
    pub show_count: bool,
    /// Write the tokenizer (as built from the GGUF metadata) as a tokenizer.json to FILE, for
    /// use with the `tokenizers` library elsewhere.
    #[arg(long, value_name = "FILE")]
    pub save_tokenizer_json: Option<PathBuf>,
    /// Also tokenize the text N more times, timed (tokenizer already loaded), and print the
    /// median time and tokens/s on stderr.
    #[arg(long, value_name = "N")]
    pub time: Option<usize>,
}

pub fn tokenize(a: TokenizeArgs) -> crate::Result<()> {
    let text = match (&a.prompt, &a.file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
            fail!(
                "--file {}: {e}; give a readable UTF-8 text file",
                f.display()
            )
        })?,
        _ => bail!("give --prompt TEXT or --file FILE"),
    };
    // A GGUF file given by path: its tokenizer whatever its architecture (vocabulary-only
    // files included), chosen as the loader chooses (a tokenizer.json beside it first).
    let file = a
        .model
        .strip_prefix("gguf:")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let (label, tok_path) = match file {
        Some(f) => {
            let beside = f.with_file_name("tokenizer.json");
            (a.model.clone(), if beside.is_file() { beside } else { f })
        }
        None => {
            let models = parse_models(&a.model, "--model")?;
            let (label, r) = &models[0];
            let res = prepare(label, r, &[])?;
            (label.clone(), res.tokenizer_path()?.to_path_buf())
        }
    };
    let mut tok = load(&tok_path)?;
    if let Some(p) = &a.save_tokenizer_json {
        tok.save(p, true).map_err(|e| {
            fail!(
                "--save-tokenizer-json {}: {e}; give a writable path",
                p.display()
            )
        })?;
        eprintln!("wrote {}", p.display());
    }
    tok.set_encode_special_tokens(a.no_parse_special);
    let mut ids = encode(&tok, &text)?;
    let file_bos = bos_id(&tok);
    let bos = if a.no_bos {
        None
    } else if a.bos {
        let Some(b) = file_bos.or_else(|| {
            ["<bos>", "<s>", "<|begin_of_text|>"]
                .iter()
                .find_map(|t| tok.token_to_id(t))
        }) else {
            bail!("--bos: the tokenizer of {label} has no BOS token; leave --bos out");
        };
        Some(b)
    } else {
        file_bos
    };
    if let Some(b) = bos {
        ids.insert(0, b);
    }
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| fail!("stdout: {e}");
    if a.ids {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        writeln!(out, "[{}]", list.join(", ")).map_err(io)?;
    } else {
        for &i in &ids {
            let piece = match tok.id_to_token(i) {
                Some(t) if tok.get_added_vocabulary().is_special_token(&t) => t,
                _ => decode(&tok, &[i])?,
            };
            writeln!(out, "{i:6} -> '{piece}'").map_err(io)?;
        }
    }
    if a.show_count {
        writeln!(out, "Total number of tokens: {}", ids.len()).map_err(io)?;
    }
    if let Some(n) = a.time {
        ensure!(n >= 1, "--time must be at least 1");
        let mut secs: Vec<f64> = (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                let k = encode(&tok, &text).map(|v| v.len());
                (t.elapsed().as_secs_f64(), k)
            })
            .map(|(s, k)| k.map(|_| s))
            .collect::<modelbench_models::Result<_>>()?;
        secs.sort_by(f64::total_cmp);
        let med = secs[n / 2];
        eprintln!(
            "tokenized {} bytes into {} tokens: median {:.2} ms of {n} runs (min {:.2}, max {:.2}), {:.0} tokens/s",
            text.len(),
            ids.len(),
            med * 1e3,
            secs[0] * 1e3,
            secs[n - 1] * 1e3,
            ids.len() as f64 / med
        );
    }
    Ok(())
}
