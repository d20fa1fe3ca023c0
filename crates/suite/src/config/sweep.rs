//! The architecture sweep's plan (`modelbench sweep`): a queue config file
//! (configs/benchmarks/*.yaml: flat `key: value` lines, `#` comments, no nesting) under the
//! command's flags, validated into a [`SweepPlan`]; and the criterion group's [`ArchPlan`]
//! from the knobs (MODELBENCH_ARCH_*).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::DType;

use super::knobs;
use super::plans::from_validated_env;
use super::values::{parse_accelerator, parse_dtype_knob, parse_families, parse_list};
use crate::error::{Error, Result};
use crate::measure::device::DeviceSpec;
use crate::models::training::backbone::{BackboneConfig, Family};
use crate::workloads::arch::PointSpec;

/// Keys a queue config may set, with what they mean (README lists them).
pub const KEYS: &[(&str, &str)] = &[
    ("queue", "the run's label in the telemetry table and the parquet `queue` column"),
    ("accelerator", "`cpu` or `gpu` (CUDA device 0; needs a `--features cuda` build)"),
    ("dtype", "f32, f16 or bf16 (parameters, activations and AdamW state); default f32 on cpu, bf16 on gpu"),
    ("architectures", "comma list of dense, mixture (omni_mixture), state_space, hybrid (hybrid_transformer)"),
    ("model_dims", "comma list of model widths"),
    ("depths", "comma list of layer counts"),
    ("horizons", "comma list of future tokens predicted per position"),
    ("batch", "sequences per step"),
    ("seq_len", "tokens per sequence"),
    ("vocab", "vocabulary size (random token ids)"),
    ("warmup", "untimed steps per mode before the timed ones (at least 1)"),
    ("trials", "timed steps per mode"),
    ("seed", "weights and token ids"),
    ("experts", "mixture: experts per layer"),
    ("top_k", "mixture: experts per token"),
    ("d_state", "state_space / hybrid: state size per channel"),
    ("expand", "state_space / hybrid: d_inner = expand x model dim"),
    ("attention_every", "hybrid: one attention layer in this many (1 : attention_every - 1)"),
];

/// A validated sweep: what runs where, and the grid.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub queue: String,
    /// `cpu` or `gpu`, as asked, and where that came from (a flag, `file:line key`).
    pub accelerator: String,
    pub accelerator_from: String,
    pub device: DeviceSpec,
    pub dtype: DType,
    pub families: Vec<Family>,
    pub dims: Vec<usize>,
    pub depths: Vec<usize>,
    pub horizons: Vec<usize>,
    pub batch: usize,
    pub seq_len: usize,
    pub vocab: usize,
    pub warmup: usize,
    pub trials: usize,
    pub seed: u64,
    pub experts: usize,
    pub top_k: usize,
    pub d_state: usize,
    pub expand: usize,
    pub attention_every: usize,
}

/// The command's flags: each one set replaces the config's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub architectures: Option<String>,
    pub model_dims: Option<String>,
    pub depths: Option<String>,
    pub horizons: Option<String>,
    pub accelerator: Option<String>,
}

/// Reads `key: value` lines; an unknown key, a duplicate or a line that is not `key: value` is
/// a one-line error naming the file and line.
pub fn parse_queue_file(path: &Path, text: &str) -> Result<BTreeMap<String, (usize, String)>> {
    let bad = |line: usize, reason: String| {
        Error::from(modelbench_models::Error::Config {
            path: format!("{}:{line}", path.display()),
            family: "architecture sweep".into(),
            reason,
        })
    };
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim_end();
        if line.trim().is_empty() || line.trim() == "---" {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            return Err(bad(
                n,
                "nested values are not supported: use flat `key: value` lines".into(),
            ));
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(bad(n, format!("expected `key: value`, got {line:?}")));
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"').trim_matches('\''));
        if !KEYS.iter().any(|(key, _)| *key == k) {
            let allowed: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(bad(
                n,
                format!("unknown key {k:?} (allowed: {})", allowed.join(", ")),
            ));
        }
        let v = v.trim_start_matches('[').trim_end_matches(']').to_string();
        if v.is_empty() {
            return Err(bad(n, format!("{k}: empty value")));
        }
        if out.insert(k.to_string(), (n, v)).is_some() {
            return Err(bad(n, format!("{k} is set twice")));
        }
    }
    Ok(out)
}

impl SweepPlan {
    /// The config file (if any) under the flags. Defaults: the baseline-cpu queue's settings.
    pub fn resolve(config: Option<&Path>, o: &Overrides) -> Result<SweepPlan> {
        let kv = match config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(Error::io(p))?;
                parse_queue_file(p, &text)?
            }
            None => BTreeMap::new(),
        };
        let src = config.map(|p| p.display().to_string()).unwrap_or_default();
        // Where a value came from, for error messages: the flag, or `file:line key`.
        let pick = |key: &str,
                    flag: Option<&String>,
                    flag_name: &str,
                    default: &str|
         -> (String, String) {
            match (flag, kv.get(key)) {
                (Some(f), _) => (f.clone(), flag_name.to_string()),
                (None, Some((line, v))) => (v.clone(), format!("{src}:{line} {key}")),
                (None, None) => (default.to_string(), format!("default {key}")),
            }
        };
        let num = |key: &str, default: usize| -> Result<usize> {
            let (v, from) = pick(key, None, "", &default.to_string());
            let n = parse_list(&from, &v)?;
            if n.len() != 1 {
                return Err(Error::knob(
                    from,
                    v,
                    "one value expected",
                    "a positive integer",
                ));
            }
            Ok(n[0])
        };
        let (acc, acc_from) = pick(
            "accelerator",
            o.accelerator.as_ref(),
            "--accelerator",
            "cpu",
        );
        let device = parse_accelerator(&acc, &acc_from)?;
        let dtype = match kv.get("dtype") {
            Some((line, v)) => parse_dtype_knob(v, &format!("{src}:{line} dtype"))?,
            None => device.default_dtype(),
        };
        let (v, from) = pick(
            "architectures",
            o.architectures.as_ref(),
            "--architectures",
            "state_space",
        );
        let families = parse_families(&v, &from)?;
        let list = |key: &str, flag: Option<&String>, flag_name: &str, d: &str| {
            let (v, from) = pick(key, flag, flag_name, d);
            parse_list(&from, &v)
        };
        let dims = list("model_dims", o.model_dims.as_ref(), "--model-dims", "256")?;
        let depths = list("depths", o.depths.as_ref(), "--depths", "6")?;
        let horizons = list("horizons", o.horizons.as_ref(), "--horizons", "5")?;
        let (wv, wfrom) = pick("warmup", None, "", "1");
        let warmup = wv.parse::<usize>().map_err(|_| {
            Error::knob(
                wfrom,
                wv.clone(),
                "not a non-negative integer",
                "0, 1, 2, ...",
            )
        })?;
        let plan = SweepPlan {
            queue: kv
                .get("queue")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "sweep".into()),
            accelerator: acc,
            accelerator_from: acc_from,
            device,
            dtype,
            families,
            dims,
            depths,
            horizons,
            batch: num("batch", 4)?,
            seq_len: num("seq_len", 64)?,
            vocab: num("vocab", 256)?,
            warmup,
            trials: num("trials", 5)?,
            seed: num("seed", 42)? as u64,
            experts: num("experts", 8)?,
            top_k: num("top_k", 2)?,
            d_state: num("d_state", 16)?,
            expand: num("expand", 2)?,
            attention_every: num("attention_every", 4)?,
        };
        for c in plan.configs() {
            c.validate().map_err(|e| {
                Error::from(modelbench_models::Error::Config {
                    path: if src.is_empty() {
                        "modelbench sweep".into()
                    } else {
                        src.clone()
                    },
                    family: c.family.name().into(),
                    reason: format!("d{} L{} h{}: {e}", c.d_model, c.depth, c.horizons),
                })
            })?;
        }
        Ok(plan)
    }

    /// The grid, families outermost, then dims, depths and horizons.
    pub fn configs(&self) -> Vec<BackboneConfig> {
        let mut out = Vec::new();
        for &f in &self.families {
            for &d in &self.dims {
                for &l in &self.depths {
                    for &h in &self.horizons {
                        let mut c = BackboneConfig::new(f, self.vocab, d, l, h);
                        c.experts = self.experts;
                        c.top_k = self.top_k;
                        c.d_state = self.d_state;
                        c.expand = self.expand;
                        c.attention_every = self.attention_every;
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    pub fn point(&self) -> PointSpec {
        PointSpec {
            queue: self.queue.clone(),
            accelerator: self.accelerator.clone(),
            batch: self.batch,
            seq_len: self.seq_len,
            warmup: self.warmup,
            trials: self.trials,
            seed: self.seed,
            device: self.device,
            dtype: self.dtype,
        }
    }
}

/// The criterion group `arch_sweep`: families x dims x depths at 2 horizons, B 2 x T 32,
/// vocab 256, a forward and a train step each.
#[derive(Debug, Clone)]
pub struct ArchPlan {
    pub families: Vec<Family>,
    pub dims: Vec<usize>,
    pub depths: Vec<usize>,
    pub common: super::plans::Common,
}

impl ArchPlan {
    pub const HORIZONS: usize = 2;
    pub const BATCH: usize = 2;
    pub const SEQ: usize = 32;
    pub const VOCAB: usize = 256;

    pub fn from_env() -> Result<ArchPlan> {
        from_validated_env(ArchPlan::from_lookup)
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<ArchPlan> {
        let common = super::plans::Common::from_lookup(lookup)?;
        let value = |k: &str| knobs::value(lookup, k);
        let families = parse_families(
            &value("MODELBENCH_ARCH_FAMILIES"),
            "MODELBENCH_ARCH_FAMILIES",
        )?;
        let list = |k: &str| parse_list(k, &value(k));
        let dims = list("MODELBENCH_ARCH_DIMS")?;
        let depths = list("MODELBENCH_ARCH_DEPTHS")?;
        for &f in &families {
            for &d in &dims {
                let c = BackboneConfig::new(f, Self::VOCAB, d, depths[0], Self::HORIZONS);
                c.validate().map_err(|e| {
                    Error::knob(
                        "MODELBENCH_ARCH_DIMS",
                        d.to_string(),
                        e,
                        "even multiples of the head count (64 per head above 64)",
                    )
                })?;
            }
        }
        Ok(ArchPlan {
            families,
            dims,
            depths,
            common,
        })
    }

    pub fn configs(&self) -> Vec<BackboneConfig> {
        let mut out = Vec::new();
        for &f in &self.families {
            for &d in &self.dims {
                for &l in &self.depths {
                    out.push(BackboneConfig::new(f, Self::VOCAB, d, l, Self::HORIZONS));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_name_their_source() {
        let dir = std::env::temp_dir().join(format!("mb-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("q.yaml");
        std::fs::write(&p, "# q\nqueue: baseline-cpu\naccelerator: cpu\nmodel_dims: 128\ndepths: [2, 3]\nbatch: 2\n").unwrap();
        let o = Overrides {
            model_dims: Some("64".into()),
            ..Overrides::default()
        };
        let plan = SweepPlan::resolve(Some(&p), &o).unwrap();
        assert_eq!(plan.dims, vec![64]);
        assert_eq!(plan.depths, vec![2, 3]);
        assert_eq!(plan.batch, 2);
        assert_eq!(plan.queue, "baseline-cpu");
        assert_eq!(plan.configs().len(), 2);
        std::fs::write(&p, "batch: 0\n").unwrap();
        let e = SweepPlan::resolve(Some(&p), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("q.yaml:1 batch"), "{e}");
        std::fs::write(&p, "epochs: 3\n").unwrap();
        let e = SweepPlan::resolve(Some(&p), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key \"epochs\""), "{e}");
        let o = Overrides {
            architectures: Some("rnn".into()),
            ..Overrides::default()
        };
        let e = SweepPlan::resolve(None, &o).unwrap_err().to_string();
        assert!(e.contains("--architectures") && e.contains("rnn"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
