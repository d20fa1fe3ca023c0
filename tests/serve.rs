//! `modelbench serve` and `modelbench load` seen from outside: the built binary serves
//! fixture:llama on a free loopback port; the tests check the SSE stream chunk by chunk, the
//! non-streamed body, every error body, a client leaving mid-stream, and a tiny load run.

mod common;
#[path = "serve/load.rs"]
mod load;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use load::{conversation_load, requests};

struct Server {
    child: Child,
    url: String,
    /// The `listening on` line (with how the server batches).
    line: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server of its own for each test (killed when the test ends; the model loads in under a
/// second), on a port the OS picks.
fn server() -> Server {
    server_with("fixture:llama", &[])
}

/// A server of `model` with `extra` flags (see [`server`]; `--context 512` unless `extra`
/// gives one).
fn server_with(model: &str, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args(["serve", "--model", model, "--port", "0"])
        .args(if extra.contains(&"--context") {
            &[][..]
        } else {
            &["--context", "512"][..]
        })
        .args(extra)
        .env("MODELBENCH_REPORTS", dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn modelbench serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let url = match line.split("listening on ").nth(1) {
        Some(u) => u.trim().to_string(),
        None => {
            let _ = child.kill();
            panic!(
                "no listening line: {line:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        }
    };
    Server {
        child,
        url,
        line,
        log,
        _dir: dir,
    }
}

/// Status and body of a POST (any status).
fn post(s: &Server, path: &str, body: &str) -> (u16, String) {
    match ureq::post(&format!("{}{path}", s.url))
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().expect("body")),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().expect("body")),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn post_json(s: &Server, path: &str, v: Value) -> (u16, Value) {
    let (c, b) = post(s, path, &v.to_string());
    (
        c,
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("not JSON ({e}): {b:?}")),
    )
}

/// The error body must be exactly OpenAI's shape.
fn check_error(v: &Value, kind: &str, param: Option<&str>, code: Option<&str>) -> String {
    let e = v
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no error object: {v}"));
    let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert_eq!(e["type"], kind, "{v}");
    assert_eq!(e["param"].as_str(), param, "{v}");
    assert_eq!(e["code"].as_str(), code, "{v}");
    let m = e["message"].as_str().expect("message").to_string();
    assert!(!m.is_empty());
    m
}

/// Splits an SSE body into its `data:` payloads, checking the framing.
fn events(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "events end with a blank line: {body:?}"
    );
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without `data: `: {e:?}"))
                .to_string()
        })
        .collect()
}

#[test]
fn health_and_models() {
    let s = server();
    let h: Value = ureq::get(&format!("{}/health", s.url))
        .call()
        .expect("health")
        .into_string()
        .map(|b| serde_json::from_str::<Value>(&b).expect("json"))
        .expect("body");
    assert_eq!(h["status"], "ok");
    let m: Value = ureq::get(&format!("{}/v1/models", s.url))
        .call()
        .expect("models")
        .into_string()
        .map(|b| serde_json::from_str::<Value>(&b).expect("json"))
        .expect("body");
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "fixture:llama");
    assert_eq!(m["data"][0]["object"], "model");
}

/// llama-server's `/tokenize` and `/detokenize`: the ids the completion endpoint runs (with
/// `add_special`, as many as its `usage.prompt_tokens`), special-token texts parsed only when
/// asked, pieces that spell the text, ids back to the text, and bad bodies a 400 naming the
/// field.
#[test]
fn tokenize_and_detokenize_as_llama_server() {
    // A GGUF file's tokenizer (Llama 3's vocabulary, BOS first, as llama-server loads it).
    let s = server_with("gguf:fixture:llama", &[]);
    let text = "In the beginning God created the heaven and the earth.";
    let ids = |v: &Value| -> Vec<u64> {
        v["tokens"]
            .as_array()
            .unwrap_or_else(|| panic!("no tokens: {v}"))
            .iter()
            .map(|x| x.as_u64().expect("an id"))
            .collect()
    };
    let (c, plain) = post_json(&s, "/tokenize", json!({"content": text}));
    assert_eq!(c, 200, "{plain}");
    let plain = ids(&plain);
    let (_, with_bos) = post_json(
        &s,
        "/tokenize",
        json!({"content": text, "add_special": true}),
    );
    let with_bos = ids(&with_bos);
    assert_eq!(with_bos.len(), plain.len() + 1, "BOS first");
    assert_eq!(&with_bos[1..], &plain[..]);
    // The completion endpoint counts the same prompt as many tokens.
    let (c, done) = post_json(
        &s,
        "/v1/completions",
        json!({"model": "gguf:fixture:llama", "prompt": text, "max_tokens": 1, "temperature": 0}),
    );
    assert_eq!(c, 200, "{done}");
    assert_eq!(done["usage"]["prompt_tokens"], with_bos.len(), "{done}");
    // Ids back to the text; pieces spell it.
    let (c, back) = post_json(&s, "/detokenize", json!({"tokens": plain}));
    assert_eq!((c, back["content"].as_str()), (200, Some(text)), "{back}");
    let (_, pieces) = post_json(
        &s,
        "/tokenize",
        json!({"content": text, "with_pieces": true}),
    );
    let pieces = pieces["tokens"].as_array().expect("pieces").clone();
    assert_eq!(
        pieces
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        plain
    );
    let spelled: String = pieces
        .iter()
        .map(|p| p["piece"].as_str().expect("a piece").to_string())
        .collect();
    assert_eq!(spelled, text);
    // The BOS text in the content: one token only with parse_special (llama-server's default).
    let (_, bos_text) = post_json(&s, "/detokenize", json!({"tokens": [with_bos[0]]}));
    let bos_text = bos_text["content"].as_str().expect("BOS text").to_string();
    assert!(bos_text.starts_with('<'), "{bos_text}");
    let (_, parsed) = post_json(&s, "/tokenize", json!({"content": bos_text}));
    assert_eq!(ids(&parsed), [with_bos[0]], "{bos_text}");
    let (_, literal) = post_json(
        &s,
        "/tokenize",
        json!({"content": bos_text, "parse_special": false}),
    );
    let literal = ids(&literal);
    assert!(
        literal.len() > 1 && !literal.contains(&with_bos[0]),
        "{bos_text} as text: {literal:?}"
    );
    // The shared tokenizer is unchanged by that request.
    let (_, again) = post_json(&s, "/tokenize", json!({"content": bos_text}));
    assert_eq!(ids(&again), [with_bos[0]]);
    // Bad bodies: 400, the field named.
    for (path, body, param) in [
        ("/tokenize", json!({"text": "x"}), "content"),
        (
            "/tokenize",
            json!({"content": "x", "add_special": "yes"}),
            "add_special",
        ),
        ("/detokenize", json!({"tokens": [1, -2]}), "tokens"),
        (
            "/detokenize",
            json!({"tokens": [4_000_000_000u64]}),
            "tokens",
        ),
    ] {
        let (c, v) = post_json(&s, path, body.clone());
        assert_eq!(c, 400, "{path} {body}: {v}");
        check_error(&v, "invalid_request_error", Some(param), None);
    }
}

#[test]
fn completion_stream_is_openai_sse() {
    let s = server();
    let (code, body) = post(
        &s,
        "/v1/completions",
        &json!({"model": "fixture:llama", "prompt": "a b c d", "max_tokens": 5,
                "temperature": 0, "ignore_eos": true, "stream": true,
                "stream_options": {"include_usage": true}})
        .to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let ev = events(&body);
    // 5 token chunks, the finish chunk, the usage chunk, [DONE]
    assert_eq!(ev.len(), 8, "{body}");
    assert_eq!(ev[7], "[DONE]");
    let chunks: Vec<Value> = ev[..7]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    let id = chunks[0]["id"].as_str().expect("id").to_string();
    let mut text = String::new();
    for c in &chunks[..5] {
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["id"], id.as_str(), "one id for the whole stream");
        assert_eq!(c["model"], "fixture:llama");
        assert!(c["created"].is_u64());
        let ch = &c["choices"][0];
        assert_eq!(ch["index"], 0);
        assert!(ch["finish_reason"].is_null());
        let piece = ch["text"].as_str().expect("text");
        assert!(
            !piece.trim().is_empty(),
            "each fixture token is a word: {c}"
        );
        text.push_str(piece);
    }
    assert_eq!(text.split_whitespace().count(), 5, "{text:?}");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[5]["choices"][0]["text"], "");
    assert_eq!(chunks[6]["choices"], json!([]));
    // "a b c d" is 4 words of the fixture's word-level vocabulary (no BOS token); none of
    // them came from a prefix cache (this one-sequence model keeps none).
    assert_eq!(
        chunks[6]["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );

    // Greedy and the same prompt: the non-streamed body has the same text.
    let (code, v) = post_json(
        &s,
        "/v1/completions",
        json!({"model": "fixture:llama", "prompt": "a b c d", "max_tokens": 5,
               "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], text.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
}

#[test]
fn chat_stream_and_body() {
    let s = server();
    let (code, body) = post(
        &s,
        "/v1/chat/completions",
        &json!({"model": "fixture:llama", "messages": [{"role": "user", "content": "a b"}],
                "max_tokens": 3, "ignore_eos": true, "stream": true, "seed": 1})
        .to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let ev = events(&body);
    assert_eq!(
        ev.len(),
        5,
        "3 tokens, finish, [DONE] (no usage unless asked): {body}"
    );
    assert_eq!(ev[4], "[DONE]");
    let c: Vec<Value> = ev[..4]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    assert!(c.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(c[1]["choices"][0]["delta"].get("role").is_none());
    assert!(c[1]["choices"][0]["delta"]["content"].is_string());
    assert_eq!(c[3]["choices"][0]["delta"], json!({}));
    assert_eq!(c[3]["choices"][0]["finish_reason"], "length");

    let (code, v) = post_json(
        &s,
        "/v1/chat/completions",
        json!({"model": "fixture:llama", "messages": [{"role": "user", "content": "a b"}],
               "max_tokens": 3, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[test]
fn error_bodies() {
    let s = server();
    // prompt beyond the context (512 positions)
    let (c, v) = post_json(
        &s,
        "/v1/completions",
        json!({"model": "fixture:llama", "prompt": "a b c", "max_tokens": 600}),
    );
    assert_eq!(c, 400);
    let m = check_error(
        &v,
        "invalid_request_error",
        Some("prompt"),
        Some("context_length_exceeded"),
    );
    assert!(m.contains("512") && m.contains("603"), "{m}");
    // bad parameters
    for (field, value) in [
        ("temperature", json!(-1)),
        ("top_p", json!(1.5)),
        ("max_tokens", json!(0)),
        ("stop", json!(7)),
        ("stream", json!("yes")),
    ] {
        let mut body = json!({"model": "fixture:llama", "prompt": "a"});
        body[field] = value;
        let (c, v) = post_json(&s, "/v1/completions", body);
        assert_eq!(c, 400, "{field}: {v}");
        check_error(&v, "invalid_request_error", Some(field), None);
    }
    let (c, v) = post_json(
        &s,
        "/v1/chat/completions",
        json!({"model": "fixture:llama", "messages": "hi"}),
    );
    assert_eq!(c, 400);
    check_error(&v, "invalid_request_error", Some("messages"), None);
    // unknown model
    let (c, v) = post_json(
        &s,
        "/v1/completions",
        json!({"model": "gpt-4", "prompt": "a"}),
    );
    assert_eq!(c, 404);
    check_error(
        &v,
        "invalid_request_error",
        Some("model"),
        Some("model_not_found"),
    );
    // malformed JSON
    let (c, b) = post(&s, "/v1/completions", "{\"model\": \"fixture:llama\", ");
    assert_eq!(c, 400);
    let v: Value = serde_json::from_str(&b).expect("JSON error body");
    let m = check_error(&v, "invalid_request_error", None, None);
    assert!(m.contains("malformed JSON"), "{m}");
    // unknown route
    let (c, b) = post(&s, "/v1/embeddings", "{}");
    assert_eq!(c, 404);
    check_error(
        &serde_json::from_str(&b).expect("json"),
        "invalid_request_error",
        None,
        Some("not_found"),
    );
}

fn log_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn a_client_leaving_mid_stream_frees_its_slot() {
    let s = server();
    let resp = ureq::post(&format!("{}/v1/completions", s.url))
        .set("Content-Type", "application/json")
        .send_string(
            &json!({"model": "fixture:llama", "prompt": "a b", "max_tokens": 500,
                    "ignore_eos": true, "stream": true, "temperature": 0})
            .to_string(),
        )
        .expect("stream");
    let mut r = resp.into_reader();
    let mut first = [0u8; 64];
    r.read_exact(&mut first).expect("first bytes");
    assert!(first.starts_with(b"data: {"));
    drop(r); // the connection closes with ~500 tokens still to go
    let t = Instant::now();
    let (c, v) = post_json(
        &s,
        "/v1/completions",
        json!({"model": "fixture:llama", "prompt": "a b", "max_tokens": 2, "ignore_eos": true}),
    );
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    // The worker logs the abandoned request as "client gone" with fewer than 500 tokens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = log_text(&s.log);
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("client gone") && l.contains("2 prompt"))
        {
            let n: usize = line
                .split(" + ")
                .nth(1)
                .and_then(|x| x.split(' ').next())
                .and_then(|x| x.parse().ok())
                .expect("token count");
            assert!(n < 500, "stopped early: {line}");
            break;
        }
        assert!(Instant::now() < deadline, "no `client gone` line in {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "next request served {:.0} ms after the disconnect",
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn power_runs_the_command_and_passes_its_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("power.json");
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args(["power", "--out"])
        .arg(&out)
        .args(["--", "sh", "-c", "exit 3"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(3));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("json")).expect("json");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["command"], json!(["sh", "-c", "exit 3"]));
    if v["power"]["available"] == false {
        assert!(v["power"]["mean_w"].is_null() && v["power"]["energy_j"].is_null());
        assert!(v["power"]["method"]
            .as_str()
            .unwrap_or("")
            .contains("not available"));
    }
}

#[test]
fn a_stop_string_ends_the_text_before_it() {
    let s = server();
    let req = |stop: Value| {
        post_json(
            &s,
            "/v1/completions",
            json!({"model": "fixture:llama", "prompt": "a b c", "max_tokens": 6,
                   "temperature": 0, "ignore_eos": true, "stop": stop}),
        )
    };
    let (c, full) = req(Value::Null);
    assert_eq!(c, 200, "{full}");
    let full = full["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_string();
    let third = full.split_whitespace().nth(2).expect("6 words");
    let stop = format!(" {third}");
    let (c, v) = req(json!([stop]));
    assert_eq!(c, 200, "{v}");
    let cut = &full[..full.find(&stop).expect("present")];
    assert_eq!(
        v["choices"][0]["text"], cut,
        "full text {full:?}, stop {stop:?}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().expect("n") <= 3);
}

/// `modelbench serve --max-batch 4` on a GGUF Llama file runs the project's Llama (which
/// batches) and serves concurrent requests in shared steps, each with the text it gets alone;
/// `--max-batch 0` is still a one-line error.
#[test]
fn gguf_llama_serves_concurrent_requests_batched() {
    let model = "gguf:fixture:llama";
    let s = server_with(
        model,
        &[
            "--max-batch",
            "4",
            "--max-batch-tokens",
            "64",
            "--prefill-chunk",
            "16",
        ],
    );
    common::assert_contains_all(
        &s.line,
        &[
            "up to 4 sequences",
            "the project's quantized llama (impl=modelbench)",
        ],
    );
    assert!(
        log_text(&s.log).contains("running the project's quantized llama (impl=modelbench)"),
        "{}",
        log_text(&s.log)
    );
    let words: Vec<&str> = modelbench::engine::generate::CORPUS
        .split_whitespace()
        .collect();
    let body = |i: usize| {
        json!({"model": model, "prompt": words[i * 37..i * 37 + 20 + i * 15].join(" "),
               "max_tokens": 10, "temperature": 0, "ignore_eos": true})
    };
    let alone: Vec<String> = (0..4)
        .map(|i| {
            let (c, v) = post_json(&s, "/v1/completions", body(i));
            assert_eq!(c, 200, "{v}");
            assert_eq!(v["modelbench"]["batch_max"], 1, "{v}");
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let url = s.url.clone();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (url, b) = (url.clone(), body(i).to_string());
            std::thread::spawn(move || {
                let r = ureq::post(&format!("{url}/v1/completions"))
                    .set("Content-Type", "application/json")
                    .timeout(Duration::from_secs(120))
                    .send_string(&b)
                    .expect("200");
                serde_json::from_str::<Value>(&r.into_string().unwrap()).unwrap()
            })
        })
        .collect();
    let batched = handles.into_iter().map(|h| h.join().unwrap()).collect();
    common::assert_batched_as_alone(batched, &alone);
    drop(s);

    let dir = tempfile::tempdir().expect("tempdir");
    let o = common::bin()
        .args(["serve", "--model", model, "--port", "0", "--max-batch", "0"])
        .env("MODELBENCH_REPORTS", dir.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(!o.status.success(), "{err}");
    assert!(
        last.starts_with("error: ") && last.contains("--max-batch 0: must be at least 1"),
        "{err}"
    );
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{err}"
    );
}

/// A counter of the server's `/metrics`.
fn metric(s: &Server, name: &str) -> u64 {
    let body = ureq::get(&format!("{}/metrics", s.url))
        .call()
        .expect("metrics")
        .into_string()
        .expect("body");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("modelbench_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// `serve --swa-full` (llama-server's flag) on `gguf:fixture:gemma3`, whose sliding layers see
/// 64 positions: the same 3-turn conversations (prompts of 72-140 tokens) with the sliding
/// layers keeping only the window, keeping every position, and with no prefix cache. With the
/// window alone a finished turn cannot be cut back to its prompt (its start has left the
/// sliding layers), so later turns reuse little; with --swa-full every later turn reuses its
/// conversation's previous prompt. Every answer is the same text in all three.
#[test]
fn swa_full_reuses_prompts_longer_than_the_window_and_keeps_every_text() {
    let model = "gguf:fixture:gemma3";
    let tmp = tempfile::tempdir().expect("tempdir");
    let reports = tmp.path().join("reports");
    let run = |flags: &[&str], label: &str| {
        let s = server_with(model, flags);
        let run = conversation_load(&s.url, model, &reports, label);
        (
            run,
            s.line.clone(),
            metric(&s, "prefix_cache_reused_tokens_total"),
        )
    };
    let (window, _, reused_window) = run(&["--max-batch", "4"], "window");
    let (full, line, reused_full) = run(&["--max-batch", "4", "--swa-full"], "full");
    let (off, _, reused_off) = run(&["--max-batch", "4", "--no-prefix-cache"], "off");
    assert!(line.contains("--swa-full"), "{line}");
    assert_eq!(reused_off, 0);
    assert!(
        reused_full > reused_window,
        "--swa-full reused {reused_full} tokens, the window alone {reused_window}"
    );
    let (rw, rf, ro) = (requests(&window), requests(&full), requests(&off));
    let cached = |r: &Value| r["cached_tokens"].as_u64().expect("cached_tokens reported");
    for r in &rf {
        if r["turn"].as_u64().expect("turn") > 0 {
            assert!(
                cached(r) >= 64,
                "--swa-full: a later turn reused less than the window: {r}"
            );
        }
    }
    for ((w, f), o) in rw.iter().zip(&rf).zip(&ro) {
        assert_eq!(
            (&w["request"], &f["request"]),
            (&o["request"], &o["request"])
        );
        assert_eq!(
            w["text_sha256"], o["text_sha256"],
            "window vs off: {}",
            o["request"]
        );
        assert_eq!(
            f["text_sha256"], o["text_sha256"],
            "--swa-full vs off: {}",
            o["request"]
        );
    }
    eprintln!("reused tokens: window {reused_window}, --swa-full {reused_full}");
}
/// Prefix caching (issue 62): the same conversations against one fixture served with the
/// cache on and with `--no-prefix-cache`. With it on, every later turn reuses cached prompt
/// tokens (the server's `usage.prompt_tokens_details.cached_tokens`, its `/metrics`); with it
/// off none does (reported as 0, not missing). The texts are the output verdict's evidence:
/// equal request by request (these families' reused positions compute bit-alike; measured,
/// docs/serving.md), and `compare` of the two loads finds no changed output. load.md has
/// the by-turn table.

#[test]
fn prefix_cache_reuses_later_turns_and_keeps_every_text() {
    for model in ["gguf:fixture:llama", "gguf:fixture:qwen3"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reports = tmp.path().join("reports");
        let on = server_with(model, &["--max-batch", "4"]);
        assert!(on.line.contains("prefix cache on"), "{}", on.line);
        let a = conversation_load(&on.url, model, &reports, "prefix-on");
        let (hits, reused) = (
            metric(&on, "prefix_cache_hits_total"),
            metric(&on, "prefix_cache_reused_tokens_total"),
        );
        drop(on);
        let off = server_with(model, &["--max-batch", "4", "--no-prefix-cache"]);
        let b = conversation_load(&off.url, model, &reports, "prefix-off");
        assert_eq!(metric(&off, "prefix_cache_hits_total"), 0);
        assert_eq!(metric(&off, "prefix_cache_reused_tokens_total"), 0);
        drop(off);
        let (ra, rb) = (requests(&a), requests(&b));
        assert_eq!(ra.len(), 12, "{model}: 4 conversations of 3 turns");
        let cached = |r: &Value| r["cached_tokens"].as_u64().expect("cached_tokens reported");
        let mut later_reused = 0;
        for r in &ra {
            let turn = r["turn"].as_u64().expect("turn");
            if turn > 0 {
                assert!(cached(r) > 0, "{model}: a later turn reused nothing: {r}");
                later_reused += cached(r);
            }
            assert!(cached(r) < r["prompt_tokens"].as_u64().unwrap());
        }
        assert!(
            hits >= 8 && reused >= later_reused,
            "{model}: {hits} hits, {reused} reused"
        );
        assert!(
            rb.iter().all(|r| cached(r) == 0),
            "{model}: cache off reused"
        );
        for (x, y) in ra.iter().zip(&rb) {
            assert_eq!(x["request"], y["request"]);
            assert_eq!(
                x["text_sha256"], y["text_sha256"],
                "{model}: request {} answered otherwise with the cache on",
                x["request"]
            );
        }
        let (_, out) = common::code_and_output(&common::modelbench(
            &reports,
            &["compare", b.to_str().unwrap(), a.to_str().unwrap()],
        ));
        assert!(out.contains(" 0 OUTPUTS CHANGED"), "{model}: {out}");
        let md = std::fs::read_to_string(a.join("load.md")).expect("load.md");
        assert!(
            md.contains("## By turn") && md.contains("| 3 | 4 | 0 |"),
            "{md}"
        );
    }
}
