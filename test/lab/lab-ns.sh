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
# Optional (environment, set by lab.ts):
#   LAB_ROOT              a test root (e.g. Debian 13, test/lab/trixie-root.sh):
#                         every lab process runs chrooted into a tmpfs overlay
#                         of it; the root itself is never written to.
#   LAB_BIND              colon-separated host directories to bind into the
#                         root at the same path (the repository, the tests'
#                         temporary directory).
#   LAB_FIREWALL_BACKEND  nftables | iptables: firewall_backend in libvirt's
#                         network.conf (libvirt >= 10.4 only).
#   LAB_TC_WRAPPER        with LAB_ROOT: a script put in place of the root's
#                         /usr/sbin/tc (the real one becomes tc.lab-real).
LAB_ROOT=${LAB_ROOT:-}
LAB_FIREWALL_BACKEND=${LAB_FIREWALL_BACKEND:-}

# The lab's libvirt configuration below root $1 ("" = this namespace's /):
# no network definitions of the machine, no polkit (auth none), libvirt-dbus
# (user libvirtdbus) may use the read-write socket, a log file the lab can
# show on errors, and the requested firewall backend.
configure_libvirt() {
  local r=$1
  rm -f "$r"/etc/libvirt/qemu/networks/*.xml "$r"/etc/libvirt/qemu/networks/autostart/*
  cat >>"$r/etc/libvirt/libvirtd.conf" <<CONF

# --- kvmnftd lab ---
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "libvirtdbus"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
log_filters = "1:network 1:util.firewall 1:util.command 3:*"
log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
CONF
  if [[ -n $LAB_FIREWALL_BACKEND ]]; then
    printf '\n# --- kvmnftd lab ---\nfirewall_backend = "%s"\n' "$LAB_FIREWALL_BACKEND" >>"$r/etc/libvirt/network.conf"
  fi
}

# Nothing mounted below may propagate back to the real machine.
mount --make-rprivate /

if [[ -n $LAB_ROOT ]]; then
  [[ -x $LAB_ROOT/usr/sbin/libvirtd ]] || { echo "lab-ns: $LAB_ROOT is not a test root with libvirtd" >&2; exit 1; }
  # A private /run of the lab (host view) holds the overlay's upper layer.
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
  mkdir -p /run/lab-root/upper /run/lab-root/work /run/lab-root/merged
  R=/run/lab-root/merged
  mount -t overlay kvmnftd-lab -o "lowerdir=$LAB_ROOT,upperdir=/run/lab-root/upper,workdir=/run/lab-root/work" "$R"
  mount -t proc proc "$R/proc"
  # sysfs of the lab's network namespace (libvirt writes bridge settings there)
  mount -t sysfs -o nosuid,nodev,noexec sysfs "$R/sys"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
  mkdir -p "$R/run/lock" "$R/run/dbus" "$R/run/libvirt" "$R/run/user"
  chmod 1777 "$R/run/lock"
  IFS=: read -r -a binds <<<"${LAB_BIND:-}"
  for d in "${binds[@]}"; do
    [[ -n $d && -d $d ]] || continue
    mkdir -p "$R$d"
    mount --rbind "$d" "$R$d"
  done
  configure_libvirt "$R"
  if [[ -n ${LAB_TC_WRAPPER:-} ]]; then
    mv "$R/usr/sbin/tc" "$R/usr/sbin/tc.lab-real"
    install -m 0755 "$LAB_TC_WRAPPER" "$R/usr/sbin/tc"
  fi
  install -m 0644 "$LAB_DIR/system-bus.conf" "$R/run/dbus/lab-system-bus.conf"
  install -m 0755 "$LAB_DIR/udhcpc.script" "$R/run/lab-udhcpc.script"
  ip link set lo up
  cd "$R"
  # From here on this process (the namespace holder, whose PID lab.ts enters
  # with nsenter -r -w) has the overlay as its root and / as its directory.
  exec chroot "$R" /bin/sh -c 'cd / && echo "READY $$" && exec cat >/dev/null'
fi

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

configure_libvirt ""

# The system bus configuration of the lab.
install -m 0644 "$LAB_DIR/system-bus.conf" /run/dbus/lab-system-bus.conf
# udhcpc script, executable, inside the lab.
install -m 0755 "$LAB_DIR/udhcpc.script" /run/lab-udhcpc.script

ip link set lo up

echo "READY $$"
# Hold the namespaces until stdin closes.
exec cat >/dev/null
