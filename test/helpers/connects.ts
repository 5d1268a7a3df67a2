// "This connection works" and "this one is dropped", with real TCP, for the packet tests of both labs: the
// netns lab (helpers/netns.ts: `ip netns exec`, the listener's greeting is read) and the libvirt lab
// (lab/lab.ts: nsenter into the lab's namespaces). A connection that should work is retried, each probe a NEW
// flow (a fresh source port, so a fresh conntrack entry): a bridge port or a rule can need a moment, and a
// conntrack entry made before the rules must not decide it. A connection that should be dropped is one probe.
import { expect } from 'vitest';
import type { Lab, TcpProbeResult, TcpWhere } from '../lab/lab.js';
import { tcpProbe, type ProbeResult } from './netns.js';
import { waitUntil } from './wait.js';

/** Retries `probe` until a result is ok and returns it; a time-out shows the last result. */
export async function untilOk<T extends { ok: boolean }>(
  what: string,
  probe: () => Promise<T>,
  timeoutMs = 15_000,
  intervalMs = 50,
): Promise<T> {
  let last: T | undefined;
  return waitUntil(
    what,
    timeoutMs,
    async () => {
      last = await probe();
      return last.ok ? last : undefined;
    },
    { intervalMs, detail: () => JSON.stringify(last) },
  );
}

// ---- the netns lab -------------------------------------------------------------------------------

/** New connections from namespace `from` to host:port until one gets the listener's greeting. */
export function nsConnects(from: string, host: string, port: number, timeoutMs = 15_000): Promise<ProbeResult> {
  return untilOk(
    `a TCP connection from ${from} to ${host}:${port}`,
    async () => {
      const p = await tcpProbe(from, host, port, 2_000);
      return { ...p, ok: p.ok && p.data === 'hello\n' };
    },
    timeoutMs,
    100,
  );
}

/**
 * One connection from namespace `from` to host:port is dropped: it times out. A refusal (nothing listening, a
 * reject) fails the check: it would pass without any firewall.
 */
export async function nsBlocked(from: string, host: string, port: number, timeoutMs = 2_000): Promise<void> {
  const p = await tcpProbe(from, host, port, timeoutMs);
  expect(p.ok, `${from} reached ${host}:${port}: ${JSON.stringify(p)}`).toBe(false);
  expect(p.error, `${from} to ${host}:${port}: not a drop`).toBe('timeout');
}

// ---- the libvirt lab -----------------------------------------------------------------------------

const whereName = (where: TcpWhere): string => (typeof where.in === 'object' ? where.in.name : (where.in ?? 'guest'));

/** New connections from `where` (default the lab's guest) to host:port until one is established. */
export function connects(
  lab: Lab,
  where: TcpWhere,
  host: string,
  port: number,
  timeoutMs = 15_000,
): Promise<TcpProbeResult> {
  return untilOk(
    `a TCP connection from ${whereName(where)} to ${host}:${port}`,
    () => lab.tcpProbe(host, port, 2000, where),
    timeoutMs,
  );
}

/** One connection from `where` to host:port is dropped: it times out (a refusal fails the check, as nsBlocked). */
export async function blocked(lab: Lab, where: TcpWhere, host: string, port: number, timeoutMs = 1500): Promise<void> {
  const p = await lab.tcpProbe(host, port, timeoutMs, where);
  expect(p.ok, `${whereName(where)} reached ${host}:${port}: ${p.output}`).toBe(false);
  expect(p.output, `${whereName(where)} to ${host}:${port}: not a drop`).toMatch(/^FAILED timeout/);
}
