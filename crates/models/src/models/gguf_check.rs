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
//! 2. [`check_arch`]: per-architecture expectations modelled on llama.cpp's loader
//!    (`src/llama-model.cpp` `load_hparams`, `src/models/<arch>.cpp` `load_arch_tensors`,
//!    `llama_model_loader::create_tensor` / `done_getting_tensors`): the hyper-parameters of
//!    [`ARCHS`] present where required, of the type llama.cpp reads them as, finite and in range;
//!    every tensor the architecture expects present with the shape they imply; every tensor in
//!    the file used (an extra tensor, e.g. a block past `block_count`, is refused). The table is
//!    data: one [`ArchSpec`] per architecture.
//! 3. [`guard`]: whatever candle does with a file that passed is run under `catch_unwind`, so a
//!    panic ends in one line (a bug of ours: please report it), never a crash.
//!
//! Each failure is one line ([`Error::Weights`]: `<file>: <field or tensor>: holds X, expected
//! Y`), which the CLI turns into exit status 2. docs/gguf-validation.md lists the checks beside
//! llama.cpp's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use crate::error::{one_line, Error, Result};

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::weights(path.display(), reason)
}

/// ggml's GGUF_DEFAULT_ALIGNMENT.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_NAME (a tensor name is shorter).
pub const MAX_NAME: usize = 64;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;
/// llama.cpp's LLAMA_MAX_LAYERS.
pub const MAX_LAYERS: u64 = 512;
/// llama.cpp's LLAMA_MAX_EXPERTS.
pub const MAX_EXPERTS: u64 = 1024;
/// The largest `context_length` accepted (2^24 positions; llama.cpp has no bound, but the
/// RoPE tables and caches an implementation builds grow with it).
pub const MAX_CONTEXT: u64 = 1 << 24;
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

/// Reads the header with candle 0.11.1 once [`scan`] has passed (its errors mapped as
/// `read_header` always did). The scan's bounds make candle's allocations bounded by the file.
pub fn read_checked(path: &Path) -> Result<(Scan, Content)> {
    let s = scan(path)?;
    // Buffered: candle's reader reads field by field.
    let mut f =
        BufReader::with_capacity(1 << 16, std::fs::File::open(path).map_err(Error::io(path))?);
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

/// Bounded scan, then candle's reader, then the architecture's checks ([`check_arch`]).
pub fn validate_gguf(path: &Path) -> Result<Content> {
    let (_, ct) = read_checked(path)?;
    check_arch(path, &ct)?;
    Ok(ct)
}

// ---------------------------------------------------------------------------------------------
// The architecture table

/// How llama.cpp reads a hyper-parameter (its `get_key` wants exactly this GGUF type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    U32,
    F32,
    /// A u32, or an array of u32 with one entry per block (`get_key_or_arr`; lfm2's
    /// `head_count_kv`, 0 for a convolution block).
    U32OrPerLayer,
}

/// The range a hyper-parameter must lie in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// An integer in lo..=hi.
    Int(u64, u64),
    /// A finite float in (lo, hi].
    Float(f64, f64),
}

#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// After `<arch>.`.
    pub key: &'static str,
    pub kind: Kind,
    /// Absent is an error (llama.cpp's, or the implementation's that runs the arch).
    pub required: bool,
    pub range: Range,
}

const fn key(key: &'static str, kind: Kind, required: bool, range: Range) -> KeySpec {
    KeySpec {
        key,
        kind,
        required,
        range,
    }
}

/// A dimension of an expected tensor, from the hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum D {
    Embd,
    Vocab,
    /// key_length x head_count
    Q,
    /// key_length x head_count_kv
    K,
    /// value_length x head_count_kv
    V,
    /// Q + K + V (a fused QKV projection)
    Qkv,
    HeadK,
    Ff,
    /// 2 x feed_forward_length (phi3, glm4: gate and up fused)
    Ff2,
    FfExp,
    Expert,
    /// rope.dimension_count / 2
    Rot2,
    /// 3 x embedding_length (lfm2's short convolution input)
    Embd3,
    /// lfm2's `shortconv.l_cache`
    LCache,
}

impl D {
    /// Which hyper-parameters the dimension comes from, for the error line.
    fn source(self, a: &str) -> String {
        match self {
            D::Embd => format!("{a}.embedding_length"),
            D::Vocab => "the vocabulary (tokenizer.ggml.tokens)".into(),
            D::Q => format!("{a}.attention.key_length x {a}.attention.head_count"),
            D::K => format!("{a}.attention.key_length x {a}.attention.head_count_kv"),
            D::V => format!("{a}.attention.value_length x {a}.attention.head_count_kv"),
            D::Qkv => format!("({a}.attention.head_count + 2 x {a}.attention.head_count_kv) x {a}.attention.key_length"),
            D::HeadK => format!("{a}.attention.key_length"),
            D::Ff => format!("{a}.feed_forward_length"),
            D::Ff2 => format!("2 x {a}.feed_forward_length"),
            D::FfExp => format!("{a}.expert_feed_forward_length"),
            D::Expert => format!("{a}.expert_count"),
            D::Rot2 => format!("{a}.rope.dimension_count / 2"),
            D::Embd3 => format!("3 x {a}.embedding_length"),
            D::LCache => format!("{a}.shortconv.l_cache"),
        }
    }
}

/// Whether a tensor must be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Required,
    /// llama.cpp's TENSOR_NOT_REQUIRED: absent is fine, present must have its shape.
    Optional,
}

/// Which blocks a per-block tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    /// A tensor of the whole model (`token_embd.weight`).
    None,
    All,
    /// lfm2: blocks whose `head_count_kv` is non-zero.
    Attention,
    /// lfm2: blocks whose `head_count_kv` is zero (short convolution).
    Recurrent,
    /// Only when expert_count = 0 / > 0.
    Dense,
    Moe,
}

#[derive(Debug, Clone, Copy)]
pub struct TensorSpec {
    /// The name, `{}` standing for the block number.
    pub name: &'static str,
    pub shape: &'static [D],
    pub need: Need,
    pub blocks: Blocks,
}

const fn t(name: &'static str, shape: &'static [D], need: Need, blocks: Blocks) -> TensorSpec {
    TensorSpec {
        name,
        shape,
        need,
        blocks,
    }
}

/// How a block's attention projections may come (llama.cpp's `create_tensor_qkv`): a fused
/// `attn_qkv.weight` or separate `attn_q/k/v.weight`, each with optional biases.
#[derive(Debug, Clone, Copy)]
pub struct QkvSpec {
    /// The widths of Q, K, V.
    pub q: D,
    pub k: D,
    pub v: D,
    /// Separate Q/K/V weights required when no fused one is there (phi3: neither is).
    pub required: bool,
    pub blocks: Blocks,
}

/// How a rope.dimension_count must relate to the head size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rot {
    /// llama.cpp refuses anything else for llama; the implementations here rotate the whole
    /// head for every other architecture they run too.
    EqualsHead,
    /// Partial rotary (phi2).
    AtMostHead,
}

/// One architecture: the hyper-parameters read and the tensors expected.
#[derive(Debug, Clone, Copy)]
pub struct ArchSpec {
    pub arch: &'static str,
    pub keys: &'static [KeySpec],
    /// The normalisation epsilon key (`attention.layer_norm_rms_epsilon`, or phi2's
    /// `attention.layer_norm_epsilon`).
    pub eps: &'static str,
    pub qkv: Option<QkvSpec>,
    pub tensors: &'static [TensorSpec],
    pub rot: Rot,
    /// Tensors (suffixes after `blk.N.`, or whole names) llama.cpp accepts for the arch but
    /// the project's implementations of it do not read: present, the file describes a model
    /// other than the one that would run, so it is refused.
    pub not_run: &'static [&'static str],
}

use Blocks as B;
use Need::{Optional as O, Required as R};

const U: Kind = Kind::U32;
const F: Kind = Kind::F32;
const POS: Range = Range::Int(1, u32::MAX as u64);
const BASE: Range = Range::Float(1.0, 1e10);

/// Keys every architecture here reads (llama.cpp's `load_hparams`).
pub const COMMON_KEYS: &[KeySpec] = &[
    key("context_length", U, true, Range::Int(1, MAX_CONTEXT)),
    key("embedding_length", U, true, POS),
    key("block_count", U, true, Range::Int(1, MAX_LAYERS)),
    key("feed_forward_length", U, true, POS),
    key("attention.head_count", U, true, POS),
    key("attention.key_length", U, false, POS),
    key("attention.value_length", U, false, POS),
    key("rope.dimension_count", U, false, POS),
    key("rope.freq_base", F, false, BASE),
    // 0 is llama.cpp's "no scaling" (any x > -tiny: zero or positive).
    key(
        "rope.scaling.factor",
        F,
        false,
        Range::Float(-f64::MIN_POSITIVE, 1e6),
    ),
    key("expert_count", U, false, Range::Int(0, MAX_EXPERTS)),
    key("expert_used_count", U, false, Range::Int(0, MAX_EXPERTS)),
    key("expert_feed_forward_length", U, false, POS),
];

const KV: KeySpec = key("attention.head_count_kv", U, false, POS);
const EPS: Range = Range::Float(0.0, 0.1);

const HEAD: &[TensorSpec] = &[
    t("token_embd.weight", &[D::Embd, D::Vocab], R, B::None),
    t("output_norm.weight", &[D::Embd], R, B::None),
    t("output.weight", &[D::Embd, D::Vocab], O, B::None),
];

const LLAMA_NOT_RUN: &[&str] = &[
    // `rope_freqs.weight` (Llama 3.x) is read by the project's implementation; the family
    // table (models::families) refuses it for candle-transformers' quantized_llama.
    "attn_qkv.weight",
    "attn_qkv.bias",
    "attn_q.bias",
    "attn_k.bias",
    "attn_v.bias",
    "attn_output.bias",
    "ffn_gate.bias",
    "ffn_down.bias",
    "ffn_up.bias",
];

/// The architectures, as llama.cpp 0c1e570 loads them (src/models/<arch>.cpp).
pub const ARCHS: &[ArchSpec] = &[
    ArchSpec {
        arch: "llama",
        keys: &[
            KV,
            // candle-transformers' and the project's Llama read it without a default.
            key("rope.dimension_count", U, true, POS),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Q,
            k: D::K,
            v: D::V,
            required: true,
            blocks: B::All,
        }),
        tensors: &[
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Q, D::Embd], R, B::All),
            t("blk.{}.attn_output.bias", &[D::Embd], O, B::All),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t("rope_freqs.weight", &[D::Rot2], O, B::None),
            t("blk.{}.ffn_gate.weight", &[D::Embd, D::Ff], R, B::Dense),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::Dense),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::Dense),
            t("blk.{}.ffn_gate.bias", &[D::Ff], O, B::Dense),
            t("blk.{}.ffn_down.bias", &[D::Embd], O, B::Dense),
            t("blk.{}.ffn_up.bias", &[D::Ff], O, B::Dense),
            t(
                "blk.{}.ffn_gate_inp.weight",
                &[D::Embd, D::Expert],
                R,
                B::Moe,
            ),
            t(
                "blk.{}.ffn_gate_exps.weight",
                &[D::Embd, D::Ff, D::Expert],
                O,
                B::Moe,
            ),
            t(
                "blk.{}.ffn_down_exps.weight",
                &[D::Ff, D::Embd, D::Expert],
                R,
                B::Moe,
            ),
            t(
                "blk.{}.ffn_up_exps.weight",
                &[D::Embd, D::Ff, D::Expert],
                R,
                B::Moe,
            ),
        ],
        rot: Rot::EqualsHead,
        not_run: LLAMA_NOT_RUN,
    },
    ArchSpec {
        arch: "qwen2",
        keys: &[KV],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Embd,
            k: D::K,
            v: D::V,
            required: true,
            blocks: B::All,
        }),
        tensors: &[
            t("output.bias", &[D::Vocab], O, B::None),
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Embd, D::Embd], R, B::All),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.ffn_gate.weight", &[D::Embd, D::Ff], R, B::All),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::All),
        ],
        rot: Rot::EqualsHead,
        not_run: &[],
    },
    ArchSpec {
        arch: "qwen3",
        keys: &[
            KV,
            // candle-transformers' quantized_qwen3 reads them without a default.
            key("attention.key_length", U, true, POS),
            key("rope.freq_base", F, true, BASE),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Q,
            k: D::K,
            v: D::K,
            required: true,
            blocks: B::All,
        }),
        tensors: &[
            t("cls_out.weight", &[D::Embd], O, B::None),
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Q, D::Embd], R, B::All),
            t("blk.{}.attn_k_norm.weight", &[D::HeadK], R, B::All),
            t("blk.{}.attn_q_norm.weight", &[D::HeadK], R, B::All),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.ffn_gate.weight", &[D::Embd, D::Ff], R, B::All),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::All),
        ],
        rot: Rot::EqualsHead,
        not_run: &[
            "attn_qkv.weight",
            "attn_qkv.bias",
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
            "cls_out.weight",
        ],
    },
    ArchSpec {
        arch: "qwen3moe",
        keys: &[
            KV,
            key("expert_count", U, true, Range::Int(1, MAX_EXPERTS)),
            key("expert_used_count", U, true, Range::Int(1, MAX_EXPERTS)),
            // candle-transformers' quantized_qwen3_moe reads it without a default.
            key("expert_feed_forward_length", U, true, POS),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Q,
            k: D::K,
            v: D::K,
            required: true,
            blocks: B::All,
        }),
        tensors: &[
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Q, D::Embd], R, B::All),
            t("blk.{}.attn_k_norm.weight", &[D::HeadK], R, B::All),
            t("blk.{}.attn_q_norm.weight", &[D::HeadK], R, B::All),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t(
                "blk.{}.ffn_gate_inp.weight",
                &[D::Embd, D::Expert],
                R,
                B::All,
            ),
            t(
                "blk.{}.ffn_gate_exps.weight",
                &[D::Embd, D::FfExp, D::Expert],
                R,
                B::All,
            ),
            t(
                "blk.{}.ffn_down_exps.weight",
                &[D::FfExp, D::Embd, D::Expert],
                R,
                B::All,
            ),
            t(
                "blk.{}.ffn_up_exps.weight",
                &[D::Embd, D::FfExp, D::Expert],
                R,
                B::All,
            ),
        ],
        rot: Rot::EqualsHead,
        not_run: &[],
    },
    ArchSpec {
        arch: "gemma3",
        keys: &[
            KV,
            // candle-transformers' quantized_gemma3 reads them without a default.
            key("attention.key_length", U, true, POS),
            key("attention.value_length", U, true, POS),
            key(
                "attention.sliding_window",
                U,
                true,
                Range::Int(1, MAX_CONTEXT),
            ),
            key(
                "attention.sliding_window_type",
                U,
                false,
                Range::Int(1, MAX_LAYERS),
            ),
            // llama.cpp's key (a period; its per-layer array form is checked by the model).
            key(
                "attention.sliding_window_pattern",
                U,
                false,
                Range::Int(1, MAX_LAYERS),
            ),
            key("rope.local_freq_base", F, false, BASE),
            key("final_logit_softcapping", F, false, Range::Float(0.0, 1e6)),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Q,
            k: D::K,
            v: D::V,
            required: true,
            blocks: B::All,
        }),
        tensors: &[
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Q, D::Embd], R, B::All),
            t("blk.{}.post_attention_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_k_norm.weight", &[D::HeadK], R, B::All),
            t("blk.{}.attn_q_norm.weight", &[D::HeadK], R, B::All),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.ffn_gate.weight", &[D::Embd, D::Ff], R, B::All),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::All),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All),
            t("blk.{}.post_ffw_norm.weight", &[D::Embd], R, B::All),
        ],
        rot: Rot::EqualsHead,
        not_run: &[
            "attn_qkv.weight",
            "attn_qkv.bias",
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
        ],
    },
    ArchSpec {
        arch: "phi3",
        keys: &[KV],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Embd,
            k: D::K,
            v: D::V,
            required: false,
            blocks: B::All,
        }),
        tensors: &[
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Embd, D::Embd], R, B::All),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff2], R, B::All),
            // TENSOR_DUPLICATED past block 0: one tensor without a block number.
            t("rope_factors_long.weight", &[D::Rot2], O, B::None),
            t("rope_factors_short.weight", &[D::Rot2], O, B::None),
        ],
        rot: Rot::EqualsHead,
        not_run: &[],
    },
    ArchSpec {
        arch: "phi2",
        keys: &[KV],
        eps: "attention.layer_norm_epsilon",
        qkv: Some(QkvSpec {
            q: D::Embd,
            k: D::K,
            v: D::V,
            required: true,
            blocks: B::All,
        }),
        tensors: &[
            t("output_norm.bias", &[D::Embd], R, B::None),
            t("output.weight", &[D::Embd, D::Vocab], R, B::None),
            t("output.bias", &[D::Vocab], R, B::None),
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_norm.bias", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Embd, D::Embd], R, B::All),
            t("blk.{}.attn_output.bias", &[D::Embd], R, B::All),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All),
            t("blk.{}.ffn_down.bias", &[D::Embd], R, B::All),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::All),
            t("blk.{}.ffn_up.bias", &[D::Ff], R, B::All),
        ],
        rot: Rot::AtMostHead,
        not_run: &[],
    },
    ArchSpec {
        arch: "glm4",
        keys: &[
            // candle-transformers' quantized_glm4 reads them without a default.
            key("attention.head_count_kv", U, true, POS),
            key("attention.key_length", U, true, POS),
            key("rope.freq_base", F, true, BASE),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Q,
            k: D::K,
            v: D::V,
            required: true,
            blocks: B::All,
        }),
        tensors: &[
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_output.weight", &[D::Q, D::Embd], R, B::All),
            t("blk.{}.post_attention_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff2], R, B::All),
            t("blk.{}.post_ffw_norm.weight", &[D::Embd], R, B::All),
        ],
        rot: Rot::AtMostHead,
        not_run: &[],
    },
    ArchSpec {
        arch: "lfm2",
        keys: &[
            key(
                "attention.head_count_kv",
                Kind::U32OrPerLayer,
                true,
                Range::Int(0, u32::MAX as u64),
            ),
            key("shortconv.l_cache", U, true, Range::Int(1, 1 << 16)),
        ],
        eps: "attention.layer_norm_rms_epsilon",
        qkv: Some(QkvSpec {
            q: D::Embd,
            k: D::K,
            v: D::V,
            required: true,
            blocks: B::Attention,
        }),
        tensors: &[
            // llama.cpp's LLM_TENSOR_OUTPUT_NORM_LFM2 is named `token_embd_norm`.
            t("token_embd_norm.weight", &[D::Embd], R, B::None),
            t("blk.{}.ffn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.ffn_gate.weight", &[D::Embd, D::Ff], R, B::All),
            t("blk.{}.ffn_down.weight", &[D::Ff, D::Embd], R, B::All),
            t("blk.{}.ffn_up.weight", &[D::Embd, D::Ff], R, B::All),
            t("blk.{}.attn_norm.weight", &[D::Embd], R, B::All),
            t("blk.{}.attn_q_norm.weight", &[D::HeadK], R, B::Attention),
            t("blk.{}.attn_k_norm.weight", &[D::HeadK], R, B::Attention),
            t(
                "blk.{}.attn_output.weight",
                &[D::Embd, D::Embd],
                R,
                B::Attention,
            ),
            t(
                "blk.{}.shortconv.conv.weight",
                &[D::LCache, D::Embd],
                R,
                B::Recurrent,
            ),
            t(
                "blk.{}.shortconv.in_proj.weight",
                &[D::Embd, D::Embd3],
                R,
                B::Recurrent,
            ),
            t(
                "blk.{}.shortconv.out_proj.weight",
                &[D::Embd, D::Embd],
                R,
                B::Recurrent,
            ),
        ],
        rot: Rot::EqualsHead,
        not_run: &[],
    },
];

/// The table entry of `arch`.
pub fn arch_spec(arch: &str) -> Option<&'static ArchSpec> {
    ARCHS.iter().find(|a| a.arch == arch)
}

/// The hyper-parameters the shapes are computed from (read and range-checked).
#[derive(Debug, Clone, Default)]
pub struct Hparams {
    pub arch: String,
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_head: u64,
    /// Per block (lfm2: 0 for a convolution block).
    pub n_head_kv: Vec<u64>,
    pub head_k: u64,
    pub head_v: u64,
    pub n_ff: u64,
    pub n_ff_exp: u64,
    pub n_vocab: u64,
    pub n_expert: u64,
    pub n_expert_used: u64,
    pub n_rot: u64,
    pub l_cache: u64,
}

impl Hparams {
    fn dim(&self, d: D, layer: usize) -> u64 {
        let kv = self.n_head_kv.get(layer).copied().unwrap_or(0);
        let m = |a: u64, b: u64| a.saturating_mul(b);
        match d {
            D::Embd => self.n_embd,
            D::Vocab => self.n_vocab,
            D::Q => m(self.head_k, self.n_head),
            D::K => m(self.head_k, kv),
            D::V => m(self.head_v, kv),
            D::Qkv => m(self.head_k, self.n_head)
                .saturating_add(m(self.head_k, kv))
                .saturating_add(m(self.head_v, kv)),
            D::HeadK => self.head_k,
            D::Ff => self.n_ff,
            D::Ff2 => m(2, self.n_ff),
            D::FfExp => self.n_ff_exp,
            D::Expert => self.n_expert,
            D::Rot2 => self.n_rot / 2,
            D::Embd3 => m(3, self.n_embd),
            D::LCache => self.l_cache,
        }
    }
}

/// The type name of a metadata value, as the error lines spell it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F32(_) => "f32",
        Value::F64(_) => "f64",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::F32(x) => format!("{x:e}"),
        Value::F64(x) => format!("{x:e}"),
        Value::U32(x) => x.to_string(),
        other => format!("{other:?}"),
    }
}

/// Reads and checks one hyper-parameter: its type (llama.cpp's), its range. `None`: absent
/// and optional. Scalars as u64 / f64; per-layer arrays expanded.
fn read_key(
    ct: &Content,
    arch: &str,
    k: &KeySpec,
    n_layer: u64,
) -> std::result::Result<Option<Vec<f64>>, String> {
    let full = format!("{arch}.{}", k.key);
    let Some(v) = ct.metadata.get(&full) else {
        if k.required {
            return Err(format!(
                "metadata lacks `{full}` ({} expected; llama.cpp: key not found in model)",
                match k.kind {
                    Kind::F32 => "an f32",
                    _ => "a u32",
                }
            ));
        }
        return Ok(None);
    };
    let vals: Vec<f64> = match (k.kind, v) {
        (Kind::U32 | Kind::U32OrPerLayer, Value::U32(x)) => vec![*x as f64],
        (Kind::F32, Value::F32(x)) => vec![*x as f64],
        (Kind::U32OrPerLayer, Value::Array(a)) => {
            if a.len() as u64 != n_layer {
                return Err(format!(
                    "`{full}` holds an array of {}, expected one u32 per block ({arch}.block_count = {n_layer})",
                    a.len()
                ));
            }
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                match x {
                    Value::U32(x) => out.push(*x as f64),
                    // llama.cpp's converter writes Python ints as INT32 (lfm2's
                    // head_count_kv), and its loader takes INT32 or UINT32 arrays.
                    Value::I32(x) if *x >= 0 => out.push(*x as f64),
                    other => {
                        return Err(format!(
                            "`{full}` holds an array of {}, expected an array of u32 (or non-negative i32)",
                            type_name(other)
                        ))
                    }
                }
            }
            out
        }
        (kind, v) => {
            return Err(format!(
                "`{full}` is of type {} (holds {}), expected {} (llama.cpp: key has wrong type)",
                type_name(v),
                show(v),
                match kind {
                    Kind::F32 => "f32",
                    Kind::U32 => "u32",
                    Kind::U32OrPerLayer => "u32 or an array of u32",
                }
            ))
        }
    };
    for x in &vals {
        let ok = match k.range {
            Range::Int(lo, hi) => *x >= lo as f64 && *x <= hi as f64,
            Range::Float(lo, hi) => x.is_finite() && *x > lo && *x <= hi,
        };
        if !ok {
            let want = match k.range {
                Range::Int(lo, hi) => format!("an integer in {lo}..={hi}"),
                Range::Float(lo, hi) => format!("a finite number in ({lo:e}, {hi:e}]"),
            };
            return Err(format!(
                "`{full}` holds {}, expected {want}",
                if vals.len() > 1 {
                    format!("{x} in its per-block array")
                } else {
                    show(v)
                }
            ));
        }
    }
    Ok(Some(vals))
}

/// The hyper-parameters of `ct` for `spec`, checked (types, ranges, head counts dividing the
/// widths, experts); the tensor shapes are checked against them by [`expected_tensors`].
pub fn hparams(ct: &Content, spec: &ArchSpec) -> std::result::Result<Hparams, String> {
    let a = spec.arch;
    // Arch-specific entries override the common ones of the same key.
    let mut keys: Vec<KeySpec> = COMMON_KEYS
        .iter()
        .filter(|c| !spec.keys.iter().any(|k| k.key == c.key))
        .copied()
        .collect();
    keys.extend(spec.keys.iter().copied());
    keys.push(key(spec.eps, F, true, EPS));
    let n_layer = read_key(
        ct,
        a,
        &key("block_count", U, true, Range::Int(1, MAX_LAYERS)),
        0,
    )?
    .map(|v| v[0] as u64)
    .unwrap_or(0);
    let mut got: HashMap<&str, Vec<f64>> = HashMap::new();
    for k in &keys {
        if let Some(v) = read_key(ct, a, k, n_layer)? {
            got.insert(k.key, v);
        }
    }
    let u = |k: &str| got.get(k).map(|v| v[0] as u64);
    let n_embd = u("embedding_length").unwrap_or(0);
    let n_head = u("attention.head_count").unwrap_or(0);
    let n_head_kv: Vec<u64> = match got.get("attention.head_count_kv") {
        Some(v) if v.len() > 1 => v.iter().map(|x| *x as u64).collect(),
        Some(v) => vec![v[0] as u64; n_layer as usize],
        None => vec![n_head; n_layer as usize],
    };
    let per_block = got
        .get("attention.head_count_kv")
        .is_some_and(|v| v.len() > 1);
    for (i, &kv) in n_head_kv.iter().enumerate() {
        let per = if per_block {
            format!(" (block {i})")
        } else {
            String::new()
        };
        if kv == 0 && spec.arch != "lfm2" {
            return Err(format!(
                "`{a}.attention.head_count_kv` holds 0{per}, expected a divisor of `{a}.attention.head_count` = {n_head}"
            ));
        }
        if kv > 0 && n_head % kv != 0 {
            return Err(format!(
                "`{a}.attention.head_count_kv` holds {kv}{per}, expected a divisor of `{a}.attention.head_count` = {n_head}"
            ));
        }
    }
    let head_k = match u("attention.key_length") {
        Some(k) => k,
        None => {
            if n_embd % n_head != 0 {
                return Err(format!(
                    "`{a}.embedding_length` = {n_embd} is not a multiple of `{a}.attention.head_count` = {n_head} and there is no `{a}.attention.key_length`"
                ));
            }
            n_embd / n_head
        }
    };
    let head_v = u("attention.value_length").unwrap_or(n_embd / n_head);
    let n_rot = u("rope.dimension_count").unwrap_or(head_k);
    match spec.rot {
        Rot::EqualsHead if n_rot != head_k => {
            // Without key_length the head size comes from head_count: either field may be
            // the wrong one, so both are named.
            let from = match u("attention.key_length") {
                Some(_) => format!("`{a}.attention.key_length`"),
                None => format!(
                    "`{a}.embedding_length` {n_embd} / `{a}.attention.head_count` {n_head}"
                ),
            };
            return Err(format!(
                "`{a}.rope.dimension_count` holds {n_rot}, expected the head size {head_k} ({from}): the implementations rotate whole heads"
            ));
        }
        Rot::AtMostHead if n_rot > head_k || n_rot % 2 != 0 => {
            return Err(format!(
                "`{a}.rope.dimension_count` holds {n_rot}, expected an even number at most the head size {head_k}"
            ))
        }
        _ => {}
    }
    let n_expert = u("expert_count").unwrap_or(0);
    let n_expert_used = u("expert_used_count").unwrap_or(0);
    if n_expert_used > n_expert || (n_expert > 0 && n_expert_used == 0) {
        return Err(format!(
            "`{a}.expert_used_count` holds {n_expert_used}, expected 1..={n_expert} (`{a}.expert_count` = {n_expert}); 0 without experts"
        ));
    }
    let n_ff = u("feed_forward_length").unwrap_or(0);
    let n_ff_exp = u("expert_feed_forward_length")
        .unwrap_or_else(|| n_ff.checked_div(n_expert_used).unwrap_or(0));
    let n_vocab = vocab(ct, a)?;
    Ok(Hparams {
        arch: a.to_string(),
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_k,
        head_v,
        n_ff,
        n_ff_exp,
        n_vocab,
        n_expert,
        n_expert_used,
        n_rot,
        l_cache: u("shortconv.l_cache").unwrap_or(0),
    })
}

/// llama.cpp's n_vocab: `<arch>.vocab_size`, else the length of `tokenizer.ggml.tokens`; the
/// rows of `token_embd.weight` without either.
fn vocab(ct: &Content, a: &str) -> std::result::Result<u64, String> {
    if let Some(v) = ct.metadata.get(&format!("{a}.vocab_size")) {
        return match v {
            Value::U32(x) if *x > 0 => Ok(*x as u64),
            other => Err(format!(
                "`{a}.vocab_size` holds {} ({}), expected a positive u32",
                show(other),
                type_name(other)
            )),
        };
    }
    if let Some(v) = ct.metadata.get("tokenizer.ggml.tokens") {
        return match v {
            Value::Array(t) if !t.is_empty() => Ok(t.len() as u64),
            other => Err(format!(
                "`tokenizer.ggml.tokens` holds {} ({}), expected a non-empty array of strings",
                show(other),
                type_name(other)
            )),
        };
    }
    Ok(ct
        .tensor_infos
        .get("token_embd.weight")
        .and_then(|t| t.shape.dims().first().copied())
        .unwrap_or(0) as u64)
}

/// One tensor the architecture expects: name, shape (ggml order), whether it must be there,
/// and which hyper-parameters each dimension comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub name: String,
    pub ne: Vec<u64>,
    pub need: Need,
    pub dims: Vec<D>,
    /// llama.cpp reads it but the project's implementations do not.
    pub not_run: bool,
}

fn in_blocks(b: Blocks, h: &Hparams, layer: usize) -> bool {
    let kv = h.n_head_kv.get(layer).copied().unwrap_or(0);
    match b {
        Blocks::None => false,
        Blocks::All => true,
        Blocks::Attention => kv > 0,
        Blocks::Recurrent => kv == 0,
        Blocks::Dense => h.n_expert == 0,
        Blocks::Moe => h.n_expert > 0,
    }
}

/// Every tensor `spec` expects of a model with hyper-parameters `h` (the fused-or-separate
/// QKV choice made by what `present` holds, as llama.cpp's `create_tensor_qkv` does).
pub fn expected_for(spec: &ArchSpec, h: &Hparams, present: &dyn Fn(&str) -> bool) -> Vec<Expected> {
    let mut out: Vec<Expected> = Vec::new();
    let not_run = |name: &str| {
        let short = name
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .map(|(_, s)| s);
        spec.not_run.iter().any(|n| Some(*n) == short || *n == name)
    };
    let mut push = |name: String, dims: &[D], need: Need, layer: usize| {
        let nr = not_run(&name);
        out.push(Expected {
            ne: dims.iter().map(|d| h.dim(*d, layer)).collect(),
            dims: dims.to_vec(),
            need,
            not_run: nr,
            name,
        });
    };
    // The arch's own entries first: they override HEAD's of the same name (phi2's output).
    let mut top: BTreeSet<&str> = BTreeSet::new();
    for s in spec.tensors.iter().chain(HEAD) {
        if s.blocks == Blocks::None {
            if s.name == "output_norm.weight" && spec.arch == "lfm2" {
                continue;
            }
            if top.insert(s.name) {
                push(s.name.to_string(), s.shape, s.need, 0);
            }
        }
    }
    for layer in 0..h.n_layer as usize {
        if let Some(q) = spec.qkv {
            if in_blocks(q.blocks, h, layer) {
                let n = |x: &str| format!("blk.{layer}.{x}");
                if present(&n("attn_qkv.weight")) {
                    push(
                        n("attn_qkv.weight"),
                        &[D::Embd, D::Qkv],
                        Need::Optional,
                        layer,
                    );
                    if present(&n("attn_qkv.bias")) {
                        push(n("attn_qkv.bias"), &[D::Qkv], Need::Optional, layer);
                    } else {
                        push(n("attn_q.bias"), &[q.q], Need::Optional, layer);
                        push(n("attn_k.bias"), &[q.k], Need::Optional, layer);
                        push(n("attn_v.bias"), &[q.v], Need::Optional, layer);
                    }
                } else {
                    let need = if q.required {
                        Need::Required
                    } else {
                        Need::Optional
                    };
                    push(n("attn_q.weight"), &[D::Embd, q.q], need, layer);
                    push(n("attn_k.weight"), &[D::Embd, q.k], need, layer);
                    push(n("attn_v.weight"), &[D::Embd, q.v], need, layer);
                    push(n("attn_q.bias"), &[q.q], Need::Optional, layer);
                    push(n("attn_k.bias"), &[q.k], Need::Optional, layer);
                    push(n("attn_v.bias"), &[q.v], Need::Optional, layer);
                }
            }
        }
        for s in spec.tensors {
            if s.blocks != Blocks::None && in_blocks(s.blocks, h, layer) {
                push(
                    s.name.replace("{}", &layer.to_string()),
                    s.shape,
                    s.need,
                    layer,
                );
            }
        }
    }
    out
}

/// Every tensor the architecture of `ct` expects, with the hyper-parameters they come from
/// (see [`expected_for`]; the fused-or-separate QKV choice made by what the file holds).
pub fn expected_tensors(
    arch: &str,
    ct: &Content,
) -> std::result::Result<(Hparams, Vec<Expected>), String> {
    let spec = arch_spec(arch).ok_or_else(|| unknown_arch(arch))?;
    let h = hparams(ct, spec)?;
    let e = expected_for(spec, &h, &|n| ct.tensor_infos.contains_key(n));
    Ok((h, e))
}

fn unknown_arch(arch: &str) -> String {
    format!(
        "`general.architecture` holds {arch:?}, expected one of {}",
        ARCHS.iter().map(|a| a.arch).collect::<Vec<_>>().join(", ")
    )
}

/// The architecture's checks (see the module doc) on a header [`read_checked`] produced.
pub fn check_arch(path: &Path, ct: &Content) -> Result<()> {
    check_arch_inner(ct).map_err(|e| bad(path, e))
}

fn check_arch_inner(ct: &Content) -> std::result::Result<(), String> {
    let arch = match ct.metadata.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "`general.architecture` is of type {}, expected a string",
                type_name(other)
            ))
        }
        None => return Err("metadata lacks `general.architecture`".into()),
    };
    let (h, expected) = expected_tensors(&arch, ct)?;
    let a = arch.as_str();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for e in &expected {
        let Some(info) = ct.tensor_infos.get(&e.name) else {
            if e.need == Need::Required {
                let why = match e.name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
                    Some((b, _)) => {
                        format!(" (`{a}.block_count` = {} says block {b} exists)", h.n_layer)
                    }
                    None => String::new(),
                };
                return Err(format!(
                    "tensor `{}` is missing{why}: the file is incomplete, or not a {a} model (llama.cpp: missing tensor)",
                    e.name
                ));
            }
            continue;
        };
        let mut ne: Vec<u64> = info.shape.dims().iter().rev().map(|&d| d as u64).collect();
        // llama.cpp compares 4 dims with the missing ones 1: [n, 1] is [n].
        while ne.len() > e.ne.len() && ne.last() == Some(&1) {
            ne.pop();
        }
        if ne != e.ne {
            let from: Vec<String> = e
                .dims
                .iter()
                .zip(&e.ne)
                .enumerate()
                .filter(|(i, _)| ne.get(*i) != e.ne.get(*i))
                .map(|(_, (d, v))| format!("{v} from {}", d.source(a)))
                .collect();
            return Err(format!(
                "tensor `{}` has shape {:?} (ggml order), expected {:?} ({}) (llama.cpp: tensor has wrong shape)",
                e.name,
                ne,
                e.ne,
                if from.is_empty() {
                    "a different rank".to_string()
                } else {
                    from.join("; ")
                }
            ));
        }
        if e.not_run {
            return Err(format!(
                "tensor `{}` is part of a {a} model as llama.cpp runs it, but the project's implementations of {a} do not read it: they would run a different model than the file describes",
                e.name
            ));
        }
        used.insert(e.name.as_str());
    }
    // llama.cpp: "wrong number of tensors" — every tensor in the file must be used.
    let mut extra: Vec<&String> = ct
        .tensor_infos
        .keys()
        .filter(|n| !used.contains(n.as_str()))
        .collect();
    extra.sort();
    if let Some(x) = extra.first() {
        let block = x
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(b, _)| b.parse::<u64>().ok());
        let why = match block {
            Some(b) if b >= h.n_layer => format!(
                "block {b} is past `{a}.block_count` = {} (the file has blocks up to {})",
                h.n_layer,
                last_block(ct).unwrap_or(b)
            ),
            _ => format!("no {a} model with these hyper-parameters reads it"),
        };
        return Err(format!(
            "tensor `{x}` is not used: {why} ({} of {} tensors unused; llama.cpp: wrong number of tensors)",
            extra.len(),
            ct.tensor_infos.len()
        ));
    }
    Ok(())
}

fn last_block(ct: &Content) -> Option<u64> {
    ct.tensor_infos
        .keys()
        .filter_map(|n| {
            n.strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(b, _)| b.parse::<u64>().ok())
        })
        .max()
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

    fn content(md: Vec<(&str, Value)>, tensors: Vec<(String, Vec<usize>)>) -> Content {
        use candle_core::quantized::gguf_file::{TensorInfo, VersionedMagic};
        Content {
            magic: VersionedMagic::GgufV3,
            metadata: md.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensor_infos: tensors
                .into_iter()
                .map(|(n, ne)| {
                    let mut d = ne;
                    d.reverse();
                    (
                        n,
                        TensorInfo {
                            ggml_dtype: GgmlDType::F32,
                            shape: candle_core::Shape::from(d),
                            offset: 0,
                        },
                    )
                })
                .collect(),
            tensor_data_offset: 0,
        }
    }

    /// A 2-block llama (ggml order shapes): embd 8, 2 heads of 4, 1 KV head, ff 16, vocab 10.
    fn llama(block_count: u32, extra: &[(&str, Vec<usize>)]) -> Content {
        let md = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.context_length", Value::U32(64)),
            ("llama.embedding_length", Value::U32(8)),
            ("llama.block_count", Value::U32(block_count)),
            ("llama.feed_forward_length", Value::U32(16)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(1)),
            ("llama.rope.dimension_count", Value::U32(4)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.vocab_size", Value::U32(10)),
        ];
        let mut ts: Vec<(String, Vec<usize>)> = vec![
            ("token_embd.weight".into(), vec![8, 10]),
            ("output_norm.weight".into(), vec![8]),
        ];
        let per = [
            ("attn_norm.weight", vec![8]),
            ("attn_q.weight", vec![8, 8]),
            ("attn_k.weight", vec![8, 4]),
            ("attn_v.weight", vec![8, 4]),
            ("attn_output.weight", vec![8, 8]),
            ("ffn_norm.weight", vec![8]),
            ("ffn_gate.weight", vec![8, 16]),
            ("ffn_down.weight", vec![16, 8]),
            ("ffn_up.weight", vec![8, 16]),
        ];
        for b in 0..2 {
            for (n, s) in &per {
                ts.push((format!("blk.{b}.{n}"), s.clone()));
            }
        }
        ts.extend(extra.iter().map(|(n, s)| (n.to_string(), s.clone())));
        content(md, ts)
    }

    #[test]
    fn a_consistent_file_passes_and_each_contradiction_names_its_field() {
        check_arch_inner(&llama(2, &[])).unwrap();
        let e = check_arch_inner(&llama(1, &[])).unwrap_err();
        assert!(e.contains("block 1 is past `llama.block_count` = 1"), "{e}");
        let e = check_arch_inner(&llama(3, &[])).unwrap_err();
        assert!(
            e.contains("`llama.block_count` = 3 says block 2 exists"),
            "{e}"
        );
        let e = check_arch_inner(&llama(2, &[("blk.0.attn_q.bias", vec![8])])).unwrap_err();
        assert!(e.contains("do not read it"), "{e}");
        let mut c = llama(2, &[]);
        c.metadata
            .insert("llama.feed_forward_length".into(), Value::U32(32));
        let e = check_arch_inner(&c).unwrap_err();
        assert!(e.contains("llama.feed_forward_length"), "{e}");
        let mut c = llama(2, &[]);
        c.metadata.insert(
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(f32::NAN),
        );
        let e = check_arch_inner(&c).unwrap_err();
        assert!(e.contains("layer_norm_rms_epsilon` holds NaN"), "{e}");
        let mut c = llama(2, &[]);
        c.metadata
            .insert("llama.attention.head_count".into(), Value::U64(2));
        let e = check_arch_inner(&c).unwrap_err();
        assert!(e.contains("is of type u64"), "{e}");
    }

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
