//! The output probe (issue 59): what a model computes, taken once per model and run through
//! the engine's own forward path ([`super::generate::forward`], the path every benchmark
//! runs), kept in every generation record for the output verdict (`measure::outputs`).
//!
//! The positions: the held-out verdict text (fixtures/corpus/kjv-ruth-1-4.txt, which nothing
//! was tuned on) tokenized by the model's tokenizer (seeded ids for a model without one), cut
//! into [`SEQUENCES`] sequences of [`LEN`] ids. Each sequence is prefilled with its first
//! [`PREFILL`] ids in one forward call (the prefill kernels) and continued one id at a time
//! (the decode kernels, on the KV cache): [`LEN`] - [`PREFILL`] + 1 positions a sequence whose
//! logits are kept (top [`PROBE_TOP_K`]) and hashed (all, f32).
//!
//! The noise: the same positions computed other legitimate ways by the same build: every id of
//! the sequence as its own single-token step from position 0 (no prefill call: other matrix
//! shapes, other summation orders), and, where the model has a batched form (`serve
//! --max-batch`), the sequences side by side in one batched step each (prefilled together,
//! then decoded together). What they do to the probe, the larger of the two, is the limit of
//! "same model" for this build ([`crate::measure::outputs::Noise`]). And at another thread
//! count ([`with_threads`]): candle's pools fix their thread count when first used, so a
//! second process (`modelbench probe --bare` at half this one's count, the same build and
//! model) takes the probe's positions there.

use std::time::Instant;

use candle_core::DType;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::measure::outputs::{noise, LogitsHash, Position, Probe, PROBE_TOP_K};
use crate::models::CausalLm;

use super::generate::forward;

/// The held-out verdict text.
pub const TEXT: &str = include_str!("../../../../fixtures/corpus/kjv-ruth-1-4.txt");
pub const TEXT_NAME: &str = "fixtures/corpus/kjv-ruth-1-4.txt";
pub const SEQUENCES: usize = 2;
pub const LEN: usize = 64;
pub const PREFILL: usize = 32;

/// The seed of the ids of a model without a tokenizer.
const SEED: u64 = 0x9e0be;

/// The probe's ids and how they were made (two probes compare only when this is equal):
/// [`SEQUENCES`] sequences of `len` ids, the first `len / 2` prefilled.
pub fn probe_ids(tok: Option<&Tokenizer>, vocab: usize, len: usize) -> Result<(Vec<u32>, String)> {
    let n = SEQUENCES * len;
    let (ids, from) = match tok {
        Some(t) => {
            let ids: Vec<u32> = crate::models::tokenizers::encode(t, TEXT)?
                .into_iter()
                .filter(|&i| (i as usize) < vocab)
                .take(n)
                .collect();
            (ids, TEXT_NAME.to_string())
        }
        None => (
            super::generate::prompt_ids(n, vocab, SEED, 0),
            format!("seeded ids (seed {SEED:#x})"),
        ),
    };
    if ids.len() < n {
        return Err(Error::Report(format!(
            "the output probe needs {n} ids of {TEXT_NAME}; this tokenizer gives {}",
            ids.len()
        )));
    }
    let desc = format!(
        "{from}, ids sha256 {}, {SEQUENCES} x {len} ids ({} prefilled, then decoded)",
        crate::measure::outputs::hash_ids(&ids),
        len / 2
    );
    Ok((ids, desc))
}

fn host(l: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(l.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Takes the probe of `model` (the KV cache is left reset). A model built for fewer than
/// [`LEN`] positions is probed on sequences of its own length (its probe then compares only
/// with probes of that length).
pub fn take(model: &mut dyn CausalLm, tok: Option<&Tokenizer>) -> Result<Probe> {
    let t0 = Instant::now();
    let (mut probe, ids, len, prefill) = positions(model, tok)?;
    // The noise: the same positions, every id its own step from position 0.
    let mut hash = LogitsHash::default();
    let mut perturbed = Vec::new();
    for seq in ids.chunks(len) {
        model.reset()?;
        for (i, &id) in seq.iter().enumerate().take(len - 1) {
            let l = forward(model, &[id], i)?;
            if i + 1 >= prefill {
                let v = host(&l)?;
                hash.update(&v);
                perturbed.push(Position::of_logits(&v, PROBE_TOP_K));
            }
        }
    }
    model.reset()?;
    let identical = hash.finish() == probe.logits_sha256;
    let mut n = noise(
        "the prompt prefilled as single-token steps",
        &probe,
        &perturbed,
        identical,
    );
    if let Some(batched) = batched_positions(model, &ids, len, prefill)? {
        let (identical, perturbed) = batched;
        n = n.and(noise(
            "the sequences batched together",
            &probe,
            &perturbed,
            identical == probe.logits_sha256,
        ));
    }
    probe.noise = Some(n);
    probe.seconds = t0.elapsed().as_secs_f64();
    Ok(probe)
}

/// The probe's positions alone, without its noise (what `modelbench probe --bare` prints for
/// a parent's thread-count perturbation).
pub fn take_bare(model: &mut dyn CausalLm, tok: Option<&Tokenizer>) -> Result<Probe> {
    Ok(positions(model, tok)?.0)
}

/// The probe's positions (KV cache left reset), its ids, sequence length and prefill length.
fn positions(
    model: &mut dyn CausalLm,
    tok: Option<&Tokenizer>,
) -> Result<(Probe, Vec<u32>, usize, usize)> {
    let t0 = Instant::now();
    let built = model.meta().built_context;
    let len = if built >= 4 { LEN.min(built) } else { LEN };
    let prefill = if len == LEN { PREFILL } else { len / 2 };
    let (ids, text) = probe_ids(tok, model.meta().vocab, len)?;
    let mut hash = LogitsHash::default();
    let mut positions = Vec::new();
    for seq in ids.chunks(len) {
        model.reset()?;
        let mut keep = |l: candle_core::Tensor| -> Result<()> {
            let v = host(&l)?;
            hash.update(&v);
            positions.push(Position::of_logits(&v, PROBE_TOP_K));
            Ok(())
        };
        keep(forward(model, &seq[..prefill], 0)?)?;
        for (i, &id) in seq.iter().enumerate().take(len - 1).skip(prefill) {
            keep(forward(model, &[id], i)?)?;
        }
    }
    model.reset()?;
    let probe = Probe {
        text,
        logits_sha256: hash.finish(),
        positions,
        noise: None,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((probe, ids, len, prefill))
}

/// The probe's positions with the [`SEQUENCES`] sequences in one batched step each (both
/// prefilled in one step, then one id each per step), and the hash of their logits in the
/// probe's order; None for a model without a batched form. The numeric injection
/// (`MODELBENCH_INJECT_NUMERIC`) is applied to these logits as the engine's forward applies it,
/// so an injected run's noise is its own build's, not the injection.
fn batched_positions(
    model: &mut dyn CausalLm,
    ids: &[u32],
    len: usize,
    prefill: usize,
) -> Result<Option<(String, Vec<Position>)>> {
    use crate::models::batched::{BatchOptions, Work};
    let Some(b) = model.batched(&BatchOptions {
        slots: SEQUENCES,
        fast_weights: false,
        swa_full: false,
    }) else {
        return Ok(None);
    };
    let mut m = b?;
    let seqs: Vec<&[u32]> = ids.chunks(len).collect();
    for s in 0..seqs.len() {
        m.start(s)?;
    }
    let factor = crate::measure::inject::numeric_factor("lm_head");
    let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); seqs.len()];
    let mut step = |from: usize, to: usize| -> Result<()> {
        let work: Vec<Work<'_>> = seqs
            .iter()
            .enumerate()
            .map(|(slot, q)| Work {
                slot,
                tokens: &q[from..to],
                logits: true,
            })
            .collect();
        for (s, l) in m.step(&work)?.into_iter().enumerate() {
            let mut v = l.ok_or_else(|| {
                Error::Report("a batched step returned no logits where they were asked".into())
            })?;
            if let Some(f) = factor {
                // As candle's `affine(f, 0)` computes it in f32 (the engine's forward).
                let f = f as f32;
                v.iter_mut().for_each(|x| *x = *x * f + 0.0);
            }
            logits[s].push(v);
        }
        Ok(())
    };
    step(0, prefill)?;
    for i in prefill..len - 1 {
        step(i, i + 1)?;
    }
    let mut hash = LogitsHash::default();
    let mut positions = Vec::new();
    for v in logits.iter().flatten() {
        hash.update(v);
        positions.push(Position::of_logits(v, PROBE_TOP_K));
    }
    Ok(Some((hash.finish(), positions)))
}

/// Each model's probe, by label: taken the first time a suite asks for the model, outside
/// every timed region, then shared by its workloads (generation and depth suites).
pub type Probes = std::sync::Mutex<std::collections::BTreeMap<String, Probe>>;

/// How the probed model was opened: what a second process needs to open it the same way.
#[derive(Debug, Clone)]
pub struct Opening {
    pub device: crate::measure::device::DeviceSpec,
    pub dtype: DType,
    pub attention: crate::models::attention::Attention,
}

impl Opening {
    pub fn of(
        device: crate::measure::device::DeviceSpec,
        dtype: DType,
        attention: crate::models::attention::Attention,
    ) -> Opening {
        Opening {
            device,
            dtype,
            attention,
        }
    }
}

static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The `modelbench` executable of this build, for the thread-count probe's second process:
/// what a bench names (`env!("CARGO_BIN_EXE_modelbench")`); the CLI is it already.
pub fn use_exe(path: impl Into<std::path::PathBuf>) {
    let _ = EXE.set(path.into());
}

fn exe() -> std::result::Result<std::path::PathBuf, String> {
    if let Some(p) = EXE.get() {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    if me.file_stem().and_then(|s| s.to_str()) == Some("modelbench") {
        return Ok(me);
    }
    Err(format!(
        "{} is not the modelbench CLI and none was named (a bench calls engine::probe::use_exe)",
        me.display()
    ))
}

/// What the thread-count perturbation is called in a probe's noise.
pub const THREADS: &str = "another thread count";

/// `probe` with its noise at another thread count added: the same build (this process's
/// `modelbench`) opens the same model in a second process at half this one's thread count (2
/// where this one runs 1) and takes the probe's positions; what that does to the probe joins
/// the limits of "same model". Where that cannot be done the noise says so
/// ([`crate::measure::outputs::Noise::not_measured`]) and keeps the other perturbations.
pub fn with_threads(
    mut probe: Probe,
    loaded: &crate::models::sources::loading::Loaded,
    opening: &Opening,
) -> Probe {
    let t = Instant::now();
    let threads =
        thread_command(loaded, opening).and_then(|(c, what)| child_noise(&probe, c, &what));
    probe.noise = match (probe.noise.take(), threads) {
        (Some(n), Ok(t)) => Some(n.and(t)),
        (Some(n), Err(why)) => Some(n.without(THREADS, &why)),
        (None, Ok(t)) => Some(t),
        (None, Err(_)) => None,
    };
    probe.seconds += t.elapsed().as_secs_f64();
    probe
}

/// The second process of [`with_threads`] and what it perturbs.
fn thread_command(
    loaded: &crate::models::sources::loading::Loaded,
    opening: &Opening,
) -> std::result::Result<(std::process::Command, String), String> {
    if opening.device != crate::measure::device::DeviceSpec::Cpu {
        return Err(format!(
            "a {} run (candle's CPU thread count does not enter its kernels)",
            opening.device
        ));
    }
    let ours = crate::measure::threads::CandlePools::current()
        .agreed()
        .map_err(|e| e.to_string())?;
    let theirs = if ours > 1 { ours / 2 } else { 2 };
    let mut c = probe_command(&exe()?, loaded, opening);
    c.env("RAYON_NUM_THREADS", theirs.to_string())
        .env("CANDLE_NUM_THREADS", theirs.to_string());
    Ok((
        c,
        format!(
            "{THREADS} ({theirs} thread{} instead of {ours}, a second process)",
            if theirs == 1 { "" } else { "s" }
        ),
    ))
}

/// `EXE probe --bare --json` for `loaded`'s model as `opening` opened it (label, dtype,
/// attention, the context it was built for) and with this process's numeric injection.
pub fn probe_command(
    exe: &std::path::Path,
    loaded: &crate::models::sources::loading::Loaded,
    opening: &Opening,
) -> std::process::Command {
    let mut c = std::process::Command::new(exe);
    c.args(["probe", "--bare", "--json", "--model"])
        .arg(&loaded.resolved.label)
        .args(["--device", &opening.device.to_string()])
        .args(["--dtype", opening.dtype.as_str()])
        .args(["--attention", &opening.attention.name()])
        .args(["--context", &loaded.model.meta().built_context.to_string()])
        .stdin(std::process::Stdio::null());
    match crate::measure::inject::current_numeric() {
        Some(n) => c.env("MODELBENCH_INJECT_NUMERIC", n.to_string()),
        None => c.env_remove("MODELBENCH_INJECT_NUMERIC"),
    };
    c
}

/// Runs `child` (a `probe --bare --json`) and measures what its positions do to `probe`: the
/// noise of `perturbation`; Err with why when the child failed or probed other positions.
pub fn child_noise(
    probe: &Probe,
    mut child: std::process::Command,
    perturbation: &str,
) -> std::result::Result<crate::measure::outputs::Noise, String> {
    let out = child
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", child.get_program()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "the second process failed ({}): {}",
            out.status,
            err.lines().last().unwrap_or("no message")
        ));
    }
    let theirs: Probe = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the second process printed no probe: {e}"))?;
    if theirs.text != probe.text || theirs.positions.len() != probe.positions.len() {
        return Err(format!(
            "the second process probed other positions ({}, {} positions; here {}, {})",
            theirs.text,
            theirs.positions.len(),
            probe.text,
            probe.positions.len()
        ));
    }
    Ok(noise(
        perturbation,
        probe,
        &theirs.positions,
        theirs.logits_sha256 == probe.logits_sha256,
    ))
}

/// The probe of `loaded` from `probes`, taken (and said through `say`) the first time.
pub fn once(
    probes: &Probes,
    loaded: &mut crate::models::sources::loading::Loaded,
    opening: &Opening,
    say: &dyn Fn(&str),
) -> Result<Probe> {
    let label = loaded.resolved.label.clone();
    if let Some(p) = probes.lock().ok().and_then(|m| m.get(&label).cloned()) {
        return Ok(p);
    }
    let p = take(loaded.model.as_mut(), loaded.tokenizer.as_ref())?;
    let p = with_threads(p, loaded, opening);
    say(&describe(&label, &p));
    if let Ok(mut m) = probes.lock() {
        m.insert(label, p.clone());
    }
    Ok(p)
}

/// `output probe of LABEL: N positions in S s; own noise: FIGURES (each perturbation: its
/// figures; not measured: ...)`.
pub fn describe(label: &str, p: &Probe) -> String {
    let head = format!(
        "output probe of {label}: {} positions in {:.2} s; own noise",
        p.positions.len(),
        p.seconds
    );
    let Some(n) = p.noise.as_ref() else {
        return format!("{head}: not measured");
    };
    let mut each: Vec<String> = if n.parts.is_empty() {
        vec![n.perturbation.clone()]
    } else {
        n.parts
            .iter()
            .map(|q| format!("{}: {}", q.perturbation, q.figures()))
            .collect()
    };
    if !n.not_measured.is_empty() {
        each.push(format!("not measured: {}", n.not_measured.join("; ")));
    }
    format!("{head}: {} ({})", n.figures(), each.join("; "))
}
