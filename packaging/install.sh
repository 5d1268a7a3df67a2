#!/usr/bin/env bash
# packaging/install.sh [install|uninstall]  -- kvmnftd from source, without a
# package manager (the `make install` of this project). As root, from a checkout:
#
#   bash packaging/install.sh install     # build, install, daemon-reload, enable --now
#   bash packaging/install.sh uninstall   # disable --now, remove the rules, delete the files
#
# Installs under PREFIX (default /usr/local): PREFIX/lib/kvmnftd/{dist,node_modules,
# package.json}, PREFIX/bin/kvmnftd (runs the `node` found at install time),
# PREFIX/share/man/man{5,8}; the unit into /etc/systemd/system (ExecStart
# pointed at PREFIX/bin/kvmnftd); /etc/kvmnftd/kvmnftd.toml unless it exists.
# DESTDIR stages the files and skips systemctl. Needs Node.js >= 18.19 with
# npm, and libsystemd-dev, make, g++, python3 for the sd-notify addon.
# Running `install` again upgrades in place (the config is kept; the daemon
# restarts; its rules stay in place).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
ACTION=${1:-install}
LIB=$PREFIX/lib/kvmnftd
UNIT=/etc/systemd/system/kvmnftd.service
live() { [[ -z $DESTDIR && -d /run/systemd/system ]]; }

case $ACTION in
  install)
    NODE=$(command -v node) || { echo "install.sh: node is not on PATH" >&2; exit 1; }
    STAGE=$(mktemp -d)
    trap 'rm -rf "$STAGE"' EXIT
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- package.json package-lock.json tsconfig.json tsconfig.build.json src | xargs -0 cp --parents -t "$STAGE")
    (
      cd "$STAGE"
      export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
      npm ci --ignore-scripts --loglevel=warn
      npm run build
      npm prune --omit=dev --omit=optional --loglevel=warn
      npm rebuild sd-notify --loglevel=warn
      rm -rf node_modules/.bin
    )
    rm -rf "$DESTDIR$LIB"
    install -d "$DESTDIR$LIB" "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/systemd/system" "$DESTDIR$PREFIX/share/man/man8" "$DESTDIR$PREFIX/share/man/man5"
    cp -r "$STAGE/dist" "$STAGE/node_modules" "$STAGE/package.json" "$DESTDIR$LIB/"
    printf '#!/bin/sh\nexec %s %s/dist/cli/main.js "$@"\n' "$NODE" "$LIB" >"$DESTDIR$PREFIX/bin/kvmnftd"
    chmod 755 "$DESTDIR$PREFIX/bin/kvmnftd"
    sed "s|/usr/bin/kvmnftd|$PREFIX/bin/kvmnftd|g" "$REPO/systemd/kvmnftd.service" >"$DESTDIR$UNIT"
    chmod 644 "$DESTDIR$UNIT"
    install -m644 "$REPO/packaging/man/kvmnftd.8" "$DESTDIR$PREFIX/share/man/man8/kvmnftd.8"
    install -m644 "$REPO/packaging/man/kvmnftd.toml.5" "$DESTDIR$PREFIX/share/man/man5/kvmnftd.toml.5"
    install -Dm644 "$REPO/packaging/completion/kvmnftd.bash" "$DESTDIR$PREFIX/share/bash-completion/completions/kvmnftd"
    install -Dm644 "$REPO/packaging/completion/_kvmnftd" "$DESTDIR$PREFIX/share/zsh/site-functions/_kvmnftd"
    if [[ ! -e $DESTDIR/etc/kvmnftd/kvmnftd.toml ]]; then
      install -Dm644 "$REPO/packaging/kvmnftd.toml" "$DESTDIR/etc/kvmnftd/kvmnftd.toml"
    fi
    echo "installed kvmnftd $("$NODE" -p "require('$REPO/package.json').version") under $DESTDIR$PREFIX"
    if live; then
      systemctl daemon-reload
      if systemctl is-active --quiet kvmnftd; then systemctl restart kvmnftd; else systemctl enable --now kvmnftd; fi
      systemctl --no-pager status kvmnftd | head -n 5
    fi
    ;;
  uninstall)
    if live; then systemctl disable --now kvmnftd 2>/dev/null || true; fi
    if [[ -z $DESTDIR && -x $PREFIX/bin/kvmnftd ]]; then "$PREFIX/bin/kvmnftd" remove --force || true; fi
    rm -rf "$DESTDIR$LIB" "$DESTDIR$PREFIX/bin/kvmnftd" "$DESTDIR$UNIT" \
      "$DESTDIR$PREFIX/share/man/man8/kvmnftd.8" "$DESTDIR$PREFIX/share/man/man5/kvmnftd.toml.5" \
      "$DESTDIR$PREFIX/share/bash-completion/completions/kvmnftd" "$DESTDIR$PREFIX/share/zsh/site-functions/_kvmnftd"
    if live; then systemctl daemon-reload; fi
    echo "uninstalled (the configuration in /etc/kvmnftd is kept; delete it yourself)"
    ;;
  *)
    echo "usage: packaging/install.sh install|uninstall" >&2
    exit 2
    ;;
esac
