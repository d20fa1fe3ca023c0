#!/usr/bin/env bash
# The output verdict between two Candle builds (issue 59, docs/verdicts.md "Two Candles"):
# copies of the registry's candle-nn 0.11.1 under $WORK (default target/candle-copies):
#   a   unmodified (BASE of every comparison)
#   a2  an identical copy                                  -> `same`, exit 0
#   b   softmax_last_dim divides by 0.997 x the row's sum   -> OUTPUTS CHANGED, exit 1
#   c   softmax_last_dim busy-waits 28 us per call          -> a speed verdict and `same`
# then `compare COMMIT COMMIT --paired --base-candle a --new-candle X` TRIES times for each X,
# alternating, logs and a summary line per run under $WORK/logs. Two Candle builds per copy
# the first time (about 5 min each on 2 cores after the first, 15 min cold); run it on a
# machine with nothing else running (a busy-wait hides in CPU contention).
#
#   scripts/output-candle-copies.sh [COMMIT] [TRIES]
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT=${1:-$(git rev-parse --short HEAD)}
TRIES=${2:-3}
WORK=${WORK:-$PWD/target/candle-copies}
SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-nn-0.11.1 2>/dev/null | head -1)
[ -d "$SRC" ] || { echo "error: candle-nn 0.11.1 is not in the cargo registry (run cargo build first)" >&2; exit 2; }
mkdir -p "$WORK/logs"
for v in a a2 b c; do
  rm -rf "$WORK/$v"; mkdir -p "$WORK/$v"; cp -r "$SRC" "$WORK/$v/"
done
python3 - "$WORK" <<'EOF'
import sys
w = sys.argv[1]
def patch(v, old, new):
    p = f"{w}/{v}/candle-nn-0.11.1/src/ops.rs"
    s = open(p).read()
    assert s.count(old) == 1, (v, old)
    open(p, "w").write(s.replace(old, new))
patch("b", """                    unsafe { T::vec_reduce_sum(dst.as_ptr(), &mut sum_exp, dim_m1) };
                    for d in dst.iter_mut() {""", """                    unsafe { T::vec_reduce_sum(dst.as_ptr(), &mut sum_exp, dim_m1) };
                    // modelbench issue 59: 0.3% off, at the same speed (one multiply per row).
                    let sum_exp = sum_exp * T::from(0.997f64).unwrap();
                    for d in dst.iter_mut() {""")
patch("c", """pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    xs.apply_op1_no_bwd(&SoftmaxLastDim)""", """pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    // modelbench issue 59: a busy-wait only, the numbers unchanged.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_micros(28) {
        std::hint::spin_loop();
    }
    xs.apply_op1_no_bwd(&SoftmaxLastDim)""")
EOF
cargo build --release --bin modelbench
BIN=$PWD/target/release/modelbench
for t in $(seq 1 "$TRIES"); do
  for v in b a2 c; do
    log=$WORK/logs/$v-try$t.log
    s=$(date +%s)
    set +e
    "$BIN" compare "$COMMIT" "$COMMIT" --paired --paired-model gguf:fixture:llama --paired-suite short \
      --base-candle "$WORK/a/candle-nn-0.11.1" --new-candle "$WORK/$v/candle-nn-0.11.1" >"$log" 2>&1
    rc=$?
    set -e
    echo "$v try$t rc=$rc seconds=$(($(date +%s) - s)) $(grep -m1 '^outputs short' "$log" | cut -c1-80)" | tee -a "$WORK/logs/summary.txt"
  done
done
