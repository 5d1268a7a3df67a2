#!/usr/bin/env bash
# In-namespace setup of the kvmnftd libvirt lab. Run by lab.ts as
#   unshare --mount --net --fork -- bash lab-ns.sh LAB_DIR
# i.e. already inside a fresh mount + network namespace. It makes every
# directory libvirtd, dbus-daemon and dnsmasq write to private (tmpfs), prints
# "READY <pid>" and then blocks reading stdin: this process holds the
# namespaces; it exits when lab.ts closes its stdin (or kills it), and with it
# the mount namespace goes away once no lab process is left in it.
set -euo pipefail

LAB_DIR=${1:?usage: lab-ns.sh LAB_DIR}

# Nothing mounted below may propagate back to the real machine.
mount --make-rprivate /

# sysfs shows the network namespace of whoever mounts it: remount it so that
# /sys/class/net is the lab's (libvirt writes bridge settings there).
umount -l /sys
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys

# A private /run (also /var/run, a symlink to it). This hides the machine's
# /run/dbus, /run/netns, /run/systemd (libvirt must not think systemd runs).
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/lock /run/dbus /run/libvirt /run/user /run/.lab-stage
chmod 1777 /run/lock

# Private copies of the libvirt directories: tmpfs over each, filled with a
# copy of the machine's content (so ownership/modes are as packaged).
for d in /etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
  [[ -d $d ]] || { echo "lab-ns: $d missing (is libvirt-daemon-system installed?)" >&2; exit 1; }
  stage=/run/.lab-stage${d//\//_}
  mkdir -p "$stage"
  cp -a "$d/." "$stage/"
  mode=$(stat -c %a "$d")
  mount -t tmpfs -o "mode=$mode,nosuid,nodev" tmpfs "$d"
  cp -a "$stage/." "$d/"
  rm -rf "$stage"
done
rmdir /run/.lab-stage

# The lab starts with no network definitions of the machine.
rm -f /etc/libvirt/qemu/networks/*.xml /etc/libvirt/qemu/networks/autostart/*

# libvirtd for the lab: no polkit (auth none), libvirt-dbus (user libvirtdbus)
# may use the read-write socket, log to a file the lab can show on errors.
cat >>/etc/libvirt/libvirtd.conf <<CONF

# --- kvmnftd lab ---
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "libvirtdbus"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
log_filters = "1:network 1:util.firewall 1:util.command 3:*"
log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
CONF

# The system bus configuration of the lab.
install -m 0644 "$LAB_DIR/system-bus.conf" /run/dbus/lab-system-bus.conf
# udhcpc script, executable, inside the lab.
install -m 0755 "$LAB_DIR/udhcpc.script" /run/lab-udhcpc.script

ip link set lo up

echo "READY $$"
# Hold the namespaces until stdin closes.
exec cat >/dev/null
