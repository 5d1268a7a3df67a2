// Bridge ports as an event source for isolate_guests: a tap joining or leaving an isolating network's bridge
// is a change of the plan's input (host/bridge-ports.ts). libvirt's domain events announce a guest's start,
// not a NIC hot-plugged into a running guest or a port added by hand; `ip -o monitor link` reports every link
// change of the host. On each, the isolating bridges' ports are read again, and a pass follows when they
// differ from what the last pass planned from (level-triggered: no bookkeeping of which event meant what).
// Runs only while some active network isolates its guests; a monitor that exits is restarted with back-off,
// the periodic check covering the gap.
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { readBridgePorts } from '../host/bridge-ports.js';
import { spawnChild } from '../util/child.js';
import type { Logger } from '../log/logger.js';
import type { BridgePorts } from '../nft/desired.js';
import { backoffMs, type Backoff } from './backoff.js';

const BACKOFF: Backoff = { baseMs: 400, maxMs: 30_000 };

export interface PortWatchDeps {
  trigger: (reason: string) => void;
  log: Logger;
  /** The bridges of the active networks that isolate their guests now. */
  bridges: () => readonly string[];
  /** The ports the last pass planned from (undefined: none read yet). */
  seen: () => BridgePorts | undefined;
  read?: (bridges: readonly string[]) => Promise<BridgePorts>;
  /** The link monitor (default `ip -o monitor link`). */
  command?: readonly [string, readonly string[]];
}

/** Whether the ports read now differ, for these bridges, from what the last pass saw. */
export function portsChanged(now: BridgePorts, seen: BridgePorts | undefined): boolean {
  return Object.entries(now).some(([bridge, ports]) => {
    const before = seen !== undefined && Object.hasOwn(seen, bridge) ? seen[bridge] : undefined;
    return before === undefined ? ports.length > 0 : ports.join('\n') !== before.join('\n');
  });
}

export class PortWatch {
  private child: ChildProcess | undefined;
  private wanted = false;
  private restarts = 0;
  private lastFault: string | undefined;
  /** Reads one after the other, so that each compares the ports as they are after its event. */
  private reads: Promise<void> = Promise.resolve();

  constructor(private readonly deps: PortWatchDeps) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Watch while wanted; called after every pass. */
  set(wanted: boolean): void {
    this.wanted = wanted;
    if (!wanted) this.stop();
    else if (!this.child) this.start();
  }

  stop(): void {
    this.wanted = false;
    const child = this.child;
    this.child = undefined;
    child?.kill('SIGTERM');
  }

  private start(): void {
    const [file, args] = this.deps.command ?? ['ip', ['-o', 'monitor', 'link']];
    const { child, ended } = spawnChild(file, args, { stderr: 'ignore' });
    const startedAt = Date.now();
    this.child = child;
    if (child.stdout) createInterface({ input: child.stdout }).on('line', () => this.changed());
    // A port may have joined between the last pass's read and this monitor's start.
    this.changed();
    void ended.then((result) => {
      if (this.child !== child) return; // stopped on purpose
      this.child = undefined;
      const why =
        result.code === 'ENOENT' ? `${file} not found` : `exit code ${String(result.exitCode ?? result.signal)}`;
      if (why !== this.lastFault)
        this.deps.log.warn(
          `bridge port watch (${file} ${args.join(' ')}) exited: ${why}; the periodic check covers the gap`,
        );
      this.lastFault = why;
      this.restarts = Date.now() - startedAt > BACKOFF.maxMs ? 1 : this.restarts + 1;
      setTimeout(
        () => {
          if (this.wanted && !this.child) this.start();
        },
        backoffMs(this.restarts, BACKOFF),
      ).unref();
    });
  }

  private changed(): void {
    this.reads = this.reads.then(async () => {
      const bridges = this.deps.bridges();
      if (bridges.length === 0) return;
      const now = await (this.deps.read ?? readBridgePorts)(bridges);
      if (portsChanged(now, this.deps.seen())) this.deps.trigger('bridge port change');
    });
  }
}
