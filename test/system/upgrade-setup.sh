#!/bin/sh
# upgrade-setup.sh -- run by install-layer.sh (as SETUP_DIR/setup.sh) inside a
# system root after kvmnftd 0.1.0 is installed, with these files in the
# current folder:
#   networks/*.xml           more libvirt networks, autostarted like default
#   busybox, udhcpc.script   the guest's DHCP client and ping (the host's
#                            busybox; test/lab's script)
#   kvmnftd-new.deb          the package the test upgrades to (installed later,
#                            in the booted container, as an admin does)
set -eu
net=/etc/libvirt/qemu/networks
for xml in networks/*.xml; do
  install -m 600 "$xml" "$net/"
  ln -sf "../$(basename "$xml")" "$net/autostart/"
done
install -m 755 busybox /usr/local/bin/busybox
install -D -m 755 udhcpc.script /usr/local/lib/kvmnftd-test/udhcpc.script
install -D -m 644 kvmnftd-new.deb /var/lib/kvmnftd-test/kvmnftd-new.deb
# The admin's own setting in the conffile: an upgrade keeps it (dpkg's default
# answer when the packaged file changed too).
sed -i 's/^resync_interval = 60$/resync_interval = 45/' /etc/kvmnftd/kvmnftd.toml
grep -q '^resync_interval = 45$' /etc/kvmnftd/kvmnftd.toml
echo "--- autostarted networks: $(ls "$net/autostart" | tr '\n' ' ')"
