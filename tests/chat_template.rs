//! Chat prompts from the model's own chat template (serving/chat.rs): the token ids of a
//! multi-turn conversation with a system prompt against llama-server's on the real files
//! scripts/fetch-offline-models.sh installs (`/apply-template` + `/tokenize`, and
//! `usage.prompt_tokens` of the same chat request), a template the code has never seen (a copy
//! of a GGUF fixture with one in its metadata) rendered as written and as llama-server renders
//! it, the chat endpoint using it, and a template that fails answering 400 in one line.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device};
use serde_json::{json, Value};

use modelbench::engine::scenario::prepare;
use modelbench::models::sources::loading::open;
use modelbench::models::sources::{ModelRef, Resolved};
use modelbench::models::tokenizers::{bos_id, load};
use modelbench::models::{Family, Weights};
use modelbench::serving::chat::{chat_prompt, check_messages, ChatFormat};
use modelbench::serving::server::{self, Options, Running};

/// A conversation of three turns after a system prompt, ending with the user.
fn conversation() -> Vec<Value> {
    check_messages(
        json!([
            {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris is the capital of France."},
            {"role": "user", "content": [{"type": "text", "text": "And of Italy? "}, {"type": "text", "text": "Say why, briefly."}]},
        ])
        .as_array()
        .unwrap(),
    )
    .unwrap()
}

/// llama.cpp's llama-server on `model` (loopback, a free port), killed when dropped.
struct LlamaServer {
    child: Child,
    url: String,
    _log: tempfile::NamedTempFile,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl LlamaServer {
    /// Starts it (with `--chat-template-file` when given) and waits for `/health`.
    fn start(bin: &Path, model: &Path, template_file: Option<&Path>) -> LlamaServer {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut c = Command::new(bin);
        c.arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "1024", "-np", "1", "-t", "2", "--jinja"]);
        if let Some(f) = template_file {
            c.arg("--chat-template-file").arg(f);
        }
        // ggml's AMX matmul faults on this project's Intel VMs (crates/measure's llama_cpp.rs).
        let amx = std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|t| t.split_whitespace().any(|w| w == "amx_int8"));
        if amx && std::env::var_os("LLAMA_ARG_REPACK").is_none() {
            c.env("LLAMA_ARG_REPACK", "false");
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut s = LlamaServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(r) = ureq::get(&format!("{}/health", s.url)).call() {
                if r.status() == 200 {
                    return s;
                }
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!(
                    "llama-server exited ({st}): {}",
                    std::fs::read_to_string(s._log.path()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "llama-server not healthy in 180 s: {}",
                std::fs::read_to_string(s._log.path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let r = ureq::post(&format!("{}{path}", self.url))
            .timeout(Duration::from_secs(300))
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("llama-server {path}: {e}"));
        serde_json::from_str(&r.into_string().unwrap()).unwrap()
    }

    /// The rendered prompt and its ids as llama-server's chat endpoint runs them.
    fn prompt(&self, messages: &[Value]) -> (String, Vec<u32>) {
        let p = self.post("/apply-template", &json!({"messages": messages}))["prompt"]
            .as_str()
            .unwrap()
            .to_string();
        let ids = self.post(
            "/tokenize",
            &json!({"content": p, "add_special": true, "parse_special": true}),
        )["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        (p, ids)
    }

    /// `usage.prompt_tokens` of a one-token chat request.
    fn prompt_tokens(&self, messages: &[Value]) -> u64 {
        let v = self.post(
            "/v1/chat/completions",
            &json!({"messages": messages, "max_tokens": 1, "temperature": 0}),
        );
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    }
}

/// Ours for `res`: the chat format, the prompt text and ids exactly as the server makes them.
fn ours(res: &Resolved, messages: &[Value]) -> (ChatFormat, String, Vec<u32>) {
    let tok = load(res.tokenizer_path().unwrap()).unwrap();
    let fmt = ChatFormat::for_model(res, &tok).unwrap();
    let (text, ids) = chat_prompt(&fmt, &tok, bos_id(&tok), messages, true, &Value::Null)
        .unwrap_or_else(|e| panic!("{e}"));
    (fmt, text, ids)
}

fn first_difference(a: &[u32], b: &[u32]) -> String {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    format!(
        "{} vs {} ids, first difference at {i}: {:?} vs {:?}",
        a.len(),
        b.len(),
        &a[i.min(a.len())..(i + 5).min(a.len())],
        &b[i.min(b.len())..(i + 5).min(b.len())]
    )
}

/// The real Gemma 3 270M (its template from the tokenizer_config.json beside the file: the
/// GGUF carries none, so llama-server is given the same text with `--chat-template-file`) and
/// Qwen2.5-Coder-0.5B-Instruct (the template in its GGUF metadata, which both read): the ids of
/// a multi-turn conversation with a system prompt equal llama-server's.
#[test]
fn real_files_chat_prompt_ids_equal_llama_servers() {
    let Some(bin) = common::llama_cpp_program("llama-server") else {
        return;
    };
    for (reference, template_beside) in [
        ("gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF", true),
        (
            "gguf:modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            false,
        ),
    ] {
        let r = ModelRef::parse(reference).unwrap();
        let res = match prepare(reference, &r, &[]) {
            Ok(res) => res,
            Err(e) => {
                common::skip_real_model(e);
                return;
            }
        };
        let Weights::Gguf(gguf) = res.weights.clone() else {
            unreachable!("a gguf: reference")
        };
        let messages = conversation();
        let (fmt, text, ids) = ours(&res, &messages);
        let describe = fmt.describe();
        let template_file = tempfile::NamedTempFile::new().unwrap();
        if template_beside {
            assert!(describe.contains("tokenizer_config.json"), "{describe}");
            let cfg: Value = serde_json::from_str(
                &std::fs::read_to_string(gguf.parent().unwrap().join("tokenizer_config.json"))
                    .unwrap(),
            )
            .unwrap();
            std::fs::write(template_file.path(), cfg["chat_template"].as_str().unwrap()).unwrap();
        } else {
            assert!(describe.contains("GGUF metadata"), "{describe}");
        }
        let llama =
            LlamaServer::start(&bin, &gguf, template_beside.then_some(template_file.path()));
        let (their_text, their_ids) = llama.prompt(&messages);
        assert_eq!(text, their_text, "{reference}: the rendered prompt");
        assert!(
            ids == their_ids,
            "{reference}: {}",
            first_difference(&ids, &their_ids)
        );
        let counted = llama.prompt_tokens(&messages);
        assert_eq!(
            counted,
            ids.len() as u64,
            "{reference}: usage.prompt_tokens"
        );
        eprintln!(
            "{reference}: {} prompt ids (4 messages, system prompt first) equal llama-server's /apply-template + /tokenize; its usage.prompt_tokens {counted}",
            ids.len()
        );
        // Without the generation prompt the ids differ (the test can see a difference).
        let tok = load(res.tokenizer_path().unwrap()).unwrap();
        let (_, no_gen) =
            chat_prompt(&fmt, &tok, bos_id(&tok), &messages, false, &Value::Null).unwrap();
        assert!(no_gen.len() < ids.len() && ids.starts_with(&no_gen));
    }
}

/// A template no model the project knows carries (namespace, loop state, Python string
/// methods, `bos_token` first, its own turn markers), in the metadata of a copy of the llama
/// GGUF fixture (Llama 3 style: `<|begin_of_text|>` put first by the tokenizer).
const NEW_TEMPLATE: &str = "{{ bos_token }}{% set ns = namespace(sys='') %}\
{% for m in messages %}{% if m.role == 'system' %}{% set ns.sys = m.content.strip() %}{% endif %}{% endfor %}\
{% for m in messages if m.role != 'system' %}\
<|start_header_id|>{{ m.role.upper() }}#{{ loop.index }}<|end_header_id|>\
{% if loop.first and ns.sys %}[{{ ns.sys }}] {% endif %}{{ m.content | trim }}<|eot_id|>\
{% endfor %}{% if add_generation_prompt %}<|start_header_id|>ASSISTANT#{{ messages | length }}<|end_header_id|>{% endif %}";

/// What [`NEW_TEMPLATE`] renders for [`conversation`], written by hand (the BOS text dropped:
/// the tokenizer puts BOS first itself; the last message's two text parts joined with a
/// newline, as llama.cpp joins them for a template that takes only strings).
const NEW_RENDERED: &str = "<|start_header_id|>USER#1<|end_header_id|>[You are a terse assistant. Answer in one sentence.] What is the capital of France?<|eot_id|>\
<|start_header_id|>ASSISTANT#2<|end_header_id|>Paris is the capital of France.<|eot_id|>\
<|start_header_id|>USER#3<|end_header_id|>And of Italy? \nSay why, briefly.<|eot_id|>\
<|start_header_id|>ASSISTANT#4<|end_header_id|>";

/// A copy of the `fam` GGUF fixture with `tokenizer.chat_template` = `template` in `dir`.
fn with_template(fam: Family, template: &str, dir: &Path) -> PathBuf {
    common::rewrite(fam, dir, |md, _| {
        md.insert(
            "tokenizer.chat_template".into(),
            gguf_file::Value::String(template.into()),
        );
    })
}

/// `modelbench serve`'s server on GGUF file `path` in-process, with the chat format `serve`
/// finds for it.
fn serve(path: &Path) -> Running {
    let reference = format!("gguf:{}", path.display());
    let r = ModelRef::parse(&reference).unwrap();
    let res = prepare(&reference, &r, &[]).unwrap();
    let tok = load(res.tokenizer_path().unwrap()).unwrap();
    let mut o = Options::new("m", 512);
    o.chat = std::sync::Arc::new(ChatFormat::for_model(&res, &tok).unwrap());
    let loaded = open(res, &Device::Cpu, DType::F32, Some(512)).unwrap();
    let p = server::prepare(loaded.model, &o).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    server::start(p, tok, &o, addr).unwrap()
}

fn chat(s: &Running, body: Value) -> (u16, Value) {
    match ureq::post(&format!("{}/v1/chat/completions", s.url()))
        .timeout(Duration::from_secs(120))
        .send_string(&body.to_string())
    {
        Ok(r) => (
            200,
            serde_json::from_str(&r.into_string().unwrap()).unwrap(),
        ),
        Err(ureq::Error::Status(c, r)) => {
            (c, serde_json::from_str(&r.into_string().unwrap()).unwrap())
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_template_the_code_has_never_seen_renders_as_written_and_as_llama_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_template(Family::Llama, NEW_TEMPLATE, dir.path());
    let reference = format!("gguf:{}", path.display());
    let res = prepare(&reference, &ModelRef::parse(&reference).unwrap(), &[]).unwrap();
    let messages = conversation();
    let (fmt, text, ids) = ours(&res, &messages);
    assert!(fmt.describe().contains("GGUF metadata"), "{fmt:?}");
    assert_eq!(text, NEW_RENDERED);
    // One BOS, first: the rendered `bos_token` text was dropped and the tokenizer's put first.
    let tok = load(res.tokenizer_path().unwrap()).unwrap();
    let bos = bos_id(&tok).expect("the llama fixture puts BOS first");
    assert_eq!(ids[0], bos);
    assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1, "{ids:?}");
    // Turn markers are the control tokens, not their characters.
    let eot = tok.token_to_id("<|eot_id|>").unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == eot).count(), 3, "{ids:?}");

    // The chat endpoint uses it: the same prompt tokens.
    let s = serve(&path);
    let (c, v) = chat(
        &s,
        json!({"model": "m", "messages": messages, "max_tokens": 2, "temperature": 0}),
    );
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], ids.len(), "{v}");
    // and llama-server's /apply-template answers the same text.
    let r = ureq::post(&format!("{}/apply-template", s.url()))
        .send_string(&json!({"messages": messages}).to_string())
        .unwrap();
    let applied: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(applied["prompt"], NEW_RENDERED);
    drop(s);

    // llama-server renders and tokenizes the same file's template the same way.
    let Some(bin) = common::llama_cpp_program("llama-server") else {
        return;
    };
    let llama = LlamaServer::start(&bin, &path, None);
    let (their_text, their_ids) = llama.prompt(&messages);
    assert_eq!(their_text, NEW_RENDERED);
    assert!(ids == their_ids, "{}", first_difference(&ids, &their_ids));
    eprintln!(
        "a template the code has never seen: {} prompt ids equal llama-server's",
        ids.len()
    );
}

/// A template that raises (a conversation it refuses) or does not parse: the chat request
/// answers 400 with one line naming the template and why; completions still work.
#[test]
fn a_template_that_fails_answers_400_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let raising = with_template(
        Family::Llama,
        "{% for m in messages %}{% if m.role == 'assistant' and loop.first %}{{ raise_exception('Conversations must start with the user') }}{% endif %}{{ m.content }}{% endfor %}",
        dir.path(),
    );
    let broken = with_template(
        Family::Llama,
        "{% for m in messages %}{{ m.content }",
        dir.path(),
    );
    for (path, needle) in [
        (&raising, "Conversations must start with the user"),
        (&broken, "does not parse"),
    ] {
        let s = serve(path);
        let (c, v) = chat(
            &s,
            json!({"model": "m", "messages": [{"role": "assistant", "content": "hi"}], "max_tokens": 2}),
        );
        assert_eq!(c, 400, "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains(needle) && m.contains("chat template") && !m.contains('\n'),
            "{m}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        // The raising template accepts a conversation that starts with the user.
        if path == &raising {
            let (c, v) = chat(
                &s,
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
            );
            assert_eq!(c, 200, "{v}");
        }
        let r = ureq::post(&format!("{}/v1/completions", s.url()))
            .send_string(&json!({"model": "m", "prompt": "hi", "max_tokens": 2}).to_string())
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}
