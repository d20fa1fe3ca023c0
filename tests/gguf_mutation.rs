//! GGUF files are untrusted input (issue 44). From each family's fixture GGUF this writes
//! seeded, structurally mutated copies (truncations, counts, string and array lengths, value
//! types, tensor dims / types / offsets, hyper-parameter values and types, header bytes, random
//! byte flips) and loads each in-process as the CLI does (header, model, tokenizer from the
//! file, a 2-token forward), under `catch_unwind` and a time bound. Each must either run or end
//! in one clean line: no panic, no hang, no allocation beyond the file's size (peak RSS growth
//! bounded). Every mutation of a class that changes which model runs must be refused, naming
//! the field or tensor.
//!
//! The layout of the files is parsed here, independently of the code under test
//! (crates/models/src/models/gguf/check.rs and families/check.rs), from the GGUF spec.
//!
//! `cargo test --test gguf_mutation` runs a few hundred cases; the long run
//! (`cargo test --test gguf_mutation -- --ignored --nocapture long_run`) 6,000; the real Gemma
//! 3 270M test skips unless the model is installed (mandatory with MODELBENCH_REQUIRE_QUALITY=1).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use candle_core::Device;
use modelbench::engine::scenario::prepare;
use modelbench::models::sources::ModelRef;
use modelbench::models::{gguf, sources, tokenizers, CausalLm, Weights};

#[path = "gguf_mutation/layout.rs"]
mod layout;
use layout::*;

/// One test at a time in this binary: RSS is the process's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A mutated copy: its class, what was done, and for the classes that change which model
/// runs, a string the refusal must contain (the field or tensor).
struct Case {
    class: &'static str,
    what: String,
    bytes: Vec<u8>,
    must_name: Option<String>,
}

/// The classes that change which model runs: each must be refused, naming `must_name`.
const NAMED: [&str; 11] = [
    "block_count",
    "head_count",
    "head_count_kv",
    "key_length",
    "feed_forward_length",
    "norm_eps",
    "freq_base",
    "context_length",
    "hparam_type",
    "tensor_type",
    "tensor_offset",
];
/// Structural classes: each must end cleanly (run, or one line).
const STRUCTURAL: [&str; 10] = [
    "truncate",
    "counts",
    "string_length",
    "array_length",
    "value_type",
    "tensor_dims",
    "header_bytes",
    "header_flips",
    "tensor_ndims",
    "data_flips",
];

fn kv<'a>(l: &'a Layout, suffix: &str) -> Option<&'a Kv> {
    l.kvs
        .iter()
        .find(|k| k.key.ends_with(suffix) && !k.key.starts_with("tokenizer."))
}

/// One case of `class` from `orig`, or None where the file has nothing of that class (a key
/// it lacks).
fn mutate(orig: &[u8], l: &Layout, class: &'static str, rng: &mut Rng) -> Option<Case> {
    let mut b = orig.to_vec();
    let u32_key = |b: &mut Vec<u8>, rng: &mut Rng, suffix: &str, vals: &dyn Fn(u32) -> Vec<u32>| {
        let k = kv(l, suffix)?;
        // A per-block array in place of the scalar (lfm2's head_count_kv: 0 on its
        // convolution blocks) is not mutated by this class.
        if k.vtype != 4 {
            return None;
        }
        let old = rd_u32(b, k.value_at);
        let choices: Vec<u32> = vals(old).into_iter().filter(|v| *v != old).collect();
        let v = *rng.pick(&choices);
        put_u32(b, k.value_at, v);
        Some((k.key.clone(), format!("{} {old} -> {v}", k.key)))
    };
    let f32_key = |b: &mut Vec<u8>, rng: &mut Rng, suffix: &str, vals: &[f32]| {
        let k = kv(l, suffix)?;
        assert_eq!(k.vtype, 6, "{} is an f32 in the fixture", k.key);
        let old = f32::from_le_bytes(b[k.value_at..k.value_at + 4].try_into().unwrap());
        let v = *rng.pick(vals);
        b[k.value_at..k.value_at + 4].copy_from_slice(&v.to_le_bytes());
        Some((k.key.clone(), format!("{} {old:e} -> {v:e}", k.key)))
    };
    let big = [0x7fff_ffffu32, u32::MAX, 1 << 20];
    let (what, must): (String, Option<String>) = match class {
        "block_count" => {
            let (k, w) = u32_key(&mut b, rng, ".block_count", &|n| {
                let mut v = vec![0, n.saturating_sub(1), n + 1, 7, 2 * n];
                v.extend(big);
                v
            })?;
            (w, Some(k))
        }
        "head_count" => {
            let (k, w) = u32_key(&mut b, rng, ".attention.head_count", &|n| {
                let mut v = vec![0, 2 * n, n + 1, n.saturating_sub(1)];
                v.extend(big);
                v
            })?;
            (w, Some(k))
        }
        "head_count_kv" => {
            let (k, w) = u32_key(&mut b, rng, ".attention.head_count_kv", &|n| {
                let mut v = vec![0, 2 * n, n + 1];
                v.extend(big);
                v
            })?;
            (w, Some(k))
        }
        "key_length" => {
            let (k, w) = u32_key(&mut b, rng, ".attention.key_length", &|n| {
                let mut v = vec![0, 2 * n, n / 2, n + 2];
                v.extend(big);
                v
            })?;
            (w, Some(k))
        }
        "feed_forward_length" => {
            // The width the file's MLP tensors have: a qwen3moe file's experts are
            // `expert_feed_forward_length` wide, and its `feed_forward_length` (the dense
            // width, no tensor of that file has it) is not read by llama.cpp's qwen3moe.
            let key = match kv(l, ".expert_feed_forward_length") {
                Some(_) => ".expert_feed_forward_length",
                None => ".feed_forward_length",
            };
            let (k, w) = u32_key(&mut b, rng, key, &|n| {
                let mut v = vec![0, 2 * n, n - 1, n + 32];
                v.extend(big);
                v
            })?;
            (w, Some(k))
        }
        "context_length" => {
            let (k, w) = u32_key(&mut b, rng, ".context_length", &|_| {
                vec![0, 0x7fff_ffff, u32::MAX]
            })?;
            (w, Some(k))
        }
        "norm_eps" => {
            let (k, w) = f32_key(
                &mut b,
                rng,
                ".attention.layer_norm_rms_epsilon",
                &[f32::NAN, 0.0, -1e-6, f32::INFINITY, 1e30, -0.0],
            )?;
            (w, Some(k))
        }
        "freq_base" => {
            let (k, w) = f32_key(
                &mut b,
                rng,
                ".rope.freq_base",
                &[f32::NAN, 0.0, -1e4, f32::INFINITY, f32::NEG_INFINITY, 1e30],
            )?;
            (w, Some(k))
        }
        "hparam_type" => {
            // A u32 hyper-parameter recorded as another 4-byte type (same bytes).
            let ks: Vec<&Kv> = l
                .kvs
                .iter()
                .filter(|k| {
                    k.vtype == 4
                        && [
                            ".block_count",
                            ".embedding_length",
                            ".attention.head_count",
                            ".feed_forward_length",
                            ".context_length",
                        ]
                        .iter()
                        .any(|s| k.key.ends_with(s))
                })
                .collect();
            let k = *rng.pick(&ks);
            let t = *rng.pick(&[5u32, 6]);
            put_u32(&mut b, k.type_at, t);
            (
                format!(
                    "{} type u32 -> {}",
                    k.key,
                    if t == 5 { "i32" } else { "f32" }
                ),
                Some(k.key.clone()),
            )
        }
        "tensor_type" => {
            // A type whose bytes for the shape differ (or which candle cannot read).
            let ti = rng.pick(&l.tis).clone();
            let old = tensor_bytes(&ti.dims, ti.ty);
            let cands: Vec<u32> = [
                0u32, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 30, 99,
            ]
            .into_iter()
            .filter(|t| *t != ti.ty && tensor_bytes(&ti.dims, *t) != old)
            .collect();
            let t = *rng.pick(&cands);
            put_u32(&mut b, ti.type_at, t);
            (
                format!("{} type {} -> {t}", ti.name, ti.ty),
                Some(ti.name.clone()),
            )
        }
        "tensor_offset" => {
            let ti = rng.pick(&l.tis).clone();
            let d = *rng.pick(&[1u64, 2, 4, 8, 16, 31, 32, 64, u64::MAX / 2]);
            let neg = rng.below(2) == 0 && ti.offset >= d;
            let v = if neg {
                ti.offset - d
            } else {
                ti.offset.wrapping_add(d)
            };
            put_u64(&mut b, ti.offset_at, v);
            (
                format!("{} offset {} -> {v}", ti.name, ti.offset),
                Some(ti.name.clone()),
            )
        }
        "truncate" => {
            let n = match rng.below(3) {
                0 => rng.below(l.header_end),
                1 => l.data_at + rng.below(b.len() - l.data_at),
                _ => b.len() - 1 - rng.below(64),
            };
            b.truncate(n);
            (format!("truncated to {n} of {}", orig.len()), None)
        }
        "counts" => {
            let at = *rng.pick(&[8usize, 16]);
            let old = rd_u64(&b, at);
            let v = *rng.pick(&[
                0,
                old + 1,
                old.saturating_sub(1),
                1 << 40,
                u64::MAX,
                1 << 62,
            ]);
            put_u64(&mut b, at, v);
            (
                format!(
                    "{} count {old} -> {v}",
                    if at == 8 { "tensor" } else { "kv" }
                ),
                None,
            )
        }
        "string_length" => {
            // A key or tensor name length, or a string value's.
            let at = match rng.below(3) {
                0 => rng.pick(&l.kvs).key_at,
                1 => rng.pick(&l.tis).name_at,
                _ => {
                    let s: Vec<&Kv> = l.kvs.iter().filter(|k| k.vtype == 8).collect();
                    rng.pick(&s).value_at
                }
            };
            let old = rd_u64(&b, at);
            let v = *rng.pick(&[
                0,
                old + 1,
                old.saturating_sub(1),
                1 << 30,
                1 << 62,
                u64::MAX,
                65,
            ]);
            put_u64(&mut b, at, v);
            (format!("string length at {at} {old} -> {v}"), None)
        }
        "array_length" => {
            let arrs: Vec<&Kv> = l.kvs.iter().filter(|k| k.arr.is_some()).collect();
            let k = rng.pick(&arrs);
            let (_, at, n) = k.arr.unwrap();
            let v = *rng.pick(&[
                0,
                n + 1,
                n.saturating_sub(1),
                n / 2,
                1 << 30,
                1 << 62,
                u64::MAX,
            ]);
            put_u64(&mut b, at, v);
            (format!("{} array length {n} -> {v}", k.key), None)
        }
        "value_type" => {
            let k = rng.pick(&l.kvs);
            let at = if k.arr.is_some() && rng.below(2) == 0 {
                k.value_at
            } else {
                k.type_at
            };
            let v = rng.below(16) as u32;
            put_u32(&mut b, at, v);
            (format!("{} type field -> {v}", k.key), None)
        }
        "tensor_dims" => {
            let ti = rng.pick(&l.tis).clone();
            let i = rng.below(ti.dims.len());
            let old = ti.dims[i];
            let v = *rng.pick(&[
                0,
                old * 2,
                old + 1,
                old.saturating_sub(1),
                1 << 62,
                u64::MAX,
                1 << 31,
            ]);
            put_u64(&mut b, ti.dims_at + 8 * i, v);
            (format!("{} dim {i} {old} -> {v}", ti.name), None)
        }
        "tensor_ndims" => {
            let ti = rng.pick(&l.tis).clone();
            let v = *rng.pick(&[0u32, 1, 2, 3, 5, 64, u32::MAX]);
            put_u32(&mut b, ti.ndims_at, v);
            (format!("{} n_dims {} -> {v}", ti.name, ti.dims.len()), None)
        }
        "header_bytes" => {
            let at = rng.below(24);
            let v = rng.next() as u8;
            b[at] = v;
            (format!("header byte {at} -> {v:#04x}"), None)
        }
        "header_flips" => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let at = rng.below(l.header_end);
                b[at] ^= 1 << rng.below(8);
            }
            (format!("{n} bit flips in the header"), None)
        }
        "data_flips" => {
            let n = 1 + rng.below(16);
            for _ in 0..n {
                let at = l.data_at + rng.below(b.len() - l.data_at);
                b[at] = rng.next() as u8;
            }
            (format!("{n} random bytes in the tensor data"), None)
        }
        other => panic!("unknown class {other}"),
    };
    Some(Case {
        class,
        what,
        bytes: b,
        must_name: must,
    })
}

/// Turns the file at `path`, holding `from`, into `to`: writes the bytes that differ and sets
/// the length.
fn patch(path: &Path, from: &[u8], to: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let n = from.len().min(to.len());
    // Equal blocks are skipped with slice compares (memcmp): a byte-by-byte scan of a 12-25
    // MB fixture, twice per case, was 128 of this test's 177 s.
    const B: usize = 1 << 16;
    let mut first = 0;
    while first + B <= n && from[first..first + B] == to[first..first + B] {
        first += B;
    }
    let first = (first..n).find(|&i| from[i] != to[i]).unwrap_or(n);
    let mut last = n;
    while last >= first + B && from[last - B..last] == to[last - B..last] {
        last -= B;
    }
    let last = (first..last)
        .rev()
        .find(|&i| from[i] != to[i])
        .map(|i| i + 1)
        .unwrap_or(first);
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    if first < last {
        f.seek(SeekFrom::Start(first as u64)).unwrap();
        f.write_all(&to[first..last]).unwrap();
    }
    if to.len() != from.len() {
        f.set_len(to.len() as u64).unwrap();
        if to.len() > from.len() {
            f.seek(SeekFrom::Start(from.len() as u64)).unwrap();
            f.write_all(&to[from.len()..]).unwrap();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Running one case

#[derive(Debug)]
enum Outcome {
    Ran,
    Refused(String),
    Panicked(String),
    Hung,
}

/// Loads `path` as `modelbench generate` does (header, model capped at 64 positions, the
/// tokenizer in the file) and runs a 2-token forward, under catch_unwind, on a thread given
/// `limit`.
fn run_one(path: &Path, limit: Duration) -> Outcome {
    let p = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| -> modelbench::error::Result<()> {
            let mut m: Box<dyn CausalLm> =
                sources::gguf::load_with(&p, None, &Device::Cpu, Some(64))?;
            let ct = gguf::check::read_header(&p)?;
            if tokenizers::gguf::has_tokenizer(&ct) {
                tokenizers::gguf::from_content(&p, &ct)?;
            }
            m.forward(&[1, 2], 0)?;
            Ok(())
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(Ok(()))) => Outcome::Ran,
        Ok(Ok(Err(e))) => Outcome::Refused(e.to_string()),
        Ok(Err(p)) => Outcome::Panicked(
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default(),
        ),
        Err(_) => Outcome::Hung,
    }
}

#[derive(Default)]
struct Tally {
    /// class -> (cases, refused, ran)
    by_class: BTreeMap<&'static str, (usize, usize, usize)>,
    failures: Vec<String>,
    max_rss_growth: u64,
    /// class -> seconds of its runs (load and forward)
    secs: BTreeMap<&'static str, f64>,
}

/// The names of every GGUF fixture of the family table.
fn every_fixture() -> Vec<String> {
    modelbench::models::families::GGUF_FAMILIES
        .iter()
        .flat_map(|f| f.fixtures.iter().map(|x| x.name.to_string()))
        .collect()
}

fn fixture(family: &str) -> PathBuf {
    let label = format!("gguf:fixture:{family}");
    let r = ModelRef::parse(&label).unwrap();
    let res = prepare(&label, &r, &[]).unwrap();
    match res.weights {
        Weights::Gguf(p) => p,
        other => panic!("{label}: {other:?}"),
    }
}

/// Runs `n_random` seeded cases per fixture (classes drawn in turn) plus, per fixture, every
/// named class `per_named` times; returns the tally.
fn campaign(families: &[&str], per_named: usize, n_random: usize, seed: u64, dir: &Path) -> Tally {
    let mut tally = Tally::default();
    let limit = Duration::from_secs(30);
    let rss_ok = modelbench::measure::memory::reset_rss_peak();
    for (fi, fam) in families.iter().enumerate() {
        let src = fixture(fam);
        let orig = std::fs::read(&src).unwrap();
        let l = layout(&orig);
        // The unmodified file runs.
        match run_one(&src, limit) {
            Outcome::Ran => {}
            o => panic!("{fam}: the unmodified fixture does not run: {o:?}"),
        }
        let mut rng = Rng(seed ^ (fi as u64) << 32);
        // One working copy, patched in place per case and put back after (a header patch
        // writes a few bytes, not the whole file).
        let work = dir.join(format!("{fam}.gguf"));
        std::fs::write(&work, &orig).unwrap();
        let path = work.clone();
        let mut plan: Vec<&'static str> = Vec::new();
        for c in NAMED {
            plan.extend(std::iter::repeat_n(c, per_named));
        }
        let all: Vec<&'static str> = NAMED.iter().chain(STRUCTURAL.iter()).copied().collect();
        for i in 0..n_random {
            plan.push(all[i % all.len()]);
        }
        for (i, class) in plan.into_iter().enumerate() {
            let Some(case) = mutate(&orig, &l, class, &mut rng) else {
                continue;
            };
            let _ = i;
            patch(&work, &orig, &case.bytes);
            let base = modelbench::measure::memory::rss().map(|r| r.0).unwrap_or(0);
            if rss_ok {
                modelbench::measure::memory::reset_rss_peak();
            }
            let t = Instant::now();
            let out = run_one(&path, limit);
            *tally.secs.entry(class).or_default() += t.elapsed().as_secs_f64();
            if rss_ok {
                if let Some((_, hwm)) = modelbench::measure::memory::rss() {
                    let growth = hwm.saturating_sub(base);
                    tally.max_rss_growth = tally.max_rss_growth.max(growth);
                    // The model is built in f32 from a quantized file: a few times its size.
                    let bound = 8 * case.bytes.len() as u64 + (512 << 20);
                    if growth > bound {
                        tally.failures.push(format!(
                            "{fam} {class} ({}): peak RSS grew {growth} bytes, bound {bound}",
                            case.what
                        ));
                    }
                }
            }
            let e = tally.by_class.entry(class).or_default();
            e.0 += 1;
            let tag = format!("{fam} {} ({})", case.class, case.what);
            match out {
                Outcome::Ran => {
                    e.2 += 1;
                    if case.must_name.is_some() {
                        tally
                            .failures
                            .push(format!("{tag}: ran, but this class must be refused"));
                    }
                }
                Outcome::Refused(msg) => {
                    e.1 += 1;
                    if msg.contains('\n') || msg.trim().is_empty() {
                        tally.failures.push(format!("{tag}: not one line: {msg:?}"));
                    }
                    if let Some(name) = &case.must_name {
                        if !msg.contains(name.as_str()) {
                            tally
                                .failures
                                .push(format!("{tag}: refused without naming `{name}`: {msg}"));
                        }
                    }
                    if msg.contains("bug:") {
                        tally
                            .failures
                            .push(format!("{tag}: a panic caught inside: {msg}"));
                    }
                }
                Outcome::Panicked(p) => tally.failures.push(format!("{tag}: PANIC {p}")),
                Outcome::Hung => {
                    tally
                        .failures
                        .push(format!("{tag}: no result in {limit:?}"));
                    // The thread cannot be stopped; the count is what matters.
                }
            }
            patch(&work, &case.bytes, &orig);
        }
    }
    tally
}

fn report(t: &Tally, secs: f64) -> String {
    let mut s = String::from("class                 cases  refused  ran  mean ms\n");
    let (mut n, mut r, mut ran) = (0, 0, 0);
    for (c, (a, b, d)) in &t.by_class {
        let ms = 1e3 * t.secs.get(c).copied().unwrap_or(0.0) / (*a).max(1) as f64;
        s += &format!("{c:<20} {a:>6} {b:>8} {d:>4} {ms:>8.1}\n");
        n += a;
        r += b;
        ran += d;
    }
    s += &format!(
        "total                {n:>6} {r:>8} {ran:>4}   ({:.1} s; failures {}; max peak-RSS growth {:.1} MiB)\n",
        secs,
        t.failures.len(),
        t.max_rss_growth as f64 / (1 << 20) as f64
    );
    s
}

#[test]
fn mutated_fixtures_run_or_end_in_one_line_and_model_changes_are_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    // Every fixture of the family table: a family added to it is mutated here too.
    let all = every_fixture();
    let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    // 24 drawn per fixture: each of the 21 classes at least once per fixture. It was 60 when
    // there were 3 fixtures; with every family's fixtures that was about 1,300 cases and
    // 127 s of every CI run (2026-11-28), so the per-commit run keeps the named classes (3
    // each per fixture, all must be refused) and one draw of each class, and the long run
    // below keeps the volume.
    let t = campaign(&names, 3, 24, 0x44, dir.path());
    eprintln!("{}", report(&t, t0.elapsed().as_secs_f64()));
    let total: usize = t.by_class.values().map(|v| v.0).sum();
    assert!(total >= 250, "only {total} cases");
    for c in NAMED {
        let (n, refused, _) = t.by_class.get(c).copied().unwrap_or_default();
        assert!(n > 0 && refused == n, "{c}: {refused} of {n} refused");
    }
    assert!(t.failures.is_empty(), "{}", t.failures.join("\n"));
}

/// The long run for docs/gguf-validation.md: about 2,000 cases per fixture.
#[test]
#[ignore]
fn long_run() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let all = every_fixture();
    let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    let t = campaign(&names, 10, 1890, 0x4444, dir.path());
    eprintln!("{}", report(&t, t0.elapsed().as_secs_f64()));
    assert!(t.failures.is_empty(), "{}", t.failures.join("\n"));
}

// ------------------------------------------------------------------------------------------
// The real Gemma 3 270M

const REAL: &str = "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF";

/// Each named class written into a copy of the real file ends in one line naming the field;
/// the unmodified file loads and runs.
#[test]
fn real_gemma3_each_named_class_is_refused_naming_the_field() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = ModelRef::parse(REAL).unwrap();
    let src = match prepare(REAL, &r, &[]) {
        Ok(res) => match res.weights {
            Weights::Gguf(p) => p,
            other => panic!("{other:?}"),
        },
        Err(e) => return common::skip_real_model(e),
    };
    match run_one(&src, Duration::from_secs(120)) {
        Outcome::Ran => {}
        o => panic!("the unmodified file: {o:?}"),
    }
    // Only the header is mutated: copy the file, patch the header in place.
    let file_len = std::fs::metadata(&src).unwrap().len() as usize;
    let head = {
        use std::io::Read;
        let mut f = std::fs::File::open(&src).unwrap();
        let mut h = vec![0u8; file_len.min(32 << 20)];
        f.read_exact(&mut h).unwrap();
        h
    };
    let l = layout(&head);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("gemma3.gguf");
    std::fs::copy(&src, &copy).unwrap();
    let mut rng = Rng(0x270);
    let mut failures = Vec::new();
    let mut n = 0;
    for class in NAMED {
        // Up to 4 distinct mutations of each class (the draws repeat values).
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            if seen.len() == 4 {
                break;
            }
            let Some(case) = mutate(&head, &l, class, &mut rng) else {
                failures.push(format!("{class}: the real file has no such field"));
                break;
            };
            if !seen.insert(case.what.clone()) {
                continue;
            }
            {
                use std::io::{Seek, SeekFrom, Write};
                let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
                f.seek(SeekFrom::Start(0)).unwrap();
                f.write_all(&case.bytes[..l.header_end]).unwrap();
            }
            n += 1;
            match run_one(&copy, Duration::from_secs(120)) {
                Outcome::Refused(msg) => {
                    let name = case.must_name.as_deref().unwrap();
                    eprintln!("{class} ({}): {msg}", case.what);
                    if !msg.contains(name) || msg.contains('\n') {
                        failures.push(format!("{class} ({}): {msg}", case.what));
                    }
                }
                o => failures.push(format!("{class} ({}): {o:?}", case.what)),
            }
            // Put the original header back.
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(&head[..l.header_end]).unwrap();
        }
    }
    assert!(n >= 40, "{n} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Load time of the real Gemma 3 270M before and after validation, as a paired comparison:
/// `old` is main 0e845c9's path (candle's reader on the unbuffered file, then the project's
/// Gemma 3 built from it, as `load_with` did), `new` is `sources::gguf::load_with` (bounded scan,
/// buffered candle read, architecture checks, guarded build). Runs alternate (ABBA order) so
/// drift cancels; prints the mean of each and the mean paired difference with its 95%
/// t-interval. Not a pass/fail check: `cargo test --release --test gguf_mutation -- --ignored
/// --nocapture load_time_paired`.
#[test]
#[ignore]
fn load_time_paired() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = ModelRef::parse(REAL).unwrap();
    let Ok(res) = prepare(REAL, &r, &[]) else {
        eprintln!("skipped: the real Gemma 3 270M is not installed");
        return;
    };
    let Weights::Gguf(p) = res.weights else {
        panic!()
    };
    let cap = Some(512);
    // `buffered`: the same path with candle's header read through a BufReader, which the new
    // path also does: old(buffered) vs new isolates the cost of the checks themselves.
    let old = |p: &Path, buffered: bool| -> f64 {
        let t = Instant::now();
        let mut f = std::fs::File::open(p).unwrap();
        let ct = if buffered {
            let mut b = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(p).unwrap());
            candle_core::quantized::gguf_file::Content::read(&mut b).unwrap()
        } else {
            candle_core::quantized::gguf_file::Content::read(&mut f).unwrap()
        };
        let meta = sources::gguf::describe_impl(p, &ct, cap, None).unwrap();
        let m = modelbench::models::quantized::gemma3::ModelWeights::from_gguf(
            ct,
            &mut f,
            &Device::Cpu,
            meta.built_context,
        )
        .unwrap();
        let s = t.elapsed().as_secs_f64();
        drop(m);
        s
    };
    let new = |p: &Path| -> f64 {
        let t = Instant::now();
        let m = sources::gguf::load_with(p, None, &Device::Cpu, cap).unwrap();
        let s = t.elapsed().as_secs_f64();
        drop(m);
        s
    };
    // Warm the page cache and every path once.
    old(&p, false);
    old(&p, true);
    new(&p);
    let n = 20;
    let (mut a, mut c, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        // Rotate the order so drift and warm-up fall on every arm alike.
        for k in 0..3 {
            match (i + k) % 3 {
                0 => a.push(old(&p, false)),
                1 => c.push(old(&p, true)),
                _ => b.push(new(&p)),
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let paired = |x: &[f64], y: &[f64]| -> (f64, f64) {
        let d: Vec<f64> = y.iter().zip(x).map(|(y, x)| y - x).collect();
        let md = mean(&d);
        let sd = (d.iter().map(|v| (v - md).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        // t(0.975, 19)
        (md, 2.093 * sd / (n as f64).sqrt())
    };
    eprintln!(
        "load of {} (built for 512 positions), means of {n}: old (main 0e845c9) {:.1} ms, old with a buffered header read {:.1} ms, new {:.1} ms",
        p.display(),
        1e3 * mean(&a),
        1e3 * mean(&c),
        1e3 * mean(&b)
    );
    for (what, x) in [("old", &a), ("old buffered", &c)] {
        let (md, half) = paired(x, &b);
        eprintln!(
            "new - {what} = {:+.1} ms, 95% CI [{:+.1}, {:+.1}] ms ({:+.1}% of {what})",
            1e3 * md,
            1e3 * (md - half),
            1e3 * (md + half),
            100.0 * md / mean(x)
        );
    }
}

// ------------------------------------------------------------------------------------------
// Safetensors folders: config.json against the tensors

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        // Hub snapshots are symlinks into blobs/: copy the content.
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn open_dir(d: &Path) -> Result<(), String> {
    let s = d.display().to_string();
    let r = ModelRef::parse(&s).map_err(|e| e.to_string())?;
    prepare(&s, &r, &[])
        .and_then(|res| {
            Ok(modelbench::models::sources::loading::open(
                res,
                &Device::Cpu,
                candle_core::DType::F32,
                Some(64),
            )?)
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn safetensors_config_and_tensors_must_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let edit = |name: &str, f: &dyn Fn(&Path)| -> PathBuf {
        let d = tmp.path().join(name);
        copy_dir(&common::fixture_snapshot("llama"), &d);
        f(&d);
        d
    };
    // The unmodified copy loads.
    let d = edit("same", &|_| {});
    open_dir(&d).unwrap();
    let config = |d: &Path, k: &str, v: serde_json::Value| {
        let p = d.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        c[k] = v;
        std::fs::write(&p, c.to_string()).unwrap();
    };
    // Fewer layers in config.json than in the weights: the last layer's tensors are unused.
    let d = edit("layers", &|d| {
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
        let n = c["num_hidden_layers"].as_u64().unwrap();
        config(d, "num_hidden_layers", (n - 1).into());
    });
    let e = open_dir(&d).unwrap_err();
    assert!(
        e.contains("is not used by the model config.json describes") && e.contains("model.layers."),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    // A zero or negative epsilon / RoPE base.
    for (k, v) in [("rms_norm_eps", 0.0), ("rope_theta", -1.0)] {
        let d = edit(k, &|d| config(d, k, v.into()));
        let e = open_dir(&d).unwrap_err();
        assert!(e.contains(&format!("`{k}` holds")), "{e}");
    }
}

/// The real files installed by scripts/fetch-offline-models.sh, one per architecture the table
/// has a file for: each passes every check (the table matches what llama.cpp's converter
/// writes), loads and runs a 2-token forward; all three are checked (the count is asserted:
/// one absent file is the skip rule's, not a pass).
#[test]
fn real_files_pass_the_checks_and_run() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut checked = 0;
    const FILES: [(&str, &str); 3] = [
        ("modelbench-offline/gemma-3-270m-Q4_K_M-GGUF", "gemma3"),
        ("modelbench-offline/SmolLM2-135M-Instruct-GGUF", "llama"),
        (
            "modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            "qwen2",
        ),
    ];
    for (repo, arch) in FILES {
        let label = format!("gguf:{repo}");
        // Found in the hub cache directly, so the file's own checks run before any loader's.
        let hub = std::env::var_os("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/huggingface/hub")
            });
        let snaps = hub.join(format!("models--{}/snapshots", repo.replace('/', "--")));
        let found = std::fs::read_dir(&snaps).ok().and_then(|d| {
            d.flatten()
                .flat_map(|s| std::fs::read_dir(s.path()).into_iter().flatten().flatten())
                .map(|f| f.path())
                .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        });
        let Some(path) = found else {
            return common::skip_unless_required(
                "MODELBENCH_REQUIRE_QUALITY",
                &label,
                &format!(
                    "not in {}; scripts/fetch-offline-models.sh installs it",
                    snaps.display()
                ),
            );
        };
        let ct = modelbench::models::families::check::validate_gguf(&path)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let (h, expected) =
            modelbench::models::families::check::expected_tensors(arch, &ct).unwrap();
        eprintln!(
            "{label}: {arch}, {} blocks, {} tensors expected (optional ones absent allowed), {} in the file",
            h.n_layer,
            expected.len(),
            ct.tensor_infos.len()
        );
        let mut m = sources::gguf::load_with(&path, None, &Device::Cpu, Some(64))
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let logits = m.forward(&[1, 2], 0).unwrap();
        let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            !v.is_empty() && v.iter().all(|x| x.is_finite()),
            "{label}: non-finite logits"
        );
        checked += 1;
    }
    assert_eq!(checked, FILES.len(), "every real file checked and run");
}
