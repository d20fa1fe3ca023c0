//! `modelbench generate`: see what a model produces before trusting its speed. Streams the
//! continuation of a text prompt to stdout (greedy by default; `<bos>` put first as the
//! model's tokenizer expects), then one timing line on stderr, like candle-examples' `--prompt`.

use std::io::Write;

use crate::config::plans::parse_models;
use crate::engine::generate::{generate_with, Prompt};
use crate::engine::sampling::Sampler;
use crate::engine::scenario::prepare;
use crate::models::sources::loading::{load_line, open};
use crate::models::tokenizers::{bos_id, encode, StreamDecoder};

use crate::app::args::{device_and_dtype, GenerateArgs};

pub fn generate(a: GenerateArgs) -> crate::Result<()> {
    ensure!(a.max_new_tokens >= 1, "--max-new-tokens must be at least 1");
    let sampling = a.sampling.params()?;
    let (spec, dtype) = device_and_dtype(&a.device, a.dtype.as_deref())?;
    let models = parse_models(&a.model, "--model")?;
    let (label, r) = &models[0];
    let res = prepare(label, r, &[])?;
    res.tokenizer_path()?;
    let dev = spec.open_for("--device")?;
    // The tokenizer is loaded once, by `open` (its memory is part of the load's figures); the
    // context is sized before the prompt is tokenized: a token covers at least one byte, plus
    // <bos>.
    let cap = a.prompt.len() + 1 + a.max_new_tokens;
    let mut loaded = open(res, &dev, dtype, Some(cap))?;
    eprintln!("{}", load_line(&loaded));
    let tok = loaded
        .tokenizer
        .take()
        .ok_or_else(|| crate::error::Error::Command(format!("{label}: no tokenizer was loaded")))?;
    let mut ids = encode(&tok, &a.prompt)?;
    if let Some(b) = bos_id(&tok) {
        if ids.first() != Some(&b) {
            ids.insert(0, b);
        }
    }
    ensure!(!ids.is_empty(), "--prompt encodes to no tokens");
    let mut sampler = Sampler::new(sampling, a.seed);
    let mut stream = StreamDecoder::new(&tok);
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", a.prompt);
    let _ = out.flush();
    let mut err = None;
    let trace = generate_with(
        loaded.model.as_mut(),
        &Prompt::Ids(ids.clone()),
        a.max_new_tokens,
        &mut sampler,
        None,
        &mut |t| match stream.push(t) {
            Ok(Some(piece)) => {
                let _ = write!(out, "{piece}");
                let _ = out.flush();
            }
            Ok(None) => {}
            Err(e) => err = Some(e),
        },
    )?;
    let _ = writeln!(out);
    if let Some(e) = err {
        return Err(e.into());
    }
    let ttft = trace.ttft().as_secs_f64();
    let decode = (trace.e2e() - trace.ttft()).as_secs_f64();
    let n = trace.tokens.len();
    eprintln!(
        "{label}: {} prompt tokens (ids {:?}{}), {n} new tokens ({}; EOS not checked) in {:.2} s: prefill {:.1} tok/s, decode {}",
        ids.len(),
        &ids[..ids.len().min(8)],
        if ids.len() > 8 { " ..." } else { "" },
        sampling.describe(),
        trace.e2e().as_secs_f64(),
        ids.len() as f64 / ttft.max(1e-9),
        if n > 1 {
            format!(
                "{:.1} tok/s ({} steps in {decode:.6} s)",
                (n - 1) as f64 / decode.max(1e-9),
                n - 1
            )
        } else {
            "n/a (one token)".into()
        },
    );
    if a.ids {
        eprintln!("generated ids: {:?}", trace.tokens);
    }
    if let Some(k) = trace.non_finite_steps.filter(|&k| k > 0) {
        eprintln!("{label}: NaN/Inf logits in {k} of {n} steps: the text and the speed are of a model computing garbage");
    }
    Ok(())
}
