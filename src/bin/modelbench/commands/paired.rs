//! `modelbench compare --paired A B`: paired A/B verdicts (Tango.rs's method). A and B are
//! commits or branches (each built once in a worktree under target/paired/) or paths to
//! `modelbench` executables. Both start as long-lived workers (`modelbench worker`) with the
//! model loaded and warmed up; the parent asks them for one trial each, in ABBA order, pair
//! after pair, in the same minutes, with the same prompt ids (same seed, same trial number on
//! both sides). Each pair gives ratios B/A of end-to-end time, prefill time (TTFT) and time
//! per output token after the first (decode); the verdict of each metric is the median of its
//! per-pair ratios with a bootstrap 95% CI (`measure::paired`) against the threshold.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};

use anyhow::Context;
use modelbench::config::plans::{parse_models, Plan};
use modelbench::engine::scenario::{prepare, Scenario, Tier};
use modelbench::measure::candle_source::{self, CandleSource};
use modelbench::measure::paired::{a_first, paired_ratio, ratios, PairedRatio};
use modelbench::measure::timing::TrialLoop;
use modelbench::models::loading::open_with;
use modelbench::output::compare::parse_threshold;
use modelbench::output::report::reports_root;
use modelbench::workloads::ops::Phase;

/// The options of `compare --paired`.
#[derive(clap::Args, Debug, Clone)]
pub struct PairedOpts {
    /// Paired A/B: BASE and NEW are commits/branches (built once each in a worktree under
    /// target/paired/) or paths to modelbench executables; both run as workers, alternating
    /// trials ABBA in the same minutes.
    #[arg(long)]
    pub paired: bool,
    /// With --paired: the model (one).
    #[arg(long = "paired-model", default_value = "fixture:llama")]
    pub model: String,
    /// With --paired: the suite tier (quick: short and medium) or one scenario name.
    #[arg(long = "paired-suite", default_value = modelbench::config::knobs::default_of("MODELBENCH_TIER"))]
    pub suite: String,
    /// With --paired: pairs per scenario (60: a 5% decode slowdown flagged in 5 of 5 tries
    /// here, 30: in 4 of 5; README).
    #[arg(long, default_value_t = 60)]
    pub pairs: usize,
    /// With --paired: the pairs are split into this many blocks, each with freshly started
    /// workers (alternating which starts first), so a per-process offset is not a bias.
    #[arg(long, default_value_t = 12)]
    pub blocks: usize,
    /// With --paired: MODELBENCH_INJECT_SLOWDOWN for NEW's worker only (calibration, e.g.
    /// decode:5%).
    #[arg(long)]
    pub inject: Option<String>,
    /// With --paired: build BASE (a commit) against this Candle instead of its Cargo.lock's:
    /// a crates.io version (0.10.2) or the folder of a Candle checkout or of a copied crate
    /// (candle-core, candle-nn, candle-transformers; README "Benchmarking a Candle change").
    #[arg(long = "base-candle", value_name = "VERSION|PATH")]
    pub base_candle: Option<String>,
    /// With --paired: build NEW (a commit) against this Candle (as --base-candle).
    #[arg(long = "new-candle", value_name = "VERSION|PATH")]
    pub new_candle: Option<String>,
}

impl PairedOpts {
    /// The options `bisect --paired` and `continuous` use: `model` on `suite`, the default
    /// pairs and blocks, nothing injected.
    pub fn for_model(model: &str, suite: &str) -> PairedOpts {
        PairedOpts {
            paired: true,
            model: model.to_string(),
            suite: suite.to_string(),
            pairs: 60,
            blocks: 12,
            inject: None,
            base_candle: None,
            new_candle: None,
        }
    }
}

/// `modelbench worker`: what `compare --paired` starts. Loads the model, warms each scenario
/// up once, then answers each stdin line `run <scenario>` with one JSON line of that trial's
/// seconds; exits at end of input.
#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = modelbench::config::knobs::default_of("MODELBENCH_TIER"))]
    pub suite: String,
    #[arg(long, default_value = modelbench::config::knobs::default_of("MODELBENCH_SEED"))]
    pub seed: u64,
}

/// A tier's scenarios, or one scenario by name (what `bisect --paired` asks for).
fn scenarios(suite: &str) -> anyhow::Result<Vec<Scenario>> {
    if let Some(t) = Tier::parse(suite) {
        return Ok(t.scenarios());
    }
    Scenario::by_name(suite).map(|s| vec![s]).map_err(|_| {
        anyhow::anyhow!(
            "--paired-suite {suite:?}: neither a tier ({}) nor a scenario name",
            Tier::ALLOWED
        )
    })
}

pub fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let scen = scenarios(&a.suite)?;
    let (device, dtype) = crate::args::device_and_dtype("cpu", None)?;
    let plan = Plan {
        models: parse_models(&a.model, "--model")?,
        tier: Tier::parse(&a.suite),
        scenarios: scen.clone(),
        device,
        dtype,
        seed: a.seed,
        min_measure: std::time::Duration::ZERO,
        label: None,
        attention: modelbench::models::attention::Attention::default(),
    };
    let (label, r) = plan.models.first().cloned().context("no model")?;
    let res = prepare(&label, &r, &plan.scenarios)?;
    let dev = plan.device.open_for("--device")?;
    let mut loaded = open_with(
        res,
        &dev,
        plan.dtype,
        Some(plan.context_cap()),
        plan.attention,
    )?;
    let mut loops: Vec<TrialLoop<modelbench::engine::generate::Trace>> =
        scen.iter().map(|_| TrialLoop::new()).collect();
    // Warm-up: one untimed trial of each shape.
    for (i, s) in scen.iter().enumerate() {
        let mut w = plan.generation(&mut loaded, s, None);
        loops[i].call(1, &mut |t| {
            use modelbench::workloads::Workload;
            w.iterate(t)
        });
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let name = line.strip_prefix("run ").unwrap_or("").trim();
        let i = scen
            .iter()
            .position(|s| s.name == name)
            .with_context(|| format!("worker: unknown request `{line}`"))?;
        let mut w = plan.generation(&mut loaded, &scen[i], None);
        loops[i].call(1, &mut |t| {
            use modelbench::workloads::Workload;
            w.iterate(t)
        });
        let tr = loops[i]
            .last_outs()
            .first()
            .context("worker: the trial failed")?;
        let e2e = tr.e2e().as_secs_f64();
        let ttft = tr.ttft().as_secs_f64();
        let tpot = tr.tpot().map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
        writeln!(
            out,
            "{}",
            serde_json::json!({"e2e": e2e, "prefill": ttft, "decode": tpot})
        )?;
        out.flush()?;
    }
    Ok(())
}

struct Worker {
    side: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    err_path: PathBuf,
}

impl Worker {
    fn start(
        side: &'static str,
        exe: &Path,
        o: &PairedOpts,
        inject: Option<&str>,
        scratch: &Path,
    ) -> anyhow::Result<Worker> {
        let err_path = scratch.join(format!("worker-{side}.stderr"));
        let err = std::fs::File::create(&err_path)?;
        let mut c = Command::new(exe);
        c.args(["worker", "--model", &o.model, "--suite", &o.suite])
            .env_remove("MODELBENCH_INJECT_SLOWDOWN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err);
        if let Some(i) = inject {
            c.env("MODELBENCH_INJECT_SLOWDOWN", i);
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("{side}: cannot start {}", exe.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut w = Worker {
            side,
            child,
            stdin,
            stdout,
            err_path,
        };
        let l = w.line()?;
        anyhow::ensure!(l == "ready", "{side}: worker said `{l}` instead of ready");
        Ok(w)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        let n = self.stdout.read_line(&mut s)?;
        if n == 0 {
            let err = std::fs::read_to_string(&self.err_path).unwrap_or_default();
            anyhow::bail!(
                "{} worker exited: {}",
                self.side,
                err.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message")
            );
        }
        Ok(s.trim().to_string())
    }

    fn trial(&mut self, scenario: &str) -> anyhow::Result<[f64; 3]> {
        writeln!(self.stdin, "run {scenario}")?;
        self.stdin.flush()?;
        let l = self.line()?;
        let v: serde_json::Value =
            serde_json::from_str(&l).with_context(|| format!("{}: bad reply `{l}`", self.side))?;
        let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        Ok([g("e2e"), g("prefill"), g("decode")])
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a side names: an executable file, or a commit (resolved once, before anything is
/// built, so `HEAD HEAD` stays one commit even when HEAD moves during the build).
pub enum Side {
    Exe(PathBuf),
    Commit { name: String, commit: String },
}

/// Resolves a side: a path to a file as is, else a commit or branch.
pub fn resolve(r: &Path, side: &str) -> anyhow::Result<Side> {
    if r.is_file() {
        return Ok(Side::Exe(r.to_path_buf()));
    }
    let name = r.display().to_string();
    let commit = super::compare::rev_parse(&name).ok_or_else(|| {
        anyhow::anyhow!("{side} `{name}`: not an executable, and `git rev-parse` knows no such commit or branch here")
    })?;
    Ok(Side::Commit { name, commit })
}

/// An executable for a side: a path to a file as is, else a commit/branch built once.
pub fn executable(r: &Path, side: &str) -> anyhow::Result<(PathBuf, String)> {
    build_side(resolve(r, side)?, side)
}

/// `git worktree add --detach --force WT COMMIT`.
fn add_worktree(wt: &Path, commit: &str) -> anyhow::Result<()> {
    let st = Command::new("git")
        .args(["worktree", "add", "--detach", "--force"])
        .arg(wt)
        .arg(commit)
        .status()
        .context("git")?;
    anyhow::ensure!(
        st.success(),
        "git worktree add {} {commit} failed",
        wt.display()
    );
    Ok(())
}

/// The executable of a resolved side (a commit is built once, then kept).
pub fn build_side(s: Side, side: &str) -> anyhow::Result<(PathBuf, String)> {
    let (name, commit) = match s {
        Side::Exe(p) => {
            let n = p.display().to_string();
            return Ok((p, n));
        }
        Side::Commit { name, commit } => (name, commit),
    };
    let root = modelbench::util::fsio::target_dir().join("paired");
    let bin = root.join("bin").join(&commit).join("modelbench");
    if bin.is_file() {
        return Ok((bin, format!("{name} ({})", &commit[..10])));
    }
    let wt = root.join(&commit);
    if !wt.join("Cargo.toml").is_file() {
        add_worktree(&wt, &commit)?;
    }
    eprintln!(
        "building {name} ({}) in {} ...",
        &commit[..10],
        wt.display()
    );
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "modelbench"])
        .current_dir(&wt)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .status()
        .context("cannot start cargo")?;
    anyhow::ensure!(
        st.success(),
        "{side} `{name}`: cargo build --release failed"
    );
    std::fs::create_dir_all(bin.parent().expect("parent"))?;
    std::fs::copy(root.join("target/release/modelbench"), &bin)?;
    Ok((bin, format!("{name} ({})", &commit[..10])))
}

/// A `--base-candle` / `--new-candle` value resolved (its folder read, its git state or
/// content hashed), or None when the flag is absent.
fn candle_source(spec: Option<&str>, flag: &str) -> anyhow::Result<Option<CandleSource>> {
    let Some(s) = spec else { return Ok(None) };
    let src = candle_source::parse_spec(s)
        .and_then(|p| candle_source::resolve(&p))
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    Ok(Some(src))
}

/// A side's executable: as [`build_side`], or, with a Candle source, the commit built
/// against that Candle.
fn build_side_with(
    s: Side,
    side: &str,
    candle: Option<&CandleSource>,
) -> anyhow::Result<(PathBuf, String)> {
    match (s, candle) {
        (s, None) => build_side(s, side),
        (Side::Exe(p), Some(_)) => anyhow::bail!(
            "{side} `{}` is an executable; --{}-candle needs {side} to be a commit or branch of this repository (it builds that commit against the Candle given)",
            p.display(),
            side.to_ascii_lowercase()
        ),
        (Side::Commit { name, commit }, Some(c)) => build_candle_side(&name, &commit, c, side),
    }
}

/// Builds `commit` of the suite against the Candle `src` (issue 48): a git worktree of the
/// commit per Candle source (target/paired/candle/<key>/), its Cargo.toml's candle
/// requirement set to `=VERSION` where the source needs it, cargo's `[patch.crates-io]` for a
/// path given with `--config`, all sides sharing one target dir (target/paired/target) so
/// cargo's own fingerprints rebuild only what the Candle source changes. Prints what cargo
/// compiled and how long it took; a failed build is one line naming the Candle source and
/// the first missing item.
fn build_candle_side(
    name: &str,
    commit: &str,
    src: &CandleSource,
    side: &str,
) -> anyhow::Result<(PathBuf, String)> {
    let root = modelbench::util::fsio::target_dir().join("paired");
    let wt = root.join("candle").join(&src.key);
    // Only a worktree at another commit is checked out: a checkout, even of the same commit,
    // writes the worktree's HEAD and reflog, which build.rs watches, and cargo would then
    // rebuild the suite on every run.
    let at = Command::new("git")
        .arg("-C")
        .arg(&wt)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let exists = wt.join("Cargo.toml").is_file();
    if exists && at.as_deref() != Some(commit) {
        let st = Command::new("git")
            .arg("-C")
            .arg(&wt)
            .args(["checkout", "--quiet", "--detach", "--force", commit])
            .status()
            .context("git")?;
        anyhow::ensure!(
            st.success(),
            "git -C {} checkout {commit} failed",
            wt.display()
        );
    } else if !exists {
        std::fs::create_dir_all(wt.parent().expect("parent"))?;
        add_worktree(&wt, commit)?;
    }
    let manifest = wt.join("Cargo.toml");
    // The commit's own manifest, then the requirement this source needs; written only when
    // it differs from what is there (cargo and build.rs watch its mtime).
    let committed = Command::new("git")
        .arg("-C")
        .arg(&wt)
        .args(["show", &format!("{commit}:Cargo.toml")])
        .output()
        .context("git show")?;
    anyhow::ensure!(
        committed.status.success(),
        "git show {commit}:Cargo.toml failed"
    );
    let text = String::from_utf8_lossy(&committed.stdout).to_string();
    let (want, req_note) = match candle_source::manifest_with_requirement(&text, src) {
        Some(m) => (
            m,
            format!(", Cargo.toml's candle requirement set to ={}", src.version),
        ),
        None => (text, String::new()),
    };
    if std::fs::read_to_string(&manifest).ok().as_deref() != Some(want.as_str()) {
        std::fs::write(&manifest, &want)?;
    }
    let top = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("."));
    eprintln!(
        "building {name} ({}) against Candle {} in {}{req_note} ...",
        &commit[..10],
        src.label,
        wt.display()
    );
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args([
        "build",
        "--release",
        "--bin",
        "modelbench",
        "--manifest-path",
    ])
    .arg(&manifest);
    for p in candle_source::patch_args(src) {
        c.arg("--config").arg(p);
    }
    // From the repository's top: cargo reads .cargo/config.toml once (a cwd inside the
    // worktree, itself under the repository, would join both files' rustflags).
    c.current_dir(&top)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env("MODELBENCH_CANDLE_SOURCE", &src.label)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = std::time::Instant::now();
    let mut child = c.spawn().context("cannot start cargo")?;
    let mut log = String::new();
    let mut compiled = Vec::new();
    if let Some(err) = child.stderr.take() {
        for l in BufReader::new(err).lines() {
            let l = l?;
            if let Some(what) = l.trim_start().strip_prefix("Compiling ") {
                eprintln!("  {side}: compiling {what}");
                compiled.push(what.split(" (").next().unwrap_or(what).to_string());
            }
            log.push_str(&l);
            log.push('\n');
        }
    }
    let st = child.wait()?;
    let secs = t0.elapsed().as_secs_f64();
    if !st.success() {
        let _ = std::fs::write(root.join(format!("candle-build-{}.log", src.key)), &log);
        anyhow::bail!(
            "{side}: {}",
            candle_source::first_build_error(&log, &src.label)
        );
    }
    println!(
        "{side}: {name} ({}) against Candle {}: {}",
        &commit[..10],
        src.label,
        rebuilt_line(&compiled, secs)
    );
    let bin = root
        .join("bin")
        .join(format!("candle-{}-{}", src.key, &commit[..12]))
        .join("modelbench");
    std::fs::create_dir_all(bin.parent().expect("parent"))?;
    // Copied beside it, then renamed over it: the old file may be running (another
    // comparison's worker), and writing into a running executable fails (ETXTBSY).
    let tmp = bin.with_extension(format!("tmp{}", std::process::id()));
    std::fs::copy(root.join("target/release/modelbench"), &tmp)?;
    std::fs::rename(&tmp, &bin)?;
    Ok((
        bin,
        format!("{name} ({}) + Candle {}", &commit[..10], src.label),
    ))
}

/// What a side's cargo build did, in words: the crates it compiled and the time.
pub fn rebuilt_line(compiled: &[String], secs: f64) -> String {
    if compiled.is_empty() {
        format!("nothing rebuilt (cargo's fingerprints: up to date), {secs:.1} s")
    } else {
        format!(
            "cargo rebuilt {} crate(s) in {secs:.0} s: {}",
            compiled.len(),
            compiled.join(", ")
        )
    }
}

/// The paired gate's default threshold: a per-pair median ratio whose whole 95% interval lies
/// beyond 2% (measured A/A intervals and the 5% decode calibration are in README).
pub const DEFAULT_THRESHOLD: &str = "2%";

const METRICS: [&str; 3] = ["e2e", "prefill", "decode"];

pub fn paired_cmd(
    base: &Path,
    new: &Path,
    threshold: &str,
    o: &PairedOpts,
) -> anyhow::Result<ExitCode> {
    let t = parse_threshold(threshold).map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    check(o)?;
    // The Candle sources first (a bad one fails before anything is built).
    let ca = candle_source(o.base_candle.as_deref(), "--base-candle")?;
    let cb = candle_source(o.new_candle.as_deref(), "--new-candle")?;
    let (sa, sb) = (resolve(base, "BASE")?, resolve(new, "NEW")?);
    let (ea, na) = build_side_with(sa, "BASE", ca.as_ref())?;
    let (eb, nb) = build_side_with(sb, "NEW", cb.as_ref())?;
    let out = run_paired((&ea, &na), (&eb, &nb), t, o)?;
    Ok(if out.regressions > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The options' own checks (before anything is built or started).
pub fn check(o: &PairedOpts) -> anyhow::Result<()> {
    anyhow::ensure!(
        o.pairs >= modelbench::measure::paired::MIN_PAIRS,
        "--pairs {}: at least {} pairs are needed for an interval",
        o.pairs,
        modelbench::measure::paired::MIN_PAIRS
    );
    if let Some(i) = &o.inject {
        modelbench::measure::inject::parse(i).map_err(|e| anyhow::anyhow!("--inject: {e}"))?;
    }
    scenarios(&o.suite)?;
    Ok(())
}

/// What one paired comparison found.
pub struct PairedOutcome {
    /// Metrics (scenario x e2e/prefill/decode) flagged as regressions.
    pub regressions: usize,
    /// The table as printed (also saved as paired.md beside paired.json).
    pub table: String,
    /// (scenario, metric, flagged as a regression) per row.
    pub rows: Vec<(String, String, bool)>,
}

/// Runs the paired comparison of executable A (base) against B (new), prints the table and
/// saves paired.json / paired.md in a new folder under the reports root.
pub fn run_paired(
    (ea, na): (&Path, &str),
    (eb, nb): (&Path, &str),
    t: f64,
    o: &PairedOpts,
) -> anyhow::Result<PairedOutcome> {
    let scen = scenarios(&o.suite)?;
    let stamp = modelbench::util::time::stamp();
    let scratch =
        std::env::temp_dir().join(format!("modelbench-paired-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    println!(
        "A (base): {na}\nB (new):  {nb}{}",
        o.inject
            .as_deref()
            .map(|i| format!("\ninjected slowdown in B only (calibration): {i}"))
            .unwrap_or_default()
    );
    let t0 = std::time::Instant::now();
    // Two processes of one binary differ by a few percent that stays with the process
    // (measured: B 6% slower than A in every pair of an A/A run, both scenarios): memory
    // layout and placement are drawn once per process. So the pairs are split into blocks,
    // each with freshly started workers, started in alternating order; the per-process
    // offset then varies from block to block and widens the interval instead of biasing it.
    let blocks = o.blocks.clamp(1, o.pairs);
    let mut a: Vec<Vec<[f64; 3]>> = vec![Vec::new(); scen.len()];
    let mut b: Vec<Vec<[f64; 3]>> = vec![Vec::new(); scen.len()];
    let mut i = 0;
    for blk in 0..blocks {
        let n = o.pairs / blocks + usize::from(blk < o.pairs % blocks);
        let (mut wa, mut wb) = if blk % 2 == 0 {
            let wa = Worker::start("A", ea, o, None, &scratch)?;
            (
                wa,
                Worker::start("B", eb, o, o.inject.as_deref(), &scratch)?,
            )
        } else {
            let wb = Worker::start("B", eb, o, o.inject.as_deref(), &scratch)?;
            (Worker::start("A", ea, o, None, &scratch)?, wb)
        };
        for _ in 0..n {
            for (k, s) in scen.iter().enumerate() {
                if a_first(i) {
                    a[k].push(wa.trial(&s.name)?);
                    b[k].push(wb.trial(&s.name)?);
                } else {
                    b[k].push(wb.trial(&s.name)?);
                    a[k].push(wa.trial(&s.name)?);
                }
            }
            i += 1;
        }
    }
    let mut rows = Vec::new();
    for (k, s) in scen.iter().enumerate() {
        let (a, b) = (&a[k], &b[k]);
        for (m, metric) in METRICS.iter().enumerate() {
            let xa: Vec<f64> = a.iter().map(|x| x[m]).collect();
            let xb: Vec<f64> = b.iter().map(|x| x[m]).collect();
            let p = paired_ratio(&ratios(&xa, &xb));
            rows.push((s.name.clone(), metric.to_string(), p, xa, xb));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let verdict = |p: &PairedRatio| match p.ci {
        Some((lo, _)) if lo > 1.0 + t => "Regression",
        Some((_, hi)) if hi < 1.0 - t => "Improvement",
        Some(_) => "Unchanged",
        None => "no verdict (too few pairs)",
    };
    let mut md = String::from(
        "| scenario | metric | pairs | B/A (median of per-pair ratios) | 95% CI | verdict |\n|---|---|---:|---:|---|---|\n",
    );
    let mut regressions = 0;
    let mut json = Vec::new();
    let mut flagged = Vec::new();
    for (s, m, p, xa, xb) in &rows {
        let v = verdict(p);
        regressions += usize::from(v == "Regression");
        flagged.push((s.clone(), m.clone(), v == "Regression"));
        let ci =
            p.ci.map(|(l, h)| format!("[{l:.3}, {h:.3}]"))
                .unwrap_or_else(|| "n/a".into());
        md.push_str(&format!(
            "| {s} | {m} | {} | {:.3}x | {ci} | {v} |\n",
            p.pairs, p.ratio
        ));
        json.push(
            serde_json::json!({"scenario": s, "metric": m, "pairs": p.pairs, "ratio": p.ratio,
            "ci95": p.ci.map(|(l, h)| [l, h]), "verdict": v, "a_s": xa, "b_s": xb}),
        );
    }
    md.push_str(&format!(
        "{regressions} regression(s) (threshold {:.1}%, 95% confidence; model {}, {} pairs per scenario in {} blocks of fresh workers, ABBA order, {:.0} s)\n",
        t * 100.0,
        o.model,
        o.pairs,
        blocks,
        t0.elapsed().as_secs_f64()
    ));
    print!("{md}");
    let out = reports_root().join(format!("{stamp}-paired"));
    std::fs::create_dir_all(&out)?;
    let doc = serde_json::json!({"base": na, "new": nb, "inject": o.inject, "threshold": t,
        "model": o.model, "pairs": o.pairs,
        "hardware": modelbench::measure::hardware::context().hardware.fingerprint(), "rows": json});
    modelbench::util::fsio::atomic_write(
        &out.join("paired.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    modelbench::util::fsio::atomic_write(&out.join("paired.md"), md.as_bytes())?;
    // Every flagged scenario and phase: where the time went, per op, in A and in B (issue 31).
    let mut profiles = String::new();
    for (s, m, p, _, _) in &rows {
        if verdict(p) != "Regression" {
            continue;
        }
        let sc = scen
            .iter()
            .find(|x| &x.name == s)
            .expect("a row's scenario");
        let (phase, shape) = if m == "prefill" {
            (Phase::Prefill, sc.prompt_tokens)
        } else {
            (Phase::Decode, sc.prompt_tokens + sc.new_tokens / 2)
        };
        let tag = format!("{s}-{}", phase.name());
        if profiles.contains(&format!("profile of {tag}:")) {
            continue;
        }
        let line = super::ops::profile(
            (ea, eb),
            o.inject.as_deref(),
            &o.model,
            s,
            phase,
            shape,
            &out,
            &tag,
            t,
        );
        println!("{line}");
        profiles.push_str(&line);
        profiles.push('\n');
    }
    if !profiles.is_empty() {
        modelbench::util::fsio::atomic_write(&out.join("ops-regression.md"), profiles.as_bytes())?;
    }
    println!("saved {}", out.display());
    Ok(PairedOutcome {
        regressions,
        table: md,
        rows: flagged,
    })
}
