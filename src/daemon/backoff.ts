// Capped exponential back-off, the one formula for every retry in the daemon:
// the reconciler's failed passes, reconnecting to libvirt's event source, and
// restarting `nft monitor`, restarting the virsh shell (libvirt/virsh-shell.ts).

export interface Backoff {
  /** The delay before the first retry. */
  baseMs: number;
  /** No delay is longer than this. */
  maxMs: number;
}

/** The delay before retry number `attempt` (1, 2, ...): baseMs, doubling each time, at most maxMs. */
export function backoffMs(attempt: number, { baseMs, maxMs }: Backoff): number {
  // The exponent is capped so that a long outage never computes Infinity (0 * Infinity is NaN).
  return Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 52));
}
