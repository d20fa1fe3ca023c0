//! `modelbench load` against a served fixture (tests/serve.rs's servers): records, table and
//! plot of a tiny run, each request's text judged by `compare`, bad flags, conversations
//! (closed and open loop) and `--dataset` loads.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{common, post_json, server, server_with};

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

/// The first record of a run folder's results.jsonl.
pub(super) fn first_record(run: &Path) -> Value {
    let text = std::fs::read_to_string(run.join("results.jsonl")).expect("results.jsonl");
    serde_json::from_str(text.lines().next().expect("a record")).expect("record")
}

/// A load's requests.jsonl, in request-number order.
pub(super) fn requests(run: &Path) -> Vec<Value> {
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
pub(super) fn conversation_load(url: &str, model: &str, reports: &Path, label: &str) -> PathBuf {
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
