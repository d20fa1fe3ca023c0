//! The machine and the build a run measured on: probed once per run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu: String,
    pub cores: usize,
    pub ram_bytes: Option<u64>,
    pub os: String,
    /// GPU facts from NVML; `None` is written as "not available" by the reports.
    pub gpu: Option<crate::measure::gpu::Gpu>,
}

impl Hardware {
    /// A key that identifies like-for-like hardware for comparisons.
    pub fn fingerprint(&self) -> String {
        let gpu = self
            .gpu
            .as_ref()
            .map(|g| g.name.as_str())
            .unwrap_or("no-gpu");
        format!("{} x{} | {}", self.cpu, self.cores, gpu)
    }

    pub fn describe(&self) -> String {
        let ram = self
            .ram_bytes
            .map(|b| format!("{:.0} GiB RAM", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_else(|| "RAM not available".into());
        let gpu = match &self.gpu {
            Some(g) => format!(
                "{} ({:.0} GiB VRAM, {}, compute {}, driver {}, CUDA {})",
                g.name,
                g.vram_total_bytes as f64 / (1u64 << 30) as f64,
                g.sm_count
                    .map(|s| format!("{s} SMs"))
                    .unwrap_or_else(|| "SM count not available".into()),
                g.compute_capability,
                g.driver,
                g.cuda_version
            ),
            None => "GPU: not available".into(),
        };
        format!(
            "{} ({} threads), {ram}, {}; {gpu}",
            self.cpu, self.cores, self.os
        )
    }
}

/// Probes this machine. GPU facts come from NVML when the NVIDIA library is present.
pub fn hardware() -> Hardware {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let ram_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    Hardware {
        cpu,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ram_bytes,
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        gpu: crate::measure::gpu::facts(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub git_commit: String,
    pub git_dirty: String,
    pub rustc: String,
    pub features: String,
    pub rustflags: String,
    pub profile: String,
    pub crate_version: String,
    /// CUDA builds: nvcc release and the compute capability the kernels were built for.
    #[serde(default)]
    pub cuda: String,
    /// candle-core's version from Cargo.lock.
    #[serde(default)]
    pub candle: String,
}

impl Build {
    /// The settings that make two builds' timings incomparable, each `name: a vs b`, for
    /// those that differ: profile, features, rustflags (target-cpu), rustc, candle version and
    /// CUDA. Not the commit (what a comparison is for) nor the dirty flag. A field one side
    /// does not record (an older record) is not compared.
    pub fn differences(&self, other: &Build) -> Vec<String> {
        let mut out = Vec::new();
        for (name, a, b) in [
            ("profile", &self.profile, &other.profile),
            ("features", &self.features, &other.features),
            ("rustflags", &self.rustflags, &other.rustflags),
            ("rustc", &self.rustc, &other.rustc),
            ("candle", &self.candle, &other.candle),
            ("cuda", &self.cuda, &other.cuda),
        ] {
            let known = |s: &str| !s.is_empty() && s != "unknown";
            if a != b && (known(a) && known(b) || name == "features" || name == "cuda") {
                out.push(format!(
                    "{name}: `{}` vs `{}`",
                    if a.is_empty() { "none" } else { a },
                    if b.is_empty() { "none" } else { b }
                ));
            }
        }
        out
    }
}

pub fn build() -> Build {
    Build {
        git_commit: env!("BUILDINFO_GIT_COMMIT").into(),
        git_dirty: env!("BUILDINFO_GIT_DIRTY").into(),
        rustc: env!("BUILDINFO_RUSTC").into(),
        features: env!("BUILDINFO_FEATURES").into(),
        rustflags: env!("BUILDINFO_RUSTFLAGS").into(),
        profile: env!("BUILDINFO_PROFILE").into(),
        crate_version: env!("CARGO_PKG_VERSION").into(),
        cuda: env!("BUILDINFO_CUDA").into(),
        candle: env!("BUILDINFO_CANDLE").into(),
    }
}

/// What every record of a run shares: the machine and the build, probed once per process.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub hardware: Hardware,
    pub build: Build,
}

/// The run context, computed on first use and then shared by every record of the process.
pub fn context() -> &'static RunContext {
    static CTX: std::sync::OnceLock<RunContext> = std::sync::OnceLock::new();
    CTX.get_or_init(|| RunContext {
        hardware: hardware(),
        build: build(),
    })
}
