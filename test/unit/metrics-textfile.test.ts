// The daemon's [metrics] textfile: the atomic write (mode 0644 under the
// unit's UMask=0077, no half file, no temporary left) and the writer unit
// (interval, errors logged once per distinct error, status, stop). Fake
// timers for the interval; the file system is real (a temporary directory).
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { defaultConfig } from '../../src/config/config.js';
import { MetricsWriter } from '../../src/daemon/metrics-writer.js';
import { initialState } from '../../src/daemon/state.js';
import type { Logger } from '../../src/log/logger.js';
import { textfileTemp, writeTextfile } from '../../src/metrics/textfile.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { plan } from '../../src/nft/plan.js';
import { withCounters } from '../helpers/counters.js';
import { loadCase } from '../helpers/golden.js';

const dir = (): string => mkdtempSync(join(tmpdir(), 'kvmnftd-textfile-'));

const memoryLog = (): Logger & { lines: string[] } => {
  const lines: string[] = [];
  const at = (level: string) => (msg: unknown) => lines.push(`${level}: ${String(msg)}`);
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') } as unknown as Logger & {
    lines: string[];
  };
};

describe('writeTextfile', () => {
  it('writes mode 0644 whatever the umask, replaces the old file by rename, and leaves no temporary', () => {
    const d = dir();
    const path = join(d, 'kvmnftd.prom');
    writeFileSync(path, 'old\n');
    const before = statSync(path).ino;
    const umask = process.umask(0o077);
    try {
      writeTextfile(path, 'kvmnftd_daemon_up 1\n');
    } finally {
      process.umask(umask);
    }
    expect(readFileSync(path, 'utf8')).toBe('kvmnftd_daemon_up 1\n');
    expect(statSync(path).mode & 0o777).toBe(0o644);
    expect(statSync(path).ino).not.toBe(before); // a new file renamed over the old: readers see one or the other
    expect(readdirSync(d)).toEqual(['kvmnftd.prom']);
  });

  it('the temporary file is hidden, in the same directory, and not *.prom (node_exporter skips it)', () => {
    expect(textfileTemp('/var/lib/prometheus/node-exporter/kvmnftd.prom', 7)).toBe(
      '/var/lib/prometheus/node-exporter/.kvmnftd.prom.7.tmp',
    );
  });

  it('fails without leaving anything behind', () => {
    const d = dir();
    mkdirSync(join(d, 'kvmnftd.prom')); // a directory where the file should go: the rename fails
    expect(() => writeTextfile(join(d, 'kvmnftd.prom'), 'x\n')).toThrow();
    expect(readdirSync(d)).toEqual(['kvmnftd.prom']);
    expect(() => writeTextfile(join(d, 'missing', 'kvmnftd.prom'), 'x\n')).toThrow(/ENOENT/);
  });
});

describe('MetricsWriter', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const c = loadCase('two-networks');
  const live = applyBatch(c.live, withCounters(plan(c.inputs, c.config, c.live).batch));

  function writer(write: (path: string, text: string) => void) {
    const state = initialState(defaultConfig());
    state.figures.passes = 5;
    const log = memoryLog();
    const changed = vi.fn();
    const w = new MetricsWriter({ state, log, readRuleset: () => Promise.resolve(live), changed, write });
    return { w, state, log, changed };
  }

  it('writes at once and then every interval; stop clears the timer', async () => {
    const written: string[] = [];
    const { w } = writer((path, text) => written.push(`${path}\n${text}`));
    w.set({ textfile: '/x/kvmnftd.prom', interval: 15 });
    await vi.advanceTimersByTimeAsync(0);
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(/^\/x\/kvmnftd\.prom\n/);
    expect(written[0]).toContain('\nkvmnftd_passes_total 5\n');
    expect(written[0]).toContain('kvmnftd_rule_packets_total{network="default",kind="nat"}');
    await vi.advanceTimersByTimeAsync(45_000);
    expect(written).toHaveLength(4);
    await w.stop();
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(written).toHaveLength(4);
  });

  it('logs a failure once per distinct error, keeps it in the state, and says once when it works again', async () => {
    let error: string | undefined = 'EACCES: permission denied';
    const { w, state, log, changed } = writer(() => {
      if (error !== undefined) throw new Error(error);
    });
    w.set({ textfile: '/x/kvmnftd.prom', interval: 15 });
    await vi.advanceTimersByTimeAsync(10 * 15_000);
    expect(state.metricsError).toBe('cannot write /x/kvmnftd.prom: EACCES: permission denied');
    expect(log.lines).toEqual([
      'warn: metrics textfile: cannot write /x/kvmnftd.prom: EACCES: permission denied (logged once while it persists)',
    ]);
    error = 'ENOSPC: no space left on device';
    await vi.advanceTimersByTimeAsync(3 * 15_000);
    error = undefined;
    await vi.advanceTimersByTimeAsync(3 * 15_000);
    expect(log.lines.slice(1)).toEqual([
      'warn: metrics textfile: cannot write /x/kvmnftd.prom: ENOSPC: no space left on device (logged once while it persists)',
      'info: metrics textfile: /x/kvmnftd.prom written again',
    ]);
    expect(state.metricsError).toBeUndefined();
    expect(changed).toHaveBeenCalledTimes(3);
    await w.stop();
  });

  it('off by default; a reload can turn it on, re-time it and turn it off', async () => {
    const written: string[] = [];
    const { w } = writer((path) => written.push(path));
    w.set(defaultConfig().metrics);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(written).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
    w.set({ textfile: '/x/a.prom', interval: 60 });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(written).toEqual(['/x/a.prom', '/x/a.prom']);
    w.set({ textfile: '/x/a.prom', interval: 60 }); // unchanged: no extra write, same rhythm
    w.set({ textfile: '/x/b.prom', interval: 1 });
    await vi.advanceTimersByTimeAsync(2_000);
    expect(written).toEqual(['/x/a.prom', '/x/a.prom', '/x/b.prom', '/x/b.prom', '/x/b.prom']);
    w.set({ textfile: undefined, interval: 1 });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(written).toHaveLength(5);
    expect(vi.getTimerCount()).toBe(0);
  });
});
