//! Training PSANN-LM on a text corpus (the tiny-corpus baseline, and the base shootout):
//! bytes as tokens (vocab 256), a deterministic by-line train/validation split, packed
//! non-overlapping windows of `seq_len + 1` bytes reshuffled every epoch, the spec's AdamW
//! (betas 0.9/0.95, eps 1e-8, weight decay on every parameter, clip 1.0) with linear warm-up
//! then cosine decay to 0, and validation every `val_every` steps.
//!
//! One iteration of the workload is one optimizer step, through the existing
//! [`Trainer::step_checked`] (the same step as group `psann_train`): the batch is built and
//! the schedule's lr set before the timed region; the stability checks and any validation run
//! after it. Every step logs its loss, gradient norm before clipping, lr and a "diverged" flag
//! (loss above the first step's loss + `diverge_margin`); a NaN/Inf loss, parameter or
//! gradient stops the run with [`Error::NonFinite`] naming the step and the tensor.

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::measure::device::DeviceSpec;
use crate::models::training::psann::train::{TrainConfig, Trainer};
use crate::models::training::psann::{Base, PsannConfig, PsannLm};
use crate::output::record::{Kind, Precision, Record};
use crate::workloads::time_region;

use super::{Measured, Target, Workload};

/// Byte-level tokens: the text's bytes are the ids.
pub const VOCAB: usize = 256;
/// Every `VAL_EVERY_LINE`-th line (index % 50 == 49) is validation: 2%, the spec's val_split.
pub const VAL_EVERY_LINE: usize = 50;
/// The tiny-corpus baseline's target: validation perplexity <= 8.0 after 2 epochs (per character).
pub const TARGET_PPL: f64 = 8.0;
pub const TARGET_EPOCHS: f64 = 2.0;

/// A corpus split into train and validation byte streams.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub path: PathBuf,
    pub bytes: usize,
    pub lines: usize,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl Corpus {
    /// Splits `text` by line (every 50th line to validation); each line keeps its newline
    /// and the lines of each split are concatenated into one stream (packing).
    pub fn from_text(path: &Path, text: &str) -> Corpus {
        let (mut train, mut val) = (Vec::new(), Vec::new());
        let mut lines = 0;
        for (i, line) in text.lines().enumerate() {
            lines += 1;
            let dst = if i % VAL_EVERY_LINE == VAL_EVERY_LINE - 1 {
                &mut val
            } else {
                &mut train
            };
            dst.extend(line.bytes().map(u32::from));
            dst.push(u32::from(b'\n'));
        }
        Corpus {
            path: path.to_path_buf(),
            bytes: text.len(),
            lines,
            train,
            val,
        }
    }

    pub fn load(path: &Path) -> Result<Corpus> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Report(format!(
            "corpus {}: {e} (install it with scripts/fetch-corpus.sh, or set `corpus` in the config / --corpus)",
            path.display()
        )))?;
        Ok(Corpus::from_text(path, &text))
    }
}

/// What a training run does (a config file's keys; see config::train).
#[derive(Debug, Clone, Serialize)]
pub struct TrainSpec {
    pub corpus: PathBuf,
    pub base: Base,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_mlp: usize,
    pub seq_len: usize,
    /// Sequences per optimizer step.
    pub batch: usize,
    pub epochs: usize,
    /// Stop after this many optimizer steps even if the epochs are not done (a CPU budget).
    pub max_steps: Option<usize>,
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub seed: u64,
    /// Validate every this many steps (and after the last step).
    pub val_every: usize,
    /// Validation batches per evaluation (0: the whole validation split).
    pub val_batches: usize,
    /// A step is flagged "diverged" when its loss exceeds the first step's loss by this much
    /// (nats).
    pub diverge_margin: f64,
    #[serde(serialize_with = "ser_display")]
    pub device: DeviceSpec,
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: DType,
}

fn ser_display<S: serde::Serializer>(d: &DeviceSpec, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

fn ser_dtype<S: serde::Serializer>(d: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

impl TrainSpec {
    pub fn model_config(&self) -> PsannConfig {
        let mut c = PsannConfig::new(self.base, VOCAB, self.d_model, self.n_layers, self.n_heads);
        c.d_mlp = self.d_mlp;
        c
    }

    /// The spec's LR multiplier at optimizer step `n` (1-indexed): `n / warmup` during
    /// warm-up, then cosine from 1 to 0 at `total`; never leaves warm-up if total <= warmup.
    pub fn lr_at(&self, n: usize, total: usize) -> f64 {
        let w = self.warmup_steps;
        let mult = if w > 0 && n <= w {
            n as f64 / w as f64
        } else if total <= w {
            1.0
        } else {
            let p = ((n - w) as f64 / (total - w) as f64).clamp(0.0, 1.0);
            0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        self.lr * mult
    }
}

/// One optimizer step's log line.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub epoch: usize,
    pub lr: f64,
    pub loss: f32,
    pub grad_norm: f64,
    pub diverged: bool,
    pub step_s: f64,
    pub tokens_seen: u64,
}

/// One validation pass.
#[derive(Debug, Clone, Serialize)]
pub struct Eval {
    pub step: usize,
    pub tokens_seen: u64,
    pub val_loss: f64,
    pub val_ppl: f64,
    pub val_top1_acc: f64,
    pub val_tokens: u64,
}

pub struct Training {
    pub spec: TrainSpec,
    pub cfg: PsannConfig,
    tr: Trainer,
    corpus: Corpus,
    /// Start offsets of the training windows, in this epoch's order.
    order: Vec<usize>,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    step: usize,
    first_loss: Option<f32>,
    pub logs: Vec<StepLog>,
    pub evals: Vec<Eval>,
    dev: Device,
}

/// Window starts `0, t, 2t, ...` whose `t + 1` bytes fit in a stream of `n`.
fn windows(n: usize, t: usize) -> Vec<usize> {
    if n < t + 1 {
        return Vec::new();
    }
    (0..=(n - t - 1)).step_by(t).collect()
}

fn batch_tensors(
    stream: &[u32],
    starts: &[usize],
    t: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * t);
    let mut y = Vec::with_capacity(starts.len() * t);
    for &s in starts {
        x.extend_from_slice(&stream[s..s + t]);
        y.extend_from_slice(&stream[s + 1..s + t + 1]);
    }
    Ok((
        Tensor::from_vec(x, (starts.len(), t), dev)?,
        Tensor::from_vec(y, (starts.len(), t), dev)?,
    ))
}

impl Training {
    pub fn new(spec: TrainSpec, corpus: Corpus, dev: &Device) -> Result<Training> {
        let bad = |reason: String| {
            Error::from(modelbench_models::Error::Config {
                path: "training config".into(),
                family: spec.base.name().into(),
                reason,
            })
        };
        let cfg = spec.model_config();
        if spec.batch == 0 || spec.seq_len == 0 || spec.epochs == 0 || spec.val_every == 0 {
            return Err(bad(
                "batch, seq_len, epochs and val_every must be at least 1".into(),
            ));
        }
        let n_windows = windows(corpus.train.len(), spec.seq_len).len();
        let steps_per_epoch = n_windows / spec.batch;
        if steps_per_epoch == 0 {
            return Err(bad(format!(
                "the training split of {} ({} bytes) has {n_windows} windows of seq_len {} + 1, fewer than one batch of {}",
                corpus.path.display(),
                corpus.train.len(),
                spec.seq_len,
                spec.batch
            )));
        }
        if windows(corpus.val.len(), spec.seq_len).is_empty() {
            return Err(bad(format!(
                "the validation split of {} ({} bytes, every {VAL_EVERY_LINE}th line) is shorter than seq_len {} + 1",
                corpus.path.display(),
                corpus.val.len(),
                spec.seq_len
            )));
        }
        let mut total_steps = steps_per_epoch * spec.epochs;
        if let Some(m) = spec.max_steps {
            total_steps = total_steps.min(m.max(1));
        }
        let dtype = spec.dtype;
        let model = PsannLm::with_compute(cfg, spec.seed, dev, true, dtype)?;
        let tr = Trainer::new(
            model,
            TrainConfig {
                lr: spec.lr,
                weight_decay: spec.weight_decay,
                grad_clip: spec.grad_clip,
                grad_checkpoint: false,
            },
        )?;
        Ok(Training {
            spec,
            cfg,
            tr,
            corpus,
            order: Vec::new(),
            steps_per_epoch,
            total_steps,
            step: 0,
            first_loss: None,
            logs: Vec::new(),
            evals: Vec::new(),
            dev: dev.clone(),
        })
    }

    pub fn trainer_mut(&mut self) -> &mut Trainer {
        &mut self.tr
    }

    pub fn tokens_per_step(&self) -> u64 {
        (self.spec.batch * self.spec.seq_len) as u64
    }

    /// Mean CE (nats per byte), perplexity and top-1 accuracy over the validation windows
    /// (at most `val_batches` batches; all when 0), sum-reduced over tokens.
    pub fn evaluate(&self) -> Result<Eval> {
        let (b, t) = (self.spec.batch, self.spec.seq_len);
        let starts = windows(self.corpus.val.len(), t);
        let mut chunks: Vec<&[usize]> = starts.chunks(b).collect();
        if self.spec.val_batches > 0 {
            chunks.truncate(self.spec.val_batches);
        }
        let (mut nll, mut correct, mut n) = (0f64, 0f64, 0u64);
        for c in chunks {
            let (x, y) = batch_tensors(&self.corpus.val, c, t, &self.dev)?;
            let logits = self.tr.model.forward(&x)?.detach();
            let tokens = (c.len() * t) as u64;
            let l = crate::models::training::psann::train::loss(&logits, &y)?.to_scalar::<f32>()?;
            nll += l as f64 * tokens as f64;
            let hit = logits
                .argmax(D::Minus1)?
                .eq(&y)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            correct += hit as f64;
            n += tokens;
        }
        let val_loss = nll / n as f64;
        Ok(Eval {
            step: self.step,
            tokens_seen: self.step as u64 * self.tokens_per_step(),
            val_loss,
            val_ppl: val_loss.exp(),
            val_top1_acc: correct / n as f64,
            val_tokens: n,
        })
    }

    /// The run's metrics (the tiny-corpus baseline's metrics.json) from the record of its steps.
    pub fn metrics(&self, r: &Record) -> serde_json::Value {
        let last = self.evals.last();
        let timed: f64 = self.logs.iter().map(|l| l.step_s).sum();
        let tokens_seen = self.logs.len() as u64 * self.tokens_per_step();
        let window = self.spec.val_every.min(self.logs.len()).max(1);
        let tail = &self.logs[self.logs.len().saturating_sub(window)..];
        let train_loss = (!tail.is_empty())
            .then(|| tail.iter().map(|l| l.loss as f64).sum::<f64>() / tail.len() as f64);
        let epochs_done =
            tokens_seen as f64 / (self.steps_per_epoch as u64 * self.tokens_per_step()) as f64;
        let ppl = last.map(|e| e.val_ppl);
        let met = match ppl {
            Some(p) if epochs_done >= TARGET_EPOCHS - 1e-9 => Some(p <= TARGET_PPL),
            _ => None,
        };
        let first_div = self.logs.iter().find(|l| l.diverged).map(|l| l.step);
        serde_json::json!({
            "benchmark": "tiny-corpus baseline",
            "base": self.spec.base.name(),
            "seed": self.spec.seed,
            "train_loss": train_loss,
            "train_loss_window_steps": tail.len(),
            "val_loss": last.map(|e| e.val_loss),
            "perplexity": ppl,
            "val_ppl": ppl,
            "val_top1_acc": last.map(|e| e.val_top1_acc),
            "val_tokens": last.map(|e| e.val_tokens),
            "corpus_path": self.corpus.path.display().to_string(),
            "corpus_bytes": self.corpus.bytes,
            "train_tokens_per_epoch": self.corpus.train.len(),
            "val_tokens_total": self.corpus.val.len(),
            "tokenization": "bytes (vocab 256)",
            "tokens_seen": tokens_seen,
            "steps": self.logs.len(),
            "steps_per_epoch": self.steps_per_epoch,
            "epochs_completed": epochs_done,
            "timed_train_s": timed,
            "tokens_per_s": (timed > 0.0).then(|| tokens_seen as f64 / timed),
            "tokens_per_s_method": "tokens of all optimizer steps / the sum of their timed regions (forward, backward, clip, AdamW); batching and validation excluded",
            "params": self.cfg.param_count(),
            "diverged": first_div.is_some(),
            "diverged_at_step": first_div,
            "diverge_bound": format!("loss > first-step loss + {} nats", self.spec.diverge_margin),
            "host_heap_peak_bytes": r.memory.host_peak_bytes,
            "device_peak_bytes": r.memory.gpu_peak_bytes,
            "memory_method": if self.dev.is_cuda() { "device: high-water mark of candle's CUDA memory pool over the steps; host: counting allocator" } else { "host: peak live heap (counting allocator) over the steps, model, AdamW state and validation included; device: none (CPU)" },
            "target": {"val_ppl_max": TARGET_PPL, "after_epochs": TARGET_EPOCHS, "met": met,
                       "note": "met is null when fewer than 2 epochs ran (the target is not tested then)"},
        })
    }

    /// steps.csv: one row per optimizer step, validation columns filled where one ran.
    pub fn steps_csv(&self) -> String {
        let mut s = String::from(
            "step,epoch,lr,loss,grad_norm,diverged,step_s,tokens_seen,val_loss,val_ppl,val_top1_acc\n",
        );
        for l in &self.logs {
            let e = self.evals.iter().find(|e| e.step == l.step);
            let cell = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
            s.push_str(&format!(
                "{},{},{:.6e},{:.6},{:.6},{},{:.6},{},{},{},{}\n",
                l.step,
                l.epoch,
                l.lr,
                l.loss,
                l.grad_norm,
                l.diverged,
                l.step_s,
                l.tokens_seen,
                cell(e.map(|e| e.val_loss)),
                cell(e.map(|e| e.val_ppl)),
                cell(e.map(|e| e.val_top1_acc)),
            ));
        }
        s
    }

    /// The loss curve: train loss per step and validation loss at each evaluation.
    pub fn loss_curve_png(&self, path: &Path) -> Result<()> {
        let train: Vec<(f64, f64)> = self
            .logs
            .iter()
            .filter(|l| l.loss.is_finite())
            .map(|l| (l.step as f64, l.loss as f64))
            .collect();
        let val: Vec<(f64, f64)> = self
            .evals
            .iter()
            .map(|e| (e.step as f64, e.val_loss))
            .collect();
        crate::output::plot::trend_png(
            path,
            &format!(
                "{} d{} L{} on {} (bytes)",
                self.spec.base.name(),
                self.spec.d_model,
                self.spec.n_layers,
                self.corpus
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            ("optimizer step", "loss (nats per byte)"),
            &[
                ("train loss".into(), train),
                ("validation loss".into(), val),
            ],
        )
    }
}

impl Workload for Training {
    type Out = ();

    fn group(&self) -> String {
        "train".into()
    }

    fn name(&self) -> String {
        format!("{}/seed{}", self.spec.base.name(), self.spec.seed)
    }

    fn target(&self) -> Target {
        Target::new(self.spec.device, Precision::Float(self.spec.dtype))
    }

    fn tokens_per_iter(&self) -> u64 {
        self.tokens_per_step()
    }

    fn pool_device(&self) -> Option<&Device> {
        Some(&self.dev)
    }

    fn iterate(&mut self, _trial: u64) -> Result<(Duration, ())> {
        if self.step >= self.total_steps {
            return Err(Error::Report(format!(
                "training already ran its {} steps",
                self.total_steps
            )));
        }
        let (b, t) = (self.spec.batch, self.spec.seq_len);
        let epoch = self.step / self.steps_per_epoch;
        let in_epoch = self.step % self.steps_per_epoch;
        if in_epoch == 0 {
            self.order = windows(self.corpus.train.len(), t);
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.spec.seed ^ (epoch as u64 + 1));
            self.order.shuffle(&mut rng);
        }
        let starts = &self.order[in_epoch * b..(in_epoch + 1) * b];
        let (x, y) = batch_tensors(&self.corpus.train, starts, t, &self.dev)?;
        let n = self.step + 1;
        let lr = self.spec.lr_at(n, self.total_steps);
        self.tr.set_lr(lr);
        let tr = &mut self.tr;
        let (d, st) = time_region(&self.dev, || Ok(tr.step_checked(&x, &y)?))?;
        if let Some(tensor) = st.non_finite {
            return Err(Error::NonFinite { step: n, tensor });
        }
        let first = *self.first_loss.get_or_insert(st.loss);
        self.step = n;
        self.logs.push(StepLog {
            step: n,
            epoch: epoch + 1,
            lr,
            loss: st.loss,
            grad_norm: st.grad_norm,
            diverged: (st.loss as f64) > first as f64 + self.spec.diverge_margin,
            step_s: d.as_secs_f64(),
            tokens_seen: n as u64 * self.tokens_per_step(),
        });
        if n.is_multiple_of(self.spec.val_every) || n == self.total_steps {
            let e = self.evaluate()?;
            self.evals.push(e);
        }
        Ok((d, ()))
    }

    fn estimate(&mut self) -> Result<Duration> {
        self.iterate(u64::MAX).map(|(d, _)| d)
    }

    fn record(&self, m: &Measured<()>) -> Record {
        let scenario = format!("train/{}", self.spec.base.name());
        let mut r = Record::from_measured(Kind::PsannTrain, &scenario, m, self.tokens_per_step());
        r.memory.gpu_peak_bytes = m.device_peak_bytes;
        let cfg = &self.cfg;
        r.model.label = self.spec.base.name().into();
        r.model.family = "psann".into();
        r.model.params = Some(cfg.param_count());
        r.model.weight_bytes = Some(cfg.param_count() * 4);
        r.model.layers = Some(cfg.n_layers);
        r.model.hidden = Some(cfg.d_model);
        r.model.vocab = Some(cfg.vocab);
        r.model.tokenizer = "bytes".into();
        r.seed = Some(self.spec.seed);
        r.prompt_tokens = Some(self.spec.seq_len);
        r.shape = serde_json::json!({"B": self.spec.batch, "T": self.spec.seq_len,
            "d_model": cfg.d_model, "n_layers": cfg.n_layers, "steps": self.logs.len()});
        r.extra = serde_json::json!({
            "procedure": "training run: one optimizer step per sample (forward, mean CE, backward, clip, AdamW with warm-up + cosine lr)",
            "metrics": self.metrics(&r),
            "spec": self.spec,
        });
        r
    }
}

/// Runs a whole training: `total_steps` optimizer steps through the trial loop (no warm-up:
/// every step counts), calling `progress(step, training)` after each.
pub fn run(w: &mut Training, progress: &mut dyn FnMut(&Training)) -> Result<Record> {
    let steps = w.total_steps;
    let mut l: crate::workloads::TrialLoop<()> =
        crate::workloads::TrialLoop::new().on_device(w.pool_device());
    for _ in 0..steps {
        let before = w.step;
        l.call(1, &mut |trial| w.iterate(trial));
        if w.step == before {
            break; // the step failed: finish() returns its error
        }
        progress(w);
    }
    let m = l
        .finish(steps, w.tokens_per_iter())?
        .expect("every step ran");
    let mut r = w.record(&m);
    super::stamp(w, &mut r, crate::output::record::Harness::Cli);
    Ok(r)
}

/// One row of the base shootout.
#[derive(Debug, Clone, Serialize)]
pub struct ShootoutRow {
    pub base: String,
    pub seed: u64,
    pub val_loss: Option<f64>,
    pub val_ppl: Option<f64>,
    pub val_top1_acc: Option<f64>,
    pub train_tokens_per_s: Option<f64>,
    pub peak_mem_bytes: Option<u64>,
    /// What `peak_mem_bytes` is: "host heap" (CPU) or "device pool" (CUDA).
    pub peak_mem_kind: String,
    pub params: u64,
    pub steps: usize,
    pub tokens_seen: u64,
    pub diverged: bool,
}

impl ShootoutRow {
    pub fn from_metrics(m: &serde_json::Value, cuda: bool) -> ShootoutRow {
        let f = |k: &str| m[k].as_f64();
        let (peak, kind) = if cuda {
            (m["device_peak_bytes"].as_u64(), "device pool")
        } else {
            (m["host_heap_peak_bytes"].as_u64(), "host heap")
        };
        ShootoutRow {
            base: m["base"].as_str().unwrap_or_default().into(),
            seed: m["seed"].as_u64().unwrap_or_default(),
            val_loss: f("val_loss"),
            val_ppl: f("val_ppl"),
            val_top1_acc: f("val_top1_acc"),
            train_tokens_per_s: f("tokens_per_s"),
            peak_mem_bytes: peak,
            peak_mem_kind: kind.into(),
            params: m["params"].as_u64().unwrap_or_default(),
            steps: m["steps"].as_u64().unwrap_or_default() as usize,
            tokens_seen: m["tokens_seen"].as_u64().unwrap_or_default(),
            diverged: m["diverged"].as_bool().unwrap_or_default(),
        }
    }
}

fn na(v: Option<f64>, prec: usize) -> String {
    v.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "n/a".into())
}

/// A shootout row's measured columns (val_loss, val_ppl, val_top1_acc, train tok/s, peak
/// MiB) with these decimals, `missing` where one was not measured.
fn measured(r: &ShootoutRow, decimals: [usize; 5], missing: &str) -> [String; 5] {
    let values = [
        r.val_loss,
        r.val_ppl,
        r.val_top1_acc,
        r.train_tokens_per_s,
        r.peak_mem_bytes.map(|b| b as f64 / 1048576.0),
    ];
    std::array::from_fn(|i| {
        let prec = decimals[i];
        values[i]
            .map(|v| format!("{v:.prec$}"))
            .unwrap_or_else(|| missing.into())
    })
}

/// summary.csv of the shootout rows (unmeasured cells empty).
pub fn shootout_csv(rows: &[ShootoutRow]) -> String {
    let mut s = String::from("base,seed,val_loss,val_ppl,val_top1_acc,train_tokens_per_s,peak_mem_mib,peak_mem_kind,params,steps,tokens_seen,diverged\n");
    for r in rows {
        let m = measured(r, [5, 4, 5, 1, 1], "").join(",");
        s.push_str(&format!(
            "{},{},{m},{},{},{},{},{}\n",
            r.base, r.seed, r.peak_mem_kind, r.params, r.steps, r.tokens_seen, r.diverged
        ));
    }
    s
}

/// leaderboard.md: runs sorted by validation perplexity (lowest first), then the mean per base.
pub fn leaderboard_md(rows: &[ShootoutRow], budget: &str) -> String {
    let mut sorted: Vec<&ShootoutRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        a.val_ppl
            .unwrap_or(f64::INFINITY)
            .total_cmp(&b.val_ppl.unwrap_or(f64::INFINITY))
    });
    let mut s = format!("# Base shootout\n\n{budget}\n\n| rank | base | seed | val_loss | val_ppl | val_top1_acc | train tok/s | peak memory (MiB) | params |\n|---|---|---|---|---|---|---|---|---|\n");
    for (i, r) in sorted.iter().enumerate() {
        let [loss, ppl, top1, tps, peak] = measured(r, [4, 3, 4, 0, 1], "n/a");
        s.push_str(&format!(
            "| {} | {} | {} | {loss} | {ppl} | {top1} | {tps} | {peak} ({}) | {} |\n",
            i + 1,
            r.base,
            r.seed,
            r.peak_mem_kind,
            r.params
        ));
    }
    s.push_str("\n## Mean over seeds\n\n| base | runs | val_ppl | val_top1_acc | train tok/s |\n|---|---|---|---|---|\n");
    let mut bases: Vec<&str> = rows.iter().map(|r| r.base.as_str()).collect();
    bases.dedup();
    bases.sort();
    bases.dedup();
    for b in bases {
        let rs: Vec<&ShootoutRow> = rows.iter().filter(|r| r.base == b).collect();
        let mean = |f: &dyn Fn(&ShootoutRow) -> Option<f64>| {
            let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            (v.len() == rs.len() && !v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        s.push_str(&format!(
            "| {b} | {} | {} | {} | {} |\n",
            rs.len(),
            na(mean(&|r| r.val_ppl), 3),
            na(mean(&|r| r.val_top1_acc), 4),
            na(mean(&|r| r.train_tokens_per_s), 0)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_by_line_every_fiftieth() {
        let text: String = (0..100).map(|i| format!("l{i}\n")).collect();
        let c = Corpus::from_text(Path::new("x"), &text);
        assert_eq!(c.lines, 100);
        let val = String::from_utf8(c.val.iter().map(|&b| b as u8).collect()).unwrap();
        assert_eq!(val, "l49\nl99\n");
        assert_eq!(c.train.len() + c.val.len(), text.len());
    }

    #[test]
    fn windows_are_non_overlapping_and_fit() {
        assert_eq!(windows(10, 3), vec![0, 3, 6]);
        assert_eq!(windows(9, 3), vec![0, 3]);
        assert!(windows(3, 3).is_empty());
    }

    #[test]
    fn shootout_tables_show_unmeasured_cells_as_empty_or_na() {
        let row = |base: &str, ppl: Option<f64>| ShootoutRow {
            base: base.into(),
            seed: 7,
            val_loss: Some(2.345678),
            val_ppl: ppl,
            val_top1_acc: Some(0.123456),
            train_tokens_per_s: Some(1234.56),
            peak_mem_bytes: Some(3 * 1048576 / 2),
            peak_mem_kind: "host heap".into(),
            params: 1000,
            steps: 10,
            tokens_seen: 640,
            diverged: false,
        };
        let rows = [row("waveresnet", Some(10.4567)), row("respsann", None)];
        let csv = shootout_csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[1],
            "waveresnet,7,2.34568,10.4567,0.12346,1234.6,1.5,host heap,1000,10,640,false"
        );
        assert_eq!(
            lines[2],
            "respsann,7,2.34568,,0.12346,1234.6,1.5,host heap,1000,10,640,false"
        );
        let md = leaderboard_md(&rows, "budget");
        assert!(
            md.contains(
                "| 1 | waveresnet | 7 | 2.3457 | 10.457 | 0.1235 | 1235 | 1.5 (host heap) | 1000 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| 2 | respsann | 7 | 2.3457 | n/a | 0.1235 | 1235 | 1.5 (host heap) | 1000 |"
            ),
            "{md}"
        );
    }
}
