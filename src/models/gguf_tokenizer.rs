//! The tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.*`), built into a
//! `tokenizers::Tokenizer` that gives llama.cpp's token ids (see docs/gguf-tokenizer.md):
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE with the file's merges, pre-tokenized
//!   with llama.cpp's regexes for `tokenizer.ggml.pre` (src/llama-vocab.cpp at the commit
//!   scripts/build-llama-cpp.sh pins): `llama-bpe`/`llama3`/`llama-v3` (and `smaug-bpe`,
//!   `dbrx`), `qwen2`, `gpt-2`, `default` (also when the key is absent, as llama.cpp does).
//!   llama.cpp's llama3 family takes a whole pre-token that is in the vocabulary without
//!   merging (`ignore_merges`), the others merge always.
//! - `tokenizer.ggml.model = "llama"` (SentencePiece, Llama 2 / Gemma): llama.cpp merges the
//!   adjacent pair whose concatenation is the highest-scoring token (ties: leftmost), with
//!   `<0xXX>` byte tokens for characters not in the vocabulary. That is BPE with one merge per
//!   way of splitting a token into two tokens, ranked by the token's score: built so here.
//!   Spaces become `▁`; `tokenizer.ggml.add_space_prefix` (default true) puts one first.
//!
//! Tokens of type CONTROL and UNKNOWN are special added tokens and USER_DEFINED ones plain
//! added tokens matched in the raw text: llama.cpp splits both out of the text before the
//! model runs (`llama-tokenize` parses special tokens by default, as `encode` does here).
//! BOS is put first exactly when `tokenizer.ggml.add_bos_token` says so, or by llama.cpp's
//! default when it is absent (SentencePiece and the llama3 pre-tokenizers: yes; other BPE: no).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use crate::error::{Error, Result};

/// `ModelInfo::tokenizer` / `Resolved::tokenizer_kind` of a tokenizer built from the metadata.
pub const SOURCE_GGUF: &str = "gguf-metadata";
/// ... and of a tokenizer.json found beside the .gguf file (it overrides the metadata).
pub const SOURCE_BESIDE: &str = "tokenizer.json beside the file";

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_UNUSED: i32 = 5;
pub const TYPE_BYTE: i32 = 6;

/// llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, `llm_tokenizer_bpe`).
pub const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const REGEX_GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
pub const REGEXES_DEFAULT: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// How llama.cpp pre-tokenizes a BPE vocabulary of `tokenizer.ggml.pre` = `pre`:
/// (regexes applied in turn, whole pre-tokens in the vocabulary taken as they are, BOS by
/// default). None: a pre-tokenizer this module does not implement.
pub fn bpe_pre(pre: Option<&str>) -> Option<(Vec<&'static str>, bool, bool)> {
    Some(match pre.unwrap_or("default") {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
            (vec![REGEX_LLAMA3], true, true)
        }
        "smaug-bpe" | "dbrx" => (vec![REGEX_LLAMA3], false, false),
        "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" => (vec![REGEX_QWEN2], false, false),
        "gpt-2" | "phi-2" | "mpt" | "olmo" => (vec![REGEX_GPT2], false, false),
        "default" => (REGEXES_DEFAULT.to_vec(), false, false),
        _ => return None,
    })
}

/// The GPT-2 byte-to-character table of byte-level BPE vocabularies.
pub fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("below the surrogates")
        };
    }
    out
}

/// The pre-tokenizer of a byte-level BPE vocabulary: llama.cpp's regexes, then bytes mapped
/// to GPT-2's characters.
pub fn bpe_pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for r in regexes {
        let split = Split::new(
            SplitPattern::Regex(r.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Tokenizer {
            path: "(gguf pre-tokenizer)".into(),
            reason: format!("regex {r}: {e}"),
        })?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(PreSequence::new(steps).into())
}

/// Merges of a SentencePiece vocabulary as llama.cpp applies them: every split of a token into
/// two tokens, ranked by the token's score (highest first; ties by the lower token id, then
/// the shorter left part).
pub fn spm_merges(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        for (cut, _) in t.char_indices().skip(1) {
            if ids.contains_key(&t[..cut]) && ids.contains_key(&t[cut..]) {
                merges.push((scores.get(i).copied().unwrap_or(0.0), i, cut));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges
        .into_iter()
        .map(|(_, i, cut)| (tokens[i][..cut].to_string(), tokens[i][cut..].to_string()))
        .collect()
}

/// What a GGUF file's tokenizer metadata says, read once.
#[derive(Debug, Clone)]
pub struct GgufVocab {
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub scores: Vec<f32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`, or llama.cpp's default for the model type.
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

fn err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::U8(x) => Some(*x as u32),
        Value::U16(x) => Some(*x as u32),
        Value::U32(x) => Some(*x),
        Value::U64(x) => u32::try_from(*x).ok(),
        Value::I8(x) => u32::try_from(*x).ok(),
        Value::I16(x) => u32::try_from(*x).ok(),
        Value::I32(x) => u32::try_from(*x).ok(),
        Value::I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

/// Whether the file carries a tokenizer (`tokenizer.ggml.model` and `.tokens`).
pub fn has_tokenizer(ct: &Content) -> bool {
    ct.metadata.contains_key("tokenizer.ggml.model")
        && ct.metadata.contains_key("tokenizer.ggml.tokens")
}

impl GgufVocab {
    /// Reads and checks the metadata; the error names the missing or malformed key.
    pub fn read(path: &Path, ct: &Content) -> Result<GgufVocab> {
        let md = &ct.metadata;
        let key = |k: &str| format!("tokenizer.ggml.{k}");
        let model = match md.get(&key("model")) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(err(path, "`tokenizer.ggml.model` is not a string")),
            None => {
                return Err(err(
                    path,
                    "the GGUF file has no tokenizer metadata (`tokenizer.ggml.model`); put the model's tokenizer.json beside the file",
                ))
            }
        };
        let array = |k: &str| -> Result<Option<&Vec<Value>>> {
            match md.get(&key(k)) {
                None => Ok(None),
                Some(Value::Array(a)) => Ok(Some(a)),
                Some(_) => Err(err(path, format!("`tokenizer.ggml.{k}` is not an array"))),
            }
        };
        let strings = |k: &str| -> Result<Vec<String>> {
            array(k)?
                .map(|a| {
                    a.iter()
                        .map(|v| match v {
                            Value::String(s) => Ok(s.clone()),
                            _ => Err(err(
                                path,
                                format!("`tokenizer.ggml.{k}` holds a non-string"),
                            )),
                        })
                        .collect()
                })
                .unwrap_or(Ok(Vec::new()))
        };
        let tokens = strings("tokens")?;
        if tokens.is_empty() {
            return Err(err(
                path,
                "the GGUF file has no `tokenizer.ggml.tokens`; put the model's tokenizer.json beside the file",
            ));
        }
        let n = tokens.len();
        let types: Vec<i32> = match array("token_type")? {
            None => vec![TYPE_NORMAL; n],
            Some(a) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(*x),
                    other => as_u32(other).map(|x| x as i32).ok_or_else(|| {
                        err(path, "`tokenizer.ggml.token_type` holds a non-integer")
                    }),
                })
                .collect::<Result<_>>()?,
        };
        if types.len() < n {
            return Err(err(
                path,
                format!(
                    "`tokenizer.ggml.token_type` has {} entries for {n} tokens",
                    types.len()
                ),
            ));
        }
        let scores: Vec<f32> = match array("scores")? {
            None => Vec::new(),
            Some(a) => a
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Ok(*x),
                    Value::I32(x) => Ok(*x as f32),
                    _ => Err(err(path, "`tokenizer.ggml.scores` holds a non-number")),
                })
                .collect::<Result<_>>()?,
        };
        if !scores.is_empty() && scores.len() < n {
            return Err(err(
                path,
                format!(
                    "`tokenizer.ggml.scores` has {} entries for {n} tokens",
                    scores.len()
                ),
            ));
        }
        let merges = strings("merges")?;
        let pre = match md.get(&key("pre")) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let id = |k: &str| -> Result<Option<u32>> {
            match md.get(&key(k)) {
                None => Ok(None),
                Some(v) => match as_u32(v) {
                    Some(i) if (i as usize) < n => Ok(Some(i)),
                    Some(i) => Err(err(
                        path,
                        format!("`tokenizer.ggml.{k}` = {i} is outside the {n} tokens"),
                    )),
                    None => Err(err(path, format!("`tokenizer.ggml.{k}` is not an integer"))),
                },
            }
        };
        let flag = |k: &str| match md.get(&key(k)) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        };
        let (bos, eos, unk, add_bos_default, add_space_default) = match model.as_str() {
            // llama.cpp's defaults per vocabulary type (llama_vocab::impl::load).
            "llama" => (
                id("bos_token_id")?.or(Some(1).filter(|_| n > 1)),
                id("eos_token_id")?.or(Some(2).filter(|_| n > 2)),
                id("unknown_token_id")?.or(Some(0)),
                true,
                true,
            ),
            "gpt2" => {
                let Some((_, _, bos_default)) = bpe_pre(pre.as_deref()) else {
                    return Err(err(
                        path,
                        format!(
                            "BPE pre-tokenizer `tokenizer.ggml.pre` = `{}` is not implemented (implemented: llama-bpe, llama3, qwen2, gpt-2, default, smaug-bpe, dbrx); put the model's tokenizer.json beside the file",
                            pre.as_deref().unwrap_or("")
                        ),
                    ));
                };
                (
                    id("bos_token_id")?.or(Some(11).filter(|_| n > 11)),
                    id("eos_token_id")?.or(Some(11).filter(|_| n > 11)),
                    id("unknown_token_id")?,
                    bos_default,
                    false,
                )
            }
            other => {
                return Err(err(
                    path,
                    format!(
                        "tokenizer model `tokenizer.ggml.model` = `{other}` is not implemented (implemented: gpt2, llama); put the model's tokenizer.json beside the file"
                    ),
                ))
            }
        };
        if model == "gpt2" && merges.is_empty() {
            return Err(err(path, "a BPE (`gpt2`) tokenizer without `tokenizer.ggml.merges`; put the model's tokenizer.json beside the file"));
        }
        let add_bos = flag("add_bos_token").unwrap_or(add_bos_default);
        let add_eos = flag("add_eos_token").unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(err(
                path,
                "`tokenizer.ggml.add_bos_token` is set but there is no BOS token id",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(err(
                path,
                "`tokenizer.ggml.add_eos_token` is set but there is no EOS token id",
            ));
        }
        Ok(GgufVocab {
            model,
            pre,
            tokens,
            types,
            scores,
            merges,
            bos,
            eos,
            unk,
            add_bos,
            add_eos,
            add_space_prefix: flag("add_space_prefix").unwrap_or(add_space_default),
        })
    }

    /// Builds the tokenizer.
    pub fn build(&self, path: &Path) -> Result<Tokenizer> {
        let e = |what: &str, x: String| err(path, format!("{what}: {x}"));
        let vocab: tokenizers::models::bpe::Vocab = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != self.tokens.len() {
            return Err(err(
                path,
                "`tokenizer.ggml.tokens` holds the same token twice",
            ));
        }
        let mut tok = if self.model == "gpt2" {
            let (regexes, ignore_merges, _) =
                bpe_pre(self.pre.as_deref()).expect("checked in read");
            let merges: Vec<(String, String)> = self
                .merges
                .iter()
                .map(|m| {
                    // llama.cpp splits at the first space after the first byte.
                    let at = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1);
                    match at {
                        Some(p) => Ok((m[..p].to_string(), m[p + 1..].to_string())),
                        None => Err(err(path, format!("merge `{m}` has no space"))),
                    }
                })
                .collect::<Result<_>>()?;
            let mut b = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .ignore_merges(ignore_merges);
            if let Some(u) = self.unk {
                b = b.unk_token(self.tokens[u as usize].clone());
            }
            let bpe = b.build().map_err(|x| e("BPE", x.to_string()))?;
            let mut t = Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(bpe_pre_tokenizer(&regexes)?));
            t.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
            t
        } else {
            if self.scores.is_empty() {
                return Err(err(path, "a SentencePiece (`llama`) tokenizer without `tokenizer.ggml.scores`; put the model's tokenizer.json beside the file"));
            }
            let merges = spm_merges(&self.tokens, &self.scores);
            let mut b = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .byte_fallback(true);
            if let Some(u) = self.unk {
                b = b.unk_token(self.tokens[u as usize].clone());
            }
            let bpe = b.build().map_err(|x| e("BPE", x.to_string()))?;
            let mut t = Tokenizer::new(bpe);
            let mut norm: Vec<NormalizerWrapper> = Vec::new();
            if self.add_space_prefix {
                norm.push(Prepend::new("▁".into()).into());
            }
            norm.push(
                Replace::new(" ", "▁")
                    .map_err(|x| e("normalizer", x.to_string()))?
                    .into(),
            );
            t.with_normalizer(Some(NormalizerSequence::new(norm)))
                .map_err(|x| e("normalizer", x.to_string()))?;
            let mut dec: Vec<DecoderWrapper> = vec![
                Replace::new("▁", " ")
                    .map_err(|x| e("decoder", x.to_string()))?
                    .into(),
                ByteFallback::new().into(),
                Fuse::new().into(),
            ];
            if self.add_space_prefix {
                dec.push(Strip::new(' ', 1, 0).into());
            }
            t.with_decoder(Some(DecoderSequence::new(dec)));
            t
        };
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (t, ty) in self.tokens.iter().zip(&self.types) {
            match *ty {
                TYPE_CONTROL | TYPE_UNKNOWN => special.push(AddedToken::from(t.clone(), true)),
                TYPE_USER_DEFINED => {
                    user.push(AddedToken::from(t.clone(), false).normalized(false))
                }
                _ => {}
            }
        }
        tok.add_special_tokens(special)
            .map_err(|x| e("special tokens", x.to_string()))?;
        tok.add_tokens(user)
            .map_err(|x| e("user-defined tokens", x.to_string()))?;
        // An explicit template even without BOS, so `tokenizer::bos_id` sees that none is
        // wanted (it guesses Llama 3's BOS only for tokenizers that have no template).
        let name = |i: Option<u32>| i.map(|i| (self.tokens[i as usize].clone(), i));
        let mut single = Vec::new();
        let mut specials = Vec::new();
        if self.add_bos {
            let (b, i) = name(self.bos).expect("checked in read");
            single.push(b.clone());
            specials.push((b, i));
        }
        single.push("$A".to_string());
        if self.add_eos {
            let (b, i) = name(self.eos).expect("checked in read");
            single.push(b.clone());
            if !specials.iter().any(|(_, j)| *j == i) {
                specials.push((b, i));
            }
        }
        let mut pair = single.clone();
        pair.extend(single.iter().map(|s| {
            if s == "$A" {
                "$B:1".to_string()
            } else {
                format!("{s}:1")
            }
        }));
        let tp = TemplateProcessing::builder()
            .try_single(single)
            .and_then(|b| b.try_pair(pair))
            .map_err(|x| e("template", x.to_string()))?
            .special_tokens(specials)
            .build()
            .map_err(|x| e("template", x.to_string()))?;
        tok.with_post_processor(Some(tp));
        Ok(tok)
    }
}

/// The tokenizer of a GGUF file's metadata.
pub fn from_content(path: &Path, ct: &Content) -> Result<Tokenizer> {
    GgufVocab::read(path, ct)?.build(path)
}

/// Whether `path` is a GGUF file (its magic), so [`crate::models::tokenizer::load`] builds its
/// tokenizer from the metadata.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"GGUF")
        .unwrap_or(false)
}
