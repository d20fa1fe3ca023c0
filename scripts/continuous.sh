#!/usr/bin/env bash
# Continuous benchmarking: run the critical benchmarks listed in a JSON config,
# save a timestamped run (target-reports/<stamp>-cont-<name>), compare it with the previous
# run of the same config (a step) and with a fixed baseline (drift: small steps that add up),
# and exit non-zero on a regression in either comparison (1) or on bad input (2). Benchmarks
# with fewer than 5 samples a side get no verdict (said so, never a failure).
#   scripts/continuous.sh [CONFIG.json] [--force]   (default: scripts/continuous.example.json)
#
# Config fields (unknown fields are refused):
#   name            required; the run folders are labelled cont-<name>
#   models          required; model references (fixture:<family>, owner/repo, a directory)
#   suite           quick | standard | full (default quick)
#   prompt_tokens, max_new_tokens
#                   one ad-hoc scenario instead of the suite (both or neither)
#   warmup, trials  untimed runs and timed trials per scenario (default 1, 5; trials >= 5
#                   for a verdict)
#   threshold       slowdown that counts as a regression, e.g. "5%" (default "5%")
#   dtype, device, seed
#                   default: the device's dtype, "cpu", 42
#   baseline        the fixed baseline: "first" (the first run of this config, default) or a
#                   run folder (a path, or a folder name under target-reports/)
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-scripts/continuous.example.json}"
shift || true
cargo build --release --quiet --bin modelbench
exec ./target/release/modelbench continuous "$config" "$@"
