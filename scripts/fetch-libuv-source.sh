#!/usr/bin/env bash
# Unpacks libuv 1.44.2's upstream source into subprojects/libuv-v1.44.2/, the directory
# that subprojects/libuv.wrap names, for builds that cannot download the wrap's tarball
# (no internet but Debian's archive). Meson then uses the directory as it is.
#
# The source comes from Debian's source package of libuv1 for bookworm: its
# libuv1_1.44.2.orig.tar.gz holds the same tree as upstream's release tarball (only the
# top directory's name differs). Idempotent: a second run with the source in place does
# nothing.
set -euo pipefail

version=1.44.2
# Debian's orig tarball of 1.44.2 (any bookworm revision): its tree is identical to
# upstream's v1.44.2 tag, as is the tree of the wrap's dist.libuv.org tarball.
orig_sha256=d79b4b06ef04be85fb890bf39d55942cc64c2e15fd14eaa32dae5dce94485484
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/subprojects/libuv-v$version
stamp=$dest/.procpool-source

# Meson applies the wrap's patch_directory only when it unpacks the source itself; an
# unpacked directory is used as it is. A link (not a copy) keeps it on the current
# packagefiles/libuv/meson.build.
link_build_file() {
  ln -sfn ../packagefiles/libuv/meson.build "$dest/meson.build"
}

if [[ -f $stamp && $(cat "$stamp") == "$orig_sha256" ]]; then
  link_build_file
  exit 0
fi

# A download-only `apt-get source` needs no dpkg-dev (that unpacks and patches); it needs
# Debian's key to check the archive's signature.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
bash "$root/scripts/deps.sh" debian-archive-keyring

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# apt runs with a configuration of its own, so the machine's sources are neither read nor
# changed: a deb-src entry added beside them clashes with theirs when their Signed-By
# differs. bookworm is named outright because its libuv1 is 1.44.2, whatever release
# (or Ubuntu) this machine runs.
# The Debian mirror is the one this machine's apt already uses (PROCPOOL_DEBIAN_MIRROR
# overrides it, e.g. on Ubuntu, whose mirrors do not carry Debian's sources).
mirror=${PROCPOOL_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
             /etc/apt/sources.list.d/*.sources 2>/dev/null |
           grep -oE '(https?|file)://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
fi
if [[ -z $mirror ]]; then
  echo "fetch-libuv-source: no Debian mirror in this machine's apt sources; set" \
       "PROCPOOL_DEBIAN_MIRROR to one" >&2
  exit 1
fi
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/src"
echo "deb-src [signed-by=$keyring] $mirror bookworm main" >"$work/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=$work/parts"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "APT::Sandbox::User=$(id -un)"
)
apt-get -q "${apt_opts[@]}" update
(cd "$work/src" && apt-get -q "${apt_opts[@]}" source --download-only libuv1)

orig=$work/src/libuv1_$version.orig.tar.gz
[[ -f $orig ]] || { echo "fetch-libuv-source: $orig was not downloaded" >&2; exit 1; }
echo "$orig_sha256  $orig" | sha256sum --check --quiet
rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$orig" -C "$dest" --strip-components=1
[[ -f $dest/CMakeLists.txt && -f $dest/include/uv.h ]] || {
  echo "fetch-libuv-source: $orig does not hold libuv's source tree" >&2
  exit 1
}
link_build_file
echo "$orig_sha256" >"$stamp"
echo "fetch-libuv-source: libuv $version unpacked into $dest"
