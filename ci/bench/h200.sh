#!/usr/bin/env bash
# One device call on the H200 machine (the `device` tool of this workplace; see README "Speed").
# Expects xz-compressed x86_64 release binaries in .devbin/ (runner, and optionally
# runner-before, conv_tiles and test binaries named gpu_*) and the Vulkan loader debs in .gl/.
# Steps, most important first (each optional part runs only when its binary or variable is there),
# then a summary:
#   1. runner bench on yolov4-tiny 416x416 batch 64, GPU timestamps on; the PyTorch peer at the
#      same size and batch (fp32, TF32 off); the CPU backend on all cores (CPU_ITERS, 0 skips it);
#   2. CPU_PINNED=1: ci/bench/cpu.sh, the CPU backend against PyTorch's CPU on 2 pinned cores;
#   3. runner-before bench; the same without timestamps (what profiling costs), with no shader
#      checks (ENGINE_GPU_CHECKS=none), with every check (=all) and with workgroup memory zeroed
#      (ENGINE_GPU_ZERO_WORKGROUP=1); SKIP_VARIANTS=1 skips these;
#   4. EXPERIMENTS=1: runner run of the main job and classifier-parity (CPU and this GPU side by
#      side, gates included) and runner diverge of the main job; 5. the GPU test binaries;
#   6. the GEMM tile sweep.
# Writes logs and kernels tables to $OUT (at most 8 files come back).
set -u
. ci/bench/device_prelude.sh
LOG="$OUT/log.txt"
SIZE=${SIZE:-416}
BATCH=${BATCH:-64}
ITERS=${ITERS:-10}
{
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
bench() { # name, binary, extra args
  local name=$1 bin=$2; shift 2
  echo "== $name"
  timeout 240 "$BIN/$bin" bench yolov4-tiny --size "$SIZE" --batch "$BATCH" --out "/tmp/$name" "$@" 2>&1
  [ -f "/tmp/$name/tables/kernels.csv" ] && cp "/tmp/$name/tables/kernels.csv" "$OUT/${name}_kernels.csv"
}
# The headline first (ours, the peer, the CPU), so that a call cut short still brings it back.
bench after runner --iterations "$ITERS"
echo "== torch peer"
timeout 180 python3 ci/bench/torch_peer.py engine/cfg/yolov4-tiny.cfg --width "$SIZE" --height "$SIZE" --batch "$BATCH" --iters 30 2>&1 | tail -3
if [ "${CPU_ITERS:-0}" != 0 ]; then
  echo "== cpu backend"
  timeout 300 "$BIN/runner" bench yolov4-tiny --size "$SIZE" --batch "$BATCH" --backend cpu --iterations "$CPU_ITERS" --warmup 1 --out /tmp/cpu 2>&1
fi
if [ -n "${CPU_PINNED:-}" ]; then
  echo "== cpu backend vs pytorch cpu, pinned (ci/bench/cpu.sh)"
  RUNNER="$BIN/runner" ITERS="${CPU_PINNED_ITERS:-3}" OUT=/tmp/cpu-pinned timeout 400 bash ci/bench/cpu.sh 2>&1 | grep -E "^==|images_per_s|images/s|ratio|peak|^ *[0-9]+ "
fi
# A second build (e.g. a branch) next to the headline's: the memory plan, and checkpointing.
if [ -x "$BIN/runner-mem" ]; then
  bench mem runner-mem --iterations "$ITERS"
  bench mem_checkpointing runner-mem --iterations "$ITERS" --checkpointing auto --memory-budget 4GiB
fi
[ -x "$BIN/runner-before" ] && bench before runner-before --iterations "${BEFORE_ITERS:-3}"
[ -n "${SKIP_VARIANTS:-}" ] || {
  bench no_timestamps runner --iterations "$ITERS" --no-timestamps
  ENGINE_GPU_CHECKS=none bench unchecked runner --iterations "$ITERS"
  ENGINE_GPU_CHECKS=all bench all_checks runner --iterations "$ITERS"
  ENGINE_GPU_ZERO_WORKGROUP=1 bench zero_workgroup runner --iterations "$ITERS"
}
if [ -n "${EXPERIMENTS:-}" ]; then
  for e in tiny-parity classifier-parity; do
    echo "== run $e"
    timeout 300 "$BIN/runner" run "experiments/$e.toml" --out "/tmp/runs-$e" 2>&1 | tail -12
    find "/tmp/runs-$e" -name gate.md -exec cat {} \; 2>/dev/null | head -30
  done
  echo "== diverge tiny-parity"
  timeout 200 "$BIN/runner" diverge experiments/tiny-parity.toml --iterations 3 --out /tmp/div 2>&1 | tail -25
fi
for t in "$BIN"/gpu_*; do
  [ -x "$t" ] || continue
  echo "== $(basename "$t")"
  timeout 240 "$t" --test-threads 1 2>&1 | grep -E "^test |test result|FAILED|panicked" | tail -40
done
if [ -x "$BIN/conv_tiles" ]; then
  echo "== conv tile sweep"
  timeout 300 "$BIN/conv_tiles" "$SIZE" "$BATCH" 2>&1 | tee "$OUT/conv_tiles.txt"
fi
} 2>&1 | tee "$LOG"
echo "== summary"
grep -E "^== |images/s|device time|^\{.*images_per_s|test result|all GEMMs|ratio|peak|planned" "$LOG"
