#!/usr/bin/env bash
# Times README's set-up commands on a fresh clone of this checkout's HEAD (issue 63): `cargo
# fetch`, `cargo bench --no-run`, `cargo bench`, `cargo test --no-run`, `cargo test`, each into
# the clone's own empty target dir, and the test count. As docs/testing.md measures them:
# llama.cpp and the real models hidden from the tests (they skip, as on a machine without
# them), nothing else running.
#
# Usage: scripts/time-readme-commands.sh [WORKDIR]   (default: a new temporary folder; kept)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
d=${1:-$(mktemp -d "${TMPDIR:-/tmp}/modelbench-fresh.XXXXXX")}
mkdir -p "$d"
git clone -q "$repo" "$d/c"
cd "$d/c"
echo "clone of $(git log --oneline -1) in $d/c"
export LLAMA_CPP_DIR=$d/no-llama-cpp HF_HOME=$d/empty-hf
unset CARGO_TARGET_DIR
step() {
    local name=$1 out=$2
    shift 2
    local t rc=0
    t=$(date +%s)
    "$@" >"$out" 2>&1 || rc=$?
    echo "$name: $(($(date +%s) - t)) s (exit $rc; output $out)"
    return $rc
}
step "cargo fetch" "$d/fetch.out" cargo fetch
step "cargo bench --no-run" "$d/bench-build.out" cargo bench --no-run
step "cargo bench" "$d/bench.out" cargo bench
step "cargo test --no-run" "$d/test-build.out" cargo test --no-run
step "cargo test" "$d/test.out" cargo test
grep -E "^test result" "$d/test.out" |
    awk '{p += $4; f += $6; i += $8} END {print "tests: " p " passed, " f " failed, " i " ignored"}'
echo "longest test binaries:"
awk '/Running/ {name = $2} /^test result/ {for (i = 1; i <= NF; i++) if ($i == "in") print "  " $(i + 1), name}' \
    "$d/test.out" | sort -rn | head -5
