//! The sampling pipeline: repetition penalty -> temperature -> top-k -> top-p -> draw.
//!
//! Each transform is a plain function on host logits so it can be tested against its formula;
//! [`Sampler`] chains them with a seeded generator so the same seed gives the same tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Sampling settings of a scenario. `temperature == 0` means greedy (argmax).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub repetition_penalty: Option<f32>,
    /// How many of the most recent tokens (prompt included) the penalty looks at.
    pub repeat_last_n: usize,
}

impl SamplingParams {
    pub const GREEDY: SamplingParams = SamplingParams {
        temperature: 0.0,
        top_k: None,
        top_p: None,
        repetition_penalty: None,
        repeat_last_n: 64,
    };

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Short human form, e.g. `temp=0.8 top_k=50 top_p=0.9 rep=1.1` or `greedy`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.is_greedy() {
            parts.push("greedy".to_string());
        } else {
            parts.push(format!("temp={}", self.temperature));
            if let Some(k) = self.top_k {
                parts.push(format!("top_k={k}"));
            }
            if let Some(p) = self.top_p {
                parts.push(format!("top_p={p}"));
            }
        }
        if let Some(r) = self.repetition_penalty {
            parts.push(format!("rep={r}"));
        }
        parts.join(" ")
    }

    /// Checks ranges; `what` names the flag or knob for the message.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature {} must be >= 0", self.temperature));
        }
        if self.top_k == Some(0) {
            return Err("top-k must be at least 1".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top-p {p} must be in (0, 1]"));
            }
        }
        if let Some(r) = self.repetition_penalty {
            if !(r > 0.0 && r.is_finite()) {
                return Err(format!("repetition penalty {r} must be > 0"));
            }
        }
        Ok(())
    }
}

/// The repetition penalty of CTRL / HF transformers / candle: for each distinct id in
/// `context`, a logit `l` becomes `l / penalty` if `l >= 0`, else `l * penalty`.
pub fn apply_repetition_penalty(logits: &mut [f32], penalty: f32, context: &[u32]) {
    let mut seen = std::collections::HashSet::with_capacity(context.len());
    for &id in context {
        if !seen.insert(id) {
            continue;
        }
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l >= 0.0 {
                *l / penalty
            } else {
                *l * penalty
            };
        }
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A candidate token and its logit (later its probability).
pub type Candidate = (u32, f32);

/// Divides every logit by the temperature.
pub fn apply_temperature(logits: &mut [f32], temperature: f64) {
    let inv = (1.0 / temperature) as f32;
    logits.iter_mut().for_each(|l| *l *= inv);
}

/// The `k` highest-logit candidates, sorted by descending logit (ties: lower id first).
/// O(V) selection plus O(k log k) sorting, so it stays cheap at a 262k vocabulary.
pub fn top_k(logits: &[f32], k: usize) -> Vec<Candidate> {
    let mut c: Vec<Candidate> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let k = k.min(c.len());
    if k < c.len() {
        c.select_nth_unstable_by(k - 1, cmp_desc);
        c.truncate(k);
    }
    c.sort_unstable_by(cmp_desc);
    c
}

fn cmp_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Turns candidate logits into probabilities in place (max-subtracted softmax).
pub fn softmax(c: &mut [Candidate]) {
    let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in c.iter_mut() {
        x.1 = (x.1 - max).exp();
        sum += x.1;
    }
    for x in c.iter_mut() {
        x.1 /= sum;
    }
}

/// Nucleus filtering: of candidates sorted by descending probability, keeps the smallest
/// prefix whose cumulative probability reaches `p` (at least one), then renormalises.
pub fn top_p(c: &mut Vec<Candidate>, p: f64) {
    let mut cum = 0.0f64;
    let mut keep = c.len();
    for (i, x) in c.iter().enumerate() {
        cum += x.1 as f64;
        if cum >= p {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep.max(1));
    let sum: f32 = c.iter().map(|x| x.1).sum();
    c.iter_mut().for_each(|x| x.1 /= sum);
}

/// A seeded sampler applying [`SamplingParams`].
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Sampler {
            params,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from host logits; `context` is every token so far (prompt and
    /// generated), of which the last `repeat_last_n` feed the repetition penalty.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let p = self.params;
        if let Some(r) = p.repetition_penalty {
            let start = context.len().saturating_sub(p.repeat_last_n);
            apply_repetition_penalty(logits, r, &context[start..]);
        }
        if p.is_greedy() {
            return argmax(logits);
        }
        apply_temperature(logits, p.temperature);
        let mut c = match p.top_k {
            Some(k) => top_k(logits, k),
            None if p.top_p.is_some() => top_k(logits, logits.len()),
            None => logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect(),
        };
        softmax(&mut c);
        if let Some(pp) = p.top_p {
            top_p(&mut c, pp);
        }
        let u: f32 = self.rng.random();
        let mut cum = 0.0f32;
        for &(id, prob) in &c {
            cum += prob;
            if u < cum {
                return id;
            }
        }
        c.last().map(|x| x.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_exactly_k_highest() {
        let logits = [0.1, 3.0, -1.0, 2.0, 2.5, 0.0];
        let c = top_k(&logits, 3);
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 4, 3]);
        assert_eq!(top_k(&logits, 1).len(), 1);
        assert_eq!(top_k(&logits, 10).len(), logits.len());
    }

    #[test]
    fn top_p_keeps_smallest_set_reaching_p() {
        let mut c = vec![(0, 0.5), (1, 0.3), (2, 0.15), (3, 0.05)];
        top_p(&mut c, 0.8);
        assert_eq!(c.len(), 2, "0.5 + 0.3 reaches 0.8");
        assert!((c[0].1 - 0.625).abs() < 1e-6 && (c[1].1 - 0.375).abs() < 1e-6);
        let mut c = vec![(0, 0.5), (1, 0.3), (2, 0.15), (3, 0.05)];
        top_p(&mut c, 0.81);
        assert_eq!(c.len(), 3);
        let mut c = vec![(0, 0.9), (1, 0.1)];
        top_p(&mut c, 0.1);
        assert_eq!(c.len(), 1, "never empty");
    }

    #[test]
    fn repetition_penalty_matches_formula() {
        let mut l = vec![2.0, -2.0, 1.0, 4.0];
        apply_repetition_penalty(&mut l, 2.0, &[0, 1, 0, 1]);
        assert_eq!(l, vec![1.0, -4.0, 1.0, 4.0], "each distinct id once");
    }

    #[test]
    fn temperature_scales_logits() {
        let mut l = vec![1.0, -2.0, 0.5];
        apply_temperature(&mut l, 0.5);
        assert_eq!(l, vec![2.0, -4.0, 1.0]);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut c = vec![(0, 1.0), (1, 2.0), (2, 3.0)];
        softmax(&mut c);
        let s: f32 = c.iter().map(|x| x.1).sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((c[2].1 - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn greedy_ignores_rng_and_sampling_is_seeded() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        let mut g = Sampler::new(SamplingParams::GREEDY, 1);
        assert_eq!(g.sample(&mut logits.clone(), &[]), argmax(&logits));
        let p = SamplingParams {
            temperature: 0.8,
            top_k: Some(50),
            top_p: Some(0.9),
            repetition_penalty: None,
            repeat_last_n: 64,
        };
        let draw = |seed| {
            let mut s = Sampler::new(p, seed);
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        // every draw is one of the 50 best
        let best: Vec<u32> = top_k(&logits, 50).iter().map(|x| x.0).collect();
        assert!(draw(7).iter().all(|t| best.contains(t)));
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        let mut p = SamplingParams::GREEDY;
        p.top_p = Some(1.5);
        assert!(p.validate().is_err());
        p.top_p = None;
        p.top_k = Some(0);
        assert!(p.validate().is_err());
    }
}
