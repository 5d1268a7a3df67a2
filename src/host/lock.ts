// One writer at a time: the CLI's apply/remove take flock(2) on apply.lock
// for their run, the daemon for its whole life (daemon/apply-lock.ts), as it
// holds daemon.lock. flock locks die with their holder (see flock.ts): no stale lock to
// take over, no race between two processes taking one over, and no reused
// PID that makes a dead holder look alive.
import { readdirSync, readlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { isFlocked, lockHolder, tryFlock, tryFlockAsync, type Flock } from './flock.js';
import { runtimePath } from './runtime.js';

export class LockBusyError extends Error {
  constructor(readonly pid: number | undefined) {
    super(`another kvmnftd process${pid === undefined ? '' : ` (PID ${pid})`} is changing the ruleset; try again`);
    this.name = 'LockBusyError';
  }
}

/** Takes the apply lock in `dir` or throws LockBusyError. Returns the release function. */
export function takeLock(dir: string): () => void {
  const path = runtimePath(dir, 'lock');
  const lock = tryFlock(path);
  if (!lock) throw new LockBusyError(lockHolder(path));
  return () => lock.release();
}

/** takeLock without blocking the event loop (the daemon's passes). */
export async function takeLockAsync(dir: string): Promise<() => void> {
  const path = runtimePath(dir, 'lock');
  const lock = await tryFlockAsync(path);
  if (!lock) throw new LockBusyError(lockHolder(path));
  return () => lock.release();
}

/** The daemon's lifelong lock, or undefined when another daemon holds it. */
export function takeDaemonLock(dir: string): Flock | undefined {
  return tryFlock(runtimePath(dir, 'daemonLock'));
}

/** The running daemon's PID: whoever holds daemon.lock (its PID is written inside). */
export function runningDaemon(dir: string): number | undefined {
  const path = runtimePath(dir, 'daemonLock');
  if (!isFlocked(path)) return undefined;
  // The PID is written right after the lock is taken: fall back to the PID file in that instant.
  const pid = lockHolder(path) ?? lockHolder(runtimePath(dir, 'pid'));
  return pid === process.pid ? undefined : pid;
}

/**
 * Is `pid` the daemon of `dir`, i.e. does that process have daemon.lock
 * open? Checked before signalling it: a PID in a file may be anybody's now.
 */
export function holdsDaemonLock(pid: number, dir: string): boolean {
  const lockPath = resolve(runtimePath(dir, 'daemonLock'));
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === lockPath;
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}
