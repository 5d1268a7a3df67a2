// After a foreign `flush ruleset` libvirt's own chains are gone (see
// nft/libvirt-chains.ts): ask libvirt to re-create them with the
// FirewallD1.Reloaded broadcast, rate-limited because every listener of that
// signal (Docker, podman) reloads too. docs/operation.md weighs the options.
import type { ReloadOutcome } from '../libvirt/firewalld-reload.js';
import type { Logger } from '../log/logger.js';
import { TokenBucket } from './token-bucket.js';

const BURST = 3;
const REFILL_MS = 10_000;

export class LibvirtRestorer {
  private readonly bucket = new TokenBucket(BURST, REFILL_MS, Date.now());
  private retry: NodeJS.Timeout | undefined;
  private lastFailure: string | undefined;

  constructor(
    private readonly announce: () => Promise<ReloadOutcome>,
    /** Called when a rate-limited restore may be attempted again (a pass re-checks). */
    private readonly recheck: () => void,
    private readonly log: Logger,
  ) {}

  /** libvirt's chains are missing: broadcast now, or schedule a re-check when rate-limited. */
  async restore(): Promise<void> {
    const wait = this.bucket.take(Date.now());
    if (wait > 0) {
      this.retry ??= setTimeout(() => {
        this.retry = undefined;
        this.recheck();
      }, wait);
      return;
    }
    const outcome = await this.announce();
    if (outcome.sent) {
      this.log.warn(
        "libvirt's own firewall chains are gone (was the ruleset flushed?): sent org.fedoraproject.FirewallD1.Reloaded so that libvirt re-creates them",
      );
      this.lastFailure = undefined;
    } else if (outcome.reason !== this.lastFailure) {
      this.lastFailure = outcome.reason;
      this.log.warn(
        `libvirt's own firewall chains are gone and cannot be restored: ${outcome.reason}. Restart libvirtd (or virtnetworkd) to bring them back`,
      );
    }
  }

  stop(): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
  }
}
