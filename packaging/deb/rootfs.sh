#!/usr/bin/env bash
# rootfs.sh RELEASE KIND  ->  prints the path of a ready, cached Debian root.
#
#   RELEASE  bookworm (Debian 12) | trixie (Debian 13)
#   KIND     build   what packaging/deb/build.sh needs to build kvmnftd against
#                    the release's own nodejs (npm, node-gyp, g++, libsystemd-dev)
#                    and to run the release's lintian on the result
#            system  what a user's host has: systemd, dbus, nodejs, libvirt,
#                    nftables (test/system boots it with systemd-nspawn)
#            ansible system plus the release's own ansible-core and python3-apt
#                    (its apt module's library), made from a copy of the
#                    system root: test/system/ansible.test.ts runs
#                    ansible-playbook inside the booted container, with a
#                    local connection (the container has no network)
#
# Roots are cached under $KVMNFTD_ROOTS (default /var/cache/kvmnftd-test/roots)
# as RELEASE/KIND-HASH, HASH being a content hash of FORMAT, the mirror and the
# package list: a changed list builds a new root and removes the old one (bump
# FORMAT when the way a root is made changes). A root is
# built in a temporary folder and renamed when complete, under a flock, so
# concurrent callers build it once. Debian 12's debootstrap cannot install
# trixie with a long --include list: minbase first, then apt-get inside.
# Needs root, debootstrap, flock, unshare, chroot; reaches deb.debian.org.
set -euo pipefail

RELEASE=${1:?usage: rootfs.sh RELEASE build|system|ansible}
KIND=${2:?usage: rootfs.sh RELEASE build|system|ansible}
ROOTS=${KVMNFTD_ROOTS:-/var/cache/kvmnftd-test/roots}
MIRROR=${KVMNFTD_MIRROR:-http://deb.debian.org/debian}
FORMAT=1

case $RELEASE in bookworm | trixie) ;; *) echo "rootfs.sh: unknown release $RELEASE" >&2; exit 2 ;; esac

case $KIND in
  build)
    PACKAGES=(nodejs npm node-gyp libnode-dev g++ make python3 libsystemd-dev ca-certificates lintian man-db) ;;
  system | ansible)
    PACKAGES=(systemd systemd-sysv dbus nodejs libvirt-daemon-system libvirt-clients libvirt-dbus
      nftables dnsmasq-base iproute2 procps)
    [[ $KIND == system ]] || PACKAGES+=(ansible-core python3-apt) ;;
  *) echo "rootfs.sh: unknown kind $KIND" >&2; exit 2 ;;
esac

log() { echo "rootfs.sh[$RELEASE/$KIND]: $*" >&2; }

# Runs a command chrooted into ROOT in a private mount namespace (proc, sys,
# dev, resolv.conf), with a clean environment. Nothing stays mounted after.
in_root() {
  local root=$1
  shift
  unshare --mount --propagation private --fork -- /bin/bash -c '
    set -e
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/tmp"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive "$@"' in_root "$root" "$@"
}
if [[ ${KVMNFTD_ROOTFS_LIB:-} == 1 ]]; then return 0 2>/dev/null || exit 0; fi

HASH=$(echo "$FORMAT $RELEASE $KIND $MIRROR ${PACKAGES[*]}" | sha256sum | cut -c1-12)
DIR="$ROOTS/$RELEASE/$KIND-$HASH"
mkdir -p "$ROOTS/$RELEASE"

exec 9>"$ROOTS/$RELEASE/.$KIND.lock"
flock 9
if [[ -f $DIR/.kvmnftd-root-ok ]]; then
  echo "$DIR"
  exit 0
fi

t0=$EPOCHREALTIME
TMP="$ROOTS/$RELEASE/.tmp-$KIND-$HASH"
rm -rf "$TMP"
INSTALL=("${PACKAGES[@]}")
if [[ $KIND == ansible ]]; then
  # The system root plus two packages: a copy of it (built first if need be),
  # not a second debootstrap and libvirt install (minutes on a cold cache).
  base=$(bash "${BASH_SOURCE[0]}" "$RELEASE" system)
  log "building $DIR (cold): a copy of $base"
  cp -a --reflink=auto "$base" "$TMP"
  rm -f "$TMP/.kvmnftd-root-ok" "$TMP/.kvmnftd-packages"
  INSTALL=(ansible-core python3-apt)
else
  log "building $DIR (cold): debootstrap minbase"
  debootstrap --variant=minbase "$RELEASE" "$TMP" "$MIRROR" >"$ROOTS/$RELEASE/.$KIND-debootstrap.log" 2>&1 ||
    { tail -n 30 "$ROOTS/$RELEASE/.$KIND-debootstrap.log" >&2; rm -rf "$TMP"; exit 1; }
fi
cp /etc/resolv.conf "$TMP/etc/resolv.conf" 2>/dev/null || true
# No service may start while packages are installed into the root.
printf '#!/bin/sh\nexit 101\n' >"$TMP/usr/sbin/policy-rc.d"
chmod 755 "$TMP/usr/sbin/policy-rc.d"
log "apt-get install ${INSTALL[*]}"
if ! in_root "$TMP" /bin/sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends ${INSTALL[*]} && apt-get clean" \
  >"$ROOTS/$RELEASE/.$KIND-apt.log" 2>&1; then
  tail -n 40 "$ROOTS/$RELEASE/.$KIND-apt.log" >&2
  rm -rf "$TMP"
  exit 1
fi
rm -f "$TMP/usr/sbin/policy-rc.d"
in_root "$TMP" /bin/sh -c 'dpkg-query -W -f "\${Package} \${Version}\n"' >"$TMP/.kvmnftd-packages"
touch "$TMP/.kvmnftd-root-ok"
# Older roots of this kind (other hashes) are stale.
for old in "$ROOTS/$RELEASE/$KIND"-*; do
  [[ -d $old && $old != "$DIR" ]] && rm -rf "$old"
done
mv "$TMP" "$DIR"
log "built in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s ($(du -sh "$DIR" | cut -f1))"
echo "$DIR"
