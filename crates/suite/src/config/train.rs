//! Training config files (`modelbench train --config FILE`): a flat TOML subset, one
//! `key = value` per line (strings in double quotes, integers, floats, booleans), `#` comments,
//! no tables. Every key is optional except none; an unknown key, a duplicate or a bad value is
//! a one-line error naming the file, the line and the key. [`to_toml`] writes the resolved
//! config back (config_used.toml).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::measure::device::{parse_dtype, DeviceSpec};
use crate::models::training::psann::Base;
use crate::workloads::train::TrainSpec;

/// Keys a config may set, with what they mean (README lists them).
pub const KEYS: &[(&str, &str)] = &[
    (
        "corpus",
        "text file (one document per line); default target/corpus/kjv.txt",
    ),
    ("base", "respsann, sgrpsann or waveresnet"),
    ("d_model", "model width"),
    ("n_layers", "blocks"),
    ("n_heads", "attention heads (d_model / n_heads even)"),
    ("d_mlp", "MLP width (default 4 d_model)"),
    ("seq_len", "tokens (bytes) per sequence"),
    ("batch", "sequences per optimizer step"),
    ("epochs", "passes over the training split"),
    (
        "max_steps",
        "stop after this many optimizer steps (0: no cap)",
    ),
    ("lr", "peak learning rate"),
    ("warmup_steps", "linear warm-up steps, then cosine to 0"),
    ("weight_decay", "AdamW weight decay (every parameter)"),
    ("grad_clip", "global gradient-norm clip"),
    ("seed", "model init and batch order"),
    (
        "val_every",
        "validate every this many steps (and after the last)",
    ),
    (
        "val_batches",
        "validation batches per evaluation (0: the whole split)",
    ),
    (
        "diverge_margin",
        "flag a step diverged when loss > first loss + this (nats)",
    ),
    ("device", "cpu or cuda[:N]"),
    (
        "dtype",
        "f32, f16 or bf16 (matmul precision; parameters stay f32)",
    ),
];

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(String),
    Bool(bool),
}

fn parse_flat(path: &Path, text: &str) -> Result<BTreeMap<String, (usize, Val)>> {
    let bad = |line: usize, reason: String| {
        Error::from(modelbench_models::Error::Config {
            path: format!("{}:{line}", path.display()),
            family: "training".into(),
            reason,
        })
    };
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            return Err(bad(
                n,
                "tables are not supported: use flat `key = value` lines".into(),
            ));
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad(n, format!("expected `key = value`, got {line:?}")));
        };
        let (k, v) = (k.trim(), v.trim());
        if !KEYS.iter().any(|(key, _)| *key == k) {
            let allowed: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(bad(
                n,
                format!("unknown key {k:?} (allowed: {})", allowed.join(", ")),
            ));
        }
        let val = if let Some(s) = v.strip_prefix('"') {
            let Some(s) = s.strip_suffix('"') else {
                return Err(bad(n, format!("{k}: unterminated string {v:?}")));
            };
            Val::Str(s.to_string())
        } else if v == "true" || v == "false" {
            Val::Bool(v == "true")
        } else if !v.is_empty() && v.parse::<f64>().is_ok() {
            Val::Num(v.replace('_', ""))
        } else {
            return Err(bad(
                n,
                format!("{k}: {v:?} is not a string, number or boolean"),
            ));
        };
        if out.insert(k.to_string(), (n, val)).is_some() {
            return Err(bad(n, format!("{k} is set twice")));
        }
    }
    Ok(out)
}

fn strip_comment(l: &str) -> &str {
    let mut in_str = false;
    for (i, c) in l.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &l[..i],
            _ => {}
        }
    }
    l
}

/// The defaults of a key a config leaves out: the spec's trainer settings (lr 2e-4, warm-up
/// 2000, weight decay 0.01, clip 1.0, 2 epochs, seed 1337) on a small byte-level waveresnet.
pub fn default_spec() -> TrainSpec {
    TrainSpec {
        corpus: PathBuf::from("target/corpus/kjv.txt"),
        base: Base::Waveresnet,
        d_model: 128,
        n_layers: 2,
        n_heads: 4,
        d_mlp: 512,
        seq_len: 128,
        batch: 16,
        epochs: 2,
        max_steps: None,
        lr: 2e-4,
        warmup_steps: 2000,
        weight_decay: 0.01,
        grad_clip: 1.0,
        seed: 1337,
        val_every: 50,
        val_batches: 0,
        diverge_margin: 1.0,
        device: DeviceSpec::Cpu,
        dtype: candle_core::DType::F32,
    }
}

/// Reads a config file over [`default_spec`]; a relative `corpus` is taken from the current
/// directory.
pub fn load(path: &Path) -> Result<TrainSpec> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<TrainSpec> {
    let kv = parse_flat(path, text)?;
    let mut s = default_spec();
    let mut dtype_set = false;
    for (k, (line, v)) in &kv {
        let bad = |reason: String| {
            Error::from(modelbench_models::Error::Config {
                path: format!("{}:{line}", path.display()),
                family: "training".into(),
                reason: format!("{k}: {reason}"),
            })
        };
        let num = || match v {
            Val::Num(n) => Ok(n.as_str()),
            _ => Err(bad("expected a number".into())),
        };
        let uint = || {
            num()?
                .parse::<usize>()
                .map_err(|_| bad("expected a non-negative integer".into()))
        };
        let float = || {
            let f: f64 = num()?
                .parse()
                .map_err(|_| bad("expected a number".into()))?;
            if f.is_finite() && f >= 0.0 {
                Ok(f)
            } else {
                Err(bad("expected a finite number >= 0".into()))
            }
        };
        let string = || match v {
            Val::Str(s) => Ok(s.clone()),
            _ => Err(bad("expected a string in double quotes".into())),
        };
        match k.as_str() {
            "corpus" => s.corpus = PathBuf::from(string()?),
            "base" => {
                let b = string()?;
                s.base = Base::parse(&b)
                    .ok_or_else(|| bad(format!("{b:?} (allowed: {})", Base::ALLOWED)))?;
            }
            "d_model" => s.d_model = uint()?,
            "n_layers" => s.n_layers = uint()?,
            "n_heads" => s.n_heads = uint()?,
            "d_mlp" => s.d_mlp = uint()?,
            "seq_len" => s.seq_len = uint()?,
            "batch" => s.batch = uint()?,
            "epochs" => s.epochs = uint()?,
            "max_steps" => s.max_steps = Some(uint()?).filter(|&m| m > 0),
            "lr" => s.lr = float()?,
            "warmup_steps" => s.warmup_steps = uint()?,
            "weight_decay" => s.weight_decay = float()?,
            "grad_clip" => s.grad_clip = float()?,
            "seed" => s.seed = uint()? as u64,
            "val_every" => s.val_every = uint()?,
            "val_batches" => s.val_batches = uint()?,
            "diverge_margin" => s.diverge_margin = float()?,
            "device" => {
                let d = string()?;
                s.device = d
                    .parse()
                    .map_err(|e: String| bad(format!("{e} (allowed: {})", DeviceSpec::ALLOWED)))?;
            }
            "dtype" => {
                let d = string()?;
                s.dtype =
                    parse_dtype(&d).map_err(|e| bad(format!("{e} (allowed: f32, f16, bf16)")))?;
                dtype_set = true;
            }
            _ => unreachable!("parse_flat admits only KEYS"),
        }
    }
    if !kv.contains_key("d_mlp") {
        s.d_mlp = 4 * s.d_model;
    }
    if !dtype_set {
        s.dtype = s.device.default_dtype();
    }
    s.model_config().validate().map_err(|e| {
        Error::from(modelbench_models::Error::Config {
            path: path.display().to_string(),
            family: "training".into(),
            reason: e,
        })
    })?;
    Ok(s)
}

/// The resolved config as a file [`parse`] reads back to the same spec.
pub fn to_toml(s: &TrainSpec) -> String {
    format!(
        "# config_used.toml: the resolved training config (modelbench train)\n\
         corpus = {:?}\nbase = \"{}\"\nd_model = {}\nn_layers = {}\nn_heads = {}\nd_mlp = {}\n\
         seq_len = {}\nbatch = {}\nepochs = {}\nmax_steps = {}\nlr = {:e}\nwarmup_steps = {}\n\
         weight_decay = {}\ngrad_clip = {}\nseed = {}\nval_every = {}\nval_batches = {}\n\
         diverge_margin = {}\ndevice = \"{}\"\ndtype = \"{}\"\n",
        s.corpus.display().to_string(),
        s.base.name(),
        s.d_model,
        s.n_layers,
        s.n_heads,
        s.d_mlp,
        s.seq_len,
        s.batch,
        s.epochs,
        s.max_steps.unwrap_or(0),
        s.lr,
        s.warmup_steps,
        s.weight_decay,
        s.grad_clip,
        s.seed,
        s.val_every,
        s.val_batches,
        s.diverge_margin,
        s.device,
        s.dtype.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_warms_up_linearly_then_decays_by_cosine_to_zero() {
        let mut s = default_spec();
        s.lr = 1.0;
        s.warmup_steps = 10;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(s.lr_at(5, 110), 0.5));
        assert!(close(s.lr_at(10, 110), 1.0));
        assert!(close(s.lr_at(60, 110), 0.5)); // half-way through the cosine
        assert!(close(s.lr_at(110, 110), 0.0));
        assert!(close(s.lr_at(8, 5), 0.8)); // total <= warm-up: never leaves warm-up
    }

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let p = Path::new("c.toml");
        let s = parse(
            p,
            "base = \"sgrpsann\" # comment\nd_model = 64\nlr = 1e-3\nmax_steps = 7\n",
        )
        .unwrap();
        assert_eq!(s.base, Base::Sgrpsann);
        assert_eq!((s.d_model, s.d_mlp, s.max_steps), (64, 256, Some(7)));
        let back = parse(p, &to_toml(&s)).unwrap();
        assert_eq!(to_toml(&back), to_toml(&s));
        let e = parse(p, "\n\nbogus = 1\n").unwrap_err().to_string();
        assert!(
            e.contains("c.toml:3") && e.contains("unknown key \"bogus\""),
            "{e}"
        );
        let e = parse(p, "base = \"gpt\"\n").unwrap_err().to_string();
        assert!(e.contains("base") && e.contains("respsann"), "{e}");
        assert!(parse(p, "d_model = -3\n").is_err());
        assert!(parse(p, "d_model = 30\nn_heads = 4\n").is_err());
    }
}
