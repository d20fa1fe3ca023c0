#!/usr/bin/env bash
# The GPU reference run: the quick tier of the generation suite on the synthetic real shapes
# of the three dev models (Llama-3.2-1B, Qwen3-1.7B, Gemma-3-1B), bf16, on an NVIDIA GPU.
# The finished run folder is copied to target-reports/reference/<date>-<gpu>/, which git
# tracks (every other run folder is ignored).
#
#   scripts/gpu-reference.sh                  # on a GPU machine with Rust: builds, then runs
#   scripts/gpu-reference.sh --binary FILE    # runs a generation bench binary built elsewhere
#
# Building elsewhere (a machine without a GPU; see scripts/install-cuda-toolchain.sh):
#   eval "$(scripts/install-cuda-toolchain.sh --env --compute-cap 90)"
#   RUSTFLAGS='-C target-cpu=x86-64-v3' cargo build --release --features cuda --bench generation
#   scripts/gpu-reference.sh --print-binary   # the path of the binary just built
# The binary links the CUDA 13 libraries dynamically (cudart, cuBLAS, cuRAND); where they are
# not on the loader path, this script looks in CUDA_HOME/lib and in Python's nvidia/cu13 wheels.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=""
models=${MODELBENCH_MODELS:-synthetic:llama-3.2-1b,synthetic:qwen3-1.7b,synthetic:gemma-3-1b}

newest_bench() {
  ls -t "$root"/target/release/deps/generation-* 2>/dev/null | grep -v '\.d$' | head -1
}

while [ $# -gt 0 ]; do
  case $1 in
    --binary) [ $# -ge 2 ] || { echo "error: --binary needs a file" >&2; exit 2; }; binary=$2; shift ;;
    --print-binary)
      b=$(newest_bench)
      [ -n "$b" ] || { echo "error: no generation bench binary under target/release/deps; build it first" >&2; exit 2; }
      echo "$b"; exit 0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
  || { echo "error: no NVIDIA GPU here (nvidia-smi missing or finds no device); run this on a GPU machine" >&2; exit 2; }
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)

if [ -z "$binary" ]; then
  command -v cargo >/dev/null || { echo "error: no cargo here; build elsewhere and pass --binary (see --help)" >&2; exit 2; }
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}
  (cd "$root" && cargo build --release --features cuda --bench generation)
  binary=$(newest_bench)
fi
[ -x "$binary" ] || { echo "error: $binary is not an executable bench binary" >&2; exit 2; }
binary=$(realpath "$binary")

# The CUDA 13 user-space libraries, if the loader does not find them by itself.
if ldd "$binary" | grep -q "not found"; then
  dirs=()
  [ -n "${CUDA_HOME:-}" ] && dirs+=("$CUDA_HOME/lib" "$CUDA_HOME/lib64")
  for py in python3 /opt/torch/.venv/bin/python3; do
    command -v "$py" >/dev/null || continue
    while IFS= read -r d; do dirs+=("$d"); done < <("$py" - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
EOF
)
  done
  for d in "${dirs[@]}"; do [ -d "$d" ] && LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; done
  export LD_LIBRARY_PATH
  missing=$(ldd "$binary" | grep "not found" || true)
  [ -z "$missing" ] || { echo "error: the bench binary cannot find: $(echo "$missing" | awk '{print $1}' | tr '\n' ' ')(install the CUDA 13 runtime, cuBLAS and cuRAND, or set CUDA_HOME)" >&2; exit 2; }
fi

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
echo "GPU: $gpu (compute capability $cap); models: $models; binary: $binary"
(
  cd "$root"
  MODELBENCH_DEVICE=cuda MODELBENCH_DTYPE=bf16 MODELBENCH_TIER=quick \
  MODELBENCH_MODELS="$models" MODELBENCH_LABEL=gpu-reference \
  MODELBENCH_REPORTS="$reports" CARGO_TARGET_DIR="$root/target" \
    "$binary" --bench
)
run=$(ls -d "$reports"/*-gpu-reference 2>/dev/null | tail -1)
[ -n "$run" ] && [ -s "$run/results.jsonl" ] \
  || { echo "error: the bench wrote no records; nothing was saved under target-reports/reference/" >&2; exit 1; }
slug=$(echo "$gpu" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
dest=$root/target-reports/reference/$(basename "$run" | cut -d- -f1)-$slug
mkdir -p "$root/target-reports/reference"
rm -rf "$dest.tmp" && cp -r "$run" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "saved $dest (commit it: git add target-reports/reference)"
cat "$dest/README.md"
