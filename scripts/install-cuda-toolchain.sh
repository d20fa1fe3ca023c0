#!/usr/bin/env bash
# Installs NVIDIA's CUDA 13.0 compiler, headers and libraries from PyPI wheels into a project
# folder, so `cargo build --release --features cuda --benches` works on a machine without a GPU
# and without a system CUDA toolkit (the build only needs nvcc; the GPU is needed to run).
#
#   scripts/install-cuda-toolchain.sh [--minimal] [--prefix DIR] [--compute-cap CC]
#   eval "$(scripts/install-cuda-toolchain.sh --env)"      # install if needed, print exports
#
#   --minimal       compiler + runtime headers only (nvcc, cicc, crt, cudart, cccl): enough for
#                   `cargo check --features cuda`, which compiles candle's kernels but links
#                   nothing. Without it, cuBLAS/cuRAND/NVRTC (and CUPTI) are installed too (~1.2 GiB)
#                   so the bench binaries link.
#   --prefix DIR    where to install (default: .toolchains/cuda-13.0 in the repository)
#   --compute-cap   GPU architecture the kernels are compiled for (default 90: H100/H200;
#                   89: RTX 40xx/L4, 86: RTX 30xx/A10, 80: A100, 120: RTX 50xx)
#   --env           print only the `export` lines (for eval), after installing if needed
#
# Why CUDA 13.0: it is the oldest release whose PyPI wheels ship the whole nvcc driver
# (nvidia-cuda-nvcc 12.x wheels carry only ptxas), cudarc 0.19 supports it, and its PTX
# (ISA 9.0) needs the lowest driver of the 13.x line (R580+). A GPU with an older driver
# fails at the first kernel launch with CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
#
# The wheels are pinned by version and sha256 (pip --require-hashes). The install is
# idempotent and atomic: it is unpacked into a temporary folder next to DIR and moved into
# place only when complete.
#
# libcuda.so belongs to the GPU driver, which no wheel ships. The link needs one, so the
# script builds a link-time stub (lib/stubs/libcuda.so, SONAME libcuda.so.1) whose symbols
# are the driver entry points cudarc declares; it is on the link path only. At run time the
# driver's own libcuda.so.1 is loaded, and the stub, if it were ever loaded, answers every call
# with CUDA_ERROR_STUB_LIBRARY (34), which candle reports as an error.
set -euo pipefail
# Any command that stops the script under `set -e` says so in one line (explicit failures
# below print their own line and `exit`, which this trap does not see).
trap 'rc=$?; echo "error: ${BASH_SOURCE[0]##*/}: line $LINENO: \`$BASH_COMMAND\` failed (exit $rc)" >&2' ERR

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=$root/.toolchains/cuda-13.0
minimal=0
env_only=0
cap=90

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --minimal) minimal=1 ;;
    --env) env_only=1 ;;
    --prefix) [ $# -ge 2 ] || { echo "error: --prefix needs a folder" >&2; exit 2; }; prefix=$2; shift ;;
    --compute-cap)
      [ $# -ge 2 ] || { echo "error: --compute-cap needs a value such as 90" >&2; exit 2; }
      cap=$2; shift
      [[ $cap =~ ^[0-9]{2,3}[af]?$ ]] || { echo "error: --compute-cap '$cap' is not a compute capability such as 80, 89, 90 or 90a" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# name==version sha256 (PyPI, x86_64 Linux wheels)
compile_wheels=(
  "nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
  "nvidia-cuda-crt==13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
  "nvidia-nvvm==13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
  "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
)
link_wheels=(
  "nvidia-cuda-nvrtc==13.0.88 ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575"
  "nvidia-curand==10.4.0.35 1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc"
  "nvidia-cublas==13.0.2.14 0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"
  # CUPTI (headers and libcupti): scripts/cuda-kernel-trace.c, the kernel timeline of a decode
  # on the GPU (docs/gpu.md).
  "nvidia-cuda-cupti==13.0.85 4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8"
)
wheels=("${compile_wheels[@]}")
[ $minimal = 1 ] || wheels+=("${link_wheels[@]}")

need() { command -v "$1" >/dev/null || { echo "error: $1 is required ($2)" >&2; exit 2; }; }
need python3 "pip unpacks the wheels"
need gcc "nvcc's host compiler, and the libcuda link stub"
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "error: the pinned wheels are for Linux x86_64, this is $(uname -sm)" >&2; exit 2; }

log() { [ $env_only = 1 ] && echo "$*" >&2 || echo "$*"; }
cuda=$prefix/cuda
stamp=$prefix/installed.txt
want=$(printf '%s\n' "${wheels[@]}" | cut -d' ' -f1)

installed_ok() {
  [ -x "$cuda/bin/nvcc" ] && [ -f "$stamp" ] || return 1
  # every wanted wheel is in the stamp (a full install also satisfies --minimal)
  local w
  for w in $want; do grep -qxF "$w" "$stamp" || return 1; done
}

if installed_ok; then
  log "already installed: $(tr '\n' ' ' < "$stamp")in $prefix"
else
  mkdir -p "$(dirname "$prefix")"
  tmp=$(mktemp -d "$(dirname "$prefix")/.cuda-install.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  reqs=$tmp/requirements.txt
  for w in "${wheels[@]}"; do echo "${w% *} --hash=sha256:${w#* }"; done > "$reqs"
  log "downloading $(echo $want | wc -w) CUDA wheels from PyPI into $prefix"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
    --require-hashes --target "$tmp/site" -r "$reqs" >&2 \
    || { echo "error: pip could not install the CUDA wheels (is PyPI reachable?)" >&2; exit 1; }
  mv "$tmp/site/nvidia/cu13" "$tmp/cuda"
  lib=$tmp/cuda/lib
  # unversioned names for the linker (the wheels ship only the SONAME files)
  for so in "$lib"/lib*.so.[0-9]*; do
    base=${so##*/}; plain=${base%%.so.*}.so
    case $base in *.alt.*|*builtins*) continue ;; esac
    [ -e "$lib/$plain" ] || ln -s "$base" "$lib/$plain"
  done
  # libcuda link stub from the driver entry points of the locked cudarc
  cudarc_ver=$(awk '/^name = "cudarc"/{getline; gsub(/[^0-9.]/,""); print; exit}' "$root/Cargo.lock")
  [ -n "$cudarc_ver" ] || { echo "error: no cudarc in $root/Cargo.lock (the libcuda stub is generated from its sources)" >&2; exit 1; }
  # The sources are in cargo's registry once anything built the `cuda` feature; else
  # `cargo fetch` puts them there. Prints nothing and succeeds when they are absent (the
  # caller checks): a bare `[ -f ] && ...` as the loop's last command would make the
  # function fail, and `sys=$(find_sys)` would then end the script under `set -e`.
  find_sys() {
    local f
    for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$cudarc_ver"/src/driver/sys/mod.rs; do
      if [ -f "$f" ]; then
        echo "$f"
        return 0
      fi
    done
    return 0
  }
  sys=$(find_sys)
  if [ -z "$sys" ]; then
    log "fetching the crate sources (cudarc $cudarc_ver's driver API, for the libcuda stub) with cargo fetch"
    (cd "$root" && cargo fetch --quiet) >&2 \
      || { echo "error: cargo fetch failed, so cudarc $cudarc_ver's sources (for the libcuda stub) are missing (is crates.io reachable?)" >&2; exit 1; }
    sys=$(find_sys)
  fi
  [ -n "$sys" ] || { echo "error: cudarc $cudarc_ver sources not found under ${CARGO_HOME:-$HOME/.cargo}/registry/src after cargo fetch" >&2; exit 1; }
  mkdir -p "$lib/stubs"
  {
    echo "/* Link-time stub of the CUDA driver API, generated from $(basename "$(dirname "$(dirname "$(dirname "$(dirname "$sys")")")")"). */"
    grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$sys" | sed 's/^pub unsafe fn //' | sort -u \
      | sed 's/.*/int &(void) { return 34; }/'
  } > "$tmp/cuda_stub.c"
  gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$tmp/cuda_stub.c"
  "$tmp/cuda/bin/nvcc" --version >/dev/null \
    || { echo "error: the installed nvcc does not run" >&2; exit 1; }
  printf '%s\n' $want > "$tmp/installed.txt.new"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  mv "$tmp/cuda" "$cuda"
  mv "$tmp/installed.txt.new" "$stamp"
  log "installed CUDA $("$cuda/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p') in $prefix"
fi

# nvcc's own profile (bin/nvcc.profile) links from lib64 and lib64/stubs; the wheels put the
# libraries in lib. Linking device code with nvcc (llama.cpp's CUDA build, which needs
# cudart_static and cudadevrt) fails without this link; candle's build only compiles PTX.
[ -e "$cuda/lib64" ] || ln -s lib "$cuda/lib64"

# What the build reads: nvcc on PATH (cudarc runs `nvcc --version`; candle-kernels' build
# uses cudaforge, which looks at NVCC, PATH, CUDA_HOME), CUDA_HOME/CUDA_PATH/CUDA_ROOT (cudarc's
# link search: lib and lib/stubs), CUDA_COMPUTE_CAP (no nvidia-smi here), and the libraries for
# a binary run on a GPU machine (LD_LIBRARY_PATH; never the stubs folder).
exports="export CUDA_HOME='$cuda'
export CUDA_PATH='$cuda'
export CUDA_ROOT='$cuda'
export NVCC='$cuda/bin/nvcc'
export PATH='$cuda/bin':\"\$PATH\"
export CUDA_COMPUTE_CAP=$cap
export LD_LIBRARY_PATH='$cuda/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
if [ $env_only = 1 ]; then
  echo "$exports"
else
  echo
  echo "# Set the build environment with:"
  echo "#   eval \"\$(scripts/install-cuda-toolchain.sh --env$([ $minimal = 1 ] && echo ' --minimal'))\""
  echo "# or paste:"
  echo "$exports"
  echo
  echo "# then: cargo build --release --features cuda --benches"
  echo "# A binary meant for another machine's CPU: RUSTFLAGS='-C target-cpu=x86-64-v3' (it"
  echo "# replaces .cargo/config.toml's target-cpu=native; the records show the flags used)."
fi
