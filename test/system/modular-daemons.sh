#!/usr/bin/env bash
# modular-daemons.sh SYSTEM_ROOT  ->  prints the path of a cached folder that
# holds libvirt's modular daemons virtqemud and virtnetworkd for that Debian
# root, laid out as they install (usr/sbin, usr/lib/systemd/system, etc/libvirt).
#
# Why a build: Debian (12, 13 and sid alike) builds the modular daemons but
# does not ship them (debian/not-installed lists virtqemud, virtnetworkd and
# their units); Fedora, RHEL and openSUSE run them instead of libvirtd. To test
# kvmnftd against them on Debian 13, this compiles exactly those two daemons
# from Debian's own libvirt source package, the version installed in
# SYSTEM_ROOT, with Debian's patches. Only the daemon executables and their
# units/configs are kept: at run time they use the root's own libvirt.so.0
# (same version, LIBVIRT_PRIVATE_x.y.z symbols) and Debian's driver modules
# (connection-driver/libvirt_driver_{qemu,network}.so, built by Debian with
# firewalld support, i.e. with the FirewallD1.Reloaded listener).
#
# The build runs on a throwaway overlay over SYSTEM_ROOT (chroot in a private
# mount namespace; build dependencies and sources are fetched from Debian);
# nothing of it stays but the result. Cached in $KVMNFTD_MODULAR_CACHE
# (default /var/cache/kvmnftd-test/modular-daemons)/HASH, HASH covering the
# libvirt version and this script; a flock makes concurrent callers build it
# once. Cold: ~10 min on 2 busy cores (~1.5 min of CPU). Needs root.
set -euo pipefail
SYSROOT=${1:?usage: modular-daemons.sh SYSTEM_ROOT}

if [[ ${KVMNFTD_MODULAR_INNER:-} == 1 ]]; then
  # Inner part, chrooted into the overlay: $1 = Debian version of libvirt.
  VERSION=$2
  UPSTREAM=${VERSION%%-*}
  echo "deb-src http://deb.debian.org/debian trixie main" >/etc/apt/sources.list.d/kvmnftd-src.list
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  apt-get update -q
  apt-get install -y -q --no-install-recommends dpkg-dev meson ninja-build gcc pkg-config libglib2.0-dev \
    libxml2-dev libgnutls28-dev libnl-3-dev libnl-route-3-dev libtirpc-dev libjson-c-dev python3-docutils \
    xsltproc libxml2-utils xz-utils patch gettext
  mkdir -p /src
  cd /src
  # --download-only: the mirror may lack the upstream signature (.asc), which
  # makes dpkg-source -x fail; unpack and patch by hand instead.
  apt-get source -q --download-only "libvirt=$VERSION" || true
  ls "libvirt_$UPSTREAM.orig.tar.xz" "libvirt_$VERSION.debian.tar.xz" >/dev/null
  tar xf "libvirt_$UPSTREAM.orig.tar.xz"
  cd "libvirt-$UPSTREAM"
  tar xf "../libvirt_$VERSION.debian.tar.xz"
  grep -v '^#' debian/patches/series | while read -r p _; do
    [[ -z $p ]] || patch -s -p1 <"debian/patches/$p"
  done
  # Debian's own choices where they matter to the daemons (debian/rules). polkit
  # above all: with it the sockets are 0666 and polkit lets libvirt-dbus (user
  # libvirtdbus) in; without it they are 0600 and libvirt-dbus is refused.
  meson setup b --prefix=/usr --libdir=lib/x86_64-linux-gnu --sysconfdir=/etc --localstatedir=/var \
    --buildtype=plain --auto-features=disabled -Dsystem=true -Dinit_script=systemd -Ddriver_remote=enabled \
    -Ddriver_libvirtd=enabled -Ddriver_qemu=enabled -Ddriver_network=enabled -Djson_c=enabled -Dlibnl=enabled \
    -Dfirewalld=enabled -Dpolkit=enabled -Dfirewall_backend_priority=iptables,nftables -Ddocs=disabled \
    -Dtests=disabled -Dnls=disabled
  ninja -C b src/virtqemud src/virtnetworkd
  out=/out
  mkdir -p "$out/usr/sbin" "$out/usr/lib/systemd/system" "$out/etc/libvirt"
  for d in virtqemud virtnetworkd; do
    install -m 755 "b/src/$d" "$out/usr/sbin/$d"
    install -m 644 "b/src/$d.conf" "$out/etc/libvirt/$d.conf"
    for u in "$d.service" "$d.socket" "$d-ro.socket" "$d-admin.socket"; do
      install -m 644 "b/src/$u" "$out/usr/lib/systemd/system/$u"
    done
  done
  exit 0
fi

[[ $(id -u) -eq 0 ]] || { echo "modular-daemons.sh: must run as root" >&2; exit 1; }
VERSION=$(awk '$1 == "libvirt-daemon" { print $2 }' "$SYSROOT/.kvmnftd-packages")
[[ -n $VERSION ]] || { echo "modular-daemons.sh: no libvirt-daemon in $SYSROOT/.kvmnftd-packages" >&2; exit 1; }
CACHE=${KVMNFTD_MODULAR_CACHE:-/var/cache/kvmnftd-test/modular-daemons}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$( { echo "$VERSION"; cat "$SELF"; } | sha256sum | cut -c1-12)
DIR=$CACHE/$HASH
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [[ -f $DIR/.kvmnftd-modular-ok ]]; then
  echo "$DIR"
  exit 0
fi

t0=$EPOCHREALTIME
WORK=$(mktemp -d /var/tmp/kvmnftd-modular-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo "modular-daemons.sh: building virtqemud and virtnetworkd from libvirt $VERSION (cold)" >&2
mkdir -p "$WORK/up" "$WORK/ovl" "$WORK/m" "$WORK/out"
if ! unshare --mount --propagation private --fork -- /bin/bash -c '
  set -e
  W=$1 ROOT=$2 SELF=$3 VERSION=$4
  mount -t overlay kvmnftd-modular -o "lowerdir=$ROOT,upperdir=$W/up,workdir=$W/ovl" "$W/m"
  mount -t proc proc "$W/m/proc"
  mount -t sysfs sysfs "$W/m/sys"
  mount --rbind /dev "$W/m/dev"
  mount -t tmpfs tmpfs "$W/m/tmp"
  mkdir -p "$W/m/out"
  mount --bind "$W/out" "$W/m/out"
  cp /etc/resolv.conf "$W/m/etc/resolv.conf"
  cp "$SELF" "$W/m/tmp/modular-daemons.sh"
  exec chroot "$W/m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive KVMNFTD_MODULAR_INNER=1 /bin/bash /tmp/modular-daemons.sh / "$VERSION"
' inner "$WORK" "$SYSROOT" "$SELF" "$VERSION" >"$WORK/build.log" 2>&1; then
  tail -n 40 "$WORK/build.log" >&2
  exit 1
fi
rm -rf "$DIR.tmp"
cp -a "$WORK/out" "$DIR.tmp"
echo "$VERSION" >"$DIR.tmp/.kvmnftd-modular-ok"
# Older builds (another version or script) are stale.
for old in "$CACHE"/*; do
  [[ -d $old && $old != "$DIR.tmp" && $old != "$DIR" ]] && rm -rf "$old"
done
mv "$DIR.tmp" "$DIR"
echo "modular-daemons.sh: built in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s" >&2
echo "$DIR"
