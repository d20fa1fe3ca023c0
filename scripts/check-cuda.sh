#!/usr/bin/env bash
# The CUDA compile check: `cargo check --features cuda --all-targets` with nvcc from PyPI
# (scripts/install-cuda-toolchain.sh --minimal) and a libcuda stub, no GPU needed. Not part of
# .ci/run (the brief keeps GPU work out of CI; the check cost 600-1,075 s of a CI run whenever
# its target dir was cold): run it before committing a change to a cuda-gated path, and
# scripts/gpu-reference.sh runs the real CUDA build on a GPU machine.
#
# Usage: scripts/check-cuda.sh [--target-dir DIR]
#   default DIR: ${MODELBENCH_CACHE:-$HOME/.cache/modelbench}/cuda-check-target (kept between
#   runs: a warm check compiles only this project's crates again, about 30 s on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${MODELBENCH_CACHE:-$HOME/.cache/modelbench}/cuda-check-target
while [ $# -gt 0 ]; do
  case $1 in
    --target-dir) target=${2:?--target-dir needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: scripts/check-cuda.sh: unknown argument \`$1\` (it takes --target-dir DIR)" >&2; exit 2 ;;
  esac
done
env=$(scripts/install-cuda-toolchain.sh --minimal --env)
eval "$env"
CARGO_TARGET_DIR=$target cargo check --features cuda --all-targets
