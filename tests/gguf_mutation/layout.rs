//! An independent reader of a GGUF file's layout (GGUF v2/v3, little endian), and a seeded RNG.

// ------------------------------------------------------------------------------------------
// An independent reader of a GGUF file's layout (GGUF v2/v3, little endian).

#[derive(Debug, Clone)]
pub(super) struct Kv {
    pub(super) key: String,
    /// Offset of the key's u64 length.
    pub(super) key_at: usize,
    pub(super) type_at: usize,
    pub(super) value_at: usize,
    pub(super) vtype: u32,
    /// Array: (element type, offset of its u64 length, length).
    pub(super) arr: Option<(u32, usize, u64)>,
}

#[derive(Debug, Clone)]
pub(super) struct Ti {
    pub(super) name: String,
    pub(super) name_at: usize,
    pub(super) ndims_at: usize,
    pub(super) dims_at: usize,
    pub(super) dims: Vec<u64>,
    pub(super) type_at: usize,
    pub(super) ty: u32,
    pub(super) offset_at: usize,
    pub(super) offset: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) kvs: Vec<Kv>,
    pub(super) tis: Vec<Ti>,
    pub(super) header_end: usize,
    pub(super) data_at: usize,
}

pub(super) fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub(super) fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
pub(super) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(super) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn fixed_size(t: u32) -> usize {
    match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => 0,
    }
}

pub(super) fn skip_value(b: &[u8], mut at: usize, t: u32) -> usize {
    match t {
        8 => at + 8 + rd_u64(b, at) as usize,
        9 => {
            let et = rd_u32(b, at);
            let n = rd_u64(b, at + 4);
            at += 12;
            for _ in 0..n {
                at = skip_value(b, at, et);
            }
            at
        }
        t => at + fixed_size(t),
    }
}

/// The layout of a valid GGUF file, read only from its header (the first `len` bytes suffice).
pub(super) fn layout(b: &[u8]) -> Layout {
    assert_eq!(&b[..4], b"GGUF");
    let n_t = rd_u64(b, 8) as usize;
    let n_kv = rd_u64(b, 16) as usize;
    let mut at = 24;
    let mut kvs = Vec::new();
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key_at = at;
        let kl = rd_u64(b, at) as usize;
        let key = String::from_utf8_lossy(&b[at + 8..at + 8 + kl]).into_owned();
        at += 8 + kl;
        let type_at = at;
        let vtype = rd_u32(b, at);
        at += 4;
        let value_at = at;
        let arr = (vtype == 9).then(|| (rd_u32(b, at), at + 4, rd_u64(b, at + 4)));
        if key == "general.alignment" {
            alignment = rd_u32(b, at) as u64;
        }
        at = skip_value(b, at, vtype);
        kvs.push(Kv {
            key,
            key_at,
            type_at,
            value_at,
            vtype,
            arr,
        });
    }
    let mut tis = Vec::new();
    for _ in 0..n_t {
        let name_at = at;
        let nl = rd_u64(b, at) as usize;
        let name = String::from_utf8_lossy(&b[at + 8..at + 8 + nl]).into_owned();
        at += 8 + nl;
        let ndims_at = at;
        let nd = rd_u32(b, at) as usize;
        at += 4;
        let dims_at = at;
        let dims = (0..nd).map(|i| rd_u64(b, at + 8 * i)).collect();
        at += 8 * nd;
        let type_at = at;
        let ty = rd_u32(b, at);
        at += 4;
        let offset_at = at;
        let offset = rd_u64(b, at);
        at += 8;
        tis.push(Ti {
            name,
            name_at,
            ndims_at,
            dims_at,
            dims,
            type_at,
            ty,
            offset_at,
            offset,
        });
    }
    let data_at = (at as u64).div_ceil(alignment) * alignment;
    Layout {
        kvs,
        tis,
        header_end: at,
        data_at: data_at as usize,
    }
}

/// ggml's (block size, type size) of the types candle reads, from ggml.c's type traits.
pub(super) fn ggml_sizes(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        _ => return None,
    })
}

pub(super) fn tensor_bytes(dims: &[u64], t: u32) -> Option<u64> {
    let (b, s) = ggml_sizes(t)?;
    let n: u64 = dims.iter().product();
    dims[0].is_multiple_of(b).then_some(n / b * s)
}

// ------------------------------------------------------------------------------------------
// Mutations

pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub(super) fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}
