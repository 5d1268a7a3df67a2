// The daemon's units, each alone: the pass (with a fake nft and a fake
// libvirt), reconnecting to libvirt's event source, reload, the watchdog,
// the periodic check and signal handling. Timers are fake where time matters.
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { configFromObject, defaultConfig, type Config } from '../../src/config/config.js';
import { LibvirtConnection } from '../../src/daemon/connection.js';
import type { LibvirtWatch, WatchCallbacks } from '../../src/daemon/libvirt-watch.js';
import type { Notifier } from '../../src/daemon/notify.js';
import { LIBVIRT_ANSWER_DEADLINE_MS } from '../../src/daemon/answer-or-last.js';
import { DaemonPass } from '../../src/daemon/pass.js';
import { readReloadState, Reloader } from '../../src/daemon/reload.js';
import { handleSignals } from '../../src/daemon/signals.js';
import { initialState } from '../../src/daemon/state.js';
import { PeriodicCheck, STUCK_PASS_MS, Watchdog } from '../../src/daemon/timers.js';
import { runtimePath } from '../../src/host/runtime.js';
import type { gatherGuestFacts, GuestFacts } from '../../src/libvirt/guest-facts.js';
import type { NetworkParse } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import type { NftRunner } from '../../src/nft/nft-runner.js';
import { plan } from '../../src/nft/plan.js';
import { tableKey, type Ruleset } from '../../src/nft/ruleset.js';
import { applyWithRetry, planMessages, type syncOnce } from '../../src/nft/sync.js';
import { statusText } from '../../src/daemon/status.js';
import { NftError } from '../../src/nft/nft-runner.js';
import { fixture } from '../helpers/cli.js';
import { LIVE_LIBVIRT9, loadCase } from '../helpers/golden.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { cloneRuleset } from '../../src/nft/ruleset.js';

const DEFAULT = parseNetworkXml(readFileSync(fixture('default.xml'), 'utf8'), 'default.xml');
/** A stand-in sync's timings (SyncResult.stages). */
const STAGES = { readMs: 0.5, planMs: 0.5, commitMs: 0.5 };

function memoryLog() {
  const lines: Array<{ level: number; msg: string }> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as never) });
  const at = (level: number): string[] => lines.filter((l) => l.level === level).map((l) => l.msg);
  return { log, lines, debug: () => at(20), info: () => at(30), warn: () => at(40), error: () => at(50) };
}

function fakeNotifier(watchdogIntervalMs?: number): Notifier & { sent: Array<Record<string, string>> } {
  const sent: Array<Record<string, string>> = [];
  return { active: true, watchdogIntervalMs, sent, send: (state) => void sent.push(state) };
}

function fakeWatch(networks: () => Promise<NetworkParse[]>): LibvirtWatch & { closed: number } {
  return {
    transport: 'dbus',
    guests: false,
    closed: 0,
    activeNetworks: networks,
    runningDomains: () => Promise.resolve([]),
    close() {
      this.closed++;
    },
  };
}

/** An nft that keeps the ruleset in memory and applies batches to it. */
function fakeNft(live: Ruleset): NftRunner & { ruleset: Ruleset } {
  return {
    ruleset: live,
    readRuleset() {
      return Promise.resolve(this.ruleset);
    },
    apply(batch) {
      this.ruleset = applyBatch(this.ruleset, batch);
      return Promise.resolve();
    },
  };
}

/** syncOnce without the forwarding sysctls (a unit test must not read or write the host's /proc). */
const sync: typeof syncOnce = async (networks, config, nft) => {
  const live = await nft.readRuleset();
  const result = plan(networks, config, live);
  const applied = result.batch.nftables.length > 0;
  if (applied) await nft.apply(result.batch);
  return { plan: result, live, applied, durationMs: 1.5, stages: STAGES, messages: planMessages(result) };
};

/** LIVE_LIBVIRT9 after a `flush ruleset` and the admin's reload: only the admin's table is back. */
function flushed(): Ruleset {
  const r = cloneRuleset(LIVE_LIBVIRT9);
  for (const key of [...r.tables.keys()]) if (key !== tableKey('inet', 'filter')) r.tables.delete(key);
  return r;
}

describe('DaemonPass', () => {
  function setup(
    live: Ruleset,
    config: Config = defaultConfig(),
    syncWith: typeof syncOnce = sync,
    guestFacts?: typeof gatherGuestFacts,
    lockOurs = true,
  ) {
    const state = initialState(config);
    const nft = fakeNft(live);
    const log = memoryLog();
    const changed = vi.fn();
    const announce = vi.fn(() => Promise.resolve({ sent: true as const }));
    const backoff = { baseMs: 1, maxMs: 1 };
    const pass = new DaemonPass({
      state,
      applyLock: { held: () => Promise.resolve(), ours: lockOurs }, // the lock itself: daemon-apply-lock.test.ts
      nft,
      log: log.log,
      changed,
      announce,
      sync: syncWith,
      backoff,
      ...(guestFacts ? { guestFacts } : {}),
    });
    return { state, nft, log, changed, announce, pass };
  }

  it("plans from libvirt's networks, logs what changed, and repairs drift from the last ones while libvirt is away", async () => {
    const { state, nft, log, changed, pass } = setup(LIVE_LIBVIRT9);
    state.watch = fakeWatch(() => Promise.resolve([DEFAULT]));
    state.reconnectAttempts = 3;
    pass.trigger('network started');
    await pass.firstPass;
    await pass.idle();
    expect(state.networks).toEqual(['default']);
    expect(state.lastChange?.ms).toBe(1.5);
    expect(state.lastPassAt).toBeInstanceOf(Date);
    expect(state.reconnectAttempts).toBe(0); // the event source proved itself
    expect(log.info()).toEqual([expect.stringMatching(/^network default up: applied \d+ nft commands in 1.5 ms$/)]);
    expect(changed).toHaveBeenCalled();

    state.watch = undefined;
    state.reconnectAttempts = 2;
    nft.ruleset = LIVE_LIBVIRT9; // somebody reloaded the admin's ruleset
    pass.trigger('ruleset changed');
    await pass.idle();
    expect(log.info()[1]).toMatch(/^repaired drift \(ruleset changed\): applied/);
    expect(state.reconnectAttempts).toBe(2); // only a pass through libvirt resets the back-off

    pass.trigger('periodic check');
    await pass.idle();
    expect(log.debug()).toContain('ruleset already up to date');
    await pass.stop();
  });

  it('a pass that asks libvirt has nft read the ruleset meanwhile, and plans from that read; not before the lock is ours', async () => {
    for (const lockOurs of [true, false]) {
      const given: Array<Promise<Ruleset> | undefined> = [];
      const recording: typeof syncOnce = (networks, config, nft, options) => {
        given.push(options?.live);
        return sync(networks, config, nft, options);
      };
      const { state, nft, pass } = setup(LIVE_LIBVIRT9, defaultConfig(), recording, undefined, lockOurs);
      const reads = vi.spyOn(nft, 'readRuleset');
      let answer: ((n: NetworkParse[]) => void) | undefined;
      state.watch = fakeWatch(() => new Promise((resolve) => (answer = resolve)));
      pass.trigger('network started');
      await vi.waitFor(() => expect(answer).toBeDefined());
      // libvirt has not answered yet: the read is under way (or, without the lock, not started).
      expect(reads).toHaveBeenCalledTimes(lockOurs ? 1 : 0);
      answer!([DEFAULT]);
      await pass.idle();
      expect(given).toHaveLength(1);
      if (lockOurs) expect(await given[0]).toBe(await reads.mock.results[0]!.value);
      else expect(given[0]).toBeUndefined();
    }
  });

  it("a repair of drift plans from libvirt's last answers; anything else asks libvirt again", async () => {
    const { state, nft, log, pass } = setup(LIVE_LIBVIRT9);
    const asked = vi.fn(() => Promise.resolve([DEFAULT]));
    state.watch = fakeWatch(asked);
    pass.trigger('network started');
    await pass.firstPass;
    await pass.idle();
    expect(asked).toHaveBeenCalledTimes(1);

    nft.ruleset = LIVE_LIBVIRT9; // flushed and reloaded by the admin
    pass.triggerDrift('table inet filter changed');
    await pass.idle();
    expect(log.info()[1]).toMatch(/^repaired drift \(table inet filter changed\): applied/);
    expect(asked).toHaveBeenCalledTimes(1); // only the ruleset changed: libvirt's last answer stands

    for (const reason of ['network stopped', 'event source connected', 'periodic check', 'reload']) {
      pass.trigger(reason);
      await pass.idle();
    }
    expect(asked).toHaveBeenCalledTimes(5);

    // An event during a drift pass, or a pass that failed, makes the next one ask.
    pass.triggerDrift('rule in inet filter changed');
    pass.trigger('network started');
    await pass.idle();
    expect(asked).toHaveBeenCalledTimes(6);
    asked.mockImplementationOnce(() => Promise.reject(new Error('libvirt: connection reset')));
    pass.trigger('network started');
    await pass.idle(); // fails, then the retry asks again
    expect(asked).toHaveBeenCalledTimes(8);
    await pass.stop();
  });

  it('a libvirt slow to answer (restoring its rules) does not hold up a repair; its late answer starts a pass', async () => {
    vi.useFakeTimers();
    try {
      const { state, nft, log, pass } = setup(LIVE_LIBVIRT9);
      let answer: (n: NetworkParse[]) => void = () => undefined;
      let slow = false;
      let networks = [DEFAULT];
      state.watch = fakeWatch(() =>
        slow ? new Promise<NetworkParse[]>((resolve) => (answer = resolve)) : Promise.resolve(networks),
      );
      pass.trigger('start');
      await vi.advanceTimersByTimeAsync(10);
      await pass.idle();
      const repaired = nft.ruleset;
      slow = true;
      nft.ruleset = flushed();
      pass.trigger('ruleset changed');
      await vi.advanceTimersByTimeAsync(LIBVIRT_ANSWER_DEADLINE_MS);
      await pass.idle();
      expect(log.info().at(-1)).toMatch(/^repaired drift \(ruleset changed\): applied/);
      expect(plan([DEFAULT], state.config, nft.ruleset).batch.nftables).toEqual([]);
      expect(nft.ruleset).not.toBe(repaired);
      const lab = parseNetworkXml(
        readFileSync(fixture('default.xml'), 'utf8')
          .replace('<name>default', '<name>lab')
          .replace('virbr0', 'virbr9')
          .replace(/192\.168\.122\./g, '192.168.9.'),
        'lab.xml',
      );
      networks = [DEFAULT, lab];
      slow = false;
      answer(networks);
      await vi.advanceTimersByTimeAsync(10);
      await pass.idle();
      expect(state.networks).toEqual(['default', 'lab']);
      await pass.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it('does not touch the ruleset before libvirt has reported anything', async () => {
    const { state, nft, pass } = setup(LIVE_LIBVIRT9);
    const read = vi.spyOn(nft, 'readRuleset');
    pass.trigger('event source unavailable');
    await pass.firstPass;
    expect(read).not.toHaveBeenCalled();
    expect(state.lastPassAt).toBeInstanceOf(Date);
    await pass.stop();
  });

  it('a failing pass degrades the status until a retry succeeds', async () => {
    const { state, log, changed, pass } = setup(LIVE_LIBVIRT9);
    let calls = 0;
    state.watch = fakeWatch(() =>
      ++calls === 1 ? Promise.reject(new Error('libvirt: connection reset')) : Promise.resolve([DEFAULT]),
    );
    const errors: Array<string | undefined> = [];
    changed.mockImplementation(() => errors.push(state.passError));
    pass.trigger('start');
    await pass.idle();
    // After the failed pass, then after the failure itself, then after the retry.
    expect(errors).toEqual([undefined, 'libvirt: connection reset', undefined]);
    expect(log.warn()).toEqual(['reconcile failed: libvirt: connection reset (retrying with back-off)']);
    expect(log.info()).toContain('reconcile succeeded again after 1 failed attempts');
    await pass.stop();
  });

  it('a plan applied without its foreign part: degraded with the reason, one warning, whole again next pass', async () => {
    // DOCKER-USER vanishes between every read and commit while `flapping` (Docker re-creating it).
    const retrying: typeof syncOnce = async (networks, config, runner) => {
      const live = await runner.readRuleset();
      const first = plan(networks, config, live);
      const applied = first.batch.nftables.length > 0;
      const out = applied
        ? await applyWithRetry(networks, config, runner, { live, plan: first })
        : { live, plan: first };
      const degraded = 'foreignDegraded' in out ? out.foreignDegraded : undefined;
      return {
        plan: out.plan,
        live: out.live,
        applied,
        durationMs: 1,
        stages: STAGES,
        messages: planMessages(out.plan),
        ...(degraded === undefined ? {} : { foreignDegraded: degraded }),
      };
    };
    const { state, nft, log, pass } = setup(loadCase('foreign-docker').live, defaultConfig(), retrying);
    let flapping = true;
    const real = nft.apply.bind(nft);
    nft.apply = (batch) => {
      if (!flapping || !JSON.stringify(batch).includes('DOCKER-USER')) return real(batch);
      return Promise.reject(new NftError('nft failed applying the batch: No such file or directory', ''));
    };
    state.watch = fakeWatch(() => Promise.resolve([DEFAULT]));
    state.watchFault = undefined; // connected
    for (const reason of ['start', 'ruleset changed']) {
      pass.trigger(reason);
      await pass.idle();
    }
    expect(statusText(state)).toMatch(
      /^degraded: applied without the mark accepts in ip filter DOCKER-USER: nft failed applying the batch: No such file or directory; 1 network \(default\)/,
    );
    expect(log.warn().filter((l) => l.startsWith('degraded:'))).toHaveLength(1);
    expect(state.passError).toBeUndefined();
    flapping = false;
    pass.trigger('periodic check');
    await pass.idle();
    expect(state.foreignDegraded).toBeUndefined();
    expect(statusText(state)).toMatch(/^1 network \(default\)/);
    expect(plan([DEFAULT], state.config, nft.ruleset).batch.nftables).toEqual([]);
    await pass.stop();
  });

  it("resolves port forwards once per pass from libvirt's guests, and hands the targets to the sync", async () => {
    const mac = '52:54:00:00:00:09';
    const config = configFromObject(
      { port_forward: [{ network: 'default', proto: 'tcp', host_port: 2222, to: mac }] },
      't',
    );
    const seen: string[][] = [];
    const capture: typeof syncOnce = async (networks, cfg, runner, options) => {
      const forwardTargets = options?.facts?.forwardTargets ?? [];
      seen.push(forwardTargets.flatMap((t) => t.addresses));
      const live = await runner.readRuleset();
      const result = plan(networks, cfg, live, { forwardTargets });
      const applied = result.batch.nftables.length > 0;
      if (applied) await runner.apply(result.batch);
      return { plan: result, live, applied, durationMs: 1.5, stages: STAGES, messages: planMessages(result) };
    };
    let address = '192.168.122.44';
    const previous: Array<GuestFacts | undefined> = [];
    const facts = vi.fn<typeof gatherGuestFacts>(async (_config, _inputs, options) => {
      previous.push(options?.previous);
      const domains = await options!.domains!().catch(() => options?.previous?.domains ?? []);
      return { domains, leases: [{ network: 'default', mac, address, expiry: 1 }] };
    });
    const { state, log, pass } = setup(LIVE_LIBVIRT9, config, capture, facts);
    const web1 = { name: 'web1', xml: '<domain><name>web1</name></domain>' };
    state.watch = { ...fakeWatch(() => Promise.resolve([DEFAULT])), runningDomains: () => Promise.resolve([web1]) };
    pass.trigger('start');
    await pass.idle();
    address = '192.168.122.45'; // the guest's new lease
    pass.trigger('lease change');
    await pass.idle();
    state.watch = undefined; // libvirt away: what it said last stands
    pass.trigger('ruleset changed');
    await pass.idle();
    expect(seen).toEqual([['192.168.122.44'], ['192.168.122.45'], ['192.168.122.45']]);
    // The log says which forward went where.
    expect(log.info()).toEqual([
      expect.stringMatching(/^network default up, port_forward\[0\] to 192\.168\.122\.44: applied \d+ nft commands/),
      expect.stringMatching(/^port_forward\[0\] to 192\.168\.122\.45: applied \d+ nft commands/),
    ]);
    expect(facts).toHaveBeenCalledTimes(3);
    expect(previous[0]).toBeUndefined();
    expect(previous[2]?.domains).toEqual([web1]);
    expect(state.guestFacts?.domains).toEqual([web1]);
    await pass.stop();
  });

  it('asks libvirt to restore its chains after a flush, or warns once when configured not to', async () => {
    const restoring = setup(flushed());
    restoring.state.watch = fakeWatch(() => Promise.resolve([DEFAULT]));
    restoring.pass.trigger('ruleset changed');
    await restoring.pass.idle();
    expect(restoring.announce).toHaveBeenCalledTimes(1);
    await restoring.pass.stop();

    const config = defaultConfig();
    config.daemon.restoreLibvirtRules = false;
    const warning = setup(flushed(), config);
    warning.state.watch = fakeWatch(() => Promise.resolve([DEFAULT]));
    for (const reason of ['ruleset changed', 'periodic check']) {
      warning.pass.trigger(reason);
      await warning.pass.idle();
    }
    expect(warning.announce).not.toHaveBeenCalled();
    expect(warning.log.warn()).toEqual([expect.stringContaining('daemon.restore_libvirt_rules = false')]);
    await warning.pass.stop();
  });
});

describe('LibvirtConnection', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function setup(failures: number) {
    const state = initialState(defaultConfig());
    const log = memoryLog();
    const triggers: string[] = [];
    const changed = vi.fn();
    const watch = fakeWatch(() => Promise.resolve([]));
    let callbacks: WatchCallbacks | undefined;
    let left = failures;
    const open = vi.fn((_mode: string, _uri: string, cb: WatchCallbacks) => {
      callbacks = cb;
      if (left-- > 0) return Promise.reject(new Error('libvirtd is down'));
      return Promise.resolve({ watch, why: 'events: libvirt-dbus (test)' });
    });
    const trigger = (reason: string): void => void triggers.push(reason);
    const connection = new LibvirtConnection({ state, events: 'auto', log: log.log, changed, open, trigger });
    return { state, log, triggers, changed, watch, open, connection, callbacks: () => callbacks! };
  }

  it('connects, says which transport, and triggers a catch-up pass; events then trigger passes', async () => {
    const { state, log, triggers, watch, connection, callbacks } = setup(0);
    await connection.connect();
    expect(state.watch).toBe(watch);
    expect(state.watchFault).toBeUndefined();
    expect(log.info()).toEqual(['events: libvirt-dbus (test)']);
    expect(triggers).toEqual(['event source connected']);
    callbacks().onChange('network started', 'default');
    expect(triggers).toEqual(['event source connected', 'network started']);
  });

  it('retries with back-off while libvirt is away, logging the reason once', async () => {
    const { state, log, triggers, open, connection } = setup(3);
    await connection.connect();
    expect(state.watchFault).toBe('libvirtd is down');
    expect(triggers).toEqual(['event source unavailable']); // the first pass decides READY
    for (const [wait, calls] of [
      [499, 1],
      [1, 2],
      [1000, 3],
      [2000, 4],
    ] as const) {
      await vi.advanceTimersByTimeAsync(wait);
      expect(open).toHaveBeenCalledTimes(calls);
    }
    expect(state.watchFault).toBeUndefined();
    expect(log.warn()).toEqual(['cannot open a libvirt event source: libvirtd is down; retrying with back-off']);
    expect(log.info()).toContain('event source connected after 3 attempts');
  });

  it('a fault drops the source, publishes the status, and reconnects', async () => {
    const { state, log, changed, watch, open, connection, callbacks } = setup(0);
    await connection.connect();
    callbacks().onFault('D-Bus: the D-Bus connection was closed');
    expect(state.watch).toBeUndefined();
    expect(state.watchFault).toBe('D-Bus: the D-Bus connection was closed');
    expect(watch.closed).toBe(1);
    expect(changed).toHaveBeenCalledTimes(1);
    expect(log.warn()).toEqual(['lost the libvirt event source: D-Bus: the D-Bus connection was closed; reconnecting']);
    await vi.advanceTimersByTimeAsync(500);
    expect(open).toHaveBeenCalledTimes(2);
    expect(state.watch).toBe(watch);
  });

  it('reopens for a new libvirt_uri, and stops reconnecting when stopped', async () => {
    const { state, open, connection } = setup(0);
    await connection.connect();
    state.config = { ...state.config, libvirtUri: 'qemu:///session' };
    connection.reopen();
    await vi.advanceTimersByTimeAsync(0);
    expect(open).toHaveBeenLastCalledWith('auto', 'qemu:///session', expect.anything(), undefined, false, false);
    // A forward that names its guest: the source is opened for domain events too.
    state.config = configFromObject(
      { port_forward: [{ network: 'default', proto: 'tcp', host_port: 1, to: 'web1' }] },
      't',
    );
    connection.reopen();
    await vi.advanceTimersByTimeAsync(0);
    expect(open).toHaveBeenLastCalledWith('auto', 'qemu:///system', expect.anything(), undefined, true, false);
    // Metadata forwards on: domain events and metadata changes.
    state.config = configFromObject({ metadata_forwards: { host_ports: [2222] } }, 't');
    connection.reopen();
    await vi.advanceTimersByTimeAsync(0);
    expect(open).toHaveBeenLastCalledWith('auto', 'qemu:///system', expect.anything(), undefined, true, true);

    const away = setup(5);
    await away.connection.connect();
    away.connection.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(away.open).toHaveBeenCalledTimes(1);
  });
});

describe('Reloader', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'kvmnftd-reload-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('re-reads the configuration, counts reloads across restarts, and keeps the old one when the new is bad', async () => {
    const file = join(dir, 'kvmnftd.toml');
    writeFileSync(runtimePath(dir, 'reloadState'), '7 ok\n'); // a previous daemon's last reload
    const state = initialState(defaultConfig());
    const notifier = fakeNotifier();
    const triggers: string[] = [];
    const reopen = vi.fn();
    const intervals: number[] = [];
    const metrics: Array<Config['metrics']> = [];
    const reloader = new Reloader({
      state,
      configPath: file,
      runtimeDir: dir,
      notifier,
      log: memoryLog().log,
      readyTimeoutMs: 1000,
      pass: { trigger: (reason) => void triggers.push(reason), idle: () => Promise.resolve() },
      reopenLibvirt: reopen,
      setResyncInterval: (seconds) => void intervals.push(seconds),
      setMetrics: (settings) => void metrics.push(settings),
    });

    writeFileSync(
      file,
      'libvirt_uri = "qemu:///session"\n[daemon]\nresync_interval = 5\n[metrics]\ntextfile = "/x/k.prom"\n',
    );
    await reloader.reload();
    expect(metrics).toEqual([{ textfile: '/x/k.prom', interval: 15 }]);
    expect(readReloadState(dir)).toEqual({ generation: 8, outcome: 'ok' });
    expect(state.config.libvirtUri).toBe('qemu:///session');
    expect(intervals).toEqual([5]);
    expect(reopen).toHaveBeenCalledTimes(1);
    expect(triggers).toEqual(['reload']);
    expect(notifier.sent.map((s) => Object.keys(s))).toEqual([
      ['RELOADING', 'MONOTONIC_USEC'],
      ['READY', 'STATUS'],
    ]);

    writeFileSync(file, '[daemon]\nresync_interval = "often"\n');
    await reloader.reload();
    expect(readReloadState(dir)?.generation).toBe(9);
    expect(readReloadState(dir)?.outcome).toMatch(/^rejected: .*resync_interval/);
    expect(state.config.libvirtUri).toBe('qemu:///session');
    expect(triggers).toEqual(['reload', 'reload']); // a pass follows either way
    expect(metrics).toHaveLength(1); // the rejected config changes nothing
  });
});

describe('Watchdog and periodic check', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('pings while healthy, withholds the ping while a pass is stuck, and says so once', async () => {
    const notifier = fakeNotifier(1000);
    const log = memoryLog();
    let passStartedAt: number | undefined;
    const watchdog = new Watchdog(notifier, () => passStartedAt, log.log);
    watchdog.start();
    await vi.advanceTimersByTimeAsync(3000);
    expect(notifier.sent).toEqual([{ WATCHDOG: '1' }, { WATCHDOG: '1' }, { WATCHDOG: '1' }]);
    passStartedAt = Date.now() - STUCK_PASS_MS - 1;
    await vi.advanceTimersByTimeAsync(3000);
    expect(notifier.sent).toHaveLength(3);
    expect(log.error()).toEqual(['a reconcile has been running for over 90 s: withholding the watchdog ping']);
    passStartedAt = undefined;
    await vi.advanceTimersByTimeAsync(1000);
    expect(notifier.sent).toHaveLength(4);
    watchdog.stop();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('does nothing without WatchdogSec', () => {
    new Watchdog(fakeNotifier(undefined), () => undefined, memoryLog().log).start();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('the periodic check follows daemon.resync_interval, 0 meaning never', async () => {
    const triggers: string[] = [];
    const periodic = new PeriodicCheck((reason) => void triggers.push(reason));
    periodic.set(60);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(triggers).toEqual(['periodic check', 'periodic check']);
    periodic.set(0);
    await vi.advanceTimersByTimeAsync(600_000);
    expect(triggers).toHaveLength(2);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('signals', () => {
  it('SIGHUP reloads; the first SIGTERM or SIGINT stops, a second is ignored', async () => {
    const source = new EventEmitter();
    const reload = vi.fn(() => Promise.resolve());
    const stop = vi.fn(() => Promise.resolve());
    const signals = handleSignals({ reload, stop }, source);
    source.emit('SIGHUP');
    source.emit('SIGHUP');
    expect(reload).toHaveBeenCalledTimes(2);
    source.emit('SIGINT');
    source.emit('SIGTERM');
    await signals.stopped;
    expect(stop.mock.calls).toEqual([['SIGINT']]);
    signals.dispose();
    expect(source.eventNames()).toEqual([]);
  });
});
