//! Records of `modelbench instructions` (instructions per generated token under callgrind,
//! see [`crate::measure::instructions`]): one JSON line per model and shape, their table, and
//! the exact comparison with a baseline file.
//!
//! These are not timing records (`results.jsonl`): they go to `instructions.jsonl` in a run
//! folder of their own (`target-reports/<stamp>-instructions/`) or a file the user names, and
//! `compare`/`report` never read them.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::judge::gate;
use crate::measure::hardware::Build;
use crate::measure::instructions::Counts;

/// The record's `kind`, so the file says what it holds.
pub const KIND: &str = "instructions";

/// The file name inside a run folder.
pub const FILE: &str = "instructions.jsonl";

/// One model and shape, counted once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstrRecord {
    pub kind: String,
    pub timestamp: String,
    /// `<scenario>/cpu-<dtype>/<model>`, as the timing records name a benchmark.
    pub id: String,
    pub model: String,
    pub scenario: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub sampling: String,
    pub seed: u64,
    pub dtype: String,
    pub device: String,
    /// The generated token ids of the counted N-token generation (greedy output: the same
    /// ids on a rerun, or the counts are not of the same work).
    pub tokens: Vec<u32>,
    pub counts: Counts,
    pub per_prefill_token: f64,
    /// None for a 1-token generation.
    pub per_decode_token: Option<f64>,
    /// `MODELBENCH_INJECT_SLOWDOWN` of the run, if any (an injected run is never a real one).
    pub injected: Option<String>,
    /// `valgrind --version`.
    pub valgrind: String,
    pub tool: String,
    /// How the region is delimited (the callgrind options).
    pub region: String,
    /// Threads of rayon's and candle's pools in the worker.
    pub threads: usize,
    /// The measured binary's build (git commit, rustflags, profile, ...), as it reports it.
    pub build: Build,
    /// The x86 target features the measured binary was compiled with.
    pub target_features: String,
    pub cpu: String,
    /// Wall time of the whole valgrind run (load, warm-up and both counted generations): the
    /// metric's cost on this machine.
    pub valgrind_wall_s: f64,
}

impl InstrRecord {
    /// What two records are joined on: the benchmark and everything that decides its work.
    pub fn key(&self) -> String {
        format!(
            "{} p{} g{} {} seed {}",
            self.id, self.prompt_tokens, self.new_tokens, self.sampling, self.seed
        )
    }

    /// The settings that make two records' counts incomparable, `name: a vs b` for each
    /// that differs: valgrind version, tool, target features, and the build's profile,
    /// features, rustflags, rustc and candle version.
    pub fn differences(&self, other: &InstrRecord) -> Vec<String> {
        let mut out = Vec::new();
        for (name, a, b) in [
            ("valgrind", &self.valgrind, &other.valgrind),
            ("tool", &self.tool, &other.tool),
            (
                "target features",
                &self.target_features,
                &other.target_features,
            ),
        ] {
            if a != b {
                out.push(format!("{name}: `{a}` vs `{b}`"));
            }
        }
        out.extend(self.build.differences(&other.build));
        out
    }
}

/// JSON lines, one record each.
pub fn to_jsonl(records: &[InstrRecord]) -> String {
    let mut s = String::new();
    for r in records {
        s.push_str(&serde_json::to_string(r).expect("a record serializes"));
        s.push('\n');
    }
    s
}

/// Reads an instructions file (or the `instructions.jsonl` of a run folder).
pub fn read(path: &Path) -> Result<Vec<InstrRecord>> {
    let f = if path.is_dir() {
        path.join(FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&f).map_err(|e| {
        Error::Report(format!(
            "{}: cannot read the instruction counts ({e}); pass a file `modelbench instructions` wrote",
            f.display()
        ))
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: InstrRecord = serde_json::from_str(line).map_err(|e| {
            Error::Report(format!(
                "{}:{}: not an instructions record ({e}); pass a file `modelbench instructions` wrote",
                f.display(),
                i + 1
            ))
        })?;
        if r.kind != KIND {
            return Err(Error::Report(format!(
                "{}:{}: a `{}` record, not `{KIND}`; pass a file `modelbench instructions` wrote",
                f.display(),
                i + 1,
                r.kind
            )));
        }
        out.push(r);
    }
    if out.is_empty() {
        return Err(Error::Report(format!(
            "{}: holds no instruction counts; pass a file `modelbench instructions` wrote",
            f.display()
        )));
    }
    Ok(out)
}

fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A fraction as a percentage without trailing zeros (0.001 -> `0.1%`).
pub fn pct(x: f64) -> String {
    let s = format!("{:.4}", x * 100.0);
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// The counts as a table, one row per record.
pub fn table(records: &[InstrRecord]) -> String {
    let mut s = String::from(
        "| benchmark | prompt | new | instr/prefill token | instr/decode token | total | valgrind wall s |\n|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let _ = writeln!(
            s,
            "| {}{} | {} | {} | {} | {} | {} | {:.1} |",
            r.id,
            r.injected
                .as_deref()
                .map(|i| format!(" (injected {i})"))
                .unwrap_or_default(),
            r.prompt_tokens,
            r.new_tokens,
            thousands(r.per_prefill_token.round() as u64),
            r.per_decode_token
                .map(|v| thousands(v.round() as u64))
                .unwrap_or_else(|| "n/a".into()),
            thousands(r.counts.all_tokens),
            r.valgrind_wall_s
        );
    }
    s
}

/// One count of one benchmark, against the baseline's.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    /// `prefill` (the 1-token generation), `decode` (the N - 1 decode steps) or `total`.
    pub count: &'static str,
    pub base: u64,
    pub new: u64,
    /// new / base - 1.
    pub change: f64,
    /// |change| beyond the tolerance.
    pub differs: bool,
}

/// The comparison of a run with a baseline.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub rows: Vec<Row>,
    /// Benchmarks of the new run the baseline does not hold (not compared).
    pub not_in_baseline: Vec<String>,
}

impl Comparison {
    pub fn differing(&self) -> usize {
        self.rows.iter().filter(|r| r.differs).count()
    }

    /// The rows as lines: `id count: base -> new (+x.xxx%) DIFFERS|ok`.
    pub fn lines(&self, tolerance: f64) -> String {
        let mut s = String::new();
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{} {}: {} -> {} instructions ({:+.4}%) {}",
                r.id,
                r.count,
                thousands(r.base),
                thousands(r.new),
                r.change * 100.0,
                if r.differs {
                    format!("DIFFERS by more than {}", pct(tolerance))
                } else {
                    "ok".to_string()
                }
            );
        }
        for id in &self.not_in_baseline {
            let _ = writeln!(s, "{id}: not in the baseline (not compared)");
        }
        s
    }
}

/// Joins `new` with `base` on [`InstrRecord::key`] and compares the prefill, decode and total
/// counts: a count differs when |new / base - 1| > `tolerance` (either way: fewer
/// instructions than the baseline also means the baseline is stale). Refuses records measured
/// under different settings (valgrind, tool, target features, build) unless `force`, and a
/// comparison where no benchmark is common.
pub fn compare(
    base: &[InstrRecord],
    new: &[InstrRecord],
    tolerance: f64,
    force: bool,
) -> Result<Comparison> {
    let mut c = Comparison::default();
    for n in new {
        let Some(b) = base.iter().find(|b| b.key() == n.key()) else {
            c.not_in_baseline.push(n.key());
            continue;
        };
        let diff = b.differences(n);
        if !diff.is_empty() && !force {
            return Err(Error::Report(format!(
                "{}: the baseline was counted under other settings ({}); counts are comparable only on the same settings (use --force to compare anyway)",
                n.id,
                diff.join("; ")
            )));
        }
        for (count, bv, nv) in [
            ("prefill", b.counts.first_token, n.counts.first_token),
            ("decode", b.counts.decode(), n.counts.decode()),
            ("total", b.counts.all_tokens, n.counts.all_tokens),
        ] {
            if count == "decode" && n.new_tokens < 2 {
                continue;
            }
            let change = gate::count_change(bv, nv);
            c.rows.push(Row {
                id: n.id.clone(),
                count,
                base: bv,
                new: nv,
                change,
                differs: gate::differs(change, tolerance),
            });
        }
    }
    if c.rows.is_empty() {
        return Err(Error::Report(format!(
            "the baseline holds none of the measured benchmarks ({}); measure the same models and shape as the baseline",
            c.not_in_baseline.join(", ")
        )));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(first: u64, all: u64) -> InstrRecord {
        InstrRecord {
            kind: KIND.into(),
            timestamp: "t".into(),
            id: "short/cpu-f32/fixture:llama".into(),
            model: "fixture:llama".into(),
            scenario: "short".into(),
            prompt_tokens: 64,
            new_tokens: 64,
            sampling: "greedy".into(),
            seed: 42,
            dtype: "f32".into(),
            device: "cpu".into(),
            tokens: vec![],
            counts: Counts {
                first_token: first,
                all_tokens: all,
                prompt_tokens: 64,
                new_tokens: 64,
            },
            per_prefill_token: 0.0,
            per_decode_token: None,
            injected: None,
            valgrind: "valgrind-3.19.0".into(),
            tool: "callgrind".into(),
            region: String::new(),
            threads: 1,
            build: crate::measure::hardware::build(),
            target_features: "avx2".into(),
            cpu: "x".into(),
            valgrind_wall_s: 1.0,
        }
    }

    #[test]
    fn flags_a_count_beyond_the_tolerance_either_way() {
        let base = [rec(1_000_000, 2_000_000)];
        let same = compare(&base, &[rec(1_000_000, 2_000_500)], 0.001, false).unwrap();
        assert_eq!(same.differing(), 0, "{}", same.lines(0.001));
        let more = compare(&base, &[rec(1_000_000, 2_100_000)], 0.001, false).unwrap();
        // decode 1,000,000 -> 1,100,000 and total; prefill unchanged.
        assert_eq!(more.differing(), 2, "{}", more.lines(0.001));
        assert!(more.lines(0.001).contains("1,000,000 -> 1,100,000"));
        let fewer = compare(&base, &[rec(900_000, 2_000_000)], 0.001, false).unwrap();
        assert_eq!(fewer.differing(), 2, "{}", fewer.lines(0.001));
    }

    #[test]
    fn refuses_other_settings_and_no_common_benchmark() {
        let base = [rec(1, 2)];
        let mut other = rec(1, 2);
        other.valgrind = "valgrind-3.22.0".into();
        let e = compare(&base, &[other.clone()], 0.001, false).unwrap_err();
        assert!(e.to_string().contains("valgrind-3.22.0"), "{e}");
        assert!(compare(&base, &[other], 0.001, true).is_ok());
        let mut m = rec(1, 2);
        m.id = "short/cpu-f32/fixture:qwen3".into();
        let e = compare(&base, &[m], 0.001, false).unwrap_err();
        assert!(e.to_string().contains("fixture:qwen3"), "{e}");
    }

    #[test]
    fn reads_back_what_it_writes_and_names_a_bad_file() {
        let dir = std::env::temp_dir().join(format!("mb-instr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.jsonl");
        std::fs::write(&f, to_jsonl(&[rec(1, 2)])).unwrap();
        assert_eq!(read(&f).unwrap()[0].counts.all_tokens, 2);
        std::fs::write(&f, "{\"schema\": 2}\n").unwrap();
        let e = read(&f).unwrap_err().to_string();
        assert!(
            e.contains("a.jsonl:1") && e.contains("not an instructions record"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
