//! A known slowdown, injected on purpose: how the suite measures the power of its own verdicts
//! (issue 28). `MODELBENCH_INJECT_SLOWDOWN` (the knob table; `--inject` where the CLI has it)
//! makes the generation engine do extra work inside its timed region:
//!
//! - `decode:5%` busy-waits 5% of each decode step's own measured time after that step (so
//!   the decode phase runs 1.05x as long, whatever the machine's speed); `prefill:5%` the
//!   same after the prompt's forward call; `all:5%` after every step. The wait spins on the
//!   clock (no sleep: a sleeping thread would free the core and hide the cost).
//! - `decode:work=N` runs N iterations of a fixed integer loop after each decode step: a
//!   deterministic amount of added instructions, for the instruction-count metric (a
//!   time-based spin executes a machine-dependent number of instructions).
//!
//! - `op:rms_norm:100%` (issue 31) slows one kind of op instead of a whole step: after each
//!   call of an op of that kind (one of [`OP_KINDS`]) it busy-waits that fraction of the
//!   call's own time (or runs `work=N`), in the project's Gemma 3 and in the per-op timings
//!   of `modelbench ops` (`workloads::ops`), so a regression report must name that op.
//!
//! The engine calls [`after_step`] after each step's device synchronisation; op-scoped
//! injections go through [`around_op`]. The setting is
//! process-wide (set once at start-up by the benches and the CLI from the knob, or by a test).
//! Unset, [`after_step`] is one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Which generation steps the injection follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The prompt's forward call (and the first token's sampling).
    Prefill,
    /// Every single-token step after the first token.
    Decode,
    /// Every step.
    All,
    /// Every call of one kind of op (an index into [`OP_KINDS`]), not the step.
    Op(u8),
}

/// The kinds of op an injection can be scoped to (`op:KIND:...`): the `kind` column of the
/// per-op table of `modelbench ops`.
pub const OP_KINDS: [&str; 21] = [
    "matmul",
    "lm_head",
    "embedding",
    "rms_norm",
    "rope",
    "kv_cache",
    "attn_qk",
    "scale",
    "mask",
    "softmax",
    "attn_av",
    "copy",
    "activation",
    "mul",
    "add",
    "sampling",
    "host",
    "moe_gather",
    "moe_scatter",
    "layer_norm",
    "ssm_conv",
];

/// The index of an op kind in [`OP_KINDS`].
pub fn op_kind(name: &str) -> Option<u8> {
    OP_KINDS.iter().position(|k| *k == name).map(|i| i as u8)
}

/// What is done after each step of the phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Extra {
    /// Spin for this fraction of the step's own time (0.05 = 5%).
    Spin(f64),
    /// Run this many iterations of a fixed integer loop (deterministic instructions).
    Work(u64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Injection {
    pub phase: Phase,
    pub extra: Extra,
}

impl std::fmt::Display for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.phase {
            Phase::Prefill => "prefill".to_string(),
            Phase::Decode => "decode".to_string(),
            Phase::All => "all".to_string(),
            Phase::Op(k) => format!("op:{}", OP_KINDS[k as usize]),
        };
        match self.extra {
            Extra::Spin(x) => write!(f, "{p}:{}%", fmt_pct(x)),
            Extra::Work(n) => write!(f, "{p}:work={n}"),
        }
    }
}

fn fmt_pct(x: f64) -> String {
    let s = format!("{:.4}", x * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Parses `decode:5%`, `prefill:0.5%`, `all:10%`, `decode:work=100000`, `op:rms_norm:100%`
/// (and `off`/`none`: no injection). The error says what is accepted.
pub fn parse(s: &str) -> std::result::Result<Option<Injection>, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        format!(
            "`{s}` is not an injection; use PHASE:PCT% (e.g. decode:5%) or PHASE:work=N, PHASE \
             one of prefill, decode, all, op:KIND (e.g. op:rms_norm:100%)"
        )
    };
    let (p, x) = t.split_once(':').ok_or_else(bad)?;
    let (phase, x) = match p.trim() {
        "prefill" => (Phase::Prefill, x),
        "decode" => (Phase::Decode, x),
        "all" => (Phase::All, x),
        "op" => {
            let (k, rest) = x.split_once(':').ok_or_else(bad)?;
            let k = op_kind(k.trim()).ok_or_else(|| {
                format!(
                    "`{s}`: unknown op kind `{}` (one of {})",
                    k.trim(),
                    OP_KINDS.join(", ")
                )
            })?;
            (Phase::Op(k), rest)
        }
        _ => return Err(bad()),
    };
    let x = x.trim();
    let extra = if let Some(n) = x.strip_prefix("work=") {
        Extra::Work(n.trim().parse::<u64>().map_err(|_| bad())?)
    } else if let Some(pct) = x.strip_suffix('%') {
        let v = pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0;
        if !(v > 0.0 && v <= 10.0) {
            return Err(format!(
                "`{s}`: the slowdown must be above 0% and at most 1000%"
            ));
        }
        Extra::Spin(v)
    } else {
        return Err(bad());
    };
    Ok(Some(Injection { phase, extra }))
}

// 0: none; 1..=3: the phase; 4: op-scoped (kind in `OP`); the payload is an f64 fraction or a
// u64 count in `PAYLOAD`.
static PHASE: AtomicU8 = AtomicU8::new(0);
static OP: AtomicU8 = AtomicU8::new(0);
static KIND: AtomicU8 = AtomicU8::new(0);
static PAYLOAD: AtomicU64 = AtomicU64::new(0);

/// Sets (or clears) the process-wide injection.
pub fn set(inj: Option<Injection>) {
    match inj {
        None => PHASE.store(0, Ordering::SeqCst),
        Some(i) => {
            let (k, bits) = match i.extra {
                Extra::Spin(x) => (0, x.to_bits()),
                Extra::Work(n) => (1, n),
            };
            KIND.store(k, Ordering::SeqCst);
            PAYLOAD.store(bits, Ordering::SeqCst);
            if let Phase::Op(k) = i.phase {
                OP.store(k, Ordering::SeqCst);
            }
            PHASE.store(
                match i.phase {
                    Phase::Prefill => 1,
                    Phase::Decode => 2,
                    Phase::All => 3,
                    Phase::Op(_) => 4,
                },
                Ordering::SeqCst,
            );
        }
    }
}

/// The process-wide injection, if any (records carry it, so an injected run is never
/// mistaken for a real one).
pub fn current() -> Option<Injection> {
    let phase = match PHASE.load(Ordering::SeqCst) {
        1 => Phase::Prefill,
        2 => Phase::Decode,
        3 => Phase::All,
        4 => Phase::Op(OP.load(Ordering::SeqCst)),
        _ => return None,
    };
    let payload = PAYLOAD.load(Ordering::SeqCst);
    let extra = if KIND.load(Ordering::SeqCst) == 0 {
        Extra::Spin(f64::from_bits(payload))
    } else {
        Extra::Work(payload)
    };
    Some(Injection { phase, extra })
}

/// Called by the engine after a step: `prefill` tells which kind of step it was, `step` how
/// long it took (its own timed region). Does the injected work, if the phase matches.
#[inline]
pub fn after_step(prefill: bool, step: Duration) {
    if PHASE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(i) = current() else { return };
    let hit = match i.phase {
        Phase::All => true,
        Phase::Prefill => prefill,
        Phase::Decode => !prefill,
        Phase::Op(_) => false,
    };
    if hit {
        extra(i.extra, step);
    }
}

fn extra(e: Extra, took: Duration) {
    match e {
        Extra::Spin(x) => spin(took.mul_f64(x)),
        Extra::Work(n) => {
            work(n);
        }
    }
}

/// Runs `f`, one call of an op of kind `kind` (one of [`OP_KINDS`]); with an op-scoped
/// injection of that kind, then does the injected work (a fraction of the call's own time, or
/// N loop iterations); while an in-model profile runs ([`profile_start`]), adds the call's
/// time (injected work included) to its kind. Otherwise two relaxed atomic loads on top of `f`.
#[inline]
pub fn around_op<T>(kind: &str, f: impl FnOnce() -> T) -> T {
    let injecting = PHASE.load(Ordering::Relaxed) == 4
        && OP_KINDS.get(OP.load(Ordering::Relaxed) as usize) == Some(&kind);
    let profiling = PROFILING.load(Ordering::Relaxed);
    if !injecting && !profiling {
        return f();
    }
    let t = Instant::now();
    let out = f();
    if injecting {
        let took = t.elapsed();
        if let Some(i) = current() {
            extra(i.extra, took);
        }
    }
    if profiling {
        if let Some(k) = op_kind(kind) {
            PROF_NS[k as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            PROF_CALLS[k as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
    out
}

static PROFILING: AtomicBool = AtomicBool::new(false);
static PROF_NS: [AtomicU64; OP_KINDS.len()] = [const { AtomicU64::new(0) }; OP_KINDS.len()];
static PROF_CALLS: [AtomicU64; OP_KINDS.len()] = [const { AtomicU64::new(0) }; OP_KINDS.len()];

/// One kind's share of an in-model profile: wall time inside its calls and the call count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindTime {
    pub kind: &'static str,
    pub time: Duration,
    pub calls: u64,
}

/// Starts an in-model op profile (process-wide): from now until [`profile_take`], every
/// [`around_op`] call adds its wall time to its kind. The timing is host wall time around the
/// call, so it is the op's time only where ops run synchronously (the CPU device); on a GPU
/// it is the launch.
pub fn profile_start() {
    for (ns, calls) in PROF_NS.iter().zip(PROF_CALLS.iter()) {
        ns.store(0, Ordering::Relaxed);
        calls.store(0, Ordering::Relaxed);
    }
    PROFILING.store(true, Ordering::SeqCst);
}

/// Stops the in-model profile and returns each kind that was called, in [`OP_KINDS`] order
/// (and clears the counts).
pub fn profile_take() -> Vec<KindTime> {
    PROFILING.store(false, Ordering::SeqCst);
    OP_KINDS
        .iter()
        .enumerate()
        .filter_map(|(i, kind)| {
            let calls = PROF_CALLS[i].swap(0, Ordering::Relaxed);
            let ns = PROF_NS[i].swap(0, Ordering::Relaxed);
            (calls > 0).then(|| KindTime {
                kind,
                time: Duration::from_nanos(ns),
                calls,
            })
        })
        .collect()
}

/// Busy-waits `d` on the monotonic clock.
pub fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// `n` iterations of a fixed integer recurrence the optimiser cannot remove.
pub fn work(n: u64) -> u64 {
    let mut x = std::hint::black_box(0x9E37_79B9_7F4A_7C15u64);
    for i in 0..std::hint::black_box(n) {
        x = x.rotate_left(7) ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D);
    }
    std::hint::black_box(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_counts_each_kind_only_while_running() {
        around_op("host", || spin(Duration::from_micros(50)));
        profile_start();
        around_op("host", || spin(Duration::from_micros(200)));
        around_op("host", || spin(Duration::from_micros(200)));
        around_op("mask", || ());
        let p = profile_take();
        around_op("host", || spin(Duration::from_micros(50)));
        let host = p.iter().find(|k| k.kind == "host").unwrap();
        assert_eq!(host.calls, 2);
        assert!(host.time >= Duration::from_micros(400), "{host:?}");
        assert_eq!(p.iter().find(|k| k.kind == "mask").unwrap().calls, 1);
        assert!(p.iter().all(|k| k.kind == "host" || k.kind == "mask"));
        assert!(profile_take().is_empty());
    }

    #[test]
    fn parses_and_prints() {
        let i = parse("decode:5%").unwrap().unwrap();
        assert_eq!(i.phase, Phase::Decode);
        assert_eq!(i.extra, Extra::Spin(0.05));
        assert_eq!(i.to_string(), "decode:5%");
        let i = parse("all:work=1000").unwrap().unwrap();
        assert_eq!(i.extra, Extra::Work(1000));
        assert_eq!(i.to_string(), "all:work=1000");
        assert_eq!(parse("off").unwrap(), None);
        let i = parse("op:rms_norm:100%").unwrap().unwrap();
        assert_eq!(i.phase, Phase::Op(op_kind("rms_norm").unwrap()));
        assert_eq!(i.to_string(), "op:rms_norm:100%");
        assert!(parse("op:nope:5%").unwrap_err().contains("unknown op kind"));
        for bad in [
            "decode",
            "decod:5%",
            "decode:5",
            "decode:0%",
            "decode:-3%",
            "x:work=a",
            "op:rms_norm",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spin_takes_the_stated_fraction() {
        let t = Instant::now();
        spin(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}

// ---- numeric injection (issue 59): a known change of what the model computes, as the
// slowdown above is a known change of its time. `MODELBENCH_INJECT_NUMERIC=lm_head:0.5%`
// multiplies the output of one op by (1 + 0.005): for `lm_head`, the logits every forward call
// returns, in the engine's one forward path (the benchmarks, `generate`, the probe and the
// server all go through it), at every model of every family. Scaling logits keeps every greedy
// argmax where it was, so only the probe's log-probabilities can see it: the case the output
// verdict exists for. Costs nothing unset (one relaxed load).

/// The ops a numeric injection can be scoped to.
pub const NUMERIC_OPS: [&str; 1] = ["lm_head"];

/// A relative change of one op's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Numeric {
    /// An index into [`NUMERIC_OPS`].
    pub op: u8,
    /// The output is multiplied by `1 + rel`.
    pub rel: f64,
}

impl std::fmt::Display for Numeric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}%",
            NUMERIC_OPS[self.op as usize],
            fmt_pct(self.rel)
        )
    }
}

/// Parses `lm_head:0.5%` (or `off`/`none`). The error says what is accepted.
pub fn parse_numeric(s: &str) -> std::result::Result<Option<Numeric>, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        format!(
            "`{s}` is not a numeric injection; use OP:PCT% with OP one of {} (e.g. lm_head:0.5%)",
            NUMERIC_OPS.join(", ")
        )
    };
    let (op, pct) = t.split_once(':').ok_or_else(bad)?;
    let op = NUMERIC_OPS
        .iter()
        .position(|o| *o == op.trim())
        .ok_or_else(|| {
            format!(
                "`{s}`: unknown op `{}` for a numeric injection (one of {})",
                op.trim(),
                NUMERIC_OPS.join(", ")
            )
        })? as u8;
    let rel = pct
        .trim()
        .strip_suffix('%')
        .and_then(|p| p.trim().parse::<f64>().ok())
        .ok_or_else(bad)?
        / 100.0;
    if !(rel.is_finite() && rel != 0.0 && rel.abs() <= 1.0) {
        return Err(format!(
            "`{s}`: the change must be non-zero and at most 100% either way"
        ));
    }
    Ok(Some(Numeric { op, rel }))
}

static NUMERIC_ON: AtomicBool = AtomicBool::new(false);
static NUMERIC_OP: AtomicU8 = AtomicU8::new(0);
static NUMERIC_REL: AtomicU64 = AtomicU64::new(0);

pub fn set_numeric(n: Option<Numeric>) {
    match n {
        None => NUMERIC_ON.store(false, Ordering::SeqCst),
        Some(n) => {
            NUMERIC_OP.store(n.op, Ordering::SeqCst);
            NUMERIC_REL.store(n.rel.to_bits(), Ordering::SeqCst);
            NUMERIC_ON.store(true, Ordering::SeqCst);
        }
    }
}

pub fn current_numeric() -> Option<Numeric> {
    NUMERIC_ON.load(Ordering::SeqCst).then(|| Numeric {
        op: NUMERIC_OP.load(Ordering::SeqCst),
        rel: f64::from_bits(NUMERIC_REL.load(Ordering::SeqCst)),
    })
}

/// The factor an op's output is multiplied by, when a numeric injection targets `op`.
#[inline]
pub fn numeric_factor(op: &str) -> Option<f64> {
    if !NUMERIC_ON.load(Ordering::Relaxed) {
        return None;
    }
    let n = current_numeric()?;
    (NUMERIC_OPS.get(n.op as usize) == Some(&op)).then_some(1.0 + n.rel)
}

#[cfg(test)]
mod numeric_tests {
    use super::*;

    #[test]
    fn numeric_specs_parse_round_trip_and_bad_ones_name_the_fix() {
        let n = parse_numeric("lm_head:0.5%").unwrap().unwrap();
        assert_eq!(n.to_string(), "lm_head:0.5%");
        assert!((n.rel - 0.005).abs() < 1e-12);
        assert_eq!(parse_numeric("off").unwrap(), None);
        for bad in [
            "lm_head",
            "rope:1%",
            "lm_head:0%",
            "lm_head:300%",
            "lm_head:x%",
        ] {
            let e = parse_numeric(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(parse_numeric("rope:1%").unwrap_err().contains("lm_head"));
    }
}
