// Level-triggered reconciling: an event only marks the state dirty. One pass
// runs at a time and always works from the whole current state, so events
// that arrive during a pass fold into ONE follow-up pass, and a missed event
// costs nothing but latency. Failures retry with capped exponential back-off
// and are logged once per distinct error, not once per retry.
import { backoffMs, type Backoff } from './backoff.js';

export interface ReconcilerHooks {
  /**
   * One full pass; throws on failure. `since` is when (performance.now())
   * the first of the coalesced triggers arrived: the event-to-commit latency.
   */
  pass: (reasons: string[], since: number) => Promise<void>;
  /** Called on every failure; `repeated` when that error was already reported since the last success. */
  onFailure: (error: Error, attempt: number, retryInMs: number, repeated: boolean) => void;
  /** Called after a pass succeeds that follows failures. */
  onRecovered: (failures: number) => void;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 250, maxMs: 30_000 };

export class Reconciler {
  private dirty = false;
  private reasons: string[] = [];
  private since: number | undefined;
  private running: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  /** Errors seen since the last success: each is reported once. */
  private seenErrors = new Set<string>();
  private stopped = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly hooks: ReconcilerHooks,
    private readonly backoff: Backoff = DEFAULT_BACKOFF,
  ) {}

  /** Marks the state dirty; a pass follows as soon as none is running. */
  trigger(reason: string): void {
    if (this.stopped) return;
    this.dirty = true;
    this.since ??= performance.now();
    if (this.reasons.length < 20) this.reasons.push(reason);
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    // Defer to the next macrotask so that a burst delivered in one tick
    // (e.g. a batch of D-Bus signals) starts a single pass.
    if (!this.running) this.running = new Promise((resolve) => setImmediate(resolve)).then(() => this.loop());
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  get busy(): boolean {
    return this.running !== undefined || this.retryTimer !== undefined;
  }

  /** Resolves when no pass is running or pending (a scheduled retry counts as pending). */
  idle(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops scheduling; waits for a running pass to end. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.running;
    this.wakeIdle();
  }

  private async loop(): Promise<void> {
    try {
      while (this.dirty && !this.stopped) {
        this.dirty = false;
        const reasons = this.reasons;
        const since = this.since ?? performance.now();
        this.reasons = [];
        this.since = undefined;
        try {
          await this.hooks.pass(reasons, since);
          if (this.failures > 0) this.hooks.onRecovered(this.failures);
          this.failures = 0;
          this.seenErrors.clear();
        } catch (err) {
          const error = err instanceof Error ? err : new Error(String(err));
          this.failures++;
          const delay = backoffMs(this.failures, this.backoff);
          const repeated = this.seenErrors.has(error.message);
          this.seenErrors.add(error.message);
          this.hooks.onFailure(error, this.failures, delay, repeated);
          if (!this.dirty && !this.stopped) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = undefined;
              this.trigger('retry');
            }, delay);
            // The retry must not be lost, but it alone should not keep a
            // stopping process alive.
            this.retryTimer.unref();
          }
        }
      }
    } finally {
      this.running = undefined;
      if (this.dirty && !this.stopped) this.trigger('follow-up');
      else this.wakeIdle();
    }
  }

  private wakeIdle(): void {
    if (this.busy) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
