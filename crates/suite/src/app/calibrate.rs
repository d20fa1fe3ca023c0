//! `modelbench calibrate`: the machine's roof, cached.

use crate::measure::calibration::{method_key, Calibration, METHOD_MEM_READ};
use crate::measure::device::parse_dtype;

use crate::app::args::device_and_dtype;

pub fn calibrate(device: &str, dtypes: &[String], force: bool) -> crate::Result<()> {
    let (spec, default) = device_and_dtype(device, None)?;
    let mut dts = Vec::new();
    for d in dtypes {
        dts.push(
            parse_dtype(d).map_err(|e| fail!("--dtype {d:?}: {e} (allowed: f32, f16, bf16)"))?,
        );
    }
    if dts.is_empty() {
        dts.push(default);
    }
    // A device this binary cannot open is a --device error, cached or not.
    spec.open_for("--device")?;
    let cached = crate::measure::calibration::cached(spec);
    let have_all = cached.as_ref().is_some_and(|c| {
        dts.iter().all(|d| {
            c.candle_gemv_gbs.contains_key(d.as_str()) && c.matmul_gflops.contains_key(d.as_str())
        })
    });
    let cal = if have_all && !force {
        println!("cached calibration (--force re-measures):");
        cached.expect("checked")
    } else {
        println!(
            "calibrating {spec} for {} ...",
            dts.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        crate::measure::calibration::calibrate(spec, &dts)?
    };
    print(&cal);
    println!("\nmachine checks (what the suite cannot control):");
    for c in crate::measure::system::check() {
        println!(
            "  {:<5} {:<28} {}",
            if c.ok { "ok" } else { "WARN" },
            c.what,
            c.detail
        );
    }
    let root = crate::output::report::reports_root();
    let fp = crate::measure::hardware::context().hardware.fingerprint();
    match crate::output::noise::load(&root, &fp)? {
        Some(p) => println!("\n{}", crate::output::noise::render(&p, false)),
        None => println!(
            "\nno run-to-run noise measured for `{fp}`: the benches give criterion the default \
             {:.0}% threshold (`modelbench noise --measure 4` measures it)",
            crate::judge::noise::DEFAULT_THRESHOLD * 100.0
        ),
    }
    Ok(())
}

fn print(cal: &Calibration) {
    let method = |k: &str| {
        cal.methods
            .get(k)
            .map(String::as_str)
            .unwrap_or("method not recorded")
    };
    println!("{}", cal.key);
    println!(
        "measured {}, cached in {}",
        cal.measured_at,
        crate::measure::calibration::machine_json().display()
    );
    println!(
        "  memory roof (streaming read, every dtype) {:>8.1} GB/s   {}",
        cal.mem_read_gbs,
        method(METHOD_MEM_READ)
    );
    let dtypes: std::collections::BTreeSet<&String> = cal
        .candle_gemv_gbs
        .keys()
        .chain(cal.matmul_gflops.keys())
        .collect();
    for d in dtypes {
        let fig =
            |m: &std::collections::BTreeMap<String, f64>| m.get(d).copied().unwrap_or(f64::NAN);
        println!(
            "  {d:<5} candle GEMV attainable {:>8.1} GB/s ({:.0}% of the memory roof)   {}",
            fig(&cal.candle_gemv_gbs),
            100.0 * fig(&cal.candle_gemv_gbs) / cal.mem_read_gbs,
            method(&method_key("candle_gemv", d))
        );
        println!(
            "  {d:<5} matmul peak           {:>8.1} GFLOP/s   {}",
            fig(&cal.matmul_gflops),
            method(&method_key("matmul", d))
        );
    }
}
