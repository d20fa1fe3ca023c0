//! `modelbench depth`: the depth suite on models and depths, saved as a run with depth.csv
//! and depth.png.

use crate::config::plans::{parse_attention, parse_depths, parse_models, Common, DepthPlan};
use crate::output::report::{reports_root, RunDir};
use crate::workloads::depth::write_artifacts;
use crate::workloads::suite::run_suite;

use crate::app::args::DepthArgs;
use crate::app::trials::Trials;

pub fn depth(a: DepthArgs) -> crate::Result<()> {
    let depths = parse_depths(&a.depths, "--depths")?;
    let attention = parse_attention(&a.attention, "--attention")?;
    ensure!(a.trials >= 1, "--trials must be at least 1");
    ensure!(
        a.prompt > 0 || a.gen > 0,
        "--prompt and --gen are both 0: nothing to time"
    );
    let (device, dtype, label) = a.target.resolve()?;
    let plan = DepthPlan {
        models: parse_models(&a.models.join(","), "--model")?,
        depths,
        prompt: a.prompt,
        gen: a.gen,
        common: Common {
            device,
            dtype,
            seed: a.seed,
            min_measure: std::time::Duration::ZERO,
            label,
            attention,
        },
    };
    let dev = device.open_for("--device")?;
    attention
        .check(&dev)
        .map_err(|e| fail!("--attention {attention}: {e}"))?;
    // Every model is resolved and preflighted before any weights load.
    let mut run = RunDir::new(&reports_root(), plan.common.label.as_deref());
    let mut driver = Trials::new(a.warmup, a.trials, !a.target.no_save);
    run_suite(&plan.suite(&dev), &mut driver, &mut run)?;
    if !a.target.no_save {
        write_artifacts(&mut run)?;
        run.complete()?;
        println!("saved {} (depth.png, depth.csv)", run.path.display());
    }
    Ok(())
}
