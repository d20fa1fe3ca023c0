#!/usr/bin/env bash
# The GPU reference run, step by step, on an NVIDIA GPU; each step's run folder is copied to
# target-reports/reference/<date>-<gpu>-<step>/, which git tracks (every other run folder is
# ignored).
#
#   scripts/gpu-reference.sh                      # on a GPU machine with Rust: builds, runs all
#   scripts/gpu-reference.sh --bin-dir DIR        # binaries built elsewhere (see below)
#   scripts/gpu-reference.sh --binary FILE        # one generation bench binary built elsewhere
#   scripts/gpu-reference.sh --steps generation,moe
#
# Steps (default: all of them whose binary is there), in this order:
#   calibrate   modelbench calibrate --device cuda, bf16 and f32 (the roofs the records use)
#   generation  the quick tier, bf16, synthetic Llama-3.2-1B, Qwen3-1.7B, Gemma-3-1B shapes
#   moe         the moe_topk grid at the original 16 experts, top-k 2 (1 and 512 tokens)
#   psann       PSANN-LM's large throughput grid (gpu03) (batch_tokens 65536, 131072, 262144)
#   checkpoint  the PSANN spec's medium waveresnet, bf16 autocast, with and without checkpointing
#   gguf        the quick tier on the quantized GGUF fixtures (written on the device; candle's CUDA
#               quantized kernels), qwen3moe on both implementations (candle's needs CUDA)
#               (GPU_REF_GGUF_MODELS and GPU_REF_GGUF_TIER change the models and the tier)
#   verify      `modelbench verify --device cuda` (the KLD gate against llama.cpp) on GGUF fixtures
#               (GPU_REF_VERIFY, fixture names with an optional ?impl=, default: qwen3moe on
#               candle's and on the project's implementation, gemma3 llama3 qwen2; the two
#               qwen3moe verdicts side by side tell candle's kernel from the device's
#               arithmetic, docs/models.md); llama.cpp's reference
#               must be cached under target/modelbench-verify/ (made on a CPU machine: verify there
#               first, then carry the *.kld.json files), as no llama.cpp is built on the GPU machine
#   serve       `modelbench serve` on synthetic Llama-3.2-1B (bf16) and `modelbench load` against
#               it on loopback (c = 1, 4; 15 s a level), under `modelbench power`
# Each step runs under its own time limit (GPU_REF_STEP_SECS, default 300; GPU_REF_SECS_<step>
# for one step); a failed step is reported and the others still run; the exit status is 1 when
# any failed.
#
# Building elsewhere (a machine without a GPU; see scripts/install-cuda-toolchain.sh):
#   eval "$(scripts/install-cuda-toolchain.sh --env --compute-cap 90)"
#   RUSTFLAGS='-C target-cpu=x86-64-v3' cargo build --release --features cuda --bin modelbench --benches
#   scripts/gpu-reference.sh --collect DIR    # copies modelbench and the four bench binaries
# The binaries link the CUDA 13 libraries dynamically (cudart, cuBLAS, cuRAND); where they are
# not on the loader path, this script looks in CUDA_HOME/lib and in Python's nvidia wheels.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=""
binary=""
steps=""
all_steps="calibrate generation moe psann checkpoint gguf verify serve"
models=${MODELBENCH_MODELS:-synthetic:llama-3.2-1b,synthetic:qwen3-1.7b,synthetic:gemma-3-1b}
step_secs=${GPU_REF_STEP_SECS:-300}
target=${CARGO_TARGET_DIR:-$root/target}

newest() { # newest release binary of a bench target
  ls -t "$target"/release/deps/"$1"-* 2>/dev/null | grep -v '\.d$' | head -1
}

collect() {
  local dest=$1 b
  mkdir -p "$dest"
  cp "$target/release/modelbench" "$dest/modelbench"
  for b in generation moe psann checkpoint; do
    local f
    f=$(newest "$b")
    [ -n "$f" ] || { echo "error: no $b bench binary under $target/release/deps; build it first" >&2; exit 2; }
    cp "$f" "$dest/$b"
  done
  strip "$dest"/* 2>/dev/null || true
  ls -la "$dest"
}

while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) [ $# -ge 2 ] || { echo "error: --bin-dir needs a folder" >&2; exit 2; }; bin_dir=$2; shift ;;
    --binary) [ $# -ge 2 ] || { echo "error: --binary needs a file" >&2; exit 2; }; binary=$2; shift ;;
    --steps) [ $# -ge 2 ] || { echo "error: --steps needs a comma list of: $all_steps" >&2; exit 2; }; steps=${2//,/ }; shift ;;
    --collect) [ $# -ge 2 ] || { echo "error: --collect needs a folder" >&2; exit 2; }; collect "$2"; exit 0 ;;
    --print-binary)
      b=$(newest generation)
      [ -n "$b" ] || { echo "error: no generation bench binary under $target/release/deps; build it first" >&2; exit 2; }
      echo "$b"; exit 0 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for s in $steps; do
  case " $all_steps " in *" $s "*) ;; *) echo "error: unknown step '$s' (steps: $all_steps)" >&2; exit 2 ;; esac
done

command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
  || { echo "error: no NVIDIA GPU here (nvidia-smi missing or finds no device); run this on a GPU machine" >&2; exit 2; }
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)

# Where each step's binary is.
declare -A bins
if [ -n "$bin_dir" ]; then
  for b in modelbench generation moe psann checkpoint; do
    [ -x "$bin_dir/$b" ] && bins[$b]=$(realpath "$bin_dir/$b")
  done
elif [ -n "$binary" ]; then
  bins[generation]=$(realpath "$binary")
  steps=${steps:-generation}
else
  command -v cargo >/dev/null || { echo "error: no cargo here; build elsewhere and pass --bin-dir (see --help)" >&2; exit 2; }
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}
  (cd "$root" && cargo build --release --features cuda --bin modelbench --benches)
  bins[modelbench]=$target/release/modelbench
  for b in generation moe psann checkpoint; do bins[$b]=$(newest "$b"); done
fi
binary_of() {
  case $1 in calibrate|serve|verify) echo "${bins[modelbench]:-}" ;; gguf) echo "${bins[generation]:-}" ;; *) echo "${bins[$1]:-}" ;; esac
}
if [ -z "$steps" ]; then
  for s in $all_steps; do [ -n "$(binary_of "$s")" ] && steps="$steps $s"; done
fi
steps=$(echo $steps)
for s in $steps; do
  b=$(binary_of "$s")
  [ -n "$b" ] && [ -x "$b" ] || { echo "error: step '$s' has no binary (pass --bin-dir with it, or build it)" >&2; exit 2; }
done

# The CUDA 13 user-space libraries, if the loader does not find them by itself.
any=$(binary_of "${steps%% *}")
if ldd "$any" | grep -q "not found"; then
  dirs=()
  [ -n "${CUDA_HOME:-}" ] && dirs+=("$CUDA_HOME/lib" "$CUDA_HOME/lib64")
  for py in python3 /opt/torch/.venv/bin/python3; do
    command -v "$py" >/dev/null || continue
    while IFS= read -r d; do dirs+=("$d"); done < <("$py" - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
EOF
)
  done
  for d in "${dirs[@]}"; do [ -d "$d" ] && LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; done
  export LD_LIBRARY_PATH
  missing=$(ldd "$any" | grep "not found" || true)
  [ -z "$missing" ] || { echo "error: the binaries cannot find: $(echo "$missing" | awk '{print $1}' | tr '\n' ' ')(install the CUDA 13 runtime, cuBLAS and cuRAND, or set CUDA_HOME)" >&2; exit 2; }
fi

reports=$(mktemp -d)
# GPU_REF_KEEP=DIR: every step's raw run folder and logs are copied there at the end, failed
# steps' included (for a device session whose machine is gone afterwards).
trap 'if [ -n "${GPU_REF_KEEP:-}" ]; then mkdir -p "$GPU_REF_KEEP" && cp -r "$reports"/. "$GPU_REF_KEEP"/; fi; rm -rf "$reports"' EXIT
slug=$(echo "$gpu" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
date=$(date -u +%Y%m%d)
mkdir -p "$root/target-reports/reference"
echo "GPU: $gpu (compute capability $cap); steps:$steps"
nvidia-smi -q > "$reports/nvidia-smi.txt" 2>&1 || true

save() { # run folder of label $1 -> target-reports/reference/<date>-<gpu>-<step>
  local run dest
  run=$(ls -d "$reports"/*-"$1" 2>/dev/null | tail -1)
  [ -n "$run" ] && [ -s "$run/results.jsonl" ] || { echo "error: step $1 wrote no records" >&2; return 1; }
  cp "$reports/nvidia-smi.txt" "$run/nvidia-smi.txt"
  dest=$root/target-reports/reference/$date-$slug-$2
  rm -rf "$dest.tmp" && cp -r "$run" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  echo "saved $dest"
}

failed=""
for s in $steps; do
  b=$(binary_of "$s")
  start=$(date +%s)
  lim_var=GPU_REF_SECS_$s
  step_secs=${!lim_var:-${GPU_REF_STEP_SECS:-300}}
  echo "== $s ($(basename "$b")), limit ${step_secs} s"
  env_common=(MODELBENCH_DEVICE=cuda MODELBENCH_REPORTS="$reports" CARGO_TARGET_DIR="$target" MODELBENCH_LABEL="gpu-$s")
  rc=0
  case $s in
    calibrate)
      (cd "$root" && env CARGO_TARGET_DIR="$target" timeout "$step_secs" "$b" calibrate --device cuda --dtype bf16 --dtype f32 --force) || rc=$?
      if [ $rc = 0 ]; then
        dest=$root/target-reports/reference/$date-$slug-calibrate
        mkdir -p "$dest" && cp "$target/modelbench-machine.json" "$dest/machine.json" \
          && cp "$reports/nvidia-smi.txt" "$dest/" && echo "saved $dest"
      fi ;;
    generation)
      (cd "$root" && env "${env_common[@]}" MODELBENCH_DTYPE=bf16 MODELBENCH_TIER=quick MODELBENCH_MODELS="$models" \
        timeout "$step_secs" "$b" --bench) || rc=$? ;;
    moe)
      (cd "$root" && env "${env_common[@]}" MODELBENCH_DTYPE=bf16 MODELBENCH_MOE_EXPERTS=16 MODELBENCH_MOE_TOPK=2 \
        MODELBENCH_MOE_TOKENS=1,512 timeout "$step_secs" "$b" --bench) || rc=$? ;;
    psann)
      (cd "$root" && env "${env_common[@]}" MODELBENCH_PSANN_GRID=gpu03 \
        timeout "$step_secs" "$b" --bench) || rc=$? ;;
    checkpoint)
      (cd "$root" && env "${env_common[@]}" MODELBENCH_DTYPE=bf16 \
        timeout "$step_secs" "$b" --bench) || rc=$? ;;
    gguf)
      (cd "$root" && env "${env_common[@]}" MODELBENCH_TIER="${GPU_REF_GGUF_TIER:-quick}" \
        MODELBENCH_MODELS="${GPU_REF_GGUF_MODELS:-gguf:fixture:llama3,gguf:fixture:qwen2,gguf:fixture:qwen3,gguf:fixture:gemma3,gguf:fixture:qwen3moe,gguf:fixture:qwen3moe?impl=candle-transformers}" \
        timeout "$step_secs" "$b" --bench) || rc=$? ;;
    verify)
      dest=$root/target-reports/reference/$date-$slug-verify
      rm -rf "$dest" && mkdir -p "$dest" && cp "$reports/nvidia-smi.txt" "$dest/"
      for fam in ${GPU_REF_VERIFY:-qwen3moe?impl=candle-transformers qwen3moe gemma3 llama3 qwen2}; do
        frc=0
        out=$dest/verify-${fam//[?=]/-}.txt
        (cd "$root" && env CARGO_TARGET_DIR="$target" MODELBENCH_REPORTS="$reports" timeout "$step_secs" \
          "$b" verify --device cuda --model "gguf:fixture:$fam" --no-save) >"$out" 2>&1 || frc=$?
        echo "verify gguf:fixture:$fam on cuda: exit $frc; $(grep -E '^verdict' "$out" || tail -1 "$out")"
        # candle's qwen3moe failed the gate on an H200 (docs/models.md): its FAILED is the
        # finding, not a failed step.
        [ $frc = 0 ] || [ "$fam" = "qwen3moe?impl=candle-transformers" ] || rc=1
      done
      cp "$target"/modelbench-quality/verdicts/*.json "$dest/" 2>/dev/null || true
      echo "saved $dest" ;;
    serve)
      serve_model=synthetic:llama-3.2-1b
      log=$reports/serve.log
      (cd "$root" && env MODELBENCH_DEVICE=cuda MODELBENCH_DTYPE=bf16 MODELBENCH_REPORTS="$reports" \
        timeout "$step_secs" "$b" serve --model "$serve_model" --device cuda --port 0 >"$log" 2>&1) &
      server=$!
      url=""
      for _ in $(seq 600); do
        url=$(grep -o 'listening on http://[0-9.:]*' "$log" 2>/dev/null | sed 's/listening on //' || true)
        [ -n "$url" ] && break
        kill -0 $server 2>/dev/null || break
        sleep 0.2
      done
      if [ -z "$url" ]; then
        echo "error: the server did not start:"; cat "$log"; rc=1
      else
        (cd "$root" && env MODELBENCH_REPORTS="$reports" timeout "$step_secs" "$b" power --out "$reports/serve-power.json" -- \
          "$b" load --url "$url" --model "$serve_model" --prompt-tokens 128 --max-tokens 64 \
          --concurrency 1,4 --duration 15s --warmup 2 --label gpu-serve) || rc=$?
        tail -3 "$log"
      fi
      kill $server 2>/dev/null || true
      wait $server 2>/dev/null || true
      run=$(ls -d "$reports"/*-gpu-serve 2>/dev/null | tail -1 || true)
      [ -n "$run" ] && cp "$log" "$reports/serve-power.json" "$run/" 2>/dev/null || true ;;
  esac
  if [ $rc = 0 ] && [ $s != calibrate ] && [ $s != verify ]; then save "gpu-$s" "$s" || rc=1; fi
  [ $rc = 0 ] || nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv 2>&1 | sed 's/^/  after failure: /'
  echo "== $s: exit $rc after $(( $(date +%s) - start )) s"
  [ $rc = 0 ] || failed="$failed $s"
done
[ -z "$failed" ] || { echo "error: steps failed:$failed" >&2; exit 1; }
echo "all steps done (commit them: git add target-reports/reference)"
