//! File writes that never leave a truncated file behind.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`:
/// readers see the old content or the new, never a prefix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique per call, not only per process: two threads of one process (parallel tests making
    // the same fixture) must not share a temporary file, or one renames it from under the other.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    write_via(path, &tmp, bytes)
}

/// Writes `bytes` to `tmp`, then renames `tmp` over `path`; removes `tmp` when anything fails.
fn write_via(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let res = (|| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

/// The cargo target directory (where generated fixtures live).
/// Whether two paths name one file or folder (canonicalised where they exist, else compared
/// as written).
pub fn same_path(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(t) => {
            let t = std::path::PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                crate::util::root().join(t)
            }
        }
        None => crate::util::root().join("target"),
    }
}

#[cfg(test)]
mod tests {
    /// A write that fails before the rename (here: the temporary file cannot be created) returns
    /// an error naming the file and leaves the old content in place.
    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        super::atomic_write(&path, b"old\n").unwrap();
        let blocker = dir.path().join("blocker");
        std::fs::create_dir(&blocker).unwrap();
        let err = super::write_via(&path, &blocker, b"new content").unwrap_err();
        assert!(err.to_string().contains("results.jsonl"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
    }

    /// Parallel tests make the same fixture from several threads of one process: every writer
    /// must succeed and the file must be one writer's whole content.
    #[test]
    fn concurrent_writers_of_one_path_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        super::atomic_write(path, &[t; 4096]).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 4096);
        assert!(got.iter().all(|&b| b == got[0]));
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 1, "temporary files left behind");
    }
}

/// The longest file name [`bounded_name`] gives (file systems allow 255 bytes; a model given as
/// a path can make a benchmark id longer than that).
pub const MAX_NAME: usize = 160;

/// `name` (an ASCII file-name slug) as a file name no longer than [`MAX_NAME`]: unchanged when
/// it fits, else its first 120 characters, `-`, and 16 hex digits of its SHA-256, so two long
/// names that share the start stay apart.
pub fn bounded_name(name: String) -> String {
    use sha2::{Digest, Sha256};
    if name.len() <= MAX_NAME {
        return name;
    }
    let hash = Sha256::digest(name.as_bytes());
    let head: String = name.chars().take(120).collect();
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{head}-{hex}")
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_with_a_hash_and_a_short_one_kept() {
        assert_eq!(bounded_name("short.html".into()), "short.html");
        let a = format!("peer--{}", "x".repeat(300));
        let b = format!("peer--{}y", "x".repeat(300));
        let (ba, bb) = (bounded_name(a), bounded_name(b));
        assert!(ba.len() <= MAX_NAME && bb.len() <= MAX_NAME, "{ba}");
        assert_ne!(ba, bb);
        assert!(ba.starts_with("peer--xxx"));
    }
}

/// sha256 of a file, cached by (path, size, mtime) under target/modelbench-quality/hashes/
/// so a generation run does not hash gigabytes each time.
pub fn file_sha256(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let md = std::fs::metadata(path).map_err(Error::io(path))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut h = sha2::Sha256::new();
    h.update(format!("{}\0{}\0{mtime}", abs.display(), md.len()).as_bytes());
    let cache = target_dir()
        .join("modelbench-quality")
        .join("hashes")
        .join(&hex(&h.finalize())[..32]);
    if let Ok(s) = std::fs::read_to_string(&cache) {
        let s = s.trim();
        if s.len() == 64 {
            return Ok(s.to_string());
        }
    }
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let out = hex(&h.finalize());
    // A cache that cannot be written only costs a re-hash next time.
    let _ = atomic_write(&cache, out.as_bytes());
    Ok(out)
}

/// Lower-case hex digits of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
