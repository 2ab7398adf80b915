#!/usr/bin/env bash
# The main job (README "Run the main job"): CPU and GPU train YOLOv4-tiny side by side on the
# built-in synthetic set and the parity gate decides. Installs lavapipe (software Vulkan) when no
# Vulkan driver is present, so it also runs on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 && [ "$(uname)" = Linux ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
exec cargo run -p runner -- run experiments/tiny-parity.toml "$@"
