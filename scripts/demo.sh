#!/usr/bin/env bash
# From a fresh Debian or Ubuntu machine: installs the build tools and libuv, builds
# procpool and runs the demo, first as is, then with Windows' behaviour forced.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh gcc meson ninja-build pkg-config libuv1-dev
[ -d build ] || meson setup build >/dev/null
meson compile -C build >/dev/null

./build/examples/demo
echo
echo "=== The same with PROCPOOL_START_METHOD=spawn (what Windows does):"
PROCPOOL_START_METHOD=spawn ./build/examples/demo 2>/dev/null

echo
echo "=== A stream: every file under ${PROGRESS_DIR:-/usr/include}, hashed by the pool (examples/progress.c):"
./build/examples/progress "${PROGRESS_DIR:-/usr/include}"
