// `kvmnftd run`: the long-running service, composed of small units around one
// state object (state.ts). Events only mark the state dirty; the pass plans
// from the whole current state. systemd hears READY, STATUS, RELOADING,
// STOPPING and WATCHDOG from here.
import { rmSync, writeFileSync } from 'node:fs';
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { lockHolder } from '../host/flock.js';
import { DNSMASQ_STATUS_DIR, forwardBridges, guestFactsNeeded, isolatingBridges } from '../libvirt/guest-facts.js';
import { takeDaemonLock } from '../host/lock.js';
import { runtimeDir, runtimePath } from '../host/runtime.js';
import type { Logger } from '../log/logger.js';
import { libvirtActed } from '../nft/monitor-scope.js';
import { nftSessionRunner } from '../nft/nft-session.js';
import { LibvirtConnection } from './connection.js';
import { LeaseWatch } from './lease-watch.js';
import { PortWatch } from './port-watch.js';
import { MetricsWriter } from './metrics-writer.js';
import type { EventsMode } from './libvirt-watch.js';
import { MonitorSupervisor } from './monitor-supervisor.js';
import { systemdNotifier, type Notifier } from './notify.js';
import { DaemonApplyLock } from './apply-lock.js';
import { DaemonPass } from './pass.js';
import { Reloader } from './reload.js';
import { handleSignals } from './signals.js';
import { initialState } from './state.js';
import { StatusPublisher, statusText } from './status.js';
import { atMost, PeriodicCheck, Watchdog } from './timers.js';
import { heapTrimmer } from './v8-flags.js';

export interface DaemonOptions {
  configPath?: string;
  events: EventsMode;
  /** READY=1 is sent at the latest this long after start, first pass or not. */
  readyTimeoutMs: number;
  /** libvirt's dnsmasq status directory (default DNSMASQ_STATUS_DIR). */
  leaseDir?: string;
}

export const EXIT_CONFIG = 2;

export async function runDaemon(
  options: DaemonOptions,
  log: Logger,
  notifier: Notifier = systemdNotifier(),
): Promise<number> {
  const config = configOrUndefined(options.configPath, log);
  if (config === undefined) return EXIT_CONFIG;
  const dir = runtimeDir();
  // Held until this process ends: the kernel releases it even on SIGKILL.
  const daemonLock = takeDaemonLock(dir);
  if (daemonLock === undefined) {
    const other = lockHolder(runtimePath(dir, 'daemonLock'));
    log.error(`another kvmnftd daemon is running${other === undefined ? '' : ` (PID ${other})`}`);
    return 1;
  }
  writeFileSync(runtimePath(dir, 'pid'), `${process.pid}\n`);
  // apply.lock too, for the daemon's whole life (apply-lock.ts): taken by the first pass.
  const applyLock = new DaemonApplyLock(dir, log);

  const state = initialState(config);
  const status = new StatusPublisher(state, notifier, dir);
  // Created before the pass, which reports to it through changed(); it triggers the pass (arrow, called later).
  const leases: LeaseWatch = new LeaseWatch({
    trigger: (reason) => trigger(reason),
    log,
    dir: options.leaseDir ?? DNSMASQ_STATUS_DIR,
    bridges: () => forwardBridges(state.config, state.lastNetworks ?? []),
  });
  const isolating = (): string[] => isolatingBridges(state.config, state.lastNetworks ?? []);
  const ports: PortWatch = new PortWatch({
    trigger: (reason) => trigger(reason),
    log,
    bridges: isolating,
    seen: () => state.guestFacts?.bridgePorts,
  });
  const trimHeap = heapTrimmer();
  const changed = (): void => {
    status.changed();
    trimHeap(state.figures.passes);
    // Only while some forward needs libvirt's guests; a directory that appeared since is watched now.
    leases.set(!state.stopping && guestFactsNeeded(state.config));
    // Only while some active network isolates its guests.
    ports.set(!state.stopping && isolating().length > 0);
  };
  // Reads and small batches through one long-lived nft (nft-session.ts).
  const nft = nftSessionRunner(dir, 'nft', (why) => log.warn(`nft session: ${why}`));
  const pass = new DaemonPass({ state, applyLock, nft, log, changed });
  // [metrics] textfile: started once READY (the first pass's figures), re-read on SIGHUP.
  const metrics = new MetricsWriter({ state, log, readRuleset: () => nft.readRuleset(), changed });
  const trigger = (reason: string): void => pass.trigger(reason);
  const libvirt = new LibvirtConnection({ state, events: options.events, log, trigger, changed });
  // Drift: anyone else's change to the ruleset (a flush, an admin's nft -f,
  // a deleted jump) triggers a pass; so do our own commits, harmlessly.
  const monitor = new MonitorSupervisor(
    (reason) => (libvirtActed(reason) ? pass.trigger(reason) : pass.triggerDrift(reason)),
    log,
    () => state.scope,
  );
  const periodic = new PeriodicCheck(trigger);
  periodic.set(config.daemon.resyncInterval);
  const watchdog = new Watchdog(notifier, () => state.passStartedAt, log);
  watchdog.start();
  const reloader = new Reloader({
    state,
    configPath: options.configPath,
    runtimeDir: dir,
    notifier,
    log,
    pass,
    readyTimeoutMs: options.readyTimeoutMs,
    reopenLibvirt: () => libvirt.reopen(),
    setResyncInterval: (seconds) => periodic.set(seconds),
    setMetrics: (settings) => metrics.set(settings),
  });

  const signals = handleSignals({
    reload: () => reloader.reload(),
    stop: async (signal) => {
      state.stopping = true;
      log.info(`${signal}: stopping; the rules stay in place (kvmnftd remove clears them)`);
      notifier.send({ STOPPING: '1', STATUS: 'stopping' });
      for (const unit of [periodic, watchdog, libvirt, monitor, leases, ports]) unit.stop();
      await Promise.all([pass.stop(), metrics.stop()]).finally(() => {
        libvirt.close();
        nft.close();
        rmSync(runtimePath(dir, 'pid'), { force: true });
        rmSync(runtimePath(dir, 'state'), { force: true });
        applyLock.stop();
        daemonLock.release();
      });
    },
  });

  await libvirt.connect();
  monitor.start();
  await atMost(pass.firstPass, options.readyTimeoutMs);
  status.ready();
  log.info({ transport: state.watch?.transport ?? 'none' }, `ready: ${statusText(state)}`);
  if (!state.stopping) metrics.set(state.config.metrics);
  await signals.stopped;
  return 0;
}

/** The configuration, or undefined (logged, naming file and key) when it is invalid. */
function configOrUndefined(path: string | undefined, log: Logger): Config | undefined {
  try {
    return loadConfig(path).config;
  } catch (err) {
    if (err instanceof ConfigError) {
      log.error({ file: err.file, key: err.key }, `configuration error: ${err.message}`);
      return undefined;
    }
    throw err;
  }
}
