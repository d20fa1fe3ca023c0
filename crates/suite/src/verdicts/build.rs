//! Builds of the two sides of an A/B comparison: a side is an executable, or a commit or
//! branch of this repository built once (in a git worktree under target/paired/, optionally
//! against another Candle, issue 48) and kept; and the git helpers the comparisons share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::app::Context;
use crate::measure::candle_source::{self, CandleSource};
use crate::{Error, Result};

/// `git rev-parse --verify REF^{commit}`: the full hash, or None when git does not know it.
pub fn rev_parse(r: &str) -> Option<String> {
    let out = Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{r}^{{commit}}"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `git ARGS...` in the current directory: its trimmed stdout, or a one-line error with
/// git's own message.
pub fn git(args: &[&str]) -> Result<String> {
    git_at(Path::new("."), args)
}

/// `git -C DIR ARGS...`: as [`git`], in the repository of `dir`.
pub fn git_at(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| fail!("git: cannot start it: {e}"))?;
    ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit a command that builds this repository against other Candles builds: HEAD,
/// with a note when the checkout has uncommitted changes (they are not in the build); outside
/// a git checkout, one line naming `what`.
pub fn head_to_build(what: &str) -> Result<String> {
    let head = rev_parse("HEAD").ok_or_else(|| {
        fail!("{what}: run it inside this suite's git checkout (its HEAD is what is built against each Candle)")
    })?;
    if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        eprintln!(
            "note: this checkout has uncommitted changes; the builds are of its HEAD ({}) without them",
            &head[..10]
        );
    }
    Ok(head)
}

/// What a side names: an executable file, or a commit (resolved once, before anything is
/// built, so `HEAD HEAD` stays one commit even when HEAD moves during the build).
#[derive(Debug)]
pub enum Side {
    Exe(PathBuf),
    Commit { name: String, commit: String },
}

/// Resolves a side: a path to a file as is, else a commit or branch.
pub fn resolve(r: &Path, side: &str) -> Result<Side> {
    if r.is_file() {
        return Ok(Side::Exe(r.to_path_buf()));
    }
    let name = r.display().to_string();
    let commit = rev_parse(&name).ok_or_else(|| {
        fail!("{side} `{name}`: not an executable, and `git rev-parse` knows no such commit or branch here")
    })?;
    Ok(Side::Commit { name, commit })
}

/// An executable for a side: a path to a file as is, else a commit/branch built once.
pub fn executable(r: &Path, side: &str) -> Result<(PathBuf, String)> {
    build_side(resolve(r, side)?, side)
}

/// `git worktree add --detach --force WT COMMIT`.
fn add_worktree(wt: &Path, commit: &str) -> Result<()> {
    let st = Command::new("git")
        .args(["worktree", "add", "--detach", "--force"])
        .arg(wt)
        .arg(commit)
        .status()
        .context("git")?;
    ensure!(
        st.success(),
        "git worktree add {} {commit} failed",
        wt.display()
    );
    Ok(())
}

/// The executable of a resolved side (a commit is built once, then kept).
pub fn build_side(s: Side, side: &str) -> Result<(PathBuf, String)> {
    let (name, commit) = match s {
        Side::Exe(p) => {
            let n = p.display().to_string();
            return Ok((p, n));
        }
        Side::Commit { name, commit } => (name, commit),
    };
    let root = crate::util::fsio::target_dir().join("paired");
    let bin = root.join("bin").join(&commit).join("modelbench");
    if bin.is_file() {
        return Ok((bin, format!("{name} ({})", &commit[..10])));
    }
    let wt = root.join(&commit);
    if !wt.join("Cargo.toml").is_file() {
        add_worktree(&wt, &commit)?;
    }
    eprintln!(
        "building {name} ({}) in {} ...",
        &commit[..10],
        wt.display()
    );
    // From the repository's top, as a Candle side builds: the same rustflags (one
    // .cargo/config.toml read), so both kinds of side share the target dir's dependencies.
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--bin",
            "modelbench",
            "--manifest-path",
        ])
        .arg(wt.join("Cargo.toml"))
        .current_dir(repo_top(&wt))
        .env("CARGO_TARGET_DIR", root.join("target"))
        .status()
        .context("cannot start cargo")?;
    ensure!(
        st.success(),
        "{side} `{name}`: cargo build --release failed"
    );
    let built = root.join("target/release/modelbench");
    let dir = bin.parent().expect("parent");
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    std::fs::copy(&built, &bin).map_err(Error::io(&built))?;
    Ok((bin, format!("{name} ({})", &commit[..10])))
}

/// Where a side's cargo runs: the repository's top folder, so cargo reads one
/// .cargo/config.toml (from a worktree under target/ it would join the checkout's rustflags
/// to the worktree's own, and every dependency would build again under other flags). When
/// the worktree's commit has another .cargo/config.toml than the checkout, says that the
/// checkout's is the one used.
fn repo_top(wt: &Path) -> PathBuf {
    let top = git(&["rev-parse", "--show-toplevel"])
        .ok()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("."));
    let config = |d: &Path| std::fs::read(d.join(".cargo/config.toml")).ok();
    if config(wt) != config(&top) {
        eprintln!(
            "note: {} has another .cargo/config.toml than this checkout; the build uses this checkout's ({})",
            wt.display(),
            top.join(".cargo/config.toml").display()
        );
    }
    top
}

/// A `--base-candle` / `--new-candle` value resolved (its folder read, its git state or
/// content hashed), or None when the flag is absent.
pub fn candle_source(spec: Option<&str>, flag: &str) -> Result<Option<CandleSource>> {
    let Some(s) = spec else { return Ok(None) };
    let src = candle_source::parse_spec(s)
        .and_then(|p| candle_source::resolve(&p))
        .map_err(|e| fail!("{flag}: {e}"))?;
    Ok(Some(src))
}

/// A side's executable: as [`build_side`], or, with a Candle source, the commit built
/// against that Candle.
pub fn build_side_with(
    s: Side,
    side: &str,
    candle: Option<&CandleSource>,
) -> Result<(PathBuf, String)> {
    match (s, candle) {
        (s, None) => build_side(s, side),
        (Side::Exe(p), Some(_)) => bail!(
            "{side} `{}` is an executable; --{}-candle needs {side} to be a commit or branch of this repository (it builds that commit against the Candle given)",
            p.display(),
            side.to_ascii_lowercase()
        ),
        (Side::Commit { name, commit }, Some(c)) => build_candle_side(&name, &commit, c, side),
    }
}

/// Builds `commit` of the suite against the Candle `src` (issue 48): a git worktree of the
/// commit per Candle source (target/paired/candle/<key>/), its Cargo.toml's candle
/// requirement set to `=VERSION` where the source needs it, cargo's `[patch.crates-io]` for a
/// path given with `--config`, all sides sharing one target dir (target/paired/target) so
/// cargo's own fingerprints rebuild only what the Candle source changes. Prints what cargo
/// compiled and how long it took; a failed build is one line naming the Candle source and
/// the first missing item.
fn build_candle_side(
    name: &str,
    commit: &str,
    src: &CandleSource,
    side: &str,
) -> Result<(PathBuf, String)> {
    let root = crate::util::fsio::target_dir().join("paired");
    let bin = root
        .join("bin")
        .join(format!("candle-{}-{}", src.build_key(), &commit[..12]))
        .join("modelbench");
    let label = format!("{name} ({}) + Candle {}", &commit[..10], src.label);
    // The build key names the Candle source's content (a release, a git hash and dirty state,
    // or a copied crate's content hash), so a kept build of this commit against it is that build:
    // no cargo run (which would rebuild the suite's crates each time the other side, built
    // against another Candle, had been built in between).
    if bin.is_file() {
        println!(
            "{side}: {name} ({}) against Candle {}: built before, kept ({})",
            &commit[..10],
            src.label,
            bin.display()
        );
        return Ok((bin, label));
    }
    let wt = root.join("candle").join(&src.key);
    // Only a worktree at another commit is checked out: a checkout, even of the same commit,
    // writes the worktree's HEAD and reflog, which build.rs watches, and cargo would then
    // rebuild the suite on every run.
    let at = Command::new("git")
        .arg("-C")
        .arg(&wt)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let exists = wt.join("Cargo.toml").is_file();
    if exists && at.as_deref() != Some(commit) {
        let st = Command::new("git")
            .arg("-C")
            .arg(&wt)
            .args(["checkout", "--quiet", "--detach", "--force", commit])
            .status()
            .context("git")?;
        ensure!(
            st.success(),
            "git -C {} checkout {commit} failed",
            wt.display()
        );
    } else if !exists {
        let dir = wt.parent().expect("parent");
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        add_worktree(&wt, commit)?;
    }
    let manifest = wt.join("Cargo.toml");
    // The commit's own manifest, then the requirement this source needs; written only when
    // it differs from what is there (cargo and build.rs watch its mtime).
    let committed = Command::new("git")
        .arg("-C")
        .arg(&wt)
        .args(["show", &format!("{commit}:Cargo.toml")])
        .output()
        .context("git show")?;
    ensure!(
        committed.status.success(),
        "git show {commit}:Cargo.toml failed"
    );
    let text = String::from_utf8_lossy(&committed.stdout).to_string();
    let (want, req_note) = match candle_source::manifest_with_requirement(&text, src) {
        Some(m) => (
            m,
            format!(", Cargo.toml's candle requirement set to ={}", src.version),
        ),
        None => (text, String::new()),
    };
    if std::fs::read_to_string(&manifest).ok().as_deref() != Some(want.as_str()) {
        std::fs::write(&manifest, &want).map_err(Error::io(&manifest))?;
    }
    let top = repo_top(&wt);
    eprintln!(
        "building {name} ({}) against Candle {} in {}{req_note} ...",
        &commit[..10],
        src.label,
        wt.display()
    );
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args([
        "build",
        "--release",
        "--bin",
        "modelbench",
        "--manifest-path",
    ])
    .arg(&manifest);
    for p in candle_source::patch_args(src) {
        c.arg("--config").arg(p);
    }
    // From the repository's top: cargo reads .cargo/config.toml once (a cwd inside the
    // worktree, itself under the repository, would join both files' rustflags).
    c.current_dir(&top)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env("MODELBENCH_CANDLE_SOURCE", &src.label)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = std::time::Instant::now();
    let mut child = c.spawn().context("cannot start cargo")?;
    let mut log = String::new();
    let mut compiled = Vec::new();
    if let Some(err) = child.stderr.take() {
        for l in BufReader::new(err).lines() {
            let l = l.context("cargo's output")?;
            if let Some(what) = l.trim_start().strip_prefix("Compiling ") {
                eprintln!("  {side}: compiling {what}");
                compiled.push(what.split(" (").next().unwrap_or(what).to_string());
            }
            log.push_str(&l);
            log.push('\n');
        }
    }
    let st = child.wait().context("cargo")?;
    let secs = t0.elapsed().as_secs_f64();
    if !st.success() {
        let _ = std::fs::write(root.join(format!("candle-build-{}.log", src.key)), &log);
        bail!(
            "{side}: {}",
            candle_source::first_build_error(&log, &src.label)
        );
    }
    println!(
        "{side}: {name} ({}) against Candle {}: {}",
        &commit[..10],
        src.label,
        rebuilt_line(&compiled, secs)
    );
    let dir = bin.parent().expect("parent");
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    // Copied beside it, then renamed over it: the old file may be running (another
    // comparison's worker), and writing into a running executable fails (ETXTBSY).
    let tmp = bin.with_extension(format!("tmp{}", std::process::id()));
    let built = root.join("target/release/modelbench");
    std::fs::copy(&built, &tmp).map_err(Error::io(&built))?;
    std::fs::rename(&tmp, &bin).map_err(Error::io(&bin))?;
    Ok((bin, label))
}

/// What a side's cargo build did, in words: the crates it compiled and the time.
pub fn rebuilt_line(compiled: &[String], secs: f64) -> String {
    if compiled.is_empty() {
        format!("nothing rebuilt (cargo's fingerprints: up to date), {secs:.1} s")
    } else {
        format!(
            "cargo rebuilt {} crate(s) in {secs:.0} s: {}",
            compiled.len(),
            compiled.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rev_parse_knows_head_and_not_a_made_up_ref() {
        // Unit tests run inside the repository (the crate's folder).
        let head = rev_parse("HEAD").expect("HEAD of this checkout");
        assert_eq!(head.len(), 40);
        assert!(head.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(rev_parse("no-such-branch-of-modelbench"), None);
        assert_eq!(git(&["rev-parse", "HEAD"]).unwrap(), head);
        assert!(
            git(&["rev-parse", "--verify", "no-such-branch-of-modelbench"])
                .unwrap_err()
                .to_string()
                .starts_with("git rev-parse --verify no-such-branch-of-modelbench:")
        );
    }

    #[test]
    fn a_side_is_a_file_as_is_else_a_commit() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let (exe, name) = executable(f.path(), "BASE").unwrap();
        assert_eq!(exe, f.path());
        assert_eq!(name, f.path().display().to_string());
        match resolve(Path::new("HEAD"), "BASE").unwrap() {
            Side::Commit { name, commit } => {
                assert_eq!(name, "HEAD");
                assert_eq!(Some(commit), rev_parse("HEAD"));
            }
            Side::Exe(_) => panic!("HEAD is a commit"),
        }
        let e = resolve(Path::new("no-such-branch-of-modelbench"), "NEW").unwrap_err();
        assert_eq!(
            e.to_string(),
            "NEW `no-such-branch-of-modelbench`: not an executable, and `git rev-parse` knows no such commit or branch here"
        );
    }

    #[test]
    fn an_executable_side_cannot_take_a_candle() {
        let c = candle_source(None, "--base-candle").unwrap();
        assert!(c.is_none());
        let e = candle_source(Some(""), "--base-candle");
        assert!(e.is_err_and(|e| e.to_string().starts_with("--base-candle: ")));
    }

    #[test]
    fn the_rebuild_line_names_what_cargo_compiled() {
        assert_eq!(
            rebuilt_line(&[], 1.26),
            "nothing rebuilt (cargo's fingerprints: up to date), 1.3 s"
        );
        assert_eq!(
            rebuilt_line(
                &["candle-core v0.11.1".into(), "modelbench v0.1.0".into()],
                61.4
            ),
            "cargo rebuilt 2 crate(s) in 61 s: candle-core v0.11.1, modelbench v0.1.0"
        );
    }
}
