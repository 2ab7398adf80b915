# Sourced by the device-call scripts (h200.sh, mixed.sh): unpacks the carried Vulkan loader debs
# (.gl/) and the xz-compressed binaries (.devbin/*.xz) into $BIN, and sets the environment the
# NVIDIA Vulkan driver and the GPU tests need.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export WGPU_BACKEND=vulkan REQUIRE_GPU=1 XDG_RUNTIME_DIR=/tmp
BIN=/tmp/devbin
mkdir -p "$BIN" "$OUT"
for f in .devbin/*.xz; do
  n=$(basename "$f" .xz)
  python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$BIN/$n" && chmod +x "$BIN/$n"
done
