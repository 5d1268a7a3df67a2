#!/bin/sh
# modular-setup.sh -- run by install-layer.sh (as SETUP_DIR/setup.sh) inside a
# Debian 13 system root, after kvmnftd is installed, with these files in the
# current folder:
#   daemons/          test/system/modular-daemons.sh's build (virtqemud, virtnetworkd)
#   tc-csum-wrapper.sh
#   backend           "nftables" or "iptables": libvirt's firewall backend
#   busybox, udhcpc.script   the test's DHCP client (the host's busybox; test/lab's script)
# It turns the root into a host that runs libvirt's modular daemons, socket-
# activated, with no libvirtd, as Fedora, RHEL and openSUSE do, following
# https://libvirt.org/daemons.html ("Switching to modular daemons").
set -eu
BACKEND=$(cat backend)

cp -a daemons/usr daemons/etc /
# libvirtd and its sockets off for good (mask: nothing may socket-activate or
# pull it in; virtqemud/virtnetworkd declare Conflicts=libvirtd.service).
systemctl disable libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket
systemctl mask libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket
# The service at boot (autostart networks), the sockets for activation.
for drv in qemu network; do
  systemctl enable "virt${drv}d.service" "virt${drv}d.socket" "virt${drv}d-ro.socket" "virt${drv}d-admin.socket"
done

# Debian's libvirt 11 picks iptables whenever the iptables binary exists.
echo "firewall_backend = \"$BACKEND\"" >>/etc/libvirt/network.conf

# The test machine's kernel lacks the tc csum action the nftables backend uses
# (see the wrapper's header); a stock kernel needs none of this.
dpkg-divert --local --rename --divert /usr/sbin/tc.lab-real --add /usr/sbin/tc
install -m 755 tc-csum-wrapper.sh /usr/sbin/tc

# The guest side of the DHCP test (a veth in a netns on virbr0).
install -m 755 busybox /usr/local/bin/busybox
install -D -m 755 udhcpc.script /usr/local/lib/kvmnftd-test/udhcpc.script

echo "--- modular daemons: $(ls /usr/sbin/virtqemud /usr/sbin/virtnetworkd | tr '\n' ' ')"
echo "--- enabled: $(systemctl is-enabled virtqemud.service virtnetworkd.service virtnetworkd.socket | tr '\n' ' ')"
echo "--- libvirtd: $(systemctl is-enabled libvirtd.service libvirtd.socket | tr '\n' ' ')"
echo "--- /etc/libvirt/network.conf: $(grep '^firewall_backend' /etc/libvirt/network.conf)"
