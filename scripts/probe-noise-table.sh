#!/usr/bin/env bash
# Each model's own numerical noise, perturbation by perturbation (issue 59 item 2): for each
# model, `modelbench probe --json` (the probe every generation record keeps: the held-out
# text's 2 x 64 positions, computed by the same build also as single-token steps, batched where
# the model has a batched form, and at another thread count in a second process), printed as
# one markdown row: each perturbation's mean KLD / worst position / top-1 agreement against the
# probe, and the limit of "same model" they join into (the largest of each). Exit 1 when a
# perturbation could not be taken.
#
# Usage: scripts/probe-noise-table.sh [--bin PATH] MODEL...
#   default --bin: target/release/modelbench (cargo build --release --bin modelbench)
#   e.g. scripts/probe-noise-table.sh fixture:llama gguf:fixture:gemma3 gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/modelbench
if [ "${1:-}" = --bin ]; then bin=${2:?--bin needs a path}; shift 2; fi
[ $# -gt 0 ] || { echo "error: scripts/probe-noise-table.sh: name at least one model (e.g. fixture:llama)" >&2; exit 2; }
[ -x "$bin" ] || { echo "error: $bin is not built; run \`cargo build --release --bin modelbench\` or pass --bin PATH" >&2; exit 2; }
export HF_HUB_OFFLINE=1
unset MODELBENCH_INJECT_NUMERIC MODELBENCH_INJECT_SLOWDOWN
work=$(mktemp -d "${TMPDIR:-/tmp}/modelbench-probe-noise.XXXXXX")
trap 'rm -rf "$work"' EXIT
i=0
for m in "$@"; do
  i=$((i + 1))
  if ! "$bin" probe --model "$m" --json > "$work/$i.json" 2> "$work/$i.err"; then
    echo "error: $m: $(tail -1 "$work/$i.err")" >&2
    echo "{\"failed\": true}" > "$work/$i.json"
  fi
done
python3 - "$work" "$@" <<'EOF'
import json, sys
work, models = sys.argv[1], sys.argv[2:]
def fig(n):
    if n['identical']:
        return 'bit-identical'
    return f"{n['mean_kld']:.1e} / {n['max_kld']:.1e} / {100 * n['top1']:.1f}%"
print('| model | prefill as single-token steps | sequences batched | another thread count | limit of "same model" | probe s |')
print('|---|---|---|---|---|---:|')
bad = 0
for i, m in enumerate(models, 1):
    p = json.load(open(f'{work}/{i}.json'))
    if p.get('failed'):
        print(f'| `{m}` | failed | | | | |'); bad = 1; continue
    n = p['noise']
    parts = n.get('parts') or [n]
    cell = {}
    for q in parts:
        k = ('steps' if 'single-token' in q['perturbation'] else
             'batched' if 'batched' in q['perturbation'] else
             'threads' if 'thread count' in q['perturbation'] else q['perturbation'])
        cell[k] = fig(q) + (f" ({q['perturbation'].split('(', 1)[1]}" if k == 'threads' else '')
    for x in n.get('not_measured', []):
        bad = 1
        cell['threads' if 'thread' in x else x] = 'not measured: ' + x.split(': ', 1)[-1]
    print(f"| `{m}` | {cell.get('steps', '-')} | {cell.get('batched', 'no batched form')} | "
          f"{cell.get('threads', '-')} | {fig(n)} | {p['seconds']:.2f} |")
sys.exit(bad)
EOF
