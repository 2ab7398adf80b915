#!/usr/bin/env bash
# Nightly parity gate: runs the nightly experiments, compares each run with the baseline of this
# machine's adapter (NIGHTLY_BASELINE_DIR/<adapter>/<experiment name>, the tables of the last
# accepted night on the same OS and adapter: lavapipe and Metal throughput are never compared),
# and exits non-zero when a gate fails (1), `runner compare` finds a regression beyond the noise
# margin (1), or a run errors (2). Run folders land in NIGHTLY_OUT (default runs/nightly).
# With NIGHTLY_ACCEPT=1 a night that passed becomes the new baseline (its tables and summary,
# no checkpoints, data or images); the workflow caches NIGHTLY_BASELINE_DIR between nights.
set -uo pipefail
cd "$(dirname "$0")/.."
EXPERIMENTS=${NIGHTLY_EXPERIMENTS:-"experiments/tiny-parity.toml experiments/tiny-parity-scratch.toml"}
OUT=${NIGHTLY_OUT:-runs/nightly}
BASELINE=${NIGHTLY_BASELINE_DIR:-ci/baseline}
NOISE=${NIGHTLY_NOISE:-0.10}
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo build -p runner || exit 2
runner="${CARGO_TARGET_DIR:-target}/debug/runner"

# The adapter this machine's `gpu` backend uses, as a folder name: "<os>-<adapter>-<api>",
# e.g. linux-llvmpipe-vulkan, macos-apple-m2-metal.
line=$("$runner" devices | grep '^\[0\]' | head -1)
adapter=$(printf '%s' "$line" | sed 's/^\[0\] //; s/ (.*//')
api=$(printf '%s' "$line" | grep -o '(\(vulkan\|metal\|dx12\|gl\|webgpu\),' | head -1 | tr -d '(,')
slug=$(printf '%s-%s-%s' "$(uname -s)" "${adapter:-no-adapter}" "$api" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-*$//')
echo "baseline folder: $BASELINE/$slug"

status=0
runs=()
for exp in $EXPERIMENTS; do
  echo "== $exp"
  "$runner" run "$exp" --out "$OUT"
  rc=$?
  [ $rc -gt $status ] && status=$rc
  name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$exp" | head -1)
  run_dir=$(ls -d "$OUT/$name"-* 2>/dev/null | sort | tail -1)
  [ -n "$run_dir" ] && runs+=("$name=$run_dir")
  if [ -n "$run_dir" ] && [ -d "$BASELINE/$slug/$name" ]; then
    "$runner" compare "$BASELINE/$slug/$name" "$run_dir" --noise "$NOISE" | tee "$run_dir/compare.md"
    rc=${PIPESTATUS[0]}
    [ $rc -gt $status ] && status=$rc
  else
    echo "no baseline at $BASELINE/$slug/$name: comparison skipped (a night that passes with NIGHTLY_ACCEPT=1 becomes it)"
  fi
done

if [ $status -eq 0 ] && [ "${NIGHTLY_ACCEPT:-0}" = 1 ]; then
  for entry in "${runs[@]}"; do
    name=${entry%%=*}; run_dir=${entry#*=}
    dest="$BASELINE/$slug/$name"
    rm -rf "$dest" && mkdir -p "$dest"
    cp -r "$run_dir/tables" "$run_dir/summary.json" "$run_dir/gate.json" "$run_dir/experiment.toml" "$dest/"
    echo "accepted $run_dir as the baseline $dest"
  done
fi
exit $status
