//! Records built for the table and ratio tests: a candle or peer record with given rates.

use super::*;

pub(super) fn rec(
    kind: Kind,
    engine: &str,
    samples: &[f64],
    prefill: Option<f64>,
    decode: Option<f64>,
) -> Record {
    let mut r = Record::from_samples(kind, "short", samples.to_vec(), 64);
    r.model.label = "m".into();
    r.prompt_tokens = Some(64);
    r.new_tokens = Some(64);
    r.engine = Some(Engine {
        name: engine.into(),
        version: format!("{engine} 1"),
        flags: String::new(),
        threads: Some(2),
    });
    r.gen = Some(modelbench::output::record::GenMetrics {
        prefill_tok_s: prefill,
        decode_tok_s: decode,
        ..Default::default()
    });
    r
}

/// Per-repetition rates of `n` trials: `base` tok/s times a drift shared by both engines
/// (repetition `i` runs both in the same minutes) times `ratio` for the peer.
pub(super) fn with_rates(mut r: Record, base: f64, n: usize, interleaved: bool) -> Record {
    let drift = |i: usize| 1.0 + 0.15 * ((i as f64) * 1.7).sin();
    let v = |k: f64| {
        (0..n)
            .map(|i| Some(k * base * drift(i)))
            .collect::<Vec<_>>()
    };
    r.extra["trial_rates"] = serde_json::json!(TrialRates {
        e2e_tok_s: v(1.0),
        prefill_tok_s: v(4.0),
        decode_tok_s: v(1.2),
    });
    if r.kind == Kind::Peer {
        r.extra["interleaved"] = serde_json::json!(interleaved);
    }
    r
}

/// candle's record of `n` repetitions at 20 tok/s E2E (80 prefill, 24 decode), drifting.
pub(super) fn candle_reps(n: usize) -> Record {
    with_rates(
        rec(
            Kind::Generation,
            "candle",
            &vec![2.0; n],
            Some(100.0),
            Some(40.0),
        ),
        20.0,
        n,
        true,
    )
}

/// A peer's record of `n` repetitions alternating with candle's, at `base` tok/s E2E, with
/// the same drift.
pub(super) fn peer_reps(engine: &str, n: usize, base: f64) -> Record {
    with_rates(
        rec(Kind::Peer, engine, &vec![1.0; n], Some(400.0), Some(80.0)),
        base,
        n,
        true,
    )
}
