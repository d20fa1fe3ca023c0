#!/usr/bin/env bash
# Installs the official OpenAI Python client (PyPI `openai`), pinned with every dependency, for
# tests/openai_client.rs: the client's own calls against `modelbench serve` (issue 62).
#
#   openai 3.57.0 and its dependencies at the versions pip resolved for it on 2026-11-27
#   (below), installed with --no-deps, so every run installs exactly these.
#
# Usage: scripts/install-openai-client.sh [DIR]
#   DIR defaults to target/openai-client/3.57.0 in the repository (where the test looks;
#   OPENAI_CLIENT_DIR overrides both). Run Python with PYTHONPATH=DIR.
# Idempotent: with a complete install in DIR it installs nothing. It installs into
# DIR.partial and moves it to DIR when `import openai` works, so DIR is never half installed.
# Needs python3 (>= 3.9) with pip, and PyPI (or the mirror pip is configured for).
set -euo pipefail

VERSION=3.57.0
PINS=(
  "openai==$VERSION"
  annotated-types==0.8.0
  anyio==4.16.0
  h11==0.16.0
  httpcore2==2.16.2
  httpx2==2.16.2
  idna==3.20
  jiter==0.19.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  sniffio==1.3.1
  truststore==0.10.5
  typing-extensions==4.16.0
  typing-inspection==0.4.5
)

if [ $# -gt 1 ]; then echo "usage: $0 [DIR]" >&2; exit 2; fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-${OPENAI_CLIENT_DIR:-$repo/target/openai-client/$VERSION}}
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac

command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 2; }
python3 -m pip --version >/dev/null 2>&1 || { echo "error: python3 -m pip is required" >&2; exit 2; }

check() { PYTHONPATH=$1 python3 -c "import openai, sys; sys.exit(openai.__version__ != '$VERSION')" 2>/dev/null; }

if [ -d "$dest" ] && check "$dest"; then
  echo "already installed: openai $VERSION in $dest"
  exit 0
fi
work=$dest.partial
rm -rf "$work"
mkdir -p "$work"
echo "installing openai $VERSION (${#PINS[@]} pinned packages) into $dest ..."
if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps --only-binary :all: \
     --no-warn-script-location --target "$work" "${PINS[@]}" >"$work.log" 2>&1; then
  echo "error: pip install of ${PINS[*]} failed: $(grep -v '^WARNING' "$work.log" | tail -1)" >&2
  exit 1
fi
check "$work" || { echo "error: openai $VERSION installed into $work does not import (python3 $(python3 -V 2>&1))" >&2; exit 1; }
rm -rf "$dest" "$work.log"
mv "$work" "$dest"
echo "installed openai $VERSION -> $dest"
