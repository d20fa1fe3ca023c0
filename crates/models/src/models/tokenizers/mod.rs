//! Tokenizers: loading one (a tokenizer.json, or the one a GGUF file carries in its metadata,
//! [`gguf`]), the project's own fixture tokenizer (a word-level vocabulary of exactly the
//! model's size, so LM-head and sampling costs stay realistic), encoding, decoding and
//! streaming detokenization. The external `tokenizers` crate is `::tokenizers` wherever this
//! module's name is in scope.

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

pub mod gguf;

/// Ids 0..3 of the fixture tokenizer are special.
pub const FIXTURE_SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// The `i`-th fixture word: bijective base-26 over `a..z` ("a", .., "z", "aa", ..).
pub fn fixture_word(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// The tokenizer.json of a fixture model: a WordLevel model over whitespace-split words
/// covering ids `0..vocab_size`, the first three being special tokens.
pub fn fixture_tokenizer_json(vocab_size: usize) -> String {
    let mut vocab = serde_json::Map::with_capacity(vocab_size);
    for (i, s) in FIXTURE_SPECIALS.iter().enumerate() {
        vocab.insert(s.to_string(), i.into());
    }
    for id in FIXTURE_SPECIALS.len()..vocab_size {
        vocab.insert(fixture_word(id - FIXTURE_SPECIALS.len()), id.into());
    }
    let added: Vec<_> = FIXTURE_SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

/// Loads a tokenizer.json, or, given a GGUF file, builds the tokenizer its metadata carries
/// (see [`gguf`]).
pub fn load(path: &Path) -> Result<Tokenizer> {
    load_resolved(path, None)
}

/// [`load`], where a GGUF tokenizer is built from the header its resolved source carries
/// (`header`: its `GgufSource`'s) rather than read again.
pub fn load_resolved(path: &Path, header: Option<&Content>) -> Result<Tokenizer> {
    if gguf::is_gguf(path) {
        return match header {
            Some(ct) => gguf::from_content(path, ct),
            None => {
                let ct = crate::models::gguf::check::read_header(path)?;
                gguf::from_content(path, &ct)
            }
        };
    }
    Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
        path: path.display().to_string(),
        reason: crate::error::one_line(&e.to_string()),
    })
}

pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tok.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| Error::Tokenizer {
            path: "(loaded)".into(),
            reason: e.to_string(),
        })
}

pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids, false).map_err(|e| Error::Tokenizer {
        path: "(loaded)".into(),
        reason: e.to_string(),
    })
}

/// The id the tokenizer's post-processor puts first when special tokens are added (Gemma's
/// `<bos>`), if any. Llama 3's tokenizer.json adds none (its BOS 128000 must be prepended by
/// the caller), so that case is handled by name, but only for a tokenizer without a template:
/// one built from GGUF metadata always has one and says exactly whether BOS comes first.
pub fn bos_id(tok: &Tokenizer) -> Option<u32> {
    let with = tok.encode("a", true).ok()?.get_ids().to_vec();
    let without = tok.encode("a", false).ok()?.get_ids().to_vec();
    if with.len() > without.len() {
        return with.first().copied();
    }
    if matches!(
        tok.get_post_processor(),
        Some(tokenizers::PostProcessorWrapper::Template(_))
    ) {
        return None;
    }
    tok.token_to_id("<|begin_of_text|>")
}

/// The tokens that end generation, by llama.cpp's rules on token texts
/// ([`gguf::llama_cpp_attrs`]: its end-of-generation texts such as `</s>`, `<eos>`,
/// `<end_of_turn>`, `<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>`, `<|endoftext|>`,
/// `<|im_end|>`, the FIM pad / repo / separator tokens, and its `<|end|>` / `</s>`
/// exceptions). A GGUF file's own set ([`gguf::GgufVocab::eog`]) adds the ids its metadata
/// names (EOS, EOT, EOM, FIM); that one is llama.cpp's exactly. Empty when it knows none.
pub fn eos_ids(tok: &Tokenizer) -> Vec<u32> {
    let vocab = tok.get_vocab(true);
    let n = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
    let mut tokens = vec![String::new(); n];
    for (t, i) in vocab {
        tokens[i as usize] = t;
    }
    let types = vec![gguf::TYPE_NORMAL; n];
    let names = gguf::llama_cpp_attrs::Names {
        model_name: "",
        pre: "",
        arch: "",
    };
    gguf::llama_cpp_attrs::load(&tokens, &types, |_| None, None, &names).eog
}

/// Streaming detokenizer: emits the text each new token adds, decoding only a short window
/// of recent tokens (the approach of candle-examples' `TokenOutputStream`), so its per-token
/// cost does not grow with the length of the output.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    tokens: Vec<u32>,
    prev: usize,
    current: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder {
            tok,
            tokens: Vec::new(),
            prev: 0,
            current: 0,
        }
    }

    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        let prev_text = if self.tokens.is_empty() {
            String::new()
        } else {
            decode(self.tok, &self.tokens[self.prev..self.current])?
        };
        self.tokens.push(id);
        let text = decode(self.tok, &self.tokens[self.prev..])?;
        if text.len() > prev_text.len() && !text.ends_with('\u{FFFD}') {
            let (_, new) = text.split_at(floor_char_boundary(&text, prev_text.len()));
            self.prev = self.current;
            self.current = self.tokens.len();
            Ok(Some(new.to_string()))
        } else {
            Ok(None)
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_unique_and_cover_vocab() {
        assert_eq!(fixture_word(0), "a");
        assert_eq!(fixture_word(25), "z");
        assert_eq!(fixture_word(26), "aa");
        let n = 5000;
        let set: std::collections::HashSet<_> = (0..n).map(fixture_word).collect();
        assert_eq!(set.len(), n);
    }

    #[test]
    fn eos_ids_follow_llama_cpp_texts() {
        let tok: Tokenizer = fixture_tokenizer_json(1000).parse().unwrap();
        assert_eq!(eos_ids(&tok), vec![2], "</s>");
    }

    #[test]
    fn fixture_tokenizer_round_trips_and_streams() {
        let json = fixture_tokenizer_json(1000);
        let tok: Tokenizer = json.parse().unwrap();
        assert_eq!(tok.get_vocab_size(true), 1000);
        let ids: Vec<u32> = vec![3, 17, 999, 500];
        let text = decode(&tok, &ids).unwrap();
        assert_eq!(encode(&tok, &text).unwrap(), ids);
        let mut s = StreamDecoder::new(&tok);
        let mut out = String::new();
        for &id in &ids {
            if let Some(t) = s.push(id).unwrap() {
                out.push_str(&t);
            }
        }
        assert_eq!(out.trim(), text.trim());
    }
}
