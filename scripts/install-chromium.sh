#!/usr/bin/env bash
# Installs Debian's `chromium` package: the headless browser tests/report_browser.rs opens
# target-reports/index.html in (issue 47). Idempotent: does nothing when `chromium` is already
# on PATH. Needs root (or sudo) and the Debian package mirror; nothing else is downloaded.
#
#   scripts/install-chromium.sh          # then: cargo test --test report_browser
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null || echo '(version unknown)')"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-chromium.sh: needs root (or sudo) to run apt-get; run it as root" >&2
        exit 2
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# fonts-dejavu-core: the report's stylesheet falls back to a sans-serif font; without any font
# installed, headless Chromium renders text as boxes in screenshots.
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
echo "installed: $(chromium --version)"
