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

# shellcheck source=scripts/pip-pinned.sh
. "$repo/scripts/pip-pinned.sh"
check() { PYTHONPATH=$1 python3 -c "import openai, sys; sys.exit(openai.__version__ != '$VERSION')" 2>/dev/null; }
pip_pinned_install openai "$VERSION" "$dest" "${PINS[@]}"
