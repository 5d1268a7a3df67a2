// Keeps one `nft -j monitor` running: every line that matters (see
// nft/monitor-scope.ts; before the first pass, every line) triggers a
// reconcile, and a monitor that exits is restarted with back-off (logged once per reason;
// the periodic check covers the gap).
import type { Logger } from '../log/logger.js';
import { NftMonitor } from '../nft/monitor.js';
import { monitorLineReason, type MonitorScope } from '../nft/monitor-scope.js';
import { backoffMs, type Backoff } from './backoff.js';

const BACKOFF: Backoff = { baseMs: 400, maxMs: 30_000 };

export class MonitorSupervisor {
  private monitor: NftMonitor | undefined;
  private restarts = 0;
  private lastFault: string | undefined;
  private stopped = false;

  constructor(
    private readonly trigger: (reason: string) => void,
    private readonly log: Logger,
    /** What the last pass saw; undefined until then. */
    private readonly scope: () => MonitorScope | undefined = () => undefined,
  ) {}

  start(): void {
    if (this.stopped) return;
    const monitor = new NftMonitor();
    const startedAt = Date.now();
    this.monitor = monitor;
    monitor.start(
      (line) => {
        const scope = this.scope();
        const reason = scope ? monitorLineReason(line, scope) : 'ruleset changed';
        if (reason !== undefined) this.trigger(reason);
      },
      (reason) => {
        if (reason !== this.lastFault) this.log.warn(`${reason}; restarting it (the periodic check covers the gap)`);
        this.lastFault = reason;
        // A monitor that ran for a while starts the back-off afresh.
        this.restarts = Date.now() - startedAt > BACKOFF.maxMs ? 1 : this.restarts + 1;
        setTimeout(() => this.start(), backoffMs(this.restarts, BACKOFF)).unref();
        this.trigger('nft monitor restarted');
      },
    );
  }

  stop(): void {
    this.stopped = true;
    this.monitor?.stop();
  }
}
