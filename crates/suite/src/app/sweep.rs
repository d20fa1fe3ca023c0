//! `modelbench sweep`: the architecture sweep (workloads::arch::sweep_point, the same
//! workload as the criterion group `arch_sweep`): the parquet file of one row per grid point,
//! the telemetry table beside it (`.md`), and the records in a run folder.

use crate::config::sweep::{Overrides, SweepPlan};
use crate::output::arch_table::{telemetry_markdown, write_parquet, ArchRow};
use crate::output::report::{reports_root, RunDir};
use crate::workloads::arch::sweep_point;

use crate::app::args::SweepArgs;

pub fn sweep(a: SweepArgs) -> crate::Result<()> {
    let o = Overrides {
        architectures: a.architectures.clone(),
        model_dims: a.model_dims.clone(),
        depths: a.depths.clone(),
        horizons: a.horizons.clone(),
        accelerator: a.accelerator.clone(),
    };
    let plan = SweepPlan::resolve(a.config.as_deref(), &o)?;
    ensure!(
        a.output.extension().is_some_and(|e| e == "parquet"),
        "--output {}: the file name must end in .parquet",
        a.output.display()
    );
    // Refuses here, before anything is written, when the accelerator cannot be opened.
    let dev = plan.device.open_for(&plan.accelerator_from)?;
    let cal = crate::measure::calibration::cached(plan.device);
    let label = crate::config::plans::check_label(&plan.queue, "queue").ok();
    let mut rd = (!a.no_save).then(|| RunDir::new(&reports_root(), label.as_deref()));
    let md_path = a.output.with_extension("md");
    let configs = plan.configs();
    println!(
        "{}: {} grid points on {} {} (B {} x T {}, vocab {}, {} warm-up + {} timed steps per mode)",
        plan.queue,
        configs.len(),
        plan.device,
        plan.dtype.as_str(),
        plan.batch,
        plan.seq_len,
        plan.vocab,
        plan.warmup.max(1),
        plan.trials
    );
    let point = plan.point();
    let mut rows: Vec<ArchRow> = Vec::new();
    for cfg in configs {
        let (row, records) = sweep_point(cfg, &point, &dev, cal.clone());
        let na = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or("n/a".into());
        println!(
            "  {:<11} d{:<5} L{:<3} h{:<2} {:>10} params: train {:>8} ms/step (p90 {}) {:>8} samples/s | fwd {:>8} ms {}",
            row.architecture,
            row.model_dim,
            row.depth,
            row.horizons,
            row.params,
            na(row.train_ms_median),
            na(row.train_ms_p90),
            na(row.train_samples_per_s),
            na(row.forward_ms_median),
            row.reason.as_deref().map(|r| format!("FAILED: {r}")).unwrap_or_default()
        );
        if let Some(rd) = rd.as_mut() {
            for r in records {
                rd.push(r)?;
            }
        }
        rows.push(row);
        write_parquet(&a.output, &rows)?;
        crate::util::fsio::atomic_write(&md_path, telemetry_markdown(&rows).as_bytes())?;
    }
    println!("\n{}", telemetry_markdown(&rows));
    println!(
        "wrote {} ({} rows) and {}",
        a.output.display(),
        rows.len(),
        md_path.display()
    );
    if let Some(rd) = rd {
        rd.complete()?;
        println!("records: {}", rd.path.display());
    }
    let failed = rows.iter().filter(|r| r.status != "ok").count();
    ensure!(
        failed == 0,
        "{failed} of {} grid points failed (see the status column)",
        rows.len()
    );
    Ok(())
}
