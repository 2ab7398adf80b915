#!/usr/bin/env bash
# One device call on the H200 (see the issue notes): Vulkan loader, GPU test suite, training
# benchmark of yolov4-tiny 416×416 batch 64 on the GPU backend and on the CPU backend, and the
# PyTorch peer at the same size. Expects release binaries in .devbin/ and loader debs in .gl/.
set -u
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export REQUIRE_GPU=1 WGPU_BACKEND=vulkan
mkdir -p "$OUT"
ls /usr/local/nvidia/share/vulkan/icd.d/ 2>&1; ldconfig -p | grep -E "libvulkan|libGLX_nvidia" | head -5
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
echo "== bench gpu"; timeout 170 .devbin/train_step gpu 416 64 50 2>&1 | tail -3 | tee "$OUT/bench_gpu.json"
echo "== torch peer"; timeout 90 python3 ci/bench/torch_peer.py engine/cfg/yolov4-tiny.cfg --width 416 --height 416 --batch 64 --iters 50 2>&1 | tail -3 | tee "$OUT/torch.json"
for t in gpu_parity gpu_yolo gpu_network; do
  echo "== $t"; timeout 90 .devbin/$t --test-threads 1 2>&1 | grep -E "test result|FAILED|panicked" | tee -a "$OUT/tests.txt"
done
echo "== bench cpu (2 iterations)"; [ -n "${SKIP_CPU:-}" ] || timeout 120 .devbin/train_step cpu 416 64 2 2>&1 | tail -2 | tee "$OUT/bench_cpu.json"
