# Sourced by scripts/install-openai-client.sh and scripts/install-guidellm.sh: installs a
# Python tool pinned with every dependency into a folder of its own.
#
#   pip_pinned_install NAME VERSION DEST PIN...
#
# The caller defines `check DIR` (succeeds when DIR holds a working NAME VERSION). Idempotent:
# with a complete install in DEST it installs nothing. It installs with --no-deps (exactly the
# pins, wheels only) into DEST.partial and moves that to DEST once `check` passes, so DEST is
# never half installed. Exit 2: no python3 or pip; exit 1: pip failed or the result does not
# work. Needs PyPI (or the mirror pip is configured for).
pip_pinned_install() {
  local name=$1 version=$2 dest=$3
  shift 3
  command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 2; }
  python3 -m pip --version >/dev/null 2>&1 || { echo "error: python3 -m pip is required" >&2; exit 2; }
  if [ -d "$dest" ] && check "$dest"; then
    echo "already installed: $name $version in $dest"
    return 0
  fi
  local work=$dest.partial
  rm -rf "$work"
  mkdir -p "$work"
  echo "installing $name $version ($# pinned packages) into $dest ..."
  if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps --only-binary :all: \
       --no-warn-script-location --target "$work" "$@" >"$work.log" 2>&1; then
    echo "error: pip install of $name $version failed: $(grep -v '^WARNING' "$work.log" | tail -1)" >&2
    exit 1
  fi
  check "$work" || { echo "error: $name $version installed into $work does not import (python3 $(python3 -V 2>&1))" >&2; exit 1; }
  rm -rf "$dest" "$work.log"
  mv "$work" "$dest"
  echo "installed $name $version -> $dest"
}
