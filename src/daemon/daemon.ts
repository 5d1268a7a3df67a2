// `kvmnftd run`: the long-running service. Events only mark the state dirty;
// the reconciler plans from the whole current state. systemd hears READY,
// STATUS, RELOADING, STOPPING and WATCHDOG from here.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { logMessages, syncOnce, type SyncMessage } from '../engine/sync.js';
import { runningDaemon, takeLock } from '../host/lock.js';
import { runtimeDir } from '../host/runtime.js';
import type { NetworkParse } from '../libvirt/model.js';
import type { Logger } from '../log/logger.js';
import { announceFirewallReload } from '../libvirt/firewalld-reload.js';
import { libvirtChainsMissing } from '../nft/libvirt-chains.js';
import { nftRunner } from '../nft/nft-runner.js';
import { openWatch, type EventsMode, type LibvirtWatch } from './libvirt-watch.js';
import { systemdNotifier, type Notifier } from './notify.js';
import { LibvirtRestorer } from './libvirt-restore.js';
import { MonitorSupervisor } from './monitor-supervisor.js';
import { monitorScope, ownedOrWrittenTables, type MonitorScope } from '../nft/monitor-scope.js';
import { Reconciler } from './reconciler.js';
import { formatStatus, STATE_FILE, writeDaemonState, type StatusFacts } from './status.js';

export interface DaemonOptions {
  configPath?: string;
  events: EventsMode;
  /** READY=1 is sent at the latest this long after start, first pass or not. */
  readyTimeoutMs: number;
}

export const EXIT_CONFIG = 2;
const RECONNECT_MAX_MS = 30_000;
/** A pass running longer than this stops the watchdog pings: systemd restarts us. */
const STUCK_PASS_MS = 90_000;
/** Consecutive failures (about 4 s with the default back-off) after which a failure is an error. */
const PERSISTENT_FAILURES = 5;

export const RELOAD_STATE_FILE = 'reload.state';
export const PID_FILE = 'daemon.pid';

export async function runDaemon(
  options: DaemonOptions,
  log: Logger,
  notifier: Notifier = systemdNotifier(),
): Promise<number> {
  let config: Config;
  try {
    config = loadConfig(options.configPath).config;
  } catch (err) {
    if (err instanceof ConfigError) {
      log.error({ file: err.file, key: err.key }, `configuration error: ${err.message}`);
      return EXIT_CONFIG;
    }
    throw err;
  }
  const dir = runtimeDir();
  const other = runningDaemon(dir);
  if (other !== undefined) {
    log.error(`another kvmnftd daemon is running (PID ${other})`);
    return 1;
  }
  writeFileSync(join(dir, PID_FILE), `${process.pid}\n`);
  const nft = nftRunner(dir);

  let watch: LibvirtWatch | undefined;
  let watchFault: string | undefined = 'not connected yet';
  const facts: Omit<StatusFacts, 'degraded'> = { networks: [], lastChange: undefined };
  /** Which monitor events matter, from the ruleset the last pass read. */
  let scope: MonitorScope | undefined;
  let passError: string | undefined; // the last pass's failure, until a pass succeeds
  let planError: string | undefined; // what the last plan had to leave out
  // Derived, never stored: libvirt away beats a failing pass beats a partial plan.
  const degraded = (): string | undefined =>
    watchFault !== undefined ? `libvirt is not reachable: ${watchFault}` : (passError ?? planError);
  const status = (): string => formatStatus({ ...facts, degraded: degraded() });
  let reconnectTimer: NodeJS.Timeout | undefined;
  let reconnectAttempts = 0;
  let transportNote: string | undefined;
  let passStartedAt: number | undefined;
  let ready = false;
  let stopping = false;
  let reloads = readReloadState(dir)?.generation ?? 0;
  const logged = new Set<string>();
  let lastNetworks: NetworkParse[] | undefined;
  let firstPassDone: () => void = () => undefined;
  const firstPass = new Promise<void>((resolve) => (firstPassDone = resolve));

  let lastPassAt: Date | undefined;
  /** For `kvmnftd status` (runtime dir), next to systemd's STATUS=. */
  const saveState = (): void =>
    writeDaemonState(dir, {
      pid: process.pid,
      transport: watch?.transport ?? null,
      status: status(),
      degraded: degraded() ?? null,
      lastPassAt: lastPassAt?.toISOString() ?? null,
      lastChangeAt: facts.lastChange?.at.toISOString() ?? null,
      writtenAt: new Date().toISOString(),
    });
  const publishStatus = (): void => {
    notifier.send({ STATUS: status() });
    saveState();
  };

  /** Logs each distinct finding once while it persists. */
  const logNew = (messages: SyncMessage[]): void => {
    const current = new Set(messages.map((m) => `${m.level}:${m.text}`));
    logMessages(
      messages.filter((m) => !logged.has(`${m.level}:${m.text}`)),
      log,
    );
    logged.clear();
    for (const key of current) logged.add(key);
  };

  const reconciler = new Reconciler({
    pass: async (reasons, since) => {
      passStartedAt = Date.now();
      try {
        // Without libvirt, plan from the last networks it reported, so that a
        // flush during a libvirtd restart is still repaired; the reconnect
        // loop, not the reconciler's back-off, brings fresh state back.
        let networks: NetworkParse[];
        if (watch) {
          networks = await watch.activeNetworks();
          lastNetworks = networks;
        } else if (lastNetworks) {
          networks = lastNetworks;
        } else {
          return; // nothing known yet: degraded() names libvirt
        }
        const release = takeLock(dir);
        let result;
        try {
          result = await syncOnce(networks, config, nft);
        } finally {
          release();
        }
        const messages = result.messages;
        scope = monitorScope(result.live, ownedOrWrittenTables(config));
        const chainsMissing = libvirtChainsMissing(result.live, result.plan.networks);
        if (config.daemon.restoreLibvirtRules) {
          const situation = `${watch?.transport ?? 'none'}:${result.plan.networks.map((n) => n.name).join(',')}`;
          void restorer.observe(chainsMissing, situation);
        } else if (chainsMissing) {
          messages.push({
            level: 'warn',
            fields: {},
            text: "libvirt's own firewall chains are gone (was the ruleset flushed?) and daemon.restore_libvirt_rules = false: restart libvirtd (or virtnetworkd) before starting networks",
          });
        }
        logNew(messages);
        const before = new Set(facts.networks);
        const now = result.plan.networks.map((n) => n.name);
        const started = now.filter((n) => !before.has(n));
        const stopped = facts.networks.filter((n) => !now.includes(n));
        facts.networks = now;
        planError = messages.find((m) => m.level === 'error')?.text;
        passError = undefined;
        if (watch) reconnectAttempts = 0; // the event source proved itself
        if (result.applied) {
          facts.lastChange = { at: new Date(), ms: result.durationMs };
          const what = [...started.map((n) => `network ${n} up`), ...stopped.map((n) => `network ${n} down`)];
          const summary =
            what.length > 0 ? what.join(', ') : `repaired drift (${[...new Set(reasons)].slice(0, 3).join(', ')})`;
          log.info(
            {
              event: reasons[0],
              networks: now.join(','),
              commands: result.plan.batch.nftables.length,
              duration_ms: result.durationMs,
              latency_ms: Math.round((performance.now() - since) * 10) / 10,
            },
            `${summary}: applied ${result.plan.batch.nftables.length} nft commands in ${result.durationMs} ms`,
          );
        } else {
          log.debug({ event: reasons[0], duration_ms: result.durationMs }, 'ruleset already up to date');
        }
      } finally {
        passStartedAt = undefined;
        lastPassAt = new Date();
        firstPassDone();
        if (ready) publishStatus();
      }
    },
    onFailure: (error, attempt, retryInMs, repeated) => {
      passError = error.message;
      // A new error is a warning (libvirtd restarts cause short ones); one
      // that persists becomes an error, once; retries in between are debug.
      if (!repeated)
        log.warn({ attempt, retry_ms: retryInMs }, `reconcile failed: ${error.message} (retrying with back-off)`);
      else if (attempt === PERSISTENT_FAILURES)
        log.error({ attempt }, `reconcile still failing after ${attempt} attempts: ${error.message}`);
      else log.debug({ attempt, retry_ms: retryInMs }, 'reconcile failed again');
      if (ready) publishStatus();
    },
    onRecovered: (failures) => {
      passError = undefined;
      log.info({ failures }, `reconcile succeeded again after ${failures} failed attempts`);
    },
  });

  const restorer = new LibvirtRestorer(
    announceFirewallReload,
    () => reconciler.trigger('libvirt chains still missing'),
    log,
  );

  const connect = async (): Promise<void> => {
    reconnectTimer = undefined;
    if (stopping) return;
    let live = false; // events during the connect itself are covered by the catch-up pass below
    try {
      const { watch: opened, why } = await openWatch(options.events, config.libvirtUri, {
        onChange: (reason, network) => {
          if (!live) return;
          log.debug(
            { event: reason, ...(network ? { network } : {}) },
            `event: ${reason}${network ? ` (${network})` : ''}`,
          );
          reconciler.trigger(reason);
        },
        onFault: (reason) => {
          // During the connect itself a fault surfaces as openWatch's rejection.
          if (!live || watch !== opened) return;
          watch = undefined;
          if (reason !== watchFault) log.warn(`lost the libvirt event source: ${reason}; reconnecting`);
          watchFault = reason;
          opened.close();
          scheduleReconnect();
          if (ready) publishStatus();
        },
      });
      if (stopping) {
        opened.close();
        return;
      }
      watch = opened;
      live = true;
      if (why !== transportNote) log.info({ transport: opened.transport }, why);
      transportNote = why;
      if (reconnectAttempts > 0)
        log.info({ transport: opened.transport }, `event source connected after ${reconnectAttempts} attempts`);
      watchFault = undefined;
      // Events may have been missed while disconnected: level-triggered catch-up.
      reconciler.trigger('event source connected');
    } catch (err) {
      const reason = (err as Error).message;
      if (reason !== watchFault) log.warn(`cannot open a libvirt event source: ${reason}; retrying with back-off`);
      watchFault = reason;
      scheduleReconnect();
      // At start-up the first pass decides READY; later, drift is still
      // caught by the nft monitor while libvirt is away.
      if (!ready) reconciler.trigger('event source unavailable');
    }
  };
  const scheduleReconnect = (): void => {
    if (stopping || reconnectTimer) return;
    reconnectAttempts++;
    const delay = Math.min(RECONNECT_MAX_MS, 500 * 2 ** (reconnectAttempts - 1));
    reconnectTimer = setTimeout(() => void connect(), delay);
  };

  // Drift: anyone else's change to the ruleset (a flush, an admin's nft -f,
  // a deleted jump) triggers a pass; so do our own commits, harmlessly.
  const monitor = new MonitorSupervisor(
    (reason) => reconciler.trigger(reason),
    log,
    () => scope,
  );
  let resync: NodeJS.Timeout | undefined;
  const scheduleResync = (): void => {
    if (resync) clearInterval(resync);
    resync =
      config.daemon.resyncInterval > 0
        ? setInterval(() => reconciler.trigger('periodic check'), config.daemon.resyncInterval * 1000)
        : undefined;
  };
  scheduleResync();
  let watchdog: NodeJS.Timeout | undefined;
  let stuckLogged = false;
  if (notifier.watchdogIntervalMs !== undefined) {
    watchdog = setInterval(() => {
      // This callback running at all shows the event loop is alive; a pass
      // that never ends is the other way to be stuck.
      if (passStartedAt !== undefined && Date.now() - passStartedAt > STUCK_PASS_MS) {
        if (!stuckLogged)
          log.error(`a reconcile has been running for over ${STUCK_PASS_MS / 1000} s: withholding the watchdog ping`);
        stuckLogged = true;
        return;
      }
      stuckLogged = false;
      notifier.send({ WATCHDOG: '1' });
    }, notifier.watchdogIntervalMs);
  }

  const finished = new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info(`${signal}: stopping; the rules stay in place (kvmnftd remove clears them)`);
      notifier.send({ STOPPING: '1', STATUS: 'stopping' });
      if (resync) clearInterval(resync);
      if (watchdog) clearInterval(watchdog);
      if (reconnectTimer) clearTimeout(reconnectTimer);
      restorer.stop();
      monitor.stop();
      void reconciler.stop().finally(() => {
        watch?.close();
        rmSync(join(dir, PID_FILE), { force: true });
        rmSync(join(dir, STATE_FILE), { force: true });
        resolve(0);
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

  process.on('SIGHUP', () => {
    void (async () => {
      reloads++;
      const generation = reloads;
      notifier.send({ RELOADING: '1', MONOTONIC_USEC: String(process.hrtime.bigint() / 1000n) });
      let outcome = 'ok';
      try {
        const next = loadConfig(options.configPath).config;
        const reopen = next.libvirtUri !== config.libvirtUri;
        config = next;
        scheduleResync();
        log.info('SIGHUP: configuration re-read');
        if (reopen && watch) {
          watch.close();
          watch = undefined;
          watchFault = 'reconnecting for a new libvirt_uri';
          void connect();
        }
      } catch (err) {
        outcome = `rejected: ${(err as Error).message}`;
        log.error(`SIGHUP: new configuration rejected, keeping the old one: ${(err as Error).message}`);
      }
      reconciler.trigger('reload');
      await Promise.race([reconciler.idle(), sleep(options.readyTimeoutMs)]);
      notifier.send({ READY: '1', STATUS: status() });
      writeFileSync(join(dir, RELOAD_STATE_FILE), `${generation} ${outcome}\n`);
    })();
  });

  await connect();
  monitor.start();
  await Promise.race([firstPass, sleep(options.readyTimeoutMs)]);
  ready = true;
  notifier.send({ READY: '1', STATUS: status() });
  saveState();
  log.info({ transport: watch?.transport ?? 'none' }, `ready: ${status()}`);
  return finished;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** For `kvmnftd reload`: the daemon's last completed reload, "N ok" or "N rejected: why". */
export function readReloadState(dir: string): { generation: number; outcome: string } | undefined {
  try {
    const [gen, ...rest] = readFileSync(join(dir, RELOAD_STATE_FILE), 'utf8').trim().split(' ');
    return { generation: Number(gen), outcome: rest.join(' ') };
  } catch {
    return undefined;
  }
}
