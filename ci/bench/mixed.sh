#!/usr/bin/env bash
# One device call for mixed precision's GEMM paths (issue 15), on the H200 machine (the `device`
# tool of this workplace; see README "runner bench"). Expects in .devbin/ xz-compressed x86_64
# release binaries: runner, optionally runner-before (the build to compare with) and the test
# binaries t-gpu_parity, t-mixed_precision, t-loss_scaling; and the Vulkan loader debs in .gl/.
# Steps, the checks first (a path that fails them must not be timed as if it worked):
#   1. the conv_mixed parity tests (they run the direct write-out and the column path on and off
#      themselves), then mixed_precision and loss_scaling with each path turned on;
#   2. runner bench, yolov4-tiny SIZE×SIZE batch BATCH, mixed precision: the default, the
#      column path (ENGINE_GPU_COOP_COL=1), the direct write-out (ENGINE_GPU_COOP_DIRECT=1),
#      both, one stage everywhere (ENGINE_GPU_COOP_TILING=k16), runner-before; then the default
#      and the column path again (a second pair, to see the drift), and fp32;
#   3. the PyTorch peer at the same size and batch: fp32 (TF32 off), TF32, bf16 and fp16 autocast.
# Writes log.txt and kernels.tgz (each bench's kernels table) to $OUT.
set -u
. ci/bench/device_prelude.sh
mkdir -p /tmp/kernels
SIZE=${SIZE:-416}
BATCH=${BATCH:-64}
ITERS=${ITERS:-8}
bench() { # name, binary, extra args (environment set by the caller)
  local name=$1 bin=$2; shift 2
  [ -x "$BIN/$bin" ] || return 0
  echo "== $name: $bin $* (COL=${ENGINE_GPU_COOP_COL:-} DIRECT=${ENGINE_GPU_COOP_DIRECT:-} TILING=${ENGINE_GPU_COOP_TILING:-})"
  timeout 180 "$BIN/$bin" bench yolov4-tiny --size "$SIZE" --batch "$BATCH" --iterations "$ITERS" --out "/tmp/b-$name" "$@" 2>&1 \
    | grep -E "images/s|device time|GEMMs run|^conv_|^bn_|host ms"
  cp "/tmp/b-$name/tables/kernels.csv" "/tmp/kernels/$name.csv" 2>/dev/null
}
{
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
if [ -x "$BIN/t-gpu_parity" ]; then
  echo "== conv_mixed parity"
  timeout 200 "$BIN/t-gpu_parity" --test-threads 1 conv_mixed 2>&1 | grep -E "test result|FAIL|panicked|vs reference"
  for env in "" "ENGINE_GPU_COOP_COL=1" "ENGINE_GPU_COOP_DIRECT=1" "ENGINE_GPU_COOP_COL=1 ENGINE_GPU_COOP_DIRECT=1"; do
    for t in t-mixed_precision t-loss_scaling; do
      [ -x "$BIN/$t" ] || continue
      echo "== $t ${env:-default}"
      env $env timeout 200 "$BIN/$t" --test-threads 1 2>&1 | grep -E "test result|FAIL|panicked"
    done
  done
fi
bench default runner --precision mixed
ENGINE_GPU_COOP_COL=1 bench col runner --precision mixed
ENGINE_GPU_COOP_DIRECT=1 bench direct runner --precision mixed
ENGINE_GPU_COOP_COL=1 ENGINE_GPU_COOP_DIRECT=1 bench col-direct runner --precision mixed
ENGINE_GPU_COOP_TILING=k16 bench k16 runner --precision mixed
bench before runner-before --precision mixed
bench default-2 runner --precision mixed
ENGINE_GPU_COOP_COL=1 bench col-2 runner --precision mixed
bench fp32 runner
for precision in fp32 tf32 bf16 fp16; do
  echo "== PyTorch $precision"
  PYTHONUNBUFFERED=1 timeout 150 python3 ci/bench/torch_peer.py engine/cfg/yolov4-tiny.cfg --width "$SIZE" --height "$SIZE" \
    --batch "$BATCH" --iters 20 --precision "$precision" 2>&1 | tail -1
done
} 2>&1 | tee "$OUT/log.txt"
(cd /tmp && tar czf "$OUT/kernels.tgz" kernels)
