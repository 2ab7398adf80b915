#!/usr/bin/env bash
# The project's test command (README "Run the tests"): installs what the tests need on a fresh
# Debian/Ubuntu machine, then runs the whole workspace's tests. GPU tests run on lavapipe
# (Mesa's software Vulkan) and must not skip here: REQUIRE_GPU=1 turns "no adapter" into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
if [ "$(uname)" = Linux ]; then
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_pkgs+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need_pkgs+=(libvulkan1)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi
fi

export REQUIRE_GPU="${REQUIRE_GPU:-1}"
# lavapipe prints this harmless warning when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo test --workspace --no-fail-fast "$@"
