#!/usr/bin/env bash
# cached-deb.sh RELEASE [COMMIT]  ->  prints the path of a kvmnftd .deb for
# RELEASE (bookworm | trixie), built by packaging/deb/build.sh once and cached
# under $KVMNFTD_DEBS (default /var/cache/kvmnftd-test/debs), with its build
# output (build.log) and lintian's (*.lintian.txt) next to it:
#
#   without COMMIT  this work tree's sources, as `build.sh --source-hash`
#                   names them, built in the release's build root: cached as
#                   tree/RELEASE/SOURCE-HASH-BUILD-ROOT. Entries not used for
#                   two days are removed.
#   with COMMIT     COMMIT's files (e.g. the released 0.1.0), built with
#                   COMMIT's own build.sh (git archive of this repository, no
#                   worktree): cached as FULL-COMMIT/RELEASE. That build.sh
#                   uses COMMIT's rootfs.sh: should its root differ from
#                   today's, the shared root cache swaps roots once.
#
# Built in a temporary folder and renamed when complete, under a flock:
# concurrent callers (test files running in parallel) build it once. Needs
# what build.sh needs (root, network on a cold cache).
set -euo pipefail

RELEASE=${1:?usage: cached-deb.sh RELEASE [COMMIT]}
COMMIT=${2:-}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${KVMNFTD_DEBS:-/var/cache/kvmnftd-test/debs}
BUILD=$REPO/packaging/deb/build.sh

if [[ -n $COMMIT ]]; then
  full=$(git -C "$REPO" rev-parse --verify --quiet "$COMMIT^{commit}") ||
    { echo "cached-deb.sh: no commit $COMMIT in $REPO" >&2; exit 2; }
  dir=$CACHE/$full/$RELEASE
  what="${full:0:12}"
else
  root=$("$REPO/packaging/deb/rootfs.sh" "$RELEASE" build)
  dir=$CACHE/tree/$RELEASE/$(bash "$BUILD" --source-hash)-${root##*/}
  what="this tree"
fi
mkdir -p "${dir%/*}"
exec 9>"$dir.lock"
flock 9
if [[ ! -f $dir/.kvmnftd-deb-ok ]]; then
  t0=$EPOCHREALTIME
  tmp=$(mktemp -d "$dir.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir "$tmp/out"
  echo "cached-deb.sh: building $what for $RELEASE" >&2
  if [[ -n $COMMIT ]]; then
    mkdir "$tmp/src"
    git -C "$REPO" archive --format=tar "$full" | tar -x -C "$tmp/src"
    # COMMIT's build.sh reads COMMIT's sources with git archive (KVMNFTD_DEB_FROM)
    # from this repository: the extracted tree has no .git of its own.
    export GIT_DIR KVMNFTD_DEB_FROM=$full
    GIT_DIR=$(cd "$REPO" && cd "$(git rev-parse --git-common-dir)" && pwd)
    BUILD=$tmp/src/packaging/deb/build.sh
  fi
  KVMNFTD_DEB_OUT=$tmp/out bash "$BUILD" "$RELEASE" >"$tmp/out/build.log" 2>&1 ||
    { tail -n 40 "$tmp/out/build.log" >&2; exit 1; }
  touch "$tmp/out/.kvmnftd-deb-ok"
  rm -rf "$dir"
  mv "$tmp/out" "$dir"
  echo "cached-deb.sh: built in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s" >&2
fi
touch "$dir"
if [[ -z $COMMIT ]]; then
  # Other trees' packages nobody used for two days (their locks go with them).
  find "${dir%/*}" -mindepth 1 -maxdepth 1 -type d ! -name '*.tmp.*' -mmin +2880 -print0 |
    while IFS= read -r -d '' old; do rm -rf "$old" "$old.lock"; done
fi
debs=("$dir"/*.deb)
[[ ${#debs[@]} -eq 1 && -f ${debs[0]} ]] || { echo "cached-deb.sh: not exactly one .deb in $dir" >&2; exit 1; }
echo "${debs[0]}"
