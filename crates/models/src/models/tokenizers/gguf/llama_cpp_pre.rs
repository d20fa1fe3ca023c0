//! llama.cpp's BPE pre-tokenizers (src/llama-vocab.cpp and src/unicode.cpp at the commit
//! scripts/build-llama-cpp.sh pins, ggml-org/llama.cpp@0c1e57098bba43ac29e6e3b677cdceebdd22334f):
//! every `tokenizer.ggml.pre` name it accepts, the `LLAMA_VOCAB_PRE_TYPE_*` it selects, the
//! flags the name sets, and the regex set of that type rewritten so that fancy-regex on the
//! real text splits exactly where llama.cpp splits (see docs/gguf-tokenizer.md, "Where the
//! regexes differ from llama.cpp's text").
//!
//! How llama.cpp applies a regex set (`unicode_regex_split`): each regex in turn splits every
//! piece of the previous step into matches and the text between them (the tokenizers crate's
//! `Split` with `Isolated` does the same). A regex that is one of a few known strings runs a
//! hand-written splitter instead (`unicode_regex_split_custom`); any other runs on std::regex,
//! on a "collapsed" copy of the text when the regex names a Unicode category (`\p{L}` ...):
//! every non-ASCII code point becomes one byte standing for its category, and `\p{Lu}`,
//! `\p{Ll}`, `\p{Lt}`, `\p{Lm}`, `\p{Lo}` all become "any letter". The rewrites here
//! reproduce those effects on the real text:
//!
//! - `\p{Lu}` / `\p{Ll}` / `\p{Lt}` / `\p{Lm}` / `\p{Lo}` → `\p{L}` (llama.cpp cannot tell them
//!   apart; only the ASCII `[^a-z]` / `[^A-Z]` of the tekken / gpt-4o regexes see case);
//! - `\d` → `[0-9]` (std::regex's `\d` is ASCII);
//! - the Kimi-K2 and AFMoE / tiny_aya digit splitters, written as the regex they implement,
//!   quirks included (the AFMoE splitter glues the text before a digit run to its first group);
//! - superbpe's empty-match regex `(?=(\d{3})+(?!\d))` as the non-empty groups it delimits;
//! - deepseek-llm's class `　-。` (U+3000-U+3002): llama.cpp turns the ideographic space
//!   U+3000 of the text into `\v` before matching, so the class never matches it: `、-。`.

/// What a `tokenizer.ggml.pre` name selects.
#[derive(Debug, Clone, PartialEq)]
pub struct PreRule {
    /// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*` (without the prefix).
    pub pre_type: &'static str,
    /// The regexes as applied here (fancy-regex on the real text), in order.
    pub regexes: Vec<String>,
    /// A whole pre-token that is a token is taken without merging (`ignore_merges`).
    pub ignore_merges: bool,
    /// The name sets `add_bos = true` (the file's `add_bos_token` still overrides it).
    pub add_bos: bool,
    /// GPT-2 byte-to-character encoding of the pieces (false: raw UTF-8 and `<0xXX>` bytes).
    pub byte_encode: bool,
    /// Spaces become `▁` before splitting (`escape_whitespaces`).
    pub escape_whitespaces: bool,
}

const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const HAN: &str = r"\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{2CEB0}-\x{2EBEF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}";
/// `unicode_regex_split_custom_afmoe` (also tiny_aya's digit regex): every digit run in
/// groups of three from the right, the text before a run glued to its first group.
const AFMOE_DIGITS: &str = r"\P{N}*\p{N}{1,3}(?=(?:\p{N}{3})*(?!\p{N}))";

/// The regexes of a pre-tokenizer type, exactly as llama.cpp's `llm_tokenizer_bpe` lists
/// them (C string escapes undone).
fn llama_cpp_regexes(pre_type: &str) -> Vec<&'static str> {
    match pre_type {
        "LLAMA3" | "DBRX" | "SMAUG" | "CHATGLM4" => vec![LLAMA3],
        "JAIS2" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
        ],
        "DEEPSEEK_LLM" => vec![
            "[\r\n]",
            "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
            "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
            "\\s+$",
            "[一-龥ࠀ-一가-퟿]+",
            "\\p{N}+",
        ],
        "DEEPSEEK3_LLM" | "HUNYUAN_DENSE" | "JOYAI_LLM" | "HY_V4" => vec![
            "\\p{N}{1,3}",
            "[一-龥぀-ゟ゠-ヿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ],
        "SPARK2_5" => vec![
            "\\p{N}{1,3}",
            "[一-龥぀-ゟ゠-ヿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
            "\\p{N}",
        ],
        "YOUTU" => vec![
            "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "DEEPSEEK_CODER" => vec![
            "[\r\n]",
            "\\s?\\p{L}+",
            "\\s?\\p{P}+",
            "[一-龥ࠀ-一가-퟿]+",
            "\\p{N}",
        ],
        "FALCON" => vec![
            r"[\p{P}\$\+<=>\^~\|`]+",
            GPT2,
            "[0-9][0-9][0-9]",
        ],
        "STARCODER" | "REFACT" | "COMMAND_R" | "SMOLLM" | "CODESHELL" | "EXAONE" | "MINERVA"
        | "MELLUM2" => vec![r"\p{N}", GPT2],
        "GPT2" | "MPT" | "OLMO" | "JAIS" | "TRILLION" | "GRANITE_DOCLING" => vec![GPT2],
        "STABLELM2" | "QWEN2" | "HUNYUAN" | "SOLAR_OPEN" | "GROK_2" => vec![QWEN2],
        "QWEN35" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "PORO" | "BLOOM" | "GPT3_FINNISH" => vec![" ?[^(\\s|.,!?…。，、।۔،)]+"],
        "VIKING" => vec![" ?[^(\\s|.,!?…。，、।۔،)]+", r"\p{N}"],
        "TEKKEN" => vec![
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "CHAMELEON" => vec![
            "<sentinel:[0-9]+>",
            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            "([\\t\\n]|    |  )",
            r"\p{N}",
            r"[\p{P}!-/:-@\[-`{-~]",
            GPT2,
        ],
        "GPT4O" | "MINIMAX_M2" => vec![
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "GRANITE_EMB_MULTI" => vec![
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "TINY_AYA" => vec![
            r"\d{1,3}(?=(?:\d{3})*\b)",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "KIMI_K2" => vec![r"\p{Han}+"],
        "SUPERBPE" => vec![r"\p{N}+", r"(?=(\d{3})+(?!\d))"],
        "BAILINGMOE" => vec![
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
        "SEED_CODER" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "UFAKZEKA" => vec![
            r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "AFMOE" => vec![
            r"\p{AFMoE_digits}",
            "[一-鿿㐀-䶿豈-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+",
            r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
        ],
        "LAGUNA" => vec![r"[^\n]+|[\n]+", QWEN2],
        "EXAONE_MOE" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
        "GEMMA4" | "SARVAM_MOE" => vec![r"[^\n]+|[\n]+"],
        "MINICPM5" => vec![
            r"\p{N}{1,3}",
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "WHITESPACE" => vec![r"\S+"],
        // DEFAULT
        _ => vec![
            r"[\p{P}\$\+<=>\^~\|]+",
            GPT2,
            r"\p{N}+",
            "[0-9][0-9][0-9]",
        ],
    }
}

/// One llama.cpp regex as fancy-regex runs it on the real text with llama.cpp's effect.
pub fn translate(regex: &str) -> String {
    match regex {
        // Hand-written splitters (unicode_regex_split_custom), as the regex they implement.
        r"\p{Han}+" => format!(
            r"[{HAN}]+|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}&&[^{HAN}]]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        ),
        r"\p{AFMoE_digits}" | r"\d{1,3}(?=(?:\d{3})*\b)" => AFMOE_DIGITS.to_string(),
        // superbpe: empty matches before every group of three ASCII digits counted from the
        // right; the same pieces as non-empty matches.
        r"(?=(\d{3})+(?!\d))" => r"[^0-9]*[0-9]{1,3}(?=(?:[0-9]{3})*(?![0-9]))".to_string(),
        _ => {
            let mut r = regex.to_string();
            for p in [r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}", r"\p{Lo}"] {
                r = r.replace(p, r"\p{L}");
            }
            // Letters listed twice in one class after the rewrite are harmless.
            r = r.replace(r"\d", "[0-9]");
            r = r.replace("　-。", "、-。");
            r
        }
    }
}

/// The rule of `tokenizer.ggml.pre` = `name` for a BPE (`gpt2`) vocabulary; `None` (the key
/// absent) is llama.cpp's `default`. None: a name llama.cpp does not know either.
pub fn rule(name: Option<&str>) -> Option<PreRule> {
    let name = name.unwrap_or("default");
    // (pre_type, ignore_merges, add_bos, escape_whitespaces)
    let (pre_type, ignore_merges, add_bos, escape) = match name {
        "default" => ("DEFAULT", false, false, false),
        "minicpm5" => ("MINICPM5", true, false, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => ("LLAMA3", true, true, false),
        "deepseek-llm" => ("DEEPSEEK_LLM", false, false, false),
        "deepseek-coder" => ("DEEPSEEK_CODER", false, false, false),
        "deepseek-v3" => ("DEEPSEEK3_LLM", false, false, false),
        "spark2_5" => ("SPARK2_5", false, false, false),
        "youtu" => ("YOUTU", true, false, false),
        "falcon" => ("FALCON", false, false, false),
        "mpt" => ("MPT", false, false, false),
        "starcoder" => ("STARCODER", false, false, false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "exaone4" => ("GPT2", false, false, false),
        "jais-2" => ("JAIS2", false, false, false),
        "gemma4" | "granite-embed-multi-311m" => ("GEMMA4", false, false, true),
        "sarvam-moe" => ("SARVAM_MOE", false, false, true),
        "whitespace" => ("WHITESPACE", false, false, false),
        "refact" => ("REFACT", false, false, false),
        "command-r" => ("COMMAND_R", false, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => {
            ("QWEN2", false, false, false)
        }
        "qwen35" => ("QWEN35", false, false, false),
        "stablelm2" => ("STABLELM2", false, false, false),
        "olmo" => ("OLMO", false, false, false),
        "dbrx" => ("DBRX", false, false, false),
        "smaug-bpe" => ("SMAUG", false, false, false),
        "poro-chat" => ("PORO", false, false, false),
        "chatglm-bpe" => ("CHATGLM4", false, false, false),
        "glm4" | "glm5" => ("CHATGLM4", true, false, false),
        "viking" => ("VIKING", false, false, false),
        "jais" => ("JAIS", false, false, false),
        "tekken" => ("TEKKEN", true, true, false),
        "smollm" => ("SMOLLM", false, false, false),
        "codeshell" => ("CODESHELL", false, false, false),
        "bloom" => ("BLOOM", false, false, false),
        "gpt3-finnish" => ("GPT3_FINNISH", false, false, false),
        "exaone" => ("EXAONE", false, false, false),
        "exaone-moe" => ("EXAONE_MOE", false, false, false),
        "chameleon" => ("CHAMELEON", false, true, false),
        "minerva-7b" => ("MINERVA", false, false, false),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" => ("GPT4O", false, false, false),
        "granite-embed-multi-97m" => ("GRANITE_EMB_MULTI", true, false, false),
        "tiny_aya" | "cohere2moe" => ("TINY_AYA", false, false, false),
        "superbpe" => ("SUPERBPE", false, false, false),
        "trillion" => ("TRILLION", false, false, false),
        "granite-docling" => ("GRANITE_DOCLING", false, false, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => ("BAILINGMOE", false, false, false),
        "seed-coder" => ("SEED_CODER", false, false, false),
        "hunyuan" => ("HUNYUAN", false, false, false),
        "hunyuan-dense" => ("HUNYUAN_DENSE", false, false, false),
        "hy_v4" => ("HY_V4", false, false, false),
        "joyai-llm" => ("JOYAI_LLM", false, false, false),
        "kimi-k2" => ("KIMI_K2", false, false, false),
        "ufakzeka" => ("UFAKZEKA", false, false, false),
        "grok-2" => ("GROK_2", false, false, false),
        "afmoe" => ("AFMOE", false, false, false),
        "laguna" => ("LAGUNA", false, false, false),
        "minimax-m2" => ("MINIMAX_M2", false, false, false),
        "solar-open" => ("SOLAR_OPEN", false, false, false),
        "mellum2" => ("MELLUM2", false, false, false),
        _ => return None,
    };
    Some(PreRule {
        pre_type,
        regexes: llama_cpp_regexes(pre_type)
            .into_iter()
            .map(translate)
            .collect(),
        ignore_merges,
        add_bos,
        byte_encode: !matches!(pre_type, "GEMMA4" | "SARVAM_MOE" | "WHITESPACE"),
        escape_whitespaces: escape,
    })
}

/// Every `tokenizer.ggml.pre` name llama.cpp accepts for a BPE vocabulary (`default` included).
pub const NAMES: &[&str] = &[
    "default",
    "minicpm5",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "spark2_5",
    "youtu",
    "falcon",
    "mpt",
    "starcoder",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "whitespace",
    "refact",
    "command-r",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "qwen35",
    "stablelm2",
    "olmo",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "viking",
    "jais",
    "tekken",
    "smollm",
    "codeshell",
    "bloom",
    "gpt3-finnish",
    "exaone",
    "exaone4",
    "exaone-moe",
    "chameleon",
    "minerva-7b",
    "megrez",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "trillion",
    "granite-docling",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan",
    "hunyuan-dense",
    "hy_v4",
    "joyai-llm",
    "kimi-k2",
    "ufakzeka",
    "grok-2",
    "afmoe",
    "laguna",
    "minimax-m2",
    "solar-open",
    "mellum2",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_rule_whose_regexes_compile() {
        assert_eq!(NAMES.len(), 91);
        for n in NAMES {
            let r = rule(Some(n)).unwrap_or_else(|| panic!("{n}"));
            for re in &r.regexes {
                tokenizers::pre_tokenizers::split::Split::new(
                    tokenizers::pre_tokenizers::split::SplitPattern::Regex(re.clone()),
                    tokenizers::SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{n}: {re}: {e}"));
            }
        }
        assert!(rule(Some("no-such-pre")).is_none());
        assert_eq!(rule(None).unwrap().pre_type, "DEFAULT");
    }
}
