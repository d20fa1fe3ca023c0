//! llama.cpp's token attributes as its vocabulary load leaves them (`llama_vocab::impl::load`,
//! src/llama-vocab.cpp at the commit scripts/build-llama-cpp.sh pins), and its
//! end-of-generation set. The attributes decide how special-token strings in a text are split
//! out (`tokenizer_st_partition`): a token with CONTROL or UNKNOWN only when parse_special is
//! asked, one with USER_DEFINED alone always, its whitespace stripped per LSTRIP / RSTRIP.
//!
//! The load starts from `tokenizer.ggml.token_type` and then changes attributes by token text,
//! in this order (every list is [`RULES`]'s or a constant below, byte for byte llama.cpp's):
//!
//! 1. EOT, EOM and FIM tokens the metadata does not name (`tokenizer.ggml.eot_token_id`, ..)
//!    are looked up by text; the one found gets CONTROL added.
//! 2. The end-of-generation set: the FIM pad / repo / separator tokens, then every token with
//!    one of [`EOG_TEXTS`] (CONTROL added), then the EOS, EOT and EOM ids.
//! 3. gpt-oss's [`ALWAYS_USER_DEFINED`] become USER_DEFINED (split out even without
//!    parse_special).
//! 4. `<|end|>` leaves the set and becomes USER_DEFINED when `<|return|>` and `<|call|>` (or
//!    `<|calls|>` and `<|flush|>`) are in it; `</s>` leaves it and becomes NORMAL (never
//!    split out) when `<|tool_response>` or `<|plamo:eos|>` is in it.
//! 5. Whitespace stripping by model name: `<mask>` LSTRIP for the jina-v2 pre-tokenizers and
//!    the nomic-bert-moe / jina-bert-v3 architectures; every special token (CONTROL,
//!    USER_DEFINED or UNKNOWN) and `</s>` RSTRIP, but not `<unk>`, `<s>`, `<|endoftext|>`, for
//!    a `general.name` containing phi-3 / phi3; `[MASK]` LSTRIP for modern-bert.
//!
//! The UNUSED mark llama.cpp adds to CONTROL tokens named `*unused*` changes neither the split
//! nor the set, and is not kept.

use std::collections::HashMap;

/// llama.cpp's `llama_token_attr` bits (include/llama.h).
pub const UNKNOWN: u32 = 1 << 0;
pub const UNUSED: u32 = 1 << 1;
pub const NORMAL: u32 = 1 << 2;
pub const CONTROL: u32 = 1 << 3;
pub const USER_DEFINED: u32 = 1 << 4;
pub const BYTE: u32 = 1 << 5;
pub const LSTRIP: u32 = 1 << 7;
pub const RSTRIP: u32 = 1 << 8;

/// Attributes a token with one of these split out of the text (its "special tokens cache").
pub const SPLIT: u32 = CONTROL | USER_DEFINED | UNKNOWN;
/// ... and those that only when parse_special is asked.
pub const PARSE_SPECIAL_ONLY: u32 = CONTROL | UNKNOWN;

/// The attribute of a `tokenizer.ggml.token_type` value (UNDEFINED, 0, for unknown values).
pub fn of_type(ty: i32) -> u32 {
    match ty {
        1 => NORMAL,
        2 => UNKNOWN,
        3 => CONTROL,
        4 => USER_DEFINED,
        5 => UNUSED,
        6 => BYTE,
        _ => 0,
    }
}

/// One special token llama.cpp finds by its text when no metadata key names it.
pub struct ByText {
    pub what: &'static str,
    /// `tokenizer.ggml.<key>`; of several present, the last in range wins (llama.cpp reads
    /// them in this order).
    pub keys: &'static [&'static str],
    pub texts: &'static [&'static str],
    /// Put into the end-of-generation set first (llama.cpp's FIM pad / repo / separator).
    pub eog_first: bool,
    /// Put into the set after the texts (llama.cpp's "sanity checks": EOT, EOM).
    pub eog_after: bool,
}

/// Step 1's table (llama.cpp's `special_*_id` found "by text").
pub const RULES: &[ByText] = &[
    ByText {
        what: "EOT",
        keys: &["eot_token_id"],
        texts: &[
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
        ],
        eog_first: false,
        eog_after: true,
    },
    ByText {
        what: "EOM",
        keys: &["eom_token_id"],
        texts: &["<|eom_id|>"],
        eog_first: false,
        eog_after: true,
    },
    ByText {
        what: "FIM_PRE",
        keys: &["fim_pre_token_id", "prefix_token_id"],
        texts: &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
        eog_first: false,
        eog_after: false,
    },
    ByText {
        what: "FIM_SUF",
        keys: &["fim_suf_token_id", "suffix_token_id"],
        texts: &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
        eog_first: false,
        eog_after: false,
    },
    ByText {
        what: "FIM_MID",
        keys: &["fim_mid_token_id", "middle_token_id"],
        texts: &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
        eog_first: false,
        eog_after: false,
    },
    ByText {
        what: "FIM_PAD",
        keys: &["fim_pad_token_id"],
        texts: &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        eog_first: true,
        eog_after: false,
    },
    ByText {
        what: "FIM_REP",
        keys: &["fim_rep_token_id"],
        texts: &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
        eog_first: true,
        eog_after: false,
    },
    ByText {
        what: "FIM_SEP",
        keys: &["fim_sep_token_id"],
        texts: &["<|file_sep|>"],
        eog_first: true,
        eog_after: false,
    },
];

/// Step 2: tokens with these texts end generation and get CONTROL.
pub const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Step 3: gpt-oss's tokens llama.cpp always renders (USER_DEFINED, whatever the file says).
pub const ALWAYS_USER_DEFINED: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// Step 4: `<|end|>` is no end of generation when the set holds one text of each group of
/// a row (o200k_harmony: return + call; solar-open: call(s) + flush).
pub const END_IS_NO_EOG_WITH: &[&[&[&str]]] = &[
    &[&["<|return|>"], &["<|call|>", "<|calls|>"]],
    &[&["<|call|>", "<|calls|>"], &["<|flush|>"]],
];
/// ... and `</s>` is a normal token when the set holds one of these (gemma4, plamo).
pub const S_IS_NORMAL_WITH: &[&str] = &["<|tool_response>", "<|plamo:eos|>"];

/// What the vocabulary load leaves: every token's attributes and the end-of-generation set.
#[derive(Debug, Clone, PartialEq)]
pub struct Attrs {
    pub attrs: Vec<u32>,
    /// Sorted token ids.
    pub eog: Vec<u32>,
}

/// The names the strip rules look at: `general.name` (compared lowercased),
/// `tokenizer.ggml.pre`, `general.architecture`.
pub struct Names<'a> {
    pub model_name: &'a str,
    pub pre: &'a str,
    pub arch: &'a str,
}

/// llama.cpp's load of the attributes. `id_key(k)`: the in-range id of `tokenizer.ggml.<k>`
/// if the metadata has one; `eos`: the EOS id as already resolved (default included).
pub fn load(
    tokens: &[String],
    types: &[i32],
    id_key: impl Fn(&str) -> Option<u32>,
    eos: Option<u32>,
    names: &Names<'_>,
) -> Attrs {
    let mut attrs: Vec<u32> = types
        .iter()
        .take(tokens.len())
        .map(|&t| of_type(t))
        .collect();
    let by_text: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    // 1. Ids by metadata, else by text (CONTROL added). llama.cpp takes the first text its
    // hash map yields; of two texts of one rule in a vocabulary that is unspecified, here
    // it is the lowest id.
    let mut found: Vec<Option<u32>> = Vec::with_capacity(RULES.len());
    for r in RULES {
        let mut id = None;
        for k in r.keys {
            if let Some(i) = id_key(k) {
                id = Some(i);
            }
        }
        if id.is_none() {
            id = r.texts.iter().filter_map(|t| by_text.get(t).copied()).min();
            if let Some(i) = id {
                attrs[i as usize] |= CONTROL;
            }
        }
        found.push(id);
    }
    // 2. The end-of-generation set.
    let mut eog: Vec<u32> = Vec::new();
    for (r, id) in RULES.iter().zip(&found) {
        if r.eog_first {
            eog.extend(*id);
        }
    }
    for t in EOG_TEXTS {
        if let Some(&i) = by_text.get(t) {
            eog.push(i);
            attrs[i as usize] |= CONTROL;
        }
    }
    // 3.
    for t in ALWAYS_USER_DEFINED {
        if let Some(&i) = by_text.get(t) {
            attrs[i as usize] = USER_DEFINED;
        }
    }
    eog.extend(eos);
    for (r, id) in RULES.iter().zip(&found) {
        if r.eog_after {
            eog.extend(*id);
        }
    }
    eog.sort_unstable();
    eog.dedup();
    // 4.
    let in_eog = |eog: &[u32], texts: &[&str]| {
        texts
            .iter()
            .any(|t| by_text.get(t).is_some_and(|i| eog.contains(i)))
    };
    if let Some(&end) = by_text.get("<|end|>") {
        if eog.contains(&end)
            && END_IS_NO_EOG_WITH
                .iter()
                .any(|row| row.iter().all(|group| in_eog(&eog, group)))
        {
            eog.retain(|&i| i != end);
            attrs[end as usize] = USER_DEFINED;
        }
    }
    if let Some(&s) = by_text.get("</s>") {
        if eog.contains(&s) && in_eog(&eog, S_IS_NORMAL_WITH) {
            eog.retain(|&i| i != s);
            attrs[s as usize] = NORMAL;
        }
    }
    // 5.
    let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
    let name = names.model_name.to_lowercase();
    let set = |attrs: &mut [u32], t: &str, bit: u32, on: bool| {
        if let Some(&i) = by_text.get(t) {
            let a = &mut attrs[i as usize];
            *a = if on { *a | bit } else { *a & !bit };
        }
    };
    if any(names.pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
        || any(names.arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set(&mut attrs, "<mask>", LSTRIP, true);
    } else if any(&name, &["phi-3", "phi3"]) {
        for a in attrs.iter_mut().filter(|a| **a & SPLIT != 0) {
            *a |= RSTRIP;
        }
        set(&mut attrs, "</s>", RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(&mut attrs, t, RSTRIP, false);
        }
    } else if any(&name, &["modern-bert"]) {
        set(&mut attrs, "[MASK]", LSTRIP, true);
    }
    Attrs { attrs, eog }
}
