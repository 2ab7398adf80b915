#!/usr/bin/env bash
# Renders an HTML report in headless Chromium and fails when no screenshot comes out.
# Usage: ci/render-report.sh REPORT.html [OUT.png]
set -euo pipefail

html="${1:?usage: ci/render-report.sh REPORT.html [OUT.png]}"
out="${2:-${html%.html}.png}"
[ -s "$html" ] || { echo "render-report: $html is missing or empty" >&2; exit 1; }

browser=""
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then browser="$b"; break; fi
done
if [ -z "$browser" ]; then
  echo "render-report: installing chromium (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium >/dev/null
  browser=chromium
fi

abs="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out_abs"
# A throw-away profile keeps runs independent; the timeout guards against a hung browser.
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$profile" --window-size=1200,3000 \
  --screenshot="$out_abs" "file://$abs" >/dev/null 2>&1 || true

if [ ! -s "$out_abs" ]; then
  echo "render-report: no screenshot produced for $html" >&2
  exit 1
fi
# A PNG starts with \x89PNG.
if [ "$(head -c 4 "$out_abs" | tail -c 3)" != "PNG" ]; then
  echo "render-report: $out_abs is not a PNG" >&2
  exit 1
fi
echo "render-report: $out_abs ($(stat -c %s "$out_abs") bytes)"
