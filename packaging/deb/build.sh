#!/usr/bin/env bash
# build.sh [RELEASE...]  (npm run package:deb)
#
# Builds one kvmnftd .deb per Debian release (default: bookworm trixie) INSIDE
# a root of that release (packaging/deb/rootfs.sh RELEASE build, cached), so
# the native sd-notify addon is compiled against the release's own nodejs
# (Debian 12: 18.20, Debian 13: 20.19) with Debian's npm and node-gyp:
#   npm ci --ignore-scripts; npm run build; npm prune --omit=dev --omit=optional;
#   npm rebuild sd-notify
# The build runs on a throwaway overlay over the cached root (nothing of it is
# kept but the .deb). Then the release's lintian checks the package.
#
# Sources: the work tree as it is, or with KVMNFTD_DEB_FROM=REV (e.g. HEAD)
# the files of that commit. `build.sh --source-hash` prints a hash of the work
# tree's sources (names and contents): test/system caches .debs by it.
# Output: $KVMNFTD_DEB_OUT (default dist/deb)/kvmnftd_VERSION_amd64.deb and
# kvmnftd_VERSION_amd64.lintian.txt, VERSION = package.json version + -1+debNN.
# Needs root (debootstrap, mounts, chroot) and network for Debian and npm.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# ---------------------------------------------------------------------------
# Inner part: runs chrooted in the build root, in /build.
#   build.sh __inner VERSION DIST UNITDIR
if [[ ${1:-} == __inner ]]; then
  VERSION=$2 DIST=$3 UNITDIR=$4
  cd /build
  export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
  echo "build: node $(node --version), npm $(npm --version) ($DIST)"
  npm ci --ignore-scripts --loglevel=warn
  npm run build
  npm prune --omit=dev --omit=optional --loglevel=warn
  # Debian's hardening build flags (what dpkg-buildflags gives) for the addon.
  CFLAGS="-g -O2 -fstack-protector-strong -fstack-clash-protection -fcf-protection -D_FORTIFY_SOURCE=2" \
    CXXFLAGS="-g -O2 -fstack-protector-strong -fstack-clash-protection -fcf-protection -D_FORTIFY_SOURCE=2" \
    LDFLAGS="-Wl,-z,relro -Wl,-z,now" npm rebuild sd-notify --loglevel=warn
  ADDON=node_modules/sd-notify/build/Release/notify.node
  [[ -f $ADDON ]] || { echo "build: $ADDON was not built" >&2; exit 1; }
  node -e 'require("./node_modules/sd-notify")' || { echo "build: the addon does not load in this node" >&2; exit 1; }

  S=/build/stage
  rm -rf "$S"
  install -d "$S/DEBIAN" "$S/usr/lib/kvmnftd" "$S/usr/bin" "$S/etc/kvmnftd" "$S$UNITDIR" \
    "$S/usr/share/man/man8" "$S/usr/share/man/man5" "$S/usr/share/doc/kvmnftd"
  cp -a dist node_modules package.json "$S/usr/lib/kvmnftd/"
  L=$S/usr/lib/kvmnftd/node_modules
  rm -rf "$L/.bin" "$L/.package-lock.json"
  # Only what runs: no tests, examples, docs, dotfiles or dev scripts of the
  # modules (their LICENSE files stay), no empty scope folders; scripts that
  # keep a #! line are executable.
  find "$L" -depth -type d \( -name test -o -name tests -o -name example -o -name examples -o -name docs \
    -o -name .github -o -name .husky -o -name benchmarks \) -exec rm -rf {} +
  find "$L" -type f \( -name '*.md' -o -name '*.markdown' -o -name '*.html' -o -name '*.sh' -o -name '.npmignore' \
    -o -name '.gitattributes' -o -name '.gitignore' -o -name '.eslintrc*' -o -name '.eslintignore' -o -name '.travis.yml' \
    -o -name '.editorconfig' -o -name '.prettierrc*' -o -name '.taprc' -o -name '.nycrc*' -o -name 'tsconfig*.json' \) \
    ! -iname 'LICENSE*' -delete
  find "$L" -depth -type d -empty -delete
  # The addon without its build tree (objects, Makefiles with build paths).
  find "$L/sd-notify/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
  find "$L/sd-notify/build/Release" -mindepth 1 ! -name notify.node -exec rm -rf {} +
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$L/sd-notify/build/Release/notify.node"
  install -m755 packaging/deb/kvmnftd.sh "$S/usr/bin/kvmnftd"
  install -m644 systemd/kvmnftd.service "$S$UNITDIR/kvmnftd.service"
  install -m644 packaging/kvmnftd.toml "$S/etc/kvmnftd/kvmnftd.toml"
  gzip -9n <packaging/man/kvmnftd.8 >"$S/usr/share/man/man8/kvmnftd.8.gz"
  gzip -9n <packaging/man/kvmnftd.toml.5 >"$S/usr/share/man/man5/kvmnftd.toml.5.gz"
  install -Dm644 packaging/completion/kvmnftd.bash "$S/usr/share/bash-completion/completions/kvmnftd"
  install -Dm644 packaging/completion/_kvmnftd "$S/usr/share/zsh/vendor-completions/_kvmnftd"
  sed -e "s/@VERSION@/$VERSION/" -e "s/@DIST@/$DIST/" packaging/deb/changelog.in | gzip -9n >"$S/usr/share/doc/kvmnftd/changelog.Debian.gz"
  sed -e "s/@VERSION@/$VERSION/" -e "s/@DIST@/$DIST/" packaging/deb/NEWS.Debian.in | gzip -9n >"$S/usr/share/doc/kvmnftd/NEWS.Debian.gz"
  modules=$(for pj in "$L"/*/package.json "$L"/@*/*/package.json; do
    [[ -f $pj ]] || continue
    node -e 'const p = require(process.argv[1]); const l = typeof p.license === "string" ? p.license : (p.license && p.license.type) || "see its LICENSE file";
      const lic = l === "MIT" ? "Expat" : l.replace(/^\((.*)\)$/, "$1");
      console.log(`Files: usr/lib/kvmnftd/node_modules/${p.name}/*\nCopyright: ${typeof p.author === "string" ? p.author : (p.author && p.author.name) || "the " + p.name + " authors"}\nLicense: ${lic}\nComment: ${p.name} ${p.version}\n`)' "$(readlink -f "$pj")"
  done)
  # A stand-alone paragraph for every license named above but Expat (below).
  licenses=$(printf '%s\n' "$modules" | sed -n 's/^License: //p' | sort -u | grep -v -x Expat || true)
  paragraphs=$(for l in $licenses; do
    case $l in
      Apache-2.0) printf 'License: Apache-2.0\n On Debian systems, the complete text of the Apache License 2.0 can be\n found in "/usr/share/common-licenses/Apache-2.0".\n\n' ;;
      *) printf 'License: %s\n The complete text is in the LICENSE file of each module under\n /usr/lib/kvmnftd/node_modules that uses it.\n\n' "$l" ;;
    esac
  done)
  awk -v m="$modules" -v p="$paragraphs" '{ if ($0 == "@MODULES@") print m; else if ($0 == "@LICENSES@") print p; else print }' packaging/deb/copyright.in >"$S/usr/share/doc/kvmnftd/copyright"
  # Normal permissions whatever the umask was.
  find "$S" -type d -exec chmod 755 {} +
  find "$S" -type f -exec chmod 644 {} +
  chmod 755 "$S/usr/bin/kvmnftd" "$S/usr/lib/kvmnftd/dist/cli/main.js"
  find "$L" -type f -exec sh -c 'for f; do [ "$(head -c2 "$f")" = "#!" ] && chmod 755 "$f"; done; true' sh {} +
  install -Dm644 packaging/deb/lintian-overrides "$S/usr/share/lintian/overrides/kvmnftd"
  install -m755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$S/DEBIAN/"
  install -m644 packaging/deb/conffiles "$S/DEBIAN/conffiles"

  # Depends: the libraries the addon links (libc6, libstdc++6, libsystemd0...),
  # and the nodejs ABI it was built for when nodejs provides one.
  shlibs=$(objdump -p "$L/sd-notify/build/Release/notify.node" | awk '/NEEDED/ { print $2 }' | while read -r lib; do
    dpkg -S "*/$lib" 2>/dev/null | head -n1 | cut -d: -f1
  done | sort -u | paste -sd, | sed 's/,/, /g')
  abi=$(dpkg-query -W -f '${Provides}' nodejs | tr ',' '\n' | sed -n 's/^ *\(nodejs-abi-[0-9]*\).*/\1/p' | head -n1)
  size=$(du -sk --exclude=DEBIAN "$S" | cut -f1)
  sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$(dpkg --print-architecture)/" -e "s/@SIZE@/$size/" \
    -e "s/@ABI@/${abi:+$abi, }/" -e "s/@SHLIBS@/$shlibs/" packaging/deb/control.in >"$S/DEBIAN/control"
  (cd "$S" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
  chmod 644 "$S/DEBIAN/md5sums"
  DEB=/out/kvmnftd_${VERSION}_$(dpkg --print-architecture).deb
  dpkg-deb --root-owner-group -Zxz --build "$S" "$DEB" >/dev/null
  echo "build: $(basename "$DEB") ($(du -h "$DEB" | cut -f1), installed $size KiB)"
  grep -E '^(Depends|Recommends):' "$S/DEBIAN/control"
  LINT=${DEB%.deb}.lintian.txt
  lintian --info --display-info --no-tag-display-limit --allow-root "$DEB" >"$LINT" 2>&1 || true
  echo "build: lintian ($(lintian --version)): $(grep -c '^E:' "$LINT" || true) errors, $(grep -c '^W:' "$LINT" || true) warnings, $(grep -c '^I:' "$LINT" || true) info -> $(basename "$LINT")"
  exit 0
fi

# ---------------------------------------------------------------------------
# Outer part.
# What a build takes from the repository (git pathspecs). The Ansible role is
# not in the package: editing it neither changes the source hash nor rebuilds.
SOURCES=(package.json package-lock.json tsconfig.json tsconfig.build.json src systemd packaging
  ':(exclude)packaging/ansible')
if [[ ${1:-} == --source-hash ]]; then
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- "${SOURCES[@]}" | sort -z |
    xargs -0 sha256sum) | sha256sum | cut -c1-16
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "build.sh: must run as root (debootstrap, mounts, chroot)" >&2; exit 1; }
RELEASES=("$@")
((${#RELEASES[@]} > 0)) || RELEASES=(bookworm trixie)
OUT=${KVMNFTD_DEB_OUT:-$REPO/dist/deb}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
UPSTREAM=$(node -p 'require(process.argv[1]).version' "$REPO/package.json")
NPM_CACHE=/var/cache/kvmnftd-test/npm-cache

build_one() {
  local rel=$1 num dist unitdir version root work t0=$EPOCHREALTIME
  case $rel in
    bookworm) num=12 unitdir=/lib/systemd/system ;; # Debian 12: units under /lib (usrmerge moratorium)
    trixie) num=13 unitdir=/usr/lib/systemd/system ;;
    *) echo "build.sh: unknown release $rel" >&2; return 2 ;;
  esac
  dist=$rel
  version="$UPSTREAM-1+deb$num"
  root=$("$HERE/rootfs.sh" "$rel" build)
  work=$(mktemp -d /var/tmp/kvmnftd-deb.XXXXXX)
  # This function runs in its own subshell (&): its scratch folder goes with it.
  trap 'rm -rf "$work"' EXIT
  trap 'exit 143' TERM INT
  mkdir -p "$work/upper/build" "$work/ovl" "$work/merged" "$NPM_CACHE/$rel"
  # The sources the build needs: the work tree's files (tracked and untracked,
  # not ignored: no local node_modules/dist), or the commit KVMNFTD_DEB_FROM.
  if [[ -n ${KVMNFTD_DEB_FROM:-} ]]; then
    (cd "$REPO" && git archive --format=tar "$KVMNFTD_DEB_FROM" -- "${SOURCES[@]}") | tar -x -C "$work/upper/build"
  else
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- "${SOURCES[@]}" |
      xargs -0 cp --parents -t "$work/upper/build")
  fi
  # The host's extra CA bundle (a TLS-inspecting proxy), for npm only.
  local ca=()
  if [[ -n ${NODE_EXTRA_CA_CERTS:-} && -f $NODE_EXTRA_CA_CERTS ]]; then
    cp "$NODE_EXTRA_CA_CERTS" "$work/upper/build/.host-ca.crt"
    ca=(NODE_EXTRA_CA_CERTS=/build/.host-ca.crt)
  fi
  local rc=0
  unshare --mount --propagation private --fork -- /bin/bash -c '
    set -e
    root=$1 work=$2 out=$3 cache=$4; shift 4
    m=$work/merged
    mount -t overlay kvmnftd-deb -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/ovl" "$m"
    mount -t proc proc "$m/proc"
    mount -t sysfs sysfs "$m/sys"
    mount --rbind /dev "$m/dev"
    mount -t tmpfs tmpfs "$m/tmp"
    mkdir -p "$m/out" "$m/root/.npm"
    mount --bind "$out" "$m/out"
    mount --bind "$cache" "$m/root/.npm"
    cp /etc/resolv.conf "$m/etc/resolv.conf"
    exec chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      "$@"' build "$root" "$work" "$OUT" "$NPM_CACHE/$rel" \
    "${ca[@]}" /bin/bash /build/packaging/deb/build.sh __inner "$version" "$dist" "$unitdir" 2>&1 | sed -u "s/^/[$rel] /" || rc=$?
  rm -rf "$work"
  echo "[$rel] $( ((rc == 0)) && echo built || echo "FAILED (exit $rc)") in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
  return "$rc"
}

pids=()
for rel in "${RELEASES[@]}"; do
  build_one "$rel" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
ls -l "$OUT"/*.deb 2>/dev/null || true
exit "$status"
