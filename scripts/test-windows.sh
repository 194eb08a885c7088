#!/usr/bin/env bash
# Cross-builds procpool for 64-bit Windows with mingw-w64 (build-win/) and runs its test
# suite under wine. Installs what it needs with apt-get when it is missing, and fetches
# libuv's source through scripts/fetch-libuv-source.sh. Idempotent; exits non-zero when
# the build or any test fails. Extra arguments go to `meson test` (a test name, --repeat).
#
# Environment: WINEPREFIX (default build-win/wineprefix, made on first use: that first
# start of wine takes a while).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-win
cross=$root/cross/x86_64-w64-mingw32.txt

# Debian's wine is only a launcher; the 64-bit loader comes in wine64.
bash "$root/scripts/deps.sh" gcc-mingw-w64-x86-64 wine wine64 meson ninja-build

bash "$root/scripts/fetch-libuv-source.sh"

# Quiet and headless: no debug channels, no X display (wine then draws nothing), and no
# offer to download Mono or Gecko while the prefix is made.
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY WAYLAND_DISPLAY
export WINEPREFIX=${WINEPREFIX:-$build/wineprefix}
mkdir -p "$build"
if [[ ! -f $WINEPREFIX/system.reg ]]; then
  echo "test-windows: making the wine prefix $WINEPREFIX (the first time takes a while)"
  wineboot -i
fi
# One wine server for the whole run: every test and every worker is a wine process, and
# each would otherwise wait for a server to start. A server left by wineboot or an earlier
# run cannot be made persistent, so it is let go first.
wineserver -w
wineserver -p
trap 'wineserver -k || true' EXIT
# Wine's crash handler otherwise runs winedbg, which prints a long backtrace for every
# worker a test crashes on purpose; with no debugger the process just ends with the
# exception's code, as on Windows without a debugger.
wine reg add 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
  /v Debugger /t REG_SZ /d '' /f >/dev/null

if [[ -f $build/meson-private/coredata.dat ]]; then
  meson setup --reconfigure "$build" --cross-file "$cross" --force-fallback-for=libuv
else
  meson setup "$build" --cross-file "$cross" --force-fallback-for=libuv
fi
meson compile -C "$build"
# Every test and every worker it starts is a wine process, slower to start than a native
# one: give the tests' timeouts some slack (a later --timeout-multiplier in "$@" wins).
# scripts/wine-run.sh runs a test once more when wine failed to start it at all; meson
# names the log after it: testlog-wine-run.sh.json.
meson test -C "$build" --print-errorlogs --timeout-multiplier 2 \
  --wrapper "$root/scripts/wine-run.sh" "$@"
