//! What a model computed (issue 59): what a record keeps of its outputs, and how far two
//! probes are apart ([`diff`]). The output verdict made from them (whether two runs computed
//! the same thing) is the judge's: `judge::outputs`, which the trial loop's records,
//! `compare`, the `cargo bench` summary, the site and the server all call.
//!
//! Two things are kept of each run:
//!
//! - **The generated ids** of every trial ([`Ids`]): a hash per trial (trials are numbered from
//!   0 and their prompts and samplers are a function of `(seed, trial)`, so trial `k` of two
//!   runs must produce the same ids when the model computes the same thing) and the first
//!   [`FIRST_IDS`] ids of the first trial, to show where two runs part.
//! - **A probe** ([`Probe`]): the model's log-probabilities over fixed positions of a held-out
//!   text, taken by the engine's own forward path (the performance run's code, MLPerf's rule),
//!   kept as each position's top [`PROBE_TOP_K`] ids with their log-probabilities (the rest of
//!   the mass is 1 minus their sum), plus the sha256 of every logit in f32 (bit identity), plus
//!   the model's own numerical noise: the same probe taken under a legitimate perturbation of
//!   the same build (the prompt prefilled as single-token steps instead of one forward call), as
//!   [`Noise`].
//!
//! The KL divergence between two stored probes is taken over the ids both kept at a position
//! plus one bucket for all the rest (a coarse-graining of the full distributions, so it never
//! exceeds the full-vocabulary KLD); the noise is measured with the same estimator on the same
//! kept form, so limit and measurement are like for like.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Ids of the first trial a record keeps in full.
pub const FIRST_IDS: usize = 64;

/// Trials whose ids a record keeps (criterion may run thousands of a fast benchmark).
pub const MAX_TRIALS: usize = 256;

/// Ids per probe position kept with their log-probabilities.
pub const PROBE_TOP_K: usize = 32;

/// The generated ids of a record's trials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    /// sha256 (first 16 hex digits) of each trial's ids as little-endian u32s, trial 0 first.
    pub trials: Vec<String>,
    /// The first [`FIRST_IDS`] ids of trial 0.
    pub first: Vec<u32>,
}

impl Ids {
    /// Adds trial `trial`'s ids; trials must come in order from 0 (a gap or a repeat is kept
    /// out, so the list always means "trial k at index k").
    pub fn push(&mut self, trial: u64, ids: &[u32]) {
        if trial as usize != self.trials.len() || self.trials.len() >= MAX_TRIALS {
            return;
        }
        if trial == 0 {
            self.first = ids.iter().take(FIRST_IDS).copied().collect();
        }
        self.trials.push(hash_ids(ids));
    }

    /// Adds a trial known only by a hash of its text (a server that returns text, not ids:
    /// [`hash_text`]); in order from 0 like [`Ids::push`]. `first` stays empty.
    pub fn push_text_hash(&mut self, trial: u64, hash: String) {
        if trial as usize != self.trials.len() || self.trials.len() >= MAX_TRIALS {
            return;
        }
        self.trials.push(hash);
    }
}

/// sha256 of a generated text (UTF-8), first 16 hex digits: what a record keeps of a trial
/// whose server returns text only.
pub fn hash_text(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// sha256 of ids as little-endian u32s, first 16 hex digits.
pub fn hash_ids(ids: &[u32]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    hex16(&h.finalize())
}

fn hex16(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// One probe position: the top ids and their log-probabilities, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
}

impl Position {
    /// The kept form of one position's logits (any scale; log-softmax taken here in f64).
    pub fn of_logits(logits: &[f32], k: usize) -> Position {
        let max = logits
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + logits
                .iter()
                .map(|&x| ((x as f64) - max).exp())
                .sum::<f64>()
                .ln();
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = k.min(logits.len());
        idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        idx.truncate(k);
        idx.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        Position {
            logprobs: idx
                .iter()
                .map(|&i| ((logits[i as usize] as f64) - lse) as f32)
                .collect(),
            ids: idx,
        }
    }

    fn top1(&self) -> Option<u32> {
        self.ids.first().copied()
    }
}

/// The model's own numerical noise: the probe against itself under a legitimate perturbation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// What was perturbed, e.g. `prefill as single-token steps`.
    pub perturbation: String,
    /// Whether the perturbed logits were bit-identical (then every limit is 0).
    pub identical: bool,
    pub mean_kld: f64,
    pub max_kld: f64,
    /// Share of positions whose top-1 id stayed.
    pub top1: f64,
    /// Perturbations that could not be taken, each with why (e.g. the thread count, where
    /// no second process could be started): the limits above are without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_measured: Vec<String>,
    /// Each perturbation's own figures where these limits join several ([`Noise::and`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Noise>,
}

/// A model's log-probabilities over fixed positions of a held-out text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The text and how it was cut, e.g. `fixtures/corpus/kjv-ruth-1-4.txt sha256 ab12..., 2 x 64 ids`.
    pub text: String,
    /// sha256 (16 hex) of every probe position's full logits in f32, in order: bit identity.
    pub logits_sha256: String,
    pub positions: Vec<Position>,
    pub noise: Option<Noise>,
    /// Seconds the probe took, the noise probe included (its cost against the run's).
    pub seconds: f64,
}

/// Hashes full logit vectors (f32, little-endian) in order.
#[derive(Default)]
pub struct LogitsHash(Sha256);

impl LogitsHash {
    pub fn update(&mut self, logits: &[f32]) {
        for x in logits {
            self.0.update(x.to_le_bytes());
        }
    }
    pub fn finish(self) -> String {
        hex16(&self.0.finalize())
    }
}

/// The difference between two probes of the same positions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeDiff {
    pub mean_kld: f64,
    pub max_kld: f64,
    pub top1: f64,
    /// The first position whose top-1 differs, with base's margin there (its top-1 minus its
    /// second log-probability: how near a tie it was).
    pub first_top1_change: Option<(usize, f64)>,
}

/// KLD(p || q) over the ids both kept at a position plus the rest bucket.
fn position_kld(p: &Position, q: &Position) -> f64 {
    let mut kld = 0.0;
    let (mut rest_p, mut rest_q) = (1.0f64, 1.0f64);
    for (i, id) in p.ids.iter().enumerate() {
        if let Some(j) = q.ids.iter().position(|x| x == id) {
            let (lp, lq) = (p.logprobs[i] as f64, q.logprobs[j] as f64);
            let pp = lp.exp();
            kld += pp * (lp - lq);
            rest_p -= pp;
            rest_q -= lq.exp();
        }
    }
    let (rest_p, rest_q) = (rest_p.max(0.0), rest_q.max(0.0));
    if rest_p > 1e-12 {
        kld += rest_p * (rest_p.ln() - rest_q.max(1e-30).ln());
    }
    kld.max(0.0)
}

/// How far `new`'s positions are from `base`'s. None when the probes are not of the same text
/// and positions.
pub fn diff(base: &[Position], new: &[Position]) -> Option<ProbeDiff> {
    if base.len() != new.len() || base.is_empty() {
        return None;
    }
    let klds: Vec<f64> = base
        .iter()
        .zip(new)
        .map(|(p, q)| position_kld(p, q))
        .collect();
    let same_top1 = base
        .iter()
        .zip(new)
        .filter(|(p, q)| p.top1() == q.top1())
        .count();
    let first_top1_change = base
        .iter()
        .zip(new)
        .position(|(p, q)| p.top1() != q.top1())
        .map(|i| {
            let lp = &base[i].logprobs;
            (
                i,
                lp.first()
                    .zip(lp.get(1))
                    .map_or(0.0, |(a, b)| (a - b) as f64),
            )
        });
    Some(ProbeDiff {
        mean_kld: klds.iter().sum::<f64>() / klds.len() as f64,
        max_kld: klds.iter().copied().fold(0.0, f64::max),
        top1: same_top1 as f64 / base.len() as f64,
        first_top1_change,
    })
}

/// The noise of a probe from its perturbed positions.
pub fn noise(perturbation: &str, main: &Probe, perturbed: &[Position], identical: bool) -> Noise {
    let d = diff(&main.positions, perturbed).unwrap_or(ProbeDiff {
        mean_kld: 0.0,
        max_kld: 0.0,
        top1: 1.0,
        first_top1_change: None,
    });
    Noise {
        perturbation: perturbation.into(),
        identical,
        mean_kld: if identical { 0.0 } else { d.mean_kld },
        max_kld: if identical { 0.0 } else { d.max_kld },
        top1: if identical { 1.0 } else { d.top1 },
        not_measured: Vec::new(),
        parts: Vec::new(),
    }
}

impl Noise {
    /// The noise of two perturbations together: the larger limits of the two (a "same model"
    /// probe may differ as much as either perturbation moves it).
    pub fn and(self, other: Noise) -> Noise {
        let mut joined = Noise {
            perturbation: format!("{}; {}", self.perturbation, other.perturbation),
            identical: self.identical && other.identical,
            mean_kld: self.mean_kld.max(other.mean_kld),
            max_kld: self.max_kld.max(other.max_kld),
            top1: self.top1.min(other.top1),
            not_measured: [&self.not_measured[..], &other.not_measured[..]].concat(),
            parts: Vec::new(),
        };
        joined.parts = [self.into_parts(), other.into_parts()].concat();
        joined
    }

    /// The single perturbations these limits join (itself when it is one).
    fn into_parts(mut self) -> Vec<Noise> {
        if self.parts.is_empty() {
            self.not_measured.clear();
            vec![self]
        } else {
            self.parts
        }
    }

    /// `bit-identical`, or its figures.
    pub fn figures(&self) -> String {
        if self.identical {
            "bit-identical".into()
        } else {
            format!(
                "mean KLD {:.3e}, max {:.3e}, top-1 {:.1}%",
                self.mean_kld,
                self.max_kld,
                100.0 * self.top1
            )
        }
    }

    /// These limits, with a perturbation that could not be taken (`what: why`) named.
    pub fn without(mut self, what: &str, why: &str) -> Noise {
        self.not_measured.push(format!("{what}: {why}"));
        self
    }
}

/// What a record keeps of what its model computed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outputs {
    pub ids: Ids,
    pub probe: Option<Probe>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` seeded logits of scale `scale` (also the judge's tests' probes).
    pub(crate) fn logits(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                scale * ((x >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0)
            })
            .collect()
    }

    /// Joined perturbations: the larger limits, each one's own figures kept, one that could
    /// not be taken named (and not joined as a 0).
    #[test]
    fn joined_noise_keeps_each_perturbation_and_what_was_not_measured() {
        let p = |name: &str, m: f64, x: f64, t: f64| Noise {
            perturbation: name.into(),
            identical: m == 0.0,
            mean_kld: m,
            max_kld: x,
            top1: t,
            not_measured: Vec::new(),
            parts: Vec::new(),
        };
        let n = p("a", 1e-8, 1e-7, 1.0)
            .and(p("b", 0.0, 0.0, 1.0))
            .without("c", "no second process")
            .and(p("d", 1e-9, 1e-6, 0.5));
        assert_eq!((n.mean_kld, n.max_kld, n.top1), (1e-8, 1e-6, 0.5));
        assert!(!n.identical);
        assert_eq!(n.perturbation, "a; b; d");
        let names: Vec<&str> = n.parts.iter().map(|q| q.perturbation.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert_eq!(n.parts[0].mean_kld, 1e-8);
        assert_eq!(n.parts[1].figures(), "bit-identical");
        assert_eq!(n.not_measured, ["c: no second process"]);
        // Stored and read back; a record without the new fields reads as before.
        let back: Noise = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        let old: Noise = serde_json::from_str(
            r#"{"perturbation":"a","identical":true,"mean_kld":0.0,"max_kld":0.0,"top1":1.0}"#,
        )
        .unwrap();
        assert!(old.parts.is_empty() && old.not_measured.is_empty());
    }

    #[test]
    fn position_kld_is_zero_on_itself_and_grows_with_the_scale() {
        let l = logits(3, 1000, 1.0);
        let p = Position::of_logits(&l, PROBE_TOP_K);
        assert_eq!(position_kld(&p, &p), 0.0);
        let k = |s: f32| {
            let q: Vec<f32> = l.iter().map(|x| x * s).collect();
            position_kld(&p, &Position::of_logits(&q, PROBE_TOP_K))
        };
        assert!(
            k(1.001) > 0.0 && k(1.01) > k(1.001),
            "{} {}",
            k(1.001),
            k(1.01)
        );
    }
}
