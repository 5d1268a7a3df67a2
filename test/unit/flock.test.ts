// Real flock(1) and real processes: the lock is held by an open file
// description, so it dies with its holder and never needs a takeover.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { isFlocked, lockHolder, tryFlock, tryFlockAsync } from '../../src/host/flock.js';

const dirs: string[] = [];
const lockPath = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-flock-'));
  dirs.push(dir);
  return join(dir, 'apply.lock');
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('flock', () => {
  it('excludes a second holder until released, and records the holder PID', () => {
    const path = lockPath();
    expect(isFlocked(path)).toBe(false);
    const lock = tryFlock(path);
    expect(lock).toBeDefined();
    expect(lockHolder(path)).toBe(process.pid);
    expect(isFlocked(path)).toBe(true);
    expect(tryFlock(path)).toBeUndefined(); // another open file description: refused
    lock!.release();
    expect(isFlocked(path)).toBe(false);
    const again = tryFlock(path);
    expect(again).toBeDefined();
    again!.release();
  });

  it('is free as soon as the holding process dies, even though its PID file content stays', async () => {
    const path = lockPath();
    // A holder that locks and then is killed without releasing anything
    // (--no-fork: the locking process is the one that gets killed).
    const holder = execa('flock', ['--no-fork', '--exclusive', path, 'sleep', '60'], { reject: false });
    await expect.poll(() => isFlocked(path), { timeout: 5000 }).toBe(true);
    expect(tryFlock(path)).toBeUndefined();
    holder.kill('SIGKILL');
    await holder;
    expect(isFlocked(path)).toBe(false);
    const lock = tryFlock(path);
    expect(lock).toBeDefined();
    lock!.release();
  });

  it("the daemon's asynchronous take excludes and is excluded the same way", async () => {
    const path = lockPath();
    const lock = await tryFlockAsync(path);
    expect(lock).toBeDefined();
    expect(lockHolder(path)).toBe(process.pid);
    expect(tryFlock(path)).toBeUndefined();
    expect(await tryFlockAsync(path)).toBeUndefined();
    lock!.release();
    const sync = tryFlock(path);
    expect(await tryFlockAsync(path)).toBeUndefined();
    sync!.release();
    const again = await tryFlockAsync(path);
    expect(again).toBeDefined();
    again!.release();
    expect(isFlocked(path)).toBe(false);
  });
});
