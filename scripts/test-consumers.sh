#!/usr/bin/env bash
# Builds and runs a tiny application (test/consumers/app.c) the ways other projects
# consume procpool: as a meson subproject (strict C11, -Werror), through CMake's
# find_package, through pkg-config --static, as C++11 with -Werror, and on Windows the
# mingw DLL under wine (when build-win/ holds a build: scripts/test-windows.sh makes it).
# procpool is first installed into build-consumers/prefix. Each way is a test of the
# meson project in test/consumers, whose log build-consumers/tests/meson-logs/testlog.json
# scripts/test-all.sh counts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/build-consumers

bash "$root/scripts/deps.sh" gcc g++ meson ninja-build pkg-config libuv1-dev cmake git

setup() {  # build dir, meson setup arguments...
  local dir=$1
  shift
  if [[ -f $dir/meson-private/coredata.dat ]]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

rm -rf "$work/prefix" "$work/win-destdir" "$work/runs"
setup "$work/procpool" "$root" --prefix="$work/prefix" -Dtests=disabled -Dexamples=disabled \
  -Dbench=disabled
meson install -C "$work/procpool" --quiet

# The Windows build's install, when there is one: its prefix lies inside the destdir.
win_prefix=""
if [[ -f $root/build-win/build.ninja ]]; then
  meson install -C "$root/build-win" --destdir "$work/win-destdir" --quiet
  win_prefix=$(dirname "$(dirname "$(find "$work/win-destdir" -name procpool.h | head -n 1)")")
fi

setup "$work/tests" "$root/test/consumers"
PP_ROOT=$root PP_PREFIX=$work/prefix PP_WORK=$work/runs PP_WIN_PREFIX=$win_prefix \
  meson test -C "$work/tests" --print-errorlogs "$@"
