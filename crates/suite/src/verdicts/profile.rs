//! What a flagged regression gets: the per-op tables (`modelbench ops`) of both builds at the
//! flagged step and a flame graph of each build running the scenario (`perf`), beside the
//! comparison, with the line naming what grew most (issue 31).

use std::path::{Path, PathBuf};

use crate::app::ops::read_table;
use crate::workloads::ops::{self, Phase};
use crate::Result;

/// The per-op profile of a flagged regression: `ops` run by the base and the new executable
/// (the new one with `inject`, if any) on `model` at the flagged step, both tables saved in
/// `dir` (`ops-<tag>-base.json/.md`, `ops-<tag>-new.json/.md`), and the line naming the op
/// whose time grew most. A side that cannot run `ops` (an older build, a model it does not
/// enumerate) gives a line saying so instead.
#[allow(clippy::too_many_arguments)]
pub fn profile(
    flames: &mut Flames,
    (base_exe, new_exe): (&Path, &Path),
    inject: Option<&str>,
    model: &str,
    scenario: &str,
    phase: Phase,
    shape: usize,
    dir: &Path,
    tag: &str,
    threshold: f64,
) -> String {
    let run = |exe: &Path, side: &str, inj: Option<&str>| -> Result<ops::OpsTable> {
        let json = dir.join(format!("ops-{tag}-{side}.json"));
        let md = dir.join(format!("ops-{tag}-{side}.md"));
        let mut c = std::process::Command::new(exe);
        c.args(["ops", "--model", model, "--scenario", phase.name()])
            .args(match phase {
                Phase::Decode => ["--depth".to_string(), shape.to_string()],
                Phase::Prefill => ["--prompt-tokens".to_string(), shape.to_string()],
            })
            .arg("--json")
            .arg(&json)
            .arg("--md")
            .arg(&md)
            .env_remove("MODELBENCH_INJECT_SLOWDOWN");
        if let Some(i) = inj {
            c.env("MODELBENCH_INJECT_SLOWDOWN", i);
        }
        let o = c
            .output()
            .map_err(|e| fail!("{side}: cannot start {}: {e}", exe.display()))?;
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            bail!(
                "{side}: `ops` failed: {}",
                err.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message")
            );
        }
        read_table(&json)
    };
    let what = format!("per-op profile of {tag}");
    let ops_line =
        match run(base_exe, "base", None).and_then(|b| Ok((b, run(new_exe, "new", inject)?))) {
            Ok((b, n)) => format!("{what}: {}", ops::grew_most_line(&b, &n, threshold)),
            Err(e) => format!("{what}: not available ({e:#})"),
        };
    let flame = match flames.reuse(model, scenario, dir, tag) {
        Some(line) => line,
        None => {
            let line = flame_graphs((base_exe, new_exe), inject, model, scenario, dir, tag);
            flames.0.push(Drawn {
                model: model.into(),
                scenario: scenario.into(),
                tag: tag.into(),
                line: line.clone(),
            });
            line
        }
    };
    format!("{ops_line}\nflame graphs of {tag}: {flame}")
}

/// The flame graphs drawn so far in one comparison, by model and scenario: a flame graph is of
/// `run --scenario S` (both phases), so a scenario flagged in prefill and in decode is sampled
/// once and its files copied under the second tag (two `perf record` runs and a `perf script`
/// each saved, about 45 s of fixture:gemma3's short scenario on the 2-core VM).
#[derive(Default)]
pub struct Flames(Vec<Drawn>);

/// One drawn pair of flame graphs: whose, under which tag, and the line printed for it.
struct Drawn {
    model: String,
    scenario: String,
    tag: String,
    line: String,
}

impl Flames {
    /// The line for `tag` when `model`'s `scenario` was already drawn (its files copied to
    /// `tag`'s names), or None where it was not, or was not available, or a copy failed.
    fn reuse(&self, model: &str, scenario: &str, dir: &Path, tag: &str) -> Option<String> {
        let Drawn {
            tag: first, line, ..
        } = self.0.iter().find(|d| {
            d.model == model && d.scenario == scenario && !d.line.starts_with("not available")
        })?;
        for side in ["base", "new"] {
            for ext in ["svg", "folded"] {
                std::fs::copy(
                    dir.join(format!("flame-{first}-{side}.{ext}")),
                    dir.join(format!("flame-{tag}-{side}.{ext}")),
                )
                .ok()?;
            }
        }
        Some(format!(
            "the perf runs of {first} (one run of scenario {scenario} covers both phases), copied as flame-{tag}-base/new.svg: {line}"
        ))
    }
}

/// Why `perf` cannot sample here (None: it can): one `perf record -e cpu-clock` of `true`.
pub fn perf_unavailable(dir: &Path) -> Option<String> {
    let data = dir.join(".perf-probe.data");
    let out = std::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o"])
        .arg(&data)
        .args(["--", "true"])
        .output();
    let _ = std::fs::remove_file(&data);
    match out {
        Err(e) => Some(format!(
            "`perf` could not be started ({e}); install linux-perf"
        )),
        Ok(o) if !o.status.success() => Some(format!(
            "`perf record -e cpu-clock` failed here: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
        )),
        Ok(_) => None,
    }
}

/// Samples each side running `scenario` on `model` (`run --trials 3`, NEW with `inject`) with
/// `perf record -e cpu-clock --call-graph dwarf` and draws both flame graphs beside the
/// comparison (`flame-<tag>-base/new.svg` and `.folded`). Returns the line to print: the
/// files and the function whose share of samples grew most, or why not available.
pub fn flame_graphs(
    (base_exe, new_exe): (&Path, &Path),
    inject: Option<&str>,
    model: &str,
    scenario: &str,
    dir: &Path,
    tag: &str,
) -> String {
    use crate::output::flamegraph;
    if let Some(why) = perf_unavailable(dir) {
        return format!("not available ({why})");
    }
    let side =
        |exe: &Path, name: &str, inj: Option<&str>| -> Result<(flamegraph::Folded, PathBuf)> {
            let data = dir.join(format!("flame-{tag}-{name}.perf.data"));
            let mut c = std::process::Command::new("perf");
            c.args(["record", "-q", "-e", "cpu-clock", "-F", "499"])
                .args(["--call-graph", "dwarf,16384", "-o"])
                .arg(&data)
                .arg("--")
                .arg(exe)
                .args(["run", "--model", model, "--scenario", scenario])
                .args(["--trials", "3", "--warmup", "1", "--no-save"])
                .env_remove("MODELBENCH_INJECT_SLOWDOWN");
            if let Some(i) = inj {
                c.env("MODELBENCH_INJECT_SLOWDOWN", i);
            }
            let o = c
                .output()
                .map_err(|e| fail!("{name}: cannot start perf: {e}"))?;
            if !o.status.success() {
                let _ = std::fs::remove_file(&data);
                bail!(
                    "{name}: `perf record ... run --scenario {scenario}` failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("no message")
                );
            }
            // `--no-inline`: an inlined function's samples count in the function it was
            // inlined into. With inline frames resolved (perf 6.1 runs addr2line per frame)
            // one side of fixture:llama's short scenario took 55 s of `perf script` on the
            // 2-core VM, against 0.65 s without (2026-11-28).
            let script = std::process::Command::new("perf")
                .args(["script", "--no-inline", "-i"])
                .arg(&data)
                .output()
                .map_err(|e| fail!("{name}: cannot start perf script: {e}"))?;
            let _ = std::fs::remove_file(&data);
            if !script.status.success() {
                bail!("{name}: `perf script` failed");
            }
            let folded = flamegraph::fold(&String::from_utf8_lossy(&script.stdout));
            if folded.is_empty() {
                bail!("{name}: perf recorded no samples");
            }
            let svg = dir.join(format!("flame-{tag}-{name}.svg"));
            let title = format!(
                "{name}: {} {model} {scenario}{} ({} samples, cpu-clock)",
                exe.display(),
                inj.map(|i| format!(", injected {i}")).unwrap_or_default(),
                flamegraph::total(&folded)
            );
            crate::util::fsio::atomic_write(&svg, flamegraph::svg(&folded, &title).as_bytes())?;
            crate::util::fsio::atomic_write(
                &dir.join(format!("flame-{tag}-{name}.folded")),
                flamegraph::folded_text(&folded).as_bytes(),
            )?;
            Ok((folded, svg))
        };
    match side(base_exe, "base", None).and_then(|b| Ok((b, side(new_exe, "new", inject)?))) {
        Ok(((fb, sb), (fnew, sn))) => {
            let grew = match flamegraph::grew_most(&fb, &fnew) {
                Some((f, b, n)) if n > b => format!(
                    "; the function whose share of samples grew most: {f} ({:.1}% -> {:.1}% of samples)",
                    100.0 * b,
                    100.0 * n
                ),
                _ => "; no function's share of samples grew".into(),
            };
            format!("{} and {}{grew}", sb.display(), sn.display())
        }
        Err(e) => format!("not available ({e:#})"),
    }
}
