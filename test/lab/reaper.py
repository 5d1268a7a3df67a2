#!/usr/bin/env python3
"""Run a daemon of the lab the way a service manager would: reaper.py CMD ARGS...

Becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER), starts CMD, prints
"PID <pid>" on stdout, forwards SIGTERM, SIGINT and SIGHUP to it, and reaps
every process that ends up below it: CMD and whatever CMD started and left
behind. It exits, with CMD's status (128 + signal if CMD was killed), once
CMD and all of them are gone, as systemd considers a unit stopped only when
its cgroup is empty.

Why (test/lab/docker.ts): dockerd starts containerd with a parent-death
signal. When dockerd is killed, containerd dies too and is reparented; on a
machine whose PID 1 does not reap promptly it stays a zombie, and the next
dockerd, finding its PID in containerd.pid still "alive", waits for it in
vain ("timeout waiting for containerd to start").

Uses python3 because ufw needs it anyway (Debian 12 and the trixie root).
"""
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: reaper.py CMD [ARGS...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"reaper: prctl: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 2
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(sys.argv[1], sys.argv[1:])
        finally:
            os._exit(127)
    print(f"PID {pid}", flush=True)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    status = None
    while True:
        try:
            reaped, st = os.wait()
        except ChildProcessError:
            break
        if reaped == pid:
            status = st
    if status is None:
        return 1
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
