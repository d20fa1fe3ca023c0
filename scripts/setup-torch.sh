#!/usr/bin/env bash
# Makes the Python environment for `modelbench peers`' PyTorch peer (issue 15): a venv with
# PyTorch, Hugging Face transformers and safetensors at PINNED versions, from PyPI only.
#
#   torch 2.15.0, transformers 5.23.0, safetensors 0.8.0 (their own dependencies are left to
#   pip's resolver; the versions it chose are written to DIR/pip-freeze.txt and DIR/setup-info.json)
#
# PyPI's Linux x86_64 torch wheel is the CUDA build: pip also installs the nvidia-* CUDA
# runtime wheels it depends on (several GB). PyPI has no CPU-only torch wheel for Linux
# x86_64 (the "+cpu" builds live on PyTorch's own index, which this project does not use), and
# `--no-deps` does not work around it (import torch then fails looking for libcudart/libcublas),
# so the download is accepted: on a machine without a GPU this torch runs on the CPU.
# On aarch64 PyPI's wheel is CPU-only and small.
#
# Usage: scripts/setup-torch.sh [DIR]
#   DIR defaults to target/peers/torch-venv in the repository (where `modelbench peers` looks;
#   elsewhere, pass `modelbench peers --torch-python DIR/bin/python`).
# Idempotent: with a complete venv in DIR it installs nothing. It is built in DIR.partial and
# moved to DIR when complete, so DIR is never half installed. Needs python3 (>= 3.10) with venv.
set -euo pipefail

TORCH=2.15.0
TRANSFORMERS=5.23.0
SAFETENSORS=0.8.0

if [ $# -gt 1 ]; then echo "usage: $0 [DIR]" >&2; exit 2; fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo/target/peers/torch-venv}
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac

if [ -s "$dest/setup-info.json" ] && [ -x "$dest/bin/python" ]; then
  echo "already set up: torch $TORCH, transformers $TRANSFORMERS in $dest"
  echo "python: $dest/bin/python"
  exit 0
fi
command -v python3 >/dev/null || { echo "error: python3 is required (apt-get install -y python3 python3-venv)" >&2; exit 2; }
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { echo "error: python3 >= 3.10 is required for torch $TORCH and transformers $TRANSFORMERS" >&2; exit 2; }

work=$dest.partial
rm -rf "$work"
mkdir -p "$(dirname "$work")"
started=$(date +%s)
python3 -m venv "$work" >/dev/null 2>&1 \
  || { echo "error: python3 -m venv failed (apt-get install -y python3-venv)" >&2; exit 2; }
# A venv's scripts carry absolute paths: install with the final path's python afterwards
# would be cleaner, but the venv is only ever run as DIR/bin/python, which works after mv.
echo "installing torch==$TORCH transformers==$TRANSFORMERS safetensors==$SAFETENSORS into $dest (log: $work/pip.log) ..."
"$work/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  "torch==$TORCH" "transformers==$TRANSFORMERS" "safetensors==$SAFETENSORS" >"$work/pip.log" 2>&1 \
  || { echo "error: pip install failed: $(tail -1 "$work/pip.log") (see $work/pip.log)" >&2; exit 1; }
"$work/bin/python" -m pip freeze --disable-pip-version-check >"$work/pip-freeze.txt"
finished=$(date +%s)
"$work/bin/python" - "$work/setup-info.json" $((finished - started)) <<'PY'
import json, platform, sys
import torch, transformers, safetensors
info = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "safetensors": safetensors.__version__,
    "python": platform.python_version(),
    "torch_cuda_build": torch.version.cuda,
    "cuda_available": torch.cuda.is_available(),
    "torch_config": torch.__config__.show().strip().splitlines(),
    "source": "PyPI (pip install torch==%s transformers==%s safetensors==%s)" % (torch.__version__, transformers.__version__, safetensors.__version__),
    "setup_seconds": int(sys.argv[2]),
}
json.dump(info, open(sys.argv[1], "w"), indent=2)
open(sys.argv[1], "a").write("\n")
PY
rm -rf "$dest"
mv "$work" "$dest"
echo "set up torch $TORCH, transformers $TRANSFORMERS in $((finished - started))s"
echo "python: $dest/bin/python"
