//! The quantized (GGUF) path of every family, on the project's own Q8_0 fixtures.

mod common;

use candle_core::{DType, Device};
use modelbench::engine::scenario::prepare;
use modelbench::engine::scenario::Scenario;
use modelbench::models::loading::open;
use modelbench::models::source::ModelRef;

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
            let t = common::run_scenario(&mut m, &s, 1);
            assert_eq!(t.tokens.len(), s.new_tokens, "{fam}/{name}");
        }
        // Tolerance: 1e-3 of the logit scale (activations are quantized per row to Q8 in
        // both paths; only summation order differs).
        common::assert_kv_cache_exact(m.model.as_mut(), fam, 1e-3);
    }
}
