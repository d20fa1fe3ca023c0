//! The worker of a paired comparison (`modelbench worker`, what `compare --paired` starts):
//! the model loaded and warmed up once, one trial per stdin line; and the parent's handle on
//! one (start, ask for a trial, read its reply, kill it on drop).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::app::Context;
use crate::config::plans::{parse_models, Common, Plan};
use crate::engine::scenario::{prepare, Scenario, Tier};
use crate::measure::memory as mem;
use crate::models::sources::loading::open_with;
use crate::workloads::TrialLoop;
use crate::{Error, Result};

/// `modelbench worker`: what `compare --paired` starts. Loads the model, warms each scenario
/// up once, then answers each stdin line `run <scenario>` with one JSON line of that trial's
/// seconds; exits at end of input.
#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_TIER"))]
    pub suite: String,
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_SEED"))]
    pub seed: u64,
}

/// A tier's scenarios, or one scenario by name (what `bisect --paired` asks for).
pub fn scenarios(suite: &str) -> Result<Vec<Scenario>> {
    if let Some(t) = Tier::parse(suite) {
        return Ok(t.scenarios());
    }
    Scenario::by_name(suite).map(|s| vec![s]).map_err(|_| {
        fail!(
            "--paired-suite {suite:?}: neither a tier ({}) nor a scenario name",
            Tier::ALLOWED
        )
    })
}

pub fn worker(a: WorkerArgs) -> Result<()> {
    let scen = scenarios(&a.suite)?;
    let (device, dtype) = crate::app::args::device_and_dtype("cpu", None)?;
    let plan = Plan {
        models: parse_models(&a.model, "--model")?,
        tier: Tier::parse(&a.suite),
        scenarios: scen.clone(),
        common: Common::cli(
            device,
            dtype,
            a.seed,
            None,
            crate::models::attention::Attention::default(),
        ),
    };
    let (label, r) = plan.models.first().cloned().context("no model")?;
    let res = prepare(&label, &r, &plan.scenarios)?;
    let dev = plan.common.device.open_for("--device")?;
    let mut loaded = open_with(
        res,
        &dev,
        plan.common.dtype,
        Some(plan.context_cap()),
        plan.common.attention,
    )?;
    let mut loops: Vec<TrialLoop<crate::engine::generate::Trace>> =
        scen.iter().map(|_| TrialLoop::new()).collect();
    // Warm-up: one untimed trial of each shape.
    for (i, s) in scen.iter().enumerate() {
        let mut w = plan.generation(&mut loaded, s, None);
        loops[i].call(1, &mut |t| {
            use crate::workloads::Workload;
            w.iterate(t)
        });
    }
    // Where the worker was asked for huge pages (its restart with the glibc tunable), every
    // worker gets them now, not by the draw of its page faults (measure::memory).
    if std::env::var("GLIBC_TUNABLES")
        .ok()
        .as_deref()
        .is_some_and(crate::measure::memory::tunables_ask_huge_pages)
    {
        crate::measure::memory::collapse_huge_pages();
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| fail!("worker: {e}");
    // `ready probe`: this worker also answers `probe` (issue 59's output probe, taken when the
    // parent asks: once per side of a paired comparison, never inside a timed trial).
    // `lockstep`: it also runs a trial one token at a time at the parent's word (issue 64).
    writeln!(out, "ready probe lockstep").map_err(io)?;
    out.flush().map_err(io)?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    while let Some(line) = lines.next() {
        let line = line.map_err(io)?;
        if line.trim() == "probe" {
            let probe =
                crate::engine::probe::take(loaded.model.as_mut(), loaded.tokenizer.as_ref())?;
            let probe = crate::engine::probe::with_threads(
                probe,
                &loaded,
                &crate::engine::probe::Opening::of(
                    plan.common.device,
                    plan.common.dtype,
                    plan.common.attention,
                ),
            );
            writeln!(
                out,
                "probe {}",
                serde_json::to_string(&probe).map_err(|e| fail!("worker: {e}"))?
            )
            .map_err(io)?;
            out.flush().map_err(io)?;
            continue;
        }
        let (name, lockstep) = match line.strip_prefix("lockstep ") {
            Some(n) => (n.trim(), true),
            None => (line.strip_prefix("run ").unwrap_or("").trim(), false),
        };
        let i = scen
            .iter()
            .position(|s| s.name == name)
            .with_context(|| format!("worker: unknown request `{line}`"))?;
        let mut w = plan.generation(&mut loaded, &scen[i], None);
        if lockstep {
            // After each token, with the clock stopped: say `tok` and wait for `go` (the
            // other side's step runs meanwhile). Anything else ends the trial.
            let (o, l) = (&mut out, &mut lines);
            w.step_gate = Some(Box::new(move |_| {
                writeln!(o, "tok").is_ok()
                    && o.flush().is_ok()
                    && matches!(l.next(), Some(Ok(g)) if g.trim() == "go")
            }));
        }
        loops[i].call(1, &mut |t| {
            use crate::workloads::Workload;
            w.iterate(t)
        });
        drop(w);
        let tr = loops[i]
            .last_outs()
            .first()
            .context("worker: the trial failed")?;
        let e2e = tr.e2e().as_secs_f64();
        let ttft = tr.ttft().as_secs_f64();
        let tpot = tr.tpot().map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
        let ids = crate::measure::outputs::hash_ids(&tr.tokens);
        // Every decode step's seconds (the gaps between tokens), for estimators finer than
        // the trial's mean (issue 64).
        let steps: Vec<f64> = tr.itl().iter().map(|d| d.as_secs_f64()).collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"e2e": e2e, "prefill": ttft, "decode": tpot, "ids": ids, "steps": steps})
        )
        .map_err(io)?;
        out.flush().map_err(io)?;
    }
    Ok(())
}

/// The parent's handle on one worker process (killed when dropped).
pub struct Worker {
    side: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    err_path: PathBuf,
    /// Whether the worker answers `probe` (builds from before the output verdict do not).
    pub can_probe: bool,
    /// Whether the worker runs `lockstep` trials (builds from before issue 64 do not).
    pub can_lockstep: bool,
}

impl Worker {
    /// Starts two workers at once, `first` spawned first: each is a side, an executable and
    /// its environment (`inject`: its slowdown; `numeric`: its `MODELBENCH_INJECT_NUMERIC`),
    /// on `(model, suite)`, and waits for both `ready` lines (`ready probe lockstep` where the
    /// build can take the output probe and run lockstep); stderr goes to `scratch`. Their
    /// loads and warm-ups overlap, and nothing is timed before both are ready. Measured
    /// (issue 64, 10 blocks of one pair on fixture:llama): 4.1 s a block against 5.1 s
    /// started one after the other, so a second look fits in the default 5 minutes.
    /// Returns [first, second].
    pub fn start_two(
        first: (&'static str, &Path, (Option<&str>, Option<&str>)),
        second: (&'static str, &Path, (Option<&str>, Option<&str>)),
        target: (&str, &str),
        huge_pages: bool,
        scratch: &Path,
    ) -> Result<[Worker; 2]> {
        let mut x = Worker::spawn(first.0, first.1, target, first.2, huge_pages, scratch)?;
        let mut y = Worker::spawn(second.0, second.1, target, second.2, huge_pages, scratch)?;
        x.ready()?;
        y.ready()?;
        Ok([x, y])
    }

    /// One worker's process, not yet ready.
    fn spawn(
        side: &'static str,
        exe: &Path,
        (model, suite): (&str, &str),
        (inject, numeric): (Option<&str>, Option<&str>),
        huge_pages: bool,
        scratch: &Path,
    ) -> Result<Worker> {
        let err_path = scratch.join(format!("worker-{side}.stderr"));
        let err = std::fs::File::create(&err_path).map_err(Error::io(&err_path))?;
        let mut c = Command::new(exe);
        c.args(["worker", "--model", model, "--suite", suite])
            .env_remove("MODELBENCH_INJECT_SLOWDOWN")
            .env_remove("MODELBENCH_INJECT_NUMERIC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err);
        if let Some(i) = inject {
            c.env("MODELBENCH_INJECT_SLOWDOWN", i);
        }
        if let Some(n) = numeric {
            c.env("MODELBENCH_INJECT_NUMERIC", n);
        }
        // Both sides alike (measure::memory::HUGE_PAGES_TUNABLE): this process may hold the
        // tunable already (it restarted itself with it), so "off" removes it and tells the
        // worker not to restart itself with it.
        let tunables = std::env::var("GLIBC_TUNABLES").ok();
        if huge_pages {
            c.env_remove(mem::HUGE_PAGES_KNOB);
            if !tunables
                .as_deref()
                .is_some_and(mem::tunables_ask_huge_pages)
            {
                c.env(
                    "GLIBC_TUNABLES",
                    mem::tunables_with_huge_pages(tunables.as_deref()),
                );
            }
        } else {
            c.env(mem::HUGE_PAGES_KNOB, "0");
            match tunables.as_deref().map(mem::tunables_without_huge_pages) {
                Some(Some(t)) => c.env("GLIBC_TUNABLES", t),
                _ => c.env_remove("GLIBC_TUNABLES"),
            };
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("{side}: cannot start {}", exe.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        Ok(Worker {
            side,
            child,
            stdin,
            stdout,
            err_path,
            can_probe: false,
            can_lockstep: false,
        })
    }

    /// Waits for the spawned worker's `ready` line and reads what its build can do.
    fn ready(&mut self) -> Result<()> {
        let l = self.line()?;
        let mut words = l.split_whitespace();
        ensure!(
            words.next() == Some("ready"),
            "{}: worker said `{l}` instead of ready",
            self.side
        );
        for word in words {
            self.can_probe |= word == "probe";
            self.can_lockstep |= word == "lockstep";
        }
        Ok(())
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker's output probe; None from a build that cannot take one.
    pub fn probe(&mut self) -> Result<Option<crate::measure::outputs::Probe>> {
        if !self.can_probe {
            return Ok(None);
        }
        let side = self.side;
        let io = |e: std::io::Error| fail!("{side} worker: {e}");
        writeln!(self.stdin, "probe").map_err(io)?;
        self.stdin.flush().map_err(io)?;
        let l = self.line()?;
        let p = l
            .strip_prefix("probe ")
            .with_context(|| format!("{side}: worker answered `{l}` to probe"))?;
        Ok(Some(serde_json::from_str(p).with_context(|| {
            format!("{side}: the worker's probe line is not a probe")
        })?))
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        let n = self
            .stdout
            .read_line(&mut s)
            .map_err(|e| fail!("{} worker: {e}", self.side))?;
        if n == 0 {
            let err = std::fs::read_to_string(&self.err_path).unwrap_or_default();
            bail!(
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

    /// One trial of `scenario`: seconds of end-to-end, prefill and decode (per token), and
    /// the hash of its generated ids (None: a build from before the output verdict).
    pub fn trial(&mut self, scenario: &str) -> Result<([f64; 3], Option<String>)> {
        self.send(&format!("run {scenario}"))?;
        let l = self.line()?;
        self.parse_trial(&l)
    }

    fn send(&mut self, what: &str) -> Result<()> {
        let side = self.side;
        let io = |e: std::io::Error| fail!("{side} worker: {e}");
        writeln!(self.stdin, "{what}").map_err(io)?;
        self.stdin.flush().map_err(io)
    }

    fn parse_trial(&self, l: &str) -> Result<([f64; 3], Option<String>)> {
        let v: serde_json::Value =
            serde_json::from_str(l).with_context(|| format!("{}: bad reply `{l}`", self.side))?;
        let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        Ok((
            [g("e2e"), g("prefill"), g("decode")],
            v["ids"].as_str().map(String::from),
        ))
    }
}

/// One untimed prefill of `scenario` on each worker, `a` first when `a_first` (a lockstep
/// trial ended after its first token; its reply is dropped). Workers started together finish
/// their warm-ups in an order set by their speed, so the slower side, last to run, would start
/// the timed pairs with the warmer caches: measured, a decode slowdown injected in B read as a
/// 7% faster short prefill in B (0.933x [0.906, 0.965], "Improvement"). Run in an order that
/// alternates by block, this puts the last-to-run advantage on A and B alike.
pub fn balance(a: &mut Worker, b: &mut Worker, scenario: &str, a_first: bool) -> Result<()> {
    let mut w = [a, b];
    if !a_first {
        w.swap(0, 1);
    }
    for x in w {
        x.send(&format!("lockstep {scenario}"))?;
        let l = x.line()?;
        ensure!(l == "tok", "{}: worker answered `{l}` to lockstep", x.side);
        x.send("stop")?;
        let l = x.line()?;
        x.parse_trial(&l)?;
    }
    Ok(())
}

/// One trial of `scenario` on each worker in lockstep (issue 64): the two prefills one after
/// the other, then each decode step of one side followed by the same step of the other, the
/// order alternating ABBA by step (`first`: the side that starts), so the two trials see the
/// machine of the same milliseconds, not of seconds apart. Each worker's clock stops while it
/// waits. Returns each side's trial as [`Worker::trial`] does, [A, B].
pub fn lockstep_pair(
    a: &mut Worker,
    b: &mut Worker,
    scenario: &str,
    a_starts: bool,
) -> Result<[([f64; 3], Option<String>); 2]> {
    let w = [a, b];
    let mut res: [Option<([f64; 3], Option<String>)>; 2] = [None, None];
    let first = usize::from(!a_starts);
    for side in [first, 1 - first] {
        w[side].send(&format!("lockstep {scenario}"))?;
        let l = w[side].line()?;
        ensure!(
            l == "tok",
            "{}: worker answered `{l}` to lockstep",
            w[side].side
        );
    }
    let mut step = 0usize;
    while res.iter().any(Option::is_none) {
        let lead = if crate::measure::paired::a_first(step) {
            first
        } else {
            1 - first
        };
        for side in [lead, 1 - lead] {
            if res[side].is_some() {
                continue;
            }
            w[side].send("go")?;
            let l = w[side].line()?;
            if l != "tok" {
                res[side] = Some(w[side].parse_trial(&l)?);
            }
        }
        step += 1;
    }
    let [ra, rb] = res;
    Ok([ra.context("A: no trial")?, rb.context("B: no trial")?])
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
