#!/bin/sh
# /init of the kvmnftd test guest (initramfs built by test/lab/vm.ts: a static
# busybox, this script, test/lab/udhcpc.script and the NIC's kernel modules).
#
# Kernel command line (set by vm.ts's domain XML):
#   kvmnftd.probe=HOST:PORT   TCP target to probe after DHCP (default 192.0.2.2:8080)
#   kvmnftd.dhcp_tries=N      udhcpc discover attempts, 1 s apart (default 15)
#   kvmnftd.serve=PORT        after the probe, stay up and serve TCP on PORT instead of powering off:
#                             each connection is answered "hello-guest" and logged (KVMNFTD-CONN)
#   (kvmnftd.probe=none skips the probe)
#
# Markers on the serial console (one line each, parsed by vm.ts):
#   KVMNFTD-BOOT uptime=S                   /init started
#   KVMNFTD-INSMOD-FAIL <module> <msg>      a module did not load
#   KVMNFTD-NIC eth0 mac=M | KVMNFTD-NIC none
#   KVMNFTD-LEASE <ip> uptime=S | KVMNFTD-LEASE none uptime=S
#   KVMNFTD-PROBE ok <host:port> uptime=S | KVMNFTD-PROBE fail <host:port> <reason>
#   KVMNFTD-SERVE <port> uptime=S           serving (kvmnftd.serve): the domain stays up
#   KVMNFTD-CONN <peer-ip> <port>           one served connection, from that peer address
#   KVMNFTD-DONE uptime=S                   just before poweroff -f
# If anything here dies, the kernel panics (init exited) and, with panic=-1 and
# <on_reboot>destroy</on_reboot>, the domain goes away anyway.

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "$*"; }

say "KVMNFTD-BOOT uptime=$(up)"

PROBE=192.0.2.2:8080
TRIES=15
SERVE=
for w in $(cat /proc/cmdline); do
  case "$w" in
    kvmnftd.probe=*) PROBE=${w#*=} ;;
    kvmnftd.dhcp_tries=*) TRIES=${w#*=} ;;
    kvmnftd.serve=*) SERVE=${w#*=} ;;
  esac
done

# NIC driver and its dependencies, in dependency order (vm.ts writes the order).
if [ -f /lib/modules/order ]; then
  while read -r m; do
    [ -n "$m" ] || continue
    out=$(insmod "/lib/modules/$m.ko" 2>&1) || say "KVMNFTD-INSMOD-FAIL $m $out"
  done </lib/modules/order
fi

ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ -e /sys/class/net/eth0 ]; then
  say "KVMNFTD-NIC eth0 mac=$(cat /sys/class/net/eth0/address)"
  ip link set eth0 up
  udhcpc -i eth0 -q -n -t "$TRIES" -T 1 -s /udhcpc.script
  ADDR=$(ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p' | head -n 1)
else
  say "KVMNFTD-NIC none"
  ADDR=
fi
say "KVMNFTD-LEASE ${ADDR:-none} uptime=$(up)"

HOST=${PROBE%:*}
PORT=${PROBE##*:}
if [ "$PROBE" = none ]; then
  :
elif [ -z "$ADDR" ]; then
  say "KVMNFTD-PROBE fail $PROBE no-lease"
else
  # The lab's listener answers "hello" and closes the connection.
  reply=$(echo probe | timeout 10 nc -w 5 "$HOST" "$PORT" 2>&1)
  case "$reply" in
    *hello*) say "KVMNFTD-PROBE ok $PROBE uptime=$(up)" ;;
    *) say "KVMNFTD-PROBE fail $PROBE $(echo "$reply" | tr '\n' ' ')" ;;
  esac
fi

if [ -n "$SERVE" ] && [ -n "$ADDR" ]; then
  # busybox nc -ll -e: a persistent server that runs the handler per connection, its stdin/stdout being the
  # connection (Debian's busybox-static has no tcpsvd). The handler finds its peer with netstat (the client may
  # have closed already: CLOSE_WAIT) and logs it on the console (IPv4 as IPv4: nc's socket is dual-stack). Runs until the domain is destroyed.
  cat >/serve.sh <<'EOS'
#!/bin/sh
peer=$(netstat -tn 2>/dev/null | awk -v p=":$SERVE" '$4 ~ p"$" && ($6 == "ESTABLISHED" || $6 == "CLOSE_WAIT") { print $5 }' | head -n 1)
addr=${peer%:*}
echo "KVMNFTD-CONN ${addr#::ffff:} $SERVE" >/dev/console
echo hello-guest
EOS
  sed -i "s/\$SERVE/$SERVE/g" /serve.sh
  chmod 755 /serve.sh
  say "KVMNFTD-SERVE $SERVE uptime=$(up)"
  nc -ll -p "$SERVE" -e /serve.sh
  say "KVMNFTD-SERVE-FAIL nc exited $?"
fi

say "KVMNFTD-DONE uptime=$(up)"
sync
poweroff -f
# poweroff -f does not return; if it does, exiting panics the kernel (panic=-1 reboots, libvirt destroys).
sleep 5
exit 1
