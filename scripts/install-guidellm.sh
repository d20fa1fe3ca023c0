#!/usr/bin/env bash
# Installs GuideLLM (PyPI `guidellm`, the vLLM project's load generator), pinned with every
# dependency, for scripts/guidellm-side-by-side.sh: GuideLLM's figures beside `modelbench load`'s
# for the same server (issue 62 item 6). Not in CI: a measurement for docs/serving.md.
#
#   guidellm 0.3.1 and its dependencies as they stood on PyPI the day after its release
#   (`uv pip install --exclude-newer 2025-10-11 guidellm==0.3.1`, 2026-11-29), installed with
#   --no-deps, so every run installs exactly these. 0.3.1 is the last release without a hard
#   dependency on PyTorch (0.8.1 requires `torch`; PyTorch stays out of this project's default
#   set-up). Today's newest dependencies do not work with it: with datasets 5.0.1, pyarrow 26
#   and dill 0.4.1 (what pip resolves now) its synthetic data fails to pickle
#   (`Can't pickle <class 'MonthDayNano'>`).
#
# Usage: scripts/install-guidellm.sh [DIR]
#   DIR defaults to target/guidellm/0.3.1 in the repository (GUIDELLM_DIR overrides both). Run
#   it with PYTHONPATH=DIR python3 -m guidellm.
# Idempotent; installs into DIR.partial and moves it to DIR once `import guidellm` works.
# Needs python3 (>= 3.9) with pip, and PyPI (or the mirror pip is configured for).
set -euo pipefail

VERSION=0.3.1
PINS=(
  "guidellm==$VERSION"
  aiohappyeyeballs==2.6.1
  aiohttp==3.13.0
  aiosignal==1.4.0
  annotated-types==0.7.0
  anyio==4.11.0
  attrs==25.4.0
  certifi==2025.10.5
  charset-normalizer==3.4.3
  click==8.1.8
  datasets==4.2.0
  dill==0.4.0
  filelock==3.20.0
  frozenlist==1.8.0
  fsspec==2025.9.0
  ftfy==6.3.1
  h11==0.16.0
  h2==4.3.0
  hf-xet==1.1.10
  hpack==4.1.0
  httpcore==1.0.9
  httpx==0.28.1
  huggingface-hub==0.35.3
  hyperframe==6.1.0
  idna==3.10
  loguru==0.7.3
  markdown-it-py==4.0.0
  mdurl==0.1.2
  multidict==6.7.0
  multiprocess==0.70.16
  numpy==2.3.3
  packaging==25.0
  pandas==2.3.3
  pillow==11.3.0
  propcache==0.4.1
  protobuf==6.32.1
  pyarrow==21.0.0
  pydantic==2.12.0
  pydantic-core==2.41.1
  pydantic-settings==2.11.0
  pygments==2.19.2
  python-dateutil==2.9.0.post0
  python-dotenv==1.1.1
  pytz==2025.2
  pyyaml==6.0.3
  regex==2025.9.18
  requests==2.32.5
  rich==14.2.0
  safetensors==0.6.2
  six==1.17.0
  sniffio==1.3.1
  tokenizers==0.22.1
  tqdm==4.67.1
  transformers==4.56.2
  typing-extensions==4.15.0
  typing-inspection==0.4.2
  tzdata==2025.2
  urllib3==2.5.0
  wcwidth==0.2.14
  xxhash==3.6.0
  yarl==1.22.0
)

if [ $# -gt 1 ]; then echo "usage: $0 [DIR]" >&2; exit 2; fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-${GUIDELLM_DIR:-$repo/target/guidellm/$VERSION}}
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac

# shellcheck source=scripts/pip-pinned.sh
. "$repo/scripts/pip-pinned.sh"
check() { PYTHONPATH=$1 python3 -c "import importlib.metadata as m, sys; import guidellm; sys.exit(m.version('guidellm') != '$VERSION')" 2>/dev/null; }
pip_pinned_install guidellm "$VERSION" "$dest" "${PINS[@]}"
