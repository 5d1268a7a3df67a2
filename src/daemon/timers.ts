// The daemon's timers: the periodic check that backs up the event sources,
// the watchdog ping, and waiting for something at most so long.
import type { Logger } from '../log/logger.js';
import type { Notifier } from './notify.js';

/** A pass running longer than this stops the watchdog pings: systemd restarts us. */
export const STUCK_PASS_MS = 90_000;

/** Triggers a pass every daemon.resync_interval seconds. */
export class PeriodicCheck {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly trigger: (reason: string) => void) {}

  /** Every `seconds` from now on (0: never), replacing the previous interval. */
  set(seconds: number): void {
    this.stop();
    if (seconds > 0) this.timer = setInterval(() => this.trigger('periodic check'), seconds * 1000);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * WATCHDOG=1 every half WatchdogSec while the daemon is healthy. The timer
 * firing at all shows the event loop is alive; a pass that never ends is the
 * other way to be stuck, and then the pings stop.
 */
export class Watchdog {
  private timer: NodeJS.Timeout | undefined;
  private stuckLogged = false;

  constructor(
    private readonly notifier: Notifier,
    /** Date.now() when the running pass started, undefined between passes. */
    private readonly passStartedAt: () => number | undefined,
    private readonly log: Logger,
  ) {}

  /** Starts pinging if systemd asked for a watchdog. */
  start(): void {
    const interval = this.notifier.watchdogIntervalMs;
    if (interval !== undefined) this.timer = setInterval(() => this.tick(), interval);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const started = this.passStartedAt();
    if (started !== undefined && Date.now() - started > STUCK_PASS_MS) {
      if (!this.stuckLogged)
        this.log.error(
          `a reconcile has been running for over ${STUCK_PASS_MS / 1000} s: withholding the watchdog ping`,
        );
      this.stuckLogged = true;
      return;
    }
    this.stuckLogged = false;
    this.notifier.send({ WATCHDOG: '1' });
  }
}

/** Resolves when `promise` settles or `ms` have passed, whichever is first; never rejects. */
export async function atMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      promise.then(
        () => undefined,
        () => undefined,
      ),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms).unref())),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
