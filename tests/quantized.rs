//! The quantized (GGUF) path of every family, on the project's own Q8_0 fixtures.

use candle_core::{DType, Device};
use modelbench::generate::{generate, prompt_ids, scenario_prompt};
use modelbench::runner::{open, prepare};
use modelbench::sampling::Sampler;
use modelbench::scenario::Scenario;
use modelbench::source::ModelRef;

fn logits(t: &candle_core::Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

#[test]
fn gguf_fixtures_generate_and_their_kv_cache_is_exact() {
    for fam in ["llama", "qwen3", "gemma3"] {
        let r = format!("gguf:fixture:{fam}");
        let res = prepare(&r, &ModelRef::parse(&r).unwrap(), &[]).unwrap();
        let mut m = open(res, &Device::Cpu, DType::F32, Some(1024)).unwrap();
        assert!(
            m.model.meta().dtype.contains("q8_0"),
            "{}",
            m.model.meta().dtype
        );
        for name in ["short", "full-pipe"] {
            let s = Scenario::by_name(name).unwrap();
            let p = scenario_prompt(&s, m.model.meta().vocab, m.tokenizer.as_ref(), 1, 0).unwrap();
            let mut sampler = Sampler::new(s.sampling, 1);
            let t = generate(
                m.model.as_mut(),
                &p,
                s.new_tokens,
                &mut sampler,
                m.tokenizer.as_ref(),
            )
            .unwrap();
            assert_eq!(t.tokens.len(), s.new_tokens, "{fam}/{name}");
        }
        // Tolerance: 1e-3 of the logit scale (activations are quantized per row to Q8 in
        // both paths; only summation order differs).
        let toks = prompt_ids(24, m.model.meta().vocab, 3, 0);
        m.model.reset().unwrap();
        let full = logits(&m.model.forward(&toks, 0).unwrap());
        m.model.reset().unwrap();
        let mut inc = logits(&m.model.forward(&toks[..20], 0).unwrap());
        for i in 20..24 {
            inc = logits(&m.model.forward(&toks[i..i + 1], i).unwrap());
        }
        let scale = full.iter().fold(1e-3f32, |a, x| a.max(x.abs()));
        let diff = full
            .iter()
            .zip(&inc)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff <= 1e-3 * scale, "{fam}: {diff} at scale {scale}");
    }
}
