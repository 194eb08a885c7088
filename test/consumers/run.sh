#!/usr/bin/env bash
# One consumer build of scripts/test-consumers.sh (which sets the environment): builds the
# application in app.c the way a project of that kind would, from the installed tree in
# PP_PREFIX or from a checkout as a subproject, and runs it. Exit 77: skipped.
#   meson-subproject  procpool as a meson subproject through a wrap, strict C11, -Werror
#   cmake             find_package(procpool CONFIG) and procpool::procpool(_static)
#   pkg-config        pkg-config --static with the static library, and C99 with the shared
#   cxx11             C++11 with -Wpedantic -Werror through pkg-config
#   windows-dll       the mingw build's DLL and import library with the application's
#                     own libuv beside it, run under wine
set -euo pipefail
kind=$1
here=$(cd "$(dirname "$0")" && pwd)
root=${PP_ROOT:?}
prefix=${PP_PREFIX:?}
work=${PP_WORK:?}/$kind
rm -rf "$work"
mkdir -p "$work"
strict=(-Wall -Wextra -Wpedantic -Werror)
libdir=$(dirname "$(find "$prefix" -name procpool.pc -path '*pkgconfig*' | head -n 1)")/..
libdir=$(cd "$libdir" && pwd)
export PKG_CONFIG_PATH=$libdir/pkgconfig

run() {  # the application, which must say it squared its numbers
  echo "+ $*"
  "$@" | tee "$work/out"
  grep -q '^app: 4 squares' "$work/out"
}

case $kind in
meson-subproject)
  # The wrap from the README, pointed at a copy of this checkout (what `git clone` would
  # give: tracked and new files, not build directories or fetched sources).
  mkdir -p "$work/src/subprojects/procpool"
  cp "$here/subproject/meson.build" "$here/app.c" "$work/src/"
  if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
       tar --null -T - -cf -) | tar -xf - -C "$work/src/subprojects/procpool"
  else
    tar -C "$root" --exclude='./build*' --exclude='./subprojects/libuv-*' -cf - . |
      tar -xf - -C "$work/src/subprojects/procpool"
  fi
  cat >"$work/src/subprojects/procpool.wrap" <<WRAP
[wrap-git]
url = $root
revision = HEAD
depth = 1

[provide]
dependency_names = procpool
WRAP
  # Not the installed procpool: the subproject, as where procpool is not installed.
  PKG_CONFIG_PATH= meson setup "$work/build" "$work/src" --force-fallback-for=procpool
  meson compile -C "$work/build"
  # Nothing of procpool's but the library: no tests, examples or benchmarks.
  if meson introspect --targets "$work/build" | grep -E '"name": "(run-tests|demo|bench)"' >/dev/null; then
    echo "the subproject built its tests, examples or benchmarks" >&2
    exit 1
  fi
  run "$work/build/app"
  ;;
cmake)
  cmake -S "$here/cmake" -B "$work" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_FLAGS="${strict[*]}" -DCMAKE_BUILD_TYPE=Release
  cmake --build "$work"
  run "$work/app"
  if readelf -d "$work/app-static" | grep 'NEEDED.*procpool' >/dev/null; then
    echo "app-static links the shared library" >&2
    exit 1
  fi
  run "$work/app-static"
  ;;
pkg-config)
  # The static library, with everything else pkg-config --static names for it.
  libs=$(pkg-config --static --libs procpool)
  cc -std=c11 "${strict[@]}" "$here/app.c" -o "$work/app-static" \
    $(pkg-config --cflags procpool) ${libs/-lprocpool/-l:libprocpool.a}
  if readelf -d "$work/app-static" | grep 'NEEDED.*procpool' >/dev/null; then
    echo "app-static links the shared library" >&2
    exit 1
  fi
  run "$work/app-static"
  # The shared library, from strict C99 that never sees uv.h.
  cc -std=c99 "${strict[@]}" "$here/app.c" -o "$work/app-c99" \
    $(pkg-config --cflags --libs procpool) -Wl,-rpath,"$libdir"
  run "$work/app-c99"
  ;;
cxx11)
  c++ -std=c++11 "${strict[@]}" -DAPP_OWN_LOOP -I"$here" "$here/app.cpp" -o "$work/app" \
    $(pkg-config --cflags --libs procpool libuv) -Wl,-rpath,"$libdir"
  run "$work/app"
  ;;
windows-dll)
  win=${PP_WIN_PREFIX:-}
  if [[ -z $win ]] || ! command -v wine >/dev/null; then
    echo "no Windows build or no wine here: skipped"
    exit 77
  fi
  uv=$root/build-win/subprojects/libuv-v1.44.2
  # -lprocpool finds the import library (libprocpool.dll.a) before the static one, as
  # for any mingw user; the application's own libuv is the static one it builds itself.
  x86_64-w64-mingw32-gcc -std=c11 "${strict[@]}" -D__USE_MINGW_ANSI_STDIO=1 -DAPP_OWN_LIBUV \
    "$here/app.c" -o "$work/app.exe" -I"$win/include" -I"$root/subprojects/libuv-v1.44.2/include" \
    -L"$win/lib" -lprocpool "$uv/libuv.a" \
    -lpsapi -luser32 -ladvapi32 -liphlpapi -luserenv -lws2_32
  x86_64-w64-mingw32-objdump -p "$work/app.exe" | grep 'DLL Name: libprocpool-0.dll' >/dev/null || {
    echo "app.exe does not import libprocpool-0.dll" >&2
    exit 1
  }
  cp "$win"/bin/libprocpool-*.dll "$work/"
  export WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
  export WINEPREFIX=${WINEPREFIX:-$root/build-win/wineprefix}
  unset DISPLAY WAYLAND_DISPLAY
  run wine "$work/app.exe"
  ;;
*)
  echo "unknown consumer kind $kind" >&2
  exit 2
  ;;
esac
