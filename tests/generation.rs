//! The generation engine seen from outside, on every fixture family.

mod common;

use common::{fixture, logits, run_scenario, FAMILIES};
use modelbench::engine::generate::{generate, prompt_ids, Prompt};
use modelbench::engine::sampling::{Sampler, SamplingParams};
use modelbench::engine::scenario::Scenario;
use modelbench::models::{load, Family, LoadOptions, Weights};

#[test]
fn every_scenario_generates_exactly_its_length_on_every_family() {
    for fam in FAMILIES {
        let mut m = fixture(fam);
        for s in Scenario::all() {
            let t = run_scenario(&mut m, &s, 42);
            assert_eq!(t.tokens.len(), s.new_tokens, "{fam}/{}", s.name);
            assert_eq!(t.token_times.len(), s.new_tokens);
            assert_eq!(t.prompt_tokens, s.prompt_tokens, "{fam}/{}", s.name);
            assert!(t.token_times.windows(2).all(|w| w[0] <= w[1]));
            assert!(t
                .tokens
                .iter()
                .all(|&id| (id as usize) < m.model.meta().vocab));
            if s.pipeline {
                assert!(
                    !t.text.as_deref().unwrap_or("").is_empty(),
                    "pipeline detokenizes"
                );
                assert!(t.tokenize > std::time::Duration::ZERO);
            } else {
                assert!(t.text.is_none());
            }
        }
    }
}

#[test]
fn greedy_and_seeded_sampling_reproduce() {
    for fam in FAMILIES {
        let mut m = fixture(fam);
        let vocab = m.model.meta().vocab;
        let prompt = Prompt::Ids(prompt_ids(32, vocab, 7, 0));
        let run =
            |m: &mut modelbench::models::sources::loading::Loaded, p: SamplingParams, seed| {
                let mut s = Sampler::new(p, seed);
                generate(m.model.as_mut(), &prompt, 24, &mut s, None)
                    .unwrap()
                    .tokens
            };
        let greedy = SamplingParams::GREEDY;
        assert_eq!(
            run(&mut m, greedy, 1),
            run(&mut m, greedy, 2),
            "{fam}: greedy ignores the seed"
        );
        let sampled = Scenario::by_name("sampled").unwrap().sampling;
        let a = run(&mut m, sampled, 42);
        assert_eq!(a, run(&mut m, sampled, 42), "{fam}: same seed, same tokens");
        assert_ne!(
            a,
            run(&mut m, sampled, 43),
            "{fam}: another seed, other tokens"
        );
    }
}

#[test]
fn kv_cache_decode_matches_a_fresh_full_forward() {
    // Tolerance: f32 models, different reduction orders between a 24-row and a 1-row
    // matmul; 1e-4 of the logit scale.
    for fam in FAMILIES {
        let mut m = fixture(fam);
        common::assert_kv_cache_exact(m.model.as_mut(), fam, 1e-4);
        let toks = prompt_ids(24, m.model.meta().vocab, 3, 0);
        m.model.reset().unwrap();
        let full = logits(&m.model.forward(&toks, 0).unwrap());
        // and a different last token really changes the logits (the check can fail)
        let mut other = toks.clone();
        other[23] = other[23] % 1000 + 5;
        m.model.reset().unwrap();
        let changed = logits(&m.model.forward(&other, 0).unwrap());
        assert!(
            changed.iter().zip(&full).any(|(a, b)| (a - b).abs() > 1e-6),
            "{fam}"
        );
    }
}

#[test]
fn gemma3_with_several_kv_heads_prefills_token_by_token() {
    // candle 0.11's Gemma3 fails a batched prefill with > 1 KV head; the adapter routes
    // around it and says so.
    let mut cfg: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/models/gemma3/config.json")).unwrap();
    cfg["num_key_value_heads"] = 2.into();
    let opts = LoadOptions {
        device: candle_core::Device::Cpu,
        dtype: candle_core::DType::F32,
        context_cap: Some(256),
    };
    let mut m = load(
        Family::Gemma3,
        &cfg,
        "test",
        &Weights::Seeded(1),
        None,
        &opts,
    )
    .unwrap();
    assert_eq!(m.meta().prefill, "token-by-token");
    let toks = prompt_ids(16, 1000, 1, 0);
    let a = logits(&m.forward(&toks, 0).unwrap());
    m.reset().unwrap();
    let mut b = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        b = logits(&m.forward(std::slice::from_ref(t), i).unwrap());
    }
    assert_eq!(a, b);
}

/// The overhead group compares the engine with a bare loop doing the same model work: on
/// every fixture both produce the same greedy tokens for several prompts, and an iteration
/// (one untimed loop, then ABBA/BAAB) checks all four timed loops against it. The check
/// itself flags tokens that differ (the engine's on one prompt against the bare loop's on
/// another).
#[test]
fn overhead_engine_and_bare_loops_produce_the_same_tokens() {
    use modelbench::measure::device::DeviceSpec;
    use modelbench::workloads::overhead::{first_difference, Overhead, LENGTHS};
    use modelbench::workloads::Workload;
    for fam in FAMILIES {
        let mut l = fixture(fam);
        let mut w = Overhead {
            loaded: &mut l,
            seed: 42,
            device: DeviceSpec::Cpu,
            dtype: candle_core::DType::F32,
        };
        for trial in 0..2 {
            let (e, b) = w.tokens(trial).unwrap();
            assert_eq!(e.len(), LENGTHS.1, "{fam}: engine tokens");
            assert_eq!(first_difference(&e, &b), None, "{fam} trial {trial}");
            let (d, (es, bs)) = w.iterate(trial).unwrap();
            assert!(d.as_secs_f64() > 0.0 && es > 0.0 && bs > 0.0, "{fam}");
        }
        let (e0, _) = w.tokens(0).unwrap();
        let (_, b1) = w.tokens(1).unwrap();
        assert!(
            first_difference(&e0, &b1).is_some(),
            "{fam}: two prompts gave the same 64 tokens; the check could not fail"
        );
    }
    assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 4]), Some(2));
    assert_eq!(first_difference(&[1, 2], &[1, 2, 3]), Some(2));
}

/// NaN/Inf logits are measured, not hidden: a model whose logits go NaN on one step is
/// counted on that step (and the record's metrics warn), the same model unpoisoned counts 0.
#[test]
fn non_finite_logits_are_counted_per_step() {
    use modelbench::output::record::gen_metrics;
    for poisoned in [vec![], vec![3]] {
        let m = fixture("llama");
        let vocab = m.model.meta().vocab;
        let mut nan = common::NanOn {
            inner: m.model,
            poisoned: poisoned.clone(),
            calls: 0,
        };
        let prompt = Prompt::Ids(prompt_ids(16, vocab, 7, 0));
        let mut s = Sampler::new(SamplingParams::GREEDY, 1);
        let t = generate(&mut nan, &prompt, 8, &mut s, None).unwrap();
        assert_eq!(t.tokens.len(), 8);
        assert_eq!(t.non_finite_steps, Some(poisoned.len()), "{poisoned:?}");
        let g = gen_metrics(&[t.clone(), t]);
        assert_eq!(g.checked_steps, Some(16));
        assert_eq!(g.non_finite_steps, Some(2 * poisoned.len() as u64));
        match poisoned.len() {
            0 => assert_eq!(g.non_finite_warning(), None),
            _ => assert_eq!(
                g.non_finite_warning().as_deref(),
                Some("NaN/Inf logits in 2 of 16 steps")
            ),
        }
    }
}
