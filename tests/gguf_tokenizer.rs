//! GGUF files as the loader takes them (issue 29): the tokenizer built from the metadata gives
//! llama.cpp's ids, the precision label is the file type, and what is not supported is refused
//! in one line.
//!
//! Expected ids come from llama.cpp's `llama-tokenize`, recorded by
//! scripts/record-tokenizer-ids.sh into fixtures/tokenizer/llama-tokenize-ids.json (provenance
//! inside), never from this code.

mod common;
#[path = "gguf_tokenizer/llama_vocab.rs"]
mod llama_vocab;
#[path = "gguf_tokenizer/special.rs"]
mod special;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device};
use modelbench::engine::scenario::prepare;
use modelbench::models::sources::loading::open;
use modelbench::models::sources::{resolve_in, HubEnv, ModelRef};
use modelbench::models::{gguf, sources, tokenizers, Family};

use common::rewrite;

struct Recorded {
    texts: Vec<String>,
    ids: serde_json::Map<String, serde_json::Value>,
    commit: String,
}

fn recorded() -> Recorded {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer/llama-tokenize-ids.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let texts = v["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    Recorded {
        texts,
        ids: v["ids"].as_object().unwrap().clone(),
        commit: v["provenance"]["llama_cpp_commit"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

fn expected(r: &Recorded, file: &str) -> Option<Vec<Vec<u32>>> {
    r.ids.get(file).map(|rows| {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    })
}

/// Every text through `tok` as llama-tokenize runs it (add_special = the file's add_bos_token
/// through the template, special tokens parsed), against the recorded ids.
fn compare(name: &str, tok: &::tokenizers::Tokenizer, r: &Recorded, want: &[Vec<u32>]) {
    assert_eq!(want.len(), r.texts.len(), "{name}: recorded rows");
    let mut bad = Vec::new();
    for (text, want) in r.texts.iter().zip(want) {
        let got = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        if &got != want {
            bad.push(format!(
                "{text:?}:\n  llama.cpp {want:?}\n  ours      {got:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} texts differ from llama.cpp {}:\n{}",
        bad.len(),
        r.texts.len(),
        r.commit,
        bad.join("\n")
    );
}

#[test]
fn fixture_tokenizers_give_llama_cpp_ids() {
    let r = recorded();
    for fam in [Family::Llama, Family::Qwen3, Family::Gemma3] {
        let name = format!("gguf:fixture:{fam}");
        let path = modelbench::models::sources::gguf_fixture(fam).unwrap();
        assert!(
            !path.with_file_name("tokenizer.json").exists(),
            "{name}: the fixture's tokenizer must come from its metadata"
        );
        let tok = tokenizers::load(&path).unwrap();
        let want = expected(&r, &name).unwrap_or_else(|| panic!("no ids recorded for {name}"));
        compare(&name, &tok, &r, &want);
    }
}

/// BOS exactly as the file says: llama fixture (add_bos_token true) and Gemma (true) put it
/// first, Qwen3 (false) does not, whatever names the vocabulary holds.
#[test]
fn bos_follows_add_bos_token() {
    for (fam, bos) in [
        (Family::Llama, Some(128000)),
        (Family::Qwen3, None),
        (Family::Gemma3, Some(2)),
    ] {
        let path = modelbench::models::sources::gguf_fixture(fam).unwrap();
        let tok = tokenizers::load(&path).unwrap();
        assert_eq!(tokenizers::bos_id(&tok), bos, "{fam}");
    }
    // Flip the llama fixture's add_bos_token: no BOS, although `<|begin_of_text|>` is there.
    let tmp = tempfile::tempdir().unwrap();
    let p = rewrite(Family::Llama, tmp.path(), |md, _| {
        md.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(false));
    });
    let tok = tokenizers::load(&p).unwrap();
    assert_eq!(tokenizers::bos_id(&tok), None);
    assert_eq!(tok.token_to_id("<|begin_of_text|>"), Some(128000));
    // Without the key, llama.cpp's default for the llama-bpe pre-tokenizer: BOS.
    let p = rewrite(Family::Llama, tmp.path(), |md, _| {
        md.remove("tokenizer.ggml.add_bos_token");
    });
    assert_eq!(
        tokenizers::bos_id(&tokenizers::load(&p).unwrap()),
        Some(128000)
    );
}

fn real_gemma() -> Option<PathBuf> {
    let hub = HubEnv::from_env();
    let r = ModelRef::parse("gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF").unwrap();
    match resolve_in(&r, "gemma", &hub) {
        Ok(res) => match res.weights {
            modelbench::models::Weights::Gguf(p) => Some(p),
            _ => None,
        },
        Err(e) => {
            common::skip_real_model(e);
            None
        }
    }
}

#[test]
fn real_gemma3_tokenizer_from_metadata_gives_llama_cpp_ids() {
    let Some(path) = real_gemma() else { return };
    let r = recorded();
    let want = expected(&r, "gemma-3-270m-Q4_K_M.gguf")
        .expect("the real Gemma 3 is installed but no ids are recorded for it: run scripts/record-tokenizer-ids.sh");
    // The metadata's tokenizer, not the tokenizer.json beside the file.
    let ct = gguf::check::read_header(&path).unwrap();
    let tok = tokenizers::gguf::from_content(&path, &ct).unwrap();
    compare("gemma-3-270m-Q4_K_M.gguf", &tok, &r, &want);
}

/// The real Gemma 3 file is labelled by its file type (Q4_K_M), not by one tensor's type
/// (its blk.0.ffn_down is Q6_K), with the tensor-type histogram read from the file.
#[test]
fn real_gemma3_is_labelled_q4_k_m() {
    let Some(path) = real_gemma() else { return };
    let ct = gguf::check::read_header(&path).unwrap();
    let m = sources::gguf::describe(&path, &ct, Family::Gemma3, Some(64)).unwrap();
    assert_eq!(m.dtype, "gguf-q4_k_m");
    let g = m.provenance.gguf.unwrap();
    assert_eq!(g.file_type, Some(15));
    assert_eq!(g.label_source, "general.file_type = 15");
    let counts: Vec<(String, usize)> = g
        .tensor_types
        .iter()
        .map(|(k, v)| (k.clone(), v.count))
        .collect();
    let want = [
        ("F32", 109),
        ("Q4_K", 27),
        ("Q5_0", 81),
        ("Q6_K", 9),
        ("Q8_0", 10),
    ];
    assert_eq!(
        counts,
        want.iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<Vec<_>>()
    );
    let bytes: u64 = g.tensor_types.values().map(|v| v.bytes).sum();
    assert_eq!(bytes, m.weight_bytes);
}

fn gguf_ref(p: &Path) -> ModelRef {
    ModelRef::parse(&format!("gguf:{}", p.display())).unwrap()
}

fn one_line_err<T, E: std::fmt::Display>(r: Result<T, E>) -> String {
    let e = match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "not one line: {e}");
    e
}

#[test]
fn fixtures_are_labelled_by_file_type_and_without_it_by_their_weights() {
    let path = modelbench::models::sources::gguf_fixture(Family::Qwen3).unwrap();
    let ct = gguf::check::read_header(&path).unwrap();
    let g = sources::gguf::weights_info(&ct);
    assert_eq!((g.label.as_str(), g.file_type), ("q8_0", Some(7)));
    assert_eq!(g.label_source, "general.file_type = 7");
    assert!(g.tensor_types["Q8_0"].count > 0 && g.tensor_types["F32"].count > 0);
    // No general.file_type, and one 2-D weight made F16: the most common 2-D type, said so.
    let tmp = tempfile::tempdir().unwrap();
    let p = rewrite(Family::Qwen3, tmp.path(), |md, ts| {
        md.remove("general.file_type");
        let (_, t) = ts
            .iter_mut()
            .find(|(n, _)| n == "blk.0.ffn_down.weight")
            .unwrap();
        let f = t.dequantize(&Device::Cpu).unwrap();
        *t = candle_core::quantized::QTensor::quantize(&f, candle_core::quantized::GgmlDType::F16)
            .unwrap();
    });
    let g = sources::gguf::weights_info(&gguf::check::read_header(&p).unwrap());
    assert_eq!(g.label, "q8_0");
    assert!(
        g.label_source
            .starts_with("no general.file_type: the most common type of the 2-D weight tensors"),
        "{}",
        g.label_source
    );
    assert_eq!(g.tensor_types["F16"].count, 1);
    // The label reaches the model's meta (benchmark ids, records, /v1/models, peers).
    let res = prepare("q", &gguf_ref(&p), &[]).unwrap();
    let m = open(res, &Device::Cpu, DType::F32, Some(64)).unwrap();
    assert_eq!(m.model.meta().dtype, "gguf-q8_0");
    let info = modelbench::workloads::generation::model_info(&m);
    assert_eq!(
        info.provenance.gguf.as_ref().unwrap().tensor_types["F16"].count,
        1
    );
    assert_eq!(info.tokenizer, tokenizers::gguf::SOURCE_GGUF);
}

/// A tokenizer.json beside the file overrides the metadata, and the record says which.
#[test]
fn tokenizer_json_beside_the_file_overrides_the_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let p = rewrite(Family::Llama, tmp.path(), |_, _| {});
    let hub = HubEnv::from_env();
    let res = resolve_in(&gguf_ref(&p), "x", &hub).unwrap();
    assert_eq!(res.tokenizer_kind, tokenizers::gguf::SOURCE_GGUF);
    assert_eq!(res.tokenizer.as_deref(), Some(p.as_path()));
    std::fs::write(
        p.with_file_name("tokenizer.json"),
        tokenizers::fixture_tokenizer_json(128256),
    )
    .unwrap();
    let res = resolve_in(&gguf_ref(&p), "x", &hub).unwrap();
    assert_eq!(res.tokenizer_kind, tokenizers::gguf::SOURCE_BESIDE);
    assert_eq!(res.tokenizer, Some(p.with_file_name("tokenizer.json")));
}

/// Every GGUF the loader takes runs or is refused in one line that names the problem.
#[test]
fn unsupported_gguf_files_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubEnv::from_env();
    let load = |p: &Path| -> modelbench::error::Result<()> {
        let res = resolve_in(&gguf_ref(p), "x", &hub)?;
        open(res, &Device::Cpu, DType::F32, Some(64))?;
        Ok(())
    };

    // Architecture.
    let p = rewrite(Family::Llama, tmp.path(), |md, _| {
        md.insert("general.architecture".into(), Value::String("mamba".into()));
    });
    let e = one_line_err(load(&p));
    assert!(
        e.contains("GGUF architecture `mamba` is not supported"),
        "{e}"
    );

    // RoPE scaling candle's quantized Llama / Qwen3 would ignore.
    let p = rewrite(Family::Qwen3, tmp.path(), |md, _| {
        md.insert(
            "qwen3.rope.scaling.type".into(),
            Value::String("yarn".into()),
        );
        md.insert("qwen3.rope.scaling.factor".into(), Value::F32(4.0));
    });
    let e = one_line_err(load(&p));
    assert!(
        e.contains("RoPE scaling `yarn`") && e.contains("quantized_qwen3"),
        "{e}"
    );
    let p = rewrite(Family::Llama, tmp.path(), |_, ts| {
        let t = candle_core::Tensor::ones(32, DType::F32, &Device::Cpu).unwrap();
        ts.push((
            "rope_freqs.weight".into(),
            candle_core::quantized::QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32)
                .unwrap(),
        ));
    });
    let e = one_line_err(load(&p));
    assert!(e.contains("rope_freqs.weight"), "{e}");

    // A tensor type candle cannot read (IQ2_XXS = ggml type 16), patched into the table.
    let p = rewrite(Family::Llama, tmp.path(), |_, _| {});
    let mut bytes = std::fs::read(&p).unwrap();
    let name = b"blk.0.ffn_down.weight";
    let at = bytes
        .windows(name.len())
        .rposition(|w| w == name)
        .expect("tensor name in the table");
    // name, then n_dims (u32), dims (u64 each), then the type (u32).
    let mut o = at + name.len();
    let dims = u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    o += 4 + 8 * dims;
    assert_eq!(u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()), 8);
    bytes[o..o + 4].copy_from_slice(&16u32.to_le_bytes());
    std::fs::write(&p, bytes).unwrap();
    let e = one_line_err(load(&p));
    assert!(
        e.contains("tensor type IQ2_XXS (ggml type 16) is not supported by candle"),
        "{e}"
    );

    // No tokenizer metadata and no tokenizer.json: runs for speed (ids), refused where text is
    // needed, naming what is missing.
    let p = rewrite(Family::Gemma3, tmp.path(), |md, _| {
        md.retain(|k, _| !k.starts_with("tokenizer."));
    });
    let res = resolve_in(&gguf_ref(&p), "x", &hub).unwrap();
    assert!(res.tokenizer.is_none());
    let e = one_line_err(res.tokenizer_path());
    assert!(
        e.contains("no tokenizer metadata") && e.contains("tokenizer.json beside the file"),
        "{e}"
    );
    open(res, &Device::Cpu, DType::F32, Some(64)).unwrap();

    // A BPE pre-tokenizer name llama.cpp does not know either (every name it knows is
    // implemented: llama_cpp_pre::NAMES).
    let p = rewrite(Family::Qwen3, tmp.path(), |md, _| {
        md.insert(
            "tokenizer.ggml.pre".into(),
            Value::String("no-such-pre".into()),
        );
    });
    let res = resolve_in(&gguf_ref(&p), "x", &hub).unwrap();
    let e = one_line_err(res.tokenizer_path());
    assert!(
        e.contains("`no-such-pre` is not one of llama.cpp's 91 names")
            && e.contains("tokenizer.json beside the file"),
        "{e}"
    );
    // A name this project did not implement before issue 42 now gives a tokenizer.
    let p = rewrite(Family::Qwen3, tmp.path(), |md, _| {
        md.insert(
            "tokenizer.ggml.pre".into(),
            Value::String("chatglm-bpe".into()),
        );
    });
    let res = resolve_in(&gguf_ref(&p), "x", &hub).unwrap();
    assert!(res.tokenizer_path().is_ok());

    // Another model's tokenizer: more tokens than the embedding has rows (the reported case:
    // a Llama 3 tokenizer on a smaller-vocabulary Llama).
    let p = rewrite(Family::Llama, tmp.path(), |_, _| {});
    std::fs::write(
        p.with_file_name("tokenizer.json"),
        tokenizers::fixture_tokenizer_json(200_000),
    )
    .unwrap();
    let e = one_line_err(load(&p));
    assert!(
        e.contains("has 200000 tokens but the model's embedding has 128256 rows"),
        "{e}"
    );
}

/// `generate` on a GGUF without any tokenizer: non-zero exit, one line naming the fix.
#[test]
fn generate_without_a_tokenizer_fails_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = rewrite(Family::Llama, tmp.path(), |md, _| {
        md.retain(|k, _| !k.starts_with("tokenizer."));
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelbench"))
        .args([
            "generate",
            "--model",
            &format!("gguf:{}", p.display()),
            "--prompt",
            "hello",
            "--max-new-tokens",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("no tokenizer metadata") && !err.contains("panicked"),
        "{err}"
    );
}

/// When llama.cpp is built here, the recorded ids are still what it gives for the fixtures
/// (a changed fixture vocabulary would otherwise be checked against stale ids).
#[test]
fn recorded_fixture_ids_are_current() {
    let Some(bin) = common::llama_cpp_program("llama-tokenize") else {
        return;
    };
    let r = recorded();
    let tmp = tempfile::tempdir().unwrap();
    for fam in [Family::Llama, Family::Qwen3, Family::Gemma3] {
        let path = modelbench::models::sources::gguf_fixture(fam).unwrap();
        let want = expected(&r, &format!("gguf:fixture:{fam}")).unwrap();
        for i in [0, r.texts.len() - 1] {
            let tf = tmp.path().join(format!("{fam}-{i}.txt"));
            std::fs::write(&tf, &r.texts[i]).unwrap();
            let out = std::process::Command::new(&bin)
                .arg("-m")
                .arg(&path)
                .arg("-f")
                .arg(&tf)
                .args(["--ids", "--log-disable", "--no-escape"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().rfind(|l| l.starts_with('[')).unwrap();
            let got: Vec<u32> = serde_json::from_str(line).unwrap();
            assert_eq!(
                got, want[i],
                "{fam} text {i}: recorded ids are stale; run scripts/record-tokenizer-ids.sh"
            );
        }
    }
}
