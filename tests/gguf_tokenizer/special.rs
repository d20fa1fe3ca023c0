//! Special-token strings in ordinary text (issue 61 item 5): every vocabulary llama.cpp ships
//! and the real files, texts built from the vocabulary's own CONTROL / USER_DEFINED / UNKNOWN
//! token strings, with and without parse-special, against llama-tokenize.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use modelbench::models::sources::{resolve_in, HubEnv, ModelRef};
use modelbench::models::{gguf, tokenizers};

use crate::common;
use crate::llama_vocab::{
    first_difference, llama_tokenize_bin, llama_tokenize_with, vocab_dir, worker_pool,
};

/// Token texts llama.cpp's vocabulary load looks up by name (its EOT, EOM, FIM, EOG, gpt-oss
/// and per-model strip lists, src/llama-vocab.cpp): tokens of any type with one of these
/// texts are put into the texts too. This list only picks what to embed; the verdict is
/// llama-tokenize's.
const NAMED_BY_LLAMA_CPP: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|eom_id|>",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "[EOS]",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
    "<|channel|>",
    "<|message|>",
    "<|start|>",
    "<|constrain|>",
    "<mask>",
    "[MASK]",
    "<unk>",
    "<s>",
];

/// A GGUF's token strings and types, read here (not through the project's tokenizer).
fn tokens_and_types(ct: &gguf_file::Content) -> (Vec<String>, Vec<i32>) {
    let arr = |k: &str| match ct.metadata.get(k) {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let tokens: Vec<String> = arr("tokenizer.ggml.tokens")
        .iter()
        .map(|v| v.to_string().unwrap().clone())
        .collect();
    let mut types: Vec<i32> = arr("tokenizer.ggml.token_type")
        .iter()
        .map(|v| v.to_i32().unwrap())
        .collect();
    types.resize(tokens.len(), 1);
    (tokens, types)
}

/// The special-looking tokens a vocabulary's texts embed, by id: those its metadata names
/// (`tokenizer.ggml.*_token_id`), up to 16 of each of the types CONTROL (3), USER_DEFINED (4)
/// and UNKNOWN (2) (all when 16 or fewer, else the first 6, 6 evenly spaced, the last 4),
/// and any token named in [`NAMED_BY_LLAMA_CPP`].
fn special_sample(ct: &gguf_file::Content, tokens: &[String], types: &[i32]) -> Vec<usize> {
    let mut ids: Vec<usize> = Vec::new();
    for (k, v) in &ct.metadata {
        if k.starts_with("tokenizer.ggml.") && k.ends_with("_token_id") {
            match v {
                Value::U32(i) => ids.push(*i as usize),
                Value::I32(i) if *i >= 0 => ids.push(*i as usize),
                Value::U64(i) => ids.push(*i as usize),
                _ => {}
            }
        }
    }
    for ty in [3, 4, 2] {
        let of: Vec<usize> = (0..tokens.len()).filter(|&i| types[i] == ty).collect();
        if of.len() <= 16 {
            ids.extend(&of);
        } else {
            ids.extend(&of[..6]);
            ids.extend((1..=6).map(|k| of[6 + k * (of.len() - 10) / 7]));
            ids.extend(&of[of.len() - 4..]);
        }
    }
    ids.extend((0..tokens.len()).filter(|&i| NAMED_BY_LLAMA_CPP.contains(&tokens[i].as_str())));
    ids.retain(|&i| i < tokens.len() && types[i] != 6);
    ids.sort();
    ids.dedup();
    ids
}

/// One paragraph per sampled token `s` (`t`: the next one), `s` embedded in ordinary text
/// at a line start, mid-word, between spaces, tabs, newlines and ideographic spaces, next to
/// another special token and to itself.
fn special_paragraph(s: &str, t: &str) -> String {
    [
        format!("{s} opens the line; Hello {s} world."),
        format!("mid{s}word and 12{s}34, (\"{s}\")"),
        format!("line one\n{s}\nline two\n\n{s} starts a line\n"),
        format!("two spaces  {s}  around, a tab\t{s}\tand ideographic\u{3000}{s}\u{3000}space"),
        format!("{s}{t} adjacent, {t}{s} swapped, {s}{s} twice, {s} {t} spaced"),
        format!("Ünïcödé 日本語 {s}é text {s}"),
    ]
    .join(" ")
}

/// The two documents of a vocabulary: the paragraphs in id order (starting with the first
/// sampled token, with BOS as the file says) and in reverse order (without BOS).
fn special_documents(tokens: &[String], ids: &[usize]) -> [(String, bool); 2] {
    let paragraphs: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(k, &i)| special_paragraph(&tokens[i], &tokens[ids[(k + 1) % ids.len()]]))
        .collect();
    let doc = |ps: Vec<&String>| {
        let first = ps
            .first()
            .map(|p| p.split(' ').next().unwrap_or("").to_string())
            .unwrap_or_default();
        let body: Vec<&str> = ps.iter().map(|p| p.as_str()).collect();
        format!("{first}{}", body.join("\n"))
    };
    [
        (doc(paragraphs.iter().collect()), true),
        (doc(paragraphs.iter().rev().collect()), false),
    ]
}

/// What one vocabulary gave: paragraphs (embedded tokens), llama.cpp ids compared, the
/// differences (documents, and the end-of-generation set).
struct SpecialOutcome {
    paragraphs: usize,
    ids: usize,
    bad: Vec<String>,
}

/// One vocabulary's documents, both parse-special settings, through llama-tokenize and the
/// project's tokenizer, and its end-of-generation set against the one llama.cpp logs.
/// `ascii`: with the documents' ideographic spaces (U+3000) made ASCII spaces.
fn special_token_differences(
    bin: &Path,
    gguf: &Path,
    tmp: &Path,
    ascii: bool,
) -> Result<SpecialOutcome, String> {
    let name = gguf.file_name().unwrap().to_string_lossy().to_string();
    let ct = gguf::check::read_header(gguf).map_err(|e| e.to_string())?;
    let (tokens, types) = tokens_and_types(&ct);
    let ids = special_sample(&ct, &tokens, &types);
    let vocab = tokenizers::gguf::GgufVocab::read(gguf, &ct).map_err(|e| e.to_string())?;
    let tok = vocab.build(gguf).map_err(|e| e.to_string())?;
    let wants_bos = tokenizers::bos_id(&tok).is_some();
    let (mut n_ids, mut bad) = (0, Vec::new());
    for (d, (text, bos)) in special_documents(&tokens, &ids).iter().enumerate() {
        let text = if ascii {
            text.replace('\u{3000}', " ")
        } else {
            text.clone()
        };
        let file = tmp.join(format!("{name}-{d}-{ascii}.txt"));
        std::fs::write(&file, &text).unwrap();
        for parse in [true, false] {
            let (want, eog) = llama_tokenize_with(bin, gguf, &file, *bos, parse);
            if d == 0 && parse && eog != vocab.eog {
                let text_of = |ids: &[u32]| -> Vec<String> {
                    ids.iter()
                        .map(|&i| format!("{i} {:?}", tokens[i as usize]))
                        .collect()
                };
                bad.push(format!(
                    "{name}: end-of-generation set: llama.cpp {:?}, ours {:?}",
                    text_of(&eog),
                    text_of(&vocab.eog)
                ));
            }
            let mut t = tok.clone();
            t.set_encode_special_tokens(!parse);
            let enc = t.encode(text.as_str(), *bos && wants_bos).unwrap();
            let got = enc.get_ids();
            n_ids += want.len();
            if got != want.as_slice() {
                // Where in the text: the offset of our first differing token.
                let i = want.iter().zip(got).position(|(a, b)| a != b);
                let i = i.unwrap_or(want.len().min(got.len()));
                let at = enc
                    .get_offsets()
                    .get(i.min(got.len().saturating_sub(1)))
                    .map_or(0, |o| o.0);
                let line_start = text[..at].rfind('\n').map_or(0, |p| p + 1);
                let line: String = text[line_start..].chars().take(160).collect();
                bad.push(format!(
                    "{name} document {d} ({} BOS), parse_special={parse}: {}\n    at text byte {at}, in the line {line:?}",
                    if *bos { "with" } else { "without" },
                    first_difference(&want, got)
                ));
            }
        }
    }
    Ok(SpecialOutcome {
        paragraphs: ids.len(),
        ids: n_ids,
        bad,
    })
}

/// Shipped vocabularies the project refuses, and why (not a difference of ids).
const NOT_BUILT: &[(&str, &str)] = &[(
    "ggml-vocab-nomic-bert-moe.gguf",
    "tokenizer model `t5` (UGM) is not implemented",
)];

/// Vocabularies whose documents differ from llama.cpp for a stated reason: they must differ
/// as built, and match exactly with the documents' ideographic spaces made ASCII spaces.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
    "ggml-vocab-phi-3.gguf",
    "llama.cpp strips only ASCII whitespace (isspace) after an RSTRIP token; the tokenizers \
     crate's AddedToken rstrip strips Unicode White_Space, so `<|end|>\u{3000}x` loses the \
     U+3000 here",
)];

/// Every `ggml-vocab-*.gguf` llama.cpp ships and the real files the project installs: texts
/// embedding each vocabulary's own special-token strings, with and without parse-special,
/// give llama-tokenize's ids exactly, and the vocabulary's end-of-generation set is
/// llama.cpp's. The vocabularies the project cannot build must be exactly [`NOT_BUILT`];
/// those in [`KNOWN_DIFFERENCES`] must differ as built and match without non-ASCII whitespace.
#[test]
fn special_token_strings_in_text_match_llama_tokenize() {
    let Some(dir) = vocab_dir() else { return };
    let Some(bin) = llama_tokenize_bin() else {
        return;
    };
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), p))
        .collect();
    files.sort();
    let hub = HubEnv::from_env();
    for reference in [
        "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF",
        "gguf:modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        "gguf:modelbench-offline/SmolLM2-135M-Instruct-GGUF",
    ] {
        let r = ModelRef::parse(reference).unwrap();
        match resolve_in(&r, reference, &hub) {
            Ok(res) => match res.weights {
                modelbench::models::Weights::Gguf(p) => files.push((reference.to_string(), p)),
                _ => unreachable!("a gguf: reference"),
            },
            Err(e) => common::skip_real_model(e),
        }
    }
    // Each vocabulary as built, and those with a known difference once more with ASCII
    // whitespace only.
    let mut jobs: Vec<(String, PathBuf, bool)> = files
        .iter()
        .map(|(n, p)| (n.clone(), p.clone(), false))
        .collect();
    for (n, p) in &files {
        if KNOWN_DIFFERENCES.iter().any(|(k, _)| k == n) {
            jobs.push((n.clone(), p.clone(), true));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let pool = worker_pool();
    let results: Vec<_> = pool.install(|| {
        use rayon::prelude::*;
        jobs.par_iter()
            .map(|(n, p, ascii)| {
                let r = special_token_differences(&bin, p, tmp.path(), *ascii);
                (n.clone(), *ascii, r)
            })
            .collect()
    });
    let (mut n_vocabs, mut n_paragraphs, mut n_ids, mut n_docs) = (0, 0, 0, 0);
    let (mut bad, mut not_built, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for (name, ascii, r) in results {
        let known = KNOWN_DIFFERENCES.iter().find(|(k, _)| *k == name);
        match r {
            Ok(o) => {
                let label = if ascii {
                    format!("{name} (U+3000 made ASCII)")
                } else {
                    name.clone()
                };
                rows.push(format!(
                    "{label}: {} tokens embedded, {} ids, {} differences",
                    o.paragraphs,
                    o.ids,
                    o.bad.len()
                ));
                if !ascii {
                    n_vocabs += 1;
                    n_paragraphs += o.paragraphs;
                    n_ids += o.ids;
                    n_docs += 4;
                }
                match (known, ascii) {
                    (Some((_, why)), false) => {
                        if o.bad.is_empty() {
                            bad.push(format!("{name}: listed as differing ({why}) but matches: take it out of KNOWN_DIFFERENCES"));
                        } else {
                            eprintln!("known difference, {name}: {why}:\n  {}", o.bad.join("\n  "));
                        }
                    }
                    _ => bad.extend(o.bad),
                }
            }
            Err(e) => {
                rows.push(format!("{name}: not built: {e}"));
                not_built.push(name);
            }
        }
    }
    eprintln!(
        "special-token strings in text: {n_vocabs} vocabularies built, {n_paragraphs} embedded tokens (a paragraph each) in {n_docs} documents x 2 parse-special settings, {n_ids} llama.cpp ids, in {:.0?}; {} differences\n  {}",
        t0.elapsed(),
        bad.len(),
        rows.join("\n  ")
    );
    let expected: Vec<String> = NOT_BUILT.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        not_built, expected,
        "vocabularies not built ({NOT_BUILT:?})"
    );
    assert!(
        bad.is_empty(),
        "{} differences from llama.cpp:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
