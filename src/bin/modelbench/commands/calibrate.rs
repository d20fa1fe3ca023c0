//! `modelbench calibrate`: the machine's roof, cached.

use modelbench::measure::device::parse_dtype;

use crate::args::device_and_dtype;

pub fn calibrate(device: &str, dtypes: &[String], force: bool) -> anyhow::Result<()> {
    let (spec, default) = device_and_dtype(device, None)?;
    let mut dts = Vec::new();
    for d in dtypes {
        dts.push(
            parse_dtype(d)
                .map_err(|e| anyhow::anyhow!("--dtype {d:?}: {e} (allowed: f32, f16, bf16)"))?,
        );
    }
    if dts.is_empty() {
        dts.push(default);
    }
    // A device this binary cannot open is a --device error, cached or not.
    spec.open_for("--device")?;
    let cached = modelbench::measure::calibration::cached(spec);
    let have_all = cached
        .as_ref()
        .is_some_and(|c| dts.iter().all(|d| c.mem_read_gbs.contains_key(d.as_str())));
    let cal = if have_all && !force {
        println!(
            "cached calibration ({}; --force re-measures):",
            modelbench::measure::calibration::machine_json().display()
        );
        cached.expect("checked")
    } else {
        println!(
            "calibrating {spec} for {} ...",
            dts.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        modelbench::measure::calibration::calibrate(spec, &dts)?
    };
    println!(
        "{} | {} (measured {})",
        cal.fingerprint, cal.device, cal.measured_at
    );
    for (d, v) in &cal.mem_read_gbs {
        println!(
            "  {d:<5} memory read {v:>8.1} GB/s   matmul {:>9.1} GFLOP/s",
            cal.matmul_gflops.get(d).copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
