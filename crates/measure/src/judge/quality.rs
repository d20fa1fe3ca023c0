//! The quality gate's verdict (`workloads::quality`, tests/quality.rs): a model's perplexity and
//! greedy continuations against llama.cpp's reference. Perplexity within [`PPL_TOLERANCE`] of
//! llama.cpp's, and every prompt's greedy continuation equal to llama.cpp's for at least
//! [`MIN_AGREEMENT`] tokens unless its first difference falls on a near-tie of the reference
//! (a top-1/top-2 margin below [`tie_margin`]).

/// Allowed relative difference of perplexity from llama.cpp's (its f32-KV-cache run) on the
/// same chunks. At 512 llama.cpp's own f16-KV/flash-attention default moves it by 0.02% on the
/// current corpus (0.7% on the two-chapter corpus before it), at 1024 by 1.5%.
pub const PPL_TOLERANCE: f64 = 0.02;
/// Every prompt's greedy continuation must equal the reference's for at least this many tokens,
/// unless the first difference falls on a near-tie of the reference (see [`TIE_MARGIN`]).
pub const MIN_AGREEMENT: usize = 8;
/// The smallest near-tie margin: a reference step whose top two logits are closer than
/// [`tie_margin`] (at least this) is a near-tie, where another correct implementation may
/// pick the other token.
pub const TIE_MARGIN: f64 = 0.05;

/// The near-tie margin from llama.cpp against itself: the largest of `noises` (one per pair of
/// llama.cpp runs of a prompt under two legitimate settings, [`margin_noise`]), and at least
/// [`TIE_MARGIN`]. A margin llama.cpp's own settings can move by, or overturn, is within the
/// numerical noise of a correct implementation.
pub fn tie_margin(noises: impl IntoIterator<Item = f64>) -> f64 {
    noises.into_iter().fold(TIE_MARGIN, f64::max)
}

/// How far one prompt's top-1 minus top-2 margin moves between two llama.cpp runs under two
/// legitimate settings (`a`, `b`: each run's ids and per-step margins): the largest
/// `|a_margin - b_margin|` over the steps where both runs still see the same context (up to
/// and including their first different token), and at that first difference the larger of the
/// two margins (a margin one setting overturned). None when either run has no margins.
pub fn margin_noise(a: (&[u32], &[f64]), b: (&[u32], &[f64])) -> Option<f64> {
    let ((ai, am), (bi, bm)) = (a, b);
    let n = am.len().min(bm.len());
    if n == 0 {
        return None;
    }
    let mut noise = 0f64;
    for j in 0..n {
        if ai.get(j) != bi.get(j) {
            return Some(noise.max(am[j]).max(bm[j]));
        }
        noise = noise.max((am[j] - bm[j]).abs());
    }
    Some(noise)
}

/// A continuation that agrees with one reference run for `agree` of `n` tokens: the margin at
/// its first difference when that is a near-tie of the run (`margins`: the run's top-1 minus
/// top-2 logit per step; below `tie_margin`), else None.
pub fn near_tie(agree: usize, n: usize, margins: &[f64], tie_margin: f64) -> Option<f64> {
    (agree < n)
        .then(|| margins.get(agree).copied())
        .flatten()
        .filter(|m| *m < tie_margin)
}

/// The agreement that counts among a prompt's `judged` (agreement, near-tie margin) against
/// each llama.cpp run: the first that reaches [`MIN_AGREEMENT`] (of `n`), else the first whose
/// difference is a near-tie, else the longest. None when `judged` is empty.
pub fn best_agreement(judged: &[(usize, Option<f64>)], n: usize) -> Option<(usize, Option<f64>)> {
    judged
        .iter()
        .copied()
        .find(|(a, _)| *a >= MIN_AGREEMENT.min(n))
        .or_else(|| judged.iter().copied().find(|(_, t)| t.is_some()))
        .or_else(|| judged.iter().copied().max_by_key(|(a, _)| *a))
}

/// A prompt passes: at least `min` leading tokens agree (or all `of` when fewer), or the first
/// difference is at a reference near-tie (`tie_margin` is Some); and fed the reference's own
/// tokens, the model picks the reference's token at every step that is not a near-tie
/// (`confident_misses` is 0, [`confident_misses`]).
pub fn prompt_ok(
    agree: usize,
    of: usize,
    min: usize,
    tie_margin: Option<f64>,
    confident_misses: usize,
) -> bool {
    (agree >= min.min(of) || tie_margin.is_some()) && confident_misses == 0
}

/// The steps, teacher-forced on the reference's ids, where the model's argmax (`forced`) is not
/// the reference's token although the reference's top-1 minus top-2 margin there is at least
/// `tie_margin` (a step without a margin counts as confident). A correct implementation may
/// pick the other token only where llama.cpp's own settings move the margin by as much.
pub fn confident_misses(
    forced: &[u32],
    reference: &[u32],
    margins: &[f64],
    tie_margin: f64,
) -> Vec<usize> {
    forced
        .iter()
        .zip(reference)
        .enumerate()
        .filter(|(j, (a, b))| a != b && margins.get(*j).is_none_or(|m| *m >= tie_margin))
        .map(|(j, _)| j)
        .collect()
}

/// Perplexity `ppl` within [`PPL_TOLERANCE`] of the reference's `reference`.
pub fn perplexity_ok(ppl: f64, reference: f64) -> bool {
    (ppl / reference - 1.0).abs() <= PPL_TOLERANCE
}

/// The gate passes: perplexity within tolerance and every prompt ok ([`prompt_ok`]).
pub fn passed(perplexity_ok: bool, prompts_ok: impl IntoIterator<Item = bool>) -> bool {
    perplexity_ok && prompts_ok.into_iter().all(|ok| ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_passes_on_enough_agreement_or_a_near_tie_and_fails_otherwise() {
        assert!(prompt_ok(8, 16, MIN_AGREEMENT, None, 0));
        assert!(!prompt_ok(7, 16, MIN_AGREEMENT, None, 0));
        assert!(prompt_ok(7, 16, MIN_AGREEMENT, Some(0.01), 0));
        // Fewer tokens than the minimum: all of them must agree.
        assert!(prompt_ok(4, 4, MIN_AGREEMENT, None, 0));
        assert!(!prompt_ok(3, 4, MIN_AGREEMENT, None, 0));
        // A confident miss under teacher forcing fails whatever the free-running agreement.
        assert!(!prompt_ok(16, 16, MIN_AGREEMENT, None, 1));
        assert!(!prompt_ok(7, 16, MIN_AGREEMENT, Some(0.01), 1));
    }

    #[test]
    fn only_misses_at_confident_steps_count() {
        let reference = [1, 2, 3, 4];
        let margins = [2.0, 0.1, 1.0, 3.0];
        assert!(confident_misses(&reference, &reference, &margins, 0.5).is_empty());
        // A miss at a near-tie (step 1) is allowed; at steps 2 and 3 it is not.
        assert!(confident_misses(&[1, 9, 3, 4], &reference, &margins, 0.5).is_empty());
        assert_eq!(
            confident_misses(&[1, 9, 9, 9], &reference, &margins, 0.5),
            [2, 3]
        );
        // The same miss at step 2 is a near-tie under a wider margin.
        assert_eq!(
            confident_misses(&[1, 2, 9, 4], &reference, &margins, 1.5),
            [] as [usize; 0]
        );
        // No margin recorded: confident.
        assert_eq!(
            confident_misses(&[1, 2, 3, 9], &reference, &margins[..2], 9.0),
            [3]
        );
    }

    #[test]
    fn perplexity_within_the_tolerance_passes_and_beyond_it_fails() {
        assert!(perplexity_ok(10.0, 10.0));
        assert!(perplexity_ok(10.19, 10.0));
        assert!(!perplexity_ok(10.3, 10.0));
        assert!(!perplexity_ok(9.7, 10.0));
        assert!(passed(true, [true, true]));
        assert!(!passed(true, [true, false]));
        assert!(!passed(false, [true]));
    }

    #[test]
    fn margin_noise_is_how_far_llama_cpp_moves_its_own_margins() {
        // Same ids: the largest movement of the margin, either direction.
        let ids = [1, 2, 3, 4];
        let a = [1.0, 2.0, 0.5, 1.0];
        assert_eq!(margin_noise((&ids, &a), (&ids, &a)), Some(0.0));
        let b = [1.25, 1.5, 0.5, 1.0];
        assert_eq!(margin_noise((&ids, &a), (&ids, &b)), Some(0.5));
        // Parting at step 2: the movement before it, or the larger margin there.
        let parted = [1, 2, 9, 9];
        let c = [1.0, 2.0, 0.75, 9.0];
        assert_eq!(margin_noise((&ids, &a), (&parted, &c)), Some(0.75));
        assert_eq!(margin_noise((&ids, &b), (&parted, &c)), Some(0.75));
        let d = [1.0, 1.0, 0.25, 9.0];
        assert_eq!(margin_noise((&ids, &a), (&parted, &d)), Some(1.0));
        // Steps after the parting never count (different contexts).
        let e = [1.0, 2.0, 0.125, 9.0];
        assert_eq!(margin_noise((&ids, &a), (&parted, &e)), Some(0.5));
        assert_eq!(margin_noise((&ids, &[]), (&ids, &a)), None);
    }

    #[test]
    fn near_ties_come_from_the_reference_margins() {
        assert_eq!(tie_margin([0.01, 0.3]), 0.3);
        assert_eq!(tie_margin([]), TIE_MARGIN);
        let margins = [1.0, 2.0, 0.01, 1.0];
        assert_eq!(near_tie(2, 4, &margins, 0.05), Some(0.01));
        assert_eq!(near_tie(1, 4, &margins, 0.05), None);
        assert_eq!(near_tie(4, 4, &margins, 0.05), None);
        // The first run to reach the minimum counts, else a near-tie, else the longest.
        assert_eq!(best_agreement(&[(3, None), (9, None)], 16), Some((9, None)));
        assert_eq!(
            best_agreement(&[(5, None), (3, Some(0.01))], 16),
            Some((3, Some(0.01)))
        );
        assert_eq!(best_agreement(&[(5, None), (3, None)], 16), Some((5, None)));
        assert_eq!(best_agreement(&[], 16), None);
    }
}
