//! The output verdict (issue 59): whether two runs of a benchmark computed the same thing,
//! from what each kept of its outputs (`measure::outputs`: the generated ids of every trial and
//! a probe of log-probabilities with the model's own numerical noise).
//!
//! The verdict ([`judge`]): `same` (the logits' hash and every shared trial's ids identical),
//! `within numerical noise` (the KL divergence between the probes, per position and on average,
//! and their top-1 agreement, inside what the perturbation did to each side itself; ids may
//! differ only where the perturbation also moved a top-1), or `OUTPUTS CHANGED`. The limits
//! come from the build against itself, never from a constant.

use serde::{Deserialize, Serialize};

use crate::measure::outputs::{diff, Outputs, ProbeDiff};

/// The output verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputVerdict {
    /// Bit-identical probe logits and identical ids in every shared trial.
    Same,
    /// Different, inside the model's own numerical noise on both sides.
    WithinNoise,
    /// Outside it.
    Changed,
    /// Not judged (a side keeps no outputs, or the two are not of the same text or trials).
    Unjudged,
}

impl std::fmt::Display for OutputVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputVerdict::Same => "same",
            OutputVerdict::WithinNoise => "within numerical noise",
            OutputVerdict::Changed => "OUTPUTS CHANGED",
            OutputVerdict::Unjudged => "outputs not judged",
        })
    }
}

/// The output verdict of two runs of one benchmark, with what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputJudgement {
    pub verdict: OutputVerdict,
    /// Trials whose ids both runs kept, and the first of them whose ids differ.
    pub trials_compared: usize,
    pub first_trial_differing: Option<usize>,
    /// In the first trial, the first position whose id differs (when it is within the kept ids).
    pub first_id_differing: Option<usize>,
    pub probe: Option<ProbeDiff>,
    /// The limits the probe difference was held to: the larger noise of the two sides.
    pub limit_mean_kld: Option<f64>,
    pub limit_max_kld: Option<f64>,
    pub limit_top1: Option<f64>,
    /// One line: why this verdict.
    pub why: String,
}

impl OutputJudgement {
    fn unjudged(why: impl Into<String>) -> OutputJudgement {
        OutputJudgement {
            verdict: OutputVerdict::Unjudged,
            trials_compared: 0,
            first_trial_differing: None,
            first_id_differing: None,
            probe: None,
            limit_mean_kld: None,
            limit_max_kld: None,
            limit_top1: None,
            why: why.into(),
        }
    }
}

/// Judges `new` against `base` (see the module docs).
pub fn judge(base: Option<&Outputs>, new: Option<&Outputs>) -> OutputJudgement {
    let (Some(b), Some(n)) = (base, new) else {
        return OutputJudgement::unjudged(match (base, new) {
            (None, None) => "neither run kept outputs (records older than the output verdict, or a workload that generates no text)",
            (None, _) => "the base run kept no outputs",
            _ => "the new run kept no outputs",
        });
    };
    let shared = b.ids.trials.len().min(n.ids.trials.len());
    let first_trial_differing = (0..shared).find(|&i| b.ids.trials[i] != n.ids.trials[i]);
    let first_id_differing = b
        .ids
        .first
        .iter()
        .zip(&n.ids.first)
        .position(|(x, y)| x != y);
    let mut j = OutputJudgement {
        trials_compared: shared,
        first_trial_differing,
        first_id_differing,
        ..OutputJudgement::unjudged("")
    };
    let (Some(pb), Some(pn)) = (&b.probe, &n.probe) else {
        j.why = format!(
            "no probe on {} side; ids of {shared} shared trial(s) {}",
            if b.probe.is_none() {
                "the base"
            } else {
                "the new"
            },
            if first_trial_differing.is_some() {
                "differ"
            } else {
                "identical"
            }
        );
        // Ids that differ are a change whatever the probe would say.
        if first_trial_differing.is_some() {
            j.verdict = OutputVerdict::Changed;
        }
        return j;
    };
    if pb.text != pn.text {
        j.why = format!("probes of different texts ({} vs {})", pb.text, pn.text);
        return j;
    }
    let ids_same = first_trial_differing.is_none();
    if pb.logits_sha256 == pn.logits_sha256 && ids_same {
        j.verdict = OutputVerdict::Same;
        j.why = format!(
            "bit-identical probe logits ({} positions) and identical ids in {shared} trial(s)",
            pb.positions.len()
        );
        return j;
    }
    let Some(d) = diff(&pb.positions, &pn.positions) else {
        j.why = "probes of different positions".into();
        return j;
    };
    j.probe = Some(d);
    let (Some(nb), Some(nn)) = (&pb.noise, &pn.noise) else {
        j.verdict = OutputVerdict::Changed;
        j.why = format!(
            "probe differs (mean KLD {:.3e}) and a side has no measured noise to hold it to",
            d.mean_kld
        );
        return j;
    };
    let lim_mean = nb.mean_kld.max(nn.mean_kld);
    let lim_max = nb.max_kld.max(nn.max_kld);
    let lim_top1 = nb.top1.min(nn.top1);
    j.limit_mean_kld = Some(lim_mean);
    j.limit_max_kld = Some(lim_max);
    j.limit_top1 = Some(lim_top1);
    let mut outside = Vec::new();
    if d.mean_kld > lim_mean {
        outside.push(format!("mean KLD {:.3e} > {:.3e}", d.mean_kld, lim_mean));
    }
    if d.max_kld > lim_max {
        outside.push(format!("max KLD {:.3e} > {:.3e}", d.max_kld, lim_max));
    }
    if d.top1 < lim_top1 {
        outside.push(format!(
            "top-1 agreement {:.2}% < {:.2}%",
            100.0 * d.top1,
            100.0 * lim_top1
        ));
    }
    // The perturbation never moved a top-1: then neither may a change of generated ids.
    if !ids_same && lim_top1 >= 1.0 {
        outside.push(format!(
            "trial {} generated other ids (first at position {}), and the model's own noise never moves a top-1",
            first_trial_differing.unwrap_or(0),
            first_id_differing.map_or("beyond the kept ids".to_string(), |p| p.to_string())
        ));
    }
    let mut unmeasured: Vec<&str> = nb.not_measured.iter().map(String::as_str).collect();
    unmeasured.extend(nn.not_measured.iter().map(String::as_str));
    unmeasured.dedup();
    let noise_of = format!(
        "noise: {} (mean KLD {:.3e}, max {:.3e}, top-1 {:.2}%{})",
        nb.perturbation,
        lim_mean,
        lim_max,
        100.0 * lim_top1,
        if unmeasured.is_empty() {
            String::new()
        } else {
            format!("; not measured: {}", unmeasured.join("; "))
        }
    );
    if outside.is_empty() {
        j.verdict = OutputVerdict::WithinNoise;
        j.why = format!(
            "mean KLD {:.3e}, max {:.3e}, top-1 {:.2}%, within the {noise_of}",
            d.mean_kld,
            d.max_kld,
            100.0 * d.top1
        );
    } else {
        j.verdict = OutputVerdict::Changed;
        j.why = format!("{}; {noise_of}", outside.join("; "));
    }
    j
}

#[cfg(test)]
mod tests {
    //! The verdict both ways on hand-made probes: identical logits read `same`, a difference
    //! inside the measured noise `within numerical noise`, one outside it or other ids
    //! `OUTPUTS CHANGED`; a side without outputs is not judged.
    use super::*;
    use crate::measure::outputs::tests::logits;
    use crate::measure::outputs::{Ids, LogitsHash, Noise, Position, Probe, PROBE_TOP_K};

    fn probe(scale: f32, noise: Option<(f64, f64, f64)>) -> Probe {
        let mut h = LogitsHash::default();
        let positions = (0..8)
            .map(|i| {
                let l = logits(i, 500, scale);
                h.update(&l);
                Position::of_logits(&l, PROBE_TOP_K)
            })
            .collect();
        Probe {
            text: "t".into(),
            logits_sha256: h.finish(),
            positions,
            noise: noise.map(|(m, x, t)| Noise {
                perturbation: "p".into(),
                identical: false,
                mean_kld: m,
                max_kld: x,
                top1: t,
                not_measured: Vec::new(),
                parts: Vec::new(),
            }),
            seconds: 0.0,
        }
    }

    fn outputs(scale: f32, ids: &[u32], noise: Option<(f64, f64, f64)>) -> Outputs {
        let mut i = Ids::default();
        i.push(0, ids);
        i.push(1, &[9, 9]);
        Outputs {
            ids: i,
            probe: Some(probe(scale, noise)),
        }
    }

    #[test]
    fn identical_is_same_and_a_rerun_is_never_changed() {
        let a = outputs(1.0, &[1, 2, 3], Some((1e-6, 1e-5, 1.0)));
        let j = judge(Some(&a), Some(&a.clone()));
        assert_eq!(j.verdict, OutputVerdict::Same, "{}", j.why);
    }

    #[test]
    fn a_scaled_lm_head_is_changed_against_small_noise_and_within_large_noise() {
        let a = outputs(1.0, &[1, 2, 3], Some((1e-9, 1e-8, 1.0)));
        let b = outputs(1.005, &[1, 2, 3], Some((1e-9, 1e-8, 1.0)));
        let j = judge(Some(&a), Some(&b));
        assert_eq!(j.verdict, OutputVerdict::Changed, "{}", j.why);
        let d = j.probe.unwrap();
        assert!(d.mean_kld > 1e-9 && d.top1 == 1.0, "{d:?}");
        // The same difference against a noise that is larger: within it.
        let a = outputs(1.0, &[1, 2, 3], Some((1e-2, 1e-1, 1.0)));
        let b = outputs(1.005, &[1, 2, 3], Some((1e-2, 1e-1, 1.0)));
        assert_eq!(
            judge(Some(&a), Some(&b)).verdict,
            OutputVerdict::WithinNoise
        );
    }

    #[test]
    fn other_ids_are_changed_where_noise_never_moves_a_top1() {
        let a = outputs(1.0, &[1, 2, 3], Some((1e-2, 1e-1, 1.0)));
        let b = outputs(1.0 + 1e-7, &[1, 2, 4], Some((1e-2, 1e-1, 1.0)));
        let j = judge(Some(&a), Some(&b));
        assert_eq!(j.verdict, OutputVerdict::Changed, "{}", j.why);
        assert_eq!(j.first_trial_differing, Some(0));
        assert_eq!(j.first_id_differing, Some(2));
        // Identical logits but other ids is not `same` either.
        let b = outputs(1.0, &[1, 2, 4], Some((1e-2, 1e-1, 1.0)));
        assert_ne!(judge(Some(&a), Some(&b)).verdict, OutputVerdict::Same);
    }

    #[test]
    fn no_outputs_is_unjudged_and_trials_out_of_order_are_kept_out() {
        let a = outputs(1.0, &[1], None);
        assert_eq!(judge(None, Some(&a)).verdict, OutputVerdict::Unjudged);
        let mut i = Ids::default();
        i.push(1, &[1]);
        assert!(i.trials.is_empty());
        i.push(0, &[1]);
        i.push(0, &[1]);
        assert_eq!(i.trials.len(), 1);
    }
}
