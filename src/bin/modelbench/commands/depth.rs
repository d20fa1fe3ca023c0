//! `modelbench depth`: the depth workload on models and depths, saved as a run with
//! depth.csv and depth.png.

use anyhow::Context;
use modelbench::config::plans::{parse_attention, parse_depths, parse_models};
use modelbench::engine::preflight;
use modelbench::engine::scenario::prepare;
use modelbench::models::loading::{load_line, open_with};
use modelbench::output::report::{na, reports_root, RunDir};
use modelbench::workloads::depth::{write_artifacts, Depth, FILL_CHUNK};

use crate::args::DepthArgs;

pub fn depth(a: DepthArgs) -> anyhow::Result<()> {
    let depths = parse_depths(&a.depths, "--depths")?;
    let attention = parse_attention(&a.attention, "--attention")?;
    anyhow::ensure!(a.trials >= 1, "--trials must be at least 1");
    anyhow::ensure!(
        a.prompt > 0 || a.gen > 0,
        "--prompt and --gen are both 0: nothing to time"
    );
    let (device, dtype, label) = a.target.resolve()?;
    let models = parse_models(&a.models.join(","), "--model")?;
    let deepest = *depths.last().expect("non-empty");
    let cap = deepest + a.prompt.max(a.gen);
    let dev = device.open_for("--device")?;
    attention
        .check(&dev)
        .map_err(|e| anyhow::anyhow!("--attention {attention}: {e}"))?;
    // Resolve and preflight every model before any weights load.
    let mut prepared = Vec::new();
    for (l, r) in &models {
        let res = prepare(l, r, &[])?;
        let meta = preflight::meta_of(&res, dtype, cap)?;
        anyhow::ensure!(
            cap <= meta.max_context,
            "{l}: depth {deepest} + {} tokens needs {cap} positions but the model's max_position_embeddings is {}",
            a.prompt.max(a.gen),
            meta.max_context
        );
        let e = preflight::estimate(&meta, FILL_CHUNK.min(deepest).max(a.prompt), cap, attention);
        preflight::check_fits(
            &format!("depth {deepest}"),
            l,
            &e,
            attention,
            preflight::available(&dev),
        )?;
        println!(
            "{l}: preflight estimate {} for {cap} positions",
            e.describe()
        );
        prepared.push(res);
    }
    let calibration = modelbench::measure::calibration::cached(device);
    let mut run = RunDir::new(&reports_root(), label.as_deref());
    for res in prepared {
        let name = res.label.clone();
        let mut loaded = open_with(res, &dev, dtype, Some(cap), attention)?;
        println!("{}", load_line(&loaded));
        for &d in &depths {
            let mut w = Depth::new(
                &mut loaded,
                d,
                a.prompt,
                a.gen,
                a.seed,
                device,
                dtype,
                calibration.clone(),
            )?;
            let r = modelbench::workloads::run_trials(&mut w, a.warmup, a.trials)
                .with_context(|| format!("{name} at depth {d}"))?;
            let g = r.gen.clone().unwrap_or_default();
            println!(
                "{name:>24} depth {d:>6}: prefill {:>9} tok/s  decode {:>8} tok/s  fill {:.2} s  restore {}  ({})",
                na(g.prefill_tok_s, 1),
                na(g.decode_tok_s, 1),
                r.extra["fill_s"].as_f64().unwrap_or(f64::NAN),
                r.extra["restore"],
                r.model.attention,
            );
            if a.target.no_save {
                run.push_unsaved(r);
            } else {
                run.push(r)?;
            }
        }
    }
    if !a.target.no_save {
        write_artifacts(&mut run)?;
        println!("saved {} (depth.png, depth.csv)", run.path.display());
    }
    Ok(())
}
