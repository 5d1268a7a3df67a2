import { describe, expect, it } from 'vitest';
import { Reconciler } from '../../src/daemon/reconciler.js';
import { sleep } from '../helpers/wait.js';

function harness(passMs: number, fail: (n: number) => boolean = () => false) {
  const passes: string[][] = [];
  const failures: Array<{ message: string; repeated: boolean; attempt: number }> = [];
  let recovered = 0;
  const r = new Reconciler(
    {
      pass: async (reasons) => {
        passes.push(reasons);
        await sleep(passMs);
        if (fail(passes.length)) throw new Error('nft: kernel says no');
      },
      onFailure: (e, attempt, _delay, repeated) => failures.push({ message: e.message, repeated, attempt }),
      onRecovered: (n) => (recovered = n),
    },
    { initialMs: 5, maxMs: 40 },
  );
  return { r, passes, failures, recovered: () => recovered };
}

describe('Reconciler', () => {
  it('folds 50 events delivered faster than a pass into at most 2 passes', async () => {
    const { r, passes } = harness(30);
    for (let i = 0; i < 50; i++) {
      r.trigger(`signal ${i}`);
      if (i % 10 === 0) await sleep(1);
    }
    await r.idle();
    expect(passes.length).toBeGreaterThanOrEqual(1);
    expect(passes.length).toBeLessThanOrEqual(2);
    expect(passes.flat()).toContain('signal 0');
  });

  it('an event during a pass causes exactly one follow-up pass', async () => {
    const { r, passes } = harness(20);
    r.trigger('a');
    await sleep(5);
    r.trigger('b');
    r.trigger('c');
    await r.idle();
    expect(passes).toEqual([['a'], ['b', 'c']]);
  });

  it('runs one pass at a time', async () => {
    let concurrent = 0;
    let maxConcurrent = 0;
    const r = new Reconciler({
      pass: async () => {
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
      await sleep(2);
    }
    await r.idle();
    expect(maxConcurrent).toBe(1);
  });

  it('retries with back-off, reports a repeated error as repeated, and recovers', async () => {
    const h = harness(1, (n) => n <= 3);
    h.r.trigger('start');
    await sleep(10);
    await h.r.idle();
    expect(h.passes.length).toBe(4);
    expect(h.failures.map((f) => [f.attempt, f.repeated])).toEqual([
      [1, false],
      [2, true],
      [3, true],
    ]);
    expect(h.recovered()).toBe(3);
    expect(h.r.consecutiveFailures).toBe(0);
  });

  it('stop() ends retries', async () => {
    const h = harness(1, () => true);
    h.r.trigger('start');
    await sleep(20);
    await h.r.stop();
    const count = h.passes.length;
    await sleep(60);
    expect(h.passes.length).toBe(count);
  });
});
