// The daemon's lifelong apply lock (src/daemon/apply-lock.ts), through real
// flock(1): taken once, held across passes, waited for while a CLI apply holds
// it, released at stop.
import { describe, expect, it } from 'vitest';
import { DaemonApplyLock } from '../../src/daemon/apply-lock.js';
import { LockBusyError, takeLock } from '../../src/host/lock.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const runtime = tempDirs('kvmnftd-applylock-');

const quietLog = (lines: string[] = []) => ({ info: (msg: string) => void lines.push(msg) });

describe('DaemonApplyLock', () => {
  it('is taken once and held across passes: a CLI apply is refused meanwhile, and takes it after stop()', async () => {
    const dir = runtime();
    const lock = new DaemonApplyLock(dir, quietLog());
    await lock.held();
    await lock.held(); // the second pass finds it held
    expect(() => takeLock(dir)).toThrow(LockBusyError);
    lock.stop();
    takeLock(dir)();
    await expect(lock.held()).rejects.toThrow(/stopping/);
  });

  it('waits while a CLI apply holds the lock, says so once, and takes it once released', async () => {
    const dir = runtime();
    const release = takeLock(dir);
    const lines: string[] = [];
    const lock = new DaemonApplyLock(dir, quietLog(lines), 5);
    let taken = false;
    const waiting = lock.held().then(() => (taken = true));
    await expect.poll(() => lines.length).toBe(1);
    expect(lines[0]).toMatch(new RegExp(`waiting for the apply lock: PID ${process.pid} is changing the ruleset`));
    expect(taken).toBe(false);
    release();
    await waiting;
    expect(lines).toHaveLength(1);
    expect(() => takeLock(dir)).toThrow(LockBusyError);
    lock.stop();
  });

  it('gives up waiting when stopped', async () => {
    const dir = runtime();
    const release = takeLock(dir);
    const lines: string[] = [];
    const lock = new DaemonApplyLock(dir, quietLog(lines), 5);
    const waiting = lock.held();
    await expect.poll(() => lines.length).toBe(1);
    lock.stop();
    await expect(waiting).rejects.toThrow(/stopping/);
    release();
    takeLock(dir)(); // the stopped lock took nothing
  });
});
