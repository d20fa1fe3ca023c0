//! The machine and the build a run measured on: probed once per run.
//!
//! The machine identity ([`Hardware::fingerprint`]) keys every like-for-like comparison: the
//! noise profile's file, `compare`, history and the results database. The model name alone
//! does not tell CPUs apart (an AMD EPYC family 25 model 17 with AVX-512 VNNI and a family 25
//! model 1 with AVX2 only both read "AMD EPYC"), so the identity also holds the CPU's vendor,
//! family/model/stepping, the ISA features the code paths depend on and the cache sizes
//! ([`CpuIdentity`]). Records from before it have no `cpu_id` and keep their old fingerprint.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu: String,
    pub cores: usize,
    pub ram_bytes: Option<u64>,
    pub os: String,
    /// GPU facts from NVML; `None` is written as "not available" by the reports.
    pub gpu: Option<crate::measure::gpu::Gpu>,
    /// What tells two CPUs of one model name apart; None in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_id: Option<CpuIdentity>,
}

/// The ISA features the project's code paths (and a `-C target-cpu=native` build) depend on,
/// as [`CpuIdentity::features`] names them, with the /proc/cpuinfo flags that mean each.
pub const ISA_FEATURES: [(&str, &[&str]); 4] = [
    ("avx2", &["avx2"]),
    ("avx512f", &["avx512f"]),
    // The project's Q8_0 kernels (models::q8_matmul) and candle's repacked tiles.
    ("vnni", &["avx512_vnni"]),
    ("amx", &["amx_tile"]),
];

/// A CPU's identity: vendor, family/model/stepping, ISA features and caches. Two machines with
/// the same [`CpuIdentity::key`] run the same code paths at the same cache sizes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuIdentity {
    /// `vendor_id` of /proc/cpuinfo (GenuineIntel, AuthenticAMD); the architecture elsewhere.
    pub vendor: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// Those of [`ISA_FEATURES`] the CPU has, in that order.
    pub features: Vec<String>,
    /// Per-core L1 data and L2, and L3, in KiB (0: not reported).
    pub l1d_kib: u64,
    pub l2_kib: u64,
    pub l3_kib: u64,
}

impl CpuIdentity {
    /// From /proc/cpuinfo's text and the cache sizes (KiB) of cpu0's sysfs cache entries.
    pub fn parse(cpuinfo: &str, caches: (u64, u64, u64)) -> CpuIdentity {
        let field = |name: &str| {
            cpuinfo
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
        };
        let num = |name: &str| field(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let flags: Vec<String> = field("flags")
            .map(|f| f.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        CpuIdentity {
            vendor: field("vendor_id").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            family: num("cpu family"),
            model: num("model"),
            stepping: num("stepping"),
            features: ISA_FEATURES
                .iter()
                .filter(|(_, any)| any.iter().any(|f| flags.iter().any(|g| g == f)))
                .map(|(name, _)| name.to_string())
                .collect(),
            l1d_kib: caches.0,
            l2_kib: caches.1,
            l3_kib: caches.2,
        }
    }

    /// This machine's.
    pub fn probe() -> CpuIdentity {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        CpuIdentity::parse(&cpuinfo, caches_kib())
    }

    /// The identity as one file-name-safe word, e.g.
    /// `intel-6-167-1-avx2-avx512f-vnni-amx-l1d48k-l2-2048k-l3-491520k`; scripts/machine-id.sh
    /// prints the same for the shell (a test checks), which keys `.ci/run`'s llama.cpp cache.
    pub fn key(&self) -> String {
        let vendor = match self.vendor.as_str() {
            "GenuineIntel" => "intel".to_string(),
            "AuthenticAMD" => "amd".to_string(),
            v => v
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase(),
        };
        let mut parts = vec![
            vendor,
            self.family.to_string(),
            self.model.to_string(),
            self.stepping.to_string(),
        ];
        parts.extend(self.features.iter().cloned());
        parts.push(format!("l1d{}k", self.l1d_kib));
        parts.push(format!("l2-{}k", self.l2_kib));
        parts.push(format!("l3-{}k", self.l3_kib));
        parts.join("-")
    }
}

/// L1 data, L2 and L3 sizes in KiB from /sys/devices/system/cpu/cpu0/cache (0 where absent).
fn caches_kib() -> (u64, u64, u64) {
    let (mut l1d, mut l2, mut l3) = (0, 0, 0);
    let root = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let Ok(entries) = std::fs::read_dir(root) else {
        return (0, 0, 0);
    };
    for e in entries.flatten() {
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let size = read("size");
        let kib = match size.strip_suffix('K') {
            Some(k) => k.parse().unwrap_or(0),
            None => size
                .strip_suffix('M')
                .and_then(|m| m.parse::<u64>().ok())
                .map(|m| m * 1024)
                .unwrap_or(0),
        };
        match (read("level").as_str(), read("type").as_str()) {
            ("1", "Data") => l1d = kib,
            ("2", "Unified") => l2 = kib,
            ("3", "Unified") => l3 = kib,
            _ => {}
        }
    }
    (l1d, l2, l3)
}

impl Hardware {
    /// The machine identity: the key of like-for-like comparisons (the noise profile's file
    /// name, `compare`, history, the results database). Model name, threads, the CPU identity
    /// ([`CpuIdentity::key`]) and the GPU; a record from before the CPU identity gives
    /// `model xN | gpu` as it did then, which no newer record matches.
    pub fn fingerprint(&self) -> String {
        let gpu = self
            .gpu
            .as_ref()
            .map(|g| g.name.as_str())
            .unwrap_or("no-gpu");
        match &self.cpu_id {
            Some(id) => format!("{} x{} | {} | {}", self.cpu, self.cores, id.key(), gpu),
            None => format!("{} x{} | {}", self.cpu, self.cores, gpu),
        }
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
        let id = match &self.cpu_id {
            Some(c) => format!(
                " [{} family {} model {} stepping {}; {}; L1d {} KiB, L2 {} KiB, L3 {} KiB]",
                c.vendor,
                c.family,
                c.model,
                c.stepping,
                if c.features.is_empty() {
                    "none of avx2/avx512f/vnni/amx".to_string()
                } else {
                    c.features.join(", ")
                },
                c.l1d_kib,
                c.l2_kib,
                c.l3_kib
            ),
            None => String::new(),
        };
        format!(
            "{}{id} ({} threads), {ram}, {}; {gpu}",
            self.cpu, self.cores, self.os
        )
    }
}

impl Hardware {
    /// This description with its GPU facts read again: the run context is probed once, often
    /// before the CUDA device is opened, and the SM count comes from the opened device (a
    /// record made on an H200 on 2026-11-26 had `sm_count: null` and `vram_used_bytes: 0`
    /// for that reason). Without a GPU it is a plain copy.
    pub fn with_current_gpu(&self) -> Hardware {
        let mut h = self.clone();
        if h.gpu.is_some() {
            h.gpu = crate::measure::gpu::facts().or(h.gpu);
        }
        h
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
        cpu_id: Some(CpuIdentity::probe()),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Not a compile setting but a process one that moves timings as much: whether the
    /// process allocated in transparent huge pages (`on (THP madvise)`, `off (THP madvise)`:
    /// measure::memory::huge_pages_setting). Empty in records written before it existed.
    #[serde(default)]
    pub huge_pages: String,
}

impl Build {
    /// The settings that make two builds' timings incomparable, each `name: a vs b`, for
    /// those that differ: profile, features, rustflags (target-cpu), rustc, candle version,
    /// CUDA, and the process's huge pages (a run setting, `MODELBENCH_HUGE_PAGES`; a record
    /// from before the field ran without them, and reads as `off`). Not the commit (what a comparison is for) nor the dirty flag. A field one side
    /// does not record (an older record) is not compared.
    pub fn differences(&self, other: &Build) -> Vec<String> {
        let mut out = Vec::new();
        let huge = |b: &Build| {
            let on = b.huge_pages.starts_with("on");
            if on { "on" } else { "off" }.to_string()
        };
        let (ha, hb) = (huge(self), huge(other));
        for (name, a, b) in [
            ("profile", &self.profile, &other.profile),
            ("features", &self.features, &other.features),
            ("rustflags", &self.rustflags, &other.rustflags),
            ("rustc", &self.rustc, &other.rustc),
            ("candle", &self.candle, &other.candle),
            ("cuda", &self.cuda, &other.cuda),
            ("huge pages", &ha, &hb),
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

/// A dirty tree's own identity (FNV-1a of `git diff HEAD` at build time; empty for a clean
/// tree): what tells two different uncommitted trees of one commit apart.
pub const GIT_DIFF: &str = env!("BUILDINFO_GIT_DIFF");

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
        huge_pages: crate::measure::memory::huge_pages_setting(),
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

#[cfg(test)]
mod build_differences_tests {
    use super::Build;

    #[test]
    fn huge_pages_on_and_off_differ_and_an_older_record_reads_as_off() {
        let with = |h: &str| Build {
            huge_pages: h.into(),
            ..Build::default()
        };
        let on = with("on (THP madvise)");
        assert_eq!(
            on.differences(&with("off (THP madvise)")),
            vec!["huge pages: `on` vs `off`".to_string()]
        );
        assert_eq!(
            on.differences(&with("")),
            vec!["huge pages: `on` vs `off`".to_string()]
        );
        assert!(on.differences(&with("on (THP always)")).is_empty());
        assert!(with("").differences(&with("off (no THP)")).is_empty());
    }
}
