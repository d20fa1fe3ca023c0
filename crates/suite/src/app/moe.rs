//! `modelbench moe`: the moe bench's grid (experts x top-k x tokens, and the dense SwiGLU
//! rows with the same active parameters) from the CLI, with fixed warm-ups and timed calls.

use crate::config::plans::moe_grid;
use crate::output::report::{reports_root, RunDir};

use crate::app::args::MoeArgs;
use crate::app::trials::Trials;

/// The flags of the grid's five values, in `config::plans::MOE_KNOBS`' order.
const MOE_FLAGS: [&str; 5] = [
    "--num-experts",
    "--top-k",
    "--tokens",
    "--hidden",
    "--intermediate",
];

pub fn moe(a: MoeArgs) -> crate::Result<()> {
    let grid = moe_grid(
        [
            &a.num_experts,
            &a.top_k,
            &a.tokens,
            &a.hidden,
            &a.intermediate,
        ],
        MOE_FLAGS,
    )?;
    ensure!(a.iters > 0, "--iters must be at least 1");
    let (spec, dtype, label) = a.target.resolve()?;
    let dev = spec.open_for("--device")?;
    let cal = crate::measure::calibration::cached(spec);
    let s = crate::workloads::suite::Setup {
        device: spec,
        dev,
        dtype,
        seed: a.seed,
        calibration: cal,
    };
    let mut run = RunDir::new(&reports_root(), label.as_deref());
    let mut driver = Trials::new(a.warmup, a.iters, !a.target.no_save);
    crate::workloads::moe::run_grid(&grid, &s, &mut driver, &mut run)?;
    for r in run.records() {
        let mut sorted = r.samples_s.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{}: median {:.3} ms, p90 {:.3} ms, {} tokens/s ({} calls, hidden {}, expert intermediate {}, {})",
            r.id,
            r.stats.median * 1e3,
            crate::measure::stats::percentile(&sorted, 0.9) * 1e3,
            crate::output::report::na(r.tok_s, 1),
            r.stats.n,
            grid.hidden,
            grid.intermediate,
            r.dtype
        );
    }
    if !a.target.no_save {
        run.complete()?;
        println!("saved {}", run.path.display());
    }
    Ok(())
}
