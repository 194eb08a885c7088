#!/usr/bin/env bash
# Runs one Windows test program under wine for scripts/test-windows.sh (meson test
# --wrapper: "$@" is wine, the program and its arguments), and runs it once more when
# wine did not start it at all.
#
# Now and then, under the suite's load, wine ends a program with status 1 within a few
# milliseconds and nothing printed, where the same program takes 50 ms or more to get as
# far as skipping: once in about ten runs of the suite, with nothing killing processes by
# pid (neither the library nor, since kill-stress stopped, the tests), though every way
# a test program exits with 1 prints why first (test/helpers.c, test/run-tests.c).
# Such a run is started once more and the second run's result stands, so a program that
# does fail that way fails twice and still fails the test. A line on stderr says it
# happened, so the log keeps count.
set -uo pipefail

out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

start=$(date +%s%N)
"$@" >"$out" 2>"$err"
status=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [[ $status -eq 1 && ! -s $out && ! -s $err && $ms -lt 1000 ]]; then
  echo "wine-run: wine ended the program with status 1 after $ms ms, before it printed" \
       "anything; running it once more" >&2
  rm -f "$out" "$err"
  trap - EXIT
  exec "$@"
fi
cat "$out"
cat "$err" >&2
exit "$status"
