#!/usr/bin/env bash
# Fetch Debian's linux-source-VERSION tarball from a suite the machine's apt is not configured for
# (7.3 is in trixie-backports), without touching the system's apt sources or its package state:
# `apt-get download` through a private sources list, lists and cache under a temporary directory.
#
# Usage: scripts/get-kernel-source.sh [VERSION [SUITE]]      (default: 7.3 trixie-backports)
# The tarball lands in $PAGELAB_SOURCES (default ${XDG_CACHE_HOME:-~/.cache}/pagelab/sources), where
# `pagelab build --kernel-src VERSION` finds it (pagelab/kernel/source.py). No root needed.
set -euo pipefail

VERSION=${1:-7.3}
SUITE=${2:-trixie-backports}
DEST=${PAGELAB_SOURCES:-${XDG_CACHE_HOME:-$HOME/.cache}/pagelab/sources}
PKG="linux-source-$VERSION"
TARBALL="$DEST/$PKG.tar.xz"

if [ -s "$TARBALL" ]; then
  echo "get-kernel-source: $TARBALL already there"
  exit 0
fi

# The mirror and its keyring from the machine's own apt configuration (deb822 or one-line format),
# skipping the security archive, which has no kernel source packages for other suites.
mirror="" keyring=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
    /etc/apt/sources.list.d/debian.sources)
  keyring=$(awk '/^Signed-By:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) print $i; break } }' \
    /etc/apt/sources.list | head -n1)
fi
if [ -z "$mirror" ]; then
  echo "get-kernel-source: no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2
  exit 4
fi
keyring=${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=$keyring] $mirror $SUITE main" >"$work/sources.list"
# The system's update hooks (apt.conf.d: PackageKit, appstream refresh, …) are about the system's lists,
# not these private ones: clear them rather than let them run (and fail or refresh) for this update.
printf '#clear APT::Update::Pre-Invoke;\n#clear APT::Update::Post-Invoke;\n#clear APT::Update::Post-Invoke-Success;\n' \
  >"$work/apt.conf"
O=(-c "$work/apt.conf" -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1)
# As root apt would drop to _apt for downloading, which cannot write into this private directory.
[ "$(id -u)" -ne 0 ] || O+=(-o APT::Sandbox::User=root)

fetch() {
  apt-get "${O[@]}" -q update >"$work/apt.log" 2>&1 &&
    (cd "$work" && apt-get "${O[@]}" -q download "$PKG" >>"$work/apt.log" 2>&1)
}

echo "get-kernel-source: $PKG from $mirror $SUITE"
# Four attempts, backing off 5, 15 and 30 s: a mirror hiccup should not cost the set-up its newest kernel.
attempt=1
for wait in 5 15 30 ""; do
  fetch && break
  if [ -z "$wait" ]; then
    tail -n 5 "$work/apt.log" >&2
    echo "get-kernel-source: cannot fetch $PKG from $mirror $SUITE after $attempt attempts" \
      "(a network error, or $SUITE no longer has it)" >&2
    exit 4
  fi
  echo "get-kernel-source: fetching $PKG failed (attempt $attempt); retrying in $wait s" >&2
  sleep "$wait"
  attempt=$((attempt + 1))
done
deb=$(ls "$work"/"${PKG}"_*.deb)
dpkg-deb -x "$deb" "$work/root"
mkdir -p "$DEST"
src=$(ls "$work"/root/usr/src/"$PKG".tar.*)
cp "$src" "$TARBALL.tmp.$$"
mv "$TARBALL.tmp.$$" "$TARBALL"
echo "get-kernel-source: $TARBALL ($(du -h "$TARBALL" | cut -f1); $(basename "$deb"))"
