//! `modelbench serve` and `modelbench load` seen from outside: the built binary serves
//! fixture:llama on a free loopback port; the tests check the SSE stream chunk by chunk, the
//! non-streamed body, every error body, a client leaving mid-stream, and a tiny load run.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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
fn tiny_load_run_writes_records_table_and_plot() {
    let s = server();
    let reports = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args([
            "load",
            "--url",
            &s.url,
            "--model",
            "fixture:llama",
            "--prompt-tokens",
            "16",
            "--max-tokens",
            "6",
            "--concurrency",
            "1,2",
            "--requests",
            "4",
            "--warmup",
            "1",
            "--slo",
            "ttft=10s,tpot=5s",
        ])
        .env("MODELBENCH_REPORTS", reports.path())
        .output()
        .expect("run load");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("-> 16 prompt tokens"), "{out}");
    let run = std::fs::read_dir(reports.path())
        .expect("reports")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("results.jsonl").exists())
        .expect("a run folder");
    let recs: Vec<Value> = std::fs::read_to_string(run.join("results.jsonl"))
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(recs.len(), 2);
    for (r, level) in recs.iter().zip(["c=1", "c=2"]) {
        assert_eq!(r["kind"], "serving-load");
        assert_eq!(r["extra"]["level"], level);
        let x = &r["extra"]["summary"];
        assert_eq!(x["requests"], 4);
        assert_eq!(x["errors"], 0);
        assert_eq!(x["output_tokens"], 24, "4 x 6 tokens, EOS ignored");
        assert_eq!(r["extra"]["prompt_tokens_measured"], 16.0);
        assert_eq!(x["slo_attained"], 1.0);
        assert!(x["ttft_ms"]["p99"].as_f64().expect("ttft") > 0.0);
        assert!(r["gen"]["tpot_ms"]["p50"].as_f64().expect("tpot") > 0.0);
        assert_eq!(r["samples_s"].as_array().expect("e2e").len(), 4);
    }
    let md = std::fs::read_to_string(run.join("load.md")).expect("load.md");
    let (levels, scaling) = md.split_once("## Scaling").expect("a scaling table");
    let rows = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("| fixture:llama"))
            .count()
    };
    assert_eq!(rows(levels), 2, "{md}");
    assert_eq!(rows(scaling), 2, "{md}");
    assert!(scaling.contains("| fixture:llama | c=1 | "), "{md}");
    assert!(
        scaling
            .lines()
            .any(|l| l.starts_with("| fixture:llama | c=1 | ") && l.contains(" | 1.00 | ")),
        "{md}"
    );
    let csv = std::fs::read_to_string(run.join("load.csv")).expect("load.csv");
    assert_eq!(csv.lines().count(), 3);
    let reqs = std::fs::read_to_string(run.join("requests.jsonl")).expect("requests");
    assert_eq!(reqs.lines().count(), 8);
    let png = std::fs::read(run.join("load.png")).expect("load.png");
    assert!(png.starts_with(b"\x89PNG"));
}

/// `modelbench load` of `model` against `url` (4 greedy requests of 6 tokens at c=2) into
/// `reports`; returns the run folder.
fn load_once(url: &str, model: &str, reports: &Path, label: &str) -> PathBuf {
    load_with(
        url,
        model,
        reports,
        label,
        &[
            "--prompt-tokens",
            "16",
            "--max-tokens",
            "6",
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--warmup",
            "1",
        ],
    )
}

/// `modelbench load --url URL --model MODEL --label LABEL ARGS...` into `reports` (it must
/// succeed); returns the run folder.
fn load_with(url: &str, model: &str, reports: &Path, label: &str, args: &[&str]) -> PathBuf {
    let o = common::modelbench_cmd(reports)
        .args(["load", "--url", url, "--model", model, "--label", label])
        .args(args)
        .output()
        .expect("run load");
    assert!(o.status.success(), "{}", common::stdout_and_stderr(&o));
    common::run_folder(reports, label)
}

/// The output verdict of two loads (issue 59): each request's text is kept as a hash, by
/// request number; two loads of one server keep the same texts (greedy: this server's text
/// does not depend on the batch), and `compare` fails a load against a server of the same
/// model (the same folder, so the same name) whose `rms_norm_eps` was changed since:
/// OUTPUTS CHANGED beside its speed verdict.
#[test]
fn a_load_keeps_each_request_text_and_compare_judges_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("llama");
    std::fs::create_dir_all(&model).unwrap();
    let src = common::fixture_snapshot("llama");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), model.join(f)).unwrap(); // follows the cache's links
    }
    let name = model.to_str().unwrap().to_string();
    let reports = tmp.path().join("reports");
    let s = server_with(&name, &[]);
    let a = load_once(&s.url, &name, &reports, "load-one");
    let b = load_once(&s.url, &name, &reports, "load-two");
    drop(s);
    let texts = |run: &Path| -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = std::fs::read_to_string(run.join("requests.jsonl"))
            .expect("requests.jsonl")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("json"))
            .map(|r| {
                (
                    r["request"].as_u64().expect("request number"),
                    r["text_sha256"].as_str().expect("text hash").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(texts(&a).len(), 4);
    assert_eq!(texts(&a), texts(&b), "one server, the same texts");
    let rec: Value = serde_json::from_str(
        std::fs::read_to_string(a.join("results.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["outputs"]["ids"]["trials"].as_array().unwrap().len(), 4);
    let compare = |x: &Path, y: &Path| {
        common::code_and_output(&common::modelbench(
            &reports,
            &["compare", x.to_str().unwrap(), y.to_str().unwrap()],
        ))
    };
    let (code, out) = compare(&a, &b);
    // Identical texts and no probe (a server returns text only): not judged, never changed.
    assert!(
        out.contains("outputs: 0 same, 0 within numerical noise, 0 OUTPUTS CHANGED, 1 not judged"),
        "{out}"
    );
    assert_ne!(code, 2, "{out}");

    // The same folder, another epsilon: another model under the same name.
    let cfg_path = model.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["rms_norm_eps"] = json!(1.0);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let changed = server_with(&name, &[]);
    let c = load_once(&changed.url, &name, &reports, "load-eps");
    assert_ne!(texts(&a), texts(&c), "another epsilon, other texts");
    let (code, out) = compare(&a, &c);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 OUTPUTS CHANGED"), "{out}");
    assert!(
        out.contains("shared trial(s) differ"),
        "the verdict says why: {out}"
    );
}

#[test]
fn load_rejects_bad_flags_in_one_line() {
    for args in [
        vec!["--concurrency", "0", "--requests", "1"],
        vec!["--concurrency", "1", "--duration", "30"],
        vec!["--concurrency", "1"],
        vec!["--rate", "0", "--requests", "1"],
        vec![
            "--concurrency",
            "1",
            "--requests",
            "1",
            "--slo",
            "ttft=fast",
        ],
        vec![
            "--concurrency",
            "1",
            "--requests",
            "1",
            "--slo-preset",
            "gpt-5",
        ],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_modelbench"))
            .args(["load", "--url", "http://127.0.0.1:9", "--model", "m"])
            .args(&args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
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

/// A load's requests.jsonl, in request-number order.
/// The first record of a run folder's results.jsonl.
fn first_record(run: &Path) -> Value {
    let text = std::fs::read_to_string(run.join("results.jsonl")).expect("results.jsonl");
    serde_json::from_str(text.lines().next().expect("a record")).expect("record")
}

fn requests(run: &Path) -> Vec<Value> {
    let mut v: Vec<Value> = std::fs::read_to_string(run.join("requests.jsonl"))
        .expect("requests.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .collect();
    v.sort_by_key(|r| r["request"].as_u64());
    v
}

/// A `modelbench load` of 3-turn conversations with a shared 48-token prefix (c=2, 12 requests,
/// greedy) against `url` into `reports`; returns the run folder.
fn conversation_load(url: &str, model: &str, reports: &Path, label: &str) -> PathBuf {
    load_with(
        url,
        model,
        reports,
        label,
        &[
            "--prompt-tokens",
            "24",
            "--max-tokens",
            "8",
            "--concurrency",
            "2",
            "--requests",
            "12",
            "--turns",
            "3",
            "--prefix-tokens",
            "48",
            "--warmup",
            "0",
        ],
    )
}

/// Open-loop conversations (`--rate` with `--turns`): conversations arrive at the rate and
/// each one's turns follow one another (turn t+1 sent once turn t's answer has ended, its
/// prompt carrying the earlier turns); the record says its rate counts conversations. `--rate
/// auto` beside `--turns` is one line.
#[test]
fn open_loop_conversations_keep_their_turns_in_order() {
    let s = server();
    let tmp = tempfile::tempdir().unwrap();
    let run = load_with(
        &s.url,
        "fixture:llama",
        tmp.path(),
        "open-conv",
        &[
            "--prompt-tokens",
            "16",
            "--max-tokens",
            "4",
            "--rate",
            "4",
            "--requests",
            "9",
            "--turns",
            "3",
            "--warmup",
            "0",
        ],
    );
    let reqs = requests(&run);
    assert_eq!(reqs.len(), 9, "{reqs:?}");
    // Each request names its target and keeps what this server said about it.
    for r in &reqs {
        assert_eq!(r["server"], "fixture:llama", "{r}");
        assert!(r["server_report"]["steps"].as_u64() >= Some(1), "{r}");
        assert!(r["server_report"]["queue_ms"].is_number(), "{r}");
    }
    // Requests are numbered conversation by conversation, turn by turn.
    for conv in reqs.chunks(3) {
        for (t, pair) in conv.windows(2).enumerate() {
            let (a, b) = (&pair[0], &pair[1]);
            assert_eq!(
                (a["turn"].as_u64(), b["turn"].as_u64()),
                (Some(t as u64), Some(t as u64 + 1))
            );
            let ended = a["sent_s"].as_f64().unwrap() + a["e2e_s"].as_f64().unwrap();
            assert!(
                b["sent_s"].as_f64().unwrap() >= ended - 1e-3,
                "turn {} sent before turn {t} ended: {a} {b}",
                t + 1
            );
            assert!(
                b["prompt_tokens"].as_u64() > a["prompt_tokens"].as_u64(),
                "a later turn carries the earlier ones: {a} {b}"
            );
        }
    }
    let rec = first_record(&run);
    assert_eq!(rec["extra"]["mode"], "open-loop-poisson", "{rec}");
    assert_eq!(rec["extra"]["rate_unit"], "conversations/s", "{rec}");
    assert_eq!(
        rec["extra"]["by_turn"].as_array().map(|t| t.len()),
        Some(3),
        "{rec}"
    );
    let empty = tmp.path().join("empty-reports");
    let o = common::modelbench_cmd(&empty)
        .args(["load", "--url", &s.url, "--model", "fixture:llama"])
        .args(["--rate", "auto", "--turns", "2", "--requests", "2"])
        .output()
        .expect("run load");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--rate auto"), "{err}");
}

/// Prefix caching (issue 62): the same conversations against one fixture served with the
/// cache on and with `--no-prefix-cache`. With it on, every later turn reuses cached prompt
/// tokens (the server's `usage.prompt_tokens_details.cached_tokens`, its `/metrics`); with it
/// off none does (reported as 0, not missing). The texts are the output verdict's evidence:
/// equal request by request (these families' reused positions compute bit-alike; measured,
/// docs/serving.md), and `compare` of the two loads finds no changed output. load.md has
/// the by-turn table.
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

/// `load --dataset` (issue 62): prompts from the shipped ShareGPT-shaped file
/// (fixtures/datasets/kjv-conversations.jsonl, written by scripts/make-conversations.py): two
/// turns of each conversation drawn, the second sending the first, the server's answer and the
/// next user message, so it is longer; the prompts' own lengths (as the server counts them)
/// vary and the record's prompt length is their mean. The same load again sends the same
/// conversations (seeded). A bad file, or --dataset beside --prompt-tokens, is one line and
/// no run folder.
#[test]
fn a_dataset_load_sends_its_conversations_as_turns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reports = tmp.path().join("reports");
    // The fixture's tokenizer counts about 3 tokens a word: two turns of the file's longest
    // conversations need more than the other tests' 512 positions.
    let s = server_with(
        "gguf:fixture:llama",
        &["--max-batch", "2", "--context", "2048"],
    );
    let ds = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/datasets/kjv-conversations.jsonl"
    );
    let args = [
        "--dataset",
        ds,
        "--turns",
        "2",
        "--max-tokens",
        "4",
        "--concurrency",
        "2",
        "--requests",
        "12",
        "--warmup",
        "0",
    ];
    let runs = [
        load_with(&s.url, "gguf:fixture:llama", &reports, "dataset-a", &args),
        load_with(&s.url, "gguf:fixture:llama", &reports, "dataset-b", &args),
    ];
    let (ra, rb) = (requests(&runs[0]), requests(&runs[1]));
    assert_eq!(ra.len(), 12, "6 conversations of 2 turns: {ra:?}");
    let len = |r: &Value| r["prompt_tokens"].as_u64().expect("prompt_tokens reported");
    for pair in ra.chunks(2) {
        assert_eq!((&pair[0]["turn"], &pair[1]["turn"]), (&json!(0), &json!(1)));
        assert!(pair.iter().all(|r| r["error"].is_null()), "{pair:?}");
        assert!(
            len(&pair[1]) > len(&pair[0]) + 4,
            "turn 2 carries turn 1, its answer and a new message: {pair:?}"
        );
    }
    let lengths: std::collections::BTreeSet<u64> = ra.iter().map(len).collect();
    assert!(
        lengths.len() >= 6,
        "the file's prompts have their own lengths: {lengths:?}"
    );
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!((len(x), &x["text_sha256"]), (len(y), &y["text_sha256"]));
    }
    let rec = first_record(&runs[0]);
    let mean = ra.iter().map(len).sum::<u64>() as f64 / ra.len() as f64;
    assert_eq!(rec["prompt_tokens"], json!(mean.round() as u64), "{rec}");
    assert_eq!(rec["extra"]["dataset"]["conversations"], 32, "{rec}");
    assert_eq!(rec["shape"]["prompt_tokens"], Value::Null, "{rec}");
    assert_eq!(
        rec["shape"]["dataset_sha256"], rec["extra"]["dataset"]["sha256"],
        "{rec}"
    );
    // The hash is the file's sha256 (its first 16 hex digits) as coreutils computes it.
    let sum = std::process::Command::new("sha256sum")
        .arg(ds)
        .output()
        .expect("sha256sum (coreutils)");
    let sum = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(rec["shape"]["dataset_sha256"], json!(&sum[..16]), "{sum}");

    // --dataset-output-lengths: each request asks for (and, ignoring EOS, gets) as many tokens
    // as the file's answer to its message, in the server's own tokens. Four conversations
    // whose prompts have different lengths, so a request's reported prompt length says which
    // one it drew.
    let with_answers = tmp.path().join("answers.jsonl");
    let mut lines = String::new();
    let mut by_prompt_len = std::collections::BTreeMap::new();
    for (i, answer_words) in [5usize, 12, 25, 40].into_iter().enumerate() {
        let prompt = vec!["amen"; 2 + 4 * i].join(" ");
        let answer = vec!["light"; answer_words].join(" ");
        let count = |content: &str, bos: bool| {
            let (c, v) = post_json(
                &s,
                "/tokenize",
                json!({"content": content, "add_special": bos}),
            );
            assert_eq!(c, 200, "{v}");
            v["tokens"].as_array().expect("tokens").len() as u64
        };
        by_prompt_len.insert(count(&prompt, true), count(&answer, false));
        lines.push_str(
            &json!({"conversations": [{"from": "human", "value": prompt},
                                      {"from": "gpt", "value": answer}]})
            .to_string(),
        );
        lines.push('\n');
    }
    assert_eq!(
        by_prompt_len.len(),
        4,
        "distinct prompt lengths: {by_prompt_len:?}"
    );
    std::fs::write(&with_answers, &lines).unwrap();
    let run = load_with(
        &s.url,
        "gguf:fixture:llama",
        tmp.path(),
        "lengths",
        &[
            "--dataset",
            with_answers.to_str().unwrap(),
            "--dataset-output-lengths",
            "--concurrency",
            "2",
            "--requests",
            "8",
            "--warmup",
            "0",
        ],
    );
    let reqs = requests(&run);
    assert_eq!(reqs.len(), 8);
    let mut asked = std::collections::BTreeSet::new();
    for r in &reqs {
        let want = by_prompt_len[&len(r)];
        assert_eq!(r["max_tokens"], want, "{r}");
        assert_eq!(r["output_tokens"], want, "{r}");
        asked.insert(want);
    }
    assert!(asked.len() >= 2, "the answers' lengths vary: {asked:?}");
    let rec = first_record(&run);
    let mean = reqs
        .iter()
        .map(|r| r["max_tokens"].as_f64().unwrap())
        .sum::<f64>()
        / 8.0;
    assert_eq!(rec["new_tokens"], json!(mean.round() as u64), "{rec}");
    assert_eq!(rec["shape"]["output_lengths"], "dataset", "{rec}");
    assert_eq!(rec["shape"]["max_tokens"], Value::Null, "{rec}");
    drop(s);
    // Bad input: one line, exit 2, no run folder.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"a\"}\n{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}\n",
    )
    .unwrap();
    let bad_s = bad.to_str().unwrap();
    for (extra, want) in [
        (vec!["--dataset", bad_s], "line 2: unknown role \"tool\""),
        (
            vec!["--dataset", "/nonexistent/c.jsonl"],
            "--dataset /nonexistent/c.jsonl: ",
        ),
        (
            vec!["--dataset", ds, "--prompt-tokens", "16"],
            "exclude each other",
        ),
        (
            vec!["--dataset", ds, "--prefix-tokens", "16"],
            "exclude each other",
        ),
        // The shipped file has no answers: the first conversation's first message is named.
        (
            vec!["--dataset", ds, "--dataset-output-lengths"],
            "line 1: user message 1 has no answer after it in the file",
        ),
        (vec!["--dataset-output-lengths"], "needs --dataset FILE"),
    ] {
        let empty = tmp.path().join("empty-reports");
        let o = common::modelbench_cmd(&empty)
            .args(["load", "--url", "http://127.0.0.1:9", "--model", "m"])
            .args(["--concurrency", "1", "--requests", "1"])
            .args(&extra)
            .output()
            .expect("run load");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{extra:?}: {err}"
        );
        assert!(
            !empty.exists() || std::fs::read_dir(&empty).unwrap().next().is_none(),
            "{extra:?}: a run folder was left"
        );
    }
}
