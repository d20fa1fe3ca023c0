//! `modelbench memory -- CMD...`: the memory of any command over time, as the seed's
//! `tools/memory_profiler.py` wraps a server or a workload (issue 62 item 5). Beside `power`,
//! with the same rule: what cannot be measured here prints "not available".
//!
//! - **Host**: the resident set of the command and every process it starts, summed, sampled
//!   every `--interval-ms` from /proc (`measure::tree_memory`): its peak, when it came, and
//!   the timeline (JSON; a PNG with `--png`). The peak is checked against the kernel's own
//!   high-water mark of the command's process (`wait4`'s `ru_maxrss`), which the sampler did
//!   not make: the sampled peak of a one-process command can only be at or below it.
//! - **GPU**: the memory NVML attributes to the tree's processes, sampled alike; "not
//!   available" without an NVIDIA driver.
//! - **Hot spots** (`--hotspots`): the command runs under heaptrack (Debian's `heaptrack`),
//!   which records every allocation of the command's own process with its call stack; the
//!   top sites by peak consumption (`heaptrack_print --print-peaks`) go into the JSON and the
//!   whole report beside it. Without heaptrack: one line naming the package, exit 2, nothing run.
//!
//! The exit code is the command's (a signal: 128 + its number).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::measure::tree_memory::{peak, Sample, TreeSampler};

#[derive(Args)]
pub struct MemoryArgs {
    /// Write the JSON here (default: stdout, after the command's own output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw the timeline (resident MiB of the tree, and GPU MiB where NVML has it) here.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Milliseconds between samples.
    #[arg(long = "interval-ms", default_value_t = 20)]
    pub interval_ms: u64,
    /// Also the allocation hot spots by call stack: runs the command under heaptrack
    /// (`apt-get install heaptrack`); its report is written beside --out (or to
    /// memory-hotspots.txt).
    #[arg(long)]
    pub hotspots: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// One allocation site of heaptrack's peak consumers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotSpot {
    /// As heaptrack prints it, e.g. `72.70K`.
    pub peak: String,
    pub calls: u64,
    /// The allocating function (the first frame heaptrack names).
    pub site: String,
}

/// heaptrack_print's "PEAK MEMORY CONSUMERS": each `<size> peak memory consumed over <n>
/// calls from` line and the frame after it.
pub fn parse_peaks(report: &str) -> Vec<HotSpot> {
    let lines: Vec<&str> = report.lines().collect();
    let mut out = Vec::new();
    let mut in_peaks = false;
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "PEAK MEMORY CONSUMERS" {
            in_peaks = true;
            continue;
        }
        if in_peaks && !l.starts_with(' ') && l.trim().ends_with(':') && l.contains("CONSUMERS") {
            break;
        }
        let Some(head) = l.strip_suffix(" calls from") else {
            continue;
        };
        if !in_peaks || l.starts_with(' ') {
            continue;
        }
        let Some((peak, calls)) = head.split_once(" peak memory consumed over ") else {
            continue;
        };
        let site = lines.get(i + 1).map(|s| s.trim()).unwrap_or("").to_string();
        out.push(HotSpot {
            peak: peak.trim().to_string(),
            calls: calls.trim().parse().unwrap_or(0),
            site,
        });
    }
    out
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

pub fn memory(a: MemoryArgs) -> crate::Result<ExitCode> {
    ensure!(
        a.interval_ms >= 1 && a.interval_ms <= 60_000,
        "--interval-ms {}: give 1 to 60000 milliseconds",
        a.interval_ms
    );
    let (prog, args) = a.command.split_first().expect("clap requires one");
    let hot_path = a.hotspots.then(|| match &a.out {
        Some(o) => o.with_extension("hotspots.txt"),
        None => PathBuf::from("memory-hotspots.txt"),
    });
    let trace_file = std::env::temp_dir().join(format!(
        "modelbench-heaptrack-{}-{}",
        std::process::id(),
        crate::util::time::stamp()
    ));
    let mut cmd = if a.hotspots {
        let heaptrack = which("heaptrack").ok_or_else(|| {
            fail!("--hotspots needs heaptrack, which is not installed: apt-get install heaptrack (or leave --hotspots out)")
        })?;
        let mut c = std::process::Command::new(heaptrack);
        c.arg("-o").arg(&trace_file).arg(prog).args(args);
        c
    } else {
        let mut c = std::process::Command::new(prog);
        c.args(args);
        c
    };
    let t = Instant::now();
    let child = cmd.spawn().map_err(|e| fail!("cannot run {prog:?}: {e}"))?;
    let pid = child.id();
    let sampler = TreeSampler::start(pid, Duration::from_millis(a.interval_ms));
    let (status, kernel_max_rss) = wait4(pid);
    let samples = sampler.finish();
    let seconds = t.elapsed().as_secs_f64();
    drop(child);
    let code = match status {
        Status::Exited(c) => c,
        Status::Signaled(s) => 128 + s,
        Status::Unknown => 1,
    };
    let top = peak(&samples);
    let gpu_peak = samples.iter().filter_map(|s| s.gpu_bytes).max();
    let gpu_available = samples.iter().any(|s| s.gpu_bytes.is_some());
    let hot = match &hot_path {
        Some(p) => Some(hotspots(&trace_file, p)?),
        None => None,
    };
    let v = serde_json::json!({
        "command": a.command,
        "exit_code": code,
        "seconds": seconds,
        "interval_ms": a.interval_ms,
        "host": {
            "method": "resident set of the command and every descendant, summed, sampled from /proc/<pid>/statm",
            "samples": samples.len(),
            "peak_bytes": top.map(|s| s.rss_bytes),
            "peak_at_s": top.map(|s| s.t_s),
            "peak_processes": top.map(|s| s.processes),
            "kernel_max_rss_bytes": kernel_max_rss,
            "kernel_method": "wait4 ru_maxrss of the command's process (the kernel's high-water mark; the sampled peak of a one-process command is at or below it)",
        },
        "gpu": {
            "available": gpu_available,
            "method": if gpu_available { "NVML memory of the tree's processes (compute and graphics contexts), sampled" } else { "not available (no NVIDIA driver / NVML)" },
            "peak_bytes": gpu_peak,
        },
        "hotspots": hot.as_ref().map(|(spots, path)| serde_json::json!({
            "method": "heaptrack (the command's own process), heaptrack_print --print-peaks",
            "report": path,
            "top": spots,
        })),
        "timeline": samples,
    });
    let text = super::json_text(&v);
    if let Some(png) = &a.png {
        timeline_png(png, &samples)?;
    }
    match &a.out {
        Some(path) => crate::util::fsio::atomic_write(path, text.as_bytes())?,
        None => println!("{text}"),
    }
    eprintln!(
        "memory: host peak {} over {seconds:.2} s ({} samples; kernel max RSS of the command {}); GPU {}",
        top.map_or("not measured".to_string(), |s| format!(
            "{:.1} MiB at {:.2} s",
            mib(s.rss_bytes),
            s.t_s
        )),
        samples.len(),
        kernel_max_rss.map_or("not available".to_string(), |b| format!("{:.1} MiB", mib(b))),
        if gpu_available {
            format!("peak {:.1} MiB", mib(gpu_peak.unwrap_or(0)))
        } else {
            "not available (no NVIDIA driver / NVML)".into()
        }
    );
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// heaptrack's report of the trace at `trace` (heaptrack adds .zst or .gz), written to `out`,
/// and its top sites.
fn hotspots(trace: &Path, out: &Path) -> crate::Result<(Vec<HotSpot>, PathBuf)> {
    let file = ["zst", "gz"]
        .iter()
        .map(|e| trace.with_extension(e))
        .find(|p| p.is_file())
        .ok_or_else(|| fail!("heaptrack wrote no trace at {}.*", trace.display()))?;
    let o = std::process::Command::new(
        which("heaptrack_print").unwrap_or_else(|| "heaptrack_print".into()),
    )
    .args(["-p", "1", "-a", "0", "-T", "0", "-n", "10", "-s", "1", "-f"])
    .arg(&file)
    .output()
    .map_err(|e| fail!("cannot run heaptrack_print: {e}"))?;
    let _ = std::fs::remove_file(&file);
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    ensure!(
        o.status.success(),
        "heaptrack_print failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    crate::util::fsio::atomic_write(out, report.as_bytes())?;
    Ok((parse_peaks(&report), out.to_path_buf()))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn timeline_png(path: &Path, samples: &[Sample]) -> crate::Result<()> {
    let mut series = vec![(
        "resident (MiB)".to_string(),
        samples
            .iter()
            .map(|s| (s.t_s, mib(s.rss_bytes)))
            .collect::<Vec<_>>(),
    )];
    if samples.iter().any(|s| s.gpu_bytes.is_some()) {
        series.push((
            "GPU (MiB)".to_string(),
            samples
                .iter()
                .filter_map(|s| s.gpu_bytes.map(|g| (s.t_s, mib(g))))
                .collect(),
        ));
    }
    crate::output::plot::trend_png(path, "memory over time", ("seconds", "MiB"), &series)
}

enum Status {
    Exited(i32),
    Signaled(i32),
    Unknown,
}

/// Waits for `pid` (our child) and returns its status and the kernel's ru_maxrss in bytes.
fn wait4(pid: u32) -> (Status, Option<u64>) {
    let (rc, status, ru) = crate::measure::process::wait4(pid as libc::pid_t);
    if rc != pid as libc::pid_t {
        return (Status::Unknown, None);
    }
    let s = if libc::WIFEXITED(status) {
        Status::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Status::Signaled(libc::WTERMSIG(status))
    } else {
        Status::Unknown
    };
    // Linux reports ru_maxrss in KiB.
    (s, Some(ru.ru_maxrss.max(0) as u64 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heaptrack_peaks_are_parsed() {
        let r = "reading file\nPEAK MEMORY CONSUMERS\n72.70K peak memory consumed over 1 calls from\n0x7f74\n  in /lib/x.so\n72.70K consumed over 1 calls from:\n    call_init\n\n4.10K peak memory consumed over 12 calls from\n__GI__IO_file_doallocate\n  at ./libio/filedoalloc.c:101\n";
        let p = parse_peaks(r);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].peak, "72.70K");
        assert_eq!(p[1].calls, 12);
        assert_eq!(p[1].site, "__GI__IO_file_doallocate");
    }
}
