// docs/performance.md's side-by-side table cannot drift from the run it
// reports: its generated section is rendered from the committed JSON of
// `npm run bench:compare` (bench/results/compare.json) by
// bench/compare/results.ts. `npm run docs:compare` rewrites it.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  COMPARISON_IDS,
  comparison,
  consoleTable,
  docSection,
  figure,
  withDocSection,
  type CompareResults,
} from '../../bench/compare/results.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DOC = join(ROOT, 'docs', 'performance.md');
const JSON_FILE = join(ROOT, 'bench', 'results', 'compare.json');

const committed = (): CompareResults => JSON.parse(readFileSync(JSON_FILE, 'utf8')) as CompareResults;

describe('docs/performance.md, "Side by side"', () => {
  it('shows bench/results/compare.json exactly as bench/compare/results.ts renders it (npm run docs:compare)', () => {
    const doc = readFileSync(DOC, 'utf8');
    const want = withDocSection(doc, committed());
    if (process.env['UPDATE_DOCS'] === '1') writeFileSync(DOC, want);
    expect(doc).toBe(want);
  });

  it('the committed JSON holds every comparison, each sample count equal to its runs', () => {
    const r = committed();
    expect(r.comparisons.map((c) => c.id)).toEqual([...COMPARISON_IDS]);
    for (const c of r.comparisons) {
      expect(c.kvmnftd.samples).toHaveLength(r.runs);
      expect(c.contender.samples).toHaveLength(r.runs);
    }
    expect(r.facts['loadavgAtStart']).toMatch(/^[\d.]+ [\d.]+ [\d.]+$/);
  });
});

describe('bench/compare/results.ts', () => {
  const r: CompareResults = {
    runs: 4,
    facts: {
      date: '2026-12-01T10:20:30.000Z',
      os: 'Debian GNU/Linux 12 (bookworm)',
      kernel: '6.1.0',
      cpus: 2,
      cpuModel: 'CPU',
      node: 'v20.20.2',
      nft: 'nftables v1.0.6',
      loadavgAtStart: '0.1 0.2 0.3',
    },
    loadavgAtEnd: '0.4 0.5 0.6',
    totalS: 600,
    comparisons: [
      comparison(
        'network-start-libvirt9',
        'A network start: libvirt 9 | lab',
        { libvirt: '9.0.0' },
        figure('kvmnftd', [10, 20, 30, 40]),
        figure('libvirt', [100, 200, 300, 400]),
      ),
    ],
  };

  it('ratio: kvmnftd over the contender, at p50 and at p99 (nearest rank)', () => {
    expect(r.comparisons[0]!.kvmnftd.stats).toMatchObject({ n: 4, p50: 20, p99: 40 });
    expect(r.comparisons[0]!.ratio).toEqual({ p50: 0.1, p99: 0.1 });
  });

  it('renders one row per contender, the ratio in the contender row, pipes escaped', () => {
    const md = docSection(r);
    expect(md).toContain('2026-12-01 10:20 UTC');
    expect(md).toContain('load average 0.1 0.2 0.3 at the start, 0.4 0.5 0.6 at the end');
    expect(md).toContain('| A network start: libvirt 9 \\| lab | kvmnftd | 20.0 | 40.0 | | |');
    expect(md).toContain('| | libvirt | 200.0 | 400.0 | **0.10** | **0.10** |');
    expect(consoleTable(r)).toMatch(/ {2}libvirt +4 +200\.0 +400\.0 +0\.10 +0\.10/);
  });

  it('replaces only the text between the markers, and refuses a document without them', () => {
    const doc = withDocSection(
      'before\n<!-- BEGIN generated bench:compare: npm run docs:compare (bench/results/compare.json) -->\nold\n' +
        '<!-- END generated bench:compare -->\nafter\n',
      r,
    );
    expect(doc.startsWith('before\n<!-- BEGIN')).toBe(true);
    expect(doc.endsWith('\n<!-- END generated bench:compare -->\nafter\n')).toBe(true);
    expect(doc).not.toContain('old');
    expect(() => withDocSection('no markers\n', r)).toThrow(/markers/);
  });
});
