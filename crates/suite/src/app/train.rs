//! `modelbench train`: the tiny-corpus baseline (one training run from a config: metrics.json, steps.csv,
//! loss_curve.png, config_used.toml) and the base shootout (`--shootout`: bases x seeds on one budget:
//! summary.json, summary.csv, leaderboard.md, runs/<base>_seed<seed>/metrics.json). Both run
//! the one training workload (workloads::train) through the trial loop.

use std::path::PathBuf;

use crate::app::Context;
use crate::config::plans::check_label;
use crate::config::train as tcfg;
use crate::models::training::psann::Base;
use crate::output::report::{reports_root, zip_run, RunDir};
use crate::workloads::train::{
    leaderboard_md, run, shootout_csv, Corpus, ShootoutRow, TrainSpec, Training,
};

use crate::app::args::TrainArgs;

fn spec_of(a: &TrainArgs, default: &str) -> crate::Result<TrainSpec> {
    let path = a.config.clone().unwrap_or_else(|| PathBuf::from(default));
    let mut s = tcfg::load(&path).map_err(|e| match e {
        crate::Error::Models(modelbench_models::Error::Measure(
            modelbench_measure::Error::Io { path, source },
        )) => fail!(
            "--config {}: {source} (the shipped configs are under configs/)",
            path.display()
        ),
        e => e,
    })?;
    if let Some(c) = &a.corpus {
        s.corpus = c.clone();
    }
    if let Some(m) = a.max_steps {
        ensure!(m > 0, "--max-steps must be at least 1");
        s.max_steps = Some(m);
    }
    if let Some(lr) = a.lr {
        ensure!(
            lr.is_finite() && lr > 0.0,
            "--lr {lr}: must be a finite number > 0"
        );
        s.lr = lr;
    }
    Ok(s)
}

fn open(s: &TrainSpec) -> crate::Result<candle_core::Device> {
    Ok(s.device.open_for("device (training config)")?)
}

fn one(
    spec: TrainSpec,
    corpus: Corpus,
    dev: &candle_core::Device,
) -> crate::Result<(Training, crate::output::record::Record)> {
    let mut w = Training::new(spec, corpus, dev)?;
    println!(
        "{} seed {}: {} params, {} steps ({} per epoch), {} tokens per step, {} on {}",
        w.spec.base.name(),
        w.spec.seed,
        w.cfg.param_count(),
        w.total_steps,
        w.steps_per_epoch,
        w.tokens_per_step(),
        w.spec.dtype.as_str(),
        w.spec.device
    );
    let every = w.spec.val_every;
    let r = run(&mut w, &mut |w| {
        let l = w.logs.last().expect("a step ran");
        let val = w.evals.last().filter(|e| e.step == l.step);
        if val.is_some() || l.step % every.div_ceil(5).max(1) == 0 {
            println!(
                "  step {:>5}/{} epoch {} loss {:.4} grad_norm {:.3} lr {:.2e} {:.3} s{}{}",
                l.step,
                w.total_steps,
                l.epoch,
                l.loss,
                l.grad_norm,
                l.lr,
                l.step_s,
                if l.diverged { " DIVERGED" } else { "" },
                val.map(|e| format!(
                    "  val_loss {:.4} val_ppl {:.3} top1 {:.4}",
                    e.val_loss, e.val_ppl, e.val_top1_acc
                ))
                .unwrap_or_default()
            );
        }
    })?;
    Ok((w, r))
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("serializable");
    b.push(b'\n');
    b
}

pub fn train(a: TrainArgs) -> crate::Result<()> {
    let label = a
        .label
        .as_deref()
        .map(|l| check_label(l, "--label"))
        .transpose()?;
    if a.shootout {
        return shootout(&a, label);
    }
    let spec = spec_of(&a, "configs/tiny_corpus_benchmark.toml")?;
    let dev = open(&spec)?;
    let corpus = Corpus::load(&spec.corpus)?;
    let mut rd = RunDir::new(&reports_root(), Some(label.as_deref().unwrap_or("train")));
    let (w, r) = one(spec, corpus, &dev)?;
    let m = w.metrics(&r);
    rd.push(r)?;
    rd.put_file("metrics.json", json(&m))?;
    rd.put_file("config_used.toml", tcfg::to_toml(&w.spec).into_bytes())?;
    rd.put_file("steps.csv", w.steps_csv().into_bytes())?;
    w.loss_curve_png(&rd.path.join("loss_curve.png"))?;
    println!(
        "val_loss {}  perplexity {}  top1 {}  after {:.3} epochs ({} tokens, {} tok/s); target ppl <= 8.0 after 2 epochs: {}",
        m["val_loss"], m["perplexity"], m["val_top1_acc"], m["epochs_completed"].as_f64().unwrap_or(0.0),
        m["tokens_seen"], m["tokens_per_s"].as_f64().map(|v| format!("{v:.0}")).unwrap_or("n/a".into()),
        match m["target"]["met"].as_bool() { Some(true) => "met", Some(false) => "not met", None => "not tested (fewer than 2 epochs ran)" }
    );
    finish(&rd, a.zip)
}

fn finish(rd: &RunDir, zip: bool) -> crate::Result<()> {
    rd.complete()?;
    println!("saved {}", rd.path.display());
    if zip {
        println!("zipped {}", zip_run(&rd.path)?.display());
    }
    Ok(())
}

fn list<T>(s: &str, flag: &str, parse: impl Fn(&str) -> Option<T>) -> crate::Result<Vec<T>> {
    let v: Option<Vec<T>> = s.split(',').map(|x| parse(x.trim())).collect();
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => bail!("{flag} {s:?}: expected a comma list"),
    }
}

fn shootout(a: &TrainArgs, label: Option<String>) -> crate::Result<()> {
    let bases = list(&a.bases, "--bases", Base::parse)
        .with_context(|| format!("allowed bases: {}", Base::ALLOWED))
        .map_err(|e| fail!("{e:#}"))?;
    let seeds = list(&a.seeds, "--seeds", |x| x.parse::<u64>().ok())?;
    let spec = spec_of(a, "configs/base_shootout.toml")?;
    let dev = open(&spec)?;
    let corpus = Corpus::load(&spec.corpus)?;
    let mut rd = RunDir::new(
        &reports_root(),
        Some(label.as_deref().unwrap_or("shootout")),
    );
    let mut rows = Vec::new();
    let budget_of = |w: &Training| {
        format!(
            "Same budget for every run: {} optimizer steps of {} x {} bytes ({} tokens), d_model {}, {} layers, {} heads, d_mlp {}, lr {:e} (warm-up {}, cosine), {} on {}; corpus {}; validation: {}.",
            w.total_steps, w.spec.batch, w.spec.seq_len, w.total_steps as u64 * w.tokens_per_step(),
            w.spec.d_model, w.spec.n_layers, w.spec.n_heads, w.spec.d_mlp, w.spec.lr, w.spec.warmup_steps,
            w.spec.dtype.as_str(), w.spec.device, w.spec.corpus.display(),
            if w.spec.val_batches == 0 { "the whole split".to_string() } else { format!("{} batches", w.spec.val_batches) }
        )
    };
    let mut budget = String::new();
    for &b in &bases {
        for &seed in &seeds {
            let mut s = spec.clone();
            s.base = b;
            s.seed = seed;
            let (w, r) = one(s, corpus.clone(), &dev)?;
            budget = budget_of(&w);
            let m = w.metrics(&r);
            rd.push(r)?;
            rd.put_file(
                &format!("runs/{}_seed{seed}/metrics.json", b.name()),
                json(&m),
            )?;
            rows.push(ShootoutRow::from_metrics(&m, dev.is_cuda()));
        }
    }
    rd.put_file(
        "summary.json",
        json(&serde_json::json!({"benchmark": "base shootout", "budget": budget, "runs": rows})),
    )?;
    rd.put_file("summary.csv", shootout_csv(&rows).into_bytes())?;
    let md = leaderboard_md(&rows, &budget);
    rd.put_file("leaderboard.md", md.clone().into_bytes())?;
    println!("\n{md}");
    finish(&rd, a.zip)
}
