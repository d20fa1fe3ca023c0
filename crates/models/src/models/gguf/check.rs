//! A GGUF file is untrusted input. Before any model is built from one:
//!
//! 1. [`scan`]: a bounded reader of the header (every count, string and array length, tensor
//!    dimension product and tensor offset checked against the file's size before anything is
//!    allocated or read), then llama.cpp's layout rules: `general.alignment` a power of two,
//!    every tensor's offset aligned and equal to the end of the one before it (padded), its
//!    bytes (elements / block size x type size of its ggml type) inside the file, nothing after
//!    the last tensor but its padding. Only then does candle 0.11.1's `Content::read` see the
//!    file (it allocates from the counts it reads: a dimension of 2^62 is a `capacity overflow`
//!    panic there, `general.alignment` = 0 a division by zero).
//! 2. the architecture's checks against its family's spec
//!    ([`crate::models::families::check`]; it sits above the family table it reads).
//! 3. [`guard`]: whatever candle does with a file that passed is run under `catch_unwind`, so a
//!    panic ends in one line (a bug of ours: please report it), never a crash.
//!
//! Each failure is one line ([`Error::Weights`]: `<file>: <field or tensor>: holds X, expected
//! Y`), which the CLI turns into exit status 2. docs/gguf-validation.md lists the checks beside
//! llama.cpp's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;

use crate::error::{one_line, Error, Result};

pub(crate) fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::weights(path.display(), reason)
}

/// ggml's GGUF_DEFAULT_ALIGNMENT.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_NAME (a tensor name is shorter).
pub const MAX_NAME: usize = 64;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;
/// The largest metadata key accepted (no GGUF key is near it).
const MAX_KEY: u64 = 1 << 16;

/// The ggml tensor types candle 0.11.1 reads (ggml type id -> candle's type).
pub fn candle_dtype(t: u32) -> Option<GgmlDType> {
    use GgmlDType as G;
    Some(match t {
        0 => G::F32,
        1 => G::F16,
        2 => G::Q4_0,
        3 => G::Q4_1,
        6 => G::Q5_0,
        7 => G::Q5_1,
        8 => G::Q8_0,
        9 => G::Q8_1,
        10 => G::Q2K,
        11 => G::Q3K,
        12 => G::Q4K,
        13 => G::Q5K,
        14 => G::Q6K,
        15 => G::Q8K,
        30 => G::BF16,
        _ => return None,
    })
}

/// One tensor as the header records it, dimensions in ggml order (`ne[0]` first: the row).
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedTensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub ggml_type: u32,
    /// Offset inside the data section.
    pub offset: u64,
    /// Bytes of its data (elements / block size x type size).
    pub bytes: u64,
}

/// What the bounded scan learned of a file's layout.
#[derive(Debug, Clone)]
pub struct Scan {
    pub version: u32,
    pub file_size: u64,
    pub alignment: u64,
    /// Where the data section starts (the header's end, padded to the alignment).
    pub data_offset: u64,
    /// In the order of the header.
    pub tensors: Vec<ScannedTensor>,
    /// Metadata keys in the order of the header.
    pub keys: Vec<String>,
}

/// A reader that refuses to read, skip or allocate past the end of the file (skips stay in
/// the buffer: `seek_relative`, no system call per skipped string).
struct Bounded<R> {
    r: BufReader<R>,
    pos: u64,
    size: u64,
}

impl<R: Read + Seek> Bounded<R> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }
    fn need(&self, n: u64, what: &dyn Fn() -> String) -> std::result::Result<(), String> {
        if n > self.remaining() {
            return Err(format!(
                "{} needs {n} bytes at offset {}, but the file ends at {}: it is truncated or corrupt",
                what(),
                self.pos,
                self.size
            ));
        }
        Ok(())
    }
    fn bytes<const N: usize>(
        &mut self,
        what: &dyn Fn() -> String,
    ) -> std::result::Result<[u8; N], String> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("{}: {e}", what()))?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }
    fn skip(&mut self, n: u64, what: &dyn Fn() -> String) -> std::result::Result<(), String> {
        self.need(n, what)?;
        self.r
            .seek_relative(n as i64)
            .map_err(|e| format!("{}: {e}", what()))?;
        self.pos += n;
        Ok(())
    }
    /// A length-prefixed string of at most `max` bytes, read whole.
    fn string(
        &mut self,
        max: u64,
        what: &dyn Fn() -> String,
    ) -> std::result::Result<Vec<u8>, String> {
        let len = self.u64(&|| format!("{}'s length", what()))?;
        if len > max {
            return Err(format!(
                "{} has length {len}, expected at most {max}",
                what()
            ));
        }
        self.need(len, what)?;
        let mut v = vec![0u8; len as usize];
        self.r
            .read_exact(&mut v)
            .map_err(|e| format!("{}: {e}", what()))?;
        self.pos += len;
        Ok(v)
    }
    /// Skips a length-prefixed string (its length bounded by the file).
    fn skip_string(&mut self, what: &dyn Fn() -> String) -> std::result::Result<(), String> {
        let len = self.u64(&|| format!("{}'s length", what()))?;
        self.skip(len, &|| format!("{} (a string of {len} bytes)", what()))
    }
}

/// GGUF value type ids (gguf.h `enum gguf_type`) -> (name, fixed size; 0: string, array).
fn value_type(t: u32) -> Option<(&'static str, u64)> {
    Some(match t {
        0 => ("u8", 1),
        1 => ("i8", 1),
        2 => ("u16", 2),
        3 => ("i16", 2),
        4 => ("u32", 4),
        5 => ("i32", 4),
        6 => ("f32", 4),
        7 => ("bool", 1),
        8 => ("string", 0),
        9 => ("array", 0),
        10 => ("u64", 8),
        11 => ("i64", 8),
        12 => ("f64", 8),
        _ => return None,
    })
}

/// The bounded scan of a GGUF header (see the module doc). Reads the header once, allocating
/// only keys (at most 64 KiB each) and tensor names (at most 63 bytes each).
pub fn scan(path: &Path) -> Result<Scan> {
    HEADER_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let f = std::fs::File::open(path).map_err(Error::io(path))?;
    let size = f.metadata().map_err(Error::io(path))?.len();
    let mut r = Bounded {
        r: BufReader::with_capacity(1 << 16, f),
        pos: 0,
        size,
    };
    scan_reader(&mut r).map_err(|e| bad(path, e))
}

fn scan_reader<R: Read + Seek>(r: &mut Bounded<R>) -> std::result::Result<Scan, String> {
    let magic = r.bytes::<4>(&|| "the GGUF magic".into())?;
    if &magic != b"GGUF" {
        return Err(format!(
            "not a readable GGUF file: its magic holds {:02x?}, expected \"GGUF\"",
            magic
        ));
    }
    let version = r.u32(&|| "the GGUF version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(
                "header: version 1, which llama.cpp no longer reads; expected 2 or 3: convert the model again"
                    .into(),
            )
        }
        v => return Err(format!("header: version holds {v}, expected 2 or 3")),
    }
    let n_tensors = r.u64(&|| "the tensor count".into())?;
    let n_kv = r.u64(&|| "the metadata count".into())?;
    // Least bytes per entry: a kv is a key length (8) + a type (4) + a 1-byte value; a tensor
    // info a name length (8) + n_dims (4) + a type (4) + an offset (8).
    let least = (n_kv as u128) * 13 + (n_tensors as u128) * 24;
    if least > r.remaining() as u128 {
        return Err(format!(
            "header: {n_tensors} tensors and {n_kv} metadata entries need at least {least} bytes, only {} follow the header: the counts are corrupt",
            r.remaining()
        ));
    }
    // Grown as entries are read, never sized from the (untrusted) counts.
    let mut keys: Vec<String> = Vec::new();
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut alignment = None;
    for i in 0..n_kv {
        let key = r.string(MAX_KEY, &|| format!("metadata entry {i}'s key"))?;
        let name = String::from_utf8_lossy(&key).into_owned();
        if key.is_empty() {
            return Err(format!("metadata entry {i}: its key is empty"));
        }
        if !seen.insert(key) {
            return Err(format!("metadata `{name}`: the key appears twice"));
        }
        let what = || format!("metadata `{name}`");
        let t = r.u32(&|| format!("{}'s type", what()))?;
        let Some((tname, fixed)) = value_type(t) else {
            return Err(format!("{}: value type holds {t}, expected 0..=12", what()));
        };
        if name == "general.alignment" {
            if t != 4 {
                return Err(format!(
                    "`general.alignment` is of type {tname}, expected u32 (as llama.cpp reads it)"
                ));
            }
            let a = r.u32(&what)? as u64;
            if a == 0 || !a.is_power_of_two() {
                return Err(format!(
                    "`general.alignment` holds {a}, expected a power of two"
                ));
            }
            alignment = Some(a);
        } else {
            match t {
                7 => {
                    let b = r.bytes::<1>(&what)?[0];
                    if b > 1 {
                        return Err(format!("{}: a bool holding {b}, expected 0 or 1", what()));
                    }
                }
                8 => r.skip_string(&what)?,
                9 => {
                    let et = r.u32(&|| format!("{}'s element type", what()))?;
                    let Some((ename, esize)) = value_type(et) else {
                        return Err(format!(
                            "{}: array element type holds {et}, expected 0..=12",
                            what()
                        ));
                    };
                    if et == 9 {
                        return Err(format!(
                            "{}: an array of arrays, which llama.cpp does not read",
                            what()
                        ));
                    }
                    let n = r.u64(&|| format!("{}'s length", what()))?;
                    // A string element is at least its 8-byte length.
                    let least = n as u128 * if esize == 0 { 8 } else { esize } as u128;
                    if least > r.remaining() as u128 {
                        return Err(format!(
                            "{}: an array of {n} {ename} needs at least {least} bytes, only {} remain: its length is corrupt",
                            what(),
                            r.remaining()
                        ));
                    }
                    if et == 8 {
                        for j in 0..n {
                            r.skip_string(&|| format!("{} element {j}", what()))?;
                        }
                    } else if et == 7 {
                        for j in 0..n {
                            let b = r.bytes::<1>(&what)?[0];
                            if b > 1 {
                                return Err(format!(
                                    "{} element {j}: a bool holding {b}, expected 0 or 1",
                                    what()
                                ));
                            }
                        }
                    } else {
                        r.skip(n * esize, &what)?;
                    }
                }
                _ => r.skip(fixed, &what)?,
            }
        }
        keys.push(name);
    }
    let alignment = alignment.unwrap_or(DEFAULT_ALIGNMENT);
    let mut tensors: Vec<ScannedTensor> = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for i in 0..n_tensors {
        let raw = r.string(MAX_NAME as u64 - 1, &|| format!("tensor {i}'s name"))?;
        let name = String::from_utf8_lossy(&raw).into_owned();
        if !names.insert(name.clone()) {
            return Err(format!("tensor `{name}`: the name appears twice"));
        }
        let what = || format!("tensor `{name}`");
        let n_dims = r.u32(&|| format!("{}'s dimension count", what()))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "{}: {n_dims} dimensions, expected at most {MAX_DIMS}",
                what()
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        let mut elems: u128 = 1;
        for d in 0..n_dims {
            let x = r.u64(&|| format!("{}'s dimension {d}", what()))?;
            if x > i64::MAX as u64 {
                return Err(format!(
                    "{}: dimension {d} holds {x}, expected < 2^63",
                    what()
                ));
            }
            elems = elems.saturating_mul(x as u128);
            ne.push(x);
        }
        let t = r.u32(&|| format!("{}'s type", what()))?;
        let Some(dt) = candle_dtype(t) else {
            return Err(format!(
                "{}: tensor type {} (ggml type {t}) is not supported by candle 0.11.1 (it runs {}); use a GGUF file quantized to one of those",
                what(),
                super::ggml_types::ggml_type_name(t),
                super::ggml_types::CANDLE_TYPES
            ));
        };
        let (blck, tsize) = (dt.block_size() as u128, dt.type_size() as u128);
        let row = ne.first().copied().unwrap_or(1) as u128;
        if !row.is_multiple_of(blck) {
            return Err(format!(
                "{}: type {} with rows of {row} elements, expected a multiple of its block size {blck}",
                what(),
                super::ggml_types::dtype_name(dt)
            ));
        }
        let bytes = elems / blck * tsize;
        if bytes > r.size as u128 {
            return Err(format!(
                "{}: shape {ne:?} of type {} needs {bytes} bytes, more than the whole file ({} bytes)",
                what(),
                super::ggml_types::dtype_name(dt),
                r.size
            ));
        }
        let offset = r.u64(&|| format!("{}'s offset", what()))?;
        tensors.push(ScannedTensor {
            name,
            ne,
            ggml_type: t,
            offset,
            bytes: bytes as u64,
        });
    }
    let data_offset = r.pos.div_ceil(alignment).saturating_mul(alignment);
    // llama.cpp (gguf_init_from_reader): each tensor starts where the one before it ends,
    // padded to the alignment; its data must lie inside the file.
    let mut expected = 0u64;
    let mut prev: Option<&str> = None;
    for t in &tensors {
        let what = || format!("tensor `{}`", t.name);
        if t.offset % alignment != 0 {
            return Err(format!(
                "{}: offset holds {}, expected a multiple of the alignment {alignment}",
                what(),
                t.offset
            ));
        }
        if t.offset != expected {
            return Err(format!(
                "{}: offset holds {}, expected {expected} (where {} ends, padded to {alignment}): the tensor table is corrupt",
                what(),
                t.offset,
                prev.map(|p| format!("`{p}`"))
                    .unwrap_or_else(|| "the data section starts".into())
            ));
        }
        let end = (data_offset as u128) + t.offset as u128 + t.bytes as u128;
        if end > r.size as u128 {
            return Err(format!(
                "{}: its {} bytes at file offset {} end at {end}, past the end of the file ({}): it is truncated",
                what(),
                t.bytes,
                data_offset as u128 + t.offset as u128,
                r.size
            ));
        }
        expected = (t.offset + t.bytes).div_ceil(alignment) * alignment;
        prev = Some(&t.name);
    }
    if let Some(last) = tensors.last() {
        let padded_end = data_offset as u128 + expected as u128;
        if r.size as u128 > padded_end {
            return Err(format!(
                "the file has {} bytes after the data of its last tensor `{}` (ends at {padded_end}, file size {}): a tensor's type or shape was changed, or the file is corrupt",
                r.size as u128 - padded_end,
                last.name,
                r.size
            ));
        }
    }
    Ok(Scan {
        version,
        file_size: r.size,
        alignment,
        data_offset,
        tensors,
        keys,
    })
}

/// Every read of a GGUF header in this process: each [`scan`] and each candle `Content::read`
/// (the project reads headers nowhere else). A load reads its file's header once
/// (tests/header_reads.rs counts one `generate`).
static HEADER_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many header reads ([`scan`] and candle's reader) this process has done.
pub fn header_reads() -> usize {
    HEADER_READS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads the header with candle 0.11.1 once [`scan`] has passed (its errors mapped as
/// `read_header` always did). The scan's bounds make candle's allocations bounded by the file.
pub fn read_checked(path: &Path) -> Result<(Scan, Content)> {
    let s = scan(path)?;
    // Buffered: candle's reader reads field by field.
    let mut f =
        BufReader::with_capacity(1 << 16, std::fs::File::open(path).map_err(Error::io(path))?);
    HEADER_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ct = guard(path, "reading the GGUF header", || {
        Content::read(&mut f).map_err(|e| {
            bad(
                path,
                format!(
                    "not a readable GGUF file ({}); it is truncated or corrupt: fetch it again",
                    one_line(&e.to_string())
                ),
            )
        })
    })?;
    if ct.tensor_data_offset != s.data_offset || ct.tensor_infos.len() != s.tensors.len() {
        return Err(bad(
            path,
            format!(
                "bug: candle reads the data section at {} with {} tensors, the scan at {} with {}; please report it",
                ct.tensor_data_offset,
                ct.tensor_infos.len(),
                s.data_offset,
                s.tensors.len()
            ),
        ));
    }
    Ok((s, ct))
}

/// Reads the header (metadata and tensor table) of a GGUF file: the bounded [`scan`] (counts,
/// lengths, dimensions, offsets and alignment against the file's size, llama.cpp's layout
/// rules), then candle's reader.
pub fn read_header(path: &Path) -> Result<Content> {
    read_checked(path).map(|(_, ct)| ct)
}

// ---------------------------------------------------------------------------------------------
// Safetensors folders

/// A safetensors checkpoint against its config.json, beyond the names and shapes the loader
/// checks (`models::check_tensors`): the float hyper-parameters finite and positive, and every
/// tensor in the files used by the model (`expected`: what the model reads). Tensors no
/// implementation reads on any checkpoint (`rotary_emb.inv_freq` buffers) are allowed.
pub fn check_safetensors(
    config_path: &str,
    config: &serde_json::Value,
    st: &candle_core::safetensors::MmapedSafetensors,
    expected: &BTreeMap<String, Vec<usize>>,
    files: &str,
) -> Result<()> {
    let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    for k in [
        "rms_norm_eps",
        "rope_theta",
        "rope_local_base_freq",
        "layer_norm_eps",
    ] {
        if let Some(v) = config.get(k) {
            let ok = v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0);
            if !ok && !v.is_null() {
                return Err(bad(
                    Path::new(config_path),
                    format!("`{k}` holds {v}, expected a finite positive number"),
                ));
            }
        }
    }
    let mut extra: Vec<&String> = names
        .iter()
        .filter(|n| !expected.contains_key(n.as_str()) && !n.ends_with("rotary_emb.inv_freq"))
        .collect();
    extra.sort();
    if let Some(x) = extra.first() {
        return Err(Error::weights(
            files,
            format!(
                "tensor `{x}` is not used by the model config.json describes ({} of {} tensors unused): the weights and config.json are from different models (e.g. more layers than `num_hidden_layers`)",
                extra.len(),
                names.len()
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The panic guard

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into one line naming `path` and `what` ("bug: ...; please
/// report"). While it runs, the panic hook stays silent on this thread (other threads keep
/// the default report).
pub fn guard<T>(path: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                prev(info)
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    match out {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(bad(
                path,
                format!(
                    "bug: {what} panicked ({}); the file passed validation, so this is the project's bug: please report it with the file",
                    one_line(&msg)
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_bounds_counts_and_offsets_by_the_file() {
        // magic, version 3, 2^40 tensors, 0 kv.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((1u64 << 40).to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let size = b.len() as u64;
        let mut r = Bounded {
            r: BufReader::new(std::io::Cursor::new(b)),
            pos: 0,
            size,
        };
        let e = scan_reader(&mut r).unwrap_err();
        assert!(e.contains("the counts are corrupt"), "{e}");
    }
}
