//! `modelbench memory -- CMD` (issue 62 item 5): the resident memory of a command and its
//! children over time, checked against the kernel's own accounting.
//!
//! A shell starts two python3 processes that each hold a known buffer (200 MiB and 100 MiB)
//! at the same time: the sampled peak of the tree must cover both (>= 290 MiB), while the
//! kernel's ru_maxrss of the shell (its largest reaped descendant, which the sampler did not
//! make) lies between the larger buffer and the sampled peak; the command's exit code (7) is
//! passed through; the timeline and its PNG are written. `--hotspots` runs this very binary
//! under heaptrack and must name allocation sites. Bad input is one line and exit 2.

mod common;

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modelbench"))
}

const MIB: f64 = (1u64 << 20) as f64;

#[test]
fn a_tree_peak_covers_its_children_and_agrees_with_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mem.json");
    let png = tmp.path().join("mem.png");
    let hold = |mib: u32| {
        format!("python3 -c 'import time; b = bytearray({mib} << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1.5)'")
    };
    let script = format!("{} & {}; wait; exit 7", hold(200), hold(100));
    let o = bin()
        .args(["memory", "--out"])
        .arg(&out)
        .arg("--png")
        .arg(&png)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(7), "the command's exit code: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let peak = v["host"]["peak_bytes"].as_u64().unwrap() as f64 / MIB;
    let kernel = v["host"]["kernel_max_rss_bytes"].as_u64().unwrap() as f64 / MIB;
    eprintln!("sampled tree peak {peak:.1} MiB, kernel ru_maxrss {kernel:.1} MiB; {err}");
    assert!(peak >= 290.0, "both buffers at once: {peak:.1} MiB");
    assert!(
        kernel >= 200.0 && kernel < peak,
        "kernel {kernel:.1} MiB, sampled {peak:.1} MiB"
    );
    assert!(v["host"]["peak_processes"].as_u64().unwrap() >= 3);
    assert!(v["timeline"].as_array().unwrap().len() >= 10);
    assert_eq!(v["exit_code"], 7);
    // No NVIDIA driver here: said, never a number.
    if !v["gpu"]["available"].as_bool().unwrap() {
        assert!(v["gpu"]["peak_bytes"].is_null());
        assert!(err.contains("GPU not available"), "{err}");
    }
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn hotspots_name_allocation_sites_with_heaptrack() {
    let have = ["heaptrack", "heaptrack_print"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !have {
        common::skip_unless_required(
            "MODELBENCH_REQUIRE_HEAPTRACK",
            "memory --hotspots",
            "heaptrack is not installed (apt-get install heaptrack)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mem.json");
    let o = bin()
        .args(["memory", "--hotspots", "--out"])
        .arg(&out)
        .args(["--", env!("CARGO_BIN_EXE_modelbench"), "list"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let top = v["hotspots"]["top"].as_array().unwrap();
    assert!(!top.is_empty(), "{}", v["hotspots"]);
    assert!(top.iter().all(|s| !s["site"].as_str().unwrap().is_empty()));
    let report = v["hotspots"]["report"].as_str().unwrap();
    assert!(std::fs::read_to_string(report)
        .unwrap()
        .contains("PEAK MEMORY CONSUMERS"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for args in [
        &["memory", "--interval-ms", "0", "--", "true"][..],
        &["memory", "--", "/no/such/program"][..],
    ] {
        let o = bin().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}
