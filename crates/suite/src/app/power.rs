//! `modelbench power -- CMD...`: GPU power and energy (NVML, sampled every 20 ms, the
//! driver's energy counter where the GPU has one) while any command runs; JSON to a file or
//! stdout. Without an NVIDIA driver the command still runs and power is null ("not
//! available"). The exit code is the command's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::measure::gpu::PowerMeter;
use clap::Args;

#[derive(Args)]
pub struct PowerArgs {
    /// Write the JSON here (default: stdout, after the command's own output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

pub fn power(a: PowerArgs) -> crate::Result<ExitCode> {
    let (prog, args) = a.command.split_first().expect("clap requires one");
    let mut meter = PowerMeter::new();
    let t = Instant::now();
    meter.start();
    let status = std::process::Command::new(prog).args(args).status();
    meter.stop(1);
    let seconds = t.elapsed().as_secs_f64();
    let status = status.map_err(|e| fail!("cannot run {prog:?}: {e}"))?;
    let p = meter.reading(0);
    let available = p.mean_w.is_some();
    let v = serde_json::json!({
        "command": a.command,
        "exit_code": status.code(),
        "seconds": seconds,
        "gpu": crate::measure::gpu::facts(),
        "power": {
            "available": available,
            "method": p.method,
            "samples": p.samples,
            "mean_w": p.mean_w,
            "max_w": p.max_w,
            "energy_j": p.energy_j,
        },
    });
    let text = super::json_text(&v);
    match &a.out {
        Some(path) => crate::util::fsio::atomic_write(path, text.as_bytes())?,
        None => println!("{text}"),
    }
    eprintln!(
        "power: {} over {seconds:.2} s",
        if available {
            format!(
                "mean {:.1} W, {:.1} J",
                p.mean_w.unwrap_or_default(),
                p.energy_j.unwrap_or_default()
            )
        } else {
            p.method.clone()
        }
    );
    // The command's exit code (a signal: 128 + its number where known, else 1).
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        status.signal().map(|s| 128 + s).unwrap_or(1)
    });
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
