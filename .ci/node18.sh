#!/usr/bin/env bash
# Run the built CLI with Debian 12's own nodejs 18 (bookworm main), without
# installing it: the .debs are downloaded with `apt-get download`, unpacked with
# `dpkg -x` into a temporary root and run from there. The machine's own node
# (e.g. NodeSource 20 at /usr/bin/node) is never replaced.
#
# Debian's node 18 loads some builtins (acorn, cjs-module-lexer, undici) from
# absolute paths under /usr/share/nodejs, so the CLI runs in a private mount
# namespace where the unpacked /usr/share is overlaid on the real one.
#
# Checks, in a throwaway network namespace with the admin test ruleset:
#   the daemon's V8 flags                             -> accepted by this node
#   plan --json --from-xml test/fixtures/default.xml  -> exit 0, non-empty, valid for `nft -c -j -f`
#   apply --from-xml ...                              -> exit 0, table inet kvmnftd present
#   status --json / plan --diff / doctor --json        -> 0 / empty / 0 or 3, valid reports
#   remove                                            -> exit 0, ruleset back to the admin's
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/.ci/node18.sh"
CLI="$REPO/dist/cli/main.js"
XML="$REPO/test/fixtures/default.xml"
ADMIN="$REPO/test/fixtures/admin-ruleset.nft"

die() {
  echo "node18: FAIL: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------
# Inner part: runs inside `unshare --mount` (private mount namespace).
#   node18.sh __inner ROOT WORK NETNS
if [[ ${1:-} == __inner ]]; then
  ROOT=$2 WORK=$3 NS=$4
  if ! mount -t overlay kvmnftd-node18 -o "lowerdir=$ROOT/usr/share:/usr/share" /usr/share 2>"$WORK/overlay.err"; then
    echo "node18: overlay mount failed ($(cat "$WORK/overlay.err")); bind-mounting /usr/share/nodejs instead"
    [[ -d /usr/share/nodejs ]] || die "/usr/share/nodejs missing and overlay unavailable"
    mount --bind "$ROOT/usr/share/nodejs" /usr/share/nodejs
  fi

  NODE="$ROOT/usr/bin/node"
  LIBDIRS=$(find "$ROOT" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
  export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  unset NODE_EXTRA_CA_CERTS NODE_OPTIONS
  export KVMNFTD_RUNTIME_DIR="$WORK/run"
  mkdir -p "$KVMNFTD_RUNTIME_DIR"
  : >"$WORK/config.toml"

  version=$("$NODE" --version) || die "the unpacked node does not start"
  echo "node18: using Debian's node $version ($NODE)"
  [[ $version == v18.* ]] || die "expected a v18 node, got $version"

  in_ns() { ip netns exec "$NS" "$@"; }
  cli() { in_ns "$NODE" "$CLI" "$@" --config "$WORK/config.toml"; }

  # The daemon's V8 flags (src/daemon/v8-flags.ts, set at run time): each must be one this node knows,
  # which it proves by starting with them on its command line (an unknown flag exits 9).
  flags=$("$NODE" --input-type=module -e "import { DAEMON_V8_FLAGS } from '$REPO/dist/daemon/v8-flags.js'; console.log(DAEMON_V8_FLAGS.join(' '))") ||
    die "cannot read the daemon's V8 flags from dist/daemon/v8-flags.js"
  [[ -n $flags ]] || die "the daemon's V8 flag list is empty"
  # shellcheck disable=SC2086 # one word per flag
  "$NODE" $flags -e 0 || die "node $version refuses the daemon's V8 flags: $flags"
  echo "node18: daemon V8 flags accepted ($flags)"
  # heapTrimmer turns on --expose-gc at run time and takes gc from a new context: this node must give it.
  "$NODE" --input-type=module -e "import { setFlagsFromString } from 'node:v8'; import { runInNewContext } from 'node:vm'; setFlagsFromString('--expose-gc'); const gc = runInNewContext('gc'); if (typeof gc !== 'function') process.exit(1); gc();" ||
    die "node $version gives no gc() after --expose-gc at run time (src/daemon/v8-flags.ts heapTrimmer)"
  echo "node18: gc() available at run time"

  in_ns nft list ruleset >"$WORK/admin.before"

  # plan --json
  rc=0
  cli plan --json --from-xml "$XML" >"$WORK/plan.json" 2>"$WORK/plan.err" || rc=$?
  if ((rc != 0)); then
    cat "$WORK/plan.err" >&2
    die "plan --json exited $rc (expected 0)"
  fi
  count=$("$NODE" -e '
    const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (!b || !Array.isArray(b.nftables)) { console.error("no nftables array"); process.exit(1); }
    console.log(b.nftables.length);' "$WORK/plan.json") || die "plan --json did not print {\"nftables\":[...]}: $(head -c 400 "$WORK/plan.json")"
  ((count > 0)) || die "plan --json printed an empty batch for the default network"
  in_ns nft -c -j -f "$WORK/plan.json" || die "nft -c rejects the JSON plan"
  echo "node18: plan --json ok ($count commands, accepted by nft -c)"

  # apply
  rc=0
  cli apply --from-xml "$XML" >"$WORK/apply.out" 2>&1 || rc=$?
  if ((rc != 0)); then
    cat "$WORK/apply.out" >&2
    die "apply exited $rc (expected 0)"
  fi
  in_ns nft list table inet kvmnftd >/dev/null || die "apply did not create table inet kvmnftd"
  in_ns nft list chain inet filter input | grep -q 'jump kvmnftd_input' || die "apply did not add the input jump"
  echo "node18: apply ok"

  # status / plan --diff / doctor (read-only operator commands)
  rc=0
  cli status --json --from-xml "$XML" >"$WORK/status.json" 2>"$WORK/status.err" || rc=$?
  ((rc == 0)) || { cat "$WORK/status.json" "$WORK/status.err" >&2; die "status exited $rc after apply (expected 0)"; }
  "$NODE" -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); if (r.schema !== "kvmnftd.status/1" || r.ok !== true) process.exit(1);' "$WORK/status.json" ||
    die "status --json is not an ok kvmnftd.status/1 report: $(head -c 400 "$WORK/status.json")"
  diff=$(cli plan --diff --from-xml "$XML" 2>"$WORK/diff.err") || die "plan --diff failed: $(cat "$WORK/diff.err")"
  [[ -z $diff ]] || die "plan --diff after apply is not empty: $diff"
  rc=0
  cli doctor --json --from-xml "$XML" >"$WORK/doctor.json" 2>"$WORK/doctor.err" || rc=$?
  ((rc == 0 || rc == 3)) || { cat "$WORK/doctor.err" >&2; die "doctor exited $rc (expected 0 or 3)"; }
  "$NODE" -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); if (r.schema !== "kvmnftd.doctor/1" || !Array.isArray(r.findings)) process.exit(1);' "$WORK/doctor.json" ||
    die "doctor --json is not a kvmnftd.doctor/1 report: $(head -c 400 "$WORK/doctor.json")"
  echo "node18: status, plan --diff, doctor ok"

  # remove
  rc=0
  cli remove >"$WORK/remove.out" 2>&1 || rc=$?
  if ((rc != 0)); then
    cat "$WORK/remove.out" >&2
    die "remove exited $rc (expected 0)"
  fi
  in_ns nft list ruleset >"$WORK/admin.after"
  diff -u "$WORK/admin.before" "$WORK/admin.after" || die "remove did not restore the admin ruleset"
  echo "node18: remove ok"
  echo "node18: PASS with node $version"
  exit 0
fi

# ---------------------------------------------------------------------------
# Outer part.
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, mount namespace, nft)"
for bin in apt-get apt-cache dpkg dpkg-query unshare ip nft; do
  command -v "$bin" >/dev/null || die "$bin is not installed"
done

echo "node18: machine node: $(command -v node 2>/dev/null || echo none) $(node --version 2>/dev/null || true)"

if [[ ! -f $CLI ]]; then
  echo "node18: $CLI missing, building"
  (cd "$REPO" && npm run build)
fi

WORK=$(mktemp -d /tmp/kvmnftd-node18.XXXXXX)
NS="kvn18-$$"
cleanup() {
  ip netns delete "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Debian 12's nodejs 18 from bookworm main/security (the candidate may be another
# install, e.g. NodeSource 20, so the version is picked explicitly).
NODE_VER=$(apt-cache madison nodejs | awk -F'|' '{ gsub(/ /, "", $2) } $2 ~ /^18\./ { print $2; exit }')
[[ -n $NODE_VER ]] || die "no nodejs 18.x in the apt sources (is bookworm main configured and apt-get update done?)"
echo "node18: Debian nodejs version $NODE_VER"

# nodejs depends on libnode108 (= same version); fetch that and every dependency of
# libnode that is not installed here (e.g. libc-ares2, node-acorn, node-cjs-module-lexer,
# node-undici: builtins that Debian's node loads from /usr/share/nodejs).
LIBNODE=$(apt-cache show "nodejs=$NODE_VER" | sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' |
  sed -n 's/^ *\(libnode[0-9]*\) .*/\1/p' | head -1)
[[ -n $LIBNODE ]] || die "cannot find the libnode package that nodejs $NODE_VER depends on"
PKGS=("nodejs=$NODE_VER" "$LIBNODE=$NODE_VER")
while read -r dep; do
  [[ -n $dep ]] || continue
  if [[ $(dpkg-query -W -f='${db:Status-Status}' "$dep" 2>/dev/null || true) != installed ]]; then
    PKGS+=("$dep")
  fi
done < <(apt-cache show "$LIBNODE=$NODE_VER" | sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' |
  sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/ //g')

mkdir -p "$WORK/debs" "$WORK/root"
echo "node18: apt-get download ${PKGS[*]}"
(cd "$WORK/debs" && apt-get download -q -o APT::Sandbox::User=root "${PKGS[@]}")
for deb in "$WORK"/debs/*.deb; do
  dpkg -x "$deb" "$WORK/root"
done
[[ -x $WORK/root/usr/bin/node ]] || die "the nodejs package has no usr/bin/node"

# A throwaway network namespace with the admin ruleset (created before the
# mount namespace so that /run/netns/$NS is visible inside it).
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add virbr0 type bridge stp_state 0 forward_delay 0
ip -n "$NS" addr add 192.168.122.1/24 dev virbr0
ip -n "$NS" link set virbr0 up
ip netns exec "$NS" nft -f "$ADMIN"

unshare --mount --propagation private -- "$SELF" __inner "$WORK/root" "$WORK" "$NS"
