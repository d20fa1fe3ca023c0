#!/usr/bin/env bash
# The output verdict against legitimate perturbations of the same build (issue 59): for each
# model, `modelbench run --scenario short` at candle's default thread count and again at one
# thread (RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1: every CPU pool of candle), then `compare`
# of the two: its output verdict must read `same` or `within numerical noise`, never
# `OUTPUTS CHANGED`. Prints one markdown row per model; exit 1 when any reads changed.
#
# Usage: scripts/output-noise.sh [--bin PATH] MODEL...
#   default --bin: target/release/modelbench (cargo build --release --bin modelbench)
#   e.g. scripts/output-noise.sh fixture:llama gguf:fixture:qwen3 gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/modelbench
if [ "${1:-}" = --bin ]; then bin=${2:?--bin needs a path}; shift 2; fi
[ $# -gt 0 ] || { echo "error: scripts/output-noise.sh: name at least one model (e.g. fixture:llama)" >&2; exit 2; }
[ -x "$bin" ] || { echo "error: $bin is not built; run \`cargo build --release --bin modelbench\` or pass --bin PATH" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/modelbench-output-noise.XXXXXX")
trap 'rm -rf "$work"' EXIT
export MODELBENCH_REPORTS=$work MODELBENCH_DB=off HF_HUB_OFFLINE=1
unset MODELBENCH_INJECT_NUMERIC MODELBENCH_INJECT_SLOWDOWN
echo "| model | threads default vs 1: outputs | why |"
echo "|---|---|---|"
changed=0
i=0
for m in "$@"; do
  i=$((i + 1))
  a=$("$bin" run --model "$m" --scenario short --trials 5 --warmup 1 --label "n$i-default" 2>&1 >/dev/null | tail -1 || true)
  RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 "$bin" run --model "$m" --scenario short --trials 5 --warmup 1 --label "n$i-one" >/dev/null 2>&1 \
    || { echo "| \`$m\` | run failed | $a |"; changed=1; continue; }
  out=$("$bin" compare "$work"/*-"n$i-default" "$work"/*-"n$i-one" --threshold 90% --ignore-noise --allow-output-change 2>&1 || true)
  verdict=$(printf '%s\n' "$out" | sed -n 's/^| generation |.*| \([^|]*\) |$/\1/p' | head -1)
  why=$(printf '%s\n' "$out" | sed -n 's/^outputs [^:]*: [^:]*: //p' | head -1)
  [ "$verdict" = "OUTPUTS CHANGED" ] && changed=1
  echo "| \`$m\` | ${verdict:-none} | ${why:-bit-identical probe logits and ids} |"
done
exit $changed
