// The reconciler under fake timers: a pass "takes" N ms of fake time, so
// coalescing, ordering and back-off are exact instead of racing real sleeps.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Reconciler } from '../../src/daemon/reconciler.js';

// The global setTimeout, which vi.useFakeTimers() replaces (node:timers/promises is not faked).
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function harness(passMs: number, fail: (n: number) => boolean = () => false) {
  const passes: string[][] = [];
  const failures: Array<{ message: string; repeated: boolean; attempt: number; delay: number }> = [];
  let recovered = 0;
  const r = new Reconciler(
    {
      pass: async (reasons) => {
        passes.push(reasons);
        await sleep(passMs);
        if (fail(passes.length)) throw new Error('nft: kernel says no');
      },
      onFailure: (e, attempt, delay, repeated) => failures.push({ message: e.message, repeated, attempt, delay }),
      onRecovered: (n) => (recovered = n),
    },
    { baseMs: 5, maxMs: 40 },
  );
  return { r, passes, failures, recovered: () => recovered };
}

/** Runs the fake clock until the reconciler has nothing running or pending. */
async function untilIdle(r: Reconciler): Promise<void> {
  const idle = r.idle();
  await vi.runAllTimersAsync();
  await idle;
}

describe('Reconciler', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('folds 50 events delivered faster than a pass into 2 passes', async () => {
    const { r, passes } = harness(30);
    for (let i = 0; i < 50; i++) {
      r.trigger(`signal ${i}`);
      if (i % 10 === 0) await vi.advanceTimersByTimeAsync(1);
    }
    await untilIdle(r);
    // The first event starts a pass; the 49 during it fold into one follow-up.
    expect(passes).toHaveLength(2);
    expect(passes[0]).toEqual(['signal 0']);
    expect(passes[1]).toContain('signal 1');
  });

  it('a burst in one tick starts a single pass', async () => {
    const { r, passes } = harness(1);
    for (let i = 0; i < 5; i++) {
      r.trigger(`signal ${i}`);
      await Promise.resolve(); // separate callbacks, as D-Bus signals of one read arrive
    }
    await untilIdle(r);
    expect(passes).toEqual([['signal 0', 'signal 1', 'signal 2', 'signal 3', 'signal 4']]);
  });

  it('an event during a pass causes exactly one follow-up pass', async () => {
    const { r, passes } = harness(20);
    r.trigger('a');
    await vi.advanceTimersByTimeAsync(5);
    r.trigger('b');
    r.trigger('c');
    await untilIdle(r);
    expect(passes).toEqual([['a'], ['b', 'c']]);
  });

  it('runs one pass at a time', async () => {
    let concurrent = 0;
    let maxConcurrent = 0;
    let passes = 0;
    const r = new Reconciler({
      pass: async () => {
        passes++;
        concurrent++;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        await sleep(5);
        concurrent--;
      },
      onFailure: () => undefined,
      onRecovered: () => undefined,
    });
    for (let i = 0; i < 20; i++) {
      r.trigger('x');
      await vi.advanceTimersByTimeAsync(2);
    }
    await untilIdle(r);
    expect(passes).toBeGreaterThan(1);
    expect(maxConcurrent).toBe(1);
  });

  it('retries with doubling back-off, reports a repeated error as repeated, and recovers', async () => {
    const h = harness(1, (n) => n <= 3);
    h.r.trigger('start');
    await untilIdle(h.r);
    expect(h.passes).toEqual([['start'], ['retry'], ['retry'], ['retry']]);
    expect(h.failures.map((f) => [f.attempt, f.repeated, f.delay])).toEqual([
      [1, false, 5],
      [2, true, 10],
      [3, true, 20],
    ]);
    expect(h.recovered()).toBe(3);
    expect(h.r.consecutiveFailures).toBe(0);
  });

  it('stop() ends retries', async () => {
    const h = harness(1, () => true);
    h.r.trigger('start');
    await vi.advanceTimersByTimeAsync(20);
    expect(h.passes.length).toBeGreaterThan(1); // it was retrying
    await h.r.stop();
    const count = h.passes.length;
    expect(vi.getTimerCount()).toBe(0); // no retry left scheduled
    await vi.advanceTimersByTimeAsync(60);
    expect(h.passes.length).toBe(count);
  });
});
