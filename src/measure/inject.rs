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
//! The engine calls [`after_step`] after each step's device synchronisation. The setting is
//! process-wide (set once at start-up by the benches and the CLI from the knob, or by a test).
//! Unset, [`after_step`] is one relaxed atomic load.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
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
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
            Phase::All => "all",
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

/// Parses `decode:5%`, `prefill:0.5%`, `all:10%`, `decode:work=100000` (and `off`/`none`:
/// no injection). The error says what is accepted.
pub fn parse(s: &str) -> std::result::Result<Option<Injection>, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        format!(
            "`{s}` is not an injection; use PHASE:PCT% (e.g. decode:5%) or PHASE:work=N, PHASE \
             one of prefill, decode, all"
        )
    };
    let (p, x) = t.split_once(':').ok_or_else(bad)?;
    let phase = match p.trim() {
        "prefill" => Phase::Prefill,
        "decode" => Phase::Decode,
        "all" => Phase::All,
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

// 0: none; 1..=3: the phase; the payload is an f64 fraction or a u64 count in `PAYLOAD`.
static PHASE: AtomicU8 = AtomicU8::new(0);
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
            PHASE.store(
                match i.phase {
                    Phase::Prefill => 1,
                    Phase::Decode => 2,
                    Phase::All => 3,
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
    };
    if !hit {
        return;
    }
    match i.extra {
        Extra::Spin(x) => spin(step.mul_f64(x)),
        Extra::Work(n) => {
            work(n);
        }
    }
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
    fn parses_and_prints() {
        let i = parse("decode:5%").unwrap().unwrap();
        assert_eq!(i.phase, Phase::Decode);
        assert_eq!(i.extra, Extra::Spin(0.05));
        assert_eq!(i.to_string(), "decode:5%");
        let i = parse("all:work=1000").unwrap().unwrap();
        assert_eq!(i.extra, Extra::Work(1000));
        assert_eq!(i.to_string(), "all:work=1000");
        assert_eq!(parse("off").unwrap(), None);
        for bad in [
            "decode",
            "decod:5%",
            "decode:5",
            "decode:0%",
            "decode:-3%",
            "x:work=a",
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
