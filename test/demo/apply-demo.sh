#!/usr/bin/env bash
# A guided demo of the core on a machine without libvirt: three network
# namespaces play the host (with the article's drop-policy ruleset), a guest
# on virbr0 and the outside world. The guest is cut off until
# `kvmnftd apply --from-xml default.xml`, then it reaches the outside,
# masqueraded. Everything happens in namespaces this script creates and
# deletes again; the machine's own network is never touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) -eq 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
[[ -x dist/cli/main.js ]] || npm run build >/dev/null

tag="kvd-$$"
host="$tag-host" wan="$tag-wan" guest="$tag-guest"
run=$(mktemp -d)
export KVMNFTD_RUNTIME_DIR="$run/run" KVMNFTD_LOG_FORMAT=text
listener=""
cleanup() {
  [[ -n $listener ]] && kill "$listener" 2>/dev/null || true
  for ns in "$guest" "$wan" "$host"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
kvmnftd() { ip netns exec "$host" node dist/cli/main.js "$@"; }
probe() { # probe -> prints what the wan listener saw, or "blocked"
  if out=$(ip netns exec "$guest" timeout 3 socat -T2 - TCP:192.0.2.2:8080,connect-timeout=2 </dev/null 2>/dev/null) && [[ -n $out ]]; then
    echo "connected; the outside world saw the guest as ${out}"
  else
    echo "blocked"
  fi
}

say "building host, wan and guest namespaces"
for ns in "$host" "$wan" "$guest"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "$tag-e0" netns "$host" type veth peer name eth0 netns "$wan"
ip -n "$host" link set "$tag-e0" name eth0
ip -n "$host" addr add 192.0.2.1/24 dev eth0 && ip -n "$host" link set eth0 up
ip -n "$wan" addr add 192.0.2.2/24 dev eth0 && ip -n "$wan" link set eth0 up
ip -n "$host" route add default via 192.0.2.2
ip -n "$host" link add virbr0 type bridge stp_state 0 forward_delay 0
ip -n "$host" addr add 192.168.122.1/24 dev virbr0 && ip -n "$host" link set virbr0 up
ip link add "$tag-g" netns "$host" type veth peer name eth0 netns "$guest"
ip -n "$host" link set "$tag-g" master virbr0 up
ip -n "$guest" addr add 192.168.122.50/24 dev eth0 && ip -n "$guest" link set eth0 up
ip -n "$guest" route add default via 192.168.122.1
ip netns exec "$wan" socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:'echo $SOCAT_PEERADDR' &
listener=$!

say "the admin's ruleset (policy drop), loaded as nftables.service would"
ip netns exec "$host" nft -f test/fixtures/admin-ruleset.nft
ip netns exec "$host" nft list ruleset
sleep 0.3
echo; echo "guest -> 192.0.2.2:8080: $(probe)"

say "kvmnftd plan --from-xml test/fixtures/default.xml"
kvmnftd plan --from-xml test/fixtures/default.xml

say "kvmnftd apply --from-xml test/fixtures/default.xml"
kvmnftd apply --from-xml test/fixtures/default.xml --log-level info 2>&1
echo "guest -> 192.0.2.2:8080: $(probe)"
echo; ip netns exec "$host" nft list table inet kvmnftd

say "applying again changes nothing"
kvmnftd apply --from-xml test/fixtures/default.xml 2>&1

say "kvmnftd remove: the admin's ruleset is back as it was"
kvmnftd remove 2>&1
echo "guest -> 192.0.2.2:8080: $(probe)"
say "done; namespaces removed"
