//! The ops table as text: its sums and coverage against the measured step, the table of rows
//! (alone and in the forward's order), and the rows that grew most between two tables.

use super::{OpRow, OpsTable};
use crate::measure::stats::median;

impl OpsTable {
    /// Sum over the rows of calls x time per call (us).
    pub fn ops_us(&self) -> f64 {
        self.rows.iter().map(OpRow::step_us).sum()
    }

    /// Share of the measured step the ops account for.
    pub fn coverage(&self) -> f64 {
        self.ops_us() / self.step_us
    }

    /// Sum over the rows of calls x time per call in the forward's order (us); None when a
    /// row was not timed in order.
    pub fn in_order_us(&self) -> Option<f64> {
        self.rows
            .iter()
            .map(|r| r.seq_us.map(|us| us * r.calls as f64))
            .sum()
    }

    /// Among the rows with ggml times, the one with the largest gap per step where candle is
    /// slower (`candle_slower`: the op accounting for most of the step's gap to ggml), or where
    /// ggml is slower.
    pub fn largest_gap(&self, candle_slower: bool) -> Option<&OpRow> {
        let sign = if candle_slower { 1.0 } else { -1.0 };
        self.rows
            .iter()
            .filter(|r| r.ggml_us.is_some() && sign * gap(r) > 0.0)
            .max_by(|a, b| (sign * gap(a)).total_cmp(&(sign * gap(b))))
    }

    /// The table as markdown, with the coverage line (and the peer's columns and the
    /// largest-gap line when ggml's times are filled in).
    pub fn render(&self) -> String {
        let peer = self.peer.is_some();
        let step = self.step_us;
        let mut s = format!(
            "per-op table: {} {} ({} token{} at KV depth {}), candle threads {}{}\n\n",
            self.model,
            self.phase.name(),
            self.tokens,
            if self.tokens == 1 { "" } else { "s" },
            self.depth,
            self.threads,
            self.injected
                .as_deref()
                .map(|i| format!(", injected {i}"))
                .unwrap_or_default()
        );
        let in_order = self.in_order_us();
        s.push_str("| kind | op | shape | calls/step | us/call [95% CI] |");
        if in_order.is_some() {
            s.push_str(" in order us/call [95% CI] |");
        }
        s.push_str(" share of step | GB/s | GFLOP/s | % of roof |");
        if peer {
            s.push_str(" ggml us/call | candle/ggml | gap us/step |");
        }
        s.push('\n');
        s.push_str("|---|---|---|---:|---:|");
        if in_order.is_some() {
            s.push_str("---:|");
        }
        s.push_str("---:|---:|---:|---:|");
        if peer {
            s.push_str("---:|---:|---:|");
        }
        s.push('\n');
        let mut rows: Vec<&OpRow> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.step_us().total_cmp(&a.step_us()));
        for r in rows {
            let gbs = r.bytes / (r.us * 1e-6) / 1e9;
            let gflops = r.flops.map(|f| f / (r.us * 1e-6) / 1e9);
            let roof = match (gflops, self.roofs.matmul_gflops, self.roofs.mem_read_gbs) {
                (Some(g), Some(peak), Some(mem)) => Some((g / peak).max(gbs / mem)),
                (Some(g), Some(peak), None) => Some(g / peak),
                (_, _, Some(mem)) => Some(gbs / mem),
                _ => None,
            };
            let ci = |c: Option<(f64, f64)>| {
                c.map(|(l, h)| format!("[{l:.2}, {h:.2}]"))
                    .unwrap_or_else(|| "[n/a]".into())
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} {} |",
                r.kind,
                r.op,
                r.shape,
                r.calls,
                r.us,
                ci(r.ci_us),
            ));
            if in_order.is_some() {
                if let Some(us) = r.seq_us {
                    s.push_str(&format!(" {us:.2} {} |", ci(r.seq_ci_us)));
                }
            }
            s.push_str(&format!(
                " {:.1}% | {:.2} | {} | {} |",
                100.0 * r.step_us() / step,
                gbs,
                gflops
                    .map(|g| format!("{g:.2}"))
                    .unwrap_or_else(|| "-".into()),
                roof.map(|x| format!("{:.1}%", 100.0 * x))
                    .unwrap_or_else(|| "not available".into()),
            ));
            if peer {
                match (r.ggml.as_ref(), r.ggml_us) {
                    (Some(_), Some(g)) => {
                        s.push_str(&format!(" {g:.2} | {:.2}x | {:+.1} |", r.us / g, gap(r)))
                    }
                    (Some(_), None) => s.push_str(" not reported by test-backend-ops | - | - |"),
                    (None, _) => s.push_str(" not in ggml's perf cases | - | - |"),
                }
            }
            s.push('\n');
        }
        let ops = self.ops_us();
        s.push_str(&format!(
            "\ncoverage: the ops sum to {:.1} us of the measured {} step of {:.1} us [95% CI {}] ({} steps): {:.1}% timed alone (each op back to back, hot caches);",
            ops,
            self.phase.name(),
            step,
            self.step_ci_us
                .map(|(l, h)| format!("{l:.1}, {h:.1}"))
                .unwrap_or_else(|| "n/a".into()),
            self.step_samples,
            100.0 * ops / step
        ));
        let covered = match in_order {
            Some(seq) => {
                s.push_str(&format!(
                    " {:.1}% timed in the forward's order ({seq:.1} us: each call where the forward makes it, after the op before it, the thread pools and caches as the model leaves them).",
                    100.0 * seq / step
                ));
                seq
            }
            None => {
                s.push_str(&format!(
                    " in the forward's order: not available ({}).",
                    self.order_note
                        .as_deref()
                        .unwrap_or("this table was measured without it")
                ));
                ops
            }
        };
        if covered < step {
            s.push_str(&format!(
                " Not covered: {:.1} us ({:.1}%): the work between the ops (views, reshapes, tensor bookkeeping and allocation in the model's forward, the engine's loop){}.\n",
                step - covered,
                100.0 * (step - covered) / step,
                if in_order.is_some() {
                    ""
                } else {
                    " and ops running slower in the model than alone"
                }
            ));
        } else {
            s.push_str(" The ops add up to more than the step.\n");
        }
        s.push_str(&self.render_in_model());
        s.push_str(&format!(
                "roofs: {}; {}\n",
                self.roofs
                    .mem_read_gbs
                    .map(|g| format!("memory {g:.1} GB/s (calibrate's streaming read)"))
                    .unwrap_or_else(
                        || "memory roof not available (run `modelbench calibrate`)".into()
                    ),
                self.roofs
                    .matmul_gflops
                    .map(|g| format!("compute {g:.1} GFLOP/s (calibrate's f32 matmul)"))
                    .unwrap_or_else(
                        || "compute roof not available (run `modelbench calibrate`)".into()
                    ),
            ));
        if let Some(p) = &self.peer {
            let with: Vec<&OpRow> = self.rows.iter().filter(|r| r.ggml_us.is_some()).collect();
            let c: f64 = with.iter().map(|r| r.step_us()).sum();
            let g: f64 = with
                .iter()
                .map(|r| r.ggml_us.unwrap_or(0.0) * r.calls as f64)
                .sum();
            s.push_str(&format!(
                "ggml: {p}; the {} ops it has: candle {c:.1} us/step, ggml {g:.1} us/step\n",
                with.len()
            ));
            let line = |what: &str, r: &OpRow| {
                format!(
                    "largest gap ({what}): {} {} {}: candle {:.2} us x {} = {:.1} us/step, ggml {:.2} us x {} = {:.1} us/step, gap {:+.1} us/step\n",
                    r.kind,
                    r.op,
                    r.shape,
                    r.us,
                    r.calls,
                    r.step_us(),
                    r.ggml_us.unwrap_or(f64::NAN),
                    r.calls,
                    r.ggml_us.unwrap_or(f64::NAN) * r.calls as f64,
                    gap(r)
                )
            };
            if let Some(r) = self.largest_gap(false) {
                s.push_str(&line("ggml slower", r));
            }
            match self.largest_gap(true) {
                Some(r) => s.push_str(&line("candle slower", r)),
                None if with.is_empty() => s.push_str(
                    "largest gap (candle slower): not available (test-backend-ops reported no op)\n",
                ),
                None => s.push_str(
                    "largest gap (candle slower): none (candle is as fast or faster on every op ggml has)\n",
                ),
            }
        }
        s
    }
}

impl OpsTable {
    /// Time per step of the rows of `kind` timed alone (us).
    pub(super) fn alone_us(&self, kind: &str) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .map(OpRow::step_us)
            .sum()
    }

    /// Time per step of the rows of `kind` timed in the forward's order (us; 0 without).
    pub(super) fn order_us(&self, kind: &str) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| r.seq_us.map(|us| us * r.calls as f64))
            .sum()
    }

    /// What the table misses, from the in-model profile: per marked kind, its time in the
    /// model against alone; the unmarked ops alone; the rest (work between the ops).
    pub fn render_in_model(&self) -> String {
        let Some(p) = &self.in_model else {
            return "in the model: not available (the in-model profile times ops on the host clock, so it runs on the CPU device only)\n".into();
        };
        let marked: f64 = p.kinds.iter().map(|k| k.us).sum();
        let unmarked: Vec<&str> = self
            .rows
            .iter()
            .map(|r| r.kind.as_str())
            .filter(|k| !p.kinds.iter().any(|m| m.kind == *k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // What the model's times are held against: the ops in the forward's order where the
        // table has them, else alone.
        let ordered = self.in_order_us().is_some();
        let (against, reference) = if ordered {
            ("in the forward's order", "in order")
        } else {
            ("alone", "alone")
        };
        let ref_us = |kind: &str| -> f64 {
            if ordered {
                self.order_us(kind)
            } else {
                self.alone_us(kind)
            }
        };
        let unmarked_ref: f64 = unmarked.iter().map(|k| ref_us(k)).sum();
        // The kinds' times are averages over the profiled steps, so they add up within the
        // mean step, not the median one: one stalled step raises a kind's average and the
        // mean, never the median (tables from before the mean was kept: the median).
        let step = p.mean_step_us.unwrap_or(p.step_us);
        let between = step - marked - unmarked_ref;
        let mut s = format!(
            "in the model ({} profiled steps, each marked op's wall time inside the forward): step {:.1} us (median; mean {:.1}); the marked ops {:.1} us ({:.1}% of the mean step); in the model vs alone{}, us per step:",
            p.steps,
            p.step_us,
            step,
            marked,
            100.0 * marked / step,
            if ordered { " and in order" } else { "" }
        );
        let mut deltas: Vec<(String, f64)> = Vec::new();
        for k in &p.kinds {
            let alone = self.alone_us(&k.kind);
            s.push_str(&format!(
                " {} {:.1} vs {:.1} ({:+.1})",
                k.kind,
                k.us,
                alone,
                k.us - alone
            ));
            if ordered {
                let o = self.order_us(&k.kind);
                s.push_str(&format!(" and {:.1} ({:+.1})", o, k.us - o));
            }
            s.push(';');
            deltas.push((
                format!("{} runs slower in the model than {against}", k.kind),
                k.us - ref_us(&k.kind),
            ));
        }
        s.push_str(&format!(
            " the ops the forward does not mark ({}) {reference} {:.1} us; ",
            unmarked.join(", "),
            unmarked_ref,
        ));
        if between >= 0.0 {
            s.push_str(&format!(
                "the rest, {:.1} us ({:.1}%), is the work between the ops (views, reshapes, allocation, the pick's host copy).\n",
                between,
                100.0 * between / step
            ));
            deltas.push(("the work between the ops".into(), between));
        } else {
            // The unmarked ops ran faster in the model than {reference}: the rest cannot
            // be told apart from that difference.
            s.push_str(&format!(
                "the work between the ops: not measured (the marked ops and the unmarked ones {reference} exceed the mean step by {:.1} us).\n",
                -between
            ));
        }
        if let Some((what, us)) = deltas.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            if *us > 0.0 {
                s.push_str(&format!(
                    "largest part of what the table misses: {what} ({us:.1} us per step, {:.1}% of the mean profiled step)\n",
                    100.0 * us / step
                ));
            }
        }
        s
    }
}

/// candle - ggml, us per step.
pub(super) fn gap(r: &OpRow) -> f64 {
    r.ggml_us
        .map(|g| (r.us - g) * r.calls as f64)
        .unwrap_or(0.0)
}

/// One op measured on both sides: what it is, base and new time per step (us) and the 95%
/// intervals the comparison holds apart (per call for a row, per step for an in-model kind:
/// only their order matters).
struct Both {
    what: String,
    b: f64,
    n: f64,
    b_ci: Option<(f64, f64)>,
    n_ci: Option<(f64, f64)>,
}

/// The median factor by which the ops moved between the two runs: the machine's own drift
/// between them (a slower minute scales every op by about the same factor), which
/// [`grew_most`] takes out before it compares. 1 when fewer than three ops were measured on
/// both sides (too few for a median that one changed op cannot move).
fn drift(ops: &[Both]) -> f64 {
    let r: Vec<f64> = ops
        .iter()
        .filter(|o| o.b > 0.0 && o.n > 0.0)
        .map(|o| o.n / o.b)
        .collect();
    if r.len() < 3 {
        return 1.0;
    }
    median(&r)
}

/// The ops of `ops` that grew beyond the drift: new scaled by `1 / drift` (and its interval
/// with it), growth at least `min` us per step, the intervals apart (new's low end above
/// base's high end). (what, base us/step, new us/step as measured, factor over the drift).
fn beyond_drift(ops: &[Both], min: f64) -> Vec<(String, f64, f64, f64)> {
    let g = drift(ops);
    ops.iter()
        .filter_map(|o| {
            let apart = match (o.b_ci, o.n_ci) {
                (Some((_, hb)), Some((ln, _))) => ln / g > hb,
                _ => false,
            };
            (o.n / g - o.b >= min && apart).then(|| (o.what.clone(), o.b, o.n, o.n / g / o.b))
        })
        .collect()
}

/// The op whose time grew most from `base` to `new`: of the ops that grew by at least
/// `threshold` of the base step beyond the machine's drift between the two runs (the median
/// factor of all ops, taken out) with their 95% intervals apart, the one that grew by the
/// largest factor. Two measurements are asked: each op alone (the table's rows) and each kind
/// of op inside the model's own forward (the in-model profile, per step), which sees a change
/// that slows an op only where the model calls it. The factor, not the microseconds, picks:
/// under drift the largest op gains the most microseconds, the changed op the largest factor.
/// (what, base us/step, new us/step, the median factor of all ops). None: no op grew that much.
pub fn grew_most(
    base: &OpsTable,
    new: &OpsTable,
    threshold: f64,
) -> Option<(String, f64, f64, f64)> {
    let min = threshold * base.step_us;
    let alone: Vec<Both> = new
        .rows
        .iter()
        .filter_map(|rn| {
            let rb = base.rows.iter().find(|r| r.key() == rn.key())?;
            Some(Both {
                what: rn.key(),
                b: rb.step_us(),
                n: rn.step_us(),
                b_ci: rb.ci_us,
                n_ci: rn.ci_us,
            })
        })
        .collect();
    let in_model: Vec<Both> = match (&base.in_model, &new.in_model) {
        (Some(pb), Some(pn)) => pn
            .kinds
            .iter()
            .filter_map(|kn| {
                let kb = pb.kinds.iter().find(|k| k.kind == kn.kind)?;
                Some(Both {
                    what: format!("{} (in the model's forward)", kn.kind),
                    b: kb.median_us?,
                    n: kn.median_us?,
                    b_ci: kb.ci_us,
                    n_ci: kn.ci_us,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let g = drift(&alone);
    beyond_drift(&alone, min)
        .into_iter()
        .chain(beyond_drift(&in_model, min))
        .max_by(|x, y| x.3.total_cmp(&y.3))
        .map(|(what, b, n, _)| (what, b, n, g))
}

/// The regression report's line: the op whose time per step grew most from `base` to `new`
/// (see [`grew_most`]), or that none grew beyond the threshold.
pub fn grew_most_line(base: &OpsTable, new: &OpsTable, threshold: f64) -> String {
    let steps = format!("steps {:.1} -> {:.1} us", base.step_us, new.step_us);
    match grew_most(base, new, threshold) {
        Some((k, b, n, g)) => format!(
            "op whose time grew most ({} {}): {k}: {b:.1} -> {n:.1} us/step ({:+.1} us, {:.2}x; the ops alone moved by a median {g:.2}x between the two runs); {steps}",
            new.model,
            new.phase.name(),
            n - b,
            n / b,
        ),
        None => format!(
            "op whose time grew most ({} {}): none grew by {:.0}% of the base step or more beyond the median of all ops, with separate 95% intervals, alone or in the model's forward; {steps}",
            new.model,
            new.phase.name(),
            threshold * 100.0
        ),
    }
}
