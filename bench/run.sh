#!/bin/sh
# Builds a release procpool and its benchmark in build-bench, runs the benchmark and its
# Python multiprocessing counterpart, and prints procpool against both Python and the OS.
# Arguments (--quick) go to both benchmarks. The JSON files stay in build-bench.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-bench"

if [ -f "$build/build.ninja" ]; then
  meson setup --reconfigure "$build" "$root" -Dbuildtype=release
else
  meson setup "$build" "$root" -Dbuildtype=release
fi
meson compile -C "$build" bench/bench bench/bench-child

"$build/bench/bench" --json "$build/bench-procpool.json" "$@"
echo
python3 "$root/bench/python_mp.py" --json "$build/bench-python.json" "$@"
echo
python3 "$root/bench/compare.py" "$build/bench-procpool.json" "$build/bench-python.json"
