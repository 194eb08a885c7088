#!/bin/sh
# Checks that the source tree keeps its sides apart (doc/design.md, "The map"): the
# worker's side and the shared code never include a header of the pool's side, the
# shared code none of the worker's, the pool's side none of the worker's (it starts
# workers only through methods.h), and the platform code reaches the core only through
# the contract headers at the top of src/ and the shared code. Prints each include that
# breaks a rule and exits 1; exits 0 when there is none.
set -eu
cd "$(dirname "$0")/.."
bad=0
for f in src/*/*.c src/*/*.h; do
  dir=$(dirname "$f")
  side=$(basename "$dir")
  for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
    [ -e "$dir/$inc" ] || continue
    target=$(realpath --relative-to=src "$dir/$inc")
    case "$target" in
      */*) tside=${target%%/*} ;;
      *) tside=contract ;;
    esac
    [ "$tside" = "$side" ] && continue
    ok=1
    case "$side:$tside" in
      worker:pool | shared:pool | shared:worker | pool:worker) ok=0 ;;
      unix:pool | unix:worker | win:pool | win:worker) ok=0 ;;
    esac
    # The worker side's contract with the start methods is not the pool's to include.
    if [ "$side" = pool ] && [ "$target" = serve.h ]; then ok=0; fi
    if [ "$ok" = 0 ]; then
      echo "check-layout: $f includes $inc (src/$target): the $side side may not include the $tside side's headers"
      bad=1
    fi
  done
done
if [ "$bad" = 0 ]; then
  echo "check-layout: every include keeps to its side"
fi
exit "$bad"
