//! `modelbench sensitivity`: the power of the `run` + `compare` gate on this machine, measured.
//!
//! Each try runs the suite as a user would (separate `modelbench run` processes, default
//! trials): a base run, an unchanged rerun, and one run per injected slowdown
//! (`MODELBENCH_INJECT_SLOWDOWN=<phase>:<pct>`, a busy-wait of that fraction of each step's
//! time inside the timed region), in a shuffled order after the base. Every run is compared
//! with the base by the compare gate (`output::compare`, the same threshold). The table gives,
//! per model and scenario, the false alarms of the unchanged reruns, how many tries flagged each
//! slowdown, and the smallest slowdown flagged in every try.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::app::Context;
use crate::judge::speed::{parse_threshold, Verdict};
use crate::output::compare::compare_runs;
use crate::output::record::Record;
use crate::output::report::{list_runs, read_run, reports_root};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::verdicts::paired::{check, run_paired, PairedOpts, DEFAULT_THRESHOLD};
use crate::Result;

#[derive(clap::Args)]
pub struct SensitivityArgs {
    /// Model reference, repeatable.
    #[arg(long = "model", default_values_t = ["fixture:llama".to_string()])]
    pub models: Vec<String>,
    /// Suite tier of each run (as `modelbench run --suite`).
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_TIER"))]
    pub suite: String,
    /// Tries: each is a base run, an unchanged rerun and one run per slowdown.
    #[arg(long, default_value_t = 5)]
    pub tries: usize,
    /// Injected slowdowns, comma-separated percentages.
    #[arg(long, default_value = "2%,5%,10%,20%,50%,100%")]
    pub slowdowns: String,
    /// Which steps the slowdown follows: prefill, decode or all.
    #[arg(long, default_value = "all")]
    pub phase: String,
    /// The compare gate's threshold (as `modelbench compare --threshold`; default 5%, with
    /// --paired 1%).
    #[arg(long)]
    pub threshold: Option<String>,
    /// Measure the paired gate instead (`compare --paired`: this executable as both workers,
    /// the slowdown injected in B only) on the first model and the suite.
    #[arg(long)]
    pub paired: bool,
    /// With --paired: pairs per comparison (as `compare --pairs`).
    #[arg(long, default_value_t = 60)]
    pub pairs: usize,
    /// Timed trials per run (as `modelbench run --trials`; its default).
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Warm-up runs per scenario (as `modelbench run --warmup`; its default).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
}

struct Tally {
    key: String,
    false_alarms: usize,
    /// Per slowdown: tries that flagged it.
    flagged: Vec<usize>,
}

pub fn sensitivity(a: &SensitivityArgs) -> Result<()> {
    let threshold_s = a.threshold.clone().unwrap_or_else(|| {
        if a.paired {
            DEFAULT_THRESHOLD.to_string()
        } else {
            "5%".to_string()
        }
    });
    let threshold = parse_threshold(&threshold_s).map_err(|e| fail!("--threshold: {e}"))?;
    ensure!(a.tries >= 1, "--tries must be at least 1");
    let slowdowns = parse_slowdowns(&a.slowdowns, &a.phase)?;
    let root = reports_root();
    let stamp = crate::util::time::stamp();
    let scratch = crate::util::fsio::target_dir().join(format!("sensitivity-{stamp}"));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut tallies: Vec<Tally> = Vec::new();
    let t0 = std::time::Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5E45);
    let paired = if a.paired {
        let mut o = PairedOpts::for_model(
            a.models.first().map_or("fixture:llama", |m| m.as_str()),
            &a.suite,
        );
        o.pairs = a.pairs;
        check(&o)?;
        Some(o)
    } else {
        None
    };
    for t in 0..a.tries {
        if let Some(o) = &paired {
            paired_try(&exe, o, a, threshold, &slowdowns, &mut tallies, &mut rng, t)?;
            continue;
        }
        let base = one_run(&exe, a, &scratch, None)?;
        // The unchanged rerun and the injected runs, in a shuffled order.
        let mut order: Vec<Option<usize>> = std::iter::once(None)
            .chain((0..slowdowns.len()).map(Some))
            .collect();
        order.shuffle(&mut rng);
        for which in order {
            let spec = which.map(|i| slowdowns[i].0.as_str());
            let new = one_run(&exe, a, &scratch, spec)?;
            let c = compare_runs("base run", &base, "new run", &new, threshold, false)?;
            for r in &c.rows {
                let i = match tallies.iter().position(|x| x.key == r.id) {
                    Some(i) => i,
                    None => {
                        tallies.push(Tally {
                            key: r.id.clone(),
                            false_alarms: 0,
                            flagged: vec![0; slowdowns.len()],
                        });
                        tallies.len() - 1
                    }
                };
                let hit = r.verdict == Verdict::Regression;
                match which {
                    None => tallies[i].false_alarms += usize::from(hit),
                    Some(k) => tallies[i].flagged[k] += usize::from(hit),
                }
            }
            eprintln!(
                "try {}/{}: {} -> {} regression(s) of {}",
                t + 1,
                a.tries,
                spec.unwrap_or("unchanged rerun"),
                c.regressions(),
                c.rows.len()
            );
        }
    }
    let text = render(
        a,
        threshold,
        &slowdowns,
        &tallies,
        t0.elapsed().as_secs_f64(),
    );
    println!("{text}");
    let out = root.join(format!("{stamp}-sensitivity"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    crate::util::fsio::atomic_write(&out.join("sensitivity.md"), text.as_bytes())?;
    println!("saved {}", out.join("sensitivity.md").display());
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// One try of the paired gate: an A/A comparison and one per slowdown (injected in B only),
/// in a shuffled order; tallies per scenario and metric (only the metrics the phase slows
/// count toward power; every metric counts toward false alarms).
#[allow(clippy::too_many_arguments)]
fn paired_try(
    exe: &Path,
    o: &PairedOpts,
    a: &SensitivityArgs,
    threshold: f64,
    slowdowns: &[(String, f64)],
    tallies: &mut Vec<Tally>,
    rng: &mut rand::rngs::StdRng,
    t: usize,
) -> Result<()> {
    let mut order: Vec<Option<usize>> = std::iter::once(None)
        .chain((0..slowdowns.len()).map(Some))
        .collect();
    order.shuffle(rng);
    for which in order {
        let mut o = o.clone();
        o.inject = which.map(|i| slowdowns[i].0.clone());
        let p = run_paired((exe, "this build"), (exe, "this build"), threshold, &o)?;
        for (scenario, metric, hit) in &p.rows {
            let slowed = match a.phase.as_str() {
                "decode" => metric != "prefill",
                "prefill" => metric != "decode",
                _ => true,
            };
            if which.is_some() && !slowed {
                continue;
            }
            let key = format!("{scenario} {metric}");
            let i = match tallies.iter().position(|x| x.key == key) {
                Some(i) => i,
                None => {
                    tallies.push(Tally {
                        key,
                        false_alarms: 0,
                        flagged: vec![0; slowdowns.len()],
                    });
                    tallies.len() - 1
                }
            };
            match which {
                None => tallies[i].false_alarms += usize::from(*hit),
                Some(k) => tallies[i].flagged[k] += usize::from(*hit),
            }
        }
        eprintln!(
            "try {}/{}: paired {} -> {} regression(s)",
            t + 1,
            a.tries,
            o.inject.as_deref().unwrap_or("A/A"),
            p.regressions
        );
    }
    Ok(())
}

/// One `modelbench run` in its own process, into the scratch reports root; its records.
fn one_run(
    exe: &Path,
    a: &SensitivityArgs,
    scratch: &Path,
    inject: Option<&str>,
) -> Result<Vec<Record>> {
    let before = list_runs(scratch);
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .args(["--suite", &a.suite])
        .args(["--trials", &a.trials.to_string()])
        .args(["--warmup", &a.warmup.to_string()]);
    for m in &a.models {
        cmd.args(["--model", m]);
    }
    cmd.env("MODELBENCH_REPORTS", scratch)
        .env("MODELBENCH_DB", "off")
        .env_remove("MODELBENCH_INJECT_SLOWDOWN");
    if let Some(s) = inject {
        cmd.env("MODELBENCH_INJECT_SLOWDOWN", s);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    ensure!(
        out.status.success(),
        "modelbench run ({}) failed: {}",
        inject.unwrap_or("no injection"),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    let dir: PathBuf = list_runs(scratch)
        .into_iter()
        .find(|d| !before.contains(d))
        .ok_or_else(|| fail!("modelbench run wrote no run folder"))?;
    read_run(&dir)
}

fn render(
    a: &SensitivityArgs,
    threshold: f64,
    slowdowns: &[(String, f64)],
    tallies: &[Tally],
    secs: f64,
) -> String {
    use std::fmt::Write as _;
    let what = if a.paired {
        format!(
            "the paired gate (`modelbench compare --paired`, this executable on both sides) on `{}` ({} tries; each: an A/A comparison and one per slowdown injected in B only, {} pairs per scenario",
            crate::measure::hardware::context().hardware.fingerprint(),
            a.tries,
            a.pairs,
        )
    } else {
        format!(
            "`modelbench run` + `modelbench compare` on `{}` ({} tries; each: a base run, an unchanged rerun and one run per slowdown, {} trials + {} warm-up per scenario",
            crate::measure::hardware::context().hardware.fingerprint(),
            a.tries,
            a.trials,
            a.warmup,
        )
    };
    let mut s = format!(
        "Sensitivity of {what}; threshold {:.1}%, 95% CI; {} phase; {:.0} s)\n\n| benchmark | false alarms | {} | smallest slowdown flagged in every try (and every larger one) |\n|---|---:|{}---|\n",
        threshold * 100.0,
        a.phase,
        secs,
        slowdowns
            .iter()
            .map(|(_, f)| format!("+{}%", fmt_pct(*f)))
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(slowdowns.len())
    );
    for t in tallies {
        // The smallest slowdown flagged in every try, with every larger one also flagged in
        // every try (a miss at a larger slowdown means the smaller hit was luck).
        let smallest = smallest_flagged(slowdowns, &t.flagged, a.tries)
            .map(|f| format!("+{}%", fmt_pct(f)))
            .unwrap_or_else(|| "none of those tried".into());
        let _ = writeln!(
            s,
            "| {} | {}/{} | {} | {smallest} |",
            t.key,
            t.false_alarms,
            a.tries,
            t.flagged
                .iter()
                .map(|n| format!("{n}/{}", a.tries))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    s
}

/// `--slowdowns` (comma percentages, `%` optional) on `--phase`: each as its
/// MODELBENCH_INJECT_SLOWDOWN value and its fraction, smallest first.
pub fn parse_slowdowns(list: &str, phase: &str) -> Result<Vec<(String, f64)>> {
    let mut slowdowns: Vec<(String, f64)> = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let spec = format!(
            "{}:{}",
            phase,
            if s.ends_with('%') {
                s.to_string()
            } else {
                format!("{s}%")
            }
        );
        let inj = crate::measure::inject::parse(&spec)
            .map_err(|e| fail!("--slowdowns / --phase: {e}"))?
            .ok_or_else(|| fail!("--slowdowns: `{s}` is not a slowdown"))?;
        let frac = match inj.extra {
            crate::measure::inject::Extra::Spin(x) => x,
            crate::measure::inject::Extra::Work(_) => unreachable!("percent parsed"),
        };
        slowdowns.push((inj.to_string(), frac));
    }
    ensure!(
        !slowdowns.is_empty(),
        "--slowdowns: give at least one percentage"
    );
    slowdowns.sort_by(|x, y| x.1.total_cmp(&y.1));
    Ok(slowdowns)
}

/// The smallest slowdown flagged in all `tries`, every larger one flagged in all of them too
/// (a miss at a larger slowdown means the smaller hit was luck); None: not even the largest.
pub fn smallest_flagged(
    slowdowns: &[(String, f64)],
    flagged: &[usize],
    tries: usize,
) -> Option<f64> {
    let mut smallest = None;
    for ((_, f), n) in slowdowns.iter().zip(flagged).rev() {
        if *n != tries {
            break;
        }
        smallest = Some(*f);
    }
    smallest
}

fn fmt_pct(x: f64) -> String {
    let s = format!("{:.2}", x * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdowns_parse_with_or_without_percent_and_sort() {
        let v = parse_slowdowns("10%, 2 ,5%", "decode").unwrap();
        let pct: Vec<String> = v.iter().map(|x| fmt_pct(x.1)).collect();
        assert_eq!(pct, ["2", "5", "10"]);
        assert!(v[0].0.starts_with("decode:"), "{}", v[0].0);
        assert_eq!(
            parse_slowdowns(" , ", "all").unwrap_err().to_string(),
            "--slowdowns: give at least one percentage"
        );
        assert!(parse_slowdowns("5%", "sideways").is_err());
    }

    #[test]
    fn the_smallest_slowdown_counts_only_when_every_larger_one_is_flagged() {
        let s: Vec<(String, f64)> = [0.02, 0.05, 0.1, 0.2]
            .iter()
            .map(|f| (String::new(), *f))
            .collect();
        assert_eq!(smallest_flagged(&s, &[1, 5, 5, 5], 5), Some(0.05));
        assert_eq!(smallest_flagged(&s, &[5, 5, 4, 5], 5), Some(0.2));
        assert_eq!(smallest_flagged(&s, &[5, 5, 5, 4], 5), None);
        assert_eq!(fmt_pct(0.05), "5");
        assert_eq!(fmt_pct(0.025), "2.5");
    }
}
