import { expect, it } from 'vitest';
import { TokenBucket } from '../../src/daemon/token-bucket.js';

it('allows a burst of `capacity`, then one per refill interval', () => {
  const b = new TokenBucket(3, 10_000, 0);
  expect([b.take(0), b.take(1), b.take(2)]).toEqual([0, 0, 0]);
  expect(b.take(3)).toBe(9_997); // empty since t=2: 3 ms of the 10 s refill have passed
  expect(b.take(10_003)).toBe(0);
  expect(b.take(10_004)).toBeGreaterThan(9_000);
  expect(b.take(100_000)).toBe(0); // refilled, never beyond capacity
  expect([b.take(100_000), b.take(100_000), b.take(100_000)]).toEqual([0, 0, 10_000]);
});
