#!/usr/bin/env bash
# Fault injection for the convergence guard (test/integration/convergence-guard.test.ts):
# put first in the daemon's PATH as `nft`. Everything goes to the real nft,
# but `list ruleset` output has kvmnftd's DHCP accept rewritten to another
# port, as if nft printed back a rule differently from how kvmnftd wrote it
# (the class of bug of issue 11: ::ffff:a00:0/120 written, ::ffff:10.0.0.0/120
# listed). Every plan after an apply then wants the same edit (delete and re-add).
set -euo pipefail
REAL_NFT=${REAL_NFT:-/usr/sbin/nft}
REWRITE='s/"dport"}}, "right": 67}/"dport"}}, "right": 6767}/g'
for arg in "$@"; do
  # The daemon's session (src/nft/nft-session.ts): every listing it asks for, line by line.
  if [[ $arg == -i ]]; then
    "$REAL_NFT" "$@" | sed -u -e "$REWRITE"
    exit "${PIPESTATUS[0]}"
  fi
  if [[ $arg == ruleset ]]; then
    "$REAL_NFT" "$@" | sed -e "$REWRITE"
    exit "${PIPESTATUS[0]}"
  fi
done
exec "$REAL_NFT" "$@"
