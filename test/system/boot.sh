#!/usr/bin/env bash
# boot.sh ROOT LAYER WORK NAME  -- boots a cached Debian root plus an install
# layer with systemd-nspawn (systemd as PID 1, private network), for
# test/system. Runs until the container powers off or this script gets
# SIGTERM (forwarded to nspawn: a clean shutdown of the container).
#
#   ROOT   the cached root (read-only lower layer)
#   LAYER  upper layer holding what was installed before boot (kept as is:
#          --volatile=overlay puts the boot's own changes on a tmpfs)
#   WORK   scratch folder: nspawn.pid is written here
#   NAME   machine name (the container's hostname)
#
# Without systemd on the host, nspawn --keep-unit creates its payload/ and
# supervisor/ cgroups under the caller's cgroup: this script moves itself into
# a cgroup of its own first (in the unified and the name=systemd hierarchy) and
# removes it afterwards. The overlay of ROOT+LAYER lives in a private mount
# namespace and disappears with it.
set -euo pipefail
ROOT=$1 LAYER=$2 WORK=$3 NAME=$4

if [[ ${5:-} != __inner ]]; then
  CG=kvmnftd-system-$NAME-$$
  declare -A ORIG
  for h in unified systemd; do
    base=/sys/fs/cgroup/$h
    [[ -d $base ]] || continue
    if [[ $h == unified ]]; then ORIG[$h]=$(sed -n 's/^0:://p' /proc/self/cgroup)
    else ORIG[$h]=$(sed -n 's/^[0-9]*:name=systemd://p' /proc/self/cgroup); fi
    mkdir -p "$base${ORIG[$h]%/}/$CG"
    echo $$ >"$base${ORIG[$h]%/}/$CG/cgroup.procs"
  done
  rc=0
  trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
  unshare --mount --propagation private -- "$0" "$ROOT" "$LAYER" "$WORK" "$NAME" __inner &
  child=$!
  wait "$child" || rc=$?
  # After a signal, wait returns early: wait for the child for real.
  while kill -0 "$child" 2>/dev/null; do wait "$child" || rc=$?; done
  for h in "${!ORIG[@]}"; do
    base=/sys/fs/cgroup/$h
    echo $$ >"$base${ORIG[$h]%/}/cgroup.procs" || true
    find "$base${ORIG[$h]%/}/$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ ! -d $base${ORIG[$h]%/}/$CG ]] || echo "boot.sh: cgroup $base${ORIG[$h]%/}/$CG is still there" >&2
  done
  exit "$rc"
fi

# Inner part: private mount namespace.
MERGED=$WORK/merged
mkdir -p "$MERGED" "$WORK/ovl-work"
mount -t overlay "kvmnftd-$NAME" -o "lowerdir=$ROOT,upperdir=$LAYER,workdir=$WORK/ovl-work" "$MERGED"
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
trap 'kill -TERM "$nspawn" 2>/dev/null || true' TERM INT
systemd-nspawn -q -D "$MERGED" --machine="$NAME" --volatile=overlay -b --register=no --keep-unit \
  --private-network --console=passive </dev/null &
nspawn=$!
echo "$nspawn" >"$WORK/nspawn.pid"
rc=0
wait "$nspawn" || rc=$?
while kill -0 "$nspawn" 2>/dev/null; do wait "$nspawn" || rc=$?; done
umount "$MERGED" || true
exit "$rc"
