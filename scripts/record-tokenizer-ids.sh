#!/usr/bin/env bash
# Records llama.cpp's token ids for the texts of fixtures/tokenizer/texts.json with
# llama-tokenize (scripts/build-llama-cpp.sh), for the GGUF fixtures of llama, qwen3 and
# gemma3 and, when installed (scripts/fetch-offline-models.sh), the real Gemma 3 270M GGUF,
# into fixtures/tokenizer/llama-tokenize-ids.json with provenance (llama.cpp version and
# commit, command line, date). tests/gguf_tokenizer.rs checks modelbench's tokenizers built
# from the GGUF metadata against these ids.
#
# The fixture GGUFs must exist: run `cargo test --test gguf_tokenizer` once first (it writes
# them under target/modelbench-fixtures/gguf/).
#
# Usage: scripts/record-tokenizer-ids.sh [LLAMA_CPP_DIR]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-${LLAMA_CPP_DIR:-$repo/target/llama-cpp/0.3.36}}
tok=$dir/bin/llama-tokenize
[ -x "$tok" ] || { echo "error: no $tok; run scripts/build-llama-cpp.sh first" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$repo/target}
if [ -n "${HF_HUB_CACHE:-}" ]; then cache=$HF_HUB_CACHE
elif [ -n "${HF_HOME:-}" ]; then cache=$HF_HOME/hub
else cache=$HOME/.cache/huggingface/hub
fi
python3 - "$repo" "$target" "$dir" "$cache" <<'PY'
import glob, json, os, subprocess, sys, tempfile, datetime
repo, target, lldir, cache = sys.argv[1:5]
tok = os.path.join(lldir, "bin", "llama-tokenize")
texts = json.load(open(os.path.join(repo, "fixtures/tokenizer/texts.json")))["texts"]
files = {}
for fam in ["llama", "qwen3", "gemma3"]:
    found = sorted(glob.glob(os.path.join(target, "modelbench-fixtures/gguf", f"{fam}-*", f"fixture-{fam}-q8_0-v3.gguf")))
    if len(found) != 1:
        sys.exit(f"error: expected one fixture-{fam}-q8_0-v3.gguf under {target}/modelbench-fixtures/gguf, found {len(found)}; run cargo test --test gguf_tokenizer first")
    files[f"gguf:fixture:{fam}"] = found[0]
real = sorted(glob.glob(os.path.join(cache, "models--modelbench-offline--gemma-3-270m-Q4_K_M-GGUF/snapshots/*/gemma-3-270m-Q4_K_M.gguf")))
if real:
    files["gemma-3-270m-Q4_K_M.gguf"] = real[0]
else:
    print("note: the real Gemma 3 270M GGUF is not installed; its ids are not recorded", file=sys.stderr)
cmd = ["llama-tokenize", "-m", "FILE", "-f", "TEXT_FILE", "--ids", "--log-disable", "--no-escape"]
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, path in files.items():
        rows = []
        for i, t in enumerate(texts):
            tf = os.path.join(tmp, f"{i}.txt")
            with open(tf, "w", encoding="utf-8", newline="") as f:
                f.write(t)
            r = subprocess.run([tok, "-m", path, "-f", tf, "--ids", "--log-disable", "--no-escape"], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"error: llama-tokenize failed on {path}: {r.stderr.strip().splitlines()[-1:]}")
            line = [l for l in r.stdout.splitlines() if l.startswith("[")][-1]
            rows.append(json.loads(line))
        out[name] = rows
info = json.load(open(os.path.join(lldir, "build-info.json")))
doc = {
    "provenance": {
        "tool": "llama-tokenize (llama.cpp), vocabulary only; add_special = the file's add_bos_token, parse_special = true (the tool's defaults)",
        "llama_cpp_commit": info["llama_cpp_commit"],
        "llama_cpp_version": info["llama_cpp_version_output"],
        "llama_cpp_source": f"llama-cpp-python {info['llama_cpp_python_version']} sdist ({info['sdist_sha256']}), built by scripts/build-llama-cpp.sh",
        "command": " ".join(cmd) + "  (one run per text; TEXT_FILE holds the text verbatim, UTF-8, no trailing newline added)",
        "script": "scripts/record-tokenizer-ids.sh",
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": {k: os.path.basename(v) for k, v in files.items()},
        "fixture_note": "the gguf:fixture:* files are written by crates/models/src/models/families/fixture.rs (v3); changing their vocabulary makes these ids stale, and the test then fails until they are recorded again",
    },
    "texts": texts,
    "ids": out,
}
path = os.path.join(repo, "fixtures/tokenizer/llama-tokenize-ids.json")
with open(path, "w", encoding="utf-8") as f:
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    # one line per id list
    import re
    text = re.sub(r"\[\s*([0-9,\s]*?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
    f.write(text + "\n")
print(f"wrote {path}: {', '.join(f'{k} ({len(v)} texts)' for k, v in out.items())}")
PY
