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
//! user messages in order, one a turn; the answers a file holds are not sent: turn k's history
//! holds the server's own answers, as a real conversation would (and as `--turns` without a
//! dataset does). With `--dataset-output-lengths` each turn asks for as many tokens as the
//! file's answer to it has (vLLM's default for ShareGPT), counted by the server's `/tokenize`. Which conversation a request or conversation takes is drawn from
//! the seed and its request number, with replacement (vLLM samples ShareGPT the same way).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Most conversations a dataset may hold, and most bytes its file may have.
pub const MAX_CONVERSATIONS: usize = 1_000_000;
pub const MAX_BYTES: u64 = 2 << 30;

/// One conversation of a dataset: its system message, its user messages and the file's answer
/// to each (the first assistant message after it; None where the file has none).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    pub prompts: Vec<String>,
    pub answers: Vec<Option<String>>,
    /// Where it is in the file (`line 3`, `entry 3`), for messages.
    pub origin: String,
}

/// A dataset file read and checked.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file's name as given.
    pub path: String,
    /// sha256 of the file's bytes, first 16 hex digits: which file a record's figures came from.
    pub sha256: String,
    pub conversations: Vec<Conversation>,
    /// Entries without a user message with text (ShareGPT has empty ones), left out as vLLM
    /// leaves them out.
    pub skipped: usize,
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
        let (conversations, skipped) = parse(text).map_err(fail)?;
        Ok(Dataset {
            path: name,
            sha256,
            conversations,
            skipped,
        })
    }

    /// The conversation request (or conversation) `key` takes: drawn from the seed and the key.
    pub fn pick(&self, seed: u64, key: u64) -> &Conversation {
        &self.conversations[self.pick_index(seed, key)]
    }

    /// The index of [`Dataset::pick`]'s conversation.
    pub fn pick_index(&self, seed: u64, key: u64) -> usize {
        let h = super::client::splitmix(seed ^ key.wrapping_mul(0xA24B_AED4_963E_E407));
        (h % self.conversations.len() as u64) as usize
    }

    /// The answers a load of at most `turns` turns a conversation uses, each conversation's in
    /// turn order; an error naming the first conversation whose answer is missing or empty.
    pub fn answers(&self, turns: usize) -> std::result::Result<Vec<Vec<&str>>, String> {
        self.conversations
            .iter()
            .map(|c| {
                (0..c.prompts.len().min(turns))
                    .map(|t| {
                        c.answers[t]
                            .as_deref()
                            .filter(|a| !a.trim().is_empty())
                            .ok_or_else(|| {
                                format!(
                                    "{}: user message {} has no answer after it in the file",
                                    c.origin,
                                    t + 1
                                )
                            })
                    })
                    .collect()
            })
            .collect()
    }

    /// User messages in all, and the most in one conversation.
    pub fn turns(&self) -> (usize, usize) {
        let n = self.conversations.iter().map(|c| c.prompts.len());
        (n.clone().sum(), n.max().unwrap_or(0))
    }
}

/// The conversations of a file's text (JSON Lines, or one JSON array), and how many entries
/// were left out for having no user message with text.
pub fn parse(text: &str) -> std::result::Result<(Vec<Conversation>, usize), String> {
    let mut out = Vec::new();
    let mut skipped = 0;
    if text.trim_start().starts_with('[') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("not a JSON array of conversations: {e}"))?;
        for (i, c) in v.as_array().into_iter().flatten().enumerate() {
            let origin = format!("entry {}", i + 1);
            match conversation(c, &origin).map_err(|m| format!("{origin}: {m}"))? {
                Some(c) => out.push(c),
                None => skipped += 1,
            }
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
            let origin = format!("line {}", i + 1);
            match conversation(&c, &origin).map_err(|m| format!("{origin}: {m}"))? {
                Some(c) => out.push(c),
                None => skipped += 1,
            }
            if out.len() > MAX_CONVERSATIONS {
                return Err(format!("more than {MAX_CONVERSATIONS} conversations"));
            }
        }
    }
    if out.is_empty() {
        return Err(format!("holds no conversation with a user message ({skipped} without one; JSON Lines: one {{\"conversations\": [...]}} or {{\"messages\": [...]}} a line)"));
    }
    Ok((out, skipped))
}

/// One entry: ShareGPT's `conversations`, OpenAI's `messages` or a lone `prompt` (with an
/// optional `completion`, its answer); None for one without a user message with text (left
/// out, as vLLM's ShareGPT sampler leaves out conversations of fewer than two messages).
fn conversation(v: &Value, origin: &str) -> std::result::Result<Option<Conversation>, String> {
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
        let answer = match &v["completion"] {
            Value::Null => None,
            _ => Some(text(v, "completion")?),
        };
        let prompt = text(v, "prompt")?;
        if prompt.trim().is_empty() {
            return Ok(None);
        }
        return Ok(Some(Conversation {
            system: None,
            prompts: vec![prompt],
            answers: vec![answer],
            origin: origin.into(),
        }));
    } else {
        return Err(
            "neither `conversations` (ShareGPT), `messages` (OpenAI) nor `prompt` is there".into(),
        );
    };
    let mut c = Conversation {
        system: None,
        prompts: Vec::new(),
        answers: Vec::new(),
        origin: origin.into(),
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
            "human" | "user" => {
                c.prompts.push(text(m, text_key)?);
                c.answers.push(None);
            }
            // Answers: checked to be text and kept as the answer to the user message before
            // them (the first one after it); never sent: the server answers itself.
            "gpt" | "assistant" | "chatgpt" | "bing" | "bard" | "model" => {
                let a = text(m, text_key)?;
                if let Some(slot @ None) = c.answers.last_mut() {
                    *slot = Some(a);
                }
            }
            other => {
                return Err(format!(
                    "unknown {who_key} {other:?} (system, human/user, gpt/assistant)"
                ))
            }
        }
    }
    if c.prompts.iter().all(|p| p.trim().is_empty()) {
        return Ok(None);
    }
    let (prompts, answers) = c
        .prompts
        .into_iter()
        .zip(c.answers)
        .filter(|(p, _)| !p.trim().is_empty())
        .unzip();
    c.prompts = prompts;
    c.answers = answers;
    Ok(Some(c))
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
        let (c, skipped) = parse(t).unwrap();
        assert_eq!((c.len(), skipped), (3, 0));
        assert_eq!(c[0].system.as_deref(), Some("Be brief."));
        assert_eq!(c[0].prompts, ["One?", "Two?"]);
        assert_eq!(c[0].answers, [Some("1".to_string()), None]);
        assert_eq!(c[1].answers, [Some("3".to_string())]);
        assert_eq!(
            (c[2].answers.as_slice(), c[2].origin.as_str()),
            (&[None][..], "line 4")
        );
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
        let (from_array, _) = parse(&arr).unwrap();
        assert_eq!(
            from_array
                .iter()
                .map(|x| (&x.system, &x.prompts, &x.answers))
                .collect::<Vec<_>>(),
            c.iter()
                .map(|x| (&x.system, &x.prompts, &x.answers))
                .collect::<Vec<_>>()
        );
        assert_eq!(from_array[2].origin, "entry 3");
    }

    #[test]
    fn a_bad_entry_is_named_by_its_line() {
        for (t, want) in [
            ("{\"prompt\": \"a\"}\nnot json\n", "line 2: not JSON"),
            (
                "{\"conversations\": [{\"from\": \"gpt\", \"value\": \"x\"}]}\n{\"conversations\": []}",
                "holds no conversation with a user message (2 without one",
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
            // A bad entry is an error even beside good ones; an empty one is not.
            ("{\"prompt\": \"a\"}\n{\"conversations\": []}\n{\"x\": 1}", "line 3: neither"),
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
                    answers: vec![None],
                    origin: format!("line {}", i + 1),
                })
                .collect(),
            skipped: 0,
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

    /// The answers a load uses: each user message's, the first after it; a missing or empty
    /// one is named by its line and turn; answers past the turns used are not needed.
    #[test]
    fn answers_pair_with_their_user_messages() {
        let t = r#"{"conversations": [{"from": "human", "value": "A"}, {"from": "gpt", "value": "a1"}, {"from": "gpt", "value": "a2"}, {"from": "human", "value": "B"}, {"from": "gpt", "value": "b"}]}
{"messages": [{"role": "user", "content": "C"}, {"role": "assistant", "content": "c"}, {"role": "user", "content": "D"}]}
{"prompt": "E", "completion": "e"}
"#;
        let d = Dataset {
            path: "x".into(),
            sha256: String::new(),
            conversations: parse(t).unwrap().0,
            skipped: 0,
        };
        assert_eq!(
            d.conversations[0].answers,
            [Some("a1".to_string()), Some("b".to_string())]
        );
        assert_eq!(d.answers(1).unwrap(), [vec!["a1"], vec!["c"], vec!["e"]]);
        let e = d.answers(2).unwrap_err();
        assert_eq!(
            e,
            "line 2: user message 2 has no answer after it in the file"
        );
        let bad = parse("{\"prompt\": \"E\", \"completion\": 3}").unwrap_err();
        assert!(bad.contains("completion"), "{bad}");
    }

    /// Real ShareGPT files hold entries without a user message (empty `conversations`, or
    /// answers only): they are left out and counted, not an error.
    #[test]
    fn entries_without_a_user_message_are_left_out_and_counted() {
        let t = "{\"conversations\": []}\n{\"conversations\": [{\"from\": \"gpt\", \"value\": \"hi\"}]}\n{\"conversations\": [{\"from\": \"human\", \"value\": \"A\"}]}\n{\"prompt\": \"  \"}\n";
        let (c, skipped) = parse(t).unwrap();
        assert_eq!((c.len(), skipped), (1, 3));
        assert_eq!(
            (c[0].prompts[0].as_str(), c[0].origin.as_str()),
            ("A", "line 3")
        );
    }
}
