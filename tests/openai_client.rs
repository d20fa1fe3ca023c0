//! The official OpenAI Python client (PyPI `openai`, pinned by scripts/install-openai-client.sh)
//! against `modelbench serve`: n > 1 (distinct seeded choices, one prefill where the model can
//! copy a sequence), seed, logprobs and top_logprobs in both APIs' shapes, stop, usage in the
//! final chunk, finish_reason, typed errors (tests/openai_client.py holds the checks). Skips
//! under the one rule when the client is not installed (`MODELBENCH_REQUIRE_OPENAI_CLIENT`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The pinned client's version (scripts/install-openai-client.sh's VERSION).
const VERSION: &str = "3.57.0";

/// Where the install script put the client: `$OPENAI_CLIENT_DIR`, else
/// target/openai-client/VERSION; None after a skip.
fn client_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OPENAI_CLIENT_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            modelbench::util::root()
                .join("target/openai-client")
                .join(VERSION)
        });
    if dir.join("openai").is_dir() {
        return Some(dir);
    }
    common::skip_unless_required(
        "MODELBENCH_REQUIRE_OPENAI_CLIENT",
        "the official openai Python client",
        &format!(
            "not installed in {} (scripts/install-openai-client.sh, about a minute)",
            dir.display()
        ),
    );
    None
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `modelbench serve` on `model` with `extra` flags; its URL.
fn serve(model: &str, extra: &[&str], reports: &std::path::Path) -> (Server, String) {
    let mut child = common::bin()
        .args(["serve", "--model", model, "--port", "0", "--context", "512"])
        .args(extra)
        .env("MODELBENCH_REPORTS", reports)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server(child);
    let url = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .trim()
        .to_string();
    (server, url)
}

/// Runs tests/openai_client.py against `model`; `prefills`: how often an n=3 request's
/// prompt runs (1: copied after one prefill).
fn run_checks(dir: &std::path::Path, model: &str, extra: &[&str], prefills: usize) {
    let reports = tempfile::tempdir().unwrap();
    let (_server, url) = serve(model, extra, reports.path());
    let o = Command::new("python3")
        .arg(modelbench::util::root().join("tests/openai_client.py"))
        .args([&url, model, &prefills.to_string()])
        .env("PYTHONPATH", dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3");
    let out = common::text(&o);
    assert!(o.status.success(), "{model}: {out}");
    assert!(
        out.contains(&format!("8 checks passed with openai {VERSION}")),
        "{model}: {out}"
    );
    eprintln!("{model}: {}", String::from_utf8_lossy(&o.stdout));
}

/// The project's batched Qwen3 (`--max-batch 4`): n = 3 copies the sequence after one prefill.
#[test]
fn openai_client_against_the_batched_server() {
    let Some(dir) = client_dir() else { return };
    run_checks(&dir, "gguf:fixture:qwen3", &["--max-batch", "4"], 1);
}

/// A model served one sequence per forward (candle-transformers' Llama): each of n = 3
/// choices prefills by itself, one after another, with the same answers' shapes.
#[test]
fn openai_client_against_a_one_sequence_server() {
    let Some(dir) = client_dir() else { return };
    run_checks(&dir, "fixture:llama", &[], 3);
}
