// The kernel log for the tests of log_drops: nft's `log` inside a network namespace prints nothing unless
// net.netfilter.nf_log_all_netns=1 in the initial namespace (it is 0 here, FACTS.md), so a describe that reads
// it turns that on for its duration (useNetnsKernelLog) and reads /dev/kmsg with doctor's reader (kmsgLines).
import { afterAll, beforeAll } from 'vitest';
import { readKernelLog } from '../../src/host/kernel-log.js';
import { run, runOk } from './netns.js';
import { waitUntil } from './wait.js';

const SYSCTL = 'net.netfilter.nf_log_all_netns';

/**
 * Registers, in the calling describe, a beforeAll that sets net.netfilter.nf_log_all_netns=1 in the
 * initial namespace and an afterAll that puts back the value it found.
 */
export function useNetnsKernelLog(): void {
  let old = '';
  beforeAll(async () => {
    old = (await runOk('sysctl', ['-n', SYSCTL])).stdout.trim();
    await runOk('sysctl', ['-w', `${SYSCTL}=1`]);
  });
  afterAll(async () => {
    if (old !== '') await run('sysctl', ['-w', `${SYSCTL}=${old}`]);
  });
}

/** The kernel log records (from /dev/kmsg, the oldest kept first) that carry `prefix`: the product's reader. */
export function kmsgLines(prefix: string): string[] {
  return readKernelLog((line) => line.includes(prefix));
}

/** Waits for records with `prefix` beyond the first `seen` (a kmsgLines(prefix).length taken before); returns them. */
export function newKmsgLines(prefix: string, seen: number, timeoutMs = 5_000): Promise<string[]> {
  return waitUntil(`a kernel log line with the prefix "${prefix}"`, timeoutMs, () => {
    const all = kmsgLines(prefix);
    return all.length > seen ? all.slice(seen) : undefined;
  });
}
