// The daemon holds apply.lock for its whole life, as it holds daemon.lock.
// Taking it per pass cost a flock(1) process per pass (25-30 ms on the first
// pass after a quiet spell: a fork of the whole daemon), on the path of every
// repair. While a daemon runs, `kvmnftd apply` is refused (the daemon would
// undo a different plan at once) and `remove --force` goes without the lock
// (see cli/commands.ts), so nobody else needs it meanwhile. A CLI apply that
// holds it when the daemon starts is waited for.
import { LockBusyError, takeLockAsync } from '../host/lock.js';
import type { Logger } from '../log/logger.js';

/** How often a daemon whose apply lock is held by a CLI apply/remove tries again. */
export const APPLY_LOCK_RETRY_MS = 100;

export class DaemonApplyLock {
  private release?: () => void;
  private taking?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly dir: string,
    private readonly log: Pick<Logger, 'info'>,
    private readonly retryMs = APPLY_LOCK_RETRY_MS,
  ) {}

  /** Whether the lock is ours now (from the first pass on, unless a CLI apply held it then). */
  get ours(): boolean {
    return this.release !== undefined;
  }

  /** Resolves once the lock is ours: at once from the first time on; rejects once stopped. */
  held(): Promise<void> {
    if (this.release) return Promise.resolve();
    this.taking ??= this.take().finally(() => (this.taking = undefined));
    return this.taking;
  }

  /** Releases the lock (at exit) and gives up waiting for it. */
  stop(): void {
    this.stopped = true;
    this.release?.();
    this.release = undefined;
  }

  private async take(): Promise<void> {
    let told = false;
    for (;;) {
      if (this.stopped) throw new Error('stopping: the apply lock is not taken');
      try {
        const release = await takeLockAsync(this.dir);
        if (!this.stopped) {
          this.release = release;
          return;
        }
        release(); // stopped while flock(1) ran: keep nothing (the loop's check then throws)
      } catch (err) {
        if (!(err instanceof LockBusyError)) throw err;
        if (!told)
          this.log.info(
            `waiting for the apply lock: ${err.pid === undefined ? 'another kvmnftd process' : `PID ${err.pid}`} is changing the ruleset`,
          );
        told = true;
        await new Promise((resolve) => setTimeout(resolve, this.retryMs));
      }
    }
  }
}
