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
# Steps of issue 60 (they need the CUDA build of llama.cpp, scripts/build-llama-cpp.sh --cuda 90,
# given with --llama-dir, and GGUFs at real shapes, which `realgguf` writes on the GPU machine):
#   realgguf    `modelbench synth-gguf` (seeded weights, real shapes): Q8_0 and Q4_K (candle's
#               quantizer on every core) and, with --llama-dir, F16 then llama-quantize Q4_K_M,
#               for each of GPU_REF_REAL (default: llama-3.2-1b qwen3-1.7b gemma-3-1b), into
#               GPU_REF_WORK (default /tmp/modelbench-gpu)
#   peers       `modelbench peers --device cuda` on llama-3.2-1b's Q4_K_M and Q8_0: candle
#               against llama.cpp's CUDA build (-ngl 99), matched (f32 KV, no flash attention)
#               and llama.cpp's defaults, alternating, ratio intervals (GPU_REF_PEER_TRIALS, 5)
#   trace       where a decode step's time goes: CUPTI kernel traces (scripts/cuda-kernel-trace.c,
#               --trace-lib) of candle and llama.cpp (both settings) generating 32 and 160 tokens,
#               summarised by scripts/cuda-trace-summary.py; `modelbench ops --device cuda` with
#               ggml's CUDA test-backend-ops beside it
#   realquick   the quick tier (generation bench) on the real-shape GGUFs written
#   realverify  `modelbench verify --device cuda` on them (reference: the CUDA llama.cpp's
#               llama-perplexity)
#   full        the seed's full tier (all seven scenarios) on the synthetic 1B shapes in bf16
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
all_steps="calibrate generation moe psann checkpoint gguf verify serve realgguf peers trace realquick realverify full"
llama_dir=""
trace_lib=""
work=${GPU_REF_WORK:-/tmp/modelbench-gpu}
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

# --pack FILE: everything a GPU machine without a network or a compiler needs for the steps,
# as one xz archive (.tar.xz): bin/ (modelbench and the generation bench, built as in the header with
# --features cuda), llama/ (the CUDA build of llama.cpp: scripts/build-llama-cpp.sh --cuda 90,
# its programs, shared libraries, build-info.json), trace/ (scripts/cuda-kernel-trace.c compiled
# against CUPTI, with the libcupti.so.13 of scripts/install-cuda-toolchain.sh). On the GPU
# machine: python3 -c "import tarfile; tarfile.open('FILE').extractall('/tmp/g')", then
#   scripts/gpu-reference.sh --bin-dir /tmp/g/bin --llama-dir /tmp/g/llama \
#     --trace-lib /tmp/g/trace/cuda-kernel-trace.so --steps realgguf,peers,trace,...
pack() {
  local out=$1 tmp llama
  case $out in /*) ;; *) out=$PWD/$out ;; esac
  llama=${LLAMA_CUDA_DIR:-$root/target/llama-cpp/0.3.36-cuda90}
  if [ ! -s "$llama/build-info.json" ]; then
    [ "${GPU_REF_PACK_WITHOUT_LLAMA:-}" = 1 ] \
      || { echo "error: no CUDA build of llama.cpp in $llama (scripts/build-llama-cpp.sh --cuda 90, or set LLAMA_CUDA_DIR; GPU_REF_PACK_WITHOUT_LLAMA=1 packs candle's side alone)" >&2; exit 2; }
    llama=""
  fi
  [ -n "${CUDA_HOME:-}" ] && [ -f "$CUDA_HOME/include/cupti.h" ] \
    || { echo "error: CUPTI's headers are needed: eval \"\$(scripts/install-cuda-toolchain.sh --env)\"" >&2; exit 2; }
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/llama/bin" "$tmp/llama/lib" "$tmp/trace"
  cp "$target/release/modelbench" "$tmp/bin/modelbench"
  # GPU_REF_PACK_BENCH=0 leaves the generation bench out (the steps that need only modelbench).
  if [ "${GPU_REF_PACK_BENCH:-1}" != 0 ]; then
    local f; f=$(newest generation)
    [ -n "$f" ] || { echo "error: no generation bench binary under $target/release/deps; build it first" >&2; exit 2; }
    cp "$f" "$tmp/bin/generation"
  fi
  if [ -n "$llama" ]; then
    for b in llama-timed-ids llama-quantize llama-perplexity llama-tokenize llama-bench test-backend-ops; do
      cp "$llama/bin/$b" "$tmp/llama/bin/"
    done
    cp -a "$llama"/lib/lib*.so* "$tmp/llama/lib/"
    cp "$llama/build-info.json" "$llama/ggml-ids.txt" "$tmp/llama/"
  fi
  strip "$tmp"/bin/* "$tmp"/llama/bin/* 2>/dev/null || true
  strip --strip-unneeded "$tmp"/llama/lib/*.so 2>/dev/null || true
  gcc -O2 -shared -fPIC -I"$CUDA_HOME/include" "$root/scripts/cuda-kernel-trace.c" -o "$tmp/trace/cuda-kernel-trace.so" \
    -L"$CUDA_HOME/lib" -lcupti -Wl,-rpath,'$ORIGIN'
  cp "$CUDA_HOME/lib/libcupti.so.13" "$tmp/trace/"
  # xz, unpacked there by Python's tarfile: the GPU machines' image has no zstd (seen
  # 2026-11-27), and gzip leaves the CUDA binaries at 89 MB, over what a device call carries.
  tar -C "$tmp" -cf - . | xz -6 -T0 > "$out"
  du -sh "$tmp"/* "$out"
  rm -rf "$tmp"
}

while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) [ $# -ge 2 ] || { echo "error: --bin-dir needs a folder" >&2; exit 2; }; bin_dir=$2; shift ;;
    --binary) [ $# -ge 2 ] || { echo "error: --binary needs a file" >&2; exit 2; }; binary=$2; shift ;;
    --llama-dir) [ $# -ge 2 ] || { echo "error: --llama-dir needs a folder" >&2; exit 2; }; llama_dir=$(realpath "$2"); shift ;;
    --trace-lib) [ $# -ge 2 ] || { echo "error: --trace-lib needs a file" >&2; exit 2; }; trace_lib=$(realpath "$2"); shift ;;
    --steps) [ $# -ge 2 ] || { echo "error: --steps needs a comma list of: $all_steps" >&2; exit 2; }; steps=${2//,/ }; shift ;;
    --collect) [ $# -ge 2 ] || { echo "error: --collect needs a folder" >&2; exit 2; }; collect "$2"; exit 0 ;;
    --pack) [ $# -ge 2 ] || { echo "error: --pack needs a file name" >&2; exit 2; }; pack "$2"; exit 0 ;;
    --print-binary)
      b=$(newest generation)
      [ -n "$b" ] || { echo "error: no generation bench binary under $target/release/deps; build it first" >&2; exit 2; }
      echo "$b"; exit 0 ;;
    -h|--help) sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
  case $1 in
    calibrate|serve|verify|realgguf|peers|trace|realverify) echo "${bins[modelbench]:-}" ;;
    gguf|realquick|full) echo "${bins[generation]:-}" ;;
    *) echo "${bins[$1]:-}" ;;
  esac
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

# The CUDA build of llama.cpp (--llama-dir) is the reference `verify` computes with here.
[ -z "$llama_dir" ] || export LLAMA_CPP_DIR=$llama_dir
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
    realgguf)
      dest=$root/target-reports/reference/$date-$slug-realgguf
      mkdir -p "$work" "$dest" && cp "$reports/nvidia-smi.txt" "$dest/"
      for m in ${GPU_REF_REAL:-llama-3.2-1b qwen3-1.7b gemma-3-1b}; do
        # Q8_0 and Q4_K throughout (llama.cpp's Q4_K_S file type), quantized by candle on
        # every core; with llama.cpp's llama-quantize (--llama-dir), Q4_K_M (its mix) too.
        for ty in ${GPU_REF_SYNTH_TYPES:-q8_0 q4_k}; do
          f=$work/$m-$(echo "$ty" | tr a-z A-Z).gguf
          [ -s "$f" ] && continue
          (cd "$root" && timeout "$step_secs" "$b" synth-gguf --model "synthetic:$m" --type "$ty" --out "$f") 2>&1 \
            | tee -a "$dest/realgguf.log" || rc=1
        done
        if [ -x "$llama_dir/bin/llama-quantize" ] && [ ! -s "$work/$m-Q4_K_M.gguf" ]; then
          f16=$work/$m-F16.gguf
          rm -f "$f16"
          (cd "$root" && timeout "$step_secs" "$b" synth-gguf --model "synthetic:$m" --type f16 --out "$f16") 2>&1 \
            | tee -a "$dest/realgguf.log" || rc=1
          t0=$(date +%s)
          timeout "$step_secs" "$llama_dir/bin/llama-quantize" "$f16" "$work/$m-Q4_K_M.gguf.partial" Q4_K_M "$(nproc)" \
            >"$dest/quantize-$m-Q4_K_M.log" 2>&1 && mv "$work/$m-Q4_K_M.gguf.partial" "$work/$m-Q4_K_M.gguf" \
            || { rc=1; tail -3 "$dest/quantize-$m-Q4_K_M.log"; }
          echo "llama-quantize $m F16 -> Q4_K_M: $(( $(date +%s) - t0 )) s; $(grep -E 'model size|quant size' "$dest/quantize-$m-Q4_K_M.log" | tr '\n' ' ')" | tee -a "$dest/realgguf.log"
          rm -f "$f16"
        fi
      done
      ls -la "$work" | tee -a "$dest/realgguf.log"
      (cd "$work" && sha256sum ./*.gguf) | tee "$dest/sha256.txt" ;;
    peers)
      for q in ${GPU_REF_PEER_QUANTS:-Q4_K_M Q8_0}; do
        f=$work/llama-3.2-1b-$q.gguf
        [ -s "$f" ] || { echo "error: $f is missing (run the realgguf step first)"; rc=1; continue; }
        lab=gpu-peers-$(echo "$q" | tr 'A-Z_' 'a-z-')
        (cd "$root" && env MODELBENCH_REPORTS="$reports" CARGO_TARGET_DIR="$target" timeout "$step_secs" "$b" peers \
          --model "gguf:$f" --device cuda --suite quick --trials "${GPU_REF_PEER_TRIALS:-5}" --warmup 1 \
          --peers llama.cpp --llama-timed-ids "$llama_dir/bin/llama-timed-ids" --label "$lab") || rc=$?
        save "$lab" "${lab#gpu-}" || rc=1
      done ;;
    trace)
      q=${GPU_REF_TRACE_QUANT:-Q4_K_M}; [ -s "$work/llama-3.2-1b-$q.gguf" ] || q=Q4_K
      f=$work/llama-3.2-1b-$q.gguf
      dest=$root/target-reports/reference/$date-$slug-trace
      rm -rf "$dest" && mkdir -p "$dest" && cp "$reports/nvidia-smi.txt" "$dest/"
      [ -s "$f" ] || { echo "error: $f is missing (run the realgguf step first)"; rc=1; }
      [ -n "$trace_lib" ] && [ -f "$trace_lib" ] || { echo "error: --trace-lib (cuda-kernel-trace.so) is needed"; rc=2; }
      if [ $rc = 0 ]; then
        echo "$f ($q), llama.cpp $llama_dir" > "$dest/what.txt"
        ids=$dest/prompt-ids.txt
        python3 -c "print(' '.join(str(1000 + 7 * i) for i in range(64)))" > "$ids"
        prompt="The history of computing is a story of machines that learned to count, then to remember, then to speak."
        lens="32 160"
        for n in $lens; do
          for mode in traced untraced; do
            tr_env=(); [ $mode = traced ] && tr_env=(CUDA_INJECTION64_PATH="$trace_lib" CUDA_KERNEL_TRACE_OUT="$dest/candle-$n")
            (cd "$root" && env "${tr_env[@]}" timeout 120 "$b" generate --model "gguf:$f" --device cuda \
              --prompt "$prompt" --max-new-tokens "$n" --ids >"$dest/candle-$n-$mode.log" 2>&1) || { rc=1; tail -3 "$dest/candle-$n-$mode.log"; }
            for setting in defaults matched; do
              [ -x "$llama_dir/bin/llama-timed-ids" ] || continue
              tr_env=(); [ $mode = traced ] && tr_env=(CUDA_INJECTION64_PATH="$trace_lib" CUDA_KERNEL_TRACE_OUT="$dest/llama-$setting-$n")
              extra=(); [ $setting = matched ] && extra=(-ctk f32 -ctv f32 --fa off)
              env "${tr_env[@]}" timeout 120 "$llama_dir/bin/llama-timed-ids" -m "$f" --ids "$ids" -n "$n" -t "$(nproc)" \
                --warmup 0 -ngl 99 "${extra[@]}" >"$dest/llama-$setting-$n-$mode.json" 2>"$dest/llama-$setting-$n-$mode.err" \
                || { rc=1; tail -3 "$dest/llama-$setting-$n-$mode.err"; }
            done
          done
        done
        for x in "$dest"/*.[0-9]*.tsv; do [ -e "$x" ] && mv "$x" "${x%.*.tsv}.tsv"; done
        # decode seconds of one run, by the program's own clock
        cdec() { sed -n 's/.*decode [0-9.]* tok\/s ([0-9]* steps in \([0-9.]*\) s).*/\1/p' "$1" | tail -1; }
        ldec() { python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['token_times_s']; print('%.9f' % (t[-1] - t[0]))" "$1"; }
        summ() { # engine, trace prefix, decode-seconds function, log prefix, log suffix
          python3 "$root/scripts/cuda-trace-summary.py" --engine "$1" \
            --short "$dest/$2-32.tsv" --long "$dest/$2-160.tsv" --short-tokens 32 --long-tokens 160 \
            --short-wall-s "$($3 "$dest/$4-32-traced.$5")" --long-wall-s "$($3 "$dest/$4-160-traced.$5")" \
            --untraced-short-wall-s "$($3 "$dest/$4-32-untraced.$5")" --untraced-long-wall-s "$($3 "$dest/$4-160-untraced.$5")" \
            --out "$dest/$2-summary.json" | tee -a "$dest/summary.txt" || rc=1
        }
        summ "candle ($(basename "$f"))" candle cdec candle log
        if [ -x "$llama_dir/bin/llama-timed-ids" ]; then
          summ "llama.cpp defaults -ngl 99" llama-defaults ldec llama-defaults json
          summ "llama.cpp matched (f32 KV, no FA) -ngl 99" llama-matched ldec llama-matched json
        fi
        gzip -9 "$dest"/*.tsv 2>/dev/null || true
        # the per-op table on the GPU, with ggml's CUDA backend beside it when built
        peer=(); [ -x "$llama_dir/bin/test-backend-ops" ] && peer=(--peer llama.cpp --peer-program "$llama_dir/bin/test-backend-ops")
        (cd "$root" && env CARGO_TARGET_DIR="$target" timeout "${GPU_REF_OPS_SECS:-150}" "$b" ops --model "gguf:$f" --device cuda --quick \
          "${peer[@]}" --md "$dest/ops.md" --json "$dest/ops.json" >"$dest/ops.log" 2>&1) \
          || echo "ops on cuda: failed: $(tail -2 "$dest/ops.log")"
        echo "saved $dest"
      fi ;;
    realquick)
      ms=""
      for m in ${GPU_REF_REAL:-llama-3.2-1b qwen3-1.7b gemma-3-1b}; do
        for q in ${GPU_REF_QUICK_TYPES:-Q4_K_M Q4_K Q8_0}; do [ -s "$work/$m-$q.gguf" ] && ms="$ms${ms:+,}gguf:$work/$m-$q.gguf"; done
      done
      [ -n "$ms" ] || { echo "error: no real-shape GGUF in $work (run realgguf first)"; rc=1; }
      [ $rc != 0 ] || (cd "$root" && env "${env_common[@]}" MODELBENCH_TIER=quick MODELBENCH_MODELS="$ms" \
        timeout "$step_secs" "$b" --bench) || rc=$? ;;
    realverify)
      dest=$root/target-reports/reference/$date-$slug-realverify
      mkdir -p "$dest" && cp "$reports/nvidia-smi.txt" "$dest/"
      for m in ${GPU_REF_REAL:-llama-3.2-1b qwen3-1.7b gemma-3-1b}; do
        f=$work/$m-Q4_K_M.gguf
        [ -s "$f" ] || f=$work/$m-Q4_K.gguf
        [ -s "$f" ] || continue
        frc=0
        v=$dest/verify-$(basename "$f" .gguf).txt
        (cd "$root" && env CARGO_TARGET_DIR="$target" MODELBENCH_REPORTS="$reports" timeout "$step_secs" \
          "$b" verify --device cuda --model "gguf:$f" --llama-cpp "$llama_dir" --no-save) >"$v" 2>&1 || frc=$?
        echo "verify $(basename "$f") on cuda: exit $frc; $(grep -E '^verdict' "$v" || tail -1 "$v")"
      done
      cp "$target"/modelbench-quality/verdicts/*.json "$dest/" 2>/dev/null || true
      echo "saved $dest" ;;
    full)
      (cd "$root" && env "${env_common[@]}" MODELBENCH_DTYPE=bf16 MODELBENCH_TIER=full MODELBENCH_MODELS="$models" \
        timeout "$step_secs" "$b" --bench) || rc=$? ;;
  esac
  case $s in calibrate|verify|realgguf|peers|trace|realverify) ;; *) [ $rc != 0 ] || save "gpu-$s" "$s" || rc=1 ;; esac
  [ $rc = 0 ] || nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv 2>&1 | sed 's/^/  after failure: /'
  echo "== $s: exit $rc after $(( $(date +%s) - start )) s"
  [ $rc = 0 ] || failed="$failed $s"
done
[ -z "$failed" ] || { echo "error: steps failed:$failed" >&2; exit 1; }
echo "all steps done (commit them: git add target-reports/reference)"
