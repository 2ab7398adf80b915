#!/usr/bin/env bash
# One device call for mixed precision's GEMM paths (issue 15), on the H200 machine (the `device`
# tool of this workplace; see README "runner bench"). Expects in .devbin/ xz-compressed x86_64
# release binaries: runner, optionally runner-before (the build to compare with) and the test
# binaries t-gpu_parity, t-gpu_network, t-mixed_precision, t-loss_scaling; and the Vulkan
# loader debs in .gl/.
# Steps, the checks first (a path that fails them must not be timed as if it worked):
#   1. the GPU parity tests (conv_mixed's run the direct write-out and the column path on and off
#      themselves), then mixed_precision and loss_scaling with each of TEST_ENVS;
#   2. runner bench, yolov4-tiny SIZE×SIZE batch BATCH, mixed precision, one run per line of
#      RUNS (name, then the environment it runs with): by default the defaults, the staged
#      write-out with one value per invocation in the wide kernels (the defaults before them),
#      each of those two alone, naga's bounds checks off (driver) and all checks off (none),
#      a second default run (drift); runner-before if present; then fp32 (FP32_RUNS likewise);
#   3. the PyTorch peer at the same size and batch: fp32 (TF32 off), TF32, bf16 and fp16 autocast
#      (PEERS lists which). FP32_RUNS empty skips fp32.
# Writes log.txt and kernels.tgz (each bench's kernels table) to $OUT.
set -u
. ci/bench/device_prelude.sh
mkdir -p /tmp/kernels
SIZE=${SIZE:-416}
BATCH=${BATCH:-64}
ITERS=${ITERS:-8}
RUNS=${RUNS:-"default -
staged-narrow ENGINE_GPU_COOP_DIRECT=0 ENGINE_GPU_WIDE=1
staged ENGINE_GPU_COOP_DIRECT=0
narrow ENGINE_GPU_WIDE=1
driver ENGINE_GPU_CHECKS=driver
unchecked ENGINE_GPU_CHECKS=none
default-2 -"}
# Environments the mixed-precision tests run with (space-separated; - = the defaults); a tiling
# (ENGINE_GPU_COOP_TILING=…) also reruns gpu_parity's conv_mixed tests with it.
TEST_ENVS=${TEST_ENVS:-"- ENGINE_GPU_COOP_DIRECT=0 ENGINE_GPU_COOP_COL=1"}
FP32_RUNS=${FP32_RUNS:-"fp32 -
fp32-narrow ENGINE_GPU_WIDE=1
fp32-driver ENGINE_GPU_CHECKS=driver
fp32-unchecked ENGINE_GPU_CHECKS=none"}
bench() { # name, binary, environment (or -), extra args
  local name=$1 bin=$2 env=$3; shift 3
  [ "$env" = - ] && env=
  [ -x "$BIN/$bin" ] || return 0
  echo "== $name: $bin $* ($env)"
  env $env timeout 180 "$BIN/$bin" bench yolov4-tiny --size "$SIZE" --batch "$BATCH" --iterations "$ITERS" --out "/tmp/b-$name" "$@" 2>&1 \
    | grep -E "images/s|device time|GEMMs run|^conv_|^bn_|host ms"
  cp "/tmp/b-$name/tables/kernels.csv" "/tmp/kernels/$name.csv" 2>/dev/null
}
{
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
if [ -x "$BIN/t-gpu_network" ]; then
  echo "== gpu_network (whole network against the CPU, reruns, run_steps)"
  timeout 200 "$BIN/t-gpu_network" --test-threads 1 2>&1 | grep -E "test result|FAIL|panicked"
fi
# KERNEL_TESTS=0 skips the kernel tests (a call after one that ran them on the same kernels).
if [ -x "$BIN/t-gpu_parity" ] && [ "${KERNEL_TESTS:-1}" = 1 ]; then
  echo "== gpu_parity (conv_mixed's paths, the wide kernels' widths, every kernel against the CPU)"
  timeout 200 "$BIN/t-gpu_parity" --test-threads 1 2>&1 | grep -E "test result|FAIL|panicked|vs reference"
  for env in $TEST_ENVS; do
    [ "$env" = - ] && env=
    if [ -n "$env" ] && [ "${env#ENGINE_GPU_COOP_TILING}" != "$env" ]; then
      echo "== gpu_parity conv_mixed $env"
      env $env timeout 200 "$BIN/t-gpu_parity" --test-threads 1 conv_mixed 2>&1 | grep -E "test result|FAIL|panicked"
    fi
    for t in t-mixed_precision t-loss_scaling; do
      [ -x "$BIN/$t" ] || continue
      echo "== $t ${env:-default}"
      env $env timeout 200 "$BIN/$t" --test-threads 1 2>&1 | grep -E "test result|FAIL|panicked"
    done
  done
fi
while read -r name env; do bench "$name" runner "$env" --precision mixed < /dev/null; done <<< "$RUNS"
bench before runner-before - --precision mixed < /dev/null
if [ -n "$FP32_RUNS" ]; then
  bench fp32-before runner-before - < /dev/null
  while read -r name env; do bench "$name" runner "$env" < /dev/null; done <<< "$FP32_RUNS"
fi
for precision in ${PEERS:-fp32 tf32 bf16 fp16}; do
  echo "== PyTorch $precision"
  PYTHONUNBUFFERED=1 timeout 150 python3 ci/bench/torch_peer.py engine/cfg/yolov4-tiny.cfg --width "$SIZE" --height "$SIZE" \
    --batch "$BATCH" --iters 20 --precision "$precision" 2>&1 | tail -1
done
} 2>&1 | tee "$OUT/log.txt"
(cd /tmp && tar czf "$OUT/kernels.tgz" kernels)
