#!/usr/bin/env bash
# Continuous benchmarking (seed 004): run the critical benchmarks listed in a JSON config,
# save a timestamped run, compare it with the previous run of the same config, and exit
# non-zero on a regression (1) or on bad input (2).
#   scripts/continuous.sh [CONFIG.json]     (default: scripts/continuous.example.json)
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-scripts/continuous.example.json}"
cargo build --release --quiet --bin modelbench
exec ./target/release/modelbench continuous "$config"
