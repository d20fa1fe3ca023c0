//! `modelbench moe`: one MoE block timed through the moe workload.

use modelbench::output::report::{reports_root, RunDir};

use crate::args::MoeArgs;

pub fn moe(a: MoeArgs) -> anyhow::Result<()> {
    use modelbench::models::moe::MoeConfig;
    use modelbench::workloads::moe::Moe;
    let cfg = MoeConfig::new(a.hidden, a.intermediate, a.num_experts, a.top_k);
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--num-experts/--top-k: {e}"))?;
    anyhow::ensure!(
        a.tokens > 0 && a.iters > 0,
        "--tokens and --iters must be at least 1"
    );
    let (spec, dtype, label) = a.target.resolve()?;
    let dev = spec.open_for("--device")?;
    let cal = modelbench::measure::calibration::cached(spec);
    let s = modelbench::workloads::suite::Setup {
        device: spec,
        dev,
        dtype,
        seed: a.seed,
        calibration: cal,
    };
    let mut w = Moe::new(cfg, false, a.tokens, &s)?;
    let r = modelbench::workloads::run_trials(&mut w, a.warmup, a.iters)?;
    let mut sorted = r.samples_s.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}: median {:.3} ms, p90 {:.3} ms, {} tokens/s ({} calls, hidden {}, expert intermediate {}, {})",
        r.id,
        r.stats.median * 1e3,
        modelbench::measure::stats::percentile(&sorted, 0.9) * 1e3,
        modelbench::output::report::na(r.tok_s, 1),
        r.stats.n,
        a.hidden,
        a.intermediate,
        r.dtype
    );
    if !a.target.no_save {
        let mut run = RunDir::new(&reports_root(), label.as_deref());
        run.push(r)?;
        println!("saved {}", run.path.display());
    }
    Ok(())
}
