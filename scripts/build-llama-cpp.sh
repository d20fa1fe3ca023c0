#!/usr/bin/env bash
# Builds llama.cpp's CPU tools, the independent reference for modelbench's quality gate
# (issue 14), from the llama.cpp source vendored in the llama-cpp-python sdist on PyPI:
#
#   llama-cpp-python 0.3.36 sdist (llama_cpp_python-0.3.36.tar.gz, sha256 832db069...),
#       vendor/llama.cpp = ggml-org/llama.cpp@0c1e57098bba43ac29e6e3b677cdceebdd22334f (the
#       sdist's CHANGELOG.md names it, and vendor/llama.cpp carries a depth-1 .git at it)
#   cmake 4.4.4 from PyPI (wheel, sha256-pinned), installed privately under the build folder
#
# Built: Release, CPU only, GGML_NATIVE=ON (-march=native: the binaries are for this CPU),
# static libraries, no HTTPS/network support, and these programs in <dir>/bin:
#   llama-perplexity   the perplexity tool
#   llama-tokenize     the tokenizer tool (--ids)
#   llama-simple       llama.cpp's minimal greedy example (text only; used as a cross-check)
#   llama-server       llama.cpp's OpenAI-compatible HTTP server (`modelbench load` target)
#   llama-bench        llama.cpp's own throughput benchmark (`modelbench peers`, issue 15)
#   llama-greedy-ids   a small program of ours (its source is below and is kept as
#                      <dir>/llama-greedy-ids.cpp) linked against the same libllama: plain
#                      argmax decoding with no sampler, no EOS stop, printing token ids and the
#                      top-1/top-2 logit margin of every step
#   llama-timed-ids    the peer program of `modelbench peers` (issue 30; source
#                      scripts/llama-timed-ids.cpp, kept as <dir>/llama-timed-ids.cpp): one
#                      timed greedy generation from given prompt token ids, with the KV-cache
#                      type and flash-attention setting asked for, printing every token's time,
#                      the load time and per-thread CPU time as JSON
#   llama-logits       the full-precision reference of the KLD gate (issue 61; source
#                      scripts/llama-logits.cpp, kept as <dir>/llama-logits.cpp): llama.cpp's
#                      full-vocabulary f32 logits at llama-perplexity's scored positions, and
#                      `--to-f32`, a GGUF rewritten with every tensor in F32 by ggml
#   llama-logits-exact-gelu  the same program linked against a second libggml-cpu.a compiled
#                      from the same source with one line removed: `#define GGML_GELU_FP16` in
#                      ggml/src/ggml-cpu/vec.h, so GELU (and GEGLU) are computed in f32 by
#                      ggml's own ggml_gelu_f32 instead of read from a table of f16 values; the
#                      full-precision reference of the KLD gate (issue 61: the table turns
#                      summation-order noise into whole f16 steps, 2.8e-7 mean KLD on the real
#                      Gemma 3 270M against 4.2e-12 exact); that library is kept as
#                      <dir>/lib/exact-gelu/libggml-cpu.a. CPU builds only
#   test-backend-ops   llama.cpp's tests/test-backend-ops.cpp (`modelbench ops --peer llama.cpp`,
#                      issue 31: its `perf` mode times one ggml op at a given shape), compiled
#                      against the same static ggml libraries, with one change: the CPU
#                      backend's thread count comes from $TEST_BACKEND_OPS_THREADS when set
#                      (upstream fixes it at half the hardware threads); the source as compiled
#                      is kept as <dir>/test-backend-ops.cpp
#   ggml-ids           prints ggml's op, unary-op and type ids of this build (`op 29 MUL_MAT`,
#                      `type 12 q4_K 256 144`), saved as <dir>/ggml-ids.txt: the numbers a
#                      test-backend-ops --test-file line is written in
# llama.cpp's vocabulary-only GGUFs and tokenizer test vectors (models/ggml-vocab-*) with its
# LICENSE in <dir>/vocab (tests/gguf_tokenizer.rs; a build without them gets only them),
# the static libraries and headers in <dir>/lib and <dir>/include (so a later tool of ours can
# be compiled against this build without building llama.cpp again), and <dir>/build-info.json (versions, sha256s, compiler, cmake flags, llama.cpp's own
# --version output, CPU).
#
# Usage: scripts/build-llama-cpp.sh [DIR]
#   DIR (or $LLAMA_CPP_DIR) defaults to target/llama-cpp/0.3.36 in the repository. modelbench
#   and the other scripts look in $LLAMA_CPP_DIR when set, else there (crates/measure/src/util/llama_cpp.rs).
#   `.ci/run` builds into a cache outside the checkout, one build per version and machine:
#   ${MODELBENCH_CACHE:-$HOME/.cache/modelbench}/llama-cpp/0.3.36-$(scripts/machine-id.sh), since
#   -march=native code from one CPU can die with an illegal instruction on another.
# Idempotent: with a complete build in DIR it builds nothing and prints where it is; an
# incomplete one (e.g. from before llama-bench was added) is rebuilt; a complete one without
# test-backend-ops (before issue 31) gets only that program compiled (the sdist is downloaded
# again for its one source file; about a minute). The build
# runs in DIR.partial and is moved to DIR only when complete, so DIR is never half built.
# Takes 10-25 minutes on 2 cores, depending on load (-j2; override with $LLAMA_CPP_JOBS).
set -euo pipefail

VERSION=0.3.36
SDIST=llama_cpp_python-$VERSION.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CPP_COMMIT=0c1e57098bba43ac29e6e3b677cdceebdd22334f
CMAKE_VERSION=4.4.4
CMAKE_WHEEL_SHA256_X86_64=f773a0544c66370408f451acd487c2c643b0dfebb48c5d64f3638bc1bb820238
CMAKE_WHEEL_SHA256_AARCH64=b3029f586853e01ddf2824c1ff124a1c5284f8ae897994758e9c4eeb45903b58
JOBS=${LLAMA_CPP_JOBS:-2}
TOOLS=(llama-perplexity llama-tokenize llama-simple llama-server llama-bench)

# --cuda CAP: llama.cpp's CUDA build (issue 60) of the same source, for a GPU of compute
# capability CAP (90 = H100/H200), into target/llama-cpp/<version>-cuda<CAP> by default. nvcc and
# the CUDA libraries come from scripts/install-cuda-toolchain.sh (PyPI wheels; run here with
# --compute-cap CAP first, or give CUDA_HOME); no GPU is needed to build. The libraries are
# shared (libllama.so, libggml*.so in <dir>/lib, found through the binaries' $ORIGIN/../lib
# rpath), so that the CUDA kernels are one file a GPU machine receives once; the host code is
# x86-64-v3 (AVX2/FMA/F16C, GGML_NATIVE off), as the project's CUDA binaries are, since the GPU
# machine's CPU is not this one. Its programs: llama-perplexity, llama-bench, llama-quantize
# (the GPU run writes Q4_K_M files at real shapes with it), llama-timed-ids, llama-greedy-ids,
# test-backend-ops, ggml-ids.
cuda_cap=""
if [ "${1:-}" = "--cuda" ]; then
  [ $# -ge 2 ] || { echo "error: --cuda needs a compute capability such as 90" >&2; exit 2; }
  cuda_cap=$2; shift 2
  [[ $cuda_cap =~ ^[0-9]{2,3}[af]?$ ]] || { echo "error: --cuda '$cuda_cap' is not a compute capability such as 80, 89 or 90" >&2; exit 2; }
fi
if [ $# -gt 1 ]; then echo "usage: $0 [--cuda CAP] [DIR]" >&2; exit 2; fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "$cuda_cap" ]; then
  dest=${1:-$repo/target/llama-cpp/$VERSION-cuda$cuda_cap}
  # What a GPU run uses: the peer and trace (llama-timed-ids, built below), verify's
  # reference (llama-perplexity, and llama-tokenize, which scripts/llama-cpp-kld-reference.sh
  # asks for the BOS id: its absence failed every `verify` of the first H200 run with this
  # build), llama-bench, and llama-quantize (Q4_K_M files at real shapes); llama-server and
  # llama-simple stay CPU-build tools (llama-server alone is minutes of compiling on 2 cores).
  TOOLS=(llama-perplexity llama-bench llama-quantize llama-tokenize)
  if [ -z "${CUDA_HOME:-}" ] && [ -x "$repo/.toolchains/cuda-13.0/cuda/bin/nvcc" ]; then
    eval "$("$repo/scripts/install-cuda-toolchain.sh" --env --compute-cap "$cuda_cap")"
  fi
  [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ] \
    || { echo "error: --cuda needs nvcc: run scripts/install-cuda-toolchain.sh --compute-cap $cuda_cap first, or set CUDA_HOME to a CUDA toolkit" >&2; exit 2; }
  export PATH=$CUDA_HOME/bin:$PATH
else
  dest=${1:-${LLAMA_CPP_DIR:-$repo/target/llama-cpp/$VERSION}}
fi
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac

timed_src=$repo/scripts/llama-timed-ids.cpp
logits_src=$repo/scripts/llama-logits.cpp
if [ -s "$dest/build-info.json" ] && [ -x "$dest/bin/llama-greedy-ids" ] && [ -x "$dest/bin/${TOOLS[3]}" ] && [ -x "$dest/bin/llama-bench" ] \
   && [ -x "$dest/bin/llama-timed-ids" ] && cmp -s "$timed_src" "$dest/llama-timed-ids.cpp" \
   && [ -x "$dest/bin/llama-logits" ] && cmp -s "$logits_src" "$dest/llama-logits.cpp" \
   && { [ -n "$cuda_cap" ] || [ -x "$dest/bin/llama-logits-exact-gelu" ]; } \
   && [ -x "$dest/bin/test-backend-ops" ] && [ -s "$dest/ggml-ids.txt" ] \
   && [ -s "$dest/vocab/LICENSE" ]; then
  echo "already built: llama.cpp $LLAMA_CPP_COMMIT (llama-cpp-python $VERSION) in $dest"
  echo "bin: $dest/bin"
  exit 0
fi
# The sdist into $1/dl, downloaded with pip and verified (step 1 of a full build; also what
# test-backend-ops.cpp is taken from when only that program is missing).
fetch_sdist() {
  local dl=$1/dl
  if [ ! -s "$dl/$SDIST" ] || [ "$(sha256sum "$dl/$SDIST" | cut -d' ' -f1)" != "$SDIST_SHA256" ]; then
    rm -rf "$dl" && mkdir -p "$dl"
    # --no-binary for this package only: its build dependencies come as wheels, so preparing
    # its metadata takes seconds (with :all: pip would compile cmake from source first).
    printf 'llama-cpp-python==%s --hash=sha256:%s\n' "$VERSION" "$SDIST_SHA256" > "$dl/req.txt"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python --require-hashes \
      -r "$dl/req.txt" -d "$dl" >"$dl/pip.log" 2>&1 \
      || { echo "error: pip download of llama-cpp-python==$VERSION failed: $(tail -1 "$dl/pip.log")" >&2; exit 1; }
  fi
  local got
  got=$(sha256sum "$dl/$SDIST" | cut -d' ' -f1)
  [ "$got" = "$SDIST_SHA256" ] || { echo "error: $SDIST has sha256 $got, expected $SDIST_SHA256" >&2; exit 1; }
}

# test-backend-ops and ggml-ids into $4 (a bin folder) from the test source $1, headers $2 and
# the static ggml libraries in $3; the source as compiled goes to $4/../test-backend-ops.cpp.
build_backend_ops() {
  local cpp=$1 inc=$2 lib=$3 bin=$4 tmp
  tmp=$(mktemp -d)
  # The one change: the CPU backend's threads from $TEST_BACKEND_OPS_THREADS (the suite's
  # thread count, passed by `modelbench ops --peer llama.cpp`); unset, upstream's N_THREADS/2.
  grep -q 'ggml_backend_set_n_threads_fn(backend.get(), std::max<int>(1, N_THREADS/2));' "$cpp" \
    || { echo "error: $cpp does not set the backend threads where this script expects" >&2; exit 1; }
  sed -e 's|ggml_backend_set_n_threads_fn(backend.get(), std::max<int>(1, N_THREADS/2));|ggml_backend_set_n_threads_fn(backend.get(), getenv("TEST_BACKEND_OPS_THREADS") ? std::max(1, atoi(getenv("TEST_BACKEND_OPS_THREADS"))) : std::max<int>(1, N_THREADS/2));|' \
    "$cpp" > "$tmp/test-backend-ops.cpp"
  cat > "$tmp/ggml-ids.c" <<'C'
// ggml-ids: ggml's op, unary-op and type ids of this build (modelbench, scripts/build-llama-cpp.sh).
#include "ggml.h"
#include <stdio.h>
int main(void) {
    for (int i = 0; i < GGML_OP_COUNT; i++) printf("op %d %s\n", i, ggml_op_name((enum ggml_op) i));
    for (int i = 0; i < GGML_UNARY_OP_COUNT; i++) printf("unary %d %s\n", i, ggml_unary_op_name((enum ggml_unary_op) i));
    for (int i = 0; i < GGML_TYPE_COUNT; i++) {
        const char * n = ggml_type_name((enum ggml_type) i);
        if (n && ggml_blck_size((enum ggml_type) i) > 0) {
            printf("type %d %s %lld %zu\n", i, n, (long long) ggml_blck_size((enum ggml_type) i), ggml_type_size((enum ggml_type) i));
        }
    }
    return 0;
}
C
  local libs=("$lib/libggml.a" "$lib/libggml-cpu.a" "$lib/libggml-base.a")
  # The CUDA build links the shared libraries of $lib (found at run time in ../lib).
  [ -z "$cuda_cap" ] || libs=(-L"$lib" -lggml -lggml-base "-Wl,-rpath,\$ORIGIN/../lib" -Wl,--allow-shlib-undefined)
  echo "compiling test-backend-ops (about a minute) ..."
  g++ -std=c++17 -O2 -I "$inc" "$tmp/test-backend-ops.cpp" -o "$tmp/test-backend-ops" \
    -Wl,--start-group "${libs[@]}" -Wl,--end-group -fopenmp -lpthread -ldl -lm >"$tmp/tbo.log" 2>&1 \
    || { echo "error: compiling test-backend-ops failed: $(tail -3 "$tmp/tbo.log")" >&2; exit 1; }
  gcc -O1 -I "$inc" "$tmp/ggml-ids.c" -o "$tmp/ggml-ids" \
    -Wl,--start-group "${libs[@]}" -Wl,--end-group -fopenmp -lpthread -ldl -lm -lstdc++ >"$tmp/ids.log" 2>&1 \
    || { echo "error: compiling ggml-ids failed: $(tail -3 "$tmp/ids.log")" >&2; exit 1; }
  # (A CUDA build runs here on the link stub of libcuda: no device, the CPU backend's ids.)
  LD_LIBRARY_PATH=$lib${cuda_cap:+:$CUDA_HOME/lib/stubs:$CUDA_HOME/lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    "$tmp/ggml-ids" > "$tmp/ggml-ids.txt"
  mv "$tmp/test-backend-ops" "$tmp/ggml-ids" "$bin/"
  mv "$tmp/test-backend-ops.cpp" "$tmp/ggml-ids.txt" "$bin/../"
  rm -rf "$tmp"
}

# cmake, pinned, private to a build: installed into $1 (if not there) and named by $cmake.
get_cmake() {
  local cmake_home=$1
  case $(uname -m) in
    x86_64) cmake_sha=$CMAKE_WHEEL_SHA256_X86_64 ;;
    aarch64) cmake_sha=$CMAKE_WHEEL_SHA256_AARCH64 ;;
    *) echo "error: no pinned cmake wheel for $(uname -m)" >&2; exit 2 ;;
  esac
  if [ ! -x "$cmake_home/bin/cmake" ]; then
    rm -rf "$cmake_home" "$cmake_home.tmp" && mkdir -p "$cmake_home.tmp"
    printf 'cmake==%s --hash=sha256:%s\n' "$CMAKE_VERSION" "$cmake_sha" > "$cmake_home.tmp/req.txt"
    python3 -m pip install --quiet --no-deps --only-binary :all: --require-hashes --no-warn-script-location \
      --target "$cmake_home.tmp/site" -r "$cmake_home.tmp/req.txt" >"$cmake_home.tmp/pip.log" 2>&1 \
      || { echo "error: pip install of cmake==$CMAKE_VERSION failed: $(tail -1 "$cmake_home.tmp/pip.log")" >&2; exit 1; }
    [ -x "$cmake_home.tmp/site/cmake/data/bin/cmake" ] || { echo "error: the cmake wheel has no cmake/data/bin/cmake" >&2; exit 1; }
    mv "$cmake_home.tmp/site/cmake/data" "$cmake_home"
    rm -rf "$cmake_home.tmp"
  fi
  cmake=$cmake_home/bin/cmake
  "$cmake" --version >/dev/null || { echo "error: $cmake does not run" >&2; exit 1; }
}

# ggml's f16 GELU table in the source $1 (vendor/llama.cpp) `on` (as shipped: vec.h defines
# GGML_GELU_FP16) or `off` (the line replaced by a comment), checked either way.
gelu_table() {
  local vec=$1/ggml/src/ggml-cpu/vec.h mark='/* modelbench: GGML_GELU_FP16 not defined (exact GELU; scripts/build-llama-cpp.sh) */'
  if [ "$2" = off ]; then
    sed -i "s|^#define GGML_GELU_FP16\$|$mark|" "$vec"
    grep -qxF "$mark" "$vec" && ! grep -qx '#define GGML_GELU_FP16' "$vec"
  else
    sed -i "s|^/\* modelbench: GGML_GELU_FP16 not defined .*\$|#define GGML_GELU_FP16|" "$vec"
    grep -qx '#define GGML_GELU_FP16' "$vec" && ! grep -qF "$mark" "$vec"
  fi || { echo "error: $vec does not define GGML_GELU_FP16 where this script expects" >&2; exit 1; }
}

# The exact-GELU CPU library and llama-logits-exact-gelu (see the top): $1 = vendor/llama.cpp of
# the sdist (its vec.h is patched in place; call after the main build), $2 = a folder for the
# second build, $3 = the main build's libllama.a, $4 = the folder holding its libggml.a and
# libggml-base.a, $5 = the folder for lib/exact-gelu/libggml-cpu.a and bin/llama-logits-exact-gelu.
build_exact_gelu() {
  local src=$1 b=$2 llama_a=$3 libs=$4 out=$5
  gelu_table "$src" off
  echo "building the exact-GELU libggml-cpu.a with -j$JOBS (log: $b.log) ..."
  "$cmake" -S "$src" -B "$b" "${cmake_flags[@]}" >"$b.log" 2>&1 \
    && "$cmake" --build "$b" --config Release -j"$JOBS" --target ggml-cpu >>"$b.log" 2>&1 \
    || { gelu_table "$src" on; echo "error: the exact-GELU ggml-cpu build failed; see the end of $b.log" >&2; exit 1; }
  gelu_table "$src" on
  mkdir -p "$out/lib/exact-gelu" "$out/bin"
  cp "$b/ggml/src/libggml-cpu.a" "$out/lib/exact-gelu/libggml-cpu.a"
  link_logits_exact_gelu "$src/include" "$src/ggml/include" "$llama_a" "$libs" "$out"
}
# llama-logits-exact-gelu into $5/bin from scripts/llama-logits.cpp, headers $1 and $2, the
# main build's libllama.a ($3), libggml.a and libggml-base.a (in $4) and
# $5/lib/exact-gelu/libggml-cpu.a.
link_logits_exact_gelu() {
  local l=$4 out=$5
  g++ -std=c++17 -O2 -I "$1" -I "$2" "$logits_src" -o "$out/bin/llama-logits-exact-gelu.tmp" \
    -Wl,--start-group "$3" "$l/libggml.a" "$out/lib/exact-gelu/libggml-cpu.a" "$l/libggml-base.a" -Wl,--end-group \
    -fopenmp -lpthread -ldl -lm || { echo "error: compiling llama-logits-exact-gelu failed" >&2; exit 1; }
  mv "$out/bin/llama-logits-exact-gelu.tmp" "$out/bin/llama-logits-exact-gelu"
}

# The cmake flags of a build (step 4 below; also the exact-GELU library's).
cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=ON
  -DGGML_CPU=ON
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BACKEND_DL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON
)
if [ -n "$cuda_cap" ]; then
  cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=ON
    "-DCMAKE_BUILD_RPATH=\$ORIGIN/../lib:\$ORIGIN"
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
    -DGGML_CPU=ON
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$cuda_cap" -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc"
    -DCUDAToolkit_ROOT="$CUDA_HOME"
    -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BACKEND_DL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON
  )
fi
# --- llama.cpp's tokenizer test vectors (issue 42) ------------------------------------------
# <dir>/vocab keeps llama.cpp's models/ggml-vocab-*.gguf (vocabulary-only GGUFs) and their
# .gguf.inp/.gguf.out test vectors (tests/test-tokenizer-0.cpp), with llama.cpp's LICENSE (MIT):
# tests/gguf_tokenizer.rs checks the project's tokenizers against them. A build without them
# (from before issue 42) gets them from the sdist (downloaded again; nothing is rebuilt).
keep_vocab() {  # $1 = vendor/llama.cpp of the sdist, $2 = the build folder
  local tmp=$2/vocab.partial
  rm -rf "$tmp" && mkdir -p "$tmp"
  cp "$1"/models/ggml-vocab-*.gguf* "$tmp/"
  cp "$1/LICENSE" "$tmp/LICENSE"
  printf 'models/ggml-vocab-*.gguf and .gguf.inp/.gguf.out of ggml-org/llama.cpp@%s\n(vendored in the llama-cpp-python %s sdist, sha256 %s), MIT licence in LICENSE.\n' \
    "$LLAMA_CPP_COMMIT" "$VERSION" "$SDIST_SHA256" > "$tmp/SOURCE.txt"
  ls "$tmp"/ggml-vocab-*.gguf >/dev/null 2>&1 || { echo "error: no models/ggml-vocab-*.gguf in $1" >&2; exit 1; }
  rm -rf "$2/vocab" && mv "$tmp" "$2/vocab"
}
if [ -s "$dest/build-info.json" ] && [ ! -s "$dest/vocab/LICENSE" ]; then
  vtmp=$dest.vocab-partial
  mkdir -p "$vtmp"
  fetch_sdist "$vtmp"
  tar -xzf "$vtmp/dl/$SDIST" -C "$vtmp" --wildcards \
    "llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-*" \
    "llama_cpp_python-$VERSION/vendor/llama.cpp/LICENSE" \
    || { echo "error: the sdist has no vendor/llama.cpp/models/ggml-vocab-* or LICENSE" >&2; exit 1; }
  keep_vocab "$vtmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$dest"
  rm -rf "$vtmp"
  echo "kept llama.cpp's vocabularies and test vectors in $dest/vocab"
  # Whatever else the build lacks is decided afresh, now that the vocabularies are there.
  exec bash "${BASH_SOURCE[0]}" "$dest"
fi
# --- end of the test-vector block -------------------------------------------------------------

if [ -s "$dest/build-info.json" ] && [ -s "$dest/lib/libllama.a" ] && [ -d "$dest/include" ]; then
  # A complete build whose llama-timed-ids or llama-logits is missing or older than its source
  # in scripts/: compile only those programs against the build's own static libraries.
  command -v g++ >/dev/null || { echo "error: g++ is required (apt-get install -y g++)" >&2; exit 2; }
  l=$dest/lib
  for prog in llama-timed-ids llama-logits; do
    psrc=$repo/scripts/$prog.cpp
    if [ -x "$dest/bin/$prog" ] && cmp -s "$psrc" "$dest/$prog.cpp"; then continue; fi
    g++ -std=c++17 -O2 -I "$dest/include" "$psrc" -o "$dest/bin/$prog.tmp" \
      -Wl,--start-group "$l/libllama.a" "$l/libggml.a" "$l/libggml-cpu.a" "$l/libggml-base.a" -Wl,--end-group -fopenmp -lpthread -ldl -lm \
      || { echo "error: compiling $prog failed" >&2; exit 1; }
    mv "$dest/bin/$prog.tmp" "$dest/bin/$prog"
    if [ "$prog" = llama-logits ] && [ -s "$dest/lib/exact-gelu/libggml-cpu.a" ]; then
      link_logits_exact_gelu "$dest/include" "$dest/include" "$l/libllama.a" "$l" "$dest"
    fi
    cp "$psrc" "$dest/$prog.cpp"
    echo "compiled $prog against the build in $dest"
  done
  if [ -z "$cuda_cap" ] && { [ ! -s "$dest/lib/exact-gelu/libggml-cpu.a" ] || [ ! -x "$dest/bin/llama-logits-exact-gelu" ]; }; then
    # A build from before the exact-GELU reference: the sdist's source and cmake again, and
    # only the ggml-cpu library compiled (a few minutes on 2 cores).
    need_eg=$dest.exact-gelu-partial
    mkdir -p "$need_eg"
    fetch_sdist "$need_eg"
    get_cmake "$need_eg/cmake"
    if [ ! -s "$need_eg/src/llama_cpp_python-$VERSION/vendor/llama.cpp/CMakeLists.txt" ]; then
      rm -rf "$need_eg/src" && mkdir -p "$need_eg/src"
      tar -xzf "$need_eg/dl/$SDIST" -C "$need_eg/src" "llama_cpp_python-$VERSION/vendor/llama.cpp" \
        || { echo "error: the sdist has no vendor/llama.cpp" >&2; exit 1; }
    fi
    export GIT_CEILING_DIRECTORIES=$need_eg/src
    build_exact_gelu "$need_eg/src/llama_cpp_python-$VERSION/vendor/llama.cpp" "$need_eg/build" "$l/libllama.a" "$l" "$dest"
    rm -rf "$need_eg"
    echo "compiled llama-logits-exact-gelu against the build in $dest"
  fi
  if [ ! -x "$dest/bin/test-backend-ops" ] || [ ! -s "$dest/ggml-ids.txt" ]; then
    # A build from before issue 31: only test-backend-ops.cpp is needed from the sdist.
    need_tbo=$dest.tbo-partial
    mkdir -p "$need_tbo"
    fetch_sdist "$need_tbo"
    tar -xzf "$need_tbo/dl/$SDIST" -C "$need_tbo" "llama_cpp_python-$VERSION/vendor/llama.cpp/tests/test-backend-ops.cpp" \
      || { echo "error: the sdist has no tests/test-backend-ops.cpp" >&2; exit 1; }
    build_backend_ops "$need_tbo/llama_cpp_python-$VERSION/vendor/llama.cpp/tests/test-backend-ops.cpp" \
      "$dest/include" "$dest/lib" "$dest/bin"
    rm -rf "$need_tbo"
    echo "compiled test-backend-ops against the build in $dest"
  fi
  echo "bin: $dest/bin"
  exit 0
fi
if [ -e "$dest" ]; then
  # An older build (before llama-server or llama-bench were added) or a damaged one: build
  # again in DIR.partial; DIR is replaced only when the new build is complete.
  echo "$dest is not a complete build (no build-info.json, bin/llama-greedy-ids, bin/llama-server or bin/llama-bench): rebuilding"
fi

need() { command -v "$1" >/dev/null || { echo "error: $1 is required ($2)" >&2; exit 2; }; }
need python3 "for pip and build-info.json"
need sha256sum "coreutils"
need g++ "apt-get install -y g++"
need gcc "apt-get install -y gcc"
need make "apt-get install -y make"
python3 -m pip --version >/dev/null 2>&1 || { echo "error: python3 -m pip is required" >&2; exit 2; }

work=$dest.partial
mkdir -p "$work"
started=$(date +%s)

# 1. The sdist, verified.
fetch_sdist "$work"

# 2. cmake, pinned, private to this build.
get_cmake "$work/cmake"

# 3. Source.
src=$work/src/llama_cpp_python-$VERSION/vendor/llama.cpp
if [ ! -s "$src/CMakeLists.txt" ]; then
  rm -rf "$work/src" && mkdir -p "$work/src"
  tar -xzf "$work/dl/$SDIST" -C "$work/src"
fi
# (A partial build stopped inside the exact-GELU step may have left vec.h without the table.)
gelu_table "$src" on
grep -q "^- feat: update llama.cpp to ggml-org/llama.cpp@${LLAMA_CPP_COMMIT:0:9}" \
  "$work/src/llama_cpp_python-$VERSION/CHANGELOG.md" \
  || { echo "error: the sdist's CHANGELOG.md does not name llama.cpp@${LLAMA_CPP_COMMIT:0:9}" >&2; exit 1; }
# vendor/llama.cpp has its own shallow .git; never let git look above it (into this
# repository) when llama.cpp's cmake stamps a commit into its build info.
export GIT_CEILING_DIRECTORIES=$work/src
commit_date=unknown commit_subject=unknown
if command -v git >/dev/null && [ -e "$src/.git" ]; then
  head=$(git -C "$src" rev-parse HEAD 2>/dev/null || true)
  [ "$head" = "$LLAMA_CPP_COMMIT" ] || { echo "error: vendor/llama.cpp is at '$head', expected $LLAMA_CPP_COMMIT" >&2; exit 1; }
  commit_date=$(git -C "$src" log -1 --format=%cI)
  commit_subject=$(git -C "$src" log -1 --format=%s)
fi

# 4. Configure and build (cmake_flags: above).
# (LLAMA_CURL no longer exists in this llama.cpp: its downloader is built on cpp-httplib and
# LLAMA_OPENSSL=OFF leaves it without HTTPS; the tools are only ever given local files.)
build=$work/build
"$cmake" -S "$src" -B "$build" "${cmake_flags[@]}" >"$work/configure.log" 2>&1 \
  || { echo "error: cmake configure failed; see $work/configure.log" >&2; exit 1; }
echo "building ${TOOLS[*]} with -j$JOBS (log: $work/build.log) ..."
"$cmake" --build "$build" --config Release -j"$JOBS" --target "${TOOLS[@]}" >"$work/build.log" 2>&1 \
  || { echo "error: the build failed; see the end of $work/build.log" >&2; exit 1; }

# 5. llama-greedy-ids, against the same static libraries.
cat > "$work/llama-greedy-ids.cpp" <<'CPP'
// llama-greedy-ids: exact greedy decoding with llama.cpp, printing token ids.
// Part of modelbench (scripts/build-llama-cpp.sh). No sampler: every step takes the argmax of
// the last position's logits (the lowest id on a tie), feeds it back, and never stops on EOS.
// The prompt is tokenized with llama_tokenize(add_special=true, parse_special=false), so the
// model's BOS is prepended when its vocab asks for one (Gemma: <bos> = 2).
//
// usage: llama-greedy-ids -m MODEL [-t THREADS] [-n N_PREDICT] [--kv-f32] [--fa on|off|auto] -p PROMPT
//        llama-greedy-ids --system-info
// Output: tab-separated lines (ids space-separated, bytes hex-encoded):
//   prompt_ids, generated_ids, eog (0/1 per generated token), top1_logit, margin (top1 - top2
//   logit), piece_hex (each generated token's piece, special tokens rendered), settings.
#include "llama.h"
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static std::string hex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) { out += d[c >> 4]; out += d[c & 15]; }
    return out;
}

static void quiet_log(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    std::string model_path, prompt;
    bool have_prompt = false, kv_f32 = false;
    int n_threads = 2, n_predict = 32;
    llama_flash_attn_type fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n", a.c_str()); exit(2); }
            return argv[++i];
        };
        if (a == "-m") model_path = next();
        else if (a == "-p") { prompt = next(); have_prompt = true; }
        else if (a == "-t") n_threads = atoi(next().c_str());
        else if (a == "-n") n_predict = atoi(next().c_str());
        else if (a == "--kv-f32") kv_f32 = true;
        else if (a == "--fa") {
            std::string v = next();
            if (v == "on") fa = LLAMA_FLASH_ATTN_TYPE_ENABLED;
            else if (v == "off") fa = LLAMA_FLASH_ATTN_TYPE_DISABLED;
            else if (v == "auto") fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
            else { fprintf(stderr, "error: --fa on|off|auto\n"); return 2; }
        }
        else if (a == "--system-info") { printf("%s\n", llama_print_system_info()); return 0; }
        else { fprintf(stderr, "error: unknown argument %s\n", a.c_str()); return 2; }
    }
    if (model_path.empty() || !have_prompt || n_threads < 1 || n_predict < 1) {
        fprintf(stderr, "usage: %s -m MODEL [-t THREADS] [-n N_PREDICT] [--kv-f32] [--fa on|off|auto] -p PROMPT\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "error: unable to load %s\n", model_path.c_str()); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    const int n_prompt = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), nullptr, 0, true, false);
    std::vector<llama_token> toks(n_prompt);
    if (n_prompt <= 0 || llama_tokenize(vocab, prompt.c_str(), prompt.size(), toks.data(), toks.size(), true, false) != n_prompt) {
        fprintf(stderr, "error: failed to tokenize the prompt\n"); return 1;
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_predict;
    cp.n_batch = n_prompt;
    cp.n_ubatch = n_prompt;
    cp.n_seq_max = 1;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.flash_attn_type = fa;
    if (kv_f32) { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "error: failed to create the context\n"); return 1; }

    llama_batch_ext * batch = llama_batch_ext_init(ctx);
    auto set_tokens = [&](const llama_token * t, int n, llama_pos pos0) {
        llama_batch_ext_clear(batch);
        for (int i = 0; i < n; i++) {
            const int32_t idx = llama_batch_ext_add_token(batch, 0, t[i]);
            const llama_pos pos = pos0 + i;
            llama_batch_ext_set_pos(batch, idx, &pos);
        }
        llama_batch_ext_set_output_logits(batch, n - 1, true);
    };

    std::vector<llama_token> gen;
    std::vector<int> eog;
    std::vector<float> top1, margin;
    std::vector<std::string> pieces;
    set_tokens(toks.data(), n_prompt, 0);
    llama_pos n_past = 0;
    int n_in_batch = n_prompt;
    for (int step = 0; step < n_predict; step++) {
        if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) { fprintf(stderr, "error: decode failed\n"); return 1; }
        n_past += n_in_batch;
        const float * lg = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; v++) if (lg[v] > lg[best]) best = v;
        float second = -INFINITY;
        for (int v = 0; v < n_vocab; v++) if (v != best && lg[v] > second) second = lg[v];
        gen.push_back(best);
        eog.push_back(llama_vocab_is_eog(vocab, best) ? 1 : 0);
        top1.push_back(lg[best]);
        margin.push_back(lg[best] - second);
        char buf[256];
        int n = llama_token_to_piece(vocab, best, buf, sizeof(buf), 0, true);
        pieces.push_back(n >= 0 ? std::string(buf, n) : std::string());
        llama_token t = best;
        set_tokens(&t, 1, n_past);
        n_in_batch = 1;
    }

    auto ids = [](const std::vector<llama_token> & v) {
        std::string s; for (size_t i = 0; i < v.size(); i++) { if (i) s += ' '; s += std::to_string(v[i]); } return s;
    };
    printf("prompt_ids\t%s\n", ids(toks).c_str());
    printf("generated_ids\t%s\n", ids(gen).c_str());
    printf("eog\t"); for (size_t i = 0; i < eog.size(); i++) printf(i ? " %d" : "%d", eog[i]); printf("\n");
    printf("top1_logit\t"); for (size_t i = 0; i < top1.size(); i++) printf(i ? " %.6f" : "%.6f", top1[i]); printf("\n");
    printf("margin\t"); for (size_t i = 0; i < margin.size(); i++) printf(i ? " %.6f" : "%.6f", margin[i]); printf("\n");
    printf("piece_hex\t"); for (size_t i = 0; i < pieces.size(); i++) printf(i ? " %s" : "%s", hex(pieces[i]).c_str()); printf("\n");
    printf("settings\tn_threads=%d n_ctx=%u n_batch=%u type_k=%s type_v=%s flash_attn=%s add_bos=%d bos=%d\n",
           n_threads, llama_n_ctx(ctx), llama_n_batch(ctx), kv_f32 ? "f32" : "f16", kv_f32 ? "f32" : "f16",
           llama_flash_attn_type_name(fa), llama_vocab_get_add_bos(vocab) ? 1 : 0, llama_vocab_bos(vocab));

    llama_batch_ext_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
CPP
libs=("$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" "$build/ggml/src/libggml-base.a")
libdir=$build/ggml/src
if [ -n "$cuda_cap" ]; then
  # Shared: libllama.so and libggml*.so (with libggml-cuda.so) beside the tools in build/bin.
  libdir=$build/bin
  for l in libllama.so libggml.so libggml-base.so libggml-cpu.so libggml-cuda.so; do
    [ -e "$libdir/$l" ] || { echo "error: the CUDA build has no $libdir/$l" >&2; exit 1; }
  done
  # (libggml-cuda.so's driver symbols are the GPU machine's libcuda.so.1: left to run time.)
  libs=(-L"$libdir" -lllama -lggml -lggml-base "-Wl,-rpath,\$ORIGIN/../lib" -Wl,--allow-shlib-undefined)
else
  for l in "${libs[@]}"; do [ -s "$l" ] || { echo "error: the build has no $l" >&2; exit 1; }; done
fi
g++ -std=c++17 -O2 -I "$src/include" -I "$src/ggml/include" "$work/llama-greedy-ids.cpp" \
  -o "$work/llama-greedy-ids" -Wl,--start-group "${libs[@]}" -Wl,--end-group -fopenmp -lpthread -ldl -lm \
  >"$work/greedy.log" 2>&1 || { echo "error: compiling llama-greedy-ids failed; see $work/greedy.log" >&2; exit 1; }
g++ -std=c++17 -O2 -I "$src/include" -I "$src/ggml/include" "$timed_src" \
  -o "$work/llama-timed-ids" -Wl,--start-group "${libs[@]}" -Wl,--end-group -fopenmp -lpthread -ldl -lm \
  >"$work/timed.log" 2>&1 || { echo "error: compiling llama-timed-ids failed; see $work/timed.log" >&2; exit 1; }
g++ -std=c++17 -O2 -I "$src/include" -I "$src/ggml/include" "$logits_src" \
  -o "$work/llama-logits" -Wl,--start-group "${libs[@]}" -Wl,--end-group -fopenmp -lpthread -ldl -lm \
  >"$work/logits.log" 2>&1 || { echo "error: compiling llama-logits failed; see $work/logits.log" >&2; exit 1; }
if [ -z "$cuda_cap" ]; then
  # (vec.h patched in place for this step only, then restored.)
  mkdir -p "$work/eg"
  build_exact_gelu "$src" "$work/build-exact-gelu" "$build/src/libllama.a" "$libdir" "$work/eg"
fi
mkdir -p "$work/tbo/bin"
build_backend_ops "$src/tests/test-backend-ops.cpp" "$src/ggml/include" "$libdir" "$work/tbo/bin"

# 6. Assemble DIR: binaries, the greedy program's source, build-info.json.
out=$work/out
rm -rf "$out" && mkdir -p "$out/bin"
for t in "${TOOLS[@]}"; do cp "$build/bin/$t" "$out/bin/"; done
cp "$work/llama-greedy-ids" "$out/bin/"
cp "$work/llama-greedy-ids.cpp" "$out/"
cp "$work/llama-timed-ids" "$out/bin/"
cp "$timed_src" "$out/llama-timed-ids.cpp"
cp "$work/llama-logits" "$out/bin/"
if [ -z "$cuda_cap" ]; then
  cp "$work/eg/bin/llama-logits-exact-gelu" "$out/bin/"
  mkdir -p "$out/lib/exact-gelu"
  cp "$work/eg/lib/exact-gelu/libggml-cpu.a" "$out/lib/exact-gelu/"
fi
cp "$logits_src" "$out/llama-logits.cpp"
cp "$work/tbo/bin/test-backend-ops" "$work/tbo/bin/ggml-ids" "$out/bin/"
cp "$work/tbo/test-backend-ops.cpp" "$work/tbo/ggml-ids.txt" "$out/"
mkdir -p "$out/lib" "$out/include"
if [ -n "$cuda_cap" ]; then
  cp -a "$libdir"/lib*.so* "$out/lib/"
else
  cp "${libs[@]}" "$out/lib/"
fi
cp "$src"/include/*.h "$src"/ggml/include/*.h "$out/include/"
cp "$src/LICENSE" "$out/LICENSE-llama.cpp"
keep_vocab "$src" "$out"
# (A CUDA build runs here on the link stub of libcuda: no device, the CPU backend's facts.)
LD_LIBRARY_PATH=${cuda_cap:+$CUDA_HOME/lib/stubs:$CUDA_HOME/lib:}${LD_LIBRARY_PATH:-} \
  "$out/bin/llama-perplexity" --version >"$work/version.txt" 2>&1 || true
LD_LIBRARY_PATH=${cuda_cap:+$CUDA_HOME/lib/stubs:$CUDA_HOME/lib:}${LD_LIBRARY_PATH:-} \
  "$out/bin/llama-greedy-ids" --system-info >"$work/system-info.txt" 2>/dev/null || true
finished=$(date +%s)
backend=cpu; [ -z "$cuda_cap" ] || backend=cuda
python3 - "$out/build-info.json" "$work" "$commit_subject" <<PY
import json, platform, subprocess, sys
out, work = sys.argv[1], sys.argv[2]
def run(*a):
    return subprocess.run(a, capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
info = {
    "llama_cpp_python_version": "$VERSION",
    "sdist": "$SDIST",
    "sdist_sha256": "$SDIST_SHA256",
    "sdist_source": "PyPI: pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==$VERSION",
    "llama_cpp_commit": "$LLAMA_CPP_COMMIT",
    "llama_cpp_commit_date": "$commit_date",
    "llama_cpp_commit_subject": sys.argv[3],
    "llama_cpp_commit_source": "the sdist's CHANGELOG.md ('update llama.cpp to ggml-org/llama.cpp@${LLAMA_CPP_COMMIT:0:9}') and the HEAD of the depth-1 .git in vendor/llama.cpp; being a depth-1 clone, llama.cpp's own build number reads 1, not upstream's b-number",
    "llama_cpp_version_output": open(work + "/version.txt").read().strip().splitlines(),
    "cmake_version": "$CMAKE_VERSION",
    "cmake_wheel_sha256": "$cmake_sha",
    "cmake_flags": """${cmake_flags[*]}""".split(),
    "build_command": "cmake --build build --config Release -j$JOBS --target ${TOOLS[*]}",
    "greedy_tool": "bin/llama-greedy-ids, source llama-greedy-ids.cpp, compiled with: g++ -std=c++17 -O2 against the static libllama.a, libggml*.a of this build",
    "compiler": run("g++", "--version").splitlines()[0],
    "system_info": open(work + "/system-info.txt").read().strip(),
    "cpu": cpu,
    "machine": platform.machine(),
    "binaries": sorted("""${TOOLS[*]}""".split() + ["llama-greedy-ids", "llama-timed-ids", "llama-logits", "test-backend-ops", "ggml-ids"] + ([] if "$cuda_cap" else ["llama-logits-exact-gelu"])),
    "exact_gelu_tool": None if "$cuda_cap" else "bin/llama-logits-exact-gelu: llama-logits.cpp against lib/exact-gelu/libggml-cpu.a, compiled from the same source and flags without '#define GGML_GELU_FP16' (ggml-cpu/vec.h): GELU in f32, no f16 table",
    "timed_tool": "bin/llama-timed-ids, source llama-timed-ids.cpp (scripts/llama-timed-ids.cpp), compiled like llama-greedy-ids",
    "backend": "$backend",
    "cuda_architectures": "${cuda_cap}" or None,
    "cuda_toolkit": run("${CUDA_HOME:-/nonexistent}/bin/nvcc", "--version").strip().splitlines()[-1:] if "${cuda_cap}" else None,
    "build_seconds": $finished - $started,
    "built_at": run("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
}
json.dump(info, open(out, "w"), indent=2)
open(out, "a").write("\n")
PY
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$out" "$dest"
rm -rf "$work"
echo "built llama.cpp $LLAMA_CPP_COMMIT (llama-cpp-python $VERSION) in $(( finished - started ))s"
echo "bin: $dest/bin"
