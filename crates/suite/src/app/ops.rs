//! `modelbench ops`: where the time goes (issue 31). Parses, then calls
//! `workloads::ops::measure` and prints its table.

use std::path::PathBuf;

pub use super::ops_table::{candles_line, read_saved, same_step, SavedTable};
use crate::workloads::ops::{self, OpsPlan, Phase};

/// `modelbench ops`.
#[derive(clap::Args, Debug, Clone)]
pub struct OpsArgs {
    /// The model: a GGUF of any family `modelbench list` names (Llama with Mixtral-style experts too, Qwen2, Qwen3, Qwen3-MoE, Phi-3, Phi-2, GLM-4, LFM2, Gemma 3; gguf:<file | cached repo | fixture:NAME>), run on the project's own implementation, whose forward traces its ops.
    #[arg(long)]
    pub model: String,
    /// prefill (one forward of the prompt) or decode (one token at a KV depth).
    #[arg(long, default_value = "decode")]
    pub scenario: String,
    /// Decode: KV-cache positions before the step (default 320, the midpoint of the suite's
    /// decode scenario: 64-token prompt, 512 new tokens).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Prefill: prompt tokens (default 1024, the suite's prefill scenario).
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    /// Time the same ops through ggml: `llama.cpp` (its test-backend-ops perf mode, built by
    /// scripts/build-llama-cpp.sh).
    #[arg(long)]
    pub peer: Option<String>,
    /// The test-backend-ops program (default: where scripts/build-llama-cpp.sh puts it).
    #[arg(long)]
    pub peer_program: Option<PathBuf>,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the table as markdown here.
    #[arg(long)]
    pub md: Option<PathBuf>,
    /// A table saved earlier with --json (the base): print the op whose time per step grew
    /// most from it to this one (at least --threshold of the base step, intervals apart).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// With --base: the growth that counts, as a share of the base step (default 5%).
    #[arg(long, default_value = "5%")]
    pub threshold: String,
    /// Measure with this repository's HEAD built against this Candle (a crates.io version
    /// such as 0.11.0, or the folder of a Candle checkout or copied crate), as `compare --paired
    /// --new-candle` builds a side (kept under target/paired/); the table's JSON names it.
    #[arg(long, value_name = "VERSION|PATH")]
    pub candle: Option<String>,
    /// Fewer repetitions (5 samples per op, 2 generations for the step): a quick look, and
    /// what the tests and the regression profiles run.
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_DEVICE"))]
    pub device: String,
}

pub fn parse_phase(s: &str) -> crate::Result<Phase> {
    match s.trim() {
        "prefill" => Ok(Phase::Prefill),
        "decode" => Ok(Phase::Decode),
        other => bail!("--scenario {other:?}: use prefill or decode"),
    }
}

/// What `ops` will measure, its arguments checked (nothing measured or built yet).
pub struct Prepared {
    pub plan: OpsPlan,
    pub peer: Option<PathBuf>,
    pub spec: crate::measure::device::DeviceSpec,
    pub threshold: f64,
    /// The `--base` table, checked to be of the same model and step.
    pub base: Option<SavedTable>,
}

/// Checks the arguments (each failure one line naming the flag): `ops --candle` calls it
/// before it builds anything.
pub fn prepare(a: &OpsArgs) -> crate::Result<Prepared> {
    let phase = parse_phase(&a.scenario)?;
    ensure!(
        !(phase == Phase::Prefill && a.depth.is_some()),
        "--depth applies to --scenario decode (a prefill starts at depth 0; set its length with --prompt-tokens)"
    );
    ensure!(
        !(phase == Phase::Decode && a.prompt_tokens.is_some()),
        "--prompt-tokens applies to --scenario prefill (a decode step is one token; set its KV depth with --depth)"
    );
    let peer = match a.peer.as_deref() {
        None => None,
        Some("llama.cpp" | "llama-cpp" | "llamacpp") => Some(
            a.peer_program
                .clone()
                .unwrap_or_else(ops::default_backend_ops),
        ),
        Some(other) => bail!("--peer {other:?}: the per-op peer is llama.cpp"),
    };
    let (spec, _) = crate::app::args::device_and_dtype(&a.device, None)?;
    let threshold = crate::judge::speed::parse_threshold(&a.threshold)
        .map_err(|e| fail!("--threshold: {e}"))?;
    let mut plan = OpsPlan::for_scenario(phase, a.depth, a.prompt_tokens);
    if a.quick {
        plan = plan.quick();
    }
    let base = match &a.base {
        Some(p) => {
            let b = read_saved(p)?;
            same_step(&b, p, &a.model, &plan)?;
            Some(b)
        }
        None => None,
    };
    Ok(Prepared {
        plan,
        peer,
        spec,
        threshold,
        base,
    })
}

pub fn ops_cmd(a: OpsArgs) -> crate::Result<()> {
    let Prepared {
        plan,
        peer,
        spec,
        threshold,
        base,
    } = prepare(&a)?;
    let table = ops::measure(&a.model, &plan, spec, peer.as_deref(), &mut |r| {
        eprintln!(
            "  {:<10} {:<48} {:>10.2} us x {}",
            r.kind, r.op, r.us, r.calls
        )
    })?;
    let md = table.render();
    print!("{md}");
    let saved = SavedTable::of_this_build(table);
    if let Some(p) = &a.json {
        crate::util::fsio::atomic_write(p, super::json_text(&saved).as_bytes())?;
    }
    if let Some(p) = &a.md {
        crate::util::fsio::atomic_write(p, md.as_bytes())?;
    }
    if let Some(b) = &base {
        println!("{}", candles_line(b, &saved));
        println!("{}", ops::grew_most_line(&b.table, &saved.table, threshold));
    }
    Ok(())
}

/// A table written by `ops --json` (its Candle label dropped).
pub fn read_table(p: &std::path::Path) -> crate::Result<ops::OpsTable> {
    read_saved(p).map(|s| s.table)
}
