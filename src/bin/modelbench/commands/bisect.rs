//! `modelbench bisect GOOD BAD --bench ID`: the first commit where one benchmark got slower.
//!
//! In the repository to bisect: measures GOOD (build, then the benchmark), then BAD (it must
//! be slower beyond the threshold, else there is nothing to find), then drives
//! `git bisect start BAD GOOD` + `git bisect run modelbench bisect-step ...`, where each step
//! builds, runs the one benchmark and applies the compare gate (the verdict of
//! `output::compare`, bootstrap CI of the median ratio) against GOOD's numbers. Prints the
//! first bad commit with its numbers, then `git bisect reset` and the original checkout are
//! restored (also on error).
//!
//! Every step's run folder is kept under target-reports/bisect-<time>/<commit>/ (the
//! commands see MODELBENCH_REPORTS pointing there, and MODELBENCH_DB=off so the scratch runs
//! stay out of the history). `{bench}` in --build/--run is replaced by the benchmark id.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use modelbench::output::compare::{compare_runs, parse_threshold, render, Comparison};
use modelbench::output::record::Record;
use modelbench::output::report::{list_runs, read_run, reports_root};

#[derive(clap::Args)]
pub struct BisectArgs {
    /// A commit (or branch) where the benchmark was fast.
    pub good: String,
    /// A later commit where it is slow.
    pub bad: String,
    /// Benchmark id (`medium/cpu-f32/fixture:llama`) or its group (`medium`).
    #[arg(long)]
    pub bench: String,
    /// Slowdown that counts as a regression, e.g. 5% or 0.05.
    #[arg(long, default_value = "5%")]
    pub threshold: String,
    /// Shell command that builds the checked-out commit (failure: the commit is skipped).
    #[arg(long, default_value = "cargo build --release --benches")]
    pub build: String,
    /// Shell command that runs the benchmark and writes a run folder under
    /// $MODELBENCH_REPORTS (failure: the commit is skipped).
    #[arg(long, default_value = "cargo bench --bench generation -- '{bench}'")]
    pub run: String,
}

/// `bisect-step`: what `git bisect run` calls for each commit.
#[derive(clap::Args)]
pub struct StepArgs {
    /// GOOD's run folder.
    #[arg(long)]
    pub good_run: PathBuf,
    /// Where this bisection keeps its run folders.
    #[arg(long)]
    pub work: PathBuf,
    #[arg(long)]
    pub bench: String,
    #[arg(long)]
    pub threshold: String,
    #[arg(long)]
    pub build: String,
    #[arg(long)]
    pub run: String,
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("git: cannot start it: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit a ref names.
fn commit_of(r: &str, what: &str) -> anyhow::Result<String> {
    git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{r}^{{commit}}"),
    ])
    .map_err(|_| anyhow::anyhow!("{what} `{r}`: not a commit or branch of this repository"))
}

/// Whether a record is the benchmark `bench` names (its id, its group, or an id prefix).
pub fn selects(r: &Record, bench: &str) -> bool {
    r.id == bench || r.scenario == bench || r.id.starts_with(&format!("{bench}/"))
}

/// The compare gate on the one benchmark: GOOD's records against a commit's.
pub fn gate(good: &[Record], new: &[Record], bench: &str, t: f64) -> anyhow::Result<Comparison> {
    let g: Vec<Record> = good.iter().filter(|r| selects(r, bench)).cloned().collect();
    let n: Vec<Record> = new.iter().filter(|r| selects(r, bench)).cloned().collect();
    anyhow::ensure!(
        !g.is_empty() && !n.is_empty(),
        "benchmark `{bench}`: not in {} run",
        if g.is_empty() {
            "GOOD's"
        } else {
            "this commit's"
        }
    );
    Ok(compare_runs("GOOD", &g, "this commit", &n, t, false)?)
}

/// Builds and runs the benchmark at the checked-out commit with run folders under `dir`;
/// returns the run folder, or the failing command.
fn measure(build: &str, run: &str, bench: &str, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (what, cmd) in [("build", build), ("run", run)] {
        let cmd = cmd.replace("{bench}", bench);
        eprintln!("bisect: {what}: {cmd}");
        let st = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("MODELBENCH_REPORTS", dir)
            .env("MODELBENCH_DB", "off")
            .status()
            .map_err(|e| format!("{what} command `{cmd}`: cannot start sh: {e}"))?;
        if !st.success() {
            return Err(format!("{what} command `{cmd}` failed ({st})"));
        }
    }
    list_runs(dir).pop().ok_or_else(|| {
        format!(
            "the run command wrote no run folder under {}",
            dir.display()
        )
    })
}

/// Puts the repository back as it was: ends the bisection, checks the original ref out.
struct Restore {
    orig: String,
    bisecting: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.bisecting {
            let _ = git(&["bisect", "reset"]);
        }
        let _ = git(&["checkout", "--quiet", &self.orig]);
    }
}

pub fn bisect(a: &BisectArgs) -> anyhow::Result<ExitCode> {
    let t = parse_threshold(&a.threshold).map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    git(&["rev-parse", "--show-toplevel"])
        .map_err(|_| anyhow::anyhow!("bisect: run it inside the git repository to bisect"))?;
    anyhow::ensure!(
        git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty(),
        "bisect: the working tree has uncommitted changes; commit or stash them first"
    );
    let good = commit_of(&a.good, "GOOD")?;
    let bad = commit_of(&a.bad, "BAD")?;
    let orig =
        git(&["symbolic-ref", "--short", "-q", "HEAD"]).or_else(|_| git(&["rev-parse", "HEAD"]))?;
    let mut restore = Restore {
        orig,
        bisecting: false,
    };
    let work = reports_root().join(format!("bisect-{}", modelbench::util::time::stamp()));
    let short = |c: &str| c[..c.len().min(10)].to_string();

    git(&["checkout", "--quiet", "--detach", &good])?;
    let good_run = measure(&a.build, &a.run, &a.bench, &work.join(short(&good)))
        .map_err(|e| anyhow::anyhow!("GOOD {}: {e}", short(&good)))?;
    let good_records = read_run(&good_run)?;
    git(&["checkout", "--quiet", "--detach", &bad])?;
    let bad_run = measure(&a.build, &a.run, &a.bench, &work.join(short(&bad)))
        .map_err(|e| anyhow::anyhow!("BAD {}: {e}", short(&bad)))?;
    let c = gate(&good_records, &read_run(&bad_run)?, &a.bench, t)?;
    if c.regressions() == 0 {
        print!("{}", render(&c));
        anyhow::bail!(
            "BAD {} is not slower than GOOD {} beyond {} on `{}` (95% confidence): nothing to bisect",
            short(&bad),
            short(&good),
            a.threshold,
            a.bench
        );
    }

    git(&["bisect", "start", &bad, &good])?;
    restore.bisecting = true;
    let exe = std::env::current_exe()?;
    let out = Command::new("git")
        .args(["bisect", "run"])
        .arg(&exe)
        .arg("bisect-step")
        .arg("--good-run")
        .arg(&good_run)
        .arg("--work")
        .arg(&work)
        .args([
            "--bench",
            a.bench.as_str(),
            "--threshold",
            a.threshold.as_str(),
        ])
        .args(["--build", a.build.as_str(), "--run", a.run.as_str()])
        .output()?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let first = log
        .lines()
        .find_map(|l| l.strip_suffix(" is the first bad commit"))
        .map(str::trim)
        .map(str::to_string);
    let Some(first) = first else {
        print!("{log}");
        anyhow::bail!("git bisect run found no first bad commit (see its output above)");
    };
    let subject = git(&["log", "-1", "--format=%s", &first])?;
    let first_run = list_runs(&work.join(short(&first))).pop();
    drop(restore);
    println!("first bad commit: {first} {subject}");
    match first_run {
        Some(dir) => {
            let c = gate(&good_records, &read_run(&dir)?, &a.bench, t)?;
            println!(
                "its numbers against GOOD {} (run folders under {}):",
                short(&good),
                work.display()
            );
            print!("{}", render(&c));
        }
        // BAD itself, measured before the bisection.
        None => print!("{}", render(&c)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One `git bisect run` step: 0 good, 1 regression, 125 skip, 128 abort.
pub fn step(a: &StepArgs) -> ExitCode {
    let inner = || -> anyhow::Result<u8> {
        let t = parse_threshold(&a.threshold).map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
        let head = git(&["rev-parse", "HEAD"])?;
        let dir = a.work.join(&head[..head.len().min(10)]);
        let run = match measure(&a.build, &a.run, &a.bench, &dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bisect: {head}: {e}; skipping this commit");
                return Ok(125);
            }
        };
        let c = gate(&read_run(&a.good_run)?, &read_run(&run)?, &a.bench, t)?;
        print!("{}", render(&c));
        Ok(if c.regressions() > 0 { 1 } else { 0 })
    };
    match inner() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(128)
        }
    }
}
