#!/usr/bin/env bash
# install-layer.sh ROOT LAYER DEB ADMIN_RULESET [SETUP_DIR]  -- installs kvmnftd into an
# overlay layer over a cached system root, before the container boots (a
# booted --volatile=overlay container forgets what it installs, and has no
# network). Configures what a user's host has:
#   - the .deb, installed with dpkg (its dependencies must already be there);
#     DEB `-` installs none (test/system/ansible.test.ts: the role installs it)
#   - /etc/nftables.conf = the admin's drop-policy ruleset, nftables.service enabled
#   - the default libvirt network (autostart) with stp='off'
#   - then, when SETUP_DIR is given, its setup.sh, run in the root with
#     SETUP_DIR's files in /tmp/setup (e.g. test/system/modular-setup.sh)
# Runs in a private mount namespace; LAYER keeps the result.
set -euo pipefail
ROOT=$1 LAYER=$2 DEB=$3 ADMIN=$4 SETUP=${5:-}

if [[ ${KVMNFTD_LAYER_INNER:-} != 1 ]]; then
  exec env KVMNFTD_LAYER_INNER=1 unshare --mount --propagation private --fork -- "$0" "$@"
fi

WORK=$(mktemp -d /var/tmp/kvmnftd-layer.XXXXXX)
trap 'umount -R "$WORK/merged" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/merged" "$WORK/ovl" "$LAYER"
M=$WORK/merged
mount -t overlay kvmnftd-layer -o "lowerdir=$ROOT,upperdir=$LAYER,workdir=$WORK/ovl" "$M"
mount -t proc proc "$M/proc"
mount -t sysfs sysfs "$M/sys"
mount --rbind /dev "$M/dev"
mount -t tmpfs tmpfs "$M/tmp"
[[ $DEB == - ]] || cp "$DEB" "$M/tmp/kvmnftd.deb"
cp "$ADMIN" "$M/tmp/admin.nft"
[[ -z $SETUP ]] || cp -r "$SETUP" "$M/tmp/setup"

inroot() { chroot "$M" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

inroot /bin/sh -ec '
  [ ! -f /tmp/kvmnftd.deb ] || dpkg -i /tmp/kvmnftd.deb
  install -m 755 /tmp/admin.nft /etc/nftables.conf
  systemctl enable nftables.service
  net=/etc/libvirt/qemu/networks
  if [ ! -f $net/default.xml ]; then
    mkdir -p $net/autostart
    cp /usr/share/libvirt/networks/default.xml $net/default.xml
  fi
  ln -sf ../default.xml $net/autostart/default.xml
  sed -i "s/stp=.on./stp='"'"'off'"'"'/" $net/default.xml
  grep -q "stp=.off." $net/default.xml || sed -i "s|<bridge name=.virbr0.|& stp='"'"'off'"'"'|" $net/default.xml
  echo "--- default network:"; cat $net/default.xml
  if [ -f /tmp/kvmnftd.deb ]; then
    echo "--- kvmnftd.service enabled: $(systemctl is-enabled kvmnftd.service)"
    echo "--- kvmnftd --version: $(kvmnftd --version)"
  fi
'
[[ -z $SETUP ]] || inroot /bin/sh -ec 'cd /tmp/setup && sh ./setup.sh'
