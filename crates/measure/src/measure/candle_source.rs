//! The Candle a build measures (issue 48): a crates.io release or a local copy/checkout of
//! Candle's crates, so `compare --paired --base-candle X --new-candle Y` can build this commit
//! of the suite twice, once against each, and say which op moved.
//!
//! - [`parse_spec`]: `0.10.2` is a crates.io version; anything else is a path to a Candle git
//!   checkout (its `candle-core/`, `candle-nn/`, `candle-transformers/`), to a folder holding
//!   copies of those crates (e.g. `candle-core-0.11.1/` as in cargo's registry), or to one
//!   crate's own folder (a copied `candle-core`: candle-nn and candle-transformers then come
//!   from crates.io and use it).
//! - [`resolve`]: the crates of a path, their version, and the label every record of that
//!   build carries (`path /x/candle (git 1a2b3c4d5e6f, dirty)`, or a content hash when the
//!   folder is not a git checkout).
//! - [`patch_args`]: the `cargo --config 'patch.crates-io.<crate>.path="..."'` arguments;
//!   [`manifest_with_requirement`]: the suite's Cargo.toml with the candle requirements set to
//!   `=VERSION` (a crates.io version, or a path whose version `^0.11.1` does not accept:
//!   cargo ignores a `[patch]` its requirement does not match).
//! - [`first_build_error`]: rustc's first `error[E...]` of a failed build as one line naming
//!   the Candle source and the first missing item.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The Candle crates a source may replace, in the order they are patched.
pub const CRATES: [&str; 3] = ["candle-core", "candle-nn", "candle-transformers"];

/// What a `--base-candle` / `--new-candle` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandleSpec {
    /// A crates.io release, e.g. `0.10.2`.
    Version(String),
    /// A folder (made absolute).
    Path(PathBuf),
}

/// A resolved Candle source: what to patch, and how records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandleSource {
    pub spec: CandleSpec,
    /// candle-core's version (of the path's crates: the first one found).
    pub version: String,
    /// (crate name, its folder) for a path; empty for a crates.io version.
    pub crates: Vec<(String, PathBuf)>,
    /// `0.10.2 (crates.io)`, or `path <abs> (git <12 hex>[, dirty <8 hex of the diff>])`,
    /// or `path <abs> (content <12 hex>)`: what `build.candle` of every record says.
    pub label: String,
    /// A short stable name for the build's cache folder: the version, or a hash of the path.
    pub key: String,
}

fn bad(spec: &str, why: impl std::fmt::Display) -> Error {
    Error::CandleSource(format!("candle source `{spec}`: {why}"))
}

/// Whether `s` reads as a semver version (`0.10.2`, `0.12.0-alpha.1`).
pub fn is_version(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Parses a spec: a version (`0.10.2`, `=0.10.2`, `v0.10.2`) or an existing folder.
pub fn parse_spec(s: &str) -> Result<CandleSpec> {
    let t = s.trim();
    if t.is_empty() {
        return Err(bad(
            s,
            "empty; give a crates.io version (0.11.1) or the folder of a Candle checkout",
        ));
    }
    let v = t.trim_start_matches('=').trim_start_matches('v');
    if is_version(v) && !Path::new(t).exists() {
        return Ok(CandleSpec::Version(v.to_string()));
    }
    let p = Path::new(t);
    if !p.exists() {
        return Err(bad(
            s,
            "no such folder, and not a version (give a crates.io version such as 0.11.1, or the folder of a Candle checkout)",
        ));
    }
    if !p.is_dir() {
        return Err(bad(
            s,
            "not a folder (give the folder of a Candle checkout, or of a copied candle-core crate)",
        ));
    }
    let abs = std::fs::canonicalize(p).map_err(|e| bad(s, e))?;
    Ok(CandleSpec::Path(abs))
}

/// `name` and `version` of a Cargo.toml's `[package]` (a `version.workspace = true` is read
/// from the `[workspace.package]` of the nearest parent manifest that has one).
pub fn package_of(manifest: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let name = section_value(&text, "package", "name")?;
    let version = match section_value(&text, "package", "version") {
        Some(v) => v,
        None => {
            let mut dir = manifest.parent()?.parent();
            let mut found = None;
            while let Some(d) = dir {
                if let Ok(t) = std::fs::read_to_string(d.join("Cargo.toml")) {
                    if let Some(v) = section_value(&t, "workspace.package", "version") {
                        found = Some(v);
                        break;
                    }
                }
                dir = d.parent();
            }
            found?
        }
    };
    Some((name, version))
}

/// A plain string `key = "value"` of a TOML `[section]` (enough for Cargo.toml's package
/// name and version; `version.workspace = true` is not a string and gives None).
fn section_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            inside = l.trim_matches(|c| c == '[' || c == ']').trim() == section;
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        if k.trim() == key {
            let v = v.trim();
            if let Some(v) = v.strip_prefix('"').and_then(|v| v.split('"').next()) {
                return Some(v.to_string());
            }
            return None;
        }
    }
    None
}

/// The Candle crates of a folder: the folder itself when its Cargo.toml is one of them,
/// else those among its immediate subfolders (a checkout's `candle-core/`, a copy's
/// `candle-core-0.11.1/`), at most one of each name (two copies of one crate is an error).
pub fn crates_in(dir: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let spec = dir.display().to_string();
    if let Some((n, v)) = package_of(&dir.join("Cargo.toml")) {
        if CRATES.contains(&n.as_str()) {
            return Ok(vec![(n, v, dir.to_path_buf())]);
        }
    }
    let mut found: Vec<(String, String, PathBuf)> = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(&spec, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for sub in entries {
        if let Some((n, v)) = package_of(&sub.join("Cargo.toml")) {
            if !CRATES.contains(&n.as_str()) {
                continue;
            }
            if let Some(prev) = found.iter().find(|f| f.0 == n) {
                return Err(bad(
                    &spec,
                    format!(
                        "two copies of {n} ({} and {}); keep one",
                        prev.2.display(),
                        sub.display()
                    ),
                ));
            }
            found.push((n, v, sub));
        }
    }
    if found.is_empty() {
        return Err(bad(
            &spec,
            "not a Candle checkout: no candle-core, candle-nn or candle-transformers crate in it or in its subfolders (give the folder of a Candle git checkout, or of a copied candle-core crate)",
        ));
    }
    found.sort_by_key(|f| CRATES.iter().position(|c| *c == f.0));
    Ok(found)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}

fn hex(d: &[u8], n: usize) -> String {
    d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(n)
        .collect()
}

/// sha256 over the files under `dirs` (relative path and bytes, sorted; `target/` and `.git/`
/// skipped): the identity of a copy that is not a git checkout.
pub fn content_hash(dirs: &[&Path]) -> Result<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(d)? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                if d == root && (name == "target" || name == ".git") {
                    continue;
                }
                walk(root, &p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    for d in dirs {
        let mut files = Vec::new();
        walk(d, d, &mut files).map_err(Error::io(d.to_path_buf()))?;
        files.sort();
        for f in files {
            h.update(f.strip_prefix(d).unwrap_or(&f).to_string_lossy().as_bytes());
            h.update([0]);
            h.update(std::fs::read(&f).map_err(Error::io(f.clone()))?);
        }
    }
    Ok(hex(&h.finalize(), 12))
}

impl CandleSource {
    /// The key of a build against this source: [`CandleSource::key`] (the cache folder, one
    /// per path) and a hash of the label, which names the content (a release, a git commit and
    /// dirty state, a copy's content hash), so an edited folder is not mistaken for the build
    /// kept from before the edit.
    pub fn build_key(&self) -> String {
        format!(
            "{}-{}",
            self.key,
            hex(&Sha256::digest(self.label.as_bytes()), 8)
        )
    }
}

/// Resolves a spec: a version as is; a path to its crates, version and label (git commit
/// and dirty state when the folder is the top of a git checkout, else a content hash).
pub fn resolve(spec: &CandleSpec) -> Result<CandleSource> {
    match spec {
        CandleSpec::Version(v) => Ok(CandleSource {
            spec: spec.clone(),
            version: v.clone(),
            crates: Vec::new(),
            label: format!("{v} (crates.io)"),
            key: format!("v{v}"),
        }),
        CandleSpec::Path(dir) => {
            let found = crates_in(dir)?;
            let version = found
                .iter()
                .find(|f| f.0 == "candle-core")
                .unwrap_or(&found[0])
                .1
                .clone();
            let top = git(dir, &["rev-parse", "--show-toplevel"])
                .map(|t| PathBuf::from(t.trim()))
                .and_then(|t| std::fs::canonicalize(t).ok());
            let id = if top.as_deref() == Some(dir.as_path()) {
                let head = git(dir, &["rev-parse", "HEAD"]).unwrap_or_default();
                let status = git(dir, &["status", "--porcelain", "--untracked-files=no"])
                    .unwrap_or_default();
                let dirty = if status.trim().is_empty() {
                    String::new()
                } else {
                    let diff = git(dir, &["diff", "HEAD"]).unwrap_or_default();
                    format!(", dirty {}", hex(&Sha256::digest(diff.as_bytes()), 8))
                };
                format!(
                    "git {}{dirty}",
                    head.trim().chars().take(12).collect::<String>()
                )
            } else {
                let dirs: Vec<&Path> = found.iter().map(|f| f.2.as_path()).collect();
                format!("content {}", content_hash(&dirs)?)
            };
            let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
            Ok(CandleSource {
                spec: spec.clone(),
                label: format!(
                    "{version} path {} ({id}; {})",
                    dir.display(),
                    names.join(", ")
                ),
                key: format!(
                    "p{}",
                    hex(&Sha256::digest(dir.display().to_string().as_bytes()), 12)
                ),
                version,
                crates: found.into_iter().map(|(n, _, p)| (n, p)).collect(),
            })
        }
    }
}

/// Whether `version` satisfies cargo's default (caret) requirement `req` (`0.11.1` accepts
/// 0.11.1..0.12; `1.2.0` accepts 1.x >= 1.2.0). Pre-releases never match.
pub fn caret_matches(req: &str, version: &str) -> bool {
    let nums = |s: &str| -> Option<Vec<u64>> {
        if s.contains('-') {
            return None;
        }
        s.split('.').map(|p| p.parse().ok()).collect()
    };
    let (Some(r), Some(v)) = (nums(req.trim_start_matches('^')), nums(version)) else {
        return false;
    };
    if r.len() != 3 || v.len() != 3 {
        return false;
    }
    let same_scope = if r[0] > 0 {
        v[0] == r[0]
    } else if r[1] > 0 {
        v[0] == 0 && v[1] == r[1]
    } else {
        v[..2] == r[..2] && v[2] == r[2]
    };
    same_scope && v >= r
}

/// The version requirement of `candle-core` in a Cargo.toml's `[dependencies]`
/// (`candle-core = "0.11.1"` or `candle-core = { version = "0.11.1", ... }`).
pub fn candle_requirement(manifest: &str) -> Option<String> {
    for line in manifest.lines() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix("candle-core") else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim();
        let v = if let Some(q) = rest.strip_prefix('"') {
            q.split('"').next()?
        } else {
            let at = rest.find("version")?;
            rest[at..].split('"').nth(1)?
        };
        return Some(v.to_string());
    }
    None
}

/// The suite's Cargo.toml with each Candle crate's requirement set to `=version`, when the
/// source needs it: always for a crates.io version other than the one required (cargo then
/// resolves that release itself), and for a path whose version the requirement does not
/// accept (else cargo leaves the `[patch]` unused). None when the manifest can stay as it is.
pub fn manifest_with_requirement(manifest: &str, src: &CandleSource) -> Option<String> {
    let req = candle_requirement(manifest)?;
    let needed = match &src.spec {
        CandleSpec::Version(v) => req.trim_start_matches('=') != v.as_str(),
        CandleSpec::Path(_) => !caret_matches(&req, &src.version),
    };
    if !needed {
        return None;
    }
    let mut out = String::new();
    for line in manifest.lines() {
        let t = line.trim_start();
        let is_candle = CRATES.iter().any(|c| {
            t.strip_prefix(c)
                .is_some_and(|r| r.trim_start().starts_with('='))
        });
        if is_candle {
            out.push_str(&line.replacen(
                &format!("\"{req}\""),
                &format!("\"={}\"", src.version),
                1,
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Some(out)
}

/// The `--config` values that point cargo's crates.io Candle crates at a path source
/// (`patch.crates-io.candle-core.path="/abs/candle-core"`, one per crate); none for a version.
pub fn patch_args(src: &CandleSource) -> Vec<String> {
    src.crates
        .iter()
        .map(|(name, dir)| {
            format!(
                "patch.crates-io.{name}.path={}",
                toml_string(&dir.display().to_string())
            )
        })
        .collect()
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The one line of a failed build: the first rustc `error[E...]` (or, without one, the
/// first `error:` line) with the item it names and where, prefixed by the Candle source.
pub fn first_build_error(output: &str, src_label: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let strip = |s: &str| s.trim().to_string();
    let (i, head) = match lines
        .iter()
        .position(|l| l.trim_start().starts_with("error[E"))
        .or_else(|| {
            lines
                .iter()
                .position(|l| l.trim_start().starts_with("error:") && !l.contains("could not compile"))
        }) {
        Some(i) => (i, strip(lines[i])),
        None => {
            return format!(
                "the suite does not build against Candle {src_label}: cargo failed without a compiler error ({})",
                lines
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim())
                    .unwrap_or("no output")
            )
        }
    };
    // The location line (`  --> src/x.rs:12:5`) that follows.
    let at = lines[i + 1..]
        .iter()
        .take(4)
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .map(|l| format!(" at {}", l.trim()))
        .unwrap_or_default();
    // An item is named for a compiler error with a code (`cannot find`, `no method`, ...),
    // not for a plain `error:` (a syntax error in the Candle source names no missing item).
    let item = if head.starts_with("error[E") {
        missing_item(&head)
    } else {
        None
    };
    let item = item
        .map(|m| format!("first missing item `{m}`: "))
        .unwrap_or_default();
    format!("the suite does not build against Candle {src_label}: {item}{head}{at}")
}

/// The item a rustc error names between backticks (`cannot find function `x` in module `y``
/// -> `x`; `no method named `z`` -> `z`; unresolved import `a::b` -> `a::b`).
pub fn missing_item(head: &str) -> Option<String> {
    let msg = head.split_once("]: ").map(|x| x.1).unwrap_or(head);
    let first = msg.split('`').nth(1)?;
    // `cannot find X `a` in `m``: name both.
    let in_what = msg
        .split_once("` in ")
        .and_then(|(_, r)| r.split('`').nth(1))
        .filter(|m| !m.is_empty());
    Some(match in_what {
        Some(m) if msg.starts_with("cannot find") => format!("{m}::{first}"),
        _ => first.to_string(),
    })
}

pub use super::candle_label::label_from_lock;
