//! The tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.*`), built into a
//! `tokenizers::Tokenizer` that gives llama.cpp's token ids (see docs/gguf-tokenizer.md):
//!
//! - `tokenizer.ggml.model = "gpt2"` / `"gemma4"`: BPE with the file's merges, pre-tokenized
//!   as llama.cpp pre-tokenizes for `tokenizer.ggml.pre`: every one of its 91 names
//!   ([`llama_cpp_pre`], src/llama-vocab.cpp at the commit scripts/build-llama-cpp.sh pins),
//!   with its `ignore_merges`, BOS default, and GPT-2 byte encoding or raw UTF-8 with
//!   `<0xXX>` bytes (gemma4: spaces as `▁`).
//! - `tokenizer.ggml.model = "llama"` (SentencePiece, Llama 2 / Gemma): llama.cpp merges the
//!   adjacent pair whose concatenation is the highest-scoring token (ties: leftmost), with
//!   `<0xXX>` byte tokens for characters not in the vocabulary. That is BPE with one merge per
//!   way of splitting a token into two tokens, ranked by the token's score: built so here.
//!   Spaces become `▁`; `tokenizer.ggml.add_space_prefix` (default true) puts one first.
//! - `tokenizer.ggml.model = "bert"` (WPM): llama.cpp's word split, `▁` before each word,
//!   longest match, with its lowercasing and accent stripping.
//!
//! Special-token strings are split out of the text by the token attributes llama.cpp's
//! vocabulary load leaves ([`llama_cpp_attrs`]: the file's types, then its overrides by token
//! text): tokens with CONTROL or UNKNOWN are special added tokens, those with USER_DEFINED
//! alone plain added tokens matched in the raw text (`llama-tokenize` parses special tokens by
//! default, as `encode` does here; `set_encode_special_tokens(true)` is its
//! `--no-parse-special`, which leaves only the plain ones split out). BOS is put first exactly
//! when `tokenizer.ggml.add_bos_token` says so, or by llama.cpp's default when it is absent.
//! Checked against llama.cpp's own test vectors and `llama-tokenize` (tests/gguf_tokenizer.rs).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
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

pub mod llama_cpp_attrs;
pub mod llama_cpp_pre;
pub use llama_cpp_pre::{PreRule, NAMES as PRE_NAMES};

/// llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, `llm_tokenizer_bpe`) of the most
/// common types; every type is in [`llama_cpp_pre`].
pub const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const REGEX_GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// How llama.cpp pre-tokenizes a BPE vocabulary of `tokenizer.ggml.pre` = `pre` (absent:
/// `default`): (regexes as applied here, whole pre-tokens in the vocabulary taken as they
/// are, BOS by default). None: a name llama.cpp does not know.
pub fn bpe_pre(pre: Option<&str>) -> Option<(Vec<String>, bool, bool)> {
    llama_cpp_pre::rule(pre).map(|r| (r.regexes, r.ignore_merges, r.add_bos))
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
pub fn bpe_pre_tokenizer<S: AsRef<str>>(regexes: &[S]) -> Result<PreTokenizerWrapper> {
    let mut steps = regex_splits(regexes)?;
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(PreSequence::new(steps).into())
}

/// llama.cpp's regexes applied in turn, each keeping the text between matches as pieces.
pub fn regex_splits<S: AsRef<str>>(regexes: &[S]) -> Result<Vec<PreTokenizerWrapper>> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for r in regexes {
        let r = r.as_ref();
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
    Ok(steps)
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
    /// `tokenizer.ggml.model`: `llama` (SPM), `gpt2` / `gemma4` (BPE), `bert` (WPM).
    pub model: String,
    pub pre: Option<String>,
    /// The BPE pre-tokenizer rule of `pre` (BPE vocabularies only).
    pub pre_rule: Option<PreRule>,
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
    /// `tokenizer.ggml.remove_extra_whitespaces` (SentencePiece; refused when set).
    pub remove_extra_whitespaces: bool,
    /// WPM: the separator llama.cpp puts last when it adds special tokens
    /// (`tokenizer.ggml.seperator_token_id`, default 102).
    pub sep: Option<u32>,
    /// Every token's attributes (`llama_token_attr` bits) as llama.cpp's load leaves them,
    /// and its end-of-generation set ([`llama_cpp_attrs`]).
    pub attrs: Vec<u32>,
    pub eog: Vec<u32>,
    /// WPM: `tokenizer.ggml.normalizer.lowercase` (default true) and `.strip_accents`
    /// (default: as lowercase).
    pub lowercase: bool,
    pub strip_accents: bool,
}

fn err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// A GGUF integer of any width and sign as u32 (None: negative, too large, not an integer).
pub(crate) fn as_u32(v: &Value) -> Option<u32> {
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

const FIX: &str = "put the model's tokenizer.json beside the file";

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
                    format!(
                        "the GGUF file has no tokenizer metadata (`tokenizer.ggml.model`); {FIX}"
                    ),
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
        let mut tokens = strings("tokens")?;
        if tokens.is_empty() {
            return Err(err(
                path,
                format!("the GGUF file has no `tokenizer.ggml.tokens`; {FIX}"),
            ));
        }
        // llama.cpp names an empty token `[EMPTY_<id>]`.
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
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
        let mut pre = match md.get(&key("pre")) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        // llama.cpp: an id key outside the vocabulary is ignored (the default stays), a
        // default outside it is disabled.
        let id = |k: &str, default: Option<u32>| -> Result<Option<u32>> {
            let default = default.filter(|&d| (d as usize) < n);
            match md.get(&key(k)) {
                None => Ok(default),
                Some(v) => match as_u32(v) {
                    Some(i) if (i as usize) < n => Ok(Some(i)),
                    Some(_) => Ok(default),
                    None => Err(err(path, format!("`tokenizer.ggml.{k}` is not an integer"))),
                },
            }
        };
        let flag = |k: &str| match md.get(&key(k)) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        };
        let mut pre_rule = None;
        // llama.cpp's defaults per vocabulary type (llama_vocab::impl::load).
        let (bos, eos, unk, add_bos_default, add_eos_default, add_space_default) =
            match model.as_str() {
                "llama" => (
                    id("bos_token_id", Some(1))?,
                    id("eos_token_id", Some(2))?,
                    id("unknown_token_id", Some(0))?,
                    true,
                    false,
                    true,
                ),
                "bert" => (
                    id("bos_token_id", Some(101))?,
                    id("eos_token_id", None)?,
                    id("unknown_token_id", Some(100))?,
                    true,
                    false,
                    false,
                ),
                "gpt2" | "gemma4" => {
                    if model == "gemma4" {
                        pre = Some("gemma4".into());
                    }
                    let Some(rule) = llama_cpp_pre::rule(pre.as_deref()) else {
                        return Err(err(
                            path,
                            format!(
                                "BPE pre-tokenizer `tokenizer.ggml.pre` = `{}` is not one of llama.cpp's {} names (0c1e570); {FIX}",
                                pre.as_deref().unwrap_or(""),
                                PRE_NAMES.len()
                            ),
                        ));
                    };
                    let d = if model == "gemma4" { None } else { Some(11) };
                    let out = (
                        id("bos_token_id", d)?,
                        id("eos_token_id", d)?,
                        id("unknown_token_id", None)?,
                        rule.add_bos,
                        false,
                        false,
                    );
                    pre_rule = Some(rule);
                    out
                }
                other => {
                    return Err(err(
                        path,
                        format!(
                            "tokenizer model `tokenizer.ggml.model` = `{other}` is not implemented (implemented: gpt2, gemma4, llama, bert); {FIX}"
                        ),
                    ))
                }
            };
        if pre_rule.is_some() && merges.is_empty() {
            return Err(err(
                path,
                format!("a BPE (`{model}`) tokenizer without `tokenizer.ggml.merges`; {FIX}"),
            ));
        }
        let mut add_bos = flag("add_bos_token").unwrap_or(add_bos_default);
        if pre_rule.as_ref().is_some_and(|r| r.pre_type == "GEMMA4") {
            // llama.cpp's workaround for Gemma 4: BOS whatever the file says.
            add_bos = true;
        }
        let add_eos = flag("add_eos_token").unwrap_or(add_eos_default);
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
        let remove_extra_whitespaces = flag("remove_extra_whitespaces").unwrap_or(false);
        if remove_extra_whitespaces && model == "llama" {
            return Err(err(
                path,
                format!("`tokenizer.ggml.remove_extra_whitespaces` is not implemented; {FIX}"),
            ));
        }
        let sep = if model == "bert" {
            id("seperator_token_id", Some(102))?
        } else {
            None
        };
        let s = |k: &str| match md.get(k) {
            Some(Value::String(s)) => s.as_str(),
            _ => "",
        };
        let llama_cpp_attrs::Attrs { attrs, eog } = llama_cpp_attrs::load(
            &tokens,
            &types,
            |k| id(k, None).ok().flatten(),
            eos,
            &llama_cpp_attrs::Names {
                model_name: s("general.name"),
                pre: pre.as_deref().unwrap_or(""),
                arch: s("general.architecture"),
            },
        );
        let norm = |k: &str| match md.get(&format!("tokenizer.ggml.normalizer.{k}")) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        };
        let lowercase = norm("lowercase").unwrap_or(true);
        let strip_accents = norm("strip_accents").unwrap_or(lowercase);
        Ok(GgufVocab {
            lowercase,
            strip_accents,
            add_space_prefix: flag("add_space_prefix").unwrap_or(add_space_default),
            model,
            pre,
            pre_rule,
            tokens,
            types,
            scores,
            merges,
            bos,
            eos,
            unk,
            add_bos,
            add_eos,
            remove_extra_whitespaces,
            sep,
            attrs,
            eog,
        })
    }

    /// Builds the tokenizer.
    pub fn build(&self, path: &Path) -> Result<Tokenizer> {
        let e = |what: &str, x: String| err(path, format!("{what}: {x}"));
        let mut tok = if let Some(rule) = &self.pre_rule {
            self.build_bpe(path, rule)?
        } else if self.model == "bert" {
            self.build_wpm(path)?
        } else {
            self.build_spm(path)?
        };
        let mut special_tokens = Vec::new();
        let mut user = Vec::new();
        // llama.cpp splits out of the text every token with CONTROL, UNKNOWN or USER_DEFINED,
        // the first two only with parse_special: special added tokens here, which
        // `set_encode_special_tokens(true)` leaves as text.
        for (t, &a) in self.tokens.iter().zip(&self.attrs) {
            use llama_cpp_attrs::{LSTRIP, PARSE_SPECIAL_ONLY, RSTRIP, SPLIT};
            if a & SPLIT == 0 {
                continue;
            }
            let special = a & PARSE_SPECIAL_ONLY != 0;
            let added = AddedToken::from(t.clone(), special)
                .normalized(false)
                .lstrip(a & LSTRIP != 0)
                .rstrip(a & RSTRIP != 0);
            if special {
                special_tokens.push(added);
            } else {
                user.push(added);
            }
        }
        tok.add_special_tokens(special_tokens)
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
        // llama.cpp's WPM puts the separator last whenever it adds special tokens (as
        // llama-tokenize does exactly when BOS is wanted).
        if self.add_bos && self.model == "bert" {
            if let Some((b, i)) = name(self.sep) {
                single.push(b.clone());
                if !specials.iter().any(|(_, j)| *j == i) {
                    specials.push((b, i));
                }
            }
        }
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

    fn vocab(&self, path: &Path) -> Result<tokenizers::models::bpe::Vocab> {
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
        Ok(vocab)
    }

    fn build_bpe(&self, path: &Path, rule: &PreRule) -> Result<Tokenizer> {
        let e = |what: &str, x: String| err(path, format!("{what}: {x}"));
        let vocab = self.vocab(path)?;
        let mut merges: Vec<(String, String)> = Vec::with_capacity(self.merges.len());
        for m in &self.merges {
            // llama.cpp splits at the first space after the first byte; a merge without
            // one is the pair ("", "") there, which never applies.
            let Some(p) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (a, b) = (&m[..p], &m[p + 1..]);
            // A merge of a piece that is no token can never apply in llama.cpp either
            // (every symbol it merges is a token or a single character).
            if vocab.contains_key(a)
                && vocab.contains_key(b)
                && vocab.contains_key(&format!("{a}{b}"))
            {
                merges.push((a.to_string(), b.to_string()));
            }
        }
        // No unknown token: llama.cpp's BPE drops a piece that is no token and has no byte
        // tokens (`<0xXX>` without GPT-2 byte encoding), it never emits UNK.
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(rule.ignore_merges)
            .byte_fallback(!rule.byte_encode)
            .build()
            .map_err(|x| e("BPE", x.to_string()))?;
        let mut t = Tokenizer::new(bpe);
        if rule.escape_whitespaces {
            t.with_normalizer(Some(
                Replace::new(" ", "▁").map_err(|x| e("normalizer", x.to_string()))?,
            ))
            .map_err(|x| e("normalizer", x.to_string()))?;
        }
        if rule.byte_encode {
            t.with_pre_tokenizer(Some(bpe_pre_tokenizer(&rule.regexes)?));
            t.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        } else {
            t.with_pre_tokenizer(Some(PreSequence::new(regex_splits(&rule.regexes)?)));
            let mut dec: Vec<DecoderWrapper> = Vec::new();
            if rule.escape_whitespaces {
                dec.push(
                    Replace::new("▁", " ")
                        .map_err(|x| e("decoder", x.to_string()))?
                        .into(),
                );
            }
            dec.push(ByteFallback::new().into());
            dec.push(Fuse::new().into());
            t.with_decoder(Some(DecoderSequence::new(dec)));
        }
        Ok(t)
    }

    fn build_spm(&self, path: &Path) -> Result<Tokenizer> {
        let e = |what: &str, x: String| err(path, format!("{what}: {x}"));
        if self.scores.is_empty() {
            return Err(err(
                path,
                format!(
                    "a SentencePiece (`llama`) tokenizer without `tokenizer.ggml.scores`; {FIX}"
                ),
            ));
        }
        let merges = spm_merges(&self.tokens, &self.scores);
        let mut b = BPE::builder()
            .vocab_and_merges(self.vocab(path)?, merges)
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
        Ok(t)
    }

    /// llama.cpp's WPM (`llm_tokenizer_wpm_session`): words split at whitespace, punctuation,
    /// ASCII symbols and CJK ideographs, `▁` put before each word, then the longest token at
    /// each position (a word with a position no token starts at is `[UNK]`).
    fn build_wpm(&self, path: &Path) -> Result<Tokenizer> {
        let e = |what: &str, x: String| err(path, format!("{what}: {x}"));
        let Some(unk) = self.unk else {
            return Err(err(
                path,
                "a WPM (`bert`) tokenizer without an unknown token id",
            ));
        };
        let wp = WordPiece::builder()
            .vocab(self.vocab(path)?)
            .unk_token(self.tokens[unk as usize].clone())
            .continuing_subword_prefix(String::new())
            .max_input_chars_per_word(usize::MAX)
            .build()
            .map_err(|x| e("WordPiece", x.to_string()))?;
        let mut t = Tokenizer::new(wp);
        let word_split = Split::new(
            SplitPattern::Regex(WPM_SPLIT.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|x| e("pre-tokenizer", x.to_string()))?;
        let ws = Split::new(
            SplitPattern::Regex(r"\s+".to_string()),
            SplitDelimiterBehavior::Removed,
            false,
        )
        .map_err(|x| e("pre-tokenizer", x.to_string()))?;
        // Control characters, NUL and U+FFFD are dropped as llama.cpp drops them; then its
        // accent stripping (one code point to its base, marks dropped) and lowercasing.
        let mut norm: Vec<NormalizerWrapper> = vec![Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(
                r"[\x00\x{FFFD}]|[\p{Cc}&&[^\s]]".into(),
            ),
            "",
        )
        .map_err(|x| e("normalizer", x.to_string()))?
        .into()];
        if self.strip_accents {
            norm.push(tokenizers::normalizers::unicode::NFD.into());
            norm.push(tokenizers::normalizers::strip::StripAccents.into());
        }
        if self.lowercase {
            norm.push(tokenizers::normalizers::utils::Lowercase.into());
        }
        t.with_normalizer(Some(NormalizerSequence::new(norm)))
            .map_err(|x| e("normalizer", x.to_string()))?;
        t.with_pre_tokenizer(Some(PreSequence::new(vec![
            ws.into(),
            word_split.into(),
            Metaspace::new('▁', PrependScheme::Always, false).into(),
        ])));
        t.with_decoder(Some(DecoderSequence::new(vec![
            Replace::new("▁", " ")
                .map_err(|x| e("decoder", x.to_string()))?
                .into(),
            Strip::new(' ', 1, 0).into(),
        ])));
        Ok(t)
    }
}

/// Single-character words of llama.cpp's WPM: punctuation, ASCII symbols, CJK ideographs
/// (its `is_chinese_char` ranges).
const WPM_SPLIT: &str = r"[\p{P}\$\+<=>\^`\|~\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]";

/// The tokenizer of a GGUF file's metadata.
pub fn from_content(path: &Path, ct: &Content) -> Result<Tokenizer> {
    GgufVocab::read(path, ct)?.build(path)
}

/// What a GGUF file's metadata holds for chat prompts: `tokenizer.chat_template` (None when
/// absent) and the BOS and EOS token ids (`tokenizer.ggml.bos_token_id`, `.eos_token_id`).
pub fn chat_metadata(
    path: &Path,
    ct: &Content,
) -> Result<(Option<String>, Option<u32>, Option<u32>)> {
    let template = match ct.metadata.get("tokenizer.chat_template") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(err(path, "`tokenizer.chat_template` is not a string")),
    };
    let id = |k: &str| ct.metadata.get(k).and_then(as_u32);
    Ok((
        template,
        id("tokenizer.ggml.bos_token_id"),
        id("tokenizer.ggml.eos_token_id"),
    ))
}

/// Whether `path` is a GGUF file (its magic), so [`crate::models::tokenizers::load`] builds its
/// tokenizer from the metadata.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"GGUF")
        .unwrap_or(false)
}
