// The apply lock and the daemon lock (flock(2) through real flock(1)), and
// the check `kvmnftd reload` makes before it signals a PID.
import { writeFileSync } from 'node:fs';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { holdsDaemonLock, LockBusyError, runningDaemon, takeDaemonLock, takeLock } from '../../src/host/lock.js';
import { runtimePath } from '../../src/host/runtime.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const runtime = tempDirs('kvmnftd-lock-');

describe('apply lock', () => {
  it('refuses a second writer, naming the holder, until released', () => {
    const dir = runtime();
    const release = takeLock(dir);
    expect(() => takeLock(dir)).toThrow(LockBusyError);
    expect(() => takeLock(dir)).toThrow(`(PID ${process.pid})`);
    release();
    takeLock(dir)();
  });

  it('is free once a holder dies without releasing it, even with its PID still in the file', async () => {
    const dir = runtime();
    const holder = execa('flock', ['--no-fork', runtimePath(dir, 'lock'), 'sleep', '60'], { reject: false });
    await expect
      .poll(
        () =>
          (() => {
            try {
              takeLock(dir)();
              return false;
            } catch {
              return true;
            }
          })(),
        { timeout: 5000 },
      )
      .toBe(true);
    writeFileSync(runtimePath(dir, 'lock'), '1\n'); // a "live" PID (init) in the file proves nothing
    holder.kill('SIGKILL');
    await holder;
    takeLock(dir)();
  });
});

describe('daemon lock', () => {
  it('names the daemon while it runs, and nobody once it is gone', async () => {
    const dir = runtime();
    expect(runningDaemon(dir)).toBeUndefined();
    const daemon = execa('flock', ['--no-fork', runtimePath(dir, 'daemonLock'), 'sleep', '60'], { reject: false });
    writeFileSync(runtimePath(dir, 'pid'), `${daemon.pid}\n`);
    await expect.poll(() => runningDaemon(dir), { timeout: 5000 }).toBe(daemon.pid);
    expect(takeDaemonLock(dir)).toBeUndefined();
    expect(holdsDaemonLock(daemon.pid!, dir)).toBe(true);
    daemon.kill('SIGKILL');
    await daemon;
    expect(runningDaemon(dir)).toBeUndefined();
    const mine = takeDaemonLock(dir);
    expect(mine).toBeDefined();
    mine!.release();
  });

  it('reload signals only a process that has daemon.lock open: a reused PID is refused', () => {
    const dir = runtime();
    const lock = takeDaemonLock(dir)!;
    expect(holdsDaemonLock(process.pid, dir)).toBe(true);
    lock.release();
    expect(holdsDaemonLock(process.pid, dir)).toBe(false);
    expect(holdsDaemonLock(1, dir)).toBe(false);
  });
});
