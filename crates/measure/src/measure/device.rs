//! Device and dtype choice, the sync that must happen before a clock stops, and the
//! description of the hardware a number came from.

use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Where the models run: `cpu` or `cuda[:N]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub const ALLOWED: &'static str = "cpu, cuda, cuda:N";

    /// Opens the device chosen by `MODELBENCH_DEVICE`. CUDA needs a binary built with
    /// `--features cuda`.
    pub fn open(self) -> Result<Device> {
        self.open_for("MODELBENCH_DEVICE")
    }

    /// Opens the device; `source` (the knob or flag that chose it) names it in errors.
    pub fn open_for(self, source: &str) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                let d = open_cuda(n, source)?;
                crate::measure::gpu::select(&d);
                Ok(d)
            }
        }
    }

    /// bf16 on CUDA (what GPU users run); f32 on CPU, since candle 0.11's CPU bf16 matmul
    /// widens both operands on every call and runs about 10x slower than f32.
    pub fn default_dtype(self) -> DType {
        match self {
            DeviceSpec::Cpu => DType::F32,
            DeviceSpec::Cuda(_) => DType::BF16,
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize, source: &str) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| {
        Error::knob(
            source,
            format!("cuda:{n}"),
            format!(
                "cannot open CUDA device {n}: {}",
                crate::error::one_line(&e.to_string())
            ),
            DeviceSpec::ALLOWED,
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize, source: &str) -> Result<Device> {
    Err(Error::knob(
        source,
        format!("cuda:{n}"),
        "this binary was built without CUDA; rebuild with `--features cuda`",
        "cpu",
    ))
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| format!("`{n}` is not a device ordinal")),
                None => Err("unknown device".into()),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

pub const DTYPES_ALLOWED: &str = "f32, f16, bf16";

pub fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    match s.trim() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err("unknown dtype".into()),
    }
}

/// Waits for all queued work on the device. Call before every clock read that ends a timed
/// region (a no-op on CPU, where every op is synchronous).
pub fn sync(dev: &Device) -> Result<()> {
    if dev.is_cpu() {
        return Ok(());
    }
    Ok(dev.synchronize()?)
}
