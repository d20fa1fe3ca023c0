//! llama.cpp's own tokenizer test vectors (tests/test-tokenizer-0.cpp: every
//! models/ggml-vocab-*.gguf with .inp/.out, kept by scripts/build-llama-cpp.sh in
//! <dir>/vocab), and every `tokenizer.ggml.pre` name proved against llama-tokenize; the
//! llama.cpp helpers the special-token tests share.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use modelbench::models::sources::{resolve_in, HubEnv, ModelRef};
use modelbench::models::{gguf, tokenizers, Family};

use crate::common;

/// The llama.cpp build the tests use: `$LLAMA_CPP_DIR` (`.ci/run`'s cache outside the
/// checkout), else `target/llama-cpp/<VERSION>`, resolved as the library resolves it.
fn llama_dir() -> PathBuf {
    common::llama_cpp_dir()
}

/// `<llama.cpp build>/vocab`, or None (skip) outside CI; under CI its absence fails.
pub(crate) fn vocab_dir() -> Option<PathBuf> {
    let d = llama_dir().join("vocab");
    if d.join("ggml-vocab-llama-bpe.gguf").is_file() {
        return Some(d);
    }
    common::skip_unless_required(
        "MODELBENCH_REQUIRE_LLAMA_CPP",
        "llama.cpp's vocabularies",
        &format!(
            "{} has none: run scripts/build-llama-cpp.sh (it keeps models/ggml-vocab-* of the llama.cpp source there)",
            d.display()
        ),
    );
    None
}

/// One vocabulary's vectors: (input, expected ids), split as test-tokenizer-0 splits them.
fn read_vectors(gguf: &Path) -> Option<Vec<(String, Vec<u32>)>> {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display())).ok()?;
    let out = std::fs::read_to_string(format!("{}.out", gguf.display())).unwrap();
    // test-tokenizer-0's split: no empty input after a final separator.
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs: Vec<&str> = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                inputs.push(&rest[..i]);
                rest = &rest[i + sep.len()..];
            }
            None => {
                inputs.push(rest);
                rest = "";
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse::<u32>().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{}: .inp and .out differ in length",
        gguf.display()
    );
    Some(inputs.into_iter().map(String::from).zip(outputs).collect())
}

/// The tokenizer of a vocabulary-only GGUF as the project builds it.
fn vocab_tokenizer(path: &Path) -> modelbench::models::Result<::tokenizers::Tokenizer> {
    let ct = gguf::check::read_header(path)?;
    tokenizers::gguf::from_content(path, &ct)
}

/// The inputs whose ids differ, as test-tokenizer-0 compares them: add_special = false,
/// parse_special = false.
fn vector_failures(tok: &::tokenizers::Tokenizer, vectors: &[(String, Vec<u32>)]) -> Vec<String> {
    let mut tok = tok.clone();
    tok.set_encode_special_tokens(true);
    let mut bad = Vec::new();
    for (text, want) in vectors {
        let got = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        if &got != want {
            bad.push(format!(
                "{text:?}:\n    llama.cpp {want:?}\n    ours      {got:?}"
            ));
        }
    }
    bad
}

#[test]
fn llama_cpp_test_vectors() {
    let Some(dir) = vocab_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    let (mut n_pairs, mut n_inputs, mut n_ok_inputs) = (0, 0, 0);
    let mut failed = Vec::new();
    let mut passed = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let Some(vectors) = read_vectors(f) else {
            continue;
        };
        n_pairs += 1;
        n_inputs += vectors.len();
        let tok = match vocab_tokenizer(f) {
            Ok(t) => t,
            Err(e) => {
                failed.push(format!("{name}: not built: {e}"));
                continue;
            }
        };
        let bad = vector_failures(&tok, &vectors);
        n_ok_inputs += vectors.len() - bad.len();
        if bad.is_empty() {
            passed.push(name);
        } else {
            failed.push(format!(
                "{name}: {} of {} inputs differ:\n  {}",
                bad.len(),
                vectors.len(),
                bad.join("\n  ")
            ));
        }
    }
    eprintln!(
        "llama.cpp test vectors: {} vocab files, {n_pairs} with .inp/.out, {n_inputs} inputs, {n_ok_inputs} exact; passed: {}",
        files.len(),
        passed.join(", ")
    );
    assert!(
        n_pairs >= 15,
        "only {n_pairs} .inp/.out pairs in {}",
        dir.display()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The verdict of the test above, both sides: the expected ids of one vocabulary pass, and
/// the same with one id changed fail (on that input only).
#[test]
fn a_changed_expected_id_fails_the_vectors() {
    let Some(dir) = vocab_dir() else { return };
    let f = dir.join("ggml-vocab-llama-bpe.gguf");
    let mut vectors = read_vectors(&f).unwrap();
    let tok = vocab_tokenizer(&f).unwrap();
    assert!(vector_failures(&tok, &vectors).is_empty());
    let (i, _) = vectors
        .iter()
        .enumerate()
        .find(|(_, (_, ids))| ids.len() > 2)
        .unwrap();
    vectors[i].1[1] += 1;
    let bad = vector_failures(&tok, &vectors);
    assert_eq!(bad.len(), 1, "{bad:?}");
}

// ---------------------------------------------------------------------------------------
// Every `tokenizer.ggml.pre` name, proved against llama-tokenize: a vocabulary GGUF of
// llama.cpp's own with its `pre` rewritten to the name, the shipped multilingual text
// (fixtures/tokenizer/multilingual.txt) through both.

pub(crate) fn llama_tokenize_bin() -> Option<PathBuf> {
    common::llama_cpp_program("llama-tokenize")
}

fn shipped_text() -> (PathBuf, String) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer/multilingual.txt");
    let t = std::fs::read_to_string(&p).unwrap();
    (p, t)
}

/// llama-tokenize's ids of `text_file` with `gguf` (BOS as the file says, special tokens
/// parsed: the tool's defaults).
fn llama_tokenize_ids(bin: &Path, gguf: &Path, text_file: &Path) -> Vec<u32> {
    llama_tokenize_with(bin, gguf, text_file, true, true).0
}

/// A copy of a vocabulary GGUF with some metadata changed.
fn rewrite_vocab(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Value>),
) {
    // Buffered both ways: candle reads and writes field by field, and a vocabulary is a few
    // hundred thousand strings (unbuffered, one name's copy took about a second of syscalls).
    let mut f = std::io::BufReader::new(std::fs::File::open(src).unwrap());
    let ct = gguf_file::Content::read(&mut f).unwrap();
    assert!(
        ct.tensor_infos.is_empty(),
        "{}: not vocabulary-only",
        src.display()
    );
    let mut md = ct.metadata.clone();
    edit(&mut md);
    let mdr: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(dst).unwrap());
    gguf_file::write(&mut w, &mdr, &[]).unwrap();
    std::io::Write::flush(&mut w).unwrap();
}

/// The first index where two id lists differ, with a little context, for the failure text.
pub(crate) fn first_difference(want: &[u32], got: &[u32]) -> String {
    let i = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let lo = i.saturating_sub(3);
    format!(
        "{} vs {} ids, first difference at {i}: llama.cpp {:?} ours {:?}",
        want.len(),
        got.len(),
        &want[lo..(i + 4).min(want.len())],
        &got[lo..(i + 4).min(got.len())]
    )
}

fn rule_of(name: &str) -> tokenizers::gguf::PreRule {
    tokenizers::gguf::llama_cpp_pre::rule(Some(name)).unwrap()
}

#[test]
fn every_pre_tokenizer_name_matches_llama_tokenize() {
    let Some(dir) = vocab_dir() else { return };
    let Some(bin) = llama_tokenize_bin() else {
        return;
    };
    let (text_path, text) = shipped_text();
    let tmp = tempfile::tempdir().unwrap();
    // One name: (its table entry, its difference from llama-tokenize if any). The names are
    // independent (each its own rewritten vocabulary, llama-tokenize process and tokenizer), and
    // one name alone leaves a core idle half the time (file writes, process start): measured on
    // the 2-core VM, this test took 258 s one name at a time, 129 s with two workers, 148 s
    // with four.
    let check = |name: &str| -> (String, Option<String>) {
        // Byte-level names on Llama 3's vocabulary; the names without GPT-2 byte encoding
        // (gemma4, granite-embed-multi-311m, sarvam-moe, whitespace) on Gemma 4's raw UTF-8
        // one, as a `gpt2` model so that `pre` is read (a `gemma4` model is always `gemma4`).
        let rule = rule_of(name);
        let spm_style = !rule.byte_encode;
        let src = dir.join(if spm_style {
            "ggml-vocab-gemma-4.gguf"
        } else {
            "ggml-vocab-llama-bpe.gguf"
        });
        let dst = tmp.path().join(format!("{name}.gguf"));
        rewrite_vocab(&src, &dst, |md| {
            md.insert("tokenizer.ggml.pre".into(), Value::String(name.to_string()));
            if spm_style && name != "gemma4" {
                md.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
            }
        });
        // llama.cpp's `whitespace` (jina-embeddings-v2-base-zh) keeps whitespace runs as
        // pieces and asserts that no merge involves a space: on a text with a run of two
        // spaces it aborts (GGML_ASSERT in find_bpe_rank). It is proved on the text with every
        // whitespace run made one space.
        let (text_path, text) = if rule.pre_type == "WHITESPACE" {
            let t: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let p = tmp.path().join(format!("{name}-single-spaced.txt"));
            std::fs::write(&p, &t).unwrap();
            (p, t)
        } else {
            (text_path.clone(), text.clone())
        };
        let want = llama_tokenize_ids(&bin, &dst, &text_path);
        let tok = tokenizers::load(&dst).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bos = tokenizers::bos_id(&tok).is_some();
        let got = tok.encode(text.as_str(), bos).unwrap().get_ids().to_vec();
        let row = format!("{name}={}:{}", rule.pre_type, want.len());
        let diff = (got != want).then(|| {
            format!(
                "{name} ({}): {}",
                rule.pre_type,
                first_difference(&want, &got)
            )
        });
        (row, diff)
    };
    // One worker per core (2 to 4), in a pool of its own (not the global one candle and
    // tokenizers use); `collect` keeps PRE_NAMES' order.
    let names = tokenizers::gguf::PRE_NAMES;
    let pool = worker_pool();
    let results: Vec<(String, Option<String>)> = pool.install(|| {
        use rayon::prelude::*;
        names.par_iter().map(|name| check(name)).collect()
    });
    let table: Vec<String> = results.iter().map(|(row, _)| row.clone()).collect();
    let bad: Vec<String> = results.into_iter().filter_map(|(_, d)| d).collect();
    eprintln!(
        "{} names, {} agree with llama-tokenize on {} ({} bytes): {}",
        tokenizers::gguf::PRE_NAMES.len(),
        tokenizers::gguf::PRE_NAMES.len() - bad.len(),
        text_path.display(),
        text.len(),
        table.join(" ")
    );
    assert!(
        bad.is_empty(),
        "{} names differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Every real GGUF file scripts/fetch-offline-models.sh installs (Gemma 3 270M: SentencePiece;
/// Qwen2.5-Coder-0.5B: BPE, pre-tokenizer `qwen2`; SmolLM2-135M: BPE, pre-tokenizer `smollm`),
/// its metadata's tokenizer on the shipped text against llama-tokenize on the same file.
#[test]
fn real_gguf_tokenizers_match_llama_tokenize_on_the_shipped_text() {
    const REAL: [&str; 3] = [
        "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF",
        "gguf:modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        "gguf:modelbench-offline/SmolLM2-135M-Instruct-GGUF",
    ];
    let Some(bin) = llama_tokenize_bin() else {
        return;
    };
    let (text_path, text) = shipped_text();
    let hub = HubEnv::from_env();
    for reference in REAL {
        let r = ModelRef::parse(reference).unwrap();
        let path = match resolve_in(&r, reference, &hub) {
            Ok(res) => match res.weights {
                modelbench::models::Weights::Gguf(p) => p,
                _ => unreachable!("a gguf: reference"),
            },
            Err(e) => {
                common::skip_real_model(e);
                continue;
            }
        };
        let want = llama_tokenize_ids(&bin, &path, &text_path);
        let ct = gguf::check::read_header(&path).unwrap();
        let tok = tokenizers::gguf::from_content(&path, &ct).unwrap();
        let got = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        assert!(
            got == want,
            "{reference}: {}",
            first_difference(&want, &got)
        );
        eprintln!(
            "{reference}: {} ids of {} equal llama-tokenize's",
            want.len(),
            text_path.display()
        );
    }
}

/// The tokenizer built from the metadata, saved as tokenizer.json and loaded back by the
/// `tokenizers` library alone, still gives llama.cpp's ids (BPE, SentencePiece, Gemma 4 and
/// WPM vocabularies).
#[test]
fn exported_tokenizer_json_gives_the_same_ids() {
    let Some(dir) = vocab_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "ggml-vocab-qwen2.gguf",
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-gemma-4.gguf",
        "ggml-vocab-bert-bge.gguf",
    ] {
        let f = dir.join(name);
        let vectors = read_vectors(&f).unwrap();
        let json = tmp.path().join(format!("{name}.json"));
        vocab_tokenizer(&f).unwrap().save(&json, false).unwrap();
        let tok = ::tokenizers::Tokenizer::from_file(&json).unwrap();
        let bad = vector_failures(&tok, &vectors);
        assert!(bad.is_empty(), "{name} from tokenizer.json: {bad:?}");
    }
}

/// `modelbench tokenize` gives what the benchmarks' path gives (tokenizers::load, encode,
/// BOS from bos_id), in llama-tokenize's shapes, and refuses bad input in one line.
#[test]
fn tokenize_command_prints_the_benchmarks_ids() {
    let path = modelbench::models::sources::gguf_fixture(Family::Llama).unwrap();
    let model = format!("gguf:{}", path.display());
    let text = "Hello <|begin_of_text|> world 12345";
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_modelbench"))
            .args(["tokenize", "--model", &model])
            .args(args)
            .output()
            .unwrap()
    };
    let tok = tokenizers::load(&path).unwrap();
    let mut want = tokenizers::encode(&tok, text).unwrap();
    want.insert(0, tokenizers::bos_id(&tok).unwrap());
    let out = run(&["--prompt", text, "--ids"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<u32> = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(got, want);
    assert!(got.iter().filter(|&&i| i == 128000).count() == 2, "{got:?}");
    // Without BOS and without parsing the special token's text: no 128000 at all.
    let out = run(&["--prompt", text, "--ids", "--no-bos", "--no-parse-special"]);
    let got: Vec<u32> = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(!got.contains(&128000) && got.len() > want.len(), "{got:?}");
    // Pieces: one `id -> 'piece'` line per token.
    let out = run(&["--prompt", text, "--show-count"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("128000 -> '<|begin_of_text|>'\n"), "{s}");
    assert!(
        s.ends_with(&format!("Total number of tokens: {}\n", want.len())),
        "{s}"
    );
    // Bad input: non-zero, one line.
    let out = run(&["--file", "/nonexistent/text.txt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--file /nonexistent/text.txt"), "{err}");
}

/// llama-tokenize's ids of `text_file` with the given settings, and the end-of-generation
/// set it reports after loading the vocabulary (`print_info: EOG token = <id>`, at log
/// verbosity 4; the load's own `printing all EOG tokens` comes before its `</s>` rule).
pub(crate) fn llama_tokenize_with(
    bin: &Path,
    gguf: &Path,
    text_file: &Path,
    bos: bool,
    parse: bool,
) -> (Vec<u32>, Vec<u32>) {
    let mut c = std::process::Command::new(bin);
    c.arg("-m").arg(gguf).arg("-f").arg(text_file);
    c.args(["--ids", "--log-verbosity", "4", "--no-escape"]);
    if !bos {
        c.arg("--no-bos");
    }
    if !parse {
        c.arg("--no-parse-special");
    }
    // llama.cpp logs through an asynchronous worker (common_log) and now and then loses lines
    // of its log at exit under load (measured: its `print_info` block lacked its last line in 1
    // of 40 runs of a loop on an idle machine here, and once in CI the EOG line of
    // ggml-vocab-llama-spm.gguf went missing); the
    // end-of-generation set is read from that block, so a run whose block lacks its last line
    // (`max token length`, printed for every vocabulary) is run again.
    let mut tries = 0;
    let out = loop {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "llama-tokenize on {}: {}",
            gguf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        tries += 1;
        if String::from_utf8_lossy(&out.stderr).contains(" print_info: max token length") {
            break out;
        }
        assert!(
            tries < 10,
            "llama-tokenize on {}: its log lacked the end of the print_info block in 10 runs",
            gguf.display()
        );
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rfind(|l| l.starts_with('[')).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut eog: Vec<u32> = stderr
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" print_info: EOG token")?;
            rest.split_once("= ")?.1.split_once(' ')?.0.parse().ok()
        })
        .collect();
    eog.sort_unstable();
    (serde_json::from_str(line).unwrap(), eog)
}

/// One worker per core (2 to 4), in a pool of its own (not the global one candle and
/// tokenizers use).
pub(crate) fn worker_pool() -> rayon::ThreadPool {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .unwrap()
}
