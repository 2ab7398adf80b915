#!/usr/bin/env bash
# The main job (README "Run the main job"): CPU and GPU train side by side on the built-in
# synthetic shapes and the gates decide, in two runs:
#   experiments/tiny-parity.toml          fine-tunes a trained detector (shipped weights, mAP@0.5
#                                          ≈ 0.8): loss parity, and GPU mAP equal to the CPU's
#   experiments/tiny-parity-scratch.toml  full-width yolov4-tiny from random weights: loss parity
# Installs lavapipe (software Vulkan) when no Vulkan driver is present, so it also runs on a
# machine without a GPU. Exit code: the worse of the two runs' (0 pass, 1 a gate failed, 2 error).
# Extra arguments go to both `runner run` calls (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 && [ "$(uname)" = Linux ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
status=0
for exp in experiments/tiny-parity.toml experiments/tiny-parity-scratch.toml; do
  echo "== $exp"
  rc=0
  cargo run -p runner -- run "$exp" "$@" || rc=$?
  [ "$rc" -gt "$status" ] && status=$rc
done
exit "$status"
