#!/usr/bin/env bash
# released-deb.sh COMMIT RELEASE  ->  prints the path of kvmnftd's .deb for
# RELEASE (bookworm | trixie) as COMMIT (e.g. the released 0.1.0) built it,
# for test/system's upgrade test.
#
# The package is built once with COMMIT's own packaging/deb/build.sh, from
# COMMIT's files (git archive of this repository; no worktree), and cached
# under $KVMNFTD_DEBS (default /var/cache/kvmnftd-test/debs) as
# FULL-COMMIT/RELEASE/, next to its lintian output. Built in a temporary
# folder and renamed when complete, under a flock: concurrent callers build it
# once. Needs what build.sh needs (root, network on a cold cache).
set -euo pipefail

COMMIT=${1:?usage: released-deb.sh COMMIT RELEASE}
RELEASE=${2:?usage: released-deb.sh COMMIT RELEASE}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${KVMNFTD_DEBS:-/var/cache/kvmnftd-test/debs}

full=$(git -C "$REPO" rev-parse --verify --quiet "$COMMIT^{commit}") ||
  { echo "released-deb.sh: no commit $COMMIT in $REPO" >&2; exit 2; }
dir=$CACHE/$full/$RELEASE
mkdir -p "$CACHE/$full"
exec 9>"$CACHE/$full/.$RELEASE.lock"
flock 9
if [[ ! -f $dir/.kvmnftd-deb-ok ]]; then
  t0=$EPOCHREALTIME
  tmp=$(mktemp -d "$CACHE/$full/.tmp-$RELEASE.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir "$tmp/src" "$tmp/out"
  git -C "$REPO" archive --format=tar "$full" | tar -x -C "$tmp/src"
  # COMMIT's build.sh reads COMMIT's sources with git archive (KVMNFTD_DEB_FROM)
  # from this repository: the extracted tree has no .git of its own.
  gitdir=$(cd "$REPO" && cd "$(git rev-parse --git-common-dir)" && pwd)
  echo "released-deb.sh: building ${full:0:12} for $RELEASE (cold)" >&2
  GIT_DIR=$gitdir KVMNFTD_DEB_FROM=$full KVMNFTD_DEB_OUT=$tmp/out \
    bash "$tmp/src/packaging/deb/build.sh" "$RELEASE" >"$tmp/build.log" 2>&1 ||
    { tail -n 40 "$tmp/build.log" >&2; exit 1; }
  mv "$tmp/build.log" "$tmp/out/build.log"
  touch "$tmp/out/.kvmnftd-deb-ok"
  rm -rf "$dir"
  mv "$tmp/out" "$dir"
  echo "released-deb.sh: built in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s" >&2
fi
debs=("$dir"/*.deb)
[[ ${#debs[@]} -eq 1 && -f ${debs[0]} ]] || { echo "released-deb.sh: not exactly one .deb in $dir" >&2; exit 1; }
echo "${debs[0]}"
