#!/usr/bin/env bash
# From a fresh Debian or Ubuntu machine: installs what the tests need, then runs the
# whole test suite: native, again under AddressSanitizer and UndefinedBehaviorSanitizer,
# and the Windows build under wine when mingw-w64 and wine are there (CI installs them:
# see .ci/run), then the consumer builds (scripts/test-consumers.sh). Ends with one line
# "N passed, N failed, N skipped" over every run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh gcc meson ninja-build pkg-config libuv1-dev python3

logs=()
status=0

run_suite() {  # name, build dir, meson setup arguments...
  local name=$1 dir=$2
  shift 2
  echo "=== $name"
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  meson compile -C "$dir" >/dev/null
  meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
  logs+=("$dir/meson-logs/testlog.json")
}

run_suite "native (gcc)" build-test

# The same build again under valgrind's memcheck: leaks and bad reads in the parent,
# through every fault path (workers are not followed: each is its own process).
bash scripts/deps.sh valgrind
echo "=== valgrind memcheck"
meson test -C build-test --print-errorlogs --num-processes 2 --timeout-multiplier 4 \
  --logbase memcheck \
  --wrap='valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite' \
  || status=1
# meson names the log after the base and the wrapper: memcheck-valgrind.json.
logs+=(build-test/meson-logs/memcheck*.json)

# clang builds the sanitizer run, and with it the fuzz target for the frame decoder when
# its libFuzzer runtime is there.
bash scripts/deps.sh clang
fuzz=false
if echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
    clang -x c -fsanitize=fuzzer - -o /tmp/procpool-fuzz-probe 2>/dev/null; then
  fuzz=true
fi
CC=clang run_suite "asan+ubsan (clang), fuzz=$fuzz" build-asan -Db_sanitize=address,undefined \
  -Db_lundef=false -Dbuildtype=debug -Dfuzz=$fuzz

if [ -x scripts/test-windows.sh ] && { [ "${CI:-}" = true ] || command -v wine >/dev/null; }; then
  echo "=== windows (mingw-w64, under wine)"
  bash scripts/test-windows.sh || status=1
  [ -f build-win/meson-logs/testlog.json ] && logs+=("build-win/meson-logs/testlog.json")
else
  echo "=== windows: skipped (no wine here; CI installs it)"
fi

# Tiny applications built the ways other projects consume procpool (meson subproject,
# CMake, pkg-config --static, C++11; the Windows DLL under wine when build-win/ was built
# above), each a test of test/consumers' own meson project.
echo "=== consumers"
bash scripts/test-consumers.sh || status=1
[ -f build-consumers/tests/meson-logs/testlog.json ] &&
  logs+=("build-consumers/tests/meson-logs/testlog.json")

python3 - "${logs[@]}" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)["result"]
            if r in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r == "SKIP":
                skipped += 1
            else:
                failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
