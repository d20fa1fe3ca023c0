//! `modelbench train-sweep`: the training-throughput sweep of PSANN-LM train steps and forwards over
//! precision x sequence length x batch (workloads::psann::sweep_point, the same workload as the
//! criterion group `train_step`): bench_results.jsonl and bench_results.csv (one row per point,
//! precisions the device cannot run refused with their reason), the records, and `--zip`.
//! Any other failure of a point is the command's failure: exit 1, one line naming the point,
//! and no run folder (everything is written once every point is measured).

use std::process::ExitCode;

use crate::config::plans::check_label;
use crate::config::values::{parse_dtypes, parse_list};
use crate::models::training::psann::{Base, PsannConfig};
use crate::output::report::{reports_root, zip_run, RunDir};
use crate::workloads::psann::{sweep_point, SweepRow};

use crate::app::args::TrainSweepArgs;

pub fn train_sweep(a: TrainSweepArgs) -> crate::Result<ExitCode> {
    let dtypes = parse_dtypes(&a.precision, "--precision")?;
    ensure!(
        !dtypes.is_empty(),
        "--precision: at least one precision is needed"
    );
    let seqs = parse_list("--seq", &a.seq)?;
    let batches = parse_list("--batch", &a.batch)?;
    ensure!(a.steps >= 1, "--steps must be at least 1");
    ensure!(
        a.lr.is_finite() && a.lr > 0.0,
        "--lr {}: must be a positive number",
        a.lr
    );
    let base = Base::parse(&a.base)
        .ok_or_else(|| fail!("--base {:?}: unknown (allowed: {})", a.base, Base::ALLOWED))?;
    let label = a
        .label
        .as_deref()
        .map(|l| check_label(l, "--label"))
        .transpose()?;
    let (device, _) = crate::app::args::device_and_dtype(&a.device, None)?;
    let dev = device.open_for("--device")?;
    let cfg = PsannConfig::sweep(base);
    let cal = crate::measure::calibration::cached(device);
    let mut rd = RunDir::new(&reports_root(), Some(label.as_deref().unwrap_or("sweep")));
    let mut rows: Vec<SweepRow> = Vec::new();
    let mut records = Vec::new();
    println!(
        "{} (byte vocab, d_model {}, {} layers, {} heads, d_mlp {}): {} params on {device}",
        base.name(),
        cfg.d_model,
        cfg.n_layers,
        cfg.n_heads,
        cfg.d_mlp,
        cfg.param_count()
    );
    let na = |v: Option<f64>, p: usize| v.map(|v| format!("{v:.p$}")).unwrap_or("n/a".into());
    let mib = |v: Option<u64>| na(v.map(|b| b as f64 / 1048576.0), 1);
    for &dtype in &dtypes {
        for &t in &seqs {
            for &b in &batches {
                let point = sweep_point(
                    cfg,
                    dtype,
                    (b, t),
                    a.steps,
                    a.seed,
                    a.lr,
                    device,
                    &dev,
                    cal.clone(),
                );
                let (row, point_records) = match point {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("error: train-sweep: {e} (nothing saved)");
                        return Ok(ExitCode::from(1));
                    }
                };
                println!(
                    "{:>5} T {:>5} B {:>3}: train {:>9} tok/s {:>9} ms/step (alloc {} / peak {} MiB)  infer {:>9} tok/s {:>8} ms  {}",
                    row.precision, t, b,
                    na(row.train_tokens_per_s, 1), na(row.train_ms_per_step, 2),
                    mib(row.train_allocated_bytes), mib(row.train_peak_bytes),
                    na(row.infer_tokens_per_s, 1), na(row.infer_ms_per_step, 2),
                    row.reason.as_deref().map(|r| format!("REFUSED: {r}")).unwrap_or_default()
                );
                records.extend(point_records);
                rows.push(row);
            }
        }
    }
    for r in records {
        rd.push_unsaved(r);
    }
    let jsonl: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).expect("serializable") + "\n")
        .collect();
    rd.put_file("bench_results.jsonl", jsonl.into_bytes())?;
    let mut csv = format!("{}\n", SweepRow::CSV_HEADER);
    for r in &rows {
        csv.push_str(&r.csv_line());
        csv.push('\n');
    }
    rd.put_file("bench_results.csv", csv.into_bytes())?;
    rd.complete()?;
    println!(
        "saved {} (bench_results.jsonl, bench_results.csv)",
        rd.path.display()
    );
    if a.zip {
        println!("zipped {}", zip_run(&rd.path)?.display());
    }
    Ok(ExitCode::SUCCESS)
}
