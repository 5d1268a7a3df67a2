/**
 * `npm run bench:compare` as a smoke (BENCH_COMPARE_RUNS=3): every contender
 * is measured and the output is well-formed. Structure only, never timings:
 * the figures are the benchmark's, and this shared 2-core machine makes them
 * noisy. Covers both libvirt labs (libvirt 9 here, libvirt 11 in the Debian 13
 * root: CI builds that root in a step of its own before the tests, so here it
 * is a cache look-up) and the batch benchmark; about a minute.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, it } from 'vitest';
import { COMPARISON_IDS, type CompareResults, type Figure } from '../../bench/compare/results.js';
import { REPO_ROOT, requireBuiltCli } from '../helpers/cli.js';

const RUNS = 3;
const work = mkdtempSync(join(tmpdir(), 'kvmnftd-bench-compare-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const positive = (x: number) => Number.isFinite(x) && x > 0;

it('npm run bench:compare, 3 samples per contender: every contender measured, a table, a JSON', async () => {
  requireBuiltCli();
  const out = join(work, 'compare.json');
  const r = await execa(join(REPO_ROOT, 'node_modules', '.bin', 'tsx'), ['bench/compare/main.ts'], {
    cwd: REPO_ROOT,
    env: { BENCH_COMPARE_RUNS: String(RUNS), BENCH_OUT: out },
    reject: false,
    stdin: 'ignore',
    timeout: 280_000,
  });
  expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
  const res = JSON.parse(readFileSync(out, 'utf8')) as CompareResults;

  expect(res.runs).toBe(RUNS);
  for (const key of ['date', 'node', 'nft', 'libvirt', 'cpus', 'loadavgAtStart']) expect(res.facts[key]).toBeDefined();
  expect(Number.isNaN(Date.parse(String(res.facts['date'])))).toBe(false);
  expect(res.facts['loadavgAtStart']).toMatch(/^[\d.]+ [\d.]+ [\d.]+$/);
  expect(res.comparisons.map((c) => c.id)).toEqual([...COMPARISON_IDS]);

  const wellFormed = (f: Figure) => {
    expect(f.label).not.toBe('');
    expect(f.samples).toHaveLength(RUNS);
    // A sample may be negative: kvmnftd's pass, started by libvirt's own rule changes, can commit before the
    // NetworkEvent reaches the observer (notes.commitBeforeEvent). The figures are positive.
    expect(f.samples.every(Number.isFinite), JSON.stringify(f)).toBe(true);
    expect([f.stats.p50, f.stats.p99].every(positive), JSON.stringify(f.stats)).toBe(true);
    expect(f.stats.p50).toBeLessThanOrEqual(f.stats.p99);
  };
  for (const c of res.comparisons) {
    wellFormed(c.kvmnftd);
    wellFormed(c.contender);
    expect([c.ratio.p50, c.ratio.p99].every(positive), `${c.id}: ${JSON.stringify(c.ratio)}`).toBe(true);
    // The table has both rows, with the contender's ratio.
    expect(r.stdout).toContain(c.kvmnftd.label);
    expect(r.stdout).toContain(c.contender.label);
  }
  const byId = new Map(res.comparisons.map((c) => [c.id, c]));
  expect(byId.get('network-start-libvirt9')!.lab['libvirt']).toMatch(/ 9\./);
  expect(byId.get('network-start-libvirt11-nftables')!.lab['libvirt']).toMatch(/ 11\./);
  // libvirt's transactions were counted from the monitor: the nftables backend's come from nft processes.
  const lv11 = byId.get('network-start-libvirt11-nftables')!.contender.notes as { byCommandFirstRun: object };
  expect(Object.keys(lv11.byCommandFirstRun)).toEqual(['nft']);
}, 300_000);
