//! `modelbench verify --model M`: the KL-divergence quality gate (workloads::kld) for any GGUF
//! against llama.cpp on the same file, or for a folder (a dequantized GGUF, `modelbench
//! dequantize`) against llama.cpp on the GGUF it came from. The reference (llama.cpp's top-10
//! log-probabilities over the corpus) is the committed one when it was made from this very
//! file, corpus and windowing;
//! otherwise it is computed once per file sha256 and corpus with
//! scripts/llama-cpp-kld-reference.sh and cached under target/modelbench-verify/ (llama.cpp is
//! built with scripts/build-llama-cpp.sh first when missing). The verdict is stored under the
//! key file sha256 + implementation + device + dtype + commit; generation records carry it
//! only under that exact key.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use crate::app::Context;
use crate::config::plans::parse_models;
use crate::engine::perplexity::Progress;
use crate::engine::scenario::prepare;
use crate::models::sources::loading::open;
use crate::models::Weights;
use crate::output::quality::save;
use crate::serving::server::{served_loaded, Options};
use crate::util::fsio::file_sha256;
use crate::workloads::kld::{reference_command, run_kld_gate, table, KldReference};
use clap::Args;

use crate::app::args::{FastWeightsArg, TargetArgs};

/// The committed references: (file, what they were made from is in their provenance).
const COMMITTED: &[&str] = &[
    "fixtures/reference/gemma-3-270m-Q4_K_M.ruth.kld.json",
    "fixtures/reference/gemma-3-270m-Q4_K_M.kld.json",
    "fixtures/reference/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.ruth.kld.json",
    "fixtures/reference/SmolLM2-135M-Instruct.Q4_1.ruth.kld.json",
];
/// The held-out verdict text (fixtures/corpus/SOURCE.md): nothing was tuned on it. The
/// development text, on which kernels were chosen, is fixtures/corpus/kjv-genesis-1-3.txt.
const DEFAULT_CORPUS: &str = "fixtures/corpus/kjv-ruth-1-4.txt";

#[derive(Args)]
pub struct VerifyArgs {
    /// A GGUF model reference: gguf:owner/repo[/file.gguf][?impl=...], gguf:fixture:<family>,
    /// or a path to a .gguf file; or a folder (config.json + safetensors) judged against
    /// llama.cpp on --reference-gguf.
    #[arg(long)]
    pub model: String,
    /// The GGUF llama.cpp runs when --model is a folder: by default the file its config.json
    /// names (`modelbench_gguf`, written by `modelbench dequantize`), which must still have
    /// the sha256 recorded there.
    #[arg(long)]
    pub reference_gguf: Option<PathBuf>,
    /// llama-perplexity's chunk length (-c).
    #[arg(long, default_value_t = 512)]
    pub n_ctx: usize,
    /// Chunks of the corpus to score (--chunks); n_ctx/2 - 1 positions each.
    #[arg(long, default_value_t = 2)]
    pub chunks: usize,
    /// The text (default fixtures/corpus/kjv-ruth-1-4.txt, the held-out verdict text;
    /// fixtures/corpus/kjv-genesis-1-3.txt is the development text kernels were tuned on).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// llama.cpp build folder (default $LLAMA_CPP_DIR, else target/llama-cpp/0.3.36, from
    /// scripts/build-llama-cpp.sh).
    #[arg(long)]
    pub llama_cpp: Option<PathBuf>,
    /// Judge at full precision (issue 61): llama.cpp rewrites the GGUF with every tensor in
    /// F32, its f32 logits over the whole vocabulary are the reference (an exact KLD, no
    /// 16-bit floor), and the limits are llama.cpp against itself under perturbations
    /// legitimate for an f32 implementation; the model runs the same F32 file. Catches
    /// architecture bugs (RoPE base +0.5%, RoPE tables in f16, epsilon x10) that the
    /// quantized file's activation-rounding noise hides: docs/quality-full-precision.md.
    #[arg(long, conflicts_with_all = ["served", "fast_weights"])]
    pub full_precision: bool,
    /// Compute the reference again even when a cached one exists.
    #[arg(long)]
    pub fresh_reference: bool,
    /// Judge the model as `modelbench serve` computes a request (the project's Gemma 3: the
    /// batched path with prefill chunks; other models: their own forward), not the bench
    /// path. Implied by --fast-weights.
    #[arg(long)]
    pub served: bool,
    /// As `serve --fast-weights` runs it (implies --served).
    #[command(flatten)]
    pub fast: FastWeightsArg,
    #[command(flatten)]
    pub target: TargetArgs,
}

fn root() -> PathBuf {
    crate::util::root().to_path_buf()
}

/// A committed reference made from this file, corpus and windowing, if any.
fn committed(sha: &str, corpus_sha: &str, n_ctx: usize, chunks: usize) -> Option<PathBuf> {
    COMMITTED.iter().map(|p| root().join(p)).find(|p| {
        KldReference::load(p).is_ok_and(|r| {
            r.provenance["gguf"]["sha256"] == sha
                && r.provenance["corpus"]["sha256"] == corpus_sha
                && r.n_ctx == n_ctx
                && r.n_chunks == chunks
        })
    })
}

fn ensure_llama_cpp(dir: &Path) -> crate::Result<()> {
    if dir.join("bin/llama-perplexity").is_file() && dir.join("build-info.json").is_file() {
        return Ok(());
    }
    let script = root().join("scripts/build-llama-cpp.sh");
    eprintln!(
        "verify: llama.cpp is not built in {}; building it with {} (10-25 minutes on 2 cores; measured 985 s on this project's 2-core VM) ...",
        dir.display(),
        script.display()
    );
    let t = Instant::now();
    let st = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(
        st.success(),
        "{} failed ({st}); llama.cpp is needed to compute a reference for this file (see its output above)",
        script.display()
    );
    eprintln!(
        "verify: built llama.cpp in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn verify(a: &VerifyArgs) -> crate::Result<ExitCode> {
    let (spec, dt, _) = a.target.resolve()?;
    ensure!(
        a.n_ctx >= 8 && a.chunks >= 1,
        "--n-ctx {} --chunks {}: need n-ctx >= 8 and chunks >= 1",
        a.n_ctx,
        a.chunks
    );
    let corpus = a
        .corpus
        .clone()
        .unwrap_or_else(|| root().join(DEFAULT_CORPUS));
    ensure!(
        corpus.is_file(),
        "--corpus {}: no such file; give a UTF-8 text file",
        corpus.display()
    );
    let models = parse_models(&a.model, "--model")?;
    let (l, r) = &models[0];
    let res = prepare(l, r, &[])?;
    let recorded = res.config.get("modelbench_gguf");
    let gguf = match (&res.weights, &a.reference_gguf) {
        (Weights::Gguf(g), None) => g.clone(),
        (Weights::Gguf(_), Some(_)) => bail!(
            "--reference-gguf is for a folder model; --model {l} is a GGUF, which llama.cpp runs itself"
        ),
        (_, Some(g)) => g.clone(),
        (_, None) => match recorded.and_then(|r| r["path"].as_str()) {
            Some(p) => PathBuf::from(p),
            None => bail!(
                "--model {l}: not a GGUF file and its config.json names none (`modelbench_gguf`); `verify` compares against llama.cpp, which reads GGUF only: give --reference-gguf <file.gguf> for a folder"
            ),
        },
    };
    ensure!(
        gguf.is_file(),
        "reference GGUF {}: no such file; give --reference-gguf <file.gguf>",
        gguf.display()
    );
    let t = Instant::now();
    let sha = file_sha256(&gguf)?;
    if a.reference_gguf.is_none() {
        if let Some(want) = recorded.and_then(|r| r["sha256"].as_str()) {
            ensure!(
                want == sha,
                "reference GGUF {}: sha256 {} is not the {} --model {l} was made from (config.json's modelbench_gguf); give --reference-gguf <file.gguf>",
                gguf.display(),
                &sha[..16],
                &want[..want.len().min(16)]
            );
        }
    }
    let corpus_sha = file_sha256(&corpus)?;
    eprintln!(
        "verify: {} sha256 {} ({:.1} s)",
        gguf.display(),
        &sha[..16],
        t.elapsed().as_secs_f64()
    );

    let cached = crate::util::fsio::target_dir()
        .join("modelbench-verify")
        .join(format!(
            "{}-{}-c{}x{}.kld.json",
            &sha[..16],
            &corpus_sha[..16],
            a.n_ctx,
            a.chunks
        ));
    let ref_path = match committed(&sha, &corpus_sha, a.n_ctx, a.chunks) {
        Some(p) if !a.fresh_reference => {
            eprintln!(
                "verify: reference {} (committed; made by llama.cpp from this very file)",
                p.display()
            );
            p
        }
        _ if cached.is_file() && !a.fresh_reference && KldReference::load(&cached).is_ok() => {
            eprintln!("verify: reference {} (cached)", cached.display());
            cached
        }
        _ => {
            let dir = a
                .llama_cpp
                .clone()
                .unwrap_or_else(crate::util::llama_cpp::dir);
            ensure_llama_cpp(&dir)?;
            eprintln!("verify: computing the reference with llama.cpp (llama-perplexity --kl-divergence-base, two runs) ...");
            let t = Instant::now();
            let st = reference_command(&gguf, &cached, &dir, &corpus, (a.n_ctx, a.chunks))
                .status()
                .context("cannot run scripts/llama-cpp-kld-reference.sh")?;
            ensure!(
                st.success(),
                "scripts/llama-cpp-kld-reference.sh failed ({st}) for {}; see its error above",
                gguf.display()
            );
            eprintln!(
                "verify: reference {} ({:.0} s)",
                cached.display(),
                t.elapsed().as_secs_f64()
            );
            cached
        }
    };
    let reference = KldReference::load(&ref_path)?;
    ensure!(
        reference.provenance["gguf"]["sha256"] == sha.as_str(),
        "{}: made from another file (sha256 {}), not {} ({}); run with --fresh-reference",
        ref_path.display(),
        reference.provenance["gguf"]["sha256"],
        gguf.display(),
        sha
    );

    if a.full_precision {
        let folder = !matches!(res.weights, Weights::Gguf(_));
        return full_precision(a, l, &gguf, reference, folder.then_some(res));
    }
    let dev = spec.open_for("--device")?;
    let mut loaded = open(res, &dev, dt, Some(a.n_ctx))?;
    if a.served || a.fast.fast_weights {
        // The server's own model-thread code with one slot (serving::server::served).
        let mut o = Options::new(l, a.n_ctx);
        o.fast_weights = a.fast.fast_weights;
        loaded = served_loaded(loaded, &o)?;
    }
    eprintln!(
        "verify: {}",
        crate::models::sources::loading::load_line(&loaded)
    );
    let implementation = loaded.model.meta().provenance.implementation.clone();
    let mut print = |p: &Progress| eprintln!("verify: {}", p.line());
    let v = run_kld_gate(
        loaded.model.as_mut(),
        l,
        &implementation,
        &reference,
        &ref_path.display().to_string(),
        Some(&mut print),
    )?;
    println!("{l} [{implementation}] on {spec}, {}", dt.as_str());
    println!("reference: {}", v.reference);
    println!("corpus: {}", v.corpus);
    println!("thresholds: {}", v.thresholds.how);
    println!("{}", table(&v));
    let key = crate::workloads::generation::verdict_key(&loaded, spec, dt)
        .map_err(|e| fail!("{l}: {e}"))?;
    let path = save(
        &key,
        v.passed,
        serde_json::to_value(&v).expect("serializable"),
    )?;
    println!(
        "stored {} (key: file sha256 {}.., {}, {}, {}, commit {})",
        path.display(),
        &key.file_sha256[..16],
        key.implementation,
        key.device,
        key.dtype,
        key.commit
    );
    Ok(crate::judge::gate::exit_code(!v.passed))
}

/// `verify --full-precision`: the model's implementation on llama.cpp's F32 rewrite of `gguf`
/// (or, for a folder model, `folder`: its f32 weights, `gguf` dequantized), judged against
/// llama.cpp's f32 logits of that rewrite at the reference's positions (workloads::kld_full).
fn full_precision(
    a: &VerifyArgs,
    label: &str,
    gguf: &Path,
    positions: KldReference,
    folder: Option<crate::models::sources::Resolved>,
) -> crate::Result<ExitCode> {
    use crate::workloads::kld_full::{run_full_gate, table, FullReference};
    let (spec, dt, _) = a.target.resolve()?;
    let dir = a
        .llama_cpp
        .clone()
        .unwrap_or_else(crate::util::llama_cpp::dir);
    ensure_llama_cpp(&dir)?;
    eprintln!(
        "verify: full precision: llama.cpp's F32 rewrite and its f32 logits (5 runs; cached) ..."
    );
    let t = Instant::now();
    let r = FullReference::make(
        gguf,
        positions,
        &dir,
        &crate::util::fsio::target_dir().join("modelbench-verify/full"),
    )?;
    eprintln!(
        "verify: {} ({:.0} s)",
        r.f32_gguf.display(),
        t.elapsed().as_secs_f64()
    );
    let res = match folder {
        // A folder's weights are the GGUF's, dequantized: judged as they are.
        Some(res) => res,
        None => {
            // The same implementation choice (`?impl=`) on the F32 file.
            let f32_label = match label.split_once('?') {
                Some((_, q)) => format!("gguf:{}?{q}", r.f32_gguf.display()),
                None => format!("gguf:{}", r.f32_gguf.display()),
            };
            let models = parse_models(&f32_label, "--model")?;
            let (fl, fr) = &models[0];
            prepare(fl, fr, &[])?
        }
    };
    let dev = spec.open_for("--device")?;
    let mut loaded = open(res, &dev, dt, Some(r.positions.n_ctx))?;
    eprintln!(
        "verify: {}",
        crate::models::sources::loading::load_line(&loaded)
    );
    let implementation = loaded.model.meta().provenance.implementation.clone();
    let mut print = |p: &Progress| eprintln!("verify: {}", p.line());
    let v = run_full_gate(
        loaded.model.as_mut(),
        label,
        &implementation,
        &r,
        Some(&mut print),
    )?;
    println!(
        "{label} [{implementation}] at full precision (F32 weights) on {spec}, {}",
        dt.as_str()
    );
    println!("reference: {}", v.reference);
    println!("thresholds: {}", v.thresholds.how);
    println!("{}", table(&v));
    Ok(crate::judge::gate::exit_code(!v.passed))
}
