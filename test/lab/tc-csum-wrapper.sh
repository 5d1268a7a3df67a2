#!/bin/sh
# kvmnftd lab, test roots only (lab.ts option `root`): stands in for the root's
# /usr/sbin/tc. libvirt >= 10.x's nftables backend adds one
# `tc filter ... action csum ...` per network (it fixes DHCP reply checksums);
# the kernel of the machine these tests run on has no csum action (and no
# modules to load), so that command fails and with it net-start. This wrapper
# ignores exactly that failure: a non-zero exit of `tc filter add ...` whose
# arguments contain "action csum". Everything else (including the matching
# `tc filter del` at net-destroy) passes through unchanged. Every
# ignored command is logged to /run/lab-tc-csum-ignored.log, which the tests
# print. A stock Debian kernel loads act_csum and needs none of this.
err=$(mktemp /run/lab-tc.XXXXXX) || exit 1
/usr/sbin/tc.lab-real "$@" 2>"$err"
rc=$?
if [ "$rc" -ne 0 ]; then
  case " $* " in
    " filter add "*" action csum "*)
      printf 'IGNORED (exit %s): tc %s: %s\n' "$rc" "$*" "$(tr '\n' ' ' <"$err")" >>/run/lab-tc-csum-ignored.log
      rm -f "$err"
      exit 0
      ;;
  esac
fi
cat "$err" >&2
rm -f "$err"
exit "$rc"
