//! Chat prompts of `modelbench serve`: the model's own chat template, rendered with minijinja
//! the way Hugging Face transformers and llama.cpp render it, and the prompt's token ids.
//!
//! Where the template comes from, first found wins: a GGUF file's metadata
//! (`tokenizer.chat_template`), then `chat_template.jinja` or tokenizer_config.json's
//! `chat_template` beside the tokenizer (or the weights). The render sees `messages` (content
//! as the template takes it, found as llama.cpp finds it: an array of text parts as given to a
//! template that prints its parts' text, joined with newlines for one that takes only strings),
//! `add_generation_prompt`, `bos_token`
//! and `eos_token` (the tokenizer's, as text), the request's `chat_template_kwargs`, and the
//! helpers chat templates call: `raise_exception(msg)`, `strftime_now(fmt)`, a `tojson` filter
//! that writes what Python's `json.dumps` writes, and Python's string and dict methods
//! (`.strip()`, `.startswith()`, `.items()`, ..., minijinja-contrib's pycompat), with
//! `trim_blocks` and `lstrip_blocks` as transformers sets them.
//!
//! BOS as llama.cpp does it: when the tokenizer puts BOS first itself, a rendered prompt that
//! starts with the `bos_token` text loses it before tokenizing (one BOS, never two).
//!
//! A model without any template gets the fallback, documented in docs/serving.md: "role:
//! content" lines, then "assistant:" (llama-server would use ChatML there).

use std::path::{Path, PathBuf};

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value as J};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::models::sources::Resolved;
use crate::models::tokenizers::encode;
use crate::models::Weights;

/// The template's name inside its environment.
const NAME: &str = "chat_template";

/// How messages become a prompt.
pub struct ChatFormat {
    kind: Kind,
}

impl std::fmt::Debug for ChatFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

enum Kind {
    Template {
        /// Where it came from (for the log and error messages).
        source: String,
        env: Box<Environment<'static>>,
        caps: Caps,
        bos_token: Option<String>,
        eos_token: Option<String>,
    },
    /// A template that does not parse: every chat request answers 400 with `reason`.
    Broken { source: String, reason: String },
    /// No template: "role: content" lines, then "assistant:".
    RoleLines,
}

/// A template found for a model, not yet compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub source: String,
    pub template: String,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// `{"content": "..."}` or `"..."`, as tokenizer_config.json writes `bos_token`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The template of a GGUF file's metadata, with its BOS and EOS token texts (None: no
/// `tokenizer.chat_template`).
pub fn from_gguf(path: &Path, tok: &Tokenizer) -> Result<Option<Found>> {
    from_header(path, &crate::models::gguf::check::read_header(path)?, tok)
}

/// [`from_gguf`] on a header already read.
pub fn from_header(
    path: &Path,
    ct: &candle_core::quantized::gguf_file::Content,
    tok: &Tokenizer,
) -> Result<Option<Found>> {
    let (template, bos, eos) = crate::models::tokenizers::gguf::chat_metadata(path, ct)?;
    Ok(template.map(|template| Found {
        source: format!(
            "GGUF metadata `tokenizer.chat_template` of {}",
            path.display()
        ),
        template,
        bos_token: bos.and_then(|id| tok.id_to_token(id)),
        eos_token: eos.and_then(|id| tok.id_to_token(id)),
    }))
}

/// The template in folder `dir`: `chat_template.jinja`, else tokenizer_config.json's
/// `chat_template` (a string, or a list of named templates: the one named `default`).
/// BOS and EOS texts from tokenizer_config.json.
pub fn from_dir(dir: &Path) -> Result<Option<Found>> {
    let config_path = dir.join("tokenizer_config.json");
    let config: Value = match std::fs::read_to_string(&config_path) {
        Ok(s) => serde_json::from_str(&s).map_err(|e| {
            Error::Serving(format!(
                "{}: not JSON ({e}); fix or remove the file",
                config_path.display()
            ))
        })?,
        Err(_) => Value::Null,
    };
    let jinja = dir.join("chat_template.jinja");
    let (source, template) = if let Ok(t) = std::fs::read_to_string(&jinja) {
        (jinja.display().to_string(), t)
    } else {
        let t = match config.get("chat_template") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::Serving(format!(
                        "{}: `chat_template` is a list without a template named `default`",
                        config_path.display()
                    ))
                })?,
            Some(_) => {
                return Err(Error::Serving(format!(
                    "{}: `chat_template` is neither a string nor a list of named templates",
                    config_path.display()
                )))
            }
        };
        (format!("`chat_template` of {}", config_path.display()), t)
    };
    Ok(Some(Found {
        source,
        template,
        bos_token: token_text(config.get("bos_token")),
        eos_token: token_text(config.get("eos_token")),
    }))
}

/// The template of a resolved model (see the module's order), or None.
pub fn find(res: &Resolved, tok: &Tokenizer) -> Result<Option<Found>> {
    if let (Weights::Gguf(path), Some(g)) = (&res.weights, &res.gguf) {
        if let Some(f) = from_header(path, &g.header, tok)? {
            return Ok(Some(f));
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = res.tokenizer.as_deref().and_then(Path::parent) {
        dirs.push(d.to_path_buf());
    }
    let beside_weights = match &res.weights {
        Weights::Gguf(p) => p.parent(),
        Weights::Safetensors(v) => v.first().and_then(|p| p.parent()),
        Weights::Seeded(_) => None,
    };
    if let Some(d) = beside_weights {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_path_buf());
        }
    }
    for d in dirs {
        if let Some(f) = from_dir(&d)? {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// C's `strftime` of `t` (UTC) for the conversions templates use (`%Y %y %m %d %e %B %b %A %a
/// %H %M %S %j %%`); another is an error naming it.
pub fn strftime(fmt: &str, t: std::time::SystemTime) -> std::result::Result<String, String> {
    let (y, mo, d, h, mi, s) = crate::util::time::utc_parts(t);
    let days = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|x| x.as_secs() / 86400)
        .unwrap_or(0);
    let wday = ((days + 4) % 7) as usize; // 1970-01-01 was a Thursday
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][mo as usize - 1];
    let yday = before + d + u32::from(leap && mo > 2);
    let month = MONTHS[mo as usize - 1];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{mo:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(x) => return Err(format!("strftime_now: %{x} is not supported")),
            None => return Err("strftime_now: a format ending in %".into()),
        }
    }
    Ok(out)
}

fn strftime_now(fmt: String) -> std::result::Result<String, minijinja::Error> {
    strftime(&fmt, std::time::SystemTime::now())
        .map_err(|m| minijinja::Error::new(ErrorKind::InvalidOperation, m))
}

/// JSON as Python's `json.dumps` writes it (`", "` and `": "` between items, non-ASCII kept);
/// `indent` as Python's (newlines, that many spaces a level). Keys come in the map's order,
/// which is sorted here (serde_json's map): Python keeps a request's own order.
pub fn python_json(v: &Value, indent: Option<usize>) -> String {
    fn go(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
        let (open_sep, item_sep, close_sep) = match indent {
            None => (String::new(), ", ".to_string(), String::new()),
            Some(n) => (
                format!("\n{}", " ".repeat(n * (level + 1))),
                format!(",\n{}", " ".repeat(n * (level + 1))),
                format!("\n{}", " ".repeat(n * level)),
            ),
        };
        match v {
            Value::Array(a) if !a.is_empty() => {
                out.push('[');
                out.push_str(&open_sep);
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&item_sep);
                    }
                    go(x, indent, level + 1, out);
                }
                out.push_str(&close_sep);
                out.push(']');
            }
            Value::Object(o) if !o.is_empty() => {
                out.push('{');
                out.push_str(&open_sep);
                for (i, (k, x)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&item_sep);
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push_str(": ");
                    go(x, indent, level + 1, out);
                }
                out.push_str(&close_sep);
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    go(v, indent, 0, &mut out);
    out
}

fn tojson(v: J, indent: Option<usize>, kwargs: Kwargs) -> std::result::Result<J, minijinja::Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&v)
        .map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, format!("tojson: {e}")))?;
    Ok(J::from_safe_string(python_json(&json, indent)))
}

/// One line of a minijinja error: its message and where in the template.
fn one_line(e: &minijinja::Error) -> String {
    let mut m = e.to_string();
    if let Some(d) = e.detail() {
        if !m.contains(d) {
            m = format!("{m}: {d}");
        }
    }
    crate::error::one_line(&m)
}

/// The messages checked: each an object with a string `role` and a `content` that is a
/// string, an array of text parts (`{"type": "text", "text": ...}`) or null. Kept as given;
/// [`ChatFormat::render`] shapes the content for the template.
pub fn check_messages(messages: &[Value]) -> std::result::Result<Vec<Value>, String> {
    for (i, m) in messages.iter().enumerate() {
        let m = m
            .as_object()
            .ok_or_else(|| format!("messages[{i}] must be an object with `role` and `content`"))?;
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(format!("messages[{i}] needs a string `role`"));
        }
        match m.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    match (
                        p.get("type").and_then(Value::as_str),
                        p.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(_)) => {}
                        (kind, _) => {
                            return Err(format!(
                                "messages[{i}].content[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported, not {}",
                                kind.unwrap_or("a part without a type")
                            ))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(format!(
                    "messages[{i}].content must be a string or an array of text parts"
                ))
            }
        }
    }
    Ok(messages.to_vec())
}

/// Text parts joined as llama.cpp joins them for a template that takes only strings (a
/// newline between parts).
fn joined(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which content shapes a template handles, found as llama.cpp finds them: by rendering one
/// user message with each and looking for its text in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caps {
    string_content: bool,
    typed_content: bool,
}

/// A marker no template prints by itself.
const PROBE: &str = "MODELBENCH_CONTENT_PROBE";

impl Caps {
    fn of(env: &Environment<'static>) -> Caps {
        let render = |content: Value| -> Option<String> {
            let ctx = serde_json::json!({
                "messages": [{"role": "user", "content": content}],
                "add_generation_prompt": true, "bos_token": "", "eos_token": ""});
            env.get_template(NAME)
                .ok()?
                .render(J::from(minijinja::value::Serde(&ctx)))
                .ok()
        };
        let string_content = render(Value::String(PROBE.into())).is_some_and(|r| r.contains(PROBE));
        // The text printed, not the part itself (`{"text": ..., "type": "text"}`).
        let typed_content = render(serde_json::json!([{"type": "text", "text": PROBE}]))
            .is_some_and(|r| r.contains(PROBE) && !r.contains("\"type\"") && !r.contains("'type'"));
        Caps {
            string_content,
            typed_content,
        }
    }

    /// `messages` with their content in a shape the template takes: parts joined for a
    /// template of strings only, a string made one text part for one of parts only, as given
    /// where it takes both (or neither).
    fn shape(&self, messages: &[Value]) -> Vec<Value> {
        messages
            .iter()
            .map(|m| {
                let mut m = m.clone();
                let content = match m.get("content") {
                    Some(Value::Array(parts)) if self.string_content && !self.typed_content => {
                        Some(Value::String(joined(parts)))
                    }
                    Some(Value::String(s)) if self.typed_content && !self.string_content => {
                        Some(serde_json::json!([{"type": "text", "text": s}]))
                    }
                    _ => None,
                };
                if let Some(c) = content {
                    m["content"] = c;
                }
                m
            })
            .collect()
    }
}

impl ChatFormat {
    /// No template: "role: content" lines, then "assistant:".
    pub fn role_lines() -> ChatFormat {
        ChatFormat {
            kind: Kind::RoleLines,
        }
    }

    /// A template compiled for rendering; one that does not parse gives a format whose every
    /// render is that error (chat requests answer 400; completions are unaffected).
    pub fn from_found(f: Found) -> ChatFormat {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build();
        match syntax {
            Ok(syntax) => env.set_syntax(syntax),
            Err(e) => {
                return ChatFormat {
                    kind: Kind::Broken {
                        source: f.source,
                        reason: one_line(&e),
                    },
                }
            }
        }
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        match env.add_template_owned(NAME, f.template) {
            Ok(()) => ChatFormat {
                kind: Kind::Template {
                    source: f.source,
                    caps: Caps::of(&env),
                    env: Box::new(env),
                    bos_token: f.bos_token,
                    eos_token: f.eos_token,
                },
            },
            Err(e) => ChatFormat {
                kind: Kind::Broken {
                    source: f.source,
                    reason: one_line(&e),
                },
            },
        }
    }

    /// The model's format: its template ([`find`]), else [`ChatFormat::role_lines`].
    pub fn for_model(res: &Resolved, tok: &Tokenizer) -> Result<ChatFormat> {
        Ok(match find(res, tok)? {
            Some(f) => ChatFormat::from_found(f),
            None => ChatFormat::role_lines(),
        })
    }

    /// One line for the log: which format chat requests get.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Template { source, .. } => format!("chat template: {source}"),
            Kind::Broken { source, reason } => format!(
                "chat template: {source} does not parse ({reason}); chat requests will answer 400"
            ),
            Kind::RoleLines => "no chat template: chat messages as \"role: content\" lines, then \"assistant:\" (docs/serving.md)".into(),
        }
    }

    /// The rendered prompt of `messages` (already [`check_messages`]), or a one-line reason for a
    /// 400. `kwargs` (an object or null) are extra variables (`chat_template_kwargs`).
    pub fn render(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        kwargs: &Value,
    ) -> std::result::Result<String, String> {
        match &self.kind {
            Kind::RoleLines => {
                let mut p = String::new();
                for m in messages {
                    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
                    let content = match m.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(parts)) => joined(parts),
                        _ => String::new(),
                    };
                    p.push_str(&format!("{role}: {content}\n"));
                }
                if add_generation_prompt {
                    p.push_str("assistant:");
                }
                Ok(p)
            }
            Kind::Broken { source, reason } => Err(format!(
                "the model's chat template ({source}) does not parse: {reason}"
            )),
            Kind::Template {
                source,
                env,
                caps,
                bos_token,
                eos_token,
            } => {
                let mut ctx = serde_json::Map::new();
                if let Value::Object(o) = kwargs {
                    ctx.extend(o.clone());
                }
                ctx.insert("messages".into(), Value::Array(caps.shape(messages)));
                ctx.insert(
                    "add_generation_prompt".into(),
                    Value::Bool(add_generation_prompt),
                );
                ctx.insert("bos_token".into(), bos_token.clone().into());
                ctx.insert("eos_token".into(), eos_token.clone().into());
                let t = env.get_template(NAME).map_err(|e| {
                    format!("the model's chat template ({source}): {}", one_line(&e))
                })?;
                t.render(J::from(minijinja::value::Serde(&ctx)))
                    .map_err(|e| {
                        format!(
                        "the model's chat template ({source}) failed to render these messages: {}",
                        one_line(&e)
                    )
                    })
            }
        }
    }

    /// The `bos_token` text the template sees, if any.
    pub fn bos_token(&self) -> Option<&str> {
        match &self.kind {
            Kind::Template { bos_token, .. } => bos_token.as_deref(),
            _ => None,
        }
    }
}

/// Token ids of a prompt as the server runs it: BOS first when the tokenizer has one it puts
/// first (`bos`, [`crate::models::tokenizers::bos_id`]) and the text does not already begin
/// with it.
pub fn prompt_ids(tok: &Tokenizer, bos: Option<u32>, text: &str) -> Result<Vec<u32>> {
    let mut ids = encode(tok, text)?;
    if let Some(b) = bos {
        if ids.first() != Some(&b) {
            ids.insert(0, b);
        }
    }
    Ok(ids)
}

/// A chat prompt as the server runs it: the rendered text (a leading `bos_token` text dropped
/// when the tokenizer puts BOS first itself, as llama.cpp does) and its token ids.
pub fn chat_prompt(
    fmt: &ChatFormat,
    tok: &Tokenizer,
    bos: Option<u32>,
    messages: &[Value],
    add_generation_prompt: bool,
    kwargs: &Value,
) -> std::result::Result<(String, Vec<u32>), String> {
    let mut text = fmt.render(messages, add_generation_prompt, kwargs)?;
    if let (Some(_), Some(b)) = (bos, fmt.bos_token().filter(|b| !b.is_empty())) {
        if let Some(rest) = text.strip_prefix(b) {
            text = rest.to_string();
        }
    }
    let ids =
        prompt_ids(tok, bos, &text).map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
    Ok((text, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn format(t: &str) -> ChatFormat {
        ChatFormat::from_found(Found {
            source: "test".into(),
            template: t.into(),
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
        })
    }

    fn msgs(v: Value) -> Vec<Value> {
        check_messages(v.as_array().unwrap()).unwrap()
    }

    #[test]
    fn renders_with_generation_prompt_tokens_and_python_methods() {
        let f = format(
            "{{ bos_token }}{% for m in messages %}{% if loop.first and m.role == 'system' %}[{{ m.content.strip().upper() }}]{% continue %}{% endif %}<{{ m['role'] }}>{{ m.content | trim }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
        );
        let m = msgs(json!([
            {"role": "system", "content": "  be brief "},
            {"role": "user", "content": [{"type": "text", "text": " hi "}, {"type": "text", "text": "there"}]},
        ]));
        assert_eq!(
            f.render(&m, true, &Value::Null).unwrap(),
            "<s>[BE BRIEF]<user>hi \nthere</s>\n<assistant>"
        );
        assert_eq!(
            f.render(&m, false, &Value::Null).unwrap(),
            "<s>[BE BRIEF]<user>hi \nthere</s>\n"
        );
        // A template that prints parts' text gets the parts as given.
        let parts = format("{% for p in messages[0].content %}({{ p.text | trim }}){% endfor %}");
        let m = msgs(
            json!([{"role": "user", "content": [{"type": "text", "text": " a "}, {"type": "text", "text": "b"}]}]),
        );
        assert_eq!(parts.render(&m, true, &Value::Null).unwrap(), "(a)(b)");
        // and a string made one part.
        let one = msgs(json!([{"role": "user", "content": "c"}]));
        assert_eq!(parts.render(&one, true, &Value::Null).unwrap(), "(c)");
        // chat_template_kwargs become variables.
        let k = format("{% if enable_thinking is defined and not enable_thinking %}/no_think{% endif %}{{ messages[0].content }}");
        let one = msgs(json!([{"role": "user", "content": "q"}]));
        assert_eq!(
            k.render(&one, true, &json!({"enable_thinking": false}))
                .unwrap(),
            "/no_thinkq"
        );
        assert_eq!(k.render(&one, true, &Value::Null).unwrap(), "q");
    }

    #[test]
    fn raise_exception_and_a_bad_template_are_one_line_reasons() {
        let f = format("{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must start with user') }}{% endif %}ok");
        let m = msgs(json!([{"role": "assistant", "content": "x"}]));
        let e = f.render(&m, true, &Value::Null).unwrap_err();
        assert!(
            e.contains("Conversation roles must start with user") && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(
            f.render(
                &msgs(json!([{"role": "user", "content": "x"}])),
                true,
                &Value::Null
            )
            .unwrap(),
            "ok"
        );
        let broken = format("{% for m in messages %}{{ m.content }");
        let e = broken.render(&m, true, &Value::Null).unwrap_err();
        assert!(e.contains("does not parse") && !e.contains('\n'), "{e}");
        assert!(broken.describe().contains("will answer 400"));
    }

    #[test]
    fn tojson_writes_what_python_writes() {
        let v = json!({"name": "f", "args": [1, "é", {"a": null}], "ok": true});
        assert_eq!(
            python_json(&v, None),
            // Keys sorted (serde_json's map; Python would keep the request's order).
            r#"{"args": [1, "é", {"a": null}], "name": "f", "ok": true}"#
        );
        assert_eq!(
            python_json(&json!({"a": [1]}), Some(2)),
            "{\n  \"a\": [\n    1\n  ]\n}"
        );
        let f = format("{{ messages[0] | tojson }}|{{ {'k': [1, 2]} | tojson(indent=1) }}");
        assert_eq!(
            f.render(
                &msgs(json!([{"role": "user", "content": "<b>"}])),
                false,
                &Value::Null
            )
            .unwrap(),
            "{\"content\": \"<b>\", \"role\": \"user\"}|{\n \"k\": [\n  1,\n  2\n ]\n}"
        );
    }

    #[test]
    fn strftime_formats_and_refuses_unknown_conversions() {
        // 2026-11-21 11:20:00 UTC, a Saturday, day 325 of the year.
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_260_000);
        assert_eq!(
            strftime("%d %B %Y, %a %b %e %H:%M:%S %j %y %A %%", t).unwrap(),
            "21 November 2026, Sat Nov 21 11:20:00 325 26 Saturday %"
        );
        assert!(strftime("%Q", t).unwrap_err().contains("%Q"));
    }

    #[test]
    fn content_must_be_text() {
        assert!(
            check_messages(&[json!({"role": "user", "content": [{"type": "image_url"}]})])
                .unwrap_err()
                .contains("only text parts")
        );
        assert!(check_messages(&[json!({"content": "x"})])
            .unwrap_err()
            .contains("string `role`"));
        assert!(check_messages(&[json!({"role": "user", "content": 3})]).is_err());
    }

    #[test]
    fn role_lines_without_a_template() {
        let f = ChatFormat::role_lines();
        let m = msgs(json!([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]));
        assert_eq!(
            f.render(&m, true, &Value::Null).unwrap(),
            "system: s\nuser: u\nassistant:"
        );
    }
}
