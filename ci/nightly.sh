#!/usr/bin/env bash
# Nightly parity gate: runs the nightly experiments, compares each run with the stored baseline
# (NIGHTLY_BASELINE_DIR/<experiment name>, a run folder kept from an accepted night), and exits
# non-zero when a gate fails (1), a regression beyond the noise margin is found (1), or a run
# errors (2). Run folders land in NIGHTLY_OUT (default runs/nightly) for CI to upload.
set -uo pipefail
cd "$(dirname "$0")/.."
EXPERIMENTS=${NIGHTLY_EXPERIMENTS:-"experiments/tiny-parity.toml"}
OUT=${NIGHTLY_OUT:-runs/nightly}
BASELINE=${NIGHTLY_BASELINE_DIR:-ci/baseline}
NOISE=${NIGHTLY_NOISE:-0.10}
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo build -p runner || exit 2
status=0
for exp in $EXPERIMENTS; do
  echo "== $exp"
  ./target/debug/runner run "$exp" --out "$OUT"
  rc=$?
  [ $rc -gt $status ] && status=$rc
  name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$exp" | head -1)
  run_dir=$(ls -d "$OUT/$name"-* 2>/dev/null | sort | tail -1)
  if [ -n "$run_dir" ] && [ -d "$BASELINE/$name" ]; then
    ./target/debug/runner compare "$BASELINE/$name" "$run_dir" --noise "$NOISE" | tee "$run_dir/compare.md"
    rc=${PIPESTATUS[0]}
    [ $rc -gt $status ] && status=$rc
  else
    echo "no baseline at $BASELINE/$name: comparison skipped (copy an accepted run folder there)"
  fi
done
exit $status
