//! The server in-process (`modelbench::serving::server`): continuous batching of the
//! project's Gemma 3 behind HTTP, batch-independent greedy text, the bounded queue (503 with
//! Retry-After), `/metrics`, and models that refuse `--max-batch` above 1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use candle_core::{DType, Device};
use serde_json::{json, Value};

use modelbench::engine::scenario::prepare;
use modelbench::models::sources::loading::open;
use modelbench::models::sources::ModelRef;
use modelbench::serving::server::{self, Options, Running};

/// Loads `reference` and starts a server on it as `modelbench serve` does (the implementation
/// chosen for `--max-batch` first, [`server::choose_impl`]); returns it with how it batches.
fn start_described(
    reference: &str,
    f: impl FnOnce(&mut Options),
) -> Result<(Running, String), String> {
    let mut o = Options::new(reference, 512);
    f(&mut o);
    let r = ModelRef::parse(reference).map_err(|e| e.to_string())?;
    let mut res = prepare(reference, &r, &[]).map_err(|e| e.to_string())?;
    server::choose_impl(&mut res, o.max_batch);
    let tok =
        modelbench::models::tokenizers::load(res.tokenizer_path().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let loaded = open(res, &Device::Cpu, DType::F32, Some(512)).map_err(|e| e.to_string())?;
    let p = server::prepare(loaded.model, &o).map_err(|e| e.to_string())?;
    let describe = p.describe.clone();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    server::start(p, tok, &o, addr)
        .map(|r| (r, describe))
        .map_err(|e| e.to_string())
}

fn start(reference: &str, f: impl FnOnce(&mut Options)) -> Result<Running, String> {
    let r = ModelRef::parse(reference).map_err(|e| e.to_string())?;
    let res = prepare(reference, &r, &[]).map_err(|e| e.to_string())?;
    let tok =
        modelbench::models::tokenizers::load(res.tokenizer_path().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let loaded = open(res, &Device::Cpu, DType::F32, Some(512)).map_err(|e| e.to_string())?;
    let mut o = Options::new(reference, 512);
    f(&mut o);
    let p = server::prepare(loaded.model, &o).map_err(|e| e.to_string())?;
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    server::start(p, tok, &o, addr).map_err(|e| e.to_string())
}

fn post(url: &str, body: &Value) -> (u16, Value, Option<String>) {
    match ureq::post(&format!("{url}/v1/completions"))
        .timeout(Duration::from_secs(120))
        .send_string(&body.to_string())
    {
        Ok(r) => (
            200,
            serde_json::from_str(&r.into_string().unwrap()).unwrap(),
            None,
        ),
        Err(ureq::Error::Status(c, r)) => {
            let retry = r.header("Retry-After").map(str::to_string);
            (
                c,
                serde_json::from_str(&r.into_string().unwrap()).unwrap(),
                retry,
            )
        }
        Err(e) => panic!("{e}"),
    }
}

fn prompt(i: usize) -> String {
    modelbench::engine::generate::CORPUS
        .split_whitespace()
        .skip(i * 37)
        .take(20 + i * 15)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn gemma3_greedy_text_alone_equals_batched_over_http() {
    let s = start("gguf:fixture:gemma3", |o| {
        o.max_batch = Some(4);
        o.max_batch_tokens = 64;
        o.prefill_chunk = 16;
    })
    .unwrap();
    alone_equals_batched(&s, "gguf:fixture:gemma3");
}

/// Qwen3 batches through the same scheduler (the project's Qwen3, picked for `--max-batch`
/// above 1 when the reference names no implementation).
#[test]
fn qwen3_greedy_text_alone_equals_batched_over_http() {
    let (s, describe) = start_described("gguf:fixture:qwen3", |o| {
        o.max_batch = Some(4);
        o.max_batch_tokens = 64;
        o.prefill_chunk = 16;
    })
    .unwrap();
    assert!(
        describe.contains("the project's quantized qwen3 (impl=modelbench)"),
        "{describe}"
    );
    alone_equals_batched(&s, "gguf:fixture:qwen3");
}

/// An explicit candle-transformers implementation keeps its one cache per model: `--max-batch`
/// above 1 is a one-line error naming the way out; without `--max-batch` the choice is
/// unchanged (candle-transformers, one sequence at a time).
#[test]
fn explicit_candle_transformers_llama_refuses_max_batch_in_one_line() {
    let e = match start_described("gguf:fixture:llama?impl=candle-transformers", |o| {
        o.max_batch = Some(4)
    }) {
        Ok(_) => panic!("candle-transformers' llama accepted --max-batch 4"),
        Err(e) => e,
    };
    assert!(
        e.contains("--max-batch 4") && e.contains("impl=modelbench") && !e.contains('\n'),
        "{e}"
    );
    let (_s, describe) = start_described("gguf:fixture:llama", |_| {}).unwrap();
    assert!(describe.starts_with("batch 1 (FIFO)"), "{describe}");
}

/// Four prompts alone, then the same four at once: the same greedy text, and shared steps.
fn alone_equals_batched(s: &Running, model: &str) {
    let url = s.url();
    let body = |i: usize| {
        json!({"model": model, "prompt": prompt(i), "max_tokens": 10,
               "temperature": 0, "ignore_eos": true})
    };
    let alone: Vec<String> = (0..4)
        .map(|i| {
            let (c, v, _) = post(&url, &body(i));
            assert_eq!(c, 200, "{v}");
            assert_eq!(v["modelbench"]["batch_max"], 1, "{v}");
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (url, b) = (url.clone(), body(i));
            std::thread::spawn(move || post(&url, &b))
        })
        .collect();
    let batched = handles
        .into_iter()
        .map(|h| {
            let (c, v, _) = h.join().unwrap();
            assert_eq!(c, 200, "{v}");
            v
        })
        .collect();
    common::assert_batched_as_alone(batched, &alone);
    let m = ureq::get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(m.contains("modelbench_requests_completed_total 8"), "{m}");
    assert!(m.contains("modelbench_max_batch 4"), "{m}");
    let models: Value = serde_json::from_str(
        &ureq::get(&format!("{url}/v1/models"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(models["data"][0]["modelbench"]["batch"], 4);
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let s = start("gguf:fixture:gemma3", |o| {
        o.max_batch = Some(1);
        o.max_queue = 1;
    })
    .unwrap();
    let url = s.url();
    let b = json!({"model": "gguf:fixture:gemma3", "prompt": "a b c", "max_tokens": 200,
                   "ignore_eos": true});
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, b) = (url.clone(), b.clone());
            std::thread::spawn(move || post(&url, &b))
        })
        .collect();
    let res: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let full: Vec<_> = res.iter().filter(|r| r.0 == 503).collect();
    assert!(
        !full.is_empty(),
        "one slot and a queue of one: 6 at once must overflow"
    );
    for (_, v, retry) in &full {
        assert_eq!(v["error"]["code"], "queue_full", "{v}");
        assert_eq!(retry.as_deref(), Some("1"));
    }
    assert!(res.iter().all(|r| r.0 == 200 || r.0 == 503));
    let ok = res.iter().filter(|r| r.0 == 200).count();
    assert!(ok >= 1, "{ok} served");
}

#[test]
fn models_without_batching_refuse_max_batch_in_one_line() {
    let e = match start("fixture:llama", |o| o.max_batch = Some(4)) {
        Ok(_) => panic!("llama accepted --max-batch 4"),
        Err(e) => e,
    };
    assert!(e.contains("--max-batch 4") && !e.contains('\n'), "{e}");
    // --fast-weights re-encodes the batched Gemma 3's weights; another model has none to run.
    let e = match start("fixture:llama", |o| o.fast_weights = true) {
        Ok(_) => panic!("llama accepted --fast-weights"),
        Err(e) => e,
    };
    assert!(
        e.contains("--fast-weights") && e.contains("leave --fast-weights out") && !e.contains('\n'),
        "{e}"
    );
    // Left out, it serves one at a time.
    let s = start("fixture:llama", |_| {}).unwrap();
    let (c, v, _) = post(
        &s.url(),
        &json!({"model": "fixture:llama", "prompt": "a b", "max_tokens": 3, "ignore_eos": true}),
    );
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

/// A `serving-load` record of one level as `modelbench load` writes it.
fn level(
    server: &str,
    c: usize,
    tok_s: f64,
    ttft: (f64, f64),
    tpot: (f64, f64),
    errors: usize,
) -> modelbench::output::record::Record {
    use modelbench::measure::latency::LoadSummary;
    use modelbench::measure::stats::Percentiles;
    use modelbench::output::record::{Kind, Record};
    let p = |(p50, p99): (f64, f64)| Percentiles {
        p50,
        p90: (p50 + p99) / 2.0,
        p99,
        mean: p50,
    };
    let summary = LoadSummary {
        requests: 20 + errors,
        completed: 20,
        errors,
        duration_s: 30.0,
        request_s: Some(tok_s / 64.0),
        output_tok_s: Some(tok_s),
        tok_s_per_user: Some(1e3 / tpot.0),
        output_tokens: 1280,
        ttft_ms: Some(p(ttft)),
        tpot_ms: Some(p(tpot)),
        itl_ms: Some(p(tpot)),
        e2e_ms: Some(p((ttft.0 + 63.0 * tpot.0, ttft.1 + 63.0 * tpot.1))),
        goodput_request_s: Some(0.25 * c as f64),
        slo_attained: Some(0.5),
        slo_p99_met: Some(false),
    };
    let mut r = Record::from_samples(Kind::ServingLoad, "serving-load", vec![1.0; 20], 64);
    r.id = format!("serving-load/c={c}/{server}");
    r.model.label = server.into();
    r.prompt_tokens = Some(128);
    r.new_tokens = Some(64);
    r.tok_s = Some(tok_s);
    r.extra = json!({"level": format!("c={c}"), "server": server, "mode": "closed-loop",
        "concurrency": c, "slo": "ttft<=2000ms,tpot<=100ms", "summary": summary});
    r
}

/// target-reports/index.html gets a Serving section from the newest run folder holding load
/// results (the numbers of its records, the ratio to c=1 per server, the sweep chart), and
/// none when no run folder holds any.
#[test]
fn index_html_shows_the_newest_load_run_and_nothing_without_one() {
    use modelbench::output::record::{Kind, Record};
    use modelbench::output::report::{write_artifacts, write_index};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A run folder without load results.
    let bench = root.join("20990101_000000-bench");
    std::fs::create_dir_all(&bench).unwrap();
    let mut g = Record::from_samples(Kind::Generation, "short", vec![0.5, 0.6], 32);
    g.model.label = "fixture:llama".into();
    write_artifacts(&bench, &[g]).unwrap();
    write_index(root).unwrap();
    let html = std::fs::read_to_string(root.join("index.html")).unwrap();
    assert!(html.contains("20990101_000000-bench"), "{html}");
    assert!(!html.contains("<h2>Serving</h2>"), "{html}");

    // A load run: two servers, c = 1, 2, 4.
    let load = root.join("20990101_000100-load");
    std::fs::create_dir_all(&load).unwrap();
    let records = vec![
        level("ours", 1, 33.1, (298.5, 723.4), (24.1, 28.4), 0),
        level("ours", 2, 52.7, (321.9, 623.4), (33.2, 34.4), 0),
        level("ours", 4, 67.9, (1094.9, 1320.9), (44.6, 58.1), 3),
        level("llama-server", 1, 53.4, (359.7, 400.2), (12.7, 13.1), 0),
        level("llama-server", 2, 33.8, (692.0, 800.5), (49.0, 51.2), 0),
        level("llama-server", 4, 39.9, (1350.5, 1500.0), (80.1, 90.3), 0),
    ];
    write_artifacts(&load, &records).unwrap();
    std::fs::write(load.join("requests.jsonl"), "").unwrap();
    assert!(
        modelbench::output::serving::sweep_png(&load.join("load.png"), &records).unwrap(),
        "the sweep chart"
    );
    write_index(root).unwrap();
    let html = std::fs::read_to_string(root.join("index.html")).unwrap();
    let start = html.find("<h2>Serving</h2>").expect("a Serving section");
    let section = &html[start..];
    let section = &section[..section.find("</table>").unwrap()];
    assert!(section.contains("20990101_000100-load"), "{section}");
    // Each row: server, level, tok/s, x c=1, per user, TTFT, TPOT, goodput, OK / errors.
    for row in [
        "<td>ours</td><td>c=1</td><td>33.1</td><td>1.00</td><td>41.5</td><td>298.5 / 723.4</td><td>24.1 / 28.4</td><td>0.25 (50%)</td><td>20 / 0</td>",
        "<td>ours</td><td>c=2</td><td>52.7</td><td>1.59</td>",
        "<td>ours</td><td>c=4</td><td>67.9</td><td>2.05</td><td>22.4</td><td>1094.9 / 1320.9</td><td>44.6 / 58.1</td><td>1.00 (50%)</td><td>20 / 3</td>",
        "<td>llama-server</td><td>c=2</td><td>33.8</td><td>0.63</td>",
        "<td>llama-server</td><td>c=4</td><td>39.9</td><td>0.75</td>",
    ] {
        assert!(section.contains(row), "{row}\nnot in\n{section}");
    }
    assert!(
        html.contains("<img src=\"20990101_000100-load/load.png\""),
        "{html}"
    );
    // The same numbers as Markdown (load.md's scaling table, scripts/serving-table.sh).
    let md = modelbench::output::serving::scaling_table(&records);
    assert!(
        md.contains("| ours | c=4 | 67.9 | 2.05 | 22.4 | 1094.9 / 1320.9 | 44.6 / 58.1 | 1.00 (50%) | 20 / 3 |"),
        "{md}"
    );
    assert!(modelbench::output::serving::scaling_table(&[]).is_empty());
}

/// `n` = 3 greedy from one prefill: the choices copied from the first sequence's cache (the
/// project's Gemma 3 and Qwen3, each its own copy) continue exactly as the sequence run alone
/// does, though the first goes on writing its own cache beside them; the prompt ran once.
#[test]
fn n_greedy_choices_copied_after_one_prefill_equal_the_text_alone() {
    for model in ["gguf:fixture:gemma3", "gguf:fixture:qwen3"] {
        let s = start_described(model, |o| {
            o.max_batch = Some(4);
            o.max_batch_tokens = 64;
            o.prefill_chunk = 16;
        })
        .unwrap()
        .0;
        let url = s.url();
        let body = |n: usize| {
            json!({"model": model, "prompt": prompt(2), "max_tokens": 12, "n": n,
                   "temperature": 0, "ignore_eos": true})
        };
        let (c, alone, _) = post(&url, &body(1));
        assert_eq!(c, 200, "{alone}");
        let text = alone["choices"][0]["text"].as_str().unwrap();
        let prompt_tokens = alone["usage"]["prompt_tokens"].as_u64().unwrap();
        let before = metric(&url, "prompt_tokens_total");
        let (c, v, _) = post(&url, &body(3));
        assert_eq!(c, 200, "{v}");
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3, "{v}");
        for (i, ch) in choices.iter().enumerate() {
            assert_eq!(ch["index"], i);
            assert_eq!(ch["text"], text, "{model}: choice {i}");
        }
        assert_eq!(v["usage"]["completion_tokens"], 36, "{v}");
        assert_eq!(
            metric(&url, "prompt_tokens_total") - before,
            prompt_tokens as f64,
            "{model}: the prompt ran once"
        );
    }
}

/// A `/metrics` value.
fn metric(url: &str, name: &str) -> f64 {
    let m = ureq::get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("modelbench_{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {m}"))
        .parse()
        .unwrap()
}
