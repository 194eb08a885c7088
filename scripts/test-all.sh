#!/usr/bin/env bash
# From a fresh Debian or Ubuntu machine: installs what the tests need, then runs the
# whole test suite: native, under valgrind, under AddressSanitizer and
# UndefinedBehaviorSanitizer, under ThreadSanitizer, and the Windows build under wine when mingw-w64 and wine are there (CI installs them:
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

echo "=== layout (which side includes which: doc/design.md, \"The map\")"
sh scripts/check-layout.sh || status=1

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

# clang builds the sanitizer run, and with it the fuzz targets (fuzz/: the pool's and the
# worker's frame decoders, the forkserver's messages) when its libFuzzer runtime is there;
# the suite runs each for fuzz_seconds with its seeds, and a finding fails it.
bash scripts/deps.sh clang
fuzz=false
if echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
    clang -x c -fsanitize=fuzzer - -o /tmp/procpool-fuzz-probe 2>/dev/null; then
  fuzz=true
fi
CC=clang run_suite "asan+ubsan (clang), fuzz=$fuzz" build-asan -Db_sanitize=address,undefined \
  -Db_lundef=false -Dbuildtype=debug -Dfuzz=$fuzz -Dfuzz_seconds=25

# ThreadSanitizer, for the parent-side calls that any thread may make. libuv is the wrap's,
# built with the same -fsanitize=thread: in the system's uninstrumented library TSan sees
# neither a handle touched by two threads (a call into the loop from the wrong thread)
# nor the atomics by which uv_async_send orders a sender's writes before its callback.
# TSan's runtime needs a narrower address space than a kernel with many bits of mmap
# randomization gives ("unexpected memory mapping"): then it runs without ASLR.
bash scripts/fetch-libuv-source.sh
tsan_probe=${TMPDIR:-/tmp}/procpool-tsan-probe
printf '%s\n' '#include <pthread.h>' 'static void *f(void *a) { return a; }' \
  'int main(void) { pthread_t t; return pthread_create(&t, 0, f, 0) || pthread_join(t, 0); }' |
  clang -x c -fsanitize=thread - -o "$tsan_probe"
tsan_run=()
if ! "$tsan_probe" >/dev/null 2>&1; then
  tsan_run=(setarch "$(uname -m)" -R)
fi
echo "=== tsan (clang)${tsan_run[*]:+, under ${tsan_run[*]}}"
if ${tsan_run[@]+"${tsan_run[@]}"} "$tsan_probe"; then
  tsan_setup=(-Db_sanitize=thread -Db_lundef=false -Dbuildtype=debugoptimized
              --force-fallback-for=libuv)
  if [ -d build-tsan ]; then
    CC=clang meson setup --reconfigure build-tsan "${tsan_setup[@]}" >/dev/null
  else
    CC=clang meson setup build-tsan "${tsan_setup[@]}" >/dev/null
  fi
  meson compile -C build-tsan >/dev/null
  # A race ends the process at once with status 66, a worker's as the test's own. TSan
  # cannot follow a fork of a process that runs other threads: it stops checking in that
  # child and, unless die_after_fork=0, ends it when it starts a thread (every worker
  # starts its hang-up watcher). The fork method is made to work from a threaded parent,
  # and tests that, so such a worker runs, unchecked. atexit_sleep_ms=0: TSan otherwise
  # waits a second at every exit, of every test and every worker, for threads that
  # might still race; our tests have joined theirs by then.
  tsan_options=(halt_on_error=1 exitcode=66 second_deadlock_stack=1 die_after_fork=0
                atexit_sleep_ms=0)
  TSAN_OPTIONS="${tsan_options[*]}" ${tsan_run[@]+"${tsan_run[@]}"} \
    meson test -C build-tsan --print-errorlogs --num-processes 2 || status=1
  logs+=(build-tsan/meson-logs/testlog.json)
else
  echo "tsan: ThreadSanitizer's runtime does not start here, even without ASLR"
  status=1
fi

if [ -x scripts/test-windows.sh ] && { [ "${CI:-}" = true ] || command -v wine >/dev/null; }; then
  echo "=== windows (mingw-w64, under wine)"
  bash scripts/test-windows.sh || status=1
  [ -f build-win/meson-logs/testlog-wine-run.sh.json ] &&
    logs+=("build-win/meson-logs/testlog-wine-run.sh.json")
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
failures = []
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            r = t["result"]
            if r in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r == "SKIP":
                skipped += 1
            else:
                failed += 1
                failures.append((path, t, r))
# CI shows only the tail of this script's output: name every failure here, at the end,
# with the last lines it printed, so that a rare one can be told from the record alone.
for path, t, r in failures:
    print(f"FAILED: {t['name']} ({r}, {t.get('duration', 0):.1f} s) in {path}")
    out = (t.get("stdout") or "") + (t.get("stderr") or "")
    for l in out.strip().splitlines()[-12:]:
        print("    " + l[:300])
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
