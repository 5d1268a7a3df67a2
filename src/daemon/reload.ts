// SIGHUP: re-read the configuration (a rejected one keeps the old), run a
// pass, and tell systemd RELOADING=1 ... READY=1. systemd 252 has no
// Type=notify-reload and `kill -HUP` returns at once, so each reload's
// outcome also goes to a file that `kvmnftd reload` waits for.
import { readFileSync, writeFileSync } from 'node:fs';
import { loadConfig, type Config } from '../config/config.js';
import { runtimePath } from '../host/runtime.js';
import { metadataForwardsOn } from '../config/port-forward.js';
import { guestFactsNeeded } from '../libvirt/guest-facts.js';
import type { Logger } from '../log/logger.js';
import type { Notifier } from './notify.js';
import type { DaemonState } from './state.js';
import { statusText } from './status.js';
import { atMost } from './timers.js';

export interface ReloadDeps {
  state: DaemonState;
  configPath: string | undefined;
  runtimeDir: string;
  notifier: Notifier;
  log: Logger;
  /** READY=1 follows the reload's pass, or this long after the signal at the latest. */
  readyTimeoutMs: number;
  pass: { trigger(reason: string): void; idle(): Promise<void> };
  /** libvirt_uri changed, or whether forwards need domain events. */
  reopenLibvirt: () => void;
  /** daemon.resync_interval (seconds) may have changed. */
  setResyncInterval: (seconds: number) => void;
  /** [metrics] may have changed. */
  setMetrics: (settings: Config['metrics']) => void;
}

export class Reloader {
  /** Counts reloads across daemon restarts, so that `kvmnftd reload` sees a new one. */
  private generation: number;

  constructor(private readonly deps: ReloadDeps) {
    this.generation = readReloadState(deps.runtimeDir)?.generation ?? 0;
  }

  async reload(): Promise<void> {
    const { state, notifier, log } = this.deps;
    const generation = ++this.generation;
    notifier.send({ RELOADING: '1', MONOTONIC_USEC: String(process.hrtime.bigint() / 1000n) });
    let outcome = 'ok';
    try {
      const next = loadConfig(this.deps.configPath).config;
      // The event source is opened for the URI and for what forwards need of libvirt (domain events).
      const reopen =
        next.libvirtUri !== state.config.libvirtUri ||
        guestFactsNeeded(next) !== guestFactsNeeded(state.config) ||
        metadataForwardsOn(next) !== metadataForwardsOn(state.config);
      state.config = next;
      this.deps.setResyncInterval(next.daemon.resyncInterval);
      this.deps.setMetrics(next.metrics);
      log.info('SIGHUP: configuration re-read');
      if (reopen) this.deps.reopenLibvirt();
    } catch (err) {
      outcome = `rejected: ${(err as Error).message}`;
      log.error(`SIGHUP: new configuration rejected, keeping the old one: ${(err as Error).message}`);
    }
    this.deps.pass.trigger('reload');
    await atMost(this.deps.pass.idle(), this.deps.readyTimeoutMs);
    notifier.send({ READY: '1', STATUS: statusText(state) });
    writeFileSync(runtimePath(this.deps.runtimeDir, 'reloadState'), `${generation} ${outcome}\n`);
  }
}

/** For `kvmnftd reload`: the daemon's last completed reload, "N ok" or "N rejected: why". */
export function readReloadState(dir: string): { generation: number; outcome: string } | undefined {
  try {
    const [gen, ...rest] = readFileSync(runtimePath(dir, 'reloadState'), 'utf8').trim().split(' ');
    return { generation: Number(gen), outcome: rest.join(' ') };
  } catch {
    return undefined;
  }
}
