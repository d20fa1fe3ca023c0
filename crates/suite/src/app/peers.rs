//! `modelbench peers`: one model, a suite tier, candle and its peers (llama.cpp for GGUF
//! models, PyTorch + transformers for safetensors and synthetic ones) at the same prompt ids,
//! lengths and thread count; llama.cpp and PyTorch alternate with candle repetition by
//! repetition, each in its candle-matched setting and with its defaults; records, peers.md and
//! peers.png (ratios with bootstrap 95% intervals) in one run folder.

use std::path::PathBuf;

use crate::config::plans::{parse_models, parse_seed, Common, Plan};
use crate::engine::scenario::Tier;
use crate::measure::threads::CandlePools;
use crate::output::peers::PEERS_NOTE;
use crate::output::peers::{engines_list, peers_png, peers_table};
use crate::output::report::{reports_root, RunDir};
use crate::workloads::peers::suite::{PeerOptions, PeersSuite};
use crate::workloads::peers::{check_threads, LlamaSetting, Peer, TorchSetting};
use crate::workloads::suite::run_suite;
use clap::Args;

use crate::app::args::TargetArgs;
use crate::app::trials::Trials;

#[derive(Args)]
pub struct PeersArgs {
    /// Model reference: a GGUF (`gguf:...`) is compared with llama.cpp, safetensors, fixture
    /// and synthetic models with PyTorch.
    #[arg(long)]
    pub model: String,
    /// quick (short, medium), standard (+ prefill, decode, sampled) or full (all seven;
    /// full-pipe has no peer counterpart and is skipped for them).
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_TIER"))]
    pub suite: String,
    /// Peers to run, comma list of llama.cpp, torch (default: those that fit the model).
    #[arg(long)]
    pub peers: Option<String>,
    /// Untimed generations per scenario before the trials (candle and PyTorch; each llama.cpp
    /// process runs one untimed generation after loading, before its timed one).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed repetitions per scenario and engine; candle and the peers alternate repetition by
    /// repetition. At least 5 give each ratio a bootstrap 95% interval.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    #[arg(long, default_value = crate::config::knobs::default_of("MODELBENCH_SEED"))]
    pub seed: u64,
    /// Threads for the peers (default: candle's; candle's two pools, RAYON_NUM_THREADS and
    /// CANDLE_NUM_THREADS, must agree). A different count is refused unless
    /// --allow-thread-mismatch.
    #[arg(long)]
    pub peer_threads: Option<usize>,
    /// Run (with a warning in the output, the table and the records) when candle's two pools
    /// differ or a peer's thread count differs from candle's.
    #[arg(long)]
    pub allow_thread_mismatch: bool,
    /// llama-timed-ids binary (default: bin/llama-timed-ids of $LLAMA_CPP_DIR, else of
    /// target/llama-cpp/0.3.36, from scripts/build-llama-cpp.sh).
    #[arg(long)]
    pub llama_timed_ids: Option<PathBuf>,
    /// llama.cpp settings to run: `matched` (candle's KV type and attention path: -ctk f32
    /// -ctv f32 --fa off), `defaults` (llama.cpp's own), or both (comma list).
    #[arg(long, default_value = "matched,defaults")]
    pub llama_settings: String,
    /// PyTorch settings to run: `matched` (candle's attention path: attn_implementation=eager),
    /// `defaults` (transformers' own, sdpa), or both (comma list).
    #[arg(long, default_value = "matched,defaults")]
    pub torch_settings: String,
    /// Python of the PyTorch venv (default: target/peers/torch-venv/bin/python from
    /// scripts/setup-torch.sh).
    #[arg(long)]
    pub torch_python: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

fn parse_peers(v: Option<&str>) -> crate::Result<Option<Vec<Peer>>> {
    let Some(v) = v else { return Ok(None) };
    let mut out = Vec::new();
    for p in v.split(',').filter(|p| !p.trim().is_empty()) {
        let peer = Peer::parse(p).ok_or_else(|| {
            fail!(
                "--peers {v}: unknown peer `{}` (allowed: {})",
                p.trim(),
                Peer::ALLOWED
            )
        })?;
        if !out.contains(&peer) {
            out.push(peer);
        }
    }
    ensure!(
        !out.is_empty(),
        "--peers {v:?}: name at least one of {}",
        Peer::ALLOWED
    );
    Ok(Some(out))
}

/// Parses a comma list of `matched` and `defaults` (`flag`: the option, for the error).
fn parse_setting_list<T: PartialEq>(
    flag: &str,
    v: &str,
    matched: impl Fn() -> T,
    defaults: impl Fn() -> T,
) -> crate::Result<Vec<T>> {
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let s = match p {
            "matched" => matched(),
            "defaults" => defaults(),
            _ => bail!("{flag} {v}: unknown setting `{p}` (allowed: matched, defaults)"),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    ensure!(
        !out.is_empty(),
        "{flag} {v:?}: name matched, defaults or both"
    );
    Ok(out)
}

pub fn peers(a: PeersArgs) -> crate::Result<()> {
    let tier = Tier::parse(&a.suite).ok_or_else(|| {
        fail!(
            "--suite {:?}: unknown tier (allowed: {})",
            a.suite,
            Tier::ALLOWED
        )
    })?;
    ensure!(a.trials >= 1, "--trials must be at least 1");
    let wanted = parse_peers(a.peers.as_deref())?;
    let settings = parse_setting_list(
        "--llama-settings",
        &a.llama_settings,
        || LlamaSetting::matched("f32", false),
        LlamaSetting::defaults,
    )?;
    let torch_settings = parse_setting_list(
        "--torch-settings",
        &a.torch_settings,
        || TorchSetting::matched("eager"),
        TorchSetting::defaults,
    )?;
    let (device, dtype, label) = a.target.resolve()?;
    // On a GPU the llama.cpp peer is its CUDA build with every layer offloaded (-ngl 99), in
    // each setting: `matched` then differs from candle only in the engine, `defaults` is what a
    // llama.cpp user on the GPU runs (its own KV type and flash attention).
    let settings: Vec<LlamaSetting> = if device.to_string().starts_with("cuda") {
        settings.into_iter().map(LlamaSetting::on_gpu).collect()
    } else {
        settings
    };
    // Same threads, really: candle's two pools must agree before a peer gets their count.
    let pools = CandlePools::current();
    let mut warnings: Vec<String> = Vec::new();
    let candle_threads = match pools.agreed() {
        Ok(n) => n,
        Err(e) if a.allow_thread_mismatch => {
            let w = format!("warning: {e} (kept: --allow-thread-mismatch)")
                .replace(" or pass --allow-thread-mismatch", "");
            println!("{w}");
            warnings.push(w);
            pools.matmul
        }
        Err(e) => return Err(e.into()),
    };
    let peer_threads = a.peer_threads.unwrap_or(candle_threads);
    ensure!(peer_threads >= 1, "--peer-threads must be at least 1");
    if let Some(w) = check_threads(
        Peer::Torch,
        candle_threads,
        Some(peer_threads),
        a.allow_thread_mismatch,
    )
    .map_err(|e| {
        fail!(
            "--peer-threads {peer_threads}: {}",
            e.to_string().replace("torch ran", "the peers would run")
        )
    })? {
        warnings.push(w.replace("torch ran", "the peers run"));
    }
    let plan = Plan {
        models: parse_models(&a.model, "--model")?,
        tier: Some(tier),
        scenarios: tier.scenarios(),
        common: Common::cli(
            device,
            dtype,
            parse_seed(&a.seed.to_string(), "--seed")?,
            label,
            crate::models::attention::Attention::Eager,
        ),
    };
    ensure!(
        plan.models.len() == 1,
        "--model: peers compare one model at a time"
    );
    let model_label = plan.models[0].0.clone();
    let dev = plan.common.device.open_for("--device")?;
    // candle's side is the generation suite's (`modelbench run`'s), run by the same loop and
    // trial loop; the peers run beside it, their repetitions alternating with its trials.
    let save = !a.target.no_save;
    let pool_warning = pools.agreed().is_err().then(|| warnings[0].clone());
    let suite = PeersSuite::new(
        plan.suite(&dev),
        PeerOptions {
            wanted,
            llama_timed_ids: a.llama_timed_ids.clone(),
            torch_python: a.torch_python.clone(),
            llama_settings: settings,
            torch_settings,
            pools,
            candle_threads,
            peer_threads,
            allow_thread_mismatch: a.allow_thread_mismatch,
            pool_warning,
            warmup: a.warmup,
            trials: a.trials,
        },
    );
    let mut run = RunDir::new(&reports_root(), plan.common.label.as_deref());
    let mut driver = Trials::new(a.warmup, a.trials, save);
    run_suite(&suite, &mut driver, &mut run)?;
    warnings.extend(suite.warnings());

    let table = peers_table(run.records());
    println!("\n{table}");
    print!("{}", engines_list(run.records()));
    for w in &warnings {
        println!("{w}");
    }
    if !suite.any_peer() {
        println!("no peer ran: candle's numbers only (see the skip lines above)");
    }
    if !save {
        return Ok(());
    }
    run.put_file(
        "peers.md",
        format!(
            "# modelbench peers: {model_label}, {} tier\n\n{}\n\n{table}\n{}",
            tier.name(),
            PEERS_NOTE.replace("{machine}", &run.records()[0].hardware.describe()),
            engines_list(run.records())
        )
        .into_bytes(),
    )?;
    let png = run.path.join("peers.png");
    if peers_png(
        &png,
        &format!("{model_label}: candle vs peers ({} tier)", tier.name()),
        run.records(),
    )? {
        println!("chart: {}", png.display());
    }
    // Complete (its index.html again, now that peers.md and peers.png exist).
    run.complete()?;
    println!("run folder: {}", run.path.display());
    Ok(())
}
