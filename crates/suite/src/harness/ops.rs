//! Criterion group `ops` (`cargo bench --bench ops`, not in the default set): every decode op
//! of the quantized Gemma 3 and Llama fixtures and, where they are installed, the real Gemma 3
//! 270M and Qwen2.5 0.5B, each timed alone at its shape (`workloads::ops`: the ops the traced
//! forward makes), so a kernel change in a candle upgrade shows as a per-op regression.

use std::time::Duration;

use criterion::Criterion;

use crate::error::Result;
use crate::measure::device::DeviceSpec;
use crate::workloads::ops::{open_for_ops, traced_ops, OpsPlan, Phase};

/// The models of the group: (short name, reference).
pub const MODELS: [(&str, &str); 4] = [
    ("fixture-gemma3", "gguf:fixture:gemma3"),
    ("fixture-llama", "gguf:fixture:llama"),
    (
        "gemma-3-270m-q4_k_m",
        "gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF",
    ),
    (
        "qwen2.5-coder-0.5b",
        "gguf:modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF",
    ),
];

/// Runs the group: one benchmark per op and shape of the decode step at the suite's decode
/// depth (`ops/<model>/<kind> <op> <shape>`). A model that is not installed is a printed skip.
pub fn ops_group(c: &mut Criterion) -> Result<()> {
    let plan = OpsPlan::for_scenario(Phase::Decode, None, None);
    let mut g = c.benchmark_group("ops");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (name, label) in MODELS {
        let (mut loaded, hp, _) = match open_for_ops(label, &plan, DeviceSpec::Cpu) {
            Ok(x) => x,
            Err(e) if label.starts_with("gguf:fixture:") => return Err(e),
            Err(e) => {
                eprintln!("skip: ops/{name}: {e}");
                continue;
            }
        };
        let set = traced_ops(loaded.model.as_mut(), &plan, hp)?;
        drop(loaded);
        for (mut b, _) in set.benches {
            (b.run)()?;
            let id = format!("{name}/{} {} {}", b.row.kind, b.row.op, b.row.shape);
            g.bench_function(id, |bench| {
                bench.iter(|| std::hint::black_box((b.run)().is_ok()))
            });
        }
    }
    g.finish();
    Ok(())
}
