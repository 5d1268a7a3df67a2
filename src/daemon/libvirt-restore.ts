// After a foreign `flush ruleset` libvirt's own chains are gone (see
// nft/libvirt-chains.ts): ask libvirt to re-create them with the
// FirewallD1.Reloaded broadcast, rate-limited because every listener of that
// signal (Docker, podman) reloads too. docs/operation.md weighs the options.
//
// libvirt may not hear it: iptables-legacy holds its rules, or its network
// driver does not run. After GIVE_UP_AFTER broadcasts that brought nothing
// back, it stops sending (STATUS and doctor say so) until the situation
// changes: libvirt's chains come back, or the active networks or libvirt's
// connection change.
import type { ReloadOutcome } from '../libvirt/firewalld-reload.js';
import type { Logger } from '../log/logger.js';
import { TokenBucket } from './token-bucket.js';

const BURST = 3;
const REFILL_MS = 10_000;
export const GIVE_UP_AFTER = 3;
/**
 * How long a broadcast is given to bring libvirt's chains back before the next pass may send
 * another (or count it as unheard): libvirt takes a few hundred ms, and passes come faster.
 */
export const ANSWER_WAIT_MS = 3_000;

export class LibvirtRestorer {
  private readonly bucket = new TokenBucket(BURST, REFILL_MS, Date.now());
  private retry: NodeJS.Timeout | undefined;
  private lastFailure: string | undefined;
  private sent = 0;
  private situation: string | undefined;
  private gaveUpReason: string | undefined;
  private sentTotal = 0;
  /** Until then the last broadcast is still being answered: no other, and no verdict on it. */
  private answerDue = 0;

  constructor(
    private readonly announce: () => Promise<ReloadOutcome>,
    /** Called when a rate-limited restore may be attempted again (a pass re-checks). */
    private readonly recheck: () => void,
    private readonly log: Logger,
  ) {}

  /**
   * Called by every pass. `missing`: libvirt runs networks and none of its
   * chains exist. `situation` identifies what libvirt runs and how kvmnftd
   * reaches it; a new one starts the attempts afresh.
   */
  async observe(missing: boolean, situation: string): Promise<void> {
    if (!missing || situation !== this.situation) {
      if (this.gaveUpReason !== undefined && !missing) this.log.info("libvirt's own firewall chains are back");
      this.sent = 0;
      this.answerDue = 0;
      this.gaveUpReason = undefined;
      this.situation = situation;
    }
    if (missing && this.gaveUpReason === undefined) await this.restore();
  }

  /** Broadcasts sent since it was created (kvmnftd_libvirt_restores_total). */
  get broadcasts(): number {
    return this.sentTotal;
  }

  /** Why it stopped broadcasting, while it has. */
  get gaveUp(): string | undefined {
    return this.gaveUpReason;
  }

  private async restore(): Promise<void> {
    const now = Date.now();
    if (now < this.answerDue) {
      this.recheckIn(this.answerDue - now);
      return;
    }
    if (this.sent >= GIVE_UP_AFTER) {
      this.gaveUpReason =
        `libvirt's own firewall chains are still missing after ${this.sent} FirewallD1.Reloaded broadcasts: ` +
        'libvirt does not hear them (iptables-legacy holds its rules, or its network driver is not running); ' +
        'restart libvirtd (or virtnetworkd)';
      this.log.error(`${this.gaveUpReason}; no more broadcasts until that changes`);
      return;
    }
    const wait = this.bucket.take(Date.now());
    if (wait > 0) {
      this.recheckIn(wait);
      return;
    }
    const outcome = await this.announce();
    if (outcome.sent) {
      this.answerDue = Date.now() + ANSWER_WAIT_MS;
      this.sent++;
      this.sentTotal++;
      this.log.warn(
        "libvirt's own firewall chains are gone (was the ruleset flushed?): " +
          'sent org.fedoraproject.FirewallD1.Reloaded so that libvirt re-creates them',
      );
      this.lastFailure = undefined;
      // libvirt answers within a second; if it does not, the next pass counts it.
      this.recheckIn(REFILL_MS);
    } else if (outcome.reason !== this.lastFailure) {
      this.lastFailure = outcome.reason;
      this.log.warn(
        `libvirt's own firewall chains are gone and cannot be restored: ${outcome.reason}. ` +
          'Restart libvirtd (or virtnetworkd) to bring them back',
      );
    }
  }

  /** One pending re-check at a time: a pass then looks at libvirt's chains again. */
  private recheckIn(ms: number): void {
    this.retry ??= setTimeout(() => {
      this.retry = undefined;
      this.recheck();
    }, ms);
  }

  stop(): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
  }
}
