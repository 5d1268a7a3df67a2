import { describe, expect, it } from 'vitest';
import { mapLimit } from '../../src/util/map-limit.js';

describe('mapLimit', () => {
  it('keeps at most `limit` calls in flight and the results in order', async () => {
    let inFlight = 0;
    let most = 0;
    const items = Array.from({ length: 50 }, (_, i) => i);
    const out = await mapLimit(items, 4, async (i) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise<void>((resolve) => setImmediate(resolve));
      inFlight--;
      return i * 2;
    });
    expect(out).toEqual(items.map((i) => i * 2));
    expect(most).toBe(4);
  });

  it('handles no items, and rejects with the first failure', async () => {
    expect(await mapLimit([], 8, () => Promise.resolve(1))).toEqual([]);
    await expect(
      mapLimit([1, 2, 3], 2, async (i) => (i === 2 ? Promise.reject(new Error('boom')) : i)),
    ).rejects.toThrow('boom');
  });
});
