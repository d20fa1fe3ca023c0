#!/usr/bin/env bash
# Writes a KL-divergence reference for modelbench's quality gate (issue 29, item 3): llama.cpp's
# own log-probabilities over every scored position of a short corpus, the way llama.cpp
# measures quantized models (`llama-perplexity --kl-divergence-base FILE` saves them,
# `--kl-divergence` compares a run against them). The JSON holds, small enough to commit:
#   token_ids            the corpus ids llama-perplexity evaluated (its n_chunks x n_ctx ids,
#                        read from the --kl-divergence-base file; BOS first)
#   reference            llama.cpp with an f32 KV cache and no flash attention (-ctk f32 -ctv f32
#                        -fa off, closest to an f32 implementation): per scored position its
#                        top-K token ids and their log-probabilities (the rest's mass is
#                        1 - sum(exp)), and the log-probability of the actual next token
#   llama_cpp_default    llama.cpp with its defaults (f16 KV cache, flash attention auto): its
#                        log-probabilities at the reference's top-K ids, of the next token, and
#                        its own top-1 id, per position; what the gate's thresholds are
#                        measured from (llama.cpp against itself)
#   llama_cpp_self_comparison  llama-perplexity --kl-divergence of the default run against the
#                        f32 base, as llama.cpp prints it (full vocabulary): mean KLD, its
#                        percentiles, "Same top p", PPL(Q)/PPL(base)
# Log-probabilities are llama.cpp's own, decoded from its base file (per position: f32 scale,
# f32 min log-prob, one uint16 per vocabulary entry; log p = scale*q + min) and written with 4
# decimals (the file's own step is 16/65535 = 0.00024 nats).
#
# Scored positions are llama-perplexity's (default mode): non-overlapping chunks of n_ctx ids,
# BOS replacing each chunk's first id when the model adds one, positions n_ctx/2 .. n_ctx-2 of
# each chunk scored against the next id; `--chunks` limits the chunks (the corpus stays short).
#
# Needs scripts/build-llama-cpp.sh's build and python3 (standard library only). Takes under a
# minute for the Gemma 3 270M on 2 cores (two llama-perplexity runs, one comparison, decoding
# 2 x 270 MB of base files); the base files live in a temporary folder and are deleted.
#
# Usage: scripts/llama-cpp-kld-reference.sh --model GGUF --out FILE [--llama-cpp DIR]
#          [--corpus TEXT] [--n-ctx N] [--chunks N] [--top-k K] [--threads T]
#   defaults: --corpus fixtures/corpus/kjv-genesis-1-3.txt, --n-ctx 512, --chunks 2,
#   --top-k 10, --threads 2, --llama-cpp $LLAMA_CPP_DIR or target/llama-cpp/0.3.36.
# FILE is written to a temporary file and moved into place whole.
set -euo pipefail
# ggml's AMX matmul (ggml_backend_amx_mul_mat, an "extra buffer type" that GGML_NATIVE compiles
# in on a CPU that advertises AMX) segfaults on this project's Intel VMs (measured 2026-11-25,
# family 6 model 167: every llama.cpp tool, on the real Gemma 3 file and on the fixtures; gdb
# shows the fault inside ggml_backend_amx_mul_mat). Without extra buffer types (--no-repack)
# llama.cpp runs its plain CPU kernels, so on such a CPU every tool runs with them.
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
  export LLAMA_ARG_REPACK=${LLAMA_ARG_REPACK:-false}
fi

VERSION=0.3.36
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self=$repo/scripts/$(basename "${BASH_SOURCE[0]}")
llama=${LLAMA_CPP_DIR:-$repo/target/llama-cpp/$VERSION}
model= out=
corpus=$repo/fixtures/corpus/kjv-genesis-1-3.txt
n_ctx=512 chunks=2 top_k=10 threads=2
usage="usage: $0 --model GGUF --out FILE [--llama-cpp DIR] [--corpus TEXT] [--n-ctx N] [--chunks N] [--top-k K] [--threads T]"
while [ $# -gt 0 ]; do
  case $1 in
    --model|--out|--llama-cpp|--corpus|--n-ctx|--chunks|--top-k|--threads)
      [ $# -ge 2 ] || { echo "error: $1 needs a value; $usage" >&2; exit 2; }
      case $1 in
        --model) model=$2 ;; --out) out=$2 ;; --llama-cpp) llama=$2 ;; --corpus) corpus=$2 ;;
        --n-ctx) n_ctx=$2 ;; --chunks) chunks=$2 ;; --top-k) top_k=$2 ;; --threads) threads=$2 ;;
      esac
      shift 2 ;;
    *) echo "error: unknown argument '$1'; $usage" >&2; exit 2 ;;
  esac
done
[ -n "$model" ] && [ -n "$out" ] || { echo "error: --model and --out are required; $usage" >&2; exit 2; }
command -v python3 >/dev/null || { echo "error: python3 is required (to decode llama.cpp's base files)" >&2; exit 2; }
bin=$llama/bin
[ -x "$bin/llama-perplexity" ] && [ -s "$llama/build-info.json" ] \
  || { echo "error: no llama.cpp build in $llama (missing bin/llama-perplexity or build-info.json); run scripts/build-llama-cpp.sh" >&2; exit 2; }
[ -s "$model" ] || { echo "error: no GGUF at $model" >&2; exit 2; }
[ -s "$corpus" ] || { echo "error: no corpus at $corpus" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/llama-cpp-kld.XXXXXX")
trap 'rm -rf "$tmp" "$out.tmp.$$"' EXIT
: > "$tmp/commands.tsv"
run() {
  local name=$1; shift
  local q; q=$(printf '%q ' "$@"); q=${q% }
  printf '%s\t%s\n' "$name" "$q" >> "$tmp/commands.tsv"
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || { echo "error: $name failed: $(tail -2 "$tmp/$name.err" | tr '\n' ' ')" >&2; exit 1; }
}
common=(-m "$model" -f "$corpus" -t "$threads" -c "$n_ctx" --chunks "$chunks")
echo "llama-perplexity: f32 KV cache, no flash attention (the reference) ..." >&2
run base_f32 "$bin/llama-perplexity" "${common[@]}" -ctk f32 -ctv f32 -fa off --kl-divergence-base "$tmp/f32.bin"
echo "llama-perplexity: llama.cpp's defaults ..." >&2
run base_default "$bin/llama-perplexity" "${common[@]}" --kl-divergence-base "$tmp/default.bin"
echo "llama-perplexity --kl-divergence: defaults against the f32 base ..." >&2
run self_kld "$bin/llama-perplexity" "${common[@]}" --kl-divergence-base "$tmp/f32.bin" --kl-divergence
# Whether the model adds a BOS (and which): "a" tokenized with and without it.
run tok_bos "$bin/llama-tokenize" -m "$model" -p a --ids --log-disable
run tok_nobos "$bin/llama-tokenize" -m "$model" -p a --ids --no-bos --log-disable

gguf_sha=$(sha256sum "$model" | cut -d' ' -f1)
corpus_sha=$(sha256sum "$corpus" | cut -d' ' -f1)
self_sha=$(sha256sum "$self" | cut -d' ' -f1)
mkdir -p "$(dirname "$out")"
echo "decoding the base files (top-$top_k per position) ..." >&2
python3 - "$tmp" "$out.tmp.$$" "$llama/build-info.json" "$model" "$gguf_sha" "$corpus" "$corpus_sha" "$self_sha" "$top_k" "$threads" "$repo" <<'PY'
import array, datetime, heapq, json, math, os, re, struct, sys

tmp, dest, build_info, model, gguf_sha, corpus, corpus_sha, self_sha, top_k, threads, repo = sys.argv[1:12]
top_k, threads = int(top_k), int(threads)
bi = json.load(open(build_info))

def fail(msg):
    sys.exit("error: " + msg)

def rel(p):
    p = os.path.abspath(p)
    return os.path.relpath(p, repo) if p.startswith(repo + os.sep) else p

commands = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(tmp, "commands.tsv")))

def log(name):
    return open(os.path.join(tmp, name + ".out"), errors="replace").read() + open(os.path.join(tmp, name + ".err"), errors="replace").read()

class Base:
    """llama-perplexity's --kl-divergence-base file."""
    def __init__(self, path):
        self.f = open(path, "rb")
        if self.f.read(8) != b"_logits_":
            fail(f"{path}: not a llama.cpp logits file")
        self.n_ctx, self.n_vocab, self.n_chunk = struct.unpack("<iii", self.f.read(12))
        self.tokens = array.array("i")
        self.tokens.frombytes(self.f.read(4 * self.n_ctx * self.n_chunk))
        self.nv = 2 * ((self.n_vocab + 1) // 2) + 4
    def row(self):
        b = self.f.read(2 * self.nv)
        if len(b) != 2 * self.nv:
            fail("truncated logits file")
        scale, mn = struct.unpack("<ff", b[:8])
        q = array.array("H")
        q.frombytes(b[8:8 + 2 * self.n_vocab])
        return scale, mn, q

f32, dft = Base(os.path.join(tmp, "f32.bin")), Base(os.path.join(tmp, "default.bin"))
if (f32.n_ctx, f32.n_vocab, f32.n_chunk, f32.tokens) != (dft.n_ctx, dft.n_vocab, dft.n_chunk, dft.tokens):
    fail("the two base files disagree on n_ctx, n_vocab, chunks or tokens")
n_ctx, n_vocab, n_chunk = f32.n_ctx, f32.n_vocab, f32.n_chunk
first = n_ctx // 2
per_chunk = n_ctx - 1 - first
r4 = lambda x: round(x, 4)
ref = {"top_ids": [], "top_logprobs": [], "target_logprob": []}
dfl = {"logprobs_at_reference_top_ids": [], "target_logprob": [], "top1_id": []}
for k in range(n_chunk):
    for j in range(per_chunk):
        target = f32.tokens[k * n_ctx + first + j + 1]
        s, m, q = f32.row()
        top = heapq.nlargest(top_k, range(n_vocab), key=q.__getitem__)
        ref["top_ids"].append(top)
        ref["top_logprobs"].append([r4(s * q[i] + m) for i in top])
        ref["target_logprob"].append(r4(s * q[target] + m))
        s2, m2, q2 = dft.row()
        dfl["logprobs_at_reference_top_ids"].append([r4(s2 * q2[i] + m2) for i in top])
        dfl["target_logprob"].append(r4(s2 * q2[target] + m2))
        mx = max(q2)
        dfl["top1_id"].append(q2.index(mx))

def final_ppl(name):
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log(name))
    if not m:
        fail(f"{name}: no 'Final estimate' in llama-perplexity's output")
    return float(m[1]), float(m[2])

t = log("self_kld")
def stat(pattern, what):
    m = re.search(pattern, t, re.M)
    if not m:
        fail(f"self_kld: no '{what}' in llama-perplexity's --kl-divergence output")
    return [float(x) for x in m.groups()]
num = r"(-?[0-9.]+)"
self_cmp = {
    "mean_kld": stat(r"^Mean\s+KLD:\s+" + num + r" ±\s+" + num, "Mean KLD")[0],
    "mean_kld_uncertainty": stat(r"^Mean\s+KLD:\s+" + num + r" ±\s+" + num, "Mean KLD")[1],
    "kld_p99": stat(r"^99\.0%\s+KLD:\s+" + num, "99.0% KLD")[0],
    "kld_max": stat(r"^Maximum KLD:\s+" + num, "Maximum KLD")[0],
    "kld_median": stat(r"^Median\s+KLD:\s+" + num, "Median KLD")[0],
    "same_top_p_percent": stat(r"^Same top p:\s+" + num + r" ±\s+" + num, "Same top p")[0],
    "same_top_p_uncertainty_percent": stat(r"^Same top p:\s+" + num + r" ±\s+" + num, "Same top p")[1],
    "ppl_ratio": stat(r"^Mean PPL\(Q\)/PPL\(base\)\s+:\s+" + num + r" ±\s+" + num, "Mean PPL(Q)/PPL(base)")[0],
    "ppl_ratio_uncertainty": stat(r"^Mean PPL\(Q\)/PPL\(base\)\s+:\s+" + num + r" ±\s+" + num, "Mean PPL(Q)/PPL(base)")[1],
    "mean_ln_ppl_ratio": stat(r"^Mean ln\(PPL\(Q\)/PPL\(base\)\)\s+:\s+" + num + r" ±\s+" + num, "Mean ln(PPL(Q)/PPL(base))")[0],
    "mean_ln_ppl_ratio_uncertainty": stat(r"^Mean ln\(PPL\(Q\)/PPL\(base\)\)\s+:\s+" + num + r" ±\s+" + num, "Mean ln(PPL(Q)/PPL(base))")[1],
    "what": "llama-perplexity --kl-divergence (full vocabulary) of llama.cpp's default run (Q) against its f32-KV run (base), on the same positions; printed by llama.cpp itself",
    "command": commands["self_kld"],
}
import ast
with_bos = ast.literal_eval(open(os.path.join(tmp, "tok_bos.out")).read().strip())
without_bos = ast.literal_eval(open(os.path.join(tmp, "tok_nobos.out")).read().strip())
bos = with_bos[0] if len(with_bos) == len(without_bos) + 1 else None
if bos is not None and f32.tokens[0] != bos:
    fail(f"the model adds BOS {bos} but llama-perplexity's ids start with {f32.tokens[0]}")
gguf_size = os.path.getsize(model)
doc = {
    "format": "modelbench-kld-reference/1",
    "provenance": {
        "made_by": "scripts/llama-cpp-kld-reference.sh (llama.cpp's llama-perplexity; this script only decodes its base files), never by modelbench",
        "script_sha256": self_sha,
        "llama_cpp_commit": bi["llama_cpp_commit"],
        "llama_cpp_python_version": bi["llama_cpp_python_version"],
        "llama_cpp_python_sdist_sha256": bi["sdist_sha256"],
        "llama_cpp_build": {k: bi.get(k) for k in ("compiler", "cpu", "system_info", "built_at")},
        "gguf": {"path": rel(model), "file_name": os.path.basename(model), "sha256": gguf_sha, "bytes": gguf_size},
        "corpus": {"path": rel(corpus), "sha256": corpus_sha},
        "threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commands": {k: v for k, v in commands.items()},
    },
    "n_ctx": n_ctx,
    "n_chunks": n_chunk,
    "n_vocab": n_vocab,
    "top_k": top_k,
    "bos_id": bos,
    "add_bos": bos is not None,
    "scored": f"per chunk k (0..n_chunks), positions j = n_ctx/2 .. n_ctx-2 (= {first} .. {n_ctx - 2}), i.e. {per_chunk} a chunk, in order; the distribution at position j predicts token_ids[k*n_ctx + j + 1]; each chunk starts from an empty cache and, when add_bos, has its first id replaced by bos_id",
    "token_ids": list(f32.tokens),
    "reference": dict(settings={"kv_cache": "f32", "flash_attn": "off"}, ppl=final_ppl("base_f32")[0], **ref),
    "llama_cpp_default": dict(settings={"kv_cache": "f16", "flash_attn": "auto"}, ppl=final_ppl("base_default")[0], **dfl),
    "llama_cpp_self_comparison": self_cmp,
}
with open(dest, "w") as fh:
    json.dump(doc, fh, separators=(",", ":"))
    fh.write("\n")
PY
mv "$out.tmp.$$" "$out"
echo "wrote $out ($(wc -c < "$out") bytes)" >&2
