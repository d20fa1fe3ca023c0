//! `load --dataset FILE`: prompts from a file of conversations instead of corpus words, as
//! vLLM's `--dataset-name sharegpt` and GuideLLM's data files take them.
//!
//! The file is JSON Lines (one conversation a line) or one JSON array of them (the shape of
//! ShareGPT_V3_unfiltered_cleaned_split.json). A conversation is any of:
//! - ShareGPT: `{"conversations": [{"from": "system"|"human"|"user"|"gpt"|..., "value": "..."}]}`
//! - OpenAI: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}`
//! - one prompt: `{"prompt": "..."}`
//!
//! What a load sends of it: the system message (if any) as the conversation's prefix and the
//! user messages in order, one a turn; the answers a file holds are read and left out: turn k's
//! history holds the server's own answers, as a real conversation would (and as `--turns`
//! without a dataset does). Which conversation a request or conversation takes is drawn from
//! the seed and its request number, with replacement (vLLM samples ShareGPT the same way).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Most conversations a dataset may hold, and most bytes its file may have.
pub const MAX_CONVERSATIONS: usize = 1_000_000;
pub const MAX_BYTES: u64 = 2 << 30;

/// One conversation of a dataset: its system message and its user messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    pub prompts: Vec<String>,
}

/// A dataset file read and checked.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file's name as given.
    pub path: String,
    /// sha256 of the file's bytes, first 16 hex digits: which file a record's figures came from.
    pub sha256: String,
    pub conversations: Vec<Conversation>,
}

impl Dataset {
    /// Reads and checks `path`; every problem is one line naming the file (and the entry).
    pub fn read(path: &Path) -> Result<Dataset> {
        let name = path.display().to_string();
        let fail = |m: String| Error::Serving(format!("--dataset {name}: {m}"));
        let meta = std::fs::metadata(path)
            .map_err(|e| fail(format!("{e} (give a JSON Lines file of conversations)")))?;
        if meta.len() > MAX_BYTES {
            return Err(fail(format!(
                "{} bytes; at most {MAX_BYTES} (cut the file)",
                meta.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let text =
            std::str::from_utf8(&bytes).map_err(|e| fail(format!("not UTF-8 text ({e})")))?;
        // The first 16 hex digits of the file's sha256, as every text hash of the records.
        let sha256 = crate::measure::outputs::hash_text(text);
        let conversations = parse(text).map_err(fail)?;
        Ok(Dataset {
            path: name,
            sha256,
            conversations,
        })
    }

    /// The conversation request (or conversation) `key` takes: drawn from the seed and the key.
    pub fn pick(&self, seed: u64, key: u64) -> &Conversation {
        let h = super::client::splitmix(seed ^ key.wrapping_mul(0xA24B_AED4_963E_E407));
        &self.conversations[(h % self.conversations.len() as u64) as usize]
    }

    /// User messages in all, and the most in one conversation.
    pub fn turns(&self) -> (usize, usize) {
        let n = self.conversations.iter().map(|c| c.prompts.len());
        (n.clone().sum(), n.max().unwrap_or(0))
    }
}

/// The conversations of a file's text (JSON Lines, or one JSON array).
pub fn parse(text: &str) -> std::result::Result<Vec<Conversation>, String> {
    let mut out = Vec::new();
    if text.trim_start().starts_with('[') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("not a JSON array of conversations: {e}"))?;
        for (i, c) in v.as_array().into_iter().flatten().enumerate() {
            out.push(conversation(c).map_err(|m| format!("entry {}: {m}", i + 1))?);
            if out.len() > MAX_CONVERSATIONS {
                return Err(format!("more than {MAX_CONVERSATIONS} conversations"));
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let c: Value = serde_json::from_str(line)
                .map_err(|e| format!("line {}: not JSON ({e})", i + 1))?;
            out.push(conversation(&c).map_err(|m| format!("line {}: {m}", i + 1))?);
            if out.len() > MAX_CONVERSATIONS {
                return Err(format!("more than {MAX_CONVERSATIONS} conversations"));
            }
        }
    }
    if out.is_empty() {
        return Err("holds no conversation (JSON Lines: one {\"conversations\": [...]} or {\"messages\": [...]} a line)".into());
    }
    Ok(out)
}

/// One entry: ShareGPT's `conversations`, OpenAI's `messages` or a lone `prompt`.
fn conversation(v: &Value) -> std::result::Result<Conversation, String> {
    let text = |x: &Value, key: &str| -> std::result::Result<String, String> {
        x[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("a message without a string `{key}`"))
    };
    let (list, who_key, text_key) = if let Some(l) = v["conversations"].as_array() {
        (l, "from", "value")
    } else if let Some(l) = v["messages"].as_array() {
        (l, "role", "content")
    } else if v["prompt"].is_string() {
        return Ok(Conversation {
            system: None,
            prompts: vec![text(v, "prompt")?],
        });
    } else {
        return Err(
            "neither `conversations` (ShareGPT), `messages` (OpenAI) nor `prompt` is there".into(),
        );
    };
    let mut c = Conversation {
        system: None,
        prompts: Vec::new(),
    };
    for m in list {
        let who = m[who_key]
            .as_str()
            .ok_or_else(|| format!("a message without a string `{who_key}`"))?;
        match who {
            "system" => {
                if !c.prompts.is_empty() || c.system.is_some() {
                    return Err("a system message after the first message".into());
                }
                c.system = Some(text(m, text_key)?);
            }
            "human" | "user" => c.prompts.push(text(m, text_key)?),
            // Answers: read (checked to be text) and left out; the server answers itself.
            "gpt" | "assistant" | "chatgpt" | "bing" | "bard" | "model" => {
                text(m, text_key)?;
            }
            other => {
                return Err(format!(
                    "unknown {who_key} {other:?} (system, human/user, gpt/assistant)"
                ))
            }
        }
    }
    if c.prompts.iter().all(|p| p.trim().is_empty()) {
        return Err("no user message with text".into());
    }
    c.prompts.retain(|p| !p.trim().is_empty());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharegpt_openai_and_prompt_entries_read_alike() {
        let t = r#"{"id": "a", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "One?"}, {"from": "gpt", "value": "1"}, {"from": "human", "value": "Two?"}]}
{"messages": [{"role": "user", "content": "Three?"}, {"role": "assistant", "content": "3"}]}

{"prompt": "Four?"}
"#;
        let c = parse(t).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].system.as_deref(), Some("Be brief."));
        assert_eq!(c[0].prompts, ["One?", "Two?"]);
        assert_eq!(
            (c[1].system.as_ref(), &c[1].prompts[..]),
            (None, &["Three?".to_string()][..])
        );
        assert_eq!(c[2].prompts, ["Four?"]);
        // The same entries as one JSON array (ShareGPT's own file).
        let arr = format!(
            "[{}]",
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse(&arr).unwrap(), c);
    }

    #[test]
    fn a_bad_entry_is_named_by_its_line() {
        for (t, want) in [
            ("{\"prompt\": \"a\"}\nnot json\n", "line 2: not JSON"),
            (
                "{\"conversations\": [{\"from\": \"gpt\", \"value\": \"x\"}]}",
                "line 1: no user message",
            ),
            (
                "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}",
                "line 1: unknown role \"tool\"",
            ),
            (
                "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}",
                "line 1: a message without a string `content`",
            ),
            ("{\"text\": \"x\"}", "line 1: neither `conversations`"),
            ("\n\n", "holds no conversation"),
            ("[{\"prompt\": \"a\"}, {\"x\": 1}]", "entry 2: neither"),
        ] {
            let e = parse(t).unwrap_err();
            assert!(e.starts_with(want), "{t:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn picks_are_seeded_and_spread() {
        let d = Dataset {
            path: "x".into(),
            sha256: String::new(),
            conversations: (0..8)
                .map(|i| Conversation {
                    system: None,
                    prompts: vec![i.to_string()],
                })
                .collect(),
        };
        let picks: Vec<&str> = (0..64).map(|k| d.pick(7, k).prompts[0].as_str()).collect();
        let again: Vec<&str> = (0..64).map(|k| d.pick(7, k).prompts[0].as_str()).collect();
        assert_eq!(picks, again);
        let distinct: std::collections::BTreeSet<&str> = picks.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            8,
            "64 picks of 8 reach every one: {picks:?}"
        );
        let other: Vec<&str> = (0..64).map(|k| d.pick(8, k).prompts[0].as_str()).collect();
        assert_ne!(picks, other, "another seed, other picks");
    }
}
