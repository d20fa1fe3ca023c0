//! Instructions per generated token, counted by valgrind's callgrind: a deterministic cost
//! metric for machines without hardware counters (issue 28), in the manner of iai-callgrind.
//!
//! The worker (`modelbench instructions-worker`, started under valgrind by `modelbench
//! instructions`) loads the model and runs one untimed warm-up generation with collection
//! off, then calls [`region`] twice: a generation of 1 token (the prompt's forward call and
//! the first sampling) and one of N tokens. Callgrind runs with `--collect-atstart=no
//! --toggle-collect=REGION --dump-after=REGION`, so it counts only while [`region`] is on the
//! stack and writes one profile dump as each call returns: two dumps, two totals.
//!
//! - per prefill token = first / prompt tokens (what TTFT times);
//! - per decode token = (all - first) / (N - 1) (what TPOT times);
//! - total = all (one whole generation).
//!
//! Why the counts repeat:
//! - Collection is toggled per thread (callgrind keeps the collection state per thread), and
//!   the worker runs the warm-up and both counted generations on the single thread of rayon's
//!   global pool (`RAYON_NUM_THREADS=1`; candle's matmul threads `CANDLE_NUM_THREADS=1`), so
//!   candle's `par_chunks` run inline on the counted thread, no work is handed to another
//!   thread, and no pool thread spins waiting for work inside the region.
//! - The allocator: loading a model leaves glibc's heap in a layout that differs from run to
//!   run (hash maps iterate in a random order), and malloc's instruction counts depend on the
//!   layout (free lists, consolidation, the alignment memcpy/memset see): that alone moved
//!   counts by up to 0.05%. So the model is loaded on the main thread (the main arena), the
//!   counted thread allocates from an arena of its own, and glibc's per-thread cache is off
//!   (`GLIBC_TUNABLES=glibc.malloc.tcache_count=0`), so chunks the load allocated never
//!   circulate into the counted thread's allocations. What remains is a few instructions in
//!   ~10^8 (measured: 8).
//! - Model, prompt and sampling are seeded; nothing in the region reads the clock to decide
//!   what to do (the `decode:5%` injection would; `decode:work=N` is the deterministic one).
//!
//! Valgrind emulates the CPU and has no AVX-512: a binary compiled with AVX-512 target
//! features (`-C target-cpu=native` on such a CPU) stops on an unhandled instruction.
//! Runtime-dispatched kernels (gemm) are fine: valgrind's CPUID reports no AVX-512.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The symbol callgrind toggles collection on and dumps after. `#[no_mangle]` keeps the
/// name exact whatever the symbol mangling scheme.
pub const REGION_SYMBOL: &str = "modelbench_instructions_region";

/// The counted region: runs `f` (callgrind counts instructions only while this function is on
/// the stack of the thread that entered it, and dumps its totals when it returns).
#[no_mangle]
#[inline(never)]
pub fn modelbench_instructions_region(f: &mut dyn FnMut()) {
    f();
    std::hint::black_box(());
}

/// [`modelbench_instructions_region`] by its role.
pub fn region(f: &mut dyn FnMut()) {
    modelbench_instructions_region(f)
}

/// The tool the counts come from.
pub const TOOL: &str = "callgrind";

/// valgrind's version line (`valgrind-3.19.0`), or a one-line error saying how to install it.
pub fn valgrind_version() -> Result<String> {
    let out = Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|e| {
            Error::Valgrind(format!(
                "cannot run `valgrind --version` ({e}): install valgrind (Debian/Ubuntu: \
                 apt-get install valgrind) and put it on PATH"
            ))
        })?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !v.starts_with("valgrind") {
        return Err(Error::Valgrind(format!(
            "`valgrind --version` answered {:?}: reinstall valgrind",
            v
        )));
    }
    Ok(v)
}

/// The x86 target features this crate was compiled with (those that matter to candle's
/// kernels), comma-separated; "avx512*" among them means valgrind cannot run the binary.
pub fn target_features() -> String {
    let mut f: Vec<&str> = Vec::new();
    macro_rules! feat {
        ($($name:tt),*) => {
            $(if cfg!(target_feature = $name) { f.push($name); })*
        };
    }
    feat!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16",
        "neon"
    );
    f.join(",")
}

/// Whether this binary was compiled with AVX-512 instructions (valgrind cannot run it).
pub fn built_with_avx512() -> bool {
    cfg!(target_feature = "avx512f")
}

/// The CPU a valgrind-safe build targets: x86-64-v3 (AVX2, FMA, F16C, BMI2; no AVX-512), which
/// valgrind 3.19 executes.
pub const SAFE_TARGET_CPU: &str = "x86-64-v3";

/// Where the valgrind-safe build goes (relative to the checkout): its own target directory,
/// so it never replaces the native build's artifacts. tests/instructions.rs and `.ci/run`
/// build it there with the `dev` profile (`cargo test`'s), as [`SAFE_BUILD`] says.
pub const SAFE_TARGET_DIR: &str = "target/valgrind";

/// How to build a binary valgrind can run, for error messages (the build tests/instructions.rs
/// and `.ci/run` make; add `--release` for the bench profile's code, then
/// target/valgrind/release/modelbench).
pub const SAFE_BUILD: &str = "CARGO_TARGET_DIR=target/valgrind RUSTFLAGS='-C target-cpu=x86-64-v3' cargo build --bin modelbench, then pass --binary target/valgrind/debug/modelbench";

/// The valgrind command line (before the program and its arguments) that counts the region
/// and writes its dumps as `out` (`out.1`, `out.2`, ...) and valgrind's own log as `log`.
pub fn callgrind_args(out: &Path, log: &Path) -> Vec<String> {
    vec![
        "--tool=callgrind".into(),
        "--collect-atstart=no".into(),
        format!("--toggle-collect={REGION_SYMBOL}"),
        format!("--dump-after={REGION_SYMBOL}"),
        format!("--callgrind-out-file={}", out.display()),
        format!("--log-file={}", log.display()),
        // Only instruction counts (no cache simulation, no jumps): the cheapest callgrind.
        "--cache-sim=no".into(),
        "--branch-sim=no".into(),
    ]
}

/// The environment the worker runs with: one thread in rayon's global pool and in candle's,
/// and no per-thread malloc cache (see the module docs). No huge pages either: the binary
/// would restart itself to get them (measure::memory::reexec_with_huge_pages), and valgrind
/// does not follow that exec.
pub const WORKER_ENV: [(&str, &str); 4] = [
    ("RAYON_NUM_THREADS", "1"),
    ("CANDLE_NUM_THREADS", "1"),
    ("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0"),
    (crate::measure::memory::HUGE_PAGES_KNOB, "0"),
];

/// The `totals:` (or `summary:`) instruction count of one callgrind dump.
pub fn dump_total(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The region dumps callgrind wrote for `out` (`out.1`, `out.2`, ... in order; the final
/// dump at exit, `out` itself, counts nothing and is not returned).
pub fn region_dumps(out: &Path) -> Result<Vec<u64>> {
    let mut totals = Vec::new();
    for i in 1.. {
        let p = PathBuf::from(format!("{}.{i}", out.display()));
        if !p.exists() {
            break;
        }
        let text = std::fs::read_to_string(&p).map_err(Error::io(&p))?;
        totals.push(dump_total(&text).ok_or_else(|| {
            Error::Valgrind(format!(
                "{}: no `totals:` line (not a callgrind dump?)",
                p.display()
            ))
        })?);
    }
    Ok(totals)
}

/// Instruction counts of one model and shape, and the per-token figures derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// The 1-token generation: prompt forward call and first sampling.
    pub first_token: u64,
    /// The whole N-token generation.
    pub all_tokens: u64,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

impl Counts {
    /// Instructions of the N - 1 decode steps (all - first); 0 when the second generation
    /// counted fewer (cannot happen with a deterministic region).
    pub fn decode(&self) -> u64 {
        self.all_tokens.saturating_sub(self.first_token)
    }
    pub fn per_prefill_token(&self) -> f64 {
        self.first_token as f64 / self.prompt_tokens.max(1) as f64
    }
    /// None for a 1-token generation (no decode step).
    pub fn per_decode_token(&self) -> Option<f64> {
        (self.new_tokens > 1).then(|| self.decode() as f64 / (self.new_tokens - 1) as f64)
    }
}

/// Explains a failed valgrind run from its log: AVX-512 (or any instruction valgrind lacks)
/// gets the fix, anything else the log's last error line.
pub fn explain_failure(log: &str, program_err: &str) -> String {
    if log.contains("unhandled instruction bytes") || log.contains("SIGILL") {
        return format!(
            "valgrind cannot execute an instruction of the binary (AVX-512 or newer; the binary \
             has target features {}); build one for a valgrind-safe CPU: {SAFE_BUILD}",
            if built_with_avx512() {
                "with AVX-512"
            } else {
                "it was compiled with"
            }
        );
    }
    // The last non-empty line; valgrind's own lines carry a `==PID== ` prefix.
    let last = |s: &str| {
        s.lines()
            .rev()
            .map(|l| {
                let l = l.trim();
                match l.strip_prefix("==").and_then(|r| r.split_once("== ")) {
                    Some((pid, rest)) if pid.chars().all(|c| c.is_ascii_digit()) => rest.trim(),
                    _ => l,
                }
            })
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string()
    };
    let p = last(program_err);
    if !p.is_empty() {
        p
    } else {
        last(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_totals_and_derives_per_token() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 12345\n\nfn=x\n1 5\ntotals: 12345\n";
        assert_eq!(dump_total(dump), Some(12345));
        assert_eq!(dump_total("events: Ir\n"), None);
        let c = Counts {
            first_token: 6_400,
            all_tokens: 6_400 + 63 * 100,
            prompt_tokens: 64,
            new_tokens: 64,
        };
        assert_eq!(c.per_prefill_token(), 100.0);
        assert_eq!(c.per_decode_token(), Some(100.0));
        assert_eq!(c.decode(), 6_300);
        let one = Counts { new_tokens: 1, ..c };
        assert_eq!(one.per_decode_token(), None);
    }
}
