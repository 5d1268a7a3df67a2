// `kvmnftd metrics` (src/metrics/exposition.ts): golden text exposition from a
// golden case's rules with counters, escaping, and the daemon's figures as the
// CLI reads them from the state file.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { initialState } from '../../src/daemon/state.js';
import { readDaemonState, stateFileRecord, writeDaemonState } from '../../src/daemon/status.js';
import { defaultConfig } from '../../src/config/config.js';
import {
  escapeHelp,
  escapeLabelValue,
  METRIC_FAMILIES,
  renderMetrics,
  type DaemonFigures,
} from '../../src/metrics/exposition.js';
import { figuresOf, metricsInputs } from '../../src/metrics/gather.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { plan } from '../../src/nft/plan.js';
import { tallyCounters } from '../../src/nft/rule-kind.js';
import { withCounters } from '../helpers/counters.js';
import { loadCase } from '../helpers/golden.js';
import { REPO_ROOT } from '../helpers/cli.js';

const GOLDEN = join(REPO_ROOT, 'test', 'fixtures', 'metrics');

function countedLive(name: string) {
  const c = loadCase(name);
  return applyBatch(c.live, withCounters(plan(c.inputs, c.config, c.live).batch));
}

const FIGURES: DaemonFigures = {
  passes: 42,
  transactions: 7,
  driftRepairs: 2,
  libvirtRestores: 1,
  lastPassMs: 12.5,
  degraded: false,
};

/** Compares with test/fixtures/metrics/<file>; UPDATE_GOLDEN=1 rewrites it. */
function golden(file: string, text: string): void {
  const path = join(GOLDEN, file);
  if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(path, text);
  expect(text).toBe(readFileSync(path, 'utf8'));
}

describe('kvmnftd metrics exposition', () => {
  it('golden: two networks and port forwards, with a running daemon', () => {
    const tally = tallyCounters(countedLive('port-forward'));
    for (const [network, kinds] of tallyCounters(countedLive('two-networks'))) tally.set(`${network}2`, kinds);
    golden('daemon.prom', renderMetrics({ tally, daemon: FIGURES }));
  });

  it('golden: no daemon, ruleset read', () => {
    golden('no-daemon.prom', renderMetrics({ tally: tallyCounters(countedLive('two-networks')), daemon: undefined }));
  });

  it('golden: ruleset unreadable, degraded daemon before its first pass', () => {
    golden(
      'no-ruleset.prom',
      renderMetrics({ tally: undefined, daemon: { ...FIGURES, passes: 0, lastPassMs: undefined, degraded: true } }),
    );
  });

  it('every family has a HELP and a TYPE line, once, before its samples', () => {
    const text = renderMetrics({ tally: tallyCounters(countedLive('port-forward')), daemon: FIGURES });
    for (const f of Object.values(METRIC_FAMILIES)) {
      const lines = text.split('\n');
      const help = lines.indexOf(`# HELP ${f.name} ${f.help}`);
      expect(help, f.name).toBeGreaterThanOrEqual(0);
      expect(lines[help + 1]).toBe(`# TYPE ${f.name} ${f.type}`);
      expect(lines.filter((l) => l.startsWith(`# TYPE ${f.name} `))).toHaveLength(1);
      expect(lines[help + 2]?.startsWith(f.name)).toBe(true);
      if (f.type === 'counter') expect(f.name.endsWith('_total'), f.name).toBe(true);
      expect(f.name.startsWith('kvmnftd_')).toBe(true);
    }
  });

  it('escapes label values and HELP texts', () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    expect(escapeHelp('a"b\\c\nd')).toBe('a"b\\\\c\\nd');
    const tally = new Map([['we"ird\\net', new Map([['nat' as const, { packets: 1, bytes: 2, rules: 1 }]])]]);
    expect(renderMetrics({ tally, daemon: undefined })).toContain(
      'kvmnftd_rule_packets_total{network="we\\"ird\\\\net",kind="nat"} 1\n',
    );
  });

  it('an unreadable ruleset: the daemon figures, kvmnftd_ruleset_readable 0 and the error', async () => {
    const r = await metricsInputs(() => Promise.reject(new Error('nft: permission denied')), FIGURES);
    expect(r.rulesetError).toBe('nft: permission denied');
    const text = renderMetrics(r.inputs);
    expect(text).toContain('\nkvmnftd_ruleset_readable 0\n');
    expect(text).toContain('\nkvmnftd_passes_total 42\n');
    expect(text).not.toContain('kvmnftd_rule_packets_total');
  });
});

describe("the daemon's figures", () => {
  it('go through the state file unchanged', () => {
    const state = initialState(defaultConfig());
    state.figures = { passes: 3, transactions: 2, driftRepairs: 1, libvirtRestores: 0, lastPassMs: 4.2 };
    const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-metrics-'));
    writeDaemonState(dir, stateFileRecord(state, 1234, new Date(0)));
    expect(readDaemonState(dir)?.figures).toEqual(state.figures);
    // Not connected to libvirt yet: degraded.
    expect(figuresOf(state)).toEqual({ ...state.figures, degraded: true });
  });

  it('a state file of an earlier version reads as zeros', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-metrics-'));
    writeFileSync(join(dir, 'daemon.state.json'), JSON.stringify({ pid: 1, status: 'x' }));
    expect(readDaemonState(dir)?.figures).toEqual({
      passes: 0,
      transactions: 0,
      driftRepairs: 0,
      libvirtRestores: 0,
      lastPassMs: null,
    });
  });
});
