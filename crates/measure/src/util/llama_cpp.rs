//! Where scripts/build-llama-cpp.sh's llama.cpp build is: `$LLAMA_CPP_DIR` when set (`.ci/run`
//! points it at its build cache outside the checkout, one build per llama.cpp version and
//! machine identity), else `target/llama-cpp/<VERSION>` of this checkout, the script's
//! default. Every Rust caller and the scripts resolve it the same way.

use std::path::PathBuf;

/// The llama-cpp-python sdist version scripts/build-llama-cpp.sh builds (its `VERSION`).
pub const VERSION: &str = "0.3.36";

/// The build folder (`bin/`, `build-info.json`, ...).
pub fn dir() -> PathBuf {
    match std::env::var_os("LLAMA_CPP_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => crate::util::root().join("target/llama-cpp").join(VERSION),
    }
}

/// One of the build's programs (`llama-perplexity`, `llama-timed-ids`, `test-backend-ops`).
pub fn program(name: &str) -> PathBuf {
    dir().join("bin").join(name)
}

/// On a CPU that advertises AMX, runs llama.cpp's programs without extra buffer types
/// (`LLAMA_ARG_REPACK=false`, llama.cpp's own switch for `--no-repack`, also read by
/// scripts/llama-timed-ids.cpp) unless the user set it: ggml's AMX matmul, which the
/// `-march=native` build compiles in, faults on this project's Intel VMs (gdb: `ldtilecfg` in
/// `ggml_backend_amx_mul_mat`, every tool, real and fixture models). Call before any thread
/// starts (the binary's `main`); returns whether it set it.
pub fn avoid_amx_fault() -> bool {
    if std::env::var_os("LLAMA_ARG_REPACK").is_some() {
        return false;
    }
    let amx = std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "amx_int8"));
    if amx {
        std::env::set_var("LLAMA_ARG_REPACK", "false");
    }
    amx
}

#[cfg(test)]
mod tests {
    /// The version here is the one the build script pins.
    #[test]
    fn version_is_the_build_scripts() {
        let script =
            std::fs::read_to_string(crate::util::root().join("scripts/build-llama-cpp.sh"))
                .unwrap();
        assert!(
            script
                .lines()
                .any(|l| l == format!("VERSION={}", super::VERSION)),
            "scripts/build-llama-cpp.sh does not set VERSION={}",
            super::VERSION
        );
    }
}
