//! Issue 48's cheap parts (no cargo build, no criterion): the `--base-candle` / `--new-candle`
//! spec parsing, the crates and the label a folder resolves to (git commit and dirty state,
//! or a content hash), the `[patch.crates-io]` `--config` values and the Cargo.toml
//! requirement rewrite, the one-line build error from captured rustc output, and the candle
//! label every record's build section carries. The full two-build flow (two release builds
//! of the suite and a paired run) is too slow for `cargo test`: docs/verdicts.md.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_bad_input, modelbench};

use modelbench::measure::candle_source::{
    caret_matches, crates_in, first_build_error, label_from_lock, manifest_with_requirement,
    missing_item, parse_spec, patch_args, resolve, CandleSpec,
};

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn crate_dir(dir: &Path, name: &str, version: &str) {
    write(
        &dir.join("Cargo.toml"),
        &format!("[package]\nedition = \"2021\"\nname = \"{name}\"\nversion = \"{version}\"\n\n[dependencies]\nfoo = \"1\"\n"),
    );
    write(&dir.join("src/lib.rs"), "pub fn f() {}\n");
}

/// `git -C dir ARGS` (with a committer) must succeed.
fn git_in(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.email=t@t", "-c", "user.name=t"])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

#[test]
fn specs_parse_to_versions_or_folders_and_bad_ones_are_one_clear_line() {
    assert_eq!(
        parse_spec("0.10.2").unwrap(),
        CandleSpec::Version("0.10.2".into())
    );
    assert_eq!(
        parse_spec("=0.11.1").unwrap(),
        CandleSpec::Version("0.11.1".into())
    );
    assert_eq!(
        parse_spec("0.12.0-alpha.1").unwrap(),
        CandleSpec::Version("0.12.0-alpha.1".into())
    );
    let tmp = tempfile::tempdir().unwrap();
    match parse_spec(tmp.path().to_str().unwrap()).unwrap() {
        CandleSpec::Path(p) => assert!(p.is_absolute()),
        other => panic!("{other:?}"),
    }
    let missing = tmp.path().join("no-such-candle");
    let e = parse_spec(missing.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-candle") && e.contains("no such folder"),
        "{e}"
    );
    assert!(e.contains("0.11.1"), "the fix names a version form: {e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let file = tmp.path().join("f.txt");
    write(&file, "x");
    let e = parse_spec(file.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("not a folder"), "{e}");
    assert!(parse_spec("  ").is_err());
}

#[test]
fn a_folder_resolves_to_its_candle_crates_or_says_it_is_not_a_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    // A checkout's layout: candle-core/, candle-nn/, candle-transformers/ (+ others).
    let co = tmp.path().join("candle");
    crate_dir(&co.join("candle-core"), "candle-core", "0.11.1");
    crate_dir(&co.join("candle-nn"), "candle-nn", "0.11.1");
    crate_dir(
        &co.join("candle-transformers"),
        "candle-transformers",
        "0.11.1",
    );
    crate_dir(&co.join("candle-examples"), "candle-examples", "0.11.1");
    let found = crates_in(&co).unwrap();
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["candle-core", "candle-nn", "candle-transformers"]);
    // A copied registry crate: the folder is the crate.
    let one = tmp.path().join("candle-core-0.11.1");
    crate_dir(&one, "candle-core", "0.11.1");
    let src = resolve(&parse_spec(one.to_str().unwrap()).unwrap()).unwrap();
    assert_eq!(src.version, "0.11.1");
    assert_eq!(src.crates.len(), 1);
    assert!(src.label.contains("(content "), "{}", src.label);
    assert!(src.label.contains("candle-core-0.11.1"), "{}", src.label);
    // The content hash follows the content.
    let before = src.label.clone();
    write(&one.join("src/lib.rs"), "pub fn f() { /* slower */ }\n");
    let after = resolve(&src.spec).unwrap().label;
    assert_ne!(before, after);
    assert_eq!(
        src.key,
        resolve(&src.spec).unwrap().key,
        "the cache key is the path's"
    );
    // A kept build is the content's: an edited copy is built again.
    assert_ne!(src.build_key(), resolve(&src.spec).unwrap().build_key());
    assert!(src.build_key().starts_with(&format!("{}-", src.key)));
    // Not a candle folder.
    let other = tmp.path().join("other");
    crate_dir(&other, "serde", "1.0.0");
    let e = resolve(&parse_spec(other.to_str().unwrap()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a Candle checkout"), "{e}");
    assert!(e.contains("other"), "names the folder: {e}");
}

#[test]
fn a_git_checkout_is_labelled_by_commit_and_dirty_state() {
    let tmp = tempfile::tempdir().unwrap();
    let co = tmp.path().join("candle");
    crate_dir(&co.join("candle-core"), "candle-core", "0.11.1");
    let git = |args: &[&str]| git_in(&co, args);
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "x"]);
    let spec = parse_spec(co.to_str().unwrap()).unwrap();
    let clean = resolve(&spec).unwrap();
    assert!(clean.label.contains("(git "), "{}", clean.label);
    assert!(!clean.label.contains("dirty"), "{}", clean.label);
    write(
        &co.join("candle-core/src/lib.rs"),
        "pub fn f() { loop {} }\n",
    );
    let dirty = resolve(&spec).unwrap();
    assert!(dirty.label.contains(", dirty "), "{}", dirty.label);
    assert_ne!(clean.label, dirty.label);
}

#[test]
fn patch_config_and_requirement_rewrite() {
    let tmp = tempfile::tempdir().unwrap();
    let co = tmp.path().join("candle");
    crate_dir(&co.join("candle-core"), "candle-core", "0.11.1");
    crate_dir(&co.join("candle-nn"), "candle-nn", "0.11.1");
    let src = resolve(&parse_spec(co.to_str().unwrap()).unwrap()).unwrap();
    let args = patch_args(&src);
    let canon = std::fs::canonicalize(&co).unwrap();
    assert_eq!(
        args,
        [
            format!(
                "patch.crates-io.candle-core.path=\"{}\"",
                canon.join("candle-core").display()
            ),
            format!(
                "patch.crates-io.candle-nn.path=\"{}\"",
                canon.join("candle-nn").display()
            ),
        ]
    );
    let manifest = "[dependencies]\ncandle-core = \"0.11.1\"\ncandle-nn = \"0.11.1\"\ncandle-transformers = \"0.11.1\"\nhalf = \"2\"\n\n[features]\ncuda = [\"candle-core/cuda\"]\n";
    // A path at a version ^0.11.1 accepts: the manifest stays.
    assert_eq!(manifest_with_requirement(manifest, &src), None);
    // A crates.io release: =VERSION on the three crates only; no patch.
    let v = resolve(&CandleSpec::Version("0.10.2".into())).unwrap();
    assert!(patch_args(&v).is_empty());
    assert_eq!(v.label, "0.10.2 (crates.io)");
    let m = manifest_with_requirement(manifest, &v).unwrap();
    assert!(m.contains("candle-core = \"=0.10.2\"\ncandle-nn = \"=0.10.2\"\ncandle-transformers = \"=0.10.2\"\nhalf = \"2\""), "{m}");
    assert!(m.contains("cuda = [\"candle-core/cuda\"]"), "{m}");
    let same = resolve(&CandleSpec::Version("0.11.1".into())).unwrap();
    assert_eq!(manifest_with_requirement(manifest, &same), None);
    // A path at a version the caret requirement refuses: =VERSION so the patch is used.
    let newer = tmp.path().join("candle-next");
    crate_dir(&newer.join("candle-core"), "candle-core", "0.12.0");
    let n = resolve(&parse_spec(newer.to_str().unwrap()).unwrap()).unwrap();
    let m = manifest_with_requirement(manifest, &n).unwrap();
    assert!(m.contains("candle-core = \"=0.12.0\""), "{m}");
    assert!(caret_matches("0.11.1", "0.11.3"));
    assert!(!caret_matches("0.11.1", "0.11.0"));
    assert!(!caret_matches("0.11.1", "0.12.0"));
    assert!(!caret_matches("0.11.1", "0.12.0-alpha.1"));
    assert!(caret_matches("1.2.0", "1.9.0"));
}

/// The head of a real failure (captured 2026-11-25 from `compare f6ed16e f6ed16e --paired
/// --base-candle 0.10.2 ...`, target/paired/candle-build-v0.10.2.log): the suite calls candle
/// 0.11's API.
const RUSTC_OUT: &str = r#"   Compiling candle-transformers v0.10.2
   Compiling nvml-wrapper v0.13.0
error[E0425]: cannot find function `barrier_pool` in module `candle_core::utils`
  --> src/models/host_ops.rs:71:25
   |
71 |     candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
   |                         ^^^^^^^^^^^^ not found in `candle_core::utils`

error[E0599]: no method named `clear_kv_cache` found for mutable reference `&mut candle_transformers::models::quantized_llama::ModelWeights` in the current scope
error: could not compile `modelbench` (lib) due to 5 previous errors
"#;

#[test]
fn a_failed_build_is_one_line_naming_the_candle_and_the_first_missing_item() {
    let l = first_build_error(RUSTC_OUT, "0.10.2 (crates.io)");
    assert_eq!(
        l,
        "the suite does not build against Candle 0.10.2 (crates.io): first missing item `candle_core::utils::barrier_pool`: error[E0425]: cannot find function `barrier_pool` in module `candle_core::utils` at src/models/host_ops.rs:71:25"
    );
    assert_eq!(l.lines().count(), 1);
    assert_eq!(
        missing_item("error[E0599]: no method named `repack` found for struct `QTensor` in the current scope").as_deref(),
        Some("repack")
    );
    assert_eq!(
        missing_item("error[E0432]: unresolved import `candle_core::quantized::repack`").as_deref(),
        Some("candle_core::quantized::repack")
    );
    // A syntax error in the Candle source (a commit that does not build): no missing item.
    let l = first_build_error(
        "   Compiling candle-nn v0.11.1 (/x/candle-nn)\nerror: expected one of `!` or `::`, found `does`\n --> /x/candle-nn/src/lib.rs:40:6\n",
        "0.11.1 path /x (git 0123456789ab; candle-nn)",
    );
    assert_eq!(
        l,
        "the suite does not build against Candle 0.11.1 path /x (git 0123456789ab; candle-nn): error: expected one of `!` or `::`, found `does` at /x/candle-nn/src/lib.rs:40:6"
    );
    // No compiler error: cargo's own (an unknown release).
    let l = first_build_error(
        "    Updating crates.io index\nerror: failed to select a version for the requirement `candle-core = \"=0.99.0\"`\ncandidate versions found which didn't match: 0.11.1\n",
        "0.99.0 (crates.io)",
    );
    assert!(
        l.contains("0.99.0 (crates.io)") && l.contains("failed to select a version"),
        "{l}"
    );
    assert_eq!(l.lines().count(), 1);
}

#[test]
fn records_name_the_candle_source() {
    let lock = "[[package]]\nname = \"candle-core\"\nversion = \"0.11.1\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"ab\"\n\n[[package]]\nname = \"candle-nn\"\nversion = \"0.11.1\"\n";
    assert_eq!(label_from_lock(lock, None), "0.11.1");
    let patched = "[[package]]\nname = \"candle-core\"\nversion = \"0.11.1\"\ndependencies = [\n \"half\",\n]\n\n[[package]]\nname = \"x\"\nsource = \"registry+https://x\"\n";
    assert_eq!(label_from_lock(patched, None), "0.11.1 (local path)");
    assert_eq!(
        label_from_lock(
            lock,
            Some("0.11.1 path /x (git 0123456789ab, dirty 1234abcd; candle-core)")
        ),
        "0.11.1 path /x (git 0123456789ab, dirty 1234abcd; candle-core)"
    );
    assert_eq!(label_from_lock("", None), "unknown");
    // This very build: the default build reads candle's version from Cargo.lock.
    let b = modelbench::measure::hardware::build();
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    if std::env::var_os("MODELBENCH_CANDLE_SOURCE").is_none() {
        assert_eq!(b.candle, label_from_lock(&lock, None));
    }
    // Two Candles under one commit are not comparable.
    let mut other = b.clone();
    other.candle = "0.10.2 (crates.io)".into();
    let d = b.differences(&other);
    assert!(d.iter().any(|x| x.starts_with("candle:")), "{d:?}");
}

/// `bisect --candle-repo` and `ops --candle` / `ops --base`: bad input is one line, exit 2,
/// before anything is built or measured.
#[test]
fn candle_bisect_and_ops_bad_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("reports");
    let co = tmp.path().join("candle");
    crate_dir(&co.join("candle-core"), "candle-core", "0.11.1");
    let git = |args: &[&str]| git_in(&co, args);
    git(&["init", "-q"]);
    for i in 0..2 {
        write(&co.join("candle-core/src/lib.rs"), &format!("// {i}\n"));
        git(&["add", "."]);
        git(&["commit", "-q", "-m", &format!("change {i}")]);
    }
    let repo = co.to_str().unwrap();
    let bisect = |good: &str, more: &[&str]| {
        let mut a = vec!["bisect", good, "HEAD", "--candle-repo", repo];
        a.extend_from_slice(if more.is_empty() {
            &["--bench", "short"]
        } else {
            more
        });
        modelbench(&r, &a)
    };
    assert_bad_input(
        &modelbench(
            &r,
            &[
                "bisect",
                "a",
                "b",
                "--candle-repo",
                "/no/such/candle",
                "--bench",
                "short",
            ],
        ),
        "--candle-repo `/no/such/candle`: no such folder",
    );
    assert_bad_input(
        &bisect("v9.9.9", &[]),
        "GOOD `v9.9.9`: no such commit in the Candle repository",
    );
    assert_bad_input(&bisect("HEAD", &[]), "no commits in GOOD..BAD");
    assert_bad_input(
        &bisect("HEAD~1", &["--bench", "short", "--build", "make"]),
        "--build: a Candle bisection builds",
    );
    assert_bad_input(
        &bisect("HEAD~1", &["--bench", "moe/x"]),
        "--bench `moe/x`: --paired needs a generation benchmark",
    );
    let ops = |flag: &str, value: &str| {
        modelbench(&r, &["ops", "--model", "gguf:fixture:gemma3", flag, value])
    };
    assert_bad_input(
        &ops("--candle", "/no/such/candle"),
        "--candle: candle source `/no/such/candle`: no such folder",
    );
    // A base table of another model: refused before measuring.
    let base = tmp.path().join("base.json");
    write(
        &base,
        r#"{"model": "gguf:other", "phase": "decode", "tokens": 1, "depth": 320,
        "threads": "rayon=2, matmul=2", "step_us": 100.0, "step_ci_us": null,
        "step_samples": 2, "rows": [], "roofs": {"mem_read_gbs": null, "matmul_gflops": null},
        "injected": null, "candle": "0.11.0 (crates.io)"}"#,
    );
    assert_bad_input(
        &ops("--base", base.to_str().unwrap()),
        "a table of model `gguf:other`, not `gguf:fixture:gemma3`",
    );
    assert!(!r.exists(), "nothing written");
}
