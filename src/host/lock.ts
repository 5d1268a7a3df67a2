// One writer at a time: the CLI's apply/remove and the daemon's reconciles
// take the same lock file. Node has no flock(2), so the lock is an O_EXCL
// file holding the owner's PID; a lock whose owner is dead is taken over.
import { openSync, readFileSync, unlinkSync, writeSync, closeSync } from 'node:fs';
import { runtimePath } from './runtime.js';

export class LockBusyError extends Error {
  constructor(readonly pid: number) {
    super(`another kvmnftd process (PID ${pid}) is changing the ruleset; try again`);
    this.name = 'LockBusyError';
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Takes the lock file in `dir` or throws LockBusyError. Returns the release function. */
export function takeLock(dir: string): () => void {
  const path = runtimePath(dir, 'lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => {
        if (readPid(path) === process.pid) unlinkSync(path);
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = readPid(path);
      if (owner !== undefined && owner !== process.pid && isAlive(owner)) throw new LockBusyError(owner);
      try {
        unlinkSync(path); // stale: its owner is gone
      } catch {
        /* somebody else removed it first */
      }
    }
  }
  throw new Error(`could not take the lock ${path}`);
}

/** The daemon's PID file; `remove` refuses while it names a live process. */
export function runningDaemon(dir: string): number | undefined {
  const pid = readPid(runtimePath(dir, 'pid'));
  return pid !== undefined && pid !== process.pid && isAlive(pid) ? pid : undefined;
}
