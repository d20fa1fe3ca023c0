//! What the machine does that the suite cannot control, checked before measuring (the idea of
//! pyperf's `system show` / `system check`): other load, hypervisor steal time, CPU frequency
//! scaling, transparent huge pages, NUMA balancing and memory tiering, address-space
//! randomisation. Each check reads Linux's /proc and /sys; one that cannot be read says so and
//! is not a warning. The benches print the warnings; `modelbench calibrate` prints all.

use std::time::Duration;

/// One check: `ok` false is a warning the user should read before trusting a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub what: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// (busy, steal, total) jiffies of the aggregate `cpu` line of /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64, u64)> {
    let stat = read("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total - idle - v[7], v[7], total))
}

/// Busy and steal shares of all CPUs over `window` (None where /proc/stat is unreadable).
pub fn cpu_shares(window: Duration) -> Option<(f64, f64)> {
    let (b0, s0, t0) = cpu_jiffies()?;
    std::thread::sleep(window);
    let (b1, s1, t1) = cpu_jiffies()?;
    let dt = (t1 - t0).max(1) as f64;
    Some(((b1 - b0) as f64 / dt, (s1 - s0) as f64 / dt))
}

/// Every check, taking about half a second (the CPU sample).
pub fn check() -> Vec<Check> {
    let mut out = Vec::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match cpu_shares(Duration::from_millis(500)) {
        Some((busy, steal)) => {
            out.push(Check {
                what: "other load",
                ok: busy < 0.10,
                detail: format!(
                    "{:.0}% of the {cores} CPUs busy before the benchmark started{}",
                    busy * 100.0,
                    if busy < 0.10 {
                        String::new()
                    } else {
                        " (another process competes for the cores: timings and verdicts suffer)"
                            .into()
                    }
                ),
            });
            out.push(Check {
                what: "steal time",
                ok: steal < 0.02,
                detail: format!(
                    "{:.1}% of CPU time taken by the hypervisor{}",
                    steal * 100.0,
                    if steal < 0.02 {
                        ""
                    } else {
                        " (a noisy neighbour on the host)"
                    }
                ),
            });
        }
        None => out.push(Check {
            what: "other load",
            ok: true,
            detail: "not available (/proc/stat unreadable)".into(),
        }),
    }
    let govs: Vec<String> = (0..cores)
        .filter_map(|c| {
            read(&format!(
                "/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"
            ))
        })
        .collect();
    out.push(if govs.is_empty() {
        Check {
            what: "frequency scaling",
            ok: true,
            detail: "no cpufreq interface (a VM: the host decides the clock, which the suite cannot see)".into(),
        }
    } else {
        let perf = govs.iter().all(|g| g == "performance");
        Check {
            what: "frequency scaling",
            ok: perf,
            detail: format!(
                "governor {}{}",
                govs[0],
                if perf {
                    ""
                } else {
                    " (not `performance`: the clock follows the load; `cpupower frequency-set -g performance`)"
                }
            ),
        }
    });
    if let Some(t) = read("/sys/kernel/mm/transparent_hugepage/enabled") {
        let mode = t
            .split_whitespace()
            .find(|w| w.starts_with('['))
            .unwrap_or(&t)
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        out.push(Check {
            what: "transparent huge pages",
            ok: mode != "always",
            detail: format!(
                "{mode}{}",
                if mode == "always" {
                    " (khugepaged compacts memory in the background: run-to-run variation)"
                } else {
                    ""
                }
            ),
        });
    }
    if let Some(n) = read("/proc/sys/kernel/numa_balancing") {
        out.push(Check {
            what: "NUMA balancing",
            ok: n == "0",
            detail: if n == "0" {
                "off".into()
            } else {
                format!("mode {n} (pages migrate between nodes or memory tiers while measuring)")
            },
        });
    }
    if let Some(d) = read("/sys/kernel/mm/numa/demotion_enabled") {
        out.push(Check {
            what: "memory tiering",
            ok: d != "true",
            detail: if d == "true" {
                "page demotion to a slower tier is on".into()
            } else {
                "demotion off".into()
            },
        });
    }
    if let Some(c) = damon() {
        out.push(c);
    }
    if let Some(a) = read("/proc/sys/kernel/randomize_va_space") {
        out.push(Check {
            what: "address-space randomisation",
            ok: true,
            detail: format!(
                "level {a} (each process lays out memory differently; paired comparisons alternate two processes for this reason)"
            ),
        });
    }
    out
}

/// DAMON (the kernel's data-access monitor) running schemes that move memory: `pageout`
/// (proactive reclaim), `migrate_cold`/`migrate_hot` (tiering), `lru_deprio`. Found on the
/// VM this suite is developed on: kdamond 0 on, physical addresses, `pageout` of regions idle
/// for 12 aggregation intervals (60 s), up to 128 MiB per second. Weights a benchmark loaded
/// and left idle (or a model between benches) can be paged out and faulted back in the middle
/// of a later measurement: one cause of run-to-run drift no benchmark setting removes.
fn damon() -> Option<Check> {
    let root = std::path::Path::new("/sys/kernel/mm/damon/admin/kdamonds");
    let n: usize = read("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds")?
        .parse()
        .ok()?;
    let mut moving = Vec::new();
    for k in 0..n {
        let kd = root.join(k.to_string());
        if read(&kd.join("state").to_string_lossy()).as_deref() != Some("on") {
            continue;
        }
        let ctxs = kd.join("contexts");
        let nc: usize = read(&ctxs.join("nr_contexts").to_string_lossy())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for c in 0..nc {
            let sch = ctxs.join(c.to_string()).join("schemes");
            let ns: usize = read(&sch.join("nr_schemes").to_string_lossy())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            for s in 0..ns {
                let d = sch.join(s.to_string());
                let action = read(&d.join("action").to_string_lossy()).unwrap_or_default();
                if matches!(action.as_str(), "stat" | "") {
                    continue;
                }
                let age = read(&d.join("access_pattern/age/min").to_string_lossy());
                let quota = read(&d.join("quotas/bytes").to_string_lossy())
                    .and_then(|b| b.parse::<u64>().ok())
                    .filter(|b| *b > 0);
                moving.push(format!(
                    "kdamond {k} `{action}`{}{}",
                    age.map(|a| format!(" of regions idle >= {a} aggregation intervals"))
                        .unwrap_or_default(),
                    quota
                        .map(|b| format!(", up to {} MiB per quota interval", b >> 20))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Some(Check {
        what: "memory tiering (DAMON)",
        ok: moving.is_empty(),
        detail: if moving.is_empty() {
            "no DAMON scheme moves memory".into()
        } else {
            format!(
                "{}: memory left idle (loaded weights) may be paged out or migrated and faulted back in during a later measurement",
                moving.join("; ")
            )
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn checks_read_this_machine() {
        let c = super::check();
        assert!(c.iter().any(|c| c.what == "other load"), "{c:?}");
        assert!(c.iter().all(|c| !c.detail.is_empty()));
    }
}
