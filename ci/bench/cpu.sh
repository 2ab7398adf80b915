#!/usr/bin/env bash
# The CPU backend against PyTorch's CPU build on the same cores, in one run (issue 13):
# `runner bench --backend cpu` and ci/bench/torch_peer.py --device cpu, each pinned with taskset
# to CORES (default 0,1) with as many threads, on yolov4-tiny at each of SIZES (default
# "224 416"), batch BATCH (16). Needs a release runner (RUNNER, default target/release/runner)
# and a python with torch (PYTHON, default python3). Prints each result line, the ratios and both
# processes' peak RSS.
set -eu
CORES=${CORES:-0,1}
THREADS=$(( $(tr ',' '\n' <<< "$CORES" | wc -l) ))
SIZES=${SIZES:-224 416}
BATCH=${BATCH:-16}
ITERS=${ITERS:-5}
RUNNER=${RUNNER:-target/release/runner}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
for size in $SIZES; do
  echo "== yolov4-tiny ${size}x${size} batch $BATCH on cores $CORES"
  RUNNER_CPU_THREADS=$THREADS taskset -c "$CORES" "$RUNNER" bench yolov4-tiny --size "$size" --batch "$BATCH" \
    --backend cpu --iterations "$ITERS" --warmup 1 --out "$OUT/cpu-$size" | tee "$OUT/cpu-$size.txt"
  taskset -c "$CORES" "$PYTHON" ci/bench/torch_peer.py engine/cfg/yolov4-tiny.cfg --width "$size" --height "$size" \
    --batch "$BATCH" --iters "$ITERS" --warmup 2 --device cpu --threads "$THREADS" | tee "$OUT/torch-$size.json"
  "$PYTHON" - "$OUT/cpu-$size/bench.json" "$OUT/torch-$size.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
torch = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print(f"ratio cpu backend / pytorch: {ours['images_per_s']:.2f} / {torch['images_per_s']:.2f} images/s = {ours['images_per_s'] / torch['images_per_s']:.2f}x")
mib = lambda b: f"{b / 2**20:.0f} MiB" if b else "not reported"
print(f"peak RSS: cpu backend {mib(ours.get('peak_rss_bytes'))}, pytorch {mib(torch.get('peak_rss_bytes'))}")
PY
done
