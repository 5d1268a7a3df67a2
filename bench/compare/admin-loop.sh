#!/bin/sh
# The reference loop of `npm run bench:compare`: what a careful admin without
# kvmnftd would run to keep the manual recipe's rules (bench/compare/recipe.nft)
# in place. Every ruleset change `nft monitor` reports is a reason to look; the
# rules are re-applied only when they are missing, so that the loop's own
# `nft -f` (whose changes the monitor reports too) does not start it again,
# and the rules are never added twice.
#
#   sh admin-loop.sh RECIPE
#
# This shell script is the contender, not part of kvmnftd (which never runs
# shell strings).
set -u
recipe=$1

present() {
	nft list chain inet filter forward 2>/dev/null | grep -q 'iifname "virbr0" oifname "eth0" accept' &&
		nft list chain ip nat postrouting >/dev/null 2>&1
}

nft monitor | while read -r _event; do
	present || nft -f "$recipe"
done
