// The one polling helper of the tests, the lab and the benchmarks: wait for a
// condition on the outside world (a ruleset, a log line, a process) that
// sends no event of its own. Plain code, no vitest: bench/, test/lab and
// test/system use it outside a test's context too.
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

export interface WaitOptions {
  /** Between two checks (default 20 ms). */
  intervalMs?: number;
  /** Appended to the time-out error: the state that explains it (a log tail, a ruleset). */
  detail?: () => string;
}

/**
 * Calls `check` until it returns a value other than `undefined`, `null` or
 * `false` (0 and '' count: they are values), and returns that value. An error
 * thrown by `check` ends the wait at once (a process that exited is no reason
 * to keep polling). After `timeoutMs`, rejects with
 * "timed out after N ms waiting for WHAT".
 */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  opts: WaitOptions = {},
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== null && value !== false) return value;
    if (performance.now() > deadline) {
      const detail = opts.detail?.();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `\n${detail}` : ''}`);
    }
    await sleep(opts.intervalMs ?? 20);
  }
}
