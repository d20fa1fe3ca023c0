//! Soak: the server in-process on loopback, saturated by streaming clients for SOAK_SECONDS
//! (default 20; the run stops by itself) with bad requests mixed in (malformed JSON, an
//! unknown model, a prompt past the context, clients that leave mid-stream). Checks: the
//! server stays up, every accepted request ends exactly once (completed or cancelled, none
//! failed, none lost), every completed stream is whole (its tokens, one finish, `[DONE]`),
//! no response id is seen twice, and the process's RSS does not grow after warm-up.
//! `SOAK_FAST_WEIGHTS=1` soaks the server with `--fast-weights` (the project's kernels).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use serde_json::{json, Value};

use modelbench::engine::scenario::prepare;
use modelbench::models::sources::loading::open;
use modelbench::models::sources::ModelRef;
use modelbench::serving::server::{self, Options};

const MODEL: &str = "gguf:fixture:gemma3";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("modelbench_{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    full: AtomicUsize,
    bad: AtomicUsize,
    left: AtomicUsize,
}

#[test]
fn soak_saturated_with_bad_requests() {
    let secs: f64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let r = ModelRef::parse(MODEL).unwrap();
    let res = prepare(MODEL, &r, &[]).unwrap();
    let tok = modelbench::models::tokenizers::load(res.tokenizer_path().unwrap()).unwrap();
    let loaded = open(res, &Device::Cpu, DType::F32, Some(256)).unwrap();
    let mut o = Options::new(MODEL, 256);
    o.max_batch = Some(4);
    o.max_batch_tokens = 64;
    o.prefill_chunk = 32;
    o.max_queue = 4;
    o.fast_weights = std::env::var("SOAK_FAST_WEIGHTS").is_ok_and(|v| v == "1");
    let p = server::prepare(loaded.model, &o).unwrap();
    eprintln!("soak: {}", p.describe);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let srv = server::start(p, tok, &o, addr).unwrap();
    let url = srv.url();
    let tally = Arc::new(Tally::default());
    let ids = Arc::new(Mutex::new(HashSet::<String>::new()));
    let rss = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let t0 = Instant::now();
    let words: Vec<&str> = modelbench::engine::generate::CORPUS
        .split_whitespace()
        .collect();
    let words = Arc::new(words);
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (url, tally, ids, words) = (url.clone(), tally.clone(), ids.clone(), words.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                let mut n = 0usize;
                while t0.elapsed().as_secs_f64() < secs {
                    n += 1;
                    let k = c * 1_000_003 + n;
                    let send = |body: String| -> Result<ureq::Response, Box<ureq::Error>> {
                        agent
                            .post(&format!("{url}/v1/completions"))
                            .set("Content-Type", "application/json")
                            .send_string(&body)
                            .map_err(Box::new)
                    };
                    let expect_400 =
                        |r: Result<ureq::Response, Box<ureq::Error>>, code: u16| match r
                            .map_err(|e| *e)
                        {
                            Err(ureq::Error::Status(got, resp)) if got == code => {
                                let v: Value = serde_json::from_str(&resp.into_string().unwrap())
                                    .expect("an error body is JSON");
                                assert!(v["error"]["message"].is_string(), "{v}");
                                tally.bad.fetch_add(1, Ordering::Relaxed);
                            }
                            other => panic!("expected {code}, got {:?}", other.map(|r| r.status())),
                        };
                    match k % 13 {
                        3 => expect_400(send("{\"model\": ".into()), 400),
                        5 => expect_400(
                            send(json!({"model": "nope", "prompt": "a"}).to_string()),
                            404,
                        ),
                        7 => expect_400(
                            send(
                                json!({"model": MODEL, "prompt": "a b", "max_tokens": 400})
                                    .to_string(),
                            ),
                            400,
                        ),
                        9 => {
                            // Leaves after the first bytes of a long stream.
                            let body = json!({"model": MODEL, "prompt": "a b c", "max_tokens": 200,
                                "ignore_eos": true, "stream": true});
                            match send(body.to_string()).map_err(|e| *e) {
                                Ok(resp) => {
                                    let mut r = resp.into_reader();
                                    let mut b = [0u8; 16];
                                    r.read_exact(&mut b).expect("first bytes");
                                    tally.left.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(ureq::Error::Status(503, _)) => {
                                    tally.full.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                        _ => {
                            let max = 1 + k % 24;
                            let start = (k * 7919) % (words.len() - 80);
                            // At most 44 words (about 150 tokens of this text) + 24 new tokens:
                            // always within the 256-token context (64 words could reach 259).
                            let prompt = words[start..start + 5 + k % 40].join(" ");
                            let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": max,
                                "temperature": 0, "ignore_eos": true, "stream": true,
                                "stream_options": {"include_usage": true}});
                            let resp = match send(body.to_string()).map_err(|e| *e) {
                                Ok(r) => r,
                                Err(ureq::Error::Status(503, r)) => {
                                    assert_eq!(r.header("Retry-After"), Some("1"));
                                    tally.full.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_millis(20));
                                    continue;
                                }
                                Err(e) => panic!("{e}"),
                            };
                            let (mut id, mut pieces, mut finishes, mut done) =
                                (None::<String>, 0, 0, false);
                            let mut usage = None;
                            for line in BufReader::new(resp.into_reader()).lines() {
                                let line = line.expect("stream read");
                                let Some(d) = line.strip_prefix("data: ") else {
                                    continue;
                                };
                                assert!(!done, "data after [DONE]");
                                if d == "[DONE]" {
                                    done = true;
                                    continue;
                                }
                                let v: Value = serde_json::from_str(d).expect("chunk JSON");
                                assert!(v.get("error").is_none(), "server error: {v}");
                                let this = v["id"].as_str().unwrap().to_string();
                                assert_eq!(id.get_or_insert(this.clone()), &this);
                                if let Some(ch) = v["choices"].get(0) {
                                    if ch["finish_reason"].is_string() {
                                        finishes += 1;
                                    } else {
                                        pieces += 1;
                                    }
                                }
                                if v["usage"].is_object() {
                                    usage = v["usage"]["completion_tokens"].as_u64();
                                }
                            }
                            assert!(done, "stream without [DONE]");
                            assert_eq!(finishes, 1);
                            assert_eq!(usage, Some(max as u64));
                            assert!(pieces <= max);
                            let id = id.expect("an id");
                            assert!(
                                ids.lock().unwrap().insert(id.clone()),
                                "response id {id} seen twice"
                            );
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // RSS: after warm-up (a quarter in) and then every second.
    while t0.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(500));
        if t0.elapsed().as_secs_f64() > secs / 4.0 {
            rss.lock()
                .unwrap()
                .push((t0.elapsed().as_secs_f64(), rss_kib()));
        }
    }
    for c in clients {
        c.join().expect("a client failed");
    }
    // Every accepted request ends exactly once: wait for the cancelled ones to be noticed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = ureq::get(&format!("{url}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let ended = metric(&m, "requests_completed_total")
            + metric(&m, "requests_cancelled_total")
            + metric(&m, "requests_failed_total");
        if ended == metric(&m, "requests_accepted_total") && metric(&m, "requests_running") == 0 {
            break m;
        }
        assert!(Instant::now() < deadline, "requests still open: {m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let ok = tally.ok.load(Ordering::Relaxed) as u64;
    let left = tally.left.load(Ordering::Relaxed) as u64;
    let full = tally.full.load(Ordering::Relaxed) as u64;
    eprintln!(
        "soak {secs} s: {ok} completed streams, {left} clients left, {full} answered 503, {} bad requests rejected; {m}",
        tally.bad.load(Ordering::Relaxed)
    );
    assert_eq!(metric(&m, "requests_failed_total"), 0, "{m}");
    assert_eq!(metric(&m, "requests_accepted_total"), ok + left, "{m}");
    assert_eq!(
        metric(&m, "requests_completed_total"),
        ok + left - metric(&m, "requests_cancelled_total"),
        "{m}"
    );
    assert_eq!(
        metric(&m, "requests_rejected_queue_full_total"),
        full,
        "{m}"
    );
    assert!(ok > 10, "only {ok} requests completed");
    assert!(metric(&m, "step_sequences_max") >= 2, "{m}");
    // Still up.
    let h = ureq::get(&format!("{url}/health")).call().unwrap();
    assert_eq!(h.status(), 200);
    // RSS after warm-up does not grow: the last sample within 10% + 16 MiB of the first.
    let r = rss.lock().unwrap();
    if let (Some(first), Some(last)) = (r.first(), r.last()) {
        eprintln!(
            "RSS {:.1} MiB at {:.0} s -> {:.1} MiB at {:.0} s",
            first.1 as f64 / 1024.0,
            first.0,
            last.1 as f64 / 1024.0,
            last.0
        );
        assert!(
            last.1 as f64 <= first.1 as f64 * 1.10 + 16.0 * 1024.0,
            "RSS grew: {r:?}"
        );
    }
}
