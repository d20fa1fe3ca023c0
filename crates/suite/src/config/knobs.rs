//! The one knob table. `cargo bench` hands argv to criterion, so the suite is configured by
//! environment variables; each is declared here once with its doc, default and parser. The
//! table drives env validation ([`validate_env`]), the CLI's `--help` ([`help`]) and docs/knobs.md's
//! knob table ([`readme_table`], checked by a test), and the plans read knobs only through
//! [`get`], which refuses a name that is not in the table.

use crate::error::{Error, Result};

use super::values as p;
use DefaultValue::{Described, Value};

/// The benches of benches/*.rs (`harness::main` runs one; a knob's [`Scope`] names one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// The generation scenarios and the `overhead` group.
    Generation,
    Moe,
    Psann,
    Checkpoint,
    /// Speed against KV-cache depth (group `depth`).
    Depth,
    /// The architecture sweep's small grid (group `arch_sweep`).
    Arch,
}

impl Bench {
    /// The bench target's name (benches/<name>.rs, `cargo bench --bench <name>`).
    pub fn name(self) -> &'static str {
        match self {
            Bench::Generation => "generation",
            Bench::Moe => "moe",
            Bench::Psann => "psann",
            Bench::Checkpoint => "checkpoint",
            Bench::Depth => "depth",
            Bench::Arch => "arch",
        }
    }
}

/// Which benches read a knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every bench.
    All,
    /// One bench.
    Bench(Bench),
    /// Read while resolving models and writing reports, by every bench and the CLI.
    Paths,
    /// Read by the test suite (`cargo test`), not by the benches.
    Tests,
}

impl Scope {
    pub const GENERATION: Scope = Scope::Bench(Bench::Generation);
    pub const MOE: Scope = Scope::Bench(Bench::Moe);
    pub const PSANN: Scope = Scope::Bench(Bench::Psann);
    pub const CHECKPOINT: Scope = Scope::Bench(Bench::Checkpoint);
    pub const DEPTH: Scope = Scope::Bench(Bench::Depth);
    pub const ARCH: Scope = Scope::Bench(Bench::Arch);

    pub fn name(self) -> &'static str {
        match self {
            Scope::All => "all benches",
            Scope::Bench(b) => b.name(),
            Scope::Paths => "all (and the CLI)",
            Scope::Tests => "`cargo test`",
        }
    }
}

/// A knob's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// A value of the knob, parsed like a set one when the knob is unset ([`value`]); empty:
    /// unset means "none" (e.g. no label).
    Value(&'static str),
    /// Computed where the knob is read (it depends on the device, the grid or the checkout);
    /// the text says how.
    Described(&'static str),
}

impl DefaultValue {
    /// As `--help` and docs/knobs.md show it.
    pub fn text(self) -> &'static str {
        match self {
            DefaultValue::Value(v) | DefaultValue::Described(v) => v,
        }
    }
}

pub struct Knob {
    pub name: &'static str,
    pub scope: Scope,
    /// Allowed values, as a user reads them.
    pub values: &'static str,
    pub default: DefaultValue,
    pub doc: &'static str,
    /// The parser the plans use (the parsed value is dropped here).
    pub check: fn(&str) -> Result<()>,
    /// A valid and an invalid value: the knob test runs both.
    pub examples: (&'static str, &'static str),
}

fn ok<T>(r: Result<T>) -> Result<()> {
    r.map(|_| ())
}

pub const KNOBS: &[Knob] = &[
    Knob {
        name: "MODELBENCH_MODELS",
        scope: Scope::GENERATION,
        values: "comma list of model references (see docs/models.md)",
        default: Value("fixture:llama,fixture:qwen3,fixture:gemma3"),
        doc: "models of the generation scenarios (the overhead group always uses the three fixtures)",
        check: |v| ok(p::parse_models(v, "MODELBENCH_MODELS")),
        examples: ("fixture:llama", "fixture:gpt2"),
    },
    Knob {
        name: "MODELBENCH_TIER",
        scope: Scope::GENERATION,
        values: "`quick` (short, medium), `standard` (+ prefill, decode, sampled), `full` (all seven)",
        default: Value("quick"),
        doc: "which scenarios run",
        check: |v| ok(p::parse_tier(v)),
        examples: ("full", "huge"),
    },
    Knob {
        name: "MODELBENCH_SCENARIOS",
        scope: Scope::GENERATION,
        values: "comma list of scenario names",
        default: Value(""),
        doc: "scenarios to run instead of a tier (not with MODELBENCH_TIER)",
        check: |v| ok(p::parse_scenarios(v)),
        examples: ("short,decode", "short,huge"),
    },
    Knob {
        name: "MODELBENCH_DEVICE",
        scope: Scope::All,
        values: "`cpu`, `cuda`, `cuda:N` (CUDA needs `--features cuda`)",
        default: Value("cpu"),
        doc: "device every workload runs on",
        check: |v| ok(p::parse_device(v, "MODELBENCH_DEVICE")),
        examples: ("cpu", "tpu"),
    },
    Knob {
        name: "MODELBENCH_DTYPE",
        scope: Scope::All,
        values: "`f32`, `f16`, `bf16`",
        default: Described("f32 on CPU (candle's CPU bf16 matmul is ~10x slower), bf16 on CUDA"),
        doc: "precision of float models (GGUF models run their own weight types; PSANN's grid is fp32 by its spec)",
        check: |v| ok(p::parse_dtype_knob(v, "MODELBENCH_DTYPE")),
        examples: ("bf16", "f8"),
    },
    Knob {
        name: "MODELBENCH_SEED",
        scope: Scope::All,
        values: "integer",
        default: Value("42"),
        doc: "seed of prompts, sampling, inputs and seeded weights",
        check: |v| ok(p::parse_seed(v, "MODELBENCH_SEED")),
        examples: ("7", "-1"),
    },
    Knob {
        name: "MODELBENCH_MEASURE_SECS",
        scope: Scope::All,
        values: "seconds > 0",
        default: Value("2"),
        doc: "least criterion measurement window per benchmark (long iterations stretch it to 10 samples of 2 iterations)",
        check: |v| ok(p::parse_secs(v, "MODELBENCH_MEASURE_SECS")),
        examples: ("1.5", "0"),
    },
    Knob {
        name: "MODELBENCH_LABEL",
        scope: Scope::All,
        values: "1-64 of `[A-Za-z0-9._-]`",
        default: Value(""),
        doc: "suffix of the run folder under target-reports/",
        check: |v| ok(p::check_label(v, "MODELBENCH_LABEL")),
        examples: ("nightly", "a/b"),
    },
    Knob {
        name: "MODELBENCH_PEERS",
        scope: Scope::GENERATION,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "add a llama.cpp row to the generation run's summary (run README, and printed at the end) for each GGUF model and scenario: llama-timed-ids of scripts/build-llama-cpp.sh, candle's KV type and attention (f32, flash attention off), 5 repetitions after candle's, same prompt-id generator and thread count; its ratios are ratios of medians without an interval (`modelbench peers` alternates and gives intervals). Without llama.cpp it is a one-line skip; never required, not set in CI",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_PEERS")),
        examples: ("1", "llama"),
    },
    Knob {
        name: "MODELBENCH_OFFLINE",
        scope: Scope::Paths,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "never touch the network (as HF_HUB_OFFLINE=1)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_OFFLINE")),
        examples: ("1", "maybe"),
    },
    Knob {
        name: "MODELBENCH_FIXTURE_CACHE",
        scope: Scope::Paths,
        values: "a directory",
        default: Described("target/modelbench-fixtures/hub"),
        doc: "where fixture models are written",
        check: |v| ok(p::parse_dir(v, "MODELBENCH_FIXTURE_CACHE")),
        examples: ("target/modelbench-fixtures/hub", "/dev/null/x"),
    },
    Knob {
        name: "MODELBENCH_REPORTS",
        scope: Scope::Paths,
        values: "a directory",
        default: Described("target-reports/"),
        doc: "where run folders go",
        check: |v| ok(p::parse_dir(v, "MODELBENCH_REPORTS")),
        examples: ("target-reports", "/dev/null/x"),
    },
    Knob {
        name: "MODELBENCH_DB",
        scope: Scope::Paths,
        values: "`off`, `sqlite:PATH`, a file path, or `postgres://USER@HOST:PORT/DB`",
        default: Described("target-reports/modelbench.db"),
        doc: "results history database every run's records also go into (`--db` overrides it)",
        check: |v| {
            crate::output::db::DbTarget::parse(v)
                .map(|_| ())
                .map_err(|reason| Error::knob("MODELBENCH_DB", v, reason, crate::output::db::DbTarget::ALLOWED))
        },
        examples: ("off", "mysql://x"),
    },
    Knob {
        name: "MODELBENCH_MOE_EXPERTS",
        scope: Scope::MOE,
        values: "comma list of positive integers",
        default: Value("8,32"),
        doc: "expert counts of the moe_topk grid",
        check: |v| ok(p::parse_list("MODELBENCH_MOE_EXPERTS", v)),
        examples: ("8,16,32", "0"),
    },
    Knob {
        name: "MODELBENCH_MOE_TOPK",
        scope: Scope::MOE,
        values: "comma list of positive integers, none above the smallest expert count",
        default: Value("1,4"),
        doc: "top-k values of the moe_topk grid (also the dense-k rows)",
        check: |v| ok(p::parse_list("MODELBENCH_MOE_TOPK", v)),
        examples: ("1,2,4", "2,x"),
    },
    Knob {
        name: "MODELBENCH_MOE_TOKENS",
        scope: Scope::MOE,
        values: "comma list of positive integers",
        default: Value("1,512"),
        doc: "tokens per forward (1 = decode, hundreds = prefill)",
        check: |v| ok(p::parse_list("MODELBENCH_MOE_TOKENS", v)),
        examples: ("1,128,512", "1,-5"),
    },
    Knob {
        name: "MODELBENCH_MOE_HIDDEN",
        scope: Scope::MOE,
        values: "positive integer",
        default: Value("512"),
        doc: "hidden size (Qwen3-30B-A3B's 2048 / 4)",
        check: |v| ok(p::positive("MODELBENCH_MOE_HIDDEN", v)),
        examples: ("256", "-3"),
    },
    Knob {
        name: "MODELBENCH_MOE_INTERMEDIATE",
        scope: Scope::MOE,
        values: "positive integer",
        default: Value("192"),
        doc: "per-expert intermediate size (Qwen3-30B-A3B's 768 / 4)",
        check: |v| ok(p::positive("MODELBENCH_MOE_INTERMEDIATE", v)),
        examples: ("96", "0"),
    },
    Knob {
        name: "MODELBENCH_PSANN_GRID",
        scope: Scope::PSANN,
        values: "`default` (d256 L4, T <= 256), `gpu03` (the large grid: 64K-256K tokens, T <= 4096; needs ~24-48 GiB)",
        default: Value("default"),
        doc: "which PSANN-LM throughput grid",
        check: |v| ok(p::parse_grid(v)),
        examples: ("gpu03", "huge"),
    },
    Knob {
        name: "MODELBENCH_PSANN_BASES",
        scope: Scope::PSANN,
        values: "comma list of `respsann`, `sgrpsann`, `waveresnet`",
        default: Value("respsann,waveresnet"),
        doc: "PSANN-LM bases of the grid",
        check: |v| ok(p::parse_bases(v)),
        examples: ("waveresnet", "transformer"),
    },
    Knob {
        name: "MODELBENCH_PSANN_BATCH_TOKENS",
        scope: Scope::PSANN,
        values: "comma list of positive integers",
        default: Described("256,1024 (gpu03: 65536,131072,262144)"),
        doc: "tokens per forward of `psann_throughput` (B x T by the PSANN throughput grid's shape rule)",
        check: |v| ok(p::parse_list("MODELBENCH_PSANN_BATCH_TOKENS", v)),
        examples: ("2048", "0,1"),
    },
    Knob {
        name: "MODELBENCH_PSANN_TRAIN_TOKENS",
        scope: Scope::PSANN,
        values: "comma list of positive integers, or `none`",
        default: Described("256 (gpu03: the batch tokens)"),
        doc: "tokens per step of `psann_train` (a full train step is ~3x a forward)",
        check: |v| ok(p::parse_optional_list("MODELBENCH_PSANN_TRAIN_TOKENS", v)),
        examples: ("none", "many"),
    },
    Knob {
        name: "MODELBENCH_TRAIN_STEP_DTYPES",
        scope: Scope::PSANN,
        values: "comma list of `f32`, `f16`, `bf16`, or `none`",
        default: Value("f32"),
        doc: "matmul precisions of group `train_step` (the training-throughput sweep on a byte-level d64 L2 waveresnet; parameters stay f32)",
        check: |v| ok(p::parse_dtypes(v, "MODELBENCH_TRAIN_STEP_DTYPES")),
        examples: ("f32,bf16", "f8"),
    },
    Knob {
        name: "MODELBENCH_TRAIN_STEP_SEQS",
        scope: Scope::PSANN,
        values: "comma list of positive integers",
        default: Value("64"),
        doc: "sequence lengths of group `train_step`",
        check: |v| ok(p::parse_list("MODELBENCH_TRAIN_STEP_SEQS", v)),
        examples: ("64,128", "0"),
    },
    Knob {
        name: "MODELBENCH_TRAIN_STEP_BATCHES",
        scope: Scope::PSANN,
        values: "comma list of positive integers",
        default: Value("2,4"),
        doc: "batch sizes (sequences) of group `train_step`",
        check: |v| ok(p::parse_list("MODELBENCH_TRAIN_STEP_BATCHES", v)),
        examples: ("1,8", "x"),
    },
    Knob {
        name: "MODELBENCH_ATTENTION",
        scope: Scope::All,
        values: "`eager`, `flash` (CUDA builds with `--features flash-attn`), `chunked` (512-token chunks), `chunked:N`",
        default: Value("eager"),
        doc: "attention backend of the generation and depth benches; `chunked` feeds a prompt in chunks at increasing positions (scores C x context instead of T x T); records name it (`model.attention`)",
        check: |v| ok(p::parse_attention(v, "MODELBENCH_ATTENTION")),
        examples: ("chunked:256", "sdpa"),
    },
    Knob {
        name: "MODELBENCH_ARCH_FAMILIES",
        scope: Scope::ARCH,
        values: "comma list of `dense`, `mixture` (`omni_mixture`), `state_space`, `hybrid` (`hybrid_transformer`)",
        default: Value("dense,mixture,state_space,hybrid"),
        doc: "backbone families of group `arch_sweep` (each a forward and a train step of B 2 x T 32, 2 horizon heads, vocab 256)",
        check: |v| ok(p::parse_families(v, "MODELBENCH_ARCH_FAMILIES")),
        examples: ("dense,hybrid", "rnn"),
    },
    Knob {
        name: "MODELBENCH_ARCH_DIMS",
        scope: Scope::ARCH,
        values: "comma list of positive even integers (multiples of 64 above 64)",
        default: Value("64"),
        doc: "model widths of group `arch_sweep`",
        check: |v| ok(p::parse_list("MODELBENCH_ARCH_DIMS", v)),
        examples: ("64,128", "0"),
    },
    Knob {
        name: "MODELBENCH_ARCH_DEPTHS",
        scope: Scope::ARCH,
        values: "comma list of positive integers",
        default: Value("2"),
        doc: "layer counts of group `arch_sweep` (hybrid: one attention layer in 4, at least one)",
        check: |v| ok(p::parse_list("MODELBENCH_ARCH_DEPTHS", v)),
        examples: ("2,4", "two"),
    },
    Knob {
        name: "MODELBENCH_DEPTH_MODELS",
        scope: Scope::DEPTH,
        values: "comma list of model references (see docs/models.md)",
        default: Value("fixture:llama,fixture:qwen3"),
        doc: "models of the `depth` group (fixture:gemma3 is left out by default: past its 64-token window candle's Gemma3 restores by replaying the fill token by token, minutes per group)",
        check: |v| ok(p::parse_models(v, "MODELBENCH_DEPTH_MODELS")),
        examples: ("fixture:qwen3", "fixture:gpt2"),
    },
    Knob {
        name: "MODELBENCH_DEPTHS",
        scope: Scope::DEPTH,
        values: "comma list of integers >= 0",
        default: Value("0,256,1024"),
        doc: "KV-cache depths of the `depth` group (the cache is filled to each once, untimed, and restored between iterations)",
        check: |v| ok(p::parse_depths(v, "MODELBENCH_DEPTHS")),
        examples: ("0,512,2048", "0,-1"),
    },
    Knob {
        name: "MODELBENCH_DEPTH_PROMPT",
        scope: Scope::DEPTH,
        values: "integer >= 0 (0: no prefill)",
        default: Value("64"),
        doc: "prefill tokens timed at each depth",
        check: |v| ok(p::parse_count(v, "MODELBENCH_DEPTH_PROMPT")),
        examples: ("128", "lots"),
    },
    Knob {
        name: "MODELBENCH_DEPTH_GEN",
        scope: Scope::DEPTH,
        values: "integer >= 0 (0: no decode)",
        default: Value("16"),
        doc: "decode tokens timed at each depth",
        check: |v| ok(p::parse_count(v, "MODELBENCH_DEPTH_GEN")),
        examples: ("32", "-4"),
    },
    Knob {
        name: "MODELBENCH_INJECT_SLOWDOWN",
        scope: Scope::Paths,
        values: "`PHASE:PCT%` (PHASE `prefill`, `decode`, `all`), `PHASE:work=N`, `off`",
        default: Value("off"),
        doc: "calibration only: the generation engine busy-waits PCT% of each step's own time inside the timed region (or runs N iterations of a fixed loop, for instruction counts), to measure what slowdown the verdicts detect; records carry it",
        check: |v| ok(p::parse_injection(v, "MODELBENCH_INJECT_SLOWDOWN")),
        examples: ("decode:5%", "decode:fast"),
    },
    Knob {
        name: "MODELBENCH_INJECT_NUMERIC",
        scope: Scope::Paths,
        values: "`OP:PCT%` (OP `lm_head`), `off`",
        default: Value("off"),
        doc: "calibration only: multiplies one op's output by (1 + PCT%) in the engine's forward path (lm_head: the logits of every model), a known change of what the model computes, to check that the output verdict sees it; greedy ids stay, only the probe moves; records carry it",
        check: |v| ok(p::parse_numeric(v, "MODELBENCH_INJECT_NUMERIC")),
        examples: ("lm_head:0.5%", "lm_head:big"),
    },
    Knob {
        name: "MODELBENCH_HUGE_PAGES",
        scope: Scope::Paths,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("1"),
        doc: "every bench and CLI process restarts itself once at start with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, so its weights, KV cache and activations sit in transparent huge pages (kernel THP `madvise` or `always`); without them each process draws a speed at start and keeps it (measured: docs/verdicts.md, \"Huge pages for every timed process\"). `0` runs without; records store the setting (`build.huge_pages`, and the huge-page MiB measured) and `compare` refuses runs that differ in it",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_HUGE_PAGES")),
        examples: ("0", "sometimes"),
    },
    Knob {
        name: "MODELBENCH_FAST_WEIGHTS_FALLBACK",
        scope: Scope::Paths,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "`--fast-weights` (serve, verify) runs its fallback (Q5_0 as Q8_0 on candle's kernels, as on a CPU without AVX-512 VNNI) even where the project's VNNI kernels could run, so the fallback is judged on any machine; its label and verdict key say which path ran",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_FAST_WEIGHTS_FALLBACK")),
        examples: ("1", "maybe"),
    },
    Knob {
        name: "MODELBENCH_REQUIRE_QUALITY",
        scope: Scope::Tests,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "the tests of the real Gemma 3 270M (tests/quality.rs, kld.rs, verify.rs, batching.rs, gguf_tokenizer.rs, peers.rs) fail instead of skipping when it is not installed; `0` lets them skip even under CI=true (`.ci/run` sets it from the outcome of the model fetch: 0 only when the registry is unreachable)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_REQUIRE_QUALITY")),
        examples: ("1", "required"),
    },
    Knob {
        name: "MODELBENCH_REQUIRE_POSTGRES",
        scope: Scope::Tests,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "the PostgreSQL tests (tests/db.rs) fail instead of skipping when the `postgresql` package's initdb/pg_ctl are not installed; `0` lets them skip even under CI=true (`.ci/run` sets it after installing the package: 0 only when Debian's mirror is unreachable)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_REQUIRE_POSTGRES")),
        examples: ("1", "required"),
    },
    Knob {
        name: "MODELBENCH_REQUIRE_VALGRIND",
        scope: Scope::Tests,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "the instruction-count test (tests/instructions.rs) fails instead of skipping when valgrind is not installed; `0` lets it skip even under CI=true (`.ci/run` sets it after installing the package: 0 only when Debian's mirror is unreachable)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_REQUIRE_VALGRIND")),
        examples: ("1", "required"),
    },
    Knob {
        name: "MODELBENCH_REQUIRE_HEAPTRACK",
        scope: Scope::Tests,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "the hot-spot check of `modelbench memory --hotspots` (tests/memory_profile.rs) fails instead of skipping when heaptrack is not installed; `0` lets it skip even under CI=true (`.ci/run` sets it after installing the package: 0 only when Debian's mirror is unreachable)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_REQUIRE_HEAPTRACK")),
        examples: ("1", "required"),
    },
    Knob {
        name: "MODELBENCH_REQUIRE_CHROMIUM",
        scope: Scope::Tests,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "the browser test of the HTML report (tests/report_browser.rs) fails instead of skipping when Chromium is not installed; `0` lets it skip even under CI=true (`.ci/run` sets it after scripts/install-chromium.sh: 0 only when Debian's mirror is unreachable)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_REQUIRE_CHROMIUM")),
        examples: ("1", "required"),
    },
    Knob {
        name: "MODELBENCH_REQUIRE_OPENAI_CLIENT",
        scope: Scope::Tests,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "the official openai Python client's checks of `serve` (tests/openai_client.rs) fail instead of skipping when scripts/install-openai-client.sh's install is absent; `0` lets them skip even under CI=true (`.ci/run` sets it after the install: 0 only when PyPI is unreachable)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_REQUIRE_OPENAI_CLIENT")),
        examples: ("1", "required"),
    },
    Knob {
        name: "MODELBENCH_REQUIRE_LLAMA_CPP",
        scope: Scope::Tests,
        values: "`1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`",
        default: Value("0"),
        doc: "the tests that run llama.cpp (tests/verify.rs, ops.rs, gguf_tokenizer.rs, peers.rs) fail instead of skipping when scripts/build-llama-cpp.sh's build is absent; `0` lets them skip even under CI=true (`.ci/run` sets it after building llama.cpp: 0 only when PyPI is unreachable)",
        check: |v| ok(p::parse_bool(v, "MODELBENCH_REQUIRE_LLAMA_CPP")),
        examples: ("1", "required"),
    },
    Knob {
        name: "MODELBENCH_SKIP_LOG",
        scope: Scope::Tests,
        values: "a file path",
        default: Value(""),
        doc: "file each skipped test appends its one `skip:` line to (tests/common's `skip_or_fail`); `.ci/run` sets it and prints the file at its end",
        check: |v| {
            let f = std::path::Path::new(v.trim());
            if f.is_dir() {
                return Err(Error::knob("MODELBENCH_SKIP_LOG", v, "a directory", "a file path"));
            }
            match f.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(d) => ok(p::parse_dir(&d.to_string_lossy(), "MODELBENCH_SKIP_LOG")),
                None => Ok(()),
            }
        },
        examples: ("target/skips.txt", "/dev/null/x"),
    },
];

/// The knob of that name.
pub fn knob(name: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.name == name)
}

/// A knob's default value as the knob table states it, for a CLI flag that sets the same
/// thing (`modelbench depth --depths` and MODELBENCH_DEPTHS). Panics on an undeclared name
/// and on a knob whose default is [`DefaultValue::Described`] (computed where it is read).
pub fn default_of(name: &str) -> &'static str {
    match knob(name)
        .unwrap_or_else(|| panic!("{name} is not declared in config::knobs::KNOBS"))
        .default
    {
        Value(v) => v,
        Described(_) => panic!("{name}'s default is computed where it is read, not a value"),
    }
}

/// A knob's value from `lookup`, or its default value from the table when unset (see
/// [`get`] and [`default_of`]): how the plans read a knob with a [`DefaultValue::Value`].
pub fn value(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> String {
    get(lookup, name).unwrap_or_else(|| default_of(name).to_string())
}

/// A knob's value from `lookup` (blank counts as unset). Panics on a name missing from the
/// table: every knob a plan reads must be declared (a test runs every plan).
pub fn get(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    assert!(
        knob(name).is_some(),
        "{name} is read but not declared in config::knobs::KNOBS"
    );
    lookup(name).filter(|v| !v.trim().is_empty())
}

/// A boolean knob (`1`/`true`/`yes`/`on`, `0`/`false`/`no`/`off`) through its table parser:
/// None when unset, an error naming the knob and the allowed values when not a boolean. The
/// tests read the `MODELBENCH_REQUIRE_*` knobs this way (so `=true` counts as `=1`).
pub fn flag(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<bool>> {
    let k = knob(name).unwrap_or_else(|| panic!("{name} is not declared in config::knobs::KNOBS"));
    get(lookup, name)
        .map(|v| {
            (k.check)(&v)?;
            p::parse_bool(&v, name)
        })
        .transpose()
}

/// The process environment as a lookup.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Validates every `MODELBENCH_*` variable of `vars`: an unknown name is an error (a typo
/// such as MODELBENCH_MODEL would otherwise be ignored), and each set knob must parse, even
/// one that another bench reads (`cargo bench` runs every bench with the same environment).
pub fn validate(vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
    for (k, v) in vars {
        if !k.starts_with("MODELBENCH_") {
            continue;
        }
        match knob(&k) {
            None => {
                let known: Vec<_> = KNOBS.iter().map(|k| k.name).collect();
                return Err(Error::knob(k, v, "not a known knob", known.join(", ")));
            }
            Some(kn) if !v.trim().is_empty() => (kn.check)(&v)?,
            Some(_) => {}
        }
    }
    Ok(())
}

/// [`validate`] on the process environment, then [`install`] from it.
pub fn validate_env() -> Result<()> {
    validate(std::env::vars())?;
    install(&env)
}

/// Installs, process-wide, what layers below `config` read from the knobs:
/// `MODELBENCH_INJECT_SLOWDOWN` ([`install_injection`]), `MODELBENCH_FAST_WEIGHTS_FALLBACK`
/// (`models::q8_matmul::force_fallback`) and the path knobs ([`install_settings`]). The benches, the CLI's start and every plan's `from_env` call it.
pub fn install(lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    install_injection(lookup)?;
    let fallback = p::parse_bool(
        &value(lookup, "MODELBENCH_FAST_WEIGHTS_FALLBACK"),
        "MODELBENCH_FAST_WEIGHTS_FALLBACK",
    )?;
    crate::models::q8_matmul::force_fallback(fallback);
    install_settings(lookup)
}

/// The path knobs (`MODELBENCH_REPORTS`, `MODELBENCH_FIXTURE_CACHE`, `MODELBENCH_DB`,
/// `MODELBENCH_OFFLINE`) parsed from `lookup` by their table parsers; unset ones keep the
/// typed defaults of [`crate::util::settings::Settings`].
pub fn settings(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::util::settings::Settings> {
    let d = crate::util::settings::Settings::default();
    let dir = |name: &str| {
        get(lookup, name)
            .map(|v| p::parse_dir(&v, name))
            .transpose()
    };
    let db = get(lookup, "MODELBENCH_DB");
    if let Some(v) = &db {
        (knob("MODELBENCH_DB").expect("declared").check)(v)?;
    }
    Ok(crate::util::settings::Settings {
        reports_root: dir("MODELBENCH_REPORTS")?.unwrap_or(d.reports_root),
        fixture_cache: dir("MODELBENCH_FIXTURE_CACHE")?.unwrap_or(d.fixture_cache),
        db,
        offline: p::parse_bool(&value(lookup, "MODELBENCH_OFFLINE"), "MODELBENCH_OFFLINE")?,
    })
}

/// [`settings`] installed process-wide (`util::settings`), where models and output read them.
pub fn install_settings(lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    crate::util::settings::install(settings(lookup)?);
    Ok(())
}

/// Installs `MODELBENCH_INJECT_SLOWDOWN` and `MODELBENCH_INJECT_NUMERIC` process-wide
/// (`measure::inject`), or clears them.
/// Every plan's `from_env` and the CLI's start call this, so a bench, a CLI run and a paired
/// worker all inject the same way.
pub fn install_injection(lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let inj = match get(lookup, "MODELBENCH_INJECT_SLOWDOWN") {
        Some(v) => p::parse_injection(&v, "MODELBENCH_INJECT_SLOWDOWN")?,
        None => None,
    };
    crate::measure::inject::set(inj);
    let num = match get(lookup, "MODELBENCH_INJECT_NUMERIC") {
        Some(v) => p::parse_numeric(&v, "MODELBENCH_INJECT_NUMERIC")?,
        None => None,
    };
    crate::measure::inject::set_numeric(num);
    Ok(())
}

/// The knob list of `modelbench --help`.
pub fn help() -> String {
    let mut s = String::from("Environment knobs (for `cargo bench`; the CLI takes flags):\n");
    for k in KNOBS {
        s.push_str(&format!(
            "  {:<30} {} [{}; default: {}]\n",
            k.name,
            k.doc,
            k.scope.name(),
            if k.default.text().is_empty() {
                "unset"
            } else {
                k.default.text()
            }
        ));
    }
    s
}

/// docs/knobs.md's knob table (between `<!-- knobs:begin -->` and `<!-- knobs:end -->`).
pub fn readme_table() -> String {
    let mut s = String::from(
        "| variable | bench | values | default | what it does |\n|---|---|---|---|---|\n",
    );
    for k in KNOBS {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            k.name,
            k.scope.name(),
            k.values,
            if k.default.text().is_empty() {
                " "
            } else {
                k.default.text()
            },
            k.doc
        ));
    }
    s
}
