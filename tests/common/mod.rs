#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device};
use modelbench::engine::scenario::prepare;
use modelbench::models::sources::loading::{open, Loaded};
use modelbench::models::sources::ModelRef;

/// The `modelbench` binary of this build, nothing set.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modelbench"))
}

/// The binary as the CLI tests run it: run folders (and the default results database) under
/// `reports`, no network (HF_HUB_OFFLINE=1), and no MODELBENCH_DB of the caller's shell.
pub fn modelbench_cmd(reports: &Path) -> Command {
    let mut c = bin();
    c.env("MODELBENCH_REPORTS", reports)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MODELBENCH_DB");
    c
}

/// Bad input as the CLI answers it: exit 2, one `error:` line naming `needle`, no panic.
pub fn assert_bad_input(o: &Output, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let lines: Vec<_> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {e}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{e}"
    );
}

/// [`modelbench_cmd`] with `args`, run to completion.
pub fn modelbench(reports: &Path, args: &[&str]) -> Output {
    modelbench_cmd(reports).args(args).output().unwrap()
}

/// The exit code of a finished command and its stdout followed by its stderr.
pub fn code_and_output(o: &Output) -> (i32, String) {
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The run folder under `reports` whose name ends with `label` (`modelbench run --label`).
pub fn run_folder(reports: &Path, label: &str) -> std::path::PathBuf {
    std::fs::read_dir(reports)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(label))
        .unwrap_or_else(|| {
            panic!(
                "no run folder ending in {label} under {}",
                reports.display()
            )
        })
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `text` holds every one of `parts` (all of `text` in the message).
pub fn assert_contains_all(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "{p:?} is not in:\n{text}");
    }
}

/// A finished command's stdout then its stderr.
pub fn stdout_and_stderr(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Completions answered concurrently (`batched`, in request order) against the same requests
/// run one at a time (`alone`: their texts): the same greedy text and 10 tokens each, and at
/// least two of them shared a step.
pub fn assert_batched_as_alone(batched: Vec<serde_json::Value>, alone: &[String]) {
    let mut most = 0;
    for (i, v) in batched.iter().enumerate() {
        assert_eq!(
            v["choices"][0]["text"].as_str().unwrap(),
            alone[i],
            "request {i}"
        );
        assert_eq!(v["usage"]["completion_tokens"], 10);
        most = most.max(v["modelbench"]["batch_max"].as_u64().unwrap());
    }
    assert!(most >= 2, "concurrent requests never shared a step");
}

pub const FAMILIES: [&str; 4] = ["llama", "qwen3", "qwen3-moe", "gemma3"];

/// A fixture model in f32 on the CPU, built for up to 2048 positions.
pub fn fixture(family: &str) -> Loaded {
    let label = format!("fixture:{family}");
    let r = ModelRef::parse(&label).unwrap();
    let res = prepare(&label, &r, &[]).unwrap();
    open(res, &Device::Cpu, DType::F32, Some(2048)).unwrap()
}

/// The snapshot folder of a fixture (config.json, model.safetensors, tokenizer.json).
pub fn fixture_snapshot(family: &str) -> std::path::PathBuf {
    let fam: modelbench::models::Family = family.parse().unwrap();
    let (repo, rev) = modelbench::models::sources::ensure_fixture(fam).unwrap();
    modelbench::models::sources::cached_file(
        &modelbench::models::sources::fixture_cache_dir(),
        &repo,
        &rev,
        "config.json",
    )
    .unwrap()
    .parent()
    .unwrap()
    .to_path_buf()
}

/// One generation of scenario `s` (trial 0), prompt and sampler seeded with `seed`: one
/// iteration of the generation workload, as the benches and the CLI run it.
pub fn run_scenario(
    m: &mut Loaded,
    s: &modelbench::engine::scenario::Scenario,
    seed: u64,
) -> modelbench::engine::generate::Trace {
    use modelbench::workloads::Workload;
    let dtype = m.model.meta().dtype.clone();
    let mut w = modelbench::workloads::generation::Generation {
        loaded: m,
        scenario: s,
        seed,
        device: modelbench::measure::device::DeviceSpec::Cpu,
        dtype: modelbench::measure::device::parse_dtype(&dtype).unwrap_or(DType::F32),
        calibration: None,
        probe: None,
        ids: Default::default(),
        step_gate: None,
    };
    w.iterate(0).unwrap().1
}

pub fn logits(t: &candle_core::Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// Logits after a 20-token prefill and 4 single-token decode steps must equal those of one
/// fresh 24-token forward, within `tol` of the logit scale.
pub fn assert_kv_cache_exact(m: &mut dyn modelbench::models::CausalLm, what: &str, tol: f32) {
    let toks = modelbench::engine::generate::prompt_ids(24, m.meta().vocab, 3, 0);
    m.reset().unwrap();
    let full = logits(&m.forward(&toks, 0).unwrap());
    m.reset().unwrap();
    let mut inc = logits(&m.forward(&toks[..20], 0).unwrap());
    for i in 20..24 {
        inc = logits(&m.forward(&toks[i..i + 1], i).unwrap());
    }
    let scale = full.iter().fold(1e-3f32, |a, x| a.max(x.abs()));
    let diff = full
        .iter()
        .zip(&inc)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(
        diff <= tol * scale,
        "{what}: max |diff| {diff} at scale {scale}"
    );
}

/// Whether this runs as CI: `CI` set to anything but a false boolean (`0`, `false`, `no`,
/// `off`) or blank.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty()
            && !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            )
    })
}

/// A `MODELBENCH_REQUIRE_*` knob through the knob table's boolean parser (`true` counts as
/// `1`); None when unset. A value that is not a boolean fails the test naming the knob.
pub fn require_knob(name: &str) -> Option<bool> {
    modelbench::config::knobs::flag(&modelbench::config::knobs::env, name)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The one skip rule of the test suite (docs/testing.md, "Skips"): a test that cannot run
/// calls this and returns. It prints `skip: <test>: <what>: <cause>` on stderr and appends
/// that line to the file named by `MODELBENCH_SKIP_LOG` (`.ci/run` prints the file at its end),
/// or it panics, failing the test, when
/// - `knob` (a `MODELBENCH_REQUIRE_*` knob) is set true, or
/// - `CI` is set (see [`in_ci`]) and the cause is the project's: neither `outside_project`
///   nor `knob` set false (`.ci/run` sets a REQUIRE knob false only where its probe showed the
///   registry the missing thing comes from unreachable).
pub fn skip_or_fail(what: &str, cause: &str, outside_project: bool, knob: Option<&str>) {
    let test = std::thread::current()
        .name()
        .map(|n| format!("{}::{n}", env!("CARGO_CRATE_NAME")))
        .unwrap_or_else(|| env!("CARGO_CRATE_NAME").to_string());
    let line = format!("skip: {test}: {what}: {cause}");
    let knob_value = knob.and_then(require_knob);
    if knob_value == Some(true) {
        panic!(
            "{} is set, so this test may not skip; {line}",
            knob.unwrap_or_default()
        );
    }
    if in_ci() && !outside_project && knob_value != Some(false) {
        panic!(
            "CI is set and the cause is inside the project, so this test may not skip{}; {line}",
            knob.map(|k| format!(
                " (set {k}=0 only where the registry it comes from is unreachable)"
            ))
            .unwrap_or_default()
        );
    }
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("MODELBENCH_SKIP_LOG").filter(|v| !v.is_empty()) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| {
                panic!(
                    "MODELBENCH_SKIP_LOG={}: cannot append ({e}); {line}",
                    std::path::Path::new(&log).display()
                )
            });
        // One write per line: appends of concurrent tests do not interleave.
        f.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
}

/// [`skip_or_fail`] for a need a `MODELBENCH_REQUIRE_*` knob covers (the real model, llama.cpp,
/// valgrind, PostgreSQL).
pub fn skip_unless_required(knob: &str, what: &str, cause: &str) {
    skip_or_fail(what, cause, false, Some(knob))
}

/// Where scripts/build-llama-cpp.sh's build is ([`modelbench::util::llama_cpp::dir`]).
pub fn llama_cpp_dir() -> std::path::PathBuf {
    modelbench::util::llama_cpp::dir()
}

/// llama.cpp's program `name` (`llama-perplexity`, `test-backend-ops`, ...), or None after a
/// [`skip_unless_required`] with `MODELBENCH_REQUIRE_LLAMA_CPP`.
pub fn llama_cpp_program(name: &str) -> Option<std::path::PathBuf> {
    let p = llama_cpp_dir().join("bin").join(name);
    if p.is_file() {
        return Some(p);
    }
    skip_unless_required(
        "MODELBENCH_REQUIRE_LLAMA_CPP",
        "llama.cpp",
        &format!(
            "{} is not built (scripts/build-llama-cpp.sh, 10-25 min; or set LLAMA_CPP_DIR to a build)",
            p.display()
        ),
    );
    None
}

/// [`skip_unless_required`] for the real Gemma 3 270M (`MODELBENCH_REQUIRE_QUALITY`).
pub fn skip_real_model(cause: impl std::fmt::Display) {
    skip_unless_required(
        "MODELBENCH_REQUIRE_QUALITY",
        "the real Gemma 3 270M",
        &format!("not installed ({cause}); scripts/fetch-offline-models.sh installs it"),
    )
}

/// A model whose logits are NaN on the forward calls listed in `poisoned` (counted from 0
/// since the wrapper was made; a reset does not restart the count), and the model's own
/// otherwise: the injected change for the tests of the non-finite checks.
pub struct NanOn {
    pub inner: Box<dyn modelbench::models::CausalLm>,
    pub poisoned: Vec<usize>,
    pub calls: usize,
}

impl modelbench::models::CausalLm for NanOn {
    fn reset(&mut self) -> modelbench::models::Result<()> {
        self.inner.reset()
    }
    fn forward(
        &mut self,
        tokens: &[u32],
        pos: usize,
    ) -> modelbench::models::Result<candle_core::Tensor> {
        let l = self.inner.forward(tokens, pos)?;
        let k = self.calls;
        self.calls += 1;
        if self.poisoned.contains(&k) {
            return Ok((l * f64::NAN)?);
        }
        Ok(l)
    }
    fn meta(&self) -> &modelbench::models::ModelMeta {
        self.inner.meta()
    }
    fn device(&self) -> &candle_core::Device {
        self.inner.device()
    }
}

/// llama.cpp's converter's q/k row permutation (per head, rows `i` and `i + d/2` to `2i` and
/// `2i + 1`), written here apart from the code under test.
pub fn converter_permute(t: &candle_core::Tensor, heads: usize) -> candle_core::Tensor {
    let (rows, cols) = t.dims2().unwrap();
    let hd = rows / heads;
    t.reshape((heads, 2, hd / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

/// Writes a copy of a family's GGUF fixture into `dir` with its metadata and tensors edited.
pub fn rewrite(
    fam: modelbench::models::Family,
    dir: &Path,
    edit: impl FnOnce(
        &mut std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>,
        &mut Vec<(String, candle_core::quantized::QTensor)>,
    ),
) -> std::path::PathBuf {
    let src = modelbench::models::sources::gguf_fixture(fam).unwrap();
    rewrite_file(&src, dir, edit)
}

/// Writes a copy of the GGUF file `src` into `dir` with its metadata and tensors edited
/// (tensors sorted by name, as the fixture writer does).
pub fn rewrite_file(
    src: &Path,
    dir: &Path,
    edit: impl FnOnce(
        &mut std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>,
        &mut Vec<(String, candle_core::quantized::QTensor)>,
    ),
) -> std::path::PathBuf {
    let mut f = std::fs::File::open(src).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut tensors: Vec<(String, candle_core::quantized::QTensor)> = ct
        .tensor_infos
        .keys()
        .map(|n| (n.clone(), ct.tensor(&mut f, n, &Device::Cpu).unwrap()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut md = ct.metadata.clone();
    edit(&mut md, &mut tensors);
    let n = std::fs::read_dir(dir).unwrap().count();
    let out = dir.join(format!("edited-{n}.gguf"));
    let mdr: Vec<(&str, &candle_core::quantized::gguf_file::Value)> =
        md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tr: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = std::fs::File::create(&out).unwrap();
    candle_core::quantized::gguf_file::write(&mut w, &mdr, &tr).unwrap();
    out
}
