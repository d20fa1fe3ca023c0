//! Records the build a benchmark number came from: git commit and dirty flag, rustc
//! version, enabled cargo features, rustflags (target-cpu) and profile.

use std::process::Command;

#[path = "src/measure/candle_label.rs"]
mod candle_label;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = run("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // --no-optional-locks: a plain `git status` refreshes and rewrites .git/index, which this
    // script watches, so every build re-ran it and rebuilt the crate (71 s per `cargo bench`).
    let dirty = match run(
        "git",
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    ) {
        Some(s) => (!s.is_empty()).to_string(),
        None => "unknown".into(),
    };
    // A dirty tree's own identity: FNV-1a (64 bits) of `git diff HEAD` (tracked files), so two
    // different uncommitted trees never share a key (the quality verdicts' `<commit>+dirty`).
    let diff = if dirty == "true" {
        let out = Command::new("git")
            .args([
                "--no-optional-locks",
                "diff",
                "HEAD",
                "--no-ext-diff",
                "--binary",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout);
        match out {
            Some(bytes) => {
                let mut h: u64 = 0xcbf29ce484222325;
                for b in bytes {
                    h ^= b as u64;
                    h = h.wrapping_mul(0x100000001b3);
                }
                format!("{h:016x}")
            }
            None => "unknown".into(),
        }
    } else {
        String::new()
    };
    println!("cargo:rustc-env=BUILDINFO_GIT_DIFF={diff}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .collect();
    features.sort();
    let rustflags = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .unwrap_or_default()
        .replace('\x1f', " ");
    // The Candle the build resolved (Cargo.lock, or the label `compare --paired
    // --base-candle/--new-candle` gives its side builds), so runs from two Candles are never
    // compared as like for like.
    let given = std::env::var("MODELBENCH_CANDLE_SOURCE").ok();
    let candle = candle_label::label_from_lock(
        &std::fs::read_to_string("../../Cargo.lock").unwrap_or_default(),
        given.as_deref(),
    );
    println!("cargo:rerun-if-env-changed=MODELBENCH_CANDLE_SOURCE");
    println!("cargo:rustc-env=BUILDINFO_CANDLE={candle}");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let opt = std::env::var("OPT_LEVEL").unwrap_or_default();
    println!("cargo:rustc-env=BUILDINFO_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=BUILDINFO_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=BUILDINFO_RUSTC={rustc_version}");
    println!("cargo:rustc-env=BUILDINFO_FEATURES={}", features.join(","));
    println!("cargo:rustc-env=BUILDINFO_RUSTFLAGS={rustflags}");
    println!("cargo:rustc-env=BUILDINFO_PROFILE={profile} (opt-level {opt})");
    // A CUDA build also records the toolkit and the architecture its kernels target.
    let cuda = if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
        let release = run(&nvcc, &["--version"])
            .and_then(|v| {
                v.lines()
                    .find_map(|l| l.split("release ").nth(1))
                    .map(|r| r.split(',').next().unwrap_or(r).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "from nvidia-smi".into());
        format!("nvcc {release}, compute cap {cap}")
    } else {
        String::new()
    };
    println!("cargo:rustc-env=BUILDINFO_CUDA={cuda}");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    // Any edit of a tracked source re-runs this script, so `git_dirty` is true whenever the
    // sources compiled differ from HEAD (cargo scans a directory recursively by mtime).
    // The workspace root is two folders up (crates/measure): this crate's build script
    // records the build of the whole workspace.
    for p in [
        "../../src",
        "../../crates",
        "../../benches",
        "../../tests",
        "../../Cargo.toml",
        "../../Cargo.lock",
        "../../fixtures",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    // The git files that change with a commit, a checkout or staging, where they are: in a
    // worktree .git is a file and they live in .git/worktrees/<name>/ (a watched path that
    // does not exist would re-run this script on every build).
    if let Some(dir) = run("git", &["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "index", "logs/HEAD"] {
            let p = std::path::Path::new(&dir).join(f);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
}
