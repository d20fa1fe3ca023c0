#!/usr/bin/env bash
# The README's serving table (issue 33): our server with the default (exact) kernels, our
# server with --fast-weights, and llama.cpp's llama-server, on the same GGUF, the same thread
# count, as many slots each, loopback only; `modelbench load` at concurrency 1, 2, 4 with
# prompts of 128 tokens and 64 output tokens; one Markdown table with each level's output
# tok/s over the same server's c=1 level, and one chart (load.png: tokens/s per user against
# total tokens/s, a line per server). All servers are started first and stopped at the end;
# `modelbench load` measures them one after the other, so while one is measured the others sit
# idle (blocked on their sockets; no CPU).
#
# Measure on a quiet machine: every number is the machine's as much as the server's when
# anything else runs (docs/serving.md). A short --duration (e.g. 3s) checks that the script
# works; it is not a measurement.
#
# Usage: scripts/serving-table.sh [--duration 30s] [--levels 1,2,4] [--threads 1] [--slots 4]
#          [--prompt-tokens 128] [--max-tokens 64] [--port 18300] [--bin PATH]
#          [--llama-cpp DIR] [--gguf FILE] [--servers ours,ours-fast-weights,llama-server]
#          [--warmup 2] [--slo-preset llama3.1-8b]
#   --bin: a modelbench binary (default: `cargo build --release` and target/release/modelbench)
#   --llama-cpp: scripts/build-llama-cpp.sh's folder (default $LLAMA_CPP_DIR, else
#                target/llama-cpp/0.3.36 of this checkout)
#   --gguf: the Gemma 3 270M Q4_K_M file (default: the snapshot scripts/fetch-offline-models.sh
#           installs in the Hugging Face cache)
#   --threads: CANDLE_NUM_THREADS/RAYON_NUM_THREADS of ours, -t/-tb of llama-server
#   --slots: ours --max-batch, llama-server -np (context 1024 per slot)
# Each server's log is kept under target/serving-table/ (printed at the end); the run folder
# of `modelbench load` is under target-reports/ as usual (label serving-table), and
# target-reports/index.html shows it in its Serving section.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

model_ref="gguf:modelbench-offline/gemma-3-270m-Q4_K_M-GGUF"
duration=30s levels=1,2,4 threads=1 slots=4 prompt=128 out=64 port=18300 warmup=2
slo=llama3.1-8b bin="" llama="${LLAMA_CPP_DIR:-$repo/target/llama-cpp/0.3.36}" gguf=""
servers=ours,ours-fast-weights,llama-server

die() {
    echo "serving-table.sh: $*" >&2
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
    --llama-cpp) llama=$2 ;;
    --gguf) gguf=$2 ;;
    --servers) servers=$2 ;;
    --warmup) warmup=$2 ;;
    --slo-preset) slo=$2 ;;
    *) die "unknown flag $1 (see the usage at the top of $0)" ;;
    esac
    shift 2
done
for n in "$threads" "$slots" "$prompt" "$out" "$port" "$warmup"; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 0 ] || die "'$n' is not a whole number"
done
[ "$threads" -ge 1 ] && [ "$slots" -ge 1 ] || die "--threads and --slots must be at least 1"
[[ $levels =~ ^1(,[0-9]+)*$ ]] || die "--levels $levels: a comma list starting with 1 (the ratios are to c=1)"

if [ -z "$bin" ]; then
    echo "building target/release/modelbench (cargo build --release) ..." >&2
    cargo build --release --quiet --bin modelbench
    bin=$repo/target/release/modelbench
fi
[ -x "$bin" ] || die "--bin $bin: not an executable"
if [ -z "$gguf" ]; then
    hub=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
    gguf=$(ls "$hub"/models--modelbench-offline--gemma-3-270m-Q4_K_M-GGUF/snapshots/*/gemma-3-270m-Q4_K_M.gguf 2>/dev/null | head -1 || true)
    [ -n "$gguf" ] || die "the Gemma 3 270M GGUF is not installed under $hub; run scripts/fetch-offline-models.sh or pass --gguf FILE"
fi
[ -f "$gguf" ] || die "--gguf $gguf: no such file"

logs=$repo/target/serving-table
mkdir -p "$logs"
pids=()
stop_servers() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
trap stop_servers EXIT
trap 'stop_servers; exit 130' INT TERM

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits until the server answers /health (llama-server: 200 once the model is loaded).
wait_ready() {
    local url=$1 log=$2 pid=$3 i
    for i in $(seq 1 600); do
        if curl -sf -o /dev/null --max-time 2 "$url/health"; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || {
            echo "serving-table.sh: the server exited before it was ready; its log ($log):" >&2
            tail -20 "$log" >&2
            exit 1
        }
        sleep 0.5
    done
    die "the server at $url was not ready after 300 s (log: $log)"
}

targets=()
IFS=, read -r -a names <<<"$servers"
for name in "${names[@]}"; do
    port_free "$port" || die "port $port is in use; pass --port P (ports P, P+1, ... are used)"
    url=http://127.0.0.1:$port
    log=$logs/$name.log
    case "$name" in
    ours | ours-fast-weights)
        fast=()
        [ "$name" = ours-fast-weights ] && fast=(--fast-weights)
        CANDLE_NUM_THREADS=$threads RAYON_NUM_THREADS=$threads HF_HUB_OFFLINE=1 \
            "$bin" serve --model "$model_ref" --host 127.0.0.1 --port "$port" \
            --max-batch "$slots" --context 4096 "${fast[@]}" >"$log" 2>&1 &
        ;;
    llama-server)
        [ -x "$llama/bin/llama-server" ] || die "$llama/bin/llama-server is missing; build it with scripts/build-llama-cpp.sh or pass --llama-cpp DIR (or leave llama-server out of --servers)"
        "$llama/bin/llama-server" -m "$gguf" --alias "$model_ref" --host 127.0.0.1 \
            --port "$port" -c $((slots * 1024)) -np "$slots" -t "$threads" -tb "$threads" \
            >"$log" 2>&1 &
        ;;
    *) die "--servers: unknown server '$name' (ours, ours-fast-weights, llama-server)" ;;
    esac
    pids+=($!)
    echo "== $name: starting (log $log) ..." >&2
    wait_ready "$url" "$log" "$!"
    echo "== $name: ready at $url" >&2
    targets+=("$name=$url")
    port=$((port + 1))
done

echo "== load at c = $levels, $duration per level, each server in turn" >&2
loadlog=$logs/load.log
HF_HUB_OFFLINE=1 "$bin" load --url "$(IFS=,; echo "${targets[*]}")" --model "$model_ref" \
    --prompt-tokens "$prompt" --max-tokens "$out" --concurrency "$levels" \
    --duration "$duration" --warmup "$warmup" --slo-preset "$slo" \
    --label serving-table 2>&1 | tee "$loadlog" >&2
stop_servers
run=$(sed -n 's/^run folder: //p' "$loadlog" | tail -1)
[ -n "$run" ] && [ -f "$run/load.md" ] || die "modelbench load wrote no load.md (log $loadlog)"

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "not available")
llama_version=$("$llama/bin/llama-server" --version 2>&1 | sed -n 's/^version: //p' | head -1 || true)
echo
echo "Gemma 3 270M Q4_K_M ($(basename "$gguf")), prompt $prompt tokens, output $out, $threads thread(s) per server, $slots slots, $duration per level, SLO preset $slo; modelbench $commit, llama-server ${llama_version:-not available}; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
# The scaling table of load.md (after `## Scaling`): x c=1 per level per server.
awk '/^## Scaling/{s=1; next} s && /^\|/' "$run/load.md"
echo
echo "run folder: $run (load.md, load.csv, load.png, requests.jsonl)"
echo "server logs: $logs"
