#!/usr/bin/env bash
# Build (or reuse) the Debian 13 (trixie) test root the libvirt lab can run in
# (test/lab/lab.ts, option `root`). Prints the root's path on the last line of
# stdout. As root:
#
#   test/lab/trixie-root.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $KVMNFTD_TRIXIE_CACHE or
# /var/cache/kvmnftd-test/roots/trixie-lab. The root lives in CACHE_DIR/<hash>,
# where <hash> covers the package list, the suite, the mirror and this script:
# any change builds a new root (older ones are removed). Concurrent callers are
# serialised with flock; a root is complete only once renamed into place.
#
# Two steps (Debian 12's debootstrap cannot resolve trixie's pre-dependencies
# with a long --include): `debootstrap --variant=minbase trixie`, then apt-get
# inside the root (chroot in a private mount namespace with /proc, /dev, /sys;
# policy-rc.d forbids starting services). Nothing of the machine changes
# except CACHE_DIR.
#
# The root is used read-only: the lab puts a tmpfs overlay on top of it.
set -euo pipefail

SUITE=trixie
MIRROR=${KVMNFTD_TRIXIE_MIRROR:-http://deb.debian.org/debian}
CACHE=${1:-${KVMNFTD_TRIXIE_CACHE:-/var/cache/kvmnftd-test/roots/trixie-lab}}
# iptables: libvirt's iptables backend (the lab picks the backend explicitly in
# network.conf; Debian's libvirt 11 would otherwise pick iptables whenever this
# binary exists). busybox: udhcpc for the lab's guest. docker.io, ufw: the
# real dockerd and ufw of test/lab/docker.ts and test/lab/ufw.ts (the
# policy-rc.d below keeps docker.io's postinst from starting dockerd).
PACKAGES=(
  libvirt-daemon-system libvirt-dbus libvirt-clients dnsmasq-base
  nftables iptables dbus iproute2 nodejs busybox
  docker.io ufw
)

SELF=$(readlink -f "${BASH_SOURCE[0]}")
die() {
  echo "trixie-root: FAIL: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------
# Inner part: runs inside `unshare --mount --propagation private`.
if [[ ${1:-} == __inner ]]; then
  ROOT=$2
  shift 2
  mount -t proc proc "$ROOT/proc"
  mount --rbind /dev "$ROOT/dev"
  mount -t sysfs sysfs "$ROOT/sys"
  # name resolution for apt inside the root: the host's resolver
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
  in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 chroot "$ROOT" "$@"; }
  in_root apt-get update -q
  in_root apt-get install -y -q --no-install-recommends "$@"
  in_root apt-get clean
  rm -f "$ROOT/usr/sbin/policy-rc.d"
  rm -rf "$ROOT"/var/lib/apt/lists/*
  exit 0
fi

# ---------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root"
for bin in debootstrap unshare flock sha256sum chroot; do
  command -v "$bin" >/dev/null || die "$bin is not installed (see .ci/install-deps)"
done

HASH=$( { printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}"; cat "$SELF"; } | sha256sum | cut -c1-16)
ROOT="$CACHE/$HASH"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

if [[ -f $ROOT/.kvmnftd-root-complete ]]; then
  echo "trixie-root: cached $ROOT" >&2
  echo "$ROOT"
  exit 0
fi

t0=$EPOCHREALTIME
# Older roots of this cache (another package list / script): remove them.
for old in "$CACHE"/*/; do
  old=${old%/}
  [[ -d $old && $old != "$ROOT" ]] || continue
  echo "trixie-root: removing outdated $old" >&2
  rm -rf --one-file-system "$old"
done
BUILD="$CACHE/.build-$HASH"
rm -rf --one-file-system "$BUILD"
mkdir -p "$BUILD"
echo "trixie-root: debootstrap --variant=minbase $SUITE ($MIRROR)" >&2
if ! debootstrap --variant=minbase "$SUITE" "$BUILD" "$MIRROR" >"$CACHE/.build-$HASH.log" 2>&1; then
  tail -n 30 "$CACHE/.build-$HASH.log" >&2
  rm -rf --one-file-system "$BUILD"
  die "debootstrap failed (log above)"
fi
t1=$EPOCHREALTIME
echo "trixie-root: apt-get install ${PACKAGES[*]}" >&2
if ! unshare --mount --propagation private -- "$SELF" __inner "$BUILD" "${PACKAGES[@]}" >>"$CACHE/.build-$HASH.log" 2>&1; then
  tail -n 30 "$CACHE/.build-$HASH.log" >&2
  rm -rf --one-file-system "$BUILD"
  die "apt-get inside the root failed (log above)"
fi
for f in usr/sbin/libvirtd usr/sbin/libvirt-dbus usr/bin/dbus-daemon usr/sbin/nft usr/sbin/iptables usr/bin/node \
  usr/bin/busybox usr/sbin/tc usr/sbin/dnsmasq usr/sbin/dockerd usr/bin/containerd usr/sbin/ufw; do
  [[ -e $BUILD/$f ]] || die "the built root lacks /$f"
done
versions=$(chroot "$BUILD" dpkg-query -W -f='${Package} ${Version}\n' libvirt-daemon nftables iptables nodejs libvirt-dbus \
  dnsmasq-base docker.io ufw 2>/dev/null | paste -sd, -)
echo "$versions" >"$BUILD/.kvmnftd-root-versions"
touch "$BUILD/.kvmnftd-root-complete"
mv "$BUILD" "$ROOT"
rm -f "$CACHE/.build-$HASH.log"
t2=$EPOCHREALTIME
awk -v a="$t0" -v b="$t1" -v c="$t2" -v r="$ROOT" -v v="$versions" \
  'BEGIN { printf "trixie-root: built %s in %.1f s (debootstrap %.1f s, apt-get %.1f s): %s\n", r, c - a, b - a, c - b, v }' >&2
echo "$ROOT"
