#!/usr/bin/env bash
# docs/serving.md's prefix-caching table (issue 62): multi-turn conversations with a shared
# system prefix against `modelbench serve` and llama.cpp's llama-server on the same GGUF, each
# measured twice by `modelbench load`: with its prefix cache (both servers' default) and with
# `"cache_prompt": false` in every request (--no-cache-prompt). Prints, per file and server,
# TTFT by turn with and without the cache, the cached share of each turn's prompt as the
# server reports it, and the output verdict of our server's cache-on texts against its
# cache-off texts (`modelbench compare` of the two loads; greedy, request by request).
#
# Measure on a quiet machine (docs/serving.md); a small --requests checks that it works.
#
# Usage: scripts/prefix-cache-table.sh [--files gemma,qwen] [--turns 5] [--concurrency 4]
#          [--requests 40] [--prompt-tokens 64] [--max-tokens 32] [--prefix-tokens 256]
#          [--threads 2] [--port 18400] [--bin PATH] [--llama-cpp DIR] [--servers ours,llama-server]
#          [--ours-flags "--swa-full"]
#   --files: gemma (Gemma 3 270M Q4_K_M), qwen (Qwen2.5-Coder-0.5B-Instruct Q4_K_M): the
#            snapshots scripts/fetch-offline-models.sh installs in the Hugging Face cache
#   --bin: a modelbench binary (default: `cargo build --release` and its target/release binary)
#   --llama-cpp: scripts/build-llama-cpp.sh's folder (default $LLAMA_CPP_DIR)
#   --ours-flags: more flags for `modelbench serve` (split at spaces), e.g. --swa-full
# Server logs and each load's output go to target/prefix-cache-table/; the run folders are
# under target-reports/ (labels prefix-<file>-<cache|nocache>).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

files=gemma,qwen turns=5 conc=4 requests=40 prompt=64 out=32 prefix=256 threads=2
port=18400 bin="" llama="${LLAMA_CPP_DIR:-}" servers=ours,llama-server ours_flags=""
die() {
    echo "prefix-cache-table.sh: $*" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value (see the usage at the top of $0)"
    case "$1" in
    --files) files=$2 ;;
    --turns) turns=$2 ;;
    --concurrency) conc=$2 ;;
    --requests) requests=$2 ;;
    --prompt-tokens) prompt=$2 ;;
    --max-tokens) out=$2 ;;
    --prefix-tokens) prefix=$2 ;;
    --threads) threads=$2 ;;
    --port) port=$2 ;;
    --bin) bin=$2 ;;
    --llama-cpp) llama=$2 ;;
    --servers) servers=$2 ;;
    --ours-flags) ours_flags=$2 ;;
    *) die "unknown flag $1 (see the usage at the top of $0)" ;;
    esac
    shift 2
done
for n in "$turns" "$conc" "$requests" "$prompt" "$out" "$prefix" "$threads" "$port"; do
    [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a whole number"
done
if [ -z "$bin" ]; then
    echo "building target/release/modelbench (cargo build --release) ..." >&2
    cargo build --release --quiet --bin modelbench
    bin=${CARGO_TARGET_DIR:-$repo/target}/release/modelbench
fi
[ -x "$bin" ] || die "--bin $bin: not an executable"
hub=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
out_dir=$repo/target/prefix-cache-table
mkdir -p "$out_dir"

pid=""
stop_server() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

wait_ready() {
    local url=$1 log=$2 i
    for i in $(seq 1 600); do
        curl -sf -o /dev/null --max-time 2 "$url/health" && return 0
        kill -0 "$pid" 2>/dev/null || {
            tail -20 "$log" >&2
            die "the server exited before it was ready (log $log)"
        }
        sleep 0.5
    done
    die "the server at $url was not ready after 300 s (log $log)"
}

# Prints a load's by-turn table (the first one in its output).
by_turn() {
    awk '/^\| turn \|/{s=1} s && /^\|/{print} s && !/^\|/{exit}' "$1"
}

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "not available")
IFS=, read -r -a file_list <<<"$files"
IFS=, read -r -a server_list <<<"$servers"
for f in "${file_list[@]}"; do
    case "$f" in
    gemma) repo_id=gemma-3-270m-Q4_K_M-GGUF name=gemma-3-270m-Q4_K_M.gguf ;;
    qwen) repo_id=Qwen2.5-Coder-0.5B-Instruct-GGUF name=Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf ;;
    *) die "--files: unknown file '$f' (gemma, qwen)" ;;
    esac
    gguf=$(ls "$hub"/models--modelbench-offline--$repo_id/snapshots/*/$name 2>/dev/null | head -1 || true)
    [ -n "$gguf" ] || die "$name is not installed under $hub; run scripts/fetch-offline-models.sh"
    model_ref="gguf:modelbench-offline/$repo_id"
    for server in "${server_list[@]}"; do
        url=http://127.0.0.1:$port
        log=$out_dir/$f-$server.log
        case "$server" in
        ours)
            CANDLE_NUM_THREADS=$threads RAYON_NUM_THREADS=$threads HF_HUB_OFFLINE=1 \
                "$bin" serve --model "$model_ref" --host 127.0.0.1 --port "$port" \
                --max-batch "$conc" --context 4096 $ours_flags >"$log" 2>&1 &
            ;;
        llama-server)
            [ -x "$llama/bin/llama-server" ] || die "no llama-server under '$llama': build it with scripts/build-llama-cpp.sh and pass --llama-cpp DIR (or --servers ours)"
            # llama-server reads a chat template from the GGUF only (else ChatML); where the file
            # has none and its snapshot's tokenizer_config.json has one (what our server
            # renders), it gets the same template, so both servers see the same prompts.
            tmpl=$out_dir/$f-chat_template.jinja
            template=()
            if python3 - "$gguf" "$tmpl" <<'PY'; then template=(--chat-template-file "$tmpl"); fi
import json, os, sys
gguf, out = sys.argv[1], sys.argv[2]
with open(gguf, 'rb') as f:
    if b'tokenizer.chat_template' in f.read(64 << 20):
        sys.exit(1)
cfg = os.path.join(os.path.dirname(gguf), 'tokenizer_config.json')
t = json.load(open(cfg)).get('chat_template') if os.path.exists(cfg) else None
if not isinstance(t, str):
    sys.exit(1)
open(out, 'w').write(t)
PY
            # LLAMA_ARG_REPACK=false: ggml's AMX repacking faults on some CPUs (tests/chat_template.rs).
            LLAMA_ARG_REPACK=false "$llama/bin/llama-server" -m "$gguf" --alias "$model_ref" \
                --host 127.0.0.1 --port "$port" -c $((conc * 4096)) -np "$conc" \
                -t "$threads" -tb "$threads" --jinja "${template[@]}" >"$log" 2>&1 &
            ;;
        *) die "--servers: unknown server '$server' (ours, llama-server)" ;;
        esac
        pid=$!
        wait_ready "$url" "$log"
        for cache in cache nocache; do
            flag=()
            [ "$cache" = nocache ] && flag=(--no-cache-prompt)
            label=prefix-$f-$server-$cache
            echo "== $f, $server, $cache: load ..." >&2
            HF_HUB_OFFLINE=1 "$bin" load --url "$url" --model "$model_ref" --endpoint chat \
                --turns "$turns" --prefix-tokens "$prefix" --prompt-tokens "$prompt" \
                --max-tokens "$out" --concurrency "$conc" --requests "$requests" --warmup 1 \
                --label "$label" "${flag[@]}" >"$out_dir/$label.out" 2>&1 ||
                { tail -20 "$out_dir/$label.out" >&2; die "load failed ($out_dir/$label.out)"; }
        done
        stop_server
        echo
        echo "### $name, $server: with its prefix cache"
        echo
        by_turn "$out_dir/prefix-$f-$server-cache.out"
        echo
        echo "### $name, $server: cache_prompt false"
        echo
        by_turn "$out_dir/prefix-$f-$server-nocache.out"
        run_of() { sed -n 's/^run folder: //p' "$out_dir/$1.out" | tail -1; }
        echo
        echo "Output verdict, $server with the cache against without (compare, request by request):"
        verdict=$(HF_HUB_OFFLINE=1 "$bin" compare "$(run_of prefix-$f-$server-nocache)" \
            "$(run_of prefix-$f-$server-cache)" 2>&1 || true)
        grep -E "^outputs:" <<<"$verdict" || echo "(compare printed no output verdict)"
        # Which requests' texts differ, by turn (requests.jsonl: request number, turn, hash).
        python3 - "$(run_of prefix-$f-$server-nocache)/requests.jsonl" \
            "$(run_of prefix-$f-$server-cache)/requests.jsonl" <<'PY'
import json, sys
def load(p):
    return {r["request"]: r for r in map(json.loads, open(p)) if "request" in r}
a, b = load(sys.argv[1]), load(sys.argv[2])
shared = sorted(set(a) & set(b))
by_turn = {}
for k in shared:
    t = a[k].get("turn", 0) + 1
    same = a[k].get("text_sha256") == b[k].get("text_sha256")
    s, n = by_turn.get(t, (0, 0))
    by_turn[t] = (s + same, n + 1)
print("texts equal by turn (equal/compared): " + ", ".join(
    f"turn {t}: {s}/{n}" for t, (s, n) in sorted(by_turn.items())))
PY
        port=$((port + 1))
    done
done
echo
echo "modelbench $commit; chat endpoint, $turns turns, prefix $prefix tokens (1 prefix), prompt $prompt tokens a turn, $out output tokens, c=$conc, $requests requests, $threads thread(s) per server; llama-server $("$llama/bin/llama-server" --version 2>&1 | sed -n 's/^version: //p' | head -1 || true); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
