//! `modelbench ops`: where the time goes (issue 31). Parses, then calls
//! `workloads::ops::measure` and prints its table.

use std::path::PathBuf;

use modelbench::workloads::ops::{self, OpsPlan, Phase};

/// `modelbench ops`.
#[derive(clap::Args, Debug, Clone)]
pub struct OpsArgs {
    /// The model (a GGUF Gemma 3: gguf:<file | cached repo | fixture:gemma3>).
    #[arg(long)]
    pub model: String,
    /// prefill (one forward of the prompt) or decode (one token at a KV depth).
    #[arg(long, default_value = "decode")]
    pub scenario: String,
    /// Decode: KV-cache positions before the step (default 320, the midpoint of the suite's
    /// decode scenario: 64-token prompt, 512 new tokens).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Prefill: prompt tokens (default 1024, the suite's prefill scenario).
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    /// Time the same ops through ggml: `llama.cpp` (its test-backend-ops perf mode, built by
    /// scripts/build-llama-cpp.sh).
    #[arg(long)]
    pub peer: Option<String>,
    /// The test-backend-ops program (default: where scripts/build-llama-cpp.sh puts it).
    #[arg(long)]
    pub peer_program: Option<PathBuf>,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the table as markdown here.
    #[arg(long)]
    pub md: Option<PathBuf>,
    /// A table saved earlier with --json (the base): print the op whose time per step grew
    /// most from it to this one (at least --threshold of the base step, intervals apart).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// With --base: the growth that counts, as a share of the base step (default 5%).
    #[arg(long, default_value = "5%")]
    pub threshold: String,
    /// Fewer repetitions (5 samples per op, 2 generations for the step): a quick look, and
    /// what the tests and the regression profiles run.
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value = modelbench::config::knobs::default_of("MODELBENCH_DEVICE"))]
    pub device: String,
}

pub fn parse_phase(s: &str) -> anyhow::Result<Phase> {
    match s.trim() {
        "prefill" => Ok(Phase::Prefill),
        "decode" => Ok(Phase::Decode),
        other => anyhow::bail!("--scenario {other:?}: use prefill or decode"),
    }
}

pub fn ops_cmd(a: OpsArgs) -> anyhow::Result<()> {
    let phase = parse_phase(&a.scenario)?;
    anyhow::ensure!(
        !(phase == Phase::Prefill && a.depth.is_some()),
        "--depth applies to --scenario decode (a prefill starts at depth 0; set its length with --prompt-tokens)"
    );
    anyhow::ensure!(
        !(phase == Phase::Decode && a.prompt_tokens.is_some()),
        "--prompt-tokens applies to --scenario prefill (a decode step is one token; set its KV depth with --depth)"
    );
    let peer = match a.peer.as_deref() {
        None => None,
        Some("llama.cpp" | "llama-cpp" | "llamacpp") => Some(
            a.peer_program
                .clone()
                .unwrap_or_else(ops::default_backend_ops),
        ),
        Some(other) => anyhow::bail!("--peer {other:?}: the per-op peer is llama.cpp"),
    };
    let (spec, _) = crate::args::device_and_dtype(&a.device, None)?;
    let threshold = modelbench::output::compare::parse_threshold(&a.threshold)
        .map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    let base = match &a.base {
        Some(p) => Some(read_table(p)?),
        None => None,
    };
    let mut plan = OpsPlan::for_scenario(phase, a.depth, a.prompt_tokens);
    if a.quick {
        plan = plan.quick();
    }
    let table = ops::measure(&a.model, &plan, spec, peer.as_deref(), &mut |r| {
        eprintln!(
            "  {:<10} {:<48} {:>10.2} us x {}",
            r.kind, r.op, r.us, r.calls
        )
    })?;
    let md = table.render();
    print!("{md}");
    if let Some(p) = &a.json {
        modelbench::util::fsio::atomic_write(p, serde_json::to_string_pretty(&table)?.as_bytes())?;
    }
    if let Some(p) = &a.md {
        modelbench::util::fsio::atomic_write(p, md.as_bytes())?;
    }
    if let Some(b) = &base {
        println!("{}", ops::grew_most_line(b, &table, threshold));
    }
    Ok(())
}

/// A table written by `ops --json`.
pub fn read_table(p: &std::path::Path) -> anyhow::Result<ops::OpsTable> {
    let text = std::fs::read_to_string(p).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (write one with `modelbench ops --json`)",
            p.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a per-op table from `modelbench ops --json` ({e})",
            p.display()
        )
    })
}

/// The per-op profile of a flagged regression: `ops` run by the base and the new executable
/// (the new one with `inject`, if any) on `model` at the flagged step, both tables saved in
/// `dir` (`ops-<tag>-base.json/.md`, `ops-<tag>-new.json/.md`), and the line naming the op
/// whose time grew most. A side that cannot run `ops` (an older build, a model it does not
/// enumerate) gives a line saying so instead.
#[allow(clippy::too_many_arguments)]
pub fn profile(
    (base_exe, new_exe): (&std::path::Path, &std::path::Path),
    inject: Option<&str>,
    model: &str,
    scenario: &str,
    phase: Phase,
    shape: usize,
    dir: &std::path::Path,
    tag: &str,
    threshold: f64,
) -> String {
    let run =
        |exe: &std::path::Path, side: &str, inj: Option<&str>| -> anyhow::Result<ops::OpsTable> {
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
            let o = c.output()?;
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr);
                anyhow::bail!(
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
    let flame = flame_graphs((base_exe, new_exe), inject, model, scenario, dir, tag);
    format!("{ops_line}\nflame graphs of {tag}: {flame}")
}

/// Why `perf` cannot sample here (None: it can): one `perf record -e cpu-clock` of `true`.
pub fn perf_unavailable(dir: &std::path::Path) -> Option<String> {
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
    (base_exe, new_exe): (&std::path::Path, &std::path::Path),
    inject: Option<&str>,
    model: &str,
    scenario: &str,
    dir: &std::path::Path,
    tag: &str,
) -> String {
    use modelbench::output::flamegraph;
    if let Some(why) = perf_unavailable(dir) {
        return format!("not available ({why})");
    }
    let side = |exe: &std::path::Path,
                name: &str,
                inj: Option<&str>|
     -> anyhow::Result<(flamegraph::Folded, PathBuf)> {
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
        let o = c.output()?;
        if !o.status.success() {
            let _ = std::fs::remove_file(&data);
            anyhow::bail!(
                "{name}: `perf record ... run --scenario {scenario}` failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message")
            );
        }
        let script = std::process::Command::new("perf")
            .args(["script", "-i"])
            .arg(&data)
            .output()?;
        let _ = std::fs::remove_file(&data);
        if !script.status.success() {
            anyhow::bail!("{name}: `perf script` failed");
        }
        let folded = flamegraph::fold(&String::from_utf8_lossy(&script.stdout));
        if folded.is_empty() {
            anyhow::bail!("{name}: perf recorded no samples");
        }
        let svg = dir.join(format!("flame-{tag}-{name}.svg"));
        let title = format!(
            "{name}: {} {model} {scenario}{} ({} samples, cpu-clock)",
            exe.display(),
            inj.map(|i| format!(", injected {i}")).unwrap_or_default(),
            flamegraph::total(&folded)
        );
        modelbench::util::fsio::atomic_write(&svg, flamegraph::svg(&folded, &title).as_bytes())?;
        modelbench::util::fsio::atomic_write(
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
